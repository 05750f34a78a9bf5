//! Helpers shared by the migration tests that run pvmd-rs daemons in namespace hosts entered
//! with `nsenter --net` (CRIU cannot dump a task in the mount namespace `ip netns exec` makes).
#![allow(dead_code)] // each test file uses its own subset

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use interop_tests::netns::Cluster;
use interop_tests::our_pvmd;

/// Compiles `src` as `name` against our library (`ours`: [`interop_tests::build_c_ours`],
/// which also puts it on the run path) or the legacy one ([`interop_tests::build_c`]); once per
/// test process and name.
pub fn gcc(name: &str, src: &str, ours: bool) -> PathBuf {
    if ours {
        interop_tests::build_c_ours(name, src)
    } else {
        interop_tests::build_c(name, src, &[])
    }
}

/// `pvm-migrate` (the restore helper) next to our pvmd.
pub fn build_helper() {
    let cargo = option_env!("CARGO").unwrap_or("cargo");
    let ok = Command::new(cargo)
        .args(["build", "--quiet", "-p", "pvm-migration", "--bin", "pvm-migrate"])
        .current_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."))
        .status()
        .expect("run cargo build for pvm-migrate")
        .success();
    assert!(
        ok && our_pvmd().with_file_name("pvm-migrate").exists(),
        "pvm-migrate not built"
    );
}

/// Our pvmd in host `k`, for a cluster switched to `nsenter --net` ([`Cluster::use_nsenter`]:
/// CRIU cannot dump a task living in the mount namespace `ip netns exec` makes). The test's own
/// LD_LIBRARY_PATH/PVM_EXPORT stay out of the daemon and its tasks; its stderr is not read.
pub fn pvmd_command(c: &Cluster, k: usize) -> Command {
    let mut cmd = c.command(k, &our_pvmd());
    cmd.env_remove("LD_LIBRARY_PATH")
        .env_remove("PVM_EXPORT")
        .stderr(Stdio::null());
    cmd
}

/// Waits for `child` at most `limit` (then kills it, by its pid); its exit code (None when
/// killed) and what it printed, so that a hang still shows the logs.
pub fn wait_or_kill(mut child: std::process::Child, limit: Duration) -> (Option<i32>, String, String) {
    use std::io::Read;
    let mut so = child.stdout.take().expect("piped stdout");
    let mut se = child.stderr.take().expect("piped stderr");
    let ro = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = so.read_to_string(&mut s);
        s
    });
    let re = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = se.read_to_string(&mut s);
        s
    });
    let t0 = Instant::now();
    let code = loop {
        if let Ok(Some(st)) = child.try_wait() {
            break st.code();
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = ro.join().unwrap_or_default();
    let err = re.join().unwrap_or_default();
    (code, out, err)
}

/// The `mig:` lines of every host's pvmd log, prefixed with the host.
pub fn mig_lines(c: &Cluster) -> String {
    let mut s = String::new();
    for k in 1..=c.hosts.len() {
        for l in c.log(k).lines().filter(|l| l.contains("mig: ")) {
            s.push_str(&format!("h{k} {l}\n"));
        }
    }
    s
}
