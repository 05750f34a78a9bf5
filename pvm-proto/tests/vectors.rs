//! Every captured frame parses at every layer and re-emits to the same bytes (masked bytes
//! aside), and decoded fields match what the spec and the capture notes say.

use pvm_proto::body::{self, Body, DbReply, OutputKind, TidsOrError};
use pvm_proto::codes::{DbOp, Dm, Tm, ENC_XDR, SYSCTX_TC, SYSCTX_TM, TDPROTOCOL};
use pvm_proto::frag::{DatagramHeader, FragFlags, StreamFragHeader};
use pvm_proto::hexvec;
use pvm_proto::mesg::{MsgHeader, UNINITIALISED};
use pvm_proto::message::{Message, Reassembler};
use pvm_proto::Tid;
use std::path::PathBuf;

struct Captured {
    file: String,
    label: String,
    msg: Message,
    /// The message header as captured (garbage bytes included).
    raw_header: Vec<u8>,
    body: Body,
}

fn vector_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

/// Walks every frame of every file; returns the decoded messages and the number of frames.
fn load() -> (Vec<Captured>, usize) {
    let mut files: Vec<_> = std::fs::read_dir(vector_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "hex"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 13, "vector files");
    let mut out = Vec::new();
    let mut nframes = 0;
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        let v = hexvec::parse(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!v.description.is_empty(), "{name}: description");
        assert!(!v.frames.is_empty(), "{name}: frames");
        let mut reasm = Reassembler::default();
        for f in &v.frames {
            nframes += 1;
            let b = &f.bytes;
            let what = format!("{name}:{} {}", f.line, f.label);
            let (msg, first_payload) = if name.starts_with("dd_") {
                let h = DatagramHeader::parse(b).unwrap_or_else(|e| panic!("{what}: {e}"));
                assert_eq!(&h.to_bytes()[..], &b[..16], "{what}: datagram header re-emit");
                if !h.flags.contains(FragFlags::DAT) {
                    assert_eq!(b.len(), 16, "{what}: control packets carry no data");
                    assert!(h.flags.intersects(FragFlags::ACK | FragFlags::FIN), "{what}");
                    continue;
                }
                let m = reasm
                    .push_parts(h.src, h.dst, h.flags, &b[16..])
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                (m, &b[16..])
            } else {
                let h = StreamFragHeader::parse(b, 1 << 20).unwrap_or_else(|e| panic!("{what}: {e}"));
                assert_eq!(h.len as usize, b.len() - 16, "{what}: stream length field");
                assert_eq!(&h.to_bytes()[..], &b[..16], "{what}: stream header re-emit");
                (reasm.push(b).unwrap_or_else(|e| panic!("{what}: {e}")), &b[16..])
            };
            let msg = msg.unwrap_or_else(|| panic!("{what}: every captured message is one fragment"));
            let raw_header = first_payload[..32].to_vec();
            let mut masked = raw_header.clone();
            for r in UNINITIALISED {
                masked[r].fill(0);
            }
            assert_eq!(msg.header.to_bytes().to_vec(), masked, "{what}: message header re-emit");
            assert_eq!(MsgHeader::parse(&raw_header).unwrap(), msg.header);
            let body =
                body::decode(&msg.header, msg.src, msg.dst, &msg.body).unwrap_or_else(|e| panic!("{what}: body: {e}"));
            let expect = body::mask_padding(&msg.header, msg.src, msg.dst, &msg.body);
            assert_eq!(body.emit(), expect, "{what}: body re-emit ({body})");
            // Stream frames also re-split to the same bytes.
            if !name.starts_with("dd_") {
                let again = Message {
                    body: expect.clone(),
                    ..msg.clone()
                }
                .to_stream_bytes(4080);
                let mut want = b.clone();
                for r in UNINITIALISED {
                    want[16 + r.start..16 + r.end].fill(0);
                }
                want[48..].copy_from_slice(&expect);
                assert_eq!(again, want, "{what}: fragment re-emit");
            }
            // Display never panics and names the code.
            let _ = body.to_string();
            out.push(Captured {
                file: name.clone(),
                label: f.label.clone(),
                msg,
                raw_header,
                body,
            });
        }
        assert_eq!(reasm.pending(), 0, "{name}: no partial message left");
    }
    (out, nframes)
}

fn find<'a>(all: &'a [Captured], file: &str, nth: usize) -> &'a Captured {
    all.iter()
        .filter(|c| c.file == file)
        .nth(nth)
        .unwrap_or_else(|| panic!("{file} #{nth}"))
}

#[test]
fn every_frame_parses_and_re_emits() {
    let (all, frames) = load();
    assert_eq!(frames, 80, "frames in all files");
    assert_eq!(all.len(), 57, "messages (the rest are ACK/FIN control packets)");
}

#[test]
fn frames_that_are_not_typed_bodies_are_user_messages() {
    let (all, _) = load();
    let mut user: Vec<String> = all
        .iter()
        .filter(|c| matches!(c.body, Body::User { .. }))
        .map(|c| format!("{}: {}", c.file, c.label))
        .collect();
    user.sort();
    // User messages carry application data with no schema on the wire: the XDR one (tag 7)
    // and the raw ones (enc = the sender's dsig) stay bytes.
    assert_eq!(
        user,
        vec![
            "dd_remote_spawn.hex: pkt 22 10.77.0.1:52715 -> 10.77.0.2:51463 user msg src t40002 dst t80001 tag 7 XDR",
            "dd_remote_spawn.hex: pkt 26 10.77.0.2:51463 -> 10.77.0.1:52715 user msg tag 8 RAW",
            "tc_direct_route_unix.hex: fd4 read reply tag 8 RAW on direct link",
            "tc_direct_route_unix.hex: fd4 write user msg tag 7 RAW on direct link",
            "td_user_msg_raw_reply.hex: pvmd->task user message tag 8",
            "td_user_msg_xdr.hex: task->pvmd user message tag 7",
        ]
    );
    assert!(all.iter().all(|c| !matches!(c.body, Body::Unknown { .. })));
}

#[test]
fn connect_handshake_fields() {
    let (all, _) = load();
    let f = "td_connect_handshake.hex";
    let c = find(&all, f, 0);
    assert_eq!((c.msg.src, c.msg.dst), (Tid::UNCONNECTED, Tid::LOCAL_PVMD));
    assert_eq!(
        (c.msg.header.tag, c.msg.header.ctx, c.msg.header.wid),
        (Tm::Connect.code(), SYSCTX_TM, 1)
    );
    let Body::TmConnect(r) = &c.body else {
        panic!("{}", c.body)
    };
    assert_eq!(r.version, TDPROTOCOL);
    assert_eq!(r.path, "/tmp/pvmtmp010862.0");
    let Body::TmConnectAck(a) = &find(&all, f, 1).body else {
        panic!()
    };
    assert_eq!((a.version, a.ack), (1318, 1));
    assert_eq!(a.path, "/tmp/pvmtmp010842.1");
    let Body::TmConn2(r) = &find(&all, f, 2).body else {
        panic!()
    };
    assert_eq!((r.pid, r.cookie, r.name.is_none()), (0x2a6e, 0, true));
    let c = find(&all, f, 3);
    let Body::TmConn2Ack(a) = &c.body else { panic!() };
    let cfg = a.config.as_ref().unwrap();
    assert_eq!(a.ack, 1);
    assert_eq!(cfg.tid, Tid(0x40001));
    assert_eq!(c.msg.dst, cfg.tid);
    assert_eq!(cfg.ptid, Tid(0));
    assert_eq!(cfg.udpmax, 4080);
    assert_eq!(cfg.dsig, 0x408c41);
    assert_eq!(cfg.addr, "7f000001:801e");
    assert_eq!(cfg.schedtid, Tid(0));
    assert!(
        c.body.to_string().starts_with("TM_CONN2 reply ack 1 tid t40001"),
        "{}",
        c.body
    );
}

#[test]
fn config_tasks_misc_fields() {
    let (all, _) = load();
    let f = "td_config_tasks_misc.hex";
    assert_eq!(find(&all, f, 0).body, Body::Empty);
    let Body::TmConfigAck(t) = &find(&all, f, 1).body else {
        panic!()
    };
    assert_eq!(t.narches, 1);
    assert_eq!(t.hosts.len(), 1);
    let h = &t.hosts[0];
    assert_eq!((h.tid, h.speed, h.dsig), (Tid(0x40000), 1000, 0x408c41));
    assert_eq!(
        (h.name.to_string_lossy(), h.arch.to_string_lossy()),
        ("vm".into(), "LINUX64".into())
    );
    let Body::TmTask(w) = &find(&all, f, 2).body else {
        panic!()
    };
    assert_eq!(w.tid, Tid(0));
    let c = find(&all, f, 3);
    let Body::TmTaskAck(l) = &c.body else { panic!() };
    assert_eq!(l.status, 0);
    assert_eq!(l.tasks.len(), 1);
    let t = &l.tasks[0];
    assert_eq!(
        (t.tid, t.ptid, t.host, t.flag, t.pid),
        (Tid(0x4000b), Tid(0), Tid(0x40000), 4, 0x3374)
    );
    assert_eq!(t.a_out, "");
    // The pad after the empty a_out string is garbage ("INU") in the capture, and masked.
    assert_ne!(
        body::mask_padding(&c.msg.header, c.msg.src, c.msg.dst, &c.msg.body),
        c.msg.body
    );
    let c = find(&all, f, 4);
    let Body::TmMstat(n) = &c.body else { panic!() };
    assert_eq!(n.name, "vm");
    assert_eq!(c.msg.body[7], 0x0b, "garbage pad byte in the capture");
    assert_eq!(
        body::mask_padding(&c.msg.header, c.msg.src, c.msg.dst, &c.msg.body)[7],
        0
    );
    assert!(matches!(&find(&all, f, 5).body, Body::TmMstatAck(s) if s.value == 0));
    assert!(matches!(&find(&all, f, 6).body, Body::TmPstat(t) if t.tid == Tid(0x4000b)));
    assert!(matches!(&find(&all, f, 7).body, Body::TmPstatAck(s) if s.value == 0));
    assert!(matches!(&find(&all, f, 8).body, Body::TmHostSync(t) if t.tid == Tid(0x40000)));
    let Body::TmHostSyncAck(s) = &find(&all, f, 9).body else {
        panic!()
    };
    assert_eq!(s.status, 0);
    assert_eq!((s.time.unwrap().sec, s.time.unwrap().usec), (0x6b07801f, 0x540b8));
    assert!(matches!(&find(&all, f, 10).body, Body::TmContext(c) if c.value == 0));
    assert!(matches!(&find(&all, f, 11).body, Body::TmContextAck(c) if c.value == 0x40002));
}

#[test]
fn mailbox_fields() {
    let (all, _) = load();
    let f = "td_mailbox.hex";
    let Body::TmDb(r) = &find(&all, f, 0).body else {
        panic!()
    };
    assert_eq!((r.op, r.tid, r.index, r.flags), (DbOp::Get.code(), Tid(0x4000b), 0, 0));
    assert_eq!(r.class, "###_PVM_TRACER_###");
    assert_eq!(find(&all, f, 1).body, Body::TmDbAck(DbReply::Status(-32)));
    let Body::TmDb(p) = &find(&all, f, 2).body else {
        panic!()
    };
    assert_eq!((p.op, p.index), (DbOp::Put.code(), -1));
    assert_eq!(p.class, "specbox");
    let m = p.msg.as_ref().unwrap();
    assert_eq!(
        (m.enc, m.src, m.dst, m.tag, m.ctx),
        (ENC_XDR, Tid(0x4000b), Tid(0), 0, 0)
    );
    assert_eq!(m.frags, vec![vec![0, 0, 0x30, 0x39]]);
    assert_eq!(find(&all, f, 3).body, Body::TmDbAck(DbReply::Status(0)));
    assert!(matches!(&find(&all, f, 4).body, Body::TmDb(g) if g.op == 3 && g.msg.is_none()));
    let Body::TmDbAck(DbReply::Entry { index, msg }) = &find(&all, f, 5).body else {
        panic!()
    };
    assert_eq!(*index, 0);
    // The pvmd's stored copy gains an empty first fragment (its header-only fragment): the
    // GET reply packs two fragments where the PUT packed one.
    assert_eq!(msg.frags, vec![vec![], vec![0, 0, 0x30, 0x39]]);
    assert_eq!(msg.body(), m.body());
    assert_eq!((msg.enc, msg.src), (m.enc, m.src));
    assert!(matches!(&find(&all, f, 6).body, Body::TmDb(g) if g.op == DbOp::Remove.code()));
    assert_eq!(find(&all, f, 7).body, Body::TmDbAck(DbReply::Status(0)));
}

#[test]
fn spawn_mca_notify_fields() {
    let (all, _) = load();
    let Body::TmSpawn(s) = &find(&all, "td_spawn.hex", 0).body else {
        panic!()
    };
    assert_eq!(s.file, "pvmspec_slave");
    assert_eq!((s.flags, s.count, s.argv.len()), (0, 1, 0));
    assert_eq!(s.where_, "");
    assert_eq!(s.env.len(), 4);
    assert!(s.env[0].to_string_lossy().starts_with("PVMTMASK=@@@"));
    assert_eq!(s.env[1], "PVMTRCBUF=0");
    assert_eq!(s.env[2], "PVMTRCOPT=0");
    assert_eq!(s.env[3], "PVMCTX=0x0");
    assert_eq!(
        find(&all, "td_spawn.hex", 1).body,
        Body::TmSpawnAck(TidsOrError::Tids(vec![Tid(0x40002)]))
    );
    let f = "td_mca_siblings_notify.hex";
    let c = find(&all, f, 0);
    assert_eq!(c.msg.header.ctx, 0, "TM_MCA goes with ctx 0, not SYSCTX_TM");
    assert!(matches!(&c.body, Body::TmMca(l) if l.tids == [Tid(0x40002)]));
    let c = find(&all, f, 1);
    assert_eq!(c.msg.dst, Tid::multicast_of(Tid(0x40001)));
    assert_eq!(body::direction(c.msg.src, c.msg.dst), body::Direction::TaskToTask);
    assert!(matches!(&c.body, Body::TcSiblings(l) if l.tids == [Tid(0x40002)]));
    let Body::TmNotify(n) = &find(&all, f, 2).body else {
        panic!()
    };
    assert_eq!(
        (n.what, n.ctx, n.tag, n.count, n.tids.clone()),
        (1, 0, 99, 1, vec![Tid(0x40002)])
    );
    let c = find(&all, f, 3);
    assert_eq!(body::direction(c.msg.src, c.msg.dst), body::Direction::FromDaemon);
    assert!(
        matches!(&c.body, Body::NotifyTid(t) if t.tid == Tid(0x40002)),
        "{}",
        c.body
    );
    let f = "tc_direct_route_unix.hex";
    let Body::TcConReq(r) = &find(&all, f, 0).body else {
        panic!()
    };
    assert_eq!(
        (r.version, r.path.to_string_lossy()),
        (1318, "/tmp/pvmtmp010867.1".into())
    );
    let Body::TmNotify(n) = &find(&all, f, 1).body else {
        panic!()
    };
    assert_eq!((n.ctx, n.tag), (SYSCTX_TC, pvm_proto::codes::Tc::TaskExit.code()));
    assert!(find(&all, f, 1).body.to_string().contains("TC_TASKEXIT"));
    let Body::TcConAck(a) = &find(&all, f, 2).body else {
        panic!()
    };
    assert_eq!((a.ack, a.path.to_string_lossy()), (0, "/tmp/pvmtmp010868.1".into()));
    assert_eq!(find(&all, "td_exit.hex", 0).body, Body::Empty);
    assert_eq!(find(&all, "td_exit.hex", 1).body, Body::Empty);
}

#[test]
fn daemon_to_daemon_fields() {
    let (all, _) = load();
    let f = "dd_add_host_sequence.hex";
    let c = find(&all, f, 0);
    assert_eq!(c.msg.header.tag, Dm::StartAck.code());
    assert_eq!(
        &c.raw_header[12..16],
        b"ed f",
        "uninitialised bytes in the pvmd' header"
    );
    let Body::DmStartAck(s) = &c.body else { panic!() };
    assert_eq!(s.results.len(), 1);
    assert_eq!(s.results[0].tid, Tid(0x80000), "a hostpart, not a pvmd tid");
    assert_eq!(
        s.results[0].result,
        "ddpro<2316> arch<LINUX64> ip<0a4d0002:c907> mtu<4080> dsig<4230209>"
    );
    assert!(matches!(&find(&all, f, 1).body, Body::DmSlConf(s) if s.entries.is_empty()));
    let c = find(&all, f, 2);
    assert_eq!(c.msg.header.wid, 0x40005);
    let Body::DmHtUpd(u) = &c.body else { panic!() };
    assert_eq!((u.serial, u.master, u.console, u.hosts.len()), (2, 1, 1, 2));
    assert_eq!(u.hosts[0].name, "10.77.0.1");
    assert_eq!(u.hosts[0].addr, "0a4d0001:cdeb");
    assert_eq!((u.hosts[1].index, u.hosts[1].mtu, u.hosts[1].speed), (2, 4080, 1000));
    assert_eq!(find(&all, f, 3).body, Body::Empty);
    assert_eq!(find(&all, f, 4).body, Body::Empty);

    let f = "dd_remote_spawn.hex";
    let Body::DmExec(e) = &find(&all, f, 0).body else {
        panic!()
    };
    assert_eq!((e.ptid, e.count, e.placement), (Tid(0x40002), 1, Some((0, 1))));
    assert_eq!(e.file, "pvmspec_slave");
    assert_eq!(e.env.len(), 4);
    assert_eq!(
        find(&all, f, 1).body,
        Body::DmExecAck(TidsOrError::Tids(vec![Tid(0x80001)]))
    );
    let Body::DmMca(m) = &find(&all, f, 2).body else {
        panic!()
    };
    assert_eq!((m.gtid, m.tids.clone()), (Tid(0x40040002), vec![Tid(0x80001)]));
    assert!(matches!(&find(&all, f, 3).body, Body::TcSiblings(l) if l.tids == [Tid(0x80001)]));
    assert!(matches!(&find(&all, f, 4).body, Body::DmNotify(n) if n.what == 1 && n.tid == Tid(0x80001)));
    let Body::DmTaskOut(o) = &find(&all, f, 6).body else {
        panic!()
    };
    assert_eq!(o.tid, Tid(0x80001));
    assert_eq!(
        o.kind,
        OutputKind::Data(b"slave 80001 got 1 2 -3 12345678 258 -2 287454020 4294967291\n".to_vec())
    );
    assert!(matches!(&find(&all, f, 8).body, Body::DmNotifyAck(t) if t.tid == Tid(0x80001)));

    let f = "dd_task_query_and_delete.hex";
    assert!(matches!(&find(&all, f, 0).body, Body::DmTask(t) if t.tid == Tid(0)));
    assert!(matches!(&find(&all, f, 1).body, Body::DmTaskAck(t) if t.tasks.is_empty()));

    let f = "dd_direct_route_tcp.hex";
    let Body::TcConReq(r) = &find(&all, f, 0).body else {
        panic!()
    };
    assert_eq!(r.path, "0a4d0001:dcaf");
    let Body::TcConAck(a) = &find(&all, f, 1).body else {
        panic!()
    };
    assert_eq!((a.ack, a.path.to_string_lossy()), (0, "0a4d0002:8d31".into()));
}

#[test]
fn display_is_one_line_and_names_things() {
    let (all, _) = load();
    for c in &all {
        let s = c.body.to_string();
        assert!(!s.contains('\n'), "{s}");
        assert!(s.len() < 600, "{s}");
    }
    let s = find(&all, "td_mailbox.hex", 2).body.to_string();
    assert!(s.starts_with("TM_DB TMDB_PUT t4000b \"specbox\" index -1"), "{s}");
    let s = find(&all, "td_mailbox.hex", 1).body.to_string();
    assert_eq!(s, "TM_DB reply -32 (PvmNotFound)");
}
