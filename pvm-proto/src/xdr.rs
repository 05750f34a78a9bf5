//! XDR primitives as the pvmd and libpvm use them for protocol bodies: big-endian 4-byte units,
//! strings as `int n (strlen+1); n bytes incl. NUL; pad to 4`, byte arrays padded to 4.
//!
//! Pad bytes may be garbage in legacy output: the reader skips them unchecked, the writer writes zeros.

use crate::error::{ErrorKind, ParseError, Result};
use byteorder::{BigEndian, ByteOrder};

/// Rounds `n` up to a multiple of 4.
pub const fn pad4(n: usize) -> usize {
    (n + 3) & !3
}

/// Reads XDR items from a body, tracking the byte offset for errors.
#[derive(Debug, Clone)]
pub struct XdrReader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Offset of `buf[0]` within the unit being parsed, so errors point into the whole message.
    base: usize,
}

impl<'a> XdrReader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        XdrReader { buf, pos: 0, base: 0 }
    }

    /// A reader whose error offsets are counted from `base`.
    pub fn with_base(buf: &'a [u8], base: usize) -> Self {
        XdrReader { buf, pos: 0, base }
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    /// The absolute offset (for errors) of the next byte.
    pub fn offset(&self) -> usize {
        self.base + self.pos
    }

    pub fn error(&self, field: &'static str, kind: ErrorKind) -> ParseError {
        ParseError::new(field, self.offset(), kind)
    }

    fn take(&mut self, field: &'static str, n: usize) -> Result<&'a [u8]> {
        if self.remaining() < n {
            return Err(ParseError::truncated(field, self.offset(), n, self.remaining()));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub fn int(&mut self, field: &'static str) -> Result<i32> {
        Ok(BigEndian::read_i32(self.take(field, 4)?))
    }

    pub fn uint(&mut self, field: &'static str) -> Result<u32> {
        Ok(BigEndian::read_u32(self.take(field, 4)?))
    }

    pub fn hyper(&mut self, field: &'static str) -> Result<i64> {
        Ok(BigEndian::read_i64(self.take(field, 8)?))
    }

    pub fn float(&mut self, field: &'static str) -> Result<f32> {
        Ok(BigEndian::read_f32(self.take(field, 4)?))
    }

    pub fn double(&mut self, field: &'static str) -> Result<f64> {
        Ok(BigEndian::read_f64(self.take(field, 8)?))
    }

    /// A count or length: non-negative and no larger than what is left (each item takes at least
    /// `min_item` bytes), so a hostile count can never cause a large allocation.
    pub fn count(&mut self, field: &'static str, min_item: usize) -> Result<usize> {
        let at = self.offset();
        let n = self.int(field)?;
        if n < 0 {
            return Err(ParseError::new(field, at, ErrorKind::NegativeLength(n)));
        }
        let n = n as usize;
        let max = self.remaining() / min_item.max(1);
        if n > max {
            return Err(ParseError::new(
                field,
                at,
                ErrorKind::TooLong {
                    len: n as u64,
                    max: max as u64,
                },
            ));
        }
        Ok(n)
    }

    /// `n` bytes followed by padding to a multiple of 4 (the padding may be missing at the very
    /// end of a body, as the legacy pvmd sometimes sends it).
    pub fn opaque(&mut self, field: &'static str, n: usize) -> Result<&'a [u8]> {
        let s = self.take(field, n)?;
        let pad = pad4(n) - n;
        self.pos += pad.min(self.remaining());
        Ok(s)
    }

    /// An XDR string as the legacy code writes it: length including the NUL, bytes, pad.
    /// Returns the bytes without the NUL. A length of 0 (no NUL at all) reads as the empty string.
    pub fn string_bytes(&mut self, field: &'static str) -> Result<&'a [u8]> {
        let at = self.offset();
        let n = self.count(field, 1)?;
        let s = self.opaque(field, n)?;
        match s.split_last() {
            None => Ok(s),
            Some((0, body)) => Ok(body),
            Some(_) => Err(ParseError::new(
                field,
                at,
                ErrorKind::BadString("missing NUL terminator"),
            )),
        }
    }

    /// A string decoded lossily: protocol strings are paths, host names and environment entries.
    pub fn string(&mut self, field: &'static str) -> Result<String> {
        Ok(String::from_utf8_lossy(self.string_bytes(field)?).into_owned())
    }

    /// Fails with `Trailing` if bytes are left.
    pub fn finish(&self, field: &'static str) -> Result<()> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(self.error(field, ErrorKind::Trailing(self.remaining())))
        }
    }
}

/// Appends XDR items to a byte vector.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct XdrWriter {
    pub buf: Vec<u8>,
}

impl XdrWriter {
    pub fn new() -> Self {
        XdrWriter::default()
    }

    pub fn into_inner(self) -> Vec<u8> {
        self.buf
    }

    pub fn int(&mut self, v: i32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn uint(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn hyper(&mut self, v: i64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn float(&mut self, v: f32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn double(&mut self, v: f64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// Bytes, then zero padding to a multiple of 4.
    pub fn opaque(&mut self, b: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(b);
        self.buf.resize(self.buf.len() + pad4(b.len()) - b.len(), 0);
        self
    }

    /// A string: length including the NUL, bytes, NUL, padding.
    pub fn string_bytes(&mut self, s: &[u8]) -> &mut Self {
        self.int((s.len() + 1) as i32);
        self.buf.extend_from_slice(s);
        self.buf.push(0);
        let n = s.len() + 1;
        self.buf.resize(self.buf.len() + pad4(n) - n, 0);
        self
    }

    pub fn string(&mut self, s: &str) -> &mut Self {
        self.string_bytes(s.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_round_trip_matches_capture() {
        // "/tmp/pvmtmp010862.0" from wire.md 7.1.
        let mut w = XdrWriter::new();
        w.int(1318).string("/tmp/pvmtmp010862.0");
        let expect = "0000052600000014".to_string() + "2f746d702f70766d746d703031303836322e3000";
        let hex: String = w.buf.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, expect);
        let mut r = XdrReader::new(&w.buf);
        assert_eq!(r.int("version").unwrap(), 1318);
        assert_eq!(r.string("path").unwrap(), "/tmp/pvmtmp010862.0");
        r.finish("body").unwrap();
    }

    #[test]
    fn hostile_counts_are_bounded() {
        let b = [0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0];
        let e = XdrReader::new(&b).count("n", 4).unwrap_err();
        assert!(matches!(e.kind, ErrorKind::TooLong { .. }));
        let b = [0xff, 0xff, 0xff, 0xfe];
        let e = XdrReader::with_base(&b, 48).string("name").unwrap_err();
        assert_eq!(e.offset, 48);
        assert!(matches!(e.kind, ErrorKind::NegativeLength(-2)));
        let b = [0, 0, 0, 2, b'a', b'b', 0, 0];
        assert!(matches!(
            XdrReader::new(&b).string("s").unwrap_err().kind,
            ErrorKind::BadString(_)
        ));
    }
}
