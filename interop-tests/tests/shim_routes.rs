//! Direct task-task routes (PvmRouteDirect) between a task on our library and one on the legacy
//! library, in both directions and both roles, through the legacy daemon.

use interop_tests::shim::{Lib, Vm};
use interop_tests::Kind;
use std::io::Write;

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
    interop_tests::build_c("route", PROGRAM, &[])
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

// ---- across hosts: TCP routes between two namespace hosts, and multicast over routes ---------

use interop_tests::netns::Cluster;
use interop_tests::shim::{shim_dir, LDSO, LEGACY_LIB_DIR};
use interop_tests::{our_pvmd, Proc, LEGACY_PVMD, TIMEOUT};
use std::path::PathBuf;
use std::process::Stdio;

/// The parent (host 1) spawns `n` copies of itself on the host named in argv[2]; it and its
/// children set PvmRouteDirect, so each parent-child pair opens a route (TCP across hosts).
/// Messages of several sizes and encodings go both ways over each route, then the parent
/// multicasts to all children (which answer with a checksum), and everyone counts its sockets.
const NET_PROGRAM: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pvm3.h>
#define N 3
static int big[60000], got[60000];
int main(int argc, char **argv) {
    int me = pvm_mytid(), parent = pvm_parent(), tids[N], i, k, n, enc, len, sum, *fds;
    int rounds = 0, cnt[3] = {0, 0, 0}, s41 = 0;
    static char order[256];
    (void)me;
    pvm_setopt(PvmRoute, PvmRouteDirect);
    for (i = 0; i < 60000; i++)
        big[i] = i * 3 + 1;
    if (parent < 0) {
        int nk = atoi(argv[1]);
        char *args[] = { "child", 0 };
        if (pvm_spawn(argv[0], args, PvmTaskHost, argv[2], nk, tids) != nk) {
            printf("spawn failed %d\n", tids[0]);
            pvm_exit();
            return 1;
        }
        for (k = 0; k < nk; k++) {
            for (enc = 0; enc < 3; enc++)
                for (n = 1; n <= 60000; n *= 15) {
                    pvm_initsend(enc);
                    pvm_pkint(&n, 1, 1);
                    pvm_pkint(big, n, 1);
                    pvm_send(tids[k], 10 + enc);
                    pvm_recv(tids[k], 20 + enc);
                    pvm_upkint(&len, 1, 1);
                    pvm_upkint(got, len, 1);
                    printf("child %d enc %d n %d back %d last %d\n", k, enc, n, len, got[len - 1]);
                }
        }
        for (n = 1; n <= 60000; n *= 60) {
            pvm_initsend(PvmDataDefault);
            pvm_pkint(&n, 1, 1);
            pvm_pkint(big, n, 1);
            pvm_mcast(tids, nk, 30);
            for (k = 0; k < nk; k++) {
                pvm_recv(tids[k], 31);
                pvm_upkint(&sum, 1, 1);
                printf("mcast n %d child %d sum %d\n", n, k, sum);
            }
        }
        /* A routed message, a multicast, a routed message, five times, without waiting. */
        for (i = 0; i < 5; i++) {
            for (k = 0; k < nk; k++) {
                pvm_initsend(PvmDataDefault);
                n = 1;
                pvm_pkint(&n, 1, 1);
                pvm_pkint(big, 1, 1);
                pvm_send(tids[k], 40);
            }
            pvm_initsend(PvmDataDefault);
            n = 2000;
            pvm_pkint(&n, 1, 1);
            pvm_pkint(big, n, 1);
            pvm_mcast(tids, nk, 41);
            for (k = 0; k < nk; k++) {
                pvm_initsend(PvmDataDefault);
                n = 1;
                pvm_pkint(&n, 1, 1);
                pvm_pkint(big, 1, 1);
                pvm_send(tids[k], 42);
            }
        }
        for (k = 0; k < nk; k++) {
            pvm_recv(tids[k], 43);
            pvm_upkstr(order);
            printf("order child %d %s\n", k, order);
        }
        printf("parent fds %d\n", pvm_getfds(&fds));
        for (k = 0; k < nk; k++) {
            pvm_initsend(PvmDataDefault);
            pvm_send(tids[k], 99);
        }
        for (k = 0; k < nk; k++)
            pvm_recv(tids[k], 100);
    } else {
        for (;;) {
            int bufid = pvm_recv(parent, -1), tag;
            pvm_bufinfo(bufid, &len, &tag, 0);
            if (tag == 99)
                break;
            pvm_upkint(&n, 1, 1);
            pvm_upkint(got, n, 1);
            if (tag >= 40 && tag <= 42) {
                /* Legacy sends a multicast through the pvmds even when routes are open, so it
                   may come after later routed messages: only the counts are compared. */
                cnt[tag - 40]++;
                if (tag == 41)
                    s41 += got[n - 1];
                if (++rounds == 15) {
                    sprintf(order, "40:%d 41:%d 42:%d s41 %d", cnt[0], cnt[1], cnt[2], s41);
                    pvm_initsend(PvmDataDefault);
                    pvm_pkstr(order);
                    pvm_send(parent, 43);
                }
                continue;
            }
            if (tag == 30) {
                for (sum = 0, i = 0; i < n; i++)
                    sum += got[i];
                pvm_initsend(PvmDataDefault);
                pvm_pkint(&sum, 1, 1);
                pvm_send(parent, 31);
                continue;
            }
            pvm_initsend(tag - 10);
            n = n / 2 + 1;
            pvm_pkint(&n, 1, 1);
            pvm_pkint(got, n, 1);
            pvm_send(parent, tag + 10);
        }
        printf("child fds %d\n", pvm_getfds(&fds));
        fflush(stdout);
        pvm_initsend(PvmDataDefault);
        pvm_send(parent, 100);
    }
    pvm_exit();
    return 0;
}
"#;

fn compile_net() -> std::path::PathBuf {
    interop_tests::build_c("netroute", NET_PROGRAM, &[])
}

/// A two-host machine: the master (legacy or ours) on h1 with h2 added as its slave.
fn two_hosts(kind: Kind) -> (Cluster, Proc) {
    let c = Cluster::named("lb", "lbroute", 2);
    let bin = match kind {
        Kind::Legacy => PathBuf::from(LEGACY_PVMD),
        Kind::Ours => our_pvmd(),
    };
    let hf = c.dir.path().join("hostfile");
    let h2 = c.host(2).ip.clone();
    std::fs::write(&hf, format!("{} \n{h2} dx={}\n", c.host(1).ip, bin.display())).unwrap();
    let mut cmd = c.command(1, &bin);
    cmd.arg(format!("-n{}", c.host(1).ip)).arg(&hf).stderr(Stdio::null());
    let mut p = Proc {
        child: cmd.spawn().expect("start master pvmd"),
        name: format!("{kind:?} master"),
    };
    let line = p.read_line(TIMEOUT);
    assert!(line.starts_with('/'), "master printed {line:?}");
    assert!(
        c.wait_for(std::time::Duration::from_secs(15), || !c.pids(2).is_empty()),
        "no slave in h2\n{}",
        c.logs()
    );
    // The slave process exists before the master has added it: wait until the master's
    // console lists both hosts (a fixed pause lost that race on a loaded machine).
    let two = || {
        let mut cmd = c.command(1, std::path::Path::new("/usr/bin/pvm"));
        cmd.stdin(Stdio::piped());
        let mut child = cmd.spawn().expect("start the legacy console");
        let _ = child.stdin.take().unwrap().write_all(b"conf\n");
        let (_, out, _) = Proc {
            child,
            name: "console".into(),
        }
        .wait(TIMEOUT);
        out.contains("2 hosts")
    };
    assert!(
        c.wait_for(std::time::Duration::from_secs(20), two),
        "h2 never joined\n{}",
        c.logs()
    );
    (c, p)
}

/// Runs the program in h1 with `me`'s library, its children (on h2) with `children`'s; returns
/// the sorted lines of the parent and of the children (from the pvmd logs).
fn net_run(kind: Kind, me: Lib, children: Lib, nk: usize) -> Vec<String> {
    let (c, _master) = two_hosts(kind);
    let exe = compile_net();
    let shim = shim_dir();
    let mut cmd = match me {
        Lib::Shim => c.command(1, &exe),
        Lib::Legacy => {
            let mut cmd = c.command(1, std::path::Path::new(LDSO));
            cmd.arg("--library-path").arg(LEGACY_LIB_DIR).arg(&exe);
            cmd
        }
    };
    cmd.arg(nk.to_string()).arg(&c.host(2).ip);
    let trace = c.dir.path().join("shim-trace");
    cmd.env("PVM_SHIM_TRACE", &trace);
    match (me, children) {
        (_, Lib::Shim) => {
            cmd.env("LD_LIBRARY_PATH", &shim)
                .env("PVM_EXPORT", "LD_LIBRARY_PATH:PVM_SHIM_TRACE");
        }
        (Lib::Shim, Lib::Legacy) => {
            cmd.env("LD_LIBRARY_PATH", &shim).env_remove("PVM_EXPORT");
        }
        (Lib::Legacy, Lib::Legacy) => {
            cmd.env_remove("LD_LIBRARY_PATH").env_remove("PVM_EXPORT");
        }
    }
    let (code, out, err) = Proc {
        child: cmd.spawn().expect("run netroute"),
        name: "netroute".into(),
    }
    .wait(std::time::Duration::from_secs(60));
    assert_eq!(
        code,
        Some(0),
        "{me:?}/{children:?} on {kind:?}: {out}\n{err}\n{}",
        c.logs()
    );
    let mut lines: Vec<String> = out.lines().map(str::to_string).collect();
    // The children's output reaches the log of a pvmd (the parent's host's, in legacy).
    let logs = || c.log(1) + &c.log(2);
    assert!(
        c.wait_for(std::time::Duration::from_secs(10), || logs()
            .matches("] child fds")
            .count()
            >= nk),
        "children's output missing\n{}",
        c.logs()
    );
    for l in logs().lines() {
        if let Some(i) = l.find("] child fds") {
            lines.push(l[i + 2..].to_string());
        }
    }
    let shims = std::fs::read_to_string(&trace).unwrap_or_default().lines().count();
    let want_shims = match (me, children) {
        (Lib::Legacy, Lib::Legacy) => 0,
        (Lib::Shim, Lib::Legacy) => 1,
        (Lib::Legacy, Lib::Shim) => nk,
        (Lib::Shim, Lib::Shim) => nk + 1,
    };
    assert_eq!(shims, want_shims, "tasks on our library\n{}", c.logs());
    lines.sort();
    lines
}

fn net_check(kind: Kind, me: Lib, children: Lib) {
    let nk = 2;
    let want = net_run(kind, Lib::Legacy, Lib::Legacy, nk);
    // The legacy tasks made the routes: the parent has the pvmd and one per child.
    assert!(
        want.contains(&format!("parent fds {}", nk + 1)),
        "legacy made no routes: {want:#?}"
    );
    assert!(want.contains(&"child fds 2".to_string()), "{want:#?}");
    let got = net_run(kind, me, children, nk);
    assert_eq!(
        got, want,
        "{me:?} parent, {children:?} children across hosts on {kind:?}"
    );
}

#[test]
fn lb_net_route_shim_to_shim() {
    net_check(Kind::Legacy, Lib::Shim, Lib::Shim);
}

#[test]
fn lb_net_route_shim_parent_legacy_children() {
    net_check(Kind::Legacy, Lib::Shim, Lib::Legacy);
}

#[test]
fn lb_net_route_legacy_parent_shim_children() {
    net_check(Kind::Legacy, Lib::Legacy, Lib::Shim);
}

#[test]
fn lb_net_route_shim_to_shim_on_pvmd_rs() {
    net_check(Kind::Ours, Lib::Shim, Lib::Shim);
}

/// Messages over 16 MiB (the pvm-proto default reassembly limit, which our library used to
/// apply and then drop the message, hanging the receiver), through the pvmd and over a route.
const BIG_PROGRAM: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <pvm3.h>
#define BIG (20 << 20)
int main(int argc, char **argv) {
    int parent = pvm_parent(), peer, route, i, n;
    unsigned char *b = malloc(BIG);
    unsigned long sum;
    for (route = 0; route < 2; route++) {
        if (parent < 0) {
            if (route == 0 && pvm_spawn(argv[0], 0, PvmTaskDefault, "", 1, &peer) != 1) {
                printf("spawn failed\n");
                pvm_exit();
                return 1;
            }
            pvm_setopt(PvmRoute, route ? PvmRouteDirect : PvmDontRoute);
            for (i = 0; i < BIG; i++)
                b[i] = (unsigned char)(i * 7 + route);
            pvm_initsend(PvmDataRaw);
            n = BIG;
            pvm_pkint(&n, 1, 1);
            pvm_pkbyte((char *)b, n, 1);
            pvm_send(peer, 1);
            pvm_recv(peer, 2);
            pvm_upkulong(&sum, 1, 1);
            printf("route %d sum %lu\n", route, sum);
        } else {
            pvm_recv(parent, 1);
            pvm_upkint(&n, 1, 1);
            pvm_upkbyte((char *)b, n, 1);
            for (sum = 0, i = 0; i < n; i++)
                sum += b[i];
            pvm_initsend(PvmDataDefault);
            pvm_pkulong(&sum, 1, 1);
            pvm_send(parent, 2);
        }
    }
    pvm_exit();
    return 0;
}
"#;

#[test]
fn lb_messages_over_16_mib_through_pvmd_and_route() {
    let exe = interop_tests::build_c("lb-big", BIG_PROGRAM, &[]);
    let mut outs = Vec::new();
    for lib in [Lib::Legacy, Lib::Shim] {
        let vm = Vm::start(Kind::Legacy, "lb-big");
        let (code, out, err) = vm.run(exe.to_str().unwrap(), &[], lib, lib, None);
        assert_eq!(code, Some(0), "{lib:?}: {out}\n{err}\n{}", vm.tmp.log());
        assert_eq!(vm.shim_tasks().len(), if lib == Lib::Shim { 2 } else { 0 });
        outs.push(out);
    }
    assert_eq!(outs[0].lines().count(), 2, "{}", outs[0]);
    assert_eq!(outs[0], outs[1], "legacy vs ours");
}
