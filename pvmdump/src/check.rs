//! `--check`: compare captured bytes with their re-encoding.

use std::ops::Range;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diff {
    /// Byte offset within the compared unit.
    pub offset: usize,
    /// `None` when that side is shorter.
    pub captured: Option<u8>,
    pub reencoded: Option<u8>,
}

/// Every offset where the two differ, outside `masked`.
pub fn compare(captured: &[u8], reencoded: &[u8], masked: &[Range<usize>]) -> Vec<Diff> {
    (0..captured.len().max(reencoded.len()))
        .filter(|i| !masked.iter().any(|m| m.contains(i)))
        .filter_map(|i| {
            let (c, r) = (captured.get(i).copied(), reencoded.get(i).copied());
            (c != r).then_some(Diff {
                offset: i,
                captured: c,
                reencoded: r,
            })
        })
        .collect()
}

fn show(b: Option<u8>) -> String {
    b.map_or("(none)".to_string(), |b| format!("{b:02x}"))
}

impl std::fmt::Display for Diff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "byte {}: captured {}, re-encoded {}",
            self.offset,
            show(self.captured),
            show(self.reencoded)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_and_lengths() {
        let d = compare(&[1, 2, 3, 4], &[1, 9, 3], &[2..3, 9..9]);
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].to_string(), "byte 1: captured 02, re-encoded 09");
        assert_eq!(d[1].to_string(), "byte 3: captured 04, re-encoded (none)");
        assert!(compare(&[1, 2], &[1, 3], &[0..0, 1..2]).is_empty());
    }
}
