//! Test hooks for the fuzz target `shim_unpack` (pvm-proto/fuzz): not part of the C ABI.
//!
//! A fuzzer cannot run a pvmd, so it needs a way to put arbitrary bytes where a received message
//! would be. The buffer goes into the library's own table exactly as `Lib::deliver` stores a
//! message from the wire, so every `pvm_upk*`/`pvm_upkmesg`/`pvm_unpackf` call then runs the same
//! code as in a real task.

use crate::core::{with, BufKind};
use pvm_proto::encoding::MsgBody;

/// Stores a received message with header encoding `enc`, tag `tag` and body `frags`, makes it
/// the receive buffer and returns its bufid. It also marks the library as never able to reach a
/// pvmd and turns `PvmAutoErr` off, so the calls that follow neither try to enrol nor print.
#[doc(hidden)]
pub fn install_rbuf(enc: i32, tag: i32, frags: &[&[u8]]) -> i32 {
    crate::core::cset!(pvmautoerr, 0);
    with(|l| {
        l.lost = true;
        let id = l.new_buf(BufKind::Recv(MsgBody::from_fragments(enc, frags.iter().copied())));
        if let Some(b) = l.bufs.get_mut(&id) {
            b.tag = tag;
        }
        l.rbuf = id;
        id
    })
    .unwrap_or(crate::core::E_SYSERR)
}

#[cfg(test)]
mod tests {
    use super::install_rbuf;
    use crate::api::{pvm_freebuf, pvm_upkbyte, pvm_upkint};
    use pvm_proto::codes::{PvmError, ENC_XDR};

    /// The one test touching the global library state, so nothing runs beside it.
    #[test]
    fn stride_zero_unpacks_keep_the_last_element_and_refuse_huge_counts() {
        let body = [0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, b'a', b'b', b'c', 0];
        let id = install_rbuf(ENC_XDR, 7, &[&body[..6], &body[6..]]);
        assert!(id > 0);
        let mut v = [0i32; 1];
        // SAFETY: stride 0 writes only v[0].
        assert_eq!(unsafe { pvm_upkint(v.as_mut_ptr(), 3, 0) }, 0);
        assert_eq!(v, [3]);
        let mut b = [0 as std::os::raw::c_char; 1];
        // SAFETY: as above. This used to allocate INT_MAX bytes before failing.
        let rc = unsafe { pvm_upkbyte(b.as_mut_ptr(), i32::MAX, 0) };
        assert_eq!(rc, PvmError::NoData as i32);
        // A failed unpack does not move the cursor: the string bytes are still there.
        // SAFETY: as above.
        assert_eq!(unsafe { pvm_upkbyte(b.as_mut_ptr(), 3, 0) }, 0);
        assert_eq!(b[0] as u8, b'c');
        // SAFETY: plain export.
        assert_eq!(unsafe { pvm_freebuf(id) }, 0);
    }
}
