//! Reading message bodies back (the `pvm_upk*` calls of a receive buffer).
//!
//! The reader treats the body as the concatenation of its fragments. That is what libpvm does
//! for raw data and byte arrays, and for XDR units split by a re-fragmenting relay (it moves the
//! leftover bytes to the head of the next fragment). XDR pads are counted from the start of the
//! body, where libpvm counts them from the start of the current fragment; the two agree whenever
//! every fragment but the last has a length that is a multiple of 4, which holds for every body
//! a legacy or Rust sender produces.

use super::{EmbeddedMesg, Format, Item, Kind, LongDecode, MsgBody, UnpackError};
use crate::dsig::DataSig;

type Result<T> = std::result::Result<T, UnpackError>;

/// A cursor over a [`MsgBody`].
#[derive(Debug, Clone)]
pub struct Unpacker<'a> {
    body: &'a MsgBody,
    pos: usize,
    format: Format,
    sign_extend_long: bool,
}

impl<'a> Unpacker<'a> {
    /// Decodes per the body's `enc` and this host's data signature, with legacy `long` handling.
    pub fn new(body: &'a MsgBody) -> Unpacker<'a> {
        Unpacker::with_format(body, Format::from_enc(body.enc(), DataSig::native_sig()))
    }

    pub fn with_format(body: &'a MsgBody, format: Format) -> Unpacker<'a> {
        Unpacker {
            body,
            pos: 0,
            format,
            sign_extend_long: false,
        }
    }

    pub fn long_decode(mut self, mode: LongDecode) -> Self {
        self.sign_extend_long = mode == LongDecode::SignExtend;
        self
    }

    /// Resumes at a position saved from [`Unpacker::position`] (a receive buffer's cursor).
    pub fn at(mut self, pos: usize) -> Self {
        self.pos = pos.min(self.body.len());
        self
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// Offset of the next byte in the concatenated body.
    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.body.len() - self.pos
    }

    pub fn up_byte(&mut self, out: &mut [u8]) -> Result<()> {
        self.unpack(out)
    }
    pub fn up_short(&mut self, out: &mut [i16]) -> Result<()> {
        self.unpack(out)
    }
    pub fn up_ushort(&mut self, out: &mut [u16]) -> Result<()> {
        self.unpack(out)
    }
    pub fn up_int(&mut self, out: &mut [i32]) -> Result<()> {
        self.unpack(out)
    }
    pub fn up_uint(&mut self, out: &mut [u32]) -> Result<()> {
        self.unpack(out)
    }
    pub fn up_long(&mut self, out: &mut [i64]) -> Result<()> {
        self.unpack(out)
    }
    pub fn up_ulong(&mut self, out: &mut [u64]) -> Result<()> {
        self.unpack(out)
    }
    pub fn up_float(&mut self, out: &mut [f32]) -> Result<()> {
        self.unpack(out)
    }
    pub fn up_double(&mut self, out: &mut [f64]) -> Result<()> {
        self.unpack(out)
    }
    pub fn up_cplx(&mut self, out: &mut [[f32; 2]]) -> Result<()> {
        self.unpack(out)
    }
    pub fn up_dcplx(&mut self, out: &mut [[f64; 2]]) -> Result<()> {
        self.unpack(out)
    }

    /// One element.
    pub fn get<T: Item>(&mut self) -> Result<T> {
        let mut v = [T::default()];
        self.unpack(&mut v)?;
        let [v] = v;
        Ok(v)
    }

    /// Fills all of `out` (stride 1).
    pub fn unpack<T: Item>(&mut self, out: &mut [T]) -> Result<()> {
        let n = out.len();
        self.unpack_strided(out, n, 1)
    }

    /// Reads `cnt` elements into `out[0]`, `out[stride]`, ... as `pvm_upk*(out, cnt, stride)`
    /// does; elements in between are left alone.
    pub fn unpack_strided<T: Item>(&mut self, out: &mut [T], cnt: usize, stride: usize) -> Result<()> {
        super::pack::check_span(out.len(), cnt, stride)
            .map_err(|_| UnpackError::BadParam("count and stride reach past the end of the output"))?;
        let xdr = match (self.format, T::KIND) {
            (Format::Xdr, _) => true,
            (Format::Native, _) | (Format::Alien, Kind::Byte) => false,
            (Format::InPlace, _) => return Err(self.bad("in-place message", "in-place buffers cannot be unpacked")),
            (Format::Alien, _) => {
                return Err(self.bad(T::KIND.name(), "data signature of another architecture"));
            }
        };
        let esz = if xdr { T::XDR_SIZE } else { T::RAW_SIZE };
        let src = self.take(T::KIND.name(), cnt * esz)?;
        match (xdr, stride) {
            (true, 1) => {
                for (o, b) in out[..cnt].iter_mut().zip(src.chunks_exact(esz)) {
                    *o = T::get_xdr(b, self.sign_extend_long);
                }
            }
            (true, _) => {
                for (i, b) in src.chunks_exact(esz).enumerate() {
                    out[i * stride] = T::get_xdr(b, self.sign_extend_long);
                }
            }
            (false, 1) if std::mem::size_of::<T>() == esz => {
                // The raw form is the memory image (see Packer::write_raw): one copy.
                // SAFETY: `out[..cnt]` is `cnt * esz` writable bytes, and any bytes are a valid
                // value of every item type (plain numbers).
                let dst = unsafe { std::slice::from_raw_parts_mut(out.as_mut_ptr() as *mut u8, cnt * esz) };
                dst.copy_from_slice(src);
            }
            (false, 1) => {
                for (o, b) in out[..cnt].iter_mut().zip(src.chunks_exact(esz)) {
                    *o = T::get_raw(b);
                }
            }
            (false, _) => {
                for (i, b) in src.chunks_exact(esz).enumerate() {
                    out[i * stride] = T::get_raw(b);
                }
            }
        }
        self.pos += cnt * esz;
        if xdr && T::KIND == Kind::Byte {
            self.skip_pad();
        }
        Ok(())
    }

    /// As [`unpack_strided`](Self::unpack_strided), except when the body ends first: then it
    /// takes what is there as the legacy library does before it reports PvmNoData, and consumes
    /// it. XDR numbers: the whole elements left (and of a double cut after its first word, that
    /// word, as glibc's `xdr_double` leaves it; complex numbers are taken whole only). Raw data
    /// and XDR bytes: every byte left, the last element possibly cut (its first bytes written,
    /// the rest of it untouched).
    pub fn unpack_strided_partial<T: Item>(&mut self, out: &mut [T], cnt: usize, stride: usize) -> Result<()> {
        let err = match self.unpack_strided(out, cnt, stride) {
            Err(e @ UnpackError::NoData { .. }) => e,
            r => return r,
        };
        let xdr = self.format == Format::Xdr;
        let esz = if xdr { T::XDR_SIZE } else { T::RAW_SIZE };
        let src = &self.body.bytes()[self.pos.min(self.body.len())..];
        if xdr && T::KIND != Kind::Byte {
            let whole = (src.len() / esz).min(cnt);
            for (i, b) in src.chunks_exact(esz).take(whole).enumerate() {
                out[i * stride] = T::get_xdr(b, self.sign_extend_long);
            }
            self.pos += whole * esz;
            let left = &src[whole * esz..];
            if whole < cnt && T::KIND == Kind::Double && left.len() >= 4 && cfg!(target_endian = "little") {
                // glibc's xdr_double reads the high word into its place before it finds the low
                // one missing: that half of the next double is written and its 4 bytes are
                // consumed (the legacy library reads on from its XDR stream's position).
                let hi = u32::from_be_bytes([left[0], left[1], left[2], left[3]]);
                // SAFETY: element `whole * stride` is an f64 in `out` (span checked above);
                // bytes 4..8 of it are its high word on a little-endian machine.
                unsafe {
                    let d = (out.as_mut_ptr().add(whole * stride) as *mut u8).add(4);
                    std::ptr::copy_nonoverlapping(hi.to_ne_bytes().as_ptr(), d, 4);
                }
                self.pos += 4;
            }
        } else if std::mem::size_of::<T>() == esz {
            let take = src.len().min(cnt * esz);
            for (i, b) in src[..take].chunks(esz).enumerate() {
                // SAFETY: element `i * stride` is in `out` (unpack_strided checked the span
                // before failing), `b` is at most one element long, and any bytes are a valid
                // value of every item type (plain numbers).
                unsafe {
                    std::ptr::copy_nonoverlapping(b.as_ptr(), out.as_mut_ptr().add(i * stride) as *mut u8, b.len())
                };
            }
            self.pos += take;
        }
        Err(err)
    }

    /// A string as `pvm_upkstr` reads it: all `n` bytes the sender counted, normally ending in
    /// the NUL. A negative count is BadMsg (legacy silently copies nothing); a count beyond the
    /// body is NoData, detected before anything is allocated.
    pub fn up_str_raw(&mut self) -> Result<Vec<u8>> {
        let start = self.pos;
        let n: i32 = self.get()?;
        let n = usize::try_from(n).map_err(|_| {
            self.pos = start;
            self.bad("string length", "negative")
        })?;
        let mut v = Vec::new();
        if n > self.remaining() {
            let e = self.no_data("string", n);
            self.pos = start;
            return Err(e);
        }
        v.resize(n, 0);
        let r = self.unpack(&mut v[..]);
        if r.is_err() {
            self.pos = start;
        }
        r.map(|()| v)
    }

    /// A string up to its first NUL (what C code sees).
    pub fn up_str(&mut self) -> Result<Vec<u8>> {
        let mut v = self.up_str_raw()?;
        if let Some(n) = v.iter().position(|&b| b == 0) {
            v.truncate(n);
        }
        Ok(v)
    }

    /// A message packed with `pvm_pkmesg`. Fragments are read until the announced length is
    /// consumed; zero-length fragments are kept, so re-packing the result reproduces the input.
    pub fn up_mesg(&mut self) -> Result<EmbeddedMesg> {
        let start = self.pos;
        let r = self.up_mesg_inner();
        if r.is_err() {
            self.pos = start;
        }
        r
    }

    fn up_mesg_inner(&mut self) -> Result<EmbeddedMesg> {
        let mut h = [0i32; 8];
        let at = self.pos;
        self.up_int(&mut h)?;
        let [len, ctx, tag, wid, enc, crc, src, dst] = h;
        let mut left = usize::try_from(len).map_err(|_| UnpackError::BadMsg {
            field: "embedded message length",
            offset: at,
            why: "negative",
        })?;
        if left > self.remaining() {
            return Err(self.no_data("embedded message", left));
        }
        let mut body = MsgBody::new(enc);
        while left > 0 {
            let at = self.pos;
            let n: i32 = self.get()?;
            let n = usize::try_from(n).map_err(|_| UnpackError::BadMsg {
                field: "embedded fragment length",
                offset: at,
                why: "negative",
            })?;
            let frag = self.take("embedded fragment", n)?;
            body.push_fragment(frag);
            self.pos += n;
            if self.format == Format::Xdr {
                self.skip_pad();
            }
            left = left.saturating_sub(n);
        }
        Ok(EmbeddedMesg {
            ctx,
            tag,
            wid,
            crc,
            src,
            dst,
            body,
        })
    }

    /// The next `n` bytes, without consuming them.
    fn take(&self, field: &'static str, n: usize) -> Result<&'a [u8]> {
        let body: &'a MsgBody = self.body;
        match self.pos.checked_add(n).and_then(|end| body.bytes().get(self.pos..end)) {
            Some(b) => Ok(b),
            None => Err(self.no_data(field, n)),
        }
    }

    fn skip_pad(&mut self) {
        self.pos = ((self.pos + 3) & !3).min(self.body.len());
    }

    fn no_data(&self, field: &'static str, need: usize) -> UnpackError {
        UnpackError::NoData {
            field,
            offset: self.pos,
            need,
            have: self.remaining(),
        }
    }

    fn bad(&self, field: &'static str, why: &'static str) -> UnpackError {
        UnpackError::BadMsg {
            field,
            offset: self.pos,
            why,
        }
    }
}
