//! Group-server (pvmgs) bodies: plain user tags 0..16 in context SYSCTX_DG, XDR
//! (pvmgs_core.c: gs_handle(); pvmgs_func.c; pvmgs_mac.h).
//!
//! Requests and replies travel task to task with the same tag, so the direction does not tell
//! them apart. Every request starts with a non-empty group name (the server and libgpvm refuse
//! empty ones), while every reply starts with an int whose first byte, read as a string, would
//! be a NUL or would not end the body exactly; the decoder therefore tries the request shape
//! first and falls back to the reply shape.

use super::types::Codec;
use super::wire::{list, Code, Rd, Wr, XStr};
use crate::error::{ParseError, Result};
use crate::tid::Tid;
use std::fmt;

/// `state` values (pvmgsd.h).
pub const GS_STATIC: i32 = 1;
pub const GS_DYNAMIC: i32 = 2;

/// Reads a group name as a request carries it: non-empty.
fn group(r: &mut Rd) -> Result<XStr> {
    let at = r.offset();
    let g = r.str("group")?;
    if g.0.is_empty() {
        return Err(ParseError::new(
            "group",
            at,
            crate::error::ErrorKind::BadString("empty group name"),
        ));
    }
    Ok(g)
}

/// `string group`: JOIN, LEAVE, BCAST, GSIZE, TIDLIST, HOSTCHARV requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GsGroup {
    pub group: XStr,
}

impl Codec for GsGroup {
    fn dec(r: &mut Rd) -> Result<Self> {
        Ok(GsGroup { group: group(r)? })
    }
    fn enc(&self, w: &mut Wr) {
        w.str(&self.group);
    }
}

impl fmt::Display for GsGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.group)
    }
}

/// `string group; int arg`: BARRIER/BARRIERV (count), GETINST (tid), GETTID (instance),
/// STATICGROUP (size), HOSTCHAR (host tid) requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GsGroupArg {
    pub group: XStr,
    pub arg: i32,
}

impl Codec for GsGroupArg {
    fn dec(r: &mut Rd) -> Result<Self> {
        Ok(GsGroupArg {
            group: group(r)?,
            arg: r.int("arg")?,
        })
    }
    fn enc(&self, w: &mut Wr) {
        w.str(&self.group).int(self.arg);
    }
}

impl fmt::Display for GsGroupArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:#x}", self.group, self.arg)
    }
}

/// The cached description of a static group (gs_pkstaticinfo()).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticInfo {
    /// strlen of the name, sent separately by the server.
    pub name_len: i32,
    pub name: XStr,
    pub ntids: i32,
    /// `maxntids` slots; empty ones hold -1.
    pub tids: Vec<Tid>,
    pub np_onhost: Vec<i32>,
    pub pcoord: Vec<Tid>,
}

impl Codec for StaticInfo {
    fn dec(r: &mut Rd) -> Result<Self> {
        let name_len = r.int("static name len")?;
        let name = r.str("static name")?;
        let ntids = r.int("static ntids")?;
        let n = r.count("static maxntids", 4)?;
        let tids = r.tids("static tid", n)?;
        let h = r.count("static nhosts", 8)?;
        Ok(StaticInfo {
            name_len,
            name,
            ntids,
            tids,
            np_onhost: r.ints("np_onhost", h)?,
            pcoord: r.tids("pcoord", h)?,
        })
    }
    fn enc(&self, w: &mut Wr) {
        w.int(self.name_len)
            .str(&self.name)
            .int(self.ntids)
            .len(self.tids.len())
            .tids(&self.tids);
        w.len(self.np_onhost.len()).ints(&self.np_onhost).tids(&self.pcoord);
    }
}

/// `int state` and, for STATIC the first time the server tells this task, the static data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GsState {
    pub state: i32,
    /// Only with state STATIC; the server sends it once per task and group, then relies on
    /// the task's cache.
    pub info: Option<StaticInfo>,
}

impl GsState {
    fn dec_tail(r: &mut Rd) -> Result<Self> {
        let state = r.int("state")?;
        let info = if state == GS_STATIC && !r.is_empty() {
            Some(StaticInfo::dec(r)?)
        } else {
            None
        };
        Ok(GsState { state, info })
    }
    fn enc(&self, w: &mut Wr) {
        w.int(self.state);
        if let Some(i) = &self.info {
            i.enc(w);
        }
    }
}

impl fmt::Display for GsState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.state {
            GS_STATIC => f.write_str("STATIC")?,
            GS_DYNAMIC => f.write_str("DYNAMIC")?,
            s => write!(f, "state {s}")?,
        }
        if let Some(i) = &self.info {
            write!(f, " {{{} ntids {} tids ", i.name, i.ntids)?;
            list(f, &i.tids, 6)?;
            write!(f, " hosts {}}}", i.pcoord.len())?;
        }
        Ok(())
    }
}

/// `int value; state`: GETINST (instance), GETTID (tid), GSIZE (size) replies, and the
/// STATICGROUP formation message (count).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GsValue {
    pub value: i32,
    pub state: GsState,
}

impl Codec for GsValue {
    fn dec(r: &mut Rd) -> Result<Self> {
        Ok(GsValue {
            value: r.int("value")?,
            state: GsState::dec_tail(r)?,
        })
    }
    fn enc(&self, w: &mut Wr) {
        w.int(self.value);
        self.state.enc(w);
    }
}

impl fmt::Display for GsValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", Code(self.value), self.state)
    }
}

/// BCAST / TIDLIST reply: an error code alone, or `int ntids; int tids[ntids]; state`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GsTids {
    Error(i32),
    Tids { tids: Vec<Tid>, state: GsState },
}

impl Codec for GsTids {
    fn dec(r: &mut Rd) -> Result<Self> {
        let at = r.offset();
        let n = r.int("ntids")?;
        if r.is_empty() {
            return Ok(GsTids::Error(n));
        }
        let n = r.bound("ntids", at, n, 4)?;
        Ok(GsTids::Tids {
            tids: r.tids("tid", n)?,
            state: GsState::dec_tail(r)?,
        })
    }
    fn enc(&self, w: &mut Wr) {
        match self {
            GsTids::Error(e) => {
                w.int(*e);
            }
            GsTids::Tids { tids, state } => {
                w.len(tids.len()).tids(tids);
                state.enc(w);
            }
        }
    }
}

impl fmt::Display for GsTids {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GsTids::Error(e) => write!(f, "error {}", Code(*e)),
            GsTids::Tids { tids, state } => {
                list(f, tids, 8)?;
                write!(f, " {state}")
            }
        }
    }
}

/// STATICGROUP reply: an error code alone, or the formation message `int count; state`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GsStaticAck {
    Error(i32),
    Formed(GsValue),
}

impl Codec for GsStaticAck {
    fn dec(r: &mut Rd) -> Result<Self> {
        if r.remaining() == 4 {
            return Ok(GsStaticAck::Error(r.int("status")?));
        }
        Ok(GsStaticAck::Formed(GsValue::dec(r)?))
    }
    fn enc(&self, w: &mut Wr) {
        match self {
            GsStaticAck::Error(e) => {
                w.int(*e);
            }
            GsStaticAck::Formed(v) => v.enc(w),
        }
    }
}

impl fmt::Display for GsStaticAck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GsStaticAck::Error(e) => write!(f, "error {}", Code(*e)),
            GsStaticAck::Formed(v) => write!(f, "formed, count {v}"),
        }
    }
}

/// HOSTCHAR reply: `int nhosts; int nmem_onhost; int coord; state`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GsHostChar {
    pub nhosts: i32,
    pub nmem: i32,
    pub coord: Tid,
    pub state: GsState,
}

impl Codec for GsHostChar {
    fn dec(r: &mut Rd) -> Result<Self> {
        Ok(GsHostChar {
            nhosts: r.int("nhosts")?,
            nmem: r.int("nmem_onhost")?,
            coord: r.tid("coord")?,
            state: GsState::dec_tail(r)?,
        })
    }
    fn enc(&self, w: &mut Wr) {
        w.int(self.nhosts).int(self.nmem).tid(self.coord);
        self.state.enc(w);
    }
}

impl fmt::Display for GsHostChar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "nhosts {} members {} coord {} {}",
            self.nhosts, self.nmem, self.coord, self.state
        )
    }
}

/// HOSTCHARV reply: `int nhosts; int nmem[nhosts]; int coord[nhosts]; state`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GsHostCharV {
    pub nmem: Vec<i32>,
    pub coord: Vec<Tid>,
    pub state: GsState,
}

impl Codec for GsHostCharV {
    fn dec(r: &mut Rd) -> Result<Self> {
        let n = r.count("nhosts", 8)?;
        Ok(GsHostCharV {
            nmem: r.ints("nmem_onhost", n)?,
            coord: r.tids("coord", n)?,
            state: GsState::dec_tail(r)?,
        })
    }
    fn enc(&self, w: &mut Wr) {
        w.len(self.nmem.len()).ints(&self.nmem).tids(&self.coord);
        self.state.enc(w);
    }
}

impl fmt::Display for GsHostCharV {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("members ")?;
        list(f, &self.nmem, 8)?;
        f.write_str(" coord ")?;
        list(f, &self.coord, 8)?;
        write!(f, " {}", self.state)
    }
}

/// One group in a GSLS reply (gs_ls()).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GsGroupInfo {
    pub name_len: i32,
    pub name: XStr,
    pub ntids: i32,
    pub barrier_count: i32,
    pub barrier_reached: i32,
    /// `maxntids` slots.
    pub tids: Vec<Tid>,
    /// Tasks waiting at the barrier: `barrier_reached` of them when it is positive.
    pub btids: Vec<Tid>,
}

/// GSLS reply: `int ngroups; {int len; string name; int ntids; int maxntids; int barrier_count;
/// int barrier_reached; int tids[maxntids]; int btids[barrier_reached if > 0]}[ngroups]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GsList {
    pub groups: Vec<GsGroupInfo>,
}

impl Codec for GsList {
    fn dec(r: &mut Rd) -> Result<Self> {
        let n = r.count("ngroups", 4 + 8 + 16)?;
        let groups = r.list(n, |r| {
            let name_len = r.int("name len")?;
            let name = r.str("name")?;
            let ntids = r.int("ntids")?;
            let max = r.count("maxntids", 4)?;
            let barrier_count = r.int("barrier_count")?;
            let at = r.offset();
            let barrier_reached = r.int("barrier_reached")?;
            let tids = r.tids("tid", max)?;
            let nb = if barrier_reached > 0 {
                r.bound("barrier_reached", at, barrier_reached, 4)?
            } else {
                0
            };
            Ok(GsGroupInfo {
                name_len,
                name,
                ntids,
                barrier_count,
                barrier_reached,
                tids,
                btids: r.tids("btid", nb)?,
            })
        })?;
        Ok(GsList { groups })
    }
    fn enc(&self, w: &mut Wr) {
        w.len(self.groups.len());
        for g in &self.groups {
            w.int(g.name_len).str(&g.name).int(g.ntids).len(g.tids.len());
            w.int(g.barrier_count)
                .int(g.barrier_reached)
                .tids(&g.tids)
                .tids(&g.btids);
        }
    }
}

impl fmt::Display for GsList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g: Vec<String> = self
            .groups
            .iter()
            .map(|g| format!("{} ({} members)", g.name, g.ntids))
            .collect();
        list(f, &g, 6)
    }
}
