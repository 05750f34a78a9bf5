//! Helpers for tests that run real processes: our `pvmd`, the legacy PVM 3.4.6 daemon and
//! console, and small C programs built with gcc against the legacy `pvm3.h` and `libpvm3`.
//!
//! Every test gets its own PVM_TMP directory, kills only the processes it started (by pid, on
//! drop), and bounds every wait with a timeout. Missing tools make tests fail loudly: these
//! tests exist to compare against the legacy implementation, so skipping would hide a broken
//! setup.

pub mod flib;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub mod netns;
pub mod rawtask; // hardening: raw task-socket client
pub mod soak; // hardening: soak run

pub const LEGACY_PVMD: &str = "/usr/bin/pvmd";
pub const LEGACY_CONSOLE: &str = "/usr/bin/pvm";
pub const LEGACY_HEADER: &str = "/usr/include/pvm3.h";
pub const LEGACY_ROOT: &str = "/usr/lib/pvm3";

/// Default bound for any single wait.
pub const TIMEOUT: Duration = Duration::from_secs(20);

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

fn require(path: &str, what: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: the interop tests need {what} (Debian packages pvm, pvm-dev, libpvm3)"
    );
}

/// Fails loudly unless CRIU (>= 4.1, from `ci/criu-setup`) is installed: the migration tests
/// never skip.
pub fn require_criu() {
    assert!(
        Path::new("/usr/local/sbin/criu").exists(),
        "CRIU 4.1 is missing: run ci/criu-setup"
    );
}

/// Fails loudly unless the legacy console is installed (Debian pvm).
pub fn require_legacy_console() {
    require(LEGACY_CONSOLE, "the legacy console");
}

/// Path of our `pvmd`, built once per test process with the same cargo that runs the tests.
pub fn our_pvmd() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = option_env!("CARGO").unwrap_or("cargo");
        let status = Command::new(cargo)
            .args(["build", "--quiet", "-p", "pvmd-rs", "--bin", "pvmd"])
            .current_dir(workspace_root())
            .status()
            .expect("run cargo build for pvmd");
        assert!(status.success(), "cargo build -p pvmd-rs failed");
        let bin = target_dir().join("debug").join("pvmd");
        assert!(bin.exists(), "{} not found after building", bin.display());
        bin
    })
    .clone()
}

/// Compiles `interop-tests/c/<name>.c` against the legacy header and library (once per process;
/// headers of `interop-tests/c` such as `msgcheck.h` are found there).
pub fn c_program(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("c");
    let src = dir.join(format!("{name}.c"));
    let text = std::fs::read_to_string(&src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
    build_c(name, &text, &["-O0", "-I", &dir.to_string_lossy()])
}

/// Compiles the C program `source` as `name` with gcc (`flags` first, `-lpvm3` last: the
/// legacy header and library at build time; a test picks the library at run time with
/// LD_LIBRARY_PATH), once per process and name, under the build directory's scratch space
/// (`target/tmp/interop-c`), not /tmp.
pub fn build_c(name: &str, source: &str, flags: &[&str]) -> PathBuf {
    require(LEGACY_HEADER, "the legacy header pvm3.h");
    gcc_once(name, source, flags, &["-lpvm3"])
}

/// Compiles the C program `source` as `name` against our header (`include/pvm3.h`) and links
/// it with our library only (`-l:libpvm3.so.3` from [`shim::shim_dir`]): a relinked program;
/// once per process and name, like [`build_c`]. The run path names our library too, so the
/// program loads it wherever a pvmd starts it (slave pvmds do not pass LD_LIBRARY_PATH on; a
/// LD_LIBRARY_PATH that is set still comes first).
pub fn build_c_ours(name: &str, source: &str) -> PathBuf {
    let inc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../include");
    let lib = shim::shim_dir();
    let (inc, lib) = (inc.to_string_lossy(), lib.to_string_lossy());
    let rpath = format!("-Wl,-rpath,{lib}");
    gcc_once(
        &format!("ours-{name}"),
        source,
        &["-I", &inc],
        &["-L", &lib, &rpath, "-l:libpvm3.so.3"],
    )
}

/// `gcc FLAGS -o target/tmp/interop-c/NAME-PID NAME-PID.c LIBS`, once per process and name.
fn gcc_once(name: &str, source: &str, flags: &[&str], libs: &[&str]) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let mut built = BUILT
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(p) = built.get(name) {
        return p.clone();
    }
    let dir = target_dir().join("tmp").join("interop-c");
    std::fs::create_dir_all(&dir).expect("create C build dir");
    let out = dir.join(format!("{name}-{}", std::process::id()));
    let src = dir.join(format!("{name}-{}.c", std::process::id()));
    std::fs::write(&src, source).expect("write C source");
    let res = Command::new("gcc")
        .args(flags)
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .args(libs)
        .output()
        .unwrap_or_else(|e| panic!("gcc is required for the interop tests and could not be run: {e}"));
    assert!(
        res.status.success(),
        "gcc failed on {}:\n{}",
        src.display(),
        String::from_utf8_lossy(&res.stderr)
    );
    built.insert(name.to_string(), out.clone());
    out
}

/// A private PVM_TMP directory, removed on drop.
pub struct TmpDir(pub PathBuf);

impl TmpDir {
    pub fn new(tag: &str) -> TmpDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "pvm-interop-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create PVM_TMP");
        TmpDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The daemon log, for failure messages.
    pub fn log(&self) -> String {
        let uid = current_uid();
        std::fs::read_to_string(self.0.join(format!("pvml.{uid}"))).unwrap_or_default()
    }
}

impl Drop for TmpDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn current_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(0)
}

/// Sends SIGTERM, waits up to 5 s, then SIGKILL. Only for pids this test started.
pub fn stop_pid(pid: u32) {
    let alive = |pid: u32| Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(pid);
    if !alive(pid) {
        return;
    }
    send_signal(pid, libc::SIGTERM);
    let t = Instant::now();
    while alive(pid) && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    if alive(pid) {
        send_signal(pid, libc::SIGKILL);
    }
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .map(|r| r.trim_start().starts_with('Z'))
                .unwrap_or(false)
        })
        .unwrap_or(true)
}

pub fn send_signal(pid: u32, sig: i32) {
    let pid = libc::pid_t::try_from(pid).expect("pid fits");
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// A child process killed (by pid) when dropped.
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Proc {
    /// Starts `c` with its output captured and waits for it as [`Proc::wait`] does.
    pub fn run_piped(c: &mut Command, name: &str, timeout: Duration) -> (Option<i32>, String, String) {
        let child = c
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        Proc {
            child,
            name: name.to_string(),
        }
        .wait(timeout)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for exit; panics after `timeout`. Returns (status code, stdout, stderr).
    pub fn wait(mut self, timeout: Duration) -> (Option<i32>, String, String) {
        let t = Instant::now();
        let mut out = self.child.stdout.take();
        let mut err = self.child.stderr.take();
        let (otx, orx) = mpsc::channel();
        let (etx, erx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(o) = out.as_mut() {
                let _ = o.read_to_string(&mut s);
            }
            let _ = otx.send(s);
        });
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(e) = err.as_mut() {
                let _ = e.read_to_string(&mut s);
            }
            let _ = etx.send(s);
        });
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                let o = orx.recv_timeout(Duration::from_secs(5)).unwrap_or_default();
                let e = erx.recv_timeout(Duration::from_secs(5)).unwrap_or_default();
                return (st.code(), o, e);
            }
            if t.elapsed() > timeout {
                let pid = self.pid();
                stop_pid(pid);
                let _ = self.child.wait();
                let o = orx.recv_timeout(Duration::from_secs(2)).unwrap_or_default();
                let e = erx.recv_timeout(Duration::from_secs(2)).unwrap_or_default();
                panic!(
                    "{} (pid {pid}) did not finish within {timeout:?}\nstdout:\n{o}\nstderr:\n{e}",
                    self.name
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Reads one line of stdout within `timeout` (the rest of stdout stays readable by `wait`
    /// only if this is not used; meant for processes that announce something first).
    pub fn read_line(&mut self, timeout: Duration) -> String {
        let out = self.child.stdout.take().expect("stdout piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(out);
            let mut l = String::new();
            let _ = r.read_line(&mut l);
            let _ = tx.send((l, r));
        });
        match rx.recv_timeout(timeout) {
            Ok((l, r)) => {
                // Keep draining the rest so the child never blocks on a full pipe.
                std::thread::spawn(move || {
                    let mut sink = Vec::new();
                    let mut r = r;
                    let _ = r.read_to_end(&mut sink);
                });
                l
            }
            Err(_) => panic!("{} (pid {}) printed no line within {timeout:?}", self.name, self.pid()),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            stop_pid(self.child.id());
            let _ = self.child.wait();
        }
    }
}

/// Which daemon a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Ours,
    Legacy,
}

/// Environment for every PVM process of a test.
pub fn pvm_command(program: &Path, tmp: &Path) -> Command {
    let mut c = Command::new(program);
    c.env("PVM_TMP", tmp)
        .env("PVM_ALLOW_ROOT", "1")
        .env("PVM_ROOT", LEGACY_ROOT)
        .env_remove("PVMSOCK")
        .env_remove("PVMEPID")
        .env_remove("PVMDDEBUG")
        .env_remove("PVMHOSTFILE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// A running master pvmd in its own PVM_TMP.
pub struct Pvmd {
    pub proc: Proc,
    pub sock: String,
    pub kind: Kind,
}

impl Pvmd {
    /// Gives up ownership of the process (e.g. to wait for its exit status).
    pub fn into_proc(self) -> Proc {
        self.proc
    }

    pub fn start(kind: Kind, tmp: &TmpDir, args: &[&str]) -> Pvmd {
        let bin = match kind {
            Kind::Ours => our_pvmd(),
            Kind::Legacy => {
                require(LEGACY_PVMD, "the legacy daemon");
                PathBuf::from(LEGACY_PVMD)
            }
        };
        let mut c = pvm_command(&bin, tmp.path());
        c.args(args).stderr(Stdio::null());
        let child = c.spawn().unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
        let mut proc = Proc {
            child,
            name: format!("{kind:?} pvmd"),
        };
        let sock = proc.read_line(TIMEOUT).trim_end().to_string();
        assert!(
            sock.starts_with('/'),
            "{kind:?} pvmd printed {sock:?} instead of its socket path; log:\n{}",
            tmp.log()
        );
        Pvmd { proc, sock, kind }
    }
}

/// Runs a program to completion with the test's PVM environment; returns (code, stdout, stderr).
pub fn run(program: &Path, tmp: &TmpDir, args: &[&str], stdin: Option<&str>) -> (Option<i32>, String, String) {
    let mut c = pvm_command(program, tmp.path());
    c.args(args);
    if stdin.is_some() {
        c.stdin(Stdio::piped());
    }
    let mut child = c.spawn().unwrap_or_else(|e| panic!("run {}: {e}", program.display()));
    if let Some(input) = stdin {
        let mut i = child.stdin.take().expect("stdin");
        i.write_all(input.as_bytes()).expect("write stdin");
    }
    Proc {
        child,
        name: program.display().to_string(),
    }
    .wait(TIMEOUT)
}

/// Starts a program in the background with the test's PVM environment.
pub fn spawn(program: &Path, tmp: &TmpDir, args: &[&str]) -> Proc {
    let mut c = pvm_command(program, tmp.path());
    c.args(args);
    Proc {
        child: c.spawn().unwrap_or_else(|e| panic!("spawn {}: {e}", program.display())),
        name: program.display().to_string(),
    }
}

/// Pid encoded in a pvmd socket name `.../pvmtmp<pid6>.<k>`.
pub fn pid_from_sock(sock: &str) -> Option<u32> {
    let name = Path::new(sock).file_name()?.to_str()?;
    let digits = name.strip_prefix("pvmtmp")?.split('.').next()?;
    digits.parse().ok()
}

/// Numbers become `N` and runs of blanks one space (column alignment depends on the widths):
/// for comparing outputs that print timings.
pub fn numbers_to_n(l: &str) -> String {
    let mut out = String::new();
    let mut in_num = false;
    for c in l.split_whitespace().collect::<Vec<_>>().join(" ").chars() {
        if c.is_ascii_digit() || (in_num && c == '.') {
            if !in_num {
                out.push('N');
                in_num = true;
            }
        } else {
            in_num = false;
            out.push(c);
        }
    }
    out
}

pub mod shim;
pub mod shot; // Chromium screenshots of pvmtrace pages

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_from_socket_name() {
        assert_eq!(pid_from_sock("/tmp/x/pvmtmp010842.0"), Some(10842));
        assert_eq!(pid_from_sock("/tmp/x/other"), None);
    }
}
