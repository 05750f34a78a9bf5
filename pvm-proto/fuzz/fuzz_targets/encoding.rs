//! Data encodings, both directions:
//! - arbitrary fragments unpacked by an arbitrary op script never panic and never read past the body;
//! - a value script packed in any encoding and fragment size unpacks to the same values.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pvm_proto::encoding::{Encoding, MsgBody, PackOptions, Packer, Unpacker, MIN_FRAG_SIZE};

/// A tiny cursor over the fuzz input.
struct Src<'a>(&'a [u8]);

impl Src<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*b)
    }
    fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
}

#[derive(Debug, PartialEq)]
enum Val {
    Bytes(Vec<u8>),
    Short(Vec<i16>),
    Int(Vec<i32>),
    UInt(Vec<u32>),
    Float(Vec<u32>),
    Double(Vec<u64>),
    Str(Vec<u8>),
    Long(Vec<i64>),
}

fuzz_target!(|data: &[u8]| {
    let mut s = Src(data);
    let Some(mode) = s.byte() else { return };
    if mode & 1 == 0 {
        unpack_garbage(mode, &mut s);
    } else {
        round_trip(mode, &mut s);
    }
});

fn unpack_garbage(mode: u8, s: &mut Src) {
    let enc = if mode & 2 == 0 {
        0x1000_0000
    } else {
        pvm_proto::dsig::DataSig::native_sig()
    };
    let nfrag = s.byte().unwrap_or(0) % 4 + 1;
    let script = s.take(16).to_vec();
    let mut frags = Vec::new();
    for _ in 0..nfrag {
        let n = s.byte().unwrap_or(0) as usize * 4;
        frags.push(s.take(n).to_vec());
    }
    let body = MsgBody::from_fragments(enc, frags.iter().map(|f| &f[..]));
    let mut u = Unpacker::new(&body);
    for op in script {
        let n = (op >> 4) as usize;
        let before = u.position();
        let ok = match op & 7 {
            0 => u.up_byte(&mut vec![0u8; n]).is_ok(),
            1 => u.up_short(&mut vec![0i16; n]).is_ok(),
            2 => u.up_int(&mut vec![0i32; n]).is_ok(),
            3 => u.up_long(&mut vec![0i64; n]).is_ok(),
            4 => u.up_double(&mut vec![0f64; n]).is_ok(),
            5 => u.up_str().is_ok(),
            6 => u.up_mesg().is_ok(),
            _ => u.up_dcplx(&mut vec![[0f64; 2]; n]).is_ok(),
        };
        assert!(u.position() <= body.len());
        if !ok {
            // A failed unpack consumes nothing.
            assert_eq!(u.position(), before);
        }
    }
}

fn round_trip(mode: u8, s: &mut Src) {
    let enc = match (mode >> 1) % 3 {
        0 => Encoding::Xdr,
        1 => Encoding::Raw,
        _ => Encoding::InPlace,
    };
    // At least 8 body bytes per fragment: an XDR double cannot be split, so smaller is an error.
    let frag_size = MIN_FRAG_SIZE + 4 + s.byte().unwrap_or(0) as usize * 16;
    let opts = PackOptions {
        frag_size,
        ..PackOptions::default()
    };
    let Ok(mut p) = Packer::with_options(enc, opts) else {
        return;
    };
    let mut vals = Vec::new();
    while let Some(op) = s.byte() {
        let n = (op >> 3) as usize % 9;
        let raw = s.take(n * 8).to_vec();
        let words = |w: usize| raw.chunks_exact(w).map(|c| c.to_vec()).collect::<Vec<_>>();
        let v = match op & 7 {
            0 => Val::Bytes(raw.clone()),
            1 => Val::Short(words(2).iter().map(|c| i16::from_le_bytes([c[0], c[1]])).collect()),
            2 => Val::Int(
                words(4)
                    .iter()
                    .map(|c| i32::from_le_bytes(c[..4].try_into().unwrap()))
                    .collect(),
            ),
            3 => Val::UInt(
                words(4)
                    .iter()
                    .map(|c| u32::from_le_bytes(c[..4].try_into().unwrap()))
                    .collect(),
            ),
            // Floats compared by bit pattern; NaN payloads must survive too.
            4 => Val::Float(
                words(4)
                    .iter()
                    .map(|c| u32::from_le_bytes(c[..4].try_into().unwrap()))
                    .collect(),
            ),
            5 => Val::Double(
                words(8)
                    .iter()
                    .map(|c| u64::from_le_bytes(c[..8].try_into().unwrap()))
                    .collect(),
            ),
            6 => Val::Str(raw.iter().copied().filter(|&b| b != 0).collect()),
            // Non-negative longs that fit in 31 bits, so every encoding carries them whole (XDR
            // longs are 4 bytes and zero-extended on decode).
            _ => Val::Long(
                words(4)
                    .iter()
                    .map(|c| (u32::from_le_bytes(c[..4].try_into().unwrap()) >> 1) as i64)
                    .collect(),
            ),
        };
        let r = match &v {
            Val::Bytes(b) => p.pk_byte(b),
            Val::Short(x) => p.pk_short(x),
            Val::Int(x) => p.pk_int(x),
            Val::UInt(x) => p.pk_uint(x),
            Val::Float(x) => p.pk_float(&x.iter().map(|b| f32::from_bits(*b)).collect::<Vec<_>>()),
            Val::Double(x) => p.pk_double(&x.iter().map(|b| f64::from_bits(*b)).collect::<Vec<_>>()),
            Val::Str(x) => p.pk_str(x),
            Val::Long(x) => p.pk_long(x),
        };
        match r {
            Ok(()) => vals.push(v),
            // In-place messages cannot carry strings; nothing else may fail here.
            Err(e) => {
                assert!(matches!(v, Val::Str(_)) && enc == Encoding::InPlace, "{e}");
            }
        }
    }
    let body = p.into_body();
    // In-place messages get one fragment per pack call, whatever its size, as in libpvm.
    if enc != Encoding::InPlace {
        for f in body.fragments() {
            assert!(f.len() <= frag_size - 48, "fragment of {} bytes over capacity", f.len());
        }
    }
    let mut u = Unpacker::new(&body);
    for v in &vals {
        let got = match v {
            Val::Bytes(b) => Val::Bytes({
                let mut o = vec![0; b.len()];
                u.up_byte(&mut o).unwrap();
                o
            }),
            Val::Short(x) => Val::Short({
                let mut o = vec![0; x.len()];
                u.up_short(&mut o).unwrap();
                o
            }),
            Val::Int(x) => Val::Int({
                let mut o = vec![0; x.len()];
                u.up_int(&mut o).unwrap();
                o
            }),
            Val::UInt(x) => Val::UInt({
                let mut o = vec![0; x.len()];
                u.up_uint(&mut o).unwrap();
                o
            }),
            Val::Float(x) => Val::Float({
                let mut o = vec![0f32; x.len()];
                u.up_float(&mut o).unwrap();
                o.iter().map(|f| f.to_bits()).collect()
            }),
            Val::Double(x) => Val::Double({
                let mut o = vec![0f64; x.len()];
                u.up_double(&mut o).unwrap();
                o.iter().map(|f| f.to_bits()).collect()
            }),
            Val::Str(_) => Val::Str(u.up_str().unwrap()),
            Val::Long(x) => Val::Long({
                let mut o = vec![0; x.len()];
                u.up_long(&mut o).unwrap();
                o
            }),
        };
        assert_eq!(&got, v);
    }
    assert_eq!(u.remaining(), 0, "bytes left after unpacking everything packed");
}
