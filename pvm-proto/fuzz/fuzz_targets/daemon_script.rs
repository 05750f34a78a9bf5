//! End-to-end fuzzing of the daemon's decisions: arbitrary byte streams on task connections,
//! arbitrary and well-formed datagrams from the master and from strangers, handshakes and
//! timers, interleaved as a script (`pvmd_rs::harness::run_script`). The harness panics if a
//! bystander task is disconnected, stops being served or loses a message, or if buffered data
//! exceeds its bound; libFuzzer's -rss_limit_mb and -timeout catch growth and hangs.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    pvmd_rs::harness::run_script(data);
});
