//! A task that sends to another host faster than the link carries, and exits without
//! `pvm_exit`: its daemon stops reading it while too much waits for the slow link (backlog.rs),
//! so its last messages are still in its socket when its process exits. They are read and
//! delivered all the same (`Out::Drain`), in order, before the exit notice.

use std::process::Stdio;
use std::time::Duration;

use interop_tests::netns::Cluster;
use interop_tests::{c_program, our_pvmd, Proc, LEGACY_CONSOLE, TIMEOUT};

#[test]
fn a_paused_sender_that_exits_without_pvm_exit_loses_nothing() {
    assert!(
        std::path::Path::new(LEGACY_CONSOLE).exists(),
        "{LEGACY_CONSOLE} is missing: the multi-host tests need legacy PVM (Debian pvm)"
    );
    let c = Cluster::new("xd", 2);
    let (h1, h2) = (c.host(1).ip.clone(), c.host(2).ip.clone());
    let hf = c.dir.path().join("hostfile");
    std::fs::write(&hf, format!("{h1}\n{h2} dx={}\n", our_pvmd().display())).unwrap();
    let mut cmd = c.command(1, &our_pvmd());
    cmd.arg(format!("-n{h1}")).arg(&hf).stderr(Stdio::null());
    let mut m = Proc {
        child: cmd.spawn().expect("start our pvmd"),
        name: "our master".into(),
    };
    assert!(m.read_line(TIMEOUT).starts_with('/'), "{}", c.logs());
    assert!(
        c.wait_for(Duration::from_secs(15), || c.console_lists_hosts(1, 2)),
        "slave not added\n{}",
        c.logs()
    );
    // h1's link out carries 80 Mbit/s: 40 MB take about 4 s, and the sender writes far faster.
    let tc = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &c.host(1).ns,
            "tc",
            "qdisc",
            "add",
            "dev",
            "eth0",
            "root",
        ])
        .args(["tbf", "rate", "80mbit", "burst", "64kb", "latency", "500ms"])
        .status()
        .expect("run tc");
    assert!(tc.success(), "tc tbf on h1 failed");
    // The parent runs on h2; its child, the sender, on h1.
    let mut cmd = c.command(2, &c_program("exitsend"));
    cmd.args(["400", "100000", "-", h1.as_str()]);
    let (code, out, err) = Proc {
        child: cmd.spawn().unwrap(),
        name: "exitsend".into(),
    }
    .wait(Duration::from_secs(90));
    assert_eq!(code, Some(0), "{out}\n{err}\n{}", c.logs());
    assert!(
        out.starts_with("got 400 of 400, in order 1, exit notice"),
        "{out}\n{err}\n{}",
        c.logs()
    );
    // The sender was paused, so the case is the one meant.
    assert!(
        c.log(1).contains("waits for other hosts; not read until it is sent"),
        "the sender was never paused:\n{}",
        c.log(1)
    );
    eprintln!("{}", out.trim());
}
