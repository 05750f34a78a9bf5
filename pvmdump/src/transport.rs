//! UDP and TCP headers, and TCP byte-stream reassembly per direction.
//!
//! The reassembler orders segments by sequence number, drops what was already delivered
//! (retransmissions and duplicates), holds out-of-order data up to a cap, and reports a gap when
//! data is missing: when the hold cap is exceeded, or at the end of the capture.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Udp<'a> {
    pub src_port: u16,
    pub dst_port: u16,
    pub payload: &'a [u8],
}

pub fn parse_udp(b: &[u8]) -> Result<Udp<'_>, String> {
    if b.len() < 8 {
        return Err(format!("UDP header truncated: {} of 8 bytes", b.len()));
    }
    let len = usize::from(u16::from_be_bytes([b[4], b[5]]));
    if len < 8 || len > b.len() {
        return Err(format!(
            "UDP length {len} at byte 4 does not fit the {} bytes of the IP payload",
            b.len()
        ));
    }
    Ok(Udp {
        src_port: u16::from_be_bytes([b[0], b[1]]),
        dst_port: u16::from_be_bytes([b[2], b[3]]),
        payload: &b[8..len],
    })
}

pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tcp<'a> {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub flags: u8,
    pub payload: &'a [u8],
}

pub fn parse_tcp(b: &[u8]) -> Result<Tcp<'_>, String> {
    if b.len() < 20 {
        return Err(format!("TCP header truncated: {} of 20 bytes", b.len()));
    }
    let off = usize::from(b[12] >> 4) * 4;
    if off < 20 || off > b.len() {
        return Err(format!(
            "TCP data offset {off} at byte 12 is invalid (have {} bytes)",
            b.len()
        ));
    }
    Ok(Tcp {
        src_port: u16::from_be_bytes([b[0], b[1]]),
        dst_port: u16::from_be_bytes([b[2], b[3]]),
        seq: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        flags: b[13],
        payload: &b[off..],
    })
}

/// What the reassembler hands on, in stream order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunk {
    Data(Vec<u8>),
    /// This many bytes are missing before the next data.
    Gap(u64),
}

/// One direction of a TCP connection.
#[derive(Debug, Default)]
pub struct TcpReassembler {
    started: bool,
    /// True when the capture began after the SYN: the first byte seen need not start a fragment.
    pub mid_stream: bool,
    next_seq: u32,
    next_abs: u64,
    held: BTreeMap<u64, Vec<u8>>,
    held_bytes: usize,
    max_held: usize,
    pub closed: bool,
}

impl TcpReassembler {
    pub fn new(max_held: usize) -> Self {
        TcpReassembler {
            max_held,
            ..Default::default()
        }
    }

    /// Bytes held out of order.
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    /// Feeds one segment; returns the chunks now in order. Notes go into `notes`.
    pub fn push(&mut self, seg: &Tcp<'_>, notes: &mut Vec<String>) -> Vec<Chunk> {
        let mut out = Vec::new();
        if seg.flags & tcp_flags::SYN != 0 {
            if self.started && (self.next_abs > 0 || self.held_bytes > 0) {
                notes.push("SYN in the middle of a connection; starting over".to_string());
                self.held.clear();
                self.held_bytes = 0;
            }
            self.started = true;
            self.mid_stream = false;
            self.closed = false;
            self.next_seq = seg.seq.wrapping_add(1);
            self.next_abs = 0;
            // Data on a SYN is legal but unused by PVM; fall through with it.
            if seg.payload.is_empty() {
                return out;
            }
            self.accept(self.next_seq, seg.payload, notes, &mut out);
            return out;
        }
        if !self.started {
            if seg.payload.is_empty() {
                return out;
            }
            self.started = true;
            self.mid_stream = true;
            self.next_seq = seg.seq;
            self.next_abs = 0;
        }
        if !seg.payload.is_empty() {
            self.accept(seg.seq, seg.payload, notes, &mut out);
        }
        if seg.flags & (tcp_flags::FIN | tcp_flags::RST) != 0 {
            self.closed = true;
        }
        out
    }

    fn accept(&mut self, seq: u32, data: &[u8], notes: &mut Vec<String>, out: &mut Vec<Chunk>) {
        let delta = i64::from(seq.wrapping_sub(self.next_seq) as i32);
        let start = self.next_abs as i64 + delta;
        let end = start + data.len() as i64;
        if end <= self.next_abs as i64 {
            notes.push(format!(
                "TCP retransmission of {} bytes (seq {seq}), ignored",
                data.len()
            ));
            return;
        }
        if start > self.next_abs as i64 {
            notes.push(format!(
                "TCP segment out of order: seq {seq} is {} bytes ahead; held",
                start - self.next_abs as i64
            ));
            let start = start as u64;
            let keep = self.held.get(&start).map_or(true, |old| old.len() < data.len());
            if keep {
                if let Some(old) = self.held.insert(start, data.to_vec()) {
                    self.held_bytes -= old.len();
                }
                self.held_bytes += data.len();
            }
            while self.held_bytes > self.max_held {
                // Give up waiting: skip to the first held segment.
                self.skip_to_first_held(notes, out);
            }
            return;
        }
        let skip = (self.next_abs as i64 - start) as usize;
        if skip > 0 {
            notes.push(format!(
                "TCP segment partly retransmitted: first {skip} bytes already seen"
            ));
        }
        self.deliver(&data[skip..], out);
        self.drain(out);
    }

    fn deliver(&mut self, data: &[u8], out: &mut Vec<Chunk>) {
        self.next_abs += data.len() as u64;
        self.next_seq = self.next_seq.wrapping_add(data.len() as u32);
        match out.last_mut() {
            Some(Chunk::Data(d)) => d.extend_from_slice(data),
            _ => out.push(Chunk::Data(data.to_vec())),
        }
    }

    fn drain(&mut self, out: &mut Vec<Chunk>) {
        while let Some((&start, _)) = self.held.first_key_value() {
            if start > self.next_abs {
                break;
            }
            let Some((_, data)) = self.held.pop_first() else { break };
            self.held_bytes -= data.len();
            let skip = (self.next_abs - start) as usize;
            if skip < data.len() {
                self.deliver(&data[skip..], out);
            }
        }
    }

    fn skip_to_first_held(&mut self, notes: &mut Vec<String>, out: &mut Vec<Chunk>) {
        if let Some((&start, _)) = self.held.first_key_value() {
            let missing = start - self.next_abs;
            notes.push(format!("TCP gap: {missing} bytes never captured"));
            out.push(Chunk::Gap(missing));
            self.next_abs = start;
            self.next_seq = self.next_seq.wrapping_add(missing as u32);
            self.drain(out);
        }
    }

    /// End of capture: whatever is held is delivered after reporting the holes before it.
    pub fn finish(&mut self, notes: &mut Vec<String>) -> Vec<Chunk> {
        let mut out = Vec::new();
        while !self.held.is_empty() {
            self.skip_to_first_held(notes, &mut out);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(seq: u32, flags: u8, payload: &'static [u8]) -> Tcp<'static> {
        Tcp {
            src_port: 1,
            dst_port: 2,
            seq,
            flags,
            payload,
        }
    }

    fn data(chunks: Vec<Chunk>) -> Vec<u8> {
        chunks
            .into_iter()
            .flat_map(|c| match c {
                Chunk::Data(d) => d,
                Chunk::Gap(_) => b"|".to_vec(),
            })
            .collect()
    }

    #[test]
    fn order_retransmit_gap_and_wrap() {
        let mut r = TcpReassembler::new(1 << 20);
        let mut n = Vec::new();
        let isn = u32::MAX - 2; // sequence numbers wrap inside the stream
        assert!(r.push(&seg(isn, tcp_flags::SYN, b""), &mut n).is_empty());
        let s = isn.wrapping_add(1);
        assert_eq!(data(r.push(&seg(s, 0, b"abc"), &mut n)), b"abc");
        assert_eq!(data(r.push(&seg(s.wrapping_add(6), 0, b"ghi"), &mut n)), b"");
        assert_eq!(data(r.push(&seg(s, 0, b"abc"), &mut n)), b"");
        assert_eq!(data(r.push(&seg(s.wrapping_add(2), 0, b"cdef"), &mut n)), b"defghi");
        assert_eq!(n.len(), 3, "{n:?}");
        assert_eq!(data(r.push(&seg(s.wrapping_add(12), 0, b"mn"), &mut n)), b"");
        assert_eq!(r.finish(&mut n), vec![Chunk::Gap(3), Chunk::Data(b"mn".to_vec())]);
    }

    #[test]
    fn hold_cap_forces_gap() {
        let mut r = TcpReassembler::new(4);
        let mut n = Vec::new();
        r.push(&seg(100, tcp_flags::SYN, b""), &mut n);
        assert_eq!(data(r.push(&seg(111, 0, b"xyz"), &mut n)), b"");
        assert_eq!(data(r.push(&seg(121, 0, b"uv"), &mut n)), b"|xyz");
        assert!(r.held_bytes() <= 4);
    }

    #[test]
    fn header_errors() {
        assert!(parse_udp(&[0; 7]).is_err());
        assert!(parse_udp(&[0, 1, 0, 2, 0, 200, 0, 0]).is_err());
        assert!(parse_tcp(&[0; 19]).is_err());
        let mut t = [0u8; 20];
        t[12] = 0xf0;
        assert!(parse_tcp(&t).is_err());
    }
}
