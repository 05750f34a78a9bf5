//! The stream transport between two pvmd-rs daemons (docs/extensions.md, "DM_XSTREAM"): the
//! decisions, without sockets. The tokio side is `server/xstream.rs`.
//!
//! Why: the datagram link cuts every message into 4 KB datagrams, each acknowledged on its
//! own; even with the negotiated window that caps a pair of hosts at a few hundred MB/s. Two
//! pvmd-rs daemons that both offered a TCP port in DM_XCAPS (version 3) open one connection
//! (the lower host index connects) and carry the same fragments on it, whole, in frames of
//! [`FRAME_HDR_LEN`] bytes plus payload. A legacy peer never sees any of it: DM_XCAPS goes
//! only to peers that answered as pvmd-rs, and an old pvmd-rs reads no field past version 2.
//!
//! Order: per direction, everything sent to a host goes through [`Net::send_frag`]. The link
//! switches to the stream only once the datagram queue to that host is empty and acknowledged
//! (the peer has then delivered all of it), holding new sends meanwhile (`Switching`).
//!
//! Failure: frames carry a cumulative count of the frames received the other way (`ack`);
//! the sender keeps what is not acknowledged yet. When the stream breaks, each side stops
//! reading it, sends DM_XSTREAM "down" with the number of frames it took from it over the
//! datagram link (reliable and ordered), and holds new sends; on the peer's "down" it resends,
//! as datagrams, the frames the peer did not take, then what it held, and goes back to
//! datagrams (`Off`). Nothing is lost or delivered twice, and messages keep their order.
//!
//! Again: the connector tries a new stream after [`RETRY_FIRST`], doubling up to
//! [`RETRY_MAX`] and at most [`RETRY_ATTEMPTS`] times in a row (a stream that stayed up for
//! [`RETRY_RESET`] starts the count again), with a new generation and counts from zero. The
//! listener accepts it only for a link that is `Off` (its drain done), and both sides switch
//! over by the same rule as the first time (`Switching`: datagram queue empty and
//! acknowledged), so order holds across any number of fallbacks. A first connection that
//! fails is tried again the same way.
//!
//! A host that dies is still detected by the datagram link (keepalives and unreachable
//! reports), which deletes the host and with it what was held.

use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

use pvm_proto::ddp::{Event, Packet, SendError, Time};
use pvm_proto::frag::FragFlags;
use pvm_proto::mesg::{MsgHeader, HEADER_LEN as MSGHDR_LEN};
use pvm_proto::xdr::{XdrReader, XdrWriter};
use pvm_proto::Tid;

use super::netd::Net;
use super::{AuthFiles, Daemon, Out};

/// DM_XSTREAM: the stream control message that travels as a datagram message.
pub const XSTREAM_TAG: i32 = 0x8002_010bu32 as i32;
/// First int of a DM_XSTREAM body ("XSTR"): other extension codes' bodies never match it.
const NOTICE_MAGIC: i32 = 0x5853_5452;
const NOTICE_DOWN: i32 = 1;

/// Hello and hello-ack: `"PVMX" u32 version, u32 from host, u32 to host, u64 cookie`.
pub const HELLO_LEN: usize = 24;
const HELLO_MAGIC: [u8; 4] = *b"PVMX";
const STREAM_VERSION: u32 = 1;

/// Frame header, big-endian: `u8 kind, u8 flags, u16 0, u32 len, u32 src, u32 dst, u64 ack`.
pub const FRAME_HDR_LEN: usize = 24;
mod off {
    pub const KIND: usize = 0;
    pub const FLAGS: usize = 1;
    pub const RESERVED: usize = 2;
    pub const LEN: usize = 4;
    pub const SRC: usize = 8;
    pub const DST: usize = 12;
    pub const ACK: usize = 16;
}
/// Room a reader leaves before each payload: the task fragment header is written there, so a
/// frame for a local task is delivered without copying its payload.
pub const PAYLOAD_PREFIX: usize = pvm_proto::frag::HEADER_LEN;
/// Frame kinds.
pub const KIND_DATA: u8 = 1;
pub const KIND_ACK: u8 = 2;
/// Frame flags: the payload starts with the 32-byte message header / ends a message.
pub const FLAG_SOM: u8 = 1;
pub const FLAG_EOM: u8 = 2;
/// Largest frame payload: bigger fragments are cut (SOM first, EOM last), and a reader never
/// allocates more for one frame.
pub const MAX_FRAME: usize = 64 << 20;
/// A peer that leaves this much unacknowledged is not reading: the stream is given up.
const MAX_UNACKED: usize = 512 << 20;
/// Unacknowledged bytes past which a new fragment is refused as `QueueFull`, to wait in the
/// host's backlog (backlog.rs, whose senders are then paused) rather than in the stream's
/// buffers: about what the datagram link's send queue holds.
const STREAM_QUEUE: usize = 16 << 20;
/// Sends held while switching or draining, per host, before new ones are refused.
const MAX_HELD: usize = 512 << 20;
/// After a fallback the connector tries a new stream after this long, doubling each time up to
/// RETRY_MAX, at most RETRY_ATTEMPTS times in a row; a stream that stayed up RETRY_RESET
/// starts the count again. Bounded so that a peer whose streams keep breaking (a middlebox
/// that cuts them) costs a few attempts, then stays on datagrams.
pub const RETRY_FIRST: std::time::Duration = std::time::Duration::from_secs(1);
pub const RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(32);
pub const RETRY_ATTEMPTS: u32 = 6;
pub const RETRY_RESET: std::time::Duration = std::time::Duration::from_secs(60);
/// A receiver acknowledges on its own after this many frames or bytes without sending any.
const ACK_FRAMES: u64 = 64;
const ACK_BYTES: usize = 1 << 20;

/// Why a frame header or a hello was refused (field and byte offset).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    #[error("stream {what}: field {field} at byte {offset}: {why}")]
    Bad {
        what: &'static str,
        field: &'static str,
        offset: usize,
        why: String,
    },
}

fn bad(what: &'static str, field: &'static str, offset: usize, why: impl Into<String>) -> StreamError {
    StreamError::Bad {
        what,
        field,
        offset,
        why: why.into(),
    }
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The header of one frame on the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub kind: u8,
    pub flags: u8,
    /// Payload bytes that follow (0 for an ACK).
    pub len: u32,
    pub src: Tid,
    pub dst: Tid,
    /// Frames received so far the other way.
    pub ack: u64,
}

impl FrameHeader {
    /// After the length check no field access panics; every other check names its field.
    pub fn parse(b: &[u8]) -> Result<FrameHeader, StreamError> {
        if b.len() < FRAME_HDR_LEN {
            return Err(bad(
                "frame",
                "header",
                b.len(),
                format!("{} of {FRAME_HDR_LEN} bytes", b.len()),
            ));
        }
        let kind = b[off::KIND];
        let flags = b[off::FLAGS];
        let len = be32(b, off::LEN);
        let h = FrameHeader {
            kind,
            flags,
            len,
            src: Tid::from_u32(be32(b, off::SRC)),
            dst: Tid::from_u32(be32(b, off::DST)),
            ack: u64::from(be32(b, off::ACK)) << 32 | u64::from(be32(b, off::ACK + 4)),
        };
        if kind != KIND_DATA && kind != KIND_ACK {
            return Err(bad("frame", "kind", off::KIND, format!("unknown kind {kind}")));
        }
        if flags & !(FLAG_SOM | FLAG_EOM) != 0 || (kind == KIND_ACK && flags != 0) {
            return Err(bad("frame", "flags", off::FLAGS, format!("{flags:#x}")));
        }
        if b[off::RESERVED] != 0 || b[off::RESERVED + 1] != 0 {
            return Err(bad("frame", "reserved", off::RESERVED, "not zero"));
        }
        if len as usize > MAX_FRAME + MSGHDR_LEN || (kind == KIND_ACK && len != 0) {
            return Err(bad("frame", "len", off::LEN, format!("{len}")));
        }
        if flags & FLAG_SOM != 0 && (len as usize) < MSGHDR_LEN {
            return Err(bad(
                "frame",
                "len",
                off::LEN,
                format!("{len}: shorter than a message header"),
            ));
        }
        Ok(h)
    }

    pub fn to_bytes(&self) -> [u8; FRAME_HDR_LEN] {
        let mut b = [0u8; FRAME_HDR_LEN];
        b[off::KIND] = self.kind;
        b[off::FLAGS] = self.flags;
        b[off::LEN..off::LEN + 4].copy_from_slice(&self.len.to_be_bytes());
        b[off::SRC..off::SRC + 4].copy_from_slice(&self.src.bits().to_be_bytes());
        b[off::DST..off::DST + 4].copy_from_slice(&self.dst.bits().to_be_bytes());
        b[off::ACK..off::ACK + 8].copy_from_slice(&self.ack.to_be_bytes());
        b
    }
}

/// The first bytes each way on a new stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    pub from: u32,
    pub to: u32,
    /// The listener's cookie from its DM_XCAPS (the ack echoes it).
    pub cookie: u64,
}

impl Hello {
    pub fn parse(b: &[u8]) -> Result<Hello, StreamError> {
        if b.len() < HELLO_LEN {
            return Err(bad(
                "hello",
                "length",
                b.len(),
                format!("{} of {HELLO_LEN} bytes", b.len()),
            ));
        }
        if b[..4] != HELLO_MAGIC {
            return Err(bad("hello", "magic", 0, format!("{:02x?}", &b[..4])));
        }
        let v = be32(b, 4);
        if v != STREAM_VERSION {
            return Err(bad("hello", "version", 4, format!("{v}")));
        }
        Ok(Hello {
            from: be32(b, 8),
            to: be32(b, 12),
            cookie: u64::from(be32(b, 16)) << 32 | u64::from(be32(b, 20)),
        })
    }

    pub fn to_bytes(&self) -> [u8; HELLO_LEN] {
        let mut b = [0u8; HELLO_LEN];
        b[..4].copy_from_slice(&HELLO_MAGIC);
        b[4..8].copy_from_slice(&STREAM_VERSION.to_be_bytes());
        b[8..12].copy_from_slice(&self.from.to_be_bytes());
        b[12..16].copy_from_slice(&self.to.to_be_bytes());
        b[16..24].copy_from_slice(&self.cookie.to_be_bytes());
        b
    }
}

/// Bytes of a fragment on their way to a stream, shared between the frame being written and
/// the copy kept until the peer acknowledges it: a part of a buffer that came from a task's
/// socket (no copy) or a copy of borrowed bytes.
#[derive(Debug, Clone)]
pub struct Chunk {
    buf: Arc<Vec<u8>>,
    start: usize,
    end: usize,
}

impl Chunk {
    /// `v` from byte `start` on (all of it past its end: empty).
    pub fn from_vec(v: Vec<u8>, start: usize) -> Chunk {
        let end = v.len();
        Chunk {
            buf: Arc::new(v),
            start: start.min(end),
            end,
        }
    }

    pub fn copy(b: &[u8]) -> Chunk {
        Chunk::from_vec(b.to_vec(), 0)
    }

    /// Bytes `a..b` of this chunk (clamped), sharing the buffer.
    fn part(&self, a: usize, b: usize) -> Chunk {
        let start = (self.start + a).min(self.end);
        Chunk {
            buf: self.buf.clone(),
            start,
            end: (self.start + b).clamp(start, self.end),
        }
    }
}

impl std::ops::Deref for Chunk {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }
}

/// A task fragment's payload on its way through `route()`: borrowed, or owned by the caller so
/// that the stream transport keeps it without copying it (`net_route`). Reads as the payload
/// bytes until taken, as nothing after.
#[derive(Debug)]
pub enum Payload<'a> {
    Borrowed(&'a [u8]),
    Owned(Vec<u8>),
    Taken,
}

impl Payload<'_> {
    /// The payload from byte `start` on, as a [`Chunk`]: the owned buffer itself, else a copy.
    pub fn take_chunk(&mut self, start: usize) -> Chunk {
        match std::mem::replace(self, Payload::Taken) {
            Payload::Borrowed(b) => Chunk::copy(b.get(start..).unwrap_or(&[])),
            Payload::Owned(v) => Chunk::from_vec(v, start),
            Payload::Taken => Chunk::from_vec(Vec::new(), 0),
        }
    }
}

impl std::ops::Deref for Payload<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Payload::Borrowed(b) => b,
            Payload::Owned(v) => v,
            Payload::Taken => &[],
        }
    }
}

/// One frame for the shell to write: header, the message header on SOM, and the data (shared
/// with the copy kept until the peer acknowledges it).
#[derive(Debug, Clone)]
pub struct OutFrame {
    pub hdr: [u8; FRAME_HDR_LEN],
    pub mhdr: Option<[u8; MSGHDR_LEN]>,
    pub data: Chunk,
}

impl OutFrame {
    pub fn len(&self) -> usize {
        FRAME_HDR_LEN + self.mhdr.map_or(0, |m| m.len()) + self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

/// What the daemon asks of the shell.
#[derive(Debug)]
pub enum StreamCmd {
    /// Connect to `addr`, write `hello`, read the peer's hello back and report it.
    Connect {
        host: u32,
        gen: u64,
        addr: SocketAddrV4,
        hello: [u8; HELLO_LEN],
    },
    Write {
        host: u32,
        gen: u64,
        frame: OutFrame,
    },
    Close {
        host: u32,
        gen: u64,
    },
    /// A line for the daemon's log.
    Log(String),
}

/// A fragment as [`Net::send_frag`] got it.
#[derive(Debug, Clone)]
pub(super) struct Sent {
    pub(super) src: Tid,
    pub(super) dst: Tid,
    pub(super) header: Option<MsgHeader>,
    pub(super) eom: bool,
    pub(super) data: Chunk,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Connector: connection and hello under way; sends still go as datagrams.
    Connecting,
    /// The stream is up; datagrams sent before are not all acknowledged: sends are held.
    Switching,
    Up,
    /// The stream broke while up: sends are held until the peer's DM_XSTREAM "down".
    Draining,
    /// Back on datagrams (the connector may try a new stream later: `Link::retry_at`).
    Off,
}

#[derive(Debug)]
struct Partial {
    src: Tid,
    dst: Tid,
    header: MsgHeader,
    body: Vec<u8>,
}

#[derive(Debug)]
struct Link {
    phase: Phase,
    gen: u64,
    /// Frames written / acknowledged by the peer; `unacked` holds frames `acked+1 ..= tx`.
    tx: u64,
    acked: u64,
    unacked: VecDeque<Sent>,
    unacked_bytes: usize,
    held: VecDeque<Sent>,
    held_bytes: usize,
    /// Frames received; the count last told to the peer, and bytes since.
    rx: u64,
    rx_told: u64,
    rx_bytes: usize,
    rxm: Option<Partial>,
    /// Frames whose src tid was not of the peer's host (dropped).
    bad_src: u64,
    /// Connector, `Off`: when to try a new stream (None: not again).
    retry_at: Option<Time>,
    /// New streams tried since the last one that stayed up RETRY_RESET.
    attempts: u32,
    /// When this link's stream went up (Switching), for RETRY_RESET.
    up_since: Option<Time>,
}

impl Link {
    fn new(phase: Phase, gen: u64) -> Link {
        Link {
            phase,
            gen,
            tx: 0,
            acked: 0,
            unacked: VecDeque::new(),
            unacked_bytes: 0,
            held: VecDeque::new(),
            held_bytes: 0,
            rx: 0,
            rx_told: 0,
            rx_bytes: 0,
            rxm: None,
            bad_src: 0,
            retry_at: None,
            attempts: 0,
            up_since: None,
        }
    }
}

/// Stream state of one daemon: our listener, the peers' offers, one link per peer.
#[derive(Debug, Default)]
pub struct Streams {
    /// Our listening port (0: no stream offered).
    port: u16,
    cookie: u64,
    /// DM_XCAPS offers of pvmd-rs peers: (port, cookie).
    offers: HashMap<u32, (u16, u64)>,
    links: HashMap<u32, Link>,
    cmds: VecDeque<StreamCmd>,
    next_gen: u64,
    /// Test hook (`PVMD_XSTREAM_DROP_AFTER=N`): give up a stream after N received frames.
    drop_after: Option<u64>,
    /// Frames and bytes carried, for logs and tests.
    pub frames_out: u64,
    pub frames_in: u64,
}

/// How long to wait before the next new stream after `attempts` in a row, None for no more.
fn retry_wait(attempts: u32) -> Option<std::time::Duration> {
    (attempts < RETRY_ATTEMPTS).then(|| RETRY_FIRST.saturating_mul(1 << attempts.min(16)).min(RETRY_MAX))
}

fn cookie() -> u64 {
    use std::io::Read;
    let mut b = [0u8; 8];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_ok();
    if !ok {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        b = (t ^ u64::from(std::process::id()) << 32).to_be_bytes();
    }
    u64::from_be_bytes(b)
}

/// The message header (on SOM) and the data of a frame payload.
fn split_payload(p: &[u8], flags: FragFlags) -> (Option<MsgHeader>, &[u8]) {
    if flags.contains(FragFlags::SOM) {
        (MsgHeader::parse(p).ok(), p.get(MSGHDR_LEN..).unwrap_or(&[]))
    } else {
        (None, p)
    }
}

fn notice(rx: u64) -> Vec<u8> {
    let mut w = XdrWriter::new();
    w.int(NOTICE_MAGIC)
        .int(1)
        .int(NOTICE_DOWN)
        .uint((rx >> 32) as u32)
        .uint(rx as u32);
    w.into_inner()
}

fn data_frame(s: &Sent, ack: u64) -> OutFrame {
    let mut flags = 0;
    if s.header.is_some() {
        flags |= FLAG_SOM;
    }
    if s.eom {
        flags |= FLAG_EOM;
    }
    let mhdr = s.header.map(|h| h.to_bytes());
    let len = s.data.len() + mhdr.map_or(0, |m| m.len());
    let hdr = FrameHeader {
        kind: KIND_DATA,
        flags,
        len: len as u32,
        src: s.src,
        dst: s.dst,
        ack,
    };
    OutFrame {
        hdr: hdr.to_bytes(),
        mhdr,
        data: s.data.clone(),
    }
}

fn ack_frame(ack: u64) -> OutFrame {
    let hdr = FrameHeader {
        kind: KIND_ACK,
        flags: 0,
        len: 0,
        src: Tid::NONE,
        dst: Tid::NONE,
        ack,
    };
    OutFrame {
        hdr: hdr.to_bytes(),
        mhdr: None,
        data: Chunk::from_vec(Vec::new(), 0),
    }
}

impl Streams {
    /// Cuts a fragment into frames of at most [`MAX_FRAME`] data bytes.
    /// The pieces share `data`'s buffer.
    fn cut(src: Tid, dst: Tid, header: Option<MsgHeader>, eom: bool, data: Chunk) -> Vec<Sent> {
        if data.len() <= MAX_FRAME {
            return vec![Sent {
                src,
                dst,
                header,
                eom,
                data,
            }];
        }
        let mut v = Vec::new();
        let mut hdr = header;
        let mut at = 0;
        while at < data.len() {
            let end = (at + MAX_FRAME).min(data.len());
            v.push(Sent {
                src,
                dst,
                header: hdr.take(),
                eom: eom && end == data.len(),
                data: data.part(at, end),
            });
            at = end;
        }
        v
    }

    /// Writes one fragment on link `host` (phase Up).
    fn write(&mut self, host: u32, s: Sent) {
        let Some(l) = self.links.get_mut(&host) else { return };
        let frame = data_frame(&s, l.rx);
        l.rx_told = l.rx;
        l.rx_bytes = 0;
        l.tx += 1;
        l.unacked_bytes += s.data.len();
        l.unacked.push_back(s);
        self.frames_out += 1;
        self.cmds.push_back(StreamCmd::Write {
            host,
            gen: l.gen,
            frame,
        });
    }
}

impl Net {
    /// A fragment for another pvmd, now: the stream when it is up, held while switching or
    /// draining, datagrams otherwise (and always towards legacy peers). Callers go through
    /// backlog.rs (`Net::send_frag`), which keeps what finds the queue full.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn send_frag_now(
        &mut self,
        now: Time,
        host: u32,
        src: Tid,
        dst: Tid,
        header: Option<MsgHeader>,
        eom: bool,
        data: &[u8],
    ) -> Result<(), SendError> {
        if self.stream_takes(host) {
            self.send_chunk_now(now, host, src, dst, header, eom, Chunk::copy(data))
        } else {
            self.ep.send_frag(now, host, src, dst, header, eom, data)
        }
    }

    /// True when a fragment for `host` goes to its stream (written or held), not as datagrams.
    pub(super) fn stream_takes(&self, host: u32) -> bool {
        self.xs
            .links
            .get(&host)
            .is_some_and(|l| matches!(l.phase, Phase::Up | Phase::Switching | Phase::Draining))
    }

    /// [`Self::send_frag_now`] for bytes the stream may keep as they are (no copy).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn send_chunk_now(
        &mut self,
        now: Time,
        host: u32,
        src: Tid,
        dst: Tid,
        header: Option<MsgHeader>,
        eom: bool,
        data: Chunk,
    ) -> Result<(), SendError> {
        let phase = self.xs.links.get(&host).map(|l| l.phase);
        match phase {
            Some(Phase::Up) => {
                let l = self.xs.links.get(&host).expect("phase read above");
                if l.unacked_bytes > STREAM_QUEUE {
                    return Err(SendError::QueueFull {
                        host,
                        queued: l.unacked.len(),
                        needed: 1,
                        cap: l.unacked.len(),
                    });
                }
                for s in Streams::cut(src, dst, header, eom, data) {
                    self.xs.write(host, s);
                }
                let over = self.xs.links.get(&host).is_some_and(|l| l.unacked_bytes > MAX_UNACKED);
                if over {
                    self.stream_broke(host);
                }
                Ok(())
            }
            Some(Phase::Switching | Phase::Draining) => {
                let l = self.xs.links.get_mut(&host).expect("phase read above");
                if l.held_bytes.saturating_add(data.len()) > MAX_HELD {
                    return Err(SendError::QueueFull {
                        host,
                        queued: l.held.len(),
                        needed: 1,
                        cap: l.held.len(),
                    });
                }
                l.held_bytes += data.len();
                l.held.extend(Streams::cut(src, dst, header, eom, data));
                Ok(())
            }
            _ => self.ep.send_frag(now, host, src, dst, header, eom, &data),
        }
    }

    pub(super) fn send_message(
        &mut self,
        now: Time,
        host: u32,
        src: Tid,
        dst: Tid,
        header: MsgHeader,
        body: &[u8],
    ) -> Result<(), SendError> {
        self.send_frag(now, host, src, dst, Some(header), true, body)
    }

    /// Our side of link `host` stopped carrying frames (broken, refused, or the peer said
    /// so): close it, tell the peer how many frames we took, hold new sends.
    fn stream_broke(&mut self, host: u32) {
        let Some(l) = self.xs.links.get_mut(&host) else { return };
        let was = l.phase;
        match was {
            // A connection that never carried anything: nothing to drain, but the peer is
            // told as always (it may have accepted).
            Phase::Connecting => l.phase = Phase::Off,
            Phase::Switching | Phase::Up => l.phase = Phase::Draining,
            Phase::Draining | Phase::Off => return,
        }
        l.rxm = None;
        let (gen, rx) = (l.gen, l.rx);
        self.xs.cmds.push_back(StreamCmd::Close { host, gen });
        let now = self.now();
        let me = self.ep.tid();
        let h = MsgHeader {
            enc: pvm_proto::codes::ENC_XDR,
            tag: XSTREAM_TAG,
            ..MsgHeader::default()
        };
        let _ = self.ep.send_message(now, host, me, Tid::pvmd(host), h, &notice(rx));
        if was == Phase::Connecting {
            if let Some(line) = self.stream_schedule_retry(host) {
                self.xs.cmds.push_back(StreamCmd::Log(line));
            }
        }
    }

    /// Link `host` is `Off` now: as the connector (lower host index, both ports offered),
    /// schedule the next try with backoff; the attempts are counted again after a stream that
    /// stayed up RETRY_RESET.
    fn stream_schedule_retry(&mut self, host: u32) -> Option<String> {
        let now = self.now();
        let me = self.ep.tid().host();
        let offered = self.xs.offers.get(&host).is_some_and(|o| o.0 != 0) && self.xs.port != 0;
        let l = self.xs.links.get_mut(&host)?;
        if l.phase != Phase::Off || me >= host || !offered {
            return None;
        }
        if l.up_since
            .take()
            .is_some_and(|t| now.saturating_since(t) >= RETRY_RESET)
        {
            l.attempts = 0;
        }
        let Some(wait) = retry_wait(l.attempts) else {
            l.retry_at = None;
            return Some(format!(
                "xstream host {host}: {} new streams failed; staying on datagrams",
                l.attempts
            ));
        };
        l.retry_at = Some(now + wait);
        Some(format!("xstream host {host}: new stream in {} ms", wait.as_millis()))
    }

    /// The earliest time a new stream is due (the shell wakes then; `stream_poll` starts it).
    pub(super) fn stream_retry_deadline(&self) -> Option<Time> {
        self.xs
            .links
            .values()
            .filter(|l| l.phase == Phase::Off)
            .filter_map(|l| l.retry_at)
            .min()
    }

    /// Opens (again) the stream to `host` as the connector: a new link, generation and hello.
    fn stream_connect(&mut self, host: u32, attempts: u32) -> Option<String> {
        let me = self.ep.tid().host();
        let ip = self.table.get(host).map(|h| *h.addr.ip())?;
        let (port, cookie) = *self.xs.offers.get(&host)?;
        self.xs.next_gen += 1;
        let gen = self.xs.next_gen;
        let mut l = Link::new(Phase::Connecting, gen);
        l.attempts = attempts;
        self.xs.links.insert(host, l);
        let hello = Hello {
            from: me,
            to: host,
            cookie,
        }
        .to_bytes();
        let addr = SocketAddrV4::new(ip, port);
        self.xs.cmds.push_back(StreamCmd::Connect { host, gen, addr, hello });
        Some(format!("xstream host {host}: connecting to {addr}"))
    }

    /// The peer took `n` of our frames before its side went down: resend the rest, then what
    /// was held, as datagrams.
    fn stream_peer_down(&mut self, host: u32, n: u64) -> Vec<String> {
        let mut logs = Vec::new();
        let Some(l) = self.xs.links.get_mut(&host) else {
            return logs;
        };
        if l.phase != Phase::Draining {
            return logs;
        }
        let n = if n < l.acked || n > l.tx {
            logs.push(format!(
                "xstream host {host}: peer took {n} frames, we wrote {} ({} acknowledged)",
                l.tx, l.acked
            ));
            n.clamp(l.acked, l.tx)
        } else {
            n
        };
        let skip = (n - l.acked) as usize;
        let resend: Vec<Sent> = l.unacked.drain(..).skip(skip).chain(l.held.drain(..)).collect();
        l.phase = Phase::Off;
        l.unacked_bytes = 0;
        l.held_bytes = 0;
        let count = resend.len();
        let now = self.now();
        // backlog.rs: before anything that waits for the host; what the queue does not take
        // now goes as acknowledgements make room.
        logs.extend(self.hold_first(now, host, resend));
        logs.push(format!(
            "xstream host {host}: back on datagrams ({count} frames resent after {n} taken)"
        ));
        logs.extend(self.stream_schedule_retry(host));
        logs
    }
}

impl<A: AuthFiles> Daemon<A> {
    /// True when a big fragment to `dst` may be passed on in pieces while it arrives (the
    /// shell's `Pieces`) instead of being collected whole: a task of another host, which gets
    /// the message through another pvmd anyway (as fragments of that pvmd's choosing).
    pub fn pieces_wanted(&self, dst: Tid) -> bool {
        self.net.is_some() && dst.is_task() && !dst.is_on_host(self.host.index)
    }

    fn xs(&mut self) -> Option<&mut Streams> {
        self.net.as_mut().map(|n| &mut n.xs)
    }

    /// The shell listens on `port` for streams from pvmd-rs peers (0: none).
    pub fn set_stream_port(&mut self, port: u16) {
        let off = std::env::var_os("PVMD_NO_XSTREAM").is_some();
        let drop_after = std::env::var("PVMD_XSTREAM_DROP_AFTER")
            .ok()
            .and_then(|v| v.parse().ok());
        // An authenticated datagram link (dgauth.rs) is not traded for an unauthenticated
        // stream: with a datagram key, no stream is offered.
        let keyed = self.net.as_ref().is_some_and(|n| n.dgauth.key.is_some());
        if let Some(xs) = self.xs() {
            xs.port = if off || keyed { 0 } else { port };
            xs.cookie = cookie();
            xs.drop_after = drop_after;
        }
    }

    /// Our DM_XCAPS version 3 fields: `int port; int cookie high; int cookie low`.
    pub(super) fn xstream_offer_fields(&self, w: &mut XdrWriter) {
        let (port, cookie) = self.net.as_ref().map_or((0, 0), |n| (n.xs.port, n.xs.cookie));
        w.int(i32::from(port)).uint((cookie >> 32) as u32).uint(cookie as u32);
    }

    /// A pvmd-rs peer's DM_XCAPS version 3 fields. The lower host index connects.
    pub(super) fn xstream_offered(&mut self, host: u32, r: &mut XdrReader<'_>, out: &mut Vec<Out>) {
        let (Ok(port), Ok(hi), Ok(lo)) = (r.int("port"), r.uint("cookie"), r.uint("cookie")) else {
            return;
        };
        let Ok(port) = u16::try_from(port) else { return };
        let me = self.host.index;
        let Some(n) = self.net.as_mut() else { return };
        if n.table.get(host).is_none() {
            return;
        }
        let cookie = u64::from(hi) << 32 | u64::from(lo);
        n.xs.offers.insert(host, (port, cookie));
        if port == 0 || n.xs.port == 0 || me >= host || n.xs.links.contains_key(&host) {
            return;
        }
        if let Some(line) = n.stream_connect(host, 0) {
            out.push(Out::Log(line));
        }
    }

    /// A connection arrived on our port from `peer` with `hello`: the host and generation of
    /// the new link and the hello to answer with, or why it is refused.
    pub fn stream_accept(&mut self, peer: Ipv4Addr, hello: &[u8]) -> Result<(u32, u64, [u8; HELLO_LEN]), String> {
        let me = self.host.index;
        let h = Hello::parse(hello).map_err(|e| e.to_string())?;
        let n = self.net.as_mut().ok_or("no network")?;
        let member = n.table.get(h.from).map(|x| *x.addr.ip());
        if member != Some(peer) {
            return Err(format!(
                "hello from {peer} names host {}, not a member at that address",
                h.from
            ));
        }
        if h.to != me || h.from >= me || n.xs.port == 0 || h.cookie != n.xs.cookie {
            return Err(format!(
                "hello from host {} does not match (to {}, cookie)",
                h.from, h.to
            ));
        }
        // A new stream after a fallback only once our side of the old one is drained (`Off`):
        // what it resent as datagrams is then queued before anything the new one carries,
        // and `Switching` waits for it to be acknowledged.
        if n.xs.links.get(&h.from).is_some_and(|l| l.phase != Phase::Off) {
            return Err(format!("host {} already has a stream", h.from));
        }
        n.xs.next_gen += 1;
        let gen = n.xs.next_gen;
        n.xs.links.insert(h.from, Link::new(Phase::Switching, gen));
        let ack = Hello {
            from: me,
            to: h.from,
            cookie: h.cookie,
        };
        Ok((h.from, gen, ack.to_bytes()))
    }

    /// The connector's answer from the listener; true if the stream is now ours to use.
    pub fn stream_connected(&mut self, host: u32, gen: u64, ack: &[u8]) -> (bool, Vec<Out>) {
        let me = self.host.index;
        let mut out = Vec::new();
        let Some(n) = self.net.as_mut() else {
            return (false, out);
        };
        let cookie = n.xs.offers.get(&host).map(|o| o.1);
        let now = n.now();
        let Some(l) =
            n.xs.links
                .get_mut(&host)
                .filter(|l| l.gen == gen && l.phase == Phase::Connecting)
        else {
            return (false, out);
        };
        match Hello::parse(ack) {
            Ok(h) if h.from == host && h.to == me && Some(h.cookie) == cookie => {
                l.phase = Phase::Switching;
                l.up_since = Some(now);
                out.push(Out::Log(format!("xstream host {host}: stream up")));
                (true, out)
            }
            r => {
                out.push(Out::Log(format!(
                    "xstream host {host}: bad answer ({r:?}); staying on datagrams"
                )));
                n.stream_broke(host);
                (false, out)
            }
        }
    }

    /// The connection of link `host` generation `gen` failed or ended.
    pub fn stream_down(&mut self, host: u32, gen: u64, why: &str) -> Vec<Out> {
        let mut out = Vec::new();
        let Some(n) = self.net.as_mut() else { return out };
        let Some(l) = n.xs.links.get(&host).filter(|l| l.gen == gen) else {
            return out;
        };
        if matches!(l.phase, Phase::Draining | Phase::Off) {
            return out;
        }
        out.push(Out::Log(format!(
            "xstream host {host}: {why}; falling back to datagrams"
        )));
        n.stream_broke(host);
        out
    }

    /// One frame read from link `host` generation `gen`; its payload is `buf` after
    /// [`PAYLOAD_PREFIX`] bytes of room.
    pub fn stream_frame(&mut self, host: u32, gen: u64, h: FrameHeader, buf: Vec<u8>) -> Vec<Out> {
        let mut out = Vec::new();
        let Some(n) = self.net.as_mut() else { return out };
        let Some(l) = n.xs.links.get_mut(&host).filter(|l| l.gen == gen) else {
            return out;
        };
        if !matches!(l.phase, Phase::Switching | Phase::Up) {
            return out;
        }
        if h.ack < l.acked || h.ack > l.tx || buf.len() != PAYLOAD_PREFIX + h.len as usize {
            out.push(Out::Log(format!(
                "xstream host {host}: bad frame (ack {} of {} written); dropping the stream",
                h.ack, l.tx
            )));
            n.stream_broke(host);
            return out;
        }
        while l.acked < h.ack {
            if let Some(s) = l.unacked.pop_front() {
                l.unacked_bytes -= s.data.len();
            }
            l.acked += 1;
        }
        if h.kind != KIND_DATA {
            return out;
        }
        l.rx += 1;
        l.rx_bytes += h.len as usize;
        // As on the datagram link (its source check), a peer only speaks for its own tids:
        // anything else is counted as taken and dropped.
        if h.src.host() != host {
            l.bad_src += 1;
            if l.bad_src.is_power_of_two() {
                out.push(Out::Log(format!(
                    "xstream host {host}: frame from t{:x} (not of that host) dropped ({} so far)",
                    h.src.bits(),
                    l.bad_src
                )));
            }
            return out;
        }
        let mut flags = FragFlags::empty();
        if h.flags & FLAG_SOM != 0 {
            flags |= FragFlags::SOM;
        }
        if h.flags & FLAG_EOM != 0 {
            flags |= FragFlags::EOM;
        }
        let for_pvmd = h.dst.bits() & !Tid::HOST_MASK == Tid::PVMD_BIT;
        // A local task's fragment is delivered in `buf` itself (see `deliver_frame`); anything
        // else takes the datagram path's form.
        let mut direct = None;
        let ev = if for_pvmd || h.dst.is_multicast() {
            let (header, data) = split_payload(&buf[PAYLOAD_PREFIX..], flags);
            if for_pvmd {
                let max_msg = n.ep.config().max_message_len;
                Self::reassemble(l, host, h.src, h.dst, header, flags, data.to_vec(), max_msg)
            } else {
                Some(Event::Packet(Packet {
                    host,
                    src: h.src,
                    dst: h.dst,
                    seq: 0,
                    flags,
                    header,
                    data: data.to_vec(),
                }))
            }
        } else {
            direct = Some(buf);
            None
        };
        let (rx, told, bytes, gen) = (l.rx, l.rx_told, l.rx_bytes, l.gen);
        if rx - told >= ACK_FRAMES || bytes >= ACK_BYTES {
            l.rx_told = rx;
            l.rx_bytes = 0;
            n.xs.cmds.push_back(StreamCmd::Write {
                host,
                gen,
                frame: ack_frame(rx),
            });
        }
        n.xs.frames_in += 1;
        let drop_now = n.xs.drop_after.is_some_and(|k| rx >= k);
        if drop_now {
            // Test hook: as if the connection broke right after this frame.
            out.push(Out::Log(format!(
                "xstream host {host}: test hook drops the stream after {rx} frames"
            )));
            n.stream_broke(host);
        }
        match ev {
            Some(Event::Packet(p)) => self.net_packet(p, &mut out),
            Some(Event::Message(m)) => self.dm_entry(m, &mut out),
            Some(_) | None => {}
        }
        if let Some(buf) = direct {
            self.deliver_frame(host, h, flags, buf, &mut out);
        }
        out
    }

    /// `net_packet()` for a task fragment read from a stream, without copying the payload:
    /// the task fragment header goes into the room before it.
    fn deliver_frame(&mut self, host: u32, h: FrameHeader, flags: FragFlags, mut buf: Vec<u8>, out: &mut Vec<Out>) {
        if !self.has_task(h.dst) {
            let (header, data) = split_payload(&buf[PAYLOAD_PREFIX..], flags);
            let p = Packet {
                host,
                src: h.src,
                dst: h.dst,
                seq: 0,
                flags,
                header,
                data: data.to_vec(),
            };
            return self.net_packet(p, out); // moved tasks (mig_move.rs) and scrapping
        }
        let key = super::task_key(self.host.index, h.dst);
        let fh = pvm_proto::frag::StreamFragHeader {
            dst: super::key_tid(self.host.index, key),
            src: h.src,
            len: h.len,
            flags,
        };
        buf[..PAYLOAD_PREFIX].copy_from_slice(&fh.to_bytes());
        if let Some(b) = self.mig_gate(key, host, buf, out) {
            self.deliver(key, b, out); // mig_gate: mig_move.rs hook (order after a move)
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn reassemble(
        l: &mut Link,
        host: u32,
        src: Tid,
        dst: Tid,
        header: Option<MsgHeader>,
        flags: FragFlags,
        data: Vec<u8>,
        max: usize,
    ) -> Option<Event> {
        if let Some(h) = header {
            l.rxm = Some(Partial {
                src,
                dst,
                header: h,
                body: Vec::new(),
            });
        }
        let m = l.rxm.as_mut()?;
        if m.body.len().saturating_add(data.len()) > max {
            l.rxm = None;
            return None;
        }
        if m.body.is_empty() {
            m.body = data;
        } else {
            m.body.extend_from_slice(&data);
        }
        if !flags.contains(FragFlags::EOM) {
            return None;
        }
        let m = l.rxm.take()?;
        Some(Event::Message(pvm_proto::ddp::Message {
            host,
            src: m.src,
            dst: m.dst,
            header: m.header,
            body: m.body,
        }))
    }

    /// DM_XSTREAM from a peer (a datagram message).
    pub(super) fn xstream_entry(&mut self, host: u32, b: &[u8], out: &mut Vec<Out>) {
        let mut r = XdrReader::new(b);
        let (Ok(NOTICE_MAGIC), Ok(1), Ok(NOTICE_DOWN), Ok(hi), Ok(lo)) = (
            r.int("magic"),
            r.int("version"),
            r.int("kind"),
            r.uint("rx"),
            r.uint("rx"),
        ) else {
            out.push(Out::Log(format!("xstream host {host}: bad DM_XSTREAM; ignored")));
            return;
        };
        let Some(n) = self.net.as_mut() else { return };
        let Some(l) = n.xs.links.get(&host) else { return };
        if matches!(l.phase, Phase::Switching | Phase::Up) {
            out.push(Out::Log(format!("xstream host {host}: the peer gave the stream up")));
            n.stream_broke(host);
        }
        for line in n.stream_peer_down(host, u64::from(hi) << 32 | u64::from(lo)) {
            out.push(Out::Log(line));
        }
    }

    /// Hook of `host_gone()`: the link and what it held go with the host.
    pub(super) fn xstream_host_gone(&mut self, host: u32) {
        let Some(n) = self.net.as_mut() else { return };
        n.xs.offers.remove(&host);
        if let Some(l) = n.xs.links.remove(&host) {
            n.xs.cmds.push_back(StreamCmd::Close { host, gen: l.gen });
        }
    }

    /// The next thing for the shell to do. Links whose datagram queue has emptied switch to
    /// the stream here, writing what they held first.
    pub fn stream_poll(&mut self) -> Option<StreamCmd> {
        let n = self.net.as_mut()?;
        if n.xs.cmds.is_empty() {
            let now = n.now();
            let due: Vec<(u32, u32)> =
                n.xs.links
                    .iter()
                    .filter(|(_, l)| l.phase == Phase::Off && l.retry_at.is_some_and(|t| t <= now))
                    .map(|(h, l)| (*h, l.attempts))
                    .collect();
            for (host, attempts) in due {
                match n.stream_connect(host, attempts + 1) {
                    Some(line) => n.xs.cmds.push_back(StreamCmd::Log(format!("{line} (again)"))),
                    None => {
                        if let Some(l) = n.xs.links.get_mut(&host) {
                            l.retry_at = None;
                        }
                    }
                }
            }
            let ready: Vec<u32> =
                n.xs.links
                    .iter()
                    .filter(|(h, l)| {
                        l.phase == Phase::Switching
                            && n.ep.peer_info(**h).is_some_and(|p| p.in_flight == 0 && p.queued == 0)
                    })
                    .map(|(h, _)| *h)
                    .collect();
            for host in ready {
                let Some(l) = n.xs.links.get_mut(&host) else { continue };
                l.phase = Phase::Up;
                l.held_bytes = 0;
                let held: Vec<Sent> = l.held.drain(..).collect();
                n.xs.cmds.push_back(StreamCmd::Log(format!(
                    "xstream host {host}: datagrams all acknowledged; on the stream from now ({} held)",
                    held.len()
                )));
                for s in held {
                    n.xs.write(host, s);
                }
            }
        }
        n.xs.cmds.pop_front()
    }

    /// Frames carried on streams (out, in), for tests and logs.
    pub fn stream_counts(&self) -> (u64, u64) {
        self.net.as_ref().map_or((0, 0), |n| (n.xs.frames_out, n.xs.frames_in))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn frame_header_round_trips_and_names_bad_fields() {
        let h = FrameHeader {
            kind: KIND_DATA,
            flags: FLAG_SOM | FLAG_EOM,
            len: 40,
            src: Tid::from_u32(0x40001),
            dst: Tid::from_u32(0x80001),
            ack: 0x1_0000_0002,
        };
        let b = h.to_bytes();
        assert_eq!(FrameHeader::parse(&b), Ok(h));
        assert_eq!(
            b[..],
            [1, 3, 0, 0, 0, 0, 0, 40, 0, 4, 0, 1, 0, 8, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2][..]
        );
        let mut k = b;
        k[0] = 9;
        assert!(matches!(
            FrameHeader::parse(&k),
            Err(StreamError::Bad {
                field: "kind",
                offset: 0,
                ..
            })
        ));
        let mut r = b;
        r[3] = 1;
        assert!(matches!(
            FrameHeader::parse(&r),
            Err(StreamError::Bad { field: "reserved", .. })
        ));
        let mut s = b;
        s[7] = 8; // SOM with less than a message header
        assert!(matches!(
            FrameHeader::parse(&s),
            Err(StreamError::Bad { field: "len", .. })
        ));
        let mut big = b;
        big[4..8].copy_from_slice(&(MAX_FRAME as u32 + 33).to_be_bytes());
        assert!(matches!(
            FrameHeader::parse(&big),
            Err(StreamError::Bad { field: "len", .. })
        ));
        assert!(FrameHeader::parse(&b[..23]).is_err());
    }

    #[test]
    fn new_streams_back_off_doubling_and_stop() {
        let secs: Vec<Option<u64>> = (0..8).map(|a| super::retry_wait(a).map(|d| d.as_secs())).collect();
        assert_eq!(
            secs,
            vec![Some(1), Some(2), Some(4), Some(8), Some(16), Some(32), None, None]
        );
        assert_eq!(super::retry_wait(u32::MAX), None);
    }

    #[test]
    fn hello_round_trips_and_checks_magic_and_version() {
        let h = Hello {
            from: 1,
            to: 2,
            cookie: 0xdead_beef_0123_4567,
        };
        let b = h.to_bytes();
        assert_eq!(&b[..4], b"PVMX");
        assert_eq!(Hello::parse(&b), Ok(h));
        let mut m = b;
        m[0] = b'X';
        assert!(matches!(Hello::parse(&m), Err(StreamError::Bad { field: "magic", .. })));
        let mut v = b;
        v[7] = 2;
        assert!(matches!(
            Hello::parse(&v),
            Err(StreamError::Bad { field: "version", .. })
        ));
    }

    #[test]
    fn big_fragments_are_cut_keeping_som_first_and_eom_last() {
        let mut data = vec![7u8; MAX_FRAME * 2 + 5];
        data[MAX_FRAME] = 1;
        let h = MsgHeader::default();
        let v = Streams::cut(Tid::NONE, Tid::NONE, Some(h), true, Chunk::from_vec(data.clone(), 0));
        assert_eq!(v.len(), 3);
        assert!(v[0].header.is_some() && !v[0].eom);
        assert!(v[1].header.is_none() && !v[1].eom);
        assert!(v[2].header.is_none() && v[2].eom && v[2].data.len() == 5);
        assert_eq!(v[1].data[0], 1);
        let joined: Vec<u8> = v.iter().flat_map(|s| s.data.iter().copied()).collect();
        assert_eq!(joined, data);
        let v = Streams::cut(Tid::NONE, Tid::NONE, None, false, Chunk::copy(&data[..10]));
        assert_eq!(v.len(), 1);
        assert!(!v[0].eom);
    }

    #[test]
    fn an_owned_payload_reaches_the_stream_without_a_copy() {
        let v: Vec<u8> = (0..100u8).collect();
        let at = v.as_ptr() as usize;
        let mut p = Payload::Owned(v);
        assert_eq!(p.len(), 100);
        let c = p.take_chunk(32);
        assert_eq!(&c[..], &(32..100u8).collect::<Vec<_>>()[..]);
        assert_eq!(c.as_ptr() as usize, at + 32, "the same buffer, not a copy");
        assert!(p.is_empty(), "taken");
        let b = [1u8, 2, 3];
        let c = Payload::Borrowed(&b).take_chunk(5);
        assert!(c.is_empty(), "past the end: empty, no panic");
        let part = Chunk::from_vec(vec![1, 2, 3, 4], 1).part(1, 9);
        assert_eq!(&part[..], &[3, 4]);
    }

    proptest! {
        #[test]
        fn any_bytes_parse_or_err_and_valid_headers_round_trip(b in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(h) = FrameHeader::parse(&b) {
                prop_assert_eq!(&h.to_bytes()[..], &b[..FRAME_HDR_LEN]);
            }
            if let Ok(h) = Hello::parse(&b) {
                prop_assert_eq!(&h.to_bytes()[..], &b[..HELLO_LEN]);
            }
        }
    }
}
