//! pvmdump on arbitrary files: pcap, pcapng or hex, never a panic; an unreadable file is an
//! error, and a readable one yields output lines whose error count matches its ERROR lines.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pvmdump::{analyse_bytes, Config};

fuzz_target!(|data: &[u8]| {
    let cfg = Config {
        check: true,
        all_udp: true,
        ..Config::default()
    };
    for hex_stream in [false, true] {
        if let Ok((lines, stats)) = analyse_bytes(data, cfg.clone(), hex_stream) {
            let errors = lines.iter().filter(|l| l.contains(" ERROR ")).count() as u64;
            assert!(
                errors <= stats.errors,
                "{errors} ERROR lines, stats say {}",
                stats.errors
            );
        }
    }
});
