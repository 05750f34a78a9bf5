//! Child processes with deadlines. Every CRIU step runs in its own process group so that a
//! timeout can take down the whole tree (`unshare -f` and `nsenter` fork or exec helpers).

use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
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
    /// A pidfd of the child (readable once it exited): [`Step::wait`] sleeps in poll(2) on it
    /// instead of looking every [`POLL`]; None where pidfd_open is missing (kernel < 5.3).
    pidfd: Option<OwnedFd>,
}

impl Step {
    pub fn spawn(name: &'static str, mut cmd: Command) -> Result<Step> {
        cmd.process_group(0).stdin(Stdio::null());
        let child = cmd.spawn().map_err(io(name))?;
        // SAFETY: pidfd_open takes a pid and flags; a new descriptor is ours alone.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id() as libc::c_long, 0 as libc::c_long) };
        let pidfd = (fd >= 0).then(|| {
            // SAFETY: fd was just returned by pidfd_open and belongs to nobody else.
            unsafe { OwnedFd::from_raw_fd(fd as RawFd) }
        });
        Ok(Step {
            name,
            child,
            done: None,
            pidfd,
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
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.kill();
                return Err(MigError::Timeout { step: self.name, limit });
            }
            match &self.pidfd {
                Some(fd) => {
                    let mut p = libc::pollfd {
                        fd: fd.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: one pollfd we own.
                    unsafe { libc::poll(&mut p, 1, left.as_millis().clamp(1, 100) as i32) };
                }
                None => sleep(POLL),
            }
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

/// How a child is started without helper processes: `setns` into a network namespace and file
/// descriptors moved to fixed numbers, both between fork and exec. Before this, every CRIU
/// step ran as `sh -c 'exec "$@" 3>file'` → `nsenter --net=…` → criu: two extra execs per
/// step (2–6 ms each on this VM under load, three steps per post-copy move).
///
/// `fds` are (descriptor of ours, number in the child); at most 8. The descriptors must stay
/// open until the child is spawned. With a hook std forks instead of using posix_spawn, and a
/// fork copies the parent's page tables: negligible for a pvmd (a few MB), but 22–32 ms for a
/// parent holding 512 MB in 4 KiB pages on this VM (the benchmarks keep their big buffers out
/// of children with MADV_DONTFORK, `benchckpt::dont_fork`).
pub(crate) fn child_setup(cmd: &mut Command, netns: Option<&Path>, fds: &[(RawFd, RawFd)]) -> Result<()> {
    const MAX: usize = 8;
    if netns.is_none() && fds.is_empty() {
        // Nothing to do: without a pre-exec hook std spawns with posix_spawn (vfork-like),
        // which does not copy a large parent's page tables as fork does.
        return Ok(());
    }
    if fds.len() > MAX {
        return Err(MigError::Transfer(format!(
            "{} fds for a child, at most {MAX}",
            fds.len()
        )));
    }
    let ns = match netns {
        Some(p) => Some(fs::File::open(p).map_err(io("open network namespace"))?),
        None => None,
    };
    let mut pairs = [(-1, -1); MAX];
    pairs[..fds.len()].copy_from_slice(fds);
    let n = fds.len();
    // SAFETY: the closure runs in the forked child before exec. It allocates nothing and makes
    // only async-signal-safe system calls (setns, fcntl, dup2) on descriptors open in the
    // child (`ns` is owned by the closure, `fds` are kept open by the caller until the spawn).
    unsafe {
        cmd.pre_exec(move || {
            if let Some(ns) = &ns {
                if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            // First above every target number (close-on-exec copies), then into place: one
            // source may sit on another's target.
            let mut tmp = [-1; MAX];
            for i in 0..n {
                tmp[i] = libc::fcntl(pairs[i].0, libc::F_DUPFD_CLOEXEC, 64);
                if tmp[i] < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for i in 0..n {
                // dup2 clears close-on-exec on the target.
                if libc::dup2(tmp[i], pairs[i].1) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    Ok(())
}

/// A pipe for CRIU's `--status-fd`: the child gets the write end (as fd 3), CRIU writes one
/// byte once its server listens, and the parent blocks on the read end instead of polling a
/// file every few ms. End of file without that byte means the child (and every process that
/// inherited the end) exited or closed it first.
pub(crate) struct StatusPipe {
    r: OwnedFd,
    w: Option<OwnedFd>,
}

impl StatusPipe {
    pub fn new() -> Result<StatusPipe> {
        let mut fds = [-1; 2];
        // SAFETY: pipe2 fills the two-element array we own.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(io("status pipe")(std::io::Error::last_os_error()));
        }
        // SAFETY: both descriptors were just created and belong to nobody else.
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        Ok(StatusPipe { r, w: Some(w) })
    }

    /// The end to give the child (valid until [`StatusPipe::spawned`]).
    pub fn child_end(&self) -> RawFd {
        self.w.as_ref().map_or(-1, AsRawFd::as_raw_fd)
    }

    /// Closes our copy of the write end: call once the child runs.
    pub fn spawned(&mut self) {
        self.w = None;
    }

    /// Waits until the child reports ready, it exits or closes the pipe without that, or the
    /// deadline passes (then the step is killed).
    pub fn wait(&mut self, step: &mut Step, deadline: Instant, limit: Duration) -> Result<()> {
        self.spawned();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                step.kill();
                return Err(MigError::Timeout { step: step.name, limit });
            }
            let mut p = libc::pollfd {
                fd: self.r.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // Wakes at least every 100 ms to look at the step too.
            let ms = left.as_millis().clamp(1, 100) as i32;
            // SAFETY: one pollfd we own.
            let n = unsafe { libc::poll(&mut p, 1, ms) };
            if n > 0 {
                let mut b = [0u8; 1];
                // SAFETY: reads at most one byte into a buffer we own.
                let got = unsafe { libc::read(self.r.as_raw_fd(), b.as_mut_ptr().cast(), 1) };
                if got == 1 {
                    return Ok(());
                }
                if got == 0 {
                    // Closed without a byte: the child gave up; say how it ended.
                    let st = step.wait(deadline, limit)?;
                    return Err(MigError::Criu {
                        step: step.name,
                        status: st.to_string(),
                        log: std::path::PathBuf::new(),
                        tail: String::new(),
                    });
                }
            }
            if let Some(st) = step.poll()? {
                return Err(MigError::Criu {
                    step: step.name,
                    status: st.to_string(),
                    log: std::path::PathBuf::new(),
                    tail: String::new(),
                });
            }
        }
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
