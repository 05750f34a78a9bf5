//! Whole-application checkpoint and restart (docs/migration.md §5-6) on namespace hosts, all
//! pvmd-rs: a master/worker job on our library checkpoints itself (PvmCkptApp, one copy of each
//! image on another host) while it computes checked results; then a worker host is killed
//! with -9 (pvmd and tasks) and the application restarts from its last complete checkpoint on
//! the surviving hosts by itself, or a worker is killed and the application is restarted by
//! command (`pvm-migrate restart --app`). Each time the final answer must equal the answer of
//! an undisturbed run.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use interop_tests::netns::Cluster;
use interop_tests::shim::shim_dir;
use interop_tests::{our_pvmd, send_signal, LEGACY_CONSOLE, TIMEOUT};

/// One program, four roles: `start MODE H1 H2..` (outside the application: spawns the master
/// on H1, catches the output, prints the result), `master MODE MARKER H2..` (the root),
/// `worker` (one per host H2..).
const JOB: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <unistd.h>
#include <sys/time.h>
#include "pvm3.h"
#define ROUNDS 300
#define EVERY 60
static double now(void) { struct timeval t; gettimeofday(&t, 0); return t.tv_sec + t.tv_usec / 1e6; }
/* APP_MB (measurements only): resident memory of the master and each worker, in every
 * image, checked word by word at the end (bad counts a wrong word once). */
static unsigned long *mem; static size_t words;
static void mem_fill(void) {
    size_t k, mb = getenv("APP_MB") ? (size_t)atoi(getenv("APP_MB")) : 0;
    words = mb * 131072;
    if (words && !(mem = malloc(words * sizeof *mem))) words = 0;
    for (k = 0; k < words; k++) mem[k] = k * 0x9E3779B97F4A7C15UL ^ 0x5A5A5A5AUL;
}
static int mem_bad(void) {
    size_t k;
    for (k = 0; k < words; k++) if (mem[k] != (k * 0x9E3779B97F4A7C15UL ^ 0x5A5A5A5AUL)) return 1;
    return 0;
}
int main(int argc, char **argv) {
    int me = pvm_mytid(), i, r, nw, w[8], bad = 0, v, e;
    long expect[8] = {0}, got, total = 0;
    if (argc > 1 && (!strcmp(argv[1], "worker") || !strcmp(argv[1], "master"))) mem_fill();
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
            if (r % 100 == 0) { printf("worker %d at round %d\n", idx, r); fflush(stdout); }
        }
        if (mem_bad()) sum = -1; /* the master counts it as a wrong sum */
        pvm_initsend(PvmDataDefault);
        pvm_pklong(&sum, 1, 1);
        pvm_send(parent, 4);
        pvm_exit();
        return 0;
    }
    if (argc > 2 && !strcmp(argv[1], "start")) {
        int m, bufid, k = 0;
        char *margs[12];
        setvbuf(stdout, 0, _IOLBF, 0); /* the test reads the caught output as it comes */
        /* argv: start MODE MARKER H1 H2 ..; the master gets: master MODE MARKER H2 .. */
        margs[k++] = "master";
        margs[k++] = argv[2];
        margs[k++] = argv[3];
        for (i = 5; i < argc && k < 11; i++) margs[k++] = argv[i];
        margs[k] = 0;
        pvm_catchout(stdout);
        if (pvm_spawn(argv[0], margs, PvmTaskHost, argv[4], 1, &m) != 1) { printf("master spawn failed %d\n", m); pvm_exit(); return 1; }
        printf("started master t%x\n", m); fflush(stdout);
        bufid = pvm_trecv(m, 99, &(struct timeval){ 150, 0 });
        if (bufid <= 0) { printf("no result\n"); fflush(stdout); pvm_exit(); return 1; }
        pvm_upkint(&bad, 1, 1);
        pvm_upklong(&total, 1, 1);
        printf("result bad %d total %ld\n", bad, total); fflush(stdout);
        pvm_exit();
        return 0;
    }
    /* master MODE MARKER H2 H3 .. */
    {
        int mode = atoi(argv[2]), flags = PvmCkptApp | (mode == 1 ? PvmCkptAutoRestart : 0);
        const char *marker = argv[3];
        char *wargs[] = { "worker", 0 };
        nw = argc - 4;
        if (nw > 8) nw = 8;
        printf("master t%x mode %d\n", me, mode); fflush(stdout);
        for (i = 0; i < nw; i++) {
            if (pvm_spawn(argv[0], wargs, PvmTaskHost, argv[4 + i], 1, &w[i]) != 1) { printf("worker spawn failed %d\n", w[i]); pvm_exit(); return 1; }
            pvm_initsend(PvmDataDefault);
            pvm_pkint(&i, 1, 1);
            pvm_send(w[i], 3);
        }
        r = 1;
        for (i = 0; i < nw; i++) { pvm_initsend(PvmDataDefault); pvm_pkint(&r, 1, 1); pvm_send(w[i], 1); }
        for (r = 1; r <= ROUNDS; r++) {
            for (i = 0; i < nw; i++) {
                pvm_recv(w[i], 2);
                pvm_upklong(&got, 1, 1);
                expect[i] += r * 7 + i;
                if (got != expect[i]) bad++;
            }
            /* The next round goes out before the checkpoint: messages in flight at the cut. */
            if (r < ROUNDS) {
                v = r + 1;
                for (i = 0; i < nw; i++) { pvm_initsend(PvmDataDefault); pvm_pkint(&v, 1, 1); pvm_send(w[i], 1); }
            }
            if (r % EVERY == 0 && r < ROUNDS) {
                double t0 = now();
                e = pvm_checkpoint(me, flags);
                printf("epoch %d at round %d in %.3f s bad %d\n", e, r, now() - t0, bad); fflush(stdout);
            }
            if (mode == 2 && r == 150 && access(marker, F_OK) != 0) {
                /* Once (the marker lives outside every image): a worker dies. */
                fclose(fopen(marker, "w"));
                pvm_sendsig(w[0], SIGKILL);
                printf("killed worker t%x at round %d\n", w[0], r); fflush(stdout);
            }
            usleep(4000);
        }
        v = -1;
        for (i = 0; i < nw; i++) {
            pvm_initsend(PvmDataDefault); pvm_pkint(&v, 1, 1); pvm_send(w[i], 1);
            pvm_recv(w[i], 4);
            pvm_upklong(&got, 1, 1);
            if (got != expect[i]) bad++;
            total += got;
        }
        bad += mem_bad();
        printf("master done bad %d total %ld\n", bad, total); fflush(stdout);
        pvm_initsend(PvmDataDefault);
        pvm_pkint(&bad, 1, 1);
        pvm_pklong(&total, 1, 1);
        pvm_send(pvm_parent(), 99);
        pvm_exit();
        return 0;
    }
}
"#;

const ROUNDS: i64 = 300;

/// The answer of an undisturbed run with `nw` workers.
fn expected_total(nw: i64) -> i64 {
    (1..=ROUNDS).map(|r| (0..nw).map(|i| r * 7 + i).sum::<i64>()).sum()
}

/// Built once per test process: the tests run in parallel, and rebuilding the executable
/// while another test's tasks run from it changes the file under CRIU (a restore then fails
/// with "bad size" for the mapped binary).
fn build_job() -> PathBuf {
    static EXE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    EXE.get_or_init(compile_job).clone()
}

fn compile_job() -> PathBuf {
    interop_tests::build_c_ours("mig-app-job", JOB)
}

fn build_migrate() -> PathBuf {
    let pvmd = our_pvmd();
    let cargo = option_env!("CARGO").unwrap_or("cargo");
    let ok = Command::new(cargo)
        .args(["build", "--quiet", "-p", "pvm-migration", "--bin", "pvm-migrate"])
        .current_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."))
        .status()
        .expect("run cargo build for pvm-migrate")
        .success();
    let bin = pvmd.with_file_name("pvm-migrate");
    assert!(ok && bin.exists(), "pvm-migrate not built");
    bin
}

/// A child whose stdout lines are collected as they come.
struct Lines {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Lines {
    fn new(mut child: Child) -> Lines {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().expect("piped");
        let l = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                l.lock().unwrap().push(line);
            }
        });
        Lines { child, lines }
    }

    fn text(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    fn wait_for(&mut self, what: &str, limit: Duration) -> Option<String> {
        let t = Instant::now();
        while t.elapsed() < limit {
            if let Some(l) = self.lines.lock().unwrap().iter().find(|l| l.contains(what)) {
                return Some(l.clone());
            }
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                std::thread::sleep(Duration::from_millis(200));
                return self.lines.lock().unwrap().iter().find(|l| l.contains(what)).cloned();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A machine of `n` pvmd-rs hosts (master on h1), ready.
fn machine(tag: &str, n: usize) -> (Cluster, interop_tests::Proc) {
    assert!(
        Path::new(LEGACY_CONSOLE).exists(),
        "{LEGACY_CONSOLE} is missing: the multi-host tests need legacy PVM (Debian pvm)"
    );
    let mut c = Cluster::new(tag, n);
    c.use_nsenter();
    let hf = c.dir.path().join("hostfile");
    let mut text = format!("{}\n", c.host(1).ip);
    for k in 2..=n {
        text.push_str(&format!("{} dx={}\n", c.host(k).ip, our_pvmd().display()));
    }
    std::fs::write(&hf, text).unwrap();
    let mut cmd = c.command(1, &our_pvmd());
    cmd.arg(format!("-n{}", c.host(1).ip))
        .arg("-d0x4")
        .arg(&hf)
        .stderr(Stdio::null());
    let mut m = interop_tests::Proc {
        child: cmd.spawn().expect("start our pvmd"),
        name: "our master".into(),
    };
    assert!(m.read_line(TIMEOUT).starts_with('/'), "{}", c.logs());
    // Every slave joined and announced its capabilities (DM_XCAPS v2) to the master.
    let joined = c.wait_for(Duration::from_secs(20), || {
        let log = c.log(1);
        let peers: std::collections::BTreeSet<&str> = log
            .lines()
            .filter_map(|l| l.split("dm_xcaps() host ").nth(1))
            .filter_map(|r| r.split(':').next())
            .collect();
        peers.len() >= n - 1
    });
    assert!(joined, "slaves not ready\n{}", c.logs());
    (c, m)
}

fn start_job(c: &Cluster, exe: &Path, mode: i32, marker: &Path) -> Lines {
    let order: Vec<usize> = (1..=c.hosts.len()).collect();
    start_job_on(c, exe, mode, marker, &order)
}

/// [`start_job`] with the master on host `order[0]` and a worker on each of the others (the
/// `start` task, outside the application, always runs on host 1).
fn start_job_on(c: &Cluster, exe: &Path, mode: i32, marker: &Path, order: &[usize]) -> Lines {
    let mut cmd = c.command(1, exe);
    cmd.arg("start").arg(mode.to_string()).arg(marker);
    // APP_MB=256 (measurements): every task of the application holds that much memory.
    if let Ok(mb) = std::env::var("APP_MB") {
        cmd.env("APP_MB", mb).env("PVM_EXPORT", "APP_MB");
    }
    for k in order {
        cmd.arg(&c.host(*k).ip);
    }
    Lines::new(cmd.spawn().expect("start the job"))
}

/// The end of every CRIU restore log under the hosts' image stores (for failure messages).
fn restore_logs(c: &Cluster) -> String {
    fn walk(d: &Path, found: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, found);
            } else if p
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("restore"))
            {
                found.push(p);
            }
        }
    }
    let mut found = Vec::new();
    let mut s = String::new();
    for h in &c.hosts {
        walk(&h.tmp.path().join("pvmapp"), &mut found);
        for e in std::fs::read_dir(h.tmp.path()).into_iter().flatten().flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with("pvmresume") {
                let t = std::fs::read_to_string(e.path()).unwrap_or_default();
                s.push_str(&format!("left behind: {} = {t:?}\n", e.path().display()));
            }
        }
    }
    for p in found {
        let t = std::fs::read_to_string(&p).unwrap_or_default();
        let lines: Vec<&str> = t.lines().collect();
        s.push_str(&format!(
            "---- {}\n{}\n",
            p.display(),
            lines[lines.len().saturating_sub(12)..].join("\n")
        ));
    }
    s
}

fn app_log_lines(c: &Cluster) -> String {
    let mut s = String::new();
    for k in 1..=c.hosts.len() {
        for l in c.log(k).lines().filter(|l| l.contains("appckpt: ")) {
            s.push_str(&format!("h{k}: {l}\n"));
        }
    }
    s
}

/// A summary of the measured times for docs/migration.md: each committed checkpoint as the
/// coordinator saw it (the tasks are parked for all of it), each `pvm_checkpoint` as the
/// master saw it, the longest CRIU freeze of one dump, and the restarts.
fn measurements(c: &Cluster, job: &str) -> String {
    let log = c.log(1);
    let ms = |l: &str| ms_in(l).unwrap_or(0);
    let ckpt: Vec<u64> = log
        .lines()
        .filter(|l| l.contains("checkpoint of application") && l.contains("complete"))
        .map(ms)
        .collect();
    let restart: Vec<u64> = log
        .lines()
        .filter(|l| l.contains("restart of application") && l.contains("complete"))
        .map(ms)
        .collect();
    let mut freeze = 0u64;
    let mut bytes = 0u64;
    for k in 1..=c.hosts.len() {
        for l in c.log(k).lines().filter(|l| l.contains("longest CRIU freeze")) {
            if let Some(f) = l.split("longest CRIU freeze ").nth(1).and_then(|r| r.split(' ').next()) {
                freeze = freeze.max(f.parse().unwrap_or(0));
            }
            if let Some(b) = l.split("ms, ").nth(1).and_then(|r| r.split(' ').next()) {
                bytes = bytes.max(b.parse().unwrap_or(0));
            }
        }
    }
    // How long after the begin each host's tasks ran on (before the copies were stored).
    let mut run_on = Vec::new();
    for k in 1..=c.hosts.len() {
        for l in c.log(k).lines().filter(|l| l.contains("before the copies are stored")) {
            if let Some(v) = l.split(" tasks run on ").nth(1).and_then(|r| r.split(' ').next()) {
                run_on.push(v.parse::<u64>().unwrap_or(0));
            }
        }
    }
    let calls: Vec<String> = job
        .lines()
        .filter(|l| l.contains("] epoch "))
        .filter_map(|l| l.split(" in ").nth(1)?.split(' ').next().map(String::from))
        .collect();
    format!(
        "app checkpoints (coordinator, ms): {ckpt:?}; pvm_checkpoint in the master (s): {calls:?}; tasks ran on after (ms from the begin, per host and epoch): {run_on:?}; longest CRIU freeze of one dump {freeze} ms; largest per-host image set {bytes} bytes; restarts (ms): {restart:?}"
    )
}

/// The master's tid, from the job's "master tX" line.
fn master_tid(job: &mut Lines) -> String {
    let line = job
        .wait_for("master t", Duration::from_secs(1))
        .expect("the master's tid line");
    line.split_whitespace()
        .find(|w| w.starts_with('t') && w.len() > 1)
        .expect("a tid on the master's line")
        .to_string()
}

/// kill -9 of host `k` (its pvmd and the tasks living there); its disk goes too: a restart
/// must use the copies the other hosts hold.
fn kill_host(c: &Cluster, k: usize) {
    for pid in c.pids(k) {
        send_signal(pid, libc::SIGKILL);
    }
    let _ = std::fs::remove_dir_all(c.host(k).tmp.path().join("pvmapp"));
}

/// `pvm-migrate restart --app TID` on host `k`: whether it succeeded, and what it said.
fn restart_app(c: &Cluster, migrate: &Path, k: usize, tid: &str) -> (bool, String) {
    let mut cmd = c.command(k, migrate);
    cmd.args(["restart", "--app", tid]).env("LD_LIBRARY_PATH", shim_dir());
    let out = cmd.output().expect("pvm-migrate");
    let said = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), said)
}

/// Waits up to `wait` for the job's result and requires an undisturbed run's answer with `nw`
/// workers and no wrong value; the job's output and the pvmds' application log lines.
fn right_result(job: &mut Lines, c: &Cluster, wait: Duration, nw: i64, said: &str) -> (String, String) {
    let res = job.wait_for("result bad", wait);
    let text = job.text();
    let logs = app_log_lines(c);
    eprintln!("{said}\n{text}\n{logs}");
    let res = res.unwrap_or_else(|| panic!("no result\n{text}\n{}\n{}", c.logs(), restore_logs(c)));
    assert_eq!(
        res,
        format!("result bad 0 total {}", expected_total(nw)),
        "{text}\n{}",
        c.logs()
    );
    (text, logs)
}

/// Milliseconds in a log line "... in N ms".
fn ms_in(line: &str) -> Option<u64> {
    let i = line.find(" in ")?;
    line[i + 4..].split_whitespace().next()?.parse().ok()
}

#[test]
fn app_restarts_by_itself_after_a_worker_host_is_killed() {
    let exe = build_job();
    let _ = build_migrate();
    let (c, _m) = machine("ma", 4);
    let marker = c.dir.path().join("marker");
    let mut job = start_job(&c, &exe, 1, &marker);
    let t0 = Instant::now();
    let e2 = job.wait_for("epoch 2 at round", Duration::from_secs(60));
    assert!(e2.is_some(), "no second checkpoint\n{}\n{}", job.text(), c.logs());
    // Every image of epoch 2 has a copy on another host (the worker of h3 on h4).
    // kill -9 of host 3: its pvmd and its worker.
    let t_kill = Instant::now();
    kill_host(&c, 3);
    let (text, logs) = right_result(&mut job, &c, Duration::from_secs(90), 3, "");
    assert!(logs.contains("restarting application"), "{logs}");
    // The worker of the dead host runs again elsewhere, under its old tid (host part 3),
    // from the copy another host held.
    let adopted = logs
        .lines()
        .find(|l| !l.starts_with("h3") && l.contains(": tc") && l.contains(" restored from "))
        .unwrap_or_else(|| panic!("the worker of host 3 was not restored elsewhere\n{logs}"));
    eprintln!("{adopted}");
    // Whether a message in flight at a cut is held by a pvmd (and saved next to the image) or
    // already in the worker's queue (inside the image) depends on timing: both are correct,
    // and the right total above covers both. Report which one this run exercised; asserting
    // it made the test fail about once in 15 runs under load with a right answer.
    let held = logs
        .lines()
        .filter(|l| l.contains("dumped") && !l.contains(" 0 held fragments"))
        .count();
    eprintln!("MEASURED auto: {held} host dumps held in-flight messages at a cut");
    let restart = logs
        .lines()
        .find(|l| l.contains("restart of application") && l.contains("complete"))
        .unwrap_or_else(|| panic!("no complete restart\n{logs}"));
    let detected = logs
        .lines()
        .find(|l| l.contains("restarting application"))
        .and_then(|l| l.split_whitespace().nth(3).map(String::from))
        .unwrap_or_default();
    eprintln!(
        "MEASURED auto: whole job {:.1} s; from the kill to the result {:.1} s; host loss seen at {detected}; restart {} ms; {}",
        t0.elapsed().as_secs_f64(),
        t_kill.elapsed().as_secs_f64(),
        ms_in(restart).unwrap_or(0),
        measurements(&c, &text)
    );
}

#[test]
fn app_restarts_by_command_after_a_worker_is_killed() {
    let exe = build_job();
    let migrate = build_migrate();
    let (c, _m) = machine("mb", 3);
    let marker = c.dir.path().join("marker");
    let mut job = start_job(&c, &exe, 2, &marker);
    let killed = job.wait_for("killed worker", Duration::from_secs(60));
    assert!(killed.is_some(), "{}\n{}", job.text(), c.logs());
    let tid = master_tid(&mut job);
    // Give the pvmds a moment to see the worker's end, then roll the application back.
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    let (ok, said) = restart_app(&c, &migrate, 1, &tid);
    let took = t.elapsed();
    assert!(ok, "{said}\n{}\n{}", job.text(), c.logs());
    let (text, logs) = right_result(&mut job, &c, Duration::from_secs(60), 2, &said);
    let ckpts: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("checkpoint of application") && l.contains("complete"))
        .collect();
    assert!(ckpts.len() >= 4, "{logs}");
    // The tasks ran on once their dumps ended and every host had taken its snapshot, before
    // the copies were stored (and the right total above says that no message of the next
    // epoch slipped into one): on both worker hosts and the master's, at some checkpoint.
    for h in ["h1", "h2", "h3"] {
        assert!(
            logs.lines()
                .any(|l| l.starts_with(h) && l.contains("before the copies are stored")),
            "{h}: tasks never ran on before the commit\n{logs}"
        );
    }
    eprintln!(
        "MEASURED by command: pvm-migrate restart --app answered after {} ms; {}",
        took.as_millis(),
        measurements(&c, &text)
    );
}

/// Without automatic restart: a worker host is killed (-9), the master waits for its worker
/// for ever, and `pvm-migrate restart --app` rolls the application back. The coordinator does
/// not know yet that the host is dead; its first attempt finds out (the host does not answer
/// the rollback) and it plans again without it, for the same caller.
#[test]
fn app_restarts_by_command_after_a_worker_host_is_killed() {
    let exe = build_job();
    let migrate = build_migrate();
    let (c, _m) = machine("mc", 3);
    let marker = c.dir.path().join("marker");
    let mut job = start_job(&c, &exe, 3, &marker);
    let e2 = job.wait_for("epoch 2 at round", Duration::from_secs(60));
    assert!(e2.is_some(), "no second checkpoint\n{}\n{}", job.text(), c.logs());
    let tid = master_tid(&mut job);
    kill_host(&c, 3);
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    let (ok, said) = restart_app(&c, &migrate, 1, &tid);
    let took = t.elapsed();
    assert!(ok, "{said}\n{}\n{}", job.text(), c.logs());
    let (text, logs) = right_result(&mut job, &c, Duration::from_secs(60), 2, &said);
    assert!(
        logs.lines()
            .any(|l| !l.starts_with("h3") && l.contains(": tc") && l.contains(" restored from ")),
        "the worker of host 3 was not restored elsewhere\n{logs}"
    );
    eprintln!(
        "MEASURED by command after a host kill: pvm-migrate restart --app answered after {} ms; {}",
        took.as_millis(),
        measurements(&c, &text)
    );
}

/// The killed host is the master's, so also the coordinator's (docs/migration.md §6.2): the
/// master runs on host 2 (a pvmd-rs slave; `start`, outside the application, on host 1),
/// workers on hosts 1, 3 and 4. At each commit the coordinator (host 2) sent its record to
/// the other hosts; after kill -9 of host 2 (its pvmd and the master) and the loss of its
/// image store, the lowest surviving holder (host 1) takes over and restarts the application
/// from the last epoch by itself: the master from its copy on host 3, under its old tid, with
/// its `pvm_checkpoint` answer; the job finishes with an undisturbed run's answer.
#[test]
fn app_restarts_by_itself_after_the_coordinator_host_is_killed() {
    let exe = build_job();
    let _ = build_migrate();
    let (c, _m) = machine("md", 4);
    let marker = c.dir.path().join("marker");
    let mut job = start_job_on(&c, &exe, 1, &marker, &[2, 1, 3, 4]);
    let t0 = Instant::now();
    let e2 = job.wait_for("epoch 2 at round", Duration::from_secs(60));
    assert!(e2.is_some(), "no second checkpoint\n{}\n{}", job.text(), c.logs());
    let tid = master_tid(&mut job);
    // Every other host holds the coordinator's record of a committed epoch.
    let holders_ok = c.wait_for(Duration::from_secs(5), || {
        [1, 3, 4].iter().all(|k| {
            c.log(*k)
                .lines()
                .any(|l| l.contains("holding the record of application") && l.contains("coordinator host 2"))
        })
    });
    assert!(holders_ok, "the record did not reach every host\n{}", app_log_lines(&c));
    let t_kill = Instant::now();
    kill_host(&c, 2);
    let (text, logs) = right_result(&mut job, &c, Duration::from_secs(90), 3, "");
    // Host 1 alone took over, from a committed epoch.
    let took: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("coordinator host 2 lost:") && l.contains("takes over restart"))
        .collect();
    assert_eq!(took.len(), 1, "exactly one host takes over\n{logs}");
    assert!(
        took[0].starts_with("h1") && took[0].contains(&format!("application {tid} from epoch")),
        "{logs}"
    );
    assert!(
        logs.lines()
            .any(|l| l.starts_with("h1") && l.contains("restart of application") && l.contains("complete")),
        "{logs}"
    );
    // The master (tid of host 2) runs again on a surviving host.
    let restored = logs
        .lines()
        .find(|l| !l.starts_with("h2") && l.contains(&format!(": {tid} ")) && l.contains(" restored from "))
        .unwrap_or_else(|| panic!("the master {tid} was not restored elsewhere\n{logs}"));
    // After the restart, the restored master goes on checkpointing (coordinated by its new
    // host, epochs counted on from the record's).
    let epochs: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("] epoch ") || l.contains(" epoch "))
        .collect();
    eprintln!(
        "MEASURED coordinator host killed: whole job {:.1} s; from the kill to the result {:.1} s; {restored}; {}; epochs {epochs:?}",
        t0.elapsed().as_secs_f64(),
        t_kill.elapsed().as_secs_f64(),
        took[0],
    );
}

/// The same without automatic restart: after kill -9 of the master's (coordinator's) host,
/// the holders see it gone (they beat the coordinator) and say so; `pvm-migrate restart --app`
/// on host 3 (a surviving holder, not the lowest) takes the record over and restarts the
/// application there, the master from its copy.
#[test]
fn app_restarts_by_command_on_a_survivor_after_the_coordinator_host_is_killed() {
    let exe = build_job();
    let migrate = build_migrate();
    let (c, _m) = machine("me", 4);
    let marker = c.dir.path().join("marker");
    let mut job = start_job_on(&c, &exe, 3, &marker, &[2, 1, 3, 4]);
    let e2 = job.wait_for("epoch 2 at round", Duration::from_secs(60));
    assert!(e2.is_some(), "no second checkpoint\n{}\n{}", job.text(), c.logs());
    let tid = master_tid(&mut job);
    let restart = |k: usize| restart_app(&c, &migrate, k, &tid);
    // While the coordinator lives, a holder refuses (a restart must not run beside it).
    let (ok, said) = restart(3);
    assert!(
        !ok,
        "restart accepted while the coordinator lives: {said}\n{}",
        app_log_lines(&c)
    );
    assert!(
        c.log(3).contains("which is alive: ask it"),
        "{said}\n{}",
        app_log_lines(&c)
    );
    kill_host(&c, 2);
    let seen = c.wait_for(Duration::from_secs(20), || {
        c.log(3).lines().any(|l| l.contains("coordinator host 2 lost:"))
    });
    assert!(seen, "host 3 never saw the coordinator's loss\n{}", c.logs());
    let t = Instant::now();
    let (ok, said) = restart(3);
    let took = t.elapsed();
    assert!(ok, "{said}\n{}\n{}", job.text(), c.logs());
    let (_, logs) = right_result(&mut job, &c, Duration::from_secs(60), 3, &said);
    assert!(
        logs.lines()
            .any(|l| l.starts_with("h3") && l.contains("restart of application") && l.contains("complete")),
        "{logs}"
    );
    assert!(
        !logs.lines().any(|l| l.contains("takes over restart")),
        "nobody restarts an application without automatic restart by itself\n{logs}"
    );
    assert!(
        logs.lines()
            .any(|l| !l.starts_with("h2") && l.contains(&format!(": {tid} ")) && l.contains(" restored from ")),
        "the master {tid} was not restored elsewhere\n{logs}"
    );
    eprintln!(
        "MEASURED coordinator host killed, by command on host 3: pvm-migrate restart --app answered after {} ms",
        took.as_millis()
    );
}
