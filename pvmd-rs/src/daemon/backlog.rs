//! Fragments for another pvmd that find its queue full wait here, in order, instead of being
//! dropped; a local task with too much waiting is not read from until it has drained.
//!
//! The queue towards a peer is bounded: the datagram window's send queue
//! (`DEFAULT_MAX_SEND_QUEUE` packets, about 16 MB) and a stream's hold while it switches
//! (stream.rs). A task that writes faster than a slow or lossy host takes used to lose the
//! fragments past that bound. Now a fragment that does not fit waits in the host's
//! **backlog**, and once anything waits for a host, everything else for that host waits
//! behind it, so the order on the link stays the order of arrival. The shell drains the
//! backlogs on every pass of its loop ([`Daemon::net_backlog`]), as acknowledgements make room.
//!
//! Memory stays bounded by **pausing the sender**: a local task with more than [`PAUSE_AT`]
//! bytes waiting is not read from ([`Out::Gate`]) until its share is down to [`RESUME_AT`]; it
//! blocks in its own write, as a legacy task does on a full socket. The daemon's own messages
//! cannot be paused; everything held together is capped at [`MAX_HELD`], past which a
//! fragment is dropped with a log line.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use pvm_proto::ddp::{SendError, Time};
use pvm_proto::mesg::MsgHeader;
use pvm_proto::Tid;

use super::netd::Net;
use super::stream::{Chunk, Sent};
use super::{AuthFiles, Daemon, Out};

/// Bytes waiting for one sender past which a local task is not read from.
pub(super) const PAUSE_AT: usize = 1 << 20;
/// A paused task is read from again once no more than this waits for it.
pub(super) const RESUME_AT: usize = 256 << 10;
/// Everything waiting, all hosts and senders together.
pub(super) const MAX_HELD: usize = 512 << 20;
/// What one held fragment counts besides its bytes (so that empty fragments count too).
const OVERHEAD: usize = 64;

/// The fragments waiting for each host, and who sent them.
#[derive(Debug, Default)]
pub struct Backlog {
    hosts: BTreeMap<u32, VecDeque<Sent>>,
    /// Bytes waiting per sender.
    by_src: HashMap<Tid, usize>,
    bytes: usize,
    paused: HashSet<Tid>,
    /// Senders to pause (true) or to read again (false), for [`Daemon::net_backlog`].
    changes: Vec<(Tid, bool)>,
    /// Senders whose first pause was logged.
    logged: HashSet<Tid>,
}

impl Backlog {
    fn waits(&self, host: u32) -> bool {
        self.hosts.get(&host).is_some_and(|q| !q.is_empty())
    }

    fn cost(s: &Sent) -> usize {
        s.data.len() + OVERHEAD
    }

    fn push(&mut self, host: u32, s: Sent, front: bool) {
        let n = Self::cost(&s);
        let src = s.src;
        let q = self.hosts.entry(host).or_default();
        if front {
            q.push_front(s);
        } else {
            q.push_back(s);
        }
        self.bytes += n;
        let mine = self.by_src.entry(src).or_default();
        *mine += n;
        if *mine > PAUSE_AT && self.paused.insert(src) {
            self.changes.push((src, true));
        }
    }

    fn release(&mut self, s: &Sent) {
        let n = Self::cost(s);
        self.bytes -= n;
        let left = match self.by_src.get_mut(&s.src) {
            Some(m) => {
                *m -= n;
                *m
            }
            None => 0,
        };
        if left == 0 {
            self.by_src.remove(&s.src);
        }
        if left <= RESUME_AT && self.paused.remove(&s.src) {
            self.changes.push((s.src, false));
        }
    }

    /// Bytes waiting for all hosts.
    #[cfg(test)]
    pub fn held_bytes(&self) -> usize {
        self.bytes
    }

    /// Senders paused now.
    #[cfg(test)]
    pub fn paused(&self) -> usize {
        self.paused.len()
    }
}

impl Net {
    /// Every fragment for another pvmd goes through here (see the module docs): sent if the
    /// host's queue takes it and nothing waits for that host, else held behind what waits.
    /// An error is a fragment that was not sent and will not be (logged by the caller).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn send_frag(
        &mut self,
        now: Time,
        host: u32,
        src: Tid,
        dst: Tid,
        header: Option<MsgHeader>,
        eom: bool,
        data: &[u8],
    ) -> Result<(), SendError> {
        if !self.backlog.waits(host) {
            match self.send_frag_now(now, host, src, dst, header, eom, data) {
                Err(SendError::QueueFull { .. }) => {}
                r => return r,
            }
        }
        let s = Sent {
            src,
            dst,
            header,
            eom,
            data: Chunk::copy(data),
        };
        self.hold(host, s)
    }

    /// [`Self::send_frag`] for bytes the stream may keep as they are (no copy).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn send_chunk(
        &mut self,
        now: Time,
        host: u32,
        src: Tid,
        dst: Tid,
        header: Option<MsgHeader>,
        eom: bool,
        data: Chunk,
    ) -> Result<(), SendError> {
        if !self.backlog.waits(host) {
            // A chunk shares its buffer: the clone costs a reference count.
            match self.send_chunk_now(now, host, src, dst, header, eom, data.clone()) {
                Err(SendError::QueueFull { .. }) => {}
                r => return r,
            }
        }
        let s = Sent {
            src,
            dst,
            header,
            eom,
            data,
        };
        self.hold(host, s)
    }

    fn hold(&mut self, host: u32, s: Sent) -> Result<(), SendError> {
        let b = &mut self.backlog;
        if b.bytes + Backlog::cost(&s) > MAX_HELD {
            return Err(SendError::HeldFull {
                host,
                held: b.bytes,
                cap: MAX_HELD,
            });
        }
        b.push(host, s, false);
        Ok(())
    }

    /// Fragments that go before anything held for `host` (a stream's frames not taken by the
    /// peer, resent as datagrams: they were accepted earlier). Sent at once as far as they fit.
    pub(super) fn hold_first(&mut self, now: Time, host: u32, frames: Vec<Sent>) -> Vec<String> {
        for s in frames.into_iter().rev() {
            self.backlog.push(host, s, true);
        }
        self.drain_backlog(now)
    }

    /// Sends what waits, host by host in order, as far as the queues take it. A host that is
    /// gone takes its backlog with it (one log line).
    pub(super) fn drain_backlog(&mut self, now: Time) -> Vec<String> {
        let mut logs = Vec::new();
        let hosts: Vec<u32> = self.backlog.hosts.keys().copied().collect();
        for host in hosts {
            while let Some(s) = self.backlog.hosts.get_mut(&host).and_then(VecDeque::pop_front) {
                let r = self.send_chunk_now(now, host, s.src, s.dst, s.header, s.eom, s.data.clone());
                match r {
                    Err(SendError::QueueFull { .. }) => {
                        self.backlog.hosts.entry(host).or_default().push_front(s);
                        break;
                    }
                    Ok(()) => self.backlog.release(&s),
                    Err(e) => {
                        self.backlog.release(&s);
                        let rest = self.backlog.hosts.remove(&host).unwrap_or_default();
                        let bytes: usize = rest.iter().map(|s| s.data.len()).sum::<usize>() + s.data.len();
                        for r in &rest {
                            self.backlog.release(r);
                        }
                        logs.push(format!(
                            "netoutput() {} fragments ({bytes} bytes) waiting for host {host} dropped: {e}",
                            rest.len() + 1
                        ));
                        break;
                    }
                }
            }
            if !self.backlog.waits(host) {
                self.backlog.hosts.remove(&host);
            }
        }
        logs
    }
}

impl<A: AuthFiles> Daemon<A> {
    /// The shell calls this on every pass of its loop: sends what waits for other hosts as
    /// far as their queues take it, and pauses or resumes the readers of local senders.
    pub fn net_backlog(&mut self) -> Vec<Out> {
        let mut out = Vec::new();
        let Some(n) = self.net.as_mut() else { return out };
        if n.backlog.hosts.is_empty() && n.backlog.changes.is_empty() {
            return out;
        }
        let now = n.now();
        out.extend(n.drain_backlog(now).into_iter().map(Out::Log));
        let changes = std::mem::take(&mut n.backlog.changes);
        for (tid, pause) in changes {
            if !tid.is_on_host(self.host.index) {
                continue; // not a local task: nothing to pause
            }
            let Some(conn) = self.tasks.get(&self.key(tid)).and_then(|t| t.conn) else {
                continue;
            };
            let n = self.net.as_mut().expect("checked above");
            if pause && n.backlog.logged.insert(tid) {
                out.push(Out::Log(format!(
                    "loclinpkt() t{:x}: over {} KB waits for other hosts; not read until it is sent",
                    tid.bits(),
                    PAUSE_AT >> 10
                )));
            }
            out.push(Out::Gate(conn, pause));
        }
        out
    }
}
