//! Local access checks (hardening).
//!
//! The task socket is created with the process umask like the legacy one (`srwxr-xr-x`), so the
//! kernel already refuses other users' connect(). Sockets can still end up more open (a umask
//! of 0, a shared PVM_TMP, someone's chmod); this check makes the rule hold regardless: only
//! processes of the daemon's own user may talk to it. The authentication files of the connect
//! handshake (0600, owned by us) are the second line of defence.

/// Why a connection must be refused, or None if its peer runs as our user.
pub fn foreign_peer(stream: &tokio::net::UnixStream) -> Option<String> {
    let me = crate::sys::getuid();
    match stream.peer_cred() {
        Ok(c) if c.uid() == me => None,
        Ok(c) => Some(format!(
            "peer pid {} runs as uid {}, this pvmd as uid {me}",
            c.pid().map_or("?".to_string(), |p| p.to_string()),
            c.uid()
        )),
        Err(e) => Some(format!("can't read the peer's credentials: {e}")),
    }
}

/// Rate-limited log of dropped datagrams. Every drop names its source in the log (so an
/// operator sees who sends junk), but a flood must not turn into a flood of log lines: per
/// source the first [`DropLog::FIRST`] drops are logged, then every [`DropLog::EVERY`]th with
/// the running count. Sources are tracked up to [`DropLog::MAX_SOURCES`]; beyond that they
/// share one counter.
#[derive(Debug, Default)]
pub struct DropLog {
    counts: std::collections::HashMap<std::net::SocketAddrV4, u64>,
    others: u64,
}

impl DropLog {
    pub const FIRST: u64 = 5;
    pub const EVERY: u64 = 1000;
    pub const MAX_SOURCES: usize = 1024;

    /// Counts a drop from `from`; the log line to write, if this one is to be logged.
    pub fn note(&mut self, from: std::net::SocketAddrV4, why: &dyn std::fmt::Display) -> Option<String> {
        let n = if let Some(c) = self.counts.get_mut(&from) {
            *c += 1;
            *c
        } else if self.counts.len() < Self::MAX_SOURCES {
            self.counts.insert(from, 1);
            1
        } else {
            self.others += 1;
            return (self.others % Self::EVERY == 1).then(|| {
                format!(
                    "netinput() dropped from {from}: {why} ({} from untracked sources)",
                    self.others
                )
            });
        };
        (n <= Self::FIRST || n % Self::EVERY == 0).then(|| format!("netinput() dropped from {from}: {why} (#{n})"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_log_is_rate_limited_and_bounded() {
        let mut d = DropLog::default();
        let a: std::net::SocketAddrV4 = "10.0.0.9:1".parse().unwrap();
        let lines = (0..10_000).filter_map(|_| d.note(a, &"junk")).count();
        assert_eq!(lines as u64, DropLog::FIRST + 10);
        for p in 0..5000u16 {
            d.note(std::net::SocketAddrV4::new([10, 0, 1, 1].into(), p), &"x");
        }
        assert_eq!(d.counts.len(), DropLog::MAX_SOURCES);
        assert!(d.others > 0);
    }
}

/// Dead-peer detection from ICMP "port unreachable" (hardening).
///
/// The legacy daemon ignores ICMP errors and needs about three minutes of retransmissions to
/// declare a killed pvmd dead; tasks asking about the machine meanwhile hang. When a peer's
/// host is up but nothing listens on its port any more, the kernel answers every retransmission
/// with port unreachable. A host is declared dead after [`Unreachable::COUNT`] of them spread
/// over at least [`Unreachable::SPAN`] with no datagram from it in between, so that one stray
/// (or forged) ICMP message is not enough.
#[derive(Debug, Default)]
pub struct Unreachable {
    /// Per address: (first report, reports since).
    seen: std::collections::HashMap<std::net::SocketAddrV4, (std::time::Instant, u32)>,
}

impl Unreachable {
    pub const COUNT: u32 = 3;
    pub const SPAN: std::time::Duration = std::time::Duration::from_secs(2);
    const MAX_ADDRS: usize = 4096;

    /// A port-unreachable report for `addr` at `now`; true when the peer should be declared dead.
    pub fn report(&mut self, addr: std::net::SocketAddrV4, now: std::time::Instant) -> bool {
        if self.seen.len() >= Self::MAX_ADDRS && !self.seen.contains_key(&addr) {
            self.seen.clear();
        }
        let e = self.seen.entry(addr).or_insert((now, 0));
        e.1 += 1;
        if e.1 >= Self::COUNT && now.duration_since(e.0) >= Self::SPAN {
            self.seen.remove(&addr);
            return true;
        }
        false
    }

    /// Something arrived from `addr`: it is alive.
    pub fn heard(&mut self, addr: std::net::SocketAddrV4) {
        if !self.seen.is_empty() {
            self.seen.remove(&addr);
        }
    }
}

#[cfg(test)]
mod unreachable_tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn needs_several_reports_over_time_without_traffic() {
        let a: std::net::SocketAddrV4 = "10.0.0.2:5000".parse().unwrap();
        let t = Instant::now();
        let mut u = Unreachable::default();
        assert!(!u.report(a, t));
        assert!(!u.report(a, t + Duration::from_millis(100)));
        assert!(
            !u.report(a, t + Duration::from_millis(200)),
            "3 reports but within 0.2 s"
        );
        u.heard(a);
        assert!(!u.report(a, t + Duration::from_secs(3)), "traffic reset the count");
        assert!(!u.report(a, t + Duration::from_secs(4)));
        assert!(u.report(a, t + Duration::from_secs(5)));
    }
}

/// How long a new connection may take to complete TM_CONNECT/TM_CONN2 before it is dropped, so
/// that clients which connect and then say nothing (or half a frame) cannot pile up. libpvm
/// finishes the handshake in milliseconds. `PVMD_HANDSHAKE_TIMEOUT` (seconds) overrides the
/// default of 30 s (tests use a short one).
pub fn handshake_timeout() -> std::time::Duration {
    let secs = std::env::var("PVMD_HANDSHAKE_TIMEOUT")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|s| *s > 0)
        .unwrap_or(30);
    std::time::Duration::from_secs(secs)
}
