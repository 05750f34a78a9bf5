//! Measurement agents (policy `agents on`): pvm-sched starts `pvm-sched agent` on every host as
//! a PVM task (PvmTaskHost); each runs in its own host's namespace, reports under its own
//! host's name, and the scheduler uses those reports for that host (`pvm-sched hosts` marks
//! them). When the scheduler ends, the agents end.

mod sched_common;

use std::time::Duration;

use interop_tests::netns::Cluster;
use interop_tests::{stop_pid, Proc, TIMEOUT};
use sched_common::{our_machine, procs_named, sched_bin, Lines};

#[test]
fn every_host_gets_an_agent_that_reports_for_it() {
    let mut c = Cluster::named("sc", "agent", 3);
    let mut m = our_machine(&mut c, &[]);
    let policy = c.dir.path().join("policy");
    std::fs::write(&policy, "signals off\nagents on\ninterval_ms 200\nckpt_interval 0\n").unwrap();
    let mut s = c.command(1, &sched_bin());
    s.arg("--policy").arg(&policy);
    let mut sched = Proc {
        child: s.spawn().unwrap(),
        name: "pvm-sched".into(),
    };
    let sl = Lines::of(&mut sched);
    assert!(
        sl.wait("registered as resource manager", TIMEOUT).is_some(),
        "{}",
        sl.text()
    );
    let all = c.wait_for(Duration::from_secs(20), || {
        c.hosts.iter().all(|h| {
            sl.text()
                .lines()
                .any(|l| l.contains(&format!(" on {}: first report", h.ip)))
        })
    });
    assert!(all, "not every host reported\n{}\n{}", sl.text(), c.logs());
    // Each agent runs in its own host's namespace (h1 also runs the scheduler).
    for k in 1..=3 {
        let n = procs_named(&c, k, "pvm-sched").len();
        assert!(n >= if k == 1 { 2 } else { 1 }, "h{k}: {n} pvm-sched processes");
    }
    let mut cmd = c.command(1, &sched_bin());
    cmd.arg("hosts");
    let (code, out, err) = Proc {
        child: cmd.spawn().unwrap(),
        name: "pvm-sched hosts".into(),
    }
    .wait(TIMEOUT);
    assert_eq!(code, Some(0), "{out}\n{err}");
    eprintln!("{out}");
    for h in &c.hosts {
        assert!(
            out.lines().any(|l| l.starts_with(&h.ip) && l.contains("[agent t")),
            "{}: no agent report shown\n{out}",
            h.ip
        );
    }
    assert!(!sl.text().contains("ignored: not the agent"), "{}", sl.text());
    stop_pid(sched.child.id());
    let _ = sched.child.wait();
    let gone = c.wait_for(Duration::from_secs(15), || {
        (2..=3).all(|k| procs_named(&c, k, "pvm-sched").is_empty())
    });
    assert!(gone, "agents still running after the scheduler ended\n{}", c.logs());
    m.child.kill().ok();
    let _ = m.child.wait();
}
