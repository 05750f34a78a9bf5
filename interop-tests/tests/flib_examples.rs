//! Our Fortran library (libfpvm3 + include/fpvm3.h) against the legacy one: the header's
//! constants, the Debian Fortran examples and a program exercising most wrappers, each built
//! once with ours and once with the legacy library and run on a legacy daemon; outputs must
//! match after task ids are normalised.

use std::collections::BTreeMap;
use std::path::PathBuf;

use interop_tests::flib::{
    cc_group, example_sources, fortran, normalise, our_fpvm3_h, our_libs, pvmgs, Flavour, Vm, LEGACY_FPVM3,
    LEGACY_FPVM3_H,
};
use interop_tests::Kind;

/// `parameter (NAME = value)` lines of an fpvm3.h, names upper-cased (Fortran ignores case).
fn constants(text: &str) -> BTreeMap<String, i64> {
    let mut m = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with(['c', 'C', '*', '!']) {
            continue;
        }
        let l = line.trim();
        let Some(rest) = l.strip_prefix("parameter") else {
            continue;
        };
        let inner = rest.trim().trim_start_matches('(').trim_end_matches(')');
        let (name, value) = inner.split_once('=').expect("parameter with =");
        let v: i64 = value.trim().parse().expect("integer parameter");
        assert!(
            m.insert(name.trim().to_ascii_uppercase(), v).is_none(),
            "{name} defined twice"
        );
    }
    m
}

/// Names declared `integer` (every constant must be declared, or implicit typing makes the
/// names starting with A-H and O-Z REAL).
fn declared(text: &str) -> Vec<String> {
    let mut v: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with(['c', 'C', '*', '!']))
        .filter_map(|l| l.trim().strip_prefix("integer"))
        .flat_map(|r| r.split(',').map(|n| n.trim().to_ascii_uppercase()).collect::<Vec<_>>())
        .collect();
    v.sort();
    v
}

#[test]
fn fpvm3_h_has_every_legacy_constant_with_its_value() {
    let legacy = std::fs::read_to_string(LEGACY_FPVM3_H)
        .unwrap_or_else(|e| panic!("{LEGACY_FPVM3_H}: {e}; install the Debian package pvm-dev"));
    let ours = std::fs::read_to_string(our_fpvm3_h()).expect("read include/fpvm3.h");
    let (l, o) = (constants(&legacy), constants(&ours));
    assert!(l.len() > 100, "parsed only {} legacy constants", l.len());
    assert_eq!(o, l);
    assert_eq!(declared(&ours), declared(&legacy));
    assert!(ours
        .lines()
        .all(|line| line.starts_with(['c', 'C']) || line.len() <= 72));
}

/// Starts `NAME` COUNT times with its output collected, and waits for all of it (pvm_exit
/// with output collection on blocks until the tasks are gone): the Fortran SPMD examples are
/// meant to be started from the console.
const LAUNCH: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <pvm3.h>
int main(int argc, char **argv)
{
    int tids[32], n = atoi(argv[2]), got;
    setvbuf(stdout, NULL, _IOLBF, 0);
    pvm_catchout(stdout);
    got = pvm_spawn(argv[1], (char **)0, 0, "", n, tids);
    printf("launched %d of %d\n", got, n);
    pvm_exit();
    return got == n ? 0 : 1;
}
"#;

const FSEM: &str = r#"      program fsem
      include '../include/fpvm3.h'
      integer mytid, info, nhost, narch, dtid, speed, i, bufid
      integer ntask, tid, ptid, flag, cnt, bytes, tag, src, code
      integer tids(4), numt, nsib, sib, ival, old, k
      character*64 hname, harch, aout
      character*300 longname
      character*40 longgrp
      integer*2 i2(3), j2(3)
      integer*4 i4(4), j4(4)
      integer*8 i8(2), j8(2)
      real*4 r4(2), s4(2)
      real*8 r8(2), s8(2)
      complex*8 c8(2), d8(2)
      complex*16 c16(2), d16(2)
      character*4 b1, e1
      character*12 str, str2

      call pvmfmytid(mytid)
      print *, 'mytid positive', mytid .gt. 0
c     ---- pvmfconfig cycles one host per call, info 1 per host
      do 10 i = 1, 3
        nhost = 0
        info = -99
        speed = -1
        call pvmfconfig(nhost, narch, dtid, hname, harch, speed, info)
        print *, 'config', i, nhost, narch, speed, info, harch(1:8)
 10   continue
      nhost = -1
      call pvmfconfig(nhost, narch, dtid, hname, harch, speed, info)
      print *, 'config reset', nhost, info
c     ---- pvmftasks
      do 20 i = 1, 2
        ntask = 0
        info = -99
        call pvmftasks(mytid, ntask, tid, ptid, dtid, flag, aout, info)
        print *, 'tasks', i, ntask, tid .eq. mytid, ptid, flag, info
 20   continue
c     ---- pack and unpack every type
      i2(1) = 1
      i2(2) = -2
      i2(3) = 32000
      do 30 k = 1, 4
        i4(k) = k * 1000 - 7
 30   continue
      i8(1) = 123456789012_8
      i8(2) = -5
      r4(1) = 1.5
      r4(2) = -0.25
      r8(1) = 3.14159265358979d0
      r8(2) = -1d100
      c8(1) = (1.0, 2.0)
      c8(2) = (-3.0, 0.5)
      c16(1) = (1d0, -2d0)
      c16(2) = (0.125d0, 4d0)
      b1 = 'wxyz'
      str = 'hello world '
      call pvmfinitsend(PVMDEFAULT, bufid)
      print *, 'initsend positive', bufid .gt. 0
      call pvmfpack(INTEGER2, i2, 3, 1, info)
      print *, 'pack i2', info
      call pvmfpack(INTEGER4, i4, 2, 2, info)
      print *, 'pack i4 stride 2', info
      call pvmfpack(INTEGER8, i8, 2, 1, info)
      print *, 'pack i8', info
      call pvmfpack(REAL4, r4, 2, 1, info)
      call pvmfpack(REAL8, r8, 2, 1, info)
      call pvmfpack(COMPLEX8, c8, 2, 1, info)
      call pvmfpack(COMPLEX16, c16, 2, 1, info)
      call pvmfpack(BYTE1, b1, 4, 1, info)
      call pvmfpack(STRING, str, 5, 1, info)
      print *, 'pack string', info
      call pvmfpack(9, i4, 1, 1, info)
      print *, 'pack bad type', info
      call pvmfpack(-1, i4, 1, 1, info)
      print *, 'pack negative type', info
      call pvmfsend(mytid, 5, info)
      print *, 'send', info
      call pvmfrecv(-1, 5, bufid)
      call pvmfbufinfo(bufid, bytes, tag, src, info)
      print *, 'bufinfo', bytes, tag, src .eq. mytid, info
      call pvmfunpack(INTEGER2, j2, 3, 1, info)
      print *, 'i2', j2, info
      call pvmfunpack(INTEGER4, j4, 2, 1, info)
      print *, 'i4', j4(1), j4(2), info
      call pvmfunpack(INTEGER8, j8, 2, 1, info)
      print *, 'i8', j8, info
      call pvmfunpack(REAL4, s4, 2, 1, info)
      print *, 'r4', s4, info
      call pvmfunpack(REAL8, s8, 2, 1, info)
      print *, 'r8', s8, info
      call pvmfunpack(COMPLEX8, d8, 2, 1, info)
      print *, 'c8', d8, info
      call pvmfunpack(COMPLEX16, d16, 2, 1, info)
      print *, 'c16', d16, info
      call pvmfunpack(BYTE1, e1, 4, 1, info)
      print *, 'b1 ', e1, info
      str2 = '............'
      call pvmfunpack(STRING, str2, 5, 1, info)
      print *, 'string ', str2, info
      call pvmfunpack(INTEGER4, j4, 1, 1, info)
      print *, 'past the end', info
c     ---- psend / precv / trecv
      call pvmfpsend(mytid, 6, r8, 2, REAL8, info)
      print *, 'psend', info
      s8(1) = 0
      s8(2) = 0
      call pvmfprecv(-1, 6, s8, 2, REAL8, src, tag, cnt, info)
      print *, 'precv', src .eq. mytid, tag, cnt, info, s8
      call pvmftrecv(-1, 77, 0, 20000, bufid)
      print *, 'trecv timeout', bufid
      call pvmfnrecv(-1, 77, bufid)
      print *, 'nrecv', bufid
      call pvmfprobe(-1, 77, bufid)
      print *, 'probe', bufid
c     ---- spawn errors and argument checks
      tids(1) = 0
      call pvmfspawn('nosuchprog', PVMDEFAULT, '*', 1, tids, numt)
      print *, 'spawn missing', numt, tids(1)
      call pvmfspawn('nosuchprog', PVMTASKHOST, 'nosuchhost', 1,
     &               tids, numt)
      print *, 'spawn bad host', numt, tids(1)
      do 40 k = 1, 300
        longname(k:k) = 'x'
 40   continue
      call pvmfspawn(longname, PVMDEFAULT, '*', 1, tids, numt)
      print *, 'spawn long name', numt
      longgrp = 'abcdefghijabcdefghijabcdefghijabcdefghi'
      call pvmfjoingroup(longgrp, numt)
      print *, 'join long group', numt
      call pvmfjoingroup('    ', numt)
      print *, 'join blank group', numt
c     ---- siblings
      call pvmfsiblings(nsib, 0, sib)
      print *, 'siblings', nsib, sib .eq. mytid
      call pvmfsiblings(nsib, 5, sib)
      print *, 'sibling 5', sib
c     ---- options and contexts
      call pvmfsetopt(PVMROUTE, PVMDONTROUTE, old)
      call pvmfgetopt(PVMROUTE, ival)
      print *, 'route', old, ival
      call pvmfsetopt(PVMAUTOERR, 0, old)
      print *, 'autoerr', old
      call pvmfgetcontext(ival)
      print *, 'context', ival
      call pvmfnewcontext(ival)
      print *, 'newcontext positive', ival .gt. 0
      call pvmfsetcontext(ival, old)
      print *, 'setcontext', old
      call pvmfsetcontext(0, old)
      print *, 'setcontext back', old .eq. ival
c     ---- mailbox
      call pvmfinitsend(PVMDEFAULT, bufid)
      call pvmfpack(INTEGER4, i4, 1, 1, info)
      call pvmfputinfo('fsem class   ', bufid, PVMMBOXDEFAULT, info)
      print *, 'putinfo', info
      call pvmfrecvinfo('fsem class', 0, PVMMBOXDEFAULT, bufid)
      call pvmfunpack(INTEGER4, j4, 1, 1, info)
      print *, 'recvinfo', bufid .gt. 0, j4(1), info
      call pvmfdelinfo('fsem class', 0, PVMMBOXDEFAULT, info)
      print *, 'delinfo', info
      call pvmfrecvinfo('fsem class', 0, PVMMBOXDEFAULT, bufid)
      print *, 'recvinfo gone', bufid
c     ---- hosts and tasks
      call pvmfarchcode('LINUX64', code)
      print *, 'archcode', code
      call pvmfarchcode('NOSUCHARCH', code)
      print *, 'archcode unknown', code
      call pvmfmstat('nosuchhost', info)
      print *, 'mstat unknown', info
      call pvmfmstat(hname, info)
      print *, 'mstat self', info
      call pvmftidtohost(mytid, dtid)
      print *, 'tidtohost', dtid
      call pvmfpstat(mytid, info)
      print *, 'pstat', info
      call pvmfpstat(262100, info)
      print *, 'pstat none', info
      call pvmfaddhost('nosuchhost', info)
      print *, 'addhost', info
      call pvmfdelhost('nosuchhost', info)
      print *, 'delhost', info
      call pvmfsendsig(262100, 15, info)
      print *, 'sendsig', info
      call pvmfnotify(PVMTASKEXIT, 9, 1, tids, info)
      print *, 'notify', info
      call pvmfmkbuf(PVMRAW, bufid)
      call pvmfsetsbuf(bufid, old)
      call pvmfgetsbuf(ival)
      print *, 'sbuf', ival .eq. bufid
      call pvmffreebuf(bufid, info)
      print *, 'freebuf', info
      call pvmfgetsbuf(ival)
      print *, 'sbuf after free', ival
      call pvmfsetopt(PVMAUTOERR, 1, old)
      call pvmfperror('fsem says   ', info)
      print *, 'perror', info
      call pvmfcatchout(1, info)
      print *, 'catchout', info
      call pvmfcatchout(0, info)
      call pvmfexit(info)
      print *, 'exit', info
      end
"#;

const FMBOX: &str = r#"      program fmbox
      include '../include/fpvm3.h'
      integer mytid, info, bufid, i, ncl, nent, idx(4), own(4), flg(4)
      character*16 cname
      call pvmfmytid(mytid)
      call pvmfinitsend(PVMDEFAULT, bufid)
      call pvmfputinfo('fmbox a', bufid, PVMMBOXDEFAULT, info)
      call pvmfputinfo('fmbox b', bufid, PVMMBOXDEFAULT, info)
      do 10 i = 1, 4
        info = -99
        ncl = -99
        nent = -99
        cname = '?'
        call pvmfgetmboxinfo('fmbox*', cname, ncl, nent, idx, own,
     &                       flg, info)
        print *, 'class ', cname(1:8), ncl, nent, info
 10   continue
      call pvmfexit(info)
      end
"#;

/// A fresh directory per call (tests of one process run in parallel), under the build
/// directory's scratch space (cargo's CARGO_TARGET_TMPDIR) rather than /tmp, which kept them.
fn build_dir(tag: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d =
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("pvm-flib-{tag}-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&d).expect("create build dir");
    d
}

/// (program, source in the unpacked examples, uses groups).
const FORTRAN: &[(&str, &str, bool)] = &[
    ("fmaster1", "examples/master1.f", false),
    ("fslave1", "examples/slave1.f", false),
    ("fspmd", "examples/spmd.f", false),
    ("hitc", "examples/hitc.f", false),
    ("hitc_slave", "examples/hitc_slave.f", false),
    ("fgexample", "examples/gexample.f", true),
    ("frsg", "gexamples/frsg.f", true),
];

fn fortran_vm(flavour: Flavour) -> (Vm, PathBuf) {
    fortran_vm_on(flavour, Kind::Legacy)
}

fn fortran_vm_on(flavour: Flavour, daemon: Kind) -> (Vm, PathBuf) {
    let src = example_sources(flavour);
    let out = build_dir(&format!("fex-{flavour:?}"));
    std::fs::write(src.join("examples").join("fsem.f"), FSEM).expect("write fsem.f");
    std::fs::write(src.join("examples").join("fmbox.f"), FMBOX).expect("write fmbox.f");
    let mut vm = Vm::new(&format!("fex-{flavour:?}"));
    for (name, file, groups) in FORTRAN
        .iter()
        .copied()
        .chain([("fsem", "examples/fsem.f", true), ("fmbox", "examples/fmbox.f", false)])
    {
        fortran(&src.join(file), &out.join(name), flavour, groups);
        vm.install(&out.join(name), name);
    }
    let launch = out.join("launch.c");
    std::fs::write(&launch, LAUNCH).expect("write launch.c");
    cc_group(&launch, &out.join("launch"), Flavour::Legacy);
    vm.install(&out.join("launch"), "launch");
    vm.install(&pvmgs(flavour), "pvmgs");
    vm.start_daemon(daemon);
    (vm, out)
}

fn lines(out: &str, sort: bool) -> Vec<String> {
    let mut v: Vec<String> = normalise(out)
        .lines()
        .map(|l| l.trim_end().to_string())
        // pvm_exit says so when children still send output, which is timing.
        .filter(|l| !l.is_empty() && !l.contains("child task(s) still running"))
        .collect();
    if sort {
        v.sort();
    }
    v
}

fn run_fortran(flavour: Flavour) -> Vec<String> {
    run_fortran_on(flavour, Kind::Legacy)
}

fn run_fortran_on(flavour: Flavour, daemon: Kind) -> Vec<String> {
    let (vm, out) = fortran_vm_on(flavour, daemon);
    let mut all = Vec::new();
    for (name, args, sort) in [
        ("fmaster1", &[][..], true),
        ("hitc", &[][..], false),
        ("fgexample", &[][..], false),
        ("launch", &["fspmd", "4"][..], true),
        ("launch", &["frsg", "1"][..], true),
        ("fsem", &[][..], false),
    ] {
        let (code, text) = vm.run(name, args, None);
        all.push(format!("== {name} {args:?} exit {code:?}"));
        all.extend(lines(&text, sort));
    }
    drop(vm);
    let _ = std::fs::remove_dir_all(out);
    all
}

#[test]
fn fortran_examples_built_with_our_libfpvm3_match_the_legacy_build() {
    let ours = run_fortran(Flavour::Ours);
    let legacy = run_fortran(Flavour::Legacy);
    assert_eq!(ours, legacy);
    for want in [
        "The 1-Norm is 5050",
        "Program Finished",
        "token ring done",
        "Test OK: Sum of Squares of first 20 integers is 2870",
        "string hello....... 0",
        "config 2 1 1 1000 1 LINUX64",
    ] {
        let squeeze = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            ours.iter().any(|l| squeeze(l).contains(want)),
            "missing {want:?} in {ours:#?}"
        );
    }
    assert!(
        ours.iter()
            .filter(|l| l.starts_with("== "))
            .all(|l| l.ends_with("Some(0)")),
        "{ours:#?}"
    );
}

/// Our Fortran library, group library and group server on our daemon.
#[test]
fn fortran_examples_run_on_our_daemon() {
    // pvmd-rs answers TM_DELHOST with PvmNotImpl (see its README); everything else must match.
    let daemon_feature = |l: &String| !l.trim_start().starts_with("delhost");
    let ours: Vec<String> = run_fortran_on(Flavour::Ours, Kind::Ours)
        .into_iter()
        .filter(daemon_feature)
        .collect();
    let legacy: Vec<String> = run_fortran(Flavour::Legacy)
        .into_iter()
        .filter(daemon_feature)
        .collect();
    for (a, b) in ours.iter().zip(&legacy) {
        assert_eq!(a, b, "first difference");
    }
    assert_eq!(ours, legacy);
}

/// pvmfgetmboxinfo returns one class per call and then PvmNotFound. The legacy wrapper never
/// advances (it returns the first class forever, without setting nclasses or info); ours does
/// what the manual describes.
#[test]
fn fortran_getmboxinfo_iterates_over_the_classes() {
    let (vm, out) = fortran_vm(Flavour::Ours);
    let (code, text) = vm.run("fmbox", &[], None);
    assert_eq!(code, Some(0), "{text}");
    let squeeze: Vec<String> = text
        .lines()
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        squeeze,
        [
            "class fmbox a 2 1 0",
            "class fmbox b 2 1 0",
            "class ? -99 -99 -32",
            "class fmbox a 2 1 0"
        ]
    );
    drop(vm);
    let _ = std::fs::remove_dir_all(out);
}

#[test]
fn libfpvm3_exports_exactly_the_legacy_symbols() {
    let (_, dir) = our_libs();
    let out = std::process::Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(dir.join("libfpvm3.so"))
        .output()
        .expect("nm is required (binutils)");
    let mut ours: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2).map(str::to_string))
        .filter(|s| !s.starts_with('_'))
        .collect();
    ours.sort();
    let archive = std::process::Command::new("nm")
        .args(["--defined-only", "-g"])
        .arg(LEGACY_FPVM3)
        .output()
        .expect("nm is required (binutils)");
    assert!(archive.status.success(), "nm {LEGACY_FPVM3}: install pvm-dev");
    let mut legacy: Vec<String> = String::from_utf8_lossy(&archive.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2).map(str::to_string))
        .collect();
    legacy.sort();
    assert_eq!(ours, legacy);
}
