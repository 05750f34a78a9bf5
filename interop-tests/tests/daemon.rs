//! Legacy programs against our daemon and against the legacy daemon, compared.

use interop_tests::*;

fn basic_output(kind: Kind) -> String {
    let tmp = TmpDir::new(&format!("basic-{kind:?}"));
    let d = Pvmd::start(kind, &tmp, &[]);
    let (code, out, err) = run(&c_program("basic"), &tmp, &[], None);
    assert_eq!(
        code,
        Some(0),
        "{kind:?}: basic failed\nstdout:\n{out}\nstderr:\n{err}\nlog:\n{}",
        tmp.log()
    );
    drop(d);
    out
}

#[test]
fn legacy_program_sees_our_daemon() {
    let out = basic_output(Kind::Ours);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "mytid 40001", "{out}");
    assert_eq!(lines[1], "config 0 nhost 1 narch 1", "{out}");
    assert!(
        lines[2].starts_with("host 40000 ") && lines[2].ends_with(" LINUX64 1000 408c41"),
        "{out}"
    );
    assert!(
        out.contains("tasks 0 n 1\ntask 40001 ptid 0 host 40000 flag 4 aout '' pid_is_mine 1\n"),
        "{out}"
    );
    for want in [
        "mstat 0",
        "mstat-bad -6",
        "pstat 0",
        "pstat-bad -31",
        "parent -23",
        "hostsync 0",
        "recvinfo-none -32",
        "putinfo 0",
        "putinfo-again 1",
        "recvinfo 1 value 12345",
        "mboxinfo 0 n 1 interop:2",
        "delinfo 0",
        "delinfo-again -32",
        "exit 0",
    ] {
        assert!(lines.contains(&want), "missing {want:?} in:\n{out}");
    }
}

#[test]
fn differential_basic_program() {
    let ours = basic_output(Kind::Ours);
    let legacy = basic_output(Kind::Legacy);
    assert_eq!(ours, legacy, "our daemon and the legacy daemon answer differently");
}

fn pingpong(kind: Kind) -> (String, String) {
    let tmp = TmpDir::new(&format!("pp-{kind:?}"));
    let d = Pvmd::start(kind, &tmp, &[]);
    let prog = c_program("pingpong");
    let mut server = spawn(&prog, &tmp, &["serve"]);
    let line = server.read_line(TIMEOUT);
    let tid = line
        .strip_prefix("tid ")
        .unwrap_or_else(|| panic!("server said {line:?}; log:\n{}", tmp.log()))
        .trim()
        .to_string();
    let (code, out, err) = run(&prog, &tmp, &["call", &tid], None);
    assert_eq!(
        code,
        Some(0),
        "{kind:?} client\nstdout:\n{out}\nstderr:\n{err}\nlog:\n{}",
        tmp.log()
    );
    let (scode, _, serr) = server.wait(TIMEOUT);
    assert_eq!(scode, Some(0), "{kind:?} server: {serr}");
    drop(d);
    (tid, out)
}

#[test]
fn two_tasks_exchange_messages_through_our_daemon() {
    let (tid, out) = pingpong(Kind::Ours);
    assert_eq!(tid, "40001");
    let sum: i64 = (0..20000).sum();
    assert_eq!(
        out,
        format!("reply from-server 1 tag 2 n 20000 sum {sum} str ping-pong\nraw reply n 42 str raw\n")
    );
}

#[test]
fn differential_pingpong() {
    assert_eq!(pingpong(Kind::Ours), pingpong(Kind::Legacy));
}

fn console_conf(kind: Kind) -> String {
    require_console();
    let tmp = TmpDir::new(&format!("console-{kind:?}"));
    let d = Pvmd::start(kind, &tmp, &[]);
    let (code, out, err) = run(
        std::path::Path::new(LEGACY_CONSOLE),
        &tmp,
        &[],
        Some("conf\nps -a\nid\nquit\n"),
    );
    assert_eq!(
        code,
        Some(0),
        "{kind:?} console\nstdout:\n{out}\nstderr:\n{err}\nlog:\n{}",
        tmp.log()
    );
    assert!(err.is_empty(), "{kind:?} console complained:\n{err}");
    // The daemon outlives the console.
    assert!(std::path::Path::new(&d.sock).exists());
    drop(d);
    out
}

fn require_console() {
    assert!(
        std::path::Path::new(LEGACY_CONSOLE).exists(),
        "{LEGACY_CONSOLE} is missing: install the Debian package pvm"
    );
}

#[test]
fn legacy_console_attaches_to_our_daemon() {
    let out = console_conf(Kind::Ours);
    assert!(out.starts_with("pvmd already running.\n"), "{out}");
    assert!(out.contains("1 host, 1 data format\n"), "{out}");
    assert!(out.contains("    40000  LINUX64    1000 0x00408c41\n"), "{out}");
    assert!(out.contains("pvm> id\nt40001\n"), "{out}");
    assert!(out.ends_with("pvmd still running.\n"), "{out}");
}

#[test]
fn differential_console() {
    assert_eq!(console_conf(Kind::Ours), console_conf(Kind::Legacy));
}

fn group(kind: Kind) -> Vec<String> {
    let tmp = TmpDir::new(&format!("group-{kind:?}"));
    let d = Pvmd::start(kind, &tmp, &[]);
    let prog = c_program("group");
    let mut tids = Vec::new();
    let mut members = Vec::new();
    for role in ["member", "member", "sleeper"] {
        let mut p = spawn(&prog, &tmp, &[role]);
        let l = p.read_line(TIMEOUT);
        tids.push(
            l.strip_prefix("tid ")
                .unwrap_or_else(|| panic!("{role} said {l:?}"))
                .trim()
                .to_string(),
        );
        members.push(p);
    }
    let args: Vec<&str> = std::iter::once("lead").chain(tids.iter().map(String::as_str)).collect();
    let (code, out, err) = run(&prog, &tmp, &args, None);
    assert_eq!(code, Some(0), "{kind:?} leader\n{out}\n{err}\nlog:\n{}", tmp.log());
    let mut lines: Vec<String> = out.lines().map(str::to_string).collect();
    for (i, m) in members.into_iter().enumerate() {
        use std::os::unix::process::ExitStatusExt;
        let mut m = m;
        let t = std::time::Instant::now();
        let st = loop {
            if let Some(st) = m.child.try_wait().unwrap() {
                break st;
            }
            assert!(t.elapsed() < TIMEOUT, "{kind:?} task {i} did not end");
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        lines.push(format!("task {i} exit {:?} signal {:?}", st.code(), st.signal()));
    }
    drop(d);
    lines
}

#[test]
fn multicast_notify_and_signals_through_our_daemon() {
    let lines = group(Kind::Ours);
    assert_eq!(
        lines,
        [
            "notify 0",
            "mcast 0",
            "reply 43 from member 1",
            "reply 43 from member 1",
            "sendsig 0",
            "exit notifies for all three 1",
            "pstat of sleeper -31",
            "task 0 exit Some(0) signal None",
            "task 1 exit Some(0) signal None",
            "task 2 exit None signal Some(15)",
        ]
    );
}

#[test]
fn differential_group() {
    assert_eq!(group(Kind::Ours), group(Kind::Legacy));
}

fn spawn_run(kind: Kind) -> String {
    let tmp = TmpDir::new(&format!("spawn-{kind:?}"));
    let d = Pvmd::start(kind, &tmp, &[]);
    let (code, out, err) = run(&c_program("spawn"), &tmp, &[], None);
    assert_eq!(
        code,
        Some(0),
        "{kind:?} spawn\nstdout:\n{out}\nstderr:\n{err}\nlog:\n{}",
        tmp.log()
    );
    drop(d);
    out
}

#[test]
fn spawn_catchout_notify_through_our_daemon() {
    assert_eq!(
        spawn_run(Kind::Ours),
        "mytid 40001\n\
         spawn 3 1 2 3\n\
         notify 0\n\
         children listed 3\n\
         child says it is its sender 1, siblings 3\n\
         child says it is its sender 1, siblings 3\n\
         child says it is its sender 1, siblings 3\n\
         release 0\n\
         exit notifications 3\n\
         spawn missing 0 -7\n\
         spawn bad host 0 -6\n\
         caught hellos 3\n"
    );
}

#[test]
fn differential_spawn() {
    assert_eq!(spawn_run(Kind::Ours), spawn_run(Kind::Legacy));
}

/// The Debian pvm-examples programs, found by the daemon in $HOME/pvm3/bin/LINUX64 (the legacy
/// default exec path), as PVM users install them.
fn examples(kind: Kind) -> Vec<String> {
    let tmp = TmpDir::new(&format!("examples-{kind:?}"));
    let home = tmp.path().join("home");
    let bin = home.join("pvm3/bin/LINUX64");
    std::fs::create_dir_all(&bin).unwrap();
    for p in ["hello.pvm", "hello_other", "master1", "slave1", "gexample", "pvmgs"] {
        let src = std::path::Path::new("/usr/bin").join(p);
        assert!(
            src.exists(),
            "{} is missing: install the Debian package pvm-examples",
            src.display()
        );
        std::os::unix::fs::symlink(&src, bin.join(p)).unwrap();
    }
    let with_home = |c: &mut std::process::Command| {
        c.env("HOME", &home).current_dir(&home);
    };
    let bin_of = |name: &str| std::path::PathBuf::from("/usr/bin").join(name);
    let start = || {
        let mut c = pvm_command(
            &match kind {
                Kind::Ours => our_pvmd(),
                Kind::Legacy => std::path::PathBuf::from(LEGACY_PVMD),
            },
            tmp.path(),
        );
        with_home(&mut c);
        c.stderr(std::process::Stdio::null());
        let mut p = Proc {
            child: c.spawn().expect("start pvmd"),
            name: format!("{kind:?} pvmd"),
        };
        assert!(p.read_line(TIMEOUT).starts_with('/'));
        p
    };
    let d = start();
    let mut lines = Vec::new();
    for (prog, input) in [("hello.pvm", None), ("master1", None), ("gexample", Some("100\n4\n"))] {
        let mut c = pvm_command(&bin_of(prog), tmp.path());
        with_home(&mut c);
        if input.is_some() {
            c.stdin(std::process::Stdio::piped());
        }
        let mut child = c.spawn().expect("start example");
        if let Some(i) = input {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(i.as_bytes()).unwrap();
        }
        let (code, out, err) = Proc {
            child,
            name: prog.to_string(),
        }
        .wait(TIMEOUT);
        assert_eq!(code, Some(0), "{kind:?} {prog}\n{out}\n{err}\nlog:\n{}", tmp.log());
        let mut l: Vec<String> = out
            .lines()
            .map(|s| s.trim_end().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        l.sort();
        lines.push(format!("== {prog}"));
        lines.extend(l);
    }
    drop(d);
    lines
}

#[test]
fn legacy_examples_run_on_our_daemon() {
    let l = examples(Kind::Ours);
    assert!(
        l.iter().any(|x| x.starts_with("from t40002: hello, world from ")),
        "{l:#?}"
    );
    for want in [
        "I got 100.000000 from 1; (expecting 100.000000)",
        "I got 300.000000 from 2; (expecting 300.000000)",
        "The 1-Norm is 5050",
        "The product of column 1 is 9.33262e+157",
    ] {
        assert!(l.iter().any(|x| x.trim() == want), "missing {want:?} in {l:#?}");
    }
}

#[test]
fn differential_examples() {
    assert_eq!(examples(Kind::Ours), examples(Kind::Legacy));
}
