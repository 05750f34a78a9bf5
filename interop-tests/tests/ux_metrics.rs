//! pvmd-rs observability: the loopback metrics endpoint (`PVMD_METRICS`) and the structured
//! log sink (`PVMD_LOG`, `PVMD_LOG_FORMAT=json`, `PVMD_LOG_FILE`), next to the unchanged legacy
//! log file.

use interop_tests::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// The `pvm` console, built once per test process.
fn console() -> std::path::PathBuf {
    static BIN: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("root")
            .to_path_buf();
        let st = std::process::Command::new(option_env!("CARGO").unwrap_or("cargo"))
            .args(["build", "--quiet", "-p", "pvm-console", "--bin", "pvm"])
            .current_dir(&root)
            .status()
            .expect("cargo build -p pvm-console");
        assert!(st.success());
        std::env::var_os("CARGO_TARGET_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| root.join("target"))
            .join("debug/pvm")
    })
    .clone()
}

/// Starts our master pvmd with extra environment.
fn start(tmp: &TmpDir, env: &[(&str, String)]) -> Proc {
    let mut c = pvm_command(&our_pvmd(), tmp.path());
    c.stderr(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    let child = c.spawn().expect("start pvmd");
    let mut p = Proc {
        child,
        name: "pvmd (metrics)".into(),
    };
    let sock = p.read_line(TIMEOUT);
    assert!(sock.starts_with('/'), "pvmd printed {sock:?}; log:\n{}", tmp.log());
    p
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn scrape(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the metrics endpoint");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").expect("request");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("response");
    assert!(out.starts_with("HTTP/1.0 200 OK\r\n"), "{out}");
    assert!(out.contains("Content-Type: text/plain; version=0.0.4"), "{out}");
    out
}

fn value(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in:\n{text}"))
}

#[test]
fn ux_metrics_scrape_counts_traffic_and_json_log() {
    let tmp = TmpDir::new("people-metrics");
    let port = free_port();
    let jlog = tmp.path().join("pvmd.json");
    let _d = start(
        &tmp,
        &[
            ("PVMD_METRICS", format!("127.0.0.1:{port}")),
            ("PVMD_LOG", "warn,pvmd::task=info,pvmd::spawn=debug".into()),
            ("PVMD_LOG_FORMAT", "json".into()),
            ("PVMD_LOG_FILE", jlog.display().to_string()),
        ],
    );
    let before = scrape(port);
    for name in [
        "pvmd_retransmits_total",
        "pvmd_rtt_seconds_count",
        "pvmd_datagrams_in_total",
        "pvmd_datagrams_out_total",
        "pvmd_migrations_total",
        "pvmd_checkpoints_total",
        "pvmd_freeze_seconds_count",
        "pvmd_hosts",
    ] {
        value(&before, name);
    }
    let frags0 = value(&before, "pvmd_fragments_in_total");
    let routed0 = value(&before, "pvmd_messages_routed_total");
    // Traffic: a console that asks a few things and spawns a task that lives a moment.
    let bin = console();
    let (code, out, err) = run(&bin, &tmp, &[], Some("conf\nps -a\nspawn /bin/sleep 3\nps -a\n"));
    assert_eq!(code, Some(0), "{out}\n{err}");
    // The gauges refresh at most every 100 ms, on the daemon's next event.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut after = scrape(port);
    while value(&after, "pvmd_tasks") < 1.0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(150));
        let _ = run(&bin, &tmp, &[], Some("ps\n"));
        after = scrape(port);
    }
    assert!(value(&after, "pvmd_fragments_in_total") > frags0, "{after}");
    assert!(value(&after, "pvmd_messages_routed_total") > routed0, "{after}");
    assert!(value(&after, "pvmd_fragments_out_total") > 0.0, "{after}");
    assert!(
        value(&after, "pvmd_tasks") >= 1.0,
        "the sleeping task is not counted:\n{after}"
    );
    assert_eq!(value(&after, "pvmd_hosts"), 1.0, "{after}");
    let log = tmp.log();
    assert!(
        log.contains(&format!("main() metrics on http://127.0.0.1:{port}/metrics")),
        "{log}"
    );
    // The legacy log file keeps its format; the JSON sink gets the same lines with fields.
    let conn = log
        .lines()
        .find(|l| l.contains("tm_conn2() new task"))
        .map(str::to_string);
    let json = std::fs::read_to_string(&jlog).expect("PVMD_LOG_FILE written");
    let l = conn.unwrap_or_else(|| panic!("no tm_conn2 line in the legacy log:\n{log}"));
    // `[t80040000] 11/26 05:34:11 tm_conn2() new task t40001`
    assert!(
        l.starts_with("[t80040000] ") && l[26..].starts_with(" tm_conn2() new task t4"),
        "{l}"
    );
    let spawned = json
        .lines()
        .find(|l| l.contains("\"target\":\"pvmd::task\"") || l.contains("\"target\":\"pvmd::spawn\""))
        .unwrap_or_else(|| panic!("no task/spawn event in the JSON log:\n{json}\nlegacy:\n{log}"));
    assert!(spawned.starts_with("{\"ts\":\"20"), "{spawned}");
    assert!(spawned.contains("\"tid\":\"t4"), "no tid field: {spawned}");
    assert!(spawned.contains("\"pvmd\":\"t80040000\""), "no pvmd field: {spawned}");
    // Filtered out: warn is the default, nothing from pvmd::mesg at info.
    assert!(!json.contains("\"target\":\"pvmd::mesg\",\"msg\":\"loclconn"), "{json}");
    // 404 and a garbage request do not stop the endpoint.
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.write_all(b"\x00\x01garbage\r\n\r\n").expect("write");
    let mut r = String::new();
    let _ = s.read_to_string(&mut r);
    assert!(r.starts_with("HTTP/1.0 400"), "{r}");
    scrape(port);
}

#[test]
fn ux_metrics_non_loopback_is_refused() {
    let tmp = TmpDir::new("people-metrics-refuse");
    let port = free_port();
    let _d = start(&tmp, &[("PVMD_METRICS", format!("0.0.0.0:{port}"))]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !tmp.log().contains("ready") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = tmp.log();
    assert!(
        log.contains(&format!(
            "main() PVMD_METRICS=0.0.0.0:{port} refused: the metrics endpoint has no authentication and only listens on loopback"
        )),
        "{log}"
    );
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "something listens on {port}"
    );
    // The daemon itself runs.
    let (code, out, _) = run(Path::new(LEGACY_CONSOLE), &tmp, &[], Some("conf\n"));
    assert_eq!(code, Some(0));
    assert!(out.contains("1 host"), "{out}");
}

/// Scrapes `127.0.0.1:port` from inside a network namespace (its own loopback).
fn scrape_in(ns: &str, port: u16) -> String {
    let script = format!(
        "exec 3<>/dev/tcp/127.0.0.1/{port} && printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' >&3 && timeout 5 cat <&3"
    );
    let out = std::process::Command::new("timeout")
        .args(["10", "ip", "netns", "exec", ns, "bash", "-c", &script])
        .output()
        .expect("ip netns exec bash");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.starts_with("HTTP/1.0 200 OK"),
        "scrape in {ns}: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// Two namespace hosts, master and slave both with `PVMD_METRICS=127.0.0.1:PORT` (the same
/// port: loopback is per namespace). After a master/worker job across them, each pvmd counts
/// datagrams both ways and round-trip samples, and both see 2 hosts.
#[test]
fn ux_metrics_two_hosts_count_datagrams_and_round_trips() {
    use interop_tests::netns::Cluster;
    let c = Cluster::new("people-metrics", 2);
    let bin = our_pvmd();
    let hf = c.dir.path().join("hostfile");
    std::fs::write(
        &hf,
        format!("{}\n{} dx={}\n", c.host(1).ip, c.host(2).ip, bin.display()),
    )
    .expect("hostfile");
    let port = 9464;
    let mut cmd = c.command(1, &bin);
    cmd.arg(format!("-n{}", c.host(1).ip))
        .arg(&hf)
        .env("PVMD_METRICS", format!("127.0.0.1:{port}"))
        .stderr(Stdio::null());
    let mut master = Proc {
        child: cmd.spawn().expect("start master"),
        name: "master pvmd".into(),
    };
    let line = master.read_line(TIMEOUT);
    assert!(line.starts_with('/'), "master printed {line:?}\n{}", c.logs());
    assert!(
        c.wait_for(Duration::from_secs(20), || c.log(2).contains("ready")
            && value(&scrape_in(&c.host(1).ns, port), "pvmd_hosts") == 2.0),
        "slave never joined\n{}",
        c.logs()
    );
    let (code, out, err) = Proc {
        child: c.command(1, Path::new("/usr/bin/master1")).spawn().expect("master1"),
        name: "master1".into(),
    }
    .wait(TIMEOUT);
    assert_eq!(code, Some(0), "{out}\n{err}\n{}", c.logs());
    assert!(out.contains("SUCCESSFUL"), "{out}");
    for k in 1..=2 {
        let m = scrape_in(&c.host(k).ns, port);
        assert!(
            c.log(k)
                .contains(&format!("main() metrics on http://127.0.0.1:{port}/metrics")),
            "{}",
            c.logs()
        );
        assert!(value(&m, "pvmd_datagrams_in_total") > 0.0, "h{k}:\n{m}");
        assert!(value(&m, "pvmd_datagrams_out_total") > 0.0, "h{k}:\n{m}");
        assert!(value(&m, "pvmd_rtt_seconds_count") > 0.0, "h{k}:\n{m}");
        assert!(value(&m, "pvmd_rtt_seconds_sum") > 0.0, "h{k}:\n{m}");
        assert_eq!(value(&m, "pvmd_hosts"), 2.0, "h{k}:\n{m}");
    }
    drop(master);
}

/// A move that fails (here refused: no such task) counts in `pvmd_migration_failures_total`,
/// once, and not as a migration.
#[test]
fn ux_metrics_failed_move_is_counted() {
    let tmp = TmpDir::new("fixmig-metrics");
    let port = free_port();
    let _d = start(&tmp, &[("PVMD_METRICS", format!("127.0.0.1:{port}"))]);
    let before = scrape(port);
    assert_eq!(value(&before, "pvmd_migration_failures_total"), 0.0, "{before}");
    let bin = console();
    // pvm_migrate names the target by host name: this host's, as `conf` shows it.
    let (code, out, err) = run(&bin, &tmp, &[], Some("conf\n"));
    assert_eq!(code, Some(0), "{out}\n{err}");
    let name = out
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("40000"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no host line in:\n{out}"))
        .to_string();
    let (code, out, err) = run(&bin, &tmp, &[], Some(&format!("migrate 4003f {name}\n")));
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(
        !out.contains("now on"),
        "the move of a task that does not exist succeeded:\n{out}"
    );
    let after = scrape(port);
    assert_eq!(
        value(&after, "pvmd_migration_failures_total"),
        1.0,
        "console said:\n{out}\n{after}\n{}",
        tmp.log()
    );
    assert_eq!(value(&after, "pvmd_migrations_total"), 0.0, "{after}");
}
