//! What CRIU can do on this host, checked once at daemon start-up. Each capability is either
//! available or missing with a reason a person can act on; the daemon advertises the result
//! to its peers (docs/migration.md, DM_MIGCAPS) and refuses operations that cannot work here
//! with that reason instead of failing half-way.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// One capability.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cap {
    Available,
    Missing(String),
}

impl Cap {
    pub fn ok(&self) -> bool {
        matches!(self, Cap::Available)
    }
}

/// The typed probe result.
#[derive(Clone, Debug)]
pub struct Capabilities {
    /// The CRIU binary used and its version, when one was found.
    pub criu: Option<(PathBuf, String)>,
    /// Checkpoint (`criu dump`), including leave-running.
    pub dump: Cap,
    /// `criu restore`.
    pub restore: Cap,
    /// Post-copy migration (userfaultfd lazy pages).
    pub lazy_pages: Cap,
    /// Soft-dirty tracking: pre-copy and incremental checkpoints.
    pub dirty_tracking: Cap,
    /// Restores into a fresh pid namespace, so pids never clash.
    pub pid_namespaces: Cap,
    /// Root lacks CAP_SYS_RESOURCE: the lazy page server then needs fs.pipe-max-size raised
    /// (a CRIU bug ignores the failed F_SETPIPE_SZ; CKPT-REPORT §6).
    pub needs_pipe_size_workaround: bool,
    /// What became of CRIU's kernel-feature cache where /run is not a tmpfs ([`kdat_cache`]).
    pub kdat_note: Option<String>,
}

impl Capabilities {
    /// Migration is possible at all (stop-and-copy at least).
    pub fn can_migrate(&self) -> Result<(), String> {
        for (name, c) in [
            ("dump", &self.dump),
            ("restore", &self.restore),
            ("pid namespaces", &self.pid_namespaces),
        ] {
            if let Cap::Missing(r) = c {
                return Err(format!("{name}: {r}"));
            }
        }
        Ok(())
    }
}

impl fmt::Display for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.criu {
            Some((p, v)) => writeln!(f, "criu: {} (version {v})", p.display())?,
            None => writeln!(f, "criu: not found")?,
        }
        for (name, c) in [
            ("dump", &self.dump),
            ("restore", &self.restore),
            ("lazy pages (post-copy)", &self.lazy_pages),
            ("dirty tracking (pre-copy)", &self.dirty_tracking),
            ("pid namespaces", &self.pid_namespaces),
        ] {
            match c {
                Cap::Available => writeln!(f, "{name}: available")?,
                Cap::Missing(r) => writeln!(f, "{name}: UNAVAILABLE: {r}")?,
            }
        }
        if let Some(n) = &self.kdat_note {
            writeln!(f, "note: {n}")?;
        }
        if self.needs_pipe_size_workaround {
            writeln!(
                f,
                "note: CAP_SYS_RESOURCE missing; post-copy raises fs.pipe-max-size while it runs"
            )?;
        }
        Ok(())
    }
}

fn run(cmd: &mut Command) -> (bool, String) {
    match cmd.stdin(Stdio::null()).output() {
        Ok(o) => {
            let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
            s.push_str(&String::from_utf8_lossy(&o.stderr));
            (o.status.success(), s)
        }
        Err(e) => (false, e.to_string()),
    }
}

fn last_line(s: &str) -> String {
    s.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string()
}

/// Parses `criu --version` output ("Version: 4.1.1") into (major, minor).
pub fn parse_version(out: &str) -> Option<(u32, u32, String)> {
    let v = out.lines().find_map(|l| l.strip_prefix("Version:"))?.trim().to_string();
    let mut it = v.split('.');
    let maj = it.next()?.parse().ok()?;
    let min = it.next().and_then(|m| m.parse().ok()).unwrap_or(0);
    Some((maj, min, v))
}

/// The CRIU binary: `$PVM_CRIU`, then /usr/local/sbin/criu (what ci/criu-setup installs),
/// then `criu` on PATH, the first that reports version >= 4.1.
pub fn locate() -> Result<(PathBuf, String), String> {
    let mut cands: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os("PVM_CRIU") {
        cands.push(PathBuf::from(p));
    }
    cands.push(PathBuf::from("/usr/local/sbin/criu"));
    cands.push(PathBuf::from("criu"));
    locate_in(cands)
}

/// The first of `cands` that reports version >= 4.1; otherwise why each one was refused.
pub fn locate_in(cands: Vec<PathBuf>) -> Result<(PathBuf, String), String> {
    let mut tried = Vec::new();
    for c in cands {
        let (_, out) = run(Command::new("timeout").arg("10").arg(&c).arg("--version"));
        match parse_version(&out) {
            Some((maj, min, v)) if (maj, min) >= (4, 1) => return Ok((c, v)),
            Some((_, _, v)) => tried.push(format!("{}: version {v} < 4.1", c.display())),
            None => tried.push(format!("{}: not runnable", c.display())),
        }
    }
    Err(tried.join("; "))
}

fn cap_eff_has(bit: u32) -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|v| v >> bit & 1 == 1)
}

/// Runs the probe (a few `criu check` calls, about a second in all).
pub fn probe() -> Capabilities {
    let missing = |r: &str| Cap::Missing(r.to_string());
    let (criu, version) = match locate() {
        Ok(x) => x,
        Err(why) => {
            let r = format!("no CRIU >= 4.1 ({why}); run ci/criu-setup");
            return Capabilities {
                criu: None,
                dump: missing(&r),
                restore: missing(&r),
                lazy_pages: missing(&r),
                dirty_tracking: missing(&r),
                pid_namespaces: probe_pidns(),
                needs_pipe_size_workaround: false,
                kdat_note: None,
            };
        }
    };
    let check = |extra: &[&str]| run(Command::new("timeout").arg("30").arg(&criu).arg("check").args(extra));
    let (ok, out) = check(&[]);
    let base = if ok {
        Cap::Available
    } else if out.contains("CAP_SYS_ADMIN") || out.contains("CAP_CHECKPOINT_RESTORE") {
        missing(&format!("no privilege: {}", last_line(&out)))
    } else {
        missing(&format!("criu check failed: {}", last_line(&out)))
    };
    let feature = |name: &str, why: &str| {
        if !base.ok() {
            return base.clone();
        }
        match check(&["--feature", name]) {
            (true, _) => Cap::Available,
            (false, out) => missing(&format!("{why} ({})", last_line(&out))),
        }
    };
    let lazy_pages = feature(
        "uffd-noncoop",
        "userfaultfd non-cooperative mode unsupported or not permitted; migration falls back to stop-and-copy",
    );
    let dirty_tracking = feature(
        "mem_dirty_track",
        "kernel without CONFIG_MEM_SOFT_DIRTY: no pre-copy rounds, no incremental checkpoints",
    );
    let kdat_note = if base.ok() { kdat_cache(&criu, &version) } else { None };
    Capabilities {
        kdat_note,
        criu: Some((criu, version)),
        dump: base.clone(),
        restore: base,
        lazy_pages,
        dirty_tracking,
        pid_namespaces: probe_pidns(),
        needs_pipe_size_workaround: !cap_eff_has(24),
    }
}

/// Where CRIU, run as root, keeps what it learnt about the kernel, and our stamp for it.
const KDAT: &str = "/run/criu.kdat";
const KDAT_STAMP: &str = "/run/criu.kdat.pvm";
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// CRIU probes the kernel at every start (vDSO layout, pagemap, netlink, userfaultfd, CPU
/// features: about 20 ms here, 30–60 ms with the machine loaded) unless it finds its cache
/// `/run/criu.kdat`, and it writes that cache only onto a tmpfs (meant to vanish at reboot).
/// On this machine /run is not a tmpfs, so every dump, restore and lazy-pages server paid
/// the probes again: a dump reached "Dumping processes" after 23–60 ms without the cache,
/// after about 1 ms with it. This writes the cache as CRIU itself would: `criu check` in a
/// private mount namespace whose /run is a tmpfs, the file copied out to the real /run. It
/// is stamped (`/run/criu.kdat.pvm`) with the boot id, the kernel release, the CRIU
/// version and the binary's size and mtime: this /run survives reboots, and a cache from
/// another boot, kernel or CRIU build is removed and made again, never used. Returns a note for the probe's report (None where
/// /run is a tmpfs: CRIU keeps its cache there by itself).
pub fn kdat_cache(criu: &Path, version: &str) -> Option<String> {
    let run_dir = std::ffi::CString::new("/run").ok()?;
    // SAFETY: statfs fills the struct we own; the path is a valid C string.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(run_dir.as_ptr(), &mut st) } != 0 || st.f_type as i64 == TMPFS_MAGIC {
        return None;
    }
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default().trim().to_string();
    // Every CRIU build checks the cache against a magic number taken from its build time
    // (KDAT_MAGIC_2) and deletes a cache made by another build: a rebuilt binary of the same
    // version (ci/criu-setup with other patches) needs a new one, so the stamp names the binary.
    let build = std::fs::metadata(criu)
        .map(|m| {
            use std::os::unix::fs::MetadataExt;
            format!("{}:{}", m.len(), m.mtime())
        })
        .unwrap_or_default();
    let stamp = format!(
        "{} {} {version} {build}",
        read("/proc/sys/kernel/random/boot_id"),
        read("/proc/sys/kernel/osrelease")
    );
    if read(KDAT_STAMP) == stamp && Path::new(KDAT).exists() {
        return Some(format!(
            "CRIU's kernel-feature cache {KDAT} made for this boot is used (/run is not a tmpfs)"
        ));
    }
    let _ = std::fs::remove_file(KDAT);
    let out = Command::new("timeout")
        .args(["30", "unshare", "-m", "sh", "-c"])
        .arg("mount -t tmpfs -o size=1m tmpfs /run && \"$0\" check >/dev/null 2>&1; cat /run/criu.kdat")
        .arg(criu)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output();
    let bytes = match out {
        Ok(o) if (64..=65536).contains(&o.stdout.len()) => o.stdout,
        Ok(o) => {
            return Some(format!(
                "could not make CRIU's kernel-feature cache ({} bytes); every CRIU run probes the kernel again",
                o.stdout.len()
            ))
        }
        Err(e) => {
            return Some(format!(
                "could not make CRIU's kernel-feature cache ({e}); every CRIU run probes the kernel again"
            ))
        }
    };
    let part = format!("{KDAT}.pvmpart.{}", std::process::id());
    let stamp_part = format!("{KDAT_STAMP}.part.{}", std::process::id());
    let done = std::fs::write(&part, &bytes)
        .and_then(|()| std::fs::rename(&part, KDAT))
        .and_then(|()| std::fs::write(&stamp_part, &stamp))
        .and_then(|()| std::fs::rename(&stamp_part, KDAT_STAMP));
    match done {
        Ok(()) => Some(format!(
            "made CRIU's kernel-feature cache {KDAT} for this boot (/run is not a tmpfs)"
        )),
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            let _ = std::fs::remove_file(&stamp_part);
            Some(format!(
                "could not write {KDAT} ({e}); every CRIU run probes the kernel again"
            ))
        }
    }
}

fn probe_pidns() -> Cap {
    let (ok, out) = run(Command::new("timeout").args(["10", "unshare", "-p", "-f", "--mount-proc", "true"]));
    if ok {
        Cap::Available
    } else {
        Cap::Missing(format!("cannot create a pid namespace: {}", last_line(&out)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(
            parse_version("Version: 4.1.1\nGitID: x").map(|v| (v.0, v.1)),
            Some((4, 1))
        );
        assert_eq!(parse_version("Version: 3.17.1\n").map(|v| (v.0, v.1)), Some((3, 17)));
        assert_eq!(parse_version("Version: 5\n").map(|v| (v.0, v.1)), Some((5, 0)));
        assert!(parse_version("criu: command not found").is_none());
        assert!(parse_version("Version: x.1").is_none());
    }

    #[test]
    fn old_or_missing_criu_is_refused_with_the_reason() {
        use std::os::unix::fs::PermissionsExt;
        let d = std::env::temp_dir().join(format!("pvm-mig-probe-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let fake = |name: &str, version: &str| {
            let p = d.join(name);
            std::fs::write(&p, format!("#!/bin/sh\necho 'Version: {version}'\n")).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
            p
        };
        let (old, new) = (fake("old", "3.17.1"), fake("new", "4.1.1"));
        let err = locate_in(vec![old.clone(), d.join("absent")]).unwrap_err();
        assert!(
            err.contains("version 3.17.1 < 4.1") && err.contains("absent: not runnable"),
            "{err}"
        );
        assert_eq!(locate_in(vec![old, new.clone()]).unwrap(), (new, "4.1.1".to_string()));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn can_migrate_names_the_missing_piece() {
        let c = Capabilities {
            criu: None,
            dump: Cap::Available,
            restore: Cap::Missing("criu check failed: vdso".into()),
            lazy_pages: Cap::Available,
            dirty_tracking: Cap::Available,
            pid_namespaces: Cap::Available,
            needs_pipe_size_workaround: false,
            kdat_note: None,
        };
        assert_eq!(c.can_migrate().unwrap_err(), "restore: criu check failed: vdso");
        assert!(c.to_string().contains("restore: UNAVAILABLE: criu check failed: vdso"));
    }
}
