//! Building message bodies fragment by fragment, the way libpvm does.

use super::{
    EmbeddedMesg, Encoding, Item, Kind, LongOverflow, MsgBody, PackError, PackOptions, MAX_FRAG_SIZE, MIN_FRAG_SIZE,
};
use crate::codes::MAXHDR;
use std::ops::Range;

type Result<T> = std::result::Result<T, PackError>;

/// Packs values into a [`MsgBody`] (the `pvm_pk*` calls of a send buffer).
#[derive(Debug, Clone)]
pub struct Packer {
    body: MsgBody,
    enc: Encoding,
    /// Body bytes a fragment can hold (for XDR rounded down to a multiple of 4).
    cap: usize,
    long_overflow: LongOverflow,
    pads: Option<Vec<Range<usize>>>,
}

impl Packer {
    /// A packer with the default fragment size (4080) and legacy `long` handling.
    pub fn new(enc: Encoding) -> Packer {
        Packer::build(enc, PackOptions::default())
    }

    pub fn with_options(enc: Encoding, opts: PackOptions) -> Result<Packer> {
        if !(MIN_FRAG_SIZE..=MAX_FRAG_SIZE).contains(&opts.frag_size) {
            return Err(PackError::BadParam("fragment size outside 52..=1048576"));
        }
        Ok(Packer::build(enc, opts))
    }

    fn build(enc: Encoding, opts: PackOptions) -> Packer {
        let raw_cap = opts.frag_size.saturating_sub(MAXHDR).max(4);
        let cap = match enc {
            Encoding::Xdr => raw_cap & !3,
            Encoding::Raw | Encoding::InPlace => raw_cap,
        };
        let mut body = MsgBody::new(enc.wire_enc());
        // pvm_initsend gives XDR and raw messages their first (empty) fragment at once; an
        // in-place message gets one per pack call.
        if enc != Encoding::InPlace {
            body.starts.push(0);
        }
        Packer {
            body,
            enc,
            cap,
            long_overflow: opts.long_overflow,
            pads: opts.record_pads.then(Vec::new),
        }
    }

    pub fn encoding(&self) -> Encoding {
        self.enc
    }

    /// Body bytes per fragment.
    pub fn fragment_capacity(&self) -> usize {
        self.cap
    }

    pub fn body(&self) -> &MsgBody {
        &self.body
    }

    pub fn into_body(self) -> MsgBody {
        self.body
    }

    /// Makes room for `extra` more body bytes before a large pack: when the body's buffer is
    /// too small, `take` may hand over an empty buffer with room for them all (the caller's
    /// pool of buffers whose pages are already mapped), which replaces it, the bytes packed so
    /// far copied over. Returns the replaced buffer, for the caller to keep or free. Packing
    /// is unchanged: only where the bytes live.
    pub fn reserve_from(&mut self, extra: usize, take: impl FnOnce(usize) -> Option<Vec<u8>>) -> Option<Vec<u8>> {
        let data = &mut self.body.data;
        let need = data.len().saturating_add(extra);
        if data.capacity() >= need {
            return None;
        }
        let mut v = take(need)?;
        if v.capacity() < need {
            return Some(v);
        }
        v.clear();
        v.extend_from_slice(data);
        Some(std::mem::replace(data, v))
    }

    /// Where the XDR pad bytes are in the concatenated body (only with `record_pads`).
    pub fn pad_ranges(&self) -> &[Range<usize>] {
        self.pads.as_deref().unwrap_or_default()
    }

    pub fn pk_byte(&mut self, v: &[u8]) -> Result<()> {
        self.pack(v)
    }
    pub fn pk_short(&mut self, v: &[i16]) -> Result<()> {
        self.pack(v)
    }
    pub fn pk_ushort(&mut self, v: &[u16]) -> Result<()> {
        self.pack(v)
    }
    pub fn pk_int(&mut self, v: &[i32]) -> Result<()> {
        self.pack(v)
    }
    pub fn pk_uint(&mut self, v: &[u32]) -> Result<()> {
        self.pack(v)
    }
    pub fn pk_long(&mut self, v: &[i64]) -> Result<()> {
        self.pack(v)
    }
    pub fn pk_ulong(&mut self, v: &[u64]) -> Result<()> {
        self.pack(v)
    }
    pub fn pk_float(&mut self, v: &[f32]) -> Result<()> {
        self.pack(v)
    }
    pub fn pk_double(&mut self, v: &[f64]) -> Result<()> {
        self.pack(v)
    }
    pub fn pk_cplx(&mut self, v: &[[f32; 2]]) -> Result<()> {
        self.pack(v)
    }
    pub fn pk_dcplx(&mut self, v: &[[f64; 2]]) -> Result<()> {
        self.pack(v)
    }

    /// Packs every element of `data` (stride 1).
    pub fn pack<T: Item>(&mut self, data: &[T]) -> Result<()> {
        self.pack_strided(data, data.len(), 1)
    }

    /// Packs `cnt` elements: `data[0]`, `data[stride]`, ... `data[(cnt-1)*stride]`, as
    /// `pvm_pk*(data, cnt, stride)` does. Stride 0 repeats `data[0]`, as in C.
    pub fn pack_strided<T: Item>(&mut self, data: &[T], cnt: usize, stride: usize) -> Result<()> {
        check_span(data.len(), cnt, stride)?;
        match self.enc {
            Encoding::InPlace => {
                if stride != 1 && cnt > 0 {
                    return Err(PackError::NotImpl("strided data"));
                }
                if cnt > 0 {
                    self.body.starts.push(self.body.data.len());
                    self.write_raw(data, cnt, 1);
                }
                Ok(())
            }
            Encoding::Raw => {
                self.write_raw(data, cnt, stride);
                self.split_full();
                Ok(())
            }
            Encoding::Xdr if T::KIND == Kind::Byte => {
                self.write_raw(data, cnt, stride);
                self.split_full();
                self.pad();
                Ok(())
            }
            Encoding::Xdr => {
                if self.long_overflow == LongOverflow::Error {
                    for i in 0..cnt {
                        if let Some(value) = data[i * stride].xdr_overflow() {
                            return Err(PackError::Overflow {
                                kind: T::KIND.name(),
                                index: i,
                                value,
                            });
                        }
                    }
                }
                self.write_xdr(data, cnt, stride)
            }
        }
    }

    /// As [`Packer::pack`] for a contiguous array whose packed form is its memory image (any
    /// item in raw, bytes in XDR), with the copy made by `copy(dst, src)`, which must write all
    /// of `dst` (a caller that copies faster, e.g. on two threads). The bytes and fragment
    /// boundaries are those of `pack`. Ok(false), with nothing packed, when the packed form is
    /// not the memory image (numbers in XDR).
    ///
    /// # Safety
    /// `copy` must initialise every byte of the `dst` it is given.
    pub unsafe fn pack_image_with<T: Item>(
        &mut self,
        data: &[T],
        copy: impl FnOnce(&mut [std::mem::MaybeUninit<u8>], &[u8]),
    ) -> Result<bool> {
        let image = std::mem::size_of::<T>() == T::RAW_SIZE
            && match self.enc {
                Encoding::Raw => true,
                Encoding::Xdr => T::KIND == Kind::Byte,
                // This packer copies in-place data too (one fragment per pack call).
                Encoding::InPlace => true,
            };
        if !image {
            return Ok(false);
        }
        if self.enc == Encoding::InPlace {
            if data.is_empty() {
                return Ok(true);
            }
            self.body.starts.push(self.body.data.len());
        }
        // SAFETY: items are plain numbers or arrays of them (sealed trait): all their bytes are
        // initialised, and with size_of == RAW_SIZE their memory image is their raw form.
        let bytes = unsafe { std::slice::from_raw_parts(data.as_ptr() as *const u8, std::mem::size_of_val(data)) };
        let buf = &mut self.body.data;
        buf.reserve(bytes.len());
        copy(&mut buf.spare_capacity_mut()[..bytes.len()], bytes);
        // SAFETY: `copy` wrote every byte of the spare capacity it was given.
        unsafe { buf.set_len(buf.len() + bytes.len()) };
        match self.enc {
            Encoding::Raw => self.split_full(),
            Encoding::Xdr => {
                self.split_full();
                self.pad();
            }
            Encoding::InPlace => {}
        }
        Ok(true)
    }

    /// Packs a C string (`pvm_pkstr`): the bytes up to the first NUL (or all of `s`), then a NUL,
    /// preceded by their count.
    pub fn pk_str(&mut self, s: &[u8]) -> Result<()> {
        if self.enc == Encoding::InPlace {
            return Err(PackError::NotImpl("pvm_pkstr"));
        }
        let s = s.iter().position(|&b| b == 0).map_or(s, |n| &s[..n]);
        let n = i32::try_from(s.len() + 1).map_err(|_| PackError::BadParam("string longer than 2 GB"))?;
        self.pack(&[n])?;
        self.body.data.reserve(s.len() + 4);
        self.body.data.extend_from_slice(s);
        self.body.data.push(0);
        self.split_full();
        if self.enc == Encoding::Xdr {
            self.pad();
        }
        Ok(())
    }

    /// Packs a whole message with its header fields (`pvm_pkmesg`): `int len, ctx, tag, wid, enc,
    /// crc, src, dst`, then for every fragment `int fraglen` and its bytes, all with this body's
    /// encoder.
    pub fn pk_mesg(&mut self, m: &EmbeddedMesg) -> Result<()> {
        let len = i32::try_from(m.body.len()).map_err(|_| PackError::BadParam("embedded message over 2 GB"))?;
        // Eight separate calls, as in libpvm: it matters for in-place bodies (one fragment each).
        for v in [len, m.ctx, m.tag, m.wid, m.body.enc(), m.crc, m.src, m.dst] {
            self.pack(&[v])?;
        }
        for frag in m.body.fragments() {
            let n = i32::try_from(frag.len()).map_err(|_| PackError::BadParam("fragment over 2 GB"))?;
            self.pack(&[n])?;
            self.pack(frag)?;
        }
        Ok(())
    }

    /// Bytes in the fragment being filled.
    fn fill(&self) -> usize {
        self.body.data.len() - self.body.starts.last().copied().unwrap_or(0)
    }

    /// Appends the raw image of the selected elements, ignoring fragment boundaries.
    fn write_raw<T: Item>(&mut self, data: &[T], cnt: usize, stride: usize) {
        let data_buf = &mut self.body.data;
        if stride == 1 && std::mem::size_of::<T>() == T::RAW_SIZE {
            // The raw form of every item type is its memory image (native byte order, no
            // padding), so a contiguous run is one copy (no zero fill, no per-item loop).
            // SAFETY: `data[..cnt]` is initialised; items are plain numbers or arrays of them
            // (sealed trait), whose bytes are all initialised.
            let bytes = unsafe { std::slice::from_raw_parts(data.as_ptr() as *const u8, cnt * T::RAW_SIZE) };
            data_buf.extend_from_slice(bytes);
            return;
        }
        let start = data_buf.len();
        data_buf.resize(start + cnt * T::RAW_SIZE, 0);
        let out = &mut data_buf[start..];
        if stride == 1 {
            for (o, v) in out.chunks_exact_mut(T::RAW_SIZE).zip(&data[..cnt]) {
                v.put_raw(o);
            }
        } else {
            for (i, o) in out.chunks_exact_mut(T::RAW_SIZE).enumerate() {
                data[i * stride].put_raw(o);
            }
        }
    }

    /// Cuts what overflows the current fragment into full fragments: raw data and byte arrays
    /// fill each fragment to its last byte. A fragment filled exactly stays current until more
    /// data arrives, as in libpvm.
    fn split_full(&mut self) {
        let len = self.body.data.len();
        let mut last = self.body.starts.last().copied().unwrap_or(0);
        while len - last > self.cap {
            last += self.cap;
            self.body.starts.push(last);
        }
    }

    /// Rounds the current fragment up to a multiple of 4 with zero bytes (legacy: garbage).
    fn pad(&mut self) {
        let fill = self.fill();
        let n = (4 - fill % 4) % 4;
        if n > 0 {
            let at = self.body.data.len();
            self.body.data.resize(at + n, 0);
            if let Some(p) = self.pads.as_mut() {
                p.push(at..at + n);
            }
        }
    }

    /// Starts a new fragment because an XDR unit does not fit in the current one.
    fn next_xdr_fragment(&mut self, unit: usize) -> Result<()> {
        if self.fill() == 0 {
            return Err(PackError::FragTooSmall {
                unit,
                capacity: self.cap,
            });
        }
        self.body.starts.push(self.body.data.len());
        Ok(())
    }

    fn write_xdr<T: Item>(&mut self, data: &[T], cnt: usize, stride: usize) -> Result<()> {
        let esz = T::XDR_SIZE;
        let mut i = 0;
        while i < cnt {
            let room = self.cap.saturating_sub(self.fill());
            let fit = room / esz;
            if fit == 0 {
                if T::XDR_UNITS > 1 && room >= T::XDR_UNIT {
                    // The parts of a complex number are separate units: the first fits here.
                    let mut buf = [0u8; 16];
                    let img = &mut buf[..esz];
                    data[i * stride].put_xdr(img);
                    for part in img.chunks(T::XDR_UNIT) {
                        if self.cap - self.fill() < part.len() {
                            self.next_xdr_fragment(part.len())?;
                        }
                        self.body.data.extend_from_slice(part);
                    }
                    i += 1;
                } else {
                    if self.long_overflow == LongOverflow::Legacy {
                        if let Some(value) = data[i * stride].xdr_overflow() {
                            return Err(PackError::Overflow {
                                kind: T::KIND.name(),
                                index: i,
                                value,
                            });
                        }
                    }
                    self.next_xdr_fragment(T::XDR_UNIT)?;
                }
                continue;
            }
            // A run of whole elements fits: encode it in one pass.
            let n = fit.min(cnt - i);
            let buf = &mut self.body.data;
            let start = buf.len();
            buf.resize(start + n * esz, 0);
            let out = &mut buf[start..];
            if stride == 1 {
                for (o, v) in out.chunks_exact_mut(esz).zip(&data[i..i + n]) {
                    v.put_xdr(o);
                }
            } else {
                for (k, o) in out.chunks_exact_mut(esz).enumerate() {
                    data[(i + k) * stride].put_xdr(o);
                }
            }
            i += n;
        }
        Ok(())
    }
}

/// Checks that `cnt` elements at `stride` lie within a slice of `len` elements.
pub(super) fn check_span(len: usize, cnt: usize, stride: usize) -> std::result::Result<(), PackError> {
    if cnt == 0 {
        return Ok(());
    }
    // The largest element has 16 bytes; the packed size must be addressable.
    if cnt.checked_mul(16).map_or(true, |b| b > isize::MAX as usize) {
        return Err(PackError::BadParam("count too large"));
    }
    let last = (cnt - 1)
        .checked_mul(stride)
        .ok_or(PackError::BadParam("count * stride overflows"))?;
    if last >= len {
        return Err(PackError::BadParam("count and stride reach past the end of the data"));
    }
    Ok(())
}
