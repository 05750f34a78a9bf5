//! A spawned task blocked in `pvm_recv` when its pvmd is killed: its stdout and stderr are
//! pipes to the dead pvmd, so the library's error lines ("EOF on pvmd sock", the PvmAutoErr
//! report) cannot be written (EPIPE, SIGPIPE ignored as the pvmd set it). Legacy libpvm ignores
//! that and `pvm_recv` returns PvmSysErr (-14), again on every later call; our library must do
//! the same (it used to panic on the failed write to stderr and abort the task with SIGABRT).
//! The task writes what its receive calls returned to a file the test reads.

use interop_tests::shim::{Lib, Vm};
use interop_tests::{Kind, Proc};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// The parent spawns itself with argv[1] = a result file; the child tells the parent its pid,
/// blocks in pvm_recv, and once that returns calls it twice more (the pvmd is gone: each must
/// return at once with an error, neither block nor kill the task), then writes the three
/// results and exits 0.
const PROGRAM: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <pvm3.h>
int main(int argc, char **argv) {
    int parent, child, v, r1, r2, r3;
    FILE *f;
    pvm_mytid();
    parent = pvm_parent();
    if (parent < 0) {
        char *args[] = { argv[1], 0 };
        if (pvm_spawn(argv[0], args, PvmTaskDefault, "", 1, &child) != 1) {
            printf("spawn failed %d\n", child);
            fflush(stdout);
            pvm_exit();
            return 1;
        }
        pvm_recv(child, 1);
        pvm_upkint(&v, 1, 1);
        printf("child %d\n", v);
        fflush(stdout);
        for (;;)
            pause();
    }
    v = getpid();
    pvm_initsend(PvmDataDefault);
    pvm_pkint(&v, 1, 1);
    pvm_send(parent, 1);
    r1 = pvm_recv(-1, 99);
    r2 = pvm_recv(-1, 99);
    r3 = pvm_recv(parent, 98);
    f = fopen(argv[1], "w");
    if (!f) return 3;
    fprintf(f, "recv %d %d %d\n", r1, r2, r3);
    fclose(f);
    return 0;
}
"#;

fn compile() -> std::path::PathBuf {
    interop_tests::build_c("lost", PROGRAM, &[])
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').map(|i| s[i + 2..].starts_with('Z')))
        .is_some_and(|zombie| !zombie)
}

/// What the child's three receives returned after its pvmd was killed.
fn results_after_pvmd_killed(kind: Kind, lib: Lib) -> String {
    let vm = Vm::start(kind, "shim-lost-pvmd");
    let result = vm.tmp.path().join("result");
    let exe = compile();
    let mut c = vm.command(exe.to_str().unwrap(), &[result.to_str().unwrap()], lib, lib);
    c.stdout(Stdio::piped()).stderr(Stdio::null());
    let mut parent = Proc {
        child: c.spawn().expect("start the parent"),
        name: format!("lost-pvmd parent {lib:?}"),
    };
    let line = parent.read_line(Duration::from_secs(30));
    let Some(child) = line.strip_prefix("child ").and_then(|p| p.trim().parse::<u32>().ok()) else {
        panic!("parent printed {line:?}; log:\n{}", vm.tmp.log());
    };
    // The child reaches pvm_recv.
    std::thread::sleep(Duration::from_millis(500));
    assert!(alive(child), "{kind:?} {lib:?}: child gone before its pvmd was killed");
    // SAFETY: kill(2) on the pid of the daemon this test started.
    unsafe { libc::kill(vm.daemon.pid() as i32, libc::SIGKILL) };
    let t = Instant::now();
    while alive(child) {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{kind:?} {lib:?}: child {child} still running 10 s after its pvmd died"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(parent);
    std::fs::read_to_string(&result).unwrap_or_else(|_| {
        panic!("{kind:?} {lib:?}: the child died without writing its results (killed by a signal?)")
    })
}

/// The reference: the legacy library returns PvmSysErr from each receive.
#[test]
fn legacy_recv_fails_when_the_pvmd_dies() {
    assert_eq!(
        results_after_pvmd_killed(Kind::Legacy, Lib::Legacy),
        "recv -14 -14 -14\n"
    );
}

#[test]
fn shim_recv_fails_when_the_pvmd_dies() {
    assert_eq!(results_after_pvmd_killed(Kind::Legacy, Lib::Shim), "recv -14 -14 -14\n");
}

#[test]
fn shim_recv_fails_when_our_pvmd_dies() {
    assert_eq!(results_after_pvmd_killed(Kind::Ours, Lib::Shim), "recv -14 -14 -14\n");
}
