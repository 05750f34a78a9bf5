//! The legacy `pvm` console driven by a script against our daemon and against the legacy one:
//! conf, ps -a, spawn -> hello.pvm, kill, mstat, pstat, setenv/export, mailbox put/names,
//! reset, halt. Transcripts are compared command by command.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use interop_tests::*;

/// What to wait for after a command before sending the next.
enum Until {
    /// The output has been quiet this long (and a prompt came back).
    Quiet(u64),
    /// This text appeared.
    Text(&'static str),
    /// The console exited.
    Exit,
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("hostname")
        .trim()
        .to_string()
}

/// Runs the script; returns one normalised chunk of output per command.
fn transcript(kind: Kind) -> Vec<String> {
    assert!(
        Path::new(LEGACY_CONSOLE).exists(),
        "{LEGACY_CONSOLE} is missing: install the Debian package pvm"
    );
    let tmp = TmpDir::new(&format!("console-script-{kind:?}"));
    let home = tmp.path().join("home");
    let bin = home.join("pvm3/bin/LINUX64");
    std::fs::create_dir_all(&bin).unwrap();
    for p in ["hello.pvm", "hello_other", "task0", "lmbi", "printenv"] {
        let src = Path::new("/usr/bin").join(p);
        assert!(
            src.exists(),
            "{} is missing (packages pvm-examples, coreutils)",
            src.display()
        );
        std::os::unix::fs::symlink(&src, bin.join(p)).unwrap();
    }
    let daemon_bin = match kind {
        Kind::Ours => our_pvmd(),
        Kind::Legacy => PathBuf::from(LEGACY_PVMD),
    };
    let mut c = pvm_command(&daemon_bin, tmp.path());
    c.env("HOME", &home).current_dir(&home).stderr(Stdio::null());
    let mut daemon = Proc {
        child: c.spawn().expect("start pvmd"),
        name: format!("{kind:?} pvmd"),
    };
    assert!(
        daemon.read_line(TIMEOUT).starts_with('/'),
        "{kind:?} pvmd did not start"
    );

    // Unbuffered through stdbuf: on a pipe the console's output would sit in its stdio buffer.
    let mut c = pvm_command(Path::new("/usr/bin/stdbuf"), tmp.path());
    c.args(["-o0", LEGACY_CONSOLE]);
    // Its own process group: the console's `reset` and the daemon's halt signal tasks, and a
    // stray group-wide signal must not reach the test runner.
    use std::os::unix::process::CommandExt;
    c.env("HOME", &home)
        .current_dir(&home)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = c.spawn().expect("start the legacy console");
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let seen = Arc::new(Mutex::new(Vec::<u8>::new()));
    let s2 = Arc::clone(&seen);
    let mut reader = Some(std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            s2.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    }));
    let text = |seen: &Arc<Mutex<Vec<u8>>>| String::from_utf8_lossy(&seen.lock().unwrap()).into_owned();
    let host = hostname();
    let mstat = format!("mstat {host}");
    let script: Vec<(&str, Until)> = vec![
        ("conf", Until::Quiet(300)),
        ("ps -a", Until::Quiet(300)),
        ("spawn -> hello.pvm", Until::Text("[1] finished")),
        ("spawn task0 svcC d", Until::Quiet(700)),
        ("ps -a", Until::Quiet(300)),
        ("pstat t40004", Until::Quiet(300)),
        (&mstat, Until::Quiet(300)),
        ("mstat nosuchhost", Until::Quiet(300)),
        ("names", Until::Quiet(300)),
        ("put box1 5 0", Until::Quiet(300)),
        ("names", Until::Quiet(300)),
        ("kill t40004", Until::Quiet(500)),
        ("ps -a", Until::Quiet(300)),
        ("pstat t40004", Until::Quiet(300)),
        ("setenv FOO=bar", Until::Quiet(300)),
        ("export FOO", Until::Quiet(300)),
        ("export", Until::Quiet(300)),
        ("spawn -> printenv FOO", Until::Text("[2] finished")),
        ("spawn task0 svcD d", Until::Quiet(700)),
        // Persistent entries whose owner has exited: reset removes them.
        ("spawn lmbi 2 p e", Until::Quiet(700)),
        ("names", Until::Quiet(300)),
        ("reset", Until::Quiet(1000)),
        ("names", Until::Quiet(300)),
        ("ps -a", Until::Quiet(300)),
        ("halt", Until::Exit),
    ];
    let commands: Vec<String> = script.iter().map(|(c, _)| c.to_string()).collect();
    let mut chunks = Vec::new();
    let mut start = text(&seen).len();
    for (cmd, until) in script {
        // One write per line: the legacy console runs what a read returns, newline or not, so
        // a line written in two pieces can run before its end is written (a `halt` then kills
        // the console and the newline finds no reader).
        if let Err(e) = stdin.write_all(format!("{cmd}\n").as_bytes()) {
            let status = child.try_wait();
            panic!(
                "{kind:?}: console gone before {cmd:?} ({e}; status {status:?}); transcript:\n{}\nlog:\n{}",
                text(&seen),
                tmp.log()
            );
        }
        let t = Instant::now();
        let mut last_len = text(&seen).len();
        let mut last_change = Instant::now();
        loop {
            let now = text(&seen);
            if now.len() != last_len {
                last_len = now.len();
                last_change = Instant::now();
            }
            let done = match until {
                Until::Quiet(ms) => {
                    last_change.elapsed() >= Duration::from_millis(ms) && now[start..].contains("pvm> ")
                }
                Until::Text(s) => now[start..].contains(s),
                Until::Exit => child.try_wait().unwrap().is_some(),
            };
            if done {
                break;
            }
            assert!(
                t.elapsed() < TIMEOUT,
                "{kind:?}: console command {cmd:?} did not complete; transcript:\n{now}\nlog:\n{}",
                tmp.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        if matches!(until, Until::Exit) {
            if let Some(r) = reader.take() {
                r.join().unwrap();
            }
        }
        let now = text(&seen);
        let mut lines: Vec<String> = now[start..]
            .replace("pvm> ", "\n")
            .lines()
            .map(|l| l.trim_end().to_string())
            .filter(|l| !l.is_empty())
            // The console echoes commands read from a pipe; whether the echo lands before or
            // after the previous command's quiet period is timing.
            .filter(|l| !commands.contains(l))
            .collect();
        // Task output and EOF lines of one job arrive in either order.
        lines.sort();
        chunks.push(format!("> {cmd}\n{}", lines.join("\n")));
        start = now.len();
    }
    let status = child.wait().unwrap();
    chunks.push(format!("console exit {:?}", status.code()));
    // The daemon halts too.
    let t = Instant::now();
    while daemon.child.try_wait().unwrap().is_none() {
        assert!(t.elapsed() < TIMEOUT, "{kind:?} daemon still running after halt");
        std::thread::sleep(Duration::from_millis(20));
    }
    chunks
}

#[test]
fn console_script_against_our_daemon() {
    let t = transcript(Kind::Ours);
    let all = t.join("\n");
    for want in [
        "1 host, 1 data format",
        "[1:t40002] i'm t40002",
        "6/c,f task0",
        "t   40004  run",
        "owner=0x40001/262145 flags=0x5",
        "PVM_EXPORT=FOO",
    ] {
        assert!(all.contains(want), "missing {want:?} in:\n{all}");
    }
}

#[test]
fn console_script_differential() {
    let ours = transcript(Kind::Ours);
    let legacy = transcript(Kind::Legacy);
    for (o, l) in ours.iter().zip(&legacy) {
        assert_eq!(o, l, "ours:\n{}\n\nlegacy:\n{}", ours.join("\n"), legacy.join("\n"));
    }
    assert_eq!(ours.len(), legacy.len());
}
