//! pvmd <-> pvmd: the host table, the reliable datagram endpoint ([`pvm_proto::ddp`]) and the
//! DM_ protocol (messages.md §4, startup.md §4-§9), as decisions on [`Daemon`] like the rest.
//!
//! This is a child module of `daemon` so that it reaches the task table directly; `daemon.rs`
//! calls in through a handful of marked hooks and behaves as before when no network is enabled
//! (a lone master on loopback).
//!
//! Requests a task makes about other hosts become DM_ requests with a fresh wait id; the reply
//! (or the loss of the host) completes the wait and answers the task, as the legacy daemon's
//! wait contexts do (waitc.c). The mailbox lives on the master: a slave forwards TM_DB as DM_DB.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddrV4;
use std::time::Instant;

use pvm_proto::body::{self, Body, HtDel, HtUpd, OutputKind, OutputRecord, TaskEntry, TaskRecords, TidsOrError};
use pvm_proto::codes::{Dm, PvmError, SpawnFlags, Tm, ENC_XDR, MSGHDR_LEN, UDPMAXLEN};
use pvm_proto::ddp::{Endpoint, EndpointConfig, Event, LinkLoss, PeerConfig, Time, Transmit};
use pvm_proto::frag::{FragFlags, StreamFragHeader};
use pvm_proto::mesg::MsgHeader;
use pvm_proto::xdr::XdrWriter;
use pvm_proto::Tid;

use super::{AuthFiles, ConnId, Daemon, Out, Request, Task, MAX_SPAWN, TO_NEW};
use crate::hosts::{Host, HostTable};
use crate::notify::{HOST_ADD, HOST_DELETE, TASK_EXIT};
use crate::wire;

pub use super::xcaps::{XCAPS_TAG, XCAPS_WINDOW};

/// How this daemon joins the machine.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// Our UDP address as peers see it.
    pub addr: SocketAddrV4,
    /// The table at start: for a master just itself; for a slave the master and itself.
    pub table: HostTable,
    /// Our mtu (4080).
    pub mtu: usize,
}

/// The request of a local task that a remote reply will answer.
#[derive(Debug, Clone, Copy)]
pub(super) struct Waiter {
    conn: ConnId,
    src: Tid,
    hdr: MsgHeader,
}

#[derive(Debug)]
pub(super) enum Wait {
    /// The DM_ reply body is the TM_ reply body (DM_DB, DM_ADD, DM_DELHOST forwarded to the master).
    Forward {
        to: Waiter,
        host: u32,
    },
    Pstat {
        to: Waiter,
        host: u32,
    },
    HostSync {
        to: Waiter,
        host: u32,
    },
    /// One host's part of a TM_TASK.
    Task {
        group: i32,
        host: u32,
    },
    /// One host's block of a TM_SPAWN: the positions of its tasks in the reply.
    Exec {
        group: i32,
        host: u32,
        slots: Vec<usize>,
    },
    /// A PvmTaskExit notify on a task of another host.
    Notify {
        watcher: Tid,
        ctx: i32,
        tag: i32,
        about: Tid,
        host: u32,
    },
    /// DM_HTUPDACK expected from `host` (master adding hosts).
    HtUpd {
        host: u32,
    },
    /// DM_XCAPS answer expected from `host`.
    Xcaps {
        host: u32,
    },
    /// DM_RESETACK expected: `tid` of `host` owns persistent entries a reset doomed (reset.rs).
    Reset {
        tid: Tid,
        host: u32,
    },
    /// DM_NOTIFYACK expected: `tid` of `host` owns mailbox entries here (reset.rs).
    MboxOwner {
        tid: Tid,
        host: u32,
    },
}

impl Wait {
    fn host(&self) -> u32 {
        match self {
            Wait::Forward { host, .. }
            | Wait::Pstat { host, .. }
            | Wait::HostSync { host, .. }
            | Wait::Task { host, .. }
            | Wait::Exec { host, .. }
            | Wait::Notify { host, .. }
            | Wait::HtUpd { host }
            | Wait::Xcaps { host }
            | Wait::Reset { host, .. }
            | Wait::MboxOwner { host, .. } => *host,
        }
    }
}

#[derive(Debug)]
enum Gather {
    Task {
        to: Waiter,
        entries: Vec<TaskEntry>,
        left: usize,
    },
    Spawn {
        to: Waiter,
        tids: Vec<i32>,
        left: usize,
        outtid: i32,
        outctx: i32,
        outtag: i32,
        ptid: Tid,
        /// What each host is asked to run (count and placement set per block).
        template: Box<body::Exec>,
        /// PvmTaskDefault: tasks that failed on one host are tried on the next candidate that
        /// has not failed yet (`tried`), so each host fails at most once per spawn.
        retry: bool,
        cands: Vec<u32>,
        tried: Vec<u32>,
    },
}

/// A PvmHostDelete / PvmHostAdd notify of a local task.
#[derive(Debug, Clone)]
struct HostNotify {
    kind: i32,
    on: i32,
    watcher: Tid,
    ctx: i32,
    tag: i32,
    count: i32,
}

/// Most outstanding waits; past this new remote requests fail with PvmOutOfRes.
const MAX_WAITS: usize = 65536;

/// The network side of a daemon.
pub struct Net {
    pub(super) ep: Endpoint,
    pub(super) table: HostTable,
    /// A DM_HTUPD applied but not yet committed (slave), or being distributed (master).
    pending: Option<HostTable>,
    own_addr: SocketAddrV4,
    t0: Instant,
    last_wid: i32,
    pub(super) waits: BTreeMap<i32, Wait>,
    gathers: BTreeMap<i32, Gather>,
    /// Remote pvmds waiting for a local task to exit: (task, host, wid).
    watched: Vec<(Tid, u32, i32)>,
    /// Masters waiting (DM_RESET) for a local task to exit: (task, host, wid) (reset.rs).
    pub(super) reset_watched: Vec<(Tid, u32, i32)>,
    host_notifies: Vec<HostNotify>,
    /// DM_MCA from other hosts: multicast tid -> local destinations.
    pub(super) mca_in: HashMap<Tid, Vec<Tid>>,
    /// Multicasts of local tasks with destinations on other hosts.
    pub(super) mca_out: HashMap<Tid, Vec<u32>>,
    spawn_cursor: usize,
    /// `PvmMboxWaitForInfo` lookups of tasks on other hosts: (host, wid, owner, class, index, flags).
    db_waiters: Vec<(u32, i32, i32, String, i32, i32)>,
    /// A slave that has no committed table by then gives up (DDBAILTIME, startup.md §4.5).
    config_deadline: Option<Time>,
    pub(super) master: super::master::MasterState,
    /// hardening: rate-limited log of dropped datagrams.
    drop_log: crate::guard::DropLog,
    /// hardening: ICMP port-unreachable reports per peer address.
    unreach: crate::guard::Unreachable,
    /// hardening: optional datagram authentication between pvm-rs daemons (dgauth.rs).
    pub(super) dgauth: crate::dgauth::DgAuth,
    /// Stream transport to pvmd-rs peers (stream.rs).
    pub(super) xs: super::stream::Streams,
    /// DM_XCAPS to send or answer once the CRIU probe has finished (xcaps.rs).
    pub(super) xcaps_later: Vec<super::xcaps::Later>,
    /// Fragments waiting for room in a peer's queue (backlog.rs).
    pub(super) backlog: super::backlog::Backlog,
    /// The MTU of the route to an address (xcaps.rs: datagrams cut to fit it); a stand-in in
    /// unit tests.
    pub(super) route_mtu: fn(SocketAddrV4) -> Option<usize>,
}

impl NetConfig {
    /// A master alone in its machine at `addr`.
    pub fn master(host: &super::HostConfig, addr: SocketAddrV4) -> NetConfig {
        let mut table = HostTable {
            serial: 1,
            master: host.index,
            console: host.index,
            hosts: BTreeMap::new(),
        };
        table.hosts.insert(
            host.index,
            Host {
                index: host.index,
                name: host.name.clone(),
                arch: host.arch.clone(),
                addr,
                mtu: MTU as i32,
                speed: host.speed,
                dsig: host.dsig,
            },
        );
        NetConfig { addr, table, mtu: MTU }
    }
}

impl Net {
    pub fn new(cfg: NetConfig) -> Net {
        let me = cfg
            .table
            .hosts
            .values()
            .find(|h| h.addr == cfg.addr)
            .map(|h| h.index)
            .unwrap_or(cfg.table.master);
        let is_slave = me != cfg.table.master;
        let mut ecfg = EndpointConfig::new(me, cfg.table.master);
        ecfg.mtu = cfg.mtu;
        let mut ep = Endpoint::new(ecfg, Time::ZERO);
        for h in cfg.table.hosts.values().filter(|h| h.index != me) {
            let _ = ep.add_peer(h.index, PeerConfig::legacy(h.addr, h.mtu.max(64) as usize));
        }
        Net {
            ep,
            table: cfg.table,
            pending: None,
            own_addr: cfg.addr,
            t0: Instant::now(),
            last_wid: 0,
            waits: BTreeMap::new(),
            gathers: BTreeMap::new(),
            watched: Vec::new(),
            reset_watched: Vec::new(),
            host_notifies: Vec::new(),
            mca_in: HashMap::new(),
            mca_out: HashMap::new(),
            spawn_cursor: 0,
            db_waiters: Vec::new(),
            config_deadline: is_slave.then(|| Time::ZERO + pvm_proto::ddp::consts::DDBAILTIME),
            master: Default::default(),
            drop_log: Default::default(),
            unreach: Default::default(),
            dgauth: crate::dgauth::DgAuth::with_key(crate::dgauth::machine_key().clone().ok().flatten()),
            xs: Default::default(),
            xcaps_later: Vec::new(),
            backlog: Default::default(),
            route_mtu: crate::sys::route_mtu,
        }
    }

    pub(super) fn now(&self) -> Time {
        Time::from_micros(self.t0.elapsed().as_micros() as u64)
    }

    fn next_wid(&mut self) -> i32 {
        for _ in 0..1_000_000 {
            self.last_wid = if self.last_wid >= 0x7fff_fff0 {
                1
            } else {
                self.last_wid + 1
            };
            if !self.waits.contains_key(&self.last_wid) && !self.gathers.contains_key(&self.last_wid) {
                return self.last_wid;
            }
        }
        self.last_wid
    }

    pub fn own_addr(&self) -> SocketAddrV4 {
        self.own_addr
    }
}

fn hdr(tag: i32, wid: i32) -> MsgHeader {
    MsgHeader {
        enc: ENC_XDR,
        tag,
        ctx: 0,
        wid,
        crc: 0,
    }
}

impl<A: AuthFiles> Daemon<A> {
    // ---- set-up and the shell's calls ------------------------------------------------------

    /// Joins a machine: from now on the daemon speaks to other pvmds through [`Self::net_datagram`],
    /// [`Self::net_timeout`] and [`Self::net_transmit`].
    pub fn enable_net(&mut self, cfg: NetConfig) {
        self.net = Some(Box::new(Net::new(cfg)));
    }

    pub fn net_enabled(&self) -> bool {
        self.net.is_some()
    }

    pub(super) fn is_master(&self) -> bool {
        self.net.as_ref().map_or(true, |n| n.table.master == self.host.index)
    }

    /// The current host table (only this host when no network is enabled).
    pub fn host_table(&self) -> Option<&HostTable> {
        self.net.as_ref().map(|n| &n.table)
    }

    /// One UDP datagram from `from`.
    pub fn net_datagram(&mut self, from: SocketAddrV4, bytes: &[u8]) -> Vec<Out> {
        let mut out = Vec::new();
        if let Some(n) = self.net.as_mut() {
            let now = n.now();
            // hardening: authenticated links (dgauth.rs) check and strip the tag first.
            let bytes = match n.dgauth.incoming(from, bytes) {
                crate::dgauth::Verdict::Pass(b) => b,
                crate::dgauth::Verdict::NowStrict(b) => {
                    out.push(Out::Log(format!("netinput() datagrams from {from} are authenticated")));
                    b
                }
                crate::dgauth::Verdict::Drop => {
                    if let Some(l) = n.drop_log.note(from, &"missing or bad authentication tag") {
                        out.push(Out::Log(l));
                    }
                    return out;
                }
            };
            n.unreach.heard(from); // hardening
            n.ep.handle_datagram(now, from, bytes);
        }
        self.net_events(&mut out);
        out
    }

    /// hardening: the kernel reported ICMP port unreachable for a datagram we sent to `to`.
    /// A member whose pvmd is gone (its host still up) is declared dead after a few reports
    /// (`guard::Unreachable`) instead of after three minutes of retransmissions.
    pub fn net_unreachable(&mut self, to: SocketAddrV4) -> Vec<Out> {
        let mut out = Vec::new();
        let Some(n) = self.net.as_mut() else { return out };
        let Some(host) = n.table.hosts.values().find(|h| h.addr == to).map(|h| h.index) else {
            return out;
        };
        if host == self.host.index || !n.unreach.report(to, Instant::now()) {
            return out;
        }
        out.push(Out::Log(format!(
            "netinput() host {host} ({to}) answers port unreachable; declaring it dead"
        )));
        n.ep.remove_peer(host);
        self.host_failed(host, &mut out);
        self.net_events(&mut out);
        out
    }

    /// When the endpoint next needs [`Self::net_timeout`], as time from now.
    pub fn net_deadline(&self) -> Option<std::time::Duration> {
        let mig = self.mig_deadline(); // mig_move.rs: time limits of moves
        let n = self.net.as_ref()?;
        let t = match (n.ep.poll_timeout(), n.config_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // stream.rs: the next try of a new stream after a fallback (stream_poll starts it).
        let t = match (t, n.stream_retry_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // mig_move.rs: time limits of moves; appckpt.rs hook: host watch and stage limits.
        let extra = match (mig, self.app_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match (t.map(|t| t.saturating_since(n.now())), extra) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn net_timeout(&mut self) -> Vec<Out> {
        let mut out = Vec::new();
        if let Some(n) = self.net.as_mut() {
            let now = n.now();
            if n.ep.poll_timeout().is_some_and(|t| t <= now) {
                n.ep.handle_timeout(now);
            }
            if n.config_deadline.is_some_and(|t| t <= now) {
                out.push(Out::Log(
                    "slave_config() no configuration from the master in time; exiting".into(),
                ));
                out.push(Out::Halt);
            }
        }
        self.master_timers(&mut out);
        self.app_tick(&mut out); // appckpt.rs hook: host watch
        self.net_events(&mut out);
        self.mig_timers(&mut out); // mig_move.rs: moves past their time limits
        out
    }

    pub fn net_transmit(&mut self) -> Option<Transmit> {
        let n = self.net.as_mut()?;
        let t = n.ep.poll_transmit()?;
        let bytes = n.dgauth.outgoing(t.dst, t.bytes); // hardening: dgauth.rs
        Some(Transmit { dst: t.dst, bytes })
    }

    /// hardening: the machine's datagram key (dgauth.rs); links to pvm-rs peers with the same
    /// key become authenticated through DM_XCAPS.
    pub fn set_datagram_key(&mut self, key: Option<crate::dgauth::Key>) {
        if let Some(n) = self.net.as_mut() {
            n.dgauth.key = key;
        }
    }

    /// The datagram endpoint's counters, for metrics.rs.
    pub fn net_stats(&self) -> Option<pvm_proto::ddp::LinkStats> {
        self.net.as_ref().map(|n| n.ep.stats())
    }

    /// The FIN|ACKs a stopping daemon sends to every other pvmd.
    pub fn net_bailout(&self) -> Vec<Transmit> {
        self.net
            .as_ref()
            .map(|n| {
                n.ep.bailout_datagrams()
                    .into_iter()
                    .map(|t| Transmit {
                        dst: t.dst,
                        bytes: n.dgauth.outgoing(t.dst, t.bytes),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn net_events(&mut self, out: &mut Vec<Out>) {
        for _ in 0..100_000 {
            let Some(ev) = self.net.as_mut().and_then(|n| n.ep.poll_event()) else {
                return;
            };
            match ev {
                Event::Packet(p) => self.net_packet(p, out),
                Event::Message(m) => self.dm_entry(m, out),
                Event::FinReceived { host } => {
                    if self.debug & 0x40 != 0 {
                        out.push(Out::Log(format!("netinput() FIN from host {host}")));
                    }
                }
                Event::FinAcked { host } => {
                    out.push(Out::Log(format!("netinput() FIN|ACK to host {host}")));
                }
                Event::Halt { .. } => {
                    out.push(Out::Log("netinput() FIN|ACK from master; halting".into()));
                    out.push(Out::Halt);
                }
                Event::PeerLost { host, cause } => {
                    match cause {
                        LinkLoss::Timeout { sends, elapsed, .. } => out.push(Out::Log(format!(
                            "netoutput() timed out sending to host {host} after {sends}, {}",
                            elapsed.as_secs_f64()
                        ))),
                        LinkLoss::Silent { sends, silent, .. } => out.push(Out::Log(format!(
                            "netoutput() host {host} silent for {:.1} s ({sends} sends unanswered); declaring it dead",
                            silent.as_secs_f64()
                        ))),
                        c => out.push(Out::Log(format!("netinput() host {host} gone ({c:?})"))),
                    }
                    self.host_failed(host, out);
                }
                Event::Dropped(d) => {
                    if self.debug & 0x40 != 0 {
                        out.push(Out::Log(format!("netinput() dropped from {}: {}", d.from, d.reason)));
                    } else if let Some(l) = self.net.as_mut().and_then(|n| n.drop_log.note(d.from, &d.reason)) {
                        out.push(Out::Log(l)); // hardening: rate-limited (crate::guard::DropLog)
                    }
                }
                Event::Overflow { count } => {
                    out.push(Out::Log(format!("netinput() {count} datagrams refused (busy)")));
                }
            }
        }
    }

    // ---- sending -----------------------------------------------------------------------------

    pub(super) fn dm_send(&mut self, host: u32, tag: i32, wid: i32, body: &[u8], out: &mut Vec<Out>) {
        if let Err(e) = self.dm_try(host, tag, wid, body) {
            out.push(Out::Log(format!("dm_send() to host {host}: {e}")));
        }
    }

    /// [`Self::dm_send`] that leaves the error to the caller (without a network: nothing, Ok).
    pub(super) fn dm_try(
        &mut self,
        host: u32,
        tag: i32,
        wid: i32,
        body: &[u8],
    ) -> Result<(), pvm_proto::ddp::SendError> {
        let me = Tid::pvmd(self.host.index);
        let Some(n) = self.net.as_mut() else { return Ok(()) };
        let now = n.now();
        n.send_message(now, host, me, Tid::pvmd(host), hdr(tag, wid), body)
    }

    pub(super) fn dm_send_body(&mut self, host: u32, tag: Dm, wid: i32, b: Body, out: &mut Vec<Out>) {
        self.dm_send(host, tag.code(), wid, &b.emit(), out);
    }

    fn answer(&self, to: &Waiter, body: &[u8], out: &mut Vec<Out>) {
        let bytes = self.rm_frame(to.src, &to.hdr, body); // rm.rs hook
        out.push(Out::Send(to.conn, bytes));
    }

    fn waiter(req: &Request) -> Waiter {
        Waiter {
            conn: req.conn,
            src: req.src,
            hdr: req.hdr,
        }
    }

    pub(super) fn add_wait(&mut self, w: Wait) -> Option<i32> {
        let n = self.net.as_mut()?;
        if n.waits.len() >= MAX_WAITS {
            return None;
        }
        let wid = n.next_wid();
        n.waits.insert(wid, w);
        Some(wid)
    }

    /// Hook of `route()`: a fragment from a local task for a task on another host. True if the
    /// fragment was dealt with (sent or scrapped with a log line).
    /// Takes `payload` (stream.rs: an owned one goes on the stream without a copy) when it
    /// returns true.
    pub(super) fn net_route(
        &mut self,
        src: Tid,
        fh: StreamFragHeader,
        payload: &mut super::stream::Payload<'_>,
        out: &mut Vec<Out>,
    ) -> bool {
        let dst = fh.dst;
        let Some(n) = self.net.as_mut() else { return false };
        let host = dst.host();
        if n.table.get(host).is_none() || host == self.host.index {
            return false;
        }
        let (header, at) = if fh.flags.contains(FragFlags::SOM) {
            match MsgHeader::parse(payload) {
                Ok(h) => (Some(h), MSGHDR_LEN),
                Err(_) => {
                    out.push(Out::Log(format!("loclinpkt() short SOM from t{:x}", src.bits())));
                    return true;
                }
            }
        } else {
            (None, 0)
        };
        let now = n.now();
        let eom = fh.flags.contains(FragFlags::EOM);
        let sent = if n.stream_takes(host) {
            n.send_chunk(now, host, src, dst, header, eom, payload.take_chunk(at))
        } else {
            n.send_frag(now, host, src, dst, header, eom, &payload[at..])
        };
        if let Err(e) = sent {
            out.push(Out::Log(format!("loclinpkt() to t{:x}: {e}", dst.bits())));
        }
        true
    }

    /// Hook of `multicast()`: copies the fragment to the hosts that hold destinations.
    pub(super) fn net_multicast(&mut self, src: Tid, fh: StreamFragHeader, payload: &[u8], out: &mut Vec<Out>) {
        if !src.is_on_host(self.host.index) {
            return self.mig_multicast_from(src, fh, payload, out); // mig_move.rs: a moved sender
        }
        let Some(n) = self.net.as_mut() else { return };
        let Some(hosts) = n.mca_out.get(&fh.dst).cloned() else {
            return;
        };
        if fh.flags.contains(FragFlags::EOM) {
            n.mca_out.remove(&fh.dst);
        }
        let (header, data) = if fh.flags.contains(FragFlags::SOM) {
            match MsgHeader::parse(payload) {
                Ok(h) => (Some(h), &payload[MSGHDR_LEN..]),
                Err(_) => return,
            }
        } else {
            (None, payload)
        };
        let now = n.now();
        for h in hosts {
            if let Err(e) = n.send_frag(now, h, src, fh.dst, header, fh.flags.contains(FragFlags::EOM), data) {
                out.push(Out::Log(format!("mca to host {h}: {e}")));
            }
        }
    }

    /// Hook of `send_to_task()`: a message from this pvmd to a task on another host.
    pub(super) fn net_send_to_task(&mut self, to: Tid, tag: i32, ctx: i32, wid: i32, body: &[u8], out: &mut Vec<Out>) {
        let me = Tid::pvmd(self.host.index);
        let host = self.mig.route_of(to).unwrap_or(to.host()); // mig_move.rs: a moved tid
        let Some(n) = self.net.as_mut() else { return };
        if n.table.get(host).is_none() {
            return;
        }
        let h = MsgHeader {
            enc: ENC_XDR,
            tag,
            ctx,
            wid,
            crc: 0,
        };
        let now = n.now();
        if let Err(e) = n.send_message(now, host, me, to, h, body) {
            out.push(Out::Log(format!("send to t{:x}: {e}", to.bits())));
        }
    }

    /// Hook of `task_output()`: on a slave, output of a task without a collector goes to the
    /// master's log as DM_TASKOUT (messages.md §11). True if sent.
    pub(super) fn net_taskout(&mut self, tid: Tid, data: &[u8], out: &mut Vec<Out>) -> bool {
        if self.is_master() {
            return false;
        }
        match self.tasks.get(&super::task_key(self.host.index, tid)) {
            Some(t) if t.outtid <= 0 => {}
            _ => return false,
        }
        let master = self.net.as_ref().map_or(1, |n| n.table.master);
        for chunk in data.chunks(3999) {
            let b = Body::DmTaskOut(OutputRecord {
                tid,
                kind: OutputKind::Data(chunk.to_vec()),
            });
            self.dm_send_body(master, Dm::TaskOut, 0, b, out);
        }
        true
    }

    /// Hook of `task_gone()`: remote pvmds waiting for this task's exit get DM_NOTIFYACK.
    pub(super) fn net_task_gone(&mut self, tid: Tid, out: &mut Vec<Out>) {
        let Some(n) = self.net.as_mut() else { return };
        let mut due = Vec::new();
        n.watched.retain(|(t, h, w)| {
            if *t == tid {
                due.push((*h, *w));
                false
            } else {
                true
            }
        });
        n.mca_out.retain(|g, _| *g != Tid::multicast_of(tid));
        for (h, w) in due {
            self.dm_send_body(h, Dm::NotifyAck, w, Body::DmNotifyAck(body::TidArg { tid }), out);
        }
        self.reset_task_gone(tid, out); // reset.rs hook
    }

    // ---- datagrams for tasks -----------------------------------------------------------------

    pub(super) fn net_packet(&mut self, p: pvm_proto::ddp::Packet, out: &mut Vec<Out>) {
        let mut payload = Vec::with_capacity(p.data.len() + MSGHDR_LEN);
        if let Some(h) = p.header {
            payload.extend_from_slice(&h.to_bytes());
        }
        payload.extend_from_slice(&p.data);
        let flags = p.flags & (FragFlags::SOM | FragFlags::EOM);
        let frame = |dst: Tid| {
            let fh = StreamFragHeader {
                dst,
                src: p.src,
                len: payload.len() as u32,
                flags,
            };
            let mut b = Vec::with_capacity(16 + payload.len());
            b.extend_from_slice(&fh.to_bytes());
            b.extend_from_slice(&payload);
            b
        };
        if p.dst.is_multicast() {
            let Some(n) = self.net.as_mut() else { return };
            let Some(dsts) = n.mca_in.get(&p.dst).cloned() else {
                out.push(Out::Log(format!(
                    "netinpkt() pkt for t{:x} scrapped (no such multicast)",
                    p.dst.bits()
                )));
                return;
            };
            if flags.contains(FragFlags::EOM) {
                n.mca_in.remove(&p.dst);
            }
            for d in dsts {
                if let Some(b) = self.mig_mcast(d, frame(p.dst), out) {
                    let key = super::task_key(self.host.index, d); // mig_mcast: mig_move.rs hook
                    self.deliver(key, b, out);
                }
            }
            return;
        }
        if !self.has_task(p.dst) && self.mig_forward_packet(&p, out) {
            return; // mig_move.rs hook: the task moved to another host
        }
        if !self.has_task(p.dst) {
            out.push(Out::Log(format!(
                "netinpkt() pkt src t{:x} dst t{:x} scrapped (no such task)",
                p.src.bits(),
                p.dst.bits()
            )));
            return;
        }
        let key = super::task_key(self.host.index, p.dst);
        let b = frame(super::key_tid(self.host.index, key));
        if let Some(b) = self.mig_gate(key, p.host, b, out) {
            self.deliver(key, b, out); // mig_gate: mig_move.rs hook (order after a move)
        }
    }

    // ---- DM_ messages ------------------------------------------------------------------------

    pub(super) fn dm_entry(&mut self, m: pvm_proto::ddp::Message, out: &mut Vec<Out>) {
        if !m.src.is_pvmd() {
            if self.rm_net_entry(m.src, &m.header, &m.body, out) {
                return; // rm.rs hook: a resource manager's SM_EXEC from another host
            }
            out.push(Out::Log(format!(
                "netinpkt() message from task t{:x} to pvmd scrapped",
                m.src.bits()
            )));
            return;
        }
        let host = m.host;
        let wid = m.header.wid;
        if self.debug & 0x2 != 0 {
            out.push(Out::Log(format!(
                "netentry() from host {host} tag {}",
                Dm::from_code(m.header.tag).map_or(format!("{:#x}", m.header.tag), |d| d.to_string())
            )));
        }
        if m.header.tag == XCAPS_TAG {
            return self.xcaps_entry(host, wid, &m.body, out);
        }
        if m.header.tag == super::stream::XSTREAM_TAG {
            return self.xstream_entry(host, &m.body, out); // stream.rs
        }
        if (super::appckpt::DM_APP_FIRST..=super::appckpt::DM_APP_LAST).contains(&m.header.tag) {
            return self.app_dm(host, m.header.tag, wid, &m.body, out); // appckpt.rs hook
        }
        if self.mig_dm_entry(host, wid, m.header.tag, &m.body, out) {
            return; // mig_move.rs hook: DM_MIGPREP, DM_MIGDONE, DM_TIDMOVED, DM_MIGREQ
        }
        let Some(dm) = Dm::from_code(m.header.tag) else {
            out.push(Out::Log(format!(
                "netentry() message from t{:x} with bogus code {:#x}",
                m.src.bits(),
                m.header.tag
            )));
            return;
        };
        // Table changes and configuration only come from the master.
        let master = self.net.as_ref().map_or(0, |n| n.table.master);
        if matches!(dm, Dm::SlConf | Dm::HtUpd | Dm::HtCommit | Dm::HtDel) && host != master {
            out.push(Out::Log(format!(
                "netentry() {dm} from non-master host {host} scrapped"
            )));
            return;
        }
        if matches!(dm, Dm::Add | Dm::DelHost | Dm::HtUpdAck) && !self.is_master() {
            out.push(Out::Log(format!("netentry() {dm} to a non-master scrapped")));
            return;
        }
        // Bodies forwarded verbatim to a waiting task.
        if matches!(dm, Dm::DbAck | Dm::AddAck | Dm::DelHostAck) {
            return self.complete_forward(wid, &m.body, out);
        }
        let b = match body::decode(&m.header, m.src, m.dst, &m.body) {
            Ok(b) => b,
            Err(e) => {
                out.push(Out::Log(format!("netentry() {dm} from host {host}: {e}")));
                return;
            }
        };
        match (dm, b) {
            (Dm::Null, _) => {}
            (Dm::SlConf, Body::DmSlConf(c)) => self.dm_slconf(c, out),
            (Dm::HtUpd, Body::DmHtUpd(u)) => self.dm_htupd(host, wid, u, out),
            (Dm::HtUpdAck, _) => self.dm_htupdack(host, wid, out),
            (Dm::HtCommit, _) => self.dm_htcommit(out),
            (Dm::HtDel, Body::DmHtDel(d)) => self.dm_htdel(d, out),
            (Dm::Exec, Body::DmExec(x)) => self.dm_exec(host, wid, x, out),
            (Dm::ExecAck, Body::DmExecAck(t)) => self.dm_execack(wid, t, out),
            (Dm::Task, Body::DmTask(t)) => self.dm_task(host, wid, t.tid, out),
            (Dm::TaskAck, Body::DmTaskAck(t)) => self.dm_taskack(wid, t, out),
            (Dm::Pstat, Body::DmPstat(t)) => {
                let alive = self.has_task(t.tid) || self.mig.route_of(t.tid).is_some();
                let st = if alive { 0 } else { PvmError::NoTask.code() };
                self.dm_send(host, Dm::PstatAck.code(), wid, &wire::int_body(st), out);
            }
            (Dm::PstatAck, Body::DmPstatAck(v)) => {
                if let Some(Wait::Pstat { to, .. }) = self.take_wait(wid) {
                    self.answer(&to, &wire::int_body(v.value), out);
                }
            }
            (Dm::SendSig, Body::DmSendSig(s)) => self.local_signal(s.tid, s.signum, out),
            (Dm::Notify, Body::DmNotify(n)) => self.dm_notify(host, wid, n, out),
            (Dm::NotifyAck, _) => match self.take_wait(wid) {
                Some(Wait::Notify {
                    watcher,
                    ctx,
                    tag,
                    about,
                    ..
                }) => self.send_to_task(watcher, tag, ctx, 0, &wire::int_body(about.0), out),
                Some(Wait::MboxOwner { tid, .. }) => self.mbox.tidy(tid.0), // reset.rs
                _ => {}
            },
            (Dm::Mca, Body::DmMca(m)) => {
                let index = self.host.index;
                let local: Vec<Tid> = m.tids.into_iter().filter(|t| t.is_on_host(index)).collect();
                if let Some(n) = self.net.as_mut() {
                    if n.mca_in.len() < MAX_WAITS {
                        n.mca_in.insert(m.gtid, local);
                    }
                }
            }
            (Dm::TaskOut, Body::DmTaskOut(r)) => {
                if let OutputKind::Data(d) = r.kind {
                    let text = String::from_utf8_lossy(&d);
                    for line in text.split_terminator('\n') {
                        out.push(Out::Log(format!("[t{:x}] {line}", r.tid.bits())));
                    }
                }
            }
            (Dm::HostSync, _) => {
                let d = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                let b = Body::DmHostSyncAck(body::TimeVal {
                    sec: d.as_secs() as i32,
                    usec: d.subsec_micros() as i32,
                });
                self.dm_send_body(host, Dm::HostSyncAck, wid, b, out);
            }
            (Dm::HostSyncAck, Body::DmHostSyncAck(t)) => {
                if let Some(Wait::HostSync { to, .. }) = self.take_wait(wid) {
                    self.answer(&to, &wire::hostsync_reply(0, t.sec, t.usec), out);
                }
            }
            (Dm::Halt, _) => {
                out.push(Out::Log(format!("dm_halt() from host {host}, halting...")));
                out.push(Out::Halt);
            }
            (Dm::Db, Body::DmDb(_)) => self.dm_db(host, wid, &m.body, out),
            (Dm::Add, Body::DmAdd(names)) => self.dm_add(host, wid, names, out),
            (Dm::DelHost, Body::DmDelHost(names)) => self.dm_delhost(host, wid, names, out),
            (Dm::Reset, Body::DmReset(t)) => self.dm_reset(host, wid, t.tid, out), // reset.rs
            (Dm::ResetAck, _) => self.dm_resetack(wid),                            // reset.rs
            (Dm::StartAck, _) => {}
            (dm, b) => out.push(Out::Log(format!("netentry() {dm} from host {host} not handled: {b}"))),
        }
    }

    pub(super) fn take_wait(&mut self, wid: i32) -> Option<Wait> {
        self.net.as_mut()?.waits.remove(&wid)
    }

    fn complete_forward(&mut self, wid: i32, body: &[u8], out: &mut Vec<Out>) {
        if let Some(Wait::Forward { to, .. }) = self.take_wait(wid) {
            self.answer(&to, body, out);
        }
    }

    fn dm_slconf(&mut self, c: body::SlConf, out: &mut Vec<Out>) {
        for (field, value) in c.entries {
            let v = value.to_string_lossy();
            match field {
                1 => {
                    let ep = crate::launch::expand_epath(&v, |k| std::env::var(k).ok());
                    self.launcher.set_epath(ep);
                }
                3 => {
                    if let Err(e) = std::env::set_current_dir(&v) {
                        out.push(Out::Log(format!("dm_slconf() can't chdir to {v}: {e}")));
                    }
                }
                4 => self.rm_announced(&v, out), // rm.rs: the resource manager
                f => {
                    if self.debug & 0x8 != 0 {
                        out.push(Out::Log(format!("dm_slconf() field {f} <{v}> ignored")));
                    }
                }
            }
        }
    }

    /// A new table (full from the master at start-up, the added hosts later): applied as
    /// pending, links to the new hosts opened, acknowledged.
    fn dm_htupd(&mut self, from: u32, wid: i32, u: HtUpd, out: &mut Vec<Out>) {
        let me = self.host.index;
        let Some(n) = self.net.as_mut() else { return };
        let mut t = n.table.clone();
        t.serial = u.serial;
        t.master = u32::try_from(u.master).unwrap_or(t.master);
        t.console = u32::try_from(u.console).unwrap_or(t.console);
        for e in &u.hosts {
            let Some(h) = Host::from_entry(e) else {
                out.push(Out::Log(format!("dm_htupd() bad host entry {e}")));
                continue;
            };
            if h.index != me && n.ep.peer_info(h.index).is_none() {
                let _ =
                    n.ep.add_peer(h.index, PeerConfig::legacy(h.addr, h.mtu.max(64) as usize));
            }
            t.hosts.insert(h.index, h);
        }
        n.pending = Some(t);
        self.dm_send(from, Dm::HtUpdAck.code(), wid, &[], out);
    }

    fn dm_htcommit(&mut self, out: &mut Vec<Out>) {
        let Some(n) = self.net.as_mut() else { return };
        let Some(t) = n.pending.take() else { return };
        n.config_deadline = None;
        let added: Vec<u32> = t
            .hosts
            .keys()
            .filter(|i| !n.table.hosts.contains_key(i))
            .copied()
            .collect();
        n.table = t;
        n.ep.set_master(n.table.master);
        if self.debug & 0x10 != 0 {
            out.push(Out::Log(format!("dm_htcommit() serial {}", n.table.serial)));
        }
        let peers: Vec<u32> = added.iter().copied().filter(|h| *h != self.host.index).collect();
        self.host_added_notify(&added, out);
        for h in peers {
            self.xcaps_probe(h, out);
        }
    }

    fn dm_htdel(&mut self, d: HtDel, out: &mut Vec<Out>) {
        let me = self.host.index;
        let master = self.net.as_ref().map_or(0, |n| n.table.master);
        for t in d.hosts {
            let h = t.host();
            if h == me || h == master {
                continue;
            }
            if let Some(n) = self.net.as_mut() {
                n.ep.remove_peer(h);
            }
            self.host_gone(h, out);
        }
        if let Some(n) = self.net.as_mut() {
            n.table.serial = d.serial;
        }
    }

    /// A peer failed (timeout or FIN|ACK). A slave whose master failed halts; a master tells the
    /// others.
    fn host_failed(&mut self, host: u32, out: &mut Vec<Out>) {
        let master = self.net.as_ref().map_or(1, |n| n.table.master);
        if host == master && master != self.host.index {
            out.push(Out::Log("hostfailentry() lost master host; halting".into()));
            out.push(Out::Halt);
            return;
        }
        let known = self.net.as_ref().is_some_and(|n| n.table.get(host).is_some());
        if !known {
            return;
        }
        self.host_gone(host, out);
        if self.is_master() {
            self.broadcast_htdel(&[host], out);
        }
    }

    /// Forgets a host: its waits complete with errors, watchers are told.
    pub(super) fn host_gone(&mut self, host: u32, out: &mut Vec<Out>) {
        let Some(n) = self.net.as_mut() else { return };
        if n.table.hosts.remove(&host).is_none() {
            return;
        }
        out.push(Out::Log(format!("host {host} deleted")));
        self.xstream_host_gone(host); // stream.rs hook
        self.rm_host_gone(host, out); // rm.rs hook
        let Some(n) = self.net.as_mut() else { return };
        let wids: Vec<i32> = n
            .waits
            .iter()
            .filter(|(_, w)| w.host() == host)
            .map(|(k, _)| *k)
            .collect();
        n.watched.retain(|(_, h, _)| *h != host);
        n.reset_watched.retain(|(_, h, _)| *h != host);
        n.db_waiters.retain(|w| w.0 != host);
        for wid in wids {
            let Some(w) = self.take_wait(wid) else { continue };
            match w {
                Wait::Forward { to, .. } | Wait::Pstat { to, .. } => {
                    self.answer(&to, &wire::int_body(PvmError::HostFail.code()), out)
                }
                Wait::HostSync { to, .. } => {
                    self.answer(&to, &wire::hostsync_reply(PvmError::HostFail.code(), 0, 0), out)
                }
                Wait::Task { group, .. } => self.gather_task(group, Vec::new(), out),
                Wait::Exec { group, slots, .. } => {
                    let n = slots.len();
                    self.gather_exec(group, host, slots, vec![PvmError::HostFail.code(); n], out)
                }
                Wait::Notify {
                    watcher,
                    ctx,
                    tag,
                    about,
                    ..
                } => self.send_to_task(watcher, tag, ctx, 0, &wire::int_body(about.0), out),
                Wait::HtUpd { .. } => self.htupd_acked(host, out),
                Wait::Xcaps { .. } => {}
                // The owner went with its host (reset.rs).
                Wait::Reset { tid, .. } | Wait::MboxOwner { tid, .. } => self.mbox.tidy(tid.0),
            }
        }
        // PvmHostDelete notifies.
        let Some(n) = self.net.as_mut() else { return };
        let mut due = Vec::new();
        n.host_notifies.retain(|p| {
            if p.kind == HOST_DELETE && Tid(p.on).host() == host {
                due.push(p.clone());
                false
            } else {
                true
            }
        });
        for p in due {
            self.send_to_task(p.watcher, p.tag, p.ctx, 0, &wire::int_body(p.on), out);
        }
        self.app_host_gone(host, out); // appckpt.rs hook
        self.mig_host_gone(host, out); // mig_move.rs hook: moves with that host fail
    }

    fn host_added_notify(&mut self, added: &[u32], out: &mut Vec<Out>) {
        if added.is_empty() {
            return;
        }
        let Some(n) = self.net.as_mut() else { return };
        let mut due = Vec::new();
        for p in n.host_notifies.iter_mut().filter(|p| p.kind == HOST_ADD) {
            due.push(p.clone());
            if p.count > 0 {
                p.count -= 1;
            }
        }
        n.host_notifies.retain(|p| p.kind != HOST_ADD || p.count != 0);
        let mut w = XdrWriter::new();
        w.int(added.len() as i32);
        for h in added {
            w.int((h << Tid::HOST_SHIFT) as i32);
        }
        let body = w.into_inner();
        for p in due {
            self.send_to_task(p.watcher, p.tag, p.ctx, 0, &body, out);
        }
    }

    // ---- spawning ----------------------------------------------------------------------------

    /// Starts `count` copies of `file` here; the tids or error codes (exectasks()).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn exec_local(
        &mut self,
        ptid: Tid,
        file: &str,
        args: &[String],
        env: &[String],
        count: usize,
        out_set: (i32, i32, i32),
        trc_set: (i32, i32, i32),
        out: &mut Vec<Out>,
    ) -> Vec<i32> {
        let Some(path) = self.launcher.find(file) else {
            out.push(Out::Log(format!("forkexec() didn't find <{file}>")));
            return vec![PvmError::NoFile.code(); count];
        };
        let mut argv = Vec::with_capacity(args.len() + 1);
        argv.push(path.clone());
        argv.extend(args.iter().cloned());
        let mut tids = Vec::with_capacity(count);
        for _ in 0..count {
            let Some(tid) = self.alloc_tid() else {
                tids.push(PvmError::OutOfRes.code());
                continue;
            };
            let cookie = self.next_cookie();
            let mut env = env.to_vec();
            env.push(format!("PVMEPID={cookie}"));
            let launched = if self.reg.tasker != Tid::NONE {
                self.rm_sttask(tid, &path, &argv, &env, count, out) // rm.rs hook: the tasker starts it
            } else {
                self.launcher.launch(tid, &path, &argv, &env)
            };
            match launched {
                Ok(pid) => {
                    self.tasks.insert(
                        tid.local(),
                        Task {
                            conn: None,
                            forked: true,
                            pending: Vec::new(),
                            pending_bytes: 0,
                            out_buf: Vec::new(),
                            ptid,
                            pid,
                            cookie,
                            pid_verified: true,
                            a_out: file.to_string(),
                            outtid: out_set.0,
                            outctx: out_set.1,
                            outtag: out_set.2,
                            trctid: trc_set.0,
                            trcctx: trc_set.1,
                            trctag: trc_set.2,
                            contexts: Vec::new(),
                            mca: None,
                        },
                    );
                    if self.debug & 0x4 != 0 {
                        out.push(Out::Log(format!("forkexec() t{:x} pid {pid} {path}", tid.bits())));
                    }
                    if out_set.0 > 0 {
                        let mut rec = wire::output_record(tid, TO_NEW, &[]);
                        rec.extend_from_slice(&wire::int_body(ptid.0));
                        self.send_to_task(Tid(out_set.0), out_set.2, out_set.1, 0, &rec, out);
                    }
                    tids.push(tid.0);
                }
                Err(e) => {
                    out.push(Out::Log(format!("forkexec() {path}: {e}")));
                    tids.push(PvmError::OutOfRes.code());
                }
            }
        }
        tids
    }

    fn dm_exec(&mut self, from: u32, wid: i32, x: body::Exec, out: &mut Vec<Out>) {
        let count = usize::try_from(x.count).unwrap_or(0).min(MAX_SPAWN as usize);
        let args: Vec<String> = x.argv.iter().map(|a| a.to_string_lossy()).collect();
        let env: Vec<String> = x.env.iter().map(|a| a.to_string_lossy()).collect();
        let (first, outof) = x.placement.unwrap_or((0, x.count));
        self.rm_start_ctx(x.flags, first, outof); // rm.rs: for SM_STTASK
        let tids = self.exec_local(
            x.ptid,
            &x.file.to_string_lossy(),
            &args,
            &env,
            count,
            (x.outtid.0, x.outctx, x.outtag),
            (x.trctid.0, x.trcctx, x.trctag),
            out,
        );
        let b = Body::DmExecAck(TidsOrError::Tids(tids.into_iter().map(Tid).collect()));
        self.dm_send_body(from, Dm::ExecAck, wid, b, out);
    }

    fn dm_execack(&mut self, wid: i32, t: TidsOrError, out: &mut Vec<Out>) {
        let Some(Wait::Exec { group, slots, host }) = self.take_wait(wid) else {
            return;
        };
        let count = slots.len();
        let mut tids: Vec<i32> = match t {
            TidsOrError::Tids(t) => t.into_iter().map(|t| t.0).collect(),
            TidsOrError::Error(e) => vec![e; count],
        };
        tids.resize(count, PvmError::DSysErr.code());
        self.gather_exec(group, host, slots, tids, out);
    }

    /// Runs the tasks at `slots` of a spawn on `host` (here, or with DM_EXEC).
    fn exec_block(&mut self, group: i32, host: u32, slots: Vec<usize>, out: &mut Vec<Out>) {
        let me = self.host.index;
        let Some(Gather::Spawn { template, .. }) = self.net.as_ref().and_then(|n| n.gathers.get(&group)) else {
            return;
        };
        let mut x = (**template).clone();
        let outof = x.placement.map_or(0, |p| p.1);
        x.count = slots.len() as i32;
        x.placement = Some((slots.first().copied().unwrap_or(0) as i32, outof));
        if host == me {
            let args: Vec<String> = x.argv.iter().map(|a| a.to_string_lossy()).collect();
            let env: Vec<String> = x.env.iter().map(|a| a.to_string_lossy()).collect();
            self.rm_start_ctx(x.flags, slots.first().copied().unwrap_or(0) as i32, outof); // rm.rs: for SM_STTASK
            let tids = self.exec_local(
                x.ptid,
                &x.file.to_string_lossy(),
                &args,
                &env,
                slots.len(),
                (x.outtid.0, x.outctx, x.outtag),
                (x.trctid.0, x.trcctx, x.trctag),
                out,
            );
            return self.gather_exec(group, host, slots, tids, out);
        }
        let n = slots.len();
        let w = Wait::Exec {
            group,
            host,
            slots: slots.clone(),
        };
        match self.add_wait(w) {
            Some(wid) => self.dm_send_body(host, Dm::Exec, wid, Body::DmExec(x), out),
            None => self.gather_exec(group, host, slots, vec![PvmError::OutOfRes.code(); n], out),
        }
    }

    fn gather_exec(&mut self, group: i32, host: u32, slots: Vec<usize>, tids: Vec<i32>, out: &mut Vec<Out>) {
        let Some(n) = self.net.as_mut() else { return };
        let Some(Gather::Spawn {
            tids: all,
            left,
            retry,
            cands,
            tried,
            ..
        }) = n.gathers.get_mut(&group)
        else {
            return;
        };
        let mut failed = Vec::new();
        for (slot, t) in slots.into_iter().zip(tids) {
            if let Some(s) = all.get_mut(slot) {
                *s = t;
                if t < 0 {
                    failed.push(slot);
                }
            }
        }
        *left = left.saturating_sub(1);
        let mut again = None;
        if *retry && !failed.is_empty() {
            if !tried.contains(&host) {
                tried.push(host);
            }
            if let Some(h) = cands.iter().copied().find(|h| !tried.contains(h)) {
                *left += 1;
                again = Some(h);
            }
        }
        if let Some(h) = again {
            out.push(Out::Log(format!(
                "assign_tasks() retrying {} tasks on host {h}",
                failed.len()
            )));
            return self.exec_block(group, h, failed, out);
        }
        if *left == 0 {
            if let Some(Gather::Spawn {
                to,
                tids,
                outtid,
                outctx,
                outtag,
                ptid,
                ..
            }) = n.gathers.remove(&group)
            {
                if outtid > 0 {
                    for &t in tids.iter().filter(|t| Tid(**t).is_task()) {
                        let mut rec = wire::output_record(Tid(t), super::TO_SPAWN, &[]);
                        rec.extend_from_slice(&wire::int_body(ptid.0));
                        self.send_to_task(Tid(outtid), outtag, outctx, 0, &rec, out);
                    }
                }
                self.answer(&to, &wire::spawn_reply(&tids), out);
            }
        }
    }

    /// TM_SPAWN over the machine: blocks of tasks per candidate host, round robin from a cursor
    /// (tdpro.c: assign_tasks()); one DM_EXEC per remote block.
    fn net_spawn(&mut self, req: &Request, out: &mut Vec<Out>) -> bool {
        let Ok(sp) = wire::SpawnReq::parse(req.body) else {
            return false;
        };
        if sp.count < 1 || sp.count > MAX_SPAWN {
            return false;
        }
        let flags = SpawnFlags::from_bits_retain(sp.flags);
        let (where_, wd) = match sp.where_.split_once(':') {
            Some((w, d)) => (w.to_string(), Some(d.to_string())),
            None => (sp.where_.clone(), None),
        };
        let Some(n) = self.net.as_mut() else { return false };
        let mut cands: Vec<u32> = n
            .table
            .hosts
            .values()
            .filter(|h| {
                let m = if flags.contains(SpawnFlags::HOST) {
                    h.name == where_
                } else if flags.contains(SpawnFlags::ARCH) {
                    h.arch == where_
                } else {
                    true
                };
                m != flags.contains(SpawnFlags::HOST_COMPL)
            })
            .map(|h| h.index)
            .collect();
        let count = sp.count as usize;
        if cands.is_empty() {
            let tids = vec![PvmError::NoHost.code(); count];
            self.reply(req, req.src, &wire::spawn_reply(&tids), out);
            return true;
        }
        // Start after the cursor; the first spawn starts on the host after the local one.
        let me = self.host.index;
        if n.spawn_cursor == 0 {
            n.spawn_cursor = cands.iter().position(|h| *h > me).unwrap_or(0) + 1;
        }
        let k = cands.len();
        let first = (n.spawn_cursor - 1) % k;
        cands.rotate_left(first);
        n.spawn_cursor = (first + count) % k + 1;
        let ptid = if flags.contains(SpawnFlags::NO_SPAWN_PARENT) {
            Tid(PvmError::ParentNotSet.code())
        } else {
            req.src
        };
        let mut env = sp.env.clone();
        if let Some(wd) = &wd {
            env.push(format!("PVMSPAWNWD={wd}"));
        }
        let mut blocks = Vec::new();
        let (base, extra) = (count / k, count % k);
        let mut start = 0;
        for (i, h) in cands.iter().enumerate() {
            let c = base + usize::from(i < extra);
            if c > 0 {
                blocks.push((*h, start, c));
                start += c;
            }
        }
        let template = body::Exec {
            ptid,
            file: sp.file.as_str().into(),
            flags: sp.flags,
            count: count as i32,
            argv: sp.argv.iter().map(|a| a.as_str().into()).collect(),
            outtid: Tid(sp.outtid),
            outctx: sp.outctx,
            outtag: sp.outtag,
            trctid: Tid(sp.trctid),
            trcctx: sp.trcctx,
            trctag: sp.trctag,
            env: env.iter().map(|a| a.as_str().into()).collect(),
            placement: Some((0, count as i32)),
            extra: Vec::new(),
        };
        let retry = !flags.intersects(SpawnFlags::HOST | SpawnFlags::ARCH);
        let group = n.next_wid();
        n.gathers.insert(
            group,
            Gather::Spawn {
                to: Self::waiter(req),
                tids: vec![PvmError::DSysErr.code(); count],
                left: blocks.len(),
                outtid: sp.outtid,
                outctx: sp.outctx,
                outtag: sp.outtag,
                ptid,
                template: Box::new(template),
                retry,
                tried: Vec::new(),
                cands: cands.clone(),
            },
        );
        for (h, start, c) in blocks {
            self.exec_block(group, h, (start..start + c).collect(), out);
        }
        true
    }

    // ---- tasks, status -----------------------------------------------------------------------

    fn local_task_entries(&self, where_: Tid) -> Vec<TaskEntry> {
        let hostpart = Tid((self.host.index << Tid::HOST_SHIFT) as i32);
        self.tasks
            .iter()
            .filter(|(key, _)| where_.local() == 0 || super::task_key(self.host.index, where_) == **key)
            .map(|(key, t)| TaskEntry {
                tid: super::key_tid(self.host.index, *key),
                ptid: t.ptid,
                host: hostpart,
                flag: if t.conn.is_some() { super::TF_CONN } else { 0 }
                    | if t.forked { super::TF_FORKD } else { 0 }
                    | self.rm_task_flag(*key), // rm.rs hook
                a_out: t.a_out.as_str().into(),
                pid: t.pid,
            })
            .collect()
    }

    fn dm_task(&mut self, from: u32, wid: i32, where_: Tid, out: &mut Vec<Out>) {
        let entries = self.local_task_entries(where_);
        self.dm_send_body(
            from,
            Dm::TaskAck,
            wid,
            Body::DmTaskAck(TaskRecords { tasks: entries }),
            out,
        );
    }

    fn dm_taskack(&mut self, wid: i32, t: TaskRecords, out: &mut Vec<Out>) {
        if let Some(Wait::Task { group, .. }) = self.take_wait(wid) {
            self.gather_task(group, t.tasks, out);
        }
    }

    fn gather_task(&mut self, group: i32, entries: Vec<TaskEntry>, out: &mut Vec<Out>) {
        let Some(n) = self.net.as_mut() else { return };
        let Some(Gather::Task { entries: all, left, .. }) = n.gathers.get_mut(&group) else {
            return;
        };
        all.extend(entries);
        *left = left.saturating_sub(1);
        if *left == 0 {
            if let Some(Gather::Task { to, entries, .. }) = n.gathers.remove(&group) {
                self.answer(&to, &task_reply(&entries), out);
            }
        }
    }

    fn net_task(&mut self, req: &Request, out: &mut Vec<Out>) -> bool {
        let Ok(where_) = wire::parse_int(req.body, "TM_TASK where").map(Tid) else {
            return false;
        };
        let me = self.host.index;
        let Some(n) = self.net.as_mut() else { return false };
        let hosts: Vec<u32> = if where_.0 == 0 {
            n.table.hosts.keys().copied().collect()
        } else if n.table.get(where_.host()).is_some() {
            vec![where_.host()]
        } else {
            return false;
        };
        if hosts == [me] {
            return false;
        }
        let group = n.next_wid();
        n.gathers.insert(
            group,
            Gather::Task {
                to: Self::waiter(req),
                entries: Vec::new(),
                left: hosts.len(),
            },
        );
        for h in hosts {
            if h == me {
                let e = self.local_task_entries(where_);
                self.gather_task(group, e, out);
                continue;
            }
            match self.add_wait(Wait::Task { group, host: h }) {
                Some(wid) => self.dm_send_body(h, Dm::Task, wid, Body::DmTask(body::TidArg { tid: where_ }), out),
                None => self.gather_task(group, Vec::new(), out),
            }
        }
        true
    }

    fn local_signal(&mut self, tid: Tid, sig: i32, out: &mut Vec<Out>) {
        if self.mig_signal(tid, sig, out) {
            return; // mig_move.rs hook: a task that moved away
        }
        match self
            .tasks
            .get(&super::task_key(self.host.index, tid))
            .filter(|_| tid.is_task())
        {
            Some(t) if t.pid_verified && t.pid > 0 => out.push(Out::Signal(t.pid, sig)),
            _ => out.push(Out::Log(format!(
                "dm_sendsig() signal for t{:x} scrapped (no such task)",
                tid.bits()
            ))),
        }
    }

    fn dm_notify(&mut self, from: u32, wid: i32, nt: body::DmNotify, out: &mut Vec<Out>) {
        // mig_move.rs: a tid that moved away exists until its exit is announced.
        let exists = self.has_task(nt.tid) || self.mig.route_of(nt.tid).is_some();
        if nt.what & 0xff != TASK_EXIT || !exists {
            self.dm_send_body(
                from,
                Dm::NotifyAck,
                wid,
                Body::DmNotifyAck(body::TidArg { tid: nt.tid }),
                out,
            );
            return;
        }
        if let Some(n) = self.net.as_mut() {
            if n.watched.len() < MAX_WAITS {
                n.watched.push((nt.tid, from, wid));
            }
        }
    }

    /// TM_NOTIFY: task exits on other hosts become DM_NOTIFY; host kinds are kept here. True
    /// if nothing is left for the local handler.
    fn net_notify(&mut self, req: &Request, out: &mut Vec<Out>) -> bool {
        let Ok((what, ctx, tag, count, tids)) = wire::parse_notify(req.body) else {
            return false;
        };
        let kind = what & 0xff;
        let cancel = what & crate::notify::CANCEL != 0;
        let me = self.host.index;
        match kind {
            TASK_EXIT => {
                let (local, remote): (Vec<i32>, Vec<i32>) = tids.iter().partition(|t| Tid(**t).is_on_host(me));
                if remote.is_empty() || cancel {
                    return false;
                }
                for t in remote {
                    let t = Tid(t);
                    let known = self.net.as_ref().is_some_and(|n| n.table.get(t.host()).is_some());
                    if !known {
                        self.send_to_task(req.src, tag, ctx, req.hdr.wid, &wire::int_body(t.0), out);
                        continue;
                    }
                    let w = Wait::Notify {
                        watcher: req.src,
                        ctx,
                        tag,
                        about: t,
                        host: t.host(),
                    };
                    if let Some(wid) = self.add_wait(w) {
                        let b = Body::DmNotify(body::DmNotify {
                            what: TASK_EXIT,
                            tid: t,
                        });
                        self.dm_send_body(t.host(), Dm::Notify, wid, b, out);
                    }
                }
                if local.is_empty() {
                    return true;
                }
                // The local handler takes the local tids.
                let mut w = XdrWriter::new();
                w.int(what).int(ctx).int(tag).int(local.len() as i32);
                for t in &local {
                    w.int(*t);
                }
                let body = w.into_inner();
                let r = Request {
                    conn: req.conn,
                    src: req.src,
                    hdr: req.hdr,
                    body: &body,
                };
                self.tm_notify(&r, out);
                true
            }
            HOST_DELETE | HOST_ADD => {
                let Some(n) = self.net.as_mut() else { return false };
                let watcher = req.src;
                let mut now = Vec::new();
                if kind == HOST_ADD {
                    let same =
                        |p: &HostNotify| p.kind == HOST_ADD && p.watcher == watcher && p.ctx == ctx && p.tag == tag;
                    if count == 0 || cancel {
                        n.host_notifies.retain(|p| !same(p));
                    } else if let Some(p) = n.host_notifies.iter_mut().find(|p| same(p)) {
                        p.count = count;
                    } else if n.host_notifies.len() < MAX_WAITS {
                        n.host_notifies.push(HostNotify {
                            kind,
                            on: 0,
                            watcher,
                            ctx,
                            tag,
                            count,
                        });
                    }
                } else {
                    for t in tids {
                        let same = |p: &HostNotify| {
                            p.kind == HOST_DELETE && p.on == t && p.watcher == watcher && p.ctx == ctx && p.tag == tag
                        };
                        if cancel {
                            if let Some(i) = n.host_notifies.iter().position(same) {
                                n.host_notifies.remove(i);
                                now.push(t);
                            }
                        } else if n.table.get(Tid(t).host()).is_none() {
                            now.push(t);
                        } else if n.host_notifies.len() < MAX_WAITS {
                            n.host_notifies.push(HostNotify {
                                kind,
                                on: t,
                                watcher,
                                ctx,
                                tag,
                                count: 1,
                            });
                        }
                    }
                }
                for t in now {
                    self.send_to_task(watcher, tag, ctx, 0, &wire::int_body(t), out);
                }
                true
            }
            _ => false,
        }
    }

    /// Hook of `dispatch()`: requests that concern other hosts. True if handled here.
    pub(super) fn net_dispatch(&mut self, req: &Request, tm: Tm, out: &mut Vec<Out>) -> bool {
        let Some(n) = self.net.as_ref() else { return false };
        let master = n.table.master;
        let me = self.host.index;
        let alone = n.table.len() <= 1;
        if alone && !matches!(tm, Tm::AddHost | Tm::DelHost | Tm::Config | Tm::Notify) {
            return false;
        }
        match tm {
            Tm::Config => {
                let hosts: Vec<wire::HostEntry> = n
                    .table
                    .hosts
                    .values()
                    .map(|h| wire::HostEntry {
                        hostpart: h.hostpart(),
                        name: h.name.clone(),
                        arch: h.arch.clone(),
                        speed: h.speed,
                        dsig: h.dsig,
                    })
                    .collect();
                let body = wire::config_reply(&hosts, n.table.narches());
                self.reply(req, req.src, &body, out);
                true
            }
            Tm::Spawn => self.net_spawn(req, out),
            Tm::Task => self.net_task(req, out),
            Tm::Notify => self.net_notify(req, out),
            Tm::Pstat | Tm::HostSync => {
                let Ok(t) = wire::parse_int(req.body, "tid").map(Tid) else {
                    return false;
                };
                let h = t.host();
                if h == me || h == 0 || n.table.get(h).is_none() {
                    return false;
                }
                let to = Self::waiter(req);
                let (w, tag, body) = if tm == Tm::Pstat {
                    (
                        Wait::Pstat { to, host: h },
                        Dm::Pstat,
                        Body::DmPstat(body::TidArg { tid: t }),
                    )
                } else {
                    (Wait::HostSync { to, host: h }, Dm::HostSync, Body::Empty)
                };
                match self.add_wait(w) {
                    Some(wid) => self.dm_send_body(h, tag, wid, body, out),
                    None => self.reply(req, req.src, &wire::int_body(PvmError::OutOfRes.code()), out),
                }
                true
            }
            Tm::Mstat => {
                let Ok(name) = wire::parse_string(req.body, "TM_MSTAT host name") else {
                    return false;
                };
                let st = if n.table.by_name(&name).is_some() {
                    0
                } else {
                    PvmError::NoHost.code()
                };
                self.reply(req, req.src, &wire::int_body(st), out);
                true
            }
            Tm::SendSig => {
                let Ok((t, sig)) = wire::parse_two_ints(req.body, "tid", "signal") else {
                    return false;
                };
                let t = Tid(t);
                if !t.is_task() || t.is_on_host(me) || n.table.get(t.host()).is_none() {
                    return false;
                }
                self.reply(req, req.src, &[], out);
                let b = Body::DmSendSig(body::SendSig { tid: t, signum: sig });
                self.dm_send_body(t.host(), Dm::SendSig, 0, b, out);
                true
            }
            Tm::Mca => {
                // Remote destinations get DM_MCA; the local handler keeps the local ones.
                if let Ok(tids) = wire::parse_tid_list(req.body, "TM_MCA") {
                    let gtid = Tid::multicast_of(req.src);
                    let mut per: BTreeMap<u32, Vec<Tid>> = BTreeMap::new();
                    for t in tids.into_iter().map(Tid) {
                        if !t.is_on_host(me) && n.table.get(t.host()).is_some() {
                            per.entry(t.host()).or_default().push(t);
                        }
                    }
                    if let Some(n) = self.net.as_mut() {
                        if per.is_empty() {
                            n.mca_out.remove(&gtid);
                        } else {
                            n.mca_out.insert(gtid, per.keys().copied().collect());
                        }
                    }
                    for (h, tids) in per {
                        self.dm_send_body(h, Dm::Mca, 0, Body::DmMca(body::Mca { gtid, tids }), out);
                    }
                }
                false
            }
            Tm::Db if me != master => self.forward_to_master(req, Dm::Db, out),
            Tm::AddHost if me != master => self.forward_to_master(req, Dm::Add, out),
            Tm::DelHost if me != master => self.forward_to_master(req, Dm::DelHost, out),
            Tm::AddHost => self.master_addhost(req, out),
            Tm::DelHost => self.master_delhost(req, out),
            Tm::Halt if me != master => {
                self.dm_send(master, Dm::Halt.code(), 0, &[], out);
                true
            }
            _ => false,
        }
    }

    fn forward_to_master(&mut self, req: &Request, dm: Dm, out: &mut Vec<Out>) -> bool {
        let master = self.net.as_ref().map_or(1, |n| n.table.master);
        let w = Wait::Forward {
            to: Self::waiter(req),
            host: master,
        };
        match self.add_wait(w) {
            Some(wid) => {
                let body = if dm == Dm::Db {
                    // The owner is the connected task, whatever the request claims.
                    let mut b = req.body.to_vec();
                    if b.len() >= 8 {
                        b[4..8].copy_from_slice(&req.src.0.to_be_bytes());
                    }
                    b
                } else {
                    req.body.to_vec()
                };
                self.dm_send(master, dm.code(), wid, &body, out);
            }
            None => self.reply(req, req.src, &wire::int_body(PvmError::OutOfRes.code()), out),
        }
        true
    }

    /// DM_DB on the master: the mailbox operation for a task of another host.
    fn dm_db(&mut self, from: u32, wid: i32, raw: &[u8], out: &mut Vec<Out>) {
        // A lookup that waits for the entry is answered when a PUT brings it.
        if let Ok(db) = wire::DbReq::parse(raw) {
            let wait = pvm_proto::codes::MboxFlags::from_bits_retain(db.flags)
                .contains(pvm_proto::codes::MboxFlags::WAIT_FOR_INFO);
            let flags = db.flags & !pvm_proto::codes::MboxFlags::WAIT_FOR_INFO.bits();
            if wait && pvm_proto::codes::DbOp::from_code(db.op) == Some(pvm_proto::codes::DbOp::Get) {
                let owner = i32::from_be_bytes([raw[4], raw[5], raw[6], raw[7]]);
                if self.mbox.lookup(owner, &db.class, db.index, flags) == Err(PvmError::NotFound.code()) {
                    if let Some(n) = self.net.as_mut() {
                        if n.db_waiters.len() < super::MAX_DB_WAITERS {
                            n.db_waiters.push((from, wid, owner, db.class, db.index, flags));
                            return;
                        }
                    }
                }
            }
        }
        let body = self.mbox_op(raw, out);
        self.dm_send(from, Dm::DbAck.code(), wid, &body, out);
    }

    /// A mailbox request body (TM_DB / DM_DB) run against the mailbox; the reply body.
    /// (`PvmMboxWaitForInfo` is answered at once for remote tasks.)
    pub(super) fn mbox_op(&mut self, raw: &[u8], out: &mut Vec<Out>) -> Vec<u8> {
        let db = match wire::DbReq::parse(raw) {
            Ok(d) => d,
            Err(e) => {
                out.push(Out::Log(format!("dm_db() bad msg format: {e}")));
                return wire::int_body(PvmError::BadMsg.code());
            }
        };
        let tid = i32::from_be_bytes([raw[4], raw[5], raw[6], raw[7]]);
        let flags = db.flags & !pvm_proto::codes::MboxFlags::WAIT_FOR_INFO.bits();
        match pvm_proto::codes::DbOp::from_code(db.op) {
            Some(pvm_proto::codes::DbOp::Put) => {
                let rest = &raw[db.rest..];
                match crate::mbox::embedded_len(rest) {
                    Ok(n) => {
                        let cc = self.mbox.insert(tid, &db.class, db.index, db.flags, rest[..n].to_vec());
                        if cc >= 0 {
                            self.wake_db_waiters(&db.class, out);
                            self.watch_mbox_owner(Tid(tid), out); // reset.rs
                        }
                        wire::int_body(cc)
                    }
                    Err(_) => wire::int_body(PvmError::BadMsg.code()),
                }
            }
            Some(pvm_proto::codes::DbOp::Get) => match self.mbox.lookup(tid, &db.class, db.index, flags) {
                Ok((i, m)) => wire::db_get_reply(i, &m),
                Err(e) => wire::int_body(e),
            },
            Some(pvm_proto::codes::DbOp::Remove) => wire::int_body(self.mbox.delete(tid, &db.class, db.index)),
            Some(pvm_proto::codes::DbOp::Names) => wire::db_names_reply(&self.mbox.names(&db.class)),
            Some(pvm_proto::codes::DbOp::Reset) => self.mbox_reset_body(raw, &db, out), // reset.rs
            _ => wire::int_body(PvmError::NotImpl.code()),
        }
    }

    /// Hook of `wake_db_waiters()`: remote lookups on `class` that a PUT can now answer.
    pub(super) fn net_wake_db_waiters(&mut self, class: &str, out: &mut Vec<Out>) {
        let Some(n) = self.net.as_mut() else { return };
        let mut i = 0;
        let mut due = Vec::new();
        while i < n.db_waiters.len() {
            let (h, wid, owner, ref c, index, flags) = n.db_waiters[i];
            if c != class {
                i += 1;
                continue;
            }
            match self.mbox.lookup(owner, class, index, flags) {
                Err(e) if e == PvmError::NotFound.code() => i += 1,
                res => {
                    n.db_waiters.remove(i);
                    let body = match res {
                        Ok((idx, m)) => wire::db_get_reply(idx, &m),
                        Err(e) => wire::int_body(e),
                    };
                    due.push((h, wid, body));
                }
            }
        }
        for (h, wid, body) in due {
            self.dm_send(h, Dm::DbAck.code(), wid, &body, out);
        }
    }

    /// DM_HTDEL to every other host.
    pub(super) fn broadcast_htdel(&mut self, gone: &[u32], out: &mut Vec<Out>) {
        let Some(n) = self.net.as_mut() else { return };
        n.table.serial += 1;
        let b = HtDel {
            serial: n.table.serial,
            hosts: gone.iter().map(|h| Tid::pvmd(*h)).collect(),
        };
        let me = self.host.index;
        let others: Vec<u32> = n.table.hosts.keys().copied().filter(|h| *h != me).collect();
        let bytes = Body::DmHtDel(b).emit();
        for h in others {
            self.dm_send(h, Dm::HtDel.code(), 0, &bytes, out);
        }
    }

    pub(super) fn wait_htupd(&mut self, host: u32) -> Option<i32> {
        self.add_wait(Wait::HtUpd { host })
    }

    pub(super) fn wait_xcaps(&mut self, host: u32) -> Option<i32> {
        self.add_wait(Wait::Xcaps { host })
    }

    pub(super) fn take_xcaps_wait(&mut self, wid: i32) -> bool {
        match self.net.as_mut().map(|n| n.waits.remove(&wid)) {
            Some(Some(Wait::Xcaps { .. })) => true,
            Some(Some(other)) => {
                if let Some(n) = self.net.as_mut() {
                    n.waits.insert(wid, other);
                }
                false
            }
            _ => false,
        }
    }

    fn dm_htupdack(&mut self, host: u32, wid: i32, out: &mut Vec<Out>) {
        if self.debug & 0x10 != 0 {
            let w = self.net.as_ref().map(|n| format!("{:?}", n.waits.get(&wid)));
            out.push(Out::Log(format!("dm_htupdack() wid {wid} wait {w:?}")));
        }
        if let Some(Wait::HtUpd { .. }) = self.take_wait(wid) {
            self.htupd_acked(host, out);
        }
    }

    pub(super) fn commit_table(&mut self, t: HostTable, out: &mut Vec<Out>) {
        let Some(n) = self.net.as_mut() else { return };
        let added: Vec<u32> = t
            .hosts
            .keys()
            .filter(|i| !n.table.hosts.contains_key(i))
            .copied()
            .collect();
        n.table = t;
        self.host_added_notify(&added, out);
    }
}

/// TM_TASK reply: status 0 then the entries.
fn task_reply(entries: &[TaskEntry]) -> Vec<u8> {
    let list: Vec<wire::TaskEntry> = entries
        .iter()
        .map(|e| wire::TaskEntry {
            tid: e.tid,
            ptid: e.ptid,
            hostpart: e.host.0,
            flag: e.flag,
            a_out: e.a_out.to_string_lossy(),
            pid: e.pid,
        })
        .collect();
    wire::task_reply(0, &list)
}

/// Default mtu of this build's datagrams.
pub const MTU: usize = UDPMAXLEN;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::HostConfig;
    use crate::hosts::ddpro_line;
    use pvm_proto::body::AddHostAck;
    use pvm_proto::codes::{SYSCTX_TM, TDPROTOCOL};
    use pvm_proto::xdr::XdrReader;
    use std::time::UNIX_EPOCH;

    struct Auth;
    impl AuthFiles for Auth {
        fn write_task_auth(&mut self, _: &str) -> std::io::Result<()> {
            Ok(())
        }
        fn create_pvmd_auth(&mut self) -> std::io::Result<String> {
            Ok("/nonexistent/d".into())
        }
        fn pvmd_auth_written(&mut self, _: &str) -> std::io::Result<bool> {
            Ok(true)
        }
        fn remove(&mut self, _: &str) {}
    }

    type D = Daemon<Auth>;
    const M: &str = "10.0.0.1:4096";
    const S: &str = "10.0.0.2:5000";

    fn addr(s: &str) -> SocketAddrV4 {
        s.parse().unwrap()
    }

    fn request(d: &mut D, conn: ConnId, tag: Tm, wid: i32, body: &[u8]) -> Vec<Out> {
        let mut p = MsgHeader {
            enc: ENC_XDR,
            tag: tag.code(),
            ctx: SYSCTX_TM,
            wid,
            crc: 0,
        }
        .to_bytes()
        .to_vec();
        p.extend_from_slice(body);
        let fh = StreamFragHeader {
            dst: Tid::LOCAL_PVMD,
            src: Tid::UNCONNECTED,
            len: p.len() as u32,
            flags: FragFlags::SOM | FragFlags::EOM,
        };
        d.fragment(conn, fh, &p, UNIX_EPOCH)
    }

    /// Bodies of the messages sent to `conn` with tag `tag`.
    fn replies(out: &[Out], conn: ConnId, tag: Tm) -> Vec<Vec<u8>> {
        out.iter()
            .filter_map(|o| match o {
                Out::Send(c, b) if *c == conn => Some(b),
                _ => None,
            })
            .filter(|b| MsgHeader::parse(&b[16..]).map(|h| h.tag) == Ok(tag.code()))
            .map(|b| b[48..].to_vec())
            .collect()
    }

    fn connect(d: &mut D, conn: ConnId) -> Tid {
        d.accept(conn, Some(4242));
        let mut w = XdrWriter::new();
        w.int(TDPROTOCOL).string("/tmp/t");
        request(d, conn, Tm::Connect, 1, &w.into_inner());
        let mut w = XdrWriter::new();
        w.int(4242).int(0);
        let out = request(d, conn, Tm::Conn2, 2, &w.into_inner());
        let body = &replies(&out, conn, Tm::Conn2)[0];
        let mut r = XdrReader::new(body);
        r.int("ack").unwrap();
        Tid(r.int("tid").unwrap())
    }

    fn master() -> D {
        let mut d = Daemon::new(HostConfig::master("h1", "LINUX64", "0a000001:1000"), Auth, 0);
        d.enable_net(NetConfig::master(d.host(), addr(M)));
        d.net.as_mut().unwrap().route_mtu = |_| None; // hermetic: not this machine's routes
        d.set_hostfile(Default::default(), Vec::new());
        d
    }

    fn slave() -> D {
        let host = HostConfig {
            index: 2,
            ..HostConfig::master("10.0.0.2", "LINUX64", "0a000002:1388")
        };
        let mut t = HostTable {
            serial: 0,
            master: 1,
            console: 1,
            hosts: BTreeMap::new(),
        };
        for (i, a) in [(1, M), (2, S)] {
            t.hosts.insert(
                i,
                Host {
                    index: i,
                    name: format!("h{i}"),
                    arch: "LINUX64".into(),
                    addr: addr(a),
                    mtu: 4080,
                    speed: 1000,
                    dsig: 0x408c41,
                },
            );
        }
        let mut d = Daemon::new(host, Auth, 0);
        d.enable_net(NetConfig {
            addr: addr(S),
            table: t,
            mtu: MTU,
        });
        d.net.as_mut().unwrap().route_mtu = |_| None;
        d
    }

    /// Moves datagrams both ways until both are quiet; the outs of each.
    fn pump(m: &mut D, s: &mut D) -> (Vec<Out>, Vec<Out>) {
        let (mut om, mut os) = (Vec::new(), Vec::new());
        for _ in 0..1000 {
            let mut moved = false;
            while let Some(t) = m.net_transmit() {
                assert_eq!(t.dst, addr(S));
                os.extend(s.net_datagram(addr(M), &t.bytes));
                moved = true;
            }
            while let Some(t) = s.net_transmit() {
                assert_eq!(t.dst, addr(M));
                om.extend(m.net_datagram(addr(S), &t.bytes));
                moved = true;
            }
            if !moved {
                break;
            }
        }
        (om, os)
    }

    /// Master and slave joined by the add sequence; the task on the master that asked.
    fn machine() -> (D, D, Tid) {
        machine_with(|_| {})
    }

    /// [`machine`] with both daemons set up by `prep` before the add.
    fn machine_with(prep: impl Fn(&mut D)) -> (D, D, Tid) {
        let mut m = master();
        prep(&mut m);
        let t = connect(&mut m, 1);
        let mut w = XdrWriter::new();
        w.int(1).string("10.0.0.2 dx=/opt/pvmd ep=/opt/bin");
        let out = request(&mut m, 1, Tm::AddHost, 7, &w.into_inner());
        assert!(
            replies(&out, 1, Tm::AddHost).is_empty(),
            "no reply before the slave answers"
        );
        let starts = m.take_slave_starts();
        assert_eq!(starts.len(), 1);
        assert_eq!(
            starts[0].argv[1..],
            [
                "10.0.0.2".to_string(),
                "/opt/pvmd -s -d0x0 -n10.0.0.2 1 0a000001:1000 4080 2 0a000002:0000".to_string()
            ]
        );
        let mut s = slave();
        prep(&mut s);
        let out = m.slave_started(2, Ok(ddpro_line("LINUX64", addr(S), 4080, 0x408c41)));
        assert!(replies(&out, 1, Tm::AddHost).is_empty(), "no reply before the commit");
        let (om, _) = pump(&mut m, &mut s);
        let r = &replies(&om, 1, Tm::AddHost)[0];
        let hdr = MsgHeader {
            tag: Tm::AddHost.code(),
            ctx: SYSCTX_TM,
            enc: ENC_XDR,
            ..MsgHeader::default()
        };
        let Ok(Body::TmAddHostAck(AddHostAck { status, hosts, .. })) = body::decode(&hdr, Tid::LOCAL_PVMD, t, r) else {
            panic!("bad reply {r:02x?}")
        };
        assert_eq!((status, hosts[0].tid), (1, Tid(0x80000)));
        (m, s, t)
    }

    #[test]
    fn add_sequence_commits_both_tables_and_negotiates_the_window() {
        let (m, s, _) = machine();
        for d in [&m, &s] {
            let t = d.host_table().unwrap();
            assert_eq!((t.serial, t.len()), (2, 2));
        }
        assert_eq!(s.host_table().unwrap().get(2).unwrap().addr, addr(S));
        let win = |d: &D, h| d.net.as_ref().unwrap().ep.peer_info(h).unwrap().window;
        assert_eq!((win(&m, 2), win(&s, 1)), (XCAPS_WINDOW, XCAPS_WINDOW));
    }

    /// On a 1500-byte route both sides send datagrams of 1472 bytes (no IP fragments) and
    /// agree on a window of 88, as many bytes in flight as 32 of 4080; where only one side's
    /// route is small, the window stays 32 and only that side cuts its datagrams.
    #[test]
    fn xcaps_fits_datagrams_to_the_route_and_widens_the_window_to_match() {
        let info = |d: &D, h| {
            let p = d.net.as_ref().unwrap().ep.peer_info(h).unwrap();
            (p.window, p.mtu)
        };
        let (m, s, _) = machine_with(|d| d.net.as_mut().unwrap().route_mtu = |_| Some(1500));
        assert_eq!((info(&m, 2), info(&s, 1)), ((88, 1472), (88, 1472)));
        let (m, s, _) = machine_with(|d| {
            if d.host.index == 1 {
                d.net.as_mut().unwrap().route_mtu = |_| Some(1500);
            }
        });
        assert_eq!((info(&m, 2), info(&s, 1)), ((32, 1472), (32, 4080)));
    }

    #[test]
    fn xcaps_waits_for_the_criu_probe_and_the_add_does_not() {
        use super::super::mig_move::MigEvent;
        use super::super::xcaps::Later;
        // Both probe threads still running: the add completes (machine() checks the reply),
        // and the DM_XCAPS exchange waits for the probes instead of blocking on them.
        let (mut m, mut s, _) = machine_with(|d| d.mig.probe_pending = true);
        let win = |d: &D, h| d.net.as_ref().unwrap().ep.peer_info(h).unwrap().window;
        assert_eq!((win(&m, 2), win(&s, 1)), (1, 1));
        let later = |d: &D| d.net.as_ref().unwrap().xcaps_later.len();
        assert!(matches!(m.net.as_ref().unwrap().xcaps_later[..], [Later::Probe(2)]));
        assert_eq!(later(&s), 0);
        // The master's probe reports: its DM_XCAPS goes out; the slave's answer waits for the
        // slave's probe.
        let took = std::time::Duration::from_millis(5);
        let out = m.mig_event(MigEvent::Probed { took });
        assert!(
            out.iter()
                .any(|o| matches!(o, Out::Log(l) if l.ends_with("(probe 5 ms)"))),
            "{out:?}"
        );
        pump(&mut m, &mut s);
        assert_eq!((win(&m, 2), win(&s, 1), later(&m)), (1, 1, 0));
        assert!(matches!(
            s.net.as_ref().unwrap().xcaps_later[..],
            [Later::Answer(1, _, _)]
        ));
        s.mig_event(MigEvent::Probed { took });
        pump(&mut m, &mut s);
        assert_eq!((win(&m, 2), win(&s, 1)), (XCAPS_WINDOW, XCAPS_WINDOW));
        assert!(m.mig.peer_features(2).is_some(), "the slave's features were recorded");
    }

    #[test]
    fn config_spawn_and_messages_across() {
        let (mut m, mut s, t) = machine();
        let out = request(&mut m, 1, Tm::Config, 3, &[]);
        let rb = replies(&out, 1, Tm::Config).remove(0);
        let mut r = XdrReader::new(&rb);
        assert_eq!(r.int("n").unwrap(), 2);

        // A task on the slave sends to the master's task: cut through as datagrams.
        let st = connect(&mut s, 9);
        assert_eq!(st.host(), 2);
        let mut p = MsgHeader {
            enc: ENC_XDR,
            tag: 77,
            ctx: 0,
            wid: 0,
            crc: 0,
        }
        .to_bytes()
        .to_vec();
        p.extend_from_slice(b"\0\0\0\x2a");
        let fh = StreamFragHeader {
            dst: t,
            src: st,
            len: p.len() as u32,
            flags: FragFlags::SOM | FragFlags::EOM,
        };
        s.fragment(9, fh, &p, UNIX_EPOCH);
        let (om, _) = pump(&mut m, &mut s);
        let got: Vec<&Vec<u8>> = om
            .iter()
            .filter_map(|o| match o {
                Out::Send(1, b) => Some(b),
                _ => None,
            })
            .collect();
        assert_eq!(got.len(), 1, "{om:?}");
        let fh = StreamFragHeader::parse(got[0], u32::MAX).unwrap();
        assert_eq!((fh.src, fh.dst), (st, t));
        assert_eq!(&got[0][16..], &p[..]);

        // Task list over both hosts: DM_TASK to the slave.
        let out = request(&mut m, 1, Tm::Task, 4, &wire::int_body(0));
        assert!(replies(&out, 1, Tm::Task).is_empty());
        let (om, _) = pump(&mut m, &mut s);
        let body = &replies(&om, 1, Tm::Task)[0];
        let mut r = XdrReader::new(body);
        assert_eq!(r.int("status").unwrap(), 0);
        let mut tids = Vec::new();
        while !r.is_empty() {
            tids.push(r.int("tid").unwrap());
            for _ in 0..3 {
                r.int("x").unwrap();
            }
            r.string("a.out").unwrap();
            r.int("pid").unwrap();
        }
        assert_eq!(tids, vec![t.0, st.0]);
    }

    // ---- backlog.rs ----

    /// A fast sender to another host never loses a fragment at the full send queue: what does
    /// not fit waits in order, the sender's connection is paused past the bound and resumed
    /// once the backlog drains, and every message arrives once, in order.
    #[test]
    fn a_full_peer_queue_holds_and_pauses_the_sender_instead_of_dropping() {
        let (mut m, mut s, t) = machine();
        let st = connect(&mut s, 9);
        let count = 5000; // one datagram each: more than the 4096 the queue takes
        let mut out = Vec::new();
        for seq in 0..count {
            out.extend(seq_msg_on(&mut m, 1, t, st, seq as i32, 4000));
        }
        assert!(
            !out.iter().any(|o| matches!(o, Out::Log(l) if l.contains("full"))),
            "a fragment was refused: {out:?}"
        );
        let held = m.net.as_ref().unwrap().backlog.held_bytes();
        assert!(held > super::super::backlog::PAUSE_AT, "held {held}");
        let gates = m.net_backlog();
        assert!(gates.iter().any(|o| matches!(o, Out::Gate(1, true))), "{gates:?}");
        assert!(gates
            .iter()
            .any(|o| matches!(o, Out::Log(l) if l.contains("not read until"))));
        let mut got = Vec::new();
        let mut resumed = false;
        for _ in 0..10_000 {
            let (om, os) = pump(&mut m, &mut s);
            got.extend(seqs_on(&os, 9));
            assert!(!om.iter().any(|o| matches!(o, Out::Log(l) if l.contains("full"))));
            let g = m.net_backlog();
            resumed |= g.iter().any(|o| matches!(o, Out::Gate(1, false)));
            if got.len() == count && m.net.as_ref().unwrap().backlog.held_bytes() == 0 {
                break;
            }
        }
        assert_eq!(got, (0..count as i32).collect::<Vec<_>>());
        assert!(resumed, "the sender was never read again");
        assert_eq!(m.net.as_ref().unwrap().backlog.paused(), 0);
    }

    // ---- stream transport (stream.rs) ----

    /// A message with tag 77 and body `seq` from task `src` (connection 9 of `d`) to `dst`.
    fn seq_msg(d: &mut D, src: Tid, dst: Tid, seq: i32) {
        seq_msg_on(d, 9, src, dst, seq, 0);
    }

    /// [`seq_msg`] on connection `conn`, the body padded to `len` bytes; the daemon's outs.
    fn seq_msg_on(d: &mut D, conn: ConnId, src: Tid, dst: Tid, seq: i32, len: usize) -> Vec<Out> {
        let mut p = MsgHeader {
            enc: ENC_XDR,
            tag: 77,
            ..MsgHeader::default()
        }
        .to_bytes()
        .to_vec();
        p.extend_from_slice(&seq.to_be_bytes());
        p.resize(p.len().max(len), seq as u8);
        let fh = StreamFragHeader {
            dst,
            src,
            len: p.len() as u32,
            flags: FragFlags::SOM | FragFlags::EOM,
        };
        d.fragment(conn, fh, &p, UNIX_EPOCH)
    }

    /// The `seq`s of the tag-77 messages sent to connection 1.
    fn seqs(out: &[Out]) -> Vec<i32> {
        seqs_on(out, 1)
    }

    /// The `seq`s of the tag-77 messages sent to connection `conn`.
    fn seqs_on(out: &[Out], conn: ConnId) -> Vec<i32> {
        out.iter()
            .filter_map(|o| match o {
                Out::Send(c, b) if *c == conn && MsgHeader::parse(&b[16..]).map(|h| h.tag) == Ok(77) => {
                    Some(i32::from_be_bytes(b[48..52].try_into().unwrap()))
                }
                _ => None,
            })
            .collect()
    }

    /// Carries the stream commands of `from` (host `fh`, link generation `fg`) to `to`'s link
    /// generation `tg`, at most `limit` DATA frames; the rest are lost with the connection.
    fn stream_carry(from: &mut D, to: &mut D, fh: u32, tg: u64, limit: &mut usize) -> Vec<Out> {
        use super::super::stream::{FrameHeader, StreamCmd, KIND_DATA, PAYLOAD_PREFIX};
        let mut out = Vec::new();
        while let Some(cmd) = from.stream_poll() {
            if let StreamCmd::Write { frame, .. } = cmd {
                let h = FrameHeader::parse(&frame.hdr).unwrap();
                if h.kind == KIND_DATA {
                    if *limit == 0 {
                        continue;
                    }
                    *limit -= 1;
                }
                let mut buf = vec![0u8; PAYLOAD_PREFIX];
                buf.extend_from_slice(frame.mhdr.as_ref().map_or(&[][..], |m| &m[..]));
                buf.extend_from_slice(&frame.data);
                out.extend(to.stream_frame(fh, tg, h, buf));
            }
        }
        out
    }

    #[test]
    fn stream_switches_over_in_order_and_falls_back_without_loss() {
        use super::super::stream::StreamCmd;
        let (mut m, mut s, t) = machine();
        m.set_stream_port(7001);
        s.set_stream_port(7002);
        let st = connect(&mut s, 9);
        let mut out = Vec::new();
        m.xcaps_probe(2, &mut out);
        pump(&mut m, &mut s);
        // The lower index connects, to the slave's port, with the slave's cookie.
        let Some(StreamCmd::Connect {
            host: 2,
            gen: gm,
            addr: a,
            hello,
        }) = m.stream_poll()
        else {
            panic!("no connect")
        };
        assert_eq!(a, addr("10.0.0.2:7002"));
        // Garbage and strangers are refused.
        assert!(s
            .stream_accept(*addr(M).ip(), b"GET / HTTP/1.0\r\n\r\nxxxxxxxxx")
            .is_err());
        assert!(s.stream_accept("10.0.0.9".parse().unwrap(), &hello).is_err());
        // Five messages go as datagrams, not yet acknowledged when the stream comes up...
        for i in 0..5 {
            seq_msg(&mut s, st, t, i);
        }
        let (h, gs, ack) = s.stream_accept(*addr(M).ip(), &hello).unwrap();
        assert_eq!(h, 1);
        assert!(s.stream_accept(*addr(M).ip(), &hello).is_err(), "one stream per pair");
        assert!(m.stream_connected(2, gm, &ack).0);
        // ... five more are held until they are, then go on the stream.
        for i in 5..10 {
            seq_msg(&mut s, st, t, i);
        }
        let mut all = Vec::new();
        let mut lim = usize::MAX;
        assert!(
            stream_carry(&mut s, &mut m, 2, gm, &mut lim).is_empty(),
            "held while switching"
        );
        let (om, _) = pump(&mut m, &mut s);
        all.extend(seqs(&om));
        all.extend(seqs(&stream_carry(&mut s, &mut m, 2, gm, &mut lim)));
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        assert_eq!(s.stream_counts().0, 5, "the held five went on the stream");
        // Ten more; the connection breaks after three of them reached the master.
        for i in 10..20 {
            seq_msg(&mut s, st, t, i);
        }
        let mut three = 3;
        all.extend(seqs(&stream_carry(&mut s, &mut m, 2, gm, &mut three)));
        let mut none = 0;
        stream_carry(&mut m, &mut s, 1, gs, &mut none);
        // Sent while the slave does not know yet: to be resent too.
        seq_msg(&mut s, st, t, 20);
        stream_carry(&mut s, &mut m, 2, gm, &mut none);
        let out = s.stream_down(1, gs, "test");
        assert!(!out.is_empty());
        seq_msg(&mut s, st, t, 21); // held until the master's count arrives
        for _ in 0..3 {
            let (om, _) = pump(&mut m, &mut s);
            all.extend(seqs(&om));
            // The master gives its side up on the slave's DM_XSTREAM and closes it.
            while let Some(c) = m.stream_poll() {
                assert!(matches!(
                    c,
                    StreamCmd::Close { host: 2, .. } | StreamCmd::Write { .. } | StreamCmd::Log(_)
                ));
            }
        }
        assert_eq!(
            all,
            (0..22).collect::<Vec<_>>(),
            "nothing lost, nothing twice, in order"
        );
        // Back on datagrams (the master tries a new stream only 1 s later, stream.rs).
        seq_msg(&mut s, st, t, 22);
        while let Some(c) = s.stream_poll() {
            assert!(
                matches!(c, StreamCmd::Close { host: 1, .. } | StreamCmd::Log(_)),
                "{c:?}"
            );
        }
        let (om, _) = pump(&mut m, &mut s);
        assert_eq!(seqs(&om), vec![22]);
        // The new stream: due about 1 s after the fallback, the shell is woken for it.
        let due = m.net_deadline().expect("a deadline");
        assert!(due <= std::time::Duration::from_secs(1), "{due:?}");
        std::thread::sleep(due + std::time::Duration::from_millis(20));
        let hello = loop {
            match m.stream_poll() {
                Some(StreamCmd::Connect {
                    host: 2, gen, hello, ..
                }) => break (gen, hello),
                Some(StreamCmd::Log(_)) => {}
                c => panic!("no new connect: {c:?}"),
            }
        };
        let (gm2, hello) = hello;
        assert!(gm2 != gm);
        // Sent as datagrams while connecting, then held while switching: in order throughout.
        seq_msg(&mut s, st, t, 23);
        let (h, _, ack) = s.stream_accept(*addr(M).ip(), &hello).expect("accepted: drained");
        assert_eq!(h, 1);
        assert!(m.stream_connected(2, gm2, &ack).0);
        let before = s.stream_counts().0;
        seq_msg(&mut s, st, t, 24);
        let mut all = Vec::new();
        let mut lim = usize::MAX;
        assert!(
            stream_carry(&mut s, &mut m, 2, gm2, &mut lim).is_empty(),
            "held while switching"
        );
        let (om, _) = pump(&mut m, &mut s);
        all.extend(seqs(&om));
        all.extend(seqs(&stream_carry(&mut s, &mut m, 2, gm2, &mut lim)));
        seq_msg(&mut s, st, t, 25);
        all.extend(seqs(&stream_carry(&mut s, &mut m, 2, gm2, &mut lim)));
        assert_eq!(all, vec![23, 24, 25]);
        assert_eq!(s.stream_counts().0, before + 2, "24 and 25 went on the new stream");
    }

    #[test]
    fn stream_frames_for_other_hosts_tids_and_bad_acks_are_refused() {
        use super::super::stream::{FrameHeader, StreamCmd, FLAG_EOM, FLAG_SOM, KIND_DATA, PAYLOAD_PREFIX};
        let (mut m, mut s, t) = machine();
        m.set_stream_port(7001);
        s.set_stream_port(7002);
        let mut out = Vec::new();
        m.xcaps_probe(2, &mut out);
        pump(&mut m, &mut s);
        let Some(StreamCmd::Connect { gen: gm, hello, .. }) = m.stream_poll() else {
            panic!("no connect")
        };
        let (_, _, ack) = s.stream_accept(*addr(M).ip(), &hello).unwrap();
        assert!(m.stream_connected(2, gm, &ack).0);
        let frame = |src: Tid, ack: u64| {
            let mut buf = vec![0u8; PAYLOAD_PREFIX];
            buf.extend_from_slice(&MsgHeader::default().to_bytes());
            buf.extend_from_slice(&[0, 0, 0, 1]);
            let h = FrameHeader {
                kind: KIND_DATA,
                flags: FLAG_SOM | FLAG_EOM,
                len: 36,
                src,
                dst: t,
                ack,
            };
            (h, buf)
        };
        // A task tid of host 3 from host 2's stream: dropped and logged, never delivered.
        let (h, buf) = frame(Tid::task(3, 1), 0);
        let out = m.stream_frame(2, gm, h, buf);
        assert!(!out.iter().any(|o| matches!(o, Out::Send(1, _))), "{out:?}");
        assert!(out
            .iter()
            .any(|o| matches!(o, Out::Log(l) if l.contains("not of that host"))));
        // From a task of host 2 it is delivered.
        let (h, buf) = frame(Tid::task(2, 1), 0);
        let out = m.stream_frame(2, gm, h, buf);
        assert!(out.iter().any(|o| matches!(o, Out::Send(1, _))), "{out:?}");
        // An acknowledgement of frames never sent ends the stream (fallback).
        let (h, buf) = frame(Tid::task(2, 1), 5);
        let out = m.stream_frame(2, gm, h, buf);
        assert!(!out.iter().any(|o| matches!(o, Out::Send(1, _))), "{out:?}");
        assert!(matches!(m.stream_poll(), Some(StreamCmd::Close { host: 2, .. })));
        // Frames of the given-up stream are ignored.
        let (h, buf) = frame(Tid::task(2, 1), 0);
        assert!(m.stream_frame(2, gm, h, buf).is_empty());
    }

    #[test]
    fn mailbox_of_a_slave_task_lives_on_the_master() {
        let (mut m, mut s, _) = machine();
        let st = connect(&mut s, 9);
        // TM_DB NAMES from the slave's task is forwarded and answered by the master.
        let mut w = XdrWriter::new();
        w.int(pvm_proto::codes::DbOp::Names.code())
            .int(0)
            .string("*")
            .int(0)
            .int(0);
        let out = request(&mut s, 9, Tm::Db, 5, &w.into_inner());
        assert!(replies(&out, 9, Tm::Db).is_empty());
        let (_, os) = pump(&mut m, &mut s);
        let r = &replies(&os, 9, Tm::Db);
        assert_eq!(r.len(), 1, "{os:?}");
        assert_eq!(st.host(), 2);
    }

    #[test]
    fn a_slave_task_waiting_for_a_mailbox_entry_gets_it_when_the_master_task_puts_it() {
        let (mut m, mut s, t) = machine();
        connect(&mut s, 9);
        let mut w = XdrWriter::new();
        w.int(3).int(0).string("late").int(0).int(32);
        request(&mut s, 9, Tm::Db, 7, &w.into_inner());
        let (_, os) = pump(&mut m, &mut s);
        assert!(replies(&os, 9, Tm::Db).is_empty(), "waits: {os:?}");
        let embedded: Vec<u8> = [4u32, 0, 0, 0, 0x1000_0000, 0, t.0 as u32, 0, 4, 12345]
            .iter()
            .flat_map(|x| x.to_be_bytes())
            .collect();
        let mut w = XdrWriter::new();
        w.int(1).int(t.0).string("late").int(-1).int(0);
        let mut body = w.into_inner();
        body.extend_from_slice(&embedded);
        request(&mut m, 1, Tm::Db, 9, &body);
        let (_, os) = pump(&mut m, &mut s);
        assert_eq!(replies(&os, 9, Tm::Db), vec![wire::db_get_reply(0, &embedded)]);
    }

    /// reset.rs: a slave task's mailbox entries on the master, a `reset` from the master's
    /// console, DM_RESET to the slave, the task's exit answered by DM_RESETACK/DM_NOTIFYACK.
    #[test]
    fn reset_dooms_a_slave_tasks_persistent_entries_until_it_exits() {
        let (mut m, mut s, t) = machine();
        let doomed = connect(&mut s, 9);
        let kept = connect(&mut s, 10);
        let embedded: Vec<u8> = [4u32, 0, 0, 0, 0x1000_0000, 0, 0, 0, 4, 7]
            .iter()
            .flat_map(|x| x.to_be_bytes())
            .collect();
        let put = |s: &mut D, conn, class: &str, flags: i32| {
            let mut w = XdrWriter::new();
            w.int(pvm_proto::codes::DbOp::Put.code())
                .int(0)
                .string(class)
                .int(0)
                .int(flags);
            let mut body = w.into_inner();
            body.extend_from_slice(&embedded);
            request(s, conn, Tm::Db, 5, &body);
        };
        put(&mut s, 9, "pers", 1);
        put(&mut s, 9, "plain", 0);
        put(&mut s, 10, "kept", 1);
        pump(&mut m, &mut s);
        let owners = |m: &D| -> Vec<(String, i32)> {
            m.mbox
                .names("*")
                .into_iter()
                .flat_map(|(c, es)| es.into_iter().map(move |e| (c.clone(), e.1)))
                .collect()
        };
        let mut before = owners(&m);
        before.sort();
        assert_eq!(
            before,
            vec![
                ("kept".to_string(), kept.0),
                ("pers".to_string(), doomed.0),
                ("plain".to_string(), doomed.0)
            ]
        );
        // The console (t) resets, killing everything but itself and `kept`.
        let mut w = XdrWriter::new();
        w.int(pvm_proto::codes::DbOp::Reset.code())
            .int(t.0)
            .string("")
            .int(-1)
            .int(1);
        w.int(2).int(t.0).int(kept.0);
        let out = request(&mut m, 1, Tm::Db, 6, &w.into_inner());
        assert_eq!(replies(&out, 1, Tm::Db), vec![wire::int_body(0)]);
        pump(&mut m, &mut s);
        assert_eq!(owners(&m).len(), 3, "nothing goes before the owner exits");
        assert_eq!(
            s.net.as_ref().unwrap().reset_watched.len(),
            1,
            "the slave waits for the task"
        );
        // Both tasks exit: the doomed one's entries all go, the kept one's persistent entry stays.
        let mut out = s.closed(9);
        out.extend(s.closed(10));
        pump(&mut m, &mut s);
        assert_eq!(owners(&m), vec![("kept".to_string(), 0)], "{out:?}");
        assert!(s.net.as_ref().unwrap().reset_watched.is_empty());
        assert!(
            m.net.as_ref().unwrap().waits.is_empty(),
            "{:?}",
            m.net.as_ref().unwrap().waits
        );
        // A second reset removes the persistent entry its owner left behind.
        let mut w = XdrWriter::new();
        w.int(pvm_proto::codes::DbOp::Reset.code())
            .int(t.0)
            .string("")
            .int(-1)
            .int(1);
        w.int(1).int(t.0);
        request(&mut m, 1, Tm::Db, 7, &w.into_inner());
        pump(&mut m, &mut s);
        assert!(owners(&m).is_empty(), "orphaned persistent entry removed by the reset");
    }

    struct Found;
    impl super::super::Launcher for Found {
        fn find(&self, file: &str) -> Option<String> {
            Some(format!("/opt/{file}"))
        }
        fn launch(&mut self, _: Tid, _: &str, _: &[String], _: &[String]) -> std::io::Result<i32> {
            Ok(31337)
        }
    }

    fn spawn_body(flags: i32, where_: &str, count: i32) -> Vec<u8> {
        let mut w = XdrWriter::new();
        w.string("prog").int(flags).string(where_).int(count).int(0);
        w.int(0).int(0).int(0).int(0).int(0).int(0).int(0);
        w.into_inner()
    }

    #[test]
    fn default_spawns_that_fail_on_one_host_are_retried_on_another() {
        let (mut m, mut s, t) = machine();
        s.set_launcher(Box::new(Found));
        // Two tasks: one block per host; the master has no such program (NoLauncher).
        let out = request(&mut m, 1, Tm::Spawn, 5, &spawn_body(0, "", 2));
        assert!(replies(&out, 1, Tm::Spawn).is_empty());
        let (om, _) = pump(&mut m, &mut s);
        let rb = replies(&om, 1, Tm::Spawn).remove(0);
        let mut r = XdrReader::new(&rb);
        assert_eq!(r.int("n").unwrap(), 2);
        let tids = [Tid(r.int("t0").unwrap()), Tid(r.int("t1").unwrap())];
        assert!(tids.iter().all(|x| x.is_task() && x.host() == 2), "{tids:?}");
        assert_ne!(tids[0], tids[1]);
        // Pinned to the master's host: no retry, the error stays.
        let out = request(&mut m, 1, Tm::Spawn, 6, &spawn_body(1, "h1", 1));
        let (om, _) = pump(&mut m, &mut s);
        let mut all = out;
        all.extend(om);
        let rb = replies(&all, 1, Tm::Spawn).remove(0);
        let mut r = XdrReader::new(&rb);
        assert_eq!((r.int("n").unwrap(), r.int("t").unwrap()), (1, PvmError::NoFile.code()));
        let _ = t;
    }

    #[test]
    fn a_slave_that_goes_away_is_deleted_and_its_watchers_told() {
        let (mut m, s, _) = machine();
        // The master's task watches host 2 (PvmHostDelete, ctx 0, tag 55).
        let mut w = XdrWriter::new();
        w.int(HOST_DELETE).int(0).int(55).int(1).int(0x80000);
        assert!(request(&mut m, 1, Tm::Notify, 0, &w.into_inner()).is_empty());
        // A task on the master waits for a task list that the slave will never send.
        let out = request(&mut m, 1, Tm::Pstat, 8, &wire::int_body(0x80001));
        assert!(replies(&out, 1, Tm::Pstat).is_empty());
        while m.net_transmit().is_some() {}
        // The slave stops: FIN|ACK to the master.
        let bye = s.net_bailout();
        assert_eq!(bye.len(), 1);
        let out = m.net_datagram(addr(S), &bye[0].bytes);
        assert_eq!(m.host_table().unwrap().len(), 1);
        let note: Vec<Vec<u8>> = out
            .iter()
            .filter_map(|o| match o {
                Out::Send(1, b) if MsgHeader::parse(&b[16..]).map(|h| h.tag) == Ok(55) => Some(b[48..].to_vec()),
                _ => None,
            })
            .collect();
        assert_eq!(note, vec![wire::int_body(0x80000)]);
        assert_eq!(
            replies(&out, 1, Tm::Pstat),
            vec![wire::int_body(PvmError::HostFail.code())]
        );
    }

    #[test]
    fn halt_from_the_slave_and_delete_by_the_master() {
        let (mut m, mut s, _) = machine();
        connect(&mut s, 9);
        request(&mut s, 9, Tm::Halt, 1, &[]);
        let (om, _) = pump(&mut m, &mut s);
        assert!(om.contains(&Out::Halt), "DM_HALT reaches the master: {om:?}");

        let (mut m, mut s, _) = machine();
        let mut w = XdrWriter::new();
        w.int(1).string("10.0.0.2");
        let out = request(&mut m, 1, Tm::DelHost, 2, &w.into_inner());
        let rb = replies(&out, 1, Tm::DelHost).remove(0);
        let mut r = XdrReader::new(&rb);
        assert_eq!((r.int("n").unwrap(), r.int("st").unwrap()), (1, 0));
        let (_, os) = pump(&mut m, &mut s);
        assert!(os.contains(&Out::Halt), "FIN then FIN|ACK halts the slave: {os:?}");
        assert_eq!(m.host_table().unwrap().len(), 1);
    }

    #[test]
    fn a_lone_master_refuses_loopback_and_unknown_hosts() {
        let mut d = Daemon::new(HostConfig::master("vm", "LINUX64", "7f000001:1000"), Auth, 0);
        d.enable_net(NetConfig::master(d.host(), addr("127.0.0.1:4096")));
        connect(&mut d, 1);
        let mut w = XdrWriter::new();
        w.int(1).string("10.0.0.9");
        let out = request(&mut d, 1, Tm::AddHost, 2, &w.into_inner());
        let rb = replies(&out, 1, Tm::AddHost).remove(0);
        let mut r = XdrReader::new(&rb);
        assert_eq!(r.int("n").unwrap(), 1);
        r.int("narch").unwrap();
        assert_eq!(r.int("err").unwrap(), PvmError::IpLoopback.code());
        assert!(d.take_slave_starts().is_empty());
    }

    proptest::proptest! {
        /// Any DM_ message (known code or not, any body) from the master, in order, never
        /// panics a slave or a master, and every datagram is acknowledged.
        #[test]
        fn arbitrary_dm_messages_never_panic(
            msgs in proptest::collection::vec(
                (0u32..0x120, proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200), proptest::prelude::any::<i32>()),
                1..20,
            )
        ) {
            for to_master in [false, true] {
                // The master only knows the slave once it is in its table.
                let (mut d, from, src, dst) = if to_master {
                    (machine().0, addr(S), Tid::pvmd(2), Tid::pvmd(1))
                } else {
                    (slave(), addr(M), Tid::pvmd(1), Tid::pvmd(2))
                };
                let mut seq = if to_master { 3 } else { 1 };
                for (code, body, wid) in &msgs {
                    let dh = pvm_proto::frag::DatagramHeader {
                        dst,
                        src,
                        seq,
                        ack: 0,
                        flags: FragFlags::SOM | FragFlags::EOM | FragFlags::DAT,
                    };
                    let mh = MsgHeader {
                        enc: ENC_XDR,
                        tag: (0x8002_0000u32 + code) as i32,
                        ctx: 0,
                        wid: *wid,
                        crc: 0,
                    };
                    let mut b = dh.to_bytes().to_vec();
                    b.extend_from_slice(&mh.to_bytes());
                    b.extend_from_slice(body);
                    let _ = d.net_datagram(from, &b);
                    let mut acked = false;
                    while let Some(t) = d.net_transmit() {
                        let h = pvm_proto::frag::DatagramHeader::parse(&t.bytes).unwrap();
                        acked |= h.flags == FragFlags::ACK && h.ack == seq;
                    }
                    proptest::prop_assert!(acked, "datagram {seq} not acknowledged");
                    seq = seq.wrapping_add(1);
                }
            }
        }
    }
}
