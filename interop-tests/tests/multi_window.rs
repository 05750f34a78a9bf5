//! The DM_XCAPS sliding window between two of our daemons, measured: the same bulk transfer
//! (task on the master's host to a task on the slave's host, every message many datagrams) with
//! the negotiated window and with the negotiation switched off (window 1, the legacy protocol).

use std::process::Stdio;
use std::time::Duration;

use interop_tests::netns::Cluster;
use interop_tests::{c_program, our_pvmd, Proc, LEGACY_CONSOLE, TIMEOUT};

fn bulk(xcaps: bool) -> f64 {
    assert!(
        std::path::Path::new(LEGACY_CONSOLE).exists(),
        "{LEGACY_CONSOLE} is missing: the multi-host tests need legacy PVM (Debian pvm)"
    );
    let c = Cluster::new(if xcaps { "wx" } else { "w1" }, 2);
    let (h1, h2) = (c.host(1).ip.clone(), c.host(2).ip.clone());
    let hf = c.dir.path().join("hostfile");
    std::fs::write(&hf, format!("{h1}\n{h2} dx={}\n", our_pvmd().display())).unwrap();
    let mut cmd = c.command(1, &our_pvmd());
    cmd.arg(format!("-n{h1}")).arg(&hf).stderr(Stdio::null());
    if !xcaps {
        cmd.env("PVMD_NO_XCAPS", "1");
    }
    let mut m = Proc {
        child: cmd.spawn().expect("start our pvmd"),
        name: "our master".into(),
    };
    assert!(m.read_line(TIMEOUT).starts_with('/'), "{}", c.logs());
    let conf = || c.console_lists_hosts(1, 2);
    assert!(
        c.wait_for(Duration::from_secs(15), conf),
        "slave not added\n{}",
        c.logs()
    );
    if xcaps {
        assert!(
            c.wait_for(Duration::from_secs(5), || c.log(1).contains("window 88")),
            "{}",
            c.logs()
        );
    }
    let mut cmd = c.command(1, &c_program("multi_bulk"));
    cmd.args([h2.as_str(), "200", "60000"]);
    let (code, out, err) = Proc {
        child: cmd.spawn().unwrap(),
        name: "multi_bulk".into(),
    }
    .wait(Duration::from_secs(60));
    assert_eq!(code, Some(0), "{out}\n{err}\n{}", c.logs());
    let w: Vec<&str> = out.split_whitespace().collect();
    assert_eq!((w.first(), w.get(4)), (Some(&"bulk"), Some(&"ok")), "{out}");
    let secs: f64 = w[3].parse().unwrap();
    eprintln!(
        "window {}: 200 x 60000 bytes in {secs:.3} s",
        if xcaps { 32 } else { 1 }
    );
    secs
}

#[test]
fn multi_window_bulk_transfer_with_and_without_xcaps() {
    let with = bulk(true);
    let without = bulk(false);
    eprintln!("sliding window speed-up: {:.2}x", without / with);
    // Correctness is asserted inside; the timing is reported, and the window must not be slower
    // by more than noise.
    assert!(
        with <= without * 1.5 + 0.2,
        "window 88 {with} s vs window 1 {without} s"
    );
}
