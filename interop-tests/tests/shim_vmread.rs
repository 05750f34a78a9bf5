//! Single-copy transfer of large messages between two pvm-rs tasks of one host
//! (libpvm3-shim `vmread.rs`, docs/extensions.md "Direct routes: single-copy large messages"):
//! a message of at least 256 KiB is read from the sender's memory with process_vm_readv.
//!
//! Both tasks send at once (small, big, small), so that two big sends wait for each other's
//! acks at the same time (no deadlock), then each receives the peer's three in order and checks
//! every byte; the sender overwrites its source array and packs the next message into the
//! recycled buffer as soon as `pvm_send` returns, so a receiver that read after the ack would
//! see wrong bytes. `PVM_VMREAD_TRACE` says which path each descriptor took: read, or inline
//! (the fallback, forced by `PVM_VMREAD_FAIL`, by a real EPERM, or not negotiated at all with
//! `PVM_NO_VMREAD` or a legacy-library peer).
//!
//! The route is set up by one ping-pong before the simultaneous sends. When both tasks' first
//! messages cross while the route is negotiated, the higher tid answers the crossed request and
//! sends what it has to send through the pvmd until the other end connects (legacy `mroute()`
//! does the same: it waits only while its own request is pending, then sends "with whatever
//! route we have"); a message sent later on the new route can then overtake one still relayed
//! by the pvmd. Seen under load with `PVM_NO_VMREAD` and with a legacy child too: a matter of the
//! route handshake, not of single-copy transfers.

use interop_tests::shim::{Lib, Vm};
use interop_tests::Kind;

const PROGRAM: &str = r#"
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <linux/capability.h>
#include <pvm3.h>

static const long SIZES[] = { 262144 - 9, 262144 - 8, 262144 - 7, 1048579, 16777216, 67108864 };
static unsigned char *src, *dst;
static int nok, nbad, norder;

static unsigned next(unsigned *x) { *x = *x * 1103515245u + 12345u; return *x >> 24; }
static void fill(unsigned char *p, long n, unsigned seed) {
    unsigned x = seed * 2654435761u + 1;
    for (long i = 0; i < n; i++) p[i] = next(&x);
}
static int same(const unsigned char *p, long n, unsigned seed) {
    unsigned x = seed * 2654435761u + 1;
    for (long i = 0; i < n; i++) if (p[i] != (unsigned char)next(&x)) return 0;
    return 1;
}
static int encoding(char c) {
    return c == 'd' ? PvmDataDefault : c == 'i' ? PvmDataInPlace : PvmDataRaw;
}
static void small(int peer, int enc, int tag, int v) {
    pvm_initsend(enc);
    pvm_pkint(&v, 1, 1);
    pvm_send(peer, tag);
}
/* Drops CAP_SYS_PTRACE: reading a task that keeps it is then refused (EPERM). */
static void drop_ptrace(void) {
    struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
    struct __user_cap_data_struct d[2];
    if (syscall(SYS_capget, &h, d) != 0) { perror("capget"); exit(3); }
    d[0].effective &= ~(1u << CAP_SYS_PTRACE);
    d[0].permitted &= ~(1u << CAP_SYS_PTRACE);
    d[0].inheritable &= ~(1u << CAP_SYS_PTRACE);
    if (syscall(SYS_capset, &h, d) != 0) { perror("capset"); exit(3); }
}

static const char *mode = "normal";
static void exchange(int peer, long max, const char *encs, unsigned me) {
    int k = 0;
    for (const char *e = encs; *e; e++) {
        int enc = encoding(*e);
        for (unsigned s = 0; s < sizeof SIZES / sizeof SIZES[0]; s++, k++) {
            long n = SIZES[s];
            if (n > max) continue;
            int hdr[2] = { (int)n, (int)(me * 1000 + k) }, got[2], bid, len, tag, from, v;
            small(peer, enc, 1, k);
            pvm_initsend(enc);
            pvm_pkint(hdr, 2, 1);
            fill(src, n, hdr[1]);
            pvm_pkbyte((char *)src, n, 1);
            pvm_send(peer, 2);
            memset(src, 0xee, n); /* ours again once pvm_send returned */
            small(peer, enc, 3, k + 1000);
            for (int want = 1; want <= 3; want++) {
                bid = pvm_recv(peer, -1);
                pvm_bufinfo(bid, &len, &tag, &from);
                if (tag != want) {
                    norder++;
                    fprintf(stderr, "order: %s round %d wanted tag %d, got %d (%d bytes)\n", me ? "child" : "parent", k, want, tag, len);
                    continue;
                }
                if (tag != 2) {
                    pvm_upkint(&v, 1, 1);
                    if (v == (tag == 1 ? k : k + 1000)) nok++; else nbad++;
                    continue;
                }
                if (!strcmp(mode, "pvmd-skip")) {
                    /* Not unpacked: the next receive must finish the body by itself. */
                    if (len >= n) nok++; else nbad++;
                    continue;
                }
                memset(dst, 0, n);
                pvm_upkint(got, 2, 1);
                pvm_upkbyte((char *)dst, got[0] == n ? n : 1, 1);
                if (got[0] == n && got[1] == (int)((1 - me) * 1000 + k) && same(dst, n, got[1])) nok++;
                else { nbad++; fprintf(stderr, "bad: enc %c size %ld\n", *e, n); }
            }
        }
    }
}

int main(int argc, char **argv) {
    int child = argc > 4 && !strcmp(argv[4], "-child"), peer, r[3];
    long max = argc > 1 ? atol(argv[1]) : 0;
    const char *encs = argc > 2 ? argv[2] : "r";
    mode = argc > 3 ? argv[3] : "normal";
    if (child && !strcmp(mode, "fail")) setenv("PVM_VMREAD_FAIL", "1", 1);
    if (child && !strcmp(mode, "nocap")) setenv("PVM_NO_VMREAD", "1", 1);
    if (child && !strcmp(mode, "eperm")) drop_ptrace();
    src = malloc(max + 64);
    dst = malloc(max + 64);
    /* "pvmd..." modes keep the daemon route (pvmd-rs passes big messages through its arena). */
    if (strncmp(mode, "pvmd", 4) != 0) pvm_setopt(PvmRoute, PvmRouteDirect);
    if (child && !strcmp(mode, "pvmd-fail")) setenv("PVM_VMREAD_FAIL", "1", 1);
    if (!child) {
        char *args[] = { argv[1], argv[2], argv[3], "-child", 0 };
        if (pvm_spawn(argv[0], args, PvmTaskDefault, "", 1, &peer) != 1) {
            printf("spawn failed %d\n", peer);
            pvm_exit();
            return 1;
        }
        /* The route first, one way then the other (see the test's doc). */
        small(peer, PvmDataDefault, 50, 0);
        pvm_recv(peer, 51);
        exchange(peer, max, encs, 0);
        pvm_recv(peer, 99);
        pvm_upkint(r, 3, 1);
        printf("parent ok %d bad %d order %d\nchild ok %d bad %d order %d\n", nok, nbad, norder, r[0], r[1], r[2]);
    } else {
        peer = pvm_parent();
        pvm_recv(peer, 50);
        small(peer, PvmDataDefault, 51, 0);
        exchange(peer, max, encs, 1);
        r[0] = nok; r[1] = nbad; r[2] = norder;
        pvm_initsend(PvmDataDefault);
        pvm_pkint(r, 3, 1);
        pvm_send(peer, 99);
    }
    pvm_exit();
    return 0;
}
"#;

/// The library's threshold (`vmread::VMREAD_MIN`): bodies at least this long are sent by
/// descriptor.
const THRESHOLD: usize = 256 << 10;
const SIZES: [usize; 6] = [THRESHOLD - 9, THRESHOLD - 8, THRESHOLD - 7, 1048579, 16 << 20, 64 << 20];

/// Big messages one side sends in a run: (count, of which at least the threshold).
fn expected(max: usize, encs: &str) -> (usize, usize) {
    let mut eligible = 0;
    let mut n = 0;
    for e in encs.chars() {
        for &s in SIZES.iter().filter(|&&s| s <= max) {
            n += 1;
            let body = 8 + if e == 'd' { s.div_ceil(4) * 4 } else { s };
            eligible += usize::from(body >= THRESHOLD);
        }
    }
    (n, eligible)
}

struct Outcome {
    out: String,
    /// Trace lines (`t<me> t<src> read|inline <bytes> [why]`), the parent's tid first seen.
    trace: Vec<Vec<String>>,
}

fn run(kind: Kind, me: Lib, child: Lib, max: usize, encs: &str, mode: &str) -> Outcome {
    run_with(kind, me, child, max, encs, mode, Some("1073741824"), true)
}

/// `vmax`: PVM_VMREAD_MAX for both tasks (None: the library's default ceiling); `arena`: false
/// sets PVM_NO_ARENA for both (every read then goes through `process_vm_readv`).
#[allow(clippy::too_many_arguments)]
fn run_with(
    kind: Kind,
    me: Lib,
    child: Lib,
    max: usize,
    encs: &str,
    mode: &str,
    vmax: Option<&str>,
    arena: bool,
) -> Outcome {
    let vm = Vm::start(kind, &format!("vmread-{mode}"));
    let exe = interop_tests::build_c("vmread_x", PROGRAM, &["-O2"]);
    let trace = vm.tmp.path().join("vmread-trace");
    let mut c = vm.command(exe.to_str().unwrap(), &[&max.to_string(), encs, mode], me, child);
    // Every size by descriptor, above the library's default ceiling (VMREAD_MAX) too, unless
    // the test is about that ceiling.
    c.env("PVM_VMREAD_TRACE", &trace);
    match vmax {
        Some(v) => c.env("PVM_VMREAD_MAX", v),
        None => c.env_remove("PVM_VMREAD_MAX"),
    };
    if arena {
        c.env_remove("PVM_NO_ARENA");
    } else {
        c.env("PVM_NO_ARENA", "1");
    }
    if child == Lib::Shim {
        c.env(
            "PVM_EXPORT",
            if arena {
                "LD_LIBRARY_PATH:PVM_SHIM_TRACE:PVM_VMREAD_TRACE:PVM_VMREAD_MAX"
            } else {
                "LD_LIBRARY_PATH:PVM_SHIM_TRACE:PVM_VMREAD_TRACE:PVM_VMREAD_MAX:PVM_NO_ARENA"
            },
        );
    }
    let (code, out, err) =
        interop_tests::Proc::run_piped(&mut c, &format!("vmread {mode}"), std::time::Duration::from_secs(120));
    let log = vm.tmp.log();
    assert_eq!(code, Some(0), "{mode} {me:?}/{child:?}: {out}\n{err}\nlog:\n{log}");
    let (n, _) = expected(max, encs);
    let want = format!("parent ok {} bad 0 order 0\nchild ok {} bad 0 order 0\n", 3 * n, 3 * n);
    assert_eq!(out, want, "{mode} {me:?}/{child:?}: {err}\nlog:\n{log}");
    let shims = [me, child].iter().filter(|&&l| l == Lib::Shim).count();
    assert_eq!(vm.shim_tasks().len(), shims);
    let text = std::fs::read_to_string(&trace).unwrap_or_default();
    let mut by_task: Vec<(String, Vec<String>)> = Vec::new();
    for l in text.lines() {
        let who = l.split(' ').next().unwrap_or("").to_string();
        match by_task.iter_mut().find(|(w, _)| *w == who) {
            Some((_, v)) => v.push(l.to_string()),
            None => by_task.push((who, vec![l.to_string()])),
        }
    }
    Outcome {
        out,
        trace: by_task.into_iter().map(|(_, v)| v).collect(),
    }
}

fn count(lines: &[String], what: &str) -> usize {
    lines.iter().filter(|l| l.split(' ').nth(2) == Some(what)).count()
}

/// Every size around the threshold up to 64 MB, Raw, Default and InPlace, both directions at
/// once, on the legacy daemon: every big message from either side is read from the sender's
/// memory and arrives byte for byte, in order with the small ones around it.
#[test]
fn large_messages_are_read_from_the_senders_memory() {
    let (max, encs) = (64 << 20, "rdi");
    let o = run(Kind::Legacy, Lib::Shim, Lib::Shim, max, encs, "normal");
    let (_, eligible) = expected(max, encs);
    assert_reads(&o, eligible, eligible);
    for t in &o.trace {
        assert_eq!(count(t, "inline"), 0, "{t:#?}");
    }
    // On pvmd-rs too (the daemon only relays the route handshake), with the library's default
    // ceilings: the packed bodies live in the senders' shared arenas, so every size up to
    // 16 MB goes by descriptor and is copied from the arena.
    let o = run_with(Kind::Ours, Lib::Shim, Lib::Shim, 16 << 20, "r", "normal", None, true);
    let (_, eligible) = expected(16 << 20, "r");
    assert_reads(&o, eligible, eligible);
    // Without the arena, process_vm_readv reads them, and 16 MB, above VMREAD_MAX, goes through
    // the socket (no descriptor).
    let o = run_with(Kind::Ours, Lib::Shim, Lib::Shim, 16 << 20, "r", "normal", None, false);
    let (_, eligible) = expected(4 << 20, "r");
    assert_reads(&o, eligible, 0);
    for t in &o.trace {
        assert!(!t.iter().any(|l| l.contains(" 16777224")), "{t:#?}");
    }
}

/// The daemon route on pvmd-rs (no direct route asked for): each large message of one shim task
/// to another goes to the daemon by descriptor, is copied once into the daemon's arena and is
/// read from there by the receiver (pvmd-rs `server/arelay.rs`), byte for byte and in order with
/// the small messages around it, both tasks sending at once, in every encoding.
#[test]
fn large_messages_on_the_daemon_route_pass_through_the_daemons_arena() {
    let (max, encs) = (16 << 20, "rdi");
    let o = run(Kind::Ours, Lib::Shim, Lib::Shim, max, encs, "pvmd");
    let (_, eligible) = expected(max, encs);
    assert_eq!(o.trace.len(), 2, "{:#?}", o.trace);
    for t in &o.trace {
        assert_eq!(count(t, "sent"), eligible, "{t:#?}");
        assert_eq!(count(t, "relay"), eligible, "{t:#?}");
        assert!(t
            .iter()
            .filter(|l| l.split(' ').nth(2) == Some("relay"))
            .all(|l| l.ends_with(" pvmd")));
        assert_eq!(
            count(t, "read") + count(t, "relay-inline") + count(t, "sent-inline"),
            0,
            "{t:#?}"
        );
    }
    // Receivers that never unpack the large messages: each next receive finishes the body
    // (and answers the daemon, whose claim on the connection ends), no hang.
    let o = run(Kind::Ours, Lib::Shim, Lib::Shim, max, "r", "pvmd-skip");
    let (_, eligible_r) = expected(max, "r");
    for t in &o.trace {
        assert_eq!(count(t, "relay"), eligible_r, "{t:#?}");
    }
    // A receiver that cannot read the daemon's arena answers "inline" once: the daemon writes
    // that message itself, in its place in the order, and the rest to that task the ordinary
    // way; its own sends still go by descriptor.
    let (_, eligible) = expected(max, "rd");
    let o = run(Kind::Ours, Lib::Shim, Lib::Shim, max, "rd", "pvmd-fail");
    let all: Vec<String> = o.trace.concat();
    let inline: Vec<&String> = all
        .iter()
        .filter(|l| l.split(' ').nth(2) == Some("relay-inline"))
        .collect();
    assert_eq!(inline.len(), 1, "{all:#?}");
    assert_eq!(count(&all, "relay"), eligible, "only the parent's reads: {all:#?}");
    assert_eq!(count(&all, "sent"), 2 * eligible, "{all:#?}");
    // A legacy-library receiver gets ordinary messages from the daemon; the shim sender still
    // hands them over by descriptor. On the legacy daemon nothing of this is offered.
    let o = run(Kind::Ours, Lib::Shim, Lib::Legacy, max, "rd", "pvmd");
    let all: Vec<String> = o.trace.concat();
    assert_eq!(count(&all, "sent"), eligible, "{all:#?}");
    assert_eq!(count(&all, "relay"), 0, "{all:#?}");
    let o = run(Kind::Legacy, Lib::Shim, Lib::Shim, max, "rd", "pvmd");
    let all: Vec<String> = o.trace.concat();
    assert!(all.is_empty(), "{all:#?}");
}

/// Both tasks traced, and each read `reads` descriptors, `from_arena` of them from the sender's
/// shared arena.
fn assert_reads(o: &Outcome, reads: usize, from_arena: usize) {
    assert_eq!(o.trace.len(), 2, "{:#?}", o.trace);
    for t in &o.trace {
        assert_eq!(count(t, "read"), reads, "{t:#?}");
        assert_eq!(arena_reads(t), from_arena, "{t:#?}");
    }
}

/// Reads copied from the sender's shared arena (trace lines `... read <bytes> arena`).
fn arena_reads(lines: &[String]) -> usize {
    lines.iter().filter(|l| l.ends_with(" arena")).count()
}

/// A receiver that cannot read (forced with PVM_VMREAD_FAIL, or a real EPERM: the child drops
/// CAP_SYS_PTRACE, so reading its parent, which keeps it, is refused) answers "inline": the
/// message comes the ordinary way and the route stays inline both ways from then on.
#[test]
fn a_refused_read_falls_back_to_the_socket() {
    let (max, encs) = (1048579, "rd");
    for (mode, why) in [("fail", "-4"), ("eperm", "1")] {
        let o = run(Kind::Legacy, Lib::Shim, Lib::Shim, max, encs, mode);
        let all: Vec<String> = o.trace.concat();
        let inline: Vec<&String> = all.iter().filter(|l| l.contains(" inline ")).collect();
        assert_eq!(inline.len(), 1, "{mode}: {all:#?}");
        assert_eq!(inline[0].rsplit(' ').next(), Some(why), "{mode}: {all:#?}");
        // At most the one descriptor the child sent while its first answer was under way was
        // read by the parent; nothing after the fallback.
        assert!(count(&all, "read") <= 1, "{mode}: {all:#?}");
        assert!(o.out.contains("child ok"));
    }
}

/// Not negotiated: a child with PVM_NO_VMREAD, or a legacy-library task on either end, never
/// sees a descriptor (their bytes are today's), and everything arrives.
#[test]
fn without_the_capability_nothing_changes() {
    let o = run(Kind::Legacy, Lib::Shim, Lib::Shim, 1048579, "rd", "nocap");
    assert!(o.trace.is_empty(), "{:#?}", o.trace);
    for (me, child) in [(Lib::Shim, Lib::Legacy), (Lib::Legacy, Lib::Shim)] {
        let o = run(Kind::Legacy, me, child, 1048579, "rdi", "normal");
        assert!(o.trace.is_empty(), "{me:?}/{child:?}: {:#?}", o.trace);
    }
}
