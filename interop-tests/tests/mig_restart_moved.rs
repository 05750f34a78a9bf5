//! `pvm_restart(tid, -1)` (TM_RESTART, one task) asked on the host a task was checkpointed on,
//! after the task moved to another host (TM_MIGRATE): the old host keeps the checkpoint and a
//! forwarding entry for the tid, and must refuse the restart while the task lives elsewhere
//! (before the fix it restored a second process answering as the same tid). Once the moved
//! task has exited on its new host, that host announces the exit (DM_TIDMOVED "exited") and
//! the old host may restart the task from its checkpoint again: one process, same tid.
//! Two pvmd-rs namespace hosts, CRIU.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use interop_tests::netns::Cluster;
use interop_tests::shim::shim_dir;
use interop_tests::{our_pvmd, Proc, TIMEOUT};

mod mig_common;
use mig_common::{build_helper, mig_lines, pvmd_command, wait_or_kill};

/// argv[1], argv[2]: the addresses of host 1 and host 2. The worker (spawned on host 1)
/// answers each tag-1 message with its pid and tid (tag 2). The master checkpoints it, moves it
/// to host 2, asks host 1's pvmd to restart it, then counts the answers to one request and the
/// tasks listed under the worker's tid; then kills it and restarts it once more.
const JOB: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include "pvm3.h"
static int ping(int w, int *pid) {
    int n = 0, who, v[2];
    struct timeval t = { 3, 0 };
    pvm_initsend(PvmDataDefault);
    pvm_send(w, 1);
    /* Every answer within 3 s of the request: a duplicate would answer too. */
    while (pvm_trecv(-1, 2, &t) > 0) {
        pvm_upkint(v, 2, 1);
        if (v[1] == w) n++;
        *pid = v[0];
        t.tv_sec = n ? 1 : 3;
    }
    return n;
}
static int listed(int w) {
    int n, k, c = 0;
    struct pvmtaskinfo *ti;
    if (pvm_tasks(0, &n, &ti) < 0) return -1;
    for (k = 0; k < n; k++) if (ti[k].ti_tid == w) c++;
    return c;
}
int main(int argc, char **argv) {
    int w, pid = 0, r, who;
    struct timeval t = { 15, 0 };
    if (pvm_parent() > 0) {
        int tag, v[2];
        v[1] = pvm_mytid();
        for (;;) {
            pvm_bufinfo(pvm_recv(-1, -1), 0, &tag, &who);
            if (tag != 1) break;
            v[0] = getpid();
            pvm_initsend(PvmDataDefault);
            pvm_pkint(v, 2, 1);
            pvm_send(who, 2);
        }
        pvm_exit();
        return 0;
    }
    pvm_setopt(PvmAutoErr, 0);
    if (pvm_spawn(argv[0], 0, PvmTaskHost, argv[1], 1, &w) != 1) { printf("spawn failed %d\n", w); pvm_exit(); return 1; }
    pvm_notify(PvmTaskExit, 9, 1, &w);
    r = ping(w, &pid);
    printf("worker %x answers %d pid %d\n", w, r, pid);
    printf("checkpoint %d\n", pvm_checkpoint(w, 0));
    r = pvm_migrate(w, argv[2]);
    printf("migrate %x\n", r);
    r = ping(w, &pid);
    printf("moved answers %d pid %d\n", r, pid);
    fflush(stdout);
    r = pvm_restart(w, -1);
    printf("restart while moved %d\n", r);
    fflush(stdout);
    sleep(2);
    r = ping(w, &pid);
    printf("after answers %d listed %d\n", r, listed(w));
    fflush(stdout);
    /* The moved task exits on host 2: host 1 learns it, the tid is free again. */
    pvm_kill(w);
    r = pvm_trecv(-1, 9, &t);
    printf("exit notified %d\n", r > 0);
    fflush(stdout);
    for (r = 0; r < 50 && listed(w) > 0; r++) usleep(100000);
    r = pvm_restart(w, -1);
    printf("restart after exit %d\n", r);
    fflush(stdout);
    if (r >= 0) {
        r = ping(w, &pid);
        printf("restarted answers %d listed %d\n", r, listed(w));
        pvm_kill(w);
    }
    fflush(stdout);
    pvm_exit();
    return 0;
}
"#;

#[test]
fn restart_on_the_old_host_of_a_moved_task_is_refused() {
    interop_tests::require_legacy_console();
    interop_tests::require_criu();
    build_helper();
    let job: PathBuf = mig_common::gcc("job", JOB, true);
    let t_all = Instant::now();
    let mut c = Cluster::named("bugsrm", "mig-restart-moved", 2);
    c.use_nsenter();
    let ips: Vec<String> = (1..=2).map(|k| c.host(k).ip.clone()).collect();
    let hf = c.dir.path().join("hostfile");
    std::fs::write(&hf, format!("{}\n{} dx={}\n", ips[0], ips[1], our_pvmd().display())).unwrap();
    let mut cmd = pvmd_command(&c, 1);
    cmd.arg(format!("-n{}", ips[0])).arg(&hf);
    let mut m = Proc {
        child: cmd.spawn().expect("start our pvmd"),
        name: "our master pvmd".into(),
    };
    assert!(m.read_line(TIMEOUT).starts_with('/'), "{}", c.logs());
    // Both daemons have exchanged DM_XCAPS once each log shows the negotiated window.
    let conf = || c.console_lists_hosts(1, 2);
    let ready = || c.log(1).contains("window 88") && c.log(2).contains("window 88") && conf();
    assert!(
        c.wait_for(Duration::from_secs(20), ready),
        "hosts or DM_XCAPS missing\n{}",
        c.logs()
    );
    let mut run = c.command(1, &job);
    run.args([&ips[0], &ips[1]])
        .env("LD_LIBRARY_PATH", shim_dir())
        .env("PVM_EXPORT", "LD_LIBRARY_PATH");
    let (code, out, err) = wait_or_kill(run.spawn().expect("run the job"), Duration::from_secs(80));
    let logs = || format!("{out}\n{err}\n{}\n{}", mig_lines(&c), c.logs());
    eprintln!("{out}\n{}", mig_lines(&c));
    assert_eq!(code, Some(0), "{}", logs());
    assert!(out.contains("\ncheckpoint 1\n"), "{}", logs());
    assert!(out.contains("\nmigrate 80000\n"), "{}", logs());
    assert!(out.contains("\nmoved answers 1 "), "{}", logs());
    // Refused with PvmBadParam (-2), saying where the task runs.
    assert!(out.contains("\nrestart while moved -2\n"), "{}", logs());
    assert!(c.log(1).contains("is running on host 2 (it moved there)"), "{}", logs());
    // Only the moved task answers as that tid, and only one task of the machine has it.
    assert!(out.contains("\nafter answers 1 listed 1\n"), "{}", logs());
    // After its exit on host 2 the tid is free: the checkpoint on host 1 can be restarted,
    // and again exactly one process answers as that tid.
    assert!(out.contains("\nexit notified 1\n"), "{}", logs());
    assert!(out.contains("\nrestart after exit 1\n"), "{}", logs());
    assert!(out.contains("\nrestarted answers 1 listed 1\n"), "{}", logs());
    assert!(t_all.elapsed() < Duration::from_secs(120));
    m.child.kill().ok();
}
