//! The scheduler on four namespace hosts (pvmd-rs, migration-capable) running a master/worker
//! job: pvm-sched places the workers; marking a host's owner busy (`pvm-sched owner H busy`)
//! clears it of guest tasks by migration while the job goes on with correct results; marked
//! idle, the host gets work again (the next spawns go there). Also `pvm-sched hosts` and the
//! placement/migration log.

mod sched_common;

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use interop_tests::netns::Cluster;
use interop_tests::{stop_pid, Proc, TIMEOUT};
use sched_common::{console, console_owner, our_machine, procs_named, sched_bin, shim_program, start_sched, Lines};

/// Master: spawns `argv[1]` workers (default placement, so the scheduler picks), then runs
/// rounds: one item to every worker, checks every answer (a checksum of the item the worker
/// computes with some CPU work), prints progress. Reads stdin between rounds: `more N` spawns
/// N more workers, `where` prints the workers' hosts, `stop` ends. Each worker holds
/// `argv[2]` MB of memory it has written (the benchmark uses 64) and answers (item,
/// checksum, its tid).
pub const JOB: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <unistd.h>
#include "pvm3.h"
static long work(long x) { long s = 0, i; for (i = 0; i < 20000; i++) s = (s * 31 + x + i) % 1000003; return s; }
static struct pvmhostinfo *hi; static int nh;
static int hidx(int tid) {
    int h = pvm_tidtohost(tid), i, na;
    pvm_config(&nh, &na, &hi);
    for (i = 0; i < nh; i++) if (hi[i].hi_tid == h) return i + 1;
    return -1;
}
int main(int argc, char **argv) {
    int w[64], nw = 0, i, r, bad = 0, rounds = 0, n, mb = argc > 2 ? atoi(argv[2]) : 1;
    char line[64];
    if (argc > 1 && !strcmp(argv[1], "guestworker")) {
        int parent = pvm_parent(), me = pvm_mytid();
        long x, y;
        size_t sz = (size_t)(argc > 2 ? atoi(argv[2]) : 1) << 20;
        char *mem = malloc(sz);
        memset(mem, 7, sz);
        for (;;) {
            pvm_recv(parent, 1);
            pvm_upklong(&x, 1, 1);
            if (x < 0) break;
            y = work(x) + mem[x % sz] - 7;
            pvm_initsend(PvmDataDefault);
            pvm_pklong(&x, 1, 1);
            pvm_pklong(&y, 1, 1);
            pvm_pkint(&me, 1, 1);
            pvm_send(parent, 2);
        }
        pvm_exit();
        return 0;
    }
    setvbuf(stdout, 0, _IOLBF, 0);
    pvm_setopt(PvmAutoErr, 0);
    n = atoi(argv[1]);
    for (;;) {
        struct pollfd p = { 0, POLLIN, 0 };
        if (n > 0) {
            char *a[] = { "guestworker", argc > 2 ? argv[2] : "1", 0 };
            int got = pvm_spawn(argv[0], a, PvmTaskDefault, "", n, w + nw);
            printf("spawned %d:", got);
            for (i = nw; i < nw + n; i++) printf(" h%d", w[i] > 0 ? hidx(w[i]) : w[i]);
            printf("\n");
            if (got != n) { printf("spawn failed\n"); pvm_exit(); return 1; }
            nw += n;
            n = 0;
        }
        for (i = 0; i < nw; i++) {
            long x = (long)rounds * 64 + i;
            pvm_initsend(PvmDataDefault);
            pvm_pklong(&x, 1, 1);
            pvm_send(w[i], 1);
        }
        for (i = 0; i < nw; i++) {
            long x, y; int who;
            pvm_recv(w[i], 2);
            pvm_upklong(&x, 1, 1);
            pvm_upklong(&y, 1, 1);
            pvm_upkint(&who, 1, 1);
            if (x != (long)rounds * 64 + i || y != work(x) || who != w[i]) bad++;
        }
        rounds++;
        if (rounds % 20 == 0) printf("round %d bad %d\n", rounds, bad);
        if (poll(&p, 1, 0) > 0) {
            if (!fgets(line, sizeof line, stdin)) break;
            if (sscanf(line, "more %d", &n) == 1) continue;
            if (!strncmp(line, "where", 5)) {
                printf("workers on:");
                for (i = 0; i < nw; i++) printf(" h%d", hidx(w[i]));
                printf("\n");
            }
            if (!strncmp(line, "stop", 4)) break;
        }
        usleep(5000);
    }
    for (i = 0; i < nw; i++) {
        long x = -1;
        pvm_initsend(PvmDataDefault);
        pvm_pklong(&x, 1, 1);
        pvm_send(w[i], 1);
    }
    printf("done rounds %d bad %d\n", rounds, bad);
    pvm_exit();
    return 0;
}
"#;

fn ask(c: &interop_tests::netns::Cluster, args: &[&str]) -> String {
    let mut cmd = c.command(1, &sched_bin());
    cmd.args(args);
    let (code, out, err) = Proc {
        child: cmd.spawn().unwrap(),
        name: "pvm-sched client".into(),
    }
    .wait(TIMEOUT);
    assert_eq!(code, Some(0), "pvm-sched {args:?}: {out}\n{err}");
    out
}

/// Host numbers (1-based) of a "spawned N: hA hB" or "workers on: ..." line.
fn hosts_of(line: &str) -> Vec<usize> {
    line.split_whitespace()
        .filter_map(|w| w.strip_prefix('h').and_then(|n| n.parse().ok()))
        .collect()
}

#[test]
fn owner_busy_clears_the_host_and_idle_brings_work_back() {
    interop_tests::require_criu();
    let job = shim_program("sched_job", JOB);
    let mut c = Cluster::named("sc", "owner", 4);
    let mut m = our_machine(&mut c, &[]);
    // Measured load is the same for every namespace host (one machine): the tests inject a
    // quiet state per host and turn the automatic owner signals off; the switch decides.
    let (mut sched, sl, _) = start_sched(&c, Some("load 0\nfree_mb 4000\n"), "signals off\nidle_after 0\n");
    assert!(sl.text().contains("pvm-rs daemon"), "{}", sl.text());

    let mut run = c.command(1, &job);
    run.args(["4", "8"])
        .env("LD_LIBRARY_PATH", interop_tests::shim::shim_dir())
        .env("PVM_EXPORT", "LD_LIBRARY_PATH")
        .stdin(Stdio::piped());
    let mut child = run.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut job_p = Proc {
        child,
        name: "job".into(),
    };
    let jl = Lines::of(&mut job_p);
    let ctx = |what: &str| format!("{what}\njob:\n{}\nsched:\n{}\n{}", jl.text(), sl.text(), c.logs());
    let first = jl
        .wait("spawned", TIMEOUT)
        .unwrap_or_else(|| panic!("{}", ctx("no spawn")));
    let placed = hosts_of(&first);
    assert_eq!(placed.len(), 4, "{}", ctx(&first));
    // Spread over the four hosts (equal load, one guest each).
    let mut sorted = placed.clone();
    sorted.sort();
    assert_eq!(sorted, vec![1, 2, 3, 4], "{}", ctx(&first));
    assert!(jl.wait("round 20 bad 0", TIMEOUT).is_some(), "{}", ctx("no progress"));
    assert_eq!(procs_named(&c, 2, "guestworker").len(), 1, "{}", ctx("worker on h2"));

    // The owner of h2 returns.
    let h2 = c.host(2).ip.clone();
    let t0 = Instant::now();
    let a = ask(&c, &["owner", &h2, "busy"]);
    assert!(a.contains("owner busy"), "{a}");
    let cleared = c.wait_for(Duration::from_secs(30), || procs_named(&c, 2, "guestworker").is_empty());
    let took = t0.elapsed();
    assert!(cleared, "{}", ctx("h2 still has guests"));
    eprintln!("h2 free of guest tasks {took:?} after the owner returned");
    // Where the worker processes are now (tids keep their origin host bits after a move, so
    // the namespaces are the ground truth): none on h2, all four still running.
    let per_host = || -> Vec<usize> { (1..=4).map(|k| procs_named(&c, k, "guestworker").len()).collect() };
    let placed_again = c.wait_for(TIMEOUT, || {
        let v = per_host();
        v.iter().sum::<usize>() == 4 && v[1] == 0
    });
    assert!(placed_again, "{:?}\n{}", per_host(), ctx("workers lost"));
    let r = jl.wait("bad", TIMEOUT).unwrap_or_default();
    assert!(r.ends_with("bad 0"), "{}", ctx(&r));
    let hosts = ask(&c, &["hosts"]);
    assert!(
        hosts
            .lines()
            .any(|l| l.starts_with(&h2) && l.contains("busy*") && l.contains(" - ")),
        "{hosts}"
    );
    // The console's `hosts` shows it too, from the scheduler's `pvm-sched.hosts` mailbox
    // entry (refreshed within a second of a change).
    let mut seen = String::new();
    let shown = c.wait_for(Duration::from_secs(5), || {
        seen = console(&c, 1, "hosts\n");
        console_owner(&seen, &h2).as_deref() == Some("busy*")
    });
    assert!(
        shown,
        "console hosts:\n{seen}\n{}",
        ctx("the console does not show h2 busy")
    );
    assert!(!seen.contains("no scheduler publishes"), "{seen}");
    assert!(sl.text().contains(&format!("owner of {h2} returned")), "{}", sl.text());
    assert!(sl.text().contains("moved"), "{}", sl.text());

    // A spawn while h2 is busy does not go there.
    stdin.write_all(b"more 2\n").unwrap();
    let more = jl.wait("spawned", TIMEOUT).unwrap_or_default();
    assert!(!hosts_of(&more).contains(&2), "{}", ctx(&more));

    // Idle again: the next spawn goes to h2 (no guests there, the least loaded host).
    let a = ask(&c, &["owner", &h2, "idle"]);
    assert!(a.contains("owner idle"), "{a}");
    let shown = c.wait_for(Duration::from_secs(5), || {
        seen = console(&c, 1, "hosts\n");
        console_owner(&seen, &h2).as_deref() == Some("idle*")
    });
    assert!(
        shown,
        "console hosts:\n{seen}\n{}",
        ctx("the console does not show h2 idle")
    );
    stdin.write_all(b"more 1\n").unwrap();
    let more = jl.wait("spawned", TIMEOUT).unwrap_or_default();
    assert_eq!(hosts_of(&more), vec![2], "{}", ctx(&more));
    assert!(
        c.wait_for(TIMEOUT, || procs_named(&c, 2, "guestworker").len() == 1),
        "{}",
        ctx("no work on h2 again")
    );
    stdin.write_all(b"stop\n").unwrap();
    let done = jl.wait("done rounds", TIMEOUT).unwrap_or_default();
    assert!(done.ends_with("bad 0"), "{}", ctx(&done));
    let (code, _, _) = job_p.wait(TIMEOUT);
    assert_eq!(code, Some(0), "{}", ctx("job exit"));
    stop_pid(sched.child.id());
    let _ = sched.child.wait();
    m.child.kill().ok();
    let _ = m.child.wait();
}

/// The state letter of a process (`R`, `S`, `T` for stopped...).
fn proc_state(pid: u32) -> char {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').and_then(|(_, r)| r.trim_start().chars().next()))
        .unwrap_or('?')
}

#[test]
fn nowhere_to_go_checkpoints_and_holds_then_resumes() {
    interop_tests::require_criu();
    let job = shim_program("sched_job_hold", JOB);
    let mut c = Cluster::named("sc", "hold", 2);
    let mut m = our_machine(&mut c, &[]);
    let (mut sched, sl, _) = start_sched(&c, None, "signals off\nidle_after 0\n");
    let (h1, h2) = (c.host(1).ip.clone(), c.host(2).ip.clone());
    // h1's owner is at work from the start: the one worker goes to h2.
    assert!(ask(&c, &["owner", &h1, "busy"]).contains("owner busy"));
    let mut run = c.command(1, &job);
    run.args(["1", "8"])
        .env("LD_LIBRARY_PATH", interop_tests::shim::shim_dir())
        .env("PVM_EXPORT", "LD_LIBRARY_PATH")
        .stdin(Stdio::piped());
    let mut child = run.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut job_p = Proc {
        child,
        name: "job".into(),
    };
    let jl = Lines::of(&mut job_p);
    let ctx = |what: &str| format!("{what}\njob:\n{}\nsched:\n{}\n{}", jl.text(), sl.text(), c.logs());
    let first = jl.wait("spawned", TIMEOUT).unwrap_or_default();
    assert_eq!(hosts_of(&first), vec![2], "{}", ctx(&first));
    assert!(jl.wait("round 20 bad 0", TIMEOUT).is_some(), "{}", ctx("no progress"));
    // Now h2's owner returns too: nowhere to go, so checkpoint and stop.
    assert!(ask(&c, &["owner", &h2, "busy"]).contains("owner busy"));
    let held = || {
        let p = procs_named(&c, 2, "guestworker");
        p.len() == 1 && proc_state(p[0]) == 'T'
    };
    assert!(c.wait_for(Duration::from_secs(30), held), "{}", ctx("not held"));
    // The worker can be seen stopped a moment before the scheduler's line about it has been
    // read from its output (seen once on a loaded machine): wait for the line, not only look.
    assert!(sl.text().contains("checkpoint and hold"), "{}", sl.text());
    let stopped = "checkpointed and stopped";
    assert!(
        sl.text().contains(stopped) || sl.wait(stopped, TIMEOUT).is_some(),
        "{}",
        sl.text()
    );
    let hosts = ask(&c, &["hosts"]);
    assert!(hosts.contains("(held)"), "{hosts}");
    // Held: the job waits. Idle again: the worker goes on where it was, results correct.
    std::thread::sleep(Duration::from_millis(500));
    let before = jl.text().matches("round ").count();
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(jl.text().matches("round ").count(), before, "{}", ctx("ran while held"));
    assert!(ask(&c, &["owner", &h2, "idle"]).contains("owner idle"));
    assert!(
        c.wait_for(TIMEOUT, || {
            let p = procs_named(&c, 2, "guestworker");
            p.len() == 1 && proc_state(p[0]) != 'T'
        }),
        "{}",
        ctx("not resumed")
    );
    let n = jl.text().matches("round ").count();
    assert!(
        c.wait_for(TIMEOUT, || jl.text().matches("round ").count() > n + 1),
        "{}",
        ctx("no rounds after resume")
    );
    stdin.write_all(b"stop\n").unwrap();
    let done = jl.wait("done rounds", TIMEOUT).unwrap_or_default();
    assert!(done.ends_with("bad 0"), "{}", ctx(&done));
    let (code, _, _) = job_p.wait(TIMEOUT);
    assert_eq!(code, Some(0), "{}", ctx("job exit"));
    stop_pid(sched.child.id());
    let _ = sched.child.wait();
    m.child.kill().ok();
    let _ = m.child.wait();
}

/// Benchmark (not a test; `ci/bench-sched`): time from "owner returns" (`pvm-sched owner H
/// busy` answered) to "host free of guest tasks" (no guest process left in its namespace) for
/// 4 guests of 64 MB each, moving back and forth between two hosts; also until all 4 run on
/// the other host again. Target: <= 2 s.
#[test]
#[ignore]
fn bench_owner_returns_to_host_free() {
    let runs: usize = std::env::var("SCHED_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let mb: usize = std::env::var("SCHED_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let job = shim_program("sched_job_bench", JOB);
    let mut c = Cluster::named("sc", "bench", 3);
    let mut m = our_machine(&mut c, &[]);
    let (mut sched, sl, _) = start_sched(
        &c,
        Some("load 0\nfree_mb 100000\n"),
        "signals off\nidle_after 0\nmin_free_mb 0\n",
    );
    let ip = |k: usize| c.host(k).ip.clone();
    // Only h2 takes guests at first: the 4 workers all land there.
    ask(&c, &["owner", &ip(1), "busy"]);
    ask(&c, &["owner", &ip(3), "busy"]);
    let mut run = c.command(1, &job);
    run.args(["4", &mb.to_string()])
        .env("LD_LIBRARY_PATH", interop_tests::shim::shim_dir())
        .env("PVM_EXPORT", "LD_LIBRARY_PATH")
        .stdin(Stdio::piped());
    let mut child = run.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut job_p = Proc {
        child,
        name: "job".into(),
    };
    let jl = Lines::of(&mut job_p);
    let ctx = |what: &str| format!("{what}\njob:\n{}\nsched:\n{}\n{}", jl.text(), sl.text(), c.logs());
    let first = jl.wait("spawned", Duration::from_secs(60)).unwrap_or_default();
    assert_eq!(hosts_of(&first), vec![2, 2, 2, 2], "{}", ctx(&first));
    assert!(
        jl.wait("round 20 bad 0", Duration::from_secs(60)).is_some(),
        "{}",
        ctx("no progress")
    );
    let (mut free, mut all) = (Vec::new(), Vec::new());
    let (mut from, mut to) = (2usize, 3usize);
    for _ in 0..runs {
        ask(&c, &["owner", &ip(to), "idle"]);
        let t0 = Instant::now();
        ask(&c, &["owner", &ip(from), "busy"]);
        assert!(
            c.wait_for(Duration::from_secs(60), || procs_named(&c, from, "guestworker")
                .is_empty()),
            "{}",
            ctx("not cleared")
        );
        free.push(t0.elapsed().as_secs_f64());
        assert!(
            c.wait_for(Duration::from_secs(60), || procs_named(&c, to, "guestworker").len()
                == 4),
            "{}",
            ctx("not all moved")
        );
        all.push(t0.elapsed().as_secs_f64());
        let n = jl.text().matches("round ").count();
        assert!(
            c.wait_for(TIMEOUT, || jl.text().matches("round ").count() > n),
            "{}",
            ctx("stalled")
        );
        std::mem::swap(&mut from, &mut to);
    }
    stdin.write_all(b"stop\n").unwrap();
    let done = jl.wait("done rounds", Duration::from_secs(60)).unwrap_or_default();
    assert!(done.ends_with("bad 0"), "{}", ctx(&done));
    let stats = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        (v[v.len() / 2], v[0], v[v.len() - 1])
    };
    let (fm, fmin, fmax) = stats(&mut free);
    let (am, amin, amax) = stats(&mut all);
    println!("bench-sched: 4 guests x {mb} MB, {runs} owner returns (pvmd-rs debug build, stop-and-copy moves)");
    println!("  owner returns -> host free of guest tasks: median {fm:.3} s (min {fmin:.3}, max {fmax:.3}); target <= 2 s: {}", if fm <= 2.0 { "met" } else { "NOT met" });
    println!("  owner returns -> all 4 running on the other host: median {am:.3} s (min {amin:.3}, max {amax:.3})");
    let _ = job_p.wait(TIMEOUT);
    stop_pid(sched.child.id());
    let _ = sched.child.wait();
    m.child.kill().ok();
    let _ = m.child.wait();
}
