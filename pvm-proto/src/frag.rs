//! The 16-byte fragment headers: one for task streams, one for pvmd datagrams.
//!
//! Both start with `dst` and `src` tids. After that, a stream fragment carries the payload length;
//! a datagram carries a sequence and an acknowledgement number. Byte 12 holds the flags in both;
//! bytes 13..16 are written as zero and never read.

use crate::error::{ErrorKind, ParseError, Result};
use crate::tid::Tid;
use byteorder::{BigEndian, ByteOrder};

/// Field offsets shared by both headers.
pub mod off {
    pub const DST: usize = 0;
    pub const SRC: usize = 4;
    /// Stream header: payload length.
    pub const LEN: usize = 8;
    /// Datagram header: sequence number.
    pub const SEQ: usize = 8;
    /// Datagram header: acknowledged sequence number.
    pub const ACK: usize = 10;
    pub const FLAGS: usize = 12;
    pub const END: usize = 16;
}

pub const HEADER_LEN: usize = off::END;

bitflags::bitflags! {
    /// Fragment flags. Streams use SOM and EOM only; datagrams use all five.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct FragFlags: u8 {
        /// First fragment of a message: the 32-byte message header follows.
        const SOM = 0x01;
        /// Last fragment of a message.
        const EOM = 0x02;
        /// Carries data; the sequence number is valid.
        const DAT = 0x04;
        /// Orderly close of a host link; consumes a sequence number.
        const FIN = 0x08;
        /// The acknowledgement field is valid.
        const ACK = 0x10;
        // Other bits are kept so that a header re-emits byte for byte.
        const _ = !0;
    }
}

fn need(field: &'static str, buf: &[u8], end: usize) -> Result<()> {
    if buf.len() < end {
        Err(ParseError::truncated(field, buf.len().min(end), end, buf.len()))
    } else {
        Ok(())
    }
}

/// Header of a fragment on a task <-> pvmd or task <-> task stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StreamFragHeader {
    pub dst: Tid,
    pub src: Tid,
    /// Bytes following this header in the fragment (message header included when SOM).
    pub len: u32,
    pub flags: FragFlags,
}

impl StreamFragHeader {
    /// Parses the first 16 bytes of `buf`. `max_len` caps the length field (a reader must not
    /// allocate what a hostile peer claims).
    pub fn parse(buf: &[u8], max_len: u32) -> Result<StreamFragHeader> {
        need("stream fragment header", buf, HEADER_LEN)?;
        let len = BigEndian::read_u32(&buf[off::LEN..]);
        if len > max_len {
            return Err(ParseError::new(
                "fragment length",
                off::LEN,
                ErrorKind::TooLong {
                    len: len.into(),
                    max: max_len.into(),
                },
            ));
        }
        Ok(StreamFragHeader {
            dst: Tid(BigEndian::read_i32(&buf[off::DST..])),
            src: Tid(BigEndian::read_i32(&buf[off::SRC..])),
            len,
            flags: FragFlags::from_bits_retain(buf[off::FLAGS]),
        })
    }

    pub fn emit(&self, buf: &mut [u8; HEADER_LEN]) {
        BigEndian::write_i32(&mut buf[off::DST..], self.dst.0);
        BigEndian::write_i32(&mut buf[off::SRC..], self.src.0);
        BigEndian::write_u32(&mut buf[off::LEN..], self.len);
        buf[off::FLAGS] = self.flags.bits();
        buf[off::FLAGS + 1..].fill(0);
    }

    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        self.emit(&mut b);
        b
    }
}

/// Header of a pvmd <-> pvmd datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DatagramHeader {
    pub dst: Tid,
    pub src: Tid,
    pub seq: u16,
    pub ack: u16,
    pub flags: FragFlags,
}

impl DatagramHeader {
    pub fn parse(buf: &[u8]) -> Result<DatagramHeader> {
        need("datagram header", buf, HEADER_LEN)?;
        Ok(DatagramHeader {
            dst: Tid(BigEndian::read_i32(&buf[off::DST..])),
            src: Tid(BigEndian::read_i32(&buf[off::SRC..])),
            seq: BigEndian::read_u16(&buf[off::SEQ..]),
            ack: BigEndian::read_u16(&buf[off::ACK..]),
            flags: FragFlags::from_bits_retain(buf[off::FLAGS]),
        })
    }

    pub fn emit(&self, buf: &mut [u8; HEADER_LEN]) {
        BigEndian::write_i32(&mut buf[off::DST..], self.dst.0);
        BigEndian::write_i32(&mut buf[off::SRC..], self.src.0);
        BigEndian::write_u16(&mut buf[off::SEQ..], self.seq);
        BigEndian::write_u16(&mut buf[off::ACK..], self.ack);
        buf[off::FLAGS] = self.flags.bits();
        buf[off::FLAGS + 1..].fill(0);
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

    #[test]
    fn stream_header_from_capture() {
        // TM_CONNECT request, wire.md 7.1.
        let b = [0x80, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0x3c, 3, 0, 0, 0];
        let h = StreamFragHeader::parse(&b, 1 << 20).unwrap();
        assert_eq!(h.dst, Tid::LOCAL_PVMD);
        assert_eq!(h.src, Tid::UNCONNECTED);
        assert_eq!(h.len, 60);
        assert_eq!(h.flags, FragFlags::SOM | FragFlags::EOM);
        assert_eq!(h.to_bytes(), b);
    }

    #[test]
    fn datagram_ack_from_capture() {
        // wire.md 7.4: ACK of seq 3.
        let b = [0x80, 4, 0, 0, 0x80, 8, 0, 0, 0, 0, 0, 3, 0x10, 0, 0, 0];
        let h = DatagramHeader::parse(&b).unwrap();
        assert_eq!((h.seq, h.ack, h.flags), (0, 3, FragFlags::ACK));
        assert_eq!(h.to_bytes(), b);
    }

    #[test]
    fn short_and_huge_inputs_are_errors() {
        let e = StreamFragHeader::parse(&[0; 15], 100).unwrap_err();
        assert_eq!(e.field, "stream fragment header");
        let mut b = [0u8; 16];
        b[8..12].copy_from_slice(&0xffff_ffffu32.to_be_bytes());
        let e = StreamFragHeader::parse(&b, 1 << 20).unwrap_err();
        assert_eq!((e.field, e.offset), ("fragment length", 8));
        assert!(DatagramHeader::parse(&[0; 3]).is_err());
    }
}
