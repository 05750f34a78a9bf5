//! The migration test task (`tests/mighog.c`): built with gcc and started on a namespace host.
//! Shared by the interop tests and the benchmark so both measure the same program.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::error::{io, MigError, Result};
use crate::netns::Host;

/// Compiles mighog into `dir` and returns the binary.
pub fn build(dir: &Path) -> Result<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mighog.c");
    fs::create_dir_all(dir).map_err(io("create build dir"))?;
    let bin = dir.join("mighog");
    let out = Command::new("gcc")
        .args(["-O2", "-Wall", "-o"])
        .arg(&bin)
        .arg(&src)
        .output()
        .map_err(io("run gcc (is it installed? ci/setup installs it)"))?;
    if !out.status.success() {
        return Err(MigError::Transfer(format!(
            "gcc {}: {}",
            src.display(),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(bin)
}

/// A running mighog: its host pid and log file.
pub struct Hog {
    pub pid: u32,
    pub log: PathBuf,
}

/// Starts `bin` with `mb` MiB on `host`: a session leader with no ctty and stdio on /dev/null,
/// as pvmd spawns tasks, re-parented to init (so CRIU sees a plain tree) via `setsid -f`.
pub fn start(host: &Host, bin: &Path, mb: u32, log: &Path, limit: Duration) -> Result<Hog> {
    start_with(host, bin, mb, log, Stdio::null(), limit).map(|(h, _)| h)
}

/// [`start`] with the task's stdout given (e.g. `Stdio::piped()`); returns the read end when
/// piped.
pub fn start_with(
    host: &Host,
    bin: &Path,
    mb: u32,
    log: &Path,
    stdout: Stdio,
    limit: Duration,
) -> Result<(Hog, Option<std::process::ChildStdout>)> {
    let _ = fs::remove_file(log);
    let mut c = host.command(Path::new("setsid"));
    c.arg("-f")
        .arg(bin)
        .arg(mb.to_string())
        .arg(log)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::null());
    let mut child = c.spawn().map_err(io("start mighog"))?;
    let out = child.stdout.take();
    let st = child.wait().map_err(io("start mighog"))?;
    if !st.success() {
        return Err(MigError::Transfer(format!("setsid mighog: {st}")));
    }
    let deadline = Instant::now() + limit;
    loop {
        let text = fs::read_to_string(log).unwrap_or_default();
        if let Some(pid) = text
            .lines()
            .find_map(|l| l.strip_prefix("ready pid="))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|p| p.parse().ok())
        {
            return Ok((
                Hog {
                    pid,
                    log: log.to_path_buf(),
                },
                out,
            ));
        }
        if Instant::now() >= deadline {
            return Err(MigError::Timeout {
                step: "mighog start",
                limit,
            });
        }
        sleep(Duration::from_millis(10));
    }
}

/// Asks the task at `pid` to check its memory and returns its new "verify" log line.
pub fn verify(pid: u32, log: &Path, limit: Duration) -> Result<String> {
    let before = fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("verify"))
        .count();
    if !crate::proc::signal(pid, libc::SIGUSR1) {
        return Err(MigError::Transfer(format!("task {pid} is gone")));
    }
    let deadline = Instant::now() + limit;
    loop {
        let text = fs::read_to_string(log).unwrap_or_default();
        if let Some(l) = text.lines().filter(|l| l.starts_with("verify")).nth(before) {
            return Ok(l.to_string());
        }
        if Instant::now() >= deadline {
            return Err(MigError::Timeout {
                step: "mighog verify",
                limit,
            });
        }
        sleep(Duration::from_millis(10));
    }
}

/// The `ticks=` value of a verify line.
pub fn ticks(line: &str) -> Option<u64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("ticks="))
        .and_then(|t| t.parse().ok())
}

/// The `net:[inode]` of a namespace file, as a task would print it.
pub fn netns_id(ns: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(ns).ok().map(|m| format!("net:[{}]", m.ino()))
}
