//! In-process driver of [`Daemon`] for hostile-input tests and fuzzing.
//!
//! The real shell (`server.rs`) needs sockets, a runtime and processes; fuzzing through it runs
//! a few hundred inputs a second. This driver does what the shell does with the daemon's
//! decisions (splits the stream into fragments with the same length caps as
//! [`crate::conn::FragReader`], applies `Out::Close`/`FragLimit`, drops a connection whose
//! queue passes [`crate::server::MAX_QUEUED`]) without any I/O, so a fuzzer can feed it
//! byte streams and datagrams by the hundred thousand and then check that two well-behaved
//! "bystander" tasks still get served.
//!
//! The daemon under test is a slave (host 2) whose master (host 1) is at [`MASTER_ADDR`]:
//! datagrams from that address reach the DM_ handlers, datagrams from anywhere else must be
//! dropped. Authentication files are faked (every handshake succeeds), which lets hostile
//! connections become connected tasks and reach the deeper request handlers.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddrV4;
use std::time::UNIX_EPOCH;

use pvm_proto::codes::{Dm, Tm, ENC_XDR, SYSCTX_TM, TDPROTOCOL};
use pvm_proto::frag::{DatagramHeader, FragFlags, StreamFragHeader, HEADER_LEN};
use pvm_proto::mesg::MsgHeader;
use pvm_proto::xdr::{XdrReader, XdrWriter};
use pvm_proto::Tid;

use crate::daemon::netd::{NetConfig, MTU};
use crate::daemon::{AuthFiles, ConnId, Daemon, HostConfig, Out, MAX_FRAG_UNCONNECTED};
use crate::hosts::{Host, HostTable};

/// UDP address of the fake master (a member host).
pub const MASTER_ADDR: &str = "10.0.0.1:4096";
/// Our own address (host 2).
pub const SLAVE_ADDR: &str = "10.0.0.2:5000";
/// A sender that is not a member of the machine.
pub const STRANGER_ADDR: &str = "10.0.0.9:4096";

/// Authentication files that always check out.
#[derive(Default)]
pub struct FakeAuth {
    n: u64,
}

impl AuthFiles for FakeAuth {
    fn write_task_auth(&mut self, _: &str) -> io::Result<()> {
        Ok(())
    }
    fn create_pvmd_auth(&mut self) -> io::Result<String> {
        self.n += 1;
        Ok(format!("/nonexistent/pvmtmp000002.{}", self.n))
    }
    fn pvmd_auth_written(&mut self, _: &str) -> io::Result<bool> {
        Ok(true)
    }
    fn remove(&mut self, _: &str) {}
}

/// What the shell keeps per connection.
#[derive(Default)]
struct ConnState {
    buf: Vec<u8>,
    limit: u32,
    /// Everything the daemon wrote to it (bystanders) or just its size (others).
    received: Vec<u8>,
    queued: usize,
    keep_bytes: bool,
}

/// The daemon plus a model of its shell.
pub struct Driver {
    pub daemon: Daemon<FakeAuth>,
    conns: BTreeMap<ConnId, ConnState>,
    next_conn: ConnId,
    /// Every log line the daemon produced, in order.
    pub logs: Vec<String>,
    /// The daemon decided to halt (a legitimate request can do that).
    pub halted: bool,
    /// Connections the daemon (or the queue cap) closed.
    pub closed: Vec<ConnId>,
    /// Most bytes the queue cap lets pile up for one connection.
    pub max_queued: usize,
}

fn addr(s: &str) -> SocketAddrV4 {
    s.parse().expect("constant address")
}

fn host(index: u32, a: &str) -> Host {
    Host {
        index,
        name: format!("h{index}"),
        arch: "LINUX64".into(),
        addr: addr(a),
        mtu: 4080,
        speed: 1000,
        dsig: 0x408c41,
    }
}

/// One whole message from a task to its pvmd, as a single fragment.
pub fn request_bytes(tag: i32, wid: i32, body: &[u8]) -> Vec<u8> {
    let mh = MsgHeader {
        enc: ENC_XDR,
        tag,
        ctx: SYSCTX_TM,
        wid,
        crc: 0,
    };
    let fh = StreamFragHeader {
        dst: Tid::LOCAL_PVMD,
        src: Tid::UNCONNECTED,
        len: (pvm_proto::codes::MSGHDR_LEN + body.len()) as u32,
        flags: FragFlags::SOM | FragFlags::EOM,
    };
    let mut v = fh.to_bytes().to_vec();
    v.extend_from_slice(&mh.to_bytes());
    v.extend_from_slice(body);
    v
}

/// One whole user message from a task to another task.
pub fn user_message(dst: Tid, tag: i32, body: &[u8]) -> Vec<u8> {
    let mh = MsgHeader {
        enc: ENC_XDR,
        tag,
        ctx: 0,
        wid: 0,
        crc: 0,
    };
    let fh = StreamFragHeader {
        dst,
        src: Tid::UNCONNECTED,
        len: (pvm_proto::codes::MSGHDR_LEN + body.len()) as u32,
        flags: FragFlags::SOM | FragFlags::EOM,
    };
    let mut v = fh.to_bytes().to_vec();
    v.extend_from_slice(&mh.to_bytes());
    v.extend_from_slice(body);
    v
}

impl Default for Driver {
    fn default() -> Self {
        Self::new()
    }
}

impl Driver {
    /// A slave daemon (host 2) of a machine whose master is at [`MASTER_ADDR`].
    pub fn new() -> Driver {
        let cfg = HostConfig {
            index: 2,
            ..HostConfig::master("h2", "LINUX64", "0a000002:1388")
        };
        let mut hosts = BTreeMap::new();
        hosts.insert(1, host(1, MASTER_ADDR));
        hosts.insert(2, host(2, SLAVE_ADDR));
        let mut daemon = Daemon::new(cfg, FakeAuth::default(), 0);
        daemon.enable_net(NetConfig {
            addr: addr(SLAVE_ADDR),
            table: HostTable {
                serial: 1,
                master: 1,
                console: 1,
                hosts,
            },
            mtu: MTU,
        });
        Driver {
            daemon,
            conns: BTreeMap::new(),
            next_conn: 1,
            logs: Vec::new(),
            halted: false,
            closed: Vec::new(),
            max_queued: crate::server::MAX_QUEUED,
        }
    }

    /// A lone master without a network (the mailbox and spawns are local).
    pub fn lone() -> Driver {
        let daemon = Daemon::new(
            HostConfig::master("h1", "LINUX64", "7f000001:1000"),
            FakeAuth::default(),
            0,
        );
        Driver {
            daemon,
            conns: BTreeMap::new(),
            next_conn: 1,
            logs: Vec::new(),
            halted: false,
            closed: Vec::new(),
            max_queued: crate::server::MAX_QUEUED,
        }
    }

    /// Sends a request from `conn` and returns the replies it got (message header, body).
    pub fn request(&mut self, conn: ConnId, tag: Tm, wid: i32, body: &[u8]) -> Vec<(MsgHeader, Vec<u8>)> {
        let keep = self.conns.get(&conn).map(|c| c.keep_bytes).unwrap_or(false);
        self.record(conn);
        let _ = self.take_received(conn);
        self.stream(conn, &request_bytes(tag.code(), wid, body));
        let got = self.take_received(conn);
        if let Some(s) = self.conns.get_mut(&conn) {
            s.keep_bytes = keep;
        }
        messages(&got).into_iter().map(|(_, h, b)| (h, b)).collect()
    }

    /// A new connection on the task socket.
    pub fn accept(&mut self) -> ConnId {
        let id = self.next_conn;
        self.next_conn += 1;
        self.conns.insert(
            id,
            ConnState {
                limit: MAX_FRAG_UNCONNECTED,
                ..Default::default()
            },
        );
        self.daemon.accept(id, Some(100_000 + id as i32));
        id
    }

    /// Keeps every byte sent to `conn` (for bystanders whose replies are checked).
    pub fn record(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.keep_bytes = true;
        }
    }

    pub fn is_open(&self, conn: ConnId) -> bool {
        self.conns.contains_key(&conn)
    }

    /// Open connections.
    pub fn nconns(&self) -> usize {
        self.conns.len()
    }

    /// Takes what the daemon wrote to `conn` so far.
    pub fn take_received(&mut self, conn: ConnId) -> Vec<u8> {
        self.conns
            .get_mut(&conn)
            .map(|c| std::mem::take(&mut c.received))
            .unwrap_or_default()
    }

    /// Bytes buffered inside the driver for unfinished fragments (what the real reader holds).
    pub fn buffered(&self) -> usize {
        self.conns.values().map(|c| c.buf.len()).sum()
    }

    /// Accepts a connection and does the connect handshake; returns it and the task's tid.
    pub fn connect_task(&mut self) -> (ConnId, Tid) {
        let c = self.accept();
        let tid = self.handshake(c).expect("handshake with fake auth files succeeds");
        (c, tid)
    }

    /// TM_CONNECT + TM_CONN2 on an accepted connection; the tid, if the daemon gave one.
    pub fn handshake(&mut self, c: ConnId) -> Option<Tid> {
        let keep = self.conns.get(&c)?.keep_bytes;
        self.record(c);
        let mut w = XdrWriter::new();
        w.int(TDPROTOCOL).string("/nonexistent/pvmtmp-task");
        self.stream(c, &request_bytes(Tm::Connect.code(), 1, &w.into_inner()));
        let mut w = XdrWriter::new();
        w.int(100_000 + c as i32).int(0);
        self.stream(c, &request_bytes(Tm::Conn2.code(), 2, &w.into_inner()));
        let got = self.take_received(c);
        if let Some(s) = self.conns.get_mut(&c) {
            s.keep_bytes = keep;
        }
        let reply = messages(&got).into_iter().find(|(_, h, _)| h.tag == Tm::Conn2.code())?;
        let mut r = XdrReader::new(&reply.2);
        if r.int("ack").ok()? != 1 {
            return None;
        }
        Some(Tid(r.int("tid").ok()?))
    }

    /// Bytes from a task on its socket, split into fragments as the shell's reader does.
    pub fn stream(&mut self, conn: ConnId, bytes: &[u8]) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.buf.extend_from_slice(bytes);
        loop {
            let Some(c) = self.conns.get_mut(&conn) else {
                return;
            };
            if c.buf.len() < HEADER_LEN {
                return;
            }
            let fh = match StreamFragHeader::parse(&c.buf, c.limit) {
                Ok(h) => h,
                Err(e) => {
                    self.logs
                        .push(format!("loclinput() connection {conn}: bad fragment: {e}; closing"));
                    self.drop_conn(conn);
                    return;
                }
            };
            let total = HEADER_LEN + fh.len as usize;
            if c.buf.len() < total {
                return;
            }
            let payload: Vec<u8> = c.buf[HEADER_LEN..total].to_vec();
            c.buf.drain(..total);
            let outs = self.daemon.fragment(conn, fh, &payload, UNIX_EPOCH);
            self.apply(outs);
        }
    }

    /// The task closed its socket.
    pub fn eof(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get(&conn) {
            if !c.buf.is_empty() {
                self.logs.push(format!(
                    "loclinput() connection {conn}: end of stream inside a fragment; closing"
                ));
            }
            self.drop_conn(conn);
        }
    }

    /// A datagram on the peer port.
    pub fn datagram(&mut self, from: SocketAddrV4, bytes: &[u8]) {
        let outs = self.daemon.net_datagram(from, bytes);
        self.apply(outs);
        self.drain_net();
    }

    /// The network timer fired (retransmissions, keep-alives, timeouts).
    pub fn tick(&mut self) {
        let outs = self.daemon.net_timeout();
        self.apply(outs);
        self.drain_net();
    }

    /// Datagrams the daemon wants to send go nowhere (the master is imaginary); bounded.
    fn drain_net(&mut self) {
        for _ in 0..10_000 {
            if self.daemon.net_transmit().is_none() {
                return;
            }
        }
    }

    fn drop_conn(&mut self, conn: ConnId) {
        if self.conns.remove(&conn).is_some() {
            self.closed.push(conn);
            let outs = self.daemon.closed(conn);
            self.apply(outs);
        }
    }

    fn apply(&mut self, outs: Vec<Out>) {
        let mut close = Vec::new();
        for o in outs {
            match o {
                Out::Send(id, b) => {
                    let Some(c) = self.conns.get_mut(&id) else { continue };
                    c.queued += b.len();
                    if c.keep_bytes {
                        c.received.extend_from_slice(&b);
                    }
                    if c.queued > self.max_queued {
                        self.logs.push(format!(
                            "locloutput() connection {id} is not reading ({} bytes queued); closing",
                            c.queued
                        ));
                        close.push(id);
                    }
                }
                // Everything the task wrote has been handed in already: its end comes next.
                Out::Close(id) | Out::Drain(id) => close.push(id),
                Out::FragLimit(id, n) => {
                    if let Some(c) = self.conns.get_mut(&id) {
                        c.limit = n;
                    }
                }
                Out::Log(l) => self.logs.push(l),
                Out::Halt => self.halted = true,
                Out::Signal(..) | Out::Gate(..) => {}
            }
        }
        for id in close {
            self.drop_conn(id);
        }
    }

    /// A task "reads" what was queued for it: resets its queue counter.
    pub fn drain(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.queued = 0;
        }
    }

    /// Does the daemon still serve `conn` (a connected task)? Sends TM_CONFIG and looks for
    /// the reply.
    pub fn serves(&mut self, conn: ConnId) -> bool {
        if !self.is_open(conn) {
            return false;
        }
        let keep = self.conns[&conn].keep_bytes;
        self.record(conn);
        let _ = self.take_received(conn);
        self.stream(conn, &request_bytes(Tm::Config.code(), 77, &[]));
        let got = self.take_received(conn);
        if let Some(s) = self.conns.get_mut(&conn) {
            s.keep_bytes = keep;
        }
        messages(&got)
            .iter()
            .any(|(_, h, _)| h.tag == Tm::Config.code() && h.wid == 77)
    }

    /// Does a user message from `a` reach `b` (both connected tasks on this host)?
    pub fn relays(&mut self, a: ConnId, b: ConnId, tid_b: Tid) -> bool {
        if !self.is_open(a) || !self.is_open(b) {
            return false;
        }
        let keep = self.conns[&b].keep_bytes;
        self.record(b);
        let _ = self.take_received(b);
        let body = b"bystander check".to_vec();
        self.stream(a, &user_message(tid_b, 4242, &body));
        let got = self.take_received(b);
        if let Some(s) = self.conns.get_mut(&b) {
            s.keep_bytes = keep;
        }
        messages(&got).iter().any(|(_, h, p)| h.tag == 4242 && *p == body)
    }
}

/// Whole single-fragment messages in a byte stream from the daemon: (frag header, message
/// header, body). Stops at the first incomplete or multi-fragment piece.
pub fn messages(mut b: &[u8]) -> Vec<(StreamFragHeader, MsgHeader, Vec<u8>)> {
    let mut v = Vec::new();
    while let Ok(fh) = StreamFragHeader::parse(b, u32::MAX) {
        let total = HEADER_LEN + fh.len as usize;
        if b.len() < total {
            break;
        }
        let p = &b[HEADER_LEN..total];
        if fh.flags.contains(FragFlags::SOM) {
            if let Ok(mh) = MsgHeader::parse(p) {
                v.push((fh, mh, p[pvm_proto::codes::MSGHDR_LEN..].to_vec()));
            }
        }
        b = &b[total..];
    }
    v
}

/// Reads a fuzz input as a script of operations on a [`Driver`] with two bystander tasks, then
/// checks the invariants: the bystanders are still connected, served and able to exchange a
/// message (unless the script legitimately halted the daemon), and the driver holds no more
/// than a bounded number of bytes. Panics when an invariant breaks (what a fuzzer reports).
///
/// Script: one opcode byte, then its operands; every read past the end yields zeros.
/// - 0: accept a new hostile connection (at most 16)
/// - 1 k n(2) data: `n` (≤ 8192) raw bytes to hostile connection `k`
/// - 2 k: hostile connection `k` closes
/// - 3 n(2) data: raw datagram from the master's address
/// - 4 n(2) data: raw datagram from a non-member address
/// - 5 k t(1) n(2) body: a well-formed request with TM code `t` (index into the TM codes)
/// - 6 k: hostile connection `k` does the connect handshake
/// - 7: network timer
/// - 8 seq(2) ack(2) fl(1) t(1) n(2) body: a well-formed datagram from the master, DM code `t`
/// - 9 k d(4) n(2) data: a well-formed user message from `k` to tid `d` (or a bystander)
pub fn run_script(input: &[u8]) -> ScriptStats {
    let mut s = Script { b: input, i: 0 };
    let mut d = Driver::new();
    let (a, _ta) = d.connect_task();
    let (b, tb) = d.connect_task();
    let mut hostile: Vec<ConnId> = vec![d.accept()];
    let mut stats = ScriptStats::default();
    let mut peak = 0usize;
    while s.i < s.b.len() && !d.halted {
        stats.ops += 1;
        let pick = |s: &mut Script, h: &Vec<ConnId>| h[s.u8() as usize % h.len()];
        match s.u8() % 10 {
            0 => {
                if hostile.len() < 16 {
                    hostile.push(d.accept());
                }
            }
            1 => {
                let k = pick(&mut s, &hostile);
                let n = s.u16() as usize % 8193;
                let data = s.take(n).to_vec();
                d.stream(k, &data);
            }
            2 => {
                let k = pick(&mut s, &hostile);
                d.eof(k);
            }
            3 => {
                let n = s.u16() as usize;
                let data = s.take(n).to_vec();
                d.datagram(addr(MASTER_ADDR), &data);
                stats.datagrams += 1;
            }
            4 => {
                let n = s.u16() as usize;
                let data = s.take(n).to_vec();
                d.datagram(addr(STRANGER_ADDR), &data);
                stats.datagrams += 1;
            }
            5 => {
                let k = pick(&mut s, &hostile);
                let t = Tm::ALL[s.u8() as usize % Tm::ALL.len()];
                let n = s.u16() as usize % 4097;
                let body = s.take(n).to_vec();
                // Halting is every task's right; it would end the run without telling anything.
                if t != Tm::Halt {
                    d.stream(k, &request_bytes(t.code(), s.u8() as i32, &body));
                }
            }
            6 => {
                let k = pick(&mut s, &hostile);
                if d.is_open(k) {
                    d.handshake(k);
                }
            }
            7 => d.tick(),
            8 => {
                let seq = s.u16();
                let ack = s.u16();
                let fl = s.u8();
                let t = Dm::ALL[s.u8() as usize % Dm::ALL.len()];
                let n = s.u16() as usize % 4080;
                let body = s.take(n).to_vec();
                let dh = DatagramHeader {
                    dst: Tid::pvmd(2),
                    src: Tid::pvmd(1),
                    seq,
                    ack,
                    flags: FragFlags::from_bits_retain(fl),
                };
                let mh = MsgHeader {
                    enc: ENC_XDR,
                    tag: t.code(),
                    ctx: 0,
                    wid: 0,
                    crc: 0,
                };
                let mut v = dh.to_bytes().to_vec();
                v.extend_from_slice(&mh.to_bytes());
                v.extend_from_slice(&body);
                d.datagram(addr(MASTER_ADDR), &v);
                stats.datagrams += 1;
            }
            _ => {
                let k = pick(&mut s, &hostile);
                let raw = s.u32();
                let dst = if raw & 1 == 0 { tb } else { Tid(raw as i32) };
                let n = s.u16() as usize % 4097;
                let body = s.take(n).to_vec();
                d.stream(k, &user_message(dst, (raw >> 8) as i32 & 0x7fff, &body));
            }
        }
        // A bystander reads what it is sent (so only hostile connections can fill queues).
        d.drain(a);
        d.drain(b);
        let _ = d.take_received(a);
        let _ = d.take_received(b);
        peak = peak.max(d.buffered());
    }
    stats.closed = d.closed.len();
    stats.peak_buffered = peak;
    stats.halted = d.halted;
    // The driver holds at most one unfinished fragment per connection, each below the cap.
    let bound = d.nconns() * (HEADER_LEN + crate::daemon::MAX_FRAG_CONNECTED as usize);
    assert!(peak <= bound.max(1 << 20), "driver buffered {peak} bytes");
    if d.halted {
        return stats;
    }
    // A master-side datagram can legitimately delete this host (DM_HTDEL of ourselves); the
    // bystanders are then gone with the daemon, which the halt check above covers. Anything
    // else must leave them untouched.
    assert!(
        d.is_open(a) && d.is_open(b),
        "a bystander was disconnected; logs: {:?}",
        tail(&d.logs)
    );
    assert!(d.serves(a), "bystander a no longer answered; logs: {:?}", tail(&d.logs));
    assert!(d.relays(a, b, tb), "message a->b lost; logs: {:?}", tail(&d.logs));
    stats
}

fn tail(l: &[String]) -> &[String] {
    &l[l.len().saturating_sub(10)..]
}

/// What a script did (for reports).
#[derive(Debug, Default, Clone, Copy)]
pub struct ScriptStats {
    pub ops: usize,
    pub datagrams: usize,
    pub closed: usize,
    pub peak_buffered: usize,
    pub halted: bool,
}

struct Script<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Script<'a> {
    fn u8(&mut self) -> u8 {
        let v = self.b.get(self.i).copied().unwrap_or(0);
        self.i += 1;
        v
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn take(&mut self, n: usize) -> &'a [u8] {
        let start = self.i.min(self.b.len());
        let end = (self.i + n).min(self.b.len());
        self.i += n;
        &self.b[start..end]
    }
}

/// A tiny deterministic generator (xorshift64*) for seeded random scripts in tests.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bystanders_are_served_and_relay() {
        let mut d = Driver::new();
        let (a, _) = d.connect_task();
        let (b, tb) = d.connect_task();
        assert!(d.serves(a));
        assert!(d.relays(a, b, tb));
        d.eof(b);
        assert!(!d.relays(a, b, tb), "a closed task cannot receive");
    }

    #[test]
    fn garbage_closes_only_the_sender() {
        let mut d = Driver::new();
        let (a, _) = d.connect_task();
        let (b, tb) = d.connect_task();
        let h = d.accept();
        d.stream(h, &Rng(7).bytes(4096));
        assert!(!d.is_open(h), "garbage with a huge length field is refused");
        assert!(
            d.logs.iter().any(|l| l.contains(&format!("connection {h}"))),
            "{:?}",
            d.logs
        );
        assert!(d.serves(a) && d.relays(a, b, tb));
    }

    #[test]
    fn random_scripts_keep_invariants() {
        let mut r = Rng(0x5eed);
        for _ in 0..200 {
            let n = (r.next_u64() % 3000) as usize;
            run_script(&r.bytes(n));
        }
    }
}
