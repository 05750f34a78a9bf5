//! Moving a running task to another pvmd-rs host (TM_MIGRATE; docs/migration.md §3.2 and §4).
//!
//! A move, seen from the **source** pvmd (the task runs here):
//! 1. DM_MIGPREP to the target, which checks it can restore, listens for the image stream and
//!    answers with the port and the cookie the restored task will present;
//! 2. TC_MARK to the task; from then on every message for it is **held** here, in order;
//! 3. the task parks (TM_PARK, then EOF); a thread waits until the task's output pipes are
//!    read empty, dumps it with CRIU (the task is killed by the dump) and streams the image
//!    directory to the target (`pvm_migration::transfer`, one TCP stream);
//! 4. the target restores it with `pvm-migrate restore-task` (new output pipes), registers it
//!    under its unchanged tid ([`Daemon::adopt_task`]: the host bits may be another host's),
//!    writes its resume ticket and, once the task has reconnected, sends DM_MIGDONE;
//! 5. the source forgets the task without an exit notice, keeps a **forwarding entry**
//!    tid -> target ([`Daemon::set_tid_route`]), forwards what it held in order, answers the
//!    requester, and tells every pvmd-rs peer (DM_TIDMOVED) so that they route directly.
//!
//! Order without sequence numbers: a pvmd that starts routing directly to the new host
//! (a peer after DM_TIDMOVED, the target for its own tasks after the restore) sends a
//! **flush** (DM_TIDMOVED kind 1) the old way, through the previous host. The new host holds
//! messages that arrive directly from a host until that host's flush has come through the
//! previous host ([`Gate`]): everything a host sent the old way is delivered before anything
//! it sent the new way. Legacy daemons never learn the new place; they route by the tid's
//! host bits, and the origin pvmd relays.
//!
//! CRIU and the image stream run on threads; their results come back as [`MigEvent`]s that the
//! shell hands to [`Daemon::mig_event`]. The event loop never waits for them.

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pvm_proto::codes::{Dm, PvmError, MSGHDR_LEN};
use pvm_proto::frag::{FragFlags, StreamFragHeader};
use pvm_proto::xdr::{XdrReader, XdrWriter};
use pvm_proto::Tid;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use super::migrate::{feat, TC_MARK, TM_MIGRATE};
use super::{key_tid, AuthFiles, ConnId, Daemon, Out, MAX_PENDING_BYTES};
use crate::wire;

/// Source -> target: prepare to receive a task. Body `int op; int tid; int mode; string page
/// server; int ptid; string a_out; int outtid, outctx, outtag, trctid, trcctx, trctag; string
/// ticket path; int features`. Reply (same code and wid): `int op; int cc; int port; int
/// cookie`.
pub const DM_MIGPREP: i32 = 0x8002_0101u32 as i32;
/// Target -> source: `int op; int tid; int cc; int newpid` (the task runs on the target, or
/// the restore failed). Source -> target with cc < 0: the move is abandoned.
pub const DM_MIGDONE: i32 = 0x8002_0102u32 as i32;
/// `int tid; int host (index); int kind; int from`: kind 0 = the task now runs on `host`
/// (source -> every pvmd-rs peer), 1 = flush: everything `from` sent the old way is ahead of
/// this (sent towards the previous host, relayed to the new one), 2 = the task exited (its
/// last host -> every pvmd-rs peer: watchers fire, forwarding entries go).
pub const DM_TIDMOVED: i32 = 0x8002_0103u32 as i32;
/// A pvmd -> the pvmd where a task runs: TM_MIGRATE on behalf of a local requester, `int op;
/// int tid; int host; int mode`; reply (same code and wid) `int op; int cc; int host`.
pub const DM_MIGREQ: i32 = 0x8002_0108u32 as i32;
/// A pvmd -> the pvmd where a moved task runs: one fragment of a multicast for it, `int tid`
/// then the frame (its destination is the multicast tid, as the task must see it). No reply.
pub const DM_MIGMCA: i32 = 0x8002_010au32 as i32;
/// A pvmd -> the pvmd where a moved task runs: one relayed fragment, the body being the frame
/// as the task would read it (16-byte stream header, payload). No reply.
pub const DM_MIGFWD: i32 = 0x8002_0109u32 as i32;

const KIND_MOVED: i32 = 0;
const KIND_FLUSH: i32 = 1;
const KIND_EXITED: i32 = 2;

/// Limit for one CRIU dump or restore and for the image stream.
const CRIU_LIMIT: Duration = Duration::from_secs(60);
/// Longest wait for the task's output pipes to be read empty before the dump.
const DRAIN_LIMIT: Duration = Duration::from_secs(2);
/// How long the target may take to answer DM_MIGPREP.
const PREP_LIMIT: Duration = Duration::from_secs(30);
/// How long a task may take to reach its safe point after TC_MARK (a task computing outside
/// the library does not park before its next library call).
const PARK_LIMIT: Duration = Duration::from_secs(10);
/// How long a move may wait for DM_MIGDONE after its dump.
const DONE_LIMIT: Duration = Duration::from_secs(180);
/// How long a move or one-task checkpoint asked for while the same task is in a one-task
/// checkpoint waits for it to be back: the checkpoint is answered once its image is written,
/// before the task has read its ticket and reconnected, so an asker that goes on at once
/// would find it "not connected" (docs/migration.md §4.2). Twice the park limit: the park,
/// the dump and the reconnection of the checkpoint before it.
const RESUME_WAIT: Duration = Duration::from_secs(20);
/// Most requests waiting for such tasks; more are refused at once, as before.
const MAX_WAITERS: usize = 64;
/// Largest TM_ body kept for a waiting request (a TM_CKPT body is 4 ints).
const MAX_WAITER_BODY: usize = 64;
/// A gate holding messages longer than this logs it (once per wait): a flush normally comes
/// within a round trip through the previous host.
const GATE_WARN: Duration = Duration::from_secs(5);
/// Op ids carry the initiator's host index above this many bits, so that a request and a
/// reply of the same code are told apart (and ops of different hosts never clash).
const OP_HOST_SHIFT: u32 = 18;

/// What a blocking job reports back to the event loop.
#[derive(Debug)]
pub enum MigEvent {
    /// Source: the dump and the image stream of a move ended.
    Dumped {
        key: u32,
        op: i32,
        res: Result<DumpInfo, DumpError>,
    },
    /// Source: the pages of the previous post-copy restore of a task that is to move again
    /// have all arrived; it can park now.
    ReadyToPark { key: u32, op: i32 },
    /// A one-task checkpoint's dump ended (migrate.rs).
    Ckpt(Box<super::migrate::CkptDone>),
    /// An application checkpoint's dumps or image stream ended (appckpt.rs).
    App(Box<super::appckpt::AppDone>),
    /// Target: the image stream of a move arrived (or failed).
    ImageIn {
        tid: u32,
        op: i32,
        res: Result<u64, String>,
    },
    /// Source, post-copy: the page server ended (every page fetched, or a failure); whether
    /// the task still lives here (CRIU resumes it when the move failed).
    PagesServed {
        key: u32,
        op: i32,
        res: Result<(), String>,
        alive: bool,
        pid: i32,
        after: Duration,
        dir: PathBuf,
    },
    /// The CRIU probe finished (migrate.rs `start_probe`), after `took`.
    Probed { took: Duration },
}

/// Figures of a dump and its stream, for the log and docs/migration.md.
#[derive(Debug, Clone)]
pub struct DumpInfo {
    pub drained: Duration,
    pub dump: Duration,
    pub frozen: Option<Duration>,
    pub bytes: u64,
    pub stream: Duration,
    pub keys: [String; 2],
    /// Post-copy: the task is frozen here and its pages are served until PagesServed.
    pub lazy: bool,
    /// Why post-copy was asked for but stop-and-copy done.
    pub fallback: Option<String>,
}

/// A failed dump or stream: whether the task still runs (CRIU leaves it running when the dump
/// itself fails) and whether a complete image exists here (a failed stream).
#[derive(Debug)]
pub struct DumpError {
    pub why: String,
    pub alive: bool,
    pub image: Option<[String; 2]>,
}

/// What [`Daemon::adopt_task`] needs to register a task restored here under its own tid.
#[derive(Debug, Clone)]
pub struct Adopt {
    pub ptid: Tid,
    pub a_out: String,
    /// outtid, outctx, outtag: where its output goes (unchanged by a move).
    pub out: (i32, i32, i32),
    /// trctid, trcctx, trctag.
    pub trc: (i32, i32, i32),
    /// The restore helper's pid (its exit is the task's exit).
    pub pid: i32,
    /// The PVMEPID cookie the restored task presents in TM_CONN2.
    pub cookie: i32,
    /// The library features the task announced (TM_XCAPS), kept across the move.
    pub features: u32,
}

/// Who asked for a move, answered when it ends.
#[derive(Debug, Clone)]
pub(super) enum Asker {
    Task { conn: ConnId, src: Tid, ctx: i32, wid: i32 },
    Pvmd { host: u32, wid: i32, op: i32 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// DM_MIGPREP sent, waiting for the target.
    Prep,
    /// TC_MARK sent; messages for the task are held.
    Parking,
    /// TM_PARK answered; its EOF starts the dump.
    Parked,
    /// Dump and stream on a thread.
    Dumping,
    /// Image sent; waiting for DM_MIGDONE.
    Restoring,
}

/// Something held for a task that is leaving, in arrival order.
#[derive(Debug)]
enum Held {
    /// A whole fragment as it would have been written to the task.
    Frag(Vec<u8>),
    /// A flush of host `from` to pass on after what came before it.
    Flush(u32),
}

/// A move in progress, on the source.
#[derive(Debug)]
struct OutOp {
    op: i32,
    tid: Tid,
    target: u32,
    asker: Asker,
    stage: Stage,
    held: Vec<Held>,
    held_bytes: usize,
    t0: Instant,
    /// When the task was asked to park (its freeze starts).
    t_mark: Option<Instant>,
    port: u16,
    dir: PathBuf,
    info: Option<DumpInfo>,
    /// The target went away before the dump: do not dump, let the task continue.
    cancelled: Option<String>,
    /// The exit of the process the dump killed was reported.
    old_exited: bool,
    /// Post-copy: where the page server listens.
    lazy: Option<SocketAddrV4>,
    /// Post-copy: set when the target gave up, so the page server stops at once.
    cancel: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// When the current stage began (its time limit runs from here).
    t_stage: Instant,
    /// The time limit of the current stage has been dealt with.
    timed_out: bool,
}

/// A move in progress, on the target.
#[derive(Debug)]
struct InOp {
    op: i32,
    from: u32,
    tid: Tid,
    rec: Adopt,
    ticket: PathBuf,
    dir: PathBuf,
    /// The restore helper runs (the task is registered here).
    launched: bool,
    t0: Instant,
}

/// Order keeper on the new host of a task: messages that arrive directly from a host wait
/// until that host's flush has come through the previous host.
#[derive(Debug, Default)]
struct Gate {
    prev: u32,
    flushed: HashSet<u32>,
    held: HashMap<u32, Vec<Vec<u8>>>,
    held_bytes: usize,
    /// Since when something waits here (None when nothing does): a wait past
    /// [`GATE_WARN`] is logged once, as it means a flush that may never come.
    since: Option<Instant>,
    warned: bool,
}

/// Move state of one daemon (inside `migrate::MigState`).
#[derive(Debug)]
pub struct MoveState {
    /// Where a task that is not here runs now (tid bits -> host index): forwarding entries of
    /// the hosts it left, and what DM_TIDMOVED taught the others.
    routes: HashMap<u32, u32>,
    /// Tasks here that arrived by a move (tid bits): their exit is announced to every peer.
    adopted: HashSet<u32>,
    outs: HashMap<u32, OutOp>,
    ins: HashMap<u32, InOp>,
    gates: HashMap<u32, Gate>,
    /// TM_MIGRATE requests passed to another pvmd (DM_MIGREQ), by op.
    asked: HashMap<i32, Asker>,
    /// Exit reports still to come from processes a dump killed (tid bits -> count): the
    /// task lives on elsewhere.
    stale_exits: HashMap<u32, u32>,
    /// Image directories of tasks restored here, by key: removed when the task leaves or
    /// exits (not earlier: the restore helper may still be reading its stamp and logs).
    images: HashMap<u32, PathBuf>,
    /// Tasks moved to each host (host 0 = "any" picks the host with the fewest).
    sent_to: HashMap<u32, u32>,
    last_op: i32,
    /// Tasks in a one-task checkpoint, from its TM_CKPT until they reconnect (by key): moves
    /// and checkpoints asked for them meanwhile wait in `waiting`.
    ckpt_busy: HashSet<u32>,
    /// Requests waiting for a task of `ckpt_busy` (key, deadline, request), in arrival order.
    waiting: Vec<(u32, Instant, Waiter)>,
    tx: UnboundedSender<MigEvent>,
    rx: Option<UnboundedReceiver<MigEvent>>,
}

/// A move or one-task checkpoint asked for while its task was in a one-task checkpoint.
#[derive(Debug)]
pub(super) enum Waiter {
    /// TM_CKPT from a local task, dispatched again as it came.
    Ckpt {
        conn: ConnId,
        src: Tid,
        hdr: pvm_proto::mesg::MsgHeader,
        body: Vec<u8>,
    },
    /// A move (`mv_request`'s arguments).
    Move {
        asker: Asker,
        tid: Tid,
        host: i32,
        mode: i32,
        may_pass: bool,
    },
}

impl Default for MoveState {
    fn default() -> Self {
        let (tx, rx) = unbounded_channel();
        MoveState {
            routes: HashMap::new(),
            adopted: HashSet::new(),
            outs: HashMap::new(),
            ins: HashMap::new(),
            gates: HashMap::new(),
            asked: HashMap::new(),
            stale_exits: HashMap::new(),
            images: HashMap::new(),
            sent_to: HashMap::new(),
            last_op: 0,
            ckpt_busy: HashSet::new(),
            waiting: Vec::new(),
            tx,
            rx: Some(rx),
        }
    }
}

impl MoveState {
    /// A one-task checkpoint of the task `key` began (TM_CKPT accepted): until it reconnects,
    /// moves and checkpoints asked for it wait.
    pub(super) fn ckpt_started(&mut self, key: u32) {
        self.ckpt_busy.insert(key);
    }

    /// The host a task that is not here runs on, when a move taught us.
    pub fn route_of(&self, tid: Tid) -> Option<u32> {
        if !tid.is_task() {
            return None;
        }
        self.routes.get(&tid.bits()).copied()
    }

    /// A sender for results of blocking jobs.
    pub fn events(&self) -> UnboundedSender<MigEvent> {
        self.tx.clone()
    }

    /// Whether messages for the task stored under `key` must take the slow path (held or
    /// gated), so the relay fast path leaves them alone.
    pub fn holds(&self, key: u32) -> bool {
        self.outs.get(&key).is_some_and(|o| o.stage != Stage::Prep) || self.gates.contains_key(&key)
    }

    /// Whether the task under `key` is in the middle of a move, so that another operation
    /// (a checkpoint) must not park it now: it is leaving, or it arrived and messages wait in
    /// its order gate for a host's flush. The gate itself stays for the task's whole stay
    /// (it is dropped when the task leaves again), so its mere presence does not count: that
    /// refused every application checkpoint of a task that had ever moved.
    pub fn busy(&self, key: u32) -> bool {
        self.outs.get(&key).is_some_and(|o| o.stage != Stage::Prep)
            || self.gates.get(&key).is_some_and(|g| !g.held.is_empty())
    }
}

fn ints(body: &[u8], n: usize) -> Option<Vec<i32>> {
    let mut r = XdrReader::new(body);
    (0..n).map(|_| r.int("int").ok()).collect()
}

fn pvm_tmp() -> PathBuf {
    PathBuf::from(std::env::var("PVM_TMP").unwrap_or_else(|_| "/tmp".into()))
}

/// Bytes waiting in the pipe behind `/proc/<pid>/fd/<fd>` (None when it is not readable as a
/// pipe). Opening the pipe through /proc reaches the same pipe without reading from it.
fn pipe_unread(pid: i32, fd: i32) -> Option<i32> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(format!("/proc/{pid}/fd/{fd}"))
        .ok()?;
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int to the pointer, which lives across the call.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), libc::FIONREAD, &mut n) };
    (rc == 0).then_some(n)
}

fn pipe_key(pid: i32, fd: i32) -> String {
    std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).map_or(String::new(), |l| l.to_string_lossy().into_owned())
}

fn process_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit(')').next().is_some_and(|r| !r.trim_start().starts_with('Z')))
        .unwrap_or(false)
}

/// The source's blocking part of a move: wait for the output pipes to be read empty (CRIU
/// would copy unread bytes into the image and they would appear twice), dump, stream the image
/// to the target. With `lazy` (the page server's address) a post-copy dump: only the metadata
/// is streamed, the task stays frozen here and CRIU serves its pages until the target has
/// them all ([`MigEvent::PagesServed`] follows); when the lazy dump cannot be set up and the
/// task still runs, stop-and-copy instead. The image dir says which one the target gets
/// (`pvm-lazy` holds the page server's address). Returns an error with an empty `why` when
/// it reported by itself (post-copy).
#[allow(clippy::too_many_arguments)]
fn dump_and_send(
    pid: i32,
    dir: &Path,
    to: SocketAddr,
    lazy: Option<SocketAddrV4>,
    tx: &UnboundedSender<MigEvent>,
    key: u32,
    op: i32,
    cancel: &std::sync::atomic::AtomicBool,
) -> Result<DumpInfo, DumpError> {
    let t0 = Instant::now();
    while t0.elapsed() < DRAIN_LIMIT {
        let left = pipe_unread(pid, 1).unwrap_or(0) + pipe_unread(pid, 2).unwrap_or(0);
        if left == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let drained = t0.elapsed();
    let keys = [pipe_key(pid, 1), pipe_key(pid, 2)];
    let fail = |why: String, image: Option<[String; 2]>| DumpError {
        why,
        alive: process_alive(pid),
        image,
    };
    let _ = std::fs::remove_dir_all(dir);
    let crit = super::migrate::criu_driver().map_err(|e| fail(e.to_string(), None))?;
    let t1 = Instant::now();
    let mut fallback = None;
    let mut server = None;
    if let Some(ps) = lazy {
        let host = pvm_migration::Host {
            netns: None,
            addr: *ps.ip(),
        };
        match crit.dump_lazy(pid as u32, &host, dir, ps.port(), CRIU_LIMIT) {
            Ok(d) => server = Some(d),
            Err(e) if process_alive(pid) => fallback = Some(e.to_string()),
            Err(e) => return Err(fail(format!("criu dump --lazy-pages: {e}"), None)),
        }
    }
    let local = pvm_migration::Host {
        netns: None,
        addr: Ipv4Addr::LOCALHOST,
    };
    let (frozen, bytes) = if server.is_some() {
        (None, dir_bytes(dir))
    } else {
        let d = crit
            .dump(pid as u32, &local, dir, false, CRIU_LIMIT)
            .map_err(|e| fail(format!("criu dump: {e}"), None))?;
        (d.frozen, d.bytes)
    };
    let dump = t1.elapsed();
    // A post-copy image is only metadata: without its page server it cannot be restored
    // anywhere, so a failure from here on leaves no image to fall back on.
    let image = server.is_none().then(|| keys.clone());
    let mut meta = format!("{}\n{}\n", keys[0], keys[1]);
    if let Some(f) = &fallback {
        meta.push_str(&format!("# post-copy unavailable: {}\n", f.replace('\n', " ")));
    }
    std::fs::write(dir.join("pvm-keys"), meta).map_err(|e| fail(format!("write keys: {e}"), image.clone()))?;
    if let (Some(ps), Some(_)) = (lazy, &server) {
        std::fs::write(dir.join("pvm-lazy"), ps.to_string())
            .map_err(|e| fail(format!("write pvm-lazy: {e}"), image.clone()))?;
    }
    let t2 = Instant::now();
    let send = || -> pvm_migration::Result<u64> {
        let s = pvm_migration::transfer::connect(&local, to, CRIU_LIMIT)?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, s);
        let n = pvm_migration::transfer::send_dir(dir, &mut w)?;
        use std::io::Write;
        w.flush()
            .map_err(|e| pvm_migration::MigError::Transfer(format!("send image: {e}")))?;
        Ok(n)
    };
    if let Err(e) = send() {
        drop(server); // kills the page server; CRIU lets the task go on when it can
        std::thread::sleep(Duration::from_millis(50));
        return Err(fail(format!("image stream to {to}: {e}"), image));
    }
    let info = DumpInfo {
        drained,
        dump,
        frozen,
        bytes,
        stream: t2.elapsed(),
        keys,
        lazy: server.is_some(),
        fallback,
    };
    let Some(srv) = server else {
        return Ok(info);
    };
    // Report the dump now (the target restores meanwhile), then wait for the pages.
    let _ = tx.send(MigEvent::Dumped { key, op, res: Ok(info) });
    let res = srv.finish_unless(CRIU_LIMIT, cancel).map_err(|e| e.to_string());
    let _ = tx.send(MigEvent::PagesServed {
        key,
        op,
        res,
        alive: process_alive(pid),
        pid,
        after: t0.elapsed(),
        dir: dir.to_path_buf(),
    });
    Err(DumpError {
        why: String::new(),
        alive: false,
        image: None,
    })
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|r| r.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
        .unwrap_or(0)
}

impl<A: AuthFiles> Daemon<A> {
    // ---- API for restore elsewhere (also used by whole-application restart) -----------------

    /// Registers a task restored on this host under its own tid, whose host bits may name
    /// another host. It is a spawned task that has not connected yet: messages for it are
    /// queued until it presents `a.cookie`, its exit is the restore helper's exit, its output
    /// goes where `a.out` says. Forgets any forwarding entry for the tid. Returns its key.
    pub(crate) fn adopt_task(&mut self, tid: Tid, a: Adopt) -> u32 {
        let key = self.key(tid);
        self.tasks.insert(
            key,
            super::Task {
                conn: None,
                forked: true,
                pending: Vec::new(),
                pending_bytes: 0,
                out_buf: Vec::new(),
                ptid: a.ptid,
                pid: a.pid,
                cookie: a.cookie,
                pid_verified: true,
                a_out: a.a_out,
                outtid: a.out.0,
                outctx: a.out.1,
                outtag: a.out.2,
                trctid: a.trc.0,
                trcctx: a.trc.1,
                trctag: a.trc.2,
                contexts: Vec::new(),
                mca: None,
            },
        );
        self.mig.set_task_features(key, a.features);
        self.mig.set_restored(key);
        self.mig.mv.routes.remove(&tid.bits());
        self.mig.mv.adopted.insert(tid.bits());
        key
    }

    /// Routes every message for `tid` (not a task of this host) to pvmd `host` from now on,
    /// whatever its host bits say. For a restart elsewhere as for a move.
    pub(crate) fn set_tid_route(&mut self, tid: Tid, host: u32) {
        if host == self.host.index {
            self.mig.mv.routes.remove(&tid.bits());
        } else {
            self.mig.mv.routes.insert(tid.bits(), host);
        }
    }

    /// Forgets the routing override of `tid` (its host bits apply again).
    pub(crate) fn clear_tid_route(&mut self, tid: Tid) {
        self.mig.mv.routes.remove(&tid.bits());
    }

    /// The channel of [`MigEvent`]s, taken once by the shell.
    pub fn take_mig_events(&mut self) -> Option<UnboundedReceiver<MigEvent>> {
        self.mig.mv.rx.take()
    }

    // ---- hooks ------------------------------------------------------------------------------

    /// Hook of `route()`: a fragment for a tid that is not here but moved is relayed to where
    /// it runs; a fragment from a task adopted here to another host is relayed too, because
    /// the datagram layer names the sending host by the source tid's host bits (a datagram
    /// with the moved tid as source, sent from here, would be dropped as forged). It goes
    /// straight to a pvmd-rs destination, else through the tid's origin host, which can send
    /// it as an ordinary datagram. True if sent.
    pub(super) fn mig_forward_frag(
        &mut self,
        src: Tid,
        fh: StreamFragHeader,
        payload: &[u8],
        out: &mut Vec<Out>,
    ) -> bool {
        let me = self.host.index;
        let via = match self.mig.mv.route_of(fh.dst) {
            Some(h) => h,
            None if src.is_task() && !src.is_on_host(me) && !fh.dst.is_on_host(me) => {
                let h = fh.dst.host();
                if self.mig.peer_features(h).is_some() {
                    h
                } else {
                    src.host()
                }
            }
            None => return false,
        };
        let frame = stream_frame(fh.dst, src, fh.flags, payload);
        self.forward_frame(via, &frame, out);
        true
    }

    /// Hook of `net_packet()`: a datagram for a tid that moved away: relayed.
    pub(super) fn mig_forward_packet(&mut self, p: &pvm_proto::ddp::Packet, out: &mut Vec<Out>) -> bool {
        let Some(host) = self.mig.mv.route_of(p.dst) else {
            return false;
        };
        let mut payload = Vec::with_capacity(p.data.len() + MSGHDR_LEN);
        if let Some(h) = p.header {
            payload.extend_from_slice(&h.to_bytes());
        }
        payload.extend_from_slice(&p.data);
        let frame = stream_frame(p.dst, p.src, p.flags, &payload);
        self.forward_frame(host, &frame, out);
        true
    }

    /// Relays one fragment (a whole task-stream frame: 16-byte header, then the payload with
    /// the message header first on SOM) to the pvmd of `host`, inside a DM_MIGFWD. A datagram
    /// cannot be passed on as it is: the receiver takes the sending host from the source tid.
    fn forward_frame(&mut self, host: u32, frame: &[u8], out: &mut Vec<Out>) {
        if host == self.host.index {
            return;
        }
        self.mv_trace(out, || format!("relay {} to host {host}", frame_desc(frame)));
        self.relay_dm(host, DM_MIGFWD, frame, out);
    }

    /// A line of the move tracing (debug mask [`TRACE_MASK`]).
    fn mv_trace(&self, out: &mut Vec<Out>, line: impl FnOnce() -> String) {
        if self.debug & TRACE_MASK != 0 {
            out.push(Out::Log(format!("mig: trace: {}", line())));
        }
    }

    /// Sends a relay DM to `host`. Relays must not be lost, and a flush must not overtake
    /// what it flushes: a full queue keeps them in order in the host's backlog (backlog.rs).
    fn relay_dm(&mut self, host: u32, tag: i32, body: &[u8], out: &mut Vec<Out>) {
        if let Err(e) = self.dm_try(host, tag, 0, body) {
            out.push(Out::Log(format!("mig: relay to host {host}: {e}")));
        }
    }

    /// The time limit of a move's current stage, if it has one that is still to be dealt with.
    fn stage_deadline(o: &OutOp) -> Option<Instant> {
        if o.timed_out {
            return None;
        }
        match o.stage {
            Stage::Prep => Some(o.t_stage + PREP_LIMIT),
            Stage::Parking => Some(o.t_stage + PARK_LIMIT),
            Stage::Restoring => Some(o.t_stage + DONE_LIMIT),
            Stage::Parked | Stage::Dumping => None, // the EOF follows; CRIU steps are bounded
        }
    }

    /// Hook of `net_deadline()`: the next time limit of a move, from now.
    pub(super) fn mig_deadline(&self) -> Option<Duration> {
        let now = Instant::now();
        self.mig
            .mv
            .outs
            .values()
            .filter_map(Self::stage_deadline)
            .chain(self.waiters_deadline())
            .chain(self.ckpt_park_deadline()) // migrate.rs: one-task checkpoints' park limit
            .chain(
                self.mig
                    .mv
                    .gates
                    .values()
                    .filter(|g| !g.warned)
                    .filter_map(|g| g.since)
                    .map(|t| t + GATE_WARN),
            )
            .min()
            .map(|t| t.saturating_duration_since(now))
    }

    /// Hook of `net_timeout()`: moves past the time limit of their stage give up, the task
    /// running on where it was whenever it can.
    pub(super) fn mig_timers(&mut self, out: &mut Vec<Out>) {
        self.ckpt_park_timers(out); // migrate.rs
        self.waiters_timers(out);
        let now = Instant::now();
        let me = self.host.index;
        for (key, g) in self.mig.mv.gates.iter_mut() {
            if g.warned || !g.since.is_some_and(|t| now.duration_since(t) >= GATE_WARN) {
                continue;
            }
            g.warned = true;
            let mut hosts: Vec<String> = g
                .held
                .iter()
                .map(|(h, v)| format!("{} from host {h}", v.len()))
                .collect();
            hosts.sort();
            out.push(Out::Log(format!(
                "mig: t{:x}: messages wait for a flush for over {GATE_WARN:?} (previous host {}, flushed {:?}): {}",
                key_tid(me, *key).bits(),
                g.prev,
                g.flushed,
                hosts.join(", ")
            )));
        }
        let due: Vec<u32> = self
            .mig
            .mv
            .outs
            .iter()
            .filter(|(_, o)| Self::stage_deadline(o).is_some_and(|t| t <= now))
            .map(|(k, _)| *k)
            .collect();
        for key in due {
            let Some(o) = self.mig.mv.outs.get_mut(&key) else {
                continue;
            };
            o.timed_out = true;
            let (tid, target, op, stage) = (o.tid, o.target, o.op, o.stage);
            let lazy = o.info.as_ref().is_some_and(|i| i.lazy);
            match stage {
                Stage::Prep | Stage::Parking => {
                    // Not parked: held messages go to it now; a TM_PARK that comes later is
                    // refused and the library carries on connected.
                    let o = self.mig.mv.outs.remove(&key).expect("listed");
                    let (e, why) = if stage == Stage::Prep {
                        (
                            PvmError::HostFail,
                            format!("host {target} did not answer DM_MIGPREP in {PREP_LIMIT:?}"),
                        )
                    } else {
                        (
                            PvmError::SysErr,
                            format!("t{:x} did not park within {PARK_LIMIT:?}", tid.bits()),
                        )
                    };
                    out.push(Out::Log(format!("mig: move of t{:x} given up: {why}", tid.bits())));
                    self.send_migdone(target, op, tid, PvmError::SysErr.code(), 0, out);
                    self.answer_asker(&o.asker, e.code(), 0, out);
                    self.release_held(key, o.held, out);
                }
                Stage::Restoring if lazy => {
                    out.push(Out::Log(format!(
                        "mig: no DM_MIGDONE for t{:x} in {DONE_LIMIT:?}; stopping its page server",
                        tid.bits()
                    )));
                    if let Some(o) = self.mig.mv.outs.get_mut(&key) {
                        o.cancelled = Some(format!("no DM_MIGDONE from host {target}"));
                        o.cancel.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                Stage::Restoring => {
                    let o = self.mig.mv.outs.remove(&key).expect("listed");
                    out.push(Out::Log(format!(
                        "mig: no DM_MIGDONE for t{:x} in {DONE_LIMIT:?}; restoring it here",
                        tid.bits()
                    )));
                    self.send_migdone(target, op, tid, PvmError::SysErr.code(), 0, out);
                    let keys = o.info.as_ref().map(|i| i.keys.clone()).unwrap_or_default();
                    self.restore_here(key, o, keys, out);
                }
                Stage::Parked | Stage::Dumping => {}
            }
        }
    }

    /// DM_MIGFWD: a relayed fragment for a task that runs here, that went on elsewhere, or
    /// (on a moved task's origin host) for a task on a host without the extensions: that one
    /// leaves as an ordinary datagram, its source tid's host bits being ours.
    fn dm_migfwd(&mut self, from: u32, body: &[u8], out: &mut Vec<Out>) {
        let Ok(fh) = StreamFragHeader::parse(body, MAX_PENDING_BYTES as u32) else {
            return out.push(Out::Log(format!("mig: bad DM_MIGFWD from host {from}")));
        };
        if fh.len as usize != body.len() - 16 {
            return out.push(Out::Log(format!("mig: bad DM_MIGFWD from host {from}")));
        }
        if fh.dst.is_multicast() {
            return self.migfwd_multicast(from, fh, body, out);
        }
        if !fh.dst.is_task() {
            return out.push(Out::Log(format!("mig: bad DM_MIGFWD from host {from}")));
        }
        let me = self.host.index;
        if self.has_task(fh.dst) {
            let key = self.key(fh.dst);
            if let Some(b) = self.mig_gate(key, from, body.to_vec(), out) {
                self.deliver(key, b, out);
            }
            return;
        }
        let known = |d: &Self, h: u32| d.net.as_ref().is_some_and(|n| n.table.get(h).is_some());
        match self.mig.mv.route_of(fh.dst) {
            Some(h) if h != from => self.forward_frame(h, body, out),
            None if !fh.dst.is_on_host(me) && fh.src.is_on_host(me) && known(self, fh.dst.host()) => {
                let h = fh.dst.host();
                self.send_packet(h, fh.src, fh.dst, fh.flags, &body[16..], out);
            }
            _ => out.push(Out::Log(format!(
                "mig: relayed pkt src t{:x} dst t{:x} scrapped (no such task)",
                fh.src.bits(),
                fh.dst.bits()
            ))),
        }
    }

    /// Hook of the multicast deliveries (`multicast()`, `net_packet()`): a member of the
    /// multicast that moved away gets its copy relayed. Returns the bytes when it is not one.
    pub(super) fn mig_mcast(&mut self, member: Tid, bytes: Vec<u8>, out: &mut Vec<Out>) -> Option<Vec<u8>> {
        if self.has_task(member) {
            return Some(bytes);
        }
        let Some(h) = self.mig.mv.route_of(member) else {
            return Some(bytes);
        };
        let mut body = Vec::with_capacity(4 + bytes.len());
        body.extend_from_slice(&member.0.to_be_bytes());
        body.extend_from_slice(&bytes);
        if h != self.host.index {
            self.relay_dm(h, DM_MIGMCA, &body, out);
        }
        None
    }

    /// Hook of `net_multicast()`: a multicast from a task adopted here. Its datagrams would
    /// look forged (the source tid's host bits are another host's), so each fragment goes to
    /// the members' pvmd-rs hosts as DM_MIGFWD; hosts of legacy daemons are not reached (the
    /// log says so).
    pub(super) fn mig_multicast_from(&mut self, src: Tid, fh: StreamFragHeader, payload: &[u8], out: &mut Vec<Out>) {
        let Some(n) = self.net.as_mut() else { return };
        let Some(hosts) = n.mca_out.get(&fh.dst).cloned() else {
            return;
        };
        if fh.flags.contains(FragFlags::EOM) {
            n.mca_out.remove(&fh.dst);
        }
        let frame = stream_frame(fh.dst, src, fh.flags, payload);
        for h in hosts {
            if self.mig.peer_features(h).is_some() {
                self.relay_dm(h, DM_MIGFWD, &frame, out);
            } else if fh.flags.contains(FragFlags::SOM) {
                out.push(Out::Log(format!(
                    "mig: multicast from moved t{:x} to legacy host {h} not sent",
                    src.bits()
                )));
            }
        }
    }

    /// DM_MIGFWD of a multicast fragment (from a moved sender): to this host's members, as
    /// `net_packet()` does for a multicast datagram.
    fn migfwd_multicast(&mut self, from: u32, fh: StreamFragHeader, frame: &[u8], out: &mut Vec<Out>) {
        let Some(n) = self.net.as_mut() else { return };
        let Some(members) = n.mca_in.get(&fh.dst).cloned() else {
            return out.push(Out::Log(format!(
                "mig: relayed pkt for t{:x} scrapped (no such multicast)",
                fh.dst.bits()
            )));
        };
        if fh.flags.contains(FragFlags::EOM) {
            n.mca_in.remove(&fh.dst);
        }
        for d in members {
            if let Some(b) = self.mig_mcast(d, frame.to_vec(), out) {
                let key = self.key(d);
                if let Some(b) = self.mig_gate(key, from, b, out) {
                    self.deliver(key, b, out);
                }
            }
        }
    }

    /// DM_MIGMCA: a multicast fragment for a member that runs here (or went on).
    fn dm_migmca(&mut self, from: u32, body: &[u8], out: &mut Vec<Out>) {
        let (Some(t), Some(frame)) = (body.get(..4), body.get(4..)) else {
            return out.push(Out::Log(format!("mig: bad DM_MIGMCA from host {from}")));
        };
        let member = Tid(i32::from_be_bytes([t[0], t[1], t[2], t[3]]));
        let ok = StreamFragHeader::parse(frame, MAX_PENDING_BYTES as u32)
            .is_ok_and(|fh| fh.len as usize == frame.len() - 16);
        if !ok || !member.is_task() {
            return out.push(Out::Log(format!("mig: bad DM_MIGMCA from host {from}")));
        }
        if self.has_task(member) {
            let key = self.key(member);
            if let Some(b) = self.mig_gate(key, from, frame.to_vec(), out) {
                self.deliver(key, b, out);
            }
            return;
        }
        match self.mig.mv.route_of(member) {
            Some(h) if h != from => self.relay_dm(h, DM_MIGMCA, body, out),
            _ => out.push(Out::Log(format!(
                "mig: multicast for t{:x} scrapped (no such task)",
                member.bits()
            ))),
        }
    }

    /// Sends one fragment (payload as on a task stream: the message header first on SOM) as
    /// ordinary datagrams to the pvmd of `host`.
    fn send_packet(&mut self, host: u32, src: Tid, dst: Tid, flags: FragFlags, payload: &[u8], out: &mut Vec<Out>) {
        let (header, data) = if flags.contains(FragFlags::SOM) {
            match pvm_proto::mesg::MsgHeader::parse(payload) {
                Ok(h) => (Some(h), &payload[MSGHDR_LEN..]),
                Err(_) => return,
            }
        } else {
            (None, payload)
        };
        let Some(n) = self.net.as_mut() else { return };
        let now = n.now();
        if let Err(e) = n.send_frag(now, host, src, dst, header, flags.contains(FragFlags::EOM), data) {
            out.push(Out::Log(format!("mig: relay to t{:x}: {e}", dst.bits())));
        }
    }

    /// Hook of the deliveries from `route()` and `net_packet()`: order after a move (see
    /// [`Gate`]). Returns the bytes to deliver now, or None when they wait.
    pub(super) fn mig_gate(&mut self, key: u32, from: u32, bytes: Vec<u8>, out: &mut Vec<Out>) -> Option<Vec<u8>> {
        let Some(g) = self.mig.mv.gates.get_mut(&key) else {
            return Some(bytes);
        };
        if from == g.prev || g.flushed.contains(&from) {
            return Some(bytes);
        }
        let tid = key_tid(self.host.index, key);
        if tid.host() != self.host.index && from != self.host.index && self.mig.peer_features(from).is_none() {
            // A legacy daemon never sends here directly (it routes by the host bits, to the
            // origin): nothing to order against. (On the origin it is flushed on its behalf.)
            return Some(bytes);
        }
        let Some(g) = self.mig.mv.gates.get_mut(&key) else {
            return Some(bytes);
        };
        if g.held_bytes + bytes.len() > MAX_PENDING_BYTES {
            // Bounded: past the limit order is given up rather than memory.
            return Some(bytes);
        }
        g.held_bytes += bytes.len();
        let desc = (self.debug & TRACE_MASK != 0).then(|| frame_desc(&bytes));
        g.held.entry(from).or_default().push(bytes);
        g.since.get_or_insert_with(Instant::now);
        if let Some(d) = desc {
            self.mv_trace(out, || {
                format!("t{:x}: {d} from host {from} waits for its flush", tid.bits())
            });
        }
        None
    }

    /// Host `from` has flushed its old route to the task under `key`: what it sent directly
    /// may be delivered.
    fn gate_release(&mut self, key: u32, from: u32, out: &mut Vec<Out>) {
        let Some(g) = self.mig.mv.gates.get_mut(&key) else {
            return;
        };
        g.flushed.insert(from);
        let held = g.held.remove(&from).unwrap_or_default();
        g.held_bytes -= held.iter().map(Vec::len).sum::<usize>();
        if g.held.is_empty() {
            g.since = None;
            g.warned = false;
        }
        let n = held.len();
        self.mv_trace(out, || {
            format!(
                "t{:x}: flush of host {from} came; {n} messages released",
                key_tid(self.host.index, key).bits()
            )
        });
        for b in held {
            self.deliver_or_forward(key, b, out);
        }
    }

    /// Delivers a frame to the task under `key` if it is here, else relays it to where it went.
    fn deliver_or_forward(&mut self, key: u32, bytes: Vec<u8>, out: &mut Vec<Out>) {
        if self.tasks.contains_key(&key) {
            self.deliver(key, bytes, out);
            return;
        }
        let tid = key_tid(self.host.index, key);
        if let Some(h) = self.mig.mv.route_of(tid) {
            self.forward_frame(h, &bytes, out);
        }
    }

    /// Hook of `deliver()` (through `migrate::mig_hold`): holds a fragment for a task that is
    /// leaving. Returns the bytes back when the task is not leaving.
    pub(super) fn mv_hold(&mut self, key: u32, bytes: Vec<u8>, out: &mut Vec<Out>) -> Option<Vec<u8>> {
        let Some(o) = self.mig.mv.outs.get_mut(&key) else {
            return Some(bytes);
        };
        if o.stage == Stage::Prep {
            return Some(bytes);
        }
        if o.held_bytes + bytes.len() > MAX_PENDING_BYTES {
            out.push(Out::Log(format!(
                "mig: t{:x}: too much held for a moving task; message dropped",
                o.tid.bits()
            )));
            return None;
        }
        o.held_bytes += bytes.len();
        let tid = o.tid;
        self.mv_trace(out, || {
            format!("t{:x} is leaving: {} held", tid.bits(), frame_desc(&bytes))
        });
        if let Some(o) = self.mig.mv.outs.get_mut(&key) {
            o.held.push(Held::Frag(bytes));
        }
        None
    }

    /// Hook of `tm_sendsig()` and `local_signal()`: a signal for a task that moved away goes
    /// to its host. True if handled here.
    pub(super) fn mig_signal(&mut self, tid: Tid, sig: i32, out: &mut Vec<Out>) -> bool {
        if self.has_task(tid) {
            return false;
        }
        let Some(h) = self.mig.mv.route_of(tid) else {
            return false;
        };
        let b = pvm_proto::body::Body::DmSendSig(pvm_proto::body::SendSig { tid, signum: sig });
        self.dm_send(h, Dm::SendSig.code(), 0, &b.emit(), out);
        true
    }

    /// Hook of `task_exited()`: the exit of a process a dump killed is not the task's exit
    /// (the task lives on elsewhere); the exit of a restore helper before its task reconnected
    /// is a failed restore. True if handled here.
    pub(super) fn mig_exit_hook(&mut self, tid: Tid, out: &mut Vec<Out>) -> bool {
        let key = self.key(tid);
        if let Some(o) = self.mig.mv.outs.get_mut(&key) {
            if matches!(o.stage, Stage::Dumping | Stage::Restoring) && !o.old_exited {
                o.old_exited = true;
                return true;
            }
        }
        if let Some(n) = self.mig.mv.stale_exits.get_mut(&tid.bits()) {
            *n -= 1;
            if *n == 0 {
                self.mig.mv.stale_exits.remove(&tid.bits());
            }
            return true;
        }
        if self.mig.mv.ins.get(&tid.bits()).is_some_and(|i| i.launched) {
            let i = self.mig.mv.ins.remove(&tid.bits()).expect("present");
            out.push(Out::Log(format!(
                "mig: restore of t{:x} failed (helper exited; CRIU logs in {})",
                tid.bits(),
                i.dir.display()
            )));
            if i.from != self.host.index {
                self.send_migdone(i.from, i.op, tid, PvmError::SysErr.code(), 0, out);
                self.mig.mv.gates.remove(&key);
                self.forget_task(key);
                return true;
            }
            // Restoring on the source after a failed move: the task is lost.
            if let Some(o) = self.mig.mv.outs.remove(&key) {
                self.answer_asker(&o.asker, PvmError::SysErr.code(), 0, out);
            }
            return false; // an ordinary exit from here on
        }
        false
    }

    /// An op ends while the exit report of the process its dump killed has not come yet.
    fn expect_stale_exit(&mut self, o: &OutOp) {
        if o.info.is_some() && !o.old_exited {
            *self.mig.mv.stale_exits.entry(o.tid.bits()).or_default() += 1;
        }
    }

    /// Removes a task without any exit notice (it lives on elsewhere, or never ran here).
    fn forget_task(&mut self, key: u32) {
        self.tasks.remove(&key);
        self.mig.task_gone(key);
        self.drop_image(key);
    }

    fn drop_image(&mut self, key: u32) {
        if let Some(d) = self.mig.mv.images.remove(&key) {
            let _ = std::fs::remove_dir_all(d);
        }
    }

    /// Hook of `task_gone()`: a task that arrived by a move announces its exit to every
    /// pvmd-rs peer (their watchers fire, their forwarding entries go); a move in progress
    /// for it fails.
    pub(super) fn mig_task_gone(&mut self, tid: Tid, out: &mut Vec<Out>) {
        let key = self.key(tid);
        self.refuse_waiters(key, out);
        self.mig.task_gone(key);
        self.mig.mv.gates.remove(&key);
        self.drop_image(key);
        if let Some(o) = self.mig.mv.outs.remove(&key) {
            out.push(Out::Log(format!("mig: t{:x} exited while moving", tid.bits())));
            self.send_migdone(o.target, o.op, tid, PvmError::SysErr.code(), 0, out);
            self.answer_asker(&o.asker, PvmError::NoTask.code(), 0, out);
        }
        if self.mig.mv.adopted.remove(&tid.bits()) {
            for h in self.mig_peers() {
                self.send_tidmoved(h, tid, 0, KIND_EXITED, out);
            }
        }
    }

    /// Hook of `attach_spawned()`: a restored task reconnected. On the target of a move that
    /// ends the move.
    pub(super) fn mig_attached(&mut self, tid: Tid, out: &mut Vec<Out>) {
        let Some(i) = self.mig.mv.ins.remove(&tid.bits()) else {
            return;
        };
        let key = self.key(tid);
        let pid = self.tasks.get(&key).map_or(0, |t| t.pid);
        out.push(Out::Log(format!(
            "mig: t{:x} runs here now (pid {pid}), {} ms after DM_MIGPREP",
            tid.bits(),
            i.t0.elapsed().as_millis()
        )));
        if i.from != self.host.index {
            self.send_migdone(i.from, i.op, tid, 0, pid, out);
        } else {
            // Restored back on the source after a failed move (see `restore_here`).
            self.finish_local_restore(key, out);
        }
        if let Some(old) = self.mig.mv.images.insert(key, i.dir) {
            let _ = std::fs::remove_dir_all(old);
        }
    }

    /// Hook of `host_gone()`: moves with that host fail cleanly; gates stop waiting for it.
    pub(super) fn mig_host_gone(&mut self, host: u32, out: &mut Vec<Out>) {
        let keys: Vec<u32> = self
            .mig
            .mv
            .outs
            .iter()
            .filter(|(_, o)| o.target == host)
            .map(|(k, _)| *k)
            .collect();
        for key in keys {
            let stage = self.mig.mv.outs[&key].stage;
            let why = format!("target host {host} failed");
            match stage {
                Stage::Prep => {
                    let o = self.mig.mv.outs.remove(&key).expect("listed");
                    out.push(Out::Log(format!("mig: move of t{:x}: {why}", o.tid.bits())));
                    self.answer_asker(&o.asker, PvmError::HostFail.code(), 0, out);
                }
                Stage::Parking | Stage::Parked => {
                    if let Some(o) = self.mig.mv.outs.get_mut(&key) {
                        o.cancelled = Some(why);
                    }
                }
                Stage::Dumping => {} // the stream fails; handled with its event
                Stage::Restoring if self.mig.mv.outs[&key].info.as_ref().is_some_and(|i| i.lazy) => {
                    // Post-copy: the page server's end says whether the task lives on here.
                    if let Some(o) = self.mig.mv.outs.get_mut(&key) {
                        o.cancelled = Some(why);
                        o.cancel.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                Stage::Restoring => {
                    let o = self.mig.mv.outs.remove(&key).expect("listed");
                    out.push(Out::Log(format!(
                        "mig: move of t{:x}: {why} after the dump; restoring here",
                        o.tid.bits()
                    )));
                    let keys = o.info.as_ref().map(|i| i.keys.clone()).unwrap_or_default();
                    self.restore_here(key, o, keys, out);
                }
            }
        }
        for i in self.mig.mv.ins.values().filter(|i| i.from == host) {
            out.push(Out::Log(format!(
                "mig: source host {host} of t{:x} failed during its move",
                i.tid.bits()
            )));
        }
        let gated: Vec<u32> = self.mig.mv.gates.keys().copied().collect();
        for key in gated {
            let prev = self.mig.mv.gates[&key].prev;
            if prev == host {
                let hosts: Vec<u32> = self.mig.mv.gates[&key].held.keys().copied().collect();
                for h in hosts {
                    self.gate_release(key, h, out);
                }
                self.mig.mv.gates.remove(&key);
            } else {
                self.gate_release(key, host, out);
            }
        }
        // Tasks that had moved to that host died with it: their watchers here are told, as
        // for the tasks of any host that fails.
        let lost: Vec<Tid> = self
            .mig
            .mv
            .routes
            .iter()
            .filter(|(_, h)| **h == host)
            .map(|(t, _)| Tid::from_u32(*t))
            .collect();
        self.mig.mv.routes.retain(|_, h| *h != host);
        for tid in lost {
            out.push(Out::Log(format!(
                "mig: t{:x} was on host {host}: gone with it",
                tid.bits()
            )));
            for n in self.notifies.task_exited(tid) {
                self.send_notice(n, out);
            }
            self.net_task_gone(tid, out);
        }
    }

    // ---- requests -----------------------------------------------------------------------------

    fn next_op(&mut self) -> i32 {
        let mv = &mut self.mig.mv;
        mv.last_op = (mv.last_op % ((1 << OP_HOST_SHIFT) - 1)) + 1;
        ((self.host.index << OP_HOST_SHIFT) | mv.last_op as u32) as i32
    }

    fn op_is_mine(&self, op: i32) -> bool {
        (op as u32) >> OP_HOST_SHIFT == self.host.index
    }

    /// pvmd-rs peers that can take part in moves (they answered DM_XCAPS v2 with a migration
    /// bit), this host excluded.
    fn mig_peers(&self) -> Vec<u32> {
        let me = self.host.index;
        let Some(n) = self.net.as_ref() else { return Vec::new() };
        n.table
            .hosts
            .keys()
            .copied()
            .filter(|h| *h != me && self.mig.peer_features(*h).is_some())
            .collect()
    }

    /// Hosts of the machine that never answered DM_XCAPS (legacy daemons).
    fn legacy_hosts(&self) -> Vec<u32> {
        let me = self.host.index;
        let Some(n) = self.net.as_ref() else { return Vec::new() };
        n.table
            .hosts
            .keys()
            .copied()
            .filter(|h| *h != me && self.mig.peer_features(*h).is_none())
            .collect()
    }

    /// Answers a move's asker; a refusal or failure counts in
    /// `pvmd_migration_failures_total` (success counts where the move ends, `move_done`).
    fn answer_asker(&mut self, a: &Asker, cc: i32, host: i32, out: &mut Vec<Out>) {
        if cc < 0 {
            crate::metrics::migrated(Err(())); // metrics.rs
        }
        self.send_answer(a, cc, host, out);
    }

    /// Sends a move's answer as it is (also one relayed from the pvmd that ran the move,
    /// which counted it).
    fn send_answer(&mut self, a: &Asker, cc: i32, host: i32, out: &mut Vec<Out>) {
        match a {
            Asker::Task { conn, src, ctx, wid } => {
                let mut w = XdrWriter::new();
                w.int(cc).int(host);
                let bytes = wire::frame_message(*src, Tid::LOCAL_PVMD, TM_MIGRATE, *ctx, *wid, &w.into_inner());
                out.push(Out::Send(*conn, bytes));
            }
            Asker::Pvmd { host: h, wid, op } => {
                let mut w = XdrWriter::new();
                w.int(*op).int(cc).int(host);
                self.dm_send(*h, DM_MIGREQ, *wid, &w.into_inner(), out);
            }
        }
    }

    fn send_migdone(&mut self, to: u32, op: i32, tid: Tid, cc: i32, pid: i32, out: &mut Vec<Out>) {
        let mut w = XdrWriter::new();
        w.int(op).int(tid.0).int(cc).int(pid);
        self.dm_send(to, DM_MIGDONE, 0, &w.into_inner(), out);
    }

    fn send_tidmoved(&mut self, to: u32, tid: Tid, host: u32, kind: i32, out: &mut Vec<Out>) {
        self.send_tidmoved_from(to, tid, host, kind, self.host.index, out);
    }

    fn send_tidmoved_from(&mut self, to: u32, tid: Tid, host: u32, kind: i32, from: u32, out: &mut Vec<Out>) {
        let mut w = XdrWriter::new();
        w.int(tid.0).int(host as i32).int(kind).int(from as i32);
        // In line with the relays: a flush must not overtake what it flushes.
        self.relay_dm(to, DM_TIDMOVED, &w.into_inner(), out);
    }

    /// TM_MIGRATE from a local task (hook in migrate.rs).
    pub(super) fn mv_tm_migrate(
        &mut self,
        conn: ConnId,
        src: Tid,
        ctx: i32,
        wid: i32,
        body: &[u8],
        out: &mut Vec<Out>,
    ) {
        let asker = Asker::Task { conn, src, ctx, wid };
        let Some(v) = ints(body, 3) else {
            out.push(Out::Log(format!("mig: bad TM_MIGRATE from t{:x}", src.bits())));
            return self.answer_asker(&asker, PvmError::BadParam.code(), 0, out);
        };
        self.mv_request(asker, Tid(v[0]), v[1], v[2], true, out);
    }

    /// A move request, from a local task or (DM_MIGREQ) from another pvmd. `may_pass`: a tid
    /// running elsewhere is passed to its pvmd (once: never from a DM_MIGREQ).
    fn mv_request(&mut self, asker: Asker, tid: Tid, host: i32, mode: i32, may_pass: bool, out: &mut Vec<Out>) {
        let refuse = |d: &mut Self, e: PvmError, why: String, out: &mut Vec<Out>| {
            out.push(Out::Log(format!(
                "mig: migrate t{:x} to {host:#x} refused: {why}",
                tid.bits()
            )));
            d.answer_asker(&asker, e.code(), 0, out);
        };
        if !(0..=2).contains(&mode) {
            return refuse(self, PvmError::BadParam, format!("mode {mode}"), out);
        }
        if tid.is_task() && !self.has_task(tid) && may_pass {
            // Runs elsewhere: ask the pvmd where it runs (it does the checks).
            let me = self.host.index;
            let at = self.mig.mv.route_of(tid).unwrap_or(tid.host());
            let known = self.net.as_ref().is_some_and(|n| n.table.get(at).is_some());
            if at != me && at != 0 && known {
                if self.mig.peer_features(at).is_none() {
                    return refuse(
                        self,
                        PvmError::NotImpl,
                        format!("t{:x} runs on host {at}, a pvmd without migration", tid.bits()),
                        out,
                    );
                }
                let op = self.next_op();
                self.mig.mv.asked.insert(op, asker);
                let mut w = XdrWriter::new();
                w.int(op).int(tid.0).int(host).int(mode);
                self.dm_send(at, DM_MIGREQ, 0, &w.into_inner(), out);
                return;
            }
        }
        if self.has_task(tid) {
            let w = Waiter::Move {
                asker: asker.clone(),
                tid,
                host,
                mode,
                may_pass,
            };
            if self.wait_for_resume(self.key(tid), w, out).is_ok() {
                return; // the task is in a one-task checkpoint: runs when it is back
            }
        }
        let target = match self.mig_check_move(tid, host) {
            Ok(t) => t,
            Err((e, why)) => return refuse(self, e, why, out),
        };
        let key = self.key(tid);
        let op = self.next_op();
        let lazy = self.page_server_for(tid, target, mode, out);
        let Some(t) = self.tasks.get(&key) else { return };
        let ticket = pvm_tmp_of(t.pid).join(format!("pvmresume.t{:x}", tid.bits()));
        let mut w = XdrWriter::new();
        let ps = lazy.map_or(String::new(), |a| a.to_string());
        w.int(op).int(tid.0).int(mode).string(&ps);
        w.int(t.ptid.0).string(&t.a_out);
        w.int(t.outtid).int(t.outctx).int(t.outtag);
        w.int(t.trctid).int(t.trcctx).int(t.trctag);
        w.string(&ticket.to_string_lossy());
        w.int(self.mig.task_features(key).unwrap_or(0) as i32);
        self.dm_send(target, DM_MIGPREP, 0, &w.into_inner(), out);
        out.push(Out::Log(format!(
            "mig: moving t{:x} to host {target} (op {op:#x}, {})",
            tid.bits(),
            if lazy.is_some() { "post-copy" } else { "stop-and-copy" }
        )));
        let dir = pvm_tmp().join(format!("pvmmig/t{:x}-{op:x}", tid.bits()));
        self.mig.mv.outs.insert(
            key,
            OutOp {
                op,
                tid,
                target,
                asker,
                stage: Stage::Prep,
                held: Vec::new(),
                held_bytes: 0,
                t0: Instant::now(),
                t_mark: None,
                port: 0,
                dir,
                info: None,
                cancelled: None,
                old_exited: false,
                lazy,
                cancel: Default::default(),
                t_stage: Instant::now(),
                timed_out: false,
            },
        );
    }

    /// Post-copy or not for a move of `tid` to `target` in `mode` (0 auto, 1 post-copy, 2
    /// stop-and-copy): post-copy when both hosts' CRIU have lazy pages, unless the mode or
    /// `PVMD_MIGRATE_MODE=stop-and-copy` says otherwise. Returns the address for the page
    /// server (this host's address, a port free now).
    fn page_server_for(&self, tid: Tid, target: u32, mode: i32, out: &mut Vec<Out>) -> Option<SocketAddrV4> {
        let forced = std::env::var("PVMD_MIGRATE_MODE").unwrap_or_default();
        if mode == 2 || (mode == 0 && forced == "stop-and-copy") {
            return None;
        }
        let here = super::migrate::host_features() & feat::POST_COPY != 0;
        let there = self.mig.peer_features(target).unwrap_or(0) & feat::POST_COPY != 0;
        if !(here && there) {
            if mode == 1 {
                out.push(Out::Log(format!(
                    "mig: t{:x}: post-copy unavailable (lazy pages here: {here}, on host {target}: {there}); stop-and-copy",
                    tid.bits()
                )));
            }
            return None;
        }
        let ip = self.net.as_ref().map_or(Ipv4Addr::LOCALHOST, |n| *n.own_addr().ip());
        let host = pvm_migration::Host { netns: None, addr: ip };
        let port = pvm_migration::transfer::listen(&host)
            .and_then(|l| {
                l.local_addr()
                    .map_err(|e| pvm_migration::MigError::Transfer(e.to_string()))
            })
            .map(|a| a.port());
        match port {
            Ok(p) => Some(SocketAddrV4::new(ip, p)),
            Err(e) => {
                out.push(Out::Log(format!("mig: no port for a page server ({e}); stop-and-copy")));
                None
            }
        }
    }

    /// Why the task `tid` of this host cannot move to `host` (0 = any), or the target index.
    fn mig_check_move(&self, tid: Tid, host: i32) -> Result<u32, (PvmError, String)> {
        let me = self.host.index;
        if !self.has_task(tid) {
            return Err((PvmError::NoTask, format!("t{:x}: no such task here", tid.bits())));
        }
        let key = self.key(tid);
        let tf = self.mig.task_features(key);
        if tf.unwrap_or(0) & feat::PARK == 0 {
            return Err((
                PvmError::NotImpl,
                if tf.is_none() {
                    format!(
                        "t{:x} uses a library without the park protocol (legacy libpvm3)",
                        tid.bits()
                    )
                } else {
                    format!(
                        "t{:x}: its library does not implement the park protocol yet",
                        tid.bits()
                    )
                },
            ));
        }
        if let Some(r) = super::migrate::criu_missing() {
            return Err((PvmError::NotImpl, format!("CRIU on this host: {r}")));
        }
        let target = if host == 0 {
            let mut best: Option<(u32, u32)> = None;
            for h in self.mig_peers() {
                let f = self.mig.peer_features(h).unwrap_or(0);
                if f & (feat::STOP_AND_COPY | feat::POST_COPY) == 0 {
                    continue;
                }
                let load = self.mig.mv.sent_to.get(&h).copied().unwrap_or(0);
                if best.map_or(true, |(l, _)| load < l) {
                    best = Some((load, h));
                }
            }
            match best {
                Some((_, h)) => h,
                None => {
                    return Err((
                        PvmError::NoHost,
                        "host 0 (any): pvmd-rs hosts with migration, other than this one, are not in the machine"
                            .into(),
                    ))
                }
            }
        } else {
            let idx = Tid::from_u32(host as u32).host();
            let known = self.net.as_ref().is_some_and(|n| n.table.get(idx).is_some()) || idx == me;
            if !known || idx == 0 {
                return Err((PvmError::NoHost, format!("host {host:#x}: not in the machine")));
            }
            if idx == me {
                return Err((
                    PvmError::BadParam,
                    format!("t{:x} already runs on host {idx}", tid.bits()),
                ));
            }
            match self.mig.peer_features(idx) {
                None => {
                    return Err((
                        PvmError::NotImpl,
                        format!("host {idx} is not a pvmd-rs daemon with migration (legacy or no DM_XCAPS answer)"),
                    ))
                }
                Some(f) if f & (feat::STOP_AND_COPY | feat::POST_COPY) == 0 => {
                    return Err((
                        PvmError::NotImpl,
                        format!("host {idx} cannot restore tasks (its CRIU probe failed)"),
                    ))
                }
                Some(_) => idx,
            }
        };
        let t = &self.tasks[&key];
        if !t.forked || t.conn.is_none() {
            return Err((
                PvmError::NotImpl,
                format!("t{:x} was not spawned by a pvmd or is not connected", tid.bits()),
            ));
        }
        if self.mig.is_parking(key) || self.mig.mv.outs.contains_key(&key) {
            return Err((
                PvmError::BadParam,
                format!("t{:x} is already moving or parking", tid.bits()),
            ));
        }
        if self.mig.mv.ins.contains_key(&tid.bits()) {
            return Err((PvmError::BadParam, format!("t{:x} is still arriving", tid.bits())));
        }
        Ok(target)
    }

    // ---- DM_ entry -------------------------------------------------------------------------

    /// Hook at the top of `dm_entry()`: the move's DM_ codes. True if the code was one.
    pub(super) fn mig_dm_entry(&mut self, from: u32, wid: i32, tag: i32, body: &[u8], out: &mut Vec<Out>) -> bool {
        match tag {
            DM_MIGPREP => self.dm_migprep(from, wid, body, out),
            DM_MIGDONE => self.dm_migdone(from, body, out),
            DM_TIDMOVED => self.dm_tidmoved(from, body, out),
            DM_MIGREQ => self.dm_migreq(from, wid, body, out),
            DM_MIGFWD => self.dm_migfwd(from, body, out),
            DM_MIGMCA => self.dm_migmca(from, body, out),
            _ => return false,
        }
        true
    }

    fn dm_migreq(&mut self, from: u32, wid: i32, body: &[u8], out: &mut Vec<Out>) {
        let Some(v) = ints(body, 3) else {
            return out.push(Out::Log(format!("mig: bad DM_MIGREQ from host {from}")));
        };
        let op = v[0];
        if self.op_is_mine(op) {
            // The answer to a request we passed on.
            let cc = v[1];
            let host = v[2];
            if let Some(a) = self.mig.mv.asked.remove(&op) {
                self.send_answer(&a, cc, host, out); // counted where the move ran
            }
            return;
        }
        let Some(v) = ints(body, 4) else {
            return out.push(Out::Log(format!("mig: bad DM_MIGREQ from host {from}")));
        };
        let asker = Asker::Pvmd { host: from, wid, op };
        self.mv_request(asker, Tid(v[1]), v[2], v[3], false, out);
    }

    fn dm_migprep(&mut self, from: u32, wid: i32, body: &[u8], out: &mut Vec<Out>) {
        let mut r = XdrReader::new(body);
        let Ok(op) = r.int("op") else {
            return out.push(Out::Log(format!("mig: bad DM_MIGPREP from host {from}")));
        };
        if self.op_is_mine(op) {
            return self.migprep_reply(from, op, &mut r, out);
        }
        let parsed = (|| -> Result<_, pvm_proto::ParseError> {
            let tid = Tid(r.int("tid")?);
            let _mode = r.int("mode")?;
            let _pages = r.string("page server")?;
            let ptid = Tid(r.int("ptid")?);
            let a_out = r.string("a_out")?;
            let out3 = (r.int("outtid")?, r.int("outctx")?, r.int("outtag")?);
            let trc = (r.int("trctid")?, r.int("trcctx")?, r.int("trctag")?);
            let ticket = r.string("ticket")?;
            let features = r.int("features")? as u32;
            Ok((tid, ptid, a_out, out3, trc, ticket, features))
        })();
        let reply = |d: &mut Self, cc: i32, port: i32, cookie: i32, out: &mut Vec<Out>| {
            let mut w = XdrWriter::new();
            w.int(op).int(cc).int(port).int(cookie);
            d.dm_send(from, DM_MIGPREP, wid, &w.into_inner(), out);
        };
        let Ok((tid, ptid, a_out, out3, trc, ticket, features)) = parsed else {
            out.push(Out::Log(format!("mig: bad DM_MIGPREP from host {from}")));
            return reply(self, PvmError::BadParam.code(), 0, 0, out);
        };
        let why = if !tid.is_task() {
            Some((PvmError::BadParam, "not a task tid".to_string()))
        } else if self.has_task(tid) || self.mig.mv.ins.contains_key(&tid.bits()) {
            Some((PvmError::BadParam, "already here".to_string()))
        } else if let Some(m) = super::migrate::criu_missing() {
            Some((PvmError::NotImpl, format!("CRIU on this host: {m}")))
        } else if super::migrate::restore_helper().is_none() {
            Some((
                PvmError::NotImpl,
                "pvm-migrate not found (set PVMD_MIGRATE_BIN)".to_string(),
            ))
        } else if ticket.is_empty() || ticket.contains('\0') {
            Some((PvmError::BadParam, "no ticket path".to_string()))
        } else {
            None
        };
        if let Some((e, why)) = why {
            out.push(Out::Log(format!(
                "mig: t{:x} from host {from} refused: {why}",
                tid.bits()
            )));
            return reply(self, e.code(), 0, 0, out);
        }
        let addr = self.net.as_ref().map_or(Ipv4Addr::LOCALHOST, |n| *n.own_addr().ip());
        let host = pvm_migration::Host { netns: None, addr };
        let listener = match pvm_migration::transfer::listen(&host) {
            Ok(l) => l,
            Err(e) => {
                out.push(Out::Log(format!(
                    "mig: t{:x}: can't listen for its image: {e}",
                    tid.bits()
                )));
                return reply(self, PvmError::SysErr.code(), 0, 0, out);
            }
        };
        let port = listener.local_addr().map_or(0, |a| a.port());
        let dir = pvm_tmp().join(format!("pvmmig/in-t{:x}-{op:x}", tid.bits()));
        let _ = std::fs::remove_dir_all(&dir);
        let tx = self.mig.mv.tx.clone();
        let d2 = dir.clone();
        let bits = tid.bits();
        std::thread::spawn(move || {
            let res = pvm_migration::transfer::accept(&listener, CRIU_LIMIT)
                .and_then(|s| {
                    s.set_read_timeout(Some(CRIU_LIMIT))
                        .map_err(|e| pvm_migration::MigError::Transfer(e.to_string()))?;
                    pvm_migration::transfer::recv_dir(&mut std::io::BufReader::with_capacity(1 << 20, s), &d2)
                })
                .map_err(|e| e.to_string());
            let _ = tx.send(MigEvent::ImageIn { tid: bits, op, res });
        });
        let cookie = self.next_cookie();
        self.mig.mv.ins.insert(
            tid.bits(),
            InOp {
                op,
                from,
                tid,
                rec: Adopt {
                    ptid,
                    a_out,
                    out: out3,
                    trc,
                    pid: 0,
                    cookie,
                    features,
                },
                ticket: PathBuf::from(ticket),
                dir,
                launched: false,
                t0: Instant::now(),
            },
        );
        out.push(Out::Log(format!(
            "mig: t{:x} coming from host {from} (op {op:#x}), image port {port}",
            tid.bits()
        )));
        reply(self, 0, i32::from(port), cookie, out);
    }

    /// The target's answer: ask the task to park.
    fn migprep_reply(&mut self, from: u32, op: i32, r: &mut XdrReader<'_>, out: &mut Vec<Out>) {
        let (Ok(cc), Ok(port), Ok(_cookie)) = (r.int("cc"), r.int("port"), r.int("cookie")) else {
            return out.push(Out::Log(format!("mig: bad DM_MIGPREP reply from host {from}")));
        };
        let Some((&key, _)) = self.mig.mv.outs.iter().find(|(_, o)| o.op == op && o.target == from) else {
            return;
        };
        if cc < 0 {
            let o = self.mig.mv.outs.remove(&key).expect("found");
            out.push(Out::Log(format!(
                "mig: host {from} refused t{:x} (cc {cc}; its log says why)",
                o.tid.bits()
            )));
            return self.answer_asker(&o.asker, cc, 0, out);
        }
        let conn = self.tasks.get(&key).and_then(|t| t.conn);
        if conn.is_none() {
            let o = self.mig.mv.outs.remove(&key).expect("found");
            self.send_migdone(from, op, o.tid, PvmError::SysErr.code(), 0, out);
            return self.answer_asker(&o.asker, PvmError::NoTask.code(), 0, out);
        }
        if let Some(o) = self.mig.mv.outs.get_mut(&key) {
            o.port = port as u16;
        }
        // Restored here by post-copy and its pages still coming: CRIU could not dump it yet.
        // Wait for them before asking it to park, so that the wait is not part of its freeze.
        let pages = self
            .mig
            .mv
            .images
            .get(&key)
            .filter(|d| d.join("pvm-lazy").exists())
            .map(|d| d.join("pages-done"))
            .filter(|p| !p.exists());
        if let Some(p) = pages {
            let tx = self.mig.mv.tx.clone();
            std::thread::spawn(move || {
                let t = Instant::now();
                while !p.exists() && t.elapsed() < CRIU_LIMIT {
                    std::thread::sleep(Duration::from_millis(5));
                }
                let _ = tx.send(MigEvent::ReadyToPark { key, op });
            });
            return;
        }
        self.send_park_mark(key, out);
    }

    /// Asks a task that is to move to park (TC_MARK); messages for it are held from now on.
    fn send_park_mark(&mut self, key: u32, out: &mut Vec<Out>) {
        let Some(conn) = self.tasks.get(&key).and_then(|t| t.conn) else {
            if let Some(o) = self.mig.mv.outs.remove(&key) {
                self.send_migdone(o.target, o.op, o.tid, PvmError::SysErr.code(), 0, out);
                self.answer_asker(&o.asker, PvmError::NoTask.code(), 0, out);
            }
            return;
        };
        let Some(o) = self.mig.mv.outs.get_mut(&key) else {
            return;
        };
        let op = o.op;
        o.stage = Stage::Parking;
        o.t_stage = Instant::now();
        o.t_mark = Some(Instant::now());
        let tid = o.tid;
        let mut w = XdrWriter::new();
        w.int(op).int(0);
        let mark = wire::frame_message(
            tid,
            Tid::LOCAL_PVMD,
            TC_MARK,
            pvm_proto::codes::SYSCTX_TC,
            0,
            &w.into_inner(),
        );
        out.push(Out::Send(conn, mark));
        self.park_nudge(key, out); // migrate.rs: the park signal (§4.1)
    }

    /// TM_PARK of a task that is moving (hook in migrate.rs). True if it was one.
    pub(super) fn mv_parked(&mut self, key: u32) -> bool {
        match self.mig.mv.outs.get_mut(&key) {
            Some(o) if o.stage == Stage::Parking => {
                o.stage = Stage::Parked;
                true
            }
            _ => false,
        }
    }

    /// The connection of a moving task ended (hook in `mig_disconnected`): dump it.
    pub(super) fn mv_disconnected(&mut self, tid: Tid, out: &mut Vec<Out>) {
        let key = self.key(tid);
        let Some(o) = self.mig.mv.outs.get_mut(&key) else {
            return;
        };
        match o.stage {
            Stage::Parked => {}
            Stage::Prep => return, // not asked to park yet; it may reconnect
            _ => {
                let o = self.mig.mv.outs.remove(&key).expect("present");
                out.push(Out::Log(format!("mig: t{:x} left before parking", tid.bits())));
                self.send_migdone(o.target, o.op, tid, PvmError::SysErr.code(), 0, out);
                self.answer_asker(&o.asker, PvmError::SysErr.code(), 0, out);
                return self.release_held(key, o.held, out);
            }
        }
        if let Some(why) = o.cancelled.clone() {
            let o = self.mig.mv.outs.remove(&key).expect("present");
            out.push(Out::Log(format!("mig: move of t{:x} cancelled: {why}", tid.bits())));
            self.answer_asker(&o.asker, PvmError::HostFail.code(), 0, out);
            self.continue_here(key, tid, out);
            return self.release_held(key, o.held, out);
        }
        o.stage = Stage::Dumping;
        let (op, dir, target, port, lazy) = (o.op, o.dir.clone(), o.target, o.port, o.lazy);
        let cancel = o.cancel.clone();

        let pid = self.tasks.get(&key).map_or(0, |t| t.pid);
        let addr = self
            .net
            .as_ref()
            .and_then(|n| n.table.get(target))
            .map(|h| *h.addr.ip());
        let Some(ip) = addr else { return };
        let tx = self.mig.mv.tx.clone();
        std::thread::spawn(move || {
            let res = dump_and_send(pid, &dir, SocketAddr::from((ip, port)), lazy, &tx, key, op, &cancel);
            if res.as_ref().is_err_and(|e| e.why.is_empty()) {
                return; // post-copy: reported as it went
            }
            let _ = tx.send(MigEvent::Dumped { key, op, res });
        });
    }

    /// Lets a parked task reconnect to this pvmd as itself (a move that did not happen).
    fn continue_here(&mut self, key: u32, tid: Tid, out: &mut Vec<Out>) {
        let Some(t) = self.tasks.get(&key) else { return };
        let ticket = pvm_tmp_of(t.pid).join(format!("pvmresume.t{:x}", tid.bits()));
        write_ticket(&ticket, &format!("continue {} 0\n", t.cookie), out);
    }

    /// Gives held messages to the task (here) in order.
    fn release_held(&mut self, key: u32, held: Vec<Held>, out: &mut Vec<Out>) {
        for h in held {
            match h {
                Held::Frag(b) => self.deliver_or_forward(key, b, out),
                Held::Flush(from) => self.gate_release(key, from, out),
            }
        }
    }

    /// Results of the blocking jobs (called by the shell).
    pub fn mig_event(&mut self, ev: MigEvent) -> Vec<Out> {
        let mut out = Vec::new();
        match ev {
            MigEvent::Dumped { key, op, res } => self.ev_dumped(key, op, res, &mut out),
            MigEvent::ImageIn { tid, op, res } => self.ev_image_in(tid, op, res, &mut out),
            MigEvent::Ckpt(c) => self.ckpt_done(*c, &mut out),
            MigEvent::App(a) => self.app_done(*a, &mut out), // appckpt.rs
            MigEvent::Probed { took } => self.probed(took, &mut out), // migrate.rs
            MigEvent::ReadyToPark { key, op } => {
                if self
                    .mig
                    .mv
                    .outs
                    .get(&key)
                    .is_some_and(|o| o.op == op && o.stage == Stage::Prep)
                {
                    self.send_park_mark(key, &mut out);
                }
            }
            MigEvent::PagesServed {
                key,
                op,
                res,
                alive,
                pid,
                after,
                dir,
            } => self.ev_pages_served(key, op, res, (alive, pid), after, &dir, &mut out),
        }
        out
    }

    /// Post-copy, source: the page server ended.
    #[allow(clippy::too_many_arguments)]
    fn ev_pages_served(
        &mut self,
        key: u32,
        op: i32,
        res: Result<(), String>,
        (alive, pid): (bool, i32),
        after: Duration,
        dir: &Path,
        out: &mut Vec<Out>,
    ) {
        let pending = self.mig.mv.outs.get(&key).is_some_and(|o| o.op == op);
        if !pending && alive && pid > 0 {
            // The task runs on its new host: a copy CRIU let go here must not run on.
            out.push(Out::Signal(pid, libc::SIGKILL));
        }
        if !pending {
            // The move completed (DM_MIGDONE came first): only the pages were still coming.
            match res {
                Ok(()) => out.push(Out::Log(format!(
                    "mig: op {op:#x}: every page fetched by the target, {} ms after the park",
                    after.as_millis()
                ))),
                Err(e) => out.push(Out::Log(format!(
                    "mig: op {op:#x}: page server failed after the move ({e}); the task may fault on its new host"
                ))),
            }
            let _ = std::fs::remove_dir_all(dir);
            return;
        }
        let o = self.mig.mv.outs.remove(&key).expect("checked");
        let tid = o.tid;
        if o.cancelled.is_none() && res.is_ok() {
            // Pages served but no DM_MIGDONE yet: keep waiting for it.
            self.mig.mv.outs.insert(key, o);
            return;
        }
        let why = o
            .cancelled
            .clone()
            .unwrap_or_else(|| res.clone().err().unwrap_or_default());
        self.send_migdone(o.target, op, tid, PvmError::SysErr.code(), 0, out);
        self.answer_asker(&o.asker, PvmError::SysErr.code(), 0, out);
        if alive {
            out.push(Out::Log(format!(
                "mig: post-copy move of t{:x} failed ({why}); it continues here",
                tid.bits()
            )));
            self.continue_here(key, tid, out);
            self.release_held(key, o.held, out);
        } else {
            out.push(Out::Log(format!(
                "mig: post-copy move of t{:x} failed ({why}) and the task is gone",
                tid.bits()
            )));
            if o.old_exited {
                self.task_gone(tid, out);
            }
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    fn ev_dumped(&mut self, key: u32, op: i32, res: Result<DumpInfo, DumpError>, out: &mut Vec<Out>) {
        let Some(o) = self.mig.mv.outs.get_mut(&key).filter(|o| o.op == op) else {
            return;
        };
        let tid = o.tid;
        match res {
            Ok(info) => {
                out.push(Out::Log(format!(
                    "mig: t{:x} dumped ({}): output drained {} ms, dump {} ms (CRIU frozen {} ms), {} bytes streamed in {} ms",
                    tid.bits(),
                    match (&info.fallback, info.lazy) {
                        (Some(f), _) => format!("stop-and-copy, post-copy failed: {f}"),
                        (None, true) => "post-copy, pages served from here".to_string(),
                        (None, false) => "stop-and-copy".to_string(),
                    },
                    info.drained.as_millis(),
                    info.dump.as_millis(),
                    info.frozen.map_or(0, |f| f.as_millis()),
                    info.bytes,
                    info.stream.as_millis()
                )));
                o.stage = Stage::Restoring;
                o.t_stage = Instant::now();
                o.info = Some(info);
            }
            Err(e) if e.alive => {
                let o = self.mig.mv.outs.remove(&key).expect("present");
                out.push(Out::Log(format!(
                    "mig: move of t{:x} failed, it continues here: {}",
                    tid.bits(),
                    e.why
                )));
                self.send_migdone(o.target, op, tid, PvmError::SysErr.code(), 0, out);
                self.answer_asker(&o.asker, PvmError::SysErr.code(), 0, out);
                self.continue_here(key, tid, out);
                self.release_held(key, o.held, out);
            }
            Err(e) => {
                let o = self.mig.mv.outs.remove(&key).expect("present");
                self.send_migdone(o.target, op, tid, PvmError::SysErr.code(), 0, out);
                match e.image {
                    Some(keys) => {
                        out.push(Out::Log(format!(
                            "mig: move of t{:x} failed after its dump ({}); restoring it here",
                            tid.bits(),
                            e.why
                        )));
                        self.restore_here(key, o, keys, out);
                    }
                    None => {
                        out.push(Out::Log(format!(
                            "mig: move of t{:x} failed and the task is gone: {}",
                            tid.bits(),
                            e.why
                        )));
                        self.answer_asker(&o.asker, PvmError::SysErr.code(), 0, out);
                        if o.old_exited {
                            self.task_gone(tid, out);
                        }
                        // Otherwise the exit report of the dead process ends the task.
                    }
                }
            }
        }
    }

    /// The dump succeeded but the task could not run on the target: restore it on this host
    /// from its image, as for a move to here. Held messages wait for it; the requester gets
    /// an error once it runs again (or at once when even that fails).
    fn restore_here(&mut self, key: u32, o: OutOp, keys: [String; 2], out: &mut Vec<Out>) {
        let tid = o.tid;
        let Some(t) = self.tasks.get(&key).cloned() else {
            return self.answer_asker(&o.asker, PvmError::SysErr.code(), 0, out);
        };
        let ticket = pvm_tmp_of(t.pid).join(format!("pvmresume.t{:x}", tid.bits()));
        let features = self.mig.task_features(key).unwrap_or(0);
        let cookie = self.next_cookie();
        let rec = Adopt {
            ptid: t.ptid,
            a_out: t.a_out.clone(),
            out: (t.outtid, t.outctx, t.outtag),
            trc: (t.trctid, t.trcctx, t.trctag),
            pid: 0,
            cookie,
            features,
        };
        self.forget_task(key);
        let me = self.host.index;
        let i = InOp {
            op: o.op,
            from: me,
            tid,
            rec,
            ticket,
            dir: o.dir.clone(),
            launched: false,
            t0: o.t0,
        };
        self.mig.mv.ins.insert(tid.bits(), i);
        self.mig.mv.outs.insert(
            key,
            OutOp {
                target: me,
                stage: Stage::Restoring,
                // The local restore is bounded by CRIU's limit and ends with the helper.
                timed_out: true,
                ..o
            },
        );
        self.launch_restore(tid, &keys, None, out);
    }

    /// After `restore_here`: the task runs on this host again; answer the requester.
    fn finish_local_restore(&mut self, key: u32, out: &mut Vec<Out>) {
        if let Some(o) = self.mig.mv.outs.remove(&key) {
            self.expect_stale_exit(&o);
            self.answer_asker(&o.asker, PvmError::SysErr.code(), 0, out);
            self.release_held(key, o.held, out);
        }
    }

    fn ev_image_in(&mut self, bits: u32, op: i32, res: Result<u64, String>, out: &mut Vec<Out>) {
        let Some(i) = self.mig.mv.ins.get(&bits).filter(|i| i.op == op) else {
            return;
        };
        let tid = i.tid;
        let from = i.from;
        match res {
            Ok(n) => {
                let keys = std::fs::read_to_string(i.dir.join("pvm-keys")).unwrap_or_default();
                let mut k = keys.lines().map(str::to_string);
                let keys = [k.next().unwrap_or_default(), k.next().unwrap_or_default()];
                out.push(Out::Log(format!(
                    "mig: t{:x}: image in ({n} bytes), restoring",
                    tid.bits()
                )));
                let lazy = std::fs::read_to_string(i.dir.join("pvm-lazy")).ok();
                self.launch_restore(tid, &keys, lazy, out);
            }
            Err(e) => {
                let i = self.mig.mv.ins.remove(&bits).expect("present");
                out.push(Out::Log(format!("mig: t{:x}: image stream failed: {e}", tid.bits())));
                self.send_migdone(from, op, tid, PvmError::SysErr.code(), 0, out);
                let _ = std::fs::remove_dir_all(&i.dir);
            }
        }
    }

    /// Starts the restore helper for an incoming task (its `InOp` is in `ins`), registers the
    /// task and writes its ticket.
    fn launch_restore(&mut self, tid: Tid, keys: &[String; 2], lazy: Option<String>, out: &mut Vec<Out>) {
        let Some(i) = self.mig.mv.ins.get(&tid.bits()) else {
            return;
        };
        let (dir, from, op) = (i.dir.clone(), i.from, i.op);
        let fail = |d: &mut Self, why: String, out: &mut Vec<Out>| {
            out.push(Out::Log(format!("mig: restore of t{:x}: {why}", tid.bits())));
            d.mig.mv.ins.remove(&tid.bits());
            if from != d.host.index {
                d.send_migdone(from, op, tid, PvmError::SysErr.code(), 0, out);
            } else if let Some(o) = d.mig.mv.outs.remove(&d.key(tid)) {
                d.answer_asker(&o.asker, PvmError::SysErr.code(), 0, out);
                d.task_gone(tid, out);
            }
        };
        let Some(helper) = super::migrate::restore_helper() else {
            return fail(self, "pvm-migrate not found".into(), out);
        };
        let mut argv = vec![
            helper.clone(),
            "restore-task".to_string(),
            dir.to_string_lossy().into_owned(),
            keys[0].clone(),
            keys[1].clone(),
        ];
        if let Some(ps) = &lazy {
            // Post-copy: the helper runs the lazy-pages daemon fetching from the source.
            argv.push("--lazy".to_string());
            argv.push(ps.trim().to_string());
        }
        // The helper writes the ticket once the task runs (see restore-task).
        let (ticket, cookie) = match self.mig.mv.ins.get(&tid.bits()) {
            Some(i) => (i.ticket.clone(), i.rec.cookie),
            None => return,
        };
        let sock = std::env::var("PVMSOCK").unwrap_or_default();
        argv.push("--ticket".to_string());
        argv.push(ticket.to_string_lossy().into_owned());
        argv.push(format!("restored {sock} {cookie} 0"));
        let pid = match self.launcher.launch(tid, &helper, &argv, &[]) {
            Ok(p) => p,
            Err(e) => return fail(self, e.to_string(), out),
        };
        let Some(i) = self.mig.mv.ins.get_mut(&tid.bits()) else {
            return;
        };
        i.launched = true;
        let mut rec = i.rec.clone();
        rec.pid = pid;
        let key = self.adopt_task(tid, rec);
        if from != self.host.index {
            self.mig.mv.gates.insert(
                key,
                Gate {
                    prev: from,
                    ..Gate::default()
                },
            );
            // Our own tasks' messages to it went to the source until now: flush that route.
            let me = self.host.index;
            self.send_tidmoved(from, tid, me, KIND_FLUSH, out);
            if tid.host() == me {
                // Back on its origin: legacy daemons sent to us all along, and we relayed to
                // the source. They cannot flush; we flush on their behalf, after our relays.
                for l in self.legacy_hosts() {
                    self.send_tidmoved_from(from, tid, me, KIND_FLUSH, l, out);
                }
            }
        }
        out.push(Out::Log(format!(
            "mig: t{:x} restore helper pid {pid} ({})",
            tid.bits(),
            dir.display()
        )));
    }

    fn dm_migdone(&mut self, from: u32, body: &[u8], out: &mut Vec<Out>) {
        let Some(v) = ints(body, 4) else {
            return out.push(Out::Log(format!("mig: bad DM_MIGDONE from host {from}")));
        };
        let (op, tid, cc, pid) = (v[0], Tid(v[1]), v[2], v[3]);
        if !self.op_is_mine(op) {
            // The source gave up: forget the incoming task if it has not started.
            if let Some(i) = self
                .mig
                .mv
                .ins
                .get(&tid.bits())
                .filter(|i| i.op == op && i.from == from)
            {
                if !i.launched {
                    out.push(Out::Log(format!(
                        "mig: move of t{:x} abandoned by host {from}",
                        tid.bits()
                    )));
                    let dir = i.dir.clone();
                    self.mig.mv.ins.remove(&tid.bits());
                    let _ = std::fs::remove_dir_all(dir);
                }
            }
            return;
        }
        let key = self.key(tid);
        let Some(o) = self.mig.mv.outs.get(&key).filter(|o| o.op == op && o.target == from) else {
            return;
        };
        if o.stage != Stage::Restoring {
            return;
        }
        let o = self.mig.mv.outs.remove(&key).expect("present");
        if cc < 0 && o.info.as_ref().is_some_and(|i| i.lazy) {
            // Post-copy: the task is still frozen here; the page server's end tells whether
            // CRIU let it run on (PagesServed).
            out.push(Out::Log(format!(
                "mig: host {from} could not restore t{:x} (cc {cc}); waiting for its page server",
                tid.bits()
            )));
            let mut o = o;
            o.cancelled = Some(format!("host {from} could not restore it"));
            o.cancel.store(true, std::sync::atomic::Ordering::Relaxed);
            self.mig.mv.outs.insert(key, o);
            return;
        }
        if cc < 0 {
            out.push(Out::Log(format!(
                "mig: host {from} could not restore t{:x} (cc {cc}); restoring it here",
                tid.bits()
            )));
            let keys = o.info.as_ref().map(|i| i.keys.clone()).unwrap_or_default();
            return self.restore_here(key, o, keys, out);
        }
        // The task runs on the target: forget it here without an exit notice, forward.
        self.expect_stale_exit(&o);
        self.forget_task(key);
        self.mig.mv.adopted.remove(&tid.bits());
        let gate = self.mig.mv.gates.remove(&key);
        self.set_tid_route(tid, from);
        *self.mig.mv.sent_to.entry(from).or_default() += 1;
        let nheld = o.held.len();
        for h in o.held {
            match h {
                Held::Frag(b) => self.forward_frame(from, &b, out),
                Held::Flush(p) => self.send_tidmoved_from(from, tid, from, KIND_FLUSH, p, out),
            }
        }
        if let Some(g) = gate {
            // Messages still waiting for a flush here: late, but not lost.
            for (h, v) in &g.held {
                out.push(Out::Log(format!(
                    "mig: t{:x}: {} messages from host {h} still waited for its flush",
                    tid.bits(),
                    v.len()
                )));
            }
            for (_, v) in g.held {
                for b in v {
                    self.forward_frame(from, &b, out);
                }
            }
        }
        for h in self.mig_peers() {
            if h != from {
                self.send_tidmoved(h, tid, from, KIND_MOVED, out);
            }
        }
        let freeze = o.t_mark.map_or(Duration::ZERO, |t| t.elapsed());
        let total = o.t0.elapsed();
        out.push(Out::Log(format!(
            "mig: t{:x} moved to host {from} (pid {pid}): frozen {} ms, total {} ms, {nheld} held messages forwarded",
            tid.bits(),
            freeze.as_millis(),
            total.as_millis()
        )));
        crate::metrics::migrated(Ok(freeze.as_millis() as u64)); // metrics.rs
                                                                 // The host's tid as pvm_config shows it (hi_tid), positive like any success.
        let host_tid = (Tid::pvmd(from).bits() & !Tid::PVMD_BIT) as i32;
        self.answer_asker(&o.asker, 0, host_tid, out);
        if !o.info.as_ref().is_some_and(|i| i.lazy) {
            let _ = std::fs::remove_dir_all(&o.dir); // post-copy: when the pages are served
        }
    }

    fn dm_tidmoved(&mut self, from: u32, body: &[u8], out: &mut Vec<Out>) {
        let Some(v) = ints(body, 4) else {
            return out.push(Out::Log(format!("mig: bad DM_TIDMOVED from host {from}")));
        };
        let (tid, host, kind, src) = (Tid(v[0]), v[1] as u32, v[2], v[3] as u32);
        if !tid.is_task() {
            return;
        }
        self.mv_trace(out, || {
            format!(
                "DM_TIDMOVED t{:x} host {host} kind {kind} (of host {src}) from host {from}; here: {}, gate: {}, route: {:?}",
                tid.bits(),
                self.has_task(tid),
                self.mig.mv.gates.contains_key(&self.key(tid)),
                self.mig.mv.route_of(tid)
            )
        });
        let me = self.host.index;
        let key = self.key(tid);
        match kind {
            KIND_MOVED => {
                if self.has_task(tid) || host == me {
                    return;
                }
                self.set_tid_route(tid, host);
                // What we sent the old way must arrive first: flush it after them.
                self.send_tidmoved(from, tid, host, KIND_FLUSH, out);
            }
            KIND_FLUSH => {
                if let Some(o) = self.mig.mv.outs.get_mut(&key) {
                    if o.stage != Stage::Prep {
                        o.held.push(Held::Flush(src));
                        return;
                    }
                    // Still preparing: the flush is for the arrival that brought the task here
                    // (the gate below), not for this move.
                }
                if self.mig.mv.gates.contains_key(&key) {
                    return self.gate_release(key, src, out);
                }
                if !self.has_task(tid) {
                    if let Some(h) = self.mig.mv.route_of(tid) {
                        self.send_tidmoved_from(h, tid, host, KIND_FLUSH, src, out);
                    }
                }
            }
            KIND_EXITED => {
                self.clear_tid_route(tid);
                if self.has_task(tid) {
                    return;
                }
                for n in self.notifies.task_exited(tid) {
                    self.send_notice(n, out);
                }
                self.net_task_gone(tid, out);
            }
            _ => out.push(Out::Log(format!(
                "mig: DM_TIDMOVED kind {kind} from host {from}; dropped"
            ))),
        }
    }
}

/// PVM_TMP of a process (where its library looks for its resume ticket), from its
/// environment; this daemon's when unreadable.
pub(super) fn pvm_tmp_of(pid: i32) -> PathBuf {
    if let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) {
        for kv in env.split(|b| *b == 0) {
            if let Some(v) = kv.strip_prefix(b"PVM_TMP=") {
                return PathBuf::from(String::from_utf8_lossy(v).into_owned());
            }
        }
        return PathBuf::from("/tmp");
    }
    pvm_tmp()
}

/// A task-stream frame: header then payload.
fn stream_frame(dst: Tid, src: Tid, flags: FragFlags, payload: &[u8]) -> Vec<u8> {
    let fh = StreamFragHeader {
        dst,
        src,
        len: payload.len() as u32,
        flags: flags & (FragFlags::SOM | FragFlags::EOM),
    };
    let mut b = Vec::with_capacity(16 + payload.len());
    b.extend_from_slice(&fh.to_bytes());
    b.extend_from_slice(payload);
    b
}

/// Debug mask bit (PDMROUTE) of the move tracing: every message held, gated, released or
/// relayed for a moving or moved task, and every DM_TIDMOVED, one log line each.
const TRACE_MASK: u32 = 0x4000;

/// `src t.. tag ..` of a whole task-stream frame (16-byte header, message header on SOM), for
/// the log.
fn frame_desc(frame: &[u8]) -> String {
    let Ok(fh) = StreamFragHeader::parse(frame, u32::MAX) else {
        return format!("{} bytes", frame.len());
    };
    let tag = if fh.flags.contains(FragFlags::SOM) {
        frame
            .get(16..)
            .and_then(|p| pvm_proto::mesg::MsgHeader::parse(p).ok())
            .map_or(String::new(), |h| format!(" tag {} ctx {}", h.tag, h.ctx))
    } else {
        " (not SOM)".to_string()
    };
    format!("src t{:x} dst t{:x}{tag}", fh.src.bits(), fh.dst.bits())
}

fn write_ticket(ticket: &Path, text: &str, out: &mut Vec<Out>) {
    if let Some(d) = ticket.parent() {
        let _ = std::fs::create_dir_all(d);
    }
    // Per ticket (`with_extension` made every ticket of a directory share
    // "pvmresume.part": two pvmds writing tickets there swapped or lost them).
    let part = std::path::PathBuf::from(format!("{}.part", ticket.display()));
    if let Err(e) = std::fs::write(&part, text).and_then(|()| std::fs::rename(&part, ticket)) {
        out.push(Out::Log(format!("mig: can't write {}: {e}", ticket.display())));
    }
}

/// Requests for a task in a one-task checkpoint wait until it is back (docs/migration.md
/// §4.2): the checkpoint answers when its image is written, the task reconnects a moment later.
impl<A: AuthFiles> Daemon<A> {
    /// Queues `w` for the task `key` when that task is in a one-task checkpoint and there is
    /// room; gives it back otherwise (the caller goes on as before).
    fn wait_for_resume(&mut self, key: u32, w: Waiter, out: &mut Vec<Out>) -> Result<(), Waiter> {
        let mv = &mut self.mig.mv;
        if !mv.ckpt_busy.contains(&key) || mv.waiting.len() >= MAX_WAITERS {
            return Err(w);
        }
        let what = match &w {
            Waiter::Ckpt { .. } => "checkpoint",
            Waiter::Move { .. } => "move",
        };
        out.push(Out::Log(format!(
            "mig: {what} of t{:x} waits for its checkpoint to end",
            key_tid(self.host.index, key).bits()
        )));
        mv.waiting.push((key, Instant::now() + RESUME_WAIT, w));
        Ok(())
    }

    /// Hook of `tm_ckpt` (migrate.rs): true if this TM_CKPT waits for its task.
    pub(super) fn mig_ckpt_wait(&mut self, req: &super::Request, tid: Tid, out: &mut Vec<Out>) -> bool {
        if !tid.is_task() || !tid.is_on_host(self.host.index) || req.body.len() > MAX_WAITER_BODY {
            return false;
        }
        let w = Waiter::Ckpt {
            conn: req.conn,
            src: req.src,
            hdr: req.hdr,
            body: req.body.to_vec(),
        };
        self.wait_for_resume(self.key(tid), w, out).is_ok()
    }

    /// The task `key` is back (reconnected after its checkpoint and sent its TM_XCAPS, hook
    /// in migrate.rs), or will not be: the requests
    /// that waited for it run now, in order (each finds the task as it is; a checkpoint among
    /// them makes the ones after it wait again).
    pub(super) fn mig_resumed(&mut self, key: u32, out: &mut Vec<Out>) {
        if !self.mig.mv.ckpt_busy.remove(&key) {
            return;
        }
        let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.mig.mv.waiting)
            .into_iter()
            .partition(|(k, _, _)| *k == key);
        self.mig.mv.waiting = rest;
        for (_, _, w) in mine {
            self.run_waiter(w, out);
        }
    }

    fn run_waiter(&mut self, w: Waiter, out: &mut Vec<Out>) {
        match w {
            Waiter::Ckpt { conn, src, hdr, body } => {
                let req = super::Request {
                    conn,
                    src,
                    hdr,
                    body: &body,
                };
                self.mig_tm_entry(&req, out);
            }
            Waiter::Move {
                asker,
                tid,
                host,
                mode,
                may_pass,
            } => self.mv_request(asker, tid, host, mode, may_pass, out),
        }
    }

    /// Hook of `mig_task_gone`: the task exited; what waited for it is refused.
    fn refuse_waiters(&mut self, key: u32, out: &mut Vec<Out>) {
        self.mig.mv.ckpt_busy.remove(&key);
        let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.mig.mv.waiting)
            .into_iter()
            .partition(|(k, _, _)| *k == key);
        self.mig.mv.waiting = rest;
        let code = PvmError::NoTask.code();
        for (_, _, w) in mine {
            match w {
                Waiter::Ckpt { conn, src, hdr, .. } => {
                    let mut b = XdrWriter::new();
                    b.int(code).int(0);
                    let bytes = self.rm_frame(src, &hdr, &b.into_inner()); // rm.rs hook
                    out.push(Out::Send(conn, bytes));
                }
                Waiter::Move { asker, tid, .. } => {
                    out.push(Out::Log(format!(
                        "mig: move of t{:x} refused: it exited during its checkpoint",
                        tid.bits()
                    )));
                    self.answer_asker(&asker, code, 0, out);
                }
            }
        }
    }

    /// The earliest deadline of a waiting request.
    fn waiters_deadline(&self) -> Option<Instant> {
        self.mig.mv.waiting.iter().map(|(_, t, _)| *t).min()
    }

    /// Hook of `mig_timers`: a task not back within [`RESUME_WAIT`] no longer counts as in a
    /// checkpoint; what waited for it runs now (and is refused for the reason it has).
    fn waiters_timers(&mut self, out: &mut Vec<Out>) {
        let now = Instant::now();
        let late: Vec<u32> = self
            .mig
            .mv
            .waiting
            .iter()
            .filter(|(_, t, _)| *t <= now)
            .map(|(k, _, _)| *k)
            .collect();
        let mut late = late;
        late.sort_unstable();
        late.dedup();
        for key in late {
            if self.mig.mv.ckpt_busy.contains(&key) {
                out.push(Out::Log(format!(
                    "mig: t{:x} not back from its checkpoint in {RESUME_WAIT:?}",
                    key_tid(self.host.index, key).bits()
                )));
            }
            self.mig.mv.ckpt_busy.insert(key); // so that mig_resumed takes its waiters
            self.mig_resumed(key, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_keys_of_own_and_adopted_tids_never_clash() {
        let me = 2;
        let own = Tid::task(me, 5);
        let foreign = Tid::task(1, 5);
        assert_eq!(super::super::task_key(me, own), 5);
        assert_ne!(super::super::task_key(me, foreign), 5);
        assert!(super::super::task_key(me, foreign) > Tid::LOCAL_MASK);
        assert_eq!(key_tid(me, super::super::task_key(me, own)), own);
        assert_eq!(key_tid(me, super::super::task_key(me, foreign)), foreign);
        // Host 0 means "this host" on the task stream.
        assert_eq!(super::super::task_key(me, Tid::task(0, 5)), 5);
    }

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

    fn daemon() -> Daemon<NoAuth> {
        Daemon::new(
            super::super::HostConfig::master("vm", "LINUX64", "7f000001:801e"),
            NoAuth,
            0,
        )
    }

    fn adopt(d: &mut Daemon<NoAuth>, tid: Tid) -> u32 {
        d.adopt_task(
            tid,
            Adopt {
                ptid: Tid::NONE,
                a_out: "w".into(),
                out: (0, 0, 0),
                trc: (0, 0, 0),
                pid: 0,
                cookie: 77,
                features: feat::PARK,
            },
        )
    }

    /// A relayed fragment as DM_MIGFWD carries it: a task-stream frame with one int.
    fn frame(dst: Tid, src: Tid, v: i32) -> Vec<u8> {
        let body = wire::int_body(v);
        wire::frame_message(dst, src, 1, 0, 0, &body)
    }

    fn pending_values(d: &Daemon<NoAuth>, key: u32) -> Vec<i32> {
        d.tasks[&key]
            .pending
            .iter()
            .map(|b| i32::from_be_bytes(b[b.len() - 4..].try_into().unwrap()))
            .collect()
    }

    fn flush(tid: Tid, from: u32) -> Vec<u8> {
        let mut w = XdrWriter::new();
        w.int(tid.0).int(1).int(KIND_FLUSH).int(from as i32);
        w.into_inner()
    }

    #[test]
    fn a_host_sending_directly_waits_for_its_flush_through_the_previous_host() {
        let mut d = daemon();
        let w = Tid::task(2, 5); // adopted from host 2 (the previous host)
        let key = adopt(&mut d, w);
        assert!(d.has_task(w));
        assert!(key > Tid::LOCAL_MASK);
        d.mig.mv.gates.insert(
            key,
            Gate {
                prev: 2,
                ..Gate::default()
            },
        );
        let peer = Tid::task(3, 9);
        // Hosts 2 and 3 are pvmd-rs peers (they answered DM_XCAPS); host 4 is a legacy pvmd.
        d.mig_peer_caps(2, feat::STOP_AND_COPY);
        d.mig_peer_caps(3, feat::STOP_AND_COPY);
        let mut out = Vec::new();
        // A legacy daemon never learns the new place; should it send here, nothing is held.
        assert!(d.mig_dm_entry(4, 0, DM_MIGFWD, &frame(w, Tid::task(4, 1), 0), &mut out));
        assert_eq!(pending_values(&d, key), vec![0]);
        d.tasks.get_mut(&key).unwrap().pending.clear();
        // Host 3 already routes directly: its message 2 must wait for its message 1, which
        // still travels through host 2.
        assert!(d.mig_dm_entry(3, 0, DM_MIGFWD, &frame(w, peer, 2), &mut out));
        assert_eq!(pending_values(&d, key), Vec::<i32>::new(), "held");
        assert!(d.mig_dm_entry(2, 0, DM_MIGFWD, &frame(w, peer, 1), &mut out));
        assert_eq!(pending_values(&d, key), vec![1], "the previous host's relay passes");
        // Host 3's flush arrives through host 2, after everything it sent that way.
        assert!(d.mig_dm_entry(2, 0, DM_TIDMOVED, &flush(w, 3), &mut out));
        assert_eq!(pending_values(&d, key), vec![1, 2]);
        // From now on host 3's messages pass at once.
        assert!(d.mig_dm_entry(3, 0, DM_MIGFWD, &frame(w, peer, 3), &mut out));
        assert_eq!(pending_values(&d, key), vec![1, 2, 3]);
        // A relayed fragment for a task that is not here and has no route is dropped, logged.
        let before = out.len();
        assert!(d.mig_dm_entry(3, 0, DM_MIGFWD, &frame(Tid::task(3, 1), peer, 4), &mut out));
        assert_eq!(out.len(), before + 1);
        // A truncated frame is refused, not a panic.
        assert!(d.mig_dm_entry(3, 0, DM_MIGFWD, &frame(w, peer, 5)[..20], &mut out));
        assert_eq!(pending_values(&d, key), vec![1, 2, 3]);
    }

    /// A gate that holds messages for a flush that does not come says so (once per wait), and
    /// with the move tracing (-d0x4000) each message it holds and releases is logged.
    #[test]
    fn a_gate_waiting_long_for_a_flush_says_so_once() {
        let mut d = daemon();
        d.debug = TRACE_MASK;
        let w = Tid::task(2, 5);
        let key = adopt(&mut d, w);
        d.mig.mv.gates.insert(
            key,
            Gate {
                prev: 2,
                ..Gate::default()
            },
        );
        d.mig_peer_caps(2, feat::STOP_AND_COPY);
        d.mig_peer_caps(3, feat::STOP_AND_COPY);
        let logs = |out: &[Out], what: &str| {
            out.iter()
                .filter(|o| matches!(o, Out::Log(l) if l.contains(what)))
                .count()
        };
        let mut out = Vec::new();
        assert!(d.mig_dm_entry(3, 0, DM_MIGFWD, &frame(w, Tid::task(3, 9), 1), &mut out));
        assert_eq!(pending_values(&d, key), Vec::<i32>::new(), "held");
        assert_eq!(logs(&out, "from host 3 waits for its flush"), 1, "{out:?}");
        assert!(
            d.mig_deadline().is_some_and(|t| t <= GATE_WARN),
            "the timer watches the wait"
        );
        let mut out = Vec::new();
        d.mig_timers(&mut out);
        assert_eq!(logs(&out, "wait for a flush"), 0, "not yet");
        let long_ago = Instant::now()
            .checked_sub(GATE_WARN + Duration::from_millis(1))
            .unwrap();
        d.mig.mv.gates.get_mut(&key).unwrap().since = Some(long_ago);
        d.mig_timers(&mut out);
        assert_eq!(logs(&out, "wait for a flush"), 1, "{out:?}");
        assert_eq!(logs(&out, "1 from host 3"), 1, "{out:?}");
        d.mig_timers(&mut out);
        assert_eq!(logs(&out, "wait for a flush"), 1, "once");
        // The flush comes: the message goes, the next wait is watched afresh.
        assert!(d.mig_dm_entry(2, 0, DM_TIDMOVED, &flush(w, 3), &mut out));
        assert_eq!(pending_values(&d, key), vec![1]);
        assert_eq!(logs(&out, "flush of host 3 came; 1 messages released"), 1, "{out:?}");
        let g = &d.mig.mv.gates[&key];
        assert!(g.since.is_none() && !g.warned);
    }

    #[test]
    fn a_tid_that_moved_away_is_not_handed_out_again() {
        let mut d = daemon();
        let first = d.alloc_tid().unwrap();
        d.set_tid_route(Tid::task(1, first.local() + 1), 2);
        let second = d.alloc_tid().unwrap();
        assert_eq!(second.local(), first.local() + 2, "t{:x}", second.bits());
    }

    #[test]
    fn the_announced_exit_of_a_moved_task_drops_its_route() {
        let mut d = daemon();
        let w = Tid::task(1, 5); // one of ours, moved to host 2
        d.set_tid_route(w, 2);
        assert_eq!(d.mig.route_of(w), Some(2));
        let mut out = Vec::new();
        let mut b = XdrWriter::new();
        b.int(w.0).int(0).int(KIND_EXITED).int(2);
        assert!(d.mig_dm_entry(2, 0, DM_TIDMOVED, &b.into_inner(), &mut out));
        assert_eq!(d.mig.route_of(w), None);
    }

    #[test]
    fn bad_requests_are_answered_at_once() {
        let mut d = daemon();
        let mut out = Vec::new();
        let mut w = XdrWriter::new();
        w.int(0x40005).int(0).int(7); // mode 7
        d.mv_tm_migrate(
            1,
            Tid::task(1, 1),
            pvm_proto::codes::SYSCTX_TM,
            3,
            &w.into_inner(),
            &mut out,
        );
        let sent: Vec<&Vec<u8>> = out
            .iter()
            .filter_map(|o| match o {
                Out::Send(1, b) => Some(b),
                _ => None,
            })
            .collect();
        assert_eq!(sent.len(), 1, "{out:?}");
        let b = sent[0];
        let cc = i32::from_be_bytes(b[16 + MSGHDR_LEN..16 + MSGHDR_LEN + 4].try_into().unwrap());
        assert_eq!(cc, PvmError::BadParam.code());
        // A short body too.
        out.clear();
        d.mv_tm_migrate(1, Tid::task(1, 1), pvm_proto::codes::SYSCTX_TM, 3, &[0, 0], &mut out);
        assert!(out.iter().any(|o| matches!(o, Out::Send(1, _))));
    }

    /// The cc of the first reply sent on connection `conn`.
    fn cc_on(out: &[Out], conn: ConnId) -> Option<i32> {
        out.iter().find_map(|o| match o {
            Out::Send(c, b) if *c == conn => Some(i32::from_be_bytes(
                b[16 + MSGHDR_LEN..16 + MSGHDR_LEN + 4].try_into().unwrap(),
            )),
            _ => None,
        })
    }

    #[test]
    fn a_move_asked_during_a_checkpoint_waits_then_runs_or_is_refused() {
        let mut d = daemon();
        let w = Tid::task(1, 5);
        let key = adopt(&mut d, w);
        let ask = |d: &mut Daemon<NoAuth>, out: &mut Vec<Out>| {
            let mut b = XdrWriter::new();
            b.int(w.0).int(0).int(0);
            d.mv_tm_migrate(3, Tid::task(1, 1), pvm_proto::codes::SYSCTX_TM, 4, &b.into_inner(), out);
        };
        // In a one-task checkpoint: the move is not answered, it waits (with a deadline).
        d.mig.mv.ckpt_started(key);
        let mut out = Vec::new();
        ask(&mut d, &mut out);
        assert_eq!(cc_on(&out, 3), None, "answered at once: {out:?}");
        assert!(d
            .mig_deadline()
            .is_some_and(|t| t > RESUME_WAIT - Duration::from_secs(2)));
        // Not back in time: it runs, and is refused for what it is (not connected here).
        d.mig.mv.waiting[0].1 = Instant::now();
        let failures = crate::metrics::MIGRATION_FAILURES.get();
        out.clear();
        d.mig_timers(&mut out);
        assert!(cc_on(&out, 3).is_some_and(|cc| cc < 0), "{out:?}");
        assert!(crate::metrics::MIGRATION_FAILURES.get() > failures, "a refusal counts");
        assert!(d.mig.mv.waiting.is_empty() && d.mig.mv.ckpt_busy.is_empty());
        assert_eq!(d.mig_deadline(), None);
        // The task exits while a move waits for it: PvmNoTask.
        d.mig.mv.ckpt_started(key);
        out.clear();
        ask(&mut d, &mut out);
        assert_eq!(cc_on(&out, 3), None);
        d.mig_task_gone(w, &mut out);
        assert_eq!(cc_on(&out, 3), Some(PvmError::NoTask.code()), "{out:?}");
        assert!(d.mig.mv.waiting.is_empty() && d.mig.mv.ckpt_busy.is_empty());
        // Not in a checkpoint: answered at once, as before.
        out.clear();
        ask(&mut d, &mut out);
        assert!(cc_on(&out, 3).is_some(), "{out:?}");
    }

    #[test]
    fn a_task_that_does_not_park_in_time_is_left_where_it_is() {
        let mut d = daemon();
        let w = Tid::task(1, 5);
        let key = adopt(&mut d, w);
        let late = Instant::now()
            .checked_sub(PARK_LIMIT + Duration::from_secs(1))
            .unwrap_or_else(Instant::now);
        d.mig.mv.outs.insert(
            key,
            OutOp {
                op: (1 << OP_HOST_SHIFT) | 1,
                tid: w,
                target: 2,
                asker: Asker::Task {
                    conn: 7,
                    src: Tid::task(1, 1),
                    ctx: 0,
                    wid: 9,
                },
                stage: Stage::Parking,
                held: vec![Held::Frag(frame(w, Tid::task(1, 1), 42))],
                held_bytes: 0,
                t0: late,
                t_mark: Some(late),
                port: 0,
                dir: PathBuf::new(),
                info: None,
                cancelled: None,
                old_exited: false,
                lazy: None,
                cancel: Default::default(),
                t_stage: late,
                timed_out: false,
            },
        );
        assert_eq!(d.mig_deadline(), Some(Duration::ZERO));
        let mut out = Vec::new();
        d.mig_timers(&mut out);
        assert!(d.mig.mv.outs.is_empty(), "given up");
        assert_eq!(d.mig_deadline(), None);
        let reply = out
            .iter()
            .find_map(|o| match o {
                Out::Send(7, b) => Some(b),
                _ => None,
            })
            .expect("the requester is answered");
        let cc = i32::from_be_bytes(reply[16 + MSGHDR_LEN..16 + MSGHDR_LEN + 4].try_into().unwrap());
        assert_eq!(cc, PvmError::SysErr.code());
        assert_eq!(pending_values(&d, key), vec![42], "what was held goes to the task");
    }

    #[test]
    fn short_bodies_are_refused() {
        assert!(ints(&[0, 0, 0, 1], 2).is_none());
        assert_eq!(ints(&[0, 0, 0, 1, 0, 0, 0, 2], 2), Some(vec![1, 2]));
    }
}
