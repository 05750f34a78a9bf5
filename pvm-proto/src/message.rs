//! Whole messages: splitting one into stream fragments and putting fragments back together.
//!
//! A message travels as one or more fragments. The first (flag SOM) carries the 32-byte message
//! header before its share of the body; the last carries EOM. The body length is never sent: it
//! is the sum of the fragment payloads.

use crate::codes::{FRAGHDR_LEN, MAXHDR, MSGHDR_LEN};
use crate::error::{ErrorKind, ParseError};
use crate::frag::{self, FragFlags, StreamFragHeader};
use crate::mesg::{self, MsgHeader};
use crate::tid::Tid;
use std::collections::BTreeMap;
use std::fmt;

/// A complete message as the layers above the fragment framing see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub src: Tid,
    pub dst: Tid,
    pub header: MsgHeader,
    pub body: Vec<u8>,
}

impl Message {
    /// Body bytes per fragment for a fragment size, as libpvm computes it: every fragment buffer
    /// keeps `MAXHDR` (16 + 32) bytes of headroom, so each fragment carries at most
    /// `frag_size - 48` body bytes, the first one as well as the others. Sizes too small to hold
    /// any body are raised to 4 bytes per fragment rather than looping forever.
    pub fn body_per_fragment(frag_size: usize) -> usize {
        frag_size.saturating_sub(MAXHDR).max(4)
    }

    /// The stream fragments of this message, each a complete on-the-wire unit (16-byte header,
    /// then for the first the 32-byte message header, then body bytes).
    ///
    /// Protocol bodies are made of 4-byte XDR units and `frag_size - 48` is a multiple of 4 for
    /// every size legacy uses (4080 by default), so cutting at fixed offsets gives exactly the
    /// fragments legacy pvmd and libpvm produce. (For user XDR messages with 8-byte items, legacy
    /// closes a fragment early rather than split an item; this function does not model that.)
    pub fn to_fragments(&self, frag_size: usize) -> Vec<Vec<u8>> {
        let per = Self::body_per_fragment(frag_size);
        let mut chunks: Vec<&[u8]> = self.body.chunks(per).collect();
        if chunks.is_empty() {
            chunks.push(&[]);
        }
        let last = chunks.len() - 1;
        let mut out = Vec::with_capacity(chunks.len());
        for (i, chunk) in chunks.into_iter().enumerate() {
            let mut flags = FragFlags::empty();
            let mut len = chunk.len();
            if i == 0 {
                flags |= FragFlags::SOM;
                len += MSGHDR_LEN;
            }
            if i == last {
                flags |= FragFlags::EOM;
            }
            let hdr = StreamFragHeader {
                dst: self.dst,
                src: self.src,
                len: len as u32,
                flags,
            };
            let mut f = Vec::with_capacity(FRAGHDR_LEN + len);
            f.extend_from_slice(&hdr.to_bytes());
            if i == 0 {
                f.extend_from_slice(&self.header.to_bytes());
            }
            f.extend_from_slice(chunk);
            out.push(f);
        }
        out
    }

    /// All fragments concatenated, as they would be written to a socket.
    pub fn to_stream_bytes(&self, frag_size: usize) -> Vec<u8> {
        self.to_fragments(frag_size).concat()
    }
}

/// Caps on what a [`Reassembler`] buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest body accepted from one source (buffered or complete).
    pub max_bytes_per_source: usize,
    /// Largest number of sources with a message in progress at once.
    pub max_partial: usize,
}

impl Default for Limits {
    /// 16 MiB per message and 64 partial messages: far above what PVM applications send through
    /// one stream at once, far below what hurts.
    fn default() -> Self {
        Limits {
            max_bytes_per_source: 16 << 20,
            max_partial: 64,
        }
    }
}

/// A fragment that was refused, with the source it came from. The partial message from that
/// source (if any) has been discarded; other sources are unaffected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("fragment from {src}: {error}")]
pub struct ReassemblyError {
    pub src: Tid,
    /// Field and offset within the fragment (the 16-byte header counts from 0).
    #[source]
    pub error: ParseError,
}

/// A message in progress. Payloads are kept as received and joined once at EOM, so memory
/// is exactly what arrived (no growth doubling past the cap, no repeated copying).
#[derive(Debug, Clone)]
struct Partial {
    dst: Tid,
    header: MsgHeader,
    chunks: Vec<Vec<u8>>,
    len: usize,
}

/// Puts stream fragments back into messages, one message in progress per source tid, as libpvm
/// does when fragments of messages from different senders are interleaved on one stream.
#[derive(Debug, Clone, Default)]
pub struct Reassembler {
    limits: Limits,
    partial: BTreeMap<Tid, Partial>,
    /// Keep each message in progress in one growing buffer (see [`Reassembler::contiguous`]).
    contiguous: bool,
    /// Where a contiguous reassembler gets a new message's buffer (see
    /// [`Reassembler::with_buffers`]).
    buffers: Option<BufferSource>,
    /// A large fragment whose payload the caller reads straight into its message's buffer (see
    /// [`Reassembler::open_fragment`]).
    open: Option<OpenFragment>,
}

/// The fragment being received in place: whose message it extends, the payload bytes still to
/// come, and whether it ends the message.
#[derive(Debug, Clone, Copy)]
struct OpenFragment {
    src: Tid,
    left: usize,
    eom: bool,
}

/// Gives a contiguous [`Reassembler`] the buffer of a new message: called with the body bytes of
/// its first fragment and whether that fragment is the whole message; returns an empty vector of
/// any capacity (the caller's reuse pool, so that large messages land in pages already mapped).
pub type BufferSource = fn(first: usize, complete: bool) -> Vec<u8>;

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} -> {} tag {:#x} ctx {:#x} wid {} enc {:#x}, {} body bytes",
            self.src,
            self.dst,
            self.header.tag,
            self.header.ctx,
            self.header.wid,
            self.header.enc,
            self.body.len()
        )
    }
}

impl Reassembler {
    pub fn new(limits: Limits) -> Self {
        Reassembler {
            limits,
            partial: BTreeMap::new(),
            contiguous: false,
            buffers: None,
            open: None,
        }
    }

    /// Like [`Reassembler::new`], but each message in progress grows in one buffer: one copy
    /// per byte and no concatenation at the end, for a receiver of large messages (a task
    /// library) where that matters more than exact allocation (growth may reserve up to twice
    /// what arrived; the limits still bound what is accepted).
    pub fn contiguous(limits: Limits) -> Self {
        Reassembler {
            contiguous: true,
            ..Reassembler::new(limits)
        }
    }

    /// A contiguous reassembler that takes new messages' buffers from `source` instead of
    /// allocating them (the receiver recycles its large buffers there).
    pub fn with_buffers(mut self, source: BufferSource) -> Self {
        self.buffers = Some(source);
        self
    }

    /// An empty buffer for a new message, from the buffer source if there is one.
    fn new_buffer(&self, first: usize, complete: bool) -> Vec<u8> {
        match self.buffers {
            Some(source) if self.contiguous => {
                let mut v = source(first, complete);
                v.clear();
                v
            }
            _ => Vec::new(),
        }
    }

    /// Number of sources with a message in progress.
    pub fn pending(&self) -> usize {
        self.partial.len()
    }

    /// Bytes buffered for `src`'s message in progress.
    pub fn buffered(&self, src: Tid) -> usize {
        self.partial.get(&src).map_or(0, |p| p.len)
    }

    /// Forgets a source's partial message (its connection or route went away).
    pub fn discard(&mut self, src: Tid) {
        self.partial.remove(&src);
        if self.open.is_some_and(|o| o.src == src) {
            self.open = None;
        }
    }

    /// Starts receiving a large fragment in place, from its header and the first part of its
    /// payload (`head`, shorter than the whole fragment; a first fragment must include its
    /// message header): the checks of [`Reassembler::push`] run as if the whole fragment were
    /// here, the bytes of `head` are taken, and the message's buffer gets room for the rest,
    /// which the caller then reads straight into it ([`Reassembler::open_buffer`],
    /// [`Reassembler::advance`]) instead of into a stream buffer it would copy out of.
    /// Returns the payload bytes still to come. Only for contiguous reassemblers.
    pub fn open_fragment(&mut self, head: &[u8]) -> Result<usize, ReassemblyError> {
        let max = self.limits.max_bytes_per_source.saturating_add(MSGHDR_LEN);
        let max = u32::try_from(max).unwrap_or(u32::MAX);
        let hdr = StreamFragHeader::parse(head, max).map_err(|error| ReassemblyError { src: Tid::NONE, error })?;
        let fail = |field, offset, kind| ReassemblyError {
            src: hdr.src,
            error: ParseError::new(field, offset, kind),
        };
        let have = head.len() - frag::HEADER_LEN;
        let len = hdr.len as usize;
        let som = hdr.flags.contains(FragFlags::SOM);
        if !self.contiguous || self.open.is_some() || have >= len || (som && have < MSGHDR_LEN) {
            return Err(fail(
                "fragment length",
                frag::off::LEN,
                ErrorKind::Invalid {
                    value: len as i64,
                    why: "not a fragment that can be received in place",
                },
            ));
        }
        let eom = hdr.flags.contains(FragFlags::EOM);
        let left = len - have;
        // The whole fragment must fit the source's cap, as push would check once it is here.
        let before = if som { 0 } else { self.buffered(hdr.src) };
        let body = if som { len - MSGHDR_LEN } else { len };
        let cap = self.limits.max_bytes_per_source;
        if before as u64 + body as u64 > cap as u64 {
            self.partial.remove(&hdr.src);
            return Err(fail(
                "fragment length",
                frag::off::LEN,
                ErrorKind::TooLong {
                    len: before as u64 + body as u64,
                    max: cap as u64,
                },
            ));
        }
        self.push_parts(hdr.src, hdr.dst, hdr.flags - FragFlags::EOM, &head[frag::HEADER_LEN..])?;
        let Some(p) = self.partial.get_mut(&hdr.src) else {
            return Err(fail(
                "flags",
                frag::off::FLAGS,
                ErrorKind::Invalid {
                    value: hdr.flags.bits().into(),
                    why: "no message in progress for the fragment",
                },
            ));
        };
        if let Some(c) = p.chunks.first_mut() {
            // Room for the whole fragment, preferably in a buffer from the source (pages
            // already mapped) rather than by growing this one.
            let need = c.len().saturating_add(left);
            if c.capacity() < need {
                if let Some(source) = self.buffers {
                    let mut v = source(need, true);
                    if v.capacity() >= need {
                        v.clear();
                        v.extend_from_slice(c);
                        *c = v;
                    }
                }
                c.reserve(left);
            }
        }
        self.open = Some(OpenFragment {
            src: hdr.src,
            left,
            eom,
        });
        Ok(left)
    }

    /// The buffer the open fragment's payload goes to (append at most the bytes still to come),
    /// and how many those are. None when no fragment is open.
    pub fn open_buffer(&mut self) -> Option<(&mut Vec<u8>, usize)> {
        let o = self.open?;
        let p = self.partial.get_mut(&o.src)?;
        Some((p.chunks.first_mut()?, o.left))
    }

    /// Counts `n` payload bytes the caller appended to [`Reassembler::open_buffer`]; the
    /// message, once its last fragment is complete. More bytes than were left are an error of
    /// the caller; the open fragment and its message are then dropped.
    pub fn advance(&mut self, n: usize) -> Option<Message> {
        let mut o = self.open?;
        let Some(p) = self.partial.get_mut(&o.src) else {
            self.open = None;
            return None;
        };
        if n > o.left || p.chunks.first().map(Vec::len) != Some(p.len + n) {
            self.open = None;
            self.partial.remove(&o.src);
            return None;
        }
        p.len += n;
        o.left -= n;
        if o.left > 0 {
            self.open = Some(o);
            return None;
        }
        self.open = None;
        if !o.eom {
            return None;
        }
        let p = self.partial.remove(&o.src)?;
        Some(Message {
            src: o.src,
            dst: p.dst,
            header: p.header,
            body: p.chunks.into_iter().next().unwrap_or_default(),
        })
    }

    /// Accepts one complete stream fragment (16-byte header and exactly `len` payload bytes).
    pub fn push(&mut self, fragment: &[u8]) -> Result<Option<Message>, ReassemblyError> {
        let max = self.limits.max_bytes_per_source.saturating_add(MSGHDR_LEN);
        let max = u32::try_from(max).unwrap_or(u32::MAX);
        let hdr = StreamFragHeader::parse(fragment, max).map_err(|error| {
            let src = if fragment.len() >= 8 {
                Tid(i32::from_be_bytes([fragment[4], fragment[5], fragment[6], fragment[7]]))
            } else {
                Tid::NONE
            };
            if let Some(ErrorKind::TooLong { .. }) = Some(&error.kind) {
                self.partial.remove(&src);
            }
            ReassemblyError { src, error }
        })?;
        let payload = &fragment[frag::HEADER_LEN..];
        if payload.len() != hdr.len as usize {
            let kind = if payload.len() < hdr.len as usize {
                ErrorKind::Truncated {
                    need: hdr.len as usize,
                    have: payload.len(),
                }
            } else {
                ErrorKind::Trailing(payload.len() - hdr.len as usize)
            };
            return Err(ReassemblyError {
                src: hdr.src,
                error: ParseError::new("fragment length", frag::off::LEN, kind),
            });
        }
        self.push_parts(hdr.src, hdr.dst, hdr.flags, payload)
    }

    /// Accepts one fragment given as its header fields and payload (the form a datagram takes
    /// once its own header is stripped). Only SOM and EOM of `flags` matter.
    pub fn push_parts(
        &mut self,
        src: Tid,
        dst: Tid,
        flags: FragFlags,
        payload: &[u8],
    ) -> Result<Option<Message>, ReassemblyError> {
        let fail = |field, offset, kind| ReassemblyError {
            src,
            error: ParseError::new(field, offset, kind),
        };
        if let Some(o) = self.open.take() {
            // The caller pushed another fragment before finishing the open one: its message
            // cannot be completed any more.
            self.partial.remove(&o.src);
        }
        let som = flags.contains(FragFlags::SOM);
        let eom = flags.contains(FragFlags::EOM);
        let cap = self.limits.max_bytes_per_source;
        if som {
            if self.partial.remove(&src).is_some() {
                return Err(fail(
                    "flags",
                    frag::off::FLAGS,
                    ErrorKind::Invalid {
                        value: flags.bits().into(),
                        why: "first fragment while a message from this source is in progress",
                    },
                ));
            }
            if payload.len() < MSGHDR_LEN {
                return Err(fail(
                    "message header",
                    frag::HEADER_LEN + payload.len(),
                    ErrorKind::Truncated {
                        need: MSGHDR_LEN,
                        have: payload.len(),
                    },
                ));
            }
            let header = MsgHeader::parse(payload).map_err(|e| ReassemblyError {
                src,
                error: e.shifted(frag::HEADER_LEN),
            })?;
            let body = &payload[mesg::HEADER_LEN..];
            if body.len() > cap {
                return Err(fail(
                    "fragment length",
                    frag::off::LEN,
                    ErrorKind::TooLong {
                        len: body.len() as u64,
                        max: cap as u64,
                    },
                ));
            }
            if eom {
                let mut v = self.new_buffer(body.len(), true);
                v.extend_from_slice(body);
                return Ok(Some(Message {
                    src,
                    dst,
                    header,
                    body: v,
                }));
            }
            if self.partial.len() >= self.limits.max_partial {
                return Err(fail(
                    "src",
                    frag::off::SRC,
                    ErrorKind::TooLong {
                        len: self.partial.len() as u64 + 1,
                        max: self.limits.max_partial as u64,
                    },
                ));
            }
            self.partial.insert(
                src,
                Partial {
                    dst,
                    header,
                    chunks: vec![{
                        let mut v = self.new_buffer(body.len(), false);
                        v.extend_from_slice(body);
                        v
                    }],
                    len: body.len(),
                },
            );
            return Ok(None);
        }
        let Some(p) = self.partial.get_mut(&src) else {
            return Err(fail(
                "flags",
                frag::off::FLAGS,
                ErrorKind::Invalid {
                    value: flags.bits().into(),
                    why: "continuation fragment with no message in progress from this source",
                },
            ));
        };
        let total = p.len as u64 + payload.len() as u64;
        if total > cap as u64 {
            self.partial.remove(&src);
            return Err(fail(
                "fragment length",
                frag::off::LEN,
                ErrorKind::TooLong {
                    len: total,
                    max: cap as u64,
                },
            ));
        }
        match p.chunks.first_mut() {
            Some(c) if self.contiguous => c.extend_from_slice(payload),
            _ => p.chunks.push(payload.to_vec()),
        }
        p.len += payload.len();
        if !eom {
            return Ok(None);
        }
        let p = self.partial.remove(&src).expect("entry checked above");
        Ok(Some(Message {
            src,
            dst: p.dst,
            header: p.header,
            body: if p.chunks.len() == 1 {
                p.chunks.into_iter().next().unwrap_or_default()
            } else {
                p.chunks.concat()
            },
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codes::{Tm, ENC_XDR, SYSCTX_TM, UDPMAXLEN};

    fn msg(src: i32, n: usize) -> Message {
        Message {
            src: Tid(src),
            dst: Tid::LOCAL_PVMD,
            header: MsgHeader {
                enc: ENC_XDR,
                tag: Tm::Spawn.code(),
                ctx: SYSCTX_TM,
                wid: 3,
                crc: 0,
            },
            body: (0..n).map(|i| i as u8).collect(),
        }
    }

    #[test]
    fn split_sizes_follow_libpvm_headroom() {
        let m = msg(0x40001, 4032 * 2 + 5);
        let f = m.to_fragments(UDPMAXLEN);
        assert_eq!(f.len(), 3);
        assert_eq!(f[0].len(), 4080);
        assert_eq!(f[1].len(), 16 + 4032);
        assert_eq!(f[2].len(), 16 + 5);
        let h: Vec<_> = f.iter().map(|x| StreamFragHeader::parse(x, 1 << 20).unwrap()).collect();
        assert_eq!(h[0].flags, FragFlags::SOM);
        assert_eq!(h[0].len, 4064);
        assert_eq!(h[1].flags, FragFlags::empty());
        assert_eq!(h[2].flags, FragFlags::EOM);
        let empty = msg(1, 0).to_fragments(UDPMAXLEN);
        assert_eq!(empty.len(), 1);
        assert_eq!(empty[0].len(), 48);
        assert_eq!(empty[0][12], 3);
    }

    fn big_buffer(_first: usize, _complete: bool) -> Vec<u8> {
        Vec::with_capacity(1 << 16)
    }

    #[test]
    fn a_buffer_source_gives_the_message_its_buffer_and_changes_no_byte() {
        for n in [0, 100, 4032, 4032 * 3 + 7] {
            let m = msg(0x40001, n);
            let frags = m.to_fragments(UDPMAXLEN);
            let mut with = Reassembler::contiguous(Limits::default()).with_buffers(big_buffer);
            let mut without = Reassembler::contiguous(Limits::default());
            let (mut a, mut b) = (None, None);
            for f in &frags {
                a = with.push(f).unwrap().or(a);
                b = without.push(f).unwrap().or(b);
            }
            let (a, b) = (a.unwrap(), b.unwrap());
            assert_eq!(a, m);
            assert_eq!(b, m);
            assert!(
                a.body.capacity() >= 1 << 16,
                "{n} bytes: the source's buffer was not used"
            );
        }
        // Only contiguous reassemblers use it (the daemon's keeps exact allocations).
        let mut plain = Reassembler::new(Limits::default()).with_buffers(big_buffer);
        let m = plain.push(&msg(1, 10).to_fragments(UDPMAXLEN)[0]).unwrap().unwrap();
        assert!(m.body.capacity() < 1 << 16);
    }

    #[test]
    fn a_fragment_received_in_place_gives_the_same_message() {
        let m = msg(0x40001, 10_000);
        let frags = m.to_fragments(4096 + 48);
        let mut r = Reassembler::contiguous(Limits::default());
        let mut got = None;
        for f in &frags {
            let left = r.open_fragment(&f[..100]).unwrap();
            assert_eq!(left, f.len() - 100);
            assert!(r.open_fragment(&f[..100]).is_err(), "one open fragment at a time");
            let (buf, n) = r.open_buffer().unwrap();
            assert_eq!(n, left);
            buf.extend_from_slice(&f[100..150]);
            assert!(r.advance(50).is_none());
            r.open_buffer().unwrap().0.extend_from_slice(&f[150..]);
            got = r.advance(f.len() - 150);
        }
        assert_eq!(got, Some(m));
        assert_eq!(r.pending(), 0);
        // A fragment that would pass the source's cap is refused before any byte is taken.
        let mut small = Reassembler::contiguous(Limits {
            max_bytes_per_source: 1000,
            ..Limits::default()
        });
        let f = &msg(0x40001, 5000).to_fragments(8192)[0];
        assert!(small.open_fragment(&f[..100]).is_err());
        assert!(small.open_buffer().is_none());
        // Counting more bytes than were appended drops the message instead of exposing garbage.
        let f = &msg(0x40001, 5000).to_fragments(8192)[0];
        let mut r = Reassembler::contiguous(Limits::default());
        r.open_fragment(&f[..100]).unwrap();
        assert!(r.advance(f.len() - 100).is_none());
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn interleaved_sources_reassemble_separately() {
        let a = msg(0x40001, 100);
        let b = msg(0x40002, 70);
        let fa = a.to_fragments(48 + 40);
        let fb = b.to_fragments(48 + 40);
        let mut r = Reassembler::default();
        let mut got = Vec::new();
        for i in 0..fa.len().max(fb.len()) {
            for f in [fa.get(i), fb.get(i)].into_iter().flatten() {
                if let Some(m) = r.push(f).unwrap() {
                    got.push(m);
                }
            }
        }
        assert_eq!(got, vec![b, a]);
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn protocol_violations_are_errors() {
        let m = msg(0x40001, 100);
        let f = m.to_fragments(48 + 40);
        let mut r = Reassembler::default();
        let e = r.push(&f[1]).unwrap_err();
        assert_eq!((e.error.field, e.error.offset), ("flags", 12));
        r.push(&f[0]).unwrap();
        let e = r.push(&f[0]).unwrap_err();
        assert_eq!(e.error.field, "flags");
        assert_eq!(r.pending(), 0);
        // First fragment too short for the message header.
        let short = StreamFragHeader {
            dst: Tid::LOCAL_PVMD,
            src: Tid(5),
            len: 31,
            flags: FragFlags::SOM | FragFlags::EOM,
        };
        let mut b = short.to_bytes().to_vec();
        b.extend_from_slice(&[0; 31]);
        let e = r.push(&b).unwrap_err();
        assert_eq!((e.error.field, e.src), ("message header", Tid(5)));
        // Length field disagreeing with the bytes given.
        let e = r.push(&f[0][..f[0].len() - 1]).unwrap_err();
        assert_eq!((e.error.field, e.error.offset), ("fragment length", 8));
    }

    #[test]
    fn caps_are_errors_not_allocations() {
        let limits = Limits {
            max_bytes_per_source: 64,
            max_partial: 2,
        };
        let mut r = Reassembler::new(limits);
        let f = msg(0x40001, 100).to_fragments(48 + 40);
        r.push(&f[0]).unwrap();
        let e = r.push(&f[1]).unwrap_err();
        assert!(matches!(e.error.kind, ErrorKind::TooLong { len: 80, max: 64 }));
        assert_eq!(r.pending(), 0);
        for s in 1..=2 {
            r.push(&msg(s, 50).to_fragments(48 + 40)[0]).unwrap();
        }
        let e = r.push(&msg(3, 50).to_fragments(48 + 40)[0]).unwrap_err();
        assert_eq!(e.error.field, "src");
        assert_eq!(r.pending(), 2);
        // A whole single-fragment message over the cap.
        let e = r.push(&msg(9, 65).to_fragments(4080)[0]).unwrap_err();
        assert_eq!(e.error.field, "fragment length");
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Fragments of several messages, interleaved in any order that keeps each source's
            /// own order, come back as the original messages (in both buffering modes).
            #[test]
            fn interleaved_split_reassembles(
                bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..5),
                frag_size in 49usize..200,
                picks in proptest::collection::vec(0usize..5, 0..400),
                contiguous in any::<bool>(),
            ) {
                let msgs: Vec<Message> = bodies
                    .into_iter()
                    .enumerate()
                    .map(|(i, b)| Message { body: b, ..msg(0x40001 + i as i32, 0) })
                    .collect();
                let mut queues: Vec<std::collections::VecDeque<Vec<u8>>> =
                    msgs.iter().map(|m| m.to_fragments(frag_size).into()).collect();
                let mut r = if contiguous {
                    Reassembler::contiguous(Limits::default())
                } else {
                    Reassembler::default()
                };
                let mut got = Vec::new();
                let mut feed = |q: &mut std::collections::VecDeque<Vec<u8>>, got: &mut Vec<Message>| {
                    if let Some(f) = q.pop_front() {
                        if let Some(m) = r.push(&f).unwrap() {
                            got.push(m);
                        }
                    }
                };
                for p in picks {
                    let n = queues.len();
                    feed(&mut queues[p % n], &mut got);
                }
                for q in queues.iter_mut() {
                    while !q.is_empty() {
                        feed(q, &mut got);
                    }
                }
                got.sort_by_key(|m| m.src);
                prop_assert_eq!(got, msgs);
            }

            /// Arbitrary bytes as fragments: never a panic, never more buffered than the caps.
            #[test]
            fn arbitrary_fragments_respect_caps(
                frags in proptest::collection::vec(
                    (0i32..6, 0u8..4, proptest::collection::vec(any::<u8>(), 0..120)), 0..60),
            ) {
                let limits = Limits { max_bytes_per_source: 100, max_partial: 3 };
                let mut r = Reassembler::new(limits);
                for (src, flags, payload) in frags {
                    let _ = r.push_parts(Tid(src), Tid::LOCAL_PVMD, FragFlags::from_bits_retain(flags), &payload);
                    prop_assert!(r.pending() <= 3);
                    for s in 0..6 {
                        prop_assert!(r.buffered(Tid(s)) <= 100);
                    }
                }
            }
        }
    }
}
