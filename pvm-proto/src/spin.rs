//! The spin-then-block policy shared by the daemon and the library (sans-IO: the callers read
//! the environment and `/proc/loadavg`, this module decides).
//!
//! A process that expects an answer soon polls for it for a short window before it sleeps: on a
//! virtual machine whose vCPUs halt when idle, waking a sleeping process costs tens of µs, more
//! than a small message's whole round trip on a busy CPU (docs/bench-daemon.md,
//! "Spin-then-block"). Spinning is only worth it while there is a CPU to spare: with more
//! runnable tasks than CPUs it takes the CPU another task needs, so it is skipped then.

use std::time::Duration;

/// The spin window unless configured.
pub const DEFAULT_WINDOW: Duration = Duration::from_micros(50);

/// The longest window accepted (a longer setting is cut to this).
pub const MAX_WINDOW: Duration = Duration::from_millis(10);

/// The window from a setting in µs (`None`: not set, the default); `Ok(None)` turns spinning
/// off (0); a setting that is not a number is an error for the caller to report.
pub fn window(setting: Option<&str>) -> Result<Option<Duration>, String> {
    match setting {
        None => Ok(Some(DEFAULT_WINDOW)),
        Some(s) => match s.trim().parse::<u64>() {
            Ok(0) => Ok(None),
            Ok(us) => Ok(Some(Duration::from_micros(us).min(MAX_WINDOW))),
            Err(_) => Err(format!("spin window {s:?} is not a number of µs: spinning off")),
        },
    }
}

/// How fast a peer is assumed to take in and answer a large message, for [`window_after`]:
/// bytes per µs (2 GB/s: one copy out of the sender's memory and one into the program's, here).
pub const ANSWER_RATE: usize = 2000;

/// Longest window [`window_after`] makes.
pub const AFTER_SEND_CAP: Duration = Duration::from_millis(1);

/// The window of a wait that follows sending a message of `sent` bytes: the answer to a large
/// message cannot come before the peer has taken it in, so the configured window `base` is
/// lengthened by that time (up to [`AFTER_SEND_CAP`], never shortened): waking from a sleep in
/// the meantime costs more than the rest of the wait (docs/benchmarks.md).
pub fn window_after(base: Duration, sent: usize) -> Duration {
    let extra = Duration::from_micros((sent / ANSWER_RATE) as u64);
    base.max((base + extra).min(AFTER_SEND_CAP))
}

/// The window of a wait that follows sending a message of `sent` bytes to a task of this host
/// ([`window_after`]), or to a task of another host (`off_host`): none then. Its answer crosses
/// two daemons and the network (70–120 µs here), longer than the window, and while the task
/// spins it holds a CPU that those daemons need: across two namespace hosts the 8-byte round
/// trip of two pvm-rs tasks took 91 µs with the spin and 71 µs without (docs/bench-daemon.md).
///
/// None as well after a message of [`NO_SPIN_AFTER`] bytes or more: its answer cannot come
/// within the longest window, and a pvm-rs receiver copies such a message on two threads
/// (libpvm3-shim `pcopy.rs`): a sender spinning meanwhile takes one of the two CPUs from it
/// (16 MB direct-route round trip 11.0 ms with the spin, 8.9 without, docs/bench-daemon.md).
pub fn window_after_send(base: Duration, sent: usize, off_host: bool) -> Option<Duration> {
    (!off_host && sent < NO_SPIN_AFTER).then(|| window_after(base, sent))
}

/// Messages from this size on are not followed by a spin (see [`window_after_send`]): the
/// answer takes longer than [`AFTER_SEND_CAP`] at [`ANSWER_RATE`].
pub const NO_SPIN_AFTER: usize = ANSWER_RATE * AFTER_SEND_CAP.as_micros() as usize;

/// Runnable tasks now, from the text of /proc/loadavg ("0.39 0.81 0.93 3/345 12345": 3).
pub fn runnable(loadavg: &str) -> Option<u32> {
    loadavg.split_whitespace().nth(3)?.split_once('/')?.0.parse().ok()
}

/// Whether a process may spin now: `runnable` counts the spinner itself (it is running) and
/// whatever it just woke; unknown load counts as not loaded.
pub fn may_spin(runnable: Option<u32>, cpus: u32) -> bool {
    !matches!(runnable, Some(r) if r > cpus)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_spin_after_a_message_to_another_host() {
        let base = DEFAULT_WINDOW;
        assert_eq!(window_after_send(base, 8, true), None);
        assert_eq!(window_after_send(base, 1 << 20, true), None);
        assert_eq!(window_after_send(base, 8, false), Some(base));
        assert_eq!(
            window_after_send(base, 1 << 20, false),
            Some(window_after(base, 1 << 20))
        );
        assert_eq!(window_after_send(base, NO_SPIN_AFTER - 1, false), Some(AFTER_SEND_CAP));
        assert_eq!(window_after_send(base, NO_SPIN_AFTER, false), None, "large: no spin");
        assert_eq!(window_after_send(base, 16 << 20, false), None);
    }

    #[test]
    fn window_settings() {
        assert_eq!(window(None), Ok(Some(DEFAULT_WINDOW)));
        assert_eq!(window(Some("0")), Ok(None));
        assert_eq!(window(Some(" 120 ")), Ok(Some(Duration::from_micros(120))));
        assert_eq!(window(Some("999999")), Ok(Some(MAX_WINDOW)));
        assert!(window(Some("fast")).is_err());
        assert!(window(Some("-5")).is_err());
    }

    #[test]
    fn the_window_after_a_large_message_is_longer_and_bounded() {
        let base = DEFAULT_WINDOW;
        assert_eq!(window_after(base, 8), base, "small messages: the base window");
        assert_eq!(window_after(base, 1 << 20), base + Duration::from_micros(524));
        assert_eq!(window_after(base, 64 << 20), AFTER_SEND_CAP);
        let long = Duration::from_millis(5);
        assert_eq!(window_after(long, 1 << 20), long, "a longer setting is kept");
    }

    #[test]
    fn runnable_from_loadavg() {
        assert_eq!(runnable("0.39 0.81 0.93 3/345 12345\n"), Some(3));
        assert_eq!(runnable("0.39 0.81 0.93"), None);
        assert_eq!(runnable("0.39 0.81 0.93 x/345 1"), None);
        assert_eq!(runnable(""), None);
    }

    #[test]
    fn spins_only_with_a_cpu_to_spare() {
        assert!(may_spin(Some(2), 2));
        assert!(!may_spin(Some(3), 2));
        assert!(may_spin(None, 2));
    }
}
