//! Capture file readers: pcap, pcapng (through `pcap-parser`) and the project's hex vectors.
//!
//! The whole file is read into memory first: captures worth decoding by hand are small, and
//! slices into one buffer let every error name the byte offset of the record it came from.
//! A damaged record is reported and, where its length is still known (pcapng blocks), skipped;
//! a legacy pcap record with a broken length cannot be resynchronised, so reading stops there.

use pcap_parser::nom;
use pcap_parser::{parse_block_be, parse_block_le, parse_pcap_frame, parse_pcap_frame_be, parse_pcap_header};
use pcap_parser::{parse_pcap_frame_modified, Block, PcapError};
use pvm_proto::hexvec::{self, HexError};
use thiserror::Error;

/// DLT/LINKTYPE numbers understood by [`crate::link`].
pub mod linktype {
    pub const NULL: i32 = 0;
    pub const ETHERNET: i32 = 1;
    pub const RAW: i32 = 101;
    pub const LINUX_SLL: i32 = 113;
    pub const IPV4: i32 = 228;
    pub const LINUX_SLL2: i32 = 276;
}

/// What a record's bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// A frame of this pcap link type.
    Pcap(i32),
    /// A hex vector frame holding one whole UDP payload (DDFRAGHDR first).
    HexDatagram,
    /// A hex vector frame holding one whole stream fragment (TDFRAGHDR first).
    HexStream,
}

/// One captured record.
#[derive(Debug, Clone)]
pub struct Packet<'a> {
    /// 1-based record number, as Wireshark counts.
    pub number: u64,
    /// Byte offset of the record in the input file.
    pub offset: usize,
    /// Capture time in nanoseconds since the epoch (0 for hex vectors).
    pub ts_ns: u64,
    pub link: Link,
    pub data: &'a [u8],
    /// Length on the wire; larger than `data.len()` when the capture was cut at the snap length.
    pub orig_len: usize,
    /// The `##` line of a hex vector.
    pub label: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CaptureError {
    #[error("not a pcap, pcapng or hex vector file (first bytes {0:02x?})")]
    UnknownFormat(Vec<u8>),
    #[error("packet {number} at byte {offset}: {what}")]
    Record { number: u64, offset: usize, what: String },
    #[error("line {line}: {what}")]
    Hex { line: usize, what: String },
}

/// Input formats, told apart by their first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Pcap,
    PcapNg,
    Hex,
}

pub fn detect(bytes: &[u8]) -> Option<Format> {
    match bytes.get(..4)? {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0xa1, 0xb2, 0xc3, 0xd4] | [0x4d, 0x3c, 0xb2, 0xa1] | [0xa1, 0xb2, 0x3c, 0x4d] => {
            Some(Format::Pcap)
        }
        [0x34, 0xcd, 0xb2, 0xa1] | [0xa1, 0xb2, 0xcd, 0x34] => Some(Format::Pcap),
        [0x0a, 0x0d, 0x0d, 0x0a] => Some(Format::PcapNg),
        [b'#', ..] => Some(Format::Hex),
        _ => None,
    }
}

/// Reads every record of `bytes`, calling `on_packet` for each good one and `on_error` for each
/// damaged one. Returns `Err` only when the file as a whole cannot be read.
///
/// `hex_stream` tells whether hex vector frames are stream fragments (else UDP payloads).
pub fn read(
    bytes: &[u8],
    hex_stream: bool,
    on_packet: &mut dyn FnMut(Packet<'_>),
    on_error: &mut dyn FnMut(CaptureError),
) -> Result<(), CaptureError> {
    match detect(bytes) {
        Some(Format::Pcap) => read_pcap(bytes, on_packet, on_error),
        Some(Format::PcapNg) => read_pcapng(bytes, on_packet, on_error),
        Some(Format::Hex) => read_hex(bytes, hex_stream, on_packet, on_error),
        None => Err(CaptureError::UnknownFormat(bytes.iter().take(8).copied().collect())),
    }
}

fn describe(e: &nom::Err<PcapError<&[u8]>>) -> String {
    match e {
        nom::Err::Incomplete(nom::Needed::Size(n)) => format!("truncated record: {n} more bytes needed"),
        nom::Err::Incomplete(nom::Needed::Unknown) => "truncated record".to_string(),
        nom::Err::Error(e) | nom::Err::Failure(e) => format!("malformed record: {e:?}").replace('\n', " "),
    }
}

fn read_pcap(
    bytes: &[u8],
    on_packet: &mut dyn FnMut(Packet<'_>),
    on_error: &mut dyn FnMut(CaptureError),
) -> Result<(), CaptureError> {
    let (mut rest, hdr) = parse_pcap_header(bytes).map_err(|e| CaptureError::Record {
        number: 0,
        offset: 0,
        what: format!("file header: {}", describe(&e)),
    })?;
    let nano = hdr.is_nanosecond_precision();
    let link = Link::Pcap(hdr.network.0);
    let mut number = 0;
    while !rest.is_empty() {
        number += 1;
        let offset = bytes.len() - rest.len();
        let parsed = if hdr.is_modified_format() {
            parse_pcap_frame_modified(rest)
        } else if hdr.is_bigendian() {
            parse_pcap_frame_be(rest)
        } else {
            parse_pcap_frame(rest)
        };
        match parsed {
            Ok((r, b)) => {
                let frac = if nano {
                    u64::from(b.ts_usec)
                } else {
                    u64::from(b.ts_usec) * 1000
                };
                on_packet(Packet {
                    number,
                    offset,
                    ts_ns: u64::from(b.ts_sec) * 1_000_000_000 + frac,
                    link,
                    data: b.data,
                    orig_len: b.origlen as usize,
                    label: None,
                });
                rest = r;
            }
            Err(e) => {
                // The record length is what went wrong (or the file ends early): no way to find
                // the next record.
                on_error(CaptureError::Record {
                    number,
                    offset,
                    what: format!("{}; {} bytes left unread", describe(&e), rest.len()),
                });
                break;
            }
        }
    }
    Ok(())
}

const SHB_MAGIC: u32 = 0x0a0d_0d0a;

struct Interface {
    link: i32,
    /// Units per second.
    resolution: u64,
    offset_s: i64,
}

fn read_pcapng(
    bytes: &[u8],
    on_packet: &mut dyn FnMut(Packet<'_>),
    on_error: &mut dyn FnMut(CaptureError),
) -> Result<(), CaptureError> {
    let mut rest = bytes;
    let mut big_endian = false;
    let mut interfaces: Vec<Interface> = Vec::new();
    let mut number = 0;
    while !rest.is_empty() {
        // Only packet blocks are numbered (as Wireshark does); a damaged block takes the number
        // the packet it may have been would have had.
        let number_if_packet = number + 1;
        let offset = bytes.len() - rest.len();
        if rest.len() >= 12 && rest[..4] == SHB_MAGIC.to_le_bytes() {
            // The byte-order magic decides how this section is read.
            big_endian = rest[8..12] == [0x1a, 0x2b, 0x3c, 0x4d];
        }
        let parsed = if big_endian {
            parse_block_be(rest)
        } else {
            parse_block_le(rest)
        };
        match parsed {
            Ok((r, block)) => {
                if block.is_data_block() {
                    number = number_if_packet;
                }
                match block {
                    Block::SectionHeader(_) => interfaces.clear(),
                    Block::InterfaceDescription(idb) if interfaces.len() < 65536 => {
                        interfaces.push(Interface {
                            link: idb.linktype.0,
                            resolution: idb.ts_resolution().unwrap_or(1_000_000).max(1),
                            offset_s: idb.ts_offset(),
                        });
                    }
                    Block::EnhancedPacket(epb) => match interfaces.get(epb.if_id as usize) {
                        Some(ifc) => {
                            let raw = (u128::from(epb.ts_high) << 32) | u128::from(epb.ts_low);
                            let ns = raw * 1_000_000_000 / u128::from(ifc.resolution);
                            let ns = (ns as i128 + i128::from(ifc.offset_s) * 1_000_000_000).max(0);
                            on_packet(Packet {
                                number,
                                offset,
                                ts_ns: u64::try_from(ns).unwrap_or(u64::MAX),
                                link: Link::Pcap(ifc.link),
                                data: epb.data,
                                orig_len: epb.origlen as usize,
                                label: None,
                            });
                        }
                        None => on_error(CaptureError::Record {
                            number,
                            offset,
                            what: format!(
                                "enhanced packet block names interface {} which was not described",
                                epb.if_id
                            ),
                        }),
                    },
                    Block::SimplePacket(spb) => match interfaces.first() {
                        Some(ifc) => on_packet(Packet {
                            number,
                            offset,
                            ts_ns: 0,
                            link: Link::Pcap(ifc.link),
                            data: spb.data,
                            orig_len: spb.origlen as usize,
                            label: None,
                        }),
                        None => on_error(CaptureError::Record {
                            number,
                            offset,
                            what: "simple packet block before any interface description".to_string(),
                        }),
                    },
                    _ => {}
                }
                rest = r;
            }
            Err(e) => {
                // Skip the block if its own length field still makes sense.
                let len = rest.get(4..8).map(|b| {
                    let b = [b[0], b[1], b[2], b[3]];
                    if big_endian {
                        u32::from_be_bytes(b)
                    } else {
                        u32::from_le_bytes(b)
                    }
                });
                let skippable = matches!(len, Some(l) if l >= 12 && l % 4 == 0 && (l as usize) <= rest.len());
                on_error(CaptureError::Record {
                    number: number_if_packet,
                    offset,
                    what: if skippable {
                        format!("{}; block skipped", describe(&e))
                    } else {
                        format!("{}; {} bytes left unread", describe(&e), rest.len())
                    },
                });
                match len {
                    Some(l) if skippable => rest = &rest[l as usize..],
                    _ => break,
                }
            }
        }
    }
    Ok(())
}

fn read_hex(
    bytes: &[u8],
    stream: bool,
    on_packet: &mut dyn FnMut(Packet<'_>),
    on_error: &mut dyn FnMut(CaptureError),
) -> Result<(), CaptureError> {
    let text = std::str::from_utf8(bytes).map_err(|e| CaptureError::Hex {
        line: 1 + bytes[..e.valid_up_to()].iter().filter(|&&b| b == b'\n').count(),
        what: "not UTF-8 text".to_string(),
    })?;
    let mut frames = Vec::new();
    for s in hex_sections(text) {
        match hexvec::parse(s.text) {
            Ok(v) => frames.extend(v.frames.into_iter().map(|f| (s.offset, f))),
            Err(e) => on_error(CaptureError::Hex {
                line: s.first_line + hex_error_line(&e) - 1,
                what: hex_error_what(&e),
            }),
        }
    }
    for (i, (offset, f)) in frames.iter().enumerate() {
        on_packet(Packet {
            number: i as u64 + 1,
            offset: *offset,
            ts_ns: 0,
            link: if stream { Link::HexStream } else { Link::HexDatagram },
            data: &f.bytes,
            orig_len: f.bytes.len(),
            label: Some(&f.label),
        });
    }
    Ok(())
}

/// A run of lines from one `##` line to the next (or the text before the first).
struct HexSection<'a> {
    text: &'a str,
    /// Byte offset of the section in the file.
    offset: usize,
    /// 1-based line number of its first line.
    first_line: usize,
}

/// Cuts a vector file before every `##` line. `hexvec::parse` stops at the first bad frame;
/// parsing each frame on its own lets a damaged frame be reported and dropped while the rest
/// of the file is still decoded.
fn hex_sections(text: &str) -> Vec<HexSection<'_>> {
    let mut out = Vec::new();
    let (mut start, mut first_line, mut offset) = (0, 1, 0);
    for (i, line) in text.split_inclusive('\n').enumerate() {
        if line.trim_start().starts_with("##") && offset > start {
            out.push(HexSection {
                text: &text[start..offset],
                offset: start,
                first_line,
            });
            (start, first_line) = (offset, i + 1);
        }
        offset += line.len();
    }
    if offset > start {
        out.push(HexSection {
            text: &text[start..],
            offset: start,
            first_line,
        });
    }
    out
}

fn hex_error_line(e: &HexError) -> usize {
    match e {
        HexError::BadDigit { line, .. } | HexError::OddDigits { line, .. } | HexError::LengthMismatch { line, .. } => {
            *line
        }
    }
}

/// The error without its `line N:` prefix, which [`CaptureError::Hex`] adds back with the line
/// number in the whole file.
fn hex_error_what(e: &HexError) -> String {
    let s = e.to_string();
    match s.split_once(": ") {
        Some((l, rest)) if l.starts_with("line ") => rest.to_string(),
        _ => s,
    }
}
