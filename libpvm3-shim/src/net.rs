//! Sockets: the stream to the pvmd and direct task-task routes, all non-blocking, read into
//! per-stream buffers and cut into fragments, written with the other streams still drained so
//! that two peers writing large messages at each other cannot deadlock.

use pvm_proto::codes::FRAGHDR_LEN;
use pvm_proto::message::Reassembler;
use std::io::{self, Read};
use std::net::TcpStream;
use std::os::unix::io::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// Largest fragment accepted from a peer (legacy caps `PvmFragSize` at 1 MiB; headers on top).
pub const MAX_FRAG: usize = (1 << 20) + 64;

pub enum Sock {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Sock {
    pub fn fd(&self) -> RawFd {
        match self {
            Sock::Unix(s) => s.as_raw_fd(),
            Sock::Tcp(s) => s.as_raw_fd(),
        }
    }
    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        match self {
            Sock::Unix(s) => s.read(b),
            Sock::Tcp(s) => s.read(b),
        }
    }
    /// send(2) with MSG_NOSIGNAL: a peer that went away must give EPIPE, not a SIGPIPE that
    /// would kill the user's program.
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        // SAFETY: b is a valid buffer of b.len() bytes; the descriptor is owned by self.
        let n = unsafe {
            libc::send(
                self.fd(),
                b.as_ptr() as *const libc::c_void,
                b.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
    pub fn set_nonblocking(&self) -> io::Result<()> {
        match self {
            Sock::Unix(s) => s.set_nonblocking(true),
            Sock::Tcp(s) => s.set_nonblocking(true),
        }
    }
}

/// One connected stream and the bytes read from it that do not yet make a whole fragment.
pub struct Stream {
    pub sock: Sock,
    pub inbuf: Vec<u8>,
    pub eof: bool,
    /// Bytes of `inbuf` already handed out as fragments (compacted lazily).
    pub consumed: usize,
    /// Partial messages on this stream, per source.
    pub reasm: Reassembler,
}

impl Stream {
    pub fn new(sock: Sock) -> io::Result<Stream> {
        sock.set_nonblocking()?;
        Ok(Stream {
            sock,
            inbuf: Vec::new(),
            eof: false,
            consumed: 0,
            reasm: Reassembler::new(crate::core::lib_limits()),
        })
    }

    /// Reads whatever is available without blocking.
    pub fn drain(&mut self) {
        let mut tmp = [0u8; 65536];
        while !self.eof {
            match self.sock.read(&mut tmp) {
                Ok(0) => self.eof = true,
                Ok(n) => self.inbuf.extend_from_slice(&tmp[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => self.eof = true,
            }
        }
    }

    /// The next whole fragment (header included), or None. A fragment that announces more
    /// than [`MAX_FRAG`] bytes marks the stream dead: nothing after it can be framed.
    pub fn next_fragment(&mut self) -> Option<Vec<u8>> {
        let avail = &self.inbuf[self.consumed..];
        if avail.len() < FRAGHDR_LEN {
            self.compact();
            return None;
        }
        let len = u32::from_be_bytes([avail[8], avail[9], avail[10], avail[11]]) as usize;
        if len > MAX_FRAG {
            self.eof = true;
            self.inbuf.clear();
            self.consumed = 0;
            return None;
        }
        if avail.len() < FRAGHDR_LEN + len {
            self.compact();
            return None;
        }
        let f = avail[..FRAGHDR_LEN + len].to_vec();
        self.consumed += FRAGHDR_LEN + len;
        Some(f)
    }

    /// Bytes received and not yet handed out.
    pub fn pending(&self) -> usize {
        self.inbuf.len() - self.consumed
    }

    /// Drops the consumed prefix (once per batch, not per fragment).
    fn compact(&mut self) {
        if self.consumed > 0 {
            self.inbuf.drain(..self.consumed);
            self.consumed = 0;
        }
    }
}

/// Waits until one of `fds` is readable (or writable for `want_write`), at most `timeout`.
pub fn poll_fds(fds: &[(RawFd, bool)], timeout: Option<Duration>) -> Vec<(bool, bool)> {
    let mut p: Vec<libc::pollfd> = fds
        .iter()
        .map(|&(fd, w)| libc::pollfd {
            fd,
            events: libc::POLLIN | if w { libc::POLLOUT } else { 0 },
            revents: 0,
        })
        .collect();
    let ms = match timeout {
        None => -1,
        Some(d) => d.as_millis().min(i32::MAX as u128) as i32,
    };
    // SAFETY: `p` is a valid array of `p.len()` pollfd structures for the duration of the call.
    let n = unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, ms) };
    if n <= 0 {
        return vec![(false, false); fds.len()];
    }
    p.iter()
        .map(|x| {
            (
                x.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0,
                x.revents & libc::POLLOUT != 0,
            )
        })
        .collect()
}

/// Time left until `deadline`, zero if passed, None for "forever".
pub fn left(deadline: Option<Instant>) -> Option<Duration> {
    deadline.map(|d| d.saturating_duration_since(Instant::now()))
}

/// Writes all of `data` to `streams[idx]`, draining every stream's input while the socket is
/// full. Returns false if the stream broke.
pub fn write_all(streams: &mut [&mut Stream], idx: usize, data: &[u8]) -> bool {
    let mut off = 0;
    while off < data.len() {
        match streams[idx].sock.write(&data[off..]) {
            Ok(0) => return false,
            Ok(n) => off += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let fds: Vec<(RawFd, bool)> = streams
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (s.sock.fd(), i == idx))
                    .collect();
                let r = poll_fds(&fds, Some(Duration::from_millis(1000)));
                for (i, (rd, _)) in r.iter().enumerate() {
                    if *rd {
                        streams[i].drain();
                    }
                }
            }
            Err(_) => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn pair() -> (Stream, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        (Stream::new(Sock::Unix(a)).unwrap(), b)
    }

    #[test]
    fn fragments_are_cut_only_when_complete() {
        let (mut s, mut peer) = pair();
        let mut frag = vec![0u8; 16];
        frag[8..12].copy_from_slice(&4u32.to_be_bytes());
        frag.extend_from_slice(b"abcd");
        peer.write_all(&frag[..10]).unwrap();
        s.drain();
        assert!(s.next_fragment().is_none());
        peer.write_all(&frag[10..]).unwrap();
        peer.write_all(&frag).unwrap();
        s.drain();
        assert_eq!(s.next_fragment().unwrap(), frag);
        assert_eq!(s.next_fragment().unwrap(), frag);
        assert!(s.next_fragment().is_none());
        drop(peer);
        s.drain();
        assert!(s.eof);
    }

    #[test]
    fn an_oversized_length_kills_the_stream_instead_of_allocating() {
        let (mut s, mut peer) = pair();
        let mut h = vec![0u8; 16];
        h[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
        peer.write_all(&h).unwrap();
        s.drain();
        assert!(s.next_fragment().is_none());
        assert!(s.eof);
        assert_eq!(s.pending(), 0);
    }
}
