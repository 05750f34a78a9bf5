//! PvmTaskDebug from the legacy console (`spawn -? -> hello.pvm`): the daemon starts the
//! debugger named by PVM_DEBUGGER with the program's path and arguments, on our daemon as on
//! the legacy one.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use interop_tests::*;

fn run_console(kind: Kind) -> Vec<String> {
    let tmp = TmpDir::new(&format!("debugger-{kind:?}"));
    let home = tmp.path().join("home");
    let bin = home.join("pvm3/bin/LINUX64");
    std::fs::create_dir_all(&bin).unwrap();
    for p in ["hello.pvm", "hello_other"] {
        let src = Path::new("/usr/bin").join(p);
        assert!(src.exists(), "{} is missing (package pvm-examples)", src.display());
        std::os::unix::fs::symlink(&src, bin.join(p)).unwrap();
    }
    // A "debugger" that says how it was called and runs the program.
    let dbg = tmp.path().join("fake-debugger");
    std::fs::write(
        &dbg,
        "#!/bin/sh\necho \"debugger: $(basename \"$1\") argc $#\"\nexec \"$@\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dbg, std::fs::Permissions::from_mode(0o755)).unwrap();
    let daemon_bin = match kind {
        Kind::Ours => our_pvmd(),
        Kind::Legacy => PathBuf::from(LEGACY_PVMD),
    };
    let mut c = pvm_command(&daemon_bin, tmp.path());
    c.env("HOME", &home)
        .env("PVM_DEBUGGER", &dbg)
        .current_dir(&home)
        .stderr(Stdio::null());
    let mut daemon = Proc {
        child: c.spawn().expect("start pvmd"),
        name: format!("{kind:?} pvmd"),
    };
    assert!(daemon.read_line(TIMEOUT).starts_with('/'));

    let mut c = pvm_command(Path::new("/usr/bin/stdbuf"), tmp.path());
    c.args(["-o0", LEGACY_CONSOLE])
        .env("HOME", &home)
        .current_dir(&home)
        .stdin(Stdio::piped());
    let mut child = c.spawn().expect("start the legacy console");
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let seen = Arc::new(Mutex::new(Vec::<u8>::new()));
    let s2 = Arc::clone(&seen);
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            s2.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    stdin.write_all(b"spawn -? -> hello.pvm\n").unwrap();
    let t = Instant::now();
    loop {
        let text = String::from_utf8_lossy(&seen.lock().unwrap()).into_owned();
        if text.contains("[1] finished") {
            break;
        }
        assert!(
            t.elapsed() < TIMEOUT,
            "{kind:?}: job did not finish:\n{text}\nlog:\n{}",
            tmp.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    stdin.write_all(b"quit\n").unwrap();
    drop(stdin);
    Proc {
        child,
        name: "console".into(),
    }
    .wait(TIMEOUT);
    let text = String::from_utf8_lossy(&seen.lock().unwrap()).into_owned();
    let mut lines: Vec<String> = text
        .replace("pvm> ", "\n")
        .lines()
        .map(|l| l.trim_end().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    lines.sort();
    lines
}

#[test]
fn debug_spawn_runs_the_debugger_on_our_daemon() {
    let l = run_console(Kind::Ours);
    assert!(l.iter().any(|x| x == "[1:t40002] debugger: hello.pvm argc 1"), "{l:#?}");
    assert!(
        l.iter().any(|x| x.starts_with("[1:t40002] from t40003: hello, world")),
        "{l:#?}"
    );
}

#[test]
fn debug_spawn_differential() {
    assert_eq!(run_console(Kind::Ours), run_console(Kind::Legacy));
}
