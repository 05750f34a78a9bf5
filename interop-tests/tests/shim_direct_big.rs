//! Large messages over direct routes (PvmRouteDirect): between two tasks on our library they
//! travel as large fragments and are delivered before their end (libpvm3-shim `route.rs`,
//! `lazy.rs`); with a legacy task on either end they keep legacy fragments. Every way of
//! consuming such a message must give what the legacy library gives: unpacking in one piece, in
//! small pieces, as XDR with pads, strided, not at all (freed, or left queued while another
//! message is received), probed, forwarded as received, and its length in pvm_bufinfo.

use interop_tests::shim::{Lib, Vm};
use interop_tests::Kind;

const PROGRAM: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pvm3.h>
#define N (1 << 20)
static unsigned long sum(const unsigned char *p, long n) {
    unsigned long s = 0;
    long i;
    for (i = 0; i < n; i++)
        s = s * 31 + p[i];
    return s;
}
/* The child's lines travel back to the parent in the last message (a child's stdout reaches
 * the daemon's log with no ordering against the parent's exit). */
static char report[8192];
static int reported;
static void line(const char *what, unsigned long v) {
    if (reported < (int)sizeof report - 64)
        reported += snprintf(report + reported, sizeof report - reported, "%s %lu\n", what, v);
}
int main(int argc, char **argv) {
    int parent = pvm_parent(), peer, i, n, len, tag, src, bid;
    unsigned char *b = malloc(N + 64), *g = malloc(N + 64);
    int *ib = (int *)b, *ig = (int *)g;
    double *dg = (double *)g;
    static double db[60000];
    for (i = 0; i < N + 64; i++)
        b[i] = (unsigned char)(i * 13 + (i >> 9));
    for (i = 0; i < 60000; i++)
        db[i] = i * 0.5 - 7.25;
    pvm_setopt(PvmRoute, PvmRouteDirect);
    if (parent < 0) {
        char *args[] = { 0 };
        (void)argc;
        if (pvm_spawn(argv[0], args, PvmTaskDefault, "", 1, &peer) != 1) {
            printf("spawn failed %d\n", peer);
            pvm_exit();
            return 1;
        }
        /* 1: raw bytes in one piece, and the length bufinfo reports. */
        pvm_initsend(PvmDataRaw);
        n = N;
        pvm_pkint(&n, 1, 1);
        pvm_pkbyte((char *)b, n, 1);
        pvm_send(peer, 1);
        /* 2: XDR, an odd byte count (pad), then an int after it. */
        pvm_initsend(PvmDataDefault);
        n = N - 5;
        pvm_pkint(&n, 1, 1);
        pvm_pkbyte((char *)b, n, 1);
        n = 4242;
        pvm_pkint(&n, 1, 1);
        pvm_send(peer, 2);
        /* 3: raw ints and doubles, unpacked in pieces of several sizes and strided. */
        pvm_initsend(PvmDataRaw);
        pvm_pkint(ib, 100000, 1);
        pvm_pkdouble(db, 60000, 1);
        pvm_send(peer, 3);
        /* 4: XDR ints and doubles (converted, not copied). */
        pvm_initsend(PvmDataDefault);
        pvm_pkint(ib, 100000, 1);
        pvm_pkdouble(db, 60000, 1);
        pvm_send(peer, 4);
        /* 5 then 6: the child receives 6 first (5 waits in the queue), then 5. */
        pvm_initsend(PvmDataRaw);
        pvm_pkbyte((char *)b + 1, N - 1, 1);
        pvm_send(peer, 5);
        pvm_initsend(PvmDataRaw);
        n = 66;
        pvm_pkint(&n, 1, 1);
        pvm_send(peer, 6);
        /* 7: left unpacked (the next receive frees it); 8 behind it must be whole. */
        pvm_initsend(PvmDataRaw);
        pvm_pkbyte((char *)b + 2, N, 1);
        pvm_send(peer, 7);
        pvm_initsend(PvmDataDefault);
        pvm_pkbyte((char *)b + 3, 300000, 1);
        pvm_send(peer, 8);
        /* 9: the child looks at the first int and sends the buffer back as it came. */
        pvm_initsend(PvmDataRaw);
        n = 9;
        pvm_pkint(&n, 1, 1);
        pvm_pkbyte((char *)b + 4, N, 1);
        pvm_send(peer, 9);
        bid = pvm_recv(peer, 10);
        pvm_bufinfo(bid, &len, &tag, &src);
        pvm_upkint(&n, 1, 1);
        pvm_upkbyte((char *)g, N, 1);
        printf("parent 10 len %d\nparent 10 n %d\nparent 10 sum %lu\n", len, n, sum(g, N));
        fflush(stdout);
        /* 11: probed, then received and unpacked in small pieces. */
        pvm_initsend(PvmDataRaw);
        pvm_pkbyte((char *)b + 5, 700001, 1);
        pvm_send(peer, 11);
        pvm_recv(peer, 99);
        pvm_upkstr(report);
        printf("%s", report);
        reported = 0;
        report[0] = 0;
        pvm_exit();
        return 0;
    }
    peer = parent;
    bid = pvm_recv(peer, 1);
    pvm_bufinfo(bid, &len, &tag, &src);
    pvm_upkint(&n, 1, 1);
    pvm_upkbyte((char *)g, n, 1);
    line("child 1 len", len);
    line("child 1 sum", sum(g, n));

    pvm_recv(peer, 2);
    pvm_upkint(&n, 1, 1);
    memset(g, 0, N);
    pvm_upkbyte((char *)g, n, 1);
    line("child 2 sum", sum(g, N));
    pvm_upkint(&n, 1, 1);
    line("child 2 trailer", n);
    line("child 2 past end", pvm_upkint(&n, 1, 1));

    for (tag = 3; tag <= 4; tag++) {
        pvm_recv(peer, tag);
        memset(g, 0, N);
        pvm_upkint(ig, 10, 1);
        pvm_upkint(ig + 10, 30000, 1);
        pvm_upkint(ig + 30010, 35000, 2);
        pvm_upkint(ig + 100010, 34990, 1);
        pvm_upkdouble(dg + 70000, 60000, 1);
        line(tag == 3 ? "child 3 sum" : "child 4 sum", sum(g, N));
    }

    pvm_recv(peer, 6);
    pvm_upkint(&n, 1, 1);
    line("child 6 n", n);
    bid = pvm_recv(peer, 5);
    pvm_bufinfo(bid, &len, &tag, &src);
    pvm_upkbyte((char *)g, len, 1);
    line("child 5 len", len);
    line("child 5 sum", sum(g, len));

    pvm_recv(peer, 7);
    bid = pvm_recv(peer, 8);
    pvm_bufinfo(bid, &len, &tag, &src);
    pvm_upkbyte((char *)g, len, 1);
    line("child 8 len", len);
    line("child 8 sum", sum(g, len));

    bid = pvm_recv(peer, 9);
    pvm_upkint(&n, 1, 1);
    line("child 9 n", n);
    pvm_setsbuf(bid);
    pvm_send(peer, 10);

    while (pvm_probe(peer, 11) <= 0)
        ;
    bid = pvm_recv(peer, 11);
    pvm_bufinfo(bid, &len, &tag, &src);
    for (i = 0; i + 1000 <= len; i += 1000)
        pvm_upkbyte((char *)g + i, 1000, 1);
    pvm_upkbyte((char *)g + i, len - i, 1);
    line("child 11 len", len);
    line("child 11 sum", sum(g, len));
    line("child 11 past end", pvm_upkbyte((char *)g, 1, 1));

    pvm_initsend(PvmDataDefault);
    pvm_pkstr(report);
    pvm_send(peer, 99);
    pvm_exit();
    return 0;
}
"#;

fn compile() -> std::path::PathBuf {
    interop_tests::build_c("big_route", PROGRAM, &["-O1"])
}

/// Parent's and child's lines (the child's sent to the parent in its last message), sorted.
fn run(kind: Kind, me: Lib, child: Lib) -> Vec<String> {
    let vm = Vm::start(kind, "direct-big");
    let exe = compile();
    let (code, out, err) = vm.run(exe.to_str().unwrap(), &[], me, child, None);
    let log = vm.tmp.log();
    assert_eq!(code, Some(0), "{me:?}/{child:?}: {out}\n{err}\nlog:\n{log}");
    let mut lines: Vec<String> = out.lines().map(str::to_string).collect();
    lines.sort();
    let shims = [me, child].iter().filter(|&&l| l == Lib::Shim).count();
    assert_eq!(vm.shim_tasks().len(), shims, "{me:?}/{child:?}");
    lines
}

#[test]
fn shim_large_messages_on_direct_routes_match_legacy() {
    let want = run(Kind::Legacy, Lib::Legacy, Lib::Legacy);
    assert_eq!(want.len(), 19, "{want:#?}");
    for (kind, me, child) in [
        (Kind::Legacy, Lib::Shim, Lib::Shim),
        (Kind::Legacy, Lib::Shim, Lib::Legacy),
        (Kind::Legacy, Lib::Legacy, Lib::Shim),
        (Kind::Ours, Lib::Shim, Lib::Shim),
    ] {
        let got = run(kind, me, child);
        assert_eq!(got, want, "{kind:?} daemon, {me:?} parent, {child:?} child");
    }
}
