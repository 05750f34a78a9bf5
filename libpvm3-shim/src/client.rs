//! Safe Rust wrappers over this library's C interface, for the Rust programs of pvm-rs that are
//! ordinary PVM tasks (the console `pvm`, the tracer `pvmtrace`, the scheduler `pvm-sched`).
//!
//! The wrappers declare and call the exported C functions, exactly as a C program would, rather
//! than the Rust items behind them: these programs then speak the legacy task protocol to
//! either daemon through the same interface users have, and double as tests of it. Each
//! wrapper passes pointers to live buffers or NUL-terminated strings owned for the duration of
//! the call, which is all the C interface asks; strings the library hands back are copied at
//! once (they live until the library's next call).

use std::ffi::{c_char, c_int, CStr, CString};

#[repr(C)]
struct HostInfoC {
    tid: c_int,
    name: *const c_char,
    arch: *const c_char,
    speed: c_int,
    dsig: c_int,
}

#[repr(C)]
struct TaskInfoC {
    tid: c_int,
    ptid: c_int,
    host: c_int,
    flag: c_int,
    a_out: *const c_char,
    pid: c_int,
}

#[repr(C)]
struct MboxInfoC {
    name: *const c_char,
    nentries: c_int,
    indices: *const c_int,
    owners: *const c_int,
    flags: *const c_int,
}

/// A message's header fields (`struct pvmminfo` of `pvm_getminfo`/`pvm_setminfo`).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct MInfo {
    pub len: c_int,
    pub ctx: c_int,
    pub tag: c_int,
    pub wid: c_int,
    pub enc: c_int,
    pub crc: c_int,
    pub src: c_int,
    pub dst: c_int,
}

extern "C" {
    fn pvm_mytid() -> c_int;
    fn pvm_exit() -> c_int;
    fn pvm_parent() -> c_int;
    fn pvm_config(nhost: *mut c_int, narch: *mut c_int, hostp: *mut *const HostInfoC) -> c_int;
    fn pvm_tasks(which: c_int, ntask: *mut c_int, taskp: *mut *const TaskInfoC) -> c_int;
    fn pvm_spawn(
        file: *mut c_char,
        argv: *mut *mut c_char,
        flag: c_int,
        whr: *mut c_char,
        count: c_int,
        tids: *mut c_int,
    ) -> c_int;
    fn pvm_kill(tid: c_int) -> c_int;
    fn pvm_halt() -> c_int;
    fn pvm_mstat(host: *mut c_char) -> c_int;
    fn pvm_pstat(tid: c_int) -> c_int;
    fn pvm_addhosts(names: *mut *mut c_char, count: c_int, infos: *mut c_int) -> c_int;
    fn pvm_delhosts(names: *mut *mut c_char, count: c_int, infos: *mut c_int) -> c_int;
    fn pvm_sendsig(tid: c_int, sig: c_int) -> c_int;
    fn pvm_notify(what: c_int, tag: c_int, cnt: c_int, tids: *mut c_int) -> c_int;
    fn pvm_getopt(what: c_int) -> c_int;
    fn pvm_setopt(what: c_int, val: c_int) -> c_int;
    fn pvm_setcontext(ctx: c_int) -> c_int;
    fn pvm_version() -> *const c_char;
    fn pvm_tidtohost(tid: c_int) -> c_int;
    fn pvm_export(name: *mut c_char) -> c_int;
    fn pvm_unexport(name: *mut c_char) -> c_int;
    fn pvm_start_pvmd(argc: c_int, argv: *mut *mut c_char, block: c_int) -> c_int;
    fn pvm_tickle(narg: c_int, argp: *mut c_int, nres: *mut c_int, resp: *mut c_int) -> c_int;
    fn pvm_getmboxinfo(pattern: *mut c_char, n: *mut c_int, classes: *mut *const MboxInfoC) -> c_int;
    fn pvm_putinfo(name: *mut c_char, bufid: c_int, flags: c_int) -> c_int;
    fn pvm_recvinfo(name: *mut c_char, index: c_int, flags: c_int) -> c_int;
    fn pvm_delinfo(name: *mut c_char, index: c_int, flags: c_int) -> c_int;
    fn pvm_initsend(enc: c_int) -> c_int;
    fn pvm_send(tid: c_int, tag: c_int) -> c_int;
    fn pvm_nrecv(tid: c_int, tag: c_int) -> c_int;
    fn pvm_trecv(tid: c_int, tag: c_int, tmout: *mut libc::timeval) -> c_int;
    fn pvm_bufinfo(bufid: c_int, bytes: *mut c_int, tag: *mut c_int, tid: *mut c_int) -> c_int;
    fn pvm_getminfo(bufid: c_int, info: *mut MInfo) -> c_int;
    fn pvm_setminfo(bufid: c_int, info: *mut MInfo) -> c_int;
    fn pvm_getsbuf() -> c_int;
    fn pvm_getrbuf() -> c_int;
    fn pvm_setrbuf(bufid: c_int) -> c_int;
    fn pvm_freebuf(bufid: c_int) -> c_int;
    fn pvm_pkint(ip: *mut c_int, cnt: c_int, std: c_int) -> c_int;
    fn pvm_pkstr(s: *mut c_char) -> c_int;
    fn pvm_upkint(ip: *mut c_int, cnt: c_int, std: c_int) -> c_int;
    fn pvm_upkbyte(cp: *mut c_char, cnt: c_int, std: c_int) -> c_int;
    fn pvm_upkstr(cp: *mut c_char) -> c_int;
    fn pvmupkstralloc(out: *mut *mut c_char) -> c_int;
    fn pvm_reg_rm(hip: *mut *mut HostInfoC) -> c_int;
    fn pvm_reg_tracer(
        tctx: c_int,
        ttag: c_int,
        octx: c_int,
        otag: c_int,
        tmask: *mut c_char,
        tbuf: c_int,
        topt: c_int,
    ) -> c_int;
    fn pvm_settmask(who: c_int, mask: *mut c_char) -> c_int;
    fn pvm_gettmask(who: c_int, mask: *mut c_char) -> c_int;
    fn pvm_migrate(tid: c_int, host: *const c_char) -> c_int;
    fn pvm_checkpoint(tid: c_int, flags: c_int) -> c_int;
    fn pvm_restart(tid: c_int, epoch: c_int) -> c_int;
    static pvm_errlist: [*const c_char; 37];
}

pub const PVM_TASK_DEFAULT: c_int = 0;
pub const PVM_TASK_HOST: c_int = 1;
pub const PVM_TASK_ARCH: c_int = 2;
pub const PVM_TASK_DEBUG: c_int = 4;
pub const PVM_TASK_TRACE: c_int = 8;
pub const PVM_TASK_SELF: c_int = 0;
pub const PVM_TASK_CHILD: c_int = 1;
pub const PVM_AUTO_ERR: c_int = 3;
pub const PVM_RESV_TIDS: c_int = 11;
pub const PVM_MBOX_DEFAULT: c_int = 0;
pub const PVM_MBOX_OVERWRITABLE: c_int = 4;
/// `PvmCkptApp`, `PvmCkptAutoRestart` (include/pvm3.h).
pub const PVM_CKPT_APP: c_int = 1;
pub const PVM_CKPT_AUTO_RESTART: c_int = 2;

/// A host of `pvm_config`.
pub struct Host {
    pub tid: i32,
    pub name: String,
    pub arch: String,
    pub speed: i32,
    pub dsig: i32,
}

/// A task of `pvm_tasks`.
pub struct Task {
    pub tid: i32,
    pub ptid: i32,
    pub host: i32,
    pub flag: i32,
    pub a_out: String,
    pub pid: i32,
}

/// A mailbox class of `pvm_getmboxinfo`: its entries as (index, owner, flags).
pub struct Mbox {
    pub name: String,
    pub entries: Vec<(i32, i32, i32)>,
}

/// A received message, left as the active receive buffer for unpacking.
#[derive(Debug, Clone, Copy)]
pub struct Msg {
    pub buf: i32,
    pub src: i32,
    pub tag: i32,
    pub len: i32,
}

fn cstr(p: *const c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        // SAFETY: the library hands out NUL-terminated strings that live until its next call.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}

fn cs(s: &str) -> CString {
    CString::new(s.replace('\0', "")).unwrap_or_default()
}

/// Owned C strings and the NULL-terminated pointer array a `char **` parameter wants.
struct CStrings {
    _owned: Vec<CString>,
    ptrs: Vec<*mut c_char>,
}

impl CStrings {
    fn new(items: &[String]) -> Self {
        let owned: Vec<CString> = items.iter().map(|a| cs(a)).collect();
        let mut ptrs: Vec<*mut c_char> = owned.iter().map(|c| c.as_ptr() as *mut c_char).collect();
        ptrs.push(std::ptr::null_mut());
        CStrings { _owned: owned, ptrs }
    }
    fn len(&self) -> c_int {
        (self.ptrs.len() - 1) as c_int
    }
}

/// The legacy error text for a negative PVM return code (`pvm_errlist[-cc]`).
pub fn errtext(cc: i32) -> String {
    let i = cc.unsigned_abs() as usize;
    if i < 37 {
        // SAFETY: a 37-entry table of static strings (or NULL) exported by the library.
        cstr(unsafe { pvm_errlist[i] })
    } else {
        format!("Unknown error {cc}")
    }
}

pub fn mytid() -> i32 {
    unsafe { pvm_mytid() }
}
pub fn exit() -> i32 {
    unsafe { pvm_exit() }
}
pub fn parent() -> i32 {
    unsafe { pvm_parent() }
}
pub fn start_pvmd(args: &[String]) -> i32 {
    let mut a = CStrings::new(args);
    unsafe { pvm_start_pvmd(a.len(), a.ptrs.as_mut_ptr(), 1) }
}

pub fn config() -> Result<(Vec<Host>, i32), i32> {
    let (mut n, mut na, mut p) = (0, 0, std::ptr::null());
    let cc = unsafe { pvm_config(&mut n, &mut na, &mut p) };
    if cc < 0 {
        return Err(cc);
    }
    let hosts = (0..n.clamp(0, 4096) as usize)
        .map(|i| {
            // SAFETY: the library returned n entries.
            let h = unsafe { &*p.add(i) };
            Host {
                tid: h.tid,
                name: cstr(h.name),
                arch: cstr(h.arch),
                speed: h.speed,
                dsig: h.dsig,
            }
        })
        .collect();
    Ok((hosts, na))
}

pub fn tasks(which: i32) -> Result<Vec<Task>, i32> {
    let (mut n, mut p) = (0, std::ptr::null());
    let cc = unsafe { pvm_tasks(which, &mut n, &mut p) };
    if cc < 0 {
        return Err(cc);
    }
    let tasks = (0..n.clamp(0, 1 << 20) as usize)
        .map(|i| {
            // SAFETY: the library returned n entries.
            let t = unsafe { &*p.add(i) };
            Task {
                tid: t.tid,
                ptid: t.ptid,
                host: t.host,
                flag: t.flag,
                a_out: cstr(t.a_out),
                pid: t.pid,
            }
        })
        .collect();
    Ok(tasks)
}

/// Returns the count started (or an error) and one entry per requested task: a tid or an error.
pub fn spawn(file: &str, args: &[String], flag: i32, whr: Option<&str>, count: i32) -> (i32, Vec<i32>) {
    let f = cs(file);
    let mut a = CStrings::new(args);
    let w = whr.map(cs);
    let mut tids = vec![0; count.max(1) as usize];
    let cc = unsafe {
        pvm_spawn(
            f.as_ptr() as *mut c_char,
            if args.is_empty() {
                std::ptr::null_mut()
            } else {
                a.ptrs.as_mut_ptr()
            },
            flag,
            w.as_ref().map_or(std::ptr::null_mut(), |c| c.as_ptr() as *mut c_char),
            count.max(1),
            tids.as_mut_ptr(),
        )
    };
    (cc, tids)
}

/// One task of `file args` with these flags and `where`: (count started, its tid or an error).
pub fn spawn_one(file: &str, args: &[String], flag: i32, whr: &str) -> (i32, i32) {
    let (cc, tids) = spawn(file, args, flag, Some(whr), 1);
    (cc, if cc == 1 || tids[0] < 0 { tids[0] } else { cc.min(-1) })
}

pub fn kill(tid: i32) -> i32 {
    unsafe { pvm_kill(tid) }
}
pub fn halt() -> i32 {
    unsafe { pvm_halt() }
}
pub fn mstat(host: &str) -> i32 {
    let h = cs(host);
    unsafe { pvm_mstat(h.as_ptr() as *mut c_char) }
}
/// Whether a task lives (TM_PSTAT, asked of the pvmd even while an RM is registered).
pub fn pstat(tid: i32) -> i32 {
    unsafe { pvm_pstat(tid) }
}
pub fn addhosts(names: &[String]) -> (i32, Vec<i32>) {
    let mut a = CStrings::new(names);
    let mut infos = vec![0; names.len()];
    let cc = unsafe { pvm_addhosts(a.ptrs.as_mut_ptr(), a.len(), infos.as_mut_ptr()) };
    (cc, infos)
}
pub fn delhosts(names: &[String]) -> (i32, Vec<i32>) {
    let mut a = CStrings::new(names);
    let mut infos = vec![0; names.len()];
    let cc = unsafe { pvm_delhosts(a.ptrs.as_mut_ptr(), a.len(), infos.as_mut_ptr()) };
    (cc, infos)
}
pub fn sendsig(tid: i32, sig: i32) -> i32 {
    unsafe { pvm_sendsig(tid, sig) }
}
pub fn notify(what: i32, tag: i32, tids: &[i32]) -> i32 {
    let mut t = tids.to_vec();
    unsafe { pvm_notify(what, tag, t.len() as c_int, t.as_mut_ptr()) }
}
pub fn getopt(what: i32) -> i32 {
    unsafe { pvm_getopt(what) }
}
pub fn setopt(what: i32, val: i32) -> i32 {
    unsafe { pvm_setopt(what, val) }
}
pub fn version() -> String {
    cstr(unsafe { pvm_version() })
}
pub fn tidtohost(tid: i32) -> i32 {
    unsafe { pvm_tidtohost(tid) }
}
pub fn export(name: &str) -> i32 {
    let c = cs(name);
    unsafe { pvm_export(c.as_ptr() as *mut c_char) }
}
pub fn unexport(name: &str) -> i32 {
    let c = cs(name);
    unsafe { pvm_unexport(c.as_ptr() as *mut c_char) }
}
pub fn tickle(args: &[i32]) -> Result<Vec<i32>, i32> {
    let mut a = args.to_vec();
    let mut res = vec![0; 1024];
    let mut n = 0;
    let cc = unsafe { pvm_tickle(a.len() as c_int, a.as_mut_ptr(), &mut n, res.as_mut_ptr()) };
    if cc < 0 {
        return Err(cc);
    }
    res.truncate(n.clamp(0, 1024) as usize);
    Ok(res)
}

pub fn mboxinfo(pattern: &str) -> Result<Vec<Mbox>, i32> {
    let c = cs(pattern);
    let (mut n, mut p) = (0, std::ptr::null());
    let cc = unsafe { pvm_getmboxinfo(c.as_ptr() as *mut c_char, &mut n, &mut p) };
    if cc < 0 {
        return Err(cc);
    }
    let classes = (0..n.max(0) as usize)
        .map(|i| {
            // SAFETY: the library returned n classes, each with nentries entries per array.
            let m = unsafe { &*p.add(i) };
            let entries = (0..m.nentries.max(0) as usize)
                .map(|j| unsafe { (*m.indices.add(j), *m.owners.add(j), *m.flags.add(j)) })
                .collect();
            Mbox {
                name: cstr(m.name),
                entries,
            }
        })
        .collect();
    Ok(classes)
}
/// Publishes the send buffer under `name` with `flags`; the index or an error.
pub fn putinfo(name: &str, flags: i32) -> i32 {
    let c = cs(name);
    unsafe { pvm_putinfo(c.as_ptr() as *mut c_char, pvm_getsbuf(), flags) }
}
/// Makes entry `index` of mailbox class `name` the receive buffer; its id or an error.
pub fn recvinfo(name: &str, index: i32, flags: i32) -> i32 {
    let c = cs(name);
    unsafe { pvm_recvinfo(c.as_ptr() as *mut c_char, index, flags) }
}
pub fn delinfo(name: &str, index: i32, flags: i32) -> i32 {
    let c = cs(name);
    unsafe { pvm_delinfo(c.as_ptr() as *mut c_char, index, flags) }
}
/// The string packed first in mailbox entry `name` (index 0), if there is one.
pub fn lookup_str(name: &str) -> Option<String> {
    let b = recvinfo(name, 0, PVM_MBOX_DEFAULT);
    if b <= 0 {
        return None;
    }
    let (mut bytes, mut tag, mut tid) = (0, 0, 0);
    if unsafe { pvm_bufinfo(b, &mut bytes, &mut tag, &mut tid) } < 0 {
        return None;
    }
    // A packed string cannot be longer than the message holding it.
    let mut buf = vec![0u8; bytes.max(0) as usize + 1];
    let old = set_rbuf(b);
    let cc = unsafe { pvm_upkstr(buf.as_mut_ptr() as *mut c_char) };
    set_rbuf(old);
    freebuf(b);
    if cc < 0 {
        return None;
    }
    let end = buf.iter().position(|&c| c == 0).unwrap_or(buf.len());
    Some(String::from_utf8_lossy(&buf[..end]).into_owned())
}

pub fn initsend() -> i32 {
    unsafe { pvm_initsend(0) }
}
pub fn pkint(v: i32) -> i32 {
    let mut v = v;
    unsafe { pvm_pkint(&mut v, 1, 1) }
}
pub fn pkstr(s: &str) -> i32 {
    let c = cs(s);
    unsafe { pvm_pkstr(c.as_ptr() as *mut c_char) }
}
pub fn send(tid: i32, tag: i32) -> i32 {
    unsafe { pvm_send(tid, tag) }
}
/// Sends the current send buffer in context `ctx` (then back to the previous context).
pub fn send_ctx(tid: i32, tag: i32, ctx: i32) -> i32 {
    unsafe {
        let old = pvm_setcontext(ctx);
        let cc = pvm_send(tid, tag);
        pvm_setcontext(old);
        cc
    }
}
fn msg(b: i32) -> Option<Msg> {
    if b <= 0 {
        return None;
    }
    let (mut len, mut tag, mut src) = (0, 0, 0);
    unsafe { pvm_bufinfo(b, &mut len, &mut tag, &mut src) };
    Some(Msg { buf: b, src, tag, len })
}
pub fn nrecv(tid: i32, tag: i32) -> Option<Msg> {
    msg(unsafe { pvm_nrecv(tid, tag) })
}
/// Waits up to `usec` microseconds for a message.
pub fn trecv(tid: i32, tag: i32, usec: i64) -> Option<Msg> {
    let mut tv = libc::timeval {
        tv_sec: usec / 1_000_000,
        tv_usec: usec % 1_000_000,
    };
    msg(unsafe { pvm_trecv(tid, tag, &mut tv) })
}
pub fn getminfo(b: i32) -> MInfo {
    let mut m = MInfo::default();
    unsafe { pvm_getminfo(b, &mut m) };
    m
}
/// Gives the send buffer the context and wait id of a request (so the reply matches it).
pub fn reply_info(req: &MInfo) {
    let mut m = getminfo(unsafe { pvm_getsbuf() });
    m.ctx = req.ctx;
    m.wid = req.wid;
    unsafe { pvm_setminfo(pvm_getsbuf(), &mut m) };
}
pub fn freebuf(b: i32) -> i32 {
    unsafe { pvm_freebuf(b) }
}
pub fn rbuf() -> i32 {
    unsafe { pvm_getrbuf() }
}
pub fn set_rbuf(b: i32) -> i32 {
    unsafe { pvm_setrbuf(b) }
}
pub fn upkint() -> Result<i32, i32> {
    let mut v = 0;
    let cc = unsafe { pvm_upkint(&mut v, 1, 1) };
    if cc < 0 {
        Err(cc)
    } else {
        Ok(v)
    }
}
pub fn upkbytes(n: usize) -> Result<Vec<u8>, i32> {
    let mut v = vec![0u8; n];
    let cc = unsafe { pvm_upkbyte(v.as_mut_ptr() as *mut c_char, n as c_int, 1) };
    if cc < 0 {
        Err(cc)
    } else {
        Ok(v)
    }
}
pub fn upkstr() -> Result<String, i32> {
    let mut p: *mut c_char = std::ptr::null_mut();
    let cc = unsafe { pvmupkstralloc(&mut p) };
    if cc < 0 || p.is_null() {
        return Err(cc.min(-1));
    }
    let s = cstr(p);
    // SAFETY: malloc'd by the library for the caller.
    unsafe { libc::free(p as *mut libc::c_void) };
    Ok(s)
}

pub fn reg_rm() -> i32 {
    let mut p = std::ptr::null_mut();
    unsafe { pvm_reg_rm(&mut p) }
}
/// Registers as tracer: events with `tag`, task output with `otag`, unbuffered, full records.
pub fn reg_tracer(tag: i32, otag: i32, mask: &str) -> i32 {
    let m = cs(mask);
    unsafe { pvm_reg_tracer(0, tag, 0, otag, m.as_ptr() as *mut c_char, 0, 1) }
}
pub fn settmask(who: i32, mask: &str) -> i32 {
    let m = cs(mask);
    unsafe { pvm_settmask(who, m.as_ptr() as *mut c_char) }
}
pub fn gettmask(who: i32) -> String {
    let mut buf = [0 as c_char; 64];
    unsafe { pvm_gettmask(who, buf.as_mut_ptr()) };
    // Zero-initialised and longer than a trace mask (45 bytes with the NUL).
    cstr(buf.as_ptr())
}

/// `pvm_migrate` (pvm-rs): the pvmd tid of the task's new host, or a PVM error code.
pub fn migrate(tid: i32, host: &str) -> i32 {
    let h = cs(host);
    unsafe { pvm_migrate(tid, h.as_ptr()) }
}
/// `pvm_checkpoint` (pvm-rs) with `flags` (0: the task alone): the epoch, or an error code.
pub fn checkpoint(tid: i32, flags: i32) -> i32 {
    unsafe { pvm_checkpoint(tid, flags) }
}
/// `pvm_restart` (pvm-rs) from `epoch` (-1: the last complete one): the epoch, or an error.
pub fn restart(tid: i32, epoch: i32) -> i32 {
    unsafe { pvm_restart(tid, epoch) }
}
/// Whether the local pvmd is a pvm-rs daemon (it announced its features at enrolment).
pub fn daemon_is_pvm_rs() -> bool {
    crate::park::daemon_features().is_some()
}
