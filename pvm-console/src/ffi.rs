//! The PVM C calls the console and tracer make: the shared safe wrappers of `pvm3::client`
//! (which call the library's C interface, exactly as a C program would, so the console doubles
//! as a test of it), plus what only the console and the tracer use.

use std::ffi::{c_char, c_int, CStr};

pub use pvm3::client::*;

extern "C" {
    fn pvm_initsend(enc: c_int) -> c_int;
    fn pvm_pkint(ip: *mut c_int, cnt: c_int, std: c_int) -> c_int;
    fn pvm_pkstr(s: *mut c_char) -> c_int;
    fn pvm_putinfo(name: *mut c_char, bufid: c_int, flags: c_int) -> c_int;
    fn pvm_getsbuf() -> c_int;
}

fn cstr(p: *const c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        // SAFETY: the library's tables hold NUL-terminated static strings.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}

/// Puts a message holding one int (0) under `name`, like the legacy console's `put`.
pub fn put_zero(name: &str, flags: i32) -> i32 {
    initsend();
    pkint(0);
    putinfo(name, flags)
}

/// Publishes the tracer settings in the `###_PVM_TRACER_###` mailbox entry, where the legacy
/// library of a task started from a shell looks for its trace options and mask (the legacy
/// `pvm_reg_tracer` does this itself; our library does not yet).
pub fn put_tracer_info(me: i32, tag: i32, otag: i32, mask: &str) -> i32 {
    let m = std::ffi::CString::new(mask.replace('\0', "")).unwrap_or_default();
    let class = c"###_PVM_TRACER_###";
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
