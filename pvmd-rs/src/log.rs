//! The daemon log `PVM_TMP/pvml.<uid>`, in the legacy format:
//! `[t80040000] 11/26 00:39:54 text` once the daemon has a tid, `[pvmd pid10842] ...` before.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::sys;

/// Default log size cap (bytes) when PVMDLOGMAX is not set.
pub const DEFAULT_LOG_MAX: u64 = 1_000_000;

pub struct Log {
    file: Option<File>,
    to_stderr: bool,
    prefix: String,
    written: u64,
    max: u64,
    truncated: bool,
    /// Lines logged before the file was opened; written to it when it is.
    early: Vec<String>,
}

/// `MM/DD HH:MM:SS` in local time.
pub fn stamp(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let (mon, day, h, m, s, _, _) = sys::localtime(secs);
    format!("{mon:02}/{day:02} {h:02}:{m:02}:{s:02}")
}

/// `ctime()` without the newline: `Thu Nov 26 02:39:58 2026`.
pub fn ctime(t: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let (mon, day, h, m, s, wday, year) = sys::localtime(secs);
    format!(
        "{} {} {day:2} {h:02}:{m:02}:{s:02} {year}",
        DAYS[(wday % 7) as usize],
        MONTHS[((mon + 11) % 12) as usize]
    )
}

impl Log {
    /// A log that writes to stderr only, with the `[pvmd pid<N>]` prefix.
    pub fn stderr(pid: u32) -> Self {
        Log {
            file: None,
            to_stderr: true,
            prefix: format!("pvmd pid{pid}"),
            written: 0,
            max: DEFAULT_LOG_MAX,
            truncated: false,
            early: Vec::new(),
        }
    }

    /// Opens (truncating) the log file, mode 0600, as the legacy daemon does at each start.
    pub fn open_file(&mut self, path: &Path, max: u64) -> std::io::Result<()> {
        // hardening: never through a symlink (O_NOFOLLOW), never a FIFO or device (O_NONBLOCK,
        // regular-file check), never a file of another user or a hard link to one, so that a
        // name planted in a shared PVM_TMP cannot make the daemon truncate someone's file.
        // Anything else found under the name is removed (the name, not what it points to) and
        // the file created afresh.
        let open = |fresh: bool| {
            OpenOptions::new()
                .write(true)
                .create(!fresh)
                .create_new(fresh)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                .open(path)
        };
        let ours = |f: &File| {
            use std::os::unix::fs::MetadataExt;
            f.metadata()
                .map(|m| m.is_file() && m.uid() == crate::sys::getuid() && m.nlink() == 1)
                .unwrap_or(false)
        };
        let f = match open(false) {
            Ok(f) if ours(&f) => f,
            _ => {
                std::fs::remove_file(path)?;
                open(true)?
            }
        };
        f.set_len(0)?;
        self.file = Some(f);
        self.max = max;
        let early = std::mem::take(&mut self.early);
        for l in early {
            self.write_file(&l);
        }
        Ok(())
    }

    /// From now on lines carry the daemon's tid.
    pub fn set_tid(&mut self, tid: u32) {
        self.prefix = format!("t{tid:x}");
    }

    /// Replaces the bracketed prefix verbatim (e.g. the legacy's `pvmd pid-1` before getpid).
    pub fn set_prefix_raw(&mut self, prefix: &str) {
        self.prefix = prefix.to_string();
    }

    /// Stops copying lines to stderr (after stdio is detached).
    pub fn quiet_stderr(&mut self) {
        self.to_stderr = false;
    }

    pub fn line(&mut self, text: &str) {
        self.line_at(SystemTime::now(), text);
    }

    pub fn line_at(&mut self, now: SystemTime, text: &str) {
        let l = format!("[{}] {} {}\n", self.prefix, stamp(now), text.trim_end_matches('\n'));
        if self.to_stderr {
            let _ = std::io::stderr().write_all(l.as_bytes());
        }
        if self.file.is_none() {
            if self.early.len() < 1000 {
                self.early.push(l);
            }
            return;
        }
        self.write_file(&l);
    }

    fn write_file(&mut self, l: &str) {
        if let Some(f) = self.file.as_mut() {
            if self.truncated {
                return;
            }
            if self.written + l.len() as u64 > self.max {
                let _ = f.write_all(b"*** logging truncated\n");
                self.truncated = true;
                return;
            }
            if f.write_all(l.as_bytes()).is_ok() {
                self.written += l.len() as u64;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_and_cap() {
        let dir = std::env::temp_dir().join(format!("pvmd-rs-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("pvml.0");
        std::fs::write(&p, "old run\n").unwrap();
        let mut l = Log::stderr(42);
        l.quiet_stderr();
        l.open_file(&p, 200).unwrap();
        let t = UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        l.line_at(t, "before tid");
        l.set_tid(0x80040000);
        l.line_at(t, "after tid\n");
        for _ in 0..10 {
            l.line_at(t, "filler filler filler filler");
        }
        let s = std::fs::read_to_string(&p).unwrap();
        let lines: Vec<&str> = s.lines().collect();
        assert!(!s.contains("old run"), "truncated at open");
        let st = stamp(t);
        assert_eq!(lines[0], format!("[pvmd pid42] {st} before tid"));
        assert_eq!(lines[1], format!("[t80040000] {st} after tid"));
        assert_eq!(*lines.last().unwrap(), "*** logging truncated");
        assert!(s.len() <= 200 + 30);
        assert_eq!(st.len(), "11/26 00:39:54".len());
        assert_eq!(ctime(t).len(), "Thu Nov 26 02:39:58 2026".len());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
