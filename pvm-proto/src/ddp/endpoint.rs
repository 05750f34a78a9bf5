//! The per-daemon endpoint: links to every peer pvmd, their queues and timers.

use super::consts::*;
use super::seq;
use super::time::Time;
use crate::codes::{Dm, ENC_XDR};
use crate::frag::{DatagramHeader, FragFlags, HEADER_LEN as DDFRAGHDR};
use crate::mesg::{MsgHeader, HEADER_LEN as MSGHDRLEN};
use crate::tid::Tid;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddrV4;
use std::time::Duration;
use thiserror::Error;

/// Settings of one daemon's endpoint.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// Own host index (1 for a master, 0 for pvmd').
    pub host: u32,
    /// Host index of the master; a FIN|ACK from it means "halt".
    pub master: u32,
    /// Own datagram size limit (`pvmudpmtu`, 4080 on Linux).
    pub mtu: usize,
    /// Whether datagrams for a pvmd are reassembled into [`Event::Message`] (otherwise every
    /// in-order datagram is an [`Event::Packet`]).
    pub reassemble_pvmd_messages: bool,
    /// Whether the keepalive timer sends `DM_NULL` (the legacy pvmd does so only in the NORMAL
    /// and HTUPD run states; the timer keeps running either way).
    pub keepalive: bool,
    /// Packets that may wait for the window, per peer. One fragment that alone needs more is
    /// still taken when nothing waits, so that every fragment can be sent at some point.
    pub max_send_queue: usize,
    pub max_pending_acks: usize,
    pub max_message_len: usize,
    pub max_events: usize,
}

impl EndpointConfig {
    /// Legacy defaults for host `host` of a machine whose master is `master`.
    pub fn new(host: u32, master: u32) -> EndpointConfig {
        EndpointConfig {
            host,
            master,
            mtu: crate::codes::UDPMAXLEN,
            reassemble_pvmd_messages: true,
            keepalive: true,
            max_send_queue: DEFAULT_MAX_SEND_QUEUE,
            max_pending_acks: DEFAULT_MAX_PENDING_ACKS,
            max_message_len: DEFAULT_MAX_MESSAGE_LEN,
            max_events: DEFAULT_MAX_EVENTS,
        }
    }
}

/// Settings of the link to one peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerConfig {
    /// The UDP address the peer advertised; datagrams from anywhere else are refused.
    pub addr: SocketAddrV4,
    /// The peer's datagram size limit (its `mtu<>` / DM_HTUPD value).
    pub mtu: usize,
    /// Packets that may be unacknowledged at once, both ways. 1 for a legacy peer.
    pub window: u16,
    /// Next sequence number to send (1 on a new link).
    pub txseq: u16,
    /// Next sequence number expected (1 on a new link).
    pub rxseq: u16,
}

impl PeerConfig {
    /// A fresh link to a legacy pvmd: window 1, both sequence numbers at 1.
    pub fn legacy(addr: SocketAddrV4, mtu: usize) -> PeerConfig {
        PeerConfig {
            addr,
            mtu,
            window: LEGACY_WINDOW,
            txseq: seq::FIRST_SEQ,
            rxseq: seq::FIRST_SEQ,
        }
    }

    pub fn with_window(mut self, window: u16) -> PeerConfig {
        self.window = window;
        self
    }
}

/// A datagram to put on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub dst: SocketAddrV4,
    pub bytes: Vec<u8>,
}

/// One in-order data datagram from a peer, as the daemon needs it to cut it through to a task
/// or to reassemble it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// Host index of the sending pvmd.
    pub host: u32,
    pub src: Tid,
    pub dst: Tid,
    pub seq: u16,
    /// SOM and EOM as received (DAT is implied).
    pub flags: FragFlags,
    /// The message header, present on the first datagram of a message.
    pub header: Option<MsgHeader>,
    pub data: Vec<u8>,
}

/// A whole message for a pvmd, reassembled from its datagrams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub host: u32,
    pub src: Tid,
    pub dst: Tid,
    pub header: MsgHeader,
    pub body: Vec<u8>,
}

/// Why a link ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkLoss {
    /// A packet was sent `sends` times over `elapsed` without being acknowledged.
    Timeout { seq: u16, sends: u32, elapsed: Duration },
    /// The peer (not the master) sent FIN|ACK: it is going away.
    PeerFinAck,
    /// We sent FIN|ACK after our FIN was acknowledged; the host is deleted.
    FinAckSent,
    /// Nothing came from the peer for `silent` while a packet to it waited for its
    /// acknowledgement, and the link has a silence limit ([`Endpoint::set_silence_limit`]).
    Silent { seq: u16, sends: u32, silent: Duration },
}

/// Why a datagram (or part of it) was not used. For logging; nothing here needs an answer.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DropReason {
    #[error("shorter than the 16-byte header ({len} bytes)")]
    Truncated { len: usize },
    #[error("{len} bytes exceed the datagram size limit {max}")]
    TooLong { len: usize, max: usize },
    #[error("first fragment carries {len} bytes, less than a message header")]
    ShortMessageHeader { len: usize },
    #[error("source host {host} is not in the host table")]
    UnknownHost { host: u32 },
    #[error("source address differs from {expected} recorded for host {host}")]
    AddressMismatch { host: u32, expected: SocketAddrV4 },
    #[error("no DAT, FIN or ACK flag (flags {flags:#04x})")]
    NoProtocolFlags { flags: u8 },
    #[error("acknowledgement {ack} matches no packet in flight")]
    StaleAck { ack: u16 },
    #[error("duplicate of seq {seq} (expecting {rxseq})")]
    Duplicate { seq: u16, rxseq: u16 },
    #[error("seq {seq} outside the window {window} from {rxseq}; not acknowledged")]
    OutOfWindow { seq: u16, rxseq: u16, window: u16 },
    #[error("repeated FIN (seq {seq})")]
    RepeatedFin { seq: u16 },
    #[error("acknowledgement queue full; seq {seq} left unacknowledged")]
    AckQueueFull { seq: u16 },
    #[error("start of a message while another from the same host is incomplete")]
    RepeatedStart,
    #[error("middle or end of a message that never started")]
    SpuriousFragment,
    #[error("message of {len} bytes exceeds the limit {max}")]
    MessageTooLong { len: usize, max: usize },
}

/// A datagram or fragment that was dropped, with whatever is known about where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    pub from: SocketAddrV4,
    /// Host index of the sending pvmd, once the source check has passed.
    pub host: Option<u32>,
    pub header: Option<DatagramHeader>,
    pub reason: DropReason,
}

/// What the endpoint tells the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// An in-order data datagram (task-bound, multicast, or pvmd-bound when not reassembling).
    Packet(Packet),
    /// A complete message for a pvmd.
    Message(Message),
    /// The peer sent FIN (it was acknowledged). The legacy pvmd does nothing more.
    FinReceived {
        host: u32,
    },
    /// Our FIN was acknowledged; a FIN|ACK is queued and the host is dropped once it is sent.
    FinAcked {
        host: u32,
    },
    /// FIN|ACK from the master: the daemon must halt (pvmd' just exits).
    Halt {
        host: u32,
    },
    /// The link is gone and the peer forgotten; run host-failure handling.
    PeerLost {
        host: u32,
        cause: LinkLoss,
    },
    Dropped(Dropped),
    /// `count` datagrams were refused (unacknowledged) because the event queue was full.
    Overflow {
        count: u64,
    },
}

/// Errors of the sending calls.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SendError {
    #[error("no link to host {host}")]
    NoSuchPeer { host: u32 },
    #[error("send queue to host {host} full ({queued} packets queued, {needed} more needed, cap {cap})")]
    QueueFull {
        host: u32,
        queued: usize,
        needed: usize,
        cap: usize,
    },
    /// Not the endpoint's own: a daemon that keeps fragments back for full peer queues
    /// refuses one more past its bound on all it keeps.
    #[error("{held} bytes already held back for full peer queues (at most {cap}); not sent to host {host}")]
    HeldFull { host: u32, held: usize, cap: usize },
}

/// Errors of link configuration.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PeerError {
    #[error("host index {host} is out of range or our own")]
    BadHost { host: u32 },
    #[error("mtu {mtu} below the minimum {min}")]
    MtuTooSmall { mtu: usize, min: usize },
    #[error("window {window} outside 1..={max}")]
    BadWindow { window: u16, max: u16 },
    #[error("no link to host {host}")]
    NoSuchPeer { host: u32 },
}

/// A snapshot of one link, for diagnostics and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    pub addr: SocketAddrV4,
    pub mtu: usize,
    pub window: u16,
    pub txseq: u16,
    pub rxseq: u16,
    pub rtt: Duration,
    /// Packets sent and not yet acknowledged (FIN included).
    pub in_flight: usize,
    /// Packets waiting for the window.
    pub queued: usize,
    /// Out-of-order packets held for reordering.
    pub reordering: usize,
}

/// Upper bounds (microseconds) of the round-trip histogram in [`LinkStats`].
pub const RTT_BUCKETS_US: [u64; 10] = [100, 250, 500, 1000, 2500, 5000, 10_000, 50_000, 250_000, 1_000_000];

/// Cumulative counters of an endpoint, for a daemon's metrics; they only grow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Data packets sent again after their retry timer ran out.
    pub retransmits: u64,
    /// Round-trip samples (only packets acknowledged after a single send give one).
    pub rtt_samples: u64,
    pub rtt_sum_us: u64,
    /// Samples at or below each bound of [`RTT_BUCKETS_US`] (cumulative, as Prometheus wants).
    pub rtt_le: [u64; RTT_BUCKETS_US.len()],
}

impl LinkStats {
    fn record_rtt(&mut self, sample: Duration) {
        let us = u64::try_from(sample.as_micros()).unwrap_or(u64::MAX);
        self.rtt_samples += 1;
        self.rtt_sum_us = self.rtt_sum_us.saturating_add(us);
        for (n, bound) in self.rtt_le.iter_mut().zip(RTT_BUCKETS_US) {
            if us <= bound {
                *n += 1;
            }
        }
    }
}

/// A fragment waiting for the window; it gets its sequence number when it enters it.
#[derive(Debug)]
struct Unsent {
    src: Tid,
    dst: Tid,
    eom: bool,
    header: Option<MsgHeader>,
    data: Vec<u8>,
}

/// A DAT or FIN packet in the window.
#[derive(Debug)]
struct InFlight {
    seq: u16,
    fin: bool,
    frame: Vec<u8>,
    /// Times sent (`pk_nrt`).
    sends: u32,
    /// First send (`pk_at`).
    first_sent: Option<Time>,
    /// Current retry interval (`pk_rta`).
    rta: Duration,
    /// Sum of retry intervals so far (`pk_rto`).
    rto: Duration,
    /// When to send again (`pk_rtv`); `None` while a send is waiting in the transmit queue.
    retry_at: Option<Time>,
}

#[derive(Debug)]
struct Received {
    seq: u16,
    src: Tid,
    dst: Tid,
    flags: FragFlags,
    header: Option<MsgHeader>,
    data: Vec<u8>,
}

#[derive(Debug)]
struct Partial {
    src: Tid,
    dst: Tid,
    header: MsgHeader,
    body: Vec<u8>,
}

#[derive(Debug)]
struct Peer {
    /// Distinguishes this link from an earlier one to the same host index, so that stale
    /// entries in the transmit queue are never sent to a re-added host.
    generation: u64,
    addr: SocketAddrV4,
    /// Size of the datagrams sent to the peer ([`Endpoint::set_peer_mtu`]), at most `max_mtu`,
    /// the peer's own limit.
    mtu: usize,
    max_mtu: usize,
    window: u16,
    txseq: u16,
    rxseq: u16,
    rtt: Duration,
    txq: VecDeque<Unsent>,
    opq: Vec<InFlight>,
    /// Sorted by distance from `rxseq`; never longer than the window.
    rxq: VecDeque<Received>,
    rxm: Option<Partial>,
    fin_received: bool,
    /// Declare the host dead after this long without a datagram from it while a packet to it
    /// is unacknowledged (None: the legacy retry count and time only).
    silence_limit: Option<Duration>,
    /// When the last datagram that passed the source check arrived from this host.
    last_heard: Option<Time>,
}

impl Peer {
    /// Longest retry interval on this link: a link with a silence limit retries at least 16
    /// times within it ([`Peer::silence_deadline`]).
    fn retry_cap(&self) -> Duration {
        self.silence_limit.map_or(Duration::MAX, |l| l / 16)
    }

    /// When the silence limit ends this link if nothing arrives before: counted from the
    /// later of the oldest unacknowledged first send and the last datagram heard, and only
    /// once that packet went out [`DDMINRETRIES`] times (as the legacy rule asks too), so
    /// that a lossy link is not taken for a dead one. Retries on such a link come at least
    /// every sixteenth of the limit, so a live peer must have missed some 16 round trips in a
    /// row (the legacy rule: 14 over 190 s); at one datagram in five lost each way that is
    /// 0.36^16, about once in ten million packets.
    fn silence_deadline(&self) -> Option<(Time, &InFlight)> {
        let limit = self.silence_limit?;
        let oldest = self
            .opq
            .iter()
            .filter_map(|f| f.first_sent.map(|t| (t, f)))
            .min_by_key(|(t, _)| *t)?;
        if oldest.1.sends < DDMINRETRIES {
            return None;
        }
        let since = self.last_heard.map_or(oldest.0, |h| h.max(oldest.0));
        Some((since + limit, oldest.1))
    }
}

/// What the transmit queue holds. Data sends refer to the in-flight entry so that a packet
/// acknowledged before it went out is not sent.
#[derive(Debug, Clone, Copy)]
enum Ready {
    Ack { host: u32, generation: u64, seq: u16 },
    FinAck { host: u32, generation: u64 },
    Data { host: u32, generation: u64, seq: u16 },
}

/// What a failed send must undo.
#[derive(Debug, Clone, Copy)]
enum LastTx {
    Control(Ready),
    Data {
        host: u32,
        generation: u64,
        seq: u16,
        sends: u32,
        first_sent: Option<Time>,
        rta: Duration,
        rto: Duration,
    },
}

/// One pvmd's side of the pvmd <-> pvmd reliable datagram protocol.
///
/// Drive it with [`handle_datagram`](Self::handle_datagram), [`handle_timeout`](Self::handle_timeout)
/// and the sending calls; then drain [`poll_transmit`](Self::poll_transmit) and
/// [`poll_event`](Self::poll_event), and sleep until [`poll_timeout`](Self::poll_timeout).
/// Send times are taken from the latest `now` passed to any call, which is when the legacy
/// daemon reads its clock too (once per pass of its main loop).
#[derive(Debug)]
pub struct Endpoint {
    cfg: EndpointConfig,
    me: Tid,
    now: Time,
    peers: BTreeMap<u32, Peer>,
    next_generation: u64,
    /// First sends, ACKs, FIN and FIN|ACK, in the order the legacy `opq` would send them.
    ready: VecDeque<Ready>,
    /// Retransmissions that fell due, oldest deadline first; sent after `ready`, so that ACKs
    /// never wait behind retries (the 3.4 fix to `opq` ordering).
    retx: VecDeque<Ready>,
    pending_acks: usize,
    /// ACK and FIN|ACK datagrams whose send failed transiently, to be retried at the given time.
    deferred: Vec<(Time, Ready)>,
    /// The last datagram handed out, until the next call confirms it went (see
    /// [`Endpoint::transmit_failed`]).
    last_tx: Option<LastTx>,
    events: VecDeque<Event>,
    overflow: u64,
    next_ping: Time,
    last_pinged: u32,
    stats: LinkStats,
}

impl Endpoint {
    pub fn new(cfg: EndpointConfig, now: Time) -> Endpoint {
        Endpoint {
            me: Tid::pvmd(cfg.host),
            cfg,
            now,
            peers: BTreeMap::new(),
            next_generation: 0,
            ready: VecDeque::new(),
            retx: VecDeque::new(),
            pending_acks: 0,
            deferred: Vec::new(),
            last_tx: None,
            events: VecDeque::new(),
            overflow: 0,
            next_ping: now + DDPINGTIME,
            last_pinged: 0,
            stats: LinkStats::default(),
        }
    }

    /// Retransmission and round-trip counters since the endpoint was made.
    pub fn stats(&self) -> LinkStats {
        self.stats
    }

    pub fn config(&self) -> &EndpointConfig {
        &self.cfg
    }

    /// Own pvmd tid, the source of ACK, FIN and keepalive datagrams.
    pub fn tid(&self) -> Tid {
        self.me
    }

    pub fn set_master(&mut self, master: u32) {
        self.cfg.master = master;
    }

    pub fn set_keepalive(&mut self, on: bool) {
        self.cfg.keepalive = on;
    }

    /// Adds (or replaces, starting afresh) the link to host `host`.
    pub fn add_peer(&mut self, host: u32, pc: PeerConfig) -> Result<(), PeerError> {
        self.settle();
        if host > Tid::MAX_HOST || host == self.cfg.host {
            return Err(PeerError::BadHost { host });
        }
        if pc.mtu < MIN_MTU {
            return Err(PeerError::MtuTooSmall {
                mtu: pc.mtu,
                min: MIN_MTU,
            });
        }
        check_window(pc.window)?;
        self.remove_peer(host);
        self.next_generation += 1;
        self.peers.insert(
            host,
            Peer {
                generation: self.next_generation,
                addr: pc.addr,
                mtu: pc.mtu,
                max_mtu: pc.mtu,
                window: pc.window,
                txseq: pc.txseq,
                rxseq: pc.rxseq,
                rtt: INITIAL_RTT,
                txq: VecDeque::new(),
                opq: Vec::new(),
                rxq: VecDeque::new(),
                rxm: None,
                fin_received: false,
                silence_limit: None,
                last_heard: None,
            },
        );
        Ok(())
    }

    /// Forgets host `host` and everything queued for it, without any event.
    pub fn remove_peer(&mut self, host: u32) -> bool {
        self.settle();
        self.peers.remove(&host).is_some()
    }

    /// Changes the window of an existing link (after negotiation with a pvmd-rs peer). Safe at
    /// any moment: if the peer still uses a smaller window nothing changes for it, and packets
    /// it sent beyond a shrunken window are refused unacknowledged and simply retried later.
    pub fn set_window(&mut self, host: u32, window: u16) -> Result<(), PeerError> {
        self.settle();
        check_window(window)?;
        let peer = self.peers.get_mut(&host).ok_or(PeerError::NoSuchPeer { host })?;
        peer.window = window;
        self.release(host);
        Ok(())
    }

    /// Changes the size of the datagrams sent to `host` from now on (what is queued keeps its
    /// size): `mtu` bytes at most, never more than the peer's own limit from the host table
    /// nor less than [`MIN_MTU`]. For pvmd-rs peers, whose datagrams then fit the path and are
    /// never cut into IP fragments; a legacy peer keeps the table's value. Returns the size
    /// now in force.
    pub fn set_peer_mtu(&mut self, host: u32, mtu: usize) -> Result<usize, PeerError> {
        self.settle();
        let peer = self.peers.get_mut(&host).ok_or(PeerError::NoSuchPeer { host })?;
        peer.mtu = mtu.clamp(MIN_MTU, peer.max_mtu.max(MIN_MTU));
        Ok(peer.mtu)
    }

    /// Gives the link to `host` a silence limit (None: none, the legacy rule alone): a peer
    /// from which nothing arrives for `limit` while a packet to it is unacknowledged is
    /// declared dead ([`LinkLoss::Silent`]), however few retries that took. For pvmd-rs peers
    /// only: the legacy rule (10 sends over at least 180 s) is what a legacy peer expects.
    pub fn set_silence_limit(&mut self, host: u32, limit: Option<Duration>) -> Result<(), PeerError> {
        self.settle();
        let peer = self.peers.get_mut(&host).ok_or(PeerError::NoSuchPeer { host })?;
        peer.silence_limit = limit.filter(|l| !l.is_zero());
        Ok(())
    }

    pub fn peer_info(&self, host: u32) -> Option<PeerInfo> {
        self.peers.get(&host).map(|p| PeerInfo {
            addr: p.addr,
            mtu: p.mtu,
            window: p.window,
            txseq: p.txseq,
            rxseq: p.rxseq,
            rtt: p.rtt,
            in_flight: p.opq.len(),
            queued: p.txq.len(),
            reordering: p.rxq.len(),
        })
    }

    pub fn peers(&self) -> impl Iterator<Item = u32> + '_ {
        self.peers.keys().copied()
    }

    // ---- sending ------------------------------------------------------------------------

    /// Queues a whole message for host `host`, cut into datagrams of at most
    /// `min(own mtu, peer mtu)` bytes; the first carries the message header.
    pub fn send_message(
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

    /// Queues one fragment (a task's stream fragment relayed without reassembly, or part of a
    /// message): `header` present means SOM, `eom` means EOM. It is cut again to fit the path,
    /// keeping SOM on the first piece and EOM on the last (`pkt_to_host()`). Either every piece
    /// is queued or none is ([`SendError::QueueFull`]: try again once acknowledgements made
    /// room; into an empty queue any fragment goes, whatever its size).
    #[allow(clippy::too_many_arguments)]
    pub fn send_frag(
        &mut self,
        now: Time,
        host: u32,
        src: Tid,
        dst: Tid,
        header: Option<MsgHeader>,
        eom: bool,
        data: &[u8],
    ) -> Result<(), SendError> {
        self.advance(now);
        let cap = self.cfg.max_send_queue;
        let own_mtu = self.cfg.mtu;
        let peer = self.peers.get_mut(&host).ok_or(SendError::NoSuchPeer { host })?;
        let maxl = own_mtu.min(peer.mtu).saturating_sub(DDFRAGHDR).max(MIN_MTU - DDFRAGHDR);
        let first = if header.is_some() { maxl - MSGHDRLEN } else { maxl };
        let pieces = if data.len() <= first {
            1
        } else {
            1 + (data.len() - first).div_ceil(maxl)
        };
        if !peer.txq.is_empty() && peer.txq.len().saturating_add(pieces) > cap {
            return Err(SendError::QueueFull {
                host,
                queued: peer.txq.len(),
                needed: pieces,
                cap,
            });
        }
        if data.len() <= first {
            peer.txq.push_back(Unsent {
                src,
                dst,
                eom,
                header,
                data: data.to_vec(),
            });
        } else {
            let mut rest = data;
            let mut limit = first;
            let mut hdr = header;
            while !rest.is_empty() {
                let n = rest.len().min(limit);
                let (piece, tail) = rest.split_at(n);
                peer.txq.push_back(Unsent {
                    src,
                    dst,
                    eom: eom && tail.is_empty(),
                    header: hdr.take(),
                    data: piece.to_vec(),
                });
                rest = tail;
                limit = maxl;
            }
        }
        self.release(host);
        Ok(())
    }

    /// Starts the orderly close of the link (`fin_to_host()`, used on DM_DELHOST). The FIN takes
    /// the next sequence number, goes out ahead of everything else and bypasses the window.
    pub fn send_fin(&mut self, now: Time, host: u32) -> Result<(), SendError> {
        self.advance(now);
        let me = self.me;
        let peer = self.peers.get_mut(&host).ok_or(SendError::NoSuchPeer { host })?;
        let seq = peer.txseq;
        peer.txseq = seq::next(seq);
        let hdr = DatagramHeader {
            dst: Tid::pvmd(host),
            src: me,
            seq,
            ack: 0,
            flags: FragFlags::FIN,
        };
        peer.opq.push(InFlight {
            seq,
            fin: true,
            frame: hdr.to_bytes().to_vec(),
            sends: 0,
            first_sent: None,
            rta: peer.rtt * 2,
            rto: Duration::ZERO,
            retry_at: None,
        });
        let generation = peer.generation;
        self.ready.push_front(Ready::Data { host, generation, seq });
        Ok(())
    }

    /// Queues a FIN|ACK ahead of everything (`finack_to_host()`): tells pvmd' to exit after
    /// DM_STARTACK, or ends a link whose FIN was acknowledged. Sent once, never retried. Once it
    /// is sent to a host other than pvmd' (host 0), that host is forgotten.
    pub fn send_finack(&mut self, host: u32) -> Result<(), SendError> {
        self.settle();
        let peer = self.peers.get(&host).ok_or(SendError::NoSuchPeer { host })?;
        self.ready.push_front(Ready::FinAck {
            host,
            generation: peer.generation,
        });
        Ok(())
    }

    /// The datagrams a halting pvmd sends once, unreliably, before exiting (`pvmbailout()`):
    /// a FIN|ACK to every peer except pvmd', highest host index first.
    pub fn bailout_datagrams(&self) -> Vec<Transmit> {
        self.peers
            .iter()
            .rev()
            .filter(|(h, _)| **h >= 1)
            .map(|(h, p)| Transmit {
                dst: p.addr,
                bytes: self.control(*h, 0, FragFlags::FIN | FragFlags::ACK),
            })
            .collect()
    }

    // ---- input --------------------------------------------------------------------------

    /// Processes one received UDP payload from `from` (`netinput()`).
    pub fn handle_datagram(&mut self, now: Time, from: SocketAddrV4, bytes: &[u8]) {
        self.advance(now);
        if self.events.len() >= self.cfg.max_events {
            // Not acknowledged, so the sender will retry once the daemon drains its events.
            self.overflow += 1;
            return;
        }
        let drop = |header, host, reason| {
            Event::Dropped(Dropped {
                from,
                host,
                header,
                reason,
            })
        };
        let hdr = match DatagramHeader::parse(bytes) {
            Ok(h) => h,
            Err(_) => {
                self.events
                    .push_back(drop(None, None, DropReason::Truncated { len: bytes.len() }));
                return;
            }
        };
        if bytes.len() > self.cfg.mtu {
            let reason = DropReason::TooLong {
                len: bytes.len(),
                max: self.cfg.mtu,
            };
            self.events.push_back(drop(Some(hdr), None, reason));
            return;
        }
        let payload = &bytes[DDFRAGHDR..];
        let ff = hdr.flags;
        if ff.contains(FragFlags::SOM) && payload.len() < MSGHDRLEN {
            let reason = DropReason::ShortMessageHeader { len: payload.len() };
            self.events.push_back(drop(Some(hdr), None, reason));
            return;
        }
        let host = hdr.src.host();
        let Some(peer) = self.peers.get_mut(&host) else {
            self.events
                .push_back(drop(Some(hdr), None, DropReason::UnknownHost { host }));
            return;
        };
        if peer.addr != from {
            let reason = DropReason::AddressMismatch {
                host,
                expected: peer.addr,
            };
            self.events.push_back(drop(Some(hdr), None, reason));
            return;
        }
        peer.last_heard = Some(self.now);

        if ff.contains(FragFlags::FIN | FragFlags::ACK) {
            if host == self.cfg.master {
                self.events.push_back(Event::Halt { host });
            } else {
                self.lose_peer(host, LinkLoss::PeerFinAck);
            }
            return;
        }

        let mut acked = false;
        if ff.contains(FragFlags::ACK) {
            acked = self.take_ack(host, hdr.ack);
            self.release(host);
        }
        if !ff.intersects(FragFlags::DAT | FragFlags::FIN) {
            if !ff.contains(FragFlags::ACK) {
                let reason = DropReason::NoProtocolFlags { flags: ff.bits() };
                self.events.push_back(drop(Some(hdr), Some(host), reason));
            } else if !acked {
                let reason = DropReason::StaleAck { ack: hdr.ack };
                self.events.push_back(drop(Some(hdr), Some(host), reason));
            }
            return;
        }

        let Some(peer) = self.peers.get_mut(&host) else {
            return;
        };
        let generation = peer.generation;
        let sqn = hdr.seq;
        let is_dat = ff.contains(FragFlags::DAT);
        let mut duplicate = false;
        if is_dat {
            if seq::less_than(sqn, peer.rxseq) || peer.rxq.iter().any(|r| r.seq == sqn) {
                duplicate = true;
            } else if seq::distance(peer.rxseq, sqn) >= peer.window {
                // The legacy pvmd would keep it without bound; a correct peer never sends it.
                let reason = DropReason::OutOfWindow {
                    seq: sqn,
                    rxseq: peer.rxseq,
                    window: peer.window,
                };
                self.events.push_back(drop(Some(hdr), Some(host), reason));
                return;
            }
        }

        // Every DAT and FIN is acknowledged, duplicates included.
        if self.pending_acks >= self.cfg.max_pending_acks {
            let reason = DropReason::AckQueueFull { seq: sqn };
            self.events.push_back(drop(Some(hdr), Some(host), reason));
            return;
        }
        self.pending_acks += 1;
        let ack = Ready::Ack {
            host,
            generation,
            seq: sqn,
        };
        // After the other first sends, ahead of every retransmission.
        self.ready.push_back(ack);

        if !is_dat {
            if peer.fin_received {
                let reason = DropReason::RepeatedFin { seq: sqn };
                self.events.push_back(drop(Some(hdr), Some(host), reason));
            } else {
                peer.fin_received = true;
                self.events.push_back(Event::FinReceived { host });
            }
            return;
        }
        if duplicate {
            let reason = DropReason::Duplicate {
                seq: sqn,
                rxseq: peer.rxseq,
            };
            self.events.push_back(drop(Some(hdr), Some(host), reason));
            return;
        }

        let (header, data) = if ff.contains(FragFlags::SOM) {
            // Length checked above.
            let h = MsgHeader::parse(payload).ok();
            (h, payload[MSGHDRLEN..].to_vec())
        } else {
            (None, payload.to_vec())
        };
        let dist = seq::distance(peer.rxseq, sqn);
        let at = peer
            .rxq
            .iter()
            .position(|r| seq::distance(peer.rxseq, r.seq) > dist)
            .unwrap_or(peer.rxq.len());
        peer.rxq.insert(
            at,
            Received {
                seq: sqn,
                src: hdr.src,
                dst: hdr.dst,
                flags: ff & (FragFlags::SOM | FragFlags::EOM),
                header,
                data,
            },
        );
        while peer.rxq.front().is_some_and(|r| r.seq == peer.rxseq) {
            let Some(r) = peer.rxq.pop_front() else { break };
            peer.rxseq = seq::next(peer.rxseq);
            deliver(&self.cfg, &mut self.events, from, host, peer, r);
        }
    }

    /// Handles an acknowledgement; true if it matched a packet in flight.
    fn take_ack(&mut self, host: u32, ack: u16) -> bool {
        let now = self.now;
        let Some(peer) = self.peers.get_mut(&host) else {
            return false;
        };
        let Some(i) = peer.opq.iter().position(|p| p.seq == ack) else {
            return false;
        };
        let p = peer.opq.remove(i);
        if !p.fin && p.sends == 1 {
            if let Some(at) = p.first_sent {
                // Only packets sent once give an unambiguous sample.
                let sample = match now.saturating_since(at) {
                    d if d < Duration::from_micros(1) => ZERO_RTT_SAMPLE,
                    d => d.min(DDMAXRTT),
                };
                self.stats.record_rtt(sample);
                let us = (sample.as_micros() + 3 * peer.rtt.as_micros()) / 4;
                peer.rtt = Duration::from_micros(u64::try_from(us).unwrap_or(u64::MAX));
            }
        }
        if p.fin {
            self.ready.push_front(Ready::FinAck {
                host,
                generation: peer.generation,
            });
            self.events.push_back(Event::FinAcked { host });
        }
        true
    }

    /// Moves waiting packets into the window, giving each its sequence number.
    fn release(&mut self, host: u32) {
        let Some(peer) = self.peers.get_mut(&host) else {
            return;
        };
        // The window is anchored at the oldest unacknowledged packet, so that the receiver never
        // has to hold anything `window` or more ahead of what it expects next.
        while match peer.opq.first() {
            Some(oldest) => seq::distance(oldest.seq, peer.txseq) < peer.window,
            None => true,
        } {
            let Some(u) = peer.txq.pop_front() else { break };
            let seq = peer.txseq;
            peer.txseq = seq::next(seq);
            let mut flags = FragFlags::DAT;
            if u.header.is_some() {
                flags |= FragFlags::SOM;
            }
            if u.eom {
                flags |= FragFlags::EOM;
            }
            let hdr = DatagramHeader {
                dst: u.dst,
                src: u.src,
                seq,
                ack: 0,
                flags,
            };
            let mut frame = Vec::with_capacity(DDFRAGHDR + MSGHDRLEN + u.data.len());
            frame.extend_from_slice(&hdr.to_bytes());
            if let Some(m) = u.header {
                frame.extend_from_slice(&m.to_bytes());
            }
            frame.extend_from_slice(&u.data);
            peer.opq.push(InFlight {
                seq,
                fin: false,
                frame,
                sends: 0,
                first_sent: None,
                rta: (peer.rtt * 2).min(peer.retry_cap()),
                rto: Duration::ZERO,
                retry_at: None,
            });
            self.ready.push_back(Ready::Data {
                host,
                generation: peer.generation,
                seq,
            });
        }
    }

    fn lose_peer(&mut self, host: u32, cause: LinkLoss) {
        if host == 0 {
            // pvmd' keeps its table slot; only its traffic goes.
            if let Some(p) = self.peers.get_mut(&0) {
                p.txq.clear();
                p.opq.clear();
                p.rxq.clear();
                p.rxm = None;
                self.next_generation += 1;
                p.generation = self.next_generation;
            }
        } else {
            self.peers.remove(&host);
        }
        self.events.push_back(Event::PeerLost { host, cause });
    }

    fn control(&self, host: u32, ack: u16, flags: FragFlags) -> Vec<u8> {
        DatagramHeader {
            dst: Tid::pvmd(host),
            src: self.me,
            seq: 0,
            ack,
            flags,
        }
        .to_bytes()
        .to_vec()
    }

    fn advance(&mut self, now: Time) {
        self.settle();
        self.now = self.now.max(now);
    }

    /// Confirms the last datagram handed out: a FIN|ACK that went ends its link now.
    fn settle(&mut self) {
        if let Some(LastTx::Control(Ready::FinAck { host, generation })) = self.last_tx.take() {
            if host != 0 && self.peers.get(&host).is_some_and(|p| p.generation == generation) {
                self.lose_peer(host, LinkLoss::FinAckSent);
            }
        }
    }

    /// Reports that the datagram last returned by [`poll_transmit`](Self::poll_transmit) could
    /// not be sent for a transient reason (the legacy pvmd tolerates EINTR, ENOBUFS and ENOMEM
    /// from `sendto()` and bails out on anything else). It is retried after `DDERRRETRY`
    /// without counting as a send, as `netoutput()` does. Must be called before any other call.
    pub fn transmit_failed(&mut self, now: Time) {
        let last = self.last_tx.take();
        self.now = self.now.max(now);
        let retry = self.now + DDERRRETRY;
        match last {
            None => {}
            Some(LastTx::Control(item)) => {
                if matches!(item, Ready::Ack { .. }) {
                    self.pending_acks += 1;
                }
                self.deferred.push((retry, item));
            }
            Some(LastTx::Data {
                host,
                generation,
                seq,
                sends,
                first_sent,
                rta,
                rto,
            }) => {
                let Some(peer) = self.peers.get_mut(&host).filter(|p| p.generation == generation) else {
                    return;
                };
                if let Some(f) = peer.opq.iter_mut().find(|f| f.seq == seq) {
                    f.sends = sends;
                    f.first_sent = first_sent;
                    f.rta = rta;
                    f.rto = rto + DDERRRETRY;
                    f.retry_at = Some(retry);
                }
            }
        }
    }

    // ---- timers -------------------------------------------------------------------------

    /// The earliest time [`handle_timeout`](Self::handle_timeout) has work to do.
    pub fn poll_timeout(&self) -> Option<Time> {
        let retry = self
            .peers
            .values()
            .flat_map(|p| p.opq.iter().filter_map(|f| f.retry_at))
            .min();
        let deferred = self.deferred.iter().map(|d| d.0).min();
        let silence = self
            .peers
            .values()
            .filter_map(|p| p.silence_deadline().map(|d| d.0))
            .min();
        let soonest = [retry, deferred, silence].into_iter().flatten().min();
        Some(soonest.map_or(self.next_ping, |r| r.min(self.next_ping)))
    }

    /// Runs the timers due at `now`: declares dead the hosts that exhausted their retries,
    /// queues retransmissions in the order they fell due, and sends the keepalive.
    pub fn handle_timeout(&mut self, now: Time) {
        self.advance(now);
        let now = self.now;
        let mut due: Vec<(Time, u32, u16)> = Vec::new();
        let mut dead: Vec<(u32, LinkLoss)> = Vec::new();
        for (&host, peer) in &self.peers {
            if let Some((deadline, f)) = peer.silence_deadline().filter(|d| d.0 <= now) {
                let cause = LinkLoss::Silent {
                    seq: f.seq,
                    sends: f.sends,
                    silent: now.saturating_since(deadline) + peer.silence_limit.unwrap_or_default(),
                };
                dead.push((host, cause));
                continue;
            }
            for f in &peer.opq {
                let Some(t) = f.retry_at else { continue };
                if t > now {
                    continue;
                }
                if f.sends >= DDMINRETRIES && f.rto.as_secs() >= DDMINTIMEOUT.as_secs() {
                    let cause = LinkLoss::Timeout {
                        seq: f.seq,
                        sends: f.sends,
                        elapsed: f.rto,
                    };
                    dead.push((host, cause));
                    break;
                }
                due.push((t, host, f.seq));
            }
        }
        for (host, cause) in dead {
            due.retain(|d| d.1 != host);
            self.lose_peer(host, cause);
        }
        let (later, now_due): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.deferred).into_iter().partition(|d| d.0 > now);
        self.deferred = later;
        self.ready.extend(now_due.into_iter().map(|d| d.1));
        due.sort_by_key(|d| d.0);
        for (_, host, s) in due {
            let Some(peer) = self.peers.get_mut(&host) else {
                continue;
            };
            if let Some(f) = peer.opq.iter_mut().find(|f| f.seq == s) {
                f.retry_at = None;
                self.retx.push_back(Ready::Data {
                    host,
                    generation: peer.generation,
                    seq: s,
                });
            }
        }

        if now >= self.next_ping {
            if self.cfg.keepalive {
                self.ping();
            }
            self.next_ping = now + DDPINGTIME;
        }
    }

    /// Sends `DM_NULL` to the next host in index order (wrapping, pvmd' excluded). The turn is
    /// used up without a ping when it falls on ourselves or on a host with packets waiting for
    /// the window, as in the legacy `work()` loop.
    fn ping(&mut self) {
        let me = self.cfg.host;
        let mut hosts: Vec<u32> = self.peers.keys().copied().filter(|&h| h >= 1).collect();
        if me >= 1 {
            hosts.push(me);
        }
        hosts.sort_unstable();
        let Some(&first) = hosts.first() else { return };
        let next = hosts.iter().copied().find(|&h| h > self.last_pinged).unwrap_or(first);
        self.last_pinged = next;
        if next == me {
            return;
        }
        let Some(peer) = self.peers.get(&next) else { return };
        if !peer.txq.is_empty() {
            return;
        }
        let header = MsgHeader {
            enc: ENC_XDR,
            tag: Dm::Null.code(),
            ..MsgHeader::default()
        };
        let now = self.now;
        // A full queue is impossible here (it is empty); ignore the result.
        let _ = self.send_message(now, next, self.me, Tid::pvmd(next), header, &[]);
    }

    // ---- output -------------------------------------------------------------------------

    /// The next datagram to send. Its retransmission timer starts now (the latest `now` seen).
    /// The send is taken to have succeeded unless [`transmit_failed`](Self::transmit_failed) is
    /// the next call; a FIN|ACK to a host other than pvmd' then ends that link
    /// ([`LinkLoss::FinAckSent`]).
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.settle();
        let now = self.now;
        while let Some(item) = self.ready.pop_front().or_else(|| self.retx.pop_front()) {
            match item {
                Ready::Ack { host, generation, seq } => {
                    self.pending_acks = self.pending_acks.saturating_sub(1);
                    let Some(peer) = self.peers.get(&host).filter(|p| p.generation == generation) else {
                        continue;
                    };
                    let dst = peer.addr;
                    self.last_tx = Some(LastTx::Control(item));
                    return Some(Transmit {
                        dst,
                        bytes: self.control(host, seq, FragFlags::ACK),
                    });
                }
                Ready::FinAck { host, generation } => {
                    let Some(peer) = self.peers.get(&host).filter(|p| p.generation == generation) else {
                        continue;
                    };
                    let dst = peer.addr;
                    // The link ends at the next call, unless this send is reported failed.
                    self.last_tx = Some(LastTx::Control(item));
                    return Some(Transmit {
                        dst,
                        bytes: self.control(host, 0, FragFlags::FIN | FragFlags::ACK),
                    });
                }
                Ready::Data { host, generation, seq } => {
                    let Some(peer) = self.peers.get_mut(&host).filter(|p| p.generation == generation) else {
                        continue;
                    };
                    let dst = peer.addr;
                    let retry_cap = peer.retry_cap();
                    let Some(f) = peer.opq.iter_mut().find(|f| f.seq == seq && f.retry_at.is_none()) else {
                        continue;
                    };
                    self.last_tx = Some(LastTx::Data {
                        host,
                        generation,
                        seq,
                        sends: f.sends,
                        first_sent: f.first_sent,
                        rta: f.rta,
                        rto: f.rto,
                    });
                    if f.sends > 0 {
                        self.stats.retransmits += 1;
                    }
                    f.first_sent.get_or_insert(now);
                    f.retry_at = Some(now + f.rta);
                    f.rto += f.rta;
                    f.sends += 1;
                    if f.rta.as_secs() < DDMAXRTT.as_secs() {
                        f.rta = (f.rta * 2).min(retry_cap);
                    }
                    return Some(Transmit {
                        dst,
                        bytes: f.frame.clone(),
                    });
                }
            }
        }
        None
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.settle();
        if self.overflow > 0 {
            let count = std::mem::take(&mut self.overflow);
            return Some(Event::Overflow { count });
        }
        self.events.pop_front()
    }
}

fn check_window(window: u16) -> Result<(), PeerError> {
    if window == 0 || window > MAX_WINDOW {
        Err(PeerError::BadWindow {
            window,
            max: MAX_WINDOW,
        })
    } else {
        Ok(())
    }
}

/// Hands an in-order packet to the daemon, reassembling pvmd-bound messages (`netinpkt()`).
fn deliver(
    cfg: &EndpointConfig,
    events: &mut VecDeque<Event>,
    from: SocketAddrV4,
    host: u32,
    peer: &mut Peer,
    r: Received,
) {
    let for_pvmd = r.dst.bits() & !Tid::HOST_MASK == Tid::PVMD_BIT;
    if !(cfg.reassemble_pvmd_messages && for_pvmd) {
        events.push_back(Event::Packet(Packet {
            host,
            src: r.src,
            dst: r.dst,
            seq: r.seq,
            flags: r.flags,
            header: r.header,
            data: r.data,
        }));
        return;
    }
    let dropped = |reason| {
        Event::Dropped(Dropped {
            from,
            host: Some(host),
            header: None,
            reason,
        })
    };
    if let Some(h) = r.header {
        if peer.rxm.is_some() {
            events.push_back(dropped(DropReason::RepeatedStart));
            return;
        }
        peer.rxm = Some(Partial {
            src: r.src,
            dst: r.dst,
            header: h,
            body: Vec::new(),
        });
    }
    let Some(m) = peer.rxm.as_mut() else {
        events.push_back(dropped(DropReason::SpuriousFragment));
        return;
    };
    let len = m.body.len().saturating_add(r.data.len());
    if len > cfg.max_message_len {
        peer.rxm = None;
        events.push_back(dropped(DropReason::MessageTooLong {
            len,
            max: cfg.max_message_len,
        }));
        return;
    }
    m.body.extend_from_slice(&r.data);
    if r.flags.contains(FragFlags::EOM) {
        if let Some(m) = peer.rxm.take() {
            events.push_back(Event::Message(Message {
                host,
                src: m.src,
                dst: m.dst,
                header: m.header,
                body: m.body,
            }));
        }
    }
}
