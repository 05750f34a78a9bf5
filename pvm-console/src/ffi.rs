//! The subset of the PVM C API the console and tracer call, with safe wrappers.
//!
//! The functions are the `#[no_mangle]` exports of libpvm3-shim; declaring them here (rather
//! than calling `pvm3::api::*`) keeps the console honest: it uses exactly the C interface a C
//! program would, so it doubles as a test of that interface.

use std::ffi::{c_char, c_int, CStr, CString};

// Force the shim into the link so the symbols below resolve.
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
pub struct MboxInfoC {
    pub name: *const c_char,
    pub nentries: c_int,
    pub indices: *const c_int,
    pub owners: *const c_int,
    pub flags: *const c_int,
}

extern "C" {
    fn pvm_mytid() -> c_int;
    fn pvm_exit() -> c_int;
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
    fn pvm_getopt(what: c_int) -> c_int;
    fn pvm_setopt(what: c_int, val: c_int) -> c_int;
    fn pvm_version() -> *const c_char;
    fn pvm_tidtohost(tid: c_int) -> c_int;
    fn pvm_export(name: *mut c_char) -> c_int;
    fn pvm_unexport(name: *mut c_char) -> c_int;
    fn pvm_getmboxinfo(pattern: *mut c_char, n: *mut c_int, classes: *mut *const MboxInfoC) -> c_int;
    fn pvm_initsend(enc: c_int) -> c_int;
    fn pvm_pkint(ip: *mut c_int, cnt: c_int, std: c_int) -> c_int;
    fn pvm_pkstr(s: *mut c_char) -> c_int;
    fn pvm_putinfo(name: *mut c_char, bufid: c_int, flags: c_int) -> c_int;
    fn pvm_getsbuf() -> c_int;
    fn pvm_delinfo(name: *mut c_char, index: c_int, flags: c_int) -> c_int;
    fn pvm_tickle(narg: c_int, argp: *mut c_int, nres: *mut c_int, resp: *mut c_int) -> c_int;
    fn pvm_nrecv(tid: c_int, tag: c_int) -> c_int;
    fn pvm_trecv(tid: c_int, tag: c_int, tmout: *mut libc::timeval) -> c_int;
    fn pvm_bufinfo(bufid: c_int, bytes: *mut c_int, tag: *mut c_int, tid: *mut c_int) -> c_int;
    fn pvm_upkint(ip: *mut c_int, cnt: c_int, std: c_int) -> c_int;
    fn pvm_upkbyte(cp: *mut c_char, cnt: c_int, std: c_int) -> c_int;
    fn pvm_start_pvmd(argc: c_int, argv: *mut *mut c_char, block: c_int) -> c_int;
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
    fn pvm_freebuf(bufid: c_int) -> c_int;
    fn pvm_migrate(tid: c_int, host: *const c_char) -> c_int;
    fn pvm_checkpoint(tid: c_int, flags: c_int) -> c_int;
    fn pvm_restart(tid: c_int, epoch: c_int) -> c_int;
    fn pvm_recvinfo(name: *mut c_char, index: c_int, flags: c_int) -> c_int;
    fn pvm_setrbuf(bufid: c_int) -> c_int;
    fn pvm_upkstr(cp: *mut c_char) -> c_int;
    static pvm_errlist: [*const c_char; 37];
}

pub const PVM_TASK_DEFAULT: c_int = 0;
pub const PVM_TASK_HOST: c_int = 1;
pub const PVM_TASK_ARCH: c_int = 2;
pub const PVM_TASK_DEBUG: c_int = 4;
pub const PVM_TASK_TRACE: c_int = 8;
pub const PVM_TASK_SELF: c_int = 0;
pub const PVM_TASK_CHILD: c_int = 1;

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

pub struct Mbox {
    pub name: String,
    pub entries: Vec<(i32, i32, i32)>,
}

fn cstr(p: *const c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        // SAFETY: the library hands out NUL-terminated strings that live until the next call.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}

fn cs(s: &str) -> CString {
    CString::new(s.replace('\0', "")).unwrap_or_default()
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

// SAFETY (for all wrappers below): each passes pointers to live, properly sized buffers or
// NUL-terminated strings owned by the caller for the duration of the call, which is all the C
// API asks.

pub fn mytid() -> i32 {
    unsafe { pvm_mytid() }
}
pub fn exit() -> i32 {
    unsafe { pvm_exit() }
}
pub fn start_pvmd(args: &[String]) -> i32 {
    let owned: Vec<CString> = args.iter().map(|a| cs(a)).collect();
    let mut ptrs: Vec<*mut c_char> = owned.iter().map(|c| c.as_ptr() as *mut c_char).collect();
    ptrs.push(std::ptr::null_mut());
    unsafe { pvm_start_pvmd(owned.len() as c_int, ptrs.as_mut_ptr(), 1) }
}
pub fn config() -> Result<(Vec<Host>, i32), i32> {
    let (mut n, mut na, mut p) = (0, 0, std::ptr::null());
    let cc = unsafe { pvm_config(&mut n, &mut na, &mut p) };
    if cc < 0 {
        return Err(cc);
    }
    let mut v = Vec::new();
    for i in 0..n.max(0) as usize {
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
    let (mut n, mut p) = (0, std::ptr::null());
    let cc = unsafe { pvm_tasks(which, &mut n, &mut p) };
    if cc < 0 {
        return Err(cc);
    }
    let mut v = Vec::new();
    for i in 0..n.max(0) as usize {
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
/// Returns the count started (or an error) and one entry per requested task: a tid or an error.
pub fn spawn(file: &str, args: &[String], flag: i32, whr: Option<&str>, count: i32) -> (i32, Vec<i32>) {
    let f = cs(file);
    let owned: Vec<CString> = args.iter().map(|a| cs(a)).collect();
    let mut ptrs: Vec<*mut c_char> = owned.iter().map(|c| c.as_ptr() as *mut c_char).collect();
    ptrs.push(std::ptr::null_mut());
    let w = whr.map(cs);
    let mut tids = vec![0; count.max(1) as usize];
    let cc = unsafe {
        pvm_spawn(
            f.as_ptr() as *mut c_char,
            if args.is_empty() {
                std::ptr::null_mut()
            } else {
                ptrs.as_mut_ptr()
            },
            flag,
            w.as_ref().map_or(std::ptr::null_mut(), |c| c.as_ptr() as *mut c_char),
            count,
            tids.as_mut_ptr(),
        )
    };
    (cc, tids)
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
pub fn pstat(tid: i32) -> i32 {
    unsafe { pvm_pstat(tid) }
}
fn hostop(names: &[String], add: bool) -> (i32, Vec<i32>) {
    let owned: Vec<CString> = names.iter().map(|a| cs(a)).collect();
    let mut ptrs: Vec<*mut c_char> = owned.iter().map(|c| c.as_ptr() as *mut c_char).collect();
    let mut infos = vec![0; names.len()];
    let cc = unsafe {
        if add {
            pvm_addhosts(ptrs.as_mut_ptr(), names.len() as c_int, infos.as_mut_ptr())
        } else {
            pvm_delhosts(ptrs.as_mut_ptr(), names.len() as c_int, infos.as_mut_ptr())
        }
    };
    (cc, infos)
}
pub fn addhosts(names: &[String]) -> (i32, Vec<i32>) {
    hostop(names, true)
}
pub fn delhosts(names: &[String]) -> (i32, Vec<i32>) {
    hostop(names, false)
}
pub fn sendsig(tid: i32, sig: i32) -> i32 {
    unsafe { pvm_sendsig(tid, sig) }
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
pub fn mboxinfo(pattern: &str) -> Result<Vec<Mbox>, i32> {
    let c = cs(pattern);
    let (mut n, mut p) = (0, std::ptr::null());
    let cc = unsafe { pvm_getmboxinfo(c.as_ptr() as *mut c_char, &mut n, &mut p) };
    if cc < 0 {
        return Err(cc);
    }
    let mut v = Vec::new();
    for i in 0..n.max(0) as usize {
        let m = unsafe { &*p.add(i) };
        let mut entries = Vec::new();
        for j in 0..m.nentries.max(0) as usize {
            unsafe { entries.push((*m.indices.add(j), *m.owners.add(j), *m.flags.add(j))) };
        }
        v.push(Mbox {
            name: cstr(m.name),
            entries,
        });
    }
    Ok(v)
}
/// Puts a message holding one int (0) under `name`, like the legacy console's `put`.
pub fn putinfo(name: &str, flags: i32) -> i32 {
    let c = cs(name);
    unsafe {
        pvm_initsend(0);
        let mut z = 0;
        pvm_pkint(&mut z, 1, 1);
        pvm_putinfo(c.as_ptr() as *mut c_char, pvm_getsbuf(), flags)
    }
}
pub fn delinfo(name: &str, index: i32, flags: i32) -> i32 {
    let c = cs(name);
    unsafe { pvm_delinfo(c.as_ptr() as *mut c_char, index, flags) }
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
/// A received message: (source tid, tag, bytes) with the receive buffer left active for unpacking.
pub fn nrecv(tid: i32, tag: i32) -> Option<(i32, i32, i32)> {
    let b = unsafe { pvm_nrecv(tid, tag) };
    info(b)
}
pub fn trecv(tid: i32, tag: i32, usec: i64) -> Option<(i32, i32, i32)> {
    let mut tv = libc::timeval {
        tv_sec: usec / 1_000_000,
        tv_usec: usec % 1_000_000,
    };
    let b = unsafe { pvm_trecv(tid, tag, &mut tv) };
    info(b)
}
fn info(b: i32) -> Option<(i32, i32, i32)> {
    if b <= 0 {
        return None;
    }
    let (mut len, mut tag, mut src) = (0, 0, 0);
    unsafe { pvm_bufinfo(b, &mut len, &mut tag, &mut src) };
    Some((src, tag, len))
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
pub fn freebuf(b: i32) -> i32 {
    unsafe { pvm_freebuf(b) }
}
pub fn reg_tracer(tag: i32, otag: i32, mask: &str) -> i32 {
    let m = cs(mask);
    // Unbuffered (0), PvmTraceFull (1): every event as a record with its data.
    unsafe { pvm_reg_tracer(0, tag, 0, otag, m.as_ptr() as *mut c_char, 0, 1) }
}
/// Publishes the tracer settings in the `###_PVM_TRACER_###` mailbox entry, where the legacy
/// library of a task started from a shell looks for its trace options and mask (the legacy
/// `pvm_reg_tracer` does this itself; our library does not yet).
pub fn put_tracer_info(me: i32, tag: i32, otag: i32, mask: &str) -> i32 {
    let m = cs(mask);
    let class = cs("###_PVM_TRACER_###");
    unsafe {
        pvm_initsend(0);
        for mut v in [me, 0, tag, 0, otag] {
            pvm_pkint(&mut v, 1, 1);
        }
        pvm_pkstr(m.as_ptr() as *mut c_char);
        for mut v in [0, 1] {
            pvm_pkint(&mut v, 1, 1);
        }
        pvm_putinfo(class.as_ptr() as *mut c_char, pvm_getsbuf(), 0)
    }
}
pub fn settmask(who: i32, mask: &str) -> i32 {
    let m = cs(mask);
    unsafe { pvm_settmask(who, m.as_ptr() as *mut c_char) }
}
pub fn gettmask(who: i32) -> String {
    let mut buf = [0 as c_char; 64];
    unsafe { pvm_gettmask(who, buf.as_mut_ptr()) };
    // SAFETY: zero-initialised buffer longer than a trace mask (45 bytes with the NUL).
    cstr(buf.as_ptr())
}

#[repr(C)]
struct TevInfoC {
    name: *const c_char,
    desc_status: c_int,
    mark: [libc::c_long; 2],
    total: [libc::c_long; 2],
    count: c_int,
}

#[repr(C)]
struct TevDidC {
    did: *const c_char,
    desc: *const c_char,
}

extern "C" {
    static pvmtevinfo: [TevInfoC; 109];
    static pvmtevdidlist: [TevDidC; 123];
}

/// Trace event names by event number, from the library's table (the same table legacy has).
pub fn event_names() -> Vec<String> {
    // SAFETY: a static table of 109 entries whose names are static strings.
    (0..109).map(|i| cstr(unsafe { pvmtevinfo[i].name })).collect()
}

/// Trace data-id short names (`TS`, `DST`, `MC`…) by data id.
pub fn did_names() -> Vec<String> {
    // SAFETY: a static table of 123 entries whose strings are static.
    (0..123).map(|i| cstr(unsafe { pvmtevdidlist[i].did })).collect()
}

fn upk<T: Default + Clone>(n: usize, f: unsafe extern "C" fn(*mut T, c_int, c_int) -> c_int) -> Result<Vec<T>, i32> {
    let mut v = vec![T::default(); n];
    let cc = unsafe { f(v.as_mut_ptr(), n as c_int, 1) };
    if cc < 0 {
        Err(cc)
    } else {
        Ok(v)
    }
}

extern "C" {
    fn pvm_upkdouble(p: *mut f64, n: c_int, s: c_int) -> c_int;
    fn pvm_upkfloat(p: *mut f32, n: c_int, s: c_int) -> c_int;
    fn pvm_upklong(p: *mut libc::c_long, n: c_int, s: c_int) -> c_int;
    fn pvm_upkshort(p: *mut libc::c_short, n: c_int, s: c_int) -> c_int;
}

/// Unpacks typed values from the active receive buffer, for the trace decoder.
pub struct RecvBuf;

impl crate::tev::Unpack for RecvBuf {
    fn int(&mut self) -> Result<i32, i32> {
        upkint()
    }
    fn bytes(&mut self, n: usize) -> Result<Vec<u8>, i32> {
        upkbytes(n)
    }
    fn doubles(&mut self, n: usize) -> Result<Vec<f64>, i32> {
        upk(n, pvm_upkdouble)
    }
    fn floats(&mut self, n: usize) -> Result<Vec<f32>, i32> {
        upk(n, pvm_upkfloat)
    }
    fn longs(&mut self, n: usize) -> Result<Vec<i64>, i32> {
        upk::<libc::c_long>(n, pvm_upklong)
    }
    fn shorts(&mut self, n: usize) -> Result<Vec<i16>, i32> {
        upk(n, pvm_upkshort)
    }
}

/// `pvm_migrate` (pvm-rs): the pvmd tid of the task's new host, or a PVM error code.
pub fn migrate(tid: i32, host: &str) -> i32 {
    let h = cs(host);
    unsafe { pvm_migrate(tid, h.as_ptr()) }
}
/// `pvm_checkpoint` (pvm-rs): the epoch, or a PVM error code.
pub fn checkpoint(tid: i32) -> i32 {
    unsafe { pvm_checkpoint(tid, 0) }
}
/// `pvm_restart` (pvm-rs) from the last checkpoint: the epoch, or a PVM error code.
pub fn restart(tid: i32) -> i32 {
    unsafe { pvm_restart(tid, -1) }
}
/// Whether the local pvmd is a pvm-rs daemon (it announced its features at enrolment).
pub fn daemon_is_pvm_rs() -> bool {
    pvm3::park::daemon_features().is_some()
}
/// The string packed first in mailbox entry `name` (index 0), if there is one.
pub fn lookup_str(name: &str) -> Option<String> {
    let n = cs(name);
    let b = unsafe { pvm_recvinfo(n.as_ptr() as *mut c_char, 0, 0) };
    if b <= 0 {
        return None;
    }
    let (mut bytes, mut tag, mut tid) = (0, 0, 0);
    if unsafe { pvm_bufinfo(b, &mut bytes, &mut tag, &mut tid) } < 0 {
        return None;
    }
    // A packed string cannot be longer than the message holding it.
    let mut buf = vec![0u8; bytes.max(0) as usize + 1];
    let old = unsafe { pvm_setrbuf(b) };
    let cc = unsafe { pvm_upkstr(buf.as_mut_ptr() as *mut c_char) };
    unsafe { pvm_setrbuf(old) };
    unsafe { pvm_freebuf(b) };
    if cc < 0 {
        return None;
    }
    let end = buf.iter().position(|&c| c == 0).unwrap_or(buf.len());
    Some(String::from_utf8_lossy(&buf[..end]).into_owned())
}
