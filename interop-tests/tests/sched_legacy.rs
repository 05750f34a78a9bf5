//! pvm-sched on the legacy daemon: it registers with pvm_reg_rm, places the spawns of a
//! legacy-library program by load (SM_EXEC to the legacy pvmds, on hosts added through it),
//! answers pvm_config/pvm_tasks, and says that it cannot migrate: when an owner returns, the
//! guests stay and new spawns avoid that host. Also driven by a host state file (the
//! injected "real signal" path) instead of the explicit switch.

mod sched_common;

use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use interop_tests::netns::Cluster;
use interop_tests::{stop_pid, Proc, LEGACY_CONSOLE, TIMEOUT};
use sched_common::{legacy_program, master, require_legacy, sched_bin, start_sched};

/// Spawns `argv[1]` children (default placement) and prints their hosts; children wait for
/// a message, so that they count as load while the next spawns are placed.
const SPAWNER: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pvm3.h>
int main(int argc, char **argv) {
    int n = atoi(argv[1]), i, tids[16], nh, na, nt, k;
    struct pvmhostinfo *hi;
    struct pvmtaskinfo *ti;
    char *kid[] = { "child", 0 };
    if (!strcmp(argv[1], "child")) { pvm_mytid(); pvm_recv(-1, 8); pvm_exit(); return 0; }
    setvbuf(stdout, 0, _IOLBF, 0);
    pvm_setopt(PvmAutoErr, 0);
    pvm_config(&nh, &na, &hi);
    printf("config %d hosts\n", nh);
    i = pvm_spawn(argv[0], kid, PvmTaskDefault, "", n, tids);
    printf("spawned %d:", i);
    for (i = 0; i < n; i++) {
        int h = pvm_tidtohost(tids[i]);
        for (k = 0; k < nh; k++) if (hi[k].hi_tid == h) break;
        printf(" h%d", k + 1);
    }
    printf("\n");
    pvm_tasks(0, &nt, &ti);
    printf("tasks %d\n", nt >= n ? 1 : 0);
    pvm_initsend(PvmDataDefault);
    pvm_mcast(tids, n, 8);
    pvm_exit();
    return 0;
}
"#;

fn ask(c: &Cluster, args: &[&str]) -> String {
    let mut cmd = c.command(1, &sched_bin());
    cmd.args(args);
    let (code, out, err) = Proc {
        child: cmd.spawn().unwrap(),
        name: "pvm-sched client".into(),
    }
    .wait(TIMEOUT);
    assert_eq!(code, Some(0), "pvm-sched {args:?}: {out}\n{err}");
    out
}

#[test]
fn pvm_sched_on_the_legacy_daemon_places_but_does_not_migrate() {
    require_legacy();
    let prog = legacy_program("sched_legacy_spawner", SPAWNER);
    let c = Cluster::named("sc", "leg", 3);
    let mut m = master(&c, true, &[2, 3]);
    let (mut sched, sl, state) = start_sched(&c, Some("load 0\nfree_mb 4000\n"), "signals off\nidle_after 0\n");
    assert!(
        sl.text()
            .contains("legacy daemon: places and spawns, but cannot migrate"),
        "{}",
        sl.text()
    );
    // Hosts added after the RM registered, through it: the legacy slaves learn the RM's tid.
    let mut add = c.command(1, &PathBuf::from(LEGACY_CONSOLE));
    add.stdin(Stdio::piped());
    let mut ch = add.spawn().unwrap();
    ch.stdin
        .take()
        .unwrap()
        .write_all(format!("add {} {}\n", c.host(2).ip, c.host(3).ip).as_bytes())
        .unwrap();
    let (_, out, _) = Proc {
        child: ch,
        name: "console".into(),
    }
    .wait(TIMEOUT);
    assert!(out.contains("2 successful"), "{out}\n{}\n{}", sl.text(), c.logs());
    let run = |n: &str| {
        let mut p = c.command(1, &prog);
        p.arg(n);
        let child = p.spawn().unwrap();
        if !c.wait_for(Duration::from_secs(30), || {
            std::fs::read_to_string(format!("/proc/{}/stat", child.id()))
                .map(|s| s.contains(") Z"))
                .unwrap_or(true)
        }) {
            panic!("spawner hangs\n{}\n{}", sl.text(), c.logs());
        }
        let (code, out, err) = Proc {
            child,
            name: "spawner".into(),
        }
        .wait(TIMEOUT);
        assert_eq!(code, Some(0), "{out}\n{err}\n{}\n{}", sl.text(), c.logs());
        out
    };
    let out = run("3");
    assert_eq!(
        out,
        "config 3 hosts\nspawned 3: h1 h2 h3\ntasks 1\n",
        "{}\n{}",
        sl.text(),
        c.logs()
    );
    // h2's owner returns (state file: the signal path): no migration on a legacy daemon, said
    // so in the log, and the next spawns avoid h2.
    std::fs::write(state.join(&c.host(2).ip), "load 0\nfree_mb 4000\nowner busy\n").unwrap();
    assert!(
        sl.wait(&format!("owner of {} returned", c.host(2).ip), TIMEOUT)
            .is_some(),
        "{}",
        sl.text()
    );
    let out = run("4");
    assert!(out.starts_with("config 3 hosts\nspawned 4:"), "{out}");
    assert!(!out.contains(" h2"), "{out}\n{}", sl.text());
    let hosts = ask(&c, &["hosts"]);
    assert!(
        hosts.contains("legacy daemon: guests are placed but never moved"),
        "{hosts}"
    );
    assert!(
        hosts
            .lines()
            .any(|l| l.starts_with(&c.host(2).ip) && l.contains("busy")),
        "{hosts}"
    );
    stop_pid(sched.child.id());
    let _ = sched.child.wait();
    stop_pid(m.child.id());
    let _ = m.child.wait();
}
