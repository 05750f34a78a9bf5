//! The acceptance job of issue 6, as one run (docs/migration.md §7, "Acceptance"): four
//! namespace hosts, 1-3 running pvmd-rs and 4 the legacy pvmd (/usr/bin/pvmd). A master on
//! host 1 drives three workers (our library) through 400 rounds of a checked numerical job:
//! every round each worker adds `r*7 + idx + coef(r, idx)` to its sum and the master checks
//! every sum it gets.
//!
//! * Rounds 1-150 (moves): each worker fetches its coefficient from a data server on the
//!   LEGACY libpvm3, running on the legacy daemon's host (request and answer every round, the
//!   server records every (round, worker) it served), and the master moves the workers
//!   between the pvmd-rs hosts: 12 moves, each worker 4 times, with the next round's
//!   messages in flight; moves out of host 2 are stop-and-copy (its pvmd runs with
//!   `PVMD_MIGRATE_MODE=stop-and-copy`), the others post-copy.
//! * Rounds 151-400 (checkpoints): the workers compute the coefficient themselves and the
//!   master takes a whole-application checkpoint (PvmCkptApp | PvmCkptAutoRestart) every 50
//!   rounds; after the second one host 3 is killed with -9 (its pvmd and the worker living
//!   there, whose tid names host 2; the worker whose tid names host 3 lives on host 1 by
//!   then) and its disk removed; the application restarts from its last checkpoint by itself.
//!
//! The final answer must equal the answer of an undisturbed run (computed here), no checked
//! value may be wrong, and the legacy server must have served each (round, worker) of the
//! first phase exactly once.
//!
//! What is and is not covered: the checkpointed application is the master and its workers (our
//! library, pvmd-rs hosts). The legacy-library server and the `start` task (which spawned the
//! master and catches its output) are outside it: a task on the legacy library cannot park and
//! be dumped, and a task outside an application keeps no memory of a rollback, so the
//! application talks to the legacy server only in the phase before its first checkpoint (a
//! restart never rolls back over an exchange with it). Migration is covered with the legacy
//! library and the legacy daemon in the conversation; checkpoint/restart with them in the
//! machine but not in the application.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use interop_tests::netns::Cluster;

mod mig_common;
use interop_tests::{our_pvmd, send_signal, LEGACY_CONSOLE, LEGACY_PVMD, TIMEOUT};
use mig_common::{build_helper, gcc};

const ROUNDS: i64 = 400;
/// Last round of the phase with moves and the legacy server.
const MOVES_END: i64 = 150;
const NW: i64 = 3;

/// The coefficient of round `r` for worker `idx` (the legacy server's and the workers' own).
fn coef(r: i64, idx: i64) -> i64 {
    (r * r + idx * 13) % 1000
}

/// The answer of an undisturbed run.
fn expected_total() -> i64 {
    (1..=ROUNDS)
        .map(|r| (0..NW).map(|i| r * 7 + i + coef(r, i)).sum::<i64>())
        .sum()
}

/// Our library: `start SERVER H1 H2 H3 H4` (outside the application: starts the legacy
/// server on H4 and the master on H1, catches the output, prints the results), `master
/// SERVERTID H1 H2 H3` (the root) and `worker`.
const JOB: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/time.h>
#include "pvm3.h"
#define ROUNDS 400
#define MOVES_END 150
#define EVERY 50
#define NW 3
static double now(void) { struct timeval t; gettimeofday(&t, 0); return t.tv_sec + t.tv_usec / 1e6; }
static long coef(long r, long idx) { return (r * r + idx * 13) % 1000; }
int main(int argc, char **argv) {
    int me = pvm_mytid(), i, r, w[NW], bad = 0, v, e, server;
    long expect[NW] = {0}, got, total = 0;
    if (argc > 1 && !strcmp(argv[1], "worker")) {
        int idx, parent = pvm_parent(), q[2];
        long sum = 0, c;
        pvm_recv(parent, 3);
        pvm_upkint(&idx, 1, 1);
        pvm_upkint(&server, 1, 1);
        for (;;) {
            pvm_recv(parent, 1);
            pvm_upkint(&r, 1, 1);
            if (r < 0) break;
            if (r <= MOVES_END) {
                /* The coefficient from the legacy-library server, checked. */
                q[0] = r; q[1] = idx;
                pvm_initsend(PvmDataDefault);
                pvm_pkint(q, 2, 1);
                pvm_send(server, 10);
                pvm_recv(server, 11);
                pvm_upkint(q, 2, 1);
                pvm_upklong(&c, 1, 1);
                if (q[0] != r || q[1] != idx || c != coef(r, idx)) { bad++; c = coef(r, idx); }
            } else c = coef(r, idx);
            sum += r * 7 + idx + c;
            pvm_initsend(PvmDataDefault);
            pvm_pklong(&sum, 1, 1);
            pvm_pkint(&bad, 1, 1);
            pvm_send(parent, 2);
            if (r % 100 == 0) { printf("worker %d at round %d\n", idx, r); fflush(stdout); }
        }
        pvm_initsend(PvmDataDefault);
        pvm_pklong(&sum, 1, 1);
        pvm_pkint(&bad, 1, 1);
        pvm_send(parent, 4);
        pvm_exit();
        return 0;
    }
    if (argc > 6 && !strcmp(argv[1], "start")) {
        int m, bufid, served, dups, wrong;
        char *sargs[] = { "--library-path", "/usr/lib/x86_64-linux-gnu", argv[2], 0 };
        char st[16], *margs[] = { "master", st, argv[3], argv[4], argv[5], 0 };
        setvbuf(stdout, 0, _IOLBF, 0);
        pvm_catchout(stdout);
        if (pvm_spawn("/lib64/ld-linux-x86-64.so.2", sargs, PvmTaskHost, argv[6], 1, &server) != 1) { printf("server spawn failed %d\n", server); pvm_exit(); return 1; }
        snprintf(st, sizeof st, "%d", server);
        if (pvm_spawn(argv[0], margs, PvmTaskHost, argv[3], 1, &m) != 1) { printf("master spawn failed %d\n", m); pvm_exit(); return 1; }
        printf("started master t%x server t%x\n", m, server);
        bufid = pvm_trecv(m, 99, &(struct timeval){ 150, 0 });
        if (bufid <= 0) { printf("no result\n"); pvm_exit(); return 1; }
        pvm_upkint(&bad, 1, 1);
        pvm_upklong(&total, 1, 1);
        pvm_initsend(PvmDataDefault);
        pvm_send(server, 22);
        if (pvm_trecv(server, 21, &(struct timeval){ 20, 0 }) <= 0) { printf("no server report\n"); pvm_exit(); return 1; }
        pvm_upkint(&served, 1, 1);
        pvm_upkint(&dups, 1, 1);
        pvm_upkint(&wrong, 1, 1);
        printf("server served %d dups %d wrong %d\n", served, dups, wrong);
        printf("result bad %d total %ld\n", bad, total);
        pvm_exit();
        return 0;
    }
    /* master SERVERTID H1 H2 H3 */
    {
        char *wargs[] = { "worker", 0 };
        /* Where each worker runs; moves j = 0..11 at rounds 10, 20, .. 120: worker j % 3 to
           the next pvmd-rs host. */
        int at[NW], wb;
        server = atoi(argv[2]);
        printf("master t%x\n", me); fflush(stdout);
        for (i = 0; i < NW; i++) {
            at[i] = i;
            if (pvm_spawn(argv[0], wargs, PvmTaskHost, argv[3 + i], 1, &w[i]) != 1) { printf("worker spawn failed %d\n", w[i]); pvm_exit(); return 1; }
            pvm_initsend(PvmDataDefault);
            pvm_pkint(&i, 1, 1);
            pvm_pkint(&server, 1, 1);
            pvm_send(w[i], 3);
        }
        printf("workers t%x t%x t%x\n", w[0], w[1], w[2]); fflush(stdout);
        r = 1;
        for (i = 0; i < NW; i++) { pvm_initsend(PvmDataDefault); pvm_pkint(&r, 1, 1); pvm_send(w[i], 1); }
        for (r = 1; r <= ROUNDS; r++) {
            for (i = 0; i < NW; i++) {
                pvm_recv(w[i], 2);
                pvm_upklong(&got, 1, 1);
                pvm_upkint(&wb, 1, 1);
                expect[i] += r * 7 + i + coef(r, i);
                if (got != expect[i] || wb != 0) { bad++; printf("round %d worker %d: got %ld want %ld (worker bad %d)\n", r, i, got, expect[i], wb); fflush(stdout); }
            }
            /* The next round goes out first: messages in flight at each move and cut. */
            if (r < ROUNDS) {
                v = r + 1;
                for (i = 0; i < NW; i++) { pvm_initsend(PvmDataDefault); pvm_pkint(&v, 1, 1); pvm_send(w[i], 1); }
            }
            if (r % 10 == 0 && r <= 120) {
                int j = r / 10 - 1, k = j % NW, to = (at[k] + 1) % 3, res;
                double t0 = now();
                res = pvm_migrate(w[k], argv[3 + to]);
                printf("move %d: worker %d host %d -> %d: %s %x %.3f s\n", j, k, at[k] + 1, to + 1, res > 0 ? "ok" : "failed", res, now() - t0);
                fflush(stdout);
                if (res > 0) at[k] = to;
            }
            if (r > MOVES_END && r % EVERY == 0 && r < ROUNDS) {
                double t0 = now();
                e = pvm_checkpoint(me, PvmCkptApp | PvmCkptAutoRestart);
                printf("epoch %d at round %d in %.3f s bad %d\n", e, r, now() - t0, bad); fflush(stdout);
            }
            usleep(r > MOVES_END ? 6000 : 2000);
        }
        v = -1;
        for (i = 0; i < NW; i++) {
            pvm_initsend(PvmDataDefault); pvm_pkint(&v, 1, 1); pvm_send(w[i], 1);
            pvm_recv(w[i], 4);
            pvm_upklong(&got, 1, 1);
            pvm_upkint(&wb, 1, 1);
            if (got != expect[i] || wb != 0) bad++;
            total += got;
        }
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

/// The legacy libpvm3 data server: answers `(r, idx)` with `coef(r, idx)`, records every pair
/// it served; told to stop (tag 22), reports how many it served, how many twice, and how many
/// it could not place.
const SERVER: &str = r#"
#include <stdio.h>
#include <pvm3.h>
static unsigned char seen[1001][3];
int main(void) {
    int parent = pvm_parent(), q[2], tag, who, served = 0, dups = 0, wrong = 0;
    long c;
    for (;;) {
        pvm_bufinfo(pvm_recv(-1, -1), 0, &tag, &who);
        if (tag == 22) break;
        if (tag != 10) continue;
        pvm_upkint(q, 2, 1);
        if (q[0] < 1 || q[0] > 1000 || q[1] < 0 || q[1] > 2) { wrong++; continue; }
        if (seen[q[0]][q[1]]++) dups++;
        served++;
        c = ((long)q[0] * q[0] + q[1] * 13) % 1000;
        pvm_initsend(PvmDataDefault);
        pvm_pkint(q, 2, 1);
        pvm_pklong(&c, 1, 1);
        pvm_send(who, 11);
    }
    pvm_initsend(PvmDataDefault);
    pvm_pkint(&served, 1, 1);
    pvm_pkint(&dups, 1, 1);
    pvm_pkint(&wrong, 1, 1);
    pvm_send(parent, 21);
    pvm_exit();
    return 0;
}
"#;

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

fn daemon_lines(c: &Cluster) -> String {
    let mut s = String::new();
    for k in 1..=c.hosts.len() {
        for l in c
            .log(k)
            .lines()
            .filter(|l| l.contains("appckpt: ") || l.contains("mig: "))
        {
            s.push_str(&format!("h{k}: {l}\n"));
        }
    }
    s
}

#[test]
fn acceptance_job_moves_checkpoints_and_survives_a_host_kill() {
    assert!(
        Path::new(LEGACY_CONSOLE).exists() && Path::new(LEGACY_PVMD).exists(),
        "legacy PVM is missing: this test needs the Debian pvm package"
    );
    interop_tests::require_criu();
    build_helper();
    let job = gcc("job", JOB, true);
    let server = gcc("server", SERVER, false);
    let t_all = Instant::now();
    let mut c = Cluster::named("mx", "mig-accept", 4);
    c.use_nsenter();
    // Moves out of host 2 are stop-and-copy: its pvmd (started through rsh) gets the switch.
    let rsh = c.rsh();
    let script = std::fs::read_to_string(&rsh).unwrap();
    let h2 = format!("  {}) ns={};", c.host(2).ip, c.host(2).ns);
    assert!(script.contains(&h2) && script.contains(" env PVM_TMP=$tmp "));
    let script = script
        .replace(&h2, &format!("{h2} extra=PVMD_MIGRATE_MODE=stop-and-copy;"))
        .replace(" env PVM_TMP=$tmp ", " env $extra PVM_TMP=$tmp ")
        .replacen("host=$1; shift\n", "host=$1; shift\nextra=\n", 1);
    std::fs::write(&rsh, script).unwrap();
    let ips: Vec<String> = (1..=4).map(|k| c.host(k).ip.clone()).collect();
    let pvmd = our_pvmd();
    let hf = c.dir.path().join("hostfile");
    std::fs::write(
        &hf,
        format!(
            "{}\n{} dx={}\n{} dx={}\n{} dx={LEGACY_PVMD}\n",
            ips[0],
            ips[1],
            pvmd.display(),
            ips[2],
            pvmd.display(),
            ips[3]
        ),
    )
    .unwrap();
    let mut cmd = c.command(1, &pvmd);
    cmd.arg(format!("-n{}", ips[0]))
        .arg("-d0x4")
        .arg(&hf)
        .env_remove("PVMD_MIGRATE_MODE")
        .stderr(Stdio::null());
    let mut m = interop_tests::Proc {
        child: cmd.spawn().expect("start our pvmd"),
        name: "our master pvmd".into(),
    };
    assert!(m.read_line(TIMEOUT).starts_with('/'), "{}", c.logs());
    let conf = || c.console_lists_hosts(1, 4);
    // The pvmd-rs pairs have exchanged DM_XCAPS (migration features); the console sees 4 hosts.
    let ready = || {
        let n = |k| c.log(k).matches("window 88").count();
        n(1) >= 2 && n(2) >= 2 && n(3) >= 2 && conf()
    };
    assert!(
        c.wait_for(Duration::from_secs(20), ready),
        "hosts or DM_XCAPS missing\n{}",
        c.logs()
    );
    let mut run = c.command(1, &job);
    run.arg("start").arg(&server).args(&ips);
    let mut job = Lines::new(run.spawn().expect("start the job"));
    let e2 = job.wait_for("epoch 2 at round", Duration::from_secs(70));
    let dump = |job: &Lines| format!("{}\n{}\n{}", job.text(), daemon_lines(&c), c.logs());
    assert!(e2.is_some(), "no second checkpoint\n{}", dump(&job));
    // kill -9 of host 3: its pvmd and the tasks living there; its disk goes too.
    let t_kill = Instant::now();
    for pid in c.pids(3) {
        send_signal(pid, libc::SIGKILL);
    }
    let _ = std::fs::remove_dir_all(c.host(3).tmp.path().join("pvmapp"));
    // The worker that lived on host 3 (worker 1: spawned on host 2, so its PVM_TMP is host 2's)
    // may have been killed between a commit's `continue` ticket and its poll for it (this
    // happened in about one run in 25 of mig_app.rs). Make that certain: its restored copy,
    // which waits for a ticket from the same image, must not take the old one.
    let workers = job.wait_for("] workers t", Duration::from_secs(1)).unwrap_or_default();
    let w1 = workers.split_whitespace().nth(3).unwrap_or_else(|| panic!("{workers}"));
    let stale = c.host(2).tmp.path().join(format!("pvmresume.{w1}"));
    std::fs::write(&stale, "continue 12345 2\n").unwrap();
    let res = job.wait_for("result bad", Duration::from_secs(60));
    let text = job.text();
    eprintln!("{text}\n{}", daemon_lines(&c));
    let res = res.unwrap_or_else(|| panic!("no result\n{}", dump(&job)));
    assert_eq!(
        res,
        format!("result bad 0 total {}", expected_total()),
        "{}",
        dump(&job)
    );
    // Every worker moved 4 times, every move worked.
    let moves: Vec<&str> = text.lines().filter(|l| l.contains("] move ")).collect();
    assert_eq!(moves.len(), 12, "{}", dump(&job));
    assert!(moves.iter().all(|l| l.contains(": ok ")), "{}", dump(&job));
    let dl = daemon_lines(&c);
    assert_eq!(dl.matches("(stop-and-copy)").count(), 4, "{dl}");
    assert_eq!(dl.matches("(post-copy, pages served from here)").count(), 8, "{dl}");
    // The legacy server served each (round, worker) of the first phase exactly once.
    assert!(
        text.contains(&format!("server served {} dups 0 wrong 0", MOVES_END * NW)),
        "{}",
        dump(&job)
    );
    // The application restarted by itself from a checkpoint after the host loss.
    assert!(dl.contains("restarting application"), "{}", dump(&job));
    // The worker living on host 3 (its tid names another host: it had moved there) runs
    // again on a surviving host under its tid, from the copy of its image held there; every
    // task of the application was restored (rolled back) from the same epoch.
    let gone = dl
        .lines()
        .find(|l| l.contains(" was on host 3: gone with it"))
        .and_then(|l| l.split("mig: ").nth(1)?.split(' ').next().map(String::from))
        .unwrap_or_else(|| panic!("no task had moved to host 3\n{dl}"));
    assert!(
        dl.lines()
            .any(|l| !l.starts_with("h3") && l.contains(&format!(": {gone} restored from "))),
        "{gone} was not restored elsewhere\n{dl}"
    );
    assert_eq!(dl.lines().filter(|l| l.contains(" restored from t")).count(), 4, "{dl}");
    assert!(dl.contains(&format!("{w1}: stale ticket ")), "{dl}");
    let restart = dl
        .lines()
        .find(|l| l.contains("restart of application") && l.contains("complete"))
        .unwrap_or_else(|| panic!("no complete restart\n{dl}"));
    eprintln!(
        "MEASURED acceptance: whole job {:.1} s; from the kill to the result {:.1} s; {restart}",
        t_all.elapsed().as_secs_f64(),
        t_kill.elapsed().as_secs_f64()
    );
    m.child.kill().ok();
}
