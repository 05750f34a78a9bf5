//! Helpers for the tests of our Fortran library (libfpvm3) and group library (libgpvm3): build
//! them, compile the Debian example sources (C with gcc, Fortran with gfortran) against ours or
//! the legacy libraries, and run the programs on a private legacy virtual machine whose exec
//! path (`$HOME/pvm3/bin/LINUX64`) holds exactly the programs of one build.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};

use crate::{our_pvmd, pvm_command, stop_pid, target_dir, workspace_root, Kind, Proc, TmpDir, LEGACY_PVMD, TIMEOUT};

/// Which library a program is linked with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    Ours,
    Legacy,
}

pub const EXAMPLES_TAR: &str = "/usr/share/doc/pvm-examples/examples.tar.gz";
pub const GEXAMPLES_TAR: &str = "/usr/share/doc/pvm-examples/gexamples.tar.gz";
pub const LEGACY_FPVM3: &str = "/usr/lib/x86_64-linux-gnu/libfpvm3.a";
pub const LEGACY_GPVM3: &str = "/usr/lib/x86_64-linux-gnu/libgpvm3.so.3";
pub const LEGACY_FPVM3_H: &str = "/usr/include/fpvm3.h";

fn need(path: &str, what: &str) {
    assert!(Path::new(path).exists(), "{path} is missing: {what}");
}

/// Our header `include/fpvm3.h`.
pub fn our_fpvm3_h() -> PathBuf {
    workspace_root().join("include").join("fpvm3.h")
}

/// Our libraries, built once per test process: (`libfpvm3.a`, a directory holding
/// `libgpvm3.so.3` and `libfpvm3.so`, for -L/-rpath/LD_LIBRARY_PATH, and our `pvmgs`).
pub fn our_libs() -> (PathBuf, PathBuf) {
    static LIBS: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    LIBS.get_or_init(|| {
        let cargo = option_env!("CARGO").unwrap_or("cargo");
        let status = Command::new(cargo)
            .args(["build", "--quiet", "-p", "libfpvm3", "-p", "libgpvm3", "-p", "pvmgs"])
            .current_dir(workspace_root())
            .status()
            .expect("run cargo build for libfpvm3/libgpvm3");
        assert!(status.success(), "cargo build -p libfpvm3 -p libgpvm3 -p pvmgs failed");
        let built = target_dir().join("debug");
        let tmp = target_dir().join("tmp");
        remove_stale(&tmp);
        let dir = tmp.join(format!("flib-libs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create lib dir");
        // Snapshots, not the build outputs themselves: a concurrent cargo build must not change
        // them under a running test. Hard links cost no space (cargo writes new files).
        for (from, to) in [
            ("libgpvm3.so", "libgpvm3.so.3"),
            ("libfpvm3.so", "libfpvm3.so"),
            ("libfpvm3.a", "libfpvm3.a"),
            ("pvmgs", "pvmgs"),
        ] {
            let (from, to) = (built.join(from), dir.join(to));
            if std::fs::hard_link(&from, &to).is_err() {
                std::fs::copy(&from, &to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
            }
        }
        (dir.join("libfpvm3.a"), dir)
    })
    .clone()
}

/// Removes the library snapshots and source trees of test processes that are gone.
fn remove_stale(tmp: &Path) {
    let Ok(rd) = std::fs::read_dir(tmp) else { return };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if !name.starts_with("flib-") {
            continue;
        }
        let pid = name.rsplit('-').next().and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid {
            if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

/// The Debian example sources, unpacked once per test process, with `include/fpvm3.h` (which
/// the Fortran sources include as `../include/fpvm3.h`) taken from `header`'s flavour.
pub fn example_sources(flavour: Flavour) -> PathBuf {
    static DIRS: OnceLock<Mutex<Vec<(Flavour, PathBuf)>>> = OnceLock::new();
    let mut dirs = DIRS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some((_, d)) = dirs.iter().find(|(f, _)| *f == flavour) {
        return d.clone();
    }
    need(EXAMPLES_TAR, "install the Debian package pvm-examples");
    need(GEXAMPLES_TAR, "install the Debian package pvm-examples");
    let dir = target_dir()
        .join("tmp")
        .join(format!("flib-src-{flavour:?}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("include")).expect("create source dir");
    for tar in [EXAMPLES_TAR, GEXAMPLES_TAR] {
        let st = Command::new("tar")
            .arg("xzf")
            .arg(tar)
            .current_dir(&dir)
            .status()
            .expect("run tar");
        assert!(st.success(), "tar xzf {tar} failed");
    }
    let header = match flavour {
        Flavour::Ours => our_fpvm3_h(),
        Flavour::Legacy => {
            need(LEGACY_FPVM3_H, "install the Debian package pvm-dev");
            PathBuf::from(LEGACY_FPVM3_H)
        }
    };
    std::fs::copy(header, dir.join("include").join("fpvm3.h")).expect("copy fpvm3.h");
    dirs.push((flavour, dir.clone()));
    dir
}

fn run_compiler(mut c: Command, what: &str) {
    let out = c
        .output()
        .unwrap_or_else(|e| panic!("{what}: the compiler could not be run ({e}); install gcc and gfortran"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Link arguments for the group library of a flavour.
fn group_link_args(flavour: Flavour) -> Vec<String> {
    match flavour {
        Flavour::Ours => {
            let (_, dir) = our_libs();
            vec![
                format!("-L{}", dir.display()),
                "-l:libgpvm3.so.3".into(),
                format!("-Wl,-rpath,{}", dir.display()),
            ]
        }
        Flavour::Legacy => {
            need(LEGACY_GPVM3, "install the Debian package libpvm3");
            vec!["-lgpvm3".into()]
        }
    }
}

/// The group server of a flavour: ours or the Debian one.
pub fn pvmgs(flavour: Flavour) -> PathBuf {
    match flavour {
        Flavour::Ours => our_libs().1.join("pvmgs"),
        Flavour::Legacy => {
            need("/usr/bin/pvmgs", "install the Debian package pvm");
            PathBuf::from("/usr/bin/pvmgs")
        }
    }
}

/// Compiles a C program (a file of the example sources, or any path) with the legacy
/// `pvm3.h`, linking the group library of `flavour` and the legacy libpvm3.
pub fn cc_group(src: &Path, out: &Path, flavour: Flavour) {
    let mut c = Command::new("gcc");
    c.args(["-O0", "-w", "-o"]).arg(out).arg(src);
    c.args(group_link_args(flavour)).arg("-lpvm3");
    run_compiler(c, &format!("gcc {}", src.display()));
}

/// Compiles a Fortran program with the fpvm3.h next to its sources, linking libfpvm3 of
/// `flavour` (ours: the static archive), and libgpvm3 when `groups`.
pub fn fortran(src: &Path, out: &Path, flavour: Flavour, groups: bool) {
    let mut c = Command::new("gfortran");
    // The examples pass different types to the same routine (legal in f77 practice).
    c.args(["-std=legacy", "-fallow-argument-mismatch", "-w", "-o"])
        .arg(out)
        .arg(src);
    match flavour {
        Flavour::Ours => {
            let (a, _) = our_libs();
            c.arg(a);
        }
        Flavour::Legacy => {
            need(LEGACY_FPVM3, "install the Debian package pvm-dev");
            c.arg("-lfpvm3");
        }
    }
    if groups {
        c.args(group_link_args(flavour));
    }
    c.arg("-lpvm3");
    if flavour == Flavour::Ours {
        // What a Rust static library needs from the system (rustc --print native-static-libs).
        c.args(["-lgcc_s", "-lpthread", "-ldl", "-lm"]);
    }
    run_compiler(c, &format!("gfortran {}", src.display()));
}

/// A legacy pvmd in its own PVM_TMP whose tasks are found in `$HOME/pvm3/bin/LINUX64`.
pub struct Vm {
    pub tmp: TmpDir,
    pub home: PathBuf,
    pub bin: PathBuf,
    /// Extra environment for the daemon (inherited by the tasks it spawns) and the programs.
    pub env: Vec<(String, String)>,
    pvmd: Option<Proc>,
}

impl Vm {
    pub fn new(tag: &str) -> Vm {
        let tmp = TmpDir::new(tag);
        let home = tmp.path().join("home");
        let bin = home.join("pvm3/bin/LINUX64");
        std::fs::create_dir_all(&bin).expect("create exec path");
        Vm {
            tmp,
            home,
            bin,
            env: Vec::new(),
            pvmd: None,
        }
    }

    /// Puts a program in the exec path under `name`.
    pub fn install(&self, src: &Path, name: &str) {
        assert!(src.exists(), "{} is missing", src.display());
        std::os::unix::fs::symlink(src, self.bin.join(name)).expect("link program into the exec path");
    }

    pub fn command(&self, program: &Path) -> Command {
        let mut c = pvm_command(program, self.tmp.path());
        c.env("HOME", &self.home).current_dir(&self.home);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    pub fn start(&mut self) {
        self.start_daemon(Kind::Legacy);
    }

    /// Starts our pvmd (pvmd-rs) or the legacy one.
    pub fn start_daemon(&mut self, kind: Kind) {
        let bin = match kind {
            Kind::Ours => our_pvmd(),
            Kind::Legacy => {
                assert!(
                    Path::new(LEGACY_PVMD).exists(),
                    "{LEGACY_PVMD} is missing: install the Debian package pvm"
                );
                PathBuf::from(LEGACY_PVMD)
            }
        };
        let mut c = self.command(&bin);
        c.stderr(Stdio::null());
        let mut p = Proc {
            child: c.spawn().unwrap_or_else(|e| panic!("start {}: {e}", bin.display())),
            name: "legacy pvmd".into(),
        };
        let line = p.read_line(TIMEOUT);
        assert!(
            line.starts_with('/'),
            "legacy pvmd printed {line:?}; log:\n{}",
            self.tmp.log()
        );
        self.pvmd = Some(p);
    }

    /// Runs a program from the exec path to completion: (exit code, stdout + stderr, with the
    /// VM's private directory written as `$TMP`).
    pub fn run(&self, name: &str, args: &[&str], stdin: Option<&str>) -> (Option<i32>, String) {
        let mut c = self.command(&self.bin.join(name));
        c.args(args);
        if stdin.is_some() {
            c.stdin(Stdio::piped());
        }
        let mut child = c.spawn().unwrap_or_else(|e| panic!("run {name}: {e}"));
        if let Some(input) = stdin {
            use std::io::Write;
            let mut i = child.stdin.take().expect("stdin");
            i.write_all(input.as_bytes()).expect("write stdin");
        }
        let (code, out, err) = Proc {
            child,
            name: name.to_string(),
        }
        .wait(TIMEOUT);
        let dir = self.tmp.path().display().to_string();
        (code, format!("{out}{err}").replace(&dir, "$TMP"))
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Some(p) = self.pvmd.take() {
            stop_pid(p.pid());
            drop(p);
        }
        // Tasks a failed test left behind: only those whose environment names our PVM_TMP.
        let mark = format!("PVM_TMP={}", self.tmp.path().display());
        if let Ok(rd) = std::fs::read_dir("/proc") {
            for e in rd.flatten() {
                let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                    continue;
                };
                let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
                if env.split(|&b| b == 0).any(|v| v == mark.as_bytes()) {
                    stop_pid(pid);
                }
            }
        }
    }
}

/// Replaces task ids (`t40003`, `0x40003`, decimal tids printed by Fortran) and pids by
/// placeholders so runs compare.
pub fn normalise(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for line in s.lines() {
        let words: Vec<String> = line
            .split(' ')
            .map(|w| {
                let core = w.trim_matches(|c: char| !c.is_ascii_alphanumeric());
                let is_tid = (core.len() >= 5
                    && ((core.starts_with('t') || core.starts_with("0x"))
                        && core
                            .trim_start_matches('t')
                            .trim_start_matches("0x")
                            .chars()
                            .all(|c| c.is_ascii_hexdigit())))
                    || (core.len() >= 6 && core.chars().all(|c| c.is_ascii_digit()));
                if is_tid && !core.is_empty() {
                    w.replace(core, "TID")
                } else {
                    w.to_string()
                }
            })
            .collect();
        out.push_str(&words.join(" "));
        out.push('\n');
    }
    out
}
