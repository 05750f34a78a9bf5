//! Trace events from our library compared with the legacy library's: the same C program, run
//! traced by the `pvmtrace` collector (which itself runs on the legacy library) with every event
//! in the mask, once on each library, on the legacy daemon and on pvmd-rs. The event sequences
//! of each task must be equal after normalising what legitimately differs between runs (task
//! ids by role, times, buffer ids, user addresses, context numbers); the records of the system
//! message handlers (TC_SIBLINGS...), which legacy runs whenever input happens to be read, are
//! compared as a multiset of blocks.
//!
//! Also: pvm_reg_tracer's `###_PVM_TRACER_###` mailbox entry, and the trace/output options a
//! console-like program sees after setting its own destinations to -1 before enrolling.

use interop_tests::shim::{Lib, Vm};
use interop_tests::{Kind, TIMEOUT};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Parent spawns two copies of itself and exercises most traced calls; children receive from
/// the parent only (deterministic sources). Child 1 switches to buffered tracing, child 2 to
/// PvmTraceCount before exiting (a profiling record).
const PROG_C: &str = r#"
#include <stdio.h>
#include <string.h>
#include <pvm3.h>
#include <pvmtev.h>
static int hf(int mid) { return 0; }
int main(int argc, char **argv)
{
	int me = pvm_mytid(), tids[2], n, i, v = 7, w, mid, nh, na, nt, ctx, *sibs;
	struct pvmhostinfo *hi; struct pvmtaskinfo *ti; struct timeval tv = {0, 20000};
	char buf[64]; short sh[3] = {1, 2, 3}; long lg = 5; float f = 1.5; double d = 2.5;
	int targ[2] = {1, 2}, nres, res[4];
	if (argc < 2) {
		n = pvm_spawn(argv[0], (char *[]){"child", 0}, PvmTaskDefault, "", 2, tids);
		if (n != 2) { printf("spawn %d\n", n); pvm_exit(); return 1; }
		pvm_parent(); pvm_config(&nh, &na, &hi); pvm_tasks(0, &nt, &ti);
		pvm_mstat(hi[0].hi_name); pvm_pstat(tids[0]); pvm_archcode("LINUX64");
		pvm_archcode("NOSUCHARCH");
		pvm_getopt(PvmRoute); pvm_setopt(PvmAutoErr, 0); pvm_getopt(12345);
		pvm_setopt(PvmAutoErr, 1);
		pvm_notify(PvmTaskExit, 77, 2, tids);
		mid = pvm_mkbuf(PvmDataDefault); pvm_freebuf(mid); pvm_freebuf(mid);
		pvm_initsend(PvmDataDefault);
		pvm_pkint(&v, 1, 1); pvm_pkshort(sh, 3, 1); pvm_pklong(&lg, 1, 1); pvm_pkfloat(&f, 1, 1);
		pvm_pkdouble(&d, 1, 1); pvm_pkstr("hello"); pvm_pkbyte("abc", 3, 1);
		pvm_packf("%d %s", 42, "pf");
		pvm_getsbuf(); pvm_bufinfo(pvm_getsbuf(), &w, 0, 0); pvm_bufinfo(999, &w, 0, 0);
		pvm_mcast(tids, 2, 3);
		pvm_psend(tids[0], 4, &v, 1, PVM_INT);
		pvm_psend(tids[1], 4, &v, 1, PVM_INT);
		for (i = 0; i < 2; i++) { pvm_recv(tids[i], 5); pvm_upkint(&w, 1, 1); }
		pvm_nrecv(-1, 99); pvm_probe(-1, 99); pvm_trecv(-1, 99, &tv);
		pvm_initsend(PvmDataDefault); pvm_pkint(&v, 1, 1);
		pvm_putinfo("shimtrace_box", pvm_getsbuf(), PvmMboxDefault);
		pvm_recvinfo("shimtrace_box", 0, PvmMboxDefault);
		pvm_delinfo("shimtrace_box", 0, PvmMboxDefault);
		pvm_recvinfo("shimtrace_box", 0, PvmMboxDefault);
		ctx = pvm_newcontext(); pvm_setcontext(ctx); pvm_setcontext(pvm_getcontext());
		pvm_freecontext(ctx); pvm_setcontext(0);
		i = pvm_addmhf(-1, 55, -1, hf); pvm_delmhf(i); pvm_delmhf(i);
		pvm_tickle(1, targ, &nres, res);
		mid = pvm_setsbuf(pvm_mkbuf(PvmDataTrace));
		pvm_pkint(&v, 1, 1); pvm_pkstr("ud");
		pvm_send(PVM_TRACE_TID, PVM_TRACE_CODE);
		pvm_freebuf(pvm_setsbuf(mid));
		pvm_setrbuf(0); pvm_getrbuf(); pvm_sendsig(tids[0], 0);
		for (i = 0; i < 2; i++) pvm_recv(-1, 77);
		pvm_setopt(PvmSelfTraceOptions, PvmTraceTime);
		pvm_initsend(PvmDataDefault); pvm_pkint(&v, 1, 1);
	} else {
		if (pvm_siblings(&sibs) == 2 && sibs[0] == me)
			pvm_setopt(PvmSelfTraceBuffer, 300);
		pvm_recv(pvm_parent(), 3); pvm_upkint(&w, 1, 1); pvm_upkshort(sh, 3, 1);
		pvm_upklong(&lg, 1, 1); pvm_upkfloat(&f, 1, 1); pvm_upkdouble(&d, 1, 1);
		pvm_upkstr(buf); pvm_upkbyte(buf, 3, 1); pvm_unpackf("%d %s", &w, buf);
		pvm_upkint(&w, 1, 1);
		pvm_precv(pvm_parent(), 4, &w, 1, PVM_INT, 0, 0, 0);
		pvm_initsend(PvmDataRaw); pvm_pkint(&me, 1, 1); pvm_send(pvm_parent(), 5);
		if (pvm_siblings(&sibs) == 2 && sibs[1] == me)
			pvm_setopt(PvmSelfTraceOptions, PvmTraceCount);
		pvm_initsend(PvmDataDefault); pvm_pkint(&me, 1, 1);
	}
	pvm_exit();
	return 0;
}
"#;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The `pvmtrace` collector, built once.
fn pvmtrace() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = option_env!("CARGO").unwrap_or("cargo");
        let st = Command::new(cargo)
            .args(["build", "--quiet", "-p", "pvm-console"])
            .current_dir(workspace())
            .status()
            .expect("run cargo build -p pvm-console");
        assert!(st.success(), "cargo build -p pvm-console failed");
        std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace().join("target"))
            .join("debug")
            .join("pvmtrace")
    })
    .clone()
}

/// Compiles a C program against the legacy library into `dir`.
fn compile(dir: &Path, name: &str, src: &str) -> PathBuf {
    let c = dir.join(format!("{name}.c"));
    std::fs::write(&c, src).expect("write C source");
    let out = dir.join(name);
    let r = Command::new("gcc")
        .arg("-o")
        .arg(&out)
        .arg(&c)
        .arg("-lpvm3")
        .output()
        .unwrap_or_else(|e| panic!("gcc is required for this test: {e}"));
    assert!(r.status.success(), "gcc: {}", String::from_utf8_lossy(&r.stderr));
    out
}

/// Runs the program under `pvmtrace collect -m all` on a fresh daemon; the program and the
/// tasks it spawns use `lib`, the collector the legacy library. Returns the trace text.
fn collect(daemon: Kind, lib: Lib) -> String {
    let vm = Vm::start(daemon, "lb-trace");
    let prog = compile(vm.tmp.path(), "tprog", PROG_C);
    let trace = vm.tmp.path().join("t.trace");
    let (t, p) = (trace.to_str().unwrap(), prog.to_str().unwrap());
    let bin = pvmtrace();
    let (code, out, err) = vm.run(
        bin.to_str().unwrap(),
        &["collect", "-o", t, "-t", "20", "-m", "all", "--", p],
        Lib::Legacy,
        lib,
        None,
    );
    assert_eq!(
        code,
        Some(0),
        "{daemon:?}/{lib:?}: pvmtrace: {out}\n{err}\n{}",
        vm.tmp.log()
    );
    if lib == Lib::Shim {
        assert_eq!(
            vm.shim_tasks().iter().filter(|x| x.contains("tprog")).count(),
            3,
            "the program's three tasks must run on our library"
        );
    }
    let text = std::fs::read_to_string(&trace).expect("trace file");
    text.replace(vm.tmp.path().to_str().unwrap(), "TMP")
}

/// One task's normalised library events, and its handler blocks.
#[derive(Debug, Default, PartialEq)]
struct TaskEvents {
    seq: Vec<String>,
    handlers: Vec<String>,
}

/// Task ids by role: R (the program), C0/C1 (its children in spawn order), X (the collector),
/// others in order of appearance.
fn roles(lines: &[Vec<&str>]) -> BTreeMap<i64, String> {
    let mut m: BTreeMap<i64, String> = BTreeMap::new();
    let lib: Vec<&Vec<&str>> = lines.iter().filter(|l| l.len() > 3 && l[3] != "-").collect();
    let Some(first) = lib.first() else { return m };
    let root = i64::from_str_radix(&first[1][1..], 16).unwrap_or(0);
    m.insert(root, "R".into());
    for l in &lib {
        if i64::from_str_radix(&l[1][1..], 16).unwrap_or(0) != root {
            continue;
        }
        for kv in &l[4..] {
            if let Some(v) = kv.strip_prefix("STL=") {
                for (i, t) in v.split(',').enumerate() {
                    m.entry(t.parse().unwrap_or(0)).or_insert(format!("C{i}"));
                }
            }
            if l[2] == "parent" && l[3] == "exit" {
                if let Some(v) = kv.strip_prefix("PT=") {
                    m.entry(v.parse().unwrap_or(0)).or_insert("X".into());
                }
            }
        }
    }
    m
}

/// Normalised value of one datum.
fn value(k: &str, v: &str, tids: &BTreeMap<i64, String>, ev: &str) -> String {
    let tid = |s: &str| -> String {
        let n: i64 = s.parse().unwrap_or(0);
        if n > 0x40000 && n != 524287 {
            tids.get(&n).cloned().unwrap_or_else(|| "T?".into())
        } else {
            s.to_string()
        }
    };
    match k {
        "SRC" | "DST" | "TT" | "PT" | "MT" | "IST" | "RST" | "TID" => tid(v),
        "STL" | "SIB" | "MDL" | "NTL" => v.split(',').map(tid).collect::<Vec<_>>().join(","),
        // Buffer ids: legacy reuses freed ids, we count up.
        "MB" | "MSB" | "MRB" | "CR" | "CD" if v.parse::<i64>().unwrap_or(0) > 0 => "B".into(),
        // Addresses of the program's variables.
        "PDA" => "A".into(),
        // Context numbers come from the daemon's counter.
        "CXN" | "CXS" | "CXC" | "CXF" if v.parse::<i64>().unwrap_or(0) > 0 && v != "524287" => "ctx".into(),
        "CC" if ev == "setcontext" && v.parse::<i64>().unwrap_or(0) > 0 && v != "524287" => "ctx".into(),
        // Wall-clock totals of PvmTraceTime; the task count includes tasks still being reaped.
        "TGS" | "TGU" | "TNT" | "TUS" | "TUU" | "TSS" | "TSU" => "n".into(),
        _ => v.to_string(),
    }
}

/// The closing calls of legacy's mesg_input around a handler: context back, send and receive
/// buffers restored and freed.
const HANDLER_TAIL: [&str; 10] = [
    "setcontext entry",
    "setcontext exit",
    "setsbuf entry",
    "setsbuf exit",
    "freebuf entry",
    "freebuf exit",
    "setrbuf entry",
    "setrbuf exit",
    "freebuf entry",
    "freebuf exit",
];

fn parse(text: &str) -> (BTreeMap<String, TaskEvents>, Vec<String>) {
    let lines: Vec<Vec<&str>> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split_whitespace().collect())
        .filter(|l: &Vec<&str>| l.len() >= 4)
        .collect();
    let tids = roles(&lines);
    let mut per: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut daemon = Vec::new();
    for l in &lines {
        let t = i64::from_str_radix(&l[1][1..], 16).unwrap_or(0);
        let who = tids.get(&t).cloned().unwrap_or_else(|| format!("t{t:x}"));
        let mut s = format!("{} {}", l[2], l[3]);
        for kv in &l[4..] {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            s.push_str(&format!(" {k}={}", value(k, v, &tids, l[2])));
        }
        if l[3] == "-" {
            // Other tasks (the console polling for the tracer's registration) vary in number.
            if tids.contains_key(&t) {
                daemon.push(format!("{who} {s}"));
            }
        } else {
            per.entry(who).or_default().push(s);
        }
    }
    daemon.sort();
    let mut out = BTreeMap::new();
    for (who, seq) in per {
        let mut te = TaskEvents::default();
        let mut i = 0;
        while i < seq.len() {
            if seq[i].starts_with("mhf_invoke entry") && seq[i].contains("RCX=524287") {
                // A system handler's block runs to the first closing pattern.
                let end = (i + 1..seq.len().saturating_sub(HANDLER_TAIL.len() - 1))
                    .find(|&j| HANDLER_TAIL.iter().enumerate().all(|(k, p)| seq[j + k].starts_with(p)));
                if let Some(j) = end {
                    // Which buffers were current depends on when the handler ran.
                    let mut b = seq[i..j + HANDLER_TAIL.len()].join(" | ");
                    for k in ["MB", "MSB", "MRB"] {
                        for v in ["0", "B"] {
                            b = b.replace(&format!(" {k}={v} "), &format!(" {k}=b "));
                            b = b.replace(&format!(" {k}={v}|"), &format!(" {k}=b|"));
                        }
                    }
                    te.handlers.push(b);
                    i = j + HANDLER_TAIL.len();
                    continue;
                }
                // A mask without the buffer calls: the mhf_invoke record alone.
                te.handlers.push(seq[i].clone());
                i += 1;
                continue;
            }
            te.seq.push(seq[i].clone());
            i += 1;
        }
        te.handlers.sort();
        out.insert(who, te);
    }
    (out, daemon)
}

fn diff(a: &[String], b: &[String]) -> String {
    let mut s = String::new();
    let n = a.len().max(b.len());
    for i in 0..n {
        let (x, y) = (a.get(i), b.get(i));
        if x != y {
            s.push_str(&format!("{i}: legacy {x:?}\n{i}:   ours {y:?}\n"));
            if s.len() > 4000 {
                break;
            }
        }
    }
    s
}

fn compare(daemon: Kind) {
    let legacy = collect(daemon, Lib::Legacy);
    let ours = collect(daemon, Lib::Shim);
    let (l, ld) = parse(&legacy);
    let (o, od) = parse(&ours);
    assert_eq!(
        l.keys().collect::<Vec<_>>(),
        o.keys().collect::<Vec<_>>(),
        "tasks differ\nlegacy:\n{legacy}\nours:\n{ours}"
    );
    for (who, le) in &l {
        let oe = &o[who];
        assert!(le.seq.len() > 20, "{who}: too few events to mean anything:\n{legacy}");
        assert!(
            le.seq == oe.seq,
            "{daemon:?} {who}: event sequences differ\n{}",
            diff(&le.seq, &oe.seq)
        );
        assert!(
            le.handlers == oe.handlers,
            "{daemon:?} {who}: handler records differ\nlegacy {:#?}\nours {:#?}",
            le.handlers,
            oe.handlers
        );
    }
    // The events the program's calls make, whatever the daemon adds.
    let all: Vec<&String> = l.values().flat_map(|t| t.seq.iter()).collect();
    for must in [
        "spawn exit CC=2 STL=C0,C1",
        "mcast entry MNB=60 MC=3 MCX=0 MDL=C0,C1",
        "psend entry DST=C0 MC=4 MCX=0 PDA=A PC=1 PDT=3",
        "precv exit CC=0 MNB=4 MC=4 MCX=0 SRC=R",
        "recv exit MB=B MNB=4 MC=5 MCX=0 SRC=C0",
        "packf entry PF=%25d%20%25s",
        "getopt exit OPV=0",
        "archcode exit AC=-32",
    ] {
        assert!(all.iter().any(|s| s.starts_with(must)), "no {must:?} in\n{legacy}");
    }
    assert!(
        l.values().any(|t| !t.handlers.is_empty()),
        "the siblings handler must be traced:\n{legacy}"
    );
    // PvmTraceCount: one profiling record at exit, counting the records after the switch.
    assert!(
        ld.iter()
            .any(|s| s.starts_with("C1 profiling - VCT=4 VID=exit,initsend,pkint,setopt PRF=1,2,2,1")),
        "no profiling record: {ld:#?}"
    );
    // Task-less records (profiling) and the daemon's own (newtask, spntask, endtask).
    assert_eq!(ld, od, "{daemon:?}: daemon events differ between the two library runs");
    // PvmTraceTime: one timing record at exit (times normalised).
    assert!(
        ld.iter()
            .any(|s| s == "R timing - VCT=4 VID=exit,initsend,pkint,setopt TGS=n TGU=n PRF=1,2,2,1"),
        "no timing record: {ld:#?}"
    );
    assert!(
        ld.iter().any(|s| s == "R user_defined - U0=7 U1=117,100"),
        "no user-defined record: {ld:#?}"
    );
    let tasks: Vec<&String> = ld
        .iter()
        .filter(|s| !s.contains(" profiling ") && !s.contains(" user_defined ") && !s.contains(" timing "))
        .collect();
    let end = "TST=0 TUS=n TUU=n TSS=n TSU=n";
    let want = [
        "C0 endtask - ".to_string() + end,
        "C0 newtask - PT=R TF=0 TN=TMP/tprog".into(),
        "C0 spntask - PT=R".into(),
        "C1 endtask - ".to_string() + end,
        "C1 newtask - PT=R TF=0 TN=TMP/tprog".into(),
        "C1 spntask - PT=R".into(),
        "R endtask - ".to_string() + end,
        "R newtask - PT=X TF=8 TN=TMP/tprog".into(),
        "R spntask - PT=X".into(),
    ];
    assert_eq!(
        tasks,
        want.iter().collect::<Vec<_>>(),
        "{daemon:?}: the daemon's task events"
    );
}

#[test]
fn shim_trace_events_equal_legacy_on_legacy_daemon() {
    compare(Kind::Legacy);
}

#[test]
fn shim_trace_events_equal_legacy_on_pvmd_rs() {
    compare(Kind::Ours);
}

/// pvm_reg_tracer registers, writes the tracer mailbox entry (tid, trace and output context and
/// tag, mask, buffering, options), and a second call unregisters and removes the entry.
const REG_C: &str = r####"
#include <stdio.h>
#include <pvm3.h>
#include <pvmtev.h>
int main(void)
{
	int me = pvm_mytid(), v[5], tb, to, cc, i;
	char mask[64];
	Pvmtmask m;
	TEV_MASK_INIT(m);
	TEV_MASK_SET(m, TEV_SEND);
	TEV_MASK_SET(m, TEV_RECV);
	pvm_setopt(PvmAutoErr, 0);
	cc = pvm_reg_tracer(1234, 55, 1235, 56, m, 0, PvmTraceFull);
	printf("reg %d\n", cc);
	cc = pvm_recvinfo("###_PVM_TRACER_###", 0, PvmMboxDefault);
	printf("recvinfo %s\n", cc > 0 ? "ok" : "none");
	if (cc > 0) {
		pvm_upkint(v, 5, 1); pvm_upkstr(mask); pvm_upkint(&tb, 1, 1); pvm_upkint(&to, 1, 1);
		printf("entry self=%d ctx=%d tag=%d octx=%d otag=%d mask=%s tbuf=%d topt=%d\n",
			v[0] == me, v[1], v[2], v[3], v[4], mask, tb, to);
	}
	cc = pvm_reg_tracer(1234, 55, 1235, 56, m, 0, PvmTraceFull);
	printf("unreg %d\n", cc);
	cc = pvm_recvinfo("###_PVM_TRACER_###", 0, PvmMboxDefault);
	printf("after %d\n", cc);
	pvm_exit();
	return 0;
}
"####;

#[test]
fn shim_reg_tracer_writes_the_mailbox_entry_like_legacy() {
    let mut outs = Vec::new();
    for lib in [Lib::Legacy, Lib::Shim] {
        let vm = Vm::start(Kind::Legacy, "lb-regtr");
        let prog = compile(vm.tmp.path(), "reg", REG_C);
        let (code, out, err) = vm.run(prog.to_str().unwrap(), &[], lib, lib, None);
        assert_eq!(code, Some(0), "{lib:?}: {out}\n{err}");
        outs.push(out);
    }
    assert!(outs[0].contains("entry self=1 ctx=1234 tag=55"), "{}", outs[0]);
    assert_eq!(outs[0], outs[1], "legacy vs ours");
}

/// What the legacy console does before enrolling: its own trace and output destinations set to
/// -1 (no collection). The values survive enrolment, and children inherit them.
const OPTS_C: &str = r#"
#include <stdio.h>
#include <pvm3.h>
int main(void)
{
	int o[] = {PvmOutputTid, PvmTraceTid, PvmTraceOptions, PvmSelfOutputTid, PvmSelfTraceTid,
		PvmSelfTraceOptions, PvmTraceBuffer}, i;
	pvm_setopt(PvmSelfTraceTid, -1);
	pvm_setopt(PvmSelfOutputTid, -1);
	pvm_setopt(PvmTraceOptions, PvmTraceFull);
	if (pvm_mytid() < 0)
		return 1;
	for (i = 0; i < 7; i++)
		printf("%d=%d\n", o[i], pvm_getopt(o[i]));
	printf("bad=%d\n", pvm_setopt(PvmTraceOptions, 7));
	pvm_exit();
	return 0;
}
"#;

#[test]
fn shim_self_trace_and_output_options_match_legacy() {
    let mut outs = Vec::new();
    for lib in [Lib::Legacy, Lib::Shim] {
        let vm = Vm::start(Kind::Legacy, "lb-opts");
        let prog = compile(vm.tmp.path(), "opts", OPTS_C);
        let (code, out, err) = vm.run(prog.to_str().unwrap(), &[], lib, lib, None);
        assert_eq!(code, Some(0), "{lib:?}: {out}\n{err}");
        outs.push(out);
    }
    assert!(outs[0].contains("12=-1\n14=-1\n"), "legacy: {}", outs[0]);
    assert_eq!(outs[0], outs[1], "legacy vs ours");
    let _ = TIMEOUT;
}

/// A tracer registered with pvm_reg_tracer (`pvmtrace collect --tracer`, legacy library) and a
/// program started from a shell: the daemon gives the task that tracer (and a `newtask`), the
/// library finds mask and options in the tracer's mailbox entry. Our library must record what
/// the legacy library records, on both daemons.
fn collect_registered(daemon: Kind, lib: Lib) -> String {
    let vm = Vm::start(daemon, "lb-rtr");
    let prog = compile(vm.tmp.path(), "tprog", PROG_C);
    let trace = vm.tmp.path().join("r.trace");
    let bin = pvmtrace();
    let mut c = vm.command(
        bin.to_str().unwrap(),
        &["collect", "--tracer", "-o", trace.to_str().unwrap(), "-t", "6"],
        Lib::Legacy,
        Lib::Legacy,
    );
    c.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let collector = interop_tests::Proc {
        child: c.spawn().expect("start pvmtrace --tracer"),
        name: "pvmtrace --tracer".into(),
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (_, out, _) = vm.run("/usr/bin/pvm", &[], Lib::Legacy, Lib::Legacy, Some("names\nquit\n"));
        if out.contains("###_PVM_TRACER_###") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "tracer never registered:\n{out}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let (code, out, err) = vm.run(prog.to_str().unwrap(), &[], lib, lib, None);
    assert_eq!(code, Some(0), "{daemon:?}/{lib:?}: {out}\n{err}\n{}", vm.tmp.log());
    let (code, out, err) = collector.wait(std::time::Duration::from_secs(30));
    assert_eq!(code, Some(0), "pvmtrace --tracer: {out}{err}");
    let text = std::fs::read_to_string(&trace).expect("trace file");
    text.replace(vm.tmp.path().to_str().unwrap(), "TMP")
}

fn compare_registered(daemon: Kind) {
    let legacy = collect_registered(daemon, Lib::Legacy);
    let ours = collect_registered(daemon, Lib::Shim);
    let (l, ld) = parse(&legacy);
    let (o, od) = parse(&ours);
    assert!(
        l.get("R")
            .is_some_and(|t| t.seq.iter().any(|s| s.starts_with("spawn exit CC=2"))),
        "{daemon:?}: the shell-started program was not traced:\n{legacy}"
    );
    // The program's tasks (consoles polling for the registration may be traced too).
    for who in ["R", "C0", "C1"] {
        let le = l
            .get(who)
            .unwrap_or_else(|| panic!("{daemon:?}: no events of {who}:\n{legacy}"));
        let oe = o
            .get(who)
            .unwrap_or_else(|| panic!("{daemon:?}: no events of {who} on our library:\n{ours}"));
        assert!(
            le.seq == oe.seq,
            "{daemon:?} {who}: event sequences differ\n{}",
            diff(&le.seq, &oe.seq)
        );
    }
    assert!(
        ld.iter().any(|s| s.starts_with("R newtask - PT=-1 TF=-1")),
        "{daemon:?}: no newtask for the shell-started task: {ld:#?}"
    );
    assert_eq!(ld, od, "{daemon:?}: daemon events differ between the two library runs");
}

#[test]
fn shim_registered_tracer_on_legacy_daemon() {
    compare_registered(Kind::Legacy);
}

#[test]
fn shim_registered_tracer_on_pvmd_rs() {
    compare_registered(Kind::Ours);
}

/// A user-defined trace record: a PvmDataTrace buffer (header at creation, a type before each
/// packed item, strings as bytes, a marker packed with count 0) sent with
/// pvm_send(PVM_TRACE_TID, PVM_TRACE_CODE) reaches the tracer word for word as legacy's.
const USER_C: &str = r####"
#include <stdio.h>
#include <pvm3.h>
#include <pvmtev.h>
int main(int argc, char **argv)
{
	int me = pvm_mytid(), child, v = 5, arr[3] = {1, 2, 3}, mark = -77, w, len, i, n;
	double d = 2.5;
	Pvmtmask m;
	struct timeval tv = {10, 0};
	if (pvm_parent() == PvmNoParent) {
		TEV_MASK_INIT(m);
		TEV_MASK_SET(m, TEV_USER_DEFINED);
		pvm_settmask(PvmTaskChild, m);
		pvm_setopt(PvmTraceTid, me);
		pvm_setopt(PvmTraceCode, 77);
		pvm_setopt(PvmTraceBuffer, 0);
		pvm_setopt(PvmTraceOptions, PvmTraceFull);
		if (pvm_spawn(argv[0], (char *[]){"child", 0}, PvmTaskTrace, "", 1, &child) != 1)
			return 1;
		for (;;) {
			int bid = pvm_trecv(-1, 77, &tv);
			if (bid <= 0) { printf("no user record\n"); break; }
			pvm_bufinfo(bid, &len, 0, 0);
			pvm_upkint(&w, 1, 1);
			if (w != -9)
				continue;
			printf("len %d:", len);
			for (i = 1, n = len / 4; i < n; i++) {
				pvm_upkint(&w, 1, 1);
				/* 7, 8: time; 6: the name's NUL and legacy's uninitialised padding */
				if (i == 7 || i == 8) printf(" T");
				else if (i == 6) printf(" %d", (w >> 24) & 0xff);
				else printf(" %d", w);
			}
			printf("\n");
			break;
		}
	} else {
		pvm_setsbuf(pvm_mkbuf(PvmDataTrace));
		pvm_pkint(&v, 1, 1);
		pvm_pkint(arr, 3, 1);
		pvm_pkstr("hello");
		pvm_pkdouble(&d, 1, 1);
		pvm_pkint(&mark, 0, 1);
		pvm_pkbyte("x", 1, 1);
		pvm_send(PVM_TRACE_TID, PVM_TRACE_CODE);
	}
	pvm_exit();
	return 0;
}
"####;

#[test]
fn shim_user_defined_record_equals_legacy() {
    let mut outs = Vec::new();
    for lib in [Lib::Legacy, Lib::Shim] {
        let vm = Vm::start(Kind::Legacy, "lb-user");
        let prog = compile(vm.tmp.path(), "user", USER_C);
        let (code, out, err) = vm.run(prog.to_str().unwrap(), &[], lib, lib, None);
        assert_eq!(code, Some(0), "{lib:?}: {out}\n{err}\n{}", vm.tmp.log());
        outs.push(out);
    }
    assert!(outs[0].starts_with("len "), "legacy: {}", outs[0]);
    assert_eq!(outs[0], outs[1], "legacy vs ours");
}
