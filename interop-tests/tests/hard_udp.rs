//! Hostile datagrams on the pvmd <-> pvmd port of a two-host machine (master h1, slave h2, same
//! daemon kind), sent from a third namespace (h3, not a member) and from the slave's own address
//! with another port, claiming to be the slave's pvmd: garbage, truncated, huge, a forged
//! DM_HALT, a FIN storm, out-of-window sequence numbers. Afterwards the machine must be intact:
//! both daemons alive, the slave still in the master's table, a task on the master sees two
//! hosts. Ours and the legacy daemon side by side. The datagrams come from `c/udpprobe.c`.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use interop_tests::netns::Cluster;
use interop_tests::*;

fn udp_port(log: &str) -> u16 {
    // "... NAME (IP:PORT) LINUX64 3.4.6" in both daemons' logs.
    let l = log
        .lines()
        .find(|l| l.contains(") LINUX64"))
        .unwrap_or_else(|| panic!("no address line in log:\n{log}"));
    let inner = l.rsplit_once('(').unwrap().1.split_once(')').unwrap().0;
    inner.rsplit_once(':').unwrap().1.parse().unwrap()
}

fn nhosts(c: &Cluster) -> String {
    let (code, out, err) = Proc {
        child: c.command(1, &c_program("basic")).spawn().unwrap(),
        name: "basic in h1".into(),
    }
    .wait(TIMEOUT);
    assert_eq!(code, Some(0), "basic failed in h1:\n{out}{err}\n{}", c.logs());
    out.lines().find(|l| l.starts_with("config")).unwrap_or("").to_string()
}

fn run_kind(kind: Kind) {
    let c = Cluster::new(&format!("hudp{}", kind == Kind::Ours), 3);
    let bin = match kind {
        Kind::Ours => our_pvmd(),
        Kind::Legacy => PathBuf::from(LEGACY_PVMD),
    };
    let hf = c.dir.path().join("hostfile");
    std::fs::write(
        &hf,
        format!("{}\n{} dx={}\n", c.host(1).ip, c.host(2).ip, bin.display()),
    )
    .unwrap();
    let mut cmd = c.command(1, &bin);
    cmd.arg(format!("-n{}", c.host(1).ip)).arg(&hf).stderr(Stdio::null());
    let mut master = Proc {
        child: cmd.spawn().unwrap(),
        name: format!("{kind:?} master"),
    };
    let line = master.read_line(TIMEOUT);
    assert!(line.starts_with('/'), "{kind:?} master printed {line:?}\n{}", c.logs());
    assert!(
        c.wait_for(Duration::from_secs(20), || nhosts(&c).contains("nhost 2")),
        "{kind:?}: slave never joined\n{}",
        c.logs()
    );
    let mport = udp_port(&c.log(1));
    let sport = udp_port(&c.log(2));
    let n = 50;
    // From a stranger (h3) and from the slave's address with another port, claiming to be the
    // slave's pvmd (t80080000) talking to the master (t80040000), and the master to the slave.
    let sends = [
        (3, c.host(1).ip.clone(), mport, "80080000", "80040000"),
        (2, c.host(1).ip.clone(), mport, "80080000", "80040000"),
        (3, c.host(2).ip.clone(), sport, "80040000", "80080000"),
        (1, c.host(2).ip.clone(), sport, "80040000", "80080000"),
    ];
    let mut total = 0;
    for (from, ip, port, src, dst) in &sends {
        let mut p = c.command(*from, &c_program("udpprobe"));
        p.args([ip.as_str(), &port.to_string(), src, dst, &n.to_string()]);
        let (code, out, err) = Proc {
            child: p.spawn().unwrap(),
            name: "udp probe".into(),
        }
        .wait(TIMEOUT);
        assert_eq!(code, Some(0), "probe failed: {err}");
        total += out.trim().parse::<usize>().unwrap();
    }
    std::thread::sleep(Duration::from_millis(500));
    let hosts = nhosts(&c);
    let mlog = c.log(1);
    let dropped_lines = mlog.lines().filter(|l| l.contains("netinput()")).count();
    eprintln!(
        "| non-member/spoofed datagrams ({total}, 4 sources) | {kind:?} | after: {hosts}; {} master log lines about them |",
        dropped_lines
    );
    assert!(
        hosts.contains("nhost 2"),
        "{kind:?}: the machine lost a host: {hosts}\n{}",
        c.logs()
    );
    assert!(
        !mlog.contains("halting"),
        "{kind:?}: a forged DM_HALT or FIN|ACK was obeyed\n{mlog}"
    );
    if kind == Kind::Ours {
        assert!(
            mlog.contains("netinput() dropped from"),
            "no log line naming the senders\n{mlog}"
        );
        assert!(dropped_lines < 100, "drop log not rate-limited: {dropped_lines} lines");
    }
    drop(master);
}

#[test]
fn hard_hostile_datagrams_ours() {
    run_kind(Kind::Ours);
}

#[test]
fn hard_hostile_datagrams_legacy() {
    run_kind(Kind::Legacy);
}
