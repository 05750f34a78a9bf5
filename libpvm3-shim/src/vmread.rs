//! Single-copy transfer of large messages between two pvm-rs tasks of one host
//! (`process_vm_readv(2)`, "cross-memory attach").
//!
//! Why: a large message on a direct route is copied four times on its way (pack, into the
//! socket, out of the socket, unpack); a raw socket copy between two processes has only the two
//! in the middle. Reading the sender's packed bytes straight into the receiver's message buffer
//! replaces the two socket copies with one, and no socket buffer sits in between.
//!
//! How (docs/extensions.md, "Direct routes: single-copy large messages"):
//! * Capability: both ends of a Unix-socket direct route offered [`CAP_VMREAD`] in the third
//!   int of the pvm-rs route extension (TC_CONREQ/TC_CONACK, `route.rs`). A legacy task never
//!   sees it; an older pvm-rs task reads two ints and ignores the third.
//! * A message of at least [`VMREAD_MIN`] (and at most [`VMREAD_MAX`]) body bytes goes out as a [`TC_VMDESC`] message on the
//!   route ([`Desc`]: transfer id, sender pid, the real message's header, and the (address,
//!   length) pieces of its packed body), and the sender waits in [`send`] (serving all its other
//!   input meanwhile, so two tasks sending big messages at each other both progress) until the
//!   [`TC_VMACK`] for that id comes back. Only then does `pvm_send` return and may the body be
//!   freed or changed.
//! * The receiver ([`on_desc`]) checks that the pid in the descriptor is the one the kernel gives
//!   for the socket's peer (`SO_PEERCRED`, translated into our pid namespace): a peer in another
//!   pid namespace (a restored migration) or a forked copy never gets its memory read at the
//!   wrong pid. It reads the pieces into a (pooled) buffer with `process_vm_readv`, answers
//!   [`ACK_DONE`] and delivers the message as if it had come over the socket.
//! * Shared arena: a sender's large buffers live in a sealed shared memfd (`arena.rs`). The
//!   receiver maps it once per route ([`PeerArena`]) and copies pieces that lie in it with
//!   `memcpy`, at about twice the speed of `process_vm_readv` here; a body in the arena goes by
//!   descriptor at any size.
//! * Fallback: if anything fails (EPERM from a ptrace policy such as Yama or a seccomp filter,
//!   ESRCH, EFAULT, a pid mismatch, a descriptor that does not parse), the receiver answers
//!   [`ACK_INLINE`] and turns the capability off for the route; the sender then sends the
//!   message the ordinary way on the same route (nothing else was written to it in between),
//!   and sends inline on that route from then on.
//! * Park (migration, `park.rs`): a task never parks while one of its descriptors is out
//!   ([`Lib::vr`] `busy`, checked in `Lib::pump`): the wait ends with the ack (transfer done)
//!   or with the route's end, after which the message goes through the pvmd.
//!
//! Security: we do not call `prctl(PR_SET_PTRACER)`. Under Yama `ptrace_scope` 1 a non-root
//! receiver may then not read its (non-descendant) sender, gets EPERM and the route falls back
//! to the socket. Granting it would need either one `PR_SET_PTRACER(peer)` (a single process-wide
//! slot, clobbered by every other route and by any other user of it in the program) or
//! `PR_SET_PTRACER_ANY`, which lets every process of the user attach to the task: exactly what
//! the administrator's Yama setting forbids, traded for speed. Scope 0 (and root, or
//! CAP_SYS_PTRACE) allow the read: the same user could ptrace the sender anyway.
//! `PVM_NO_VMREAD` in a task's environment keeps it from offering the capability.

use crate::core::{Lib, RouteState, TIDPVMD};
use pvm_proto::codes::SYSCTX_TC;
use pvm_proto::encoding::MsgBody;
use pvm_proto::mesg::MsgHeader;
use pvm_proto::message::Message;
use pvm_proto::Tid;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

pub use pvm_proto::vmdesc::{
    off, u64_at, Ack, Desc, DescError, ACK_DONE, ACK_INLINE, MAX_PIECES, TC_VMACK, TC_VMACK_PVMD, TC_VMDESC,
    TC_VMDESC_PVMD,
};

// A descriptor may announce what one message of this library may hold, no more.
const _: () = assert!(pvm_proto::vmdesc::MAX_TOTAL == crate::core::MAX_MESSAGE as u64);

/// Capability bit of the route extension's third int: "I read large messages from you with
/// process_vm_readv and let you read mine".
pub const CAP_VMREAD: i32 = 1;

/// Messages at least this large (body bytes) are sent by descriptor. Below it a descriptor, an
/// ack and the waiting cost more than the socket copy they save (docs/benchmarks.md).
pub const VMREAD_MIN: usize = 256 << 10;

/// Messages larger than this (body bytes) keep the socket. Measured (docs/benchmarks.md): at
/// 16 MB the single copy is no faster on this 2-core guest and, under heavy load, up to twice
/// as slow: the receiver then does the transfer copy and the unpack copy alone while the
/// sender sleeps, whereas on the socket both tasks copy at once (and on a busy machine two
/// runnable tasks get twice the CPU share of one). `PVM_VMREAD_MAX` (bytes) overrides it.
pub const VMREAD_MAX: usize = 4 << 20;

/// The largest body sent by descriptor: [`VMREAD_MAX`] for a body the peer reads with
/// `process_vm_readv`, no limit but the library's own for one in our shared arena (the peer
/// copies it with `memcpy`, which the 16 MB case measured above does not suffer from; see
/// docs/bench-daemon.md, "Shared arena"). `PVM_VMREAD_MAX` sets both.
fn max_size(in_arena: bool) -> usize {
    static M: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    let set = *M.get_or_init(|| std::env::var("PVM_VMREAD_MAX").ok().and_then(|v| v.trim().parse().ok()));
    match (set, in_arena) {
        (Some(m), _) => m,
        (None, true) => crate::core::MAX_MESSAGE,
        (None, false) => VMREAD_MAX,
    }
}

/// Per-task state of the transfers.
#[derive(Debug, Default)]
pub struct State {
    next_xid: u64,
    /// Acks received and not yet taken by the waiting send: (peer tid, xid, status).
    acks: Vec<(i32, u64, i32)>,
    /// Sends waiting for their ack (a park waits until this is 0).
    pub busy: u32,
    /// The pvmd answered "inline" to a descriptor: no more through it.
    pvmd_inline: bool,
}

/// Largest body handed to the pvmd by descriptor: the pvmd copies it in one go on its event
/// loop (2–5 ms for 32 MB here: 54–152 µs per MB measured), where a larger one would hold up
/// every other task's traffic; larger ones go over the socket, which the pvmd passes on while
/// they arrive.
pub const PVMD_RELAY_MAX: usize = 32 << 20;

/// This library takes part in the daemon route's arena relay (pvmd-rs `server/arelay.rs`):
/// it sends large messages to its pvmd by descriptor and takes them from it the same way.
/// Off with `PVM_NO_VMREAD`, `PVM_NO_ARENA_RELAY`, or wherever our arena stays off.
pub fn pvmd_relay_offered() -> bool {
    offered() && crate::arena::off_reason().is_none() && std::env::var_os("PVM_NO_ARENA_RELAY").is_none()
}

/// A large message to `dst` may go to the pvmd by descriptor: the pvmd announced the arena
/// relay, we offer it, `dst` is a task of this host (the pvmd passes a message for another host
/// on in pieces as it reads them; a descriptor would make it wait for the whole), and the body
/// is at most [`PVMD_RELAY_MAX`].
fn pvmd_relay(lib: &Lib, dst: i32, len: usize) -> bool {
    let to_task = dst > 0 && dst & crate::core::TIDGID == 0;
    let here = (dst ^ lib.mytid) as u32 & pvm_proto::Tid::HOST_MASK == 0;
    to_task
        && here
        && len <= PVMD_RELAY_MAX
        && !lib.vr.pvmd_inline
        && lib.xfeatures.is_some_and(|f| f & crate::park::FEAT_ARENA_RELAY != 0)
        && pvmd_relay_offered()
}

/// This task offers the capability (not with `PVM_NO_VMREAD` set).
pub fn offered() -> bool {
    std::env::var_os("PVM_NO_VMREAD").is_none()
}

/// The capability bits this task offers on a route.
pub fn caps() -> i32 {
    if offered() {
        CAP_VMREAD
    } else {
        0
    }
}

/// Test hook: `PVM_VMREAD_FAIL` makes every read fail as with EPERM (the fallback path).
fn forced_failure() -> bool {
    std::env::var_os("PVM_VMREAD_FAIL").is_some()
}

/// The pid of a connected Unix socket's peer, in our pid namespace (0 when it lives in a
/// namespace we cannot see), from the kernel, not from anything the peer wrote.
pub fn peer_pid(fd: std::os::fd::RawFd) -> Option<i32> {
    let mut c = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt(SO_PEERCRED) writes at most `len` bytes into a ucred.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            &mut c as *mut _ as *mut libc::c_void,
            &mut len,
        )
    };
    (r == 0 && c.pid > 0).then_some(c.pid)
}

/// Turns the capability on for a freshly connected route when both ends offered it.
pub fn enable(s: &mut crate::net::Stream, peer_caps: i32) {
    if peer_caps & CAP_VMREAD == 0 || !offered() || !matches!(s.sock, crate::net::Sock::Unix(_)) {
        return;
    }
    if let Some(pid) = peer_pid(s.sock.fd()) {
        s.vmread_pid = pid;
    }
}

pub use crate::arena::PeerArena;

/// How long after not finding a peer's arena we look again (it makes one at its first large
/// message).
const ARENA_RELOOK: Duration = Duration::from_secs(1);

/// The arena of the peer on the route from `tid` (mapped on first use), if it has one.
fn peer_arena(lib: &mut Lib, tid: i32, pid: i32) -> Option<std::sync::Arc<PeerArena>> {
    stream_arena(route_stream(lib, tid)?, pid)
}

/// The arena of process `pid`, the peer of `s`, mapped once per stream (looked for again
/// [`ARENA_RELOOK`] after a miss). What keeps our own arena off keeps us from mapping a peer's
/// too (`arena::off_reason`: the environment, or an address-space limit that 8 GiB per peer
/// would count against).
fn stream_arena(s: &mut crate::net::Stream, pid: i32) -> Option<std::sync::Arc<PeerArena>> {
    if s.peer_arena.is_none() && !s.arena_looked.is_some_and(|t| t.elapsed() < ARENA_RELOOK) {
        s.arena_looked = Some(std::time::Instant::now());
        if crate::arena::off_reason().is_none() {
            s.peer_arena = PeerArena::open(pid).map(std::sync::Arc::new);
        }
    }
    s.peer_arena.clone()
}

/// Outcome of [`send`].
pub enum Sent {
    /// The peer has the message.
    Done,
    /// Not sent: send it the ordinary way (the route was re-looked up by the caller).
    Inline,
}

/// Sends `body` to `dst` by descriptor if the route allows it, waiting for the ack. Called by
/// `Lib::send_raw_enc` before it writes a message on a route.
pub fn send(
    lib: &mut Lib,
    src: i32,
    dst: i32,
    header: &MsgHeader,
    body: &MsgBody,
    via_pvmd: bool,
) -> Result<Sent, i32> {
    let bytes = body.bytes();
    let in_arena = crate::arena::holds(bytes.as_ptr(), bytes.len());
    if src != lib.mytid || bytes.len() < VMREAD_MIN || bytes.len() > max_size(in_arena).min(crate::core::MAX_MESSAGE) {
        return Ok(Sent::Inline);
    }
    let route = if via_pvmd { None } else { lib.routes.get(&dst) };
    let through_pvmd = match route {
        Some(RouteState::Open(s)) if s.vmread_pid > 0 => false,
        Some(RouteState::Open(_)) => return Ok(Sent::Inline),
        _ if in_arena && header.ctx != SYSCTX_TC && pvmd_relay(lib, dst, bytes.len()) => true,
        _ => return Ok(Sent::Inline),
    };
    lib.vr.next_xid = lib.vr.next_xid.wrapping_add(1);
    let xid = lib.vr.next_xid;
    let d = Desc {
        xid,
        pid: std::process::id() as i32,
        header: *header,
        total: bytes.len() as u64,
        pieces: vec![(bytes.as_ptr() as u64, bytes.len() as u64)],
    };
    let m = MsgBody::from_vec(header.enc, d.emit());
    lib.send_raw(src, dst, TC_VMDESC, SYSCTX_TC, 0, &m, through_pvmd)?;
    // From here until the ack the peer (or the pvmd) may read `bytes`: this function holds the
    // only borrow of the body and returns only after the ack or the connection's end.
    lib.vr.busy += 1;
    let r = wait_ack(lib, dst, xid, through_pvmd);
    lib.vr.busy -= 1;
    if through_pvmd {
        if let (Some(path), Ok(st)) = (std::env::var_os("PVM_VMREAD_TRACE"), &r) {
            let how = if *st == Some(ACK_DONE) { "sent" } else { "sent-inline" };
            append(
                &path,
                &format!("t{:x} t{dst:x} {how} {} pvmd\n", lib.mytid, bytes.len()),
            );
        }
    }
    match r? {
        Some(ACK_DONE) => Ok(Sent::Done),
        Some(_) if through_pvmd => {
            lib.vr.pvmd_inline = true;
            Ok(Sent::Inline)
        }
        Some(_) => {
            if let Some(RouteState::Open(s)) = lib.routes.get_mut(&dst) {
                s.vmread_pid = 0;
            }
            Ok(Sent::Inline)
        }
        // The route ended unanswered: the peer never read the descriptor (a reader acks before
        // the ack could be lost with the route), the caller sends through the pvmd.
        None => Ok(Sent::Inline),
    }
}

/// Waits for the ack of `xid` from `dst` on the route, or from the pvmd (any pvmd tid: ours is
/// the only one that writes to us): Some(status), or None if the route (the pvmd connection)
/// ended first.
fn wait_ack(lib: &mut Lib, dst: i32, xid: u64, through_pvmd: bool) -> Result<Option<i32>, i32> {
    let from = |src: i32| if through_pvmd { Tid(src).is_pvmd() } else { src == dst };
    loop {
        if let Some(i) = lib.vr.acks.iter().position(|a| from(a.0) && a.1 == xid) {
            return Ok(Some(lib.vr.acks.swap_remove(i).2));
        }
        let alive = if through_pvmd {
            lib.pvmd.as_ref().is_some_and(|s| !s.eof)
        } else {
            matches!(lib.routes.get(&dst), Some(RouteState::Open(_)))
                || lib.route_readers.iter().any(|(t, _)| *t == dst)
        };
        if !alive {
            return Ok(None);
        }
        lib.pump(Some(Duration::from_secs(1)))?;
    }
}

/// Neutralises descriptors in `msgs` that did not come on the route of the task they name
/// (`route`: the peer of the stream they came on, None for the pvmd's): the receiver reads from
/// the pid of the route a descriptor names, so a descriptor must not be able to name another
/// route. Such a message becomes an empty ack, which [`intercept`] drops; the positions of the
/// others do not move (early-delivery tails are matched by position).
pub fn screen(msgs: &mut [Message], route: Option<i32>) {
    for m in msgs.iter_mut() {
        let forged = match m.header.tag {
            TC_VMDESC => Some(m.src.0) != route,
            // The pvmd's descriptors name its own memory: only from the pvmd.
            TC_VMDESC_PVMD => route.is_some(),
            _ => false,
        };
        if m.header.ctx == SYSCTX_TC && forged {
            m.header.tag = TC_VMACK;
            m.body.clear();
        }
    }
}

/// A message of the transfer protocol from `m.src`: handled here (None), or, for a descriptor
/// that could be read, the real message to deliver in its place, with the tail of it still to
/// read from the sender (unpacking reads it piece by piece, as `lazy.rs` does from a socket).
pub fn intercept(lib: &mut Lib, m: Message) -> Option<(Message, Option<crate::lazy::Tail>)> {
    if m.header.ctx != SYSCTX_TC {
        return Some((m, None));
    }
    match m.header.tag {
        TC_VMACK => {
            if let Ok(a) = Ack::parse(&m.body) {
                if lib.vr.acks.len() < 1024 {
                    lib.vr.acks.push((m.src.0, a.xid, a.status));
                }
            }
            None
        }
        TC_VMDESC => on_desc(lib, m, false),
        TC_VMDESC_PVMD => on_desc(lib, m, true),
        _ => Some((m, None)),
    }
}

/// A descriptor, from a task on its direct route or from the pvmd (its arena relay, where the
/// pieces must lie in the pvmd's arena, mapped here once per connection). The message is
/// delivered in its place after its first 128 KiB, the rest copied while the program unpacks it
/// (`lazy.rs`), and the sender answered when the last byte is in: until then it writes nothing
/// else to us (a task waits in [`send`]; the pvmd holds a claim on our connection), and every
/// other call and every wait for input finishes the tail first. Anything in the way (a
/// descriptor that does not parse, a pid that is not the kernel's peer, no capability, pieces
/// outside the pvmd's arena, a first read that fails) is answered "inline": the sender then
/// writes the message itself, next on the connection, and no more descriptors come that way.
fn on_desc(lib: &mut Lib, m: Message, from_pvmd: bool) -> Option<(Message, Option<crate::lazy::Tail>)> {
    let src = m.src.0;
    let xid = if m.body.len() >= off::XID + 8 {
        u64_at(&m.body, off::XID)
    } else {
        0
    };
    let me = lib.mytid;
    // Who is answered, and how.
    let peer = if from_pvmd { TIDPVMD } else { src };
    // Err: why the descriptor is answered "inline" (an errno of the read, or a negative
    // [`Why`] code), for the trace.
    let got = (|| {
        let d = Desc::parse(&m.body).map_err(|_| Why::Parse as i32)?;
        let (pid, fd) = if from_pvmd {
            let fd = lib.pvmd.as_ref().ok_or(Why::NoCap as i32)?.sock.fd();
            (peer_pid(fd).ok_or(Why::Pid as i32)?, fd)
        } else {
            route_pid_fd(lib, src).ok_or(Why::NoCap as i32)?
        };
        if forced_failure() {
            return Err(Why::Forced as i32);
        }
        if pid != d.pid {
            return Err(Why::Pid as i32);
        }
        let total = usize::try_from(d.total).map_err(|_| Why::Parse as i32)?;
        let mut r = Remote::new(pid, &d, Some((fd, me, peer, xid))).ok_or(Why::NoCap as i32)?;
        r.arena = if from_pvmd {
            lib.pvmd.as_mut().and_then(|s| stream_arena(s, pid))
        } else {
            peer_arena(lib, src, pid)
        };
        // The pvmd's pieces are read from its arena only (it is not ours to read otherwise).
        if from_pvmd && !r.from_arena() {
            r.acked = true;
            return Err(Why::NoCap as i32);
        }
        let mut v = crate::pool::take(total).unwrap_or_default();
        v.clear();
        v.reserve_exact(total);
        // The first piece now: a read that is refused (EPERM, ESRCH, EFAULT) must still be
        // answered "inline" before the message is delivered.
        if let Err(e) = r.read_to(&mut v, total.min(crate::lazy::FILL_STEP)) {
            r.acked = true;
            crate::pool::put(v);
            return Err(e.raw_os_error().unwrap_or(0));
        }
        Ok((d, r, v))
    })();
    let how = match &got {
        _ if from_pvmd => "pvmd",
        Ok((_, r, _)) if r.from_arena() => "arena",
        _ => "kernel",
    };
    trace(me, src, &m.body, &got, how);
    let Ok((d, mut r, v)) = got else {
        if !from_pvmd {
            set_route_pid(lib, src, 0);
        }
        let a = MsgBody::from_vec(
            0,
            Ack {
                xid,
                status: ACK_INLINE,
            }
            .emit(),
        );
        let _ = lib.send_raw(me, peer, ack_tag(peer), SYSCTX_TC, 0, &a, from_pvmd);
        return None;
    };
    let total = d.total as usize;
    let tail = if v.len() < total {
        Some(crate::lazy::Tail::remote(r, total - v.len(), total))
    } else {
        r.ack();
        None
    };
    Some((
        Message {
            src: m.src,
            dst: m.dst,
            header: d.header,
            body: v,
        },
        tail,
    ))
}

/// Why a descriptor was not read, besides an errno of the read (trace lines).
#[derive(Debug, Clone, Copy)]
enum Why {
    Parse = -1,
    NoCap = -2,
    Pid = -3,
    Forced = -4,
}

/// With `PVM_VMREAD_TRACE=<file>`, every descriptor received on a route appends
/// `t<me> t<src> read <bytes> arena|kernel` (copied from the sender's shared arena, or with
/// `process_vm_readv`) or `t<me> t<src> inline <bytes> <why>` (an errno, or a negative [`Why`]):
/// tests check with it which path a transfer took. The daemon route's arena relay adds
/// `t<me> t<dst> sent|sent-inline <bytes> pvmd` (a descriptor handed to the pvmd, or refused by
/// it) and `t<me> t<src> relay <bytes> pvmd` / `relay-inline <bytes> <why>` (one of the pvmd's
/// read, or answered "inline").
fn trace<T>(me: i32, src: i32, body: &[u8], got: &Result<T, i32>, how: &str) {
    let Some(path) = std::env::var_os("PVM_VMREAD_TRACE") else {
        return;
    };
    let n = if body.len() >= off::PIECES {
        u64_at(body, off::TOTAL)
    } else {
        0
    };
    let line = match got {
        Ok(_) if how == "pvmd" => format!("t{me:x} t{src:x} relay {n} pvmd\n"),
        Err(why) if how == "pvmd" => format!("t{me:x} t{src:x} relay-inline {n} {why}\n"),
        Ok(_) => format!("t{me:x} t{src:x} read {n} {how}\n"),
        Err(why) => format!("t{me:x} t{src:x} inline {n} {why}\n"),
    };
    append(&path, &line);
}

pub(crate) fn append(path: &std::ffi::OsStr, line: &str) {
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
        let _ = f.write_all(line.as_bytes());
    }
}

/// A park was put off because a descriptor of ours is out (trace line `t<me> park-deferred`).
pub fn trace_park_deferred(me: i32) {
    if let Some(path) = std::env::var_os("PVM_VMREAD_TRACE") {
        append(&path, &format!("t{me:x} park-deferred\n"));
    }
}

/// The stream of the route from `tid`: the open route, or the reader kept while a route ends.
fn route_stream(lib: &mut Lib, tid: i32) -> Option<&mut crate::net::Stream> {
    match lib.routes.get_mut(&tid) {
        Some(RouteState::Open(s)) => Some(s),
        _ => lib
            .route_readers
            .iter_mut()
            .find(|(t, _)| *t == tid)
            .map(|(_, s)| &mut **s),
    }
}

/// The peer pid and socket of the route from `tid` when the capability is on for it.
fn route_pid_fd(lib: &mut Lib, tid: i32) -> Option<(i32, RawFd)> {
    let s = route_stream(lib, tid)?;
    (s.vmread_pid > 0).then_some((s.vmread_pid, s.sock.fd()))
}

fn set_route_pid(lib: &mut Lib, tid: i32, pid: i32) {
    if let Some(RouteState::Open(s)) = lib.routes.get_mut(&tid) {
        s.vmread_pid = pid;
    }
    for (t, s) in lib.route_readers.iter_mut() {
        if *t == tid {
            s.vmread_pid = pid;
        }
    }
}

/// Acks that a finished transfer could not write at once (the route's socket was full): the
/// library sends them at its next entry (`lazy::settle`, `core::with`). (peer tid, xid).
static OWED: Mutex<Vec<(i32, u64)>> = Mutex::new(Vec::new());
static OWED_N: AtomicUsize = AtomicUsize::new(0);

/// Some ack is owed.
pub fn owed() -> bool {
    OWED_N.load(Ordering::Relaxed) > 0
}

/// Sends the owed acks.
pub fn send_owed(lib: &mut Lib) {
    if !owed() {
        return;
    }
    let v = OWED.lock().map(|mut v| std::mem::take(&mut *v)).unwrap_or_default();
    OWED_N.store(0, Ordering::Relaxed);
    let me = lib.mytid;
    for (peer, xid) in v {
        let a = MsgBody::from_vec(0, Ack { xid, status: ACK_DONE }.emit());
        let _ = lib.send_raw(me, peer, ack_tag(peer), SYSCTX_TC, 0, &a, peer == TIDPVMD);
    }
}

/// The ack of a transfer from `peer`: a task's (direct route), or the pvmd's (arena relay).
fn ack_tag(peer: i32) -> i32 {
    if peer == TIDPVMD {
        TC_VMACK_PVMD
    } else {
        TC_VMACK
    }
}

/// The sender's side of a transfer being read: where its pieces are, how far we are, and how
/// to tell it we are done.
#[derive(Debug)]
pub struct Remote {
    pid: i32,
    pieces: Vec<(u64, u64)>,
    /// Bytes read so far (over all pieces).
    at: u64,
    /// A duplicate of the route's socket, and the ack frame to write on it.
    ack_to: Option<(OwnedFd, Vec<u8>)>,
    /// (peer tid, xid) of the ack.
    peer: (i32, u64),
    acked: bool,
    /// The sender's arena, when it has one mapped here: pieces in it are copied directly.
    pub arena: Option<std::sync::Arc<PeerArena>>,
}

impl Remote {
    /// `ack`: (route socket, our tid, the peer's tid, xid); None reads without acknowledging
    /// (tests).
    pub fn new(pid: i32, d: &Desc, ack: Option<(RawFd, i32, i32, u64)>) -> Option<Remote> {
        let (ack_to, peer) = match ack {
            Some((fd, me, peer, xid)) => {
                // SAFETY: dup(2) of the route's descriptor; the duplicate is owned at once.
                let nfd = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
                if nfd < 0 {
                    return None;
                }
                // SAFETY: fresh descriptor we own.
                let nfd = unsafe { OwnedFd::from_raw_fd(nfd) };
                (Some((nfd, ack_frame(me, peer, xid))), (peer, xid))
            }
            None => (None, (0, 0)),
        };
        Some(Remote {
            pid,
            pieces: d.pieces.clone(),
            at: 0,
            ack_to,
            peer,
            acked: ack.is_none(),
            arena: None,
        })
    }

    /// Every piece lies in the sender's arena, mapped here: reads are plain copies.
    pub fn from_arena(&self) -> bool {
        self.arena
            .as_ref()
            .is_some_and(|a| self.pieces.iter().all(|&(addr, len)| a.find(addr, len).is_some()))
    }

    /// Reads the next bytes (at most `buf.len()`): copied from the sender's arena when they lie
    /// in it, else with one process_vm_readv. Ok(0) at the end.
    pub fn read_into(&mut self, buf: &mut [MaybeUninit<u8>]) -> std::io::Result<usize> {
        let remote = self.spans(buf.len() as u64);
        let want: u64 = remote.iter().map(|v| v.iov_len as u64).sum();
        if want == 0 {
            return Ok(0);
        }
        if let Some(a) = &self.arena {
            let found: Option<Vec<_>> = remote
                .iter()
                .map(|v| a.find(v.iov_base as u64, v.iov_len as u64).map(|p| (p, v.iov_len)))
                .collect();
            if let Some(found) = found {
                let mut at = 0;
                for (p, len) in found {
                    // SAFETY: `p..p+len` lies inside the peer's mapped arena (checked by
                    // `find`; the file is sealed against shrinking), and `at + len <= want <=
                    // buf.len()` by the construction of `remote`.
                    unsafe { std::ptr::copy_nonoverlapping(p, buf.as_mut_ptr().add(at) as *mut u8, len) };
                    at += len;
                }
                self.at += want;
                return Ok(want as usize);
            }
        }
        let local = libc::iovec {
            iov_base: buf.as_mut_ptr() as *mut libc::c_void,
            iov_len: want as usize,
        };
        // SAFETY: the local iovec is `want` <= buf.len() writable bytes of `buf`; the remote
        // ones name memory of another process, which the kernel checks (EFAULT), never
        // dereferenced here. Their count is at most MAX_PIECES (< IOV_MAX).
        let n = unsafe { libc::process_vm_readv(self.pid, &local, 1, remote.as_ptr(), remote.len() as _, 0) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        self.at += n as u64;
        Ok(n as usize)
    }

    /// The sender's address ranges of the next bytes, at most `n` of them (fewer at the end).
    fn spans(&self, n: u64) -> Vec<libc::iovec> {
        let mut out = Vec::with_capacity(4);
        let (mut skip, mut room) = (self.at, n);
        for &(addr, len) in &self.pieces {
            if room == 0 {
                break;
            }
            if skip >= len {
                skip -= len;
                continue;
            }
            let take = (len - skip).min(room);
            out.push(libc::iovec {
                iov_base: (addr + skip) as *mut libc::c_void,
                iov_len: take as usize,
            });
            room -= take;
            skip = 0;
        }
        out
    }

    /// Where the next `n` bytes are mapped here, when they lie in one piece and in the sender's
    /// mapped arena.
    pub fn mapped(&self, n: u64) -> Option<*const u8> {
        let a = self.arena.as_ref()?;
        match self.spans(n).as_slice() {
            [v] if v.iov_len as u64 == n => a.find(v.iov_base as u64, n),
            _ => None,
        }
    }

    /// Counts the next `n` bytes as read (copied by the caller from [`Remote::mapped`]).
    pub fn skip(&mut self, n: u64) {
        self.at += n;
    }

    /// Appends to `v` until it holds `upto` bytes.
    pub fn read_to(&mut self, v: &mut Vec<u8>, upto: usize) -> std::io::Result<()> {
        while v.len() < upto {
            let want = upto - v.len();
            v.reserve(want);
            let n = match self.read_into(&mut v.spare_capacity_mut()[..want]) {
                Ok(0) => return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof)),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            // SAFETY: process_vm_readv initialised n bytes after the length.
            unsafe { v.set_len(v.len() + n) };
        }
        Ok(())
    }

    /// Tells the sender it may go on (once): written straight on the route's socket, which
    /// takes a 48-byte frame whole or not at all; when it is full, the library sends the ack
    /// at its next entry.
    pub fn ack(&mut self) {
        // The sender may reuse the bytes from now on: nothing more is read, and the peer's
        // arena is not kept mapped by a finished transfer (a checkpoint must not find it).
        self.arena = None;
        if std::mem::replace(&mut self.acked, true) {
            return;
        }
        let Some((fd, frame)) = &self.ack_to else { return };
        let mut at = 0;
        while at < frame.len() {
            // SAFETY: send(2) from a live buffer of frame.len() - at bytes.
            let n = unsafe {
                libc::send(
                    fd.as_raw_fd(),
                    frame[at..].as_ptr() as *const libc::c_void,
                    frame.len() - at,
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            if n > 0 {
                at += n as usize;
                continue;
            }
            let e = std::io::Error::last_os_error();
            match e.kind() {
                std::io::ErrorKind::Interrupted => {}
                std::io::ErrorKind::WouldBlock if at == 0 => {
                    if let Ok(mut v) = OWED.lock() {
                        v.push(self.peer);
                        OWED_N.fetch_add(1, Ordering::Relaxed);
                    }
                    return;
                }
                // The rest of a frame begun: the peer is waiting for it and reading.
                std::io::ErrorKind::WouldBlock => {
                    crate::net::poll_fds(&[(fd.as_raw_fd(), true)], Some(Duration::from_millis(100)));
                }
                _ => return, // the peer is gone
            }
        }
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        self.ack();
    }
}

/// The whole stream frame of an ACK_DONE for `xid` from `me` to `peer` (one fragment).
fn ack_frame(me: i32, peer: i32, xid: u64) -> Vec<u8> {
    pvm_proto::vmdesc::frame(Tid(peer), Tid(me), ack_tag(peer), &Ack { xid, status: ACK_DONE }.emit())
}

/// Reads the pieces of `d` from process `pid` into one buffer.
pub fn read_pieces(pid: i32, d: &Desc) -> std::io::Result<Vec<u8>> {
    let total = usize::try_from(d.total).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let mut r = Remote::new(pid, d, None).ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let mut v = Vec::new();
    r.read_to(&mut v, total)?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(pieces: Vec<(u64, u64)>) -> Desc {
        Desc {
            xid: 7,
            pid: 1234,
            header: MsgHeader {
                enc: 0x10,
                tag: 5,
                ctx: 0,
                wid: 0,
                crc: 0,
            },
            total: pieces.iter().fold(0u64, |a, p| a.wrapping_add(p.1)),
            pieces,
        }
    }

    #[test]
    fn descriptors_and_acks_round_trip() {
        let d = desc(vec![(0x1000, 300_000), (0x9000_0000, 5)]);
        let b = d.emit();
        assert_eq!(b.len(), off::PIECES + 2 * off::PIECE_LEN);
        assert_eq!(Desc::parse(&b).unwrap(), d);
        assert_eq!(Desc::parse(&b).unwrap().emit(), b);
        let a = Ack {
            xid: u64::MAX,
            status: ACK_INLINE,
        };
        assert_eq!(Ack::parse(&a.emit()).unwrap(), a);
    }

    #[test]
    fn hostile_descriptors_are_clean_errors() {
        let good = desc(vec![(0x1000, 4096)]).emit();
        for n in 0..good.len() {
            assert!(Desc::parse(&good[..n]).is_err(), "prefix {n}");
        }
        let mut b = good.clone();
        b[0] ^= 1;
        assert!(matches!(Desc::parse(&b), Err(DescError::Magic { .. })));
        // zero pieces
        let mut b = good.clone();
        b[off::NPIECES..off::NPIECES + 4].copy_from_slice(&0u32.to_ne_bytes());
        assert_eq!(Desc::parse(&b[..off::PIECES]), Err(DescError::Pieces(0)));
        // too many pieces, and a huge count: no allocation of that size
        for n in [MAX_PIECES as u32 + 1, u32::MAX] {
            let mut b = good.clone();
            b[off::NPIECES..off::NPIECES + 4].copy_from_slice(&n.to_ne_bytes());
            assert_eq!(Desc::parse(&b), Err(DescError::Pieces(n)));
        }
        // huge total
        let d = desc(vec![(0x1000, u64::MAX / 2)]);
        assert!(matches!(Desc::parse(&d.emit()), Err(DescError::TooLarge(_))));
        // address overflow
        let d = desc(vec![(u64::MAX - 10, 4096)]);
        assert!(matches!(
            Desc::parse(&d.emit()),
            Err(DescError::Overflow { index: 0, .. })
        ));
        // lengths that do not add up (and that would overflow when summed)
        let mut d = desc(vec![(0, u64::MAX), (0, 2)]);
        d.total = 1;
        assert!(Desc::parse(&d.emit()).is_err());
        let mut d = desc(vec![(0x1000, 10)]);
        d.total = 11;
        assert_eq!(Desc::parse(&d.emit()), Err(DescError::Sum { sum: 10, total: 11 }));
        // trailing bytes
        let mut b = good.clone();
        b.push(0);
        assert_eq!(Desc::parse(&b), Err(DescError::Trailing(1)));
        // acks
        assert!(Ack::parse(&[0; 15]).is_err());
        assert!(Ack::parse(&[0; 16]).is_err());
        // every single-byte corruption of a valid descriptor parses or fails, never panics
        for i in 0..good.len() {
            for v in [0u8, 0xff, 0x80] {
                let mut b = good.clone();
                b[i] = v;
                let _ = Desc::parse(&b);
            }
        }
    }

    #[test]
    fn descriptors_count_only_on_the_route_of_the_task_they_name() {
        let mk = |src: i32| Message {
            src: Tid(src),
            dst: Tid(0x40002),
            header: MsgHeader {
                enc: 0,
                tag: TC_VMDESC,
                ctx: SYSCTX_TC,
                wid: 0,
                crc: 0,
            },
            body: desc(vec![(0x1000, 300_000)]).emit(),
        };
        let mut v = vec![mk(0x40001), mk(0x40003)];
        screen(&mut v, Some(0x40001));
        assert_eq!(v[0].header.tag, TC_VMDESC);
        assert!(v[1].header.tag == TC_VMACK && v[1].body.is_empty());
        let mut v = vec![mk(0x40001)];
        screen(&mut v, None); // through the pvmd: never
        assert!(v[0].header.tag == TC_VMACK && Ack::parse(&v[0].body).is_err());
    }

    /// Two library states in two threads of this process, joined by a Unix socketpair as a
    /// direct route (the "peer" pid is ours: SO_PEERCRED of a socketpair names this process): a
    /// 1 MB message goes by descriptor, arrives byte for byte, and the sender, which has a park
    /// request pending, does not park while its descriptor is out (it is still pending after
    /// the send returned).
    #[test]
    fn a_transfer_completes_and_a_park_waits_for_it() {
        use crate::core::RouteState;
        use crate::net::{Sock, Stream};
        use std::os::unix::net::UnixStream;
        let (ra, rb) = UnixStream::pair().unwrap();
        let (pa, pa_peer) = UnixStream::pair().unwrap();
        let (pb, pb_peer) = UnixStream::pair().unwrap();
        let (a_tid, b_tid) = (0x40001, 0x40002);
        let body: Vec<u8> = (0..(1usize << 20)).map(|i| (i * 7 + i / 4096) as u8).collect();
        let want = body.clone();
        let lib = |pvmd: UnixStream, route: UnixStream, me: i32, peer: i32| {
            let mut l = Lib {
                pvmd: Some(Stream::new(Sock::Unix(pvmd)).unwrap()),
                mytid: me,
                ..Default::default()
            };
            let mut s = Stream::new(Sock::Unix(route)).unwrap();
            s.peer_max_frag = crate::net::ROUTE_MAX_FRAG;
            enable(&mut s, CAP_VMREAD);
            assert_eq!(s.vmread_pid, std::process::id() as i32);
            l.routes.insert(peer, RouteState::Open(Box::new(s)));
            l
        };
        let sender = std::thread::spawn(move || {
            let mut l = lib(pa, ra, a_tid, b_tid);
            l.park_request = Some(7);
            let m = MsgBody::from_vec(0x10, body);
            let r = l.send_raw(a_tid, b_tid, 5, 0, 0, &m, false);
            // One descriptor went out, and was read (an "inline" answer turns the route off).
            let read = matches!(l.routes.get(&b_tid), Some(RouteState::Open(s)) if s.vmread_pid > 0);
            (r, l.park_request, l.vr.busy, l.vr.next_xid, read)
        });
        // The receiver's end of the route stays open until the sender has looked at it (a
        // closed route would read as a fallback).
        let (may_close, close_wait) = std::sync::mpsc::channel::<()>();
        let receiver = std::thread::spawn(move || {
            let mut l = lib(pb, rb, b_tid, a_tid);
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while l.rxq.is_empty() && std::time::Instant::now() < deadline {
                l.pump(Some(Duration::from_millis(100))).unwrap();
            }
            let id = *l.rxq.front().expect("nothing delivered");
            let b = l.bufs.get_mut(&id).unwrap();
            b.settle(); // reads the rest from the sender and acknowledges
            let r = (b.tag, b.src, b.body().bytes().to_vec());
            let _ = close_wait.recv_timeout(Duration::from_secs(30));
            drop(l);
            r
        });
        // A sender that parked anyway would wait for ever for the pvmd's TM_PARK answer: the
        // watchdog closes the pvmd's end after 10 s, so that the bug fails the test.
        let (done, wait) = std::sync::mpsc::channel::<()>();
        let watchdog = std::thread::spawn(move || {
            let _ = wait.recv_timeout(Duration::from_secs(10));
            drop(pa_peer);
        });
        let (r, park, busy, xids, read) = sender.join().unwrap();
        let _ = may_close.send(());
        let (tag, src, got) = receiver.join().unwrap();
        let _ = done.send(());
        watchdog.join().unwrap();
        assert_eq!(r, Ok(()));
        assert_eq!((tag, src), (5, a_tid));
        assert!(got == want, "the message differs");
        assert_eq!(park, Some(7), "parked with a descriptor out");
        assert_eq!(busy, 0);
        assert!(
            xids == 1 && read,
            "not sent by descriptor ({xids} descriptors, read {read})"
        );
        drop(pb_peer);
    }

    /// The receiver's half of the shared arena: our own arena, found and mapped as a peer's.
    #[test]
    fn a_peer_arena_is_mapped_by_name_and_translates_addresses() {
        let big: Vec<u8> = (0..1u32 << 20).map(|i| (i * 7) as u8).collect();
        if !crate::arena::holds(big.as_ptr(), big.len()) {
            return assert!(
                crate::arena::off_reason().is_some(),
                "no arena although nothing turns it off"
            );
        }
        // Our own arena, as a peer would find it under /proc/<pid>/fd.
        let a = PeerArena::open(std::process::id() as i32).expect("the arena maps");
        let p = a
            .find(big.as_ptr() as u64, big.len() as u64)
            .expect("the vector lies in it");
        // SAFETY: `find` checked that the range lies inside the live read-only mapping.
        let view = unsafe { std::slice::from_raw_parts(p, big.len()) };
        assert!(view == &big[..], "the second mapping shows the same bytes");
        assert!(a.find(a.base() + a.size() - 10, 11).is_none(), "past the end");
        assert!(a.find(a.base() - 1, 2).is_none(), "before the start");
        assert!(a.find(u64::MAX - 4, 8).is_none(), "overflowing");
        assert!(PeerArena::open(i32::MAX).is_none(), "no such process");
    }

    /// The read itself, from our own process: pieces in order, byte for byte; a bad address is
    /// an error (EFAULT), not a crash.
    #[test]
    fn pieces_are_read_from_a_process() {
        let a: Vec<u8> = (0..300_000u32).map(|i| (i * 7) as u8).collect();
        let b: Vec<u8> = (0..1000u32).map(|i| (i * 13) as u8).collect();
        let d = desc(vec![
            (a.as_ptr() as u64, a.len() as u64),
            (b.as_ptr() as u64, b.len() as u64),
        ]);
        let got = read_pieces(std::process::id() as i32, &d).unwrap();
        assert_eq!(got.len(), a.len() + b.len());
        assert!(got[..a.len()] == a[..] && got[a.len()..] == b[..]);
        let bad = desc(vec![(8, 4096)]);
        assert!(read_pieces(std::process::id() as i32, &bad).is_err());
    }
}
