//! Our pvmd as the master: adds a legacy slave and one of ours (rsh stand-in into namespaces),
//! then cross-host spawn, messages, mailbox, output, delete and halt.

use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use interop_tests::netns::Cluster;
use interop_tests::{c_program, our_pvmd, Proc, LEGACY_CONSOLE, LEGACY_PVMD, TIMEOUT};

fn require_legacy() {
    for p in [LEGACY_PVMD, LEGACY_CONSOLE, "/usr/bin/hello.pvm"] {
        assert!(
            std::path::Path::new(p).exists(),
            "{p} is missing: the multi-host tests need legacy PVM (Debian pvm, pvm-examples)"
        );
    }
}

/// Our master in h1 with a hostfile made of `lines` after its own.
fn our_master(c: &Cluster, lines: &[String]) -> Proc {
    let hf = c.dir.path().join("hostfile");
    let mut text = format!("{}\n", c.host(1).ip);
    for l in lines {
        text.push_str(l);
        text.push('\n');
    }
    std::fs::write(&hf, text).unwrap();
    let mut cmd = c.command(1, &our_pvmd());
    cmd.arg(format!("-n{}", c.host(1).ip)).arg(&hf).stderr(Stdio::null());
    let mut p = Proc {
        child: cmd.spawn().expect("start our pvmd"),
        name: "our master".into(),
    };
    let line = p.read_line(TIMEOUT);
    assert!(line.starts_with('/'), "our master printed {line:?}\n{}", c.logs());
    p
}

/// Like [`console`], but keeps stdin open for `secs` so that asynchronous output arrives.
fn console_wait(c: &Cluster, k: usize, input: &str, secs: u64) -> String {
    let mut cmd = c.command(k, &PathBuf::from(LEGACY_CONSOLE));
    cmd.stdin(Stdio::piped());
    let mut child = cmd.spawn().expect("start console");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_secs(secs));
    drop(stdin);
    let (_, out, _) = Proc {
        child,
        name: "console".into(),
    }
    .wait(TIMEOUT);
    out
}

fn console(c: &Cluster, k: usize, input: &str) -> String {
    c.console(k, input)
}

const PROBE_EXPECTED: &str = "ok hosts 3\nok spawn host HOST\nok notify 0\nok echo 42\n\
ok mcast+mbox 5007\nok pstat 0\nok tasks listed 1\nok exit notify 1\nok pstat after exit -31\n";

fn probe(c: &Cluster, k: usize, where_: &str, host: &str) {
    let prog = c_program("multi_probe");
    let mut cmd = c.command(k, &prog);
    cmd.arg(where_);
    let (code, out, err) = Proc {
        child: cmd.spawn().unwrap(),
        name: format!("multi_probe in h{k} -> {where_}"),
    }
    .wait(TIMEOUT);
    assert_eq!(code, Some(0), "{out}\n{err}\n{}", c.logs());
    assert_eq!(
        out,
        PROBE_EXPECTED.replace("HOST", host),
        "h{k} -> {where_}\n{}",
        c.logs()
    );
}

#[test]
fn multi_our_master_adds_legacy_and_our_slaves() {
    require_legacy();
    let c = Cluster::new("om", 3);
    let (h1, h2, h3) = (c.host(1).ip.clone(), c.host(2).ip.clone(), c.host(3).ip.clone());
    let _m = our_master(
        &c,
        &[
            format!("&{h2} dx={LEGACY_PVMD}"),
            format!("&{h3} dx={}", our_pvmd().display()),
        ],
    );
    let out = console(&c, 1, &format!("add {h2}\n"));
    assert!(out.contains("1 successful"), "add legacy slave:\n{out}\n{}", c.logs());
    let out = console(&c, 1, &format!("add {h3}\n"));
    assert!(out.contains("1 successful"), "add our slave:\n{out}\n{}", c.logs());
    // Adding a member again is refused (PvmDupHost) without disturbing the machine.
    let out = console(&c, 1, &format!("add {h2}\n"));
    assert!(out.contains("0 successful") && out.contains("Duplicate host"), "{out}");
    for k in 1..=3 {
        let conf = console(&c, k, "conf\n");
        assert!(
            conf.contains("3 hosts") && conf.contains(&h2) && conf.contains(&h3),
            "conf on h{k}:\n{conf}\n{}",
            c.logs()
        );
    }

    // DM_XCAPS: our two daemons agreed on a sliding window; the legacy slave ACKed the probe
    // and dropped it, so its links stay at window 1.
    assert!(
        c.wait_for(Duration::from_secs(5), || c
            .log(1)
            .contains("dm_xcaps() host 3: window 88")
            && c.log(3).contains("dm_xcaps() host 1: window 88")),
        "no window negotiated between our daemons\n{}",
        c.logs()
    );
    assert!(!c.log(1).contains("dm_xcaps() host 2:"), "{}", c.logs());
    assert!(
        c.log(2).contains("bogus code"),
        "legacy slave did not see (and drop) DM_XCAPS\n{}",
        c.logs()
    );

    // hello.pvm on our master; its child lands on host 2 (the legacy slave).
    let (code, out, err) = Proc {
        child: c.command(1, &PathBuf::from("/usr/bin/hello.pvm")).spawn().unwrap(),
        name: "hello.pvm".into(),
    }
    .wait(TIMEOUT);
    assert_eq!(code, Some(0), "{out}\n{err}\n{}", c.logs());
    assert!(out.contains("hello, world from"), "{out}\n{}", c.logs());

    probe(&c, 1, &h2, "80000"); // our master -> legacy slave
    probe(&c, 1, &h3, "c0000"); // our master -> our slave
    probe(&c, 3, &h2, "80000"); // our slave -> legacy slave
    probe(&c, 2, &h3, "c0000"); // legacy slave -> our slave
    probe(&c, 2, &h1, "40000"); // legacy slave -> our master
    for (k, to) in [(1, &h2), (2, &h1), (3, &h2), (2, &h3)] {
        bulk(&c, k, to);
    }
    // Output of tasks without a collector ends up in the master's log.
    assert!(
        c.wait_for(Duration::from_secs(5), || c
            .log(1)
            .contains("] child output line from t80")
            && c.log(1).contains("] child output line from tc0")),
        "child output not in our master's log\n{}",
        c.logs()
    );

    // `spawn ->` on the master's console: output records from the slave's daemon to the
    // console task on the master's host.
    let out = console_wait(&c, 1, &format!("spawn -1 -{h3} -> /bin/echo out-from-slave\n"), 2);
    assert!(
        out.contains("out-from-slave") && out.contains("EOF"),
        "console spawn ->:\n{out}\n{}",
        c.logs()
    );

    let out = console(&c, 1, &format!("delete {h2}\n"));
    assert!(out.contains("1 successful"), "delete: {out}\n{}", c.logs());
    assert!(
        c.wait_for(Duration::from_secs(10), || c.pids(2).is_empty()),
        "legacy slave still running after delete\n{}",
        c.logs()
    );
    let conf = console(&c, 3, "conf\n");
    assert!(conf.contains("2 hosts") && !conf.contains(&h2), "{conf}\n{}", c.logs());

    let _ = console(&c, 1, "halt\n");
    assert!(
        c.wait_for(Duration::from_secs(10), || c.pids(1).is_empty() && c.pids(3).is_empty()),
        "machine still running after halt\n{}",
        c.logs()
    );
}

/// Hosts listed without `&` are started at boot; a slave that stops (SIGTERM: it sends FIN|ACK
/// to everyone) is deleted from every table (DM_HTDEL) and PvmHostDelete fires.
#[test]
fn multi_boot_hostfile_and_slave_exit() {
    require_legacy();
    let c = Cluster::new("ob", 3);
    let (h2, h3) = (c.host(2).ip.clone(), c.host(3).ip.clone());
    let _m = our_master(
        &c,
        &[
            format!("{h2} dx={}", our_pvmd().display()),
            format!("{h3} dx={LEGACY_PVMD}"),
        ],
    );
    let three = || console(&c, 1, "conf\n").contains("3 hosts");
    assert!(
        c.wait_for(Duration::from_secs(15), three),
        "boot add failed\n{}",
        c.logs()
    );
    assert!(console(&c, 2, "conf\n").contains("3 hosts"), "{}", c.logs());

    // Stop the legacy slave: it sends FIN|ACK to the master and to our slave.
    for pid in c.pids(3) {
        interop_tests::send_signal(pid, libc::SIGTERM);
    }
    let two = |k| console(&c, k, "conf\n").contains("2 hosts");
    assert!(
        c.wait_for(Duration::from_secs(10), || two(1)),
        "master kept h3\n{}",
        c.logs()
    );
    assert!(
        c.wait_for(Duration::from_secs(10), || two(2)),
        "our slave kept h3\n{}",
        c.logs()
    );
    // The machine still works without it.
    probe_n(&c, 2, &c.host(1).ip.clone(), "40000", 2);
}

fn probe_n(c: &Cluster, k: usize, where_: &str, host: &str, hosts: usize) {
    let prog = c_program("multi_probe");
    let mut cmd = c.command(k, &prog);
    cmd.arg(where_);
    let (code, out, err) = Proc {
        child: cmd.spawn().unwrap(),
        name: format!("multi_probe in h{k} -> {where_}"),
    }
    .wait(TIMEOUT);
    assert_eq!(code, Some(0), "{out}\n{err}\n{}", c.logs());
    let want = PROBE_EXPECTED
        .replace("HOST", host)
        .replace("hosts 3", &format!("hosts {hosts}"));
    assert_eq!(out, want, "h{k} -> {where_}\n{}", c.logs());
}

/// 20 messages of 60000 bytes from a task in host `k` to a child on `where_`, checked.
fn bulk(c: &Cluster, k: usize, where_: &str) {
    let mut cmd = c.command(k, &c_program("multi_bulk"));
    cmd.args([where_, "20", "60000"]);
    let (code, out, err) = Proc {
        child: cmd.spawn().unwrap(),
        name: format!("multi_bulk h{k} -> {where_}"),
    }
    .wait(TIMEOUT);
    assert_eq!(code, Some(0), "{out}\n{err}\n{}", c.logs());
    assert!(
        out.starts_with("bulk 20 60000 ") && out.trim_end().ends_with(" ok"),
        "{out}\n{}",
        c.logs()
    );
}

/// `add` and `delete` typed on a console attached to our slave: forwarded to our master as
/// DM_ADD / DM_DELHOST, answered with DM_ADDACK / DM_DELHOSTACK.
#[test]
fn multi_add_and_delete_from_our_slave() {
    require_legacy();
    let c = Cluster::new("oa", 3);
    let (h2, h3) = (c.host(2).ip.clone(), c.host(3).ip.clone());
    let _m = our_master(
        &c,
        &[
            format!("&{h2} dx={}", our_pvmd().display()),
            format!("&{h3} dx={LEGACY_PVMD}"),
        ],
    );
    let out = console(&c, 1, &format!("add {h2}\n"));
    assert!(out.contains("1 successful"), "add h2:\n{out}\n{}", c.logs());
    let out = console(&c, 2, &format!("add {h3}\n"));
    assert!(
        out.contains("1 successful"),
        "add h3 from our slave:\n{out}\n{}",
        c.logs()
    );
    assert!(console(&c, 1, "conf\n").contains("3 hosts"), "{}", c.logs());
    let out = console(&c, 2, &format!("delete {h3}\n"));
    assert!(
        out.contains("1 successful"),
        "delete h3 from our slave:\n{out}\n{}",
        c.logs()
    );
    assert!(
        c.wait_for(Duration::from_secs(10), || c.pids(3).is_empty()),
        "legacy slave still running\n{}",
        c.logs()
    );
    assert!(console(&c, 2, "conf\n").contains("2 hosts"), "{}", c.logs());
}
