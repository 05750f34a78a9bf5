//! 16-bit sequence numbers and the legacy half-range comparison.
//!
//! Both counters of a link start at 1 and step by one modulo 65536, so 0 is an ordinary value
//! after the first wrap. "a before b" is decided as the C macro `SEQLESSTHAN` does: a plain
//! comparison when the two are less than half the range apart, the reverse when they are further
//! apart. That stays correct as long as fewer than 32768 packets are in flight, which
//! [`MAX_WINDOW`](super::consts::MAX_WINDOW) guarantees.

/// First sequence number of a new link, in both directions (`hd_new()`).
pub const FIRST_SEQ: u16 = 1;

/// The successor of `s` (`NEXTSEQNUM`).
pub const fn next(s: u16) -> u16 {
    s.wrapping_add(1)
}

/// True when `a` comes before `b` in the legacy sense (`SEQLESSTHAN`).
pub const fn less_than(a: u16, b: u16) -> bool {
    (a < b && b - a < 32768) || (a > b && a - b >= 32768)
}

/// How far `s` lies ahead of `base` (0 when equal), modulo 65536.
pub const fn distance(base: u16, s: u16) -> u16 {
    s.wrapping_sub(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_comparison() {
        assert!(less_than(1, 2));
        assert!(!less_than(2, 1));
        assert!(!less_than(5, 5));
        // Across the wrap: 65535 comes before 0 and 3.
        assert!(less_than(65535, 0));
        assert!(less_than(65530, 3));
        assert!(!less_than(3, 65530));
        // Exactly half the range apart: the larger value counts as earlier (C macro behaviour).
        assert!(less_than(40000, 7232));
        assert!(!less_than(7232, 40000));
        assert_eq!(next(65535), 0);
        assert_eq!(next(0), 1);
        assert_eq!(distance(65534, 1), 3);
    }

    #[test]
    fn comparison_agrees_with_distance_within_half_range() {
        for base in [0u16, 1, 100, 32767, 32768, 65000, 65535] {
            for d in [1u16, 2, 1000, 32767] {
                let s = base.wrapping_add(d);
                assert!(less_than(base, s), "{base} < {s}");
                assert!(!less_than(s, base), "!({s} < {base})");
                assert_eq!(distance(base, s), d);
            }
        }
    }
}
