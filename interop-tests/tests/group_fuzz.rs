//! The group calls against the legacy implementation: random sequences of pvm_joingroup,
//! pvm_lvgroup, pvm_getinst, pvm_gettid, pvm_gsize, pvm_barrier, pvm_bcast, pvm_freezegroup,
//! pvm_reduce, pvm_gather and pvm_scatter over a few groups (and a bad name), by one task and a
//! child that joins and leaves groups when told to. Every return code, pvm_errno, the value
//! reduced and gathered, and what the library printed are compared with the run of the legacy
//! group library, group server, libpvm3 and pvmd; then with our group library and server on
//! the legacy pvmd, the legacy ones on pvmd-rs, and everything of ours.

use std::path::{Path, PathBuf};

use interop_tests::flib::{cc_group, normalise, pvmgs, Flavour, Vm};
use interop_tests::shim::{shim_dir, FUZZ_C_PRELUDE};
use interop_tests::Kind;

const BODY: &str = r#"
static const char *names[4] = { "g0", "g1", "g2", "" };
static int kid;
/* Tells the child to join (1) or leave (2) group g and waits until it has. */
static void kid_does(int what, int g)
{
    int rc;
    pvm_initsend(PvmDataDefault);
    pvm_pkint(&what, 1, 1);
    pvm_pkint(&g, 1, 1);
    pvm_send(kid, 1);
    pvm_recv(kid, 2);
    pvm_upkint(&rc, 1, 1);
    printf(" kid %s %s -> %d", what == 1 ? "join" : "leave", names[g], rc);
}
static void child(void)
{
    int what, g, rc;
    for (;;) {
        pvm_recv(pvm_parent(), 1);
        pvm_upkint(&what, 1, 1);
        if (what == 0)
            break;
        pvm_upkint(&g, 1, 1);
        rc = what == 1 ? pvm_joingroup(names[g]) : pvm_lvgroup(names[g]);
        pvm_initsend(PvmDataDefault);
        pvm_pkint(&rc, 1, 1);
        pvm_send(pvm_parent(), 2);
    }
    pvm_exit();
}
int main(int argc, char **argv)
{
    int seeds, calls, seed, i, me;
    if (argc > 1 && !strcmp(argv[1], "child")) {
        child();
        return 0;
    }
    seeds = argc > 1 ? atoi(argv[1]) : 10;
    calls = argc > 2 ? atoi(argv[2]) : 60;
    me = pvm_mytid();
    for (seed = 1; seed <= seeds; seed++) {
        int in[4] = { 0, 0, 0, 0 }, kin[4] = { 0, 0, 0, 0 }, frozen[4] = { 0, 0, 0, 0 };
        char *ka[] = { "child", 0 };
        st = seed;
        if (pvm_spawn(argv[0], ka, PvmTaskDefault, "", 1, &kid) != 1) {
            printf("spawn failed\n");
            return 1;
        }
        printf("seed %d\n", seed);
        for (i = 0; i < calls; i++) {
            int g = rnd(4), rc, v, w, buf[4] = { 0, 0, 0, 0 };
            const char *gn = names[g];
            printf("%d:", i);
            switch (rnd(12)) {
            case 0: case 1:
                rc = pvm_joingroup(gn);
                if (rc >= 0) in[g] = 1;
                printf(" join %s -> %d", gn, rc);
                break;
            case 2:
                rc = pvm_lvgroup(gn);
                if (rc >= 0) in[g] = 0;
                printf(" leave %s -> %d", gn, rc);
                break;
            case 3:
                printf(" getinst %s me -> %d kid -> %d", gn, pvm_getinst(gn, me), pvm_getinst(gn, kid));
                break;
            case 4:
                v = rnd(3);
                rc = pvm_gettid(gn, v);
                printf(" gettid %s %d -> %s", gn, v, rc == me ? "me" : rc == kid ? "kid" : rc < 0 ? "error" : "other");
                if (rc < 0) printf(" %d", rc);
                break;
            case 5:
                printf(" gsize %s -> %d", gn, pvm_gsize(gn));
                break;
            case 6:
                /* A barrier nobody else would reach is only asked for when it cannot block:
                   everyone in the group is this task. */
                if (!kin[g] || !in[g]) {
                    printf(" barrier %s -> %d", gn, pvm_barrier(gn, -1));
                } else
                    printf(" skip");
                break;
            case 7:
                pvm_initsend(PvmDataDefault);
                v = 5;
                pvm_pkint(&v, 1, 1);
                rc = pvm_bcast(gn, 7);
                w = 0;
                while (pvm_nrecv(-1, 7) > 0)
                    w++;
                printf(" bcast %s -> %d, %d to me", gn, rc, w);
                break;
            case 8:
                if (g < 3 && !frozen[g] && !kin[g]) {
                    rc = pvm_freezegroup(gn, -1);
                    if (rc >= 0) frozen[g] = 1;
                    printf(" freeze %s -> %d", gn, rc);
                } else
                    printf(" skip");
                break;
            case 9:
                if (!kin[g]) {
                    v = 3;
                    rc = pvm_reduce(PvmSum, &v, 1, PVM_INT, 8, gn, 0);
                    printf(" reduce %s -> %d value %d", gn, rc, v);
                } else
                    printf(" skip");
                break;
            case 10:
                if (!kin[g]) {
                    v = 4;
                    rc = pvm_gather(buf, &v, 1, PVM_INT, 9, gn, 0);
                    printf(" gather %s -> %d [%d]", gn, rc, buf[0]);
                    buf[0] = 6;
                    rc = pvm_scatter(&w, buf, 1, PVM_INT, 10, gn, 0);
                    printf(" scatter -> %d", rc);
                    if (rc >= 0) printf(" [%d]", w);
                } else
                    printf(" skip");
                break;
            default:
                if (g < 3 && !frozen[g]) {
                    kid_does(kin[g] ? 2 : 1, g);
                    kin[g] = !kin[g];
                } else
                    printf(" skip");
                break;
            }
            printf(" errno %d\n", pvm_errno);
            fflush(stdout);
        }
        {
            int zero = 0;
            printf("end:");
            for (i = 0; i < 3; i++)
                if (kin[i]) kid_does(2, i);
            for (i = 0; i < 3; i++)
                if (in[i]) printf(" leave %s -> %d", names[i], pvm_lvgroup(names[i]));
            printf("\n");
            pvm_initsend(PvmDataDefault);
            pvm_pkint(&zero, 1, 1);
            pvm_send(kid, 1);
        }
    }
    pvm_exit();
    printf("done\n");
    return 0;
}
"#;

/// The program built with the group library of `flavour` (libpvm3: whichever ld.so finds).
fn build(flavour: Flavour) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("group-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create build dir");
    let src = dir.join("gfuzz.c");
    std::fs::write(&src, format!("{FUZZ_C_PRELUDE}{BODY}")).expect("write source");
    let out = dir.join(format!("gfuzz-{flavour:?}"));
    cc_group(&src, &out, flavour);
    out
}

/// One run: `flavour`'s group library and server, on a `daemon` pvmd; with `our_libpvm3`, our
/// libpvm3 in every task (LD_LIBRARY_PATH, exported to the tasks the pvmd starts).
fn run(flavour: Flavour, daemon: Kind, our_libpvm3: bool, args: &[&str]) -> String {
    let mut vm = Vm::new(&format!("gfuzz-{flavour:?}"));
    vm.install(&build(flavour), "gfuzz");
    vm.install(&pvmgs(flavour), "pvmgs");
    if our_libpvm3 {
        vm.env
            .push(("LD_LIBRARY_PATH".into(), shim_dir().display().to_string()));
        vm.env.push(("PVM_EXPORT".into(), "LD_LIBRARY_PATH".into()));
    }
    vm.start_daemon(daemon);
    let (code, out) = vm.run("gfuzz", args, None);
    assert_eq!(code, Some(0), "{flavour:?} on {daemon:?}: {out}");
    normalise(&out)
}

#[test]
fn group_calls_same_as_legacy() {
    let seeds = std::env::var("GROUP_FUZZ_SEEDS").unwrap_or_else(|_| "6".into());
    let args = [seeds.as_str(), "60"];
    let legacy = run(Flavour::Legacy, Kind::Legacy, false, &args);
    if std::env::var_os("GROUP_FUZZ_SHOW").is_some() {
        eprintln!("{legacy}");
    }
    // stdout, then what the library printed on stderr.
    assert!(legacy.lines().any(|l| l == "done"), "legacy run incomplete:\n{legacy}");
    for want in [" join g0 -> 0", " kid join", " reduce", " gather"] {
        assert!(legacy.contains(want), "nothing compared for {want:?}:\n{legacy}");
    }
    for (flavour, daemon, ours) in [
        (Flavour::Ours, Kind::Legacy, false),
        (Flavour::Legacy, Kind::Ours, false),
        (Flavour::Ours, Kind::Ours, true),
    ] {
        let got = run(flavour, daemon, ours, &args);
        if got != legacy {
            let diff = legacy
                .lines()
                .zip(got.lines())
                .position(|(a, b)| a != b)
                .unwrap_or(legacy.lines().count().min(got.lines().count()));
            let show = |s: &str| {
                s.lines()
                    .skip(diff.saturating_sub(5))
                    .take(12)
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            panic!(
                "{flavour:?} group library on {daemon:?} pvmd (our libpvm3: {ours}) differs from legacy at line {diff}:\n--- legacy\n{}\n--- this\n{}",
                show(&legacy),
                show(&got)
            );
        }
    }
}
