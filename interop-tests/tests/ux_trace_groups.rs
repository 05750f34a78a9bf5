//! Group trace events (issue 4): our libgpvm3 emits the legacy group events (joingroup,
//! barrier, gsize, bcast, gettid, getinst, reduce, gather, scatter, lvgroup) with the legacy
//! data, so a tracer sees the same records as with the legacy libgpvm3.
//!
//! One C program, traced by `pvmtrace collect -m all` (on the legacy library) on the legacy
//! daemon, runs three times: legacy libpvm3 with the legacy libgpvm3 (the reference), legacy
//! libpvm3 with our libgpvm3 (loaded by soname), and our libpvm3 with our libgpvm3. Each task
//! records which libgpvm3 it loaded (dladdr), so a run on the wrong library fails loudly. The
//! per-task group records must be equal after naming tasks by role; with the legacy libpvm3
//! underneath, the whole per-task sequence of library events (names and phases) must be equal
//! too, which shows our group calls hide their own sends, receives and buffer calls from the
//! trace as the legacy ones do.

use interop_tests::flib::our_libs;
use interop_tests::shim::{shim_dir, Lib, Vm};
use interop_tests::Kind;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The parent joins first (instance 0) and spawns its two children one at a time, each
/// joining before the next starts, so instance numbers follow spawn order in every run.
const GROUP_C: &str = r#"
#define _GNU_SOURCE
#include <stdio.h>
#include <dlfcn.h>
#include <pvm3.h>
int main(int argc, char **argv)
{
	int me = pvm_mytid(), tid, inst, i, v, x, y = 0, all[3], sum;
	Dl_info di;
	FILE *f = fopen(argv[1], "a");
	if (f && dladdr((void *) pvm_joingroup, &di)) fprintf(f, "%s\n", di.dli_fname);
	if (f) fclose(f);
	inst = pvm_joingroup("tg");
	if (argc < 3) {
		for (i = 0; i < 2; i++) {
			if (pvm_spawn(argv[0], (char *[]){argv[1], "child", 0}, PvmTaskDefault, "", 1, &tid) != 1) {
				printf("spawn failed\n"); pvm_exit(); return 1;
			}
			pvm_recv(tid, 1);
		}
	} else {
		pvm_initsend(PvmDataDefault); pvm_pkint(&inst, 1, 1); pvm_send(pvm_parent(), 1);
	}
	pvm_barrier("tg", 3);
	v = pvm_gsize("tg");
	if (inst == 0) {
		pvm_initsend(PvmDataDefault); pvm_pkint(&v, 1, 1); pvm_bcast("tg", 7);
	} else {
		pvm_recv(-1, 7); pvm_upkint(&v, 1, 1);
	}
	tid = pvm_gettid("tg", 0);
	i = pvm_getinst("tg", me);
	sum = inst + 1;
	pvm_reduce(PvmSum, &sum, 1, PVM_INT, 8, "tg", 0);
	x = 10 * (inst + 1);
	pvm_gather(all, &x, 1, PVM_INT, 9, "tg", 0);
	pvm_scatter(&y, all, 1, PVM_INT, 10, "tg", 0);
	pvm_getinst("nosuchgroup", me);
	pvm_barrier("tg", 3);
	pvm_lvgroup("tg");
	pvm_exit();
	return 0;
}
"#;

const GROUP_EVENTS: &[&str] = &[
    "joingroup",
    "lvgroup",
    "barrier",
    "bcast",
    "gsize",
    "gettid",
    "getinst",
    "reduce",
    "gather",
    "scatter",
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

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
        interop_tests::target_dir().join("debug").join("pvmtrace")
    })
    .clone()
}

/// Built against the legacy headers and libraries (`-lgpvm3 -lpvm3`): which libgpvm3 and
/// libpvm3 it loads is decided at run time by the library path.
fn compile(dir: &Path) -> PathBuf {
    let c = dir.join("tgroup.c");
    std::fs::write(&c, GROUP_C).expect("write C source");
    let out = dir.join("tgroup");
    let r = Command::new("gcc")
        .arg("-o")
        .arg(&out)
        .arg(&c)
        .args(["-lgpvm3", "-lpvm3", "-ldl"])
        .output()
        .unwrap_or_else(|e| panic!("gcc is required for this test: {e}"));
    assert!(r.status.success(), "gcc: {}", String::from_utf8_lossy(&r.stderr));
    out
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Run {
    /// Legacy libpvm3 and legacy libgpvm3.
    Legacy,
    /// Legacy libpvm3, our libgpvm3.
    OurGroups,
    /// Our libpvm3 and our libgpvm3.
    Ours,
}

/// Runs the program traced; returns the trace text and the libgpvm3 paths the tasks loaded.
fn collect(run: Run) -> (String, Vec<String>) {
    let vm = Vm::start(Kind::Legacy, "ux-tgroup");
    let prog = compile(vm.tmp.path());
    let libs = vm.tmp.path().join("libs.txt");
    let trace = vm.tmp.path().join("g.trace");
    let (_, gdir) = our_libs();
    let children = if run == Run::Ours { Lib::Shim } else { Lib::Legacy };
    let bin = pvmtrace();
    let mut c = vm.command(
        bin.to_str().unwrap(),
        &[
            "collect",
            "-o",
            trace.to_str().unwrap(),
            "-t",
            "30",
            "-m",
            "all",
            "--",
            prog.to_str().unwrap(),
            libs.to_str().unwrap(),
        ],
        Lib::Legacy,
        children,
    );
    match run {
        Run::Legacy => {}
        Run::OurGroups => {
            c.env("LD_LIBRARY_PATH", &gdir).env("PVM_EXPORT", "LD_LIBRARY_PATH");
        }
        Run::Ours => {
            let path = format!("{}:{}", gdir.display(), shim_dir().display());
            c.env("LD_LIBRARY_PATH", path)
                .env("PVM_EXPORT", "LD_LIBRARY_PATH:PVM_SHIM_TRACE");
        }
    }
    let p = interop_tests::Proc {
        child: c.spawn().expect("start pvmtrace"),
        name: "pvmtrace collect".into(),
    };
    let (code, out, err) = p.wait(std::time::Duration::from_secs(60));
    assert_eq!(code, Some(0), "{run:?}: pvmtrace: {out}\n{err}\n{}", vm.tmp.log());
    if run == Run::Ours {
        assert_eq!(
            vm.shim_tasks().iter().filter(|x| x.contains("tgroup")).count(),
            3,
            "the program's three tasks must run on our libpvm3"
        );
    }
    let text = std::fs::read_to_string(&trace).expect("trace file");
    let loaded: Vec<String> = std::fs::read_to_string(&libs)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(
        loaded.len(),
        3,
        "{run:?}: three tasks must report their libgpvm3: {loaded:?}\n{text}"
    );
    let ours = gdir.to_str().unwrap().to_string();
    for l in &loaded {
        assert_eq!(l.starts_with(&ours), run != Run::Legacy, "{run:?}: task loaded {l}");
    }
    (text, loaded)
}

/// Per task (named by order of first appearance: P, C0, C1, ...): the library events as
/// `name phase DATA`, task ids in the data replaced by the same names, times dropped. Only
/// records of the tasks (not the pvmd's newtask/spntask/endtask).
fn per_task(text: &str, only: Option<&[&str]>) -> BTreeMap<String, Vec<String>> {
    let lines: Vec<Vec<&str>> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(' ').collect())
        .filter(|f: &Vec<&str>| f.len() >= 4 && f[3] != "-")
        .collect();
    let mut order: Vec<i64> = Vec::new();
    for f in &lines {
        if let Some(t) = f[1].strip_prefix('t').and_then(|h| i64::from_str_radix(h, 16).ok()) {
            if !order.contains(&t) {
                order.push(t);
            }
        }
    }
    let role = |t: i64| -> Option<String> {
        order
            .iter()
            .position(|&x| x == t)
            .map(|i| if i == 0 { "P".into() } else { format!("C{}", i - 1) })
    };
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for f in &lines {
        if only.is_some_and(|o| !o.contains(&f[2])) {
            continue;
        }
        let Some(who) = f[1]
            .strip_prefix('t')
            .and_then(|h| i64::from_str_radix(h, 16).ok())
            .and_then(role)
        else {
            continue;
        };
        let data: Vec<String> = f[4..]
            .iter()
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                let v: Vec<String> = v
                    .split(',')
                    .map(|x| x.parse::<i64>().ok().and_then(role).unwrap_or_else(|| x.to_string()))
                    .collect();
                format!("{k}={}", v.join(","))
            })
            .collect();
        m.entry(who)
            .or_default()
            .push(format!("{} {} {}", f[2], f[3], data.join(" ")));
    }
    m
}

/// Per task: the event names without the handler blocks (`mhf_invoke entry` up to the second
/// `setcontext exit`, then the send/receive buffer restores and frees: eight records), and how
/// many blocks there were.
fn without_handlers(m: BTreeMap<String, Vec<String>>) -> BTreeMap<String, (Vec<String>, usize)> {
    m.into_iter()
        .map(|(task, v)| {
            let (mut keep, mut blocks) = (Vec::new(), 0);
            let mut it = v.into_iter();
            while let Some(l) = it.next() {
                if l != "mhf_invoke entry" {
                    keep.push(l);
                    continue;
                }
                blocks += 1;
                let mut ctx = 0;
                for l in it.by_ref() {
                    if l == "setcontext exit" {
                        ctx += 1;
                        if ctx == 2 {
                            break;
                        }
                    }
                }
                let tail: Vec<String> = it.by_ref().take(8).collect();
                let want = [
                    "setsbuf entry",
                    "setsbuf exit",
                    "freebuf entry",
                    "freebuf exit",
                    "setrbuf entry",
                    "setrbuf exit",
                    "freebuf entry",
                    "freebuf exit",
                ];
                assert_eq!(tail, want, "{task}: a handler block of an unexpected shape");
            }
            (task, (keep, blocks))
        })
        .collect()
}

fn show(m: &BTreeMap<String, Vec<String>>) -> String {
    m.iter().map(|(k, v)| format!("{k}:\n  {}\n", v.join("\n  "))).collect()
}

#[test]
fn group_trace_events_of_our_libgpvm3_equal_legacy() {
    let (legacy, _) = collect(Run::Legacy);
    let reference = per_task(&legacy, Some(GROUP_EVENTS));
    assert_eq!(reference.len(), 3, "three traced tasks expected:\n{legacy}");
    let p = &reference["P"];
    // What the legacy library sends, checked once so the comparison below compares something.
    for must in [
        "joingroup entry GN=tg",
        "joingroup exit CC=0",
        "barrier entry GN=tg GBC=3",
        "gsize exit GS=3",
        "bcast entry GN=tg MC=7",
        "bcast exit CC=0 MDL=C1,C0",
        "gettid entry GN=tg GI=0",
        "gettid exit GT=P",
        "getinst entry GN=tg GT=P",
        "getinst exit GI=0",
        "reduce entry GN=tg MC=8",
        "gather exit CC=0",
        "scatter entry GN=tg MC=10",
        "getinst entry GN=nosuchgroup GT=P",
        "lvgroup exit CC=0",
    ] {
        assert!(
            p.iter().any(|l| l == must),
            "legacy reference lacks {must:?}:\n{}",
            show(&reference)
        );
    }
    assert!(
        p.iter().any(|l| l.starts_with("getinst exit GI=-")),
        "an error result is traced:\n{}",
        show(&reference)
    );

    let (groups, _) = collect(Run::OurGroups);
    let got = per_task(&groups, Some(GROUP_EVENTS));
    assert_eq!(
        got,
        reference,
        "our libgpvm3 on the legacy libpvm3:\n{}\nlegacy:\n{}",
        show(&got),
        show(&reference)
    );
    // The whole sequence of library calls (names and phases) per task: our group calls must
    // not leak the sends, receives and buffer calls they make. The blocks of the library's own
    // task-control handlers (TC_SIBLINGS: `mhf_invoke` and the buffer and context switches
    // around it) sit wherever the legacy library happened to read that message, so they are
    // taken out of the sequence and counted.
    let names = |m: BTreeMap<String, Vec<String>>| -> BTreeMap<String, Vec<String>> {
        m.into_iter()
            .map(|(k, v)| {
                (
                    k,
                    v.into_iter()
                        .map(|l| l.split(' ').take(2).collect::<Vec<_>>().join(" "))
                        .collect(),
                )
            })
            .collect()
    };
    let (a, b) = (names(per_task(&legacy, None)), names(per_task(&groups, None)));
    let (a, b) = (without_handlers(a), without_handlers(b));
    assert_eq!(b, a, "all events, our libgpvm3:\n{b:#?}\nlegacy:\n{a:#?}");

    let (ours, _) = collect(Run::Ours);
    let got = per_task(&ours, Some(GROUP_EVENTS));
    assert_eq!(
        got,
        reference,
        "our libgpvm3 on our libpvm3:\n{}\nlegacy:\n{}",
        show(&got),
        show(&reference)
    );
}
