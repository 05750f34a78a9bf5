//! Hoster-driven host adds (SM_STHOST / SM_STHOSTACK): a hoster task (legacy library,
//! pvm_reg_hoster) starts the slave pvmds the master asks for, through the rsh stand-in, and
//! returns their ddpro lines. Same run on the legacy master and on ours; and on ours, a hoster
//! that dies mid-add makes the add fail instead of hanging the master (the legacy daemon
//! would wait forever).

mod sched_common;

use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use interop_tests::netns::Cluster;
use interop_tests::{send_signal, stop_pid, Proc, LEGACY_CONSOLE, TIMEOUT};
use sched_common::{legacy_program, master, require_legacy, Lines};

/// With an argument "die", exits on the first request without answering.
const HOSTER: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pvm3.h>
#define SM_STHOST 0x8004000f
#define SM_STHOSTACK 0x80040010
int main(int argc, char **argv) {
    static char results[16][512];
    int tids[16];
    setvbuf(stdout, 0, _IOLBF, 0);
    pvm_mytid();
    pvm_setopt(PvmResvTids, 1);
    if (pvm_reg_hoster() < 0) { printf("reg failed\n"); return 1; }
    printf("hoster registered\n");
    for (;;) {
        struct pvmminfo mi, so;
        int b = pvm_recv(-1, SM_STHOST), n = 0, i;
        pvm_getminfo(b, &mi);
        pvm_upkint(&n, 1, 1);
        if (argc > 1) { printf("dying\n"); pvm_exit(); return 0; }
        for (i = 0; i < n && i < 16; i++) {
            char sopts[256], host[256], cmd[2048], win[2048], vmid[256], line[4096];
            FILE *f;
            pvm_upkint(&tids[i], 1, 1);
            pvm_upkstr(sopts); pvm_upkstr(host); pvm_upkstr(cmd); pvm_upkstr(win); pvm_upkstr(vmid);
            printf("starting %s\n", host);
            snprintf(line, sizeof line, "%s %s '%s'", getenv("PVM_RSH"), host, cmd);
            f = popen(line, "r");
            results[i][0] = 0;
            while (f && fgets(results[i], sizeof results[i], f))
                if (!strncmp(results[i], "ddpro", 5)) break; else results[i][0] = 0;
            results[i][strcspn(results[i], "\n")] = 0;
            if (!results[i][0]) strcpy(results[i], "PvmCantStart");
        }
        pvm_initsend(PvmDataDefault);
        if (n > 16) n = 16;
        pvm_pkint(&n, 1, 1);
        for (i = 0; i < n; i++) { pvm_pkint(&tids[i], 1, 1); pvm_pkstr(results[i]); }
        pvm_getminfo(pvm_getsbuf(), &so);
        so.wid = mi.wid;
        pvm_setminfo(pvm_getsbuf(), &so);
        pvm_send(0x80000000, SM_STHOSTACK);
        printf("answered %d\n", n);
    }
}
"#;

fn console(c: &Cluster, input: &str) -> String {
    let mut cmd = c.command(1, &PathBuf::from(LEGACY_CONSOLE));
    cmd.stdin(Stdio::piped());
    let mut ch = cmd.spawn().unwrap();
    ch.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let (_, out, _) = Proc {
        child: ch,
        name: "console".into(),
    }
    .wait(Duration::from_secs(40));
    out
}

fn start_hoster(c: &Cluster, prog: &std::path::Path, die: bool) -> (Proc, Lines) {
    let mut cmd = c.command(1, prog);
    if die {
        cmd.arg("die");
    }
    let mut p = Proc {
        child: cmd.spawn().unwrap(),
        name: "hoster".into(),
    };
    let l = Lines::of(&mut p);
    assert!(
        l.wait("hoster registered", TIMEOUT).is_some(),
        "{}\n{}",
        l.text(),
        c.logs()
    );
    (p, l)
}

#[test]
fn a_hoster_starts_the_slaves_on_both_daemons() {
    require_legacy();
    let prog = legacy_program("sched_hoster", HOSTER);
    for legacy in [true, false] {
        let c = Cluster::named("sc", if legacy { "hst-l" } else { "hst-o" }, 3);
        let mut m = master(&c, legacy, &[2, 3]);
        let (mut h, hl) = start_hoster(&c, &prog, false);
        let out = console(&c, &format!("add {} {}\nconf\n", c.host(2).ip, c.host(3).ip));
        let which = if legacy { "legacy" } else { "pvmd-rs" };
        assert!(
            out.contains("2 successful"),
            "{which}: {out}\nhoster:\n{}\n{}",
            hl.text(),
            c.logs()
        );
        assert!(out.contains("3 hosts"), "{which}: {out}");
        assert!(hl.wait("answered 2", TIMEOUT).is_some(), "{which}: {}", hl.text());
        for k in [2, 3] {
            assert!(
                hl.text().contains(&format!("starting {}", c.host(k).ip)),
                "{}",
                hl.text()
            );
        }
        if !legacy {
            assert!(c.log(1).contains("addhosts() hoster t"), "{}", c.log(1));
        }
        stop_pid(h.child.id());
        let _ = h.child.wait();
        stop_pid(m.child.id());
        let _ = m.child.wait();
    }
}

#[test]
fn a_hoster_that_dies_fails_the_add_instead_of_hanging() {
    require_legacy();
    let prog = legacy_program("sched_hoster_die", HOSTER);
    let c = Cluster::named("sc", "hst-d", 2);
    let mut m = master(&c, false, &[2]);
    let (mut h, hl) = start_hoster(&c, &prog, true);
    let out = console(&c, &format!("add {}\n", c.host(2).ip));
    assert!(
        out.contains("0 successful"),
        "{out}\nhoster:\n{}\n{}",
        hl.text(),
        c.logs()
    );
    assert!(
        c.log(1).contains("hoster t") && c.log(1).contains("exited"),
        "{}",
        c.log(1)
    );
    // The master is not stuck: the next add (no hoster now) works by rsh.
    let _ = h.child.wait();
    let out = console(&c, &format!("add {}\n", c.host(2).ip));
    assert!(out.contains("1 successful"), "{out}\n{}", c.logs());
    send_signal(m.child.id(), libc::SIGTERM);
    let _ = m.child.wait();
}
