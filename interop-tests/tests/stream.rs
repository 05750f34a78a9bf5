//! Literal bytes on the task <-> pvmd socket, against our daemon and the legacy one.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use interop_tests::*;
use pvm_proto::codes::{Tm, ENC_XDR, SYSCTX_TM};
use pvm_proto::frag::{FragFlags, StreamFragHeader};
use pvm_proto::mesg::MsgHeader;
use pvm_proto::xdr::{XdrReader, XdrWriter};
use pvm_proto::Tid;

fn frame(tag: i32, wid: i32, src: i32, body: &[u8]) -> Vec<u8> {
    let mut v = StreamFragHeader {
        dst: Tid::LOCAL_PVMD,
        src: Tid(src),
        len: (32 + body.len()) as u32,
        flags: FragFlags::SOM | FragFlags::EOM,
    }
    .to_bytes()
    .to_vec();
    v.extend_from_slice(
        &MsgHeader {
            enc: ENC_XDR,
            tag,
            ctx: SYSCTX_TM,
            wid,
            crc: 0,
        }
        .to_bytes(),
    );
    v.extend_from_slice(body);
    v
}

/// Reads one whole single-fragment message: (frag header, msg header, body). None at EOF.
fn read_msg(s: &mut UnixStream) -> Option<(StreamFragHeader, MsgHeader, Vec<u8>)> {
    let mut h = [0u8; 16];
    if s.read_exact(&mut h).is_err() {
        return None;
    }
    let fh = StreamFragHeader::parse(&h, 1 << 20).expect("fragment header");
    let mut p = vec![0u8; fh.len as usize];
    s.read_exact(&mut p).expect("fragment payload");
    assert_eq!(
        fh.flags,
        FragFlags::SOM | FragFlags::EOM,
        "single-fragment replies expected"
    );
    let mh = MsgHeader::parse(&p).expect("message header");
    Some((fh, mh, p[32..].to_vec()))
}

fn connect(sock: &str) -> UnixStream {
    let s = UnixStream::connect(sock).expect("connect to pvmd");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// The connect handshake done by hand; returns the transcript with run-specific values masked,
/// and the process whose pid the task claimed (killed when dropped).
fn handshake(tmp: &TmpDir, sock: &str) -> (UnixStream, Vec<String>, Proc) {
    let mut t = Vec::new();
    let tauth = tmp.path().join("pvmtmp999999.0");
    std::fs::File::create(&tauth).unwrap();
    let mut s = connect(sock);
    let mut w = XdrWriter::new();
    w.int(1318).string(tauth.to_str().unwrap());
    s.write_all(&frame(Tm::Connect.code(), 1, -1, &w.into_inner())).unwrap();
    let (fh, mh, body) = read_msg(&mut s).expect("TM_CONNECT reply");
    let mut r = XdrReader::new(&body);
    let (v, ack) = (r.int("v").unwrap(), r.int("ack").unwrap());
    let dauth = r.string("dauth").unwrap();
    t.push(format!(
        "connect-reply dst {} src {} tag {:x} ctx {:x} wid {} v {v} ack {ack}",
        fh.dst, fh.src, mh.tag as u32, mh.ctx, mh.wid
    ));
    t.push(format!("t-auth written {:?}", std::fs::read(&tauth).unwrap()));
    let prefix = format!("{}/pvmtmp", tmp.path().display());
    t.push(format!("d-auth in PVM_TMP {}", dauth.starts_with(&prefix)));
    std::fs::write(&dauth, b"/").unwrap();
    // The pid we claim is a sleeping child of ours: a stopping daemon SIGTERMs its tasks' pids
    // (the legacy one without checking), and that must not hit the test itself. (Pid 0 is no
    // way out: the legacy daemon never answers TM_CONN2 for pid 0.)
    let stand_in = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .expect("spawn sleep");
    let mut w = XdrWriter::new();
    w.int(stand_in.id() as i32).int(0);
    let stand_in = Proc {
        child: stand_in,
        name: "stand-in".into(),
    };
    s.write_all(&frame(Tm::Conn2.code(), 2, -1, &w.into_inner())).unwrap();
    let (fh, mh, body) = read_msg(&mut s).expect("TM_CONN2 reply");
    let mut r = XdrReader::new(&body);
    let f: Vec<i32> = (0..11).map(|_| r.int("f").unwrap()).collect();
    let ip = r.string("ip").unwrap();
    let sched = r.int("sched").unwrap();
    // pvmd-rs appends its migration trailer ("pvmx", version, features: docs/extensions.md).
    if !r.is_empty() {
        assert_eq!(r.int("trailer magic").unwrap(), 0x7076_6d78);
        r.int("trailer version").unwrap();
        r.int("trailer features").unwrap();
    }
    assert!(r.is_empty());
    t.push(format!(
        "conn2-reply dst {} src {} wid {} fields {:x?} ip-form {} sched {sched}",
        fh.dst,
        fh.src,
        mh.wid,
        f,
        ip.len() == 13 && ip.as_bytes()[8] == b':' && ip.starts_with("7f")
    ));
    t.push(format!("d-auth removed {}", !std::path::Path::new(&dauth).exists()));
    (s, t, stand_in)
}

fn transcript(kind: Kind) -> Vec<String> {
    let tmp = TmpDir::new(&format!("stream-{kind:?}"));
    let d = Pvmd::start(kind, &tmp, &[]);
    let (mut s, mut t, _stand_in) = handshake(&tmp, &d.sock);
    // An unknown TM code gets no reply; the next reply is for TM_CONFIG. (Outside the range
    // pvmd-rs uses for its extensions, 0x80010100..0x800101ff.)
    s.write_all(&frame(0x8001_0300u32 as i32, 3, 0x40001, &[])).unwrap();
    s.write_all(&frame(Tm::Config.code(), 4, 0x40001, &[])).unwrap();
    let (_, mh, body) = read_msg(&mut s).expect("TM_CONFIG reply");
    t.push(format!(
        "after bogus code: reply wid {} tag {:x} {} bytes",
        mh.wid,
        mh.tag as u32,
        body.len()
    ));
    // The tracer lookup every legacy task makes right after connecting.
    let mut w = XdrWriter::new();
    w.int(3).int(0x40001).string("###_PVM_TRACER_###").int(0).int(0);
    s.write_all(&frame(Tm::Db.code(), 5, 0x40001, &w.into_inner())).unwrap();
    let (_, mh, body) = read_msg(&mut s).expect("TM_DB reply");
    t.push(format!("tracer lookup wid {} body {:02x?}", mh.wid, body));
    s.write_all(&frame(Tm::Exit.code(), 6, 0x40001, &[])).unwrap();
    let (fh, mh, body) = read_msg(&mut s).expect("TM_EXIT reply");
    t.push(format!("exit-reply dst {} wid {} body {}", fh.dst, mh.wid, body.len()));
    t.push(format!("then eof {}", read_msg(&mut s).is_none()));
    drop(d);
    t
}

#[test]
fn handshake_and_requests_in_literal_bytes() {
    let t = transcript(Kind::Ours);
    let want = [
        "connect-reply dst t0 src t80000000 tag 80010001 ctx 7fffe wid 1 v 1318 ack 1",
        "t-auth written [47]",
        "d-auth in PVM_TMP true",
        "conn2-reply dst t40001 src t80000000 wid 2 fields [1, 40001, 0, 0, 0, 0, 0, 0, 0, ff0, 408c41] ip-form true sched 0",
        "d-auth removed true",
        "after bogus code: reply wid 4 tag 80010006 40 bytes",
        "tracer lookup wid 5 body [ff, ff, ff, e0]",
        "exit-reply dst t40001 wid 6 body 0",
        "then eof true",
    ];
    assert_eq!(t, want);
}

#[test]
fn differential_literal_bytes() {
    assert_eq!(transcript(Kind::Ours), transcript(Kind::Legacy));
}

fn still_serves(tmp: &TmpDir) {
    let (code, out, err) = run(&c_program("basic"), tmp, &[], None);
    assert_eq!(
        code,
        Some(0),
        "daemon stopped serving:\n{out}{err}\nlog:\n{}",
        tmp.log()
    );
}

#[test]
fn garbage_and_protocol_violations_close_only_that_connection() {
    let tmp = TmpDir::new("garbage");
    let d = Pvmd::start(Kind::Ours, &tmp, &["-d0x2"]);
    // 1. A huge claimed fragment length before authentication.
    let mut s = connect(&d.sock);
    let mut junk = vec![
        0x80, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff, 3, 0, 0, 0,
    ];
    junk.extend_from_slice(b"not a message at all");
    s.write_all(&junk).unwrap();
    assert!(read_msg(&mut s).is_none(), "connection closed without a reply");
    // 2. A request other than TM_CONNECT first.
    let mut s = connect(&d.sock);
    s.write_all(&frame(Tm::Config.code(), 1, -1, &[])).unwrap();
    assert!(read_msg(&mut s).is_none());
    // 3. End of stream in the middle of a fragment.
    let mut s = connect(&d.sock);
    s.write_all(&frame(Tm::Connect.code(), 1, -1, &[0, 0, 5])[..30])
        .unwrap();
    drop(s);
    // 4. A TM_CONNECT whose body is garbage.
    let mut s = connect(&d.sock);
    s.write_all(&frame(Tm::Connect.code(), 1, -1, &[0xff; 7])).unwrap();
    let (_, _, body) = read_msg(&mut s).expect("nack");
    assert_eq!(&body[4..8], &[0, 0, 0, 0], "nack");
    assert!(read_msg(&mut s).is_none());
    // 5. Wrong protocol version.
    let mut s = connect(&d.sock);
    let mut w = XdrWriter::new();
    w.int(1317).string("/nonexistent");
    s.write_all(&frame(Tm::Connect.code(), 1, -1, &w.into_inner())).unwrap();
    let (_, _, body) = read_msg(&mut s).expect("nack");
    assert_eq!(body[..8], [0, 0, 5, 0x26, 0, 0, 0, 0]);
    // 6. A task naming a file with content as its t-auth file: refused, file untouched.
    let victim = tmp.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let mut s = connect(&d.sock);
    let mut w = XdrWriter::new();
    w.int(1318).string(victim.to_str().unwrap());
    s.write_all(&frame(Tm::Connect.code(), 1, -1, &w.into_inner())).unwrap();
    let (_, _, body) = read_msg(&mut s).expect("nack");
    assert_eq!(&body[4..8], &[0, 0, 0, 0]);
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    still_serves(&tmp);
    let log = tmp.log();
    assert!(log.contains("fragment length"), "{log}");
    assert!(log.contains("non-connect message from anon task"), "{log}");
    assert!(log.contains("end of stream inside a fragment"), "{log}");
    assert!(log.contains("tm_connect() bad msg format"), "{log}");
    assert!(log.contains("t-d protocol mismatch (1317/1318)"), "{log}");
    assert!(log.contains("can't write t-auth file"), "{log}");
}

#[test]
fn fragments_to_unknown_tasks_are_dropped_with_a_log_line() {
    let tmp = TmpDir::new("unknown-dst");
    let d = Pvmd::start(Kind::Ours, &tmp, &[]);
    let (mut s, _, _stand_in) = handshake(&tmp, &d.sock);
    let mut f = frame(7, 0, 0x40001, &[1, 2, 3, 4]);
    f[..4].copy_from_slice(&0x40077u32.to_be_bytes());
    s.write_all(&f).unwrap();
    f[..4].copy_from_slice(&0x80001u32.to_be_bytes());
    s.write_all(&f).unwrap();
    // Still connected: TM_CONFIG is answered.
    s.write_all(&frame(Tm::Config.code(), 9, 0x40001, &[])).unwrap();
    let (_, mh, _) = read_msg(&mut s).expect("config reply");
    assert_eq!(mh.wid, 9);
    let log = tmp.log();
    assert!(log.contains("dst t40077 scrapped (no such task)"), "{log}");
    assert!(log.contains("dst t80001 scrapped (no such host)"), "{log}");
}

#[test]
fn a_task_that_never_reads_is_disconnected_not_buffered_forever() {
    let tmp = TmpDir::new("slow-reader");
    let d = Pvmd::start(Kind::Ours, &tmp, &[]);
    let (_sleepy, _, _stand_in1) = handshake(&tmp, &d.sock);
    std::fs::remove_file(tmp.path().join("pvmtmp999999.0")).ok();
    let (mut sender, _, _stand_in2) = handshake(&tmp, &d.sock);
    // 80 MiB of one message to t40001 in 4064-byte fragments; t40001 never reads.
    let chunk = vec![0u8; 4064];
    let mut f = Vec::with_capacity(16 + chunk.len());
    for i in 0..(80 << 20) / chunk.len() {
        f.clear();
        let flags = if i == 0 { FragFlags::SOM } else { FragFlags::empty() };
        f.extend_from_slice(
            &StreamFragHeader {
                dst: Tid(0x40001),
                src: Tid(0x40002),
                len: chunk.len() as u32,
                flags,
            }
            .to_bytes(),
        );
        f.extend_from_slice(&chunk);
        if sender.write_all(&f).is_err() {
            break;
        }
        if i % 1024 == 0 && tmp.log().contains("is not reading") {
            break;
        }
    }
    let t = std::time::Instant::now();
    while !tmp.log().contains("is not reading") {
        assert!(t.elapsed() < TIMEOUT, "slow reader never disconnected:\n{}", tmp.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    still_serves(&tmp);
}
