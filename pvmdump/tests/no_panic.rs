//! Arbitrary input never panics and every error names a packet.

mod common;
use common::*;
use proptest::prelude::*;
use pvmdump::{analyse_bytes, Config};

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_udp_payload(payload in proptest::collection::vec(any::<u8>(), 0..600)) {
        let file = pcap(ETHERNET, &frames(vec![eth(&ipv4(A, B, 17, 1, false, 0, &udp(1, 2, &payload)))]));
        let r = analyse_bytes(&file, Config { all_udp: true, check: true, ..Config::default() }, false);
        prop_assert!(r.is_ok());
    }

    #[test]
    fn any_tcp_stream(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..8),
                      order in proptest::collection::vec(any::<u16>(), 0..8)) {
        let mut pkts = vec![eth(&ipv4(A, B, 6, 0, false, 0, &tcp(1, 2, 0, SYN, b"")))];
        let mut off = 1u32;
        let mut segs = Vec::new();
        for c in &chunks {
            segs.push(eth(&ipv4(A, B, 6, 0, false, 0, &tcp(1, 2, off, ACK, c))));
            off = off.wrapping_add(c.len() as u32);
        }
        for (i, o) in order.iter().enumerate() {
            if !segs.is_empty() {
                let j = usize::from(*o) % segs.len();
                let n = segs.len();
                segs.swap(i % n, j);
            }
        }
        pkts.extend(segs);
        let file = pcap(ETHERNET, &frames(pkts));
        let r = analyse_bytes(&file, Config { tcp_ports: vec![2], check: true, ..Config::default() }, false);
        prop_assert!(r.is_ok());
    }

    #[test]
    fn any_frames_and_any_file(frames_in in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..6),
                               cut in any::<u16>()) {
        for link in [ETHERNET, SLL, SLL2, RAW] {
            let mut file = pcap(link, &frames(frames_in.clone()));
            let keep = usize::from(cut) % (file.len() + 1);
            file.truncate(keep.max(24));
            if let Ok((lines, _)) = analyse_bytes(&file, Config { all_udp: true, ..Config::default() }, false) {
                for l in lines {
                    prop_assert!(l.starts_with('#') || l.starts_with("ERROR packet"), "{}", l);
                }
            }
            let ng = pcapng(link as u16, &frames(frames_in.clone()));
            let _ = analyse_bytes(&ng[..keep.min(ng.len())], Config::default(), false);
        }
    }

    #[test]
    fn any_hex_text(text in "(#|##|[0-9a-fA-F ]{0,40}|\\(| bytes\\)|\n){0,30}") {
        let _ = analyse_bytes(text.as_bytes(), Config::default(), true);
        let _ = analyse_bytes(text.as_bytes(), Config::default(), false);
    }
}
