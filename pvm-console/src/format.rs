//! Output formats of the legacy console, and the small parsers it uses.

/// Parses a task id the way the legacy console does: hexadecimal, with an optional `t` prefix.
pub fn parse_tid(s: &str) -> Option<i32> {
    let h = s.strip_prefix('t').unwrap_or(s);
    u32::from_str_radix(h, 16).ok().map(|v| v as i32)
}

/// Parses a C-style integer (decimal, `0x` hex, leading `0` octal), as `atoi`/`strtol(…, 0)` would.
pub fn parse_int(s: &str) -> Option<i32> {
    let (neg, b) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let v = if let Some(h) = b.strip_prefix("0x").or_else(|| b.strip_prefix("0X")) {
        i64::from_str_radix(h, 16).ok()?
    } else if b.len() > 1 && b.starts_with('0') {
        i64::from_str_radix(&b[1..], 8).ok()?
    } else {
        b.parse::<i64>().ok()?
    };
    Some(if neg { -v } else { v } as i32)
}

/// Splits a command line into words; double quotes group words (no escapes, like the legacy).
pub fn split_words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut inq = false;
    let mut have = false;
    for c in line.chars() {
        match c {
            '"' => {
                inq = !inq;
                have = true;
            }
            c if c.is_whitespace() && !inq => {
                if have {
                    out.push(std::mem::take(&mut cur));
                    have = false;
                }
            }
            c => {
                cur.push(c);
                have = true;
            }
        }
    }
    if have {
        out.push(cur);
    }
    out
}

/// Task flag letters shown after the hex flag value by `ps`.
pub fn task_flag_letters(flag: i32) -> String {
    let mut s = String::new();
    for (bit, c) in [
        (2, 'f'),
        (4, 'c'),
        (8, 'a'),
        (0x10, 'o'),
        (0x40, 's'),
        (0x400, 'H'),
        (0x800, 'R'),
        (0x1000, 'T'),
    ] {
        if flag & bit != 0 {
            s.push(c);
        }
    }
    s
}

pub fn conf_header() -> String {
    format!(
        "{:>24} {:>8} {:>8} {:>7} {:>10}",
        "HOST", "DTID", "ARCH", "SPEED", "DSIG"
    )
}

pub fn conf_row(name: &str, tid: i32, arch: &str, speed: i32, dsig: i32) -> String {
    format!("{name:>24} {tid:>8x} {arch:>8} {speed:>7} 0x{dsig:08x}")
}

pub fn ps_header(long: bool) -> String {
    if long {
        format!(
            "{:>24} {:>8} {:>8} {:>6} {:>6} 0x COMMAND",
            "HOST", "TID", "PTID", "PID", "FLAG"
        )
    } else {
        format!("{:>24} {:>8} {:>6} 0x COMMAND", "HOST", "TID", "FLAG")
    }
}

/// One `ps` row; `tid` is already formatted (hex, or `(cons)` for the console itself).
pub fn ps_row(host: &str, tid: &str, ptid: i32, pid: i32, flag: i32, cmd: &str, long: bool) -> String {
    let cmd = if cmd.is_empty() { "-" } else { cmd };
    let fl = format!("{flag:>7x}/{}", task_flag_letters(flag));
    if long {
        format!("{host:>24} {tid:>8} {ptid:>8x} {pid:>6} {fl} {cmd:<12}")
    } else {
        format!("{host:>24} {tid:>8} {fl} {cmd:<12}")
    }
}

/// The `trace` listing: names in four columns filled top to bottom, `*` marking enabled events.
pub fn trace_table(entries: &[(String, bool)]) -> Vec<String> {
    let rows = entries.len().div_ceil(4);
    let mut out = Vec::new();
    for r in 0..rows {
        let cells: Vec<String> = (0..4)
            .filter_map(|c| entries.get(c * rows + r))
            .map(|(name, on)| format!(" {} {:<15}", if *on { '*' } else { ' ' }, name))
            .collect();
        out.push(cells.join(" "));
    }
    out
}

/// Whether event `k` is set in a legacy trace mask string (`@`-based nibbles, 4 events each).
pub fn tmask_check(mask: &[u8], k: usize) -> bool {
    mask.get(k / 4)
        .is_some_and(|b| (b.wrapping_sub(b'@')) & (1 << (k & 3)) != 0)
}

/// Sets or clears event `k` in a trace mask string, growing it with `@` if needed.
pub fn tmask_set(mask: &mut Vec<u8>, k: usize, on: bool) {
    while mask.len() <= k / 4 {
        mask.push(b'@');
    }
    let v = mask[k / 4].wrapping_sub(b'@') & 0xf;
    let v = if on { v | (1 << (k & 3)) } else { v & !(1 << (k & 3)) };
    mask[k / 4] = b'@' + v;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_match_legacy_captures() {
        assert_eq!(
            conf_header(),
            "                    HOST     DTID     ARCH   SPEED       DSIG"
        );
        assert_eq!(
            conf_row("vm", 0x40000, "LINUX64", 1000, 0x00408c41),
            "                      vm    40000  LINUX64    1000 0x00408c41"
        );
        assert_eq!(ps_header(false), "                    HOST      TID   FLAG 0x COMMAND");
        assert_eq!(
            ps_header(true),
            "                    HOST      TID     PTID    PID   FLAG 0x COMMAND"
        );
        assert_eq!(
            ps_row("vm", "40006", 0, 0, 2, "/bin/sleep", false),
            "                      vm    40006       2/f /bin/sleep  "
        );
        assert_eq!(
            ps_row("vm", "40006", -35, 19465, 2, "/bin/sleep", true),
            "                      vm    40006 ffffffdd  19465       2/f /bin/sleep  "
        );
        assert_eq!(
            ps_row("vm", "(cons)", 0, 0, 4, "", false),
            "                      vm   (cons)       4/c -           "
        );
    }

    #[test]
    fn parsers() {
        assert_eq!(parse_tid("t40002"), Some(0x40002));
        assert_eq!(parse_tid("40002"), Some(0x40002));
        assert_eq!(parse_tid("zz"), None);
        assert_eq!(parse_int("0x10"), Some(16));
        assert_eq!(parse_int("010"), Some(8));
        assert_eq!(parse_int("-3"), Some(-3));
        assert_eq!(split_words(r#"a  "b c" d"#), vec!["a", "b c", "d"]);
    }

    #[test]
    fn masks_and_table() {
        let mut m = b"@@@@".to_vec();
        tmask_set(&mut m, 5, true);
        assert!(tmask_check(&m, 5));
        assert!(!tmask_check(&m, 4));
        tmask_set(&mut m, 5, false);
        assert_eq!(m, b"@@@@");
        let e: Vec<(String, bool)> = (0..8).map(|i| (format!("e{i}"), i == 1)).collect();
        let t = trace_table(&e);
        assert_eq!(t.len(), 2);
        assert_eq!(
            t[1],
            format!(" * {:<15}    {:<15}    {:<15}    {:<15}", "e1", "e3", "e5", "e7")
        );
    }
}
