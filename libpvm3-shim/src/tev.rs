//! Trace events to a tracer (pvmtev.h), as the legacy library's `tev.c` sends them.
//!
//! A traced call (the mask of `PvmSelfTraceTid`'s task has its bit, and we are not the tracer)
//! packs one record at entry and one at exit. With `PvmTraceFull` the first record of each kind
//! and phase is a descriptor (`EVENT_DESC`, event id, name, then per datum its data id, type and
//! value); later ones are raw (`EVENT_RECORD`, event id, values only). `PvmTraceBuffer` > 0
//! collects records in one message (framed by `EVENT_BUFFER` markers) until it reaches that
//! many bytes; 0 sends each record at once. `PvmTraceTime` and `PvmTraceCount` only add up
//! times and counts, sent as one `timing`/`profiling` descriptor when the buffer is flushed
//! (pvm_exit, or a change of the trace buffer or options).
//!
//! Only the outermost library call is traced: the legacy `pvmtoplvl` flag (TEV_EXCLUSIVE) is
//! cleared for the duration of a traced call, so calls the library makes for itself are not.
//! Like the legacy check, deciding whether to trace enrols the task first (BEATASK).

use crate::core::{cget, cset, Lib};
use pvm_proto::encoding::{Encoding, Packer};
use std::os::raw::{c_char, c_int};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const ENTRY: i32 = 0x4000;
pub const EXIT: i32 = 0x8000;

const MARK_EVENT_BUFFER: i32 = -1;
const MARK_EVENT_BUFFER_END: i32 = -2;
const MARK_EVENT_DESC: i32 = -5;
const MARK_EVENT_DESC_END: i32 = -6;
const MARK_EVENT_RECORD: i32 = -7;
const MARK_EVENT_RECORD_END: i32 = -8;

const DATA_INT: i32 = 6;
const DATA_LONG: i32 = 8;
const DATA_STRING: i32 = 12;
const DATA_ARRAY: i32 = 0x80;

const TRACE_FULL: i32 = 1;
const TRACE_TIME: i32 = 2;
const TRACE_COUNT: i32 = 3;

/// Most handler records kept between two events.
const MAX_DEFERRED: usize = 4096;

/// Number of legacy event kinds (TEV_FIRST..=TEV_MAX): the size of the exported `pvmtevinfo`.
pub const NKINDS: usize = 109;
/// Number of event kinds this library knows, the pvm-rs extensions (120..=122) included.
/// Their ids lie beyond TEV_MAX, so no legacy table or legacy library uses them, yet inside
/// the 35-character trace mask (ids 0..=139), so `pvm_settmask` selects them; and below the
/// legacy tracer library's internal ids (401..=404, TRC_RESERVED_INTERNAL 400).
pub const NKINDS_ALL: usize = 123;

/// Event kinds (TEV_*), numbered as in pvmtev.h.
#[allow(dead_code)]
pub mod kind {
    pub const ADDHOSTS: usize = 0;
    pub const BUFINFO: usize = 3;
    pub const CONFIG: usize = 4;
    pub const DELETE: usize = 5;
    pub const DELHOSTS: usize = 6;
    pub const EXIT: usize = 7;
    pub const FREEBUF: usize = 8;
    pub const GETFDS: usize = 9;
    pub const GETOPT: usize = 11;
    pub const GETRBUF: usize = 12;
    pub const GETSBUF: usize = 13;
    pub const HALT: usize = 16;
    pub const INITSEND: usize = 17;
    pub const INSERT: usize = 18;
    pub const KILL: usize = 20;
    pub const LOOKUP: usize = 21;
    pub const MCAST: usize = 23;
    pub const MKBUF: usize = 24;
    pub const MSTAT: usize = 25;
    pub const MYTID: usize = 26;
    pub const NOTIFY: usize = 27;
    pub const NRECV: usize = 28;
    pub const PARENT: usize = 29;
    pub const PKBYTE: usize = 31;
    pub const PKCPLX: usize = 32;
    pub const PKDCPLX: usize = 33;
    pub const PKDOUBLE: usize = 34;
    pub const PKFLOAT: usize = 35;
    pub const PKINT: usize = 36;
    pub const PKUINT: usize = 37;
    pub const PKLONG: usize = 38;
    pub const PKULONG: usize = 39;
    pub const PKSHORT: usize = 40;
    pub const PKUSHORT: usize = 41;
    pub const PKSTR: usize = 42;
    pub const PROBE: usize = 43;
    pub const PSTAT: usize = 44;
    pub const RECV: usize = 45;
    pub const RECVF: usize = 46;
    pub const SEND: usize = 47;
    pub const SENDSIG: usize = 48;
    pub const SETOPT: usize = 49;
    pub const SETRBUF: usize = 50;
    pub const SETSBUF: usize = 51;
    pub const SPAWN: usize = 52;
    pub const START_PVMD: usize = 53;
    pub const TASKS: usize = 54;
    pub const TICKLE: usize = 55;
    pub const TRECV: usize = 57;
    pub const UPKBYTE: usize = 58;
    pub const UPKCPLX: usize = 59;
    pub const UPKDCPLX: usize = 60;
    pub const UPKDOUBLE: usize = 61;
    pub const UPKFLOAT: usize = 62;
    pub const UPKINT: usize = 63;
    pub const UPKUINT: usize = 64;
    pub const UPKLONG: usize = 65;
    pub const UPKULONG: usize = 66;
    pub const UPKSHORT: usize = 67;
    pub const UPKUSHORT: usize = 68;
    pub const UPKSTR: usize = 69;
    pub const REG_HOSTER: usize = 71;
    pub const REG_RM: usize = 72;
    pub const REG_TASKER: usize = 73;
    pub const REG_TRACER: usize = 74;
    pub const ARCHCODE: usize = 78;
    pub const PACKF: usize = 83;
    pub const PRECV: usize = 84;
    pub const PSEND: usize = 85;
    pub const UNPACKF: usize = 89;
    pub const PUTINFO: usize = 92;
    pub const GETINFO: usize = 93;
    pub const DELINFO: usize = 94;
    pub const GETMBOXINFO: usize = 95;
    pub const NEWCONTEXT: usize = 96;
    pub const FREECONTEXT: usize = 97;
    pub const SETCONTEXT: usize = 98;
    pub const GETCONTEXT: usize = 99;
    pub const SIBLINGS: usize = 100;
    pub const GETMINFO: usize = 101;
    pub const SETMINFO: usize = 102;
    pub const ADDMHF: usize = 103;
    pub const DELMHF: usize = 104;
    pub const MHF_INVOKE: usize = 105;
    pub const TIMING: usize = 106;
    pub const PROFILING: usize = 107;
    /// pvm-rs: `pvm_migrate` (entry `TT HN`, exit `TT CC HPT`).
    pub const MIGRATE: usize = 120;
    /// pvm-rs: `pvm_checkpoint` (entry `TT TF`, exit `TT CC WID`).
    pub const CHECKPOINT: usize = 121;
    /// pvm-rs: `pvm_restart` (entry `TT WID`, exit `TT CC WID`).
    pub const RESTART: usize = 122;
}

/// Names of the pvm-rs event kinds, sent in their descriptors (a tracer learns them there).
pub const EXT_NAMES: [(usize, &str); 3] = [
    (kind::MIGRATE, "migrate"),
    (kind::CHECKPOINT, "checkpoint"),
    (kind::RESTART, "restart"),
];

/// Semantic data ids (TEV_DID_*), numbered as in pvmtev.h.
#[allow(dead_code)]
pub mod did {
    pub const AN: i32 = 0;
    pub const AC: i32 = 1;
    pub const AS: i32 = 2;
    pub const BF: i32 = 3;
    pub const CC: i32 = 4;
    pub const CN: i32 = 5;
    pub const CI: i32 = 6;
    pub const CF: i32 = 7;
    pub const CD: i32 = 8;
    pub const CR: i32 = 9;
    pub const CXC: i32 = 17;
    pub const CXF: i32 = 18;
    pub const CXN: i32 = 19;
    pub const CXS: i32 = 20;
    pub const FDS: i32 = 23;
    pub const HN: i32 = 30;
    pub const HNL: i32 = 31;
    pub const HPT: i32 = 33;
    pub const HS: i32 = 41;
    pub const INB: i32 = 42;
    pub const IMC: i32 = 43;
    pub const IST: i32 = 44;
    pub const MC: i32 = 45;
    pub const MCX: i32 = 46;
    pub const MB: i32 = 47;
    pub const MNB: i32 = 48;
    pub const SRC: i32 = 49;
    pub const DST: i32 = 50;
    pub const MDL: i32 = 51;
    pub const MTS: i32 = 52;
    pub const MTU: i32 = 53;
    pub const MRB: i32 = 55;
    pub const MSB: i32 = 56;
    pub const ME: i32 = 57;
    pub const MHI: i32 = 58;
    pub const NE: i32 = 62;
    pub const NMC: i32 = 63;
    pub const NTL: i32 = 65;
    pub const NH: i32 = 66;
    pub const NA: i32 = 67;
    pub const OPT: i32 = 68;
    pub const OPV: i32 = 69;
    pub const PDA: i32 = 71;
    pub const PDT: i32 = 72;
    pub const PC: i32 = 73;
    pub const PSD: i32 = 74;
    pub const PF: i32 = 76;
    pub const PRF: i32 = 77;
    pub const RST: i32 = 78;
    pub const RMC: i32 = 79;
    pub const RCX: i32 = 80;
    pub const SN: i32 = 81;
    pub const SE: i32 = 82;
    pub const SF: i32 = 83;
    pub const SW: i32 = 84;
    pub const SC: i32 = 85;
    pub const STL: i32 = 86;
    pub const SIB: i32 = 87;
    pub const TID: i32 = 88;
    pub const PT: i32 = 89;
    pub const MT: i32 = 90;
    pub const TF: i32 = 91;
    pub const TT: i32 = 94;
    pub const TW: i32 = 95;
    pub const TNT: i32 = 97;
    pub const TST: i32 = 98;
    pub const TA: i32 = 104;
    pub const TR: i32 = 105;
    pub const TS: i32 = 106;
    pub const TU: i32 = 107;
    pub const TGS: i32 = 108;
    pub const TGU: i32 = 109;
    pub const TRC: i32 = 112;
    pub const TRT: i32 = 113;
    pub const TRX: i32 = 114;
    pub const TRO: i32 = 115;
    pub const TRM: i32 = 116;
    pub const TRB: i32 = 117;
    pub const TRL: i32 = 118;
    pub const VCT: i32 = 120;
    pub const VID: i32 = 121;
    pub const WID: i32 = 122;
}

/// Per-task trace state (the legacy `pvmtevinfo` counters, `pvmtrcsbf` and friends).
#[derive(Default)]
pub struct State {
    /// Descriptor already sent, per kind: bit ENTRY>>14, EXIT>>14.
    desc: Vec<u8>,
    /// The trace message being filled (PvmTraceFull).
    buf: Option<Packer>,
    /// PvmTraceTime / PvmTraceCount accumulators.
    count: Vec<i32>,
    total: Vec<Duration>,
    mark: Vec<Duration>,
    /// Kind of the event between tev_begin and tev_fin in time/count mode.
    savekind: usize,
    /// Architecture count of the last pvm_config reply (its exit record's `NA`).
    pub narch: i32,
    /// Status of the last mailbox lookup (pvm_recvinfo's exit record's `CC`).
    pub last_cc: i32,
    /// Records of system message handlers run since the last event (see [`system_handler`]).
    deferred: Vec<Deferred>,
    /// Set while the trace check itself connects the task (BEATASK).
    in_beatask: bool,
    /// Set while a trace record is sent (legacy reads input then: mroute).
    in_flush: bool,
}

/// A value of a deferred record.
enum Datum {
    Int(i32, i32),
    Long(i32, i64),
}

/// A record of a system message handler, emitted at the point legacy would have run it.
struct Deferred {
    kind: usize,
    phase: i32,
    data: Vec<Datum>,
    /// Captured while connecting: legacy reads such messages only while sending the record of
    /// the call that connected, so it comes after that record.
    after: bool,
}

impl State {
    fn ensure(&mut self) {
        if self.desc.len() != NKINDS_ALL {
            self.desc = vec![0; NKINDS_ALL];
            self.count = vec![0; NKINDS_ALL];
            self.total = vec![Duration::ZERO; NKINDS_ALL];
            self.mark = vec![Duration::ZERO; NKINDS_ALL];
        }
    }

    /// Forgets descriptors and counters (legacy tev_init at enrolment).
    pub fn reset(&mut self) {
        self.desc.clear();
        self.buf = None;
        self.ensure();
    }
}

/// The event names, from the `pvmtevinfo` table in csrc/shim.c (the console reads the same),
/// and [`EXT_NAMES`] for the pvm-rs kinds (the exported table keeps its legacy size).
fn name(kind: usize) -> &'static [u8] {
    if kind >= NKINDS {
        return EXT_NAMES
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or(&b""[..], |(_, n)| n.as_bytes());
    }
    #[repr(C)]
    struct Info {
        name: *const c_char,
        desc_status: c_int,
        mark: [i64; 2],
        total: [i64; 2],
        count: c_int,
    }
    extern "C" {
        static pvmtevinfo: [Info; NKINDS];
    }
    // SAFETY: a static table of string literals defined in csrc/shim.c, never written.
    unsafe {
        let p = pvmtevinfo[kind.min(NKINDS - 1)].name;
        if p.is_null() {
            return b"";
        }
        std::ffi::CStr::from_ptr(p).to_bytes()
    }
}

fn now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// One record being packed: descriptors carry data ids and types, raw records only values.
pub struct Rec<'a> {
    p: &'a mut Packer,
    desc: bool,
    nop: bool,
}

impl Rec<'_> {
    fn head(&mut self, did: i32, ty: i32) {
        if self.desc {
            let _ = self.p.pk_int(&[did, ty]);
        }
    }
    pub fn int(&mut self, did: i32, v: i32) {
        if self.nop {
            return;
        }
        self.head(did, DATA_INT);
        let _ = self.p.pk_int(&[v]);
    }
    pub fn ints(&mut self, did: i32, v: &[i32]) {
        if self.nop {
            return;
        }
        self.head(did, DATA_INT | DATA_ARRAY);
        let _ = self.p.pk_int(&[v.len() as i32]);
        let _ = self.p.pk_int(v);
    }
    /// A C long (an address): the XDR encoder refuses values beyond 32 bits, as legacy's does,
    /// and then nothing of the value is packed.
    pub fn long(&mut self, did: i32, v: i64) {
        if self.nop {
            return;
        }
        self.head(did, DATA_LONG);
        let _ = self.p.pk_long(&[v]);
    }
    /// Values of one datum as legacy's encoders pack them: the id and type (descriptors), the
    /// count for arrays, then the values (a scalar datum of several values has no count).
    fn typed<T>(&mut self, did: i32, ty: i32, array: bool, v: &[T], pk: impl FnOnce(&mut Packer, &[T])) {
        if self.nop {
            return;
        }
        self.head(did, ty | if array { DATA_ARRAY } else { 0 });
        if array {
            let _ = self.p.pk_int(&[v.len() as i32]);
        }
        pk(self.p, v);
    }
    fn string(&mut self, s: &[u8]) {
        let s = s.iter().position(|&b| b == 0).map_or(s, |n| &s[..n]);
        let mut z = Vec::with_capacity(s.len() + 1);
        z.extend_from_slice(s);
        z.push(0);
        let _ = self.p.pk_int(&[z.len() as i32]);
        let _ = self.p.pk_byte(&z);
    }
    pub fn str(&mut self, did: i32, s: &[u8]) {
        if self.nop {
            return;
        }
        self.head(did, DATA_STRING);
        self.string(s);
    }
    pub fn strs(&mut self, did: i32, v: &[Vec<u8>]) {
        if self.nop {
            return;
        }
        self.head(did, DATA_STRING | DATA_ARRAY);
        let _ = self.p.pk_int(&[v.len() as i32]);
        for s in v {
            self.string(s);
        }
    }
}

fn mask_has(mask: &str, kind: usize) -> bool {
    mask.as_bytes()
        .get(kind / 4)
        .is_some_and(|c| c & (1 << (kind & 3)) != 0)
}

fn tracing(l: &Lib, kind: usize) -> bool {
    l.enrolled() && l.trc.trctid > 0 && l.trc.trctid != l.mytid && mask_has(&l.trc.tmask, kind)
}

/// Packs and (unbuffered) sends one event if `l`'s trace settings ask for it, with the records
/// of system message handlers run since the last one around it.
pub fn event(l: &mut Lib, kind: usize, phase: i32, f: impl FnOnce(&mut Rec, &Lib)) {
    replay(l, false);
    event_now(l, kind, phase, f);
    replay(l, true);
}

fn replay(l: &mut Lib, after: bool) {
    if l.tev.deferred.iter().all(|d| d.after != after) {
        return;
    }
    let (now, later): (Vec<Deferred>, Vec<Deferred>) = std::mem::take(&mut l.tev.deferred)
        .into_iter()
        .partition(|d| d.after == after);
    l.tev.deferred = later;
    // Legacy traces a handler's calls only when its mhf_invoke record is traced (TEV_PUSHTOP).
    if !tracing(l, kind::MHF_INVOKE) {
        return;
    }
    for d in now {
        event_now(l, d.kind, d.phase, |e, _| {
            for x in &d.data {
                match x {
                    Datum::Int(k, v) => e.int(*k, *v),
                    Datum::Long(k, v) => e.long(*k, *v),
                }
            }
        });
    }
}

/// Records what legacy's message handler machinery traces for a task-control message it handles
/// itself (mesg_input with TEV_PUSHTOP and the pvm_tc_* handler's own library calls): the
/// mhf_invoke record, the buffer and context switches around the handler, and the handler's
/// unpacks and frees. Emitted at the next event (legacy runs handlers while routing messages,
/// which it does when sending each trace record).
pub fn system_handler(l: &mut Lib, tag: i32, ctx: i32, src: i32, body: &pvm_proto::encoding::MsgBody) {
    // While connecting, the trace settings are not known yet: decided when replayed.
    if !l.tev.in_beatask && !tracing(l, kind::MHF_INVOKE) {
        return;
    }
    // Bounded: a call that waits long while control messages keep arriving keeps the first
    // records only (each handler makes about twenty).
    if l.tev.deferred.len() >= MAX_DEFERRED {
        return;
    }
    use crate::core::{TC_NOOP, TC_SETTMASK, TC_SETTRACE, TC_SETTRCBUF, TC_SETTRCOPT, TC_SIBLINGS};
    let after = l.tev.in_beatask || l.tev.in_flush;
    let mid = l.next_mid;
    let (sbuf, rbuf, myctx) = (l.sbuf, l.rbuf, cget!(pvmmyctx));
    let mut v: Vec<(usize, i32, Vec<Datum>)> = Vec::new();
    use Datum::{Int, Long};
    v.push((
        kind::MHF_INVOKE,
        ENTRY,
        vec![
            Int(did::RST, -1),
            Int(did::RMC, tag),
            Int(did::RCX, pvm_proto::codes::SYSCTX_TC),
            Int(did::MB, mid),
            Int(did::MNB, body.len() as i32),
            Int(did::MC, tag),
            Int(did::MCX, ctx),
            Int(did::SRC, src),
        ],
    ));
    let call = |v: &mut Vec<(usize, i32, Vec<Datum>)>, k: usize, a: Vec<Datum>, b: Vec<Datum>| {
        v.push((k, ENTRY, a));
        v.push((k, EXIT, b));
    };
    call(&mut v, kind::SETSBUF, vec![Int(did::MB, 0)], vec![Int(did::MSB, sbuf)]);
    call(
        &mut v,
        kind::SETRBUF,
        vec![Int(did::MB, mid)],
        vec![Int(did::MRB, rbuf)],
    );
    call(
        &mut v,
        kind::SETCONTEXT,
        vec![Int(did::CXS, ctx)],
        vec![Int(did::CC, myctx)],
    );
    // The handler's own calls, with the addresses of our copies of what it unpacks into.
    let here = &l.tev as *const State as i64;
    let upkint = |v: &mut Vec<(usize, i32, Vec<Datum>)>, n: i32| {
        v.push((
            kind::UPKINT,
            ENTRY,
            vec![Long(did::PDA, here), Int(did::PC, n), Int(did::PSD, 1)],
        ));
        v.push((kind::UPKINT, EXIT, vec![Int(did::CC, 0)]));
    };
    let upkstr = |v: &mut Vec<(usize, i32, Vec<Datum>)>| {
        v.push((kind::UPKSTR, ENTRY, vec![Long(did::PDA, here)]));
        v.push((kind::UPKSTR, EXIT, vec![Int(did::CC, 0)]));
    };
    let mut u = body.unpacker();
    match tag {
        TC_SIBLINGS => {
            upkint(&mut v, 1);
            let mut n = [0i32];
            if u.up_int(&mut n).is_ok() && n[0] > 0 {
                upkint(&mut v, n[0]);
            }
        }
        TC_NOOP => {
            call(
                &mut v,
                kind::BUFINFO,
                vec![Int(did::MB, mid)],
                vec![
                    Int(did::CC, 0),
                    Int(did::INB, body.len() as i32),
                    Int(did::IMC, tag),
                    Int(did::IST, src),
                ],
            );
        }
        TC_SETTMASK => upkstr(&mut v),
        TC_SETTRCBUF | TC_SETTRCOPT => upkint(&mut v, 1),
        TC_SETTRACE => {
            let mut a = [0i32; 6];
            let _ = u.up_int(&mut a);
            for _ in 0..6 {
                upkint(&mut v, 1);
            }
            upkstr(&mut v);
            upkint(&mut v, 1);
            upkint(&mut v, 1);
            if a[0] != 0 {
                call(
                    &mut v,
                    kind::SETOPT,
                    vec![Int(did::OPT, 14), Int(did::OPV, a[0])],
                    vec![Int(did::OPV, l.trc.trctid)],
                );
            }
            if a[3] != 0 {
                call(
                    &mut v,
                    kind::SETOPT,
                    vec![Int(did::OPT, 12), Int(did::OPV, a[3])],
                    vec![Int(did::OPV, l.trc.outtid)],
                );
            }
        }
        _ => {}
    }
    if matches!(
        tag,
        TC_SIBLINGS | TC_NOOP | TC_SETTMASK | TC_SETTRCBUF | TC_SETTRCOPT | TC_SETTRACE
    ) {
        call(&mut v, kind::FREEBUF, vec![Int(did::MB, mid)], vec![Int(did::CC, 0)]);
    }
    call(
        &mut v,
        kind::SETCONTEXT,
        vec![Int(did::CXS, myctx)],
        vec![Int(did::CC, ctx)],
    );
    call(&mut v, kind::SETSBUF, vec![Int(did::MB, sbuf)], vec![Int(did::MSB, 0)]);
    call(&mut v, kind::FREEBUF, vec![Int(did::MB, 0)], vec![Int(did::CC, 0)]);
    call(&mut v, kind::SETRBUF, vec![Int(did::MB, rbuf)], vec![Int(did::MRB, 0)]);
    call(&mut v, kind::FREEBUF, vec![Int(did::MB, 0)], vec![Int(did::CC, 0)]);
    l.tev.deferred.extend(v.into_iter().map(|(kind, phase, data)| Deferred {
        kind,
        phase,
        data,
        after,
    }));
}

fn event_now(l: &mut Lib, kind: usize, phase: i32, f: impl FnOnce(&mut Rec, &Lib)) {
    if kind >= NKINDS_ALL || !tracing(l, kind) {
        return;
    }
    l.tev.ensure();
    let t = now();
    match l.trc.trcopt {
        TRACE_FULL => {
            let bit = (phase >> 14) as u8;
            let desc = l.tev.desc[kind] & bit == 0;
            l.tev.desc[kind] |= bit;
            let mut p = match l.tev.buf.take() {
                Some(p) => p,
                None => {
                    let mut p = Packer::new(Encoding::Xdr);
                    if l.trc.trcbuf != 0 {
                        let _ = p.pk_int(&[MARK_EVENT_BUFFER]);
                    }
                    p
                }
            };
            if desc {
                let _ = p.pk_int(&[MARK_EVENT_DESC, kind as i32 | phase]);
                let _ = p.pk_str(name(kind));
            } else {
                let _ = p.pk_int(&[MARK_EVENT_RECORD, kind as i32 | phase]);
            }
            {
                let mut r = Rec {
                    p: &mut p,
                    desc,
                    nop: false,
                };
                r.int(did::TS, t.as_secs() as i32);
                r.int(did::TU, t.subsec_micros() as i32);
                r.int(did::TID, l.mytid);
                f(&mut r, l);
            }
            let _ = p.pk_int(&[if desc {
                MARK_EVENT_DESC_END
            } else {
                MARK_EVENT_RECORD_END
            }]);
            let full = l.trc.trcbuf == 0 || p.body().len() >= l.trc.trcbuf as usize;
            l.tev.buf = Some(p);
            if full {
                flush(l);
            }
        }
        TRACE_TIME | TRACE_COUNT => {
            // Values are not recorded; only the time between entry and exit and the count.
            if l.trc.trcopt == TRACE_TIME {
                l.tev.mark[kind] = t;
            }
            l.tev.savekind = kind;
            let mut scratch = Packer::new(Encoding::Xdr);
            f(
                &mut Rec {
                    p: &mut scratch,
                    desc: false,
                    nop: true,
                },
                l,
            );
            let k = l.tev.savekind;
            if l.trc.trcopt == TRACE_TIME {
                let d = now().saturating_sub(l.tev.mark[k]);
                l.tev.total[k] += d;
            }
            l.tev.count[k] += 1;
        }
        o => {
            crate::core::logerror(&format!("Uh-Oh! Bogus Tracing Option ({o}) in tev_begin()...\n"));
            crate::core::logerror(&format!("Uh-Oh! Bogus Tracing Option ({o}) in tev_fin()...\n"));
        }
    }
}

/// Sends what the trace buffer holds (legacy tev_flush): the pending buffered records, or the
/// timing/profiling summary.
pub fn flush(l: &mut Lib) {
    if l.trc.trctid <= 0 || l.mytid == l.trc.trctid || !l.enrolled() {
        return;
    }
    l.tev.ensure();
    let p = match l.trc.trcopt {
        TRACE_FULL => {
            let Some(mut p) = l.tev.buf.take() else {
                return;
            };
            if l.trc.trcbuf != 0 {
                let _ = p.pk_int(&[MARK_EVENT_BUFFER_END]);
            }
            p
        }
        o @ (TRACE_TIME | TRACE_COUNT) => {
            let k = if o == TRACE_TIME { kind::TIMING } else { kind::PROFILING };
            let mut p = Packer::new(Encoding::Xdr);
            let _ = p.pk_int(&[MARK_EVENT_DESC, k as i32]);
            let _ = p.pk_str(name(k));
            let t = now();
            let mut names = Vec::new();
            let (mut secs, mut usecs, mut counts) = (Vec::new(), Vec::new(), Vec::new());
            for i in 0..NKINDS_ALL {
                if l.tev.count[i] > 0 {
                    names.push(name(i).to_vec());
                    secs.push(l.tev.total[i].as_secs() as i32);
                    usecs.push(l.tev.total[i].subsec_micros() as i32);
                    counts.push(l.tev.count[i]);
                    l.tev.count[i] = 0;
                    l.tev.total[i] = Duration::ZERO;
                }
            }
            {
                let mut r = Rec {
                    p: &mut p,
                    desc: true,
                    nop: false,
                };
                r.int(did::TS, t.as_secs() as i32);
                r.int(did::TU, t.subsec_micros() as i32);
                r.int(did::TID, l.mytid);
                r.int(did::VCT, names.len() as i32);
                r.strs(did::VID, &names);
                if o == TRACE_TIME {
                    r.ints(did::TGS, &secs);
                    r.ints(did::TGU, &usecs);
                }
                r.ints(did::PRF, &counts);
            }
            let _ = p.pk_int(&[MARK_EVENT_DESC_END]);
            p
        }
        o => {
            crate::core::logerror(&format!("Uh-Oh! Bogus Tracing Option ({o}) in tev_flush()...\n"));
            return;
        }
    };
    let body = p.into_body();
    let (me, tid, tag, ctx) = (l.mytid, l.trc.trctid, l.trc.trctag, l.trc.trcctx);
    // Over an open direct route if there is one; never asks for a new one (legacy turns
    // PvmRouteDirect into PvmAllowDirect for trace messages).
    let _ = l.send_raw(me, tid, tag, ctx, 0, &body, false);
    // Legacy's mroute reads whatever input is waiting while it sends; the handlers of task
    // control messages found then run (and are traced) right after this record.
    l.tev.in_flush = true;
    let _ = l.pump(Some(Duration::ZERO));
    l.tev.in_flush = false;
}

/// The legacy TEV_EXCLUSIVE section: held by the outermost library call only.
pub struct Excl(());

impl Excl {
    pub fn take() -> Option<Excl> {
        if cget!(pvmtoplvl) == 0 {
            return None;
        }
        cset!(pvmtoplvl, 0);
        Some(Excl(()))
    }
}

impl Drop for Excl {
    fn drop(&mut self) {
        cset!(pvmtoplvl, 1);
    }
}

/// Legacy TEV_PUSHTOP: a message handler runs as a top-level caller, so its calls are traced.
pub struct PushTop(c_int);

impl PushTop {
    pub fn push() -> PushTop {
        let old = cget!(pvmtoplvl);
        cset!(pvmtoplvl, 1);
        PushTop(old)
    }
}

impl Drop for PushTop {
    fn drop(&mut self) {
        cset!(pvmtoplvl, self.0);
    }
}

/// Emits one event from outside the library lock. `enrol`: the check connects first, as the
/// legacy BEATASK in TEV_CHECK_TRACE does (not for getopt/setopt/start_pvmd, which test
/// `pvmmytid != -1` instead).
pub fn emit(kind: usize, phase: i32, enrol: bool, f: impl FnOnce(&mut Rec, &Lib)) {
    let _ = crate::core::with(|l| {
        if enrol && !l.enrolled() && !l.lost {
            l.tev.in_beatask = true;
            let _ = l.beatask();
            l.tev.in_beatask = false;
            for d in &mut l.tev.deferred {
                d.after = true;
            }
        }
        if l.enrolled() {
            event(l, kind, phase, f);
        }
    });
}

/// Runs `body` as a traced library call: entry record, the call, exit record with its result.
pub fn traced(
    kind: usize,
    enrol: bool,
    entry: impl FnOnce(&mut Rec, &Lib),
    body: impl FnOnce() -> Result<c_int, c_int>,
    exit: impl FnOnce(&mut Rec, &Lib, c_int),
) -> Result<c_int, c_int> {
    traced2(kind, enrol, enrol, entry, body, exit)
}

/// [`traced`] with separate enrolment rules for the entry and the exit check
/// (pvm_start_pvmd tests `pvmmytid != -1` at entry only).
pub fn traced2(
    kind: usize,
    enrol_entry: bool,
    enrol_exit: bool,
    entry: impl FnOnce(&mut Rec, &Lib),
    body: impl FnOnce() -> Result<c_int, c_int>,
    exit: impl FnOnce(&mut Rec, &Lib, c_int),
) -> Result<c_int, c_int> {
    let Some(x) = Excl::take() else {
        return body();
    };
    emit(kind, ENTRY, enrol_entry, entry);
    let r = body();
    let cc = match r {
        Ok(v) | Err(v) => v,
    };
    // pvm_exit and pvm_halt have no exit record (and checking for one would connect again).
    if kind != kind::EXIT && kind != kind::HALT {
        emit(kind, EXIT, enrol_exit, |e, l| exit(e, l, cc));
    }
    drop(x);
    r
}

/// A traced call whose records carry only the result code (`CC`) at exit.
pub fn traced_cc(
    kind: usize,
    entry: impl FnOnce(&mut Rec, &Lib),
    body: impl FnOnce() -> Result<c_int, c_int>,
) -> Result<c_int, c_int> {
    traced(kind, true, entry, body, |e, _, cc| e.int(did::CC, cc))
}

/// Entry record of pvm_packf/pvm_unpackf (csrc/shim.c): 1 if this call took the exclusive
/// section, which [`pvmshim_tev_end`] then gives back.
#[no_mangle]
pub unsafe extern "C" fn pvmshim_tev_begin(kind: c_int, fmt: *const c_char) -> c_int {
    crate::core::guarded(0, || match Excl::take() {
        Some(x) => {
            std::mem::forget(x);
            // SAFETY: the format string of pvm_packf, NULL or a C string.
            let f = unsafe { cstr_or_empty(fmt) };
            emit(kind as usize, ENTRY, true, |e, _| e.str(did::PF, &f));
            1
        }
        None => 0,
    })
}

/// Exit record of pvm_packf/pvm_unpackf.
#[no_mangle]
pub extern "C" fn pvmshim_tev_end(kind: c_int, took: c_int, cc: c_int) {
    crate::core::guarded((), || {
        if took != 0 {
            emit(kind as usize, EXIT, true, |e, _| e.int(did::CC, cc));
            cset!(pvmtoplvl, 1);
        }
    })
}

// ---- the legacy internal interface: tev_begin, pvmtrccodef, tev_fin ---------------------------

/// A datum packed through [`pvmtrccodef`] between `tev_begin` and `tev_fin`.
enum Item {
    Int(i32, i32, bool, Vec<i32>),
    Long(i32, i32, bool, Vec<i64>),
    Str(i32, bool, Vec<Vec<u8>>),
}

/// The record opened by `tev_begin`: kind, phase and the data packed so far.
struct Open {
    kind: usize,
    phase: i32,
    items: Vec<Item>,
}

/// At most this many values per datum and data per record: a companion library packs a
/// handful; anything more is a bad pointer or count, not data.
const MAX_OPEN_VALUES: usize = 1 << 16;
const MAX_OPEN_ITEMS: usize = 64;

static OPEN: std::sync::Mutex<Option<Open>> = std::sync::Mutex::new(None);

fn open() -> std::sync::MutexGuard<'static, Option<Open>> {
    OPEN.lock().unwrap_or_else(|e| e.into_inner())
}

/// The legacy `struct pvmtrcencvec`: one encoder per data type, each
/// `(did, array, datap, cnt, std)`.
#[repr(C)]
pub struct EncVec([EncFn; 12]);
type EncFn = unsafe extern "C" fn(c_int, c_int, *const std::ffi::c_void, c_int, c_int) -> c_int;

/// Our encoders collect the data; `tev_fin` packs them as a descriptor or a raw record, so one
/// vector serves both (legacy switches between a descriptor and a raw vector).
static ENCVEC: EncVec = EncVec([
    enc_unsupported,
    enc_unsupported,
    enc_unsupported,
    enc_unsupported,
    enc_unsupported,
    enc_int,
    enc_uint,
    enc_long,
    enc_ulong,
    enc_unsupported,
    enc_unsupported,
    enc_str,
]);

extern "C" {
    /// `void *pvmtrccodef` in csrc/shim.c, the legacy global a companion library packs through.
    static mut pvmtrccodef: *const EncVec;
}

/// `cnt` values of type `T` at `datap` with stride `std` (NULL or a bad count: none).
///
/// # Safety
/// `datap` must be NULL or point to `cnt` elements `std` apart.
unsafe fn gather<T: Copy>(datap: *const std::ffi::c_void, cnt: c_int, std: c_int) -> Vec<T> {
    let n = usize::try_from(cnt).unwrap_or(0).min(MAX_OPEN_VALUES);
    let step = usize::try_from(std).unwrap_or(1).max(1);
    if datap.is_null() {
        return Vec::new();
    }
    let p = datap as *const T;
    // SAFETY: per the contract.
    (0..n).map(|i| unsafe { p.add(i * step).read_unaligned() }).collect()
}

fn push(item: Item) -> c_int {
    match open().as_mut() {
        Some(o) if o.items.len() < MAX_OPEN_ITEMS => {
            o.items.push(item);
            0
        }
        _ => crate::core::E_BADPARAM,
    }
}

/// The encoders of the integer types: `cnt` values `std` apart from `datap`, gathered as the
/// Rust type, recorded with their legacy data type code.
macro_rules! int_encoder {
    ($name:ident, $t:ty, $item:ident, $code:expr) => {
        unsafe extern "C" fn $name(
            did: c_int,
            array: c_int,
            datap: *const std::ffi::c_void,
            cnt: c_int,
            std: c_int,
        ) -> c_int {
            crate::core::guarded(crate::core::E_SYSERR, || {
                // SAFETY: the caller's data, as legacy's TEV_PACK_* macros take it.
                let v = unsafe { gather::<$t>(datap, cnt, std) };
                push(Item::$item(did, $code, array & DATA_ARRAY != 0, v))
            })
        }
    };
}
int_encoder!(enc_int, i32, Int, DATA_INT);
int_encoder!(enc_uint, i32, Int, 7);
int_encoder!(enc_long, i64, Long, DATA_LONG);
int_encoder!(enc_ulong, i64, Long, 9);

/// A string (scalar: `datap` is the `char *`) or an array of `cnt` strings `std` apart
/// (`datap` is a `char **`), as legacy's string encoder reads them.
unsafe extern "C" fn enc_str(
    did: c_int,
    array: c_int,
    datap: *const std::ffi::c_void,
    cnt: c_int,
    std: c_int,
) -> c_int {
    crate::core::guarded(crate::core::E_SYSERR, || {
        let is_array = array & DATA_ARRAY != 0;
        let v = if is_array {
            // SAFETY: a `char **` of `cnt` entries, each NULL or a C string.
            let ptrs = unsafe { gather::<*const c_char>(datap, cnt, std) };
            ptrs.into_iter()
                // SAFETY: as above.
                .map(|p| unsafe { cstr_or_empty(p) })
                .collect()
        } else {
            // SAFETY: a C string or NULL.
            vec![unsafe { cstr_or_empty(datap as *const c_char) }]
        };
        push(Item::Str(did, is_array, v))
    })
}

/// Byte, complex, float, double and short data: no companion library of ours packs them;
/// refused, and the record goes out without that datum.
unsafe extern "C" fn enc_unsupported(_: c_int, _: c_int, _: *const std::ffi::c_void, _: c_int, _: c_int) -> c_int {
    crate::core::E_NOTIMPL
}

/// Legacy `tev_begin`: opens a record of event `kind` (`entry_exit` TEV_EVENT_ENTRY or _EXIT)
/// and points `pvmtrccodef` at the encoders; `tev_fin` sends it. Returns 1 when the record is
/// open. The legacy function trusts its caller's TEV_CHECK_TRACE (which reads the legacy
/// `pvmtrc` struct we do not keep): this one checks the trace destination and mask itself and
/// returns 0 when the event is not traced, so a caller may skip its own check (our libgpvm3
/// does so on this library). pvm-rs kinds (120..=122) are accepted as well.
#[no_mangle]
pub extern "C" fn tev_begin(kind: c_int, entry_exit: c_int) -> c_int {
    crate::core::guarded(0, || {
        let Ok(k) = usize::try_from(kind) else { return 0 };
        if k >= NKINDS_ALL || (entry_exit != ENTRY && entry_exit != EXIT) {
            return 0;
        }
        let on = crate::core::with(|l| {
            if !l.enrolled() && !l.lost {
                let _ = l.beatask();
            }
            tracing(l, k)
        })
        .unwrap_or(false);
        if !on {
            return 0;
        }
        *open() = Some(Open {
            kind: k,
            phase: entry_exit,
            items: Vec::new(),
        });
        // SAFETY: a plain pointer global in csrc/shim.c; PVM is single-threaded.
        unsafe { std::ptr::addr_of_mut!(pvmtrccodef).write(&ENCVEC) };
        1
    })
}

/// Legacy `tev_fin`: packs the record opened by `tev_begin` (descriptor the first time for its
/// kind and phase, raw afterwards) and sends or buffers it as every other event.
#[no_mangle]
pub extern "C" fn tev_fin() -> c_int {
    crate::core::guarded(0, || {
        let Some(o) = open().take() else { return 0 };
        let _ = crate::core::with(|l| {
            event(l, o.kind, o.phase, |e, _| {
                for it in &o.items {
                    match it {
                        Item::Int(did, ty, arr, v) => e.typed(*did, *ty, *arr, v, |p, v| {
                            let _ = p.pk_int(v);
                        }),
                        Item::Long(did, ty, arr, v) => e.typed(*did, *ty, *arr, v, |p, v| {
                            let _ = p.pk_long(v);
                        }),
                        Item::Str(did, true, v) => e.strs(*did, v),
                        Item::Str(did, false, v) => e.str(*did, v.first().map_or(&b""[..], |s| s)),
                    }
                }
            })
        });
        0
    })
}

// ---- user-defined events (PvmDataTrace buffers) ----------------------------------------------

/// `pvm_send` to this tid and tag hands a PvmDataTrace buffer to the tracer (pvmtev.h).
pub const PVM_TRACE_TID: i32 = -1111;
pub const PVM_TRACE_CODE: i32 = -2222;
const MARK_USER_EVENT_RECORD: i32 = -9;
const MARK_USER_EVENT_RECORD_END: i32 = -10;
const USER_DEFINED: usize = 108;

/// The header of a user-defined record: marker, event id, name (int length with the NUL, then
/// the bytes), time (legacy enc_trc_hdr).
pub fn user_header(p: &mut Packer) {
    let t = now();
    let name = name(USER_DEFINED);
    let mut z = name.to_vec();
    z.push(0);
    let _ = p.pk_int(&[MARK_USER_EVENT_RECORD, USER_DEFINED as i32, z.len() as i32]);
    let _ = p.pk_byte(&z);
    let _ = p.pk_int(&[t.as_secs() as i32, t.subsec_micros() as i32]);
}

/// Whether the send buffer is a user-defined trace record.
pub fn is_user_buf(l: &Lib) -> bool {
    l.bufs
        .get(&l.sbuf)
        .is_some_and(|b| b.enc_override == Some(pvm_proto::codes::ENC_TRACE))
}

/// The type annotation legacy's trace encoder writes before `cnt` items of `T`: the type, with
/// the count for arrays (unsigned int and short use the signed encoders, so their types).
pub fn user_annotate<T: pvm_proto::encoding::Item>(p: &mut Packer, cnt: c_int) {
    use pvm_proto::encoding::Kind;
    if cnt <= 0 {
        return;
    }
    let ty = match T::KIND {
        Kind::Byte => 1,
        Kind::Cplx => 2,
        Kind::DCplx => 3,
        Kind::Double => 4,
        Kind::Float => 5,
        Kind::Int | Kind::UInt => DATA_INT,
        Kind::Long => DATA_LONG,
        Kind::ULong => 9,
        Kind::Short | Kind::UShort => 10,
    };
    if cnt == 1 {
        let _ = p.pk_int(&[ty]);
    } else {
        let _ = p.pk_int(&[ty | DATA_ARRAY, cnt]);
    }
}

/// `pvm_pkint(&m, 0, 1)` with a negative `m` into a trace buffer packs the marker itself
/// (legacy's way to insert markers).
pub fn user_marker<T: 'static>(l: &mut Lib, first: &T) -> Result<(), c_int> {
    let Some(&m) = (first as &dyn std::any::Any).downcast_ref::<i32>() else {
        return Ok(());
    };
    if m < 0 && is_user_buf(l) {
        let _ = l.sbuf_packer()?.pk_int(&[m]);
    }
    Ok(())
}

/// `pvm_send(PVM_TRACE_TID, PVM_TRACE_CODE)`: when user-defined events are in our mask, end
/// the record and send the buffer to the tracer; otherwise nothing (and no error).
pub fn user_send(l: &mut Lib) -> Result<c_int, c_int> {
    if !mask_has(&l.trc.tmask, USER_DEFINED) || l.trc.trctid <= 0 {
        return Ok(0);
    }
    if !l.bufs.contains_key(&l.sbuf) {
        return Err(crate::core::E_NOBUF);
    }
    let _ = l.sbuf_packer()?.pk_int(&[MARK_USER_EVENT_RECORD_END]);
    let sb = l.sbuf;
    let Some(b) = l.bufs.remove(&sb) else {
        return Err(crate::core::E_NOBUF);
    };
    let (me, tid, tag, ctx) = (l.mytid, l.trc.trctid, l.trc.trctag, l.trc.trcctx);
    let r = l.send_raw_enc(me, tid, tag, ctx, 0, b.enc(), b.body(), false);
    l.bufs.insert(sb, b);
    r.map(|_| 0)
}

/// Length, tag and source of a buffer, or -1s (pvm_bufinfo as the trace code uses it).
pub fn bufinfo(l: &Lib, mid: i32) -> (i32, i32, i32) {
    match l.bufs.get(&mid) {
        Some(b) if mid > 0 => (b.body().len() as i32, b.tag, b.src),
        _ => (-1, -1, -1),
    }
}

/// The exit record of the receive family: buffer, its length, tag, our context, source.
pub fn recv_exit(e: &mut Rec, l: &Lib, cc: i32) {
    let (nb, mc, src) = if cc > 0 { bufinfo(l, cc) } else { (-1, -1, -1) };
    e.int(did::MB, cc);
    e.int(did::MNB, nb);
    e.int(did::MC, mc);
    e.int(did::MCX, cget!(pvmmyctx));
    e.int(did::SRC, src);
}

/// The entry record of the receive family.
pub fn recv_entry(e: &mut Rec, tid: i32, tag: i32) {
    e.int(did::RST, tid);
    e.int(did::RMC, tag);
    e.int(did::RCX, cget!(pvmmyctx));
}

/// The entry record of every pack/unpack: the user's address, count and stride.
pub fn pack_entry(e: &mut Rec, addr: *const std::ffi::c_void, cnt: i32, std: i32) {
    e.long(did::PDA, addr as i64);
    e.int(did::PC, cnt);
    e.int(did::PSD, std);
}

/// C strings of a `char **` with `n` entries (NULL entries as empty strings).
///
/// # Safety
/// `v` must be NULL or point to `n` pointers, each NULL or a C string.
pub unsafe fn cstrs(v: *const *const c_char, n: c_int) -> Vec<Vec<u8>> {
    if v.is_null() || n <= 0 {
        return Vec::new();
    }
    (0..n as usize)
        .map(|i| {
            // SAFETY: per the contract above.
            let p = unsafe { *v.add(i) };
            if p.is_null() {
                Vec::new()
            } else {
                // SAFETY: a C string.
                unsafe { std::ffi::CStr::from_ptr(p) }.to_bytes().to_vec()
            }
        })
        .collect()
}

/// A C string or "" for NULL.
///
/// # Safety
/// `p` must be NULL or a C string.
pub unsafe fn cstr_or_empty(p: *const c_char) -> Vec<u8> {
    if p.is_null() {
        Vec::new()
    } else {
        // SAFETY: a C string.
        unsafe { std::ffi::CStr::from_ptr(p) }.to_bytes().to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_bits_follow_pvmtev_h() {
        // TEV_MASK_SET(m, k): m[k/4] |= 1 << (k & 3) on '@' (0x40) characters.
        let mut m = vec![b'@'; 35];
        m[kind::SEND / 4] |= 1 << (kind::SEND & 3);
        let m = String::from_utf8(m).unwrap();
        assert!(mask_has(&m, kind::SEND));
        assert!(!mask_has(&m, kind::RECV));
        assert!(!mask_has(crate::core::TMASK_OFF, kind::SEND));
    }

    #[test]
    fn legacy_encoders_read_what_the_caller_points_at_within_bounds() {
        let v = [1i32, 2, 3, 4, 5, 6];
        // SAFETY: `v` holds 6 ints; stride 2 reads 3 of them.
        let got = unsafe { gather::<i32>(v.as_ptr().cast(), 3, 2) };
        assert_eq!(got, vec![1, 3, 5]);
        // SAFETY: NULL and negative counts read nothing.
        assert!(unsafe { gather::<i32>(std::ptr::null(), 3, 1) }.is_empty());
        // SAFETY: as above.
        assert!(unsafe { gather::<i32>(v.as_ptr().cast(), -4, 1) }.is_empty());
        // No record open: an encoder refuses instead of packing somewhere.
        *open() = None;
        // SAFETY: a valid int.
        assert_eq!(
            unsafe { enc_int(did::CC, 0, v.as_ptr().cast(), 1, 1) },
            crate::core::E_BADPARAM
        );
        assert_eq!(tev_fin(), 0, "nothing open, nothing sent");
        assert_eq!(name(kind::CHECKPOINT), b"checkpoint");
        assert_eq!(name(kind::MIGRATE), b"migrate");
        assert_eq!(name(119), b"", "unassigned ids have no name");
    }

    #[test]
    fn descriptor_and_raw_records_differ_only_by_ids_and_types() {
        let mut a = Packer::new(Encoding::Xdr);
        let mut b = Packer::new(Encoding::Xdr);
        let mut d = Rec {
            p: &mut a,
            desc: true,
            nop: false,
        };
        d.int(did::CC, -2);
        d.ints(did::STL, &[1, 2]);
        d.str(did::SE, b"hi");
        let mut r = Rec {
            p: &mut b,
            desc: false,
            nop: false,
        };
        r.int(did::CC, -2);
        r.ints(did::STL, &[1, 2]);
        r.str(did::SE, b"hi");
        let da = a.into_body().bytes().to_vec();
        let rb = b.into_body().bytes().to_vec();
        // did+type for the int (8 bytes), did+type for the array (8), did+type for the string (8).
        assert_eq!(da.len(), rb.len() + 24);
        assert_eq!(&rb[..4], &(-2i32).to_be_bytes());
        assert_eq!(&rb[4..8], &2i32.to_be_bytes());
    }
}
