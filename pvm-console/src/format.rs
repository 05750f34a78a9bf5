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

/// One host as a scheduler publishes it in `pvm-sched.hosts` (docs/console.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedHost {
    pub owner: String,
    pub load: String,
    pub guests: String,
}

/// Reads the text of the `pvm-sched.hosts` entry: a first line `pvm-sched.hosts 1`, then one
/// line per host `DTID OWNER LOAD GUESTS` (DTID in hex, OWNER a word, LOAD a number, GUESTS
/// `-` or comma-separated tids); `#` lines, blank lines, extra fields and lines that do not
/// parse are skipped, so the format can grow. Keyed by pvmd tid. A text of another version
/// gives an empty map (the console then shows `-`).
pub fn parse_sched_hosts(text: &str) -> std::collections::BTreeMap<i32, SchedHost> {
    let mut m = std::collections::BTreeMap::new();
    let mut lines = text.lines();
    let head: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    if head.len() < 2 || head[0] != "pvm-sched.hosts" || head[1] != "1" {
        return m;
    }
    for l in lines.take(65_536) {
        let w: Vec<&str> = l.split_whitespace().collect();
        if w.len() < 4 || w[0].starts_with('#') {
            continue;
        }
        let Some(dtid) = parse_tid(w[0]) else { continue };
        if w[2].parse::<f64>().is_err() || w[1].len() > 16 {
            continue;
        }
        let clip = |s: &str, n: usize| s.chars().take(n).collect::<String>();
        m.insert(
            dtid,
            SchedHost {
                owner: clip(w[1], 16),
                load: clip(w[2], 8),
                guests: clip(w[3], 200),
            },
        );
    }
    m
}

/// The reason the pvmd logged for its last refusal concerning `tid` (`mig: ... t40002 ...
/// refused: WHY`, `... failed: WHY`, else the text after the last `: ` of such a line), looking only at what the log got after byte `from`
/// (its size before the request: an older refusal is not this one's reason).
pub fn refusal_from_log(log: &std::path::Path, tid: i32, from: u64) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(log).ok()?;
    let len = f.metadata().ok()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(65_536).max(from))).ok()?;
    let mut buf = Vec::new();
    f.take(65_536).read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    let me = format!("t{tid:x}");
    text.lines().rev().find_map(|l| {
        let (_, rest) = l.split_once(" mig: ")?;
        if !rest.split(|c: char| !c.is_ascii_alphanumeric()).any(|w| w == me) {
            return None;
        }
        rest.split_once("refused: ")
            .or_else(|| rest.split_once("failed: "))
            .or_else(|| rest.rsplit_once(": "))
            .map(|(_, why)| why.trim().to_string())
    })
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

    #[test]
    fn sched_hosts_entry() {
        let t = "pvm-sched.hosts 1\n# comment\n40000 idle 0.12 t40002,t40003\n80000 busy* 1.5 -\nbad line\nc0000 idle notanumber -\n";
        let m = parse_sched_hosts(t);
        assert_eq!(m.len(), 2);
        assert_eq!(m[&0x40000].owner, "idle");
        assert_eq!(m[&0x40000].guests, "t40002,t40003");
        assert_eq!(m[&0x80000].owner, "busy*");
        assert_eq!(m[&0x80000].load, "1.5");
        assert!(parse_sched_hosts("pvm-sched.hosts 2\n40000 idle 0 -\n").is_empty());
        assert!(parse_sched_hosts("").is_empty());
    }

    #[test]
    fn refusal_reason_from_the_log() {
        let dir = std::env::temp_dir().join(format!("pvm-console-refusal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("pvml.0");
        std::fs::write(
            &p,
            "[t80040000] 11/26 05:00:00 mig: migrate t40002 to 0x40000 refused: old reason\n\
             [t80040000] 11/26 05:00:01 mig: checkpoint of t40003 refused: other task\n\
             [t80040000] 11/26 05:00:02 mig: migrate t40002 to 0x40000 refused: t40002 already runs on host 1\n\
             [t80040000] 11/26 05:00:03 mig: migrate t40005 to host 3: the move itself is not implemented yet\n",
        )
        .unwrap();
        assert_eq!(
            refusal_from_log(&p, 0x40002, 0).as_deref(),
            Some("t40002 already runs on host 1")
        );
        assert_eq!(refusal_from_log(&p, 0x40003, 0).as_deref(), Some("other task"));
        assert_eq!(refusal_from_log(&p, 0x40004, 0), None);
        assert_eq!(
            refusal_from_log(&p, 0x40005, 0).as_deref(),
            Some("the move itself is not implemented yet")
        );
        let len = std::fs::metadata(&p).unwrap().len();
        assert_eq!(refusal_from_log(&p, 0x40002, len), None, "only lines after the request");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
