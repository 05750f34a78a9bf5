//! The mailbox (message box) database of TM_DB: classes of indexed entries, each holding an
//! embedded message (wire.md §6.6) that is kept as the bytes it arrived as and sent back verbatim.

use std::collections::{BTreeMap, BTreeSet};

use pvm_proto::codes::{MboxFlags, PvmError};
use pvm_proto::xdr::XdrReader;
use pvm_proto::ParseError;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    index: i32,
    /// Owner tid; 0 once a persistent entry's owner has exited.
    owner: i32,
    flags: i32,
    msg: Vec<u8>,
}

/// Entries per class, each list sorted by index.
#[derive(Debug, Default)]
pub struct Mailbox {
    classes: BTreeMap<String, Vec<Entry>>,
    /// Bytes stored over all entries, to bound memory.
    bytes: usize,
    /// hardening: (entries, bytes incl. class names) per owner, for the per-task quotas.
    owners: std::collections::HashMap<i32, (usize, usize)>,
    /// Owners a RESET marked: when they exit their persistent entries go too (the legacy's
    /// WT_RESET wait), since a reset machine should not keep them.
    doomed: BTreeSet<i32>,
}

/// What an entry costs its owner: the message and the class name it keeps alive.
fn cost(class: &str, msg: &[u8]) -> usize {
    class.len() + msg.len()
}

/// Total bytes of stored messages the daemon accepts.
pub const MAX_BYTES: usize = 64 << 20;

/// Checks that `b` is one embedded message (8 ints, then `{fraglen, bytes}` until `len`
/// bytes) and returns its length on the wire.
pub fn embedded_len(b: &[u8]) -> Result<usize, ParseError> {
    let mut r = XdrReader::new(b);
    let len = r.count("embedded message length", 1)?;
    for f in ["ctx", "tag", "wid", "enc", "crc", "src", "dst"] {
        r.int(f)?;
    }
    let mut got = 0usize;
    while got < len {
        let n = r.count("embedded fragment length", 1)?;
        r.opaque("embedded fragment", n)?;
        got += n;
    }
    if got != len {
        return Err(r.error(
            "embedded message length",
            pvm_proto::ErrorKind::Invalid {
                value: got as i64,
                why: "fragments do not add up to the length",
            },
        ));
    }
    Ok(r.position())
}

fn direct_index(flags: i32) -> i32 {
    (flags as u32 >> pvm_proto::codes::MBOX_DIRECT_INDEX_SHIFT) as i32
}

impl Mailbox {
    /// PUT: returns the index used, or an error code.
    pub fn insert(&mut self, tid: i32, class: &str, req: i32, flags: i32, msg: Vec<u8>) -> i32 {
        if self.bytes + msg.len() > MAX_BYTES {
            return PvmError::NoMem.code();
        }
        // hardening: per-task quota (an overwrite may free one entry, so this is conservative).
        let (n, b) = self.owners.get(&tid).copied().unwrap_or_default();
        if tid != 0
            && (n >= crate::limits::MBOX_ENTRIES_PER_TASK || b + cost(class, &msg) > crate::limits::MBOX_BYTES_PER_TASK)
        {
            return PvmError::OutOfRes.code();
        }
        let f = MboxFlags::from_bits_retain(flags);
        let mut cind = if req == -1 { direct_index(flags) } else { req };
        let list = self.classes.entry(class.to_string()).or_default();
        let mut pos = list.iter().position(|e| e.index >= cind).unwrap_or(list.len());
        if pos < list.len() && list[pos].index == cind {
            if f.contains(MboxFlags::MULTI_INSTANCE) {
                if req != -1 {
                    return PvmError::Denied.code();
                }
                while pos < list.len() && list[pos].index == cind {
                    cind += 1;
                    pos += 1;
                }
            } else {
                let e = &list[pos];
                if !MboxFlags::from_bits_retain(e.flags).contains(MboxFlags::OVERWRITABLE) && tid != e.owner {
                    return PvmError::Denied.code();
                }
                let old = list.remove(pos);
                self.bytes -= old.msg.len();
                refund(&mut self.owners, old.owner, cost(class, &old.msg));
            }
        }
        self.bytes += msg.len();
        let e = self.owners.entry(tid).or_default();
        e.0 += 1;
        e.1 += cost(class, &msg);
        list.insert(
            pos,
            Entry {
                index: cind,
                owner: tid,
                flags,
                msg,
            },
        );
        cind
    }

    /// GET: the index found and the stored message, or an error code.
    pub fn lookup(&mut self, tid: i32, class: &str, req: i32, flags: i32) -> Result<(i32, Vec<u8>), i32> {
        let f = MboxFlags::from_bits_retain(flags);
        let list = self.classes.get_mut(class).ok_or(PvmError::NotFound.code())?;
        let pos = list
            .iter()
            .position(|e| e.index >= req)
            .ok_or(PvmError::NotFound.code())?;
        if !f.contains(MboxFlags::FIRST_AVAIL) && list[pos].index != req {
            return Err(PvmError::NotFound.code());
        }
        let e = &list[pos];
        let found = (e.index, e.msg.clone());
        if f.contains(MboxFlags::READ_AND_DELETE) {
            if !MboxFlags::from_bits_retain(e.flags).contains(MboxFlags::OVERWRITABLE) && tid != e.owner {
                return Err(PvmError::Denied.code());
            }
            self.remove_at(class, pos);
        }
        Ok(found)
    }

    fn remove_at(&mut self, class: &str, pos: usize) {
        if let Some(list) = self.classes.get_mut(class) {
            let e = list.remove(pos);
            self.bytes -= e.msg.len();
            refund(&mut self.owners, e.owner, cost(class, &e.msg));
            if list.is_empty() {
                self.classes.remove(class);
            }
        }
    }

    /// REMOVE: the index removed, or an error code.
    pub fn delete(&mut self, tid: i32, class: &str, req: i32) -> i32 {
        let Some(list) = self.classes.get(class) else {
            return PvmError::NotFound.code();
        };
        let Some(pos) = list.iter().position(|e| e.index == req) else {
            return PvmError::NotFound.code();
        };
        let e = &list[pos];
        if !MboxFlags::from_bits_retain(e.flags).contains(MboxFlags::OVERWRITABLE) && tid != e.owner {
            return PvmError::Denied.code();
        }
        self.remove_at(class, pos);
        req
    }

    /// NAMES body after the status: count, then per class its name and `{index, owner, flags}`.
    /// The pattern is matched like the legacy's glob: `*` matches everything, otherwise exact or
    /// shell-style `*`/`?` wildcards.
    pub fn names(&self, pattern: &str) -> Vec<crate::wire::ClassInfo> {
        self.classes
            .iter()
            .filter(|(name, _)| glob(pattern.as_bytes(), name.as_bytes()))
            .map(|(name, l)| (name.clone(), l.iter().map(|e| (e.index, e.owner, e.flags)).collect()))
            .collect()
    }

    /// TMDB_RESET (the console's `reset`): in `class` (all classes if empty) and at `index` (all
    /// if negative), persistent entries whose owner is gone are removed; with `kill` set, the
    /// live owners of persistent entries that are not in `keep` are remembered so those entries
    /// are removed, not orphaned, when the owner exits. Other entries are left alone (they go
    /// with their owners anyway). Returns the owners doomed by this call.
    pub fn reset(&mut self, class: &str, index: i32, kill: bool, keep: &[i32]) -> Vec<i32> {
        let mut freed = 0;
        let mut newly = Vec::new();
        let doomed = &mut self.doomed;
        for (name, list) in self.classes.iter_mut() {
            if !class.is_empty() && name != class {
                continue;
            }
            list.retain(|e| {
                let hit = index < 0 || e.index == index;
                if !hit || !MboxFlags::from_bits_retain(e.flags).contains(MboxFlags::PERSISTENT) {
                    return true;
                }
                if e.owner == 0 {
                    freed += e.msg.len();
                    return false;
                }
                if kill && !keep.contains(&e.owner) && doomed.len() < 4096 && doomed.insert(e.owner) {
                    newly.push(e.owner);
                }
                true
            });
        }
        self.bytes -= freed;
        self.classes.retain(|_, l| !l.is_empty());
        newly
    }

    /// A task exited: drop its entries, keep its persistent ones without an owner (unless a
    /// RESET doomed them).
    pub fn tidy(&mut self, tid: i32) {
        if tid == 0 {
            return;
        }
        let doomed = self.doomed.remove(&tid);
        let mut freed = 0;
        // hardening: the task's quota goes; persistent entries it leaves are charged to owner 0.
        let mut kept = (0, 0);
        for (class, list) in self.classes.iter_mut() {
            list.retain_mut(|e| {
                if e.owner != tid {
                    return true;
                }
                if !doomed && MboxFlags::from_bits_retain(e.flags).contains(MboxFlags::PERSISTENT) {
                    e.owner = 0;
                    kept.0 += 1;
                    kept.1 += cost(class, &e.msg);
                    true
                } else {
                    freed += e.msg.len();
                    false
                }
            });
        }
        self.bytes -= freed;
        self.classes.retain(|_, l| !l.is_empty());
        self.owners.remove(&tid);
        if kept.0 > 0 {
            let z = self.owners.entry(0).or_default();
            z.0 += kept.0;
            z.1 += kept.1;
        }
    }

    /// Entries and bytes `tid` owns (for tests and logs).
    pub fn usage(&self, tid: i32) -> (usize, usize) {
        self.owners.get(&tid).copied().unwrap_or_default()
    }
}

fn refund(owners: &mut std::collections::HashMap<i32, (usize, usize)>, owner: i32, c: usize) {
    if let Some(e) = owners.get_mut(&owner) {
        e.0 = e.0.saturating_sub(1);
        e.1 = e.1.saturating_sub(c);
        if e.0 == 0 {
            owners.remove(&owner);
        }
    }
}

/// The legacy daemon's class-name match (its `pvmmatchstring`): an unanchored search, so `svc`
/// finds `svcA` and `lmbi` finds `t40001lmbi0`; a `*` after at least one matched character
/// restarts the search for the rest of the pattern in the rest of the name; leading `*`s are
/// ignored, an empty pattern matches everything and `\*` is a literal star. `.` is not special
/// (the legacy's regex variant is compiled out). A step budget keeps hostile patterns with many
/// stars from taking exponential time or deep recursion.
fn glob(p: &[u8], s: &[u8]) -> bool {
    let mut budget: u32 = 1 << 20;
    find(s, p, &mut budget, 0)
}

fn find(s: &[u8], p: &[u8], budget: &mut u32, depth: u32) -> bool {
    let start = p.iter().position(|&c| c != b'*').unwrap_or(p.len());
    let p = &p[start..];
    if p.is_empty() {
        return true;
    }
    if depth > 64 {
        return false;
    }
    for i in 0..s.len() {
        if s[i] != p[0] {
            continue;
        }
        let (mut x, mut y) = (i, 0);
        while x < s.len() && y < p.len() && s[x] == p[y] {
            if *budget == 0 {
                return false;
            }
            *budget -= 1;
            x += 1;
            y += 1;
            if y < p.len() && p[y] == b'*' {
                if find(&s[x..], &p[y + 1..], budget, depth + 1) {
                    return true;
                }
                break;
            } else if y + 1 < p.len() && p[y] == b'\\' && p[y + 1] == b'*' {
                y += 1;
            }
        }
        if y == p.len() {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// hardening: one task hits its own quota; another task can still store.
    #[test]
    fn per_task_quota_is_per_task() {
        let mut m = Mailbox::default();
        let msg = || vec![0u8; 40];
        for i in 0..crate::limits::MBOX_ENTRIES_PER_TASK as i32 {
            assert_eq!(m.insert(ME, "c", i, 0, msg()), i);
        }
        assert_eq!(m.insert(ME, "c", -1, 0, msg()), PvmError::OutOfRes.code());
        assert_eq!(m.insert(OTHER, "d", 0, 0, msg()), 0, "another task is unaffected");
        assert_eq!(m.delete(ME, "c", 0), 0);
        assert_eq!(m.insert(ME, "c", 0, 0, msg()), 0, "freed entries can be reused");
        let big = vec![0u8; crate::limits::MBOX_BYTES_PER_TASK];
        assert_eq!(m.insert(OTHER, "e", 0, 0, big), PvmError::OutOfRes.code());
        m.tidy(ME);
        assert_eq!(m.usage(ME), (0, 0));
        assert_eq!(m.usage(OTHER), (1, 41));
        assert_eq!(
            m.lookup(OTHER, "d", 0, MboxFlags::READ_AND_DELETE.bits()).map(|r| r.0),
            Ok(0)
        );
        assert_eq!(m.usage(OTHER), (0, 0));
    }

    const ME: i32 = 0x4000b;
    const OTHER: i32 = 0x4000c;

    fn msg(v: u32) -> Vec<u8> {
        let mut b = Vec::new();
        for x in [4u32, 0, 0, 0, 0x1000_0000, 0, ME as u32, 0, 4, v] {
            b.extend_from_slice(&x.to_be_bytes());
        }
        b
    }

    #[test]
    fn embedded_message_from_capture() {
        let b = msg(12345);
        assert_eq!(embedded_len(&b).unwrap(), 40);
        assert!(embedded_len(&b[..36]).is_err());
        let mut bad = b.clone();
        bad[3] = 8; // claims 8 bytes, carries 4
        assert!(embedded_len(&bad).is_err());
    }

    #[test]
    fn put_get_remove_like_the_capture() {
        let mut m = Mailbox::default();
        assert_eq!(m.lookup(ME, "###_PVM_TRACER_###", 0, 0), Err(-32));
        assert_eq!(m.insert(ME, "specbox", -1, 0, msg(12345)), 0);
        assert_eq!(m.lookup(ME, "specbox", 0, 0), Ok((0, msg(12345))));
        assert_eq!(m.delete(ME, "specbox", 0), 0);
        assert_eq!(m.lookup(ME, "specbox", 0, 0), Err(-32));
        assert_eq!(m.bytes, 0);
    }

    #[test]
    fn locking_overwrite_and_multi_instance() {
        let mut m = Mailbox::default();
        assert_eq!(m.insert(ME, "c", -1, 0, msg(1)), 0);
        assert_eq!(m.insert(OTHER, "c", -1, 0, msg(2)), -8, "locked by default");
        assert_eq!(m.insert(ME, "c", -1, 0, msg(3)), 0, "owner may replace");
        assert_eq!(m.lookup(OTHER, "c", 0, 0), Ok((0, msg(3))));
        assert_eq!(
            m.insert(OTHER, "c", -1, 2, msg(4)),
            1,
            "multi-instance takes the next index"
        );
        assert_eq!(m.insert(OTHER, "c", -1, 2, msg(5)), 2);
        assert_eq!(m.insert(OTHER, "c", 1, 2, msg(6)), -8);
        assert_eq!(m.lookup(ME, "c", 1, 8), Ok((1, msg(4))));
        assert_eq!(m.lookup(ME, "c", 3, 8), Err(-32));
        assert_eq!(m.delete(ME, "c", 1), -8);
        assert_eq!(m.lookup(OTHER, "c", 1, 16), Ok((1, msg(4))), "read and delete");
        assert_eq!(m.lookup(OTHER, "c", 1, 0), Err(-32));
        assert_eq!(m.insert(ME, "o", -1, 4, msg(7)), 0);
        assert_eq!(m.insert(OTHER, "o", -1, 0, msg(8)), 0, "overwritable");
    }

    #[test]
    fn tidy_keeps_persistent_entries() {
        let mut m = Mailbox::default();
        m.insert(ME, "gone", -1, 0, msg(1));
        m.insert(ME, "kept", -1, 1, msg(2));
        m.tidy(ME);
        let names = m.names("*");
        assert_eq!(names, vec![("kept".to_string(), vec![(0, 0, 1)])]);
        assert_eq!(m.bytes, msg(2).len());
        assert_eq!(m.names("ke?t").len(), 0, "? is literal in the legacy match");
        assert_eq!(m.names("x*").len(), 0);
    }

    #[test]
    fn reset_drops_orphaned_persistent_entries_and_dooms_live_owners() {
        let mut m = Mailbox::default();
        m.insert(ME, "p", -1, 1, msg(1));
        m.insert(OTHER, "q", -1, 1, msg(2));
        m.insert(OTHER, "plain", -1, 0, msg(3));
        m.tidy(ME); // "p" is now persistent without an owner
        m.reset("", -1, true, &[]);
        let names: Vec<String> = m.names("").into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["plain", "q"]);
        m.tidy(OTHER);
        assert!(m.names("").is_empty(), "doomed owner's persistent entry went with it");
        assert_eq!(m.bytes, 0);
        // Kept owners and a class filter.
        m.insert(ME, "a", -1, 1, msg(4));
        m.reset("", -1, true, &[ME]);
        m.tidy(ME);
        assert_eq!(m.names("").len(), 1);
        m.reset("other", -1, false, &[]);
        assert_eq!(m.names("").len(), 1);
        m.reset("a", -1, false, &[]);
        assert!(m.names("").is_empty());
    }

    #[test]
    fn class_names_match_like_the_legacy_search() {
        // Cases observed with the Debian 3.4.6 daemon (gmbi of the pvm-examples).
        assert!(glob(b"svc", b"svcA"));
        assert!(glob(b"lmbi", b"t40001lmbi0"));
        assert!(!glob(b".", b"t40001lmbi0"));
        assert!(glob(b"", b"anything"));
        assert!(glob(b"***", b"x"));
        assert!(glob(b"t4*lmbi", b"t40001lmbi0"));
        assert!(!glob(b"t4*lmbx", b"t40001lmbi0"));
        assert!(glob(b"a\\*b", b"xa*b"));
        assert!(!glob(b"a\\*b", b"xab"));
        assert!(!glob(b"abc", b"ab"));
        // Many stars against a long name end within the step budget.
        let p = "a*".repeat(200) + "b";
        let t = std::time::Instant::now();
        assert!(!glob(p.as_bytes(), "a".repeat(150).as_bytes()));
        assert!(t.elapsed() < std::time::Duration::from_secs(5));
    }
}
