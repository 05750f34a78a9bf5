//! Reader for the hex vector format of `pvm-proto/tests/vectors/*.hex` (see its README.md).
//!
//! TODO(merge): replace with `pvm_proto::hexvec` once that module lands; this private copy only
//! exists so that pvmdump can be built and tested before it does.

/// One `##` frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The text after `## `.
    pub label: &'a str,
    /// Byte offset of the `##` line in the file.
    pub offset: usize,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HexError {
    /// 1-based line number.
    pub line: usize,
    pub what: String,
}

/// Parses the whole file; frames with bad lines are reported and dropped, the rest are kept.
pub fn parse(text: &str) -> (Vec<Frame<'_>>, Vec<HexError>) {
    let mut frames: Vec<Frame<'_>> = Vec::new();
    let mut errors = Vec::new();
    let mut current: Open<'_> = None;
    let mut offset = 0;
    for (i, raw) in text.split_inclusive('\n').enumerate() {
        let line = raw.trim_end_matches(['\n', '\r']);
        let lineno = i + 1;
        let start = offset;
        offset += raw.len();
        if let Some(label) = line.strip_prefix("##") {
            finish(current.take(), &mut frames, &mut errors, lineno);
            let label = label.trim();
            current = Some((
                Frame {
                    label,
                    offset: start,
                    bytes: Vec::new(),
                },
                declared_len(label),
                false,
            ));
        } else if line.starts_with('#') || line.trim().is_empty() {
            continue;
        } else if let Some((frame, _, bad)) = current.as_mut() {
            let digits = line.trim();
            if digits.len() % 2 != 0 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
                errors.push(HexError {
                    line: lineno,
                    what: "not an even number of hex digits".to_string(),
                });
                *bad = true;
                continue;
            }
            frame.bytes.extend(
                digits
                    .as_bytes()
                    .chunks(2)
                    .map(|p| (hex_digit(p[0]) << 4) | hex_digit(p[1])),
            );
        } else {
            errors.push(HexError {
                line: lineno,
                what: "hex data before the first `##` line".to_string(),
            });
        }
    }
    finish(current.take(), &mut frames, &mut errors, text.lines().count());
    (frames, errors)
}

type Open<'a> = Option<(Frame<'a>, Option<usize>, bool)>;

fn finish<'a>(cur: Open<'a>, frames: &mut Vec<Frame<'a>>, errors: &mut Vec<HexError>, line: usize) {
    let Some((f, declared, bad)) = cur else { return };
    if bad {
        return;
    }
    match declared {
        Some(n) if n != f.bytes.len() => errors.push(HexError {
            line,
            what: format!("frame `{}` declares {n} bytes but has {}", f.label, f.bytes.len()),
        }),
        _ => frames.push(f),
    }
}

fn hex_digit(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        b'A'..=b'F' => b - b'A' + 10,
        _ => 0,
    }
}

/// The `(<n> bytes...)` count at the end of a label, if there is one.
fn declared_len(label: &str) -> Option<usize> {
    let open = label.rfind('(')?;
    let inner = &label[open + 1..];
    let n: String = inner.chars().take_while(|c| c.is_ascii_digit()).collect();
    if inner[n.len()..].starts_with(" bytes") {
        n.parse().ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_counts() {
        let t = "# d\n## a (2 bytes)\n0a0B\n## b (3 bytes)\n0102\n## c\nzz\n";
        let (f, e) = parse(t);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].bytes, vec![10, 11]);
        assert_eq!(f[0].label, "a (2 bytes)");
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!(e[1].line, 7);
    }
}
