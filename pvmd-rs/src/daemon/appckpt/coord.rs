//! A new coordinator when the coordinator's host dies (docs/migration.md §6.2,
//! docs/extensions.md "DM_CKPT record").
//!
//! The coordinator of an application's checkpoints (the pvmd of the task that asked, normally
//! the master's host) alone decided which epoch was committed; if its host died, nobody could
//! restart the application. Now, as it commits epoch N, it sends DM_CKPT phase *record* to
//! every other host of the commit (participants and copy holders): root, epoch, members and
//! where each image copy is, flags, and the list of hosts that got the record. The record is
//! sent just before the *commit* on the same FIFO link and stays *pending* there until that
//! commit arrives (an *abort*, or the coordinator's death first, drops it): an epoch that was
//! not committed is never used.
//!
//! When the coordinator's host is deleted (beats, host table), every holder computes the same
//! choice: the lowest host index among the holders that are still in its host table. That
//! host alone takes the record over as if it had coordinated the checkpoint (the record moves
//! into its `apps`) and, if the application asked for automatic restart, runs the usual
//! restart (list, rollback, restores, resume). The others do nothing; if the chosen host dies
//! too, the next host deletion makes the next one choose itself. A restart never starts while
//! the coordinator is in the host table: a manual `pvm-migrate restart --app` on a holder is
//! refused then (ask the coordinator), and accepted once it is gone.
//!
//! Holders of a record of an application that restarts by itself send the coordinator the
//! same beats it sends them (DM_MARK kind 3), so its death is seen within about a second even
//! when no other traffic goes there.

use std::time::Instant;

use pvm_proto::xdr::{XdrReader, XdrWriter};
use pvm_proto::Tid;

use super::{flags, phase, safe_name, AppRec, CkptReq, Committed, Copy, DM_CKPT, MAX_MEMBERS};
use crate::daemon::{AuthFiles, Daemon, Out};

/// A committed epoch as another host's coordinator recorded it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Record {
    /// The coordinator that committed it.
    pub coord: u32,
    pub op: i32,
    pub root: Tid,
    pub auto: bool,
    pub replicas: i32,
    pub epoch: i32,
    pub members: Vec<(Tid, u32)>,
    pub copies: Vec<Copy>,
    /// Every host that got the record (the coordinator excluded): the takeover candidates.
    pub holders: Vec<u32>,
}

/// Records of this pvmd (a holder).
#[derive(Debug, Default)]
pub struct CoordState {
    /// Committed records by root (the newest commit of each application).
    held: std::collections::BTreeMap<i32, Record>,
    /// Records whose commit has not come yet (at most a few: one per coordinator).
    pending: Vec<Record>,
}

impl Record {
    /// `int kind (1); int op; int epoch; int phase (7); int root; int replicas; int nmembers;
    /// nmembers x {int tid; int host}; int nholders; nholders x int host; int flags; int ncopies;
    /// ncopies x {int tid; int host; string name}`: a CkptReq followed by the copies.
    pub fn emit(&self) -> Vec<u8> {
        let mut b = CkptReq {
            op: self.op,
            epoch: self.epoch,
            phase: phase::RECORD,
            root: self.root,
            replicas: self.replicas,
            tids: self.members.clone(),
            hosts: self.holders.clone(),
        }
        .emit();
        let mut w = XdrWriter::new();
        w.int(if self.auto { flags::AUTO_RESTART } else { 0 });
        w.int(self.copies.len() as i32);
        for k in &self.copies {
            w.int(k.tid.0).int(k.host as i32).string(&k.name);
        }
        b.extend_from_slice(&w.into_inner());
        b
    }

    /// The rest of a record after its CkptReq part (`r` is past it).
    pub fn parse_rest(coord: u32, q: &CkptReq, r: &mut XdrReader<'_>) -> Option<Record> {
        let fl = r.int("flags").ok()?;
        let n = r.count("ncopies", 12).ok()?.min(MAX_MEMBERS);
        let mut copies = Vec::with_capacity(n);
        for _ in 0..n {
            let (tid, host, name) = (r.int("tid").ok()?, r.int("host").ok()?, r.string("name").ok()?);
            if safe_name(&name) {
                copies.push(Copy {
                    tid: Tid(tid),
                    host: host as u32,
                    name,
                });
            }
        }
        Some(Record {
            coord,
            op: q.op,
            root: q.root,
            auto: fl & flags::AUTO_RESTART != 0,
            replicas: q.replicas,
            epoch: q.epoch,
            members: q.tids.clone(),
            copies,
            holders: q.hosts.clone(),
        })
    }
}

/// Who takes over a record whose coordinator is `coord`: nobody while the coordinator is
/// alive; else the lowest holder still alive. Every holder computes the same answer from the
/// same record once its host table agrees (a holder that still believes a dead lower holder
/// alive waits; that host's deletion makes it choose again).
pub fn takeover_choice(coord: u32, holders: &[u32], alive: impl Fn(u32) -> bool) -> Option<u32> {
    if alive(coord) {
        return None;
    }
    holders.iter().copied().filter(|h| *h != coord && alive(*h)).min()
}

impl<A: AuthFiles> Daemon<A> {
    /// Coordinator, as it sends the commit of epoch `c.epoch` to `hosts`: the record first,
    /// on the same links (hook in `app_next_stage`).
    pub(super) fn coord_send_record(&mut self, hosts: &std::collections::BTreeSet<u32>, out: &mut Vec<Out>) {
        let me = self.host.index;
        let Some(c) = self.app.coord.as_ref() else { return };
        let auto = self.app.apps.get(&c.root.0).is_some_and(|a| a.auto);
        let holders: Vec<u32> = hosts.iter().copied().filter(|h| *h != me).collect();
        let rec = Record {
            coord: me,
            op: c.op,
            root: c.root,
            auto,
            replicas: c.replicas,
            epoch: c.epoch,
            members: c.members.clone(),
            copies: c.copies.clone(),
            holders: holders.clone(),
        };
        // This pvmd coordinates the application now: a record it held from an earlier
        // coordinator is stale (a takeover from it would go back to an older epoch).
        self.app.coordrec.held.remove(&c.root.0);
        let body = rec.emit();
        for h in holders {
            self.dm_send(h, DM_CKPT, 0, &body, out);
        }
    }

    /// Holder: a record from coordinator `coord` (DM_CKPT phase record); kept pending until
    /// its commit.
    pub(super) fn coord_record(&mut self, coord: u32, q: &CkptReq, r: &mut XdrReader<'_>, out: &mut Vec<Out>) {
        let Some(rec) = Record::parse_rest(coord, q, r) else {
            return Self::app_log(format!("bad DM_CKPT record from host {coord}"), out);
        };
        let p = &mut self.app.coordrec.pending;
        p.retain(|x| x.coord != coord);
        if p.len() >= 16 {
            p.remove(0);
        }
        p.push(rec);
    }

    /// Holder: the commit or abort of operation `op` of coordinator `coord` (hook in the
    /// participant's commit/abort).
    pub(super) fn coord_commit_seen(&mut self, coord: u32, op: i32, commit: bool, out: &mut Vec<Out>) {
        let p = &mut self.app.coordrec.pending;
        let Some(i) = p.iter().position(|x| x.coord == coord && x.op == op) else {
            return;
        };
        let rec = p.remove(i);
        if !commit {
            return;
        }
        // The coordinator of this application is `coord` now: an own record of it (this pvmd
        // coordinated it before, or took it over) must not restart it again.
        if coord != self.host.index {
            self.app.apps.remove(&rec.root.0);
        }
        Self::app_log(
            format!(
                "holding the record of application t{:x} epoch {} (coordinator host {coord}, {} tasks, {} copies{})",
                rec.root.bits(),
                rec.epoch,
                rec.members.len(),
                rec.copies.len(),
                if rec.auto { ", restarts by itself" } else { "" }
            ),
            out,
        );
        // Watch the coordinator (app_watched): also without automatic restart, so that a
        // manual restart on a holder is accepted soon after the coordinator's death.
        self.app.next_beat.get_or_insert_with(Instant::now);
        self.app.coordrec.held.insert(rec.root.0, rec);
    }

    /// Coordinators of held records (the holders beat them: hook in `app_watched`).
    pub(super) fn coord_watched(&self) -> Vec<u32> {
        self.app.coordrec.held.values().map(|r| r.coord).collect()
    }

    /// Makes this pvmd the coordinator of a held record: it moves into `apps`.
    fn coord_adopt(&mut self, root: i32) -> Option<Record> {
        let rec = self.app.coordrec.held.remove(&root)?;
        self.app.apps.insert(
            root,
            AppRec {
                root: rec.root,
                auto: rec.auto,
                replicas: rec.replicas,
                last: rec.epoch,
                committed: Some(Committed {
                    epoch: rec.epoch,
                    members: rec.members.clone(),
                    copies: rec.copies.clone(),
                }),
            },
        );
        Some(rec)
    }

    /// A host was deleted (hook at the end of `app_host_gone`): a pending record of it is
    /// dropped (its commit never came), and every held record of an application that restarts
    /// by itself whose coordinator is gone is taken over here when this host is the choice.
    /// Records without automatic restart stay held: any holder takes one over on a manual
    /// restart once the coordinator is gone.
    pub(super) fn coord_host_gone(&mut self, host: u32, out: &mut Vec<Out>) {
        self.app.coordrec.pending.retain(|x| x.coord != host);
        let me = self.host.index;
        let lost: Vec<(i32, u32, i32, bool, Option<u32>)> = self
            .app
            .coordrec
            .held
            .values()
            .filter(|r| !self.app_host_alive(r.coord))
            .map(|r| {
                let choice = takeover_choice(r.coord, &r.holders, |h| self.app_host_alive(h));
                (r.root.0, r.coord, r.epoch, r.auto, choice)
            })
            .collect();
        for (root, coord, epoch, auto, choice) in lost {
            if auto && choice == Some(me) {
                if self.coord_adopt(root).is_none() {
                    continue;
                }
                Self::app_log(
                    format!(
                        "coordinator host {coord} lost: host {me} takes over restart of application t{root:x} from epoch {epoch}"
                    ),
                    out,
                );
                if self.app.coord.is_some() {
                    if !self.app.queued.contains(&root) {
                        self.app.queued.push(root);
                    }
                } else {
                    self.app_restart(root, None, out);
                }
            } else if host == coord {
                let what = match (auto, choice) {
                    (true, Some(m)) => format!("host {m} takes over its restart"),
                    (true, None) => "no holder left to restart it".to_string(),
                    (false, _) => "no automatic restart: pvm-migrate restart --app on a holder".to_string(),
                };
                Self::app_log(
                    format!("coordinator host {coord} lost: application t{root:x} epoch {epoch} held here; {what}"),
                    out,
                );
            }
        }
    }

    /// A rollback of application `root` from coordinator `coord` while this pvmd still takes
    /// part in a checkpoint of the same application by another coordinator (hook in the
    /// participant's rollback): that coordinator is gone in the eyes of the new one (it took
    /// over only after deleting it) and this pvmd simply has not seen the deletion yet. The
    /// old checkpoint cannot complete any more (its tasks are about to be killed): it is
    /// dropped as on the old coordinator's death, so that the restart is not refused as
    /// "another operation is running".
    pub(super) fn coord_rollback_supersedes(&mut self, coord: u32, root: Tid, out: &mut Vec<Out>) {
        let Some(p) = self
            .app
            .part
            .take_if(|p| p.coord != coord && p.root == root && p.kind == super::PartKind::Begin)
        else {
            return;
        };
        let n = self.app_let_go(&p, out);
        let _ = std::fs::remove_dir_all(super::storage_root().join(format!("t{:x}/e{}", p.root.bits(), p.epoch)));
        Self::app_log(
            format!(
                "op {} epoch {} of coordinator host {}: dropped for the restart by host {coord}; {n} tasks resumed",
                p.op, p.epoch, p.coord
            ),
            out,
        );
    }

    /// TM_RESTART of an application this pvmd does not coordinate (hook in `app_tm_restart`):
    /// takes a held record over when its coordinator is gone. `Err` says why not.
    pub(super) fn coord_manual_restart(&mut self, root: i32) -> Result<bool, String> {
        if self.app.apps.get(&root).is_some_and(|a| a.committed.is_some()) {
            return Ok(false);
        }
        let Some(rec) = self.app.coordrec.held.get(&root) else {
            return Ok(false);
        };
        let me = self.host.index;
        if self.app_host_alive(rec.coord) {
            return Err(format!(
                "application t{root:x} is coordinated by host {} which is alive: ask it",
                rec.coord
            ));
        }
        if rec.auto {
            if let Some(m) = takeover_choice(rec.coord, &rec.holders, |h| self.app_host_alive(h)) {
                if m != me {
                    return Err(format!(
                        "application t{root:x} restarts by itself: host {m} takes it over"
                    ));
                }
            }
        }
        Ok(self.coord_adopt(root).is_some())
    }

    /// Whether TM_RESTART for `root` is for an application (a held record counts).
    pub(super) fn coord_holds(&self, root: i32) -> bool {
        self.app.coordrec.held.contains_key(&root)
    }

    /// The epoch a new coordinator of `root` counts from (a held record's; hook in
    /// `app_tm_ckpt`): epoch numbers keep growing across coordinators.
    pub(super) fn coord_epoch_base(&self, root: i32) -> i32 {
        self.app.coordrec.held.get(&root).map_or(0, |r| r.epoch)
    }
}

#[cfg(test)]
mod tests {
    use super::super::REQ;
    use super::*;

    #[test]
    fn takeover_is_the_lowest_surviving_holder_and_never_while_the_coordinator_lives() {
        let holders = [1, 3, 4];
        // The coordinator (2) is alive: nobody.
        assert_eq!(takeover_choice(2, &holders, |_| true), None);
        // 2 is gone: 1, whoever computes it.
        assert_eq!(takeover_choice(2, &holders, |h| h != 2), Some(1));
        // 2 and 1 are gone: 3.
        assert_eq!(takeover_choice(2, &holders, |h| h != 2 && h != 1), Some(3));
        // Everyone is gone.
        assert_eq!(takeover_choice(2, &holders, |_| false), None);
        // The coordinator in its own holder list is never chosen.
        assert_eq!(takeover_choice(2, &[2, 4], |h| h != 2), Some(4));
        // Order of the list does not matter.
        assert_eq!(takeover_choice(2, &[4, 3, 1], |h| h != 2), Some(1));
    }

    #[test]
    fn record_round_trip_and_truncation() {
        let rec = Record {
            coord: 2,
            op: 7,
            root: Tid(0x80001),
            auto: true,
            replicas: 1,
            epoch: 3,
            members: vec![(Tid(0x80001), 2), (Tid(0x40002), 1)],
            copies: vec![
                Copy {
                    tid: Tid(0x80001),
                    host: 3,
                    name: "t80001/e3/t80001".into(),
                },
                Copy {
                    tid: Tid(0x40002),
                    host: 1,
                    name: "t80001/e3/t40002".into(),
                },
            ],
            holders: vec![1, 3, 4],
        };
        let b = rec.emit();
        let mut r = XdrReader::new(&b);
        assert_eq!(r.int("kind").unwrap(), REQ);
        let q = CkptReq::parse(&mut r).unwrap();
        assert_eq!(q.phase, phase::RECORD);
        assert_eq!(Record::parse_rest(2, &q, &mut r), Some(rec));
        // Cut anywhere: refused, never a panic.
        for n in 0..b.len() - 3 {
            let mut r = XdrReader::new(&b[..n]);
            let ok = r.int("kind").is_ok()
                && CkptReq::parse(&mut r).is_some_and(|q| Record::parse_rest(2, &q, &mut r).is_some());
            assert!(!ok, "{n}");
        }
    }

    // ---- a lone daemon (no network: every other host counts as gone) -------------------------

    struct Auth;

    impl AuthFiles for Auth {
        fn write_task_auth(&mut self, _: &str) -> std::io::Result<()> {
            Ok(())
        }
        fn create_pvmd_auth(&mut self) -> std::io::Result<String> {
            Ok("/tmp/pvmtmp000043.1".into())
        }
        fn pvmd_auth_written(&mut self, _: &str) -> std::io::Result<bool> {
            Ok(true)
        }
        fn remove(&mut self, _: &str) {}
    }

    fn phase_body(op: i32, epoch: i32, ph: i32, root: Tid) -> Vec<u8> {
        CkptReq {
            op,
            epoch,
            phase: ph,
            root,
            replicas: 1,
            tids: Vec::new(),
            hosts: Vec::new(),
        }
        .emit()
    }

    fn logs(out: &[Out]) -> String {
        out.iter()
            .filter_map(|o| match o {
                Out::Log(l) => Some(l.as_str()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// A record counts only with its commit; an abort or the coordinator's death before the
    /// commit leaves the older committed record; without automatic restart nobody restarts by
    /// itself, and a manual restart takes the record over once the coordinator is gone.
    #[test]
    fn only_committed_records_are_held_and_taken_over() {
        let mut d = Daemon::new(
            crate::daemon::HostConfig::master("vm", "LINUX64", "7f000001:801e"),
            Auth,
            0,
        );
        let me = d.host.index;
        // A root no real application has (the commit's clean-up of older epochs under the image
        // store finds nothing of it).
        let root = Tid(0x1c_7f01);
        let rec = |op: i32, epoch: i32, auto: bool| Record {
            coord: 7,
            op,
            root,
            auto,
            replicas: 1,
            epoch,
            members: vec![(root, 7)],
            copies: vec![Copy {
                tid: root,
                host: 9,
                name: format!("t{:x}/e{epoch}/t{:x}", root.bits(), root.bits()),
            }],
            holders: vec![me, 9],
        };
        let mut out = Vec::new();
        d.app_dm(7, DM_CKPT, 0, &rec(5, 3, false).emit(), &mut out);
        assert!(d.app.coordrec.held.is_empty(), "pending until the commit");
        d.app_dm(7, DM_CKPT, 1, &phase_body(5, 3, phase::COMMIT, root), &mut out);
        assert_eq!(d.app.coordrec.held.get(&root.0).map(|r| r.epoch), Some(3));
        assert_eq!(d.coord_epoch_base(root.0), 3);
        // Epoch 4 aborted: 3 stays.
        d.app_dm(7, DM_CKPT, 0, &rec(6, 4, false).emit(), &mut out);
        d.app_dm(7, DM_CKPT, 2, &phase_body(6, 4, phase::ABORT, root), &mut out);
        assert_eq!(d.app.coordrec.held.get(&root.0).map(|r| r.epoch), Some(3));
        // Epoch 5 recorded, then the coordinator dies before its commit: 3 stays, and a late
        // commit of a dropped record changes nothing.
        d.app_dm(7, DM_CKPT, 0, &rec(8, 5, false).emit(), &mut out);
        let mut out = Vec::new();
        d.coord_host_gone(7, &mut out);
        assert!(d.app.coordrec.pending.is_empty());
        d.app_dm(7, DM_CKPT, 3, &phase_body(8, 5, phase::COMMIT, root), &mut out);
        assert_eq!(d.app.coordrec.held.get(&root.0).map(|r| r.epoch), Some(3));
        // No automatic restart: said, not done.
        let l = logs(&out);
        assert!(
            l.contains("coordinator host 7 lost") && l.contains("no automatic restart"),
            "{l}"
        );
        assert!(d.app.coord.is_none() && d.app.apps.is_empty());
        // By command: taken over (the coordinator is gone), from epoch 3.
        assert_eq!(d.coord_manual_restart(root.0), Ok(true));
        assert_eq!(
            d.app
                .apps
                .get(&root.0)
                .and_then(|a| a.committed.as_ref())
                .map(|c| c.epoch),
            Some(3)
        );
        assert!(d.app.coordrec.held.is_empty());
    }

    /// With automatic restart, the only surviving holder takes over and restarts at once
    /// (here the only copy is on a dead host: the restart fails cleanly with the reason).
    #[test]
    fn the_chosen_holder_restarts_by_itself() {
        let mut d = Daemon::new(
            crate::daemon::HostConfig::master("vm", "LINUX64", "7f000001:801e"),
            Auth,
            0,
        );
        let me = d.host.index;
        let root = Tid(0x1c_7f02);
        let rec = Record {
            coord: 7,
            op: 1,
            root,
            auto: true,
            replicas: 1,
            epoch: 2,
            members: vec![(root, 7)],
            copies: vec![Copy {
                tid: root,
                host: 9,
                name: format!("t{:x}/e2/t{:x}", root.bits(), root.bits()),
            }],
            holders: vec![9, me],
        };
        let mut out = Vec::new();
        d.app_dm(7, DM_CKPT, 0, &rec.emit(), &mut out);
        d.app_dm(7, DM_CKPT, 1, &phase_body(1, 2, phase::COMMIT, root), &mut out);
        let mut out = Vec::new();
        d.coord_host_gone(7, &mut out);
        let l = logs(&out);
        assert!(
            l.contains(&format!(
                "coordinator host 7 lost: host {me} takes over restart of application t{:x} from epoch 2",
                root.bits()
            )),
            "{l}"
        );
        assert!(l.contains("no surviving copy of epoch 2"), "{l}");
        // Taken over once: a later host deletion does not start it again.
        let mut out = Vec::new();
        d.coord_host_gone(9, &mut out);
        assert!(!logs(&out).contains("takes over"));
    }
}
