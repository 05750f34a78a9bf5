//! DM_XCAPS (`0x80020100`): capability exchange between two pvmd-rs daemons, above DM_LAST so
//! that a legacy pvmd acknowledges the datagram and drops the message (messages.md §2). See
//! `docs/extensions.md`.
//!
//! Body: `int kind (1 = probe, 2 = answer); int version; int window; int key id (0: none);
//! [version >= 2: int features; string criu version]; [version >= 3: int stream port (0: none);
//! uint cookie high; uint cookie low]` (stream.rs). A probe is sent to
//! each new peer after a host-table commit; the peer sets the link's window to the smaller of
//! both and answers; the prober does the same on the answer. No answer (a legacy peer) leaves
//! the link at window 1, the legacy stop-and-wait.
//!
//! The version 2 fields come from the CRIU probe (migrate.rs), which runs on a thread after
//! start-up. While it runs, a probe to send or to answer waits in [`Later`] (the event loop
//! never blocks on it) and goes out when the probe thread reports (`xcaps_resume`).

use pvm_proto::codes::ENC_XDR;
use pvm_proto::xdr::{XdrReader, XdrWriter};

use super::{AuthFiles, Daemon, Out};

/// The message code.
pub const XCAPS_TAG: i32 = 0x8002_0100u32 as i32;
/// The window a pvmd-rs daemon offers.
pub const XCAPS_WINDOW: u16 = 32;
const PROBE: i32 = 1;
const ANSWER: i32 = 2;
/// Version 2 appends `int features; string criu version` (docs/migration.md §3.2); version 3
/// the stream offer (stream.rs, docs/extensions.md).
const VERSION: i32 = 3;

/// A DM_XCAPS that waits for the CRIU probe.
#[derive(Debug)]
pub enum Later {
    /// A probe to send to this host.
    Probe(u32),
    /// A probe from this host to answer: its wait id and body.
    Answer(u32, i32, Vec<u8>),
}

/// Most DM_XCAPS kept waiting for the probe: one to send and one to answer per peer, for the
/// largest machine (host indices are 12 bits). Beyond it they are dropped with a log line and
/// those links stay at window 1.
const MAX_LATER: usize = 2 * 4096;

/// How long a pvmd-rs peer may stay silent while a packet to it waits for its acknowledgement
/// before it is declared dead (pvm-proto `Endpoint::set_silence_limit`): `PVMD_PEER_TIMEOUT`
/// seconds (fractions allowed, at least 1), default 10; 0 keeps the legacy rule (10 sends over
/// at least 180 s), which legacy peers always get. A killed pvmd is usually found sooner, by
/// the ICMP port-unreachable reports of its host (guard.rs); this limit is for a host that
/// vanished or a partition.
pub fn peer_timeout() -> Option<std::time::Duration> {
    parse_peer_timeout(std::env::var("PVMD_PEER_TIMEOUT").ok().as_deref())
}

fn parse_peer_timeout(v: Option<&str>) -> Option<std::time::Duration> {
    const DEFAULT: f64 = 10.0;
    let secs = match v.map(|s| s.trim().parse::<f64>()) {
        None => DEFAULT,
        Some(Ok(0.0)) => return None,
        Some(Ok(s)) if s.is_finite() && s > 0.0 => s.clamp(1.0, 3600.0),
        Some(_) => DEFAULT,
    };
    Some(std::time::Duration::from_secs_f64(secs))
}

/// IPv4 and UDP headers: a datagram of the route's MTU less these is one IP packet.
const IP_UDP_HEADERS: usize = 20 + 8;

/// Largest window offered with datagrams cut to fit the route.
const MAX_FIT_WINDOW: u16 = 128;

/// The size of the datagrams to send to a pvmd-rs peer at `addr`, cut to fit the route so that
/// none is sent as IP fragments (`PVMD_FIT_MTU=0`: not cut): on a link that loses or duplicates
/// single fragments, the leftovers of broken datagrams fill the receiver's reassembly memory and
/// then every fragmented datagram is refused for 30 s (measured: hard_lossy_links.rs,
/// robustness.md). Legacy peers keep the table's size (4080), as legacy pvmds send. Returns the
/// size and the route's MTU, None when not cut.
fn fit(n: &super::netd::Net, host: u32) -> Option<(usize, usize)> {
    if std::env::var("PVMD_FIT_MTU").is_ok_and(|v| v.trim() == "0") {
        return None;
    }
    let route = (n.route_mtu)(n.table.get(host)?.addr)?;
    let size = route
        .saturating_sub(IP_UDP_HEADERS)
        .max(pvm_proto::ddp::consts::MIN_MTU);
    (size < pvm_proto::codes::UDPMAXLEN).then_some((size, route))
}

/// The window we offer for datagrams of `size` bytes: [`XCAPS_WINDOW`] datagrams of 4080
/// bytes' worth (88 of 1472), so that smaller datagrams keep as many bytes in flight.
fn window_offer(size: Option<usize>) -> u16 {
    let Some(size) = size else { return XCAPS_WINDOW };
    let w = usize::from(XCAPS_WINDOW) * pvm_proto::codes::UDPMAXLEN / size.max(1);
    u16::try_from(w)
        .unwrap_or(MAX_FIT_WINDOW)
        .clamp(XCAPS_WINDOW, MAX_FIT_WINDOW)
}

/// hardening: a fourth int names the sender's datagram key (0: none, see dgauth.rs); version-1
/// readers ignore it.
fn body(kind: i32, window: u16, key_id: i32, stream: impl FnOnce(&mut XdrWriter)) -> Vec<u8> {
    let mut w = XdrWriter::new();
    // Version 1 fields, the key id (hardening), then the version 2 fields (migration), then
    // the version 3 stream offer.
    w.int(kind).int(VERSION).int(i32::from(window)).int(key_id);
    super::migrate::xcaps_v2_fields(&mut w);
    stream(&mut w);
    w.into_inner()
}

impl<A: AuthFiles> Daemon<A> {
    /// Offers our window to a new peer (legacy peers ignore it).
    pub(super) fn xcaps_probe(&mut self, host: u32, out: &mut Vec<Out>) {
        if self.xcaps_wait_for_probe(|| Later::Probe(host), out) {
            return;
        }
        self.app_test_ext_dm(host, out); // appckpt.rs: test switch, off unless set
        if std::env::var_os("PVMD_NO_XCAPS").is_some() {
            return;
        }
        if let Some(wid) = self.wait_xcaps(host) {
            let key_id = self.xcaps_key_offer(host);
            let offer = window_offer(self.net.as_ref().and_then(|n| fit(n, host)).map(|f| f.0));
            let b = body(PROBE, offer, key_id, |w| self.xstream_offer_fields(w));
            self.dm_send(host, XCAPS_TAG, wid, &b, out);
        }
    }

    pub(super) fn xcaps_entry(&mut self, host: u32, wid: i32, b: &[u8], out: &mut Vec<Out>) {
        let _ = ENC_XDR;
        let mut r = XdrReader::new(b);
        let (Ok(kind), Ok(version), Ok(window)) = (r.int("kind"), r.int("version"), r.int("window")) else {
            out.push(Out::Log(format!("dm_xcaps() bad message from host {host}")));
            return;
        };
        if version < 1 || window < 1 {
            return;
        }
        let their_key = r.int("key").unwrap_or(0);
        if let Some(f) = super::migrate::parse_xcaps_v2(&mut r, version) {
            self.mig_peer_caps(host, f);
        }
        // Version 3: the stream offer follows the criu version string (stream.rs).
        if version >= 3 && r.string_bytes("criu").is_ok() {
            self.xstream_offered(host, &mut r, out);
        }
        // Datagrams cut to fit the route, and the window that keeps as many bytes in flight.
        let fitted = self.net.as_ref().and_then(|n| fit(n, host));
        let offer = window_offer(fitted.map(|f| f.0));
        let w = u16::try_from(window).unwrap_or(u16::MAX).min(offer);
        let set = |d: &mut Self, out: &mut Vec<Out>| {
            if let Some(n) = d.net.as_mut() {
                let limit = peer_timeout();
                if n.ep.set_window(host, w).is_ok() && n.ep.set_silence_limit(host, limit).is_ok() {
                    let dead = limit.map_or("legacy rule".into(), |l| format!("{} s", l.as_secs_f64()));
                    let fit = match fitted.map(|(size, route)| (n.ep.set_peer_mtu(host, size), route)) {
                        Some((Ok(size), route)) => format!(", datagrams of at most {size} bytes (route MTU {route})"),
                        _ => String::new(),
                    };
                    out.push(Out::Log(format!(
                        "dm_xcaps() host {host}: window {w}, silent peer dead after {dead}{fit}"
                    )));
                }
            }
        };
        if kind == PROBE && self.xcaps_wait_for_probe(|| Later::Answer(host, wid, b.to_vec()), out) {
            return;
        }
        match kind {
            PROBE => {
                set(self, out);
                let key_id = self.xcaps_key_accept(host, their_key, out);
                let b = body(ANSWER, offer, key_id, |w| self.xstream_offer_fields(w));
                self.dm_send(host, XCAPS_TAG, wid, &b, out);
            }
            ANSWER if self.take_xcaps_wait(wid) => set(self, out),
            _ => {}
        }
    }

    /// While the CRIU probe runs, keeps `later` for when it has finished (and asks for it to
    /// start now). True if kept (or dropped over [`MAX_LATER`]): the caller stops there.
    fn xcaps_wait_for_probe(&mut self, later: impl FnOnce() -> Later, out: &mut Vec<Out>) -> bool {
        if !self.mig.probe_pending {
            return false;
        }
        super::migrate::want_probe();
        if let Some(n) = self.net.as_mut() {
            if n.xcaps_later.len() < MAX_LATER {
                n.xcaps_later.push(later());
            } else {
                out.push(Out::Log(
                    "dm_xcaps() too many waiting for the CRIU probe; dropped".into(),
                ));
            }
        }
        true
    }

    /// The CRIU probe has finished: the DM_XCAPS that waited for it go out, for the hosts
    /// still in the machine.
    pub(super) fn xcaps_resume(&mut self, out: &mut Vec<Out>) {
        let later = self
            .net
            .as_mut()
            .map(|n| std::mem::take(&mut n.xcaps_later))
            .unwrap_or_default();
        for l in later {
            let host = match &l {
                Later::Probe(h) | Later::Answer(h, _, _) => *h,
            };
            if !self.net.as_ref().is_some_and(|n| n.table.hosts.contains_key(&host)) {
                continue;
            }
            match l {
                Later::Probe(h) => self.xcaps_probe(h, out),
                Later::Answer(h, wid, b) => self.xcaps_entry(h, wid, &b, out),
            }
        }
    }
}

// ---- hardening: datagram authentication (dgauth.rs) ----
impl<A: AuthFiles> Daemon<A> {
    fn peer_addr(&self, host: u32) -> Option<std::net::SocketAddrV4> {
        self.net.as_ref()?.table.get(host).map(|h| h.addr)
    }

    /// Our key id for a probe; the link accepts sealed datagrams from now on.
    fn xcaps_key_offer(&mut self, host: u32) -> i32 {
        let addr = self.peer_addr(host);
        let Some(n) = self.net.as_mut() else { return 0 };
        let Some(id) = n.dgauth.key.as_ref().map(|k| k.id) else {
            return 0;
        };
        if let Some(a) = addr {
            n.dgauth.set(a, crate::dgauth::Mode::Offered);
        }
        id
    }

    /// A probe named key `theirs`: if it is ours too, seal from the answer on.
    fn xcaps_key_accept(&mut self, host: u32, theirs: i32, out: &mut Vec<Out>) -> i32 {
        let addr = self.peer_addr(host);
        let Some(n) = self.net.as_mut() else { return 0 };
        let Some(id) = n.dgauth.key.as_ref().map(|k| k.id) else {
            return 0;
        };
        if theirs == id {
            if let Some(a) = addr {
                n.dgauth.set(a, crate::dgauth::Mode::Accepted);
                out.push(Out::Log(format!("dm_xcaps() host {host}: datagrams authenticated")));
            }
        } else if theirs != 0 {
            out.push(Out::Log(format!(
                "dm_xcaps() host {host}: different datagram key; link not authenticated"
            )));
        }
        id
    }
}

#[cfg(test)]
mod tests {
    use super::parse_peer_timeout;
    use std::time::Duration;

    #[test]
    fn smaller_datagrams_get_a_wider_window_for_as_many_bytes_in_flight() {
        use super::{window_offer, XCAPS_WINDOW};
        assert_eq!(window_offer(None), XCAPS_WINDOW);
        assert_eq!(window_offer(Some(4080)), XCAPS_WINDOW);
        assert_eq!(window_offer(Some(1472)), 88); // 32 x 4080 / 1472 = 88.7
        assert_eq!(window_offer(Some(49)), 128, "bounded");
        assert_eq!(window_offer(Some(9000)), XCAPS_WINDOW, "never below the usual");
    }

    #[test]
    fn peer_timeout_defaults_to_ten_seconds_and_zero_turns_it_off() {
        assert_eq!(parse_peer_timeout(None), Some(Duration::from_secs(10)));
        assert_eq!(parse_peer_timeout(Some("0")), None);
        assert_eq!(parse_peer_timeout(Some("2.5")), Some(Duration::from_millis(2500)));
        assert_eq!(parse_peer_timeout(Some("0.2")), Some(Duration::from_secs(1)));
        assert_eq!(parse_peer_timeout(Some("1e9")), Some(Duration::from_secs(3600)));
        for bad in ["", "x", "-3", "NaN", "inf"] {
            assert_eq!(parse_peer_timeout(Some(bad)), Some(Duration::from_secs(10)), "{bad:?}");
        }
    }
}
