//! The analyser: turns captured packets into one line per PVM fragment and per message.
//!
//! # Which flows are PVM
//! UDP datagrams are decoded as pvmd<->pvmd traffic (DDFRAGHDR, wire.md §5.2) when
//! 1. `all_udp` is set, or
//! 2. either port is in `udp_ports`, or
//! 3. (unless `no_guess`) the payload has the shape of a DDFRAGHDR datagram: header bytes 13..16
//!    zero, only the five defined flag bits set, a non-zero and non-multicast source tid, and a
//!    length that fits the flags (ACK, FIN and FIN|ACK are exactly 16 bytes; a SOM datagram holds
//!    at least the 32-byte message header; none exceeds 4080 bytes). A flow (address pair) found
//!    this way stays PVM for the rest of the capture.
//!
//! TCP connections are decoded as task<->task direct routes (TDFRAGHDR stream, wire.md §4.4)
//! when
//! 1. either port is in `tcp_ports`, or
//! 2. either endpoint was announced in a TC_CONREQ or TC_CONACK seen earlier in the capture, or
//! 3. (unless `no_guess`) the first bytes after the SYN look like a first fragment: bytes 13..16
//!    zero, flags SOM or SOM|EOM, a length between 32 and `max_frag_len`.
//!
//! # Reassembly
//! IP fragments are joined first ([`crate::ip::Defrag`]). Datagrams carrying data are
//! de-duplicated per direction by their DD sequence number (retransmissions are printed and
//! marked, not fed on). TCP is reassembled per direction ([`crate::transport::TcpReassembler`])
//! and then cut into fragments. Messages are reassembled per (direction, source tid), as the
//! legacy code does, and printed once the EOM fragment arrives.

use crate::capture::{CaptureError, Link, Packet};
use crate::check;
use crate::decode;
use crate::ip::{self, DefragLimits, Defragged};
use crate::link::{self, LinkResult};
use crate::transport::{self, Chunk, TcpReassembler};
use pvm_proto::codes::{Tag, UDPMAXLEN};
use pvm_proto::frag::{DatagramHeader, FragFlags, StreamFragHeader, HEADER_LEN as FRAG_LEN};
use pvm_proto::mesg::{MsgHeader, HEADER_LEN as MSG_LEN, UNINITIALISED};
use pvm_proto::Tid;
use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddrV4};

#[derive(Debug, Clone)]
pub struct Config {
    pub udp_ports: Vec<u16>,
    pub tcp_ports: Vec<u16>,
    /// Every UDP datagram is PVM.
    pub all_udp: bool,
    /// Only ports (and learned direct-route endpoints) decide; no content sniffing.
    pub no_guess: bool,
    /// Re-encode fragment and message headers and every decoded body, and report differing
    /// bytes (legacy's uninitialised header bytes and XDR pads excepted).
    pub check: bool,
    pub defrag: DefragLimits,
    /// Largest message kept while reassembling.
    pub max_message: usize,
    /// Most messages reassembled at once.
    pub max_partial: usize,
    /// Most body bytes held by all messages in reassembly together.
    pub max_partial_bytes: usize,
    /// Most UDP directions and TCP connections tracked.
    pub max_flows: usize,
    /// Out-of-order TCP bytes held per direction before a gap is declared. With `max_flows`
    /// and `max_frag_len` this bounds TCP memory: about `2 * max_flows * (max_tcp_held +
    /// max_frag_len)` in the worst case, which the defaults keep near 1 GiB only for a capture
    /// built to hit it; ordinary captures hold a few fragments.
    pub max_tcp_held: usize,
    /// Largest stream fragment length accepted.
    pub max_frag_len: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            udp_ports: Vec::new(),
            tcp_ports: Vec::new(),
            all_udp: false,
            no_guess: false,
            check: false,
            defrag: DefragLimits::default(),
            max_message: 16 << 20,
            max_partial: 1024,
            max_partial_bytes: 64 << 20,
            max_flows: 1024,
            max_tcp_held: 256 << 10,
            max_frag_len: 1 << 20,
        }
    }
}

/// Counters for the summary and the exit status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub packets: u64,
    pub fragments: u64,
    pub messages: u64,
    pub retransmissions: u64,
    /// Malformed or truncated input (packets, records, fragments, gaps).
    pub errors: u64,
    /// `--check` differences.
    pub check_diffs: u64,
}

type Dir = (SocketAddrV4, SocketAddrV4);

/// `--check` lines shown per compared unit: a body re-encoded at the wrong length differs in
/// every byte after the first mistake, and one line per byte of a 6 kB body helps nobody.
const MAX_CHECK_LINES: usize = 16;

const NO_ADDR: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0);

struct Partial {
    header: MsgHeader,
    dst: Tid,
    body: Vec<u8>,
    frags: u32,
    first_packet: u64,
    /// Set when the message outgrew `max_message`: the rest is skipped until EOM.
    overflow: bool,
}

#[derive(Default)]
struct Framer {
    buf: Vec<u8>,
    /// After a gap: the next fragment boundary is unknown.
    lost: bool,
}

struct TcpDir {
    reasm: TcpReassembler,
    framer: Framer,
}

struct TcpConn {
    /// `None` until the first data decides; `Some(false)`: not PVM, ignored.
    pvm: Option<bool>,
    dirs: [TcpDir; 2],
}

/// Context of the packet being processed, for line prefixes.
#[derive(Clone, Copy)]
struct Here {
    number: u64,
    ts_ns: u64,
}

pub struct Analyser {
    cfg: Config,
    defrag: ip::Defrag,
    /// Next expected DD sequence number per direction.
    dd_seq: HashMap<Dir, u16>,
    pvm_udp: HashSet<Dir>,
    tcp: HashMap<Dir, TcpConn>,
    learned: HashSet<SocketAddrV4>,
    partial: HashMap<(Dir, Tid), Partial>,
    partial_bytes: usize,
    flows_full_noted: bool,
    here: Here,
    lines: Vec<String>,
    stats: Stats,
}

fn ts(ns: u64) -> String {
    if ns == 0 {
        "-".to_string()
    } else {
        format!("{}.{:06}", ns / 1_000_000_000, (ns % 1_000_000_000) / 1000)
    }
}

/// Flags as names, `SOM|EOM|DAT`; unknown bits in hex.
pub fn flag_names(f: FragFlags) -> String {
    let mut names: Vec<String> = [
        (FragFlags::SOM, "SOM"),
        (FragFlags::EOM, "EOM"),
        (FragFlags::DAT, "DAT"),
        (FragFlags::FIN, "FIN"),
        (FragFlags::ACK, "ACK"),
    ]
    .iter()
    .filter(|(b, _)| f.contains(*b))
    .map(|(_, n)| n.to_string())
    .collect();
    let rest = f.bits() & !0x1f;
    if rest != 0 {
        names.push(format!("{rest:#04x}"));
    }
    if names.is_empty() {
        "-".to_string()
    } else {
        names.join("|")
    }
}

fn header_summary(h: &MsgHeader) -> String {
    let name = match Tag::classify(h.tag, h.ctx) {
        Tag::User(t) => format!("tag={t}"),
        other => other.name(),
    };
    format!(
        "{} ctx={:#x} wid={:#x} enc={}",
        name,
        h.ctx,
        h.wid,
        decode::enc_name(h.enc)
    )
}

/// Whether `p` has the shape of a pvmd datagram (see the module docs).
pub fn looks_like_datagram(p: &[u8]) -> bool {
    let Ok(h) = DatagramHeader::parse(p) else { return false };
    if p[13..16] != [0, 0, 0] || h.flags.bits() & !0x1f != 0 || h.flags.is_empty() {
        return false;
    }
    if h.src.0 == 0 || h.src.is_multicast() || p.len() > UDPMAXLEN {
        return false;
    }
    let f = h.flags;
    if f.contains(FragFlags::DAT) {
        !f.contains(FragFlags::FIN) && (!f.contains(FragFlags::SOM) || p.len() >= FRAG_LEN + MSG_LEN)
    } else {
        // ACK, FIN, FIN|ACK: header only, and no message flags.
        p.len() == FRAG_LEN && !f.intersects(FragFlags::SOM | FragFlags::EOM)
    }
}

/// Whether `p` starts with a plausible first stream fragment.
pub fn looks_like_stream_start(p: &[u8], max_len: u32) -> bool {
    match StreamFragHeader::parse(p, max_len) {
        Ok(h) => {
            p[13..16] == [0, 0, 0]
                && (h.flags == FragFlags::SOM || h.flags == FragFlags::SOM | FragFlags::EOM)
                && h.len as usize >= MSG_LEN
        }
        Err(_) => false,
    }
}

impl Analyser {
    pub fn new(cfg: Config) -> Self {
        Analyser {
            defrag: ip::Defrag::new(cfg.defrag),
            cfg,
            dd_seq: HashMap::new(),
            pvm_udp: HashSet::new(),
            tcp: HashMap::new(),
            learned: HashSet::new(),
            partial: HashMap::new(),
            partial_bytes: 0,
            flows_full_noted: false,
            here: Here { number: 0, ts_ns: 0 },
            lines: Vec::new(),
            stats: Stats::default(),
        }
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Lines produced since the last call.
    pub fn take_lines(&mut self) -> Vec<String> {
        std::mem::take(&mut self.lines)
    }

    fn emit(&mut self, text: String) {
        self.lines
            .push(format!("#{} {} {}", self.here.number, ts(self.here.ts_ns), text));
    }

    fn error(&mut self, text: String) {
        self.stats.errors += 1;
        self.emit(format!("ERROR {text}"));
    }

    fn note(&mut self, text: String) {
        self.emit(format!("NOTE {text}"));
    }

    fn notes(&mut self, notes: Vec<String>, are_errors: bool) {
        for n in notes {
            if are_errors {
                self.error(n);
            } else {
                self.note(n);
            }
        }
    }

    /// A record the capture reader could not use.
    pub fn capture_error(&mut self, e: &CaptureError) {
        self.stats.errors += 1;
        self.lines.push(format!("ERROR {e}"));
    }

    pub fn packet(&mut self, p: &Packet<'_>) {
        self.stats.packets += 1;
        self.here = Here {
            number: p.number,
            ts_ns: p.ts_ns,
        };
        match p.link {
            Link::HexDatagram => {
                let (s, d) = p.label.and_then(label_addrs).unwrap_or((NO_ADDR, NO_ADDR));
                self.datagram((s, d), p.data, false);
            }
            Link::HexStream => {
                if let Some(n) = self.checked_stream_fragment(p.data, 0) {
                    self.stream_fragment((NO_ADDR, NO_ADDR), &p.data[..n]);
                    if p.data.len() > n {
                        self.error(format!(
                            "{} bytes after the fragment's end (byte {n})",
                            p.data.len() - n
                        ));
                    }
                }
            }
            Link::Pcap(lt) => {
                if p.orig_len > p.data.len() {
                    self.note(format!(
                        "frame cut at {} of {} bytes by the snap length",
                        p.data.len(),
                        p.orig_len
                    ));
                }
                match link::ipv4_payload(lt, p.data) {
                    LinkResult::Ipv4(b) => self.ipv4(b, p.data.len() - b.len()),
                    LinkResult::Other => {}
                    LinkResult::Error(e) => self.error(format!("{e} (byte 0 of the frame)")),
                }
            }
        }
    }

    fn ipv4(&mut self, b: &[u8], at: usize) {
        let pkt = match ip::parse(b) {
            Ok(p) => p,
            Err(e) => return self.error(format!("{e} (IP header at byte {at} of the frame)")),
        };
        if pkt.proto != ip::PROTO_UDP && pkt.proto != ip::PROTO_TCP {
            return;
        }
        let mut notes = Vec::new();
        let whole = self.defrag.push(self.here.ts_ns, self.here.number, &pkt, &mut notes);
        self.notes(notes, true);
        let Defragged::Complete(payload) = whole else { return };
        let (src, dst) = (pkt.src, pkt.dst);
        if pkt.proto == ip::PROTO_UDP {
            match transport::parse_udp(&payload) {
                Ok(u) => {
                    let dir = (SocketAddrV4::new(src, u.src_port), SocketAddrV4::new(dst, u.dst_port));
                    if self.udp_is_pvm(dir, u.payload) {
                        self.datagram(dir, u.payload, true);
                    }
                }
                Err(e) => self.error(format!("{e} ({src} > {dst})")),
            }
        } else {
            match transport::parse_tcp(&payload) {
                Ok(t) => {
                    let dir = (SocketAddrV4::new(src, t.src_port), SocketAddrV4::new(dst, t.dst_port));
                    self.tcp_segment(dir, &t);
                }
                Err(e) => self.error(format!("{e} ({src} > {dst})")),
            }
        }
    }

    fn flows_full(&mut self, n: usize) -> bool {
        if n < self.cfg.max_flows {
            return false;
        }
        if !self.flows_full_noted {
            self.flows_full_noted = true;
            self.note(format!(
                "flow table full ({} flows): new flows are not decoded",
                self.cfg.max_flows
            ));
        }
        true
    }

    fn udp_is_pvm(&mut self, dir: Dir, payload: &[u8]) -> bool {
        let rev = (dir.1, dir.0);
        if self.cfg.all_udp || self.pvm_udp.contains(&dir) || self.pvm_udp.contains(&rev) {
            return true;
        }
        let by_port = [dir.0.port(), dir.1.port()]
            .iter()
            .any(|p| self.cfg.udp_ports.contains(p));
        if by_port || (!self.cfg.no_guess && looks_like_datagram(payload)) {
            if !self.flows_full(self.pvm_udp.len()) {
                self.pvm_udp.insert(dir);
            }
            return true;
        }
        false
    }

    fn datagram(&mut self, dir: Dir, p: &[u8], track_seq: bool) {
        let h = match DatagramHeader::parse(p) {
            Ok(h) => h,
            Err(e) => return self.error(format!("{} > {} DD {e} (UDP payload)", dir.0, dir.1)),
        };
        self.stats.fragments += 1;
        let data = &p[FRAG_LEN..];
        let mut line = format!("{} > {} DD {} > {} {}", dir.0, dir.1, h.src, h.dst, flag_names(h.flags));
        if h.flags.intersects(FragFlags::DAT | FragFlags::FIN) {
            line.push_str(&format!(" seq={}", h.seq));
        }
        if h.flags.contains(FragFlags::ACK) {
            line.push_str(&format!(" ack={}", h.ack));
        }
        line.push_str(&format!(" len={}", data.len()));
        let som = h.flags.contains(FragFlags::SOM);
        if som {
            if let Ok(mh) = MsgHeader::parse(data) {
                line.push_str(&format!(" {}", header_summary(&mh)));
            }
        }
        // Sequence tracking: legacy pvmds deliver strictly in order, one message at a time.
        let mut retransmitted = false;
        // DAT and FIN consume a sequence number; FIN|ACK (seq 0) and ACK do not (wire.md §5.3).
        let sequenced =
            h.flags.contains(FragFlags::DAT) || h.flags & (FragFlags::FIN | FragFlags::ACK) == FragFlags::FIN;
        if track_seq && sequenced {
            match self.dd_seq.get(&dir).copied() {
                Some(next) if h.seq != next => {
                    let behind = next.wrapping_sub(h.seq);
                    if behind != 0 && behind < 0x8000 {
                        retransmitted = true;
                    } else {
                        let missing = h.seq.wrapping_sub(next);
                        self.note(format!(
                            "{} > {} DD sequence jumps from {next} to {}: {missing} datagrams not captured",
                            dir.0, dir.1, h.seq
                        ));
                        self.dd_seq.insert(dir, h.seq.wrapping_add(1));
                    }
                }
                Some(_) => {
                    self.dd_seq.insert(dir, h.seq.wrapping_add(1));
                }
                None => {
                    if !self.flows_full(self.dd_seq.len()) {
                        self.dd_seq.insert(dir, h.seq.wrapping_add(1));
                    }
                }
            }
        }
        if retransmitted {
            self.stats.retransmissions += 1;
            line.push_str(" (retransmission)");
        }
        self.emit(line);
        if self.cfg.check {
            let re = h.to_bytes();
            self.check_bytes("datagram header", &p[..FRAG_LEN], &re, &[]);
        }
        if retransmitted || !h.flags.contains(FragFlags::DAT) {
            return;
        }
        self.message_fragment(dir, h.src, h.dst, h.flags, data, FRAG_LEN);
    }

    /// Reports every differing byte (one line each, up to [`MAX_CHECK_LINES`] per unit, then a
    /// count); all of them count towards [`Stats::check_diffs`].
    fn check_bytes(&mut self, what: &str, captured: &[u8], reencoded: &[u8], masked: &[std::ops::Range<usize>]) {
        let diffs = check::compare(captured, reencoded, masked);
        self.stats.check_diffs += diffs.len() as u64;
        for d in diffs.iter().take(MAX_CHECK_LINES) {
            self.emit(format!("CHECK {what} {d}"));
        }
        if diffs.len() > MAX_CHECK_LINES {
            self.emit(format!(
                "CHECK {what}: {} more differing bytes not shown",
                diffs.len() - MAX_CHECK_LINES
            ));
        }
    }

    /// One fragment's payload (after the 16-byte header); `at` is its offset in the unit it came
    /// from, for error messages.
    fn message_fragment(&mut self, dir: Dir, src: Tid, dst: Tid, flags: FragFlags, data: &[u8], at: usize) {
        let key = (dir, src);
        let som = flags.contains(FragFlags::SOM);
        let eom = flags.contains(FragFlags::EOM);
        let body = if som {
            let mh = match MsgHeader::parse(data) {
                Ok(mh) => mh,
                Err(e) => return self.error(format!("{src} > {dst} {}", e.shifted(at))),
            };
            if self.cfg.check {
                let re = mh.to_bytes();
                self.check_bytes("message header", &data[..MSG_LEN], &re, &UNINITIALISED);
            }
            if let Some(old) = self.take_partial(&key) {
                self.error(format!(
                    "{src} > {dst} message {} (from packet {}) abandoned after {} fragments: new message started",
                    Tag::classify(old.header.tag, old.header.ctx).name(),
                    old.first_packet,
                    old.frags
                ));
            }
            if self.partial.len() >= self.cfg.max_partial {
                let oldest = self.partial.iter().min_by_key(|(_, p)| p.first_packet).map(|(k, _)| *k);
                if let Some(k) = oldest {
                    self.take_partial(&k);
                    self.error(format!(
                        "too many messages in reassembly ({}): dropped the oldest, from {}",
                        self.cfg.max_partial, k.1
                    ));
                }
            }
            self.partial.insert(
                key,
                Partial {
                    header: mh,
                    dst,
                    body: Vec::new(),
                    frags: 0,
                    first_packet: self.here.number,
                    overflow: false,
                },
            );
            &data[MSG_LEN..]
        } else {
            data
        };
        let Some(p) = self.partial.get_mut(&key) else {
            return self.error(format!(
                "{src} > {dst} continuation fragment ({}) without a start of message: skipped",
                flag_names(flags)
            ));
        };
        p.frags += 1;
        let too_long = p.body.len() + body.len() > self.cfg.max_message;
        let no_room = self.partial_bytes + body.len() > self.cfg.max_partial_bytes;
        if too_long || no_room {
            if !p.overflow {
                p.overflow = true;
                self.partial_bytes -= p.body.len();
                p.body = Vec::new();
                let why = if too_long {
                    format!("message longer than {} bytes", self.cfg.max_message)
                } else {
                    format!(
                        "messages in reassembly hold more than {} bytes",
                        self.cfg.max_partial_bytes
                    )
                };
                self.error(format!("{src} > {dst} {why}: body dropped"));
            }
        } else if !p.overflow {
            p.body.extend_from_slice(body);
            self.partial_bytes += body.len();
        }
        if eom {
            if let Some(p) = self.take_partial(&key) {
                self.complete_message(src, p);
            }
        }
    }

    fn take_partial(&mut self, key: &(Dir, Tid)) -> Option<Partial> {
        let p = self.partial.remove(key)?;
        self.partial_bytes -= p.body.len();
        Some(p)
    }

    fn complete_message(&mut self, src: Tid, p: Partial) {
        if p.overflow {
            return;
        }
        self.stats.messages += 1;
        let d = decode::decode(&p.header, src, p.dst, &p.body);
        let mut line = format!("MSG {} > {} {}", src, p.dst, header_summary(&p.header));
        if p.frags > 1 {
            line.push_str(&format!(" frags={}", p.frags));
        }
        line.push_str(&format!(" len={}", p.body.len()));
        if !d.text.is_empty() {
            line.push(' ');
            line.push_str(&d.text);
        }
        self.emit(line);
        let what = format!(
            "{} > {} {} body",
            src,
            p.dst,
            Tag::classify(p.header.tag, p.header.ctx).name()
        );
        match &d.body {
            Err(e) => self.error(format!("{what} (message from packet {}): {e}", p.first_packet)),
            Ok(_) if self.cfg.check => {
                if let Some((re, pads)) = d.reencoded() {
                    self.check_bytes(&what, &p.body, &re, &pads);
                }
            }
            Ok(_) => {}
        }
        if let Some(a) = d.direct_route_address() {
            if self.learned.len() < self.cfg.max_flows && self.learned.insert(a) {
                self.note(format!(
                    "direct route endpoint {a}: TCP to or from it is decoded as a task stream"
                ));
            }
        }
    }

    /// Checks that `b` starts with a whole stream fragment; returns its total length.
    fn checked_stream_fragment(&mut self, b: &[u8], at: usize) -> Option<usize> {
        match StreamFragHeader::parse(b, self.cfg.max_frag_len) {
            Ok(h) if b.len() >= FRAG_LEN + h.len as usize => Some(FRAG_LEN + h.len as usize),
            Ok(h) => {
                self.error(format!(
                    "stream fragment truncated: length {} at byte {}, {} bytes present",
                    h.len,
                    at + 8,
                    b.len() - FRAG_LEN
                ));
                None
            }
            Err(e) => {
                self.error(format!("{}", e.shifted(at)));
                None
            }
        }
    }

    /// One whole stream fragment, header included.
    fn stream_fragment(&mut self, dir: Dir, frag: &[u8]) {
        let h = match StreamFragHeader::parse(frag, u32::MAX) {
            Ok(h) => h,
            Err(e) => return self.error(format!("{e}")),
        };
        self.stats.fragments += 1;
        let data = &frag[FRAG_LEN..];
        let mut line = if dir == (NO_ADDR, NO_ADDR) {
            "TD".to_string()
        } else {
            format!("{} > {} TD", dir.0, dir.1)
        };
        line.push_str(&format!(" {} > {} {} len={}", h.src, h.dst, flag_names(h.flags), h.len));
        if h.flags.contains(FragFlags::SOM) {
            if let Ok(mh) = MsgHeader::parse(data) {
                line.push_str(&format!(" {}", header_summary(&mh)));
            }
        }
        self.emit(line);
        if self.cfg.check {
            let re = h.to_bytes();
            self.check_bytes("stream fragment header", &frag[..FRAG_LEN], &re, &[]);
        }
        self.message_fragment(dir, h.src, h.dst, h.flags, data, FRAG_LEN);
    }

    fn tcp_is_pvm(&self, dir: Dir, first: Option<&[u8]>) -> bool {
        let ports = [dir.0.port(), dir.1.port()];
        if ports.iter().any(|p| self.cfg.tcp_ports.contains(p)) {
            return true;
        }
        if self.learned.contains(&dir.0) || self.learned.contains(&dir.1) {
            return true;
        }
        match first {
            Some(b) if !self.cfg.no_guess => looks_like_stream_start(b, self.cfg.max_frag_len),
            _ => false,
        }
    }

    fn tcp_segment(&mut self, dir: Dir, seg: &transport::Tcp<'_>) {
        let (key, side) = if dir.0 <= dir.1 { (dir, 0) } else { ((dir.1, dir.0), 1) };
        // The connection is taken out of the table while it is worked on, so that the helpers
        // can borrow it and `self` (for output) at the same time.
        let mut conn = match self.tcp.remove(&key) {
            Some(c) => c,
            None if self.flows_full(self.tcp.len()) => return,
            None => {
                let held = self.cfg.max_tcp_held;
                let mk = || TcpDir {
                    reasm: TcpReassembler::new(held),
                    framer: Framer::default(),
                };
                TcpConn {
                    pvm: None,
                    dirs: [mk(), mk()],
                }
            }
        };
        if conn.pvm != Some(false) {
            let mut notes = Vec::new();
            let chunks = conn.dirs[side].reasm.push(seg, &mut notes);
            self.tcp_chunks(dir, &mut conn, side, chunks, notes);
        }
        if conn.dirs.iter().all(|d| d.reasm.closed) {
            self.close_tcp(key, conn);
        } else {
            self.tcp.insert(key, conn);
        }
    }

    fn tcp_chunks(&mut self, dir: Dir, conn: &mut TcpConn, side: usize, chunks: Vec<Chunk>, notes: Vec<String>) {
        if conn.pvm.is_none() {
            let Some(first) = chunks.iter().find_map(|c| match c {
                Chunk::Data(d) => Some(d.as_slice()),
                Chunk::Gap(_) => None,
            }) else {
                // Nothing to decide on yet (SYN, bare ACK, or only held data).
                return;
            };
            let mid = conn.dirs[side].reasm.mid_stream;
            let pvm = self.tcp_is_pvm(dir, if mid { None } else { Some(first) });
            conn.pvm = Some(pvm);
            if !pvm {
                // Free what was held; the connection is skipped from now on.
                conn.dirs = [0, 1].map(|_| TcpDir {
                    reasm: TcpReassembler::new(0),
                    framer: Framer::default(),
                });
                return;
            }
            if mid {
                self.note(format!(
                    "{} > {} TCP capture starts mid-stream: looking for a fragment start",
                    dir.0, dir.1
                ));
                conn.dirs[side].framer.lost = true;
            }
        }
        if conn.pvm != Some(true) {
            return;
        }
        for n in notes {
            if n.starts_with("TCP gap") {
                self.error(format!("{} > {} {n}", dir.0, dir.1));
            } else {
                if n.starts_with("TCP retrans") || n.starts_with("TCP segment partly") {
                    self.stats.retransmissions += 1;
                }
                self.note(format!("{} > {} {n}", dir.0, dir.1));
            }
        }
        for c in chunks {
            self.frame_stream(dir, &mut conn.dirs[side].framer, c);
        }
    }

    /// Cuts reassembled stream bytes into fragments.
    fn frame_stream(&mut self, dir: Dir, framer: &mut Framer, chunk: Chunk) {
        let d = match chunk {
            Chunk::Gap(_) => {
                if !framer.buf.is_empty() {
                    self.error(format!(
                        "{} > {} {} bytes of a stream fragment lost in a TCP gap",
                        dir.0,
                        dir.1,
                        framer.buf.len()
                    ));
                }
                framer.buf.clear();
                framer.lost = true;
                return;
            }
            Chunk::Data(d) => d,
        };
        framer.buf.extend_from_slice(&d);
        loop {
            if framer.lost {
                let max = self.cfg.max_frag_len;
                let found = (0..framer.buf.len().saturating_sub(FRAG_LEN - 1))
                    .find(|&i| looks_like_stream_start(&framer.buf[i..], max));
                match found {
                    Some(i) => {
                        if i > 0 {
                            self.note(format!(
                                "{} > {} skipped {i} bytes to the next fragment start",
                                dir.0, dir.1
                            ));
                        }
                        framer.buf.drain(..i);
                        framer.lost = false;
                    }
                    None => {
                        // Keep what could be the start of a header.
                        let keep = framer.buf.len().min(FRAG_LEN - 1);
                        framer.buf.drain(..framer.buf.len() - keep);
                        break;
                    }
                }
            }
            if framer.buf.len() < FRAG_LEN {
                break;
            }
            match StreamFragHeader::parse(&framer.buf, self.cfg.max_frag_len) {
                Ok(h) => {
                    let total = FRAG_LEN + h.len as usize;
                    if framer.buf.len() < total {
                        break;
                    }
                    let frag: Vec<u8> = framer.buf.drain(..total).collect();
                    self.stream_fragment(dir, &frag);
                }
                Err(e) => {
                    self.error(format!("{} > {} stream: {e}; resynchronising", dir.0, dir.1));
                    framer.lost = true;
                    framer.buf.drain(..1);
                }
            }
        }
    }

    /// Both directions closed, or end of capture: flush held data and report leftovers.
    fn close_tcp(&mut self, key: Dir, mut conn: TcpConn) {
        if conn.pvm == Some(false) {
            return;
        }
        for side in 0..2 {
            let dir = if side == 0 { key } else { (key.1, key.0) };
            let mut notes = Vec::new();
            let chunks = conn.dirs[side].reasm.finish(&mut notes);
            self.tcp_chunks(dir, &mut conn, side, chunks, notes);
            let left = conn.dirs[side].framer.buf.len();
            if conn.pvm == Some(true) && left > 0 && !conn.dirs[side].framer.lost {
                self.error(format!(
                    "{} > {} stream ends inside a fragment ({left} bytes left)",
                    dir.0, dir.1
                ));
            }
        }
    }

    /// End of capture: flush reassembly state and report what stayed incomplete.
    pub fn finish(&mut self) {
        let mut keys: Vec<Dir> = self.tcp.keys().copied().collect();
        keys.sort();
        for k in keys {
            if let Some(c) = self.tcp.remove(&k) {
                self.close_tcp(k, c);
            }
        }
        let mut notes = Vec::new();
        self.defrag.finish(&mut notes);
        self.notes(notes, true);
        let mut left: Vec<((Dir, Tid), u64, u32, String)> = self
            .partial
            .iter()
            .map(|(k, p)| {
                (
                    *k,
                    p.first_packet,
                    p.frags,
                    Tag::classify(p.header.tag, p.header.ctx).name(),
                )
            })
            .collect();
        left.sort_by_key(|l| l.1);
        for (k, first, frags, name) in left {
            self.error(format!(
                "{} message {name} from packet {first} incomplete at end of capture ({frags} fragments)",
                k.1
            ));
        }
        self.partial.clear();
        self.partial_bytes = 0;
    }
}

/// `a.b.c.d:p -> e.f.g.h:q` in a hex vector label.
fn label_addrs(label: &str) -> Option<Dir> {
    let words: Vec<&str> = label.split_whitespace().collect();
    let i = words.iter().position(|w| *w == "->")?;
    let src = words.get(i.checked_sub(1)?)?.parse().ok()?;
    let dst = words.get(i + 1)?.parse().ok()?;
    Some((src, dst))
}
