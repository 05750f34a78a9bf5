//! pvm_start_pvmd (daemon path: $PVM_ROOT/lib/pvmd, else /usr/bin/pvmd) and PvmAutoErr 0..3,
//! on our library and on the legacy one.

use interop_tests::shim::{shim_dir, Lib};
use interop_tests::{Proc, TmpDir, TIMEOUT};
use std::process::{Command, Stdio};

const PROGRAM: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pvm3.h>
extern int pvm_errno;
int main(int argc, char **argv) {
    int cc;
    if (argc > 1 && !strcmp(argv[1], "start")) {
        cc = pvm_start_pvmd(0, 0, 1);
        printf("start %d\n", cc);
        printf("enrolled %d\n", pvm_mytid() > 0);
        cc = pvm_start_pvmd(0, 0, 1);
        printf("again %d\n", cc);
        fflush(stdout);
        pvm_halt();
        printf("halted\n");
        return 0;
    }
    printf("old %d\n", pvm_setopt(PvmAutoErr, atoi(argv[1])));
    fflush(stdout);
    cc = pvm_freebuf(4242);
    printf("after %d %d\n", cc, pvm_errno);
    return 0;
}
"#;

fn compile() -> std::path::PathBuf {
    interop_tests::build_c("shim_start", PROGRAM, &[])
}

fn run(lib: Lib, args: &[&str], root: &str) -> (Option<i32>, String, Vec<String>) {
    let tmp = TmpDir::new("shim-start");
    let mut c = Command::new(compile());
    c.args(args)
        .env("PVM_TMP", tmp.path())
        .env("PVM_ALLOW_ROOT", "1")
        .env("PVM_ROOT", root)
        .env_remove("PVMSOCK")
        .env_remove("PVM_EXPORT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match lib {
        Lib::Shim => c.env("LD_LIBRARY_PATH", shim_dir()),
        Lib::Legacy => c.env_remove("LD_LIBRARY_PATH"),
    };
    let (code, out, err) = Proc {
        child: c.spawn().expect("run start program"),
        name: "start".into(),
    }
    .wait(TIMEOUT);
    // Error reports only (legacy also logs each failed connect attempt).
    let errs = err
        .lines()
        .filter(|l| l.contains("(): "))
        .map(|l| l.split_once("]: ").map(|x| x.1).unwrap_or(l).to_string())
        .collect();
    (code, out, errs)
}

#[test]
fn start_pvmd_then_halt_same_as_legacy() {
    let l = run(Lib::Legacy, &["start"], "/usr/lib/pvm3");
    // The halting pvmd terminates its local tasks, the caller included.
    assert_eq!(l.1, "start 0\nenrolled 1\nagain -28\n", "{l:?}");
    let s = run(Lib::Shim, &["start"], "/usr/lib/pvm3");
    assert_eq!(s, l);
    // Without $PVM_ROOT/lib/pvmd our library falls back to /usr/bin/pvmd.
    let f = run(Lib::Shim, &["start"], "/nonexistent-pvm-root");
    assert_eq!(f, l);
}

#[test]
fn autoerr_levels_same_as_legacy() {
    for level in ["0", "1", "2", "3"] {
        let l = run(Lib::Legacy, &[level], "/usr/lib/pvm3");
        let s = run(Lib::Shim, &[level], "/usr/lib/pvm3");
        assert_eq!(s, l, "PvmAutoErr {level}");
    }
}
