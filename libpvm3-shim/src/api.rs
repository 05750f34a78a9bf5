//! The exported `pvm_*` functions, with the legacy names, signatures and error behaviour.
//!
//! Every export goes through [`pvm_api!`]: panics become PvmSysErr, a negative result sets
//! `pvm_errno` and is reported per `PvmAutoErr` exactly as legacy lpvmerr() does, except for the
//! codes a function returns silently in legacy (listed after `silent`).

use crate::core::{
    cget, cset, cstr, deadline_of, lpvmerr, with, with_r, xdr, Buf, BufKind, Lib, MhfFn, RecvfFn, E_BADPARAM, E_NOBUF,
    E_NOPARENT, E_NOSUCHBUF, E_SYSERR, TC_OUTPUTX, TC_SIBLINGS, TIDGID, TIDPVMD, TMASK_OFF, TMDB_GET, TMDB_NAMES,
    TMDB_PUT, TMDB_REMOVE, TMDB_RESET, TM_ADDHOST, TM_CONFIG, TM_CONTEXT, TM_DB, TM_DELHOST, TM_EXIT, TM_HALT,
    TM_HOSTER, TM_HOSTSYNC, TM_MCA, TM_MSTAT, TM_NOTIFY, TM_PSTAT, TM_SCHED, TM_SENDSIG, TM_SETOPT, TM_SPAWN, TM_TASK,
    TM_TASKER, TM_TICKLE, TM_TRACER,
};
use crate::tev;
use pvm_proto::codes::{PvmError, SYSCTX_TC, SYSCTX_TM};
use pvm_proto::encoding::{EmbeddedMesg, Encoding, Item, MsgBody, Packer, Unpacker};
use std::ffi::CString;
use std::os::raw::{c_char, c_int, c_long, c_short, c_uint, c_ulong, c_ushort, c_void};
use std::time::{Duration, Instant};

#[repr(C)]
pub struct PvmHostInfo {
    pub hi_tid: c_int,
    pub hi_name: *mut c_char,
    pub hi_arch: *mut c_char,
    pub hi_speed: c_int,
    pub hi_dsig: c_int,
}

#[repr(C)]
pub struct PvmTaskInfo {
    pub ti_tid: c_int,
    pub ti_ptid: c_int,
    pub ti_host: c_int,
    pub ti_flag: c_int,
    pub ti_a_out: *mut c_char,
    pub ti_pid: c_int,
}

#[repr(C)]
pub struct PvmMInfo {
    pub len: c_int,
    pub ctx: c_int,
    pub tag: c_int,
    pub wid: c_int,
    pub enc: c_int,
    pub crc: c_int,
    pub src: c_int,
    pub dst: c_int,
}

#[repr(C)]
pub struct PvmMboxInfo {
    pub mi_name: *mut c_char,
    pub mi_nentries: c_int,
    pub mi_indices: *mut c_int,
    pub mi_owners: *mut c_int,
    pub mi_flags: *mut c_int,
}

#[repr(C)]
pub struct Timeval {
    pub tv_sec: c_long,
    pub tv_usec: c_long,
}

type R = Result<c_int, c_int>;

macro_rules! pvm_api {
    ($name:ident ( $($a:ident : $t:ty),* ) silent [$($s:expr),*] noprint [$($np:expr),*] $body:block) => {
        #[no_mangle]
        pub unsafe extern "C" fn $name($($a: $t),*) -> c_int {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| -> R { $body }));
            let code = match r {
                Ok(Ok(v)) => return v,
                Ok(Err(e)) => e,
                Err(_) => E_SYSERR,
            };
            let silent: &[c_int] = &[$($s),*];
            if silent.contains(&code) {
                return code;
            }
            let noprint: &[c_int] = &[$($np),*];
            if noprint.contains(&code) {
                cset!(pvm_errno, code);
                return code;
            }
            lpvmerr(stringify!($name), code)
        }
    };
    ($name:ident ( $($a:ident : $t:ty),* ) silent [$($s:expr),*] $body:block) => {
        pvm_api!($name($($a: $t),*) silent [$($s),*] noprint [] $body);
    };
    ($name:ident ( $($a:ident : $t:ty),* ) noprint [$($s:expr),*] $body:block) => {
        pvm_api!($name($($a: $t),*) silent [] noprint [$($s),*] $body);
    };
    ($name:ident ( $($a:ident : $t:ty),* ) $body:block) => {
        pvm_api!($name($($a: $t),*) silent [] noprint [] $body);
    };
}

/// Connects if not yet done, failing the call if that is impossible.
fn enrolled() -> Result<(), c_int> {
    with_r(|l| l.beatask())
}

/// Tries to connect (legacy's tracing hooks do this in most calls) but carries on without.
fn soft_enrol(l: &mut Lib) {
    if !l.enrolled() && !l.lost {
        let _ = l.beatask();
    }
}

fn nz<T>(p: *const T) -> Result<(), c_int> {
    if p.is_null() {
        Err(E_BADPARAM)
    } else {
        Ok(())
    }
}

/// The pvm_config/pvm_tasks strings are kept until the next call.
fn keep(v: &mut Vec<CString>, b: &[u8]) -> *mut c_char {
    let c = CString::new(b.iter().copied().filter(|&c| c != 0).collect::<Vec<u8>>()).unwrap_or_default();
    v.push(c);
    v.last()
        .map(|c| c.as_ptr() as *mut c_char)
        .unwrap_or(std::ptr::null_mut())
}

fn reply_unpacker(m: &pvm_proto::message::Message) -> MsgBody {
    MsgBody::from_fragments(m.header.enc, [&m.body[..]])
}

fn int(u: &mut Unpacker<'_>) -> Result<i32, c_int> {
    let mut v = [0i32];
    u.up_int(&mut v).map_err(|_| PvmError::BadMsg as i32)?;
    Ok(v[0])
}

fn ctx() -> i32 {
    cget!(pvmmyctx)
}

// ---- enrolment ------------------------------------------------------------------------------

pvm_api!(pvm_mytid() {
    tev::traced(tev::kind::MYTID, true, |e, l| { let _ = (&e, &l);  }, || -> R {
    enrolled()?;
    with(|l| l.mytid)
}, |e, l, cc| { let _ = &l; e.int(tev::did::MT, cc); })
});

pvm_api!(pvm_parent() silent [E_NOPARENT, PvmError::ParentNotSet as i32] {
    tev::traced(tev::kind::PARENT, true, |e, l| { let _ = (&e, &l);  }, || -> R {
    enrolled()?;
    let p = with(|l| l.ptid)?;
    match p {
        0 => Err(E_NOPARENT),
        p if p < 0 => Err(p),
        p => Ok(p),
    }
}, |e, l, cc| { let _ = &l; e.int(tev::did::PT, cc); })
});

/// How long pvm_exit waits for this task's own exit notify after the pvmd's answer.
const OWN_EXIT_NOTIFY_WAIT: Duration = Duration::from_millis(100);

/// pvm_exit() without the error reporting (also used by PvmAutoErr 2).
pub fn exit_internal() -> c_int {
    // Wait for the output of children we catch, as legacy pvmflusho() does.
    loop {
        let (more, seen) = with(|l| {
            (
                l.catchout.is_some() && l.enrolled() && !l.tobufs.is_empty(),
                l.delivered,
            )
        })
        .unwrap_or((false, 0));
        if !more {
            break;
        }
        if with_r(|l| l.pump_unless_news(seen, None)).is_err() {
            break;
        }
        let _ = run_handlers();
    }
    with(|l| {
        if l.enrolled() {
            tev::flush(l);
            let me = l.mytid;
            l.closing = true;
            let _ = l.send_raw(me, TIDPVMD, TM_EXIT, SYSCTX_TM, 0, xdr().body(), true);
            let deadline = Instant::now() + Duration::from_secs(5);
            while !l.lost && Instant::now() < deadline {
                if l.replies.iter().any(|m| m.header.tag == TM_EXIT) {
                    break;
                }
                if l.pump(Some(deadline.saturating_duration_since(Instant::now())))
                    .is_err()
                {
                    break;
                }
            }
            // The pvmd sends the exit notify of this task right after its answer, in a write
            // of its own: a wait that ended as soon as the answer came (a spinning one does,
            // spin.rs) would leave before the notify, which the legacy library, waking later,
            // finds in the same read. Wait for it a little (only when one was asked for).
            if l.notify_own_exit && !l.lost {
                let seen = l.delivered;
                let until = Instant::now() + OWN_EXIT_NOTIFY_WAIT;
                while l.delivered == seen && !l.lost && Instant::now() < until {
                    if l.pump(Some(until.saturating_duration_since(Instant::now()))).is_err() {
                        break;
                    }
                }
            }
        }
    })
    .unwrap_or(());
    // Handlers for messages that came in meanwhile run before the state goes (legacy calls
    // them from inside pvm_exit's wait; the console's own exit notify is one).
    let _ = run_handlers();
    with(|l| {
        let keep_autoerr = cget!(pvmautoerr);
        *l = Lib::default();
        cset!(pvmmytid, -1);
        cset!(pvmmyptid, -1);
        cset!(pvmnsibs, -1);
        cset!(pvmsibtids, std::ptr::null_mut());
        cset!(pvmautoerr, keep_autoerr);
        0
    })
    .unwrap_or(0)
}

pvm_api!(pvm_exit() {
    tev::traced(tev::kind::EXIT, true, |e, l| { let _ = (&e, &l);  }, || -> R {
    Ok(exit_internal())
}, |_, _, _| {})
});

pvm_api!(pvm_siblings(tidsp: *mut *mut c_int) silent [] {
    tev::traced(tev::kind::SIBLINGS, true, |e, l| { let _ = (&e, &l);  }, || -> R {
    nz(tidsp)?;
    enrolled()?;
    let parent = with(|l| l.ptid)?;
    if parent == 0 {
        return with(|l| {
            l.self_sib[0] = l.mytid;
            // SAFETY: tidsp checked non-NULL; the array lives in the library state.
            unsafe { *tidsp = l.self_sib.as_mut_ptr() };
            1
        });
    }
    loop {
        let seen = with(|l| l.delivered)?;
        let got = with(|l| {
            l.siblings.is_some().then(|| {
                // SAFETY: as above.
                unsafe { *tidsp = l.keep_sibs.as_mut_ptr() };
                l.keep_sibs.len() as c_int
            })
        })?;
        if let Some(n) = got {
            return Ok(n);
        }
        with_r(|l| l.pump_unless_news(seen, None))?;
        run_handlers()?;
    }
}, |e, l, cc| { let _ = &l; let v: Vec<i32> = match &l.siblings { Some(v) => v.clone(), None => vec![l.mytid] }; e.ints(tev::did::SIB, &v[..(cc.max(0) as usize).min(v.len())]); })
});

pvm_api!(pvm_tidtohost(tid: c_int) {
    Ok(tid & 0x3ffc_0000)
});

// ---- buffers ---------------------------------------------------------------------------------

fn encoding_of(arg: c_int) -> Result<(Encoding, Option<i32>), c_int> {
    match arg {
        0 => Ok((Encoding::Xdr, None)),
        1 => Ok((Encoding::Raw, None)),
        2 => Ok((Encoding::InPlace, None)),
        4 => Ok((Encoding::Xdr, Some(pvm_proto::codes::ENC_TRACE))),
        _ => Err(E_BADPARAM),
    }
}

fn mkbuf(l: &mut Lib, enc: c_int) -> R {
    let (e, ov) = encoding_of(enc)?;
    let mut p = l.packer(e);
    if ov == Some(pvm_proto::codes::ENC_TRACE) {
        // PvmDataTrace: a user-defined trace record, its header packed at creation (legacy
        // enc_trc_hdr); pvm_send to PVM_TRACE_TID closes and sends it (tev::user_send).
        tev::user_header(&mut p);
    }
    let id = l.new_buf(BufKind::Pack(p));
    let me = l.mytid;
    if let Some(b) = l.bufs.get_mut(&id) {
        b.enc_override = ov;
        b.src = me;
    }
    Ok(id)
}

pvm_api!(pvm_mkbuf(enc: c_int) {
    tev::traced(tev::kind::MKBUF, true, |e, l| { let _ = (&e, &l); e.int(tev::did::ME, enc); }, || -> R {
    with_r(|l| {
        soft_enrol(l);
        mkbuf(l, enc)
    })
}, |e, l, cc| { let _ = &l; e.int(tev::did::MB, cc); })
});

pvm_api!(pvm_initsend(enc: c_int) {
    tev::traced(tev::kind::INITSEND, true, |e, l| { let _ = (&e, &l); e.int(tev::did::ME, enc); }, || -> R {
    with_r(|l| {
        soft_enrol(l);
        // Legacy reports the failure of the pvm_mkbuf() it calls, then its own.
        let id = mkbuf(l, enc).map_err(|e| lpvmerr("pvm_mkbuf", e))?;
        if l.sbuf != 0 {
            let old = l.sbuf;
            l.bufs.remove(&old);
            if l.rbuf == old {
                l.rbuf = 0;
            }
        }
        l.sbuf = id;
        Ok(id)
    })
}, |e, l, cc| { let _ = &l; e.int(tev::did::MSB, cc); })
});

pvm_api!(pvm_freebuf(mid: c_int) {
    tev::traced(tev::kind::FREEBUF, true, |e, l| { let _ = (&e, &l); e.int(tev::did::MB, mid); }, || -> R {
    with_r(|l| {
        soft_enrol(l);
        if mid < 0 {
            return Err(E_BADPARAM);
        }
        if mid == 0 {
            return Ok(0);
        }
        if l.bufs.remove(&mid).is_none() {
            return Err(E_NOSUCHBUF);
        }
        if l.sbuf == mid {
            l.sbuf = 0;
        }
        if l.rbuf == mid {
            l.rbuf = 0;
        }
        Ok(0)
    })
}, |e, _, cc| e.int(tev::did::CC, cc))
});

pvm_api!(pvm_getsbuf() {
    tev::traced(tev::kind::GETSBUF, true, |e, l| { let _ = (&e, &l);  }, || -> R { with(|l| l.sbuf) }, |e, l, cc| { let _ = &l; e.int(tev::did::MSB, cc); })
});
pvm_api!(pvm_getrbuf() {
    tev::traced(tev::kind::GETRBUF, true, |e, l| { let _ = (&e, &l);  }, || -> R { with(|l| l.rbuf) }, |e, l, cc| { let _ = &l; e.int(tev::did::MRB, cc); })
});

pvm_api!(pvm_setsbuf(mid: c_int) {
    tev::traced(tev::kind::SETSBUF, true, |e, l| { let _ = (&e, &l); e.int(tev::did::MB, mid); }, || -> R {
    with_r(|l| {
        if mid < 0 {
            return Err(E_BADPARAM);
        }
        if mid != 0 {
            // As legacy: a buffer is the send or the receive buffer, not both; it leaves
            // unpacking mode (packing appends after what it holds).
            let b = l.bufs.get_mut(&mid).ok_or(E_NOSUCHBUF)?;
            if b.m_len.is_none() {
                b.m_len = Some(b.full_len());
            }
            b.unpacking = false;
            if l.rbuf == mid {
                l.rbuf = 0;
            }
        }
        Ok(std::mem::replace(&mut l.sbuf, mid))
    })
}, |e, l, cc| { let _ = &l; e.int(tev::did::MSB, cc); })
});

pvm_api!(pvm_setrbuf(mid: c_int) {
    tev::traced(tev::kind::SETRBUF, true, |e, l| { let _ = (&e, &l); e.int(tev::did::MB, mid); }, || -> R {
    with_r(|l| {
        if mid < 0 {
            return Err(E_BADPARAM);
        }
        if mid != 0 {
            // As legacy: a buffer entering unpacking mode is read from its start again (one
            // already in it, say the receive buffer set back, goes on where it was).
            let b = l.bufs.get_mut(&mid).ok_or(E_NOSUCHBUF)?;
            if !b.unpacking {
                b.unpacking = true;
                b.pos = 0;
            }
            if l.sbuf == mid {
                l.sbuf = 0;
            }
        }
        Ok(std::mem::replace(&mut l.rbuf, mid))
    })
}, |e, l, cc| { let _ = &l; e.int(tev::did::MRB, cc); })
});

pvm_api!(pvm_bufinfo(mid: c_int, len: *mut c_int, tag: *mut c_int, tid: *mut c_int) {
    // Works on buffers whose message is still arriving (lazy.rs).
    let _lazy = crate::lazy::LazyOk::set();
    tev::traced(tev::kind::BUFINFO, true, |e, l| { let _ = (&e, &l); e.int(tev::did::MB, mid); }, || -> R {
    with_r(|l| {
        if mid <= 0 {
            return Err(E_BADPARAM);
        }
        let b = l.bufs.get_mut(&mid).ok_or(E_NOSUCHBUF)?;
        // SAFETY: each out pointer is written only when non-NULL (legacy allows NULL).
        unsafe {
            if !len.is_null() {
                let full = b.full_len();
                *len = b.reported_len(full) as c_int;
            }
            if !tag.is_null() {
                *tag = b.tag;
            }
            if !tid.is_null() {
                *tid = b.src;
            }
        }
        Ok(0)
    })
}, |e, l, cc| { let _ = &l; let (a, b, c) = if cc == 0 { tev::bufinfo(l, mid) } else { (cc, cc, cc) }; e.int(tev::did::CC, cc); e.int(tev::did::INB, a); e.int(tev::did::IMC, b); e.int(tev::did::IST, c); })
});

pvm_api!(pvm_getminfo(mid: c_int, info: *mut PvmMInfo) {
    tev::traced(tev::kind::GETMINFO, true, |e, l| { let _ = (&e, &l); e.int(tev::did::MB, mid); }, || -> R {
    nz(info)?;
    with_r(|l| {
        if mid <= 0 {
            return Err(E_BADPARAM);
        }
        let b = l.bufs.get_mut(&mid).ok_or(E_NOSUCHBUF)?;
        let len = b.body().len();
        let len = b.reported_len(len);
        // SAFETY: checked non-NULL; points to a caller-owned struct pvmminfo.
        unsafe {
            *info = PvmMInfo {
                len: len as c_int,
                ctx: b.ctx,
                tag: b.tag,
                wid: b.wid,
                enc: b.enc(),
                crc: b.crc,
                src: b.src,
                dst: b.dst,
            };
        }
        Ok(0)
    })
}, |e, _, cc| e.int(tev::did::CC, cc))
});

pvm_api!(pvm_setminfo(mid: c_int, info: *mut PvmMInfo) {
    tev::traced(tev::kind::SETMINFO, true, |e, l| { let _ = (&e, &l); e.int(tev::did::MB, mid); }, || -> R {
    nz(info)?;
    with_r(|l| {
        if mid <= 0 {
            return Err(E_BADPARAM);
        }
        let b = l.bufs.get_mut(&mid).ok_or(E_NOSUCHBUF)?;
        // SAFETY: checked non-NULL.
        let i = unsafe { &*info };
        b.ctx = i.ctx;
        b.tag = i.tag;
        b.wid = i.wid;
        b.crc = i.crc;
        b.src = i.src;
        b.dst = i.dst;
        Ok(0)
    })
}, |e, _, cc| e.int(tev::did::CC, cc))
});

// ---- packing ---------------------------------------------------------------------------------

/// A strided C array as a slice covering every element `pk` would read.
///
/// # Safety
/// `p` must point to at least `(cnt - 1) * stride + 1` elements when `cnt > 0`.
unsafe fn strided<'a, T>(p: *const T, cnt: c_int, stride: c_int) -> Result<&'a [T], c_int> {
    if cnt < 0 || stride < 0 {
        return Err(E_BADPARAM);
    }
    if cnt == 0 {
        return Ok(&[]);
    }
    nz(p)?;
    let n = (cnt as usize - 1) * stride as usize + 1;
    // SAFETY: the caller guarantees the extent (it is what the legacy library reads).
    Ok(unsafe { std::slice::from_raw_parts(p, n) })
}

/// # Safety
/// As [`strided`], for writing.
unsafe fn strided_mut<'a, T>(p: *mut T, cnt: c_int, stride: c_int) -> Result<&'a mut [T], c_int> {
    if cnt < 0 || stride < 0 {
        return Err(E_BADPARAM);
    }
    if cnt == 0 {
        return Ok(&mut []);
    }
    nz(p)?;
    let n = (cnt as usize - 1) * stride as usize + 1;
    // SAFETY: as above.
    Ok(unsafe { std::slice::from_raw_parts_mut(p, n) })
}

/// Elements of one stride-0 chunk: large enough that the per-call cost vanishes, small enough
/// that `pvm_pkdouble(p, INT_MAX, 0)` costs a few kilobytes of memory, not 16 GiB. A multiple
/// of 4, because XDR pads each packed byte run to 4 bytes (a 1023-byte chunk would insert
/// padding mid-array: interop-tests/tests/shim_pack.rs catches that).
const STRIDE0_CHUNK: usize = 1024;

fn pack<T: Item>(data: &[T], cnt: c_int, stride: c_int) -> R {
    with_r(|l| {
        soft_enrol(l);
        if tev::is_user_buf(l) {
            // PvmDataTrace: every packed item carries its type (and count) for the tracer.
            tev::user_annotate::<T>(l.sbuf_packer()?, cnt);
        }
        let p = l.sbuf_packer()?;
        if stride == 0 && cnt > 0 {
            // Stride 0 repeats the first element, as the legacy encoders' pointer arithmetic
            // does. The copies are streamed in bounded chunks: consecutive packs append item by
            // item, so the bytes (and fragment boundaries) equal one pack of `cnt` copies.
            let chunk = [data[0]; STRIDE0_CHUNK];
            let mut left = cnt as usize;
            while left > 0 {
                let n = left.min(STRIDE0_CHUNK);
                p.pack_strided(&chunk[..n], n, 1).map_err(|e| e.pvm_error() as i32)?;
                left -= n;
            }
            return Ok(0);
        }
        // A large pack goes into a pooled buffer (pages already mapped, no regrowth copies).
        let bytes = (cnt.max(0) as usize).saturating_mul(T::RAW_SIZE.max(T::XDR_SIZE));
        if bytes >= crate::pool::MIN_POOLED / 2 {
            if let Some(old) = p.reserve_from(bytes, crate::pool::take) {
                crate::pool::put(old);
            }
        }
        if stride == 1 && crate::pcopy::applies(bytes) {
            // A large array that packs as its memory image: streamed, on two threads when it is
            // larger still (pcopy.rs).
            let d = data.get(..cnt as usize).ok_or(E_BADPARAM)?;
            let mut threads = 0;
            let copy = |dst: &mut [std::mem::MaybeUninit<u8>], src: &[u8]| threads = crate::pcopy::copy(dst, src);
            // SAFETY: pcopy::copy writes every byte of the destination it is given.
            if unsafe { p.pack_image_with(d, copy) }.map_err(|e| e.pvm_error() as i32)? {
                crate::pcopy::trace(l.mytid, "pcopy-pack", bytes, threads);
                return Ok(0);
            }
        }
        p.pack_strided(data, cnt as usize, stride as usize)
            .map_err(|e| e.pvm_error() as i32)?;
        Ok(0)
    })
}

/// Unpacks from a buffer whose message is still arriving (`lazy.rs`). An array that is the
/// memory image of its bytes (bytes in any encoding, any type in our raw encoding, stride 1) is
/// copied piece by piece as the pieces arrive; anything else first waits for the bytes it may
/// read. Either way the buffer's cursor and the result are those of the ordinary path.
/// Ok(true): unpacked; Ok(false): the ordinary path can run now.
fn unpack_arriving<T: Item>(me: i32, b: &mut Buf, out: &mut [T], cnt: c_int, stride: c_int) -> Result<bool, c_int> {
    use pvm_proto::encoding::{Format, Kind};
    let total = b.full_len();
    let pos = b.pos;
    let fmt = Format::from_enc(b.body().enc(), pvm_proto::dsig::DataSig::native_sig());
    let esz = match (fmt, T::KIND) {
        (Format::Xdr, Kind::Byte) | (Format::Alien, Kind::Byte) => 1,
        (Format::Native, _) if std::mem::size_of::<T>() == T::RAW_SIZE => T::RAW_SIZE,
        _ => 0,
    };
    let n = cnt.max(0) as usize;
    let bytes = n.saturating_mul(esz);
    if esz == 0
        || stride != 1
        || bytes < crate::lazy::LAZY_MIN / 4
        || pos.saturating_add(bytes) > total
        || out.len() < n
    {
        // Whatever the ordinary path may look at: the items (at most 8 bytes each, strided or
        // not) and an XDR pad; all of it when the count is large or past the end.
        let need = pos.saturating_add(n.saturating_mul(8)).saturating_add(8);
        if !b.fill(need.min(total), false) && b.body().len() < need.min(total) {
            return Err(PvmError::NoData as i32);
        }
        return Ok(false);
    }
    // SAFETY: `out[..n]` is `n * esz` writable bytes (esz is the element size), and any bytes
    // are a valid value of every item type (plain numbers).
    let dst = unsafe { std::slice::from_raw_parts_mut(out.as_mut_ptr() as *mut u8, bytes) };
    let mut done = 0;
    if let Some((copied, threads)) = b.unpack_image_split(pos, dst) {
        crate::pcopy::trace(me, "pcopy-unpack", copied, threads);
        done = bytes;
    }
    while done < bytes {
        let have = b.body().len();
        if have <= pos + done && !b.fill(have + 1, true) {
            return Err(PvmError::NoData as i32);
        }
        let end = b.body().len().min(pos + bytes);
        dst[done..end - pos].copy_from_slice(&b.body().bytes()[pos + done..end]);
        done = end - pos;
    }
    let mut at = pos + bytes;
    if fmt == Format::Xdr {
        at = ((at + 3) & !3).min(total);
    }
    if !b.fill(at, false) {
        return Err(PvmError::NoData as i32);
    }
    b.pos = at;
    Ok(true)
}

fn unpack<T: Item>(out: &mut [T], cnt: c_int, stride: c_int) -> R {
    with_r(|l| {
        soft_enrol(l);
        let me = l.mytid;
        let b = l.rbuf_mut()?;
        if b.tail.is_some() && unpack_arriving(me, b, out, cnt, stride)? {
            return Ok(0);
        }
        let mut u = b.unpacker();
        if stride == 0 && cnt > 0 {
            // Every element lands on the same spot; the last one stays. Each element takes at
            // least one byte of the body, so a count beyond the bytes left must fail: unpacking
            // one more element than there are bytes gives the same error without allocating the
            // caller's count (a fuzzed pvm_upkbyte(p, INT_MAX, 0) asked for 2 GiB here).
            let want = cnt as usize;
            let mut tmp = vec![T::default(); want.min(u.remaining() + 1)];
            u.unpack(&mut tmp).map_err(|e| e.pvm_error() as i32)?;
            if tmp.len() < want {
                return Err(PvmError::NoData as i32);
            }
            out[0] = tmp[want - 1];
        } else {
            // What is there is taken and consumed before PvmNoData, as legacy does.
            let r = u.unpack_strided_partial(out, cnt as usize, stride as usize);
            let at = u.position();
            b.pos = at;
            return r.map(|()| 0).map_err(|e| e.pvm_error() as i32);
        }
        b.pos = u.position();
        Ok(0)
    })
}

macro_rules! pk_upk {
    ($pk:ident, $upk:ident, $ct:ty, $rt:ty, $kpk:ident, $kupk:ident) => {
        pvm_api!($pk(p: *mut $ct, cnt: c_int, stride: c_int) {
            tev::traced_cc(tev::kind::$kpk, |e, _| tev::pack_entry(e, p as *const c_void, cnt, stride), || {
                if cnt == 0 && !p.is_null() {
                    // SAFETY: a non-NULL pointer to at least one element (legacy reads it too).
                    let first = unsafe { *(p as *const $rt) };
                    with_r(|l| tev::user_marker(l, &first))?;
                }
                // SAFETY: the C caller passes an array of at least cnt elements at this stride.
                let d = unsafe { strided(p as *const $rt, cnt, stride) }?;
                pack(d, cnt, stride)
            })
        });
        pvm_api!($upk(p: *mut $ct, cnt: c_int, stride: c_int) {
            // Unpacks from buffers whose message is still arriving (lazy.rs).
            let _lazy = crate::lazy::LazyOk::set();
            tev::traced_cc(tev::kind::$kupk, |e, _| tev::pack_entry(e, p as *const c_void, cnt, stride), || {
                // SAFETY: as for packing.
                let d = unsafe { strided_mut(p as *mut $rt, cnt, stride) }?;
                unpack(d, cnt, stride)
            })
        });
    };
}

pk_upk!(pvm_pkbyte, pvm_upkbyte, c_char, u8, PKBYTE, UPKBYTE);
pk_upk!(pvm_pkshort, pvm_upkshort, c_short, i16, PKSHORT, UPKSHORT);
pk_upk!(pvm_pkushort, pvm_upkushort, c_ushort, u16, PKUSHORT, UPKUSHORT);
pk_upk!(pvm_pkint, pvm_upkint, c_int, i32, PKINT, UPKINT);
pk_upk!(pvm_pkuint, pvm_upkuint, c_uint, u32, PKUINT, UPKUINT);
pk_upk!(pvm_pklong, pvm_upklong, c_long, i64, PKLONG, UPKLONG);
pk_upk!(pvm_pkulong, pvm_upkulong, c_ulong, u64, PKULONG, UPKULONG);
pk_upk!(pvm_pkfloat, pvm_upkfloat, f32, f32, PKFLOAT, UPKFLOAT);
pk_upk!(pvm_pkdouble, pvm_upkdouble, f64, f64, PKDOUBLE, UPKDOUBLE);
pk_upk!(pvm_pkcplx, pvm_upkcplx, f32, [f32; 2], PKCPLX, UPKCPLX);
pk_upk!(pvm_pkdcplx, pvm_upkdcplx, f64, [f64; 2], PKDCPLX, UPKDCPLX);

pvm_api!(pvm_pkstr(s: *mut c_char) {
    tev::traced(tev::kind::PKSTR, true, |e, l| { let _ = (&e, &l); e.long(tev::did::PDA, s as i64); }, || -> R {
    // SAFETY: NULL is refused; otherwise a C string.
    let s = unsafe { cstr(s) }?;
    with_r(|l| {
        soft_enrol(l);
        if tev::is_user_buf(l) {
            // Legacy packs a string of a trace record as its bytes (no length, no NUL).
            let p = l.sbuf_packer()?;
            tev::user_annotate::<u8>(p, s.len() as c_int);
            p.pk_byte(s).map_err(|e| e.pvm_error() as i32)?;
            return Ok(0);
        }
        l.sbuf_packer()?.pk_str(s).map_err(|e| e.pvm_error() as i32)?;
        Ok(0)
    })
}, |e, _, cc| e.int(tev::did::CC, cc))
});

pvm_api!(pvm_upkstr(s: *mut c_char) {
    tev::traced(tev::kind::UPKSTR, true, |e, l| { let _ = (&e, &l); e.long(tev::did::PDA, s as i64); }, || -> R {
    nz(s)?;
    with_r(|l| {
        soft_enrol(l);
        let b = l.rbuf_mut()?;
        let mut u = b.unpacker();
        let v = u.up_str_raw().map_err(|e| e.pvm_error() as i32)?;
        b.pos = u.position();
        // SAFETY: the caller's buffer must hold the string, as with legacy.
        unsafe {
            std::ptr::copy_nonoverlapping(v.as_ptr(), s as *mut u8, v.len());
            if v.last() != Some(&0) {
                *s.add(v.len()) = 0;
            }
        }
        Ok(0)
    })
}, |e, _, cc| e.int(tev::did::CC, cc))
});

fn embedded(b: &Buf) -> EmbeddedMesg {
    let mut body = b.body().clone();
    body.set_enc(b.enc());
    EmbeddedMesg {
        ctx: b.ctx,
        tag: b.tag,
        wid: b.wid,
        crc: b.crc,
        src: b.src,
        dst: b.dst,
        body,
    }
}

pvm_api!(pvm_pkmesg(mid: c_int) {
    with_r(|l| {
        if mid <= 0 {
            return Err(E_BADPARAM);
        }
        let m = embedded(l.bufs.get(&mid).ok_or(E_NOSUCHBUF)?);
        l.sbuf_packer()?.pk_mesg(&m).map_err(|e| e.pvm_error() as i32)?;
        Ok(0)
    })
});

pvm_api!(pvm_pkmesgbody(mid: c_int) {
    with_r(|l| {
        if mid <= 0 {
            return Err(E_BADPARAM);
        }
        let body = l.bufs.get(&mid).ok_or(E_NOSUCHBUF)?.body().clone();
        let p = l.sbuf_packer()?;
        for f in body.fragments() {
            p.pk_int(&[f.len() as i32]).map_err(|e| e.pvm_error() as i32)?;
            p.pk_byte(f).map_err(|e| e.pvm_error() as i32)?;
        }
        Ok(0)
    })
});

pvm_api!(pvm_upkmesg() {
    with_r(|l| {
        let b = l.rbuf_mut()?;
        let mut u = b.unpacker();
        let m = u.up_mesg().map_err(|e| e.pvm_error() as i32)?;
        b.pos = u.position();
        Ok(new_from_embedded(l, m))
    })
});

fn new_from_embedded(l: &mut Lib, m: EmbeddedMesg) -> i32 {
    let id = l.new_buf(BufKind::Recv(m.body));
    if let Some(b) = l.bufs.get_mut(&id) {
        b.ctx = m.ctx;
        b.tag = m.tag;
        b.wid = m.wid;
        b.crc = m.crc;
        b.src = m.src;
        b.dst = m.dst;
    }
    id
}

// ---- sending and receiving ----------------------------------------------------------------

fn valid_dst(tid: c_int) -> bool {
    tid > 0 || ((tid as u32) & 0x8000_0000 != 0 && (tid as u32) & 0x4000_0000 == 0)
}

fn send_sbuf(l: &mut Lib, tid: c_int, tag: c_int, ctx: i32) -> R {
    if !l.bufs.contains_key(&l.sbuf) {
        return Err(E_NOBUF);
    }
    let me = l.mytid;
    crate::route::maybe_request(l, tid);
    // The buffer is lent out for the write (which only reads sockets into their input
    // buffers), not cloned: a 1 MB message is not copied again before it is sent.
    let sb = l.sbuf;
    let b = l.bufs.remove(&sb).ok_or(E_NOBUF)?;
    // The buffer's wait id goes out as the legacy library sends it (pvm_setminfo sets it; a
    // resource manager echoes a request's wid this way, and waits for its own on SM_EXEC).
    let wid = b.wid;
    let r = l.send_raw_enc(me, tid, tag, ctx, wid, b.enc(), b.body(), false);
    l.bufs.insert(sb, b);
    r?;
    Ok(0)
}

pvm_api!(pvm_send(tid: c_int, tag: c_int) {
    tev::traced(tev::kind::SEND, true, |e, l| { let _ = (&e, &l); e.int(tev::did::MNB, if l.sbuf > 0 { tev::bufinfo(l, l.sbuf).0 } else { -1 }); e.int(tev::did::DST, tid); e.int(tev::did::MC, tag); e.int(tev::did::MCX, cget!(pvmmyctx)); }, || -> R {
    enrolled()?;
    with_r(|l| {
        if tid == tev::PVM_TRACE_TID && tag == tev::PVM_TRACE_CODE {
            return tev::user_send(l);
        }
        if !valid_dst(tid) || (tag < 0 && l.resvtids == 0) {
            return Err(E_BADPARAM);
        }
        if l.sbuf == 0 || !l.bufs.contains_key(&l.sbuf) {
            return Err(E_NOBUF);
        }
        send_sbuf(l, tid, tag, ctx())
    })
}, |e, _, cc| e.int(tev::did::CC, cc))
});

/// Multicast of the current send buffer: TM_MCA with the other tids, then the message to the
/// one-shot multicast address `TIDGID | mytid`.
fn mcast(l: &mut Lib, tids: &[i32], tag: i32, ctx: i32, body: &MsgBody) -> Result<(), c_int> {
    let me = l.mytid;
    let mut v: Vec<i32> = tids.iter().copied().filter(|&t| t != me).collect();
    v.sort_unstable();
    v.dedup();
    if v.is_empty() {
        return Ok(());
    }
    let mut p = xdr();
    let _ = p.pk_int(&[v.len() as i32]);
    let _ = p.pk_int(&v);
    l.send_to_pvmd(TM_MCA, 0, 0, p.body())?;
    l.send_raw(me, TIDGID | me, tag, ctx, 0, body, true)
}

pvm_api!(pvm_mcast(tids: *mut c_int, count: c_int, tag: c_int) {
    tev::traced(tev::kind::MCAST, true, |e, l| { let _ = (&e, &l); e.int(tev::did::MNB, if l.sbuf > 0 { tev::bufinfo(l, l.sbuf).0 } else { -1 }); e.int(tev::did::MC, tag); e.int(tev::did::MCX, cget!(pvmmyctx)); let v = if tids.is_null() || count <= 0 { Vec::new() } else { unsafe { std::slice::from_raw_parts(tids, count as usize) }.to_vec() }; e.ints(tev::did::MDL, &v); }, || -> R {
    enrolled()?;
    if count < 0 {
        return Err(E_BADPARAM);
    }
    if count == 0 {
        return Ok(0);
    }
    // SAFETY: the caller passes count tids.
    let t = unsafe { strided(tids as *const i32, count, 1) }?.to_vec();
    with_r(|l| {
        if tag < 0 && l.resvtids == 0 {
            return Err(E_BADPARAM);
        }
        if t.iter().any(|&x| !valid_dst(x)) {
            return Err(E_BADPARAM);
        }
        let b = l.bufs.get(&l.sbuf).ok_or(E_NOBUF)?;
        let mut body = b.body().clone();
        body.set_enc(b.enc());
        mcast(l, &t, tag, ctx(), &body)?;
        Ok(0)
    })
}, |e, _, cc| e.int(tev::did::CC, cc))
});

/// Calls the message handlers of messages that arrived, with the lock released.
/// Packs the mhf_invoke record for message `id` handled by handler `h`; true if it was traced.
fn tev_mhf_invoke(l: &mut Lib, id: i32, h: i32) -> bool {
    let Some(m) = l.mhfs.iter().find(|m| m.id == h).map(|m| (m.src, m.tag, m.ctx)) else {
        return false;
    };
    let (nb, mc, src) = tev::bufinfo(l, id);
    let ctx = l.bufs.get(&id).map_or(-1, |b| b.ctx);
    let mut traced = false;
    tev::event(l, tev::kind::MHF_INVOKE, tev::ENTRY, |e, _| {
        traced = true;
        e.int(tev::did::RST, m.0);
        e.int(tev::did::RMC, m.1);
        e.int(tev::did::RCX, m.2);
        e.int(tev::did::MB, id);
        e.int(tev::did::MNB, nb);
        e.int(tev::did::MC, mc);
        e.int(tev::did::MCX, ctx);
        e.int(tev::did::SRC, src);
    });
    traced
}

pub fn run_handlers() -> Result<(), c_int> {
    loop {
        let next = with(|l| {
            l.pending_mhf.pop_front().map(|(id, f, h)| {
                let saved = (l.sbuf, l.rbuf);
                l.rbuf = id;
                // The mhf_invoke record: the handler's match fields, then the message's. Legacy
                // checks it outside any exclusive section, and then traces the handler's own
                // calls as top-level ones (TEV_PUSHTOP).
                let traced = tev_mhf_invoke(l, id, h);
                (id, f, saved, traced)
            })
        })?;
        let Some((id, f, saved, traced)) = next else {
            return Ok(());
        };
        let top = traced.then(tev::PushTop::push);
        if let Some(f) = f {
            let _user = crate::lazy::LazyOk::clear();
            // SAFETY: a handler the program registered with pvm_addmhf.
            unsafe { f(id) };
        }
        drop(top);
        with(|l| {
            l.sbuf = if l.bufs.contains_key(&saved.0) { saved.0 } else { 0 };
            l.rbuf = if l.bufs.contains_key(&saved.1) { saved.1 } else { 0 };
            if saved.1 != id {
                l.bufs.remove(&id);
            }
        })?;
    }
}

/// The receive loop shared by recv, nrecv, trecv and probe. `deadline` None blocks.
fn recv_common(tid: c_int, tag: c_int, deadline: Option<Instant>, take: bool) -> R {
    enrolled()?;
    let mut polled = false;
    loop {
        // Noted before looking: what is delivered from here on makes the wait below return.
        let seen = with(|l| l.delivered)?;
        run_handlers()?;
        let recvf = with(|l| l.recvf)?;
        let found = match recvf {
            Some(f) => {
                let ids: Vec<i32> = with(|l| l.rxq.iter().copied().collect())?;
                let mut best: Option<(i32, i32)> = None;
                for id in ids {
                    let _user = crate::lazy::LazyOk::clear();
                    // SAFETY: a matcher the program installed with pvm_recvf.
                    let r = unsafe { f(id, tid, tag) };
                    if r < 0 {
                        return Err(r);
                    }
                    if r == 1 {
                        best = Some((id, r));
                        break;
                    }
                    if r > 1 && best.map(|b| r > b.1).unwrap_or(true) {
                        best = Some((id, r));
                    }
                }
                best.map(|b| b.0)
            }
            None => with(|l| l.rxq.iter().copied().find(|&id| l.default_match(id, tid, tag)))?,
        };
        if let Some(id) = found {
            return with(|l| {
                let pos = l.rxq.iter().position(|&x| x == id).unwrap_or(0);
                if take {
                    l.take_rx(pos)
                } else {
                    id
                }
            });
        }
        let timeout = match deadline {
            None => None,
            Some(d) => {
                let now = Instant::now();
                if d <= now && polled {
                    return Ok(0);
                }
                Some(d.saturating_duration_since(now))
            }
        };
        polled = true;
        with_r(|l| l.pump_unless_news(seen, timeout))?;
    }
}

/// Legacy does not validate receive arguments: a tag below -1 simply never matches.
fn check_tag(_tid: c_int, _tag: c_int) -> Result<(), c_int> {
    Ok(())
}

pvm_api!(pvm_recv(tid: c_int, tag: c_int) {
    // Works on buffers whose message is still arriving (lazy.rs).
    let _lazy = crate::lazy::LazyOk::set();
    tev::traced(tev::kind::RECV, true, |e, l| { let _ = (&e, &l); tev::recv_entry(e, tid, tag); }, || -> R {
    check_tag(tid, tag)?;
    recv_common(tid, tag, None, true)
}, tev::recv_exit)
});

pvm_api!(pvm_nrecv(tid: c_int, tag: c_int) {
    // Works on buffers whose message is still arriving (lazy.rs).
    let _lazy = crate::lazy::LazyOk::set();
    tev::traced(tev::kind::NRECV, true, |e, l| { let _ = (&e, &l); tev::recv_entry(e, tid, tag); }, || -> R {
    check_tag(tid, tag)?;
    recv_common(tid, tag, Some(Instant::now()), true)
}, tev::recv_exit)
});

pvm_api!(pvm_probe(tid: c_int, tag: c_int) {
    // Works on buffers whose message is still arriving (lazy.rs).
    let _lazy = crate::lazy::LazyOk::set();
    tev::traced(tev::kind::PROBE, true, |e, l| { let _ = (&e, &l); tev::recv_entry(e, tid, tag); }, || -> R {
    check_tag(tid, tag)?;
    recv_common(tid, tag, Some(Instant::now()), false)
}, |e, _, cc| e.int(tev::did::CC, cc))
});

pvm_api!(pvm_trecv(tid: c_int, tag: c_int, tmout: *mut Timeval) {
    // Works on buffers whose message is still arriving (lazy.rs).
    let _lazy = crate::lazy::LazyOk::set();
    tev::traced(tev::kind::TRECV, true, |e, l| { let _ = (&e, &l); tev::recv_entry(e, tid, tag); let (ts, tu) = if tmout.is_null() { (-1, -1) } else { unsafe { ((*tmout).tv_sec as i32, (*tmout).tv_usec as i32) } }; e.int(tev::did::MTS, ts); e.int(tev::did::MTU, tu); }, || -> R {
    check_tag(tid, tag)?;
    let deadline = if tmout.is_null() {
        None
    } else {
        // SAFETY: non-NULL struct timeval from the caller.
        let t = unsafe { &*tmout };
        Some(deadline_of(t.tv_sec, t.tv_usec))
    };
    recv_common(tid, tag, deadline, true)
}, tev::recv_exit)
});

#[no_mangle]
pub unsafe extern "C" fn pvm_recvf(new: Option<RecvfFn>) -> Option<RecvfFn> {
    crate::core::guarded(None, || {
        let x = tev::Excl::take();
        if x.is_some() {
            tev::emit(tev::kind::RECVF, tev::ENTRY, true, |_, _| {});
        }
        let old = with(|l| std::mem::replace(&mut l.recvf, new)).unwrap_or(None);
        if x.is_some() {
            tev::emit(tev::kind::RECVF, tev::EXIT, true, |_, _| {});
        }
        old
    })
}

fn type_size(t: c_int) -> Result<usize, c_int> {
    Ok(match t {
        0 | 1 => 1,
        2 | 9 => 2,
        3 | 4 | 10 => 4,
        5 | 6 | 8 | 11 => 8,
        7 => 16,
        _ => return Err(E_BADPARAM),
    })
}

pvm_api!(pvm_psend(tid: c_int, tag: c_int, buf: *mut c_void, len: c_int, dtype: c_int) {
    tev::traced(tev::kind::PSEND, true, |e, l| { let _ = (&e, &l); e.int(tev::did::DST, tid); e.int(tev::did::MC, tag); e.int(tev::did::MCX, cget!(pvmmyctx)); e.long(tev::did::PDA, buf as i64); e.int(tev::did::PC, len); e.int(tev::did::PDT, dtype); }, || -> R {
    enrolled()?;
    let sz = type_size(dtype)?;
    let data = if len < 0 {
        // Legacy packs the bytes with pvm_pkbyte, which refuses a negative count (and says
        // so), and then sends the empty message all the same.
        lpvmerr("pvm_pkbyte", E_BADPARAM);
        Vec::new()
    } else {
        // SAFETY: the caller passes len items of the given type.
        unsafe { strided(buf as *const u8, len * sz as c_int, 1) }?.to_vec()
    };
    with_r(|l| {
        if !valid_dst(tid) || (tag < 0 && l.resvtids == 0) {
            return Err(E_BADPARAM);
        }
        let mut p = l.packer(Encoding::Raw);
        p.pk_byte(&data).map_err(|e| e.pvm_error() as i32)?;
        let me = l.mytid;
        crate::route::maybe_request(l, tid);
        l.send_raw(me, tid, tag, ctx(), 0, p.body(), false)?;
        Ok(0)
    })
}, |e, _, cc| e.int(tev::did::CC, cc))
});

#[no_mangle]
pub unsafe extern "C" fn pvm_precv(
    tid: c_int,
    tag: c_int,
    buf: *mut c_void,
    len: c_int,
    dtype: c_int,
    rtid: *mut c_int,
    rtag: *mut c_int,
    rlen: *mut c_int,
) -> c_int {
    // What the exit record reports of the received message: length, tag, source.
    let got = std::cell::Cell::new((-1, -1, -1));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| -> R {
        tev::traced(
            tev::kind::PRECV,
            true,
            |e, _| {
                tev::recv_entry(e, tid, tag);
                e.long(tev::did::PDA, buf as i64);
                e.int(tev::did::PC, len);
                e.int(tev::did::PDT, dtype);
            },
            || precv_body(tid, tag, buf, len, dtype, rtid, rtag, rlen, &got),
            |e, _, cc| {
                let (nb, mc, src) = if cc < 0 { (-1, -1, -1) } else { got.get() };
                e.int(tev::did::CC, cc);
                e.int(tev::did::MNB, nb);
                e.int(tev::did::MC, mc);
                e.int(tev::did::MCX, cget!(pvmmyctx));
                e.int(tev::did::SRC, src);
            },
        )
    }));
    match r {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => lpvmerr("pvm_precv", e),
        Err(_) => lpvmerr("pvm_precv", E_SYSERR),
    }
}

#[allow(clippy::too_many_arguments)]
fn precv_body(
    tid: c_int,
    tag: c_int,
    buf: *mut c_void,
    len: c_int,
    dtype: c_int,
    rtid: *mut c_int,
    rtag: *mut c_int,
    rlen: *mut c_int,
    got: &std::cell::Cell<(i32, i32, i32)>,
) -> R {
    {
        let sz = type_size(dtype)?;
        check_tag(tid, tag)?;
        let id = recv_common(tid, tag, None, true)?;
        with_r(|l| {
            let b = l.bufs.get_mut(&id).ok_or(E_NOSUCHBUF)?;
            got.set((b.body().len() as i32, b.tag, b.src));
            let bytes = b.body().bytes();
            let n = bytes.len().min(len.max(0) as usize * sz);
            if n > 0 {
                nz(buf)?;
                // SAFETY: buf holds len items of the type, n <= len * size.
                unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), buf as *mut u8, n) };
            }
            // SAFETY: optional out pointers.
            unsafe {
                if !rtid.is_null() {
                    *rtid = b.src;
                }
                if !rtag.is_null() {
                    *rtag = b.tag;
                }
                if !rlen.is_null() {
                    // Legacy reports the length in bytes, not items.
                    *rlen = bytes.len() as c_int;
                }
            }
            b.pos = n;
            Ok(0)
        })
    }
}

// ---- message handlers and contexts -----------------------------------------------------------

pvm_api!(pvm_addmhf(src: c_int, tag: c_int, ctx: c_int, f: Option<MhfFn>) {
    tev::traced(tev::kind::ADDMHF, true, |e, l| { let _ = (&e, &l); e.int(tev::did::RST, src); e.int(tev::did::RMC, tag); e.int(tev::did::RCX, ctx); }, || -> R {
    // Legacy accepts a NULL function (and would crash calling it); we never call it.
    with(|l| {
        let id = l.next_mhf;
        l.next_mhf += 1;
        l.mhfs.insert(0, crate::core::Mhf { id, src, tag, ctx, f });
        id
    })
}, |e, l, cc| { let _ = &l; e.int(tev::did::MHI, cc); })
});

#[no_mangle]
pub unsafe extern "C" fn pvm_delmhf(id: c_int) -> c_int {
    crate::core::guarded(E_SYSERR, || {
        let Some(x) = tev::Excl::take() else {
            return delmhf(id);
        };
        tev::emit(tev::kind::DELMHF, tev::ENTRY, true, |e, _| e.int(tev::did::MHI, id));
        // The exit record carries the code before lpvmerr reports it, as in legacy.
        let cc = delmhf_traced(id);
        tev::emit(tev::kind::DELMHF, tev::EXIT, true, |e, _| e.int(tev::did::CC, cc.0));
        drop(x);
        cc.1()
    })
}

/// Runs delmhf's checks, returning its code and the reporting step to run after the exit record.
fn delmhf_traced(id: c_int) -> (c_int, Box<dyn FnOnce() -> c_int>) {
    let r = with(|l| {
        if id < 0 {
            return Err(("pvm_delmhf", E_BADPARAM));
        }
        let n = l.mhfs.len();
        l.mhfs.retain(|h| h.id != id);
        if l.mhfs.len() < n {
            return Ok(0);
        }
        // Legacy's message names the check that failed.
        let name = if id >= l.next_mhf {
            "(mhid >= ndhandles) pvm_delmhf"
        } else {
            "pvm_delmhf"
        };
        Err((name, PvmError::NotFound as i32))
    });
    match r {
        Ok(Ok(v)) => (v, Box::new(move || v)),
        Ok(Err((name, e))) => (e, Box::new(move || lpvmerr(name, e))),
        Err(e) => (e, Box::new(move || lpvmerr("pvm_delmhf", e))),
    }
}

fn delmhf(id: c_int) -> c_int {
    delmhf_traced(id).1()
}

pvm_api!(pvm_newcontext() {
    tev::traced(tev::kind::NEWCONTEXT, true, |e, l| { let _ = (&e, &l);  }, || -> R {
    enrolled()?;
    with_r(|l| {
        let mut p = xdr();
        let _ = p.pk_int(&[0]);
        let r = l.msendrecv(TIDPVMD, TM_CONTEXT, SYSCTX_TM, p.body())?;
        let b = reply_unpacker(&r);
        int(&mut b.unpacker())
    })
}, |e, l, cc| { let _ = &l; e.int(tev::did::CXN, cc); })
});

pvm_api!(pvm_freecontext(c: c_int) {
    tev::traced(tev::kind::FREECONTEXT, true, |e, l| { let _ = (&e, &l); e.int(tev::did::CXF, c); }, || -> R {
    enrolled()?;
    with_r(|l| {
        let mut p = xdr();
        let _ = p.pk_int(&[c]);
        let r = l.msendrecv(TIDPVMD, TM_CONTEXT, SYSCTX_TM, p.body())?;
        let b = reply_unpacker(&r);
        let v = int(&mut b.unpacker())?;
        if v < 0 {
            Err(v)
        } else {
            Ok(0)
        }
    })
}, |e, _, cc| e.int(tev::did::CC, cc))
});

pvm_api!(pvm_setcontext(c: c_int) {
    tev::traced(tev::kind::SETCONTEXT, true, |e, l| { let _ = (&e, &l); e.int(tev::did::CXS, c); }, || -> R {
    let old = ctx();
    cset!(pvmmyctx, c);
    Ok(old)
}, |e, _, cc| e.int(tev::did::CC, cc))
});

pvm_api!(pvm_getcontext() {
    tev::traced(tev::kind::GETCONTEXT, true, |e, l| { let _ = (&e, &l);  }, || -> R { Ok(ctx()) }, |e, l, cc| { let _ = &l; e.int(tev::did::CXC, cc); })
});

// ---- daemon requests -----------------------------------------------------------------------

fn request(tag: i32, p: &Packer) -> Result<MsgBody, c_int> {
    enrolled()?;
    with_r(|l| l.request(tag, p.body()))
}

/// The environment legacy pvm_spawn passes: tracing settings, context, and PVM_EXPORT names.
fn spawn_env(l: &Lib) -> Vec<String> {
    let mut env = vec![
        format!("PVMTMASK={}", l.ctrc.tmask),
        format!("PVMTRCBUF={}", l.ctrc.trcbuf),
        format!("PVMTRCOPT={}", l.ctrc.trcopt),
        format!("PVMCTX=0x{:x}", ctx()),
    ];
    if let Ok(ex) = std::env::var("PVM_EXPORT") {
        env.push(format!("PVM_EXPORT={ex}"));
        for name in ex.split(':').filter(|s| !s.is_empty() && *s != "PVM_EXPORT") {
            if let Ok(v) = std::env::var(name) {
                env.push(format!("{name}={v}"));
            }
        }
    }
    env
}

pvm_api!(pvm_spawn(file: *mut c_char, argv: *mut *mut c_char, flag: c_int, whr: *mut c_char, count: c_int, tids: *mut c_int) {
    tev::traced(tev::kind::SPAWN, true, |e, l| { let _ = (&e, &l); e.str(tev::did::SE, &unsafe { tev::cstr_or_empty(file) }); e.str(tev::did::SW, &unsafe { tev::cstr_or_empty(whr) }); e.int(tev::did::SF, flag | std::env::var("PVMTASK").map(|v| crate::core::strtoi(&v)).unwrap_or(0)); e.int(tev::did::SC, count); }, || -> R {
    // SAFETY: C strings from the caller (NULL refused for file, allowed for where).
    let file = unsafe { cstr(file) }?.to_vec();
    let whr = if whr.is_null() { Vec::new() } else { unsafe { cstr(whr) }?.to_vec() };
    if count < 1 {
        return Err(E_BADPARAM);
    }
    let mut args: Vec<Vec<u8>> = Vec::new();
    if !argv.is_null() {
        let mut i = 0;
        // SAFETY: argv is a NULL-terminated array of C strings.
        unsafe {
            while !(*argv.add(i)).is_null() {
                args.push(cstr(*argv.add(i))?.to_vec());
                i += 1;
            }
        }
    }
    enrolled()?;
    let (cc, list) = with_r(|l| {
        let env = spawn_env(l);
        let mut p = xdr();
        let e = |_| E_SYSERR;
        p.pk_str(&file).map_err(e)?;
        p.pk_int(&[flag]).map_err(e)?;
        p.pk_str(&whr).map_err(e)?;
        p.pk_int(&[count, args.len() as i32]).map_err(e)?;
        for a in &args {
            p.pk_str(a).map_err(e)?;
        }
        let c = &l.ctrc;
        p.pk_int(&[c.outtid, c.outctx, c.outtag, c.trctid, c.trcctx, c.trctag]).map_err(e)?;
        p.pk_int(&[env.len() as i32]).map_err(e)?;
        for s in &env {
            p.pk_str(s.as_bytes()).map_err(e)?;
        }
        let b = l.request(TM_SPAWN, p.body())?;
        let mut u = b.unpacker();
        let cc = int(&mut u)?;
        if cc != count {
            return Ok((cc.min(-1).max(cc), Vec::new()));
        }
        let mut v = vec![0i32; cc as usize];
        u.up_int(&mut v).map_err(|_| PvmError::BadMsg as i32)?;
        // Good tids first, errors after, each group in order (legacy bubble()).
        let mut list: Vec<i32> = v.iter().copied().filter(|&t| t >= 0).collect();
        let good = list.len() as i32;
        list.extend(v.iter().copied().filter(|&t| t < 0));
        if good > 0 {
            let mut s = xdr();
            let _ = s.pk_int(&[good]);
            let _ = s.pk_int(&list[..good as usize]);
            let body = s.into_body();
            mcast(l, &list[..good as usize], TC_SIBLINGS, SYSCTX_TC, &body)?;
        }
        Ok((good, list))
    })?;
    if cc < 0 {
        return Err(cc);
    }
    if !tids.is_null() {
        for (i, t) in list.iter().enumerate() {
            // SAFETY: the caller's array holds count entries; list has count entries.
            unsafe { *tids.add(i) = *t };
        }
    }
    Ok(cc)
}, |e, l, cc| { let _ = &l; e.int(tev::did::CC, cc); let v = if tids.is_null() || cc <= 0 { Vec::new() } else { unsafe { std::slice::from_raw_parts(tids, cc as usize) }.to_vec() }; e.ints(tev::did::STL, &v); })
});

pvm_api!(pvm_sendsig(tid: c_int, sig: c_int) {
    tev::traced(tev::kind::SENDSIG, true, |e, l| { let _ = (&e, &l); e.int(tev::did::TT, tid); e.int(tev::did::SN, sig); }, || -> R {
    if tid <= 0 && !valid_dst(tid) {
        return Err(E_BADPARAM);
    }
    let mut p = xdr();
    let _ = p.pk_int(&[tid, sig]);
    request(TM_SENDSIG, &p)?;
    Ok(0)
}, |e, _, cc| e.int(tev::did::CC, cc))
});

pvm_api!(pvm_kill(tid: c_int) {
    tev::traced(tev::kind::KILL, true, |e, l| { let _ = (&e, &l); e.int(tev::did::TT, tid); }, || -> R {
    if tid <= 0 && !valid_dst(tid) {
        return Err(E_BADPARAM);
    }
    let mut p = xdr();
    let _ = p.pk_int(&[tid, libc::SIGTERM]);
    request(TM_SENDSIG, &p)?;
    Ok(0)
}, |e, _, cc| e.int(tev::did::CC, cc))
});

pvm_api!(pvm_notify(what: c_int, tag: c_int, cnt: c_int, tids: *mut c_int) {
    tev::traced(tev::kind::NOTIFY, true, |e, l| { let _ = (&e, &l); e.int(tev::did::NE, what); e.int(tev::did::NMC, tag); let n = if what != 3 && cnt > 0 && !tids.is_null() { cnt as usize } else { 0 }; let v = if n == 0 { Vec::new() } else { unsafe { std::slice::from_raw_parts(tids, n) }.to_vec() }; e.ints(tev::did::NTL, &v); }, || -> R {
    enrolled()?;
    // Legacy's checks, in its order: the tag, then per kind the count (at least one tid for
    // TaskExit, HostDelete, RouteDelete) and that task-exit and route-delete ids are task ids.
    if tag < 0 && with(|l| l.resvtids)? == 0 {
        return Err(E_BADPARAM);
    }
    let kind = what & !pvm_proto::codes::PVM_NOTIFY_CANCEL;
    if !(1..=5).contains(&kind) {
        return Err(E_BADPARAM);
    }
    let list: Vec<i32> = if kind == 3 {
        Vec::new()
    } else {
        if cnt < i32::from(kind != 4) {
            return Err(E_BADPARAM);
        }
        // SAFETY: the caller passes cnt tids.
        unsafe { strided(tids as *const i32, cnt, 1) }?.to_vec()
    };
    if (kind == 1 || kind == 5) && list.iter().any(|&t| !pvm_proto::Tid(t).is_task()) {
        return Err(E_BADPARAM);
    }
    with_r(|l| {
        let mut p = xdr();
        let _ = p.pk_int(&[what, ctx(), tag, cnt]);
        if kind != 3 {
            let _ = p.pk_int(&list);
        }
        if kind == 1 && list.contains(&l.mytid) {
            l.notify_own_exit = what & pvm_proto::codes::PVM_NOTIFY_CANCEL == 0;
        }
        if l.schedtid != 0 {
            // With a resource manager, notify requests go to it (SM_NOTIFY, base context).
            let (me, rm) = (l.mytid, l.schedtid);
            l.send_raw(me, rm, crate::core::SM_NOTIFY, 0, 0, p.body(), false)?;
        } else {
            l.send_to_pvmd(TM_NOTIFY, ctx(), 0, p.body())?;
        }
        Ok(0)
    })
}, |e, _, cc| e.int(tev::did::CC, cc))
});

pvm_api!(pvm_config(nhostp: *mut c_int, narchp: *mut c_int, hostp: *mut *mut PvmHostInfo) {
    tev::traced(tev::kind::CONFIG, true, |e, l| { let _ = (&e, &l);  }, || -> R {
    let b = request(TM_CONFIG, &xdr())?;
    let mut u = b.unpacker();
    let nh = int(&mut u)?;
    let na = int(&mut u)?;
    if nh < 0 || nh as usize > b.len() {
        return Err(PvmError::BadMsg as i32);
    }
    with_r(|l| {
        l.tev.narch = na;
        l.keep_hosts.clear();
        l.keep_strings.clear();
        for _ in 0..nh {
            let tid = int(&mut u)?;
            let name = u.up_str().map_err(|_| PvmError::BadMsg as i32)?;
            let arch = u.up_str().map_err(|_| PvmError::BadMsg as i32)?;
            let speed = int(&mut u)?;
            let dsig = int(&mut u)?;
            let n = keep(&mut l.keep_strings, &name);
            let a = keep(&mut l.keep_strings, &arch);
            l.keep_hosts.push(PvmHostInfo { hi_tid: tid, hi_name: n, hi_arch: a, hi_speed: speed, hi_dsig: dsig });
        }
        // SAFETY: optional out pointers.
        unsafe {
            if !nhostp.is_null() {
                *nhostp = nh;
            }
            if !narchp.is_null() {
                *narchp = na;
            }
            l.tev.narch = na;
            if !hostp.is_null() {
                *hostp = l.keep_hosts.as_mut_ptr();
            }
        }
        Ok(0)
    })
}, |e, l, cc| { let _ = &l; e.int(tev::did::NH, l.keep_hosts.len() as i32); e.int(tev::did::NA, l.tev.narch); e.int(tev::did::CC, cc); })
});

pvm_api!(pvm_tasks(whr: c_int, ntaskp: *mut c_int, taskp: *mut *mut PvmTaskInfo) {
    tev::traced(tev::kind::TASKS, true, |e, l| { let _ = (&e, &l); e.int(tev::did::TW, whr); }, || -> R {
    let mut p = xdr();
    let _ = p.pk_int(&[whr]);
    let b = request(TM_TASK, &p)?;
    let mut u = b.unpacker();
    let cc = int(&mut u)?;
    if cc < 0 {
        return Err(cc);
    }
    with_r(|l| {
        l.keep_tasks.clear();
        l.keep_task_strings.clear();
        while u.remaining() > 0 {
            let mut a = [0i32; 4];
            u.up_int(&mut a).map_err(|_| PvmError::BadMsg as i32)?;
            let aout = u.up_str().map_err(|_| PvmError::BadMsg as i32)?;
            let pid = int(&mut u)?;
            let s = keep(&mut l.keep_task_strings, &aout);
            l.keep_tasks.push(PvmTaskInfo {
                ti_tid: a[0],
                ti_ptid: a[1],
                ti_host: a[2],
                ti_flag: a[3],
                ti_a_out: s,
                ti_pid: pid,
            });
        }
        // Legacy reads entries until unpacking fails, which leaves PvmNoData in pvm_errno.
        cset!(pvm_errno, PvmError::NoData as i32);
        // SAFETY: optional out pointers.
        unsafe {
            if !ntaskp.is_null() {
                *ntaskp = l.keep_tasks.len() as c_int;
            }
            if !taskp.is_null() {
                *taskp = l.keep_tasks.as_mut_ptr();
            }
        }
        Ok(0)
    })
}, |e, l, cc| { let _ = &l; e.int(tev::did::CC, cc); e.int(tev::did::TNT, l.keep_tasks.len() as i32); })
});

pvm_api!(pvm_mstat(host: *mut c_char) silent [PvmError::NoHost as i32, PvmError::HostFail as i32] {
    tev::traced(tev::kind::MSTAT, true, |e, l| { let _ = (&e, &l); e.str(tev::did::HN, &unsafe { tev::cstr_or_empty(host) }); }, || -> R {
    // SAFETY: C string.
    let h = unsafe { cstr(host) }?;
    let mut p = xdr();
    let _ = p.pk_str(h);
    let b = request(TM_MSTAT, &p)?;
    int(&mut b.unpacker())
}, |e, l, cc| { let _ = &l; e.int(tev::did::HS, cc); })
});

pvm_api!(pvm_pstat(tid: c_int) silent [PvmError::NoTask as i32, PvmError::HostFail as i32] {
    tev::traced(tev::kind::PSTAT, true, |e, l| { let _ = (&e, &l); e.int(tev::did::TT, tid); }, || -> R {
    let mut p = xdr();
    let _ = p.pk_int(&[tid]);
    let b = request(TM_PSTAT, &p)?;
    int(&mut b.unpacker())
}, |e, l, cc| { let _ = &l; e.int(tev::did::TST, cc); })
});

/// Copies host names from a C array.
///
/// # Safety
/// `names` must hold `count` C strings.
unsafe fn names(names: *mut *mut c_char, count: c_int) -> Result<Vec<Vec<u8>>, c_int> {
    if count < 1 {
        return Err(E_BADPARAM);
    }
    nz(names)?;
    let mut v = Vec::new();
    for i in 0..count as usize {
        // SAFETY: per the function contract.
        v.push(unsafe { cstr(*names.add(i)) }?.to_vec());
    }
    Ok(v)
}

pvm_api!(pvm_addhosts(hosts: *mut *mut c_char, count: c_int, infos: *mut c_int) {
    tev::traced(tev::kind::ADDHOSTS, true, |e, l| { let _ = (&e, &l); e.strs(tev::did::HNL, &unsafe { tev::cstrs(hosts as *const *const c_char, count) }); }, || -> R {
    // SAFETY: count C strings.
    let n = unsafe { names(hosts, count) }?;
    let mut p = xdr();
    let _ = p.pk_int(&[count]);
    for h in &n {
        let _ = p.pk_str(h);
    }
    let b = request(TM_ADDHOST, &p)?;
    let mut u = b.unpacker();
    let cc = int(&mut u)?;
    if cc < 0 {
        return Err(cc);
    }
    let _narch = int(&mut u)?;
    let mut good = 0;
    for i in 0..cc.min(count) as usize {
        let t = int(&mut u)?;
        let _ = u.up_str();
        let _ = u.up_str();
        let _ = int(&mut u);
        let _ = int(&mut u);
        if t >= 0 {
            good += 1;
        }
        if !infos.is_null() {
            // SAFETY: infos holds count entries.
            unsafe { *infos.add(i) = t };
        }
    }
    Ok(good)
}, |e, _, cc| e.int(tev::did::CC, cc))
});

pvm_api!(pvm_delhosts(hosts: *mut *mut c_char, count: c_int, infos: *mut c_int) {
    tev::traced(tev::kind::DELHOSTS, true, |e, l| { let _ = (&e, &l); e.strs(tev::did::HNL, &unsafe { tev::cstrs(hosts as *const *const c_char, count) }); }, || -> R {
    // SAFETY: count C strings.
    let n = unsafe { names(hosts, count) }?;
    let mut p = xdr();
    let _ = p.pk_int(&[count]);
    for h in &n {
        let _ = p.pk_str(h);
    }
    let b = request(TM_DELHOST, &p)?;
    let mut u = b.unpacker();
    let cc = int(&mut u)?;
    if cc < 0 {
        return Err(cc);
    }
    let mut good = 0;
    for i in 0..cc.min(count) as usize {
        let s = int(&mut u)?;
        if s >= 0 {
            good += 1;
        }
        if !infos.is_null() {
            // SAFETY: infos holds count entries.
            unsafe { *infos.add(i) = s };
        }
    }
    Ok(good)
}, |e, _, cc| e.int(tev::did::CC, cc))
});

pvm_api!(pvm_halt() {
    tev::traced(tev::kind::HALT, true, |e, l| { let _ = (&e, &l);  }, || -> R {
    enrolled()?;
    with_r(|l| {
        l.closing = true;
        l.send_to_pvmd(TM_HALT, SYSCTX_TM, 0, xdr().body())?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !l.lost && Instant::now() < deadline {
            if l.pump(Some(deadline.saturating_duration_since(Instant::now()))).is_err() {
                break;
            }
        }
        let keep = cget!(pvmautoerr);
        *l = Lib::default();
        cset!(pvmmytid, -1);
        cset!(pvmautoerr, keep);
        Ok(0)
    })
}, |_, _, _| {})
});

pvm_api!(pvm_tickle(narg: c_int, argp: *mut c_int, nresp: *mut c_int, resp: *mut c_int) {
    tev::traced(tev::kind::TICKLE, true, |e, l| { let _ = (&e, &l); let v = if argp.is_null() || narg <= 0 { Vec::new() } else { unsafe { std::slice::from_raw_parts(argp, narg.min(64) as usize) }.to_vec() }; e.ints(tev::did::TA, &v); }, || -> R {
    // SAFETY: narg ints.
    let a = unsafe { strided(argp as *const i32, narg, 1) }?.to_vec();
    let mut p = xdr();
    let _ = p.pk_int(&[narg]);
    let _ = p.pk_int(&a);
    let b = request(TM_TICKLE, &p)?;
    let mut u = b.unpacker();
    let n = int(&mut u)?;
    for i in 0..n.max(0) as usize {
        let v = int(&mut u)?;
        if !resp.is_null() {
            // SAFETY: the caller's result array (legacy: up to 10 entries).
            unsafe { *resp.add(i) = v };
        }
    }
    if !nresp.is_null() {
        // SAFETY: optional out pointer.
        unsafe { *nresp = n };
    }
    Ok(0)
}, |e, l, cc| { let _ = &l; e.int(tev::did::CC, cc); let n = if resp.is_null() || nresp.is_null() || cc < 0 { 0 } else { unsafe { *nresp }.clamp(0, 64) as usize }; let v = if n == 0 { Vec::new() } else { unsafe { std::slice::from_raw_parts(resp, n) }.to_vec() }; e.ints(tev::did::TR, &v); })
});

pvm_api!(pvm_hostsync(host: c_int, clk: *mut Timeval, delta: *mut Timeval) {
    let mut p = xdr();
    let _ = p.pk_int(&[host]);
    let t0 = now_us();
    let b = request(TM_HOSTSYNC, &p)?;
    let t1 = now_us();
    let mut u = b.unpacker();
    let st = int(&mut u)?;
    if st < 0 {
        return Err(st);
    }
    let sec = int(&mut u)? as i64;
    let usec = int(&mut u)? as i64;
    let remote = sec * 1_000_000 + usec;
    let d = remote - (t0 + t1) / 2;
    // SAFETY: optional out pointers.
    unsafe {
        if !clk.is_null() {
            (*clk).tv_sec = sec as c_long;
            (*clk).tv_usec = usec as c_long;
        }
        if !delta.is_null() {
            (*delta).tv_sec = d.div_euclid(1_000_000) as c_long;
            (*delta).tv_usec = d.rem_euclid(1_000_000) as c_long;
        }
    }
    Ok(0)
});

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

pvm_api!(pvm_archcode(arch: *mut c_char) {
    tev::traced(tev::kind::ARCHCODE, true, |e, l| { let _ = (&e, &l); e.str(tev::did::AN, &unsafe { tev::cstr_or_empty(arch) }); }, || -> R {
    // SAFETY: C string.
    let a = unsafe { cstr(arch) }?.to_vec();
    let b = request(TM_CONFIG, &xdr())?;
    let mut u = b.unpacker();
    let nh = int(&mut u)?;
    let _ = int(&mut u)?;
    for _ in 0..nh.max(0) {
        let _ = int(&mut u)?;
        let _ = u.up_str();
        let ar = u.up_str().map_err(|_| PvmError::BadMsg as i32)?;
        let _ = int(&mut u)?;
        let dsig = int(&mut u)?;
        if ar == a {
            return Ok(dsig);
        }
    }
    Err(PvmError::NotFound as i32)
}, |e, l, cc| { let _ = &l; e.int(tev::did::AC, cc); })
});

pvm_api!(pvm_getfds(fds: *mut *mut c_int) {
    tev::traced(tev::kind::GETFDS, true, |e, l| { let _ = (&e, &l);  }, || -> R {
    nz(fds)?;
    enrolled()?;
    with(|l| {
        l.keep_fds.clear();
        if let Some(p) = &l.pvmd {
            l.keep_fds.push(p.sock.fd());
        }
        for r in l.routes.values() {
            if let crate::core::RouteState::Open(s) = r {
                l.keep_fds.push(s.sock.fd());
            }
        }
        // SAFETY: checked non-NULL.
        unsafe { *fds = l.keep_fds.as_mut_ptr() };
        l.keep_fds.len() as c_int
    })
}, |e, l, cc| { let _ = &l; let v = if cc > 0 { l.keep_fds.clone() } else { Vec::new() }; e.ints(tev::did::FDS, &v); })
});

// ---- options --------------------------------------------------------------------------------

pvm_api!(pvm_getopt(what: c_int) {
    tev::traced(tev::kind::GETOPT, false, |e, l| { let _ = (&e, &l); e.int(tev::did::OPT, what); }, || -> R {
    with_r(|l| {
        Ok(match what {
            1 => cget!(pvmrouteopt),
            2 => cget!(pvmdebmask),
            3 => cget!(pvmautoerr),
            4 => l.ctrc.outtid,
            5 => l.ctrc.outtag,
            6 => l.ctrc.trctid,
            7 => l.ctrc.trctag,
            8 => l.ctrc.trcbuf,
            9 => l.ctrc.trcopt,
            10 => l.frag_size as c_int,
            11 => l.resvtids,
            12 => l.trc.outtid,
            13 => l.trc.outtag,
            14 => l.trc.trctid,
            15 => l.trc.trctag,
            16 => l.trc.trcbuf,
            17 => l.trc.trcopt,
            18 => cget!(pvmshowtaskid),
            // Only shared-memory builds of legacy have these; the Linux one refuses them.
            19 | 20 => return Err(E_BADPARAM),
            21 => l.ctrc.outctx,
            22 => l.ctrc.trcctx,
            23 => l.trc.outctx,
            24 => l.trc.trcctx,
            25 => l.noreset,
            _ => return Err(E_BADPARAM),
        })
    })
}, |e, l, cc| { let _ = &l; e.int(tev::did::OPV, if cc == E_BADPARAM { 0 } else { cc }); })
});

/// Tells the pvmd about our own output/trace destination (TM_SETOPT).
fn setopt_pvmd(l: &mut Lib, what: i32, val: i32) -> Result<(), c_int> {
    if !l.enrolled() {
        return Ok(());
    }
    let mut p = xdr();
    let _ = p.pk_int(&[what]);
    let s = if matches!(what, 1 | 4) {
        format!("{val:x}")
    } else {
        format!("{val}")
    };
    let _ = p.pk_str(s.as_bytes());
    l.msendrecv(TIDPVMD, TM_SETOPT, SYSCTX_TM, p.body())?;
    Ok(())
}

pvm_api!(pvm_setopt(what: c_int, val: c_int) {
    tev::traced(tev::kind::SETOPT, false, |e, l| { let _ = (&e, &l); e.int(tev::did::OPT, what); e.int(tev::did::OPV, val); }, || -> R {
    with_r(|l| {
        let me = l.mytid;
        // The checks and answers of the legacy library, option by option.
        let old = match what {
            1 => {
                if !(1..=3).contains(&val) {
                    return Err(E_BADPARAM);
                }
                let old = cget!(pvmrouteopt);
                cset!(pvmrouteopt, val);
                old
            }
            2 => {
                let old = cget!(pvmdebmask);
                cset!(pvmdebmask, val);
                old
            }
            3 => {
                let old = cget!(pvmautoerr);
                cset!(pvmautoerr, val);
                old
            }
            // Children's output and trace destinations (`dest_ok`, `locked_ok`).
            4 => {
                if !dest_ok(val, me, l.trc.outtid, l.ctrc.outtag == l.trc.outtag) {
                    return Err(E_BADPARAM);
                }
                std::mem::replace(&mut l.ctrc.outtid, val)
            }
            21 => {
                if !locked_ok(l.ctrc.outtid, me, val == l.trc.outctx) {
                    return Err(E_BADPARAM);
                }
                std::mem::replace(&mut l.ctrc.outctx, val)
            }
            5 => {
                if !locked_ok(l.ctrc.outtid, me, val == l.trc.outtag) {
                    return Err(E_BADPARAM);
                }
                std::mem::replace(&mut l.ctrc.outtag, val)
            }
            6 => {
                if !dest_ok(val, me, l.trc.trctid, l.ctrc.trctag == l.trc.trctag) {
                    return Err(E_BADPARAM);
                }
                std::mem::replace(&mut l.ctrc.trctid, val)
            }
            22 => {
                if !locked_ok(l.ctrc.trctid, me, val == l.trc.trcctx) {
                    return Err(E_BADPARAM);
                }
                std::mem::replace(&mut l.ctrc.trcctx, val)
            }
            7 => {
                if !locked_ok(l.ctrc.trctid, me, val == l.trc.trctag) {
                    return Err(E_BADPARAM);
                }
                std::mem::replace(&mut l.ctrc.trctag, val)
            }
            8 => std::mem::replace(&mut l.ctrc.trcbuf, val),
            9 => {
                if !(1..=3).contains(&val) {
                    return Err(E_BADPARAM);
                }
                std::mem::replace(&mut l.ctrc.trcopt, val)
            }
            10 => {
                if !(pvm_proto::encoding::MIN_FRAG_SIZE as c_int..=pvm_proto::encoding::MAX_FRAG_SIZE as c_int)
                    .contains(&val)
                {
                    return Err(E_BADPARAM);
                }
                let old = l.frag_size as c_int;
                l.frag_size = val as usize;
                cset!(pvmfrgsiz, val);
                old
            }
            11 => std::mem::replace(&mut l.resvtids, val),
            12 => {
                if l.trc.outtid > 0 || val > 0 {
                    l.beatask()?;
                    setopt_pvmd(l, 1, val)?;
                }
                let old = std::mem::replace(&mut l.trc.outtid, val);
                l.ctrc.outtid = l.trc.outtid;
                l.ctrc.outctx = l.trc.outctx;
                l.ctrc.outtag = l.trc.outtag;
                old
            }
            // Legacy refuses its own output and trace contexts, and the polling options of its
            // shared-memory builds, as not implemented.
            19 | 20 | 23 | 24 => return Err(PvmError::NotImpl as i32),
            13 => {
                if l.trc.outtid <= 0 {
                    // Legacy fails this with code 0: "pvm_setopt(): Ok" when PvmAutoErr is on.
                    return Ok(lpvmerr("pvm_setopt", 0));
                }
                l.beatask()?;
                setopt_pvmd(l, 3, val)?;
                let old = std::mem::replace(&mut l.trc.outtag, val);
                l.ctrc.outtid = l.trc.outtid;
                l.ctrc.outctx = l.trc.outctx;
                l.ctrc.outtag = l.trc.outtag;
                old
            }
            14 => {
                if l.trc.trctid > 0 || val > 0 {
                    l.beatask()?;
                    setopt_pvmd(l, 4, val)?;
                }
                let old = std::mem::replace(&mut l.trc.trctid, val);
                l.ctrc.trctid = l.trc.trctid;
                l.ctrc.trcctx = l.trc.trcctx;
                l.ctrc.trctag = l.trc.trctag;
                old
            }
            15 => {
                if l.trc.trctid <= 0 {
                    return Ok(lpvmerr("pvm_setopt", 0));
                }
                l.beatask()?;
                setopt_pvmd(l, 6, val)?;
                let old = std::mem::replace(&mut l.trc.trctag, val);
                l.ctrc.trctid = l.trc.trctid;
                l.ctrc.trcctx = l.trc.trcctx;
                l.ctrc.trctag = l.trc.trctag;
                old
            }
            16 => {
                tev::flush(l);
                std::mem::replace(&mut l.trc.trcbuf, val)
            }
            17 => {
                tev::flush(l);
                if !(1..=3).contains(&val) {
                    return Err(E_BADPARAM);
                }
                std::mem::replace(&mut l.trc.trcopt, val)
            }
            18 => {
                let old = cget!(pvmshowtaskid);
                cset!(pvmshowtaskid, val);
                old
            }
            25 => return set_noreset(l, val),
            _ => return Err(E_BADPARAM),
        };
        Ok(old)
    })
}, |e, l, cc| { let _ = &l; e.int(tev::did::OPV, cc); })
});

/// Legacy's rule for the children's output or trace destination `val`: none, the task itself,
/// or the task's own destination `own` when the children's code equals its own (`same_code`).
fn dest_ok(val: i32, me: i32, own: i32, same_code: bool) -> bool {
    val == 0 || val == me || (val == own && same_code)
}

/// Legacy's rule for the children's output or trace code and context: free while their
/// destination `dest` is none or the task itself, else only the task's own (`equals_own`).
fn locked_ok(dest: i32, me: i32, equals_own: bool) -> bool {
    dest <= 0 || dest == me || equals_own
}

/// `db` for a caller that holds the library state: the code the pvmd answers a TM_DB with.
fn db_locked(l: &mut Lib, op: i32, name: &[u8], index: i32, flags: i32, msg: Option<&EmbeddedMesg>) -> i32 {
    let mut p = xdr();
    let _ = p.pk_int(&[op, l.mytid]);
    let _ = p.pk_str(name);
    let _ = p.pk_int(&[index, flags]);
    if let Some(m) = msg {
        if let Err(e) = p.pk_mesg(m) {
            return e.pvm_error() as i32;
        }
    }
    match l.request(TM_DB, p.body()) {
        Ok(b) => int(&mut b.unpacker()).unwrap_or(PvmError::SysErr as i32),
        Err(e) => e,
    }
}

/// PvmNoReset as legacy: turning it on leaves an entry (this task's id) in the mailbox class
/// the console's `reset` spares tasks by (`pvm_getnoresets`), turning it off deletes it again.
/// Legacy keeps `putinfo(...) < 0` as the entry's index (a precedence slip: 0 after a
/// success) and deletes that index; so does this.
fn set_noreset(l: &mut Lib, val: i32) -> R {
    if l.mytid <= 0 {
        lpvmerr("pvm_setopt: PvmNoReset task not initialized", E_BADPARAM);
        return Err(E_BADPARAM);
    }
    let old = l.noreset;
    let class = pvm_proto::codes::MBOX_CLASS_NO_RESET.as_bytes();
    let mut val = val;
    let mut failed = false;
    if val != 0 && l.noreset == 0 {
        let mut p = xdr();
        let _ = p.pk_int(&[l.mytid]);
        let mut body = p.into_body();
        body.set_enc(pvm_proto::codes::ENC_XDR);
        let m = EmbeddedMesg {
            ctx: 0,
            tag: 0,
            wid: 0,
            crc: 0,
            src: l.mytid,
            dst: 0,
            body,
        };
        // As pvm_putinfo(class, buf, PvmMboxMultiInstance): no direct index (-1).
        let cc = db_locked(l, TMDB_PUT, class, -1, 2 /* PvmMboxMultiInstance */, Some(&m));
        l.noreset_index = i32::from(cc < 0);
        if cc < 0 {
            failed = true;
            val = 0;
        }
    } else if val == 0 && l.noreset != 0 && l.noreset_index >= 0 {
        if db_locked(l, TMDB_REMOVE, class, l.noreset_index, 0, None) < 0 {
            failed = true;
            val = 0;
        }
        l.noreset_index = -1;
    }
    l.noreset = val;
    if failed {
        return Err(PvmError::SysErr as i32);
    }
    Ok(old)
}

pvm_api!(pvm_settmask(who: c_int, mask: *mut c_char) {
    // SAFETY: C string.
    let m = unsafe { cstr(mask) }?;
    if m.len() != TMASK_OFF.len() {
        return Err(E_BADPARAM);
    }
    let m = String::from_utf8_lossy(m).into_owned();
    with_r(|l| {
        match who {
            0 => l.trc.tmask = m,
            1 => l.ctrc.tmask = m,
            _ => return Err(E_BADPARAM),
        }
        Ok(0)
    })
});

pvm_api!(pvm_gettmask(who: c_int, mask: *mut c_char) {
    nz(mask)?;
    with_r(|l| {
        let m = match who {
            0 => l.trc.tmask.clone(),
            1 => l.ctrc.tmask.clone(),
            _ => return Err(E_BADPARAM),
        };
        // SAFETY: the caller's buffer holds TEV_MASK_LENGTH bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(m.as_ptr(), mask as *mut u8, m.len());
            *mask.add(m.len()) = 0;
        }
        Ok(0)
    })
});

// ---- output collection ------------------------------------------------------------------------

pvm_api!(pvm_catchout(ff: *mut libc::FILE) {
    if ff.is_null() {
        return with(|l| {
            l.ctrc.outtid = l.trc.outtid;
            l.ctrc.outctx = l.trc.outctx;
            l.ctrc.outtag = l.trc.outtag;
            l.catchout = None;
            0
        });
    }
    enrolled()?;
    with_r(|l| {
        if l.catchout.is_none() {
            // Ask to hear of our own exit so output can be flushed (legacy tobuf_init()).
            let mut p = xdr();
            let me = l.mytid;
            let _ = p.pk_int(&[1, SYSCTX_TC, TC_OUTPUTX, 1, me]);
            l.send_to_pvmd(TM_NOTIFY, SYSCTX_TC, 0, p.body())?;
        }
        l.catchout = Some(ff as usize);
        l.ctrc.outtid = l.mytid;
        l.ctrc.outctx = SYSCTX_TC;
        l.ctrc.outtag = crate::core::TC_OUTPUT;
        Ok(0)
    })
});

fn out_line(l: &Lib, tid: i32, line: &[u8]) {
    let Some(ff) = l.catchout else { return };
    let mut s = Vec::new();
    if cget!(pvmshowtaskid) != 0 {
        s.extend_from_slice(format!("[t{tid:x}] ").as_bytes());
    }
    s.extend_from_slice(line);
    s.push(b'\n');
    // SAFETY: a FILE* the program gave pvm_catchout and still owns.
    unsafe { libc::fwrite(s.as_ptr() as *const c_void, 1, s.len(), ff as *mut libc::FILE) };
}

/// A TC_OUTPUT record: `int tid; int n; bytes[n]` (n 0 EOF, -1 spawn, -2 new task).
pub fn claim_output(l: &mut Lib, u: &mut Unpacker<'_>) {
    let mut h = [0i32; 2];
    if u.up_int(&mut h).is_err() {
        return;
    }
    let [tid, n] = h;
    let show = cget!(pvmshowtaskid) != 0;
    if n > 0 {
        let mut data = vec![0u8; n as usize];
        if (n as usize) > u.remaining() || u.up_byte(&mut data).is_err() {
            return;
        }
        let Some(mut t) = l.tobufs.remove(&tid) else { return };
        t.partial.extend_from_slice(&data);
        while let Some(i) = t.partial.iter().position(|&c| c == b'\n') {
            let line: Vec<u8> = t.partial.drain(..=i).collect();
            out_line(l, tid, &line[..line.len() - 1]);
        }
        l.tobufs.insert(tid, t);
        return;
    }
    match n {
        0 => {
            let Some(mut t) = l.tobufs.remove(&tid) else { return };
            if !t.partial.is_empty() {
                let p = std::mem::take(&mut t.partial);
                out_line(l, tid, &p);
            }
            t.got_eof = true;
            if t.got_spawn {
                if show {
                    out_line_raw(l, &format!("[t{tid:x}] EOF"));
                }
            } else {
                l.tobufs.insert(tid, t);
            }
        }
        -1 => {
            let mut t = l.tobufs.remove(&tid).unwrap_or_else(|| {
                if show {
                    out_line_raw(l, &format!("[t{tid:x}] BEGIN"));
                }
                Default::default()
            });
            t.got_spawn = true;
            if t.got_eof {
                if show {
                    out_line_raw(l, &format!("[t{tid:x}] EOF"));
                }
            } else {
                l.tobufs.insert(tid, t);
            }
        }
        -2 if !l.tobufs.contains_key(&tid) => {
            if show {
                out_line_raw(l, &format!("[t{tid:x}] BEGIN"));
            }
            l.tobufs.insert(tid, Default::default());
        }
        _ => {}
    }
}

fn out_line_raw(l: &Lib, s: &str) {
    let Some(ff) = l.catchout else { return };
    let s = format!("{s}\n");
    // SAFETY: as in out_line.
    unsafe { libc::fwrite(s.as_ptr() as *const c_void, 1, s.len(), ff as *mut libc::FILE) };
}

// ---- mailbox --------------------------------------------------------------------------------

fn db(op: i32, name: &[u8], index: i32, flags: i32, msg: Option<&EmbeddedMesg>) -> Result<MsgBody, c_int> {
    enrolled()?;
    let me = with(|l| l.mytid)?;
    let mut p = xdr();
    let _ = p.pk_int(&[op, me]);
    let _ = p.pk_str(name);
    let _ = p.pk_int(&[index, flags]);
    if let Some(m) = msg {
        p.pk_mesg(m).map_err(|e| e.pvm_error() as i32)?;
    }
    request(TM_DB, &p)
}

pvm_api!(pvm_putinfo(name: *mut c_char, mid: c_int, flags: c_int) noprint [PvmError::Exists as i32, PvmError::Denied as i32] {
    tev::traced(tev::kind::PUTINFO, true, |e, l| { let _ = (&e, &l); e.str(tev::did::CN, &unsafe { tev::cstr_or_empty(name) }); e.int(tev::did::CI, -1); e.int(tev::did::CF, flags); e.int(tev::did::CD, mid); }, || -> R {
    // SAFETY: C string.
    let n = unsafe { cstr(name) }?.to_vec();
    if n.is_empty() {
        return Err(E_BADPARAM);
    }
    let m = with_r(|l| {
        if mid <= 0 {
            return Err(E_BADPARAM);
        }
        Ok(embedded(l.bufs.get(&mid).ok_or(E_NOSUCHBUF)?))
    })?;
    // As legacy: no index of its own (-1); a direct index travels in the flags
    // (PvmMboxDirectIndex), and the pvmd takes it from there.
    let b = db(TMDB_PUT, &n, -1, flags, Some(&m))?;
    // The pvmd's refusal is the call's error (pvm_errno set; Exists and Denied not printed).
    match int(&mut b.unpacker())? {
        cc if cc < 0 => Err(cc),
        cc => Ok(cc),
    }
}, |e, _, cc| e.int(tev::did::CC, cc))
});

pvm_api!(pvm_recvinfo(name: *mut c_char, index: c_int, flags: c_int) noprint [PvmError::NotFound as i32] {
    tev::traced(tev::kind::GETINFO, true, |e, l| { let _ = (&e, &l); e.str(tev::did::CN, &unsafe { tev::cstr_or_empty(name) }); e.int(tev::did::CI, index); e.int(tev::did::CF, flags); }, || -> R {
    // SAFETY: C string.
    let n = unsafe { cstr(name) }?.to_vec();
    let b = db(TMDB_GET, &n, index, flags, None)?;
    let mut u = b.unpacker();
    let st = int(&mut u)?;
    if st < 0 {
        return Err(st);
    }
    let m = u.up_mesg().map_err(|e| e.pvm_error() as i32)?;
    with(|l| {
        l.tev.last_cc = st;
        let id = new_from_embedded(l, m);
        l.rbuf = id;
        id
    })
}, |e, l, cc| { let _ = &l; if cc < 0 { e.int(tev::did::CC, cc); e.int(tev::did::CR, -1); } else { e.int(tev::did::CC, l.tev.last_cc); e.int(tev::did::CR, cc); } })
});

pvm_api!(pvm_delinfo(name: *mut c_char, index: c_int, flags: c_int) noprint [PvmError::NotFound as i32, PvmError::Denied as i32] {
    tev::traced(tev::kind::DELINFO, true, |e, l| { let _ = (&e, &l); e.str(tev::did::CN, &unsafe { tev::cstr_or_empty(name) }); e.int(tev::did::CI, index); e.int(tev::did::CF, flags); }, || -> R {
    // SAFETY: C string.
    let n = unsafe { cstr(name) }?.to_vec();
    let b = db(TMDB_REMOVE, &n, index, flags, None)?;
    let v = int(&mut b.unpacker())?;
    if v < 0 {
        Err(v)
    } else {
        Ok(v)
    }
}, |e, _, cc| e.int(tev::did::CC, cc))
});

pvm_api!(pvm_getmboxinfo(pattern: *mut c_char, nclassesp: *mut c_int, classesp: *mut *mut PvmMboxInfo) {
    tev::traced(tev::kind::GETMBOXINFO, true, |e, l| { let _ = (&e, &l); e.str(tev::did::CN, &unsafe { tev::cstr_or_empty(pattern) }); }, || -> R {
    let pat = if pattern.is_null() { Vec::new() } else { unsafe { cstr(pattern) }?.to_vec() };
    let b = db(TMDB_NAMES, &pat, 0, 0, None)?;
    let mut u = b.unpacker();
    let st = int(&mut u)?;
    if st < 0 {
        return Err(st);
    }
    let nc = int(&mut u)?;
    with_r(|l| {
        l.keep_mbox.clear();
        l.keep_mbox_ints.clear();
        l.keep_mbox_strings.clear();
        for _ in 0..nc.max(0) {
            let name = u.up_str().map_err(|_| PvmError::BadMsg as i32)?;
            let ne = int(&mut u)?;
            if ne < 0 || ne as usize > u.remaining() / 12 {
                return Err(PvmError::BadMsg as i32);
            }
            let (mut idx, mut own, mut fl) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..ne {
                idx.push(int(&mut u)?);
                own.push(int(&mut u)?);
                fl.push(int(&mut u)?);
            }
            let s = keep(&mut l.keep_mbox_strings, &name);
            l.keep_mbox_ints.push(idx);
            l.keep_mbox_ints.push(own);
            l.keep_mbox_ints.push(fl);
            let k = l.keep_mbox_ints.len();
            let (a, rest) = l.keep_mbox_ints.split_at_mut(k - 2);
            let (bb, c) = rest.split_at_mut(1);
            l.keep_mbox.push(PvmMboxInfo {
                mi_name: s,
                mi_nentries: ne,
                mi_indices: a[k - 3].as_mut_ptr(),
                mi_owners: bb[0].as_mut_ptr(),
                mi_flags: c[0].as_mut_ptr(),
            });
        }
        // SAFETY: optional out pointers.
        unsafe {
            if !nclassesp.is_null() {
                *nclassesp = l.keep_mbox.len() as c_int;
            }
            if !classesp.is_null() {
                *classesp = l.keep_mbox.as_mut_ptr();
            }
        }
        Ok(0)
    })
}, |e, _, cc| e.int(tev::did::CC, cc))
});

pvm_api!(pvm_getnoresets(tidsp: *mut *mut c_int, ntidsp: *mut c_int) {
    enrolled()?;
    // As legacy: one entry per task (PvmNoReset puts them MultiInstance), read at index 0, 1,
    // 2, ... with FirstAvail until none is left; an entry found past the index asked for is
    // found again for the next index, as in legacy.
    let class = pvm_proto::codes::MBOX_CLASS_NO_RESET.as_bytes();
    let mut list = Vec::new();
    for index in 0..(1 << 20) {
        let Ok(b) = db(TMDB_GET, class, index, 8 /* PvmMboxFirstAvail */, None) else {
            break;
        };
        let mut u = b.unpacker();
        if !int(&mut u).map(|s| s >= 0).unwrap_or(false) {
            break;
        }
        let Ok(m) = u.up_mesg() else { break };
        match int(&mut m.body.unpacker()) {
            Ok(t) => list.push(t),
            Err(_) => break,
        }
    }
    with(|l| {
        l.keep_noresets = list;
        // SAFETY: optional out pointers.
        unsafe {
            if !tidsp.is_null() {
                *tidsp = l.keep_noresets.as_mut_ptr();
            }
            if !ntidsp.is_null() {
                *ntidsp = l.keep_noresets.len() as c_int;
            }
        }
        0
    })
});

/// `pvmreset()`, what the console's `reset` calls: kills every task but the caller and those
/// that asked to be spared (PvmNoReset entries, `pvm_getnoresets`), when `killtasks`, then has
/// the pvmd clean up the mailbox (TMDB_RESET with the spared tids), as legacy.
pub fn reset(mytid: i32, killtasks: i32, class: &[u8], index: i32) -> i32 {
    let mut noresets: Vec<c_int> = Vec::new();
    let mut ntask: c_int = 0;
    let mut tip: *mut PvmTaskInfo = std::ptr::null_mut();
    // SAFETY: out pointers to locals; the array pvm_tasks returns stays valid until its next
    // call, and is copied out before anything else runs.
    if unsafe { pvm_tasks(0, &mut ntask, &mut tip) } == 0 && ntask > 0 && !tip.is_null() {
        let tids: Vec<c_int> = (0..ntask as usize).map(|i| unsafe { (*tip.add(i)).ti_tid }).collect();
        let (mut np, mut nn): (*mut c_int, c_int) = (std::ptr::null_mut(), 0);
        // SAFETY: out pointers to locals; the list stays valid until the next call.
        unsafe { pvm_getnoresets(&mut np, &mut nn) };
        if !np.is_null() {
            noresets = (0..nn.max(0) as usize).map(|i| unsafe { *np.add(i) }).collect();
        }
        if killtasks != 0 {
            for t in tids {
                if t != 0 && t != mytid && !noresets.contains(&t) {
                    // SAFETY: plain C call.
                    unsafe { pvm_kill(t) };
                }
            }
        }
    }
    let me = with(|l| l.mytid).unwrap_or(mytid);
    let mut p = xdr();
    let _ = p.pk_int(&[TMDB_RESET, me]);
    let _ = p.pk_str(class);
    let _ = p.pk_int(&[index, killtasks, noresets.len() as c_int]);
    let _ = p.pk_int(&noresets);
    let _ = request(TM_DB, &p);
    0
}

// ---- registration (resource manager, hoster, tasker, tracer) --------------------------------

pvm_api!(pvm_reg_rm(hip: *mut *mut PvmHostInfo) {
    tev::traced(tev::kind::REG_RM, true, |e, l| { let _ = (&e, &l);  }, || -> R {
    let b = request(TM_SCHED, &xdr())?;
    let mut u = b.unpacker();
    let old = int(&mut u)?;
    if old < 0 {
        return Err(old);
    }
    with_r(|l| {
        l.keep_hosts.clear();
        l.keep_strings.clear();
        if let (Ok(tid), Ok(name), Ok(arch)) = (int(&mut u), u.up_str(), u.up_str()) {
            let speed = int(&mut u).unwrap_or(0);
            let dsig = int(&mut u).unwrap_or(0);
            let n = keep(&mut l.keep_strings, &name);
            let a = keep(&mut l.keep_strings, &arch);
            l.keep_hosts.push(PvmHostInfo { hi_tid: tid, hi_name: n, hi_arch: a, hi_speed: speed, hi_dsig: dsig });
        }
        if !hip.is_null() {
            // SAFETY: optional out pointer.
            unsafe { *hip = l.keep_hosts.as_mut_ptr() };
        }
        Ok(0)
    })
}, |e, _, cc| e.int(tev::did::CC, cc))
});

fn reg(tag: i32) -> R {
    let mut p = xdr();
    let _ = p.pk_int(&[1]);
    let b = request(tag, &p)?;
    let v = int(&mut b.unpacker())?;
    if v < 0 {
        Err(v)
    } else {
        Ok(v)
    }
}

pvm_api!(pvm_reg_hoster() {
    tev::traced(tev::kind::REG_HOSTER, true, |e, l| { let _ = (&e, &l);  }, || -> R { reg(TM_HOSTER) }, |e, _, cc| e.int(tev::did::CC, cc))
});
pvm_api!(pvm_reg_tasker() {
    tev::traced(tev::kind::REG_TASKER, true, |e, l| { let _ = (&e, &l);  }, || -> R { reg(TM_TASKER) }, |e, _, cc| e.int(tev::did::CC, cc))
});

/// This task is the registered tracer (legacy `imit` in pvm_reg_tracer).
static TRACER_ME: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// Index of our tracer mailbox entry, -1 for none.
static TRACER_MBOX: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

pvm_api!(pvm_reg_tracer(tctx: c_int, ttag: c_int, octx: c_int, otag: c_int, tmask: *mut c_char, tbuf: c_int, topt: c_int) {
    tev::traced(tev::kind::REG_TRACER, true, |e, l| { let _ = (&e, &l); e.int(tev::did::TRC, tctx); e.int(tev::did::TRT, ttag); e.int(tev::did::TRX, octx); e.int(tev::did::TRO, otag); e.str(tev::did::TRM, &unsafe { tev::cstr_or_empty(tmask) }); e.int(tev::did::TRB, tbuf); e.int(tev::did::TRL, topt); }, || -> R {
    let m = if tmask.is_null() { TMASK_OFF.as_bytes().to_vec() } else { unsafe { cstr(tmask) }?.to_vec() };
    // Like legacy, a second call (after a successful first) unregisters.
    let registering = !TRACER_ME.load(std::sync::atomic::Ordering::Relaxed);
    let mut p = xdr();
    let _ = p.pk_int(&[registering as i32]);
    if registering {
        let _ = p.pk_int(&[tctx, ttag, octx, otag]);
        let _ = p.pk_str(&m);
        let _ = p.pk_int(&[tbuf, topt]);
    }
    let b = request(TM_TRACER, &p)?;
    let v = int(&mut b.unpacker())?;
    if v < 0 {
        return Err(v);
    }
    if v == 0 {
        TRACER_ME.store(registering, std::sync::atomic::Ordering::Relaxed);
        let class = pvm_proto::codes::MBOX_CLASS_TRACER.as_bytes();
        let old = TRACER_MBOX.swap(-1, std::sync::atomic::Ordering::Relaxed);
        if registering {
            // The entry where tasks started from a shell find the trace settings (read back
            // by Lib::apply_tracer_entry, and by the legacy pvmbeatask).
            let e = with(|l| {
                let mut body = xdr();
                let _ = body.pk_int(&[l.mytid, tctx, ttag, octx, otag]);
                let _ = body.pk_str(&m);
                let _ = body.pk_int(&[tbuf, topt]);
                EmbeddedMesg { ctx: 0, tag: 0, wid: 0, crc: 0, src: l.mytid, dst: 0, body: body.into_body() }
            })?;
            let r = db(TMDB_PUT, class, -1, 0, Some(&e))?;
            let index = int(&mut r.unpacker())?;
            TRACER_MBOX.store(index, std::sync::atomic::Ordering::Relaxed);
        } else if old >= 0 {
            let _ = db(TMDB_REMOVE, class, old, 0, None);
        }
    }
    Ok(v)
}, |e, _, cc| e.int(tev::did::CC, cc))
});

// ---- misc ------------------------------------------------------------------------------------

pvm_api!(pvm_perror(s: *mut c_char) {
    let e = cget!(pvm_errno);
    let prefix = if s.is_null() { String::new() } else { String::from_utf8_lossy(unsafe { cstr(s) }?).into_owned() };
    crate::core::to_stderr(&format!("libpvm [{}]: {}: {}\n", crate::core::who(), prefix, crate::core::errtext(e)));
    Ok(0)
});

static VERSION: &[u8] = b"3.4.6\0";

#[no_mangle]
pub extern "C" fn pvm_version() -> *const c_char {
    VERSION.as_ptr() as *const c_char
}

/// Returns the text of the last error (`pvm_errlist[-pvm_errno]`).
#[no_mangle]
pub extern "C" fn pvm_strerror() -> *const c_char {
    static mut BUF: [u8; 128] = [0; 128];
    let t = crate::core::errtext(cget!(pvm_errno));
    let n = t.len().min(127);
    // SAFETY: single-threaded legacy contract; the static buffer is only written here.
    unsafe {
        let b = std::ptr::addr_of_mut!(BUF) as *mut u8;
        std::ptr::copy_nonoverlapping(t.as_ptr(), b, n);
        *b.add(n) = 0;
        b as *const c_char
    }
}

fn export_list() -> Vec<String> {
    std::env::var("PVM_EXPORT")
        .unwrap_or_default()
        .split(':')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn set_export(v: &[String]) {
    let s = v.join(":");
    let c = CString::new(format!("PVM_EXPORT={s}")).unwrap_or_default();
    // putenv keeps the pointer: leak it deliberately, as legacy does.
    // SAFETY: a valid NUL-terminated string that stays alive forever.
    unsafe { libc::putenv(c.into_raw()) };
}

pvm_api!(pvm_export(name: *mut c_char) {
    // SAFETY: C string.
    let n = String::from_utf8_lossy(unsafe { cstr(name) }?).into_owned();
    let mut v = export_list();
    if !v.contains(&n) {
        v.push(n);
        set_export(&v);
    }
    Ok(0)
});

pvm_api!(pvm_unexport(name: *mut c_char) {
    // SAFETY: C string.
    let n = String::from_utf8_lossy(unsafe { cstr(name) }?).into_owned();
    let mut v = export_list();
    v.retain(|x| *x != n);
    set_export(&v);
    Ok(0)
});

// pvm_start_pvmd(argc, argv, block): runs `$PVM_ROOT/lib/pvmd`, falling back to the Debian
// location `/usr/bin/pvmd`, reads the socket address it prints and connects.
pvm_api!(pvm_start_pvmd(argc: c_int, argv: *mut *mut c_char, block: c_int) {
    tev::traced2(tev::kind::START_PVMD, false, true, |e, l| { let _ = (&e, &l); e.int(tev::did::BF, block); e.strs(tev::did::AS, &unsafe { tev::cstrs(argv as *const *const c_char, argc) }); }, || -> R {
    if argc < 0 {
        return Err(E_BADPARAM);
    }
    let mut args = Vec::new();
    for i in 0..argc as usize {
        nz(argv)?;
        // SAFETY: argc C strings.
        args.push(String::from_utf8_lossy(unsafe { cstr(*argv.add(i)) }?).into_owned());
    }
    // A daemon we can reach means one is running already.
    if with(|l| l.enrolled() || (!l.lost && std::env::var_os("PVMSOCK").is_none() && l.beatask().is_ok()))? {
        return Err(PvmError::DupHost as i32);
    }
    let _ = block;
    crate::internals::start_pvmd(&args)?;
    enrolled()?;
    Ok(0)
}, |e, _, cc| e.int(tev::did::CC, cc))
});

// ---- legacy 3.3 compatibility (pvm_insert/lookup/delete over the mailbox) ---------------------

pvm_api!(pvm_insert(name: *mut c_char, req: c_int, data: c_int) {
    tev::traced(tev::kind::INSERT, true, |e, l| { let _ = (&e, &l); e.str(tev::did::CN, &unsafe { tev::cstr_or_empty(name) }); e.int(tev::did::CI, req); e.int(tev::did::CD, data); }, || -> R {
    // SAFETY: C string.
    let n = unsafe { cstr(name) }?.to_vec();
    let mut p = xdr();
    let _ = p.pk_int(&[data]);
    let me = with(|l| l.mytid)?;
    let m = EmbeddedMesg { src: me, body: p.into_body(), ..Default::default() };
    let b = db(TMDB_PUT, &n, req, 0, Some(&m))?;
    int(&mut b.unpacker())
}, |e, _, cc| e.int(tev::did::CC, cc))
});

pvm_api!(pvm_lookup(name: *mut c_char, req: c_int, datap: *mut c_int) noprint [PvmError::NotFound as i32] {
    tev::traced(tev::kind::LOOKUP, true, |e, l| { let _ = (&e, &l); e.str(tev::did::CN, &unsafe { tev::cstr_or_empty(name) }); e.int(tev::did::CI, req); }, || -> R {
    // SAFETY: C string.
    let n = unsafe { cstr(name) }?.to_vec();
    let b = db(TMDB_GET, &n, req.max(0), 0, None)?;
    let mut u = b.unpacker();
    let st = int(&mut u)?;
    if st < 0 {
        return Err(st);
    }
    if let Ok(m) = u.up_mesg() {
        let mut uu = m.body.unpacker();
        if let (Ok(v), false) = (int(&mut uu), datap.is_null()) {
            // SAFETY: optional out pointer.
            unsafe { *datap = v };
        }
    }
    Ok(st)
}, |e, _, cc| e.int(tev::did::CC, cc))
});

pvm_api!(pvm_delete(name: *mut c_char, req: c_int) noprint [PvmError::NotFound as i32] {
    tev::traced(tev::kind::DELETE, true, |e, l| { let _ = (&e, &l); e.str(tev::did::CN, &unsafe { tev::cstr_or_empty(name) }); e.int(tev::did::CI, req); }, || -> R {
    // SAFETY: C string.
    let n = unsafe { cstr(name) }?.to_vec();
    let b = db(TMDB_REMOVE, &n, req, 0, None)?;
    let v = int(&mut b.unpacker())?;
    if v < 0 {
        Err(v)
    } else {
        Ok(v)
    }
}, |e, _, cc| e.int(tev::did::CC, cc))
});

/// Unused in 3.4 but exported: kept callable.
#[no_mangle]
pub extern "C" fn pvm_tc_noop(mid: c_int) -> c_int {
    let _ = with(|l| l.bufs.remove(&mid));
    0
}

macro_rules! tc_handler {
    ($($n:ident),*) => {$(
        /// Legacy control-message handler entry point; ours run inside the library, so a
        /// direct call only frees the message.
        #[no_mangle]
        pub extern "C" fn $n(mid: c_int) -> c_int {
            pvm_tc_noop(mid)
        }
    )*};
}
tc_handler!(
    pvm_tc_settmask,
    pvm_tc_settrace,
    pvm_tc_settrcbuf,
    pvm_tc_settrcopt,
    pvm_tc_siblings
);
