//! Task connections registered with the runtime for reading only.
//!
//! Why not tokio's `UnixStream` halves: tokio registers every stream for both directions
//! (edge-triggered `EPOLLIN|EPOLLOUT`), and a unix socket signals "writable" each time its peer
//! reads something the daemon wrote. On the relay path that is every message: the daemon writes
//! to task B and goes to sleep, B reads, and the daemon is woken only to find nothing to do
//! (measured with `perf trace`: an extra wake-up for about half of the 8-byte relays). The legacy
//! daemon asks for writability only while it has something waiting, and so does this: the write
//! side is a second descriptor of the same socket that is registered for `EPOLLOUT` only while a
//! writer waits for room ([`WriteReg`]).

use std::io::{self, IoSlice, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, Interest, ReadBuf};

/// The read side: the socket, registered for readability only.
pub struct TaskRead {
    fd: AsyncFd<UnixStream>,
}

/// The write side: a duplicate descriptor, written without blocking; see [`WriteReg`] for
/// waiting until it takes more. Dropping it shuts the write direction down (as dropping tokio's
/// write half did), so the task sees the end of the stream even while the read side lives on.
pub struct TaskWrite {
    sock: UnixStream,
}

/// A writer's registration for writability, made when a write did not go through and dropped
/// when the writer's queue is empty again.
pub type WriteReg = Option<AsyncFd<OwnedFd>>;

/// Splits a connected (non-blocking) socket; must be called inside the runtime.
pub fn split(stream: tokio::net::UnixStream) -> io::Result<(TaskRead, TaskWrite)> {
    let std = stream.into_std()?;
    let w = std.try_clone()?;
    Ok((
        TaskRead {
            // SAFETY: the AsyncFd owns the socket, whose descriptor stays open and the same
            // until it is dropped.
            fd: unsafe { AsyncFd::register_with_interest(std, Interest::READABLE)? },
        },
        TaskWrite { sock: w },
    ))
}

impl AsyncRead for TaskRead {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.fd.poll_read_ready(cx))?;
            let want = buf.remaining();
            // SAFETY: recv writes at most `want` bytes into the unfilled part, which it
            // initializes; only those are marked filled.
            let res = guard.try_io(|s| {
                let unfilled = unsafe { buf.unfilled_mut() };
                let n = unsafe {
                    libc::recv(
                        s.as_raw_fd(),
                        unfilled.as_mut_ptr().cast::<libc::c_void>(),
                        unfilled.len(),
                        0,
                    )
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match res {
                Ok(Ok(n)) => {
                    // SAFETY: recv initialized these n bytes.
                    unsafe { buf.assume_init(n) };
                    buf.advance(n);
                    // A short read emptied the socket: wait for the next edge instead of
                    // calling recv again only to get EAGAIN (as tokio's own streams do).
                    if n > 0 && n < want {
                        guard.clear_ready();
                    }
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue, // readiness cleared: poll again
            }
        }
    }
}

impl TaskRead {
    /// Runs `f` on the descriptor once it is readable, again after each `WouldBlock` (which
    /// clears the readiness); for splice.rs, which reads the socket with `splice(2)`.
    pub async fn read_io<T>(&self, mut f: impl FnMut(RawFd) -> io::Result<T>) -> io::Result<T> {
        self.fd.async_io(Interest::READABLE, |s| f(s.as_raw_fd())).await
    }
}

impl TaskWrite {
    /// The descriptor written to (splice.rs writes it with `splice(2)`).
    pub fn raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    /// As much of `bufs` as the socket takes now (`WouldBlock` if nothing).
    pub fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        (&self.sock).write_vectored(bufs)
    }

    pub fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        (&self.sock).write(buf)
    }

    /// Waits until the socket may take more, registering for writability first if needed.
    pub async fn writable(&self, reg: &mut WriteReg) -> io::Result<()> {
        if reg.is_none() {
            let fd = self.sock.as_fd_dup()?;
            // SAFETY: as in `split`: the AsyncFd owns this descriptor.
            *reg = Some(unsafe { AsyncFd::register_with_interest(fd, Interest::WRITABLE)? });
        }
        let Some(r) = reg.as_ref() else { unreachable!() };
        let mut guard = r.writable().await?;
        // The caller's next write finds out whether there is room; an edge comes only after
        // a write that did not fit, so forget this one.
        guard.clear_ready();
        Ok(())
    }
}

trait DupFd {
    fn as_fd_dup(&self) -> io::Result<OwnedFd>;
}

impl DupFd for UnixStream {
    /// Another descriptor of the socket: epoll registers (file, descriptor) pairs, and the
    /// read side's descriptor is already registered.
    fn as_fd_dup(&self) -> io::Result<OwnedFd> {
        Ok(self.try_clone()?.into())
    }
}

impl Drop for TaskWrite {
    fn drop(&mut self) {
        let _ = self.sock.shutdown(std::net::Shutdown::Write);
    }
}
