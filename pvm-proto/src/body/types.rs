//! Payload shapes shared by the body variants. Each knows how to read itself strictly from an
//! XDR body, write itself, and summarise itself on one line.

use super::wire::{hex, list, Code, Rd, Wr, XStr};
use crate::codes::{DbOp, NotifyKind, SlConfField, Tag, TaskOpt, PVM_NOTIFY_CANCEL};
use crate::error::{ErrorKind, ParseError, Result};
use crate::tid::Tid;
use std::fmt;

/// Reading and writing one payload shape.
pub trait Codec: Sized {
    fn dec(r: &mut Rd) -> Result<Self>;
    fn enc(&self, w: &mut Wr);
}

/// Smallest encodings, used to bound hostile counts before allocating.
const STR_MIN: usize = 8;
const HOST_ENTRY_MIN: usize = 4 + STR_MIN + STR_MIN + 4 + 4;

// ---- small shapes ---------------------------------------------------------------------------

/// One int: a status, an error code, a count or a flag, depending on the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Int {
    pub value: i32,
}

impl Codec for Int {
    fn dec(r: &mut Rd) -> Result<Self> {
        Ok(Int { value: r.int("value")? })
    }
    fn enc(&self, w: &mut Wr) {
        w.int(self.value);
    }
}

impl fmt::Display for Int {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", Code(self.value))
    }
}

/// One tid (or an error code where a tid was expected).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TidArg {
    pub tid: Tid,
}

impl Codec for TidArg {
    fn dec(r: &mut Rd) -> Result<Self> {
        Ok(TidArg { tid: r.tid("tid")? })
    }
    fn enc(&self, w: &mut Wr) {
        w.tid(self.tid);
    }
}

impl fmt::Display for TidArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.tid)
    }
}

/// One string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name {
    pub name: XStr,
}

impl Codec for Name {
    fn dec(r: &mut Rd) -> Result<Self> {
        Ok(Name { name: r.str("name")? })
    }
    fn enc(&self, w: &mut Wr) {
        w.str(&self.name);
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name)
    }
}

/// `int n; int v[n]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntList {
    pub values: Vec<i32>,
}

impl Codec for IntList {
    fn dec(r: &mut Rd) -> Result<Self> {
        let n = r.count("count", 4)?;
        Ok(IntList {
            values: r.ints("value", n)?,
        })
    }
    fn enc(&self, w: &mut Wr) {
        w.len(self.values.len()).ints(&self.values);
    }
}

impl fmt::Display for IntList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        list(f, &self.values, 8)
    }
}

/// `int n; int tids[n]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TidList {
    pub tids: Vec<Tid>,
}

impl Codec for TidList {
    fn dec(r: &mut Rd) -> Result<Self> {
        let n = r.count("count", 4)?;
        Ok(TidList {
            tids: r.tids("tid", n)?,
        })
    }
    fn enc(&self, w: &mut Wr) {
        w.len(self.tids.len()).tids(&self.tids);
    }
}

impl fmt::Display for TidList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        list(f, &self.tids, 8)
    }
}

/// `int n; string names[n]` (host names or hostfile lines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostNames {
    pub names: Vec<XStr>,
}

impl Codec for HostNames {
    fn dec(r: &mut Rd) -> Result<Self> {
        let n = r.count("count", STR_MIN)?;
        Ok(HostNames {
            names: r.list(n, |r| r.str("name"))?,
        })
    }
    fn enc(&self, w: &mut Wr) {
        w.len(self.names.len());
        for s in &self.names {
            w.str(s);
        }
    }
}

impl fmt::Display for HostNames {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        list(f, &self.names, 8)
    }
}

/// A count that is an error code when negative, then that many ints (`int n; int v[n]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TidsOrError {
    Tids(Vec<Tid>),
    Error(i32),
}

impl Codec for TidsOrError {
    fn dec(r: &mut Rd) -> Result<Self> {
        let at = r.offset();
        let n = r.int("count")?;
        if n < 0 {
            return Ok(TidsOrError::Error(n));
        }
        let n = r.bound("count", at, n, 4)?;
        Ok(TidsOrError::Tids(r.tids("tid", n)?))
    }
    fn enc(&self, w: &mut Wr) {
        match self {
            TidsOrError::Tids(t) => {
                w.len(t.len()).tids(t);
            }
            TidsOrError::Error(e) => {
                w.int(*e);
            }
        }
    }
}

impl fmt::Display for TidsOrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TidsOrError::Tids(t) => list(f, t, 8),
            TidsOrError::Error(e) => write!(f, "error {}", Code(*e)),
        }
    }
}

/// `int n (or error); int status[n]`: TM_DELHOST reply, DM_DELHOSTACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusList {
    pub status: i32,
    /// One entry per host; empty when `status` is an error.
    pub results: Vec<i32>,
}

impl Codec for StatusList {
    fn dec(r: &mut Rd) -> Result<Self> {
        let at = r.offset();
        let status = r.int("count")?;
        let n = if status < 0 {
            0
        } else {
            r.bound("count", at, status, 4)?
        };
        Ok(StatusList {
            status,
            results: r.ints("status", n)?,
        })
    }
    fn enc(&self, w: &mut Wr) {
        w.int(self.status).ints(&self.results);
    }
}

impl fmt::Display for StatusList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.status < 0 {
            return write!(f, "error {}", Code(self.status));
        }
        let c: Vec<String> = self.results.iter().map(|x| Code(*x).to_string()).collect();
        list(f, &c, 8)
    }
}

// ---- connect ---------------------------------------------------------------------------------

/// `int version; string path`: TM_CONNECT request (t-auth file), TC_CONREQ (socket address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectReq {
    pub version: i32,
    pub path: XStr,
}

impl Codec for ConnectReq {
    fn dec(r: &mut Rd) -> Result<Self> {
        Ok(ConnectReq {
            version: r.int("version")?,
            path: r.str("path")?,
        })
    }
    fn enc(&self, w: &mut Wr) {
        w.int(self.version).str(&self.path);
    }
}

impl fmt::Display for ConnectReq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "version {} {}", self.version, self.path)
    }
}

/// `int version; int ack; string path`: TM_CONNECT reply (ack 1 = accept), TC_CONACK (ack 0 = ok).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectAck {
    pub version: i32,
    pub ack: i32,
    pub path: XStr,
}

impl Codec for ConnectAck {
    fn dec(r: &mut Rd) -> Result<Self> {
        Ok(ConnectAck {
            version: r.int("version")?,
            ack: r.int("ack")?,
            path: r.str("path")?,
        })
    }
    fn enc(&self, w: &mut Wr) {
        w.int(self.version).int(self.ack).str(&self.path);
    }
}

impl fmt::Display for ConnectAck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "version {} ack {} {}", self.version, self.ack, self.path)
    }
}

/// The pvm-rs extension of TC_CONREQ / TC_CONACK (docs/extensions.md, "Direct routes"): two
/// ints after the address, [`ROUTE_EXT_MAGIC`] and the largest fragment payload the sender
/// accepts on the route. A legacy task unpacks the version, (ack,) and address and never looks
/// further, so it neither sees nor sends this; two pvm-rs tasks that both offered it send each
/// other large fragments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteExt {
    pub max_frag: i32,
    /// Capability bits, when sent (a third int; bit 0: single-copy transfers of large messages
    /// with process_vm_readv, libpvm3-shim `vmread.rs`). Readers of the two-int form ignore it.
    pub caps: Option<i32>,
}

/// First int of a [`RouteExt`] ("pvRF"): trailing bytes that do not start with it are not ours.
pub const ROUTE_EXT_MAGIC: i32 = 0x7076_5246;

impl RouteExt {
    /// The extension, if what is left of the body is one (nothing left: None).
    fn dec_opt(r: &mut Rd) -> Result<Option<RouteExt>> {
        if r.remaining() == 0 {
            return Ok(None);
        }
        let off = r.offset();
        let magic = r.int("route extension")?;
        if magic != ROUTE_EXT_MAGIC {
            return Err(ParseError::new(
                "route extension",
                off,
                ErrorKind::Invalid {
                    value: magic.into(),
                    why: "not the pvm-rs route extension",
                },
            ));
        }
        let max_frag = r.int("max fragment")?;
        let caps = if r.remaining() == 0 {
            None
        } else {
            Some(r.int("capabilities")?)
        };
        Ok(Some(RouteExt { max_frag, caps }))
    }
    fn enc_opt(ext: &Option<RouteExt>, w: &mut Wr) {
        if let Some(e) = ext {
            w.int(ROUTE_EXT_MAGIC).int(e.max_frag);
            if let Some(c) = e.caps {
                w.int(c);
            }
        }
    }
}

/// `int version; string path` and the optional [`RouteExt`]: TC_CONREQ (socket address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteReq {
    pub version: i32,
    pub path: XStr,
    pub ext: Option<RouteExt>,
}

impl Codec for RouteReq {
    fn dec(r: &mut Rd) -> Result<Self> {
        Ok(RouteReq {
            version: r.int("version")?,
            path: r.str("path")?,
            ext: RouteExt::dec_opt(r)?,
        })
    }
    fn enc(&self, w: &mut Wr) {
        w.int(self.version).str(&self.path);
        RouteExt::enc_opt(&self.ext, w);
    }
}

impl fmt::Display for RouteReq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "version {} {}", self.version, self.path)?;
        if let Some(e) = self.ext {
            write!(f, " max-frag {}", e.max_frag)?;
            if let Some(c) = e.caps {
                write!(f, " caps {c:#x}")?;
            }
        }
        Ok(())
    }
}

/// `int version; int ack; string path` and the optional [`RouteExt`]: TC_CONACK (ack 0 = ok).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteAck {
    pub version: i32,
    pub ack: i32,
    pub path: XStr,
    pub ext: Option<RouteExt>,
}

impl Codec for RouteAck {
    fn dec(r: &mut Rd) -> Result<Self> {
        Ok(RouteAck {
            version: r.int("version")?,
            ack: r.int("ack")?,
            path: r.str("path")?,
            ext: RouteExt::dec_opt(r)?,
        })
    }
    fn enc(&self, w: &mut Wr) {
        w.int(self.version).int(self.ack).str(&self.path);
        RouteExt::enc_opt(&self.ext, w);
    }
}

impl fmt::Display for RouteAck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "version {} ack {} {}", self.version, self.ack, self.path)?;
        if let Some(e) = self.ext {
            write!(f, " max-frag {}", e.max_frag)?;
            if let Some(c) = e.caps {
                write!(f, " caps {c:#x}")?;
            }
        }
        Ok(())
    }
}

/// TM_CONN2 request. The task name is only sent when the task set one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conn2Req {
    pub pid: i32,
    pub cookie: i32,
    pub name: Option<XStr>,
}

impl Codec for Conn2Req {
    fn dec(r: &mut Rd) -> Result<Self> {
        let pid = r.int("pid")?;
        let cookie = r.int("cookie")?;
        let name = if r.is_empty() { None } else { Some(r.str("taskname")?) };
        Ok(Conn2Req { pid, cookie, name })
    }
    fn enc(&self, w: &mut Wr) {
        w.int(self.pid).int(self.cookie);
        if let Some(n) = &self.name {
            w.str(n);
        }
    }
}

impl fmt::Display for Conn2Req {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pid {} cookie {}", self.pid, self.cookie)?;
        if let Some(n) = &self.name {
            write!(f, " name {n}")?;
        }
        Ok(())
    }
}

/// What the pvmd tells a task about itself: the TM_GETOPT reply, and the TM_CONN2 reply after
/// its ack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskConfig {
    pub tid: Tid,
    pub ptid: Tid,
    pub outtid: Tid,
    pub outctx: i32,
    pub outtag: i32,
    pub trctid: Tid,
    pub trcctx: i32,
    pub trctag: i32,
    /// The fragment size the task must use (4080).
    pub udpmax: i32,
    /// The pvmd's data signature.
    pub dsig: i32,
    /// The pvmd's UDP address as `"%08x:%04x"`.
    pub addr: XStr,
    pub schedtid: Tid,
}

impl Codec for TaskConfig {
    fn dec(r: &mut Rd) -> Result<Self> {
        Ok(TaskConfig {
            tid: r.tid("tid")?,
            ptid: r.tid("ptid")?,
            outtid: r.tid("outtid")?,
            outctx: r.int("outctx")?,
            outtag: r.int("outtag")?,
            trctid: r.tid("trctid")?,
            trcctx: r.int("trcctx")?,
            trctag: r.int("trctag")?,
            udpmax: r.int("udpmax")?,
            dsig: r.int("dsig")?,
            addr: r.str("addr")?,
            schedtid: r.tid("schedtid")?,
        })
    }
    fn enc(&self, w: &mut Wr) {
        w.tid(self.tid)
            .tid(self.ptid)
            .tid(self.outtid)
            .int(self.outctx)
            .int(self.outtag);
        w.tid(self.trctid)
            .int(self.trcctx)
            .int(self.trctag)
            .int(self.udpmax)
            .int(self.dsig);
        w.str(&self.addr).tid(self.schedtid);
    }
}

impl fmt::Display for TaskConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "tid {} ptid {} out {} trc {} udpmax {} dsig {:#x} addr {} sched {}",
            self.tid,
            self.ptid,
            Route(self.outtid, self.outctx, self.outtag),
            Route(self.trctid, self.trcctx, self.trctag),
            self.udpmax,
            self.dsig,
            self.addr,
            self.schedtid
        )
    }
}

/// TM_CONN2 reply: `int ack (1)` then the task's configuration. A refusal would carry the ack
/// alone (legacy closes the connection instead of sending one, but nothing in the wire format
/// forbids it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conn2Ack {
    pub ack: i32,
    pub config: Option<TaskConfig>,
    /// pvm-rs only: the capability trailer a pvmd-rs daemon appends after `schedtid`
    /// (docs/extensions.md, "Migration extensions"); the legacy library never reads it.
    pub ext: Option<Conn2Ext>,
}

/// The pvm-rs TM_CONN2 trailer: `int magic ("pvmx"); int version; int features`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conn2Ext {
    pub version: i32,
    pub features: i32,
}

/// `"pvmx"`, the first int of the trailer.
pub const CONN2_EXT_MAGIC: i32 = 0x7076_6d78;

impl Codec for Conn2Ack {
    fn dec(r: &mut Rd) -> Result<Self> {
        let ack = r.int("ack")?;
        let config = if r.is_empty() { None } else { Some(TaskConfig::dec(r)?) };
        let ext = if config.is_some() && !r.is_empty() {
            let at = r.offset();
            let magic = r.int("trailer magic")?;
            if magic != CONN2_EXT_MAGIC {
                return Err(ParseError::invalid(
                    "trailer magic",
                    at,
                    magic.into(),
                    "not the pvm-rs trailer",
                ));
            }
            Some(Conn2Ext {
                version: r.int("trailer version")?,
                features: r.int("trailer features")?,
            })
        } else {
            None
        };
        Ok(Conn2Ack { ack, config, ext })
    }
    fn enc(&self, w: &mut Wr) {
        w.int(self.ack);
        if let Some(c) = &self.config {
            c.enc(w);
            if let Some(x) = &self.ext {
                w.int(CONN2_EXT_MAGIC).int(x.version).int(x.features);
            }
        }
    }
}

impl fmt::Display for Conn2Ack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ack {}", self.ack)?;
        if let Some(c) = &self.config {
            write!(f, " {c}")?;
        }
        if let Some(x) = &self.ext {
            write!(f, " pvm-rs v{} features {:#x}", x.version, x.features)?;
        }
        Ok(())
    }
}

// ---- hosts -----------------------------------------------------------------------------------

/// One host as TM_CONFIG, TM_ADDHOST and TM_SCHED replies describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEntry {
    /// The host's pvmd tid (or an error code in an add-host reply).
    pub tid: Tid,
    pub name: XStr,
    pub arch: XStr,
    pub speed: i32,
    pub dsig: i32,
}

impl Codec for HostEntry {
    fn dec(r: &mut Rd) -> Result<Self> {
        Ok(HostEntry {
            tid: r.tid("host tid")?,
            name: r.str("host name")?,
            arch: r.str("arch")?,
            speed: r.int("speed")?,
            dsig: r.int("dsig")?,
        })
    }
    fn enc(&self, w: &mut Wr) {
        w.tid(self.tid)
            .str(&self.name)
            .str(&self.arch)
            .int(self.speed)
            .int(self.dsig);
    }
}

impl fmt::Display for HostEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{{{} {} {} {} {:#x}}}",
            self.tid, self.name, self.arch, self.speed, self.dsig
        )
    }
}

/// `int nhosts; int narches; host[nhosts]`: TM_CONFIG reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostTable {
    pub narches: i32,
    pub hosts: Vec<HostEntry>,
}

impl Codec for HostTable {
    fn dec(r: &mut Rd) -> Result<Self> {
        let at = r.offset();
        let n = r.int("nhosts")?;
        let narches = r.int("narches")?;
        let n = r.bound("nhosts", at, n, HOST_ENTRY_MIN)?;
        Ok(HostTable {
            narches,
            hosts: r.list(n, HostEntry::dec)?,
        })
    }
    fn enc(&self, w: &mut Wr) {
        w.len(self.hosts.len()).int(self.narches);
        for h in &self.hosts {
            h.enc(w);
        }
    }
}

impl fmt::Display for HostTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} hosts {} arches ", self.hosts.len(), self.narches)?;
        list(f, &self.hosts, 4)
    }
}

/// `int n (or error); [int narches; host[n]]`: TM_ADDHOST reply, DM_ADDACK, SM_ADDACK.
/// `narches` is only present when `n >= 0` in legacy output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddHostAck {
    pub status: i32,
    pub narches: Option<i32>,
    /// `status` entries when `status >= 0` and `narches` is present, else none.
    pub hosts: Vec<HostEntry>,
}

impl Codec for AddHostAck {
    fn dec(r: &mut Rd) -> Result<Self> {
        let at = r.offset();
        let status = r.int("count")?;
        if r.is_empty() {
            return Ok(AddHostAck {
                status,
                narches: None,
                hosts: Vec::new(),
            });
        }
        let narches = r.int("narches")?;
        let n = if status < 0 {
            0
        } else {
            r.bound("count", at, status, HOST_ENTRY_MIN)?
        };
        Ok(AddHostAck {
            status,
            narches: Some(narches),
            hosts: r.list(n, HostEntry::dec)?,
        })
    }
    fn enc(&self, w: &mut Wr) {
        w.int(self.status);
        if let Some(a) = self.narches {
            w.int(a);
            for h in &self.hosts {
                h.enc(w);
            }
        }
    }
}

impl fmt::Display for AddHostAck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", Code(self.status))?;
        if let Some(a) = self.narches {
            write!(f, " narches {a} ")?;
            list(f, &self.hosts, 4)?;
        }
        Ok(())
    }
}

/// TM_SCHED reply. The legacy pvmd sends the old scheduler and **only the master host**
/// (tdpro.c: tm_sched()), not a whole host table as messages.md suggests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedAck {
    pub old: Tid,
    pub master: Option<HostEntry>,
}

impl Codec for SchedAck {
    fn dec(r: &mut Rd) -> Result<Self> {
        let old = r.tid("oldschedtid")?;
        let master = if r.is_empty() { None } else { Some(HostEntry::dec(r)?) };
        Ok(SchedAck { old, master })
    }
    fn enc(&self, w: &mut Wr) {
        w.tid(self.old);
        if let Some(h) = &self.master {
            h.enc(w);
        }
    }
}

impl fmt::Display for SchedAck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "old {}", self.old)?;
        if let Some(h) = &self.master {
            write!(f, " master {h}")?;
        }
        Ok(())
    }
}

/// One entry of DM_HTUPD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HtEntry {
    pub index: i32,
    pub name: XStr,
    pub arch: XStr,
    /// `"%08x:%04x"` UDP address.
    pub addr: XStr,
    pub mtu: i32,
    pub speed: i32,
    pub dsig: i32,
}

impl Codec for HtEntry {
    fn dec(r: &mut Rd) -> Result<Self> {
        Ok(HtEntry {
            index: r.int("host index")?,
            name: r.str("host name")?,
            arch: r.str("arch")?,
            addr: r.str("addr")?,
            mtu: r.int("mtu")?,
            speed: r.int("speed")?,
            dsig: r.int("dsig")?,
        })
    }
    fn enc(&self, w: &mut Wr) {
        w.int(self.index).str(&self.name).str(&self.arch).str(&self.addr);
        w.int(self.mtu).int(self.speed).int(self.dsig);
    }
}

impl fmt::Display for HtEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{{#{} {} {} {} mtu {} speed {} {:#x}}}",
            self.index, self.name, self.arch, self.addr, self.mtu, self.speed, self.dsig
        )
    }
}

/// DM_HTUPD: `int serial; int master; int console; int n; entry[n]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HtUpd {
    pub serial: i32,
    pub master: i32,
    pub console: i32,
    pub hosts: Vec<HtEntry>,
}

impl Codec for HtUpd {
    fn dec(r: &mut Rd) -> Result<Self> {
        let serial = r.int("serial")?;
        let master = r.int("master index")?;
        let console = r.int("console index")?;
        let n = r.count("count", 4 + 3 * STR_MIN + 12)?;
        Ok(HtUpd {
            serial,
            master,
            console,
            hosts: r.list(n, HtEntry::dec)?,
        })
    }
    fn enc(&self, w: &mut Wr) {
        w.int(self.serial)
            .int(self.master)
            .int(self.console)
            .len(self.hosts.len());
        for h in &self.hosts {
            h.enc(w);
        }
    }
}

impl fmt::Display for HtUpd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "serial {} master #{} console #{} ",
            self.serial, self.master, self.console
        )?;
        list(f, &self.hosts, 4)
    }
}

/// DM_HTDEL: `int serial; int hosttid[]` to the end of the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HtDel {
    pub serial: i32,
    pub hosts: Vec<Tid>,
}

impl Codec for HtDel {
    fn dec(r: &mut Rd) -> Result<Self> {
        Ok(HtDel {
            serial: r.int("serial")?,
            hosts: r.until_end(|r| r.tid("host tid"))?,
        })
    }
    fn enc(&self, w: &mut Wr) {
        w.int(self.serial).tids(&self.hosts);
    }
}

impl fmt::Display for HtDel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "serial {} ", self.serial)?;
        list(f, &self.hosts, 8)
    }
}

/// `{int hosttid; string result}`: one slave start-up result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostResult {
    pub tid: Tid,
    /// The slave's `ddpro<…> arch<…> ip<…> mtu<…> dsig<…>` line, or an error token.
    pub result: XStr,
}

impl Codec for HostResult {
    fn dec(r: &mut Rd) -> Result<Self> {
        Ok(HostResult {
            tid: r.tid("host tid")?,
            result: r.str("result")?,
        })
    }
    fn enc(&self, w: &mut Wr) {
        w.tid(self.tid).str(&self.result);
    }
}

impl fmt::Display for HostResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{{{} {}}}", self.tid, self.result)
    }
}

/// DM_STARTACK: `int n; result[n]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartAck {
    pub results: Vec<HostResult>,
}

impl Codec for StartAck {
    fn dec(r: &mut Rd) -> Result<Self> {
        let n = r.count("count", 4 + STR_MIN)?;
        Ok(StartAck {
            results: r.list(n, HostResult::dec)?,
        })
    }
    fn enc(&self, w: &mut Wr) {
        w.len(self.results.len());
        for x in &self.results {
            x.enc(w);
        }
    }
}

impl fmt::Display for StartAck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        list(f, &self.results, 4)
    }
}

/// One host for the hoster (SM_STHOST).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StHostEntry {
    pub tid: Tid,
    /// "", "pw" or "ms".
    pub sopts: XStr,
    pub login: XStr,
    pub command: XStr,
    pub win_command: XStr,
    pub vmid: XStr,
}

impl Codec for StHostEntry {
    fn dec(r: &mut Rd) -> Result<Self> {
        Ok(StHostEntry {
            tid: r.tid("host tid")?,
            sopts: r.str("sopts")?,
            login: r.str("login")?,
            command: r.str("command")?,
            win_command: r.str("win32 command")?,
            vmid: r.str("vmid")?,
        })
    }
    fn enc(&self, w: &mut Wr) {
        w.tid(self.tid).str(&self.sopts).str(&self.login).str(&self.command);
        w.str(&self.win_command).str(&self.vmid);
    }
}

impl fmt::Display for StHostEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{{{} {} {} {}}}", self.tid, self.sopts, self.login, self.command)
    }
}

/// SM_STHOST: `int n; entry[n]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StHost {
    pub hosts: Vec<StHostEntry>,
}

impl Codec for StHost {
    fn dec(r: &mut Rd) -> Result<Self> {
        let n = r.count("count", 4 + 5 * STR_MIN)?;
        Ok(StHost {
            hosts: r.list(n, StHostEntry::dec)?,
        })
    }
    fn enc(&self, w: &mut Wr) {
        w.len(self.hosts.len());
        for h in &self.hosts {
            h.enc(w);
        }
    }
}

impl fmt::Display for StHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        list(f, &self.hosts, 4)
    }
}

// ---- tasks -----------------------------------------------------------------------------------

/// TM_SPAWN / SM_SPAWN request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spawn {
    pub file: XStr,
    pub flags: i32,
    /// Host or arch name, optionally followed by `:working-dir`; "" for anywhere.
    pub where_: XStr,
    pub count: i32,
    pub argv: Vec<XStr>,
    pub outtid: Tid,
    pub outctx: i32,
    pub outtag: i32,
    pub trctid: Tid,
    pub trcctx: i32,
    pub trctag: i32,
    pub env: Vec<XStr>,
}

impl Codec for Spawn {
    fn dec(r: &mut Rd) -> Result<Self> {
        let file = r.str("file")?;
        let flags = r.int("flags")?;
        let where_ = r.str("where")?;
        let count = r.int("count")?;
        let n = r.count("nargs", STR_MIN)?;
        let argv = r.list(n, |r| r.str("argv"))?;
        let outtid = r.tid("outtid")?;
        let outctx = r.int("outctx")?;
        let outtag = r.int("outtag")?;
        let trctid = r.tid("trctid")?;
        let trcctx = r.int("trcctx")?;
        let trctag = r.int("trctag")?;
        let n = r.count("nenv", STR_MIN)?;
        let env = r.list(n, |r| r.str("env"))?;
        Ok(Spawn {
            file,
            flags,
            where_,
            count,
            argv,
            outtid,
            outctx,
            outtag,
            trctid,
            trcctx,
            trctag,
            env,
        })
    }
    fn enc(&self, w: &mut Wr) {
        w.str(&self.file).int(self.flags).str(&self.where_).int(self.count);
        w.len(self.argv.len());
        for a in &self.argv {
            w.str(a);
        }
        w.tid(self.outtid).int(self.outctx).int(self.outtag);
        w.tid(self.trctid).int(self.trcctx).int(self.trctag);
        w.len(self.env.len());
        for e in &self.env {
            w.str(e);
        }
    }
}

impl fmt::Display for Spawn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} flags {:#x} where {} count {} argv ",
            self.file, self.flags, self.where_, self.count
        )?;
        list(f, &self.argv, 4)?;
        write!(
            f,
            " out {} trc {} env ",
            Route(self.outtid, self.outctx, self.outtag),
            Route(self.trctid, self.trcctx, self.trctag)
        )?;
        list(f, &self.env, 4)
    }
}

/// A (tid, ctx, tag) destination, shown with names where the values have them.
pub struct Route(pub Tid, pub i32, pub i32);

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}",
            self.0,
            ctx_name(self.1),
            Tag::classify(self.2, self.1).name()
        )
    }
}

/// DM_EXEC / SM_EXEC: a pvmd asked to start `count` tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exec {
    pub ptid: Tid,
    pub file: XStr,
    pub flags: i32,
    pub count: i32,
    pub argv: Vec<XStr>,
    pub outtid: Tid,
    pub outctx: i32,
    pub outtag: i32,
    pub trctid: Tid,
    pub trcctx: i32,
    pub trctag: i32,
    pub env: Vec<XStr>,
    /// `(instance, outof)`: where these tasks start in the whole spawn and how many it has.
    /// Always sent by a legacy pvmd (tdpro.c: assign_tasks()), missing from its doc comment; a
    /// resource manager's SM_EXEC may omit them.
    pub placement: Option<(i32, i32)>,
    /// Bytes after `outof`, which the legacy pvmd never reads. Empty from every pvmd; the
    /// Debian `srm` sample resource manager's SM_EXEC carries its environment strings a second
    /// time here (captured: pvm-proto/tests/captures/l12_srm.hex). Only present with `placement`.
    pub extra: Vec<u8>,
}

impl Codec for Exec {
    fn dec(r: &mut Rd) -> Result<Self> {
        let ptid = r.tid("ptid")?;
        let file = r.str("file")?;
        let flags = r.int("flags")?;
        let count = r.int("count")?;
        let n = r.count("nargs", STR_MIN)?;
        let argv = r.list(n, |r| r.str("argv"))?;
        let outtid = r.tid("outtid")?;
        let outctx = r.int("outctx")?;
        let outtag = r.int("outtag")?;
        let trctid = r.tid("trctid")?;
        let trcctx = r.int("trcctx")?;
        let trctag = r.int("trctag")?;
        let n = r.count("nenv", STR_MIN)?;
        let env = r.list(n, |r| r.str("env"))?;
        let placement = if r.is_empty() {
            None
        } else {
            Some((r.int("instance")?, r.int("outof")?))
        };
        let extra = r.rest();
        Ok(Exec {
            ptid,
            file,
            flags,
            count,
            argv,
            outtid,
            outctx,
            outtag,
            trctid,
            trcctx,
            trctag,
            env,
            placement,
            extra,
        })
    }
    fn enc(&self, w: &mut Wr) {
        w.tid(self.ptid).str(&self.file).int(self.flags).int(self.count);
        w.len(self.argv.len());
        for a in &self.argv {
            w.str(a);
        }
        w.tid(self.outtid).int(self.outctx).int(self.outtag);
        w.tid(self.trctid).int(self.trcctx).int(self.trctag);
        w.len(self.env.len());
        for e in &self.env {
            w.str(e);
        }
        if let Some((i, o)) = self.placement {
            w.int(i).int(o);
            w.raw(&self.extra);
        }
    }
}

impl fmt::Display for Exec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ptid {} {} flags {:#x} count {} argv ",
            self.ptid, self.file, self.flags, self.count
        )?;
        list(f, &self.argv, 4)?;
        write!(
            f,
            " out {} trc {} env ",
            Route(self.outtid, self.outctx, self.outtag),
            Route(self.trctid, self.trcctx, self.trctag)
        )?;
        list(f, &self.env, 4)?;
        if let Some((i, o)) = self.placement {
            write!(f, " instance {i} of {o}")?;
        }
        if !self.extra.is_empty() {
            write!(f, " +{} bytes never read", self.extra.len())?;
        }
        Ok(())
    }
}

/// SM_STTASK: the pvmd asks a tasker to start one task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StTask {
    pub tid: Tid,
    pub flags: i32,
    pub path: XStr,
    /// `argv[0]` is the path.
    pub argv: Vec<XStr>,
    pub env: Vec<XStr>,
    pub instance: i32,
    pub hosttotal: i32,
    pub outof: i32,
}

impl Codec for StTask {
    fn dec(r: &mut Rd) -> Result<Self> {
        let tid = r.tid("tid")?;
        let flags = r.int("flags")?;
        let path = r.str("path")?;
        let n = r.count("argc", STR_MIN)?;
        let argv = r.list(n, |r| r.str("argv"))?;
        let n = r.count("nenv", STR_MIN)?;
        let env = r.list(n, |r| r.str("env"))?;
        Ok(StTask {
            tid,
            flags,
            path,
            argv,
            env,
            instance: r.int("instance")?,
            hosttotal: r.int("hosttotal")?,
            outof: r.int("outof")?,
        })
    }
    fn enc(&self, w: &mut Wr) {
        w.tid(self.tid).int(self.flags).str(&self.path).len(self.argv.len());
        for a in &self.argv {
            w.str(a);
        }
        w.len(self.env.len());
        for e in &self.env {
            w.str(e);
        }
        w.int(self.instance).int(self.hosttotal).int(self.outof);
    }
}

impl fmt::Display for StTask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} flags {:#x} {} argv ", self.tid, self.flags, self.path)?;
        list(f, &self.argv, 4)?;
        write!(f, " env ")?;
        list(f, &self.env, 4)?;
        write!(
            f,
            " instance {} hosttotal {} outof {}",
            self.instance, self.hosttotal, self.outof
        )
    }
}

/// One task as TM_TASK / DM_TASKACK describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskEntry {
    pub tid: Tid,
    pub ptid: Tid,
    pub host: Tid,
    pub flag: i32,
    pub a_out: XStr,
    pub pid: i32,
}

impl Codec for TaskEntry {
    fn dec(r: &mut Rd) -> Result<Self> {
        Ok(TaskEntry {
            tid: r.tid("tid")?,
            ptid: r.tid("ptid")?,
            host: r.tid("host tid")?,
            flag: r.int("flag")?,
            a_out: r.str("a_out")?,
            pid: r.int("pid")?,
        })
    }
    fn enc(&self, w: &mut Wr) {
        w.tid(self.tid)
            .tid(self.ptid)
            .tid(self.host)
            .int(self.flag)
            .str(&self.a_out)
            .int(self.pid);
    }
}

impl fmt::Display for TaskEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{{{} parent {} on {} flag {:#x} {} pid {}}}",
            self.tid, self.ptid, self.host, self.flag, self.a_out, self.pid
        )
    }
}

/// TM_TASK reply: `int status` then tasks to the end of the body (none when status is an error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskList {
    pub status: i32,
    pub tasks: Vec<TaskEntry>,
}

impl Codec for TaskList {
    fn dec(r: &mut Rd) -> Result<Self> {
        Ok(TaskList {
            status: r.int("status")?,
            tasks: r.until_end(TaskEntry::dec)?,
        })
    }
    fn enc(&self, w: &mut Wr) {
        w.int(self.status);
        for t in &self.tasks {
            t.enc(w);
        }
    }
}

impl fmt::Display for TaskList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ", Code(self.status))?;
        list(f, &self.tasks, 4)
    }
}

/// DM_TASKACK: tasks to the end of the body, no leading status (empty when the host has none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRecords {
    pub tasks: Vec<TaskEntry>,
}

impl Codec for TaskRecords {
    fn dec(r: &mut Rd) -> Result<Self> {
        Ok(TaskRecords {
            tasks: r.until_end(TaskEntry::dec)?,
        })
    }
    fn enc(&self, w: &mut Wr) {
        for t in &self.tasks {
            t.enc(w);
        }
    }
}

impl fmt::Display for TaskRecords {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        list(f, &self.tasks, 4)
    }
}

/// `int tid; int signum`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendSig {
    pub tid: Tid,
    pub signum: i32,
}

impl Codec for SendSig {
    fn dec(r: &mut Rd) -> Result<Self> {
        Ok(SendSig {
            tid: r.tid("tid")?,
            signum: r.int("signum")?,
        })
    }
    fn enc(&self, w: &mut Wr) {
        w.tid(self.tid).int(self.signum);
    }
}

impl fmt::Display for SendSig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} signal {}", self.tid, self.signum)
    }
}

/// Exit status and resource use of a task (SM_TASKX).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskStats {
    pub status: i32,
    pub utime: (i32, i32),
    pub stime: (i32, i32),
}

/// SM_TASKX: `int tid` optionally followed by `status; u_sec; u_usec; s_sec; s_usec`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskX {
    pub tid: Tid,
    pub stats: Option<TaskStats>,
}

impl Codec for TaskX {
    fn dec(r: &mut Rd) -> Result<Self> {
        let tid = r.tid("tid")?;
        let stats = if r.is_empty() {
            None
        } else {
            Some(TaskStats {
                status: r.int("status")?,
                utime: (r.int("u_sec")?, r.int("u_usec")?),
                stime: (r.int("s_sec")?, r.int("s_usec")?),
            })
        };
        Ok(TaskX { tid, stats })
    }
    fn enc(&self, w: &mut Wr) {
        w.tid(self.tid);
        if let Some(s) = self.stats {
            w.int(s.status)
                .int(s.utime.0)
                .int(s.utime.1)
                .int(s.stime.0)
                .int(s.stime.1);
        }
    }
}

impl fmt::Display for TaskX {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.tid)?;
        if let Some(s) = self.stats {
            write!(
                f,
                " status {} user {}.{:06} sys {}.{:06}",
                s.status, s.utime.0, s.utime.1, s.stime.0, s.stime.1
            )?;
        }
        Ok(())
    }
}

// ---- notify, multicast -----------------------------------------------------------------------

/// TM_NOTIFY / SM_NOTIFY: `int what; int ctx; int tag; int count; int tids[count]`.
///
/// For PvmHostAdd the count is a repeat count (-1 = forever) and the legacy pvmd reads no tids;
/// for other kinds (and unknown ones) whatever ints follow are kept in `tids`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notify {
    /// Kind in the low byte, PvmNotifyCancel (256) as a flag.
    pub what: i32,
    pub ctx: i32,
    pub tag: i32,
    pub count: i32,
    pub tids: Vec<Tid>,
}

impl Codec for Notify {
    fn dec(r: &mut Rd) -> Result<Self> {
        let what = r.int("what")?;
        let ctx = r.int("ctx")?;
        let tag = r.int("tag")?;
        let at = r.offset();
        let count = r.int("count")?;
        let kind = NotifyKind::from_code(what & 0xff);
        let tids = match kind {
            Some(NotifyKind::TaskExit) | Some(NotifyKind::HostDelete) => {
                let n = r.bound("count", at, count, 4)?;
                r.tids("tid", n)?
            }
            _ => r.until_end(|r| r.tid("tid"))?,
        };
        Ok(Notify {
            what,
            ctx,
            tag,
            count,
            tids,
        })
    }
    fn enc(&self, w: &mut Wr) {
        w.int(self.what)
            .int(self.ctx)
            .int(self.tag)
            .int(self.count)
            .tids(&self.tids);
    }
}

impl fmt::Display for Notify {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match NotifyKind::from_code(self.what & 0xff) {
            Some(k) => write!(f, "{}", k.name())?,
            None => write!(f, "what {:#x}", self.what & 0xff)?,
        }
        if self.what & PVM_NOTIFY_CANCEL != 0 {
            f.write_str("|PvmNotifyCancel")?;
        }
        write!(
            f,
            " ctx {} tag {} count {} ",
            ctx_name(self.ctx),
            Tag::classify(self.tag, self.ctx).name(),
            self.count
        )?;
        list(f, &self.tids, 8)
    }
}

/// Contexts by name where they have one.
pub fn ctx_name(ctx: i32) -> String {
    use crate::codes::{SYSCTX_DG, SYSCTX_SG, SYSCTX_TC, SYSCTX_TM};
    match ctx {
        SYSCTX_TC => "SYSCTX_TC".into(),
        SYSCTX_TM => "SYSCTX_TM".into(),
        SYSCTX_SG => "SYSCTX_SG".into(),
        SYSCTX_DG => "SYSCTX_DG".into(),
        c => format!("{c:#x}"),
    }
}

/// DM_NOTIFY: `int what; int tid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DmNotify {
    pub what: i32,
    pub tid: Tid,
}

impl Codec for DmNotify {
    fn dec(r: &mut Rd) -> Result<Self> {
        Ok(DmNotify {
            what: r.int("what")?,
            tid: r.tid("tid")?,
        })
    }
    fn enc(&self, w: &mut Wr) {
        w.int(self.what).tid(self.tid);
    }
}

impl fmt::Display for DmNotify {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match NotifyKind::from_code(self.what) {
            Some(k) => write!(f, "{} {}", k.name(), self.tid),
            None => write!(f, "what {} {}", self.what, self.tid),
        }
    }
}

/// DM_MCA: `int gtid; int n; int tids[n]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mca {
    pub gtid: Tid,
    pub tids: Vec<Tid>,
}

impl Codec for Mca {
    fn dec(r: &mut Rd) -> Result<Self> {
        let gtid = r.tid("gtid")?;
        let n = r.count("count", 4)?;
        Ok(Mca {
            gtid,
            tids: r.tids("tid", n)?,
        })
    }
    fn enc(&self, w: &mut Wr) {
        w.tid(self.gtid).len(self.tids.len()).tids(&self.tids);
    }
}

impl fmt::Display for Mca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> ", self.gtid)?;
        list(f, &self.tids, 8)
    }
}

// ---- options, tracing, time ------------------------------------------------------------------

/// `{int what; string value}` to the end of the body: TM_SETOPT and DM_SLCONF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptList {
    pub entries: Vec<(i32, XStr)>,
}

impl Codec for OptList {
    fn dec(r: &mut Rd) -> Result<Self> {
        Ok(OptList {
            entries: r.until_end(|r| Ok((r.int("option")?, r.str("value")?)))?,
        })
    }
    fn enc(&self, w: &mut Wr) {
        for (k, v) in &self.entries {
            w.int(*k).str(v);
        }
    }
}

/// Shows TM_SETOPT entries (`slconf` false) or DM_SLCONF entries with their names.
pub struct OptListDisplay<'a>(pub &'a OptList, pub bool);

impl fmt::Display for OptListDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let items: Vec<String> = self
            .0
            .entries
            .iter()
            .map(|(k, v)| {
                let name = if self.1 {
                    SlConfField::from_code(*k).map(|x| x.name())
                } else {
                    TaskOpt::from_code(*k).map(|x| x.name())
                };
                match name {
                    Some(n) => format!("{n}={v}"),
                    None => format!("{k}={v}"),
                }
            })
            .collect();
        list(f, &items, 6)
    }
}

/// The tracing fields of TM_TRACER (after `regme`) and TC_SETTRACE (after the tids).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TracerArgs {
    pub trcctx: i32,
    pub trctag: i32,
    pub outctx: i32,
    pub outtag: i32,
    pub tmask: XStr,
    pub tbuf: i32,
    pub topt: i32,
}

/// TM_TRACER: `int regme` and, when registering, the tracing parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracer {
    pub regme: i32,
    pub args: Option<TracerArgs>,
}

impl Codec for Tracer {
    fn dec(r: &mut Rd) -> Result<Self> {
        let regme = r.int("regme")?;
        let args = if r.is_empty() {
            None
        } else {
            Some(TracerArgs {
                trcctx: r.int("trcctx")?,
                trctag: r.int("trctag")?,
                outctx: r.int("outctx")?,
                outtag: r.int("outtag")?,
                tmask: r.str("tmask")?,
                tbuf: r.int("tbuf")?,
                topt: r.int("topt")?,
            })
        };
        Ok(Tracer { regme, args })
    }
    fn enc(&self, w: &mut Wr) {
        w.int(self.regme);
        if let Some(a) = &self.args {
            w.int(a.trcctx).int(a.trctag).int(a.outctx).int(a.outtag);
            w.str(&a.tmask).int(a.tbuf).int(a.topt);
        }
    }
}

impl fmt::Display for Tracer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "regme {}", self.regme)?;
        if let Some(a) = &self.args {
            write!(
                f,
                " trc {:#x}/{} out {:#x}/{} tmask {} tbuf {} topt {}",
                a.trcctx, a.trctag, a.outctx, a.outtag, a.tmask, a.tbuf, a.topt
            )?;
        }
        Ok(())
    }
}

/// TC_SETTRACE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetTrace {
    pub trctid: Tid,
    pub trcctx: i32,
    pub trctag: i32,
    pub outtid: Tid,
    pub outctx: i32,
    pub outtag: i32,
    pub tmask: XStr,
    pub tbuf: i32,
    pub topt: i32,
}

impl Codec for SetTrace {
    fn dec(r: &mut Rd) -> Result<Self> {
        Ok(SetTrace {
            trctid: r.tid("trctid")?,
            trcctx: r.int("trcctx")?,
            trctag: r.int("trctag")?,
            outtid: r.tid("outtid")?,
            outctx: r.int("outctx")?,
            outtag: r.int("outtag")?,
            tmask: r.str("tmask")?,
            tbuf: r.int("tbuf")?,
            topt: r.int("topt")?,
        })
    }
    fn enc(&self, w: &mut Wr) {
        w.tid(self.trctid).int(self.trcctx).int(self.trctag);
        w.tid(self.outtid).int(self.outctx).int(self.outtag);
        w.str(&self.tmask).int(self.tbuf).int(self.topt);
    }
}

impl fmt::Display for SetTrace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "trc {} out {} tmask {} tbuf {} topt {}",
            Route(self.trctid, self.trcctx, self.trctag),
            Route(self.outtid, self.outctx, self.outtag),
            self.tmask,
            self.tbuf,
            self.topt
        )
    }
}

/// `int sec; int usec`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeVal {
    pub sec: i32,
    pub usec: i32,
}

impl Codec for TimeVal {
    fn dec(r: &mut Rd) -> Result<Self> {
        Ok(TimeVal {
            sec: r.int("sec")?,
            usec: r.int("usec")?,
        })
    }
    fn enc(&self, w: &mut Wr) {
        w.int(self.sec).int(self.usec);
    }
}

impl fmt::Display for TimeVal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:06}", self.sec, self.usec)
    }
}

/// TM_HOSTSYNC reply: `int status` and, when it is 0, the clock sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostSyncAck {
    pub status: i32,
    pub time: Option<TimeVal>,
}

impl Codec for HostSyncAck {
    fn dec(r: &mut Rd) -> Result<Self> {
        let status = r.int("status")?;
        let time = if r.is_empty() { None } else { Some(TimeVal::dec(r)?) };
        Ok(HostSyncAck { status, time })
    }
    fn enc(&self, w: &mut Wr) {
        w.int(self.status);
        if let Some(t) = &self.time {
            t.enc(w);
        }
    }
}

impl fmt::Display for HostSyncAck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", Code(self.status))?;
        if let Some(t) = self.time {
            write!(f, " time {t}")?;
        }
        Ok(())
    }
}

// ---- task output -----------------------------------------------------------------------------

/// What a task-output record says after the tid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputKind {
    /// `int len (> 0); byte data[len]`: one read of the task's stdout/stderr pipe.
    Data(Vec<u8>),
    /// `int 0` (TO_EOF): the output closed.
    Eof,
    /// `int -1 (TO_SPAWN); int ptid`: the task was spawned (sent by the spawning pvmd; not
    /// listed in messages.md §11, tdpro.c: assign_tasks()).
    Spawn { ptid: Tid },
    /// `int -2 (TO_NEW); int ptid`: the task started writing to this collector.
    New { ptid: Tid },
}

/// A task-output record (messages.md §11), and the DM_TASKOUT body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputRecord {
    pub tid: Tid,
    pub kind: OutputKind,
}

impl Codec for OutputRecord {
    fn dec(r: &mut Rd) -> Result<Self> {
        let tid = r.tid("tid")?;
        let at = r.offset();
        let len = r.int("len")?;
        let kind = match len {
            0 => OutputKind::Eof,
            -1 => OutputKind::Spawn { ptid: r.tid("ptid")? },
            -2 => OutputKind::New { ptid: r.tid("ptid")? },
            n if n > 0 => {
                let n = r.bound("len", at, n, 1)?;
                OutputKind::Data(r.opaque("data", n)?)
            }
            n => {
                return Err(ParseError::invalid(
                    "len",
                    at,
                    n.into(),
                    "not a length, TO_EOF, TO_SPAWN or TO_NEW",
                ))
            }
        };
        Ok(OutputRecord { tid, kind })
    }
    fn enc(&self, w: &mut Wr) {
        w.tid(self.tid);
        match &self.kind {
            OutputKind::Data(d) => {
                w.len(d.len()).opaque(d);
            }
            OutputKind::Eof => {
                w.int(0);
            }
            OutputKind::Spawn { ptid } => {
                w.int(-1).tid(*ptid);
            }
            OutputKind::New { ptid } => {
                w.int(-2).tid(*ptid);
            }
        }
    }
}

impl fmt::Display for OutputRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            OutputKind::Data(d) => write!(f, "{} {}", self.tid, XStr(d.clone())),
            OutputKind::Eof => write!(f, "{} EOF", self.tid),
            OutputKind::Spawn { ptid } => write!(f, "{} spawned by {}", self.tid, ptid),
            OutputKind::New { ptid } => write!(f, "{} new, parent {}", self.tid, ptid),
        }
    }
}

// ---- mailbox ---------------------------------------------------------------------------------

/// A message packed inside another (pvm_pkmesg; wire.md §6.6), as the mailbox stores it:
/// `int len; int ctx; int tag; int wid; int enc; int crc; int src; int dst;` then fragments
/// `{int fraglen; byte data[fraglen]}` until `len` bytes are covered. In an XDR outer message
/// each fragment's bytes are padded to 4.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EmbeddedMsg {
    pub ctx: i32,
    pub tag: i32,
    pub wid: i32,
    pub enc: i32,
    pub crc: i32,
    pub src: Tid,
    pub dst: Tid,
    /// The fragments as packed; `len` on the wire is the sum of their lengths.
    pub frags: Vec<Vec<u8>>,
}

impl EmbeddedMsg {
    /// The body: all fragments joined.
    pub fn body(&self) -> Vec<u8> {
        self.frags.concat()
    }
}

impl Codec for EmbeddedMsg {
    fn dec(r: &mut Rd) -> Result<Self> {
        let at = r.offset();
        let len = r.count("msg len", 1)?;
        let mut m = EmbeddedMsg {
            ctx: r.int("msg ctx")?,
            tag: r.int("msg tag")?,
            wid: r.int("msg wid")?,
            enc: r.int("msg enc")?,
            crc: r.int("msg crc")?,
            src: r.tid("msg src")?,
            dst: r.tid("msg dst")?,
            frags: Vec::new(),
        };
        let mut got = 0usize;
        while got < len {
            let n = r.count("msg fraglen", 1)?;
            m.frags.push(r.opaque("msg frag", n)?);
            got += n;
        }
        if got != len {
            return Err(ParseError::new(
                "msg len",
                at,
                ErrorKind::Invalid {
                    value: len as i64,
                    why: "fragments overrun the message length",
                },
            ));
        }
        Ok(m)
    }
    fn enc(&self, w: &mut Wr) {
        let len: usize = self.frags.iter().map(Vec::len).sum();
        w.len(len)
            .int(self.ctx)
            .int(self.tag)
            .int(self.wid)
            .int(self.enc)
            .int(self.crc);
        w.tid(self.src).tid(self.dst);
        for fr in &self.frags {
            w.len(fr.len()).opaque(fr);
        }
    }
}

impl fmt::Display for EmbeddedMsg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let body = self.body();
        write!(
            f,
            "msg{{{} -> {} tag {} ctx {} enc {:#x} wid {} {} frags {} bytes ",
            self.src,
            self.dst,
            Tag::classify(self.tag, self.ctx).name(),
            ctx_name(self.ctx),
            self.enc,
            self.wid,
            self.frags.len(),
            body.len()
        )?;
        hex(f, &body, 16)?;
        f.write_str("}")
    }
}

/// TM_DB / DM_DB request: `int op; int tid; string class; int index; int flags;` then for
/// TMDB_PUT the message to store, and for TMDB_RESET `int n; int noreset_tids[n]` (ddpro.c:
/// dm_db(); messages.md does not list the RESET tail).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbRequest {
    pub op: i32,
    pub tid: Tid,
    pub class: XStr,
    pub index: i32,
    /// PvmMbox* flags; for TMDB_RESET non-zero means "tasks are being killed".
    pub flags: i32,
    /// Present exactly when `op` is TMDB_PUT.
    pub msg: Option<EmbeddedMsg>,
    /// Present exactly when `op` is TMDB_RESET: tasks whose persistent entries survive.
    pub noreset: Option<Vec<Tid>>,
}

impl Codec for DbRequest {
    fn dec(r: &mut Rd) -> Result<Self> {
        let op = r.int("op")?;
        let tid = r.tid("tid")?;
        let class = r.str("class")?;
        let index = r.int("index")?;
        let flags = r.int("flags")?;
        let msg = if op == DbOp::Put.code() {
            Some(EmbeddedMsg::dec(r)?)
        } else {
            None
        };
        let noreset = if op == DbOp::Reset.code() {
            let n = r.count("nnoreset", 4)?;
            Some(r.tids("noreset tid", n)?)
        } else {
            None
        };
        Ok(DbRequest {
            op,
            tid,
            class,
            index,
            flags,
            msg,
            noreset,
        })
    }
    fn enc(&self, w: &mut Wr) {
        w.int(self.op)
            .tid(self.tid)
            .str(&self.class)
            .int(self.index)
            .int(self.flags);
        if let Some(m) = &self.msg {
            m.enc(w);
        }
        if let Some(t) = &self.noreset {
            w.len(t.len()).tids(t);
        }
    }
}

impl fmt::Display for DbRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match DbOp::from_code(self.op) {
            Some(o) => write!(f, "{}", o.name())?,
            None => write!(f, "op {}", self.op)?,
        }
        write!(
            f,
            " {} {} index {} flags {:#x}",
            self.tid, self.class, self.index, self.flags
        )?;
        if let Some(m) = &self.msg {
            write!(f, " {m}")?;
        }
        if let Some(t) = &self.noreset {
            f.write_str(" noreset ")?;
            list(f, t, 8)?;
        }
        Ok(())
    }
}

/// One mailbox entry in a NAMES reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DbEntry {
    pub index: i32,
    pub owner: Tid,
    pub flags: i32,
}

/// One mailbox class in a NAMES reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbClass {
    pub name: XStr,
    pub entries: Vec<DbEntry>,
}

/// TM_DB / DM_DBACK reply. Its shape depends on the request's op, which the reply does not
/// repeat; the decoder picks by what follows the status:
/// - nothing: [`DbReply::Status`] (PUT, REMOVE, GET not found, any error);
/// - an embedded message that ends the body exactly: [`DbReply::Entry`] (GET found);
/// - otherwise a class list: [`DbReply::Names`] (NAMES, shape from ddpro.c/msgbox.c, not captured).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbReply {
    Status(i32),
    Entry { index: i32, msg: EmbeddedMsg },
    Names { status: i32, classes: Vec<DbClass> },
}

impl Codec for DbReply {
    fn dec(r: &mut Rd) -> Result<Self> {
        let status = r.int("status")?;
        if r.is_empty() {
            return Ok(DbReply::Status(status));
        }
        let mut probe = Rd { x: r.x.clone() };
        let entry = EmbeddedMsg::dec(&mut probe).and_then(|m| probe.finish("msg").map(|_| m));
        let entry_err = match entry {
            Ok(msg) => {
                *r = probe;
                return Ok(DbReply::Entry { index: status, msg });
            }
            Err(e) => e,
        };
        let names: Result<Vec<DbClass>> = (|| {
            let n = r.count("nclasses", STR_MIN + 4)?;
            let classes = r.list(n, |r| {
                let name = r.str("class")?;
                let n = r.count("nentries", 12)?;
                let entries = r.list(n, |r| {
                    Ok(DbEntry {
                        index: r.int("index")?,
                        owner: r.tid("owner")?,
                        flags: r.int("flags")?,
                    })
                })?;
                Ok(DbClass { name, entries })
            })?;
            r.finish("names")?;
            Ok(classes)
        })();
        match names {
            Ok(classes) => Ok(DbReply::Names { status, classes }),
            // Report whichever reading got further: that is the likelier intended shape.
            Err(e) if e.offset >= entry_err.offset => Err(e),
            Err(_) => Err(entry_err),
        }
    }
    fn enc(&self, w: &mut Wr) {
        match self {
            DbReply::Status(s) => {
                w.int(*s);
            }
            DbReply::Entry { index, msg } => {
                w.int(*index);
                msg.enc(w);
            }
            DbReply::Names { status, classes } => {
                w.int(*status).len(classes.len());
                for c in classes {
                    w.str(&c.name).len(c.entries.len());
                    for e in &c.entries {
                        w.int(e.index).tid(e.owner).int(e.flags);
                    }
                }
            }
        }
    }
}

impl fmt::Display for DbReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbReply::Status(s) => write!(f, "{}", Code(*s)),
            DbReply::Entry { index, msg } => write!(f, "index {index} {msg}"),
            DbReply::Names { status, classes } => {
                let c: Vec<String> = classes
                    .iter()
                    .map(|c| format!("{} ({} entries)", c.name, c.entries.len()))
                    .collect();
                write!(f, "{} ", Code(*status))?;
                list(f, &c, 6)
            }
        }
    }
}
