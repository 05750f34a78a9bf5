//! A simulated cluster: several endpoints, a clock that only moves when told, and a network
//! that loses, duplicates and reorders datagrams from a seed. Every run with the same seed is
//! the same run, so a failing seed reproduces exactly.
//!
//! It is public so that the daemon's own tests can reuse it.

use super::{Endpoint, EndpointConfig, Event, Message, Packet, PeerConfig, SendError, Time};
use crate::mesg::MsgHeader;
use crate::tid::Tid;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

/// splitmix64: tiny, fast and good enough to drive fault injection.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    /// True with probability `permille / 1000`.
    pub fn chance(&mut self, permille: u32) -> bool {
        self.below(1000) < u64::from(permille)
    }
}

/// How the simulated network treats each datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetConfig {
    /// One-way delay of every datagram.
    pub latency: Duration,
    /// Extra delay drawn uniformly from `0..jitter`; datagrams overtake each other when it
    /// exceeds their spacing.
    pub jitter: Duration,
    pub loss_permille: u32,
    pub dup_permille: u32,
}

impl NetConfig {
    /// Delivers everything, in order, after `latency`.
    pub fn perfect(latency: Duration) -> NetConfig {
        NetConfig {
            latency,
            jitter: Duration::ZERO,
            loss_permille: 0,
            dup_permille: 0,
        }
    }

    /// Loses, duplicates and reorders: 1 ms latency, up to 5 ms jitter.
    pub fn hostile(loss_permille: u32, dup_permille: u32) -> NetConfig {
        NetConfig {
            latency: Duration::from_millis(1),
            jitter: Duration::from_millis(5),
            loss_permille,
            dup_permille,
        }
    }
}

/// One simulated daemon.
#[derive(Debug)]
pub struct Node {
    pub host: u32,
    pub addr: SocketAddrV4,
    pub endpoint: Endpoint,
    /// Everything the endpoint reported, with the time it was drained.
    pub events: Vec<(Time, Event)>,
    /// A node that is down neither sends nor receives; its endpoint is frozen.
    pub up: bool,
}

impl Node {
    pub fn messages(&self) -> impl Iterator<Item = &Message> {
        self.events.iter().filter_map(|(_, e)| match e {
            Event::Message(m) => Some(m),
            _ => None,
        })
    }

    pub fn packets(&self) -> impl Iterator<Item = &Packet> {
        self.events.iter().filter_map(|(_, e)| match e {
            Event::Packet(p) => Some(p),
            _ => None,
        })
    }
}

/// A datagram as it left a node (before the network decided its fate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireRecord {
    pub at: Time,
    pub from: u32,
    pub to: SocketAddrV4,
    pub bytes: Vec<u8>,
}

#[derive(Debug)]
struct InFlight {
    at: Time,
    order: u64,
    from: SocketAddrV4,
    to: SocketAddrV4,
    bytes: Vec<u8>,
}

/// Several endpoints joined by a seeded network.
#[derive(Debug)]
pub struct Cluster {
    now: Time,
    pub nodes: Vec<Node>,
    pub net: NetConfig,
    rng: SplitMix64,
    in_flight: Vec<InFlight>,
    order: u64,
    /// Every datagram sent, in send order.
    pub wire: Vec<WireRecord>,
}

/// The simulated address of host `host`.
pub fn addr_of(host: u32) -> SocketAddrV4 {
    let h = u8::try_from(host % 250).unwrap_or(0);
    SocketAddrV4::new(
        Ipv4Addr::new(10, 77, 0, h),
        5000 + u16::try_from(host % 60000).unwrap_or(0),
    )
}

impl Cluster {
    /// Hosts `1..=hosts`, host 1 the master, every pair linked with `window`.
    pub fn new(hosts: u32, window: u16, net: NetConfig, seed: u64) -> Cluster {
        let mut c = Cluster::empty(net, seed);
        for h in 1..=hosts {
            c.add_node(EndpointConfig::new(h, 1));
        }
        for a in 1..=hosts {
            for b in 1..=hosts {
                if a != b {
                    let pc = PeerConfig::legacy(addr_of(b), crate::codes::UDPMAXLEN).with_window(window);
                    c.node_mut(a).endpoint.add_peer(b, pc).expect("valid simulated peer");
                }
            }
        }
        c
    }

    /// No nodes yet; add them with [`add_node`](Self::add_node) and link them yourself.
    pub fn empty(net: NetConfig, seed: u64) -> Cluster {
        Cluster {
            now: Time::ZERO,
            nodes: Vec::new(),
            net,
            rng: SplitMix64::new(seed),
            in_flight: Vec::new(),
            order: 0,
            wire: Vec::new(),
        }
    }

    pub fn add_node(&mut self, cfg: EndpointConfig) {
        let host = cfg.host;
        self.nodes.push(Node {
            host,
            addr: addr_of(host),
            endpoint: Endpoint::new(cfg, self.now),
            events: Vec::new(),
            up: true,
        });
    }

    pub fn now(&self) -> Time {
        self.now
    }

    /// Panics if there is no such node: a test-construction error, not an input.
    pub fn node(&self, host: u32) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.host == host)
            .expect("no such simulated host")
    }

    pub fn node_mut(&mut self, host: u32) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.host == host)
            .expect("no such simulated host")
    }

    pub fn set_up(&mut self, host: u32, up: bool) {
        self.node_mut(host).up = up;
    }

    /// Queues a message from host `from` to host `to` at the current time.
    pub fn send_message(
        &mut self,
        from: u32,
        to: u32,
        src: Tid,
        dst: Tid,
        header: MsgHeader,
        body: &[u8],
    ) -> Result<(), SendError> {
        let now = self.now;
        let r = self
            .node_mut(from)
            .endpoint
            .send_message(now, to, src, dst, header, body);
        self.flush();
        r
    }

    /// Injects a datagram as if host `from` had sent it (no fault injection).
    pub fn inject(&mut self, from: SocketAddrV4, to: u32, bytes: &[u8]) {
        let now = self.now;
        let node = self.node_mut(to);
        node.endpoint.handle_datagram(now, from, bytes);
        self.flush();
    }

    /// Collects what every node wants to send and every event it reported.
    pub fn flush(&mut self) {
        let now = self.now;
        let mut out = Vec::new();
        for n in &mut self.nodes {
            if !n.up {
                continue;
            }
            while let Some(t) = n.endpoint.poll_transmit() {
                out.push((n.host, n.addr, t));
            }
            while let Some(e) = n.endpoint.poll_event() {
                n.events.push((now, e));
            }
        }
        for (host, from, t) in out {
            self.wire.push(WireRecord {
                at: now,
                from: host,
                to: t.dst,
                bytes: t.bytes.clone(),
            });
            if self.rng.chance(self.net.loss_permille) {
                continue;
            }
            let copies = if self.rng.chance(self.net.dup_permille) { 2 } else { 1 };
            for _ in 0..copies {
                let jitter = self.rng.below(u64::try_from(self.net.jitter.as_micros()).unwrap_or(0));
                let at = now + self.net.latency + Duration::from_micros(jitter);
                self.order += 1;
                self.in_flight.push(InFlight {
                    at,
                    order: self.order,
                    from,
                    to: t.dst,
                    bytes: t.bytes.clone(),
                });
            }
        }
    }

    /// The next instant something happens, if any.
    pub fn next_event_time(&self) -> Option<Time> {
        let net = self.in_flight.iter().map(|f| f.at).min();
        let timers = self
            .nodes
            .iter()
            .filter(|n| n.up)
            .filter_map(|n| n.endpoint.poll_timeout())
            .min();
        match (net, timers) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Advances to the next event if it is not later than `limit`; false when there is none.
    pub fn step(&mut self, limit: Time) -> bool {
        self.flush();
        let Some(next) = self.next_event_time() else {
            return false;
        };
        if next > limit {
            return false;
        }
        self.now = self.now.max(next);
        let now = self.now;
        let mut arriving: Vec<InFlight> = Vec::new();
        let mut i = 0;
        while i < self.in_flight.len() {
            if self.in_flight[i].at <= now {
                arriving.push(self.in_flight.swap_remove(i));
            } else {
                i += 1;
            }
        }
        arriving.sort_by_key(|f| (f.at, f.order));
        for f in arriving {
            if let Some(n) = self.nodes.iter_mut().find(|n| n.addr == f.to && n.up) {
                n.endpoint.handle_datagram(now, f.from, &f.bytes);
            }
        }
        for n in &mut self.nodes {
            if n.up && n.endpoint.poll_timeout().is_some_and(|t| t <= now) {
                n.endpoint.handle_timeout(now);
            }
        }
        self.flush();
        true
    }

    /// Runs every event up to and including `t`, then sets the clock to `t`.
    pub fn run_until(&mut self, t: Time) {
        while self.step(t) {}
        self.now = self.now.max(t);
        self.flush();
    }

    /// Runs for `d` more.
    pub fn run_for(&mut self, d: Duration) {
        let t = self.now + d;
        self.run_until(t);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prng_is_deterministic_and_spread() {
        let mut a = SplitMix64::new(7);
        let mut b = SplitMix64::new(7);
        let xs: Vec<u64> = (0..5).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..5).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        let hits = (0..10_000).filter(|_| a.chance(100)).count();
        assert!((800..1200).contains(&hits), "{hits}");
    }
}
