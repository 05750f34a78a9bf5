//! Every numeric constant of the PVM 3.4 protocol, in one place, with its value visible.
//!
//! Message codes are grouped by family (TM_, DM_, TC_, SM_, group server). Each family is an
//! enum whose discriminant is the code on the wire; `from_code` and `name` convert both ways.

/// Defines an `i32`-valued enum with a lookup table from wire value to variant and name.
macro_rules! wire_enum {
    ($(#[$m:meta])* $vis:vis enum $name:ident { $($(#[$vm:meta])* $var:ident = $val:expr => $text:literal,)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(i32)]
        $vis enum $name { $($(#[$vm])* $var = ($val) as i32,)* }

        impl $name {
            /// Every variant, in numeric order of declaration.
            pub const ALL: &'static [$name] = &[$($name::$var,)*];

            /// The variant for a wire value, if the protocol defines one.
            pub fn from_code(code: i32) -> Option<$name> {
                match code {
                    $(c if c == ($val) as i32 => Some($name::$var),)*
                    _ => None,
                }
            }

            /// The value on the wire.
            pub const fn code(self) -> i32 {
                self as i32
            }

            /// The name the legacy sources use.
            pub const fn name(self) -> &'static str {
                match self { $($name::$var => $text,)* }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

// ---- protocol versions --------------------------------------------------------------------

/// pvmd <-> pvmd protocol version, carried in the slave's `ddpro<N>` start-up line.
pub const DDPROTOCOL: i32 = 2316;
/// task <-> pvmd and task <-> task protocol version, first int of TM_CONNECT and TC_CONREQ/CONACK.
pub const TDPROTOCOL: i32 = 1318;
/// Scheduler protocol version (defined by the legacy headers, never carried on the wire).
pub const SDPROTOCOL: i32 = 4302;

// ---- sizes --------------------------------------------------------------------------------

/// Bytes in a stream or datagram fragment header.
pub const FRAGHDR_LEN: usize = 16;
/// Bytes in a message header (only in the first fragment of a message).
pub const MSGHDR_LEN: usize = 32;
/// Headroom the legacy library reserves in every fragment buffer.
pub const MAXHDR: usize = FRAGHDR_LEN + MSGHDR_LEN;
/// Largest pvmd datagram (4096 - 16) and the default task fragment size.
pub const UDPMAXLEN: usize = 4080;

// ---- contexts -----------------------------------------------------------------------------

pub const BASE_CONTEXT: i32 = 0;
/// Task <-> task control messages.
pub const SYSCTX_TC: i32 = 0x7ffff;
/// Task <-> pvmd requests.
pub const SYSCTX_TM: i32 = 0x7fffe;
/// Static groups.
pub const SYSCTX_SG: i32 = 0x7fffd;
/// Dynamic groups (group server traffic).
pub const SYSCTX_DG: i32 = 0x7fffc;
/// Reserved system contexts RS4..RS9.
pub const SYSCTX_RESERVED: std::ops::RangeInclusive<i32> = 0x7fff6..=0x7fffb;

// ---- data encodings -----------------------------------------------------------------------

/// `enc` of an XDR message (PvmDataDefault).
pub const ENC_XDR: i32 = 0x1000_0000;
/// In-memory tag of an in-place message; never on the wire (the sender's dsig is sent instead).
pub const ENC_INPLACE: i32 = 0x2000_0000;
/// `enc` of a trace-event message (PvmDataTrace).
pub const ENC_TRACE: i32 = 0x4000_0000;
/// The data signature of x86-64 Linux (`dsig<4230209>`).
pub const DSIG_X86_64: i32 = 0x0040_8c41;

/// The `pvm_initsend`/`pvm_mkbuf` encoding argument.
pub const PVM_DATA_DEFAULT: i32 = 0;
pub const PVM_DATA_RAW: i32 = 1;
pub const PVM_DATA_IN_PLACE: i32 = 2;
pub const PVM_DATA_TRACE: i32 = 4;

// ---- message codes --------------------------------------------------------------------------

wire_enum! {
    /// Task -> its own pvmd (ctx SYSCTX_TM); replies carry the same code.
    pub enum Tm {
        Connect = 0x8001_0001u32 => "TM_CONNECT",
        Conn2 = 0x8001_0002u32 => "TM_CONN2",
        Exit = 0x8001_0003u32 => "TM_EXIT",
        AddHost = 0x8001_0004u32 => "TM_ADDHOST",
        DelHost = 0x8001_0005u32 => "TM_DELHOST",
        Config = 0x8001_0006u32 => "TM_CONFIG",
        Mstat = 0x8001_0007u32 => "TM_MSTAT",
        Halt = 0x8001_0008u32 => "TM_HALT",
        Tickle = 0x8001_0009u32 => "TM_TICKLE",
        Spawn = 0x8001_000au32 => "TM_SPAWN",
        Pstat = 0x8001_000bu32 => "TM_PSTAT",
        SendSig = 0x8001_000cu32 => "TM_SENDSIG",
        Task = 0x8001_000du32 => "TM_TASK",
        Mca = 0x8001_000eu32 => "TM_MCA",
        Notify = 0x8001_000fu32 => "TM_NOTIFY",
        Db = 0x8001_0010u32 => "TM_DB",
        Sched = 0x8001_0011u32 => "TM_SCHED",
        Tasker = 0x8001_0012u32 => "TM_TASKER",
        Hoster = 0x8001_0013u32 => "TM_HOSTER",
        Tracer = 0x8001_0014u32 => "TM_TRACER",
        HostSync = 0x8001_0015u32 => "TM_HOSTSYNC",
        SetOpt = 0x8001_0016u32 => "TM_SETOPT",
        GetOpt = 0x8001_0017u32 => "TM_GETOPT",
        Context = 0x8001_0018u32 => "TM_CONTEXT",
        ShmConn = 0x8001_0019u32 => "TM_SHMCONN",
    }
}

wire_enum! {
    /// pvmd <-> pvmd.
    pub enum Dm {
        Add = 0x8002_0001u32 => "DM_ADD",
        AddAck = 0x8002_0002u32 => "DM_ADDACK",
        Exec = 0x8002_0003u32 => "DM_EXEC",
        ExecAck = 0x8002_0004u32 => "DM_EXECACK",
        SendSig = 0x8002_0005u32 => "DM_SENDSIG",
        HtUpd = 0x8002_0006u32 => "DM_HTUPD",
        HtUpdAck = 0x8002_0007u32 => "DM_HTUPDACK",
        HtCommit = 0x8002_0008u32 => "DM_HTCOMMIT",
        SlConf = 0x8002_0009u32 => "DM_SLCONF",
        StartAck = 0x8002_000au32 => "DM_STARTACK",
        Task = 0x8002_000bu32 => "DM_TASK",
        TaskAck = 0x8002_000cu32 => "DM_TASKACK",
        DelHost = 0x8002_000du32 => "DM_DELHOST",
        DelHostAck = 0x8002_000eu32 => "DM_DELHOSTACK",
        Null = 0x8002_000fu32 => "DM_NULL",
        TaskOut = 0x8002_0010u32 => "DM_TASKOUT",
        Pstat = 0x8002_0011u32 => "DM_PSTAT",
        PstatAck = 0x8002_0012u32 => "DM_PSTATACK",
        Halt = 0x8002_0013u32 => "DM_HALT",
        Mca = 0x8002_0014u32 => "DM_MCA",
        Notify = 0x8002_0015u32 => "DM_NOTIFY",
        NotifyAck = 0x8002_0016u32 => "DM_NOTIFYACK",
        Db = 0x8002_0017u32 => "DM_DB",
        DbAck = 0x8002_0018u32 => "DM_DBACK",
        Reset = 0x8002_0019u32 => "DM_RESET",
        ResetAck = 0x8002_001au32 => "DM_RESETACK",
        HtDel = 0x8002_001bu32 => "DM_HTDEL",
        HostSync = 0x8002_001cu32 => "DM_HOSTSYNC",
        HostSyncAck = 0x8002_001du32 => "DM_HOSTSYNCACK",
    }
}

wire_enum! {
    /// Task <-> task control (ctx SYSCTX_TC), handled inside the library.
    pub enum Tc {
        ConReq = 0x8003_0001u32 => "TC_CONREQ",
        ConAck = 0x8003_0002u32 => "TC_CONACK",
        TaskExit = 0x8003_0003u32 => "TC_TASKEXIT",
        Noop = 0x8003_0004u32 => "TC_NOOP",
        Output = 0x8003_0005u32 => "TC_OUTPUT",
        SetTrace = 0x8003_0006u32 => "TC_SETTRACE",
        SetTmask = 0x8003_0007u32 => "TC_SETTMASK",
        SetTrcBuf = 0x8003_0008u32 => "TC_SETTRCBUF",
        SetTrcOpt = 0x8003_0009u32 => "TC_SETTRCOPT",
        ShmAt = 0x8003_000au32 => "TC_SHMAT",
        OutputX = 0x8003_000bu32 => "TC_OUTPUTX",
        Siblings = 0x8003_000cu32 => "TC_SIBLINGS",
    }
}

wire_enum! {
    /// Resource manager, hoster and tasker <-> pvmd.
    pub enum Sm {
        Spawn = 0x8004_0001u32 => "SM_SPAWN",
        Exec = 0x8004_0002u32 => "SM_EXEC",
        ExecAck = 0x8004_0003u32 => "SM_EXECACK",
        Task = 0x8004_0004u32 => "SM_TASK",
        Config = 0x8004_0005u32 => "SM_CONFIG",
        AddHost = 0x8004_0006u32 => "SM_ADDHOST",
        DelHost = 0x8004_0007u32 => "SM_DELHOST",
        Add = 0x8004_0008u32 => "SM_ADD",
        AddAck = 0x8004_0009u32 => "SM_ADDACK",
        Notify = 0x8004_000au32 => "SM_NOTIFY",
        TaskX = 0x8004_000bu32 => "SM_TASKX",
        HostX = 0x8004_000cu32 => "SM_HOSTX",
        Handoff = 0x8004_000du32 => "SM_HANDOFF",
        Sched = 0x8004_000eu32 => "SM_SCHED",
        StHost = 0x8004_000fu32 => "SM_STHOST",
        StHostAck = 0x8004_0010u32 => "SM_STHOSTACK",
        StTask = 0x8004_0011u32 => "SM_STTASK",
    }
}

wire_enum! {
    /// Group-server operations: plain tags in context SYSCTX_DG.
    pub enum Gs {
        Die = 0 => "GS_DIE",
        Join = 1 => "GS_JOIN",
        Leave = 2 => "GS_LEAVE",
        Barrier = 3 => "GS_BARRIER",
        Bcast = 4 => "GS_BCAST",
        GetInst = 5 => "GS_GETINST",
        GetTid = 6 => "GS_GETTID",
        Gsize = 7 => "GS_GSIZE",
        Reset = 8 => "GS_RESET",
        Dump = 9 => "GS_DUMP",
        Gsls = 10 => "GS_GSLS",
        DeadTid = 11 => "GS_DEADTID",
        TidList = 12 => "GS_TIDLIST",
        StaticGroup = 13 => "GS_STATICGROUP",
        HostChar = 14 => "GS_HOSTCHAR",
        HostCharV = 15 => "GS_HOSTCHARV",
        BarrierV = 16 => "GS_BARRIERV",
    }
}

/// A message tag classified by family. Group-server operations share their numbers with user
/// tags; only the context (SYSCTX_DG) tells them apart, so `classify` needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tag {
    Tm(Tm),
    Dm(Dm),
    Tc(Tc),
    Sm(Sm),
    Gs(Gs),
    /// In a system family's range of 0x10000 codes but not defined by 3.4.6 (an extension, or garbage).
    UnknownSystem(i32),
    User(i32),
}

impl Tag {
    pub fn classify(tag: i32, ctx: i32) -> Tag {
        if let Some(t) = Tm::from_code(tag) {
            return Tag::Tm(t);
        }
        if let Some(t) = Dm::from_code(tag) {
            return Tag::Dm(t);
        }
        if let Some(t) = Tc::from_code(tag) {
            return Tag::Tc(t);
        }
        if let Some(t) = Sm::from_code(tag) {
            return Tag::Sm(t);
        }
        if ctx == SYSCTX_DG {
            if let Some(g) = Gs::from_code(tag) {
                return Tag::Gs(g);
            }
        }
        let family = (tag as u32) & 0xffff_0000;
        if (0x8001_0000..=0x8004_0000).contains(&family) {
            Tag::UnknownSystem(tag)
        } else {
            Tag::User(tag)
        }
    }

    /// The name used in logs: the code's name, `0x8001abcd` for unknown system codes, else the number.
    pub fn name(self) -> String {
        match self {
            Tag::Tm(t) => t.name().to_string(),
            Tag::Dm(t) => t.name().to_string(),
            Tag::Tc(t) => t.name().to_string(),
            Tag::Sm(t) => t.name().to_string(),
            Tag::Gs(t) => t.name().to_string(),
            Tag::UnknownSystem(c) => format!("{:#010x}", c as u32),
            Tag::User(c) => c.to_string(),
        }
    }
}

// ---- error codes --------------------------------------------------------------------------

wire_enum! {
    /// PVM error codes, as returned by library calls and carried in replies.
    pub enum PvmError {
        Ok = 0 => "PvmOk",
        BadParam = -2 => "PvmBadParam",
        Mismatch = -3 => "PvmMismatch",
        Overflow = -4 => "PvmOverflow",
        NoData = -5 => "PvmNoData",
        NoHost = -6 => "PvmNoHost",
        NoFile = -7 => "PvmNoFile",
        Denied = -8 => "PvmDenied",
        NoMem = -10 => "PvmNoMem",
        BadMsg = -12 => "PvmBadMsg",
        SysErr = -14 => "PvmSysErr",
        NoBuf = -15 => "PvmNoBuf",
        NoSuchBuf = -16 => "PvmNoSuchBuf",
        NullGroup = -17 => "PvmNullGroup",
        DupGroup = -18 => "PvmDupGroup",
        NoGroup = -19 => "PvmNoGroup",
        NotInGroup = -20 => "PvmNotInGroup",
        NoInst = -21 => "PvmNoInst",
        HostFail = -22 => "PvmHostFail",
        NoParent = -23 => "PvmNoParent",
        NotImpl = -24 => "PvmNotImpl",
        DSysErr = -25 => "PvmDSysErr",
        BadVersion = -26 => "PvmBadVersion",
        OutOfRes = -27 => "PvmOutOfRes",
        DupHost = -28 => "PvmDupHost",
        CantStart = -29 => "PvmCantStart",
        Already = -30 => "PvmAlready",
        NoTask = -31 => "PvmNoTask",
        NotFound = -32 => "PvmNotFound",
        Exists = -33 => "PvmExists",
        HostrNMstr = -34 => "PvmHostrNMstr",
        ParentNotSet = -35 => "PvmParentNotSet",
        IpLoopback = -36 => "PvmIPLoopback",
    }
}

/// `pvm_errlist`, indexed by minus the error code, exactly as the legacy library prints it.
pub const ERRLIST: [&str; 37] = [
    "Error 0",
    "Error 1",
    "Bad parameter",
    "Parameter mismatch",
    "Value too large",
    "End of buffer",
    "No such host",
    "No such file",
    "Permission denied",
    "Error 9",
    "Malloc failed",
    "Error 11",
    "Can't decode message",
    "Error 13",
    "Can't contact local daemon",
    "No current buffer",
    "No such buffer",
    "Null group name",
    "Already in group",
    "No such group",
    "Not in group",
    "No such instance",
    "Host failed",
    "No parent task",
    "Not implemented",
    "Pvmd system error",
    "Version mismatch",
    "Out of resources",
    "Duplicate host",
    "Can't start pvmd",
    "Already in progress",
    "No such task",
    "Not Found",
    "Already Exists",
    "Hoster must run on master host",
    "Spawning parent set PvmNoParent",
    "Master Host IP Address is Loopback! (See pvm3/Readme)",
];

impl PvmError {
    /// The text `pvm_perror` prints for this code.
    pub fn text(self) -> &'static str {
        ERRLIST[(-self.code()) as usize]
    }
}

// ---- flags and small enumerations carried in bodies ---------------------------------------

wire_enum! {
    /// Kinds of `pvm_notify` event (the low byte of the `what` field).
    pub enum NotifyKind {
        TaskExit = 1 => "PvmTaskExit",
        HostDelete = 2 => "PvmHostDelete",
        HostAdd = 3 => "PvmHostAdd",
        RouteAdd = 4 => "PvmRouteAdd",
        RouteDelete = 5 => "PvmRouteDelete",
    }
}

/// OR-ed into a notify `what` to cancel a pending notify.
pub const PVM_NOTIFY_CANCEL: i32 = 256;

wire_enum! {
    /// Mailbox operations of TM_DB / DM_DB.
    pub enum DbOp {
        Put = 1 => "TMDB_PUT",
        Remove = 2 => "TMDB_REMOVE",
        Get = 3 => "TMDB_GET",
        Names = 4 => "TMDB_NAMES",
        Reset = 5 => "TMDB_RESET",
    }
}

bitflags::bitflags! {
    /// `pvm_spawn` flags.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct SpawnFlags: i32 {
        const HOST = 1;
        const ARCH = 2;
        const DEBUG = 4;
        const TRACE = 8;
        const MPP_FRONT = 16;
        const HOST_COMPL = 32;
        const NO_SPAWN_PARENT = 64;
        const _ = !0;
    }
}

bitflags::bitflags! {
    /// Mailbox entry flags (`PvmMbox*`); bits from 10 up carry a direct index.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct MboxFlags: i32 {
        const PERSISTENT = 1;
        const MULTI_INSTANCE = 2;
        const OVERWRITABLE = 4;
        const FIRST_AVAIL = 8;
        const READ_AND_DELETE = 16;
        const WAIT_FOR_INFO = 32;
        const _ = !0;
    }
}

/// Bits of mailbox flags above this shift hold a direct index.
pub const MBOX_DIRECT_INDEX_SHIFT: u32 = 10;

wire_enum! {
    /// Fields of TM_SETOPT.
    pub enum TaskOpt {
        OutTid = 1 => "TS_OUTTID",
        OutCtx = 2 => "TS_OUTCTX",
        OutTag = 3 => "TS_OUTTAG",
        TrcTid = 4 => "TS_TRCTID",
        TrcCtx = 5 => "TS_TRCCTX",
        TrcTag = 6 => "TS_TRCTAG",
    }
}

wire_enum! {
    /// Fields of DM_SLCONF.
    pub enum SlConfField {
        Ep = 1 => "DM_SLCONF_EP",
        Bp = 2 => "DM_SLCONF_BP",
        Wd = 3 => "DM_SLCONF_WD",
        Sched = 4 => "DM_SLCONF_SCHED",
        Trace = 5 => "DM_SLCONF_TRACE",
    }
}

/// Task output records: `len` 0 is end of file, -2 announces a new task.
pub const TO_EOF: i32 = 0;
pub const TO_NEW: i32 = -2;

/// Mailbox classes with a meaning to the system.
pub const MBOX_CLASS_TRACER: &str = "###_PVM_TRACER_###";
pub const MBOX_CLASS_HOSTER: &str = "###_PVM_HOSTER_###";
pub const MBOX_CLASS_TASKER: &str = "###_PVM_TASKER_###";
pub const MBOX_CLASS_RM: &str = "###_PVM_RM_###";
pub const MBOX_CLASS_NO_RESET: &str = "###_PVM_NO_RESET_###";
pub const MBOX_CLASS_PVMGS: &str = "pvmgs";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_contiguous_and_named() {
        assert_eq!(Tm::ALL.len(), 25);
        assert_eq!(Dm::ALL.len(), 29);
        assert_eq!(Tc::ALL.len(), 12);
        assert_eq!(Sm::ALL.len(), 17);
        assert_eq!(Gs::ALL.len(), 17);
        for (i, t) in Tm::ALL.iter().enumerate() {
            assert_eq!(t.code() as u32, 0x8001_0001 + i as u32);
            assert_eq!(Tm::from_code(t.code()), Some(*t));
        }
        for (i, t) in Dm::ALL.iter().enumerate() {
            assert_eq!(t.code() as u32, 0x8002_0001 + i as u32);
        }
        for (i, t) in Tc::ALL.iter().enumerate() {
            assert_eq!(t.code() as u32, 0x8003_0001 + i as u32);
        }
        for (i, t) in Sm::ALL.iter().enumerate() {
            assert_eq!(t.code() as u32, 0x8004_0001 + i as u32);
        }
        assert_eq!(Tm::Spawn.name(), "TM_SPAWN");
        assert_eq!(Dm::HtCommit.code() as u32, 0x8002_0008);
    }

    #[test]
    fn classify() {
        assert_eq!(Tag::classify(0x8001_000a_u32 as i32, SYSCTX_TM), Tag::Tm(Tm::Spawn));
        assert_eq!(Tag::classify(1, SYSCTX_DG), Tag::Gs(Gs::Join));
        assert_eq!(Tag::classify(1, 0), Tag::User(1));
        assert_eq!(
            Tag::classify(0x8002_0100_u32 as i32, 0),
            Tag::UnknownSystem(0x8002_0100_u32 as i32)
        );
        assert_eq!(Tag::classify(0x8002_0100_u32 as i32, 0).name(), "0x80020100");
    }

    #[test]
    fn error_texts() {
        assert_eq!(PvmError::NotFound.text(), "Not Found");
        assert_eq!(PvmError::SysErr.text(), "Can't contact local daemon");
        assert_eq!(PvmError::from_code(-36), Some(PvmError::IpLoopback));
        assert_eq!(PvmError::from_code(-9), None);
    }
}
