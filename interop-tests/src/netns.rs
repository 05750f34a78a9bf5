//! Virtual machines of several "hosts" on one machine: one network namespace per host, joined
//! by a bridge in a switch namespace, each host with its own PVM_TMP and address 10.235.S.K
//! (S different per test). An rsh stand-in maps a host address to its namespace, so a master
//! pvmd (legacy or ours) starts slaves with `$PVM_RSH host 'pvmd -s …'` as it would over a
//! network.
//!
//! Names are `pvmt<pid><n>-hK` / `-sw`, unique per test. Dropping a [`Cluster`] kills every
//! process left in its namespaces (by pid, from `ip netns pids`) and deletes the namespaces,
//! also when the test panicked. Needs root (`ip netns`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::{send_signal, TmpDir, LEGACY_ROOT};

/// One host of a [`Cluster`].
pub struct NsHost {
    pub ns: String,
    pub ip: String,
    pub tmp: TmpDir,
}

/// Namespaces, addresses and the rsh stand-in of one test.
pub struct Cluster {
    pub prefix: String,
    pub sw: String,
    pub hosts: Vec<NsHost>,
    /// Directory with the rsh script, hostfiles and the examples' $HOME.
    pub dir: TmpDir,
    pub home: PathBuf,
    /// Enter hosts with `nsenter --net` instead of `ip netns exec` (see [`Cluster::use_nsenter`]).
    nsenter: bool,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("the multi-host tests need iproute2 (`ip`): {e}"));
    assert!(
        out.status.success(),
        "ip {args:?} failed (these tests need root): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Cluster {
    /// `n` hosts, `h1` .. `hn`, all reachable from each other.
    pub fn new(tag: &str, n: usize) -> Cluster {
        Cluster::named("pvmt", tag, n)
    }

    /// [`Cluster::new`] with namespace names starting with `prefix` (a helper's own names).
    pub fn named(prefix: &str, tag: &str, n: usize) -> Cluster {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let k = SEQ.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let prefix = format!("{prefix}{pid}{k}");
        let subnet = (pid.wrapping_mul(7).wrapping_add(k * 13)) % 250 + 1;
        let dir = TmpDir::new(&format!("net-{tag}"));
        let home = dir.path().join("home");
        let mut c = Cluster {
            sw: format!("{prefix}-sw"),
            prefix: prefix.clone(),
            hosts: Vec::new(),
            dir,
            home,
            nsenter: false,
        };
        // Created before anything can fail, so Drop cleans up whatever exists.
        ip(&["netns", "add", &c.sw]);
        ip(&["-n", &c.sw, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &c.sw, "link", "set", "br0", "up"]);
        for i in 1..=n {
            let ns = format!("{prefix}-h{i}");
            let addr = format!("10.235.{subnet}.{i}");
            c.hosts.push(NsHost {
                ns: ns.clone(),
                ip: addr.clone(),
                tmp: TmpDir::new(&format!("{tag}-h{i}")),
            });
            ip(&["netns", "add", &ns]);
            let port = format!("p{i}");
            ip(&[
                "-n", &ns, "link", "add", "eth0", "type", "veth", "peer", "name", &port, "netns", &c.sw,
            ]);
            ip(&["-n", &ns, "addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            ip(&["-n", &c.sw, "link", "set", &port, "master", "br0"]);
            ip(&["-n", &c.sw, "link", "set", &port, "up"]);
        }
        c.write_rsh();
        c.write_home();
        c
    }

    /// From now on, commands and the rsh stand-in enter a host with `nsenter --net` only:
    /// `ip netns exec` also makes a new mount namespace per call, and CRIU refuses to dump a
    /// task living in a mount namespace other than its own (lab CKPT-REPORT).
    pub fn use_nsenter(&mut self) {
        self.nsenter = true;
        self.write_rsh();
    }

    pub fn host(&self, k: usize) -> &NsHost {
        &self.hosts[k - 1]
    }

    pub fn rsh(&self) -> PathBuf {
        self.dir.path().join("rsh")
    }

    /// The rsh stand-in: `rsh HOST [-l LOGIN] [-n] COMMAND` runs COMMAND with /bin/sh in the
    /// host's namespace with its PVM_TMP, like rshd would.
    fn write_rsh(&self) {
        let mut cases = String::new();
        for h in &self.hosts {
            cases.push_str(&format!(
                "  {ip}) ns={ns}; tmp={tmp};;\n",
                ip = h.ip,
                ns = h.ns,
                tmp = h.tmp.path().display()
            ));
        }
        let log = self.dir.path().join("rsh.log");
        let script = format!(
            "#!/bin/sh\nhost=$1; shift\nwhile [ $# -gt 1 ]; do case $1 in -l) shift 2;; -n) shift;; *) break;; esac; done\n\
             case $host in\n{cases}  *) echo \"rsh: unknown host $host\" >&2; exit 1;;\nesac\n\
             echo \"$host: $1\" >> {log}\n\
             exec {enter} env PVM_TMP=$tmp PVM_ALLOW_ROOT=1 PVM_ROOT={root} HOME={home} PVM_RSH=$0 /bin/sh -c \"$1\"\n",
            log = log.display(),
            enter = if self.nsenter { "nsenter --net=/run/netns/$ns" } else { "ip netns exec $ns" },
            root = LEGACY_ROOT,
            home = self.home.display()
        );
        let p = self.rsh();
        std::fs::write(&p, script).expect("write rsh");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod rsh");
    }

    /// `$HOME/pvm3/bin/LINUX64` with the Debian examples, the legacy default exec path.
    fn write_home(&self) {
        let bin = self.home.join("pvm3/bin/LINUX64");
        std::fs::create_dir_all(&bin).expect("mkdir home");
        for p in ["hello.pvm", "hello_other", "master1", "slave1"] {
            let src = Path::new("/usr/bin").join(p);
            assert!(
                src.exists(),
                "{} is missing: install the Debian package pvm-examples",
                src.display()
            );
            let _ = std::os::unix::fs::symlink(&src, bin.join(p));
        }
    }

    /// Adds a program to the examples' exec path.
    pub fn install(&self, program: &Path, name: &str) {
        let bin = self.home.join("pvm3/bin/LINUX64");
        let _ = std::os::unix::fs::symlink(program, bin.join(name));
    }

    /// The rsh log (commands the masters ran), for failure messages.
    pub fn rsh_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("rsh.log")).unwrap_or_default()
    }

    /// A command run inside host `k` with the PVM environment of that host.
    pub fn command(&self, k: usize, program: &Path) -> Command {
        let h = self.host(k);
        let mut c = if self.nsenter {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net=/run/netns/{}", h.ns));
            c
        } else {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &h.ns]);
            c
        };
        c.arg(program)
            .env("PVM_TMP", h.tmp.path())
            .env("PVM_ALLOW_ROOT", "1")
            .env("PVM_ROOT", LEGACY_ROOT)
            .env("PVM_RSH", self.rsh())
            .env("HOME", &self.home)
            .current_dir(&self.home)
            .env_remove("PVMSOCK")
            .env_remove("PVMEPID")
            .env_remove("PVMDDEBUG")
            .env_remove("PVMHOSTFILE")
            .env_remove("PVM_DPATH")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    /// The pvmd log of host `k`.
    pub fn log(&self, k: usize) -> String {
        self.host(k).tmp.log()
    }

    /// All logs, for failure messages.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for (i, h) in self.hosts.iter().enumerate() {
            s.push_str(&format!("---- h{} ({}) log:\n{}\n", i + 1, h.ip, h.tmp.log()));
        }
        s.push_str(&format!("---- rsh:\n{}", self.rsh_log()));
        s
    }

    /// Pids of processes living in host `k`'s namespace.
    pub fn pids(&self, k: usize) -> Vec<u32> {
        ns_pids(&self.host(k).ns)
    }

    /// Runs the legacy console on host `k` with `input` as its stdin, to the end (at most
    /// [`crate::TIMEOUT`]); its stdout.
    pub fn console(&self, k: usize, input: &str) -> String {
        let (out, written) = self.run_console(k, input).expect("start the legacy console");
        assert!(
            written,
            "write to the console failed
{out}"
        );
        out
    }

    /// Whether the legacy console started on host `k` lists `n` hosts for `conf` (a console
    /// that does not finish within [`crate::TIMEOUT`] is killed and counts as no).
    pub fn console_lists_hosts(&self, k: usize, n: usize) -> bool {
        self.run_console(k, "conf\n")
            .is_ok_and(|(out, _)| out.contains(&format!("{n} hosts")))
    }

    /// The legacy console on host `k` fed `input`, run to the end (at most
    /// [`crate::TIMEOUT`]): its stdout and whether all of `input` was written.
    fn run_console(&self, k: usize, input: &str) -> std::io::Result<(String, bool)> {
        use std::io::Write;
        let mut cmd = self.command(k, Path::new(crate::LEGACY_CONSOLE));
        cmd.stdin(Stdio::piped());
        let mut child = cmd.spawn()?;
        let written = child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(input.as_bytes())
            .is_ok();
        let (_, out, _) = crate::Proc {
            child,
            name: "console".into(),
        }
        .wait(crate::TIMEOUT);
        Ok((out, written))
    }

    /// From now on the switch swallows every TCP segment host `k` sends with FIN or RST set:
    /// a peer that dies goes silent instead of closing its connections (as when its host
    /// vanishes, or a lost RST after a kill -9). This kernel has no drop action: the segments
    /// are redirected into a sink veth. Removed with the switch namespace.
    pub fn swallow_tcp_endings_from(&self, k: usize) {
        let run = |args: &[&str]| {
            let st = Command::new("ip")
                .args(["netns", "exec", &self.sw])
                .args(args)
                .status()
                .expect("run ip netns exec");
            assert!(st.success(), "{args:?} failed in {}", self.sw);
        };
        run(&[
            "ip", "link", "add", "swallow0", "type", "veth", "peer", "name", "swallow1",
        ]);
        run(&["ip", "link", "set", "swallow0", "up"]);
        let port = format!("p{k}");
        run(&["tc", "qdisc", "add", "dev", &port, "ingress"]);
        // IPv4 protocol 6, TCP flags byte at 20 + 13 (Linux sends TCP without IP options).
        for (prio, flag) in [("1", "0x01"), ("2", "0x04")] {
            run(&[
                "tc", "filter", "add", "dev", &port, "parent", "ffff:", "protocol", "ip", "prio", prio, "u32", "match",
                "ip", "protocol", "6", "0xff", "match", "u8", flag, flag, "at", "33", "action", "mirred", "egress",
                "redirect", "dev", "swallow0",
            ]);
        }
    }

    /// Waits until `cond` holds, at most `timeout`.
    pub fn wait_for(&self, timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
        let t = Instant::now();
        while t.elapsed() < timeout {
            if cond() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        cond()
    }
}

fn ns_pids(ns: &str) -> Vec<u32> {
    Command::new("ip")
        .args(["netns", "pids", ns])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for h in &self.hosts {
            for pid in ns_pids(&h.ns) {
                send_signal(pid, libc::SIGTERM);
            }
        }
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(3) && self.hosts.iter().any(|h| !ns_pids(&h.ns).is_empty()) {
            std::thread::sleep(Duration::from_millis(50));
        }
        for h in &self.hosts {
            for pid in ns_pids(&h.ns) {
                send_signal(pid, libc::SIGKILL);
            }
            let _ = Command::new("ip").args(["netns", "delete", &h.ns]).status();
        }
        let _ = Command::new("ip").args(["netns", "delete", &self.sw]).status();
    }
}
