//! The legacy `srm` sample resource manager (Debian pvm-examples, /usr/bin/srm.pvm) on
//! pvmd-rs, against the same run on the legacy daemon: on a master with three hosts to add,
//! srm registers; a probe program (legacy library) adds the hosts through it (SM_ADDHOST ->
//! SM_ADD/SM_ADDACK), asks for the configuration and task list (SM_CONFIG, SM_TASK), spawns
//! eight children that srm places (SM_SPAWN -> SM_EXEC to each host's pvmd, SM_EXECACK),
//! asks srm for exit notifies (SM_NOTIFY, fired from the pvmds' SM_TASKX), and spawns two
//! more on a named host, deletes a host (SM_DELHOST; the pvmd tells srm with SM_HOSTX) and
//! asks for the configuration again. Everything the probe prints (placements as host indices) and the
//! sequence of messages srm reports receiving must be equal on both daemons.

mod sched_common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use interop_tests::netns::Cluster;
use interop_tests::{Proc, TIMEOUT};
use sched_common::{legacy_program, master, require_legacy, Lines};

const PROBE: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <pvm3.h>
static struct pvmhostinfo *hi; static int nh;
static int hidx(int tid) {
    int h = pvm_tidtohost(tid), i;
    for (i = 0; i < nh; i++) if (hi[i].hi_tid == h) return i + 1;
    return -1;
}
int main(int argc, char **argv) {
    int i, n, na, st[3], tids[8], t2[2], cc, nt, v, exits = 0;
    struct pvmtaskinfo *ti;
    char *kid[] = { "child", 0 };
    if (argc > 1 && !strcmp(argv[1], "child")) {
        pvm_mytid();
        pvm_recv(pvm_parent(), 8);
        pvm_exit();
        return 0;
    }
    pvm_mytid();
    pvm_setopt(PvmAutoErr, 0);
    cc = pvm_addhosts(argv + 1, 3, st);
    printf("addhosts %d:%s%s%s\n", cc, st[0] > 0 ? " ok" : " err", st[1] > 0 ? " ok" : " err", st[2] > 0 ? " ok" : " err");
    cc = pvm_config(&nh, &na, &hi);
    printf("config %d: %d hosts, %d arch\n", cc, nh, na);
    n = pvm_spawn(argv[0], kid, PvmTaskDefault, "", 8, tids);
    printf("spawned %d:", n);
    for (i = 0; i < 8; i++) printf(" h%d", tids[i] > 0 ? hidx(tids[i]) : tids[i]);
    printf("\n");
    cc = pvm_tasks(0, &nt, &ti);
    printf("tasks %d: %d listed\n", cc, nt);
    pvm_notify(PvmTaskExit, 9, 8, tids);
    pvm_initsend(PvmDataDefault);
    pvm_mcast(tids, 8, 8);
    for (i = 0; i < 8; i++) {
        struct timeval tv = { 10, 0 };
        if (pvm_trecv(-1, 9, &tv) <= 0) break;
        pvm_upkint(&v, 1, 1);
        exits++;
    }
    printf("exit notifies %d\n", exits);
    n = pvm_spawn(argv[0], kid, PvmTaskHost, argv[2], 2, t2);
    printf("spawned on host 3: %d: h%d h%d\n", n, t2[0] > 0 ? hidx(t2[0]) : t2[0], t2[1] > 0 ? hidx(t2[1]) : t2[1]);
    pvm_initsend(PvmDataDefault);
    pvm_mcast(t2, 2, 8);
    usleep(300000);
    cc = pvm_delhosts(argv + 3, 1, st);
    printf("delhosts %d: %s\n", cc, st[0] >= 0 ? "ok" : "err");
    usleep(500000);
    cc = pvm_config(&nh, &na, &hi);
    printf("config after delete %d: %d hosts\n", cc, nh);
    pvm_exit();
    return 0;
}
"#;

/// srm's "PVMd message is X from tY" and "Host selected" lines, normalised: a pvmd's tid and a
/// host address become the host's number, a task's tid its order of appearance. Task exits on
/// different hosts race, so each run of SM_TASKX lines is compared as a sorted list.
fn srm_messages(out: &str) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    let lines: Vec<String> = out
        .lines()
        .filter(|l| l.starts_with("PVMd message is") || l.starts_with("Host selected"))
        .map(|l| {
            l.split(' ')
                .map(|w| {
                    let hex = w.len() > 1 && w.starts_with('t') && w[1..].chars().all(|c| c.is_ascii_hexdigit());
                    if hex && w.len() == 9 && w.starts_with("t8") {
                        let v = u32::from_str_radix(&w[1..], 16).unwrap_or(0);
                        format!("pvmd{}", (v >> 18) & 0xfff)
                    } else if hex {
                        let i = seen.iter().position(|s| s == w).unwrap_or_else(|| {
                            seen.push(w.to_string());
                            seen.len() - 1
                        });
                        format!("T{i}")
                    } else if w.starts_with("10.") {
                        format!("h{}", w.rsplit('.').next().unwrap_or("?"))
                    } else {
                        w.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let mut out = Vec::new();
    let mut run: Vec<String> = Vec::new();
    for l in lines {
        if l.contains("SM_TASKX") {
            run.push(l);
            continue;
        }
        run.sort();
        out.append(&mut run);
        out.push(l);
    }
    run.sort();
    out.append(&mut run);
    out
}

fn run(legacy: bool, probe: &std::path::Path) -> (String, Vec<String>, String) {
    let c = Cluster::named("sc", if legacy { "srm-l" } else { "srm-o" }, 4);
    let _m = master(&c, legacy, &[2, 3, 4]);
    let mut srm_cmd = c.command(1, &PathBuf::from("stdbuf"));
    srm_cmd.args(["-oL", "/usr/bin/srm.pvm"]).stderr(Stdio::null());
    let mut srm = Proc {
        child: srm_cmd.spawn().expect("start srm"),
        name: "srm".into(),
    };
    let lines = Lines::of(&mut srm);
    assert!(
        lines.wait("SRM registered as Resource Manager", TIMEOUT).is_some(),
        "srm did not register:\n{}\n{}",
        lines.text(),
        c.logs()
    );
    let mut p = c.command(1, probe);
    p.args([&c.host(2).ip, &c.host(3).ip, &c.host(4).ip]);
    let (code, out, err) = Proc {
        child: p.spawn().unwrap(),
        name: "probe".into(),
    }
    .wait(Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(500));
    interop_tests::stop_pid(srm.child.id());
    let _ = srm.child.wait();
    let text = lines.text();
    assert_eq!(code, Some(0), "probe: {out}\n{err}\nsrm:\n{text}\n{}", c.logs());
    (out, srm_messages(&text), format!("srm:\n{text}\n{}", c.logs()))
}

#[test]
fn srm_places_tasks_on_pvmd_rs_as_on_the_legacy_daemon() {
    require_legacy();
    let probe = legacy_program("srm_probe", PROBE);
    let (lout, lmsgs, lctx) = run(true, &probe);
    let (oout, omsgs, octx) = run(false, &probe);
    eprintln!("legacy probe:\n{lout}\nours:\n{oout}");
    // The run must show srm at work, not a trivial agreement.
    assert!(lout.contains("addhosts 3: ok ok ok"), "{lout}\n{lctx}");
    assert!(lout.contains("config 0: 4 hosts"), "{lout}\n{lctx}");
    assert!(lout.contains("spawned 8:"), "{lout}\n{lctx}");
    assert!(lmsgs.iter().any(|m| m.contains("SM_SPAWN")), "{lmsgs:?}");
    assert!(lout.contains("config after delete 0: 3 hosts"), "{lout}\n{lctx}");
    assert!(lmsgs.iter().any(|m| m.contains("SM_HOSTX")), "{lmsgs:?}");
    assert_eq!(oout, lout, "probe output differs\nours: {octx}\nlegacy: {lctx}");
    assert_eq!(omsgs, lmsgs, "srm saw other messages\nours: {octx}\nlegacy: {lctx}");
}
