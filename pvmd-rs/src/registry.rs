//! Tasks registered to take over daemon duties (TM_SCHED, TM_TASKER, TM_HOSTER, TM_TRACER):
//! who they are, the legacy answers to registration, and what happens when they go away.
//!
//! The legacy daemon keeps a dead resource manager's tid, so every task that connects later is
//! told to send its spawns to a task that no longer exists; here a registration ends with its
//! task and the daemon places tasks itself again (with a log line saying so).

use pvm_proto::codes::PvmError;
use pvm_proto::xdr::XdrReader;
use pvm_proto::{ParseError, Tid};

/// Trace collector settings from TM_TRACER (handed to tasks as their defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracer {
    pub tid: Tid,
    pub trcctx: i32,
    pub trctag: i32,
    pub outctx: i32,
    pub outtag: i32,
    /// The trace mask as the library sent it (`@`-based hex digits).
    pub tmask: String,
    pub tbuf: i32,
    pub topt: i32,
}

/// The registered tasks; `Tid::NONE` (0) where nobody is registered.
#[derive(Debug, Default)]
pub struct Registry {
    pub sched: Tid,
    pub tasker: Tid,
    pub hoster: Tid,
    pub tracer: Option<Tracer>,
}

/// Longest trace mask accepted (the legacy TEV_MASK_LENGTH is 36; room for growth).
const MAX_TMASK: usize = 256;

impl Registry {
    /// TM_SCHED: the caller becomes the resource manager; returns the previous one.
    pub fn register_sched(&mut self, tid: Tid) -> Tid {
        std::mem::replace(&mut self.sched, tid)
    }

    /// SM_HANDOFF from the current resource manager: another task takes over (0 = none).
    pub fn handoff(&mut self, from: Tid, to: Tid) -> bool {
        if from != self.sched || self.sched == Tid::NONE {
            return false;
        }
        self.sched = to;
        true
    }

    /// TM_TASKER / TM_HOSTER: `regme` registers (PvmAlready if taken), else unregisters
    /// (PvmNoTask unless the caller is the one registered).
    pub fn register_slot(slot: &mut Tid, tid: Tid, regme: bool) -> i32 {
        if regme {
            if *slot != Tid::NONE {
                return PvmError::Already.code();
            }
            *slot = tid;
            0
        } else if *slot == tid && tid != Tid::NONE {
            *slot = Tid::NONE;
            0
        } else {
            PvmError::NoTask.code()
        }
    }

    /// TM_TRACER. The body after `regme` is read only when registering succeeds, as the
    /// legacy does (a second tracer's settings are never looked at).
    pub fn register_tracer(&mut self, tid: Tid, body: &[u8]) -> Result<i32, ParseError> {
        let mut r = XdrReader::new(body);
        let regme = r.int("TM_TRACER regme")?;
        if regme == 0 {
            return Ok(match &self.tracer {
                Some(t) if t.tid == tid => {
                    self.tracer = None;
                    0
                }
                _ => PvmError::NoTask.code(),
            });
        }
        if self.tracer.is_some() {
            return Ok(PvmError::Already.code());
        }
        let trcctx = r.int("TM_TRACER trcctx")?;
        let trctag = r.int("TM_TRACER trctag")?;
        let outctx = r.int("TM_TRACER outctx")?;
        let outtag = r.int("TM_TRACER outtag")?;
        let mask = r.string_bytes("TM_TRACER tmask")?;
        let tmask = String::from_utf8_lossy(&mask[..mask.len().min(MAX_TMASK)]).into_owned();
        let tbuf = r.int("TM_TRACER tbuf")?;
        let topt = r.int("TM_TRACER topt")?;
        self.tracer = Some(Tracer {
            tid,
            trcctx,
            trctag,
            outctx,
            outtag,
            tmask,
            tbuf,
            topt,
        });
        Ok(0)
    }

    /// A task exited: every registration it held ends. Returns log lines for the ones that
    /// matter to users.
    pub fn task_exited(&mut self, tid: Tid) -> Vec<String> {
        let mut logs = Vec::new();
        if tid == Tid::NONE {
            return logs;
        }
        if self.sched == tid {
            self.sched = Tid::NONE;
            logs.push(format!(
                "task_free() resource manager t{:x} exited; the pvmd places tasks itself again",
                tid.bits()
            ));
        }
        if self.tasker == tid {
            self.tasker = Tid::NONE;
            logs.push(format!(
                "task_free() tasker t{:x} exited; the pvmd starts tasks itself",
                tid.bits()
            ));
        }
        if self.hoster == tid {
            self.hoster = Tid::NONE;
            logs.push(format!("task_free() hoster t{:x} exited", tid.bits()));
        }
        if self.tracer.as_ref().is_some_and(|t| t.tid == tid) {
            self.tracer = None;
            logs.push(format!("task_free() tracer t{:x} exited", tid.bits()));
        }
        logs
    }

    /// Whether an SM_ message from `src` may be acted on: only from the registered tasks.
    pub fn may_send_sm(&self, src: Tid) -> bool {
        src != Tid::NONE && (src == self.sched || src == self.tasker || src == self.hoster)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pvm_proto::xdr::XdrWriter;

    const A: Tid = Tid(0x40001);
    const B: Tid = Tid(0x40002);

    #[test]
    fn tasker_and_hoster_slots_follow_the_legacy_codes() {
        let mut r = Registry::default();
        assert_eq!(Registry::register_slot(&mut r.tasker, A, true), 0);
        assert_eq!(Registry::register_slot(&mut r.tasker, B, true), -30);
        assert_eq!(Registry::register_slot(&mut r.tasker, B, false), -31);
        assert_eq!(Registry::register_slot(&mut r.tasker, A, false), 0);
        assert_eq!(Registry::register_slot(&mut r.tasker, A, false), -31);
        assert_eq!(Registry::register_slot(&mut r.hoster, B, true), 0);
        assert!(r.may_send_sm(B));
        assert!(!r.may_send_sm(A));
    }

    fn tracer_body(regme: i32) -> Vec<u8> {
        let mut w = XdrWriter::new();
        w.int(regme).int(1).int(2).int(3).int(4).string("@@@@").int(5).int(6);
        w.into_inner()
    }

    #[test]
    fn tracer_registration_and_truncated_bodies() {
        let mut r = Registry::default();
        assert_eq!(r.register_tracer(A, &tracer_body(1)), Ok(0));
        let t = r.tracer.clone().unwrap();
        assert_eq!(
            (t.trcctx, t.trctag, t.outctx, t.outtag, t.tmask.as_str(), t.tbuf, t.topt),
            (1, 2, 3, 4, "@@@@", 5, 6)
        );
        // A second tracer: PvmAlready even with a body cut after regme.
        assert_eq!(r.register_tracer(B, &tracer_body(1)[..4]), Ok(-30));
        assert_eq!(r.register_tracer(B, &tracer_body(0)[..4]), Ok(-31));
        assert_eq!(r.register_tracer(A, &tracer_body(0)[..4]), Ok(0));
        assert!(r.register_tracer(A, &tracer_body(1)[..10]).is_err());
        assert!(r.tracer.is_none());
        assert!(r.register_tracer(A, &[]).is_err());
    }

    #[test]
    fn registrations_end_with_their_task_and_handoff_needs_the_rm() {
        let mut r = Registry::default();
        assert_eq!(r.register_sched(A), Tid::NONE);
        assert!(!r.handoff(B, B));
        assert!(r.handoff(A, B));
        assert_eq!(r.sched, B);
        r.tasker = B;
        let logs = r.task_exited(B);
        assert_eq!(logs.len(), 2, "{logs:?}");
        assert!(logs[0].contains("places tasks itself"));
        assert_eq!((r.sched, r.tasker), (Tid::NONE, Tid::NONE));
        assert!(r.task_exited(A).is_empty());
    }
}
