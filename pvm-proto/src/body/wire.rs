//! Strict XDR reading and pad-tracking writing for protocol bodies.
//!
//! Stricter than [`XdrReader`] in the two ways that keep `emit(decode(b))` equal to `b` (pad bytes
//! aside): a string must be a C string as legacy `pkstr` writes it (length >= 1, the last byte the
//! only NUL), and the padding after a string or byte array must be present in full.

use crate::error::{ErrorKind, ParseError, Result};
use crate::tid::Tid;
use crate::xdr::{pad4, XdrReader};
use std::fmt;
use std::ops::Range;

/// A protocol string: the bytes of a C string, without its NUL. Not necessarily UTF-8 (paths,
/// environment entries); shown quoted with non-printing bytes escaped.
#[derive(Clone, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct XStr(pub Vec<u8>);

impl XStr {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The text, with invalid UTF-8 replaced.
    pub fn to_string_lossy(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }
}

impl From<&str> for XStr {
    fn from(s: &str) -> XStr {
        XStr(s.as_bytes().to_vec())
    }
}

impl From<String> for XStr {
    fn from(s: String) -> XStr {
        XStr(s.into_bytes())
    }
}

impl PartialEq<&str> for XStr {
    fn eq(&self, other: &&str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl fmt::Display for XStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MAX: usize = 60;
        f.write_str("\"")?;
        let shown = &self.0[..self.0.len().min(MAX)];
        write!(f, "{}", shown.escape_ascii())?;
        if self.0.len() > MAX {
            write!(f, "\"…({} bytes)", self.0.len())
        } else {
            f.write_str("\"")
        }
    }
}

impl fmt::Debug for XStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Reader over one body; error offsets count from the start of the body.
pub struct Rd<'a> {
    pub x: XdrReader<'a>,
}

impl<'a> Rd<'a> {
    pub fn new(b: &'a [u8]) -> Self {
        Rd { x: XdrReader::new(b) }
    }

    pub fn is_empty(&self) -> bool {
        self.x.is_empty()
    }

    pub fn remaining(&self) -> usize {
        self.x.remaining()
    }

    pub fn offset(&self) -> usize {
        self.x.offset()
    }

    pub fn int(&mut self, field: &'static str) -> Result<i32> {
        self.x.int(field)
    }

    /// Everything left, unpadded: for bytes a legacy reader never looks at.
    pub fn rest(&mut self) -> Vec<u8> {
        let v = self.x.rest().to_vec();
        // Cannot fail: exactly the remaining bytes, and padding is clipped at the end.
        let _ = self.x.opaque("rest", v.len());
        v
    }

    pub fn tid(&mut self, field: &'static str) -> Result<Tid> {
        self.x.int(field).map(Tid)
    }

    /// A non-negative count of items each at least `min_item` bytes long, bounded by the input.
    pub fn count(&mut self, field: &'static str, min_item: usize) -> Result<usize> {
        self.x.count(field, min_item)
    }

    /// Checks a count that was read as a plain int (because negative values mean an error code).
    pub fn bound(&self, field: &'static str, at: usize, n: i32, min_item: usize) -> Result<usize> {
        if n < 0 {
            return Err(ParseError::new(field, at, ErrorKind::NegativeLength(n)));
        }
        let max = self.remaining() / min_item.max(1);
        if n as usize > max {
            return Err(ParseError::new(
                field,
                at,
                ErrorKind::TooLong {
                    len: n as u64,
                    max: max as u64,
                },
            ));
        }
        Ok(n as usize)
    }

    /// `n` bytes and their full padding.
    pub fn opaque(&mut self, field: &'static str, n: usize) -> Result<Vec<u8>> {
        let need = pad4(n);
        if self.remaining() < need {
            return Err(ParseError::truncated(field, self.offset(), need, self.remaining()));
        }
        Ok(self.x.opaque(field, n)?.to_vec())
    }

    /// A legacy `pkstr` string.
    pub fn str(&mut self, field: &'static str) -> Result<XStr> {
        let at = self.offset();
        let n = self.x.int(field)?;
        if n < 1 {
            return Err(ParseError::new(
                field,
                at,
                if n < 0 {
                    ErrorKind::NegativeLength(n)
                } else {
                    ErrorKind::BadString("length 0: no NUL terminator")
                },
            ));
        }
        let n = n as usize;
        if n > self.remaining() {
            return Err(ParseError::new(
                field,
                at,
                ErrorKind::TooLong {
                    len: n as u64,
                    max: self.remaining() as u64,
                },
            ));
        }
        let mut b = self.opaque(field, n)?;
        let nul = b.pop();
        if nul != Some(0) {
            return Err(ParseError::new(
                field,
                at,
                ErrorKind::BadString("missing NUL terminator"),
            ));
        }
        if b.contains(&0) {
            return Err(ParseError::new(
                field,
                at,
                ErrorKind::BadString("NUL inside the string"),
            ));
        }
        Ok(XStr(b))
    }

    /// A list of `n` items, `n` already bounded.
    pub fn list<T>(&mut self, n: usize, mut item: impl FnMut(&mut Self) -> Result<T>) -> Result<Vec<T>> {
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(item(self)?);
        }
        Ok(v)
    }

    /// Items until the body ends.
    pub fn until_end<T>(&mut self, mut item: impl FnMut(&mut Self) -> Result<T>) -> Result<Vec<T>> {
        let mut v = Vec::new();
        while !self.is_empty() {
            v.push(item(self)?);
        }
        Ok(v)
    }

    pub fn tids(&mut self, field: &'static str, n: usize) -> Result<Vec<Tid>> {
        self.list(n, |r| r.tid(field))
    }

    pub fn ints(&mut self, field: &'static str, n: usize) -> Result<Vec<i32>> {
        self.list(n, |r| r.int(field))
    }

    pub fn finish(&self, field: &'static str) -> Result<()> {
        self.x.finish(field)
    }
}

/// Writer that remembers where it put pad bytes, so callers can mask the same bytes in a
/// captured body.
#[derive(Default)]
pub struct Wr {
    pub buf: Vec<u8>,
    pub pads: Vec<Range<usize>>,
}

impl Wr {
    pub fn int(&mut self, v: i32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn tid(&mut self, t: Tid) -> &mut Self {
        self.int(t.0)
    }

    pub fn ints(&mut self, v: &[i32]) -> &mut Self {
        for &x in v {
            self.int(x);
        }
        self
    }

    pub fn tids(&mut self, v: &[Tid]) -> &mut Self {
        for &x in v {
            self.tid(x);
        }
        self
    }

    /// A length that the legacy sender writes as a C int.
    pub fn len(&mut self, n: usize) -> &mut Self {
        self.int(i32::try_from(n).unwrap_or(i32::MAX))
    }

    fn pad(&mut self, n: usize) {
        let p = pad4(n) - n;
        if p > 0 {
            let at = self.buf.len();
            self.buf.resize(at + p, 0);
            self.pads.push(at..at + p);
        }
    }

    pub fn opaque(&mut self, b: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(b);
        self.pad(b.len());
        self
    }

    pub fn str(&mut self, s: &XStr) -> &mut Self {
        self.len(s.0.len() + 1);
        self.buf.extend_from_slice(&s.0);
        self.buf.push(0);
        self.pad(s.0.len() + 1);
        self
    }

    pub fn raw(&mut self, b: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(b);
        self
    }
}

/// Writes `items` separated by ", ", at most `max` of them, then "… (n total)".
pub fn list<T: fmt::Display>(f: &mut fmt::Formatter<'_>, items: &[T], max: usize) -> fmt::Result {
    f.write_str("[")?;
    for (i, x) in items.iter().take(max).enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{x}")?;
    }
    if items.len() > max {
        write!(f, ", … {} total", items.len())?;
    }
    f.write_str("]")
}

/// Bytes as hex, abbreviated.
pub fn hex(f: &mut fmt::Formatter<'_>, b: &[u8], max: usize) -> fmt::Result {
    for x in b.iter().take(max) {
        write!(f, "{x:02x}")?;
    }
    if b.len() > max {
        write!(f, "…({} bytes)", b.len())?;
    }
    Ok(())
}

/// A status or result int: the number, and the PVM error name if it is one.
pub struct Code(pub i32);

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match crate::codes::PvmError::from_code(self.0) {
            Some(e) if self.0 < 0 => write!(f, "{} ({})", self.0, e.name()),
            _ => write!(f, "{}", self.0),
        }
    }
}
