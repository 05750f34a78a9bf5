//! Parse errors that say which field, at which byte offset, went wrong.

use thiserror::Error;

/// What was wrong with a field.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ErrorKind {
    /// The input ended before the field did.
    #[error("truncated: need {need} bytes, {have} left")]
    Truncated { need: usize, have: usize },
    /// A length or count field claims more than the input (or a hard cap) allows.
    #[error("length {len} exceeds the limit of {max}")]
    TooLong { len: u64, max: u64 },
    /// A negative length or count.
    #[error("negative length {0}")]
    NegativeLength(i32),
    /// A value outside the set the protocol defines.
    #[error("invalid value {value:#x}: {why}")]
    Invalid { value: i64, why: &'static str },
    /// Bytes remained after a body that has a fixed shape.
    #[error("{0} trailing bytes")]
    Trailing(usize),
    /// A string without its terminating NUL, or not valid UTF-8 where text is required.
    #[error("malformed string: {0}")]
    BadString(&'static str),
}

/// A parse failure: the field name, its byte offset from the start of the parsed unit, and why.
///
/// Every `parse` in this crate returns either a value or one of these; none panics on any input.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{field} at byte {offset}: {kind}")]
pub struct ParseError {
    pub field: &'static str,
    pub offset: usize,
    pub kind: ErrorKind,
}

impl ParseError {
    pub fn new(field: &'static str, offset: usize, kind: ErrorKind) -> Self {
        ParseError { field, offset, kind }
    }

    pub fn truncated(field: &'static str, offset: usize, need: usize, have: usize) -> Self {
        Self::new(field, offset, ErrorKind::Truncated { need, have })
    }

    pub fn invalid(field: &'static str, offset: usize, value: i64, why: &'static str) -> Self {
        Self::new(field, offset, ErrorKind::Invalid { value, why })
    }

    /// The same error, moved `by` bytes further into an enclosing unit.
    pub fn shifted(mut self, by: usize) -> Self {
        self.offset += by;
        self
    }
}

pub type Result<T> = std::result::Result<T, ParseError>;
