//! Applications the scheduler keeps restartable: which jobs it checkpoints (whole-application
//! checkpoints, docs/migration.md §5), and what it expects after a host failure (§6).
//!
//! An application is named by its root tid: the top of the chain of parents, going up from a
//! guest, as long as each task was started by a pvmd (TF_FORKD). A job's front end that
//! connected on its own (a shell command that spawned the master) is not part of it: it could
//! not be restored (its process is nobody's child), so the checkpoint would be refused.
//! Pure bookkeeping; the PVM calls are in `rm.rs`.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant, SystemTime};

/// Task flag: started by a pvmd (pvm_tasks `ti_flag`, as the pvmd lists it).
pub const TF_FORKD: i32 = 2;
/// Longest chain of parents followed (a bound against a cycle in a bad task list).
const MAX_DEPTH: usize = 64;
/// After a host failure, how long the automatic restart may take before the scheduler asks
/// for it itself (TM_RESTART), and how long that may take before it gives up.
pub const RESTART_WAIT: Duration = Duration::from_secs(12);

/// One application the scheduler checkpoints.
#[derive(Debug, Clone)]
pub struct App {
    pub root: i32,
    /// Last committed epoch (None: none yet).
    pub epoch: Option<i32>,
    /// When it was taken (wall clock, for `pvm-sched hosts`), and how long it took.
    pub taken: Option<(SystemTime, Duration)>,
    /// Its tasks and the pvmd tid of the host each was last seen on (the guests that belong
    /// to it and the root). Kept until a task's exit is reported, so that a host failure
    /// still finds the tasks it took after they dropped out of the task list.
    pub tasks: BTreeMap<i32, i32>,
    pub next: Instant,
    /// The last failed checkpoint's reason (shown; the next try is at the next interval).
    pub last_error: Option<String>,
    /// A checkpoint helper is at work for it.
    pub running: bool,
}

/// A restart the scheduler waits for after a host failure.
#[derive(Debug, Clone)]
pub struct Restart {
    pub root: i32,
    pub epoch: i32,
    /// Tasks that ran on the lost host.
    pub lost: Vec<i32>,
    pub host: String,
    pub dead_dtid: i32,
    pub since: Instant,
    /// The scheduler asked the coordinator itself (the automatic restart did not show).
    pub asked: bool,
}

/// The root of `tid`'s application: up the parents while they were started by a pvmd.
/// `tasks` maps tid to (parent tid, flags).
pub fn root_of(tid: i32, tasks: &HashMap<i32, (i32, i32)>) -> i32 {
    let mut cur = tid;
    for _ in 0..MAX_DEPTH {
        match tasks.get(&cur) {
            Some(&(p, _)) if p > 0 && p != cur => match tasks.get(&p) {
                Some(&(_, f)) if f & TF_FORKD != 0 => cur = p,
                _ => break,
            },
            _ => break,
        }
    }
    cur
}

/// Groups guests by application root (roots in tid order, for stable logs).
pub fn group(guests: &[i32], tasks: &HashMap<i32, (i32, i32)>) -> BTreeMap<i32, Vec<i32>> {
    let mut m: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for &g in guests {
        m.entry(root_of(g, tasks)).or_default().push(g);
    }
    m
}

/// Roots started by one front end (a task no pvmd started) that started more than one of
/// them: such a job's coordination lives in the front end, which cannot be restored, so
/// restarting one of its parts alone would break it (the front end would miss or repeat
/// messages). Those roots are left out of checkpoints; a front end that started one root only
/// (and waits for its result) is fine. Returns the front ends and their roots.
pub fn shared_front_ends(
    roots: impl Iterator<Item = i32>,
    tasks: &HashMap<i32, (i32, i32)>,
) -> BTreeMap<i32, Vec<i32>> {
    let mut by_parent: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for r in roots {
        if let Some(&(p, _)) = tasks.get(&r) {
            if p > 0 && tasks.contains_key(&p) {
                by_parent.entry(p).or_default().push(r);
            }
        }
    }
    by_parent.retain(|_, v| v.len() > 1);
    by_parent
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_is_the_top_task_a_pvmd_started() {
        // front end 0x40001 (connected on its own) -> master 0x80001 -> workers.
        let t: HashMap<i32, (i32, i32)> = [
            (0x40001, (0, 4)),
            (0x80001, (0x40001, TF_FORKD | 4)),
            (0xc0001, (0x80001, TF_FORKD | 4)),
            (0x100001, (0x80001, TF_FORKD | 4)),
        ]
        .into_iter()
        .collect();
        assert_eq!(root_of(0xc0001, &t), 0x80001);
        assert_eq!(root_of(0x80001, &t), 0x80001);
        let g = group(&[0xc0001, 0x100001, 0x80001], &t);
        assert_eq!(g.len(), 1);
        assert_eq!(g[&0x80001].len(), 3);
        // Unknown task: its own root.
        assert_eq!(root_of(0x7, &t), 0x7);
    }

    #[test]
    fn a_front_end_with_several_roots_is_not_restartable() {
        // Front end 1 (not started by a pvmd) started workers 2 and 3 itself; front end 4
        // started master 5 only.
        let t: HashMap<i32, (i32, i32)> = [
            (1, (0, 4)),
            (2, (1, TF_FORKD)),
            (3, (1, TF_FORKD)),
            (4, (0, 4)),
            (5, (4, TF_FORKD)),
            (6, (5, TF_FORKD)),
        ]
        .into_iter()
        .collect();
        let g = group(&[2, 3, 5, 6], &t);
        let shared = shared_front_ends(g.keys().copied(), &t);
        assert_eq!(shared.len(), 1);
        assert_eq!(shared[&1], vec![2, 3]);
    }

    #[test]
    fn a_cycle_in_a_bad_list_ends() {
        let t: HashMap<i32, (i32, i32)> = [(1, (2, TF_FORKD)), (2, (1, TF_FORKD))].into_iter().collect();
        let r = root_of(1, &t);
        assert!(r == 1 || r == 2);
    }
}
