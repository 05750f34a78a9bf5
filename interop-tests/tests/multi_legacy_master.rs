//! A legacy master pvmd adds our pvmd as a slave on another host (namespace): spawn across,
//! messages both ways, console `conf` / `ps -a`, delete and halt.

use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use interop_tests::netns::Cluster;
use interop_tests::{our_pvmd, Proc, LEGACY_CONSOLE, LEGACY_PVMD, TIMEOUT};

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

    // Delete: our slave goes away.
    let out = console(&c, 1, &format!("delete {h2}\nconf\n"));
    assert!(out.contains("1 successful"), "delete: {out}\n{}", c.logs());
    assert!(
        c.wait_for(Duration::from_secs(10), || c.pids(2).is_empty()),
        "our slave did not exit after delete\n{}",
        c.logs()
    );
}
