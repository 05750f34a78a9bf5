//! Throughput of the user-data encoder and decoder (XDR and raw), and of fragment header
//! parse/emit.
//!
//! A plain `harness = false` benchmark (no extra dependency): every measurement is repeated and
//! the median is reported. Output lines are `bench <name> <MB/s or ns/op> <unit>`, which
//! `ci/bench-pack` joins with the legacy library's numbers into a table.
//!
//! Run: `cargo bench -p pvm-proto --bench pack` (env `PACK_BENCH_REPS` changes the repetitions).

use pvm_proto::encoding::{Encoding, Packer};
use pvm_proto::frag::{FragFlags, StreamFragHeader};
use pvm_proto::Tid;
use std::hint::black_box;
use std::time::{Duration, Instant};

const MB: usize = 1 << 20;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn measure(reps: usize, mut f: impl FnMut()) -> Duration {
    f(); // warm up caches and the allocator
    median(
        (0..reps)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .collect(),
    )
}

fn report_mbs(name: &str, bytes: usize, d: Duration) {
    println!("bench {name} {:.1} MB/s", bytes as f64 / MB as f64 / d.as_secs_f64());
}

/// Measures packing `data` with `pk` and unpacking it with `up` in encoding `enc`, reporting
/// both under `name` (its `{}` replaced by "pack" and "unpack"); the unpacked values are checked.
fn round_trip<T: Copy + Default + PartialEq + std::fmt::Debug, E: std::fmt::Debug, F: std::fmt::Debug>(
    reps: usize,
    name: &str,
    enc: Encoding,
    data: &[T],
    pk: fn(&mut Packer, &[T]) -> Result<(), E>,
    up: impl Fn(&mut pvm_proto::encoding::Unpacker<'_>, &mut [T]) -> Result<(), F>,
) {
    let d = measure(reps, || {
        let mut p = Packer::new(enc);
        pk(&mut p, black_box(data)).unwrap();
        black_box(p.into_body());
    });
    report_mbs(&name.replace("{}", "pack"), MB, d);

    let mut p = Packer::new(enc);
    pk(&mut p, data).unwrap();
    let body = p.into_body();
    let mut out = vec![T::default(); data.len()];
    let d = measure(reps, || {
        up(&mut black_box(&body).unpacker(), &mut out).unwrap();
        black_box(&out);
    });
    assert_eq!(out, data);
    report_mbs(&name.replace("{}", "unpack"), MB, d);
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing useful either way.
    let reps: usize = std::env::var("PACK_BENCH_REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(31);

    let ints: Vec<i32> = (0..(MB / 4) as i32)
        .map(|i| i.wrapping_mul(2_654_435_761u32 as i32))
        .collect();
    let doubles: Vec<f64> = (0..MB / 8).map(|i| i as f64 * 1.000_001).collect();

    for (enc, name) in [(Encoding::Xdr, "xdr"), (Encoding::Raw, "raw")] {
        round_trip(
            reps,
            &format!("{name}_{{}}_int_1MB"),
            enc,
            &ints,
            Packer::pk_int,
            |u, o| u.up_int(o),
        );
        round_trip(
            reps,
            &format!("{name}_{{}}_double_1MB"),
            enc,
            &doubles,
            Packer::pk_double,
            |u, o| u.up_double(o),
        );
    }

    // Fragment headers: one parse or one emit per fragment of a 1 MB message (261 fragments).
    const N: usize = 100_000;
    let hdr = StreamFragHeader {
        dst: Tid(0x40001),
        src: Tid(0x40002),
        len: 4080 - 16,
        flags: FragFlags::SOM | FragFlags::EOM,
    };
    let bytes = hdr.to_bytes();
    let d = measure(reps, || {
        for _ in 0..N {
            black_box(StreamFragHeader::parse(black_box(&bytes), 1 << 20).unwrap());
        }
    });
    println!("bench frag_header_parse {:.2} ns/op", d.as_nanos() as f64 / N as f64);
    let d = measure(reps, || {
        let mut buf = [0u8; 16];
        for _ in 0..N {
            black_box(&hdr).emit(&mut buf);
            black_box(&buf);
        }
    });
    println!("bench frag_header_emit {:.2} ns/op", d.as_nanos() as f64 / N as f64);
}
