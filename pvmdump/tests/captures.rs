//! Decoding of synthetic captures built from the captured pvm-proto vectors.

mod common;
use common::*;
use pvmdump::{analyse_bytes, CaptureError, Config};

/// DDFRAGHDR + optional message header + body.
fn datagram(dst: u32, src: u32, seq: u16, flags: u8, msg: Option<(i32, i32)>, body: &[u8]) -> Vec<u8> {
    let mut d = Vec::new();
    d.extend_from_slice(&dst.to_be_bytes());
    d.extend_from_slice(&src.to_be_bytes());
    d.extend_from_slice(&seq.to_be_bytes());
    d.extend_from_slice(&0u16.to_be_bytes());
    d.extend_from_slice(&[flags, 0, 0, 0]);
    if let Some((tag, enc)) = msg {
        let mut h = [0u8; 32];
        h[0..4].copy_from_slice(&enc.to_be_bytes());
        h[4..8].copy_from_slice(&tag.to_be_bytes());
        d.extend_from_slice(&h);
    }
    d.extend_from_slice(body);
    d
}

fn ack(dst: u32, src: u32, n: u16) -> Vec<u8> {
    let mut d = datagram(dst, src, 0, 0x10, None, b"");
    d[10..12].copy_from_slice(&n.to_be_bytes());
    d
}

#[test]
fn udp_vectors_decode_as_from_hex() {
    let path = format!(
        "{}/../pvm-proto/tests/vectors/dd_remote_spawn.hex",
        env!("CARGO_MANIFEST_DIR")
    );
    let (hex_lines, hex_stats) = analyse_bytes(&std::fs::read(path).unwrap(), check_cfg(), false).unwrap();
    // Same datagrams as Ethernet/IPv4/UDP frames between the addresses the labels give.
    let mut pkts = Vec::new();
    for (i, d) in vector("dd_remote_spawn.hex").into_iter().enumerate() {
        // Masters send from :52715 (first and odd-numbered frames in this vector alternate).
        let from_master = u32::from_be_bytes([d[4], d[5], d[6], d[7]]) & 0x3ffc_0000 == 0x40000
            || (d[12] == 0x10 && d[0..4] == [0x80, 8, 0, 0]);
        let (s, sp, t, tp) = if from_master {
            (A, 52715, B, 51463)
        } else {
            (B, 51463, A, 52715)
        };
        pkts.push(eth(&ipv4(s, t, 17, i as u16, false, 0, &udp(sp, tp, &d))));
    }
    for (name, file) in [
        ("pcap", pcap(ETHERNET, &frames(pkts.clone()))),
        ("pcapng", pcapng(1, &frames(pkts))),
    ] {
        let (lines, stats) = run(&file, check_cfg());
        assert_eq!(stats.errors, 0, "{name}: {lines:#?}");
        assert_eq!(stats.check_diffs, 0, "{name}");
        assert_eq!(stats.messages, hex_stats.messages, "{name}");
        let a: Vec<&str> = lines.iter().map(|l| body(l)).collect();
        let b: Vec<&str> = hex_lines.iter().map(|l| body(l)).collect();
        assert_eq!(a, b, "{name}");
        assert!(lines[0].starts_with("#1 1700000000.000000 10.77.0.1:52715 > 10.77.0.2:51463 DD t80040000 > t80080000 SOM|EOM|DAT seq=4 len=204 DM_EXEC ctx=0x0 wid=0x40008 enc=xdr"), "{}", lines[0]);
    }
    assert!(
        hex_lines.iter().any(|l| l.contains(
            "MSG t40002 > t80001 tag=7 ctx=0x0 wid=0x0 enc=xdr len=92 92 bytes 0000000100000002fffffffd12345678"
        )),
        "{hex_lines:#?}"
    );
}

/// A 6000-byte message in two datagrams (4080 + 2000 bytes), each IP-fragmented for a 1500-byte
/// link, fragments delivered out of order.
fn big_message_capture() -> (Vec<Vec<u8>>, Vec<u8>) {
    let body: Vec<u8> = (0..6000u32).map(|i| (i * 7) as u8).collect();
    let d1 = datagram(0x80001, 0x40003, 27, 0x05, Some((7, 0x1000_0000)), &body[..4032]);
    let d2 = datagram(0x80001, 0x40003, 28, 0x06, None, &body[4032..]);
    assert_eq!(d1.len(), 4080);
    let f1 = udp_fragments(A, B, 100, 52715, 51463, &d1, 1480);
    let f2 = udp_fragments(A, B, 101, 52715, 51463, &d2, 1480);
    assert_eq!((f1.len(), f2.len()), (3, 2));
    let back = |d: Vec<u8>, id| eth(&ipv4(B, A, 17, id, false, 0, &udp(51463, 52715, &d)));
    let pkts = vec![
        eth(&f1[2]),
        eth(&f1[0]),
        eth(&f1[1]),
        back(ack(0x80040000, 0x80080000, 27), 7),
        eth(&f2[1]),
        eth(&f2[0]),
        back(ack(0x80040000, 0x80080000, 28), 8),
    ];
    (pkts, body)
}

#[test]
fn ip_fragmented_multi_datagram_message() {
    let (pkts, body) = big_message_capture();
    let (lines, stats) = run(&pcap(ETHERNET, &frames(pkts)), check_cfg());
    let text: Vec<&str> = lines.iter().map(|l| l.as_str()).collect();
    assert_eq!(
        text,
        vec![
            "#3 1700000000.002000 10.77.0.1:52715 > 10.77.0.2:51463 DD t40003 > t80001 SOM|DAT seq=27 len=4064 tag=7 ctx=0x0 wid=0x0 enc=xdr",
            "#4 1700000000.003000 10.77.0.2:51463 > 10.77.0.1:52715 DD t80080000 > t80040000 ACK ack=27 len=0",
            "#6 1700000000.005000 10.77.0.1:52715 > 10.77.0.2:51463 DD t40003 > t80001 EOM|DAT seq=28 len=1968",
            &format!(
                "#6 1700000000.005000 MSG t40003 > t80001 tag=7 ctx=0x0 wid=0x0 enc=xdr frags=2 len=6000 6000 bytes {}…(6000 bytes)",
                body[..24].iter().map(|b| format!("{b:02x}")).collect::<String>()
            ),
            "#7 1700000000.006000 10.77.0.2:51463 > 10.77.0.1:52715 DD t80080000 > t80040000 ACK ack=28 len=0",
        ]
    );
    assert_eq!(
        (stats.errors, stats.check_diffs, stats.messages, stats.fragments),
        (0, 0, 1, 4)
    );
}

#[test]
fn retransmitted_datagram_and_missing_fragments() {
    let (mut pkts, _) = big_message_capture();
    // The first datagram again (a pvmd retry), then a datagram whose middle fragment never came.
    let again = pkts[..3].to_vec();
    pkts.extend(again);
    let d = datagram(0x80001, 0x40003, 29, 0x07, Some((8, 0x1000_0000)), &[0; 3000]);
    let f = udp_fragments(A, B, 102, 52715, 51463, &d, 1480);
    pkts.push(eth(&f[0]));
    pkts.push(eth(&f[2]));
    let (lines, stats) = run(&pcap(ETHERNET, &frames(pkts)), Config::default());
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("#10 ")
                && l.ends_with("seq=27 len=4064 tag=7 ctx=0x0 wid=0x0 enc=xdr (retransmission)")),
        "{lines:#?}"
    );
    assert_eq!(stats.retransmissions, 1);
    assert_eq!(stats.messages, 1, "the retransmission must not start a second message");
    let last = lines.last().unwrap();
    assert!(
        last.contains("ERROR IP datagram id 0x0066 10.77.0.1 > 10.77.0.2 (first fragment in packet 11): incomplete at end of capture, 1576 bytes held of 3056"),
        "{last}"
    );
    assert_eq!(stats.errors, 1);
}

#[test]
fn overlapping_and_bogus_ip_fragments() {
    let d = datagram(0x80001, 0x40003, 1, 0x07, Some((9, 0x1000_0000)), &[0x11; 2000]);
    let f = udp_fragments(A, B, 5, 1, 2, &d, 1480);
    let mut bad = f[0].clone();
    let n = bad.len();
    bad[n - 1] ^= 0xff; // same offset, different content
    let pkts = vec![
        eth(&f[0]),
        eth(&bad),
        eth(&f[1]),
        // A second "last" fragment of another datagram ending somewhere else.
        eth(&ipv4(A, B, 17, 6, false, 8, &[1; 8])),
        eth(&ipv4(A, B, 17, 6, false, 16, &[1; 8])),
        // A fragment claiming to run past 65535.
        eth(&ipv4(A, B, 17, 7, true, 65528, &[1; 16])),
    ];
    let (lines, stats) = run(
        &pcap(ETHERNET, &frames(pkts)),
        Config {
            all_udp: true,
            ..Config::default()
        },
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("#2 ") && l.contains("overlaps earlier data with different bytes from offset 1479")),
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("#3 ")
            && l.contains("MSG t40003 > t80001 tag=9")
            && l.contains("len=2000 2000 bytes 1111")),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("#5 ")
                && l.contains("fragment ends at 24, beyond the datagram end 16; datagram dropped")),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("#6 ") && l.contains("exceeds 65535")),
        "{lines:#?}"
    );
    assert_eq!(stats.errors, 3);
}

/// Three stream fragments: two raw user messages of the direct-route vector and the XDR one.
fn stream_frags() -> Vec<Vec<u8>> {
    let tc = vector("tc_direct_route_unix.hex");
    vec![tc[3].clone(), vector("td_user_msg_xdr.hex")[0].clone(), tc[4].clone()]
}

const C: u16 = 40001;
const S: u16 = 36145;

fn tcp_frame(seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    eth(&ipv4(A, B, 6, 0, false, 0, &tcp(C, S, seq, flags, payload)))
}

#[test]
fn tcp_stream_with_retransmission_and_reordering() {
    let stream: Vec<u8> = stream_frags().concat();
    let isn = 0xffff_ff00u32; // sequence numbers wrap inside the stream
    let seq = |off: usize| isn.wrapping_add(1).wrapping_add(off as u32);
    let segs: Vec<(usize, &[u8])> = stream.chunks(70).enumerate().map(|(i, c)| (i * 70, c)).collect();
    assert!(segs.len() >= 4);
    let mut pkts = vec![tcp_frame(isn, SYN, b"")];
    pkts.push(tcp_frame(seq(segs[0].0), ACK | PSH, segs[0].1));
    pkts.push(tcp_frame(seq(segs[2].0), ACK | PSH, segs[2].1)); // ahead
    pkts.push(tcp_frame(seq(segs[1].0), ACK | PSH, segs[1].1)); // fills the hole
    pkts.push(tcp_frame(seq(segs[1].0), ACK | PSH, segs[1].1)); // retransmission
    for (off, c) in &segs[3..] {
        pkts.push(tcp_frame(seq(*off), ACK | PSH, c));
    }
    pkts.push(tcp_frame(seq(stream.len()), FIN | ACK, b""));
    let file = pcap(ETHERNET, &frames(pkts));
    let (lines, stats) = run(&file, check_cfg());
    let msgs: Vec<&str> = lines.iter().filter(|l| l.contains(" MSG ")).map(|l| body(l)).collect();
    assert_eq!(msgs.len(), 3, "{lines:#?}");
    assert!(
        msgs[0].starts_with("MSG t40003 > t40004 tag=7 ctx=0x0 wid=0x0 enc=raw len=97 97 bytes 0100000002000000"),
        "{}",
        msgs[0]
    );
    assert!(
        msgs[1].starts_with("MSG t40001 > t40002 tag=7 ctx=0x0 wid=0x0 enc=xdr len=92"),
        "{}",
        msgs[1]
    );
    assert_eq!(
        msgs[2],
        "MSG t40004 > t40003 tag=8 ctx=0x0 wid=0x0 enc=raw len=11 11 bytes 2a000000030000006f6b00"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("#3 ") && l.contains("TCP segment out of order")),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("#5 ") && l.contains("TCP retransmission of 70 bytes")),
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| body(l)
            == "10.77.0.1:40001 > 10.77.0.2:36145 TD t40004 > t40003 SOM|EOM len=43 tag=8 ctx=0x0 wid=0x0 enc=raw"),
        "{lines:#?}"
    );
    assert_eq!((stats.errors, stats.check_diffs, stats.retransmissions), (0, 0, 1));

    // Without sniffing and without a port the connection is not PVM; with the port it is.
    let (lines, _) = run(
        &file,
        Config {
            no_guess: true,
            ..Config::default()
        },
    );
    assert!(lines.is_empty(), "{lines:#?}");
    let (_, stats) = run(
        &file,
        Config {
            no_guess: true,
            tcp_ports: vec![S],
            ..Config::default()
        },
    );
    assert_eq!(stats.messages, 3);
}

#[test]
fn tcp_gap_resynchronises_on_next_fragment() {
    let f = stream_frags();
    let isn = 1000u32;
    let mut off = 0usize;
    let mut pkts = vec![tcp_frame(isn, SYN, b"")];
    for (i, frag) in f.iter().enumerate() {
        if i != 1 {
            pkts.push(tcp_frame(isn + 1 + off as u32, ACK | PSH, frag));
        }
        off += frag.len();
    }
    let (lines, stats) = run(&pcap(ETHERNET, &frames(pkts)), Config::default());
    let msgs: Vec<&String> = lines.iter().filter(|l| l.contains(" MSG ")).collect();
    assert_eq!(msgs.len(), 2, "{lines:#?}");
    assert!(msgs[1].contains("tag=8"), "{lines:#?}");
    assert!(
        lines.iter().any(|l| l.contains(&format!(
            "ERROR 10.77.0.1:40001 > 10.77.0.2:36145 TCP gap: {} bytes never captured",
            f[1].len()
        ))),
        "{lines:#?}"
    );
    assert_eq!(stats.errors, 1);
}

#[test]
fn link_types_sll_sll2_raw_in_pcapng() {
    let d = vector("dd_remote_spawn.hex")[0].clone();
    let ip = ipv4(A, B, 17, 1, false, 0, &udp(52715, 51463, &d));
    let mut sll = vec![0, 0, 0, 1, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0x08, 0x00];
    sll.extend_from_slice(&ip);
    let mut sll2 = vec![0x08, 0x00, 0, 0, 0, 0, 0, 1, 0, 1, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0];
    sll2.extend_from_slice(&ip);
    for (link, frame) in [(SLL, sll), (SLL2, sll2), (RAW, ip.clone())] {
        let (lines, stats) = run(&pcapng(link as u16, &frames(vec![frame])), Config::default());
        assert_eq!(stats.messages, 1, "link {link}: {lines:#?}");
        assert!(lines[1].contains("MSG t80040000 > t80080000 DM_EXEC"), "{lines:#?}");
    }
}

#[test]
fn check_reports_differing_bytes_but_masks_uninitialised_ones() {
    let mut d = vector("dd_remote_spawn.hex")[0].clone();
    // Message-header bytes 12..16 and 24..32 are garbage in legacy captures: masked.
    d[16 + 12..16 + 16].copy_from_slice(b"ed f");
    d[16 + 24..16 + 32].copy_from_slice(b"s://www.");
    let clean = pcap(
        ETHERNET,
        &frames(vec![eth(&ipv4(A, B, 17, 1, false, 0, &udp(1, 2, &d)))]),
    );
    let (_, stats) = run(&clean, check_cfg());
    assert_eq!(stats.check_diffs, 0);
    // A datagram header byte the daemon writes as zero: reported with its offset. Sniffing would
    // refuse such a datagram, so the port is given.
    d[14] = 0x55;
    let dirty = pcap(
        ETHERNET,
        &frames(vec![eth(&ipv4(A, B, 17, 1, false, 0, &udp(1, 2, &d)))]),
    );
    let (lines, stats) = run(
        &dirty,
        Config {
            udp_ports: vec![2],
            ..check_cfg()
        },
    );
    assert_eq!(stats.check_diffs, 1);
    assert!(
        lines
            .iter()
            .any(|l| l == "#1 1700000000.000000 CHECK datagram header byte 14: captured 55, re-encoded 00"),
        "{lines:#?}"
    );
}

#[test]
fn truncated_and_garbage_input_is_reported_not_fatal() {
    let d = vector("dd_remote_spawn.hex")[0].clone();
    let good = eth(&ipv4(A, B, 17, 1, false, 0, &udp(52715, 51463, &d)));
    let mut cut = Frame {
        ts_us: 1_700_000_000_000_000,
        data: good[..100].to_vec(),
        orig_len: Some(good.len()),
    };
    let mut fs = vec![cut.clone()];
    cut.data = vec![0xde, 0xad]; // shorter than an Ethernet header
    fs.push(cut.clone());
    cut.data = eth(&[0x45, 0, 0xff, 0xff]); // IPv4 ethertype, 4 bytes of header
    fs.push(cut.clone());
    cut.data = eth(&ipv4(A, B, 17, 2, false, 0, &udp(52715, 51463, &d[..10]))); // short DD header
    fs.push(cut.clone());
    fs.push(Frame {
        ts_us: 1_700_000_000_000_000,
        data: good.clone(),
        orig_len: None,
    });
    let mut file = pcap(ETHERNET, &fs);
    let whole_len = file.len();
    file.extend_from_within(24..24 + 30); // a record cut by the end of the file
    let (lines, stats) = analyse_bytes(
        &file,
        Config {
            udp_ports: vec![51463],
            ..Config::default()
        },
        false,
    )
    .unwrap();
    let has = |p: &str| lines.iter().any(|l| l.contains(p));
    assert!(
        has("#1 1700000000.000000 ERROR IPv4 datagram truncated: total length"),
        "{lines:#?}"
    );
    assert!(
        has("#2 1700000000.000000 ERROR Ethernet header truncated: 2 of 14 bytes"),
        "{lines:#?}"
    );
    assert!(
        has("#3 1700000000.000000 ERROR IPv4 header truncated: 4 of 20 bytes (IP header at byte 14 of the frame)"),
        "{lines:#?}"
    );
    assert!(
        has("#4 1700000000.000000 ERROR 10.77.0.1:52715 > 10.77.0.2:51463 DD datagram header at byte 10: truncated"),
        "{lines:#?}"
    );
    assert!(
        has("MSG t80040000 > t80080000 DM_EXEC"),
        "decoding goes on after bad packets: {lines:#?}"
    );
    assert!(
        has(&format!("ERROR packet 6 at byte {whole_len}: truncated record")),
        "{lines:#?}"
    );
    assert_eq!(stats.errors, 5);
    assert_eq!(stats.messages, 1);

    // Not a capture at all.
    assert!(matches!(
        analyse_bytes(b"\x7fELF\x02\x01", Config::default(), false),
        Err(CaptureError::UnknownFormat(_))
    ));
    // A pcapng file whose last block is cut short.
    let mut ng = pcapng(1, &frames(vec![good.clone(), good]));
    ng.truncate(ng.len() - 7);
    let (lines, stats) = run(&ng, Config::default());
    assert_eq!(stats.messages, 1);
    assert!(
        lines.last().unwrap().starts_with("ERROR packet 2 at byte "),
        "{lines:#?}"
    );
}

#[test]
fn udp_sniffing_rejects_other_traffic() {
    // DNS-like payload: not a DDFRAGHDR shape, ignored unless --all-udp.
    let dns = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03www\x07example\x03com\x00\x00\x01\x00\x01";
    let file = pcap(
        ETHERNET,
        &frames(vec![eth(&ipv4(A, B, 17, 1, false, 0, &udp(5353, 53, dns)))]),
    );
    let (lines, _) = run(&file, Config::default());
    assert!(lines.is_empty(), "{lines:#?}");
    let (lines, stats) = run(
        &file,
        Config {
            all_udp: true,
            ..Config::default()
        },
    );
    assert_eq!(stats.fragments, 1, "{lines:#?}");
}

#[test]
fn reassembly_caps_and_unfinished_streams() {
    // A message over --max-message is reported once and not printed.
    let (pkts, _) = big_message_capture();
    let (lines, stats) = run(
        &pcap(ETHERNET, &frames(pkts)),
        Config {
            max_message: 5000,
            ..Config::default()
        },
    );
    assert_eq!(stats.messages, 0, "{lines:#?}");
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("ERROR t40003 > t80001 message longer than 5000 bytes: body dropped"))
            .count(),
        1,
        "{lines:#?}"
    );
    // A continuation without its start, and a stream that stops inside a fragment.
    let f = stream_frags();
    let mut cont = f[2].clone();
    cont[12] = 0x02; // EOM only
    let mut bytes = cont;
    bytes.extend_from_slice(&f[0][..40]);
    let pkts = vec![tcp_frame(1, SYN, b""), tcp_frame(2, ACK | PSH, &bytes)];
    let (lines, stats) = run(
        &pcap(ETHERNET, &frames(pkts)),
        Config {
            tcp_ports: vec![S],
            ..Config::default()
        },
    );
    let has = |p: &str| lines.iter().any(|l| l.contains(p));
    assert!(
        has("ERROR t40004 > t40003 continuation fragment (EOM) without a start of message: skipped"),
        "{lines:#?}"
    );
    assert!(
        has("ERROR 10.77.0.1:40001 > 10.77.0.2:36145 stream ends inside a fragment (40 bytes left)"),
        "{lines:#?}"
    );
    assert_eq!(stats.errors, 2);
}
