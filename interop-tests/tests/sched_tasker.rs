//! Task starts through a tasker (SM_STTASK / SM_TASKX): a tasker task (legacy library,
//! pvm_reg_tasker) starts the processes the pvmd is asked to spawn and reports their exits.
//! `hello.pvm` spawns `hello_other` through it; the greeting arrives, the tasker saw the start,
//! and the pvmd forgets the task once the tasker reports its exit. Same on the legacy daemon and
//! on pvmd-rs.

mod sched_common;

use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use interop_tests::netns::Cluster;
use interop_tests::{stop_pid, Proc, LEGACY_CONSOLE, TIMEOUT};
use sched_common::{legacy_program, master, require_legacy, Lines};

const TASKER: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/wait.h>
#include <pvm3.h>
#define SM_TASKX 0x8004000b
#define SM_STTASK 0x80040011
static int pids[64], tids[64], n;
int main(void) {
    setvbuf(stdout, 0, _IOLBF, 0);
    pvm_mytid();
    pvm_setopt(PvmResvTids, 1);
    if (pvm_reg_tasker() < 0) { printf("reg failed\n"); return 1; }
    printf("tasker registered\n");
    for (;;) {
        struct timeval tv = { 0, 50000 };
        int st, pid, i;
        while ((pid = waitpid(-1, &st, WNOHANG)) > 0)
            for (i = 0; i < n; i++)
                if (pids[i] == pid) {
                    int z = 0;
                    pvm_initsend(PvmDataDefault);
                    pvm_pkint(&tids[i], 1, 1);
                    pvm_pkint(&st, 1, 1);
                    pvm_pkint(&z, 1, 1); pvm_pkint(&z, 1, 1); pvm_pkint(&z, 1, 1); pvm_pkint(&z, 1, 1);
                    pvm_send(0x80000000, SM_TASKX);
                    printf("exit t%x\n", tids[i]);
                    pids[i] = -1;
                }
        if (pvm_trecv(-1, SM_STTASK, &tv) > 0) {
            int tid, flags, ac, ne, k;
            char path[1024], *av[64], *ev[256];
            pvm_upkint(&tid, 1, 1);
            pvm_upkint(&flags, 1, 1);
            pvm_upkstr(path);
            pvm_upkint(&ac, 1, 1);
            for (k = 0; k < ac && k < 63; k++) { av[k] = malloc(1024); pvm_upkstr(av[k]); }
            av[k] = 0;
            pvm_upkint(&ne, 1, 1);
            for (k = 0; k < ne && k < 255; k++) { ev[k] = malloc(4096); pvm_upkstr(ev[k]); }
            ev[k] = 0;
            {
                int inst = -1, total = -1, outof = -1;
                pvm_upkint(&inst, 1, 1);
                pvm_upkint(&total, 1, 1);
                pvm_upkint(&outof, 1, 1);
                printf("info flags %d inst %d hosttotal %d outof %d\n", flags, inst, total, outof);
            }
            printf("start t%x %s\n", tid, strrchr(path, '/') ? strrchr(path, '/') + 1 : path);
            if ((pid = fork()) == 0) {
                for (k = 0; ev[k]; k++) putenv(ev[k]);
                execv(path, av);
                _exit(127);
            }
            if (n < 64) { pids[n] = pid; tids[n] = tid; n++; }
        }
    }
}
"#;

#[test]
fn a_tasker_starts_tasks_on_both_daemons() {
    require_legacy();
    let prog = legacy_program("sched_tasker", TASKER);
    let mut infos_by_daemon: Vec<Vec<String>> = Vec::new();
    for legacy in [true, false] {
        let which = if legacy { "legacy" } else { "pvmd-rs" };
        let c = Cluster::named("sc", if legacy { "tsk-l" } else { "tsk-o" }, 1);
        let mut m = master(&c, legacy, &[]);
        let mut t = Proc {
            child: c.command(1, &prog).spawn().unwrap(),
            name: "tasker".into(),
        };
        let tl = Lines::of(&mut t);
        assert!(tl.wait("tasker registered", TIMEOUT).is_some(), "{}", tl.text());
        let (code, out, err) = Proc {
            child: c.command(1, &PathBuf::from("/usr/bin/hello.pvm")).spawn().unwrap(),
            name: "hello.pvm".into(),
        }
        .wait(TIMEOUT);
        let ctx = format!("{which}: {out}\n{err}\ntasker:\n{}\n{}", tl.text(), c.logs());
        assert_eq!(code, Some(0), "{ctx}");
        assert!(out.contains(": hello, world from"), "{ctx}");
        assert!(tl.wait("exit t", TIMEOUT).is_some(), "{ctx}");
        assert!(tl.text().contains(" hello_other"), "{ctx}");
        // The pvmd forgot the task when the tasker reported its exit.
        let ps = {
            std::thread::sleep(Duration::from_millis(300));
            let mut cmd = c.command(1, &PathBuf::from(LEGACY_CONSOLE));
            cmd.stdin(Stdio::piped());
            let mut ch = cmd.spawn().unwrap();
            ch.stdin.take().unwrap().write_all(b"ps -a\n").unwrap();
            Proc {
                child: ch,
                name: "console".into(),
            }
            .wait(TIMEOUT)
            .1
        };
        assert!(!ps.contains("hello_other"), "{which}: {ps}\n{ctx}");
        // Three at once from the console (which spawns with PvmNoSpawnParent, 64): the flags,
        // the instance of each task and the spawn's size reach the tasker as the legacy pvmd
        // passes them.
        {
            let mut cmd = c.command(1, &PathBuf::from(LEGACY_CONSOLE));
            cmd.stdin(Stdio::piped());
            let mut ch = cmd.spawn().unwrap();
            ch.stdin.take().unwrap().write_all(b"spawn -3 hello_other\n").unwrap();
            Proc {
                child: ch,
                name: "console".into(),
            }
            .wait(TIMEOUT);
        }
        let got3 = c.wait_for(TIMEOUT, || tl.text().matches("info flags").count() >= 4);
        assert!(got3, "{which}: {}", tl.text());
        let mut infos: Vec<String> = tl
            .text()
            .lines()
            .filter(|l| l.starts_with("info "))
            .map(String::from)
            .collect();
        infos.sort();
        infos_by_daemon.push(infos);
        stop_pid(t.child.id());
        let _ = t.child.wait();
        stop_pid(m.child.id());
        let _ = m.child.wait();
    }
    eprintln!("SM_STTASK (legacy, pvmd-rs): {infos_by_daemon:?}");
    assert_eq!(
        infos_by_daemon[0], infos_by_daemon[1],
        "SM_STTASK flags/instance differ"
    );
    // hello.pvm's child (flags 0, 1 of 1) and the console's three (PvmTaskHost, 0..2 of 3).
    assert!(infos_by_daemon[1]
        .iter()
        .any(|l| l.contains("inst 2 hosttotal 3 outof 3")));
}
