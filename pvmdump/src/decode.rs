//! Message body decoding: the one place pvmdump interprets a body.
//!
//! TODO(merge): switch to `pvm_proto::body::decode(header, src, dst, body)` and print the
//! returned `Body` with its `Display`; set [`Decoded::reencoded`] from `Body::emit()` and
//! [`Decoded::masked`] to the XDR pad bytes, so that `--check` compares bodies too. Until then a
//! body is shown as its length and a hex prefix, and only the direct-route addresses of
//! TC_CONREQ/TC_CONACK are read (pvmdump needs them to find task-to-task TCP streams).

use pvm_proto::codes::{Tc, DSIG_X86_64, ENC_INPLACE, ENC_TRACE, ENC_XDR, SYSCTX_TC, TDPROTOCOL};
use pvm_proto::mesg::MsgHeader;
use pvm_proto::xdr::XdrReader;
use pvm_proto::{ParseError, Tid};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::ops::Range;

/// How many body bytes the placeholder shows.
const HEX_PREFIX: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// Human-readable body.
    pub text: String,
    /// The body as re-encoded from the decoded value; `None` while bodies are not decoded.
    pub reencoded: Option<Vec<u8>>,
    /// Byte ranges of the body that legacy senders may leave uninitialised (XDR pads).
    pub masked: Vec<Range<usize>>,
    /// Why the body could not be decoded, if it could not.
    pub error: Option<ParseError>,
}

/// Name of a message header `enc` value.
pub fn enc_name(enc: i32) -> String {
    match enc {
        ENC_XDR => "xdr".to_string(),
        ENC_TRACE => "trace".to_string(),
        ENC_INPLACE => "inplace".to_string(),
        DSIG_X86_64 => "raw".to_string(),
        other => format!("{:#010x}", other as u32),
    }
}

pub fn decode(header: &MsgHeader, _src: Tid, _dst: Tid, body: &[u8]) -> Decoded {
    let mut text = String::new();
    for b in body.iter().take(HEX_PREFIX) {
        text.push_str(&format!("{b:02x}"));
    }
    if body.len() > HEX_PREFIX {
        text.push_str("...");
    }
    if let Some(addr) = direct_route_address(header, body) {
        text.push_str(&format!(" route-addr={addr}"));
    }
    Decoded {
        text,
        reencoded: None,
        masked: Vec::new(),
        error: None,
    }
}

/// The TCP address a TC_CONREQ or TC_CONACK announces (wire.md §4.6), if it is a TCP one.
pub fn direct_route_address(header: &MsgHeader, body: &[u8]) -> Option<SocketAddrV4> {
    if header.ctx != SYSCTX_TC || header.enc != ENC_XDR {
        return None;
    }
    let mut r = XdrReader::new(body);
    if r.int("version").ok()? != TDPROTOCOL {
        return None;
    }
    if header.tag == Tc::ConAck.code() {
        if r.int("ack").ok()? != 0 {
            return None;
        }
    } else if header.tag != Tc::ConReq.code() {
        return None;
    }
    parse_hex_addr(&r.string("address").ok()?)
}

/// `"%08x:%04x"` as pvmds and libpvm write socket addresses (wire.md §5.1).
pub fn parse_hex_addr(s: &str) -> Option<SocketAddrV4> {
    let (ip, port) = s.split_once(':')?;
    if ip.len() != 8 || port.len() != 4 {
        return None;
    }
    let ip = u32::from_str_radix(ip, 16).ok()?;
    let port = u16::from_str_radix(port, 16).ok()?;
    Some(SocketAddrV4::new(Ipv4Addr::from(ip), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conack_address() {
        // dd_direct_route_tcp.hex pkt 44, message header and body.
        let h = MsgHeader {
            enc: ENC_XDR,
            tag: Tc::ConAck.code(),
            ctx: SYSCTX_TC,
            wid: 0,
            crc: 0,
        };
        let body = b"\x00\x00\x05\x26\x00\x00\x00\x00\x00\x00\x00\x0e0a4d0002:8d31\x00\x00\x00";
        assert_eq!(direct_route_address(&h, body), Some("10.77.0.2:36145".parse().unwrap()));
        assert_eq!(direct_route_address(&h, &body[..10]), None);
        assert_eq!(parse_hex_addr("/tmp/pvmtmp1.0"), None);
        let d = decode(&h, Tid(1), Tid(2), body);
        assert!(d.text.starts_with("00000526"), "{}", d.text);
        assert!(d.text.ends_with("route-addr=10.77.0.2:36145"), "{}", d.text);
    }
}
