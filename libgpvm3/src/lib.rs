//! PVM 3.4.6 group library (`libgpvm3`): dynamic process groups, barriers, broadcast and the
//! collective operations, built on the PVM C API so that it runs over the legacy libpvm3 and
//! over ours, and talks to the legacy group server `pvmgs` (or ours) byte for byte.
//!
//! Protocol (messages.md §9): the server's tid is in mailbox class `"pvmgs"`, index 0; when the
//! class is missing the first caller spawns `pvmgs` with PvmMppFront (output and trace tids
//! forced to 0 so the server's output does not land in the caller's collector) and polls the
//! mailbox until the server registers. Requests are XDR messages in context SYSCTX_DG whose
//! tag is the operation; the reply carries the same tag. Collective data messages
//! (reduce/gather/scatter) travel in the same context so that user receives never see them.
//!
//! Every exported routine restores the caller's active send and receive buffers and context.

#![allow(clippy::missing_safety_doc)]

mod cache;
mod ffi;
mod ops;
mod tev;

use std::ffi::CStr;
use std::os::raw::{c_char, c_int, c_void};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cache::{Cache, StaticGroup, DYNAMIC, NOTID, STATIC};
use ffi::*;
use tev::{did, kind, Call, Datum};

/// Context of group server traffic and collective data (pvm3 SYSCTX_DG).
const SYSCTX_DG: c_int = 0x7fffc;

/// Message tags = pvmgs operation codes.
mod op {
    use std::os::raw::c_int;
    pub const JOIN: c_int = 1;
    pub const LEAVE: c_int = 2;
    pub const BARRIER: c_int = 3;
    pub const BCAST: c_int = 4;
    pub const GETINST: c_int = 5;
    pub const GETTID: c_int = 6;
    pub const GSIZE: c_int = 7;
    pub const DUMP: c_int = 9;
    pub const TIDLIST: c_int = 12;
    pub const STATICGROUP: c_int = 13;
    pub const HOSTCHAR: c_int = 14;
    pub const HOSTCHARV: c_int = 15;
    pub const BARRIERV: c_int = 16;
}

/// How long a freshly spawned server may take to register before we give up. The legacy
/// library polls forever; a server that died on start would hang the caller.
const REGISTER_WAIT: Duration = Duration::from_secs(60);

struct State {
    gstid: c_int,
    /// Our tid when `gstid` was looked up: a task that reconnects (new tid) must look again
    /// and forget what it cached.
    myoldtid: c_int,
    cache: Cache,
    /// Storage behind the vectors pvm_grpvhostinfo hands out (valid until its next call).
    hostv_onhost: Vec<c_int>,
    hostv_coord: Vec<c_int>,
}

static STATE: Mutex<State> = Mutex::new(State {
    gstid: -1,
    myoldtid: -1,
    cache: Cache::new(),
    hostv_onhost: Vec::new(),
    hostv_coord: Vec::new(),
});

/// The group server's tid as last looked up (exported like the legacy global).
#[no_mangle]
#[allow(non_upper_case_globals)]
pub static mut gstid: c_int = -1;

/// Locks briefly; never held across a call that could re-enter the library (message handlers).
fn state() -> MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs an exported routine's body; a panic (a bug) becomes PvmSysErr instead of unwinding
/// into C.
fn guard(f: impl FnOnce() -> c_int) -> c_int {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(PVM_SYS_ERR)
}

fn set_errno(code: c_int) {
    // SAFETY: pvm_errno is libpvm's plain int; PVM is single-threaded per task.
    unsafe { pvm_errno = code };
}

/// Reports a failed collective like libpvm's lpvmerr: sets pvm_errno and, per PvmAutoErr,
/// prints `libpvm [t<tid>]: <func>(): <text>`, exits or aborts.
fn lpvmerr(func: &str, code: c_int) {
    set_errno(code);
    // SAFETY: plain C API calls.
    let auto = unsafe { pvm_getopt(PVM_AUTO_ERR) };
    if auto <= 0 {
        return;
    }
    // SAFETY: plain C API call.
    let tid = unsafe { pvm_mytid() };
    let who = if tid > 0 {
        format!("t{tid:x}")
    } else {
        format!("pid{}", std::process::id())
    };
    // Not eprintln!: it panics when stderr is a broken pipe (a spawned task whose pvmd is gone),
    // and a panic cannot leave this C call. Legacy ignores the failed write.
    let _ = std::io::Write::write_all(
        &mut std::io::stderr().lock(),
        format!("libpvm [{who}]: {func}(): {}\n", errtext(code)).as_bytes(),
    );
    if auto == 3 {
        std::process::abort();
    }
    if auto == 2 {
        // SAFETY: plain C API calls.
        unsafe {
            pvm_setopt(PVM_AUTO_ERR, 1);
            pvm_exit();
        }
        std::process::exit(code);
    }
}

/// Group name bytes of a C string; NULL reads as empty (PvmNullGroup).
unsafe fn name<'a>(group: *const c_char) -> &'a [u8] {
    if group.is_null() {
        &[]
    } else {
        // SAFETY: the caller passes a NUL-terminated string.
        unsafe { CStr::from_ptr(group) }.to_bytes()
    }
}

fn perror(caller: &CStr) {
    // SAFETY: NUL-terminated string.
    unsafe { pvm_perror(caller.as_ptr()) };
}

/// Looks up (or starts) the group server; returns its tid or a negative error (gs_getgstid).
#[no_mangle]
pub extern "C" fn gs_getgstid() -> c_int {
    guard(|| {
        // SAFETY: plain C API calls throughout; buffers are ids owned by libpvm.
        unsafe {
            let mytid = pvm_mytid();
            {
                let st = state();
                if st.gstid >= 0 && mytid == st.myoldtid {
                    return st.gstid;
                }
            }
            let srbuf = pvm_setrbuf(0);
            let mut rb = pvm_recvinfo(c"pvmgs".as_ptr(), 0, PVM_MBOX_DEFAULT);
            if rb == PVM_NOT_FOUND {
                let otid = pvm_setopt(PVM_OUTPUT_TID, 0);
                let ttid = pvm_setopt(PVM_TRACE_TID, 0);
                let mut tid: c_int = -1;
                let n = pvm_spawn(
                    c"pvmgs".as_ptr(),
                    std::ptr::null_mut(),
                    PVM_MPP_FRONT,
                    std::ptr::null(),
                    1,
                    &mut tid,
                );
                pvm_setopt(PVM_OUTPUT_TID, otid);
                pvm_setopt(PVM_TRACE_TID, ttid);
                if n != 1 {
                    if n == 0 && tid < 0 {
                        set_errno(tid);
                        perror(c"gs_getgstid() failed to start group server");
                    }
                    pvm_setrbuf(srbuf);
                    let e = if n < 0 { n } else { pvm_errno };
                    return if e < 0 { e } else { PVM_SYS_ERR };
                }
                let t0 = Instant::now();
                loop {
                    rb = pvm_recvinfo(c"pvmgs".as_ptr(), 0, PVM_MBOX_DEFAULT);
                    if rb != PVM_NOT_FOUND {
                        break;
                    }
                    if t0.elapsed() > REGISTER_WAIT {
                        pvm_setrbuf(srbuf);
                        return PVM_SYS_ERR;
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            if rb < 0 {
                pvm_setrbuf(srbuf);
                return rb;
            }
            let mut tid: c_int = -1;
            let cc = pvm_upkint(&mut tid, 1, 1);
            pvm_freebuf(pvm_setrbuf(srbuf));
            if cc < 0 || tid < 0 {
                return PVM_SYS_ERR;
            }
            let mut st = state();
            st.gstid = tid;
            st.cache.clear();
            st.myoldtid = mytid;
            gstid = tid;
            tid
        }
    })
}

/// Unpacks the static group description that follows `state == STATIC` in a reply
/// (gs_cachegroup). Every count is checked against the size of the message first.
unsafe fn cache_group() {
    // SAFETY: plain C API calls on the active receive buffer.
    unsafe {
        let mut bytes: c_int = 0;
        let (mut tag, mut src) = (0, 0);
        if pvm_bufinfo(pvm_getrbuf(), &mut bytes, &mut tag, &mut src) < 0 {
            return;
        }
        let limit = usize::try_from(bytes).unwrap_or(0);
        let mut len: c_int = -1;
        if pvm_upkint(&mut len, 1, 1) < 0 || len < 0 {
            return;
        }
        let mut buf = vec![0u8; limit + 1];
        if pvm_upkstr(buf.as_mut_ptr().cast()) < 0 {
            return;
        }
        let name: Vec<u8> = buf.iter().take_while(|&&b| b != 0).copied().collect();
        let count = |what: c_int| usize::try_from(what).ok().filter(|&n| n <= limit / 4);
        let (mut ntids, mut maxntids) = (0, 0);
        if pvm_upkint(&mut ntids, 1, 1) < 0 || pvm_upkint(&mut maxntids, 1, 1) < 0 {
            return;
        }
        let Some(m) = count(maxntids) else { return };
        let mut tids = vec![NOTID; m];
        if m > 0 && pvm_upkint(tids.as_mut_ptr(), maxntids, 1) < 0 {
            return;
        }
        let mut nhosts = 0;
        if pvm_upkint(&mut nhosts, 1, 1) < 0 {
            return;
        }
        let Some(h) = count(nhosts) else { return };
        let mut np_onhost = vec![0; h];
        let mut pcoord = vec![NOTID; h];
        if h > 0
            && (pvm_upkint(np_onhost.as_mut_ptr(), nhosts, 1) < 0 || pvm_upkint(pcoord.as_mut_ptr(), nhosts, 1) < 0)
        {
            return;
        }
        state().cache.insert(
            name,
            StaticGroup {
                ntids,
                tids,
                np_onhost,
                pcoord,
            },
        );
    }
}

/// Sends one request to the server and unpacks the single int answer (and, for the queries
/// that can carry it, the static group description). Returns PvmOk; the answer goes to
/// `*rvalue`.
#[no_mangle]
pub unsafe extern "C" fn int_query_server(
    group: *const c_char,
    request: c_int,
    caller: *const c_char,
    rvalue: *mut c_int,
    optarg: c_int,
) -> c_int {
    guard(|| {
        let mut out: c_int = 0;
        // SAFETY: the caller passes valid strings (or NULL) and a writable rvalue.
        unsafe {
            let caller = if caller.is_null() {
                c"int_query_server"
            } else {
                CStr::from_ptr(caller)
            };
            query(name(group), group, request, caller, &mut out, optarg);
            if !rvalue.is_null() {
                *rvalue = out;
            }
        }
        PVM_OK
    })
}

unsafe fn query(gname: &[u8], group: *const c_char, request: c_int, caller: &CStr, rvalue: &mut c_int, optarg: c_int) {
    // SAFETY: plain C API calls; `group` is NUL-terminated when `gname` is not empty.
    unsafe {
        pvm_mytid();
        if gname.is_empty() {
            *rvalue = PVM_NULL_GROUP;
            return;
        }
        let stid = gs_getgstid();
        if stid < 0 {
            *rvalue = PVM_SYS_ERR;
            return;
        }
        let savectx = pvm_setcontext(SYSCTX_DG);
        let mut sbuf = pvm_mkbuf(PVM_DATA_DEFAULT);
        if sbuf < 0 {
            perror(caller);
        }
        sbuf = pvm_setsbuf(sbuf);
        if pvm_pkstr(group) < 0 {
            perror(caller);
        }
        if matches!(
            request,
            op::GETINST | op::GETTID | op::BARRIER | op::BARRIERV | op::STATICGROUP
        ) && pvm_pkint(&optarg, 1, 1) < 0
        {
            perror(caller);
        }
        if pvm_send(stid, request) < 0 {
            perror(caller);
        }
        let rbuf = pvm_setrbuf(0);
        let reply = if request == op::BARRIERV { op::BARRIER } else { request };
        let cc = pvm_recv(stid, reply);
        if cc < 0 {
            perror(caller);
            *rvalue = cc;
        } else if pvm_upkint(rvalue, 1, 1) < 0 {
            perror(caller);
            *rvalue = PVM_SYS_ERR;
        } else if !matches!(reply, op::JOIN | op::LEAVE | op::BARRIER) && *rvalue >= 0 {
            let mut gstate = DYNAMIC;
            pvm_upkint(&mut gstate, 1, 1);
            if gstate == STATIC {
                cache_group();
            }
        }
        pvm_freebuf(pvm_setsbuf(sbuf));
        pvm_freebuf(pvm_setrbuf(rbuf));
        pvm_setcontext(savectx);
    }
}

unsafe fn query_value(group: *const c_char, request: c_int, caller: &CStr, optarg: c_int) -> c_int {
    let mut v = 0;
    // SAFETY: forwarded from the exported routine's contract.
    unsafe { query(name(group), group, request, caller, &mut v, optarg) };
    v
}

fn with_errno(v: c_int) -> c_int {
    if v < 0 {
        set_errno(v);
    }
    v
}

/// Joins `group`; returns the instance number (the lowest free one) or an error.
#[no_mangle]
pub unsafe extern "C" fn pvm_joingroup(group: *const c_char) -> c_int {
    guard(|| {
        // SAFETY: see query.
        let g = unsafe { tev::gname(group) };
        let t = Call::begin(kind::JOINGROUP, &[Datum::Str(did::GN, g)]);
        // SAFETY: see query.
        let gid = unsafe { query_value(group, op::JOIN, c"pvm_joingroup", 0) };
        t.end(&[Datum::Int(did::CC, gid)]);
        with_errno(gid)
    })
}

/// Leaves `group`; returns after the server confirmed.
#[no_mangle]
pub unsafe extern "C" fn pvm_lvgroup(group: *const c_char) -> c_int {
    guard(|| {
        // SAFETY: see query.
        unsafe {
            let t = Call::begin(kind::LVGROUP, &[Datum::Str(did::GN, tev::gname(group))]);
            state().cache.remove(name(group));
            let rc = query_value(group, op::LEAVE, c"pvm_lvgroup", 0);
            t.end(&[Datum::Int(did::CC, rc)]);
            with_errno(rc)
        }
    })
}

#[no_mangle]
pub unsafe extern "C" fn pvm_getinst(group: *const c_char, tid: c_int) -> c_int {
    guard(|| {
        // SAFETY: see query.
        unsafe {
            let t = Call::begin(
                kind::GETINST,
                &[Datum::Str(did::GN, tev::gname(group)), Datum::Int(did::GT, tid)],
            );
            let mut inst = state().cache.getinst(name(group), tid);
            if inst < 0 {
                inst = query_value(group, op::GETINST, c"pvm_getinst", tid);
            }
            t.end(&[Datum::Int(did::GI, inst)]);
            with_errno(inst)
        }
    })
}

#[no_mangle]
pub unsafe extern "C" fn pvm_gettid(group: *const c_char, inst: c_int) -> c_int {
    guard(|| {
        // SAFETY: see query.
        unsafe {
            let t = Call::begin(
                kind::GETTID,
                &[Datum::Str(did::GN, tev::gname(group)), Datum::Int(did::GI, inst)],
            );
            let mut tid = state().cache.gettid(name(group), inst);
            if tid < 0 {
                tid = query_value(group, op::GETTID, c"pvm_gettid", inst);
            }
            t.end(&[Datum::Int(did::GT, tid)]);
            with_errno(tid)
        }
    })
}

#[no_mangle]
pub unsafe extern "C" fn pvm_gsize(group: *const c_char) -> c_int {
    guard(|| {
        // SAFETY: see query.
        unsafe {
            let t = Call::begin(kind::GSIZE, &[Datum::Str(did::GN, tev::gname(group))]);
            let mut size = state().cache.gsize(name(group));
            if size < 0 {
                size = query_value(group, op::GSIZE, c"pvm_gsize", 0);
            }
            t.end(&[Datum::Int(did::GS, size)]);
            with_errno(size)
        }
    })
}

/// Waits until `count` members (-1: the whole group) called pvm_barrier; returns 0 or an error.
#[no_mangle]
pub unsafe extern "C" fn pvm_barrier(group: *const c_char, count: c_int) -> c_int {
    guard(|| {
        // SAFETY: see query.
        let g = unsafe { tev::gname(group) };
        let t = Call::begin(kind::BARRIER, &[Datum::Str(did::GN, g), Datum::Int(did::GBC, count)]);
        // SAFETY: see query.
        let rc = unsafe { query_value(group, op::BARRIER, c"pvm_barrier", count) }.min(0);
        t.end(&[Datum::Int(did::CC, rc)]);
        with_errno(rc)
    })
}

/// Makes the group static once `size` members (-1: all) called it; members then cache it.
/// Returns what the server answers (the size on success), without setting pvm_errno, as the
/// legacy library does.
#[no_mangle]
pub unsafe extern "C" fn pvm_freezegroup(group: *const c_char, size: c_int) -> c_int {
    guard(|| {
        // SAFETY: see query.
        unsafe { query_value(group, op::STATICGROUP, c"pvm_freezegroup", size) }
    })
}

/// Asks the server to print its state (no reply). Uses the server found earlier.
#[no_mangle]
pub extern "C" fn pvm_gsdump() -> c_int {
    guard(|| {
        let tid = state().gstid;
        // SAFETY: plain C API calls.
        unsafe {
            let savectx = pvm_setcontext(SYSCTX_DG);
            let sbuf = pvm_setsbuf(pvm_mkbuf(PVM_DATA_DEFAULT));
            pvm_send(tid, op::DUMP);
            pvm_freebuf(pvm_setsbuf(sbuf));
            pvm_setcontext(savectx);
        }
        PVM_OK
    })
}

/// Members of `group` (gs_get_tidlist): from the static cache or from the server (TIDLIST when
/// instance numbers must be contiguous, BCAST otherwise). Returns (count, tids by slot).
unsafe fn tidlist(group: *const c_char, holes_not_allowed: bool) -> Result<(usize, Vec<c_int>), c_int> {
    // SAFETY: plain C API calls; `group` as in query.
    unsafe {
        let gname = name(group);
        if gname.is_empty() {
            return Err(PVM_NULL_GROUP);
        }
        if let Some(g) = state().cache.get(gname) {
            let n = usize::try_from(g.ntids).unwrap_or(0);
            if holes_not_allowed && g.tids.iter().take(n).any(|&t| t == NOTID) {
                return Err(-1);
            }
            return Ok((n.min(g.tids.len()), g.tids.clone()));
        }
        let stid = gs_getgstid();
        if stid < 0 {
            return Err(PVM_SYS_ERR);
        }
        let sbuf = pvm_setsbuf(pvm_mkbuf(PVM_DATA_DEFAULT));
        let rbuf = pvm_setrbuf(0);
        pvm_pkstr(group);
        let savectx = pvm_setcontext(SYSCTX_DG);
        let tag = if holes_not_allowed { op::TIDLIST } else { op::BCAST };
        pvm_send(stid, tag);
        let got = pvm_recv(stid, tag);
        pvm_setcontext(savectx);
        let restore = || {
            pvm_freebuf(pvm_setsbuf(sbuf));
            pvm_freebuf(pvm_setrbuf(rbuf));
        };
        if got < 0 {
            restore();
            return Err(got);
        }
        let mut bytes = 0;
        let (mut t, mut s) = (0, 0);
        pvm_bufinfo(got, &mut bytes, &mut t, &mut s);
        let mut ntids: c_int = 0;
        if pvm_upkint(&mut ntids, 1, 1) < 0 {
            restore();
            return Err(PVM_SYS_ERR);
        }
        if ntids < 0 {
            restore();
            return Err(ntids);
        }
        if ntids == 0 {
            restore();
            return Err(PVM_NO_INST);
        }
        let n = match usize::try_from(ntids) {
            Ok(n) if n <= usize::try_from(bytes).unwrap_or(0) / 4 => n,
            _ => {
                restore();
                return Err(PVM_SYS_ERR);
            }
        };
        let mut tids = vec![NOTID; n];
        pvm_upkint(tids.as_mut_ptr(), ntids, 1);
        let mut gstate = DYNAMIC;
        pvm_upkint(&mut gstate, 1, 1);
        if gstate == STATIC {
            cache_group();
        }
        restore();
        Ok((n, tids))
    }
}

/// Sends the active send buffer with `msgtag` to every member of `group` except the caller.
#[no_mangle]
pub unsafe extern "C" fn pvm_bcast(group: *const c_char, msgtag: c_int) -> c_int {
    guard(|| {
        // SAFETY: see tidlist.
        unsafe {
            let t = Call::begin(
                kind::BCAST,
                &[Datum::Str(did::GN, tev::gname(group)), Datum::Int(did::MC, msgtag)],
            );
            let (cc, sent) = bcast(group, msgtag);
            // Legacy's exit record: the result and the destinations (none after an error).
            let dst: &[c_int] = if cc < 0 { &[] } else { &sent };
            t.end(&[Datum::Int(did::CC, cc), Datum::Ints(did::MDL, dst)]);
            with_errno(cc)
        }
    })
}

/// pvm_bcast without the trace records: the result and the tids sent to.
unsafe fn bcast(group: *const c_char, msgtag: c_int) -> (c_int, Vec<c_int>) {
    // SAFETY: see tidlist.
    unsafe {
        let (mut n, mut tids) = match tidlist(group, false) {
            Ok(v) => v,
            Err(e) => return (e, Vec::new()),
        };
        let mytid = pvm_mytid();
        if mytid < 0 {
            perror(c"pvm_bcast");
            return (PVM_SYS_ERR, Vec::new());
        }
        if n == 1 && tids.first() == Some(&mytid) {
            return (PVM_NO_INST, Vec::new());
        }
        if let Some(i) = tids.iter().take(n).position(|&t| t == mytid) {
            n -= 1;
            tids[i] = tids[n];
        }
        let cnt = c_int::try_from(n).unwrap_or(0);
        let cc = pvm_mcast(tids.as_mut_ptr(), cnt, msgtag);
        tids.truncate(n);
        (cc.min(0), tids)
    }
}

/// Host of a task as the group server counts hosts.
#[no_mangle]
pub extern "C" fn gs_tidtohost(tid: c_int) -> c_int {
    guard(|| {
        // SAFETY: plain C API call.
        unsafe { pvm_tidtohost(tid) }
    })
}

/// Size in bytes of one element of a PVM datatype, or PvmBadParam.
#[no_mangle]
pub extern "C" fn gs_get_datasize(datatype: c_int) -> c_int {
    guard(|| {
        datasize(datatype)
            .and_then(|s| c_int::try_from(s).ok())
            .unwrap_or(PVM_BAD_PARAM)
    })
}

/// (coordinator, members on the host, hosts in the group) for host `hosttid`.
#[no_mangle]
pub unsafe extern "C" fn pvm_grphostinfo(
    group: *const c_char,
    hosttid: c_int,
    coord: *mut c_int,
    nmem_onhost: *mut c_int,
    nhosts: *mut c_int,
) -> c_int {
    guard(|| {
        if coord.is_null() || nmem_onhost.is_null() || nhosts.is_null() {
            return PVM_BAD_PARAM;
        }
        // SAFETY: pointers checked above; C API calls as in query.
        unsafe {
            *coord = NOTID;
            *nmem_onhost = 0;
            *nhosts = 0;
            let gname = name(group);
            if gname.is_empty() {
                return PVM_NULL_GROUP;
            }
            let local = state().cache.host_char(gname, hosttid, |t| gs_tidtohost(t));
            if let Ok((c, m, h)) = local {
                *coord = c;
                *nmem_onhost = m;
                *nhosts = h;
                return PVM_OK;
            }
            let stid = gs_getgstid();
            if stid < 0 {
                return PVM_SYS_ERR;
            }
            let savectx = pvm_setcontext(SYSCTX_DG);
            let sbuf = pvm_mkbuf(PVM_DATA_DEFAULT);
            let rbuf = pvm_setrbuf(0);
            let sbuf = pvm_setsbuf(sbuf);
            let info = (|| {
                let mut info = pvm_pkstr(group);
                if info < 0 {
                    return info;
                }
                info = pvm_pkint(&hosttid, 1, 1);
                if info < 0 {
                    return info;
                }
                info = pvm_send(stid, op::HOSTCHAR);
                if info < 0 {
                    return info;
                }
                info = pvm_recv(stid, op::HOSTCHAR);
                if info < 0 {
                    return info;
                }
                for p in [nhosts, nmem_onhost, coord] {
                    info = pvm_upkint(p, 1, 1);
                    if info < 0 {
                        return info;
                    }
                }
                let mut gstate = DYNAMIC;
                info = pvm_upkint(&mut gstate, 1, 1);
                if info < 0 {
                    return info;
                }
                if gstate == STATIC {
                    cache_group();
                }
                info
            })();
            pvm_freebuf(pvm_setsbuf(sbuf));
            pvm_freebuf(pvm_setrbuf(rbuf));
            pvm_setcontext(savectx);
            info
        }
    })
}

/// Per-host vectors (members on each host, coordinator of each host) of `group`. The vectors
/// stay valid until the next call.
#[no_mangle]
pub unsafe extern "C" fn pvm_grpvhostinfo(
    group: *const c_char,
    coordv: *mut *mut c_int,
    nmem_onhostv: *mut *mut c_int,
    nhosts: *mut c_int,
) -> c_int {
    guard(|| {
        if coordv.is_null() || nmem_onhostv.is_null() || nhosts.is_null() {
            return PVM_BAD_PARAM;
        }
        // SAFETY: pointers checked above; C API calls as in query.
        unsafe {
            *coordv = std::ptr::null_mut();
            *nmem_onhostv = std::ptr::null_mut();
            *nhosts = 0;
            let gname = name(group);
            if gname.is_empty() {
                return PVM_NULL_GROUP;
            }
            {
                let mut st = state();
                if let Some(g) = st.cache.get(gname) {
                    let (on, co) = (g.np_onhost.clone(), g.pcoord.clone());
                    st.hostv_onhost = on;
                    st.hostv_coord = co;
                    *nhosts = c_int::try_from(st.hostv_coord.len()).unwrap_or(0);
                    *coordv = st.hostv_coord.as_mut_ptr();
                    *nmem_onhostv = st.hostv_onhost.as_mut_ptr();
                    return PVM_OK;
                }
            }
            let stid = gs_getgstid();
            if stid < 0 {
                return PVM_SYS_ERR;
            }
            let savectx = pvm_setcontext(SYSCTX_DG);
            let sbuf = pvm_mkbuf(PVM_DATA_DEFAULT);
            let rbuf = pvm_setrbuf(0);
            let sbuf = pvm_setsbuf(sbuf);
            let mut onhost = Vec::new();
            let mut coords = Vec::new();
            let info = (|| {
                let mut info = pvm_pkstr(group);
                if info < 0 {
                    return info;
                }
                info = pvm_send(stid, op::HOSTCHARV);
                if info < 0 {
                    return info;
                }
                let got = pvm_recv(stid, op::HOSTCHARV);
                if got < 0 {
                    return got;
                }
                let mut bytes = 0;
                let (mut t, mut s) = (0, 0);
                pvm_bufinfo(got, &mut bytes, &mut t, &mut s);
                info = pvm_upkint(nhosts, 1, 1);
                if info < 0 {
                    return info;
                }
                let Some(n) = usize::try_from(*nhosts)
                    .ok()
                    .filter(|&n| n <= usize::try_from(bytes).unwrap_or(0) / 4)
                else {
                    return PVM_OUT_OF_RES;
                };
                onhost = vec![0; n];
                coords = vec![NOTID; n];
                if n > 0 {
                    info = pvm_upkint(onhost.as_mut_ptr(), *nhosts, 1);
                    if info < 0 {
                        return info;
                    }
                    info = pvm_upkint(coords.as_mut_ptr(), *nhosts, 1);
                    if info < 0 {
                        return info;
                    }
                }
                let mut gstate = DYNAMIC;
                info = pvm_upkint(&mut gstate, 1, 1);
                if info < 0 {
                    return info;
                }
                if gstate == STATIC {
                    cache_group();
                }
                info
            })();
            pvm_freebuf(pvm_setsbuf(sbuf));
            pvm_freebuf(pvm_setrbuf(rbuf));
            pvm_setcontext(savectx);
            let mut st = state();
            st.hostv_onhost = onhost;
            st.hostv_coord = coords;
            *coordv = st.hostv_coord.as_mut_ptr();
            *nmem_onhostv = st.hostv_onhost.as_mut_ptr();
            info
        }
    })
}

/// A user (or predefined) reduction: `func(&datatype, x, y, &num, &info)` with x = f(x, y).
pub type ReduceFn = unsafe extern "C" fn(*mut c_int, *mut c_void, *mut c_void, *mut c_int, *mut c_int);

/// Global reduction over `group` with the result at instance `rootinst`. Fan-in as the legacy
/// library does it, so that mixed legacy/new members interoperate: members send to the
/// lowest-tid member on their host (the coordinator), coordinators combine and send to the
/// root, the root combines one value per host.
#[no_mangle]
pub unsafe extern "C" fn pvm_reduce(
    func: Option<ReduceFn>,
    data: *mut c_void,
    count: c_int,
    datatype: c_int,
    msgtag: c_int,
    gname: *const c_char,
    rootinst: c_int,
) -> c_int {
    guard(|| {
        // SAFETY: the caller guarantees `data` holds `count` elements of `datatype`; C API calls.
        unsafe {
            let t = Call::begin(
                kind::REDUCE,
                &[Datum::Str(did::GN, tev::gname(gname)), Datum::Int(did::MC, msgtag)],
            );
            let rbuf = pvm_setrbuf(0);
            let sbuf = pvm_setsbuf(pvm_mkbuf(PVM_DATA_DEFAULT));
            let savectx = pvm_setcontext(SYSCTX_DG);
            let cc = reduce_inner(func, data, count, datatype, msgtag, gname, rootinst);
            pvm_freebuf(pvm_setrbuf(rbuf));
            pvm_freebuf(pvm_setsbuf(sbuf));
            pvm_setcontext(savectx);
            if cc < 0 {
                lpvmerr("pvm_reduce", cc);
            }
            t.end(&[Datum::Int(did::CC, cc)]);
            cc
        }
    })
}

unsafe fn reduce_inner(
    func: Option<ReduceFn>,
    data: *mut c_void,
    mut count: c_int,
    mut datatype: c_int,
    msgtag: c_int,
    gname: *const c_char,
    rootinst: c_int,
) -> c_int {
    // SAFETY: as in pvm_reduce.
    unsafe {
        let Some(func) = func else { return PVM_BAD_PARAM };
        if data.is_null() || count <= 0 {
            return PVM_BAD_PARAM;
        }
        let mytid = pvm_mytid();
        let cc = pvm_getinst(gname, mytid);
        if cc < 0 {
            return cc;
        }
        let roottid = pvm_gettid(gname, rootinst);
        if roottid < 0 {
            return roottid;
        }
        let Some(size) = datasize(datatype) else {
            return PVM_BAD_PARAM;
        };
        let Some((pack, unpack)) = pack_unpack(datatype) else {
            return PVM_BAD_PARAM;
        };
        let Some(bytes) = usize::try_from(count).ok().and_then(|c| c.checked_mul(size)) else {
            return PVM_NO_MEM;
        };
        // f64 storage keeps the work area aligned for every datatype.
        let mut work = vec![0f64; bytes.div_ceil(8) + 1];
        let work = work.as_mut_ptr().cast::<c_void>();
        let (mut coord, mut nmem, mut nhosts) = (NOTID, 0, 0);
        pvm_grphostinfo(gname, gs_tidtohost(mytid), &mut coord, &mut nmem, &mut nhosts);
        let mut cc: c_int;
        if mytid == coord && nmem > 1 {
            for _ in 1..nmem {
                cc = pvm_recv(-1, msgtag);
                if cc < 0 {
                    return cc;
                }
                cc = unpack(work, count, 1);
                if cc < 0 {
                    return cc;
                }
                func(&mut datatype, data, work, &mut count, &mut cc);
                if cc < 0 {
                    return cc;
                }
            }
        } else if mytid != coord {
            pvm_initsend(PVM_DATA_DEFAULT);
            cc = pack(data, count, 1);
            if cc < 0 {
                return cc;
            }
            cc = pvm_send(coord, msgtag);
            if cc < 0 {
                return cc;
            }
        }
        if mytid == coord && mytid != roottid {
            pvm_initsend(PVM_DATA_DEFAULT);
            cc = pack(data, count, 1);
            if cc < 0 {
                return cc;
            }
            cc = pvm_send(roottid, msgtag);
            if cc < 0 {
                return cc;
            }
        }
        if mytid == roottid {
            if mytid != coord {
                cc = pvm_recv(coord, msgtag);
                if cc < 0 {
                    return cc;
                }
                cc = unpack(data, count, 1);
                if cc < 0 {
                    return cc;
                }
            }
            for _ in 1..nhosts.max(1) {
                cc = pvm_recv(-1, msgtag);
                if cc < 0 {
                    return cc;
                }
                cc = unpack(work, count, 1);
                if cc < 0 {
                    return cc;
                }
                func(&mut datatype, data, work, &mut count, &mut cc);
                if cc < 0 {
                    return cc;
                }
            }
        }
        PVM_OK
    }
}

/// Member `i` of `group` sends `count` elements to the root, which stores them at
/// `result[i*count..]` (the root copies its own).
#[no_mangle]
pub unsafe extern "C" fn pvm_gather(
    result: *mut c_void,
    data: *mut c_void,
    count: c_int,
    datatype: c_int,
    msgtag: c_int,
    gname: *const c_char,
    rootinst: c_int,
) -> c_int {
    guard(|| {
        // SAFETY: the caller guarantees the buffers' sizes; C API calls.
        unsafe {
            let t = Call::begin(
                kind::GATHER,
                &[Datum::Str(did::GN, tev::gname(gname)), Datum::Int(did::MC, msgtag)],
            );
            let savectx = pvm_setcontext(SYSCTX_DG);
            let cc = gather_inner(result, data, count, datatype, msgtag, gname, rootinst);
            pvm_setcontext(savectx);
            if cc < 0 {
                lpvmerr("pvm_gather", cc);
            }
            t.end(&[Datum::Int(did::CC, cc)]);
            cc
        }
    })
}

unsafe fn gather_inner(
    result: *mut c_void,
    data: *mut c_void,
    count: c_int,
    datatype: c_int,
    msgtag: c_int,
    gname: *const c_char,
    rootinst: c_int,
) -> c_int {
    // SAFETY: as in pvm_gather.
    unsafe {
        if data.is_null() || count <= 0 {
            return PVM_BAD_PARAM;
        }
        let Some((pack, unpack)) = pack_unpack(datatype) else {
            return PVM_BAD_PARAM;
        };
        let roottid = pvm_gettid(gname, rootinst);
        if roottid < 0 {
            return roottid;
        }
        let myginst = pvm_getinst(gname, pvm_mytid());
        if myginst < 0 {
            return myginst;
        }
        if myginst == rootinst {
            if result.is_null() {
                return PVM_BAD_PARAM;
            }
            let Some(size) = datasize(datatype) else {
                return PVM_BAD_PARAM;
            };
            let chunk = size * usize::try_from(count).unwrap_or(0);
            let (n, tids) = match tidlist(gname, true) {
                Ok(v) => v,
                Err(e) => return e,
            };
            let rbuf = pvm_setrbuf(0);
            for (i, &tid) in tids.iter().enumerate().take(n) {
                let dst = result.cast::<u8>().add(i * chunk);
                if c_int::try_from(i) == Ok(myginst) {
                    std::ptr::copy(data.cast::<u8>(), dst, chunk);
                    continue;
                }
                let mut cc = pvm_recv(tid, msgtag);
                if cc >= 0 {
                    cc = unpack(dst.cast(), count, 1);
                }
                if cc < 0 {
                    pvm_freebuf(pvm_setrbuf(rbuf));
                    return cc;
                }
            }
            pvm_freebuf(pvm_setrbuf(rbuf));
        } else {
            let sbuf = pvm_setsbuf(pvm_mkbuf(PVM_DATA_DEFAULT));
            let mut cc = pack(data, count, 1);
            if cc >= 0 {
                cc = pvm_send(roottid, msgtag);
            }
            pvm_freebuf(pvm_setsbuf(sbuf));
            if cc < 0 {
                return cc;
            }
        }
        PVM_OK
    }
}

/// The root sends `data[i*count..]` to member `i` (and copies its own part); every member
/// receives its `count` elements into `result`.
#[no_mangle]
pub unsafe extern "C" fn pvm_scatter(
    result: *mut c_void,
    data: *mut c_void,
    count: c_int,
    datatype: c_int,
    msgtag: c_int,
    gname: *const c_char,
    rootinst: c_int,
) -> c_int {
    guard(|| {
        // SAFETY: the caller guarantees the buffers' sizes; C API calls.
        unsafe {
            let t = Call::begin(
                kind::SCATTER,
                &[Datum::Str(did::GN, tev::gname(gname)), Datum::Int(did::MC, msgtag)],
            );
            let savectx = pvm_setcontext(SYSCTX_DG);
            let cc = scatter_inner(result, data, count, datatype, msgtag, gname, rootinst);
            pvm_setcontext(savectx);
            if cc < 0 {
                lpvmerr("pvm_scatter", cc);
            }
            t.end(&[Datum::Int(did::CC, cc)]);
            cc
        }
    })
}

unsafe fn scatter_inner(
    result: *mut c_void,
    data: *mut c_void,
    count: c_int,
    datatype: c_int,
    msgtag: c_int,
    gname: *const c_char,
    rootinst: c_int,
) -> c_int {
    // SAFETY: as in pvm_scatter.
    unsafe {
        if result.is_null() || count <= 0 {
            return PVM_BAD_PARAM;
        }
        let Some((pack, unpack)) = pack_unpack(datatype) else {
            return PVM_BAD_PARAM;
        };
        let roottid = pvm_gettid(gname, rootinst);
        if roottid < 0 {
            return roottid;
        }
        let myginst = pvm_getinst(gname, pvm_mytid());
        if myginst < 0 {
            return myginst;
        }
        if myginst == rootinst {
            if data.is_null() {
                return PVM_BAD_PARAM;
            }
            let Some(size) = datasize(datatype) else {
                return PVM_BAD_PARAM;
            };
            let chunk = size * usize::try_from(count).unwrap_or(0);
            let (n, tids) = match tidlist(gname, true) {
                Ok(v) => v,
                Err(e) => return e,
            };
            // The legacy routine packs into the caller's active send buffer (pvm_initsend) and
            // leaves none behind; ours uses its own buffer and gives the caller's back.
            let sbuf = pvm_setsbuf(pvm_mkbuf(PVM_DATA_DEFAULT));
            for (i, &tid) in tids.iter().enumerate().take(n) {
                let src = data.cast::<u8>().add(i * chunk);
                if c_int::try_from(i) == Ok(myginst) {
                    std::ptr::copy(src, result.cast::<u8>(), chunk);
                    continue;
                }
                pvm_initsend(PVM_DATA_DEFAULT);
                let mut cc = pack(src.cast(), count, 1);
                if cc >= 0 {
                    cc = pvm_send(tid, msgtag);
                }
                if cc < 0 {
                    pvm_freebuf(pvm_setsbuf(sbuf));
                    return cc;
                }
            }
            pvm_freebuf(pvm_setsbuf(sbuf));
        } else {
            let rbuf = pvm_setrbuf(0);
            let mut cc = pvm_recv(roottid, msgtag);
            if cc >= 0 {
                cc = unpack(result, count, 1);
            }
            pvm_freebuf(pvm_setrbuf(rbuf));
            if cc < 0 {
                return cc;
            }
        }
        PVM_OK
    }
}

macro_rules! predefined {
    ($name:ident, $op:expr) => {
        /// Predefined reduction for pvm_reduce (all PVM datatypes but strings).
        #[no_mangle]
        #[allow(non_snake_case)]
        pub unsafe extern "C" fn $name(
            datatype: *mut c_int,
            x: *mut c_void,
            y: *mut c_void,
            num: *mut c_int,
            info: *mut c_int,
        ) {
            if datatype.is_null() || num.is_null() || info.is_null() {
                return;
            }
            // SAFETY: pvm_reduce's contract: x and y hold *num elements of *datatype.
            unsafe { *info = ops::apply($op, *datatype, x, y, *num) };
        }
    };
}

predefined!(PvmMax, ops::Op::Max);
predefined!(PvmMin, ops::Op::Min);
predefined!(PvmSum, ops::Op::Sum);
predefined!(PvmProduct, ops::Op::Product);
