//! `pvmtrace`: a legacy-library job traced through the collector, drawn as HTML/SVG, and the
//! page rendered by headless Chromium (which must be installed: ci/setup installs it).

use interop_tests::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Parent spawns two copies of itself; a token goes parent -> c1 -> c2 -> parent twice, then
/// a stop token: 2 set-up messages + 3 rounds of 3 hops = 11 messages.
const RING_C: &str = r#"
#include <stdio.h>
#include <pvm3.h>
int main(int argc, char **argv)
{
	int me = pvm_mytid(), tids[2], n, i, tok, next;
	if (argc < 2) {
		n = pvm_spawn(argv[0], (char *[]){"child", 0}, PvmTaskDefault, "", 2, tids);
		if (n != 2) { printf("spawn %d\n", n); pvm_exit(); return 1; }
		pvm_initsend(PvmDataDefault); pvm_pkint(&tids[1], 1, 1); pvm_send(tids[0], 1);
		pvm_initsend(PvmDataDefault); pvm_pkint(&me, 1, 1); pvm_send(tids[1], 1);
		for (i = 0; i < 2; i++) {
			tok = i;
			pvm_initsend(PvmDataDefault); pvm_pkint(&tok, 1, 1); pvm_send(tids[0], 2);
			pvm_recv(-1, 2); pvm_upkint(&tok, 1, 1);
		}
		tok = -1;
		pvm_initsend(PvmDataDefault); pvm_pkint(&tok, 1, 1); pvm_send(tids[0], 2);
		pvm_recv(-1, 2);
	} else {
		pvm_recv(-1, 1); pvm_upkint(&next, 1, 1);
		do {
			pvm_recv(-1, 2); pvm_upkint(&tok, 1, 1);
			pvm_initsend(PvmDataDefault); pvm_pkint(&tok, 1, 1); pvm_send(next, 2);
		} while (tok >= 0);
	}
	pvm_exit();
	return 0;
}
"#;

fn bins() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("workspace root")
            .to_path_buf();
        let cargo = option_env!("CARGO").unwrap_or("cargo");
        let st = Command::new(cargo)
            .args(["build", "--quiet", "-p", "pvm-console"])
            .current_dir(&root)
            .status()
            .expect("run cargo build -p pvm-console");
        assert!(st.success(), "cargo build -p pvm-console failed");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        target.join("debug")
    })
    .clone()
}

/// Compiles the ring program against the legacy library into `dir`.
fn ring(dir: &Path) -> PathBuf {
    let src = dir.join("ring.c");
    std::fs::write(&src, RING_C).expect("write ring.c");
    let out = dir.join("ring");
    let r = Command::new("gcc")
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .arg("-lpvm3")
        .output()
        .unwrap_or_else(|e| panic!("gcc is required for this test: {e}"));
    assert!(r.status.success(), "gcc: {}", String::from_utf8_lossy(&r.stderr));
    out
}

fn collect(kind: Kind) -> (TmpDir, PathBuf, String) {
    let tmp = TmpDir::new("ux-trace");
    let prog = ring(tmp.path());
    let _d = Pvmd::start(kind, &tmp, &[]);
    let trace = tmp.path().join("ring.trace");
    let t = trace.to_str().expect("utf-8 path").to_string();
    let p = prog.to_str().expect("utf-8 path").to_string();
    let (code, out, err) = run(
        &bins().join("pvmtrace"),
        &tmp,
        &["collect", "-o", &t, "-t", "15", "--", &p],
        None,
    );
    assert_eq!(code, Some(0), "pvmtrace collect: {out}\n{err}\n{}", tmp.log());
    let text = std::fs::read_to_string(&trace).expect("trace file");
    (tmp, trace, text)
}

fn check_events(text: &str) {
    let tids: std::collections::BTreeSet<&str> = text
        .lines()
        .filter(|l| l.contains(" send entry "))
        .filter_map(|l| l.split(' ').nth(1))
        .collect();
    assert_eq!(tids.len(), 3, "sends from three tasks expected:\n{text}");
    let sends = text
        .lines()
        .filter(|l| l.contains(" send entry ") && l.contains(" DST="))
        .count();
    let recvs = text
        .lines()
        .filter(|l| l.contains(" recv exit ") && l.contains(" SRC="))
        .count();
    assert_eq!((sends, recvs), (11, 11), "{text}");
    assert!(text.lines().any(|l| l.contains(" spawn exit CC=2 STL=")), "{text}");
}

#[test]
fn ux_trace_collect_legacy_library_on_legacy_daemon_and_render() {
    let (tmp, trace, text) = collect(Kind::Legacy);
    check_events(&text);
    // The legacy pvmd adds its own task events.
    assert_eq!(text.lines().filter(|l| l.contains(" newtask - ")).count(), 3, "{text}");
    let html = tmp.path().join("ring.html");
    let (code, out, err) = run(
        &bins().join("pvmtrace"),
        &tmp,
        &[
            "html",
            trace.to_str().unwrap_or(""),
            "-o",
            html.to_str().unwrap_or(""),
            "--title",
            "ring",
        ],
        None,
    );
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("3 tasks, 11 messages, 0 markers"), "{out}");
    let page = std::fs::read_to_string(&html).expect("html");
    assert_eq!(page.matches("class=\"msg\"").count(), 11);
    assert!(
        !page.contains("<script src") && !page.contains("<link"),
        "the page must be self-contained"
    );
    screenshot_not_blank(&html, tmp.path());
}

#[test]
fn ux_trace_collect_legacy_library_on_pvmd_rs() {
    let (_tmp, _trace, text) = collect(Kind::Ours);
    check_events(&text);
}

/// Renders the page in headless Chromium and checks that the screenshot is not blank: enough
/// non-white pixels for 3 lanes and 11 arrows (interop_tests::shot).
fn screenshot_not_blank(html: &Path, dir: &Path) {
    let px = interop_tests::shot::screenshot(html, dir);
    assert!(
        px.dark > 2000,
        "screenshot looks blank ({} non-white pixels of {}x{})",
        px.dark,
        px.width,
        px.height
    );
    assert!(
        px.red > 100,
        "no red message arrows in the screenshot ({} red pixels)",
        px.red
    );
}

/// `collect --tracer`: registered as the virtual machine's tracer, pvmtrace records a program
/// started from the shell (its legacy library finds the tracer through the pvmd and the
/// `###_PVM_TRACER_###` mailbox entry).
#[test]
fn ux_trace_registered_tracer_records_a_shell_started_program() {
    let tmp = TmpDir::new("ux-tracer");
    let prog = ring(tmp.path());
    let _d = Pvmd::start(Kind::Legacy, &tmp, &[]);
    let trace = tmp.path().join("all.trace");
    let t = trace.to_str().expect("utf-8 path").to_string();
    let collector = spawn(
        &bins().join("pvmtrace"),
        &tmp,
        &["collect", "--tracer", "-o", &t, "-t", "5"],
    );
    // Wait until the tracer is registered (its mailbox entry is visible to the console).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (_, out, _) = run(Path::new(LEGACY_CONSOLE), &tmp, &[], Some("names\nquit\n"));
        if out.contains("###_PVM_TRACER_###") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "tracer never registered:\n{out}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let (code, out, err) = run(&prog, &tmp, &[], None);
    assert_eq!(code, Some(0), "{out}{err}");
    let (code, out, err) = collector.wait(std::time::Duration::from_secs(30));
    assert_eq!(code, Some(0), "{out}{err}");
    let text = std::fs::read_to_string(&trace).expect("trace file");
    check_events(&text);
}
