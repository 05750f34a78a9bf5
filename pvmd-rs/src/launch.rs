//! Starting spawned tasks: the exec path, and the process launcher the shell gives the daemon.

use std::ffi::OsString;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pvm_proto::Tid;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::sync::mpsc::UnboundedSender;

use crate::daemon::Launcher;
use crate::spawn_sys;

/// The legacy default exec path.
pub const DEFAULT_EPATH: &str = "$HOME/pvm3/bin/$PVM_ARCH:$PVM_ROOT/bin/$PVM_ARCH";

/// Splits a `:`-separated path and substitutes `$VAR` and `${VAR}` (unset = empty).
pub fn expand_epath(spec: &str, getenv: impl Fn(&str) -> Option<String>) -> Vec<PathBuf> {
    spec.split(':')
        .filter(|p| !p.is_empty())
        .map(|p| PathBuf::from(substitute(p, &getenv)))
        .collect()
}

fn substitute(s: &str, getenv: &impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, tail) = if let Some(b) = after.strip_prefix('{') {
            match b.find('}') {
                Some(j) => (&b[..j], &b[j + 1..]),
                None => (b, ""),
            }
        } else {
            let j = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..j], &after[j..])
        };
        if name.is_empty() {
            out.push('$');
        } else {
            out.push_str(&getenv(name).unwrap_or_default());
        }
        rest = tail;
    }
    out.push_str(rest);
    out
}

fn is_executable_file(p: &Path) -> bool {
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// What a running task reports back to the main loop.
#[derive(Debug)]
pub enum TaskEvent {
    Output(Tid, Vec<u8>),
    /// The process exited and its output pipes are drained.
    Exited(Tid),
}

/// Starts tasks as children of the daemon with stdout and stderr on pipes.
pub struct ProcLauncher {
    epath: Vec<PathBuf>,
    events: UnboundedSender<TaskEvent>,
}

impl ProcLauncher {
    pub fn new(epath: Vec<PathBuf>, events: UnboundedSender<TaskEvent>) -> Self {
        ProcLauncher { epath, events }
    }
}

/// How long output is still read after the process exited (a grandchild may hold the pipe).
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(1);

async fn read_some<R: tokio::io::AsyncRead + Unpin>(r: &mut Option<R>, buf: &mut [u8]) -> usize {
    match r {
        Some(r) => r.read(buf).await.unwrap_or(0),
        None => std::future::pending().await,
    }
}

impl Launcher for ProcLauncher {
    fn find(&self, file: &str) -> Option<String> {
        if file.is_empty() {
            return None;
        }
        if file.contains('/') {
            return is_executable_file(Path::new(file)).then(|| file.to_string());
        }
        self.epath
            .iter()
            .map(|d| d.join(file))
            .find(|p| is_executable_file(p))
            .map(|p| p.to_string_lossy().into_owned())
    }

    fn set_epath(&mut self, epath: Vec<PathBuf>) {
        self.epath = epath;
    }

    fn launch(&mut self, tid: Tid, path: &str, argv: &[String], env: &[String]) -> io::Result<i32> {
        // The program is exec'ed directly (the daemon put the PVMEPID cookie into `env`), in a
        // session of its own so that CRIU can checkpoint it (docs/migration.md §1). See
        // spawn_sys::spawn_forked for why this is a plain fork and not tokio::process.
        let mut vars = Vec::with_capacity(env.len());
        let mut wd = None;
        for e in env {
            if let Some((k, v)) = e.split_once('=') {
                if k == "PVMSPAWNWD" {
                    wd = Some(OsString::from(v));
                }
                if !k.is_empty() {
                    vars.push((OsString::from(k), OsString::from(v)));
                }
            }
        }
        let child = spawn_sys::spawn_forked(path, argv, &vars, wd.as_deref())?;
        let pid = child.pid;
        tokio::spawn(watch(tid, child, self.events.clone()));
        Ok(pid)
    }
}

/// Resolves when `pid` has exited and is reaped: on its pidfd, or by polling where there is none.
async fn reaped(pid: i32) {
    if let Some(fd) = spawn_sys::pidfd_open(pid) {
        if let Ok(afd) = spawn_sys::watch_fd(fd) {
            while let Ok(mut g) = afd.readable().await {
                if spawn_sys::try_reap(pid) {
                    return;
                }
                g.clear_ready();
            }
        }
    }
    while !spawn_sys::try_reap(pid) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn receiver(fd: std::os::fd::OwnedFd) -> Option<pipe::Receiver> {
    pipe::Receiver::from_owned_fd(fd).ok()
}

/// Forwards a task's output and reports its exit once its pipes are drained.
async fn watch(tid: Tid, child: spawn_sys::Spawned, tx: UnboundedSender<TaskEvent>) {
    let pid = child.pid;
    let mut so = receiver(child.stdout);
    let mut se = receiver(child.stderr);
    let (mut b1, mut b2) = (vec![0u8; 4000], vec![0u8; 4000]);
    let mut exited = false;
    let drain = tokio::time::sleep(Duration::from_secs(u32::MAX as u64));
    tokio::pin!(drain);
    let exit = reaped(pid);
    tokio::pin!(exit);
    loop {
        if exited && so.is_none() && se.is_none() {
            break;
        }
        tokio::select! {
            n = read_some(&mut so, &mut b1) => {
                if n == 0 { so = None } else { let _ = tx.send(TaskEvent::Output(tid, b1[..n].to_vec())); }
            }
            n = read_some(&mut se, &mut b2) => {
                if n == 0 { se = None } else { let _ = tx.send(TaskEvent::Output(tid, b2[..n].to_vec())); }
            }
            _ = &mut exit, if !exited => {
                exited = true;
                drain.as_mut().reset(tokio::time::Instant::now() + DRAIN_AFTER_EXIT);
            }
            _ = &mut drain, if exited => break,
        }
    }
    let _ = tx.send(TaskEvent::Exited(tid));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epath_substitution() {
        let env = |k: &str| match k {
            "HOME" => Some("/home/u".to_string()),
            "PVM_ARCH" => Some("LINUX64".to_string()),
            "PVM_ROOT" => Some("/usr/lib/pvm3".to_string()),
            _ => None,
        };
        assert_eq!(
            expand_epath(DEFAULT_EPATH, env),
            vec![
                PathBuf::from("/home/u/pvm3/bin/LINUX64"),
                PathBuf::from("/usr/lib/pvm3/bin/LINUX64")
            ]
        );
        assert_eq!(
            expand_epath("${HOME}/x::/a$NOPE/b:$", env),
            vec![PathBuf::from("/home/u/x"), PathBuf::from("/a/b"), PathBuf::from("$")]
        );
    }

    #[test]
    fn find_on_path_and_literal() {
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let l = ProcLauncher::new(vec![PathBuf::from("/nonexistent"), PathBuf::from("/bin")], tx);
        assert_eq!(l.find("sh").as_deref(), Some("/bin/sh"));
        assert_eq!(l.find("/bin/sh").as_deref(), Some("/bin/sh"));
        assert_eq!(l.find("no-such-program-here"), None);
        assert_eq!(l.find("/etc/passwd"), None, "not executable");
        assert_eq!(l.find(""), None);
    }
}
