//! The binary: help, version and exit codes.

mod common;
use common::*;
use std::process::Command;

fn pvmdump(args: &[&str]) -> (i32, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_pvmdump")).args(args).output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn temp(name: &str, bytes: &[u8]) -> String {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("pvmdump-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p.to_string_lossy().into_owned()
}

#[test]
fn help_version_and_usage_errors() {
    let (code, out, _) = pvmdump(&["--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("Exit status:") && out.contains("--udp-port"), "{out}");
    let (code, out, _) = pvmdump(&["-V"]);
    assert_eq!((code, out.trim()), (0, concat!("pvmdump ", env!("CARGO_PKG_VERSION"))));
    assert_eq!(pvmdump(&[]).0, 2);
    let (code, _, err) = pvmdump(&["--bogus", "x"]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown option `--bogus`"), "{err}");
    assert_eq!(pvmdump(&["--udp-port", "notaport", "x"]).0, 2);
    let (code, _, err) = pvmdump(&["/nonexistent/capture.pcap"]);
    assert_eq!(code, 3);
    assert!(err.contains("/nonexistent/capture.pcap"), "{err}");
    let junk = temp("junk.bin", b"\x7fELF\x02\x01\x01\x00");
    assert_eq!(pvmdump(&[&junk]).0, 3);
}

#[test]
fn exit_status_reflects_check_and_malformed_input() {
    let vectors = concat!(env!("CARGO_MANIFEST_DIR"), "/../pvm-proto/tests/vectors/");
    let (code, out, err) = pvmdump(&["--check", &format!("{vectors}dd_remote_spawn.hex")]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("MSG t80040000 > t80080000 DM_EXEC"), "{out}");
    assert!(
        err.contains("18 packets, 18 PVM fragments, 9 messages, 0 retransmissions, 0 errors, 0 check differences"),
        "{err}"
    );
    // Stream vectors are recognised by name.
    let (code, out, _) = pvmdump(&["-q", &format!("{vectors}td_exit.hex")]);
    assert_eq!(code, 0);
    assert!(out.contains("TD t40001 > t80000000 SOM|EOM len=32 TM_EXIT"), "{out}");

    let mut d = vector("dd_remote_spawn.hex")[0].clone();
    d[13] = 1;
    let f = temp(
        "diff.pcap",
        &pcap(
            ETHERNET,
            &frames(vec![eth(&ipv4(A, B, 17, 1, false, 0, &udp(1, 2, &d)))]),
        ),
    );
    let (code, out, _) = pvmdump(&["--check", "--udp-port=2", &f]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("CHECK datagram header byte 13: captured 01, re-encoded 00"),
        "{out}"
    );
    let bad = temp("bad.pcap", &pcap(ETHERNET, &frames(vec![vec![1, 2, 3]])));
    assert_eq!(pvmdump(&[&bad]).0, 4);
}
