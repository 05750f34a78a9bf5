//! The part of the PVM C API (libpvm3) the group library uses. Resolved at load time against
//! whichever libpvm3 the program links: the legacy one or ours.

use std::os::raw::{c_char, c_int, c_long, c_void};

pub const PVM_DATA_DEFAULT: c_int = 0;
pub const PVM_OUTPUT_TID: c_int = 4;
pub const PVM_TRACE_TID: c_int = 6;
pub const PVM_AUTO_ERR: c_int = 3;
pub const PVM_MPP_FRONT: c_int = 16;
pub const PVM_MBOX_DEFAULT: c_int = 0;

pub const PVM_OK: c_int = 0;
pub const PVM_BAD_PARAM: c_int = -2;
pub const PVM_NO_MEM: c_int = -10;
pub const PVM_SYS_ERR: c_int = -14;
pub const PVM_NULL_GROUP: c_int = -17;
pub const PVM_NO_GROUP: c_int = -19;
pub const PVM_NOT_IN_GROUP: c_int = -20;
pub const PVM_NO_INST: c_int = -21;
pub const PVM_OUT_OF_RES: c_int = -27;
pub const PVM_NOT_FOUND: c_int = -32;

/// pvm_packf type codes; also the `datatype` of reduce/gather/scatter.
pub const PVM_STR: c_int = 0;
pub const PVM_BYTE: c_int = 1;
pub const PVM_SHORT: c_int = 2;
pub const PVM_INT: c_int = 3;
pub const PVM_FLOAT: c_int = 4;
pub const PVM_CPLX: c_int = 5;
pub const PVM_DOUBLE: c_int = 6;
pub const PVM_DCPLX: c_int = 7;
pub const PVM_LONG: c_int = 8;

pub type PackFn = unsafe extern "C" fn(*mut c_void, c_int, c_int) -> c_int;

extern "C" {
    pub static mut pvm_errno: c_int;

    pub fn pvm_mytid() -> c_int;
    pub fn pvm_exit() -> c_int;
    pub fn pvm_getopt(what: c_int) -> c_int;
    pub fn pvm_setopt(what: c_int, val: c_int) -> c_int;
    pub fn pvm_setcontext(ctx: c_int) -> c_int;
    pub fn pvm_mkbuf(enc: c_int) -> c_int;
    pub fn pvm_initsend(enc: c_int) -> c_int;
    pub fn pvm_freebuf(buf: c_int) -> c_int;
    pub fn pvm_setsbuf(buf: c_int) -> c_int;
    pub fn pvm_setrbuf(buf: c_int) -> c_int;
    pub fn pvm_getrbuf() -> c_int;
    pub fn pvm_bufinfo(buf: c_int, bytes: *mut c_int, tag: *mut c_int, tid: *mut c_int) -> c_int;
    pub fn pvm_send(tid: c_int, tag: c_int) -> c_int;
    pub fn pvm_mcast(tids: *mut c_int, n: c_int, tag: c_int) -> c_int;
    pub fn pvm_recv(tid: c_int, tag: c_int) -> c_int;
    pub fn pvm_recvinfo(name: *const c_char, index: c_int, flags: c_int) -> c_int;
    pub fn pvm_spawn(
        file: *const c_char,
        argv: *mut *mut c_char,
        flags: c_int,
        place: *const c_char,
        count: c_int,
        tids: *mut c_int,
    ) -> c_int;
    pub fn pvm_perror(msg: *const c_char) -> c_int;
    pub fn pvm_tidtohost(tid: c_int) -> c_int;

    pub fn pvm_pkint(p: *const c_int, n: c_int, s: c_int) -> c_int;
    pub fn pvm_upkint(p: *mut c_int, n: c_int, s: c_int) -> c_int;
    pub fn pvm_pkstr(p: *const c_char) -> c_int;
    pub fn pvm_upkstr(p: *mut c_char) -> c_int;

    pub fn pvm_pkbyte(p: *mut c_void, n: c_int, s: c_int) -> c_int;
    pub fn pvm_upkbyte(p: *mut c_void, n: c_int, s: c_int) -> c_int;
    pub fn pvm_pkshort(p: *mut c_void, n: c_int, s: c_int) -> c_int;
    pub fn pvm_upkshort(p: *mut c_void, n: c_int, s: c_int) -> c_int;
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

/// `pvm_pkstr`/`pvm_upkstr` take no count or stride; the collective routines call every packer
/// with three arguments, so strings go through these adapters.
unsafe extern "C" fn pkstr3(p: *mut c_void, _n: c_int, _s: c_int) -> c_int {
    // SAFETY: the caller passes a NUL-terminated string, as for pvm_pkstr.
    unsafe { pvm_pkstr(p as *const c_char) }
}

unsafe extern "C" fn upkstr3(p: *mut c_void, _n: c_int, _s: c_int) -> c_int {
    // SAFETY: the caller's buffer must hold the string, as for pvm_upkstr.
    unsafe { pvm_upkstr(p as *mut c_char) }
}

/// Pack and unpack routines for a datatype (gs_pack_unpack).
pub fn pack_unpack(datatype: c_int) -> Option<(PackFn, PackFn)> {
    Some(match datatype {
        PVM_STR => (pkstr3 as PackFn, upkstr3 as PackFn),
        PVM_BYTE => (pvm_pkbyte as PackFn, pvm_upkbyte as PackFn),
        PVM_SHORT => (pvm_pkshort as PackFn, pvm_upkshort as PackFn),
        PVM_INT => (pvm_pkint_v as PackFn, pvm_upkint_v as PackFn),
        PVM_LONG => (pvm_pklong as PackFn, pvm_upklong as PackFn),
        PVM_FLOAT => (pvm_pkfloat as PackFn, pvm_upkfloat as PackFn),
        PVM_DOUBLE => (pvm_pkdouble as PackFn, pvm_upkdouble as PackFn),
        PVM_CPLX => (pvm_pkcplx as PackFn, pvm_upkcplx as PackFn),
        PVM_DCPLX => (pvm_pkdcplx as PackFn, pvm_upkdcplx as PackFn),
        _ => return None,
    })
}

unsafe extern "C" fn pvm_pkint_v(p: *mut c_void, n: c_int, s: c_int) -> c_int {
    // SAFETY: forwarded unchanged; the caller guarantees `n` ints at stride `s`.
    unsafe { pvm_pkint(p as *const c_int, n, s) }
}

unsafe extern "C" fn pvm_upkint_v(p: *mut c_void, n: c_int, s: c_int) -> c_int {
    // SAFETY: forwarded unchanged; the caller guarantees room for `n` ints at stride `s`.
    unsafe { pvm_upkint(p as *mut c_int, n, s) }
}

/// Bytes per element (gs_get_datasize).
pub fn datasize(datatype: c_int) -> Option<usize> {
    Some(match datatype {
        PVM_STR | PVM_BYTE => 1,
        PVM_SHORT => std::mem::size_of::<i16>(),
        PVM_INT => std::mem::size_of::<c_int>(),
        PVM_LONG => std::mem::size_of::<c_long>(),
        PVM_FLOAT => 4,
        PVM_DOUBLE => 8,
        PVM_CPLX => 8,
        PVM_DCPLX => 16,
        _ => return None,
    })
}

/// pvm_errlist texts for the codes the group library reports itself (the table of pvm-proto).
pub fn errtext(code: c_int) -> &'static str {
    usize::try_from(code.unsigned_abs())
        .ok()
        .and_then(|i| pvm_proto::codes::ERRLIST.get(i))
        .copied()
        .unwrap_or("Unknown error")
}
