//! Local security: a task of another unix user cannot enrol with our daemon, neither through
//! the socket as created nor through a socket someone made world-writable; the legacy daemon
//! side by side. The user is created for the test (unique name) and removed at the end.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use interop_tests::rawtask::*;
use interop_tests::*;
use pvm_proto::codes::Tm;
use pvm_proto::xdr::{XdrReader, XdrWriter};

/// A throwaway unix user, deleted on drop.
struct User {
    name: String,
    uid: u32,
    gid: u32,
}

impl User {
    fn new() -> User {
        let name = format!("pvmh{}", std::process::id());
        let _ = Command::new("userdel").arg(&name).output();
        let out = Command::new("useradd")
            .args(["-M", "-N", "-s", "/usr/sbin/nologin", &name])
            .output()
            .expect("useradd is needed (package passwd)");
        assert!(
            out.status.success(),
            "useradd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let id = |flag: &str| -> u32 {
            let o = Command::new("id").args([flag, &name]).output().unwrap();
            String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
        };
        let (uid, gid) = (id("-u"), id("-g"));
        User { name, uid, gid }
    }

    /// Runs `prog` as this user with PVMSOCK pointing at `sock`, PVM_TMP at `tmp`.
    fn run(&self, prog: &Path, sock: &str, tmp: &Path) -> (Option<i32>, String, String) {
        let mut c = Command::new("setpriv");
        c.arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.gid))
            .arg("--clear-groups")
            .arg(prog)
            .env("PVMSOCK", sock)
            .env("PVM_TMP", tmp)
            .env("PVM_ROOT", LEGACY_ROOT)
            .env_remove("PVMEPID")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        Proc {
            child: c.spawn().expect("setpriv (util-linux) is needed"),
            name: format!("{} as {}", prog.display(), self.name),
        }
        .wait(TIMEOUT)
    }
}

impl Drop for User {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.name).output();
    }
}

/// A world-writable directory with a copy of the `basic` program the other user can run.
fn user_dir(tag: &str) -> (TmpDir, PathBuf) {
    let d = TmpDir::new(tag);
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let prog = d.path().join("basic");
    std::fs::copy(c_program("basic"), &prog).unwrap();
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
    (d, prog)
}

fn healthy(d: &Pvmd, tmp: &TmpDir) -> bool {
    alive(d.proc.pid())
        && RawTask::connect(&d.sock)
            .ok()
            .and_then(|mut t| t.handshake(tmp.path(), 1318).ok().map(|_| t.served()))
            .unwrap_or(false)
}

#[test]
fn hard_other_user_cannot_enrol() {
    let user = User::new();
    let mut rows = Vec::new();
    for kind in [Kind::Ours, Kind::Legacy] {
        let tmp = TmpDir::new(&format!("hard-sec-{kind:?}"));
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let d = Pvmd::start(kind, &tmp, &[]);
        let (udir, prog) = user_dir(&format!("hard-sec-user-{kind:?}"));
        let mode = std::fs::metadata(&d.sock).unwrap().mode() & 0o777;
        // 1. The socket as the daemon made it.
        let (code, out, err) = user.run(&prog, &d.sock, udir.path());
        rows.push(format!(
            "| other user, socket {mode:o} | {kind:?} | basic exit {code:?}: {} |",
            first_line(&out, &err)
        ));
        assert_ne!(code, Some(0), "{kind:?}: another user's task enrolled:\n{out}{err}");
        assert!(healthy(&d, &tmp), "{kind:?}: daemon unhealthy after the refused user");
        // 2. The socket made world-writable (umask 0, shared PVM_TMP, a careless chmod).
        std::fs::set_permissions(&d.sock, std::fs::Permissions::from_mode(0o777)).unwrap();
        let (code, out, err) = user.run(&prog, &d.sock, udir.path());
        rows.push(format!(
            "| other user, socket 777 | {kind:?} | basic exit {code:?}: {} |",
            first_line(&out, &err)
        ));
        if kind == Kind::Ours {
            assert_ne!(
                code,
                Some(0),
                "another user's task enrolled through a 0777 socket:\n{out}{err}"
            );
            let log = tmp.log();
            assert!(
                log.contains("refused connection") && log.contains(&format!("uid {}", user.uid)),
                "no log line naming the refused user:\n{log}"
            );
        }
        assert!(healthy(&d, &tmp), "{kind:?}: daemon unhealthy after the 0777 attempt");
        drop(d);
    }
    for r in &rows {
        eprintln!("{r}");
    }
}

fn first_line(out: &str, err: &str) -> String {
    let o = out.lines().next().unwrap_or("");
    let e = err.lines().next().unwrap_or("");
    format!("{o} {e}").trim().to_string()
}

/// The d-auth file a connecting task must write is ours and 0600: a task of another user could
/// not prove itself even if it reached the socket.
#[test]
fn hard_dauth_file_is_private() {
    let tmp = TmpDir::new("hard-dauth");
    let d = Pvmd::start(Kind::Ours, &tmp, &[]);
    let mut t = RawTask::connect(&d.sock).unwrap();
    let tauth = tmp.path().join("ta-dauth");
    std::fs::write(&tauth, b"").unwrap();
    let mut w = XdrWriter::new();
    w.int(1318).string(&tauth.display().to_string());
    t.send(&request(Tm::Connect.code(), 0, &w.into_inner())).unwrap();
    let (_, _, body) = t.recv(Duration::from_secs(5)).expect("TM_CONNECT reply");
    let mut r = XdrReader::new(&body);
    r.int("v").unwrap();
    assert_eq!(r.int("ack").unwrap(), 1);
    let dauth = r.string("dauth").unwrap();
    let m = std::fs::symlink_metadata(&dauth).expect("d-auth file exists");
    assert!(m.file_type().is_file(), "d-auth is a regular file");
    assert_eq!(m.mode() & 0o777, 0o600, "d-auth mode");
    assert_eq!(m.uid(), unsafe_free_uid(), "d-auth owned by the daemon's user");
    // Address and log files too.
    for entry in std::fs::read_dir(tmp.path()).unwrap() {
        let e = entry.unwrap();
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with("pvmd.") || name.starts_with("pvml.") {
            let mode = e.metadata().unwrap().mode() & 0o777;
            assert_eq!(mode & 0o077, 0, "{name} is readable by others ({mode:o})");
        }
    }
    drop(t);
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !Path::new(&dauth).exists(),
        "d-auth file removed when the task went away"
    );
}

fn unsafe_free_uid() -> u32 {
    std::fs::metadata("/proc/self").unwrap().uid()
}

/// Names planted in PVM_TMP before the daemon starts: the log name as a symlink to a victim
/// file, the address-file name as a FIFO (which would block an open for reading). Our daemon
/// removes the planted names, creates its own files and starts; the victim is untouched.
#[test]
fn hard_planted_symlink_and_fifo_in_pvm_tmp() {
    for (kind, with_fifo) in [
        (Kind::Ours, true),
        (Kind::Ours, false),
        (Kind::Legacy, true),
        (Kind::Legacy, false),
    ] {
        let tmp = TmpDir::new(&format!("hard-plant-{kind:?}-{with_fifo}"));
        let uid = unsafe_free_uid();
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, b"precious\n").unwrap();
        std::os::unix::fs::symlink(&victim, tmp.path().join(format!("pvml.{uid}"))).unwrap();
        let fifo = tmp.path().join(format!("pvmd.{uid}"));
        if with_fifo {
            let st = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
            assert!(st.success());
        }
        let mut c = pvm_command(
            &match kind {
                Kind::Ours => our_pvmd(),
                Kind::Legacy => PathBuf::from(LEGACY_PVMD),
            },
            tmp.path(),
        );
        c.stderr(std::process::Stdio::null());
        let mut p = Proc {
            child: c.spawn().unwrap(),
            name: format!("{kind:?} pvmd"),
        };
        // Bounded: a daemon blocked on the FIFO prints nothing.
        let (tx, rx) = std::sync::mpsc::channel();
        let out = p.child.stdout.take().unwrap();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut l = String::new();
            let _ = std::io::BufReader::new(out).read_line(&mut l);
            let _ = tx.send(l);
        });
        let line = rx.recv_timeout(Duration::from_secs(5)).unwrap_or_default();
        let started = line.starts_with('/');
        let victim_now = std::fs::read_to_string(&victim).unwrap_or_default();
        eprintln!(
            "| planted pvml symlink (+ pvmd FIFO: {with_fifo}) | {kind:?} | started {started}; victim {} |",
            if victim_now == "precious\n" {
                "untouched".to_string()
            } else {
                format!("changed to {:?}", victim_now)
            }
        );
        if kind == Kind::Ours {
            assert!(
                started,
                "our daemon did not start with planted names; log:\n{}",
                tmp.log()
            );
            assert_eq!(victim_now, "precious\n", "the log symlink was followed");
            let m = std::fs::symlink_metadata(tmp.path().join(format!("pvml.{uid}"))).unwrap();
            assert!(m.file_type().is_file(), "log is a regular file now");
            assert!(healthy(
                &Pvmd {
                    proc: p,
                    sock: line.trim_end().to_string(),
                    kind
                },
                &tmp
            ));
        } else {
            drop(p);
        }
    }
}
