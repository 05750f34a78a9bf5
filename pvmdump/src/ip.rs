//! IPv4 headers and fragment reassembly.
//!
//! pvmd datagrams are up to 4080 bytes of UDP payload, so on a 1500-byte link each arrives as
//! three IP fragments. Reassembly is bounded: at most [`DefragLimits::max_datagrams`] datagrams
//! in progress and [`DefragLimits::max_bytes`] bytes held; a datagram not complete within
//! `timeout_ns` of capture time or `timeout_packets` packets is dropped with a note. Overlapping
//! fragments keep the bytes that arrived first (and say so if the new ones differ).

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::Ipv4Addr;

pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
/// The largest IPv4 datagram; also bounds a reassembled payload.
const MAX_DATAGRAM: usize = 65535;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv4<'a> {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    pub id: u16,
    pub more_fragments: bool,
    /// Fragment offset in bytes.
    pub frag_offset: usize,
    pub payload: &'a [u8],
}

impl Ipv4<'_> {
    pub fn is_fragment(&self) -> bool {
        self.more_fragments || self.frag_offset != 0
    }
}

/// Parses an IPv4 header. Ethernet padding after the datagram is cut off; a datagram cut short
/// by the capture's snap length is an error (its payload cannot be decoded).
pub fn parse(b: &[u8]) -> Result<Ipv4<'_>, String> {
    if b.len() < 20 {
        return Err(format!("IPv4 header truncated: {} of 20 bytes", b.len()));
    }
    if b[0] >> 4 != 4 {
        return Err(format!("IP version {} at byte 0, expected 4", b[0] >> 4));
    }
    let ihl = usize::from(b[0] & 0x0f) * 4;
    if ihl < 20 || ihl > b.len() {
        return Err(format!(
            "IPv4 header length {ihl} at byte 0 is invalid (have {} bytes)",
            b.len()
        ));
    }
    let total = usize::from(u16::from_be_bytes([b[2], b[3]]));
    if total < ihl {
        return Err(format!(
            "IPv4 total length {total} at byte 2 is shorter than the header"
        ));
    }
    if total > b.len() {
        return Err(format!(
            "IPv4 datagram truncated: total length {total} at byte 2, {} bytes captured",
            b.len()
        ));
    }
    let frag = u16::from_be_bytes([b[6], b[7]]);
    Ok(Ipv4 {
        src: Ipv4Addr::new(b[12], b[13], b[14], b[15]),
        dst: Ipv4Addr::new(b[16], b[17], b[18], b[19]),
        proto: b[9],
        id: u16::from_be_bytes([b[4], b[5]]),
        more_fragments: frag & 0x2000 != 0,
        frag_offset: usize::from(frag & 0x1fff) * 8,
        payload: &b[ihl..total],
    })
}

#[derive(Debug, Clone, Copy)]
pub struct DefragLimits {
    pub max_datagrams: usize,
    pub max_bytes: usize,
    pub timeout_ns: u64,
    pub timeout_packets: u64,
}

impl Default for DefragLimits {
    fn default() -> Self {
        DefragLimits {
            max_datagrams: 256,
            max_bytes: 8 << 20,
            timeout_ns: 30_000_000_000,
            timeout_packets: 10_000,
        }
    }
}

type Key = (Ipv4Addr, Ipv4Addr, u8, u16);

struct Pending {
    first_ts: u64,
    first_packet: u64,
    buf: Vec<u8>,
    have: Vec<bool>,
    total: Option<usize>,
}

impl Pending {
    fn held(&self) -> usize {
        self.have.iter().filter(|&&h| h).count()
    }
}

/// What a fragment did.
#[derive(Debug, PartialEq, Eq)]
pub enum Defragged<'a> {
    /// A whole payload: the packet was not fragmented, or it completed a datagram.
    Complete(Cow<'a, [u8]>),
    /// Stored; more fragments are needed.
    Pending,
    /// The fragment was refused (reason given in the notes).
    Dropped,
}

#[derive(Default)]
pub struct Defrag {
    limits: DefragLimits,
    pending: HashMap<Key, Pending>,
    bytes: usize,
}

impl Defrag {
    pub fn new(limits: DefragLimits) -> Self {
        Defrag {
            limits,
            pending: HashMap::new(),
            bytes: 0,
        }
    }

    /// Number of datagrams in progress.
    pub fn in_progress(&self) -> usize {
        self.pending.len()
    }

    fn drop_key(&mut self, key: &Key) -> Option<Pending> {
        let p = self.pending.remove(key)?;
        self.bytes -= p.buf.len();
        Some(p)
    }

    /// Drops datagrams that waited too long; their notes go into `notes`.
    pub fn expire(&mut self, now_ns: u64, packet: u64, notes: &mut Vec<String>) {
        let lim = self.limits;
        let mut old: Vec<Key> = self
            .pending
            .iter()
            .filter(|(_, p)| {
                now_ns.saturating_sub(p.first_ts) > lim.timeout_ns
                    || packet.saturating_sub(p.first_packet) > lim.timeout_packets
            })
            .map(|(k, _)| *k)
            .collect();
        old.sort();
        for k in old {
            if let Some(p) = self.drop_key(&k) {
                notes.push(incomplete_note(&k, &p, "timed out"));
            }
        }
    }

    /// Feeds one IPv4 packet. Notes about dropped or suspicious fragments go into `notes`.
    pub fn push<'a>(&mut self, now_ns: u64, packet: u64, ip: &Ipv4<'a>, notes: &mut Vec<String>) -> Defragged<'a> {
        self.expire(now_ns, packet, notes);
        if !ip.is_fragment() {
            return Defragged::Complete(Cow::Borrowed(ip.payload));
        }
        let key: Key = (ip.src, ip.dst, ip.proto, ip.id);
        let start = ip.frag_offset;
        let end = start + ip.payload.len();
        if end > MAX_DATAGRAM {
            notes.push(format!(
                "IP fragment id {:#06x} {} > {}: offset {start} + length {} exceeds 65535, dropped",
                ip.id,
                ip.src,
                ip.dst,
                ip.payload.len()
            ));
            return Defragged::Dropped;
        }
        if ip.more_fragments && ip.payload.len() % 8 != 0 {
            notes.push(format!(
                "IP fragment id {:#06x} {} > {}: non-final fragment length {} is not a multiple of 8, dropped",
                ip.id,
                ip.src,
                ip.dst,
                ip.payload.len()
            ));
            return Defragged::Dropped;
        }
        if !self.pending.contains_key(&key) {
            if self.pending.len() >= self.limits.max_datagrams {
                // Make room by giving up on the oldest datagram.
                if let Some(oldest) = self.pending.iter().min_by_key(|(_, p)| p.first_packet).map(|(k, _)| *k) {
                    if let Some(p) = self.drop_key(&oldest) {
                        notes.push(incomplete_note(&oldest, &p, "evicted (too many datagrams in progress)"));
                    }
                }
            }
            self.pending.insert(
                key,
                Pending {
                    first_ts: now_ns,
                    first_packet: packet,
                    buf: Vec::new(),
                    have: Vec::new(),
                    total: None,
                },
            );
        }
        let Some(p) = self.pending.get_mut(&key) else {
            return Defragged::Dropped;
        };
        // Validate against what is known of the datagram's end.
        let bogus = match (p.total, ip.more_fragments) {
            (Some(t), _) if end > t => Some(format!("fragment ends at {end}, beyond the datagram end {t}")),
            (Some(t), false) if end != t => Some(format!("second last fragment ends at {end}, first said {t}")),
            (None, false) if p.have.len() > end => Some(format!(
                "last fragment ends at {end}, but bytes up to {} were seen",
                p.have.len()
            )),
            _ => None,
        };
        if let Some(why) = bogus {
            notes.push(format!(
                "IP fragment id {:#06x} {} > {}: {why}; datagram dropped",
                ip.id, ip.src, ip.dst
            ));
            self.drop_key(&key);
            return Defragged::Dropped;
        }
        if end > p.buf.len() {
            let grow = end - p.buf.len();
            if self.bytes + grow > self.limits.max_bytes {
                notes.push(format!(
                    "IP fragment id {:#06x} {} > {}: reassembly memory cap of {} bytes reached, datagram dropped",
                    ip.id, ip.src, ip.dst, self.limits.max_bytes
                ));
                self.drop_key(&key);
                return Defragged::Dropped;
            }
            self.bytes += grow;
            p.buf.resize(end, 0);
            p.have.resize(end, false);
        }
        if !ip.more_fragments {
            p.total = Some(end);
        }
        let mut differs = None;
        for (i, &b) in ip.payload.iter().enumerate() {
            let at = start + i;
            if p.have[at] {
                if p.buf[at] != b && differs.is_none() {
                    differs = Some(at);
                }
            } else {
                p.buf[at] = b;
                p.have[at] = true;
            }
        }
        if let Some(at) = differs {
            notes.push(format!(
                "IP fragment id {:#06x} {} > {}: overlaps earlier data with different bytes from offset {at}; earlier bytes kept",
                ip.id, ip.src, ip.dst
            ));
        }
        match p.total {
            Some(t) if p.have[..t].iter().all(|&h| h) => {
                let p = self.drop_key(&key);
                Defragged::Complete(Cow::Owned(p.map(|p| p.buf).unwrap_or_default()))
            }
            _ => Defragged::Pending,
        }
    }

    /// Reports every datagram still incomplete (end of capture).
    pub fn finish(&mut self, notes: &mut Vec<String>) {
        let mut keys: Vec<Key> = self.pending.keys().copied().collect();
        keys.sort();
        for k in keys {
            if let Some(p) = self.drop_key(&k) {
                notes.push(incomplete_note(&k, &p, "incomplete at end of capture"));
            }
        }
    }
}

fn incomplete_note(k: &Key, p: &Pending, why: &str) -> String {
    format!(
        "IP datagram id {:#06x} {} > {} (first fragment in packet {}): {why}, {} bytes held{}",
        k.3,
        k.0,
        k.1,
        p.first_packet,
        p.held(),
        match p.total {
            Some(t) => format!(" of {t}"),
            None => ", last fragment missing".to_string(),
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frag(id: u16, off: usize, mf: bool, data: &'static [u8]) -> Ipv4<'static> {
        Ipv4 {
            src: Ipv4Addr::new(10, 0, 0, 1),
            dst: Ipv4Addr::new(10, 0, 0, 2),
            proto: PROTO_UDP,
            id,
            more_fragments: mf,
            frag_offset: off,
            payload: data,
        }
    }

    #[test]
    fn out_of_order_overlap_and_caps() {
        let mut d = Defrag::new(DefragLimits::default());
        let mut n = Vec::new();
        assert_eq!(d.push(0, 1, &frag(1, 8, false, b"89"), &mut n), Defragged::Pending);
        assert_eq!(
            d.push(0, 2, &frag(1, 0, true, b"01234567"), &mut n),
            Defragged::Complete(Cow::Owned(b"0123456789".to_vec()))
        );
        assert!(n.is_empty());
        // Overlap with different bytes: first wins, noted.
        d.push(0, 3, &frag(2, 0, true, b"AAAAAAAA"), &mut n);
        d.push(0, 4, &frag(2, 0, true, b"BBBBBBBB"), &mut n);
        assert_eq!(n.len(), 1, "{n:?}");
        assert_eq!(
            d.push(0, 5, &frag(2, 8, false, b"C"), &mut n),
            Defragged::Complete(Cow::Owned(b"AAAAAAAAC".to_vec()))
        );
        // Two different ends: dropped.
        d.push(0, 6, &frag(3, 8, false, b"x"), &mut n);
        assert_eq!(d.push(0, 7, &frag(3, 16, false, b"x"), &mut n), Defragged::Dropped);
        // Timeout by packets.
        d.push(0, 8, &frag(4, 0, true, b"01234567"), &mut n);
        let before = n.len();
        d.expire(0, 20_000, &mut n);
        assert_eq!(n.len(), before + 1);
        assert_eq!(d.in_progress(), 0);
    }

    #[test]
    fn max_datagrams_evicts_oldest() {
        let mut d = Defrag::new(DefragLimits {
            max_datagrams: 2,
            ..DefragLimits::default()
        });
        let mut n = Vec::new();
        for id in 0..5 {
            d.push(0, u64::from(id), &frag(id, 0, true, b"01234567"), &mut n);
        }
        assert_eq!(d.in_progress(), 2);
        assert_eq!(n.len(), 3);
    }

    #[test]
    fn header_errors() {
        assert!(parse(&[0x45; 10]).is_err());
        let mut h = [0u8; 20];
        h[0] = 0x45;
        h[3] = 40;
        assert!(parse(&h).unwrap_err().contains("truncated"));
    }
}
