//! pvm_spawn against the legacy implementation: counts (0, 1, 3; a negative one and a NULL
//! file crash the legacy library, so they are left out), every `where`
//! form (none, this host by name, a host that does not exist, this architecture, an unknown
//! one, the complement of this host), a program that does not exist, argument vectors, and the
//! flags that need no debugger or resource manager. The return codes and each slot of the tid
//! array (a task id printed as "T", errors as their code) are printed; all four combinations
//! of library and pvmd must print what all-legacy prints.

use interop_tests::shim::{same_as_all_legacy, NOT_ALL_LEGACY};

const PROGRAM: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <pvm3.h>
extern int pvm_errno;
static char *self;
static void show(const char *what, char *file, char **argv, int flags, char *where, int n)
{
    int tids[8], i, rc;
    for (i = 0; i < 8; i++) tids[i] = 12345;
    rc = pvm_spawn(file, argv, flags, where, n, tids);
    printf("%s: rc %d errno %d tids", what, rc, pvm_errno);
    for (i = 0; i < (n > 0 && n < 8 ? n : 1); i++) {
        if (tids[i] == 12345) printf(" untouched");
        else if (tids[i] > 0) printf(" T");
        else printf(" %d", tids[i]);
    }
    printf("\n");
    fflush(stdout);
}
int main(int argc, char **argv)
{
    char host[256], *args[] = { "exit", "a b", "", 0 }, *none[] = { "exit", 0 };
    struct pvmhostinfo *hi;
    int nh, na;
    if (argc > 1) {            /* a child: enrol and leave */
        pvm_mytid();
        pvm_exit();
        return 0;
    }
    self = argv[0];
    pvm_mytid();
    pvm_config(&nh, &na, &hi);
    strcpy(host, hi[0].hi_name);
    show("one", self, none, PvmTaskDefault, "", 1);
    show("three", self, none, PvmTaskDefault, 0, 3);
    show("zero", self, none, PvmTaskDefault, "", 0);
    show("args", self, args, PvmTaskDefault, "", 2);
    show("this host", self, none, PvmTaskHost, host, 2);
    show("no such host", self, none, PvmTaskHost, "no-such-host", 2);
    show("host flag, no where", self, none, PvmTaskHost, "", 1);
    show("arch", self, none, PvmTaskArch, "LINUX64", 2);
    show("no such arch", self, none, PvmTaskArch, "NOSUCHARCH", 2);
    show("complement of this host", self, none, PvmTaskHost | PvmHostCompl, host, 1);
    show("no such file", "no-such-program-here", none, PvmTaskDefault, "", 2);
    show("no such file, path", "/no/such/dir/prog", none, PvmTaskDefault, "", 1);
    show("trace flag", self, none, PvmTaskTrace, "", 1);
    show("mpp front", self, none, PvmMppFront, "", 1);
    show("unknown flag bits", self, none, 0x4000, "", 1);
    sleep(1);
    pvm_exit();
    printf("done\n");
    return 0;
}
"#;

#[test]
fn spawn_same_as_legacy() {
    same_as_all_legacy(
        &interop_tests::build_c("spawn-diff", PROGRAM, &["-w"]),
        &[],
        &NOT_ALL_LEGACY,
        &["three: rc 3 errno"],
    );
}
