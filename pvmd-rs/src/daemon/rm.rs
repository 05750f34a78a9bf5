//! The resource-manager side of the daemon: the SM_ protocol (sdpro.c in the legacy daemon)
//! and what the daemon does when a resource manager (RM) fails.
//!
//! A task's library sends its spawn, task-list, configuration, add/delete-host and notify
//! requests straight to the RM (SM_SPAWN, SM_TASK, ... as ordinary messages in the base
//! context, the RM's tid having come in the TM_CONN2 reply); the RM answers them itself and
//! asks the pvmds to start processes (SM_EXEC -> SM_EXECACK) and to add hosts
//! (SM_ADD -> SM_ADDACK). The pvmd reports task exits (SM_TASKX), lost hosts (SM_HOSTX) and
//! tasks that connected on their own (SM_EXECACK) to the RM.
//!
//! The legacy daemon trusts the RM blindly: when it dies or hangs, every task that asks it
//! anything waits forever. Here the requests a local task sends to an RM (any task-to-task
//! message in the base context with an SM_ request tag: no user message can carry those tags
//! without PvmResvTids) are watched on their way out. If the RM dies (its task ends on this
//! host) or does not answer within [`rm_timeout`] (`PVMD_RM_TIMEOUT` seconds, default 5), the
//! pvmd answers the waiting requesters itself, as if the RM had — the reply carries the RM's
//! tid as source and the SM_ tag, which is what the library waits for — using its own
//! placement, logs it, and from then on answers every request sent to that RM at once. A late
//! answer of a slow RM to a request already answered is dropped, so a requester never sees two.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use pvm_proto::body::{self, Body, TidsOrError};
use pvm_proto::codes::{SlConfField, Sm, Tm, MSGHDR_LEN, SYSCTX_TM};
use pvm_proto::frag::{FragFlags, StreamFragHeader};
use pvm_proto::mesg::MsgHeader;
use pvm_proto::xdr::XdrWriter;
use pvm_proto::Tid;

use super::{AuthFiles, Daemon, Out, Request, MAX_SPAWN};
use crate::wire;

/// Default wait for an RM's answer before the pvmd answers for it.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Requests watched at once (beyond that, new ones are forwarded unwatched, as legacy does).
const MAX_PENDING: usize = 1024;
/// Longest request body kept for a fallback answer (a longer request is forwarded unwatched):
/// with MAX_PENDING, what a flood of requests can make the pvmd hold is bounded (64 MB).
const MAX_BODY: usize = 64 * 1024;
/// Least wait for an RM's answer to SM_ADDHOST/SM_DELHOST.
const HOSTS_WAIT: Duration = Duration::from_secs(90);
/// Requests being reassembled at once (one per sending task at most).
const MAX_PARTIAL: usize = 256;
/// RMs remembered as dead.
const MAX_DEAD: usize = 64;
/// Fallback answers remembered (for rewriting their replies) and how long.
const MAX_FALLBACKS: usize = 4096;
const FALLBACK_TTL: Duration = Duration::from_secs(900);
/// Wait ids of fallback requests: far above what a library or pvmd allocates.
const FALLBACK_WID_BASE: i32 = 0x7e00_0000;
/// Task flag of a resource manager in task lists (the legacy TF_ISSCHED).
const TF_ISSCHED: i32 = 0x100;

/// The RM's wait: `PVMD_RM_TIMEOUT` in seconds (fractions allowed, 0.1 .. 3600), else 5 s.
pub fn rm_timeout() -> Duration {
    std::env::var("PVMD_RM_TIMEOUT")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && (0.1..=3600.0).contains(s))
        .map(Duration::from_secs_f64)
        .unwrap_or(DEFAULT_TIMEOUT)
}

/// The TM_ request a pvmd answers in place of an RM's SM_ one (same body both ways).
fn tm_for(sm: Sm) -> Option<Tm> {
    Some(match sm {
        Sm::Spawn => Tm::Spawn,
        Sm::Task => Tm::Task,
        Sm::Config => Tm::Config,
        Sm::AddHost => Tm::AddHost,
        Sm::DelHost => Tm::DelHost,
        Sm::Sched => Tm::Sched,
        Sm::Notify => Tm::Notify,
        _ => return None,
    })
}

#[derive(Debug)]
struct Pending {
    rm: Tid,
    src: Tid,
    tag: Sm,
    hdr: MsgHeader,
    body: Vec<u8>,
    deadline: Instant,
}

#[derive(Debug)]
struct Partial {
    rm: Tid,
    tag: Sm,
    hdr: MsgHeader,
    body: Vec<u8>,
    /// The RM is known dead: the fragments are not forwarded; the pvmd answers at EOM.
    swallow: bool,
}

/// How to frame the replies of a request the pvmd answers for an RM.
#[derive(Debug)]
struct Fallback {
    rm: Tid,
    tm_tag: i32,
    sm_tag: i32,
    wid: i32,
    at: Instant,
}

/// Slave starts a hoster was asked for.
#[derive(Debug)]
struct HosterWait {
    hoster: Tid,
    wid: i32,
    /// Host indices of the starts.
    hosts: Vec<u32>,
    deadline: Instant,
}

/// How long a hoster may take to start the slaves it was asked for (then they fail; the
/// legacy daemon waits forever and refuses every other host add meanwhile).
const HOSTER_WAIT: Duration = Duration::from_secs(90);

/// State of the SM_ side; lives in the daemon.
#[derive(Debug, Default)]
pub struct RmState {
    timeout: Option<Duration>,
    pending: Vec<Pending>,
    partial: HashMap<u32, Partial>,
    dead: Vec<Tid>,
    fallbacks: HashMap<i32, Fallback>,
    /// (rm, requester, tag): a late RM reply to drop.
    swallow: Vec<(Tid, Tid, i32)>,
    /// Local task -> source of the rest of a reply being dropped.
    dropping: HashMap<u32, Tid>,
    next_wid: i32,
    /// Task (by its key in the task table) -> the RM to tell when it exits (the legacy t_sched).
    sched_of: HashMap<u32, Tid>,
    /// Tasks (keys in the task table) that registered as RM (TF_ISSCHED in task lists).
    was_sched: Vec<u32>,
    /// Host starts handed to the registered hoster (SM_STHOST), waiting for its SM_STHOSTACK.
    hoster_wait: Option<HosterWait>,
    /// What the next tasker starts belong to: the spawn flags, the instance of the next task
    /// in the whole spawn, and the spawn's size (set by each start path before its loop).
    start_ctx: (i32, i32, i32),
    /// Counters for tests and logs: answers given in place of an RM.
    pub fallbacks_answered: u64,
}

impl RmState {
    fn timeout(&mut self) -> Duration {
        *self.timeout.get_or_insert_with(rm_timeout)
    }

    fn is_dead(&self, tid: Tid) -> bool {
        self.dead.contains(&tid)
    }

    fn mark_dead(&mut self, tid: Tid) {
        if !self.dead.contains(&tid) {
            if self.dead.len() >= MAX_DEAD {
                self.dead.remove(0);
            }
            self.dead.push(tid);
        }
    }

    fn alloc_wid(&mut self) -> i32 {
        self.next_wid = if self.next_wid < FALLBACK_WID_BASE || self.next_wid >= i32::MAX - 1 {
            FALLBACK_WID_BASE
        } else {
            self.next_wid + 1
        };
        self.next_wid
    }

    /// Whether traffic between these two tasks must take the daemon's slow path (where it is
    /// watched): to or from an RM while something is registered, pending or known dead.
    fn watches(&self, src: Tid, dst: Tid, sched: Tid) -> bool {
        (sched != Tid::NONE && (src == sched || dst == sched))
            || self.pending.iter().any(|p| p.rm == src)
            || self.is_dead(dst)
            || self.is_dead(src)
    }
}

/// A request tag the RM answers (or SM_NOTIFY, which it acts on), in the base context.
fn watched_tag(hdr: &MsgHeader) -> Option<Sm> {
    if hdr.ctx != 0 {
        return None;
    }
    let sm = Sm::from_code(hdr.tag)?;
    tm_for(sm).map(|_| sm)
}

impl<A: AuthFiles> Daemon<A> {
    /// Hook of `relay_target`: the fast path must not bypass the watch.
    pub(super) fn rm_slow_path(&self, src: Tid, dst: Tid) -> bool {
        self.rm.watches(src, dst, self.reg.sched)
    }

    /// Hook of `route()` for a fragment a local task sends to another task or to a remote
    /// pvmd. Returns true when the fragment was dealt with here (not to be routed further).
    pub(super) fn rm_outgoing(&mut self, src: Tid, fh: &StreamFragHeader, payload: &[u8], out: &mut Vec<Out>) -> bool {
        let dst = fh.dst;
        if dst.is_pvmd() && !dst.is_on_host(self.host.index) {
            // An RM's SM_EXEC to another host's pvmd (legacy routes these too).
            return self.net_route(src, *fh, &mut super::stream::Payload::Borrowed(payload), out);
        }
        if !dst.is_task() {
            return false;
        }
        let key = src.bits();
        // Only requests to the RM registered here (or one that failed here): the same tags
        // travel back as its answers. Tasks on other hosts are not told of this RM (as with
        // the legacy daemon, whose TM_CONN2 reply there carries no RM).
        let to_rm = dst == self.reg.sched || self.rm.is_dead(dst);
        if fh.flags.contains(FragFlags::SOM) {
            self.rm.partial.remove(&key);
            if !to_rm {
                return false;
            }
            let Ok(hdr) = MsgHeader::parse(payload) else {
                return false;
            };
            let Some(tag) = watched_tag(&hdr) else { return false };
            let full = self.rm.pending.len() >= MAX_PENDING || self.rm.partial.len() >= MAX_PARTIAL;
            if full && !self.rm.is_dead(dst) {
                return false;
            }
            let body = payload.get(MSGHDR_LEN..).unwrap_or(&[]).to_vec();
            let swallow = self.rm.is_dead(dst);
            self.rm.partial.insert(
                key,
                Partial {
                    rm: dst,
                    tag,
                    hdr,
                    body,
                    swallow,
                },
            );
        } else if let Some(p) = self.rm.partial.get_mut(&key) {
            if p.rm != dst {
                return false;
            }
            if p.body.len() + payload.len() > MAX_BODY {
                let p = self.rm.partial.remove(&key);
                return p.is_some_and(|p| p.swallow);
            }
            p.body.extend_from_slice(payload);
        } else {
            return false;
        }
        let swallow = self.rm.partial.get(&key).is_some_and(|p| p.swallow);
        if fh.flags.contains(FragFlags::EOM) {
            if let Some(p) = self.rm.partial.remove(&key) {
                // Adding or deleting hosts legitimately takes long (slave start-up).
                let wait = match p.tag {
                    Sm::AddHost | Sm::DelHost => self.rm.timeout().max(HOSTS_WAIT),
                    _ => self.rm.timeout(),
                };
                let deadline = Instant::now() + wait;
                let pend = Pending {
                    rm: p.rm,
                    src,
                    tag: p.tag,
                    hdr: p.hdr,
                    body: p.body,
                    deadline,
                };
                if p.swallow {
                    self.rm_answer(pend, "it is gone", out);
                } else if p.tag != Sm::Notify {
                    self.rm.pending.push(pend);
                }
            }
        }
        swallow
    }

    /// Hook of `deliver()`: sees every message to a local task that is not relayed on the
    /// fast path; an RM's answer ends the wait for it. Returns false when the bytes must be
    /// dropped (a late answer to a request the pvmd already answered).
    pub(super) fn rm_incoming(&mut self, local: u32, bytes: &[u8]) -> bool {
        if self.rm.pending.is_empty() && self.rm.swallow.is_empty() && self.rm.dropping.is_empty() {
            return true;
        }
        let Ok(fh) = StreamFragHeader::parse(bytes, u32::MAX) else {
            return true;
        };
        if let Some(from) = self.rm.dropping.get(&local).copied() {
            if from == fh.src {
                if fh.flags.contains(FragFlags::EOM) {
                    self.rm.dropping.remove(&local);
                }
                return false;
            }
        }
        if !fh.flags.contains(FragFlags::SOM) || !fh.src.is_task() {
            return true;
        }
        let Some(hdr) = bytes.get(16..).and_then(|b| MsgHeader::parse(b).ok()) else {
            return true;
        };
        if hdr.ctx != 0 {
            return true;
        }
        let to = super::key_tid(self.host.index, local);
        if let Some(i) = self
            .rm
            .swallow
            .iter()
            .position(|&(rm, req, tag)| rm == fh.src && req == to && tag == hdr.tag)
        {
            self.rm.swallow.remove(i);
            if !fh.flags.contains(FragFlags::EOM) {
                self.rm.dropping.insert(local, fh.src);
            }
            return false;
        }
        if let Some(i) = self
            .rm
            .pending
            .iter()
            .position(|p| p.rm == fh.src && p.src == to && p.tag.code() == hdr.tag)
        {
            self.rm.pending.remove(i);
        }
        true
    }

    /// Frames a reply to a task: as from the pvmd, or, for a request the pvmd answers in
    /// place of an RM, as from that RM with the SM_ tag and the requester's wait id.
    pub(super) fn rm_frame(&self, dst: Tid, hdr: &MsgHeader, body: &[u8]) -> Vec<u8> {
        if let Some(f) = self.rm.fallbacks.get(&hdr.wid).filter(|f| f.tm_tag == hdr.tag) {
            return wire::frame_message(dst, f.rm, f.sm_tag, 0, f.wid, body);
        }
        wire::frame_message(dst, Tid::LOCAL_PVMD, hdr.tag, hdr.ctx, hdr.wid, body)
    }

    /// When the next RM wait runs out.
    pub fn rm_deadline(&self) -> Option<Duration> {
        let now = Instant::now();
        let h = self.rm.hoster_wait.as_ref().map(|w| w.deadline);
        self.rm
            .pending
            .iter()
            .map(|p| p.deadline)
            .chain(h)
            .min()
            .map(|d| d.saturating_duration_since(now))
    }

    /// The master's slave starts: to the registered hoster (SM_STHOST) if there is one, else
    /// returned for the pvmd to run itself (rsh).
    pub fn rm_slave_starts(&mut self) -> (Vec<super::master::SlaveStart>, Vec<Out>) {
        let starts = self.take_slave_starts();
        let mut out = Vec::new();
        let hoster = self.reg.hoster;
        if starts.is_empty() || hoster == Tid::NONE || self.rm.hoster_wait.is_some() {
            return (starts, out);
        }
        // SM_STHOST: int count; { int tid; string sopts; string login@host; string command;
        // string win32 command; string vmid } per host (ddpro.c addhosts()).
        let mut w = XdrWriter::new();
        w.int(starts.len() as i32);
        for st in &starts {
            let mut host = st.argv.get(1).cloned().unwrap_or_default();
            if let Some(i) = st.argv.iter().position(|a| a == "-l") {
                if let Some(login) = st.argv.get(i + 1) {
                    host = format!("{login}@{host}");
                }
            }
            let cmd = st.argv.last().cloned().unwrap_or_default();
            let vmid = st
                .stdin
                .as_deref()
                .and_then(|s| s.strip_prefix("PVM_VMID="))
                .map(|v| v.trim_end().to_string())
                .unwrap_or_default();
            w.int((st.index << Tid::HOST_SHIFT) as i32)
                .string("")
                .string(&host)
                .string(&cmd)
                .string("")
                .string(&vmid);
        }
        let wid = self.rm.alloc_wid();
        out.push(Out::Log(format!(
            "addhosts() hoster t{:x} starts {} slave(s)",
            hoster.bits(),
            starts.len()
        )));
        self.rm.hoster_wait = Some(HosterWait {
            hoster,
            wid,
            hosts: starts.iter().map(|s| s.index).collect(),
            deadline: Instant::now() + HOSTER_WAIT,
        });
        self.send_to_task(hoster, Sm::StHost.code(), 0, wid, &w.into_inner(), &mut out);
        (Vec::new(), out)
    }

    /// SM_STHOSTACK from the hoster: `int count; { int tid; string result }` per host, the
    /// result being the slave's ddpro line or an error name (ddpro.c startack()).
    fn sm_sthostack(&mut self, req: &Request, out: &mut Vec<Out>) {
        let ok = self
            .rm
            .hoster_wait
            .as_ref()
            .is_some_and(|w| w.hoster == req.src && w.wid == req.hdr.wid);
        let Some(w) = self.rm.hoster_wait.take().filter(|_| ok) else {
            return out.push(Out::Log(format!(
                "sm_sthostack() from t{:x} bad wid {}",
                req.src.bits(),
                req.hdr.wid
            )));
        };
        let mut r = pvm_proto::xdr::XdrReader::new(req.body);
        let mut answered = Vec::new();
        let n = r.int("sthostack count").unwrap_or(0).clamp(0, w.hosts.len() as i32);
        for _ in 0..n {
            let (Ok(tid), Ok(line)) = (r.int("sthostack tid"), r.string_bytes("sthostack result")) else {
                out.push(Out::Log("sm_sthostack() bad message format".into()));
                break;
            };
            let index = Tid(tid).host();
            if w.hosts.contains(&index) && !answered.contains(&index) {
                answered.push(index);
                let line = String::from_utf8_lossy(line).into_owned();
                out.extend(self.slave_started(index, Ok(line)));
            }
        }
        for index in w.hosts.into_iter().filter(|i| !answered.contains(i)) {
            out.extend(self.slave_started(index, Err("the hoster gave no result".into())));
        }
    }

    /// The hoster failed (gone or too slow): its starts fail, so the add completes.
    fn hoster_failed(&mut self, why: &str, out: &mut Vec<Out>) {
        if let Some(w) = self.rm.hoster_wait.take() {
            out.push(Out::Log(format!("addhosts() hoster t{:x} {why}", w.hoster.bits())));
            for index in w.hosts {
                out.extend(self.slave_started(index, Err(format!("hoster {why}"))));
            }
        }
    }

    /// Timer: answers the requests an RM left unanswered too long, and forgets old state.
    pub fn rm_timeout(&mut self) -> Vec<Out> {
        let mut out = Vec::new();
        let now = Instant::now();
        self.rm.fallbacks.retain(|_, f| now.duration_since(f.at) < FALLBACK_TTL);
        if self.rm.hoster_wait.as_ref().is_some_and(|w| w.deadline <= now) {
            self.hoster_failed("did not answer in time", &mut out);
        }
        let Some(late) = self.rm.pending.iter().find(|p| p.deadline <= now).map(|p| p.rm) else {
            return out;
        };
        let secs = self.rm.timeout().as_secs_f64();
        out.push(Out::Log(format!(
            "rm_timeout() resource manager t{:x} did not answer within {secs:.1} s; the pvmd answers its requests and places tasks itself",
            late.bits()
        )));
        self.rm_give_up(late, true, &mut out);
        out
    }

    /// The RM `rm` failed: answers everything waiting on it; with `late`, its answers that may
    /// still come are dropped.
    fn rm_give_up(&mut self, rm: Tid, late: bool, out: &mut Vec<Out>) {
        self.rm.mark_dead(rm);
        if self.reg.sched == rm {
            self.reg.sched = Tid::NONE;
        }
        let (mine, rest): (Vec<Pending>, Vec<Pending>) = std::mem::take(&mut self.rm.pending)
            .into_iter()
            .partition(|p| p.rm == rm);
        self.rm.pending = rest;
        for p in mine {
            if late && self.rm.swallow.len() < MAX_PENDING {
                self.rm.swallow.push((rm, p.src, p.tag.code()));
            }
            let why = if late {
                "it did not answer in time"
            } else {
                "it is gone"
            };
            self.rm_answer(p, why, out);
        }
    }

    /// Answers a request sent to a failed RM as the pvmd would have without an RM.
    fn rm_answer(&mut self, p: Pending, why: &str, out: &mut Vec<Out>) {
        let Some(conn) = self.tasks.get(&self.key(p.src)).and_then(|t| t.conn) else {
            return;
        };
        let Some(tm) = tm_for(p.tag) else { return };
        self.rm.fallbacks_answered += 1;
        out.push(Out::Log(format!(
            "rm_fallback() {} from t{:x} to resource manager t{:x} answered by the pvmd ({why})",
            p.tag.name(),
            p.src.bits(),
            p.rm.bits()
        )));
        let mut hdr = p.hdr;
        if tm == Tm::Notify {
            // Carries its own context; no reply.
            hdr.tag = tm.code();
            hdr.ctx = SYSCTX_TM;
        } else {
            if self.rm.fallbacks.len() >= MAX_FALLBACKS {
                if let Some(old) = self.rm.fallbacks.iter().min_by_key(|(_, f)| f.at).map(|(w, _)| *w) {
                    self.rm.fallbacks.remove(&old);
                }
            }
            let wid = self.rm.alloc_wid();
            self.rm.fallbacks.insert(
                wid,
                Fallback {
                    rm: p.rm,
                    tm_tag: tm.code(),
                    sm_tag: p.tag.code(),
                    wid: p.hdr.wid,
                    at: Instant::now(),
                },
            );
            hdr = MsgHeader {
                enc: p.hdr.enc,
                tag: tm.code(),
                ctx: SYSCTX_TM,
                wid,
                crc: 0,
            };
        }
        let req = Request {
            conn,
            src: p.src,
            hdr,
            body: &p.body,
        };
        self.dispatch(req, std::time::SystemTime::now(), out);
    }

    /// Hook of `task_gone()`: the RM's own death, and SM_TASKX for a task it placed.
    pub(super) fn rm_task_gone(&mut self, tid: Tid, out: &mut Vec<Out>) {
        let key = self.key(tid);
        self.rm.was_sched.retain(|&l| l != key);
        if let Some(rm) = self.rm.sched_of.remove(&key) {
            if rm != tid && !self.rm.is_dead(rm) {
                let mut w = XdrWriter::new();
                w.int(tid.0).int(0).int(0).int(0).int(0).int(0);
                self.send_to_task(rm, Sm::TaskX.code(), 0, 0, &w.into_inner(), out);
            }
        }
        if self.rm.hoster_wait.as_ref().is_some_and(|w| w.hoster == tid) {
            self.hoster_failed("exited", out);
        }
        if tid == self.reg.sched && tid.is_on_host(self.host.index) {
            self.rm_announce(Tid(0), out);
        }
        if tid == self.reg.sched || self.rm.pending.iter().any(|p| p.rm == tid) {
            let n = self.rm.pending.iter().filter(|p| p.rm == tid).count();
            out.push(Out::Log(format!(
                "rm_gone() resource manager t{:x} exited; the pvmd answers its {n} waiting requests and places tasks itself",
                tid.bits()
            )));
            self.rm_give_up(tid, false, out);
        }
    }

    /// Hook of TM_SCHED: a task that registers is alive, whatever it was before, and is
    /// listed with TF_ISSCHED from now on (as the legacy daemon does, even after a handoff).
    pub(super) fn rm_registered(&mut self, tid: Tid, out: &mut Vec<Out>) {
        self.rm.dead.retain(|&t| t != tid);
        let key = self.key(tid);
        if !self.rm.was_sched.contains(&key) && self.rm.was_sched.len() < MAX_DEAD {
            self.rm.was_sched.push(key);
        }
        self.rm_announce(tid, out);
    }

    /// Tells every other pvmd of the RM (DM_SLCONF field SCHED, the tid in hex as the legacy
    /// master sends it to hosts added after the RM registered; "0" when it is gone), so that
    /// tasks enrolling anywhere use it, and their pvmds watch their requests to it and fall
    /// back to their own placement when it fails (the legacy daemon tells only hosts added
    /// later, and never that the RM is gone).
    fn rm_announce(&mut self, tid: Tid, out: &mut Vec<Out>) {
        let me = self.host.index;
        let Some(hosts) = self
            .net
            .as_ref()
            .map(|n| n.table.hosts.keys().copied().filter(|&h| h != me).collect::<Vec<u32>>())
        else {
            return;
        };
        let body = body::Body::DmSlConf(body::SlConf {
            entries: vec![(SlConfField::Sched.code(), format!("{:x}", tid.bits()).as_str().into())],
        })
        .emit();
        for h in hosts {
            self.dm_send(h, pvm_proto::codes::Dm::SlConf.code(), 0, &body, out);
        }
    }

    /// DM_SLCONF field SCHED from another pvmd: the RM registered there (or "0": it is gone,
    /// and the requests waiting on it here are answered at once).
    pub(super) fn rm_announced(&mut self, value: &str, out: &mut Vec<Out>) {
        let tid = u32::from_str_radix(value.trim(), 16)
            .map(|t| Tid(t as i32))
            .unwrap_or(Tid::NONE);
        let old = self.reg.sched;
        if tid == Tid::NONE || tid.0 == 0 {
            if old != Tid::NONE && !old.is_on_host(self.host.index) {
                out.push(Out::Log(format!(
                    "rm_gone() resource manager t{:x} exited (its pvmd says so); the pvmd answers its requests and places tasks itself",
                    old.bits()
                )));
                self.rm_give_up(old, false, out);
            }
            return;
        }
        if self.debug & 0x8000 != 0 {
            out.push(Out::Log(format!("dm_slconf() sched<t{:x}>", tid.bits())));
        }
        self.rm.dead.retain(|&t| t != tid);
        self.reg.sched = tid;
    }

    /// The SCHED field for DM_SLCONF to hosts being added (as the legacy master sends it).
    pub(super) fn rm_slconf_field(&self) -> Option<(i32, String)> {
        (self.reg.sched != Tid::NONE).then(|| (SlConfField::Sched.code(), format!("{:x}", self.reg.sched.bits())))
    }

    /// TF_ISSCHED for the task list.
    pub(super) fn rm_task_flag(&self, key: u32) -> i32 {
        if self.rm.was_sched.contains(&key) {
            TF_ISSCHED
        } else {
            0
        }
    }

    /// Hook of TM_CONN2: the RM hears of a task that connected on its own (SM_EXECACK with one
    /// tid, as the legacy daemon sends) and is told when it exits.
    pub(super) fn rm_task_connected(&mut self, tid: Tid, out: &mut Vec<Out>) {
        let rm = self.reg.sched;
        if rm == Tid::NONE {
            return;
        }
        let key = self.key(tid);
        self.rm.sched_of.insert(key, rm);
        let mut w = XdrWriter::new();
        w.int(1).int(tid.0);
        self.send_to_task(rm, Sm::ExecAck.code(), 0, 0, &w.into_inner(), out);
    }

    /// Hook of `host_gone()` on the master: the RM hears of a lost host (SM_HOSTX).
    pub(super) fn rm_host_gone(&mut self, host: u32, out: &mut Vec<Out>) {
        let rm = self.reg.sched;
        // Only the master tells (slaves know the RM too, from DM_SLCONF, and say nothing, as
        // with the legacy daemon).
        if rm == Tid::NONE || host == self.host.index || !self.is_master() {
            return;
        }
        let mut w = XdrWriter::new();
        w.int(Tid::pvmd(host).0);
        self.send_to_task(rm, Sm::HostX.code(), 0, 0, &w.into_inner(), out);
    }

    /// SM_ messages to this pvmd from a local task: acted on only from the registered resource
    /// manager, tasker or hoster (anything else is logged and dropped, as the legacy does).
    pub(super) fn sm_entry(&mut self, sm: Sm, req: &Request, out: &mut Vec<Out>) {
        if self.conn_tid(req.conn).is_none() || !self.reg.may_send_sm(req.src) {
            return out.push(Out::Log(format!(
                "loclentry() message from t{:x} with bogus tag {} (not a registered RM/tasker/hoster)",
                req.src.bits(),
                sm.name()
            )));
        }
        let from_rm = req.src == self.reg.sched;
        match sm {
            Sm::Exec if from_rm => {
                let body = self.sm_exec(req.src, req.body, out);
                self.reply_as(req, Sm::ExecAck.code(), &body, out);
            }
            Sm::Add if from_rm => {
                // Same work and reply body as TM_ADDHOST; the reply's tag is SM_ADDACK.
                let mut hdr = req.hdr;
                hdr.tag = Sm::AddAck.code();
                let r = Request {
                    conn: req.conn,
                    src: req.src,
                    hdr,
                    body: req.body,
                };
                if !self.net_dispatch(&r, Tm::AddHost, out) {
                    self.tm_addhost(&r, out);
                }
            }
            Sm::Handoff if from_rm => match super::first_int(req.body) {
                Some(to) => {
                    self.reg.handoff(req.src, Tid(to));
                    out.push(Out::Log(format!(
                        "sm_handoff() resource manager t{:x} hands off to t{:x}",
                        req.src.bits(),
                        to
                    )));
                }
                None => out.push(Out::Log("sm_handoff() bad msg format".into())),
            },
            Sm::StHostAck if req.src == self.reg.hoster => self.sm_sthostack(req, out),
            Sm::TaskX if req.src == self.reg.tasker => {
                // The tasker reports a task it started as exited.
                if let Some(tid) = super::first_int(req.body).map(Tid) {
                    if self.has_task(tid) {
                        self.task_gone(tid, out);
                    }
                }
            }
            _ => out.push(Out::Log(format!(
                "sm_bogus() message from t{:x} tag {} ?",
                req.src.bits(),
                sm.name()
            ))),
        }
    }

    /// SM_EXEC from another host (the RM runs there and picked this host): acted on like a
    /// local one; the SM_EXECACK goes back over the network.
    pub(super) fn rm_net_entry(&mut self, src: Tid, hdr: &MsgHeader, body: &[u8], out: &mut Vec<Out>) -> bool {
        if hdr.tag != Sm::Exec.code() || !src.is_task() {
            return false;
        }
        let reply = self.sm_exec(src, body, out);
        self.send_to_task(src, Sm::ExecAck.code(), hdr.ctx, hdr.wid, &reply, out);
        true
    }

    /// Starts the processes of an SM_EXEC (same body as DM_EXEC); the SM_EXECACK body.
    fn sm_exec(&mut self, rm: Tid, body: &[u8], out: &mut Vec<Out>) -> Vec<u8> {
        let hdr = MsgHeader {
            enc: pvm_proto::codes::ENC_XDR,
            tag: Sm::Exec.code(),
            ctx: 0,
            wid: 0,
            crc: 0,
        };
        let x = match body::decode(&hdr, rm, Tid::pvmd(self.host.index), body) {
            Ok(Body::SmExec(x)) => x,
            Ok(_) | Err(_) => {
                out.push(Out::Log(format!("sm_exec() from t{:x}: bad msg format", rm.bits())));
                return Body::SmExecAck(TidsOrError::Error(pvm_proto::codes::PvmError::BadParam.code())).emit();
            }
        };
        let count = usize::try_from(x.count).unwrap_or(0).clamp(0, MAX_SPAWN as usize);
        let args: Vec<String> = x.argv.iter().map(|a| a.to_string_lossy()).collect();
        let env: Vec<String> = x.env.iter().map(|a| a.to_string_lossy()).collect();
        let file = x.file.to_string_lossy();
        if self.debug & 0x8000 != 0 {
            out.push(Out::Log(format!(
                "sm_exec() t{:x} asks for {count} x {file}",
                rm.bits()
            )));
        }
        let (first, outof) = x.placement.unwrap_or((0, x.count));
        self.rm_start_ctx(x.flags, first, outof); // for SM_STTASK
        let tids = self.exec_local(
            x.ptid,
            &file,
            &args,
            &env,
            count,
            (x.outtid.0, x.outctx, x.outtag),
            (x.trctid.0, x.trcctx, x.trctag),
            out,
        );
        for &t in &tids {
            if t > 0 {
                let key = self.key(Tid(t));
                self.rm.sched_of.insert(key, rm);
            }
        }
        let mut w = XdrWriter::new();
        w.int(tids.len() as i32);
        for t in tids {
            w.int(t);
        }
        w.into_inner()
    }

    /// Hook of the start paths (single-host spawn, DM_EXEC, SM_EXEC, a spawn's local block):
    /// the spawn flags, the instance of the first task started here within the whole spawn,
    /// and the spawn's size, for SM_STTASK (the legacy pvmd passes all three to its tasker).
    pub(super) fn rm_start_ctx(&mut self, flags: i32, first: i32, outof: i32) {
        self.rm.start_ctx = (flags, first.max(0), outof.max(0));
    }

    /// A registered tasker starts the process (SM_STTASK, task.c forkexec()): `int tid; int
    /// flags; string path; int argc; string argv[argc]; int nenv; string env[nenv]; int inst;
    /// int hosttotal; int outof` (flags, instance and size from [`Self::rm_start_ctx`]; the
    /// instance counts up per task; hosttotal is the number started here). The task connects with the PVMEPID cookie in `env`; the
    /// tasker reports its exit with SM_TASKX. The pid is unknown here (0: never signalled).
    pub(super) fn rm_sttask(
        &mut self,
        tid: Tid,
        path: &str,
        argv: &[String],
        env: &[String],
        count: usize,
        out: &mut Vec<Out>,
    ) -> std::io::Result<i32> {
        let tasker = self.reg.tasker;
        let (flags, inst, outof) = self.rm.start_ctx;
        self.rm.start_ctx.1 = inst.saturating_add(1);
        let outof = if outof > 0 { outof } else { count as i32 };
        let mut w = XdrWriter::new();
        w.int(tid.0).int(flags).string(path).int(argv.len() as i32);
        for a in argv {
            w.string(a);
        }
        w.int(env.len() as i32);
        for e in env {
            w.string(e);
        }
        w.int(inst).int(count as i32).int(outof);
        if self.debug & 0x4 != 0 {
            out.push(Out::Log(format!(
                "forkexec() tasker t{:x} starts t{:x} {path} (flags {flags:#x}, instance {inst} of {outof})",
                tasker.bits(),
                tid.bits()
            )));
        }
        self.send_to_task(tasker, Sm::StTask.code(), 0, 0, &w.into_inner(), out);
        Ok(0)
    }

    fn reply_as(&self, req: &Request, tag: i32, body: &[u8], out: &mut Vec<Out>) {
        let bytes = wire::frame_message(req.src, Tid::LOCAL_PVMD, tag, req.hdr.ctx, req.hdr.wid, body);
        out.push(Out::Send(req.conn, bytes));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::{AuthFiles, ConnId, HostConfig};
    use pvm_proto::codes::ENC_XDR;
    use pvm_proto::xdr::XdrReader;
    use std::time::UNIX_EPOCH;

    struct Auth;
    impl AuthFiles for Auth {
        fn write_task_auth(&mut self, _: &str) -> std::io::Result<()> {
            Ok(())
        }
        fn create_pvmd_auth(&mut self) -> std::io::Result<String> {
            Ok("/tmp/pvmtmp-rm-test".into())
        }
        fn pvmd_auth_written(&mut self, _: &str) -> std::io::Result<bool> {
            Ok(true)
        }
        fn remove(&mut self, _: &str) {}
    }

    fn frame(dst: Tid, tag: i32, ctx: i32, wid: i32, body: &[u8]) -> (StreamFragHeader, Vec<u8>) {
        let mut p = MsgHeader {
            enc: ENC_XDR,
            tag,
            ctx,
            wid,
            crc: 0,
        }
        .to_bytes()
        .to_vec();
        p.extend_from_slice(body);
        let h = StreamFragHeader {
            dst,
            src: Tid::UNCONNECTED,
            len: p.len() as u32,
            flags: FragFlags::SOM | FragFlags::EOM,
        };
        (h, p)
    }

    fn to_pvmd(d: &mut Daemon<Auth>, conn: ConnId, tm: Tm, body: &[u8]) -> Vec<Out> {
        let (h, p) = frame(Tid::LOCAL_PVMD, tm.code(), SYSCTX_TM, 1, body);
        d.fragment(conn, h, &p, UNIX_EPOCH)
    }

    /// Connects a task on `conn`; its tid and the RM tid its TM_CONN2 reply names.
    fn connect(d: &mut Daemon<Auth>, conn: ConnId) -> (Tid, i32) {
        d.accept(conn, Some(4242));
        let mut w = XdrWriter::new();
        w.int(1318).string("/tmp/pvmtmp000100.0");
        to_pvmd(d, conn, Tm::Connect, &w.into_inner());
        let mut w = XdrWriter::new();
        w.int(4242).int(0);
        let out = to_pvmd(d, conn, Tm::Conn2, &w.into_inner());
        let (_, _, body) = sends(&out, conn).remove(0);
        let mut r = XdrReader::new(&body);
        r.int("ack").unwrap();
        let tid = Tid(r.int("tid").unwrap());
        for _ in 0..9 {
            r.int("x").unwrap();
        }
        r.string("ip").unwrap();
        (tid, r.int("sched").unwrap())
    }

    /// Every message sent to `conn`: (frag header, message header, body).
    fn sends(out: &[Out], conn: ConnId) -> Vec<(StreamFragHeader, MsgHeader, Vec<u8>)> {
        out.iter()
            .filter_map(|o| match o {
                Out::Send(c, b) if *c == conn => Some(b),
                _ => None,
            })
            .map(|b| {
                let fh = StreamFragHeader::parse(b, u32::MAX).unwrap();
                let mh = MsgHeader::parse(&b[16..]).unwrap();
                (fh, mh, b[16 + MSGHDR_LEN..].to_vec())
            })
            .collect()
    }

    /// A resource manager on connection 1, a task on connection 2 that knows it.
    fn setup() -> (Daemon<Auth>, Tid, Tid) {
        let mut d = Daemon::new(HostConfig::master("vm", "LINUX64", "7f000001:801e"), Auth, 0);
        let (rm, _) = connect(&mut d, 1);
        to_pvmd(&mut d, 1, Tm::Sched, &[]);
        let (task, sched) = connect(&mut d, 2);
        assert_eq!(sched, rm.0, "the task is told of the RM");
        (d, rm, task)
    }

    fn logs(out: &[Out]) -> String {
        out.iter()
            .filter_map(|o| match o {
                Out::Log(l) => Some(format!("{l}\n")),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_dead_rm_is_answered_for_as_if_by_itself() {
        let (mut d, rm, _task) = setup();
        // SM_CONFIG to the RM goes through (the RM gets it), watched.
        let (h, p) = frame(rm, Sm::Config.code(), 0, 77, &[]);
        let out = d.fragment(2, h, &p, UNIX_EPOCH);
        let fwd = sends(&out, 1);
        assert_eq!(fwd.len(), 1);
        assert_eq!(fwd[0].1.tag, Sm::Config.code());
        assert!(sends(&out, 2).is_empty());
        // The RM's connection closes: the pvmd answers, as from the RM, with the SM_ tag and
        // the requester's wait id, and says so.
        let out = d.closed(1);
        let ans = sends(&out, 2);
        assert_eq!(ans.len(), 1, "{out:?}");
        let (fh, mh, body) = &ans[0];
        assert_eq!(fh.src, rm);
        assert_eq!((mh.tag, mh.ctx, mh.wid), (Sm::Config.code(), 0, 77));
        let mut r = XdrReader::new(body);
        assert_eq!(r.int("nhost").unwrap(), 1);
        let l = logs(&out);
        assert!(l.contains("rm_gone() resource manager"), "{l}");
        assert!(l.contains("rm_fallback() SM_CONFIG"), "{l}");
        // Later requests to the dead RM: answered at once, nothing forwarded anywhere.
        let (h, p) = frame(
            rm,
            Sm::Task.code(),
            0,
            78,
            &XdrWriter::new().int(0).clone().into_inner(),
        );
        let out = d.fragment(2, h, &p, UNIX_EPOCH);
        let ans = sends(&out, 2);
        assert_eq!(ans.len(), 1, "{out:?}");
        assert_eq!((ans[0].0.src, ans[0].1.tag, ans[0].1.wid), (rm, Sm::Task.code(), 78));
        // A task that connects now is not told of an RM.
        let (_, sched) = connect(&mut d, 3);
        assert_eq!(sched, 0);
    }

    #[test]
    fn a_silent_rm_times_out_and_its_late_answer_is_dropped() {
        let (mut d, rm, task) = setup();
        d.rm.timeout = Some(Duration::ZERO);
        let (h, p) = frame(rm, Sm::Config.code(), 0, 5, &[]);
        d.fragment(2, h, &p, UNIX_EPOCH);
        assert!(d.rm_deadline().is_some());
        let out = d.rm_timeout();
        let ans = sends(&out, 2);
        assert_eq!(ans.len(), 1, "{out:?}");
        assert_eq!((ans[0].0.src, ans[0].1.tag, ans[0].1.wid), (rm, Sm::Config.code(), 5));
        assert!(logs(&out).contains("did not answer within"), "{}", logs(&out));
        assert_eq!(d.reg.sched, Tid::NONE);
        // The RM wakes up and answers: that answer never reaches the task.
        let (mut h, p) = frame(
            task,
            Sm::Config.code(),
            0,
            5,
            &XdrWriter::new().int(1).clone().into_inner(),
        );
        h.src = rm;
        let out = d.fragment(1, h, &p, UNIX_EPOCH);
        assert!(sends(&out, 2).is_empty(), "{out:?}");
        // An answer in time ends the wait: no fallback.
        d.rm.dead.clear();
        to_pvmd(&mut d, 1, Tm::Sched, &[]);
        d.rm.timeout = Some(Duration::from_secs(60));
        let (h, p) = frame(rm, Sm::Config.code(), 0, 6, &[]);
        d.fragment(2, h, &p, UNIX_EPOCH);
        let (h, p) = frame(
            task,
            Sm::Config.code(),
            0,
            6,
            &XdrWriter::new().int(1).clone().into_inner(),
        );
        let out = d.fragment(1, h, &p, UNIX_EPOCH);
        assert_eq!(sends(&out, 2).len(), 1);
        assert!(d.rm.pending.is_empty());
        assert!(d.rm_deadline().is_none());
    }

    #[test]
    fn only_the_rm_may_exec_and_its_exec_is_acknowledged() {
        let (mut d, rm, _task) = setup();
        let mut w = XdrWriter::new();
        w.int(rm.0).string("nosuchprogram").int(0).int(2).int(0);
        w.int(0).int(0).int(0).int(0).int(0).int(0).int(0).int(0).int(2);
        let body = w.into_inner();
        let (h, p) = frame(Tid::LOCAL_PVMD, Sm::Exec.code(), 0, 9, &body);
        let out = d.fragment(1, h, &p, UNIX_EPOCH);
        let ans = sends(&out, 1);
        assert_eq!(ans.len(), 1, "{out:?}");
        assert_eq!((ans[0].1.tag, ans[0].1.wid), (Sm::ExecAck.code(), 9));
        let mut r = XdrReader::new(&ans[0].2);
        assert_eq!(r.int("count").unwrap(), 2);
        assert!(r.int("tid").unwrap() < 0, "no such program: an error code per task");
        // The same from an ordinary task: dropped with a log line.
        let out = d.fragment(2, h, &p, UNIX_EPOCH);
        assert!(sends(&out, 2).is_empty());
        assert!(logs(&out).contains("not a registered RM"), "{}", logs(&out));
    }

    #[test]
    fn only_base_context_request_tags_are_watched() {
        let h = |tag: u32, ctx| MsgHeader {
            enc: 0,
            tag: tag as i32,
            ctx,
            wid: 0,
            crc: 0,
        };
        assert_eq!(watched_tag(&h(0x8004_0001, 0)), Some(Sm::Spawn));
        assert_eq!(watched_tag(&h(0x8004_000a, 0)), Some(Sm::Notify));
        assert_eq!(watched_tag(&h(0x8004_0001, 5)), None);
        assert_eq!(watched_tag(&h(0x8004_0002, 0)), None, "SM_EXEC goes to a pvmd");
        assert_eq!(watched_tag(&h(7, 0)), None);
    }

    #[test]
    fn fallback_wids_stay_in_their_range() {
        let mut s = RmState::default();
        let a = s.alloc_wid();
        assert_eq!(a, FALLBACK_WID_BASE);
        s.next_wid = i32::MAX - 1;
        assert_eq!(s.alloc_wid(), FALLBACK_WID_BASE);
    }

    #[test]
    fn dead_list_is_bounded() {
        let mut s = RmState::default();
        for i in 1..=(MAX_DEAD as i32 + 10) {
            s.mark_dead(Tid(0x40000 + i));
        }
        assert_eq!(s.dead.len(), MAX_DEAD);
        assert!(s.is_dead(Tid(0x40000 + MAX_DEAD as i32 + 10)));
    }
}
