//! The C interface of libpvm3 as cbindgen reads it: the source of `include/pvm3.h`.
//!
//! Not compiled into the library (the definitions live in `api.rs`, `internals.rs` and
//! `csrc/shim.c`); `tests/header.rs` runs cbindgen on this file and requires the result to be
//! the checked-in header, and interop-tests compares that header with the legacy one
//! (constants, structures, prototypes). Names and types follow legacy `pvm3.h` 3.4.6.
#![allow(non_upper_case_globals, non_camel_case_types, dead_code)]

// The version string and the reserved mailbox class names are string macros, which cbindgen
// does not emit: tests/header.rs adds them verbatim.
use libc::{c_char, c_double, c_float, c_int, c_long, c_short, c_uint, c_ulong, c_ushort, c_void, timeval, FILE};

pub const PVM_MAJOR_VERSION: c_int = 3;
pub const PVM_MINOR_VERSION: c_int = 4;
pub const PVM_PATCH_VERSION: c_int = 6;
pub const PvmDataDefault: c_int = 0;
pub const PvmDataRaw: c_int = 1;
pub const PvmDataInPlace: c_int = 2;
pub const PvmDataFoo: c_int = PvmDataDefault;
pub const PvmDataTrace: c_int = 4;
pub const PvmTaskDefault: c_int = 0;
pub const PvmTaskHost: c_int = 1;
pub const PvmTaskArch: c_int = 2;
pub const PvmTaskDebug: c_int = 4;
pub const PvmTaskTrace: c_int = 8;
pub const PvmMppFront: c_int = 16;
pub const PvmHostCompl: c_int = 32;
pub const PvmNoSpawnParent: c_int = 64;
pub const PvmTaskExit: c_int = 1;
pub const PvmHostDelete: c_int = 2;
pub const PvmHostAdd: c_int = 3;
pub const PvmRouteAdd: c_int = 4;
pub const PvmRouteDelete: c_int = 5;
pub const PvmNotifyCancel: c_int = 256;
pub const PvmRoute: c_int = 1;
pub const PvmDontRoute: c_int = 1;
pub const PvmAllowDirect: c_int = 2;
pub const PvmRouteDirect: c_int = 3;
pub const PvmDebugMask: c_int = 2;
pub const PvmAutoErr: c_int = 3;
pub const PvmOutputTid: c_int = 4;
pub const PvmOutputCode: c_int = 5;
pub const PvmTraceTid: c_int = 6;
pub const PvmTraceCode: c_int = 7;
pub const PvmTraceBuffer: c_int = 8;
pub const PvmTraceOptions: c_int = 9;
pub const PvmTraceFull: c_int = 1;
pub const PvmTraceTime: c_int = 2;
pub const PvmTraceCount: c_int = 3;
pub const PvmFragSize: c_int = 10;
pub const PvmResvTids: c_int = 11;
pub const PvmSelfOutputTid: c_int = 12;
pub const PvmSelfOutputCode: c_int = 13;
pub const PvmSelfTraceTid: c_int = 14;
pub const PvmSelfTraceCode: c_int = 15;
pub const PvmSelfTraceBuffer: c_int = 16;
pub const PvmSelfTraceOptions: c_int = 17;
pub const PvmShowTids: c_int = 18;
pub const PvmPollType: c_int = 19;
pub const PvmPollConstant: c_int = 1;
pub const PvmPollSleep: c_int = 2;
pub const PvmPollTime: c_int = 20;
pub const PvmOutputContext: c_int = 21;
pub const PvmTraceContext: c_int = 22;
pub const PvmSelfOutputContext: c_int = 23;
pub const PvmSelfTraceContext: c_int = 24;
pub const PvmNoReset: c_int = 25;
pub const PvmTaskSelf: c_int = 0;
pub const PvmTaskChild: c_int = 1;
pub const PvmBaseContext: c_int = 0;
pub const PvmMboxDefault: c_int = 0;
pub const PvmMboxPersistent: c_int = 1;
pub const PvmMboxMultiInstance: c_int = 2;
pub const PvmMboxOverWritable: c_int = 4;
pub const PvmMboxFirstAvail: c_int = 8;
pub const PvmMboxReadAndDelete: c_int = 16;
pub const PvmMboxWaitForInfo: c_int = 32;
pub const PvmMboxMaxFlag: c_int = 512;
pub const PvmMboxDirectIndexShift: c_int = 10;
pub const PvmOk: c_int = 0;
pub const PvmBadParam: c_int = -2;
pub const PvmMismatch: c_int = -3;
pub const PvmOverflow: c_int = -4;
pub const PvmNoData: c_int = -5;
pub const PvmNoHost: c_int = -6;
pub const PvmNoFile: c_int = -7;
pub const PvmDenied: c_int = -8;
pub const PvmNoMem: c_int = -10;
pub const PvmBadMsg: c_int = -12;
pub const PvmSysErr: c_int = -14;
pub const PvmNoBuf: c_int = -15;
pub const PvmNoSuchBuf: c_int = -16;
pub const PvmNullGroup: c_int = -17;
pub const PvmDupGroup: c_int = -18;
pub const PvmNoGroup: c_int = -19;
pub const PvmNotInGroup: c_int = -20;
pub const PvmNoInst: c_int = -21;
pub const PvmHostFail: c_int = -22;
pub const PvmNoParent: c_int = -23;
pub const PvmNotImpl: c_int = -24;
pub const PvmDSysErr: c_int = -25;
pub const PvmBadVersion: c_int = -26;
pub const PvmOutOfRes: c_int = -27;
pub const PvmDupHost: c_int = -28;
pub const PvmCantStart: c_int = -29;
pub const PvmAlready: c_int = -30;
pub const PvmNoTask: c_int = -31;
pub const PvmNotFound: c_int = -32;
pub const PvmExists: c_int = -33;
pub const PvmHostrNMstr: c_int = -34;
pub const PvmParentNotSet: c_int = -35;
pub const PvmIPLoopback: c_int = -36;
pub const PvmNoEntry: c_int = PvmNotFound;
pub const PvmDupEntry: c_int = PvmDenied;
pub const PVM_STR: c_int = 0;
pub const PVM_BYTE: c_int = 1;
pub const PVM_SHORT: c_int = 2;
pub const PVM_INT: c_int = 3;
pub const PVM_FLOAT: c_int = 4;
pub const PVM_CPLX: c_int = 5;
pub const PVM_DOUBLE: c_int = 6;
pub const PVM_DCPLX: c_int = 7;
pub const PVM_LONG: c_int = 8;
pub const PVM_USHORT: c_int = 9;
pub const PVM_UINT: c_int = 10;
pub const PVM_ULONG: c_int = 11;

/// Returned by pvm_config().
#[repr(C)]
pub struct pvmhostinfo {
    /// pvmd tid
    pub hi_tid: c_int,
    /// host name
    pub hi_name: *mut c_char,
    /// host arch
    pub hi_arch: *mut c_char,
    /// cpu relative speed
    pub hi_speed: c_int,
    /// data signature
    pub hi_dsig: c_int,
}

/// Returned by pvm_tasks().
#[repr(C)]
pub struct pvmtaskinfo {
    pub ti_tid: c_int,
    pub ti_ptid: c_int,
    pub ti_host: c_int,
    pub ti_flag: c_int,
    pub ti_a_out: *mut c_char,
    pub ti_pid: c_int,
}

/// For pvm_getminfo(), pvm_setminfo().
#[repr(C)]
pub struct pvmminfo {
    pub len: c_int,
    pub ctx: c_int,
    pub tag: c_int,
    pub wid: c_int,
    pub enc: c_int,
    pub crc: c_int,
    pub src: c_int,
    pub dst: c_int,
}

/// Returned by pvm_getmboxinfo().
#[repr(C)]
pub struct pvmmboxinfo {
    pub mi_name: *mut c_char,
    pub mi_nentries: c_int,
    pub mi_indices: *mut c_int,
    pub mi_owners: *mut c_int,
    pub mi_flags: *mut c_int,
}

pub type pvm_matcher = Option<unsafe extern "C" fn(c_int, c_int, c_int) -> c_int>;
pub type pvm_reduce_fn = Option<unsafe extern "C" fn(*mut c_int, *mut c_void, *mut c_void, *mut c_int, *mut c_int)>;

// Legacy declares pvm_catchout only where <stdio.h> was included first.
#[cfg(feature = "stdio")]
extern "C" {
    pub fn pvm_catchout(ff: *mut FILE) -> c_int;
}

extern "C" {
    pub fn pvmgetrsh() -> *mut c_char;
    pub fn pvmgettmp() -> *mut c_char;
    pub fn pvm_strerror() -> *mut c_char;
    pub fn pvm_addhosts(names: *mut *mut c_char, count: c_int, infos: *mut c_int) -> c_int;
    pub fn pvm_addmhf(src: c_int, tag: c_int, ctx: c_int, f: Option<unsafe extern "C" fn(c_int) -> c_int>) -> c_int;
    pub fn pvm_archcode(arch: *mut c_char) -> c_int;
    pub fn pvm_barrier(group: *mut c_char, count: c_int) -> c_int;
    pub fn pvm_bcast(group: *mut c_char, tag: c_int) -> c_int;
    pub fn pvm_bufinfo(bufid: c_int, bytes: *mut c_int, tag: *mut c_int, tid: *mut c_int) -> c_int;
    pub fn pvm_config(nhost: *mut c_int, narch: *mut c_int, hostp: *mut *mut pvmhostinfo) -> c_int;
    pub fn pvm_delhosts(names: *mut *mut c_char, count: c_int, infos: *mut c_int) -> c_int;
    pub fn pvm_delinfo(name: *mut c_char, index: c_int, flags: c_int) -> c_int;
    pub fn pvm_delmhf(mhid: c_int) -> c_int;
    pub fn pvm_exit() -> c_int;
    pub fn pvm_export(name: *mut c_char) -> c_int;
    pub fn pvm_freebuf(bufid: c_int) -> c_int;
    pub fn pvm_freecontext(ctx: c_int) -> c_int;
    pub fn pvm_freezegroup(group: *mut c_char, size: c_int) -> c_int;
    pub fn pvm_gather(result: *mut c_void, data: *mut c_void, count: c_int, datatype: c_int, msgtag: c_int, group: *mut c_char, rootginst: c_int) -> c_int;
    pub fn pvm_getcontext() -> c_int;
    pub fn pvm_getfds(fds: *mut *mut c_int) -> c_int;
    pub fn pvm_getinst(group: *mut c_char, tid: c_int) -> c_int;
    pub fn pvm_getminfo(bufid: c_int, info: *mut pvmminfo) -> c_int;
    pub fn pvm_getnoresets(tids: *mut *mut c_int, ntids: *mut c_int) -> c_int;
    pub fn pvm_getopt(what: c_int) -> c_int;
    pub fn pvm_getrbuf() -> c_int;
    pub fn pvm_getsbuf() -> c_int;
    pub fn pvm_gettid(group: *mut c_char, inum: c_int) -> c_int;
    pub fn pvm_gsize(group: *mut c_char) -> c_int;
    pub fn pvm_halt() -> c_int;
    pub fn pvm_hostsync(host: c_int, clk: *mut timeval, delta: *mut timeval) -> c_int;
    pub fn pvm_initsend(encoding: c_int) -> c_int;
    pub fn pvm_joingroup(group: *mut c_char) -> c_int;
    pub fn pvm_kill(tid: c_int) -> c_int;
    pub fn pvm_lvgroup(group: *mut c_char) -> c_int;
    pub fn pvm_getmboxinfo(pattern: *mut c_char, nclasses: *mut c_int, classes: *mut *mut pvmmboxinfo) -> c_int;
    pub fn pvm_mcast(tids: *mut c_int, ntask: c_int, msgtag: c_int) -> c_int;
    pub fn pvm_mkbuf(encoding: c_int) -> c_int;
    pub fn pvm_mstat(host: *mut c_char) -> c_int;
    pub fn pvm_mytid() -> c_int;
    pub fn pvm_newcontext() -> c_int;
    pub fn pvm_notify(what: c_int, msgtag: c_int, cnt: c_int, tids: *mut c_int) -> c_int;
    pub fn pvm_nrecv(tid: c_int, msgtag: c_int) -> c_int;
    pub fn pvm_packf(fmt: *const c_char, ...) -> c_int;
    pub fn pvm_parent() -> c_int;
    pub fn pvm_perror(msg: *mut c_char) -> c_int;
    pub fn pvm_pkbyte(xp: *mut c_char, nitem: c_int, stride: c_int) -> c_int;
    pub fn pvm_pkcplx(xp: *mut c_float, nitem: c_int, stride: c_int) -> c_int;
    pub fn pvm_pkdcplx(xp: *mut c_double, nitem: c_int, stride: c_int) -> c_int;
    pub fn pvm_pkdouble(xp: *mut c_double, nitem: c_int, stride: c_int) -> c_int;
    pub fn pvm_pkfloat(xp: *mut c_float, nitem: c_int, stride: c_int) -> c_int;
    pub fn pvm_pkint(xp: *mut c_int, nitem: c_int, stride: c_int) -> c_int;
    pub fn pvm_pklong(xp: *mut c_long, nitem: c_int, stride: c_int) -> c_int;
    pub fn pvm_pkshort(xp: *mut c_short, nitem: c_int, stride: c_int) -> c_int;
    pub fn pvm_pkstr(xp: *mut c_char) -> c_int;
    pub fn pvm_pkuint(xp: *mut c_uint, nitem: c_int, stride: c_int) -> c_int;
    pub fn pvm_pkulong(xp: *mut c_ulong, nitem: c_int, stride: c_int) -> c_int;
    pub fn pvm_pkushort(xp: *mut c_ushort, nitem: c_int, stride: c_int) -> c_int;
    pub fn pvm_pkmesg(bufid: c_int) -> c_int;
    pub fn pvm_pkmesgbody(bufid: c_int) -> c_int;
    pub fn pvm_precv(tid: c_int, msgtag: c_int, buf: *mut c_void, len: c_int, datatype: c_int, atid: *mut c_int, atag: *mut c_int, alen: *mut c_int) -> c_int;
    pub fn pvm_probe(tid: c_int, msgtag: c_int) -> c_int;
    pub fn pvm_psend(tid: c_int, msgtag: c_int, buf: *mut c_void, len: c_int, datatype: c_int) -> c_int;
    pub fn pvm_pstat(tid: c_int) -> c_int;
    pub fn pvm_putinfo(name: *mut c_char, bufid: c_int, flags: c_int) -> c_int;
    pub fn pvm_recv(tid: c_int, msgtag: c_int) -> c_int;
    /// Legacy declares the return type as a function taking a matcher (a slip in its header);
    /// the value is the previous matcher. The declaration is kept identical so programs that
    /// redeclare it still compile.
    pub fn pvm_recvf(new_match: pvm_matcher) -> Option<unsafe extern "C" fn(pvm_matcher) -> c_int>;
    pub fn pvm_recvinfo(name: *mut c_char, index: c_int, flags: c_int) -> c_int;
    pub fn pvm_reduce(func: pvm_reduce_fn, data: *mut c_void, count: c_int, datatype: c_int, msgtag: c_int, group: *mut c_char, root: c_int) -> c_int;
    pub fn PvmMax(datatype: *mut c_int, x: *mut c_void, y: *mut c_void, num: *mut c_int, info: *mut c_int);
    pub fn PvmMin(datatype: *mut c_int, x: *mut c_void, y: *mut c_void, num: *mut c_int, info: *mut c_int);
    pub fn PvmSum(datatype: *mut c_int, x: *mut c_void, y: *mut c_void, num: *mut c_int, info: *mut c_int);
    pub fn PvmProduct(datatype: *mut c_int, x: *mut c_void, y: *mut c_void, num: *mut c_int, info: *mut c_int);
    pub fn pvm_reg_hoster() -> c_int;
    pub fn pvm_reg_rm(hip: *mut *mut pvmhostinfo) -> c_int;
    pub fn pvm_reg_tasker() -> c_int;
    pub fn pvm_reg_tracer(tctx: c_int, ttag: c_int, octx: c_int, otag: c_int, tmask: *mut c_char, tbuf: c_int, topt: c_int) -> c_int;
    pub fn pvm_scatter(result: *mut c_void, data: *mut c_void, count: c_int, datatype: c_int, msgtag: c_int, group: *mut c_char, rootginst: c_int) -> c_int;
    pub fn pvm_send(tid: c_int, msgtag: c_int) -> c_int;
    pub fn pvm_sendsig(tid: c_int, signum: c_int) -> c_int;
    pub fn pvm_setcontext(ctx: c_int) -> c_int;
    pub fn pvm_setminfo(bufid: c_int, info: *mut pvmminfo) -> c_int;
    pub fn pvm_setopt(what: c_int, val: c_int) -> c_int;
    pub fn pvm_setrbuf(bufid: c_int) -> c_int;
    pub fn pvm_setsbuf(bufid: c_int) -> c_int;
    pub fn pvm_siblings(tids: *mut *mut c_int) -> c_int;
    pub fn pvm_spawn(task: *mut c_char, argv: *mut *mut c_char, flag: c_int, where_: *mut c_char, ntask: c_int, tids: *mut c_int) -> c_int;
    pub fn pvm_start_pvmd(argc: c_int, argv: *mut *mut c_char, block: c_int) -> c_int;
    pub fn pvm_tasks(where_: c_int, ntask: *mut c_int, taskp: *mut *mut pvmtaskinfo) -> c_int;
    pub fn pvm_tickle(narg: c_int, argp: *mut c_int, nres: *mut c_int, resp: *mut c_int) -> c_int;
    pub fn pvm_tidtohost(tid: c_int) -> c_int;
    pub fn pvm_trecv(tid: c_int, msgtag: c_int, tmout: *mut timeval) -> c_int;
    pub fn pvm_unexport(name: *mut c_char) -> c_int;
    pub fn pvm_unpackf(fmt: *const c_char, ...) -> c_int;
    pub fn pvm_upkbyte(xp: *mut c_char, nitem: c_int, stride: c_int) -> c_int;
    pub fn pvm_upkcplx(xp: *mut c_float, nitem: c_int, stride: c_int) -> c_int;
    pub fn pvm_upkdcplx(xp: *mut c_double, nitem: c_int, stride: c_int) -> c_int;
    pub fn pvm_upkdouble(xp: *mut c_double, nitem: c_int, stride: c_int) -> c_int;
    pub fn pvm_upkfloat(xp: *mut c_float, nitem: c_int, stride: c_int) -> c_int;
    pub fn pvm_upkint(xp: *mut c_int, nitem: c_int, stride: c_int) -> c_int;
    pub fn pvm_upklong(xp: *mut c_long, nitem: c_int, stride: c_int) -> c_int;
    pub fn pvm_upkshort(xp: *mut c_short, nitem: c_int, stride: c_int) -> c_int;
    pub fn pvm_upkstr(xp: *mut c_char) -> c_int;
    pub fn pvm_upkuint(xp: *mut c_uint, nitem: c_int, stride: c_int) -> c_int;
    pub fn pvm_upkulong(xp: *mut c_ulong, nitem: c_int, stride: c_int) -> c_int;
    pub fn pvm_upkushort(xp: *mut c_ushort, nitem: c_int, stride: c_int) -> c_int;
    pub fn pvm_upkmesg() -> c_int;
    pub fn pvm_version() -> *mut c_char;
    pub fn pvm_delete(name: *mut c_char, req: c_int) -> c_int;
    pub fn pvm_insert(name: *mut c_char, req: c_int, data: c_int) -> c_int;
    pub fn pvm_lookup(name: *mut c_char, req: c_int, datap: *mut c_int) -> c_int;
    /// pvm-rs only: moves task `tid` to the host named `host` (NULL: the machine chooses) and
    /// returns, once it runs there, the tid of its new host (as `hi_tid`). Fails at once with
    /// PvmNotImpl where migration is unavailable (legacy daemon or library, no CRIU);
    /// docs/migration.md.
    pub fn pvm_migrate(tid: c_int, host: *const c_char) -> c_int;
    /// pvm-rs only: checkpoints task `tid` (spawned on this host, on pvm-rs's library) with
    /// CRIU and lets it run on; `flags` must be 0. Returns the epoch; PvmNotImpl at once where
    /// impossible; docs/migration.md.
    pub fn pvm_checkpoint(tid: c_int, flags: c_int) -> c_int;
    /// pvm-rs only: restarts task `tid`, whose process is gone, from its last checkpoint on
    /// this host as the same tid (`epoch` -1 = the last); returns the epoch.
    pub fn pvm_restart(tid: c_int, epoch: c_int) -> c_int;
}
