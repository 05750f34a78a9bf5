//! Coalescing relayed fragments: consecutive fragments of one message, read together from the
//! source task and relayed together to one destination, are written to it as ONE fragment.
//!
//! Why: the legacy library writes a message in fragments of at most 4080 bytes, and the task
//! that receives it pays per fragment (a `select` and two `read` calls in `mxinput`, an
//! allocation, a list insertion), whatever the daemon does. A fragment of the task <-> daemon
//! stream may have any length, and the legacy library reads a long one as it reads a
//! `PvmDataInPlace` body (one allocation of the whole length, then `read` until it is full), so
//! a 1 MB message relayed in pieces of 64 fragments costs the receiver 16 fragments instead of
//! 256. Our own library reads fragments of any length too (docs/extensions.md, feature bit 7).
//!
//! The rule ([`plan`]): a coalesced fragment is a run of consecutive fragments in which every
//! fragment but the first lacks SOM and every fragment but the last lacks EOM (so it never
//! spans two messages), of at most [`MAX_RUN`] fragments and [`MAX_LEN`] bytes. Its header is
//! the first one's with `len` = the sum of the lengths, SOM as the first fragment had it and
//! EOM as the last had it; the other fragments' headers are left out and their payloads follow
//! unchanged (written with `writev` from where they were read: no copy). The caller passes
//! only fragments of one source for one destination, so nothing is coalesced across
//! destinations either; fragments that cross to other hosts never come here.

use std::ops::Range;

use pvm_proto::frag::FragFlags;

/// Most fragments coalesced into one (a bound on the `writev` slices per coalesced fragment;
/// the kernel takes at most 1024 per call).
pub const MAX_RUN: usize = 256;

/// Most payload bytes of a coalesced fragment. The legacy library allocates a fragment's whole
/// length at once; this keeps that at what a single `PvmDataInPlace` body of a few MB costs.
pub const MAX_LEN: u32 = 4 << 20;

/// One fragment to write: the fragments `frags` of the input, as one fragment of `len` payload
/// bytes with flags `flags` (SOM and EOM only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub frags: Range<usize>,
    pub len: u32,
    pub flags: FragFlags,
}

/// Groups `frags` (flags and payload length of each, in stream order, all from one source to
/// one destination) into coalesced fragments; see the module doc for the rule. Every input
/// fragment is in exactly one group, in order.
pub fn plan(frags: &[(FragFlags, u32)], max_run: usize, max_len: u32) -> Vec<Group> {
    let max_run = max_run.max(1);
    let mut out = Vec::new();
    let mut i = 0;
    while i < frags.len() {
        let (first, mut len) = frags[i];
        let mut j = i + 1;
        while j < frags.len()
            && j - i < max_run
            && !frags[j - 1].0.contains(FragFlags::EOM)
            && !frags[j].0.contains(FragFlags::SOM)
            && len.checked_add(frags[j].1).is_some_and(|l| l <= max_len)
        {
            len += frags[j].1;
            j += 1;
        }
        let last = frags[j - 1].0;
        out.push(Group {
            frags: i..j,
            len,
            flags: (first & FragFlags::SOM) | (last & FragFlags::EOM),
        });
        i = j;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: FragFlags = FragFlags::SOM;
    const E: FragFlags = FragFlags::EOM;
    const N: FragFlags = FragFlags::empty();

    fn ranges(g: &[Group]) -> Vec<(Range<usize>, u32, FragFlags)> {
        g.iter().map(|g| (g.frags.clone(), g.len, g.flags)).collect()
    }

    #[test]
    fn one_message_becomes_one_fragment() {
        let f = [(S, 4080), (N, 4080), (N, 4080), (E, 100)];
        assert_eq!(ranges(&plan(&f, MAX_RUN, MAX_LEN)), [(0..4, 12340, S | E)]);
    }

    #[test]
    fn never_across_two_messages() {
        // The end of one message, a whole one, the start of a third.
        let f = [(N, 10), (E, 5), (S | E, 7), (S, 4080), (N, 4080)];
        assert_eq!(
            ranges(&plan(&f, MAX_RUN, MAX_LEN)),
            [(0..2, 15, E), (2..3, 7, S | E), (3..5, 8160, S)]
        );
        // An EOM without a following SOM still ends the run (a stream the library would log as
        // a fragment without a message stays as it was).
        let f = [(S | E, 1), (N, 2), (E, 3)];
        assert_eq!(ranges(&plan(&f, MAX_RUN, MAX_LEN)), [(0..1, 1, S | E), (1..3, 5, E)]);
        // A SOM in the middle of a message starts a new one (as the library reads it).
        let f = [(S, 1), (N, 2), (S, 3), (E, 4)];
        assert_eq!(ranges(&plan(&f, MAX_RUN, MAX_LEN)), [(0..2, 3, S), (2..4, 7, S | E)]);
    }

    #[test]
    fn bounded_count_and_length() {
        let mut f = vec![(S, 100)];
        f.extend(std::iter::repeat((N, 100)).take(9));
        let g = plan(&f, 4, MAX_LEN);
        assert_eq!(ranges(&g), [(0..4, 400, S), (4..8, 400, N), (8..10, 200, N)]);
        let g = plan(&f, MAX_RUN, 250);
        assert!(g.iter().all(|g| g.len <= 250 && g.frags.len() == 2), "{g:?}");
        assert_eq!(g.len(), 5);
        // A fragment longer than the bound alone is passed on as it is.
        let g = plan(&[(S, 1000), (E, 10)], MAX_RUN, 250);
        assert_eq!(ranges(&g), [(0..1, 1000, S), (1..2, 10, E)]);
        // No overflow of the 32-bit length.
        let g = plan(&[(S, u32::MAX - 1), (E, 10)], MAX_RUN, u32::MAX);
        assert_eq!(g.len(), 2);
        assert!(plan(&[], MAX_RUN, MAX_LEN).is_empty());
    }

    #[test]
    fn every_fragment_in_exactly_one_group_in_order() {
        // Pseudo-random flags and lengths.
        let mut x = 12345u32;
        let f: Vec<(FragFlags, u32)> = (0..1000)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (FragFlags::from_bits_truncate((x >> 8) as u8 & 3), (x >> 12) % 5000)
            })
            .collect();
        let g = plan(&f, 7, 9000);
        let mut next = 0;
        for gr in &g {
            assert_eq!(gr.frags.start, next);
            next = gr.frags.end;
            let sum: u32 = f[gr.frags.clone()].iter().map(|p| p.1).sum();
            assert_eq!(sum, gr.len);
            assert!(gr.frags.len() <= 7);
            let first = f[gr.frags.start].0;
            let last = f[gr.frags.end - 1].0;
            assert_eq!(gr.flags, (first & S) | (last & E));
            for k in gr.frags.start + 1..gr.frags.end {
                assert!(!f[k].0.contains(S) && !f[k - 1].0.contains(E));
            }
        }
        assert_eq!(next, f.len());
    }
}
