//! Big relayed fragments passed from task to task through a pipe with `splice(2)`: the payload
//! never enters the daemon's memory.
//!
//! Why: a `PvmDataInPlace` message of the legacy library, or any message of ours, reaches the
//! daemon as one fragment of up to megabytes. Read into a buffer and written out again, each
//! byte is copied twice by the daemon (socket -> buffer -> socket), through the main loop and
//! the destination's writer queue. `splice` from the source socket into a pipe takes references
//! to the pages of the socket buffers, and `splice` from the pipe into the destination socket
//! (`MSG_SPLICE_PAGES`, Linux >= 6.5) attaches those pages to the destination's socket buffers:
//! no copy and no memory of the daemon's own, at two system calls per pipe-full.
//!
//! How it keeps the rules of the other relay paths (relay.rs):
//! * Only when relay.rs would relay the fragment itself: a route the main loop recorded, none
//!   of the source's earlier input waiting in the main loop, and nothing queued for the
//!   destination. The destination is then claimed ([`Routes::claim_big`](super::relay::Routes))
//!   with a [`WriteCmd::Wait`](super::WriteCmd) at the head of its writer queue: whatever is
//!   written to it meanwhile (by the main loop or other readers) queues behind, in order.
//! * A destination that stops reading does not hold the source: after [`STALL`] without room,
//!   the rest of the fragment is read into memory and handed to the destination's writer (what
//!   the old path did for the whole fragment), so the source's reader goes on and the usual
//!   bound on what is queued for a task applies to what comes next.
//! * A destination that is gone: the rest of the fragment is read and dropped (the source's
//!   stream stays in step). A source that ends inside the fragment: the destination gets the
//!   missing bytes as zeros (its stream stays in step; the message stays incomplete), as the
//!   old path did.
//! * `splice` refused (an old kernel): the same fragment is passed on by plain reads and writes
//!   of 256 KB pieces, still without going through the main loop.

use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::sync::oneshot;

use super::relay::Dest;
use super::tasksock::{TaskRead, TaskWrite, WriteReg};
use super::WriteCmd;

/// How long a destination may take no byte of a fragment being spliced before the rest goes
/// through memory instead.
pub const STALL: Duration = Duration::from_secs(1);

/// Pipe capacity asked for (the default maximum an unprivileged process may set; a bound on
/// what one splice moves, not an allocation).
const PIPE_SIZE: usize = 1 << 20;

/// Piece size of the copying fallback.
const COPY_CHUNK: usize = 256 << 10;

/// What the destination's writer writes when the claim ends (after what was spliced): the rest
/// of the fragment if it went through memory, then `pad` zero bytes.
#[derive(Default)]
pub struct WaitEnd {
    pub data: Vec<u8>,
    pub pad: usize,
}

/// A pipe (empty whenever it is put back in [`SPARE`]).
pub struct Pipe {
    r: OwnedFd,
    w: OwnedFd,
    cap: usize,
}

thread_local! {
    /// One pipe kept between big fragments (the daemon's tasks run on one thread): a thousand
    /// tasks that once sent a big fragment do not hold two thousand descriptors.
    static SPARE: std::cell::RefCell<Option<Pipe>> = const { std::cell::RefCell::new(None) };
}

impl Pipe {
    /// The spare pipe, or a new one.
    fn take() -> Option<Pipe> {
        SPARE.with(|s| s.borrow_mut().take()).or_else(|| Pipe::new().ok())
    }

    /// Keeps an empty pipe for the next fragment (or closes it if one is kept already).
    fn put_back(self) {
        SPARE.with(|s| {
            let mut s = s.borrow_mut();
            if s.is_none() {
                *s = Some(self);
            }
        });
    }

    fn new() -> io::Result<Pipe> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: pipe2 writes two descriptors into the array, which we then own.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just created and are owned by nobody else.
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: F_SETPIPE_SZ on our own pipe; on failure the default size stays.
        let got = unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE as libc::c_int) };
        let cap = if got > 0 { got as usize } else { 64 << 10 };
        Ok(Pipe { r, w, cap })
    }
}

/// `splice(2)` of up to `len` bytes, non-blocking on the pipe side (the sockets are
/// non-blocking themselves).
fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: plain system call on descriptors the caller keeps open; no user memory involved.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// How passing the fragment on ended, for the source's reader.
#[derive(Debug)]
pub enum Outcome {
    /// All of it went on (or was dropped for a destination that is gone).
    Done,
    /// The source ended `left` bytes before the end of the fragment.
    SourceEnded { left: usize },
    /// Reading the source failed.
    SourceError(io::Error),
}

/// Where the bytes of the fragment go at the moment.
enum Sink {
    /// Written to the socket (spliced or copied).
    Socket,
    /// The destination stalled: into memory, handed to its writer at the end.
    Memory(Vec<u8>),
    /// The destination is gone: dropped.
    Gone,
}

/// Passes a big fragment on: `hdr` (rewritten) and `first` (payload bytes already read), then
/// `left` more payload bytes read from `rd`, to the claimed destination `dest` (whose queue
/// counter the caller raised by one: the `len` of `WriteCmd::Wait`).
pub async fn relay_big(rd: &mut TaskRead, mut left: usize, hdr: [u8; 16], first: Vec<u8>, dest: &Dest) -> Outcome {
    let (tx, rx) = oneshot::channel::<WaitEnd>();
    let mut sink = if dest.send(WriteCmd::Wait(rx)) {
        Sink::Socket
    } else {
        Sink::Gone
    };
    let mut reg: WriteReg = None;
    if let Sink::Socket = sink {
        sink = write_direct(dest.wr(), &mut reg, &[&hdr, &first]).await;
    }
    let mut outcome = Outcome::Done;
    if let Sink::Socket = sink {
        let pipe = Pipe::take();
        let r = match pipe.as_ref() {
            Some(p) => splice_loop(rd, &mut left, p, dest.wr(), &mut reg).await,
            None => Spliced::Refused,
        };
        // Only an empty pipe is kept; one that may hold bytes is closed.
        if let (Spliced::Done | Spliced::Refused, Some(p)) = (&r, pipe) {
            p.put_back();
        }
        match r {
            Spliced::Done => {}
            Spliced::Refused => {
                // Nothing went through the pipe: the same by reads and writes.
                sink = copy_loop(rd, &mut left, dest.wr(), &mut reg, &mut outcome).await;
            }
            Spliced::Stalled(bytes) => {
                sink = Sink::Memory(bytes);
            }
            Spliced::Gone => {
                sink = Sink::Gone;
            }
            Spliced::SourceEnded => {
                outcome = Outcome::SourceEnded { left };
            }
            Spliced::SourceError(e) => {
                outcome = Outcome::SourceError(e);
            }
        }
    }
    // What is left goes to memory or nowhere.
    if left > 0 && matches!(outcome, Outcome::Done) {
        let mut scratch = Vec::new();
        while left > 0 {
            let want = left.min(COPY_CHUNK);
            let buf = match &mut sink {
                Sink::Memory(v) => v,
                _ => {
                    scratch.clear();
                    &mut scratch
                }
            };
            buf.reserve(want);
            match (&mut *rd).take(want as u64).read_buf(buf).await {
                Ok(0) => {
                    outcome = Outcome::SourceEnded { left };
                    break;
                }
                Ok(n) => left -= n,
                Err(e) => {
                    outcome = Outcome::SourceError(e);
                    break;
                }
            }
        }
    }
    if !matches!(sink, Sink::Gone) {
        let data = match sink {
            Sink::Memory(v) => v,
            _ => Vec::new(),
        };
        let pad = if matches!(outcome, Outcome::Done) { 0 } else { left };
        if !data.is_empty() || pad > 0 {
            dest.queued()
                .fetch_add(data.len() + pad, std::sync::atomic::Ordering::Relaxed);
            let _ = tx.send(WaitEnd { data, pad });
        }
    }
    // Dropping `tx` without sending lets the writer go on.
    outcome
}

/// Writes `bufs` to the destination, waiting for room up to [`STALL`] at a time.
async fn write_direct(wr: &TaskWrite, reg: &mut WriteReg, bufs: &[&[u8]]) -> Sink {
    let total: usize = bufs.iter().map(|b| b.len()).sum();
    let mut done = 0usize;
    while done < total {
        let mut skip = done;
        let iov: Vec<IoSlice<'_>> = bufs
            .iter()
            .filter_map(|b| {
                if skip >= b.len() {
                    skip -= b.len();
                    None
                } else {
                    let s = IoSlice::new(&b[skip..]);
                    skip = 0;
                    Some(s)
                }
            })
            .collect();
        match wr.try_write_vectored(&iov) {
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if !matches!(tokio::time::timeout(STALL, wr.writable(reg)).await, Ok(Ok(()))) {
                    let mut rest = Vec::with_capacity(total - done);
                    let mut skip = done;
                    for b in bufs {
                        if skip >= b.len() {
                            skip -= b.len();
                        } else {
                            rest.extend_from_slice(&b[skip..]);
                            skip = 0;
                        }
                    }
                    return Sink::Memory(rest);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Sink::Gone,
        }
    }
    Sink::Socket
}

enum Spliced {
    Done,
    /// `splice` is not available: nothing was moved.
    Refused,
    /// The destination took nothing for [`STALL`]: what was still in the pipe.
    Stalled(Vec<u8>),
    Gone,
    SourceEnded,
    SourceError(io::Error),
}

/// Moves `left` bytes from `rd` through `pipe` to `wr`.
async fn splice_loop(rd: &TaskRead, left: &mut usize, pipe: &Pipe, wr: &TaskWrite, reg: &mut WriteReg) -> Spliced {
    let (pr, pw) = (pipe.r.as_raw_fd(), pipe.w.as_raw_fd());
    let out = wr.raw_fd();
    let mut in_pipe = 0usize;
    let mut moved_any = false;
    loop {
        if *left == 0 && in_pipe == 0 {
            return Spliced::Done;
        }
        let mut dest_full = false;
        if in_pipe > 0 {
            match splice(pr, out, in_pipe) {
                Ok(n) if n > 0 => {
                    in_pipe -= n;
                    continue;
                }
                Ok(_) => return Spliced::Gone,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => dest_full = true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Spliced::Gone,
            }
        }
        let want_src = *left > 0 && in_pipe < pipe.cap;
        let room = (*left).min(pipe.cap - in_pipe);
        let got = if !want_src {
            // The pipe is full (or all read): only the destination can make progress.
            match tokio::time::timeout(STALL, wr.writable(reg)).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) => return Spliced::Gone,
                Err(_) => return stalled(pr, in_pipe),
            }
        } else if dest_full {
            tokio::select! {
                r = rd.read_io(|fd| splice(fd, pw, room)) => r,
                w = wr.writable(reg) => match w {
                    Ok(()) => continue,
                    Err(_) => return Spliced::Gone,
                },
            }
        } else {
            rd.read_io(|fd| splice(fd, pw, room)).await
        };
        match got {
            Ok(0) => return Spliced::SourceEnded,
            Ok(n) => {
                moved_any = true;
                in_pipe += n;
                *left -= n;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if !moved_any && matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) => {
                return Spliced::Refused;
            }
            Err(e) => return Spliced::SourceError(e),
        }
    }
}

/// The pipe's content, read back into memory (it is all there: no waiting).
fn stalled(pr: RawFd, mut in_pipe: usize) -> Spliced {
    let mut v = vec![0u8; in_pipe];
    let mut at = 0;
    while in_pipe > 0 {
        // SAFETY: reads at most `in_pipe` bytes into the part of `v` not yet filled.
        let n = unsafe { libc::read(pr, v[at..].as_mut_ptr().cast(), in_pipe) };
        if n <= 0 {
            v.truncate(at);
            break;
        }
        at += n as usize;
        in_pipe -= n as usize;
    }
    Spliced::Stalled(v)
}

/// The fallback without `splice`: pieces read into a buffer and written out.
async fn copy_loop(
    rd: &mut TaskRead,
    left: &mut usize,
    wr: &TaskWrite,
    reg: &mut WriteReg,
    outcome: &mut Outcome,
) -> Sink {
    let mut buf = Vec::with_capacity(COPY_CHUNK.min(*left));
    while *left > 0 {
        buf.clear();
        match (&mut *rd).take((*left).min(COPY_CHUNK) as u64).read_buf(&mut buf).await {
            Ok(0) => {
                *outcome = Outcome::SourceEnded { left: *left };
                return Sink::Socket;
            }
            Ok(n) => *left -= n,
            Err(e) => {
                *outcome = Outcome::SourceError(e);
                return Sink::Socket;
            }
        }
        match write_direct(wr, reg, &[&buf]).await {
            Sink::Socket => {}
            other => return other,
        }
    }
    Sink::Socket
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;
    use tokio::io::AsyncWriteExt;
    use tokio::sync::mpsc;

    use crate::server::test_rt as rt;

    /// A source (our read side and the task's end) and a destination (Dest, the task's end,
    /// and the writer queue).
    #[allow(clippy::type_complexity)]
    fn ends() -> (
        TaskRead,
        tokio::net::UnixStream,
        Dest,
        tokio::net::UnixStream,
        mpsc::UnboundedReceiver<WriteCmd>,
    ) {
        let (s_ours, s_task) = tokio::net::UnixStream::pair().unwrap();
        let (rd, w) = super::super::tasksock::split(s_ours).unwrap();
        std::mem::forget(w);
        let (d_ours, d_task) = tokio::net::UnixStream::pair().unwrap();
        let (r, wr) = super::super::tasksock::split(d_ours).unwrap();
        std::mem::forget(r);
        let (dest, rx) = super::super::Outlet::with_queue(wr, 1);
        (rd, s_task, dest, d_task, rx)
    }

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + (i >> 11)) as u8).collect()
    }

    #[test]
    fn passes_a_big_fragment_on_byte_for_byte() {
        rt().block_on(async {
            let (mut rd, mut src, dest, mut dst, mut rx) = ends();
            let n = (3 << 20) + 5;
            let data = pattern(n);
            let first = data[..1000].to_vec();
            let rest = data[1000..].to_vec();
            let feed = tokio::spawn(async move {
                src.write_all(&rest).await.unwrap();
                src
            });
            let read = tokio::spawn(async move {
                let mut got = vec![0u8; 16 + n];
                tokio::io::AsyncReadExt::read_exact(&mut dst, &mut got).await.unwrap();
                got
            });
            let hdr = [9u8; 16];
            let out = relay_big(&mut rd, n - 1000, hdr, first, &dest).await;
            assert!(matches!(out, Outcome::Done), "{out:?}");
            let got = read.await.unwrap();
            assert_eq!(&got[..16], &hdr);
            assert!(got[16..] == data[..], "payload differs");
            assert!(
                SPARE.with(|s| s.borrow().is_some()),
                "the pipe is kept for the next fragment"
            );
            // The claim: a Wait at the head of the queue, ended without anything to add.
            match rx.try_recv() {
                Ok(WriteCmd::Wait(w)) => assert!(w.await.is_err()),
                _ => panic!("expected the claim"),
            }
            drop(feed.await.unwrap());
        });
    }

    #[test]
    fn a_stalled_destination_gets_the_rest_through_memory_and_a_short_source_padding() {
        rt().block_on(async {
            let (mut rd, mut src, dest, dst, mut rx) = ends();
            // The destination never reads; the fragment is larger than its socket buffer.
            let n = 8 << 20;
            let data = pattern(n);
            let sent = data.clone();
            let feed = tokio::spawn(async move {
                src.write_all(&sent).await.unwrap();
                src
            });
            let t0 = std::time::Instant::now();
            let out = relay_big(&mut rd, n, [1u8; 16], Vec::new(), &dest).await;
            assert!(matches!(out, Outcome::Done), "{out:?}");
            assert!(t0.elapsed() >= STALL, "waited for the destination first");
            let Ok(WriteCmd::Wait(w)) = rx.try_recv() else {
                panic!("expected the claim")
            };
            let end = w.await.expect("the rest through memory");
            assert_eq!(end.pad, 0);
            // What the socket took, then what went through memory: the whole payload.
            let mut in_socket = vec![0u8; 16 + n - end.data.len()];
            let mut dst = dst;
            tokio::io::AsyncReadExt::read_exact(&mut dst, &mut in_socket)
                .await
                .unwrap();
            assert!([&in_socket[16..], &end.data[..]].concat() == data);
            assert_eq!(dest.queued().load(Ordering::Relaxed), 1 + end.data.len());
            drop(feed.await.unwrap());

            // A source that ends inside the fragment: the rest is padding.
            let (mut rd, mut src, dest, mut dst, mut rx) = ends();
            src.write_all(&data[..5000]).await.unwrap();
            drop(src);
            let reader = tokio::spawn(async move {
                let mut got = vec![0u8; 16 + 5000];
                tokio::io::AsyncReadExt::read_exact(&mut dst, &mut got).await.unwrap();
                got
            });
            let out = relay_big(&mut rd, 9000, [2u8; 16], Vec::new(), &dest).await;
            assert!(matches!(out, Outcome::SourceEnded { left: 4000 }), "{out:?}");
            assert!(reader.await.unwrap()[16..] == data[..5000]);
            let Ok(WriteCmd::Wait(w)) = rx.try_recv() else {
                panic!("expected the claim")
            };
            let end = w.await.unwrap();
            assert_eq!((end.data.len(), end.pad), (0, 4000));
        });
    }
}
