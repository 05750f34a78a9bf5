//! CRIU-based checkpoint, restore and migration between two namespace hosts (pvm-migration).
//! Needs root and CRIU >= 4.1 (ci/criu-setup); fails loudly without them, never skips.
//!
//! The task is `migration/tests/mighog.c`: N MB of patterned heap that it checks word by word
//! on SIGUSR1, logging its tick count and network namespace.

use std::fs;
use std::path::PathBuf;
use std::thread::sleep;
use std::time::{Duration, Instant};

use pvm_migration::{hog, transfer, Criu, Mode, NetPair};

const LIMIT: Duration = Duration::from_secs(60);

fn criu() -> Criu {
    assert_eq!(uid(), 0, "migration tests need root (CRIU, network namespaces)");
    Criu::new().unwrap_or_else(|e| panic!("CRIU cannot be used here: {e} (run ci/criu-setup)"))
}

fn uid() -> u32 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(u32::MAX)
}

/// Per-test scratch space on tmpfs (images are memory-sized); removed on drop, and the task
/// started there is killed if the test fails half-way.
struct Scratch {
    dir: PathBuf,
    pids: Vec<u32>,
}

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir = PathBuf::from(format!("/dev/shm/pvm-mig-test-{}-{tag}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Scratch { dir, pids: vec![] }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for &p in &self.pids {
            pvm_migration::signal(p, 9);
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn gone(pid: u32, limit: Duration) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        // A killed task stays a zombie until init reaps it; both count as gone.
        match fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => return true,
            Ok(s) if s.rsplit(')').next().is_some_and(|r| r.trim_start().starts_with('Z')) => return true,
            _ => sleep(Duration::from_millis(10)),
        }
    }
    false
}

#[test]
fn mig_dump_then_restore_in_other_host_fresh_pidns() {
    let criu = criu();
    let mut s = Scratch::new("dump");
    let bin = hog::build(&s.dir).unwrap();
    let pair = NetPair::new("d").unwrap();
    let (na, nb) = (
        hog::netns_id(pair.a.netns.as_ref().unwrap()).unwrap(),
        hog::netns_id(pair.b.netns.as_ref().unwrap()).unwrap(),
    );
    let log = s.dir.join("hog.log");
    let h = hog::start(&pair.a, &bin, 48, &log, LIMIT).unwrap();
    s.pids.push(h.pid);
    let v = hog::verify(h.pid, &log, LIMIT).unwrap();
    assert!(v.contains("verify ok") && v.contains(&na), "{v}");
    let t_before = hog::ticks(&v).unwrap();

    let (a_img, b_img) = (s.dir.join("imgA"), s.dir.join("imgB"));
    let d = criu.dump(h.pid, &pair.a, &a_img, false, LIMIT).unwrap();
    assert!(d.bytes > 48 << 20, "image of {} bytes for 48 MB of heap", d.bytes);
    assert!(
        gone(h.pid, Duration::from_secs(5)),
        "dump without leave-running must end the task"
    );
    let n = transfer::copy_dir(&pair.a, &a_img, &pair.b, &b_img, LIMIT).unwrap();
    assert!(n > 48 << 20);

    let r = criu.restore(&pair.b, &b_img, LIMIT).unwrap();
    s.pids.push(r.pid);
    assert_ne!(r.pid, h.pid, "restored in a fresh pid namespace, its host pid is new");
    let ns_pid = fs::read_to_string(format!("/proc/{}/status", r.pid)).unwrap();
    let nspid = ns_pid.lines().find(|l| l.starts_with("NSpid:")).unwrap().to_string();
    assert!(
        nspid.ends_with(&format!("\t{}", h.pid)),
        "inside its namespace the task keeps its pid: {nspid}"
    );
    let v1 = hog::verify(r.pid, &log, LIMIT).unwrap();
    assert!(
        v1.contains("verify ok") && v1.contains(&nb),
        "restored on B with intact memory: {v1}"
    );
    let t1 = hog::ticks(&v1).unwrap();
    assert!(t1 >= t_before, "{t1} < {t_before}");
    sleep(Duration::from_millis(300));
    let v2 = hog::verify(r.pid, &log, LIMIT).unwrap();
    assert!(
        v2.contains("verify ok") && hog::ticks(&v2).unwrap() > t1,
        "it keeps running: {v1} / {v2}"
    );
    r.kill();
}

#[test]
fn mig_post_copy_migration_keeps_memory_and_freeze_short() {
    let criu = criu();
    assert!(
        criu.caps.lazy_pages.ok(),
        "lazy pages unavailable here: {:?}",
        criu.caps.lazy_pages
    );
    let mut s = Scratch::new("post");
    let bin = hog::build(&s.dir).unwrap();
    let pair = NetPair::new("p").unwrap();
    let nb = hog::netns_id(pair.b.netns.as_ref().unwrap()).unwrap();
    let log = s.dir.join("hog.log");
    let h = hog::start(&pair.a, &bin, 128, &log, LIMIT).unwrap();
    s.pids.push(h.pid);
    let m = criu
        .migrate(h.pid, &pair.a, &pair.b, &s.dir.join("work"), Mode::PostCopy, LIMIT)
        .unwrap();
    s.pids.push(m.restored.pid);
    eprintln!(
        "post-copy 128 MB: freeze {:?}, total {:?}, streamed {} B",
        m.freeze, m.total, m.streamed
    );
    assert_eq!(m.mode, Mode::PostCopy);
    assert!(
        m.streamed < 16 << 20,
        "post-copy streams metadata only, not {} B",
        m.streamed
    );
    assert!(m.freeze <= m.total, "{m:?}");
    // Generous bound for a shared 2-core CI machine; the benchmark reports the real figure.
    assert!(m.freeze < Duration::from_secs(3), "freeze {:?}", m.freeze);
    assert!(
        gone(h.pid, Duration::from_secs(5)),
        "the source task must be gone after migration"
    );
    let v = hog::verify(m.restored.pid, &log, LIMIT).unwrap();
    assert!(v.contains("verify ok") && v.contains(&nb), "{v}");
    sleep(Duration::from_millis(200));
    let v2 = hog::verify(m.restored.pid, &log, LIMIT).unwrap();
    assert!(hog::ticks(&v2) > hog::ticks(&v), "{v} / {v2}");
    assert!(
        !s.dir.join("work/src").exists(),
        "image dirs are removed after a success"
    );
    m.restored.kill();
}

#[test]
fn mig_stop_and_copy_migration() {
    let criu = criu();
    let mut s = Scratch::new("sac");
    let bin = hog::build(&s.dir).unwrap();
    let pair = NetPair::new("s").unwrap();
    let nb = hog::netns_id(pair.b.netns.as_ref().unwrap()).unwrap();
    let log = s.dir.join("hog.log");
    let h = hog::start(&pair.a, &bin, 32, &log, LIMIT).unwrap();
    s.pids.push(h.pid);
    let m = criu
        .migrate(h.pid, &pair.a, &pair.b, &s.dir.join("work"), Mode::StopAndCopy, LIMIT)
        .unwrap();
    s.pids.push(m.restored.pid);
    assert_eq!(m.mode, Mode::StopAndCopy);
    assert!(
        m.streamed > 32 << 20,
        "stop-and-copy carries every page: {}",
        m.streamed
    );
    let v = hog::verify(m.restored.pid, &log, LIMIT).unwrap();
    assert!(v.contains("verify ok") && v.contains(&nb), "{v}");
    m.restored.kill();
}

#[test]
fn mig_checkpoint_leave_running_then_restart_after_kill() {
    let criu = criu();
    let mut s = Scratch::new("ckpt");
    let bin = hog::build(&s.dir).unwrap();
    let pair = NetPair::new("c").unwrap();
    let (na, nb) = (
        hog::netns_id(pair.a.netns.as_ref().unwrap()).unwrap(),
        hog::netns_id(pair.b.netns.as_ref().unwrap()).unwrap(),
    );
    let log = s.dir.join("hog.log");
    let h = hog::start(&pair.a, &bin, 32, &log, LIMIT).unwrap();
    s.pids.push(h.pid);
    let v0 = hog::verify(h.pid, &log, LIMIT).unwrap();
    let t0 = hog::ticks(&v0).unwrap();

    let (a_img, b_img) = (s.dir.join("ckA"), s.dir.join("ckB"));
    let d = criu.dump(h.pid, &pair.a, &a_img, true, LIMIT).unwrap();
    eprintln!(
        "checkpoint 32 MB leave-running: wall {:?}, frozen {:?}",
        d.wall, d.frozen
    );
    assert!(d.frozen.is_some(), "CRIU reports the frozen time");
    // The original runs on with intact memory.
    sleep(Duration::from_millis(300));
    let v1 = hog::verify(h.pid, &log, LIMIT).unwrap();
    assert!(v1.contains("verify ok") && v1.contains(&na), "{v1}");
    let t1 = hog::ticks(&v1).unwrap();
    assert!(t1 > t0);
    // Images go to another host (stable storage), then the first host "dies".
    transfer::copy_dir(&pair.a, &a_img, &pair.b, &b_img, LIMIT).unwrap();
    fs::remove_dir_all(&a_img).unwrap();
    assert!(pvm_migration::signal(h.pid, 9));
    assert!(gone(h.pid, Duration::from_secs(5)));

    let r = criu.restore(&pair.b, &b_img, LIMIT).unwrap();
    s.pids.push(r.pid);
    let v2 = hog::verify(r.pid, &log, LIMIT).unwrap();
    assert!(v2.contains("verify ok") && v2.contains(&nb), "{v2}");
    let t2 = hog::ticks(&v2).unwrap();
    // Rolled back to the checkpoint: it restarts from the ticks it had then, not from t1.
    assert!(
        t2 >= t0 && t2 < t1,
        "restart from checkpoint: t0 {t0}, before kill {t1}, restored {t2}"
    );
    r.kill();
}

#[test]
fn mig_three_hops_post_copy_then_auto_fallback() {
    let mut criu = criu();
    let mut s = Scratch::new("back");
    let bin = hog::build(&s.dir).unwrap();
    let pair = NetPair::new("r").unwrap();
    let (na, nb) = (
        hog::netns_id(pair.a.netns.as_ref().unwrap()).unwrap(),
        hog::netns_id(pair.b.netns.as_ref().unwrap()).unwrap(),
    );
    let log = s.dir.join("hog.log");
    let h = hog::start(&pair.a, &bin, 16, &log, LIMIT).unwrap();
    s.pids.push(h.pid);
    let m1 = criu
        .migrate(h.pid, &pair.a, &pair.b, &s.dir.join("w1"), Mode::Auto, LIMIT)
        .unwrap();
    s.pids.push(m1.restored.pid);
    let v = hog::verify(m1.restored.pid, &log, LIMIT).unwrap();
    assert!(v.contains("verify ok") && v.contains(&nb), "{v}");
    assert_eq!(m1.mode, Mode::PostCopy);
    // Second hop, post-copy, from inside the pid namespace of the first restore.
    let m1b = criu
        .migrate(
            m1.restored.pid,
            &pair.b,
            &pair.a,
            &s.dir.join("w1b"),
            Mode::PostCopy,
            LIMIT,
        )
        .unwrap();
    s.pids.push(m1b.restored.pid);
    let v = hog::verify(m1b.restored.pid, &log, LIMIT).unwrap();
    assert!(v.contains("verify ok") && v.contains(&na), "{v}");
    // Third hop with post-copy declared unavailable: Auto must take stop-and-copy and say why.
    criu.caps.lazy_pages = pvm_migration::Cap::Missing("test: declared unavailable".into());
    let m2 = criu
        .migrate(m1b.restored.pid, &pair.a, &pair.b, &s.dir.join("w2"), Mode::Auto, LIMIT)
        .unwrap();
    s.pids.push(m2.restored.pid);
    assert_eq!(m2.mode, Mode::StopAndCopy);
    assert!(
        m2.fallback.as_deref().unwrap_or("").contains("declared unavailable"),
        "{:?}",
        m2.fallback
    );
    let v = hog::verify(m2.restored.pid, &log, LIMIT).unwrap();
    assert!(v.contains("verify ok") && v.contains(&nb), "{v}");
    m1.restored.kill();
    m1b.restored.kill();
    m2.restored.kill();
}

/// Reads lines from `r` on a thread; the receiver gets them (and None at end of file).
fn lines(r: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<Option<String>> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(r).lines() {
            match l {
                Ok(l) => {
                    if tx.send(Some(l)).is_err() {
                        return;
                    }
                }
                Err(_) => break,
            }
        }
        let _ = tx.send(None);
    });
    rx
}

fn out_ticks(l: &str) -> u64 {
    l.strip_prefix("out ticks=")
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("odd line {l:?}"))
}

#[test]
fn mig_stdout_pipe_is_replaced_by_the_targets_pipe() {
    let criu = criu();
    let mut s = Scratch::new("pipe");
    let bin = hog::build(&s.dir).unwrap();
    let pair = NetPair::new("o").unwrap();
    let log = s.dir.join("hog.log");
    let (h, r1) = hog::start_with(&pair.a, &bin, 8, &log, std::process::Stdio::piped(), LIMIT).unwrap();
    s.pids.push(h.pid);
    let r1 = r1.unwrap();
    let key = pvm_migration::pipe_key(&r1).unwrap();
    let old = lines(r1);
    let first = old.recv_timeout(Duration::from_secs(10)).unwrap().unwrap();
    let t_first = out_ticks(&first);
    // The target's new output pipe: the task writes into cat's stdin, we read cat's stdout.
    let mut cat = std::process::Command::new("cat")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let w2: std::os::fd::OwnedFd = cat.stdin.take().unwrap().into();
    let new = lines(cat.stdout.take().unwrap());
    let inherit = [pvm_migration::Inherit { fd: w2, key }];
    let m = criu
        .migrate_with(
            h.pid,
            &pair.a,
            &pair.b,
            &s.dir.join("w"),
            Mode::PostCopy,
            &inherit,
            LIMIT,
        )
        .unwrap();
    s.pids.push(m.restored.pid);
    drop(inherit); // the task holds its own copy now; cat ends when the task does
                   // Old pipe: its only writer is gone, so it ends; nothing after the last tick before the dump.
    let mut last_old = t_first;
    while let Some(l) = old
        .recv_timeout(Duration::from_secs(10))
        .expect("old pipe must reach end of file")
    {
        last_old = out_ticks(&l);
    }
    // New pipe: output continues, in order, right after what the old pipe carried.
    let l = new.recv_timeout(Duration::from_secs(10)).unwrap().unwrap();
    let t_new = out_ticks(&l);
    assert_eq!(
        t_new,
        last_old + 10,
        "no output lost or repeated across the move: old {last_old}, new {t_new}"
    );
    m.restored.kill();
    let _ = cat.kill();
    let _ = cat.wait();
}

#[test]
fn mig_failures_are_errors_with_the_criu_log_not_hangs() {
    let criu = criu();
    let s = Scratch::new("err");
    let pair = NetPair::new("e").unwrap();
    let t = Instant::now();
    // No such task (above any pid_max).
    let e = criu
        .migrate(4_999_999, &pair.a, &pair.b, &s.dir.join("w"), Mode::Auto, LIMIT)
        .unwrap_err()
        .to_string();
    assert!(e.contains("criu dump"), "{e}");
    // Nothing to restore.
    fs::create_dir_all(s.dir.join("empty")).unwrap();
    let e = criu
        .restore(&pair.b, &s.dir.join("empty"), LIMIT)
        .unwrap_err()
        .to_string();
    assert!(e.contains("criu restore"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(20), "errors took {:?}", t.elapsed());
}
