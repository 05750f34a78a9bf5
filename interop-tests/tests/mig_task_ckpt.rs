//! One-task checkpoint that leaves the task running (docs/migration.md §4): the pvmd asks the
//! task to park (TC_MARK), the task's library reaches its safe point, answers TM_PARK and
//! closes its socket; the pvmd holds messages for it, runs `criu dump -R`, writes the resume
//! ticket; the task reconnects as the same tid and gets the held messages in order.

use interop_tests::shim::{Lib, Vm};
use interop_tests::Kind;
use std::path::PathBuf;
use std::process::Command;

/// The master streams numbered messages to a worker that answers each with a running sum
/// and its tid; the master checks every answer and checkpoints the worker several times while
/// the stream runs. The worker prints progress (caught by the master: output continues).
const JOB: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <sys/time.h>
#include "pvm3.h"
static double now(void) { struct timeval t; gettimeofday(&t, 0); return t.tv_sec + t.tv_usec / 1e6; }
int main(int argc, char **argv) {
    int me = pvm_mytid(), parent = pvm_parent(), i, n = 3000, w, v, who, bad = 0, peer, np = 0, pbad = 0, tag;
    long sum = 0, got;
    char *pargs[] = { "--library-path", "/usr/lib/x86_64-linux-gnu", argc > 1 ? argv[1] : "", 0 };
    if (parent > 0) {
        for (;;) {
            /* From the master (tag 1) and from the legacy-library peer (tag 3, numbered). */
            pvm_bufinfo(pvm_recv(-1, -1), 0, &tag, &who);
            pvm_upkint(&v, 1, 1);
            if (tag == 3) {
                if (v != np + 1) pbad++;
                np = v;
                continue;
            }
            if (v < 0) {
                pvm_initsend(PvmDataDefault);
                pvm_pkint(&np, 1, 1);
                pvm_pkint(&pbad, 1, 1);
                pvm_send(parent, 4);
                break;
            }
            sum += v;
            pvm_initsend(PvmDataDefault);
            pvm_pklong(&sum, 1, 1);
            pvm_pkint(&me, 1, 1);
            pvm_send(parent, 2);
            if (v % 1000 == 0) { printf("worker at %d\n", v); fflush(stdout); }
        }
        pvm_exit();
        return 0;
    }
    pvm_catchout(stdout);
    if (pvm_spawn(argv[0], 0, PvmTaskDefault, "", 1, &w) != 1) { printf("spawn failed %d\n", w); pvm_exit(); return 1; }
    /* The peer runs on the legacy library (ld.so picks it over our LD_LIBRARY_PATH). */
    if (pvm_spawn("/lib64/ld-linux-x86-64.so.2", pargs, PvmTaskDefault, "", 1, &peer) != 1) { printf("peer spawn failed %d\n", peer); pvm_exit(); return 1; }
    pvm_initsend(PvmDataDefault);
    pvm_pkint(&w, 1, 1);
    pvm_send(peer, 20);
    for (i = 1; i <= n; i++) {
        pvm_initsend(PvmDataDefault);
        pvm_pkint(&i, 1, 1);
        pvm_send(w, 1);
        if (i % 700 == 0) {
            double t0 = now();
            int e = pvm_checkpoint(w, 0);
            printf("checkpoint epoch %d %.3f\n", e, now() - t0);
            fflush(stdout);
        }
        pvm_recv(w, 2);
        pvm_upklong(&got, 1, 1);
        pvm_upkint(&who, 1, 1);
        sum += i;
        if (got != sum || who != w) bad++;
    }
    pvm_recv(peer, 21);
    pvm_upkint(&v, 1, 1);
    i = -1;
    pvm_initsend(PvmDataDefault);
    pvm_pkint(&i, 1, 1);
    pvm_send(w, 1);
    pvm_recv(w, 4);
    pvm_upkint(&np, 1, 1);
    pvm_upkint(&pbad, 1, 1);
    printf("done bad %d\n", bad);
    printf("legacy peer sent %d, worker got %d, out of order %d\n", v, np, pbad);
    fflush(stdout);
    pvm_exit();
    return 0;
}
"#;

/// On the legacy library: sends numbered messages to the worker while it is checkpointed.
const LEGACY_PEER: &str = r#"
#include <stdio.h>
#include <unistd.h>
#include <pvm3.h>
int main(void) {
    int parent = pvm_parent(), w, i, n = 2000;
    pvm_recv(parent, 20);
    pvm_upkint(&w, 1, 1);
    for (i = 1; i <= n; i++) {
        pvm_initsend(PvmDataDefault);
        pvm_pkint(&i, 1, 1);
        pvm_send(w, 3);
        if (i % 4 == 0) usleep(1000);
    }
    pvm_initsend(PvmDataDefault);
    pvm_pkint(&n, 1, 1);
    pvm_send(parent, 21);
    pvm_exit();
    return 0;
}
"#;

fn build_legacy_peer() -> PathBuf {
    interop_tests::build_c("mig-ckpt-peer", LEGACY_PEER, &[])
}

fn build_src(name: &str, src: &str) -> PathBuf {
    interop_tests::build_c_ours(name, src)
}

#[test]
fn checkpointed_worker_keeps_its_tid_messages_and_output() {
    let exe = build_src("job", JOB);
    let peer = build_legacy_peer();
    let vm = Vm::start(Kind::Ours, "mig-ckpt");
    let (code, out, err) = vm.run(
        exe.to_str().unwrap(),
        &[peer.to_str().unwrap()],
        Lib::Shim,
        Lib::Shim,
        None,
    );
    let log = vm.tmp.log();
    assert_eq!(code, Some(0), "{out}\n{err}\nlog:\n{log}");
    assert!(out.contains("done bad 0"), "{out}\n{err}\nlog:\n{log}");
    assert!(
        out.contains("legacy peer sent 2000, worker got 2000, out of order 0"),
        "{out}\n{err}\nlog:\n{log}"
    );
    let ours = vm.shim_tasks();
    assert!(ours.iter().any(|t| t.contains("job")), "{ours:?}");
    assert!(
        !ours.iter().any(|t| t.contains("peer")),
        "the peer must run on the legacy library: {ours:?}"
    );
    let epochs: Vec<&str> = out.lines().filter(|l| l.starts_with("checkpoint epoch")).collect();
    assert_eq!(epochs.len(), 4, "{out}\nlog:\n{log}");
    for (k, l) in epochs.iter().enumerate() {
        assert!(
            l.starts_with(&format!("checkpoint epoch {} ", k + 1)),
            "{l}\n{out}\nlog:\n{log}"
        );
    }
    for k in 1..=3 {
        assert!(out.contains(&format!("worker at {}", k * 1000)), "output lost:\n{out}");
    }
    assert_eq!(log.matches("checkpoint epoch").count(), 4, "{log}");
    eprintln!("{}", epochs.join("\n"));
    for l in log.lines().filter(|l| l.contains("mig: ")) {
        eprintln!("{l}");
    }
}

/// Checkpoint the worker at a quiet point (no message in flight), go on, kill -9 it, restart
/// it from the checkpoint as the same tid, roll the master back to the same point, finish.
const RESTART_JOB: &str = r#"
#include <stdio.h>
#include <signal.h>
#include <sys/time.h>
#include "pvm3.h"
static double now(void) { struct timeval t; gettimeofday(&t, 0); return t.tv_sec + t.tv_usec / 1e6; }
int main(int argc, char **argv) {
    int me = pvm_mytid(), parent = pvm_parent(), i, n = 2000, w, v, who, bad = 0, ck_i = 0, killed = 0;
    long sum = 0, got, ck_sum = 0;
    if (parent > 0) {
        for (;;) {
            pvm_recv(parent, 1);
            pvm_upkint(&v, 1, 1);
            if (v < 0) break;
            sum += v;
            pvm_initsend(PvmDataDefault);
            pvm_pklong(&sum, 1, 1);
            pvm_pkint(&me, 1, 1);
            pvm_send(parent, 2);
            if (v % 500 == 0) { printf("worker at %d\n", v); fflush(stdout); }
        }
        pvm_exit();
        return 0;
    }
    pvm_catchout(stdout);
    if (pvm_spawn(argv[0], 0, PvmTaskDefault, "", 1, &w) != 1) { printf("spawn failed %d\n", w); pvm_exit(); return 1; }
    pvm_notify(PvmTaskExit, 9, 1, &w);
    for (i = 1; i <= n; i++) {
        pvm_initsend(PvmDataDefault);
        pvm_pkint(&i, 1, 1);
        pvm_send(w, 1);
        pvm_recv(w, 2);
        pvm_upklong(&got, 1, 1);
        pvm_upkint(&who, 1, 1);
        sum += i;
        if (got != sum || who != w) bad++;
        if (i == 700) {
            int e = pvm_checkpoint(w, 0);
            ck_i = i; ck_sum = sum;
            printf("checkpoint epoch %d\n", e);
            fflush(stdout);
        }
        if (i == 1300 && !killed) {
            double t0;
            killed = 1;
            pvm_sendsig(w, SIGKILL);
            pvm_recv(-1, 9);
            t0 = now();
            v = pvm_restart(w, -1);
            printf("killed, restart epoch %d %.3f\n", v, now() - t0);
            fflush(stdout);
            i = ck_i; sum = ck_sum;
        }
    }
    i = -1;
    pvm_initsend(PvmDataDefault);
    pvm_pkint(&i, 1, 1);
    pvm_send(w, 1);
    printf("done bad %d\n", bad);
    fflush(stdout);
    pvm_exit();
    return 0;
}
"#;

#[test]
fn worker_restarts_from_its_checkpoint_after_kill_9() {
    let pvmd = interop_tests::our_pvmd();
    let cargo = option_env!("CARGO").unwrap_or("cargo");
    let ok = Command::new(cargo)
        .args(["build", "--quiet", "-p", "pvm-migration", "--bin", "pvm-migrate"])
        .current_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."))
        .status()
        .expect("run cargo build for pvm-migrate")
        .success();
    assert!(
        ok && pvmd.with_file_name("pvm-migrate").exists(),
        "pvm-migrate not built"
    );
    let exe = build_src("restart", RESTART_JOB);
    let vm = Vm::start(Kind::Ours, "mig-restart");
    let (code, out, err) = vm.run(exe.to_str().unwrap(), &[], Lib::Shim, Lib::Shim, None);
    let log = vm.tmp.log();
    for l in log.lines().filter(|l| l.contains("mig: ")) {
        eprintln!("{l}");
    }
    assert_eq!(code, Some(0), "{out}\n{err}\nlog:\n{log}");
    assert!(out.contains("checkpoint epoch 1\n"), "{out}\nlog:\n{log}");
    assert!(out.contains("killed, restart epoch 1 "), "{out}\nlog:\n{log}");
    assert!(out.contains("done bad 0"), "{out}\n{err}\nlog:\n{log}");
    // Output from before the kill, and from the restored worker (it passes 1000 again).
    assert!(out.contains("worker at 2000"), "output after the restart lost:\n{out}");
    assert_eq!(out.matches("worker at 1000").count(), 2, "{out}");
    eprintln!("{out}");
}
