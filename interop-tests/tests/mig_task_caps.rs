//! Migration capability discovery (docs/migration.md §3): pvmd-rs appends a trailer after
//! `schedtid` to its TM_CONN2 reply; the legacy libpvm3 must ignore it, our library uses it to
//! decide whether extension TM_ codes may be sent. `pvm_migrate` must fail at once (never
//! hang) where a move is impossible, with the reason in the pvmd's log.

use interop_tests::shim::{shim_dir, Lib, Vm};
use interop_tests::Kind;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

mod mig_common;
use mig_common::gcc;

/// A task on the legacy library: everything that reads the TM_CONN2 reply (tid, parent,
/// host address for routes, scheduler) and a round trip through the daemon. Run alone it
/// checks itself; spawned, it reports its tid to the parent and waits to be told to leave.
const LEGACY_TASK: &str = r#"
#include <stdio.h>
#include <pvm3.h>
extern int pvmschedtid; /* set from the TM_CONN2 reply, just before the trailer */
int main(void) {
    int me = pvm_mytid(), parent = pvm_parent(), nh, na, v = 0;
    struct pvmhostinfo *hi;
    if (me < 0) { printf("enrol failed %d\n", me); return 1; }
    if (pvm_config(&nh, &na, &hi) < 0) { printf("config failed\n"); return 1; }
    pvm_initsend(PvmDataDefault);
    pvm_pkint(&me, 1, 1);
    pvm_send(me, 5);
    pvm_recv(me, 5);
    pvm_upkint(&v, 1, 1);
    printf("legacy task ok hosts %d self-message %s sched %d\n", nh, v == me ? "ok" : "BAD", pvmschedtid);
    if (parent > 0) {
        pvm_initsend(PvmDataDefault);
        pvm_pkint(&me, 1, 1);
        pvm_send(parent, 1);
        pvm_recv(parent, 2);
    }
    pvm_exit();
    return 0;
}
"#;

/// On our library (built against our header): tries to migrate itself, a legacy-library task
/// and a tid that does not exist, timing each call.
const OUR_TASK: &str = r#"
#include <stdio.h>
#include <sys/time.h>
#include "pvm3.h"
static double now(void) { struct timeval t; gettimeofday(&t, 0); return t.tv_sec + t.tv_usec / 1e6; }
static void try(const char *what, int tid) {
    double t0 = now();
    int r = pvm_migrate(tid, 0);
    printf("%s %s %.3f\n", what, r == PvmNotImpl ? "PvmNotImpl" : r == PvmNoTask ? "PvmNoTask" : r == PvmNoHost ? "PvmNoHost" : "other", now() - t0);
    fflush(stdout);
}
int main(int argc, char **argv) {
    int me = pvm_mytid(), child = 0;
    pvm_setopt(PvmAutoErr, 0);
    if (me < 0) { printf("enrol failed\n"); return 1; }
    try("self", me);
    if (argc > 1) {
        if (pvm_spawn(argv[1], 0, PvmTaskDefault, "", 1, &child) != 1) { printf("spawn failed %d\n", child); pvm_exit(); return 1; }
        pvm_recv(child, 1);
        try("legacy-child", child);
        try("nosuch", (me & 0x3ffc0000) | 0x3fff);
        pvm_initsend(PvmDataDefault);
        pvm_send(child, 2);
    }
    pvm_exit();
    return 0;
}
"#;

fn results(out: &str) -> Vec<(String, String, f64)> {
    out.lines()
        .filter_map(|l| {
            let v: Vec<&str> = l.split(' ').collect();
            (v.len() == 3).then(|| (v[0].to_string(), v[1].to_string(), v[2].parse().unwrap_or(99.0)))
        })
        .collect()
}

#[test]
fn legacy_library_ignores_the_conn2_trailer_of_pvmd_rs() {
    let legacy = gcc("legacy_task", LEGACY_TASK, false);
    let vm = Vm::start(Kind::Ours, "mig-caps-legacy");
    let (code, out, err) = vm.run(legacy.to_str().unwrap(), &[], Lib::Legacy, Lib::Legacy, None);
    assert_eq!(code, Some(0), "{out}\n{err}\nlog:\n{}", vm.tmp.log());
    assert_eq!(out.trim(), "legacy task ok hosts 1 self-message ok sched 0", "{err}");
}

#[test]
fn pvm_migrate_refuses_at_once_with_the_reason() {
    let legacy = gcc("legacy_task", LEGACY_TASK, false);
    let ours = gcc("our_task", OUR_TASK, true);
    let vm = Vm::start(Kind::Ours, "mig-caps-ours");
    let t0 = Instant::now();
    let (code, out, err) = vm.run(
        ours.to_str().unwrap(),
        &[legacy.to_str().unwrap()],
        Lib::Shim,
        Lib::Legacy,
        None,
    );
    assert_eq!(code, Some(0), "{out}\n{err}\nlog:\n{}", vm.tmp.log());
    assert!(t0.elapsed() < Duration::from_secs(10));
    let r = results(&out);
    let names: Vec<(&str, &str)> = r.iter().map(|(a, b, _)| (a.as_str(), b.as_str())).collect();
    assert_eq!(
        names,
        [
            ("self", "PvmNoHost"), // parks, CRIU works here, but no target named
            ("legacy-child", "PvmNotImpl"),
            ("nosuch", "PvmNoTask")
        ],
        "{out}"
    );
    for (w, _, t) in &r {
        assert!(*t < 1.0, "{w} took {t} s");
    }
    let log = vm.tmp.log();
    assert!(log.contains("not in the machine"), "{log}");
    assert!(
        log.contains("uses a library without the park protocol (legacy libpvm3)"),
        "{log}"
    );
    assert!(log.contains("no such task here"), "{log}");
}

#[test]
fn pvm_migrate_on_a_legacy_daemon_fails_without_asking_it() {
    let ours = gcc("our_task", OUR_TASK, true);
    let vm = Vm::start(Kind::Legacy, "mig-caps-ldaemon");
    let (code, out, err) = vm.run(ours.to_str().unwrap(), &[], Lib::Shim, Lib::Legacy, None);
    assert_eq!(code, Some(0), "{out}\n{err}\nlog:\n{}", vm.tmp.log());
    let r = results(&out);
    assert_eq!(r.len(), 1, "{out}");
    assert_eq!(r[0].1, "PvmNotImpl", "{out}");
    assert!(r[0].2 < 0.1, "took {} s: the shim must not ask a legacy daemon", r[0].2);
    let log = vm.tmp.log();
    assert!(
        !log.contains("bogus"),
        "a TM_ extension code reached the legacy daemon:\n{log}"
    );
}

/// The `pvm-migrate` binary (crate pvm-migration), built next to our pvmd.
fn pvm_migrate_bin() -> PathBuf {
    let pvmd = interop_tests::our_pvmd();
    let cargo = option_env!("CARGO").unwrap_or("cargo");
    let ok = Command::new(cargo)
        .args(["build", "--quiet", "-p", "pvm-migration", "--bin", "pvm-migrate"])
        .current_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."))
        .status()
        .expect("run cargo build for pvm-migrate")
        .success();
    assert!(ok, "cargo build -p pvm-migration failed");
    pvmd.with_file_name("pvm-migrate")
}

#[test]
fn migrate_command_reports_the_refusal_or_the_legacy_library() {
    let bin = pvm_migrate_bin();
    let vm = Vm::start(Kind::Ours, "mig-caps-cli");
    // On our library: enrols, asks, and reports the refusal: an unknown host name (found by
    // the library), then a task that does not exist (found by the daemon).
    let me = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    for (host, why) in [("nosuchhost", "No such host"), (me.trim(), "No such task")] {
        let mut c = interop_tests::pvm_command(&bin, vm.tmp.path());
        c.args(["migrate", "t43fff", host]).env("LD_LIBRARY_PATH", shim_dir());
        let out = c.output().unwrap();
        let (so, se) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert_eq!(out.status.code(), Some(1), "{so}\n{se}");
        assert!(so.contains(&format!("asks its pvmd to move t43fff to {host}")), "{so}");
        assert!(
            se.contains("failed after") && se.contains(why),
            "{host}: {se}\nlog:\n{}",
            vm.tmp.log()
        );
    }
    // checkpoint and restart of a task that does not exist: refused by the daemon.
    for cmd in ["checkpoint", "restart"] {
        let mut c = interop_tests::pvm_command(&bin, vm.tmp.path());
        c.args([cmd, "t43fff"]).env("LD_LIBRARY_PATH", shim_dir());
        let out = c.output().unwrap();
        let (so, se) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert_eq!(out.status.code(), Some(1), "{so}\n{se}");
        assert!(so.contains(&format!("to {cmd} t43fff")), "{so}");
        assert!(se.contains("failed after"), "{cmd}: {se}\nlog:\n{}", vm.tmp.log());
    }
    // On the legacy library: refuses before enrolling.
    let mut c = interop_tests::pvm_command(&bin, vm.tmp.path());
    c.args(["migrate", "t40001", "anyhost"])
        .env("PVM_LIBPVM3", interop_tests::shim::LEGACY_LIB);
    let out = c.output().unwrap();
    let se = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{se}");
    assert!(se.contains("legacy libpvm3 (no pvm_migrate)"), "{se}");
}
