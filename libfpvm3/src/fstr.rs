//! Fortran CHARACTER arguments: an address plus a hidden length (size_t, appended after all
//! explicit arguments by gfortran), blank-padded, not NUL-terminated.

use std::ffi::{CStr, CString};
use std::os::raw::c_char;

/// Capacity of the C buffers the legacy wrappers convert into (the C string may hold one byte
/// less). Longer names are rejected with PvmBadParam, as there.
pub const NAME_CAP: usize = 257;
pub const GROUP_CAP: usize = 32;

/// The Fortran string's bytes.
///
/// # Safety
/// `p` must point to `len` readable bytes (or be NULL).
pub unsafe fn bytes<'a>(p: *const c_char, len: usize) -> &'a [u8] {
    if p.is_null() || len == 0 {
        return &[];
    }
    // SAFETY: the caller passes the hidden length of this CHARACTER argument.
    unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) }
}

/// Trailing blanks removed; the C string ends at the first NUL, as with strncat. `None` when
/// the trimmed text does not fit a buffer of `cap` bytes.
pub fn to_c(s: &[u8], cap: usize) -> Option<CString> {
    let end = s.iter().rposition(|&b| b != b' ').map_or(0, |i| i + 1);
    if end > cap.saturating_sub(1) {
        return None;
    }
    let t = &s[..end];
    let t = t.iter().position(|&b| b == 0).map_or(t, |n| &t[..n]);
    CString::new(t).ok()
}

/// Copies `src` into the Fortran buffer, truncated to its length and blank-padded.
pub fn from_c(dst: &mut [u8], src: &[u8]) {
    let n = src.len().min(dst.len());
    dst[..n].copy_from_slice(&src[..n]);
    dst[n..].fill(b' ');
}

/// [`from_c`] on a raw Fortran buffer and a C string (NULL reads as empty).
///
/// # Safety
/// `dst` must point to `len` writable bytes (or be NULL); `src` must be NUL-terminated or NULL.
pub unsafe fn store(dst: *mut c_char, len: usize, src: *const c_char) {
    if dst.is_null() || len == 0 {
        return;
    }
    // SAFETY: per the contract above.
    let (d, s) = unsafe {
        (
            std::slice::from_raw_parts_mut(dst.cast::<u8>(), len),
            if src.is_null() {
                &[][..]
            } else {
                CStr::from_ptr(src).to_bytes()
            },
        )
    };
    from_c(d, s);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_blanks_and_checks_capacity() {
        assert_eq!(to_c(b"group   ", 32).unwrap().as_bytes(), b"group");
        assert_eq!(to_c(b"   ", 32).unwrap().as_bytes(), b"");
        assert_eq!(to_c(b" a b ", 32).unwrap().as_bytes(), b" a b");
        assert_eq!(to_c(b"ab\0cd  ", 32).unwrap().as_bytes(), b"ab");
        assert!(to_c(&[b'x'; 31], 32).is_some());
        assert!(to_c(&[b'x'; 32], 32).is_none());
        let mut long = vec![b'x'; 31];
        long.extend_from_slice(b"        ");
        assert!(to_c(&long, 32).is_some());
    }

    #[test]
    fn pads_and_truncates() {
        let mut d = [0u8; 6];
        from_c(&mut d, b"abc");
        assert_eq!(&d, b"abc   ");
        from_c(&mut d, b"abcdefgh");
        assert_eq!(&d, b"abcdef");
    }
}
