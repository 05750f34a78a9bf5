//! Large packs and unpacks copied by libpvm3-shim `pcopy.rs` (streamed stores from 256 KiB, two
//! threads from 2 MiB): a pack of an array that packs as its memory image, and an unpack of one
//! from a message whose rest lies in the sender's shared arena (direct route) or the pvmd's
//! (pvmd-rs's arena relay).
//!
//! The child sends a series of messages built to cross the edges of that path: sizes around the
//! threshold and odd ones, raw bytes and ints, XDR bytes with a pad and an int after them, an
//! array unpacked in two parts (the second starting inside the bytes already copied), a message
//! unpacked in part and then sent back as it is (`pvm_setsbuf(pvm_getrbuf())`: every byte must
//! still be in the buffer), one never unpacked, an unpack past the end, an in-place body. The
//! sender overwrites its array as soon as `pvm_send` returns. Every byte is checked, and
//! `PVM_PCOPY_TRACE` says which packs and unpacks took that path, on how many threads.

use interop_tests::shim::{Lib, Vm};
use interop_tests::Kind;

const PROGRAM: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pvm3.h>

#define MB (1 << 20)
static unsigned char *a, *b;
static int nok, nbad;

static void fill(unsigned char *p, long n, unsigned seed) {
    unsigned x = seed * 2654435761u + 7;
    for (long i = 0; i < n; i++) { x = x * 1103515245u + 12345u; p[i] = x >> 24; }
}
static int same(const unsigned char *p, long n, unsigned seed) {
    unsigned x = seed * 2654435761u + 7;
    for (long i = 0; i < n; i++) { x = x * 1103515245u + 12345u; if (p[i] != (unsigned char)(x >> 24)) return 0; }
    return 1;
}
static void check(int ok, const char *what) {
    if (ok) nok++;
    else { nbad++; fprintf(stderr, "bad: %s\n", what); }
}
/* Sends seed + n bytes (as bytes, or as n/4 ints) in encoding enc, then a trailer int. */
static void send_bytes(int peer, int tag, int enc, long n, int as_ints) {
    int hdr[2] = { (int)n, tag };
    pvm_initsend(enc);
    pvm_pkint(hdr, 2, 1);
    fill(a, n, tag);
    if (as_ints) pvm_pkint((int *)a, (int)(n / 4), 1);
    else pvm_pkbyte((char *)a, (int)n, 1);
    int trailer = 4242 + tag;
    pvm_pkint(&trailer, 1, 1);
    pvm_send(peer, tag);
    memset(a, 0xee, n); /* ours again once pvm_send returned */
}
/* Receives tag, unpacks the bytes in parts of `first` then the rest, checks them and the trailer. */
static void recv_bytes(int peer, int tag, long first, int as_ints, const char *what) {
    int hdr[2], trailer = 0;
    pvm_recv(peer, tag);
    pvm_upkint(hdr, 2, 1);
    long n = hdr[0];
    memset(b, 0, n);
    if (as_ints) pvm_upkint((int *)b, (int)(n / 4), 1);
    else {
        if (first > 0) pvm_upkbyte((char *)b, (int)first, 1);
        pvm_upkbyte((char *)b + first, (int)(n - first), 1);
    }
    pvm_upkint(&trailer, 1, 1);
    check(hdr[1] == tag && trailer == 4242 + tag && same(b, n, tag), what);
}

static const long SIZES[] = { 2 * MB - 1, 2 * MB, 3 * MB + 5, 16 * MB };
#define NSIZES 4

int main(int argc, char **argv) {
    int peer, r[2], child = argc > 2 && !strcmp(argv[2], "-child");
    const char *mode = argc > 1 ? argv[1] : "direct";
    a = malloc(16 * MB + 64);
    b = malloc(16 * MB + 64);
    if (!strcmp(mode, "direct")) pvm_setopt(PvmRoute, PvmRouteDirect);
    if (!child) {
        char *args[] = { argv[1], "-child", 0 };
        if (pvm_spawn(argv[0], args, PvmTaskDefault, "", 1, &peer) != 1) {
            printf("spawn failed %d\n", peer);
            pvm_exit();
            return 1;
        }
        /* The route first (shim_vmread.rs says why). */
        pvm_initsend(PvmDataDefault); pvm_send(peer, 50); pvm_recv(peer, 51);
        for (int s = 0; s < NSIZES; s++) recv_bytes(peer, 10 + s, 0, 0, "raw bytes");
        recv_bytes(peer, 20, 0, 1, "raw ints");
        recv_bytes(peer, 21, 0, 0, "xdr bytes, odd size");
        recv_bytes(peer, 22, MB, 0, "raw, unpacked in two parts");
        recv_bytes(peer, 23, 12344, 0, "xdr, unpacked in two parts"); /* XDR pads each byte run: a first part of 4k bytes */
        /* Unpacked in part, then sent back whole. */
        int hdr[2];
        pvm_recv(peer, 30);
        pvm_upkint(hdr, 2, 1);
        pvm_upkbyte((char *)b, 3 * MB, 1);
        check(same(b, 3 * MB, 30), "forwarded message, first part");
        /* Kept aside while the child says it waits for it (so that it arrives in pvm_recv, not
           while the child still waits for the answer to its own message). */
        int kept = pvm_setrbuf(0);
        pvm_recv(peer, 40);
        int old = pvm_setsbuf(kept);
        pvm_send(peer, 31);
        pvm_setsbuf(old);
        pvm_freebuf(kept);
        /* Never unpacked: the next receive finishes it. */
        pvm_recv(peer, 32);
        recv_bytes(peer, 33, 0, 0, "after a message never unpacked");
        /* Past the end: an error (the legacy library has copied what there was by then). */
        pvm_recv(peer, 34);
        pvm_upkint(hdr, 2, 1);
        int cc = pvm_upkbyte((char *)b, 4 * MB, 1);
        check(cc == PvmNoData, "unpack past the end");
        recv_bytes(peer, 35, 0, 0, "in place");
        pvm_recv(peer, 99);
        pvm_upkint(r, 2, 1);
        printf("parent ok %d bad %d\nchild ok %d bad %d\n", nok, nbad, r[0], r[1]);
    } else {
        peer = pvm_parent();
        pvm_recv(peer, 50); pvm_initsend(PvmDataDefault); pvm_send(peer, 51);
        for (int s = 0; s < NSIZES; s++) send_bytes(peer, 10 + s, PvmDataRaw, SIZES[s], 0);
        send_bytes(peer, 20, PvmDataRaw, 16 * MB, 1);
        send_bytes(peer, 21, PvmDataDefault, 5 * MB + 3, 0);
        send_bytes(peer, 22, PvmDataRaw, 8 * MB, 0);
        send_bytes(peer, 23, PvmDataDefault, 8 * MB + 1, 0);
        send_bytes(peer, 30, PvmDataRaw, 6 * MB, 0);
        /* The forwarded message comes back whole: header, bytes and trailer. */
        int hdr[2], trailer = 0;
        pvm_initsend(PvmDataDefault);
        pvm_send(peer, 40);
        pvm_recv(peer, 31);
        pvm_upkint(hdr, 2, 1);
        pvm_upkbyte((char *)b, 6 * MB, 1);
        pvm_upkint(&trailer, 1, 1);
        check(hdr[0] == 6 * MB && hdr[1] == 30 && trailer == 4242 + 30 && same(b, 6 * MB, 30), "forwarded message, whole");
        send_bytes(peer, 32, PvmDataRaw, 16 * MB, 0);
        send_bytes(peer, 33, PvmDataRaw, 4 * MB, 0);
        send_bytes(peer, 34, PvmDataRaw, 3 * MB, 0);
        /* In place: the bytes are the program's until pvm_send returns. */
        {
            int h[2] = { 16 * MB, 35 }, trailer = 4242 + 35;
            pvm_initsend(PvmDataInPlace);
            pvm_pkint(h, 2, 1);
            fill(a, 16 * MB, 35);
            pvm_pkbyte((char *)a, 16 * MB, 1);
            pvm_pkint(&trailer, 1, 1);
            pvm_send(peer, 35);
            memset(a, 0xee, 16 * MB);
        }
        r[0] = nok; r[1] = nbad;
        pvm_initsend(PvmDataDefault);
        pvm_pkint(r, 2, 1);
        pvm_send(peer, 99);
    }
    pvm_exit();
    return 0;
}
"#;

/// Checks made by the parent and by the child.
const PARENT_CHECKS: usize = 12;
const CHILD_CHECKS: usize = 1;

struct Run {
    /// Trace lines `t<tid> pcopy-pack|pcopy-unpack <bytes> <threads>`.
    splits: Vec<String>,
}

fn run(kind: Kind, me: Lib, child: Lib, mode: &str) -> Run {
    let vm = Vm::start(kind, &format!("pcopy-{mode}"));
    let exe = interop_tests::build_c("pcopy_x", PROGRAM, &["-O2"]);
    let trace = vm.tmp.path().join("pcopy-trace");
    let mut c = vm.command(exe.to_str().unwrap(), &[mode], me, child);
    c.env("PVM_PCOPY_TRACE", &trace)
        .env_remove("PVM_PAR_COPY_MIN")
        .env_remove("PVM_STREAM_MIN");
    if child == Lib::Shim {
        c.env("PVM_EXPORT", "LD_LIBRARY_PATH:PVM_SHIM_TRACE:PVM_PCOPY_TRACE");
    }
    let (code, out, err) =
        interop_tests::Proc::run_piped(&mut c, &format!("pcopy {mode}"), std::time::Duration::from_secs(120));
    let log = vm.tmp.log();
    let what = format!("{kind:?} {mode} {me:?}/{child:?}");
    assert_eq!(code, Some(0), "{what}: {out}\n{err}\nlog:\n{log}");
    let want = format!("parent ok {PARENT_CHECKS} bad 0\nchild ok {CHILD_CHECKS} bad 0\n");
    assert_eq!(out, want, "{what}: {err}\nlog:\n{log}");
    let text = std::fs::read_to_string(&trace).unwrap_or_default();
    Run {
        splits: text.lines().map(str::to_string).collect(),
    }
}

/// (packs, unpacks) in the trace, each checked to have run on two threads exactly when it
/// copied at least 2 MiB (the library's `pcopy::PAR_MIN`).
fn counts(r: &Run) -> (usize, usize) {
    for l in &r.splits {
        let f: Vec<&str> = l.split(' ').collect();
        assert_eq!(f.len(), 4, "{l}");
        let bytes: usize = f[2].parse().unwrap();
        let want = if bytes >= 2 << 20 { "2" } else { "1" };
        assert_eq!(f[3], want, "threads for {bytes} bytes: {l}");
    }
    let n = |w: &str| r.splits.iter().filter(|l| l.split(' ').nth(1) == Some(w)).count();
    (n("pcopy-pack"), n("pcopy-unpack"))
}

/// Arrays of at least 256 KiB packed as their image: the child's 2 MiB - 1, 2 MiB, 3 MiB + 5
/// and 16 MiB bytes, 16 MiB of ints, 5 MiB + 3, 8 MiB, 8 MiB + 1, 6 MiB, 16 MiB, 4 MiB, 3 MiB and
/// the in-place 16 MiB (this library copies in-place data when it is packed, into a fragment of
/// its own).
const PACKS: usize = 13;
/// Unpacks from the arena on the parent (all four raw byte arrays, the ints, 5 MiB + 3, both
/// parts of 8 MiB, the second part of 8 MiB + 1 (its first, 12344 bytes, is small), the first
/// 3 MiB of the forwarded one, 4 MiB, the in-place 16 MiB) and on the child (the forwarded
/// 6 MiB). The 2 MiB ones copy less than 2 MiB from the arena (their first 128 KiB come with
/// the descriptor): one thread.
const UNPACKS: usize = 13;

#[test]
fn large_packs_and_unpacks_on_two_threads_keep_every_byte() {
    // Direct route between two shim tasks, on either daemon.
    for kind in [Kind::Ours, Kind::Legacy] {
        let r = run(kind, Lib::Shim, Lib::Shim, "direct");
        assert_eq!(counts(&r), (PACKS, UNPACKS), "{kind:?}: {:#?}", r.splits);
    }
    // The daemon route on pvmd-rs: the pvmd's arena relay hands each message over in its arena.
    let r = run(Kind::Ours, Lib::Shim, Lib::Shim, "daemon");
    assert_eq!(counts(&r), (PACKS, UNPACKS), "{:#?}", r.splits);
    // A legacy-library child: its messages come over the socket, so no unpack is split (the
    // ordinary path reads them; the shim parent packs nothing large), and the message sent
    // back reaches it whole.
    let r = run(Kind::Ours, Lib::Shim, Lib::Legacy, "direct");
    assert_eq!(counts(&r), (0, 0), "{:#?}", r.splits);
    // And the other way round: only the shim child packs on two threads; the legacy parent
    // reads what it sends byte for byte.
    let r = run(Kind::Legacy, Lib::Legacy, Lib::Shim, "direct");
    assert_eq!(counts(&r), (PACKS, 0), "{:#?}", r.splits);
}
