//! Migration and checkpoint extensions (docs/migration.md §3): capability discovery between a
//! pvmd-rs daemon and its tasks (the TM_CONN2 trailer, TM_XCAPS) and between daemons (DM_XCAPS
//! version 2), and the task requests TM_MIGRATE / TM_CKPT / TM_RESTART.
//!
//! Every request that cannot succeed here is answered at once with an error and a log line
//! naming the reason (the task is on the legacy library, CRIU is missing, the target is a
//! legacy daemon), so no caller ever waits for an answer that will not come.

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use pvm_proto::codes::PvmError;
use pvm_proto::xdr::{XdrReader, XdrWriter};
use pvm_proto::Tid;

use super::{AuthFiles, ConnId, Daemon, Out, Request, MAX_PENDING_BYTES};
use crate::wire;

/// Task -> its pvmd: move a task (`int tid; int host dtid; int mode`), answered `int cc; int host`.
pub const TM_MIGRATE: i32 = 0x8001_0100u32 as i32;
/// Task -> its pvmd: checkpoint (`int op; int scope; int tid; int replicas`).
pub const TM_CKPT: i32 = 0x8001_0101u32 as i32;
/// Task -> its pvmd: restart from a checkpoint (`int epoch; int tid`).
pub const TM_RESTART: i32 = 0x8001_0102u32 as i32;
/// Task -> its pvmd before it closes its socket for a dump.
pub const TM_PARK: i32 = 0x8001_0103u32 as i32;
/// Task -> its (new) pvmd after a restore.
pub const TM_RESUME: i32 = 0x8001_0104u32 as i32;
/// Task -> its pvmd, once after TM_CONN2 when the reply carried the trailer: `int magic; int
/// version; int features` of the task's library. No reply (the task does not wait).
pub const TM_XCAPS: i32 = 0x8001_0105u32 as i32;
/// First and last TM_ code of the extension range (all above the legacy TM_LAST).
pub const TM_EXT_FIRST: i32 = 0x8001_0100u32 as i32;
pub const TM_EXT_LAST: i32 = 0x8001_01ffu32 as i32;

/// pvmd -> task (ctx SYSCTX_TC): "park at your next safe point" (`int op; int epoch`).
pub const TC_MARK: i32 = 0x8003_0100u32 as i32;

/// How long a task asked to park for a one-task checkpoint may take to reach its safe point
/// (as a move's limit in mig_move.rs): the park signal wakes a task computing outside the
/// library within milliseconds; one that ignores it parks at its next library call, and one
/// that makes none for this long is left running and the checkpoint fails, instead of its
/// messages being held and its requester kept waiting without end.
const CKPT_PARK_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

/// [`CKPT_PARK_LIMIT`], or `PVMD_CKPT_PARK_LIMIT_MS` (100 ms to 600 s; a test switch, so that
/// `mig_ckpt_limit.rs` need not compute for 10 s), read once.
fn ckpt_park_limit() -> std::time::Duration {
    static LIMIT: OnceLock<std::time::Duration> = OnceLock::new();
    *LIMIT.get_or_init(|| {
        std::env::var("PVMD_CKPT_PARK_LIMIT_MS")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map_or(CKPT_PARK_LIMIT, |ms| {
                std::time::Duration::from_millis(ms.clamp(100, 600_000))
            })
    })
}

/// "pvmx": the trailer that follows `schedtid` in our TM_CONN2 reply.
pub const XMAGIC: i32 = 0x7076_6d78;
/// Trailer version.
pub const XVERSION: i32 = 1;

/// Feature bits, shared by the TM_CONN2 trailer, TM_XCAPS and DM_XCAPS version 2.
pub mod feat {
    pub const STOP_AND_COPY: u32 = 1 << 0;
    pub const POST_COPY: u32 = 1 << 1;
    pub const CHECKPOINT: u32 = 1 << 2;
    pub const PRE_COPY: u32 = 1 << 3;
    pub const APP_CHECKPOINT: u32 = 1 << 4;
    pub const PARK: u32 = 1 << 5;
    /// Library only (TM_XCAPS version 2, whose fourth int is the signal number): the library
    /// has a park signal installed; the pvmd sends it with TC_MARK (docs/migration.md §4.1).
    pub const PARK_SIGNAL: u32 = 1 << 6;
    /// Task <-> pvmd fragments of any size. In the TM_CONN2 trailer: this daemon takes a
    /// message from a task in large fragments (it reads them in pieces, conn.rs). In TM_XCAPS:
    /// the task's library takes large fragments from its pvmd.
    pub const BIG_FRAGS: u32 = 1 << 7;
    /// Large messages on the daemon route by descriptor (server/arelay.rs). In the TM_CONN2
    /// trailer: this daemon takes `TC_VMDESC` from a task and sends `TC_VMDESC_PVMD`. In
    /// TM_XCAPS: the task's library sends and takes them.
    pub const ARENA_RELAY: u32 = 1 << 8;
}

/// What CRIU can do on this host, probed once (about 0.1 s; `main` starts the probe on a
/// thread at start-up so the first request does not wait for it).
struct HostCaps {
    features: u32,
    /// Why migration is impossible here, when it is.
    missing: Option<String>,
    criu: String,
    /// The probe itself, so that each dump does not probe again (about 0.1 s).
    caps: Option<pvm_migration::Capabilities>,
}

static HOST: OnceLock<HostCaps> = OnceLock::new();

fn probe_now() -> HostCaps {
    if std::env::var_os("PVMD_NO_CRIU").is_some() {
        return HostCaps {
            features: 0,
            missing: Some("CRIU disabled by PVMD_NO_CRIU".into()),
            criu: String::new(),
            caps: None,
        };
    }
    let c = pvm_migration::probe::probe();
    let missing = c.can_migrate().err();
    let mut f = 0;
    if missing.is_none() {
        f |= feat::STOP_AND_COPY;
        if c.lazy_pages.ok() {
            f |= feat::POST_COPY;
        }
    }
    if c.dump.ok() {
        f |= feat::CHECKPOINT;
        if c.restore.ok() {
            f |= feat::APP_CHECKPOINT; // appckpt.rs
        }
    }
    if c.dirty_tracking.ok() {
        f |= feat::PRE_COPY;
    }
    HostCaps {
        features: f,
        missing,
        criu: c.criu.clone().map(|(_, v)| v).unwrap_or_default(),
        caps: Some(c),
    }
}

fn host_caps() -> &'static HostCaps {
    HOST.get_or_init(probe_now)
}

/// The CRIU driver with the probe made at start-up (also for mig_move.rs threads).
pub(super) fn criu_driver() -> pvm_migration::Result<pvm_migration::Criu> {
    criu()
}

/// Why CRIU cannot migrate tasks here, when it cannot.
pub(super) fn criu_missing() -> Option<String> {
    host_caps().missing.clone()
}

/// The `pvm-migrate` helper that restores a task (`restore-task`): `PVMD_MIGRATE_BIN`, else
/// next to this daemon's binary.
pub(super) fn restore_helper() -> Option<String> {
    std::env::var("PVMD_MIGRATE_BIN").ok().or_else(|| {
        let p = std::env::current_exe().ok()?.with_file_name("pvm-migrate");
        p.exists().then(|| p.to_string_lossy().into_owned())
    })
}

/// The CRIU driver with the probe made at start-up.
fn criu() -> pvm_migration::Result<pvm_migration::Criu> {
    match host_caps().caps.clone() {
        Some(c) => pvm_migration::Criu::with_caps(c),
        None => pvm_migration::Criu::new(),
    }
}

/// The CRIU driver for appckpt.rs.
pub(super) fn criu_handle() -> pvm_migration::Result<pvm_migration::Criu> {
    criu()
}

/// How long the probe waits after start-up unless something needs it sooner (a DM_XCAPS to
/// send or answer, [`want_probe`]). The probe runs about ten short processes (`criu check`,
/// `unshare`); run by every slave of a host addition as it starts, on two CPUs, they made
/// adding 8 hosts 20–40 % slower than with the legacy daemon (docs/benchmarks.md). Waiting
/// lets the start-up and the addition finish first.
pub const PROBE_DELAY: std::time::Duration = std::time::Duration::from_secs(2);

/// Wakes the waiting probe thread early ([`want_probe`]).
static PROBE_GO: (std::sync::Mutex<bool>, std::sync::Condvar) =
    (std::sync::Mutex::new(false), std::sync::Condvar::new());

/// Starts the CRIU probe on a thread of its own, after [`PROBE_DELAY`] or when [`want_probe`]
/// says so; `done` hears when it has finished (with how long it took). False if no thread could
/// be made (whoever needs the probe then runs it).
pub fn start_probe(done: tokio::sync::mpsc::UnboundedSender<super::mig_move::MigEvent>) -> bool {
    std::thread::Builder::new()
        .name("criu-probe".into())
        .spawn(move || {
            let (go, cv) = &PROBE_GO;
            if let Ok(g) = go.lock() {
                let _ = cv.wait_timeout_while(g, PROBE_DELAY, |go| !*go);
            }
            let t0 = std::time::Instant::now();
            host_caps();
            let _ = done.send(super::mig_move::MigEvent::Probed { took: t0.elapsed() });
        })
        .is_ok()
}

/// Something waits for the probe: start it now if it is still waiting.
pub fn want_probe() {
    let (go, cv) = &PROBE_GO;
    if let Ok(mut g) = go.lock() {
        *g = true;
        cv.notify_all();
    }
}

/// The probe's summary for the log (waits for the probe).
pub fn probe_summary() -> String {
    let h = host_caps();
    match &h.missing {
        None => format!("migration: CRIU {} features {:#x}", h.criu, h.features),
        Some(r) => format!("migration unavailable here: {r}"),
    }
}

/// Features this daemon announces now: the park protocol always (it is protocol only), the
/// CRIU-backed ones once the probe has found them. Operations bits are advisory: the daemon
/// re-checks at request time and answers with the reason.
pub fn host_features() -> u32 {
    HOST.get().map_or(0, |h| h.features)
}

/// The trailer appended to the TM_CONN2 reply. A legacy libpvm unpacks up to `schedtid` and
/// never reads further (tested: `mig_caps` runs legacy programs against this daemon).
pub fn conn2_trailer() -> Vec<u8> {
    let mut w = XdrWriter::new();
    w.int(XMAGIC)
        .int(XVERSION)
        .int((host_features() | feat::BIG_FRAGS | arena_relay_feature()) as i32);
    w.into_inner()
}

/// [`feat::ARENA_RELAY`] when this daemon can keep an arena (server/arelay.rs).
fn arena_relay_feature() -> u32 {
    if crate::server::arena_relay_offered() {
        feat::ARENA_RELAY
    } else {
        0
    }
}

/// DM_XCAPS version 2 fields after `window`: `int features; string criu version`.
/// Waits for the probe: a peer keeps what we announce here. The daemon defers its DM_XCAPS
/// while the probe thread runs (xcaps.rs), so that this never blocks the event loop then.
pub fn xcaps_v2_fields(w: &mut XdrWriter) {
    let h = host_caps();
    w.int(h.features as i32).string(&h.criu);
}

/// Migration state of one daemon.
#[derive(Debug, Default)]
pub struct MigState {
    /// Features announced by local tasks (TM_XCAPS), by local tid part.
    tasks: HashMap<u32, u32>,
    /// The park signal a local task's library announced (TM_XCAPS version 2), by local tid
    /// part; only signals [`park_signal_ok`] accepts.
    parksig: HashMap<u32, i32>,
    /// pvmd-rs peers that answered or sent DM_XCAPS, with their features (absent: legacy or
    /// not yet known; never sent an extension request).
    peers: BTreeMap<u32, u32>,
    /// Tasks asked to park, by local tid part: messages for them are held.
    parking: HashMap<u32, ParkOp>,
    last_epoch: i32,
    /// The last complete one-task checkpoint of each task, by local tid part.
    ckpts: HashMap<u32, CkptRec>,
    /// Restarted tasks: their pid inside the restore namespace differs from the cookie (the
    /// restore helper's pid), and they stay "spawned" (the helper's exit is their exit).
    restored: std::collections::HashSet<u32>,
    /// Moves between hosts (mig_move.rs).
    pub(super) mv: super::mig_move::MoveState,
    /// The probe thread runs ([`start_probe`]) and has not reported yet: DM_XCAPS waits
    /// (xcaps.rs).
    pub(super) probe_pending: bool,
}

/// What a restart needs besides the image: the task's place in the machine and the pipes its
/// output went to (CRIU's names for them, replaced by new pipes at restore).
#[derive(Debug, Clone)]
struct CkptRec {
    epoch: i32,
    dir: std::path::PathBuf,
    ptid: Tid,
    a_out: String,
    out: (i32, i32, i32),
    trc: (i32, i32, i32),
    keys: [String; 2],
}

/// A one-task checkpoint dump that ran on a thread, back on the event loop.
#[derive(Debug)]
pub struct CkptDone {
    tid: Tid,
    p: ParkOp,
    rec: CkptRec,
    cookie: i32,
    parked: std::time::Duration,
    /// Wall time, CRIU's frozen time, image bytes; or the error.
    res: Result<(std::time::Duration, Option<std::time::Duration>, u64), String>,
}

/// A park in progress (a one-task checkpoint that leaves the task running).
#[derive(Debug)]
struct ParkOp {
    /// Who asked: the TM_CKPT reply goes there when the task runs again.
    conn: ConnId,
    src: Tid,
    ctx: i32,
    wid: i32,
    epoch: i32,
    /// The task's TM_PARK arrived (its EOF that follows means "parked", not "exited").
    parked: bool,
    t0: std::time::Instant,
}

/// The signals a library may ask to be sent with TC_MARK: SIGUSR1, SIGUSR2 and the real-time
/// signals. Never one whose default action or meaning is something else (SIGKILL, SIGSTOP,
/// SIGTERM...), whatever a task announces.
pub fn park_signal_ok(sig: i32) -> bool {
    sig == libc::SIGUSR1 || sig == libc::SIGUSR2 || (libc::SIGRTMIN()..=libc::SIGRTMAX()).contains(&sig)
}

impl<A: AuthFiles> Daemon<A> {
    /// docs/migration.md §4.1: with TC_MARK, wakes a task computing outside the library by
    /// the signal its library announced. Only a task whose library announced one (never a
    /// legacy-library task), and only to a pid the kernel confirmed as the task's own
    /// (SO_PEERCRED at TM_CONNECT, or a process this pvmd spawned or restored), never to a pid
    /// merely claimed. A task that does not react parks at its next call as before.
    pub(super) fn park_nudge(&self, local: u32, out: &mut Vec<Out>) {
        let Some(&sig) = self.mig.parksig.get(&local) else {
            return;
        };
        match self.tasks.get(&local) {
            Some(t) if t.pid_verified && t.pid > 0 => out.push(Out::Signal(t.pid, sig)),
            _ => {}
        }
    }
}

impl MigState {
    pub fn peer_features(&self, host: u32) -> Option<u32> {
        self.peers.get(&host).copied()
    }

    pub fn task_features(&self, local: u32) -> Option<u32> {
        self.tasks.get(&local).copied()
    }

    pub fn task_gone(&mut self, local: u32) {
        self.tasks.remove(&local);
        self.parksig.remove(&local);
        self.restored.remove(&local);
    }

    pub fn is_restored(&self, local: u32) -> bool {
        self.restored.contains(&local)
    }

    /// Where a tid that is not here runs now, when a move told us (mig_move.rs).
    pub fn route_of(&self, tid: Tid) -> Option<u32> {
        self.mv.route_of(tid)
    }

    pub(super) fn set_task_features(&mut self, key: u32, f: u32) {
        self.tasks.insert(key, f);
    }

    pub(super) fn set_restored(&mut self, key: u32) {
        self.restored.insert(key);
    }

    pub(super) fn is_parking(&self, key: u32) -> bool {
        self.parking.contains_key(&key)
    }
}

/// Reads the DM_XCAPS version 2 fields (after kind/version/window) when present.
pub fn parse_xcaps_v2(r: &mut XdrReader<'_>, version: i32) -> Option<u32> {
    if version < 2 {
        return Some(0);
    }
    r.int("features").ok().map(|f| f as u32)
}

fn reply_cc(cc: i32, host: i32) -> Vec<u8> {
    let mut w = XdrWriter::new();
    w.int(cc).int(host);
    w.into_inner()
}

impl<A: AuthFiles> Daemon<A> {
    /// Starts the CRIU probe thread (daemon start-up, [`start_probe`]); until it reports,
    /// DM_XCAPS waits instead of blocking the event loop on the probe.
    pub fn start_probe(&mut self) {
        self.mig.probe_pending = start_probe(self.mig.mv.events());
    }

    /// The probe thread reported (hook of `mig_event`): what waited for it goes on.
    pub(super) fn probed(&mut self, took: std::time::Duration, out: &mut Vec<Out>) {
        self.mig.probe_pending = false;
        out.push(Out::Log(format!("{} (probe {} ms)", probe_summary(), took.as_millis())));
        self.xcaps_resume(out);
    }

    /// Records a peer's DM_XCAPS features (hook in `xcaps_entry`).
    pub(super) fn mig_peer_caps(&mut self, host: u32, features: u32) {
        self.mig.peers.insert(host, features);
    }

    /// The TM_ codes defined so far in the extension range (hook at the top of `dispatch`).
    /// Returns false for every other code, which then gets the legacy treatment of an unknown
    /// code ("bogus tag" logged, dropped), like the rest of the reserved range.
    pub(super) fn mig_tm_entry(&mut self, req: &Request, out: &mut Vec<Out>) -> bool {
        let tag = req.hdr.tag;
        if !(TM_MIGRATE..=TM_XCAPS).contains(&tag) || req.hdr.ctx != pvm_proto::codes::SYSCTX_TM {
            return false;
        }
        if self.conn_tid(req.conn).is_none() {
            out.push(Out::Log(format!("mig: {tag:#x} from an unconnected task; dropped")));
            return true;
        }
        match tag {
            TM_XCAPS => {
                let mut r = XdrReader::new(req.body);
                match (r.int("magic"), r.int("version"), r.int("features")) {
                    (Ok(XMAGIC), Ok(v), Ok(f)) if v >= 1 => {
                        let key = self.key(req.src);
                        self.mig.tasks.insert(key, f as u32);
                        // Version 2 with PARK_SIGNAL: `int signal` follows (§4.1).
                        let sig = if v >= 2 && f as u32 & feat::PARK_SIGNAL != 0 {
                            r.int("signal").ok().filter(|s| park_signal_ok(*s))
                        } else {
                            None
                        };
                        match sig {
                            Some(s) => self.mig.parksig.insert(key, s),
                            None => self.mig.parksig.remove(&key),
                        };
                        if self.debug & 0x2 != 0 {
                            out.push(Out::Log(format!("mig: t{:x} library features {f:#x}", req.src.bits())));
                        }
                    }
                    _ => out.push(Out::Log(format!("mig: bad TM_XCAPS from t{:x}", req.src.bits()))),
                }
                // The library sends it last when it (re)connects: a task back from a one-task
                // checkpoint is ready for the next park now (a TC_MARK sent before, right
                // after its TM_CONN2 reply, would reach it while it is still reconnecting).
                self.mig_resumed(self.key(req.src), out); // mig_move.rs
            }
            TM_MIGRATE => self.tm_migrate(req, out),
            TM_CKPT if super::appckpt::is_app_ckpt(req.body) => self.app_tm_ckpt(req, out),
            TM_RESTART if self.app_is_restart(req.body) => self.app_tm_restart(req, out),
            TM_CKPT => self.tm_ckpt(req, out),
            TM_PARK => self.tm_park(req, out),
            TM_RESTART => self.tm_restart(req, out),
            _ => {
                // TM_PARK/TM_RESUME outside an operation, or a code we do not know: no reply is
                // expected for these.
                out.push(Out::Log(format!(
                    "mig: unexpected {tag:#x} from t{:x}; dropped",
                    req.src.bits()
                )));
            }
        }
        true
    }

    /// TM_CKPT scope 0 (one task, leave-running, image kept on this host): asks the task to
    /// park (TC_MARK), holds its messages, dumps it with `criu dump -R` after its TM_PARK and
    /// EOF, writes its `continue` ticket and answers when that is done.
    fn tm_ckpt(&mut self, req: &Request, out: &mut Vec<Out>) {
        let mut r = XdrReader::new(req.body);
        let (Ok(_op), Ok(scope), Ok(tid), Ok(replicas)) =
            (r.int("op"), r.int("scope"), r.int("tid"), r.int("replicas"))
        else {
            return self.reply(req, req.src, &reply_cc(PvmError::BadParam.code(), 0), out);
        };
        let tid = Tid(tid);
        if scope == 0 && replicas == 0 && self.mig_ckpt_wait(req, tid, out) {
            return; // mig_move.rs: its previous checkpoint has not ended; runs when it has
        }
        let why = if scope != 0 || replicas != 0 {
            Some((
                PvmError::NotImpl,
                "only one-task checkpoints kept on this host (scope 0, replicas 0)".to_string(),
            ))
        } else if !tid.is_task() || !tid.is_on_host(self.host.index) || !self.tasks.contains_key(&tid.local()) {
            Some((PvmError::NoTask, format!("t{:x}: no such task here", tid.bits())))
        } else if self.mig.task_features(tid.local()).unwrap_or(0) & feat::PARK == 0 {
            Some((
                PvmError::NotImpl,
                format!("t{:x} cannot park (legacy libpvm3 or no park protocol)", tid.bits()),
            ))
        } else if !self.tasks[&tid.local()].forked || self.tasks[&tid.local()].conn.is_none() {
            Some((
                PvmError::NotImpl,
                format!("t{:x} was not spawned by this pvmd or is not connected", tid.bits()),
            ))
        } else if self.mig.parking.contains_key(&tid.local()) {
            Some((PvmError::NotImpl, format!("t{:x} is already parking", tid.bits())))
        } else {
            host_caps()
                .missing
                .as_ref()
                .map(|m| (PvmError::NotImpl, format!("CRIU on this host: {m}")))
        };
        if let Some((e, why)) = why {
            out.push(Out::Log(format!("mig: checkpoint of t{:x} refused: {why}", tid.bits())));
            return self.reply(req, req.src, &reply_cc(e.code(), 0), out);
        }
        self.mig.last_epoch += 1;
        let epoch = self.mig.last_epoch;
        let Some(conn) = self.tasks[&tid.local()].conn else {
            return;
        };
        let mut w = XdrWriter::new();
        w.int(0).int(epoch);
        let mark = wire::frame_message(
            tid,
            Tid::LOCAL_PVMD,
            TC_MARK,
            pvm_proto::codes::SYSCTX_TC,
            0,
            &w.into_inner(),
        );
        out.push(Out::Send(conn, mark));
        self.park_nudge(tid.local(), out);
        self.mig.mv.ckpt_started(tid.local()); // mig_move.rs: until it reconnects
        self.mig.parking.insert(
            tid.local(),
            ParkOp {
                conn: req.conn,
                src: req.src,
                ctx: req.hdr.ctx,
                wid: req.hdr.wid,
                epoch,
                parked: false,
                t0: std::time::Instant::now(),
            },
        );
        out.push(Out::Log(format!(
            "mig: t{:x} asked to park (epoch {epoch})",
            tid.bits()
        )));
    }

    /// The task reached its safe point: answer (the last thing on this connection; it closes
    /// after reading it).
    fn tm_park(&mut self, req: &Request, out: &mut Vec<Out>) {
        if self.app_tm_park(req, out) {
            return; // appckpt.rs: parking for an application checkpoint
        }
        let key = self.key(req.src);
        let cc = if let Some(p) = self.mig.parking.get_mut(&key) {
            p.parked = true;
            0
        } else if self.mv_parked(key) {
            0 // mig_move.rs: a task that is moving
        } else {
            PvmError::BadParam.code()
        };
        self.reply(req, req.src, &wire::int_body(cc), out);
    }

    /// Messages for a parking task are held in its pending queue (delivered in order when it
    /// reconnects). Returns the bytes back when the task is not parking.
    /// Whether messages for this task are being held (the relay fast path must not bypass it).
    pub(super) fn mig_is_parking(&self, local: u32) -> bool {
        self.mig.parking.contains_key(&local) || self.mig.mv.holds(local) || self.app.is_parking(local)
    }

    pub(super) fn mig_hold(&mut self, local: u32, bytes: Vec<u8>, out: &mut Vec<Out>) -> Option<Vec<u8>> {
        if !self.mig.parking.contains_key(&local) && !self.app.is_parking(local) {
            return self.mv_hold(local, bytes, out); // mig_move.rs: a task that is moving
        }
        let t = self.tasks.get_mut(&local)?;
        if t.pending_bytes + bytes.len() <= MAX_PENDING_BYTES {
            t.pending_bytes += bytes.len();
            t.pending.push(bytes);
        } else {
            out.push(Out::Log(format!(
                "mig: t{local:x}: too much held for a parked task; message dropped"
            )));
        }
        None
    }

    /// A task's connection ended (hook in `disconnected`): a parked task is dumped and let go.
    pub(super) fn mig_disconnected(&mut self, tid: Tid, out: &mut Vec<Out>) {
        if self.app_disconnected(tid, out) {
            return; // appckpt.rs: parked for an application checkpoint
        }
        let Some(p) = self.mig.parking.remove(&self.key(tid)) else {
            return self.mv_disconnected(tid, out); // mig_move.rs: a task that is moving
        };
        let Some(t) = self.tasks.get(&tid.local()) else { return };
        // The process to dump, and the PVMEPID cookie it reconnects with (no longer its pid).
        let (pid, cookie) = (t.pid, t.cookie);
        let cc = if !p.parked {
            out.push(Out::Log(format!("mig: t{:x} left before parking", tid.bits())));
            self.mig_resumed(tid.local(), out); // mig_move.rs: it will not reconnect
            PvmError::SysErr.code()
        } else {
            let parked = p.t0.elapsed();
            let tmp = std::env::var("PVM_TMP").unwrap_or_else(|_| "/tmp".into());
            let dir = std::path::Path::new(&tmp).join(format!("pvmckpt/t{:x}/{}", tid.bits(), p.epoch));
            let host = pvm_migration::Host {
                netns: None,
                addr: std::net::Ipv4Addr::LOCALHOST,
            };
            let key = |fd: i32| {
                std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
                    .map_or(String::new(), |l| l.to_string_lossy().into_owned())
            };
            let rec = CkptRec {
                epoch: p.epoch,
                dir: dir.clone(),
                ptid: t.ptid,
                a_out: t.a_out.clone(),
                out: (t.outtid, t.outctx, t.outtag),
                trc: (t.trctid, t.trcctx, t.trctag),
                keys: [key(1), key(2)],
            };
            // On a thread: the event loop goes on meanwhile (MigEvent::Ckpt comes back).
            let tx = self.mig.mv.events();
            std::thread::spawn(move || {
                let res = criu()
                    .and_then(|c| c.dump(pid as u32, &host, &dir, true, std::time::Duration::from_secs(60)))
                    .map(|d| (d.wall, d.frozen, d.bytes))
                    .map_err(|e| e.to_string());
                let done = CkptDone {
                    tid,
                    p,
                    rec,
                    cookie,
                    parked,
                    res,
                };
                let _ = tx.send(super::mig_move::MigEvent::Ckpt(Box::new(done)));
            });
            return;
        };
        let body = reply_cc(cc, 0);
        let bytes = wire::frame_message(p.src, Tid::LOCAL_PVMD, TM_CKPT, p.ctx, p.wid, &body);
        out.push(Out::Send(p.conn, bytes));
    }

    /// The time limits of moves and checkpoints (`mig_deadline`) for a pvmd without a network
    /// endpoint (a lone master): with one, `net_deadline` includes them. Without this a lone
    /// pvmd never ran them, and a one-task checkpoint of a task that does not park waited for
    /// ever (server.rs hook).
    pub fn lone_deadline(&self) -> Option<std::time::Duration> {
        if self.net.is_some() {
            return None;
        }
        self.mig_deadline()
    }

    /// [`Self::lone_deadline`] passed (server.rs hook; `net_timeout` does this with a network).
    pub fn lone_timers(&mut self) -> Vec<Out> {
        let mut out = Vec::new();
        if self.net.is_none() {
            self.mig_timers(&mut out);
        }
        out
    }

    /// Hook of `mig_deadline` (mig_move.rs): when the first one-task checkpoint's park limit
    /// passes.
    pub(super) fn ckpt_park_deadline(&self) -> Option<std::time::Instant> {
        self.mig
            .parking
            .values()
            .filter(|p| !p.parked)
            .map(|p| p.t0 + ckpt_park_limit())
            .min()
    }

    /// Hook of `mig_timers` (mig_move.rs): one-task checkpoints whose task did not park within
    /// [`CKPT_PARK_LIMIT`] ([`ckpt_park_limit`]) give up. The task keeps running connected: what was held for it
    /// goes to it now, in order and before anything newer; a TM_PARK it sends later is refused
    /// and its library carries on (as after a move that gave up); the requester gets PvmSysErr.
    pub(super) fn ckpt_park_timers(&mut self, out: &mut Vec<Out>) {
        let now = std::time::Instant::now();
        let due: Vec<u32> = self
            .mig
            .parking
            .iter()
            .filter(|(_, p)| !p.parked && p.t0 + ckpt_park_limit() <= now)
            .map(|(k, _)| *k)
            .collect();
        for key in due {
            let Some(p) = self.mig.parking.remove(&key) else {
                continue;
            };
            let tid = super::key_tid(self.host.index, key);
            out.push(Out::Log(format!(
                "mig: checkpoint of t{:x} given up: it did not park within {:?}",
                tid.bits(),
                ckpt_park_limit()
            )));
            if let Some(t) = self.tasks.get_mut(&key) {
                if let Some(c) = t.conn {
                    t.pending_bytes = 0;
                    for b in std::mem::take(&mut t.pending) {
                        out.push(Out::Send(c, b));
                    }
                }
            }
            let body = reply_cc(PvmError::SysErr.code(), 0);
            let bytes = wire::frame_message(p.src, Tid::LOCAL_PVMD, TM_CKPT, p.ctx, p.wid, &body);
            out.push(Out::Send(p.conn, bytes));
            self.mig_resumed(key, out); // mig_move.rs: requests that waited for it run now
        }
    }

    /// The checkpoint dump ended (MigEvent::Ckpt): record it, let the task reconnect, answer.
    pub(super) fn ckpt_done(&mut self, c: CkptDone, out: &mut Vec<Out>) {
        let CkptDone {
            tid,
            p,
            rec,
            cookie,
            parked,
            res,
        } = c;
        let cc = match res {
            Ok((wall, frozen, bytes)) => {
                out.push(Out::Log(format!(
                    "mig: t{:x} checkpoint epoch {} in {}: parked after {} ms, dump {} ms (frozen {} ms), {} bytes",
                    tid.bits(),
                    p.epoch,
                    rec.dir.display(),
                    parked.as_millis(),
                    wall.as_millis(),
                    frozen.map_or(0, |f| f.as_millis()),
                    bytes
                )));
                crate::metrics::checkpointed(frozen.map_or(0, |f| f.as_millis() as u64)); // metrics.rs
                self.mig.ckpts.insert(tid.local(), rec);
                0
            }
            Err(e) => {
                out.push(Out::Log(format!("mig: t{:x} checkpoint failed: {e}", tid.bits())));
                PvmError::SysErr.code()
            }
        };
        // The ticket lets the task reconnect (as itself, by its PVMEPID cookie) either way.
        let tmp = std::env::var("PVM_TMP").unwrap_or_else(|_| "/tmp".into());
        let ticket = std::path::Path::new(&tmp).join(format!("pvmresume.t{:x}", tid.bits()));
        // Per ticket (`with_extension` made every ticket of a directory share
        // "pvmresume.part": two pvmds writing tickets there swapped or lost them).
        let part = std::path::PathBuf::from(format!("{}.part", ticket.display()));
        let text = format!("continue {cookie} {}\n", p.epoch);
        if let Err(e) = std::fs::write(&part, text).and_then(|()| std::fs::rename(&part, &ticket)) {
            out.push(Out::Log(format!("mig: can't write {}: {e}", ticket.display())));
        }
        let body = reply_cc(cc, if cc == 0 { p.epoch } else { 0 });
        let bytes = wire::frame_message(p.src, Tid::LOCAL_PVMD, TM_CKPT, p.ctx, p.wid, &body);
        out.push(Out::Send(p.conn, bytes));
    }

    /// TM_RESTART: a task whose process is gone (killed) starts again from its last one-task
    /// checkpoint, as the same tid, in a fresh pid namespace on this host, its output going
    /// where it went. Answered once the restore is launched; messages sent to the tid from then
    /// on are held until it reconnects. (Messages sent between the checkpoint and the restart
    /// are not replayed: without a message log the application must roll back with it.)
    /// A task that moved to another host is not gone: refused while that host runs it.
    fn tm_restart(&mut self, req: &Request, out: &mut Vec<Out>) {
        let mut r = XdrReader::new(req.body);
        let (Ok(_epoch), Ok(tid)) = (r.int("epoch"), r.int("tid")) else {
            return self.reply(req, req.src, &reply_cc(PvmError::BadParam.code(), 0), out);
        };
        let tid = Tid(tid);
        let rec = self.mig.ckpts.get(&tid.local()).cloned();
        let helper = std::env::var("PVMD_MIGRATE_BIN").ok().or_else(|| {
            let p = std::env::current_exe().ok()?.with_file_name("pvm-migrate");
            p.exists().then(|| p.to_string_lossy().into_owned())
        });
        let why = if !tid.is_task() || !tid.is_on_host(self.host.index) {
            Some((
                PvmError::NoTask,
                format!("t{:x} is not a task of this host", tid.bits()),
            ))
        } else if rec.is_none() {
            Some((PvmError::NotFound, format!("t{:x}: no checkpoint here", tid.bits())))
        } else if self.tasks.contains_key(&tid.local()) {
            Some((PvmError::BadParam, format!("t{:x} is still running", tid.bits())))
        } else if let Some(h) = self.mig.route_of(tid) {
            // The task moved away (mig_move.rs keeps a forwarding entry): restoring the
            // checkpoint here would make a second process answer as the same tid. The entry
            // goes when its new host announces its exit (DM_TIDMOVED "exited") or fails; only
            // then is the tid free for a restart here.
            Some((
                PvmError::BadParam,
                format!(
                    "t{:x} is running on host {h} (it moved there); a restart here is possible once host {h} reports its exit",
                    tid.bits()
                ),
            ))
        } else if helper.is_none() {
            Some((
                PvmError::NotImpl,
                "pvm-migrate not found (set PVMD_MIGRATE_BIN)".to_string(),
            ))
        } else {
            None
        };
        let (Some(rec), Some(helper), None) = (rec, helper, why.clone()) else {
            let (e, why) = why.unwrap_or((PvmError::SysErr, String::new()));
            out.push(Out::Log(format!("mig: restart of t{:x} refused: {why}", tid.bits())));
            return self.reply(req, req.src, &reply_cc(e.code(), 0), out);
        };
        let argv = vec![
            helper.clone(),
            "restore-task".to_string(),
            rec.dir.to_string_lossy().into_owned(),
            rec.keys[0].clone(),
            rec.keys[1].clone(),
        ];
        // The restored task reconnects with the cookie of its ticket.
        let cookie = self.next_cookie();
        let pid = match self.launcher.launch(tid, &helper, &argv, &[]) {
            Ok(pid) => pid,
            Err(e) => {
                out.push(Out::Log(format!("mig: restart of t{:x}: {e}", tid.bits())));
                return self.reply(req, req.src, &reply_cc(PvmError::SysErr.code(), 0), out);
            }
        };
        self.tasks.insert(
            tid.local(),
            super::Task {
                conn: None,
                forked: true,
                pending: Vec::new(),
                pending_bytes: 0,
                out_buf: Vec::new(),
                ptid: rec.ptid,
                pid,
                cookie,
                pid_verified: true,
                a_out: rec.a_out.clone(),
                outtid: rec.out.0,
                outctx: rec.out.1,
                outtag: rec.out.2,
                trctid: rec.trc.0,
                trcctx: rec.trc.1,
                trctag: rec.trc.2,
                contexts: Vec::new(),
                mca: None,
            },
        );
        self.mig.tasks.insert(tid.local(), feat::PARK);
        self.mig.restored.insert(tid.local());
        if rec.out.0 > 0 {
            // The collector saw the old process's EOF: announce the task again, as at spawn.
            let mut body = wire::output_record(tid, super::TO_NEW, &[]);
            body.extend_from_slice(&wire::int_body(rec.ptid.0));
            self.send_to_task(Tid(rec.out.0), rec.out.2, rec.out.1, 0, &body, out);
            // And the "spawned" record its spawner's library would have sent (-1): the
            // collector waits for both it and the EOF before it lets go of the task.
            let spawned = wire::output_record(tid, -1, &[]);
            self.send_to_task(Tid(rec.out.0), rec.out.2, rec.out.1, 0, &spawned, out);
        }
        let tmp = std::env::var("PVM_TMP").unwrap_or_else(|_| "/tmp".into());
        let sock = std::env::var("PVMSOCK").unwrap_or_default();
        let ticket = std::path::Path::new(&tmp).join(format!("pvmresume.t{:x}", tid.bits()));
        // Per ticket (`with_extension` made every ticket of a directory share
        // "pvmresume.part": two pvmds writing tickets there swapped or lost them).
        let part = std::path::PathBuf::from(format!("{}.part", ticket.display()));
        let text = format!("restored {sock} {cookie} {}\n", rec.epoch);
        if let Err(e) = std::fs::write(&part, text).and_then(|()| std::fs::rename(&part, &ticket)) {
            out.push(Out::Log(format!("mig: can't write {}: {e}", ticket.display())));
        }
        out.push(Out::Log(format!(
            "mig: t{:x} restarting from epoch {} ({}), restore helper pid {pid}",
            tid.bits(),
            rec.epoch,
            rec.dir.display()
        )));
        crate::metrics::RESTARTS.inc(); // metrics.rs
        self.reply(req, req.src, &reply_cc(0, rec.epoch), out);
    }

    /// TM_MIGRATE: the move itself is in mig_move.rs.
    fn tm_migrate(&mut self, req: &Request, out: &mut Vec<Out>) {
        self.mv_tm_migrate(req.conn, req.src, req.hdr.ctx, req.hdr.wid, req.body, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoAuth;

    impl AuthFiles for NoAuth {
        fn write_task_auth(&mut self, _: &str) -> std::io::Result<()> {
            Ok(())
        }
        fn create_pvmd_auth(&mut self) -> std::io::Result<String> {
            Ok("/nonexistent".into())
        }
        fn pvmd_auth_written(&mut self, _: &str) -> std::io::Result<bool> {
            Ok(false)
        }
        fn remove(&mut self, _: &str) {}
    }

    /// A task asked to park for a one-task checkpoint that never parks: after the limit the
    /// requester gets PvmSysErr, what was held goes to the task (before anything newer), the
    /// task is no longer "parking", and no deadline is left.
    #[test]
    fn a_checkpoint_whose_task_does_not_park_in_time_gives_up() {
        let mut d = Daemon::new(
            super::super::HostConfig::master("vm", "LINUX64", "7f000001:801e"),
            NoAuth,
            0,
        );
        let w = Tid::task(1, 5);
        let key = d.adopt_task(
            w,
            super::super::mig_move::Adopt {
                ptid: Tid::NONE,
                a_out: "w".into(),
                out: (0, 0, 0),
                trc: (0, 0, 0),
                pid: 0,
                cookie: 77,
                features: feat::PARK,
            },
        );
        let held = wire::frame_message(w, Tid::task(1, 1), 1, 0, 0, &wire::int_body(42));
        {
            let t = d.tasks.get_mut(&key).unwrap();
            t.conn = Some(8);
            t.pending_bytes = held.len();
            t.pending.push(held.clone());
        }
        let started = std::time::Instant::now();
        let park = |t0| ParkOp {
            conn: 7,
            src: Tid::task(1, 1),
            ctx: 0,
            wid: 9,
            epoch: 1,
            parked: false,
            t0,
        };
        d.mig.parking.insert(key, park(started));
        // Within the limit: nothing happens, the deadline is the limit.
        let mut out = Vec::new();
        d.ckpt_park_timers(&mut out);
        assert!(out.is_empty() && d.mig_is_parking(key));
        assert_eq!(d.ckpt_park_deadline(), Some(started + ckpt_park_limit()));
        // Past it: given up.
        let late = started
            .checked_sub(ckpt_park_limit() + std::time::Duration::from_secs(1))
            .unwrap_or(started);
        d.mig.parking.insert(key, park(late));
        d.ckpt_park_timers(&mut out);
        assert!(!d.mig_is_parking(key) && d.ckpt_park_deadline().is_none());
        assert!(matches!(out.iter().find(|o| matches!(o, Out::Send(8, _))), Some(Out::Send(8, b)) if *b == held));
        let answer = out
            .iter()
            .find_map(|o| match o {
                Out::Send(7, b) => Some(b),
                _ => None,
            })
            .expect("the requester is answered");
        let at = 16 + pvm_proto::codes::MSGHDR_LEN;
        assert_eq!(
            i32::from_be_bytes(answer[at..at + 4].try_into().unwrap()),
            PvmError::SysErr.code()
        );
        assert!(d.tasks[&key].pending.is_empty() && d.tasks[&key].pending_bytes == 0);
        // A parked task is not timed out (its EOF and the dump follow).
        let mut p = park(late);
        p.parked = true;
        d.mig.parking.insert(key, p);
        out.clear();
        d.ckpt_park_timers(&mut out);
        assert!(out.is_empty() && d.mig_is_parking(key) && d.ckpt_park_deadline().is_none());
    }

    #[test]
    fn a_task_cannot_ask_for_a_fatal_signal() {
        assert!(park_signal_ok(libc::SIGUSR2) && park_signal_ok(libc::SIGUSR1));
        assert!(park_signal_ok(libc::SIGRTMIN()) && park_signal_ok(libc::SIGRTMAX()));
        for s in [
            0,
            -1,
            libc::SIGKILL,
            libc::SIGTERM,
            libc::SIGSTOP,
            libc::SIGSEGV,
            65,
            i32::MAX,
        ] {
            assert!(!park_signal_ok(s), "{s}");
        }
    }

    #[test]
    fn conn2_trailer_starts_with_the_magic_and_version() {
        let t = conn2_trailer();
        let mut r = XdrReader::new(&t);
        assert_eq!(r.int("magic").unwrap(), XMAGIC);
        assert_eq!(r.int("version").unwrap(), XVERSION);
        assert!(r.int("features").is_ok());
        assert!(r.int("more").is_err(), "exactly three ints");
    }

    #[test]
    fn xcaps_v2_features_are_read_only_from_version_2() {
        let mut w = XdrWriter::new();
        w.int(0x23).string("4.1.1");
        let b = w.into_inner();
        assert_eq!(parse_xcaps_v2(&mut XdrReader::new(&b), 2), Some(0x23));
        assert_eq!(
            parse_xcaps_v2(&mut XdrReader::new(&b), 1),
            Some(0),
            "version 1: no migration"
        );
        assert_eq!(parse_xcaps_v2(&mut XdrReader::new(&[]), 2), None, "truncated");
    }
}
