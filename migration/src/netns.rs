//! "Hosts" made of network namespaces, and running code inside one.
//!
//! CRIU must be entered with `nsenter --net=/run/netns/X`, never `ip netns exec`: the latter
//! also makes a fresh mount namespace per call, and CRIU then sees the task in a foreign mount
//! namespace and fails or tries to dump it (CKPT-REPORT §1).

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::error::{io, MigError, Result};

/// Where a task lives: a network namespace (None = the caller's) and the address other hosts
/// reach it at (the page server listens there).
#[derive(Clone, Debug)]
pub struct Host {
    pub netns: Option<PathBuf>,
    pub addr: Ipv4Addr,
}

impl Host {
    /// `cmd` prefixed so that it runs inside this host's network namespace.
    pub fn command(&self, program: &Path) -> Command {
        match &self.netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={}", ns.display())).arg("--").arg(program);
                c
            }
            None => Command::new(program),
        }
    }

    /// Runs `f` on a fresh thread that has joined this host's network namespace. Sockets made
    /// there stay in that namespace after the thread ends, so listeners and connections can be
    /// created here and used anywhere.
    pub fn run_in<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        let ns = self.netns.clone();
        std::thread::spawn(move || -> Result<T> {
            if let Some(ns) = ns {
                let fd = File::open(&ns).map_err(io("open network namespace"))?;
                // SAFETY: setns(2) on an fd we own; it only changes this thread's namespace
                // (the thread is ours and ends after `f`).
                if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(MigError::Io {
                        step: "setns",
                        source: std::io::Error::last_os_error(),
                    });
                }
            }
            Ok(f())
        })
        .join()
        .map_err(|_| MigError::Transfer("namespace thread panicked".into()))?
    }
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Two namespace hosts joined by a veth pair (`A.1` and `A.2` on a /30). Names are unique per
/// process and call, so parallel tests never collide; everything is deleted on drop.
pub struct NetPair {
    pub a: Host,
    pub b: Host,
    names: [String; 2],
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("timeout")
        .arg("10")
        .arg("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(io("ip"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(MigError::Transfer(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

impl NetPair {
    /// `tag` (a few letters) goes into the names to say who made them.
    pub fn new(tag: &str) -> Result<NetPair> {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let id = format!("{tag}{}x{n}", std::process::id());
        let (na, nb) = (format!("mig-{id}-a"), format!("mig-{id}-b"));
        let pair = NetPair {
            a: Host {
                netns: Some(PathBuf::from(format!("/run/netns/{na}"))),
                addr: Ipv4Addr::new(10, 79, 0, 1),
            },
            b: Host {
                netns: Some(PathBuf::from(format!("/run/netns/{nb}"))),
                addr: Ipv4Addr::new(10, 79, 0, 2),
            },
            names: [na.clone(), nb.clone()],
        };
        ip(&["netns", "add", &na])?;
        ip(&["netns", "add", &nb])?;
        // Interface names are per namespace, so fixed short names are fine.
        ip(&[
            "-n", &na, "link", "add", "mv0", "type", "veth", "peer", "name", "mv1", "netns", &nb,
        ])?;
        for (ns, dev, a) in [(&na, "mv0", "10.79.0.1/30"), (&nb, "mv1", "10.79.0.2/30")] {
            ip(&["-n", ns, "addr", "add", a, "dev", dev])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(pair)
    }
}

impl NetPair {
    /// Limits A->B traffic to `rate` (tc syntax, e.g. "1gbit") with a token bucket, to
    /// emulate a real link; both the migration and the raw copy then cross the same limit.
    pub fn shape(&self, rate: &str) -> Result<()> {
        let out = Command::new("timeout")
            .args([
                "10",
                "tc",
                "-n",
                &self.names[0],
                "qdisc",
                "replace",
                "dev",
                "mv0",
                "root",
                "tbf",
                "rate",
                rate,
            ])
            .args(["burst", "512kb", "latency", "100ms"])
            .stdin(Stdio::null())
            .output()
            .map_err(io("tc"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(MigError::Transfer(format!(
                "tc tbf {rate}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    }
}

impl Drop for NetPair {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = ip(&["netns", "delete", n]);
        }
    }
}
