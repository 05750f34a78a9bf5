//! Debian pvm-examples binaries, unchanged, on the Rust libpvm3.so.3: against the legacy pvmd
//! (compared with the same run on the legacy library), in mixed jobs where only the master or
//! only the spawned tasks use our library, and against pvmd-rs.

use interop_tests::shim::{normalise, sorted_lines, Lib, Vm};
use interop_tests::{Kind, Proc, TIMEOUT};
use std::io::Write;

/// Runs `prog args` in a fresh VM; returns (exit code, normalised sorted stdout, stderr,
/// programs that enrolled on our library).
fn job(
    kind: Kind,
    prog: &str,
    args: &[&str],
    me: Lib,
    children: Lib,
) -> (Option<i32>, Vec<String>, String, Vec<String>) {
    let vm = Vm::start(kind, &format!("shim-{prog}"));
    let (code, out, err) = vm.run(prog, args, me, children, None);
    let tasks = vm.shim_tasks();
    (code, sorted_lines(&normalise(&out)), err, tasks)
}

fn same_as_legacy(prog: &str, args: &[&str], shim_programs: &[&str]) {
    let (lc, lout, lerr, ltasks) = job(Kind::Legacy, prog, args, Lib::Legacy, Lib::Legacy);
    let (sc, sout, serr, stasks) = job(Kind::Legacy, prog, args, Lib::Shim, Lib::Shim);
    assert!(ltasks.is_empty(), "legacy run used our library: {ltasks:?}");
    assert_eq!(
        sc, lc,
        "{prog}: exit status\nours stderr:\n{serr}\nlegacy stderr:\n{lerr}"
    );
    assert_eq!(sout, lout, "{prog}: output\nours stderr:\n{serr}");
    let mut want: Vec<String> = shim_programs.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(stasks, want, "{prog}: tasks that ran on our library");
}

#[test]
fn hello_same_as_legacy() {
    same_as_legacy("hello.pvm", &[], &["hello.pvm", "hello_other"]);
}

#[test]
fn master1_same_as_legacy() {
    same_as_legacy("master1", &[], &["master1", "slave1", "slave1", "slave1"]);
}

/// Fortran programs (libfpvm3.a is linked statically and calls the C library).
#[test]
fn fortran_examples_same_as_legacy() {
    same_as_legacy("fmaster1", &[], &["fmaster1", "fslave1", "fslave1", "fslave1"]);
    same_as_legacy("fgexample", &[], &["fgexample", "fgexample", "pvmgs"]);
    same_as_legacy("hitc", &[], &["hitc", "hitc_slave"]);
}

#[test]
fn inherit_contexts_same_as_legacy() {
    same_as_legacy("inherita", &["inherit1"], &["inherit1", "inherit2", "inherita"]);
    same_as_legacy("inherita", &["inherit3"], &["inherit2", "inherit3", "inherita"]);
    same_as_legacy("inheritb", &[], &["inherit2", "inherit2", "inheritb"]);
}

#[test]
fn child_without_parent_fails_like_legacy() {
    // inherit1 run from the shell sends to its (missing) parent: "pvm_send(): Bad parameter".
    let (lc, lout, lerr, _) = job(Kind::Legacy, "inherit1", &[], Lib::Legacy, Lib::Legacy);
    let (sc, sout, serr, _) = job(Kind::Legacy, "inherit1", &[], Lib::Shim, Lib::Shim);
    assert_eq!((sc, sout), (lc, lout));
    assert_eq!(normalise(&serr), normalise(&lerr));
    assert!(serr.contains("pvm_send(): Bad parameter"), "{serr}");
}

/// timing sets PvmRouteDirect and prints round-trip and bandwidth tables: numbers vary, the
/// shape must not.
#[test]
fn timing_runs_with_direct_route_requests() {
    let shape = |lib: Lib| {
        let vm = Vm::start(Kind::Legacy, "shim-timing");
        let (code, out, err) = vm.run("timing", &[], lib, lib, None);
        let lines: Vec<String> = out
            .lines()
            .map(|l| {
                l.chars()
                    .map(|c| if c.is_ascii_digit() { '9' } else { c })
                    .collect::<String>()
            })
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        (
            code,
            lines.len(),
            out.contains("RTT Avg uSec") && out.contains("\ndone"),
            err,
            vm.shim_tasks(),
        )
    };
    let l = shape(Lib::Legacy);
    let s = shape(Lib::Shim);
    assert!(l.2, "legacy timing output incomplete");
    assert!(s.2, "our timing output incomplete; stderr:\n{}", s.3);
    assert_eq!((s.0, s.1), (l.0, l.1));
    assert_eq!(s.4, vec!["timing".to_string(), "timing_slave".to_string()]);
}

/// The legacy console starts `spmd` four times; pvm_siblings waits for the TC_SIBLINGS the
/// spawner multicasts.
fn console_spmd(children: Lib) -> (Vec<String>, Vec<String>) {
    let vm = Vm::start(Kind::Legacy, "shim-spmd");
    let mut c = vm.command("/usr/bin/pvm", &[], Lib::Legacy, children);
    c.stdin(std::process::Stdio::piped());
    let mut child = c.spawn().expect("start console");
    let mut input = child.stdin.take().unwrap();
    input.write_all(b"spawn -4 -> spmd\n").unwrap();
    std::thread::sleep(std::time::Duration::from_secs(3));
    input.write_all(b"quit\n").unwrap();
    drop(input);
    let (_, out, _) = Proc {
        child,
        name: "pvm console".into(),
    }
    .wait(TIMEOUT);
    // Prompts land in front of whichever line comes next: drop them before sorting.
    let lines = sorted_lines(&normalise(&out).replace("pvm> ", ""));
    (lines, vm.shim_tasks())
}

#[test]
fn spmd_siblings_from_console_same_as_legacy() {
    let (l, lt) = console_spmd(Lib::Legacy);
    let (s, st) = console_spmd(Lib::Shim);
    assert!(lt.is_empty());
    assert!(l.iter().any(|x| x.contains("token ring done")), "{l:#?}");
    assert_eq!(s, l);
    assert_eq!(st, vec!["spmd"; 4]);
}

#[test]
fn mixed_job_master_on_shim_slaves_legacy() {
    let (lc, lout, _, _) = job(Kind::Legacy, "master1", &[], Lib::Legacy, Lib::Legacy);
    let (sc, sout, serr, tasks) = job(Kind::Legacy, "master1", &[], Lib::Shim, Lib::Legacy);
    assert_eq!((sc, sout), (lc, lout), "{serr}");
    assert_eq!(tasks, vec!["master1"]);
    let (hc, hout, herr, htasks) = job(Kind::Legacy, "hello.pvm", &[], Lib::Shim, Lib::Legacy);
    let (lhc, lhout, _, _) = job(Kind::Legacy, "hello.pvm", &[], Lib::Legacy, Lib::Legacy);
    assert_eq!((hc, hout), (lhc, lhout), "{herr}");
    assert_eq!(htasks, vec!["hello.pvm"]);
}

#[test]
fn mixed_job_master_legacy_slaves_on_shim() {
    let (lc, lout, _, _) = job(Kind::Legacy, "master1", &[], Lib::Legacy, Lib::Legacy);
    let (sc, sout, serr, tasks) = job(Kind::Legacy, "master1", &[], Lib::Legacy, Lib::Shim);
    assert_eq!((sc, sout), (lc, lout), "{serr}");
    assert_eq!(tasks, vec!["slave1"; 3]);
}

#[test]
fn examples_on_our_daemon_same_as_legacy() {
    for (prog, progs) in [
        ("hello.pvm", vec!["hello.pvm", "hello_other"]),
        ("master1", vec!["master1", "slave1", "slave1", "slave1"]),
    ] {
        let (lc, lout, _, _) = job(Kind::Legacy, prog, &[], Lib::Legacy, Lib::Legacy);
        let (sc, sout, serr, tasks) = job(Kind::Ours, prog, &[], Lib::Shim, Lib::Shim);
        assert_eq!((sc, sout), (lc, lout), "{prog} on pvmd-rs:\n{serr}");
        assert_eq!(tasks, progs);
    }
}
