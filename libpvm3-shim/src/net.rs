//! Sockets: the stream to the pvmd and direct task-task routes, all non-blocking, read into
//! per-stream buffers and cut into fragments, written with the other streams still drained so
//! that two peers writing large messages at each other cannot deadlock.

use pvm_proto::codes::FRAGHDR_LEN;
use pvm_proto::message::{Message, Reassembler};
use std::io;
use std::net::TcpStream;
use std::os::unix::io::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// Largest fragment accepted from a peer (legacy caps `PvmFragSize` at 1 MiB; headers on top).
pub const MAX_FRAG: usize = (1 << 20) + 64;

/// Largest fragment accepted at all: a `PvmDataInPlace` item is sent as one fragment of its
/// size, which legacy does not cap; fragments larger than [`MAX_FRAG`] are only taken when
/// they can be received in place (straight into the message, within the per-source limit).
pub const MAX_IN_PLACE_FRAG: usize = (1 << 30) + 64;

/// Largest fragment we offer to take on a direct route from another pvm-rs task (the route
/// extension of TC_CONREQ/TC_CONACK, `route.rs`): a whole message of up to 1 GiB (the library's
/// per-source limit) travels as one fragment and is received in place.
pub const ROUTE_MAX_FRAG: usize = 1 << 30;
const _: () = assert!(ROUTE_MAX_FRAG + 64 <= MAX_IN_PLACE_FRAG);

/// Bytes the input buffer grows by for a read.
const READ_STEP: usize = 256 << 10;

/// The first read of a batch (nothing buffered, no fragment open) takes at most this much: a
/// whole small message or legacy fragment (4080 bytes plus header) fits, and when the bytes
/// begin a large fragment, little of its payload is copied out of the stream buffer before
/// the rest is read in place. The reads after it take [`READ_STEP`].
const FIRST_READ: usize = 4096;

/// Unframed bytes after which a drain stops reading (the caller frames them, then reads on):
/// the input buffer stays small and warm instead of growing to a whole large message. More
/// than the largest fragment, or a stream could stop with a partial fragment it never
/// completes.
const DRAIN_MAX: usize = 2 * MAX_FRAG;
const _: () = assert!(DRAIN_MAX > MAX_FRAG + FRAGHDR_LEN);

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
    /// Bytes of the stream still owed to a large fragment that is received in place (read
    /// straight into its message's buffer, see [`IN_PLACE_MIN`]).
    open_left: usize,
    /// The open fragment is in this stream's own reassembler (not the caller's).
    open_own: bool,
    /// Messages completed by in-place reads, handed out by the next [`Stream::feed`].
    ready: Vec<Message>,
    /// Largest fragment the peer takes (a pvm-rs task that offered the route extension, see
    /// `route.rs`), 0 for a legacy peer and for the pvmd: messages to it are then sent with
    /// the fragments a legacy task would send.
    pub peer_max_frag: usize,
    /// Set while a message of this stream was delivered before its end (`lazy.rs`): the bytes
    /// in the socket belong to its buffer, so nothing is read or framed here until they are in.
    held: Option<std::sync::Arc<crate::lazy::Shared>>,
    /// The tail of the message this stream's last feed delivered early, for the caller to
    /// attach to its buffer ([`Stream::take_tail`]).
    tail: Option<crate::lazy::Tail>,
    /// The peer's pid (SO_PEERCRED) when both ends agreed to single-copy transfers of large
    /// messages on this route (`vmread.rs`); 0 otherwise, and after a read failed once.
    pub vmread_pid: i32,
    /// The peer's shared arena, mapped (`vmread::PeerArena`), and when we last looked for it.
    pub peer_arena: Option<std::sync::Arc<crate::vmread::PeerArena>>,
    pub arena_looked: Option<std::time::Instant>,
}

/// Fragments at least this large are received in place: once their header is here, the rest
/// of the payload is read straight into the message's buffer instead of into the stream buffer
/// and copied from there (no copy in user space, no stream buffer growing to the fragment's
/// size). `PvmDataInPlace` messages and large `PvmFragSize` settings have such fragments.
pub const IN_PLACE_MIN: usize = 64 << 10;

impl Stream {
    pub fn new(sock: Sock) -> io::Result<Stream> {
        sock.set_nonblocking()?;
        Ok(Stream {
            sock,
            inbuf: Vec::new(),
            eof: false,
            consumed: 0,
            reasm: Reassembler::contiguous(crate::core::lib_limits()).with_buffers(crate::pool::for_message),
            open_left: 0,
            open_own: false,
            ready: Vec::new(),
            peer_max_frag: 0,
            held: None,
            tail: None,
            vmread_pid: 0,
            peer_arena: None,
            arena_looked: None,
        })
    }

    /// Reads whatever is available without blocking, straight into the input buffer (large
    /// messages are read in big steps, without an intermediate copy).
    pub fn drain(&mut self) {
        self.read_upto(usize::MAX, None);
    }

    /// [`Stream::drain`] that stops once [`DRAIN_MAX`] unframed bytes are buffered, for the
    /// receive loop, which frames them before reading on. Never used while writing: there the
    /// peer may be blocked until we read everything it sent.
    pub fn drain_step(&mut self) {
        self.read_upto(DRAIN_MAX, None);
    }

    /// [`Stream::drain_step`] for a stream whose fragments go to `reasm` (the pvmd's).
    pub fn drain_step_with(&mut self, reasm: &mut Reassembler) {
        self.read_upto(DRAIN_MAX, Some(reasm));
    }

    /// Reads the rest of an open large fragment straight into its message's buffer, if one is
    /// open in the reassembler at hand and nothing is buffered before it. Some(true) to read
    /// on, Some(false) to stop (nothing more now, or the stream ended), None when the fragment's
    /// reassembler is not at hand or dropped it (the caller reads into the stream buffer).
    fn read_in_place(&mut self, ext: &mut Option<&mut Reassembler>) -> Option<bool> {
        let reasm = match ext {
            Some(r) if !self.open_own => &mut **r,
            None if self.open_own => &mut self.reasm,
            _ => return None,
        };
        let (buf, left) = reasm.open_buffer()?;
        let want = left.min(self.open_left);
        buf.reserve(want);
        let spare = &mut buf.spare_capacity_mut()[..want];
        // SAFETY: recv(2) writes at most spare.len() bytes into the vector's spare capacity;
        // only the bytes it reports written are then counted as initialised.
        let n = unsafe { libc::recv(self.sock.fd(), spare.as_mut_ptr() as *mut libc::c_void, spare.len(), 0) };
        if n > 0 {
            let n = n as usize;
            // SAFETY: recv initialised n bytes after the current length.
            unsafe { buf.set_len(buf.len() + n) };
            #[cfg(test)]
            tests::IN_PLACE_READS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.open_left -= n;
            if let Some(m) = reasm.advance(n) {
                self.ready.push(m);
            }
            return Some(true);
        }
        if n == 0 {
            self.eof = true;
            return Some(false);
        }
        Some(match io::Error::last_os_error().kind() {
            io::ErrorKind::Interrupted => true,
            io::ErrorKind::WouldBlock => false,
            _ => {
                self.eof = true;
                false
            }
        })
    }

    /// A message's tail is still being read by its buffer (see [`Stream::held`]). A tail that
    /// ended early (the peer went away) ends the stream.
    fn is_held(&mut self) -> bool {
        let Some(h) = &self.held else {
            return false;
        };
        if h.left() > 0 && !h.dead() {
            return true;
        }
        if h.dead() {
            self.eof = true;
        }
        self.held = None;
        false
    }

    /// True while a delivered message's tail is still in this stream's socket: the stream must
    /// not be polled (its bytes are not for the stream).
    pub fn held(&mut self) -> bool {
        self.is_held()
    }

    /// The tail of the message the last [`Stream::feed`] delivered early, if it did.
    pub fn take_tail(&mut self) -> Option<crate::lazy::Tail> {
        self.tail.take()
    }

    fn read_upto(&mut self, max: usize, mut ext: Option<&mut Reassembler>) {
        if self.is_held() {
            return;
        }
        let mut first = self.pending() == 0 && self.open_left == 0;
        while !self.eof && self.pending() < max {
            if self.open_left > 0 && self.pending() == 0 {
                match self.read_in_place(&mut ext) {
                    Some(true) => continue,
                    Some(false) => break,
                    None => {}
                }
            }
            self.compact();
            if self.inbuf.capacity() - self.inbuf.len() < READ_STEP / 2 {
                self.inbuf.reserve(READ_STEP);
            }
            let spare = self.inbuf.spare_capacity_mut();
            let want = if first {
                spare.len().min(FIRST_READ)
            } else {
                spare.len()
            };
            // SAFETY: recv(2) writes at most `want` <= spare.len() bytes into the vector's spare
            // capacity; only the bytes it reports written are then counted as initialised.
            let n = unsafe { libc::recv(self.sock.fd(), spare.as_mut_ptr() as *mut libc::c_void, want, 0) };
            if n > 0 {
                // SAFETY: recv initialised n bytes after the current length.
                unsafe { self.inbuf.set_len(self.inbuf.len() + n as usize) };
                // A step drain that found the start of a large fragment stops here: the caller
                // frames it (Stream::feed opens it) and the next read puts the rest of its
                // payload straight into the message. Only after the first read of a batch, so
                // that a fragment that cannot be opened is read on the ordinary way; never
                // while writing (`max` unbounded), where the peer may wait for us to read.
                if first && max != usize::MAX && self.large_fragment_begins() {
                    break;
                }
                first = false;
                continue;
            }
            if n == 0 {
                self.eof = true;
                break;
            }
            match io::Error::last_os_error().kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => break,
                _ => self.eof = true,
            }
        }
    }

    /// The buffered bytes end inside a fragment that can be received in place: its headers are
    /// here, most of its payload is not (the condition under which [`Stream::feed`] opens it).
    fn large_fragment_begins(&self) -> bool {
        let mut avail = &self.inbuf[self.consumed..];
        while avail.len() >= FRAGHDR_LEN {
            let len = u32::from_be_bytes([avail[8], avail[9], avail[10], avail[11]]) as usize;
            if avail.len() < FRAGHDR_LEN + len {
                return len >= IN_PLACE_MIN && avail.len() >= FRAGHDR_LEN + pvm_proto::codes::MSGHDR_LEN;
            }
            avail = &avail[FRAGHDR_LEN + len..];
        }
        false
    }

    /// Feeds every whole fragment buffered here to `reasm` (this stream's own, or the one of the
    /// pvmd connection) without copying it out first; complete messages go to `out`.
    pub fn feed(&mut self, reasm: Option<&mut Reassembler>, out: &mut Vec<Message>) {
        out.append(&mut self.ready);
        if self.is_held() {
            return;
        }
        let own = reasm.is_none();
        let reasm = match reasm {
            Some(r) => r,
            None => &mut self.reasm,
        };
        if self.open_left > 0 {
            // Bytes of the open fragment that were read into the stream buffer (a drain that
            // had not the reassembler at hand): copied over.
            let n = self.open_left.min(self.inbuf.len() - self.consumed);
            if n > 0 {
                if let Some((buf, _)) = reasm.open_buffer() {
                    buf.extend_from_slice(&self.inbuf[self.consumed..self.consumed + n]);
                }
                self.consumed += n;
                self.open_left -= n;
                if let Some(m) = reasm.advance(n) {
                    out.push(m);
                }
            }
            if self.open_left > 0 {
                self.compact();
                return;
            }
        }
        loop {
            let avail = &self.inbuf[self.consumed..];
            if avail.len() < FRAGHDR_LEN {
                break;
            }
            let len = u32::from_be_bytes([avail[8], avail[9], avail[10], avail[11]]) as usize;
            if len > MAX_IN_PLACE_FRAG {
                self.eof = true;
                self.inbuf.clear();
                self.consumed = 0;
                return;
            }
            if avail.len() < FRAGHDR_LEN + len {
                break;
            }
            if let Ok(Some(m)) = reasm.push(&avail[..FRAGHDR_LEN + len]) {
                out.push(m);
            }
            self.consumed += FRAGHDR_LEN + len;
        }
        // A large fragment whose header (and message header) is here: the rest of it is read
        // in place. Refused ones stay buffered and take the ordinary path.
        let avail = &self.inbuf[self.consumed..];
        if avail.len() >= FRAGHDR_LEN + pvm_proto::codes::MSGHDR_LEN {
            let len = u32::from_be_bytes([avail[8], avail[9], avail[10], avail[11]]) as usize;
            if len >= IN_PLACE_MIN && avail.len() < FRAGHDR_LEN + len {
                if own && self.peer_max_frag > 0 && reasm.pending() == 0 {
                    if let Some((m, tail, shared)) = deliver_early(avail, self.sock.fd()) {
                        out.push(m);
                        self.consumed = self.inbuf.len();
                        self.compact();
                        self.held = Some(shared);
                        self.tail = Some(tail);
                        return;
                    }
                }
                match reasm.open_fragment(avail) {
                    Ok(left) => {
                        self.consumed = self.inbuf.len();
                        self.open_left = left;
                        self.open_own = own;
                    }
                    // Only fragments up to MAX_FRAG are ever buffered whole: a larger one
                    // that cannot be received in place ends the stream.
                    Err(_) if len > MAX_FRAG => {
                        self.eof = true;
                        self.inbuf.clear();
                        self.consumed = 0;
                        return;
                    }
                    Err(_) => {}
                }
            }
        }
        self.compact();
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

/// The message whose single fragment begins `avail` (the unframed bytes of a route to a pvm-rs
/// peer), delivered before the rest of it arrives, with the tail that reads the rest from `fd`
/// (`lazy.rs`), if it qualifies: a whole message in one fragment of at least
/// [`crate::lazy::LAZY_MIN`] body bytes within the library's limit, in a user context.
fn deliver_early(avail: &[u8], fd: RawFd) -> Option<(Message, crate::lazy::Tail, std::sync::Arc<crate::lazy::Shared>)> {
    use pvm_proto::codes::MSGHDR_LEN;
    use pvm_proto::frag::{FragFlags, StreamFragHeader};
    let fh = StreamFragHeader::parse(avail, u32::MAX).ok()?;
    let len = fh.len as usize;
    if !fh.flags.contains(FragFlags::SOM | FragFlags::EOM)
        || len < MSGHDR_LEN + crate::lazy::LAZY_MIN
        || len - MSGHDR_LEN > crate::core::MAX_MESSAGE
        || avail.len() < FRAGHDR_LEN + MSGHDR_LEN
        || avail.len() >= FRAGHDR_LEN + len
    {
        return None;
    }
    let header = pvm_proto::mesg::MsgHeader::parse(&avail[FRAGHDR_LEN..]).ok()?;
    if (0x7fff0..=0x7ffff).contains(&header.ctx) {
        return None;
    }
    let total = len - MSGHDR_LEN;
    let head = &avail[FRAGHDR_LEN + MSGHDR_LEN..];
    let (tail, shared) = crate::lazy::Tail::new(fd, total - head.len(), total).ok()?;
    let mut body = crate::pool::for_message(total, true);
    body.clear();
    body.reserve(total);
    body.extend_from_slice(head);
    let m = Message {
        src: fh.src,
        dst: fh.dst,
        header,
        body,
    };
    Some((m, tail, shared))
}

/// Waits until one of `fds` is readable (or writable for `want_write`), at most `timeout`.
pub fn poll_fds(fds: &[(RawFd, bool)], timeout: Option<Duration>) -> Vec<(bool, bool)> {
    poll_fds_spin(fds, timeout, true)
}

/// [`poll_fds`], spinning first only if `may_spin` (and spin.rs allows it).
pub fn poll_fds_spin(fds: &[(RawFd, bool)], timeout: Option<Duration>, may_spin: bool) -> Vec<(bool, bool)> {
    let mut p: Vec<libc::pollfd> = fds
        .iter()
        .map(|&(fd, w)| libc::pollfd {
            fd,
            events: libc::POLLIN | if w { libc::POLLOUT } else { 0 },
            revents: 0,
        })
        .collect();
    // spin.rs: look without sleeping for a short while first.
    let mut timeout = timeout;
    let mut n = 0;
    let spin = match timeout {
        _ if !may_spin => None,
        Some(t) if t.is_zero() => None,
        Some(t) => crate::spin::window().map(|w| w.min(t)),
        None => crate::spin::window(),
    };
    if let Some(w) = spin {
        let start = Instant::now();
        loop {
            // SAFETY: as the poll below.
            n = unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, 0) };
            if n != 0 || start.elapsed() >= w {
                break;
            }
            std::hint::spin_loop();
        }
        timeout = timeout.map(|t| t.saturating_sub(start.elapsed()));
    }
    if n == 0 {
        let ms = match timeout {
            None => -1,
            // Rounded up: a wait of 300 µs must not become a poll that returns at once.
            Some(d) => d.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32,
        };
        // SAFETY: `p` is a valid array of `p.len()` pollfd structures for the duration of the call.
        n = unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, ms) };
    }
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
    write_all_vectored(streams, idx, &[data])
}

/// Most buffers handed to one sendmsg(2) (the kernel's IOV_MAX).
const IOV_MAX: usize = 1024;

/// Writes all of `bufs`, in order, to `streams[idx]` with gathering writes (fragment headers
/// and message bytes go out in place, without being copied into one buffer first), draining
/// every stream's input while the socket is full. Returns false if the stream broke.
/// MSG_NOSIGNAL: a peer that went away must give EPIPE, not a SIGPIPE that would kill the
/// user's program.
pub fn write_all_vectored(streams: &mut [&mut Stream], idx: usize, bufs: &[&[u8]]) -> bool {
    let (mut i, mut off) = (0usize, 0usize);
    let mut iov: Vec<libc::iovec> = Vec::with_capacity(bufs.len().min(IOV_MAX));
    loop {
        while i < bufs.len() && off >= bufs[i].len() {
            off -= bufs[i].len();
            i += 1;
        }
        if i >= bufs.len() {
            return true;
        }
        iov.clear();
        for (k, b) in bufs[i..].iter().take(IOV_MAX).enumerate() {
            let start = if k == 0 { off } else { 0 };
            iov.push(libc::iovec {
                iov_base: b[start..].as_ptr() as *mut libc::c_void,
                iov_len: b.len() - start,
            });
        }
        // SAFETY: msghdr is plain data; all-zero is a valid value, then only the iovec fields
        // are set. Every iovec points into a live slice of `bufs` for the duration of the call.
        let n = unsafe {
            let mut m: libc::msghdr = std::mem::zeroed();
            m.msg_iov = iov.as_mut_ptr();
            m.msg_iovlen = iov.len() as _;
            libc::sendmsg(streams[idx].sock.fd(), &m, libc::MSG_NOSIGNAL)
        };
        if n > 0 {
            off += n as usize;
            continue;
        }
        if n == 0 {
            return false;
        }
        match io::Error::last_os_error().kind() {
            io::ErrorKind::Interrupted => {}
            io::ErrorKind::WouldBlock => {
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
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// In-place reads done (the test below checks that its large fragments took that path).
    pub static IN_PLACE_READS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

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
    fn step_drains_complete_the_largest_fragment() {
        let (mut s, peer) = pair();
        let mut frag = vec![0u8; 16];
        frag[8..12].copy_from_slice(&(MAX_FRAG as u32).to_be_bytes());
        frag.resize(16 + MAX_FRAG, 7);
        let w = std::thread::spawn(move || {
            let mut peer = peer;
            peer.write_all(&frag).unwrap();
            peer.write_all(&frag).unwrap();
        });
        let mut got = 0;
        let deadline = Instant::now() + Duration::from_secs(10);
        while got < 2 && Instant::now() < deadline {
            poll_fds(&[(s.sock.fd(), false)], Some(Duration::from_millis(100)));
            s.drain_step();
            while let Some(f) = s.next_fragment() {
                assert_eq!(f.len(), 16 + MAX_FRAG);
                got += 1;
            }
        }
        w.join().unwrap();
        assert_eq!(got, 2);
    }

    /// Messages with large fragments (received in place) and small ones, written in uneven
    /// pieces, come out byte for byte, whether the stream's own reassembler is used or the
    /// caller's (the pvmd stream), and whether drains without the reassembler interleave.
    #[test]
    fn large_fragments_received_in_place_reassemble_exactly() {
        use pvm_proto::mesg::MsgHeader;
        use pvm_proto::tid::Tid;
        let mk = |n: usize, tag: i32| Message {
            src: Tid(0x40001),
            dst: Tid(0x40002),
            header: MsgHeader {
                enc: 0x10,
                tag,
                ctx: 0,
                wid: 0,
                crc: 0,
            },
            body: (0..n).map(|i| (i * 7 + tag as usize) as u8).collect(),
        };
        let msgs = vec![mk(700_000, 1), mk(10, 2), mk(300_000, 3), mk(0, 4), mk(1 << 20, 5)];
        let mut wire = Vec::new();
        for (i, m) in msgs.iter().enumerate() {
            let fs = if i == 2 { 4080 } else { 300_000 };
            for f in m.to_fragments(fs) {
                wire.extend_from_slice(&f);
            }
        }
        for external in [false, true] {
            let (mut s, peer) = pair();
            let w = wire.clone();
            let t = std::thread::spawn(move || {
                let mut peer = peer;
                let mut at = 0;
                let mut k = 1usize;
                while at < w.len() {
                    k = (k * 7919 + 13) % 150_000 + 1;
                    let end = (at + k).min(w.len());
                    peer.write_all(&w[at..end]).unwrap();
                    at = end;
                    // Let the reader catch up, so that it sees fragments begin before they end.
                    std::thread::sleep(Duration::from_millis(2));
                }
            });
            let mut ext = Reassembler::contiguous(crate::core::lib_limits());
            let mut got = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut turn = 0;
            while got.len() < msgs.len() && Instant::now() < deadline {
                poll_fds(&[(s.sock.fd(), false)], Some(Duration::from_millis(50)));
                turn += 1;
                match (external, turn % 3) {
                    (_, 0) => s.drain(), // as while writing: no reassembler at hand
                    (true, _) => s.drain_step_with(&mut ext),
                    (false, _) => s.drain_step(),
                }
                s.feed(if external { Some(&mut ext) } else { None }, &mut got);
            }
            t.join().unwrap();
            assert_eq!(got.len(), msgs.len(), "external reassembler: {external}");
            assert!(
                IN_PLACE_READS.swap(0, std::sync::atomic::Ordering::Relaxed) > 0,
                "no in-place read"
            );
            for (g, m) in got.iter().zip(&msgs) {
                assert!(g == m, "message tag {} differs (external {external})", m.header.tag);
            }
        }
    }

    /// On a route to a pvm-rs peer, a large single-fragment message is delivered once its
    /// headers are here, with a tail that reads the rest; the stream reads nothing else until
    /// the tail is in, then the next message comes out whole. On a legacy route (no large
    /// fragments offered) the same bytes give a whole message and no tail.
    #[test]
    fn large_messages_from_pvm_rs_peers_are_delivered_early() {
        use pvm_proto::mesg::MsgHeader;
        use pvm_proto::tid::Tid;
        let mk = |n: usize, tag: i32| Message {
            src: Tid(0x40001),
            dst: Tid(0x40002),
            header: MsgHeader {
                enc: 0x10,
                tag,
                ctx: 0,
                wid: 0,
                crc: 0,
            },
            body: (0..n).map(|i| (i * 11 + tag as usize) as u8).collect(),
        };
        let big = mk(crate::lazy::LAZY_MIN * 3 + 5, 1);
        let next = mk(100, 2);
        let mut wire = big.to_fragments(ROUTE_MAX_FRAG).concat();
        wire.extend(next.to_fragments(4080).concat());
        for peer_max_frag in [ROUTE_MAX_FRAG, 0] {
            let (mut s, peer) = pair();
            s.peer_max_frag = peer_max_frag;
            let w = wire.clone();
            let t = std::thread::spawn(move || {
                let mut peer = peer;
                peer.write_all(&w[..5000]).unwrap();
                std::thread::sleep(Duration::from_millis(50));
                peer.write_all(&w[5000..]).unwrap();
            });
            let mut got: Vec<Message> = Vec::new();
            let mut tails = 0;
            let deadline = Instant::now() + Duration::from_secs(20);
            while got.len() < 2 && Instant::now() < deadline {
                if s.held() {
                    std::thread::sleep(Duration::from_millis(1));
                } else {
                    poll_fds(&[(s.sock.fd(), false)], Some(Duration::from_millis(50)));
                }
                s.drain_step();
                let before = got.len();
                s.feed(None, &mut got);
                if let Some(mut tail) = s.take_tail() {
                    tails += 1;
                    assert_eq!(got.len(), before + 1);
                    let m = got.last_mut().unwrap();
                    assert!(m.body.len() < big.body.len(), "delivered whole");
                    assert!(s.held(), "stream not held while the tail is out");
                    s.drain_step();
                    assert_eq!(s.pending(), 0, "read from a held stream");
                    assert!(tail.fill(&mut m.body, 10, true));
                    tail.finish(&mut m.body);
                    assert_eq!(tail.left(), 0);
                    assert!(!s.held());
                }
            }
            t.join().unwrap();
            assert_eq!(tails, usize::from(peer_max_frag > 0), "peer_max_frag {peer_max_frag}");
            assert_eq!(got.len(), 2);
            assert!(got[0] == big, "big message differs");
            assert!(got[1] == next, "next message differs");
        }
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
