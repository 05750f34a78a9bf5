//! The shim's unpack path (issue 9): arbitrary bytes become a received message inside
//! libpvm3-shim's own buffer table, then a script drives the exported C calls on it.
//!
//! Input: enc selector (1 byte; 3 = a raw 4-byte enc follows), fragment count (1 byte, 1..=4),
//! per fragment a u16 LE length and its bytes, then the op script.
//!
//! Invariants: no call returns PvmSysErr (the export boundary's caught panic); every failure is
//! one of the legacy unpack codes; nothing is written outside the Rust buffers handed over (ASan,
//! plus the untouched elements between strides).
#![no_main]
use libfuzzer_sys::fuzz_target;
use pvm3::api::*;
use pvm_proto::codes::{DSIG_X86_64, ENC_INPLACE, ENC_XDR};
use std::os::raw::{c_char, c_int};

extern "C" {
    fn pvm_unpackf(fmt: *const c_char, ...) -> c_int;
}

const SYSERR: c_int = -4;
/// PvmNoData, PvmBadMsg, PvmNoBuf, PvmNoSuchBuf, PvmBadParam.
const ALLOWED: [c_int; 5] = [-5, -12, -15, -16, -2];

struct Src<'a>(&'a [u8]);

impl<'a> Src<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*b)
    }
    fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
    fn i32(&mut self) -> i32 {
        let b = self.take(4);
        let mut a = [0u8; 4];
        a[..b.len()].copy_from_slice(b);
        i32::from_le_bytes(a)
    }
}

fn check(what: &str, rc: c_int) {
    assert_ne!(rc, SYSERR, "{what} returned PvmSysErr (a caught panic)");
    assert!(rc >= 0 || ALLOWED.contains(&rc), "{what} returned {rc}");
}

/// A count: mostly small, sometimes one of the edge values.
fn count(b: u8) -> c_int {
    const EDGE: [c_int; 16] = [
        -1,
        i32::MIN,
        i32::MAX,
        1 << 20,
        1 << 24,
        1 << 30,
        65536,
        4096,
        1000,
        -2,
        i32::MAX / 2,
        i32::MAX / 4,
        i32::MAX / 8,
        i32::MAX / 16,
        0x0800_0000,
        0x1000_0000,
    ];
    if b >= 0xf0 {
        EDGE[(b & 0x0f) as usize]
    } else {
        b as c_int
    }
}

/// Calls `f(ptr, cnt, stride)` on a buffer of exactly the extent legacy writes, and checks the
/// elements between strides are left alone. Calls that would need a huge buffer are skipped.
/// SAFETY of every `f`: it gets a buffer holding the whole extent (cnt-1)*stride+1.
fn typed<T: Copy + PartialEq + std::fmt::Debug>(
    what: &str,
    fill: T,
    cnt: c_int,
    stride: c_int,
    f: impl Fn(*mut T, c_int, c_int) -> c_int,
) {
    let n = if cnt <= 0 || stride < 0 {
        1
    } else {
        let n = (cnt as u64 - 1) * stride as u64 + 1;
        if n > 1 << 16 {
            return;
        }
        n as usize
    };
    let mut buf = vec![fill; n];
    let rc = f(buf.as_mut_ptr(), cnt, stride);
    check(what, rc);
    if stride > 1 {
        for (i, v) in buf.iter().enumerate() {
            if i % stride as usize != 0 {
                assert_eq!(*v, fill, "{what} wrote between strides at {i}");
            }
        }
    }
}

/// Bytes `pvm_upkstr` may write: the current receive buffer's length plus a NUL.
fn str_room() -> usize {
    let mut len: c_int = 0;
    // SAFETY: plain exports; out pointers are valid or NULL.
    unsafe {
        let id = pvm_getrbuf();
        if id > 0 && pvm_bufinfo(id, &mut len, std::ptr::null_mut(), std::ptr::null_mut()) < 0 {
            len = 0;
        }
    }
    len.max(0) as usize + 1
}

fn pick_id(s: &mut Src, ids: &[c_int]) -> c_int {
    let b = s.byte().unwrap_or(0);
    match b & 3 {
        0 if !ids.is_empty() => ids[(b >> 2) as usize % ids.len()],
        0 | 1 => 0,
        2 => -((b >> 2) as c_int) - 1,
        _ => ids.iter().copied().max().unwrap_or(0) + 1 + (b >> 2) as c_int,
    }
}

fuzz_target!(|data: &[u8]| {
    let mut s = Src(data);
    let enc = match s.byte().unwrap_or(0) & 3 {
        0 => ENC_XDR,
        1 => DSIG_X86_64,
        2 => ENC_INPLACE,
        _ => s.i32(),
    };
    let nfrag = 1 + (s.byte().unwrap_or(0) % 4) as usize;
    let mut frags = Vec::new();
    for _ in 0..nfrag {
        let lo = s.byte().unwrap_or(0) as usize;
        let hi = s.byte().unwrap_or(0) as usize;
        frags.push(s.take(lo | hi << 8));
    }
    let tag = 7;
    let id = pvm3::fuzz_hooks::install_rbuf(enc, tag, &frags);
    assert!(id > 0, "install_rbuf failed: {id}");
    let mut ids = vec![id];

    let mut ops = 0;
    while let Some(op) = s.byte() {
        ops += 1;
        if ops > 64 {
            break;
        }
        let op = op % 16;
        let (cnt, stride) = if op <= 10 {
            let c = count(s.byte().unwrap_or(1));
            let st = s.byte().unwrap_or(1) % 8;
            (c, if st == 7 { -1 } else { st as c_int })
        } else {
            (0, 0)
        };
        match op {
            0 => typed("pvm_upkbyte", 0x5a as c_char, cnt, stride, |p, c, st| unsafe {
                pvm_upkbyte(p, c, st)
            }),
            1 => typed("pvm_upkshort", 0x5a5a, cnt, stride, |p, c, st| unsafe {
                pvm_upkshort(p, c, st)
            }),
            2 => typed("pvm_upkushort", 0x5a5a, cnt, stride, |p, c, st| unsafe {
                pvm_upkushort(p, c, st)
            }),
            3 => typed("pvm_upkint", 0x5a5a_5a5a, cnt, stride, |p, c, st| unsafe {
                pvm_upkint(p, c, st)
            }),
            4 => typed("pvm_upkuint", 0x5a5a_5a5a, cnt, stride, |p, c, st| unsafe {
                pvm_upkuint(p, c, st)
            }),
            5 => typed("pvm_upklong", 0x5a5a_5a5a, cnt, stride, |p, c, st| unsafe {
                pvm_upklong(p, c, st)
            }),
            6 => typed("pvm_upkulong", 0x5a5a_5a5a, cnt, stride, |p, c, st| unsafe {
                pvm_upkulong(p, c, st)
            }),
            7 => typed("pvm_upkfloat", 0.5, cnt, stride, |p, c, st| unsafe {
                pvm_upkfloat(p, c, st)
            }),
            8 => typed("pvm_upkdouble", 0.5, cnt, stride, |p, c, st| unsafe {
                pvm_upkdouble(p, c, st)
            }),
            // Complex: the C pointer is to floats but counts and strides are in (re, im) pairs.
            9 => typed("pvm_upkcplx", [0.5f32; 2], cnt, stride, |p, c, st| unsafe {
                pvm_upkcplx(p as *mut f32, c, st)
            }),
            10 => typed("pvm_upkdcplx", [0.5f64; 2], cnt, stride, |p, c, st| unsafe {
                pvm_upkdcplx(p as *mut f64, c, st)
            }),
            11 => {
                let mut buf = vec![0x5au8 as c_char; str_room()];
                // SAFETY: the string is at most the body's length, plus its NUL.
                check("pvm_upkstr", unsafe { pvm_upkstr(buf.as_mut_ptr()) });
            }
            12 => {
                // SAFETY: no arguments.
                let rc = unsafe { pvm_upkmesg() };
                check("pvm_upkmesg", rc);
                if rc > 0 {
                    ids.push(rc);
                }
            }
            13 => unpackf(&mut s),
            14 => {
                let mid = pick_id(&mut s, &ids);
                let (mut len, mut t, mut tid) = (0, 0, 0);
                // SAFETY: out pointers are valid.
                check("pvm_bufinfo", unsafe { pvm_bufinfo(mid, &mut len, &mut t, &mut tid) });
            }
            _ => {
                let free = s.byte().unwrap_or(0) & 1 == 1;
                let mid = pick_id(&mut s, &ids);
                // SAFETY: plain exports.
                if free {
                    check("pvm_freebuf", unsafe { pvm_freebuf(mid) });
                } else {
                    check("pvm_setrbuf", unsafe { pvm_setrbuf(mid) });
                }
            }
        }
    }
    for id in ids {
        // SAFETY: plain export; ids already freed just return PvmNoSuchBuf.
        unsafe { pvm_freebuf(id) };
    }
    // SAFETY: plain export.
    unsafe { pvm_setrbuf(0) };
});

/// `pvm_unpackf` with a few fixed formats, each given arguments of the size it writes.
fn unpackf(s: &mut Src) {
    let which = s.byte().unwrap_or(0) % 8;
    let rc = unsafe {
        // SAFETY (all arms): every pointer covers what its conversion writes (count*stride).
        match which {
            0 => {
                let mut v: c_int = 0;
                pvm_unpackf(c"%d".as_ptr(), &mut v as *mut c_int)
            }
            1 => {
                let mut v = [0 as c_int; 4];
                pvm_unpackf(c"%4d".as_ptr(), v.as_mut_ptr())
            }
            2 => {
                let mut v = [0i16; 5];
                pvm_unpackf(c"%3.2hd".as_ptr(), v.as_mut_ptr())
            }
            3 => {
                let (mut d, mut f) = (0f64, 0f32);
                pvm_unpackf(c"%lf %f".as_ptr(), &mut d as *mut f64, &mut f as *mut f32)
            }
            4 => {
                let mut v = [0f64; 4];
                pvm_unpackf(c"%2lx".as_ptr(), v.as_mut_ptr())
            }
            5 => {
                let mut v = vec![0 as c_char; str_room()];
                pvm_unpackf(c"%s".as_ptr(), v.as_mut_ptr())
            }
            6 => {
                let mut v = [0u8; 5];
                pvm_unpackf(c"%*.*c".as_ptr(), 3 as c_int, 2 as c_int, v.as_mut_ptr())
            }
            _ => {
                let (mut l, mut u) = (0i64, 0u32);
                pvm_unpackf(c"%ld %ud".as_ptr(), &mut l as *mut i64, &mut u as *mut u32)
            }
        }
    };
    check("pvm_unpackf", rc);
}
