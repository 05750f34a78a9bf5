//! Large copies of the library: streamed, and split over two threads.
//!
//! Why: a large message between two pvm-rs tasks of one host is copied three times even with
//! the shared arena (pack into the sender's buffer, the receiver's copy out of the sender's
//! arena into its buffer, unpack into the program's array). glibc's `memcpy` writes through the
//! cache at these sizes on this machine, and copying a received body in 128 KiB steps, read
//! back from the cache, ran at a third of the memory's speed here: a 1 MB direct-route round
//! trip took 1.1–1.5 ms on this host against 0.4 ms on the previous one. Stores that bypass the
//! cache ([`stream_copy`]) move 16 MB in 0.9 ms against glibc's 1.6, and a receive that reads
//! the sender's bytes once and streams them into its buffer and the program's array at once
//! ([`stream_copy2`]) does in 1.4 ms what two copies did in 2.5 (`bench/ntcopy.c`). And each
//! copy is bound by what one core moves while the other idles (in a ping-pong the peer waits):
//! two threads take the 16 MB streamed copy to 0.7–0.8 ms. docs/bench-daemon.md, "Large copies
//! streamed and on two threads", has the figures.
//!
//! How: unpacks of at least [`STREAM_MIN`] bytes and packs of at least [`STREAM_PACK_MIN`]
//! stream (a pack's destination is the sender's own buffer: up to a couple of megabytes it is
//! faster written through the cache, and the receiver's copy reads it as fast); [`split`] runs a job over the two
//! halves of a range of at least [`PAR_MIN`] bytes, the second half on a short-lived helper
//! thread (scoped: it ends before the call returns, so nothing of it outlives the library call
//! that made it: no thread at fork, park or checkpoint time) with every signal blocked, so that
//! a signal for the task still lands on the program's own thread as before. Spawning costs some
//! tens of microseconds, which is why only copies of at least [`PAR_MIN`] bytes are split. If
//! the thread cannot be made (a limit on processes, a seccomp policy), the calling thread does
//! the whole job.
//!
//! `PVM_STREAM_MIN=<bytes>`, `PVM_STREAM_PACK_MIN=<bytes>` and `PVM_PAR_COPY_MIN=<bytes>` set
//! the thresholds; `0` turns any of them off. With `PVM_PCOPY_TRACE=<file>`, each pack and unpack copied here appends
//! `t<me> pcopy-pack|pcopy-unpack <bytes> <threads>` ([`trace`]).

use std::ops::Range;
use std::sync::OnceLock;

/// Copies smaller than this stay on one thread: below it the helper's start is not paid back.
pub const PAR_MIN: usize = 2 << 20;

/// The two halves are cut at a multiple of this (whole cache lines and pages for each thread).
const ALIGN: usize = 4096;

/// A size threshold from the environment variable `name`: its value in bytes, `default` when it
/// is unset or not a number, None (off) when it is 0.
fn setting(name: &str, default: usize) -> Option<usize> {
    match std::env::var(name).ok().and_then(|v| v.trim().parse::<usize>().ok()) {
        Some(0) => None,
        Some(n) => Some(n),
        None => Some(default),
    }
}

/// The splitting threshold in force (None: splitting is off).
fn threshold() -> Option<usize> {
    static T: OnceLock<Option<usize>> = OnceLock::new();
    *T.get_or_init(|| setting("PVM_PAR_COPY_MIN", PAR_MIN))
}

/// Copies of at least this many bytes are streamed ([`stream_copy`]), on one thread below
/// [`PAR_MIN`]: the size from which a message between two pvm-rs tasks of a host goes by
/// descriptor (`vmread::VMREAD_MIN`).
pub const STREAM_MIN: usize = 256 << 10;

/// True if a copy of `n` bytes is streamed (`PVM_STREAM_MIN=<bytes>` sets the threshold, `0`
/// turns streaming off).
pub fn streams(n: usize) -> bool {
    static T: OnceLock<Option<usize>> = OnceLock::new();
    T.get_or_init(|| setting("PVM_STREAM_MIN", STREAM_MIN))
        .is_some_and(|t| n >= t)
}

/// Packs stream from this size ([`PAR_MIN`], where they are split too). A 1 MB pack streamed
/// ran at 22–26 GB/s here against 40–44 through the cache (`ci/bench-pack`), and the direct-route
/// 1 MB round trip was no slower without it (397–592 µs against 460–681, three A/B pairs); at
/// 16 MB streaming the pack saves 3 ms of an 11 ms round trip.
pub const STREAM_PACK_MIN: usize = PAR_MIN;

/// True if a pack copy of `n` bytes is streamed (`PVM_STREAM_PACK_MIN=<bytes>` sets the
/// threshold, `0` turns it off).
pub fn streams_pack(n: usize) -> bool {
    static T: OnceLock<Option<usize>> = OnceLock::new();
    T.get_or_init(|| setting("PVM_STREAM_PACK_MIN", STREAM_PACK_MIN))
        .is_some_and(|t| n >= t)
}

/// True if a copy of `n` bytes goes through this module (streamed, split, or both).
pub fn applies(n: usize) -> bool {
    streams(n) || worth(n)
}

/// True if a copy of `n` bytes is worth splitting.
pub fn worth(n: usize) -> bool {
    threshold().is_some_and(|t| n >= t)
}

/// Runs `job` over `0..n`: over its two halves at once, one on a helper thread, when [`worth`]
/// says so; otherwise (or when no thread can be made) over the whole range on this thread.
/// `job` must be correct for any split of the range into consecutive parts. Returns the number
/// of threads that ran it (1 or 2).
pub fn split<F: Fn(Range<usize>) + Sync>(n: usize, job: F) -> usize {
    let mid = (n / 2).div_ceil(ALIGN) * ALIGN;
    if !worth(n) || mid == 0 || mid >= n {
        job(0..n);
        return 1;
    }
    let job = &job;
    std::thread::scope(|s| {
        let helper = with_signals_blocked(|| {
            std::thread::Builder::new()
                .name("pvm-copy".into())
                .stack_size(64 << 10)
                .spawn_scoped(s, move || job(mid..n))
        });
        match helper {
            Ok(h) => {
                job(0..mid);
                // A panic in the helper's half (a bug) surfaces here, in the caller's boundary.
                if let Err(p) = h.join() {
                    std::panic::resume_unwind(p);
                }
                2
            }
            Err(_) => {
                job(0..n);
                1
            }
        }
    })
}

/// Copies `n` bytes from `src` to `dst` (not overlapping) with non-temporal stores on x86-64:
/// the destination is written to memory without being read into the cache first. glibc's
/// `memcpy` does not stream at these sizes on this machine (its threshold scales with the
/// last-level cache), and a streamed 16 MB copy took 0.92 ms against its 1.64
/// (`bench/ntcopy.c`). For the large copies of this module only: what is copied that large is
/// not read back soon enough to profit from the cache.
///
/// # Safety
/// `src..src+n` readable, `dst..dst+n` writable, not overlapping.
pub unsafe fn stream_copy(dst: *mut u8, src: *const u8, n: usize) {
    // SAFETY: forwarded from the caller.
    unsafe { stream(&[dst], src, n) }
}

/// As [`stream_copy`] into two destinations at once (the source read once), when they are
/// equally aligned; otherwise one after the other.
///
/// # Safety
/// As [`stream_copy`], for both destinations (which do not overlap each other either).
pub unsafe fn stream_copy2(d1: *mut u8, d2: *mut u8, src: *const u8, n: usize) {
    // SAFETY: forwarded from the caller.
    unsafe {
        if (d1 as usize ^ d2 as usize) % 16 == 0 {
            stream(&[d1, d2], src, n);
        } else {
            stream(&[d1], src, n);
            stream(&[d2], src, n);
        }
    }
}

/// Copies `n` bytes from `src` into each destination of `dsts`: streamed when `stream`
/// ([`stream_copy2`] for two, the source then read once), with `memcpy` otherwise. The one
/// copy step of this module's packs and unpacks.
///
/// # Safety
/// As [`stream_copy2`], for every destination.
pub unsafe fn copy_to(dsts: &[*mut u8], src: *const u8, n: usize, stream: bool) {
    // SAFETY: forwarded from the caller.
    unsafe {
        match (stream, dsts) {
            (true, &[d1, d2]) => stream_copy2(d1, d2, src, n),
            (true, _) => dsts.iter().for_each(|&d| stream_copy(d, src, n)),
            (false, _) => dsts.iter().for_each(|&d| std::ptr::copy_nonoverlapping(src, d, n)),
        }
    }
}

/// The copy loop of [`stream_copy`] / [`stream_copy2`]: every destination in `dsts` has the
/// same address modulo 16.
///
/// # Safety
/// As [`stream_copy2`].
#[cfg(target_arch = "x86_64")]
unsafe fn stream(dsts: &[*mut u8], src: *const u8, n: usize) {
    use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_sfence, _mm_stream_si128};
    // The bytes up to the destinations' first 16-byte boundary, ordinarily.
    let head = (dsts[0] as usize).wrapping_neg() % 16;
    let head = head.min(n);
    // SAFETY (whole block): every access stays inside `0..n` of `src` and of each destination
    // (the caller's ranges); stream stores go to 16-byte aligned addresses (`head` brings the
    // first destination there, and the others share its alignment); SSE2 is part of x86-64.
    unsafe {
        for &d in dsts {
            std::ptr::copy_nonoverlapping(src, d, head);
        }
        let mut i = head;
        while i + 64 <= n {
            let s = src.add(i) as *const __m128i;
            let v = [
                _mm_loadu_si128(s),
                _mm_loadu_si128(s.add(1)),
                _mm_loadu_si128(s.add(2)),
                _mm_loadu_si128(s.add(3)),
            ];
            for &d in dsts {
                let d = d.add(i) as *mut __m128i;
                for (k, x) in v.iter().enumerate() {
                    _mm_stream_si128(d.add(k), *x);
                }
            }
            i += 64;
        }
        for &d in dsts {
            std::ptr::copy_nonoverlapping(src.add(i), d.add(i), n - i);
        }
        // Streamed stores are weakly ordered: make them visible before whatever follows (the
        // join of the helper, the ack to the sender).
        _mm_sfence();
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn stream(dsts: &[*mut u8], src: *const u8, n: usize) {
    for &d in dsts {
        // SAFETY: as the caller's.
        unsafe { std::ptr::copy_nonoverlapping(src, d, n) };
    }
}

/// Copies `src` into `dst` (same length; `dst` may be uninitialised, it is all written), split
/// over two threads with streamed stores when it is worth it; returns the number of threads.
pub fn copy(dst: &mut [std::mem::MaybeUninit<u8>], src: &[u8]) -> usize {
    assert_eq!(dst.len(), src.len(), "pcopy::copy of unequal lengths");
    let (d, s) = (Addr(dst.as_mut_ptr() as *mut u8), Addr(src.as_ptr() as *mut u8));
    let stream = streams_pack(src.len());
    split(src.len(), |r| {
        // SAFETY: `r` lies inside both slices (equal lengths, checked above); the two jobs'
        // ranges do not overlap, so each writes only its own part of `dst`, which the caller
        // lends mutably for the whole call.
        unsafe { copy_to(&[d.get().add(r.start)], s.get().add(r.start), r.len(), stream) }
    })
}

/// With `PVM_PCOPY_TRACE=<file>`, notes a pack or unpack copied here (tests check with it that
/// the path was taken, and on how many threads).
pub fn trace(me: i32, what: &str, bytes: usize, threads: usize) {
    if let Some(path) = std::env::var_os("PVM_PCOPY_TRACE") {
        crate::vmread::append(&path, &format!("t{me:x} {what} {bytes} {threads}\n"));
    }
}

/// An address handed to the helper thread (raw pointers are not `Send`); whoever makes one
/// keeps what it points to alive and unshared until [`split`] returns.
#[derive(Clone, Copy)]
pub struct Addr(pub *mut u8);

// SAFETY: an `Addr` only carries the address; every use states why the bytes it reaches are
// valid and not touched by the other thread.
unsafe impl Send for Addr {}
// SAFETY: as above.
unsafe impl Sync for Addr {}

impl Addr {
    /// The address (a method, so that closures capture the whole `Addr`, which is `Sync`).
    pub fn get(self) -> *mut u8 {
        self.0
    }
}

/// Runs `f` with every signal blocked on this thread (a thread made inside inherits the mask),
/// restoring the mask after.
fn with_signals_blocked<T>(f: impl FnOnce() -> T) -> T {
    let mut all = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    let mut old = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigfillset initialises `all`; pthread_sigmask writes the previous mask into `old`
    // and is only restored from it when that call succeeded.
    unsafe {
        libc::sigfillset(all.as_mut_ptr());
        let blocked = libc::pthread_sigmask(libc::SIG_SETMASK, all.as_ptr(), old.as_mut_ptr()) == 0;
        let r = f();
        if blocked {
            libc::pthread_sigmask(libc::SIG_SETMASK, old.as_ptr(), std::ptr::null_mut());
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_covers_every_byte_once_at_any_size() {
        use std::sync::atomic::{AtomicU8, Ordering};
        for n in [
            0usize,
            1,
            4095,
            4096,
            PAR_MIN - 1,
            PAR_MIN,
            PAR_MIN + 1,
            PAR_MIN + 4097,
            3 * PAR_MIN + 5,
        ] {
            let seen: Vec<AtomicU8> = (0..n).map(|_| AtomicU8::new(0)).collect();
            let threads = split(n, |r| {
                for i in r {
                    seen[i].fetch_add(1, Ordering::Relaxed);
                }
            });
            assert_eq!(threads, if n >= PAR_MIN { 2 } else { 1 }, "size {n}");
            assert!(seen.iter().all(|s| s.load(Ordering::Relaxed) == 1), "size {n}");
        }
    }

    /// Streamed copies at every alignment of source and destinations and every length around
    /// the 64-byte loop and the 16-byte boundary are exact, and write nothing outside.
    #[test]
    fn streamed_copies_are_exact_at_any_alignment() {
        let src: Vec<u8> = (0..4096u32).map(|i| (i * 13 + 7) as u8).collect();
        for n in [0usize, 1, 15, 16, 17, 63, 64, 65, 127, 128, 129, 1000, 3000] {
            for so in [0usize, 1, 7, 16] {
                for (o1, o2) in [(0usize, 0usize), (3, 3), (5, 9), (16, 1)] {
                    let mut a = vec![0xaau8; 3200];
                    let mut b = vec![0x55u8; 3200];
                    // SAFETY: n + offsets stay inside the vectors (n <= 3000, offsets <= 16,
                    // 32 bytes of guard).
                    unsafe {
                        stream_copy2(
                            a.as_mut_ptr().add(32 + o1),
                            b.as_mut_ptr().add(32 + o2),
                            src.as_ptr().add(so),
                            n,
                        )
                    };
                    assert!(a[32 + o1..32 + o1 + n] == src[so..so + n], "n {n} so {so} o1 {o1}");
                    assert!(b[32 + o2..32 + o2 + n] == src[so..so + n], "n {n} so {so} o2 {o2}");
                    assert!(a[..32 + o1].iter().chain(&a[32 + o1 + n..]).all(|&x| x == 0xaa));
                    assert!(b[..32 + o2].iter().chain(&b[32 + o2 + n..]).all(|&x| x == 0x55));
                    let mut c = vec![0u8; 3200];
                    // SAFETY: as above.
                    unsafe { stream_copy(c.as_mut_ptr().add(32 + o1), src.as_ptr().add(so), n) };
                    assert!(c[32 + o1..32 + o1 + n] == src[so..so + n]);
                }
            }
        }
    }

    #[test]
    fn a_large_copy_is_exact_and_runs_on_two_threads() {
        let n = 3 * PAR_MIN + 12345;
        let src: Vec<u8> = (0..n).map(|i| (i * 31 + i / 4096) as u8).collect();
        let mut dst = Vec::<u8>::with_capacity(n);
        assert_eq!(copy(&mut dst.spare_capacity_mut()[..n], &src), 2);
        // SAFETY: copy wrote all n bytes.
        unsafe { dst.set_len(n) };
        assert!(dst == src);
        let threads = std::sync::Mutex::new(std::collections::HashSet::new());
        split(n, |_| {
            threads.lock().unwrap().insert(std::thread::current().id());
        });
        assert_eq!(
            threads.lock().unwrap().len(),
            2,
            "the second half ran on a helper thread"
        );
        // The helper is gone when split returns, and ran with every signal blocked.
        let mask = std::sync::Mutex::new(None);
        split(n, |r| {
            if r.start > 0 {
                let mut cur = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
                // SAFETY: reads this thread's mask into `cur`.
                let term = unsafe {
                    libc::pthread_sigmask(libc::SIG_SETMASK, std::ptr::null(), cur.as_mut_ptr());
                    libc::sigismember(cur.as_ptr(), libc::SIGTERM)
                };
                *mask.lock().unwrap() = Some(term);
            }
        });
        assert_eq!(*mask.lock().unwrap(), Some(1), "SIGTERM blocked on the helper");
    }
}
