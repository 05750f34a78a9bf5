//! `pvm-sched agent MS`: the measurement agent of one host. The scheduler measures the machine
//! it runs on; on a cluster of workstations every other host needs its own measurement. With
//! `agents on` in the policy the scheduler spawns one agent per host (a PVM task, PvmTaskHost),
//! which reads that host's /proc/stat, /proc/loadavg, /proc/meminfo and utmp every MS
//! milliseconds and sends the numbers to the scheduler (TAG_AGENT); the scheduler prefers a
//! fresh report to its own measurement for that host. CPU time of the PVM tasks on the host is
//! not counted as owner load. The agent ends when the scheduler does (checked with pvm_pstat:
//! a notification would be asked of the resource manager, the scheduler itself).

use std::time::Duration;

use crate::error::SchedError;
use crate::ffi;
use crate::load::{Meter, Sample};

/// A report: `string host name; string "owner_load free_mb sessions"`.
pub const TAG_AGENT: i32 = 0x5c5c_0031;
/// Host part of a tid (PVM's TIDHOST).
const TIDHOST: i32 = 0x3ffc_0000;

/// Parses the numbers of a report.
pub fn parse_report(text: &str) -> Option<Sample> {
    let mut it = text.split_whitespace();
    let owner_load: f64 = it.next()?.parse().ok().filter(|v: &f64| v.is_finite() && *v >= 0.0)?;
    let free_mb: u64 = it.next()?.parse().ok()?;
    let sessions: u32 = it.next()?.parse().ok()?;
    Some(Sample {
        owner_load,
        free_mb,
        sessions,
        owner_busy: None,
    })
}

pub fn run(every: Duration) -> Result<(), SchedError> {
    let me = ffi::mytid();
    if me < 0 {
        return Err(SchedError::Enrol(ffi::errtext(me)));
    }
    ffi::setopt(ffi::PVM_AUTO_ERR, 0);
    let parent = ffi::parent();
    if parent <= 0 {
        ffi::exit();
        return Err(SchedError::Usage("pvm-sched agent is started by the scheduler".into()));
    }
    let dtid = me & TIDHOST;
    let name = ffi::config()
        .ok()
        .and_then(|(h, _)| h.into_iter().find(|h| h.tid == dtid).map(|h| h.name))
        .unwrap_or_else(|| format!("t{dtid:x}"));
    let mut meter = Meter::default();
    let usec = every.as_micros().clamp(20_000, 60_000_000) as i64;
    loop {
        // PVM tasks here (the scheduler's guests and any other): their CPU is not the owner's.
        let pids: Vec<i32> = ffi::tasks(dtid)
            .map(|v| {
                v.into_iter()
                    .filter(|t| t.tid != me && t.pid > 0)
                    .map(|t| t.pid)
                    .collect()
            })
            .unwrap_or_default();
        let s = meter.sample(&pids);
        ffi::initsend();
        ffi::pkstr(&name);
        ffi::pkstr(&format!("{:.3} {} {}", s.owner_load, s.free_mb, s.sessions));
        if ffi::send(parent, TAG_AGENT) < 0 || ffi::pstat(parent) < 0 {
            break;
        }
        if let Some(ffi::Msg { buf: b, .. }) = ffi::trecv(-1, -1, usec) {
            ffi::freebuf(b);
        }
    }
    ffi::exit();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_parse_and_bad_ones_do_not() {
        let s = parse_report("0.250 3900 1").unwrap();
        assert_eq!((s.owner_load, s.free_mb, s.sessions), (0.25, 3900, 1));
        assert!(parse_report("").is_none());
        assert!(parse_report("NaN 1 1").is_none());
        assert!(parse_report("-1 1 1").is_none());
        assert!(parse_report("1 x 1").is_none());
    }
}
