//! Whole-application checkpoint and restart (docs/migration.md §5-6, docs/extensions.md
//! "Application checkpoint"): TM_CKPT scope 1, TM_RESTART scope 1, DM_CKPT, DM_MARK, DM_IMGPUT,
//! DM_RESTORE, and automatic restart when a host of a checkpointed application dies.
//!
//! The coordinator of an operation is the pvmd of the task that asked for it (the master of a
//! job normally runs on the master host). It keeps the commit records and sends each to the
//! other hosts of the commit, so that one of them takes over when its host dies (coord.rs).
//! The application of root tid R is R and every task whose chain of parents reaches
//! R, on every pvmd-rs host (asked with DM_CKPT "list").
//!
//! Checkpoint of epoch N (CoCheck style; every channel is closed at the cut, so the cut is
//! simple): DM_CKPT begin to every host of the application; each pvmd asks its tasks to park
//! (TC_MARK), holds every message for them from then on, and once all of them parked sends
//! DM_MARK to the other participants. The ddp links are FIFO, so once a pvmd has the marks of
//! every other participant, every message sent before the cut is either inside a task's image
//! (the shim drained its socket before parking) or held in this pvmd. It then dumps its tasks
//! (`criu dump -R`), writes next to each image the messages held for the task and what the
//! pvmd knows of it (parent, output routing, pipes), streams each image to `replicas` other
//! hosts (DM_IMGPUT + one TCP stream, `transfer::send_dir`/`recv_dir`), and answers with the
//! list of copies. The coordinator then commits (every pvmd deletes epochs < N and lets its
//! tasks run on) or aborts (epoch N is deleted, N-1 stays). The tasks stay parked until the
//! commit or abort: the freeze is the whole operation (measured in docs/migration.md).
//!
//! Restart from the last committed epoch (after a host died, automatic when the application
//! asked for it, or TM_RESTART scope 1): DM_CKPT rollback to every surviving participant kills
//! the application's tasks there (their pending messages go with them) and exchanges DM_MARKs so
//! that no message of the old run is still on a link; DM_RESTORE to the host holding a copy of
//! each task restores it (as the same tid; see migrate.rs for the adoption of a tid whose host
//! part is another host's) with the messages held for it at the cut; DM_CKPT resume tells every
//! participant where each task now is and writes the resume tickets.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pvm_proto::codes::{PvmError, SYSCTX_TC};
use pvm_proto::xdr::{XdrReader, XdrWriter};
use pvm_proto::Tid;

use super::migrate::{feat, TC_MARK};
use super::{AuthFiles, ConnId, Daemon, Out, Request, MAX_PENDING_BYTES};
use crate::wire;

/// A new coordinator when the coordinator's host dies (DM_CKPT phase record).
mod coord;

/// coordinator <-> pvmds: checkpoint and restart phases.
pub const DM_CKPT: i32 = 0x8002_0104u32 as i32;
/// pvmd -> pvmd: "all my tasks of this operation are parked (or killed)"; FIFO after every
/// message the sender relayed before.
pub const DM_MARK: i32 = 0x8002_0105u32 as i32;
/// pvmd -> storage peer: "I will send you an image" (the peer answers with a port).
pub const DM_IMGPUT: i32 = 0x8002_0106u32 as i32;
/// coordinator -> target: restore one task from a copy the target holds.
pub const DM_RESTORE: i32 = 0x8002_0107u32 as i32;
/// First and last DM_ code handled here.
pub const DM_APP_FIRST: i32 = DM_CKPT;
pub const DM_APP_LAST: i32 = DM_RESTORE;

/// First int of every body here.
const REQ: i32 = 1;
const REP: i32 = 2;
/// DM_MARK kind of the coordinator's beat (no answer, ignored by the receiver).
const BEAT: i32 = 3;
/// DM_MARK kind "my snapshot of the cut is taken" (`int op; int epoch; int coordinator`):
/// sent by a participant to every other one right after it took the messages it holds for
/// its tasks into the epoch. A participant lets its tasks run on before the commit (while
/// the copies are still going) only once its own dumps ended and every other participant's
/// snapshot is taken: a message its running tasks send then can no longer slip into another
/// host's epoch (it would be delivered twice after a restart). A peer that does not know the
/// kind drops it, and the tasks then run on at the commit, as before.
const SNAP: i32 = 4;
/// How often the coordinator sends a beat to the hosts of an application that restarts by
/// itself: a pvmd killed while its host stays up answers each datagram with ICMP port
/// unreachable, and three of those within 2 s declare it dead (guard::Unreachable), so a
/// host failure is seen within about a second even when the application is not talking
/// to that host. (A host that vanished entirely is declared dead by the ddp retry limit.)
const BEAT_PERIOD: Duration = Duration::from_millis(400);

/// DM_CKPT phases.
pub mod phase {
    pub const BEGIN: i32 = 1;
    pub const COMMIT: i32 = 2;
    pub const ABORT: i32 = 3;
    pub const RESUME: i32 = 4;
    pub const LIST: i32 = 5;
    pub const ROLLBACK: i32 = 6;
    /// The coordinator's record of the epoch it commits, to the other hosts of the commit
    /// (no answer; coord.rs).
    pub const RECORD: i32 = 7;
}

/// TM_CKPT flags (fifth int of the body; `pvm_checkpoint` flags).
pub mod flags {
    /// Whole application rooted at the tid.
    pub const APP: i32 = 1;
    /// Restart automatically from the last committed epoch when a host of the application dies.
    pub const AUTO_RESTART: i32 = 2;
}

/// How long the coordinator waits for every answer of a stage: a begin includes parking
/// (a task parks at its next library call), the dumps and the copies.
fn stage_limit(stage: Stage) -> Duration {
    match stage {
        Stage::Begin => Duration::from_secs(120),
        _ => Duration::from_secs(30),
    }
}

/// Most tasks in one application / entries in one body.
const MAX_MEMBERS: usize = 4096;
/// How long an image stream may take before it is given up.
const STREAM_LIMIT: Duration = Duration::from_secs(60);

/// Where a copy of a task's image is: `host` holds it under its storage root at `name`.
#[derive(Debug, Clone, PartialEq)]
struct Copy {
    tid: Tid,
    host: u32,
    name: String,
}

/// The last committed epoch of an application (coordinator).
#[derive(Debug, Clone)]
struct AppRec {
    root: Tid,
    auto: bool,
    replicas: i32,
    /// Last epoch number used (committed or not).
    last: i32,
    committed: Option<Committed>,
}

#[derive(Debug, Clone)]
struct Committed {
    epoch: i32,
    /// Every task of the application and the host it ran on at the cut.
    members: Vec<(Tid, u32)>,
    copies: Vec<Copy>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Stage {
    List,
    Begin,
    Commit,
    Abort,
    Rollback,
    Restore,
    Resume,
}

/// Who asked (TM_CKPT / TM_RESTART), answered at the end.
#[derive(Debug, Clone)]
struct Requester {
    conn: ConnId,
    tid: Tid,
    tag: i32,
    ctx: i32,
    wid: i32,
}

/// The operation this pvmd coordinates (one at a time).
#[derive(Debug)]
struct Coord {
    op: i32,
    root: Tid,
    restart: bool,
    epoch: i32,
    stage: Stage,
    /// Hosts whose answer to the current stage is awaited.
    waiting: BTreeSet<u32>,
    /// Hosts of the operation (participants of begin / rollback / resume).
    hosts: BTreeSet<u32>,
    /// list: every task seen, with its parent and host.
    seen: Vec<(Tid, Tid, u32)>,
    members: Vec<(Tid, u32)>,
    copies: Vec<Copy>,
    /// restart: where each task is restored.
    placement: Vec<(Tid, u32)>,
    requester: Option<Requester>,
    failed: Option<(i32, String)>,
    replicas: i32,
    t0: Instant,
    t_stage: Instant,
    /// restore wids -> tid
    restores: HashMap<i32, (Tid, u32)>,
    /// Restarts already tried for this request (a host died during them).
    tries: u32,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum PartKind {
    Begin,
    Rollback,
}

/// This pvmd's part of an operation.
#[derive(Debug)]
struct Part {
    coord: u32,
    op: i32,
    epoch: i32,
    root: Tid,
    replicas: i32,
    kind: PartKind,
    /// The coordinator's wait id (echoed in the answer).
    wid: i32,
    /// Local tasks to park (begin) or to see exit (rollback), by local key.
    local: BTreeSet<u32>,
    done: BTreeSet<u32>,
    peers: BTreeSet<u32>,
    marks: BTreeSet<u32>,
    marked: bool,
    dumped: bool,
    /// The dumps (on a thread) ended.
    dump_done: bool,
    /// The begin answer went to the coordinator.
    answered: bool,
    /// Images being sent (wid -> copy).
    puts: HashMap<i32, (Copy, PathBuf)>,
    copies: Vec<Copy>,
    failed: Option<(i32, String)>,
    t_dump: Duration,
    frozen: Duration,
    bytes: u64,
    /// Peers whose snapshot of the cut is taken (DM_MARK kind SNAP).
    snaps: BTreeSet<u32>,
    /// The tasks run on already (after the dumps, before the commit): the commit or abort
    /// must not give them a second ticket.
    released: bool,
    /// When the begin arrived.
    t0: Instant,
}

/// A task restored here, waiting for the resume phase to get its ticket.
#[derive(Debug, Clone)]
struct Restored {
    tid: Tid,
    cookie: i32,
    epoch: i32,
    ticket: PathBuf,
    out: (i32, i32, i32),
    ptid: Tid,
}

/// Application checkpoint state of one pvmd.
#[derive(Debug, Default)]
pub struct AppState {
    next_op: i32,
    next_wid: i32,
    apps: BTreeMap<i32, AppRec>,
    coord: Option<Coord>,
    part: Option<Part>,
    /// Marks that arrived before their operation's begin/rollback: (coord, op) -> hosts.
    early_marks: HashMap<(u32, i32), BTreeSet<u32>>,
    /// Local tasks parking for an application checkpoint, by local key: TM_PARK seen, and the
    /// process's pid as the kernel named it on its connection (a restored task's pid is not
    /// the restore helper's, which is what `Task::pid` holds).
    parking: HashMap<u32, (bool, Option<i32>)>,
    /// Tasks being killed for a rollback (quietly removed at their exit).
    dying: BTreeSet<u32>,
    restored: Vec<Restored>,
    /// Restarts to start when the current operation ends (roots).
    queued: Vec<i32>,
    /// Next beat to the hosts of applications that restart by themselves.
    next_beat: Option<Instant>,
    /// The PVM_TMP of tasks restored here whose PVM_TMP is another host's (their resume
    /// tickets go there: the restored process still looks in the directory it started with).
    task_tmp: HashMap<u32, String>,
    /// Records of other coordinators' commits (coord.rs).
    coordrec: coord::CoordState,
}

impl<A: AuthFiles> Daemon<A> {
    /// The PVM_TMP directory task `key` looks in for its resume ticket: the one it started
    /// with. A task restored by a restart has it in its metadata; any other task, including
    /// one that arrived by a move from another host (whose PVM_TMP is the origin's), in its
    /// environment. Using this host's PVM_TMP for a moved task left it waiting for its
    /// ticket for ever after the first commit.
    fn app_tmp_of(&self, key: u32) -> String {
        if let Some(t) = self.app.task_tmp.get(&key) {
            return t.clone();
        }
        match self.tasks.get(&key) {
            Some(t) if t.pid > 0 => super::mig_move::pvm_tmp_of(t.pid).to_string_lossy().into_owned(),
            _ => std::env::var("PVM_TMP").unwrap_or_else(|_| "/tmp".into()),
        }
    }
}

impl AppState {
    pub fn is_parking(&self, local: u32) -> bool {
        self.parking.contains_key(&local)
    }
}

fn storage_root() -> PathBuf {
    let tmp = std::env::var("PVM_TMP").unwrap_or_else(|_| "/tmp".into());
    Path::new(&tmp).join("pvmapp")
}

fn image_name(root: Tid, epoch: i32, tid: Tid) -> String {
    format!("t{:x}/e{epoch}/t{:x}", root.bits(), tid.bits())
}

/// A name from a peer: relative, plain components only.
fn safe_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 200
        && name
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".." && c.bytes().all(|b| b.is_ascii_alphanumeric()))
}

fn resume_ticket(tmp: &str, tid: Tid) -> PathBuf {
    Path::new(tmp).join(format!("pvmresume.t{:x}", tid.bits()))
}

fn write_ticket(path: &Path, text: &str) -> std::io::Result<()> {
    // Per ticket (`with_extension` made every ticket of a directory share
    // "pvmresume.part": two pvmds writing tickets there swapped or lost them).
    let part = std::path::PathBuf::from(format!("{}.part", path.display()));
    std::fs::write(&part, text).and_then(|()| std::fs::rename(&part, path))
}

/// Kills a process and everything below it (a restored task lives in a pid namespace whose
/// init is a grandchild of the restore helper; killing that init kills the namespace).
fn kill_tree(pid: i32) {
    let mut all = vec![pid];
    let mut i = 0;
    while i < all.len() && all.len() < 256 {
        let p = all[i];
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) {
            for t in tasks.flatten() {
                if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                    all.extend(s.split_whitespace().filter_map(|c| c.parse::<i32>().ok()));
                }
            }
        }
        i += 1;
    }
    for p in all.into_iter().rev() {
        if p > 1 {
            crate::sys::kill(p, libc::SIGKILL);
        }
    }
}

/// What a restore needs besides the image (written next to it as `pvmmeta`).
#[derive(Debug, Clone, PartialEq)]
struct Meta {
    tid: Tid,
    ptid: Tid,
    out: (i32, i32, i32),
    trc: (i32, i32, i32),
    keys: [String; 2],
    tmp: String,
    a_out: String,
}

impl Meta {
    fn emit(&self) -> String {
        format!(
            "tid {}\nptid {}\nout {} {} {}\ntrc {} {} {}\nkey1 {}\nkey2 {}\ntmp {}\na_out {}\n",
            self.tid.0,
            self.ptid.0,
            self.out.0,
            self.out.1,
            self.out.2,
            self.trc.0,
            self.trc.1,
            self.trc.2,
            self.keys[0],
            self.keys[1],
            self.tmp,
            self.a_out
        )
    }

    fn parse(s: &str) -> Option<Meta> {
        let mut m = Meta {
            tid: Tid(0),
            ptid: Tid(0),
            out: (0, 0, 0),
            trc: (0, 0, 0),
            keys: [String::new(), String::new()],
            tmp: String::new(),
            a_out: String::new(),
        };
        let three = |v: &str| -> Option<(i32, i32, i32)> {
            let n: Vec<i32> = v.split(' ').filter_map(|x| x.parse().ok()).collect();
            (n.len() == 3).then(|| (n[0], n[1], n[2]))
        };
        for line in s.lines() {
            let (k, v) = line.split_once(' ').unwrap_or((line, ""));
            match k {
                "tid" => m.tid = Tid(v.parse().ok()?),
                "ptid" => m.ptid = Tid(v.parse().ok()?),
                "out" => m.out = three(v)?,
                "trc" => m.trc = three(v)?,
                "key1" => m.keys[0] = v.to_string(),
                "key2" => m.keys[1] = v.to_string(),
                "tmp" => m.tmp = v.to_string(),
                "a_out" => m.a_out = v.to_string(),
                _ => {}
            }
        }
        m.tid.is_task().then_some(m)
    }
}

/// Held messages (whole fragments as the task socket carries them): `u32 length, bytes`.
fn write_held(path: &Path, held: &[Vec<u8>]) -> std::io::Result<()> {
    let mut b = Vec::new();
    for m in held {
        b.extend_from_slice(&(m.len() as u32).to_be_bytes());
        b.extend_from_slice(m);
    }
    std::fs::write(path, b)
}

fn read_held(path: &Path) -> Vec<Vec<u8>> {
    let Ok(b) = std::fs::read(path) else { return Vec::new() };
    let (mut i, mut v, mut total) = (0usize, Vec::new(), 0usize);
    while i + 4 <= b.len() {
        let n = u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]) as usize;
        i += 4;
        if n > b.len() - i || total + n > MAX_PENDING_BYTES {
            break;
        }
        v.push(b[i..i + n].to_vec());
        total += n;
        i += n;
    }
    v
}

/// A DM_CKPT request: `int kind (1); int op; int epoch; int phase; int root; int replicas;
/// int ntids; ntids x {int tid; int host}; int nhosts; nhosts x int host`.
#[derive(Debug, Clone, PartialEq)]
struct CkptReq {
    op: i32,
    epoch: i32,
    phase: i32,
    root: Tid,
    replicas: i32,
    tids: Vec<(Tid, u32)>,
    hosts: Vec<u32>,
}

impl CkptReq {
    fn emit(&self) -> Vec<u8> {
        let mut w = XdrWriter::new();
        w.int(REQ)
            .int(self.op)
            .int(self.epoch)
            .int(self.phase)
            .int(self.root.0)
            .int(self.replicas);
        w.int(self.tids.len() as i32);
        for (t, h) in &self.tids {
            w.int(t.0).int(*h as i32);
        }
        w.int(self.hosts.len() as i32);
        for h in &self.hosts {
            w.int(*h as i32);
        }
        w.into_inner()
    }

    fn parse(r: &mut XdrReader<'_>) -> Option<CkptReq> {
        let (op, epoch, phase, root, replicas) = (
            r.int("op").ok()?,
            r.int("epoch").ok()?,
            r.int("phase").ok()?,
            r.int("root").ok()?,
            r.int("replicas").ok()?,
        );
        let n = r.count("ntids", 8).ok()?.min(MAX_MEMBERS);
        let mut tids = Vec::with_capacity(n);
        for _ in 0..n {
            tids.push((Tid(r.int("tid").ok()?), r.int("host").ok()? as u32));
        }
        let n = r.count("nhosts", 4).ok()?.min(MAX_MEMBERS);
        let mut hosts = Vec::with_capacity(n);
        for _ in 0..n {
            hosts.push(r.int("host").ok()? as u32);
        }
        Some(CkptReq {
            op,
            epoch,
            phase,
            root: Tid(root),
            replicas,
            tids,
            hosts,
        })
    }
}

/// A DM_CKPT answer: `int kind (2); int op; int epoch; int phase; int cc; int n; n x {int tid;
/// int a; string s}` (begin: a = host holding a copy, s = its name; list: a = parent tid,
/// s = the task's program).
#[derive(Debug, Clone, PartialEq)]
struct CkptRep {
    op: i32,
    epoch: i32,
    phase: i32,
    cc: i32,
    items: Vec<(Tid, i32, String)>,
}

impl CkptRep {
    fn emit(&self) -> Vec<u8> {
        let mut w = XdrWriter::new();
        w.int(REP).int(self.op).int(self.epoch).int(self.phase).int(self.cc);
        w.int(self.items.len() as i32);
        for (t, a, s) in &self.items {
            w.int(t.0).int(*a).string(s);
        }
        w.into_inner()
    }

    fn parse(r: &mut XdrReader<'_>) -> Option<CkptRep> {
        let (op, epoch, phase, cc) = (
            r.int("op").ok()?,
            r.int("epoch").ok()?,
            r.int("phase").ok()?,
            r.int("cc").ok()?,
        );
        let n = r.count("n", 12).ok()?.min(MAX_MEMBERS);
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            items.push((Tid(r.int("tid").ok()?), r.int("a").ok()?, r.string("s").ok()?));
        }
        Some(CkptRep {
            op,
            epoch,
            phase,
            cc,
            items,
        })
    }
}

fn ints(v: &[i32]) -> Vec<u8> {
    let mut w = XdrWriter::new();
    for i in v {
        w.int(*i);
    }
    w.into_inner()
}

/// Whether a TM_CKPT body asks for a whole application (scope 1).
pub fn is_app_ckpt(body: &[u8]) -> bool {
    let mut r = XdrReader::new(body);
    let _ = r.int("op");
    r.int("scope").ok() == Some(1)
}

impl<A: AuthFiles> Daemon<A> {
    fn app_log(s: String, out: &mut Vec<Out>) {
        out.push(Out::Log(format!("appckpt: {s}")));
    }

    /// TM_RESTART for an application: scope 1, or the root of an application this pvmd
    /// checkpointed (so `pvm_restart(root, -1)` rolls the whole application back).
    pub(super) fn app_is_restart(&self, body: &[u8]) -> bool {
        let mut r = XdrReader::new(body);
        let (_, tid) = (r.int("epoch"), r.int("tid"));
        r.int("scope").ok() == Some(1)
            || tid.is_ok_and(|t| self.app.apps.get(&t).is_some_and(|a| a.committed.is_some()) || self.coord_holds(t))
    }

    fn app_wid(&mut self) -> i32 {
        self.app.next_wid = (self.app.next_wid + 1) & 0x3fff_ffff;
        // Kept apart from netd's wait ids: these answers are matched here only.
        0x4000_0000 | self.app.next_wid
    }

    /// Sends a DM message, or handles it at once when it is for this host.
    fn app_send(&mut self, host: u32, tag: i32, wid: i32, body: &[u8], out: &mut Vec<Out>) {
        if host == self.host.index {
            self.app_dm(host, tag, wid, body, out);
        } else {
            self.dm_send(host, tag, wid, body, out);
        }
    }

    /// The pvmd-rs hosts (this one included) that can hold or take checkpoints.
    fn app_capable_hosts(&self) -> Vec<u32> {
        let me = self.host.index;
        let mut v = vec![me];
        if let Some(n) = self.net.as_ref() {
            for h in n.table.hosts.keys() {
                if *h != me
                    && self
                        .mig
                        .peer_features(*h)
                        .is_some_and(|f| f & feat::APP_CHECKPOINT != 0)
                {
                    v.push(*h);
                }
            }
        }
        v.sort_unstable();
        v
    }

    fn app_host_alive(&self, h: u32) -> bool {
        h == self.host.index || self.net.as_ref().is_some_and(|n| n.table.get(h).is_some())
    }

    /// The local key of a tid that lives on this host.
    fn app_local(&self, tid: Tid) -> Option<u32> {
        self.has_task(tid).then(|| self.key(tid))
    }

    fn app_tid_of(&self, key: u32) -> Tid {
        super::key_tid(self.host.index, key)
    }

    /// Hosts this coordinator watches: those of applications that restart by themselves.
    fn app_watched(&self) -> BTreeSet<u32> {
        let me = self.host.index;
        self.app
            .apps
            .values()
            .filter(|a| a.auto)
            .filter_map(|a| a.committed.as_ref())
            .flat_map(|c| c.members.iter().map(|m| m.1).chain(c.copies.iter().map(|k| k.host)))
            .chain(self.coord_watched()) // coord.rs: holders watch the coordinator
            .filter(|h| *h != me && self.net.as_ref().is_some_and(|n| n.table.get(*h).is_some()))
            .collect()
    }

    /// When the next beat is due (hook in `net_deadline`).
    pub(super) fn app_deadline(&self) -> Option<Duration> {
        let now = Instant::now();
        let beat = self.app.next_beat.map(|t| t.saturating_duration_since(now));
        let stage = self
            .app
            .coord
            .as_ref()
            .map(|c| (c.t_stage + stage_limit(c.stage)).saturating_duration_since(now));
        match (beat, stage) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Sends the beats that are due (hook in `net_timeout`).
    pub(super) fn app_tick(&mut self, out: &mut Vec<Out>) {
        let now = Instant::now();
        // A stage whose answers did not all come in time fails (a begin is aborted).
        if let Some(c) = self.app.coord.as_mut() {
            let limit = stage_limit(c.stage);
            if c.t_stage.elapsed() >= limit {
                let why = format!(
                    "no answer from hosts {:?} in {} s ({:?})",
                    c.waiting,
                    limit.as_secs(),
                    c.stage
                );
                c.failed.get_or_insert((PvmError::SysErr.code(), why));
                c.waiting.clear();
                c.restores.clear();
                self.app_next_stage(out);
            }
        }
        if self.app.next_beat.is_some_and(|t| t > now) {
            return;
        }
        let hosts = self.app_watched();
        if hosts.is_empty() {
            self.app.next_beat = None;
            return;
        }
        let me = self.host.index as i32;
        for h in hosts {
            self.dm_send(h, DM_MARK, 0, &ints(&[BEAT, 0, 0, me]), out);
        }
        self.app.next_beat = Some(now + BEAT_PERIOD);
    }

    /// Test switch `PVMD_TEST_SEND_EXT_DM` (interop-tests/tests/mig_legacy_opcodes.rs): to
    /// each new peer, also send every DM_ code of the extension range whatever the peer
    /// announced, as a legacy daemon must survive them. Never set in normal operation: a
    /// pvmd-rs daemon sends these only to peers that announced the features (DM_XCAPS).
    pub(super) fn app_test_ext_dm(&mut self, host: u32, out: &mut Vec<Out>) {
        if std::env::var_os("PVMD_TEST_SEND_EXT_DM").is_none() {
            return;
        }
        let list = CkptReq {
            op: 1,
            epoch: 1,
            phase: phase::LIST,
            root: Tid(0),
            replicas: 0,
            tids: Vec::new(),
            hosts: Vec::new(),
        }
        .emit();
        let mut codes: Vec<u32> = (0x8002_0100..=0x8002_010f).collect();
        codes.push(0x8002_01ff);
        for code in codes {
            for body in [&[][..], &ints(&[REQ, 1, 2, 3])[..], &list[..]] {
                self.dm_send(host, code as i32, 0, body, out);
            }
        }
        Self::app_log(format!("test: sent every extension DM code to host {host}"), out);
    }

    // ---- requests of tasks -------------------------------------------------------------------

    /// TM_CKPT scope 1: `int op; int scope (1); int root tid; int replicas; [int flags]`.
    pub(super) fn app_tm_ckpt(&mut self, req: &Request, out: &mut Vec<Out>) {
        let mut r = XdrReader::new(req.body);
        let (Ok(_op), Ok(_scope), Ok(root), Ok(replicas)) =
            (r.int("op"), r.int("scope"), r.int("tid"), r.int("replicas"))
        else {
            return self.reply(req, req.src, &ints(&[PvmError::BadParam.code(), 0]), out);
        };
        let fl = r.int("flags").unwrap_or(0);
        let requester = Requester {
            conn: req.conn,
            tid: req.src,
            tag: req.hdr.tag,
            ctx: req.hdr.ctx,
            wid: req.hdr.wid,
        };
        let why = if self.app.coord.is_some() {
            Some((
                PvmError::Already,
                "another application checkpoint or restart is running here".to_string(),
            ))
        } else if !Tid(root).is_task() {
            Some((PvmError::BadParam, format!("t{root:x} is not a task")))
        } else if !(1..=8).contains(&replicas) {
            Some((PvmError::BadParam, format!("replicas {replicas}: 1 to 8 other hosts")))
        } else {
            super::migrate::criu_missing().map(|m| (PvmError::NotImpl, format!("CRIU on this host: {m}")))
        };
        if let Some((e, why)) = why {
            Self::app_log(format!("checkpoint of application t{root:x} refused: {why}"), out);
            return self.reply(req, req.src, &ints(&[e.code(), 0]), out);
        }
        let base = self.coord_epoch_base(root); // coord.rs: epochs go on across coordinators
        let rec = self.app.apps.entry(root).or_insert(AppRec {
            root: Tid(root),
            auto: false,
            replicas,
            last: base,
            committed: None,
        });
        rec.auto = fl & flags::AUTO_RESTART != 0;
        rec.replicas = replicas;
        rec.last += 1;
        let epoch = rec.last;
        self.app_start(Tid(root), epoch, false, Some(requester), out);
    }

    /// TM_RESTART scope 1: `int epoch (-1); int root tid; int scope (1)`.
    pub(super) fn app_tm_restart(&mut self, req: &Request, out: &mut Vec<Out>) {
        let mut r = XdrReader::new(req.body);
        let (Ok(_epoch), Ok(root)) = (r.int("epoch"), r.int("tid")) else {
            return self.reply(req, req.src, &ints(&[PvmError::BadParam.code(), 0]), out);
        };
        let requester = Requester {
            conn: req.conn,
            tid: req.src,
            tag: req.hdr.tag,
            ctx: req.hdr.ctx,
            wid: req.hdr.wid,
        };
        // coord.rs: a record held from a coordinator that is gone is taken over here.
        let adopted = if self.app.coord.is_none() {
            self.coord_manual_restart(root)
        } else {
            Ok(false)
        };
        let why = if self.app.coord.is_some() {
            Some((
                PvmError::Already,
                "another application checkpoint or restart is running here".to_string(),
            ))
        } else if let Err(why) = adopted {
            Some((PvmError::Already, why))
        } else if !self.app.apps.get(&root).is_some_and(|a| a.committed.is_some()) {
            Some((
                PvmError::NotFound,
                format!("no committed checkpoint of application t{root:x} coordinated by this pvmd"),
            ))
        } else {
            None
        };
        if let Some((e, why)) = why {
            Self::app_log(format!("restart of application t{root:x} refused: {why}"), out);
            return self.reply(req, req.src, &ints(&[e.code(), 0]), out);
        }
        self.app_restart(root, Some(requester), out);
    }

    fn app_answer(&mut self, rq: &Requester, cc: i32, epoch: i32, out: &mut Vec<Out>) {
        let bytes = wire::frame_message(rq.tid, Tid::LOCAL_PVMD, rq.tag, rq.ctx, rq.wid, &ints(&[cc, epoch]));
        // A requester that is a task of the application may be reconnecting: held for it.
        match self.app_local(rq.tid) {
            Some(l) if self.tasks.get(&l).is_some_and(|t| t.conn != Some(rq.conn)) => {
                self.deliver(l, bytes, out);
            }
            _ => out.push(Out::Send(rq.conn, bytes)),
        }
    }

    // ---- coordinator -------------------------------------------------------------------------

    fn app_start(&mut self, root: Tid, epoch: i32, restart: bool, requester: Option<Requester>, out: &mut Vec<Out>) {
        self.app.next_op += 1;
        let op = self.app.next_op;
        let rec = self.app.apps.get(&root.0).cloned();
        let hosts: BTreeSet<u32> = self.app_capable_hosts().into_iter().collect();
        self.app.coord = Some(Coord {
            op,
            root,
            restart,
            epoch,
            stage: Stage::List,
            waiting: hosts.clone(),
            hosts: BTreeSet::new(),
            seen: Vec::new(),
            members: Vec::new(),
            copies: Vec::new(),
            placement: Vec::new(),
            requester,
            failed: None,
            replicas: rec.as_ref().map_or(1, |r| r.replicas),
            t0: Instant::now(),
            t_stage: Instant::now(),
            restores: HashMap::new(),
            tries: 0,
        });
        Self::app_log(
            format!(
                "{} of application t{:x} (op {op}, epoch {epoch}): listing tasks on hosts {hosts:?}",
                if restart { "restart" } else { "checkpoint" },
                root.bits()
            ),
            out,
        );
        let body = CkptReq {
            op,
            epoch,
            phase: phase::LIST,
            root,
            replicas: 0,
            tids: Vec::new(),
            hosts: Vec::new(),
        }
        .emit();
        for h in hosts {
            let wid = self.app_wid();
            self.app_send(h, DM_CKPT, wid, &body, out);
        }
    }

    fn app_restart(&mut self, root: i32, requester: Option<Requester>, out: &mut Vec<Out>) {
        let Some(c) = self.app.apps.get(&root).and_then(|a| a.committed.clone()) else {
            return;
        };
        self.app_start(Tid(root), c.epoch, true, requester, out);
    }

    /// Sends one DM_CKPT phase to every host of `hosts`, waiting for each.
    fn app_phase(&mut self, ph: i32, stage: Stage, tids: Vec<(Tid, u32)>, hosts: BTreeSet<u32>, out: &mut Vec<Out>) {
        let Some(c) = self.app.coord.as_mut() else { return };
        c.stage = stage;
        c.waiting = hosts.clone();
        c.t_stage = Instant::now();
        let body = CkptReq {
            op: c.op,
            epoch: c.epoch,
            phase: ph,
            root: c.root,
            replicas: c.replicas,
            tids,
            hosts: c.hosts.iter().copied().collect(),
        }
        .emit();
        for h in hosts {
            let wid = self.app_wid();
            self.app_send(h, DM_CKPT, wid, &body, out);
        }
    }

    /// An answer to a DM_CKPT phase.
    fn app_coord_reply(&mut self, from: u32, rep: CkptRep, out: &mut Vec<Out>) {
        let Some(c) = self.app.coord.as_mut() else { return };
        // A record is never answered (a peer that does not know the phase refuses it).
        if rep.phase == phase::RECORD || rep.op != c.op || !c.waiting.remove(&from) {
            return;
        }
        if rep.cc < 0 && c.failed.is_none() {
            c.failed = Some((
                rep.cc,
                format!("host {from} answered {} to phase {}", rep.cc, rep.phase),
            ));
        }
        match c.stage {
            Stage::List => {
                for (t, p, _) in rep.items.into_iter().take(MAX_MEMBERS) {
                    if c.seen.len() >= 4 * MAX_MEMBERS {
                        break;
                    }
                    c.seen.push((t, Tid(p), from));
                }
            }
            Stage::Begin => {
                for (t, h, n) in rep.items.into_iter().take(MAX_MEMBERS) {
                    if safe_name(&n) {
                        c.copies.push(Copy {
                            tid: t,
                            host: h as u32,
                            name: n,
                        });
                    }
                }
            }
            _ => {}
        }
        if c.waiting.is_empty() {
            self.app_next_stage(out);
        }
    }

    /// The current stage is complete (or failed): go on.
    fn app_next_stage(&mut self, out: &mut Vec<Out>) {
        let Some(c) = self.app.coord.as_mut() else { return };
        let stage_ms = c.t_stage.elapsed().as_millis();
        let failed = c.failed.clone();
        if c.stage == Stage::List && failed.is_some() {
            return self.app_finish(out);
        }
        match (c.stage, c.restart) {
            (Stage::List, false) => {
                let members = app_members(c.root, &c.seen);
                if members.is_empty() {
                    c.failed = Some((
                        PvmError::NoTask.code(),
                        format!("no task t{:x} on a pvmd-rs host", c.root.bits()),
                    ));
                    return self.app_finish(out);
                }
                c.hosts = members.iter().map(|m| m.1).collect();
                c.members = members.clone();
                let hosts = c.hosts.clone();
                let msg = format!(
                    "epoch {}: {} tasks on hosts {:?} (list {stage_ms} ms); begin",
                    c.epoch,
                    members.len(),
                    hosts
                );
                Self::app_log(msg, out);
                self.app_phase(phase::BEGIN, Stage::Begin, members, hosts, out);
            }
            (Stage::Begin, _) => {
                let (ph, st) = if failed.is_some() {
                    (phase::ABORT, Stage::Abort)
                } else {
                    (phase::COMMIT, Stage::Commit)
                };
                // Every host holding a copy takes part in commit/abort (old epochs go there too).
                let mut hosts = c.hosts.clone();
                hosts.extend(c.copies.iter().map(|k| k.host));
                hosts.retain(|h| *h == self.host.index || self.net.as_ref().is_some_and(|n| n.table.get(*h).is_some()));
                let msg = format!(
                    "epoch {}: begin done in {stage_ms} ms ({} copies){}",
                    c.epoch,
                    c.copies.len(),
                    failed
                        .as_ref()
                        .map_or(String::new(), |f| format!("; aborting: {}", f.1))
                );
                let members = c.members.clone();
                Self::app_log(msg, out);
                if ph == phase::COMMIT {
                    self.coord_send_record(&hosts, out); // coord.rs: before the commit, same links
                }
                self.app_phase(ph, st, members, hosts, out);
            }
            (Stage::Commit, _) => {
                let (root, epoch, members, copies) = (c.root, c.epoch, c.members.clone(), c.copies.clone());
                if let Some(a) = self.app.apps.get_mut(&root.0) {
                    a.committed = Some(Committed { epoch, members, copies });
                    if a.auto {
                        // Watch its hosts from now on (app_tick).
                        self.app.next_beat.get_or_insert_with(Instant::now);
                    }
                }
                self.app_finish(out);
            }
            (Stage::Abort, _) => {
                if c.failed.is_none() {
                    c.failed = Some((PvmError::SysErr.code(), "aborted".into()));
                }
                self.app_finish(out);
            }
            (Stage::List, true) => self.app_plan_restart(out),
            (Stage::Rollback, _) => {
                if failed.is_some() {
                    return self.app_finish(out);
                }
                let msg = format!("restart epoch {}: rollback done in {stage_ms} ms; restoring", c.epoch);
                let placement = c.placement.clone();
                c.stage = Stage::Restore;
                c.t_stage = Instant::now();
                Self::app_log(msg, out);
                let (op, epoch, root) = (c.op, c.epoch, c.root);
                // Every restore is recorded before the first is sent: the local one is
                // answered at once.
                let sends: Vec<(Tid, u32, i32)> = placement.into_iter().map(|(t, h)| (t, h, self.app_wid())).collect();
                if let Some(c) = self.app.coord.as_mut() {
                    for (tid, host, wid) in &sends {
                        c.restores.insert(*wid, (*tid, *host));
                        c.waiting.insert(*host);
                    }
                }
                for (tid, host, wid) in sends {
                    let mut w = XdrWriter::new();
                    w.int(REQ).int(op).int(epoch).int(tid.0).int(host as i32);
                    w.string(&image_name(root, epoch, tid)).int(0);
                    let body = w.into_inner();
                    self.app_send(host, DM_RESTORE, wid, &body, out);
                }
            }
            (Stage::Restore, _) => {
                if failed.is_some() {
                    return self.app_finish(out);
                }
                let msg = format!("restart epoch {}: restores done in {stage_ms} ms; resuming", c.epoch);
                let (placement, hosts) = (c.placement.clone(), c.hosts.clone());
                Self::app_log(msg, out);
                self.app_phase(phase::RESUME, Stage::Resume, placement, hosts, out);
            }
            (Stage::Resume, _) => self.app_finish(out),
        }
    }

    /// Restart: where each task of the last committed epoch goes, then rollback.
    fn app_plan_restart(&mut self, out: &mut Vec<Out>) {
        let Some(c) = self.app.coord.as_ref() else { return };
        let Some(com) = self.app.apps.get(&c.root.0).and_then(|a| a.committed.clone()) else {
            return self.app_finish(out);
        };
        let mut placement = Vec::new();
        let mut missing = Vec::new();
        for (tid, host) in &com.members {
            let copies: Vec<&Copy> = com
                .copies
                .iter()
                .filter(|k| k.tid == *tid && self.app_host_alive(k.host))
                .collect();
            match copies.iter().find(|k| k.host == *host).or(copies.first()) {
                Some(k) => placement.push((*tid, k.host)),
                None => missing.push(*tid),
            }
        }
        // Every surviving host that had a task, runs one now (seen in the list) or gets one.
        let mut hosts: BTreeSet<u32> = com
            .members
            .iter()
            .map(|m| m.1)
            .filter(|h| self.app_host_alive(*h))
            .collect();
        hosts.extend(placement.iter().map(|p| p.1));
        let now: Vec<(Tid, u32)> = app_members(c.root, &c.seen);
        hosts.extend(now.iter().map(|m| m.1));
        let mut kill: Vec<(Tid, u32)> = com.members.clone();
        for m in &now {
            if !kill.iter().any(|k| k.0 == m.0) {
                kill.push(*m);
            }
        }
        let Some(c) = self.app.coord.as_mut() else { return };
        if !missing.is_empty() {
            c.failed = Some((
                PvmError::NotFound.code(),
                format!("no surviving copy of epoch {} for {missing:x?}", com.epoch),
            ));
            return self.app_finish(out);
        }
        c.members = com.members.clone();
        c.copies = com.copies.clone();
        c.placement = placement.clone();
        c.hosts = hosts.clone();
        let msg = format!(
            "restart of t{:x} from epoch {}: placement {:?}; rolling back on hosts {hosts:?}",
            c.root.bits(),
            com.epoch,
            placement
                .iter()
                .map(|(t, h)| format!("t{:x}->{h}", t.bits()))
                .collect::<Vec<_>>()
        );
        Self::app_log(msg, out);
        self.app_phase(phase::ROLLBACK, Stage::Rollback, kill, hosts, out);
    }

    fn app_finish(&mut self, out: &mut Vec<Out>) {
        let Some(c) = self.app.coord.take() else { return };
        let ms = c.t0.elapsed().as_millis();
        let (cc, why) = c.failed.clone().unwrap_or((0, String::new()));
        let what = if c.restart { "restart" } else { "checkpoint" };
        // A root that never had a committed epoch leaves no record (no growth from requests
        // that fail).
        if cc != 0 && self.app.apps.get(&c.root.0).is_some_and(|a| a.committed.is_none()) {
            self.app.apps.remove(&c.root.0);
        }
        if cc == 0 {
            Self::app_log(
                format!(
                    "{what} of application t{:x} epoch {} complete in {ms} ms",
                    c.root.bits(),
                    c.epoch
                ),
                out,
            );
        } else {
            Self::app_log(
                format!(
                    "{what} of application t{:x} epoch {} failed after {ms} ms: {why}",
                    c.root.bits(),
                    c.epoch
                ),
                out,
            );
        }
        // A host died while the application was restarting: plan again from the surviving
        // hosts (the placement changes), a few times, for the same caller.
        if c.restart && cc == PvmError::HostFail.code() && c.tries < 3 {
            Self::app_log(
                format!("restart of t{:x}: trying again without the dead host", c.root.bits()),
                out,
            );
            self.app_restart(c.root.0, c.requester.clone(), out);
            if let Some(n) = self.app.coord.as_mut() {
                n.tries = c.tries + 1;
            }
            return;
        }
        if let Some(rq) = &c.requester {
            self.app_answer(rq, cc, if cc == 0 { c.epoch } else { 0 }, out);
        }
        if let Some(root) = self.app.queued.pop() {
            Self::app_log(format!("starting the queued restart of t{root:x}"), out);
            self.app_restart(root, None, out);
        }
    }

    /// A host was deleted (hook in netd's `host_gone`).
    pub(super) fn app_host_gone(&mut self, host: u32, out: &mut Vec<Out>) {
        // Our part: a dead coordinator never commits (its epoch is dropped and the tasks run
        // on); a dead peer sends no mark.
        if let Some(p) = self.app.part.take_if(|p| p.coord == host) {
            let n = self.app_let_go(&p, out);
            if p.kind == PartKind::Begin {
                let _ = std::fs::remove_dir_all(storage_root().join(format!("t{:x}/e{}", p.root.bits(), p.epoch)));
            }
            Self::app_log(
                format!(
                    "op {} epoch {}: coordinator host {host} died; dropped, {n} tasks resumed",
                    p.op, p.epoch
                ),
                out,
            );
        }
        if let Some(p) = self.app.part.as_mut() {
            p.peers.remove(&host);
            // Copies to the dead host never get their DM_IMGPUT answer (or the stream ends
            // late): without this the begin answer waited for them for ever and the
            // coordinator, waiting for us, refused the application's restart as "another
            // application checkpoint or restart is running here" (found by sched_failover).
            let lost: Vec<i32> = p
                .puts
                .iter()
                .filter(|(_, (k, _))| k.host == host)
                .map(|(w, _)| *w)
                .collect();
            for w in lost {
                if let Some((k, _)) = p.puts.remove(&w) {
                    p.failed.get_or_insert((
                        PvmError::HostFail.code(),
                        format!("copy of t{:x} to host {host}: the host died", k.tid.bits()),
                    ));
                }
            }
        }
        self.app_part_progress(out);
        // Coordinator: an operation waiting for it fails.
        if let Some(c) = self.app.coord.as_mut() {
            let restores = c.restores.len();
            c.restores.retain(|_, r| r.1 != host);
            if c.waiting.remove(&host) || c.hosts.contains(&host) || c.restores.len() != restores {
                c.hosts.remove(&host);
                if c.failed.is_none() {
                    c.failed = Some((PvmError::HostFail.code(), format!("host {host} died")));
                }
                if c.stage == Stage::Restore && c.restores.is_empty() {
                    c.waiting.clear();
                }
                if c.waiting.is_empty() {
                    self.app_next_stage(out);
                }
            }
        }
        let due: Vec<i32> = self
            .app
            .apps
            .values()
            .filter(|a| {
                a.auto
                    && a.committed
                        .as_ref()
                        .is_some_and(|c| c.members.iter().any(|m| m.1 == host))
            })
            .map(|a| a.root.0)
            .collect();
        for root in due {
            if self.app.coord.is_some() {
                Self::app_log(format!("host {host} died: restart of t{root:x} queued"), out);
                if !self.app.queued.contains(&root) {
                    self.app.queued.push(root);
                }
            } else {
                Self::app_log(
                    format!("host {host} died: restarting application t{root:x} automatically"),
                    out,
                );
                self.app_restart(root, None, out);
            }
        }
        self.coord_host_gone(host, out); // coord.rs: a new coordinator if it was the coordinator
    }

    // ---- DM entry ----------------------------------------------------------------------------

    /// DM_CKPT .. DM_RESTORE from host `from` (hook in netd's `dm_entry`).
    pub(super) fn app_dm(&mut self, from: u32, tag: i32, wid: i32, body: &[u8], out: &mut Vec<Out>) {
        let mut r = XdrReader::new(body);
        let Ok(kind) = r.int("kind") else {
            return Self::app_log(format!("bad {tag:#x} from host {from}"), out);
        };
        match (tag, kind) {
            (DM_CKPT, REQ) => match CkptReq::parse(&mut r) {
                Some(q) if q.phase == phase::RECORD => self.coord_record(from, &q, &mut r, out),
                Some(q) => self.app_part_request(from, wid, q, out),
                None => Self::app_log(format!("bad DM_CKPT from host {from}"), out),
            },
            (DM_CKPT, REP) => match CkptRep::parse(&mut r) {
                Some(p) => self.app_coord_reply(from, p, out),
                None => Self::app_log(format!("bad DM_CKPT answer from host {from}"), out),
            },
            (DM_MARK, BEAT) => {}
            (DM_MARK, SNAP) => {
                if let (Ok(op), Ok(_epoch), Ok(coord)) = (r.int("op"), r.int("epoch"), r.int("coord")) {
                    if let Some(p) = self
                        .app
                        .part
                        .as_mut()
                        .filter(|p| p.coord == coord as u32 && p.op == op && p.kind == PartKind::Begin)
                    {
                        p.snaps.insert(from);
                    }
                    self.app_part_progress(out);
                }
            }
            (DM_MARK, REQ) => {
                if let (Ok(op), Ok(_epoch), Ok(coord)) = (r.int("op"), r.int("epoch"), r.int("coord")) {
                    self.app_mark(coord as u32, op, from, out);
                }
            }
            (DM_IMGPUT, REQ) => self.app_imgput(from, wid, &mut r, out),
            (DM_IMGPUT, REP) => self.app_imgput_reply(from, wid, &mut r, out),
            (DM_RESTORE, REQ) => self.app_restore(from, wid, &mut r, out),
            (DM_RESTORE, REP) => {
                let (op, cc) = (r.int("op").unwrap_or(0), r.int("cc").unwrap_or(PvmError::BadMsg.code()));
                let Some(c) = self.app.coord.as_mut() else { return };
                if op != c.op || c.stage != Stage::Restore {
                    return;
                }
                let Some((tid, _)) = c.restores.remove(&wid) else {
                    return;
                };
                if cc < 0 && c.failed.is_none() {
                    c.failed = Some((cc, format!("host {from} could not restore t{:x}", tid.bits())));
                }
                if c.restores.is_empty() {
                    c.waiting.clear();
                    self.app_next_stage(out);
                }
            }
            _ => Self::app_log(format!("{tag:#x} kind {kind} from host {from}: dropped"), out),
        }
    }

    fn app_part_reply(&mut self, coord: u32, wid: i32, rep: CkptRep, out: &mut Vec<Out>) {
        let body = rep.emit();
        self.app_send(coord, DM_CKPT, wid, &body, out);
    }

    /// A phase of an operation, on a participant.
    fn app_part_request(&mut self, coord: u32, wid: i32, q: CkptReq, out: &mut Vec<Out>) {
        let me = self.host.index;
        let rep = |cc: i32, items: Vec<(Tid, i32, String)>| CkptRep {
            op: q.op,
            epoch: q.epoch,
            phase: q.phase,
            cc,
            items,
        };
        match q.phase {
            phase::LIST => {
                let items = self
                    .tasks
                    .iter()
                    .map(|(l, t)| (self.app_tid_of(*l), t.ptid.0, t.a_out.clone()))
                    .take(MAX_MEMBERS)
                    .collect();
                self.app_part_reply(coord, wid, rep(0, items), out);
            }
            phase::BEGIN | phase::ROLLBACK => {
                if q.phase == phase::ROLLBACK
                    && self
                        .app
                        .part
                        .as_ref()
                        .is_some_and(|p| p.coord == coord && p.kind == PartKind::Rollback)
                {
                    // The coordinator planned the restart again: this rollback replaces ours
                    // (tasks still dying stay quiet when they go).
                    self.app.part = None;
                }
                if q.phase == phase::ROLLBACK {
                    self.coord_rollback_supersedes(coord, q.root, out); // coord.rs
                }
                if self.app.part.is_some() {
                    Self::app_log(
                        format!("op {} from host {coord}: another operation is running", q.op),
                        out,
                    );
                    return self.app_part_reply(coord, wid, rep(PvmError::Already.code(), Vec::new()), out);
                }
                let rollback = q.phase == phase::ROLLBACK;
                let mut local = BTreeSet::new();
                let mut why = None;
                for (tid, host) in &q.tids {
                    if *host != me && !rollback {
                        continue;
                    }
                    match self.app_local(*tid) {
                        Some(l) => {
                            local.insert(l);
                        }
                        None if !rollback => why = Some(format!("t{:x} is not here", tid.bits())),
                        None => {}
                    }
                }
                if rollback {
                    // Tasks spawned after the checkpoint by tasks of the application go too.
                    loop {
                        let more: Vec<u32> = self
                            .tasks
                            .iter()
                            .filter(|(l, t)| {
                                !local.contains(*l) && self.app_local(t.ptid).is_some_and(|p| local.contains(&p))
                            })
                            .map(|(l, _)| *l)
                            .collect();
                        if more.is_empty() {
                            break;
                        }
                        local.extend(more);
                    }
                } else {
                    for l in &local {
                        let t = &self.tasks[l];
                        let tid = self.app_tid_of(*l);
                        if self.mig.task_features(*l).unwrap_or(0) & feat::PARK == 0 {
                            why = Some(format!("t{:x} cannot park (legacy libpvm3)", tid.bits()));
                        } else if !t.forked || t.conn.is_none() {
                            why = Some(format!(
                                "t{:x} was not spawned by a pvmd or is not connected",
                                tid.bits()
                            ));
                        } else if self.mig.is_parking(*l) || self.mig.mv.busy(*l) || self.app.is_parking(*l) {
                            // Not `mig_is_parking`: that also counts the order gate a task keeps
                            // for its whole stay after a move (the relay fast path must respect
                            // it), which refused every task that had ever moved.
                            why = Some(format!("t{:x} is already parking", tid.bits()));
                        }
                    }
                    if why.is_none() {
                        why = super::migrate::criu_missing().map(|m| format!("CRIU on this host: {m}"));
                    }
                }
                if let Some(why) = why {
                    Self::app_log(format!("op {} epoch {}: refused: {why}", q.op, q.epoch), out);
                    return self.app_part_reply(coord, wid, rep(PvmError::NotImpl.code(), Vec::new()), out);
                }
                let peers: BTreeSet<u32> = q
                    .hosts
                    .iter()
                    .copied()
                    .filter(|h| *h != me && self.app_host_alive(*h))
                    .collect();
                let marks = self.app.early_marks.remove(&(coord, q.op)).unwrap_or_default();
                self.app.part = Some(Part {
                    coord,
                    op: q.op,
                    epoch: q.epoch,
                    root: q.root,
                    replicas: q.replicas,
                    kind: if rollback { PartKind::Rollback } else { PartKind::Begin },
                    wid,
                    local: local.clone(),
                    done: BTreeSet::new(),
                    peers,
                    marks,
                    marked: false,
                    dumped: false,
                    dump_done: false,
                    answered: false,
                    puts: HashMap::new(),
                    copies: Vec::new(),
                    failed: None,
                    t_dump: Duration::ZERO,
                    frozen: Duration::ZERO,
                    bytes: 0,
                    snaps: BTreeSet::new(),
                    released: false,
                    t0: Instant::now(),
                });
                if rollback {
                    for l in &local {
                        self.app_kill(*l, out);
                    }
                } else {
                    for l in &local {
                        let tid = self.app_tid_of(*l);
                        let Some(conn) = self.tasks[l].conn else { continue };
                        let mark =
                            wire::frame_message(tid, Tid::LOCAL_PVMD, TC_MARK, SYSCTX_TC, 0, &ints(&[q.op, q.epoch]));
                        out.push(Out::Send(conn, mark));
                        self.park_nudge(*l, out); // migrate.rs: the park signal (§4.1)
                        self.app.parking.insert(*l, (false, None));
                    }
                    Self::app_log(
                        format!(
                            "op {} epoch {}: {} local tasks asked to park",
                            q.op,
                            q.epoch,
                            local.len()
                        ),
                        out,
                    );
                }
                self.app_part_progress(out);
            }
            phase::COMMIT | phase::ABORT => {
                let commit = q.phase == phase::COMMIT;
                let dir = storage_root().join(format!("t{:x}", q.root.bits()));
                // Old epochs go after a commit, the new one after an abort.
                if let Ok(rd) = std::fs::read_dir(&dir) {
                    for e in rd.flatten() {
                        let n = e.file_name().to_string_lossy().into_owned();
                        let Some(k) = n.strip_prefix('e').and_then(|k| k.parse::<i32>().ok()) else {
                            continue;
                        };
                        if (commit && k < q.epoch) || (!commit && k == q.epoch) {
                            let _ = std::fs::remove_dir_all(e.path());
                        }
                    }
                }
                self.coord_commit_seen(coord, q.op, commit, out); // coord.rs
                let mut resumed = 0;
                if let Some(p) = self.app.part.take_if(|p| p.coord == coord && p.op == q.op) {
                    resumed = self.app_let_go(&p, out);
                }
                Self::app_log(
                    format!(
                        "op {} epoch {}: {}; {resumed} tasks resumed",
                        q.op,
                        q.epoch,
                        if commit { "committed" } else { "aborted" }
                    ),
                    out,
                );
                self.app_part_reply(coord, wid, rep(0, Vec::new()), out);
            }
            phase::RESUME => {
                // Where every task of the application now runs, then the tickets.
                for (tid, host) in &q.tids {
                    self.app_route_to(*tid, *host, out);
                }
                let sock = std::env::var("PVMSOCK").unwrap_or_default();
                let restored = std::mem::take(&mut self.app.restored);
                for r in &restored {
                    let text = format!("restored {sock} {} {}\n", r.cookie, r.epoch);
                    if let Err(e) = write_ticket(&r.ticket, &text) {
                        Self::app_log(format!("can't write {}: {e}", r.ticket.display()), out);
                    }
                    if r.out.0 > 0 {
                        // The output collector saw the old process's end: announce it again.
                        let mut body = wire::output_record(r.tid, super::TO_NEW, &[]);
                        body.extend_from_slice(&wire::int_body(r.ptid.0));
                        self.send_to_task(Tid(r.out.0), r.out.2, r.out.1, 0, &body, out);
                        let spawned = wire::output_record(r.tid, -1, &[]);
                        self.send_to_task(Tid(r.out.0), r.out.2, r.out.1, 0, &spawned, out);
                    }
                }
                Self::app_log(
                    format!(
                        "op {} epoch {}: {} restored tasks resumed",
                        q.op,
                        q.epoch,
                        restored.len()
                    ),
                    out,
                );
                self.app_part_reply(coord, wid, rep(0, Vec::new()), out);
            }
            _ => self.app_part_reply(coord, wid, rep(PvmError::BadParam.code(), Vec::new()), out),
        }
    }

    /// Messages for `tid` go to `host` from now on (a restored task whose host part names
    /// another host).
    fn app_route_to(&mut self, tid: Tid, host: u32, out: &mut Vec<Out>) {
        if tid.host() == host {
            self.clear_tid_route(tid);
            return;
        }
        self.set_tid_route(tid, host); // mig_move.rs
        if self.debug & 0x2 != 0 {
            Self::app_log(format!("t{:x} now runs on host {host}", tid.bits()), out);
        }
    }

    /// The end of this pvmd's part of a checkpoint (commit, abort, or its coordinator died):
    /// the tasks that parked get their `continue` ticket and run on; those still to park find
    /// no parking when their TM_PARK comes and carry on connected. Returns how many resume.
    fn app_let_go(&mut self, p: &Part, out: &mut Vec<Out>) -> usize {
        let mut resumed = 0;
        for l in &p.local {
            self.app.parking.remove(l);
            if p.kind != PartKind::Begin || !p.done.contains(l) || p.released {
                continue;
            }
            let Some(t) = self.tasks.get(l) else { continue };
            let tid = self.app_tid_of(*l);
            let text = format!("continue {} {}\n", t.cookie, p.epoch);
            let path = resume_ticket(&self.app_tmp_of(*l), tid);
            if let Err(e) = write_ticket(&path, &text) {
                Self::app_log(format!("can't write the ticket of t{:x}: {e}", tid.bits()), out);
            } else if self.debug & 0x4 != 0 {
                Self::app_log(
                    format!("t{:x}: ticket {} ({})", tid.bits(), path.display(), text.trim_end()),
                    out,
                );
            }
            resumed += 1;
        }
        resumed
    }

    /// Kills a local task of the application for a rollback; it leaves quietly (no exit
    /// notify, no output end) when its process is gone.
    fn app_kill(&mut self, local: u32, out: &mut Vec<Out>) {
        let Some(t) = self.tasks.get_mut(&local) else { return };
        t.pending.clear();
        t.pending_bytes = 0;
        let (pid, forked, conn) = (t.pid, t.forked, t.conn.take());
        if let Some(c) = conn {
            if let Some(cn) = self.conns.get_mut(&c) {
                cn.auth = super::Auth::Closing;
            }
            out.push(Out::Close(c));
        }
        self.app.parking.remove(&local);
        // A task restored by an attempt that did not reach its resume gets no ticket.
        let index = self.host.index;
        self.app.restored.retain(|r| super::task_key(index, r.tid) != local);
        if forked && pid > 0 {
            kill_tree(pid);
            self.app.dying.insert(local);
        } else {
            self.app_quiet_remove(local);
        }
    }

    fn app_quiet_remove(&mut self, local: u32) {
        self.app.dying.remove(&local);
        self.tasks.remove(&local);
        self.mig.task_gone(local);
        if let Some(p) = self.app.part.as_mut() {
            if p.kind == PartKind::Rollback && p.local.contains(&local) {
                p.done.insert(local);
            }
        }
    }

    /// A spawned task's process exited (hook at the top of `task_exited`): true when it was
    /// killed by a rollback (then it leaves without a trace).
    pub(super) fn app_exited(&mut self, tid: Tid, out: &mut Vec<Out>) -> bool {
        let local = self.key(tid);
        if !self.app.dying.contains(&local) {
            // A real exit: its PVM_TMP record goes (the map stays bounded by the live tasks;
            // a later task under the same key must not inherit it).
            self.app.task_tmp.remove(&local);
            return false;
        }
        // The output collector sees the end of this instance (the restored one announces
        // itself as a new task, as after a one-task restart).
        if let Some((to, ctx, tag)) = self.tasks.get(&local).map(|t| (t.outtid, t.outctx, t.outtag)) {
            if to > 0 {
                let body = wire::output_record(tid, super::TO_EOF, &[]);
                self.send_to_task(Tid(to), tag, ctx, 0, &body, out);
            }
        }
        self.app_quiet_remove(local);
        self.app_part_progress(out);
        true
    }

    fn app_mark(&mut self, coord: u32, op: i32, from: u32, out: &mut Vec<Out>) {
        match self.app.part.as_mut() {
            Some(p) if p.coord == coord && p.op == op => {
                p.marks.insert(from);
            }
            _ => {
                if self.app.early_marks.len() < 64 {
                    self.app.early_marks.entry((coord, op)).or_default().insert(from);
                }
            }
        }
        self.app_part_progress(out);
    }

    /// TM_PARK of a task parking for an application checkpoint (hook in `tm_park`).
    pub(super) fn app_tm_park(&mut self, req: &Request, out: &mut Vec<Out>) -> bool {
        let peer = self.conns.get(&req.conn).and_then(|c| c.peer_pid);
        let key = self.key(req.src);
        let Some(p) = self.app.parking.get_mut(&key) else {
            return false;
        };
        *p = (true, peer);
        self.reply(req, req.src, &wire::int_body(0), out);
        true
    }

    /// EOF of a task parking for an application checkpoint (hook in `mig_disconnected`).
    pub(super) fn app_disconnected(&mut self, tid: Tid, out: &mut Vec<Out>) -> bool {
        let local = self.key(tid);
        let Some((parked, _)) = self.app.parking.get(&local).copied() else {
            return false;
        };
        if let Some(p) = self.app.part.as_mut() {
            if p.local.contains(&local) {
                if !parked && p.failed.is_none() {
                    p.failed = Some((
                        PvmError::SysErr.code(),
                        format!("t{:x} left before parking", tid.bits()),
                    ));
                }
                p.done.insert(local);
            }
        }
        self.app_part_progress(out);
        true
    }

    /// Moves this pvmd's part on as far as it can.
    fn app_part_progress(&mut self, out: &mut Vec<Out>) {
        let Some(p) = self.app.part.as_mut() else { return };
        if !p.marked && p.done.len() >= p.local.len() {
            p.marked = true;
            let (coord, op, epoch) = (p.coord, p.op, p.epoch);
            let peers: Vec<u32> = p.peers.iter().copied().collect();
            let body = {
                let mut w = XdrWriter::new();
                w.int(REQ).int(op).int(epoch).int(coord as i32);
                w.into_inner()
            };
            for h in peers {
                self.dm_send(h, DM_MARK, 0, &body, out);
            }
        }
        let Some(p) = self.app.part.as_mut() else { return };
        if !p.marked || !p.peers.is_subset(&p.marks) {
            return;
        }
        match p.kind {
            PartKind::Rollback => {
                let Some(p) = self.app.part.take() else { return };
                Self::app_log(
                    format!("op {}: rollback done ({} tasks killed)", p.op, p.local.len()),
                    out,
                );
                let rep = CkptRep {
                    op: p.op,
                    epoch: p.epoch,
                    phase: phase::ROLLBACK,
                    cc: 0,
                    items: Vec::new(),
                };
                self.app_part_reply(p.coord, p.wid, rep, out);
            }
            PartKind::Begin => {
                if !p.dumped {
                    p.dumped = true;
                    let (coord, op, epoch) = (p.coord, p.op, p.epoch);
                    let peers: Vec<u32> = p.peers.iter().copied().collect();
                    // Takes the held messages into the epoch (on this thread) and starts the
                    // dumps: from here on nothing more enters this host's part of the cut.
                    self.app_dump_all(out);
                    let mut w = XdrWriter::new();
                    w.int(SNAP).int(op).int(epoch).int(coord as i32);
                    let body = w.into_inner();
                    for h in peers {
                        self.dm_send(h, DM_MARK, 0, &body, out);
                    }
                }
                self.app_run_on(out);
                let Some(p) = self.app.part.as_ref() else { return };
                if !p.dump_done || !p.puts.is_empty() || p.answered {
                    return;
                }
                let (cc, items) = match &p.failed {
                    Some((cc, why)) => {
                        let why = why.clone();
                        let cc = *cc;
                        Self::app_log(format!("op {} epoch {}: failed here: {why}", p.op, p.epoch), out);
                        (cc, Vec::new())
                    }
                    None => (
                        0,
                        p.copies
                            .iter()
                            .map(|k| (k.tid, k.host as i32, k.name.clone()))
                            .collect(),
                    ),
                };
                let Some(p) = self.app.part.as_ref() else { return };
                let rep = CkptRep {
                    op: p.op,
                    epoch: p.epoch,
                    phase: phase::BEGIN,
                    cc,
                    items,
                };
                let (coord, wid) = (p.coord, p.wid);
                // Answered once; the part stays until commit/abort (the tasks stay parked).
                if let Some(p) = self.app.part.as_mut() {
                    p.answered = true;
                }
                self.app_part_reply(coord, wid, rep, out);
            }
        }
    }

    /// Lets this host's tasks run on before the commit, once their dumps ended and every other
    /// participant has taken its snapshot of the cut (see [`SNAP`]): the freeze of a task is
    /// then the park and the dumps, not the copies to other hosts too. The epoch still counts
    /// only at the commit (every copy stored); an abort or a lost coordinator after this
    /// leaves the tasks running, as it would have at the commit. `PVMD_APP_RESUME=commit`
    /// keeps them parked until the commit (to compare).
    fn app_run_on(&mut self, out: &mut Vec<Out>) {
        let ready = self.app.part.as_ref().is_some_and(|p| {
            p.kind == PartKind::Begin && !p.released && p.dump_done && p.failed.is_none() && p.peers.is_subset(&p.snaps)
        });
        if !ready || std::env::var("PVMD_APP_RESUME").is_ok_and(|v| v == "commit") {
            return;
        }
        let Some(mut p) = self.app.part.take() else { return };
        let n = self.app_let_go(&p, out);
        p.released = true;
        Self::app_log(
            format!(
                "op {} epoch {}: {n} tasks run on {} ms after the begin, before the copies are stored",
                p.op,
                p.epoch,
                p.t0.elapsed().as_millis()
            ),
            out,
        );
        self.app.part = Some(p);
    }

    /// Dumps every local task of the cut, writes the held messages and the metadata next to
    /// each image, and starts the copies to other hosts.
    fn app_dump_all(&mut self, out: &mut Vec<Out>) {
        let me = self.host.index;
        let Some(p) = self.app.part.as_ref() else { return };
        let (op, epoch, root) = (p.op, p.epoch, p.root);
        let locals: Vec<u32> = p.local.iter().copied().collect();
        if p.failed.is_some() {
            return self.app_dumps_done(AppDone::Dumped(Box::new(DumpsDone::default_for(op, epoch))), out);
        }
        // The requester of this checkpoint, if it is one of our tasks: its image is waiting
        // for the TM_CKPT answer, which must be among its held messages after a restart.
        let req = self
            .app
            .coord
            .as_ref()
            .filter(|c| c.op == op)
            .and_then(|c| c.requester.clone());
        // What each dump needs, taken on the event loop; the dumps run on a thread.
        let mut jobs = Vec::new();
        let mut missing = None;
        for l in &locals {
            let Some(t) = self.tasks.get(l) else {
                missing = Some(format!("t{l:x} is gone"));
                break;
            };
            let tid = self.app_tid_of(*l);
            let name = image_name(root, epoch, tid);
            let pid = self
                .app
                .parking
                .get(l)
                .and_then(|p| p.1)
                .filter(|p| *p > 0)
                .unwrap_or(t.pid);
            let key = |fd: i32| {
                std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
                    .map_or(String::new(), |l| l.to_string_lossy().into_owned())
            };
            let meta = Meta {
                tid,
                ptid: t.ptid,
                out: (t.outtid, t.outctx, t.outtag),
                trc: (t.trctid, t.trcctx, t.trctag),
                keys: [key(1), key(2)],
                tmp: self.app_tmp_of(*l),
                a_out: t.a_out.clone(),
            };
            let mut held = t.pending.clone();
            let pending = held.len();
            if let Some(rq) = req.as_ref().filter(|rq| rq.tid == tid) {
                held.push(wire::frame_message(
                    rq.tid,
                    Tid::LOCAL_PVMD,
                    rq.tag,
                    rq.ctx,
                    rq.wid,
                    &ints(&[0, epoch]),
                ));
            }
            jobs.push(DumpJob {
                tid,
                name,
                pid,
                meta,
                held,
                pending,
            });
        }
        if let Some(e) = missing {
            let mut d = DumpsDone::default_for(op, epoch);
            d.err = Some(e);
            return self.app_dumps_done(AppDone::Dumped(Box::new(d)), out);
        }
        let tx = self.mig.mv.events();
        std::thread::spawn(move || {
            let d = run_dumps(op, epoch, me, jobs);
            let _ = tx.send(super::mig_move::MigEvent::App(Box::new(AppDone::Dumped(Box::new(d)))));
        });
    }

    /// The result of work done on a thread (hook in `mig_event`).
    pub(super) fn app_done(&mut self, done: AppDone, out: &mut Vec<Out>) {
        match done {
            AppDone::Dumped(_) => self.app_dumps_done(done, out),
            AppDone::Put { op, wid, res } => {
                let Some(p) = self.app.part.as_mut().filter(|p| p.op == op) else {
                    return;
                };
                let Some((k, _)) = p.puts.remove(&wid) else { return };
                match res {
                    Ok(_) => p.copies.push(k),
                    Err(e) => {
                        p.failed.get_or_insert((
                            PvmError::SysErr.code(),
                            format!("copy of t{:x} to host {}: {e}", k.tid.bits(), k.host),
                        ));
                    }
                }
                self.app_part_progress(out);
            }
        }
    }

    /// Every local dump ended: start the copies to other hosts.
    fn app_dumps_done(&mut self, done: AppDone, out: &mut Vec<Out>) {
        let AppDone::Dumped(d) = done else { return };
        let me = self.host.index;
        let Some(p) = self.app.part.as_ref().filter(|p| p.op == d.op && p.epoch == d.epoch) else {
            return; // aborted meanwhile
        };
        let (op, epoch, replicas) = (p.op, p.epoch, p.replicas);
        let (copies, mut err) = (d.copies, d.err);
        // Copies to other hosts: the next `replicas` capable hosts after this one.
        let capable: Vec<u32> = self.app_capable_hosts().into_iter().filter(|h| *h != me).collect();
        let mut targets: Vec<u32> = capable.iter().copied().filter(|h| *h > me).collect();
        targets.extend(capable.iter().copied().filter(|h| *h < me));
        targets.truncate(replicas.max(0) as usize);
        if err.is_none() && !copies.is_empty() && targets.len() < replicas as usize {
            err = Some(format!(
                "{replicas} copies wanted, {} other pvmd-rs hosts can hold them",
                targets.len()
            ));
        }
        Self::app_log(
            format!(
                "op {op} epoch {epoch}: dumped {} tasks in {} ms (longest CRIU freeze {} ms, {} bytes, {} held fragments); copies to {targets:?}",
                copies.len(),
                d.took.as_millis(),
                d.frozen.as_millis(),
                d.bytes,
                d.nheld
            ),
            out,
        );
        let mut puts = Vec::new();
        if err.is_none() {
            for k in &copies {
                for h in &targets {
                    let dir = storage_root().join(&k.name);
                    let size = dir_size(&dir);
                    let wid = self.app_wid();
                    puts.push((
                        wid,
                        Copy {
                            tid: k.tid,
                            host: *h,
                            name: k.name.clone(),
                        },
                        dir,
                    ));
                    let mut w = XdrWriter::new();
                    w.int(REQ)
                        .int(op)
                        .int(epoch)
                        .int(k.tid.0)
                        .int(size.min(i32::MAX as u64) as i32)
                        .string(&k.name);
                    let body = w.into_inner();
                    self.dm_send(*h, DM_IMGPUT, wid, &body, out);
                }
            }
        }
        let Some(p) = self.app.part.as_mut() else { return };
        p.t_dump = d.took;
        p.frozen = d.frozen;
        p.bytes = d.bytes;
        p.copies = copies;
        p.dump_done = true;
        if let Some(e) = err {
            p.failed.get_or_insert((PvmError::SysErr.code(), e));
        }
        for (wid, k, dir) in puts {
            p.puts.insert(wid, (k, dir));
        }
        self.app_part_progress(out);
    }

    /// A storage peer: listen for one image stream (answer `int op; int cc; int port`).
    fn app_imgput(&mut self, from: u32, wid: i32, r: &mut XdrReader<'_>, out: &mut Vec<Out>) {
        let (op, _epoch, tid, _bytes, name) = (
            r.int("op").unwrap_or(0),
            r.int("epoch").unwrap_or(0),
            r.int("tid").unwrap_or(0),
            r.int("bytes").unwrap_or(0),
            r.string("name").unwrap_or_default(),
        );
        let answer = |d: &mut Self, cc: i32, port: i32, out: &mut Vec<Out>| {
            d.dm_send(from, DM_IMGPUT, wid, &ints(&[REP, op, cc, port]), out);
        };
        if !safe_name(&name) {
            Self::app_log(format!("DM_IMGPUT from host {from}: refused name {name:?}"), out);
            return answer(self, PvmError::BadParam.code(), 0, out);
        }
        let Some(addr) = self.net.as_ref().map(|n| *n.own_addr().ip()) else {
            return answer(self, PvmError::SysErr.code(), 0, out);
        };
        let l = match std::net::TcpListener::bind((addr, 0)) {
            Ok(l) => l,
            Err(e) => {
                Self::app_log(format!("DM_IMGPUT: listen on {addr}: {e}"), out);
                return answer(self, PvmError::SysErr.code(), 0, out);
            }
        };
        let port = l.local_addr().map_or(0, |a| i32::from(a.port()));
        let dir = storage_root().join(&name);
        std::thread::spawn(move || {
            let _ = std::fs::remove_dir_all(&dir);
            let Ok(mut s) = pvm_migration::transfer::accept(&l, STREAM_LIMIT) else {
                return;
            };
            let ok = pvm_migration::transfer::recv_dir(&mut std::io::BufReader::new(&mut s), &dir).is_ok();
            // One byte back: the copy is on disk (the sender counts it only then).
            let _ = s.write_all(&[u8::from(ok)]);
        });
        if self.debug & 0x2 != 0 {
            Self::app_log(format!("DM_IMGPUT t{tid:x} from host {from}: port {port}"), out);
        }
        answer(self, 0, port, out);
    }

    /// The storage peer is listening: stream the image (on the event loop; images of small
    /// tasks take milliseconds).
    fn app_imgput_reply(&mut self, from: u32, wid: i32, r: &mut XdrReader<'_>, out: &mut Vec<Out>) {
        let (_op, cc, port) = (
            r.int("op").unwrap_or(0),
            r.int("cc").unwrap_or(-1),
            r.int("port").unwrap_or(0),
        );
        let addr = self.net.as_ref().and_then(|n| n.table.get(from)).map(|h| *h.addr.ip());
        let tx = self.mig.mv.events();
        let Some(p) = self.app.part.as_mut() else { return };
        let op = p.op;
        let Some((k, dir)) = p.puts.get(&wid).cloned() else {
            return;
        };
        match (cc, addr) {
            (0, Some(ip)) if port > 0 => {
                // The stream runs on a thread; the answer comes back as AppDone::Put.
                let to = std::net::SocketAddr::from((ip, port as u16));
                std::thread::spawn(move || {
                    let res = send_image(&dir, to);
                    let _ = tx.send(super::mig_move::MigEvent::App(Box::new(AppDone::Put { op, wid, res })));
                });
            }
            _ => {
                p.puts.remove(&wid);
                p.failed.get_or_insert((
                    PvmError::SysErr.code(),
                    format!("host {from} refused the copy of t{:x} ({cc})", k.tid.bits()),
                ));
                self.app_part_progress(out);
            }
        }
    }

    /// DM_RESTORE `int op; int epoch; int tid; int image host; string name; int cookie`:
    /// restores a task from the copy this host holds, as the same tid; it runs (gets its
    /// ticket) at the resume phase.
    fn app_restore(&mut self, from: u32, wid: i32, r: &mut XdrReader<'_>, out: &mut Vec<Out>) {
        let (op, epoch, tid, _host, name) = (
            r.int("op").unwrap_or(0),
            r.int("epoch").unwrap_or(0),
            Tid(r.int("tid").unwrap_or(0)),
            r.int("host").unwrap_or(0),
            r.string("name").unwrap_or_default(),
        );
        let cc = match self.app_restore_one(tid, epoch, &name, out) {
            Ok(pid) => {
                Self::app_log(
                    format!("op {op}: t{:x} restored from {name} (helper pid {pid})", tid.bits()),
                    out,
                );
                pid
            }
            Err((e, why)) => {
                Self::app_log(format!("op {op}: restore of t{:x} failed: {why}", tid.bits()), out);
                e.code()
            }
        };
        let body = ints(&[REP, op, cc.min(0), cc.max(0)]);
        self.app_send(from, DM_RESTORE, wid, &body, out);
    }

    fn app_restore_one(
        &mut self,
        tid: Tid,
        epoch: i32,
        name: &str,
        out: &mut Vec<Out>,
    ) -> Result<i32, (PvmError, String)> {
        if !safe_name(name) {
            return Err((PvmError::BadParam, format!("bad image name {name:?}")));
        }
        let dir = storage_root().join(name);
        let meta = std::fs::read_to_string(dir.join("pvmmeta"))
            .ok()
            .and_then(|s| Meta::parse(&s))
            .ok_or((PvmError::NotFound, format!("no image metadata in {}", dir.display())))?;
        if meta.tid != tid {
            return Err((
                PvmError::BadParam,
                format!("{} holds t{:x}", dir.display(), meta.tid.bits()),
            ));
        }
        if self.has_task(tid) {
            return Err((PvmError::Exists, format!("t{:x} is still here", tid.bits())));
        }
        let helper = super::migrate::restore_helper().ok_or((
            PvmError::NotImpl,
            "pvm-migrate not found (set PVMD_MIGRATE_BIN)".to_string(),
        ))?;
        let argv = vec![
            helper.clone(),
            "restore-task".to_string(),
            dir.to_string_lossy().into_owned(),
            meta.keys[0].clone(),
            meta.keys[1].clone(),
        ];
        // A ticket its killed instance never read (killed between a commit's `continue`
        // ticket and its poll: kill -9 of its host right after a commit, or a rollback) would
        // be read at once by the restored copy, which waits for a ticket from the same
        // image: it would take the old cookie and socket and never reconnect, and the
        // `restored` ticket written later would be left behind.
        let stale = resume_ticket(&meta.tmp, tid);
        if std::fs::remove_file(&stale).is_ok() {
            Self::app_log(
                format!("t{:x}: stale ticket {} removed", tid.bits(), stale.display()),
                out,
            );
        }
        let cookie = self.next_cookie();
        let pid = self
            .launcher
            .launch(tid, &helper, &argv, &[])
            .map_err(|e| (PvmError::SysErr, format!("restore helper: {e}")))?;
        // Registered under its own tid, whose host part may name another (dead) host
        // (mig_move.rs), with the messages held for it at the cut.
        let features = super::migrate::feat::PARK;
        let key = self.adopt_task(
            tid,
            super::mig_move::Adopt {
                ptid: meta.ptid,
                a_out: meta.a_out.clone(),
                out: meta.out,
                trc: meta.trc,
                pid,
                cookie,
                features,
            },
        );
        if self.app.task_tmp.len() < MAX_MEMBERS {
            self.app.task_tmp.insert(key, meta.tmp.clone());
        }
        let held = read_held(&dir.join("pvmheld"));
        if let Some(t) = self.tasks.get_mut(&key) {
            t.pending_bytes = held.iter().map(Vec::len).sum();
            t.pending = held;
        }
        self.app.restored.push(Restored {
            tid,
            cookie,
            epoch,
            ticket: resume_ticket(&meta.tmp, tid),
            out: meta.out,
            ptid: meta.ptid,
        });
        Ok(pid)
    }
}

/// Work done on a thread for an application checkpoint, back on the event loop through
/// mig_move.rs's `MigEvent::App`.
#[derive(Debug)]
pub enum AppDone {
    /// Every local dump of the cut ended.
    Dumped(Box<DumpsDone>),
    /// One image stream to a storage peer ended (`wid` of its DM_IMGPUT).
    Put {
        op: i32,
        wid: i32,
        res: Result<u64, String>,
    },
}

/// What the dumps of one pvmd's tasks gave.
#[derive(Debug)]
pub struct DumpsDone {
    op: i32,
    epoch: i32,
    copies: Vec<Copy>,
    err: Option<String>,
    took: Duration,
    frozen: Duration,
    bytes: u64,
    nheld: usize,
}

impl DumpsDone {
    fn default_for(op: i32, epoch: i32) -> DumpsDone {
        DumpsDone {
            op,
            epoch,
            copies: Vec::new(),
            err: None,
            took: Duration::ZERO,
            frozen: Duration::ZERO,
            bytes: 0,
            nheld: 0,
        }
    }
}

/// One task to dump, with what goes next to its image.
struct DumpJob {
    tid: Tid,
    name: String,
    pid: i32,
    meta: Meta,
    held: Vec<Vec<u8>>,
    /// Of `held`, the fragments the pvmd held (the rest is the requester's answer).
    pending: usize,
}

/// Dumps the tasks (`criu dump -R`, all at once: the freeze of a host with several tasks is
/// its slowest dump, not their sum) and writes `pvmmeta` and `pvmheld` next to each image (on
/// a thread: CRIU takes tens of ms per task).
fn run_dumps(op: i32, epoch: i32, me: u32, jobs: Vec<DumpJob>) -> DumpsDone {
    let mut d = DumpsDone::default_for(op, epoch);
    let host = pvm_migration::Host {
        netns: None,
        addr: std::net::Ipv4Addr::LOCALHOST,
    };
    let t0 = Instant::now();
    let n = jobs.len();
    let results: Vec<(DumpJob, Result<pvm_migration::Dumped, String>)> = std::thread::scope(|sc| {
        let handles: Vec<_> = jobs
            .into_iter()
            .map(|j| {
                let host = &host;
                sc.spawn(move || {
                    let dir = storage_root().join(&j.name);
                    let _ = std::fs::remove_dir_all(&dir);
                    let res = super::migrate::criu_handle()
                        .and_then(|c| c.dump(j.pid as u32, host, &dir, true, STREAM_LIMIT))
                        .map_err(|e| e.to_string());
                    (j, res)
                })
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    if results.len() != n {
        d.err = Some("a dump thread panicked".into());
    }
    for (j, res) in results {
        d.nheld += j.pending;
        let dir = storage_root().join(&j.name);
        match res {
            Ok(x) => {
                d.frozen = d.frozen.max(x.frozen.unwrap_or_default());
                d.bytes += x.bytes;
                if let Err(e) = std::fs::write(dir.join("pvmmeta"), j.meta.emit())
                    .and_then(|()| write_held(&dir.join("pvmheld"), &j.held))
                {
                    d.err.get_or_insert(format!("{}: {e}", dir.display()));
                    continue;
                }
                d.copies.push(Copy {
                    tid: j.tid,
                    host: me,
                    name: j.name,
                });
            }
            Err(e) => {
                d.err.get_or_insert(format!("dump of t{:x}: {e}", j.tid.bits()));
            }
        }
    }
    d.took = t0.elapsed();
    d
}

/// The application of `root`: it and every task whose parents lead to it.
fn app_members(root: Tid, seen: &[(Tid, Tid, u32)]) -> Vec<(Tid, u32)> {
    let Some(r) = seen.iter().find(|s| s.0 == root) else {
        return Vec::new();
    };
    let mut m = vec![(r.0, r.2)];
    let mut i = 0;
    while i < m.len() && m.len() < MAX_MEMBERS {
        let p = m[i].0;
        for s in seen {
            if s.1 == p && s.0 != p && !m.iter().any(|x| x.0 == s.0) {
                m.push((s.0, s.2));
            }
        }
        i += 1;
    }
    m
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| rd.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
        .unwrap_or(0)
}

/// Streams an image dir to a storage peer and waits for its "on disk" byte.
fn send_image(dir: &Path, to: std::net::SocketAddr) -> Result<u64, String> {
    let mut s =
        std::net::TcpStream::connect_timeout(&to, Duration::from_secs(10)).map_err(|e| format!("connect {to}: {e}"))?;
    s.set_write_timeout(Some(STREAM_LIMIT)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(STREAM_LIMIT)).map_err(|e| e.to_string())?;
    let n = {
        let mut w = std::io::BufWriter::with_capacity(1 << 20, &mut s);
        let n = pvm_migration::transfer::send_dir(dir, &mut w).map_err(|e| e.to_string())?;
        w.flush().map_err(|e| e.to_string())?;
        n
    };
    let mut ack = [0u8];
    s.read_exact(&mut ack).map_err(|e| format!("no acknowledgement: {e}"))?;
    if ack[0] != 1 {
        return Err("the peer could not store the image".into());
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ckpt_request_and_answer_round_trip() {
        let q = CkptReq {
            op: 3,
            epoch: 2,
            phase: phase::BEGIN,
            root: Tid(0x40001),
            replicas: 1,
            tids: vec![(Tid(0x40001), 1), (Tid(0x80002), 2)],
            hosts: vec![1, 2],
        };
        let b = q.emit();
        let mut r = XdrReader::new(&b);
        assert_eq!(r.int("kind").unwrap(), REQ);
        assert_eq!(CkptReq::parse(&mut r), Some(q));
        let p = CkptRep {
            op: 3,
            epoch: 2,
            phase: phase::BEGIN,
            cc: 0,
            items: vec![(Tid(0x80002), 3, "t40001/e2/t80002".into())],
        };
        let b = p.emit();
        let mut r = XdrReader::new(&b);
        assert_eq!(r.int("kind").unwrap(), REP);
        assert_eq!(CkptRep::parse(&mut r), Some(p));
        // Truncated bodies are refused, never a panic (the reader forgives a missing final
        // string padding: the last 3 bytes).
        for n in 0..b.len() - 3 {
            let mut r = XdrReader::new(&b[..n]);
            let _ = r.int("kind");
            assert!(CkptRep::parse(&mut r).is_none(), "{n}");
        }
    }

    #[test]
    fn huge_counts_do_not_allocate() {
        let b = ints(&[1, 2, 3, 1, 0x40001, 1, 0x7fff_ffff]);
        let mut r = XdrReader::new(&b);
        assert!(CkptReq::parse(&mut r).is_none());
    }

    #[test]
    fn names_from_peers_are_plain_relative_paths() {
        assert!(safe_name("t40001/e2/t80002"));
        for bad in ["", "/etc/x", "a/../b", "a//b", "..", "a/./b", "a b"] {
            assert!(!safe_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn meta_round_trip_and_members() {
        let m = Meta {
            tid: Tid(0x80002),
            ptid: Tid(0x40001),
            out: (0x40001, 5, 7),
            trc: (0, 0, 0),
            keys: ["pipe:[12]".into(), "pipe:[13]".into()],
            tmp: "/tmp/x".into(),
            a_out: "/bin/job with space".into(),
        };
        assert_eq!(Meta::parse(&m.emit()), Some(m));
        let seen = vec![
            (Tid(0x40001), Tid(0), 1),
            (Tid(0x80002), Tid(0x40001), 2),
            (Tid(0xc0003), Tid(0x80002), 3),
            (Tid(0x40009), Tid(0), 1),
        ];
        let m = app_members(Tid(0x40001), &seen);
        assert_eq!(m, vec![(Tid(0x40001), 1), (Tid(0x80002), 2), (Tid(0xc0003), 3)]);
        assert!(app_members(Tid(0x123), &seen).is_empty());
    }

    #[test]
    fn held_file_round_trip_and_truncation() {
        let dir = std::env::temp_dir().join(format!("appckpt-held-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("held");
        write_held(&p, &[vec![1, 2, 3], vec![], vec![9; 100]]).unwrap();
        assert_eq!(read_held(&p), vec![vec![1, 2, 3], vec![], vec![9; 100]]);
        let mut b = std::fs::read(&p).unwrap();
        b.truncate(b.len() - 1);
        std::fs::write(&p, b).unwrap();
        assert_eq!(read_held(&p).len(), 2, "a cut record is dropped");
        let _ = std::fs::remove_dir_all(&dir);
    }

    // ---- a daemon driven without sockets ----------------------------------------------------

    use super::super::{AuthFiles, Daemon, HostConfig};
    use pvm_proto::codes::{Tm, ENC_XDR, SYSCTX_TM};
    use pvm_proto::frag::{FragFlags, StreamFragHeader};
    use pvm_proto::mesg::MsgHeader;

    struct Auth;

    impl AuthFiles for Auth {
        fn write_task_auth(&mut self, _: &str) -> std::io::Result<()> {
            Ok(())
        }
        fn create_pvmd_auth(&mut self) -> std::io::Result<String> {
            Ok("/tmp/pvmtmp000042.1".into())
        }
        fn pvmd_auth_written(&mut self, _: &str) -> std::io::Result<bool> {
            Ok(true)
        }
        fn remove(&mut self, _: &str) {}
    }

    fn send(d: &mut Daemon<Auth>, conn: super::super::ConnId, tag: i32, wid: i32, body: &[u8]) -> Vec<Out> {
        let mut p = MsgHeader {
            enc: ENC_XDR,
            tag,
            ctx: SYSCTX_TM,
            wid,
            crc: 0,
        }
        .to_bytes()
        .to_vec();
        p.extend_from_slice(body);
        let fh = StreamFragHeader {
            dst: Tid::LOCAL_PVMD,
            src: Tid::UNCONNECTED,
            len: p.len() as u32,
            flags: FragFlags::SOM | FragFlags::EOM,
        };
        d.fragment(conn, fh, &p, std::time::UNIX_EPOCH)
    }

    /// The `int cc; int value` of the reply with `tag` among `out`.
    fn answer(out: &[Out], tag: i32) -> Option<(i32, i32)> {
        out.iter().find_map(|o| match o {
            Out::Send(_, b) if b.len() >= 48 => {
                let mh = MsgHeader::parse(&b[16..]).ok()?;
                let mut r = XdrReader::new(&b[48..]);
                (mh.tag == tag).then(|| (r.int("cc").unwrap_or(0), r.int("v").unwrap_or(0)))
            }
            _ => None,
        })
    }

    fn connected() -> (Daemon<Auth>, Tid) {
        let mut d = Daemon::new(HostConfig::master("vm", "LINUX64", "7f000001:801e"), Auth, 0);
        d.accept(1, Some(4242));
        send(&mut d, 1, Tm::Connect.code(), 1, &ints_str(1318, "/tmp/pvmtmp000100.0"));
        let out = send(&mut d, 1, Tm::Conn2.code(), 2, &ints(&[4242, 0]));
        let tid = out
            .iter()
            .find_map(|o| match o {
                Out::Send(_, b) => StreamFragHeader::parse(b, u32::MAX).ok().map(|h| h.dst),
                _ => None,
            })
            .expect("TM_CONN2 answered");
        (d, tid)
    }

    fn ints_str(i: i32, s: &str) -> Vec<u8> {
        let mut w = XdrWriter::new();
        w.int(i).string(s);
        w.into_inner()
    }

    #[test]
    fn requests_that_cannot_work_are_answered_at_once() {
        let (mut d, me) = connected();
        let ckpt = super::super::migrate::TM_CKPT;
        let restart = super::super::migrate::TM_RESTART;
        // No copies wanted: an application checkpoint needs at least one other host.
        let out = send(&mut d, 1, ckpt, 5, &ints(&[0, 1, me.0, 0, flags::APP]));
        assert_eq!(answer(&out, ckpt), Some((PvmError::BadParam.code(), 0)));
        // A lone daemon has no other host for the copy, and the task was not spawned by a pvmd
        // (or CRIU is missing here): refused, not left waiting.
        let out = send(&mut d, 1, ckpt, 6, &ints(&[0, 1, me.0, 1, flags::APP]));
        let (cc, _) = answer(&out, ckpt).expect("answered at once");
        assert!(cc < 0, "{cc}");
        assert!(d.app.coord.is_none() && d.app.part.is_none() && d.app.parking.is_empty());
        assert!(d.app.apps.is_empty(), "no record left for a root that never committed");
        // Restart of an application nobody checkpointed here.
        let out = send(&mut d, 1, restart, 7, &ints(&[-1, me.0, 1]));
        assert_eq!(answer(&out, restart), Some((PvmError::NotFound.code(), 0)));
    }

    #[test]
    fn arbitrary_dm_bodies_never_panic() {
        let (mut d, _) = connected();
        let mut x = 0x1234_5678u64;
        for n in 0..2000 {
            let len = n % 97;
            let mut b = Vec::with_capacity(len);
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                b.push(x as u8);
            }
            // Half of them start like a real body.
            if n % 2 == 0 && b.len() >= 8 {
                b[..4].copy_from_slice(&(1 + (n as i32 % 2)).to_be_bytes());
            }
            let tag = DM_APP_FIRST + (n as i32 % 4);
            let mut out = Vec::new();
            d.app_dm(2, tag, n as i32, &b, &mut out);
        }
        assert!(d.app.coord.is_none());
    }
}
