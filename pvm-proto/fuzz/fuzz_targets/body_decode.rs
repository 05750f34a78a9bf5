//! Message bodies: for any code, direction and bytes, `decode` is total, and whatever decodes
//! re-emits to the input with only the pad bytes (legacy garbage) zeroed.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pvm_proto::body::{decode, mask_padding};
use pvm_proto::codes::{Dm, Gs, Sm, Tc, Tm, ENC_XDR, SYSCTX_DG, SYSCTX_TC, SYSCTX_TM};
use pvm_proto::mesg::MsgHeader;
use pvm_proto::Tid;

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let (sel, body) = data.split_at(3);
    let codes: Vec<(i32, i32)> = Tm::ALL
        .iter()
        .map(|c| (c.code(), SYSCTX_TM))
        .chain(Dm::ALL.iter().map(|c| (c.code(), 0)))
        .chain(Tc::ALL.iter().map(|c| (c.code(), SYSCTX_TC)))
        .chain(Sm::ALL.iter().map(|c| (c.code(), 0)))
        .chain(Gs::ALL.iter().map(|c| (c.code(), SYSCTX_DG)))
        .chain([(7, 0), (0x8002_0100u32 as i32, 0)])
        .collect();
    let (tag, ctx) = codes[sel[0] as usize % codes.len()];
    let task = Tid::from_u32(0x40001);
    let other = Tid::from_u32(0x80002);
    let (src, dst) = match sel[1] % 5 {
        0 => (task, Tid::LOCAL_PVMD),
        1 => (Tid::LOCAL_PVMD, task),
        2 => (Tid::pvmd(1), Tid::pvmd(2)),
        3 => (task, other),
        _ => (Tid::pvmd(2), task),
    };
    let enc = if sel[2] & 1 == 0 { ENC_XDR } else { 0x0040_8c41 };
    let header = MsgHeader {
        enc,
        tag,
        ctx,
        wid: 0,
        crc: 0,
    };
    if let Ok(b) = decode(&header, src, dst, body) {
        assert_eq!(b.emit(), mask_padding(&header, src, dst, body), "{b}");
        let _ = b.to_string();
    }
});
