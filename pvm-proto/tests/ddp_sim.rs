//! The pvmd <-> pvmd datagram protocol: byte-exact checks against captures of the legacy
//! daemons, and properties of the state machine in simulated time.

use proptest::prelude::*;
use pvm_proto::codes::{Dm, ENC_XDR, UDPMAXLEN};
use pvm_proto::ddp::consts::*;
use pvm_proto::ddp::sim::{addr_of, Cluster, NetConfig, SplitMix64};
use pvm_proto::ddp::{
    DropReason, Endpoint, EndpointConfig, Event, LinkLoss, PeerConfig, PeerError, SendError, Time, Transmit,
};
use pvm_proto::frag::{DatagramHeader, FragFlags};
use pvm_proto::mesg::{MsgHeader, UNINITIALISED};
use pvm_proto::Tid;
use std::collections::BTreeMap;
use std::net::SocketAddrV4;
use std::time::Duration;

// ---- captured vectors ---------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Frame {
    label: String,
    from: SocketAddrV4,
    to: SocketAddrV4,
    bytes: Vec<u8>,
}

fn load(name: &str) -> Vec<Frame> {
    let path = format!("{}/tests/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut frames: Vec<Frame> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("## ") {
            let words: Vec<&str> = rest.split_whitespace().collect();
            // "pkt N a -> b ..."
            frames.push(Frame {
                label: rest.to_string(),
                from: words[2].parse().unwrap(),
                to: words[4].parse().unwrap(),
                bytes: Vec::new(),
            });
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let f = frames.last_mut().unwrap();
            let l = line.trim();
            for i in (0..l.len()).step_by(2) {
                f.bytes.push(u8::from_str_radix(&l[i..i + 2], 16).unwrap());
            }
        }
    }
    frames
}

fn all_dd_frames() -> Vec<Frame> {
    [
        "dd_add_host_sequence.hex",
        "dd_remote_spawn.hex",
        "dd_direct_route_tcp.hex",
        "dd_task_query_and_delete.hex",
    ]
    .iter()
    .flat_map(|f| load(f))
    .collect()
}

/// Host index of a captured UDP address (master, slave, pvmd').
fn host_at(a: SocketAddrV4) -> u32 {
    match a.port() {
        52715 => 1,
        51463 => 2,
        55949 => 0,
        p => panic!("unknown port {p}"),
    }
}

fn frame(label: &str, frames: &[Frame]) -> Frame {
    frames
        .iter()
        .find(|f| f.label.starts_with(label))
        .unwrap_or_else(|| panic!("no frame {label}"))
        .clone()
}

/// An endpoint for the host at `me`, linked to the host at `peer` with the given sequences.
fn captured_endpoint(me: SocketAddrV4, peer: SocketAddrV4, txseq: u16, rxseq: u16) -> Endpoint {
    let mut ep = Endpoint::new(EndpointConfig::new(host_at(me), 1), Time::ZERO);
    let pc = PeerConfig {
        txseq,
        rxseq,
        ..PeerConfig::legacy(peer, UDPMAXLEN)
    };
    ep.add_peer(host_at(peer), pc).unwrap();
    ep
}

fn drain_events(ep: &mut Endpoint) -> Vec<Event> {
    std::iter::from_fn(|| ep.poll_event()).collect()
}

fn drain_tx(ep: &mut Endpoint) -> Vec<Transmit> {
    std::iter::from_fn(|| ep.poll_transmit()).collect()
}

fn masked(mut b: Vec<u8>) -> Vec<u8> {
    if b.len() >= 48 && b[12] & 0x01 != 0 {
        for r in UNINITIALISED {
            b[16 + r.start..16 + r.end].fill(0);
        }
    }
    b
}

#[test]
fn acks_for_every_captured_data_packet_equal_the_captured_acks() {
    let frames = all_dd_frames();
    let mut checked = 0;
    for dat in frames.iter().filter(|f| f.bytes[12] & 0x04 != 0) {
        let h = DatagramHeader::parse(&dat.bytes).unwrap();
        let want = frames
            .iter()
            .find(|f| {
                f.from == dat.to
                    && f.to == dat.from
                    && f.bytes.len() == 16
                    && f.bytes[12] == 0x10
                    && f.bytes[10..12] == dat.bytes[8..10]
            })
            .unwrap_or_else(|| panic!("no captured ACK for {}", dat.label));
        let mut ep = captured_endpoint(dat.to, dat.from, 1, h.seq);
        ep.handle_datagram(Time::from_secs(1), dat.from, &dat.bytes);
        let tx = drain_tx(&mut ep);
        assert_eq!(
            tx,
            vec![Transmit {
                dst: dat.from,
                bytes: want.bytes.clone()
            }],
            "{}",
            dat.label
        );
        // And the payload is handed on once, with its message header.
        let ev = drain_events(&mut ep);
        let tag = i32::from_be_bytes(dat.bytes[20..24].try_into().unwrap());
        let delivered: Vec<i32> = ev
            .iter()
            .filter_map(|e| match e {
                Event::Message(m) => Some(m.header.tag),
                Event::Packet(p) => p.header.map(|h| h.tag),
                _ => None,
            })
            .collect();
        assert_eq!(delivered, vec![tag], "{}: {ev:?}", dat.label);
        // A duplicate is acknowledged again but not delivered again.
        ep.handle_datagram(Time::from_secs(2), dat.from, &dat.bytes);
        assert_eq!(drain_tx(&mut ep)[0].bytes, want.bytes);
        assert!(matches!(
            drain_events(&mut ep)[..],
            [Event::Dropped(pvm_proto::ddp::Dropped {
                reason: DropReason::Duplicate { .. },
                ..
            })]
        ));
        checked += 1;
    }
    assert_eq!(checked, 18);
}

#[test]
fn data_packets_the_endpoint_emits_equal_the_captured_ones() {
    let frames = all_dd_frames();
    let mut checked = 0;
    for dat in frames.iter().filter(|f| f.bytes[12] & 0x04 != 0) {
        let h = DatagramHeader::parse(&dat.bytes).unwrap();
        assert_eq!(
            h.flags,
            FragFlags::SOM | FragFlags::EOM | FragFlags::DAT,
            "{}",
            dat.label
        );
        let mh = MsgHeader::parse(&dat.bytes[16..]).unwrap();
        let mut ep = captured_endpoint(dat.from, dat.to, h.seq, 1);
        let now = Time::from_secs(5);
        ep.send_message(now, host_at(dat.to), h.src, h.dst, mh, &dat.bytes[48..])
            .unwrap();
        let tx = drain_tx(&mut ep);
        assert_eq!(tx.len(), 1, "{}", dat.label);
        assert_eq!(tx[0].dst, dat.to);
        // The legacy daemon leaves a stale value in the ack field of data packets that do not
        // carry FFACK (pkt 26: ack 3); receivers ignore it, we write 0.
        let mut want = masked(dat.bytes.clone());
        want[10..12].fill(0);
        assert_eq!(tx[0].bytes, want, "{}", dat.label);
        checked += 1;
    }
    assert_eq!(checked, 18);
}

#[test]
fn fin_handshake_bytes_equal_the_capture() {
    let frames = load("dd_task_query_and_delete.hex");
    let fin = frame("pkt 56", &frames);
    let ack = frame("pkt 57", &frames);
    let finack = frame("pkt 58", &frames);
    let slave_finack = frame("pkt 59", &frames);
    let (m_addr, s_addr) = (fin.from, fin.to);

    let mut master = captured_endpoint(m_addr, s_addr, 0x10, 0x0c);
    let mut slave = captured_endpoint(s_addr, m_addr, 0x0c, 0x10);
    let t = Time::from_secs(10);

    master.send_fin(t, 2).unwrap();
    assert_eq!(
        drain_tx(&mut master),
        vec![Transmit {
            dst: s_addr,
            bytes: fin.bytes.clone()
        }]
    );

    slave.handle_datagram(t, m_addr, &fin.bytes);
    assert_eq!(
        drain_tx(&mut slave),
        vec![Transmit {
            dst: m_addr,
            bytes: ack.bytes.clone()
        }]
    );
    assert_eq!(drain_events(&mut slave), vec![Event::FinReceived { host: 1 }]);

    master.handle_datagram(t, s_addr, &ack.bytes);
    assert_eq!(drain_events(&mut master), vec![Event::FinAcked { host: 2 }]);
    assert_eq!(
        drain_tx(&mut master),
        vec![Transmit {
            dst: s_addr,
            bytes: finack.bytes.clone()
        }]
    );
    assert_eq!(
        drain_events(&mut master),
        vec![Event::PeerLost {
            host: 2,
            cause: LinkLoss::FinAckSent
        }]
    );
    assert_eq!(master.peer_info(2), None);

    slave.handle_datagram(t, m_addr, &finack.bytes);
    assert_eq!(drain_events(&mut slave), vec![Event::Halt { host: 1 }]);
    assert_eq!(
        slave.bailout_datagrams(),
        vec![Transmit {
            dst: m_addr,
            bytes: slave_finack.bytes.clone()
        }]
    );
}

#[test]
fn pvmd_prime_is_told_to_exit_ahead_of_its_ack() {
    // Master receives DM_STARTACK from pvmd' and answers FIN|ACK first, then the ACK.
    let frames = load("dd_add_host_sequence.hex");
    let startack = frame("pkt 1 ", &frames);
    let (finack, ack) = (frame("pkt 2 ", &frames), frame("pkt 3 ", &frames));
    let mut master = captured_endpoint(startack.to, startack.from, 1, 1);
    master.handle_datagram(Time::from_secs(1), startack.from, &startack.bytes);
    let ev = drain_events(&mut master);
    let Event::Message(m) = &ev[0] else { panic!("{ev:?}") };
    assert_eq!(m.header.tag, Dm::StartAck.code());
    assert_eq!((m.src, m.dst), (Tid::pvmd(0), Tid::pvmd(1)));
    master.send_finack(0).unwrap();
    let tx: Vec<Vec<u8>> = drain_tx(&mut master).into_iter().map(|t| t.bytes).collect();
    assert_eq!(tx, vec![finack.bytes, ack.bytes]);
    // pvmd' keeps its slot in the host table.
    assert!(master.peer_info(0).is_some());
    assert!(drain_events(&mut master).is_empty());
}

// ---- simulated cluster --------------------------------------------------------------------

fn hdr(tag: i32) -> MsgHeader {
    MsgHeader {
        enc: ENC_XDR,
        tag,
        ..MsgHeader::default()
    }
}

/// Message bodies that identify sender and index, with sizes from empty to several datagrams.
fn body(rng: &mut SplitMix64, from: u32, i: u32) -> Vec<u8> {
    let len = match rng.below(4) {
        0 => 8,
        1 => 8 + rng.below(100) as usize,
        2 => 4000 + rng.below(200) as usize,
        _ => 8 + rng.below(12_000) as usize,
    };
    let mut b = Vec::with_capacity(len);
    b.extend_from_slice(&from.to_be_bytes());
    b.extend_from_slice(&i.to_be_bytes());
    while b.len() < len {
        b.push((b.len() as u32 ^ i) as u8);
    }
    b
}

fn assert_no_loss(c: &Cluster, sent: &BTreeMap<(u32, u32), Vec<Vec<u8>>>, ctx: &str) {
    for (&(from, to), bodies) in sent {
        let got: Vec<&Vec<u8>> = c
            .node(to)
            .messages()
            .filter(|m| m.host == from && m.header.tag == 7)
            .map(|m| &m.body)
            .collect();
        assert_eq!(got.len(), bodies.len(), "{ctx}: {from}->{to} count");
        for (i, (g, w)) in got.iter().zip(bodies).enumerate() {
            assert!(*g == w, "{ctx}: {from}->{to} message {i} differs");
        }
    }
}

fn exactly_once_in_order(seed: u64, window: u16, net: NetConfig) {
    exactly_once_in_order_with(seed, window, net, None);
}

/// [`exactly_once_in_order`] with a silence limit on every link (None: the legacy rule only).
fn exactly_once_in_order_with(seed: u64, window: u16, net: NetConfig, silence: Option<Duration>) {
    let hosts = 3;
    let mut c = Cluster::new(hosts, window, net, seed);
    for a in 1..=hosts {
        for b in (1..=hosts).filter(|&b| b != a) {
            c.node_mut(a).endpoint.set_silence_limit(b, silence).unwrap();
        }
    }
    let mut rng = SplitMix64::new(seed ^ 0xabcdef);
    let mut sent: BTreeMap<(u32, u32), Vec<Vec<u8>>> = BTreeMap::new();
    for round in 0..12u32 {
        for from in 1..=hosts {
            for to in 1..=hosts {
                if from == to || rng.chance(300) {
                    continue;
                }
                let b = body(&mut rng, from, round);
                c.send_message(from, to, Tid::pvmd(from), Tid::pvmd(to), hdr(7), &b)
                    .unwrap();
                sent.entry((from, to)).or_default().push(b);
            }
        }
        c.run_for(Duration::from_millis(rng.below(40)));
    }
    // Retries back off to 16 s, so a link that lost a few in a row needs a while; stop once
    // everything arrived (or at the give-up horizon), then a little longer to catch duplicates.
    let delivered = |c: &Cluster| {
        sent.iter().all(|(&(from, to), b)| {
            c.node(to)
                .messages()
                .filter(|m| m.host == from && m.header.tag == 7)
                .count()
                >= b.len()
        })
    };
    while !delivered(&c) && c.now() < Time::from_secs(400) {
        c.run_for(Duration::from_secs(5));
    }
    c.run_for(Duration::from_secs(5));
    let ctx = format!("seed {seed} window {window}");
    assert_no_loss(&c, &sent, &ctx);
    for n in &c.nodes {
        for p in n.endpoint.peers() {
            let info = n.endpoint.peer_info(p).unwrap();
            assert!(info.reordering < usize::from(window), "{ctx}");
            assert!(info.in_flight <= usize::from(window), "{ctx}");
        }
        assert!(
            !n.events.iter().any(|(_, e)| matches!(e, Event::PeerLost { .. })),
            "{ctx}: nobody may die"
        );
    }
}

#[test]
fn every_message_arrives_once_in_order_under_loss_dup_reorder() {
    for seed in 0..24 {
        exactly_once_in_order(seed, 1, NetConfig::hostile(200, 100));
    }
}

#[test]
fn sliding_window_delivers_exactly_once_in_order_too() {
    for seed in 100..124 {
        exactly_once_in_order(seed, 8, NetConfig::hostile(200, 100));
    }
    exactly_once_in_order(7, MAX_WINDOW, NetConfig::hostile(100, 50));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn exactly_once_for_arbitrary_fault_rates(seed in any::<u64>(), loss in 0u32..250, dup in 0u32..400,
                                              jitter_ms in 0u64..20, window in 1u16..12) {
        let net = NetConfig {
            latency: Duration::from_millis(1),
            jitter: Duration::from_millis(jitter_ms),
            loss_permille: loss,
            dup_permille: dup,
        };
        exactly_once_in_order(seed, window, net);
    }
}

#[test]
fn window_one_is_stop_and_wait_and_a_larger_window_pipelines() {
    for (window, max_rounds) in [(1u16, usize::MAX), (8, 3)] {
        let mut c = Cluster::new(2, window, NetConfig::perfect(Duration::from_millis(10)), 1);
        for i in 0..16u32 {
            c.send_message(1, 2, Tid::pvmd(1), Tid::pvmd(2), hdr(7), &i.to_be_bytes())
                .unwrap();
        }
        let info = c.node(1).endpoint.peer_info(2).unwrap();
        assert_eq!(info.in_flight, usize::from(window));
        c.run_for(Duration::from_secs(2));
        assert_eq!(c.node(2).messages().count(), 16);
        // Data datagrams leave host 1 at distinct instants only once per round trip.
        let mut instants: Vec<Time> = c
            .wire
            .iter()
            .filter(|w| w.from == 1 && w.bytes[12] & 0x04 != 0)
            .map(|w| w.at)
            .collect();
        assert_eq!(instants.len(), 16, "no retransmissions on a perfect network");
        instants.dedup();
        if window == 1 {
            assert_eq!(instants.len(), 16);
            for w in instants.windows(2) {
                assert_eq!(w[1].saturating_since(w[0]), Duration::from_millis(20));
            }
        } else {
            assert!(instants.len() <= max_rounds, "{instants:?}");
        }
    }
}

#[test]
fn sequence_numbers_wrap_past_65535() {
    // Start both directions just below the wrap, on a lossy link.
    let mut c = Cluster::empty(NetConfig::hostile(150, 100), 42);
    for h in 1..=2 {
        c.add_node(EndpointConfig::new(h, 1));
    }
    for (a, b) in [(1, 2), (2, 1)] {
        let pc = PeerConfig {
            txseq: 65530,
            rxseq: 65530,
            ..PeerConfig::legacy(addr_of(b), UDPMAXLEN)
        };
        c.node_mut(a).endpoint.add_peer(b, pc).unwrap();
    }
    let mut sent = BTreeMap::new();
    let mut rng = SplitMix64::new(3);
    for i in 0..20u32 {
        let b = body(&mut rng, 1, i);
        c.send_message(1, 2, Tid::pvmd(1), Tid::pvmd(2), hdr(7), &b).unwrap();
        sent.entry((1, 2)).or_insert_with(Vec::new).push(b);
    }
    c.run_for(Duration::from_secs(60));
    assert_no_loss(&c, &sent, "wrap");
    let seqs: Vec<u16> = c
        .wire
        .iter()
        .filter(|w| w.from == 1 && w.bytes[12] & 0x04 != 0)
        .map(|w| u16::from_be_bytes([w.bytes[8], w.bytes[9]]))
        .collect();
    assert!(
        seqs.contains(&65535) && seqs.contains(&0) && seqs.contains(&1),
        "{seqs:?}"
    );
    let rx = c.node(2).endpoint.peer_info(1).unwrap().rxseq;
    assert_eq!(rx, c.node(1).endpoint.peer_info(2).unwrap().txseq);
    assert!(rx < 100, "wrapped: {rx}");
}

#[test]
fn a_full_cycle_of_sequence_numbers_with_a_window() {
    // 70 000 packets from 1, more than the whole sequence space, through a sliding window.
    let mut c = Cluster::new(2, 64, NetConfig::hostile(20, 20), 9);
    for h in 1..=2 {
        c.node_mut(h).endpoint.set_keepalive(false);
    }
    let total = 70_000u32;
    let mut next = 0u32;
    while next < total {
        let room = DEFAULT_MAX_SEND_QUEUE - c.node(1).endpoint.peer_info(2).unwrap().queued;
        for _ in 0..room.min((total - next) as usize) {
            c.send_message(1, 2, Tid::pvmd(1), Tid::pvmd(2), hdr(7), &next.to_be_bytes())
                .unwrap();
            next += 1;
        }
        c.run_for(Duration::from_millis(200));
        // Keep the event log from growing: check and forget what arrived.
        let node = c.node_mut(2);
        node.events.retain(|(_, e)| matches!(e, Event::Message(_)));
    }
    c.run_for(Duration::from_secs(30));
    let got: Vec<u32> = c
        .node(2)
        .messages()
        .map(|m| u32::from_be_bytes(m.body[..4].try_into().unwrap()))
        .collect();
    assert_eq!(got.len(), total as usize);
    assert!(got.iter().enumerate().all(|(i, &v)| v == i as u32));
    assert_eq!(c.node(2).endpoint.peer_info(1).unwrap().rxseq, (1 + total) as u16);
}

/// Send instants of the datagram with `seq` from host `from`, in ms since its first send.
fn send_offsets(c: &Cluster, from: u32, seq: u16) -> Vec<u64> {
    let times: Vec<Time> = c
        .wire
        .iter()
        .filter(|w| w.from == from && w.bytes[12] & 0x04 != 0 && w.bytes[8..10] == seq.to_be_bytes())
        .map(|w| w.at)
        .collect();
    times
        .iter()
        .map(|t| t.saturating_since(times[0]).as_millis() as u64)
        .collect()
}

/// The PeerLost events of host `node`, with when they came.
fn peer_losses(c: &Cluster, node: u32) -> Vec<(Time, &Event)> {
    c.node(node)
        .events
        .iter()
        .filter(|(_, e)| matches!(e, Event::PeerLost { .. }))
        .map(|(t, e)| (*t, e))
        .collect()
}

#[test]
fn a_dead_peer_is_given_up_after_ten_sends_and_180_seconds() {
    let mut c = Cluster::new(2, 1, NetConfig::perfect(Duration::from_millis(1)), 0);
    c.set_up(2, false);
    c.run_until(Time::from_secs(5));
    c.send_message(1, 2, Tid::pvmd(1), Tid::pvmd(2), hdr(7), b"hello")
        .unwrap();
    c.run_for(Duration::from_secs(400));
    // Intervals 2, 4, 8, then 16 s (doubling stops at DDMAXRTT = 9 s).
    let want: Vec<u64> = vec![0, 2, 6, 14, 30, 46, 62, 78, 94, 110, 126, 142, 158, 174];
    assert_eq!(
        send_offsets(&c, 1, 1),
        want.iter().map(|s| s * 1000).collect::<Vec<_>>()
    );
    let lost = peer_losses(&c, 1);
    assert_eq!(
        lost,
        vec![(
            Time::from_secs(5 + 190),
            &Event::PeerLost {
                host: 2,
                cause: LinkLoss::Timeout {
                    seq: 1,
                    sends: 14,
                    elapsed: Duration::from_secs(190)
                }
            }
        )]
    );
    assert_eq!(c.node(1).endpoint.peer_info(2), None);
    assert_eq!(
        c.node_mut(1)
            .endpoint
            .send_message(Time::from_secs(400), 2, Tid::pvmd(1), Tid::pvmd(2), hdr(7), b""),
        Err(SendError::NoSuchPeer { host: 2 })
    );
}

#[test]
fn round_trip_estimate_follows_the_legacy_filter() {
    let mut c = Cluster::new(2, 1, NetConfig::perfect(Duration::from_millis(100)), 0);
    c.send_message(1, 2, Tid::pvmd(1), Tid::pvmd(2), hdr(7), b"x").unwrap();
    c.run_for(Duration::from_secs(1));
    // Sample 200 ms: (200 ms + 3 * 1 s) / 4 = 800 ms.
    assert_eq!(c.node(1).endpoint.peer_info(2).unwrap().rtt, Duration::from_millis(800));
    c.send_message(1, 2, Tid::pvmd(1), Tid::pvmd(2), hdr(7), b"y").unwrap();
    c.run_for(Duration::from_secs(1));
    assert_eq!(c.node(1).endpoint.peer_info(2).unwrap().rtt, Duration::from_millis(650));
    // The next packet's first retry comes after 2 * rtt = 1.3 s if it is lost.
    c.set_up(2, false);
    c.send_message(1, 2, Tid::pvmd(1), Tid::pvmd(2), hdr(7), b"z").unwrap();
    c.run_for(Duration::from_secs(5));
    assert_eq!(send_offsets(&c, 1, 3), vec![0, 1300, 3900]);
}

#[test]
fn keepalive_visits_hosts_round_robin_every_60_seconds() {
    let mut c = Cluster::new(3, 1, NetConfig::perfect(Duration::from_millis(1)), 0);
    c.run_until(Time::from_secs(60 * 7 + 30));
    let pings: Vec<(u64, u32)> = c
        .wire
        .iter()
        .filter(|w| w.from == 1 && w.bytes.len() == 48 && w.bytes[20..24] == Dm::Null.code().to_be_bytes())
        .map(|w| (w.at.as_micros() / 1_000_000, host_of_addr(w.to)))
        .collect();
    // Host 1 (master) turns: 60 s itself (no ping), 120 s host 2, 180 s host 3, 240 s itself...
    assert_eq!(pings, vec![(120, 2), (180, 3), (300, 2), (360, 3)]);
    // Host 2 starts its round at host 1.
    let pings2: Vec<(u64, u32)> = c
        .wire
        .iter()
        .filter(|w| w.from == 2 && w.bytes.len() == 48)
        .map(|w| (w.at.as_micros() / 1_000_000, host_of_addr(w.to)))
        .collect();
    assert_eq!(pings2, vec![(60, 1), (180, 3), (240, 1), (360, 3), (420, 1)]);
    // Each arrives as a DM_NULL message from the pvmd.
    let nulls = c
        .node(2)
        .messages()
        .filter(|m| m.header.tag == Dm::Null.code() && m.src == Tid::pvmd(1))
        .count();
    assert_eq!(nulls, 2);
}

fn host_of_addr(a: SocketAddrV4) -> u32 {
    (1..=16).find(|&h| addr_of(h) == a).expect("simulated address")
}

/// A silence limit (what pvmd-rs sets on links to pvmd-rs peers): a peer that goes quiet is
/// given up 10 s after it was last heard once the packet went out ten times, not after 190 s.
#[test]
fn a_silent_peer_is_given_up_after_the_silence_limit() {
    let mut c = Cluster::new(2, 1, NetConfig::perfect(Duration::from_millis(1)), 0);
    c.node_mut(1)
        .endpoint
        .set_silence_limit(2, Some(Duration::from_secs(10)))
        .unwrap();
    // A first exchange measures the round trip (2 ms), so retries start at 4 ms.
    c.send_message(1, 2, Tid::pvmd(1), Tid::pvmd(2), hdr(7), b"hello")
        .unwrap();
    c.run_until(Time::from_secs(5));
    assert_eq!(c.node(2).messages().count(), 1);
    c.set_up(2, false);
    c.send_message(1, 2, Tid::pvmd(1), Tid::pvmd(2), hdr(7), b"again")
        .unwrap();
    c.run_for(Duration::from_secs(60));
    let lost = peer_losses(&c, 1);
    assert_eq!(lost.len(), 1, "{lost:?}");
    let (at, ev) = lost[0];
    let Event::PeerLost {
        host: 2,
        cause: LinkLoss::Silent { seq: 2, sends, silent },
    } = ev
    else {
        panic!("{ev:?}");
    };
    // Last heard at about 5 s (the ACK of the first message), so given up at about 15 s.
    assert!(*sends >= 10, "{sends} sends");
    assert!(
        (Duration::from_secs(10)..Duration::from_secs(11)).contains(silent),
        "{silent:?}"
    );
    assert!((Time::from_secs(14)..Time::from_secs(16)).contains(&at), "{at:?}");
    assert_eq!(c.node(1).endpoint.peer_info(2), None);
}

/// The limit must not take a lossy link for a dead one: the same exchanges as
/// `every_message_arrives_once_in_order_under_loss_dup_reorder`, at one datagram in four lost
/// and one in ten duplicated, with a 10 s limit on every link: nobody dies, nothing is lost.
#[test]
fn the_silence_limit_spares_a_lossy_but_live_peer() {
    for seed in 200..224 {
        exactly_once_in_order_with(seed, 1, NetConfig::hostile(250, 100), Some(Duration::from_secs(10)));
        exactly_once_in_order_with(seed, 32, NetConfig::hostile(250, 100), Some(Duration::from_secs(10)));
    }
}

#[test]
fn keepalive_skips_a_host_with_queued_output_and_finds_dead_hosts() {
    let mut c = Cluster::new(2, 1, NetConfig::perfect(Duration::from_millis(1)), 0);
    c.node_mut(1).endpoint.set_keepalive(true);
    c.set_up(2, false);
    // Host 1's first ping turn (60 s) is its own, the second (120 s) goes to host 2, which is down.
    c.run_until(Time::from_secs(121));
    let first = c.wire.iter().find(|w| w.from == 1).unwrap().at;
    assert_eq!(first, Time::from_secs(120));
    // With one packet in flight and another queued behind it, host 2's next turn sends nothing.
    c.send_message(1, 2, Tid::pvmd(1), Tid::pvmd(2), hdr(7), b"queued")
        .unwrap();
    c.run_until(Time::from_secs(120 + 190 + 1));
    let lost = c
        .node(1)
        .events
        .iter()
        .find(|(_, e)| matches!(e, Event::PeerLost { host: 2, .. }))
        .map(|(t, _)| *t);
    assert_eq!(lost, Some(Time::from_secs(120 + 190)));
    let pings = c
        .wire
        .iter()
        .filter(|w| w.from == 1 && w.bytes.len() == 48 && w.bytes[8..10] != [0, 1])
        .count();
    assert_eq!(pings, 0, "no second DM_NULL while output was queued");
}

#[test]
fn fin_handshake_in_the_cluster() {
    let mut c = Cluster::new(3, 1, NetConfig::hostile(200, 200), 5);
    // Traffic in flight while the master deletes host 2.
    c.send_message(1, 2, Tid::pvmd(1), Tid::pvmd(2), hdr(7), b"before")
        .unwrap();
    let now = c.now();
    c.node_mut(1).endpoint.send_fin(now, 2).unwrap();
    c.run_for(Duration::from_secs(30));
    let ev1: Vec<&Event> = c.node(1).events.iter().map(|(_, e)| e).collect();
    assert!(ev1.contains(&&Event::FinAcked { host: 2 }), "{ev1:?}");
    assert!(ev1.contains(&&Event::PeerLost {
        host: 2,
        cause: LinkLoss::FinAckSent
    }));
    let ev2: Vec<&Event> = c.node(2).events.iter().map(|(_, e)| e).collect();
    assert!(ev2.contains(&&Event::FinReceived { host: 1 }), "{ev2:?}");
    // FIN|ACK is sent once, unreliably: host 2 halts only if it got through.
    let finack_sent = c.wire.iter().filter(|w| w.from == 1 && w.bytes[12] == 0x18).count();
    assert_eq!(finack_sent, 1);

    // A non-master's FIN|ACK means that host died.
    let bye = c.node(3).endpoint.bailout_datagrams();
    assert_eq!(bye.len(), 2);
    assert_eq!(bye[0].dst, addr_of(2), "highest host index first");
    for t in bye {
        let to = host_of_addr(t.dst);
        c.inject(addr_of(3), to, &t.bytes);
    }
    assert!(c.node(1).events.iter().any(|(_, e)| *e
        == Event::PeerLost {
            host: 3,
            cause: LinkLoss::PeerFinAck
        }));
    assert_eq!(c.node(1).endpoint.peer_info(3), None);
}

#[test]
fn the_master_finack_halts_and_is_never_answered() {
    let mut c = Cluster::new(2, 1, NetConfig::perfect(Duration::from_millis(1)), 0);
    let bye = c.node(1).endpoint.bailout_datagrams();
    c.inject(addr_of(1), 2, &bye[0].bytes);
    let ev: Vec<&Event> = c.node(2).events.iter().map(|(_, e)| e).collect();
    assert_eq!(ev, vec![&Event::Halt { host: 1 }]);
    assert!(c.wire.is_empty());
}

fn dropped_reasons(c: &Cluster, host: u32) -> Vec<DropReason> {
    c.node(host)
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Dropped(d) => Some(d.reason.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn source_validation_drops_foreign_and_spoofed_datagrams() {
    let mut c = Cluster::new(2, 1, NetConfig::perfect(Duration::from_millis(1)), 0);
    let dat = |src: Tid, seq: u16| {
        let mut b = DatagramHeader {
            dst: Tid::pvmd(2),
            src,
            seq,
            ack: 0,
            flags: FragFlags::DAT | FragFlags::SOM | FragFlags::EOM,
        }
        .to_bytes()
        .to_vec();
        b.extend_from_slice(&hdr(7).to_bytes());
        b
    };
    // Right tid, wrong port.
    let mut spoof = addr_of(1);
    spoof.set_port(spoof.port() + 1);
    c.inject(spoof, 2, &dat(Tid::pvmd(1), 1));
    // A task tid of a host not in the table.
    c.inject(addr_of(1), 2, &dat(Tid::task(9, 1), 1));
    // A tid claiming to be ourselves.
    c.inject(addr_of(1), 2, &dat(Tid::pvmd(2), 1));
    // Garbage, truncated, oversize and a first fragment without room for a message header.
    c.inject(addr_of(1), 2, b"hello");
    c.inject(addr_of(1), 2, &vec![0u8; UDPMAXLEN + 1]);
    c.inject(addr_of(1), 2, &dat(Tid::pvmd(1), 1)[..40]);
    assert_eq!(
        dropped_reasons(&c, 2),
        vec![
            DropReason::AddressMismatch {
                host: 1,
                expected: addr_of(1)
            },
            DropReason::UnknownHost { host: 9 },
            DropReason::UnknownHost { host: 2 },
            DropReason::Truncated { len: 5 },
            DropReason::TooLong {
                len: UDPMAXLEN + 1,
                max: UDPMAXLEN
            },
            DropReason::ShortMessageHeader { len: 24 },
        ]
    );
    assert!(c.wire.is_empty(), "nothing is acknowledged");
    // The genuine one from a task on host 1 is accepted and acknowledged.
    c.inject(addr_of(1), 2, &dat(Tid::task(1, 5), 1));
    assert_eq!(c.wire.len(), 1);
    assert_eq!(c.node(2).messages().count(), 1);
}

#[test]
fn out_of_window_duplicates_and_fin_storms_are_reported() {
    let mut c = Cluster::new(2, 1, NetConfig::perfect(Duration::from_millis(1)), 0);
    let pkt = |seq: u16, flags: FragFlags| {
        DatagramHeader {
            dst: Tid::task(2, 1),
            src: Tid::pvmd(1),
            seq,
            ack: seq,
            flags,
        }
        .to_bytes()
        .to_vec()
    };
    c.inject(addr_of(1), 2, &pkt(5, FragFlags::DAT)); // ahead of the window of 1
    c.inject(addr_of(1), 2, &pkt(0, FragFlags::DAT)); // before rxseq 1: an old duplicate
    for _ in 0..3 {
        c.inject(addr_of(1), 2, &pkt(9, FragFlags::FIN));
    }
    c.inject(addr_of(1), 2, &pkt(77, FragFlags::ACK)); // acknowledges nothing
    c.inject(addr_of(1), 2, &pkt(1, FragFlags::EOM)); // no protocol flag
    let reasons = dropped_reasons(&c, 2);
    assert_eq!(
        reasons,
        vec![
            DropReason::OutOfWindow {
                seq: 5,
                rxseq: 1,
                window: 1
            },
            DropReason::Duplicate { seq: 0, rxseq: 1 },
            DropReason::RepeatedFin { seq: 9 },
            DropReason::RepeatedFin { seq: 9 },
            DropReason::StaleAck { ack: 77 },
            DropReason::NoProtocolFlags { flags: 0x02 },
        ]
    );
    let fins = c
        .node(2)
        .events
        .iter()
        .filter(|(_, e)| matches!(e, Event::FinReceived { .. }))
        .count();
    assert_eq!(fins, 1);
    // The duplicate and each FIN were acknowledged, the out-of-window packet was not.
    let acks: Vec<u16> = c
        .wire
        .iter()
        .map(|w| u16::from_be_bytes([w.bytes[10], w.bytes[11]]))
        .collect();
    assert_eq!(acks, vec![0, 9, 9, 9]);
}

#[test]
fn middle_fragments_without_a_start_and_repeated_starts_are_dropped() {
    let mut c = Cluster::new(2, 1, NetConfig::perfect(Duration::from_millis(1)), 0);
    let pkt = |seq: u16, flags: FragFlags, data: &[u8]| {
        let mut b = DatagramHeader {
            dst: Tid::pvmd(2),
            src: Tid::pvmd(1),
            seq,
            ack: 0,
            flags: flags | FragFlags::DAT,
        }
        .to_bytes()
        .to_vec();
        if flags.contains(FragFlags::SOM) {
            b.extend_from_slice(&hdr(7).to_bytes());
        }
        b.extend_from_slice(data);
        b
    };
    c.inject(addr_of(1), 2, &pkt(1, FragFlags::EOM, b"orphan"));
    c.inject(addr_of(1), 2, &pkt(2, FragFlags::SOM, b"ab"));
    c.inject(addr_of(1), 2, &pkt(3, FragFlags::SOM, b"XX"));
    c.inject(addr_of(1), 2, &pkt(4, FragFlags::EOM, b"cd"));
    assert_eq!(
        dropped_reasons(&c, 2),
        vec![DropReason::SpuriousFragment, DropReason::RepeatedStart]
    );
    let m: Vec<&[u8]> = c.node(2).messages().map(|m| &m.body[..]).collect();
    assert_eq!(m, vec![&b"abcd"[..]]);
}

#[test]
fn task_bound_datagrams_are_handed_on_unassembled_in_order() {
    let mut c = Cluster::new(2, 4, NetConfig::hostile(200, 200), 11);
    let big: Vec<u8> = (0..20_000u32).map(|i| i as u8).collect();
    c.send_message(1, 2, Tid::task(1, 3), Tid::task(2, 7), hdr(99), &big)
        .unwrap();
    c.run_for(Duration::from_secs(20));
    let pk: Vec<_> = c.node(2).packets().collect();
    // 4064 - 32 bytes in the first datagram, 4064 in the others.
    let sizes: Vec<usize> = pk.iter().map(|p| p.data.len()).collect();
    assert_eq!(sizes, vec![4032, 4064, 4064, 4064, 3776]);
    assert!(pk[0].flags == FragFlags::SOM && pk[0].header.unwrap().tag == 99);
    assert!(pk[1..4].iter().all(|p| p.flags.is_empty() && p.header.is_none()));
    assert_eq!(pk[4].flags, FragFlags::EOM);
    assert!(pk.iter().all(|p| p.src == Tid::task(1, 3) && p.dst == Tid::task(2, 7)));
    let joined: Vec<u8> = pk.iter().flat_map(|p| p.data.iter().copied()).collect();
    assert_eq!(joined, big);
    // Every datagram respects the mtu.
    assert!(c.wire.iter().all(|w| w.bytes.len() <= UDPMAXLEN));
}

#[test]
fn packets_are_cut_to_the_smaller_mtu() {
    let mut c = Cluster::empty(NetConfig::perfect(Duration::from_millis(1)), 0);
    c.add_node(EndpointConfig::new(1, 1));
    c.add_node(EndpointConfig::new(2, 1));
    c.node_mut(1)
        .endpoint
        .add_peer(2, PeerConfig::legacy(addr_of(2), 1000))
        .unwrap();
    c.node_mut(2)
        .endpoint
        .add_peer(1, PeerConfig::legacy(addr_of(1), UDPMAXLEN))
        .unwrap();
    c.send_message(1, 2, Tid::pvmd(1), Tid::pvmd(2), hdr(7), &[1u8; 3000])
        .unwrap();
    c.run_for(Duration::from_secs(1));
    let sizes: Vec<usize> = c.wire.iter().filter(|w| w.from == 1).map(|w| w.bytes.len()).collect();
    assert_eq!(sizes, vec![1000, 1000, 1000, 96]);
    assert_eq!(c.node(2).messages().next().unwrap().body, vec![1u8; 3000]);
    assert_eq!(
        c.node_mut(1).endpoint.add_peer(3, PeerConfig::legacy(addr_of(3), 20)),
        Err(PeerError::MtuTooSmall { mtu: 20, min: MIN_MTU })
    );
    assert_eq!(
        c.node_mut(1).endpoint.set_window(2, 0),
        Err(PeerError::BadWindow {
            window: 0,
            max: MAX_WINDOW
        })
    );
}

#[test]
fn the_send_queue_is_capped() {
    let mut cfg = EndpointConfig::new(1, 1);
    cfg.max_send_queue = 10;
    let mut ep = Endpoint::new(cfg, Time::ZERO);
    ep.add_peer(2, PeerConfig::legacy(addr_of(2), UDPMAXLEN)).unwrap();
    for _ in 0..11 {
        ep.send_message(Time::ZERO, 2, Tid::pvmd(1), Tid::pvmd(2), hdr(7), b"x")
            .unwrap();
    }
    // One is in the window, ten wait; a three-datagram message does not fit, none of it is queued.
    let r = ep.send_message(Time::ZERO, 2, Tid::pvmd(1), Tid::pvmd(2), hdr(7), &[0; 9000]);
    assert_eq!(
        r,
        Err(SendError::QueueFull {
            host: 2,
            queued: 10,
            needed: 3,
            cap: 10
        })
    );
    assert_eq!(ep.peer_info(2).unwrap().queued, 10);
}

#[test]
fn datagrams_to_a_peer_are_cut_to_the_size_set_for_it() {
    let mut ep = Endpoint::new(EndpointConfig::new(1, 1), Time::ZERO);
    ep.add_peer(2, PeerConfig::legacy(addr_of(2), UDPMAXLEN)).unwrap();
    ep.set_window(2, 32).unwrap();
    // Never above the table's value nor below the minimum.
    assert_eq!(ep.set_peer_mtu(2, 9000), Ok(UDPMAXLEN));
    assert_eq!(ep.set_peer_mtu(2, 1), Ok(MIN_MTU));
    assert_eq!(ep.set_peer_mtu(2, 1472), Ok(1472));
    assert_eq!(ep.set_peer_mtu(9, 1472), Err(PeerError::NoSuchPeer { host: 9 }));
    ep.send_message(Time::ZERO, 2, Tid::pvmd(1), Tid::pvmd(2), hdr(7), &[5; 4000])
        .unwrap();
    let sizes: Vec<usize> = std::iter::from_fn(|| ep.poll_transmit())
        .map(|t| t.bytes.len())
        .collect();
    // 4000 body bytes + 32 of message header in datagrams of 16 + at most 1456.
    assert_eq!(sizes, vec![1472, 1472, 1136]);
}

#[test]
fn a_fragment_bigger_than_the_queue_cap_goes_into_an_empty_queue() {
    let mut cfg = EndpointConfig::new(1, 1);
    cfg.max_send_queue = 2;
    let mut ep = Endpoint::new(cfg, Time::ZERO);
    ep.add_peer(2, PeerConfig::legacy(addr_of(2), UDPMAXLEN)).unwrap();
    // Five datagrams' worth: one goes into the window, four wait, over the cap of two, because
    // nothing else waited (else such a fragment could never be sent).
    let big = vec![7u8; 4 * UDPMAXLEN];
    ep.send_message(Time::ZERO, 2, Tid::pvmd(1), Tid::pvmd(2), hdr(7), &big)
        .unwrap();
    assert_eq!(ep.peer_info(2).unwrap().queued, 4);
    // Now the queue is not empty: the cap holds again.
    let r = ep.send_message(Time::ZERO, 2, Tid::pvmd(1), Tid::pvmd(2), hdr(7), b"x");
    assert_eq!(
        r,
        Err(SendError::QueueFull {
            host: 2,
            queued: 4,
            needed: 1,
            cap: 2
        })
    );
}

#[test]
fn undrained_events_make_the_endpoint_refuse_input_not_grow() {
    let mut cfg = EndpointConfig::new(2, 1);
    cfg.max_events = 4;
    let mut ep = Endpoint::new(cfg, Time::ZERO);
    ep.add_peer(1, PeerConfig::legacy(addr_of(1), UDPMAXLEN)).unwrap();
    for _ in 0..10 {
        ep.handle_datagram(Time::ZERO, addr_of(1), b"junk");
    }
    assert_eq!(ep.poll_event(), Some(Event::Overflow { count: 6 }));
    assert_eq!(std::iter::from_fn(|| ep.poll_event()).count(), 4);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]
    /// Arbitrary datagrams from a known peer's address, many with a plausible header, never
    /// panic, and the queues stay within their caps.
    #[test]
    fn arbitrary_input_never_panics_and_stays_bounded(
        dgrams in prop::collection::vec(
            (any::<u8>(), any::<u16>(), any::<u16>(), any::<bool>(), prop::collection::vec(any::<u8>(), 0..80)),
            1..120),
        window in 1u16..6,
    ) {
        let mut cfg = EndpointConfig::new(2, 1);
        cfg.max_pending_acks = 16;
        cfg.max_events = 64;
        let mut ep = Endpoint::new(cfg, Time::ZERO);
        ep.add_peer(1, PeerConfig::legacy(addr_of(1), UDPMAXLEN).with_window(window)).unwrap();
        ep.add_peer(3, PeerConfig::legacy(addr_of(3), UDPMAXLEN).with_window(window)).unwrap();
        let mut t = Time::ZERO;
        for (i, (flags, seq, ack, framed, rest)) in dgrams.into_iter().enumerate() {
            t = t + Duration::from_millis(700);
            let bytes = if framed {
                let mut b = DatagramHeader {
                    dst: Tid::pvmd(2),
                    src: if i % 3 == 0 { Tid::task(1, 4) } else { Tid::pvmd(1) },
                    seq: seq % 8,
                    ack: ack % 8,
                    flags: FragFlags::from_bits_retain(flags & 0x1f),
                }.to_bytes().to_vec();
                b.extend_from_slice(&rest);
                b
            } else {
                rest.clone()
            };
            ep.handle_datagram(t, addr_of(1), &bytes);
            if i % 5 == 0 {
                ep.handle_timeout(t);
                let _ = ep.send_message(t, 1, Tid::pvmd(2), Tid::pvmd(1), hdr(7), &rest);
            }
            if i % 7 == 0 {
                while ep.poll_transmit().is_some() {}
                while ep.poll_event().is_some() {}
            }
            if let Some(info) = ep.peer_info(1) {
                prop_assert!(info.reordering < usize::from(window));
                prop_assert!(info.in_flight <= usize::from(window) + 1);
            }
        }
        let tx = std::iter::from_fn(|| ep.poll_transmit()).count();
        prop_assert!(tx <= 16 + 2 * usize::from(window) + 4);
    }
}

#[test]
fn a_transiently_failed_send_is_retried_after_dderrretry_without_counting() {
    let mut ep = Endpoint::new(EndpointConfig::new(1, 1), Time::ZERO);
    ep.add_peer(2, PeerConfig::legacy(addr_of(2), UDPMAXLEN)).unwrap();
    let t0 = Time::from_secs(1);
    ep.send_message(t0, 2, Tid::pvmd(1), Tid::pvmd(2), hdr(7), b"x")
        .unwrap();
    let first = ep.poll_transmit().unwrap();
    ep.transmit_failed(t0);
    assert_eq!(ep.poll_transmit(), None);
    assert_eq!(ep.poll_timeout(), Some(t0 + DDERRRETRY));
    ep.handle_timeout(t0 + DDERRRETRY);
    assert_eq!(ep.poll_transmit().as_ref(), Some(&first));
    // That was the first real send: the next retry comes 2 * rtt later.
    assert_eq!(ep.poll_timeout(), Some(t0 + DDERRRETRY + Duration::from_secs(2)));

    // A failed ACK is retried too; a failed FIN|ACK does not end the link until it goes.
    let mut b = Endpoint::new(EndpointConfig::new(2, 1), Time::ZERO);
    b.add_peer(1, PeerConfig::legacy(addr_of(1), UDPMAXLEN)).unwrap();
    b.add_peer(3, PeerConfig::legacy(addr_of(3), UDPMAXLEN)).unwrap();
    b.handle_datagram(t0, addr_of(1), &first.bytes);
    let ack = b.poll_transmit().unwrap();
    b.transmit_failed(t0);
    b.send_finack(3).unwrap();
    let fa = b.poll_transmit().unwrap();
    assert_eq!(fa.bytes[12], 0x18);
    b.transmit_failed(t0);
    assert_eq!(b.poll_transmit(), None);
    assert!(b.peer_info(3).is_some());
    b.handle_timeout(t0 + DDERRRETRY);
    assert_eq!(b.poll_transmit(), Some(ack));
    assert_eq!(b.poll_transmit(), Some(fa));
    assert_eq!(b.poll_transmit(), None);
    assert_eq!(b.peer_info(3), None);
    let lost: Vec<Event> = std::iter::from_fn(|| b.poll_event())
        .filter(|e| matches!(e, Event::PeerLost { .. }))
        .collect();
    assert_eq!(
        lost,
        vec![Event::PeerLost {
            host: 3,
            cause: LinkLoss::FinAckSent
        }]
    );
}

#[test]
fn doubling_stops_once_the_interval_reaches_nine_whole_seconds() {
    // A 1.5 s round trip makes rtt (1.5 + 3 * 1) / 4 = 1.125 s, so intervals go 2.25, 4.5, 9
    // and then stay at 9 s (9 is not below DDMAXRTT).
    let mut c = Cluster::new(2, 1, NetConfig::perfect(Duration::from_millis(750)), 0);
    c.send_message(1, 2, Tid::pvmd(1), Tid::pvmd(2), hdr(7), b"x").unwrap();
    c.run_for(Duration::from_secs(2));
    assert_eq!(
        c.node(1).endpoint.peer_info(2).unwrap().rtt,
        Duration::from_millis(1125)
    );
    c.set_up(2, false);
    let start = c.now();
    c.send_message(1, 2, Tid::pvmd(1), Tid::pvmd(2), hdr(7), b"y").unwrap();
    c.run_for(Duration::from_secs(300));
    let offsets = send_offsets(&c, 1, 2);
    assert_eq!(offsets[..6], [0, 2250, 6750, 15750, 24750, 33750]);
    // Dead once 10 sends and 180 whole seconds are reached: 6.75 + 9 * 20 = 186.75 s, 22 sends.
    assert_eq!(offsets.len(), 22);
    let lost = c.node(1).events.iter().find_map(|(t, e)| match e {
        Event::PeerLost { cause, .. } => Some((*t, *cause)),
        _ => None,
    });
    assert_eq!(
        lost,
        Some((
            start + Duration::from_micros(186_750_000),
            LinkLoss::Timeout {
                seq: 2,
                sends: 22,
                elapsed: Duration::from_micros(186_750_000)
            }
        ))
    );
}

// ---- against the legacy daemon ------------------------------------------------------------

/// Our endpoint as host 2 of a machine whose master is the installed legacy pvmd 3.4.6, inside
/// a private network namespace (10.77.0.1 = master, 10.77.0.2 = us, both on its loopback).
/// The master is made to add us (its rsh starts nothing: it just prints our `ddpro` line), so
/// it speaks the datagram protocol to our endpoint. Needs root, `ip netns` and /usr/bin/pvmd.
#[test]
fn interop_with_the_legacy_master() {
    in_private_netns("interop_with_the_legacy_master", legacy::add_and_delete);
}

/// The legacy master retransmitting to a host that never answers, against our model: the same
/// send instants (2, 4, 8, 16, 16, ... s apart) and the same give-up. Takes about 200 s, in
/// parallel with the rest of this file.
#[test]
fn interop_legacy_retry_schedule_matches_the_model() {
    in_private_netns(
        "interop_legacy_retry_schedule_matches_the_model",
        legacy::retry_schedule,
    );
}

/// Runs `inner` in a fresh network namespace by re-running this test binary inside it.
fn in_private_netns(test: &str, inner: fn()) {
    if std::env::var_os("DDP_IT_INNER").is_some() {
        inner();
        return;
    }
    // One namespace per test: the tests of this file run in parallel in one process.
    let ns = format!("ddpit-{}-{test}", std::process::id());
    let ip = |args: &[&str]| {
        let ok = std::process::Command::new("ip")
            .args(args)
            .status()
            .map(|s| s.success());
        assert_eq!(ok.ok(), Some(true), "ip {args:?}");
    };
    ip(&["netns", "add", &ns]);
    struct DropNs(String);
    impl Drop for DropNs {
        fn drop(&mut self) {
            let _ = std::process::Command::new("ip")
                .args(["netns", "delete", &self.0])
                .status();
        }
    }
    let _guard = DropNs(ns.clone());
    ip(&["-n", &ns, "link", "set", "lo", "up"]);
    ip(&["-n", &ns, "addr", "add", "10.77.0.1/32", "dev", "lo"]);
    ip(&["-n", &ns, "addr", "add", "10.77.0.2/32", "dev", "lo"]);
    let exe = std::env::current_exe().unwrap();
    let status = std::process::Command::new("ip")
        .args(["netns", "exec", &ns])
        .arg(exe)
        .args(["--exact", test, "--nocapture"])
        .env("DDP_IT_INNER", "1")
        .status()
        .unwrap();
    assert!(status.success());
}

mod legacy {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::net::UdpSocket;
    use std::process::{Child, Command, Stdio};
    use std::time::Instant;

    pub struct Kill(Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    struct Harness {
        sock: UdpSocket,
        ep: Endpoint,
        t0: Instant,
        master: SocketAddrV4,
        /// (ms since start, header) of every datagram from the master.
        rx: Vec<(u128, DatagramHeader)>,
        events: Vec<Event>,
        drop_next_data: bool,
    }

    impl Harness {
        fn now(&self) -> Time {
            Time::from_micros(self.t0.elapsed().as_micros() as u64)
        }

        /// Runs the endpoint on the real socket until `done` holds or `secs` pass.
        fn run_until(&mut self, secs: u64, done: impl Fn(&[Event]) -> bool) -> bool {
            let deadline = Instant::now() + Duration::from_secs(secs);
            let mut buf = [0u8; 8192];
            while Instant::now() < deadline {
                let now = self.now();
                if self.ep.poll_timeout().is_some_and(|t| t <= now) {
                    self.ep.handle_timeout(now);
                }
                while let Some(t) = self.ep.poll_transmit() {
                    let data = t.bytes[12] & 0x04 != 0;
                    if data && std::mem::take(&mut self.drop_next_data) {
                        continue; // lost on the way: our retry must fix it
                    }
                    self.sock.send_to(&t.bytes, t.dst).unwrap();
                }
                while let Some(e) = self.ep.poll_event() {
                    if let Event::Message(m) = &e {
                        if m.header.tag == Dm::HtUpd.code() {
                            let reply = MsgHeader {
                                enc: ENC_XDR,
                                tag: Dm::HtUpdAck.code(),
                                wid: m.header.wid,
                                ..MsgHeader::default()
                            };
                            self.drop_next_data = true;
                            self.ep
                                .send_message(now, 1, Tid::pvmd(2), Tid::pvmd(1), reply, &[])
                                .unwrap();
                        }
                    }
                    self.events.push(e);
                }
                if done(&self.events) {
                    return true;
                }
                self.sock.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
                if let Ok((n, from)) = self.sock.recv_from(&mut buf) {
                    let std::net::SocketAddr::V4(from) = from else { continue };
                    if from == self.master {
                        if let Ok(h) = DatagramHeader::parse(&buf[..n]) {
                            self.rx.push((self.t0.elapsed().as_millis(), h));
                        }
                    }
                    let now = self.now();
                    self.ep.handle_datagram(now, from, &buf[..n]);
                }
            }
            false
        }
    }

    fn tags(events: &[Event]) -> Vec<String> {
        events
            .iter()
            .map(|e| match e {
                Event::Message(m) => Dm::from_code(m.header.tag).map_or(m.header.tag.to_string(), |d| d.to_string()),
                e => format!("{e:?}"),
            })
            .collect()
    }

    /// A legacy master pvmd in our namespace that is adding us as host 2.
    pub struct Setup {
        pub dir: std::path::PathBuf,
        pub pvmd: Kill,
        pub _console: Kill,
        pub stdin: std::process::ChildStdin,
        pub sock: UdpSocket,
        pub master: SocketAddrV4,
    }

    impl Drop for Setup {
        fn drop(&mut self) {
            let _ = writeln!(self.stdin, "halt");
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(5) {
                if self.pvmd.0.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    pub fn start_master_adding_us(name: &str) -> Setup {
        let dir = std::env::temp_dir().join(format!("ddpit-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let line = dir.join("line");
        let args = dir.join("rsh.args");
        let rsh = dir.join("rsh");
        std::fs::write(
            &rsh,
            format!(
                "#!/bin/sh\necho \"$@\" > {args}\nwhile [ ! -s {line} ]; do sleep 0.05; done\ncat {line}\nexec sleep 3\n",
                args = args.display(),
                line = line.display()
            ),
        )
        .unwrap();
        Command::new("chmod").arg("700").arg(&rsh).status().unwrap();

        let sock = UdpSocket::bind("10.77.0.2:0").unwrap();
        let port = sock.local_addr().unwrap().port();
        std::fs::write(
            &line,
            format!("ddpro<2316> arch<LINUX64> ip<0a4d0002:{port:04x}> mtu<4080> dsig<4230209>\n"),
        )
        .unwrap();

        let env = |c: &mut Command| {
            c.env("PVM_TMP", &dir).env("PVM_ALLOW_ROOT", "1").env("PVM_RSH", &rsh);
        };
        let mut pvmd = Command::new("/usr/bin/pvmd");
        env(&mut pvmd);
        let mut pvmd = Kill(pvmd.arg("-n10.77.0.1").stdout(Stdio::piped()).spawn().unwrap());
        let mut first = String::new();
        BufReader::new(pvmd.0.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        assert!(first.contains("pvmtmp"), "pvmd printed {first:?}");

        let mut console = Command::new("/usr/bin/pvm");
        env(&mut console);
        let mut console = Kill(console.stdin(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap());
        let mut stdin = console.0.stdin.take().unwrap();
        writeln!(stdin, "add 10.77.0.2").unwrap();

        // The slave command line names the master's address and our host index.
        let t0 = Instant::now();
        let argv = loop {
            if let Ok(s) = std::fs::read_to_string(&args) {
                if !s.is_empty() {
                    break s;
                }
            }
            assert!(t0.elapsed() < Duration::from_secs(10), "rsh never ran");
            std::thread::sleep(Duration::from_millis(20));
        };
        let words: Vec<&str> = argv.split_whitespace().collect();
        let i = words.iter().position(|w| *w == "-n10.77.0.2").expect("slave command") + 1;
        assert_eq!((words[i], words[i + 2], words[i + 3]), ("1", "4080", "2"), "{argv}");
        let master_port = u16::from_str_radix(words[i + 1].split(':').nth(1).unwrap(), 16).unwrap();
        let master = SocketAddrV4::new([10, 77, 0, 1].into(), master_port);

        Setup {
            dir,
            pvmd,
            _console: console,
            stdin,
            sock,
            master,
        }
    }

    pub fn add_and_delete() {
        let mut setup = start_master_adding_us("add");
        let (master, sock) = (setup.master, setup.sock.try_clone().unwrap());
        let stdin = &mut setup.stdin;
        let mut ep = Endpoint::new(EndpointConfig::new(2, 1), Time::ZERO);
        ep.add_peer(1, PeerConfig::legacy(master, UDPMAXLEN)).unwrap();
        let mut h = Harness {
            sock,
            ep,
            t0: Instant::now(),
            master,
            rx: Vec::new(),
            events: Vec::new(),
            drop_next_data: false,
        };

        // 1. The add: DM_SLCONF, DM_HTUPD, (our DM_HTUPDACK, first copy "lost"), DM_HTCOMMIT.
        let committed = h.run_until(20, |ev| {
            ev.iter()
                .any(|e| matches!(e, Event::Message(m) if m.header.tag == Dm::HtCommit.code()))
        });
        assert!(committed, "no DM_HTCOMMIT: {:?} / {:?}", tags(&h.events), h.rx);
        assert_eq!(tags(&h.events), vec!["DM_SLCONF", "DM_HTUPD", "DM_HTCOMMIT"]);
        // The master accepted every ACK of ours: it sent each data packet once.
        let data: Vec<u16> =
            h.rx.iter()
                .filter(|(_, d)| d.flags.contains(FragFlags::DAT))
                .map(|(_, d)| d.seq)
                .collect();
        assert_eq!(data, vec![1, 2, 3]);
        // It acknowledged our DM_HTUPDACK only when our retry (2 s after the lost first copy) came.
        let acks: Vec<(u128, u16)> =
            h.rx.iter()
                .filter(|(_, d)| d.flags == FragFlags::ACK)
                .map(|(t, d)| (*t, d.ack))
                .collect();
        assert_eq!(acks.iter().map(|a| a.1).collect::<Vec<_>>(), vec![1]);
        assert!(
            (1900..3000).contains(&acks[0].0),
            "our first retry is due 2 s after the lost send: {acks:?}"
        );
        assert_eq!(h.ep.peer_info(1).unwrap().in_flight, 0);

        // 2. Deleting us: FIN (acknowledged by us), then FIN|ACK from the master = halt.
        writeln!(stdin, "delete 10.77.0.2").unwrap();
        let halted = h.run_until(20, |ev| ev.contains(&Event::Halt { host: 1 }));
        assert!(halted, "{:?} / {:?}", tags(&h.events), h.rx);
        assert!(h.events.contains(&Event::FinReceived { host: 1 }));
        let tail: Vec<FragFlags> = h.rx.iter().rev().take(2).map(|(_, d)| d.flags).collect();
        assert_eq!(tail, vec![FragFlags::FIN | FragFlags::ACK, FragFlags::FIN]);

        for (t, d) in &h.rx {
            eprintln!(
                "{t:>6} ms from master: seq {} ack {} flags {:?} dst {}",
                d.seq, d.ack, d.flags, d.dst
            );
        }
        eprintln!("events: {:?}", tags(&h.events));
    }

    pub fn retry_schedule() {
        let setup = start_master_adding_us("retry");
        let mut buf = [0u8; 8192];
        let t0 = Instant::now();
        let mut first: Option<Instant> = None;
        let mut offsets: Vec<u64> = Vec::new();
        setup.sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        while t0.elapsed() < Duration::from_secs(215) {
            if let Ok((n, _)) = setup.sock.recv_from(&mut buf) {
                let Ok(h) = DatagramHeader::parse(&buf[..n]) else {
                    continue;
                };
                if h.flags.contains(FragFlags::DAT) && h.seq == 1 {
                    let f = *first.get_or_insert_with(Instant::now);
                    offsets.push(f.elapsed().as_millis() as u64);
                }
            }
        }
        let log = std::fs::read_to_string(setup.dir.join("pvml.0")).unwrap_or_default();
        eprintln!("legacy send offsets (ms): {offsets:?}");

        // The model: the same packet to a host that never answers.
        let mut c = Cluster::new(2, 1, NetConfig::perfect(Duration::from_millis(1)), 0);
        c.set_up(2, false);
        c.send_message(1, 2, Tid::pvmd(1), Tid::pvmd(2), hdr(7), b"").unwrap();
        c.run_for(Duration::from_secs(215));
        let model = send_offsets(&c, 1, 1);
        let gave_up = c
            .node(1)
            .events
            .iter()
            .find_map(|(t, e)| matches!(e, Event::PeerLost { .. }).then_some(*t));
        eprintln!("model send offsets (ms): {model:?}, gives up at {gave_up:?}");

        assert_eq!(offsets.len(), model.len(), "{offsets:?} vs {model:?}");
        for (l, m) in offsets.iter().zip(&model) {
            assert!(l.abs_diff(*m) < 250, "{offsets:?} vs {model:?}");
        }
        assert_eq!(gave_up, Some(Time::from_secs(190)));
        assert!(log.contains("timed out sending to"), "legacy log: {log}");
    }
}

#[test]
fn relayed_task_fragments_keep_their_som_and_eom() {
    // A task's message arrives at its pvmd as three stream fragments; each is relayed as is.
    let mut c = Cluster::new(2, 1, NetConfig::hostile(100, 100), 4);
    let (src, dst) = (Tid::task(1, 1), Tid::task(2, 1));
    let now = c.now();
    let ep = &mut c.node_mut(1).endpoint;
    ep.send_frag(now, 2, src, dst, Some(hdr(5)), false, b"first").unwrap();
    ep.send_frag(now, 2, src, dst, None, false, &[7u8; 5000]).unwrap();
    ep.send_frag(now, 2, src, dst, None, true, b"last").unwrap();
    c.run_for(Duration::from_secs(60));
    let got: Vec<(FragFlags, usize)> = c.node(2).packets().map(|p| (p.flags, p.data.len())).collect();
    assert_eq!(
        got,
        vec![
            (FragFlags::SOM, 5),
            (FragFlags::empty(), 4064),
            (FragFlags::empty(), 936),
            (FragFlags::EOM, 4)
        ]
    );
}

/// `LinkStats` (read by pvmd-rs's metrics): on a perfect network every data packet gives one
/// round-trip sample of twice the latency and nothing is resent; on a lossy one the resends
/// are counted and match the data datagrams on the wire beyond the first of each sequence
/// number.
#[test]
fn link_stats_count_round_trips_and_retransmissions() {
    let mut c = Cluster::new(2, 1, NetConfig::perfect(Duration::from_millis(10)), 1);
    for i in 0..5u32 {
        c.send_message(1, 2, Tid::pvmd(1), Tid::pvmd(2), hdr(7), &i.to_be_bytes())
            .unwrap();
    }
    c.run_for(Duration::from_secs(2));
    let s = c.node(1).endpoint.stats();
    assert_eq!(s.retransmits, 0);
    assert!(s.rtt_samples >= 5, "{s:?}");
    // 20 ms round trips: in the 25 ms bucket and above, none at or below 10 ms.
    let at = |us: u64| s.rtt_le[pvm_proto::ddp::RTT_BUCKETS_US.iter().position(|&b| b == us).unwrap()];
    assert_eq!(at(10_000), 0, "{s:?}");
    assert_eq!(at(50_000), s.rtt_samples, "{s:?}");
    assert!(s.rtt_sum_us >= s.rtt_samples * 20_000, "{s:?}");

    let mut c = Cluster::new(2, 1, NetConfig::hostile(300, 0), 5);
    for i in 0..20u32 {
        c.send_message(1, 2, Tid::pvmd(1), Tid::pvmd(2), hdr(7), &i.to_be_bytes())
            .unwrap();
    }
    c.run_for(Duration::from_secs(120));
    assert_eq!(c.node(2).messages().count(), 20);
    let s = c.node(1).endpoint.stats();
    // Data datagrams on the wire (lost ones included) beyond one per sequence number (the
    // messages and the keepalive pings) are the resends.
    let data: Vec<u16> = c
        .wire
        .iter()
        .filter(|w| w.from == 1 && w.bytes[12] & 0x04 != 0)
        .map(|w| u16::from_be_bytes([w.bytes[8], w.bytes[9]]))
        .collect();
    let mut seqs = data.clone();
    seqs.sort_unstable();
    seqs.dedup();
    assert!(s.retransmits > 0, "30% loss and no retransmission? {s:?}");
    assert_eq!(data.len() - seqs.len(), s.retransmits as usize, "{s:?}");
}
