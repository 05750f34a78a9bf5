//! The Rust libpvm3.so.3 exports what the legacy one does, with the legacy soname and data
//! object sizes.

use interop_tests::shim::{shim_dir, LEGACY_LIB};
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// `nm -DS --defined-only`: name -> (type letter, size).
fn defined(lib: &std::path::Path) -> BTreeMap<String, (char, u64)> {
    let out = Command::new("nm")
        .args(["-DS", "--defined-only"])
        .arg(lib)
        .output()
        .expect("nm (binutils) is required");
    assert!(out.status.success(), "nm failed on {}", lib.display());
    let mut m = BTreeMap::new();
    for l in String::from_utf8_lossy(&out.stdout).lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        match f.len() {
            4 => {
                let size = u64::from_str_radix(f[1], 16).unwrap_or(0);
                m.insert(f[3].to_string(), (f[2].chars().next().unwrap_or('?'), size));
            }
            3 => {
                m.insert(f[2].to_string(), (f[1].chars().next().unwrap_or('?'), 0));
            }
            _ => {}
        }
    }
    m
}

#[test]
fn exports_every_legacy_symbol() {
    let ours = defined(&shim_dir().join("libpvm3.so.3"));
    // The spec's list (shared/spec/libpvm3.symbols) is the legacy library's defined dynamic
    // symbols; read it from the installed library so the test needs no path outside the repo.
    let legacy = defined(std::path::Path::new(LEGACY_LIB));
    let spec: BTreeSet<String> = legacy
        .keys()
        .filter(|s| !s.starts_with('_') && !matches!(s.as_str(), "_init" | "_fini"))
        .cloned()
        .collect();
    assert_eq!(spec.len(), 255, "{spec:?}");
    let missing: Vec<&String> = spec.iter().filter(|s| !ours.contains_key(*s)).collect();
    assert!(missing.is_empty(), "not exported: {missing:?}");
    let missing_legacy: Vec<&String> = legacy
        .keys()
        .filter(|s| !s.starts_with('_') && !ours.contains_key(*s))
        .collect();
    assert!(missing_legacy.is_empty(), "legacy exports we lack: {missing_legacy:?}");
}

#[test]
fn data_objects_have_legacy_sizes_and_kinds() {
    let ours = defined(&shim_dir().join("libpvm3.so.3"));
    let legacy = defined(std::path::Path::new(LEGACY_LIB));
    let mut checked = 0;
    for (name, (kind, size)) in &legacy {
        if !matches!(kind, 'D' | 'B') {
            continue;
        }
        let (k, s) = ours.get(name).unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(s, size, "{name}: size {s} vs legacy {size}");
        assert!(matches!(k, 'D' | 'B'), "{name} is {k}, not a data object");
        // Initialised data must stay initialised (legacy values such as pvm_nerr = 37).
        if *kind == 'D' {
            assert_eq!(*k, 'D', "{name} should be initialised data");
        }
        checked += 1;
    }
    assert_eq!(checked, 43, "expected every legacy data object to be compared");
    for (name, (kind, _)) in &legacy {
        if *kind == 'T' {
            let (k, _) = ours.get(name).unwrap_or_else(|| panic!("{name} missing"));
            assert_eq!(*k, 'T', "{name} must be a function");
        }
    }
}

#[test]
fn soname_is_libpvm3_so_3() {
    let out = Command::new("readelf")
        .arg("-d")
        .arg(shim_dir().join("libpvm3.so.3"))
        .output()
        .expect("readelf (binutils) is required");
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("Library soname: [libpvm3.so.3]"), "{s}");
}

/// Values a C program reads from the data objects without calling anything.
#[test]
fn data_object_values_match_legacy() {
    let src = r#"
#include <stdio.h>
#include <pvm3.h>
extern int pvm_errno, pvm_nerr, pvmautoerr, pvmfrgsiz, pvmmytid, pvmshowtaskid, pvmrouteopt;
extern char *pvm_errlist[];
int main(void) {
    int i;
    printf("%d %d %d %d %d %d %d\n", pvm_errno, pvm_nerr, pvmautoerr, pvmfrgsiz, pvmmytid,
           pvmshowtaskid, pvmrouteopt);
    for (i = 0; i < pvm_nerr; i++)
        printf("%d [%s]\n", i, pvm_errlist[i]);
    printf("version %s\n", pvm_version());
    return 0;
}
"#;
    let exe = compile("dataobj", src);
    let legacy = run_with(&exe, None);
    let ours = run_with(&exe, Some(&shim_dir()));
    assert!(legacy.contains("36 [Master Host IP Address is Loopback!"), "{legacy}");
    assert_eq!(ours, legacy);
}

pub fn compile(name: &str, src: &str) -> std::path::PathBuf {
    interop_tests::build_c(name, src, &[])
}

fn run_with(exe: &std::path::Path, lib: Option<&std::path::Path>) -> String {
    let mut c = Command::new(exe);
    c.env("PVM_ALLOW_ROOT", "1").env("PVM_TMP", "/nonexistent-pvm-tmp");
    match lib {
        Some(d) => c.env("LD_LIBRARY_PATH", d),
        None => c.env_remove("LD_LIBRARY_PATH"),
    };
    let out = c.output().expect("run test program");
    String::from_utf8_lossy(&out.stdout).into_owned()
}
