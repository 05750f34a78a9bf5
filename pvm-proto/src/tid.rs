//! Task identifiers: a 32-bit word of flag bits, a 12-bit host index and an 18-bit local part.

use std::fmt;

/// A PVM task identifier (also used for daemons and multicast addresses).
///
/// Printed as PVM prints it: `t40001`, `t80040000`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Tid(pub i32);

impl Tid {
    /// Bit 31: the address of a daemon.
    pub const PVMD_BIT: u32 = 0x8000_0000;
    /// Bit 30: a multicast / group address.
    pub const GID_BIT: u32 = 0x4000_0000;
    /// Bits 29..18: the host index.
    pub const HOST_MASK: u32 = 0x3ffc_0000;
    /// Bits 17..0: the task number on its host.
    pub const LOCAL_MASK: u32 = 0x0003_ffff;
    pub const HOST_SHIFT: u32 = 18;
    /// The largest host index (the field is 12 bits wide).
    pub const MAX_HOST: u32 = 0xfff;

    /// "My own pvmd", as a task addresses its local daemon (and how the daemon signs what it sends).
    pub const LOCAL_PVMD: Tid = Tid(Self::PVMD_BIT as i32);
    /// The source of a task that has not finished connecting.
    pub const UNCONNECTED: Tid = Tid(-1);
    /// The destination a daemon uses for a connection not yet identified.
    pub const NONE: Tid = Tid(0);

    pub const fn from_u32(v: u32) -> Tid {
        Tid(v as i32)
    }

    pub const fn bits(self) -> u32 {
        self.0 as u32
    }

    /// A task on host `host` with local number `local`.
    pub const fn task(host: u32, local: u32) -> Tid {
        Tid::from_u32(((host << Self::HOST_SHIFT) & Self::HOST_MASK) | (local & Self::LOCAL_MASK))
    }

    /// The daemon of host `host`.
    pub const fn pvmd(host: u32) -> Tid {
        Tid::from_u32(Self::PVMD_BIT | ((host << Self::HOST_SHIFT) & Self::HOST_MASK))
    }

    /// The one-shot multicast address a task announces with TM_MCA.
    pub const fn multicast_of(sender: Tid) -> Tid {
        Tid::from_u32(Self::GID_BIT | (sender.bits() & !Self::PVMD_BIT))
    }

    pub const fn host(self) -> u32 {
        (self.bits() & Self::HOST_MASK) >> Self::HOST_SHIFT
    }

    pub const fn local(self) -> u32 {
        self.bits() & Self::LOCAL_MASK
    }

    /// `hostpart`: the host field in place, other bits clear.
    pub const fn host_part(self) -> u32 {
        self.bits() & Self::HOST_MASK
    }

    pub const fn is_task(self) -> bool {
        self.bits() & (Self::PVMD_BIT | Self::GID_BIT) == 0 && self.local() != 0
    }

    pub const fn is_pvmd(self) -> bool {
        self.bits() & (Self::PVMD_BIT | Self::GID_BIT) == Self::PVMD_BIT && self.local() == 0
    }

    pub const fn is_multicast(self) -> bool {
        self.bits() & (Self::PVMD_BIT | Self::GID_BIT) == Self::GID_BIT
    }

    /// True when the host field is 0 (meaning "the local host") or equal to `my_host`.
    pub const fn is_on_host(self, my_host: u32) -> bool {
        let h = self.host();
        h == 0 || h == my_host
    }
}

impl fmt::Display for Tid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 < 0 && !self.is_pvmd() && !self.is_multicast() && self.0 > -100 {
            // Error codes travel in tid vectors; print them as numbers.
            write!(f, "{}", self.0)
        } else {
            write!(f, "t{:x}", self.bits())
        }
    }
}

impl fmt::Debug for Tid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl From<i32> for Tid {
    fn from(v: i32) -> Tid {
        Tid(v)
    }
}

impl From<Tid> for i32 {
    fn from(t: Tid) -> i32 {
        t.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_and_predicates() {
        let master = Tid::pvmd(1);
        assert_eq!(master.bits(), 0x8004_0000);
        assert!(master.is_pvmd() && !master.is_task());
        let t = Tid::task(2, 1);
        assert_eq!(t.bits(), 0x0008_0001);
        assert!(t.is_task());
        assert_eq!(t.host(), 2);
        assert_eq!(t.local(), 1);
        let m = Tid::multicast_of(Tid::from_u32(0x40001));
        assert_eq!(m.bits(), 0x4004_0001);
        assert!(m.is_multicast() && !m.is_task());
        assert!(Tid::LOCAL_PVMD.is_pvmd());
        assert!(Tid::LOCAL_PVMD.is_on_host(7));
        assert!(!Tid::NONE.is_task());
        assert_eq!(Tid::from_u32(0x40001).to_string(), "t40001");
        assert_eq!(master.to_string(), "t80040000");
        assert_eq!(Tid(-31).to_string(), "-31");
    }
}
