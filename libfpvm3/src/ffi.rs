//! The PVM C API (libpvm3) as the Fortran wrappers call it, resolved against whichever libpvm3
//! the program loads; the group routines (libgpvm3) are looked up at run time, see [`group`].

use std::ffi::CStr;
use std::os::raw::{c_char, c_int, c_long, c_void};

pub const PVM_BAD_PARAM: c_int = -2;
pub const PVM_NOT_IMPL: c_int = -24;
pub const PVM_NO_TASK: c_int = -31;
pub const PVM_NOT_FOUND: c_int = -32;

#[repr(C)]
pub struct HostInfo {
    pub tid: c_int,
    pub name: *mut c_char,
    pub arch: *mut c_char,
    pub speed: c_int,
    pub dsig: c_int,
}

#[repr(C)]
pub struct TaskInfo {
    pub tid: c_int,
    pub ptid: c_int,
    pub host: c_int,
    pub flag: c_int,
    pub a_out: *mut c_char,
    pub pid: c_int,
}

#[repr(C)]
pub struct MboxInfo {
    pub name: *mut c_char,
    pub nentries: c_int,
    pub indices: *mut c_int,
    pub owners: *mut c_int,
    pub flags: *mut c_int,
}

#[repr(C)]
pub struct Timeval {
    pub sec: c_long,
    pub usec: c_long,
}

#[repr(C)]
pub struct File {
    _opaque: [u8; 0],
}

extern "C" {
    pub static mut stdout: *mut File;
    pub fn sleep(secs: u32) -> u32;
    fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
    fn dlopen(file: *const c_char, mode: c_int) -> *mut c_void;

    pub fn pvm_addhosts(names: *mut *mut c_char, n: c_int, infos: *mut c_int) -> c_int;
    pub fn pvm_addmhf(src: c_int, tag: c_int, ctx: c_int, f: *mut c_void) -> c_int;
    pub fn pvm_archcode(arch: *const c_char) -> c_int;
    pub fn pvm_bufinfo(buf: c_int, bytes: *mut c_int, tag: *mut c_int, tid: *mut c_int) -> c_int;
    pub fn pvm_catchout(f: *mut File) -> c_int;
    pub fn pvm_config(nhost: *mut c_int, narch: *mut c_int, hosts: *mut *mut HostInfo) -> c_int;
    pub fn pvm_delhosts(names: *mut *mut c_char, n: c_int, infos: *mut c_int) -> c_int;
    pub fn pvm_delinfo(name: *const c_char, index: c_int, flags: c_int) -> c_int;
    pub fn pvm_delmhf(mhid: c_int) -> c_int;
    pub fn pvm_exit() -> c_int;
    pub fn pvm_freebuf(buf: c_int) -> c_int;
    pub fn pvm_freecontext(ctx: c_int) -> c_int;
    pub fn pvm_getcontext() -> c_int;
    pub fn pvm_getmboxinfo(pattern: *const c_char, n: *mut c_int, classes: *mut *mut MboxInfo) -> c_int;
    pub fn pvm_getopt(what: c_int) -> c_int;
    pub fn pvm_getrbuf() -> c_int;
    pub fn pvm_getsbuf() -> c_int;
    pub fn pvm_halt() -> c_int;
    pub fn pvm_hostsync(host: c_int, clk: *mut Timeval, delta: *mut Timeval) -> c_int;
    pub fn pvm_initsend(enc: c_int) -> c_int;
    pub fn pvm_kill(tid: c_int) -> c_int;
    pub fn pvm_mcast(tids: *mut c_int, n: c_int, tag: c_int) -> c_int;
    pub fn pvm_mkbuf(enc: c_int) -> c_int;
    pub fn pvm_mstat(host: *const c_char) -> c_int;
    pub fn pvm_mytid() -> c_int;
    pub fn pvm_newcontext() -> c_int;
    pub fn pvm_notify(what: c_int, tag: c_int, n: c_int, tids: *mut c_int) -> c_int;
    pub fn pvm_nrecv(tid: c_int, tag: c_int) -> c_int;
    pub fn pvm_parent() -> c_int;
    pub fn pvm_perror(msg: *const c_char) -> c_int;
    pub fn pvm_precv(
        tid: c_int,
        tag: c_int,
        buf: *mut c_void,
        len: c_int,
        dt: c_int,
        atid: *mut c_int,
        atag: *mut c_int,
        alen: *mut c_int,
    ) -> c_int;
    pub fn pvm_probe(tid: c_int, tag: c_int) -> c_int;
    pub fn pvm_psend(tid: c_int, tag: c_int, buf: *mut c_void, len: c_int, dt: c_int) -> c_int;
    pub fn pvm_pstat(tid: c_int) -> c_int;
    pub fn pvm_putinfo(name: *const c_char, buf: c_int, flags: c_int) -> c_int;
    pub fn pvm_recv(tid: c_int, tag: c_int) -> c_int;
    pub fn pvm_recvinfo(name: *const c_char, index: c_int, flags: c_int) -> c_int;
    pub fn pvm_send(tid: c_int, tag: c_int) -> c_int;
    pub fn pvm_sendsig(tid: c_int, sig: c_int) -> c_int;
    pub fn pvm_setcontext(ctx: c_int) -> c_int;
    pub fn pvm_setopt(what: c_int, val: c_int) -> c_int;
    pub fn pvm_setrbuf(buf: c_int) -> c_int;
    pub fn pvm_setsbuf(buf: c_int) -> c_int;
    pub fn pvm_siblings(tids: *mut *mut c_int) -> c_int;
    pub fn pvm_spawn(
        file: *const c_char,
        argv: *mut *mut c_char,
        flags: c_int,
        place: *const c_char,
        count: c_int,
        tids: *mut c_int,
    ) -> c_int;
    pub fn pvm_start_pvmd(argc: c_int, argv: *mut *mut c_char, block: c_int) -> c_int;
    pub fn pvm_tasks(which: c_int, n: *mut c_int, tasks: *mut *mut TaskInfo) -> c_int;
    pub fn pvm_tidtohost(tid: c_int) -> c_int;
    pub fn pvm_trecv(tid: c_int, tag: c_int, tmout: *mut Timeval) -> c_int;

    pub fn pvm_pkbyte(p: *mut c_void, n: c_int, s: c_int) -> c_int;
    pub fn pvm_upkbyte(p: *mut c_void, n: c_int, s: c_int) -> c_int;
    pub fn pvm_pkshort(p: *mut c_void, n: c_int, s: c_int) -> c_int;
    pub fn pvm_upkshort(p: *mut c_void, n: c_int, s: c_int) -> c_int;
    pub fn pvm_pkint(p: *mut c_void, n: c_int, s: c_int) -> c_int;
    pub fn pvm_upkint(p: *mut c_void, n: c_int, s: c_int) -> c_int;
    pub fn pvm_pklong(p: *mut c_void, n: c_int, s: c_int) -> c_int;
    pub fn pvm_upklong(p: *mut c_void, n: c_int, s: c_int) -> c_int;
    pub fn pvm_pkfloat(p: *mut c_void, n: c_int, s: c_int) -> c_int;
    pub fn pvm_upkfloat(p: *mut c_void, n: c_int, s: c_int) -> c_int;
    pub fn pvm_pkdouble(p: *mut c_void, n: c_int, s: c_int) -> c_int;
    pub fn pvm_upkdouble(p: *mut c_void, n: c_int, s: c_int) -> c_int;
    pub fn pvm_pkcplx(p: *mut c_void, n: c_int, s: c_int) -> c_int;
    pub fn pvm_upkcplx(p: *mut c_void, n: c_int, s: c_int) -> c_int;
    pub fn pvm_pkdcplx(p: *mut c_void, n: c_int, s: c_int) -> c_int;
    pub fn pvm_upkdcplx(p: *mut c_void, n: c_int, s: c_int) -> c_int;
}

const RTLD_LAZY: c_int = 1;
const RTLD_GLOBAL: c_int = 0x100;

/// A libgpvm3 routine: the one the program loaded, else the one in `libgpvm3.so.3` (loaded on
/// first use, found like any shared library); NULL when there is none.
///
/// The legacy archive left these references to the final link, and the legacy build lines link
/// programs without groups as `-lfpvm3 -lpvm3`. A Rust staticlib cannot drop unused references
/// the way an archive drops unused members, so the group wrappers look the routine up when
/// called instead. Looking in the program first keeps one group library (one server lookup,
/// one static-group cache) when the program linked one itself; loading it ourselves covers
/// `-lgpvm3` dropped by `--as-needed` (nothing in the program refers to it directly).
pub fn group(name: &CStr) -> *mut c_void {
    // SAFETY: dlsym with RTLD_DEFAULT (NULL) only reads the loaded objects' symbol tables;
    // dlopen of the library by soname is what the dynamic linker would have done.
    unsafe {
        let p = dlsym(std::ptr::null_mut(), name.as_ptr());
        if !p.is_null() {
            return p;
        }
        let h = dlopen(c"libgpvm3.so.3".as_ptr(), RTLD_LAZY | RTLD_GLOBAL);
        if h.is_null() {
            return std::ptr::null_mut();
        }
        dlsym(h, name.as_ptr())
    }
}
