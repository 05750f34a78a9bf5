//! One-task checkpoint that leaves the task running (docs/migration.md §4): the pvmd asks the
//! task to park (TC_MARK), the task's library reaches its safe point, answers TM_PARK and
//! closes its socket; the pvmd holds messages for it, runs `criu dump -R`, writes the resume
//! ticket; the task reconnects as the same tid and gets the held messages in order.

use interop_tests::shim::{shim_dir, Lib, Vm};
use interop_tests::Kind;
use std::path::PathBuf;
use std::process::Command;

/// The master streams numbered messages to a worker that answers each with a running sum
/// and its tid; the master checks every answer and checkpoints the worker several times while
/// the stream runs. The worker prints progress (caught by the master: output continues).
const JOB: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <sys/time.h>
#include "pvm3.h"
static double now(void) { struct timeval t; gettimeofday(&t, 0); return t.tv_sec + t.tv_usec / 1e6; }
int main(int argc, char **argv) {
    int me = pvm_mytid(), parent = pvm_parent(), i, n = 3000, w, v, who, bad = 0;
    long sum = 0, got;
    if (parent > 0) {
        for (;;) {
            pvm_recv(parent, 1);
            pvm_upkint(&v, 1, 1);
            if (v < 0) break;
            sum += v;
            pvm_initsend(PvmDataDefault);
            pvm_pklong(&sum, 1, 1);
            pvm_pkint(&me, 1, 1);
            pvm_send(parent, 2);
            if (v % 1000 == 0) { printf("worker at %d\n", v); fflush(stdout); }
        }
        pvm_exit();
        return 0;
    }
    pvm_catchout(stdout);
    if (pvm_spawn(argv[0], 0, PvmTaskDefault, "", 1, &w) != 1) { printf("spawn failed %d\n", w); pvm_exit(); return 1; }
    for (i = 1; i <= n; i++) {
        pvm_initsend(PvmDataDefault);
        pvm_pkint(&i, 1, 1);
        pvm_send(w, 1);
        if (i % 700 == 0) {
            double t0 = now();
            int e = pvm_checkpoint(w, 0);
            printf("checkpoint epoch %d %.3f\n", e, now() - t0);
            fflush(stdout);
        }
        pvm_recv(w, 2);
        pvm_upklong(&got, 1, 1);
        pvm_upkint(&who, 1, 1);
        sum += i;
        if (got != sum || who != w) bad++;
    }
    i = -1;
    pvm_initsend(PvmDataDefault);
    pvm_pkint(&i, 1, 1);
    pvm_send(w, 1);
    printf("done bad %d\n", bad);
    fflush(stdout);
    pvm_exit();
    return 0;
}
"#;

fn build() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mig-ckpt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let c = dir.join("job.c");
    std::fs::write(&c, JOB).unwrap();
    let exe = dir.join("job");
    let inc = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../include");
    let out = Command::new("gcc")
        .arg("-o")
        .arg(&exe)
        .arg(&c)
        .arg("-I")
        .arg(inc)
        .arg("-L")
        .arg(shim_dir())
        .arg("-l:libpvm3.so.3")
        .output()
        .expect("gcc is required");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    exe
}

#[test]
fn checkpointed_worker_keeps_its_tid_messages_and_output() {
    let exe = build();
    let vm = Vm::start(Kind::Ours, "mig-ckpt");
    let (code, out, err) = vm.run(exe.to_str().unwrap(), &[], Lib::Shim, Lib::Shim, None);
    let log = vm.tmp.log();
    assert_eq!(code, Some(0), "{out}\n{err}\nlog:\n{log}");
    assert!(out.contains("done bad 0"), "{out}\n{err}\nlog:\n{log}");
    let epochs: Vec<&str> = out.lines().filter(|l| l.starts_with("checkpoint epoch")).collect();
    assert_eq!(epochs.len(), 4, "{out}\nlog:\n{log}");
    for (k, l) in epochs.iter().enumerate() {
        assert!(
            l.starts_with(&format!("checkpoint epoch {} ", k + 1)),
            "{l}\n{out}\nlog:\n{log}"
        );
    }
    for k in 1..=3 {
        assert!(out.contains(&format!("worker at {}", k * 1000)), "output lost:\n{out}");
    }
    assert_eq!(log.matches("checkpoint epoch").count(), 4, "{log}");
    eprintln!("{}", epochs.join("\n"));
    for l in log.lines().filter(|l| l.contains("mig: ")) {
        eprintln!("{l}");
    }
}
