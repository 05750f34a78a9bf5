//! Fortran 77 interface of PVM 3.4.6 (`libfpvm3`): every `pvmf*` subroutine of the legacy
//! library, for gfortran. Calling convention: lower-case name with one trailing underscore,
//! every argument by reference, the hidden length of each CHARACTER argument passed by value
//! (size_t) after all explicit arguments; strings are blank-padded both ways. The last explicit
//! argument returns the result or error code, as the C routine returns it.
//!
//! The wrappers follow the legacy ones where the legacy behaviour is observable by programs
//! (argument checks, string capacities, the one-entry-per-call iteration of pvmfconfig and
//! pvmftasks, `*` as "anywhere" in pvmfspawn); see the README for the places where the legacy
//! wrappers are broken and these are not (pvmffreecontext, pvmfgetmboxinfo).

#![allow(clippy::missing_safety_doc, clippy::too_many_arguments)]

mod ffi;
mod fstr;

use std::ffi::{CStr, CString};
use std::os::raw::{c_char, c_int, c_void};
use std::sync::{Mutex, MutexGuard};

use ffi::*;
use fstr::{GROUP_CAP, NAME_CAP};

/// Reads a by-reference INTEGER argument (NULL reads as 0: Fortran never passes NULL, but C
/// callers of these symbols might).
unsafe fn rd(p: *const c_int) -> c_int {
    if p.is_null() {
        0
    } else {
        // SAFETY: non-NULL by-reference argument.
        unsafe { *p }
    }
}

/// Stores into a by-reference INTEGER argument (ignored when NULL).
unsafe fn wr(p: *mut c_int, v: c_int) {
    if !p.is_null() {
        // SAFETY: non-NULL by-reference argument.
        unsafe { *p = v };
    }
}

/// A Fortran CHARACTER argument as a C string of at most `cap - 1` bytes.
unsafe fn cstr(p: *const c_char, len: usize, cap: usize) -> Option<CString> {
    // SAFETY: `len` is the hidden length of the argument.
    fstr::to_c(unsafe { fstr::bytes(p, len) }, cap)
}

/// Legacy helper exported by libfpvm3: Fortran string -> C string (trailing blanks dropped).
/// Returns 1 when it does not fit `dl` bytes, else 0.
#[no_mangle]
pub unsafe extern "C" fn ftocstr(ds: *mut c_char, dl: c_int, ss: *const c_char, sl: c_int) -> c_int {
    let cap = usize::try_from(dl).unwrap_or(0);
    // SAFETY: the caller passes buffers of the given sizes.
    match unsafe { cstr(ss, usize::try_from(sl).unwrap_or(0), cap) } {
        Some(s) if !ds.is_null() => {
            let b = s.as_bytes_with_nul();
            // SAFETY: b.len() <= cap by construction.
            unsafe { std::ptr::copy_nonoverlapping(b.as_ptr().cast(), ds, b.len()) };
            0
        }
        _ => 1,
    }
}

/// Legacy helper exported by libfpvm3: C string -> blank-padded Fortran string. Returns 0.
#[no_mangle]
pub unsafe extern "C" fn ctofstr(ds: *mut c_char, dl: c_int, ss: *const c_char) -> c_int {
    // SAFETY: the caller passes a buffer of `dl` bytes and a C string.
    unsafe { fstr::store(ds, usize::try_from(dl).unwrap_or(0), ss) };
    0
}

/// Wrappers `pvmfX(a1, ..., result)` of `pvm_X(*a1, ...)` with only INTEGER arguments.
macro_rules! ints {
    ($($fname:ident => $cfn:ident($($arg:ident),*);)*) => {$(
        #[no_mangle]
        pub unsafe extern "C" fn $fname($($arg: *const c_int,)* result: *mut c_int) {
            // SAFETY: by-reference INTEGER arguments.
            unsafe { wr(result, $cfn($(rd($arg)),*)) }
        }
    )*};
}

ints! {
    pvmfmytid_ => pvm_mytid();
    pvmfparent_ => pvm_parent();
    pvmfexit_ => pvm_exit();
    pvmfhalt_ => pvm_halt();
    pvmfkill_ => pvm_kill(tid);
    pvmfsendsig_ => pvm_sendsig(tid, signum);
    pvmfpstat_ => pvm_pstat(tid);
    pvmftidtohost_ => pvm_tidtohost(tid);
    pvmfinitsend_ => pvm_initsend(encoding);
    pvmfmkbuf_ => pvm_mkbuf(encoding);
    pvmffreebuf_ => pvm_freebuf(bufid);
    pvmfgetrbuf_ => pvm_getrbuf();
    pvmfgetsbuf_ => pvm_getsbuf();
    pvmfsetrbuf_ => pvm_setrbuf(bufid);
    pvmfsetsbuf_ => pvm_setsbuf(bufid);
    pvmfsend_ => pvm_send(tid, msgtag);
    pvmfrecv_ => pvm_recv(tid, msgtag);
    pvmfnrecv_ => pvm_nrecv(tid, msgtag);
    pvmfprobe_ => pvm_probe(tid, msgtag);
    pvmfgetopt_ => pvm_getopt(what);
    pvmfsetopt_ => pvm_setopt(what, val);
    pvmfnewcontext_ => pvm_newcontext();
    pvmfgetcontext_ => pvm_getcontext();
    pvmfsetcontext_ => pvm_setcontext(ctx);
    pvmfdelmhf_ => pvm_delmhf(mhid);
}

/// Frees a context. (The legacy wrapper calls pvm_setcontext here, switching to the context
/// instead of freeing it; we do what the name and the manual say.)
#[no_mangle]
pub unsafe extern "C" fn pvmffreecontext_(ctx: *const c_int, info: *mut c_int) {
    // SAFETY: by-reference arguments.
    unsafe { wr(info, pvm_freecontext(rd(ctx))) }
}

#[no_mangle]
pub unsafe extern "C" fn pvmfbufinfo_(
    bufid: *const c_int,
    bytes: *mut c_int,
    msgtag: *mut c_int,
    tid: *mut c_int,
    info: *mut c_int,
) {
    let (mut b, mut t, mut s) = (0, 0, 0);
    // SAFETY: by-reference arguments.
    unsafe {
        let cc = pvm_bufinfo(rd(bufid), &mut b, &mut t, &mut s);
        wr(bytes, b);
        wr(msgtag, t);
        wr(tid, s);
        wr(info, cc);
    }
}

#[no_mangle]
pub unsafe extern "C" fn pvmfmcast_(ntask: *const c_int, tids: *mut c_int, msgtag: *const c_int, info: *mut c_int) {
    // SAFETY: `tids` holds `ntask` INTEGERs.
    unsafe { wr(info, pvm_mcast(tids, rd(ntask), rd(msgtag))) }
}

#[no_mangle]
pub unsafe extern "C" fn pvmfnotify_(
    what: *const c_int,
    msgtag: *const c_int,
    cnt: *const c_int,
    tids: *mut c_int,
    info: *mut c_int,
) {
    // SAFETY: `tids` holds `cnt` INTEGERs.
    unsafe { wr(info, pvm_notify(rd(what), rd(msgtag), rd(cnt), tids)) }
}

/// Registers a message handler. The manual has no Fortran binding; the legacy wrapper takes six
/// arguments, ignores the fourth and passes the fifth to pvm_addmhf as the handler, so ours
/// does the same.
#[no_mangle]
pub unsafe extern "C" fn pvmfaddmhf_(
    src: *const c_int,
    tag: *const c_int,
    ctx: *const c_int,
    _unused: *mut c_void,
    func: *mut c_void,
    mhid: *mut c_int,
) {
    // SAFETY: by-reference arguments.
    unsafe { wr(mhid, pvm_addmhf(rd(src), rd(tag), rd(ctx), func)) }
}

/// Turns output collection of later-spawned children on (to stdout) or off.
#[no_mangle]
pub unsafe extern "C" fn pvmfcatchout_(onoff: *const c_int, info: *mut c_int) {
    // SAFETY: `stdout` is libc's stream; by-reference arguments.
    unsafe {
        let f = if rd(onoff) != 0 { stdout } else { std::ptr::null_mut() };
        wr(info, pvm_catchout(f));
    }
}

#[no_mangle]
pub unsafe extern "C" fn pvmfsleep_(secs: *const c_int) {
    // SAFETY: by-reference argument.
    let s = unsafe { rd(secs) };
    if let Ok(s) = u32::try_from(s) {
        // SAFETY: sleep(3) has no memory preconditions.
        unsafe { sleep(s) };
    }
}

/// Receive with timeout; `sec = -1` blocks.
#[no_mangle]
pub unsafe extern "C" fn pvmftrecv_(
    tid: *const c_int,
    msgtag: *const c_int,
    sec: *const c_int,
    usec: *const c_int,
    bufid: *mut c_int,
) {
    // SAFETY: by-reference arguments.
    unsafe {
        let mut tv = Timeval {
            sec: rd(sec).into(),
            usec: rd(usec).into(),
        };
        let t = if rd(sec) == -1 {
            std::ptr::null_mut()
        } else {
            &mut tv as *mut Timeval
        };
        wr(bufid, pvm_trecv(rd(tid), rd(msgtag), t));
    }
}

#[no_mangle]
pub unsafe extern "C" fn pvmfhostsync_(
    host: *const c_int,
    clksec: *mut c_int,
    clkusec: *mut c_int,
    deltasec: *mut c_int,
    deltausec: *mut c_int,
    info: *mut c_int,
) {
    let mut clk = Timeval { sec: 0, usec: 0 };
    let mut delta = Timeval { sec: 0, usec: 0 };
    // SAFETY: by-reference arguments. Fortran INTEGERs are 32 bits: the legacy wrapper
    // truncates the seconds the same way.
    unsafe {
        let cc = pvm_hostsync(rd(host), &mut clk, &mut delta);
        wr(info, cc);
        wr(clksec, clk.sec as c_int);
        wr(clkusec, clk.usec as c_int);
        wr(deltasec, delta.sec as c_int);
        wr(deltausec, delta.usec as c_int);
    }
}

#[no_mangle]
pub unsafe extern "C" fn pvmfpsend_(
    tid: *const c_int,
    msgtag: *const c_int,
    buf: *mut c_void,
    len: *const c_int,
    datatype: *const c_int,
    info: *mut c_int,
) {
    // SAFETY: `buf` holds `len` items of `datatype`.
    unsafe { wr(info, pvm_psend(rd(tid), rd(msgtag), buf, rd(len), rd(datatype))) }
}

#[no_mangle]
pub unsafe extern "C" fn pvmfprecv_(
    tid: *const c_int,
    msgtag: *const c_int,
    buf: *mut c_void,
    len: *const c_int,
    datatype: *const c_int,
    atid: *mut c_int,
    atag: *mut c_int,
    alen: *mut c_int,
    info: *mut c_int,
) {
    // SAFETY: `buf` has room for `len` items of `datatype`.
    unsafe {
        wr(
            info,
            pvm_precv(rd(tid), rd(msgtag), buf, rd(len), rd(datatype), atid, atag, alen),
        )
    }
}

type PackFn = unsafe extern "C" fn(*mut c_void, c_int, c_int) -> c_int;

/// Fortran type codes (fpvm3.h) to pack routines. STRING packs `nitem` bytes (the legacy
/// wrapper ignores the CHARACTER length), INTEGER8 is a C long.
fn packer(what: c_int) -> Option<(PackFn, PackFn)> {
    Some(match what {
        0 | 1 => (pvm_pkbyte as PackFn, pvm_upkbyte as PackFn),
        2 => (pvm_pkshort, pvm_upkshort),
        3 => (pvm_pkint, pvm_upkint),
        4 => (pvm_pkfloat, pvm_upkfloat),
        5 => (pvm_pkcplx, pvm_upkcplx),
        6 => (pvm_pkdouble, pvm_upkdouble),
        7 => (pvm_pkdcplx, pvm_upkdcplx),
        8 => (pvm_pklong, pvm_upklong),
        _ => return None,
    })
}

#[no_mangle]
pub unsafe extern "C" fn pvmfpack_(
    what: *const c_int,
    xp: *mut c_void,
    nitem: *const c_int,
    stride: *const c_int,
    info: *mut c_int,
) {
    // SAFETY: `xp` holds `nitem` items at `stride`.
    unsafe {
        let cc = match packer(rd(what)) {
            Some((pk, _)) => pk(xp, rd(nitem), rd(stride)),
            None => PVM_BAD_PARAM,
        };
        wr(info, cc);
    }
}

#[no_mangle]
pub unsafe extern "C" fn pvmfunpack_(
    what: *const c_int,
    xp: *mut c_void,
    nitem: *const c_int,
    stride: *const c_int,
    info: *mut c_int,
) {
    // SAFETY: `xp` has room for `nitem` items at `stride`.
    unsafe {
        let cc = match packer(rd(what)) {
            Some((_, upk)) => upk(xp, rd(nitem), rd(stride)),
            None => PVM_BAD_PARAM,
        };
        wr(info, cc);
    }
}

/// Starts `ntask` copies of `aout`; `where` starting with `*` means anywhere.
#[no_mangle]
pub unsafe extern "C" fn pvmfspawn_(
    aout: *const c_char,
    flag: *const c_int,
    place: *const c_char,
    ntask: *const c_int,
    tids: *mut c_int,
    numt: *mut c_int,
    aout_len: usize,
    place_len: usize,
) {
    // SAFETY: CHARACTER arguments with their hidden lengths; `tids` holds `ntask` INTEGERs.
    unsafe {
        let Some(file) = cstr(aout, aout_len, NAME_CAP) else {
            return wr(numt, PVM_BAD_PARAM);
        };
        let anywhere = fstr::bytes(place, place_len).first() == Some(&b'*');
        let place = if anywhere {
            CString::default()
        } else {
            match cstr(place, place_len, NAME_CAP) {
                Some(p) => p,
                None => return wr(numt, PVM_BAD_PARAM),
            }
        };
        let n = pvm_spawn(
            file.as_ptr(),
            std::ptr::null_mut(),
            rd(flag),
            place.as_ptr(),
            rd(ntask),
            tids,
        );
        wr(numt, n);
    }
}

/// A wrapper over a routine taking one C string and returning an int.
unsafe fn with_name(p: *const c_char, len: usize, cap: usize, f: impl FnOnce(*const c_char) -> c_int) -> c_int {
    // SAFETY: CHARACTER argument with its hidden length.
    match unsafe { cstr(p, len, cap) } {
        Some(s) => f(s.as_ptr()),
        None => PVM_BAD_PARAM,
    }
}

#[no_mangle]
pub unsafe extern "C" fn pvmfarchcode_(arch: *const c_char, code: *mut c_int, arch_len: usize) {
    // SAFETY: see with_name.
    unsafe { wr(code, with_name(arch, arch_len, NAME_CAP, |a| pvm_archcode(a))) }
}

#[no_mangle]
pub unsafe extern "C" fn pvmfmstat_(host: *const c_char, mstat: *mut c_int, host_len: usize) {
    // SAFETY: see with_name.
    unsafe { wr(mstat, with_name(host, host_len, NAME_CAP, |h| pvm_mstat(h))) }
}

/// Adds (or deletes) one host; `info` is the host's dtid or its error code.
unsafe fn one_host(
    f: unsafe extern "C" fn(*mut *mut c_char, c_int, *mut c_int) -> c_int,
    host: *const c_char,
    len: usize,
    info: *mut c_int,
) {
    // SAFETY: CHARACTER argument with its hidden length.
    unsafe {
        let Some(h) = cstr(host, len, NAME_CAP) else {
            return wr(info, PVM_BAD_PARAM);
        };
        let mut p = h.as_ptr().cast_mut();
        let mut one: c_int = 0;
        let cc = f(&mut p, 1, &mut one);
        wr(info, if cc < 0 { cc } else { one });
    }
}

#[no_mangle]
pub unsafe extern "C" fn pvmfaddhost_(host: *const c_char, info: *mut c_int, host_len: usize) {
    // SAFETY: see one_host.
    unsafe { one_host(pvm_addhosts, host, host_len, info) }
}

#[no_mangle]
pub unsafe extern "C" fn pvmfdelhost_(host: *const c_char, info: *mut c_int, host_len: usize) {
    // SAFETY: see one_host.
    unsafe { one_host(pvm_delhosts, host, host_len, info) }
}

#[no_mangle]
pub unsafe extern "C" fn pvmfputinfo_(
    name: *const c_char,
    bufid: *const c_int,
    flags: *const c_int,
    index: *mut c_int,
    name_len: usize,
) {
    // SAFETY: see with_name.
    unsafe {
        let (b, f) = (rd(bufid), rd(flags));
        wr(index, with_name(name, name_len, NAME_CAP, |n| pvm_putinfo(n, b, f)));
    }
}

#[no_mangle]
pub unsafe extern "C" fn pvmfrecvinfo_(
    name: *const c_char,
    index: *const c_int,
    flags: *const c_int,
    bufid: *mut c_int,
    name_len: usize,
) {
    // SAFETY: see with_name.
    unsafe {
        let (i, f) = (rd(index), rd(flags));
        wr(bufid, with_name(name, name_len, NAME_CAP, |n| pvm_recvinfo(n, i, f)));
    }
}

#[no_mangle]
pub unsafe extern "C" fn pvmfdelinfo_(
    name: *const c_char,
    index: *const c_int,
    flags: *const c_int,
    info: *mut c_int,
    name_len: usize,
) {
    // SAFETY: see with_name.
    unsafe {
        let (i, f) = (rd(index), rd(flags));
        wr(info, with_name(name, name_len, NAME_CAP, |n| pvm_delinfo(n, i, f)));
    }
}

/// Prints the message (the whole CHARACTER value, blanks included, as the legacy wrapper does)
/// and the text of pvm_errno.
#[no_mangle]
pub unsafe extern "C" fn pvmfperror_(msg: *const c_char, info: *mut c_int, msg_len: usize) {
    // SAFETY: CHARACTER argument with its hidden length.
    unsafe {
        let b = fstr::bytes(msg, msg_len);
        let b = b.iter().position(|&c| c == 0).map_or(b, |n| &b[..n]);
        let s = CString::new(b).unwrap_or_default();
        wr(info, pvm_perror(s.as_ptr()));
    }
}

/// Starts a pvmd with the blank-separated arguments in `args`.
#[no_mangle]
pub unsafe extern "C" fn pvmfstartpvmd_(args: *const c_char, block: *const c_int, info: *mut c_int, args_len: usize) {
    // SAFETY: CHARACTER argument with its hidden length; argv outlives the call.
    unsafe {
        let b = fstr::bytes(args, args_len);
        let b = b.iter().position(|&c| c == 0).map_or(b, |n| &b[..n]);
        let words: Vec<CString> = b
            .split(|&c| c == b' ' || c == b'\t')
            .filter(|w| !w.is_empty())
            .filter_map(|w| CString::new(w).ok())
            .collect();
        let mut argv: Vec<*mut c_char> = words.iter().map(|w| w.as_ptr().cast_mut()).collect();
        argv.push(std::ptr::null_mut());
        let argc = c_int::try_from(words.len()).unwrap_or(0);
        let p = if argc == 0 {
            std::ptr::null_mut()
        } else {
            argv.as_mut_ptr()
        };
        wr(info, pvm_start_pvmd(argc, p, rd(block)));
    }
}

/// Raw pointers kept between calls of the iterating wrappers (owned by libpvm).
struct Kept<T>(*mut T);
// SAFETY: only touched under the mutex; libpvm owns the memory and PVM tasks are
// single-threaded with respect to libpvm.
unsafe impl<T> Send for Kept<T> {}

struct Iter<T> {
    list: Kept<T>,
    n: c_int,
    extra: c_int,
    next: c_int,
}

impl<T> Iter<T> {
    const fn new() -> Iter<T> {
        Iter {
            list: Kept(std::ptr::null_mut()),
            n: 0,
            extra: 0,
            next: 0,
        }
    }
}

fn lock<T>(m: &'static Mutex<T>) -> MutexGuard<'static, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

static CONFIG: Mutex<Iter<HostInfo>> = Mutex::new(Iter::new());
static TASKS: Mutex<Iter<TaskInfo>> = Mutex::new(Iter::new());
static MBOX: Mutex<Iter<MboxInfo>> = Mutex::new(Iter::new());

/// One host per call, cycling through the configuration taken at the start of the cycle
/// (`nhost = -1` on entry restarts). `info` is 1 for each host returned, as in the legacy
/// wrapper, or the pvm_config error.
#[no_mangle]
pub unsafe extern "C" fn pvmfconfig_(
    nhost: *mut c_int,
    narch: *mut c_int,
    dtid: *mut c_int,
    name: *mut c_char,
    arch: *mut c_char,
    speed: *mut c_int,
    info: *mut c_int,
    name_len: usize,
    arch_len: usize,
) {
    let mut it = lock(&CONFIG);
    // SAFETY: by-reference arguments and CHARACTER buffers with their lengths; the host table
    // belongs to libpvm and stays valid until the next pvm_config.
    unsafe {
        if it.n != 0 && rd(nhost) == -1 && !nhost.is_null() {
            it.n = 0;
        }
        if it.n == 0 {
            let mut n = 0;
            let mut list = std::ptr::null_mut();
            let cc = pvm_config(&mut n, &mut it.extra, &mut list);
            if cc < 0 {
                return wr(info, cc);
            }
            it.list = Kept(list);
            it.next = 0;
            it.n = n;
        }
        if it.next < it.n && !it.list.0.is_null() {
            let h = &*it.list.0.add(usize::try_from(it.next).unwrap_or(0));
            wr(nhost, it.n);
            wr(narch, it.extra);
            wr(dtid, h.tid);
            fstr::store(name, name_len, h.name);
            fstr::store(arch, arch_len, h.arch);
            wr(speed, h.speed);
            wr(info, 1);
            it.next += 1;
        }
        if it.next >= it.n {
            it.n = 0;
        }
    }
}

/// One task per call, like [`pvmfconfig_`] (`ntask = -1` restarts).
#[no_mangle]
pub unsafe extern "C" fn pvmftasks_(
    which: *const c_int,
    ntask: *mut c_int,
    tid: *mut c_int,
    ptid: *mut c_int,
    dtid: *mut c_int,
    flag: *mut c_int,
    aout: *mut c_char,
    info: *mut c_int,
    aout_len: usize,
) {
    let mut it = lock(&TASKS);
    // SAFETY: as in pvmfconfig_.
    unsafe {
        if it.n != 0 && !ntask.is_null() && rd(ntask) == -1 {
            it.n = 0;
        }
        if it.n == 0 {
            let mut n = 0;
            let mut list = std::ptr::null_mut();
            let cc = pvm_tasks(rd(which), &mut n, &mut list);
            if cc < 0 {
                return wr(info, cc);
            }
            it.list = Kept(list);
            it.next = 0;
            it.n = n;
        }
        if it.next < it.n && !it.list.0.is_null() {
            let t = &*it.list.0.add(usize::try_from(it.next).unwrap_or(0));
            wr(ntask, it.n);
            wr(tid, t.tid);
            wr(ptid, t.ptid);
            wr(dtid, t.host);
            wr(flag, t.flag);
            fstr::store(aout, aout_len, t.a_out);
            wr(info, 1);
            it.next += 1;
        }
        if it.next >= it.n {
            it.n = 0;
        }
    }
}

/// One mailbox class matching `pattern` per call; after the last one the next call returns
/// PvmNotFound and the following one starts over (as is `nclasses = -1` on entry).
#[no_mangle]
pub unsafe extern "C" fn pvmfgetmboxinfo_(
    pattern: *const c_char,
    name: *mut c_char,
    nclasses: *mut c_int,
    nentries: *mut c_int,
    index: *mut c_int,
    owner: *mut c_int,
    flags: *mut c_int,
    info: *mut c_int,
    pattern_len: usize,
    name_len: usize,
) {
    let mut it = lock(&MBOX);
    // SAFETY: as in pvmfconfig_; the INTEGER arrays have room for every entry of a class.
    unsafe {
        if it.n != 0 && !nclasses.is_null() && rd(nclasses) == -1 {
            it.n = 0;
        }
        if it.n == 0 {
            let Some(pat) = cstr(pattern, pattern_len, NAME_CAP) else {
                return wr(info, PVM_BAD_PARAM);
            };
            let mut n = 0;
            let mut list = std::ptr::null_mut();
            let cc = pvm_getmboxinfo(pat.as_ptr(), &mut n, &mut list);
            if cc < 0 {
                return wr(info, cc);
            }
            if n <= 0 {
                return wr(info, PVM_NOT_FOUND);
            }
            it.list = Kept(list);
            it.next = 0;
            it.n = n;
        }
        if it.next >= it.n || it.list.0.is_null() {
            it.n = 0;
            return wr(info, PVM_NOT_FOUND);
        }
        let c = &*it.list.0.add(usize::try_from(it.next).unwrap_or(0));
        fstr::store(name, name_len, c.name);
        wr(nclasses, it.n);
        wr(nentries, c.nentries);
        let k = usize::try_from(c.nentries).unwrap_or(0);
        for (dst, src) in [(index, c.indices), (owner, c.owners), (flags, c.flags)] {
            if !dst.is_null() && !src.is_null() {
                std::ptr::copy_nonoverlapping(src, dst, k);
            }
        }
        wr(info, 0);
        it.next += 1;
    }
}

static SIBLINGS: Mutex<(c_int, Kept<c_int>)> = Mutex::new((-1, Kept(std::ptr::null_mut())));

/// Number of siblings and the sibling at `index` (0-based); PvmNoTask for an index out of range.
#[no_mangle]
pub unsafe extern "C" fn pvmfsiblings_(ntids: *mut c_int, index: *const c_int, sibling: *mut c_int) {
    let mut s = lock(&SIBLINGS);
    // SAFETY: by-reference arguments; the sibling list belongs to libpvm.
    unsafe {
        if s.0 == -1 {
            let mut p = std::ptr::null_mut();
            s.0 = pvm_siblings(&mut p);
            s.1 = Kept(p);
        }
        wr(ntids, s.0);
        if index.is_null() || sibling.is_null() {
            return;
        }
        let i = rd(index);
        if i >= 0 && i < s.0 && !s.1 .0.is_null() {
            wr(sibling, *s.1 .0.add(usize::try_from(i).unwrap_or(0)));
        } else {
            wr(sibling, PVM_NO_TASK);
        }
    }
}

/// A group routine looked up in the running program (see [`ffi::group`]).
///
/// # Safety
/// `T` must be the function pointer type of the C routine called `name`.
unsafe fn gfn<T: Copy>(name: &CStr) -> Option<T> {
    assert_eq!(std::mem::size_of::<T>(), std::mem::size_of::<*mut c_void>());
    let p = group(name);
    // SAFETY: per the contract, a non-NULL `p` is a function of type T.
    (!p.is_null()).then(|| unsafe { std::mem::transmute_copy::<*mut c_void, T>(&p) })
}

type StrFn = unsafe extern "C" fn(*const c_char) -> c_int;
type StrIntFn = unsafe extern "C" fn(*const c_char, c_int) -> c_int;
type CollFn = unsafe extern "C" fn(*mut c_void, *mut c_void, c_int, c_int, c_int, *const c_char, c_int) -> c_int;
type OpFn = unsafe extern "C" fn(*mut c_int, *mut c_void, *mut c_void, *mut c_int, *mut c_int);

unsafe fn group_str(f: &CStr, g: *const c_char, len: usize) -> c_int {
    // SAFETY: see with_name and gfn.
    unsafe {
        with_name(g, len, GROUP_CAP, |s| match gfn::<StrFn>(f) {
            Some(f) => f(s),
            None => PVM_NOT_IMPL,
        })
    }
}

unsafe fn group_str_int(f: &CStr, g: *const c_char, len: usize, v: c_int) -> c_int {
    // SAFETY: see with_name and gfn.
    unsafe {
        with_name(g, len, GROUP_CAP, |s| match gfn::<StrIntFn>(f) {
            Some(f) => f(s, v),
            None => PVM_NOT_IMPL,
        })
    }
}

#[no_mangle]
pub unsafe extern "C" fn pvmfjoingroup_(group: *const c_char, inum: *mut c_int, group_len: usize) {
    // SAFETY: see group_str.
    unsafe { wr(inum, group_str(c"pvm_joingroup", group, group_len)) }
}

#[no_mangle]
pub unsafe extern "C" fn pvmflvgroup_(group: *const c_char, info: *mut c_int, group_len: usize) {
    // SAFETY: see group_str.
    unsafe { wr(info, group_str(c"pvm_lvgroup", group, group_len)) }
}

#[no_mangle]
pub unsafe extern "C" fn pvmfgsize_(group: *const c_char, size: *mut c_int, group_len: usize) {
    // SAFETY: see group_str.
    unsafe { wr(size, group_str(c"pvm_gsize", group, group_len)) }
}

#[no_mangle]
pub unsafe extern "C" fn pvmfgettid_(group: *const c_char, inum: *const c_int, tid: *mut c_int, group_len: usize) {
    // SAFETY: see group_str.
    unsafe {
        let i = rd(inum);
        wr(tid, group_str_int(c"pvm_gettid", group, group_len, i));
    }
}

#[no_mangle]
pub unsafe extern "C" fn pvmfgetinst_(group: *const c_char, tid: *const c_int, inum: *mut c_int, group_len: usize) {
    // SAFETY: see group_str.
    unsafe {
        let t = rd(tid);
        wr(inum, group_str_int(c"pvm_getinst", group, group_len, t));
    }
}

#[no_mangle]
pub unsafe extern "C" fn pvmfbarrier_(group: *const c_char, count: *const c_int, info: *mut c_int, group_len: usize) {
    // SAFETY: see group_str.
    unsafe {
        let c = rd(count);
        wr(info, group_str_int(c"pvm_barrier", group, group_len, c));
    }
}

#[no_mangle]
pub unsafe extern "C" fn pvmfbcast_(group: *const c_char, msgtag: *const c_int, info: *mut c_int, group_len: usize) {
    // SAFETY: see group_str.
    unsafe {
        let t = rd(msgtag);
        wr(info, group_str_int(c"pvm_bcast", group, group_len, t));
    }
}

#[no_mangle]
pub unsafe extern "C" fn pvmffreezegroup_(
    group: *const c_char,
    size: *const c_int,
    info: *mut c_int,
    group_len: usize,
) {
    // SAFETY: see group_str.
    unsafe {
        let s = rd(size);
        wr(info, group_str_int(c"pvm_freezegroup", group, group_len, s));
    }
}

unsafe fn collective(
    f: &CStr,
    a: *mut c_void,
    b: *mut c_void,
    count: *const c_int,
    datatype: *const c_int,
    msgtag: *const c_int,
    group: *const c_char,
    root: *const c_int,
    group_len: usize,
) -> c_int {
    // SAFETY: see with_name and gfn; the buffers are the caller's arrays.
    unsafe {
        let (c, d, t, r) = (rd(count), rd(datatype), rd(msgtag), rd(root));
        with_name(group, group_len, GROUP_CAP, |g| match gfn::<CollFn>(f) {
            Some(f) => f(a, b, c, d, t, g, r),
            None => PVM_NOT_IMPL,
        })
    }
}

/// `call pvmfreduce(func, data, count, datatype, msgtag, group, root, info)`; `func` is
/// passed to pvm_reduce as given (pvmsum & co. or a user subroutine with the same arguments).
#[no_mangle]
pub unsafe extern "C" fn pvmfreduce_(
    func: *mut c_void,
    data: *mut c_void,
    count: *const c_int,
    datatype: *const c_int,
    msgtag: *const c_int,
    group: *const c_char,
    root: *const c_int,
    info: *mut c_int,
    group_len: usize,
) {
    // SAFETY: see collective.
    unsafe {
        let f = c"pvm_reduce";
        wr(
            info,
            collective(f, func, data, count, datatype, msgtag, group, root, group_len),
        );
    }
}

#[no_mangle]
pub unsafe extern "C" fn pvmfgather_(
    result: *mut c_void,
    data: *mut c_void,
    count: *const c_int,
    datatype: *const c_int,
    msgtag: *const c_int,
    group: *const c_char,
    root: *const c_int,
    info: *mut c_int,
    group_len: usize,
) {
    // SAFETY: see collective.
    unsafe {
        let f = c"pvm_gather";
        wr(
            info,
            collective(f, result, data, count, datatype, msgtag, group, root, group_len),
        );
    }
}

#[no_mangle]
pub unsafe extern "C" fn pvmfscatter_(
    result: *mut c_void,
    data: *mut c_void,
    count: *const c_int,
    datatype: *const c_int,
    msgtag: *const c_int,
    group: *const c_char,
    root: *const c_int,
    info: *mut c_int,
    group_len: usize,
) {
    // SAFETY: see collective.
    unsafe {
        let f = c"pvm_scatter";
        wr(
            info,
            collective(f, result, data, count, datatype, msgtag, group, root, group_len),
        );
    }
}

/// Fortran names of the predefined reductions, forwarding to libgpvm3's PvmMax & co.
macro_rules! predefined {
    ($fname:ident, $cname:literal) => {
        #[no_mangle]
        pub unsafe extern "C" fn $fname(
            datatype: *mut c_int,
            x: *mut c_void,
            y: *mut c_void,
            num: *mut c_int,
            info: *mut c_int,
        ) {
            // SAFETY: PvmMax & co. have the OpFn prototype.
            match unsafe { gfn::<OpFn>($cname) } {
                // SAFETY: pvm_reduce's contract for reduction functions.
                Some(f) => unsafe { f(datatype, x, y, num, info) },
                // SAFETY: by-reference argument.
                None => unsafe { wr(info, PVM_NOT_IMPL) },
            }
        }
    };
}

predefined!(pvmmax_, c"PvmMax");
predefined!(pvmmin_, c"PvmMin");
predefined!(pvmsum_, c"PvmSum");
predefined!(pvmproduct_, c"PvmProduct");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ftocstr_and_ctofstr_follow_the_legacy_helpers() {
        let mut buf = [0x55 as c_char; 8];
        let f = b"abc     ";
        assert_eq!(unsafe { ftocstr(buf.as_mut_ptr(), 8, f.as_ptr().cast(), 8) }, 0);
        assert_eq!(unsafe { CStr::from_ptr(buf.as_ptr()) }.to_bytes(), b"abc");
        let long = b"abcdefgh";
        assert_eq!(unsafe { ftocstr(buf.as_mut_ptr(), 8, long.as_ptr().cast(), 8) }, 1);
        let mut out = [0u8; 5];
        assert_eq!(unsafe { ctofstr(out.as_mut_ptr().cast(), 5, c"xy".as_ptr()) }, 0);
        assert_eq!(&out, b"xy   ");
    }

    #[test]
    fn pack_codes_match_fpvm3_h() {
        assert!(packer(0).is_some() && packer(8).is_some());
        assert!(packer(9).is_none() && packer(-1).is_none());
        assert_eq!(packer(0).map(|p| p.0 as usize), packer(1).map(|p| p.0 as usize));
        let mut info = 0;
        let mut x = 0i32;
        unsafe { pvmfpack_(&9, (&mut x as *mut i32).cast(), &1, &1, &mut info) };
        assert_eq!(info, PVM_BAD_PARAM);
    }

    #[test]
    fn group_names_longer_than_31_are_rejected_before_any_lookup() {
        let mut inum = 0;
        let g = [b'g'; 32];
        unsafe { pvmfjoingroup_(g.as_ptr().cast(), &mut inum, g.len()) };
        assert_eq!(inum, PVM_BAD_PARAM);
    }
}
