//! Differential test against the installed legacy libpvm3: the same pack calls through
//! `tests/legacy/pack_dump.c` (no pvmd needed) and through our `Packer` must give the same
//! fragments, byte for byte, for XDR, raw and in-place bodies and many fragment sizes.
//!
//! The C side dumps each message with `pvm_pkmesg` into a raw buffer, which exposes the library's
//! own fragment list. Legacy XDR pad bytes are uninitialised heap bytes: the dumper runs under
//! `MALLOC_PERTURB_=255` (glibc then fills every allocation with 0x00, what we write; the thread
//! cache, which skips that fill, is turned off) and again under `MALLOC_PERTURB_=170` (fill
//! 0x55), and the bytes that differ between the two runs must be exactly the pad bytes our packer
//! reports.
//!
//! Needs gcc, /usr/include/pvm3.h and libpvm3 (`ci/setup` installs them); without them it fails
//! with a message saying so, like every test against the legacy implementation.

use pvm_proto::encoding::{EmbeddedMesg, Encoding, MsgBody, PackOptions, Packer};
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[derive(Debug, Clone)]
enum Vals {
    Byte(Vec<u8>),
    Short(Vec<i16>),
    UShort(Vec<u16>),
    Int(Vec<i32>),
    UInt(Vec<u32>),
    Long(Vec<i64>),
    ULong(Vec<u64>),
    Float(Vec<f32>),
    Double(Vec<f64>),
    Cplx(Vec<[f32; 2]>),
    DCplx(Vec<[f64; 2]>),
}

#[derive(Debug, Clone)]
enum Op {
    Data { vals: Vals, cnt: usize, stride: usize },
    Str(Vec<u8>),
    Mesg,
}

#[derive(Debug, Clone)]
struct Case {
    name: String,
    enc: Encoding,
    frag_size: usize,
    ops: Vec<Op>,
}

fn enc_arg(e: Encoding) -> i32 {
    match e {
        Encoding::Xdr => 0,
        Encoding::Raw => 1,
        Encoding::InPlace => 2,
    }
}

fn script(cases: &[Case]) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    for c in cases {
        writeln!(s, "case {} {} {}", c.name, enc_arg(c.enc), c.frag_size).unwrap();
        for op in &c.ops {
            match op {
                Op::Mesg => s.push_str("mesg\n"),
                Op::Str(b) if b.is_empty() => s.push_str("str -\n"),
                Op::Str(b) => {
                    s.push_str("str ");
                    for x in b {
                        write!(s, "{x:02x}").unwrap();
                    }
                    s.push('\n');
                }
                Op::Data { vals, cnt, stride } => {
                    let n = if *cnt == 0 { 0 } else { (cnt - 1) * stride + 1 };
                    macro_rules! ints {
                        ($name:literal, $v:expr) => {{
                            write!(s, "{} {} {}", $name, cnt, stride).unwrap();
                            for x in &$v[..n] {
                                write!(s, " {}", *x as i64).unwrap();
                            }
                        }};
                    }
                    match vals {
                        Vals::Byte(v) => ints!("byte", v),
                        Vals::Short(v) => ints!("short", v),
                        Vals::UShort(v) => ints!("ushort", v),
                        Vals::Int(v) => ints!("int", v),
                        Vals::UInt(v) => ints!("uint", v),
                        Vals::Long(v) => ints!("long", v),
                        Vals::ULong(v) => ints!("ulong", v),
                        Vals::Float(v) => {
                            write!(s, "float {cnt} {stride}").unwrap();
                            for x in &v[..n] {
                                write!(s, " {:x}", x.to_bits()).unwrap();
                            }
                        }
                        Vals::Double(v) => {
                            write!(s, "double {cnt} {stride}").unwrap();
                            for x in &v[..n] {
                                write!(s, " {:x}", x.to_bits()).unwrap();
                            }
                        }
                        Vals::Cplx(v) => {
                            write!(s, "cplx {cnt} {stride}").unwrap();
                            for x in &v[..n] {
                                write!(s, " {:x} {:x}", x[0].to_bits(), x[1].to_bits()).unwrap();
                            }
                        }
                        Vals::DCplx(v) => {
                            write!(s, "dcplx {cnt} {stride}").unwrap();
                            for x in &v[..n] {
                                write!(s, " {:x} {:x}", x[0].to_bits(), x[1].to_bits()).unwrap();
                            }
                        }
                    }
                    s.push('\n');
                }
            }
        }
        s.push_str("end\n");
    }
    s
}

/// A legacy dump: the pvm_pkmesg header fields, the pack return code and the fragments.
#[derive(Debug, Clone)]
struct Dump {
    rc: i32,
    hdr: [i32; 8],
    frags: Vec<Vec<u8>>,
}

fn parse_dumps(out: &str) -> Vec<(String, Dump)> {
    let mut v = Vec::new();
    for line in out.lines() {
        let mut w = line.split(' ');
        if w.next() != Some("dump") {
            continue;
        }
        let name = w.next().unwrap().to_string();
        let rc: i32 = w.next().unwrap().parse().unwrap();
        let hex = w.next().unwrap();
        let b: Vec<u8> = (0..hex.len() / 2)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        let int = |o: usize| i32::from_ne_bytes(b[o..o + 4].try_into().unwrap());
        let mut hdr = [0i32; 8];
        for (i, h) in hdr.iter_mut().enumerate() {
            *h = int(4 * i);
        }
        let mut frags = Vec::new();
        let mut o = 32;
        while o < b.len() {
            let n = int(o) as usize;
            frags.push(b[o + 4..o + 4 + n].to_vec());
            o += 4 + n;
        }
        v.push((name, Dump { rc, hdr, frags }));
    }
    v
}

/// Packs a case with our packer. `prev` is the previous case's body and legacy header fields.
fn pack_ours(c: &Case, prev: Option<&(MsgBody, [i32; 8])>) -> (Packer, i32) {
    let mut p = Packer::with_options(
        c.enc,
        PackOptions {
            frag_size: c.frag_size,
            record_pads: true,
            ..PackOptions::default()
        },
    )
    .unwrap();
    let mut rc = 0;
    for op in &c.ops {
        let r = match op {
            Op::Mesg => {
                let (body, h) = prev.expect("mesg needs a previous case");
                p.pk_mesg(&EmbeddedMesg {
                    ctx: h[1],
                    tag: h[2],
                    wid: h[3],
                    crc: h[5],
                    src: h[6],
                    dst: h[7],
                    body: body.clone(),
                })
            }
            Op::Str(s) => p.pk_str(s),
            Op::Data { vals, cnt, stride } => {
                let (cnt, stride) = (*cnt, *stride);
                match vals {
                    Vals::Byte(v) => p.pack_strided(v, cnt, stride),
                    Vals::Short(v) => p.pack_strided(v, cnt, stride),
                    Vals::UShort(v) => p.pack_strided(v, cnt, stride),
                    Vals::Int(v) => p.pack_strided(v, cnt, stride),
                    Vals::UInt(v) => p.pack_strided(v, cnt, stride),
                    Vals::Long(v) => p.pack_strided(v, cnt, stride),
                    Vals::ULong(v) => p.pack_strided(v, cnt, stride),
                    Vals::Float(v) => p.pack_strided(v, cnt, stride),
                    Vals::Double(v) => p.pack_strided(v, cnt, stride),
                    Vals::Cplx(v) => p.pack_strided(v, cnt, stride),
                    Vals::DCplx(v) => p.pack_strided(v, cnt, stride),
                }
            }
        };
        if let Err(e) = r {
            if rc == 0 {
                rc = e.pvm_error().code();
            }
        }
    }
    (p, rc)
}

/// Small deterministic generator (xorshift64*), so that failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<T: Copy>(&mut self, v: &[T]) -> T {
        v[self.below(v.len())]
    }
}

fn data(vals: Vals, cnt: usize, stride: usize) -> Op {
    Op::Data { vals, cnt, stride }
}

fn random_op(r: &mut Rng, inplace: bool) -> Op {
    let cnt = match r.below(10) {
        0 => 0,
        1..=5 => 1 + r.below(8),
        6..=8 => 1 + r.below(300),
        _ => 1 + r.below(3000),
    };
    let stride = if inplace { 1 } else { r.pick(&[1, 1, 1, 2, 3, 0]) };
    let n = if cnt == 0 { 0 } else { (cnt - 1) * stride + 1 };
    macro_rules! gen {
        ($f:expr) => {
            (0..n).map(|_| $f).collect()
        };
    }
    let vals = match r.below(if inplace { 11 } else { 12 }) {
        0 => Vals::Byte(gen!(r.next() as u8)),
        1 => Vals::Short(gen!(r.next() as i16)),
        2 => Vals::UShort(gen!(r.next() as u16)),
        3 => Vals::Int(gen!(r.next() as i32)),
        4 => Vals::UInt(gen!(r.next() as u32)),
        5 => Vals::Long(gen!(r.next() as i64 >> r.below(64))),
        6 => Vals::ULong(gen!(r.next() >> r.below(64))),
        7 => Vals::Float(gen!(f32::from_bits(r.next() as u32))),
        8 => Vals::Double(gen!(f64::from_bits(r.next()))),
        9 => Vals::Cplx(gen!([f32::from_bits(r.next() as u32), f32::from_bits(r.next() as u32)])),
        10 => Vals::DCplx(gen!([f64::from_bits(r.next()), f64::from_bits(r.next())])),
        _ => {
            let len = if r.below(5) == 0 { r.below(6000) } else { r.below(12) };
            return Op::Str((0..len).map(|_| 1 + r.below(255) as u8).collect());
        }
    };
    data(vals, cnt, stride)
}

fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    let mut case = |name: &str, enc, frag_size, ops: Vec<Op>| {
        v.push(Case {
            name: format!("{name}_{}_{frag_size}", enc_arg(enc)),
            enc,
            frag_size,
            ops,
        })
    };
    for enc in [Encoding::Xdr, Encoding::Raw] {
        case(
            "usermsg",
            enc,
            4080,
            vec![
                data(Vals::Int(vec![1, 2, -3, 0x12345678]), 4, 1),
                data(Vals::Short(vec![0x102, -2]), 2, 1),
                data(Vals::Long(vec![0x11223344, -5]), 2, 1),
                data(Vals::Float(vec![1.5]), 1, 1),
                data(Vals::Double(vec![2.25]), 1, 1),
                data(Vals::Cplx(vec![[1.0, -1.0]]), 1, 1),
                data(Vals::DCplx(vec![[1.0, -2.0]]), 1, 1),
                data(Vals::UInt(vec![0xdeadbeef]), 1, 1),
                data(Vals::Byte(b"ABC".to_vec()), 3, 1),
                Op::Str(b"hello".to_vec()),
                data(Vals::Long(vec![0x1122334455667788]), 1, 1),
            ],
        );
        case(
            "ints1500",
            enc,
            4080,
            vec![data(Vals::Int((0..1500).collect()), 1500, 1)],
        );
        case(
            "int_doubles",
            enc,
            4080,
            vec![
                data(Vals::Int(vec![7]), 1, 1),
                data(Vals::Double((0..600).map(f64::from).collect()), 600, 1),
            ],
        );
        case(
            "dcplx_split",
            enc,
            4080,
            vec![
                data(Vals::Double(vec![0.5; 503]), 503, 1),
                data(Vals::DCplx(vec![[1.0, 2.0]; 3]), 3, 1),
            ],
        );
        for fs in [100, 4080] {
            case(
                "bytes",
                enc,
                fs,
                vec![
                    data(Vals::Int(vec![1]), 1, 1),
                    data(Vals::Byte((0..5001).map(|i| i as u8).collect()), 5001, 1),
                    data(Vals::Int(vec![2]), 1, 1),
                    data(Vals::Byte(b"xyz".to_vec()), 3, 1),
                    data(Vals::Byte(b"q.r.s".to_vec()), 3, 2),
                    data(Vals::Int(vec![3]), 1, 1),
                ],
            );
        }
        case(
            "strings",
            enc,
            4080,
            vec![Op::Str(vec![b'a'; 5000]), Op::Str(vec![]), Op::Str(b"abc".to_vec())],
        );
        case(
            "big",
            enc,
            1 << 20,
            vec![data(Vals::Double(vec![3.0; 200_000]), 200_000, 1)],
        );
        case("mesg", enc, 100, vec![data(Vals::Int(vec![9]), 1, 1), Op::Mesg]);
    }
    case(
        "tiny",
        Encoding::Xdr,
        52,
        vec![
            data(Vals::Int(vec![1, 2, 3]), 3, 1),
            data(Vals::Cplx(vec![[1.0, 2.0]]), 1, 1),
            data(Vals::Byte(b"hello".to_vec()), 5, 1),
            Op::Str(b"abcdefg".to_vec()),
        ],
    );
    case(
        "tiny",
        Encoding::Raw,
        52,
        vec![
            data(Vals::Double(vec![1.0, 2.0]), 2, 1),
            data(Vals::Byte(b"hello".to_vec()), 5, 1),
            Op::Str(b"abcdefg".to_vec()),
        ],
    );
    case(
        "inplace",
        Encoding::InPlace,
        4080,
        vec![
            data(Vals::Int(vec![1, 2, 3, 4]), 4, 1),
            data(Vals::Int(vec![]), 0, 1),
            data(Vals::Double(vec![1.0; 1000]), 1000, 1),
            data(Vals::Byte(b"abc".to_vec()), 3, 1),
            Op::Str(b"not possible".to_vec()),
        ],
    );
    case("inplace_empty", Encoding::InPlace, 4080, vec![]);
    case("xdr_empty", Encoding::Xdr, 4080, vec![]);
    case("mesg_of_empty", Encoding::Xdr, 4080, vec![Op::Mesg]);

    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    for i in 0..160 {
        let enc = match r.below(10) {
            0 => Encoding::InPlace,
            1..=5 => Encoding::Xdr,
            _ => Encoding::Raw,
        };
        let fs = match enc {
            Encoding::Xdr => r.pick(&[56, 60, 64, 100, 1000, 4080, 8240]),
            _ => r.pick(&[52, 53, 57, 100, 1001, 4080, 4081]),
        };
        let prev_ok = v.last().is_some_and(|c: &Case| c.enc != Encoding::InPlace);
        let mut ops: Vec<Op> = (0..1 + r.below(8))
            .map(|_| random_op(&mut r, enc == Encoding::InPlace))
            .collect();
        if prev_ok && r.below(4) == 0 {
            let at = r.below(ops.len() + 1);
            ops.insert(at, Op::Mesg);
        }
        v.push(Case {
            name: format!("rand{i}_{}_{fs}", enc_arg(enc)),
            enc,
            frag_size: fs,
            ops,
        });
    }
    v
}

fn legacy_present() -> bool {
    Path::new("/usr/include/pvm3.h").exists()
        && (Path::new("/usr/lib/x86_64-linux-gnu/libpvm3.so").exists() || Path::new("/usr/lib/libpvm3.so").exists())
        && Command::new("gcc")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
}

fn build_dumper(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/legacy/pack_dump.c");
    let exe = dir.join("pack_dump");
    let out = Command::new("gcc")
        .args(["-O1", "-o"])
        .arg(&exe)
        .arg(&src)
        .arg("-lpvm3")
        .output()
        .expect("running gcc");
    assert!(
        out.status.success(),
        "gcc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

fn run_dumper(exe: &Path, dir: &Path, script: &str, perturb: &str) -> Vec<(String, Dump)> {
    parse_dumps(&run_script(exe, dir, script, perturb))
}

fn run_script(exe: &Path, dir: &Path, script: &str, perturb: &str) -> String {
    let mut child = Command::new(exe)
        .env("PVM_ALLOW_ROOT", "1")
        .env("PVM_TMP", dir)
        .env("MALLOC_PERTURB_", perturb)
        // The thread cache hands out chunks without perturbing them; go around it.
        .env("GLIBC_TUNABLES", "glibc.malloc.tcache_count=0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting the dumper");
    let mut stdin = child.stdin.take().unwrap();
    let script = script.to_string();
    let writer = std::thread::spawn(move || stdin.write_all(script.as_bytes()));
    let out = child.wait_with_output().expect("dumper output");
    writer.join().unwrap().expect("writing the script");
    assert!(out.status.success(), "dumper exited with {}", out.status);
    String::from_utf8(out.stdout).unwrap()
}

/// Compiles the dumper in a fresh directory. Fails loudly when the legacy library is absent:
/// the comparison is the point of this file.
fn setup(tag: &str) -> Option<(PathBuf, PathBuf)> {
    assert!(
        legacy_present(),
        "legacy libpvm3 (pvm-dev), its header or gcc is missing: run ci/setup"
    );
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("legacy-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let exe = build_dumper(&dir);
    Some((dir, exe))
}

#[test]
fn packer_matches_legacy_libpvm3() {
    let Some((dir, exe)) = setup("pack") else { return };
    let cases = cases();
    let script = script(&cases);
    let zero = run_dumper(&exe, &dir, &script, "255");
    let fill = run_dumper(&exe, &dir, &script, "170");
    assert_eq!(zero.len(), cases.len(), "dumper printed one line per case");
    assert_eq!(fill.len(), cases.len());

    let mut prev: Option<(MsgBody, [i32; 8])> = None;
    let mut multi_frag = 0;
    for ((c, (name, legacy)), (_, legacy_fill)) in cases.iter().zip(&zero).zip(&fill) {
        assert_eq!(&c.name, name);
        let (p, rc) = pack_ours(c, prev.as_ref());
        let ours: Vec<&[u8]> = p.body().fragments().collect();
        let theirs: Vec<&[u8]> = legacy.frags.iter().map(Vec::as_slice).collect();
        assert_eq!(rc, legacy.rc, "{name}: return code");
        assert_eq!(
            p.body().fragment_lens(),
            legacy.frags.iter().map(Vec::len).collect::<Vec<_>>(),
            "{name}: fragment lengths"
        );
        for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
            if a != b {
                let at = a.iter().zip(b.iter()).position(|(x, y)| x != y).unwrap_or(0);
                panic!(
                    "{name}: fragment {i} differs at byte {at}: ours {:02x?} legacy {:02x?}",
                    &a[at..(at + 16).min(a.len())],
                    &b[at..(at + 16).min(b.len())]
                );
            }
        }
        if c.enc != Encoding::InPlace {
            assert_eq!(legacy.hdr[0] as usize, p.body().len(), "{name}: m_len");
            assert_eq!(legacy.hdr[4], p.body().enc(), "{name}: enc");
        }
        // Which bytes did the legacy library leave uninitialised? Exactly our pads (cases with
        // an embedded message also copy the inner message's pads, so they are skipped here).
        if !c.ops.iter().any(|o| matches!(o, Op::Mesg)) {
            let a: Vec<u8> = legacy.frags.concat();
            let b: Vec<u8> = legacy_fill.frags.concat();
            assert_eq!(a.len(), b.len());
            let garbage: BTreeSet<usize> = (0..a.len()).filter(|&i| a[i] != b[i]).collect();
            let pads: BTreeSet<usize> = p.pad_ranges().iter().flat_map(|r| r.clone()).collect();
            assert_eq!(garbage, pads, "{name}: uninitialised legacy bytes vs our pad bytes");
        }
        if ours.len() > 1 {
            multi_frag += 1;
        }
        prev = Some((p.into_body(), legacy.hdr));
    }
    assert!(multi_frag > 20, "only {multi_frag} cases spanned several fragments");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The upk script line for a pack call, and the values libpvm must print for it.
fn upk_line(op: &Op, xdr: bool) -> (String, String) {
    use std::fmt::Write;
    let Op::Data { vals, cnt, stride } = op else {
        let Op::Str(s) = op else { unreachable!("no mesg here") };
        let hex: String = if s.is_empty() {
            "-".into()
        } else {
            s.iter().map(|b| format!("{b:02x}")).collect()
        };
        return ("upkstr".into(), format!("val 0 {hex}"));
    };
    let (cnt, stride) = (*cnt, *stride);
    let mut want = String::from("val 0");
    macro_rules! ints {
        ($name:literal, $v:expr, $conv:expr) => {{
            for i in 0..cnt {
                write!(want, " {}", $conv($v[i * stride])).unwrap();
            }
            $name
        }};
    }
    macro_rules! bits {
        ($name:literal, $v:expr, $conv:expr) => {{
            for i in 0..cnt {
                for w in $conv($v[i * stride]) {
                    write!(want, " {:x}", w).unwrap();
                }
            }
            $name
        }};
    }
    let name = match vals {
        Vals::Byte(v) => ints!("byte", v, |x: u8| x as i64),
        Vals::Short(v) => ints!("short", v, |x: i16| x as i64),
        Vals::UShort(v) => ints!("ushort", v, |x: u16| x as i64),
        Vals::Int(v) => ints!("int", v, |x: i32| x as i64),
        Vals::UInt(v) => ints!("uint", v, |x: u32| x as i64),
        // XDR long: 4 bytes on the wire, zero-extended by libpvm on LINUX64.
        Vals::Long(v) => ints!("long", v, |x: i64| if xdr { x as u32 as i64 } else { x }),
        Vals::ULong(v) => ints!("ulong", v, |x: u64| if xdr { x as u32 as i64 } else { x as i64 }),
        Vals::Float(v) => bits!("float", v, |x: f32| [x.to_bits() as u64]),
        Vals::Double(v) => bits!("double", v, |x: f64| [x.to_bits()]),
        Vals::Cplx(v) => bits!("cplx", v, |x: [f32; 2]| [x[0].to_bits() as u64, x[1].to_bits() as u64]),
        Vals::DCplx(v) => bits!("dcplx", v, |x: [f64; 2]| [x[0].to_bits(), x[1].to_bits()]),
    };
    (format!("upk {name} {cnt} {stride}"), want)
}

/// The other direction: libpvm3 receives our fragments (through pvm_upkmesg, which rebuilds a
/// message from a fragment list) and unpacks them with its own decoders.
#[test]
fn legacy_libpvm3_unpacks_our_bodies() {
    let Some((dir, exe)) = setup("unpack") else { return };
    let mut script = String::new();
    let mut expect: Vec<String> = Vec::new();
    let mut checked = 0;
    for c in cases() {
        if c.ops.iter().any(|o| matches!(o, Op::Mesg)) {
            continue;
        }
        let (p, rc) = pack_ours(&c, None);
        if rc != 0 {
            continue; // a failed pack call leaves nothing (or a partial array) to read back
        }
        let mut image = Packer::with_options(
            Encoding::Raw,
            PackOptions {
                frag_size: 1 << 20,
                ..PackOptions::default()
            },
        )
        .unwrap();
        image
            .pk_mesg(&EmbeddedMesg {
                body: p.into_body(),
                ..EmbeddedMesg::default()
            })
            .unwrap();
        script.push_str("load ");
        for b in image.body().bytes() {
            script.push_str(&format!("{b:02x}"));
        }
        script.push('\n');
        expect.push(format!("{}: loaded", c.name));
        for op in &c.ops {
            let (line, want) = upk_line(op, c.enc == Encoding::Xdr);
            script.push_str(&line);
            script.push('\n');
            expect.push(format!("{}: {want}", c.name));
        }
        checked += 1;
    }
    let out = run_script(&exe, &dir, &script, "0");
    let got: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("val ") || l.starts_with("loaded "))
        .collect();
    assert_eq!(got.len(), expect.len(), "one output line per load/upk");
    for (g, e) in got.iter().zip(&expect) {
        let (name, want) = e.split_once(": ").unwrap();
        if want == "loaded" {
            let mid: i32 = g.trim_start_matches("loaded ").parse().unwrap();
            assert!(mid > 0, "{name}: pvm_upkmesg of our fragments failed with {mid}");
        } else {
            assert_eq!(*g, want, "{name}");
        }
    }
    assert!(checked > 100, "only {checked} cases checked");
    let _ = std::fs::remove_dir_all(&dir);
}
