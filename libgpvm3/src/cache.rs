//! Local copy of frozen (static) groups. Once pvm_freezegroup completes, the server appends the
//! whole group to its replies (state STATIC); members then answer gettid/getinst/gsize/host
//! queries locally instead of asking pvmgs. Dynamic groups are never cached: their membership
//! changes behind our back.

use std::collections::BTreeMap;
use std::os::raw::c_int;

use crate::ffi::{PVM_NOT_IN_GROUP, PVM_NO_GROUP, PVM_NO_INST, PVM_NULL_GROUP};

/// Slot value of an instance number nobody holds.
pub const NOTID: c_int = -1;

/// Reply `state` values.
pub const STATIC: c_int = 1;
pub const DYNAMIC: c_int = 2;

/// What the server sends for a static group, after `state`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticGroup {
    pub ntids: c_int,
    /// Indexed by instance number; `NOTID` marks a hole.
    pub tids: Vec<c_int>,
    /// Per host (ordered by host tid): members on the host and the lowest member tid there,
    /// which coordinates on-host reductions.
    pub np_onhost: Vec<c_int>,
    pub pcoord: Vec<c_int>,
}

#[derive(Debug, Default)]
pub struct Cache {
    groups: BTreeMap<Vec<u8>, StaticGroup>,
}

impl Cache {
    pub const fn new() -> Cache {
        Cache {
            groups: BTreeMap::new(),
        }
    }

    pub fn clear(&mut self) {
        self.groups.clear();
    }

    pub fn insert(&mut self, name: Vec<u8>, g: StaticGroup) {
        self.groups.insert(name, g);
    }

    pub fn remove(&mut self, name: &[u8]) {
        self.groups.remove(name);
    }

    pub fn get(&self, name: &[u8]) -> Option<&StaticGroup> {
        self.groups.get(name)
    }

    fn lookup(&self, name: &[u8]) -> Result<&StaticGroup, c_int> {
        if name.is_empty() {
            return Err(PVM_NULL_GROUP);
        }
        self.groups.get(name).ok_or(PVM_NO_GROUP)
    }

    /// Instance of `tid`, or a negative code (then the caller asks the server).
    pub fn getinst(&self, name: &[u8], tid: c_int) -> c_int {
        match self.lookup(name) {
            Ok(g) => g
                .tids
                .iter()
                .position(|&t| t == tid)
                .and_then(|i| c_int::try_from(i).ok())
                .unwrap_or(PVM_NOT_IN_GROUP),
            Err(e) => e,
        }
    }

    pub fn gettid(&self, name: &[u8], inst: c_int) -> c_int {
        match self.lookup(name) {
            Ok(g) => usize::try_from(inst)
                .ok()
                .and_then(|i| g.tids.get(i))
                .copied()
                .filter(|&t| t != NOTID)
                .unwrap_or(PVM_NO_INST),
            Err(e) => e,
        }
    }

    pub fn gsize(&self, name: &[u8]) -> c_int {
        match self.lookup(name) {
            Ok(g) => g.ntids,
            Err(e) => e,
        }
    }

    /// (coordinator, members on the host, hosts in the group) for the host `hosttid`;
    /// `host_of` maps a member tid to its host.
    pub fn host_char(
        &self,
        name: &[u8],
        hosttid: c_int,
        host_of: impl Fn(c_int) -> c_int,
    ) -> Result<(c_int, c_int, c_int), c_int> {
        let g = self.lookup(name)?;
        let i = g
            .pcoord
            .iter()
            .position(|&c| host_of(c) == hosttid)
            .ok_or(PVM_NO_GROUP)?;
        let nhosts = c_int::try_from(g.pcoord.len()).map_err(|_| PVM_NO_GROUP)?;
        Ok((g.pcoord[i], g.np_onhost[i], nhosts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Cache {
        let mut c = Cache::default();
        c.insert(
            b"g".to_vec(),
            StaticGroup {
                ntids: 2,
                tids: vec![0x40001, NOTID, 0x80002],
                np_onhost: vec![1, 1],
                pcoord: vec![0x40001, 0x80002],
            },
        );
        c
    }

    #[test]
    fn lookups_answer_like_the_server() {
        let c = sample();
        assert_eq!(c.getinst(b"g", 0x80002), 2);
        assert_eq!(c.getinst(b"g", 0x40005), PVM_NOT_IN_GROUP);
        assert_eq!(c.getinst(b"h", 0x40001), PVM_NO_GROUP);
        assert_eq!(c.getinst(b"", 0x40001), PVM_NULL_GROUP);
        assert_eq!(c.gettid(b"g", 0), 0x40001);
        assert_eq!(c.gettid(b"g", 1), PVM_NO_INST);
        assert_eq!(c.gettid(b"g", 3), PVM_NO_INST);
        assert_eq!(c.gettid(b"g", -1), PVM_NO_INST);
        assert_eq!(c.gsize(b"g"), 2);
        let host = |t: c_int| t & 0x3ffc_0000;
        assert_eq!(c.host_char(b"g", 0x80000, host), Ok((0x80002, 1, 2)));
        assert_eq!(c.host_char(b"g", 0xc0000, host), Err(PVM_NO_GROUP));
    }
}
