//! Spin-then-block for the library's waits: before a wait for input sleeps in poll(2), it polls
//! without sleeping for a short window (`PVM_SPIN_US` µs, default 50, 0 = off), so that an
//! answer that comes soon needs no wake-up of a halted vCPU (the policy and why:
//! `pvm_proto::spin`). Skipped while the machine has more runnable tasks than CPUs (looked up in
//! /proc/loadavg at most once a millisecond).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use pvm_proto::spin;

/// How long a look at the load stays good.
const LOAD_FRESH: Duration = Duration::from_millis(1);

static WINDOW: OnceLock<Option<Duration>> = OnceLock::new();
static BASE: OnceLock<Instant> = OnceLock::new();
/// When the load was last looked at (ns since BASE, +1 so that 0 means never) and what it said.
static LOOKED: AtomicU64 = AtomicU64::new(0);
static FREE: AtomicBool = AtomicBool::new(true);

fn configured() -> Option<Duration> {
    *WINDOW.get_or_init(|| match spin::window(std::env::var("PVM_SPIN_US").ok().as_deref()) {
        Ok(w) => w,
        Err(e) => {
            crate::core::logerror(&format!("PVM_SPIN_US: {e}\n"));
            None
        }
    })
}

fn cpu_to_spare() -> bool {
    let now = BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64 + 1;
    let last = LOOKED.load(Ordering::Relaxed);
    if last != 0 && now - last < LOAD_FRESH.as_nanos() as u64 {
        return FREE.load(Ordering::Relaxed);
    }
    // Opened for each look: a descriptor kept open could be closed under us by a program that
    // closes the descriptors it does not know of, and the number reused.
    let runnable = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| spin::runnable(&t));
    static CPUS: OnceLock<u32> = OnceLock::new();
    let cpus = *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()) as u32);
    let free = spin::may_spin(runnable, cpus);
    FREE.store(free, Ordering::Relaxed);
    LOOKED.store(now, Ordering::Relaxed);
    free
}

/// Body bytes of the last message this task sent.
static LAST_SENT: AtomicUsize = AtomicUsize::new(0);
/// Whether that message went to a task of another host.
static LAST_OFF_HOST: AtomicBool = AtomicBool::new(false);

/// Notes a user message just sent: the bytes that lengthen the window, and whether it went to
/// another host (see [`window`]).
pub fn sent(bytes: usize, off_host: bool) {
    LAST_SENT.store(bytes, Ordering::Relaxed);
    LAST_OFF_HOST.store(off_host, Ordering::Relaxed);
}

/// How long the wait about to start may spin (None: not now): longer after a large message was
/// sent, not at all after a message to another host (`pvm_proto::spin::window_after_send`).
pub fn window() -> Option<Duration> {
    let w = configured()?;
    let w = spin::window_after_send(
        w,
        LAST_SENT.load(Ordering::Relaxed),
        LAST_OFF_HOST.load(Ordering::Relaxed),
    )?;
    cpu_to_spare().then_some(w)
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;
    use std::time::{Duration, Instant};

    /// A wait that spins first still lasts its whole timeout when nothing comes, and still
    /// sees input that is already there or comes during the spin.
    #[test]
    fn a_spinning_wait_keeps_its_timeout_and_sees_input() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let t = Instant::now();
        let r = crate::net::poll_fds(&[(a.as_raw_fd(), false)], Some(Duration::from_millis(5)));
        assert!(!r[0].0, "nothing to read");
        assert!(t.elapsed() >= Duration::from_millis(5), "waited {:?}", t.elapsed());
        b.write_all(b"x").unwrap();
        let r = crate::net::poll_fds(&[(a.as_raw_fd(), false)], Some(Duration::from_secs(5)));
        assert!(r[0].0, "input seen");
        let r = crate::net::poll_fds(&[(a.as_raw_fd(), false)], None);
        assert!(r[0].0, "input seen without a timeout");
    }
}
