//! Unit tests: captured legacy bytes, fragment boundaries, error paths.

use super::*;
use crate::codes::{DSIG_X86_64, ENC_XDR};

/// Frames of a `tests/vectors/*.hex` file.
fn frames(text: &str) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    for line in text.lines() {
        if line.starts_with("## ") {
            out.push(Vec::new());
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let hex = line.trim().as_bytes();
            let cur = out.last_mut().expect("hex before the first frame label");
            for pair in hex.chunks(2) {
                cur.push(u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap());
            }
        }
    }
    out
}

/// Body of a single-fragment stream frame (after the 16-byte fragment and 32-byte message
/// headers), with the header `enc`.
fn body_of(frame: &[u8]) -> (i32, &[u8]) {
    let enc = i32::from_be_bytes(frame[16..20].try_into().unwrap());
    (enc, &frame[48..])
}

fn masked(bytes: &[u8], pads: &[std::ops::Range<usize>]) -> Vec<u8> {
    let mut v = bytes.to_vec();
    for r in pads {
        for b in &mut v[r.clone()] {
            *b = 0xee;
        }
    }
    v
}

fn packer(enc: Encoding, frag_size: usize) -> Packer {
    Packer::with_options(
        enc,
        PackOptions {
            frag_size,
            record_pads: true,
            ..PackOptions::default()
        },
    )
    .unwrap()
}

/// The message of td_user_msg_xdr.hex / tc_direct_route_unix.hex (wire.md §6.2).
fn pack_user_msg(p: &mut Packer) {
    p.pk_int(&[1, 2, -3, 0x12345678]).unwrap();
    p.pk_short(&[0x102, -2]).unwrap();
    p.pk_long(&[0x11223344, -5]).unwrap();
    p.pk_float(&[1.5]).unwrap();
    p.pk_double(&[2.25]).unwrap();
    p.pk_cplx(&[[1.0, -1.0]]).unwrap();
    p.pk_dcplx(&[[1.0, -2.0]]).unwrap();
    p.pk_uint(&[0xdeadbeef]).unwrap();
    p.pk_byte(b"ABC").unwrap();
    p.pk_str(b"hello").unwrap();
    p.pk_long(&[0x1122334455667788]).unwrap();
}

#[test]
fn xdr_user_message_matches_capture() {
    let f = frames(include_str!("../../tests/vectors/td_user_msg_xdr.hex"));
    let (enc, want) = body_of(&f[0]);
    assert_eq!(enc, ENC_XDR);
    let mut p = packer(Encoding::Xdr, 4080);
    pack_user_msg(&mut p);
    let body = p.body();
    assert_eq!(body.enc(), ENC_XDR);
    assert_eq!(body.fragment_count(), 1);
    assert_eq!(masked(body.bytes(), p.pad_ranges()), masked(want, p.pad_ranges()));
    // Pads: one after "ABC", two after "hello\0".
    assert_eq!(p.pad_ranges(), &[75..76, 86..88]);
}

#[test]
fn xdr_user_message_decodes_with_legacy_long_rules() {
    let f = frames(include_str!("../../tests/vectors/td_user_msg_xdr.hex"));
    let (enc, bytes) = body_of(&f[0]);
    let body = MsgBody::from_fragments(enc, [bytes]);
    let mut u = body.unpacker();
    let mut i4 = [0i32; 4];
    u.up_int(&mut i4).unwrap();
    assert_eq!(i4, [1, 2, -3, 0x12345678]);
    let mut s2 = [0i16; 2];
    u.up_short(&mut s2).unwrap();
    assert_eq!(s2, [0x102, -2]);
    let mut l2 = [0i64; 2];
    u.up_long(&mut l2).unwrap();
    assert_eq!(l2, [0x11223344, 4294967291], "legacy zero-extends a packed -5");
    assert_eq!(u.get::<f32>().unwrap(), 1.5);
    assert_eq!(u.get::<f64>().unwrap(), 2.25);
    assert_eq!(u.get::<Complex32>().unwrap(), [1.0, -1.0]);
    assert_eq!(u.get::<Complex64>().unwrap(), [1.0, -2.0]);
    assert_eq!(u.get::<u32>().unwrap(), 0xdeadbeef);
    let mut b3 = [0u8; 3];
    u.up_byte(&mut b3).unwrap();
    assert_eq!(&b3, b"ABC");
    assert_eq!(u.up_str().unwrap(), b"hello");
    assert_eq!(u.get::<i64>().unwrap(), 0x55667788);
    assert_eq!(u.remaining(), 0);
    assert!(matches!(u.get::<i32>(), Err(UnpackError::NoData { .. })));

    // Sign extension on request.
    let mut u = body.unpacker().long_decode(LongDecode::SignExtend).at(24);
    u.up_long(&mut l2).unwrap();
    assert_eq!(l2, [0x11223344, -5]);
}

#[test]
fn raw_user_message_matches_direct_route_capture() {
    let f = frames(include_str!("../../tests/vectors/tc_direct_route_unix.hex"));
    let (enc, want) = body_of(&f[3]);
    assert_eq!(enc, DSIG_X86_64);
    let mut p = packer(Encoding::Raw, 4080);
    pack_user_msg(&mut p);
    assert_eq!(p.body().enc(), DSIG_X86_64);
    assert_eq!(p.body().bytes(), want);
    assert!(p.pad_ranges().is_empty());

    let body = MsgBody::from_fragments(enc, [want]);
    let mut u = body.unpacker();
    let mut i4 = [0i32; 4];
    u.up_int(&mut i4).unwrap();
    let mut s2 = [0i16; 2];
    u.up_short(&mut s2).unwrap();
    let mut l2 = [0i64; 2];
    u.up_long(&mut l2).unwrap();
    assert_eq!(l2, [0x11223344, -5], "raw long keeps all 64 bits");
}

#[test]
fn raw_reply_matches_capture() {
    for (file, idx) in [
        (include_str!("../../tests/vectors/td_user_msg_raw_reply.hex"), 0),
        (include_str!("../../tests/vectors/tc_direct_route_unix.hex"), 4),
    ] {
        let f = frames(file);
        let (enc, want) = body_of(&f[idx]);
        let mut p = Packer::new(Encoding::Raw);
        p.pk_int(&[42]).unwrap();
        p.pk_str(b"ok").unwrap();
        assert_eq!(p.body().bytes(), want);
        let body = MsgBody::from_fragments(enc, [want]);
        let mut u = body.unpacker();
        assert_eq!(u.get::<i32>().unwrap(), 42);
        assert_eq!(u.up_str_raw().unwrap(), b"ok\0");
    }
}

#[test]
fn mailbox_embedded_messages_round_trip_byte_exact() {
    let f = frames(include_str!("../../tests/vectors/td_mailbox.hex"));
    // PUT: int op, int tid, string name, int index, int flags, then the embedded message.
    let (enc, put) = body_of(&f[2]);
    let body = MsgBody::from_fragments(enc, [put]);
    let mut u = body.unpacker();
    let mut head = [0i32; 2];
    u.up_int(&mut head).unwrap();
    assert_eq!(u.up_str().unwrap(), b"specbox");
    let mut idx_flags = [0i32; 2];
    u.up_int(&mut idx_flags).unwrap();
    assert_eq!(idx_flags, [-1, 0]);
    let at = u.position();
    let m = u.up_mesg().unwrap();
    assert_eq!(u.remaining(), 0);
    assert_eq!((m.ctx, m.tag, m.wid, m.crc, m.src, m.dst), (0, 0, 0, 0, 0x4000b, 0));
    assert_eq!(m.body.enc(), ENC_XDR);
    assert_eq!(m.body.fragment_lens(), vec![4]);
    assert_eq!(m.body.unpacker().get::<i32>().unwrap(), 12345);
    let mut p = Packer::new(Encoding::Xdr);
    p.pk_mesg(&m).unwrap();
    assert_eq!(p.body().bytes(), &put[at..]);

    // GET reply: int cc, then the stored message, which the pvmd keeps with an empty first
    // fragment.
    let (enc, reply) = body_of(&f[5]);
    let body = MsgBody::from_fragments(enc, [reply]);
    let mut u = body.unpacker();
    assert_eq!(u.get::<i32>().unwrap(), 0);
    let m = u.up_mesg().unwrap();
    assert_eq!(u.remaining(), 0);
    assert_eq!(m.body.fragment_lens(), vec![0, 4]);
    let mut p = Packer::new(Encoding::Xdr);
    p.pk_int(&[0]).unwrap();
    p.pk_mesg(&m).unwrap();
    assert_eq!(p.body().bytes(), reply);
}

#[test]
fn default_fragments_hold_4032_body_bytes() {
    let mut p = Packer::new(Encoding::Xdr);
    assert_eq!(p.fragment_capacity(), 4032);
    p.pk_int(&(0..1500).collect::<Vec<i32>>()).unwrap();
    assert_eq!(p.body().fragment_lens(), vec![4032, 1968]);
    let mut p = Packer::new(Encoding::Raw);
    p.pk_double(&vec![0.5; 1000]).unwrap();
    assert_eq!(p.body().fragment_lens(), vec![4032, 3968]);
}

#[test]
fn xdr_double_that_does_not_fit_closes_the_fragment_short() {
    let mut p = Packer::new(Encoding::Xdr);
    p.pk_int(&[7]).unwrap();
    p.pk_double(&vec![1.0; 600]).unwrap();
    // 4 + 503 * 8 = 4028: the 504th double does not fit in the last 4 bytes.
    assert_eq!(p.body().fragment_lens(), vec![4028, 97 * 8]);
    // Raw splits the 504th double across the boundary instead.
    let mut p = Packer::new(Encoding::Raw);
    p.pk_int(&[7]).unwrap();
    p.pk_double(&vec![1.0; 600]).unwrap();
    assert_eq!(p.body().fragment_lens(), vec![4032, 4 + 600 * 8 - 4032]);
}

#[test]
fn xdr_dcplx_parts_may_land_in_different_fragments() {
    let mut p = Packer::new(Encoding::Xdr);
    p.pk_double(&vec![0.0; 503]).unwrap(); // 4024 bytes: 8 left
    p.pk_dcplx(&[[1.0, 2.0]]).unwrap();
    assert_eq!(p.body().fragment_lens(), vec![4032, 8]);
    let mut u = p.body().unpacker().at(4024);
    assert_eq!(u.get::<Complex64>().unwrap(), [1.0, 2.0]);
}

#[test]
fn xdr_bytes_fill_fragments_and_pad_the_last() {
    let mut p = packer(Encoding::Xdr, 100); // 52-byte fragments
    p.pk_int(&[1]).unwrap();
    p.pk_byte(&[9u8; 101]).unwrap();
    p.pk_int(&[2]).unwrap();
    assert_eq!(p.body().fragment_lens(), vec![52, 52, 8]);
    assert_eq!(p.pad_ranges().to_vec(), vec![(105..108)]);
    let mut u = p.body().unpacker();
    let mut b = [0u8; 101];
    assert_eq!(u.get::<i32>().unwrap(), 1);
    u.up_byte(&mut b).unwrap();
    assert_eq!(u.get::<i32>().unwrap(), 2);
}

#[test]
fn tiny_fragments_follow_legacy_rules() {
    // frag size 52: 4 body bytes per fragment.
    let mut p = packer(Encoding::Xdr, 52);
    p.pk_cplx(&[[1.0, 2.0]]).unwrap();
    assert_eq!(p.body().fragment_lens(), vec![4, 4]);
    assert_eq!(
        p.pk_double(&[1.0]),
        Err(PackError::FragTooSmall { unit: 8, capacity: 4 })
    );
    // XDR capacity is rounded down to a multiple of 4; raw uses every byte.
    assert_eq!(packer(Encoding::Xdr, 4081).fragment_capacity(), 4032);
    assert_eq!(packer(Encoding::Raw, 4081).fragment_capacity(), 4033);
    assert!(Packer::with_options(
        Encoding::Xdr,
        PackOptions {
            frag_size: 51,
            ..Default::default()
        }
    )
    .is_err());
}

#[test]
fn inplace_makes_one_fragment_per_call() {
    let mut p = Packer::new(Encoding::InPlace);
    assert_eq!(p.body().fragment_count(), 0);
    p.pk_int(&[1, 2, 3, 4]).unwrap();
    p.pk_int(&[]).unwrap();
    p.pk_double(&vec![1.0; 1000]).unwrap();
    p.pk_byte(b"abc").unwrap();
    assert_eq!(p.body().fragment_lens(), vec![16, 8000, 3]);
    assert_eq!(p.body().enc(), DSIG_X86_64);
    assert_eq!(p.pk_str(b"x"), Err(PackError::NotImpl("pvm_pkstr")));
    assert_eq!(
        p.pack_strided(&[1, 2, 3], 2, 2),
        Err(PackError::NotImpl("strided data"))
    );
    assert_eq!(p.pk_str(b"x").unwrap_err().pvm_error(), crate::codes::PvmError::NotImpl);
}

#[test]
fn strides_select_and_scatter() {
    for enc in [Encoding::Xdr, Encoding::Raw] {
        let mut p = Packer::new(enc);
        p.pack_strided(&[1i32, 0, 0, 2, 0, 0, 3], 3, 3).unwrap();
        p.pack_strided(&[5u8, 0, 6], 2, 2).unwrap();
        p.pack_strided(&[[1.0f64, 2.0], [0.0, 0.0], [3.0, 4.0]], 2, 2).unwrap();
        p.pack_strided(&[9i16], 3, 0).unwrap();
        let mut u = p.body().unpacker();
        let mut ints = [0i32; 5];
        u.unpack_strided(&mut ints, 3, 2).unwrap();
        assert_eq!(ints, [1, 0, 2, 0, 3]);
        let mut b = [0u8; 2];
        u.up_byte(&mut b).unwrap();
        assert_eq!(b, [5, 6]);
        let mut z = [[0.0f64; 2]; 2];
        u.up_dcplx(&mut z).unwrap();
        assert_eq!(z, [[1.0, 2.0], [3.0, 4.0]]);
        let mut s = [0i16; 3];
        u.up_short(&mut s).unwrap();
        assert_eq!(s, [9, 9, 9]);
        let mut small = [0i32; 2];
        assert!(matches!(
            u.unpack_strided(&mut small, 2, 2),
            Err(UnpackError::BadParam(_))
        ));
        assert!(matches!(p.pack_strided(&[1i32, 2], 2, 2), Err(PackError::BadParam(_))));
    }
}

#[test]
fn xdr_short_and_long_edges() {
    let mut p = Packer::new(Encoding::Xdr);
    p.pk_short(&[-1]).unwrap();
    p.pk_ushort(&[0xffff]).unwrap();
    p.pk_long(&[0x1122334455667788, -1]).unwrap();
    p.pk_ulong(&[0xffff_ffff_ffff_fffe]).unwrap();
    assert_eq!(
        p.body().bytes(),
        &hex("ffffffff ffffffff 55667788 ffffffff fffffffe")[..]
    );
    let mut u = p.body().unpacker();
    assert_eq!(u.get::<i16>().unwrap(), -1);
    assert_eq!(u.get::<u16>().unwrap(), 0xffff);
    assert_eq!(u.get::<i64>().unwrap(), 0x55667788);
    assert_eq!(u.get::<i64>().unwrap(), 0xffff_ffff, "legacy zero-extends -1");
    assert_eq!(u.get::<u64>().unwrap(), 0xffff_fffe);

    let mut p = Packer::with_options(
        Encoding::Xdr,
        PackOptions {
            long_overflow: LongOverflow::Error,
            ..Default::default()
        },
    )
    .unwrap();
    p.pk_long(&[i32::MIN as i64, i32::MAX as i64]).unwrap();
    p.pk_ulong(&[u32::MAX as u64]).unwrap();
    let e = p.pk_long(&[1, 1 << 31]).unwrap_err();
    assert_eq!(
        e,
        PackError::Overflow {
            kind: "long",
            index: 1,
            value: 1 << 31
        }
    );
    assert_eq!(e.pvm_error(), crate::codes::PvmError::Overflow);
    assert!(p.pk_ulong(&[1 << 32]).is_err());
    assert_eq!(p.body().len(), 12, "a failed call packs nothing");
}

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

#[test]
fn unpack_errors_are_nodata_and_badmsg_without_panic_or_allocation() {
    // A string claiming 0x7fffffff bytes: NoData, position unchanged.
    let body = MsgBody::from_fragments(ENC_XDR, [&hex("7fffffff 41424300")[..]]);
    let mut u = body.unpacker();
    let e = u.up_str().unwrap_err();
    assert!(matches!(e, UnpackError::NoData { need: 0x7fff_ffff, .. }), "{e}");
    assert_eq!(e.pvm_error(), crate::codes::PvmError::NoData);
    assert_eq!(u.position(), 0);
    // 0xffffffff = -1: BadMsg.
    let body = MsgBody::from_fragments(ENC_XDR, [&hex("ffffffff")[..]]);
    assert!(matches!(body.unpacker().up_str(), Err(UnpackError::BadMsg { .. })));
    // Raw data from a 32-bit host: bytes pass, ints are BadMsg.
    let body = MsgBody::from_fragments(crate::dsig::I386_LINUX, [&[1u8, 2, 3, 4][..]]);
    let mut u = body.unpacker();
    assert_eq!(u.get::<i32>().unwrap_err().pvm_error(), crate::codes::PvmError::BadMsg);
    let mut b = [0u8; 4];
    u.up_byte(&mut b).unwrap();
    // In-place marker: nothing decodes.
    let body = MsgBody::from_fragments(crate::codes::ENC_INPLACE, [&[1u8, 2, 3, 4][..]]);
    assert!(matches!(
        body.unpacker().up_byte(&mut b),
        Err(UnpackError::BadMsg { .. })
    ));
    // Reading past the end of a multi-fragment body.
    let body = MsgBody::from_fragments(ENC_XDR, [&[0u8; 4][..], &[0u8; 4][..]]);
    let mut u = body.unpacker();
    let mut three = [0i32; 3];
    assert!(matches!(
        u.up_int(&mut three),
        Err(UnpackError::NoData { need: 12, have: 8, .. })
    ));
    assert_eq!(u.position(), 0);
    // Embedded message with a negative or oversized length.
    let mut m = hex("ffffffff");
    m.extend_from_slice(&[0u8; 28]);
    let body = MsgBody::from_fragments(ENC_XDR, [&m[..]]);
    assert!(matches!(body.unpacker().up_mesg(), Err(UnpackError::BadMsg { .. })));
    let mut m = hex("7fffffff");
    m.extend_from_slice(&[0u8; 28]);
    let body = MsgBody::from_fragments(ENC_XDR, [&m[..]]);
    assert!(matches!(body.unpacker().up_mesg(), Err(UnpackError::NoData { .. })));
    // A run of zero-length fragments ends at the end of the body, not in a loop.
    let mut m = hex("00000004");
    m.extend_from_slice(&[0u8; 28]);
    m.extend_from_slice(&[0u8; 64]);
    let body = MsgBody::from_fragments(ENC_XDR, [&m[..]]);
    assert!(matches!(body.unpacker().up_mesg(), Err(UnpackError::NoData { .. })));
}

#[test]
fn empty_messages() {
    assert_eq!(Packer::new(Encoding::Xdr).body().fragment_lens(), vec![0]);
    assert_eq!(Packer::new(Encoding::Raw).body().fragment_lens(), vec![0]);
    // pvm_pkmesg of an empty XDR message: len 0, then the one empty fragment.
    let inner = Packer::new(Encoding::Xdr).into_body();
    let mut p = Packer::new(Encoding::Xdr);
    p.pk_mesg(&EmbeddedMesg {
        body: inner,
        ..Default::default()
    })
    .unwrap();
    assert_eq!(p.body().len(), 36);
}

#[test]
fn legacy_long_overflow_only_at_a_fragment_boundary() {
    // 1007 ints leave 4 bytes; the first long fits, the second would open a new fragment.
    let mut p = Packer::new(Encoding::Xdr);
    p.pk_int(&vec![0; 1007]).unwrap();
    p.pk_long(&[1 << 40, 1 << 41, 3]).unwrap_err();
    assert_eq!(
        p.body().fragment_lens(),
        vec![4032],
        "the element before is kept, no new fragment"
    );
    // In range at the boundary: no error.
    p.pk_long(&[5, 1 << 40]).unwrap();
    assert_eq!(p.body().fragment_lens(), vec![4032, 8]);
    // Truncate never fails.
    let mut p = Packer::with_options(
        Encoding::Xdr,
        PackOptions {
            long_overflow: LongOverflow::Truncate,
            ..Default::default()
        },
    )
    .unwrap();
    p.pk_int(&vec![0; 1008]).unwrap();
    p.pk_ulong(&[1 << 40]).unwrap();
    assert_eq!(p.body().fragment_lens(), vec![4032, 4]);
}

#[test]
fn a_reserved_buffer_changes_no_byte_or_fragment() {
    for enc in [Encoding::Xdr, Encoding::Raw, Encoding::InPlace] {
        let data: Vec<f64> = (0..20_000).map(|i| i as f64 * 0.5).collect();
        let mut plain = Packer::new(enc);
        let mut pooled = Packer::new(enc);
        for p in [&mut plain, &mut pooled] {
            p.pk_int(&[7, 8, 9]).unwrap();
        }
        let given = Vec::with_capacity(1 << 20);
        let old = pooled.reserve_from(data.len() * 8, |need| {
            assert!(need >= data.len() * 8);
            Some(given)
        });
        assert!(old.is_some(), "the small buffer is handed back");
        assert!(pooled
            .reserve_from(8, |_| panic!("room is left: no new buffer"))
            .is_none());
        plain.pk_double(&data).unwrap();
        pooled.pk_double(&data).unwrap();
        assert_eq!(plain.body(), pooled.body(), "{enc:?}");
        // A buffer too small is handed back unused.
        let mut p = Packer::new(enc);
        let back = p.reserve_from(1 << 20, |_| Some(Vec::with_capacity(10))).unwrap();
        assert_eq!(back.capacity(), 10);
    }
}

/// Packing a memory-image array through `pack_image_with` (the library's two-thread copy)
/// gives the bytes and fragment boundaries of `pack`; other forms are left to `pack`.
#[test]
fn pack_image_with_equals_pack() {
    let bytes: Vec<u8> = (0..10_001u32).map(|i| (i * 7) as u8).collect();
    let ints: Vec<i32> = (0..3001).map(|i| i * 700_001).collect();
    for enc in [Encoding::Raw, Encoding::Xdr, Encoding::InPlace] {
        let (mut plain, mut hooked) = (Packer::new(enc), Packer::new(enc));
        let copy = |d: &mut [std::mem::MaybeUninit<u8>], s: &[u8]| {
            for (d, s) in d.iter_mut().zip(s) {
                d.write(*s);
            }
        };
        plain.pk_int(&[5]).unwrap();
        hooked.pk_int(&[5]).unwrap();
        plain.pk_byte(&bytes).unwrap();
        // SAFETY: the closure writes every byte it is given.
        assert!(unsafe { hooked.pack_image_with(&bytes, copy) }.unwrap());
        plain.pk_byte(&bytes[..3]).unwrap();
        // SAFETY: as above.
        assert!(unsafe { hooked.pack_image_with(&bytes[..3], copy) }.unwrap());
        plain.pk_byte(&[]).unwrap();
        // SAFETY: as above.
        assert!(unsafe { hooked.pack_image_with(&bytes[..0], copy) }.unwrap());
        // SAFETY: as above.
        let took = unsafe { hooked.pack_image_with(&ints, copy) }.unwrap();
        assert_eq!(took, enc != Encoding::Xdr, "{enc:?}: ints are an image but in XDR");
        if !took {
            hooked.pk_int(&ints).unwrap();
        }
        plain.pk_int(&ints).unwrap();
        assert_eq!(plain.body(), hooked.body(), "{enc:?}");
        assert_eq!(plain.body().fragments().count(), hooked.body().fragments().count());
    }
    let mut p = Packer::new(Encoding::Xdr);
    // SAFETY: as above (never called).
    assert!(!unsafe { p.pack_image_with(&ints, |_, _| unreachable!()) }.unwrap());
}

#[test]
fn partial_unpack_takes_what_is_there_as_legacy() {
    // XDR: whole ints only, consumed; the next one fails at once.
    let mut p = Packer::new(Encoding::Xdr);
    p.pk_int(&[1, 2, 3]).unwrap();
    let body = p.into_body();
    let mut u = body.unpacker();
    let mut out = [0i32; 5];
    assert!(matches!(
        u.unpack_strided_partial(&mut out, 5, 1),
        Err(UnpackError::NoData { .. })
    ));
    assert_eq!(out, [1, 2, 3, 0, 0]);
    assert_eq!(u.position(), 12);
    // Strided: elements land at their stride.
    let mut u = body.unpacker();
    let mut out = [0i32; 8];
    assert!(u.unpack_strided_partial(&mut out, 4, 2).is_err());
    assert_eq!(out, [1, 0, 2, 0, 3, 0, 0, 0]);
    // XDR double cut after its first word: that word is the high half, 4 bytes consumed.
    let mut p = Packer::new(Encoding::Xdr);
    p.pk_int(&[0x4000_0000]).unwrap();
    let body = p.into_body();
    let mut u = body.unpacker();
    let mut d = [0f64; 1];
    assert!(u.unpack_strided_partial(&mut d, 1, 1).is_err());
    if cfg!(target_endian = "little") {
        assert_eq!(d[0], 2.0);
        assert_eq!(u.position(), 4);
    }
    // Raw: every byte left, the last element cut.
    let mut p = Packer::new(Encoding::Raw);
    p.pk_short(&[0x0102, 0x0304]).unwrap();
    p.pk_byte(&[0x05]).unwrap();
    let body = p.into_body();
    let mut u = body.unpacker();
    let mut out = [0i16; 3];
    assert!(u.unpack_strided_partial(&mut out, 3, 1).is_err());
    assert_eq!(out[..2], [0x0102, 0x0304]);
    assert_eq!(out[2].to_ne_bytes()[0], 0x05);
    assert_eq!(u.position(), 5);
    // Enough data: the same as unpack_strided.
    let mut u = body.unpacker();
    let mut out = [0i16; 2];
    u.unpack_strided_partial(&mut out, 2, 1).unwrap();
    assert_eq!(out, [0x0102, 0x0304]);
}
