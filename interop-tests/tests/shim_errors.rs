//! Bad use and corner cases give the legacy return codes, pvm_errno and messages: one C
//! program, run on the legacy library and on ours against the legacy daemon (and with no
//! daemon at all), must print the same.

use interop_tests::shim::{normalise, shim_dir, Lib, Vm};
use interop_tests::Kind;
use std::process::Command;

const PROGRAM: &str = r#"
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <pvm3.h>
extern int pvm_errno;
#define P(label, expr) do { int rc_ = (expr); printf("%-28s rc=%d errno=%d\n", label, rc_, pvm_errno); fflush(stdout); fflush(stderr); } while (0)
int main(int argc, char **argv) {
    int me, b, b2, x = 5, y[4], n, na, i, ctx, tid, *sibs;
    char s[64];
    struct pvmhostinfo *hi;
    struct pvmtaskinfo *ti;
    struct pvmminfo mi;
    struct timeval tv;
    double d = 0;
    int daemon = argc > 1;

    me = pvm_mytid();
    printf("enrolled %d\n", me > 0);
    P("parent", pvm_parent());
    P("send tid 0", pvm_send(0, 1));
    P("initsend bad enc", pvm_initsend(77));
    b = pvm_initsend(PvmDataDefault);
    printf("initsend ok %d\n", b > 0);
    P("send bad tid", pvm_send(-23, 1));
    P("send bad tag", pvm_send(0x40fff, -5));
    P("freebuf unknown", pvm_freebuf(9999));
    P("freebuf 0", pvm_freebuf(0));
    P("freebuf -1", pvm_freebuf(-1));
    P("pkint", pvm_pkint(&x, 1, 1));
    P("pkint bad stride", pvm_pkint(&x, 1, 0));
    P("pkstr", pvm_pkstr("hello"));
    P("setrbuf sbuf", pvm_setrbuf(pvm_getsbuf()) >= 0);
    P("upkint", pvm_upkint(y, 1, 1));
    printf("value %d\n", y[0]);
    P("upkstr", pvm_upkstr(s));
    printf("string %s\n", s);
    P("upkint past end", pvm_upkint(y, 1, 1));
    /* One buffer is the send or the receive buffer, never both; entering unpacking mode
       rewinds, staying in it does not; packing after a flip appends (raw; XDR differs,
       see docs/extensions.md). */
    P("sbuf after setrbuf", pvm_getsbuf());
    P("setrbuf rbuf", pvm_setrbuf(pvm_getrbuf()) >= 0);
    P("upkint not rewound", pvm_upkint(y, 1, 1));
    P("setsbuf rbuf", pvm_setsbuf(pvm_getrbuf()) >= 0);
    P("rbuf after setsbuf", pvm_getrbuf());
    P("setrbuf it again", pvm_setrbuf(pvm_getsbuf()) >= 0);
    y[0] = 0;
    P("upkint rewound", pvm_upkint(y, 1, 1));
    printf("value again %d\n", y[0]);
    P("upkstr rewound", pvm_upkstr(s));
    pvm_initsend(PvmDataRaw);
    P("raw pkint", pvm_pkint(&x, 1, 1));
    P("raw setrbuf", pvm_setrbuf(pvm_getsbuf()) >= 0);
    P("raw upkint", pvm_upkint(y, 1, 1));
    P("raw setsbuf", pvm_setsbuf(pvm_getrbuf()) >= 0);
    x = 6;
    P("raw pkint appended", pvm_pkint(&x, 1, 1));
    P("raw setrbuf again", pvm_setrbuf(pvm_getsbuf()) >= 0);
    y[0] = y[1] = 0;
    P("raw upkint first", pvm_upkint(y, 1, 1));
    P("raw upkint second", pvm_upkint(y + 1, 1, 1));
    printf("raw values %d %d\n", y[0], y[1]);
    x = 5;
    P("bufinfo 0", pvm_bufinfo(0, &n, &n, &n));
    P("bufinfo unknown", pvm_bufinfo(4242, &n, &n, &n));
    b2 = pvm_mkbuf(PvmDataRaw);
    P("freebuf", pvm_freebuf(b2));
    P("freebuf again", pvm_freebuf(b2));
    P("setsbuf freed", pvm_setsbuf(b2));
    P("setrbuf freed", pvm_setrbuf(b2));
    pvm_setrbuf(0);
    P("upk no rbuf", pvm_upkint(y, 1, 1));
    P("getopt bad", pvm_getopt(99));
    P("setopt route 0", pvm_setopt(PvmRoute, 0));
    P("setopt route direct", pvm_setopt(PvmRoute, PvmRouteDirect));
    P("getopt route", pvm_getopt(PvmRoute));
    P("setopt fragsize bad", pvm_setopt(PvmFragSize, 10));
    P("tidtohost", pvm_tidtohost(0x40005));
    if (!daemon) {
        P("nrecv", pvm_nrecv(-1, -1));
        pvm_perror("nodaemon");
        return 0;
    }
    P("nrecv none", pvm_nrecv(-1, 77));
    P("probe none", pvm_probe(-1, 77));
    tv.tv_sec = 0; tv.tv_usec = 100000;
    P("trecv timeout", pvm_trecv(-1, 77, &tv));
    pvm_initsend(PvmDataDefault);
    pvm_pkint(&x, 1, 1);
    P("send self", pvm_send(me, 9));
    b = pvm_recv(-1, 9);
    printf("recv self %d\n", b > 0);
    P("bufinfo", pvm_bufinfo(b, &n, &i, &tid));
    printf("bufinfo len %d tag %d self %d\n", n, i, tid == me);
    P("getminfo", pvm_getminfo(b, &mi));
    printf("minfo len %d tag %d ctx %d enc %x src-self %d dst-self %d\n", mi.len, mi.tag, mi.ctx, mi.enc, mi.src == me, mi.dst == me);
    P("upkint", pvm_upkint(y, 1, 1));
    P("upkdouble past end", pvm_upkdouble(&d, 1, 1));
    P("packf", pvm_packf("%+ %d %s %3d", PvmDataDefault, 11, "str", y));
    P("send self packf", pvm_send(me, 10));
    P("recv", pvm_recv(me, 10) > 0);
    y[0] = y[1] = y[2] = 0;
    P("unpackf", pvm_unpackf("%d %s %3d", &x, s, y));
    printf("unpackf %d %s %d\n", x, s, y[0]);
    y[0] = 1; y[1] = 2; y[2] = 3;
    P("psend self", pvm_psend(me, 11, y, 3, PVM_INT));
    memset(y, 0, sizeof y);
    P("precv", pvm_precv(-1, 11, y, 4, PVM_INT, &tid, &i, &n));
    printf("precv %d %d %d tag %d len %d\n", y[0], y[1], y[2], i, n);
    P("mcast self only", pvm_mcast(&me, 1, 12));
    P("nrecv mcast self", pvm_nrecv(-1, 12) > 0);
    P("pstat no task", pvm_pstat(0x40fff));
    P("pstat self", pvm_pstat(me));
    P("mstat no host", pvm_mstat("no-such-host"));
    P("notify bad kind", pvm_notify(99, 1, 1, &me));
    P("notify bad tag", pvm_notify(PvmTaskExit, -3, 1, &me));
    P("spawn count 0", pvm_spawn("hello_other", 0, 0, "", 0, &tid));
    P("spawn no file", pvm_spawn("no-such-program-xyz", 0, 0, "", 1, &tid));
    printf("spawn tid %d\n", tid);
    P("siblings", pvm_siblings(&sibs));
    printf("sibling self %d\n", sibs[0] == me);
    P("config", pvm_config(&n, &na, &hi));
    printf("config %d hosts, %d arch, arch %s speed %d\n", n, na, hi[0].hi_arch, hi[0].hi_speed);
    P("archcode", pvm_archcode(hi[0].hi_arch));
    P("tasks", pvm_tasks(0, &n, &ti));
    printf("tasks %d, me listed %d\n", n, n > 0 && ti[0].ti_tid == me);
    P("recvinfo missing", pvm_recvinfo("shim-test-none", 0, PvmMboxDefault));
    P("delinfo missing", pvm_delinfo("shim-test-none", 0, 0));
    pvm_initsend(PvmDataDefault);
    x = 4242;
    pvm_pkint(&x, 1, 1);
    P("putinfo", pvm_putinfo("shim-test", pvm_getsbuf(), PvmMboxDefault));
    P("putinfo again", pvm_putinfo("shim-test", pvm_getsbuf(), PvmMboxDefault));
    P("recvinfo", pvm_recvinfo("shim-test", 0, PvmMboxDefault) > 0);
    x = 0;
    P("upk info", pvm_upkint(&x, 1, 1));
    printf("info %d\n", x);
    P("delinfo", pvm_delinfo("shim-test", 0, 0));
    ctx = pvm_newcontext();
    printf("newcontext %d\n", ctx > 0);
    P("setcontext", pvm_setcontext(ctx));
    P("getcontext", pvm_getcontext() == ctx);
    P("setcontext back", pvm_setcontext(0) == ctx);
    P("freecontext", pvm_freecontext(ctx));
    P("hostsync", pvm_hostsync(pvm_tidtohost(me), 0, 0));
    P("kill no task", pvm_kill(0x40fff));
    P("sendsig no task", pvm_sendsig(0x40fff, 0));
    P("addmhf null", pvm_addmhf(-1, 1, 0, 0));
    P("delmhf unknown", pvm_delmhf(4242));
    pvm_perror("after");
    P("exit", pvm_exit());
    return 0;
}
"#;

fn run(vm: Option<&Vm>, lib: Lib) -> (String, String) {
    let exe = compile();
    let mut c = match vm {
        Some(vm) => {
            let mut c = vm.command(exe.to_str().unwrap(), &["daemon"], lib, lib);
            c.env_remove("PVM_SHIM_TRACE");
            c
        }
        None => {
            let mut c = Command::new(&exe);
            c.env("PVM_ALLOW_ROOT", "1")
                .env("PVM_TMP", std::env::temp_dir().join("shim-no-daemon-here"))
                .env_remove("PVMSOCK");
            if lib == Lib::Shim {
                c.env("LD_LIBRARY_PATH", shim_dir());
            } else {
                c.env_remove("LD_LIBRARY_PATH");
            }
            c
        }
    };
    c.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let (_, so, se) = interop_tests::Proc {
        child: c.spawn().expect("run error test program"),
        name: "errors".into(),
    }
    .wait(interop_tests::TIMEOUT);
    let pid = |s: String| {
        // pids differ between runs: "[pid1234]" -> "[pidN]".
        let mut o = String::new();
        let mut rest = s.as_str();
        while let Some(i) = rest.find("[pid") {
            o.push_str(&rest[..i + 4]);
            rest = &rest[i + 4..];
            let n = rest.chars().take_while(|c| c.is_ascii_digit()).count();
            o.push('N');
            rest = &rest[n..];
        }
        o.push_str(rest);
        normalise(&o)
    };
    (pid(so), pid(se))
}

fn compile() -> std::path::PathBuf {
    interop_tests::build_c("errors", PROGRAM, &[])
}

#[test]
fn bad_use_with_daemon_same_as_legacy() {
    let legacy = {
        let vm = Vm::start(Kind::Legacy, "shim-err-l");
        run(Some(&vm), Lib::Legacy)
    };
    let ours = {
        let vm = Vm::start(Kind::Legacy, "shim-err-s");
        run(Some(&vm), Lib::Shim)
    };
    assert!(
        legacy.0.contains("exit"),
        "legacy run incomplete:\n{}\n{}",
        legacy.0,
        legacy.1
    );
    if std::env::var_os("SHIM_ERR_DUMP").is_some() {
        std::fs::write("/tmp/shim-err-legacy.txt", format!("{}\n----\n{}", legacy.0, legacy.1)).unwrap();
        std::fs::write("/tmp/shim-err-ours.txt", format!("{}\n----\n{}", ours.0, ours.1)).unwrap();
    }
    let l: Vec<&str> = legacy.0.lines().collect();
    let o: Vec<&str> = ours.0.lines().collect();
    for (i, (a, b)) in l.iter().zip(o.iter()).enumerate() {
        assert_eq!(
            b, a,
            "stdout line {i} differs (left ours, right legacy)\nours:\n{}\nours stderr:\n{}",
            ours.0, ours.1
        );
    }
    assert_eq!(o.len(), l.len(), "ours:\n{}", ours.0);
    assert_eq!(ours.1, legacy.1, "stderr differs");
}

/// The same program on pvmd-rs: our library must behave like the legacy library does there.
#[test]
fn bad_use_on_our_daemon_same_as_legacy_library() {
    let legacy = {
        let vm = Vm::start(Kind::Ours, "shim-err-ol");
        run(Some(&vm), Lib::Legacy)
    };
    let ours = {
        let vm = Vm::start(Kind::Ours, "shim-err-os");
        run(Some(&vm), Lib::Shim)
    };
    assert!(
        legacy.0.contains("exit"),
        "legacy library on pvmd-rs incomplete:\n{}\n{}",
        legacy.0,
        legacy.1
    );
    assert_eq!(ours.0, legacy.0, "stdout (ours stderr:\n{})", ours.1);
    assert_eq!(ours.1, legacy.1, "stderr");
}

#[test]
fn bad_use_without_daemon_same_as_legacy() {
    let legacy = run(None, Lib::Legacy);
    let ours = run(None, Lib::Shim);
    assert!(legacy.0.contains("tidtohost"), "{}", legacy.0);
    assert_eq!(ours.0, legacy.0);
    // Legacy retries the daemon a varying number of times per call; the error lines (those
    // naming a pvm_ function) must be the same.
    let calls = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| l.contains("(): ") || l.contains("nodaemon"))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(calls(&ours.1), calls(&legacy.1));
}
