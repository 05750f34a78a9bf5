//! The legacy library's internal helpers that legacy programs call (the console, srm.pvm):
//! `pvmnametag` (names of reserved message tags) and `debug_flags` (names of debug mask bits),
//! on our library against the legacy one, over every reserved tag range and past its ends.

use interop_tests::shim::{shim_dir, Lib};
use std::process::Command;

const PROGRAM: &str = r#"
#include <stdio.h>
char *pvmnametag(int tag, int *found);
char *debug_flags(int mask);
int main(void) {
    static const unsigned bases[] = { 0x80010000u, 0x80020000u, 0x80030000u, 0x80040000u, 0x80050000u };
    int b, i, found, masks[] = { 0, 1, 2, 3, 0x41, 0x8000, 0xffff, 0x10000, -1 };
    for (b = 0; b < 5; b++)
        for (i = 0; i < 0x24; i++) {
            int tag = (int)(bases[b] + i);
            found = -7;
            char *n = pvmnametag(tag, &found);
            printf("%x %s %d\n", tag, n, found);
        }
    printf("plain %s, null found %s\n", pvmnametag(5, &found), pvmnametag(0x80010001, 0));
    for (i = 0; i < 9; i++)
        printf("mask %x: '%s'\n", masks[i], debug_flags(masks[i]));
    return 0;
}
"#;

fn run(lib: Lib) -> String {
    let exe = interop_tests::build_c("internals", PROGRAM, &[]);
    let mut c = Command::new(&exe);
    match lib {
        Lib::Shim => c.env("LD_LIBRARY_PATH", shim_dir()),
        Lib::Legacy => c.env_remove("LD_LIBRARY_PATH"),
    };
    let o = c.output().expect("run the internals program");
    assert!(o.status.success(), "{lib:?}: {o:?}");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn nametag_and_debug_flags_same_as_legacy() {
    let legacy = run(Lib::Legacy);
    assert!(legacy.contains("80010019 TM_SHMCONN 1\n"), "{legacy}");
    assert!(legacy.contains("mask 3: 'pkt,msg'"), "{legacy}");
    let ours = run(Lib::Shim);
    for (a, b) in legacy.lines().zip(ours.lines()) {
        assert_eq!(b, a, "left ours, right legacy");
    }
    assert_eq!(ours, legacy);
}
