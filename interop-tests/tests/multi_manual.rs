//! Manual start (`so=ms`) with our pvmd as the master: the master asks for the slave command
//! line to be run by hand and reads the slave's reply line from its stdin (a pipe here, as a
//! script or a person at a terminal would give it). The test plays the person: it takes the
//! command from the master's log, runs it inside the other namespace, and types the slave's
//! `ddpro<…>` line back. Our slave and a legacy slave both join this way; a host nobody
//! answers for fails after the reply timeout, and a master without any input fails at once.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{ChildStdin, Stdio};
use std::time::{Duration, Instant};

use interop_tests::netns::Cluster;
use interop_tests::{our_pvmd, Proc, LEGACY_CONSOLE, LEGACY_PVMD, TIMEOUT};

fn require_legacy() {
    for p in [LEGACY_PVMD, LEGACY_CONSOLE] {
        assert!(
            std::path::Path::new(p).exists(),
            "{p} is missing: the multi-host tests need legacy PVM (Debian pvm)"
        );
    }
}

/// Our master in h1 with a hostfile of `lines` after its own; stdin piped (or /dev/null).
fn our_master(c: &Cluster, lines: &[String], stdin: bool, timeout_s: u64) -> (Proc, Option<ChildStdin>) {
    let hf = c.dir.path().join("hostfile");
    let mut text = format!("{}\n", c.host(1).ip);
    for l in lines {
        text.push_str(l);
        text.push('\n');
    }
    std::fs::write(&hf, text).unwrap();
    let mut cmd = c.command(1, &our_pvmd());
    cmd.arg(format!("-n{}", c.host(1).ip))
        .arg(&hf)
        .env("PVMD_MANUAL_TIMEOUT", timeout_s.to_string())
        .stderr(Stdio::null())
        .stdin(if stdin { Stdio::piped() } else { Stdio::null() });
    // No controlling terminal either, so that what the master may read is only what the test
    // gives it, whether or not the test itself runs at a terminal.
    use std::os::unix::process::CommandExt;
    // SAFETY: setsid() is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("start our pvmd");
    let input = child.stdin.take();
    let mut p = Proc {
        child,
        name: "our master".into(),
    };
    let line = p.read_line(TIMEOUT);
    assert!(line.starts_with('/'), "our master printed {line:?}\n{}", c.logs());
    (p, input)
}

/// The legacy console in host `k` fed `input`; its output once it quits.
fn console(c: &Cluster, k: usize, input: &str) -> String {
    let mut cmd = c.command(k, &PathBuf::from(LEGACY_CONSOLE));
    cmd.stdin(Stdio::piped());
    let mut child = cmd.spawn().expect("start console");
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let (_, out, _) = Proc {
        child,
        name: "console".into(),
    }
    .wait(Duration::from_secs(60));
    out
}

/// The slave command line the master logged for `host` (the n-th time it asked, from 1).
fn wait_for_prompt(c: &Cluster, host: &str, nth: usize) -> String {
    let pat = format!("addhosts() {host}: manual start (so=ms): waiting for the reply to <");
    let t = Instant::now();
    while t.elapsed() < TIMEOUT {
        let log = c.log(1);
        if let Some(l) = log.lines().filter(|l| l.contains(&pat)).nth(nth - 1) {
            let cmd = &l[l.find(&pat).unwrap() + pat.len()..];
            return cmd.trim_end_matches('>').to_string();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the master never asked for {host}\n{}", c.logs());
}

/// Runs `cmd` by hand in host `k` and returns the first line it printed.
fn run_by_hand(c: &Cluster, k: usize, cmd: &str) -> String {
    let mut sh = c.command(k, &PathBuf::from("/bin/sh"));
    sh.arg("-c").arg(cmd).stderr(Stdio::null());
    let mut child = sh.spawn().expect("run the slave command");
    let out = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line).unwrap();
    // The slave forks into the background; the foreground part ends.
    let _ = Proc {
        child,
        name: format!("slave command in h{k}"),
    }
    .wait(TIMEOUT);
    line.trim().to_string()
}

#[test]
fn multi_manual_start_of_our_and_legacy_slaves() {
    require_legacy();
    let c = Cluster::named("pf", "man", 4);
    let (h2, h3, h4) = (c.host(2).ip.clone(), c.host(3).ip.clone(), c.host(4).ip.clone());
    let (_m, input) = our_master(
        &c,
        &[
            format!("&{h2} so=ms dx={}", our_pvmd().display()),
            format!("&{h3} so=ms dx={LEGACY_PVMD}"),
            format!("&{h4} so=ms dx={}", our_pvmd().display()),
        ],
        true,
        6,
    );
    let mut input = input.unwrap();
    std::thread::scope(|s| {
        let add = s.spawn(|| console(&c, 1, &format!("add {h2} {h3}\n")));
        for (k, host) in [(2, &h2), (3, &h3)] {
            let cmd = wait_for_prompt(&c, host, 1);
            assert!(cmd.contains(" -S ") && cmd.contains(&format!("-n{host} ")), "{cmd}");
            let reply = run_by_hand(&c, k, &cmd);
            assert!(reply.starts_with("ddpro<"), "h{k} printed {reply:?}\n{}", c.logs());
            input.write_all(format!("{reply}\n").as_bytes()).unwrap();
            input.flush().unwrap();
        }
        let out = add.join().unwrap();
        assert!(
            out.contains("2 successful"),
            "add by manual start:\n{out}\n{}",
            c.logs()
        );
    });
    for k in [1, 2, 3] {
        let conf = console(&c, k, "conf\n");
        assert!(
            conf.contains("3 hosts") && conf.contains(&h2) && conf.contains(&h3),
            "conf on h{k}:\n{conf}\n{}",
            c.logs()
        );
    }
    // Nobody answers for h4: it fails after the reply timeout, the machine is untouched.
    let t = Instant::now();
    let out = console(&c, 1, &format!("add {h4}\n"));
    assert!(
        out.contains("0 successful"),
        "unanswered manual start:\n{out}\n{}",
        c.logs()
    );
    assert!(t.elapsed() >= Duration::from_secs(5), "gave up after {:?}", t.elapsed());
    assert!(
        c.log(1)
            .contains(&format!("manual start (so=ms) of {h4}: no reply within 6 s")),
        "{}",
        c.logs()
    );
    let conf = console(&c, 1, "conf\n");
    assert!(conf.contains("3 hosts") && !conf.contains(&h4), "{conf}");
    let _ = console(&c, 1, "halt\n");
}

#[test]
fn multi_manual_start_without_input_fails_at_once() {
    require_legacy();
    let c = Cluster::named("pf", "man0", 2);
    let h2 = c.host(2).ip.clone();
    let (_m, _) = our_master(&c, &[format!("&{h2} so=ms dx={}", our_pvmd().display())], false, 60);
    let t = Instant::now();
    let out = console(&c, 1, &format!("add {h2}\n"));
    assert!(out.contains("0 successful"), "{out}\n{}", c.logs());
    assert!(t.elapsed() < Duration::from_secs(30), "took {:?}", t.elapsed());
    assert!(c.log(1).contains("the master has no terminal or stdin"), "{}", c.logs());
    let _ = console(&c, 1, "halt\n");
}
