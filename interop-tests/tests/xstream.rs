//! The stream transport between two pvmd-rs daemons (DM_XCAPS version 3, DM_XSTREAM;
//! docs/extensions.md): two of our daemons carry messages on a TCP stream, intact and in order
//! both ways, including while they switch over; a stream dropped in the middle falls back to
//! datagrams without loss or duplicates; a pvmd-rs + legacy pair stays on datagrams; a member
//! killed with -9 while its stream is up is still deleted within 10 s, also when it goes
//! silent (its FIN and RST lost); a connection to the stream port that does not say a valid
//! hello is refused with a log line.

use std::io::Read;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use interop_tests::netns::Cluster;
use interop_tests::{c_program, our_pvmd, send_signal, Proc, LEGACY_CONSOLE, LEGACY_PVMD, TIMEOUT};

fn require_legacy() {
    for p in [LEGACY_PVMD, LEGACY_CONSOLE] {
        assert!(
            std::path::Path::new(p).exists(),
            "{p} is missing: the multi-host tests need legacy PVM (Debian pvm)"
        );
    }
}

/// Our master on h1 with h2 (daemon `slave`) in its boot hostfile; waits until both are up.
fn machine(c: &Cluster, slave: &str, env: &[(&str, &str)]) -> Proc {
    require_legacy();
    let (h1, h2) = (c.host(1).ip.clone(), c.host(2).ip.clone());
    let hf = c.dir.path().join("hostfile");
    std::fs::write(&hf, format!("{h1}\n{h2} dx={slave}\n")).unwrap();
    let mut cmd = c.command(1, &our_pvmd());
    cmd.arg(format!("-n{h1}")).arg(&hf).stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
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
    m
}

/// Runs `xseq h2 N` on h1: every message checked on both sides; returns the seconds taken.
fn xseq(c: &Cluster, n: usize) -> f64 {
    let mut cmd = c.command(1, &c_program("xseq"));
    cmd.args([c.host(2).ip.as_str(), &n.to_string()]);
    let (code, out, err) = Proc {
        child: cmd.spawn().unwrap(),
        name: "xseq".into(),
    }
    .wait(Duration::from_secs(90));
    assert_eq!(code, Some(0), "{out}\n{err}\n{}", c.logs());
    let w: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(
        (w.first(), w.get(2)),
        (Some(&"xseq"), Some(&"ok")),
        "{out}\n{}",
        c.logs()
    );
    w[4].parse().unwrap()
}

#[test]
fn xstream_two_of_ours_use_the_stream_and_keep_order() {
    let c = Cluster::named("hstr", "up", 2);
    // The master connects its stream 1 s after the exchange of DM_XCAPS (test hook), so the
    // transfer below (800 messages each way: 2.5-4 s here) starts on datagrams and switches
    // over in the middle. (200 messages ended before the switch in a fast run.)
    let _m = machine(
        &c,
        &our_pvmd().display().to_string(),
        &[("PVMD_XSTREAM_DELAY_MS", "1000")],
    );
    assert!(
        !c.log(1).contains("stream up"),
        "too late to see a switch\n{}",
        c.logs()
    );
    let secs = xseq(&c, 800);
    let switched = c.wait_for(Duration::from_secs(10), || {
        c.log(1).contains("on the stream from now") && c.log(2).contains("on the stream from now")
    });
    let logs = c.logs();
    for l in logs.lines().filter(|l| l.contains("xstream") || l.starts_with("----")) {
        eprintln!("{l}");
    }
    assert!(switched, "no switch to the stream within 10 s\n{logs}");
    assert!(c.log(1).contains("xstream host 2: stream up"), "{logs}");
    assert!(c.log(2).contains("xstream host 1: stream accepted"), "{logs}");
    for k in [1, 2] {
        assert!(
            c.log(k).contains("on the stream from now"),
            "h{k} never switched\n{logs}"
        );
    }
    assert!(!logs.contains("falling back"), "{logs}");
    eprintln!("800 messages each way, switching to the stream on the way, in {secs:.3} s");
}

#[test]
fn xstream_dropped_stream_falls_back_without_loss() {
    let c = Cluster::named("hstr", "drop", 2);
    // Each daemon gives its stream up after taking 700 frames (the legacy library cuts
    // messages into 4 KB fragments: that is inside the first 3 MB message).
    let _m = machine(
        &c,
        &our_pvmd().display().to_string(),
        &[("PVMD_XSTREAM_DROP_AFTER", "700")],
    );
    xseq(&c, 60);
    let logs = c.logs();
    for l in logs.lines().filter(|l| l.contains("xstream") || l.starts_with("----")) {
        eprintln!("{l}");
    }
    assert!(logs.contains("test hook drops the stream"), "{logs}");
    assert!(c.log(1).contains("xstream host 2: back on datagrams"), "{logs}");
    assert!(c.log(2).contains("xstream host 1: back on datagrams"), "{logs}");
    // And the link keeps working on datagrams.
    xseq(&c, 30);
}

/// Runs `xseq h2 120` on h1 and aborts the stream's socket in h1 (`ss -K`: the kernel resets
/// it) while messages are in flight: every message must still arrive checked, and both sides
/// must say they went back on datagrams.
fn kill_stream_mid_transfer(c: &Cluster) {
    let mut cmd = c.command(1, &c_program("xseq"));
    cmd.args([c.host(2).ip.as_str(), "120"]);
    let run = Proc {
        child: cmd.spawn().unwrap(),
        name: "xseq".into(),
    };
    std::thread::sleep(Duration::from_millis(400));
    let mut ss = c.command(1, &PathBuf::from("/usr/bin/ss"));
    ss.args(["-K", "dst", c.host(2).ip.as_str()]);
    let (code, out, err) = Proc {
        child: ss.spawn().expect("run ss (iproute2)"),
        name: "ss -K".into(),
    }
    .wait(Duration::from_secs(10));
    assert_eq!(code, Some(0), "ss -K: {out} {err}");
    let (code, out, err) = run.wait(Duration::from_secs(90));
    assert_eq!(code, Some(0), "{out}\n{err}\n{}", c.logs());
    assert!(out.contains(" ok "), "{out}\n{}", c.logs());
    assert!(c.log(1).contains("xstream host 2: back on datagrams"), "{}", c.logs());
    assert!(c.log(2).contains("xstream host 1: back on datagrams"), "{}", c.logs());
}

#[test]
fn xstream_killed_from_outside_with_ss_falls_back_without_loss() {
    let c = Cluster::named("hstr", "ssk", 2);
    let _m = machine(&c, &our_pvmd().display().to_string(), &[]);
    assert!(
        c.wait_for(Duration::from_secs(5), || c.log(1).contains("stream up")),
        "{}",
        c.logs()
    );
    kill_stream_mid_transfer(&c);
    for l in c.logs().lines().filter(|l| l.contains("xstream")) {
        eprintln!("{l}");
    }
}

/// After a fallback the pair tries a new stream (1 s later, doubling, bounded) and switches
/// over by the same rule as the first time: the messages before, during and after keep
/// arriving intact and in order (xseq checks every one).
#[test]
fn xstream_comes_back_after_a_fallback() {
    let c = Cluster::named("hstr", "back", 2);
    let _m = machine(&c, &our_pvmd().display().to_string(), &[]);
    let count = |k: usize, s: &str| c.log(k).matches(s).count();
    assert!(
        c.wait_for(Duration::from_secs(5), || count(1, "stream up") == 1),
        "{}",
        c.logs()
    );
    kill_stream_mid_transfer(&c);
    assert!(
        c.log(1).contains("xstream host 2: new stream in 1000 ms"),
        "{}",
        c.logs()
    );
    // Messages keep flowing while the new stream is tried and switched to (1 s after the
    // fallback): xseq checks each one, each way.
    let during = xseq(&c, 400);
    // The stream comes back, and both sides switch to it again.
    assert!(
        c.wait_for(Duration::from_secs(15), || count(1, "stream up") >= 2
            && count(2, "stream accepted") >= 2),
        "no new stream after the fallback\n{}",
        c.logs()
    );
    xseq(&c, 60);
    for k in [1, 2] {
        assert!(
            count(k, "on the stream from now") >= 2,
            "h{k} never switched to the new stream\n{}",
            c.logs()
        );
    }
    // One fallback only: the new stream carried the last run to the end.
    for k in [1, 2] {
        assert_eq!(count(k, "back on datagrams"), 1, "{}", c.logs());
    }
    for l in c.logs().lines().filter(|l| l.contains("xstream")) {
        eprintln!("{l}");
    }
    eprintln!("xseq of 400 each way across the new stream's switch-over took {during:.3} s");
}

#[test]
fn xstream_legacy_slave_stays_on_datagrams() {
    let c = Cluster::named("hstr", "leg", 2);
    let _m = machine(&c, LEGACY_PVMD, &[]);
    xseq(&c, 30);
    assert!(!c.log(1).contains("xstream host"), "{}", c.logs());
}

#[test]
fn xstream_kill9_of_a_streaming_peer_is_detected_and_garbage_is_refused() {
    let c = Cluster::named("hstr", "kill", 2);
    let _m = machine(&c, &our_pvmd().display().to_string(), &[]);
    xseq(&c, 20);
    assert!(c.log(1).contains("stream up"), "{}", c.logs());
    // A connection to h2's stream port from h1 that says garbage: refused, logged, harmless.
    let port: u16 = c
        .log(2)
        .lines()
        .find_map(|l| l.split("netinit() stream port ").nth(1))
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no stream port in h2's log\n{}", c.logs()));
    let mut nc = c.command(1, &PathBuf::from("/bin/bash"));
    nc.args([
        "-c",
        &format!(
            "exec 3<>/dev/tcp/{}/{port}; printf 'GET / HTTP/1.0\\r\\n\\r\\nxxxxxxxxxxxx' >&3; cat <&3",
            c.host(2).ip
        ),
    ]);
    nc.stdout(Stdio::piped());
    let mut ch = nc.spawn().unwrap();
    let mut sink = String::new();
    let _ = ch.stdout.take().unwrap().read_to_string(&mut sink);
    let _ = ch.wait();
    assert!(
        c.wait_for(Duration::from_secs(5), || c
            .log(2)
            .contains("xstream: refused a connection")),
        "{}",
        c.logs()
    );
    xseq(&c, 10); // the real stream is unaffected
    assert!(!c.logs().contains("falling back"), "{}", c.logs());
    // kill -9 of the slave daemon (and its tasks): deleted within 10 s.
    let t = Instant::now();
    for pid in c.pids(2) {
        send_signal(pid, libc::SIGKILL);
    }
    assert!(
        c.wait_for(Duration::from_secs(10), || c.log(1).contains("host 2 deleted")),
        "not detected in 10 s\n{}",
        c.logs()
    );
    eprintln!("kill -9 of a streaming peer detected in {} ms", t.elapsed().as_millis());
}

/// A streaming peer that dies without a word (the switch swallows its FIN and RST segments, as
/// when its host vanishes or the RST after a kill -9 is lost) while nothing is being sent to it:
/// the idle stream's keepalive finds it silent, the link falls back to datagrams and the host
/// is deleted (a request that waits for that host's reply would otherwise wait for ever); a
/// request that needs every host (pvm_tasks) is then answered at once.
#[test]
fn xstream_silent_peer_is_detected_and_requests_are_answered() {
    let c = Cluster::named("hstr", "quiet", 2);
    let _m = machine(&c, &our_pvmd().display().to_string(), &[]);
    xseq(&c, 20);
    assert!(c.log(1).contains("stream up"), "{}", c.logs());
    c.swallow_tcp_endings_from(2);
    for pid in c.pids(2) {
        send_signal(pid, libc::SIGKILL);
    }
    let t = Instant::now();
    assert!(
        c.wait_for(Duration::from_secs(25), || c.log(1).contains("host 2 deleted")),
        "a silent streaming peer was not deleted within 25 s\n{}",
        c.logs()
    );
    eprintln!("silent streaming peer deleted in {} ms", t.elapsed().as_millis());
    let (code, out, err) = Proc {
        child: c.command(1, &c_program("basic")).spawn().unwrap(),
        name: "basic".into(),
    }
    .wait(Duration::from_secs(20));
    assert_eq!(code, Some(0), "{out}\n{err}\n{}", c.logs());
}
