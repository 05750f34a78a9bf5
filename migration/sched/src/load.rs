//! Measuring a host: CPU load not caused by guest tasks, free memory, interactive sessions.
//!
//! The scheduler measures the machine it runs on (/proc/stat, /proc/loadavg, /proc/meminfo,
//! utmp). In the tests every host is a network namespace of that one machine, so each host
//! would read the same numbers; a per-host state can therefore be injected from files
//! (`<state dir>/<host name>`, lines `load 1.5`, `free_mb 900`, `sessions 1`, `owner busy`),
//! which then replace the measured values for that host. On a real multi-machine cluster the
//! per-host agents (`agent.rs`, policy `agents on`) run this measurement on each host.

use std::collections::HashMap;
use std::path::Path;

/// What one measurement says about a host.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Sample {
    /// Busy CPUs not explained by guest tasks (the owner's own work).
    pub owner_load: f64,
    pub free_mb: u64,
    pub sessions: u32,
    /// An injected owner state (tests, administrators): Some(true) = busy.
    pub owner_busy: Option<bool>,
}

/// Reads at most this much of a /proc or state file.
const MAX_READ: usize = 64 * 1024;

fn read(path: &Path) -> Option<String> {
    use std::io::Read;
    let f = std::fs::File::open(path).ok()?;
    let mut s = String::new();
    f.take(MAX_READ as u64).read_to_string(&mut s).ok()?;
    Some(s)
}

/// CPU ticks counters between two samples.
#[derive(Debug, Default)]
pub struct Meter {
    last_cpu: Option<(u64, u64)>,
    last_pid: HashMap<i32, u64>,
}

/// (busy, total) jiffies of all CPUs from /proc/stat's first line.
fn cpu_ticks(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().next()?;
    let mut it = line.split_whitespace();
    if it.next()? != "cpu" {
        return None;
    }
    let v: Vec<u64> = it.filter_map(|x| x.parse().ok()).collect();
    if v.len() < 4 {
        return None;
    }
    let total: u64 = v.iter().sum();
    let idle = v[3] + v.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

/// utime + stime of a process (/proc/PID/stat fields 14 and 15, after the command name).
fn pid_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn ncpu() -> f64 {
    // SAFETY: sysconf has no memory effects.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if n > 0 {
        n as f64
    } else {
        1.0
    }
}

/// MemAvailable in MB.
fn free_mb(meminfo: &str) -> Option<u64> {
    let l = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = l.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024)
}

/// Interactive sessions: USER_PROCESS records in utmp (what `who` lists).
pub fn sessions() -> u32 {
    const RECORD: usize = 384; // struct utmp on Linux (glibc, 64-bit and 32-bit alike)
    const USER_PROCESS: i16 = 7;
    let Ok(b) = std::fs::read("/var/run/utmp") else {
        return 0;
    };
    b.chunks_exact(RECORD)
        .take(4096)
        .filter(|r| i16::from_ne_bytes([r[0], r[1]]) == USER_PROCESS)
        .count() as u32
}

impl Meter {
    /// Measures this machine; `guest_pids` are the guest tasks running here.
    pub fn sample(&mut self, guest_pids: &[i32]) -> Sample {
        let cpu = read(Path::new("/proc/stat")).and_then(|s| cpu_ticks(&s));
        let mut busy_cpus = 0.0;
        let mut guest_cpus = 0.0;
        if let (Some((b1, t1)), Some((b0, t0))) = (cpu, self.last_cpu) {
            let dt = t1.saturating_sub(t0) as f64;
            if dt > 0.0 {
                let n = ncpu();
                busy_cpus = b1.saturating_sub(b0) as f64 / dt * n;
                let mut g = 0u64;
                for &pid in guest_pids {
                    let now = read(Path::new(&format!("/proc/{pid}/stat"))).and_then(|s| pid_ticks(&s));
                    if let (Some(a), Some(b)) = (now, self.last_pid.get(&pid)) {
                        g += a.saturating_sub(*b);
                    }
                }
                guest_cpus = g as f64 / dt * n;
            }
        } else if let Some(l) = read(Path::new("/proc/loadavg")) {
            // First sample: the 1-minute load average stands in.
            busy_cpus = l.split_whitespace().next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
        }
        self.last_cpu = cpu;
        self.last_pid.clear();
        for &pid in guest_pids {
            if let Some(t) = read(Path::new(&format!("/proc/{pid}/stat"))).and_then(|s| pid_ticks(&s)) {
                self.last_pid.insert(pid, t);
            }
        }
        Sample {
            owner_load: (busy_cpus - guest_cpus).max(0.0),
            free_mb: read(Path::new("/proc/meminfo")).and_then(|m| free_mb(&m)).unwrap_or(0),
            sessions: sessions(),
            owner_busy: None,
        }
    }
}

/// Applies an injected state file for `host` over a measured sample.
pub fn inject(dir: &Path, host: &str, mut s: Sample) -> Sample {
    if host.contains('/') || host.starts_with('.') {
        return s;
    }
    let Some(text) = read(&dir.join(host)) else { return s };
    for line in text.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            ["load", v] => s.owner_load = v.parse().ok().filter(|x: &f64| x.is_finite()).unwrap_or(s.owner_load),
            ["free_mb", v] => s.free_mb = v.parse().unwrap_or(s.free_mb),
            ["sessions", v] => s.sessions = v.parse().unwrap_or(s.sessions),
            ["owner", "busy"] => s.owner_busy = Some(true),
            ["owner", "idle"] => s.owner_busy = Some(false),
            _ => {}
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_parsing() {
        let s = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4\n";
        assert_eq!(cpu_ticks(s), Some((150, 1000)));
        assert_eq!(cpu_ticks("intr 1 2\n"), None);
        let p = "123 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 30 12 0 0";
        assert_eq!(pid_ticks(p), Some(42));
        assert_eq!(free_mb("MemTotal: 1 kB\nMemAvailable:    2048000 kB\n"), Some(2000));
    }

    #[test]
    fn injected_state_overrides() {
        let d = std::env::temp_dir().join(format!("pvm-sched-inject-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("h2"), "load 2.5\nowner busy\nsessions 1\nfree_mb 77\n").unwrap();
        let s = inject(&d, "h2", Sample::default());
        assert_eq!(s.owner_load, 2.5);
        assert_eq!(s.owner_busy, Some(true));
        assert_eq!((s.sessions, s.free_mb), (1, 77));
        assert_eq!(inject(&d, "../h2", Sample::default()), Sample::default());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
