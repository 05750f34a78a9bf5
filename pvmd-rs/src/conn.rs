//! Reading whole stream fragments from a task connection.

use std::cell::RefCell;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{ready, Poll};

use pvm_proto::frag::{StreamFragHeader, HEADER_LEN};
use pvm_proto::ParseError;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

#[derive(Debug, Error)]
pub enum ConnError {
    #[error("read: {0}")]
    Io(#[from] std::io::Error),
    /// The peer closed the stream inside a fragment.
    #[error("end of stream inside a fragment ({have} of {need} bytes)")]
    Truncated { have: usize, need: usize },
    #[error("bad fragment: {0}")]
    Parse(#[from] ParseError),
}

/// Owns the read half of a connection and its buffer; yields whole fragments.
///
/// Reads are large (several small fragments per system call, the libpvm writes a 4 KB fragment
/// per call); a fragment bigger than [`BIG`] is read straight into its own buffer, so relaying it
/// costs no extra copy. Memory grows only as bytes arrive: a claimed length is never allocated
/// up front.
pub struct FragReader<R> {
    rd: R,
    buf: Vec<u8>,
    /// Start of the unconsumed bytes in `buf`.
    pos: usize,
    /// Largest fragment payload accepted; raised by the daemon once the task has authenticated.
    limit: Arc<AtomicU32>,
    /// Payload bytes still to come of a big fragment being streamed.
    big_left: usize,
    /// Size of the next read: grows while reads fill it (a task sending a long message),
    /// shrinks back when they do not, so a busy connection hands over many fragments per
    /// read (and the relay writes them with one `writev`) while an idle one stays small.
    chunk: usize,
}

/// What one read produced.
#[derive(Debug)]
pub enum ReadEvent {
    /// Whole fragments.
    Frags(Vec<Frag>),
    /// The start of a fragment bigger than [`BIG`]: its header and the payload so far. The rest
    /// follows as [`ReadEvent::BigChunk`]s, so it can be passed on while it arrives.
    BigStart(StreamFragHeader, Vec<u8>),
    /// More of the big fragment; `true` on its last piece.
    BigChunk(Vec<u8>, bool),
}

/// Largest piece of a big fragment read at once. Below the daemon's malloc mmap threshold
/// (sys::tune_malloc, 1 MB): a piece of that size or more would be a fresh mmap, page faults
/// and munmap each time; smaller ones reuse the heap. A task's socket holds less than this
/// anyway (its send buffer, ~208 KB by default).
const STREAM_CHUNK: usize = 512 << 10;

/// Smallest read size: several 4 KB fragments per call, small enough that a thousand idle
/// connections stay cheap.
const READ_CHUNK: usize = 16 << 10;
/// Largest read size of a busy connection.
const MAX_READ_CHUNK: usize = 256 << 10;
/// Payloads above this get a buffer of their own instead of passing through `buf`.
pub const BIG: usize = 64 << 10;

thread_local! {
    /// Where a connection with nothing pending reads (see `read_more`): one for all of them.
    static IDLE_SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; READ_CHUNK].into_boxed_slice());
}

/// One fragment: header and payload.
pub type Frag = (StreamFragHeader, Vec<u8>);

/// One whole fragment still in the read buffer: header and payload.
pub type FragRef<'a> = (StreamFragHeader, &'a [u8]);

/// Takes whole fragments from the front of what was read before they are copied out of the
/// read buffer (the relay fast path writes them from there); returns how many it took.
pub type Relay<'r> = &'r mut (dyn FnMut(&[FragRef<'_>]) -> usize + Send);

impl<R: AsyncRead + Unpin> FragReader<R> {
    pub fn new(rd: R, limit: Arc<AtomicU32>) -> Self {
        FragReader {
            rd,
            buf: Vec::new(),
            pos: 0,
            limit,
            big_left: 0,
            chunk: READ_CHUNK,
        }
    }

    fn pending(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// Moves every whole fragment out of `buf` into `out`; a big fragment whose header is
    /// buffered is returned as `Err(header)` to be read separately.
    fn take_whole(&mut self, out: &mut Vec<Frag>) -> Result<Option<StreamFragHeader>, ConnError> {
        loop {
            let p = self.pending();
            if p.len() < HEADER_LEN {
                return Ok(None);
            }
            let hdr = StreamFragHeader::parse(p, self.limit.load(Ordering::Relaxed))?;
            let total = HEADER_LEN + hdr.len as usize;
            if p.len() < total {
                return Ok((hdr.len as usize > BIG && out.is_empty()).then_some(hdr));
            }
            out.push((hdr, p[HEADER_LEN..total].to_vec()));
            self.pos += total;
        }
    }

    fn compact(&mut self) {
        if self.pos == self.buf.len() {
            // Idle connections hold no buffer (a thousand connected tasks stay cheap).
            self.buf = Vec::new();
            self.pos = 0;
        } else if self.pos > 0 && (self.pos >= self.buf.len() / 2 || self.buf.len() > 4 * self.chunk) {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
    }

    /// Reads into `buf` (its spare capacity: no zero-filling); false at end of stream.
    async fn read_more(&mut self) -> Result<bool, ConnError> {
        self.compact();
        if self.buf.is_empty() && self.chunk == READ_CHUNK {
            // A connection with nothing pending holds no read buffer while it waits (a
            // reserved 16 KB each made 1000 idle tasks cost ~11 MB): what arrives is read into
            // the thread's scratch buffer, borrowed only inside one poll, and the connection's
            // buffer is made for it.
            let (rd, buf) = (&mut self.rd, &mut self.buf);
            let n = std::future::poll_fn(|cx| {
                IDLE_SCRATCH.with_borrow_mut(|scratch| {
                    let mut rb = ReadBuf::new(&mut scratch[..]);
                    ready!(Pin::new(&mut *rd).poll_read(cx, &mut rb))?;
                    *buf = rb.filled().to_vec();
                    Poll::Ready(Ok::<usize, std::io::Error>(buf.len()))
                })
            })
            .await?;
            return Ok(n > 0);
        }
        self.buf.reserve(self.chunk);
        let room = self.buf.capacity() - self.buf.len();
        let n = self.rd.read_buf(&mut self.buf).await?;
        if n == room {
            self.chunk = (self.chunk * 2).min(MAX_READ_CHUNK);
        } else if n < self.chunk / 4 {
            self.chunk = (self.chunk / 2).max(READ_CHUNK);
        }
        Ok(n > 0)
    }

    /// The next piece of input: whole fragments, or the start or a piece of a big fragment;
    /// `None` at a clean end of stream.
    pub async fn next_event(&mut self) -> Result<Option<ReadEvent>, ConnError> {
        self.next_event_with(&mut |_| 0).await
    }

    /// Offers the whole fragments at the front of the buffer to `relay`, and skips those it
    /// took. Stops at the first fragment that is incomplete or does not parse (left to
    /// `take_whole`, which reports the error).
    fn offer(&mut self, relay: Relay<'_>) {
        let limit = self.limit.load(Ordering::Relaxed);
        let mut frags: Vec<FragRef<'_>> = Vec::new();
        let mut p = &self.buf[self.pos..];
        while p.len() >= HEADER_LEN {
            let Ok(hdr) = StreamFragHeader::parse(p, limit) else {
                break;
            };
            let total = HEADER_LEN + hdr.len as usize;
            if p.len() < total {
                break;
            }
            frags.push((hdr, &p[HEADER_LEN..total]));
            p = &p[total..];
        }
        if frags.is_empty() {
            return;
        }
        let took = relay(&frags).min(frags.len());
        let skip: usize = frags[..took].iter().map(|(_, p)| HEADER_LEN + p.len()).sum();
        self.pos += skip;
    }

    /// [`Self::next_event`], offering whole fragments to `relay` first (those it takes are
    /// not returned).
    pub async fn next_event_with(&mut self, relay: Relay<'_>) -> Result<Option<ReadEvent>, ConnError> {
        if self.big_left > 0 {
            let want = self.big_left.min(STREAM_CHUNK);
            // Read into spare capacity (no zero-filling), never past this fragment.
            let mut v = Vec::with_capacity(want);
            let n = (&mut self.rd).take(want as u64).read_buf(&mut v).await?;
            if n == 0 {
                return Err(ConnError::Truncated {
                    have: 0,
                    need: self.big_left,
                });
            }
            v.truncate(n);
            self.big_left -= n;
            return Ok(Some(ReadEvent::BigChunk(v, self.big_left == 0)));
        }
        let mut out = Vec::new();
        loop {
            self.offer(&mut *relay);
            if let Some(hdr) = self.take_whole(&mut out)? {
                let first = self.buf[self.pos + HEADER_LEN..].to_vec();
                self.buf = Vec::new();
                self.pos = 0;
                self.big_left = hdr.len as usize - first.len();
                // Small reads again after a big fragment: the rest of it may be passed on without
                // being read here (server/splice.rs), so what a large read takes of the next
                // one's payload would only be copied.
                self.chunk = READ_CHUNK;
                return Ok(Some(ReadEvent::BigStart(hdr, first)));
            }
            if !out.is_empty() {
                self.compact();
                return Ok(Some(ReadEvent::Frags(out)));
            }
            if !self.read_more().await? {
                let have = self.pending().len();
                if have == 0 {
                    return Ok(None);
                }
                let need = if have < HEADER_LEN {
                    HEADER_LEN
                } else {
                    StreamFragHeader::parse(self.pending(), u32::MAX)
                        .map(|h| HEADER_LEN + h.len as usize)
                        .unwrap_or(HEADER_LEN)
                };
                return Err(ConnError::Truncated { have, need });
            }
        }
    }

    /// The connection and the payload bytes still to come of the big fragment just started
    /// ([`ReadEvent::BigStart`]), for a caller that passes them on by itself (server/splice.rs):
    /// it must consume exactly that many bytes from the connection before the next event.
    pub fn take_big(&mut self) -> (&mut R, usize) {
        let n = std::mem::take(&mut self.big_left);
        (&mut self.rd, n)
    }

    /// The next whole fragments (at least one), in order, big ones assembled; `false` at a
    /// clean end of stream.
    pub async fn next_batch(&mut self, out: &mut Vec<Frag>) -> Result<bool, ConnError> {
        match self.next_event().await? {
            None => Ok(false),
            Some(ReadEvent::Frags(v)) => {
                out.extend(v);
                Ok(true)
            }
            Some(ReadEvent::BigStart(h, mut payload)) => {
                while let Some(ReadEvent::BigChunk(c, last)) = self.next_event().await? {
                    payload.extend_from_slice(&c);
                    if last {
                        out.push((h, payload));
                        return Ok(true);
                    }
                }
                // next_event yields only chunks until the fragment is complete.
                Err(ConnError::Truncated {
                    have: payload.len(),
                    need: h.len as usize,
                })
            }
            Some(ReadEvent::BigChunk(c, _)) => Err(ConnError::Truncated { have: c.len(), need: 0 }),
        }
    }

    /// The next fragment, or `None` at a clean end of stream (one at a time; for tests).
    pub async fn next(&mut self) -> Result<Option<Frag>, ConnError> {
        let mut v = Vec::with_capacity(1);
        // Only the first is wanted: keep the others buffered by reading one at a time.
        if self.pending().len() >= HEADER_LEN {
            let hdr = StreamFragHeader::parse(self.pending(), self.limit.load(Ordering::Relaxed))?;
            let total = HEADER_LEN + hdr.len as usize;
            if self.pending().len() >= total {
                let f = (hdr, self.pending()[HEADER_LEN..total].to_vec());
                self.pos += total;
                return Ok(Some(f));
            }
        }
        if !self.next_batch(&mut v).await? {
            return Ok(None);
        }
        let mut it = v.into_iter();
        let first = it.next();
        // Put any further fragments back in front of the buffer.
        let rest: Vec<u8> = it
            .flat_map(|(h, p)| {
                let mut b = h.to_bytes().to_vec();
                b.extend_from_slice(&p);
                b
            })
            .collect();
        if !rest.is_empty() {
            let mut nb = rest;
            nb.extend_from_slice(self.pending());
            self.buf = nb;
            self.pos = 0;
        }
        Ok(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pvm_proto::frag::FragFlags;
    use pvm_proto::Tid;

    fn frag(len: u32, fill: u8) -> Vec<u8> {
        let mut v = StreamFragHeader {
            dst: Tid::LOCAL_PVMD,
            src: Tid(-1),
            len,
            flags: FragFlags::SOM | FragFlags::EOM,
        }
        .to_bytes()
        .to_vec();
        v.extend(std::iter::repeat(fill).take(len as usize));
        v
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().build().unwrap()
    }

    #[test]
    fn whole_fragments_then_clean_eof() {
        rt().block_on(async {
            let mut bytes = frag(5, 1);
            bytes.extend(frag(0, 0));
            bytes.extend(frag(3000, 2));
            let mut r = FragReader::new(&bytes[..], Arc::new(AtomicU32::new(4064)));
            let (h, p) = r.next().await.unwrap().unwrap();
            assert_eq!((h.len, p), (5, vec![1; 5]));
            assert_eq!(r.next().await.unwrap().unwrap().1.len(), 0);
            assert_eq!(r.next().await.unwrap().unwrap().1, vec![2; 3000]);
            assert!(r.next().await.unwrap().is_none());
        });
    }

    #[test]
    fn eof_inside_header_or_payload_is_an_error() {
        rt().block_on(async {
            let bytes = frag(10, 1);
            for cut in [1, 15, 16, 20, 25] {
                let mut r = FragReader::new(&bytes[..cut], Arc::new(AtomicU32::new(4064)));
                assert!(matches!(r.next().await, Err(ConnError::Truncated { .. })), "cut {cut}");
            }
        });
    }

    #[test]
    fn over_limit_length_is_refused_without_reading_it() {
        rt().block_on(async {
            let mut bytes = frag(0, 0);
            bytes[8..12].copy_from_slice(&0xffff_fff0u32.to_be_bytes());
            let mut r = FragReader::new(&bytes[..], Arc::new(AtomicU32::new(4064)));
            assert!(matches!(r.next().await, Err(ConnError::Parse(_))));
        });
    }

    #[test]
    fn byte_by_byte_input() {
        rt().block_on(async {
            let bytes = frag(7, 9);
            let (mut a, b) = tokio::io::duplex(1);
            let writer = tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                for x in bytes {
                    a.write_all(&[x]).await.unwrap();
                }
            });
            let mut r = FragReader::new(b, Arc::new(AtomicU32::new(4064)));
            assert_eq!(r.next().await.unwrap().unwrap().1, vec![9; 7]);
            writer.await.unwrap();
            assert!(r.next().await.unwrap().is_none());
        });
    }

    #[test]
    fn batches_small_and_big_fragments_in_order() {
        rt().block_on(async {
            let mut bytes = Vec::new();
            for i in 0..5u8 {
                bytes.extend(frag(4080, i));
            }
            bytes.extend(frag(300_000, 7));
            bytes.extend(frag(10, 8));
            bytes.extend(frag(BIG as u32 + 1, 9));
            let (mut a, b) = tokio::io::duplex(10_000);
            let writer = tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                a.write_all(&bytes).await.unwrap();
            });
            let mut r = FragReader::new(b, Arc::new(AtomicU32::new(1 << 20)));
            let mut all = Vec::new();
            let mut batches = 0;
            loop {
                let mut v = Vec::new();
                if !r.next_batch(&mut v).await.unwrap() {
                    break;
                }
                assert!(!v.is_empty());
                batches += 1;
                all.extend(v);
            }
            writer.await.unwrap();
            let got: Vec<(u32, u8)> = all.iter().map(|(h, p)| (h.len, p[0])).collect();
            assert_eq!(
                got,
                [
                    (4080, 0),
                    (4080, 1),
                    (4080, 2),
                    (4080, 3),
                    (4080, 4),
                    (300_000, 7),
                    (10, 8),
                    (BIG as u32 + 1, 9)
                ]
            );
            assert!(all
                .iter()
                .all(|(h, p)| p.len() == h.len as usize && p.iter().all(|&x| x == p[0])));
            assert!(batches < all.len() + 1);
        });
    }

    #[test]
    fn relay_takes_leading_fragments_from_the_buffer() {
        rt().block_on(async {
            let mut bytes = Vec::new();
            for i in 0..4u8 {
                bytes.extend(frag(10 + u32::from(i), i));
            }
            let mut r = FragReader::new(&bytes[..], Arc::new(AtomicU32::new(4064)));
            let mut seen = Vec::new();
            // Takes the first two of what it is offered the first time, nothing after.
            let mut relay = |f: &[FragRef<'_>]| {
                seen.push(f.iter().map(|(h, p)| (h.len, p[0])).collect::<Vec<_>>());
                if seen.len() == 1 {
                    2
                } else {
                    0
                }
            };
            match r.next_event_with(&mut relay).await.unwrap() {
                Some(ReadEvent::Frags(v)) => {
                    assert_eq!(
                        v.iter().map(|(h, p)| (h.len, p[0])).collect::<Vec<_>>(),
                        [(12, 2), (13, 3)]
                    )
                }
                e => panic!("unexpected {e:?}"),
            }
            assert_eq!(seen[0], [(10, 0), (11, 1), (12, 2), (13, 3)]);
            assert!(r.next_event_with(&mut |_| 0).await.unwrap().is_none());
        });
    }

    #[test]
    fn truncated_big_fragment_is_an_error() {
        rt().block_on(async {
            let bytes = frag(200_000, 1);
            let mut r = FragReader::new(&bytes[..100_000], Arc::new(AtomicU32::new(1 << 20)));
            let mut v = Vec::new();
            assert!(matches!(r.next_batch(&mut v).await, Err(ConnError::Truncated { .. })));
        });
    }
}
