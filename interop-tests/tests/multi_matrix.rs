//! The matrix {legacy, pvmd-rs} master × {legacy, pvmd-rs} slaves on four namespace hosts: the
//! Debian example programs that spawn tasks run from the master's host, their children placed
//! round-robin on every host, and each configuration's output must equal the all-legacy run's,
//! example by example.
//!
//! Every configuration builds the same machine the same way (one console `add` of h2..h4, the
//! examples in a fixed order), so the legacy daemon's task ids and placements are reproducible
//! and are compared as printed; only host addresses (different subnet per cluster) become
//! `h1`..`h4` and the cluster's home `$HOME`, and what examples_debian.rs already normalises
//! (console prompts, line order of concurrent writers, timings) is normalised the same way. In
//! the two timed examples task ids go too: which copy of dbwtest becomes the master is a race
//! (two all-legacy machines differed). `mx_where` (below) spawns 8 children and prints where
//! each ran, and every run must show all four hosts, so cross-host placement really happened.
//!
//! The all-legacy machine runs once per test process and the others compare with it; a whole
//! machine with every example takes 3 to 5 s, the file about 15 s on two cores.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use interop_tests::netns::Cluster;
use interop_tests::{build_c, our_pvmd, Kind, Proc, LEGACY_CONSOLE, LEGACY_PVMD, TIMEOUT};

/// Debian programs the examples below start (directly or by spawning), plus the group server.
const PROGRAMS: &[&str] = &[
    "hello.pvm",
    "hello_other",
    "master1",
    "slave1",
    "spmd",
    "inherita",
    "inheritb",
    "inherit1",
    "inherit2",
    "inherit3",
    "gexample",
    "gexamp",
    "trsg",
    "timing",
    "timing_slave",
    "dbwtest",
    "thb",
    "tnb",
    "pvmgs",
];

/// Spawns 8 copies of itself (default placement), passes a token around the ring of children
/// and prints, per child, the host it ran on (by `pvm_tidtohost`, named by `pvm_config`), what
/// it received from its neighbour, and the sorted set of hosts used.
const MX_WHERE: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pvm3.h>

#define N 8

static const char *hostname(int dtid)
{
	int nh, na, i;
	struct pvmhostinfo *hi;

	pvm_config(&nh, &na, &hi);
	for (i = 0; i < nh; i++)
		if (hi[i].hi_tid == dtid)
			return hi[i].hi_name;
	return "?";
}

static int cmp(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int main(int argc, char **argv)
{
	int me = pvm_mytid(), tids[N], got[N], hosts[N], i, n, v, idx, host;
	const char *names[N];

	if (me < 0)
		return 1;
	if (argc > 1 && strcmp(argv[1], "-c") == 0) {
		int p = pvm_parent();
		pvm_recv(p, 1);
		pvm_upkint(&idx, 1, 1);
		pvm_upkint(tids, N, 1);
		pvm_initsend(PvmDataDefault);
		v = 100 + idx;
		pvm_pkint(&v, 1, 1);
		pvm_send(tids[(idx + 1) % N], 2);
		pvm_recv(tids[(idx + N - 1) % N], 2);
		pvm_upkint(&v, 1, 1);
		host = pvm_tidtohost(me);
		pvm_initsend(PvmDataDefault);
		pvm_pkint(&idx, 1, 1);
		pvm_pkint(&v, 1, 1);
		pvm_pkint(&host, 1, 1);
		pvm_send(p, 3);
		pvm_exit();
		return 0;
	}
	n = pvm_spawn(argv[0], (char *[]){"-c", 0}, PvmTaskDefault, "", N, tids);
	printf("spawned %d\n", n);
	if (n != N) {
		pvm_exit();
		return 1;
	}
	for (i = 0; i < N; i++) {
		pvm_initsend(PvmDataDefault);
		pvm_pkint(&i, 1, 1);
		pvm_pkint(tids, N, 1);
		pvm_send(tids[i], 1);
	}
	/* Answers come in any order; printed by child index. */
	for (i = 0; i < N; i++) {
		names[i] = "?";
		got[i] = hosts[i] = -1;
	}
	for (i = 0; i < N; i++) {
		pvm_recv(-1, 3);
		pvm_upkint(&idx, 1, 1);
		pvm_upkint(&v, 1, 1);
		pvm_upkint(&host, 1, 1);
		if (idx >= 0 && idx < N) {
			got[idx] = v;
			hosts[idx] = host;
		}
	}
	for (i = 0; i < N; i++) {
		names[i] = strdup(hostname(hosts[i]));
		printf("child %d t%x on %s (tidtohost %s) got %d\n", i, tids[i], names[i],
		       pvm_tidtohost(tids[i]) == hosts[i] ? "agrees" : "DIFFERS", got[i]);
	}
	qsort(names, N, sizeof names[0], cmp);
	printf("hosts used:");
	for (i = 0; i < N; i++)
		if (i == 0 || strcmp(names[i], names[i - 1]) != 0)
			printf(" %s", names[i]);
	printf("\n");
	pvm_exit();
	return 0;
}
"#;

#[derive(Clone, Copy)]
enum How {
    /// Started from the shell in h1: command line and optional stdin.
    Shell(&'static str, Option<&'static str>),
    /// Typed into the legacy console in h1, which then waits until job 1 finishes.
    Console(&'static str),
}

#[derive(Clone, Copy)]
struct Example {
    name: &'static str,
    how: How,
    /// Lines may come in any order (several tasks write, or the console interleaves).
    sort: bool,
    /// Output holds timings: every number and task id is replaced by `N`.
    numbers: bool,
}

const fn ex(name: &'static str, how: How) -> Example {
    Example {
        name,
        how,
        sort: false,
        numbers: false,
    }
}

const fn sorted(name: &'static str, how: How) -> Example {
    Example {
        sort: true,
        ..ex(name, how)
    }
}

const fn timed(name: &'static str, how: How) -> Example {
    Example {
        sort: true,
        numbers: true,
        ..ex(name, how)
    }
}

/// In this order on every configuration (task ids depend on what ran before).
const EXAMPLES: &[Example] = &[
    ex("mx_where", How::Shell("mx_where", None)),
    ex("hello.pvm", How::Shell("hello.pvm", None)),
    sorted("master1", How::Shell("master1", None)),
    sorted("spmd", How::Console("spawn -4 -> spmd")),
    ex("inherit1", How::Shell("inherita inherit1", None)),
    ex("inherit2", How::Shell("inheritb", None)),
    ex("inherit3", How::Shell("inherita inherit3", None)),
    ex("gexample", How::Shell("gexample", Some("100\n4\n"))),
    sorted("gexamp", How::Shell("gexamp 4", None)),
    sorted("trsg", How::Shell("trsg", Some("4\n10\n"))),
    sorted("thb", How::Shell("thb 4", None)),
    timed("timing", How::Shell("timing", None)),
    timed("dbwtest", How::Console("spawn -2 -> dbwtest")),
    ex("mx_where again", How::Shell("mx_where", None)),
];

/// What one configuration printed.
struct Run {
    label: String,
    /// Per example: (name, raw output with exit status, normalised lines).
    outputs: Vec<(&'static str, String, Vec<String>)>,
    /// `c.logs()` taken before the cluster went away.
    logs: String,
}

fn require_legacy() {
    for p in [LEGACY_PVMD, LEGACY_CONSOLE, "/usr/bin/stdbuf"] {
        assert!(
            Path::new(p).exists(),
            "{p} is missing: the matrix test needs legacy PVM (Debian pvm, pvm-examples)"
        );
    }
    for p in PROGRAMS {
        let p = Path::new("/usr/bin").join(p);
        assert!(
            p.exists(),
            "{} is missing: install the Debian packages pvm and pvm-examples",
            p.display()
        );
    }
}

fn daemon(kind: Kind) -> PathBuf {
    match kind {
        Kind::Ours => our_pvmd(),
        Kind::Legacy => PathBuf::from(LEGACY_PVMD),
    }
}

fn console(c: &Cluster, input: &str) -> String {
    c.console(1, input)
}

/// Four hosts: `master` in h1 and `slaves` in h2..h4, added with one console `add`.
fn machine(tag: &str, master: Kind, slaves: [Kind; 3]) -> (Cluster, Proc) {
    let c = Cluster::named("mx", tag, 4);
    for p in PROGRAMS {
        c.install(&Path::new("/usr/bin").join(p), p);
    }
    c.install(&build_c("mx_where", MX_WHERE, &["-O0", "-w"]), "mx_where");
    let hf = c.dir.path().join("hostfile");
    let mut text = format!("{}\n", c.host(1).ip);
    for (k, kind) in slaves.iter().enumerate() {
        text.push_str(&format!("&{} dx={}\n", c.host(k + 2).ip, daemon(*kind).display()));
    }
    std::fs::write(&hf, text).expect("write hostfile");
    let mut cmd = c.command(1, &daemon(master));
    cmd.arg(format!("-n{}", c.host(1).ip)).arg(&hf).stderr(Stdio::null());
    let mut m = Proc {
        child: cmd.spawn().expect("start the master pvmd"),
        name: format!("{master:?} master"),
    };
    let line = m.read_line(TIMEOUT);
    assert!(line.starts_with('/'), "{tag}: master printed {line:?}\n{}", c.logs());
    let hosts: Vec<&str> = (2..=4).map(|k| c.host(k).ip.as_str()).collect();
    let out = console(&c, &format!("add {}\n", hosts.join(" ")));
    assert!(
        out.contains("3 successful"),
        "{tag}: adding the slaves failed:\n{out}\n{}",
        c.logs()
    );
    (c, m)
}

/// Types `line` into the legacy console in h1, waits until it reports job 1 finished, quits.
fn console_job(c: &Cluster, label: &str, line: &str, timeout: Duration) -> (Option<i32>, String, String) {
    // Unbuffered: on a pipe the console's job output would sit in its stdio buffer.
    let mut cmd = c.command(1, Path::new("/usr/bin/stdbuf"));
    cmd.args(["-o0", LEGACY_CONSOLE]).stdin(Stdio::piped());
    let mut child = cmd.spawn().expect("start the legacy console");
    let mut stdin = child.stdin.take().expect("piped stdin");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = Arc::clone(&seen);
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            s2.lock().expect("output lock").extend_from_slice(&buf[..n]);
        }
    });
    stdin
        .write_all(format!("{line}\n").as_bytes())
        .expect("write to console");
    let t = Instant::now();
    loop {
        let text = String::from_utf8_lossy(&seen.lock().expect("output lock")).into_owned();
        if text.contains("[1] finished") {
            break;
        }
        assert!(
            t.elapsed() < timeout,
            "{label}: job did not finish within {timeout:?}; console said:\n{text}\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    stdin.write_all(b"quit\n").expect("write to console");
    drop(stdin);
    let (code, _, err) = Proc {
        child,
        name: format!("console for {label}"),
    }
    .wait(TIMEOUT);
    reader.join().expect("console reader");
    let out = String::from_utf8_lossy(&seen.lock().expect("output lock")).into_owned();
    (code, out, err)
}

/// Runs one example in h1; its stdout, stderr and exit status.
fn run_example(c: &Cluster, label: &str, how: How) -> String {
    let timeout = Duration::from_secs(60);
    let (code, out, err) = match how {
        How::Shell(cmdline, input) => {
            let mut words = cmdline.split_whitespace();
            let prog = c.home.join("pvm3/bin/LINUX64").join(words.next().expect("program"));
            let mut cmd = c.command(1, &prog);
            cmd.args(words).stdin(Stdio::piped()).env_remove("DISPLAY");
            let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{label}: start: {e}"));
            let mut stdin = child.stdin.take().expect("piped stdin");
            if let Some(i) = input {
                stdin.write_all(i.as_bytes()).expect("write stdin");
            }
            drop(stdin);
            Proc {
                child,
                name: label.to_string(),
            }
            .wait(timeout)
        }
        How::Console(line) => console_job(c, label, line, timeout),
    };
    format!("{out}{err}-- exit {code:?}\n")
}

/// Host addresses become `h1`..`h4` and the cluster's home `$HOME`; then as examples_debian.rs: console prompts split off,
/// blank lines dropped, sorted / numbers as the example says.
fn normalise(c: &Cluster, raw: &str, e: &Example) -> Vec<String> {
    let home = c.home.display().to_string();
    let mut text = raw.replace("pvm> ", "\n").replace(&home, "$HOME");
    for k in (1..=4).rev() {
        text = text.replace(&c.host(k).ip, &format!("h{k}"));
    }
    let mut lines: Vec<String> = text
        .lines()
        .map(|l| {
            let l = l.trim_end();
            if e.numbers {
                numbers_to_n(l)
            } else {
                l.to_string()
            }
        })
        .filter(|l| !l.is_empty())
        .collect();
    if e.sort {
        lines.sort();
    }
    lines
}

/// Task ids (`t8000b`, bare `c000d`) become `tN` / `N`, other numbers `N`, and runs of blanks
/// one space (column alignment depends on the widths). For the timed examples only: in the
/// bandwidth tests which copy is the master (group instance 0) is a race, on legacy PVM too.
fn numbers_to_n(l: &str) -> String {
    interop_tests::numbers_to_n(&tids_to_n(&l.split_whitespace().collect::<Vec<_>>().join(" ")))
}

/// Words of at least five hex digits (one of them a decimal digit), after `t` or with a letter.
fn tids_to_n(l: &str) -> String {
    let mut out = String::new();
    let mut rest = l;
    while !rest.is_empty() {
        let end = rest.find(|c: char| !c.is_ascii_alphanumeric()).unwrap_or(rest.len());
        let word = &rest[..end];
        let hex = word.strip_prefix('t').unwrap_or(word);
        // All-decimal bare words are left to the number pass (`12500.000000` is one number).
        let is_tid = hex.len() >= 5
            && hex.chars().all(|c| c.is_ascii_hexdigit())
            && hex.chars().any(|c| c.is_ascii_digit())
            && (hex.len() < word.len() || hex.chars().any(|c| c.is_ascii_alphabetic()));
        out.push_str(match (is_tid, hex.len() < word.len()) {
            (true, true) => "tN",
            (true, false) => "N",
            (false, _) => word,
        });
        let sep = rest[end..].chars().next().map_or(0, char::len_utf8);
        out.push_str(&rest[end..end + sep]);
        rest = &rest[end + sep..];
    }
    out
}

#[test]
fn numbers_and_tids_become_n() {
    assert_eq!(numbers_to_n("[1:tc000d]  c000d myinst is 1 "), "[N:tN] N myinst is N");
    assert_eq!(
        numbers_to_n("[1:t40016] t40016: 100000 doubles"),
        "[N:tN] tN: N doubles"
    );
    assert_eq!(
        numbers_to_n("Roundtrip T = 3077 (us)  (51.9987 MB/s)"),
        "Roundtrip T = N (us) (N MB/s)"
    );
    assert_eq!(numbers_to_n("slave is task t10000c"), "slave is task tN");
    assert_eq!(numbers_to_n("added dead beef"), "added dead beef");
    assert_eq!(numbers_to_n("     12500.000000   606.060606"), "N N");
}

/// Builds the machine and runs every example in order.
fn run_config(tag: &str, master: Kind, slaves: [Kind; 3]) -> Run {
    require_legacy();
    let label = format!("master {master:?}, slaves {slaves:?}");
    let t = Instant::now();
    let (c, _master) = machine(tag, master, slaves);
    eprintln!("{label}: machine up in {:.1?}", t.elapsed());
    let mut outputs = Vec::new();
    for e in EXAMPLES {
        let te = Instant::now();
        let raw = run_example(&c, &format!("{label}: {}", e.name), e.how);
        let lines = normalise(&c, &raw, e);
        eprintln!("{label}: {} in {:.1?}", e.name, te.elapsed());
        outputs.push((e.name, raw, lines));
    }
    let run = Run {
        label,
        outputs,
        logs: c.logs(),
    };
    check_placement(&run);
    eprintln!("{}: done in {:.1?}", run.label, t.elapsed());
    run
}

/// `mx_where` ran children on all four hosts and they agree with the parent where they are:
/// the comparison below then shows cross-host placement, whatever the reference did.
fn check_placement(run: &Run) {
    for (name, raw, lines) in &run.outputs {
        if name.starts_with("mx_where") {
            assert!(
                lines.iter().any(|l| l == "hosts used: h1 h2 h3 h4")
                    && lines.iter().filter(|l| l.contains("(tidtohost agrees)")).count() == 8,
                "{}: {name} did not place its children on every host:\n{raw}\n{}",
                run.label,
                run.logs
            );
        }
    }
}

/// The all-legacy machine, run once per test process.
fn reference() -> &'static Run {
    static REF: OnceLock<Run> = OnceLock::new();
    REF.get_or_init(|| run_config("ref", Kind::Legacy, [Kind::Legacy; 3]))
}

/// Runs a configuration and compares it with the all-legacy one, example by example.
fn check(tag: &str, master: Kind, slaves: [Kind; 3]) {
    let want = reference();
    let got = run_config(tag, master, slaves);
    for ((name, raw_want, want_lines), (_, raw_got, got_lines)) in want.outputs.iter().zip(&got.outputs) {
        assert!(
            want_lines.len() > 1,
            "the all-legacy run of {name} printed nothing, the comparison would be empty:\n{raw_want}"
        );
        if got_lines != want_lines {
            let first = got_lines
                .iter()
                .zip(want_lines)
                .position(|(a, b)| a != b)
                .unwrap_or(got_lines.len().min(want_lines.len()));
            panic!(
                "{name}: {} differs from the all-legacy machine at normalised line {first}:\n\
                 {:?}\nvs all-legacy\n{:?}\n--- {} printed:\n{raw_got}\n--- all-legacy printed:\n{raw_want}\n\
                 --- logs of {}:\n{}",
                got.label,
                got_lines.get(first),
                want_lines.get(first),
                got.label,
                got.label,
                got.logs
            );
        }
    }
}

#[test]
fn matrix_legacy_master_our_slaves() {
    check("lo", Kind::Legacy, [Kind::Ours; 3]);
}

#[test]
fn matrix_our_master_legacy_slaves() {
    check("ol", Kind::Ours, [Kind::Legacy; 3]);
}

#[test]
fn matrix_our_master_our_slaves() {
    check("oo", Kind::Ours, [Kind::Ours; 3]);
}

#[test]
fn matrix_our_master_mixed_slaves() {
    check("om", Kind::Ours, [Kind::Legacy, Kind::Ours, Kind::Legacy]);
}

#[test]
fn matrix_legacy_master_mixed_slaves() {
    check("lx", Kind::Legacy, [Kind::Ours, Kind::Legacy, Kind::Ours]);
}
