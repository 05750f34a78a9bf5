//! Link layers: find the IPv4 packet inside a captured frame.

use crate::capture::linktype;

/// Outcome of peeling the link header.
#[derive(Debug, PartialEq, Eq)]
pub enum LinkResult<'a> {
    Ipv4(&'a [u8]),
    /// Not IPv4 (ARP, IPv6, ...): silently ignored by the analyser.
    Other,
    /// The frame is shorter than its link header, or the link type is unknown.
    Error(String),
}

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_VLAN: u16 = 0x8100;

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

pub fn ipv4_payload(link: i32, frame: &[u8]) -> LinkResult<'_> {
    let need = |n: usize, what: &str| -> Result<(), LinkResult<'static>> {
        if frame.len() < n {
            Err(LinkResult::Error(format!(
                "{what} header truncated: {} of {n} bytes",
                frame.len()
            )))
        } else {
            Ok(())
        }
    };
    let by_ethertype = |t: u16, at: usize| {
        if t == ETHERTYPE_IPV4 {
            LinkResult::Ipv4(&frame[at..])
        } else {
            LinkResult::Other
        }
    };
    match link {
        linktype::ETHERNET => {
            if let Err(e) = need(14, "Ethernet") {
                return e;
            }
            let t = be16(frame, 12);
            if t == ETHERTYPE_VLAN {
                if let Err(e) = need(18, "802.1Q") {
                    return e;
                }
                return by_ethertype(be16(frame, 16), 18);
            }
            by_ethertype(t, 14)
        }
        linktype::LINUX_SLL => {
            if let Err(e) = need(16, "Linux cooked (SLL)") {
                return e;
            }
            by_ethertype(be16(frame, 14), 16)
        }
        linktype::LINUX_SLL2 => {
            if let Err(e) = need(20, "Linux cooked (SLL2)") {
                return e;
            }
            by_ethertype(be16(frame, 0), 20)
        }
        linktype::RAW | linktype::IPV4 => match frame.first() {
            Some(b) if b >> 4 == 4 => LinkResult::Ipv4(frame),
            Some(_) => LinkResult::Other,
            None => LinkResult::Error("empty raw IP frame".to_string()),
        },
        linktype::NULL => {
            if let Err(e) = need(4, "BSD loopback") {
                return e;
            }
            // The family is in the capturing host's byte order; AF_INET is 2 everywhere.
            let fam = [frame[0], frame[1], frame[2], frame[3]];
            if u32::from_le_bytes(fam) == 2 || u32::from_be_bytes(fam) == 2 {
                LinkResult::Ipv4(&frame[4..])
            } else {
                LinkResult::Other
            }
        }
        other => LinkResult::Error(format!("unsupported link type {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ethernet_sll_sll2_raw() {
        let mut eth = vec![0u8; 14];
        eth[12] = 8;
        eth.push(0x45);
        assert_eq!(ipv4_payload(linktype::ETHERNET, &eth), LinkResult::Ipv4(&[0x45]));
        let mut sll = vec![0u8; 16];
        sll[14] = 8;
        sll.push(0x45);
        assert_eq!(ipv4_payload(linktype::LINUX_SLL, &sll), LinkResult::Ipv4(&[0x45]));
        let mut sll2 = vec![0u8; 20];
        sll2[0] = 8;
        sll2.push(0x45);
        assert_eq!(ipv4_payload(linktype::LINUX_SLL2, &sll2), LinkResult::Ipv4(&[0x45]));
        assert_eq!(ipv4_payload(linktype::RAW, &[0x45]), LinkResult::Ipv4(&[0x45]));
        assert_eq!(ipv4_payload(linktype::RAW, &[0x60]), LinkResult::Other);
        assert!(matches!(
            ipv4_payload(linktype::ETHERNET, &eth[..5]),
            LinkResult::Error(_)
        ));
        assert!(matches!(ipv4_payload(999, &eth), LinkResult::Error(_)));
    }
}
