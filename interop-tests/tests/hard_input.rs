//! The bad-input table on the task socket, against our daemon and the legacy one.
//!
//! Each probe connects to a fresh daemon, sends its input, watches the connection for a bounded
//! time, then checks the daemon's health: process alive, a new task can do the connect
//! handshake and gets TM_CONFIG answered, RSS and open descriptors bounded. Our daemon must pass
//! every check and drop the offender with a log line; the legacy daemon's reaction is only
//! recorded (printed as a table row, see docs/robustness.md), because some of its reactions are
//! crashes and hangs.

use std::time::Duration;

use interop_tests::rawtask::*;
use interop_tests::*;
use pvm_proto::codes::{Tm, SYSCTX_TM};
use pvm_proto::frag::FragFlags;
use pvm_proto::xdr::XdrWriter;
use pvm_proto::Tid;

/// A probe's input: what it sends on a fresh connection.
type Input = dyn Fn(&mut RawTask, &TmpDir);

const WAIT: Duration = Duration::from_millis(1500);

#[derive(Debug)]
struct Outcome {
    reaction: Reaction,
    alive: bool,
    healthy: bool,
    rss_growth_kb: i64,
    log_tail: String,
}

impl Outcome {
    fn row(&self, probe: &str, kind: Kind) -> String {
        let r = match &self.reaction {
            Reaction::Closed { after, bytes } => format!("closed after {} ms ({bytes} B first)", after.as_millis()),
            Reaction::Open { bytes } => format!("kept open ({bytes} B sent)"),
            Reaction::Error(e) => format!("error {e}"),
        };
        format!(
            "| {probe} | {kind:?} | {r} | alive {} | new task served {} | RSS +{} kB |",
            self.alive, self.healthy, self.rss_growth_kb
        )
    }
}

/// Fresh daemon, one probe, health check.
fn probe(kind: Kind, name: &str, input: impl FnOnce(&mut RawTask, &TmpDir)) -> Outcome {
    let tmp = TmpDir::new(&format!("hard-{name}-{kind:?}"));
    let d = Pvmd::start(kind, &tmp, &[]);
    let pid = d.proc.pid();
    // Warm up (first connect allocates) so the RSS comparison measures the probe.
    {
        let mut w = RawTask::connect(&d.sock).expect("connect");
        if let Err(e) = w.handshake(tmp.path(), 1318) {
            panic!("{kind:?} {name}: warm-up handshake: {e}; log:\n{}", tmp.log());
        }
        assert!(w.served());
    }
    let rss0 = rss_kb(pid).unwrap_or(0) as i64;
    let mut t = RawTask::connect(&d.sock).expect("connect to the task socket");
    input(&mut t, &tmp);
    let reaction = t.react(WAIT);
    drop(t);
    std::thread::sleep(Duration::from_millis(200));
    let alive = alive(pid);
    let healthy = alive
        && RawTask::connect(&d.sock)
            .ok()
            .and_then(|mut h| h.handshake(tmp.path(), 1318).ok().map(|_| h.served()))
            .unwrap_or(false);
    let rss1 = rss_kb(pid).unwrap_or(0) as i64;
    let log = tmp.log();
    let log_tail = log.lines().rev().take(8).collect::<Vec<_>>().join("\n");
    let o = Outcome {
        reaction,
        alive,
        healthy,
        rss_growth_kb: rss1 - rss0,
        log_tail,
    };
    eprintln!("{}", o.row(name, kind));
    drop(d);
    o
}

fn must_be_dropped(o: &Outcome, what: &str) {
    assert!(o.alive && o.healthy, "{what}: daemon not healthy afterwards: {o:?}");
    assert!(
        matches!(o.reaction, Reaction::Closed { .. } | Reaction::Error(_)),
        "{what}: offender not disconnected: {o:?}"
    );
    assert!(o.rss_growth_kb < 8 * 1024, "{what}: RSS grew {} kB", o.rss_growth_kb);
}

fn garbage(seed: u64) -> impl FnOnce(&mut RawTask, &TmpDir) {
    move |t, _| {
        let _ = t.send(&seeded_bytes(seed, 4096));
    }
}

#[test]
fn hard_garbage_4k_is_dropped_by_ours_legacy_crashes() {
    for seed in 1..=5 {
        let o = probe(Kind::Ours, "unix-garbage", garbage(seed));
        must_be_dropped(&o, &format!("garbage seed {seed}"));
        assert!(
            o.log_tail.contains("closing"),
            "no log line naming the connection:\n{}",
            o.log_tail
        );
    }
    // The legacy daemon, for the record (ROBUSTNESS.md: double free, daemon gone).
    let l = probe(Kind::Legacy, "unix-garbage", |t, _| {
        let _ = t.send(&seeded_bytes(1, 4096));
    });
    eprintln!("legacy after 4 KB of garbage: alive {} healthy {}", l.alive, l.healthy);
}

#[test]
fn hard_framing_table() {
    let trunc = |t: &mut RawTask, _: &TmpDir| {
        let _ = t.send(&frag(
            Tid::LOCAL_PVMD,
            Tid::NONE,
            &[b'x'; 20],
            FragFlags::SOM | FragFlags::EOM,
            Some(1000),
        ));
        let _ = t.s.shutdown(std::net::Shutdown::Write);
    };
    let huge = |t: &mut RawTask, _: &TmpDir| {
        let mut b = frag(
            Tid::LOCAL_PVMD,
            Tid::NONE,
            &[],
            FragFlags::SOM | FragFlags::EOM,
            Some(0x7fff_ffff),
        );
        b.extend_from_slice(&[b'y'; 64]);
        let _ = t.send(&b);
    };
    let zeros = |t: &mut RawTask, _: &TmpDir| {
        let _ = t.send(&[0u8; 4096]);
    };
    let short_som = |t: &mut RawTask, _: &TmpDir| {
        // A start-of-message fragment too short for a message header, then garbage lengths.
        let _ = t.send(&frag(
            Tid::LOCAL_PVMD,
            Tid::NONE,
            &[1, 2, 3],
            FragFlags::SOM | FragFlags::EOM,
            None,
        ));
        let _ = t.send(&frag(Tid::LOCAL_PVMD, Tid::NONE, &[], FragFlags::SOM, Some(u32::MAX)));
    };
    for (name, f) in [
        ("unix-trunc", &trunc as &dyn Fn(&mut RawTask, &TmpDir)),
        ("unix-hugelen", &huge),
        ("unix-zeros", &zeros),
        ("unix-short-som", &short_som),
    ] {
        let o = probe(Kind::Ours, name, f);
        must_be_dropped(&o, name);
        let l = probe(Kind::Legacy, name, f);
        assert!(
            l.alive,
            "legacy died on {name} (only the 4 KB garbage probe is known to kill it)"
        );
    }
}

#[test]
fn hard_truncated_frame_held_open_does_not_block_others() {
    for kind in [Kind::Ours, Kind::Legacy] {
        let tmp = TmpDir::new(&format!("hard-hold-{kind:?}"));
        let d = Pvmd::start(kind, &tmp, &[]);
        let mut held = RawTask::connect(&d.sock).unwrap();
        held.send(&frag(
            Tid::LOCAL_PVMD,
            Tid::NONE,
            &[b'x'; 20],
            FragFlags::SOM | FragFlags::EOM,
            Some(1000),
        ))
        .unwrap();
        // A C program runs to completion while the half frame is held.
        let (code, out, err) = run(&c_program("basic"), &tmp, &[], None);
        eprintln!("| unix-trunc-hold | {kind:?} | basic.c while held: exit {code:?} |");
        assert_eq!(
            code,
            Some(0),
            "{kind:?}: basic failed while a connection held a half frame\n{out}{err}"
        );
        drop(held);
        drop(d);
    }
}

fn anon_request(tag: i32, ctx: i32) -> impl Fn(&mut RawTask, &TmpDir) {
    move |t, _| {
        let mut p = msg_header(tag, ctx, 0);
        p.extend_from_slice(&[0; 8]);
        let _ = t.send(&frag(
            Tid::LOCAL_PVMD,
            Tid::NONE,
            &p,
            FragFlags::SOM | FragFlags::EOM,
            None,
        ));
    }
}

#[test]
fn hard_codes_and_versions_table() {
    let wrong_version = |t: &mut RawTask, tmp: &TmpDir| {
        let r = t.handshake(tmp.path(), 1317);
        assert!(r.is_err(), "a task with protocol 1317 was accepted: {r:?}");
    };
    let cases: Vec<(&str, Box<Input>)> = vec![
        (
            "unix-unknown-tm",
            Box::new(anon_request(0x8001_ffffu32 as i32, SYSCTX_TM)),
        ),
        ("unix-user-tag", Box::new(anon_request(1, 0))),
        (
            "unix-unknown-dm-on-socket",
            Box::new(anon_request(0x8002_0001u32 as i32, SYSCTX_TM)),
        ),
        (
            "unix-request-before-connect",
            Box::new(anon_request(Tm::Config.code(), SYSCTX_TM)),
        ),
        ("tm-connect-wrong-version", Box::new(wrong_version)),
    ];
    for (name, f) in &cases {
        let o = probe(Kind::Ours, name, f);
        must_be_dropped(&o, name);
        let l = probe(Kind::Legacy, name, f);
        assert!(l.alive, "legacy died on {name}");
    }
}

/// A connected task that puts a false source tid on its frames and writes to tids that do not
/// exist: the receiver sees the true source, the offender's junk is scrapped with a log line,
/// and it stays served.
#[test]
fn hard_spoofed_source_and_bogus_destinations() {
    for kind in [Kind::Ours, Kind::Legacy] {
        let tmp = TmpDir::new(&format!("hard-spoof-{kind:?}"));
        let d = Pvmd::start(kind, &tmp, &[]);
        let mut a = RawTask::connect(&d.sock).unwrap();
        let ta = a.handshake(tmp.path(), 1318).unwrap();
        let mut b = RawTask::connect(&d.sock).unwrap();
        let tb = b.handshake(tmp.path(), 1318).unwrap();
        let fake = Tid(ta.0 + 0x100);
        a.send(&user_message(tb, fake, 7, b"spoof")).unwrap();
        let (fh, mh, body) = b.recv(Duration::from_secs(5)).expect("b gets the message");
        assert_eq!((mh.tag, body.as_slice()), (7, &b"spoof"[..]));
        eprintln!(
            "| spoofed src tid | {kind:?} | receiver sees src {:x} (sender {:x}) |",
            fh.src.bits(),
            ta.bits()
        );
        if kind == Kind::Ours {
            assert_eq!(
                fh.src, ta,
                "the source is the connection's tid, not what the frame claims"
            );
        }
        for dst in [
            Tid(0x7fff_ffff),
            Tid::task(1, 0x3ffff),
            Tid::task(0xfff, 1),
            Tid(0x4000_0001),
        ] {
            a.send(&user_message(dst, ta, 8, b"nowhere")).unwrap();
        }
        assert!(a.served(), "{kind:?}: sender not served after bogus destinations");
        assert!(b.served(), "{kind:?}: bystander not served");
        drop(d);
    }
}

/// A task that never reads its socket while another floods it: ours disconnects it past its
/// queue cap (64 MiB) with a log line; the sender and other tasks stay served.
#[test]
fn hard_task_that_never_reads() {
    let tmp = TmpDir::new("hard-noread");
    let d = Pvmd::start(Kind::Ours, &tmp, &[]);
    let pid = d.proc.pid();
    let mut sink = RawTask::connect(&d.sock).unwrap();
    let ts = sink.handshake(tmp.path(), 1318).unwrap();
    let mut src = RawTask::connect(&d.sock).unwrap();
    src.handshake(tmp.path(), 1318).unwrap();
    // 4 MB fragments (the connected cap), 24 of them = 96 MiB > 64 MiB.
    let chunk = vec![0x5au8; (4 << 20) - 32];
    let mut sent = 0usize;
    for _ in 0..24 {
        let mut p = msg_header(9, 0, 0);
        p.extend_from_slice(&chunk);
        if src
            .send(&frag(ts, Tid::NONE, &p, FragFlags::SOM | FragFlags::EOM, None))
            .is_err()
        {
            break;
        }
        sent += 1;
    }
    assert!(
        src.served(),
        "sender not served after {sent} x 4 MB; log:\n{}",
        tmp.log()
    );
    let t = std::time::Instant::now();
    while !tmp.log().contains("is not reading") && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        tmp.log().contains("is not reading"),
        "no log line about the sink; log:\n{}",
        tmp.log()
    );
    let mut fresh = RawTask::connect(&d.sock).unwrap();
    fresh.handshake(tmp.path(), 1318).unwrap();
    assert!(fresh.served());
    let rss = rss_kb(pid).unwrap_or(0);
    eprintln!("| task never reads (96 MiB sent to it) | Ours | disconnected, RSS now {rss} kB |");
    // Once the sink is cut off its queue is freed (the allocator may keep some of it).
    assert!(rss < 200 * 1024, "daemon RSS {rss} kB after dropping the sink");
    drop(sink);
}

/// Many connections opened and abandoned (some half way through the handshake): descriptors
/// and d-auth files come back.
#[test]
fn hard_abandoned_connections_are_reclaimed() {
    let tmp = TmpDir::new("hard-abandon");
    let d = Pvmd::start(Kind::Ours, &tmp, &[]);
    let pid = d.proc.pid();
    let fds0 = fd_count(pid).unwrap();
    let files0 = std::fs::read_dir(tmp.path()).unwrap().count();
    let mut conns = Vec::new();
    for i in 0..200 {
        let mut c = RawTask::connect(&d.sock).unwrap();
        if i % 2 == 0 {
            // TM_CONNECT only: the daemon creates a d-auth file and waits for TM_CONN2.
            let mut w = XdrWriter::new();
            let tauth = tmp.path().join(format!("ab{i}"));
            std::fs::write(&tauth, b"").unwrap();
            w.int(1318).string(&tauth.display().to_string());
            c.send(&request(Tm::Connect.code(), 0, &w.into_inner())).unwrap();
            std::fs::remove_file(&tauth).ok();
        }
        conns.push(c);
    }
    std::thread::sleep(Duration::from_millis(300));
    drop(conns);
    let t = std::time::Instant::now();
    while fd_count(pid).unwrap() > fds0 && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(200));
    let fds1 = fd_count(pid).unwrap();
    let files1 = std::fs::read_dir(tmp.path())
        .unwrap()
        .filter(|e| !e.as_ref().unwrap().file_name().to_string_lossy().starts_with("ab"))
        .count();
    eprintln!("| 200 abandoned connections | Ours | fds {fds0} -> {fds1}, files {files0} -> {files1} |");
    assert!(fds1 <= fds0, "descriptors leaked: {fds0} -> {fds1}");
    assert!(files1 <= files0, "d-auth files left behind: {files0} -> {files1}");
    let mut h = RawTask::connect(&d.sock).unwrap();
    h.handshake(tmp.path(), 1318).unwrap();
    assert!(h.served());
}

/// Clients that connect and never finish the handshake (silent, or half a frame) are dropped
/// after the handshake timeout (PVMD_HANDSHAKE_TIMEOUT, 2 s here); connected tasks that stay
/// idle longer are not.
#[test]
fn hard_silent_clients_are_dropped_after_the_handshake_timeout() {
    let tmp = TmpDir::new("hard-silent");
    let mut c = pvm_command(&our_pvmd(), tmp.path());
    c.env("PVMD_HANDSHAKE_TIMEOUT", "2").stderr(std::process::Stdio::null());
    let mut p = Proc {
        child: c.spawn().unwrap(),
        name: "our pvmd".into(),
    };
    let sock = p.read_line(TIMEOUT).trim_end().to_string();
    let mut idle = RawTask::connect(&sock).unwrap();
    idle.handshake(tmp.path(), 1318).unwrap();
    let mut silent = RawTask::connect(&sock).unwrap();
    let mut half = RawTask::connect(&sock).unwrap();
    half.send(&frag(
        Tid::LOCAL_PVMD,
        Tid::NONE,
        &[b'x'; 20],
        FragFlags::SOM | FragFlags::EOM,
        Some(1000),
    ))
    .unwrap();
    let t = std::time::Instant::now();
    for (name, c) in [("silent", &mut silent), ("half frame", &mut half)] {
        let r = c.react(Duration::from_secs(6));
        assert!(
            matches!(r, Reaction::Closed { .. } | Reaction::Error(_)),
            "{name} client not dropped: {r:?}"
        );
    }
    let took = t.elapsed();
    eprintln!(
        "| silent / half-frame client | Ours | dropped after {} ms (timeout 2 s) |",
        took.as_millis()
    );
    assert!(took >= Duration::from_millis(1500), "dropped too early: {took:?}");
    assert!(
        tmp.log().contains("no connect handshake in time"),
        "log:\n{}",
        tmp.log()
    );
    assert!(idle.served(), "an idle connected task was dropped");
}

/// A fresh daemon of `kind` with two enrolled raw tasks: (its directory, the daemon, a, a's tid,
/// b, b's tid).
fn two_raw_tasks(kind: Kind, name: &str) -> (TmpDir, Pvmd, RawTask, Tid, RawTask, Tid) {
    let tmp = TmpDir::new(name);
    let d = Pvmd::start(kind, &tmp, &[]);
    let mut a = RawTask::connect(&d.sock).unwrap();
    let ta = a.handshake(tmp.path(), 1318).unwrap();
    let mut b = RawTask::connect(&d.sock).unwrap();
    let tb = b.handshake(tmp.path(), 1318).unwrap();
    (tmp, d, a, ta, b, tb)
}

/// The daemon route's arena relay frames (pvmd-rs `server/arelay.rs`) from a task that does not
/// follow the protocol: a descriptor that does not parse, one naming another process, one
/// naming the task itself (the test process, which has no arena), one of 1 GiB, a task speaking for the
/// daemon (`TC_VMDESC_PVMD`), and an answer to a descriptor never sent. Each gets a log line;
/// the two readable-looking descriptors are answered "inline" from the pvmd's tid; nothing
/// reaches the destination, which stays served (no claim left on it), and so does the sender.
#[test]
fn hard_arena_relay_frames_from_a_raw_task() {
    use pvm_proto::codes::SYSCTX_TC;
    use pvm_proto::mesg::MsgHeader;
    use pvm_proto::vmdesc::*;
    let (tmp, d, mut a, ta, mut b, tb) = two_raw_tasks(Kind::Ours, "hard-arelay");
    let to = |dst: Tid, tag: i32, body: &[u8]| frame(dst, ta, tag, body);
    let desc = |xid: u64, pid: i32| {
        Desc {
            xid,
            pid,
            header: MsgHeader {
                enc: 0,
                tag: 5,
                ctx: 0,
                wid: 0,
                crc: 0,
            },
            total: 300_000,
            pieces: vec![(0x10_0000, 300_000)],
        }
        .emit()
    };
    a.send(&to(tb, TC_VMDESC, b"not a descriptor")).unwrap();
    for (xid, pid) in [(7, 1), (8, std::process::id() as i32)] {
        a.send(&to(tb, TC_VMDESC, &desc(xid, pid))).unwrap();
        let (fh, mh, body) = a.recv(Duration::from_secs(5)).expect("the descriptor is answered");
        assert_eq!((mh.ctx, mh.tag), (SYSCTX_TC, TC_VMACK), "xid {xid}");
        assert!(
            fh.src.is_pvmd(),
            "answered from the pvmd's tid, not {:x}",
            fh.src.bits()
        );
        assert_eq!(
            Ack::parse(&body),
            Ok(Ack {
                xid,
                status: ACK_INLINE
            })
        );
    }
    // Over the daemon's ceiling (64 MiB), whatever the pieces: inline, before any copy.
    let huge = Desc {
        xid: 10,
        pid: std::process::id() as i32,
        header: MsgHeader {
            enc: 0,
            tag: 5,
            ctx: 0,
            wid: 0,
            crc: 0,
        },
        total: 1 << 30,
        pieces: vec![(0x10_0000, 1 << 30)],
    };
    a.send(&to(tb, TC_VMDESC, &huge.emit())).unwrap();
    let (_, mh, body) = a.recv(Duration::from_secs(5)).expect("the huge descriptor is answered");
    assert_eq!(mh.tag, TC_VMACK);
    assert_eq!(Ack::parse(&body).map(|a| (a.xid, a.status)), Ok((10, ACK_INLINE)));
    a.send(&to(tb, TC_VMDESC_PVMD, &desc(9, 1))).unwrap();
    let ack = Ack { xid: 12345, status: 0 }.emit();
    a.send(&to(Tid::LOCAL_PVMD, TC_VMACK_PVMD, &ack)).unwrap();
    a.send(&user_message(tb, ta, 9, b"after")).unwrap();
    let (_, mh, body) = b.recv(Duration::from_secs(5)).expect("b is served");
    assert_eq!((mh.tag, body.as_slice()), (9, &b"after"[..]), "the first thing b gets");
    assert!(a.served() && b.served());
    let log = tmp.log();
    for line in [
        "bad descriptor",
        "not readable from its arena; asked for it inline",
        "a task sent a daemon's descriptor",
        "answer to unknown descriptor 12345",
        "descriptor of 1073741824 bytes, over 67108864; asked for it inline",
    ] {
        assert!(log.contains(line), "no log line '{line}':\n{log}");
    }
    assert_eq!(log.matches("not readable from its arena").count(), 2, "{log}");
    drop(d);
}

/// The same frames sent through a legacy pvmd, which knows none of them (a pvm-rs library never
/// sends them there: the legacy daemon announces no bit 8): it passes them on as ordinary
/// messages or drops them, and keeps serving both tasks; the destination still gets what
/// follows.
#[test]
fn hard_arena_relay_frames_through_a_legacy_pvmd() {
    use pvm_proto::vmdesc::*;
    let (_tmp, d, mut a, ta, mut b, tb) = two_raw_tasks(Kind::Legacy, "hard-arelay-legacy");
    let to = |dst: Tid, tag: i32, body: &[u8]| frame(dst, ta, tag, body);
    let ack = Ack { xid: 1, status: 0 }.emit();
    for (dst, tag, body) in [
        (tb, TC_VMDESC, &b"not a descriptor"[..]),
        (tb, TC_VMDESC_PVMD, &b"not a descriptor"[..]),
        (Tid::LOCAL_PVMD, TC_VMACK_PVMD, &ack[..]),
        (tb, TC_VMACK, &ack[..]),
    ] {
        a.send(&to(dst, tag, body)).unwrap();
    }
    a.send(&user_message(tb, ta, 9, b"after")).unwrap();
    let mut got = Vec::new();
    while let Some((_, mh, body)) = b.recv(Duration::from_secs(5)) {
        got.push(mh.tag);
        if mh.tag == 9 {
            assert_eq!(body, b"after");
            break;
        }
    }
    assert_eq!(
        got.last(),
        Some(&9),
        "b never got the message after the frames: {got:x?}"
    );
    assert!(a.served() && b.served(), "legacy pvmd stopped serving: {got:x?}");
    eprintln!("| arena relay frames | Legacy | passed on to the destination: {got:x?} |");
    drop(d);
}
