//! The legacy console's `reset` on a mixed machine (three namespace hosts): every task on every
//! host but the console is killed, and the master's mailbox loses what those tasks owned,
//! persistent entries included (DM_RESET / DM_RESETACK between the master and the task's host),
//! as well as persistent entries whose owner had already gone. Once with our master and a
//! legacy and an our slave (the reset typed on the legacy slave's host, so it reaches our master
//! as DM_DB), once with a legacy master and two of our slaves.

use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use interop_tests::netns::Cluster;
use interop_tests::{c_program, our_pvmd, Proc, LEGACY_CONSOLE, LEGACY_PVMD, TIMEOUT};

fn require_legacy() {
    for p in [LEGACY_PVMD, LEGACY_CONSOLE] {
        assert!(
            std::path::Path::new(p).exists(),
            "{p} is missing: the multi-host tests need legacy PVM (Debian pvm)"
        );
    }
}

/// A master (`daemon`) in h1 with a hostfile of `lines` after its own.
fn master(c: &Cluster, daemon: &std::path::Path, lines: &[String]) -> Proc {
    let hf = c.dir.path().join("hostfile");
    let mut text = format!("{}\n", c.host(1).ip);
    for l in lines {
        text.push_str(l);
        text.push('\n');
    }
    std::fs::write(&hf, text).unwrap();
    let mut cmd = c.command(1, daemon);
    cmd.arg(format!("-n{}", c.host(1).ip)).arg(&hf).stderr(Stdio::null());
    let mut p = Proc {
        child: cmd.spawn().expect("start the master"),
        name: "master".into(),
    };
    let line = p.read_line(TIMEOUT);
    assert!(line.starts_with('/'), "the master printed {line:?}\n{}", c.logs());
    p
}

fn console(c: &Cluster, k: usize, input: &str) -> String {
    let mut cmd = c.command(k, &PathBuf::from(LEGACY_CONSOLE));
    cmd.stdin(Stdio::piped());
    let mut child = cmd.spawn().expect("start console");
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let (_, out, _) = Proc {
        child,
        name: "console".into(),
    }
    .wait(TIMEOUT);
    out
}

fn probe(c: &Cluster, k: usize, args: &[&str]) -> String {
    let mut cmd = c.command(k, &c_program("reset_probe"));
    cmd.args(args);
    let (code, out, err) = Proc {
        child: cmd.spawn().unwrap(),
        name: format!("reset_probe {args:?} in h{k}"),
    }
    .wait(TIMEOUT);
    assert_eq!(
        code,
        Some(0),
        "reset_probe {args:?} in h{k}: {out}\n{err}\n{}",
        c.logs()
    );
    out
}

/// `list` as (task count, sorted mailbox lines with the per-tid plain classes folded).
fn state(c: &Cluster, k: usize) -> (String, Vec<String>) {
    let out = probe(c, k, &["list"]);
    let mut lines = out.lines();
    let tasks = lines.next().unwrap_or_default().to_string();
    let mut mbox: Vec<String> = lines
        .map(|l| {
            if l.starts_with("mbox pf-plain-") {
                "mbox pf-plain-* 1".to_string()
            } else {
                l.to_string()
            }
        })
        .collect();
    mbox.sort();
    (tasks, mbox)
}

/// Puts the probes in place, resets from the console in host `console_host`, checks the result.
fn reset_and_check(c: &Cluster, console_host: usize) {
    let prog = c_program("reset_probe");
    c.install(&prog, "reset_probe");
    let hosts: Vec<String> = (1..=3).map(|k| c.host(k).ip.clone()).collect();
    // A task of h2 that leaves a persistent entry and exits before the reset.
    assert_eq!(probe(c, 2, &["gone"]), "left 0\n");
    let mut args = vec!["start"];
    args.extend(hosts.iter().map(String::as_str));
    assert_eq!(probe(c, 1, &args), "started 3\n", "{}", c.logs());
    let before = state(c, 3);
    assert_eq!(
        before,
        (
            "tasks 4".to_string(),
            vec![
                "mbox pf-left 1".to_string(),
                "mbox pf-pers 3".to_string(),
                "mbox pf-plain-* 1".to_string(),
                "mbox pf-plain-* 1".to_string(),
                "mbox pf-plain-* 1".to_string(),
            ]
        ),
        "{}",
        c.logs()
    );
    let out = console(c, console_host, "reset\nps -a\n");
    assert!(out.contains("reset"), "{out}");
    let mut last = before;
    let done = c.wait_for(Duration::from_secs(15), || {
        last = state(c, 1);
        last == ("tasks 1".to_string(), Vec::new())
    });
    assert!(
        done,
        "after reset on h{console_host}: {last:?}\nconsole:\n{out}\n{}",
        c.logs()
    );
    // Every host: no task but the probe itself.
    for k in [2, 3] {
        assert_eq!(state(c, k), ("tasks 1".to_string(), Vec::new()), "h{k}");
    }
}

#[test]
fn multi_reset_our_master_legacy_and_our_slave() {
    require_legacy();
    let c = Cluster::named("pf", "rst", 3);
    let (h2, h3) = (c.host(2).ip.clone(), c.host(3).ip.clone());
    let _m = master(
        &c,
        &our_pvmd(),
        &[
            format!("&{h2} dx={LEGACY_PVMD}"),
            format!("&{h3} dx={}", our_pvmd().display()),
        ],
    );
    let out = console(&c, 1, &format!("add {h2} {h3}\n"));
    assert!(out.contains("2 successful"), "{out}\n{}", c.logs());
    reset_and_check(&c, 2);
    let _ = console(&c, 1, "halt\n");
}

#[test]
fn multi_reset_legacy_master_our_slaves() {
    require_legacy();
    let c = Cluster::named("pf", "rsl", 3);
    let (h2, h3) = (c.host(2).ip.clone(), c.host(3).ip.clone());
    let ours = our_pvmd();
    let _m = master(
        &c,
        &PathBuf::from(LEGACY_PVMD),
        &[
            format!("&{h2} dx={}", ours.display()),
            format!("&{h3} dx={}", ours.display()),
        ],
    );
    let out = console(&c, 1, &format!("add {h2} {h3}\n"));
    assert!(out.contains("2 successful"), "{out}\n{}", c.logs());
    reset_and_check(&c, 1);
    let _ = console(&c, 1, "halt\n");
}
