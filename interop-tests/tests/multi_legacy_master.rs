//! A legacy master pvmd adds our pvmd as a slave on another host (namespace): spawn across,
//! messages both ways, console `conf` / `ps -a`, delete and halt.

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

/// Starts the legacy master in h1 with a hostfile naming the other hosts as `&` lines.
fn legacy_master(c: &Cluster, lines: &[String]) -> Proc {
    let hf = c.dir.path().join("hostfile");
    let mut text = format!("{} \n", c.host(1).ip);
    for l in lines {
        text.push_str(l);
        text.push('\n');
    }
    std::fs::write(&hf, text).unwrap();
    let mut cmd = c.command(1, &PathBuf::from(LEGACY_PVMD));
    cmd.arg(format!("-n{}", c.host(1).ip)).arg(&hf).stderr(Stdio::null());
    let mut p = Proc {
        child: cmd.spawn().expect("start legacy pvmd"),
        name: "legacy master".into(),
    };
    let line = p.read_line(TIMEOUT);
    assert!(line.starts_with('/'), "legacy master printed {line:?}");
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

/// Runs the legacy console in host `k` with `input`; returns its stdout.
pub fn console(c: &Cluster, k: usize, input: &str) -> String {
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

#[test]
fn multi_legacy_master_adds_our_slave() {
    require_legacy();
    let c = Cluster::new("lm", 2);
    let ours = our_pvmd();
    let h2 = c.host(2).ip.clone();
    let _m = legacy_master(&c, &[format!("&{h2} dx={}", ours.display())]);

    let out = console(&c, 1, &format!("add {h2}\nconf\n"));
    assert!(out.contains("1 successful"), "add failed:\n{out}\n{}", c.logs());
    // Our slave is in the legacy master's table, and it runs in h2.
    let conf = console(&c, 1, "conf\n");
    assert!(conf.contains(&h2) && conf.contains("2 hosts"), "{conf}\n{}", c.logs());
    assert!(!c.pids(2).is_empty(), "no slave process in h2\n{}", c.logs());

    // hello.pvm on the master spawns hello_other, which lands on host 2 (our daemon).
    let mut hello = c.command(1, &PathBuf::from("/usr/bin/hello.pvm"));
    let (code, out, err) = Proc {
        child: hello.spawn().unwrap(),
        name: "hello.pvm".into(),
    }
    .wait(TIMEOUT);
    assert_eq!(code, Some(0), "{out}\n{err}\n{}", c.logs());
    assert!(out.contains("from t80001: hello, world from"), "{out}\n{}", c.logs());

    eprintln!("hello:\n{out}");
    // ps -a on the master asks our daemon for its tasks (DM_TASK).
    let ps = console(&c, 1, "ps -a\n");
    eprintln!("conf:\n{conf}\nps:\n{ps}");
    assert!(ps.contains(&h2) || ps.contains("HOST"), "{ps}");

    // The cross-host probe: spawn on h2, messages both ways, multicast, mailbox on the
    // master, task list, pstat, exit notify, output to the master's log.
    let out = probe(&c, 1, &h2);
    assert_eq!(out, PROBE_EXPECTED, "{}", c.logs());
    assert!(
        c.wait_for(Duration::from_secs(5), || c
            .log(1)
            .contains("] child output line from t80")),
        "child output not in the master's log\n{}",
        c.logs()
    );

    // The same from a task on our slave towards the legacy master's host: our daemon spawns
    // there (DM_EXEC), forwards the mailbox to the master (DM_DB), asks for remote task lists,
    // pstat and exit notifies.
    let h1 = c.host(1).ip.clone();
    let out = probe(&c, 2, &h1);
    assert_eq!(out, PROBE_EXPECTED.replace("host 80000", "host 40000"), "{}", c.logs());

    // Large messages (15 datagrams each) both ways across the legacy/ours link.
    bulk(&c, 1, &h2);
    bulk(&c, 2, &h1);

    // `spawn ->` on the master's console: output records from the slave's daemon to the
    // console task on the master's host.
    let out = console_wait(&c, 1, &format!("spawn -1 -{h2} -> /bin/echo out-from-slave\n"), 2);
    assert!(
        out.contains("out-from-slave") && out.contains("EOF"),
        "console spawn ->:\n{out}\n{}",
        c.logs()
    );

    // Delete: our slave goes away.
    let out = console(&c, 1, &format!("delete {h2}\nconf\n"));
    assert!(out.contains("1 successful"), "delete: {out}\n{}", c.logs());
    assert!(
        c.wait_for(Duration::from_secs(10), || c.pids(2).is_empty()),
        "our slave did not exit after delete\n{}",
        c.logs()
    );
}

/// What `multi_probe` prints when every cross-host check passes.
pub const PROBE_EXPECTED: &str = "ok hosts 2\nok spawn host 80000\nok notify 0\nok echo 42\n\
ok mcast+mbox 5007\nok pstat 0\nok tasks listed 1\nok exit notify 1\nok pstat after exit -31\n";

/// Runs `multi_probe` in host `k` against `where_`; its stdout.
pub fn probe(c: &Cluster, k: usize, where_: &str) -> String {
    let prog = c_program("multi_probe");
    let mut cmd = c.command(k, &prog);
    cmd.arg(where_);
    let (code, out, err) = Proc {
        child: cmd.spawn().unwrap(),
        name: "multi_probe".into(),
    }
    .wait(TIMEOUT);
    assert_eq!(code, Some(0), "{out}\n{err}\n{}", c.logs());
    out
}

/// `halt` typed on a console attached to our slave: our daemon sends DM_HALT to the legacy
/// master, which stops the machine, our slave included (FIN|ACK from the master).
#[test]
fn multi_halt_from_our_slave_stops_the_legacy_machine() {
    require_legacy();
    let c = Cluster::new("lh", 2);
    let ours = our_pvmd();
    let h2 = c.host(2).ip.clone();
    let mut m = legacy_master(&c, &[format!("&{h2} dx={}", ours.display())]);
    let out = console(&c, 1, &format!("add {h2}\n"));
    assert!(out.contains("1 successful"), "add failed:\n{out}\n{}", c.logs());
    let conf = console(&c, 2, "conf\n");
    assert!(conf.contains("2 hosts"), "conf on our slave:\n{conf}\n{}", c.logs());
    let _ = console(&c, 2, "halt\n");
    assert!(
        c.wait_for(Duration::from_secs(10), || c.pids(1).is_empty() && c.pids(2).is_empty()),
        "machine still running after halt\n{}",
        c.logs()
    );
    let _ = m.child.wait();
}

/// 20 messages of 60000 bytes from a task in host `k` to a child on `where_`, checked.
pub fn bulk(c: &Cluster, k: usize, where_: &str) {
    let mut cmd = c.command(k, &c_program("multi_bulk"));
    cmd.args([where_, "20", "60000"]);
    let (code, out, err) = Proc {
        child: cmd.spawn().unwrap(),
        name: "multi_bulk".into(),
    }
    .wait(TIMEOUT);
    assert_eq!(code, Some(0), "{out}\n{err}\n{}", c.logs());
    assert!(
        out.starts_with("bulk 20 60000 ") && out.trim_end().ends_with(" ok"),
        "{out}\n{}",
        c.logs()
    );
}

/// A legacy master with our slave (h2) and then a legacy slave (h3): our slave learns h3 from a
/// DM_HTUPD that carries only the new host, and the two slaves talk directly.
#[test]
fn multi_legacy_master_our_slave_and_a_legacy_slave() {
    require_legacy();
    let c = Cluster::new("l3", 3);
    let (h1, h2, h3) = (c.host(1).ip.clone(), c.host(2).ip.clone(), c.host(3).ip.clone());
    let _m = legacy_master(
        &c,
        &[
            format!("&{h2} dx={}", our_pvmd().display()),
            format!("&{h3} dx={LEGACY_PVMD}"),
        ],
    );
    for h in [&h2, &h3] {
        let out = console(&c, 1, &format!("add {h}\n"));
        assert!(out.contains("1 successful"), "add {h}:\n{out}\n{}", c.logs());
    }
    let conf = console(&c, 2, "conf\n");
    assert!(
        conf.contains("3 hosts") && conf.contains(&h3),
        "conf on our slave:\n{conf}\n{}",
        c.logs()
    );
    let three = PROBE_EXPECTED.replace("hosts 2", "hosts 3");
    assert_eq!(
        probe(&c, 2, &h3),
        three.replace("host 80000", "host c0000"),
        "{}",
        c.logs()
    );
    assert_eq!(probe(&c, 3, &h2), three, "{}", c.logs());
    assert_eq!(
        probe(&c, 2, &h1),
        three.replace("host 80000", "host 40000"),
        "{}",
        c.logs()
    );
    bulk(&c, 2, &h3);
    bulk(&c, 3, &h2);

    // Deleting the legacy slave: the master's DM_HTDEL reaches our slave.
    let out = console(&c, 1, &format!("delete {h3}\n"));
    assert!(out.contains("1 successful"), "delete: {out}\n{}", c.logs());
    let two = || console(&c, 2, "conf\n").contains("2 hosts");
    assert!(
        c.wait_for(Duration::from_secs(10), two),
        "our slave kept h3\n{}",
        c.logs()
    );
}
