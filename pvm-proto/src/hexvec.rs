//! The text format of the captured byte vectors (`tests/vectors/*.hex`), also accepted by tools
//! as a convenient way to feed bytes by hand.
//!
//! ```text
//! # free-text description (any number of lines starting with a single '#')
//! ## label of the frame (n bytes)
//! 0011aabb ccdd...        hex digits; whitespace anywhere, either case
//! ```
//!
//! The `(n bytes)` suffix is optional; when present the byte count must match, which catches a
//! truncated paste. Blank lines are ignored. Hex that appears before any `##` line forms an
//! unlabelled frame, so a bare hex dump is also valid input.

use std::fmt;
use thiserror::Error;

/// One frame of a vector file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The text after `##`, trimmed, without the `(n bytes)` suffix.
    pub label: String,
    /// 1-based line number of the `##` line (or of the first hex line for an unlabelled frame).
    pub line: usize,
    pub bytes: Vec<u8>,
}

/// A parsed vector file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VectorFile {
    /// The `#` description lines, joined with newlines.
    pub description: String,
    pub frames: Vec<Frame>,
}

/// Why a vector file did not parse; `line` is 1-based.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HexError {
    #[error("line {line}: invalid hex digit {found:?} at column {column}")]
    BadDigit { line: usize, column: usize, found: char },
    #[error("line {line}: odd number of hex digits in frame {label:?}")]
    OddDigits { line: usize, label: String },
    #[error("line {line}: frame {label:?} declares {declared} bytes but has {actual}")]
    LengthMismatch {
        line: usize,
        label: String,
        declared: usize,
        actual: usize,
    },
}

impl fmt::Display for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({} bytes)", self.label, self.bytes.len())
    }
}

/// Splits `label (123 bytes)` (also `(123 bytes UDP payload)`) into the label and the count.
fn split_count(label: &str) -> (String, Option<usize>) {
    let t = label.trim_end();
    if let (Some(open), true) = (t.rfind('('), t.ends_with(')')) {
        let inner = &t[open + 1..t.len() - 1];
        let mut words = inner.split_whitespace();
        if let (Some(num), Some(unit)) = (words.next(), words.next()) {
            if let (Ok(n), true) = (num.parse::<usize>(), unit == "bytes" || unit == "byte") {
                return (t[..open].trim().to_string(), Some(n));
            }
        }
    }
    (t.trim().to_string(), None)
}

struct Pending {
    label: String,
    line: usize,
    declared: Option<usize>,
    bytes: Vec<u8>,
    /// A high nibble waiting for its partner (digits may be split by whitespace).
    half: Option<u8>,
}

impl Pending {
    fn finish(self, frames: &mut Vec<Frame>) -> Result<(), HexError> {
        if self.half.is_some() {
            return Err(HexError::OddDigits {
                line: self.line,
                label: self.label,
            });
        }
        if let Some(d) = self.declared {
            if d != self.bytes.len() {
                return Err(HexError::LengthMismatch {
                    line: self.line,
                    label: self.label,
                    declared: d,
                    actual: self.bytes.len(),
                });
            }
        }
        frames.push(Frame {
            label: self.label,
            line: self.line,
            bytes: self.bytes,
        });
        Ok(())
    }
}

/// Parses a whole vector file. Memory use is bounded by the input size.
pub fn parse(text: &str) -> Result<VectorFile, HexError> {
    let mut out = VectorFile::default();
    let mut cur: Option<Pending> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let l = raw.trim();
        if let Some(label) = l.strip_prefix("##") {
            if let Some(p) = cur.take() {
                p.finish(&mut out.frames)?;
            }
            let (label, declared) = split_count(label);
            cur = Some(Pending {
                label,
                line,
                declared,
                bytes: Vec::new(),
                half: None,
            });
            continue;
        }
        if let Some(d) = l.strip_prefix('#') {
            if !out.description.is_empty() {
                out.description.push('\n');
            }
            out.description.push_str(d.trim());
            continue;
        }
        if l.is_empty() {
            continue;
        }
        let p = cur.get_or_insert_with(|| Pending {
            label: String::new(),
            line,
            declared: None,
            bytes: Vec::new(),
            half: None,
        });
        for (col, c) in raw.char_indices() {
            if c.is_whitespace() {
                continue;
            }
            let v = match c.to_digit(16) {
                Some(v) => v as u8,
                None => {
                    return Err(HexError::BadDigit {
                        line,
                        column: col + 1,
                        found: c,
                    })
                }
            };
            match p.half.take() {
                None => p.half = Some(v),
                Some(h) => p.bytes.push(h << 4 | v),
            }
        }
    }
    if let Some(p) = cur.take() {
        p.finish(&mut out.frames)?;
    }
    Ok(out)
}

/// All bytes of a text, frames concatenated: for tools that take a bare hex dump (comment lines
/// and `##` labels are allowed and ignored).
pub fn parse_bytes(text: &str) -> Result<Vec<u8>, HexError> {
    Ok(parse(text)?.frames.into_iter().flat_map(|f| f.bytes).collect())
}

/// Formats frames in the same format (lowercase, 32 bytes a line), so `parse(render(f)) == f`.
pub fn render(file: &VectorFile) -> String {
    let mut s = String::new();
    // `split`, not `lines`: a description ending in an empty comment line must survive.
    if !file.description.is_empty() {
        for d in file.description.split('\n') {
            s.push_str("# ");
            s.push_str(d);
            s.push('\n');
        }
    }
    for f in &file.frames {
        s.push_str(&format!("## {} ({} bytes)\n", f.label, f.bytes.len()));
        for chunk in f.bytes.chunks(32) {
            for b in chunk {
                s.push_str(&format!("{b:02x}"));
            }
            s.push('\n');
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn description_with_trailing_empty_comment_survives_render() {
        let f = parse("# first\n#   \n## frame (1 bytes)\nab\n").unwrap();
        assert_eq!(f.description, "first\n");
        assert_eq!(parse(&render(&f)).unwrap().description, f.description);
    }

    #[test]
    fn parses_labels_counts_and_loose_hex() {
        let t = "# first\n# second\n## a->b X (3 bytes UDP payload)\n0A b\n c 01\n\n## bare\nFF ee\n";
        let v = parse(t).unwrap();
        assert_eq!(v.description, "first\nsecond");
        assert_eq!(v.frames.len(), 2);
        assert_eq!(v.frames[0].label, "a->b X");
        assert_eq!(v.frames[0].line, 3);
        assert_eq!(v.frames[0].bytes, vec![0x0a, 0xbc, 0x01]);
        assert_eq!(v.frames[1].label, "bare");
        assert_eq!(v.frames[1].bytes, vec![0xff, 0xee]);
        assert_eq!(parse(&render(&v)).unwrap(), {
            let mut w = v.clone();
            w.frames[0].line = 3;
            w.frames[1].line = 5;
            w
        });
    }

    #[test]
    fn parse_bytes_joins_frames() {
        assert_eq!(parse_bytes("# x\n## a\n01 02\n## b\n0A\n").unwrap(), vec![1, 2, 10]);
        assert!(parse_bytes("zz").is_err());
    }

    #[test]
    fn bare_hex_dump_is_one_unlabelled_frame() {
        let v = parse("dead BEEF\n").unwrap();
        assert_eq!(v.frames.len(), 1);
        assert_eq!(v.frames[0].label, "");
        assert_eq!(v.frames[0].bytes, vec![0xde, 0xad, 0xbe, 0xef]);
    }

    #[test]
    fn errors_name_lines() {
        assert_eq!(
            parse("## x\n00\n0g\n").unwrap_err(),
            HexError::BadDigit {
                line: 3,
                column: 2,
                found: 'g'
            }
        );
        assert!(matches!(
            parse("## x (2 bytes)\n00\n").unwrap_err(),
            HexError::LengthMismatch {
                line: 1,
                declared: 2,
                actual: 1,
                ..
            }
        ));
        assert!(matches!(
            parse("## y\n0\n").unwrap_err(),
            HexError::OddDigits { line: 1, .. }
        ));
    }
}
