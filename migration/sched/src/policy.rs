//! The policy file: thresholds, hysteresis and priorities. Every key has a default, so no
//! file is needed. One `key value` per line, `#` starts a comment:
//!
//! ```text
//! owner_load 0.6        # load not caused by guests above which the owner counts as busy
//! sessions on           # an interactive session (utmp) makes the owner busy
//! idle_after 10         # seconds without a busy signal before a host is used again
//! busy_after 0          # seconds a busy signal must last before guests are moved
//! signals on            # off: only `pvm-sched owner HOST busy|idle` changes owner state
//! max_guests 0          # guests per host (0 = no limit)
//! min_free_mb 64        # hosts with less free memory get no new guests
//! interval_ms 250       # how often hosts are measured
//! priority NAME 10      # higher first among equally loaded hosts (default 0)
//! agents off           # on: a measurement agent per host (`pvm-sched agent`), preferred
//! ckpt_interval 30      # seconds between whole-application checkpoints of placed jobs (0 = off)
//! ```

use std::collections::HashMap;
use std::time::Duration;

use crate::error::SchedError;

#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub owner_load: f64,
    pub sessions: bool,
    pub idle_after: Duration,
    pub busy_after: Duration,
    pub signals: bool,
    pub max_guests: usize,
    pub min_free_mb: u64,
    pub interval: Duration,
    pub priority: HashMap<String, i32>,
    /// Whole-application checkpoints of the jobs the scheduler placed, so that they can be
    /// restarted after a host failure; zero turns them off.
    pub ckpt_interval: Duration,
    /// A measurement agent on every host (`pvm-sched agent`), whose reports replace the
    /// scheduler's own measurement of that host.
    pub agents: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            owner_load: 0.6,
            sessions: true,
            idle_after: Duration::from_secs(10),
            busy_after: Duration::ZERO,
            signals: true,
            max_guests: 0,
            min_free_mb: 64,
            interval: Duration::from_millis(250),
            priority: HashMap::new(),
            ckpt_interval: Duration::from_secs(30),
            agents: false,
        }
    }
}

/// Longest policy file read (a policy is a few lines).
const MAX_FILE: u64 = 64 * 1024;

impl Policy {
    pub fn load(path: &std::path::Path) -> Result<Policy, SchedError> {
        use std::io::Read;
        let f = std::fs::File::open(path).map_err(|e| SchedError::Policy {
            file: path.display().to_string(),
            line: 0,
            why: e.to_string(),
        })?;
        let mut text = String::new();
        f.take(MAX_FILE)
            .read_to_string(&mut text)
            .map_err(|e| SchedError::Policy {
                file: path.display().to_string(),
                line: 0,
                why: e.to_string(),
            })?;
        Policy::parse(&text).map_err(|(line, why)| SchedError::Policy {
            file: path.display().to_string(),
            line,
            why,
        })
    }

    /// Parses a policy; the error names the line (1-based) and what is wrong with it.
    pub fn parse(text: &str) -> Result<Policy, (usize, String)> {
        let mut p = Policy::default();
        for (i, raw) in text.lines().enumerate() {
            let n = i + 1;
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let w: Vec<&str> = line.split_whitespace().collect();
            let num = |s: &str| s.parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0);
            let bad = |what: &str| (n, format!("{what}: {line:?}"));
            let onoff = |s: &str| match s {
                "on" | "yes" | "true" | "1" => Some(true),
                "off" | "no" | "false" | "0" => Some(false),
                _ => None,
            };
            match (w[0], w.len()) {
                ("owner_load", 2) => p.owner_load = num(w[1]).ok_or_else(|| bad("not a load"))?,
                ("sessions", 2) => p.sessions = onoff(w[1]).ok_or_else(|| bad("on or off"))?,
                ("agents", 2) => p.agents = onoff(w[1]).ok_or_else(|| bad("on or off"))?,
                ("signals", 2) => p.signals = onoff(w[1]).ok_or_else(|| bad("on or off"))?,
                ("idle_after", 2) => {
                    p.idle_after =
                        Duration::from_secs_f64(num(w[1]).filter(|v| *v <= 86400.0).ok_or_else(|| bad("seconds"))?)
                }
                ("busy_after", 2) => {
                    p.busy_after =
                        Duration::from_secs_f64(num(w[1]).filter(|v| *v <= 86400.0).ok_or_else(|| bad("seconds"))?)
                }
                ("max_guests", 2) => p.max_guests = w[1].parse().map_err(|_| bad("a count"))?,
                ("min_free_mb", 2) => p.min_free_mb = w[1].parse().map_err(|_| bad("megabytes"))?,
                ("interval_ms", 2) => {
                    let ms: u64 = w[1].parse().map_err(|_| bad("milliseconds"))?;
                    p.interval = Duration::from_millis(ms.clamp(20, 60_000));
                }
                ("ckpt_interval", 2) => {
                    p.ckpt_interval =
                        Duration::from_secs_f64(num(w[1]).filter(|v| *v <= 86400.0).ok_or_else(|| bad("seconds"))?)
                }
                ("priority", 3) => {
                    let v: i32 = w[2].parse().map_err(|_| bad("an integer priority"))?;
                    p.priority.insert(w[1].to_string(), v);
                }
                _ => return Err(bad("unknown setting")),
            }
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_need_no_file() {
        assert_eq!(Policy::parse("").unwrap(), Policy::default());
    }

    #[test]
    fn every_key_and_a_comment() {
        let p = Policy::parse(
            "owner_load 1.5 # more\nsessions off\nidle_after 2\nbusy_after 0.5\nsignals off\n\
             max_guests 3\nmin_free_mb 10\ninterval_ms 100\npriority h1 7\nckpt_interval 2.5\n",
        )
        .unwrap();
        assert_eq!(p.owner_load, 1.5);
        assert!(!p.sessions && !p.signals);
        assert_eq!(p.idle_after, Duration::from_secs(2));
        assert_eq!(p.busy_after, Duration::from_millis(500));
        assert_eq!((p.max_guests, p.min_free_mb), (3, 10));
        assert_eq!(p.interval, Duration::from_millis(100));
        assert_eq!(p.priority["h1"], 7);
        assert_eq!(p.ckpt_interval, Duration::from_millis(2500));
    }

    #[test]
    fn errors_name_the_line() {
        assert_eq!(Policy::parse("sessions on\nowner_load -1\n").unwrap_err().0, 2);
        assert_eq!(Policy::parse("frobnicate 1\n").unwrap_err().0, 1);
        assert_eq!(Policy::parse("priority h1\n").unwrap_err().0, 1);
    }
}
