//! The PVM C calls the scheduler makes, through pvm-rs's task library (linked in), with safe
//! wrappers. Using the C interface keeps the scheduler an ordinary PVM task: it speaks the
//! legacy task protocol to either daemon.

use std::ffi::{c_char, c_int, CStr, CString};

use pvm3 as _;

#[repr(C)]
pub struct HostInfoC {
    pub tid: c_int,
    pub name: *const c_char,
    pub arch: *const c_char,
    pub speed: c_int,
    pub dsig: c_int,
}

#[repr(C)]
pub struct TaskInfoC {
    pub tid: c_int,
    pub ptid: c_int,
    pub host: c_int,
    pub flag: c_int,
    pub a_out: *const c_char,
    pub pid: c_int,
}

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
    fn pvm_reg_rm(hip: *mut *mut HostInfoC) -> c_int;
    fn pvm_setopt(what: c_int, val: c_int) -> c_int;
    fn pvm_trecv(tid: c_int, tag: c_int, tmout: *mut libc::timeval) -> c_int;
    fn pvm_bufinfo(bufid: c_int, bytes: *mut c_int, tag: *mut c_int, tid: *mut c_int) -> c_int;
    fn pvm_getminfo(bufid: c_int, info: *mut MInfo) -> c_int;
    fn pvm_setminfo(bufid: c_int, info: *mut MInfo) -> c_int;
    fn pvm_upkint(ip: *mut c_int, cnt: c_int, std: c_int) -> c_int;
    fn pvmupkstralloc(out: *mut *mut c_char) -> c_int;
    fn pvm_pkint(ip: *mut c_int, cnt: c_int, std: c_int) -> c_int;
    fn pvm_pkstr(s: *mut c_char) -> c_int;
    fn pvm_initsend(enc: c_int) -> c_int;
    fn pvm_send(tid: c_int, tag: c_int) -> c_int;
    fn pvm_getsbuf() -> c_int;
    fn pvm_getrbuf() -> c_int;
    fn pvm_setrbuf(b: c_int) -> c_int;
    fn pvm_freebuf(b: c_int) -> c_int;
    fn pvm_config(nhost: *mut c_int, narch: *mut c_int, hostp: *mut *const HostInfoC) -> c_int;
    fn pvm_tasks(which: c_int, ntask: *mut c_int, taskp: *mut *const TaskInfoC) -> c_int;
    fn pvm_putinfo(name: *mut c_char, bufid: c_int, flags: c_int) -> c_int;
    fn pvm_recvinfo(name: *mut c_char, index: c_int, flags: c_int) -> c_int;
    fn pvm_delinfo(name: *mut c_char, index: c_int, flags: c_int) -> c_int;
    fn pvm_sendsig(tid: c_int, sig: c_int) -> c_int;
    fn pvm_migrate(tid: c_int, host: *const c_char) -> c_int;
    fn pvm_checkpoint(tid: c_int, flags: c_int) -> c_int;
    fn pvm_restart(tid: c_int, epoch: c_int) -> c_int;
    fn pvm_kill(tid: c_int) -> c_int;
    fn pvm_pstat(tid: c_int) -> c_int;
    fn pvm_parent() -> c_int;
    fn pvm_spawn(
        file: *mut c_char,
        argv: *mut *mut c_char,
        flag: c_int,
        whr: *mut c_char,
        count: c_int,
        tids: *mut c_int,
    ) -> c_int;
    fn pvm_delhosts(names: *mut *mut c_char, count: c_int, infos: *mut c_int) -> c_int;
    fn pvm_setcontext(ctx: c_int) -> c_int;
    fn pvm_notify(what: c_int, tag: c_int, cnt: c_int, tids: *mut c_int) -> c_int;
    fn pvm_strerror(cc: c_int) -> *const c_char;
}

fn cs(s: &str) -> CString {
    CString::new(s.replace('\0', "")).unwrap_or_default()
}

fn cstr(p: *const c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        // SAFETY: the library hands out NUL-terminated strings valid until the next call.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}

pub const PVM_AUTO_ERR: i32 = 3;
pub const PVM_RESV_TIDS: i32 = 11;
pub const PVM_MBOX_DEFAULT: i32 = 0;

pub fn errtext(cc: i32) -> String {
    // SAFETY: pvm_strerror returns a static string or NULL.
    cstr(unsafe { pvm_strerror(cc) })
}

pub fn mytid() -> i32 {
    unsafe { pvm_mytid() }
}
pub fn exit() {
    unsafe { pvm_exit() };
}
pub fn setopt(what: i32, v: i32) -> i32 {
    unsafe { pvm_setopt(what, v) }
}
pub fn reg_rm() -> i32 {
    let mut p = std::ptr::null_mut();
    unsafe { pvm_reg_rm(&mut p) }
}

/// Waits up to `usec` for a message; (bufid, src, tag, len).
pub fn trecv(tid: i32, tag: i32, usec: i64) -> Option<(i32, i32, i32, i32)> {
    let mut tv = libc::timeval {
        tv_sec: usec / 1_000_000,
        tv_usec: usec % 1_000_000,
    };
    let b = unsafe { pvm_trecv(tid, tag, &mut tv) };
    if b <= 0 {
        return None;
    }
    let (mut len, mut t, mut src) = (0, 0, 0);
    unsafe { pvm_bufinfo(b, &mut len, &mut t, &mut src) };
    Some((b, src, t, len))
}
pub fn getminfo(b: i32) -> MInfo {
    let mut m = MInfo::default();
    unsafe { pvm_getminfo(b, &mut m) };
    m
}
/// Gives the send buffer the context and wait id of a request (so the reply matches it).
pub fn reply_info(req: &MInfo) {
    let mut m = MInfo::default();
    unsafe { pvm_getminfo(pvm_getsbuf(), &mut m) };
    m.ctx = req.ctx;
    m.wid = req.wid;
    unsafe { pvm_setminfo(pvm_getsbuf(), &mut m) };
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
pub fn upkstr() -> Result<String, i32> {
    let mut p: *mut c_char = std::ptr::null_mut();
    let cc = unsafe { pvmupkstralloc(&mut p) };
    if cc < 0 || p.is_null() {
        return Err(cc.min(-1));
    }
    let s = cstr(p);
    // SAFETY: malloc'd by the library for us.
    unsafe { libc::free(p as *mut libc::c_void) };
    Ok(s)
}
pub fn initsend() {
    unsafe { pvm_initsend(0) };
}
pub fn pkint(v: i32) {
    let mut v = v;
    unsafe { pvm_pkint(&mut v, 1, 1) };
}
pub fn pkstr(s: &str) {
    let c = cs(s);
    unsafe { pvm_pkstr(c.as_ptr() as *mut c_char) };
}
pub fn send(tid: i32, tag: i32) -> i32 {
    unsafe { pvm_send(tid, tag) }
}
/// Sends the current send buffer in context `ctx` (then back to the base context).
pub fn send_ctx(tid: i32, tag: i32, ctx: i32) -> i32 {
    unsafe {
        let old = pvm_setcontext(ctx);
        let cc = pvm_send(tid, tag);
        pvm_setcontext(old);
        cc
    }
}
pub fn freebuf(b: i32) {
    unsafe { pvm_freebuf(b) };
}
pub fn rbuf() -> i32 {
    unsafe { pvm_getrbuf() }
}
pub fn set_rbuf(b: i32) -> i32 {
    unsafe { pvm_setrbuf(b) }
}

pub struct Host {
    pub tid: i32,
    pub name: String,
    pub arch: String,
    pub speed: i32,
    pub dsig: i32,
}
pub struct Task {
    pub tid: i32,
    pub ptid: i32,
    pub host: i32,
    pub flag: i32,
    pub a_out: String,
    pub pid: i32,
}

pub fn config() -> Result<(Vec<Host>, i32), i32> {
    let (mut n, mut na) = (0, 0);
    let mut p: *const HostInfoC = std::ptr::null();
    let cc = unsafe { pvm_config(&mut n, &mut na, &mut p) };
    if cc < 0 {
        return Err(cc);
    }
    let mut v = Vec::new();
    for i in 0..n.clamp(0, 4096) as usize {
        // SAFETY: the library returned n entries.
        let h = unsafe { &*p.add(i) };
        v.push(Host {
            tid: h.tid,
            name: cstr(h.name),
            arch: cstr(h.arch),
            speed: h.speed,
            dsig: h.dsig,
        });
    }
    Ok((v, na))
}
pub fn tasks(which: i32) -> Result<Vec<Task>, i32> {
    let mut n = 0;
    let mut p: *const TaskInfoC = std::ptr::null();
    let cc = unsafe { pvm_tasks(which, &mut n, &mut p) };
    if cc < 0 {
        return Err(cc);
    }
    let mut v = Vec::new();
    for i in 0..n.clamp(0, 1 << 20) as usize {
        // SAFETY: the library returned n entries.
        let t = unsafe { &*p.add(i) };
        v.push(Task {
            tid: t.tid,
            ptid: t.ptid,
            host: t.host,
            flag: t.flag,
            a_out: cstr(t.a_out),
            pid: t.pid,
        });
    }
    Ok(v)
}
/// Publishes the send buffer under `name` in the mailbox (replacing an older entry of ours).
pub fn putinfo(name: &str) -> i32 {
    let c = cs(name);
    unsafe {
        pvm_delinfo(c.as_ptr() as *mut c_char, 0, 0);
        pvm_putinfo(c.as_ptr() as *mut c_char, pvm_getsbuf(), PVM_MBOX_DEFAULT)
    }
}
pub const PVM_MBOX_OVERWRITABLE: i32 = 4;
/// Publishes the send buffer as entry 0 of `name` with `flags`, replacing the entry in place
/// (our own, or an overwritable one): readers never see the class missing between updates.
pub fn putinfo_flags(name: &str, flags: i32) -> i32 {
    let c = cs(name);
    unsafe { pvm_putinfo(c.as_ptr() as *mut c_char, pvm_getsbuf(), flags) }
}
pub fn delinfo(name: &str) {
    let c = cs(name);
    unsafe { pvm_delinfo(c.as_ptr() as *mut c_char, 0, 0) };
}
/// Makes the mailbox entry `name` the receive buffer; its id.
pub fn recvinfo(name: &str) -> i32 {
    let c = cs(name);
    unsafe { pvm_recvinfo(c.as_ptr() as *mut c_char, 0, PVM_MBOX_DEFAULT) }
}
pub fn sendsig(tid: i32, sig: i32) -> i32 {
    unsafe { pvm_sendsig(tid, sig) }
}
pub fn migrate(tid: i32, host: &str) -> i32 {
    let c = cs(host);
    unsafe { pvm_migrate(tid, c.as_ptr()) }
}
/// Whether a task lives (TM_PSTAT, asked of the pvmd even while an RM is registered).
pub fn pstat(tid: i32) -> i32 {
    unsafe { pvm_pstat(tid) }
}
pub fn kill(tid: i32) -> i32 {
    unsafe { pvm_kill(tid) }
}
pub fn parent() -> i32 {
    unsafe { pvm_parent() }
}
/// One task of `file args` with these flags and `where`; (count started, tid or error).
pub fn spawn(file: &str, args: &[String], flag: i32, whr: &str) -> (i32, i32) {
    let f = cs(file);
    let w = cs(whr);
    let a: Vec<CString> = args.iter().map(|x| cs(x)).collect();
    let mut ptrs: Vec<*mut c_char> = a.iter().map(|c| c.as_ptr() as *mut c_char).collect();
    ptrs.push(std::ptr::null_mut());
    let mut tid = 0;
    let cc = unsafe {
        pvm_spawn(
            f.as_ptr() as *mut c_char,
            ptrs.as_mut_ptr(),
            flag,
            w.as_ptr() as *mut c_char,
            1,
            &mut tid,
        )
    };
    (cc, if cc == 1 || tid < 0 { tid } else { cc.min(-1) })
}
pub fn checkpoint(tid: i32) -> i32 {
    unsafe { pvm_checkpoint(tid, 0) }
}
/// `PvmCkptApp`, `PvmCkptAutoRestart` (include/pvm3.h).
pub const PVM_CKPT_APP: i32 = 1;
pub const PVM_CKPT_AUTO_RESTART: i32 = 2;
/// A whole-application checkpoint of the application rooted at `root`; the epoch or an error.
pub fn checkpoint_app(root: i32, flags: i32) -> i32 {
    unsafe { pvm_checkpoint(root, flags) }
}
/// Restart of the application rooted at `root` from `epoch` (-1: the last committed one).
pub fn restart(root: i32, epoch: i32) -> i32 {
    unsafe { pvm_restart(root, epoch) }
}
pub fn delhosts(names: &[String]) -> (i32, Vec<i32>) {
    let cs_: Vec<CString> = names.iter().map(|n| cs(n)).collect();
    let mut ptrs: Vec<*mut c_char> = cs_.iter().map(|c| c.as_ptr() as *mut c_char).collect();
    let mut st = vec![0; names.len()];
    let cc = unsafe { pvm_delhosts(ptrs.as_mut_ptr(), names.len() as c_int, st.as_mut_ptr()) };
    (cc, st)
}
pub fn notify(what: i32, tag: i32, tids: &[i32]) -> i32 {
    let mut t = tids.to_vec();
    unsafe { pvm_notify(what, tag, t.len() as c_int, t.as_mut_ptr()) }
}
