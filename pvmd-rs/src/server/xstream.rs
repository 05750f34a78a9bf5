//! The tokio side of the stream transport between pvmd-rs daemons (decisions in
//! `daemon/stream.rs`, wire form in docs/extensions.md): the TCP listener, one connection per
//! peer with a reader task and a writer, and the events they send to the main loop.
//!
//! A frame is written straight from the main loop when nothing is queued for that connection
//! (one `writev` of header, message header and payload), as the task connections do; the rest
//! goes to the connection's writer task. The reader hands over frames in batches of what one
//! buffered read holds, so many small frames cost one wake-up of the main loop.

use std::collections::{HashMap, VecDeque};
use std::io::IoSlice;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{apply, ConnHandle};
use crate::daemon::stream::{FrameHeader, OutFrame, StreamCmd, FRAME_HDR_LEN, HELLO_LEN, PAYLOAD_PREFIX};
use crate::daemon::{AuthFiles, ConnId, Daemon};
use crate::log::Log;
use pvm_proto::frag::{FragFlags, StreamFragHeader};
use pvm_proto::mesg::HEADER_LEN as MSGHDR_LEN;

/// Socket buffers asked for on a stream (as on the datagram socket).
const STREAM_SOCKET_BUFFER: i32 = 4 << 20;
/// Time a connection has to say hello (or to answer ours).
const HELLO_TIME: Duration = Duration::from_secs(5);
/// Connections waiting for their hello at once; more are closed at once.
const MAX_PENDING_HELLOS: usize = 64;
/// Frames one reader batch holds at most.
const READ_BATCH: usize = 64;
/// Bytes (in KB) a stream's reader may have handed to the main loop and not yet seen
/// processed: past this it stops reading, and TCP flow control holds the peer back.
const READ_BUDGET_KB: u32 = 128 << 10;

pub(super) enum XEvent {
    /// An accepted connection and its hello.
    Hello(TcpStream, Ipv4Addr, [u8; HELLO_LEN]),
    Connected {
        host: u32,
        gen: u64,
        stream: TcpStream,
        ack: [u8; HELLO_LEN],
    },
    Down {
        host: u32,
        gen: u64,
        why: String,
    },
    Frames {
        host: u32,
        gen: u64,
        frames: Vec<(FrameHeader, Vec<u8>)>,
        /// Returned to the reader's budget when the batch is dropped.
        budget: Vec<tokio::sync::OwnedSemaphorePermit>,
    },
}

/// Bytes to write: a frame (from `skip` on) or plain bytes (the hello answer).
enum WItem {
    Frame(OutFrame, usize),
    Raw(Vec<u8>),
}

impl WItem {
    fn slices(&self) -> Vec<IoSlice<'_>> {
        match self {
            WItem::Raw(b) => vec![IoSlice::new(b)],
            WItem::Frame(f, skip) => {
                let mut v = Vec::with_capacity(3);
                let mut skip = *skip;
                let mh: &[u8] = f.mhdr.as_ref().map_or(&[], |m| &m[..]);
                for part in [&f.hdr[..], mh, &f.data[..]] {
                    if skip >= part.len() {
                        skip -= part.len();
                        continue;
                    }
                    v.push(IoSlice::new(&part[skip..]));
                    skip = 0;
                }
                v
            }
        }
    }

    fn len(&self) -> usize {
        match self {
            WItem::Raw(b) => b.len(),
            WItem::Frame(f, skip) => f.len() - skip,
        }
    }

    /// Marks `n` more bytes written; true when all are.
    fn advance(&mut self, n: usize) -> bool {
        match self {
            WItem::Raw(b) => {
                b.drain(..n.min(b.len()));
                b.is_empty()
            }
            WItem::Frame(f, skip) => {
                *skip += n;
                *skip >= f.len()
            }
        }
    }
}

struct XConn {
    gen: u64,
    wr: Arc<OwnedWriteHalf>,
    wtx: mpsc::UnboundedSender<WItem>,
    queued: Arc<AtomicUsize>,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

impl Drop for XConn {
    fn drop(&mut self) {
        self.reader.abort();
        self.writer.abort();
    }
}

/// The streams of one daemon.
pub(super) struct XShell {
    listener: Option<TcpListener>,
    conns: HashMap<u32, XConn>,
    tx: mpsc::UnboundedSender<XEvent>,
    pending_hellos: Arc<AtomicUsize>,
}

/// How long written frames (or keepalive probes) may stay unanswered by the peer's kernel
/// before the stream counts as broken. A peer whose host vanished (powered off, cut off, or
/// whose RST after a kill -9 was lost) never answers, and TCP alone would retransmit for about
/// 15 minutes, or, on an idle stream, never notice, while a request sent to that host before
/// it died waits for its reply; past this the link falls back to datagrams, whose failure
/// detection then deletes the host. A live peer's kernel answers even when its pvmd reads
/// nothing (a zero window is acknowledged), so load alone does not trip it.
const STREAM_USER_TIMEOUT_MS: u32 = 5_000;
/// Keepalive of an idle stream: first probe after this many seconds without traffic, then one
/// a second (a few bytes each way per link and second while idle).
const STREAM_KEEPIDLE_S: u32 = 2;

fn tune(fd: std::os::fd::RawFd) {
    let _ = crate::sys::set_socket_buffers(fd, STREAM_SOCKET_BUFFER);
    let _ = crate::sys::set_tcp_user_timeout(fd, STREAM_USER_TIMEOUT_MS);
    let _ = crate::sys::set_tcp_keepalive(fd, STREAM_KEEPIDLE_S, 1, 5);
}

impl XShell {
    /// Listens on the datagram socket's address (any port) and tells the daemon the port;
    /// the receiver gets the events of the stream tasks.
    pub(super) fn new<A: AuthFiles>(
        udp: &Option<tokio::net::UdpSocket>,
        daemon: &mut Daemon<A>,
        log: &mut Log,
    ) -> (XShell, mpsc::UnboundedReceiver<XEvent>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut sh = XShell {
            listener: None,
            conns: HashMap::new(),
            tx,
            pending_hellos: Arc::new(AtomicUsize::new(0)),
        };
        let Some(SocketAddr::V4(a)) = udp.as_ref().and_then(|u| u.local_addr().ok()) else {
            return (sh, rx);
        };
        if std::env::var_os("PVMD_NO_XSTREAM").is_some() {
            return (sh, rx);
        }
        let bound = TcpSocket::new_v4().and_then(|s| {
            tune(s.as_raw_fd());
            s.bind(SocketAddr::V4(SocketAddrV4::new(*a.ip(), 0)))?;
            s.listen(64)
        });
        match bound.and_then(|l| Ok((l.local_addr()?, l))) {
            Ok((addr, l)) => {
                daemon.set_stream_port(addr.port());
                log.line(&format!("netinit() stream port {}", addr.port()));
                sh.listener = Some(l);
            }
            Err(e) => log.line(&format!("netinit() no stream listener: {e}")),
        }
        (sh, rx)
    }

    pub(super) async fn accept(&self) -> std::io::Result<(TcpStream, SocketAddr)> {
        match &self.listener {
            Some(l) => l.accept().await,
            None => std::future::pending().await,
        }
    }

    /// A new connection: it has [`HELLO_TIME`] to say who it is.
    pub(super) fn accepted(&mut self, r: std::io::Result<(TcpStream, SocketAddr)>, log: &mut Log) {
        let (mut s, from) = match r {
            Ok(x) => x,
            Err(e) => {
                log.line(&format!("xstream accept: {e}"));
                return;
            }
        };
        let SocketAddr::V4(from) = from else { return };
        if self.pending_hellos.load(Ordering::Relaxed) >= MAX_PENDING_HELLOS {
            log.line(&format!(
                "xstream: too many connections waiting; closing one from {from}"
            ));
            return;
        }
        self.pending_hellos.fetch_add(1, Ordering::Relaxed);
        let pending = self.pending_hellos.clone();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let mut b = [0u8; HELLO_LEN];
            let r = tokio::time::timeout(HELLO_TIME, s.read_exact(&mut b)).await;
            pending.fetch_sub(1, Ordering::Relaxed);
            if let Ok(Ok(_)) = r {
                let _ = tx.send(XEvent::Hello(s, *from.ip(), b));
            }
        });
    }

    fn connect(&self, host: u32, gen: u64, addr: SocketAddrV4, hello: [u8; HELLO_LEN]) {
        let tx = self.tx.clone();
        // Test hook: connect this much later, so that traffic is under way when the link
        // switches over (interop-tests/tests/xstream.rs).
        let delay = std::env::var("PVMD_XSTREAM_DELAY_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map_or(Duration::ZERO, Duration::from_millis);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let r = tokio::time::timeout(HELLO_TIME, async {
                let sock = TcpSocket::new_v4()?;
                tune(sock.as_raw_fd());
                let mut s = sock.connect(SocketAddr::V4(addr)).await?;
                s.write_all(&hello).await?;
                let mut ack = [0u8; HELLO_LEN];
                s.read_exact(&mut ack).await?;
                Ok::<_, std::io::Error>((s, ack))
            })
            .await;
            let ev = match r {
                Ok(Ok((stream, ack))) => XEvent::Connected { host, gen, stream, ack },
                Ok(Err(e)) => XEvent::Down {
                    host,
                    gen,
                    why: format!("connect to {addr}: {e}"),
                },
                Err(_) => XEvent::Down {
                    host,
                    gen,
                    why: format!("connect to {addr}: no answer in time"),
                },
            };
            let _ = tx.send(ev);
        });
    }

    /// Takes a connection for link `host`, starting its reader and writer; `first` is written
    /// before anything else.
    fn adopt(&mut self, host: u32, gen: u64, stream: TcpStream, first: Option<Vec<u8>>) {
        let _ = stream.set_nodelay(true);
        let (rd, wr) = stream.into_split();
        let wr = Arc::new(wr);
        let (wtx, wrx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        if let Some(b) = first {
            queued.fetch_add(b.len(), Ordering::Relaxed);
            let _ = wtx.send(WItem::Raw(b));
        }
        let reader = tokio::spawn(read_loop(rd, host, gen, self.tx.clone()));
        let writer = tokio::spawn(write_loop(wr.clone(), wrx, queued.clone(), host, gen, self.tx.clone()));
        self.conns.insert(
            host,
            XConn {
                gen,
                wr,
                wtx,
                queued,
                reader,
                writer,
            },
        );
    }

    /// Writes now what the socket takes (one `writev` over many frames), queues the rest;
    /// false on a write error.
    fn write(&mut self, host: u32, gen: u64, frames: Vec<OutFrame>) -> bool {
        let Some(c) = self.conns.get(&host).filter(|c| c.gen == gen) else {
            return true;
        };
        let mut items: VecDeque<WItem> = frames.into_iter().map(|f| WItem::Frame(f, 0)).collect();
        if c.queued.load(Ordering::Relaxed) == 0 {
            while !items.is_empty() {
                let slices: Vec<IoSlice<'_>> = items.iter().flat_map(|i| i.slices()).take(MAX_IOV).collect();
                let want: usize = slices.iter().map(|s| s.len()).sum();
                let r = c.wr.try_write_vectored(&slices);
                drop(slices);
                match r {
                    Ok(n) => {
                        advance(&mut items, n);
                        if n < want {
                            break;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(_) => return false,
                }
            }
        }
        for item in items {
            c.queued.fetch_add(item.len(), Ordering::Relaxed);
            let _ = c.wtx.send(item);
        }
        true
    }
}

/// Most slices one `writev` is given.
const MAX_IOV: usize = 512;

/// Marks `n` bytes of the queue's head written.
fn advance(items: &mut VecDeque<WItem>, mut n: usize) {
    while n > 0 {
        let Some(i) = items.front_mut() else { break };
        let l = i.len();
        if n >= l {
            items.pop_front();
            n -= l;
        } else {
            i.advance(n);
            n = 0;
        }
    }
}

/// Reads frames off a stream. Small frames come out of one buffer filled by large reads (many
/// frames per system call); a payload is read into its own buffer, first what the buffer
/// already holds, then the rest straight from the socket into the payload's spare capacity:
/// no zero-filling and no second copy of the payload in user space.
struct FrameReader<R> {
    rd: R,
    buf: Vec<u8>,
    pos: usize,
    /// Bytes the next buffered read asks for: after a big frame only a little (the next
    /// header, and little of the next payload that would then be copied), else many frames'
    /// worth.
    chunk: usize,
}

/// Bytes one buffered read asks for.
const READ_CHUNK: usize = 64 << 10;
/// ... after a frame bigger than that.
const READ_CHUNK_AFTER_BIG: usize = 4 << 10;

impl<R: tokio::io::AsyncRead + Unpin> FrameReader<R> {
    fn new(rd: R) -> Self {
        FrameReader {
            rd,
            buf: Vec::new(),
            pos: 0,
            chunk: READ_CHUNK,
        }
    }

    fn pending(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// Reads more into the buffer (its spare capacity); false at end of stream.
    async fn fill(&mut self) -> std::io::Result<bool> {
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.reserve(self.chunk);
        Ok((&mut self.rd).take(self.chunk as u64).read_buf(&mut self.buf).await? > 0)
    }

    async fn header(&mut self) -> std::io::Result<[u8; FRAME_HDR_LEN]> {
        while self.pending().len() < FRAME_HDR_LEN {
            if !self.fill().await? {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
        let mut hb = [0u8; FRAME_HDR_LEN];
        hb.copy_from_slice(&self.pending()[..FRAME_HDR_LEN]);
        self.pos += FRAME_HDR_LEN;
        Ok(hb)
    }

    /// The payload of `len` bytes after [`PAYLOAD_PREFIX`] bytes of room.
    async fn payload(&mut self, len: usize) -> std::io::Result<Vec<u8>> {
        self.chunk = if len > READ_CHUNK {
            READ_CHUNK_AFTER_BIG
        } else {
            READ_CHUNK
        };
        let mut p = Vec::with_capacity(PAYLOAD_PREFIX + len);
        p.resize(PAYLOAD_PREFIX, 0);
        let have = self.pending().len().min(len);
        p.extend_from_slice(&self.pending()[..have]);
        self.pos += have;
        while p.len() < PAYLOAD_PREFIX + len {
            let want = (PAYLOAD_PREFIX + len - p.len()) as u64;
            if (&mut self.rd).take(want).read_buf(&mut p).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
        Ok(p)
    }

    /// True when the next frame is whole in the buffer (handed over with this batch).
    fn next_whole(&self) -> bool {
        let b = self.pending();
        b.len() >= FRAME_HDR_LEN
            && FrameHeader::parse(&b[..FRAME_HDR_LEN]).is_ok_and(|n| b.len() >= FRAME_HDR_LEN + n.len as usize)
    }
}

async fn read_loop(rd: OwnedReadHalf, host: u32, gen: u64, tx: mpsc::UnboundedSender<XEvent>) {
    let mut r = FrameReader::new(rd);
    let mut batch = Vec::new();
    let mut budget = Vec::new();
    let sem = Arc::new(tokio::sync::Semaphore::new(READ_BUDGET_KB as usize));
    let why = loop {
        let hb = match r.header().await {
            Ok(hb) => hb,
            Err(e) => {
                break if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    "connection closed".to_string()
                } else {
                    format!("read: {e}")
                };
            }
        };
        let h = match FrameHeader::parse(&hb) {
            Ok(h) => h,
            Err(e) => break e.to_string(),
        };
        let kb = (h.len / 1024 + 1).min(READ_BUDGET_KB);
        let permit = match sem.clone().try_acquire_many_owned(kb) {
            Ok(p) => p,
            Err(_) => {
                // Over budget: what is batched goes first (its permits come back when the
                // main loop is done with it), then wait.
                if !batch.is_empty() {
                    let frames = std::mem::take(&mut batch);
                    let budget = std::mem::take(&mut budget);
                    if tx
                        .send(XEvent::Frames {
                            host,
                            gen,
                            frames,
                            budget,
                        })
                        .is_err()
                    {
                        return;
                    }
                }
                match sem.clone().acquire_many_owned(kb).await {
                    Ok(p) => p,
                    Err(_) => return,
                }
            }
        };
        budget.push(permit);
        // Bounded by FrameHeader::parse (MAX_FRAME); room for the task header first.
        let p = match r.payload(h.len as usize).await {
            Ok(p) => p,
            Err(e) => break format!("read inside a frame: {e}"),
        };
        batch.push((h, p));
        // Handed over unless the next frame is already whole in the buffer: a frame never
        // waits for the rest of the one after it.
        if !r.next_whole() || batch.len() >= READ_BATCH {
            let frames = std::mem::take(&mut batch);
            let budget = std::mem::take(&mut budget);
            if tx
                .send(XEvent::Frames {
                    host,
                    gen,
                    frames,
                    budget,
                })
                .is_err()
            {
                return;
            }
        }
    };
    if !batch.is_empty() {
        let _ = tx.send(XEvent::Frames {
            host,
            gen,
            frames: batch,
            budget,
        });
    }
    let _ = tx.send(XEvent::Down { host, gen, why });
}

async fn write_loop(
    wr: Arc<OwnedWriteHalf>,
    mut rx: mpsc::UnboundedReceiver<WItem>,
    queued: Arc<AtomicUsize>,
    host: u32,
    gen: u64,
    tx: mpsc::UnboundedSender<XEvent>,
) {
    let mut items: VecDeque<WItem> = VecDeque::new();
    while let Some(first) = rx.recv().await {
        items.push_back(first);
        while items.len() < 128 {
            match rx.try_recv() {
                Ok(i) => items.push_back(i),
                Err(_) => break,
            }
        }
        while !items.is_empty() {
            if let Err(e) = wr.writable().await {
                let _ = tx.send(XEvent::Down {
                    host,
                    gen,
                    why: format!("write: {e}"),
                });
                return;
            }
            let slices: Vec<IoSlice<'_>> = items.iter().flat_map(|i| i.slices()).take(MAX_IOV).collect();
            let r = wr.try_write_vectored(&slices);
            drop(slices);
            let n = match r {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => {
                    let _ = tx.send(XEvent::Down {
                        host,
                        gen,
                        why: format!("write: {e}"),
                    });
                    return;
                }
            };
            queued.fetch_sub(n, Ordering::Relaxed);
            advance(&mut items, n);
        }
    }
}

/// A big fragment from a local task for a task of another host, passed on while it arrives:
/// each piece read from the task's socket becomes a fragment of its own (SOM on the first,
/// EOM on the last, as the original had them), handed to the daemon as the buffer it was read
/// into. Collected whole instead, the fragment would cross the machine store-and-forward (the
/// receiving pvmd too reads a frame whole before passing it on); in pieces, the stream, the
/// peer daemon and the receiving task work on the first pieces while the sender writes the
/// rest, and no piece is copied in user space. A sender that dies half-way leaves the
/// receiver a message without its end, as the legacy daemons' 4 KB fragments do.
pub(super) struct Pieces {
    h: StreamFragHeader,
    pending: Vec<u8>,
    first: bool,
}

impl Pieces {
    pub(super) fn new(h: StreamFragHeader, first: Vec<u8>) -> Pieces {
        Pieces {
            h,
            pending: first,
            first: true,
        }
    }

    /// The next bytes of the fragment (`last`: its end); returns the pieces to route now, in
    /// order (a piece is the buffer it was read into; only a first piece shorter than the
    /// message header is merged with what follows).
    pub(super) fn push(&mut self, c: Vec<u8>, last: bool) -> Vec<(StreamFragHeader, Vec<u8>)> {
        let mut out = Vec::new();
        if self.ready() {
            out.push(self.piece(false));
        }
        if self.pending.is_empty() {
            self.pending = c;
        } else {
            self.pending.extend_from_slice(&c);
        }
        if last || self.ready() {
            out.push(self.piece(last));
        }
        out
    }

    /// True when what is pending can go as a piece of its own.
    fn ready(&self) -> bool {
        let som = self.first && self.h.flags.contains(FragFlags::SOM);
        let short = self.pending.is_empty() || som && self.pending.len() < MSGHDR_LEN;
        !short
    }

    fn piece(&mut self, last: bool) -> (StreamFragHeader, Vec<u8>) {
        let mut flags = FragFlags::empty();
        if self.first && self.h.flags.contains(FragFlags::SOM) {
            flags |= FragFlags::SOM;
        }
        if last && self.h.flags.contains(FragFlags::EOM) {
            flags |= FragFlags::EOM;
        }
        self.first = false;
        let p = std::mem::take(&mut self.pending);
        let h = StreamFragHeader {
            dst: self.h.dst,
            src: self.h.src,
            len: p.len() as u32,
            flags,
        };
        (h, p)
    }
}

/// Carries out what the daemon asked of the streams; true if that made it decide to halt.
pub(super) fn flush<A: AuthFiles>(
    xs: &mut XShell,
    daemon: &mut Daemon<A>,
    conns: &mut HashMap<ConnId, ConnHandle>,
    log: &mut Log,
) -> bool {
    let mut halt = false;
    // Consecutive frames for one stream go out in one `writev`.
    let mut batch: Option<(u32, u64, Vec<OutFrame>)> = None;
    let mut next = daemon.stream_poll();
    for _ in 0..100_000 {
        let cmd = next.take();
        let same = matches!((&cmd, &batch), (Some(StreamCmd::Write { host, gen, .. }), Some((h, g, _))) if host == h && gen == g);
        if !same {
            if let Some((host, gen, frames)) = batch.take() {
                if !xs.write(host, gen, frames) {
                    xs.conns.remove(&host);
                    let outs = daemon.stream_down(host, gen, "write failed");
                    halt |= apply(outs, daemon, conns, log);
                }
            }
        }
        let Some(cmd) = cmd else { break };
        match cmd {
            StreamCmd::Connect { host, gen, addr, hello } => xs.connect(host, gen, addr, hello),
            StreamCmd::Write { host, gen, frame } => match batch.as_mut() {
                Some((_, _, v)) => v.push(frame),
                None => batch = Some((host, gen, vec![frame])),
            },
            StreamCmd::Close { host, gen } => {
                if xs.conns.get(&host).is_some_and(|c| c.gen == gen) {
                    xs.conns.remove(&host);
                }
            }
            StreamCmd::Log(l) => log.line(&l),
        }
        next = daemon.stream_poll();
    }
    halt
}

/// One event from a stream task (and whatever else is already waiting); true to halt.
pub(super) fn event<A: AuthFiles>(
    first: XEvent,
    xs: &mut XShell,
    rx: &mut mpsc::UnboundedReceiver<XEvent>,
    daemon: &mut Daemon<A>,
    conns: &mut HashMap<ConnId, ConnHandle>,
    log: &mut Log,
) -> bool {
    let mut halt = false;
    let mut next = Some(first);
    let mut n = 0;
    while let Some(ev) = next.take() {
        match ev {
            XEvent::Hello(s, ip, hello) => match daemon.stream_accept(ip, &hello) {
                Ok((host, gen, ack)) => {
                    log.line(&format!("xstream host {host}: stream accepted from {ip}"));
                    xs.adopt(host, gen, s, Some(ack.to_vec()));
                }
                Err(why) => log.line(&format!("xstream: refused a connection from {ip}: {why}")),
            },
            XEvent::Connected { host, gen, stream, ack } => {
                let (ok, outs) = daemon.stream_connected(host, gen, &ack);
                if ok {
                    xs.adopt(host, gen, stream, None);
                }
                halt |= apply(outs, daemon, conns, log);
            }
            XEvent::Down { host, gen, why } => {
                if xs.conns.get(&host).is_some_and(|c| c.gen == gen) {
                    xs.conns.remove(&host);
                }
                let outs = daemon.stream_down(host, gen, &why);
                halt |= apply(outs, daemon, conns, log);
            }
            XEvent::Frames {
                host,
                gen,
                frames,
                budget,
            } => {
                for (h, p) in frames {
                    let outs = daemon.stream_frame(host, gen, h, p);
                    halt |= apply(outs, daemon, conns, log);
                }
                drop(budget); // the reader may read this much more
            }
        }
        n += 1;
        if n < 64 {
            next = rx.try_recv().ok();
        }
    }
    halt
}

#[cfg(test)]
mod tests {
    use super::*;
    use pvm_proto::Tid;

    fn hdr(flags: FragFlags, len: u32) -> StreamFragHeader {
        StreamFragHeader {
            dst: Tid::from_u32(0x80001),
            src: Tid::from_u32(0x40001),
            len,
            flags,
        }
    }

    /// Frames of every size, written in odd-sized pieces, come out whole and in order, each
    /// payload after the room for the task header; a frame cut by the end of the stream is an
    /// error, the end between frames is not.
    #[test]
    fn frame_reader_reads_frames_of_any_size() {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let sizes = [0usize, 1, 24, 4000, 70_000, 5, 300_000, 3, 65_536, 1 << 20, 7];
        let mut wire = Vec::new();
        for (i, &n) in sizes.iter().enumerate() {
            let h = FrameHeader {
                kind: crate::daemon::stream::KIND_DATA,
                flags: 0,
                len: n as u32,
                src: Tid::from_u32(0x40001),
                dst: Tid::from_u32(0x80001),
                ack: i as u64,
            };
            wire.extend_from_slice(&h.to_bytes());
            wire.extend((0..n).map(|k| (k * 7 + i) as u8));
        }
        rt.block_on(async {
            let (mut w, r) = tokio::io::duplex(100_000);
            let bytes = wire.clone();
            let writer = tokio::spawn(async move {
                for piece in bytes.chunks(33_333) {
                    w.write_all(piece).await.unwrap();
                }
            });
            let mut fr = FrameReader::new(r);
            for (i, &n) in sizes.iter().enumerate() {
                let h = FrameHeader::parse(&fr.header().await.unwrap()).unwrap();
                assert_eq!((h.len as usize, h.ack), (n, i as u64));
                let p = fr.payload(n).await.unwrap();
                assert_eq!(p.len(), PAYLOAD_PREFIX + n);
                assert!(
                    p[PAYLOAD_PREFIX..]
                        .iter()
                        .enumerate()
                        .all(|(k, &b)| b == (k * 7 + i) as u8),
                    "frame {i}"
                );
            }
            writer.await.unwrap();
            assert!(fr.header().await.is_err(), "end of stream");
        });
        // Cut 100 bytes into the payload of frame 3 (4000 bytes).
        let cut = (0..3).map(|i| FRAME_HDR_LEN + sizes[i]).sum::<usize>() + FRAME_HDR_LEN + 100;
        rt.block_on(async {
            let (mut w, r) = tokio::io::duplex(100_000);
            w.write_all(&wire[..cut]).await.unwrap();
            drop(w);
            let mut fr = FrameReader::new(r);
            for &n in &sizes[..3] {
                fr.header().await.unwrap();
                fr.payload(n).await.unwrap();
            }
            fr.header().await.unwrap();
            let e = fr.payload(sizes[3]).await.unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
        });
    }

    /// The pieces of a fragment carry its bytes in order, SOM on the first, EOM on the last,
    /// the message header whole in the first, each piece as read (no piece left behind).
    #[test]
    fn pieces_keep_bytes_order_and_flags() {
        let all: Vec<u8> = (0..200u32).map(|i| i as u8).collect();
        for cuts in [
            vec![0usize, 10, 31, 32, 100, 200],
            vec![0, 40, 41, 200],
            vec![5, 200],
            vec![0, 1, 2, 200],
        ] {
            for f in [
                FragFlags::SOM | FragFlags::EOM,
                FragFlags::SOM,
                FragFlags::EOM,
                FragFlags::empty(),
            ] {
                let mut ps = Pieces::new(hdr(f, 200), all[..cuts[0]].to_vec());
                let mut got = Vec::new();
                for w in cuts.windows(2) {
                    got.extend(ps.push(all[w[0]..w[1]].to_vec(), w[1] == 200));
                }
                let bytes: Vec<u8> = got.iter().flat_map(|(_, p)| p.iter().copied()).collect();
                assert_eq!(bytes, all, "{cuts:?} {f:?}");
                for (i, (h, p)) in got.iter().enumerate() {
                    assert_eq!(h.len as usize, p.len());
                    assert!(!p.is_empty());
                    assert_eq!(h.flags.contains(FragFlags::SOM), i == 0 && f.contains(FragFlags::SOM));
                    assert_eq!(
                        h.flags.contains(FragFlags::EOM),
                        i == got.len() - 1 && f.contains(FragFlags::EOM)
                    );
                }
                if f.contains(FragFlags::SOM) {
                    assert!(
                        got[0].1.len() >= MSGHDR_LEN,
                        "{cuts:?}: the message header in the first piece"
                    );
                }
            }
        }
    }
}
