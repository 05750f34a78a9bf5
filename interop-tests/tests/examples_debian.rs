//! Every Debian `pvm-examples` program that runs on one host, under our daemon and under the
//! legacy one, outputs compared after normalisation. One test per program so a failure names it;
//! the list with its status is in docs/examples.md.
//!
//! How each program is run follows the lab notes (shared/lab/expected/SUMMARY.md): some read
//! stdin, some must be spawned from the console (they use pvm_siblings or need exactly two
//! copies), the mailbox ones are small shell scenarios. Group programs find the legacy pvmgs in
//! `$HOME/pvm3/bin/LINUX64`, the legacy default exec path, as PVM users install it.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use interop_tests::*;

/// Every program of the Debian package, linked into the test's exec path.
const PROGRAMS: &[&str] = &[
    "dbwtest",
    "fgexample",
    "fmaster1",
    "frsg",
    "fslave1",
    "fspmd",
    "ge",
    "gexamp",
    "gexample",
    "gmbi",
    "gs.pvm",
    "hello.pvm",
    "hello_other",
    "hitc",
    "hitc_slave",
    "ibwtest",
    "inherit1",
    "inherit2",
    "inherit3",
    "inherita",
    "inheritb",
    "joinleave",
    "lmbi",
    "master1",
    "mhf_server",
    "mhf_tickle",
    "mtile",
    "pbwtest",
    "rbwtest",
    "rme",
    "slave1",
    "spmd",
    "task0",
    "task1",
    "task_end",
    "thb",
    "timing",
    "timing_slave",
    "tjf",
    "tjl",
    "tnb",
    "trsg",
    "tst",
    "xep",
    "pvmgs",
];

#[derive(Clone, Copy)]
enum How {
    /// Started from the shell: command line and optional stdin.
    Shell(&'static str, Option<&'static str>),
    /// Typed into the legacy console, which then waits until job 1 finishes.
    Console(&'static str),
    /// A bash script (several programs, background jobs).
    Script(&'static str),
}

#[derive(Clone, Copy)]
struct Example {
    how: How,
    /// Lines may come in any order (several tasks write, or the console interleaves).
    sort: bool,
    /// Output holds timings: every number is replaced by `N`.
    numbers: bool,
    /// A line printed in a polling loop: repeats count as one.
    dedup: bool,
}

const fn ex(how: How) -> Example {
    Example {
        how,
        sort: false,
        numbers: false,
        dedup: false,
    }
}

const fn sorted(how: How) -> Example {
    Example {
        how,
        sort: true,
        numbers: false,
        dedup: false,
    }
}

const fn timed(how: How) -> Example {
    Example {
        how,
        sort: true,
        numbers: true,
        dedup: false,
    }
}

struct Env {
    tmp: TmpDir,
    home: PathBuf,
    _daemon: Proc,
}

fn setup(kind: Kind, name: &str) -> Env {
    let tmp = TmpDir::new(&format!("ex-{}-{kind:?}", name.replace('.', "_")));
    let home = tmp.path().join("home");
    let bin = home.join("pvm3/bin/LINUX64");
    std::fs::create_dir_all(&bin).unwrap();
    for p in PROGRAMS {
        let src = Path::new("/usr/bin").join(p);
        assert!(
            src.exists(),
            "{} is missing: install the Debian packages pvm-examples and pvm",
            src.display()
        );
        std::os::unix::fs::symlink(&src, bin.join(p)).unwrap();
    }
    let bin = match kind {
        Kind::Ours => our_pvmd(),
        Kind::Legacy => PathBuf::from(LEGACY_PVMD),
    };
    let mut c = pvm_command(&bin, tmp.path());
    c.env("HOME", &home).current_dir(&home).stderr(Stdio::null());
    let mut p = Proc {
        child: c.spawn().expect("start pvmd"),
        name: format!("{kind:?} pvmd"),
    };
    let line = p.read_line(TIMEOUT);
    assert!(
        line.starts_with('/'),
        "{kind:?} pvmd said {line:?}; log:\n{}",
        tmp.log()
    );
    Env { tmp, home, _daemon: p }
}

fn command(env: &Env, program: &Path) -> Command {
    let mut c = pvm_command(program, env.tmp.path());
    c.env("HOME", &env.home).env_remove("DISPLAY").current_dir(&env.home);
    c
}

/// Runs one example against one daemon; returns its raw output with the exit status appended.
fn run_raw(kind: Kind, name: &str, how: How) -> (String, String) {
    let env = setup(kind, name);
    let timeout = Duration::from_secs(60);
    let (code, out, err) = match how {
        How::Shell(cmdline, input) => {
            let mut words = cmdline.split_whitespace();
            let prog = Path::new("/usr/bin").join(words.next().unwrap());
            let mut c = command(&env, &prog);
            c.args(words).stdin(Stdio::piped());
            let mut child = c.spawn().expect("start example");
            let mut stdin = child.stdin.take().unwrap();
            if let Some(i) = input {
                stdin.write_all(i.as_bytes()).unwrap();
            }
            drop(stdin);
            Proc {
                child,
                name: format!("{kind:?} {name}"),
            }
            .wait(timeout)
        }
        How::Script(script) => {
            let mut c = command(&env, Path::new("/bin/bash"));
            c.args(["-c", script]);
            Proc {
                child: c.spawn().expect("start bash"),
                name: format!("{kind:?} {name}"),
            }
            .wait(timeout)
        }
        How::Console(line) => console(&env, kind, name, line, timeout),
    };
    let log = env.tmp.log();
    drop(env);
    (format!("{out}{err}-- exit {code:?}\n"), log)
}

/// Types `line` into the legacy console, waits until it reports job 1 finished, then quits.
fn console(env: &Env, kind: Kind, name: &str, line: &str, timeout: Duration) -> (Option<i32>, String, String) {
    // Unbuffered through stdbuf: on a pipe the console's job output would sit in its stdio
    // buffer and "[1] finished" never show up until it exits.
    let mut c = command(env, Path::new("/usr/bin/stdbuf"));
    c.args(["-o0", LEGACY_CONSOLE])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("start the legacy console");
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = Arc::clone(&seen);
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            s2.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    stdin.write_all(format!("{line}\n").as_bytes()).unwrap();
    let t = Instant::now();
    loop {
        let text = String::from_utf8_lossy(&seen.lock().unwrap()).into_owned();
        if text.contains("[1] finished") {
            break;
        }
        assert!(
            t.elapsed() < timeout,
            "{kind:?} {name}: job did not finish within {timeout:?}; console said:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    stdin.write_all(b"quit\n").unwrap();
    drop(stdin);
    let (code, _, err) = Proc {
        child,
        name: format!("{kind:?} console for {name}"),
    }
    .wait(TIMEOUT);
    reader.join().unwrap();
    let out = String::from_utf8_lossy(&seen.lock().unwrap()).into_owned();
    (code, out, err)
}

/// Console prompts glue onto task output lines; timings vary run to run.
fn normalise(raw: &str, e: Example) -> Vec<String> {
    let mut lines: Vec<String> = raw
        .replace("pvm> ", "\n")
        .lines()
        .map(|l| {
            let l = l.trim_end();
            if let Some(l) = frsg_sums(l) {
                return l;
            }
            if e.numbers {
                numbers_to_n(l)
            } else {
                l.to_string()
            }
        })
        .filter(|l| !l.is_empty())
        // ge races by design, on the legacy daemon and library too (seen in CI): each member
        // leaves the group right after its own check, so a slower member's lookup of one
        // already gone prints "gid N doesn't match up!".
        .filter(|l| !l.ends_with("doesn't match up!"))
        .collect();
    if e.sort {
        lines.sort();
    }
    if e.dedup {
        lines.dedup();
    }
    lines
}

/// frsg.f adds its row into `PSum` without ever setting it to zero, so "Sum1" (the sum of the
/// gathered `PSum`s) is whatever the stack held: the legacy daemon and library printed
/// "ERROR: ... calculated by Sum1 as 269554550 and by Sum2 as 2870" in two CI runs in a row.
/// Both forms of the line become one that keeps what frsg computes from defined values: the
/// reduce's sum (Sum2) and the expected one.
fn frsg_sums(l: &str) -> Option<String> {
    let words: Vec<&str> = l.split_whitespace().collect();
    let after = |key: &[&str]| {
        let at = words.windows(key.len()).position(|w| w == key)? + key.len();
        words.get(at).copied()
    };
    let (prefix, n, sum2, wanted) = if let Some(i) = words.iter().position(|w| *w == "OK:") {
        if words.get(i + 1..i + 6)? != ["Sum", "of", "Squares", "of", "first"] {
            return None;
        }
        let total = after(&["integers", "is"])?;
        (words.get(..i.checked_sub(2)?)?, after(&["of", "first"])?, total, total)
    } else if let Some(i) = words.iter().position(|w| *w == "ERROR:") {
        if words.get(i + 1..i + 5)? != ["The", "Sum", "of", "Squares"] {
            return None;
        }
        let wanted = after(&["should", "have", "been"])?;
        (
            words.get(..i.checked_sub(1)?)?,
            after(&["the", "first"])?,
            after(&["by", "Sum2", "as"])?,
            wanted,
        )
    } else {
        return None;
    };
    Some(format!(
        "{} / Sum of Squares of first {n} integers: Sum2 {sum2}, should be {wanted} (Sum1 undefined)",
        prefix.join(" ")
    ))
}

#[test]
fn frsg_sum_lines_keep_sum2_and_drop_sum1() {
    let ok = "[1:t40002]  / Test OK: Sum of Squares of first           20  integers is         2870";
    let bad_sum1 = "[1:t40002]  / ERROR: The Sum of Squares of the first           20  integers / was calculated by Sum1 as    269554550  and by Sum2 as         2870  for both it should have been         2870";
    let bad_sum2 = "[1:t40002]  / ERROR: The Sum of Squares of the first           20  integers / was calculated by Sum1 as    2870  and by Sum2 as         2869  for both it should have been         2870";
    let want = "[1:t40002] / Sum of Squares of first 20 integers: Sum2 2870, should be 2870 (Sum1 undefined)";
    assert_eq!(frsg_sums(ok).as_deref(), Some(want));
    assert_eq!(frsg_sums(bad_sum1).as_deref(), Some(want));
    assert_ne!(frsg_sums(bad_sum2), frsg_sums(ok));
    assert_eq!(frsg_sums("[1:t40002]   Test Ok: Received (   5.0 ,   2.0 )"), None);
    assert_eq!(frsg_sums("OK: ERROR:"), None);
}

fn check(name: &str, e: Example) {
    let (ours_raw, ours_log) = run_raw(Kind::Ours, name, e.how);
    let (mut legacy_raw, _) = run_raw(Kind::Legacy, name, e.how);
    let ours = normalise(&ours_raw, e);
    let mut legacy = normalise(&legacy_raw, e);
    if ours != legacy {
        // The oracle's output varies too (ge and frsg above were found this way): a
        // difference is only ours if a second legacy run differs as well.
        eprintln!("{name}: the legacy run differs from ours, running the legacy one again:\n{legacy_raw}");
        legacy_raw = run_raw(Kind::Legacy, name, e.how).0;
        legacy = normalise(&legacy_raw, e);
    }
    assert!(
        legacy.len() > 1 || name == "xep",
        "the legacy run of {name} printed nothing, the comparison would be empty:\n{legacy_raw}"
    );
    assert_eq!(
        ours, legacy,
        "{name}: our daemon and the legacy one differ\n--- ours:\n{ours_raw}\n--- legacy:\n{legacy_raw}\n--- our log:\n{ours_log}"
    );
}

macro_rules! examples {
    ($($test:ident: $name:literal => $spec:expr;)*) => {
        $(
            #[test]
            fn $test() {
                check($name, $spec);
            }
        )*
    };
}

examples! {
    example_hello_pvm: "hello.pvm" => ex(How::Shell("hello.pvm", None));
    example_master1: "master1" => sorted(How::Shell("master1", None));
    example_fmaster1: "fmaster1" => sorted(How::Shell("fmaster1", None));
    example_spmd: "spmd" => sorted(How::Console("spawn -4 -> spmd"));
    example_fspmd: "fspmd" => sorted(How::Console("spawn -4 -> fspmd"));
    example_gexample: "gexample" => ex(How::Shell("gexample", Some("100\n4\n")));
    example_fgexample: "fgexample" => ex(How::Shell("fgexample", None));
    example_timing: "timing" => timed(How::Shell("timing", None));
    example_hitc: "hitc" => sorted(How::Shell("hitc", None));
    example_dbwtest: "dbwtest" => timed(How::Console("spawn -2 -> dbwtest"));
    example_ibwtest: "ibwtest" => timed(How::Console("spawn -2 -> ibwtest"));
    example_pbwtest: "pbwtest" => timed(How::Console("spawn -2 -> pbwtest"));
    example_rbwtest: "rbwtest" => timed(How::Console("spawn -2 -> rbwtest"));
    example_inherit1: "inherit1" => ex(How::Shell("inherita inherit1", None));
    example_inherit2: "inherit2" => ex(How::Shell("inheritb", None));
    example_inherit3: "inherit3" => ex(How::Shell("inherita inherit3", None));
    example_task0: "task0" => sorted(How::Script(
        "task0 svcA d & sleep 1; gmbi svc; task1 svcA 0 d; sleep 0.5; task_end svcA 0; wait"));
    example_rme: "rme" => sorted(How::Script(
        "task0 svcB d & sleep 1; gmbi svc; rme svcB 0; gmbi svc; kill %1; wait"));
    example_lmbi: "lmbi" => ex(How::Script("lmbi 3 p e; gmbi .; gmbi lmbi"));
    example_mhf_tickle: "mhf_tickle" => sorted(How::Script(
        "mhf_server & sleep 1; printf '0\\n9\\n8\\n' | mhf_tickle; sleep 1; kill %1 2>/dev/null; wait"));
    example_gexamp: "gexamp" => sorted(How::Shell("gexamp 4", None));
    example_ge: "ge" => sorted(How::Shell("ge 4", None));
    example_gs_pvm: "gs.pvm" => Example { dedup: true, ..sorted(How::Shell("gs.pvm 4", None)) };
    example_trsg: "trsg" => sorted(How::Shell("trsg", Some("4\n10\n")));
    example_frsg: "frsg" => sorted(How::Console("spawn -> frsg"));
    example_tst: "tst" => ex(How::Shell("tst", None));
    example_tjf: "tjf" => sorted(How::Shell("tjf", None));
    example_tjl: "tjl" => sorted(How::Shell("tjl", None));
    example_thb: "thb" => sorted(How::Shell("thb 4", None));
    example_joinleave: "joinleave" => ex(How::Shell("joinleave 300", None));
    example_xep_without_display: "xep" => ex(How::Shell("xep", None));
}
