//! The running scheduler: a PVM task registered as resource manager. It answers the requests
//! tasks send to a resource manager (SM_SPAWN, SM_TASK, SM_CONFIG, SM_ADDHOST, SM_DELHOST,
//! SM_NOTIFY, SM_SCHED), starts tasks on the hosts it picks (SM_EXEC to that host's pvmd),
//! measures the hosts, and moves guests off a host whose owner returns (TM_MIGRATE from a
//! helper process per move, `pvm-sched move`, so that moves run in parallel and the
//! scheduler keeps answering), or checkpoints and stops them when there is nowhere to go.
//!
//! Commands from `pvm-sched owner|hosts` arrive as messages (TAG_CMD); the scheduler's tid is
//! in the PVM mailbox under "pvm-sched".

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::apps::{self, App, Restart, RESTART_WAIT};
use crate::error::SchedError;
use crate::ffi;
use crate::load::{self, Meter};
use crate::policy::Policy;
use crate::sched::{Evict, Guest, Owner, Sched};

pub const MBOX: &str = "pvm-sched";
/// Mailbox class read by the console's `hosts` command (format in docs/console.md,
/// "`pvm-sched.hosts`"): refreshed on every change, at most once per [`HOSTS_EVERY`].
pub const MBOX_HOSTS: &str = "pvm-sched.hosts";
/// Loads change at every tick: one update a second keeps the mailbox traffic bounded.
const HOSTS_EVERY: Duration = Duration::from_secs(1);
/// Command to the scheduler (a string) and its answer (a string).
pub const TAG_CMD: i32 = 0x5c5c_0001;
pub const TAG_REPLY: i32 = 0x5c5c_0002;
/// Our own notifications from the pvmd, forwarded to the tasks that asked the RM.
const TAG_N_TASKX: i32 = 0x5c5c_0011;
const TAG_N_HOSTDEL: i32 = 0x5c5c_0012;
const TAG_N_HOSTADD: i32 = 0x5c5c_0013;
/// A helper's result: `int ok (1/0); string text`.
pub const TAG_HELPER: i32 = 0x5c5c_0021;
/// A helper that has not reported after this long has failed.
const HELPER_LIMIT: Duration = Duration::from_secs(120);

const SM_SPAWN: i32 = 0x8004_0001u32 as i32;
const SM_EXEC: i32 = 0x8004_0002u32 as i32;
const SM_EXECACK: i32 = 0x8004_0003u32 as i32;
const SM_TASK: i32 = 0x8004_0004u32 as i32;
const SM_CONFIG: i32 = 0x8004_0005u32 as i32;
const SM_ADDHOST: i32 = 0x8004_0006u32 as i32;
const SM_DELHOST: i32 = 0x8004_0007u32 as i32;
const SM_ADD: i32 = 0x8004_0008u32 as i32;
const SM_ADDACK: i32 = 0x8004_0009u32 as i32;
const SM_NOTIFY: i32 = 0x8004_000au32 as i32;
const SM_TASKX: i32 = 0x8004_000bu32 as i32;
const SM_HOSTX: i32 = 0x8004_000cu32 as i32;
const SM_SCHED: i32 = 0x8004_000eu32 as i32;
const TIDPVMD: i32 = 0x8000_0000u32 as i32;
/// Host part of a tid.
const TIDHOST: i32 = 0x3ffc_0000;

const PVM_NOT_IMPL: i32 = -24;
const PVM_ALREADY: i32 = -30;
const PVM_NO_HOST: i32 = -6;
const PVM_BAD_PARAM: i32 = -2;
const PVM_NOTIFY_CANCEL: i32 = 256;

/// Wait for a pvmd's SM_EXECACK / SM_ADDACK. Shorter than the pvmds' default RM timeout
/// (5 s): while it waits, the scheduler answers nobody else.
const ACK_WAIT: Duration = Duration::from_secs(3);
/// Wait for SM_ADDACK (slave start-up; the pvmds wait at least 90 s for an RM's answer to
/// SM_ADDHOST).
const ADD_WAIT: Duration = Duration::from_secs(80);
/// Guests of a request, notify watchers, argv/env entries: bounds on what a request may ask.
const MAX_COUNT: i32 = 4096;
const MAX_WATCHES: usize = 65536;
/// After a failed move, wait this long before trying that guest again.
const RETRY: Duration = Duration::from_secs(2);
const MAX_RETRY: Duration = Duration::from_secs(30);

pub struct Options {
    pub policy: Policy,
    pub state_dir: Option<PathBuf>,
    pub log: Option<PathBuf>,
}

struct Watch {
    kind: i32,
    for_tid: i32,
    ctx: i32,
    tag: i32,
    on: i32,
}

enum Job {
    Move {
        to: usize,
    },
    Hold,
    /// A whole-application checkpoint of the application rooted at `tid`.
    Ckpt,
}

/// A helper task (`pvm-sched move|hold`) running on the guest's host for one operation.
struct Helper {
    /// The helper's tid.
    helper: i32,
    /// The guest it works on.
    tid: i32,
    job: Job,
    from: String,
    started: Instant,
}

struct Rm {
    me: i32,
    master: i32,
    can_migrate: bool,
    s: Sched,
    meter: Meter,
    state_dir: Option<PathBuf>,
    log: Option<std::fs::File>,
    watches: Vec<Watch>,
    helpers: Vec<Helper>,
    /// Guests whose last move failed: when, and how long to wait before the next try.
    failed: HashMap<i32, (Instant, Duration)>,
    next_wid: i32,
    t0: Instant,
    /// Jobs it placed, checkpointed every `ckpt_interval` (by application root).
    apps: BTreeMap<i32, App>,
    /// Restarts expected after host failures.
    restarts: Vec<Restart>,
    /// Measurement agents by host (pvmd tid) and their latest reports by host name.
    agents: HashMap<i32, i32>,
    reports: HashMap<String, (load::Sample, Instant, i32)>,
    /// The `pvm-sched.hosts` text last published and when (None: not yet).
    published: Option<(String, Instant)>,
    /// Front ends whose jobs cannot be checkpointed (said once each).
    unrestorable: std::collections::HashSet<i32>,
}

fn tids(v: &[i32]) -> String {
    let s: Vec<String> = v.iter().map(|t| format!("t{t:x}")).collect();
    if s.is_empty() {
        "-".into()
    } else {
        s.join(",")
    }
}

fn stamp() -> String {
    stamp_of(std::time::SystemTime::now())
}

fn stamp_of(at: std::time::SystemTime) -> String {
    let d = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let s = d.as_secs();
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        (s / 3600) % 24,
        (s / 60) % 60,
        s % 60,
        d.subsec_millis()
    )
}

impl Rm {
    fn log(&mut self, line: &str) {
        let l = format!("pvm-sched {} {line}", stamp());
        println!("{l}");
        if let Some(f) = self.log.as_mut() {
            let _ = writeln!(f, "{l}");
        }
    }

    fn host_name(&self, dtid: i32) -> String {
        self.s
            .host_index(dtid)
            .map(|i| self.s.hosts[i].name.clone())
            .unwrap_or_else(|| format!("t{dtid:x}"))
    }

    fn refresh_hosts(&mut self) {
        if let Ok((hosts, _)) = ffi::config() {
            let live: Vec<i32> = hosts.iter().map(|h| h.tid).collect();
            let gone: Vec<i32> = self
                .s
                .hosts
                .iter()
                .map(|h| h.dtid)
                .filter(|d| !live.contains(d))
                .collect();
            for d in gone {
                self.s.remove_host(d);
            }
            for h in hosts {
                self.s.add_host(&h.name, h.tid, &h.arch);
            }
            self.agents.retain(|d, _| live.contains(d));
            self.start_agents();
        }
    }

    /// One measurement agent per host without one (policy `agents on`).
    fn start_agents(&mut self) {
        if !self.s.policy.agents {
            return;
        }
        let ms = self.s.policy.interval.as_millis().max(250).to_string();
        let missing: Vec<(i32, String)> = self
            .s
            .hosts
            .iter()
            .filter(|h| !self.agents.contains_key(&h.dtid))
            .map(|h| (h.dtid, h.name.clone()))
            .collect();
        for (dtid, name) in missing {
            match helper(&["agent".to_string(), ms.clone()], &name) {
                Ok(tid) => {
                    self.agents.insert(dtid, tid);
                    self.log(&format!(
                        "agent t{tid:x} started on {name}: it measures that host every {ms} ms"
                    ));
                }
                Err(e) => {
                    // Marked so that it is not retried at every refresh.
                    self.agents.insert(dtid, 0);
                    self.log(&format!(
                        "cannot start an agent on {name}: {e}; the scheduler's own measurement stands in"
                    ));
                }
            }
        }
    }

    /// An agent's report: kept for its host when the agent is the one started there.
    fn agent_report(&mut self, src: i32) {
        let host = ffi::upkstr().unwrap_or_default();
        let text = ffi::upkstr().unwrap_or_default();
        let Some(sample) = crate::agent::parse_report(&text) else {
            return self.log(&format!("agent t{src:x}: bad report {text:?}"));
        };
        let expected = self
            .agents
            .iter()
            .find(|(_, &t)| t == src)
            .map(|(&d, _)| self.host_name(d));
        if expected.as_deref() != Some(host.as_str()) {
            return self.log(&format!(
                "report from t{src:x} for {host:?} ignored: not the agent of that host ({expected:?})"
            ));
        }
        if !self.reports.contains_key(&host) {
            self.log(&format!(
                "agent t{src:x} on {host}: first report (owner load {:.2}, {} MB free, {} session(s)); its reports replace the local measurement of {host}",
                sample.owner_load, sample.free_mb, sample.sessions
            ));
        }
        if self.reports.len() < MAX_WATCHES || self.reports.contains_key(&host) {
            self.reports.insert(host, (sample, Instant::now(), src));
        }
    }

    fn wid(&mut self) -> i32 {
        self.next_wid = if self.next_wid >= 0x3fff_ffff {
            1
        } else {
            self.next_wid + 1
        };
        self.next_wid
    }

    /// Sends the send buffer to a pvmd with a fresh wait id and waits for `ack` with that id;
    /// anything else with that tag meanwhile (a task that connected on its own) is passed on.
    fn pvmd_call(&mut self, dst: i32, tag: i32, ack: i32, limit: Duration) -> Option<i32> {
        let wid = self.wid();
        let mut m = ffi::getminfo(ffi_sbuf());
        m.wid = wid;
        m.ctx = 0;
        set_sbuf_info(&mut m);
        if ffi::send(dst, tag) < 0 {
            return None;
        }
        let end = Instant::now() + limit;
        while Instant::now() < end {
            let Some(ffi::Msg { buf: b, .. }) = ffi::trecv(-1, ack, 200_000) else {
                continue;
            };
            if ffi::getminfo(b).wid == wid {
                return Some(b);
            }
            ffi::freebuf(b);
        }
        None
    }

    fn sm_spawn(&mut self, who: i32, info: &ffi::MInfo) {
        let parsed = (|| -> Result<_, i32> {
            let file = ffi::upkstr()?;
            let flags = ffi::upkint()?;
            let where_ = ffi::upkstr()?;
            let count = ffi::upkint()?;
            let argv = upklist()?;
            let mut six = [0; 6];
            for v in &mut six {
                *v = ffi::upkint()?;
            }
            let env = upklist()?;
            Ok((file, flags, where_, count, argv, six, env))
        })();
        let Ok((file, flags, where_, count, argv, six, env)) = parsed else {
            self.log(&format!("SM_SPAWN from t{who:x}: bad message; answered PvmBadParam"));
            return self.reply_ints(who, SM_SPAWN, info, &[PVM_BAD_PARAM]);
        };
        if !(1..=MAX_COUNT).contains(&count) {
            return self.reply_ints(who, SM_SPAWN, info, &[PVM_BAD_PARAM]);
        }
        self.refresh_hosts();
        let plan = self.s.place(flags, &where_, count as usize);
        let mut tids = vec![PVM_NO_HOST; count as usize];
        // One SM_EXEC per chosen host.
        let mut by_host: Vec<(usize, Vec<usize>, String)> = Vec::new();
        for (k, (h, why)) in plan.into_iter().enumerate() {
            match by_host.iter_mut().find(|(x, _, _)| *x == h) {
                Some(e) => e.1.push(k),
                None => by_host.push((h, vec![k], why)),
            }
        }
        for (h, slots, why) in by_host {
            let (dtid, name) = (self.s.hosts[h].dtid, self.s.hosts[h].name.clone());
            ffi::initsend();
            ffi::pkint(who);
            ffi::pkstr(&file);
            ffi::pkint(flags);
            ffi::pkint(slots.len() as i32);
            ffi::pkint(argv.len() as i32);
            for a in &argv {
                ffi::pkstr(a);
            }
            for v in six {
                ffi::pkint(v);
            }
            ffi::pkint(env.len() as i32);
            for e in &env {
                ffi::pkstr(e);
            }
            // Where these tasks start in the whole spawn and its size (PVM_INSTANCE for
            // groups): the legacy pvmd's exectasks() requires both.
            ffi::pkint(slots[0] as i32);
            ffi::pkint(count);
            let got = match self.pvmd_call(dtid | TIDPVMD, SM_EXEC, SM_EXECACK, ACK_WAIT) {
                Some(b) => {
                    let n = ffi::upkint().unwrap_or(0).clamp(0, MAX_COUNT);
                    let v: Vec<i32> = (0..n).map(|_| ffi::upkint().unwrap_or(PVM_NO_HOST)).collect();
                    ffi::freebuf(b);
                    v
                }
                None => {
                    self.log(&format!("SM_EXEC to {name} got no answer"));
                    Vec::new()
                }
            };
            for (i, &slot) in slots.iter().enumerate() {
                let t = got.get(i).copied().unwrap_or(PVM_NO_HOST);
                tids[slot] = t;
                if t > 0 {
                    self.s.guests.insert(
                        t,
                        Guest {
                            tid: t,
                            host: dtid,
                            pid: 0,
                            held: false,
                            moving: false,
                        },
                    );
                    self.log(&format!("place t{t:x} ({file}, for t{who:x}) on {name}: {why}"));
                } else {
                    self.log(&format!(
                        "place {file} for t{who:x} on {name} failed: {}",
                        ffi::errtext(t)
                    ));
                }
            }
        }
        if tids.iter().all(|&t| t == PVM_NO_HOST) && !tids.is_empty() {
            self.log(&format!(
                "spawn of {file} for t{who:x}: no host matches (flags {flags}, where {where_:?})"
            ));
        }
        let mut v = vec![count];
        v.extend(tids);
        self.reply_ints(who, SM_SPAWN, info, &v);
    }

    fn reply_ints(&mut self, to: i32, tag: i32, info: &ffi::MInfo, v: &[i32]) {
        ffi::initsend();
        for &x in v {
            ffi::pkint(x);
        }
        ffi::reply_info(info);
        ffi::send(to, tag);
    }

    fn sm_task(&mut self, who: i32, info: &ffi::MInfo) {
        let where_ = ffi::upkint().unwrap_or(0);
        let r = ffi::tasks(where_);
        ffi::initsend();
        match r {
            Ok(v) => {
                ffi::pkint(0);
                for t in v {
                    ffi::pkint(t.tid);
                    ffi::pkint(t.ptid);
                    ffi::pkint(t.host);
                    ffi::pkint(t.flag);
                    ffi::pkstr(&t.a_out);
                    ffi::pkint(t.pid);
                }
            }
            Err(cc) => {
                ffi::pkint(cc);
            }
        }
        ffi::reply_info(info);
        ffi::send(who, SM_TASK);
    }

    fn sm_config(&mut self, who: i32, info: &ffi::MInfo) {
        let r = ffi::config();
        ffi::initsend();
        match r {
            Ok((hosts, narch)) => {
                ffi::pkint(hosts.len() as i32);
                ffi::pkint(narch);
                for h in hosts {
                    ffi::pkint(h.tid);
                    ffi::pkstr(&h.name);
                    ffi::pkstr(&h.arch);
                    ffi::pkint(h.speed);
                    ffi::pkint(h.dsig);
                }
            }
            Err(cc) => {
                ffi::pkint(cc);
            }
        }
        ffi::reply_info(info);
        ffi::send(who, SM_CONFIG);
    }

    fn sm_addhost(&mut self, who: i32, info: &ffi::MInfo) {
        let names = upklist().unwrap_or_default();
        ffi::initsend();
        ffi::pkint(names.len() as i32);
        for n in &names {
            ffi::pkstr(n);
        }
        self.log(&format!("add hosts {names:?} for t{who:x}"));
        let b = self.pvmd_call(self.master | TIDPVMD, SM_ADD, SM_ADDACK, ADD_WAIT);
        let mut v: Vec<(i32, String, String, i32, i32)> = Vec::new();
        let mut head = (PvmSysErrCode, 0);
        if let Some(b) = b {
            let count = ffi::upkint().unwrap_or(PvmSysErrCode);
            let narch = ffi::upkint().unwrap_or(0);
            head = (count, narch);
            for _ in 0..count.clamp(0, MAX_COUNT) {
                let tid = ffi::upkint().unwrap_or(PvmSysErrCode);
                let name = ffi::upkstr().unwrap_or_default();
                let arch = ffi::upkstr().unwrap_or_default();
                let speed = ffi::upkint().unwrap_or(0);
                let dsig = ffi::upkint().unwrap_or(0);
                v.push((tid, name, arch, speed, dsig));
            }
            ffi::freebuf(b);
        }
        ffi::initsend();
        ffi::pkint(head.0);
        ffi::pkint(head.1);
        for (tid, name, arch, speed, dsig) in &v {
            ffi::pkint(*tid);
            ffi::pkstr(name);
            ffi::pkstr(arch);
            ffi::pkint(*speed);
            ffi::pkint(*dsig);
        }
        ffi::reply_info(info);
        ffi::send(who, SM_ADDHOST);
        self.refresh_hosts();
    }

    fn sm_delhost(&mut self, who: i32, info: &ffi::MInfo) {
        let names = upklist().unwrap_or_default();
        let (cc, st) = ffi::delhosts(&names);
        self.log(&format!("delete hosts {names:?} for t{who:x}: {cc}"));
        let mut v = vec![if cc < 0 { cc } else { names.len() as i32 }];
        if cc >= 0 {
            v.extend(st);
        }
        self.reply_ints(who, SM_DELHOST, info, &v);
        self.refresh_hosts();
    }

    fn sm_notify(&mut self, who: i32) {
        let Ok(what) = ffi::upkint() else { return };
        let ctx = ffi::upkint().unwrap_or(0);
        let tag = ffi::upkint().unwrap_or(0);
        let cnt = ffi::upkint().unwrap_or(0);
        if what & PVM_NOTIFY_CANCEL != 0 {
            let kind = what & !PVM_NOTIFY_CANCEL;
            self.watches
                .retain(|w| !(w.for_tid == who && w.kind == kind && w.tag == tag));
            return;
        }
        let kind = what;
        let ons: Vec<i32> = if kind == 3 {
            vec![cnt]
        } else {
            (0..cnt.clamp(0, MAX_COUNT))
                .filter_map(|_| ffi::upkint().ok())
                .collect()
        };
        for on in ons {
            if self.watches.len() >= MAX_WATCHES {
                break;
            }
            self.watches.push(Watch {
                kind,
                for_tid: who,
                ctx,
                tag,
                on,
            });
            match kind {
                1 => {
                    ffi::notify(1, TAG_N_TASKX, &[on]);
                }
                2 => {
                    ffi::notify(2, TAG_N_HOSTDEL, &[on]);
                }
                3 => {
                    ffi::notify(3, TAG_N_HOSTADD, &[on]);
                }
                _ => {}
            }
        }
    }

    /// Passes a pvmd notification on to the tasks that asked the RM for it.
    fn fire(&mut self, kind: i32, about: i32) {
        let mut keep = Vec::new();
        for w in std::mem::take(&mut self.watches) {
            let hit = w.kind == kind && (kind == 3 || w.on == about);
            if hit {
                ffi::initsend();
                ffi::pkint(about);
                ffi::send_ctx(w.for_tid, w.tag, w.ctx);
                if kind == 3 && w.on > 1 {
                    keep.push(Watch { on: w.on - 1, ..w });
                }
            } else {
                keep.push(w);
            }
        }
        self.watches = keep;
    }

    fn command(&mut self, src: i32) {
        let cmd = ffi::upkstr().unwrap_or_default();
        let words: Vec<&str> = cmd.split_whitespace().collect();
        let answer = match words.as_slice() {
            ["hosts"] => self.hosts_view(),
            ["owner", host, state] => {
                let to = match *state {
                    "busy" => Ok(Some(Owner::Busy)),
                    "idle" => Ok(Some(Owner::Idle)),
                    "auto" => Ok(None),
                    _ => Err(format!("owner state must be busy, idle or auto, not {state:?}")),
                };
                self.refresh_hosts();
                match (to, self.s.host_by_name(host)) {
                    (Err(e), _) => e,
                    (_, None) => format!("no host {host:?} in the virtual machine"),
                    (Ok(to), Some(i)) => {
                        self.log(&format!(
                            "owner of {host} set to {} by t{src:x}",
                            to.map_or("auto", |o| o.name())
                        ));
                        if let Some(c) = self.s.force(i, to) {
                            self.owner_changed(c.host, c.to, &c.why);
                        }
                        format!("{host}: owner {}", self.s.hosts[i].owner.name())
                    }
                }
            }
            _ => format!("unknown command {cmd:?} (hosts | owner HOST busy|idle|auto)"),
        };
        ffi::initsend();
        ffi::pkstr(&answer);
        ffi::send(src, TAG_REPLY);
    }

    /// Keeps the list of applications (roots of the guests' jobs) and takes a whole-application
    /// checkpoint of the one that is due (one per tick: the scheduler answers nobody while it
    /// waits, and a checkpoint parks every task of the application until it is committed).
    fn ckpt_tick(&mut self, ts: &[ffi::Task]) {
        let every = self.s.policy.ckpt_interval;
        if every.is_zero() || !self.can_migrate {
            return;
        }
        let map: HashMap<i32, (i32, i32)> = ts.iter().map(|t| (t.tid, (t.ptid, t.flag))).collect();
        let guests: Vec<i32> = self.s.guests.keys().copied().collect();
        let now = Instant::now();
        let groups = apps::group(&guests, &map);
        let shared = apps::shared_front_ends(groups.keys().copied(), &map);
        for (fe, roots) in &shared {
            if self.unrestorable.len() >= MAX_WATCHES {
                self.unrestorable.clear();
            }
            if self.unrestorable.insert(*fe) {
                self.log(&format!(
                    "job of t{fe:x} not checkpointed: t{fe:x} was not started by a pvmd (it cannot be restored) and started {} itself; restarting a part alone would break the job",
                    tids(roots)
                ));
            }
        }
        let skip: Vec<i32> = shared.into_values().flatten().collect();
        for (root, members) in groups {
            if skip.contains(&root) {
                continue;
            }
            let mut seen: Vec<(i32, i32)> = members
                .iter()
                .filter_map(|t| self.s.guests.get(t).map(|g| (g.tid, g.host)))
                .collect();
            if !members.contains(&root) {
                if let Some(t) = ts.iter().find(|t| t.tid == root) {
                    seen.push((root, t.host));
                }
            }
            match self.apps.get_mut(&root) {
                Some(a) => a.tasks.extend(seen),
                None => {
                    self.log(&format!(
                        "application t{root:x} ({} task(s)): whole-application checkpoint every {:.1} s, copies on other hosts, automatic restart after a host failure (policy ckpt_interval)",
                        seen.len(),
                        every.as_secs_f64()
                    ));
                    self.apps.insert(
                        root,
                        App {
                            root,
                            epoch: None,
                            taken: None,
                            tasks: seen.into_iter().collect(),
                            next: now + every,
                            last_error: None,
                            running: false,
                        },
                    );
                }
            }
        }
        // Applications whose root is gone (and that wait for no restart) have ended.
        let ended: Vec<i32> = self
            .apps
            .keys()
            .copied()
            .filter(|r| !map.contains_key(r) && !self.restarts.iter().any(|x| x.root == *r))
            .collect();
        for r in ended {
            self.apps.remove(&r);
            self.log(&format!("application t{r:x} ended: no more checkpoints of it"));
        }
        let due = self.apps.values().find(|a| {
            a.next <= now
                && !a.running
                && !self.restarts.iter().any(|x| x.root == a.root)
                && !a
                    .tasks
                    .keys()
                    .any(|t| self.s.guests.get(t).is_some_and(|g| g.moving || g.held))
        });
        let Some(root) = due.map(|a| a.root) else { return };
        // From a helper task on this host (its pvmd coordinates, as if the scheduler asked):
        // the scheduler goes on answering while the application is parked and dumped, and a
        // checkpoint that never ends (a daemon fault) cannot freeze placement.
        let here = self.host_name(self.me & TIDHOST);
        let args = vec!["ckpt".to_string(), format!("t{root:x}")];
        match helper(&args, &here) {
            Ok(h) => {
                if let Some(a) = self.apps.get_mut(&root) {
                    a.running = true;
                }
                self.helpers.push(Helper {
                    helper: h,
                    tid: root,
                    job: Job::Ckpt,
                    from: here,
                    started: Instant::now(),
                });
            }
            Err(e) => {
                self.log(&format!(
                    "cannot start a checkpoint helper for application t{root:x}: {e}; next try in {:.1} s",
                    every.as_secs_f64()
                ));
                if let Some(a) = self.apps.get_mut(&root) {
                    a.last_error = Some(e);
                    a.next = Instant::now() + every;
                }
            }
        }
    }

    /// The end of a checkpoint helper: `text` is "epoch N ..." on success.
    fn ckpt_done(&mut self, root: i32, ok: bool, text: &str, took: Duration) {
        let every = self.s.policy.ckpt_interval;
        let n = self.apps.get(&root).map_or(0, |a| a.tasks.len());
        let epoch = text
            .strip_prefix("epoch ")
            .and_then(|r| r.split_whitespace().next())
            .and_then(|e| e.parse::<i32>().ok())
            .filter(|_| ok);
        match epoch {
            Some(e) => self.log(&format!(
                "checkpoint of application t{root:x} ({n} task(s)) epoch {e} in {} ms: every {:.1} s so that a host failure loses at most that much work",
                took.as_millis(),
                every.as_secs_f64()
            )),
            None => self.log(&format!(
                "checkpoint of application t{root:x} failed after {} ms: {text}; next try in {:.1} s",
                took.as_millis(),
                every.as_secs_f64()
            )),
        }
        if let Some(a) = self.apps.get_mut(&root) {
            a.running = false;
            match epoch {
                Some(e) => {
                    a.epoch = Some(e);
                    a.taken = Some((std::time::SystemTime::now(), took));
                    a.last_error = None;
                }
                None => a.last_error = Some(text.to_string()),
            }
            a.next = Instant::now() + every;
        }
    }

    /// A host failed: which applications lost tasks, and from which checkpoint they restart.
    /// They were checkpointed with PvmCkptAutoRestart, so the coordinator (this host's pvmd)
    /// restarts them by itself; the scheduler checks that it happens (`restart_tick`) and asks
    /// for it itself (TM_RESTART) when it does not.
    fn host_failed(&mut self, dtid: i32, how: &str) {
        let Some(hi) = self.s.host_index(dtid) else { return };
        let name = self.s.hosts[hi].name.clone();
        // Guests still known there, and tasks of applications last seen there (the task list
        // may have dropped them before the host was declared lost).
        let mut lost: Vec<i32> = self
            .s
            .guests
            .values()
            .filter(|g| g.host == dtid)
            .map(|g| g.tid)
            .collect();
        for a in self.apps.values() {
            lost.extend(a.tasks.iter().filter(|(_, &h)| h == dtid).map(|(&t, _)| t));
        }
        lost.sort_unstable();
        lost.dedup();
        if lost.is_empty() {
            self.log(&format!("host {name} failed ({how}): it had no guests"));
            return;
        }
        let mut covered: Vec<i32> = Vec::new();
        let affected: Vec<App> = self
            .apps
            .values()
            .filter(|a| a.tasks.keys().any(|t| lost.contains(t)))
            .cloned()
            .collect();
        for a in affected {
            let mine: Vec<i32> = a.tasks.keys().copied().filter(|t| lost.contains(t)).collect();
            covered.extend(&mine);
            let list = tids(&mine);
            match (a.epoch, a.taken) {
                (Some(epoch), Some((at, _))) => {
                    self.log(&format!(
                        "host {name} failed ({how}): application t{:x} lost {list}; it restarts from its checkpoint epoch {epoch} (taken {}) on the surviving hosts: its coordinator restarts it by itself (PvmCkptAutoRestart); the scheduler checks within {} s",
                        a.root,
                        stamp_of(at),
                        RESTART_WAIT.as_secs()
                    ));
                    self.restarts.push(Restart {
                        root: a.root,
                        epoch,
                        lost: mine,
                        host: name.clone(),
                        dead_dtid: dtid,
                        since: Instant::now(),
                        asked: false,
                    });
                }
                _ => self.log(&format!(
                    "host {name} failed ({how}): application t{:x} lost {list}, and has no checkpoint yet{}: it cannot be restarted",
                    a.root,
                    a.last_error.as_ref().map(|e| format!(" (last try: {e})")).unwrap_or_default()
                )),
            }
        }
        let rest: Vec<i32> = lost.into_iter().filter(|t| !covered.contains(t)).collect();
        if !rest.is_empty() {
            self.log(&format!(
                "host {name} failed ({how}): guest(s) {} lost, in no checkpointed application",
                tids(&rest)
            ));
        }
    }

    /// Checks the restarts expected after host failures: done when every lost task is listed
    /// again on a surviving host; asked for by the scheduler when the automatic one did not
    /// happen within RESTART_WAIT; given up after as long again.
    fn restart_tick(&mut self, ts: &[ffi::Task]) {
        let live: HashMap<i32, i32> = ts.iter().map(|t| (t.tid, t.host)).collect();
        for mut r in std::mem::take(&mut self.restarts) {
            let back = r
                .lost
                .iter()
                .all(|t| live.get(t).is_some_and(|&h| h != r.dead_dtid && h != 0));
            if back {
                let tasks: Vec<i32> = self
                    .apps
                    .get(&r.root)
                    .map(|a| a.tasks.keys().copied().collect())
                    .unwrap_or_default();
                let mut where_: Vec<String> = Vec::new();
                for t in tasks {
                    let Some(&h) = live.get(&t) else { continue };
                    let owner = self
                        .s
                        .host_index(h)
                        .map(|i| self.s.hosts[i].owner.name())
                        .unwrap_or("?");
                    if r.lost.contains(&t) {
                        where_.push(format!("t{t:x} on {} (owner {owner})", self.host_name(h)));
                    }
                    let g = self.s.guests.entry(t).or_insert(Guest {
                        tid: t,
                        host: h,
                        pid: 0,
                        held: false,
                        moving: false,
                    });
                    g.host = h;
                    if let Some(a) = self.apps.get_mut(&r.root) {
                        a.tasks.insert(t, h);
                    }
                }
                self.log(&format!(
                    "application t{:x} restarted from epoch {} after the failure of {} ({} ms{}): {}{}",
                    r.root,
                    r.epoch,
                    r.host,
                    r.since.elapsed().as_millis(),
                    if r.asked {
                        ", asked by the scheduler"
                    } else {
                        ", automatic"
                    },
                    where_.join(", "),
                    "; a restored task on a busy host is moved off like any guest"
                ));
                if let Some(a) = self.apps.get_mut(&r.root) {
                    a.next = Instant::now() + self.s.policy.ckpt_interval;
                }
                continue;
            }
            if r.since.elapsed() < RESTART_WAIT {
                self.restarts.push(r);
                continue;
            }
            if r.asked {
                self.log(&format!(
                    "application t{:x}: no restart {} s after asking for it; giving up (lost {})",
                    r.root,
                    RESTART_WAIT.as_secs(),
                    tids(&r.lost)
                ));
                continue;
            }
            self.log(&format!(
                "application t{:x} not restarted {} s after the failure of {}: asking its coordinator (TM_RESTART, last epoch)",
                r.root,
                RESTART_WAIT.as_secs(),
                r.host
            ));
            let t0 = Instant::now();
            let e = ffi::restart(r.root, -1);
            self.log(&format!(
                "restart of application t{:x}: {} ({} ms)",
                r.root,
                if e >= 0 { format!("epoch {e}") } else { ffi::errtext(e) },
                t0.elapsed().as_millis()
            ));
            r.asked = true;
            r.since = Instant::now();
            self.restarts.push(r);
        }
    }

    /// The guests on host `dtid` as `tX`, `tX(held)` or `tX(moving)`, for the hosts view and
    /// the mailbox entry.
    fn guest_marks(&self, dtid: i32) -> Vec<String> {
        self.s
            .guests
            .values()
            .filter(|g| g.host == dtid)
            .map(|g| {
                let mark = if g.held {
                    "(held)"
                } else if g.moving {
                    "(moving)"
                } else {
                    ""
                };
                format!("t{:x}{mark}", g.tid)
            })
            .collect()
    }

    fn hosts_view(&self) -> String {
        let mut s = format!(
            "{:<16} {:>8} {:<6} {:>6} {:>8} {:<24} {}\n",
            "HOST", "DTID", "OWNER", "LOAD", "FREE_MB", "GUESTS", "WHY"
        );
        for h in &self.s.hosts {
            let g = self.guest_marks(h.dtid);
            let forced = if h.forced.is_some() { "*" } else { "" };
            let src = match self.reports.get(&h.name) {
                Some((_, at, t)) => format!(" [agent t{t:x}, {} ms ago]", at.elapsed().as_millis()),
                None => String::new(),
            };
            s.push_str(&format!(
                "{:<16} {:>8x} {:<6} {:>6.2} {:>8} {:<24} {}{src}\n",
                h.name,
                h.dtid,
                format!("{}{forced}", h.owner.name()),
                h.sample.owner_load,
                h.sample.free_mb,
                if g.is_empty() { "-".to_string() } else { g.join(",") },
                h.why
            ));
        }
        if !self.can_migrate {
            s.push_str("(legacy daemon: guests are placed but never moved)\n");
        }
        if !self.apps.is_empty() {
            s.push_str(&format!(
                "{:<12} {:>6} {:<13} {:>6} {}\n",
                "APPLICATION", "EPOCH", "TAKEN", "MS", "TASKS"
            ));
        }
        for a in self.apps.values() {
            let restarting = self.restarts.iter().any(|r| r.root == a.root);
            s.push_str(&format!(
                "{:<12} {:>6} {:<13} {:>6} {}{}\n",
                format!("t{:x}", a.root),
                a.epoch.map_or("-".to_string(), |e| e.to_string()),
                a.taken.map_or("-".to_string(), |(t, _)| stamp_of(t)),
                a.taken.map_or("-".to_string(), |(_, d)| d.as_millis().to_string()),
                tids(&a.tasks.keys().copied().collect::<Vec<_>>()),
                if restarting { " (restarting)" } else { "" }
            ));
        }
        s
    }

    /// The `pvm-sched.hosts` entry (docs/console.md): one line per host, DTID OWNER LOAD
    /// GUESTS; the console parses it with `pvm_console::format::parse_sched_hosts`.
    fn hosts_entry(&self) -> String {
        let mut s = String::from("pvm-sched.hosts 1\n# DTID  OWNER  LOAD  GUESTS\n");
        for h in &self.s.hosts {
            let g = self.guest_marks(h.dtid);
            let forced = if h.forced.is_some() { "*" } else { "" };
            s.push_str(&format!(
                "{:x} {}{forced} {:.2} {}\n",
                h.dtid,
                h.owner.name(),
                h.sample.owner_load,
                if g.is_empty() { "-".to_string() } else { g.join(",") }
            ));
        }
        s
    }

    /// Publishes [`Rm::hosts_entry`] when it changed, at most once per [`HOSTS_EVERY`] (a
    /// change inside that second goes out on a later call: the main loop calls this at every
    /// message and tick). A refused put is logged once and retried at the next change.
    fn publish_hosts(&mut self) {
        let text = self.hosts_entry();
        if let Some((last, at)) = &self.published {
            if *last == text || at.elapsed() < HOSTS_EVERY {
                return;
            }
        }
        ffi::initsend();
        ffi::pkstr(&text);
        let cc = ffi::putinfo(MBOX_HOSTS, ffi::PVM_MBOX_OVERWRITABLE);
        if cc < 0 && self.published.is_none() {
            self.log(&format!(
                "cannot publish {MBOX_HOSTS} in the mailbox: {}",
                ffi::errtext(cc)
            ));
        }
        self.published = Some((text, Instant::now()));
    }

    fn owner_changed(&mut self, i: usize, to: Owner, why: &str) {
        let name = self.s.hosts[i].name.clone();
        let dtid = self.s.hosts[i].dtid;
        match to {
            Owner::Busy => {
                let n = self.s.guests.values().filter(|g| g.host == dtid && !g.held).count();
                self.log(&format!("owner of {name} returned ({why}): {n} guest(s) to move off"));
                if !self.can_migrate {
                    if n > 0 {
                        self.log(&format!(
                            "{name}: the daemon is legacy (no TM_MIGRATE): its {n} guest(s) stay; no new guests go there"
                        ));
                    }
                    return;
                }
                self.evict(i);
            }
            Owner::Idle => {
                self.log(&format!("owner of {name} idle ({why}): {name} takes guests again"));
                self.resume_held(true);
            }
        }
    }

    fn evict(&mut self, i: usize) {
        let from = self.s.hosts[i].name.clone();
        let now = Instant::now();
        for e in self.s.evictions(i) {
            let tid = match e {
                Evict::Move { tid, .. } | Evict::Hold { tid } => tid,
            };
            if self
                .failed
                .get(&tid)
                .is_some_and(|(t, wait)| now.duration_since(*t) < *wait)
            {
                continue;
            }
            let (args, job) = match e {
                Evict::Move { tid, to } => {
                    let target = self.s.hosts[to].name.clone();
                    self.log(&format!("migrate t{tid:x} {from} -> {target}: owner of {from} is busy"));
                    (vec!["move".to_string(), format!("t{tid:x}"), target], Job::Move { to })
                }
                Evict::Hold { tid } => {
                    self.log(&format!(
                        "checkpoint and hold t{tid:x} on {from}: owner busy and no idle host to move it to"
                    ));
                    (vec!["hold".to_string(), format!("t{tid:x}")], Job::Hold)
                }
            };
            let on = self.s.hosts[i].name.clone();
            match helper(&args, &on) {
                Ok(helper) => {
                    if let Some(g) = self.s.guests.get_mut(&tid) {
                        g.moving = true;
                    }
                    self.helpers.push(Helper {
                        helper,
                        tid,
                        job,
                        from: from.clone(),
                        started: Instant::now(),
                    });
                }
                Err(e) => {
                    let wait = self.failed.get(&tid).map_or(RETRY, |(_, w)| (*w * 2).min(MAX_RETRY));
                    self.failed.insert(tid, (Instant::now(), wait));
                    self.log(&format!("cannot start a helper on {on} for t{tid:x}: {e}"));
                }
            }
        }
    }

    /// Held guests go on: where they are if that host is idle again, else to an idle host.
    fn resume_held(&mut self, move_elsewhere: bool) {
        let held: Vec<(i32, i32)> = self
            .s
            .guests
            .values()
            .filter(|g| g.held)
            .map(|g| (g.tid, g.host))
            .collect();
        for (tid, host) in held {
            let Some(hi) = self.s.host_index(host) else { continue };
            if self.s.hosts[hi].owner == Owner::Idle {
                ffi::sendsig(tid, libc::SIGCONT);
                if let Some(g) = self.s.guests.get_mut(&tid) {
                    g.held = false;
                }
                self.log(&format!(
                    "resume t{tid:x} on {}: its owner is idle again",
                    self.s.hosts[hi].name
                ));
            } else if move_elsewhere {
                ffi::sendsig(tid, libc::SIGCONT);
                if let Some(g) = self.s.guests.get_mut(&tid) {
                    g.held = false;
                }
                self.log(&format!("resume t{tid:x} to move it off {}", self.s.hosts[hi].name));
                self.evict(hi);
            }
        }
    }

    /// A helper's report (`ok`, text), or its end without one (`None`).
    fn helper_done(&mut self, helper: i32, result: Option<(bool, String)>) {
        let Some(k) = self.helpers.iter().position(|h| h.helper == helper) else {
            return;
        };
        let h = self.helpers.remove(k);
        let ms = h.started.elapsed().as_millis();
        let tid = h.tid;
        if matches!(h.job, Job::Ckpt) {
            let (ok, text) = result.unwrap_or((false, format!("helper t{helper:x} ended without a report")));
            return self.ckpt_done(tid, ok, &text, h.started.elapsed());
        }
        if let Some(g) = self.s.guests.get_mut(&tid) {
            g.moving = false;
        }
        let (ok, text) = result.unwrap_or((false, format!("helper t{helper:x} ended without a report")));
        match (h.job, ok) {
            (Job::Move { to }, true) => {
                let (dtid, name) = self
                    .s
                    .hosts
                    .get(to)
                    .map(|x| (x.dtid, x.name.clone()))
                    .unwrap_or((0, String::new()));
                if let Some(g) = self.s.guests.get_mut(&tid) {
                    g.host = dtid;
                }
                self.failed.remove(&tid);
                self.log(&format!("t{tid:x} moved {} -> {name} in {ms} ms", h.from));
            }
            (Job::Hold, true) => {
                ffi::sendsig(tid, libc::SIGSTOP);
                if let Some(g) = self.s.guests.get_mut(&tid) {
                    g.held = true;
                }
                self.log(&format!("t{tid:x} checkpointed and stopped on {} ({ms} ms)", h.from));
            }
            (Job::Ckpt, true) => {} // handled above
            (_, false) => {
                let wait = self.failed.get(&tid).map_or(RETRY, |(_, w)| (*w * 2).min(MAX_RETRY));
                self.failed.insert(tid, (Instant::now(), wait));
                self.log(&format!("moving t{tid:x} off {} failed after {ms} ms: {text}", h.from));
            }
        }
    }

    fn poll_helpers(&mut self) {
        let late: Vec<i32> = self
            .helpers
            .iter()
            .filter(|h| h.started.elapsed() > HELPER_LIMIT)
            .map(|h| h.helper)
            .collect();
        for t in late {
            ffi::kill(t);
            self.helper_done(
                t,
                Some((false, format!("no report within {} s", HELPER_LIMIT.as_secs()))),
            );
        }
    }

    fn tick(&mut self) {
        self.poll_helpers();
        // Pids of guests on this machine, for the guest share of the CPU.
        if let Ok(ts) = ffi::tasks(0) {
            let live: HashMap<i32, i32> = ts.iter().map(|t| (t.tid, t.pid)).collect();
            let gone: Vec<i32> = self
                .s
                .guests
                .keys()
                .copied()
                .filter(|t| !live.contains_key(t))
                .collect();
            for t in gone {
                if self.s.guests.get(&t).is_some_and(|g| !g.moving) {
                    self.s.guests.remove(&t);
                }
            }
            for g in self.s.guests.values_mut() {
                if let Some(&p) = live.get(&g.tid) {
                    g.pid = p;
                }
            }
            self.restart_tick(&ts);
            self.ckpt_tick(&ts);
        }
        let pids: Vec<i32> = self.s.guests.values().map(|g| g.pid).filter(|&p| p > 0).collect();
        let measured = self.meter.sample(&pids);
        let now = Instant::now();
        let fresh = (self.s.policy.interval * 4).max(Duration::from_secs(3));
        for i in 0..self.s.hosts.len() {
            let base = match self.reports.get(&self.s.hosts[i].name) {
                Some((r, at, _)) if at.elapsed() < fresh => *r,
                _ => measured,
            };
            let s = match &self.state_dir {
                Some(d) => load::inject(d, &self.s.hosts[i].name, base),
                None => base,
            };
            if let Some(c) = self.s.observe(i, s, now) {
                self.owner_changed(c.host, c.to, &c.why);
            }
        }
        // A busy host keeps being cleared (guests that failed to move are retried).
        if self.can_migrate {
            for i in 0..self.s.hosts.len() {
                let h = &self.s.hosts[i];
                if h.owner == Owner::Busy && self.s.guests.values().any(|g| g.host == h.dtid && !g.moving && !g.held) {
                    self.evict(i);
                }
            }
            if self.s.guests.values().any(|g| g.held) && self.s.hosts.iter().any(|h| h.owner == Owner::Idle) {
                self.resume_held(true);
            }
        }
    }
}

#[allow(non_upper_case_globals)]
const PvmSysErrCode: i32 = -14;

fn ffi_sbuf() -> i32 {
    extern "C" {
        fn pvm_getsbuf() -> libc::c_int;
    }
    unsafe { pvm_getsbuf() }
}

fn set_sbuf_info(m: &mut ffi::MInfo) {
    extern "C" {
        fn pvm_setminfo(b: libc::c_int, m: *mut ffi::MInfo) -> libc::c_int;
    }
    unsafe { pvm_setminfo(ffi_sbuf(), m) };
}

fn upklist() -> Result<Vec<String>, i32> {
    let n = ffi::upkint()?;
    if !(0..=MAX_COUNT).contains(&n) {
        return Err(PVM_BAD_PARAM);
    }
    (0..n).map(|_| ffi::upkstr()).collect()
}

/// Spawns `pvm-sched move|hold ...` (this program again) as a PVM task on `host`, where the
/// guest runs: its pvmd is the one that moves or checkpoints the guest. The operation blocks
/// the helper for as long as it takes while the scheduler goes on answering; several run in
/// parallel. The helper reports with TAG_HELPER; its tid.
fn helper(args: &[String], host: &str) -> Result<i32, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let (cc, tid) = ffi::spawn_one(&exe.to_string_lossy(), args, 1, host);
    if cc == 1 && tid > 0 {
        ffi::notify(1, TAG_N_TASKX, &[tid]);
        Ok(tid)
    } else {
        Err(ffi::errtext(tid))
    }
}

/// `pvm-sched move TID HOST` / `pvm-sched hold TID`: one TM_MIGRATE (pvm_migrate) or one
/// TM_CKPT (pvm_checkpoint) as a separate task. Exit status 0 on success; the error on stderr.
pub fn one_op(op: &str, tid: i32, host: Option<&str>) -> Result<String, SchedError> {
    let me = ffi::mytid();
    if me < 0 {
        return Err(SchedError::Enrol(ffi::errtext(me)));
    }
    ffi::setopt(ffi::PVM_AUTO_ERR, 0);
    let t0 = Instant::now();
    let r = match (op, host) {
        ("move", Some(h)) => {
            // pvm_migrate returns the new host's pvmd tid (negative as an int) or an error
            // code (-1 .. -50).
            let r = ffi::migrate(tid, h);
            if (-100..0).contains(&r) {
                Err(format!("pvm_migrate(t{tid:x}, {h}): {}", ffi::errtext(r)))
            } else {
                Ok(format!("t{tid:x} now on pvmd t{r:x}"))
            }
        }
        ("ckpt", None) => {
            let r = ffi::checkpoint(tid, ffi::PVM_CKPT_APP | ffi::PVM_CKPT_AUTO_RESTART);
            if r < 0 {
                Err(format!(
                    "pvm_checkpoint(t{tid:x}, PvmCkptApp|PvmCkptAutoRestart): {}",
                    ffi::errtext(r)
                ))
            } else {
                Ok(format!("epoch {r}"))
            }
        }
        ("hold", None) => {
            let r = ffi::checkpoint(tid, 0);
            if r < 0 {
                Err(format!("pvm_checkpoint(t{tid:x}): {}", ffi::errtext(r)))
            } else {
                Ok(format!("t{tid:x} checkpoint epoch {r}"))
            }
        }
        _ => Err("bad helper command".into()),
    };
    let r = r.map(|s| format!("{s} ({} ms)", t0.elapsed().as_millis()));
    let parent = ffi::parent();
    if parent > 0 {
        ffi::initsend();
        ffi::pkint(i32::from(r.is_ok()));
        ffi::pkstr(r.as_ref().unwrap_or_else(|e| e));
        ffi::send(parent, TAG_HELPER);
    }
    ffi::exit();
    r.map_err(SchedError::Usage)
}

/// Runs the scheduler until the pvmd goes away.
pub fn run(opts: Options) -> Result<(), SchedError> {
    ffi::setopt(ffi::PVM_RESV_TIDS, 1);
    let me = ffi::mytid();
    if me < 0 {
        return Err(SchedError::Enrol(ffi::errtext(me)));
    }
    ffi::setopt(ffi::PVM_AUTO_ERR, 0);
    let cc = ffi::reg_rm();
    if cc < 0 {
        ffi::exit();
        return Err(SchedError::Register(ffi::errtext(cc)));
    }
    // The library refuses TM_MIGRATE at once (PvmNotImpl) on a legacy daemon; on pvm-rs an
    // unknown host name is PvmNoHost, also without sending anything.
    let can_migrate = ffi::migrate(me, "\u{1}") != PVM_NOT_IMPL;
    let log = opts
        .log
        .as_ref()
        .and_then(|p| std::fs::OpenOptions::new().create(true).append(true).open(p).ok());
    let master = ffi::config()
        .ok()
        .and_then(|(h, _)| h.first().map(|h| h.tid))
        .unwrap_or(0);
    let mut rm = Rm {
        me,
        master,
        can_migrate,
        s: Sched::new(opts.policy),
        meter: Meter::default(),
        state_dir: opts.state_dir,
        log,
        watches: Vec::new(),
        helpers: Vec::new(),
        failed: HashMap::new(),
        next_wid: 0,
        t0: Instant::now(),
        apps: BTreeMap::new(),
        restarts: Vec::new(),
        published: None,
        unrestorable: std::collections::HashSet::new(),
        agents: HashMap::new(),
        reports: HashMap::new(),
    };
    rm.refresh_hosts();
    ffi::initsend();
    ffi::pkint(me);
    ffi::replace_info(MBOX);
    let hosts: Vec<String> = rm.s.hosts.iter().map(|h| h.name.clone()).collect();
    rm.log(&format!(
        "t{me:x} registered as resource manager; hosts {hosts:?}; {}",
        if can_migrate {
            "pvm-rs daemon: guests are moved off hosts whose owner returns"
        } else {
            "legacy daemon: places and spawns, but cannot migrate (no TM_MIGRATE)"
        }
    ));
    ffi::notify(3, TAG_N_HOSTADD, &[-1]);
    let interval = rm.s.policy.interval;
    let mut next_tick = Instant::now();
    loop {
        let wait = next_tick
            .saturating_duration_since(Instant::now())
            .as_micros()
            .clamp(1000, 1_000_000) as i64;
        if let Some(ffi::Msg { buf: b, src, tag, .. }) = ffi::trecv(-1, -1, wait) {
            let info = ffi::getminfo(b);
            match tag {
                SM_SPAWN => rm.sm_spawn(src, &info),
                SM_TASK => rm.sm_task(src, &info),
                SM_CONFIG => rm.sm_config(src, &info),
                SM_ADDHOST => rm.sm_addhost(src, &info),
                SM_DELHOST => rm.sm_delhost(src, &info),
                SM_NOTIFY => rm.sm_notify(src),
                SM_SCHED => rm.reply_ints(src, SM_SCHED, &info, &[PVM_ALREADY]),
                SM_TASKX => {
                    if let Ok(t) = ffi::upkint() {
                        if rm.s.guests.get(&t).is_some_and(|g| !g.moving) {
                            rm.s.guests.remove(&t);
                            rm.log(&format!("t{t:x} exited"));
                        }
                        for a in rm.apps.values_mut() {
                            a.tasks.remove(&t);
                        }
                        rm.fire(1, t);
                    }
                }
                SM_HOSTX => {
                    if let Ok(d) = ffi::upkint() {
                        let d = d & !TIDPVMD;
                        rm.log(&format!("host {} is gone", rm.host_name(d)));
                        rm.host_failed(d, "the master pvmd reported it lost (SM_HOSTX)");
                        rm.s.remove_host(d);
                        rm.fire(2, d);
                    }
                }
                SM_EXECACK => {} // a task connected on its own: not a guest
                TAG_CMD => rm.command(src),
                crate::agent::TAG_AGENT => rm.agent_report(src),
                TAG_N_TASKX => {
                    if let Ok(t) = ffi::upkint() {
                        if let Some(d) = rm.agents.iter().find(|(_, &a)| a == t).map(|(&d, _)| d) {
                            rm.agents.remove(&d);
                            let name = rm.host_name(d);
                            rm.reports.remove(&name);
                            rm.log(&format!("agent t{t:x} on {name} ended"));
                        }
                        rm.helper_done(t, None);
                        rm.fire(1, t);
                    }
                }
                TAG_HELPER => {
                    let ok = ffi::upkint().unwrap_or(0) == 1;
                    let text = ffi::upkstr().unwrap_or_default();
                    rm.helper_done(src, Some((ok, text)));
                }
                TAG_N_HOSTDEL => {
                    if let Ok(d) = ffi::upkint() {
                        rm.fire(2, d);
                        rm.host_failed(d, "host delete notification");
                        rm.s.remove_host(d);
                    }
                }
                TAG_N_HOSTADD => {
                    rm.refresh_hosts();
                    let n = ffi::upkint().unwrap_or(0).clamp(0, MAX_COUNT);
                    for _ in 0..n {
                        if let Ok(d) = ffi::upkint() {
                            rm.fire(3, d);
                        }
                    }
                }
                _ => {}
            }
            if ffi::rbuf() == b {
                ffi::set_rbuf(0);
            }
            ffi::freebuf(b);
        }
        rm.publish_hosts();
        if Instant::now() >= next_tick {
            rm.tick();
            next_tick = Instant::now() + interval;
            if ffi::config().is_err() {
                rm.log(&format!(
                    "the pvmd is gone; exiting after {} s",
                    rm.t0.elapsed().as_secs()
                ));
                break;
            }
        }
    }
    let _ = rm.me;
    ffi::delinfo(MBOX, 0, 0);
    ffi::delinfo(MBOX_HOSTS, 0, 0);
    ffi::exit();
    Ok(())
}

/// `pvm-sched hosts|owner ...`: asks the running scheduler; its answer.
pub fn ask(cmd: &str) -> Result<String, SchedError> {
    let me = ffi::mytid();
    if me < 0 {
        return Err(SchedError::Enrol(ffi::errtext(me)));
    }
    ffi::setopt(ffi::PVM_AUTO_ERR, 0);
    let r = (|| {
        let b = ffi::recvinfo(MBOX, 0, ffi::PVM_MBOX_DEFAULT);
        if b < 0 {
            return Err(SchedError::NotRunning);
        }
        let old = ffi::set_rbuf(b);
        let tid = ffi::upkint().map_err(|_| SchedError::NotRunning)?;
        ffi::set_rbuf(old);
        ffi::initsend();
        ffi::pkstr(cmd);
        if ffi::send(tid, TAG_CMD) < 0 {
            return Err(SchedError::NotRunning);
        }
        match ffi::trecv(tid, TAG_REPLY, 10_000_000) {
            Some(_) => Ok(ffi::upkstr().unwrap_or_default()),
            None => Err(SchedError::NoAnswer),
        }
    })();
    ffi::exit();
    r
}
