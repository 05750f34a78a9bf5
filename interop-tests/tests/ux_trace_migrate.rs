//! Trace events of pvm_checkpoint, pvm_migrate and pvm_restart (pvm-rs event ids 120..=122,
//! docs/tracing.md): a job traced by `pvmtrace collect` on two pvmd-rs namespace hosts
//! checkpoints its worker (CRIU), asks for a restart that is refused (the worker is alive),
//! and moves the worker to the other host;
//! the collector must receive each call's entry and exit records with the target task, the
//! result, the epoch and the new host, and `pvmtrace html` must draw them as marks on the
//! worker's line. The worker keeps answering after each operation, traced on its new host.

mod mig_common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use interop_tests::netns::Cluster;
use interop_tests::shim::{shim_dir, LDSO, LEGACY_LIB_DIR};
use interop_tests::{Proc, TIMEOUT};
use mig_common::{build_helper, mig_lines, pvmd_command, wait_or_kill};

/// argv: host 1, host 2, result file. The worker answers each number with number + 1 until -1.
const JOB: &str = r#"
#include <stdio.h>
#include "pvm3.h"
static int ask(int w, int v) {
    pvm_initsend(PvmDataDefault); pvm_pkint(&v, 1, 1); pvm_send(w, 1);
    pvm_recv(w, 2); pvm_upkint(&v, 1, 1);
    return v;
}
int main(int argc, char **argv) {
    int w, v, e, h, r, bad = 0, home;
    FILE *f;
    char *here, *there;
    /* The collector is the master's parent too: the worker is told by its argument. */
    if (argc == 2) {
        for (;;) {
            pvm_recv(pvm_parent(), 1); pvm_upkint(&v, 1, 1);
            if (v < 0) break;
            v++;
            pvm_initsend(PvmDataDefault); pvm_pkint(&v, 1, 1); pvm_send(pvm_parent(), 2);
        }
        pvm_exit();
        return 0;
    }
    pvm_setopt(PvmAutoErr, 0);
    /* The worker starts on the master's host (one-task checkpoints are asked of the pvmd that
       spawned the task), then moves to the other one. Host 1's tids are 0x4xxxx. */
    home = (pvm_mytid() & 0x3c0000) == 0x40000;
    here = home ? argv[1] : argv[2];
    there = home ? argv[2] : argv[1];
    if (pvm_spawn(argv[0], (char *[]){"worker", 0}, PvmTaskHost, here, 1, &w) != 1) { printf("spawn failed %d\n", w); pvm_exit(); return 1; }
    if (ask(w, 1) != 2) bad++;
    e = pvm_checkpoint(w, 0);
    if (ask(w, 10) != 11) bad++;
    /* The worker is alive here: a restart is refused. */
    r = pvm_restart(w, -1);
    if (ask(w, 20) != 21) bad++;
    h = pvm_migrate(w, there);
    if (ask(w, 30) != 31) bad++;
    f = fopen(argv[3], "w");
    if (f) { fprintf(f, "worker %x epoch %d host %x restart %d bad %d\n", w, e, h, r, bad); fclose(f); }
    v = -1;
    pvm_initsend(PvmDataDefault); pvm_pkint(&v, 1, 1); pvm_send(w, 1);
    pvm_exit();
    return 0;
}
"#;

fn pvmtrace() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cargo = option_env!("CARGO").unwrap_or("cargo");
    let st = Command::new(cargo)
        .args(["build", "--quiet", "-p", "pvm-console"])
        .current_dir(&root)
        .status()
        .expect("run cargo build -p pvm-console");
    assert!(st.success(), "cargo build -p pvm-console failed");
    interop_tests::target_dir().join("debug").join("pvmtrace")
}

#[test]
fn migrate_checkpoint_restart_are_traced_and_drawn() {
    interop_tests::require_legacy_console();
    interop_tests::require_criu();
    build_helper();
    let trace_bin = pvmtrace();
    let job = mig_common::gcc("job", JOB, true);
    let mut c = Cluster::named("hpeople", "ux-trace-mig", 2);
    c.use_nsenter();
    let ips: Vec<String> = (1..=2).map(|k| c.host(k).ip.clone()).collect();
    let hf = c.dir.path().join("hostfile");
    let pvmd = interop_tests::our_pvmd();
    std::fs::write(&hf, format!("{}\n{} dx={}\n", ips[0], ips[1], pvmd.display())).unwrap();
    let mut cmd = pvmd_command(&c, 1);
    cmd.arg(format!("-n{}", ips[0])).arg(&hf);
    let mut m = Proc {
        child: cmd.spawn().expect("start our pvmd"),
        name: "our master pvmd".into(),
    };
    assert!(m.read_line(TIMEOUT).starts_with('/'), "{}", c.logs());
    // Both daemons have exchanged their migration features once both logs show the window.
    let conf = || c.console_lists_hosts(1, 2);
    assert!(
        c.wait_for(Duration::from_secs(20), || {
            c.log(1).contains("window 88") && c.log(2).contains("window 88") && conf()
        }),
        "hosts or DM_XCAPS missing\n{}",
        c.logs()
    );

    let trace = c.dir.path().join("mig.trace");
    let result = c.dir.path().join("result.txt");
    // The collector on the legacy library (ld.so --library-path), the job on ours.
    let mut run = c.command(1, Path::new(LDSO));
    run.args(["--library-path", LEGACY_LIB_DIR])
        .arg(&trace_bin)
        .args(["collect", "-o", trace.to_str().unwrap(), "-t", "60", "--"])
        .arg(&job)
        .args([&ips[0], &ips[1]])
        .arg(&result)
        .env("LD_LIBRARY_PATH", shim_dir())
        .env("PVM_EXPORT", "LD_LIBRARY_PATH");
    let (code, out, err) = wait_or_kill(run.spawn().expect("run pvmtrace"), Duration::from_secs(90));
    let text = std::fs::read_to_string(&trace).unwrap_or_default();
    let logs = || format!("{out}\n{err}\n{text}\n{}\n{}", mig_lines(&c), c.logs());
    assert_eq!(code, Some(0), "pvmtrace collect: {}", logs());
    // The job's own view: every answer right after each operation.
    let res = std::fs::read_to_string(&result).unwrap_or_default();
    assert!(
        res.contains(" epoch 1 host ") && res.ends_with(" bad 0\n"),
        "job: {res}\n{}",
        logs()
    );
    let line = |name: &str, phase: &str| -> Vec<&str> {
        text.lines()
            .filter(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                f.len() > 3 && f[2] == name && f[3] == phase
            })
            .collect()
    };
    let field = |l: &str, k: &str| -> Option<i64> {
        l.split(' ')
            .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
            .and_then(|v| v.parse().ok())
    };
    let ck_in = line("checkpoint", "entry");
    let ck_out = line("checkpoint", "exit");
    let mg_in = line("migrate", "entry");
    let mg_out = line("migrate", "exit");
    let rs_in = line("restart", "entry");
    let rs_out = line("restart", "exit");
    for (what, v) in [
        ("checkpoint entry", &ck_in),
        ("checkpoint exit", &ck_out),
        ("migrate entry", &mg_in),
        ("migrate exit", &mg_out),
        ("restart entry", &rs_in),
        ("restart exit", &rs_out),
    ] {
        assert_eq!(v.len(), 1, "one {what} record expected: {}", logs());
    }
    let worker = field(ck_in[0], "TT").expect("TT in the checkpoint entry");
    // The master's host decides where the worker goes: the other host (hi_tid 0x40000 or
    // 0x80000, as pvm_config gives it).
    let master = ck_in[0]
        .split(' ')
        .nth(1)
        .and_then(|t| i64::from_str_radix(&t[1..], 16).ok())
        .unwrap_or(0);
    let (there_ip, there_tid) = if master & 0x3c0000 == 0x40000 {
        (ips[1].as_str(), 0x80000i64)
    } else {
        (ips[0].as_str(), 0x40000i64)
    };
    assert!(worker > 0, "{}", logs());
    assert_eq!(field(ck_in[0], "TF"), Some(0), "{}", logs());
    assert_eq!(field(ck_out[0], "TT"), Some(worker), "{}", logs());
    assert_eq!(
        field(ck_out[0], "CC"),
        Some(1),
        "the first checkpoint is epoch 1: {}",
        logs()
    );
    assert_eq!(field(ck_out[0], "WID"), Some(1), "{}", logs());
    assert_eq!(field(mg_in[0], "TT"), Some(worker), "{}", logs());
    assert!(mg_in[0].ends_with(&format!(" HN={there_ip}")), "{}", logs());
    assert_eq!(field(mg_out[0], "CC"), Some(there_tid), "{}", logs());
    assert_eq!(field(mg_out[0], "HPT"), Some(there_tid), "{}", logs());
    assert_eq!(field(rs_in[0], "WID"), Some(-1), "{}", logs());
    let rc = field(rs_out[0], "CC").unwrap_or(0);
    assert!((-100..0).contains(&rc), "restart of a live task must fail: {}", logs());
    assert_eq!(field(rs_out[0], "WID"), Some(-1), "{}", logs());
    // Entry before exit, and the worker's own records continue after its move (its recv of
    // the number 20 and 30, traced on host 2).
    let worker_tag = format!(" t{:x} ", worker);
    let after_move: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.contains(" migrate exit "))
        .filter(|l| l.contains(&worker_tag) && l.contains(" send "))
        .collect();
    assert!(after_move.len() >= 2, "the moved worker's sends are traced: {}", logs());

    // The diagram.
    let html = c.dir.path().join("mig.html");
    let o = Command::new(&trace_bin)
        .args(["html", trace.to_str().unwrap(), "-o", html.to_str().unwrap()])
        .output()
        .expect("pvmtrace html");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let page = std::fs::read_to_string(&html).expect("html page");
    let w = format!("t{worker:x}");
    for must in [
        format!("checkpoint {w} epoch 1"),
        format!("migrate {w} to host t{there_tid:x}"),
        format!("restart {w} failed ({rc})"),
    ] {
        assert!(page.contains(&must), "{must:?} not drawn:\n{page}");
    }
    assert_eq!(page.matches("class=\"mark op\"").count(), 3, "{page}");
    // And Chromium draws them: orange bands and diamonds next to the red message arrows.
    let px = interop_tests::shot::screenshot(&html, c.dir.path());
    assert!(px.red > 100 && px.orange > 200, "marks not drawn: {px:?}");
    eprintln!("screenshot: {px:?}");
    eprintln!("{}", String::from_utf8_lossy(&o.stdout));
    for l in text
        .lines()
        .filter(|l| l.contains("checkpoint ") || l.contains("migrate ") || l.contains("restart "))
    {
        eprintln!("{l}");
    }
}

/// Started from a shell under the legacy tracer: joins a group (our libgpvm3), checkpoints its
/// worker, asks for a move with no other host (refused), and a restart of the live worker
/// (refused), leaves the group.
const SHELL_JOB: &str = r#"
#include <stdio.h>
#include "pvm3.h"
int main(int argc, char **argv) {
    int w, v = 1, e, h, r;
    if (argc == 2) {
        /* Enrolled (and announced to the pvmd as parkable) before the checkpoint is asked. */
        pvm_initsend(PvmDataDefault); pvm_pkint(&v, 1, 1); pvm_send(pvm_parent(), 2);
        pvm_recv(pvm_parent(), 1);
        pvm_exit();
        return 0;
    }
    pvm_setopt(PvmAutoErr, 0);
    if (pvm_spawn(argv[0], (char *[]){"worker", 0}, PvmTaskDefault, "", 1, &w) != 1) { printf("spawn failed\n"); pvm_exit(); return 1; }
    pvm_recv(w, 2);
    pvm_joingroup("ltrc");
    e = pvm_checkpoint(w, 0);
    h = pvm_migrate(w, 0);
    r = pvm_restart(w, -1);
    pvm_initsend(PvmDataDefault); pvm_pkint(&v, 1, 1); pvm_send(w, 1);
    pvm_gsize("ltrc");
    pvm_lvgroup("ltrc");
    printf("epoch %d migrate %d restart %d\n", e, h, r);
    pvm_exit();
    return 0;
}
"#;

/// The legacy tracer (`/usr/bin/tracer`, built on the legacy tracer library libpvmtrc)
/// registered with pvm_reg_tracer on pvmd-rs, and a job on our library started from a shell
/// with `PVMTMASK` selecting the pvm-rs events: the tracer must take the records of event ids
/// 120..=122 (their descriptors name them, their data ids are legacy ones) without an error,
/// and write them to its SDDF trace file.
#[test]
fn the_legacy_tracer_accepts_the_extension_events() {
    use interop_tests::shim::{Lib, Vm};
    let tracer = Path::new("/usr/bin/tracer");
    assert!(
        tracer.exists(),
        "/usr/bin/tracer is missing: install the Debian pvm package"
    );
    interop_tests::require_criu();
    build_helper();
    let vm = Vm::start(interop_tests::Kind::Ours, "ux-trace-ltrc");
    // On our libpvm3 and our libgpvm3.
    let (_, gdir) = interop_tests::flib::our_libs();
    let job = {
        let dir =
            std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("ux-trace-ltrc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join("shjob.c");
        std::fs::write(&src, SHELL_JOB).unwrap();
        let exe = dir.join("shjob");
        let inc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../include");
        let o = Command::new("gcc")
            .arg("-o")
            .arg(&exe)
            .arg(&src)
            .arg("-I")
            .arg(inc)
            .arg("-L")
            .arg(&gdir)
            .arg("-L")
            .arg(shim_dir())
            .args(["-l:libgpvm3.so.3", "-l:libpvm3.so.3"])
            .output()
            .expect("gcc is required");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        exe
    };
    let sddf = vm.tmp.path().join("legacy.trf");
    let mut c = vm.command(
        tracer.to_str().unwrap(),
        &["-T", sddf.to_str().unwrap()],
        Lib::Legacy,
        Lib::Legacy,
    );
    c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null());
    let mut child = c.spawn().expect("start the legacy tracer");
    let stdin = child.stdin.take().expect("piped stdin");
    // Its output, read as it comes: registered (pvm_reg_tracer) once it printed its mask table.
    let said = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let reader = {
        let said = said.clone();
        let mut out = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                said.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
    };
    let t = Proc {
        child,
        name: "legacy tracer".into(),
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !said.lock().unwrap().contains("tracer> ") {
        assert!(
            std::time::Instant::now() < deadline,
            "the legacy tracer did not start:\n{}",
            said.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The mask: send, recv, spawn, exit, joingroup, gsize, lvgroup and the three pvm-rs events.
    let mut mask = vec![b'@'; 35];
    for k in [7usize, 15, 19, 22, 45, 47, 52, 120, 121, 122] {
        mask[k / 4] |= 1 << (k & 3);
    }
    let mask = String::from_utf8(mask).unwrap();
    let mut run = vm.command(job.to_str().unwrap(), &[], Lib::Shim, Lib::Shim);
    run.env(
        "LD_LIBRARY_PATH",
        format!("{}:{}", gdir.display(), shim_dir().display()),
    );
    // With all three set, the library does not take the tracer's own settings from its
    // mailbox entry (the legacy tracer's mask, "xpvm", names legacy events only).
    run.env("PVMTMASK", &mask)
        .env("PVMTRCBUF", "0")
        .env("PVMTRCOPT", "1")
        .env("PVM_EXPORT", "LD_LIBRARY_PATH:PVMTMASK:PVMTRCBUF:PVMTRCOPT");
    let p = Proc {
        child: run.spawn().expect("run the job"),
        name: "shell job".into(),
    };
    let (code, out, err) = p.wait(Duration::from_secs(60));
    assert_eq!(code, Some(0), "{out}\n{err}\n{}", vm.tmp.log());
    assert!(out.starts_with("epoch 1 migrate -"), "{out}\n{}", vm.tmp.log());
    // Let the tracer read what is queued, then end it (EOF on its input quits it).
    std::thread::sleep(Duration::from_millis(1500));
    drop(stdin);
    let _ = t.wait(Duration::from_secs(20));
    let _ = reader.join();
    let tout = said.lock().unwrap().clone();
    let trf = std::fs::read_to_string(&sddf).unwrap_or_default();
    eprintln!("the legacy tracer said:\n{tout}");
    for bad in ["Error", "Not Found", "Warning"] {
        assert!(!tout.contains(bad), "legacy tracer: {bad}:\n{tout}\n{trf}");
    }
    for l in trf
        .lines()
        .filter(|l| l.starts_with("\"checkpoint") || l.starts_with("\"migrate") || l.starts_with("\"restart"))
    {
        eprintln!("{l}");
    }
    // The records themselves, not only their descriptors: a checkpoint exit with epoch 1.
    assert!(
        trf.lines()
            .any(|l| l.starts_with("\"checkpoint(1.") && l.contains(", 1, 1 };;")),
        "no checkpoint exit record with epoch 1:\n{trf}"
    );
    // Our libgpvm3's group events, as the legacy tracer records them.
    for rec in ["\"joingroup(0.", "\"joingroup(1.", "\"gsize(1.", "\"lvgroup(0."] {
        assert!(trf.lines().any(|l| l.starts_with(rec)), "no {rec} record:\n{trf}");
    }
    assert!(
        trf.lines()
            .any(|l| l.starts_with("\"gsize(1.") && l.contains(", 1 };;")),
        "gsize exit with GS=1 expected:\n{trf}"
    );
    for name in ["checkpoint", "migrate", "restart"] {
        let names: Vec<&str> = trf.lines().filter(|l| l.starts_with('#')).collect();
        assert!(
            trf.contains(&format!("\"{name}")),
            "{name} not in the legacy tracer's file: {names:?}"
        );
    }
}
