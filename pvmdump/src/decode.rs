//! Message body decoding: the one place pvmdump interprets a body.
//!
//! Bodies are decoded by the protocol crate's codec ([`pvm_proto::body::decode`]), so that
//! pvmdump shows exactly what a Rust pvmd or libpvm would read, and `--check` tests that codec
//! against every legacy body in a capture: a body that does not decode, or does not re-encode
//! to the captured bytes outside the pad bytes legacy leaves uninitialised, is a codec bug (or
//! a legacy quirk the codec has not learnt yet), never something to hide.

use pvm_proto::body::{self, Body};
use pvm_proto::codes::{DSIG_X86_64, ENC_INPLACE, ENC_TRACE, ENC_XDR, TDPROTOCOL};
use pvm_proto::mesg::MsgHeader;
use pvm_proto::{ParseError, Tid};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::ops::Range;

/// How many body bytes are shown when a body does not decode.
const HEX_PREFIX: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// Human-readable body: the [`Body`]'s `Display`, or a hex prefix when it did not decode.
    pub text: String,
    /// The decoded body, or why the codec rejected it (field and byte offset within the body).
    pub body: Result<Body, ParseError>,
}

impl Decoded {
    /// The body as the codec writes it back, and the byte ranges of that output which are XDR
    /// padding (legacy leaves them uninitialised, so they are not compared). `None` when the
    /// body did not decode.
    pub fn reencoded(&self) -> Option<(Vec<u8>, Vec<Range<usize>>)> {
        let b = self.body.as_ref().ok()?;
        Some((b.emit(), b.padding()))
    }

    /// The TCP address a TC_CONREQ or TC_CONACK announces (wire.md §4.6), if it is a TCP one:
    /// pvmdump follows these to find task-to-task streams on ports it was not told about.
    pub fn direct_route_address(&self) -> Option<SocketAddrV4> {
        let (version, path) = match self.body.as_ref().ok()? {
            Body::TcConReq(r) => (r.version, &r.path),
            Body::TcConAck(a) if a.ack == 0 => (a.version, &a.path),
            _ => return None,
        };
        if version != TDPROTOCOL {
            return None;
        }
        parse_hex_addr(&path.to_string_lossy())
    }
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

/// Decodes one reassembled message body; `src` and `dst` decide requests from replies.
pub fn decode(header: &MsgHeader, src: Tid, dst: Tid, bytes: &[u8]) -> Decoded {
    let body = body::decode(header, src, dst, bytes);
    let mut text = match &body {
        Ok(b) => b.to_string(),
        Err(_) => hex_prefix(bytes),
    };
    let d = Decoded {
        text: String::new(),
        body,
    };
    if let Some(addr) = d.direct_route_address() {
        text.push_str(&format!(" route-addr={addr}"));
    }
    Decoded { text, ..d }
}

fn hex_prefix(bytes: &[u8]) -> String {
    let mut text: String = bytes.iter().take(HEX_PREFIX).map(|b| format!("{b:02x}")).collect();
    if bytes.len() > HEX_PREFIX {
        text.push_str("...");
    }
    text
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
    use pvm_proto::codes::{Tc, Tm, SYSCTX_TC, SYSCTX_TM};

    fn header(tag: i32, ctx: i32) -> MsgHeader {
        MsgHeader {
            enc: ENC_XDR,
            tag,
            ctx,
            wid: 0,
            crc: 0,
        }
    }

    #[test]
    fn conack_address() {
        // dd_direct_route_tcp.hex pkt 44, message body, with garbage in the string's pad.
        let h = header(Tc::ConAck.code(), SYSCTX_TC);
        let body = b"\x00\x00\x05\x26\x00\x00\x00\x00\x00\x00\x00\x0e0a4d0002:8d31\x00\x00\x7f";
        let d = decode(&h, Tid(0x40001), Tid(0x80001), body);
        assert_eq!(d.direct_route_address(), Some("10.77.0.2:36145".parse().unwrap()));
        assert!(d.text.starts_with("TC_CONACK "), "{}", d.text);
        assert!(d.text.ends_with(" route-addr=10.77.0.2:36145"), "{}", d.text);
        let (re, pads) = d.reencoded().unwrap();
        assert_eq!(pads, vec![26..28]);
        assert_eq!(re[..26], body[..26]);
        assert_eq!(re[26..], [0, 0]);
        assert_eq!(parse_hex_addr("/tmp/pvmtmp1.0"), None);
    }

    #[test]
    fn undecodable_body_keeps_its_error_and_hex() {
        // A TM_CONN2 reply cut inside its first int.
        let h = header(Tm::Conn2.code(), SYSCTX_TM);
        let d = decode(&h, Tid::LOCAL_PVMD, Tid(0x40001), &[0, 0, 0]);
        let e = d.body.as_ref().unwrap_err();
        assert_eq!(e.offset, 0, "{e}");
        assert_eq!(d.text, "000000");
        assert_eq!(d.reencoded(), None);
        assert_eq!(d.direct_route_address(), None);
    }
}
