//! The pvmd's own trace events (legacy pvmdtev.c): `newtask` when a traced task is started
//! (or connects on its own while a tracer is registered), `spntask` when the spawn request is
//! answered, `endtask` when it is gone, each as a one-record message to the task's tracer.
//!
//! The first message to a tracer is the table of semantic data ids (`DATA_ID`: number, name,
//! description for each); the first record of each kind to a tracer is a descriptor (data id
//! and type before each value), later ones raw. Like the legacy daemon, the tracers already
//! served are remembered in bounded rings of 100 (a tracer pushed out gets descriptors again).
//!
//! Values the legacy daemon takes from its task table and this one does not keep (exit status
//! and rusage times of `endtask`) are sent as 0.

use std::collections::VecDeque;
use std::time::{SystemTime, UNIX_EPOCH};

use pvm_proto::xdr::XdrWriter;
use pvm_proto::Tid;

use super::{AuthFiles, Daemon, Out};

const MARK_DATA_ID: i32 = -3;
const MARK_DATA_ID_END: i32 = -4;
const MARK_EVENT_DESC: i32 = -5;
const MARK_EVENT_DESC_END: i32 = -6;
const MARK_EVENT_RECORD: i32 = -7;
const MARK_EVENT_RECORD_END: i32 = -8;
const DATA_INT: i32 = 6;
const DATA_STRING: i32 = 12;

const TEV_NEWTASK: i32 = 75;
const TEV_ENDTASK: i32 = 76;
const TEV_SPNTASK: i32 = 77;

const DID_PT: i32 = 89;
const DID_TF: i32 = 91;
const DID_TN: i32 = 92;
const DID_TST: i32 = 98;
const DID_TUS: i32 = 99;
const DID_TUU: i32 = 100;
const DID_TSS: i32 = 101;
const DID_TSU: i32 = 102;
const DID_TID: i32 = 88;
const DID_TS: i32 = 106;
const DID_TU: i32 = 107;

/// Tracers remembered per ring (the legacy CHECKLISTSIZE).
const RING: usize = 100;

/// The semantic data ids (TEV_DID_*), with the legacy names and descriptions.
const DIDS: [(&str, &str); 123] = [
    ("AN", "PVM Architecture Name"),
    ("AC", "PVM Architecture Code"),
    ("AS", "Argument Strings (Argc/Argv)"),
    ("BF", "Block Flag"),
    ("CC", "Condition Code"),
    ("CN", "Class Name"),
    ("CI", "Class Index"),
    ("CF", "Class Flags"),
    ("CD", "Class Data"),
    ("CR", "Returned Class Data"),
    ("CL", "Returned Class Names"),
    ("CDA", "Collective Data Address"),
    ("CDT", "Collective Data Type"),
    ("CDX", "Collective Data"),
    ("CDC", "Collective Count"),
    ("CGI", "Collective Group Result Instance"),
    ("CRF", "Collective Reduce Function"),
    ("CXC", "Current Message Context"),
    ("CXF", "Freed Message Context"),
    ("CXN", "New Message Context"),
    ("CXS", "Set Message Context"),
    ("ERI", "PVM Error Identifier"),
    ("ERR", "PVM Error String"),
    ("FDS", "File Descriptors"),
    ("FP", "File Pointer"),
    ("GN", "Group Name"),
    ("GI", "Group Instance Number"),
    ("GT", "Group Task ID"),
    ("GS", "Group Size"),
    ("GBC", "Group Barrier Count"),
    ("HN", "Host Name"),
    ("HNL", "Host Name List"),
    ("HNA", "Host Name Alias"),
    ("HPT", "Host PVMD Task ID"),
    ("HA", "Host Architecture"),
    ("HSP", "Host Speed"),
    ("HIS", "Host Information Structures"),
    ("HCS", "Host Clock Seconds"),
    ("HCU", "Host Clock Microseconds"),
    ("HDS", "Host Delta Seconds"),
    ("HDU", "Host Delta Microseconds"),
    ("HS", "Host Status"),
    ("INB", "Info Number of Message Bytes"),
    ("IMC", "Info Message Code"),
    ("IST", "Info Message Source Task"),
    ("MC", "Message Code"),
    ("MCX", "Message Context"),
    ("MB", "Message Buffer"),
    ("MNB", "Message Number of Bytes"),
    ("SRC", "Message Source Task ID"),
    ("DST", "Message Destination Task ID"),
    ("MDL", "Message Destination Task ID List"),
    ("MTS", "Message Timeout Seconds"),
    ("MTU", "Message Timeout Microseconds"),
    ("MRF", "Message Receive Function"),
    ("MRB", "Message Receive Buffer"),
    ("MSB", "Message Send Buffer"),
    ("ME", "Message Encoding"),
    ("MHI", "Message Handler Index"),
    ("AST", "Actual Message Sender Task ID"),
    ("AMC", "Actual Message Code"),
    ("AML", "Actual Message Length"),
    ("NE", "Notify Event ID"),
    ("NMC", "Notify Message Code"),
    ("NCT", "Notify Count"),
    ("NTL", "Notify Task ID List"),
    ("NH", "Number of Hosts"),
    ("NA", "Number of Architectures"),
    ("OPT", "PVM Option ID"),
    ("OPV", "PVM Option Value"),
    ("OS", "Output String"),
    ("PDA", "Pack Data Address"),
    ("PDT", "Pack Data Type"),
    ("PC", "Pack Count"),
    ("PSD", "Pack Stride"),
    ("PSG", "Pack String"),
    ("PF", "Pack Format"),
    ("PRF", "Profiling Count"),
    ("RST", "Receive Msg Source Task / Wildcard"),
    ("RMC", "Receive Msg Code / Wildcard"),
    ("RCX", "Receive Msg Context"),
    ("SN", "Signal Number"),
    ("SE", "Spawn Executable File"),
    ("SF", "Spawn Flags"),
    ("SW", "Spawn Where"),
    ("SC", "Spawn Count"),
    ("STL", "Spawned Task ID List"),
    ("SIB", "Sibling Task ID List"),
    ("TID", "Task ID"),
    ("PT", "Parent Task ID"),
    ("MT", "My Task ID"),
    ("TF", "Task Flags"),
    ("TN", "Task Name"),
    ("PID", "Task Process ID"),
    ("TT", "Target Task ID"),
    ("TW", "Tasks Where"),
    ("TIS", "Task Information Structures"),
    ("TNT", "Task Info - Number of Tasks"),
    ("TST", "Task Status"),
    ("TUS", "Task User Usage Seconds"),
    ("TUU", "Task User Usage Microseconds"),
    ("TSS", "Task System Usage Seconds"),
    ("TSU", "Task System Usage Microseconds"),
    ("TES", "Task Exit Status"),
    ("TA", "Tickle Arguments"),
    ("TR", "Tickle Responses"),
    ("TS", "Time Seconds"),
    ("TU", "Time Microseconds"),
    ("TGS", "Timing Seconds"),
    ("TGU", "Timing Microseconds"),
    ("TMW", "Trace Mask Who"),
    ("TM", "Trace Mask"),
    ("TRC", "Tracer Message Trace Context"),
    ("TRT", "Tracer Message Trace Tag"),
    ("TRX", "Tracer Message Output Context"),
    ("TRO", "Tracer Message Output Tag"),
    ("TRM", "Tracer Trace Mask"),
    ("TRB", "Tracer Trace Buffering"),
    ("TRL", "Tracer Trace Options"),
    ("VER", "PVM Version"),
    ("VCT", "Trace Event Count"),
    ("VID", "Trace Event ID"),
    ("WID", "Wait Identifier Number"),
];

/// A trace destination: tracer tid, message context and tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dest {
    pub tid: i32,
    pub ctx: i32,
    pub tag: i32,
}

/// One daemon event about a task, named after the legacy events.
#[derive(Debug, Clone)]
#[allow(clippy::enum_variant_names)]
pub enum Event {
    NewTask {
        tid: i32,
        ptid: i32,
        flags: i32,
        name: String,
    },
    SpnTask {
        tid: i32,
        ptid: i32,
    },
    EndTask {
        tid: i32,
        status: i32,
    },
}

/// Which tracers got the data-id table and which got each kind's descriptor.
#[derive(Debug, Default)]
pub struct TevState {
    init: VecDeque<i32>,
    desc: [VecDeque<i32>; 3],
}

fn seen(ring: &mut VecDeque<i32>, dst: i32) -> bool {
    if ring.contains(&dst) {
        return true;
    }
    if ring.len() == RING {
        ring.pop_front();
    }
    ring.push_back(dst);
    false
}

impl TevState {
    /// The message bodies (XDR) for `ev` to tracer `dst` at time `now`.
    pub fn bodies(&mut self, dst: i32, now: SystemTime, ev: &Event) -> Vec<Vec<u8>> {
        let mut v = Vec::new();
        if !seen(&mut self.init, dst) {
            let mut w = XdrWriter::new();
            w.int(MARK_DATA_ID);
            for (i, (id, desc)) in DIDS.iter().enumerate() {
                w.int(i as i32).string(id).string(desc);
            }
            w.int(MARK_DATA_ID_END);
            v.push(w.into_inner());
        }
        let (kind, slot, name) = match ev {
            Event::NewTask { .. } => (TEV_NEWTASK, 0, "newtask"),
            Event::SpnTask { .. } => (TEV_SPNTASK, 1, "spntask"),
            Event::EndTask { .. } => (TEV_ENDTASK, 2, "endtask"),
        };
        let desc = !seen(&mut self.desc[slot], dst);
        let mut w = XdrWriter::new();
        if desc {
            w.int(MARK_EVENT_DESC).int(kind).string(name);
        } else {
            w.int(MARK_EVENT_RECORD).int(kind);
        }
        let int = |w: &mut XdrWriter, did: i32, v: i32| {
            if desc {
                w.int(did).int(DATA_INT);
            }
            w.int(v);
        };
        let t = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        int(&mut w, DID_TS, t.as_secs() as i32);
        int(&mut w, DID_TU, t.subsec_micros() as i32);
        match ev {
            Event::NewTask { tid, ptid, flags, name } => {
                int(&mut w, DID_TID, *tid);
                int(&mut w, DID_PT, *ptid);
                int(&mut w, DID_TF, *flags);
                if desc {
                    w.int(DID_TN).int(DATA_STRING);
                }
                w.string(name);
            }
            Event::SpnTask { tid, ptid } => {
                int(&mut w, DID_TID, *tid);
                int(&mut w, DID_PT, *ptid);
            }
            Event::EndTask { tid, status } => {
                int(&mut w, DID_TID, *tid);
                int(&mut w, DID_TST, *status);
                for did in [DID_TUS, DID_TUU, DID_TSS, DID_TSU] {
                    int(&mut w, did, 0);
                }
            }
        }
        w.int(if desc {
            MARK_EVENT_DESC_END
        } else {
            MARK_EVENT_RECORD_END
        });
        v.push(w.into_inner());
        v
    }
}

impl<A: AuthFiles> Daemon<A> {
    /// Sends a daemon trace event to `dest` (nothing unless its tid is a task).
    pub(super) fn tev_send(&mut self, dest: Dest, ev: Event, out: &mut Vec<Out>) {
        if dest.tid <= 0 {
            return;
        }
        for body in self.tev.bodies(dest.tid, SystemTime::now(), &ev) {
            self.send_to_task(Tid(dest.tid), dest.tag, dest.ctx, 0, &body, out);
        }
    }

    /// A task changed its trace destination (TM_SETOPT; legacy change_trace): the old tracer
    /// sees it end, the new one sees it spawned and new.
    pub(super) fn tev_change_trace(&mut self, tid: Tid, before: Option<(i32, i32, i32)>, out: &mut Vec<Out>) {
        let Some(old) = before else { return };
        let Some(t) = self.tasks.get(&self.key(tid)) else {
            return;
        };
        let now = (t.trctid, t.trcctx, t.trctag);
        if now == old {
            return;
        }
        let (ptid, name) = (t.ptid.0, t.a_out.clone());
        let dest = |d: (i32, i32, i32)| Dest {
            tid: d.0,
            ctx: d.1,
            tag: d.2,
        };
        self.tev_send(dest(old), Event::EndTask { tid: tid.0, status: 0 }, out);
        self.tev_send(dest(now), Event::SpnTask { tid: tid.0, ptid }, out);
        // Flags 0, as legacy sends them here.
        self.tev_send(
            dest(now),
            Event::NewTask {
                tid: tid.0,
                ptid,
                flags: 0,
                name,
            },
            out,
        );
    }

    /// The tracer a task started from a shell gets while one is registered (legacy tm_conn2),
    /// when its tag is set.
    pub(super) fn tev_registered(&self) -> Option<Dest> {
        self.reg
            .tracer
            .as_ref()
            .filter(|t| t.tid != Tid::NONE && t.trctag != 0)
            .map(|t| Dest {
                tid: t.tid.0,
                ctx: t.trcctx,
                tag: t.trctag,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pvm_proto::xdr::XdrReader;

    #[test]
    fn first_message_is_the_data_id_table_then_descriptor_then_raw() {
        let mut s = TevState::default();
        let now = UNIX_EPOCH + std::time::Duration::new(1000, 5);
        let ev = Event::SpnTask {
            tid: 0x40002,
            ptid: 0x40001,
        };
        let b = s.bodies(0x40009, now, &ev);
        assert_eq!(b.len(), 2);
        let mut r = XdrReader::new(&b[0]);
        assert_eq!(r.int("mark").unwrap(), MARK_DATA_ID);
        assert_eq!(r.int("i").unwrap(), 0);
        assert_eq!(r.string("id").unwrap(), "AN");
        let mut r = XdrReader::new(&b[1]);
        let v: Vec<i32> = (0..4).map(|_| r.int("x").unwrap()).collect();
        assert_eq!(&v[..2], &[MARK_EVENT_DESC, TEV_SPNTASK]);
        let b2 = s.bodies(0x40009, now, &ev);
        assert_eq!(b2.len(), 1);
        let mut r = XdrReader::new(&b2[0]);
        let v: Vec<i32> = (0..7).map(|_| r.int("x").unwrap()).collect();
        assert_eq!(
            v,
            [
                MARK_EVENT_RECORD,
                TEV_SPNTASK,
                1000,
                0,
                0x40002,
                0x40001,
                MARK_EVENT_RECORD_END
            ]
        );
        assert!(r.is_empty());
    }

    #[test]
    fn rings_are_bounded() {
        let mut s = TevState::default();
        for t in 0..500 {
            s.bodies(0x40000 + t, SystemTime::now(), &Event::EndTask { tid: 1, status: 0 });
        }
        assert!(s.init.len() <= RING && s.desc.iter().all(|r| r.len() <= RING));
    }
}
