//! Every new opcode of the migration and checkpoint extensions (docs/extensions.md,
//! docs/migration.md §3) sent to a legacy pvmd, which must keep serving every task and host:
//! the TM_ codes (0x800101xx) from a raw task connection, the TC_ codes (0x800301xx) to the
//! daemon itself and through it to tasks on both hosts, and the DM_ codes (0x800201xx) from a
//! real pvmd-rs slave that sends all of them to its legacy master when it joins
//! (`PVMD_TEST_SEND_EXT_DM`, a test switch: normally a pvmd-rs daemon never sends them to a
//! peer that did not announce the features).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use interop_tests::netns::Cluster;
use interop_tests::rawtask::{frag, msg_header, request, RawTask};
use interop_tests::{c_program, our_pvmd, Proc, LEGACY_CONSOLE, LEGACY_PVMD, TIMEOUT};
use pvm_proto::codes::{SYSCTX_TC, SYSCTX_TM};
use pvm_proto::frag::FragFlags;
use pvm_proto::xdr::XdrWriter;
use pvm_proto::Tid;

/// TM_ codes of the extension range: TM_MIGRATE .. TM_XCAPS, and unassigned ones after them.
const TM_CODES: &[u32] = &[
    0x8001_0100,
    0x8001_0101,
    0x8001_0102,
    0x8001_0103,
    0x8001_0104,
    0x8001_0105,
    0x8001_0106,
    0x8001_01ff,
];
/// TC_ codes: TC_MARK, TC_ROUTEGONE, TC_MOVED, and an unassigned one.
const TC_CODES: &[u32] = &[0x8003_0100, 0x8003_0101, 0x8003_0102, 0x8003_01ff];
/// DM_ codes the slave sends (appckpt.rs `app_test_ext_dm`): 0x80020100 ..= 0x8002010f and
/// 0x800201ff; of those, DM_XCAPS (0x80020100) is always sent.
const DM_CODES: std::ops::RangeInclusive<u32> = 0x8002_0100..=0x8002_010f;

fn ints(v: &[i32]) -> Vec<u8> {
    let mut w = XdrWriter::new();
    for i in v {
        w.int(*i);
    }
    w.into_inner()
}

fn console(c: &Cluster, k: usize, input: &str) -> String {
    let mut cmd = c.command(k, &PathBuf::from(LEGACY_CONSOLE));
    cmd.stdin(Stdio::piped());
    let mut child = cmd.spawn().expect("start console");
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let (_, out, _) = Proc {
        child,
        name: "console".into(),
    }
    .wait(TIMEOUT);
    out
}

/// What `multi_probe` prints when every cross-host check passes (multi_legacy_master.rs).
const PROBE_EXPECTED: &str = "ok hosts 3\nok spawn host HOST\nok notify 0\nok echo 42\n\
ok mcast+mbox 5007\nok pstat 0\nok tasks listed 1\nok exit notify 1\nok pstat after exit -31\n";

fn probe(c: &Cluster, k: usize, to: &str) -> String {
    let mut cmd = c.command(k, &c_program("multi_probe"));
    cmd.arg(to);
    let (code, out, err) = Proc {
        child: cmd.spawn().unwrap(),
        name: "multi_probe".into(),
    }
    .wait(TIMEOUT);
    assert_eq!(code, Some(0), "{out}\n{err}\n{}", c.logs());
    out
}

/// The task socket of the pvmd of host `k`: the `pvmtmp*` socket in its PVM_TMP.
fn sock_of(c: &Cluster, k: usize) -> String {
    use std::os::unix::fs::FileTypeExt;
    let tmp = c.host(k).tmp.path();
    std::fs::read_dir(tmp)
        .into_iter()
        .flatten()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("pvmtmp") && e.file_type().is_ok_and(|t| t.is_socket()))
        .map(|e| e.path().display().to_string())
        .unwrap_or_else(|| panic!("no pvmd socket in {}", tmp.display()))
}

#[test]
fn legacy_daemon_ignores_every_extension_opcode() {
    for p in [LEGACY_PVMD, LEGACY_CONSOLE] {
        assert!(
            Path::new(p).exists(),
            "{p} is missing: the test needs legacy PVM (Debian pvm)"
        );
    }
    let c = Cluster::named("lo", "lo", 3);
    let (h1, h2, h3) = (c.host(1).ip.clone(), c.host(2).ip.clone(), c.host(3).ip.clone());
    // Our master (with the test switch: it sends every extension DM code to each new peer),
    // a legacy slave on h2, our slave on h3.
    let hf = c.dir.path().join("hostfile");
    std::fs::write(
        &hf,
        format!("{h1}\n{h2} dx={LEGACY_PVMD}\n{h3} dx={}\n", our_pvmd().display()),
    )
    .unwrap();
    let mut cmd = c.command(1, &our_pvmd());
    cmd.arg(format!("-n{h1}"))
        .arg(&hf)
        .env("PVMD_TEST_SEND_EXT_DM", "1")
        .stderr(Stdio::null());
    let mut m = Proc {
        child: cmd.spawn().expect("start our pvmd"),
        name: "our master".into(),
    };
    let sock1 = m.read_line(TIMEOUT).trim_end().to_string();
    assert!(sock1.starts_with('/'), "{sock1:?}\n{}", c.logs());
    assert!(
        c.wait_for(Duration::from_secs(20), || console(&c, 1, "conf\n").contains("3 hosts")),
        "slaves not added\n{}",
        c.logs()
    );
    // DM_: sent to the legacy slave at its commit.
    assert!(
        c.wait_for(Duration::from_secs(10), || c
            .log(1)
            .contains("sent every extension DM code to host 2")),
        "the master did not send the DM codes\n{}",
        c.logs()
    );

    // A raw task on the legacy slave, one on our master.
    let mut a = RawTask::connect(&sock_of(&c, 2)).expect("connect to the legacy pvmd");
    let ta = a
        .handshake(c.host(2).tmp.path(), 1318)
        .expect("enrol on the legacy pvmd");
    assert!(a.served());
    let mut b = RawTask::connect(&sock1).expect("connect to our master");
    let tb = b.handshake(c.host(1).tmp.path(), 1318).expect("enrol on our master");

    // TM_: every code of the range, with plausible bodies, to the legacy daemon.
    for (k, code) in TM_CODES.iter().enumerate() {
        for body in [ints(&[]), ints(&[0, 1, ta.0, 1, 3]), ints(&[0x7076_6d78, 1, 0x20])] {
            a.send(&request(*code as i32, 100 + k as i32, &body)).unwrap();
        }
    }
    // TC_: to the legacy daemon itself (ctx SYSCTX_TC, dst the pvmd), and through it to a task
    // on its own host and to one on another host.
    for code in TC_CODES {
        let mut p = msg_header(*code as i32, SYSCTX_TC, 0);
        p.extend_from_slice(&ints(&[1, 2]));
        a.send(&frag(Tid::LOCAL_PVMD, ta, &p, FragFlags::SOM | FragFlags::EOM, None))
            .unwrap();
        a.send(&frag(ta, ta, &p, FragFlags::SOM | FragFlags::EOM, None))
            .unwrap();
        a.send(&frag(tb, ta, &p, FragFlags::SOM | FragFlags::EOM, None))
            .unwrap();
    }

    // The legacy daemon keeps serving: the raw task's requests, the TC messages delivered to
    // both tasks, a new task, the console, and every cross-host check of multi_probe from and
    // to the legacy host (spawn, messages both ways, multicast, mailbox, notify, pstat).
    let count = |t: &mut RawTask| {
        let mut n = 0;
        while let Some((_, mh, _)) = t.recv(Duration::from_millis(700)) {
            if mh.ctx == SYSCTX_TC && TC_CODES.contains(&(mh.tag as u32)) {
                n += 1;
            }
        }
        n
    };
    assert_eq!(
        count(&mut a),
        TC_CODES.len(),
        "TC_ messages to a task on the legacy host"
    );
    assert_eq!(
        count(&mut b),
        TC_CODES.len(),
        "TC_ messages through the legacy daemon to our master's host"
    );
    assert!(
        a.served(),
        "the legacy daemon stopped serving the raw task\n{}",
        c.logs()
    );
    assert!(b.served(), "our master stopped serving\n{}", c.logs());
    let mut a2 = RawTask::connect(&sock_of(&c, 2)).expect("connect again");
    a2.handshake(c.host(2).tmp.path(), 1318).expect("a new task enrols");
    assert!(a2.served());
    let conf = console(&c, 2, "conf\n");
    assert!(conf.contains("3 hosts"), "{conf}\n{}", c.logs());
    for (k, to, host) in [
        (2, &h1, "40000"),
        (2, &h3, "c0000"),
        (1, &h2, "80000"),
        (3, &h2, "80000"),
    ] {
        assert_eq!(
            probe(&c, k, to),
            PROBE_EXPECTED.replace("HOST", host),
            "multi_probe in h{k} -> {to}\n{}",
            c.logs()
        );
    }

    // It got every one of them, and dropped it with a log line (its answer to unknown codes).
    let legacy = c.log(2);
    let dm: Vec<u32> = DM_CODES.chain([0x8002_01ff]).collect();
    for code in &dm {
        assert!(
            legacy.contains(&format!("bogus code {}", *code as i32)),
            "DM {code:#x} not seen by the legacy slave\n{legacy}"
        );
    }
    for code in TM_CODES.iter().chain(TC_CODES) {
        assert!(
            legacy.contains(&format!("bogus tag {}", *code as i32)),
            "TM/TC {code:#x} not seen by the legacy slave\n{legacy}"
        );
    }
    eprintln!(
        "legacy slave: {} DM, {} TM and {} TC extension codes received and dropped; every task and host still served",
        dm.len(),
        TM_CODES.len(),
        TC_CODES.len()
    );
    let _ = SYSCTX_TM;
    drop(m);
}
