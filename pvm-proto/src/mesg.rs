//! The 32-byte message header carried at the start of a message's first fragment.
//!
//! Offsets 12..16 (a "sequence number" nobody uses) and 24..32 (reserved) may hold garbage from
//! the legacy C code; they are never read and always written as zero.

use crate::error::{ParseError, Result};
use byteorder::{BigEndian, ByteOrder};

/// Field offsets within the message header.
pub mod off {
    pub const ENC: usize = 0;
    pub const TAG: usize = 4;
    pub const CTX: usize = 8;
    /// Unused sequence number: written 0, ignored.
    pub const SEQ: usize = 12;
    pub const WID: usize = 16;
    pub const CRC: usize = 20;
    /// Reserved: written 0, ignored.
    pub const RESERVED: usize = 24;
    pub const END: usize = 32;
}

pub const HEADER_LEN: usize = off::END;

/// Byte ranges of the header that legacy senders may leave uninitialised.
pub const UNINITIALISED: [std::ops::Range<usize>; 2] = [off::SEQ..off::WID, off::RESERVED..off::END];

/// The fields of a message header that carry meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct MsgHeader {
    /// Data encoding: `ENC_XDR`, `ENC_TRACE`, or the sender's data signature for raw/in-place.
    pub enc: i32,
    pub tag: i32,
    pub ctx: i32,
    /// Wait id: requests carry the requester's, replies echo it.
    pub wid: i32,
    /// Checksum; 0 unless the sender was built with MCHECKSUM.
    pub crc: i32,
}

impl MsgHeader {
    pub fn parse(buf: &[u8]) -> Result<MsgHeader> {
        if buf.len() < HEADER_LEN {
            return Err(ParseError::truncated(
                "message header",
                buf.len(),
                HEADER_LEN,
                buf.len(),
            ));
        }
        Ok(MsgHeader {
            enc: BigEndian::read_i32(&buf[off::ENC..]),
            tag: BigEndian::read_i32(&buf[off::TAG..]),
            ctx: BigEndian::read_i32(&buf[off::CTX..]),
            wid: BigEndian::read_i32(&buf[off::WID..]),
            crc: BigEndian::read_i32(&buf[off::CRC..]),
        })
    }

    pub fn emit(&self, buf: &mut [u8; HEADER_LEN]) {
        buf.fill(0);
        BigEndian::write_i32(&mut buf[off::ENC..], self.enc);
        BigEndian::write_i32(&mut buf[off::TAG..], self.tag);
        BigEndian::write_i32(&mut buf[off::CTX..], self.ctx);
        BigEndian::write_i32(&mut buf[off::WID..], self.wid);
        BigEndian::write_i32(&mut buf[off::CRC..], self.crc);
    }

    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        self.emit(&mut b);
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codes::{Tm, ENC_XDR, SYSCTX_TM};

    #[test]
    fn connect_header_from_capture() {
        let hex = "10000000800100010007fffe0000000000000001000000000000000000000000";
        let b: Vec<u8> = (0..32)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        let h = MsgHeader::parse(&b).unwrap();
        assert_eq!(
            h,
            MsgHeader {
                enc: ENC_XDR,
                tag: Tm::Connect.code(),
                ctx: SYSCTX_TM,
                wid: 1,
                crc: 0
            }
        );
        assert_eq!(&h.to_bytes()[..], &b[..]);
    }

    #[test]
    fn garbage_in_unused_fields_is_ignored() {
        let mut b = MsgHeader {
            enc: ENC_XDR,
            tag: 7,
            ctx: 0,
            wid: 0,
            crc: 0,
        }
        .to_bytes();
        b[12..16].copy_from_slice(b"ed f");
        b[24..32].copy_from_slice(b"s://www.");
        assert_eq!(MsgHeader::parse(&b).unwrap().tag, 7);
        assert!(MsgHeader::parse(&b[..31]).is_err());
    }
}
