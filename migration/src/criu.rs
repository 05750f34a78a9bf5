//! The CRIU driver: checkpoint, restore into a fresh pid namespace, and migration between two
//! hosts (post-copy with lazy pages, or stop-and-copy). Plain blocking functions with explicit
//! time limits; pvmd-rs runs them on a blocking thread (`tokio::task::spawn_blocking`).
//!
//! Tasks are identified to CRIU by host pid only for the duration of one call: the caller keeps
//! the PVM tid and learns the new host pid from [`Restored::pid`].

use std::fs;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::error::{io, MigError, Result};
use crate::netns::Host;
use crate::probe::{self, Capabilities};
use crate::proc::{child_setup, children, log_tail, signal, wait_file, StatusPipe, Step, POLL};
use crate::transfer;

/// How to move a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Lazy pages: freeze = metadata only, pages follow on demand and in the background.
    PostCopy,
    /// Dump everything, copy, restore: freeze grows with the task's size.
    StopAndCopy,
    /// PostCopy where the probe says it works, else StopAndCopy; also falls back when the
    /// post-copy dump fails before anything left the source (the task is then still running).
    Auto,
}

/// An fd handed to a restored task in place of one it had at dump time (CRIU
/// `--inherit-fd`). Opened write-only in the task: meant for output pipes.
#[derive(Debug)]
pub struct Inherit {
    /// Our end to give (e.g. the write end of the new stdout pipe).
    pub fd: OwnedFd,
    /// What it replaces, as CRIU names it in the images, e.g. `pipe:[12345]`: see [`pipe_key`].
    pub key: String,
}

/// CRIU's name for the pipe behind `fd` (`pipe:[inode]`): the daemon takes it from its own end
/// of the task's output pipe before the dump.
pub fn pipe_key(fd: &impl AsRawFd) -> std::io::Result<String> {
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
    Ok(format!("pipe:[{}]", m.ino()))
}

/// Result of a checkpoint.
#[derive(Debug)]
pub struct Dumped {
    /// Wall time of `criu dump`.
    pub wall: Duration,
    /// How long CRIU kept the task frozen (its own statistic), when it reported one.
    pub frozen: Option<Duration>,
    /// Bytes of images written.
    pub bytes: u64,
}

/// A task restored into a fresh pid namespace. CRIU stays as that namespace's init (and
/// reaper) for the task's lifetime; dropping this kills the whole namespace.
#[derive(Debug)]
pub struct Restored {
    step: Step,
    /// Host pid of the restored task (inside its namespace it has its old pid).
    pub pid: u32,
    /// When CRIU's post-resume hook ran: the task was running again from here.
    pub resumed: SystemTime,
}

impl std::fmt::Debug for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Step({}, pid {})", self.name, self.child.id())
    }
}

impl Restored {
    /// True while the task's namespace is alive.
    pub fn alive(&mut self) -> bool {
        matches!(self.step.poll(), Ok(None))
    }
    /// Kills the task and its namespace and waits for them.
    pub fn kill(mut self) {
        self.step.kill();
    }
    /// Pid of the CRIU process that is the namespace's init (the daemon watches it: when it
    /// exits, the task has exited).
    pub fn reaper_pid(&self) -> u32 {
        self.step.pid()
    }
}

/// Result of a migration.
#[derive(Debug)]
pub struct Migrated {
    pub mode: Mode,
    pub restored: Restored,
    /// From the start of the dump until the task ran again on the target.
    pub freeze: Duration,
    /// From the start of the dump until every page was on the target.
    pub total: Duration,
    /// From the start of the dump until the source CRIU exited (the source host's resources
    /// are free; for stop-and-copy the same as `total`).
    pub released: Duration,
    /// Bytes carried by the image stream (post-copy: metadata only; pages go by page server).
    pub streamed: u64,
    /// Set when Auto fell back to stop-and-copy: why post-copy did not work.
    pub fallback: Option<String>,
    /// Where the time up to the resume went (benchmarks print it).
    pub phases: Phases,
}

/// The steps of one move, each as the time since the dump began, and CRIU's own share of the
/// dump and the restore (from its logs: from its start to the point where it reported). The
/// difference between a step and CRIU's share is ours: process starts, waits, the image stream.
#[derive(Clone, Copy, Debug, Default)]
pub struct Phases {
    /// The dump is done (post-copy: CRIU serves the pages now; stop-and-copy: images written).
    pub dumped: Duration,
    /// The images are on the target.
    pub streamed: Duration,
    /// Post-copy: the target's lazy-pages daemon is ready (else equal to `streamed`).
    pub lazy_ready: Duration,
    /// The task runs on the target (the freeze ends).
    pub resumed: Duration,
    /// CRIU's dump, from its start until its page server starts (post-copy) or it is done
    /// (`PVM_MIG_VERBOSE` >= 3 only: read from its log).
    pub criu_dump: Option<Duration>,
    /// CRIU's restore, from its start until the task was resumed (`PVM_MIG_VERBOSE` >= 3).
    pub criu_restore: Option<Duration>,
}

/// The timestamp of the first line of a CRIU log containing `what` (from `-v3` on, CRIU stamps
/// its log lines with the time since it started, "(00.012345)"; at the default `-v2` there is
/// none and this is None).
fn log_stamp(log: &Path, what: &str) -> Option<Duration> {
    let text = fs::read_to_string(log).ok()?;
    text.lines().filter(|l| l.contains(what)).find_map(|l| {
        let t: f64 = l.strip_prefix('(')?.split(')').next()?.trim().parse().ok()?;
        Some(Duration::from_secs_f64(t))
    })
}

/// The driver: one CRIU binary and what it can do here.
pub struct Criu {
    pub bin: PathBuf,
    pub caps: Capabilities,
    /// Keep image dirs and CRIU logs after a successful migration (debugging; they are always
    /// kept after a failure). Also set by `PVM_MIG_KEEP` in the environment.
    pub keep_images: bool,
    /// CRIU log level 0..=4 (`-v`); 4 adds timestamps per step. `PVM_MIG_VERBOSE` sets it.
    pub log_level: u8,
}

const PIPE_MAX: &str = "/proc/sys/fs/pipe-max-size";
const PIPE_NEEDED: u64 = 4 << 20;
/// The post-copy steps running on this machine and the value to put back, shared by every
/// process that raises the limit (two pvmds and their restore helpers take part in one move):
/// `old pid pid …` (one pid per step), updated under an exclusive `flock` of the same file.
/// Steps of processes that died (killed while they held one) are dropped at each update.
const PIPE_STATE: &str = "/tmp/.pvm-migration-pipe-max-size.v2";

/// Raises fs.pipe-max-size to 4 MiB while post-copy runs, where root lacks CAP_SYS_RESOURCE
/// (CRIU's lazy page server then fails on an unchecked F_SETPIPE_SZ; CKPT-REPORT §6). The
/// old value comes back when the last post-copy step on the machine ends, whichever process
/// ran it (a per-process count let one process lower the limit under another's CRIU).
struct PipeSize(bool);

/// Runs `f` on the shared old value and holder pids under the state file's lock.
fn with_pipe_state(f: impl FnOnce(&mut String, &mut Vec<u32>)) {
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsRawFd;
    let Ok(mut file) = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(PIPE_STATE)
    else {
        return;
    };
    // SAFETY: flock on a descriptor we own; released when the file is closed.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return;
    }
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    let mut w = text.split_whitespace();
    // Only a plausible limit is ever written back.
    let mut old = w
        .next()
        .filter(|o| o.parse::<u64>().is_ok_and(|v| v >= 4096))
        .unwrap_or("")
        .to_string();
    let mut pids: Vec<u32> = w
        .filter_map(|p| p.parse().ok())
        .filter(|p| Path::new(&format!("/proc/{p}")).exists())
        .collect();
    f(&mut old, &mut pids);
    if pids.is_empty() && !old.is_empty() {
        let _ = fs::write(PIPE_MAX, old.as_str());
        old.clear();
    }
    let _ = file.set_len(0);
    let _ = file.rewind();
    let mut line = if old.is_empty() { "-".to_string() } else { old };
    for p in pids {
        line.push_str(&format!(" {p}"));
    }
    let _ = file.write_all(line.as_bytes());
}

impl PipeSize {
    fn raise(needed: bool) -> PipeSize {
        if !needed {
            return PipeSize(false);
        }
        with_pipe_state(|old, pids| {
            let cur = fs::read_to_string(PIPE_MAX).unwrap_or_default();
            let low = cur.trim().parse::<u64>().map(|v| v < PIPE_NEEDED).unwrap_or(false);
            if low && fs::write(PIPE_MAX, PIPE_NEEDED.to_string()).is_ok() && old.is_empty() {
                *old = cur.trim().to_string();
            }
            pids.push(std::process::id());
        });
        PipeSize(true)
    }
}

impl Drop for PipeSize {
    fn drop(&mut self) {
        if !self.0 {
            return;
        }
        with_pipe_state(|_, pids| {
            let me = std::process::id();
            if let Some(i) = pids.iter().position(|p| *p == me) {
                pids.remove(i);
            }
        });
    }
}

/// Runs `f` with fs.pipe-max-size raised to 4 MiB (where root lacks CAP_SYS_RESOURCE; shared
/// with the post-copy steps, see [`PipeSize`]): CRIU's page pipes can then grow past 1 MiB.
/// For measurements (`pvm-migrate bench-ckpt --big-pipes`).
pub fn with_big_pipes<T>(raise: bool, f: impl FnOnce() -> T) -> T {
    let _pipes = PipeSize::raise(raise);
    f()
}

fn dir_bytes(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .map(|rd| rd.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
        .unwrap_or(0)
}

/// "Frozen time: 12345 us" from `--display-stats` output.
fn frozen_from_stats(text: &str) -> Option<Duration> {
    text.lines().find_map(|l| {
        let v = l.split("Frozen time:").nth(1)?;
        let us: u64 = v.split_whitespace().next()?.parse().ok()?;
        Some(Duration::from_micros(us))
    })
}

fn check(step: &'static str, st: std::process::ExitStatus, log: &Path) -> Result<()> {
    if st.success() {
        Ok(())
    } else {
        Err(MigError::Criu {
            step,
            status: st.to_string(),
            log: log.to_path_buf(),
            tail: log_tail(log),
        })
    }
}

impl Criu {
    /// Probes this host; fails with the reason when dump/restore cannot work here.
    pub fn new() -> Result<Criu> {
        let caps = probe::probe();
        Criu::with_caps(caps)
    }

    pub fn with_caps(caps: Capabilities) -> Result<Criu> {
        let Some((bin, _)) = caps.criu.clone() else {
            return Err(MigError::NoCriu(
                probe::locate().err().unwrap_or_else(|| "unknown".into()),
            ));
        };
        if let Err(reason) = caps.can_migrate() {
            return Err(MigError::Unavailable {
                what: "checkpoint/restore",
                reason,
            });
        }
        Ok(Criu {
            bin,
            caps,
            keep_images: std::env::var_os("PVM_MIG_KEEP").is_some(),
            log_level: std::env::var("PVM_MIG_VERBOSE")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(2)
                .min(4),
        })
    }

    fn verbosity(&self) -> &'static str {
        ["-v0", "-v1", "-v2", "-v3", "-v4"][usize::from(self.log_level.min(4))]
    }

    /// A command running CRIU on `host` to dump task `pid` (host pid). Returns it with the pid
    /// to pass to `criu dump -t`.
    ///
    /// A task restored earlier lives in its own pid and mount namespace (made by
    /// `unshare -p --mount-proc`). CRIU dumping it from outside would try to dump that mount
    /// namespace and fail on the host's netns bind mounts; so CRIU joins the task's mount and
    /// pid namespaces (`nsenter -t PID -m -p`) and dumps it by its inner pid, like any process
    /// of its own namespace. The next restore again makes a fresh namespace.
    ///
    /// CRIU must then not kill the task itself: the namespace's init (the earlier restore's
    /// CRIU) exits with its last task and the kernel kills the whole namespace, our dumping
    /// CRIU included, before it has finished. So such a task is dumped `--leave-stopped` and
    /// killed by the caller afterwards ([`Foreign::finish`]).
    ///
    /// With `status`, CRIU gets its write end as fd 3 (`--status-fd 3`).
    fn dump_command(&self, host: &Host, pid: u32, status: Option<&StatusPipe>) -> Result<(Command, u32, Foreign)> {
        let inner = inner_pid(pid);
        let mut c = match inner {
            Some(_) => {
                // nsenter stays for the pid namespace (joining one takes a fork).
                let mut c = Command::new("nsenter");
                c.args(["-t", &pid.to_string(), "-m", "-p", "--"]).arg(&self.bin);
                c
            }
            None => Command::new(&self.bin),
        };
        let fds: Vec<(RawFd, RawFd)> = status.map(|s| (s.child_end(), 3)).into_iter().collect();
        child_setup(&mut c, host.netns.as_deref(), &fds)?;
        Ok((c, inner.unwrap_or(pid), Foreign(inner.map(|_| pid))))
    }

    /// CRIU on `host` with the write end of `status` as fd 3 (`--status-fd 3`: CRIU writes a
    /// byte there once its server listens).
    fn criu_with_status(&self, host: &Host, status: &StatusPipe) -> Result<Command> {
        let mut c = Command::new(&self.bin);
        child_setup(&mut c, host.netns.as_deref(), &[(status.child_end(), 3)])?;
        Ok(c)
    }

    /// Checkpoints task `pid` (and its children) on `host` into `dir`. With `leave_running` the
    /// task continues after a short freeze; without, CRIU kills it after the dump.
    pub fn dump(&self, pid: u32, host: &Host, dir: &Path, leave_running: bool, limit: Duration) -> Result<Dumped> {
        let t0 = Instant::now();
        fs::create_dir_all(dir).map_err(io("create image dir"))?;
        let out = dir.join("dump.out");
        let (mut c, tpid, foreign) = self.dump_command(host, pid, None)?;
        c.args(["dump", "-t", &tpid.to_string(), "-D"]).arg(dir).args([
            "-o",
            "dump.log",
            self.verbosity(),
            "--display-stats",
        ]);
        if leave_running {
            c.arg("-R");
        } else {
            foreign.args(&mut c);
        }
        let f = fs::File::create(&out).map_err(io("create dump.out"))?;
        c.stdout(f.try_clone().map_err(io("dup"))?).stderr(f);
        let mut s = Step::spawn("criu dump", c)?;
        let st = s.wait(t0 + limit, limit)?;
        check("criu dump", st, &dir.join("dump.log"))?;
        if !leave_running {
            foreign.finish();
        }
        let stats = fs::read_to_string(&out).unwrap_or_default();
        Ok(Dumped {
            wall: t0.elapsed(),
            frozen: frozen_from_stats(&stats),
            bytes: dir_bytes(dir) - fs::metadata(&out).map(|m| m.len()).unwrap_or(0),
        })
    }

    /// Writes the post-resume hook into `dir`: it stamps the time the task runs again. `date`
    /// writes its ~20 bytes with one write(2), so a reader sees an empty file or all of it (the
    /// waiter wants a non-empty one): no temporary file and `mv`, one process less in the
    /// freeze it measures. This is also where the shim gets its wake-up signal later
    /// (docs/migration.md, park protocol).
    fn hook(dir: &Path) -> Result<PathBuf> {
        let h = dir.join("resume-hook.sh");
        let d = dir.display();
        fs::write(
            &h,
            format!(
                "#!/bin/sh\nif [ \"$CRTOOLS_SCRIPT_ACTION\" = post-resume ]; then\n  \
                 date +%s%N > '{d}/resumed'\nfi\nexit 0\n"
            ),
        )
        .map_err(io("write resume hook"))?;
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&h, fs::Permissions::from_mode(0o755)).map_err(io("chmod resume hook"))?;
        let _ = fs::remove_file(dir.join("resumed"));
        Ok(h)
    }

    fn spawn_restore(&self, host: &Host, dir: &Path, lazy: bool, inherit: &[Inherit]) -> Result<Step> {
        let hook = Criu::hook(dir)?;
        let mut argv: Vec<std::ffi::OsString> = Vec::new();
        for a in ["unshare", "-p", "-f", "--mount-proc"] {
            argv.push(a.into());
        }
        argv.push(self.bin.clone().into());
        for a in ["restore", "-D"] {
            argv.push(a.into());
        }
        argv.push(dir.into());
        for a in ["-o", "restore.log", self.verbosity(), "--action-script"] {
            argv.push(a.into());
        }
        argv.push(hook.into());
        if lazy {
            argv.push("--lazy-pages".into());
        }
        // Inherited fds reach CRIU at fixed numbers 5..=9, moved there between fork and exec
        // together with the setns into the host's network namespace (no nsenter, no shell).
        if inherit.len() > 5 {
            return Err(MigError::Transfer(format!(
                "{} fds to inherit, at most 5",
                inherit.len()
            )));
        }
        let mut fds = Vec::new();
        for (k, i) in inherit.iter().enumerate() {
            let n = 5 + k as RawFd;
            fds.push((i.fd.as_raw_fd(), n));
            argv.push("--inherit-fd".into());
            argv.push(format!("fd[{n}]:{}", i.key).into());
        }
        let mut c = Command::new(&argv[0]);
        c.args(&argv[1..]);
        child_setup(&mut c, host.netns.as_deref(), &fds)?;
        let err = fs::File::create(dir.join("restore.out")).map_err(io("create restore.out"))?;
        c.stdout(Stdio::null()).stderr(err);
        Step::spawn("criu restore", c)
    }

    /// Waits for the post-resume stamp, then finds the task's host pid.
    fn await_restored(mut step: Step, dir: &Path, deadline: Instant, limit: Duration) -> Result<Restored> {
        let stamp = dir.join("resumed");
        if let Err(e) = wait_file(&mut step, &stamp, deadline, limit) {
            let mut log = dir.join("restore.log");
            if !log.exists() {
                log = dir.join("restore.out");
            }
            return Err(match e {
                MigError::Criu { step, status, .. } => MigError::Criu {
                    step,
                    status,
                    tail: log_tail(&log),
                    log,
                },
                e => e,
            });
        }
        let ns: u64 = fs::read_to_string(&stamp)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        let resumed = UNIX_EPOCH + Duration::from_nanos(ns);
        // unshare -> criu (init of the new pid namespace) -> the restored task.
        loop {
            let pid = children(step.pid()).into_iter().flat_map(children).next();
            if let Some(pid) = pid {
                return Ok(Restored { step, pid, resumed });
            }
            if Instant::now() >= deadline || step.poll()?.is_some() {
                return Err(MigError::Transfer(
                    "restored task not found under its CRIU reaper".into(),
                ));
            }
            sleep(POLL);
        }
    }

    /// Restores the images in `dir` on `host`, in a fresh pid namespace.
    pub fn restore(&self, host: &Host, dir: &Path, limit: Duration) -> Result<Restored> {
        self.restore_with(host, dir, &[], limit)
    }

    /// [`Criu::restore`] with fds handed to the task in place of dumped ones (the target pvmd's
    /// new stdout/stderr pipes: output keeps flowing to the same place).
    pub fn restore_with(&self, host: &Host, dir: &Path, inherit: &[Inherit], limit: Duration) -> Result<Restored> {
        let deadline = Instant::now() + limit;
        let s = self.spawn_restore(host, dir, false, inherit)?;
        Criu::await_restored(s, dir, deadline, limit)
    }

    /// Moves task `pid` from `from` to `to`. `work` gets `src/` and `dst/` image dirs (on tmpfs
    /// ideally); they are removed after a success and kept for inspection after a failure.
    pub fn migrate(
        &self,
        pid: u32,
        from: &Host,
        to: &Host,
        work: &Path,
        mode: Mode,
        limit: Duration,
    ) -> Result<Migrated> {
        self.migrate_with(pid, from, to, work, mode, &[], limit)
    }

    /// [`Criu::migrate`] with fds handed to the restored task (see [`Criu::restore_with`]).
    #[allow(clippy::too_many_arguments)]
    pub fn migrate_with(
        &self,
        pid: u32,
        from: &Host,
        to: &Host,
        work: &Path,
        mode: Mode,
        inherit: &[Inherit],
        limit: Duration,
    ) -> Result<Migrated> {
        let (src, dst) = (work.join("src"), work.join("dst"));
        for d in [&src, &dst] {
            let _ = fs::remove_dir_all(d);
            fs::create_dir_all(d).map_err(io("create image dir"))?;
        }
        let res = match mode {
            Mode::StopAndCopy => self.stop_and_copy(pid, from, to, &src, &dst, inherit, limit),
            Mode::PostCopy => self
                .post_copy(pid, from, to, &src, &dst, inherit, limit)
                .map_err(|(_, e)| e),
            Mode::Auto if !self.caps.lazy_pages.ok() => {
                let why = format!("{:?}", self.caps.lazy_pages);
                self.stop_and_copy(pid, from, to, &src, &dst, inherit, limit)
                    .map(|mut m| {
                        m.fallback = Some(why);
                        m
                    })
            }
            Mode::Auto => match self.post_copy(pid, from, to, &src, &dst, inherit, limit) {
                Ok(m) => Ok(m),
                Err((true, e)) if signal(pid, 0) => {
                    for d in [&src, &dst] {
                        let _ = fs::remove_dir_all(d);
                        let _ = fs::create_dir_all(d);
                    }
                    self.stop_and_copy(pid, from, to, &src, &dst, inherit, limit)
                        .map(|mut m| {
                            m.fallback = Some(e.to_string());
                            m
                        })
                }
                Err((_, e)) => Err(e),
            },
        };
        if res.is_ok() && !self.keep_images {
            let _ = fs::remove_dir_all(&src);
            let _ = fs::remove_dir_all(&dst);
        }
        res
    }

    #[allow(clippy::too_many_arguments)]
    fn stop_and_copy(
        &self,
        pid: u32,
        from: &Host,
        to: &Host,
        src: &Path,
        dst: &Path,
        inherit: &[Inherit],
        limit: Duration,
    ) -> Result<Migrated> {
        let t0 = Instant::now();
        let t0s = SystemTime::now();
        let deadline = t0 + limit;
        self.dump(pid, from, src, false, limit)?;
        let dumped = t0.elapsed();
        let left = deadline.saturating_duration_since(Instant::now());
        let streamed = transfer::copy_dir(from, src, to, dst, left)?;
        let streamed_at = t0.elapsed();
        let s = self.spawn_restore(to, dst, false, inherit)?;
        let restored = Criu::await_restored(s, dst, deadline, limit)?;
        let freeze = restored.resumed.duration_since(t0s).unwrap_or_default();
        let phases = Phases {
            dumped,
            streamed: streamed_at,
            lazy_ready: streamed_at,
            resumed: freeze,
            criu_dump: log_stamp(&src.join("dump.log"), "Dumping finished"),
            criu_restore: log_stamp(&dst.join("restore.log"), "Restore finished successfully"),
        };
        Ok(Migrated {
            phases,
            mode: Mode::StopAndCopy,
            freeze,
            total: t0.elapsed().max(freeze),
            released: t0.elapsed().max(freeze),
            restored,
            streamed,
            fallback: None,
        })
    }

    /// Post-copy. The error's flag says whether the failure happened while the source dump was
    /// still being set up (the task then still runs on the source and stop-and-copy can follow).
    #[allow(clippy::too_many_arguments)]
    fn post_copy(
        &self,
        pid: u32,
        from: &Host,
        to: &Host,
        src: &Path,
        dst: &Path,
        inherit: &[Inherit],
        limit: Duration,
    ) -> std::result::Result<Migrated, (bool, MigError)> {
        let early = |e| (true, e);
        let late = |e| (false, e);
        let _pipes = PipeSize::raise(self.caps.needs_pipe_size_workaround);
        // A free port on the source address (released just before CRIU binds it).
        let port = transfer::listen(from)
            .and_then(|l| l.local_addr().map_err(io("listen")))
            .map_err(early)?
            .port();
        let port_s = port.to_string();
        let addr = from.addr.to_string();
        let t0 = Instant::now();
        let t0s = SystemTime::now();
        let deadline = t0 + limit;
        // 1. Dump the metadata; CRIU then keeps the task frozen and serves its pages.
        let mut status = StatusPipe::new().map_err(early)?;
        let (mut c, tpid, foreign) = self.dump_command(from, pid, Some(&status)).map_err(early)?;
        foreign.args(&mut c);
        c.args(["dump", "-t", &tpid.to_string(), "-D"])
            .arg(src)
            .args([
                "-o",
                "dump.log",
                self.verbosity(),
                "--status-fd",
                "3",
                "--lazy-pages",
                "--address",
                &addr,
                "--port",
                &port_s,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut dump = Step::spawn("criu dump --lazy-pages", c).map_err(early)?;
        if let Err(e) = status.wait(&mut dump, deadline, limit) {
            let log = src.join("dump.log");
            return Err(early(match e {
                MigError::Criu { step, status, .. } => MigError::Criu {
                    step,
                    status,
                    tail: log_tail(&log),
                    log,
                },
                e => e,
            }));
        }
        let dumped = t0.elapsed();
        // 2. Ship the metadata (a few hundred KB) to the target.
        let left = deadline.saturating_duration_since(Instant::now());
        let streamed = transfer::copy_dir(from, src, to, dst, left).map_err(late)?;
        let streamed_at = t0.elapsed();
        // 3. The target's lazy-pages daemon fetches pages from the source's page server.
        let mut lstatus = StatusPipe::new().map_err(late)?;
        let mut c = self.criu_with_status(to, &lstatus).map_err(late)?;
        c.args([
            "lazy-pages",
            "--page-server",
            "--address",
            &addr,
            "--port",
            &port_s,
            "-D",
        ])
        .arg(dst)
        // -v4: the log's per-line timestamps tell when the last page arrived (below).
        .args(["-o", "lazy-pages.log", "-v4", "--status-fd", "3"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let lazy_t0 = Instant::now();
        let mut lazy = Step::spawn("criu lazy-pages", c).map_err(late)?;
        lstatus
            .wait(&mut lazy, deadline, limit)
            .map_err(|e| late(with_log(e, &dst.join("lazy-pages.log"))))?;
        let lazy_ready = t0.elapsed();
        // 4. Restore with missing pages served by userfaultfd; the task runs from here on.
        let s = self.spawn_restore(to, dst, true, inherit).map_err(late)?;
        let restored = Criu::await_restored(s, dst, deadline, limit).map_err(late)?;
        let freeze = restored.resumed.duration_since(t0s).unwrap_or_default();
        // 5. Total: all pages are on the target when the lazy-pages daemon exits.
        let st = lazy.wait(deadline, limit).map_err(late)?;
        check("criu lazy-pages", st, &dst.join("lazy-pages.log")).map_err(late)?;
        let lazy_exit = t0.elapsed();
        let st = dump.wait(deadline, limit).map_err(late)?;
        check("criu dump --lazy-pages", st, &src.join("dump.log")).map_err(late)?;
        foreign.finish();
        let released = t0.elapsed();
        // CRIU's source page server corks its socket, so the final handshake after the last
        // page costs a few hundred ms of cork timeouts: the pages are all on the target well
        // before the daemons exit. Take the log's own timestamp of the last page.
        let total = fs::read_to_string(dst.join("lazy-pages.log"))
            .ok()
            .and_then(|l| last_page_stamp(&l))
            .map(|d| (lazy_t0 + d).saturating_duration_since(t0).max(freeze))
            .unwrap_or(lazy_exit);
        let phases = Phases {
            dumped,
            streamed: streamed_at,
            lazy_ready,
            resumed: freeze,
            criu_dump: log_stamp(&src.join("dump.log"), "Starting lazy pages server"),
            criu_restore: log_stamp(&dst.join("restore.log"), "Restore finished successfully"),
        };
        Ok(Migrated {
            phases,
            mode: Mode::PostCopy,
            restored,
            freeze,
            total,
            released,
            streamed,
            fallback: None,
        })
    }
}

/// The source half of a post-copy move run by two processes (two pvmds): the metadata is
/// dumped into the image dir (stream it to the target), and CRIU stays as the page server
/// of the frozen task until the target has fetched every page.
pub struct LazyDump {
    step: Step,
    foreign: Foreign,
    dir: PathBuf,
    _pipes: PipeSize,
}

impl std::fmt::Debug for LazyDump {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LazyDump({:?})", self.step)
    }
}

impl LazyDump {
    /// Waits for the page server to finish (every page fetched, the task killed by CRIU), at
    /// most `limit`. On an error CRIU resumes the task on the source when it still can.
    pub fn finish(self, limit: Duration) -> Result<()> {
        self.finish_unless(limit, &std::sync::atomic::AtomicBool::new(false))
    }

    /// [`LazyDump::finish`] that gives up as soon as `cancel` is set (the target failed and
    /// will never fetch the pages): CRIU is killed, which lets the task go on here.
    pub fn finish_unless(mut self, limit: Duration, cancel: &std::sync::atomic::AtomicBool) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = self.step.poll()? {
                check("criu dump --lazy-pages", st, &self.dir.join("dump.log"))?;
                self.foreign.finish();
                return Ok(());
            }
            if cancel.load(std::sync::atomic::Ordering::Relaxed) {
                self.step.kill();
                return Err(MigError::Transfer("post-copy cancelled: the target gave up".into()));
            }
            if Instant::now() >= deadline {
                self.step.kill();
                return Err(MigError::Transfer(format!("page server still running after {limit:?}")));
            }
            sleep(POLL);
        }
    }
}

/// The target's lazy-pages daemon of a post-copy restore: it fetches the pages the restored
/// task has not touched yet; the move is complete when it exits.
pub struct LazyPages {
    step: Step,
    dir: PathBuf,
    _pipes: PipeSize,
}

impl LazyPages {
    /// Waits until every page is on this host, at most `limit`.
    pub fn finish(mut self, limit: Duration) -> Result<()> {
        let st = self.step.wait(Instant::now() + limit, limit)?;
        check("criu lazy-pages", st, &self.dir.join("lazy-pages.log"))
    }

    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.step.poll(), Ok(None))
    }
}

impl Criu {
    /// Source side of a post-copy move between two processes: `criu dump --lazy-pages` of
    /// `pid` into `dir`, its page server on `host.addr:port`. Returns once the metadata is
    /// in `dir` (send it to the target, then [`LazyDump::finish`]). Fails early, the task
    /// still running here, when CRIU cannot set the dump up.
    pub fn dump_lazy(&self, pid: u32, host: &Host, dir: &Path, port: u16, limit: Duration) -> Result<LazyDump> {
        let _ = fs::remove_dir_all(dir);
        fs::create_dir_all(dir).map_err(io("create image dir"))?;
        let pipes = PipeSize::raise(self.caps.needs_pipe_size_workaround);
        let deadline = Instant::now() + limit;
        let mut status = StatusPipe::new()?;
        let (mut c, tpid, foreign) = self.dump_command(host, pid, Some(&status))?;
        foreign.args(&mut c);
        c.args(["dump", "-t", &tpid.to_string(), "-D"])
            .arg(dir)
            .args([
                "-o",
                "dump.log",
                self.verbosity(),
                "--status-fd",
                "3",
                "--lazy-pages",
                "--address",
                &host.addr.to_string(),
                "--port",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut step = Step::spawn("criu dump --lazy-pages", c)?;
        if let Err(e) = status.wait(&mut step, deadline, limit) {
            return Err(with_log(e, &dir.join("dump.log")));
        }
        Ok(LazyDump {
            step,
            foreign,
            dir: dir.to_path_buf(),
            _pipes: pipes,
        })
    }

    /// Target side of a post-copy move between two processes: starts the lazy-pages daemon
    /// fetching from the source's page server, then restores the metadata in `dir` in a fresh
    /// pid namespace with `inherit` fds. Returns when the task runs; pages keep arriving
    /// until [`LazyPages::finish`].
    pub fn restore_lazy_with(
        &self,
        host: &Host,
        dir: &Path,
        page_server: std::net::SocketAddrV4,
        inherit: &[Inherit],
        limit: Duration,
    ) -> Result<(Restored, LazyPages)> {
        let pipes = PipeSize::raise(self.caps.needs_pipe_size_workaround);
        let deadline = Instant::now() + limit;
        let mut lstatus = StatusPipe::new()?;
        let mut c = self.criu_with_status(host, &lstatus)?;
        c.args([
            "lazy-pages",
            "--page-server",
            "--address",
            &page_server.ip().to_string(),
            "--port",
            &page_server.port().to_string(),
            "-D",
        ])
        .arg(dir)
        .args(["-o", "lazy-pages.log", self.verbosity(), "--status-fd", "3"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let mut lazy = Step::spawn("criu lazy-pages", c)?;
        lstatus
            .wait(&mut lazy, deadline, limit)
            .map_err(|e| with_log(e, &dir.join("lazy-pages.log")))?;
        let s = self.spawn_restore(host, dir, true, inherit)?;
        let restored = Criu::await_restored(s, dir, deadline, limit)?;
        Ok((
            restored,
            LazyPages {
                step: lazy,
                dir: dir.to_path_buf(),
                _pipes: pipes,
            },
        ))
    }
}

/// A task in a pid namespace of its own (its host pid), dumped `--leave-stopped`.
struct Foreign(Option<u32>);

impl Foreign {
    fn args(&self, c: &mut Command) {
        if self.0.is_some() {
            c.arg("--leave-stopped");
        }
    }
    /// Kills the stopped task after a successful dump (its namespace goes with it).
    fn finish(&self) {
        if let Some(pid) = self.0 {
            signal(pid, libc::SIGKILL);
        }
    }
}

/// The pid of `pid` inside its own pid namespace, when that namespace is not ours.
fn inner_pid(pid: u32) -> Option<u32> {
    let ns = |p: &str| fs::read_link(format!("/proc/{p}/ns/pid")).ok();
    let theirs = ns(&pid.to_string())?;
    if Some(&theirs) == ns("self").as_ref() {
        return None;
    }
    let st = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    st.lines()
        .find_map(|l| l.strip_prefix("NSpid:"))?
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}

/// Time (since the lazy-pages daemon started) of its last "UFFD transferred pages" line.
fn last_page_stamp(log: &str) -> Option<Duration> {
    log.lines()
        .filter(|l| l.contains("UFFD transferred pages"))
        .filter_map(|l| l.strip_prefix('(')?.split(')').next()?.trim().parse::<f64>().ok())
        .fold(None, |m: Option<f64>, t| Some(m.map_or(t, |m| m.max(t))))
        .map(Duration::from_secs_f64)
}

fn with_log(e: MigError, log: &Path) -> MigError {
    match e {
        MigError::Criu { step, status, .. } => MigError::Criu {
            step,
            status,
            tail: log_tail(log),
            log: log.to_path_buf(),
        },
        e => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frozen_time_is_parsed_from_stats() {
        let s = "Displaying dump stats:\nFreezing time: 120 us\nFrozen time: 33517 us\nMemory dump time: 1 us\n";
        assert_eq!(frozen_from_stats(s), Some(Duration::from_micros(33517)));
        assert_eq!(frozen_from_stats("nothing"), None);
    }

    #[test]
    fn last_page_time_from_lazy_log() {
        let l = "(00.013744) uffd: x\n(00.050929) uffd: 1-12: UFFD transferred pages: (2061/2061)\n\
                 (00.040000) uffd: 2-12: UFFD transferred pages: (3/3)\n(00.512) page-xfer: Session over\n";
        assert_eq!(last_page_stamp(l), Some(Duration::from_secs_f64(0.050929)));
        assert_eq!(last_page_stamp("(00.1) nothing"), None);
    }
}
