//! Differential fuzz of pvm_setopt/pvm_getopt: random options (valid and not) with values
//! from each option's interesting set (valid, out of range, negative), each followed by
//! pvm_getopt of the same option and, now and then, of all of them. Our library against the
//! legacy one, on the legacy pvmd: equal output and stderr.
//!
//! Left out: PvmDebugMask other than 0 (each library prints its own debug lines) and
//! PvmAutoErr above 1 (legacy exits on the next error).

use interop_tests::shim::{fuzz_same_as_all_legacy, Lib};
use interop_tests::Kind;

const PROGRAM: &str = r#"
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

#[test]
fn options_in_random_order_same_as_legacy() {
    // SHIM_OPT_FUZZ_SEEDS=N runs another number of seeds (CI runs 30 of 100 calls each; 400 passed).
    fuzz_same_as_all_legacy(
        "opt-fuzz",
        PROGRAM,
        ("SHIM_OPT_FUZZ_SEEDS", "30"),
        "100",
        &[(Kind::Legacy, Lib::Shim)],
        &[": all ", "set 10 4096 -> ", "set 1 3 -> "],
    );
}
