//! Trace events of the group calls, as the legacy libgpvm3 emits them (pvmtev.h kinds
//! TEV_JOINGROUP, TEV_LVGROUP, TEV_GETINST, TEV_GETTID, TEV_GSIZE, TEV_BARRIER, TEV_BCAST,
//! TEV_REDUCE, TEV_GATHER, TEV_SCATTER; pvm_freezegroup and the host-info calls have none).
//!
//! The legacy group library packs its records through the task library's internals: the
//! `pvmtoplvl` flag (only the outermost call is traced, so the library calls a group call makes
//! for itself are not), the trace check on `pvmtrc` and `pvmmytid`, then `tev_begin`, the
//! encoders of `pvmtrccodef`, and `tev_fin`. Both libpvm3s export these, so one code path
//! serves either: on the legacy library we read its `pvmtrc` as legacy's TEV_CHECK_TRACE does;
//! on ours (found by its `pvmshim_tev_begin` export) `pvmtrc` is not maintained, and its
//! `tev_begin` checks the trace destination and mask itself.

use std::ffi::CStr;
use std::os::raw::{c_char, c_int, c_void};
use std::sync::OnceLock;

/// Event kinds (pvmtev.h), as the legacy group library uses them.
pub mod kind {
    use std::os::raw::c_int;
    pub const BARRIER: c_int = 1;
    pub const BCAST: c_int = 2;
    pub const GETINST: c_int = 10;
    pub const GETTID: c_int = 14;
    pub const GSIZE: c_int = 15;
    pub const JOINGROUP: c_int = 19;
    pub const LVGROUP: c_int = 22;
    pub const REDUCE: c_int = 86;
    pub const GATHER: c_int = 90;
    pub const SCATTER: c_int = 91;
}

/// Semantic data ids (pvmtev.h TEV_DID_*).
pub mod did {
    use std::os::raw::c_int;
    pub const CC: c_int = 4;
    pub const GN: c_int = 25;
    pub const GI: c_int = 26;
    pub const GT: c_int = 27;
    pub const GS: c_int = 28;
    pub const GBC: c_int = 29;
    pub const MC: c_int = 45;
    pub const MDL: c_int = 51;
}

const ENTRY: c_int = 0x4000;
const EXIT: c_int = 0x8000;
const SCALAR: c_int = 0;
const ARRAY: c_int = 0x80;

type EncFn = unsafe extern "C" fn(c_int, c_int, *const c_void, c_int, c_int) -> c_int;

/// The legacy `struct pvmtrcencvec` (byte, cplx, dcplx, double, float, int, uint, long, ulong,
/// short, ushort, str).
#[repr(C)]
struct EncVec {
    f: [Option<EncFn>; 12],
}
const ENC_INT: usize = 5;
const ENC_STR: usize = 11;

/// The legacy `struct Pvmtracer` (lpvm.h): trace and output destinations, buffering, options
/// and the 36-byte trace mask.
#[repr(C)]
struct Pvmtracer {
    trctid: c_int,
    trcctx: c_int,
    trctag: c_int,
    outtid: c_int,
    outctx: c_int,
    outtag: c_int,
    trcbuf: c_int,
    trcopt: c_int,
    tmask: [u8; 36],
}

extern "C" {
    static mut pvmtoplvl: c_int;
    static pvmmytid: c_int;
    static pvmtrc: Pvmtracer;
    static pvmtrccodef: *const EncVec;
    fn pvmbeatask() -> c_int;
    fn tev_begin(kind: c_int, entry_exit: c_int) -> c_int;
    fn tev_fin() -> c_int;
    fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
}

/// Whether the process runs on pvm-rs's libpvm3 (which exports `pvmshim_tev_begin`).
fn on_our_library() -> bool {
    static OURS: OnceLock<bool> = OnceLock::new();
    // SAFETY: dlsym with RTLD_DEFAULT (NULL on glibc) and a C string.
    *OURS.get_or_init(|| unsafe { !dlsym(std::ptr::null_mut(), c"pvmshim_tev_begin".as_ptr()).is_null() })
}

/// Legacy TEV_CHECK_TRACE then tev_begin (TEV_DO_TRACE).
fn begin(kind: c_int, phase: c_int) -> bool {
    // SAFETY: globals and functions both libpvm3s export; PVM is single-threaded.
    unsafe {
        if on_our_library() {
            return tev_begin(kind, phase) != 0;
        }
        let me = std::ptr::addr_of!(pvmmytid).read();
        if me == -1 && pvmbeatask() != 0 {
            return false;
        }
        let me = std::ptr::addr_of!(pvmmytid).read();
        let trc = &*std::ptr::addr_of!(pvmtrc);
        let k = kind as usize;
        let on = trc.trctid > 0 && trc.trctid != me && trc.tmask.get(k / 4).is_some_and(|c| c & (1 << (k & 3)) != 0);
        on && tev_begin(kind, phase) != 0
    }
}

/// One datum for a record.
pub enum Datum<'a> {
    Int(c_int, c_int),
    Ints(c_int, &'a [c_int]),
    Str(c_int, &'a CStr),
}

fn pack(items: &[Datum]) {
    // SAFETY: tev_begin returned 1, so pvmtrccodef points at the library's encoders.
    unsafe {
        let v = std::ptr::addr_of!(pvmtrccodef).read();
        if v.is_null() {
            return;
        }
        let f = &(*v).f;
        for it in items {
            match it {
                Datum::Int(did, x) => {
                    if let Some(enc) = f[ENC_INT] {
                        enc(*did, SCALAR, x as *const c_int as *const c_void, 1, 1);
                    }
                }
                Datum::Ints(did, xs) => {
                    if let Some(enc) = f[ENC_INT] {
                        let n = c_int::try_from(xs.len()).unwrap_or(0);
                        enc(*did, ARRAY, xs.as_ptr() as *const c_void, n, 1);
                    }
                }
                Datum::Str(did, s) => {
                    if let Some(enc) = f[ENC_STR] {
                        enc(*did, SCALAR, s.as_ptr() as *const c_void, 1, 1);
                    }
                }
            }
        }
        tev_fin();
    }
}

/// The legacy TEV_EXCLUSIVE section of one group call: taken only by the outermost library
/// call (pvmtoplvl set); cleared for the call's duration so the task library's own records of
/// what the group call does (sends, receives, buffers) are not traced, as with legacy.
pub struct Call {
    kind: c_int,
    top: bool,
}

impl Call {
    /// Begins `kind` and emits its entry record with `entry` when traced.
    pub fn begin(kind: c_int, entry: &[Datum]) -> Call {
        // SAFETY: the legacy global flag; PVM is single-threaded.
        let top = unsafe {
            let p = std::ptr::addr_of_mut!(pvmtoplvl);
            let t = p.read() != 0;
            if t {
                p.write(0);
            }
            t
        };
        if top && begin(kind, ENTRY) {
            pack(entry);
        }
        Call { kind, top }
    }

    /// Emits the exit record with `exit` when traced, and ends the exclusive section.
    pub fn end(mut self, exit: &[Datum]) {
        if self.top && begin(self.kind, EXIT) {
            pack(exit);
        }
        self.release();
    }

    fn release(&mut self) {
        if self.top {
            // SAFETY: as in begin.
            unsafe { std::ptr::addr_of_mut!(pvmtoplvl).write(1) };
            self.top = false;
        }
    }
}

impl Drop for Call {
    /// A panic inside the call (turned into an error by the caller's guard) still gives back
    /// the top-level flag.
    fn drop(&mut self) {
        self.release();
    }
}

/// The group name as the legacy library traces it (NULL as "").
///
/// # Safety
/// `group` must be NULL or a C string.
pub unsafe fn gname<'a>(group: *const c_char) -> &'a CStr {
    if group.is_null() {
        c""
    } else {
        // SAFETY: per the contract.
        unsafe { CStr::from_ptr(group) }
    }
}
