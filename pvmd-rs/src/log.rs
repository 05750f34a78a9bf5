//! The daemon log `PVM_TMP/pvml.<uid>`, in the legacy format:
//! `[t80040000] 11/26 00:39:54 text` once the daemon has a tid, `[pvmd pid10842] ...` before,
//! and the daemon's structured logging on top of it (`tracing`).
//!
//! Every line the daemon logs becomes a `tracing` event whose target names the legacy debug
//! class it belongs to (`pvmd::net`, `pvmd::task`, ...; see [`DEBUG_TARGETS`] and
//! docs/tracing.md). Lines still reach `pvml.<uid>` byte for byte as before, because people and
//! tests read that file; the structured copy goes where `PVMD_LOG` says (text or JSON lines).
//! The decision core keeps returning `Out::Log(String)` so that its tests stay free of a
//! global subscriber: [`classify`] recovers the target and the fields (tid, host, message code)
//! from the legacy text in one place, which works because every legacy log line starts with
//! the name of the C function that logged it.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

use crate::sys;

/// Default log size cap (bytes) when PVMDLOGMAX is not set.
pub const DEFAULT_LOG_MAX: u64 = 1_000_000;

/// The legacy `-d<mask>` bits (pvmd's `PDM*` constants, same values) and the `tracing` target
/// each one enables at `DEBUG`. Several targets may share a bit (a spawn is task state for the
/// legacy daemon). Targets without a legacy bit (`pvmd::migrate`, `pvmd::metrics`, `pvmd`)
/// are reached through `PVMD_LOG` only.
pub const DEBUG_TARGETS: [(u32, &str, &str); 20] = [
    (0x00001, "PDMPACKET", "pvmd::packet"),
    (0x00002, "PDMMESSAGE", "pvmd::mesg"),
    (0x00004, "PDMTASK", "pvmd::task"),
    (0x00004, "PDMTASK", "pvmd::spawn"),
    (0x00008, "PDMSTARTUP", "pvmd::startup"),
    (0x00010, "PDMHOST", "pvmd::host"),
    (0x00020, "PDMSELECT", "pvmd::select"),
    (0x00040, "PDMNET", "pvmd::net"),
    (0x00080, "PDMNODE", "pvmd::node"),
    (0x00100, "PDMSCHED", "pvmd::sched"),
    (0x00200, "PDMAPPL", "pvmd::appl"),
    (0x00400, "PDMWAITC", "pvmd::waitc"),
    (0x00800, "PDMMEM", "pvmd::mem"),
    (0x01000, "PDMSEM", "pvmd::sem"),
    (0x02000, "PDMLOCK", "pvmd::lock"),
    (0x04000, "PDMROUTE", "pvmd::route"),
    (0x08000, "PDMMBOX", "pvmd::mbox"),
    (0x10000, "PDMTRACE", "pvmd::tracer"),
    (0x20000, "PDMMCA", "pvmd::mca"),
    (0, "", "pvmd::migrate"),
];

/// Legacy function name (the text before `()` or the first word) -> target. The first
/// matching prefix wins; anything else goes to `pvmd`.
const FUNCTION_TARGETS: [(&str, &str); 45] = [
    ("mig:", "pvmd::migrate"),
    ("netinput", "pvmd::net"),
    ("netoutput", "pvmd::net"),
    ("netinit", "pvmd::net"),
    ("netentry", "pvmd::net"),
    ("hostfailentry", "pvmd::net"),
    ("dm_send", "pvmd::net"),
    ("send to", "pvmd::route"),
    ("mca to", "pvmd::mca"),
    ("tm_mca", "pvmd::mca"),
    ("loclinpkt", "pvmd::packet"),
    ("locloutput", "pvmd::packet"),
    ("loclconn", "pvmd::mesg"),
    ("loclinput", "pvmd::mesg"),
    ("loclentry", "pvmd::mesg"),
    ("forkexec", "pvmd::spawn"),
    ("tm_spawn", "pvmd::spawn"),
    ("dm_exec", "pvmd::spawn"),
    ("exec", "pvmd::spawn"),
    ("tm_conn", "pvmd::task"),
    ("task_", "pvmd::task"),
    ("tm_task", "pvmd::task"),
    ("tm_pstat", "pvmd::task"),
    ("tm_sendsig", "pvmd::task"),
    ("tm_notify", "pvmd::task"),
    ("tm_tickle", "pvmd::task"),
    ("[t", "pvmd::appl"),
    ("dm_ht", "pvmd::host"),
    ("dm_add", "pvmd::host"),
    ("tm_addhost", "pvmd::host"),
    ("tm_delhost", "pvmd::host"),
    ("tm_mstat", "pvmd::host"),
    ("tm_hostsync", "pvmd::host"),
    ("host ", "pvmd::host"),
    ("dm_slconf", "pvmd::startup"),
    ("slave_config", "pvmd::startup"),
    ("master_config", "pvmd::startup"),
    ("startup", "pvmd::startup"),
    ("tm_db", "pvmd::mbox"),
    ("dm_db", "pvmd::mbox"),
    ("tm_tracer", "pvmd::tracer"),
    ("tm_sched", "pvmd::sched"),
    ("tm_migrate", "pvmd::migrate"),
    ("tm_ckpt", "pvmd::migrate"),
    ("tm_restart", "pvmd::migrate"),
];

/// The target of a legacy log line, from the function name it starts with.
pub fn classify(text: &str) -> &'static str {
    for (prefix, target) in FUNCTION_TARGETS {
        if text.starts_with(prefix) {
            return target;
        }
    }
    if text.starts_with("migrate") || text.starts_with("ckpt") || text.starts_with("restart") {
        return "pvmd::migrate";
    }
    "pvmd"
}

/// Fields recovered from a legacy line: the first task id written `t<hex>` (5 to 8 digits,
/// the way pvmd prints tids), the number after `host `, and the first `TM_`/`DM_`/`SM_`
/// message code.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LineFields<'a> {
    pub tid: Option<&'a str>,
    pub host: Option<u32>,
    pub code: Option<&'a str>,
}

pub fn fields(text: &str) -> LineFields<'_> {
    let mut f = LineFields::default();
    let words = text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'));
    let mut after_host = false;
    for w in words.filter(|w| !w.is_empty()) {
        if f.tid.is_none()
            && w.len() >= 6
            && w.len() <= 9
            && w.starts_with('t')
            && w[1..].bytes().all(|b| b.is_ascii_hexdigit())
        {
            f.tid = Some(w);
        }
        if after_host && f.host.is_none() {
            f.host = w.parse().ok();
        }
        after_host = w == "host";
        if f.code.is_none() && (w.starts_with("TM_") || w.starts_with("DM_") || w.starts_with("SM_")) && w.len() > 3 {
            f.code = Some(w);
        }
    }
    f
}

/// Emits `text` as an event at `level` on `target` (which must be one of the known targets;
/// tracing needs them as constants at the call site, hence the table of arms).
fn emit(target: &'static str, level: Level, text: &str, from_pvml: bool) {
    let LineFields { tid, host, code } = fields(text);
    macro_rules! ev {
        ($t:literal) => {
            match level {
                Level::ERROR => tracing::error!(target: $t, tid, host, code, pvml = from_pvml, "{text}"),
                Level::WARN => tracing::warn!(target: $t, tid, host, code, pvml = from_pvml, "{text}"),
                Level::INFO => tracing::info!(target: $t, tid, host, code, pvml = from_pvml, "{text}"),
                Level::DEBUG => tracing::debug!(target: $t, tid, host, code, pvml = from_pvml, "{text}"),
                _ => tracing::trace!(target: $t, tid, host, code, pvml = from_pvml, "{text}"),
            }
        };
    }
    match target {
        "pvmd::packet" => ev!("pvmd::packet"),
        "pvmd::mesg" => ev!("pvmd::mesg"),
        "pvmd::task" => ev!("pvmd::task"),
        "pvmd::spawn" => ev!("pvmd::spawn"),
        "pvmd::startup" => ev!("pvmd::startup"),
        "pvmd::host" => ev!("pvmd::host"),
        "pvmd::net" => ev!("pvmd::net"),
        "pvmd::sched" => ev!("pvmd::sched"),
        "pvmd::appl" => ev!("pvmd::appl"),
        "pvmd::route" => ev!("pvmd::route"),
        "pvmd::mbox" => ev!("pvmd::mbox"),
        "pvmd::tracer" => ev!("pvmd::tracer"),
        "pvmd::mca" => ev!("pvmd::mca"),
        "pvmd::migrate" => ev!("pvmd::migrate"),
        "pvmd::metrics" => ev!("pvmd::metrics"),
        _ => ev!("pvmd"),
    }
}

/// Logs `text` on `target` at `level` without a `Log` at hand (code that runs outside the
/// decision core, e.g. the metrics server). It reaches `pvml.<uid>` like any other line when
/// the level is `INFO` or above, or the target's debug bit is set.
pub fn event(target: &'static str, level: Level, text: &str) {
    emit(target, level, text, false);
}

/// `MM/DD HH:MM:SS` in local time.
pub fn stamp(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let (mon, day, h, m, s, _, _) = sys::localtime(secs);
    format!("{mon:02}/{day:02} {h:02}:{m:02}:{s:02}")
}

/// `ctime()` without the newline: `Thu Nov 26 02:39:58 2026`.
pub fn ctime(t: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let (mon, day, h, m, s, wday, year) = sys::localtime(secs);
    format!(
        "{} {} {day:2} {h:02}:{m:02}:{s:02} {year}",
        DAYS[(wday % 7) as usize],
        MONTHS[((mon + 11) % 12) as usize]
    )
}

struct Inner {
    file: Option<File>,
    to_stderr: bool,
    prefix: String,
    written: u64,
    max: u64,
    truncated: bool,
    /// Lines logged before the file was opened; written to it when it is.
    early: Vec<String>,
}

impl Inner {
    fn line_at(&mut self, now: SystemTime, text: &str) {
        let l = format!("[{}] {} {}\n", self.prefix, stamp(now), text.trim_end_matches('\n'));
        if self.to_stderr {
            let _ = std::io::stderr().write_all(l.as_bytes());
        }
        if self.file.is_none() {
            if self.early.len() < 1000 {
                self.early.push(l);
            }
            return;
        }
        self.write_file(&l);
    }

    fn write_file(&mut self, l: &str) {
        if let Some(f) = self.file.as_mut() {
            if self.truncated {
                return;
            }
            if self.written + l.len() as u64 > self.max {
                let _ = f.write_all(b"*** logging truncated\n");
                self.truncated = true;
                return;
            }
            if f.write_all(l.as_bytes()).is_ok() {
                self.written += l.len() as u64;
            }
        }
    }
}

/// The legacy log of this process. Cloning shares it.
#[derive(Clone)]
pub struct Log {
    inner: Arc<Mutex<Inner>>,
}

/// The log that events emitted with [`event`] or `tracing` macros elsewhere in the daemon are
/// written to (the one whose file was opened last: one daemon per process).
static CURRENT: Mutex<Option<Arc<Mutex<Inner>>>> = Mutex::new(None);
/// Set once stdio is detached: the `PVMD_LOG` stderr sink stops there, like the legacy copy.
static STDERR_GONE: AtomicBool = AtomicBool::new(false);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
impl Log {
    /// A log that writes to stderr only, with the `[pvmd pid<N>]` prefix.
    pub fn stderr(pid: u32) -> Self {
        Log {
            inner: Arc::new(Mutex::new(Inner {
                file: None,
                to_stderr: true,
                prefix: format!("pvmd pid{pid}"),
                written: 0,
                max: DEFAULT_LOG_MAX,
                truncated: false,
                early: Vec::new(),
            })),
        }
    }

    /// Opens (truncating) the log file, mode 0600, as the legacy daemon does at each start.
    pub fn open_file(&mut self, path: &Path, max: u64) -> std::io::Result<()> {
        // hardening: never through a symlink (O_NOFOLLOW), never a FIFO or device (O_NONBLOCK,
        // regular-file check), never a file of another user or a hard link to one, so that a
        // name planted in a shared PVM_TMP cannot make the daemon truncate someone's file.
        // Anything else found under the name is removed (the name, not what it points to) and
        // the file created afresh.
        let open = |fresh: bool| {
            OpenOptions::new()
                .write(true)
                .create(!fresh)
                .create_new(fresh)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                .open(path)
        };
        let ours = |f: &File| {
            use std::os::unix::fs::MetadataExt;
            f.metadata()
                .map(|m| m.is_file() && m.uid() == crate::sys::getuid() && m.nlink() == 1)
                .unwrap_or(false)
        };
        let f = match open(false) {
            Ok(f) if ours(&f) => f,
            _ => {
                std::fs::remove_file(path)?;
                open(true)?
            }
        };
        f.set_len(0)?;
        let mut inner = lock(&self.inner);
        inner.file = Some(f);
        inner.max = max;
        let early = std::mem::take(&mut inner.early);
        for l in early {
            inner.write_file(&l);
        }
        drop(inner);
        *lock(&CURRENT) = Some(self.inner.clone());
        Ok(())
    }

    /// From now on lines carry the daemon's tid.
    pub fn set_tid(&mut self, tid: u32) {
        lock(&self.inner).prefix = format!("t{tid:x}");
    }

    /// Replaces the bracketed prefix verbatim (e.g. the legacy's `pvmd pid-1` before getpid).
    pub fn set_prefix_raw(&mut self, prefix: &str) {
        lock(&self.inner).prefix = prefix.to_string();
    }

    /// Stops copying lines to stderr (after stdio is detached).
    pub fn quiet_stderr(&mut self) {
        lock(&self.inner).to_stderr = false;
        STDERR_GONE.store(true, Ordering::Relaxed);
    }

    pub fn line(&mut self, text: &str) {
        self.line_at(SystemTime::now(), text);
    }

    /// Writes the legacy line, then emits it as an event on the target [`classify`] gives
    /// (marked `pvml` so that the legacy layer does not write it a second time).
    pub fn line_at(&mut self, now: SystemTime, text: &str) {
        lock(&self.inner).line_at(now, text);
        emit(classify(text), Level::INFO, text.trim_end_matches('\n'), true);
    }
}

// ---- subscriber ------------------------------------------------------------------------

/// `PVMD_LOG` could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("PVMD_LOG: bad directive {0:?} (want LEVEL, TARGET or TARGET=LEVEL, comma separated)")]
    BadDirective(String),
    #[error("PVMD_LOG_FORMAT: unknown format {0:?} (want text or json)")]
    BadFormat(String),
    #[error("PVMD_LOG_FILE: can't open {path}: {err}")]
    File { path: String, err: std::io::Error },
}

/// A small `EnvFilter`-like filter: `LEVEL`, `TARGET` (all levels) or `TARGET=LEVEL`, comma
/// separated; the longest matching target prefix (on `::` boundaries) wins, else the bare
/// level, else off. Written here because tracing-subscriber's `env-filter` brings a regex
/// engine for features the daemon does not need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    default: LevelFilter,
    directives: Vec<(String, LevelFilter)>,
}

impl Filter {
    pub fn parse(spec: &str) -> Result<Filter, SetupError> {
        let mut f = Filter {
            default: LevelFilter::OFF,
            directives: Vec::new(),
        };
        for d in spec.split(',').map(str::trim).filter(|d| !d.is_empty()) {
            let bad = || SetupError::BadDirective(d.to_string());
            match d.split_once('=') {
                Some((t, l)) => {
                    let l = l.trim().parse::<LevelFilter>().map_err(|_| bad())?;
                    let t = t.trim();
                    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b':' || b == b'_') {
                        return Err(bad());
                    }
                    f.directives.push((t.to_string(), l));
                }
                None => match d.parse::<LevelFilter>() {
                    Ok(l) => f.default = l,
                    Err(_) if d.bytes().all(|b| b.is_ascii_alphanumeric() || b == b':' || b == b'_') => {
                        f.directives.push((d.to_string(), LevelFilter::TRACE))
                    }
                    Err(_) => return Err(bad()),
                },
            }
        }
        Ok(f)
    }

    /// The most verbose level `target` may log at.
    pub fn level_for(&self, target: &str) -> LevelFilter {
        self.directives
            .iter()
            .filter(|(t, _)| target == t || (target.starts_with(t.as_str()) && target[t.len()..].starts_with("::")))
            .max_by_key(|(t, _)| t.len())
            .map(|(_, l)| *l)
            .unwrap_or(self.default)
    }

    pub fn enabled(&self, target: &str, level: &Level) -> bool {
        self.level_for(target) >= *level
    }

    /// The legacy debug bits whose targets this filter lets through at `DEBUG`: the daemon
    /// produces those lines only when the bit is set, so `PVMD_LOG=pvmd::net=debug` works
    /// like `-d0x40`.
    pub fn debug_mask(&self) -> u32 {
        DEBUG_TARGETS
            .iter()
            .filter(|(_, _, t)| self.enabled(t, &Level::DEBUG))
            .fold(0, |m, (b, _, _)| m | b)
    }
}

/// The `tracing` levels the legacy file takes: everything at `INFO` and above, and `DEBUG`
/// (and `TRACE`) on the targets whose bit is in the `-d` mask.
pub fn legacy_enabled(mask: u32, target: &str, level: &Level) -> bool {
    *level <= Level::INFO
        || DEBUG_TARGETS.iter().any(|(b, _, t)| {
            mask & b != 0 && (target == *t || target.strip_prefix(t).is_some_and(|r| r.starts_with("::")))
        })
}

/// Collects an event's message and other fields.
#[derive(Default)]
struct Fields {
    message: String,
    pvml: bool,
    rest: Vec<(&'static str, String)>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            n => self.rest.push((n, format!("{value:?}"))),
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message = value.to_string(),
            n => self.rest.push((n, value.to_string())),
        }
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        match field.name() {
            "pvml" => self.pvml = value,
            n => self.rest.push((n, value.to_string())),
        }
    }
}

/// Writes events that did not come from a `Log` (they are already there) to the legacy file.
struct LegacyLayer {
    mask: u32,
}

impl<S: Subscriber> Layer<S> for LegacyLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let m = event.metadata();
        if !legacy_enabled(self.mask, m.target(), m.level()) {
            return;
        }
        let mut f = Fields::default();
        event.record(&mut f);
        if f.pvml {
            return;
        }
        let mut text = f.message;
        for (k, v) in &f.rest {
            text.push_str(&format!(" {k}={v}"));
        }
        let cur = lock(&CURRENT).clone();
        if let Some(inner) = cur {
            lock(&inner).line_at(SystemTime::now(), &text);
        }
    }
}

/// Line format of the `PVMD_LOG` sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// The `PVMD_LOG` sink: text or JSON lines to stderr (until stdio is detached) or a file.
struct SinkLayer {
    filter: Filter,
    format: Format,
    out: Option<Mutex<File>>,
}

impl<S: Subscriber> Layer<S> for SinkLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let m = event.metadata();
        if !self.filter.enabled(m.target(), m.level()) {
            return;
        }
        let mut f = Fields::default();
        event.record(&mut f);
        // Which daemon: its tid once it has one (lines of several hosts can be merged).
        let cur = lock(&CURRENT).clone();
        if let Some(inner) = cur {
            let p = lock(&inner).prefix.clone();
            f.rest.insert(0, ("pvmd", p));
        }
        let line = render(
            self.format,
            SystemTime::now(),
            m.level(),
            m.target(),
            &f.message,
            &f.rest,
        );
        match &self.out {
            Some(file) => {
                let _ = lock(file).write_all(line.as_bytes());
            }
            None if !STDERR_GONE.load(Ordering::Relaxed) => {
                let _ = std::io::stderr().write_all(line.as_bytes());
            }
            None => {}
        }
    }
}

/// One sink line. Fields whose value is `None` are left out; `Some(x)` is shown as `x`.
pub fn render(
    format: Format,
    now: SystemTime,
    level: &Level,
    target: &str,
    message: &str,
    fields: &[(&'static str, String)],
) -> String {
    let ts = rfc3339(now);
    let fields = fields.iter().filter(|(_, v)| v != "None").map(|(k, v)| {
        let v = v.strip_prefix("Some(").and_then(|v| v.strip_suffix(')')).unwrap_or(v);
        (*k, v.trim_matches('"').to_string())
    });
    match format {
        Format::Text => {
            let mut l = format!("{ts} {level:>5} {target}:");
            for (k, v) in fields {
                l.push_str(&format!(" {k}={v}"));
            }
            l.push_str(&format!(" {message}\n"));
            l
        }
        Format::Json => {
            let mut l = format!(
                "{{\"ts\":\"{ts}\",\"level\":\"{level}\",\"target\":{},\"msg\":{}",
                json_str(target),
                json_str(message)
            );
            for (k, v) in fields {
                match v.parse::<i64>() {
                    Ok(n) => l.push_str(&format!(",{}:{n}", json_str(k))),
                    Err(_) => l.push_str(&format!(",{}:{}", json_str(k), json_str(&v))),
                }
            }
            l.push_str("}\n");
            l
        }
    }
}

/// A JSON string literal.
pub fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC).
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// What [`init`] set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setup {
    /// The `-d` mask with the bits `PVMD_LOG` asks for added.
    pub debug_mask: u32,
    /// Problems with the environment; the daemon logs them and goes on without the sink.
    pub warnings: Vec<String>,
}

/// Installs the process's subscriber: the legacy file layer (for events not written through a
/// `Log`) and, if `PVMD_LOG` is set, the structured sink (`PVMD_LOG_FORMAT=text|json`,
/// `PVMD_LOG_FILE=<path>`, else stderr until stdio is detached). Only the first call installs.
pub fn init(debug_mask: u32, env: impl Fn(&str) -> Option<String>) -> Setup {
    static DONE: OnceLock<()> = OnceLock::new();
    let mut setup = Setup {
        debug_mask,
        warnings: Vec::new(),
    };
    let sink = match sink_from_env(&env) {
        Ok(s) => s,
        Err(e) => {
            setup.warnings.push(e.to_string());
            None
        }
    };
    if let Some(s) = &sink {
        setup.debug_mask |= s.filter.debug_mask();
    }
    if DONE.set(()).is_ok() {
        let sub = tracing_subscriber::registry()
            .with(LegacyLayer { mask: setup.debug_mask })
            .with(sink);
        if tracing::subscriber::set_global_default(sub).is_err() {
            setup.warnings.push("a tracing subscriber was already installed".into());
        }
    }
    setup
}

fn sink_from_env(env: &impl Fn(&str) -> Option<String>) -> Result<Option<SinkLayer>, SetupError> {
    let Some(spec) = env("PVMD_LOG").filter(|s| !s.trim().is_empty()) else {
        return Ok(None);
    };
    let filter = Filter::parse(&spec)?;
    let format = match env("PVMD_LOG_FORMAT").as_deref().map(str::trim) {
        None | Some("") | Some("text") => Format::Text,
        Some("json") => Format::Json,
        Some(o) => return Err(SetupError::BadFormat(o.to_string())),
    };
    let out = match env("PVMD_LOG_FILE").filter(|s| !s.is_empty()) {
        None => None,
        Some(path) => {
            let f = OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)
                .map_err(|err| SetupError::File { path, err })?;
            Some(Mutex::new(f))
        }
    };
    Ok(Some(SinkLayer { filter, format, out }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_and_cap() {
        let dir = std::env::temp_dir().join(format!("pvmd-rs-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("pvml.0");
        std::fs::write(&p, "old run\n").unwrap();
        let mut l = Log::stderr(42);
        l.quiet_stderr();
        l.open_file(&p, 200).unwrap();
        let t = UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        l.line_at(t, "before tid");
        l.set_tid(0x80040000);
        l.line_at(t, "after tid\n");
        for _ in 0..10 {
            l.line_at(t, "filler filler filler filler");
        }
        let s = std::fs::read_to_string(&p).unwrap();
        let lines: Vec<&str> = s.lines().collect();
        assert!(!s.contains("old run"), "truncated at open");
        let st = stamp(t);
        assert_eq!(lines[0], format!("[pvmd pid42] {st} before tid"));
        assert_eq!(lines[1], format!("[t80040000] {st} after tid"));
        assert_eq!(*lines.last().unwrap(), "*** logging truncated");
        assert!(s.len() <= 200 + 30);
        assert_eq!(st.len(), "11/26 00:39:54".len());
        assert_eq!(ctime(t).len(), "Thu Nov 26 02:39:58 2026".len());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn classify_and_fields() {
        assert_eq!(classify("tm_conn2() new task t40001"), "pvmd::task");
        assert_eq!(classify("forkexec() t40002 pid 12 /bin/x"), "pvmd::spawn");
        assert_eq!(classify("netinput() host 2 gone (Timeout)"), "pvmd::net");
        assert_eq!(classify("dm_htcommit() serial 3"), "pvmd::host");
        assert_eq!(classify("pvmbailout(0)"), "pvmd");
        let f = fields("netinput() FIN from host 2 for t80080000 via DM_HTUPD");
        assert_eq!(f.tid, Some("t80080000"));
        assert_eq!(f.host, Some(2));
        assert_eq!(f.code, Some("DM_HTUPD"));
        // Words that merely look hex-ish are not tids.
        assert_eq!(fields("task_free() the tasks").tid, None);
    }

    #[test]
    fn filter_directives() {
        let f = Filter::parse("warn, pvmd::net=debug,pvmd::migrate").unwrap();
        assert!(f.enabled("pvmd::net", &Level::DEBUG));
        assert!(!f.enabled("pvmd::net", &Level::TRACE));
        assert!(f.enabled("pvmd::migrate", &Level::TRACE));
        assert!(!f.enabled("pvmd::task", &Level::INFO));
        assert!(f.enabled("pvmd::task", &Level::WARN));
        assert!(!f.enabled("pvmd::netx", &Level::DEBUG), "prefixes match on :: only");
        assert_eq!(f.debug_mask(), 0x40);
        assert_eq!(Filter::parse("debug").unwrap().debug_mask(), 0x3ffff);
        assert!(Filter::parse("pvmd::net=loud").is_err());
        assert!(Filter::parse("a b").is_err());
        assert_eq!(Filter::parse("").unwrap().level_for("pvmd"), LevelFilter::OFF);
    }

    #[test]
    fn legacy_mask_gates_debug() {
        assert!(legacy_enabled(0, "pvmd::net", &Level::INFO));
        assert!(!legacy_enabled(0, "pvmd::net", &Level::DEBUG));
        assert!(legacy_enabled(0x40, "pvmd::net", &Level::DEBUG));
        assert!(legacy_enabled(0x4, "pvmd::spawn", &Level::DEBUG));
        assert!(!legacy_enabled(0x4, "pvmd::net", &Level::DEBUG));
    }

    #[test]
    fn sink_lines() {
        let t = UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20.000Z");
        let fields = vec![
            ("tid", "Some(\"t40001\")".to_string()),
            ("host", "None".to_string()),
            ("code", "Some(\"TM_SPAWN\")".to_string()),
        ];
        let j = render(Format::Json, t, &Level::INFO, "pvmd::task", "say \"hi\"\n", &fields);
        assert_eq!(
            j,
            "{\"ts\":\"2023-11-14T22:13:20.000Z\",\"level\":\"INFO\",\"target\":\"pvmd::task\",\
             \"msg\":\"say \\\"hi\\\"\\n\",\"tid\":\"t40001\",\"code\":\"TM_SPAWN\"}\n"
        );
        let x = render(Format::Text, t, &Level::INFO, "pvmd::task", "m", &fields);
        assert_eq!(
            x,
            "2023-11-14T22:13:20.000Z  INFO pvmd::task: tid=t40001 code=TM_SPAWN m\n"
        );
    }
}
