//! Optional Prometheus metrics on loopback: `PVMD_METRICS=127.0.0.1:PORT`.
//!
//! Counters are process-global atomics so that any part of the daemon (the tokio shell, the
//! migration helpers) can bump them with one line (`metrics::MIGRATIONS.inc()`,
//! `metrics::observe_freeze(ms)`) without threading a handle through the decision core. The
//! endpoint is a tiny hand-written HTTP/1.0 server: one request per connection, bounded in
//! size and time, text exposition format 0.0.4. It only ever binds a loopback address because
//! it has no authentication; in a network namespace "loopback" is that namespace's own `lo`
//! (docs/tracing.md).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use pvm_proto::ddp::{LinkStats, RTT_BUCKETS_US};

/// A monotonic counter.
pub struct Counter(AtomicU64);

impl Counter {
    pub const fn new() -> Counter {
        Counter(AtomicU64::new(0))
    }
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Default for Counter {
    fn default() -> Self {
        Counter::new()
    }
}

/// A value that goes up and down.
pub struct Gauge(AtomicI64);

impl Gauge {
    pub const fn new() -> Gauge {
        Gauge(AtomicI64::new(0))
    }
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Default for Gauge {
    fn default() -> Self {
        Gauge::new()
    }
}

/// Freeze-time histogram bounds, milliseconds.
pub const FREEZE_BUCKETS_MS: [u64; 10] = [10, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000];

/// A histogram with fixed bounds (cumulative buckets, as exposed).
pub struct Histogram<const N: usize> {
    bounds: [u64; N],
    le: [AtomicU64; N],
    count: AtomicU64,
    sum: AtomicU64,
}

impl<const N: usize> Histogram<N> {
    pub const fn new(bounds: [u64; N]) -> Self {
        Histogram {
            bounds,
            le: [const { AtomicU64::new(0) }; N],
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0),
        }
    }
    pub fn observe(&self, v: u64) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(v, Ordering::Relaxed);
        for (b, n) in self.bounds.iter().zip(&self.le) {
            if v <= *b {
                n.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// UDP datagrams received from / sent to other pvmds.
pub static DATAGRAMS_IN: Counter = Counter::new();
pub static DATAGRAMS_OUT: Counter = Counter::new();
/// Fragments read from / written to local tasks.
pub static FRAGS_IN: Counter = Counter::new();
pub static FRAGS_OUT: Counter = Counter::new();
/// Messages from local tasks (counted at their last fragment) that the daemon routed.
pub static MESSAGES_ROUTED: Counter = Counter::new();
/// Task migrations finished, and those refused or failed (every move answered with an error,
/// counted by the pvmd where the task ran).
pub static MIGRATIONS: Counter = Counter::new();
pub static MIGRATION_FAILURES: Counter = Counter::new();
/// Checkpoints written and restarts done.
pub static CHECKPOINTS: Counter = Counter::new();
pub static RESTARTS: Counter = Counter::new();
/// How long a task stood frozen for a checkpoint or a migration, milliseconds.
pub static FREEZE_MS: Histogram<10> = Histogram::new(FREEZE_BUCKETS_MS);
/// Tasks on this host and hosts in the virtual machine (refreshed by [`sync`]).
pub static TASKS: Gauge = Gauge::new();
pub static HOSTS: Gauge = Gauge::new();

/// The datagram endpoint's own counters, copied by [`sync_link`].
static LINK: std::sync::Mutex<Option<LinkStats>> = std::sync::Mutex::new(None);
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Records one freeze (checkpoint or migration) of `ms` milliseconds.
pub fn observe_freeze(ms: u64) {
    FREEZE_MS.observe(ms);
}

/// A fragment came from a local task; `eom` if it ends a message.
pub fn frag_in(eom: bool) {
    FRAGS_IN.inc();
    if eom {
        MESSAGES_ROUTED.inc();
    }
}

/// A checkpoint was written; the task stood frozen `frozen_ms` milliseconds.
pub fn checkpointed(frozen_ms: u64) {
    CHECKPOINTS.inc();
    observe_freeze(frozen_ms);
}

/// A migration finished (`Ok(frozen_ms)`) or failed.
pub fn migrated(result: Result<u64, ()>) {
    match result {
        Ok(ms) => {
            MIGRATIONS.inc();
            observe_freeze(ms);
        }
        Err(()) => MIGRATION_FAILURES.inc(),
    }
}

/// Whether the endpoint runs; the shell skips its periodic copies otherwise.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Copies the datagram endpoint's counters (cheap; called by the shell after sending).
pub fn sync_link(stats: Option<LinkStats>) {
    if enabled() {
        *LINK.lock().unwrap_or_else(|e| e.into_inner()) = stats;
    }
}

/// Refreshes the gauges; called once per turn of the event loop, so `counts` must be cheap.
/// (An earlier version skipped refreshes closer than 100 ms apart, and a host-table change
/// that came right after another event stayed invisible until the next event.)
pub fn sync(counts: impl FnOnce() -> (usize, usize)) {
    if !enabled() {
        return;
    }
    let (tasks, hosts) = counts();
    TASKS.set(tasks as i64);
    HOSTS.set(hosts as i64);
}

/// `PVMD_METRICS` could not be used.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("PVMD_METRICS={0:?} is not an address:port (want e.g. 127.0.0.1:9464)")]
    BadAddress(String),
    #[error("PVMD_METRICS={0} refused: the metrics endpoint has no authentication and only listens on loopback (127.0.0.0/8 or ::1)")]
    NotLoopback(SocketAddr),
    #[error("PVMD_METRICS: can't listen on {addr}: {err}")]
    Bind { addr: SocketAddr, err: std::io::Error },
}

/// Parses `PVMD_METRICS`, refusing anything but a loopback address.
pub fn parse_addr(spec: &str) -> Result<SocketAddr, MetricsError> {
    let a: SocketAddr = spec
        .trim()
        .parse()
        .map_err(|_| MetricsError::BadAddress(spec.to_string()))?;
    if !a.ip().is_loopback() {
        return Err(MetricsError::NotLoopback(a));
    }
    Ok(a)
}

/// Binds the endpoint (inside the runtime) and serves it in the background.
pub fn start(spec: &str) -> Result<SocketAddr, MetricsError> {
    let addr = parse_addr(spec)?;
    let std = std::net::TcpListener::bind(addr).map_err(|err| MetricsError::Bind { addr, err })?;
    let bound = std.local_addr().unwrap_or(addr);
    std.set_nonblocking(true)
        .map_err(|err| MetricsError::Bind { addr, err })?;
    let listener = tokio::net::TcpListener::from_std(std).map_err(|err| MetricsError::Bind { addr, err })?;
    ENABLED.store(true, Ordering::Relaxed);
    tokio::spawn(serve(listener));
    Ok(bound)
}

/// Longest request head read, and the time a client gets to send it.
const MAX_REQUEST: usize = 8192;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// At most this many scrapes are answered at once; more connections wait in the backlog.
const MAX_CLIENTS: usize = 8;

async fn serve(listener: tokio::net::TcpListener) {
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CLIENTS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        tokio::spawn(async move {
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, answer(stream)).await;
            drop(permit);
        });
    }
}

async fn answer(mut s: tokio::net::TcpStream) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && !buf.windows(2).any(|w| w == b"\n\n") {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_REQUEST {
            break;
        }
    }
    let (status, body) = respond(&buf);
    let head = format!(
        "HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await?;
    s.write_all(body.as_bytes()).await?;
    s.shutdown().await
}

/// Status line and body for a request head.
pub fn respond(req: &[u8]) -> (&'static str, String) {
    if req.len() > MAX_REQUEST {
        return ("431 Request Header Fields Too Large", String::new());
    }
    let line = req.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut w = line.split_whitespace();
    match (w.next(), w.next()) {
        (Some("GET"), Some("/metrics" | "/")) => ("200 OK", render()),
        (Some("GET"), Some(_)) => ("404 Not Found", "see /metrics\n".to_string()),
        _ => ("400 Bad Request", String::new()),
    }
}

/// The exposition text.
pub fn render() -> String {
    use std::fmt::Write;
    let mut o = String::with_capacity(4096);
    let counter = |o: &mut String, name: &str, help: &str, v: u64| {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
    };
    counter(
        &mut o,
        "pvmd_datagrams_in_total",
        "UDP datagrams received from other pvmds.",
        DATAGRAMS_IN.get(),
    );
    counter(
        &mut o,
        "pvmd_datagrams_out_total",
        "UDP datagrams sent to other pvmds.",
        DATAGRAMS_OUT.get(),
    );
    counter(
        &mut o,
        "pvmd_fragments_in_total",
        "Fragments read from local tasks.",
        FRAGS_IN.get(),
    );
    counter(
        &mut o,
        "pvmd_fragments_out_total",
        "Fragments written to local tasks.",
        FRAGS_OUT.get(),
    );
    counter(
        &mut o,
        "pvmd_messages_routed_total",
        "Messages from local tasks routed by this pvmd.",
        MESSAGES_ROUTED.get(),
    );
    counter(
        &mut o,
        "pvmd_migrations_total",
        "Task migrations finished.",
        MIGRATIONS.get(),
    );
    counter(
        &mut o,
        "pvmd_migration_failures_total",
        "Task migrations refused or failed.",
        MIGRATION_FAILURES.get(),
    );
    counter(
        &mut o,
        "pvmd_checkpoints_total",
        "Task checkpoints written.",
        CHECKPOINTS.get(),
    );
    counter(
        &mut o,
        "pvmd_restarts_total",
        "Tasks restarted from a checkpoint.",
        RESTARTS.get(),
    );
    let link = (*LINK.lock().unwrap_or_else(|e| e.into_inner())).unwrap_or_default();
    counter(
        &mut o,
        "pvmd_retransmits_total",
        "pvmd-pvmd data packets sent again after a timeout.",
        link.retransmits,
    );
    let _ = writeln!(
        o,
        "# HELP pvmd_tasks Tasks on this host.\n# TYPE pvmd_tasks gauge\npvmd_tasks {}",
        TASKS.get()
    );
    let _ = writeln!(
        o,
        "# HELP pvmd_hosts Hosts in the virtual machine.\n# TYPE pvmd_hosts gauge\npvmd_hosts {}",
        HOSTS.get()
    );
    let _ = writeln!(
        o,
        "# HELP pvmd_rtt_seconds Round trips of pvmd-pvmd packets acknowledged after one send.\n# TYPE pvmd_rtt_seconds histogram"
    );
    for (b, n) in RTT_BUCKETS_US.iter().zip(link.rtt_le) {
        let _ = writeln!(o, "pvmd_rtt_seconds_bucket{{le=\"{}\"}} {n}", *b as f64 / 1e6);
    }
    let _ = writeln!(o, "pvmd_rtt_seconds_bucket{{le=\"+Inf\"}} {}", link.rtt_samples);
    let _ = writeln!(o, "pvmd_rtt_seconds_sum {}", link.rtt_sum_us as f64 / 1e6);
    let _ = writeln!(o, "pvmd_rtt_seconds_count {}", link.rtt_samples);
    let _ = writeln!(
        o,
        "# HELP pvmd_freeze_seconds Time a task stood frozen for a checkpoint or a migration.\n# TYPE pvmd_freeze_seconds histogram"
    );
    for (b, n) in FREEZE_MS.bounds.iter().zip(&FREEZE_MS.le) {
        let _ = writeln!(
            o,
            "pvmd_freeze_seconds_bucket{{le=\"{}\"}} {}",
            *b as f64 / 1e3,
            n.load(Ordering::Relaxed)
        );
    }
    let _ = writeln!(o, "pvmd_freeze_seconds_bucket{{le=\"+Inf\"}} {}", FREEZE_MS.count());
    let _ = writeln!(
        o,
        "pvmd_freeze_seconds_sum {}",
        FREEZE_MS.sum.load(Ordering::Relaxed) as f64 / 1e3
    );
    let _ = writeln!(o, "pvmd_freeze_seconds_count {}", FREEZE_MS.count());
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_only() {
        assert!(parse_addr("127.0.0.1:9464").is_ok());
        assert!(parse_addr("127.1.2.3:0").is_ok());
        assert!(parse_addr("[::1]:9464").is_ok());
        assert!(matches!(parse_addr("0.0.0.0:9464"), Err(MetricsError::NotLoopback(_))));
        assert!(matches!(parse_addr("10.0.0.1:9464"), Err(MetricsError::NotLoopback(_))));
        assert!(matches!(parse_addr("localhost"), Err(MetricsError::BadAddress(_))));
        let e = parse_addr("192.168.1.1:80").unwrap_err().to_string();
        assert!(e.contains("only listens on loopback"), "{e}");
    }

    #[test]
    fn requests() {
        assert_eq!(respond(b"GET /metrics HTTP/1.0\r\n\r\n").0, "200 OK");
        assert_eq!(respond(b"GET /x HTTP/1.0\r\n\r\n").0, "404 Not Found");
        assert_eq!(respond(b"\x00\xff").0, "400 Bad Request");
        assert_eq!(
            respond(&[b'a'; MAX_REQUEST + 1]).0,
            "431 Request Header Fields Too Large"
        );
    }

    #[test]
    fn exposition_changes() {
        let before = FREEZE_MS.count();
        observe_freeze(120);
        MIGRATIONS.inc();
        let text = render();
        assert!(FREEZE_MS.count() > before);
        assert!(text.contains("# TYPE pvmd_freeze_seconds histogram"));
        assert!(text.contains("pvmd_freeze_seconds_bucket{le=\"0.25\"}"));
        let m: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("pvmd_migrations_total "))
            .and_then(|v| v.parse().ok())
            .unwrap();
        assert!(m >= 1);
        // Every sample line is `name{labels} value` or `name value`.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, v) = l.rsplit_once(' ').unwrap();
            assert!(v.parse::<f64>().is_ok(), "{l}");
        }
    }
}
