//! The libc calls that start and reap task processes (the `unsafe` of process start, kept apart
//! from `sys.rs` because it is one concern with its own invariants).
//!
//! Why not `std::process`/`tokio::process`: a spawn of 100 tasks is one TM_SPAWN the daemon
//! answers only after the last `launch`, so the cost of each start is on the requester's clock.
//! `posix_spawn(3)` (glibc: `clone(CLONE_VM|CLONE_VFORK)`) does not copy the page tables and
//! still reports a failed `execve` as its return value, so every task keeps its own error code.
//! `POSIX_SPAWN_SETSID` replaces the `/usr/bin/setsid` wrapper (a second `execve` per task) that
//! gave each task its own session for CRIU (docs/migration.md §1). A task is reaped through a
//! pidfd (`pidfd_open(2)`), so no SIGCHLD handler and no `waitpid(-1)` can take another child.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

/// A started task: its pid and the read ends of its stdout and stderr pipes.
#[derive(Debug)]
pub struct Spawned {
    pub pid: i32,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

fn cstring(s: &[u8]) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "nul byte in an argument"))
}

fn pipe_cloexec() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds: [RawFd; 2] = [-1, -1];
    // SAFETY: fds points to two writable c_ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The environment of a task: the daemon's own, with `extra` (`NAME=value`) set on top, in the
/// order first seen (as `Command::env` does).
fn environment(extra: &[(OsString, OsString)]) -> io::Result<Vec<CString>> {
    let mut vars: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    for (k, v) in extra {
        match vars.iter_mut().find(|(n, _)| n == k) {
            Some(slot) => slot.1 = v.clone(),
            None => vars.push((k.clone(), v.clone())),
        }
    }
    vars.iter()
        .map(|(k, v)| {
            let mut b = k.as_bytes().to_vec();
            b.push(b'=');
            b.extend_from_slice(v.as_bytes());
            cstring(&b)
        })
        .collect()
}

/// Owns a `posix_spawn_file_actions_t` and a `posix_spawnattr_t` so that both are destroyed on
/// every return path.
struct SpawnState {
    fa: libc::posix_spawn_file_actions_t,
    attr: libc::posix_spawnattr_t,
    fa_init: bool,
    attr_init: bool,
}

impl Drop for SpawnState {
    fn drop(&mut self) {
        // SAFETY: each was initialised exactly when its flag is set, and is destroyed once.
        unsafe {
            if self.fa_init {
                libc::posix_spawn_file_actions_destroy(&mut self.fa);
            }
            if self.attr_init {
                libc::posix_spawnattr_destroy(&mut self.attr);
            }
        }
    }
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(r))
    }
}

/// A task starts with SIGPIPE ignored, as every task of the legacy daemon does (its tasks
/// inherit the pvmd's SIG_IGN; measured: a task of /usr/bin/pvmd has it in SigIgn, whatever
/// its starter's disposition). It matters when the pvmd dies: a task's stdout and stderr are
/// pipes to it, and the library's "EOF on pvmd sock" line would kill the task with SIGPIPE
/// instead of letting its pvm_recv return PvmSysErr (interop test `shim_lost_pvmd`).
const TASK_SIGPIPE: libc::sighandler_t = libc::SIG_IGN;

/// Starts `path` (searched on the daemon's PATH when it has no `/`, as `execvp` would) with
/// `argv` (argv[0] included), the daemon's environment plus `env`, in directory `wd` if given,
/// stdin on /dev/null, stdout and stderr on fresh pipes, in a new session, SIGPIPE ignored (as
/// under the legacy daemon, see [`TASK_SIGPIPE`]) and no signal blocked. Returns once the child
/// has exec'ed (or failed to).
pub fn spawn(path: &str, argv: &[String], env: &[(OsString, OsString)], wd: Option<&OsStr>) -> io::Result<Spawned> {
    let c_path = cstring(path.as_bytes())?;
    let c_argv: Vec<CString> = argv.iter().map(|a| cstring(a.as_bytes())).collect::<io::Result<_>>()?;
    let c_env = environment(env)?;
    let c_wd = wd.map(|d| cstring(d.as_bytes())).transpose()?;
    let mut argv_p: Vec<*mut libc::c_char> = c_argv.iter().map(|a| a.as_ptr() as *mut libc::c_char).collect();
    argv_p.push(std::ptr::null_mut());
    let mut env_p: Vec<*mut libc::c_char> = c_env.iter().map(|a| a.as_ptr() as *mut libc::c_char).collect();
    env_p.push(std::ptr::null_mut());
    let devnull = c"/dev/null";

    let (out_r, out_w) = pipe_cloexec()?;
    let (err_r, err_w) = pipe_cloexec()?;
    use std::os::fd::AsRawFd;

    // SAFETY: zeroed values are only placeholders; *_init below initialises them before use.
    let mut st = SpawnState {
        fa: unsafe { std::mem::zeroed() },
        attr: unsafe { std::mem::zeroed() },
        fa_init: false,
        attr_init: false,
    };
    // SAFETY: every pointer passed below refers to a live local value (the CStrings, pointer
    // arrays and descriptors outlive the posix_spawn call); the descriptors are open.
    let pid = unsafe {
        check(libc::posix_spawn_file_actions_init(&mut st.fa))?;
        st.fa_init = true;
        check(libc::posix_spawnattr_init(&mut st.attr))?;
        st.attr_init = true;
        check(libc::posix_spawn_file_actions_addopen(
            &mut st.fa,
            0,
            devnull.as_ptr(),
            libc::O_RDONLY,
            0,
        ))?;
        // dup2 clears FD_CLOEXEC on the copy; the originals close at exec.
        check(libc::posix_spawn_file_actions_adddup2(&mut st.fa, out_w.as_raw_fd(), 1))?;
        check(libc::posix_spawn_file_actions_adddup2(&mut st.fa, err_w.as_raw_fd(), 2))?;
        if let Some(d) = &c_wd {
            check(libc::posix_spawn_file_actions_addchdir_np(&mut st.fa, d.as_ptr()))?;
        }
        // SIGPIPE: the daemon's own disposition (ignored by the Rust runtime) survives the
        // exec, as TASK_SIGPIPE wants; nothing is reset to its default.
        let mut def: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut def);
        check(libc::posix_spawnattr_setsigdefault(&mut st.attr, &def))?;
        let mut mask: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut mask);
        check(libc::posix_spawnattr_setsigmask(&mut st.attr, &mask))?;
        let flags = libc::POSIX_SPAWN_SETSID as libc::c_int
            | libc::POSIX_SPAWN_SETSIGDEF as libc::c_int
            | libc::POSIX_SPAWN_SETSIGMASK as libc::c_int;
        check(libc::posix_spawnattr_setflags(&mut st.attr, flags as libc::c_short))?;
        let mut pid: libc::pid_t = 0;
        let f = if path.contains('/') {
            libc::posix_spawn
        } else {
            libc::posix_spawnp
        };
        check(f(
            &mut pid,
            c_path.as_ptr(),
            &st.fa,
            &st.attr,
            argv_p.as_ptr(),
            env_p.as_ptr(),
        ))?;
        pid
    };
    drop((out_w, err_w));
    Ok(Spawned {
        pid,
        stdout: out_r,
        stderr: err_r,
    })
}

/// [`spawn`] the legacy way: `fork()` and go on, without waiting for the child's `execve`.
///
/// Measured under load (docs/bench-daemon.md), waiting for each task's exec (what
/// `posix_spawn` does) made a spawn of 100 tasks slower than the old `/usr/bin/setsid`
/// trampoline, whose exec is the only one waited for; not waiting at all is cheaper than both.
/// As with the legacy daemon (and the trampoline before), a program that then fails to exec
/// exits with status 127 and is reported as an exited task; what can be checked beforehand
/// is: the working directory must be a directory, and a bare program name is looked up on
/// the daemon's PATH here (the child may not allocate). The child runs only
/// async-signal-safe calls (setsid, dup2, chdir, sigaction, sigprocmask, execve, _exit), so
/// other threads of the daemon cannot leave it holding a lock.
pub fn spawn_forked(
    path: &str,
    argv: &[String],
    env: &[(OsString, OsString)],
    wd: Option<&OsStr>,
) -> io::Result<Spawned> {
    let program = if path.contains('/') {
        path.to_string()
    } else {
        std::env::var_os("PATH")
            .unwrap_or_default()
            .to_string_lossy()
            .split(':')
            .filter(|d| !d.is_empty())
            .map(|d| format!("{d}/{path}"))
            .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file()))
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{path} not on PATH")))?
    };
    if let Some(d) = wd {
        if !std::fs::metadata(d)?.is_dir() {
            return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
        }
    }
    let c_path = cstring(program.as_bytes())?;
    let c_argv: Vec<CString> = argv.iter().map(|a| cstring(a.as_bytes())).collect::<io::Result<_>>()?;
    let c_env = environment(env)?;
    let c_wd = wd.map(|d| cstring(d.as_bytes())).transpose()?;
    let mut argv_p: Vec<*const libc::c_char> = c_argv.iter().map(|a| a.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let mut env_p: Vec<*const libc::c_char> = c_env.iter().map(|a| a.as_ptr()).collect();
    env_p.push(std::ptr::null());
    let null = std::fs::File::open("/dev/null")?; // O_CLOEXEC, as std opens files
    let (out_r, out_w) = pipe_cloexec()?;
    let (err_r, err_w) = pipe_cloexec()?;
    use std::os::fd::AsRawFd;
    let (null_fd, out_fd, err_fd) = (null.as_raw_fd(), out_w.as_raw_fd(), err_w.as_raw_fd());
    let wd_p = c_wd.as_ref().map_or(std::ptr::null(), |d| d.as_ptr());
    // Where close_range is missing (kernels before 5.9) the child closes up to this limit.
    // SAFETY: sysconf only reads a limit.
    let limit_fds = match unsafe { libc::sysconf(libc::_SC_OPEN_MAX) } {
        n if n > 3 => n.min(65536) as libc::c_int,
        _ => 1024,
    };
    // Every signal stays blocked from just before the fork until the child has put the
    // daemon's handlers back to their defaults: a signal sent to a task that has not exec'ed
    // yet (pvm_kill right after pvm_spawn) would otherwise run the daemon's handler in the
    // child (tokio's SIGTERM handler, which does nothing there) and be lost, and the task then
    // ran on, where the legacy daemon's task died. Blocked, it waits and kills the child
    // before its exec.
    // SAFETY: sigfillset/pthread_sigmask on local sets; the old mask is restored below.
    let saved = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut saved: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut saved);
        saved
    };
    // SAFETY: everything the child touches was built before the fork and stays alive in the
    // parent's copy; the child calls only async-signal-safe functions and ends in execve or
    // _exit, never returning into Rust code.
    let pid = unsafe { libc::fork() };
    if pid != 0 {
        // SAFETY: restores this thread's mask saved above.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &saved, std::ptr::null_mut()) };
    }
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: see above; the child's own copies of the descriptors and strings.
        unsafe {
            libc::setsid();
            if libc::dup2(null_fd, 0) < 0 || libc::dup2(out_fd, 1) < 0 || libc::dup2(err_fd, 2) < 0 {
                libc::_exit(127);
            }
            if !wd_p.is_null() && libc::chdir(wd_p) != 0 {
                libc::_exit(127);
            }
            // Nothing else the daemon holds reaches the task (as the legacy daemon closes every
            // descriptor above 2 before its exec): a descriptor the pvmd inherited without
            // close-on-exec would otherwise stay open in every task, and CRIU refuses to dump
            // a task holding a file of another mount namespace.
            if libc::syscall(
                libc::SYS_close_range,
                3 as libc::c_uint,
                libc::c_uint::MAX,
                0 as libc::c_uint,
            ) != 0
            {
                for fd in 3..limit_fds {
                    libc::close(fd);
                }
            }
            default_caught_signals();
            libc::signal(libc::SIGPIPE, TASK_SIGPIPE);
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            libc::execve(c_path.as_ptr(), argv_p.as_ptr(), env_p.as_ptr());
            libc::_exit(127);
        }
    }
    drop((out_w, err_w, null));
    Ok(Spawned {
        pid,
        stdout: out_r,
        stderr: err_r,
    })
}

/// Puts every signal the process catches back to its default action (ignored ones stay
/// ignored, as exec would leave them). Async-signal-safe: sigaction only.
unsafe fn default_caught_signals() {
    for sig in 1..=64 {
        let mut cur: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(sig, std::ptr::null(), &mut cur) == 0
            && cur.sa_sigaction != libc::SIG_DFL
            && cur.sa_sigaction != libc::SIG_IGN
        {
            let mut dfl: libc::sigaction = std::mem::zeroed();
            dfl.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(sig, &dfl, std::ptr::null_mut());
        }
    }
}

/// A pidfd for `pid` (readable once it exits), or None where the kernel has no pidfd_open.
pub fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0 as libc::c_uint) };
    if fd < 0 {
        return None;
    }
    // SAFETY: the descriptor was just created and is owned by nobody else.
    Some(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Registers a pidfd with the runtime's reactor (readable = the process exited). Must be called
/// inside the runtime.
pub fn watch_fd(fd: OwnedFd) -> io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: the AsyncFd owns the OwnedFd, so the descriptor stays open and the same until the
    // AsyncFd is dropped.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
}

/// Reaps `pid` if it has exited; true once reaped (or if it is no child of ours any more).
pub fn try_reap(pid: i32) -> bool {
    let mut status: libc::c_int = 0;
    // SAFETY: waitpid on one specific pid, status points to a local c_int.
    let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    r != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn read_all(fd: OwnedFd) -> String {
        let mut s = String::new();
        std::fs::File::from(fd).read_to_string(&mut s).unwrap();
        s
    }

    fn wait(pid: i32) {
        for _ in 0..500 {
            if try_reap(pid) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("pid {pid} did not exit");
    }

    #[test]
    fn runs_with_env_wd_session_and_pipes() {
        let s = spawn(
            "/bin/sh",
            &[
                "/bin/sh".into(),
                "-c".into(),
                "echo $PVMX; pwd; echo err >&2; ps -o sid= -p $$; echo $$; grep SigIgn /proc/$$/status".into(),
            ],
            &[("PVMX".into(), "hello".into())],
            Some(OsStr::new("/tmp")),
        )
        .unwrap();
        let pid = s.pid;
        let out = read_all(s.stdout);
        let err = read_all(s.stderr);
        wait(pid);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "hello");
        assert_eq!(lines[1], "/tmp");
        assert_eq!(lines[2].trim(), lines[3].trim(), "session leader");
        assert_eq!(lines[3].trim(), pid.to_string());
        assert_eq!(err, "err\n");
        // The test harness ignores SIGPIPE like the daemon; the child keeps it ignored, as a
        // task of the legacy daemon has it (bit 13-1).
        let ign = u64::from_str_radix(lines[4].split_whitespace().nth(1).unwrap(), 16).unwrap();
        assert_ne!(ign & (1 << (libc::SIGPIPE - 1)), 0, "SIGPIPE not ignored: {ign:x}");
    }

    #[test]
    fn exec_failure_is_reported() {
        let e = spawn("/nonexistent/prog", &["x".into()], &[], None).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        let e = spawn("/bin/sh", &["sh".into()], &[], Some(OsStr::new("/nonexistent-dir"))).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        let e = spawn("/etc/passwd", &["x".into()], &[], None).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EACCES));
        assert!(spawn("/bin/sh", &["a\0b".into()], &[], None).is_err());
    }

    #[test]
    fn forked_runs_like_spawn_and_exec_failure_is_an_exit() {
        let s = spawn_forked(
            "sh",
            &[
                "sh".into(),
                "-c".into(),
                "echo $PVMX; pwd; echo $$; grep SigIgn /proc/$$/status; ps -o sid= -p $$".into(),
            ],
            &[("PVMX".into(), "hi".into())],
            Some(OsStr::new("/tmp")),
        )
        .unwrap();
        let pid = s.pid;
        let out = read_all(s.stdout);
        wait(pid);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(&lines[..3], &["hi", "/tmp", &pid.to_string()]);
        let ign = u64::from_str_radix(lines[3].split_whitespace().nth(1).unwrap(), 16).unwrap();
        assert_ne!(ign & (1 << (libc::SIGPIPE - 1)), 0, "SIGPIPE not ignored: {ign:x}");
        assert_eq!(lines[4].trim(), pid.to_string(), "session leader");
        // What can be checked before the fork is an error; a failed exec is an exit (127).
        assert!(spawn_forked("/bin/sh", &["sh".into()], &[], Some(OsStr::new("/nonexistent-dir"))).is_err());
        assert!(spawn_forked("no-such-program-anywhere", &["x".into()], &[], None).is_err());
        let s = spawn_forked("/etc/passwd", &["x".into()], &[], None).unwrap();
        let mut status = 0;
        for _ in 0..500 {
            // SAFETY: waitpid on our own child with a local status.
            if unsafe { libc::waitpid(s.pid, &mut status, libc::WNOHANG) } == s.pid {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 127,
            "{status:x}"
        );
    }

    extern "C" fn ignore_in_handler(_: libc::c_int) {}

    #[test]
    fn a_signal_sent_before_the_exec_is_not_lost_in_the_daemons_handler() {
        // The daemon catches SIGTERM; here a handler for SIGUSR2 stands in for it (no other
        // test of this binary uses SIGUSR2). Signalled at once after the fork, every child must
        // die of the signal, before or after its exec, never run on (`sleep 5`).
        // SAFETY: installs a handler that does nothing, for a signal only this test sends.
        unsafe { libc::signal(libc::SIGUSR2, ignore_in_handler as *const () as libc::sighandler_t) };
        for round in 0..40 {
            let s = spawn_forked("sleep", &["sleep".into(), "5".into()], &[], None).unwrap();
            // SAFETY: kill/waitpid on our own child with a local status.
            let status = unsafe {
                libc::kill(s.pid, libc::SIGUSR2);
                let mut status = 0;
                libc::waitpid(s.pid, &mut status, 0);
                status
            };
            assert!(
                libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGUSR2,
                "round {round}: the child did not die of the signal (status {status:x})"
            );
        }
    }

    #[test]
    fn forked_task_gets_no_descriptor_of_the_daemon() {
        // A descriptor without close-on-exec, as a pvmd may inherit from whoever started it.
        // SAFETY: plain open/close of a file; the descriptor is ours.
        let fd = unsafe {
            let f = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY);
            let high = libc::dup2(f, 200); // dup2: no close-on-exec on the copy
            libc::close(f);
            high
        };
        assert_eq!(fd, 200);
        let s = spawn_forked("sh", &["sh".into(), "-c".into(), "ls /proc/$$/fd".into()], &[], None).unwrap();
        let pid = s.pid;
        let out = read_all(s.stdout);
        wait(pid);
        // SAFETY: our own descriptor, closed once.
        unsafe { libc::close(fd) };
        let mut fds: Vec<i32> = out.split_whitespace().filter_map(|f| f.parse().ok()).collect();
        fds.sort();
        assert!(!fds.contains(&fd), "fd {fd} leaked to the task: {fds:?}");
        // 0-2, plus the one ls opens to read the directory.
        assert!(fds.iter().all(|&f| f <= 3), "{fds:?}");
    }

    #[test]
    fn pidfd_reap() {
        let s = spawn("/bin/true", &["true".into()], &[], None).unwrap();
        assert!(pidfd_open(s.pid).is_some());
        wait(s.pid);
    }
}
