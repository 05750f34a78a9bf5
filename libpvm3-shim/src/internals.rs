//! The non-`pvm_` functions the legacy library exports.
//!
//! Implemented with their legacy behaviour: those a program or a companion library really links
//! (libgpvm3: `lpvmerr`, `pvmbeatask`, `tev_begin`/`tev_fin` (in tev.rs); the console `pvm`: `i_dump`,
//! `pvmendtask`, `pvmgetrsh`, `pvmgettmp`, `pvmputenv`, `pvmreset`, `pvmstrtoi`; srm.pvm:
//! `pvmnametag`) and the
//! self-contained utilities (`pvmput32`, `pvmxtoi`, `errnamecode`, `i_malloc`, ...).
//!
//! Minimal (return 0 or NULL, touch nothing): the helpers that take pointers to the legacy
//! library's private structures (`pmsg_*`, `fr_*`, `da_*`, `umbuf_new/list/dump`, `ttpcb_*`,
//! `wait_*`, `midtobuf`, trace encoders, route bookkeeping). Only the legacy pvmd calls them;
//! it must keep running on the legacy library (abi.md §6).

use crate::core::{cget, cset, strtoi, with, with_r, E_SYSERR};
use std::ffi::{CStr, CString};
use std::io::BufRead;
use std::os::raw::{c_char, c_int, c_long, c_void};
use std::sync::OnceLock;

/// # Safety
/// `p` must be NULL or a NUL-terminated string.
unsafe fn s(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: per the contract.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

fn leak_str(v: &OnceLock<CString>, f: impl FnOnce() -> String) -> *const c_char {
    v.get_or_init(|| CString::new(f()).unwrap_or_default()).as_ptr()
}

#[no_mangle]
pub unsafe extern "C" fn lpvmerr(f: *const c_char, code: c_int) -> c_int {
    // SAFETY: a C string naming the function.
    let name = unsafe { s(f) };
    crate::core::lpvmerr(&name, code)
}

/// Called by the C pvm_packf/pvm_unpackf on failure.
#[no_mangle]
pub unsafe extern "C" fn pvmshim_lpvmerr(f: *const c_char, code: c_int) -> c_int {
    // SAFETY: as lpvmerr.
    unsafe { lpvmerr(f, code) }
}

/// Called by the C pvmlogprintf with the formatted text.
#[no_mangle]
pub unsafe extern "C" fn pvmshim_log_text(text: *const c_char) {
    // SAFETY: a C string formatted by vsnprintf.
    let t = unsafe { s(text) };
    crate::core::logerror(&t);
}

#[no_mangle]
pub extern "C" fn pvmbeatask() -> c_int {
    crate::core::guarded(E_SYSERR, || match with_r(|l| l.beatask()) {
        Ok(()) => 0,
        Err(e) => e,
    })
}

#[no_mangle]
pub extern "C" fn pvmendtask() -> c_int {
    crate::core::guarded(0, crate::api::exit_internal)
}

#[no_mangle]
pub unsafe extern "C" fn pvmlogerror(text: *const c_char) -> c_int {
    // SAFETY: C string.
    crate::core::logerror(&unsafe { s(text) });
    0
}

#[no_mangle]
pub unsafe extern "C" fn pvmlogperror(text: *const c_char) -> c_int {
    let e = std::io::Error::last_os_error();
    // SAFETY: C string.
    crate::core::logperror(&unsafe { s(text) }, &e);
    0
}

#[no_mangle]
pub extern "C" fn pvmbailout(n: c_int) {
    crate::api::exit_internal();
    std::process::exit(n);
}

#[no_mangle]
pub unsafe extern "C" fn pvmstrtoi(p: *const c_char) -> c_int {
    // SAFETY: C string.
    strtoi(&unsafe { s(p) })
}

#[no_mangle]
pub unsafe extern "C" fn pvmxtoi(p: *const c_char) -> c_int {
    // SAFETY: C string.
    let t = unsafe { s(p) };
    let t = t.trim().trim_start_matches("0x").trim_start_matches("0X");
    let d: String = t.chars().take_while(|c| c.is_ascii_hexdigit()).collect();
    u32::from_str_radix(&d, 16).unwrap_or(0) as c_int
}

#[no_mangle]
pub unsafe extern "C" fn errnamecode(name: *const c_char) -> c_int {
    // SAFETY: C string.
    let n = unsafe { s(name) };
    pvm_proto::codes::PvmError::ALL
        .iter()
        .find(|e| e.name() == n)
        .map(|e| e.code())
        .unwrap_or(0)
}

#[no_mangle]
pub unsafe extern "C" fn pvmput32(p: *mut c_char, n: c_int) -> *mut c_char {
    // SAFETY: p points to 4 writable bytes.
    unsafe { std::ptr::copy_nonoverlapping(n.to_be_bytes().as_ptr(), p as *mut u8, 4) };
    p
}

#[no_mangle]
pub unsafe extern "C" fn pvmput16(p: *mut c_char, n: c_int) -> *mut c_char {
    // SAFETY: p points to 2 writable bytes.
    unsafe { std::ptr::copy_nonoverlapping((n as u16).to_be_bytes().as_ptr(), p as *mut u8, 2) };
    p
}

#[no_mangle]
pub unsafe extern "C" fn pvmput8(p: *mut c_char, n: c_int) -> *mut c_char {
    // SAFETY: p points to a writable byte.
    unsafe { *p = n as c_char };
    p
}

#[no_mangle]
pub unsafe extern "C" fn pvmget32(p: *const c_char) -> c_int {
    let mut b = [0u8; 4];
    // SAFETY: p points to 4 readable bytes.
    unsafe { std::ptr::copy_nonoverlapping(p as *const u8, b.as_mut_ptr(), 4) };
    i32::from_be_bytes(b)
}

#[no_mangle]
pub unsafe extern "C" fn pvmget16(p: *const c_char) -> c_int {
    let mut b = [0u8; 2];
    // SAFETY: p points to 2 readable bytes.
    unsafe { std::ptr::copy_nonoverlapping(p as *const u8, b.as_mut_ptr(), 2) };
    u16::from_be_bytes(b) as c_int
}

#[no_mangle]
pub unsafe extern "C" fn pvmget8(p: *const c_char) -> c_int {
    // SAFETY: p points to a readable byte.
    unsafe { *(p as *const u8) as c_int }
}

#[no_mangle]
pub extern "C" fn i_malloc(n: libc::size_t) -> *mut c_void {
    // SAFETY: plain malloc.
    unsafe { libc::malloc(n.max(1)) }
}

#[no_mangle]
pub unsafe extern "C" fn i_realloc(p: *mut c_void, n: libc::size_t) -> *mut c_void {
    // SAFETY: p came from i_malloc/malloc or is NULL.
    unsafe { libc::realloc(p, n.max(1)) }
}

#[no_mangle]
pub unsafe extern "C" fn i_free(p: *mut c_void) {
    // SAFETY: p came from i_malloc/malloc or is NULL.
    unsafe { libc::free(p) }
}

#[no_mangle]
pub extern "C" fn i_dump(_how: c_int) -> c_int {
    0
}

#[no_mangle]
pub extern "C" fn i_choke() -> c_int {
    0
}

#[no_mangle]
pub extern "C" fn pvmgettmp() -> *const c_char {
    static V: OnceLock<CString> = OnceLock::new();
    leak_str(&V, crate::core::pvm_tmp)
}

#[no_mangle]
pub extern "C" fn pvmgetroot() -> *const c_char {
    static V: OnceLock<CString> = OnceLock::new();
    leak_str(&V, || {
        std::env::var("PVM_ROOT").unwrap_or_else(|_| "/usr/lib/pvm3".into())
    })
}

#[no_mangle]
pub extern "C" fn pvmgethome() -> *const c_char {
    static V: OnceLock<CString> = OnceLock::new();
    leak_str(&V, || std::env::var("HOME").unwrap_or_else(|_| "/".into()))
}

#[no_mangle]
pub extern "C" fn pvmgetrsh() -> *const c_char {
    static V: OnceLock<CString> = OnceLock::new();
    leak_str(&V, || {
        std::env::var("PVM_RSH").unwrap_or_else(|_| "/usr/bin/rsh".into())
    })
}

#[no_mangle]
pub extern "C" fn pvmdsockfile() -> *const c_char {
    static V: OnceLock<CString> = OnceLock::new();
    leak_str(&V, || format!("{}/pvmd.{}", crate::core::pvm_tmp(), crate::core::uid()))
}

/// The pvmd program: `$PVM_ROOT/lib/pvmd`, else the Debian location (legacy Debian hard-codes
/// `/usr/bin/pvmd`).
pub fn pvmd_path() -> String {
    if let Ok(r) = std::env::var("PVM_ROOT") {
        let p = format!("{r}/lib/pvmd");
        if std::path::Path::new(&p).exists() {
            return p;
        }
    }
    "/usr/bin/pvmd".into()
}

#[no_mangle]
pub extern "C" fn pvmgetpvmd() -> *const c_char {
    static V: OnceLock<CString> = OnceLock::new();
    leak_str(&V, pvmd_path)
}

/// Starts a master pvmd and waits for the address line it prints.
pub fn start_pvmd(args: &[String]) -> Result<(), c_int> {
    crate::core::check_root();
    let path = pvmd_path();
    let mut cmd = std::process::Command::new(&path);
    // The legacy pvmd links the legacy library's private routines: it must not pick up this
    // library from LD_LIBRARY_PATH (abi.md §6), so our own directory is left out of its path.
    if let (Some(ours), Ok(lp)) = (own_file(), std::env::var("LD_LIBRARY_PATH")) {
        let kept: Vec<&str> = lp
            .split(':')
            .filter(|d| {
                std::fs::canonicalize(std::path::Path::new(d).join("libpvm3.so.3"))
                    .map(|c| c != ours)
                    .unwrap_or(true)
            })
            .collect();
        cmd.env("LD_LIBRARY_PATH", kept.join(":"));
    }
    let mut child = cmd
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| {
            crate::core::logperror(&path, &e);
            crate::core::E_SYSERR
        })?;
    let out = child.stdout.take().ok_or(E_SYSERR)?;
    let mut line = String::new();
    let _ = std::io::BufReader::new(out).read_line(&mut line);
    let line = line.trim();
    if line.is_empty() {
        let _ = child.wait();
        return Err(pvm_proto::codes::PvmError::CantStart as i32);
    }
    if line.contains("PvmDupHost") {
        return Err(pvm_proto::codes::PvmError::DupHost as i32);
    }
    // The daemon keeps running on its own; reap it in the background.
    std::thread::spawn(move || {
        let _ = child.wait();
    });
    Ok(())
}

#[no_mangle]
pub unsafe extern "C" fn pvmputenv(s: *const c_char) -> c_int {
    if s.is_null() {
        return -1;
    }
    // putenv keeps the pointer; copy so the caller may reuse its buffer.
    // SAFETY: a C string; the copy is intentionally leaked as putenv requires.
    unsafe { libc::putenv(libc::strdup(s)) }
}

/// # Safety
/// `class` must be NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn pvmreset(mytid: c_int, killtasks: c_int, class: *const c_char, index: c_int) -> c_int {
    // SAFETY: per the contract.
    let class = unsafe { s(class) };
    crate::api::reset(mytid, killtasks, class.as_bytes(), index)
}

#[no_mangle]
pub extern "C" fn pvmchkuid(_uid: c_int) -> c_int {
    0
}

#[no_mangle]
pub extern "C" fn pvmgetdsig() -> c_int {
    pvm_proto::dsig::DataSig::native_sig()
}

#[no_mangle]
pub unsafe extern "C" fn pvmgetclock(tv: *mut libc::timeval) -> c_int {
    // SAFETY: tv points to a struct timeval.
    unsafe { libc::gettimeofday(tv, std::ptr::null_mut()) }
}

#[no_mangle]
pub extern "C" fn pvmsleep(secs: c_int) -> c_int {
    std::thread::sleep(std::time::Duration::from_secs(secs.max(0) as u64));
    0
}

#[no_mangle]
pub unsafe extern "C" fn pvmtmpnam(buf: *mut c_char) -> *mut c_char {
    static mut OWN: [u8; 128] = [0; 128];
    let n = crate::core::tmpnam();
    let b = n.as_bytes();
    let len = b.len().min(127);
    let dst = if buf.is_null() {
        std::ptr::addr_of_mut!(OWN) as *mut c_char
    } else {
        buf
    };
    // SAFETY: the caller's buffer holds PVMTMPNAMLEN (128) bytes, as does OWN.
    unsafe {
        std::ptr::copy_nonoverlapping(b.as_ptr(), dst as *mut u8, len);
        *dst.add(len) = 0;
    }
    dst
}

#[no_mangle]
pub unsafe extern "C" fn pvmsettaskname(name: *const c_char) -> c_int {
    crate::core::guarded(E_SYSERR, || {
        // SAFETY: C string.
        let n = unsafe { s(name) };
        with(|l| {
            if l.enrolled() {
                return pvm_proto::codes::PvmError::Exists as i32;
            }
            l.taskname = CString::new(n).ok();
            0
        })
        .unwrap_or(E_SYSERR)
    })
}

#[no_mangle]
pub unsafe extern "C" fn pvmupkstralloc(out: *mut *mut c_char) -> c_int {
    crate::core::guarded(E_SYSERR, || {
        if out.is_null() {
            return crate::core::E_BADPARAM;
        }
        let r = with_r(|l| {
            let b = l.rbuf_mut()?;
            let mut u = b.unpacker();
            let v = u.up_str_raw().map_err(|e| e.pvm_error() as i32)?;
            b.pos = u.position();
            Ok(v)
        });
        match r {
            Ok(v) => {
                // SAFETY: malloc'd copy handed to the caller, who frees it.
                unsafe {
                    let p = libc::malloc(v.len() + 1) as *mut u8;
                    if p.is_null() {
                        return crate::core::E_NOMEM;
                    }
                    std::ptr::copy_nonoverlapping(v.as_ptr(), p, v.len());
                    *p.add(v.len()) = 0;
                    *out = p as *mut c_char;
                }
                0
            }
            Err(e) => e,
        }
    })
}

#[no_mangle]
pub unsafe extern "C" fn pvmmatchstring(str_: *const c_char, pat: *const c_char) -> c_int {
    // SAFETY: C strings.
    let (a, b) = unsafe { (s(str_), s(pat)) };
    a.contains(&b) as c_int
}

/// mroute(): in legacy the message routing engine; here one round of input processing.
#[no_mangle]
pub extern "C" fn mroute(_mid: c_int, _dtid: c_int, _code: c_int, _tmout: *mut c_void) -> c_int {
    crate::core::guarded(E_SYSERR, || {
        let r = with_r(|l| l.pump(Some(std::time::Duration::from_millis(0))));
        let _ = crate::api::run_handlers();
        match r {
            Ok(()) => 0,
            Err(e) => e,
        }
    })
}

/// msendrecv(): sends the current send buffer to `other` with `code` and `ctx` and makes the
/// reply the receive buffer.
#[no_mangle]
pub extern "C" fn msendrecv(other: c_int, code: c_int, ctx: c_int) -> c_int {
    crate::core::guarded(E_SYSERR, || {
        let r = with_r(|l| {
            l.beatask()?;
            let b = l.bufs.get(&l.sbuf).ok_or(crate::core::E_NOBUF)?;
            let body = b.body().clone();
            let m = l.msendrecv(other, code, ctx, &body)?;
            let id = l.new_buf(crate::core::BufKind::Recv(
                pvm_proto::encoding::MsgBody::from_fragments(m.header.enc, [&m.body[..]]),
            ));
            if let Some(b) = l.bufs.get_mut(&id) {
                b.tag = m.header.tag;
                b.ctx = m.header.ctx;
                b.src = m.src.0;
                b.wid = m.header.wid;
            }
            if l.rbuf != 0 {
                let old = l.rbuf;
                l.bufs.remove(&old);
            }
            l.rbuf = id;
            Ok(id)
        });
        r.unwrap_or_else(|e| e)
    })
}

#[no_mangle]
pub extern "C" fn umbuf_free(mid: c_int) -> c_int {
    // SAFETY: calls our own export.
    unsafe { crate::api::pvm_freebuf(mid) }
}

#[no_mangle]
pub unsafe extern "C" fn pvmmcast(mid: c_int, tids: *mut c_int, count: c_int, tag: c_int) -> c_int {
    crate::core::guarded(E_SYSERR, || {
        let old = with(|l| std::mem::replace(&mut l.sbuf, mid)).unwrap_or(0);
        // SAFETY: our own export with the caller's arguments.
        let r = unsafe { crate::api::pvm_mcast(tids, count, tag) };
        let _ = with(|l| l.sbuf = old);
        r
    })
}

// tev_begin and tev_fin are real: tev.rs (what our libgpvm3 packs its group events through).

#[no_mangle]
pub unsafe extern "C" fn hex_inadport(_s: *const c_char, _sad: *mut c_void) {}

#[no_mangle]
pub extern "C" fn inadport_hex(_sad: *const c_void) -> *const c_char {
    c"00000000:0000".as_ptr()
}

#[no_mangle]
pub extern "C" fn inadport_decimal(_sad: *const c_void) -> *const c_char {
    c"0.0.0.0:0".as_ptr()
}

/// A string handed out in a static buffer, as legacy does (valid until the next call).
fn in_static(buf: &'static std::sync::Mutex<[u8; 128]>, text: &str) -> *const c_char {
    let mut b = buf.lock().unwrap_or_else(|e| e.into_inner());
    let n = text.len().min(b.len() - 1);
    b[..n].copy_from_slice(&text.as_bytes()[..n]);
    b[n] = 0;
    b.as_ptr() as *const c_char
}

/// The names of the debug mask bits, comma-separated (`pkt,msg,...`).
#[no_mangle]
pub extern "C" fn debug_flags(mask: c_int) -> *const c_char {
    const NAMES: [&str; 16] = [
        "pkt", "msg", "tsk", "slv", "hst", "sel", "net", "mpp", "sch", "app", "wai", "mem", "sem", "lck", "rtg", "mbx",
    ];
    static BUF: std::sync::Mutex<[u8; 128]> = std::sync::Mutex::new([0; 128]);
    let names: Vec<&str> = (0..NAMES.len())
        .filter(|i| mask & (1 << i) != 0)
        .map(|i| NAMES[i])
        .collect();
    in_static(&BUF, &names.join(","))
}

/// The symbolic name of a reserved message tag (TM_, DM_, TC_, SM_; the legacy ranges only,
/// not this implementation's extensions), else the tag in decimal; `*found` says which.
///
/// # Safety
/// `found` must be NULL or point to an int.
#[no_mangle]
pub unsafe extern "C" fn pvmnametag(tag: c_int, found: *mut c_int) -> *const c_char {
    use pvm_proto::codes::{Dm, Sm, Tc, Tm};
    static NAMES: OnceLock<std::collections::HashMap<c_int, CString>> = OnceLock::new();
    static BUF: std::sync::Mutex<[u8; 128]> = std::sync::Mutex::new([0; 128]);
    let names = NAMES.get_or_init(|| {
        let mut m = std::collections::HashMap::new();
        for code in (0x8001_0001u32..=0x8001_0019)
            .chain(0x8002_0001..=0x8002_001d)
            .chain(0x8003_0001..=0x8003_000c)
            .chain(0x8004_0001..=0x8004_0011)
        {
            let c = code as c_int;
            let n = Tm::from_code(c)
                .map(Tm::name)
                .or_else(|| Dm::from_code(c).map(Dm::name))
                .or_else(|| Tc::from_code(c).map(Tc::name))
                .or_else(|| Sm::from_code(c).map(Sm::name));
            if let Some(n) = n.and_then(|n| CString::new(n).ok()) {
                m.insert(c, n);
            }
        }
        m
    });
    let (p, hit) = match names.get(&tag) {
        Some(n) => (n.as_ptr(), 1),
        None => (in_static(&BUF, &tag.to_string()), 0),
    };
    if !found.is_null() {
        // SAFETY: per the contract.
        unsafe { *found = hit };
    }
    p
}

#[no_mangle]
pub unsafe extern "C" fn pvmhdump(_cp: *const c_char, _n: c_int, _pad: *const c_char) -> c_int {
    0
}

#[no_mangle]
pub extern "C" fn pvmdisplaymhfinfo(_who: *const c_char, _msg: *const c_char, _tid: c_int) -> c_int {
    0
}

#[no_mangle]
pub extern "C" fn tobuf_dump() -> c_int {
    0
}

#[no_mangle]
pub unsafe extern "C" fn print_fdset(_s: *const c_char, _n: c_int, _f: *const c_void) -> c_int {
    0
}

#[no_mangle]
pub extern "C" fn pvmcrcappend(_buf: *const c_char, _len: c_int, crc: libc::c_uint) -> libc::c_uint {
    crc
}

/// Environment helpers (used by pvm_spawn in legacy): copies and frees NULL-terminated arrays.
#[no_mangle]
pub unsafe extern "C" fn pvmcopyenv(env: *mut *mut c_char) -> *mut *mut c_char {
    if env.is_null() {
        return std::ptr::null_mut();
    }
    let mut n = 0;
    // SAFETY: a NULL-terminated array of C strings.
    unsafe {
        while !(*env.add(n)).is_null() {
            n += 1;
        }
        let out = libc::malloc((n + 1) * std::mem::size_of::<*mut c_char>()) as *mut *mut c_char;
        if out.is_null() {
            return out;
        }
        for i in 0..n {
            *out.add(i) = libc::strdup(*env.add(i));
        }
        *out.add(n) = std::ptr::null_mut();
        out
    }
}

#[no_mangle]
pub unsafe extern "C" fn pvmfreeenv(env: *mut *mut c_char) -> c_int {
    if env.is_null() {
        return 0;
    }
    // SAFETY: an array made by pvmcopyenv.
    unsafe {
        let mut i = 0;
        while !(*env.add(i)).is_null() {
            libc::free(*env.add(i) as *mut c_void);
            i += 1;
        }
        libc::free(env as *mut c_void);
    }
    0
}

#[no_mangle]
pub unsafe extern "C" fn pvmenvinsert(_anep: *mut c_void, _s: *const c_char) -> c_int {
    0
}

/// Wait contexts, message buffers, fragments, routes and trace internals of the legacy
/// library: no caller outside the legacy pvmd (documented above). They return 0 / NULL.
macro_rules! minimal {
    ($($n:ident),* $(,)?) => {$(
        #[no_mangle]
        pub extern "C" fn $n() -> c_long {
            0
        }
    )*};
}

minimal!(
    check_for_exit,
    check_routeadd,
    check_routedelete,
    post_routedelete,
    da_new,
    da_ref,
    da_unref,
    enc_trc_fin,
    enc_trc_hdr,
    fr_new,
    fr_snew,
    fr_unref,
    mesg_input,
    midtobuf,
    ogm_complete,
    pmsg_decmore,
    pmsg_dump,
    pmsg_extend,
    pmsg_new,
    pmsg_pack,
    pmsg_packbody,
    pmsg_setenc,
    pmsg_setlen,
    pmsg_unpack,
    pmsg_unref,
    tev_do_trace,
    tev_flush,
    tev_init,
    ttpcb_creat,
    ttpcb_dead,
    ttpcb_delete,
    ttpcb_dump,
    ttpcb_dumpall,
    ttpcb_find,
    ttpcb_new,
    umbuf_dump,
    umbuf_list,
    umbuf_new,
    wait_delete,
    wait_dump,
    wait_dumpall,
    wait_find,
    wait_get,
    wait_init,
    wait_new,
    pvm_alloc,
    pvm_free,
    pvm_realloc,
    pvm_fd_add,
    pvm_fd_delete,
);

/// Keeps the C globals readable from Rust tests.
pub fn autoerr() -> c_int {
    cget!(pvmautoerr)
}

pub fn set_autoerr(v: c_int) {
    cset!(pvmautoerr, v)
}

/// The file this shared library was loaded from, symlinks resolved.
fn own_file() -> Option<std::path::PathBuf> {
    // SAFETY: dladdr only reads loader tables; dli_fname points into them and stays valid.
    unsafe {
        let mut info: libc::Dl_info = std::mem::zeroed();
        if libc::dladdr(pvmgettmp as *const c_void, &mut info) == 0 || info.dli_fname.is_null() {
            return None;
        }
        let f = std::path::PathBuf::from(CStr::from_ptr(info.dli_fname).to_string_lossy().into_owned());
        std::fs::canonicalize(f).ok()
    }
}
