//! The group server's state and decisions, without I/O: requests come in as [`Request`]
//! values, what to send goes out as [`Out`] actions. `main.rs` is the PVM task around it.
//!
//! Compatibility with the legacy group library fixes more than the message formats
//! (messages.md §9): instance numbers are the lowest free slot, the tid table grows in steps
//! of ten and is sent whole (holes included) to members of a frozen group, hosts are kept
//! ordered by host tid with the lowest member tid of each host as its coordinator, and a
//! barrier or a freeze is answered only when it completes (errors are answered at once).

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Request tags (and reply tags).
pub mod tag {
    pub const DIE: i32 = 0;
    pub const JOIN: i32 = 1;
    pub const LEAVE: i32 = 2;
    pub const BARRIER: i32 = 3;
    pub const BCAST: i32 = 4;
    pub const GETINST: i32 = 5;
    pub const GETTID: i32 = 6;
    pub const GSIZE: i32 = 7;
    pub const RESET: i32 = 8;
    pub const DUMP: i32 = 9;
    pub const GSLS: i32 = 10;
    pub const DEADTID: i32 = 11;
    pub const TIDLIST: i32 = 12;
    pub const STATICGROUP: i32 = 13;
    pub const HOSTCHAR: i32 = 14;
    pub const HOSTCHARV: i32 = 15;
    pub const BARRIERV: i32 = 16;
}

pub const NOTID: i32 = -1;
pub const STATIC: i32 = 1;
pub const DYNAMIC: i32 = 2;
pub const STATICDEAD: i32 = 3;

/// Growth step of the tid, barrier and info tables (legacy DELTANTIDS).
const DELTA: usize = 10;

pub const PVM_OK: i32 = 0;
pub const PVM_MISMATCH: i32 = -3;
pub const PVM_SYS_ERR: i32 = -14;
pub const PVM_NULL_GROUP: i32 = -17;
pub const PVM_DUP_GROUP: i32 = -18;
pub const PVM_NO_GROUP: i32 = -19;
pub const PVM_NOT_IN_GROUP: i32 = -20;
pub const PVM_NO_INST: i32 = -21;

/// A decoded request; `from` is the sender's tid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Die,
    Join(Vec<u8>),
    Leave(Vec<u8>),
    /// The tid in the body of a PvmTaskExit notification.
    DeadTid(i32),
    /// `by_host`: BARRIERV, a host coordinator standing for all members on its host.
    Barrier {
        group: Vec<u8>,
        count: i32,
        by_host: bool,
    },
    /// `holes_not_allowed`: TIDLIST (scatter/gather) rather than BCAST.
    TidList {
        group: Vec<u8>,
        holes_not_allowed: bool,
    },
    Gsize(Vec<u8>),
    GetInst(Vec<u8>, i32),
    GetTid(Vec<u8>, i32),
    Static(Vec<u8>, i32),
    Dump,
    Ls,
    HostChar(Vec<u8>, i32),
    HostCharV(Vec<u8>),
    /// Any other tag: ignored, as by the legacy server.
    Other,
}

/// One packed item of a reply, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Int(i32),
    Ints(Vec<i32>),
    Str(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    Send {
        to: i32,
        tag: i32,
        body: Vec<Item>,
    },
    Mcast {
        to: Vec<i32>,
        tag: i32,
        body: Vec<Item>,
    },
    /// Ask for a DEADTID message when `tid` exits.
    NotifyExit(i32),
    /// Text for stderr (the pvmd log).
    Print(String),
    Exit,
}

#[derive(Debug, Clone)]
struct Group {
    name: Vec<u8>,
    ntids: i32,
    /// By instance number; the length is the legacy `maxntids`.
    tids: Vec<i32>,
    barrier_count: i32,
    barrier_reached: i32,
    btids: Vec<i32>,
    barrier_index: usize,
    state: i32,
    sgroup_count: i32,
    /// Freeze calls counted so far; stays at the size once the group is frozen.
    sgroup_reached: i32,
    stids: Vec<i32>,
    infotids: Vec<i32>,
    /// (coordinator tid, members on the host), ordered by host.
    hosts: Vec<(i32, i32)>,
}

impl Group {
    fn new(name: &[u8]) -> Group {
        Group {
            name: name.to_vec(),
            ntids: 0,
            tids: Vec::new(),
            barrier_count: -1,
            barrier_reached: 0,
            btids: Vec::new(),
            barrier_index: 0,
            state: DYNAMIC,
            sgroup_count: -1,
            sgroup_reached: 0,
            stids: Vec::new(),
            infotids: Vec::new(),
            hosts: Vec::new(),
        }
    }

    fn slot_of(&self, tid: i32) -> Option<usize> {
        self.tids.iter().position(|&t| t == tid)
    }

    fn static_info(&self) -> Vec<Item> {
        vec![
            Item::Int(i32::try_from(self.name.len()).unwrap_or(i32::MAX)),
            Item::Str(self.name.clone()),
            Item::Int(self.ntids),
            Item::Int(len_i32(self.tids.len())),
            Item::Ints(self.tids.clone()),
            Item::Int(len_i32(self.hosts.len())),
            Item::Ints(self.hosts.iter().map(|h| h.1).collect()),
            Item::Ints(self.hosts.iter().map(|h| h.0).collect()),
        ]
    }
}

fn len_i32(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Grows `v` by `DELTA` slots of `fill` when `needed` exceeds its length.
fn grow(v: &mut Vec<i32>, needed: usize, fill: i32) {
    if needed > v.len() {
        let n = v.len() + DELTA;
        v.resize(n, fill);
    }
}

/// Position in the legacy open hash table: groups are listed bucket by bucket (bucket = mean
/// of the name's characters, clamped to 32..127 as signed chars), by name within a bucket.
fn bucket(name: &[u8]) -> i32 {
    if name.is_empty() {
        return 0;
    }
    let sum: i64 = name.iter().map(|&b| i64::from((b as i8).clamp(32, 127))).sum();
    let len = i64::try_from(name.len()).unwrap_or(i64::MAX);
    i32::try_from(sum / len - 32).unwrap_or(0)
}

/// All groups, in the legacy listing order.
pub struct Server<H: Fn(i32) -> i32> {
    groups: BTreeMap<(i32, Vec<u8>), Group>,
    host_of: H,
    mytid: i32,
}

impl<H: Fn(i32) -> i32> Server<H> {
    /// `host_of` maps a tid to its host (pvm_tidtohost); `mytid` is printed by DUMP.
    pub fn new(mytid: i32, host_of: H) -> Server<H> {
        Server {
            groups: BTreeMap::new(),
            host_of,
            mytid,
        }
    }

    fn key(name: &[u8]) -> (i32, Vec<u8>) {
        (bucket(name), name.to_vec())
    }

    fn group(&mut self, name: &[u8]) -> Result<&mut Group, i32> {
        if name.is_empty() {
            return Err(PVM_NULL_GROUP);
        }
        self.groups.get_mut(&Self::key(name)).ok_or(PVM_NO_GROUP)
    }

    fn host_index(&self, g: &Group, host: i32) -> Result<usize, usize> {
        g.hosts.binary_search_by_key(&host, |h| (self.host_of)(h.0))
    }

    fn join(&mut self, name: &[u8], tid: i32) -> i32 {
        if name.is_empty() {
            return PVM_NULL_GROUP;
        }
        let host = (self.host_of)(tid);
        let mut g = self.groups.remove(&Self::key(name)).unwrap_or_else(|| Group::new(name));
        let r = (|| {
            if g.state == STATIC || g.state == STATICDEAD {
                return PVM_NOT_IN_GROUP;
            }
            if g.slot_of(tid).is_some() {
                return PVM_DUP_GROUP;
            }
            grow(&mut g.tids, usize::try_from(g.ntids).unwrap_or(0) + 1, NOTID);
            let Some(slot) = g.tids.iter().position(|&t| t == NOTID) else {
                return PVM_MISMATCH;
            };
            g.tids[slot] = tid;
            g.ntids += 1;
            let i = match self.host_index(&g, host) {
                Ok(i) => i,
                Err(i) => {
                    g.hosts.insert(i, (NOTID, 0));
                    i
                }
            };
            let h = &mut g.hosts[i];
            if h.0 == NOTID || tid < h.0 {
                h.0 = tid;
            }
            h.1 += 1;
            len_i32(slot)
        })();
        self.groups.insert(Self::key(name), g);
        r
    }

    fn leave(&mut self, name: &[u8], tid: i32, out: &mut Vec<Out>) -> i32 {
        let host_of = &self.host_of;
        let key = Self::key(name);
        if name.is_empty() {
            return PVM_NULL_GROUP;
        }
        let Some(g) = self.groups.get_mut(&key) else {
            return PVM_NO_GROUP;
        };
        let Some(slot) = g.slot_of(tid) else {
            return PVM_NOT_IN_GROUP;
        };
        g.tids[slot] = NOTID;
        g.ntids -= 1;
        let host = host_of(tid);
        if let Ok(i) = g.hosts.binary_search_by_key(&host, |h| host_of(h.0)) {
            g.hosts[i].1 -= 1;
            if g.hosts[i].1 == 0 {
                g.hosts.remove(i);
            } else if g.hosts[i].0 == tid {
                g.hosts[i].0 = g
                    .tids
                    .iter()
                    .copied()
                    .filter(|&t| t != NOTID && host_of(t) == host)
                    .min()
                    .unwrap_or(NOTID);
            }
        }
        if g.state == STATIC {
            // A frozen group that loses a member is dead: release its barrier with an error.
            g.state = STATICDEAD;
            if g.barrier_count > 0 {
                out.push(Out::Mcast {
                    to: g.btids[..g.barrier_index].to_vec(),
                    tag: tag::BARRIER,
                    body: vec![Item::Int(PVM_NO_GROUP)],
                });
                g.barrier_count = PVM_NO_GROUP;
            }
        }
        if g.ntids <= 0 {
            self.groups.remove(&key);
        }
        PVM_OK
    }

    fn barrier(&mut self, name: &[u8], count: i32, by_host: bool, tid: i32, out: &mut Vec<Out>) -> i32 {
        let host = (self.host_of)(tid);
        let host_of = &self.host_of;
        let g = match self.groups.get_mut(&Self::key(name)) {
            _ if name.is_empty() => return PVM_NULL_GROUP,
            None => return PVM_NO_GROUP,
            Some(g) => g,
        };
        if g.state == STATICDEAD {
            return PVM_NO_GROUP;
        }
        if g.slot_of(tid).is_none() {
            return PVM_NOT_IN_GROUP;
        }
        let count = if count == -1 { g.ntids } else { count };
        if g.barrier_count == -1 {
            g.barrier_count = count;
            g.barrier_reached = 0;
            g.barrier_index = 0;
        } else if count != g.barrier_count {
            return PVM_MISMATCH;
        }
        grow(&mut g.btids, g.barrier_index + 1, NOTID);
        g.btids[g.barrier_index] = tid;
        g.barrier_index += 1;
        if by_host {
            let on_host = g
                .hosts
                .binary_search_by_key(&host, |h| host_of(h.0))
                .map(|i| g.hosts[i].1)
                .unwrap_or(0);
            g.barrier_reached += on_host;
        } else {
            g.barrier_reached += 1;
        }
        if g.barrier_count < g.barrier_reached {
            return PVM_MISMATCH;
        }
        if g.barrier_count == g.barrier_reached {
            out.push(Out::Mcast {
                to: g.btids[..g.barrier_index].to_vec(),
                tag: tag::BARRIER,
                body: vec![Item::Int(g.barrier_count)],
            });
            g.barrier_count = -1;
        }
        PVM_OK
    }

    fn freeze(&mut self, name: &[u8], size: i32, tid: i32, out: &mut Vec<Out>) -> i32 {
        let g = match self.groups.get_mut(&Self::key(name)) {
            _ if name.is_empty() => return PVM_NULL_GROUP,
            None => return PVM_NO_GROUP,
            Some(g) => g,
        };
        if g.state == STATIC {
            return PVM_DUP_GROUP;
        }
        if g.slot_of(tid).is_none() {
            return PVM_NOT_IN_GROUP;
        }
        let size = if size == -1 { g.ntids } else { size };
        if g.sgroup_count == -1 {
            g.sgroup_count = size;
            g.sgroup_reached = 0;
            g.stids.clear();
        } else if size != g.sgroup_count {
            return PVM_MISMATCH;
        }
        g.stids.push(tid);
        g.sgroup_reached += 1;
        let reached = g.sgroup_reached;
        if g.sgroup_count < reached {
            return PVM_MISMATCH;
        }
        if g.sgroup_count == reached {
            g.state = STATIC;
            for t in g.stids.clone() {
                if !g.infotids.contains(&t) {
                    g.infotids.push(t);
                }
            }
            let mut body = vec![Item::Int(g.sgroup_count), Item::Int(STATIC)];
            body.extend(g.static_info());
            out.push(Out::Mcast {
                to: std::mem::take(&mut g.stids),
                tag: tag::STATICGROUP,
                body,
            });
        }
        PVM_OK
    }

    /// The reply's `state` and, for a frozen group, its description (sent every time, as the
    /// legacy server does).
    fn state_items(&mut self, name: &[u8], state: i32, tid: i32) -> Vec<Item> {
        let mut v = vec![Item::Int(state)];
        if state == STATIC {
            if let Ok(g) = self.group(name) {
                if !g.infotids.contains(&tid) {
                    g.infotids.push(tid);
                }
                v.extend(g.static_info());
            }
        }
        v
    }

    fn state_of(&mut self, name: &[u8]) -> i32 {
        match self.group(name) {
            Ok(g) if g.state == STATIC => STATIC,
            _ => DYNAMIC,
        }
    }

    /// Handles one request from `from`.
    pub fn handle(&mut self, from: i32, req: Request) -> Vec<Out> {
        let mut out = Vec::new();
        let reply = |tag: i32, body: Vec<Item>| Out::Send { to: from, tag, body };
        match req {
            Request::Die => {
                out.push(Out::Print(self.dump("pvmgs")));
                out.push(Out::Exit);
            }
            Request::Join(name) => {
                let gid = self.join(&name, from);
                out.push(Out::NotifyExit(from));
                out.push(reply(tag::JOIN, vec![Item::Int(gid)]));
            }
            Request::Leave(name) => {
                let cc = self.leave(&name, from, &mut out);
                out.push(reply(tag::LEAVE, vec![Item::Int(cc)]));
            }
            Request::DeadTid(tid) => {
                if tid < 0 {
                    out.push(Out::Print(format!("pvmgs: weird dead tid x{tid:x} {tid}\n")));
                } else {
                    let names: Vec<Vec<u8>> = self.groups.values().map(|g| g.name.clone()).collect();
                    for n in names {
                        self.leave(&n, tid, &mut out);
                    }
                }
            }
            Request::Barrier { group, count, by_host } => {
                let cc = self.barrier(&group, count, by_host, from, &mut out);
                if cc < 0 {
                    let t = if by_host { tag::BARRIERV } else { tag::BARRIER };
                    out.push(reply(t, vec![Item::Int(cc)]));
                }
            }
            Request::TidList {
                group,
                holes_not_allowed,
            } => {
                let t = if holes_not_allowed { tag::TIDLIST } else { tag::BCAST };
                match self.tidlist(&group, holes_not_allowed) {
                    Err(cc) => out.push(reply(t, vec![Item::Int(cc)])),
                    Ok((tids, state)) => {
                        let mut body = vec![Item::Int(len_i32(tids.len())), Item::Ints(tids)];
                        body.extend(self.state_items(&group, state, from));
                        out.push(reply(t, body));
                    }
                }
            }
            Request::Gsize(name) => {
                let size = match self.group(&name) {
                    Ok(g) => g.ntids,
                    Err(e) => e,
                };
                let state = self.state_of(&name);
                let mut body = vec![Item::Int(size)];
                body.extend(self.state_items(&name, state, from));
                out.push(reply(tag::GSIZE, body));
            }
            Request::GetInst(name, tid) => {
                let inst = match self.group(&name) {
                    Ok(g) => g.slot_of(tid).map(len_i32).unwrap_or(PVM_NOT_IN_GROUP),
                    Err(e) => e,
                };
                let state = if inst >= 0 { self.state_of(&name) } else { DYNAMIC };
                let mut body = vec![Item::Int(inst)];
                body.extend(self.state_items(&name, state, from));
                out.push(reply(tag::GETINST, body));
            }
            Request::GetTid(name, inst) => {
                let (tid, state) = match self.group(&name) {
                    Err(e) => (e, DYNAMIC),
                    Ok(g) => match usize::try_from(inst).ok().filter(|&i| i < g.tids.len()) {
                        None => (PVM_NO_INST, DYNAMIC),
                        Some(i) => {
                            let t = g.tids[i];
                            let st = if g.state == STATIC { STATIC } else { DYNAMIC };
                            (if t == NOTID { PVM_NO_INST } else { t }, st)
                        }
                    },
                };
                let mut body = vec![Item::Int(tid)];
                body.extend(self.state_items(&name, state, from));
                out.push(reply(tag::GETTID, body));
            }
            Request::Static(name, size) => {
                let cc = self.freeze(&name, size, from, &mut out);
                if cc < 0 {
                    out.push(reply(tag::STATICGROUP, vec![Item::Int(cc)]));
                }
            }
            Request::Dump => out.push(Out::Print(self.dump("DUMP"))),
            Request::Ls => out.push(reply(tag::GSLS, self.ls())),
            Request::HostChar(name, host) => {
                let host_of = &self.host_of;
                let (mut coord, mut nmem, mut nhosts, mut state) = (NOTID, 0, 0, DYNAMIC);
                if let Some(g) = self.groups.get(&Self::key(&name)).filter(|_| !name.is_empty()) {
                    if let Ok(i) = g.hosts.binary_search_by_key(&host, |h| host_of(h.0)) {
                        coord = g.hosts[i].0;
                        nmem = g.hosts[i].1;
                        nhosts = len_i32(g.hosts.len());
                        state = g.state;
                    }
                }
                let mut body = vec![Item::Int(nhosts), Item::Int(nmem), Item::Int(coord)];
                body.extend(self.state_items(&name, state, from));
                out.push(reply(tag::HOSTCHAR, body));
            }
            Request::HostCharV(name) => {
                let (hosts, state) = match self.group(&name) {
                    Ok(g) => (g.hosts.clone(), g.state),
                    Err(_) => (Vec::new(), DYNAMIC),
                };
                let mut body = vec![
                    Item::Int(len_i32(hosts.len())),
                    Item::Ints(hosts.iter().map(|h| h.1).collect()),
                    Item::Ints(hosts.iter().map(|h| h.0).collect()),
                ];
                body.extend(self.state_items(&name, state, from));
                out.push(reply(tag::HOSTCHARV, body));
            }
            Request::Other => {}
        }
        out
    }

    /// Members in instance order (gs_tidlist).
    fn tidlist(&mut self, name: &[u8], holes_not_allowed: bool) -> Result<(Vec<i32>, i32), i32> {
        let g = self.group(name)?;
        if g.state == STATICDEAD {
            return Err(PVM_NO_GROUP);
        }
        let tids: Vec<i32> = g.tids.iter().copied().filter(|&t| t != NOTID).collect();
        if len_i32(tids.len()) != g.ntids {
            return Err(PVM_SYS_ERR);
        }
        let n = usize::try_from(g.ntids).unwrap_or(0);
        if holes_not_allowed && g.tids.iter().take(n).any(|&t| t == NOTID) {
            return Err(PVM_NO_INST);
        }
        let state = if g.state == STATIC { STATIC } else { DYNAMIC };
        Ok((tids, state))
    }

    fn ls(&self) -> Vec<Item> {
        let mut v = vec![Item::Int(len_i32(self.groups.len()))];
        for g in self.groups.values() {
            v.push(Item::Int(len_i32(g.name.len())));
            v.push(Item::Str(g.name.clone()));
            v.push(Item::Int(g.ntids));
            v.push(Item::Int(len_i32(g.tids.len())));
            v.push(Item::Int(g.barrier_count));
            v.push(Item::Int(g.barrier_reached));
            v.push(Item::Ints(g.tids.clone()));
            if g.barrier_reached > 0 {
                let n = usize::try_from(g.barrier_reached).unwrap_or(0).min(g.btids.len());
                v.push(Item::Ints(g.btids[..n].to_vec()));
            }
        }
        v
    }

    /// The state report written to stderr on DUMP and DIE.
    pub fn dump(&self, title: &str) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "{title} 0x{:x}, {} groups:", self.mytid, self.groups.len());
        for g in self.groups.values() {
            let _ = write!(s, "group: {}  size: {} ", String::from_utf8_lossy(&g.name), g.ntids);
            let _ = writeln!(
                s,
                "barrier_count: {} barrier_reached {}",
                g.barrier_count, g.barrier_reached
            );
            let _ = writeln!(
                s,
                " sgroup_count: {} sgroup_reached {}",
                g.sgroup_count, g.sgroup_reached
            );
            let _ = writeln!(s, "  Tids: ");
            for (j, t) in g.tids.iter().enumerate().filter(|(_, &t)| t != NOTID) {
                let _ = write!(s, "({j},  0x{t:x}) ");
            }
            s.push('\n');
            if g.barrier_reached > 0 {
                let _ = writeln!(s, "tids waiting on barrier:");
                for t in g.btids.iter().take(usize::try_from(g.barrier_reached).unwrap_or(0)) {
                    let _ = write!(s, "0x{t:x}  ");
                }
                s.push('\n');
            }
            if g.sgroup_reached > 0 {
                let _ = writeln!(s, "tids waiting on static formation:");
                for t in &g.stids {
                    let _ = write!(s, "0x{t:x}  ");
                }
                s.push('\n');
            }
            if !g.hosts.is_empty() {
                let _ = writeln!(s, "Host characterization:");
                for (coord, n) in &g.hosts {
                    let _ = writeln!(s, "host {:x} - {n} procs, {coord:x} coord ", (self.host_of)(*coord));
                }
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> Server<impl Fn(i32) -> i32> {
        Server::new(0x40001, |t: i32| t & 0x3ffc_0000)
    }

    fn int_reply(out: &[Out]) -> i32 {
        match out.last() {
            Some(Out::Send { body, .. }) => match body.first() {
                Some(Item::Int(v)) => *v,
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn join_takes_the_lowest_free_instance_and_notifies() {
        let mut s = server();
        let out = s.handle(0x40002, Request::Join(b"g".to_vec()));
        assert_eq!(out[0], Out::NotifyExit(0x40002));
        assert_eq!(int_reply(&out), 0);
        assert_eq!(int_reply(&s.handle(0x40003, Request::Join(b"g".to_vec()))), 1);
        assert_eq!(
            int_reply(&s.handle(0x40003, Request::Join(b"g".to_vec()))),
            PVM_DUP_GROUP
        );
        assert_eq!(int_reply(&s.handle(0x40002, Request::Leave(b"g".to_vec()))), 0);
        assert_eq!(int_reply(&s.handle(0x40004, Request::Join(b"g".to_vec()))), 0);
        assert_eq!(int_reply(&s.handle(0x40004, Request::Join(Vec::new()))), PVM_NULL_GROUP);
        assert_eq!(
            int_reply(&s.handle(0x40004, Request::Leave(b"h".to_vec()))),
            PVM_NO_GROUP
        );
    }

    #[test]
    fn barrier_answers_everyone_when_complete() {
        let mut s = server();
        for t in [0x40002, 0x40003] {
            s.handle(t, Request::Join(b"g".to_vec()));
        }
        let b = |count| Request::Barrier {
            group: b"g".to_vec(),
            count,
            by_host: false,
        };
        assert!(s.handle(0x40002, b(-1)).is_empty());
        assert_eq!(int_reply(&s.handle(0x40003, b(3))), PVM_MISMATCH);
        let out = s.handle(0x40003, b(2));
        assert_eq!(
            out,
            vec![Out::Mcast {
                to: vec![0x40002, 0x40003],
                tag: tag::BARRIER,
                body: vec![Item::Int(2)]
            }]
        );
        assert_eq!(int_reply(&s.handle(0x40009, b(2))), PVM_NOT_IN_GROUP);
    }

    #[test]
    fn frozen_group_description_matches_the_legacy_layout() {
        let mut s = server();
        for t in [0x80005, 0x40002, 0x40003] {
            s.handle(t, Request::Join(b"g".to_vec()));
        }
        assert!(s.handle(0x40002, Request::Static(b"g".to_vec(), 3)).is_empty());
        assert!(s.handle(0x40003, Request::Static(b"g".to_vec(), -1)).is_empty());
        let out = s.handle(0x80005, Request::Static(b"g".to_vec(), 3));
        let mut tids = vec![0x80005, 0x40002, 0x40003];
        tids.resize(10, NOTID);
        assert_eq!(
            out,
            vec![Out::Mcast {
                to: vec![0x40002, 0x40003, 0x80005],
                tag: tag::STATICGROUP,
                body: vec![
                    Item::Int(3),
                    Item::Int(STATIC),
                    Item::Int(1),
                    Item::Str(b"g".to_vec()),
                    Item::Int(3),
                    Item::Int(10),
                    Item::Ints(tids),
                    Item::Int(2),
                    Item::Ints(vec![2, 1]),
                    Item::Ints(vec![0x40002, 0x80005]),
                ]
            }]
        );
        assert_eq!(
            int_reply(&s.handle(0x40009, Request::Join(b"g".to_vec()))),
            PVM_NOT_IN_GROUP
        );
        // A member leaving kills the frozen group for collectives.
        s.handle(0x40003, Request::Leave(b"g".to_vec()));
        let out = s.handle(
            0x40002,
            Request::TidList {
                group: b"g".to_vec(),
                holes_not_allowed: true,
            },
        );
        assert_eq!(int_reply(&out), PVM_NO_GROUP);
    }

    #[test]
    fn dead_tasks_leave_every_group_and_coordinators_move() {
        let mut s = server();
        for (t, g) in [(0x40002, "a"), (0x40003, "a"), (0x40002, "b")] {
            s.handle(t, Request::Join(g.as_bytes().to_vec()));
        }
        s.handle(0, Request::DeadTid(0x40002));
        let out = s.handle(0x40003, Request::HostChar(b"a".to_vec(), 0x40000));
        match &out[0] {
            Out::Send { body, .. } => assert_eq!(
                body[..4],
                [Item::Int(1), Item::Int(1), Item::Int(0x40003), Item::Int(DYNAMIC)]
            ),
            o => panic!("{o:?}"),
        }
        assert_eq!(
            int_reply(&s.handle(0x40003, Request::Gsize(b"b".to_vec()))),
            PVM_NO_GROUP
        );
    }

    #[test]
    fn listing_order_follows_the_legacy_hash() {
        assert!(bucket(b"zz") > bucket(b"aa"));
        assert_eq!(bucket(&[0xff]), 0);
        let mut s = server();
        for g in ["zz", "aa", "ab"] {
            s.handle(0x40002, Request::Join(g.as_bytes().to_vec()));
        }
        let names: Vec<Vec<u8>> = s.groups.values().map(|g| g.name.clone()).collect();
        assert_eq!(names, [b"aa".to_vec(), b"ab".to_vec(), b"zz".to_vec()]);
    }
}
