//! A tiny capture writer for tests: Ethernet/IPv4/UDP/TCP frames in pcap and pcapng files.
#![allow(dead_code)]

use pvmdump::{analyse_bytes, Config, Stats};

pub const ETHERNET: u32 = 1;
pub const RAW: u32 = 101;
pub const SLL: u32 = 113;
pub const SLL2: u32 = 276;

pub const A: [u8; 4] = [10, 77, 0, 1];
pub const B: [u8; 4] = [10, 77, 0, 2];

/// One captured frame: time in microseconds, bytes, and the length on the wire if larger.
#[derive(Clone)]
pub struct Frame {
    pub ts_us: u64,
    pub data: Vec<u8>,
    pub orig_len: Option<usize>,
}

pub fn frames(datas: Vec<Vec<u8>>) -> Vec<Frame> {
    datas
        .into_iter()
        .enumerate()
        .map(|(i, data)| Frame {
            ts_us: 1_700_000_000_000_000 + 1000 * i as u64,
            data,
            orig_len: None,
        })
        .collect()
}

pub fn pcap(link: u32, frames: &[Frame]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    f.extend_from_slice(&2u16.to_le_bytes());
    f.extend_from_slice(&4u16.to_le_bytes());
    f.extend_from_slice(&[0; 8]);
    f.extend_from_slice(&65535u32.to_le_bytes());
    f.extend_from_slice(&link.to_le_bytes());
    for fr in frames {
        f.extend_from_slice(&((fr.ts_us / 1_000_000) as u32).to_le_bytes());
        f.extend_from_slice(&((fr.ts_us % 1_000_000) as u32).to_le_bytes());
        f.extend_from_slice(&(fr.data.len() as u32).to_le_bytes());
        f.extend_from_slice(&(fr.orig_len.unwrap_or(fr.data.len()) as u32).to_le_bytes());
        f.extend_from_slice(&fr.data);
    }
    f
}

fn ng_block(kind: u32, body: &[u8]) -> Vec<u8> {
    let mut body = body.to_vec();
    while body.len() % 4 != 0 {
        body.push(0);
    }
    let len = (12 + body.len()) as u32;
    let mut b = Vec::new();
    b.extend_from_slice(&kind.to_le_bytes());
    b.extend_from_slice(&len.to_le_bytes());
    b.extend_from_slice(&body);
    b.extend_from_slice(&len.to_le_bytes());
    b
}

pub fn pcapng(link: u16, frames: &[Frame]) -> Vec<u8> {
    let mut shb = Vec::new();
    shb.extend_from_slice(&0x1a2b_3c4du32.to_le_bytes());
    shb.extend_from_slice(&1u16.to_le_bytes());
    shb.extend_from_slice(&0u16.to_le_bytes());
    shb.extend_from_slice(&(-1i64).to_le_bytes());
    let mut f = ng_block(0x0a0d_0d0a, &shb);
    let mut idb = Vec::new();
    idb.extend_from_slice(&link.to_le_bytes());
    idb.extend_from_slice(&0u16.to_le_bytes());
    idb.extend_from_slice(&65535u32.to_le_bytes());
    f.extend(ng_block(1, &idb));
    for fr in frames {
        let mut epb = Vec::new();
        epb.extend_from_slice(&0u32.to_le_bytes());
        epb.extend_from_slice(&((fr.ts_us >> 32) as u32).to_le_bytes());
        epb.extend_from_slice(&(fr.ts_us as u32).to_le_bytes());
        epb.extend_from_slice(&(fr.data.len() as u32).to_le_bytes());
        epb.extend_from_slice(&(fr.orig_len.unwrap_or(fr.data.len()) as u32).to_le_bytes());
        epb.extend_from_slice(&fr.data);
        f.extend(ng_block(6, &epb));
    }
    f
}

pub fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, id: u16, mf: bool, offset: usize, payload: &[u8]) -> Vec<u8> {
    let total = 20 + payload.len();
    let frag = ((offset / 8) as u16) | if mf { 0x2000 } else { 0 };
    let mut h = vec![0x45, 0];
    h.extend_from_slice(&(total as u16).to_be_bytes());
    h.extend_from_slice(&id.to_be_bytes());
    h.extend_from_slice(&frag.to_be_bytes());
    h.extend_from_slice(&[64, proto, 0, 0]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    let sum: u32 = h.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], c[1]]))).sum();
    let sum = !(((sum & 0xffff) + (sum >> 16)) as u16);
    h[10..12].copy_from_slice(&sum.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

pub const SYN: u8 = 0x02;
pub const FIN: u8 = 0x01;
pub const ACK: u8 = 0x10;
pub const PSH: u8 = 0x08;

pub fn tcp(sport: u16, dport: u16, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&0u32.to_be_bytes());
    t.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    t.extend_from_slice(payload);
    t
}

pub fn eth(ip: &[u8]) -> Vec<u8> {
    let mut e = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
    e.extend_from_slice(ip);
    e
}

/// The IP packets of one UDP datagram on a link whose MTU leaves `mtu_payload` bytes per fragment.
pub fn udp_fragments(
    src: [u8; 4],
    dst: [u8; 4],
    id: u16,
    sport: u16,
    dport: u16,
    payload: &[u8],
    mtu_payload: usize,
) -> Vec<Vec<u8>> {
    let u = udp(sport, dport, payload);
    let chunks: Vec<&[u8]> = u.chunks(mtu_payload).collect();
    let n = chunks.len();
    chunks
        .iter()
        .enumerate()
        .map(|(i, c)| ipv4(src, dst, 17, id, i + 1 < n, i * mtu_payload, c))
        .collect()
}

/// Frames of a hex vector file of pvm-proto.
pub fn vector(name: &str) -> Vec<Vec<u8>> {
    let path = format!("{}/../pvm-proto/tests/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let v = pvm_proto::hexvec::parse(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    v.frames.into_iter().map(|f| f.bytes).collect()
}

pub fn run(bytes: &[u8], cfg: Config) -> (Vec<String>, Stats) {
    analyse_bytes(bytes, cfg, false).expect("capture readable")
}

/// The line text after `#N TIME `.
pub fn body(line: &str) -> &str {
    line.splitn(3, ' ').nth(2).unwrap_or("")
}

pub fn check_cfg() -> Config {
    Config {
        check: true,
        ..Config::default()
    }
}
