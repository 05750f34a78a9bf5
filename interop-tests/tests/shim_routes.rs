//! Direct task-task routes (PvmRouteDirect) between a task on our library and one on the legacy
//! library, in both directions and both roles, through the legacy daemon.

use interop_tests::shim::{Lib, Vm};
use interop_tests::Kind;
use std::process::Command;

/// The parent spawns itself as a child; whichever side asks (argv "parent-asks" or
/// "child-asks") sets PvmRouteDirect and sends first. Both then exchange messages of several
/// sizes and encodings and print what they got, and how many sockets they use (2 = pvmd and
/// a direct route).
const PROGRAM: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pvm3.h>
static void show(const char *who) {
    int *fds;
    int n = pvm_getfds(&fds);
    printf("%s fds %d\n", who, n);
    fflush(stdout);
}
int main(int argc, char **argv) {
    int me = pvm_mytid(), parent = pvm_parent(), peer, i, n, len, enc;
    int asks_parent = argc > 1 && !strcmp(argv[1], "parent-asks");
    int parent_side = parent < 0;
    int asker = parent_side == asks_parent;
    const char *who = parent_side ? "parent" : "child";
    static int big[50000], got[50000];
    char s[32];
    (void)me;
    if (parent_side) {
        char *args[] = { argv[1], 0 };
        if (pvm_spawn(argv[0], args, PvmTaskDefault, "", 1, &peer) != 1) {
            printf("spawn failed %d\n", peer);
            pvm_exit();
            return 1;
        }
    } else
        peer = parent;
    if (asker) {
        pvm_setopt(PvmRoute, PvmRouteDirect);
        pvm_recv(peer, 1);
    } else {
        pvm_initsend(PvmDataDefault);
        pvm_send(peer, 1);
    }
    for (i = 0; i < 50000; i++)
        big[i] = i * 7 + parent_side;
    for (enc = 0; enc < 3; enc++) {
        for (n = 1; n <= 50000; n *= 10) {
            if (!asker)
                pvm_recv(peer, 10 + enc);
            else {
                pvm_initsend(enc);
                pvm_pkint(big, n, 1);
                if (enc != 2)
                    pvm_pkstr("route");
                pvm_send(peer, 10 + enc);
                pvm_recv(peer, 10 + enc);
            }
            pvm_upkint(got, n, 1);
            strcpy(s, "-");
            if (enc != 2)
                pvm_upkstr(s);
            pvm_bufinfo(pvm_getrbuf(), &len, 0, 0);
            printf("%s enc %d n %d last %d str %s len %d\n", who, enc, n, got[n - 1], s, len);
            fflush(stdout);
            if (!asker) {
                pvm_initsend(enc);
                pvm_pkint(big, n, 1);
                if (enc != 2)
                    pvm_pkstr("back");
                pvm_send(peer, 10 + enc);
            }
        }
    }
    /* Both count their sockets before either may leave (an exit closes the route). */
    show(who);
    if (parent_side) {
        pvm_initsend(PvmDataDefault);
        pvm_send(peer, 98);
        pvm_recv(peer, 99);
    } else {
        pvm_recv(peer, 98);
        pvm_initsend(PvmDataDefault);
        pvm_send(peer, 99);
    }
    pvm_exit();
    return 0;
}
"#;

fn compile() -> std::path::PathBuf {
    static EXE: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    EXE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("shim-route-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let c = dir.join("route.c");
        std::fs::write(&c, PROGRAM).unwrap();
        let exe = dir.join("route");
        let out = Command::new("gcc")
            .arg("-o")
            .arg(&exe)
            .arg(&c)
            .arg("-lpvm3")
            .output()
            .expect("gcc is required");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        exe
    })
    .clone()
}

/// Runs the pair; returns the parent's stdout (with the child's lines, caught by the daemon
/// into its log, appended), sorted, and the programs that ran on our library.
fn pair_on(kind: Kind, me: Lib, child: Lib, mode: &str) -> (Vec<String>, String, usize) {
    let vm = Vm::start(kind, "shim-route");
    let exe = compile();
    let (code, out, err) = vm.run(exe.to_str().unwrap(), &[mode], me, child, None);
    assert_eq!(
        code,
        Some(0),
        "{me:?}/{child:?} {mode}: {out}\n{err}\nlog:\n{}",
        vm.tmp.log()
    );
    let log = vm.tmp.log();
    let mut lines: Vec<String> = out.lines().map(str::to_string).collect();
    for l in log.lines() {
        if let Some(i) = l.find("] child ") {
            lines.push(l[i + 2..].to_string());
        }
    }
    lines.sort();
    (lines, err, vm.shim_tasks().len())
}

fn pair(me: Lib, child: Lib, mode: &str) -> (Vec<String>, String, usize) {
    pair_on(Kind::Legacy, me, child, mode)
}

fn check(me: Lib, child: Lib, mode: &str) {
    let (want, _, _) = pair(Lib::Legacy, Lib::Legacy, mode);
    assert!(
        want.contains(&"parent fds 2".to_string()),
        "legacy pair made no route: {want:#?}"
    );
    assert!(
        want.contains(&"child fds 2".to_string()),
        "legacy pair made no route: {want:#?}"
    );
    let (got, err, shims) = pair(me, child, mode);
    if std::env::var_os("SHIM_ROUTE_SHOW").is_some() {
        eprintln!("{got:#?}");
    }
    assert_eq!(got, want, "{me:?} parent, {child:?} child, {mode}\n{err}");
    let expect_shims = [me, child].iter().filter(|&&l| l == Lib::Shim).count();
    assert_eq!(shims, expect_shims);
}

#[test]
fn shim_requests_route_to_legacy() {
    check(Lib::Shim, Lib::Legacy, "parent-asks");
}

#[test]
fn legacy_requests_route_to_shim() {
    check(Lib::Legacy, Lib::Shim, "parent-asks");
}

#[test]
fn shim_accepts_route_from_legacy() {
    check(Lib::Shim, Lib::Legacy, "child-asks");
}

#[test]
fn shim_to_shim_route() {
    check(Lib::Shim, Lib::Shim, "parent-asks");
}

/// The negotiation travels through pvmd-rs as ordinary task-to-task messages.
#[test]
fn routes_through_our_daemon() {
    for (me, child, mode) in [
        (Lib::Shim, Lib::Legacy, "parent-asks"),
        (Lib::Legacy, Lib::Shim, "parent-asks"),
        (Lib::Shim, Lib::Shim, "child-asks"),
    ] {
        let (want, _, _) = pair_on(Kind::Ours, Lib::Legacy, Lib::Legacy, mode);
        assert!(want.contains(&"parent fds 2".to_string()), "{want:#?}");
        let (got, err, _) = pair_on(Kind::Ours, me, child, mode);
        assert_eq!(got, want, "{me:?}/{child:?} {mode} on pvmd-rs\n{err}");
    }
}
