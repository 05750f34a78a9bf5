//! Typed message bodies for every message code of PVM 3.4.6, in both directions.
//!
//! [`decode`] turns a body into a [`Body`] using the message header (tag, context, encoding)
//! and the source and destination tids (the [`Direction`]); [`Body::emit`] writes it back.
//! For every body legacy PVM sends, `emit(decode(b)) == mask_padding(b)`: the only bytes that
//! may differ are XDR pad bytes, which legacy code leaves uninitialised and this crate writes
//! as zeros. [`mask_padding`] zeroes exactly those: the 1..3 bytes after each string and each
//! byte array (output data, embedded-message fragments) of a decoded body. Bodies decoded as
//! [`Body::User`] or [`Body::Unknown`] have no known pad bytes and are left untouched.
//!
//! How a body is chosen:
//! - A system code (TM_, DM_, TC_, SM_, group server in SYSCTX_DG) with XDR encoding decodes to
//!   its typed variant. A body that does not fit is a [`ParseError`] naming the field and the
//!   byte offset within the body. A system code with any other encoding is [`Body::Unknown`].
//! - TM_ codes are replies when the source is a pvmd, requests otherwise. DM_ and TC_ codes
//!   have one shape each whatever the direction (DM_ requests and replies use distinct codes).
//! - SM_ codes between tasks (SM_SPAWN, SM_TASK, SM_CONFIG, SM_ADDHOST, SM_DELHOST, SM_SCHED
//!   travel task <-> resource manager with the same tag both ways) and group-server tags are
//!   decoded as the request when the body has the request's shape exactly, else as the reply.
//!   Known blind spot: an SM_TASK reply with a status and no task entries is 4 bytes like the
//!   request and decodes as the request.
//! - A user tag sent by a pvmd to a task with XDR encoding is a notification or a task-output
//!   record when its shape says so: 4 bytes = PvmTaskExit/PvmHostDelete notify (`int tid`);
//!   `int task-tid; int len|0|-1|-2; ...` = output record; `int n >= 1; int hostparts[n]` =
//!   PvmHostAdd notify. Anything else there, and every other user tag, is [`Body::User`].
//! - Unknown system codes (in a family's range but not defined by 3.4.6), and TC_SHMAT (sent
//!   only by shared-memory builds), are [`Body::Unknown`], never an error.
//!
//! Where the captures (or, where nothing was captured, the legacy sources) disagree with
//! messages.md, the bytes win; each case is also noted on its variant or type:
//! - DM_NOTIFYACK and DM_RESETACK carry `int tid`; messages.md says they are empty.
//! - TM_SCHED's reply is `int oldsched` and the **master host only** (tid, name, arch, speed,
//!   dsig), not a host table.
//! - Host entries (TM_CONFIG, TM_TASK, DM_TASKACK, DM_STARTACK, PvmHostAdd notify) carry host
//!   parts (`0x40000`), not pvmd tids (`0x80040000`).
//! - TC_OUTPUT is sent: it carries the task-output records of pvm_catchout(); TC_OUTPUTX is the
//!   PvmTaskExit notify pvm_catchout() asks for on itself. Output records include TO_SPAWN (-1).
//! - TMDB_RESET requests end with `int n; int noreset_tids[n]`.
//! - A mailbox entry comes back from GET with an extra, empty first fragment.
//! - SM_STHOSTACK is parsed with a leading count, like DM_STARTACK (its doc says implied).
//! - DM_EXEC ends with `instance; outof`.
//!
//! Allocation: every count is checked against the bytes left before anything is reserved, so
//! a decoded body takes at most a small constant factor (the in-memory size of an item over
//! its smallest encoding, below 8) times the input length.

mod gs;
mod types;
mod wire;

pub use gs::*;
pub use types::*;
pub use wire::XStr;

use crate::codes::{Dm, Gs, Sm, Tag, Tc, Tm, ENC_XDR};
use crate::error::{ParseError, Result};
use crate::mesg::MsgHeader;
use crate::tid::Tid;
use std::fmt;
use std::ops::Range;
use wire::{hex, Rd, Wr};

/// Who is talking to whom, as far as the tids tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// A task (or an unconnected socket, tid -1) to a pvmd.
    ToDaemon,
    /// A pvmd to a task (or to a not yet identified connection, tid 0).
    FromDaemon,
    DaemonToDaemon,
    /// Anything else: task to task, task to multicast address.
    TaskToTask,
}

/// The direction of a message from its tids: "pvmd" means the pvmd bit set, the group bit clear
/// and the local part zero (so `0x80000000`, "my own pvmd", counts).
pub fn direction(src: Tid, dst: Tid) -> Direction {
    match (src.is_pvmd(), dst.is_pvmd()) {
        (true, true) => Direction::DaemonToDaemon,
        (false, true) => Direction::ToDaemon,
        (true, false) => Direction::FromDaemon,
        (false, false) => Direction::TaskToTask,
    }
}

macro_rules! bodies {
    ($($(#[$m:meta])* $var:ident($ty:ty) = $label:literal,)*) => {
        /// A decoded message body: one variant per (code, direction) shape.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum Body {
            $($(#[$m])* #[doc = $label] $var($ty),)*
            /// A known code whose body is empty in this direction (TM_EXIT, TM_CONFIG request,
            /// DM_HTCOMMIT, DM_NULL, TC_NOOP, group-server DIE, …).
            Empty,
            /// A user message, or any body that is not XDR: the bytes as sent.
            User { bytes: Vec<u8> },
            /// A system code this crate does not know a body for.
            Unknown { tag: i32, bytes: Vec<u8> },
        }

        impl Body {
            fn enc(&self, w: &mut Wr) {
                match self {
                    $(Body::$var(x) => x.enc(w),)*
                    Body::Empty => {}
                    Body::User { bytes } | Body::Unknown { bytes, .. } => {
                        w.raw(bytes);
                    }
                }
            }

            /// The code (and "reply" for replies) this variant stands for.
            pub fn label(&self) -> &'static str {
                match self {
                    $(Body::$var(_) => $label,)*
                    Body::Empty => "empty",
                    Body::User { .. } => "user",
                    Body::Unknown { .. } => "unknown",
                }
            }

            fn fmt_payload(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $(Body::$var(x) => write!(f, "{x}"),)*
                    Body::Empty => f.write_str("(empty)"),
                    Body::User { bytes } => {
                        write!(f, "{} bytes", bytes.len())?;
                        if !bytes.is_empty() {
                            f.write_str(" ")?;
                        }
                        hex(f, bytes, 24)
                    }
                    Body::Unknown { tag, bytes } => {
                        write!(f, "{} {} bytes", Tag::classify(*tag, 0).name(), bytes.len())?;
                        if !bytes.is_empty() {
                            f.write_str(" ")?;
                        }
                        hex(f, bytes, 24)
                    }
                }
            }
        }
    };
}

bodies! {
    TmConnect(ConnectReq) = "TM_CONNECT",
    TmConnectAck(ConnectAck) = "TM_CONNECT reply",
    TmConn2(Conn2Req) = "TM_CONN2",
    TmConn2Ack(Conn2Ack) = "TM_CONN2 reply",
    TmAddHost(HostNames) = "TM_ADDHOST",
    TmAddHostAck(AddHostAck) = "TM_ADDHOST reply",
    TmDelHost(HostNames) = "TM_DELHOST",
    TmDelHostAck(StatusList) = "TM_DELHOST reply",
    TmConfigAck(HostTable) = "TM_CONFIG reply",
    TmMstat(Name) = "TM_MSTAT",
    TmMstatAck(Int) = "TM_MSTAT reply",
    TmTickle(IntList) = "TM_TICKLE",
    TmTickleAck(IntList) = "TM_TICKLE reply",
    TmSpawn(Spawn) = "TM_SPAWN",
    TmSpawnAck(TidsOrError) = "TM_SPAWN reply",
    TmPstat(TidArg) = "TM_PSTAT",
    TmPstatAck(Int) = "TM_PSTAT reply",
    TmSendSig(SendSig) = "TM_SENDSIG",
    TmTask(TidArg) = "TM_TASK",
    TmTaskAck(TaskList) = "TM_TASK reply",
    /// No reply exists; decoded with this shape in either direction.
    TmMca(TidList) = "TM_MCA",
    /// No reply exists; decoded with this shape in either direction.
    TmNotify(Notify) = "TM_NOTIFY",
    TmDb(DbRequest) = "TM_DB",
    TmDbAck(DbReply) = "TM_DB reply",
    /// Only the master host follows the old scheduler tid (tdpro.c: tm_sched()); messages.md
    /// describes a host table.
    TmSchedAck(SchedAck) = "TM_SCHED reply",
    TmTasker(Int) = "TM_TASKER",
    TmTaskerAck(Int) = "TM_TASKER reply",
    TmHoster(Int) = "TM_HOSTER",
    TmHosterAck(Int) = "TM_HOSTER reply",
    TmTracer(Tracer) = "TM_TRACER",
    TmTracerAck(Int) = "TM_TRACER reply",
    TmHostSync(TidArg) = "TM_HOSTSYNC",
    TmHostSyncAck(HostSyncAck) = "TM_HOSTSYNC reply",
    TmSetOpt(OptList) = "TM_SETOPT",
    TmGetOptAck(TaskConfig) = "TM_GETOPT reply",
    TmContext(Int) = "TM_CONTEXT",
    TmContextAck(Int) = "TM_CONTEXT reply",
    TmShmConn(Int) = "TM_SHMCONN",

    DmAdd(HostNames) = "DM_ADD",
    DmAddAck(AddHostAck) = "DM_ADDACK",
    /// Carries `instance; outof` after the environment, which the legacy doc comment omits.
    DmExec(Exec) = "DM_EXEC",
    DmExecAck(TidsOrError) = "DM_EXECACK",
    DmSendSig(SendSig) = "DM_SENDSIG",
    DmHtUpd(HtUpd) = "DM_HTUPD",
    DmSlConf(SlConf) = "DM_SLCONF",
    DmStartAck(StartAck) = "DM_STARTACK",
    DmTask(TidArg) = "DM_TASK",
    DmTaskAck(TaskRecords) = "DM_TASKACK",
    DmDelHost(HostNames) = "DM_DELHOST",
    DmDelHostAck(StatusList) = "DM_DELHOSTACK",
    DmTaskOut(OutputRecord) = "DM_TASKOUT",
    DmPstat(TidArg) = "DM_PSTAT",
    DmPstatAck(Int) = "DM_PSTATACK",
    DmMca(Mca) = "DM_MCA",
    DmNotify(DmNotify) = "DM_NOTIFY",
    /// The capture shows `int tid` (the task that exited); messages.md says the body is empty.
    DmNotifyAck(TidArg) = "DM_NOTIFYACK",
    DmDb(DbRequest) = "DM_DB",
    DmDbAck(DbReply) = "DM_DBACK",
    DmReset(TidArg) = "DM_RESET",
    /// `int tid` (ddpro.c: dm_reset()); messages.md says the body is empty.
    DmResetAck(TidArg) = "DM_RESETACK",
    DmHtDel(HtDel) = "DM_HTDEL",
    DmHostSyncAck(TimeVal) = "DM_HOSTSYNCACK",

    TcConReq(RouteReq) = "TC_CONREQ",
    TcConAck(RouteAck) = "TC_CONACK",
    TcTaskExit(TidArg) = "TC_TASKEXIT",
    TcSetTrace(SetTrace) = "TC_SETTRACE",
    TcSetTmask(Name) = "TC_SETTMASK",
    TcSetTrcBuf(Int) = "TC_SETTRCBUF",
    TcSetTrcOpt(Int) = "TC_SETTRCOPT",
    TcSiblings(TidList) = "TC_SIBLINGS",
    /// A task-output record for a task that called pvm_catchout() (which sets its output
    /// tid/ctx/tag to itself/SYSCTX_TC/TC_OUTPUT; lpvmcat.c). messages.md says TC_OUTPUT is
    /// never sent; the capture shows TO_NEW, TO_SPAWN, data and EOF records with this tag.
    TcOutput(OutputRecord) = "TC_OUTPUT",
    /// pvm_catchout() asks for a PvmTaskExit notify on itself with this tag; the body is the
    /// notify's `int tid`. messages.md says it is never sent.
    TcOutputX(TidArg) = "TC_OUTPUTX",

    SmSpawn(Spawn) = "SM_SPAWN",
    SmSpawnAck(TidsOrError) = "SM_SPAWN reply",
    SmExec(Exec) = "SM_EXEC",
    SmExecAck(TidsOrError) = "SM_EXECACK",
    SmTask(TidArg) = "SM_TASK",
    SmTaskAck(TaskList) = "SM_TASK reply",
    SmConfigAck(HostTable) = "SM_CONFIG reply",
    SmAddHost(HostNames) = "SM_ADDHOST",
    SmAddHostAck(AddHostAck) = "SM_ADDHOST reply",
    SmDelHost(HostNames) = "SM_DELHOST",
    SmDelHostAck(StatusList) = "SM_DELHOST reply",
    SmAdd(HostNames) = "SM_ADD",
    SmAddAck(AddHostAck) = "SM_ADDACK",
    SmNotify(Notify) = "SM_NOTIFY",
    SmTaskX(TaskX) = "SM_TASKX",
    SmHostX(TidArg) = "SM_HOSTX",
    SmHandoff(TidArg) = "SM_HANDOFF",
    SmSchedAck(SchedAck) = "SM_SCHED reply",
    SmStHost(StHost) = "SM_STHOST",
    /// Parsed by the pvmd exactly like DM_STARTACK, leading count included (sdpro.c:
    /// sm_sthostack() -> ddpro.c: startack()), although its doc comment and messages.md say
    /// the list length is implied.
    SmStHostAck(StartAck) = "SM_STHOSTACK",
    SmStTask(StTask) = "SM_STTASK",

    GsJoin(GsGroup) = "GS_JOIN",
    GsJoinAck(Int) = "GS_JOIN reply",
    GsLeave(GsGroup) = "GS_LEAVE",
    GsLeaveAck(Int) = "GS_LEAVE reply",
    GsBarrier(GsGroupArg) = "GS_BARRIER",
    /// The barrier count when the barrier is released (sent with tag BARRIER to all waiters,
    /// also for BARRIERV), or an error code.
    GsBarrierAck(Int) = "GS_BARRIER reply",
    GsBcast(GsGroup) = "GS_BCAST",
    GsBcastAck(GsTids) = "GS_BCAST reply",
    GsGetInst(GsGroupArg) = "GS_GETINST",
    GsGetInstAck(GsValue) = "GS_GETINST reply",
    GsGetTid(GsGroupArg) = "GS_GETTID",
    GsGetTidAck(GsValue) = "GS_GETTID reply",
    GsGsize(GsGroup) = "GS_GSIZE",
    GsGsizeAck(GsValue) = "GS_GSIZE reply",
    GsGslsAck(GsList) = "GS_GSLS reply",
    /// The PvmTaskExit notification the server asked the pvmd for (tag DEADTID).
    GsDeadTid(TidArg) = "GS_DEADTID",
    GsTidList(GsGroup) = "GS_TIDLIST",
    GsTidListAck(GsTids) = "GS_TIDLIST reply",
    GsStaticGroup(GsGroupArg) = "GS_STATICGROUP",
    GsStaticGroupAck(GsStaticAck) = "GS_STATICGROUP reply",
    GsHostChar(GsGroupArg) = "GS_HOSTCHAR",
    GsHostCharAck(GsHostChar) = "GS_HOSTCHAR reply",
    GsHostCharV(GsGroup) = "GS_HOSTCHARV",
    GsHostCharVAck(GsHostCharV) = "GS_HOSTCHARV reply",
    GsBarrierV(GsGroupArg) = "GS_BARRIERV",
    GsBarrierVAck(Int) = "GS_BARRIERV reply",

    /// PvmTaskExit or PvmHostDelete notification from a pvmd: the tid that exited / the host
    /// that went away.
    NotifyTid(TidArg) = "notify",
    /// PvmHostAdd notification: `int n; int hostpart[n]`. The pvmd sends host parts
    /// (`0x80000`), not pvmd tids (ddpro.c: gotnewhosts()).
    NotifyHostAdd(TidList) = "notify PvmHostAdd",
    /// A task-output record sent to the task's output collector.
    TaskOutput(OutputRecord) = "task output",
}

impl Body {
    /// The body bytes, with zeros in every pad position.
    pub fn emit(&self) -> Vec<u8> {
        let mut w = Wr::default();
        self.enc(&mut w);
        w.buf
    }

    /// The byte ranges of [`emit`](Self::emit)'s output that are XDR padding.
    pub fn padding(&self) -> Vec<Range<usize>> {
        let mut w = Wr::default();
        self.enc(&mut w);
        w.pads
    }
}

impl fmt::Display for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Body::Empty | Body::User { .. } | Body::Unknown { .. } => self.fmt_payload(f),
            _ => {
                write!(f, "{} ", self.label())?;
                self.fmt_payload(f)
            }
        }
    }
}

/// A copy of `body` with the XDR pad bytes zeroed (see the module docs for which). Bodies that
/// do not decode are returned unchanged.
pub fn mask_padding(header: &MsgHeader, src: Tid, dst: Tid, body: &[u8]) -> Vec<u8> {
    let mut out = body.to_vec();
    if let Ok(b) = decode(header, src, dst, body) {
        let mut w = Wr::default();
        b.enc(&mut w);
        if w.buf.len() == out.len() {
            for r in w.pads {
                out[r].fill(0);
            }
        }
    }
    out
}

/// Reads the whole body as `T`.
fn whole<T: Codec>(body: &[u8]) -> Result<T> {
    let mut r = Rd::new(body);
    let v = T::dec(&mut r)?;
    r.finish("body")?;
    Ok(v)
}

fn empty(body: &[u8]) -> Result<Body> {
    Rd::new(body).finish("body").map(|_| Body::Empty)
}

/// Decodes one message body. Total: any input yields a value or an error, never a panic, and
/// nothing is allocated beyond a small multiple of the input size.
pub fn decode(header: &MsgHeader, src: Tid, dst: Tid, body: &[u8]) -> std::result::Result<Body, ParseError> {
    let dir = direction(src, dst);
    let tag = Tag::classify(header.tag, header.ctx);
    let xdr = header.enc == ENC_XDR;
    let unknown = || {
        Ok(Body::Unknown {
            tag: header.tag,
            bytes: body.to_vec(),
        })
    };
    let user = || Ok(Body::User { bytes: body.to_vec() });
    match tag {
        Tag::Tm(_) | Tag::Dm(_) | Tag::Tc(_) | Tag::Sm(_) | Tag::Gs(_) if !xdr => unknown(),
        Tag::Tm(t) => decode_tm(t, src.is_pvmd(), body),
        Tag::Dm(d) => decode_dm(d, body),
        Tag::Tc(t) => decode_tc(t, body).unwrap_or_else(unknown),
        Tag::Sm(s) => decode_sm(s, body),
        Tag::Gs(g) => decode_gs(g, body),
        Tag::UnknownSystem(_) => unknown(),
        Tag::User(_) if xdr && dir == Direction::FromDaemon => {
            Ok(daemon_event(body).unwrap_or(Body::User { bytes: body.to_vec() }))
        }
        Tag::User(_) => user(),
    }
}

fn decode_tm(t: Tm, reply: bool, b: &[u8]) -> Result<Body> {
    use Body as B;
    Ok(match (t, reply) {
        (Tm::Connect, false) => B::TmConnect(whole(b)?),
        (Tm::Connect, true) => B::TmConnectAck(whole(b)?),
        (Tm::Conn2, false) => B::TmConn2(whole(b)?),
        (Tm::Conn2, true) => B::TmConn2Ack(whole(b)?),
        (Tm::Exit, _) | (Tm::Halt, _) | (Tm::Config, false) | (Tm::SendSig, true) => empty(b)?,
        (Tm::Sched, false) | (Tm::SetOpt, true) | (Tm::GetOpt, false) | (Tm::ShmConn, true) => empty(b)?,
        (Tm::AddHost, false) => B::TmAddHost(whole(b)?),
        (Tm::AddHost, true) => B::TmAddHostAck(whole(b)?),
        (Tm::DelHost, false) => B::TmDelHost(whole(b)?),
        (Tm::DelHost, true) => B::TmDelHostAck(whole(b)?),
        (Tm::Config, true) => B::TmConfigAck(whole(b)?),
        (Tm::Mstat, false) => B::TmMstat(whole(b)?),
        (Tm::Mstat, true) => B::TmMstatAck(whole(b)?),
        (Tm::Tickle, false) => B::TmTickle(whole(b)?),
        (Tm::Tickle, true) => B::TmTickleAck(whole(b)?),
        (Tm::Spawn, false) => B::TmSpawn(whole(b)?),
        (Tm::Spawn, true) => B::TmSpawnAck(whole(b)?),
        (Tm::Pstat, false) => B::TmPstat(whole(b)?),
        (Tm::Pstat, true) => B::TmPstatAck(whole(b)?),
        (Tm::SendSig, false) => B::TmSendSig(whole(b)?),
        (Tm::Task, false) => B::TmTask(whole(b)?),
        (Tm::Task, true) => B::TmTaskAck(whole(b)?),
        (Tm::Mca, _) => B::TmMca(whole(b)?),
        (Tm::Notify, _) => B::TmNotify(whole(b)?),
        (Tm::Db, false) => B::TmDb(whole(b)?),
        (Tm::Db, true) => B::TmDbAck(whole(b)?),
        (Tm::Sched, true) => B::TmSchedAck(whole(b)?),
        (Tm::Tasker, false) => B::TmTasker(whole(b)?),
        (Tm::Tasker, true) => B::TmTaskerAck(whole(b)?),
        (Tm::Hoster, false) => B::TmHoster(whole(b)?),
        (Tm::Hoster, true) => B::TmHosterAck(whole(b)?),
        (Tm::Tracer, false) => B::TmTracer(whole(b)?),
        (Tm::Tracer, true) => B::TmTracerAck(whole(b)?),
        (Tm::HostSync, false) => B::TmHostSync(whole(b)?),
        (Tm::HostSync, true) => B::TmHostSyncAck(whole(b)?),
        (Tm::SetOpt, false) => B::TmSetOpt(whole(b)?),
        (Tm::GetOpt, true) => B::TmGetOptAck(whole(b)?),
        (Tm::Context, false) => B::TmContext(whole(b)?),
        (Tm::Context, true) => B::TmContextAck(whole(b)?),
        (Tm::ShmConn, false) => B::TmShmConn(whole(b)?),
    })
}

fn decode_dm(d: Dm, b: &[u8]) -> Result<Body> {
    use Body as B;
    Ok(match d {
        Dm::Add => B::DmAdd(whole(b)?),
        Dm::AddAck => B::DmAddAck(whole(b)?),
        Dm::Exec => B::DmExec(whole(b)?),
        Dm::ExecAck => B::DmExecAck(whole(b)?),
        Dm::SendSig => B::DmSendSig(whole(b)?),
        Dm::HtUpd => B::DmHtUpd(whole(b)?),
        Dm::HtUpdAck | Dm::HtCommit | Dm::Null | Dm::Halt | Dm::HostSync => empty(b)?,
        Dm::SlConf => B::DmSlConf(whole(b)?),
        Dm::StartAck => B::DmStartAck(whole(b)?),
        Dm::Task => B::DmTask(whole(b)?),
        Dm::TaskAck => B::DmTaskAck(whole(b)?),
        Dm::DelHost => B::DmDelHost(whole(b)?),
        Dm::DelHostAck => B::DmDelHostAck(whole(b)?),
        Dm::TaskOut => B::DmTaskOut(whole(b)?),
        Dm::Pstat => B::DmPstat(whole(b)?),
        Dm::PstatAck => B::DmPstatAck(whole(b)?),
        Dm::Mca => B::DmMca(whole(b)?),
        Dm::Notify => B::DmNotify(whole(b)?),
        Dm::NotifyAck => B::DmNotifyAck(whole(b)?),
        Dm::Db => B::DmDb(whole(b)?),
        Dm::DbAck => B::DmDbAck(whole(b)?),
        Dm::Reset => B::DmReset(whole(b)?),
        Dm::ResetAck => B::DmResetAck(whole(b)?),
        Dm::HtDel => B::DmHtDel(whole(b)?),
        Dm::HostSyncAck => B::DmHostSyncAck(whole(b)?),
    })
}

/// `None` for TC_SHMAT, which only shared-memory builds send.
fn decode_tc(t: Tc, b: &[u8]) -> Option<Result<Body>> {
    use Body as B;
    Some(match t {
        Tc::ConReq => whole(b).map(B::TcConReq),
        Tc::ConAck => whole(b).map(B::TcConAck),
        Tc::TaskExit => whole(b).map(B::TcTaskExit),
        Tc::Noop => empty(b),
        Tc::SetTrace => whole(b).map(B::TcSetTrace),
        Tc::SetTmask => whole(b).map(B::TcSetTmask),
        Tc::SetTrcBuf => whole(b).map(B::TcSetTrcBuf),
        Tc::SetTrcOpt => whole(b).map(B::TcSetTrcOpt),
        Tc::Siblings => whole(b).map(B::TcSiblings),
        Tc::Output => whole(b).map(B::TcOutput),
        Tc::OutputX => whole(b).map(B::TcOutputX),
        Tc::ShmAt => return None,
    })
}

/// The request shape if it fits the whole body, else the reply shape.
fn either<Q: Codec, P: Codec>(b: &[u8], req: fn(Q) -> Body, rep: fn(P) -> Body) -> Result<Body> {
    match whole::<Q>(b) {
        Ok(q) => Ok(req(q)),
        Err(qe) => match whole::<P>(b) {
            Ok(p) => Ok(rep(p)),
            Err(pe) if pe.offset >= qe.offset => Err(pe),
            Err(_) => Err(qe),
        },
    }
}

fn decode_sm(s: Sm, b: &[u8]) -> Result<Body> {
    use Body as B;
    Ok(match s {
        Sm::Spawn => either(b, B::SmSpawn, B::SmSpawnAck)?,
        Sm::Exec => B::SmExec(whole(b)?),
        Sm::ExecAck => B::SmExecAck(whole(b)?),
        Sm::Task => either(b, B::SmTask, B::SmTaskAck)?,
        Sm::Config if b.is_empty() => B::Empty,
        Sm::Config => B::SmConfigAck(whole(b)?),
        Sm::AddHost => either(b, B::SmAddHost, B::SmAddHostAck)?,
        Sm::DelHost => either(b, B::SmDelHost, B::SmDelHostAck)?,
        Sm::Add => B::SmAdd(whole(b)?),
        Sm::AddAck => B::SmAddAck(whole(b)?),
        Sm::Notify => B::SmNotify(whole(b)?),
        Sm::TaskX => B::SmTaskX(whole(b)?),
        Sm::HostX => B::SmHostX(whole(b)?),
        Sm::Handoff => B::SmHandoff(whole(b)?),
        Sm::Sched if b.is_empty() => B::Empty,
        Sm::Sched => B::SmSchedAck(whole(b)?),
        Sm::StHost => B::SmStHost(whole(b)?),
        Sm::StHostAck => B::SmStHostAck(whole(b)?),
        Sm::StTask => B::SmStTask(whole(b)?),
    })
}

fn decode_gs(g: Gs, b: &[u8]) -> Result<Body> {
    use Body as B;
    Ok(match g {
        Gs::Die | Gs::Reset | Gs::Dump => empty(b)?,
        Gs::Gsls if b.is_empty() => B::Empty,
        Gs::Gsls => B::GsGslsAck(whole(b)?),
        Gs::DeadTid => B::GsDeadTid(whole(b)?),
        Gs::Join => either(b, B::GsJoin, B::GsJoinAck)?,
        Gs::Leave => either(b, B::GsLeave, B::GsLeaveAck)?,
        Gs::Barrier => either(b, B::GsBarrier, B::GsBarrierAck)?,
        Gs::BarrierV => either(b, B::GsBarrierV, B::GsBarrierVAck)?,
        Gs::Bcast => either(b, B::GsBcast, B::GsBcastAck)?,
        Gs::TidList => either(b, B::GsTidList, B::GsTidListAck)?,
        Gs::GetInst => either(b, B::GsGetInst, B::GsGetInstAck)?,
        Gs::GetTid => either(b, B::GsGetTid, B::GsGetTidAck)?,
        Gs::Gsize => either(b, B::GsGsize, B::GsGsizeAck)?,
        Gs::StaticGroup => either(b, B::GsStaticGroup, B::GsStaticGroupAck)?,
        Gs::HostChar => either(b, B::GsHostChar, B::GsHostCharAck)?,
        Gs::HostCharV => either(b, B::GsHostCharV, B::GsHostCharVAck)?,
    })
}

/// Recognises notifications and output records among a pvmd's user-tagged messages.
fn daemon_event(b: &[u8]) -> Option<Body> {
    if b.len() == 4 {
        return whole(b).ok().map(Body::NotifyTid);
    }
    if let Ok(o) = whole::<OutputRecord>(b) {
        if o.tid.is_task() && o.tid.host() != 0 {
            return Some(Body::TaskOutput(o));
        }
    }
    if let Ok(l) = whole::<TidList>(b) {
        let host_ref = |t: &Tid| t.local() == 0 && t.host() != 0 && !t.is_multicast();
        if !l.tids.is_empty() && l.tids.iter().all(host_ref) {
            return Some(Body::NotifyHostAdd(l));
        }
    }
    None
}

/// DM_SLCONF: `{int field; string value}` to the end of the body (often empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlConf {
    pub entries: Vec<(i32, XStr)>,
}

impl Codec for SlConf {
    fn dec(r: &mut Rd) -> Result<Self> {
        OptList::dec(r).map(|o| SlConf { entries: o.entries })
    }
    fn enc(&self, w: &mut Wr) {
        OptList {
            entries: self.entries.clone(),
        }
        .enc(w)
    }
}

impl fmt::Display for SlConf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = OptList {
            entries: self.entries.clone(),
        };
        write!(f, "{}", OptListDisplay(&o, true))
    }
}

impl fmt::Display for OptList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", OptListDisplay(self, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codes::{SYSCTX_TM, TDPROTOCOL};

    #[test]
    fn directions_from_tids() {
        let t = Tid(0x40001);
        assert_eq!(direction(t, Tid::LOCAL_PVMD), Direction::ToDaemon);
        assert_eq!(direction(Tid::UNCONNECTED, Tid::LOCAL_PVMD), Direction::ToDaemon);
        assert_eq!(direction(Tid::LOCAL_PVMD, Tid::NONE), Direction::FromDaemon);
        assert_eq!(direction(Tid::pvmd(1), Tid::pvmd(2)), Direction::DaemonToDaemon);
        assert_eq!(direction(t, Tid::multicast_of(t)), Direction::TaskToTask);
    }

    #[test]
    fn same_code_decodes_by_direction() {
        let h = MsgHeader {
            enc: ENC_XDR,
            tag: Tm::Connect.code(),
            ctx: SYSCTX_TM,
            wid: 1,
            crc: 0,
        };
        let req = Body::TmConnect(ConnectReq {
            version: TDPROTOCOL,
            path: "/tmp/a".into(),
        });
        let b = req.emit();
        assert_eq!(decode(&h, Tid::UNCONNECTED, Tid::LOCAL_PVMD, &b).unwrap(), req);
        // The same bytes from the pvmd are a (short) reply: an error naming the field.
        let e = decode(&h, Tid::LOCAL_PVMD, Tid::NONE, &b).unwrap_err();
        assert_eq!(e.field, "path");
        // Unknown system codes and non-XDR bodies never fail.
        let u = MsgHeader {
            tag: 0x8001_0100u32 as i32,
            ..h
        };
        assert!(matches!(
            decode(&u, Tid(1), Tid::LOCAL_PVMD, &[1, 2, 3]),
            Ok(Body::Unknown { .. })
        ));
        let raw = MsgHeader {
            enc: crate::codes::DSIG_X86_64,
            tag: 7,
            ..h
        };
        assert_eq!(
            decode(&raw, Tid(1), Tid(2), &[9]).unwrap(),
            Body::User { bytes: vec![9] }
        );
    }

    #[test]
    fn padding_is_reported_and_masked() {
        let b = Body::TmMstat(Name { name: "vm".into() });
        assert_eq!(b.padding(), vec![7..8]);
        let h = MsgHeader {
            enc: ENC_XDR,
            tag: Tm::Mstat.code(),
            ctx: SYSCTX_TM,
            wid: 0,
            crc: 0,
        };
        let garbage = [0, 0, 0, 3, b'v', b'm', 0, 0x0b];
        assert_eq!(mask_padding(&h, Tid(0x40001), Tid::LOCAL_PVMD, &garbage), b.emit());
        assert_eq!(b.to_string(), "TM_MSTAT \"vm\"");
    }
}
