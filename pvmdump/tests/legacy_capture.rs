//! End to end: a capture of two legacy PVM 3.4.6 pvmds (see data/README.md).

use pvmdump::{analyse_bytes, Config};

fn capture() -> Vec<u8> {
    std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/legacy-2host.pcap")).unwrap()
}

fn body(line: &str) -> &str {
    line.splitn(3, ' ').nth(2).unwrap_or("")
}

#[test]
fn legacy_two_host_capture_decodes_without_differences() {
    let (lines, stats) = analyse_bytes(
        &capture(),
        Config {
            check: true,
            ..Config::default()
        },
        false,
    )
    .unwrap();
    let errors: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains(" ERROR ") || l.contains(" CHECK "))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    assert_eq!((stats.errors, stats.check_diffs), (0, 0));
    assert_eq!((stats.packets, stats.fragments, stats.messages), (186, 159, 77));
    let has = |want: &str| lines.iter().any(|l| body(l).starts_with(want));
    // Host add, then the spawn on h2.
    assert!(has("MSG t80040000 > t80080000 DM_SLCONF ctx=0x0 wid=0x0 enc=xdr len=0"));
    assert!(has(
        "MSG t80080000 > t80040000 DM_EXECACK ctx=0x0 wid=0x4003c enc=xdr len=8 DM_EXECACK [t80001]"
    ));
    // 6032 bytes through the pvmds: a 4080-byte datagram (IP-fragmented) and a 2016-byte one.
    assert!(has(
        "10.233.0.1:46445 > 10.233.0.2:42696 DD t40003 > t80001 SOM|DAT seq=27 len=4064 tag=1 ctx=0x0 wid=0x0 enc=xdr"
    ));
    assert!(has(
        "MSG t40003 > t80001 tag=1 ctx=0x0 wid=0x0 enc=xdr frags=2 len=6032 6032 bytes 0000000100070e151c"
    ));
    // The legacy pvmd retried the second datagram after about a millisecond (its RTT estimate
    // had converged on the fast veth link).
    assert!(lines
        .iter()
        .any(|l| l.starts_with("#110 ") && l.ends_with("EOM|DAT seq=28 len=2000 (retransmission)")));
    assert_eq!(stats.retransmissions, 1);
    // The direct route: addresses learned from TC_CONREQ/TC_CONACK, then TDFRAG over TCP.
    assert!(has("NOTE direct route endpoint 10.233.0.2:34067"));
    assert!(has("NOTE direct route endpoint 10.233.0.1:43401"));
    assert!(has(
        "10.233.0.1:43401 > 10.233.0.2:34067 TD t40003 > t80001 SOM len=4064 tag=3 ctx=0x0 wid=0x0 enc=xdr"
    ));
    assert!(has(
        "MSG t40003 > t80001 tag=3 ctx=0x0 wid=0x0 enc=xdr frags=2 len=6032"
    ));
    assert!(has(
        "MSG t80001 > t40003 tag=4 ctx=0x0 wid=0x0 enc=raw frags=2 len=5013 5013 bytes 03000000050000006563686f00"
    ));
    assert!(has("MSG t40003 > t80001 tag=99 ctx=0x0 wid=0x0 enc=xdr len=0"));
    // Halt: FIN|ACK both ways, not counted as sequenced data.
    assert!(has(
        "10.233.0.1:46445 > 10.233.0.2:42696 DD t80040000 > t80080000 FIN|ACK seq=0 ack=0 len=0"
    ));
}

#[test]
fn direct_route_found_without_content_sniffing() {
    // With sniffing off and the pvmd port given, the TCP route is still found through the
    // TC_CONREQ/TC_CONACK addresses.
    let cfg = Config {
        no_guess: true,
        udp_ports: vec![46445],
        ..Config::default()
    };
    let (lines, stats) = analyse_bytes(&capture(), cfg, false).unwrap();
    assert_eq!(stats.messages, 77, "{lines:#?}");
    let cfg = Config {
        no_guess: true,
        ..Config::default()
    };
    let (_, stats) = analyse_bytes(&capture(), cfg, false).unwrap();
    assert_eq!(stats.messages, 0);
}

/// Makes a fresh capture with the legacy daemons and decodes it. Needs root, tcpdump, gcc and
/// the Debian pvm/pvm-dev packages (ci/setup installs them); it fails, never skips, without them.
#[test]
fn live_legacy_capture_decodes_without_differences() {
    let out = std::env::temp_dir().join(format!("pvmdump-live-{}.pcap", std::process::id()));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/make-capture.sh");
    let st = std::process::Command::new("bash")
        .arg(script)
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success(), "make-capture.sh failed: {st}");
    let bytes = std::fs::read(&out).unwrap();
    let _ = std::fs::remove_file(&out);
    let (lines, stats) = analyse_bytes(
        &bytes,
        Config {
            check: true,
            ..Config::default()
        },
        false,
    )
    .unwrap();
    assert_eq!((stats.errors, stats.check_diffs), (0, 0), "{lines:#?}");
    let has = |p: &str| lines.iter().any(|l| l.contains(p));
    assert!(has("tag=1 ctx=0x0 wid=0x0 enc=xdr frags=2 len=6032"), "{lines:#?}");
    assert!(
        has(" TD ") && has("tag=4 ctx=0x0 wid=0x0 enc=raw frags=2 len=5013"),
        "{lines:#?}"
    );
}
