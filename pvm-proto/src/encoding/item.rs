//! The element types a message body can carry, and how each one looks in XDR and in raw form.

use byteorder::{BigEndian, ByteOrder, NativeEndian};

/// A single-precision complex number as `pvm_pkcplx` sees it: real part, then imaginary part.
pub type Complex32 = [f32; 2];
/// A double-precision complex number (`pvm_pkdcplx`).
pub type Complex64 = [f64; 2];

/// Which `pvm_pk*` family an element type belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Byte,
    Short,
    UShort,
    Int,
    UInt,
    Long,
    ULong,
    Float,
    Double,
    Cplx,
    DCplx,
}

impl Kind {
    /// The C name of the element, for error messages.
    pub const fn name(self) -> &'static str {
        match self {
            Kind::Byte => "byte",
            Kind::Short => "short",
            Kind::UShort => "ushort",
            Kind::Int => "int",
            Kind::UInt => "uint",
            Kind::Long => "long",
            Kind::ULong => "ulong",
            Kind::Float => "float",
            Kind::Double => "double",
            Kind::Cplx => "cplx",
            Kind::DCplx => "dcplx",
        }
    }
}

mod sealed {
    pub trait Sealed {}
}

/// An element type of a PVM message body. Sealed: the set is fixed by the protocol.
///
/// `long` is `i64` and `ulong` is `u64`, as on every LP64 host (the raw form carries all 8 bytes;
/// XDR carries only 4, see [`crate::encoding`]).
pub trait Item: Copy + Default + sealed::Sealed {
    const KIND: Kind;
    /// Bytes per element in a raw (native) body.
    const RAW_SIZE: usize;
    /// Bytes of one XDR unit: the libpvm encoder never splits a unit across fragments, but the
    /// two parts of a complex number are separate units.
    const XDR_UNIT: usize;
    /// Units per element.
    const XDR_UNITS: usize;
    /// Bytes per element in an XDR body.
    const XDR_SIZE: usize = Self::XDR_UNIT * Self::XDR_UNITS;

    /// Writes the XDR form into `out` (exactly `XDR_SIZE` bytes).
    fn put_xdr(self, out: &mut [u8]);
    /// Reads the XDR form from `b` (exactly `XDR_SIZE` bytes). `sign_extend_long` selects the
    /// decoding of a 4-byte XDR `long` into an 8-byte one.
    fn get_xdr(b: &[u8], sign_extend_long: bool) -> Self;
    /// Writes the native memory image into `out` (exactly `RAW_SIZE` bytes).
    fn put_raw(self, out: &mut [u8]);
    /// Reads the native memory image.
    fn get_raw(b: &[u8]) -> Self;
    /// For `long`/`ulong`: the value, if it does not fit in the 4 bytes XDR gives it.
    fn xdr_overflow(self) -> Option<i128> {
        None
    }
}

macro_rules! item {
    ($t:ty, $kind:ident, $raw:expr, $unit:expr, $units:expr,
     put_xdr($sv:ident, $so:ident) $px:block
     get_xdr($gb:ident, $gs:ident) $gx:block
     put_raw($rv:ident, $ro:ident) $pr:block
     get_raw($rb:ident) $gr:block
     $($extra:item)*) => {
        impl sealed::Sealed for $t {}
        impl Item for $t {
            const KIND: Kind = Kind::$kind;
            const RAW_SIZE: usize = $raw;
            const XDR_UNIT: usize = $unit;
            const XDR_UNITS: usize = $units;
            #[inline(always)]
            fn put_xdr($sv, $so: &mut [u8]) $px
            #[inline(always)]
            #[allow(unused_variables)]
            fn get_xdr($gb: &[u8], $gs: bool) -> Self $gx
            #[inline(always)]
            fn put_raw($rv, $ro: &mut [u8]) $pr
            #[inline(always)]
            fn get_raw($rb: &[u8]) -> Self $gr
            $($extra)*
        }
    };
}

item!(u8, Byte, 1, 1, 1,
    put_xdr(self, o) { o[0] = self; }
    get_xdr(b, s) { b[0] }
    put_raw(self, o) { o[0] = self; }
    get_raw(b) { b[0] }
);
// XDR shorts travel as 4-byte ints (sign-extended); decoding keeps the low 16 bits, as a C
// `(short)` cast of the received int does.
item!(i16, Short, 2, 4, 1,
    put_xdr(self, o) { BigEndian::write_i32(o, self as i32); }
    get_xdr(b, s) { BigEndian::read_i32(b) as i16 }
    put_raw(self, o) { NativeEndian::write_i16(o, self); }
    get_raw(b) { NativeEndian::read_i16(b) }
);
// libpvm packs ushort with its *short* encoder, so an XDR ushort is sign-extended on the wire
// (0xebeb travels as ffffebeb); decoding keeps the low 16 bits either way.
item!(u16, UShort, 2, 4, 1,
    put_xdr(self, o) { BigEndian::write_i32(o, self as i16 as i32); }
    get_xdr(b, s) { BigEndian::read_u32(b) as u16 }
    put_raw(self, o) { NativeEndian::write_u16(o, self); }
    get_raw(b) { NativeEndian::read_u16(b) }
);
item!(i32, Int, 4, 4, 1,
    put_xdr(self, o) { BigEndian::write_i32(o, self); }
    get_xdr(b, s) { BigEndian::read_i32(b) }
    put_raw(self, o) { NativeEndian::write_i32(o, self); }
    get_raw(b) { NativeEndian::read_i32(b) }
);
item!(u32, UInt, 4, 4, 1,
    put_xdr(self, o) { BigEndian::write_u32(o, self); }
    get_xdr(b, s) { BigEndian::read_u32(b) }
    put_raw(self, o) { NativeEndian::write_u32(o, self); }
    get_raw(b) { NativeEndian::read_u32(b) }
);
// XDR long: the low 32 bits on the wire (legacy truncates silently). Decoding zero-extends like
// the legacy library unless sign extension is asked for.
item!(i64, Long, 8, 4, 1,
    put_xdr(self, o) { BigEndian::write_u32(o, self as u32); }
    get_xdr(b, s) {
        if s { BigEndian::read_i32(b) as i64 } else { BigEndian::read_u32(b) as i64 }
    }
    put_raw(self, o) { NativeEndian::write_i64(o, self); }
    get_raw(b) { NativeEndian::read_i64(b) }
    fn xdr_overflow(self) -> Option<i128> {
        if i32::try_from(self).is_ok() { None } else { Some(self as i128) }
    }
);
item!(u64, ULong, 8, 4, 1,
    put_xdr(self, o) { BigEndian::write_u32(o, self as u32); }
    get_xdr(b, s) { BigEndian::read_u32(b) as u64 }
    put_raw(self, o) { NativeEndian::write_u64(o, self); }
    get_raw(b) { NativeEndian::read_u64(b) }
    fn xdr_overflow(self) -> Option<i128> {
        if u32::try_from(self).is_ok() { None } else { Some(self as i128) }
    }
);
item!(f32, Float, 4, 4, 1,
    put_xdr(self, o) { BigEndian::write_u32(o, self.to_bits()); }
    get_xdr(b, s) { f32::from_bits(BigEndian::read_u32(b)) }
    put_raw(self, o) { NativeEndian::write_u32(o, self.to_bits()); }
    get_raw(b) { f32::from_bits(NativeEndian::read_u32(b)) }
);
item!(f64, Double, 8, 8, 1,
    put_xdr(self, o) { BigEndian::write_u64(o, self.to_bits()); }
    get_xdr(b, s) { f64::from_bits(BigEndian::read_u64(b)) }
    put_raw(self, o) { NativeEndian::write_u64(o, self.to_bits()); }
    get_raw(b) { f64::from_bits(NativeEndian::read_u64(b)) }
);
item!([f32; 2], Cplx, 8, 4, 2,
    put_xdr(self, o) {
        BigEndian::write_u32(&mut o[..4], self[0].to_bits());
        BigEndian::write_u32(&mut o[4..8], self[1].to_bits());
    }
    get_xdr(b, s) {
        [f32::from_bits(BigEndian::read_u32(&b[..4])), f32::from_bits(BigEndian::read_u32(&b[4..8]))]
    }
    put_raw(self, o) {
        NativeEndian::write_u32(&mut o[..4], self[0].to_bits());
        NativeEndian::write_u32(&mut o[4..8], self[1].to_bits());
    }
    get_raw(b) {
        [f32::from_bits(NativeEndian::read_u32(&b[..4])), f32::from_bits(NativeEndian::read_u32(&b[4..8]))]
    }
);
item!([f64; 2], DCplx, 16, 8, 2,
    put_xdr(self, o) {
        BigEndian::write_u64(&mut o[..8], self[0].to_bits());
        BigEndian::write_u64(&mut o[8..16], self[1].to_bits());
    }
    get_xdr(b, s) {
        [f64::from_bits(BigEndian::read_u64(&b[..8])), f64::from_bits(BigEndian::read_u64(&b[8..16]))]
    }
    put_raw(self, o) {
        NativeEndian::write_u64(&mut o[..8], self[0].to_bits());
        NativeEndian::write_u64(&mut o[8..16], self[1].to_bits());
    }
    get_raw(b) {
        [f64::from_bits(NativeEndian::read_u64(&b[..8])), f64::from_bits(NativeEndian::read_u64(&b[8..16]))]
    }
);
