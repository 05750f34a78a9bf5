//! The daemon's decisions, with no sockets: fragments come in with the connection they arrived
//! on, and bytes to write, connections to close and log lines come out.
//!
//! Only the authentication files touch the file system; that goes through [`AuthFiles`] so tests
//! can replace it.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::time::{SystemTime, UNIX_EPOCH};

use pvm_proto::codes::{
    DbOp, MboxFlags, PvmError, SpawnFlags, Tag, Tm, DSIG_X86_64, MSGHDR_LEN, TDPROTOCOL, UDPMAXLEN,
};
use pvm_proto::frag::{FragFlags, StreamFragHeader};
use pvm_proto::mesg::MsgHeader;
use pvm_proto::Tid;

use crate::mbox::{self, Mailbox};
use crate::notify::{Notice, Notifies, World as NotifyWorld};
use crate::registry::Registry;
use crate::wire;

// ---- multi-host (h-multi): pvmd <-> pvmd in child modules ----
mod backlog; // fragments waiting for room in a peer's queue; senders paused meanwhile
pub mod master;
pub mod netd;
mod reset; // mailbox side of `reset` across hosts (DM_RESET)
pub mod stream; // pvmd-rs <-> pvmd-rs stream transport (DM_XCAPS v3, DM_XSTREAM)
mod xcaps;
// Migration extensions (docs/migration.md).
pub mod appckpt;
pub mod mig_move;
pub mod migrate;
mod rm;
mod tev;
// ---- end multi-host ----

/// Identifies one accepted stream connection.
pub type ConnId = u64;

/// Task flag bits reported by TM_TASK (legacy task.h): connected.
pub const TF_CONN: i32 = 4;

/// Largest message a task may send to the daemon (all fragments together). Most requests are a
/// few hundred bytes; mailbox PUTs carry whole user messages, so the cap is generous.
pub const MAX_REQUEST: usize = 16 << 20;

/// First PVMEPID cookie: above the largest Linux pid (2^22), so never a pid.
const COOKIE_BASE: i32 = 0x4000_0000;

/// The legacy default debugger script, relative to PVM_ROOT.
pub const DEFAULT_DEBUGGER: &str = "$PVM_ROOT/lib/debugger";

/// Largest fragment accepted before TM_CONN2 completes (the legacy daemon's buffer size).
pub const MAX_FRAG_UNCONNECTED: u32 = (UDPMAXLEN - pvm_proto::frag::HEADER_LEN) as u32;
/// Largest fragment accepted from a connected task. PvmDataInPlace sends a whole user buffer
/// as one fragment (a 16 MB message is one 16 MB fragment), so this is large; the reader only
/// allocates as the bytes arrive.
pub const MAX_FRAG_CONNECTED: u32 = 256 << 20;

/// File-system side of the connect handshake (wire.md §4.5).
pub trait AuthFiles {
    /// Opens the task's t-auth file write-only (it must exist) and writes one byte.
    fn write_task_auth(&mut self, path: &str) -> io::Result<()>;
    /// Creates a fresh, empty 0600 d-auth file and returns its path.
    fn create_pvmd_auth(&mut self) -> io::Result<String>;
    /// True if the task wrote at least one byte into our d-auth file.
    fn pvmd_auth_written(&mut self, path: &str) -> io::Result<bool>;
    /// Removes a d-auth file (after success, failure or disconnect).
    fn remove(&mut self, path: &str);
}

/// Static facts about this host.
#[derive(Debug, Clone)]
pub struct HostConfig {
    pub name: String,
    pub arch: String,
    pub speed: i32,
    pub dsig: i32,
    /// Host index (1 for a master).
    pub index: u32,
    /// Our UDP address as `"%08x:%04x"`.
    pub ip_hex: String,
}

impl HostConfig {
    pub fn master(name: &str, arch: &str, ip_hex: &str) -> Self {
        HostConfig {
            name: name.to_string(),
            arch: arch.to_string(),
            speed: 1000,
            dsig: DSIG_X86_64,
            index: 1,
            ip_hex: ip_hex.to_string(),
        }
    }

    fn hostpart(&self) -> u32 {
        self.index << Tid::HOST_SHIFT
    }

    pub fn pvmd_tid(&self) -> Tid {
        Tid::pvmd(self.index)
    }
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    /// Write these bytes to the connection.
    Send(ConnId, Vec<u8>),
    /// Close the connection after what was queued for it is written.
    Close(ConnId),
    /// Allow fragments up to this length on the connection from now on.
    FragLimit(ConnId, u32),
    /// A line for the log (without date/prefix).
    Log(String),
    /// Stop the daemon (TM_HALT): clean up and exit 0.
    Halt,
    /// Send a signal to a local task's process (pid confirmed by the kernel).
    Signal(i32, i32),
    /// Stop (true) or resume (false) reading the connection: its task has too much waiting
    /// for another host (backlog.rs).
    Gate(ConnId, bool),
    /// The connection's process has exited: read what it wrote before it went (never paused
    /// again; nothing written after now is taken, even from a child that inherited the
    /// socket), then end the connection as at its end of stream.
    Drain(ConnId),
}

#[derive(Debug)]
enum Auth {
    /// Accepted, nothing received yet.
    Anon,
    /// TM_CONNECT answered; the task must write this d-auth file and send TM_CONN2.
    Pending(String),
    /// TM_CONN2 done.
    Connected(Tid),
    /// Being closed; ignore further input.
    Closing,
}

#[derive(Debug)]
struct Conn {
    auth: Auth,
    /// Pid of the peer process from SO_PEERCRED, when the OS tells it.
    peer_pid: Option<i32>,
    /// Message to the pvmd being reassembled: header and body so far.
    partial: Option<(MsgHeader, Vec<u8>)>,
}

/// A connected local task.
#[derive(Debug, Clone)]
struct Task {
    /// The task's connection; None before a spawned task connects or after it disconnected.
    conn: Option<ConnId>,
    /// Started by this daemon (TF_FORKD): lives until its process exits, not its connection.
    forked: bool,
    /// Messages for a spawned task that has not connected yet (the legacy queues them too).
    pending: Vec<Vec<u8>>,
    pending_bytes: usize,
    /// Output not yet logged because its line is not complete.
    out_buf: Vec<u8>,
    ptid: Tid,
    pid: i32,
    /// The PVMEPID value a spawned task presents in TM_CONN2 (0 for tasks nobody spawned).
    /// Drawn above any pid, so a task connecting on its own (cookie = its pid) never matches.
    cookie: i32,
    /// The pid was confirmed by the kernel (SO_PEERCRED), so signalling it hits the task.
    pid_verified: bool,
    a_out: String,
    outtid: i32,
    outctx: i32,
    outtag: i32,
    trctid: i32,
    trcctx: i32,
    trctag: i32,
    contexts: Vec<i32>,
    /// One-shot multicast set by TM_MCA: the multicast tid and the local destinations.
    mca: Option<(Tid, Vec<Tid>)>,
}

/// Most bytes queued for a spawned task that has not connected yet. The same bound as a
/// connected task's write queue (server::MAX_QUEUED): a parent that sends a 16 MB message right
/// after pvm_spawn, before the child has connected (common under load), needs a little more
/// than 16 MB held (headers, and the small fragment the legacy library sends first); with a
/// bound of exactly 16 MB that message was dropped and both tasks waited forever.
pub const MAX_PENDING_BYTES: usize = 64 << 20;

/// Task flag bit: the task's process is a child of the daemon.
pub const TF_FORKD: i32 = 2;

/// Longest output line logged in one piece.
pub const MAX_OUTPUT_LINE: usize = 4000;

/// Task output codes: end of file, spawned (to the spawner's collector), new task.
pub const TO_EOF: i32 = 0;
pub const TO_SPAWN: i32 = -1;
pub const TO_NEW: i32 = -2;

/// Most tasks one TM_SPAWN may ask for.
pub const MAX_SPAWN: i32 = 4096;

/// Starting processes for TM_SPAWN; the shell implements it, tests fake it.
pub trait Launcher {
    /// The program to run for `file`: itself if it contains `/`, else the first executable
    /// regular file of that name on the exec path.
    fn find(&self, file: &str) -> Option<String>;
    /// Starts `path` with `argv` (argv[0] included) and extra `env` entries (`NAME=value`),
    /// PVMEPID set to its own pid; returns the pid. Its output and exit come back through
    /// [`Daemon::task_output`] and [`Daemon::task_exited`].
    fn launch(&mut self, tid: Tid, path: &str, argv: &[String], env: &[String]) -> io::Result<i32>;
    /// A new exec path (DM_SLCONF on a slave).
    fn set_epath(&mut self, _epath: Vec<std::path::PathBuf>) {}
}

/// The launcher of a daemon that cannot start programs.
pub struct NoLauncher;

impl Launcher for NoLauncher {
    fn find(&self, _file: &str) -> Option<String> {
        None
    }
    fn launch(&mut self, _: Tid, _: &str, _: &[String], _: &[String]) -> io::Result<i32> {
        Err(io::Error::new(io::ErrorKind::Unsupported, "no launcher"))
    }
}

/// Most deferred mailbox lookups kept at once.
pub const MAX_DB_WAITERS: usize = 4096;

/// A TM_DB GET with `PvmMboxWaitForInfo` that found nothing yet.
#[derive(Debug)]
struct DbWaiter {
    conn: ConnId,
    tid: Tid,
    hdr: MsgHeader,
    class: String,
    index: i32,
    flags: i32,
}

/// The local daemon state: connections, tasks, tid and context counters.
pub struct Daemon<A: AuthFiles> {
    host: HostConfig,
    auth: A,
    conns: HashMap<ConnId, Conn>,
    tasks: BTreeMap<u32, Task>,
    last_local: u32,
    /// Last PVMEPID cookie handed out.
    last_cookie: i32,
    last_ctx: u32,
    debug: u32,
    /// Resource manager, tasker, hoster and tracer registrations.
    reg: Registry,
    /// Program that starts PvmTaskDebug spawns (gets the task's path and arguments).
    debugger: String,
    mbox: Mailbox,
    db_waiters: Vec<DbWaiter>,
    notifies: Notifies,
    launcher: Box<dyn Launcher>,
    /// Multi-host: the other pvmds (None for a lone master).
    net: Option<Box<netd::Net>>,
    /// Migration extensions (daemon/migrate.rs).
    mig: migrate::MigState,
    /// Resource-manager protocol and RM failure handling (daemon/rm.rs).
    rm: rm::RmState,
    /// Trace events of the daemon itself (daemon/tev.rs).
    tev: tev::TevState,
    /// Whole-application checkpoint and restart (daemon/appckpt.rs).
    app: appckpt::AppState,
}

/// What the notify table needs to know about this host.
struct Known<'a> {
    tasks: &'a BTreeMap<u32, Task>,
    index: u32,
    /// mig_move.rs: a tid that moved away still exists (its exit is announced later).
    mig: &'a migrate::MigState,
}

impl NotifyWorld for Known<'_> {
    fn task_exists(&self, tid: Tid) -> bool {
        tid.is_task() && (self.tasks.contains_key(&task_key(self.index, tid)) || self.mig.route_of(tid).is_some())
    }
    fn host_exists(&self, tid: Tid) -> bool {
        tid.host() == self.index
    }
}

/// The key of a task in [`Daemon::tasks`]: the local part of a tid with this host's bits (or
/// host 0), the whole tid of a task adopted from another host by migration (mig_move.rs). A
/// whole task tid has host bits, so it is above [`Tid::LOCAL_MASK`] and never equals a local
/// part: both kinds share one map without clashing.
pub(crate) fn task_key(index: u32, tid: Tid) -> u32 {
    if tid.is_on_host(index) {
        tid.local()
    } else {
        tid.bits()
    }
}

/// The tid of the task stored under `key` (inverse of [`task_key`]).
pub(crate) fn key_tid(index: u32, key: u32) -> Tid {
    if key <= Tid::LOCAL_MASK {
        Tid::task(index, key)
    } else {
        Tid::from_u32(key)
    }
}

/// A parsed request, handed to one handler.
struct Request<'a> {
    conn: ConnId,
    src: Tid,
    hdr: MsgHeader,
    body: &'a [u8],
}

impl<A: AuthFiles> Daemon<A> {
    pub fn new(host: HostConfig, auth: A, debug: u32) -> Self {
        Daemon {
            host,
            auth,
            conns: HashMap::new(),
            tasks: BTreeMap::new(),
            last_local: 0,
            last_cookie: 0,
            last_ctx: 0,
            debug,
            reg: Registry::default(),
            debugger: DEFAULT_DEBUGGER.to_string(),
            mbox: Mailbox::default(),
            db_waiters: Vec::new(),
            notifies: Notifies::default(),
            launcher: Box::new(NoLauncher),
            net: None,
            mig: migrate::MigState::default(),
            rm: rm::RmState::default(),
            tev: tev::TevState::default(),
            app: appckpt::AppState::default(),
        }
    }

    /// The debugger for PvmTaskDebug spawns (`bx=`, else `PVM_DEBUGGER`, else the default).
    pub fn set_debugger(&mut self, path: String) {
        self.debugger = path;
    }

    pub fn set_launcher(&mut self, l: Box<dyn Launcher>) {
        self.launcher = l;
    }

    pub fn host(&self) -> &HostConfig {
        &self.host
    }

    /// Number of connected tasks.
    pub fn ntasks(&self) -> usize {
        self.tasks.len()
    }

    /// The task enrolled on a connection, with the pid the kernel gives for its peer.
    pub fn conn_task(&self, conn: ConnId) -> Option<(Tid, Option<i32>)> {
        let c = self.conns.get(&conn)?;
        match c.auth {
            Auth::Connected(t) => Some((t, c.peer_pid)),
            _ => None,
        }
    }

    /// The library features the task on a connection announced (TM_XCAPS), 0 if none.
    pub fn conn_task_features(&self, conn: ConnId) -> u32 {
        self.conn_task(conn)
            .and_then(|(t, _)| self.mig.task_features(t.local()))
            .unwrap_or(0)
    }

    pub fn accept(&mut self, conn: ConnId, peer_pid: Option<i32>) {
        self.conns.insert(
            conn,
            Conn {
                auth: Auth::Anon,
                peer_pid,
                partial: None,
            },
        );
    }

    /// The connection ended (EOF, error, or after we closed it): forget the task.
    pub fn closed(&mut self, conn: ConnId) -> Vec<Out> {
        let mut out = Vec::new();
        if let Some(c) = self.conns.remove(&conn) {
            match c.auth {
                Auth::Pending(path) => self.auth.remove(&path),
                Auth::Connected(tid) => {
                    self.disconnected(conn, tid, &mut out);
                    if self.debug & 0x4 != 0 {
                        out.push(Out::Log(format!("task_free() t{:x}", tid.bits())));
                    }
                }
                Auth::Anon | Auth::Closing => {}
            }
        }
        out
    }

    /// Pids of the local tasks to SIGTERM when the daemon stops, as the legacy daemon does. Only
    /// pids the kernel confirmed: a task's own claim is not enough to have another process killed.
    /// How many tasks this pvmd serves (metrics gauge; O(1)).
    pub fn task_count(&self) -> usize {
        self.tasks.len()
    }

    pub fn task_pids(&self) -> Vec<i32> {
        self.tasks
            .values()
            .filter(|t| t.pid_verified && t.pid > 0)
            .map(|t| t.pid)
            .collect()
    }

    /// Removes every pending d-auth file (shutdown).
    pub fn cleanup(&mut self) {
        let pending: Vec<String> = self
            .conns
            .values()
            .filter_map(|c| match &c.auth {
                Auth::Pending(p) => Some(p.clone()),
                _ => None,
            })
            .collect();
        for p in pending {
            self.auth.remove(&p);
        }
    }

    /// How log lines name a connection: its task id once it has one.
    pub fn conn_name(&self, conn: ConnId) -> String {
        match self.conn_tid(conn) {
            Some(t) => format!("t{:x}", t.bits()),
            None => format!("unconnected task (connection {conn})"),
        }
    }

    /// The key of `tid` in `tasks` (see [`task_key`]).
    fn key(&self, tid: Tid) -> u32 {
        task_key(self.host.index, tid)
    }

    /// Whether `tid` is a task of this host (its own or adopted by migration).
    pub(crate) fn has_task(&self, tid: Tid) -> bool {
        tid.is_task() && self.tasks.contains_key(&self.key(tid))
    }

    fn conn_tid(&self, conn: ConnId) -> Option<Tid> {
        match self.conns.get(&conn)?.auth {
            Auth::Connected(t) => Some(t),
            _ => None,
        }
    }

    fn close(&mut self, conn: ConnId, out: &mut Vec<Out>) {
        if let Some(c) = self.conns.get_mut(&conn) {
            if let Auth::Pending(p) = &c.auth {
                self.auth.remove(p);
            }
            let gone = match c.auth {
                Auth::Connected(t) => Some(t),
                _ => None,
            };
            c.auth = Auth::Closing;
            c.partial = None;
            if let Some(t) = gone {
                self.disconnected(conn, t, out);
            }
        }
        out.push(Out::Close(conn));
    }

    /// A task's connection ended: a task we spawned lives on until its process exits; any
    /// other task is gone.
    fn disconnected(&mut self, conn: ConnId, tid: Tid, out: &mut Vec<Out>) {
        self.db_waiters.retain(|w| w.conn != conn);
        let key = self.key(tid);
        match self.tasks.get_mut(&key) {
            Some(t) if t.forked => t.conn = None,
            _ => self.task_gone(tid, out),
        }
        self.mig_disconnected(tid, out); // migrate.rs hook: a parked task
    }

    /// Forgets a task and tells whoever asked to know (task_cleanup in the legacy daemon).
    fn task_gone(&mut self, tid: Tid, out: &mut Vec<Out>) {
        self.rm_task_gone(tid, out); // rm.rs hook
        self.mig_task_gone(tid, out); // migrate.rs / mig_move.rs hook
        let key = self.key(tid);
        if let Some(t) = self.tasks.remove(&key) {
            if let Some(c) = t.conn {
                self.db_waiters.retain(|w| w.conn != c);
            }
            let dest = tev::Dest {
                tid: t.trctid,
                ctx: t.trcctx,
                tag: t.trctag,
            };
            self.tev_send(dest, tev::Event::EndTask { tid: tid.0, status: 0 }, out);
            // tev.rs hook
        }
        self.mbox.tidy(tid.0);
        for l in self.reg.task_exited(tid) {
            out.push(Out::Log(l));
        }
        for n in self.notifies.task_exited(tid) {
            self.send_notice(n, out);
        }
        self.net_task_gone(tid, out); // multi-host hook
    }

    fn send_notice(&mut self, n: Notice, out: &mut Vec<Out>) {
        let body = wire::int_body(n.about);
        self.send_to_task(n.to, n.tag, n.ctx, n.wid, &body, out);
    }

    /// A message from this daemon to a local task (notifications, output records).
    fn send_to_task(&mut self, to: Tid, tag: i32, ctx: i32, wid: i32, body: &[u8], out: &mut Vec<Out>) {
        if self.has_task(to) && !to.is_on_host(self.host.index) {
            // mig_move.rs: a task adopted from another host.
            let bytes = wire::frame_message(to, Tid::LOCAL_PVMD, tag, ctx, wid, body);
            let key = self.key(to);
            self.deliver(key, bytes, out);
            return;
        }
        let moved = !self.has_task(to) && self.mig.route_of(to).is_some(); // mig_move.rs
        if to.is_task() && (moved || to.host() != 0 && !to.is_on_host(self.host.index)) {
            return self.net_send_to_task(to, tag, ctx, wid, body, out); // multi-host hook
        }
        if !to.is_task() || !to.is_on_host(self.host.index) {
            return;
        }
        let to = Tid::task(self.host.index, to.local());
        let bytes = wire::frame_message(to, Tid::LOCAL_PVMD, tag, ctx, wid, body);
        self.deliver(to.local(), bytes, out);
    }

    /// One whole fragment from a connection.
    pub fn fragment(&mut self, conn: ConnId, fh: StreamFragHeader, payload: &[u8], now: SystemTime) -> Vec<Out> {
        self.fragment_in(conn, fh, stream::Payload::Borrowed(payload), now)
    }

    /// [`Self::fragment`] with a payload the shell gives away: a fragment for a task of another
    /// host then goes on the stream transport without being copied (stream.rs `Chunk`).
    pub fn fragment_owned(
        &mut self,
        conn: ConnId,
        fh: StreamFragHeader,
        payload: Vec<u8>,
        now: SystemTime,
    ) -> Vec<Out> {
        self.fragment_in(conn, fh, stream::Payload::Owned(payload), now)
    }

    fn fragment_in(
        &mut self,
        conn: ConnId,
        fh: StreamFragHeader,
        mut payload: stream::Payload<'_>,
        now: SystemTime,
    ) -> Vec<Out> {
        let mut out = Vec::new();
        let Some(c) = self.conns.get(&conn) else {
            return out;
        };
        let sender = match c.auth {
            Auth::Closing => return out,
            Auth::Connected(t) => Some(t),
            _ => None,
        };
        let src = sender.unwrap_or(Tid::NONE);
        let dst = fh.dst;
        let for_me = dst.is_pvmd() && dst.is_on_host(self.host.index);
        if !for_me {
            let Some(src) = sender else {
                out.push(Out::Log("loclentry() non-connect message from anon task".into()));
                self.close(conn, &mut out);
                return out;
            };
            self.route(src, fh, &mut payload, &mut out);
            return out;
        }
        let payload: &[u8] = &payload;
        // Reassemble a message for the daemon.
        let c = self.conns.get_mut(&conn).expect("checked above");
        if fh.flags.contains(FragFlags::SOM) {
            if payload.len() < MSGHDR_LEN {
                out.push(Out::Log(format!(
                    "loclinput() SOM pkt src t{:x} dst t{:x} too short",
                    src.bits(),
                    dst.bits()
                )));
                return out;
            }
            if c.partial.is_some() {
                out.push(Out::Log(format!("loclinpkt() repeated start pkt t{:x}", src.bits())));
            }
            let hdr = match MsgHeader::parse(payload) {
                Ok(h) => h,
                Err(e) => {
                    out.push(Out::Log(format!(
                        "loclinput() bad message header from t{:x}: {e}",
                        src.bits()
                    )));
                    return out;
                }
            };
            c.partial = Some((hdr, payload[MSGHDR_LEN..].to_vec()));
        } else {
            match c.partial.as_mut() {
                Some((_, body)) => {
                    if body.len() + payload.len() > MAX_REQUEST {
                        out.push(Out::Log(format!(
                            "loclinput() message from t{:x} longer than {MAX_REQUEST} bytes",
                            src.bits()
                        )));
                        self.close(conn, &mut out);
                        return out;
                    }
                    body.extend_from_slice(payload);
                }
                None => {
                    out.push(Out::Log(format!(
                        "loclinpkt() pkt with no message src t{:x}",
                        src.bits()
                    )));
                    return out;
                }
            }
        }
        if fh.flags.contains(FragFlags::EOM) {
            let c = self.conns.get_mut(&conn).expect("checked above");
            if let Some((hdr, body)) = c.partial.take() {
                self.dispatch(
                    Request {
                        conn,
                        src,
                        hdr,
                        body: &body,
                    },
                    now,
                    &mut out,
                );
            }
        }
        out
    }

    /// The relay fast path: when a fragment from `conn` is user data for a connected local
    /// task, the connection to write it to and the rewritten header (as [`Self::fragment`]
    /// would produce). `None` for anything else, which then goes through `fragment`. Lets the
    /// shell forward payloads without copying them or building `Out` lists.
    pub fn relay_target(&self, conn: ConnId, fh: &StreamFragHeader) -> Option<(ConnId, [u8; 16])> {
        if self.debug & 0x2 != 0 {
            return None;
        }
        let Auth::Connected(src) = self.conns.get(&conn)?.auth else {
            return None;
        };
        let dst = fh.dst;
        if dst.is_pvmd() || dst.is_multicast() || !dst.is_task() || !dst.is_on_host(self.host.index) {
            return None;
        }
        if self.mig_is_parking(dst.local()) {
            return None; // migrate.rs hook: the slow path holds messages for a parking task
        }
        if self.rm_slow_path(src, dst) {
            return None; // rm.rs hook: requests to and answers from a resource manager
        }
        let to = self.tasks.get(&dst.local())?.conn?;
        let hdr = StreamFragHeader {
            dst: Tid::task(self.host.index, dst.local()),
            src,
            len: fh.len,
            flags: fh.flags & (FragFlags::SOM | FragFlags::EOM),
        };
        Some((to, hdr.to_bytes()))
    }

    /// Cut-through relay of a fragment from a connected task to another task.
    fn route(&mut self, src: Tid, fh: StreamFragHeader, payload: &mut stream::Payload<'_>, out: &mut Vec<Out>) {
        let dst = fh.dst;
        if self.debug & 0x2 != 0 {
            out.push(Out::Log(format!(
                "loclinpkt() src t{:x} dst t{:x} f {:?} len {}",
                src.bits(),
                dst.bits(),
                fh.flags,
                payload.len()
            )));
        }
        if dst.is_multicast() {
            return self.multicast(src, fh, payload, out);
        }
        if self.rm_outgoing(src, &fh, payload, out) {
            return; // rm.rs hook: answered for a failed resource manager, or SM_EXEC to a pvmd
        }
        if !dst.is_task() {
            out.push(Out::Log(format!(
                "loclinpkt() pkt src t{:x} dst t{:x} scrapped (no such task)",
                src.bits(),
                dst.bits()
            )));
            return;
        }
        let here = self.has_task(dst);
        if !here && self.mig_forward_frag(src, fh, payload, out) {
            return; // mig_move.rs hook: the task moved to another host
        }
        if !here && !dst.is_on_host(self.host.index) && self.net_route(src, fh, payload, out) {
            return; // multi-host hook
        }
        if !here && !dst.is_on_host(self.host.index) {
            out.push(Out::Log(format!(
                "loclinpkt() pkt src t{:x} dst t{:x} scrapped (no such host)",
                src.bits(),
                dst.bits()
            )));
            return;
        }
        if !here {
            out.push(Out::Log(format!(
                "loclinpkt() pkt src t{:x} dst t{:x} scrapped (no such task)",
                src.bits(),
                dst.bits()
            )));
            return;
        }
        let key = self.key(dst);
        let hdr = StreamFragHeader {
            dst: key_tid(self.host.index, key),
            src,
            len: payload.len() as u32,
            flags: fh.flags & (FragFlags::SOM | FragFlags::EOM),
        };
        let mut bytes = Vec::with_capacity(16 + payload.len());
        bytes.extend_from_slice(&hdr.to_bytes());
        bytes.extend_from_slice(payload);
        let from = self.host.index;
        if let Some(bytes) = self.mig_gate(key, from, bytes, out) {
            self.deliver(key, bytes, out); // mig_gate: mig_move.rs hook (order after a move)
        }
    }

    /// A fragment to the sender's one-shot multicast tid: copied to each destination (which
    /// sees the multicast tid as dst, as from the legacy daemon); the set is freed after EOM.
    fn multicast(&mut self, src: Tid, fh: StreamFragHeader, payload: &[u8], out: &mut Vec<Out>) {
        self.net_multicast(src, fh, payload, out); // multi-host hook
        let skey = self.key(src);
        let Some(sender) = self.tasks.get_mut(&skey) else {
            return;
        };
        let dsts = match &sender.mca {
            Some((g, d)) if *g == fh.dst => d.clone(),
            _ => {
                out.push(Out::Log(format!(
                    "loclinpkt() pkt src t{:x} dst t{:x} scrapped (no such multicast)",
                    src.bits(),
                    fh.dst.bits()
                )));
                return;
            }
        };
        if fh.flags.contains(FragFlags::EOM) {
            sender.mca = None;
        }
        let hdr = StreamFragHeader {
            dst: fh.dst,
            src,
            len: payload.len() as u32,
            flags: fh.flags & (FragFlags::SOM | FragFlags::EOM),
        };
        for d in dsts {
            let mut bytes = Vec::with_capacity(16 + payload.len());
            bytes.extend_from_slice(&hdr.to_bytes());
            bytes.extend_from_slice(payload);
            if let Some(bytes) = self.mig_mcast(d, bytes, out) {
                let key = self.key(d); // mig_mcast: mig_move.rs hook (a member that moved)
                self.deliver(key, bytes, out);
            }
        }
    }

    fn reply(&self, req: &Request, dst: Tid, body: &[u8], out: &mut Vec<Out>) {
        let bytes = self.rm_frame(dst, &req.hdr, body); // rm.rs hook
        out.push(Out::Send(req.conn, bytes));
    }

    fn dispatch(&mut self, req: Request, now: SystemTime, out: &mut Vec<Out>) {
        if self.mig_tm_entry(&req, out) {
            return; // migrate.rs hook: extension TM_ codes
        }
        let tag = Tag::classify(req.hdr.tag, req.hdr.ctx);
        if self.debug & 0x2 != 0 {
            out.push(Out::Log(format!(
                "loclentry() from t{:x} tag {}",
                req.src.bits(),
                tag.name()
            )));
        }
        if let Tag::Sm(sm) = tag {
            return self.sm_entry(sm, &req, out);
        }
        let Tag::Tm(tm) = tag else {
            out.push(Out::Log(format!(
                "loclentry() message from t{:x} with bogus tag {}",
                req.src.bits(),
                req.hdr.tag
            )));
            // hardening: a client that has not connected has no business sending anything but
            // the handshake; drop it (the legacy daemon keeps it and logs every message).
            if self.conn_tid(req.conn).is_none() {
                out.push(Out::Log(format!(
                    "loclentry() connection {}: not connected; closing",
                    req.conn
                )));
                self.close(req.conn, out);
            }
            return;
        };
        let connected = self.conn_tid(req.conn).is_some();
        let pending = matches!(self.conns.get(&req.conn).map(|c| &c.auth), Some(Auth::Pending(_)));
        let allowed = if connected {
            true
        } else if pending {
            tm == Tm::Conn2
        } else {
            matches!(tm, Tm::Connect | Tm::Conn2 | Tm::ShmConn)
        };
        if !allowed {
            out.push(Out::Log("loclentry() non-connect message from anon task".into()));
            self.close(req.conn, out);
            return;
        }
        if connected && self.net_dispatch(&req, tm, out) {
            return; // multi-host hook
        }
        match tm {
            Tm::Connect => self.tm_connect(&req, out),
            Tm::Conn2 => self.tm_conn2(&req, out),
            Tm::Exit => {
                self.reply(&req, req.src, &[], out);
                self.close(req.conn, out);
            }
            Tm::Config => self.tm_config(&req, out),
            Tm::Notify => self.tm_notify(&req, out),
            Tm::Mca => self.tm_mca(&req, out),
            Tm::SendSig => self.tm_sendsig(&req, out),
            Tm::Tickle => self.tm_tickle(&req, out),
            Tm::Spawn => self.tm_spawn(&req, out),
            Tm::Sched => self.tm_sched(&req, out),
            Tm::Tasker | Tm::Hoster => self.tm_tasker_hoster(tm, &req, out),
            Tm::Tracer => match self.reg.register_tracer(req.src, req.body) {
                Ok(code) => self.reply(&req, req.src, &wire::int_body(code), out),
                // The legacy logs and does not answer.
                Err(e) => out.push(Out::Log(format!("tm_tracer() bad msg format: {e}"))),
            },
            Tm::DelHost => {
                // Not implemented yet. Every one of these has a reply whose first int may be an
                // error, so answer PvmNotImpl instead of leaving the task waiting forever.
                out.push(Out::Log(format!(
                    "loclentry() {} from t{:x} not implemented yet; answered PvmNotImpl",
                    tm.name(),
                    req.src.bits()
                )));
                self.reply(&req, req.src, &wire::int_body(PvmError::NotImpl.code()), out);
            }
            Tm::Halt => {
                out.push(Out::Log(format!("dm_halt() from ({}), halting...", self.host.name)));
                out.push(Out::Log("work() pvmd halting".into()));
                out.push(Out::Halt);
            }
            Tm::AddHost => self.tm_addhost(&req, out),
            Tm::Mstat => self.tm_mstat(&req, out),
            Tm::Pstat => self.tm_pstat(&req, out),
            Tm::Task => self.tm_task(&req, out),
            Tm::Db => self.tm_db(&req, out),
            Tm::GetOpt => self.tm_getopt(&req, out),
            Tm::SetOpt => self.tm_setopt(&req, out),
            Tm::Context => self.tm_context(&req, out),
            Tm::HostSync => self.tm_hostsync(&req, now, out),
            Tm::ShmConn => {
                out.push(Out::Log(
                    "tm_shmconn() shmem conn on non shmem sys? Bit bucket...".into(),
                ));
                self.close(req.conn, out);
            }
        }
    }

    /// TM_SCHED: the caller becomes the resource manager; the answer is the previous one and
    /// the master host's entry.
    fn tm_sched(&mut self, req: &Request, out: &mut Vec<Out>) {
        let old = self.reg.register_sched(req.src);
        self.rm_registered(req.src, out); // rm.rs hook
        if self.debug & 0x8000 != 0 {
            out.push(Out::Log(format!(
                "tm_sched() old t{:x} new t{:x}",
                old.bits(),
                req.src.bits()
            )));
        }
        let h = self.host_entry();
        let mut w = pvm_proto::xdr::XdrWriter::new();
        w.int(old.0)
            .int(h.hostpart)
            .string(&h.name)
            .string(&h.arch)
            .int(h.speed)
            .int(h.dsig);
        self.reply(req, req.src, &w.into_inner(), out);
    }

    fn tm_tasker_hoster(&mut self, tm: Tm, req: &Request, out: &mut Vec<Out>) {
        let regme = match first_int(req.body) {
            Some(r) => r,
            None => {
                return out.push(Out::Log(format!(
                    "{}() bad msg format",
                    if tm == Tm::Tasker { "tm_tasker" } else { "tm_hoster" }
                )))
            }
        };
        let slot = if tm == Tm::Tasker {
            &mut self.reg.tasker
        } else {
            &mut self.reg.hoster
        };
        let code = Registry::register_slot(slot, req.src, regme != 0);
        self.reply(req, req.src, &wire::int_body(code), out);
    }

    fn tm_connect(&mut self, req: &Request, out: &mut Vec<Out>) {
        let parsed = match wire::ConnectReq::parse(req.body) {
            Ok(p) => p,
            Err(e) => {
                out.push(Out::Log(format!("tm_connect() bad msg format: {e}")));
                return self.connect_nack(req, out);
            }
        };
        if parsed.version != TDPROTOCOL {
            out.push(Out::Log(format!(
                "tm_connect() t-d protocol mismatch ({}/{})",
                parsed.version, TDPROTOCOL
            )));
            return self.connect_nack(req, out);
        }
        if let Err(e) = self.auth.write_task_auth(&parsed.auth_path) {
            out.push(Out::Log(format!(
                "tm_connect() can't write t-auth file {}: {e}",
                parsed.auth_path
            )));
            return self.connect_nack(req, out);
        }
        let dauth = match self.auth.create_pvmd_auth() {
            Ok(p) => p,
            Err(e) => {
                out.push(Out::Log(format!("tm_connect() can't create d-auth file: {e}")));
                return self.connect_nack(req, out);
            }
        };
        let body = wire::connect_reply(TDPROTOCOL, true, &dauth);
        self.reply(req, Tid::NONE, &body, out);
        if let Some(c) = self.conns.get_mut(&req.conn) {
            c.auth = Auth::Pending(dauth);
        }
    }

    fn connect_nack(&mut self, req: &Request, out: &mut Vec<Out>) {
        let body = wire::connect_reply(TDPROTOCOL, false, "");
        self.reply(req, Tid::NONE, &body, out);
        self.close(req.conn, out);
    }

    /// The PVMEPID cookie a spawned task will present. The legacy uses the child's pid; any
    /// value no pid can take serves, and lets the program be exec'ed directly.
    pub(crate) fn next_cookie(&mut self) -> i32 {
        self.last_cookie = if self.last_cookie < COOKIE_BASE || self.last_cookie == i32::MAX {
            COOKIE_BASE
        } else {
            self.last_cookie + 1
        };
        self.last_cookie
    }

    fn alloc_tid(&mut self) -> Option<Tid> {
        let max = Tid::LOCAL_MASK;
        for _ in 0..max {
            self.last_local = if self.last_local >= max { 1 } else { self.last_local + 1 };
            let tid = Tid::task(self.host.index, self.last_local);
            // mig_move.rs: a tid of ours that runs on another host is still taken.
            if !self.tasks.contains_key(&self.last_local) && self.mig.route_of(tid).is_none() {
                return Some(tid);
            }
        }
        None
    }

    fn settings(&self, tid: Tid, t: &Task) -> wire::TaskSettings {
        wire::TaskSettings {
            tid,
            ptid: t.ptid,
            outtid: t.outtid,
            outctx: t.outctx,
            outtag: t.outtag,
            trctid: t.trctid,
            trcctx: t.trcctx,
            trctag: t.trctag,
            udpmax: UDPMAXLEN as i32,
            dsig: self.host.dsig,
            ip: self.host.ip_hex.clone(),
            schedtid: self.reg.sched.0,
        }
    }

    fn tm_conn2(&mut self, req: &Request, out: &mut Vec<Out>) {
        let Some(Auth::Pending(dauth)) = self.conns.get(&req.conn).map(|c| &c.auth) else {
            out.push(Out::Log(format!(
                "tm_conn2() message from t{:x}, TF_AUTH not set",
                req.src.bits()
            )));
            return;
        };
        let dauth = dauth.clone();
        let parsed = match wire::Conn2Req::parse(req.body) {
            Ok(p) => p,
            Err(e) => {
                out.push(Out::Log(format!("tm_conn2() bad msg format: {e}")));
                return self.close(req.conn, out);
            }
        };
        match self.auth.pvmd_auth_written(&dauth) {
            Ok(true) => {}
            Ok(false) => {
                out.push(Out::Log("tm_conn2() task didn't validate itself".into()));
                return self.close(req.conn, out);
            }
            Err(e) => {
                out.push(Out::Log(format!("tm_conn2() can't read d-auth file: {e}")));
                return self.close(req.conn, out);
            }
        }
        self.auth.remove(&dauth);
        let peer_pid = self.conns.get(&req.conn).and_then(|c| c.peer_pid);
        let cookie = if parsed.cookie == 0 { parsed.pid } else { parsed.cookie };
        let spawned = self
            .tasks
            .iter()
            .find(|(_, t)| t.forked && t.conn.is_none() && t.cookie == cookie)
            .map(|(k, _)| *k);
        if let Some(key) = spawned {
            return self.attach_spawned(req, key, parsed.pid, out);
        }
        // Only a task nobody spawned gets a new tid: allocating one for a spawned task too
        // would skip a number and make the next tids differ from the legacy daemon's.
        let Some(tid) = self.alloc_tid() else {
            out.push(Out::Log("tm_conn2() out of tids?".into()));
            return self.close(req.conn, out);
        };
        let trc = self.tev_registered(); // tev.rs hook: the registered tracer traces it
        let task = Task {
            conn: Some(req.conn),
            forked: false,
            pending: Vec::new(),
            pending_bytes: 0,
            out_buf: Vec::new(),
            ptid: Tid::NONE,
            pid: parsed.pid,
            cookie: 0,
            pid_verified: peer_pid == Some(parsed.pid),
            a_out: parsed.name.unwrap_or_default(),
            outtid: 0,
            outctx: 0,
            outtag: 0,
            trctid: trc.map_or(0, |d| d.tid),
            trcctx: trc.map_or(0, |d| d.ctx),
            trctag: trc.map_or(0, |d| d.tag),
            contexts: Vec::new(),
            mca: None,
        };
        if let Some(d) = trc {
            let name = if task.a_out.is_empty() {
                "-".to_string()
            } else {
                task.a_out.clone()
            };
            self.tev_send(
                d,
                tev::Event::NewTask {
                    tid: tid.0,
                    ptid: -1,
                    flags: -1,
                    name,
                },
                out,
            );
        }
        let mut body = self.settings(tid, &task).conn2_reply();
        body.extend(migrate::conn2_trailer()); // migrate.rs hook
        self.tasks.insert(tid.local(), task);
        if let Some(c) = self.conns.get_mut(&req.conn) {
            c.auth = Auth::Connected(tid);
        }
        if self.debug & 0x4 != 0 {
            out.push(Out::Log(format!("tm_conn2() new task t{:x}", tid.bits())));
        }
        out.push(Out::FragLimit(req.conn, MAX_FRAG_CONNECTED));
        self.reply(req, tid, &body, out);
        self.rm_task_connected(tid, out); // rm.rs hook: news for the resource manager
    }

    fn tm_notify(&mut self, req: &Request, out: &mut Vec<Out>) {
        let parsed = wire::parse_notify(req.body);
        let (what, ctx, tag, count, tids) = match parsed {
            Ok(p) => p,
            Err(e) => return out.push(Out::Log(format!("tm_notify() bad msg format: {e}"))),
        };
        let known = Known {
            tasks: &self.tasks,
            index: self.host.index,
            mig: &self.mig,
        };
        let (now, logs) = self
            .notifies
            .request(&known, req.src, what, ctx, tag, req.hdr.wid, &tids, count);
        out.extend(logs.into_iter().map(Out::Log));
        for n in now {
            self.send_notice(n, out);
        }
    }

    fn tm_mca(&mut self, req: &Request, out: &mut Vec<Out>) {
        let tids = match wire::parse_tid_list(req.body, "TM_MCA") {
            Ok(t) => t,
            Err(e) => return out.push(Out::Log(format!("tm_mca() bad msg format: {e}"))),
        };
        let index = self.host.index;
        let dsts: Vec<Tid> = tids.into_iter().map(Tid).filter(|t| t.is_on_host(index)).collect();
        let gtid = Tid::multicast_of(req.src);
        let key = self.key(req.src);
        if let Some(t) = self.tasks.get_mut(&key) {
            t.mca = Some((gtid, dsts));
        }
        if self.debug & 0x2 != 0 {
            out.push(Out::Log(format!(
                "tm_mca() made mca {:x} for t{:x}",
                gtid.bits(),
                req.src.bits()
            )));
        }
    }

    fn tm_sendsig(&mut self, req: &Request, out: &mut Vec<Out>) {
        let (tid, sig) = match wire::parse_two_ints(req.body, "TM_SENDSIG tid", "TM_SENDSIG signal") {
            Ok((t, s)) => (Tid(t), s),
            Err(e) => return out.push(Out::Log(format!("tm_sendsig() bad msg format: {e}"))),
        };
        if !tid.is_task() {
            return out.push(Out::Log(format!("tm_sendsig() bad tid {:x}", tid.bits())));
        }
        self.reply(req, req.src, &[], out);
        if self.mig_signal(tid, sig, out) {
            return; // mig_move.rs hook: a task that moved away
        }
        match self.tasks.get(&self.key(tid)) {
            Some(t) if t.pid_verified && t.pid > 0 => out.push(Out::Signal(t.pid, sig)),
            Some(_) => out.push(Out::Log(format!(
                "tm_sendsig() pid of t{:x} not confirmed by the kernel; signal {sig} not sent",
                tid.bits()
            ))),
            None => out.push(Out::Log(format!(
                "tm_sendsig() signal for t{:x} scrapped (no such task)",
                tid.bits()
            ))),
        }
    }

    fn tm_tickle(&mut self, req: &Request, out: &mut Vec<Out>) {
        let args = match wire::parse_tid_list(req.body, "TM_TICKLE") {
            Ok(a) if (1..=10).contains(&a.len()) => a,
            _ => return out.push(Out::Log("tm_tickle() bad msg format".into())),
        };
        out.push(Out::Log(format!(
            "tm_tickle() #{}",
            args.iter().map(|a| format!(" {a}")).collect::<String>()
        )));
        let results: Vec<i32> = match args[0] {
            5 => vec![self.debug as i32],
            6 => {
                self.debug = args.get(1).copied().unwrap_or(0) as u32;
                vec![]
            }
            _ => vec![],
        };
        let mut body = wire::int_body(results.len() as i32);
        for r in results {
            body.extend_from_slice(&wire::int_body(r));
        }
        self.reply(req, req.src, &body, out);
    }

    fn tm_spawn(&mut self, req: &Request, out: &mut Vec<Out>) {
        let sp = match wire::SpawnReq::parse(req.body) {
            Ok(s) if s.count >= 1 => s,
            Ok(_) => {
                return out.push(Out::Log(format!(
                    "tm_spawn() from t{:x} bad msg format",
                    req.src.bits()
                )))
            }
            Err(e) => {
                return out.push(Out::Log(format!(
                    "tm_spawn() from t{:x} bad msg format: {e}",
                    req.src.bits()
                )))
            }
        };
        if sp.count > MAX_SPAWN {
            out.push(Out::Log(format!(
                "tm_spawn() {} tasks asked, at most {MAX_SPAWN}",
                sp.count
            )));
            return self.reply(req, req.src, &wire::int_body(PvmError::OutOfRes.code()), out);
        }
        // hardening: children of this task started here that have not connected yet (crate::limits).
        let waiting = self
            .tasks
            .values()
            .filter(|t| t.forked && t.conn.is_none() && t.ptid == req.src)
            .count();
        if waiting + sp.count as usize > crate::limits::PENDING_SPAWNS_PER_TASK {
            out.push(Out::Log(format!(
                "tm_spawn() t{:x} has {waiting} spawned tasks not connected yet; {} more refused",
                req.src.bits(),
                sp.count
            )));
            return self.reply(req, req.src, &wire::int_body(PvmError::OutOfRes.code()), out);
        }
        let flags = SpawnFlags::from_bits_retain(sp.flags);
        let (where_, wd) = match sp.where_.split_once(':') {
            Some((w, d)) => (w, Some(d)),
            None => (sp.where_.as_str(), None),
        };
        let mut here = if flags.contains(SpawnFlags::HOST) {
            where_ == self.host.name
        } else if flags.contains(SpawnFlags::ARCH) {
            where_ == self.host.arch
        } else {
            true
        };
        if flags.contains(SpawnFlags::HOST_COMPL) {
            here = !here;
        }
        let ptid = if flags.contains(SpawnFlags::NO_SPAWN_PARENT) {
            Tid(PvmError::ParentNotSet.code())
        } else {
            req.src
        };
        let n = sp.count as usize;
        let mut tids = Vec::with_capacity(n);
        let path = if here { self.launcher.find(&sp.file) } else { None };
        if !here {
            tids.resize(n, PvmError::NoHost.code());
        } else if let Some(path) = path {
            // PvmTaskDebug: the debugger is started instead, with the program's path and
            // arguments after it (as the legacy forkexec() does).
            let (exe, first) = if flags.contains(SpawnFlags::DEBUG) {
                (self.debugger.clone(), vec![self.debugger.clone(), path.clone()])
            } else {
                (path.clone(), vec![path.clone()])
            };
            let mut env = sp.env.clone();
            if let Some(wd) = wd {
                env.push(format!("PVMSPAWNWD={wd}"));
            }
            let mut argv = first;
            argv.extend(sp.argv.iter().cloned());
            self.rm_start_ctx(sp.flags, 0, n as i32); // rm.rs: for SM_STTASK
            for _ in 0..n {
                let Some(tid) = self.alloc_tid() else {
                    out.push(Out::Log("forkexec() out of tids?".into()));
                    tids.push(PvmError::OutOfRes.code());
                    continue;
                };
                let cookie = self.next_cookie();
                let mut env = env.clone();
                env.push(format!("PVMEPID={cookie}"));
                let launched = if self.reg.tasker != Tid::NONE {
                    self.rm_sttask(tid, &exe, &argv, &env, n as usize, out) // rm.rs hook: the tasker starts it
                } else {
                    self.launcher.launch(tid, &exe, &argv, &env)
                };
                match launched {
                    Ok(pid) => {
                        self.tasks.insert(
                            tid.local(),
                            Task {
                                conn: None,
                                forked: true,
                                pending: Vec::new(),
                                pending_bytes: 0,
                                out_buf: Vec::new(),
                                ptid,
                                pid,
                                cookie,
                                pid_verified: true,
                                a_out: sp.file.clone(),
                                outtid: sp.outtid,
                                outctx: sp.outctx,
                                outtag: sp.outtag,
                                trctid: sp.trctid,
                                trcctx: sp.trcctx,
                                trctag: sp.trctag,
                                contexts: Vec::new(),
                                mca: None,
                            },
                        );
                        if self.debug & 0x4 != 0 {
                            out.push(Out::Log(format!("forkexec() t{:x} pid {pid} {path}", tid.bits())));
                        }
                        if sp.outtid > 0 {
                            let body = wire::output_record(tid, TO_NEW, &[]);
                            let mut rec = body;
                            rec.extend_from_slice(&wire::int_body(ptid.0));
                            self.send_to_task(Tid(sp.outtid), sp.outtag, sp.outctx, 0, &rec, out);
                        }
                        tids.push(tid.0);
                    }
                    Err(e) => {
                        out.push(Out::Log(format!("forkexec() {path}: {e}")));
                        tids.push(PvmError::OutOfRes.code());
                    }
                }
            }
        } else {
            out.push(Out::Log(format!("forkexec() didn't find <{}>", sp.file)));
            tids.resize(n, PvmError::NoFile.code());
        }
        // tev.rs hook: newtask for each task started, then spntask as the request is answered.
        let dest = tev::Dest {
            tid: sp.trctid,
            ctx: sp.trcctx,
            tag: sp.trctag,
        };
        for ev in [0, 1] {
            for &t in tids.iter().filter(|t| Tid(**t).is_task()) {
                let e = if ev == 0 {
                    tev::Event::NewTask {
                        tid: t,
                        ptid: ptid.0,
                        flags: sp.flags,
                        name: sp.file.clone(),
                    }
                } else {
                    tev::Event::SpnTask { tid: t, ptid: ptid.0 }
                };
                self.tev_send(dest, e, out);
            }
        }
        if sp.outtid > 0 {
            for &t in tids.iter().filter(|t| Tid(**t).is_task()) {
                let mut rec = wire::output_record(Tid(t), TO_SPAWN, &[]);
                rec.extend_from_slice(&wire::int_body(ptid.0));
                self.send_to_task(Tid(sp.outtid), sp.outtag, sp.outctx, 0, &rec, out);
            }
        }
        self.reply(req, req.src, &wire::spawn_reply(&tids), out);
    }

    /// Output of a task we spawned: to its output collector, else into the log line by line.
    pub fn task_output(&mut self, tid: Tid, data: &[u8]) -> Vec<Out> {
        let mut out = Vec::new();
        if self.net_taskout(tid, data, &mut out) {
            return out; // multi-host hook
        }
        let key = self.key(tid);
        let Some(t) = self.tasks.get_mut(&key) else {
            return out;
        };
        if t.outtid > 0 {
            let (to, ctx, tag) = (Tid(t.outtid), t.outctx, t.outtag);
            let body = wire::output_record(tid, data.len() as i32, data);
            self.send_to_task(to, tag, ctx, 0, &body, &mut out);
            return out;
        }
        t.out_buf.extend_from_slice(data);
        while let Some(nl) = t.out_buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = t.out_buf.drain(..=nl).collect();
            out.push(Out::Log(format!(
                "[t{:x}] {}",
                tid.bits(),
                String::from_utf8_lossy(&line[..line.len() - 1])
            )));
        }
        if t.out_buf.len() > MAX_OUTPUT_LINE {
            let line = std::mem::take(&mut t.out_buf);
            out.push(Out::Log(format!(
                "[t{:x}] {}",
                tid.bits(),
                String::from_utf8_lossy(&line)
            )));
        }
        out
    }

    /// The process of a spawned task exited (and its output was drained).
    pub fn task_exited(&mut self, tid: Tid) -> Vec<Out> {
        let mut out = Vec::new();
        if self.app_exited(tid, &mut out) {
            return out; // appckpt.rs hook: killed by a rollback
        }
        if self.mig_exit_hook(tid, &mut out) {
            return out; // mig_move.rs hook: the old process of a task that is moving
        }
        let key = self.key(tid);
        let Some(t) = self.tasks.get_mut(&key) else {
            return out;
        };
        if !t.forked {
            return out;
        }
        let rest = std::mem::take(&mut t.out_buf);
        if !rest.is_empty() {
            out.push(Out::Log(format!(
                "[t{:x}] {}",
                tid.bits(),
                String::from_utf8_lossy(&rest)
            )));
        }
        if t.outtid > 0 {
            let (to, ctx, tag) = (Tid(t.outtid), t.outctx, t.outtag);
            let body = wire::output_record(tid, TO_EOF, &[]);
            self.send_to_task(to, tag, ctx, 0, &body, &mut out);
        }
        if let Some(t) = self.tasks.get_mut(&key) {
            if let Some(c) = t.conn {
                // What the process wrote before it exited may still be in its socket (a task
                // that sends and returns from main without pvm_exit): the connection is read to
                // its end first, and the task is gone when it closes (disconnected). Its pid is
                // no longer ours to signal.
                t.forked = false;
                t.pid_verified = false;
                out.push(Out::Drain(c));
                return out;
            }
        }
        self.task_gone(tid, &mut out);
        out
    }

    /// A task this daemon spawned connects (PVMEPID cookie): it keeps its tid and parent, and
    /// what was sent to it meanwhile is delivered after the TM_CONN2 reply.
    fn attach_spawned(&mut self, req: &Request, local: u32, pid: i32, out: &mut Vec<Out>) {
        let tid = key_tid(self.host.index, local);
        let restored = self.mig.is_restored(local); // migrate.rs hook
        let peer_pid = self.conns.get(&req.conn).and_then(|c| c.peer_pid);
        let Some(t) = self.tasks.get_mut(&local) else { return };
        t.conn = Some(req.conn);
        // A restored task's pid is the restore helper's view; it stays ours (migrate.rs), and
        // signals go to its real pid as the kernel names it (mig_move.rs).
        if let (true, Some(pp)) = (restored, peer_pid) {
            t.pid = pp;
            t.pid_verified = true;
        }
        if pid != t.pid && !restored {
            // Not the process we started (e.g. its child): no longer ours to reap.
            t.pid = pid;
            t.forked = false;
            t.pid_verified = false;
        }
        let pending = std::mem::take(&mut t.pending);
        t.pending_bytes = 0;
        let mut body = self.settings(tid, &self.tasks[&local]).conn2_reply();
        body.extend(migrate::conn2_trailer()); // migrate.rs hook
        if let Some(c) = self.conns.get_mut(&req.conn) {
            c.auth = Auth::Connected(tid);
        }
        if self.debug & 0x4 != 0 {
            out.push(Out::Log(format!("tm_conn2() reconnect task t{:x}", tid.bits())));
        }
        out.push(Out::FragLimit(req.conn, MAX_FRAG_CONNECTED));
        self.reply(req, tid, &body, out);
        for b in pending {
            out.push(Out::Send(req.conn, b));
        }
        self.mig_attached(tid, out); // mig_move.rs hook: a migrated task runs here now
    }

    /// Hands bytes (whole fragments) to a local task: now if connected, later if it is a spawned
    /// task still starting, else nowhere.
    fn deliver(&mut self, local: u32, bytes: Vec<u8>, out: &mut Vec<Out>) -> bool {
        if !self.rm_incoming(local, &bytes) {
            return true; // rm.rs hook: a late answer the pvmd already gave
        }
        let Some(bytes) = self.mig_hold(local, bytes, out) else {
            return true; // migrate.rs hook: held for a parking task
        };
        let Some(t) = self.tasks.get_mut(&local) else {
            return false;
        };
        match t.conn {
            Some(c) => out.push(Out::Send(c, bytes)),
            None if t.forked && t.pending_bytes + bytes.len() <= MAX_PENDING_BYTES => {
                t.pending_bytes += bytes.len();
                t.pending.push(bytes);
            }
            None => {
                out.push(Out::Log(format!(
                    "pkt_to_task() t{:x} is not connected; message dropped",
                    key_tid(self.host.index, local).bits()
                )));
                return false;
            }
        }
        true
    }

    fn host_entry(&self) -> wire::HostEntry {
        wire::HostEntry {
            hostpart: self.host.hostpart() as i32,
            name: self.host.name.clone(),
            arch: self.host.arch.clone(),
            speed: self.host.speed,
            dsig: self.host.dsig,
        }
    }

    fn tm_config(&mut self, req: &Request, out: &mut Vec<Out>) {
        let body = wire::config_reply(&[self.host_entry()], 1);
        self.reply(req, req.src, &body, out);
    }

    /// Host adding is not implemented yet; answer per host what the legacy daemon answers when
    /// it cannot add: a loopback master refuses everything with PvmIPLoopback, our own name is a
    /// duplicate, anything else cannot be started (yet).
    fn tm_addhost(&mut self, req: &Request, out: &mut Vec<Out>) {
        let lines = match wire::parse_addhost(req.body) {
            Ok(l) if !l.is_empty() && l.len() <= Tid::MAX_HOST as usize => l,
            Ok(_) => {
                return out.push(Out::Log(format!(
                    "tm_addhost() from t{:x} bad msg format",
                    req.src.bits()
                )))
            }
            Err(e) => {
                return out.push(Out::Log(format!(
                    "tm_addhost() from t{:x} bad msg format: {e}",
                    req.src.bits()
                )))
            }
        };
        let loopback = self.host.ip_hex.starts_with("7f");
        let errs: Vec<i32> = lines
            .iter()
            .map(|line| {
                let name = line
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .trim_start_matches(['&', '$']);
                if loopback {
                    PvmError::IpLoopback.code()
                } else if name == self.host.name {
                    PvmError::DupHost.code()
                } else {
                    out.push(Out::Log(format!("tm_addhost() adding {name}: not implemented yet")));
                    PvmError::CantStart.code()
                }
            })
            .collect();
        self.reply(req, req.src, &wire::addhost_errors(&errs), out);
    }

    fn tm_mstat(&mut self, req: &Request, out: &mut Vec<Out>) {
        let name = match wire::parse_string(req.body, "TM_MSTAT host name") {
            Ok(n) => n,
            Err(e) => return out.push(Out::Log(format!("tm_mstat() bad msg format: {e}"))),
        };
        let status = if name == self.host.name {
            0
        } else {
            PvmError::NoHost.code()
        };
        self.reply(req, req.src, &wire::int_body(status), out);
    }

    /// Whether a tid's host field names this host (0 means "local" on the stream).
    fn is_local_host(&self, tid: Tid) -> bool {
        tid.is_on_host(self.host.index)
    }

    fn tm_pstat(&mut self, req: &Request, out: &mut Vec<Out>) {
        let tid = match wire::parse_int(req.body, "TM_PSTAT tid") {
            Ok(t) => Tid(t),
            Err(e) => return out.push(Out::Log(format!("tm_pstat() bad msg format: {e}"))),
        };
        if !tid.is_task() {
            // The legacy daemon does not answer this either.
            return out.push(Out::Log(format!("tm_pstat() bad tid {:x}", tid.bits())));
        }
        let alive = self.has_task(tid) || self.mig.route_of(tid).is_some();
        let status = if alive { 0 } else { PvmError::NoTask.code() };
        self.reply(req, req.src, &wire::int_body(status), out);
    }

    fn tm_task(&mut self, req: &Request, out: &mut Vec<Out>) {
        let where_ = match wire::parse_int(req.body, "TM_TASK where") {
            Ok(t) => Tid(t),
            Err(e) => return out.push(Out::Log(format!("tm_task() bad msg format: {e}"))),
        };
        if where_.0 != 0 && !self.is_local_host(where_) {
            return self.reply(req, req.src, &wire::task_reply(PvmError::NoHost.code(), &[]), out);
        }
        let hostpart = self.host.hostpart() as i32;
        let entries: Vec<wire::TaskEntry> = self
            .tasks
            .iter()
            .filter(|(key, _)| where_.local() == 0 || task_key(self.host.index, where_) == **key)
            .map(|(key, t)| wire::TaskEntry {
                tid: key_tid(self.host.index, *key),
                ptid: t.ptid,
                hostpart,
                flag: if t.conn.is_some() { TF_CONN } else { 0 }
                    | if t.forked { TF_FORKD } else { 0 }
                    | self.rm_task_flag(*key), // rm.rs hook
                a_out: t.a_out.clone(),
                pid: t.pid,
            })
            .collect();
        self.reply(req, req.src, &wire::task_reply(0, &entries), out);
    }

    fn tm_db(&mut self, req: &Request, out: &mut Vec<Out>) {
        let db = match wire::DbReq::parse(req.body) {
            Ok(d) => d,
            Err(e) => return out.push(Out::Log(format!("tm_db() bad msg format: {e}"))),
        };
        // The owner is the connected task, whatever the request claims.
        let tid = req.src.0;
        let body = match DbOp::from_code(db.op) {
            Some(DbOp::Put) => {
                let rest = &req.body[db.rest..];
                match mbox::embedded_len(rest) {
                    Ok(n) => {
                        let cc = self.mbox.insert(tid, &db.class, db.index, db.flags, rest[..n].to_vec());
                        if cc >= 0 {
                            self.wake_db_waiters(&db.class, out);
                        }
                        if cc == PvmError::OutOfRes.code() {
                            // hardening: per-task mailbox quota (crate::limits).
                            out.push(Out::Log(format!(
                                "tm_db() t{:x} is over its mailbox quota; PUT of \"{}\" refused",
                                req.src.bits(),
                                db.class
                            )));
                        }
                        wire::int_body(cc)
                    }
                    Err(e) => {
                        out.push(Out::Log(format!("tm_db() bad message in PUT of \"{}\": {e}", db.class)));
                        wire::int_body(PvmError::BadMsg.code())
                    }
                }
            }
            Some(DbOp::Get) => match self.mbox.lookup(tid, &db.class, db.index, db.flags) {
                Ok((i, m)) => wire::db_get_reply(i, &m),
                Err(e)
                    if e == PvmError::NotFound.code()
                        && MboxFlags::from_bits_retain(db.flags).contains(MboxFlags::WAIT_FOR_INFO) =>
                {
                    // hardening: a per-connection cap below the daemon-wide one (crate::limits).
                    let mine = self.db_waiters.iter().filter(|w| w.conn == req.conn).count();
                    if mine >= crate::limits::DB_WAITERS_PER_TASK {
                        out.push(Out::Log(format!(
                            "tm_db() t{:x} has {mine} lookups waiting already; refused",
                            req.src.bits()
                        )));
                    } else if self.db_waiters.len() < MAX_DB_WAITERS {
                        self.db_waiters.push(DbWaiter {
                            conn: req.conn,
                            tid: req.src,
                            hdr: req.hdr,
                            class: db.class,
                            index: db.index,
                            flags: db.flags & !MboxFlags::WAIT_FOR_INFO.bits(),
                        });
                        return;
                    }
                    wire::int_body(PvmError::OutOfRes.code())
                }
                Err(e) => wire::int_body(e),
            },
            Some(DbOp::Remove) => wire::int_body(self.mbox.delete(tid, &db.class, db.index)),
            Some(DbOp::Names) => wire::db_names_reply(&self.mbox.names(&db.class)),
            Some(DbOp::Reset) => match wire::parse_tid_list(&req.body[db.rest..], "TMDB_RESET no-reset tids") {
                Ok(keep) => {
                    self.mbox_reset(&db.class, db.index, db.flags != 0, &keep, out); // reset.rs
                    wire::int_body(0)
                }
                Err(e) => {
                    // The legacy logs and never answers; an error answer does not hang the task.
                    out.push(Out::Log(format!("tm_db() bad msg format in RESET: {e}")));
                    wire::int_body(PvmError::BadMsg.code())
                }
            },
            None => {
                out.push(Out::Log(format!(
                    "tm_db() op {} on \"{}\" not implemented",
                    db.op, db.class
                )));
                wire::int_body(PvmError::NotImpl.code())
            }
        };
        self.reply(req, req.src, &body, out);
    }

    /// Answers deferred `PvmMboxWaitForInfo` lookups on `class` that can now be satisfied.
    fn wake_db_waiters(&mut self, class: &str, out: &mut Vec<Out>) {
        self.net_wake_db_waiters(class, out); // multi-host hook
        let mut i = 0;
        while i < self.db_waiters.len() {
            let w = &self.db_waiters[i];
            if w.class != class {
                i += 1;
                continue;
            }
            match self.mbox.lookup(w.tid.0, &w.class, w.index, w.flags) {
                Err(e) if e == PvmError::NotFound.code() => i += 1,
                res => {
                    let w = self.db_waiters.remove(i);
                    let body = match res {
                        Ok((idx, m)) => wire::db_get_reply(idx, &m),
                        Err(e) => wire::int_body(e),
                    };
                    let bytes = wire::frame_message(w.tid, Tid::LOCAL_PVMD, w.hdr.tag, w.hdr.ctx, w.hdr.wid, &body);
                    out.push(Out::Send(w.conn, bytes));
                }
            }
        }
    }

    fn tm_getopt(&mut self, req: &Request, out: &mut Vec<Out>) {
        let Some(t) = self.tasks.get(&self.key(req.src)) else {
            return;
        };
        let body = self.settings(req.src, t).getopt_reply();
        self.reply(req, req.src, &body, out);
    }

    fn tm_setopt(&mut self, req: &Request, out: &mut Vec<Out>) {
        let pairs = wire::parse_setopt(req.body);
        let before = self
            .tasks
            .get(&self.key(req.src))
            .map(|t| (t.trctid, t.trcctx, t.trctag));
        self.tm_setopt_apply(req, pairs, out);
        self.tev_change_trace(req.src, before, out); // tev.rs hook
        self.reply(req, req.src, &[], out);
    }

    fn tm_setopt_apply(&mut self, req: &Request, pairs: Vec<(i32, String)>, out: &mut Vec<Out>) {
        let key = self.key(req.src);
        if let Some(t) = self.tasks.get_mut(&key) {
            for (what, val) in pairs {
                let x = parse_hex(&val);
                match what {
                    1 => t.outtid = x,
                    2 => t.outctx = x,
                    3 => t.outtag = x,
                    4 => t.trctid = x,
                    5 => t.trcctx = x,
                    6 => t.trctag = x,
                    _ => out.push(Out::Log(format!("tm_setopt() ? option {what} val <{val}>"))),
                }
            }
        }
    }

    fn tm_context(&mut self, req: &Request, out: &mut Vec<Out>) {
        let status = match wire::parse_int(req.body, "TM_CONTEXT cid") {
            Err(_) => PvmError::BadParam.code(),
            Ok(0) => {
                self.last_ctx = (self.last_ctx % Tid::LOCAL_MASK) + 1;
                let cid = (self.host.hostpart() | self.last_ctx) as i32;
                let key = self.key(req.src);
                if let Some(t) = self.tasks.get_mut(&key) {
                    t.contexts.push(cid);
                }
                cid
            }
            Ok(cid) => match self.tasks.get_mut(&task_key(self.host.index, req.src)) {
                Some(t) if t.contexts.contains(&cid) => {
                    t.contexts.retain(|c| *c != cid);
                    0
                }
                _ => PvmError::NotFound.code(),
            },
        };
        self.reply(req, req.src, &wire::int_body(status), out);
    }

    fn tm_hostsync(&mut self, req: &Request, now: SystemTime, out: &mut Vec<Out>) {
        let where_ = match wire::parse_int(req.body, "TM_HOSTSYNC where") {
            Ok(t) => Tid(t),
            Err(e) => return out.push(Out::Log(format!("tm_hostsync() bad msg format: {e}"))),
        };
        let body = if self.is_local_host(where_) {
            let d = now.duration_since(UNIX_EPOCH).unwrap_or_default();
            wire::hostsync_reply(0, d.as_secs() as i32, d.subsec_micros() as i32)
        } else {
            // Only the status: the legacy daemon sends no clock for an unknown host.
            wire::int_body(PvmError::NoHost.code())
        };
        self.reply(req, req.src, &body, out);
    }
}

/// `pvmxtoi`: hex with or without `0x`; junk stops the number.
/// The leading int of a body, if there is one.
fn first_int(body: &[u8]) -> Option<i32> {
    pvm_proto::xdr::XdrReader::new(body).int("first int").ok()
}

fn parse_hex(s: &str) -> i32 {
    let s = s.trim();
    let s = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")).unwrap_or(s);
    let mut v: u32 = 0;
    for c in s.chars() {
        match c.to_digit(16) {
            Some(d) => v = v.wrapping_mul(16).wrapping_add(d),
            None => break,
        }
    }
    v as i32
}

#[cfg(test)]
mod tests {
    use super::*;
    use pvm_proto::codes::{Sm, ENC_XDR, SYSCTX_TM};
    use pvm_proto::xdr::{XdrReader, XdrWriter};

    #[derive(Default)]
    struct FakeAuth {
        written: Vec<String>,
        created: u32,
        validated: bool,
        removed: Vec<String>,
        fail_write: bool,
    }

    impl AuthFiles for FakeAuth {
        fn write_task_auth(&mut self, path: &str) -> io::Result<()> {
            if self.fail_write {
                return Err(io::Error::new(io::ErrorKind::NotFound, "no"));
            }
            self.written.push(path.to_string());
            Ok(())
        }
        fn create_pvmd_auth(&mut self) -> io::Result<String> {
            self.created += 1;
            Ok(format!("/tmp/pvmtmp000042.{}", self.created))
        }
        fn pvmd_auth_written(&mut self, _path: &str) -> io::Result<bool> {
            Ok(self.validated)
        }
        fn remove(&mut self, path: &str) {
            self.removed.push(path.to_string());
        }
    }

    fn daemon() -> Daemon<FakeAuth> {
        Daemon::new(
            HostConfig::master("vm", "LINUX64", "7f000001:801e"),
            FakeAuth {
                validated: true,
                ..Default::default()
            },
            0,
        )
    }

    fn request(tag: Tm, wid: i32, body: &[u8]) -> (StreamFragHeader, Vec<u8>) {
        let mut p = MsgHeader {
            enc: ENC_XDR,
            tag: tag.code(),
            ctx: SYSCTX_TM,
            wid,
            crc: 0,
        }
        .to_bytes()
        .to_vec();
        p.extend_from_slice(body);
        (
            StreamFragHeader {
                dst: Tid::LOCAL_PVMD,
                src: Tid::UNCONNECTED,
                len: p.len() as u32,
                flags: FragFlags::SOM | FragFlags::EOM,
            },
            p,
        )
    }

    fn send(d: &mut Daemon<FakeAuth>, conn: ConnId, tag: Tm, wid: i32, body: &[u8]) -> Vec<Out> {
        let (h, p) = request(tag, wid, body);
        d.fragment(conn, h, &p, UNIX_EPOCH)
    }

    /// Splits the first Send of `out` into (frag header, msg header, body).
    fn sent(out: &[Out]) -> (StreamFragHeader, MsgHeader, Vec<u8>) {
        let bytes = out
            .iter()
            .find_map(|o| match o {
                Out::Send(_, b) => Some(b.clone()),
                _ => None,
            })
            .expect("a reply");
        let fh = StreamFragHeader::parse(&bytes, u32::MAX).unwrap();
        let mh = MsgHeader::parse(&bytes[16..]).unwrap();
        (fh, mh, bytes[48..].to_vec())
    }

    fn connect(d: &mut Daemon<FakeAuth>, conn: ConnId) -> Tid {
        d.accept(conn, Some(4242));
        let mut w = XdrWriter::new();
        w.int(1318).string("/tmp/pvmtmp000100.0");
        let out = send(d, conn, Tm::Connect, 1, &w.into_inner());
        let (fh, mh, body) = sent(&out);
        assert_eq!(fh.dst, Tid(0));
        assert_eq!(fh.src, Tid::LOCAL_PVMD);
        assert_eq!((mh.tag, mh.wid, mh.ctx), (Tm::Connect.code(), 1, SYSCTX_TM));
        let mut r = XdrReader::new(&body);
        assert_eq!(r.int("v").unwrap(), 1318);
        assert_eq!(r.int("ack").unwrap(), 1);
        assert!(r.string("path").unwrap().starts_with("/tmp/pvmtmp000042."));
        let mut w = XdrWriter::new();
        w.int(4242).int(0);
        let out = send(d, conn, Tm::Conn2, 2, &w.into_inner());
        assert!(out.contains(&Out::FragLimit(conn, MAX_FRAG_CONNECTED)));
        let (fh, _, body) = sent(&out);
        let mut r = XdrReader::new(&body);
        assert_eq!(r.int("ack").unwrap(), 1);
        let tid = Tid(r.int("tid").unwrap());
        assert_eq!(fh.dst, tid);
        for _ in 0..7 {
            r.int("x").unwrap();
        }
        assert_eq!(r.int("udpmax").unwrap(), 4080);
        assert_eq!(r.int("dsig").unwrap(), 0x408c41);
        assert_eq!(r.string("ip").unwrap(), "7f000001:801e");
        assert_eq!(r.int("sched").unwrap(), 0);
        assert_eq!(r.int("trailer magic").unwrap(), migrate::XMAGIC, "migrate.rs trailer");
        r.int("trailer version").unwrap();
        r.int("trailer features").unwrap();
        r.finish("end").unwrap();
        tid
    }

    #[test]
    fn handshake_assigns_sequential_tids() {
        let mut d = daemon();
        assert_eq!(connect(&mut d, 1), Tid(0x40001));
        assert_eq!(connect(&mut d, 2), Tid(0x40002));
        assert_eq!(d.auth.written, vec!["/tmp/pvmtmp000100.0"; 2]);
        assert_eq!(d.auth.removed.len(), 2, "d-auth files are removed after TM_CONN2");
    }

    #[test]
    fn unvalidated_task_is_closed() {
        let mut d = daemon();
        d.auth.validated = false;
        d.accept(1, None);
        let mut w = XdrWriter::new();
        w.int(1318).string("/x");
        send(&mut d, 1, Tm::Connect, 1, &w.into_inner());
        let mut w = XdrWriter::new();
        w.int(1).int(0);
        let out = send(&mut d, 1, Tm::Conn2, 2, &w.into_inner());
        assert!(out.contains(&Out::Close(1)));
        assert_eq!(d.ntasks(), 0);
    }

    #[test]
    fn version_mismatch_is_nacked_and_closed() {
        let mut d = daemon();
        d.accept(1, None);
        let mut w = XdrWriter::new();
        w.int(1317).string("/x");
        let out = send(&mut d, 1, Tm::Connect, 1, &w.into_inner());
        let (_, _, body) = sent(&out);
        let mut r = XdrReader::new(&body);
        assert_eq!((r.int("v").unwrap(), r.int("a").unwrap()), (1318, 0));
        assert_eq!(r.string("p").unwrap(), "");
        assert!(out.contains(&Out::Close(1)));
        assert!(d.auth.written.is_empty());
    }

    #[test]
    fn anything_but_connect_before_auth_closes() {
        let mut d = daemon();
        d.accept(1, None);
        let out = send(&mut d, 1, Tm::Config, 3, &[]);
        assert_eq!(out.iter().filter(|o| matches!(o, Out::Send(..))).count(), 0);
        assert!(out.contains(&Out::Close(1)));
        // A fragment to a task from an anonymous connection too.
        d.accept(2, None);
        let (mut h, p) = request(Tm::Config, 3, &[]);
        h.dst = Tid(0x40001);
        assert!(d.fragment(2, h, &p, UNIX_EPOCH).contains(&Out::Close(2)));
    }

    #[test]
    fn config_mstat_pstat_task() {
        let mut d = daemon();
        let t = connect(&mut d, 1);
        let (_, mh, body) = sent(&send(&mut d, 1, Tm::Config, 3, &[]));
        assert_eq!(mh.wid, 3);
        assert_eq!(&body[..12], &[0, 0, 0, 1, 0, 0, 0, 1, 0, 4, 0, 0]);
        let mut w = XdrWriter::new();
        w.string("vm");
        assert_eq!(
            sent(&send(&mut d, 1, Tm::Mstat, 4, &w.into_inner())).2,
            wire::int_body(0)
        );
        let mut w = XdrWriter::new();
        w.string("nosuch");
        assert_eq!(
            sent(&send(&mut d, 1, Tm::Mstat, 5, &w.into_inner())).2,
            wire::int_body(-6)
        );
        assert_eq!(
            sent(&send(&mut d, 1, Tm::Pstat, 6, &wire::int_body(t.0))).2,
            wire::int_body(0)
        );
        assert_eq!(
            sent(&send(&mut d, 1, Tm::Pstat, 7, &wire::int_body(0x40007))).2,
            wire::int_body(-31)
        );
        let (_, _, body) = sent(&send(&mut d, 1, Tm::Task, 8, &wire::int_body(0)));
        let mut r = XdrReader::new(&body);
        assert_eq!(r.int("err").unwrap(), 0);
        assert_eq!(r.int("tid").unwrap(), t.0);
        assert_eq!(r.int("ptid").unwrap(), 0);
        assert_eq!(r.int("host").unwrap(), 0x40000);
        assert_eq!(r.int("flag").unwrap(), TF_CONN);
        assert_eq!(r.string("aout").unwrap(), "");
        assert_eq!(r.int("pid").unwrap(), 4242);
        assert!(r.is_empty());
    }

    #[test]
    fn db_get_tracer_is_not_found() {
        let mut d = daemon();
        connect(&mut d, 1);
        let mut w = XdrWriter::new();
        w.int(3).int(0x40001).string("###_PVM_TRACER_###").int(0).int(0);
        let (_, mh, body) = sent(&send(&mut d, 1, Tm::Db, 3, &w.into_inner()));
        assert_eq!(mh.tag, Tm::Db.code());
        assert_eq!(body, wire::int_body(-32));
    }

    #[test]
    fn mailbox_put_get_from_capture_and_wait_for_info() {
        let mut d = daemon();
        let t = connect(&mut d, 1);
        connect(&mut d, 2);
        let embedded: Vec<u8> = [4u32, 0, 0, 0, 0x1000_0000, 0, t.0 as u32, 0, 4, 12345]
            .iter()
            .flat_map(|x| x.to_be_bytes())
            .collect();
        // Task 2 waits for "late" (flags WAIT_FOR_INFO); nothing is sent yet.
        let mut w = XdrWriter::new();
        w.int(3).int(0).string("late").int(0).int(32);
        assert!(send(&mut d, 2, Tm::Db, 7, &w.into_inner()).is_empty());
        let mut w = XdrWriter::new();
        w.int(1).int(t.0).string("late").int(-1).int(0);
        let mut body = w.into_inner();
        body.extend_from_slice(&embedded);
        let out = send(&mut d, 1, Tm::Db, 9, &body);
        let sends: Vec<&Out> = out.iter().filter(|o| matches!(o, Out::Send(..))).collect();
        assert_eq!(sends.len(), 2, "{out:?}");
        let Out::Send(2, b) = sends[0] else { panic!("{sends:?}") };
        assert_eq!(&b[48..], &wire::db_get_reply(0, &embedded)[..]);
        assert_eq!(MsgHeader::parse(&b[16..]).unwrap().wid, 7);
        let Out::Send(1, b) = sends[1] else { panic!() };
        assert_eq!(&b[48..], &wire::int_body(0)[..]);
        // A PUT with a broken embedded message is refused.
        let mut w = XdrWriter::new();
        w.int(1).int(t.0).string("bad").int(-1).int(0).int(99);
        assert_eq!(
            sent(&send(&mut d, 1, Tm::Db, 10, &w.into_inner())).2,
            wire::int_body(-12)
        );
        // Non-persistent entries go when their owner leaves.
        d.closed(1);
        let mut w = XdrWriter::new();
        w.int(3).int(0).string("late").int(0).int(0);
        assert_eq!(
            sent(&send(&mut d, 2, Tm::Db, 11, &w.into_inner())).2,
            wire::int_body(-32)
        );
    }

    #[test]
    fn contexts_are_hostpart_counters_and_can_be_freed() {
        let mut d = daemon();
        connect(&mut d, 1);
        let c1 = sent(&send(&mut d, 1, Tm::Context, 3, &wire::int_body(0))).2;
        assert_eq!(c1, wire::int_body(0x40001));
        let c2 = sent(&send(&mut d, 1, Tm::Context, 4, &wire::int_body(0))).2;
        assert_eq!(c2, wire::int_body(0x40002));
        assert_eq!(
            sent(&send(&mut d, 1, Tm::Context, 5, &wire::int_body(0x40001))).2,
            wire::int_body(0)
        );
        assert_eq!(
            sent(&send(&mut d, 1, Tm::Context, 6, &wire::int_body(0x40001))).2,
            wire::int_body(-32)
        );
    }

    #[test]
    fn hostsync_local_and_unknown() {
        let mut d = daemon();
        connect(&mut d, 1);
        let now = UNIX_EPOCH + std::time::Duration::new(1000, 5_000);
        let (h, p) = request(Tm::HostSync, 3, &wire::int_body(0x40000));
        let out = d.fragment(1, h, &p, now);
        assert_eq!(sent(&out).2, wire::hostsync_reply(0, 1000, 5));
        let (h, p) = request(Tm::HostSync, 4, &wire::int_body(0x80000));
        assert_eq!(sent(&d.fragment(1, h, &p, now)).2, wire::int_body(-6));
    }

    #[test]
    fn halt_and_verified_pids() {
        let mut d = daemon();
        connect(&mut d, 1);
        assert_eq!(d.task_pids(), vec![4242]);
        let out = send(&mut d, 1, Tm::Halt, 3, &[]);
        assert_eq!(out.last(), Some(&Out::Halt));
        assert!(!out.iter().any(|o| matches!(o, Out::Send(..))), "no reply to TM_HALT");
        // A task whose claimed pid the kernel does not confirm is never signalled.
        let mut d = daemon();
        d.accept(5, Some(1));
        let mut w = XdrWriter::new();
        w.int(1318).string("/x");
        send(&mut d, 5, Tm::Connect, 1, &w.into_inner());
        let mut w = XdrWriter::new();
        w.int(4242).int(0);
        send(&mut d, 5, Tm::Conn2, 2, &w.into_inner());
        assert_eq!(d.ntasks(), 1);
        assert!(d.task_pids().is_empty());
    }

    #[test]
    fn exit_replies_then_closes() {
        let mut d = daemon();
        connect(&mut d, 1);
        let out = send(&mut d, 1, Tm::Exit, 9, &[]);
        let (_, mh, body) = sent(&out);
        assert_eq!((mh.tag, mh.wid, body.len()), (Tm::Exit.code(), 9, 0));
        assert_eq!(out.last(), Some(&Out::Close(1)));
        assert_eq!(d.ntasks(), 0);
    }

    #[test]
    fn user_fragments_are_relayed_with_src_rewritten() {
        let mut d = daemon();
        let a = connect(&mut d, 1);
        let b = connect(&mut d, 2);
        let payload = vec![0xabu8; 40];
        let h = StreamFragHeader {
            dst: b,
            src: Tid(0x1234),
            len: 40,
            flags: FragFlags::SOM,
        };
        let out = d.fragment(1, h, &payload, UNIX_EPOCH);
        let Out::Send(to, bytes) = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(*to, 2);
        let fh = StreamFragHeader::parse(bytes, u32::MAX).unwrap();
        assert_eq!((fh.dst, fh.src, fh.len, fh.flags), (b, a, 40, FragFlags::SOM));
        assert_eq!(&bytes[16..], &payload[..]);
        // The shell's fast path agrees byte for byte.
        assert_eq!(d.relay_target(1, &h), Some((2, bytes[..16].try_into().unwrap())));
        // Unknown destination: dropped with a log line, and no fast path.
        let h = StreamFragHeader { dst: Tid(0x40077), ..h };
        assert_eq!(d.relay_target(1, &h), None);
        let out = d.fragment(1, h, &payload, UNIX_EPOCH);
        assert!(matches!(&out[..], [Out::Log(l)] if l.contains("no such task")));
        // Requests to the daemon and fragments from unauthenticated connections never take it.
        let h = StreamFragHeader {
            dst: Tid::LOCAL_PVMD,
            ..h
        };
        assert_eq!(d.relay_target(1, &h), None);
        d.accept(9, None);
        let h = StreamFragHeader { dst: b, ..h };
        assert_eq!(d.relay_target(9, &h), None);
    }

    #[test]
    fn multicast_is_one_shot_and_keeps_the_group_tid() {
        let mut d = daemon();
        let a = connect(&mut d, 1);
        let b = connect(&mut d, 2);
        let c = connect(&mut d, 3);
        let mut w = XdrWriter::new();
        w.int(3).int(b.0).int(c.0).int(0x80001);
        assert!(
            send(&mut d, 1, Tm::Mca, 0, &w.into_inner()).is_empty(),
            "no reply to TM_MCA"
        );
        let g = Tid::multicast_of(a);
        let h = StreamFragHeader {
            dst: g,
            src: Tid(0),
            len: 4,
            flags: FragFlags::SOM | FragFlags::EOM,
        };
        let out = d.fragment(1, h, &[1, 2, 3, 4], UNIX_EPOCH);
        let to: Vec<ConnId> = out
            .iter()
            .filter_map(|o| match o {
                Out::Send(c, b) => {
                    let fh = StreamFragHeader::parse(b, u32::MAX).unwrap();
                    assert_eq!((fh.dst, fh.src), (g, a));
                    Some(*c)
                }
                _ => None,
            })
            .collect();
        assert_eq!(to, vec![2, 3]);
        // Freed after EOM.
        let out = d.fragment(1, h, &[1, 2, 3, 4], UNIX_EPOCH);
        assert!(matches!(&out[..], [Out::Log(l)] if l.contains("no such multicast")));
    }

    #[test]
    fn task_exit_notify_fires_on_disconnect() {
        let mut d = daemon();
        connect(&mut d, 1);
        let b = connect(&mut d, 2);
        let mut w = XdrWriter::new();
        w.int(1).int(0).int(99).int(2).int(b.0).int(0x40055);
        let (h, p) = request(Tm::Notify, 0, &w.into_inner());
        let out = d.fragment(1, h, &p, UNIX_EPOCH);
        // The unknown task fires at once, the live one waits.
        let (fh, mh, body) = sent(&out);
        assert_eq!((fh.dst, fh.src, mh.tag, mh.ctx), (Tid(0x40001), Tid::LOCAL_PVMD, 99, 0));
        assert_eq!(body, wire::int_body(0x40055));
        let out = d.closed(2);
        let (_, mh, body) = sent(&out);
        assert_eq!((mh.tag, body), (99, wire::int_body(b.0)));
    }

    #[test]
    fn unimplemented_requests_get_an_error_not_silence() {
        let mut d = daemon();
        connect(&mut d, 1);
        let tm = Tm::DelHost;
        let (_, mh, body) = sent(&send(&mut d, 1, tm, 3, &[]));
        assert_eq!((mh.tag, body), (tm.code(), wire::int_body(-24)), "{tm:?}");
        // Registrations answer like the legacy daemon.
        let (_, _, body) = sent(&send(&mut d, 1, Tm::Tasker, 4, &wire::int_body(1)));
        assert_eq!(body, wire::int_body(0));
        let (_, _, body) = sent(&send(&mut d, 1, Tm::Tasker, 5, &wire::int_body(1)));
        assert_eq!(body, wire::int_body(PvmError::Already.code()));
        let (_, _, body) = sent(&send(&mut d, 1, Tm::Hoster, 6, &wire::int_body(0)));
        assert_eq!(body, wire::int_body(PvmError::NoTask.code()));
        let (_, _, body) = sent(&send(&mut d, 1, Tm::Sched, 7, &[]));
        assert_eq!(&body[..8], &[0, 0, 0, 0, 0, 4, 0, 0], "no previous RM; master hostpart");
        // A second task is told about the RM, and the RM hears of it (SM_EXECACK 1, tid).
        d.accept(2, Some(4242));
        let out = send(&mut d, 2, Tm::Connect, 1, &{
            let mut w = XdrWriter::new();
            w.int(TDPROTOCOL).string("/tmp/t-auth");
            w.into_inner()
        });
        assert_eq!(out.len(), 1);
        let mut w = XdrWriter::new();
        w.int(4242).int(0);
        let out = send(&mut d, 2, Tm::Conn2, 2, &w.into_inner());
        let sm: Vec<_> = out
            .iter()
            .filter_map(|o| match o {
                Out::Send(1, b) => Some(b.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(sm.len(), 1, "{out:?}");
        let mh = MsgHeader::parse(&sm[0][16..]).unwrap();
        assert_eq!(mh.tag, Sm::ExecAck.code());
        assert_eq!(&sm[0][48..], &[0, 0, 0, 1, 0, 4, 0, 2]);
        // The RM exits: registrations end with a log line.
        let out = d.closed(1);
        assert!(
            out.iter()
                .any(|o| matches!(o, Out::Log(l) if l.contains("places tasks itself"))),
            "{out:?}"
        );
    }

    /// (tid, path, argv, env) of each launch.
    type Launches = std::rc::Rc<std::cell::RefCell<Vec<(Tid, String, Vec<String>, Vec<String>)>>>;

    struct FakeLauncher {
        next_pid: i32,
        launched: Launches,
    }

    impl Launcher for FakeLauncher {
        fn find(&self, file: &str) -> Option<String> {
            (file == "prog").then(|| "/bin/prog".to_string())
        }
        fn launch(&mut self, tid: Tid, path: &str, argv: &[String], env: &[String]) -> io::Result<i32> {
            self.next_pid += 1;
            self.launched
                .borrow_mut()
                .push((tid, path.to_string(), argv.to_vec(), env.to_vec()));
            Ok(self.next_pid)
        }
    }

    fn spawn_body(file: &str, flags: i32, where_: &str, count: i32) -> Vec<u8> {
        let mut w = XdrWriter::new();
        w.string(file)
            .int(flags)
            .string(where_)
            .int(count)
            .int(1)
            .string("arg1");
        for _ in 0..6 {
            w.int(0);
        }
        w.int(1).string("PVMCTX=0x0");
        w.into_inner()
    }

    #[test]
    fn spawn_attach_queue_output_and_exit() {
        let mut d = daemon();
        let launched = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        d.set_launcher(Box::new(FakeLauncher {
            next_pid: 100,
            launched: launched.clone(),
        }));
        let parent = connect(&mut d, 1);
        let (_, _, body) = sent(&send(&mut d, 1, Tm::Spawn, 3, &spawn_body("prog", 0, "vm:/work", 2)));
        assert_eq!(body, wire::spawn_reply(&[0x40002, 0x40003]));
        {
            let l = launched.borrow();
            assert_eq!(l.len(), 2);
            assert_eq!(l[0].1, "/bin/prog");
            assert_eq!(l[0].2, vec!["/bin/prog", "arg1"]);
            assert_eq!(l[0].3, vec!["PVMCTX=0x0", "PVMSPAWNWD=/work", "PVMEPID=1073741824"]);
            assert_eq!(l[1].3[2], "PVMEPID=1073741825");
        }
        // Not connected yet: listed with TF_FORKD only; messages to it wait.
        let (_, _, body) = sent(&send(&mut d, 1, Tm::Task, 4, &wire::int_body(0x40002)));
        let mut r = XdrReader::new(&body);
        let v: Vec<i32> = (0..5).map(|_| r.int("x").unwrap()).collect();
        assert_eq!(v, vec![0, 0x40002, parent.0, 0x40000, TF_FORKD]);
        assert_eq!(r.string("aout").unwrap(), "prog");
        let h = StreamFragHeader {
            dst: Tid(0x40002),
            src: Tid(0),
            len: 4,
            flags: FragFlags::SOM | FragFlags::EOM,
        };
        assert!(d.fragment(1, h, &[9, 9, 9, 9], UNIX_EPOCH).is_empty(), "queued");
        // The child (pid 101) connects with its PVMEPID cookie: it gets tid 40002 and parent.
        d.accept(7, Some(101));
        let mut w = XdrWriter::new();
        w.int(1318).string("/x");
        send(&mut d, 7, Tm::Connect, 1, &w.into_inner());
        let mut w = XdrWriter::new();
        w.int(101).int(0x4000_0000);
        let out = send(&mut d, 7, Tm::Conn2, 2, &w.into_inner());
        let (fh, _, body) = sent(&out);
        assert_eq!(fh.dst, Tid(0x40002));
        assert_eq!(&body[..12], &[0, 0, 0, 1, 0, 4, 0, 2, 0, 4, 0, 1]);
        let Some(Out::Send(7, queued)) = out.last() else {
            panic!("{out:?}")
        };
        assert_eq!(&queued[16..], &[9, 9, 9, 9]);
        // Output without a collector goes to the log by lines.
        let out = d.task_output(Tid(0x40002), b"hello\nwor");
        assert_eq!(out, vec![Out::Log("[t40002] hello".into())]);
        // Parent asked to be told when the child exits.
        let mut w = XdrWriter::new();
        w.int(1).int(0).int(99).int(1).int(0x40002);
        send(&mut d, 1, Tm::Notify, 0, &w.into_inner());
        let sig = || {
            let mut w = XdrWriter::new();
            w.int(0x40002).int(libc::SIGTERM);
            w.into_inner()
        };
        let out = send(&mut d, 1, Tm::SendSig, 6, &sig());
        assert!(out.contains(&Out::Signal(101, libc::SIGTERM)), "{out:?}");
        let out = d.task_exited(Tid(0x40002));
        assert!(out.contains(&Out::Log("[t40002] wor".into())), "{out:?}");
        // What it wrote before exiting is read first: its connection is drained, and it is
        // gone (the notify fires) when that ends.
        assert!(out.contains(&Out::Drain(7)), "{out:?}");
        assert!(!out.iter().any(|o| matches!(o, Out::Send(1, _))), "{out:?}");
        // A message the child wrote just before it exited still reaches the parent.
        let h = StreamFragHeader {
            dst: parent,
            src: Tid(0x40002),
            len: 3,
            flags: FragFlags::SOM | FragFlags::EOM,
        };
        let out = d.fragment(7, h, &[1, 2, 3], UNIX_EPOCH);
        assert!(matches!(&out[..], [Out::Send(1, b)] if b[16..] == [1, 2, 3]), "{out:?}");
        // Its pid may belong to another process by now: no signal goes to it.
        let out = send(&mut d, 1, Tm::SendSig, 6, &sig());
        assert!(!out.iter().any(|o| matches!(o, Out::Signal(..))), "{out:?}");
        let out = d.closed(7);
        let (fh, mh, body) = sent(&out);
        assert_eq!((fh.dst, mh.tag, body), (parent, 99, wire::int_body(0x40002)));
        assert_eq!(
            sent(&send(&mut d, 1, Tm::Pstat, 5, &wire::int_body(0x40002))).2,
            wire::int_body(-31)
        );
    }

    #[test]
    fn spawn_errors() {
        let mut d = daemon();
        d.set_launcher(Box::new(FakeLauncher {
            next_pid: 1,
            launched: Default::default(),
        }));
        connect(&mut d, 1);
        let r = |d: &mut Daemon<FakeAuth>, b: Vec<u8>| sent(&send(d, 1, Tm::Spawn, 3, &b)).2;
        assert_eq!(r(&mut d, spawn_body("nope", 0, "", 2)), wire::spawn_reply(&[-7, -7]));
        assert_eq!(
            r(&mut d, spawn_body("prog", 1, "otherhost", 1)),
            wire::spawn_reply(&[-6])
        );
        assert_eq!(r(&mut d, spawn_body("prog", 2, "SUN4", 1)), wire::spawn_reply(&[-6]));
        assert_eq!(r(&mut d, spawn_body("prog", 1 | 32, "vm", 1)), wire::spawn_reply(&[-6]));
        assert_eq!(r(&mut d, spawn_body("prog", 0, "", 5000)), wire::int_body(-27));
        // count 0: bad format, no reply (as the legacy).
        assert!(send(&mut d, 1, Tm::Spawn, 3, &spawn_body("prog", 0, "", 0))
            .iter()
            .all(|o| matches!(o, Out::Log(_))));
    }

    #[test]
    fn multi_fragment_request_is_reassembled() {
        let mut d = daemon();
        connect(&mut d, 1);
        let mut w = XdrWriter::new();
        w.string("vm");
        let (h, p) = request(Tm::Mstat, 3, &w.into_inner());
        let (a, b) = p.split_at(34);
        let h1 = StreamFragHeader {
            len: a.len() as u32,
            flags: FragFlags::SOM,
            ..h
        };
        assert!(d.fragment(1, h1, a, UNIX_EPOCH).is_empty());
        let h2 = StreamFragHeader {
            len: b.len() as u32,
            flags: FragFlags::EOM,
            ..h
        };
        assert_eq!(sent(&d.fragment(1, h2, b, UNIX_EPOCH)).2, wire::int_body(0));
    }

    #[test]
    fn bogus_codes_and_garbage_are_logged_not_fatal() {
        let mut d = daemon();
        connect(&mut d, 1);
        let (mut h, mut p) = request(Tm::Config, 3, &[]);
        // Above TM_LAST and outside the migration range (0x80010100.., daemon/migrate.rs).
        p[4..8].copy_from_slice(&0x8001_0300u32.to_be_bytes());
        let out = d.fragment(1, h, &p, UNIX_EPOCH);
        assert!(matches!(&out[..], [Out::Log(l)] if l.contains("bogus tag")));
        // Short SOM fragment.
        h.len = 3;
        let out = d.fragment(1, h, &[1, 2, 3], UNIX_EPOCH);
        assert!(matches!(&out[..], [Out::Log(l)] if l.contains("too short")));
        // Truncated bodies.
        for tm in [Tm::Mstat, Tm::Pstat, Tm::Task, Tm::Db, Tm::HostSync] {
            let out = send(&mut d, 1, tm, 4, &[0, 0]);
            assert!(out.iter().all(|o| matches!(o, Out::Log(_))), "{tm:?}: {out:?}");
        }
        // Still connected.
        assert_eq!(d.ntasks(), 1);
    }

    #[test]
    fn setopt_and_getopt() {
        let mut d = daemon();
        let t = connect(&mut d, 1);
        let mut w = XdrWriter::new();
        w.int(1).string("40002").int(3).string("0x10");
        let (_, _, body) = sent(&send(&mut d, 1, Tm::SetOpt, 3, &w.into_inner()));
        assert!(body.is_empty());
        let (_, _, body) = sent(&send(&mut d, 1, Tm::GetOpt, 4, &[]));
        let mut r = XdrReader::new(&body);
        assert_eq!(r.int("tid").unwrap(), t.0);
        assert_eq!(r.int("ptid").unwrap(), 0);
        assert_eq!(r.int("outtid").unwrap(), 0x40002);
        assert_eq!(r.int("outctx").unwrap(), 0);
        assert_eq!(r.int("outtag").unwrap(), 0x10);
    }

    proptest::proptest! {
        /// Whatever fragments arrive, in whatever order, on connected or anonymous connections,
        /// the daemon answers with decisions, never a panic, and only writes where it may.
        #[test]
        fn arbitrary_fragments_never_panic(
            frags in proptest::collection::vec(
                (0u64..4, proptest::prelude::any::<u32>(), 0u8..4, 0usize..5, proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80)),
                0..40,
            )
        ) {
            let mut d = daemon();
            d.set_launcher(Box::new(FakeLauncher { next_pid: 1, launched: Default::default() }));
            connect(&mut d, 1);
            connect(&mut d, 2);
            d.accept(3, None);
            let dsts = [0x8000_0000u32, 0x40001, 0x40002, 0x4004_0001];
            for (conn, dst_bits, flags, tagsel, mut payload) in frags {
                // Make some of them requests with real codes so handlers see garbage bodies.
                if payload.len() >= 32 && tagsel < 4 {
                    let code = [Tm::Spawn, Tm::Db, Tm::Notify, Tm::Mca][tagsel].code();
                    payload[4..8].copy_from_slice(&code.to_be_bytes());
                }
                let dst = if dst_bits % 3 == 0 { dst_bits } else { dsts[(dst_bits % 4) as usize] };
                let h = StreamFragHeader {
                    dst: Tid::from_u32(dst),
                    src: Tid(0),
                    len: payload.len() as u32,
                    flags: FragFlags::from_bits_retain(flags),
                };
                for o in d.fragment(conn, h, &payload, UNIX_EPOCH) {
                    if let Out::Send(c, b) = o {
                        proptest::prop_assert!(c == 1 || c == 2 || c == 3);
                        proptest::prop_assert!(StreamFragHeader::parse(&b, u32::MAX).is_ok());
                    }
                }
            }
            d.closed(1);
            d.closed(2);
            d.closed(3);
        }
    }

    #[test]
    fn parse_hex_like_pvmxtoi() {
        assert_eq!(parse_hex("0x1f"), 31);
        assert_eq!(parse_hex("40001"), 0x40001);
        assert_eq!(parse_hex("ffffffff"), -1);
        assert_eq!(parse_hex("12zz"), 0x12);
    }
}
