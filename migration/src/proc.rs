//! Child processes with deadlines. Every CRIU step runs in its own process group so that a
//! timeout can take down the whole tree (`unshare -f` and `nsenter` fork or exec helpers).

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::error::{io, MigError, Result};

/// Poll period while waiting for a child or a file: short against the ~100 ms freezes we
/// measure, long enough not to load a 2-core machine.
pub(crate) const POLL: Duration = Duration::from_millis(2);

/// Sends `sig` to the process group `pgid`.
pub(crate) fn kill_group(pgid: u32, sig: i32) {
    let Ok(p) = i32::try_from(pgid) else { return };
    if p <= 1 {
        return;
    }
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    unsafe {
        libc::kill(-p, sig);
    }
}

/// Sends `sig` to the single process `pid`.
pub fn signal(pid: u32, sig: i32) -> bool {
    let Ok(p) = i32::try_from(pid) else { return false };
    if p <= 1 {
        return false;
    }
    // SAFETY: as above.
    unsafe { libc::kill(p, sig) == 0 }
}

/// A spawned step: killed with its whole process group when dropped unfinished.
pub(crate) struct Step {
    pub name: &'static str,
    pub child: Child,
    pub done: Option<ExitStatus>,
}

impl Step {
    pub fn spawn(name: &'static str, mut cmd: Command) -> Result<Step> {
        cmd.process_group(0).stdin(Stdio::null());
        let child = cmd.spawn().map_err(io(name))?;
        Ok(Step {
            name,
            child,
            done: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn poll(&mut self) -> Result<Option<ExitStatus>> {
        if self.done.is_none() {
            self.done = self.child.try_wait().map_err(io(self.name))?;
        }
        Ok(self.done)
    }

    /// Waits until the step exits or `deadline` passes (then kills it).
    pub fn wait(&mut self, deadline: Instant, limit: Duration) -> Result<ExitStatus> {
        loop {
            if let Some(s) = self.poll()? {
                return Ok(s);
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(MigError::Timeout { step: self.name, limit });
            }
            sleep(POLL);
        }
    }

    pub fn kill(&mut self) {
        if self.done.is_none() {
            kill_group(self.child.id(), libc::SIGKILL);
            let _ = self.child.kill();
            self.done = self.child.wait().ok();
        }
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until `path` exists and is non-empty, the step exits, or the deadline passes.
pub(crate) fn wait_file(step: &mut Step, path: &Path, deadline: Instant, limit: Duration) -> Result<()> {
    loop {
        if fs::metadata(path).map(|m| m.len() > 0).unwrap_or(false) {
            return Ok(());
        }
        if let Some(s) = step.poll()? {
            // The file may have been written just before the exit.
            if fs::metadata(path).map(|m| m.len() > 0).unwrap_or(false) {
                return Ok(());
            }
            return Err(MigError::Criu {
                step: step.name,
                status: s.to_string(),
                log: path.to_path_buf(),
                tail: String::new(),
            });
        }
        if Instant::now() >= deadline {
            step.kill();
            return Err(MigError::Timeout { step: step.name, limit });
        }
        sleep(POLL);
    }
}

/// The last lines of a CRIU log, for error messages.
pub(crate) fn log_tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_else(|e| format!("(cannot read: {e})"));
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(12);
    lines[from..].join("\n")
}

/// Children of `pid` (from /proc, needs CONFIG_PROC_CHILDREN; falls back to a PPid scan).
pub(crate) fn children(pid: u32) -> Vec<u32> {
    if let Ok(s) = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) {
        return s.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    }
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Ok(st) = fs::read_to_string(format!("/proc/{p}/status")) {
                if st
                    .lines()
                    .any(|l| l.strip_prefix("PPid:").map(str::trim) == Some(&pid.to_string()))
                {
                    out.push(p);
                }
            }
        }
    }
    out
}
