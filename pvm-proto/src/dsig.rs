//! The data signature ("dsig"): a 32-bit word describing a host's native number formats.
//!
//! A raw or in-place message carries its sender's dsig in the message header `enc` field. A
//! receiver decodes such a body only when the dsig equals its own; any other value that is not
//! one of the fixed encodings (XDR, trace) makes the body "alien" and data unpacks fail with
//! PvmBadMsg. A Rust task must therefore announce exactly the value a legacy task on the same
//! architecture would compute, or legacy peers will refuse its raw messages.
//!
//! Layout (wire.md §6.1), least significant bit first:
//!
//! | bits  | field                   |
//! |-------|-------------------------|
//! | 0-2   | log2(sizeof short)      |
//! | 3-4   | short byte order        |
//! | 5-7   | log2(sizeof int)        |
//! | 8-9   | int byte order          |
//! | 10-12 | log2(sizeof long)       |
//! | 13-14 | long byte order         |
//! | 15-18 | float format            |
//! | 19-20 | float byte order        |
//! | 21-24 | double format           |
//! | 25-26 | double byte order       |
//! | 27-31 | zero                    |

use std::os::raw::{c_int, c_long, c_short};

/// The memory image of the integer of type `$t` whose byte `i` (counting from the least
/// significant) holds the value `i`.
macro_rules! probe_image {
    ($t:ty) => {{
        let mut v: $t = 0;
        for i in 0..std::mem::size_of::<$t>() {
            v |= (i as $t) << (8 * i);
        }
        v.to_ne_bytes()
    }};
}

/// Bit offsets of the five fields, kept in one place.
pub mod shift {
    pub const SHORT: u32 = 0;
    pub const INT: u32 = 5;
    pub const LONG: u32 = 10;
    pub const FLOAT: u32 = 15;
    pub const DOUBLE: u32 = 21;
}

/// Bits 27..31 are never set by a legacy host.
pub const UNUSED_BITS: u32 = 0xf800_0000;

/// The dsig of x86-64 Linux (`dsig<4230209>` in the slave start-up line).
pub const X86_64_LINUX: i32 = 0x0040_8c41;
/// The dsig of 32-bit x86 Linux, where `long` has 4 bytes.
pub const I386_LINUX: i32 = 0x0040_8841;

/// How the bytes of a multi-byte number are ordered in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ByteOrder {
    /// Least significant byte first (0 1 2 3).
    Little = 0,
    /// Little endian with the halves swapped (1 0 3 2).
    LittleHalfSwapped = 1,
    /// Big endian with the halves swapped (2 3 0 1).
    BigHalfSwapped = 2,
    /// Most significant byte first (3 2 1 0).
    Big = 3,
}

impl ByteOrder {
    fn from_bits(b: u32) -> ByteOrder {
        match b & 3 {
            0 => ByteOrder::Little,
            1 => ByteOrder::LittleHalfSwapped,
            2 => ByteOrder::BigHalfSwapped,
            _ => ByteOrder::Big,
        }
    }
}

/// Floating-point formats a legacy host can announce (the index of its signature table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FloatFormat {
    Unknown,
    IeeeSingle,
    IeeeDouble,
    Cray,
    ConvexSingle,
    ConvexDouble,
    /// A code the legacy table leaves undefined (3, 7..15); kept so that a dsig re-encodes exactly.
    Undefined(u8),
}

impl FloatFormat {
    pub const fn code(self) -> u8 {
        match self {
            FloatFormat::Unknown => 0,
            FloatFormat::IeeeSingle => 1,
            FloatFormat::IeeeDouble => 2,
            FloatFormat::Cray => 4,
            FloatFormat::ConvexSingle => 5,
            FloatFormat::ConvexDouble => 6,
            FloatFormat::Undefined(c) => c & 0xf,
        }
    }

    pub const fn from_code(c: u8) -> FloatFormat {
        match c & 0xf {
            0 => FloatFormat::Unknown,
            1 => FloatFormat::IeeeSingle,
            2 => FloatFormat::IeeeDouble,
            4 => FloatFormat::Cray,
            5 => FloatFormat::ConvexSingle,
            6 => FloatFormat::ConvexDouble,
            c => FloatFormat::Undefined(c),
        }
    }
}

/// Size and byte order of one integer type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IntLayout {
    /// log2 of the size in bytes (0..=7).
    pub log2_size: u8,
    pub order: ByteOrder,
}

impl IntLayout {
    pub const fn size(self) -> usize {
        1usize << self.log2_size
    }

    fn bits(self) -> u32 {
        ((self.order as u32) << 3) | (self.log2_size as u32 & 7)
    }

    fn from_bits(b: u32) -> IntLayout {
        IntLayout {
            log2_size: (b & 7) as u8,
            order: ByteOrder::from_bits(b >> 3),
        }
    }
}

/// Format and byte order of one floating-point type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FloatLayout {
    pub format: FloatFormat,
    pub order: ByteOrder,
}

impl FloatLayout {
    fn bits(self) -> u32 {
        ((self.order as u32) << 4) | self.format.code() as u32
    }

    fn from_bits(b: u32) -> FloatLayout {
        FloatLayout {
            format: FloatFormat::from_code((b & 0xf) as u8),
            order: ByteOrder::from_bits(b >> 4),
        }
    }
}

/// A decoded data signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DataSig {
    pub short: IntLayout,
    pub int: IntLayout,
    pub long: IntLayout,
    pub float: FloatLayout,
    pub double: FloatLayout,
}

impl DataSig {
    /// The 32-bit value carried on the wire.
    pub fn encode(&self) -> i32 {
        let v = (self.short.bits() << shift::SHORT)
            | (self.int.bits() << shift::INT)
            | (self.long.bits() << shift::LONG)
            | (self.float.bits() << shift::FLOAT)
            | (self.double.bits() << shift::DOUBLE);
        v as i32
    }

    /// Splits a wire value into its fields. Bits 27..31 are ignored (legacy hosts leave them 0;
    /// [`DataSig::is_canonical`] tells whether they were).
    pub fn decode(sig: i32) -> DataSig {
        let v = sig as u32;
        DataSig {
            short: IntLayout::from_bits(v >> shift::SHORT),
            int: IntLayout::from_bits(v >> shift::INT),
            long: IntLayout::from_bits(v >> shift::LONG),
            float: FloatLayout::from_bits(v >> shift::FLOAT),
            double: FloatLayout::from_bits(v >> shift::DOUBLE),
        }
    }

    /// True if `sig` re-encodes to itself, i.e. no unused bit is set.
    pub fn is_canonical(sig: i32) -> bool {
        DataSig::decode(sig).encode() == sig
    }

    /// The signature of the machine this code runs on, computed by the same probing the legacy
    /// library does (inspect the memory image of known values), so that it matches what a
    /// legacy task on this architecture announces.
    pub fn native() -> DataSig {
        DataSig {
            short: probe_int(&probe_image!(c_short)),
            int: probe_int(&probe_image!(c_int)),
            long: probe_int(&probe_image!(c_long)),
            float: probe_float(&1.0f32.to_ne_bytes()),
            double: probe_float(&1.0f64.to_ne_bytes()),
        }
    }

    /// The native signature as a wire value.
    pub fn native_sig() -> i32 {
        // Probed once: every unpacker asks, and the answer cannot change.
        static NATIVE: std::sync::OnceLock<i32> = std::sync::OnceLock::new();
        *NATIVE.get_or_init(|| DataSig::native().encode())
    }
}

/// True if a body whose header carries `enc` is in this machine's native raw format.
pub fn is_native(enc: i32) -> bool {
    enc == DataSig::native_sig()
}

/// Classifies an integer image by its first byte, as the legacy probe does.
fn probe_int(img: &[u8]) -> IntLayout {
    let n = img.len();
    let first = img.first().copied().unwrap_or(0) as usize;
    let order = if first == 0 {
        ByteOrder::Little
    } else if first == n - 1 {
        ByteOrder::Big
    } else if first == n / 2 {
        ByteOrder::BigHalfSwapped
    } else {
        ByteOrder::LittleHalfSwapped
    };
    IntLayout {
        log2_size: n.trailing_zeros() as u8,
        order,
    }
}

/// The image of 1.0 in every known format, most significant byte first.
const FLOAT_ONE: [(FloatFormat, &[u8]); 5] = [
    (FloatFormat::IeeeSingle, &[0x3f, 0x80, 0, 0]),
    (FloatFormat::IeeeDouble, &[0x3f, 0xf0, 0, 0, 0, 0, 0, 0]),
    (FloatFormat::Cray, &[0x40, 0x01, 0x80, 0, 0, 0, 0, 0]),
    (FloatFormat::ConvexSingle, &[0x40, 0x80, 0, 0]),
    (FloatFormat::ConvexDouble, &[0x40, 0x10, 0, 0, 0, 0, 0, 0]),
];

/// Classifies the memory image of 1.0.
fn probe_float(img: &[u8]) -> FloatLayout {
    let n = img.len();
    for (format, sig) in FLOAT_ONE {
        if sig.len() != n {
            continue;
        }
        if img == sig {
            return FloatLayout {
                format,
                order: ByteOrder::Big,
            };
        }
        if img.iter().rev().eq(sig.iter()) {
            return FloatLayout {
                format,
                order: ByteOrder::Little,
            };
        }
        // The word-swapped order of some ARM floating-point units.
        if (0..n).all(|j| img.get((j / 4) * 8 + 3 - j) == Some(&sig[j])) {
            return FloatLayout {
                format,
                order: ByteOrder::BigHalfSwapped,
            };
        }
    }
    FloatLayout {
        format: FloatFormat::Unknown,
        order: ByteOrder::Little,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x86_64_constant_decodes_to_lp64_little_endian_ieee() {
        let d = DataSig::decode(X86_64_LINUX);
        assert_eq!((d.short.size(), d.short.order), (2, ByteOrder::Little));
        assert_eq!((d.int.size(), d.int.order), (4, ByteOrder::Little));
        assert_eq!((d.long.size(), d.long.order), (8, ByteOrder::Little));
        assert_eq!(d.float.format, FloatFormat::IeeeSingle);
        assert_eq!(d.float.order, ByteOrder::Little);
        assert_eq!(d.double.format, FloatFormat::IeeeDouble);
        assert_eq!(d.double.order, ByteOrder::Little);
        assert_eq!(d.encode(), X86_64_LINUX);
        assert_eq!(X86_64_LINUX, 4230209);
    }

    #[test]
    fn i386_differs_only_in_long_size() {
        let a = DataSig::decode(X86_64_LINUX);
        let b = DataSig::decode(I386_LINUX);
        assert_eq!(b.long.size(), 4);
        assert_eq!(DataSig { long: a.long, ..b }, a);
    }

    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    #[test]
    fn native_on_x86_64_linux_is_the_legacy_constant() {
        assert_eq!(DataSig::native_sig(), X86_64_LINUX);
        assert_eq!(DataSig::native_sig(), crate::codes::DSIG_X86_64);
        assert!(is_native(0x0040_8c41));
        assert!(!is_native(I386_LINUX));
        assert!(!is_native(crate::codes::ENC_XDR));
    }

    #[test]
    fn big_endian_host_sig() {
        // A big-endian LP64 host with IEEE floats: every order field is 3.
        let d = DataSig {
            short: IntLayout {
                log2_size: 1,
                order: ByteOrder::Big,
            },
            int: IntLayout {
                log2_size: 2,
                order: ByteOrder::Big,
            },
            long: IntLayout {
                log2_size: 3,
                order: ByteOrder::Big,
            },
            float: FloatLayout {
                format: FloatFormat::IeeeSingle,
                order: ByteOrder::Big,
            },
            double: FloatLayout {
                format: FloatFormat::IeeeDouble,
                order: ByteOrder::Big,
            },
        };
        assert_eq!(d.encode(), 0x0658_ef59);
        assert_eq!(DataSig::decode(0x0658_ef59), d);
    }

    #[test]
    fn probes_classify_all_orders() {
        assert_eq!(probe_int(&[0, 1, 2, 3]).order, ByteOrder::Little);
        assert_eq!(probe_int(&[3, 2, 1, 0]).order, ByteOrder::Big);
        assert_eq!(probe_int(&[2, 3, 0, 1]).order, ByteOrder::BigHalfSwapped);
        assert_eq!(probe_int(&[1, 0, 3, 2]).order, ByteOrder::LittleHalfSwapped);
        assert_eq!(probe_float(&[0x3f, 0x80, 0, 0]).order, ByteOrder::Big);
        let cray = probe_float(&[0x40, 0x01, 0x80, 0, 0, 0, 0, 0]);
        assert_eq!(cray.format, FloatFormat::Cray);
    }

    #[test]
    fn every_word_round_trips_when_canonical() {
        for sig in [0, 1, X86_64_LINUX, I386_LINUX, 0x07ff_ffff, -1, 0x0800_0000] {
            let canonical = (sig as u32 & !UNUSED_BITS) as i32;
            assert_eq!(DataSig::decode(sig).encode(), canonical, "{sig:#x}");
            assert_eq!(DataSig::is_canonical(sig), sig == canonical);
        }
    }
}
