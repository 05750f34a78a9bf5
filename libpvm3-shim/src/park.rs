//! Migration extensions on the task side (docs/migration.md §3-4): discovery of a pvmd-rs
//! daemon through the trailer of its TM_CONN2 reply, the library's own announcement
//! (TM_XCAPS), and `pvm_migrate`.
//!
//! The rule that keeps legacy daemons safe: a TM_ code of the extension range is sent only to
//! a daemon whose TM_CONN2 reply carried the trailer. A legacy pvmd drops unknown TM_ codes
//! without a reply, so asking it would leave the caller waiting for ever; without the trailer
//! the calls here fail at once with PvmNotImpl.

use crate::core::{
    logerror, lpvmerr, pvm_tmp, with_r, xdr, Lib, RouteState, E_BADPARAM, E_NOTIMPL, E_SYSERR, TM_CONFIG,
};
use crate::tev::{did, kind};
use pvm_proto::codes::{PvmError, SYSCTX_TC, SYSCTX_TM};
use pvm_proto::encoding::{MsgBody, Unpacker};
use pvm_proto::message::Message;
use std::ffi::CStr;
use std::os::raw::{c_char, c_int};
use std::time::{Duration, Instant};

/// Task -> pvmd: move a task (`int tid; int host dtid; int mode`), reply `int cc; int host`.
pub const TM_MIGRATE: i32 = 0x8001_0100u32 as i32;
/// Task -> pvmd: checkpoint (`int op; int scope; int tid; int replicas`), reply `int cc; int epoch`.
pub const TM_CKPT: i32 = 0x8001_0101u32 as i32;
/// Task -> pvmd: restart a task from its last checkpoint (`int epoch; int tid`), reply
/// `int cc; int epoch`.
pub const TM_RESTART: i32 = 0x8001_0102u32 as i32;
/// Task -> pvmd at the safe point (`int op; int epoch; int nsent; int nrecv; int nroutes`);
/// the reply is the last message on the connection before the task closes it.
pub const TM_PARK: i32 = 0x8001_0103u32 as i32;
/// pvmd -> task, ctx SYSCTX_TC: park at the next safe point (`int op; int epoch`).
pub const TC_MARK: i32 = 0x8003_0100u32 as i32;
/// Task -> task on a direct route, ctx SYSCTX_TC: "I am closing our direct route; use the
/// pvmd route" (`int tid`). The peer answers with TC_MARK on the route, its last message there.
pub const TC_ROUTEGONE: i32 = 0x8003_0101u32 as i32;
/// How long a parking task waits for its peers' TC_MARK on direct routes. A peer on the legacy
/// library never answers (it queues the TC_ codes in a context no user receive matches), so
/// the wait also bounds the drain of such a route: what it sends later is lost with the route
/// unless its library resends through the pvmd.
const ROUTE_DRAIN_LIMIT: Duration = Duration::from_millis(500);

/// Peers whose TC_MARK arrived on a direct route during the current park.
static ROUTE_MARKS: std::sync::Mutex<Vec<i32>> = std::sync::Mutex::new(Vec::new());

/// Task -> pvmd, one-way: `int magic; int version; int features` of this library.
pub const TM_XCAPS: i32 = 0x8001_0105u32 as i32;
/// "pvmx", first int of the trailer after `schedtid`.
pub const XMAGIC: i32 = 0x7076_6d78;
const XVERSION: i32 = 1;
/// Park protocol bit (TM_PARK/TM_RESUME, reconnect with a resume ticket).
pub const FEAT_PARK: u32 = 1 << 5;
/// What this library implements of the feature bits: parking at a safe point inside the
/// library and reconnecting as the same tid.
pub const LIB_FEATURES: u32 = FEAT_PARK | FEAT_BIG_FRAGS;
/// Large-fragment bit on the task <-> pvmd socket. From a pvmd-rs daemon (TM_CONN2 trailer): it
/// takes a message from this task in fragments of up to [`PVMD_MAX_FRAG`]. From this library
/// (TM_XCAPS): it takes fragments of any size from its pvmd (it reads them in place, net.rs).
/// Why: 4 KB fragments cost the daemon a header parse and a write per 4 KB of every message.
pub const FEAT_BIG_FRAGS: u32 = 1 << 7;
/// Large messages on the daemon route by descriptor (`vmread.rs`, pvmd-rs `server/arelay.rs`).
/// From a pvmd-rs daemon: it takes a descriptor of a message in our arena and copies the body
/// out. From this library: it sends them, and takes the daemon's the same way.
pub const FEAT_ARENA_RELAY: u32 = 1 << 8;
/// Largest fragment (`len` of the fragment header, message header included) this library
/// writes to a pvmd-rs daemon that announced [`FEAT_BIG_FRAGS`]: well under the daemon's
/// per-fragment limit for connected tasks (256 MB) and its stream frames (64 MB), and small
/// enough that a daemon relaying it whole never holds much more than a legacy
/// `PvmDataInPlace` sender makes it hold.
pub const PVMD_MAX_FRAG: usize = 16 << 20;
/// Largest fragment written to such a daemon for a task of another host. The daemon passes a
/// big fragment for another host on in pieces as it reads them (pvmd-rs `server/xstream.rs`
/// `Pieces`), but the peer daemon reads each stream frame whole before it hands it to the
/// task: a 16 MB fragment would still cross the second half store-and-forward. 256 KiB keeps
/// the pipeline and the per-fragment work low; in interleaved runs (docs/benchmarks.md) it
/// cost the daemons less CPU per megabyte than 64 KiB and than 1 MiB fragments.
pub const PVMD_REMOTE_FRAG: usize = 256 << 10;

/// What this library announces in TM_XCAPS: [`LIB_FEATURES`], and the arena relay where its
/// arena may be made.
fn lib_features() -> u32 {
    if crate::vmread::pvmd_relay_offered() {
        LIB_FEATURES | FEAT_ARENA_RELAY
    } else {
        LIB_FEATURES
    }
}

/// The fragment size for a message to `dst` through the pvmd (0: the body's own fragments).
pub fn pvmd_frag_limit(l: &Lib, dst: i32) -> usize {
    let host = |t: i32| pvm_proto::Tid(t).host();
    match l.pvmd_max_frag {
        0 => 0,
        m if host(dst) == host(l.mytid) => m,
        m => m.min(PVMD_REMOTE_FRAG),
    }
}
/// The library woke by a signal parks outside calls (parksig.rs); TM_XCAPS version 2 then
/// carries `int signal` after the features.
pub const FEAT_PARK_SIGNAL: u32 = 1 << 6;
/// Parks begun in this process (the park thread's "has it happened" test).
static PARKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// Parks over in this process: counted once the task runs again (its ticket read), before it
/// reconnects. `PARKS > PARKS_OVER` while a park is in progress, which is what the park
/// signal's handler looks at: a signal that comes then is answered by that park.
static PARKS_OVER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many parks this process has begun.
pub fn parks() -> u64 {
    PARKS.load(std::sync::atomic::Ordering::SeqCst)
}

/// How many parks of this process are over (async-signal-safe: one atomic load).
pub fn parks_over() -> u64 {
    PARKS_OVER.load(std::sync::atomic::Ordering::SeqCst)
}

/// A begun park: counted over when dropped (every return of `safe_point`, the pvmd changing
/// its mind and errors included) or at [`ParkInProgress::over`], whichever comes first.
pub(crate) struct ParkInProgress(bool);

impl ParkInProgress {
    pub(crate) fn begin() -> Self {
        PARKS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        ParkInProgress(false)
    }

    pub(crate) fn over(&mut self) {
        if !self.0 {
            self.0 = true;
            PARKS_OVER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

impl Drop for ParkInProgress {
    fn drop(&mut self) {
        self.over();
    }
}
/// A parked task gives up waiting for its ticket after this long.
const TICKET_LIMIT: Duration = Duration::from_secs(300);
/// The tid of "the pvmd" in requests.
const TIDPVMD: i32 = 0x8000_0000u32 as i32;

/// Reads the trailer after `schedtid` in a TM_CONN2 reply: the daemon's features, or None for
/// a daemon that sent none (legacy) or something else.
pub fn read_trailer(u: &mut Unpacker<'_>) -> Option<u32> {
    let mut t = [0i32; 3];
    u.up_int(&mut t).ok()?;
    (t[0] == XMAGIC && t[1] >= 1).then_some(t[2] as u32)
}

/// After enrolment (hook in `Lib::beatask`): remembers the daemon's features and, for a
/// pvmd-rs daemon only, tells it what this library can do (one-way, nothing to wait for).
pub fn after_conn2(l: &mut Lib, daemon: Option<u32>) {
    l.xfeatures = daemon;
    l.pvmd_max_frag = match daemon {
        Some(f) if f & FEAT_BIG_FRAGS != 0 && std::env::var_os("PVM_NO_BIG_FRAGS").is_none() => PVMD_MAX_FRAG,
        _ => 0,
    };
    if daemon.is_none() {
        return;
    }
    let mut p = xdr();
    // Version 2 adds the park signal, when one is installed (parksig.rs, §4.1).
    let ints = match crate::parksig::install() {
        Some(sig) => vec![XMAGIC, 2, (lib_features() | FEAT_PARK_SIGNAL) as i32, sig],
        None => vec![XMAGIC, XVERSION, lib_features() as i32],
    };
    if p.pk_int(&ints).is_ok() {
        let me = l.mytid;
        let _ = l.send_raw(me, TIDPVMD, TM_XCAPS, SYSCTX_TM, 0, p.body(), true);
    }
}

/// A message from the pvmd that this module handles (hook in `Lib::deliver`): TC_MARK asks
/// for a park. True when consumed.
pub fn on_message(l: &mut Lib, m: &Message) -> bool {
    if m.header.ctx != SYSCTX_TC {
        return false;
    }
    let from_task = (m.src.0 as u32) & 0x8000_0000 == 0;
    if m.header.tag == TC_ROUTEGONE && from_task {
        route_gone(l, m.src.0);
        return true;
    }
    if m.header.tag == TC_MARK && from_task {
        if let Ok(mut v) = ROUTE_MARKS.lock() {
            if v.len() < 4096 {
                v.push(m.src.0);
            }
        }
        return true;
    }
    if m.header.tag != TC_MARK {
        return false;
    }
    let b = MsgBody::from_fragments(m.header.enc, [&m.body[..]]);
    let mut u = b.unpacker();
    let _op = int(&mut u).unwrap_or(0);
    l.park_request = Some(int(&mut u).unwrap_or(0));
    true
}

/// The safe point (hook at the end of each round of input in `Lib::pump`, which every
/// blocking call goes through; no write is half done there): when a park was asked for, tell
/// the pvmd (everything it sent before our TM_PARK arrives before its answer and lands in our
/// queues, so it is inside the process image), close the socket and the direct routes, wait
/// for the ticket, and reconnect as the same task.
pub fn safe_point(l: &mut Lib) -> Result<(), i32> {
    let Some(epoch) = l.park_request.take() else {
        return Ok(());
    };
    let mut parking = ParkInProgress::begin();
    drain_routes(l, epoch);
    let mut p = xdr();
    p.pk_int(&[0, epoch, 0, 0, 0]).map_err(|_| E_SYSERR)?;
    let m = l.msendrecv(TIDPVMD, TM_PARK, SYSCTX_TM, p.body())?;
    let b = MsgBody::from_fragments(m.header.enc, [&m.body[..]]);
    if int(&mut b.unpacker()).unwrap_or(-1) < 0 {
        return Ok(()); // the pvmd changed its mind: carry on connected
    }
    let me = l.mytid;
    // Direct routes were drained (`drain_routes`); peers route through the pvmds from now on
    // and may build a new direct route to wherever the task runs next.
    l.routes.clear();
    l.route_readers.clear();
    l.pvmd = None;
    let ticket = std::path::PathBuf::from(pvm_tmp()).join(format!("pvmresume.t{me:x}"));
    let t0 = Instant::now();
    let mut told = false;
    let text = loop {
        if let Ok(t) = std::fs::read_to_string(&ticket) {
            let _ = std::fs::remove_file(&ticket);
            break t;
        }
        if !told && t0.elapsed() > Duration::from_secs(10) {
            // Once, so that a checkpoint or move that never lets the task go can be told
            // from a task that is gone (its output reaches whoever collects it).
            logerror(&format!(
                "park: still waiting for the resume ticket {}\n",
                ticket.display()
            ));
            told = true;
        }
        if t0.elapsed() > TICKET_LIMIT {
            logerror(&format!(
                "park: no resume ticket {} after {:?}\n",
                ticket.display(),
                TICKET_LIMIT
            ));
            l.lost = true;
            return Err(E_SYSERR);
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let w: Vec<&str> = text.split_whitespace().collect();
    match w.as_slice() {
        ["continue", cookie, _epoch] => std::env::set_var("PVMEPID", cookie),
        ["restored", sock, cookie, _epoch] => {
            std::env::set_var("PVMSOCK", sock);
            std::env::set_var("PVMEPID", cookie);
        }
        _ => {
            logerror(&format!("park: bad resume ticket {text:?}\n"));
            l.lost = true;
            return Err(E_SYSERR);
        }
    }
    // The task runs again: a park signal from here on is a new request (the pvmd can send
    // one as soon as we announce ourselves in `beatask`), not this park's late one.
    parking.over();
    l.mytid = 0;
    l.beatask()?;
    if l.mytid != me {
        logerror(&format!("park: reconnected as t{:x}, not t{me:x}\n", l.mytid));
    }
    Ok(())
}

/// The drain of direct routes before a park (docs/migration.md §4, step 2.2): on each open
/// route, TC_ROUTEGONE then TC_MARK; then receive (into our own queues, so inside the image)
/// until every peer's TC_MARK, the route's end of file, or ROUTE_DRAIN_LIMIT. The pvmd
/// already holds what is sent to us through it, so a peer that switched to the pvmd route
/// after its TC_MARK cannot overtake what it sent directly.
fn drain_routes(l: &mut Lib, epoch: i32) {
    let me = l.mytid;
    let open: Vec<i32> = l
        .routes
        .iter()
        .filter(|(_, r)| matches!(r, RouteState::Open(_)))
        .map(|(t, _)| *t)
        .collect();
    if open.is_empty() {
        return;
    }
    if let Ok(mut v) = ROUTE_MARKS.lock() {
        v.clear();
    }
    for t in &open {
        let mut p = xdr();
        if p.pk_int(&[me]).is_ok() {
            let _ = l.send_raw(me, *t, TC_ROUTEGONE, SYSCTX_TC, 0, p.body(), false);
        }
        let mut p = xdr();
        if p.pk_int(&[epoch, 0]).is_ok() {
            let _ = l.send_raw(me, *t, TC_MARK, SYSCTX_TC, 0, p.body(), false);
        }
    }
    let t0 = Instant::now();
    while t0.elapsed() < ROUTE_DRAIN_LIMIT {
        let marks = ROUTE_MARKS.lock().map(|v| v.clone()).unwrap_or_default();
        let waiting = open
            .iter()
            .any(|t| !marks.contains(t) && matches!(l.routes.get(t), Some(RouteState::Open(_))));
        if !waiting || l.pump(Some(Duration::from_millis(10))).is_err() {
            break;
        }
    }
}

/// TC_ROUTEGONE from a peer that parks: answer TC_MARK on the route (our last message there),
/// then only read it until its end; later messages to the peer go through the pvmd.
fn route_gone(l: &mut Lib, peer: i32) {
    let me = l.mytid;
    if matches!(l.routes.get(&peer), Some(RouteState::Open(_))) {
        let mut p = xdr();
        if p.pk_int(&[0, 0]).is_ok() {
            let _ = l.send_raw(me, peer, TC_MARK, SYSCTX_TC, 0, p.body(), false);
        }
    }
    if let Some(RouteState::Open(s)) = l.routes.remove(&peer) {
        l.route_readers.push((peer, s));
    }
}

fn int(u: &mut Unpacker<'_>) -> Result<i32, c_int> {
    let mut v = [0i32];
    u.up_int(&mut v).map_err(|_| PvmError::BadMsg as i32)?;
    Ok(v[0])
}

/// The pvmd tid of the host called `name` (TM_CONFIG), or PvmNoHost.
fn host_dtid(l: &mut Lib, name: &[u8]) -> Result<i32, c_int> {
    let b: MsgBody = l.request(TM_CONFIG, xdr().body())?;
    let mut u = b.unpacker();
    let nh = int(&mut u)?;
    let _narch = int(&mut u)?;
    if nh < 0 || nh as usize > b.len() {
        return Err(PvmError::BadMsg as i32);
    }
    for _ in 0..nh {
        let tid = int(&mut u)?;
        let n = u.up_str().map_err(|_| PvmError::BadMsg as i32)?;
        let _arch = u.up_str().map_err(|_| PvmError::BadMsg as i32)?;
        let _speed = int(&mut u)?;
        let _dsig = int(&mut u)?;
        if n == name {
            return Ok(tid | TIDPVMD);
        }
    }
    Err(PvmError::NoHost as i32)
}

fn migrate(tid: c_int, host: *const c_char) -> Result<c_int, c_int> {
    if tid <= 0 {
        return Err(E_BADPARAM);
    }
    // SAFETY: a non-NULL host is a C string from the caller.
    let name = (!host.is_null()).then(|| unsafe { CStr::from_ptr(host) }.to_bytes().to_vec());
    with_r(|l| {
        l.beatask()?;
        if l.xfeatures.is_none() {
            // A legacy daemon would never answer: refuse here, at once.
            return Err(E_NOTIMPL);
        }
        let dtid = match &name {
            Some(n) if !n.is_empty() => host_dtid(l, n)?,
            _ => 0,
        };
        let mut p = xdr();
        p.pk_int(&[tid, dtid, 0]).map_err(|_| E_SYSERR)?;
        let m = l.msendrecv(TIDPVMD, TM_MIGRATE, SYSCTX_TM, p.body())?;
        let b = MsgBody::from_fragments(m.header.enc, [&m.body[..]]);
        let mut u = b.unpacker();
        let cc = int(&mut u)?;
        let newhost = int(&mut u).unwrap_or(0);
        if cc < 0 {
            Err(cc)
        } else {
            Ok(newhost)
        }
    })
}

/// Moves task `tid` to the host called `host` (a name from `pvm_config`; NULL or "" lets the
/// machine choose). Returns, once the task runs there, the tid of the host it now runs on (as
/// `pvm_config` gives it in `hi_tid`), or an error:
/// PvmNotImpl at once when the daemon (legacy) or the task's library cannot migrate or CRIU is
/// unavailable (the pvmd's log names the reason), PvmNoHost, PvmNoTask, PvmBadParam; after a
/// failed attempt PvmSysErr or PvmHostFail (the task then runs on where it was, when it can).
/// pvm-rs only: not in the legacy library.
#[no_mangle]
pub unsafe extern "C" fn pvm_migrate(tid: c_int, host: *const c_char) -> c_int {
    let r = std::panic::catch_unwind(|| {
        // SAFETY: NULL or the caller's C string.
        let name = unsafe { crate::tev::cstr_or_empty(host) };
        crate::tev::traced(
            kind::MIGRATE,
            true,
            |e, _| {
                e.int(did::TT, tid);
                e.str(did::HN, &name);
            },
            || migrate(tid, host),
            |e, _, cc| {
                e.int(did::TT, tid);
                e.int(did::CC, cc);
                // The new host's tid (negative as an int: 0x8xxxxxxx), 0 after an error.
                e.int(did::HPT, if (-1000..0).contains(&cc) { 0 } else { cc });
            },
        )
    });
    match r {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => lpvmerr("pvm_migrate", e),
        Err(_) => lpvmerr("pvm_migrate", E_SYSERR),
    }
}

/// The features the local pvmd announced in its TM_CONN2 reply, or None for a legacy daemon
/// (or before enrolment). A Rust-only helper for programs that link this crate (the `pvm`
/// console tells "not supported by this daemon" from other refusals); not a C export.
pub fn daemon_features() -> Option<u32> {
    with_r(|l| Ok(l.xfeatures)).ok().flatten()
}

/// A request of the extension range with a `cc; value` reply, only to a pvmd-rs daemon.
fn ext_request(tag: i32, ints: &[i32]) -> Result<c_int, c_int> {
    with_r(|l| {
        l.beatask()?;
        if l.xfeatures.is_none() {
            return Err(E_NOTIMPL);
        }
        let mut p = xdr();
        p.pk_int(ints).map_err(|_| E_SYSERR)?;
        let m = l.msendrecv(TIDPVMD, tag, SYSCTX_TM, p.body())?;
        let b = MsgBody::from_fragments(m.header.enc, [&m.body[..]]);
        let mut u = b.unpacker();
        let cc = int(&mut u)?;
        let v = int(&mut u).unwrap_or(0);
        if cc < 0 {
            Err(cc)
        } else {
            Ok(v)
        }
    })
}

/// Restarts task `tid` (whose process is gone) from its last checkpoint on this host, as the
/// same tid; `epoch` must be -1 (the last). Returns the epoch. pvm-rs only.
#[no_mangle]
pub unsafe extern "C" fn pvm_restart(tid: c_int, epoch: c_int) -> c_int {
    let r = if tid <= 0 || epoch != -1 {
        Err(E_BADPARAM)
    } else {
        std::panic::catch_unwind(|| {
            crate::tev::traced(
                kind::RESTART,
                true,
                |e, _| {
                    e.int(did::TT, tid);
                    e.int(did::WID, epoch);
                },
                || ext_request(TM_RESTART, &[epoch, tid]),
                epoch_exit(tid),
            )
        })
        .unwrap_or(Err(E_SYSERR))
    };
    r.unwrap_or_else(|e| lpvmerr("pvm_restart", e))
}

/// The exit record of pvm_checkpoint and pvm_restart: the task, the result, and the epoch
/// (the result when it succeeded, -1 otherwise) under the legacy data id `WID`.
fn epoch_exit(tid: c_int) -> impl FnOnce(&mut crate::tev::Rec, &Lib, c_int) {
    move |e, _, cc| {
        e.int(did::TT, tid);
        e.int(did::CC, cc);
        e.int(did::WID, if cc >= 0 { cc } else { -1 });
    }
}

/// `pvm_checkpoint` flags (abi.rs PvmCkptApp, PvmCkptAutoRestart).
const CKPT_APP: c_int = 1;
const CKPT_AUTO: c_int = 2;

fn checkpoint(tid: c_int, flags: c_int) -> Result<c_int, c_int> {
    if tid <= 0 || (flags != 0 && flags != CKPT_APP && flags != CKPT_APP | CKPT_AUTO) {
        return Err(E_BADPARAM);
    }
    with_r(|l| {
        l.beatask()?;
        if l.xfeatures.is_none() {
            return Err(E_NOTIMPL);
        }
        let mut p = xdr();
        // Scope 1 (application), one copy on another host, the flags (auto restart).
        let body: &[i32] = if flags & CKPT_APP != 0 {
            &[0, 1, tid, 1, flags]
        } else {
            &[0, 0, tid, 0]
        };
        p.pk_int(body).map_err(|_| E_SYSERR)?;
        let m = l.msendrecv(TIDPVMD, TM_CKPT, SYSCTX_TM, p.body())?;
        let b = MsgBody::from_fragments(m.header.enc, [&m.body[..]]);
        let mut u = b.unpacker();
        let cc = int(&mut u)?;
        let epoch = int(&mut u).unwrap_or(0);
        if cc < 0 {
            Err(cc)
        } else {
            Ok(epoch)
        }
    })
}

/// Checkpoints task `tid` (on this host, spawned by its pvmd, on this library) and lets it run
/// on; `flags` 0, or PvmCkptApp (| PvmCkptAutoRestart) for the whole application rooted at
/// `tid` (docs/extensions.md, "Application checkpoint"). Returns the checkpoint's epoch once the task runs again; PvmNotImpl
/// at once where that is impossible (the pvmd's log says why). pvm-rs only.
#[no_mangle]
pub unsafe extern "C" fn pvm_checkpoint(tid: c_int, flags: c_int) -> c_int {
    let r = std::panic::catch_unwind(|| {
        crate::tev::traced(
            kind::CHECKPOINT,
            true,
            |e, _| {
                e.int(did::TT, tid);
                e.int(did::TF, flags);
            },
            || checkpoint(tid, flags),
            epoch_exit(tid),
        )
    });
    match r {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => lpvmerr("pvm_checkpoint", e),
        Err(_) => lpvmerr("pvm_checkpoint", E_SYSERR),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pvm_proto::encoding::{Encoding, Packer};

    fn body(ints: &[i32]) -> MsgBody {
        let mut p = Packer::new(Encoding::Xdr);
        p.pk_int(ints).unwrap();
        p.body().clone()
    }

    #[test]
    fn trailer_is_recognised_only_with_the_magic() {
        let b = body(&[XMAGIC, 1, 0x23]);
        assert_eq!(read_trailer(&mut b.unpacker()), Some(0x23));
        let b = body(&[0x1234, 1, 0x23]);
        assert_eq!(read_trailer(&mut b.unpacker()), None);
        let b = body(&[XMAGIC, 0, 0x23]);
        assert_eq!(read_trailer(&mut b.unpacker()), None, "version 0 is not a trailer");
        let b = body(&[XMAGIC]);
        assert_eq!(read_trailer(&mut b.unpacker()), None, "short trailer");
        let b = body(&[]);
        assert_eq!(
            read_trailer(&mut b.unpacker()),
            None,
            "legacy daemon: nothing after schedtid"
        );
    }
}
