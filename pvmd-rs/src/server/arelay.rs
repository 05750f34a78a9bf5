//! Large messages on the daemon route between pvm-rs tasks of this host, passed by descriptor
//! through the daemon's shared arena (docs/extensions.md, "Daemon route: large messages through
//! the daemon's arena").
//!
//! Why: through the daemon a large message crosses two sockets. Each holds about 200 KB, so
//! the sender, the daemon and the receiver take turns in small steps, with a wake-up at each
//! (docs/bench-daemon.md): a round trip of 1 MB took as long as a raw socket copy of it, where
//! a direct route with the shared arena takes less than half.
//!
//! How (the library's half is in libpvm3-shim `vmread.rs`):
//! * Capability: [`feat::ARENA_RELAY`] in the TM_CONN2 trailer (this daemon has an arena) and in
//!   the task's TM_XCAPS (its library sends and takes descriptors). A legacy task never sees
//!   any of it.
//! * A task's `TC_VMDESC` (ctx SYSCTX_TC) for a task of this host: the pid it names must be the
//!   kernel's peer of the connection, and its pieces must lie in the sender's arena (mapped
//!   read-only here once per connection). The body is copied out with `memcpy`, and the sender
//!   is answered at once with a `TC_VMACK` from the pvmd's own tid (not the destination's: a
//!   fragment from that tid could fall between the fragments of a message the destination is
//!   sending to the sender). From then on the message is the daemon's, exactly as if it had
//!   come over the socket: the sender may reuse its buffer.
//! * To a task that announced the capability, where the relay would pass the message on: the
//!   body goes into a block of the daemon's own arena and the task gets a `TC_VMDESC_PVMD`
//!   naming it. Its writer is then claimed (`WriteCmd::Wait`, as splice.rs does) until the
//!   task answers `TC_VMACK_PVMD`: nothing else is written to it in between, so the order of
//!   its messages is kept. "Inline" (it could not map or read our arena): the message is
//!   written to it in full there and then, and it gets no more descriptors.
//! * Descriptors for one task queue behind each other's claims; the bytes of their blocks count
//!   as queued for that task until it answers, so the daemon's bound on what it holds for a
//!   task that does not read (64 MB, then the task is dropped) covers them.
//! * Anywhere else (a legacy task, another host, a task being parked, a resource manager's
//!   slow path): the message goes on as an ordinary fragment through the usual path.
//! * A task that ends with a descriptor unanswered: its writer drops the claim, and the block
//!   is freed at the next transfer (an ended claim is seen by its closed channel).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use pvm_arena::{Block, PeerArena};
use pvm_proto::codes::{MSGHDR_LEN, SYSCTX_TC};
use pvm_proto::frag::{FragFlags, StreamFragHeader};
use pvm_proto::mesg::MsgHeader;
use pvm_proto::vmdesc::{frame, Ack, Desc, ACK_DONE, ACK_INLINE, TC_VMACK, TC_VMACK_PVMD, TC_VMDESC, TC_VMDESC_PVMD};
use pvm_proto::Tid;
use tokio::sync::oneshot;

use super::splice::WaitEnd;
use super::{apply, queue, ConnHandle, WriteCmd};
use crate::daemon::migrate::feat;
use crate::daemon::{AuthFiles, ConnId, Daemon};
use crate::log::Log;

/// How long after not finding a sender's arena we look again.
const RELOOK: Duration = Duration::from_secs(1);

/// Largest body taken by descriptor (the library sends up to 32 MiB, `PVMD_RELAY_MAX`): the
/// copy runs on the event loop, and a descriptor is only as honest as its sender. Larger ones
/// are answered "inline".
const MAX_BODY: u64 = 64 << 20;

/// Blocks kept for reuse after a transfer, at most this many and this many bytes, each for at
/// most [`SPARE_IDLE`]. Why: a fresh block's pages are new to the daemon and to the mapping of
/// every task that reads it, a page fault per 4 KB on both sides; measured, that doubled a
/// round trip of 1 MB. A kept block is mapped everywhere already.
const SPARE_MAX: usize = 4;
const SPARE_BYTES: usize = 64 << 20;
const SPARE_IDLE: Duration = Duration::from_secs(10);

/// This daemon passes large messages by descriptor: its arena can be made (`PVM_NO_ARENA`, an
/// address-space limit, or `PVMD_NO_ARENA_RELAY` keep it off).
pub fn offered() -> bool {
    pvm_arena::off_reason().is_none() && std::env::var_os("PVMD_NO_ARENA_RELAY").is_none()
}

/// The transfer frame a fragment starts, if it is one the main loop handles here (by tag):
/// a task's descriptor for the daemon route, a task's answer to ours, or a task pretending
/// to be the daemon (a `TC_VMDESC_PVMD` of a task, which is dropped).
pub fn transfer_tag(h: &StreamFragHeader, p: &[u8]) -> Option<i32> {
    if !h.flags.contains(FragFlags::SOM) || p.len() < MSGHDR_LEN {
        return None;
    }
    let m = MsgHeader::parse(p).ok()?;
    (m.ctx == SYSCTX_TC && matches!(m.tag, TC_VMDESC | TC_VMDESC_PVMD | TC_VMACK_PVMD)).then_some(m.tag)
}

/// A descriptor of ours that a task has not answered yet.
struct Outstanding {
    conn: ConnId,
    /// The body, in our arena: its first `len` bytes.
    block: Block,
    len: usize,
    /// Fragment and message header of the real message (for an "inline" answer).
    head: Vec<u8>,
    /// Ends the claim of the task's writer.
    end: oneshot::Sender<WaitEnd>,
}

/// State of the arena relay of one daemon (owned by the main loop).
#[derive(Default)]
pub struct ArenaRelay {
    next_xid: u64,
    /// Senders' arenas mapped here, by connection, and when we last looked.
    peers: HashMap<ConnId, (Option<Arc<PeerArena>>, Option<Instant>)>,
    out: HashMap<u64, Outstanding>,
    /// Tasks that answered "inline": they get ordinary messages from now on.
    refused: HashSet<ConnId>,
    /// Blocks kept for the next transfers, with when they were given back.
    spare: Vec<(Block, Instant)>,
}

impl ArenaRelay {
    /// Handles one transfer frame from connection `id` (see [`transfer_tag`]); true if the
    /// daemon decided to halt meanwhile.
    pub fn handle<A: AuthFiles>(
        &mut self,
        tag: i32,
        id: ConnId,
        (h, p): (StreamFragHeader, Vec<u8>),
        daemon: &mut Daemon<A>,
        conns: &mut HashMap<ConnId, ConnHandle>,
        log: &mut Log,
    ) -> bool {
        // Claims whose task is gone (its writer dropped the receiving end) give their blocks back.
        let gone: Vec<u64> = self
            .out
            .iter()
            .filter(|(_, o)| o.end.is_closed())
            .map(|(x, _)| *x)
            .collect();
        for x in gone {
            if let Some(o) = self.out.remove(&x) {
                self.give_back(o.block);
            }
        }
        self.peers.retain(|c, _| conns.contains_key(c));
        self.refused.retain(|c| conns.contains_key(c));
        let body = &p[MSGHDR_LEN..];
        match tag {
            TC_VMDESC => self.sender_desc(id, h, body, daemon, conns, log),
            TC_VMACK_PVMD => {
                self.answered(id, body, conns, log);
                false
            }
            _ => {
                log.line(&format!(
                    "loclinpkt() connection {id}: a task sent a daemon's descriptor (tag {tag:#x}); dropped"
                ));
                false
            }
        }
    }

    fn sender_desc<A: AuthFiles>(
        &mut self,
        id: ConnId,
        h: StreamFragHeader,
        body: &[u8],
        daemon: &mut Daemon<A>,
        conns: &mut HashMap<ConnId, ConnHandle>,
        log: &mut Log,
    ) -> bool {
        let d = match Desc::parse(body) {
            Ok(d) => d,
            Err(e) => {
                log.line(&format!("loclinpkt() connection {id}: bad descriptor: {e}; dropped"));
                return false;
            }
        };
        let Some((src, pid)) = daemon.conn_task(id) else {
            log.line(&format!(
                "loclinpkt() connection {id}: descriptor before enrolment; dropped"
            ));
            return false;
        };
        // From the pvmd itself: a fragment from the destination's tid could fall between the
        // fragments of a message that task is sending to the sender, and be taken for one.
        let answer = |status: i32| {
            let a = Ack { xid: d.xid, status }.emit();
            frame(src, Tid::pvmd(src.host()), TC_VMACK, &a)
        };
        if d.total > MAX_BODY {
            log.line(&format!(
                "loclinpkt() t{:x}: descriptor of {} bytes, over {MAX_BODY}; asked for it inline",
                src.bits(),
                d.total
            ));
            return queue(conns, id, WriteCmd::Data(answer(ACK_INLINE)), daemon, log);
        }
        let total = d.total as usize;
        // The real message, as the sender would have written it in one fragment.
        let real = StreamFragHeader {
            dst: h.dst,
            src,
            len: (MSGHDR_LEN + total) as u32,
            flags: FragFlags::SOM | FragFlags::EOM,
        };
        let target = daemon.relay_target(id, &real);
        let by_desc = target
            .filter(|(to, _)| !self.refused.contains(to) && daemon.conn_task_features(*to) & feat::ARENA_RELAY != 0);
        let arena = self.sender_arena(id, pid, d.pid);
        let mut block = by_desc.and_then(|_| self.take_block(total));
        let mut inline: Vec<u8> = Vec::new();
        let copied = arena.as_deref().and_then(|a| {
            let dst: &mut [u8] = match block.as_mut() {
                Some(b) => &mut b.as_mut_slice()[..total],
                None => {
                    inline.reserve_exact(MSGHDR_LEN + total);
                    inline.extend_from_slice(&d.header.to_bytes());
                    inline.resize(MSGHDR_LEN + total, 0);
                    &mut inline[MSGHDR_LEN..]
                }
            };
            copy_pieces(a, &d.pieces, dst)
        });
        if copied.is_none() {
            // Not readable here (no arena of that pid, pieces outside it): the sender sends
            // the message over its socket instead, as it would to a legacy daemon.
            log.line(&format!(
                "loclinpkt() t{:x}: large message to t{:x} not readable from its arena; asked for it inline",
                src.bits(),
                h.dst.bits()
            ));
            return queue(conns, id, WriteCmd::Data(answer(ACK_INLINE)), daemon, log);
        }
        // The sender may go on once the bytes are ours; the destination is told first (it
        // waits, the sender does not).
        let mut halt = false;
        let Some(((to, hdr), block)) = by_desc.zip(block) else {
            match target {
                Some((to, hdr)) => halt |= queue(conns, to, WriteCmd::Frags(vec![(hdr, inline)]), daemon, log),
                None => {
                    let outs = daemon.fragment_owned(id, real, inline, SystemTime::now());
                    halt |= apply(outs, daemon, conns, log);
                }
            }
            return halt | queue(conns, id, WriteCmd::Data(answer(ACK_DONE)), daemon, log);
        };
        self.next_xid = self.next_xid.wrapping_add(1);
        let xid = self.next_xid;
        let ours = Desc {
            xid,
            pid: std::process::id() as i32,
            header: d.header,
            total: d.total,
            pieces: vec![(block.as_slice().as_ptr() as u64, total as u64)],
        };
        let mut head = hdr.to_vec();
        head.extend_from_slice(&d.header.to_bytes());
        // The destination as the relay names it (hdr, rewritten for this host).
        let dst = StreamFragHeader::parse(&hdr, u32::MAX).map_or(h.dst, |r| r.dst);
        let (end, wait) = oneshot::channel();
        halt |= queue(
            conns,
            to,
            WriteCmd::Data(frame(dst, src, TC_VMDESC_PVMD, &ours.emit())),
            daemon,
            log,
        );
        halt |= queue(conns, to, WriteCmd::Wait(wait), daemon, log);
        // The block counts as queued for the task until it answers: the daemon's bound on what
        // it holds for a task that does not read (MAX_QUEUED) covers descriptors too.
        if let Some(c) = conns.get(&to) {
            c.out.queued().fetch_add(total, Ordering::Relaxed);
        }
        self.out.insert(
            xid,
            Outstanding {
                conn: to,
                block,
                len: total,
                head,
                end,
            },
        );
        halt |= queue(conns, id, WriteCmd::Data(answer(ACK_DONE)), daemon, log);
        halt
    }

    /// A task's answer to one of our descriptors: the claim on its writer ends.
    fn answered(&mut self, id: ConnId, body: &[u8], conns: &mut HashMap<ConnId, ConnHandle>, log: &mut Log) {
        let a = match Ack::parse(body) {
            Ok(a) => a,
            Err(e) => {
                log.line(&format!(
                    "loclinpkt() connection {id}: bad descriptor answer: {e}; dropped"
                ));
                return;
            }
        };
        let Some(o) = self.out.remove(&a.xid).filter(|o| o.conn == id) else {
            log.line(&format!(
                "loclinpkt() connection {id}: answer to unknown descriptor {}; dropped",
                a.xid
            ));
            return;
        };
        if let Some(c) = conns.get(&id) {
            c.out.queued().fetch_sub(o.len, Ordering::Relaxed);
        }
        let mut end = WaitEnd::default();
        if a.status != ACK_DONE {
            log.line(&format!(
                "loclinpkt() connection {id}: could not read the daemon's arena (status {}); sending large messages inline",
                a.status
            ));
            self.refused.insert(id);
            end.data = o.head;
            end.data.extend_from_slice(&o.block.as_slice()[..o.len]);
            if let Some(c) = conns.get(&id) {
                // The writer counts what the end of a claim writes out of the queue.
                c.out.queued().fetch_add(end.data.len(), Ordering::Relaxed);
            }
        }
        let _ = o.end.send(end);
        self.give_back(o.block);
    }

    /// A block of at least `len` bytes: a kept one not more than twice as large, or a new one.
    fn take_block(&mut self, len: usize) -> Option<Block> {
        let fits = |b: &Block| b.len() >= len && b.len() / 2 <= len;
        let best = (0..self.spare.len())
            .filter(|&i| fits(&self.spare[i].0))
            .min_by_key(|&i| self.spare[i].0.len());
        match best {
            Some(i) => Some(self.spare.swap_remove(i).0),
            None => Block::new(len),
        }
    }

    /// When the oldest kept block has been idle for [`SPARE_IDLE`] (None: none kept).
    pub fn trim_due(&self) -> Option<tokio::time::Instant> {
        let oldest = self.spare.iter().map(|(_, t)| *t).min()?;
        Some(tokio::time::Instant::from_std(oldest + SPARE_IDLE))
    }

    /// Frees the kept blocks idle for [`SPARE_IDLE`] (their pages go back to the kernel).
    pub fn trim(&mut self) {
        let now = Instant::now();
        self.spare.retain(|(_, t)| now.duration_since(*t) < SPARE_IDLE);
    }

    /// Keeps a block for reuse, within the bounds above (the oldest go first).
    fn give_back(&mut self, b: Block) {
        self.trim();
        self.spare.push((b, Instant::now()));
        while self.spare.len() > SPARE_MAX || self.spare.iter().map(|(b, _)| b.len()).sum::<usize>() > SPARE_BYTES {
            self.spare.remove(0);
        }
    }

    /// The arena of the task on `id` (kernel pid `pid`), if the descriptor's pid is that one.
    fn sender_arena(&mut self, id: ConnId, pid: Option<i32>, claimed: i32) -> Option<Arc<PeerArena>> {
        let pid = pid.filter(|&p| p == claimed)?;
        let e = self.peers.entry(id).or_insert((None, None));
        if e.0.is_none() && !e.1.is_some_and(|t| t.elapsed() < RELOOK) {
            e.1 = Some(Instant::now());
            e.0 = PeerArena::open(pid).map(Arc::new);
        }
        e.0.clone()
    }
}

/// Copies the pieces (addresses in the sender) into `dst`, all from the sender's arena; None if
/// one lies outside it or the lengths do not add up.
fn copy_pieces(a: &PeerArena, pieces: &[(u64, u64)], dst: &mut [u8]) -> Option<()> {
    let mut at = 0usize;
    for &(addr, len) in pieces {
        let len = usize::try_from(len).ok()?;
        let p = a.find(addr, len as u64)?;
        let to = dst.get_mut(at..at.checked_add(len)?)?;
        // SAFETY: `p..p+len` lies in the read-only mapping of the sender's arena (checked by
        // `find`; the file is sealed against shrinking, so no page can vanish under the copy).
        to.copy_from_slice(unsafe { std::slice::from_raw_parts(p, len) });
        at += len;
    }
    (at == dst.len()).then_some(())
}
