//! The host table of a virtual machine (startup.md §4, messages.md §4 DM_HTUPD), the slave
//! command line and the `ddpro<…>` start-up line a slave prints for its master.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};

use pvm_proto::body::HtEntry;
use pvm_proto::codes::{PvmError, DDPROTOCOL};
use pvm_proto::Tid;

/// One member of the virtual machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub index: u32,
    pub name: String,
    pub arch: String,
    /// UDP address of its pvmd.
    pub addr: SocketAddrV4,
    pub mtu: i32,
    pub speed: i32,
    pub dsig: i32,
}

impl Host {
    pub fn tid(&self) -> Tid {
        Tid::pvmd(self.index)
    }

    /// Host part as TM_CONFIG and DM_TASKACK carry it (`index << 18`).
    pub fn hostpart(&self) -> i32 {
        (self.index << Tid::HOST_SHIFT) as i32
    }

    /// A DM_HTUPD entry; `None` for an index out of range or an unparsable address.
    pub fn from_entry(e: &HtEntry) -> Option<Host> {
        let index = u32::try_from(e.index)
            .ok()
            .filter(|i| (1..=Tid::MAX_HOST).contains(i))?;
        Some(Host {
            index,
            name: e.name.to_string_lossy(),
            arch: e.arch.to_string_lossy(),
            addr: parse_hex_addr(&e.addr.to_string_lossy())?,
            mtu: e.mtu,
            speed: e.speed,
            dsig: e.dsig,
        })
    }

    pub fn to_entry(&self) -> HtEntry {
        HtEntry {
            index: self.index as i32,
            name: self.name.as_str().into(),
            arch: self.arch.as_str().into(),
            addr: hex_addr(self.addr).into(),
            mtu: self.mtu,
            speed: self.speed,
            dsig: self.dsig,
        }
    }
}

/// The hosts by index, with the serial number of the last committed update.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostTable {
    pub serial: i32,
    pub master: u32,
    pub console: u32,
    pub hosts: BTreeMap<u32, Host>,
}

impl HostTable {
    pub fn get(&self, index: u32) -> Option<&Host> {
        self.hosts.get(&index)
    }

    pub fn by_name(&self, name: &str) -> Option<&Host> {
        self.hosts.values().find(|h| h.name == name)
    }

    pub fn by_addr_ip(&self, ip: Ipv4Addr) -> Option<&Host> {
        self.hosts.values().find(|h| *h.addr.ip() == ip)
    }

    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// Number of different architectures (the TM_CONFIG `narches`).
    pub fn narches(&self) -> i32 {
        let mut a: Vec<&str> = self.hosts.values().map(|h| h.arch.as_str()).collect();
        a.sort_unstable();
        a.dedup();
        a.len() as i32
    }

    /// The next free host index after `after`, wrapping below `Tid::MAX_HOST` (`hostids_new`).
    pub fn free_index(&self, after: u32, taken: &[u32]) -> Option<u32> {
        let max = Tid::MAX_HOST;
        let mut i = after;
        for _ in 0..max {
            i = if i >= max { 1 } else { i + 1 };
            if !self.hosts.contains_key(&i) && !taken.contains(&i) {
                return Some(i);
            }
        }
        None
    }
}

/// `"%08x:%04x"` as the legacy prints a UDP address.
pub fn hex_addr(a: SocketAddrV4) -> String {
    format!("{:08x}:{:04x}", u32::from(*a.ip()), a.port())
}

/// Reads `"0a4d0002:c907"`; `None` if either half is not hex.
pub fn parse_hex_addr(s: &str) -> Option<SocketAddrV4> {
    let (ip, port) = s.trim().split_once(':')?;
    let ip = u32::from_str_radix(ip, 16).ok()?;
    let port = u16::from_str_radix(port, 16).ok()?;
    Some(SocketAddrV4::new(Ipv4Addr::from(ip), port))
}

/// The five slave arguments `<master index> <master ip:port> <master mtu> <my index> <my ip:port>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlaveArgs {
    pub master_index: u32,
    pub master_addr: SocketAddrV4,
    pub master_mtu: i32,
    pub my_index: u32,
    pub my_addr: SocketAddrV4,
}

impl SlaveArgs {
    pub fn parse(words: &[&str]) -> Option<SlaveArgs> {
        let [mi, ma, mm, hi, ha] = words else { return None };
        let index = |s: &str| s.parse::<u32>().ok().filter(|i| (1..=Tid::MAX_HOST).contains(i));
        Some(SlaveArgs {
            master_index: index(mi)?,
            master_addr: parse_hex_addr(ma)?,
            master_mtu: mm.parse().ok().filter(|m| *m >= 64)?,
            my_index: index(hi)?,
            my_addr: parse_hex_addr(ha)?,
        })
    }
}

/// The line a slave prints on stdout once its sockets exist (startup.md §4.5).
pub fn ddpro_line(arch: &str, addr: SocketAddrV4, mtu: i32, dsig: i32) -> String {
    format!(
        "ddpro<{DDPROTOCOL}> arch<{arch}> ip<{}> mtu<{mtu}> dsig<{dsig}>",
        hex_addr(addr)
    )
}

/// What a master learns from a slave's start-up line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlaveReply {
    pub arch: String,
    pub addr: SocketAddrV4,
    pub mtu: i32,
    pub dsig: i32,
}

/// Parses a `ddpro<…>` line; an error token (`PvmDupHost`, …) or anything unreadable becomes the
/// error code the legacy master reports (startup.md §4.7).
pub fn parse_ddpro_line(line: &str) -> Result<SlaveReply, i32> {
    let line = line.trim();
    if !line.starts_with("ddpro<") {
        let tok = line.split_whitespace().next().unwrap_or("");
        return Err(match tok {
            "PvmDupHost" => PvmError::DupHost.code(),
            "PvmBadVersion" => PvmError::BadVersion.code(),
            _ => PvmError::CantStart.code(),
        });
    }
    let mut words = Vec::new();
    let mut rest = line;
    while let Some(open) = rest.find('<') {
        let Some(close) = rest[open..].find('>') else { break };
        words.push(&rest[open + 1..open + close]);
        rest = &rest[open + close + 1..];
    }
    let [ver, arch, ip, mtu, dsig] = words[..] else {
        return Err(PvmError::CantStart.code());
    };
    if ver.parse::<i32>().ok() != Some(DDPROTOCOL) {
        return Err(PvmError::BadVersion.code());
    }
    Ok(SlaveReply {
        arch: arch.to_string(),
        addr: parse_hex_addr(ip).ok_or(PvmError::CantStart.code())?,
        mtu: mtu.parse().map_err(|_| PvmError::CantStart.code())?,
        dsig: dsig.parse().map_err(|_| PvmError::CantStart.code())?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slave_args_as_the_legacy_master_builds_them() {
        let words = ["1", "0a4d0001:cdeb", "4080", "2", "0a4d0002:0000"];
        let a = SlaveArgs::parse(&words).unwrap();
        assert_eq!(a.master_index, 1);
        assert_eq!(a.master_addr, "10.77.0.1:52715".parse().unwrap());
        assert_eq!(a.my_index, 2);
        assert_eq!(a.my_addr.port(), 0);
        assert!(SlaveArgs::parse(&words[..4]).is_none());
        assert!(SlaveArgs::parse(&["0", "0a4d0001:cdeb", "4080", "2", "0a4d0002:0000"]).is_none());
        assert!(SlaveArgs::parse(&["1", "zz:cdeb", "4080", "2", "0a4d0002:0000"]).is_none());
    }

    #[test]
    fn ddpro_line_round_trip_and_errors() {
        let a: SocketAddrV4 = "10.77.0.2:51463".parse().unwrap();
        let l = ddpro_line("LINUX64", a, 4080, 4230209);
        assert_eq!(l, "ddpro<2316> arch<LINUX64> ip<0a4d0002:c907> mtu<4080> dsig<4230209>");
        let r = parse_ddpro_line(&l).unwrap();
        assert_eq!((r.arch.as_str(), r.addr, r.mtu, r.dsig), ("LINUX64", a, 4080, 4230209));
        assert_eq!(parse_ddpro_line("PvmDupHost"), Err(PvmError::DupHost.code()));
        assert_eq!(parse_ddpro_line("garbage"), Err(PvmError::CantStart.code()));
        assert_eq!(
            parse_ddpro_line("ddpro<1> arch<X> ip<0:0> mtu<1> dsig<1>"),
            Err(PvmError::BadVersion.code())
        );
        assert_eq!(parse_ddpro_line("ddpro<2316> arch<X"), Err(PvmError::CantStart.code()));
    }

    #[test]
    fn free_index_wraps_and_skips() {
        let mut t = HostTable::default();
        for i in [1, 2, 4] {
            t.hosts.insert(
                i,
                Host {
                    index: i,
                    name: format!("h{i}"),
                    arch: "LINUX64".into(),
                    addr: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0),
                    mtu: 4080,
                    speed: 1000,
                    dsig: 1,
                },
            );
        }
        assert_eq!(t.free_index(2, &[]), Some(3));
        assert_eq!(t.free_index(2, &[3]), Some(5));
        assert_eq!(t.free_index(Tid::MAX_HOST, &[]), Some(3));
        assert_eq!(t.narches(), 1);
    }
}
