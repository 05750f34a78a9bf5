//! User-data encodings of message bodies (`pvm_pk*` / `pvm_upk*`), byte-exact with libpvm 3.4.
//!
//! A body is a list of fragments. [`Packer`] builds one the way the legacy library does, so the
//! fragments it produces have the same lengths as those a legacy task would send for the same
//! pack calls and fragment size; [`Unpacker`] reads one back.
//!
//! # Encodings
//! * **XDR** (`PvmDataDefault`, header `enc` = `0x10000000`): big-endian 4-byte units. short and
//!   ushort take 4 bytes, both **sign-extended** (libpvm packs ushort with its short encoder, so
//!   `0xffff` travels as `ffffffff`, not `0000ffff` as wire.md §6.2 says); int, uint, float 4; double 8; cplx two floats;
//!   dcplx two doubles; long and ulong **4 bytes** (see "long" below). A byte array is copied as
//!   is and the *fragment* is then padded to a multiple of 4; a string is `int n = strlen + 1`,
//!   then the `n` bytes including the NUL, then the pad. Legacy senders leave pad bytes
//!   uninitialised: we write zeros and skip them unchecked on reading.
//! * **Raw** (`PvmDataRaw`, `enc` = the sender's [data signature](crate::dsig)): the native memory
//!   image with no padding; long is 8 bytes; a string is a native int `n` and the `n` bytes.
//! * **InPlace** (`PvmDataInPlace`): the same bytes as raw (and the same `enc` on the wire), but
//!   every pack call becomes its own fragment, of whatever length; strided data and strings are
//!   `PvmNotImpl`.
//!
//! Stride (`pk*(ptr, cnt, stride)`) only selects every stride-th element; neither counts nor
//! strides are encoded.
//!
//! # Fragment sizing (read in pmsg.c and lpvmpack.c, verified on the installed 3.4.6 library)
//! `tests/legacy_pack.rs` packs ~190 messages (every type, stride, encoding, fragment sizes from
//! 52 to 1 MiB, embedded messages) with libpvm3 and with [`Packer`] and requires identical
//! fragments, and has libpvm3 unpack our fragments. What it established is stated below.
//! * A task's fragment size is `pvmfrgsiz`: 4080 by default (`UDPMAXLEN`), replaced by the
//!   `udpmax` of the TM_CONN2 reply (4080 from a Linux pvmd), settable with
//!   `pvm_setopt(PvmFragSize, n)` for 52 <= n <= 1048576.
//! * Every fragment buffer is allocated with that size and 48 bytes of headroom (16 fragment
//!   header + 32 message header) reserved at the front (`pmsg_extend`), so a fragment carries at
//!   most `frag_size - 48` body bytes: **4032** by default. This holds for every fragment, not
//!   only the first; later fragments simply leave the message-header room unused.
//! * `pvm_initsend` (through `pvm_setsbuf`) creates the first, empty fragment of an XDR or raw
//!   message; an empty message is one empty fragment. An in-place message starts with none.
//! * Raw and byte arrays fill every fragment to the last byte and continue in a new one, so raw
//!   items (ints, doubles...) may be split between fragments.
//! * An XDR unit (4 bytes, or 8 for a double) is never split: if it does not fit, the fragment is
//!   closed short and the unit starts the next one. The real and imaginary parts of a complex
//!   number are separate units and may land in different fragments.
//! * Because fragment lengths are exact, the concatenated fragments are one contiguous stream;
//!   for XDR that stream is independent of the fragment size whenever the fragment capacity is a
//!   multiple of 4 (always, for sizes a legacy task would use; see [`PackOptions::frag_size`]).
//!
//! # long and ulong in XDR
//! The legacy library on LINUX64 (libtirpc's `xdr_long`) writes the low 32 bits and never
//! range-checks, and reads 4 bytes back **zero-extended** into a 64-bit long, even for
//! `pvm_upklong` (a packed -5 arrives as 4294967291). libpvm itself tests the range only when an
//! element does not fit in the current fragment, and then fails with PvmOverflow (see
//! [`LongOverflow::Legacy`]). These legacy behaviours are the defaults here
//! ([`LongOverflow::Legacy`], [`LongDecode::ZeroExtend`]) so that a Rust task behaves exactly
//! like a legacy one. [`LongOverflow::Truncate`] never fails; [`LongOverflow::Error`] returns
//! PvmOverflow for any value that does not fit, as the C source intended;
//! [`LongDecode::SignExtend`] sign-extends `long` (ulong always zero-extends).
//!
//! # Errors
//! Reading past the end is [`UnpackError::NoData`] (`PvmNoData`, "End of buffer"); data of a
//! body whose `enc` is neither XDR, trace nor our own signature is [`UnpackError::BadMsg`]
//! (`PvmBadMsg`), except bytes, which legacy lets through. Nothing panics, and nothing is
//! allocated before the bytes it stands for have been found in the body.

mod item;
mod pack;
mod unpack;

#[cfg(test)]
mod tests;

pub use item::{Complex32, Complex64, Item, Kind};
pub use pack::Packer;
pub use unpack::Unpacker;

use crate::codes::{PvmError, ENC_INPLACE, ENC_TRACE, ENC_XDR, MAXHDR, UDPMAXLEN};
use crate::dsig::DataSig;
use thiserror::Error;

/// The encodings a sender can choose (`pvm_initsend` / `pvm_mkbuf` argument).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// `PvmDataDefault` (0).
    Xdr,
    /// `PvmDataRaw` (1).
    Raw,
    /// `PvmDataInPlace` (2).
    InPlace,
}

impl Encoding {
    /// From the `pvm_initsend` argument. `PvmDataTrace` (4) is not a user-data encoding here.
    pub fn from_data_arg(arg: i32) -> Option<Encoding> {
        match arg {
            crate::codes::PVM_DATA_DEFAULT => Some(Encoding::Xdr),
            crate::codes::PVM_DATA_RAW => Some(Encoding::Raw),
            crate::codes::PVM_DATA_IN_PLACE => Some(Encoding::InPlace),
            _ => None,
        }
    }

    /// The message header `enc` a body of this encoding is sent with.
    pub fn wire_enc(self) -> i32 {
        match self {
            Encoding::Xdr => ENC_XDR,
            Encoding::Raw | Encoding::InPlace => DataSig::native_sig(),
        }
    }
}

/// How a receiver decodes a body, chosen from the header `enc` field as libpvm does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// `0x10000000`, and the trace encoding `0x40000000`, whose decoders are the XDR ones.
    Xdr,
    /// Our own data signature: raw native data.
    Native,
    /// `0x20000000`: an in-place buffer that never went over the wire; nothing can be unpacked.
    InPlace,
    /// Anything else, e.g. raw data from another architecture: only bytes can be unpacked.
    Alien,
}

impl Format {
    pub fn from_enc(enc: i32, my_dsig: i32) -> Format {
        if enc == my_dsig {
            Format::Native
        } else if enc == ENC_XDR || enc == ENC_TRACE {
            Format::Xdr
        } else if enc == ENC_INPLACE {
            Format::InPlace
        } else {
            Format::Alien
        }
    }
}

/// What to do when a `long`/`ulong` does not fit in the 4 bytes XDR gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LongOverflow {
    /// Exactly what libpvm 3.4.6 on LINUX64 does: send the low 32 bits and succeed, except for
    /// an out-of-range element that would start a new fragment. libtirpc's `xdr_long` never
    /// range-checks; libpvm only tests the value after `xdr_long` failed for lack of room, and
    /// then returns PvmOverflow, keeping the elements packed before it and leaving the
    /// fragment short (verified against the installed library by `tests/legacy_pack.rs`).
    #[default]
    Legacy,
    /// Always send the low 32 bits and succeed.
    Truncate,
    /// Fail with PvmOverflow before packing any element of the call (the C source's intent).
    Error,
}

/// How a 4-byte XDR `long` is widened to 64 bits on unpacking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LongDecode {
    /// Zero-extend, as the legacy library does (negative longs come back as large positives).
    #[default]
    ZeroExtend,
    /// Sign-extend `long`; `ulong` still zero-extends.
    SignExtend,
}

/// Options of a [`Packer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PackOptions {
    /// Fragment size including the 48 bytes of header room, as `pvm_setopt(PvmFragSize)` takes
    /// it: 52..=1048576, default 4080. For XDR the body capacity (`frag_size - 48`) is rounded
    /// down to a multiple of 4: with other capacities the legacy library pads byte arrays past
    /// the end of the fragment and overwrites them with the next item, so no exact behaviour
    /// exists to copy.
    pub frag_size: usize,
    pub long_overflow: LongOverflow,
    /// Keep the byte ranges (in the concatenated body) of XDR pad bytes, for tests that compare
    /// against legacy output, where those bytes are garbage.
    pub record_pads: bool,
}

impl Default for PackOptions {
    fn default() -> Self {
        PackOptions {
            frag_size: UDPMAXLEN,
            long_overflow: LongOverflow::Legacy,
            record_pads: false,
        }
    }
}

/// Smallest and largest `PvmFragSize` the legacy library accepts.
pub const MIN_FRAG_SIZE: usize = MAXHDR + 4;
pub const MAX_FRAG_SIZE: usize = 1 << 20;

/// A packing failure. A call that fails packs nothing, except with [`LongOverflow::Legacy`],
/// which keeps the elements before the one that failed, as libpvm does.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PackError {
    #[error("bad parameter: {0}")]
    BadParam(&'static str),
    #[error("element {index} ({value}) does not fit in a 4-byte XDR {kind}")]
    Overflow {
        kind: &'static str,
        index: usize,
        value: i128,
    },
    #[error("{0} is not possible in an in-place message")]
    NotImpl(&'static str),
    /// Legacy reports PvmNoMem when an XDR unit is larger than a whole fragment.
    #[error("a {unit}-byte XDR unit does not fit in an empty {capacity}-byte fragment")]
    FragTooSmall { unit: usize, capacity: usize },
}

impl PackError {
    /// The error code the legacy library returns for the same failure.
    pub fn pvm_error(&self) -> PvmError {
        match self {
            PackError::BadParam(_) => PvmError::BadParam,
            PackError::Overflow { .. } => PvmError::Overflow,
            PackError::NotImpl(_) => PvmError::NotImpl,
            PackError::FragTooSmall { .. } => PvmError::NoMem,
        }
    }
}

/// An unpacking failure. A failed call consumes nothing and writes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum UnpackError {
    #[error("end of buffer: {field} at byte {offset} needs {need} bytes, {have} left")]
    NoData {
        field: &'static str,
        offset: usize,
        need: usize,
        have: usize,
    },
    #[error("can't decode message: {field} at byte {offset}: {why}")]
    BadMsg {
        field: &'static str,
        offset: usize,
        why: &'static str,
    },
    #[error("bad parameter: {0}")]
    BadParam(&'static str),
}

impl UnpackError {
    /// The error code the legacy library returns for the same failure.
    pub fn pvm_error(&self) -> PvmError {
        match self {
            UnpackError::NoData { .. } => PvmError::NoData,
            UnpackError::BadMsg { .. } => PvmError::BadMsg,
            UnpackError::BadParam(_) => PvmError::BadParam,
        }
    }
}

/// An owned message body: the bytes of all fragments back to back, and where each fragment
/// starts. One allocation holds the whole body, so the concatenated stream costs nothing and a
/// fragment is a slice of it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MsgBody {
    enc: i32,
    data: Vec<u8>,
    /// Start offset of every fragment, ascending; fragment `i` ends where `i + 1` starts (the last
    /// one at `data.len()`).
    starts: Vec<usize>,
}

impl MsgBody {
    /// An empty body with no fragment. (A message with no fragment is sent as one empty one.)
    pub fn new(enc: i32) -> MsgBody {
        MsgBody {
            enc,
            data: Vec::new(),
            starts: Vec::new(),
        }
    }

    /// A body received as these fragments (their payloads after the headers).
    pub fn from_fragments<'a>(enc: i32, frags: impl IntoIterator<Item = &'a [u8]>) -> MsgBody {
        let mut b = MsgBody::new(enc);
        for f in frags {
            b.push_fragment(f);
        }
        b
    }

    /// A body of one fragment that takes `data` as it is (a reassembled message: no copy).
    pub fn from_vec(enc: i32, data: Vec<u8>) -> MsgBody {
        MsgBody {
            enc,
            data,
            starts: vec![0],
        }
    }

    /// The bytes of a body of at most one fragment, to append to: a receiver that delivers a
    /// message before all of it has arrived fills its buffer in place. None for a body of
    /// several fragments (appending would lengthen the last one).
    pub fn single_mut(&mut self) -> Option<&mut Vec<u8>> {
        if self.starts.len() > 1 {
            return None;
        }
        Some(&mut self.data)
    }

    /// Appends a received fragment.
    pub fn push_fragment(&mut self, frag: &[u8]) {
        self.starts.push(self.data.len());
        self.data.extend_from_slice(frag);
    }

    /// The header `enc` field this body is sent with or was received with.
    pub fn enc(&self) -> i32 {
        self.enc
    }

    pub fn set_enc(&mut self, enc: i32) {
        self.enc = enc;
    }

    /// Body length: the sum of the fragment lengths (what `pvm_bufinfo` reports).
    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// All fragments back to back.
    pub fn bytes(&self) -> &[u8] {
        &self.data
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.data
    }

    pub fn fragment_count(&self) -> usize {
        self.starts.len()
    }

    pub fn fragment(&self, i: usize) -> Option<&[u8]> {
        let start = *self.starts.get(i)?;
        let end = self.starts.get(i + 1).copied().unwrap_or(self.data.len());
        self.data.get(start..end)
    }

    pub fn fragments(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        (0..self.starts.len()).map(move |i| self.fragment(i).unwrap_or_default())
    }

    pub fn fragment_lens(&self) -> Vec<usize> {
        self.fragments().map(<[u8]>::len).collect()
    }

    /// An [`Unpacker`] at the start of this body, decoding per its `enc` field and this host's
    /// data signature, with legacy `long` handling.
    pub fn unpacker(&self) -> Unpacker<'_> {
        Unpacker::new(self)
    }
}

/// A message packed inside another (`pvm_pkmesg`; the mailbox stores messages this way). The
/// inner body's `enc` is the embedded `enc` field.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EmbeddedMesg {
    pub ctx: i32,
    pub tag: i32,
    pub wid: i32,
    pub crc: i32,
    pub src: i32,
    pub dst: i32,
    pub body: MsgBody,
}
