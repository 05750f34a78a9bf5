//! Helpers for the tests of the Rust `libpvm3.so.3` (crate libpvm3-shim): building it, running
//! legacy programs on it or on the legacy library, and normalising their output.

use crate::{our_pvmd, pvm_command, Kind, Proc, TmpDir, LEGACY_PVMD, TIMEOUT};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The legacy library's directory (for `ld.so --library-path`, which beats LD_LIBRARY_PATH for
/// one process while leaving the variable in its environment for children to inherit).
pub const LEGACY_LIB_DIR: &str = "/usr/lib/x86_64-linux-gnu";
pub const LEGACY_LIB: &str = "/usr/lib/x86_64-linux-gnu/libpvm3.so.3";
pub const LDSO: &str = "/lib64/ld-linux-x86-64.so.2";

/// Directory holding our `libpvm3.so.3` (the cdylib under its soname), built once per process.
/// Never `target/debug` itself: cargo puts that on the library path of every test, and the
/// legacy pvmd must not load this library.
pub fn shim_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let cargo = option_env!("CARGO").unwrap_or("cargo");
        let status = Command::new(cargo)
            .args(["build", "--quiet", "-p", "libpvm3-shim"])
            .current_dir(crate::workspace_root())
            .status()
            .expect("run cargo build for libpvm3-shim");
        assert!(status.success(), "cargo build -p libpvm3-shim failed");
        let built = crate::target_dir().join("debug").join("libpvm3.so");
        assert!(built.exists(), "{} not found after building", built.display());
        // One directory for every test process: a symlink under the soname, replaced
        // atomically, so nothing is copied and nothing piles up between runs.
        let dir = crate::target_dir().join("tmp").join("shim-lib");
        std::fs::create_dir_all(&dir).expect("create shim lib dir");
        let so = dir.join("libpvm3.so.3");
        let tmp = dir.join(format!("libpvm3.so.3.{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&built, &tmp).expect("link libpvm3.so");
        std::fs::rename(&tmp, &so).expect("install libpvm3.so.3");
        dir
    })
    .clone()
}

/// Which library a process (or the children it spawns) loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lib {
    Legacy,
    Shim,
}

/// A legacy daemon (or ours) with a private PVM_TMP and a HOME whose `pvm3/bin/LINUX64` links
/// the Debian example programs, as PVM users install them.
pub struct Vm {
    pub tmp: TmpDir,
    pub home: PathBuf,
    pub trace: PathBuf,
    pub daemon: Proc,
}

/// Every example program the tests use.
pub const EXAMPLES: &[&str] = &[
    "hello.pvm",
    "hello_other",
    "master1",
    "slave1",
    "spmd",
    "timing",
    "timing_slave",
    "inherita",
    "inheritb",
    "inherit1",
    "inherit2",
    "inherit3",
    "dbwtest",
    "rbwtest",
    "ibwtest",
    "pbwtest",
    "gexample",
    "pvmgs",
    "task0",
    "task1",
    "task_end",
    "gmbi",
    "lmbi",
    "fmaster1",
    "fslave1",
    "fgexample",
    "hitc",
    "hitc_slave",
    "gexamp",
    "ge",
    "gs.pvm",
    "tst",
    "tjf",
    "tjl",
    "thb",
    "tnb",
    "joinleave",
    "trsg",
    "srm.pvm",
];

impl Vm {
    pub fn start(kind: Kind, tag: &str) -> Vm {
        let tmp = TmpDir::new(tag);
        let home = tmp.path().join("home");
        let bin = home.join("pvm3/bin/LINUX64");
        std::fs::create_dir_all(&bin).unwrap();
        for p in EXAMPLES {
            let src = Path::new("/usr/bin").join(p);
            assert!(
                src.exists(),
                "{} is missing: install the Debian package pvm-examples",
                src.display()
            );
            std::os::unix::fs::symlink(&src, bin.join(p)).unwrap();
        }
        let trace = tmp.path().join("shim-trace");
        let daemon_bin = match kind {
            Kind::Ours => our_pvmd(),
            Kind::Legacy => PathBuf::from(LEGACY_PVMD),
        };
        // The daemon itself always runs on the legacy library (abi.md §6).
        let mut c = pvm_command(&daemon_bin, tmp.path());
        c.env("HOME", &home).current_dir(&home).stderr(Stdio::null());
        c.env_remove("LD_LIBRARY_PATH").env_remove("PVM_EXPORT");
        let mut daemon = Proc {
            child: c.spawn().expect("start pvmd"),
            name: format!("{kind:?} pvmd"),
        };
        let line = daemon.read_line(TIMEOUT);
        assert!(line.starts_with('/'), "pvmd printed {line:?}; log:\n{}", tmp.log());
        Vm {
            tmp,
            home,
            trace,
            daemon,
        }
    }

    /// A command for `program` (a path, or a name in /usr/bin) that loads `me`'s library and
    /// makes the tasks it spawns load `children`'s.
    pub fn command(&self, program: &str, args: &[&str], me: Lib, children: Lib) -> Command {
        let prog = if program.starts_with('/') {
            PathBuf::from(program)
        } else {
            Path::new("/usr/bin").join(program)
        };
        let shim = shim_dir();
        let mut c = match (me, children) {
            (Lib::Shim, _) => pvm_command(&prog, self.tmp.path()),
            (Lib::Legacy, Lib::Shim) => {
                let mut c = pvm_command(Path::new(LDSO), self.tmp.path());
                c.arg("--library-path").arg(LEGACY_LIB_DIR).arg(&prog);
                c
            }
            (Lib::Legacy, Lib::Legacy) => pvm_command(&prog, self.tmp.path()),
        };
        c.args(args).env("HOME", &self.home).current_dir(&self.home);
        c.env("PVM_SHIM_TRACE", &self.trace);
        match (me, children) {
            (_, Lib::Shim) => {
                c.env("LD_LIBRARY_PATH", &shim)
                    .env("PVM_EXPORT", "LD_LIBRARY_PATH:PVM_SHIM_TRACE");
            }
            (Lib::Shim, Lib::Legacy) => {
                c.env("LD_LIBRARY_PATH", &shim).env_remove("PVM_EXPORT");
            }
            (Lib::Legacy, Lib::Legacy) => {
                c.env_remove("LD_LIBRARY_PATH").env_remove("PVM_EXPORT");
            }
        }
        c
    }

    /// Runs to completion; returns (exit code, stdout, stderr).
    pub fn run(
        &self,
        program: &str,
        args: &[&str],
        me: Lib,
        children: Lib,
        stdin: Option<&str>,
    ) -> (Option<i32>, String, String) {
        let mut c = self.command(program, args, me, children);
        if stdin.is_some() {
            c.stdin(Stdio::piped());
        }
        let mut child = c.spawn().unwrap_or_else(|e| panic!("run {program}: {e}"));
        if let Some(i) = stdin {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(i.as_bytes()).unwrap();
        }
        let p = Proc {
            child,
            name: program.to_string(),
        };
        // A program that hangs panics in `wait` with its own output only: print the pvmd's log
        // too, since that is where a hang usually shows its cause.
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| p.wait(TIMEOUT))) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("pvmd log of the hung run:\n{}", self.tmp.log());
                std::panic::resume_unwind(e)
            }
        }
    }

    /// Programs that enrolled on our library (from PVM_SHIM_TRACE), sorted.
    pub fn shim_tasks(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_to_string(&self.trace)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once(' ').map(|x| x.1.to_string()))
            .collect();
        v.sort();
        v
    }

    pub fn clear_trace(&self) {
        let _ = std::fs::remove_file(&self.trace);
    }
}

/// Replaces task ids (`t4000a`, `40001` printed in decimal as 262145.. is left alone) and pids
/// with placeholders numbered in order of appearance, so runs on both libraries compare.
pub fn normalise(s: &str) -> String {
    let mut map: Vec<String> = Vec::new();
    let mut out = String::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b't' && (i == 0 || !b[i - 1].is_ascii_alphanumeric()) {
            let mut j = i + 1;
            while j < b.len() && b[j].is_ascii_hexdigit() {
                j += 1;
            }
            if j - i > 5 && (j == b.len() || !b[j].is_ascii_alphanumeric()) {
                let t = &s[i..j];
                let n = match map.iter().position(|x| x == t) {
                    Some(n) => n,
                    None => {
                        map.push(t.to_string());
                        map.len() - 1
                    }
                };
                out.push_str(&format!("T{n}"));
                i = j;
                continue;
            }
        }
        out.push(b[i] as char);
        i += 1;
    }
    out
}

/// Lines, trimmed, empty ones dropped, sorted (for programs whose output order varies).
pub fn sorted_lines(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s
        .lines()
        .map(|l| l.trim_end().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    v.sort();
    v
}

/// Runs `exe` with `args` on a fresh pvmd of `daemon`, loading `lib` (its children too), to
/// completion; it must exit 0. Returns its stdout and stderr, normalised. For the differential
/// tests, which run one program on several combinations of library and pvmd.
pub fn run_on(exe: &Path, args: &[&str], daemon: Kind, lib: Lib) -> (String, String) {
    let name = exe
        .file_name()
        .map_or("program".into(), |n| n.to_string_lossy().into_owned());
    let vm = Vm::start(daemon, &format!("{name}-{daemon:?}-{lib:?}"));
    let mut c = vm.command(exe.to_str().expect("a UTF-8 path"), args, lib, lib);
    c.env_remove("PVM_SHIM_TRACE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let (code, so, se) = Proc {
        child: c.spawn().unwrap_or_else(|e| panic!("run {name}: {e}")),
        name: format!("{name}, {lib:?} library on {daemon:?} pvmd"),
    }
    .wait(TIMEOUT);
    assert_eq!(
        code,
        Some(0),
        "{name}, {lib:?} library on {daemon:?} pvmd: exit {code:?}\n{so}\n{se}"
    );
    (normalise(&so), normalise(&se))
}

/// Asserts that `got` (stdout, stderr) equals `want`, line by line: the first differing line
/// is reported with what came before it (and the last "seed N" line passed, for fuzz runs).
pub fn assert_same_output(what: &str, want: &(String, String), got: &(String, String)) {
    let (w, g): (Vec<&str>, Vec<&str>) = (want.0.lines().collect(), got.0.lines().collect());
    let mut seed = "";
    for (i, (a, b)) in w.iter().zip(g.iter()).enumerate() {
        if a.starts_with("seed ") {
            seed = a;
        }
        assert_eq!(
            b,
            a,
            "{what}: line {i} ({seed}) differs (left {what}, right the reference); before it:\n{}",
            w[i.saturating_sub(12)..i].join("\n")
        );
    }
    assert_eq!(
        g.len(),
        w.len(),
        "{what}: {} lines, the reference {}\n{}\n{}",
        g.len(),
        w.len(),
        got.0,
        got.1
    );
    assert_eq!(got.1, want.1, "{what}: stderr differs");
}

/// Every combination of library and pvmd other than all-legacy.
pub const NOT_ALL_LEGACY: [(Kind, Lib); 3] = [
    (Kind::Legacy, Lib::Shim),
    (Kind::Ours, Lib::Legacy),
    (Kind::Ours, Lib::Shim),
];

/// The differential check: `exe` run on the legacy pvmd and library is the reference; it must
/// end with a "done" line and contain each of `must_contain` (so that the comparison compared
/// something); each of `combos` must then print the same (`assert_same_output`).
pub fn same_as_all_legacy(exe: &Path, args: &[&str], combos: &[(Kind, Lib)], must_contain: &[&str]) {
    let legacy = run_on(exe, args, Kind::Legacy, Lib::Legacy);
    let lo = &legacy.0;
    assert_eq!(
        lo.lines().last(),
        Some("done"),
        "legacy run incomplete:\n{lo}\n{}",
        legacy.1
    );
    for want in must_contain {
        assert!(
            lo.contains(want),
            "the legacy output has no {want:?}: nothing compared there\n{lo}"
        );
    }
    for &(daemon, lib) in combos {
        assert_same_output(
            &format!("{lib:?} library on {daemon:?} pvmd"),
            &legacy,
            &run_on(exe, args, daemon, lib),
        );
    }
}

/// What every differential fuzz program starts with: the headers they use, `pvm_errno`, and the
/// seeded generator (`st = seed;` then `rnd(n)` in 0..n), the same sequence on every library.
pub const FUZZ_C_PRELUDE: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <pvm3.h>
extern int pvm_errno;
static unsigned long long st;
static unsigned rnd(unsigned n)
{
    st = st * 6364136223846793005ULL + 1442695040888963407ULL;
    return (unsigned)(st >> 33) % n;
}
"#;

/// A fuzz program (`body` after [`FUZZ_C_PRELUDE`], run as `prog SEEDS CALLS`) checked with
/// [`same_as_all_legacy`]; the environment variable `seeds_var` overrides `seeds`, the number
/// of seeds run.
pub fn fuzz_same_as_all_legacy(
    name: &str,
    body: &str,
    (seeds_var, seeds): (&str, &str),
    calls: &str,
    combos: &[(Kind, Lib)],
    must_contain: &[&str],
) {
    let exe = crate::build_c(name, &format!("{FUZZ_C_PRELUDE}{body}"), &[]);
    let seeds = std::env::var(seeds_var).unwrap_or_else(|_| seeds.into());
    same_as_all_legacy(&exe, &[&seeds, calls], combos, must_contain);
}
