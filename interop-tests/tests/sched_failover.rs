//! Host failure under the scheduler (issue 7): pvm-sched places a master/worker job on four
//! namespace hosts (pvmd-rs), takes whole-application checkpoints of it every second
//! (policy `ckpt_interval`, copies of every image on another host, automatic restart), and
//! when a worker host is killed with -9 (its pvmd and its tasks, its image store removed) the
//! application restarts from its last checkpoint on the surviving hosts and finishes with the
//! answer of an undisturbed run. The scheduler's log shows the failure, the restart and the
//! reason; `pvm-sched hosts` shows the application's last checkpoint.

mod sched_common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use interop_tests::netns::Cluster;
use interop_tests::{send_signal, stop_pid, Proc, TIMEOUT};
use sched_common::{our_machine, sched_bin, shim_command, shim_program, start_sched, Lines};

/// `start` (the front end, outside the application): spawns the master through the
/// scheduler (default placement), prints the master's result. `master`: spawns three workers
/// through the scheduler, runs ROUNDS checked rounds with the next round in flight.
const JOB: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "pvm3.h"
static int ROUNDS = 600;
static int NW = 3;
int main(int argc, char **argv) {
    int i, r, v, w[8], bad = 0;
    long expect[8] = {0}, got, total = 0;
    setvbuf(stdout, 0, _IOLBF, 0);
    if (argc > 1 && !strcmp(argv[1], "worker")) {
        int idx, parent = pvm_parent();
        long sum = 0;
        pvm_recv(parent, 3);
        pvm_upkint(&idx, 1, 1);
        for (;;) {
            pvm_recv(parent, 1);
            pvm_upkint(&r, 1, 1);
            if (r < 0) break;
            sum += r * 7 + idx;
            pvm_initsend(PvmDataDefault);
            pvm_pklong(&sum, 1, 1);
            pvm_send(parent, 2);
        }
        pvm_initsend(PvmDataDefault);
        pvm_pklong(&sum, 1, 1);
        pvm_send(parent, 4);
        pvm_exit();
        return 0;
    }
    if (argc > 1 && !strcmp(argv[1], "start")) {
        int m, bufid;
        char *margs[] = { "master", argc > 2 ? argv[2] : "600", argc > 3 ? argv[3] : "3", 0 };
        pvm_catchout(stdout);
        if (pvm_spawn(argv[0], margs, PvmTaskDefault, "", 1, &m) != 1) { printf("master spawn failed %d\n", m); pvm_exit(); return 1; }
        printf("started master t%x\n", m);
        bufid = pvm_trecv(m, 99, &(struct timeval){ 120, 0 });
        if (bufid <= 0) { printf("no result\n"); pvm_exit(); return 1; }
        pvm_upkint(&bad, 1, 1);
        pvm_upklong(&total, 1, 1);
        printf("result bad %d total %ld\n", bad, total);
        pvm_exit();
        return 0;
    }
    {
        char *wargs[] = { "worker", 0 };
        if (argc > 2) ROUNDS = atoi(argv[2]);
        if (argc > 3) NW = atoi(argv[3]);
        if (NW < 1 || NW > 8) NW = 3;
        if (pvm_spawn(argv[0], wargs, PvmTaskDefault, "", NW, w) != NW) { printf("worker spawn failed\n"); pvm_exit(); return 1; }
        for (i = 0; i < NW; i++) {
            printf("worker %d t%x\n", i, w[i]);
            pvm_initsend(PvmDataDefault);
            pvm_pkint(&i, 1, 1);
            pvm_send(w[i], 3);
        }
        r = 1;
        for (i = 0; i < NW; i++) { pvm_initsend(PvmDataDefault); pvm_pkint(&r, 1, 1); pvm_send(w[i], 1); }
        for (r = 1; r <= ROUNDS; r++) {
            for (i = 0; i < NW; i++) {
                pvm_recv(w[i], 2);
                pvm_upklong(&got, 1, 1);
                expect[i] += r * 7 + i;
                if (got != expect[i]) bad++;
            }
            if (r < ROUNDS) {
                v = r + 1;
                for (i = 0; i < NW; i++) { pvm_initsend(PvmDataDefault); pvm_pkint(&v, 1, 1); pvm_send(w[i], 1); }
            }
            if (r % 100 == 0) printf("round %d bad %d\n", r, bad);
            usleep(10000);
        }
        v = -1;
        for (i = 0; i < NW; i++) {
            pvm_initsend(PvmDataDefault); pvm_pkint(&v, 1, 1); pvm_send(w[i], 1);
            pvm_recv(w[i], 4);
            pvm_upklong(&got, 1, 1);
            if (got != expect[i]) bad++;
            total += got;
        }
        printf("master done bad %d total %ld\n", bad, total);
        pvm_initsend(PvmDataDefault);
        pvm_pkint(&bad, 1, 1);
        pvm_pklong(&total, 1, 1);
        pvm_send(pvm_parent(), 99);
        pvm_exit();
        return 0;
    }
}
"#;

/// The answer of an undisturbed run: worker `i` sums `7 r + i` over the rounds.
fn expected_total(rounds: i64, nw: i64) -> i64 {
    (0..nw).map(|i| 7 * rounds * (rounds + 1) / 2 + rounds * i).sum()
}

fn ask(c: &Cluster, args: &[&str]) -> String {
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

#[test]
fn a_placed_job_restarts_from_its_checkpoint_after_a_worker_host_dies() {
    run("failover", false);
}

/// The host that holds the copy of the lost worker's image (the next host after it) has a busy
/// owner: the restart puts the worker there (the only copy), and the scheduler moves it off
/// like any guest.
#[test]
fn a_task_restored_on_a_busy_host_is_moved_off() {
    run("fbusy", true);
}

fn run(tag: &str, busy_copy_host: bool) {
    interop_tests::require_criu();
    let job = shim_program("sched_failover_job", JOB);
    let mut c = Cluster::named("sf", tag, 4);
    let mut m = our_machine(&mut c, &[]);
    let (mut sched, sl, _) = start_sched(&c, Some("load 0\nfree_mb 4000\n"), "signals off\nckpt_interval 1\n");

    let t0 = Instant::now();
    let mut run = shim_command(&c, 1, &job);
    // Long enough, with a busy host, for a move and checkpoints after it.
    // With a busy host: two workers (h2, h3), so that the host after the victim (h4), which
    // holds the copy of its image, has no guest of its own to move off.
    let (rounds, nw): (i64, i64) = if busy_copy_host { (1000, 2) } else { (600, 3) };
    run.arg("start")
        .arg(rounds.to_string())
        .arg(nw.to_string())
        .stdin(Stdio::null());
    let mut job_p = Proc {
        child: run.spawn().unwrap(),
        name: "job".into(),
    };
    let jl = Lines::of(&mut job_p);
    let ctx = |what: &str| format!("{what}\njob:\n{}\nsched:\n{}\n{}", jl.text(), sl.text(), c.logs());
    assert!(
        jl.wait("round 100", Duration::from_secs(30)).is_some(),
        "{}",
        ctx("no progress")
    );
    // Two checkpoints of the application, taken by the scheduler.
    let e2 = c.wait_for(Duration::from_secs(30), || {
        sl.text()
            .lines()
            .any(|l| l.contains("checkpoint of application") && l.contains(" epoch 2 "))
    });
    assert!(e2, "{}", ctx("no second checkpoint by the scheduler"));
    // Where the workers are: the scheduler's placement log.
    let text = sl.text();
    let worker_hosts: Vec<usize> = (0..nw)
        .filter_map(|i| {
            // The master's output comes through the front end's pvm_catchout ("[tX] worker i tY").
            let pat = format!("worker {i} t");
            let all = jl.text();
            let l = all.lines().find(|l| l.contains(&pat))?;
            let tid = format!("t{}", l.split(&pat).nth(1)?.split_whitespace().next()?);
            let place = text.lines().find(|p| p.contains(&format!("place {tid} ")))?;
            let ip = place.split(" on ").nth(1)?.split(':').next()?;
            c.hosts.iter().position(|h| h.ip == ip).map(|k| k + 1)
        })
        .collect();
    assert_eq!(worker_hosts.len(), nw as usize, "{}", ctx("worker placements"));
    // A worker host other than h1 (the scheduler's host, the checkpoint coordinator).
    let victim = *worker_hosts.iter().rev().find(|&&k| k != 1).expect("a worker off h1");
    // Copies of a host's images go to the next host(s) in host order.
    let copy_host = if victim == 4 { 1 } else { victim + 1 };
    if busy_copy_host {
        assert_ne!(copy_host, 1, "the test expects the copy off the scheduler's host");
        let ip = c.host(copy_host).ip.clone();
        assert!(
            !worker_hosts.contains(&copy_host),
            "{}",
            ctx("the copy host runs a worker")
        );
        let a = ask(&c, &["owner", &ip, "busy"]);
        assert!(a.contains("owner busy"), "{a}");
    }
    let hosts = ask(&c, &["hosts"]);
    assert!(hosts.contains("APPLICATION"), "{hosts}");
    eprintln!("{hosts}");

    let t_kill = Instant::now();
    for pid in c.pids(victim) {
        send_signal(pid, libc::SIGKILL);
    }
    let _ = std::fs::remove_dir_all(c.host(victim).tmp.path().join("pvmapp"));
    let res = jl.wait("result bad", Duration::from_secs(60));
    let res = res.unwrap_or_else(|| panic!("{}", ctx("no result")));
    assert_eq!(
        res,
        format!("result bad 0 total {}", expected_total(rounds, nw)),
        "{}",
        ctx(&res)
    );
    let took = t_kill.elapsed();
    let vip = c.host(victim).ip.clone();
    let restarted = c.wait_for(Duration::from_secs(15), || {
        sl.text().lines().any(|l| l.contains("restarted from epoch"))
    });
    let log = sl.text();
    eprintln!("{log}");
    assert!(restarted, "{}", ctx("the scheduler did not see the restart"));
    assert!(
        log.lines()
            .any(|l| l.contains(&format!("host {vip} failed")) && l.contains("restarts from its checkpoint epoch")),
        "{}",
        ctx("no restart decision with its reason")
    );
    let r = log.lines().find(|l| l.contains("restarted from epoch")).unwrap();
    assert!(r.contains(&format!("after the failure of {vip}")), "{r}");
    if busy_copy_host {
        let cip = c.host(copy_host).ip.clone();
        assert!(r.contains(&format!("on {cip} (owner busy)")), "{r}");
        let lost = r
            .split(": t")
            .nth(1)
            .and_then(|x| x.split_whitespace().next())
            .unwrap_or("");
        let off = c.wait_for(Duration::from_secs(20), || {
            sl.text().contains(&format!("t{lost} moved {cip} -> "))
        });
        assert!(off, "{}", ctx("the restored worker was not moved off the busy host"));
        // The application stays checkpointed after the move: a whole-application checkpoint
        // taken AFTER the restored worker moved in succeeds (the daemon used to refuse it,
        // "already parking", and leave the other tasks parked), and none fails.
        let log = sl.text();
        let after: Vec<&str> = log
            .lines()
            .skip_while(|l| !l.contains(&format!("t{lost} moved {cip} -> ")))
            .filter(|l| l.contains("checkpoint of application"))
            .collect();
        assert!(
            after.iter().any(|l| l.contains(" epoch ") && l.contains(" ms: every ")),
            "{}",
            ctx("no checkpoint of the application after the move")
        );
        assert!(
            !after.iter().any(|l| l.contains(" failed ")),
            "{}",
            ctx("a checkpoint after the move failed")
        );
        assert!(!log.contains("no more checkpoints"), "{log}");
    }
    eprintln!(
        "MEASURED sched failover: whole job {:.1} s; kill -9 of h{victim} to the result {:.1} s",
        t0.elapsed().as_secs_f64(),
        took.as_secs_f64()
    );
    let (code, _, _) = job_p.wait(TIMEOUT);
    assert_eq!(code, Some(0), "{}", ctx("job exit"));
    stop_pid(sched.child.id());
    let _ = sched.child.wait();
    m.child.kill().ok();
    let _ = m.child.wait();
}
