//! The park signal (docs/migration.md §4.2) on two pvmd-rs namespace hosts. A worker on our
//! library computes for about 10 s without any PVM call (a loop checked against a closed form);
//! while it computes, the master checkpoints it (`pvm_checkpoint`, one task), moves it to host 2
//! and back (`pvm_migrate`; the restored task announced its signal to host 2 again). The pvmd
//! sends SIGUSR2 with TC_MARK and the library's park thread parks the task at once: every
//! answer must come in well under the pvmd's 10 s park limit (< 3 s) and before the computation
//! ends, the computation must be right, and the numbered messages the master sent meanwhile
//! must all arrive, in order, once the worker returns to PVM calls. Also: a worker that set
//! SIGUSR2 to SIG_IGN after enrolling still parks at its next PVM call (the old path: the
//! checkpoint answers after its computation, no hang), and a task on the legacy library is
//! refused at once and never sent the signal.

use std::time::{Duration, Instant};

use interop_tests::netns::Cluster;
use interop_tests::shim::shim_dir;
use interop_tests::{our_pvmd, Proc, TIMEOUT};

const JOB: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <unistd.h>
#include <sys/time.h>
#include "pvm3.h"
static double now(void) { struct timeval t; gettimeofday(&t, 0); return t.tv_sec + t.tv_usec / 1e6; }
/* sum of i*i for i = 1..n, modulo 2^64 */
static unsigned long closed(unsigned long n) {
    unsigned __int128 m = (unsigned __int128)n * (n + 1) * (2 * n + 1) / 6;
    return (unsigned long)m;
}
/* Computes for `secs` seconds with no PVM call, checking itself every 2^20 steps. */
static void compute(double secs, unsigned long *np, unsigned long *sp, int *bad) {
    volatile unsigned long s = 0, i = 0;
    double t0 = now();
    for (;;) {
        i++;
        s += i * i;
        if ((i & 0xfffff) == 0) {
            if (s != closed(i)) (*bad)++;
            if (now() - t0 > secs) break;
        }
    }
    *np = i;
    *sp = s;
}
static void worker(const char *mode) {
    int parent = pvm_parent(), v, k = 0, disorder = 0, bad = 0;
    unsigned h[4];
    unsigned long n, s;
    double secs = 10.0, tend;
    if (!strcmp(mode, "ign")) { signal(SIGUSR2, SIG_IGN); secs = 4.0; }
    pvm_initsend(PvmDataDefault);
    pvm_send(parent, 1); /* computing now */
    compute(secs, &n, &s, &bad);
    tend = now();
    for (;;) {
        pvm_recv(parent, 3);
        pvm_upkint(&v, 1, 1);
        if (v < 0) break;
        if (v != k + 1) disorder++;
        k = v;
    }
    pvm_initsend(PvmDataDefault);
    /* longs travel as 32 bits in XDR: two halves each */
    h[0] = n >> 32; h[1] = n; h[2] = s >> 32; h[3] = s;
    pvm_pkuint(h, 4, 1);
    pvm_pkint(&bad, 1, 1);
    pvm_pkint(&k, 1, 1);
    pvm_pkint(&disorder, 1, 1);
    pvm_pkdouble(&tend, 1, 1);
    pvm_send(parent, 4);
    pvm_exit();
}
static int i3 = 0;
static double t_moved;
static void numbered(int w, int count) {
    int j;
    for (j = 0; j < count; j++) {
        i3++;
        pvm_initsend(PvmDataDefault);
        pvm_pkint(&i3, 1, 1);
        pvm_send(w, 3);
    }
}
static void result(int w, const char *name) {
    unsigned long n, s;
    int bad, k, disorder, end = -1;
    double tend;
    unsigned h[4];
    pvm_initsend(PvmDataDefault);
    pvm_pkint(&end, 1, 1);
    pvm_send(w, 3);
    pvm_recv(w, 4);
    pvm_upkuint(h, 4, 1);
    n = (unsigned long)h[0] << 32 | h[1];
    s = (unsigned long)h[2] << 32 | h[3];
    pvm_upkint(&bad, 1, 1);
    pvm_upkint(&k, 1, 1);
    pvm_upkint(&disorder, 1, 1);
    pvm_upkdouble(&tend, 1, 1);
    printf("%s: steps %lu right %d checks bad %d got %d out of order %d\n", name, n, s == closed(n), bad, k, disorder);
    printf("%s: computation ended %.3f s after the move\n", name, tend - t_moved);
    fflush(stdout);
}
int main(int argc, char **argv) {
    int w, g, l, r, i;
    double t0;
    char *sig[] = { "sig", 0 }, *ign[] = { "ign", 0 };
    char *largs[] = { "--library-path", "/usr/lib/x86_64-linux-gnu", argv[1], 0 };
    if (pvm_parent() > 0) { worker(argc > 1 ? argv[1] : "sig"); return 0; }
    pvm_setopt(PvmAutoErr, 0);
    pvm_catchout(stdout);
    /* argv: legacy program, host 1, host 2 */
    if (pvm_spawn(argv[0], sig, PvmTaskHost, argv[2], 1, &w) != 1) { printf("spawn failed %d\n", w); pvm_exit(); return 1; }
    if (pvm_spawn(argv[0], ign, PvmTaskHost, argv[2], 1, &g) != 1) { printf("spawn failed %d\n", g); pvm_exit(); return 1; }
    if (pvm_spawn("/lib64/ld-linux-x86-64.so.2", largs, PvmTaskHost, argv[2], 1, &l) != 1) { printf("legacy spawn failed %d\n", l); pvm_exit(); return 1; }
    pvm_recv(w, 1);
    pvm_recv(g, 1);
    pvm_recv(l, 1);
    /* The legacy task: refused at once (it never announced the park protocol). */
    t0 = now();
    r = pvm_checkpoint(l, 0);
    printf("legacy checkpoint %d %.3f\n", r, now() - t0);
    t0 = now();
    r = pvm_migrate(l, argv[3]);
    printf("legacy migrate %d %.3f\n", r, now() - t0);
    fflush(stdout);
    numbered(w, 30);
    numbered(g, 0);
    /* The worker that ignores the signal: answered only once it calls PVM again (~4 s). */
    t0 = now();
    r = pvm_checkpoint(g, 0);
    printf("ignoring checkpoint %d %.3f\n", r, now() - t0);
    fflush(stdout);
    result(g, "ignoring");
    /* The signalled worker is still computing (8 s). */
    numbered(w, 30);
    t0 = now();
    r = pvm_checkpoint(w, 0);
    printf("checkpoint %d %.3f\n", r, now() - t0);
    fflush(stdout);
    /* The checkpoint is answered once the image is written, when the task may not have
       reconnected yet: a second checkpoint and a move asked for at once wait for it. */
    t0 = now();
    r = pvm_checkpoint(w, 0);
    printf("second checkpoint %d %.3f\n", r, now() - t0);
    fflush(stdout);
    numbered(w, 30);
    t0 = now();
    r = pvm_migrate(w, argv[3]);
    printf("migrate %x %.3f\n", r, now() - t0);
    fflush(stdout);
    numbered(w, 30);
    /* And back, still computing: the restored task announced its signal to host 2. */
    t0 = now();
    r = pvm_migrate(w, argv[2]);
    t_moved = now();
    printf("back %x %.3f\n", r, t_moved - t0);
    fflush(stdout);
    numbered(w, 30);
    result(w, "worker");
    /* The legacy task: was it ever signalled? */
    pvm_initsend(PvmDataDefault);
    pvm_send(l, 2);
    pvm_recv(l, 5);
    pvm_upkint(&i, 1, 1);
    printf("legacy got %d signals\n", i);
    fflush(stdout);
    pvm_exit();
    return 0;
}
"#;

/// On the legacy library: counts the SIGUSR2 it receives (none must come).
const LEGACY: &str = r#"
#include <signal.h>
#include <pvm3.h>
static volatile sig_atomic_t got = 0;
static void on(int s) { (void)s; got++; }
int main(void) {
    int parent, n;
    signal(SIGUSR2, on);
    parent = pvm_parent();
    pvm_initsend(PvmDataDefault);
    pvm_send(parent, 1);
    pvm_recv(parent, 2);
    n = got;
    pvm_initsend(PvmDataDefault);
    pvm_pkint(&n, 1, 1);
    pvm_send(parent, 5);
    pvm_exit();
    return 0;
}
"#;

mod mig_common;
use mig_common::{build_helper, gcc, mig_lines, pvmd_command, wait_or_kill};

/// The seconds at the end of the first output line starting with `prefix`.
fn secs(out: &str, prefix: &str) -> Option<(String, f64)> {
    let l = out.lines().find(|l| l.starts_with(prefix))?;
    let t = l.rsplit(' ').next()?.parse().ok()?;
    Some((l.to_string(), t))
}

#[test]
fn computing_worker_parks_on_the_signal() {
    interop_tests::require_legacy_console();
    interop_tests::require_criu();
    build_helper();
    let job = gcc("job", JOB, true);
    let legacy = gcc("legacy", LEGACY, false);
    let mut c = Cluster::named("ps", "mig-ps", 2);
    c.use_nsenter();
    let ips: Vec<String> = (1..=2).map(|k| c.host(k).ip.clone()).collect();
    let hf = c.dir.path().join("hostfile");
    let pvmd = our_pvmd();
    std::fs::write(&hf, format!("{}\n{} dx={}\n", ips[0], ips[1], pvmd.display())).unwrap();
    let mut cmd = pvmd_command(&c, 1);
    // -d0x2: the library features of each task are logged (mig: ... library features).
    cmd.arg(format!("-n{}", ips[0]))
        .arg("-d0x2")
        .env("PVMDLOGMAX", "50000000")
        .arg(&hf);
    let mut m = Proc {
        child: cmd.spawn().expect("start our pvmd"),
        name: "our master pvmd".into(),
    };
    assert!(m.read_line(TIMEOUT).starts_with('/'), "{}", c.logs());
    let conf = || c.console_lists_hosts(1, 2);
    let ready = || c.log(1).matches("window 88").count() >= 1 && conf();
    assert!(
        c.wait_for(Duration::from_secs(20), ready),
        "hosts or DM_XCAPS missing\n{}",
        c.logs()
    );
    let t_job = Instant::now();
    let mut run = c.command(1, &job);
    run.args([legacy.to_str().unwrap(), &ips[0], &ips[1]])
        .env("LD_LIBRARY_PATH", shim_dir())
        .env("PVM_EXPORT", "LD_LIBRARY_PATH");
    let (code, out, err) = wait_or_kill(run.spawn().expect("run the job"), Duration::from_secs(45));
    let logs = || format!("{out}\n{err}\n{}\n{}", mig_lines(&c), c.logs());
    eprintln!("{out}\n{}\njob took {:?}", mig_lines(&c), t_job.elapsed());
    assert_eq!(code, Some(0), "{}", logs());
    // The signalled worker: checkpoint and move answered while it computed, long before its
    // computation (10 s) would have let it call PVM again.
    let (l, t) = secs(&out, "checkpoint ").unwrap_or_else(|| panic!("no checkpoint\n{}", logs()));
    assert!(
        l.starts_with("checkpoint ") && !l.starts_with("checkpoint -"),
        "{l}\n{}",
        logs()
    );
    assert!(t < 3.0, "checkpoint took {t} s: {l}\n{}", logs());
    // Asked for at once after the first answer, while the task may still be reconnecting:
    // waited for, never refused.
    let (l, t) = secs(&out, "second checkpoint ").unwrap_or_else(|| panic!("no second checkpoint\n{}", logs()));
    assert!(!l.starts_with("second checkpoint -"), "{l}\n{}", logs());
    assert!(t < 3.0, "second checkpoint took {t} s: {l}\n{}", logs());
    let (l, t) = secs(&out, "migrate ").unwrap_or_else(|| panic!("no migrate\n{}", logs()));
    assert!(l.starts_with("migrate 80000 "), "{l}\n{}", logs());
    assert!(t < 3.0, "move took {t} s: {l}\n{}", logs());
    let (l, t) = secs(&out, "back ").unwrap_or_else(|| panic!("no move back\n{}", logs()));
    assert!(l.starts_with("back 40000 "), "{l}\n{}", logs());
    assert!(t < 3.0, "move back took {t} s: {l}\n{}", logs());
    // Its computation is right and every message sent meanwhile arrived once, in order.
    let w = out.lines().find(|l| l.starts_with("worker: ")).unwrap_or_default();
    assert!(
        w.contains(" right 1 checks bad 0 got 150 out of order 0"),
        "{w}\n{}",
        logs()
    );
    // ... and they were answered while it still computed (the end time is relative to the
    // answer of the move back) (so not at a PVM call of its own).
    let e = out
        .lines()
        .find_map(|l| l.strip_prefix("worker: computation ended "))
        .and_then(|l| l.split(' ').next()?.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no end time\n{}", logs()));
    assert!(
        e > 0.0,
        "the move was answered only {e} s after the computation\n{}",
        logs()
    );
    // The worker that ignores the signal parks at its next call: the checkpoint succeeds,
    // after its computation (4 s, begun before), never at the 10 s limit.
    let (l, t) = secs(&out, "ignoring checkpoint ").unwrap_or_else(|| panic!("no ignoring\n{}", logs()));
    assert!(!l.starts_with("ignoring checkpoint -"), "{l}\n{}", logs());
    assert!(
        (1.5..9.0).contains(&t),
        "ignoring checkpoint took {t} s: {l}\n{}",
        logs()
    );
    let g = out.lines().find(|l| l.starts_with("ignoring: ")).unwrap_or_default();
    assert!(
        g.contains(" right 1 checks bad 0 got 0 out of order 0"),
        "{g}\n{}",
        logs()
    );
    // The legacy-library task: refused at once (PvmNotImpl), never signalled.
    for p in ["legacy checkpoint ", "legacy migrate "] {
        let (l, t) = secs(&out, p).unwrap_or_else(|| panic!("no {p}\n{}", logs()));
        assert!(l.starts_with(&format!("{p}-24 ")), "{l}\n{}", logs());
        assert!(t < 3.0, "{l}");
    }
    assert!(out.contains("legacy got 0 signals\n"), "{}", logs());
    // Our library announced the park signal (features 0xe0: park, park signal, large
    // fragments; 0x1e0 with the daemon route's arena relay, bit 8, wherever its arena may be
    // made); after the move it announced it again to host 2.
    let h1 = c.log(1);
    assert!(
        h1.contains("library features 0x1e0") || h1.contains("library features 0xe0"),
        "{}",
        logs()
    );
    drop(m);
}
