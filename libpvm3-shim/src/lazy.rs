//! Early delivery of large messages on direct routes between two pvm-rs tasks.
//!
//! A large message from a pvm-rs peer arrives as one fragment (`route.rs`). Waiting for all of
//! it before `pvm_recv` returns, and only then copying it out in `pvm_upk*`, puts the copy after
//! the transfer: on one host that copy is a third of a round trip at 1 MB. Instead, once the
//! headers and the first bytes are here, the message is delivered with a [`Tail`]: the bytes
//! still in the socket, which are read into the receive buffer as the program unpacks them, so
//! that unpacking a large array copies each piece while it is still in the cache and while the
//! sender is still writing the next one.
//!
//! The rules that keep this invisible to the program:
//! * The buffer always ends up holding every byte of the message, as before: a tail is only
//!   ever read into the buffer's own body, in order, never straight into the program's memory.
//! * Only unpacking and `pvm_bufinfo` (which knows the full length from the fragment header)
//!   work on a buffer with a tail: every other library call first reads all tails to the end
//!   ([`settle`] at the entry of `core::with`, unless the call runs under a [`LazyOk`] guard),
//!   and so does every wait for input (`Lib::pump`) and every write (`Lib::send_raw_enc`).
//! * While its tail is pending, the route's stream is held: nothing else is read from it (the
//!   socket's next bytes belong to the tail). A freed buffer reads its tail to the end first.
//! * Only user messages (not the library's own control contexts), only when tracing is off,
//!   and only on routes whose peer offered large fragments.
//!
//! A peer that dies in the middle of a message ends the tail: unpacking past what arrived then
//! fails with PvmNoData (with the legacy library such a message is never delivered at all).

use std::cell::Cell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Messages at least this large (body bytes) are delivered early: below it the copy is cheap
/// and the extra bookkeeping is not worth it.
pub const LAZY_MIN: usize = 256 << 10;

/// Most bytes read at once for an unpack that copies pieces as they come.
pub const FILL_STEP: usize = 128 << 10;

/// Buffers with a pending tail (so that the common case, none, costs one atomic load).
static PENDING: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static LAZY_OK: Cell<bool> = const { Cell::new(false) };
}

/// True while some buffer has a tail.
pub fn pending() -> bool {
    PENDING.load(Ordering::Relaxed) > 0
}

/// True inside a call that may leave tails pending (see [`LazyOk`]).
pub fn lazy_ok() -> bool {
    LAZY_OK.with(Cell::get)
}

/// Marks the calls that work on buffers with tails (receive, unpack, bufinfo): while one is
/// alive, entering the library does not read pending tails to the end.
pub struct LazyOk(bool);

impl LazyOk {
    pub fn set() -> LazyOk {
        LazyOk(LAZY_OK.with(|c| c.replace(true)))
    }

    /// The opposite, around a call into the program (a message handler, a pvm_recvf matcher)
    /// made from inside such a call: what the program calls there must see whole buffers.
    pub fn clear() -> LazyOk {
        LazyOk(LAZY_OK.with(|c| c.replace(false)))
    }
}

impl Drop for LazyOk {
    fn drop(&mut self) {
        let old = self.0;
        LAZY_OK.with(|c| c.set(old));
    }
}

/// What the stream and the buffer share: bytes of the message still in the socket, and whether
/// the stream broke before they came.
#[derive(Debug, Default)]
pub struct Shared {
    left: AtomicUsize,
    dead: AtomicBool,
}

impl Shared {
    /// Bytes of the tail not read yet (the stream stays held while this is above 0).
    pub fn left(&self) -> usize {
        self.left.load(Ordering::Acquire)
    }
    pub fn dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }
}

/// Where the rest of an early-delivered message comes from.
#[derive(Debug)]
enum Source {
    /// The route's socket (a duplicate of its descriptor, so that the buffer can read without
    /// the stream at hand).
    Sock(OwnedFd),
    /// The sender's memory (`vmread.rs`): nothing of it is in the socket, the stream is free.
    Remote(crate::vmread::Remote),
}

/// The rest of an early-delivered message.
#[derive(Debug)]
pub struct Tail {
    src: Source,
    shared: Arc<Shared>,
    /// Body length of the whole message.
    pub total: usize,
}

impl Tail {
    /// A tail of `left` bytes on `fd`, for a message of `total` body bytes. The stream keeps the
    /// returned [`Shared`] and reads nothing while its `left` is above 0.
    pub fn new(fd: RawFd, left: usize, total: usize) -> io::Result<(Tail, Arc<Shared>)> {
        // SAFETY: dup(2) of a descriptor the stream owns; the duplicate is owned at once.
        let d = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
        if d < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(d) };
        let shared = Arc::new(Shared {
            left: AtomicUsize::new(left),
            dead: AtomicBool::new(false),
        });
        PENDING.fetch_add(1, Ordering::Relaxed);
        Ok((
            Tail {
                src: Source::Sock(fd),
                shared: shared.clone(),
                total,
            },
            shared,
        ))
    }

    /// A tail of `left` bytes read from the sender's memory (`vmread.rs`); dropping it (read to
    /// the end or not) acknowledges the transfer.
    pub fn remote(r: crate::vmread::Remote, left: usize, total: usize) -> Tail {
        PENDING.fetch_add(1, Ordering::Relaxed);
        Tail {
            src: Source::Remote(r),
            shared: Arc::new(Shared {
                left: AtomicUsize::new(left),
                dead: AtomicBool::new(false),
            }),
            total,
        }
    }

    /// Bytes still in the socket.
    pub fn left(&self) -> usize {
        self.shared.left()
    }

    /// The stream ended before the whole message came.
    pub fn dead(&self) -> bool {
        self.shared.dead()
    }

    /// Appends to `v` (the message's body, which holds the bytes before the tail) until it holds
    /// at least `upto` bytes (capped at the message's length), waiting for them. With `some`,
    /// returns as soon as any byte was appended (an unpack copies each piece as it comes).
    /// False if the stream broke first.
    pub fn fill(&mut self, v: &mut Vec<u8>, upto: usize, some: bool) -> bool {
        let upto = upto.min(self.total);
        while v.len() < upto {
            let left = self.left();
            if left == 0 || self.dead() {
                return false;
            }
            // Piece by piece for an unpack, so that each piece is copied out while it is still
            // in the cache (and while the sender writes the next one).
            let want = if some { left.min(FILL_STEP) } else { left };
            v.reserve(want);
            let spare = &mut v.spare_capacity_mut()[..want];
            let n = match &mut self.src {
                Source::Sock(fd) => {
                    // SAFETY: recv(2) writes at most spare.len() bytes into the vector's spare
                    // capacity; only the bytes it reports written are then counted as
                    // initialised.
                    let n = unsafe {
                        libc::recv(
                            fd.as_raw_fd(),
                            spare.as_mut_ptr() as *mut libc::c_void,
                            spare.len(),
                            libc::MSG_DONTWAIT,
                        )
                    };
                    if n < 0 {
                        Err(io::Error::last_os_error())
                    } else {
                        Ok(n as usize)
                    }
                }
                Source::Remote(r) => r.read_into(spare),
            };
            match n {
                Ok(n) if n > 0 => {
                    // SAFETY: recv / process_vm_readv initialised n bytes after the length.
                    unsafe { v.set_len(v.len() + n) };
                    self.shared.left.store(left - n, Ordering::Release);
                    if some {
                        return true;
                    }
                }
                Ok(_) => {
                    self.shared.dead.store(true, Ordering::Release);
                    return false;
                }
                Err(e) => match (e.kind(), &self.src) {
                    (io::ErrorKind::Interrupted, _) => {}
                    (io::ErrorKind::WouldBlock, Source::Sock(fd)) => {
                        crate::net::poll_fds(&[(fd.as_raw_fd(), false)], Some(Duration::from_millis(1000)));
                    }
                    _ => {
                        self.shared.dead.store(true, Ordering::Release);
                        return false;
                    }
                },
            }
        }
        true
    }

    /// Where the next `n` bytes of a tail in the sender's shared arena are mapped here, when
    /// they all lie in one piece of it (None otherwise, and for a tail in a socket: [`Tail::fill`]
    /// reads those). The caller copies them itself and then calls [`Tail::consumed`].
    pub fn mapped(&self, n: usize) -> Option<*const u8> {
        match &self.src {
            Source::Remote(r) if n <= self.left() && !self.dead() => r.mapped(n as u64),
            _ => None,
        }
    }

    /// Counts the next `n` bytes (at most [`Tail::left`]) as read: the caller copied them from
    /// [`Tail::mapped`] into the body.
    pub fn consumed(&mut self, n: usize) {
        let left = self.left();
        let n = n.min(left);
        if let Source::Remote(r) = &mut self.src {
            r.skip(n as u64);
        }
        self.shared.left.store(left - n, Ordering::Release);
    }

    /// Reads the whole rest into `v`.
    pub fn finish(&mut self, v: &mut Vec<u8>) {
        let total = self.total;
        self.fill(v, total, false);
    }
}

impl Drop for Tail {
    /// A tail dropped before its end (a buffer freed unread): the bytes are still read and
    /// thrown away, so that the stream resumes at the next message. A tail in the sender's
    /// memory is only acknowledged (the sender may go on).
    fn drop(&mut self) {
        let fd = match &mut self.src {
            Source::Remote(r) => {
                r.ack();
                PENDING.fetch_sub(1, Ordering::Relaxed);
                return;
            }
            Source::Sock(fd) => fd.as_raw_fd(),
        };
        let mut scratch = vec![0u8; self.left().min(256 << 10)];
        while self.left() > 0 && !self.dead() {
            let left = self.left();
            let want = left.min(scratch.len());
            // SAFETY: recv(2) into an initialised buffer of at least `want` bytes.
            let n = unsafe { libc::recv(fd, scratch.as_mut_ptr() as *mut libc::c_void, want, libc::MSG_DONTWAIT) };
            if n > 0 {
                self.shared.left.store(left - n as usize, Ordering::Release);
                continue;
            }
            if n == 0 {
                self.shared.dead.store(true, Ordering::Release);
                break;
            }
            match io::Error::last_os_error().kind() {
                io::ErrorKind::Interrupted => {}
                io::ErrorKind::WouldBlock => {
                    crate::net::poll_fds(&[(fd, false)], Some(Duration::from_millis(1000)));
                }
                _ => self.shared.dead.store(true, Ordering::Release),
            }
        }
        PENDING.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Reads every pending tail to its end (see the module doc).
pub fn settle(lib: &mut crate::core::Lib) {
    if pending() {
        for b in lib.bufs.values_mut() {
            b.settle();
        }
    }
    // Acks a finished remote tail could not write at once (vmread.rs).
    crate::vmread::send_owed(lib);
}
