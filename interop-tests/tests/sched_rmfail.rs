//! Resource-manager failure. A task that enrolled while an RM was registered sends its spawns
//! to the RM. When the RM is killed, pvmd-rs answers those requests itself (own placement)
//! and logs it; when the RM stops answering (SIGSTOP), pvmd-rs answers after PVMD_RM_TIMEOUT.
//! The legacy daemon keeps forwarding to the dead RM: the same request never returns there
//! (checked with a bounded wait, to document the difference). Tasks on other hosts use the
//! RM too (their pvmds are told of it with DM_SLCONF) and their pvmds answer for it the same
//! way when it stops answering or dies.

mod sched_common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Stdio};
use std::time::{Duration, Instant};

use interop_tests::netns::Cluster;
use interop_tests::{send_signal, stop_pid, Proc, TIMEOUT};
use sched_common::{legacy_program, master, require_legacy, sched_bin, Lines};

/// Reads commands on stdin: `spawn N` (default placement), `config`; prints one line each.
const REQUESTER: &str = r#"
#include <stdio.h>
#include <string.h>
#include <pvm3.h>
int main(int argc, char **argv) {
    char line[100];
    int n, i, tids[16], nh, na;
    struct pvmhostinfo *hi;
    char *kid[] = { "child", 0 };
    if (argc > 1 && !strcmp(argv[1], "child")) { pvm_mytid(); pvm_exit(); return 0; }
    setvbuf(stdout, 0, _IOLBF, 0);
    printf("enrolled t%x\n", pvm_mytid());
    pvm_setopt(PvmAutoErr, 0);
    while (fgets(line, sizeof line, stdin)) {
        if (sscanf(line, "spawn %d", &n) == 1 && n > 0 && n <= 16) {
            int cc = pvm_spawn(argv[0], kid, PvmTaskDefault, "", n, tids);
            printf("spawned %d:", cc);
            for (i = 0; i < n; i++) printf(" %s", tids[i] > 0 ? "ok" : "err");
            printf("\n");
        } else if (!strncmp(line, "config", 6)) {
            int cc = pvm_config(&nh, &na, &hi);
            printf("config %d: %d hosts\n", cc, nh);
        }
    }
    pvm_exit();
    return 0;
}
"#;

struct Requester {
    proc_: Proc,
    stdin: ChildStdin,
    lines: Lines,
}

impl Requester {
    fn start(c: &Cluster, prog: &Path) -> Requester {
        Requester::start_on(c, 1, prog)
    }

    fn start_on(c: &Cluster, k: usize, prog: &Path) -> Requester {
        let mut cmd = c.command(k, prog);
        cmd.stdin(Stdio::piped());
        let mut child: Child = cmd.spawn().unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut proc_ = Proc {
            child,
            name: "requester".into(),
        };
        let lines = Lines::of(&mut proc_);
        assert!(lines.wait("enrolled", TIMEOUT).is_some(), "{}", c.logs());
        Requester { proc_, stdin, lines }
    }

    /// Sends a command; the answer line (starting with `want`) and how long it took.
    fn ask(&mut self, cmd: &str, want: &str, wait: Duration) -> (Option<String>, Duration) {
        let t = Instant::now();
        self.stdin.write_all(format!("{cmd}\n").as_bytes()).unwrap();
        (self.lines.wait(want, wait), t.elapsed())
    }
}

fn start_srm(c: &Cluster) -> (Proc, Lines) {
    let mut cmd = c.command(1, &PathBuf::from("stdbuf"));
    cmd.args(["-oL", "/usr/bin/srm.pvm"]).stderr(Stdio::null());
    let mut p = Proc {
        child: cmd.spawn().expect("start srm"),
        name: "srm".into(),
    };
    let l = Lines::of(&mut p);
    assert!(
        l.wait("SRM registered", TIMEOUT).is_some(),
        "{}\n{}",
        l.text(),
        c.logs()
    );
    (p, l)
}

#[test]
fn killed_rm_pvmd_rs_answers_for_it_legacy_hangs() {
    require_legacy();
    let prog = legacy_program("rmfail_req", REQUESTER);
    for legacy in [false, true] {
        let c = Cluster::named("sc", if legacy { "rmk-l" } else { "rmk-o" }, 2);
        let mut m = master(&c, legacy, &[2]);
        // srm first, then the host (through srm: SM_ADDHOST, SM_ADD), so that a legacy slave
        // is told who the RM is (DM_SLCONF) and accepts its SM_EXEC.
        let (srm, srm_lines) = start_srm(&c);
        let add = c.command(1, &PathBuf::from(interop_tests::LEGACY_CONSOLE));
        let mut add = add;
        add.stdin(Stdio::piped());
        let mut ch = add.spawn().unwrap();
        ch.stdin
            .take()
            .unwrap()
            .write_all(format!("add {}\n", c.host(2).ip).as_bytes())
            .unwrap();
        let (_, out, _) = Proc {
            child: ch,
            name: "console".into(),
        }
        .wait(TIMEOUT);
        assert!(out.contains("1 successful"), "{out}\n{}", c.logs());
        let mut r = Requester::start(&c, &prog);
        let (a, _) = r.ask("spawn 2", "spawned", TIMEOUT);
        assert_eq!(
            a.as_deref(),
            Some("spawned 2: ok ok"),
            "{}\n{}",
            srm_lines.text(),
            c.logs()
        );
        assert!(
            srm_lines.text().contains("SM_SPAWN"),
            "srm did not place:\n{}",
            srm_lines.text()
        );
        send_signal(srm.child.id(), libc::SIGKILL);
        let mut srm = srm;
        let _ = srm.child.wait();
        if legacy {
            // The legacy daemon forwards to the dead RM: no answer, ever (bounded here).
            let (a, _) = r.ask("spawn 1", "spawned", Duration::from_secs(3));
            assert_eq!(a, None, "the legacy daemon answered?\n{}", c.logs());
            stop_pid(r.proc_.child.id());
            stop_pid(m.child.id());
            let _ = m.child.wait();
            continue;
        }
        let (a, took) = r.ask("spawn 3", "spawned", TIMEOUT);
        assert_eq!(a.as_deref(), Some("spawned 3: ok ok ok"), "{}", c.logs());
        assert!(took < Duration::from_secs(3), "fallback took {took:?}");
        let (a, _) = r.ask("config", "config", TIMEOUT);
        assert_eq!(a.as_deref(), Some("config 0: 2 hosts"), "{}", c.logs());
        let log = c.log(1);
        assert!(log.contains("rm_gone() resource manager"), "{log}");
        assert!(
            log.contains("rm_fallback() SM_SPAWN from") && log.contains("answered by the pvmd (it is gone)"),
            "{log}"
        );
        drop(r.stdin);
        let _ = r.proc_.wait(TIMEOUT);
        stop_pid(m.child.id());
        let _ = m.child.wait();
    }
}

#[test]
fn silent_rm_is_replaced_after_the_timeout() {
    require_legacy();
    let prog = legacy_program("rmfail_req2", REQUESTER);
    let c = Cluster::named("sc", "rms", 2);
    // PVMD_RM_TIMEOUT=2 for the master (the daemon reads it from its environment): short, yet
    // long enough for a debug-build scheduler on a loaded CI machine to answer the first spawn.
    let hf = c.dir.path().join("hostfile");
    std::fs::write(&hf, format!("{}\n", c.host(1).ip)).unwrap();
    let mut cmd = c.command(1, &interop_tests::our_pvmd());
    cmd.arg(format!("-n{}", c.host(1).ip))
        .arg(&hf)
        .env("PVMD_RM_TIMEOUT", "2")
        .stderr(Stdio::null());
    let mut m = Proc {
        child: cmd.spawn().unwrap(),
        name: "master".into(),
    };
    assert!(m.read_line(TIMEOUT).starts_with('/'));
    let policy = c.dir.path().join("policy");
    std::fs::write(&policy, "signals off\n").unwrap();
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
    let mut r = Requester::start(&c, &prog);
    let (a, _) = r.ask("spawn 2", "spawned", TIMEOUT);
    assert_eq!(a.as_deref(), Some("spawned 2: ok ok"), "{}\n{}", sl.text(), c.logs());
    // Its log line may reach us after the answer does.
    assert!(
        sl.wait("place t", TIMEOUT).is_some(),
        "pvm-sched did not place:\n{}",
        sl.text()
    );
    send_signal(sched.child.id(), libc::SIGSTOP);
    let (a, took) = r.ask("spawn 1", "spawned", TIMEOUT);
    assert_eq!(a.as_deref(), Some("spawned 1: ok"), "{}", c.logs());
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(6),
        "answer after {took:?} (timeout 2 s)"
    );
    // Known dead from now on: answered at once.
    let (a, took) = r.ask("spawn 1", "spawned", TIMEOUT);
    assert_eq!(a.as_deref(), Some("spawned 1: ok"), "{}", c.logs());
    assert!(took < Duration::from_millis(1900), "{took:?}");
    let log = c.log(1);
    assert!(log.contains("did not answer within 2.0 s"), "{log}");
    send_signal(sched.child.id(), libc::SIGCONT);
    drop(r.stdin);
    let _ = r.proc_.wait(TIMEOUT);
    stop_pid(sched.child.id());
    stop_pid(m.child.id());
    let _ = m.child.wait();
}

/// Two pvmd-rs hosts, pvm-sched registered on h1 after both were up (h2 learns of it from
/// h1's DM_SLCONF), a requester on h2.
fn remote_setup(tag: &str) -> (Cluster, Proc, Proc, Lines, Requester) {
    require_legacy();
    let prog = legacy_program(&format!("rmfail_{tag}"), REQUESTER);
    let c = Cluster::named("sc", tag, 2);
    let hf = c.dir.path().join("hostfile");
    std::fs::write(
        &hf,
        format!(
            "{}\n{} dx={}\n",
            c.host(1).ip,
            c.host(2).ip,
            interop_tests::our_pvmd().display()
        ),
    )
    .unwrap();
    let mut cmd = c.command(1, &interop_tests::our_pvmd());
    cmd.arg(format!("-n{}", c.host(1).ip))
        .arg("-d0x8000")
        .arg(&hf)
        .env("PVMD_RM_TIMEOUT", "2")
        .stderr(Stdio::null());
    let mut m = Proc {
        child: cmd.spawn().unwrap(),
        name: "master".into(),
    };
    assert!(m.read_line(TIMEOUT).starts_with('/'));
    assert!(
        c.wait_for(TIMEOUT, || c.log(2).contains("ready")),
        "h2 not up\n{}",
        c.logs()
    );
    let policy = c.dir.path().join("policy");
    std::fs::write(&policy, "signals off\n").unwrap();
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
    std::thread::sleep(Duration::from_millis(300));
    let mut r = Requester::start_on(&c, 2, &prog);
    let me = r.lines.text();
    let me = me.split_whitespace().nth(1).unwrap_or_default().to_string();
    let (a, _) = r.ask("spawn 2", "spawned", TIMEOUT);
    assert_eq!(a.as_deref(), Some("spawned 2: ok ok"), "{}\n{}", sl.text(), c.logs());
    assert!(
        c.wait_for(Duration::from_secs(5), || sl.text().contains(&format!("for {me})"))),
        "pvm-sched did not place the spawn of {me} on h2:\n{}\n{}",
        sl.text(),
        c.logs()
    );
    (c, m, sched, sl, r)
}

#[test]
fn silent_rm_is_replaced_for_tasks_on_other_hosts() {
    let (c, mut m, sched, sl, mut r) = remote_setup("rmr");
    send_signal(sched.child.id(), libc::SIGSTOP);
    let (a, took) = r.ask("spawn 1", "spawned", TIMEOUT);
    assert_eq!(a.as_deref(), Some("spawned 1: ok"), "{}", c.logs());
    // h2's pvmd waits PVMD_RM_TIMEOUT (inherited from the master: 2 s; 5 s by default).
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(9),
        "answer after {took:?}"
    );
    let (a, took) = r.ask("spawn 1", "spawned", TIMEOUT);
    assert_eq!(a.as_deref(), Some("spawned 1: ok"), "{}", c.logs());
    assert!(took < Duration::from_millis(1900), "{took:?}");
    let log = c.log(2);
    assert!(log.contains("did not answer within"), "{log}");
    assert!(log.contains("rm_fallback()"), "{log}");
    send_signal(sched.child.id(), libc::SIGCONT);
    eprintln!("{}", sl.text());
    drop(r.stdin);
    let _ = r.proc_.wait(TIMEOUT);
    stop_pid(sched.child.id());
    stop_pid(m.child.id());
    let _ = m.child.wait();
}

#[test]
fn dead_rm_is_replaced_at_once_for_tasks_on_other_hosts() {
    let (c, mut m, mut sched, _sl, mut r) = remote_setup("rmk");
    send_signal(sched.child.id(), libc::SIGKILL);
    let _ = sched.child.wait();
    // h1's pvmd sees the RM's end and tells h2 (DM_SLCONF sched "0").
    assert!(
        c.wait_for(TIMEOUT, || c.log(2).contains("its pvmd says so")),
        "{}",
        c.logs()
    );
    let (a, took) = r.ask("spawn 1", "spawned", TIMEOUT);
    assert_eq!(a.as_deref(), Some("spawned 1: ok"), "{}", c.logs());
    assert!(took < Duration::from_millis(1900), "{took:?}\n{}", c.logs());
    drop(r.stdin);
    let _ = r.proc_.wait(TIMEOUT);
    stop_pid(m.child.id());
    let _ = m.child.wait();
}
