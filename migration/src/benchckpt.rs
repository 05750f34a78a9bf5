//! `pvm-migrate bench-ckpt`: what a whole-application checkpoint of N tasks x M MB costs
//! against writing the same images, measured in the same run (docs/migration.md §2).
//!
//! Three measurements per round, their order rotated from round to round so that a load
//! change on the machine (other builds) does not always hit the same one:
//!
//! * **hot write** (the baseline of the first version of this benchmark): one thread per task
//!   writes M MB to a file on the image tmpfs from one 1 MiB buffer. The source stays in the
//!   CPU cache, so this is a lower bound no image writer can reach: an image carries M MB of
//!   the task's *distinct* memory, which has to come from RAM.
//! * **image write**: one thread per task writes M MB of its own, distinct, already faulted-in
//!   memory (allocated and filled before the timing) to a file on the same tmpfs: the bytes an
//!   image holds, from where an image writer has to take them. This is "the time to write the
//!   images" the issue's ratio is taken against.
//! * **checkpoint**: `criu dump -R` of every task (at most `parallel` at once) into the same
//!   tmpfs, as appckpt.rs does on one host.
//!
//! With `--copy each|after` the images must also reach a second network-namespace host
//! (over a veth, `transfer::copy_dir`, the same stream code the daemons use for DM_IMGPUT):
//! an epoch counts only when every image is stored on another host. `after` starts the
//! copies when every dump has ended (appckpt.rs before 2026-11-26); `each` starts an image's
//! copy as soon as its own dump ends. The image write then also copies each written file to
//! the other host the same way, as soon as it is written.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use pvm_migration::{hog, transfer, Criu, Host, NetPair};

/// When the copies to the other host start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyWhen {
    /// An image's copy starts when its own dump ends.
    Each,
    /// The copies start when every dump has ended.
    AfterAll,
}

/// Command-line options.
pub struct Opts {
    pub tasks: usize,
    pub mb: u32,
    pub runs: usize,
    /// At most this many dumps at once.
    pub parallel: usize,
    /// fs.pipe-max-size 4 MiB during the dumps (CRIU's page pipes may grow past 1 MiB).
    pub big_pipes: bool,
    pub copy: Option<CopyWhen>,
    /// Scheduler weight of this benchmark against the other jobs on the machine: the nice
    /// value given to the autogroups (sessions) of this process and of the tasks, where CRIU's
    /// parasite works (see [`boost`]); 0 leaves them alone.
    pub boost: i32,
}

/// Sets the nice value of `pid`'s autogroup. With `sched_autogroup_enabled` (this VM) a
/// process's nice value only weighs inside its session, so other sessions' builds take the
/// cores as equals however the benchmark is niced; the session's autogroup nice is what
/// counts between them. Both sides of the comparison get the same value (this process runs
/// the writers and CRIU; each task has its own session, made by `setsid -f`).
pub fn boost(pid: u32, nice: i32) {
    let _ = std::fs::write(format!("/proc/{pid}/autogroup"), nice.to_string());
}

/// Keeps `buf` out of forked children. The driver forks for every CRIU step that joins a
/// network namespace (setns before exec, `proc::child_setup`), and a fork copies the page
/// tables of the parent's memory: 22–32 ms for 512 MB in 4 KiB pages on this VM. A pvmd holds a
/// few MB; only this benchmark holds the raw copy's source (or the image writers' sources), so
/// without this the moves it measures would pay for its own buffers.
pub fn dont_fork(buf: &[u8]) {
    let page = 4096usize;
    let start = (buf.as_ptr() as usize).div_ceil(page) * page;
    let end = (buf.as_ptr() as usize + buf.len()) / page * page;
    if end > start {
        // SAFETY: advice on whole pages inside a buffer we own; it changes no contents and
        // only leaves the range unmapped in children, which exec at once.
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTFORK) };
    }
}

/// One round's numbers.
#[derive(Default, Clone)]
struct Round {
    hot: Duration,
    write: Duration,
    /// CPU time (every core) of the hot write, the image write and the dumps (CRIU's processes
    /// and the tasks themselves, where CRIU's parasite collects the pages): less sensitive to
    /// other load on the machine than the wall times.
    cpu: [Duration; 3],
    write_stored: Duration,
    ckpt: Duration,
    ckpt_stored: Duration,
    frozen: Duration,
    /// Per dump: wall, collecting the pages (CRIU's "Memory dump time", which includes the
    /// write, minus its "Memory write time"), writing them ("Memory write time").
    dumps: Vec<(Duration, Duration, Duration)>,
}

fn ms(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1000.0)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn median_f(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// "median (min–max)" in ms.
fn spread(v: &[Duration]) -> String {
    let (lo, hi) = (v.iter().min(), v.iter().max());
    format!(
        "{} ({}–{})",
        ms(median(v.to_vec())),
        lo.map_or("-".into(), |d| ms(*d)),
        hi.map_or("-".into(), |d| ms(*d))
    )
}

fn ratio_spread(v: &[f64]) -> String {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{:.2}x ({lo:.2}–{hi:.2})", median_f(v.to_vec()))
}

/// A CRIU `--display-stats` value in microseconds ("Memory write time: 85000 us").
fn stat(text: &str, key: &str) -> Duration {
    text.lines()
        .find_map(|l| {
            let v = l.split(key).nth(1)?.trim_start_matches(':');
            v.split_whitespace().next()?.parse::<u64>().ok()
        })
        .map(Duration::from_micros)
        .unwrap_or_default()
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    Duration::new(t.tv_sec.max(0) as u64, t.tv_nsec.clamp(0, 999_999_999) as u32)
}

/// CPU time of every waited-for descendant of this process (the CRIU processes).
fn children_cpu() -> Duration {
    // SAFETY: getrusage fills the struct we own.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) };
    let tv = |t: libc::timeval| Duration::from_micros(t.tv_sec.max(0) as u64 * 1_000_000 + t.tv_usec.max(0) as u64);
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// CPU time of process `pid` so far (utime + stime of /proc/PID/stat, clock ticks).
fn proc_cpu(pid: u32) -> Duration {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let f: Vec<u64> = text
        .rsplit_once(") ")
        .map(|(_, rest)| rest.split_whitespace().map(|x| x.parse().unwrap_or(0)).collect())
        .unwrap_or_default();
    // SAFETY: sysconf takes a plain integer.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    Duration::from_micros(ticks * 1_000_000 / hz)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Runs `job(k)` for k in 0..n on `parallel` threads taking the next k in turn.
fn pool<T: Send>(n: usize, parallel: usize, job: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let next = AtomicUsize::new(0);
    std::thread::scope(|sc| {
        let hs: Vec<_> = (0..parallel.clamp(1, n.max(1)))
            .map(|_| {
                let (next, job) = (&next, &job);
                sc.spawn(move || {
                    let mut done = Vec::new();
                    while let Some(k) = Some(next.fetch_add(1, Ordering::Relaxed)).filter(|k| *k < n) {
                        done.push(job(k));
                    }
                    done
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().expect("bench thread")).collect()
    })
}

fn write_file(p: &Path, chunks: impl Iterator<Item = impl AsRef<[u8]>>) -> Result<(), String> {
    std::fs::create_dir_all(p.parent().unwrap_or(Path::new("/"))).map_err(|e| e.to_string())?;
    let mut f = std::fs::File::create(p).map_err(|e| format!("{}: {e}", p.display()))?;
    for c in chunks {
        f.write_all(c.as_ref()).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// MemAvailable of /proc/meminfo in MB (0 when unreadable).
fn mem_available_mb() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemAvailable:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024)
}

pub fn run(o: &Opts) -> Result<(), String> {
    // The tasks, the writers' sources and up to three image sets live in memory at once.
    let need = (o.tasks as u64).saturating_mul(u64::from(o.mb)).saturating_mul(5);
    if o.tasks > 64 || need > mem_available_mb() {
        return Err(format!(
            "{} tasks x {} MB need about {need} MB of memory; {} MB available (at most 64 tasks)",
            o.tasks,
            o.mb,
            mem_available_mb()
        ));
    }
    let criu = Criu::new().map_err(|e| e.to_string())?;
    let base = PathBuf::from(format!("/dev/shm/pvm-mig-ckpt-{}", std::process::id()));
    let bin = hog::build(&base).map_err(|e| e.to_string())?;
    // The copies need a second host; without them the tasks live in this namespace.
    let pair = match o.copy {
        Some(_) => Some(NetPair::new("ckpt").map_err(|e| e.to_string())?),
        None => None,
    };
    let local = Host {
        netns: None,
        addr: std::net::Ipv4Addr::LOCALHOST,
    };
    let host = pair.as_ref().map_or(&local, |p| &p.a);
    let limit = Duration::from_secs(300);
    let bytes = (o.mb as usize) << 20;
    println!(
        "checkpoint of {} tasks x {} MB, leave-running, {} dumps at a time, images on tmpfs{}{}{}; load before: {}",
        o.tasks,
        o.mb,
        o.parallel.min(o.tasks),
        if o.big_pipes { ", 4 MiB pipes" } else { "" },
        match o.copy {
            None => String::new(),
            Some(c) => format!(
                ", each image copied to a second namespace host over a veth ({})",
                if c == CopyWhen::Each {
                    "as soon as it is dumped"
                } else {
                    "after every dump"
                }
            ),
        },
        if o.boost != 0 {
            format!(", autogroup nice {} for this run and the tasks", o.boost)
        } else {
            String::new()
        },
        loadavg()
    );
    // Each image write's source: the task's own distinct memory, faulted in before timing.
    let sources: Vec<Vec<u8>> = (0..o.tasks)
        .map(|k| {
            (0..bytes)
                .map(|i| (i as u64).wrapping_mul(0x9E37_79B9).wrapping_add(k as u64) as u8)
                .collect()
        })
        .collect();
    for s in &sources {
        dont_fork(s);
    }
    let mut hogs = Vec::new();
    let res =
        (|| -> Result<Vec<Round>, String> {
            for k in 0..o.tasks {
                hogs.push(
                    hog::start(host, &bin, o.mb, &base.join(format!("hog{k}.log")), limit)
                        .map_err(|e| e.to_string())?,
                );
            }
            if o.boost != 0 {
                boost(std::process::id(), o.boost);
                for h in &hogs {
                    boost(h.pid, o.boost);
                }
            }
            let copy_to = |src: &Path, dst: &Path| -> Result<(), String> {
                let p = pair.as_ref().ok_or("no second host")?;
                transfer::copy_dir(&p.a, src, &p.b, dst, limit).map_err(|e| e.to_string())?;
                Ok(())
            };
            let mut rounds = Vec::new();
            for r in 0..o.runs {
                let mut round = Round::default();
                for m in 0..3 {
                    match (m + r) % 3 {
                        0 => {
                            // Hot write: one 1 MiB buffer per writer (the old baseline).
                            let t0 = Instant::now();
                            let res = pool(o.tasks, o.tasks, |k| {
                                let buf = vec![0x5au8; 1 << 20];
                                let c0 = thread_cpu();
                                write_file(
                                    &base.join(format!("hot-{r}-{k}/pages-1.img")),
                                    std::iter::repeat(&buf[..]).take(o.mb as usize),
                                )
                                .map(|()| thread_cpu() - c0)
                            });
                            round.hot = t0.elapsed();
                            round.cpu[0] = res.into_iter().collect::<Result<Vec<_>, _>>()?.into_iter().sum();
                        }
                        1 => {
                            // Image write: each writer's own distinct memory [+ copy to host B].
                            let t0 = Instant::now();
                            let res = pool(o.tasks, o.tasks, |k| -> Result<(Instant, Instant, Duration), String> {
                                let dir = base.join(format!("raw-{r}-{k}"));
                                let c0 = thread_cpu();
                                write_file(&dir.join("pages-1.img"), sources[k].chunks(1 << 20))?;
                                let cpu = thread_cpu() - c0;
                                let local = Instant::now();
                                if o.copy.is_some() {
                                    copy_to(&dir, &base.join(format!("rawst-{r}-{k}")))?;
                                }
                                Ok((local, Instant::now(), cpu))
                            });
                            let res = res.into_iter().collect::<Result<Vec<_>, _>>()?;
                            round.cpu[1] = res.iter().map(|x| x.2).sum();
                            round.write = res.iter().map(|x| x.0 - t0).max().unwrap_or_default();
                            round.write_stored = res.iter().map(|x| x.1 - t0).max().unwrap_or_default();
                        }
                        _ => {
                            let t0 = Instant::now();
                            let c0 = children_cpu() + hogs.iter().map(|h| proc_cpu(h.pid)).sum::<Duration>();
                            let dumped = |k: usize| -> Result<(Instant, Instant, Duration, String), String> {
                                let dir = base.join(format!("ck-{r}-{k}"));
                                let d = criu
                                    .dump(hogs[k].pid, host, &dir, true, limit)
                                    .map_err(|e| e.to_string())?;
                                let stats = std::fs::read_to_string(dir.join("dump.out")).unwrap_or_default();
                                let local = Instant::now();
                                if o.copy == Some(CopyWhen::Each) {
                                    copy_to(&dir, &base.join(format!("ckst-{r}-{k}")))?;
                                }
                                Ok((local, Instant::now(), d.wall, stats))
                            };
                            let res = pvm_migration::criu::with_big_pipes(
                                o.big_pipes && criu.caps.needs_pipe_size_workaround,
                                || pool(o.tasks, o.parallel, dumped),
                            );
                            let mut res = res.into_iter().collect::<Result<Vec<_>, _>>()?;
                            // The copies run on threads of this process: not counted here.
                            round.cpu[2] = (children_cpu() + hogs.iter().map(|h| proc_cpu(h.pid)).sum::<Duration>())
                                .saturating_sub(c0);
                            if o.copy == Some(CopyWhen::AfterAll) {
                                let done = pool(o.tasks, o.tasks, |k| {
                                    copy_to(&base.join(format!("ck-{r}-{k}")), &base.join(format!("ckst-{r}-{k}")))
                                        .map(|()| Instant::now())
                                });
                                let done = done.into_iter().collect::<Result<Vec<_>, _>>()?;
                                for (x, t) in res.iter_mut().zip(done) {
                                    x.1 = t;
                                }
                            }
                            round.ckpt = res.iter().map(|x| x.0 - t0).max().unwrap_or_default();
                            round.ckpt_stored = res.iter().map(|x| x.1 - t0).max().unwrap_or_default();
                            for x in &res {
                                round.frozen = round.frozen.max(stat(&x.3, "Frozen time"));
                                let write = stat(&x.3, "Memory write time");
                                let dump = stat(&x.3, "Memory dump time");
                                round.dumps.push((x.2, dump.saturating_sub(write), write));
                            }
                        }
                    }
                    // Each measurement starts from an empty store.
                    for e in std::fs::read_dir(&base).map_err(|e| e.to_string())?.flatten() {
                        if e.file_type().is_ok_and(|t| t.is_dir()) {
                            let _ = std::fs::remove_dir_all(e.path());
                        }
                    }
                }
                println!(
                "  round {r}: hot write {} ms, image write {} ms{}, checkpoint {} ms{} (longest freeze {} ms); load {}",
                ms(round.hot),
                ms(round.write),
                if o.copy.is_some() { format!(" (stored on B {} ms)", ms(round.write_stored)) } else { String::new() },
                ms(round.ckpt),
                if o.copy.is_some() { format!(" (stored on B {} ms)", ms(round.ckpt_stored)) } else { String::new() },
                ms(round.frozen),
                loadavg()
            );
                rounds.push(round);
            }
            for h in &hogs {
                let v = hog::verify(h.pid, &h.log, Duration::from_secs(60)).map_err(|e| e.to_string())?;
                if !v.contains("verify ok") {
                    return Err(format!("after checkpoints: {v}"));
                }
            }
            Ok(rounds)
        })();
    for h in &hogs {
        pvm_migration::signal(h.pid, libc::SIGKILL);
    }
    if o.boost != 0 {
        boost(std::process::id(), 0);
    }
    let _ = std::fs::remove_dir_all(&base);
    let rounds = res?;
    let col = |f: fn(&Round) -> Duration| rounds.iter().map(f).collect::<Vec<_>>();
    let rat = |a: fn(&Round) -> Duration, b: fn(&Round) -> Duration| {
        rounds
            .iter()
            .map(|x| a(x).as_secs_f64() / b(x).as_secs_f64())
            .collect::<Vec<_>>()
    };
    let n = rounds.len();
    println!("medians of {n} rounds (min–max), ms; ratios are per round, then the median:");
    println!("  hot write (1 MiB cached buffer)        {}", spread(&col(|x| x.hot)));
    println!("  image write (distinct memory)          {}", spread(&col(|x| x.write)));
    println!("  checkpoint (every dump ended)          {}", spread(&col(|x| x.ckpt)));
    println!(
        "  longest CRIU freeze                    {}",
        spread(&col(|x| x.frozen))
    );
    let per = |i: usize| {
        rounds
            .iter()
            .flat_map(|x| x.dumps.iter().map(move |d| [d.0, d.1, d.2][i]))
            .collect::<Vec<_>>()
    };
    println!(
        "  per dump: wall {}, collecting pages {}, writing pages {}",
        spread(&per(0)),
        spread(&per(1)),
        spread(&per(2))
    );
    println!(
        "  CPU time, every core: hot write {}, image write {}, checkpoint {} (CRIU and the tasks, where its parasite runs)",
        spread(&col(|x| x.cpu[0])),
        spread(&col(|x| x.cpu[1])),
        spread(&col(|x| x.cpu[2]))
    );
    println!(
        "  CPU time: checkpoint / image write {}   (/ hot write {})",
        ratio_spread(&rat(|x| x.cpu[2], |x| x.cpu[1])),
        ratio_spread(&rat(|x| x.cpu[2], |x| x.cpu[0]))
    );
    println!(
        "  checkpoint / image write {}   (/ hot write {})",
        ratio_spread(&rat(|x| x.ckpt, |x| x.write)),
        ratio_spread(&rat(|x| x.ckpt, |x| x.hot))
    );
    if o.copy.is_some() {
        println!(
            "  image write + copy to B                {}",
            spread(&col(|x| x.write_stored))
        );
        println!(
            "  checkpoint + copy to B                 {}",
            spread(&col(|x| x.ckpt_stored))
        );
        println!(
            "  stored on B: checkpoint / image write {}",
            ratio_spread(&rat(|x| x.ckpt_stored, |x| x.write_stored))
        );
    }
    println!("load after: {}", loadavg());
    Ok(())
}
