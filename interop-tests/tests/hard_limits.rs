//! Per-task resource caps (pvmd_rs::limits), driven in process through `pvmd_rs::harness`:
//! one task over its cap gets an error and a log line; another task doing the same thing
//! right after is served normally.

use std::cell::RefCell;
use std::io;
use std::rc::Rc;

use pvm_proto::codes::{DbOp, MboxFlags, PvmError, SpawnFlags, Tm};
use pvm_proto::xdr::{XdrReader, XdrWriter};
use pvm_proto::Tid;
use pvmd_rs::daemon::Launcher;
use pvmd_rs::harness::Driver;
use pvmd_rs::limits;

fn first_int(r: &[(pvm_proto::mesg::MsgHeader, Vec<u8>)], tag: Tm) -> i32 {
    let (_, b) = r.iter().find(|(h, _)| h.tag == tag.code()).expect("a reply");
    XdrReader::new(b).int("cc").unwrap()
}

/// An embedded message as TM_DB PUT carries it: length, 7 header ints, one fragment.
fn put_body(class: &str, index: i32, payload: &[u8]) -> Vec<u8> {
    let mut w = XdrWriter::new();
    w.int(DbOp::Put.code()).int(0).string(class).int(index).int(0);
    w.int(payload.len() as i32);
    for _ in 0..7 {
        w.int(0);
    }
    w.int(payload.len() as i32).opaque(payload);
    w.into_inner()
}

#[test]
fn mailbox_quota_is_per_task() {
    let mut d = Driver::lone();
    let (a, _) = d.connect_task();
    let (b, _) = d.connect_task();
    let mut refused = None;
    for i in 0..=limits::MBOX_ENTRIES_PER_TASK as i32 {
        let cc = first_int(&d.request(a, Tm::Db, 1, &put_body("flood", i, &[1; 8])), Tm::Db);
        if cc < 0 {
            refused = Some((i, cc));
            break;
        }
    }
    assert_eq!(
        refused,
        Some((limits::MBOX_ENTRIES_PER_TASK as i32, PvmError::OutOfRes.code())),
        "the entry past the quota is refused with PvmOutOfRes"
    );
    assert!(
        d.logs.iter().any(|l| l.contains("over its mailbox quota")),
        "{:?}",
        d.logs
    );
    assert_eq!(
        first_int(&d.request(b, Tm::Db, 1, &put_body("mine", 0, &[2; 8])), Tm::Db),
        0
    );
    // Bytes: 3 MiB entries; the one that would pass 16 MiB is refused (for b only).
    let big = vec![0u8; 3 << 20];
    let mut stored = 0;
    while first_int(&d.request(b, Tm::Db, 1, &put_body("big", stored, &big)), Tm::Db) >= 0 {
        stored += 1;
        assert!(stored < 10, "no byte quota");
    }
    assert_eq!(stored, 5, "5 x 3 MiB fit in 16 MiB, the 6th does not");
    assert!(d.serves(a) && d.serves(b));
    // When a exits its quota is released.
    d.eof(a);
    let (c, _) = d.connect_task();
    assert_eq!(
        first_int(&d.request(c, Tm::Db, 1, &put_body("flood", 0, &[1; 8])), Tm::Db),
        0
    );
}

#[test]
fn waiting_lookups_are_capped_per_task() {
    let mut d = Driver::lone();
    let (a, _) = d.connect_task();
    let (b, _) = d.connect_task();
    let get = |class: &str| {
        let mut w = XdrWriter::new();
        w.int(DbOp::Get.code())
            .int(0)
            .string(class)
            .int(0)
            .int(MboxFlags::WAIT_FOR_INFO.bits());
        w.into_inner()
    };
    for i in 0..limits::DB_WAITERS_PER_TASK {
        assert!(
            d.request(a, Tm::Db, i as i32, &get("never")).is_empty(),
            "lookup {i} waits"
        );
    }
    let r = d.request(a, Tm::Db, 999, &get("never"));
    assert_eq!(first_int(&r, Tm::Db), PvmError::OutOfRes.code());
    assert!(d.logs.iter().any(|l| l.contains("lookups waiting already")));
    assert!(d.request(b, Tm::Db, 5, &get("later")).is_empty(), "b can still wait");
    // And b's wait is answered by a PUT.
    let _ = d.request(a, Tm::Db, 1, &put_body("later", 0, &[3; 4]));
    assert!(d.serves(b));
}

struct FakeLauncher(Rc<RefCell<i32>>);

impl Launcher for FakeLauncher {
    fn find(&self, file: &str) -> Option<String> {
        Some(format!("/bin/{file}"))
    }
    fn launch(&mut self, _: Tid, _: &str, _: &[String], _: &[String]) -> io::Result<i32> {
        *self.0.borrow_mut() += 1;
        Ok(50_000 + *self.0.borrow())
    }
}

fn spawn_body(count: i32) -> Vec<u8> {
    let mut w = XdrWriter::new();
    w.string("prog")
        .int(SpawnFlags::HOST.bits())
        .string("h1")
        .int(count)
        .int(0);
    for _ in 0..6 {
        w.int(0);
    }
    w.int(0);
    w.into_inner()
}

#[test]
fn pending_spawns_are_capped_per_parent() {
    let mut d = Driver::lone();
    let launched = Rc::new(RefCell::new(0));
    d.daemon.set_launcher(Box::new(FakeLauncher(launched.clone())));
    let (a, _) = d.connect_task();
    let (b, _) = d.connect_task();
    let per = 256;
    for _ in 0..limits::PENDING_SPAWNS_PER_TASK / per {
        let r = d.request(a, Tm::Spawn, 1, &spawn_body(per as i32));
        assert!(!r.is_empty(), "spawn answered");
    }
    assert_eq!(*launched.borrow(), limits::PENDING_SPAWNS_PER_TASK as i32);
    let r = d.request(a, Tm::Spawn, 2, &spawn_body(1));
    assert_eq!(first_int(&r, Tm::Spawn), PvmError::OutOfRes.code());
    assert!(d.logs.iter().any(|l| l.contains("not connected yet")));
    assert_eq!(
        *launched.borrow(),
        limits::PENDING_SPAWNS_PER_TASK as i32,
        "nothing started"
    );
    // Another parent is not affected.
    let r = d.request(b, Tm::Spawn, 3, &spawn_body(1));
    assert!(first_int(&r, Tm::Spawn) > 0, "b spawns");
}
