//! Shared by the scheduler tests (sched_*.rs): masters on namespace hosts, C programs, the
//! scheduler binary.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use interop_tests::netns::Cluster;
use interop_tests::shim::shim_dir;
use interop_tests::{our_pvmd, Proc, LEGACY_CONSOLE, LEGACY_PVMD, TIMEOUT};

pub fn require_legacy() {
    for p in [LEGACY_PVMD, LEGACY_CONSOLE, "/usr/bin/srm.pvm", "/usr/bin/hello.pvm"] {
        assert!(
            Path::new(p).exists(),
            "{p} is missing: the scheduler tests need legacy PVM (Debian pvm, pvm-examples)"
        );
    }
}

/// The master pvmd (`legacy` or ours) on h1 with `&IP dx=...` lines for the other hosts, so
/// that adding them by address starts the same kind of daemon there.
pub fn master(c: &Cluster, legacy: bool, slaves: &[usize]) -> Proc {
    let dx = if legacy { PathBuf::from(LEGACY_PVMD) } else { our_pvmd() };
    let hf = c.dir.path().join("hostfile");
    let mut text = format!("{}\n", c.host(1).ip);
    for &k in slaves {
        text.push_str(&format!("&{} dx={}\n", c.host(k).ip, dx.display()));
    }
    std::fs::write(&hf, text).unwrap();
    let mut cmd = c.command(1, &dx);
    cmd.arg(format!("-n{}", c.host(1).ip)).arg(&hf).stderr(Stdio::null());
    let mut p = Proc {
        child: cmd.spawn().expect("start master pvmd"),
        name: "master pvmd".into(),
    };
    let line = p.read_line(TIMEOUT);
    assert!(line.starts_with('/'), "master printed {line:?}\n{}", c.logs());
    p
}

fn build(name: &str, src: &str, ours: bool) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sched-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let c = dir.join(format!("{name}.c"));
    std::fs::write(&c, src).unwrap();
    let exe = dir.join(name);
    let mut cmd = Command::new("gcc");
    cmd.arg("-O1").arg("-o").arg(&exe).arg(&c);
    if ours {
        let inc = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../include");
        cmd.arg("-I").arg(inc).arg("-L").arg(shim_dir()).arg("-l:libpvm3.so.3");
    } else {
        cmd.arg("-lpvm3");
    }
    let out = cmd.output().expect("gcc is required for the scheduler tests");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    exe
}

/// A C program on the legacy library.
pub fn legacy_program(name: &str, src: &str) -> PathBuf {
    build(name, src, false)
}

/// A C program on our library (header from include/).
pub fn shim_program(name: &str, src: &str) -> PathBuf {
    build(name, src, true)
}

/// target/debug/pvm-sched and pvm-migrate, built once.
pub fn sched_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = option_env!("CARGO").unwrap_or("cargo");
        let st = Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "-p",
                "pvm-sched",
                "-p",
                "pvm-migration",
                "-p",
                "libpvm3-shim",
            ])
            .current_dir(interop_tests::workspace_root())
            .status()
            .expect("cargo build");
        assert!(st.success(), "cargo build -p pvm-sched failed");
        let b = interop_tests::target_dir().join("debug").join("pvm-sched");
        assert!(b.exists());
        b
    })
    .clone()
}

/// A command for a program on our library in host `k` (children inherit the library).
pub fn shim_command(c: &Cluster, k: usize, program: &Path) -> Command {
    let mut cmd = c.command(k, program);
    cmd.env("LD_LIBRARY_PATH", shim_dir())
        .env("PVM_EXPORT", "LD_LIBRARY_PATH");
    cmd
}

/// Reads lines from a process's stdout in the background.
pub struct Lines {
    rx: std::sync::mpsc::Receiver<String>,
    pub all: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Lines {
    pub fn of(p: &mut Proc) -> Lines {
        use std::io::BufRead;
        let out = p.child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        let all = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let a2 = all.clone();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                a2.lock().unwrap().push_str(&format!("{l}\n"));
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Lines { rx, all }
    }

    /// Waits for a line containing `pat`; the line.
    pub fn wait(&self, pat: &str, timeout: Duration) -> Option<String> {
        let end = Instant::now() + timeout;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.rx.recv_timeout(left) {
                Ok(l) if l.contains(pat) => return Some(l),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    }

    pub fn text(&self) -> String {
        self.all.lock().unwrap().clone()
    }
}

/// Our master on h1 and our slaves on h2..hn, started with nsenter (migration-capable), all
/// hosts in the hostfile; waits until every pair of daemons exchanged DM_XCAPS.
pub fn our_machine(c: &mut Cluster, extra_env: &[(&str, &str)]) -> Proc {
    let pvmd = our_pvmd();
    let mut text = format!("{}\n", c.host(1).ip);
    for h in &c.hosts[1..] {
        text.push_str(&format!("{} dx={}\n", h.ip, pvmd.display()));
    }
    let hf = c.dir.path().join("hostfile");
    std::fs::write(&hf, text).unwrap();
    c.use_nsenter();
    let mut cmd = c.command(1, &pvmd);
    cmd.env_remove("LD_LIBRARY_PATH")
        .env_remove("PVM_EXPORT")
        .arg(format!("-n{}", c.host(1).ip))
        .arg(&hf)
        .stderr(Stdio::null());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let mut m = Proc {
        child: cmd.spawn().expect("start our master"),
        name: "our master pvmd".into(),
    };
    assert!(m.read_line(TIMEOUT).starts_with('/'), "{}", c.logs());
    let n = c.hosts.len();
    let ready = || (1..=n).all(|k| c.log(k).matches("window 88").count() >= n - 1);
    assert!(
        c.wait_for(Duration::from_secs(30), ready),
        "hosts or DM_XCAPS missing\n{}",
        c.logs()
    );
    m
}

/// `pvm-sched` started on h1 with the policy text `policy` and a per-host state directory
/// (each host's file holds `host_state`, when given: measured load is the same for every
/// namespace host of one machine, so tests inject it); returns once it registered as the
/// resource manager, with its output lines and the state directory.
pub fn start_sched(c: &Cluster, host_state: Option<&str>, policy: &str) -> (Proc, Lines, PathBuf) {
    let state = c.dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    if let Some(text) = host_state {
        for h in &c.hosts {
            std::fs::write(state.join(&h.ip), text).unwrap();
        }
    }
    let policy_file = c.dir.path().join("policy");
    std::fs::write(&policy_file, policy).unwrap();
    let mut s = c.command(1, &sched_bin());
    s.arg("--policy").arg(&policy_file).arg("--state").arg(&state);
    let mut sched = Proc {
        child: s.spawn().unwrap(),
        name: "pvm-sched".into(),
    };
    let sl = Lines::of(&mut sched);
    assert!(
        sl.wait("registered as resource manager", TIMEOUT).is_some(),
        "{}",
        sl.text()
    );
    (sched, sl, state)
}

/// Processes in host `k`'s namespace whose command line contains `name`.
pub fn procs_named(c: &Cluster, k: usize, name: &str) -> Vec<u32> {
    c.pids(k)
        .into_iter()
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .map(|b| String::from_utf8_lossy(&b).contains(name))
                .unwrap_or(false)
        })
        .collect()
}

/// The `pvm` console binary (pvm-console), built once per test process.
pub fn console_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = option_env!("CARGO").unwrap_or("cargo");
        let st = Command::new(cargo)
            .args(["build", "--quiet", "-p", "pvm-console"])
            .current_dir(interop_tests::workspace_root())
            .status()
            .expect("cargo build");
        assert!(st.success(), "cargo build -p pvm-console failed");
        let b = interop_tests::target_dir().join("debug").join("pvm");
        assert!(b.exists());
        b
    })
    .clone()
}

/// Runs `script` through the `pvm` console on host `k`; its standard output.
pub fn console(c: &Cluster, k: usize, script: &str) -> String {
    let mut cmd = c.command(k, &console_bin());
    cmd.stdin(Stdio::piped());
    let mut child = cmd.spawn().expect("console");
    let mut i = child.stdin.take().expect("stdin");
    std::io::Write::write_all(&mut i, script.as_bytes()).expect("script");
    drop(i);
    let (code, out, err) = Proc {
        child,
        name: format!("console on h{k}"),
    }
    .wait(TIMEOUT);
    assert_eq!(code, Some(0), "{out}\n{err}");
    out
}

/// The OWNER column of host `name` in the console's `hosts` output (`-` when unpublished).
pub fn console_owner(out: &str, name: &str) -> Option<String> {
    out.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|w| w.first() == Some(&name) && w.len() >= 6)
        .map(|w| w[4].to_string())
}
