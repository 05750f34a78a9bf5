//! The reliable-datagram endpoint under hostile datagrams: arbitrary bytes from the peer's
//! address and from strangers, with time moving, never panic, and every queue stays bounded.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pvm_proto::ddp::{Endpoint, EndpointConfig, PeerConfig, Time};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

fuzz_target!(|data: &[u8]| {
    let peer = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 4000);
    let stranger = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 9), 4000);
    let mut now = Time::ZERO;
    let mut ep = Endpoint::new(EndpointConfig::new(1, 1), now);
    let window = 1 + data.first().copied().unwrap_or(0) as u16 % 8;
    ep.add_peer(2, PeerConfig::legacy(peer, 4080).with_window(window))
        .unwrap();
    let mut rest = data.get(1..).unwrap_or(&[]);
    let mut events = 0usize;
    while rest.len() >= 2 {
        let (ctl, tail) = rest.split_at(2);
        let n = (ctl[1] as usize).min(tail.len());
        let (dg, tail) = tail.split_at(n);
        rest = tail;
        now = now + Duration::from_millis(u64::from(ctl[0] >> 2) * 50);
        let from = if ctl[0] & 1 == 0 { peer } else { stranger };
        ep.handle_datagram(now, from, dg);
        if ctl[0] & 2 != 0 {
            ep.handle_timeout(now);
        }
        let mut out = 0;
        while let Some(t) = ep.poll_transmit() {
            out += 1;
            assert!(t.bytes.len() <= 4080, "datagram over the mtu");
            assert!(out < 10_000, "transmit queue does not drain");
        }
        while ep.poll_event().is_some() {
            events += 1;
            assert!(events < 1_000_000);
        }
    }
});
