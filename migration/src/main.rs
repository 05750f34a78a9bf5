//! pvm-migrate: the migration driver from the command line.
//!
//!   pvm-migrate probe                      what CRIU can do here, with reasons
//!   pvm-migrate checkpoint [--app [--auto]] TID
//!                                          checkpoint a task, or the application rooted at
//!                                          TID (images copied to another host; --auto:
//!                                          restart it by itself when one of its hosts dies)
//!   pvm-migrate restart [--app] TID        restart a task / roll the application back to its
//!                                          last complete checkpoint
//!   pvm-migrate bench [MB..] [--runs N] [--rate R] [--limit S] [--boost NICE] [--post-only]
//!                                          (--post-only: no stop-and-copy runs)
//!                                          migrate mighog between two fresh namespace hosts
//!                                          (post-copy and stop-and-copy) and compare with a
//!                                          raw copy of the same bytes over the same veth link
//!
//!   pvm-migrate bench-ckpt [--tasks 4] [--mb 256] [--runs 3] [--parallel N] [--big-pipes]
//!                          [--copy each|after]
//!                                          parallel leave-running checkpoint of N tasks vs
//!                                          writing the same bytes to the same tmpfs;
//!                                          --parallel: at most N dumps at a time;
//!                                          --big-pipes: fs.pipe-max-size 4 MiB meanwhile;
//!                                          --copy: every image also stored on a second
//!                                          namespace host (src/benchckpt.rs);
//!                          [--boost NICE]  autogroup nice of the run and the tasks (a
//!                                          shared machine's other sessions weigh less)
//!
//! The benchmarks need root and CRIU >= 4.1 (ci/criu-setup).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use pvm_migration::{hog, probe, transfer, Criu, Mode, NetPair};

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn bench(
    sizes: &[u32],
    runs: usize,
    limit: Duration,
    rate: Option<&str>,
    boost: i32,
    post_only: bool,
) -> Result<(), String> {
    let criu = Criu::new().map_err(|e| e.to_string())?;
    print!("{}", criu.caps);
    let base = PathBuf::from(format!("/dev/shm/pvm-mig-bench-{}", std::process::id()));
    let bin = hog::build(&base).map_err(|e| e.to_string())?;
    let pair = NetPair::new("b").map_err(|e| e.to_string())?;
    if let Some(r) = rate {
        pair.shape(r).map_err(|e| e.to_string())?;
    }
    if boost != 0 {
        // Every CRIU step and the restored task are our descendants (this session).
        benchckpt::boost(std::process::id(), boost);
        println!("autogroup nice {boost} for this run and the task (other sessions weigh less)");
    }
    println!(
        "link: veth between two network namespaces, {}",
        rate.map_or("unshaped".to_string(), |r| format!("A->B shaped to {r} (tc tbf)"))
    );
    println!(
        "{:>6} | {:>10} | {:>11} {:>11} {:>6} {:>13} | {:>17} {:>6} | {:>10} {:>6}",
        "MB",
        "raw copy",
        "post freeze",
        "post total",
        "ratio",
        "post released",
        "s&c freeze=total",
        "ratio",
        "hot copy",
        "post/hot"
    );
    let mut out = Ok(());
    'sizes: for &mb in sizes {
        let bytes = u64::from(mb) << 20;
        let (mut raw, mut pf, mut pt, mut pr, mut sf) = (vec![], vec![], vec![], vec![], vec![]);
        let mut hot = vec![];
        let mut phases: Vec<pvm_migration::Phases> = vec![];
        // The task's memory is distinct and comes from RAM: so does the raw copy's.
        let data: Vec<u8> = (0..bytes as usize)
            .map(|i| (i as u64).wrapping_mul(0x9E37_79B9) as u8)
            .collect();
        benchckpt::dont_fork(&data);
        for r in 0..runs {
            let res = (|| -> Result<(), String> {
                raw.push(transfer::raw_copy(&pair.a, &pair.b, bytes, Some(&data), limit).map_err(|e| e.to_string())?);
                hot.push(transfer::raw_copy(&pair.a, &pair.b, bytes, None, limit).map_err(|e| e.to_string())?);
                let modes: &[Mode] = if post_only {
                    &[Mode::PostCopy]
                } else {
                    &[Mode::PostCopy, Mode::StopAndCopy]
                };
                for &mode in modes {
                    let log = base.join(format!("hog-{mb}-{r}-{mode:?}.log"));
                    let h = hog::start(&pair.a, &bin, mb, &log, limit).map_err(|e| e.to_string())?;
                    if boost != 0 {
                        benchckpt::boost(h.pid, boost);
                    }
                    let work = base.join(format!("w-{mb}-{r}-{mode:?}"));
                    let m = criu.migrate(h.pid, &pair.a, &pair.b, &work, mode, limit);
                    let m = match m {
                        Ok(m) => m,
                        Err(e) => {
                            pvm_migration::signal(h.pid, libc::SIGKILL);
                            return Err(e.to_string());
                        }
                    };
                    let v = hog::verify(m.restored.pid, &log, Duration::from_secs(60)).map_err(|e| e.to_string())?;
                    if !v.contains("verify ok") {
                        return Err(format!("{mb} MB {mode:?}: {v}"));
                    }
                    match mode {
                        Mode::PostCopy => {
                            phases.push(m.phases);
                            pf.push(m.freeze);
                            pt.push(m.total);
                            pr.push(m.released);
                        }
                        _ => sf.push(m.freeze),
                    }
                    m.restored.kill();
                    let _ = std::fs::remove_file(&log);
                }
                Ok(())
            })();
            if let Err(e) = res {
                out = Err(format!("{mb} MB run {r}: {e}"));
                break 'sizes;
            }
        }
        let (raw, pf, pt, pr, hot) = (median(raw), median(pf), median(pt), median(pr), median(hot));
        let x = |d: Duration| d.as_secs_f64() / raw.as_secs_f64();
        let (sf, sx) = if sf.is_empty() {
            ("-".to_string(), "-".to_string())
        } else {
            let sf = median(sf);
            (ms(sf), format!("{:.2}x", x(sf)))
        };
        println!(
            "{:>6} | {:>10} | {:>11} {:>11} {:>5.2}x {:>13} | {:>17} {:>6} | {:>10} {:>5.2}x",
            mb,
            ms(raw),
            ms(pf),
            ms(pt),
            x(pt),
            ms(pr),
            sf,
            sx,
            ms(hot),
            pt.as_secs_f64() / hot.as_secs_f64()
        );
        print_phases(&phases);
    }
    if boost != 0 {
        benchckpt::boost(std::process::id(), 0);
    }
    println!("(medians of {runs}; ratio = time / raw copy of the same bytes (distinct memory, like the task's) over the same link in this run; hot copy = the same bytes from one cached 1 MiB buffer (the first baseline), post/hot = post total / hot copy; freeze = dump start until the task runs on the target; post total = until the last page is on the target; post released = until the source CRIU exits)");
    if out.is_ok() && !criu.keep_images {
        let _ = std::fs::remove_dir_all(&base);
    } else {
        eprintln!("pvm-migrate bench: kept {} for inspection", base.display());
    }
    out
}

/// One line per size: the medians of a post-copy move's steps (time since the dump began) and,
/// with `PVM_MIG_VERBOSE=3`, CRIU's own share of the dump and the restore.
fn print_phases(p: &[pvm_migration::Phases]) {
    if p.is_empty() {
        return;
    }
    let med = |f: &dyn Fn(&pvm_migration::Phases) -> Duration| median(p.iter().map(f).collect());
    let opt = |f: &dyn Fn(&pvm_migration::Phases) -> Option<Duration>| {
        let v: Vec<Duration> = p.iter().filter_map(f).collect();
        if v.len() == p.len() {
            format!(" (CRIU {})", ms(median(v)))
        } else {
            String::new()
        }
    };
    println!(
        "       post-copy steps since the dump began: dumped {}{}, metadata on target {}, lazy-pages ready {}, task resumed {}{}",
        ms(med(&|x| x.dumped)),
        opt(&|x| x.criu_dump),
        ms(med(&|x| x.streamed)),
        ms(med(&|x| x.lazy_ready)),
        ms(med(&|x| x.resumed)),
        opt(&|x| x.criu_restore),
    );
}

mod benchckpt;
mod pvmcmd;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("probe") => {
            let c = probe::probe();
            print!("{c}");
            if c.can_migrate().is_ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Some("bench") => {
            let mut sizes = vec![];
            let mut runs = 3;
            let mut limit = Duration::from_secs(120);
            let mut rate = None;
            let mut boost = 0;
            let mut post_only = false;
            let mut it = args[1..].iter();
            while let Some(a) = it.next() {
                if a == "--runs" {
                    runs = it.next().and_then(|r| r.parse().ok()).unwrap_or(3).max(1);
                } else if a == "--boost" {
                    boost = it
                        .next()
                        .and_then(|r| r.parse::<i32>().ok())
                        .unwrap_or(0)
                        .clamp(-20, 19);
                } else if a == "--post-only" {
                    post_only = true;
                } else if a == "--rate" {
                    rate = it.next().cloned();
                } else if a == "--limit" {
                    limit = Duration::from_secs(it.next().and_then(|r| r.parse().ok()).unwrap_or(120));
                } else if let Ok(mb) = a.parse::<u32>() {
                    sizes.push(mb);
                } else {
                    eprintln!("pvm-migrate bench: bad argument {a:?}");
                    return ExitCode::from(2);
                }
            }
            if sizes.is_empty() {
                sizes = vec![8, 64, 512];
            }
            // mighog's own limit; the raw copy's source is held in memory too.
            if let Some(mb) = sizes.iter().find(|mb| **mb == 0 || **mb > 65536) {
                eprintln!("pvm-migrate bench: {mb} MB: sizes are 1..=65536 MB");
                return ExitCode::from(2);
            }
            match bench(&sizes, runs, limit, rate.as_deref(), boost, post_only) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("pvm-migrate bench: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some("bench-ckpt") => {
            let num = |flag: &str, d: usize| {
                args.iter()
                    .position(|a| a == flag)
                    .and_then(|i| args.get(i + 1))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(d)
            };
            let copy = match args
                .iter()
                .position(|a| a == "--copy")
                .map(|i| args.get(i + 1).map(String::as_str))
            {
                None => None,
                Some(Some("each")) => Some(benchckpt::CopyWhen::Each),
                Some(Some("after")) => Some(benchckpt::CopyWhen::AfterAll),
                Some(_) => {
                    eprintln!("pvm-migrate bench-ckpt: --copy each|after");
                    return ExitCode::from(2);
                }
            };
            match benchckpt::run(&benchckpt::Opts {
                tasks: num("--tasks", 4).max(1),
                mb: num("--mb", 256).clamp(1, 65536) as u32,
                runs: num("--runs", 3).max(1),
                parallel: num("--parallel", usize::MAX).max(1),
                big_pipes: args.iter().any(|a| a == "--big-pipes"),
                copy,
                boost: args
                    .iter()
                    .position(|a| a == "--boost")
                    .and_then(|i| args.get(i + 1))
                    .and_then(|v| v.parse::<i32>().ok())
                    .unwrap_or(0)
                    .clamp(-20, 19),
            }) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("pvm-migrate bench-ckpt: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some("restore-task") if args.len() >= 2 => match pvmcmd::restore_task(&args[1], &args[2..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("pvm-migrate restore-task: {e}");
                ExitCode::FAILURE
            }
        },
        Some(cmd @ ("migrate" | "checkpoint" | "restart")) => {
            // `--app` (whole application rooted at TID) and `--auto` (restart it automatically
            // after a host failure) may stand anywhere after the command.
            let app = args.iter().any(|a| a == "--app");
            let auto = args.iter().any(|a| a == "--auto");
            let rest: Vec<&String> = args[1..].iter().filter(|a| !a.starts_with("--")).collect();
            let tid = rest.first().and_then(|t| pvmcmd::parse_tid(t));
            let op = match (cmd, rest.get(1)) {
                ("migrate", Some(h)) => Some(pvmcmd::Op::Migrate(h)),
                ("checkpoint", _) => Some(pvmcmd::Op::Checkpoint(match (app, auto) {
                    (false, _) => 0,
                    (true, false) => 1,
                    (true, true) => 3,
                })),
                ("restart", _) => Some(pvmcmd::Op::Restart { app }),
                _ => None,
            };
            let (Some(tid), Some(op)) = (tid, op) else {
                eprintln!(
                    "usage: pvm-migrate migrate TID HOST | checkpoint [--app [--auto]] TID | restart [--app] TID"
                );
                return ExitCode::from(2);
            };
            match pvmcmd::run(tid, op) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("pvm-migrate {cmd}: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        _ => {
            eprintln!(
                "usage: pvm-migrate probe | migrate TID HOST | checkpoint [--app [--auto]] TID | restart [--app] TID | bench [MB..] [--runs N] [--limit SECS] [--rate 1gbit] [--boost NICE] [--post-only] | bench-ckpt [--tasks 4] [--mb 256] [--runs 3] [--parallel N] [--big-pipes] [--copy each|after] [--boost NICE]"
            );
            ExitCode::from(2)
        }
    }
}
