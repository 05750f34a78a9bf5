//! The generated `include/pvm3.h` against the legacy `/usr/include/pvm3.h`: every macro the
//! legacy header defines expands to the same text, every function it declares is declared with
//! compatible types (a C redeclaration with the legacy prototype must compile), and the
//! structures have the same layout.

use interop_tests::LEGACY_HEADER;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn ours() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../include/pvm3.h")
}

fn work(name: &str) -> PathBuf {
    let d = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("shim-hdr-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

fn gcc(args: &[&str]) -> String {
    let out = Command::new("gcc").args(args).output().expect("gcc is required");
    assert!(
        out.status.success(),
        "gcc {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `#define`s after preprocessing `#include <stdio.h>` + the header (with extra -D flags).
fn macros(header: &Path, defs: &[&str]) -> BTreeMap<String, String> {
    let tag = header.to_string_lossy().replace('/', "_");
    let src = work(&format!("m{tag}{}.c", defs.join("")));
    std::fs::write(&src, format!("#include <stdio.h>\n#include \"{}\"\n", header.display())).unwrap();
    let mut args = vec!["-E", "-dM"];
    args.extend_from_slice(defs);
    let s = src.to_string_lossy().into_owned();
    args.push(&s);
    gcc(&args)
        .lines()
        .filter_map(|l| l.strip_prefix("#define "))
        .map(|l| {
            let (name, val) = match l.find([' ', '(']) {
                Some(i) if l.as_bytes()[i] == b'(' => {
                    let close = l.find(')').map(|j| j + 1).unwrap_or(l.len());
                    (&l[..close], &l[close..])
                }
                Some(i) => (&l[..i], &l[i..]),
                None => (l, ""),
            };
            let name = name.split('(').next().unwrap_or(name).to_string();
            let val: String = val.split_whitespace().collect::<Vec<_>>().join(" ");
            (name, val)
        })
        .collect()
}

/// Names the legacy header text itself `#define`s.
fn legacy_macro_names() -> BTreeSet<String> {
    std::fs::read_to_string(LEGACY_HEADER)
        .expect("legacy pvm3.h (Debian package pvm-dev)")
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("#define"))
        .filter_map(|l| {
            l.trim_start()
                .split(|c: char| c.is_whitespace() || c == '(')
                .next()
                .map(str::to_string)
        })
        .filter(|n| !n.is_empty())
        .collect()
}

#[test]
fn every_legacy_macro_has_the_same_expansion() {
    let names = legacy_macro_names();
    assert!(names.len() > 120, "{names:?}");
    for defs in [&[][..], &["-DNOTMPNAM"][..]] {
        let l = macros(Path::new(LEGACY_HEADER), defs);
        let o = macros(&ours(), defs);
        for n in &names {
            assert_eq!(o.get(n), l.get(n), "macro {n} with {defs:?}");
        }
    }
}

/// Top-level declarations (statements up to ';') naming a PVM function, after preprocessing.
fn declarations(header: &Path) -> BTreeMap<String, String> {
    let tag = header.to_string_lossy().replace('/', "_");
    let src = work(&format!("d{tag}.c"));
    std::fs::write(&src, format!("#include <stdio.h>\n#include \"{}\"\n", header.display())).unwrap();
    let text = gcc(&["-E", "-P", "-DNOTMPNAM", src.to_str().unwrap()]);
    // Only what follows the header's own structures.
    let start = text.find("struct pvmhostinfo").expect("header content");
    let mut m = BTreeMap::new();
    for stmt in text[start..].split(';') {
        let st = stmt.split_whitespace().collect::<Vec<_>>().join(" ");
        let st = st
            .trim_start_matches('}')
            .trim()
            .trim_start_matches("extern \"C\" {")
            .trim()
            .to_string();
        if st.starts_with("typedef") || st.starts_with("struct") || !st.contains('(') {
            continue;
        }
        // The declared name: the first pvm/Pvm identifier followed by '('.
        let b = st.as_bytes();
        let mut name = None;
        let mut i = 0;
        while i < b.len() {
            if b[i].is_ascii_alphabetic() || b[i] == b'_' {
                let j = i + st[i..]
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(st.len() - i);
                let id = &st[i..j];
                let next = st[j..].trim_start();
                if (id.starts_with("pvm") || id.starts_with("Pvm")) && next.starts_with('(') {
                    name = Some(id.to_string());
                    break;
                }
                i = j;
            } else {
                i += 1;
            }
        }
        if let Some(n) = name {
            m.insert(n, format!("{st};"));
        }
    }
    m
}

#[test]
fn every_legacy_prototype_is_declared_compatibly() {
    let l = declarations(Path::new(LEGACY_HEADER));
    let o = declarations(&ours());
    assert!(l.len() > 100, "{l:#?}");
    let ln: BTreeSet<&String> = l.keys().collect();
    // pvm-rs extensions (docs/migration.md) are the only additions allowed.
    const EXTENSIONS: &[&str] = &["pvm_migrate", "pvm_checkpoint", "pvm_restart"];
    let on: BTreeSet<&String> = o.keys().filter(|k| !EXTENSIONS.contains(&k.as_str())).collect();
    assert_eq!(on, ln, "declared functions differ");
    for e in EXTENSIONS {
        assert!(o.contains_key(*e), "extension {e} is not declared in our header");
    }
    // C accepts a redeclaration only with compatible types: ours first, then every legacy one.
    let mut src = format!(
        "#include <stdio.h>\n#define NOTMPNAM 1\n#include \"{}\"\n",
        ours().display()
    );
    for d in l.values() {
        src.push_str(d.trim_start_matches("extern "));
        src.push('\n');
    }
    let f = work("redeclare.c");
    std::fs::write(&f, &src).unwrap();
    let obj = work("redeclare.o");
    gcc(&["-c", "-Werror", "-o", obj.to_str().unwrap(), f.to_str().unwrap()]);
}

#[test]
fn structures_have_the_legacy_layout() {
    let prog = r#"
#include <stdio.h>
#include <stddef.h>
#include HDR
#define F(s, f) printf(#s "." #f " %zu %zu\n", offsetof(struct s, f), sizeof(((struct s *)0)->f))
int main(void) {
    printf("sizes %zu %zu %zu %zu\n", sizeof(struct pvmhostinfo), sizeof(struct pvmtaskinfo),
           sizeof(struct pvmminfo), sizeof(struct pvmmboxinfo));
    F(pvmhostinfo, hi_tid); F(pvmhostinfo, hi_name); F(pvmhostinfo, hi_arch);
    F(pvmhostinfo, hi_speed); F(pvmhostinfo, hi_dsig);
    F(pvmtaskinfo, ti_tid); F(pvmtaskinfo, ti_ptid); F(pvmtaskinfo, ti_host);
    F(pvmtaskinfo, ti_flag); F(pvmtaskinfo, ti_a_out); F(pvmtaskinfo, ti_pid);
    F(pvmminfo, len); F(pvmminfo, ctx); F(pvmminfo, tag); F(pvmminfo, wid);
    F(pvmminfo, enc); F(pvmminfo, crc); F(pvmminfo, src); F(pvmminfo, dst);
    F(pvmmboxinfo, mi_name); F(pvmmboxinfo, mi_nentries); F(pvmmboxinfo, mi_indices);
    F(pvmmboxinfo, mi_owners); F(pvmmboxinfo, mi_flags);
    return 0;
}
"#;
    let f = work("layout.c");
    std::fs::write(&f, prog).unwrap();
    let run = |hdr: &Path, name: &str| {
        let exe = work(name);
        gcc(&[
            &format!("-DHDR=\"{}\"", hdr.display()),
            "-o",
            exe.to_str().unwrap(),
            f.to_str().unwrap(),
        ]);
        let out = Command::new(&exe).output().expect("run layout program");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let l = run(Path::new(LEGACY_HEADER), "layout-legacy");
    let o = run(&ours(), "layout-ours");
    // abi.md says 40 for pvmtaskinfo; the compiler says 32 (ti_pid ends at 28).
    assert!(l.starts_with("sizes 32 32 32 40"), "{l}");
    assert_eq!(o, l);
}

/// A legacy example's source compiles against our header and links with our library.
#[test]
fn programs_build_against_our_header() {
    let src = r#"
#include <stdio.h>
#include "pvm3.h"
int main(void) {
    int info[1], *tids;
    struct pvmhostinfo *hi;
    int n, na;
    if (0) {
        pvm_config(&n, &na, &hi);
        pvm_catchout(stdout);
        pvm_siblings(&tids);
        pvm_recvf(0);
        pvm_packf("%d", 1);
    }
    printf("%s %d %d\n", pvm_version(), PvmMboxDirectIndex(3), PvmMboxDirectIndexOf(PvmMboxDirectIndex(3) | 1));
    (void)info;
    return 0;
}
"#;
    let f = work("uses.c");
    std::fs::write(&f, src).unwrap();
    let exe = work("uses");
    let inc = ours().parent().unwrap().to_path_buf();
    let lib = interop_tests::shim::shim_dir();
    gcc(&[
        "-Wall",
        "-Werror",
        "-I",
        inc.to_str().unwrap(),
        "-o",
        exe.to_str().unwrap(),
        f.to_str().unwrap(),
        "-L",
        lib.to_str().unwrap(),
        "-l:libpvm3.so.3",
    ]);
    let out = Command::new(&exe).env("LD_LIBRARY_PATH", &lib).output().expect("run");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "3.4.6 3072 3\n");
}
