//! Stream reassembly: fragments cut from the input, interleaved from several sources, never
//! panic, never hold more than the caps, and a complete message is exactly the bytes its
//! fragments carried.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pvm_proto::frag::{FragFlags, StreamFragHeader};
use pvm_proto::message::{Limits, Reassembler};
use pvm_proto::Tid;

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_bytes_per_source: 4096,
        max_partial: 3,
    };
    let mut r = Reassembler::new(limits);
    let mut rest = data;
    // What each source has contributed since its last SOM, to check completed messages.
    let mut sent: std::collections::HashMap<Tid, Vec<u8>> = Default::default();
    while rest.len() >= 2 {
        let (ctl, tail) = rest.split_at(2);
        let n = (ctl[1] as usize).min(tail.len());
        let (payload, tail) = tail.split_at(n);
        rest = tail;
        let src = Tid::task(1, 1 + (ctl[0] & 3) as u32);
        let flags = FragFlags::from_bits_retain(ctl[0] >> 2 & 3);
        let h = StreamFragHeader {
            dst: Tid::task(1, 9),
            src,
            len: n as u32,
            flags,
        };
        let mut frag = h.to_bytes().to_vec();
        frag.extend_from_slice(payload);
        if flags.contains(FragFlags::SOM) {
            sent.insert(src, Vec::new());
        }
        sent.entry(src).or_default().extend_from_slice(payload);
        match r.push(&frag) {
            Ok(Some(m)) => {
                assert_eq!(m.src, src);
                let all = sent.remove(&src).unwrap();
                assert_eq!(&all[32..], &m.body[..]);
                assert_eq!(m.header.to_bytes()[..12], all[..12]);
            }
            Ok(None) => {}
            Err(e) => {
                assert_eq!(e.src, src);
                sent.remove(&src);
            }
        }
        assert!(r.pending() <= limits.max_partial);
        assert!(r.buffered(src) <= limits.max_bytes_per_source);
    }
});
