//! Spin-then-block: after the daemon handled something, its runtime keeps polling its sockets
//! (`epoll_wait` with a zero timeout) for a short window before it sleeps again.
//!
//! Why: on a virtual machine whose vCPUs idle, a small message's round trip through the daemon
//! is four wake-ups (task -> pvmd -> task -> pvmd -> task), and each wake-up of a sleeping
//! process on a halted vCPU goes through the hypervisor (tens of µs here; see
//! docs/bench-daemon.md "Spin-then-block"). A daemon that is still polling when the answer
//! comes needs no wake-up for it, and the vCPU it keeps busy does not halt, so the task it
//! writes to next is woken cheaply as well. Measured here with the machine idle: the 8-byte
//! daemon-route round trip falls from ~95 µs (legacy ~93) to ~45 µs, for ~10 µs more daemon CPU
//! per round trip.
//!
//! Bounds: the daemon spins only for `pvm_proto::spin::DEFAULT_WINDOW` after its last event
//! (`PVMD_SPIN_US` sets it, 0 turns spinning off), never while the machine has more runnable
//! tasks than CPUs (the fourth field of `/proc/loadavg`, read once per spin: on a busy machine
//! the spin would take a CPU from a task and spend the daemon's share of the scheduler; it then
//! sleeps as before for [`LOADED_PAUSE`]), and an idle daemon does not spin at all.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use pvm_proto::spin;
use tokio::sync::Notify;

/// After finding the machine loaded, how long the daemon does not try to spin again.
const LOADED_PAUSE: Duration = Duration::from_millis(1);

static BASE: OnceLock<Instant> = OnceLock::new();
/// When the daemon last handled an event (ns since `BASE`).
static LAST: AtomicU64 = AtomicU64::new(0);
/// The spinner sleeps and waits for [`touch`].
static ASLEEP: AtomicBool = AtomicBool::new(false);
static WAKE: OnceLock<Notify> = OnceLock::new();

fn now_ns() -> u64 {
    BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

fn wake() -> &'static Notify {
    WAKE.get_or_init(Notify::new)
}

/// The daemon handled an event: the spinner polls for one more window.
pub fn touch() {
    LAST.store(now_ns(), Ordering::Relaxed);
    if ASLEEP.swap(false, Ordering::Relaxed) {
        wake().notify_one();
    }
}

/// A long message is streaming through the daemon: no spinning until the next [`touch`].
///
/// Why: while a message of many fragments passes, the sender and the receiver each keep a CPU
/// busy; a spinning daemon takes the CPU one of them needs and reads each fragment the moment it
/// lands, one system call per fragment. Measured with the legacy library, 1 MB ping-pong: the
/// round trip went to ~6 ms in about half the runs with the spin on through the message, never
/// without it (docs/bench-daemon.md, "Spin-then-block and long messages").
pub fn rest() {
    LAST.store(0, Ordering::Relaxed);
}

/// Runnable tasks on the machine now (`pvm_proto::spin::runnable`). The file is opened for
/// each look (at most one a millisecond): a descriptor kept open would count as one the daemon
/// leaked.
fn runnable() -> Option<u32> {
    spin::runnable(&std::fs::read_to_string("/proc/loadavg").ok()?)
}

/// Whether the spinner should be polling at `now`: within `window` of the last event and not
/// in a pause after finding the machine loaded.
fn due(now: u64, quiet_until: u64, window: u64) -> bool {
    now >= quiet_until && now.saturating_sub(LAST.load(Ordering::Relaxed)) < window
}

/// Runs for the daemon's lifetime on its runtime (a task of the current-thread runtime: each
/// `yield_now` lets the runtime poll its sockets without blocking and run what became ready).
pub async fn spinner(window: Duration) {
    let window = window.as_nanos() as u64;
    let pause = LOADED_PAUSE.as_nanos() as u64;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    // No spin before this time (the machine was found loaded).
    let mut quiet_until = 0u64;
    // The load was looked at for the current run of spinning.
    let mut checked = false;
    loop {
        let now = now_ns();
        let spin = due(now, quiet_until, window);
        if spin && !checked {
            checked = true;
            // An unreadable /proc counts as not loaded.
            if !spin::may_spin(runnable(), cpus) {
                quiet_until = now + pause;
                continue;
            }
        }
        if spin {
            tokio::task::yield_now().await;
            continue;
        }
        checked = false;
        ASLEEP.store(true, Ordering::Relaxed);
        // A touch() between the look above and this store did not see ASLEEP and notified
        // nobody: look again before sleeping.
        if due(now_ns(), quiet_until, window) {
            ASLEEP.store(false, Ordering::Relaxed);
            continue;
        }
        wake().notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spinner sleeps when nothing happens and spins again after `touch`. (Other tests'
    /// relays may touch it too: it must fall asleep again within the bound, not at once.)
    #[test]
    fn spinner_sleeps_until_touched() {
        async fn falls_asleep() -> bool {
            for _ in 0..200 {
                tokio::time::sleep(Duration::from_millis(1)).await;
                if ASLEEP.load(Ordering::Relaxed) {
                    return true;
                }
            }
            false
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let h = tokio::spawn(spinner(Duration::from_micros(200)));
            assert!(falls_asleep().await, "the spinner sleeps once the window has passed");
            touch();
            assert!(!ASLEEP.load(Ordering::Relaxed), "touch wakes it");
            assert!(falls_asleep().await, "and it sleeps again after the window");
            h.abort();
        });
    }
}
