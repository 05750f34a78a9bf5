//! A task blocked in `pvm_recv` whose peer is killed must go on blocking without using the CPU
//! (the peer's direct route is closed and dropped, as legacy does), and a task whose pvmd is
//! killed must get an error back instead of spinning or hanging.

use interop_tests::shim::{Lib, Vm};
use interop_tests::{Kind, Proc};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// The parent spawns itself; the child (argv[1] "direct" or "default", argv[2] "parent" or
/// "any") sends its pid and socket count to the parent, then blocks in pvm_recv for a message
/// that never comes. The parent prints one line, then sends a 16 MB message that the child,
/// asleep for 2 s, does not read at once, and is killed while that send is blocked.
const PROGRAM: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <pvm3.h>
#define BIG (16 << 20)
int main(int argc, char **argv) {
    int parent, child, v[2], *fds, rc;
    char *big;
    pvm_mytid();
    parent = pvm_parent();
    if (parent < 0) {
        char *args[] = { argv[1], argv[2], 0 };
        if (pvm_spawn(argv[0], args, PvmTaskDefault, "", 1, &child) != 1) {
            printf("spawn failed %d\n", child);
            fflush(stdout);
            pvm_exit();
            return 1;
        }
        pvm_recv(child, 1);
        pvm_recv(child, 2);
        pvm_upkint(v, 2, 1);
        printf("child %d fds %d\n", v[0], v[1]);
        fflush(stdout);
        /* Killed while this large message is still on its way: the child then sees the
           route end in the middle of a fragment. */
        big = calloc(BIG, 1);
        pvm_initsend(PvmDataRaw);
        pvm_pkbyte(big, BIG, 1);
        pvm_send(child, 5);
        for (;;)
            pause();
    }
    if (!strcmp(argv[1], "direct"))
        pvm_setopt(PvmRoute, PvmRouteDirect);
    pvm_initsend(PvmDataDefault);
    pvm_send(parent, 1);
    v[0] = getpid();
    v[1] = pvm_getfds(&fds);
    pvm_initsend(PvmDataDefault);
    pvm_pkint(v, 2, 1);
    pvm_send(parent, 2);
    sleep(2);
    rc = pvm_recv(strcmp(argv[2], "parent") ? -1 : parent, 99);
    printf("child recv returned %d\n", rc);
    return rc < 0 ? 2 : 0;
}
"#;

fn compile() -> std::path::PathBuf {
    interop_tests::build_c("spin", PROGRAM, &[])
}

/// utime + stime of a process, in clock ticks; None once it is gone or a zombie.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    if f.first() == Some(&"Z") {
        return None;
    }
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn ticks_per_second() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// Starts the pair; returns the parent, the child's pid and its socket count.
fn start(vm: &Vm, lib: Lib, route: &str, src: &str) -> (Proc, u32, i32) {
    let exe = compile();
    let mut c = vm.command(exe.to_str().unwrap(), &[route, src], lib, lib);
    c.stdout(Stdio::piped()).stderr(Stdio::null());
    let mut parent = Proc {
        child: c.spawn().expect("start the parent"),
        name: format!("spin parent {lib:?} {route} {src}"),
    };
    let line = parent.read_line(Duration::from_secs(30));
    let w: Vec<&str> = line.split_whitespace().collect();
    let (Some(pid), Some(fds)) = (
        w.get(1).and_then(|x| x.parse::<u32>().ok()),
        w.get(3).and_then(|x| x.parse::<i32>().ok()),
    ) else {
        panic!("parent printed {line:?}; log:\n{}", vm.tmp.log());
    };
    assert_eq!(w[0], "child", "parent printed {line:?}");
    (parent, pid, fds)
}

/// CPU seconds the child uses over `span` after its parent is killed with SIGKILL.
fn cpu_after_parent_killed(kind: Kind, lib: Lib, route: &str, src: &str) -> f64 {
    let vm = Vm::start(kind, "shim-spin");
    let (parent, child, fds) = start(&vm, lib, route, src);
    std::thread::sleep(Duration::from_millis(300));
    let want_fds = if route == "direct" { 2 } else { 1 };
    assert_eq!(fds, want_fds, "{lib:?} {route}: child socket count");
    // SAFETY: kill(2) on the pid of a process this test started.
    unsafe { libc::kill(parent.pid() as i32, libc::SIGKILL) };
    drop(parent);
    // The child wakes up and reaches pvm_recv before the measure starts.
    std::thread::sleep(Duration::from_millis(2500));
    let before = cpu_ticks(child).expect("child alive after its parent died");
    std::thread::sleep(Duration::from_secs(2));
    let after = cpu_ticks(child).expect("child alive 2 s after its parent died");
    // Then the pvmd dies: the blocked receive must fail and the child exit, not spin or hang.
    let t = Instant::now();
    // SAFETY: kill(2) on the pid of the daemon this test started.
    unsafe { libc::kill(vm.daemon.pid() as i32, libc::SIGKILL) };
    while cpu_ticks(child).is_some() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{lib:?} {route} {src}: child {child} still running 10 s after its pvmd died"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (after - before) as f64 / ticks_per_second() as f64
}

fn check(kind: Kind, lib: Lib, cases: &[(&str, &str)]) {
    for &(route, src) in cases {
        let cpu = cpu_after_parent_killed(kind, lib, route, src);
        assert!(
            cpu < 0.1,
            "{lib:?} library on the {kind:?} pvmd, {route} route, recv from {src}: the child used {cpu:.2} s of CPU in 2 s after its parent was killed"
        );
    }
}

const ALL: &[(&str, &str)] = &[
    ("direct", "parent"),
    ("direct", "any"),
    ("default", "parent"),
    ("default", "any"),
];

/// The reference: the legacy library blocks quietly.
#[test]
fn legacy_blocks_quietly_after_peer_dies() {
    check(Kind::Legacy, Lib::Legacy, ALL);
}

#[test]
fn shim_blocks_quietly_after_peer_dies() {
    check(Kind::Legacy, Lib::Shim, ALL);
}

#[test]
fn shim_blocks_quietly_after_peer_dies_on_our_pvmd() {
    check(Kind::Ours, Lib::Shim, &[("direct", "parent"), ("default", "any")]);
}
