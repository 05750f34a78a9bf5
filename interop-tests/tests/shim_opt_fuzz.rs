//! Differential fuzz of pvm_setopt/pvm_getopt: random options (valid and not) with values
//! from each option's interesting set (valid, out of range, negative), each followed by
//! pvm_getopt of the same option and, now and then, of all of them. Our library against the
//! legacy one, on the legacy pvmd: equal output and stderr.
//!
//! Left out: PvmDebugMask other than 0 (each library prints its own debug lines) and
//! PvmAutoErr above 1 (legacy exits on the next error).

use interop_tests::shim::{normalise, Lib, Vm};
use interop_tests::Kind;

const PROGRAM: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <pvm3.h>
extern int pvm_errno;
static unsigned long long st;
static unsigned rnd(unsigned n)
{
    st = st * 6364136223846793005ULL + 1442695040888963407ULL;
    return (unsigned)(st >> 33) % n;
}
static int me;
static void val(int v)
{
    if (v == me && me > 0) printf("me");
    else printf("%d", v);
}
int main(int argc, char **argv)
{
    int seeds = argc > 1 ? atoi(argv[1]) : 20, ops = argc > 2 ? atoi(argv[2]) : 100;
    int seed, op, i;
    me = pvm_mytid();
    printf("enrolled %d\n", me > 0);
    for (seed = 1; seed <= seeds; seed++) {
        st = seed;
        printf("seed %d\n", seed);
        for (op = 0; op < ops; op++) {
            int opt = rnd(28), v, rc;
            int any[] = { 0, 1, 2, 3, 4, -1, 7, 100, 4096, 65536, 1 << 20, -5 };
            v = any[rnd(12)];
            if (opt >= 4 && opt <= 6 || opt == 12 || opt == 14) {
                int tids[] = { 0, -1, me, 0x40fff, 7 };
                v = tids[rnd(5)];
            }
            if (opt == 2) v = 0;                 /* PvmDebugMask */
            if (opt == 3) v = rnd(2);            /* PvmAutoErr */
            if (rnd(5) == 0) {
                printf("%d: all", op);
                for (i = 0; i <= 26; i++) {
                    printf(" ");
                    val(pvm_getopt(i));
                }
                printf(" errno %d\n", pvm_errno);
                continue;
            }
            rc = pvm_setopt(opt, v);
            printf("%d: set %d ", op, opt);
            val(v);
            printf(" -> ");
            val(rc);
            printf(" errno %d get ", pvm_errno);
            val(pvm_getopt(opt));
            printf(" errno %d\n", pvm_errno);
        }
    }
    printf("done\n");
    pvm_exit();
    return 0;
}
"#;

fn run(lib: Lib) -> (String, String) {
    let exe = interop_tests::build_c("opt-fuzz", PROGRAM, &[]);
    let vm = Vm::start(Kind::Legacy, &format!("shim-ofz-{lib:?}"));
    // SHIM_OPT_FUZZ_SEEDS=N runs another number of seeds (CI runs 30 of 100 calls each).
    let seeds = std::env::var("SHIM_OPT_FUZZ_SEEDS").unwrap_or_else(|_| "30".into());
    let mut c = vm.command(exe.to_str().unwrap(), &[&seeds, "100"], lib, lib);
    c.env_remove("PVM_SHIM_TRACE")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let (code, so, se) = interop_tests::Proc {
        child: c.spawn().expect("run the option fuzz program"),
        name: format!("option fuzz on {lib:?}"),
    }
    .wait(interop_tests::TIMEOUT);
    assert_eq!(code, Some(0), "{lib:?} library: exit {code:?}\n{so}\n{se}");
    (normalise(&so), normalise(&se))
}

#[test]
fn options_in_random_order_same_as_legacy() {
    let (lo, le) = run(Lib::Legacy);
    let (so, se) = run(Lib::Shim);
    if let Some(d) = std::env::var_os("SHIM_OPT_FUZZ_DUMP") {
        let d = std::path::Path::new(&d);
        std::fs::write(d.join("legacy.txt"), format!("{lo}\n----\n{le}")).unwrap();
        std::fs::write(d.join("ours.txt"), format!("{so}\n----\n{se}")).unwrap();
    }
    assert_eq!(lo.lines().last(), Some("done"), "legacy run incomplete:\n{lo}\n{le}");
    for want in [": all ", "set 10 4096 -> ", "set 1 3 -> "] {
        assert!(
            lo.contains(want),
            "legacy output has no {want:?}: nothing compared there"
        );
    }
    let (l, s): (Vec<&str>, Vec<&str>) = (lo.lines().collect(), so.lines().collect());
    let mut seed = "";
    for (i, (a, b)) in l.iter().zip(s.iter()).enumerate() {
        if a.starts_with("seed ") {
            seed = a;
        }
        assert_eq!(
            b,
            a,
            "line {i} ({seed}) differs (left ours, right legacy); before it:\n{}",
            l[i.saturating_sub(10)..i].join("\n")
        );
    }
    assert_eq!(s.len(), l.len(), "ours ended early:\n{so}\n{se}");
    assert_eq!(se, le, "stderr differs");
}
