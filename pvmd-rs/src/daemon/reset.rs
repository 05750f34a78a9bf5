//! The mailbox side of the console's `reset` across hosts (ddpro.c: dm_db() TMDB_RESET,
//! dm_reset(), dm_resetack(); messages.md §4): the console kills the tasks itself, one
//! TM_KILL each; the master's mailbox must then lose what those tasks owned.
//!
//! * TMDB_RESET (from a task here, or as DM_DB from a slave) removes persistent entries whose
//!   owner is already gone, and dooms the live owners of persistent entries that are not on
//!   the no-reset list: when such an owner exits, its persistent entries go too. For an owner
//!   on another host the master sends DM_RESET(tid) to that host, which answers DM_RESETACK(tid)
//!   at once if the task is not there, else when it exits (the legacy's WT_RESET wait); the
//!   answer (or the loss of that host) tidies the owner's entries.
//! * So that plain (non-persistent) entries of a task of another host also go when it exits,
//!   the master asks that host for a PvmTaskExit notice (DM_NOTIFY) on the first entry the task
//!   puts, as the legacy's dm_db() does with its "dummy notify"; the DM_NOTIFYACK tidies.
//!
//! Both directions are the legacy's own messages, so legacy masters and slaves take part.

use pvm_proto::body::{self, Body};
use pvm_proto::codes::{Dm, PvmError};
use pvm_proto::Tid;

use super::netd::Wait;
use super::{AuthFiles, Daemon, Out};
use crate::notify::TASK_EXIT;
use crate::wire;

/// Most remote pvmds waiting for DM_RESETACK from this host at once (one per doomed owner).
const MAX_RESET_WATCHES: usize = 4096;

impl<A: AuthFiles> Daemon<A> {
    /// TMDB_RESET on the master's mailbox; `kill` = the requester is killing the tasks not in
    /// `keep`. Sends DM_RESET for doomed owners on other hosts.
    pub(super) fn mbox_reset(&mut self, class: &str, index: i32, kill: bool, keep: &[i32], out: &mut Vec<Out>) {
        let doomed = self.mbox.reset(class, index, kill, keep);
        let me = self.host.index;
        for owner in doomed.into_iter().map(Tid) {
            let host = owner.host();
            if host == me || !self.net.as_ref().is_some_and(|n| n.table.get(host).is_some()) {
                continue; // local owners: task_gone() tidies; unknown hosts: nothing to ask
            }
            let asked = self.net.as_ref().is_some_and(|n| {
                n.waits
                    .values()
                    .any(|w| matches!(w, Wait::Reset { tid, .. } if *tid == owner))
            });
            if asked {
                continue;
            }
            if let Some(wid) = self.add_wait(Wait::Reset { tid: owner, host }) {
                self.dm_send_body(host, Dm::Reset, wid, Body::DmReset(body::TidArg { tid: owner }), out);
            }
        }
    }

    /// TMDB_RESET arriving as DM_DB from a slave: the reply body (status 0, or PvmBadMsg).
    pub(super) fn mbox_reset_body(&mut self, raw: &[u8], db: &wire::DbReq, out: &mut Vec<Out>) -> Vec<u8> {
        match wire::parse_tid_list(&raw[db.rest..], "TMDB_RESET no-reset tids") {
            Ok(keep) => {
                self.mbox_reset(&db.class, db.index, db.flags != 0, &keep, out);
                wire::int_body(0)
            }
            Err(e) => {
                out.push(Out::Log(format!("dm_db() bad msg format in RESET: {e}")));
                wire::int_body(PvmError::BadMsg.code())
            }
        }
    }

    /// DM_RESET(tid) from `from` (the master): answer now if the task is not here, else when
    /// it exits.
    pub(super) fn dm_reset(&mut self, from: u32, wid: i32, tid: Tid, out: &mut Vec<Out>) {
        let here = tid.is_on_host(self.host.index) && self.tasks.contains_key(&tid.local());
        if here {
            if let Some(n) = self.net.as_mut() {
                if n.reset_watched.len() < MAX_RESET_WATCHES {
                    n.reset_watched.push((tid, from, wid));
                    return;
                }
            }
        }
        self.dm_send_body(from, Dm::ResetAck, wid, Body::DmResetAck(body::TidArg { tid }), out);
    }

    /// DM_RESETACK: the doomed owner is gone; so are its entries.
    pub(super) fn dm_resetack(&mut self, wid: i32) {
        if let Some(Wait::Reset { tid, .. }) = self.take_wait(wid) {
            self.mbox.tidy(tid.0);
        }
    }

    /// A mailbox entry was put for `owner`, a task of another host: make sure its exit is
    /// reported here (once per owner).
    pub(super) fn watch_mbox_owner(&mut self, owner: Tid, out: &mut Vec<Out>) {
        let host = owner.host();
        let Some(n) = self.net.as_ref() else { return };
        if host == self.host.index || n.table.get(host).is_none() {
            return;
        }
        if n.waits
            .values()
            .any(|w| matches!(w, Wait::MboxOwner { tid, .. } if *tid == owner))
        {
            return;
        }
        if let Some(wid) = self.add_wait(Wait::MboxOwner { tid: owner, host }) {
            let b = Body::DmNotify(body::DmNotify {
                what: TASK_EXIT,
                tid: owner,
            });
            self.dm_send_body(host, Dm::Notify, wid, b, out);
        }
    }

    /// Hook of `net_task_gone()`: masters that asked DM_RESET about this task get their answer.
    pub(super) fn reset_task_gone(&mut self, tid: Tid, out: &mut Vec<Out>) {
        let Some(n) = self.net.as_mut() else { return };
        let mut due = Vec::new();
        n.reset_watched.retain(|(t, h, w)| {
            if *t == tid {
                due.push((*h, *w));
                false
            } else {
                true
            }
        });
        for (h, w) in due {
            self.dm_send_body(h, Dm::ResetAck, w, Body::DmResetAck(body::TidArg { tid }), out);
        }
    }
}
