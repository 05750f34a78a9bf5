//! A one-task checkpoint whose task does not park in time gives up (docs/migration.md §7,
//! `migrate.rs` `ckpt_park_timers`): the worker ignores the park signal and computes without
//! a library call for longer than the limit (`PVMD_CKPT_PARK_LIMIT_MS=1000`, a test switch;
//! 10 s by default). `pvm_checkpoint` must answer an error instead of waiting for the worker,
//! which then meets the pvmd's TC_MARK at its next call, has its TM_PARK refused, carries on
//! connected and answers right; a checkpoint asked while it waits inside the library succeeds.

use interop_tests::shim::{Lib, Vm};
use interop_tests::Kind;
use std::path::PathBuf;

const JOB: &str = r#"
#include <stdio.h>
#include <signal.h>
#include <sys/time.h>
#include "pvm3.h"
static double now(void) { struct timeval t; gettimeofday(&t, 0); return t.tv_sec + t.tv_usec / 1e6; }
int main(int argc, char **argv) {
    int me = pvm_mytid(), parent = pvm_parent(), w, r, v;
    double t0;
    if (parent > 0) {
        volatile unsigned long s = 0;
        signal(SIGUSR2, SIG_IGN); /* after enrolment: the pvmd's park signal is ignored */
        pvm_initsend(PvmDataDefault); pvm_pkint(&me, 1, 1); pvm_send(parent, 1);
        t0 = now();
        while (now() - t0 < 3.0) s++; /* no library call for 3 s */
        printf("worker computed\n"); fflush(stdout);
        for (;;) {
            pvm_recv(parent, 2); pvm_upkint(&v, 1, 1);
            if (v < 0) break;
            v *= 2;
            pvm_initsend(PvmDataDefault); pvm_pkint(&v, 1, 1); pvm_send(parent, 3);
        }
        pvm_exit();
        return 0;
    }
    setvbuf(stdout, 0, _IOLBF, 0);
    pvm_catchout(stdout);
    if (pvm_spawn(argv[0], 0, PvmTaskDefault, "", 1, &w) != 1) { printf("spawn failed\n"); pvm_exit(); return 1; }
    pvm_recv(w, 1);
    t0 = now();
    r = pvm_checkpoint(w, 0);
    printf("checkpoint while computing %d in %.3f s\n", r, now() - t0);
    v = 21; pvm_initsend(PvmDataDefault); pvm_pkint(&v, 1, 1); pvm_send(w, 2);
    pvm_recv(w, 3); pvm_upkint(&v, 1, 1);
    printf("answer %d\n", v);
    t0 = now();
    r = pvm_checkpoint(w, 0); /* the worker waits in pvm_recv: it parks at once */
    printf("checkpoint while waiting %d in %.3f s\n", r, now() - t0);
    v = 50; pvm_initsend(PvmDataDefault); pvm_pkint(&v, 1, 1); pvm_send(w, 2);
    pvm_recv(w, 3); pvm_upkint(&v, 1, 1);
    printf("answer %d\n", v);
    v = -1; pvm_initsend(PvmDataDefault); pvm_pkint(&v, 1, 1); pvm_send(w, 2);
    printf("done\n");
    pvm_exit();
    return 0;
}
"#;

fn build() -> PathBuf {
    interop_tests::build_c_ours("job", JOB)
}

#[test]
fn a_checkpoint_whose_task_does_not_park_in_time_fails_and_the_task_runs_on() {
    let exe = build();
    // The only test of this file: the pvmd started below inherits the switch.
    std::env::set_var("PVMD_CKPT_PARK_LIMIT_MS", "1000");
    let vm = Vm::start(Kind::Ours, "mig-ckpt-limit");
    let (code, out, err) = vm.run(exe.to_str().unwrap(), &[], Lib::Shim, Lib::Shim, None);
    let log = vm.tmp.log();
    assert_eq!(code, Some(0), "{out}\n{err}\nlog:\n{log}");
    let line = |what: &str| {
        out.lines()
            .find(|l| l.contains(what))
            .unwrap_or_else(|| panic!("no {what:?}\n{out}\n{err}\nlog:\n{log}"))
            .to_string()
    };
    // Without the limit the worker parks after its 3 s and this checkpoint succeeds.
    let first = line("checkpoint while computing");
    let cc: i32 = first.split_whitespace().nth(3).and_then(|c| c.parse().ok()).unwrap();
    assert!(cc < 0, "{first}\n{out}\nlog:\n{log}");
    assert!(log.contains("given up: it did not park within 1s"), "{log}");
    // It carried on connected (its late TM_PARK refused), answers right and can be
    // checkpointed again.
    assert!(
        out.contains("answer 42") && out.contains("answer 100"),
        "{out}\nlog:\n{log}"
    );
    let second = line("checkpoint while waiting");
    let cc: i32 = second.split_whitespace().nth(3).and_then(|c| c.parse().ok()).unwrap();
    assert!(cc > 0, "{second}\n{out}\nlog:\n{log}");
    assert!(out.contains("worker computed") && out.contains("done"), "{out}");
    eprintln!("{first}\n{second}");
    for l in log.lines().filter(|l| l.contains("mig: ")) {
        eprintln!("{l}");
    }
}
