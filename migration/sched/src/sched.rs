//! The scheduler's decisions, without PVM calls or clocks of its own: owner state per host
//! with hysteresis, placement of new tasks, and which guests to move when an owner returns.
//! `rm.rs` feeds it measurements and carries out what it decides.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::load::Sample;
use crate::policy::Policy;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    Idle,
    Busy,
}

impl Owner {
    pub fn name(self) -> &'static str {
        match self {
            Owner::Idle => "idle",
            Owner::Busy => "busy",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Host {
    pub name: String,
    pub dtid: i32,
    pub arch: String,
    pub sample: Sample,
    /// The owner state in force (after hysteresis and the explicit switch).
    pub owner: Owner,
    /// `pvm-sched owner HOST busy|idle`; None = follow the signals.
    pub forced: Option<Owner>,
    /// Why the owner state is what it is (for `hosts` and the log).
    pub why: String,
    busy_since: Option<Instant>,
    last_busy: Option<Instant>,
}

/// A task the scheduler placed.
#[derive(Debug, Clone)]
pub struct Guest {
    pub tid: i32,
    /// pvmd tid of the host it runs on.
    pub host: i32,
    pub pid: i32,
    /// Checkpointed and stopped because there was nowhere to go.
    pub held: bool,
    /// A move is under way.
    pub moving: bool,
}

/// An owner state change the scheduler must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub host: usize,
    pub to: Owner,
    pub why: String,
}

/// What to do with a guest whose host's owner returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Evict {
    Move { tid: i32, to: usize },
    Hold { tid: i32 },
}

#[derive(Debug, Default)]
pub struct Sched {
    pub policy: Policy,
    pub hosts: Vec<Host>,
    pub guests: BTreeMap<i32, Guest>,
}

const PVM_TASK_HOST: i32 = 1;
const PVM_TASK_ARCH: i32 = 2;

impl Sched {
    pub fn new(policy: Policy) -> Sched {
        Sched {
            policy,
            hosts: Vec::new(),
            guests: BTreeMap::new(),
        }
    }

    pub fn add_host(&mut self, name: &str, dtid: i32, arch: &str) {
        if self.hosts.iter().any(|h| h.dtid == dtid) {
            return;
        }
        self.hosts.push(Host {
            name: name.to_string(),
            dtid,
            arch: arch.to_string(),
            sample: Sample::default(),
            owner: Owner::Idle,
            forced: None,
            why: "no signal yet".into(),
            busy_since: None,
            last_busy: None,
        });
    }

    pub fn remove_host(&mut self, dtid: i32) {
        self.hosts.retain(|h| h.dtid != dtid);
        self.guests.retain(|_, g| g.host != dtid);
    }

    pub fn host_index(&self, dtid: i32) -> Option<usize> {
        self.hosts.iter().position(|h| h.dtid == dtid)
    }

    pub fn host_by_name(&self, name: &str) -> Option<usize> {
        self.hosts.iter().position(|h| h.name == name)
    }

    pub fn guests_on(&self, dtid: i32) -> usize {
        self.guests.values().filter(|g| g.host == dtid && !g.held).count()
    }

    /// The busy signal of one sample under the policy, with its reason.
    fn signal(&self, s: &Sample) -> Option<String> {
        if let Some(b) = s.owner_busy {
            return b.then(|| "owner state reported busy".to_string());
        }
        if !self.policy.signals {
            return None;
        }
        if s.owner_load > self.policy.owner_load {
            return Some(format!(
                "owner load {:.2} > {:.2} (not from guests)",
                s.owner_load, self.policy.owner_load
            ));
        }
        if self.policy.sessions && s.sessions > 0 {
            return Some(format!("{} interactive session(s)", s.sessions));
        }
        None
    }

    /// Takes a new sample of host `i`; returns the owner change it causes, if any.
    pub fn observe(&mut self, i: usize, s: Sample, now: Instant) -> Option<Change> {
        let sig = self.signal(&s);
        let (busy_after, idle_after) = (self.policy.busy_after, self.policy.idle_after);
        let h = self.hosts.get_mut(i)?;
        h.sample = s;
        if let Some(f) = h.forced {
            return Self::set(i, h, f, "set by `pvm-sched owner`".into());
        }
        match sig {
            Some(why) => {
                h.last_busy = Some(now);
                let since = *h.busy_since.get_or_insert(now);
                if h.owner == Owner::Idle && now.duration_since(since) >= busy_after {
                    return Self::set(i, h, Owner::Busy, why);
                }
                None
            }
            None => {
                h.busy_since = None;
                let quiet = h.last_busy.map_or(Duration::MAX, |t| now.duration_since(t));
                if h.owner == Owner::Busy && quiet >= idle_after {
                    return Self::set(
                        i,
                        h,
                        Owner::Idle,
                        format!("no owner activity for {:.1} s", quiet.as_secs_f64()),
                    );
                }
                None
            }
        }
    }

    fn set(i: usize, h: &mut Host, to: Owner, why: String) -> Option<Change> {
        if h.owner == to {
            return None;
        }
        h.owner = to;
        h.why = why.clone();
        Some(Change { host: i, to, why })
    }

    /// `pvm-sched owner HOST busy|idle|auto`.
    pub fn force(&mut self, i: usize, to: Option<Owner>) -> Option<Change> {
        let h = self.hosts.get_mut(i)?;
        h.forced = to;
        match to {
            Some(o) => Self::set(i, h, o, "set by `pvm-sched owner`".into()),
            None => {
                h.why = "following the signals again".into();
                None
            }
        }
    }

    /// Whether host `i` may take one more guest; the reason if not.
    fn refuse(&self, i: usize, extra: usize) -> Option<String> {
        let h = &self.hosts[i];
        if h.owner == Owner::Busy {
            return Some(format!("owner busy ({})", h.why));
        }
        if self.policy.max_guests > 0 && self.guests_on(h.dtid) + extra >= self.policy.max_guests {
            return Some(format!("{} guests already", self.policy.max_guests));
        }
        if h.sample.free_mb > 0 && h.sample.free_mb < self.policy.min_free_mb {
            return Some(format!("only {} MB free", h.sample.free_mb));
        }
        None
    }

    fn cost(&self, i: usize, extra: usize) -> (i64, i32) {
        let h = &self.hosts[i];
        let c = h.sample.owner_load + (self.guests_on(h.dtid) + extra) as f64;
        (
            (c * 1000.0) as i64,
            -self.policy.priority.get(&h.name).copied().unwrap_or(0),
        )
    }

    /// Hosts for `count` new tasks of a spawn with these flags and `where` (PvmTaskHost:
    /// that host, even if its owner is busy — the user asked for it; PvmTaskArch: hosts of
    /// that architecture). Each entry: host index and the reason. Empty: nowhere at all.
    pub fn place(&self, flags: i32, where_: &str, count: usize) -> Vec<(usize, String)> {
        // `where` may carry a working directory after a colon (`host:dir`); the pvmd uses it.
        let where_ = where_.split(':').next().unwrap_or("");
        let host_only = flags & PVM_TASK_HOST != 0 && !where_.is_empty();
        let arch_only = flags & PVM_TASK_ARCH != 0 && !where_.is_empty();
        let cands: Vec<usize> = (0..self.hosts.len())
            .filter(|&i| !host_only || self.hosts[i].name == where_)
            .filter(|&i| !arch_only || self.hosts[i].arch == where_)
            .collect();
        let mut extra = vec![0usize; self.hosts.len()];
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            let ok: Vec<usize> = cands
                .iter()
                .copied()
                .filter(|&i| self.refuse(i, extra[i]).is_none())
                .collect();
            let (pool, note) = if !ok.is_empty() {
                (ok, "")
            } else if host_only {
                (cands.clone(), " (requested host, although its owner is busy)")
            } else {
                (cands.clone(), " (no idle host: least loaded)")
            };
            let Some(&best) = pool.iter().min_by_key(|&&i| (self.cost(i, extra[i]), i)) else {
                break;
            };
            let h = &self.hosts[best];
            out.push((
                best,
                format!(
                    "owner {}, load {:.2}, {} guests, {} MB free{note}",
                    h.owner.name(),
                    h.sample.owner_load,
                    self.guests_on(h.dtid) + extra[best],
                    h.sample.free_mb
                ),
            ));
            extra[best] += 1;
        }
        out
    }

    /// Where the guests of host `i` go now that its owner is busy.
    pub fn evictions(&self, i: usize) -> Vec<Evict> {
        let Some(h) = self.hosts.get(i) else { return Vec::new() };
        let mut extra = vec![0usize; self.hosts.len()];
        let mut out = Vec::new();
        for g in self
            .guests
            .values()
            .filter(|g| g.host == h.dtid && !g.moving && !g.held)
        {
            let best = (0..self.hosts.len())
                .filter(|&j| j != i && self.refuse(j, extra[j]).is_none())
                .min_by_key(|&j| (self.cost(j, extra[j]), j));
            match best {
                Some(j) => {
                    extra[j] += 1;
                    out.push(Evict::Move { tid: g.tid, to: j });
                }
                None => out.push(Evict::Hold { tid: g.tid }),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn four() -> Sched {
        let mut s = Sched::new(Policy::default());
        for k in 1..=4 {
            s.add_host(&format!("h{k}"), k << 18, "LINUX64");
        }
        s
    }

    fn sample(load: f64) -> Sample {
        Sample {
            owner_load: load,
            free_mb: 1000,
            ..Sample::default()
        }
    }

    #[test]
    fn placement_spreads_by_load_and_skips_busy_owners() {
        let mut s = four();
        let t = Instant::now();
        s.observe(0, sample(0.5), t);
        s.observe(1, sample(0.0), t);
        s.observe(2, sample(0.1), t);
        assert!(s.observe(3, sample(3.0), t).is_some(), "h4's owner is at work");
        let p: Vec<usize> = s.place(0, "", 4).into_iter().map(|(i, _)| i).collect();
        assert_eq!(p, vec![1, 2, 0, 1]);
        let only: Vec<usize> = s.place(1, "h4", 2).into_iter().map(|(i, _)| i).collect();
        assert_eq!(only, vec![3, 3], "PvmTaskHost is honoured");
        let wd: Vec<usize> = s.place(1, "h3:/tmp", 1).into_iter().map(|(i, _)| i).collect();
        assert_eq!(wd, vec![2], "a working directory after the host name");
        assert!(s.place(2, "SUN4", 1).is_empty(), "no host of that arch");
    }

    #[test]
    fn hysteresis_keeps_a_host_busy_until_quiet_long_enough() {
        let mut s = four();
        s.policy.idle_after = Duration::from_secs(10);
        let t = Instant::now();
        assert_eq!(s.observe(0, sample(2.0), t).unwrap().to, Owner::Busy);
        assert!(s.observe(0, sample(0.0), t + Duration::from_secs(5)).is_none());
        let c = s.observe(0, sample(0.0), t + Duration::from_secs(11)).unwrap();
        assert_eq!(c.to, Owner::Idle);
    }

    #[test]
    fn forced_owner_wins_over_signals() {
        let mut s = four();
        let t = Instant::now();
        assert_eq!(s.force(1, Some(Owner::Busy)).unwrap().to, Owner::Busy);
        assert!(s.observe(1, sample(0.0), t).is_none());
        assert_eq!(s.hosts[1].owner, Owner::Busy);
        s.force(1, Some(Owner::Idle));
        assert_eq!(s.hosts[1].owner, Owner::Idle);
    }

    #[test]
    fn evictions_move_or_hold() {
        let mut s = four();
        for (tid, host) in [(1, 1 << 18), (2, 1 << 18), (3, 2 << 18)] {
            s.guests.insert(
                tid,
                Guest {
                    tid,
                    host,
                    pid: 0,
                    held: false,
                    moving: false,
                },
            );
        }
        s.force(0, Some(Owner::Busy));
        let e = s.evictions(0);
        assert_eq!(e, vec![Evict::Move { tid: 1, to: 2 }, Evict::Move { tid: 2, to: 3 }]);
        for i in 1..4 {
            s.force(i, Some(Owner::Busy));
        }
        assert_eq!(s.evictions(0), vec![Evict::Hold { tid: 1 }, Evict::Hold { tid: 2 }]);
    }
}
