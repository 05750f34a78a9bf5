//! The man pages of `man/`: every page renders without a single groff warning (`groff -man -ww`
//! and `man --warnings -l`, both installed by the Debian `groff-base` and `man-db` packages this
//! test needs), a broken page is caught by the same check, every pvm-rs extension call that
//! `include/pvm3.h` declares (a function the legacy `/usr/include/pvm3.h` lacks) has its
//! section 3PVM page naming it, and `ci/install-man` installs the pages where `man` finds them.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn need(tool: &str) {
    let ok = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "{tool} is required for this test (apt-get install groff-base man-db)"
    );
}

/// Warnings (stderr) of rendering `page` with groff and with man; empty when clean.
fn warnings(page: &Path) -> String {
    let g = Command::new("groff")
        .args(["-man", "-ww", "-z", "-Tutf8"])
        .arg(page)
        .output()
        .expect("run groff");
    let m = Command::new("man")
        .args(["--warnings", "-l"])
        .arg(page)
        .env("MANWIDTH", "80")
        .env("LC_ALL", "C.UTF-8")
        .env_remove("MAN_KEEP_FORMATTING")
        .output()
        .expect("run man");
    let mut w = String::new();
    if !g.status.success() || !g.stderr.is_empty() {
        w += &format!("groff ({}): {}", g.status, String::from_utf8_lossy(&g.stderr));
    }
    if !m.status.success() || !m.stderr.is_empty() {
        w += &format!("man ({}): {}", m.status, String::from_utf8_lossy(&m.stderr));
    }
    // Overstrike bold (X\bX), should man keep formatting, reads as the plain text.
    let text: String = String::from_utf8_lossy(&m.stdout).replace("\u{8}", "");
    if !text.contains("NAME") && !text.contains("NNAAMMEE") {
        w += "man: no NAME section rendered\n";
    }
    w
}

fn pages() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("man"))
        .expect("man/")
        .map(|e| e.expect("dir entry").path())
        .collect();
    v.sort();
    v
}

/// Names `pvm_...` that a C header declares as functions: followed by `(` (ours, cbindgen) or
/// by the legacy header's `__ProtoGlarp__((` prototype macro.
fn functions(header: &str) -> std::collections::BTreeSet<String> {
    let mut v = std::collections::BTreeSet::new();
    let mut rest = header;
    while let Some(i) = rest.find("pvm_") {
        let at = &rest[i..];
        let before = rest[..i].chars().last();
        let end = at
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(at.len());
        let after = at[end..].trim_start();
        let word_start = !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        if word_start && (after.starts_with('(') || after.starts_with("__ProtoGlarp__")) {
            v.insert(at[..end].to_string());
        }
        rest = &at[end.max(1)..];
    }
    v
}

#[test]
fn every_man_page_renders_without_warnings() {
    need("groff");
    need("man");
    let all = pages();
    assert!(all.len() >= 7, "{all:?}");
    let mut bad = String::new();
    for p in &all {
        let w = warnings(p);
        if !w.is_empty() {
            bad += &format!("{}:\n{w}\n", p.display());
        }
    }
    assert!(bad.is_empty(), "{bad}");
    // The check itself: an undefined macro and an unknown escape are reported.
    let dir = std::env::temp_dir().join(format!("ux-man-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let broken = dir.join("broken.3PVM");
    std::fs::write(
        &broken,
        ".TH BROKEN 3PVM\n.SH NAME\nbroken \\- x\n.BOGUS macro\n\\*[nosuchstring]\n",
    )
    .unwrap();
    let w = warnings(&broken);
    assert!(w.contains("BOGUS"), "a broken page passed: {w:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn every_extension_call_in_pvm3_h_has_a_page() {
    let ours = std::fs::read_to_string(root().join("include/pvm3.h")).expect("include/pvm3.h");
    let legacy = std::fs::read_to_string("/usr/include/pvm3.h")
        .expect("/usr/include/pvm3.h is missing: install the Debian pvm-dev package");
    let (ours, legacy) = (functions(&ours), functions(&legacy));
    assert!(legacy.contains("pvm_spawn") && legacy.len() > 80, "{legacy:?}");
    let ext: Vec<&String> = ours.difference(&legacy).collect();
    for must in ["pvm_migrate", "pvm_checkpoint", "pvm_restart"] {
        assert!(
            ext.iter().any(|e| e.as_str() == must),
            "{must} not found as an extension: {ext:?}"
        );
    }
    for call in ext {
        let page = root().join("man").join(format!("{call}.3PVM"));
        let text = std::fs::read_to_string(&page).unwrap_or_else(|_| {
            panic!(
                "{call} (declared in include/pvm3.h, not in the legacy header) has no {}",
                page.display()
            )
        });
        let name = text.split(".SH SYNOPSIS").next().unwrap_or("");
        assert!(
            name.contains(&format!("\n{call} \\-")),
            "{}: NAME must name {call}",
            page.display()
        );
        assert!(
            text.contains(&format!("{call}(")),
            "{}: SYNOPSIS must show {call}(",
            page.display()
        );
        for section in [
            "PARAMETERS",
            "DESCRIPTION",
            "LEGACY PEERS",
            "RETURN VALUES",
            "EXAMPLES",
            "SEE ALSO",
        ] {
            assert!(
                text.contains(&format!(".SH {section}")),
                "{}: no {section}",
                page.display()
            );
        }
    }
}

#[test]
fn install_man_puts_the_pages_where_man_finds_them() {
    need("man");
    let dir = std::env::temp_dir().join(format!("ux-man-inst-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for gzip in [false, true] {
        let mut c = Command::new(root().join("ci/install-man"));
        if gzip {
            c.arg("--gzip");
        }
        let st = c.arg(&dir).status().expect("run ci/install-man");
        assert!(st.success());
        for (sec, page) in [
            ("3PVM", "pvm_migrate"),
            ("3PVM", "pvm_checkpoint"),
            ("3PVM", "pvm_restart"),
            ("8", "pvmd"),
            ("1", "pvmtrace"),
        ] {
            let o = Command::new("man")
                .arg("-M")
                .arg(&dir)
                .args(["-w", sec, page])
                .output()
                .expect("run man -w");
            let at = String::from_utf8_lossy(&o.stdout).trim().to_string();
            assert!(
                o.status.success() && at.starts_with(dir.to_str().unwrap()),
                "man -w {sec} {page}: {at:?}"
            );
            assert_eq!(at.ends_with(".gz"), gzip, "{at}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
