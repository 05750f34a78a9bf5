//! The park signal (docs/migration.md §4.1): a task computing outside the library parks
//! within milliseconds of a request instead of at its next PVM call.
//!
//! Design, and why not a park inside the signal handler: a handler may interrupt the program
//! anywhere, in `malloc` holding the allocator lock included, and the park (read the socket
//! into the receive queues, TM_PARK, close, wait, reconnect) allocates and takes the library
//! lock. So the handler only writes one byte to a pipe (async-signal-safe, errno kept), and a
//! dedicated thread, `pvm-park`, started at enrolment and otherwise asleep in `read` on that
//! pipe, does the park under the library lock like any call: the lock *is* the "inside the
//! library" flag of the export boundary, so the park thread never runs while a call is in
//! progress (that call parks itself at its safe point, the old path) and a call made while the
//! task is parked waits for the reconnect. The computing thread keeps running meanwhile; the
//! checkpointer freezes every thread, and its memory needs no consistency with the library's:
//! it only shares the library state through calls, which wait on the lock. The parked thread
//! waits in `nanosleep` (the resume ticket poll), which CRIU restarts.
//!
//! The signal: SIGUSR2, or `PVM_PARK_SIGNAL` (a number, `USR1`, `USR2`, `RTMIN+n`; `off` for
//! none). It is installed only if its disposition is still the default when the task enrols:
//! a program that set it (handler or ignore) keeps it, the library announces no signal and the
//! pvmd never sends one (such a task parks at its next call, as before). A program that
//! installs its own handler *after* enrolment receives the park signal itself; to avoid that,
//! pick another with PVM_PARK_SIGNAL. The library announces the signal in TM_XCAPS version 2
//! (feature bit PARK_SIGNAL, then `int signal`); only then does a pvmd send it, and only to a
//! pid the kernel confirmed as the task's.
//!
//! Costs of a process-directed signal: a slow system call of the program (sleep, poll, select,
//! a read on a terminal) may return early with EINTR once per park; SA_RESTART restarts the
//! others. The park thread is invisible to the program but exists in the process.

use crate::core::with_r;
use std::os::raw::c_int;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

/// The installed park signal, 0 when none.
static SIG: AtomicI32 = AtomicI32::new(0);
/// The write end of the wake-up pipe (non-blocking; -1 before installation).
static WAKE: AtomicI32 = AtomicI32::new(-1);
static INSTALL: Once = Once::new();
/// `park::parks_over()` when the last signal came. The signal is answered by any park begun
/// after that many were over: one in progress when it came (the late signal of a park a call
/// began at its own safe point, or of the park thread's own park: the thread neither takes the
/// lock nor reads the socket for it afterwards) or one begun since. See [`answered`].
static AT_SIGNAL: AtomicU64 = AtomicU64::new(0);
/// How long the park thread waits for the pvmd's TC_MARK after the signal (the pvmd sends the
/// mark first, but the signal can overtake it on the way).
const MARK_WAIT: Duration = Duration::from_millis(500);

/// The signal `PVM_PARK_SIGNAL` names (SIGUSR2 when unset), None for `off` or nonsense.
fn wanted() -> Option<c_int> {
    parse(&std::env::var("PVM_PARK_SIGNAL").unwrap_or_default())
}

/// The signal a `PVM_PARK_SIGNAL` value names; only SIGUSR1, SIGUSR2 and real-time signals.
fn parse(v: &str) -> Option<c_int> {
    let v = v.trim();
    let s = match v.to_ascii_uppercase().trim_start_matches("SIG") {
        "" | "USR2" => libc::SIGUSR2,
        "USR1" => libc::SIGUSR1,
        "OFF" | "NONE" | "0" => return None,
        x if x.starts_with("RTMIN+") => libc::SIGRTMIN().checked_add(x[6..].parse::<c_int>().ok()?)?,
        "RTMIN" => libc::SIGRTMIN(),
        x => x.parse().ok()?,
    };
    let ok = s == libc::SIGUSR1 || s == libc::SIGUSR2 || (libc::SIGRTMIN()..=libc::SIGRTMAX()).contains(&s);
    ok.then_some(s)
}

extern "C" fn on_signal(_sig: c_int) {
    // Only async-signal-safe work: a lock-free atomic store, one write(2) on a pipe, errno
    // preserved. A full pipe
    // (EAGAIN) already holds a wake-up.
    // SAFETY: __errno_location is the calling thread's errno; write on a raw fd and a static
    // buffer.
    unsafe {
        let e = *libc::__errno_location();
        AT_SIGNAL.store(crate::park::parks_over(), Ordering::SeqCst);
        let fd = WAKE.load(Ordering::Relaxed);
        if fd >= 0 {
            let b = [1u8];
            let _ = libc::write(fd, b.as_ptr().cast(), 1);
        }
        *libc::__errno_location() = e;
    }
}

/// Installs the park signal once per process (hook in `park::after_conn2`, pvmd-rs daemons
/// only) and returns it, or None (disabled, taken by the program, or no thread/pipe).
pub fn install() -> Option<c_int> {
    INSTALL.call_once(|| {
        let Some(sig) = wanted() else { return };
        // SAFETY: plain libc calls on locals; the handler only touches atomics and a pipe.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut old) != 0 || old.sa_sigaction != libc::SIG_DFL {
                return; // the program's: leave it
            }
            let mut fds = [-1 as c_int; 2];
            if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
                return;
            }
            let fl = libc::fcntl(fds[1], libc::F_GETFL);
            libc::fcntl(fds[1], libc::F_SETFL, fl | libc::O_NONBLOCK);
            let rd = fds[0];
            let spawned = std::thread::Builder::new()
                .name("pvm-park".into())
                .stack_size(256 * 1024)
                .spawn(move || park_thread(rd));
            if spawned.is_err() {
                libc::close(fds[0]);
                libc::close(fds[1]);
                return;
            }
            WAKE.store(fds[1], Ordering::Relaxed);
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(c_int) as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            if libc::sigaction(sig, &sa, std::ptr::null_mut()) == 0 {
                SIG.store(sig, Ordering::Relaxed);
            }
        }
    });
    let s = SIG.load(Ordering::Relaxed);
    (s > 0).then_some(s)
}

/// The `pvm-park` thread: sleeps in read(2) until the handler writes, then parks the task
/// if the pvmd asked for it.
fn park_thread(rd: c_int) {
    let mut b = [0u8; 64];
    loop {
        // SAFETY: read into a local buffer of the given length.
        let n = unsafe { libc::read(rd, b.as_mut_ptr().cast(), b.len()) };
        if n == 0 {
            return;
        }
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        let _ = std::panic::catch_unwind(park_now);
    }
}

/// Under the library lock (so never inside a call): read what the pvmd sent until its
/// TC_MARK, which makes `pump` run the park (park.rs `safe_point`), or until MARK_WAIT.
fn park_now() {
    let over_at_signal = AT_SIGNAL.load(Ordering::SeqCst);
    let done = || answered(over_at_signal, crate::park::parks());
    if done() {
        return; // without the lock: the signal came during a park (or one began since)
    }
    let t0 = Instant::now();
    let _ = with_r(|l| {
        if l.pvmd.is_none() || l.mytid <= 0 {
            return Ok(()); // not enrolled, or gone
        }
        while !done() && t0.elapsed() < MARK_WAIT {
            l.pump(Some(Duration::from_millis(20)))?;
        }
        Ok(())
    });
}

/// Whether a park signal that came when `over_at_signal` parks were over is answered, now that
/// `begun` parks have begun: a park begun and not over when it came (`begun` was already
/// larger then), or one begun since. Parks are counted begun before anything else and over
/// once the task runs again, so neither a late signal nor a new request falls between.
fn answered(over_at_signal: u64, begun: u64) -> bool {
    begun > over_at_signal
}

#[cfg(test)]
mod tests {
    use super::{answered, parse};
    use crate::park::ParkInProgress;

    #[test]
    fn a_signal_during_a_park_is_answered_by_it() {
        // No park yet: the signal waits for one.
        assert!(!answered(0, 0));
        // A park in progress (1 begun, 0 over) when it came: answered at once.
        assert!(answered(0, 1));
        // The park that answered the previous signal is over; a signal now is a new request.
        assert!(!answered(1, 1));
        // ... answered by the next park.
        assert!(answered(1, 2));
    }

    #[test]
    fn the_handler_bookkeeping_follows_the_real_counters() {
        // What the handler stores is `parks_over()`; what the thread compares is `parks()`.
        // A signal during the park a call is running (the late signal): answered.
        let mut p = ParkInProgress::begin();
        let at = crate::park::parks_over();
        assert!(answered(at, crate::park::parks()), "during a park");
        p.over();
        assert!(
            answered(at, crate::park::parks()),
            "still answered once the park is over"
        );
        // A signal after the park is over: a new request, not answered until the next park.
        let at = crate::park::parks_over();
        assert!(!answered(at, crate::park::parks()), "after the park");
        drop(p); // over once only
        assert!(!answered(crate::park::parks_over(), crate::park::parks()));
        let q = ParkInProgress::begin();
        assert!(answered(at, crate::park::parks()), "by the next park");
        drop(q);
        assert_eq!(crate::park::parks(), crate::park::parks_over());
    }

    #[test]
    fn only_user_and_realtime_signals_are_accepted() {
        assert_eq!(parse(""), Some(libc::SIGUSR2));
        assert_eq!(parse("usr1"), Some(libc::SIGUSR1));
        assert_eq!(parse("SIGUSR2"), Some(libc::SIGUSR2));
        assert_eq!(parse("RTMIN+3"), Some(libc::SIGRTMIN() + 3));
        assert_eq!(parse(&libc::SIGRTMAX().to_string()), Some(libc::SIGRTMAX()));
        for off in ["off", "none", "0"] {
            assert_eq!(parse(off), None, "{off}");
        }
        for bad in ["9", "15", "KILL", "RTMIN+1000", "RTMIN+-99", "RTMIN+2147483647", "x"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
