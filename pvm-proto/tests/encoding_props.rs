//! Property tests of the user-data encodings: round trips for every element type, stride and
//! encoding; fragment-boundary rules; no panic on arbitrary input.

use proptest::prelude::*;
use pvm_proto::encoding::{
    EmbeddedMesg, Encoding, Item, LongDecode, MsgBody, PackOptions, Packer, UnpackError, Unpacker,
};

/// One pack call: the data slice, count and stride.
#[derive(Debug, Clone)]
enum Call {
    Byte(Vec<u8>, usize, usize),
    Short(Vec<i16>, usize, usize),
    UShort(Vec<u16>, usize, usize),
    Int(Vec<i32>, usize, usize),
    UInt(Vec<u32>, usize, usize),
    Long(Vec<i64>, usize, usize),
    ULong(Vec<u64>, usize, usize),
    Float(Vec<f32>, usize, usize),
    Double(Vec<f64>, usize, usize),
    Cplx(Vec<[f32; 2]>, usize, usize),
    DCplx(Vec<[f64; 2]>, usize, usize),
    Str(Vec<u8>),
}

/// `(data, cnt, stride)` with `data` exactly long enough.
fn strided<T: std::fmt::Debug + Clone + 'static>(
    elem: impl Strategy<Value = T> + Clone + 'static,
    stride_one: bool,
) -> impl Strategy<Value = (Vec<T>, usize, usize)> {
    let strides = if stride_one {
        Just(1usize).boxed()
    } else {
        prop_oneof![4 => Just(1usize), 1 => 0usize..5].boxed()
    };
    (0usize..200, strides).prop_flat_map(move |(cnt, stride)| {
        let n = if cnt == 0 { 0 } else { (cnt - 1) * stride + 1 };
        (proptest::collection::vec(elem.clone(), n), Just(cnt), Just(stride))
    })
}

fn call(inplace: bool) -> impl Strategy<Value = Call> {
    let s = inplace;
    let mut arms = vec![
        strided(any::<u8>(), s)
            .prop_map(|(v, c, d)| Call::Byte(v, c, d))
            .boxed(),
        strided(any::<i16>(), s)
            .prop_map(|(v, c, d)| Call::Short(v, c, d))
            .boxed(),
        strided(any::<u16>(), s)
            .prop_map(|(v, c, d)| Call::UShort(v, c, d))
            .boxed(),
        strided(any::<i32>(), s)
            .prop_map(|(v, c, d)| Call::Int(v, c, d))
            .boxed(),
        strided(any::<u32>(), s)
            .prop_map(|(v, c, d)| Call::UInt(v, c, d))
            .boxed(),
        strided(any::<i64>(), s)
            .prop_map(|(v, c, d)| Call::Long(v, c, d))
            .boxed(),
        strided(any::<u64>(), s)
            .prop_map(|(v, c, d)| Call::ULong(v, c, d))
            .boxed(),
        strided(any::<u32>().prop_map(f32::from_bits), s)
            .prop_map(|(v, c, d)| Call::Float(v, c, d))
            .boxed(),
        strided(any::<u64>().prop_map(f64::from_bits), s)
            .prop_map(|(v, c, d)| Call::Double(v, c, d))
            .boxed(),
        strided(
            any::<[u32; 2]>().prop_map(|[a, b]| [f32::from_bits(a), f32::from_bits(b)]),
            s,
        )
        .prop_map(|(v, c, d)| Call::Cplx(v, c, d))
        .boxed(),
        strided(
            any::<[u64; 2]>().prop_map(|[a, b]| [f64::from_bits(a), f64::from_bits(b)]),
            s,
        )
        .prop_map(|(v, c, d)| Call::DCplx(v, c, d))
        .boxed(),
    ];
    if !inplace {
        arms.push(proptest::collection::vec(1u8.., 0..300).prop_map(Call::Str).boxed());
    }
    proptest::strategy::Union::new(arms)
}

fn encoding() -> impl Strategy<Value = Encoding> {
    prop_oneof![Just(Encoding::Xdr), Just(Encoding::Raw), Just(Encoding::InPlace)]
}

fn packer(enc: Encoding, frag_size: usize) -> Packer {
    Packer::with_options(
        enc,
        PackOptions {
            frag_size,
            long_overflow: pvm_proto::encoding::LongOverflow::Truncate,
            ..PackOptions::default()
        },
    )
    .unwrap()
}

fn pack(p: &mut Packer, c: &Call) {
    let r = match c {
        Call::Byte(v, n, s) => p.pack_strided(v, *n, *s),
        Call::Short(v, n, s) => p.pack_strided(v, *n, *s),
        Call::UShort(v, n, s) => p.pack_strided(v, *n, *s),
        Call::Int(v, n, s) => p.pack_strided(v, *n, *s),
        Call::UInt(v, n, s) => p.pack_strided(v, *n, *s),
        Call::Long(v, n, s) => p.pack_strided(v, *n, *s),
        Call::ULong(v, n, s) => p.pack_strided(v, *n, *s),
        Call::Float(v, n, s) => p.pack_strided(v, *n, *s),
        Call::Double(v, n, s) => p.pack_strided(v, *n, *s),
        Call::Cplx(v, n, s) => p.pack_strided(v, *n, *s),
        Call::DCplx(v, n, s) => p.pack_strided(v, *n, *s),
        Call::Str(v) => p.pk_str(v),
    };
    r.unwrap();
}

/// Unpacks one call with an output stride of 2 (scattering) and checks the selected elements.
fn check<T: Item + PartialEq + std::fmt::Debug>(
    u: &mut Unpacker,
    v: &[T],
    n: usize,
    s: usize,
    expect: impl Fn(T) -> T,
) -> Result<(), TestCaseError> {
    let mut out = vec![T::default(); 2 * n];
    u.unpack_strided(&mut out, n, 2)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    for i in 0..n {
        let want = expect(v[i * s]);
        // Compare bit patterns through Debug so that NaNs compare equal to themselves.
        prop_assert_eq!(format!("{:?}", out[2 * i]), format!("{:?}", want));
        prop_assert_eq!(format!("{:?}", out[2 * i + 1]), format!("{:?}", T::default()));
    }
    Ok(())
}

fn unpack_and_check(u: &mut Unpacker, c: &Call, xdr: bool) -> Result<(), TestCaseError> {
    match c {
        Call::Byte(v, n, s) => check(u, v, *n, *s, |x| x),
        Call::Short(v, n, s) => check(u, v, *n, *s, |x| x),
        Call::UShort(v, n, s) => check(u, v, *n, *s, |x| x),
        Call::Int(v, n, s) => check(u, v, *n, *s, |x| x),
        Call::UInt(v, n, s) => check(u, v, *n, *s, |x| x),
        // XDR long: the low 32 bits, zero-extended (legacy rules).
        Call::Long(v, n, s) => check(u, v, *n, *s, |x| if xdr { x as u32 as i64 } else { x }),
        Call::ULong(v, n, s) => check(u, v, *n, *s, |x| if xdr { x as u32 as u64 } else { x }),
        Call::Float(v, n, s) => check(u, v, *n, *s, |x| x),
        Call::Double(v, n, s) => check(u, v, *n, *s, |x| x),
        Call::Cplx(v, n, s) => check(u, v, *n, *s, |x| x),
        Call::DCplx(v, n, s) => check(u, v, *n, *s, |x| x),
        Call::Str(v) => {
            let got = u.up_str_raw().map_err(|e| TestCaseError::fail(e.to_string()))?;
            let mut want = v.clone();
            want.push(0);
            prop_assert_eq!(got, want);
            Ok(())
        }
    }
}

fn frag_size(enc: Encoding) -> impl Strategy<Value = usize> {
    match enc {
        // XDR needs room for a double in an empty fragment.
        Encoding::Xdr => prop_oneof![Just(4080usize), 56usize..600, Just(1 << 20)].boxed(),
        _ => prop_oneof![Just(4080usize), 52usize..600, Just(1 << 20)].boxed(),
    }
}

fn message() -> impl Strategy<Value = (Encoding, usize, Vec<Call>)> {
    encoding().prop_flat_map(|enc| {
        let inplace = enc == Encoding::InPlace;
        (
            Just(enc),
            frag_size(enc),
            proptest::collection::vec(call(inplace), 0..12),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn unpack_of_pack_is_identity((enc, fs, calls) in message()) {
        let mut p = packer(enc, fs);
        for c in &calls {
            pack(&mut p, c);
        }
        let body = p.into_body();
        let mut u = body.unpacker();
        for c in &calls {
            unpack_and_check(&mut u, c, enc == Encoding::Xdr)?;
        }
        prop_assert_eq!(u.remaining(), 0);
        prop_assert!(
            matches!(u.get::<u8>(), Err(UnpackError::NoData { .. })),
            "reading past the end is NoData"
        );
    }

    #[test]
    fn sign_extension_mode_restores_negative_longs(v in proptest::collection::vec(any::<i32>(), 0..50)) {
        let longs: Vec<i64> = v.iter().map(|&x| x as i64).collect();
        let mut p = Packer::new(Encoding::Xdr);
        p.pk_long(&longs).unwrap();
        let body = p.into_body();
        let mut out = vec![0i64; longs.len()];
        body.unpacker().long_decode(LongDecode::SignExtend).up_long(&mut out).unwrap();
        prop_assert_eq!(out, longs);
    }

    #[test]
    fn fragments_respect_capacity_and_xdr_units_are_never_split((enc, fs, calls) in message()) {
        let mut p = packer(enc, fs);
        // Offsets in the concatenated body where XDR units start and end.
        let mut units: Vec<(usize, usize)> = Vec::new();
        let mut calls_with_data = 0;
        for c in &calls {
            let before = p.body().len();
            pack(&mut p, c);
            let after = p.body().len();
            let unit = match c {
                Call::Double(..) | Call::DCplx(..) => 8,
                Call::Byte(..) => 0,
                Call::Str(..) => {
                    if enc == Encoding::Xdr {
                        units.push((before, before + 4));
                    }
                    0
                }
                _ => 4,
            };
            if unit > 0 && enc == Encoding::Xdr {
                units.extend((before..after).step_by(unit).map(|s| (s, s + unit)));
            }
            if after > before {
                calls_with_data += 1;
            }
        }
        let cap = p.fragment_capacity();
        let body = p.into_body();
        let lens = body.fragment_lens();
        let mut start = 0;
        let mut boundaries = Vec::new();
        for (i, &l) in lens.iter().enumerate() {
            if enc != Encoding::InPlace {
                prop_assert!(l <= cap, "fragment {} holds {} > {}", i, l, cap);
                prop_assert!(l > 0 || lens.len() == 1, "empty fragment {} of {:?}", i, lens);
            }
            if enc == Encoding::Xdr {
                prop_assert_eq!(l % 4, 0);
            }
            if enc == Encoding::Raw && i + 1 < lens.len() {
                prop_assert_eq!(l, cap, "raw fragments are full");
            }
            start += l;
            boundaries.push(start);
        }
        prop_assert_eq!(start, body.len());
        if enc == Encoding::InPlace {
            prop_assert_eq!(lens.len(), calls_with_data, "one fragment per pack call with data");
        }
        for b in boundaries {
            for &(s, e) in &units {
                prop_assert!(!(s < b && b < e), "XDR unit {}..{} split at {}", s, e, b);
            }
        }
    }

    #[test]
    fn concatenated_body_does_not_depend_on_fragment_size(
        (enc, _fs, calls) in message(),
        a in 56usize..5000,
        b in 56usize..5000,
    ) {
        prop_assume!(enc != Encoding::InPlace);
        let mut pa = packer(enc, a);
        let mut pb = packer(enc, b);
        for c in &calls {
            pack(&mut pa, c);
            pack(&mut pb, c);
        }
        prop_assert_eq!(pa.body().bytes(), pb.body().bytes());
    }

    #[test]
    fn embedded_messages_round_trip(
        (inner_enc, ifs, inner_calls) in message(),
        outer_enc in prop_oneof![Just(Encoding::Xdr), Just(Encoding::Raw)],
        ofs in 56usize..5000,
        meta in any::<[i32; 6]>(),
    ) {
        let mut ip = packer(inner_enc, ifs);
        for c in &inner_calls {
            pack(&mut ip, c);
        }
        let m = EmbeddedMesg {
            ctx: meta[0], tag: meta[1], wid: meta[2], crc: meta[3], src: meta[4], dst: meta[5],
            body: ip.into_body(),
        };
        let mut op = packer(outer_enc, ofs);
        op.pk_int(&[7]).unwrap();
        op.pk_mesg(&m).unwrap();
        op.pk_int(&[8]).unwrap();
        let outer = op.into_body();
        let mut u = outer.unpacker();
        prop_assert_eq!(u.get::<i32>().unwrap(), 7);
        let got = u.up_mesg().unwrap();
        // Trailing empty fragments are not read back (libpvm stops when the length is used up).
        let mut want = m.clone();
        let keep: Vec<&[u8]> = {
            let frags: Vec<&[u8]> = m.body.fragments().collect();
            let last = frags.iter().rposition(|f| !f.is_empty()).map_or(0, |i| i + 1);
            frags[..last].to_vec()
        };
        want.body = MsgBody::from_fragments(m.body.enc(), keep);
        prop_assert_eq!(&got, &want);
        if m.body.fragments().last().is_some_and(|f| f.is_empty()) {
            // An empty trailing fragment leaves its `int 0` unread, as in libpvm.
            prop_assert_eq!(u.get::<i32>().unwrap(), 0);
        } else {
            prop_assert_eq!(u.get::<i32>().unwrap(), 8);
        }
    }

    #[test]
    fn unpacking_arbitrary_bytes_never_panics(
        enc in prop_oneof![Just(0x1000_0000), Just(0x0040_8c41), Just(0x2000_0000), any::<i32>()],
        frags in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..4),
        ops in proptest::collection::vec((0u8..14, 0usize..40, 0usize..4), 0..20),
    ) {
        let body = MsgBody::from_fragments(enc, frags.iter().map(Vec::as_slice));
        let mut u = body.unpacker();
        for (op, n, s) in ops {
            let out_len = if n == 0 { 0 } else { (n - 1) * s + 1 };
            let before = u.position();
            let r: Result<(), UnpackError> = match op {
                0 => u.unpack_strided(&mut vec![0u8; out_len], n, s),
                1 => u.unpack_strided(&mut vec![0i16; out_len], n, s),
                2 => u.unpack_strided(&mut vec![0u16; out_len], n, s),
                3 => u.unpack_strided(&mut vec![0i32; out_len], n, s),
                4 => u.unpack_strided(&mut vec![0u32; out_len], n, s),
                5 => u.unpack_strided(&mut vec![0i64; out_len], n, s),
                6 => u.unpack_strided(&mut vec![0u64; out_len], n, s),
                7 => u.unpack_strided(&mut vec![0f32; out_len], n, s),
                8 => u.unpack_strided(&mut vec![0f64; out_len], n, s),
                9 => u.unpack_strided(&mut vec![[0f32; 2]; out_len], n, s),
                10 => u.unpack_strided(&mut vec![[0f64; 2]; out_len], n, s),
                11 => u.up_str().map(drop),
                12 => u.up_mesg().map(drop),
                _ => u.up_str_raw().map(drop),
            };
            prop_assert!(u.position() <= body.len());
            if r.is_err() {
                prop_assert_eq!(u.position(), before, "a failed unpack consumes nothing");
            }
        }
    }
}
