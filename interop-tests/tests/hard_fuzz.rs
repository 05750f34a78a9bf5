//! The daemon fuzz harness (`pvmd_rs::harness::run_script`) inside `cargo test`: every committed
//! seed of the `daemon_script` cargo-fuzz target as a regression input, then a bounded number of
//! seeded structured random scripts (opcodes with small operands, so that most operations reach
//! the daemon instead of dying on a first huge length). Invariants are asserted by the harness.

use std::time::{Duration, Instant};

use pvmd_rs::harness::{run_script, Rng};

#[test]
fn hard_fuzz_seeds_replay() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../pvm-proto/fuzz/seeds/daemon_script");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).expect("seeds of the daemon_script fuzz target") {
        let p = e.unwrap().path();
        let stats = run_script(&std::fs::read(&p).unwrap());
        assert!(stats.ops > 0, "{} did nothing", p.display());
        n += 1;
    }
    assert!(n >= 6, "only {n} seeds");
}

fn structured(r: &mut Rng) -> Vec<u8> {
    let mut v = Vec::new();
    for _ in 0..(1 + r.next_u64() % 60) {
        let op = (r.next_u64() % 10) as u8;
        v.push(op);
        match op {
            1 | 3 | 4 => {
                v.push(r.next_u64() as u8);
                let n = (r.next_u64() % 200) as u16;
                if op != 1 {
                    v.pop();
                }
                v.extend_from_slice(&n.to_be_bytes());
                v.extend(r.bytes(n as usize));
            }
            5 => {
                v.extend([r.next_u64() as u8, r.next_u64() as u8]);
                let n = (r.next_u64() % 64) as u16;
                v.extend_from_slice(&n.to_be_bytes());
                v.extend(r.bytes(n as usize));
                v.push(r.next_u64() as u8);
            }
            8 => {
                v.extend(r.bytes(6));
                let n = (r.next_u64() % 64) as u16;
                v.extend_from_slice(&n.to_be_bytes());
                v.extend(r.bytes(n as usize));
            }
            9 => {
                v.push(r.next_u64() as u8);
                v.extend(r.bytes(4));
                let n = (r.next_u64() % 64) as u16;
                v.extend_from_slice(&n.to_be_bytes());
                v.extend(r.bytes(n as usize));
            }
            0 | 7 => {}
            _ => v.push(r.next_u64() as u8),
        }
    }
    v
}

#[test]
fn hard_fuzz_structured_random_scripts() {
    let mut r = Rng(0x00c0_ffee);
    let t = Instant::now();
    let (mut runs, mut ops, mut closed) = (0usize, 0usize, 0usize);
    while runs < 20000 && t.elapsed() < Duration::from_secs(20) {
        let s = run_script(&structured(&mut r));
        runs += 1;
        ops += s.ops;
        closed += s.closed;
    }
    eprintln!("structured scripts: {runs} runs, {ops} operations, {closed} hostile connections closed");
    assert!(
        runs >= 100 && ops > runs * 5,
        "too little was exercised: {runs} runs {ops} ops"
    );
}
