//! `pvm-migrate migrate TID HOST`: asks the pvmd of this host to move a task, as a PVM task
//! itself. The task library is loaded at run time (`libpvm3.so.3` from the usual search path,
//! or `PVM_LIBPVM3`), so this binary does not link a second copy of the library's global
//! state; the legacy library has no `pvm_migrate` and is reported as such.

use std::ffi::{c_char, c_int, c_void, CStr, CString};

type IntFn = unsafe extern "C" fn() -> c_int;
type MigrateFn = unsafe extern "C" fn(c_int, *const c_char) -> c_int;
type StrerrorFn = unsafe extern "C" fn(c_int) -> *const c_char;
type SetoptFn = unsafe extern "C" fn(c_int, c_int) -> c_int;

struct Lib(*mut c_void);

impl Lib {
    fn open(path: &str) -> Result<Lib, String> {
        let p = CString::new(path).map_err(|_| "library path with a NUL byte".to_string())?;
        // SAFETY: dlopen with a valid C string; the handle is only used through `sym`.
        let h = unsafe { libc::dlopen(p.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
        if h.is_null() {
            // SAFETY: dlerror returns NULL or a C string valid until the next dl call.
            let e = unsafe { libc::dlerror() };
            let why = if e.is_null() {
                "unknown error".to_string()
            } else {
                unsafe { CStr::from_ptr(e) }.to_string_lossy().into_owned()
            };
            return Err(format!("cannot load {path}: {why}"));
        }
        Ok(Lib(h))
    }

    fn sym(&self, name: &str) -> Option<*mut c_void> {
        let n = CString::new(name).ok()?;
        // SAFETY: a live handle and a valid C string.
        let s = unsafe { libc::dlsym(self.0, n.as_ptr()) };
        (!s.is_null()).then_some(s)
    }
}

/// Parses a tid as PVM prints them: `t40002`, `0x40002` or decimal.
pub fn parse_tid(s: &str) -> Option<i32> {
    let h = s.strip_prefix('t').or_else(|| s.strip_prefix("0x"));
    match h {
        Some(h) => u32::from_str_radix(h, 16).ok().map(|v| v as i32),
        None => s.parse().ok(),
    }
    .filter(|&t| t > 0)
}

/// What the command asks for.
pub enum Op<'a> {
    Migrate(&'a str),
    /// `pvm_checkpoint` flags: 0 one task, 1 the application rooted at the tid, 3 with
    /// automatic restart after a host failure.
    Checkpoint(i32),
    /// `app`: the application rooted at the tid rolls back (the pvmd decides from its
    /// records; the call is the same).
    Restart {
        app: bool,
    },
}

/// Runs the command; progress goes to stdout, the outcome is the return value.
pub fn run(tid: i32, op: Op<'_>) -> Result<(), String> {
    let path = std::env::var("PVM_LIBPVM3").unwrap_or_else(|_| "libpvm3.so.3".into());
    let lib = Lib::open(&path)?;
    let (Some(mytid), Some(exit), Some(strerror), Some(setopt)) = (
        lib.sym("pvm_mytid"),
        lib.sym("pvm_exit"),
        lib.sym("pvm_strerror"),
        lib.sym("pvm_setopt"),
    ) else {
        return Err(format!("{path} is not a PVM task library"));
    };
    let name = match op {
        Op::Migrate(_) => "pvm_migrate",
        Op::Checkpoint(_) => "pvm_checkpoint",
        Op::Restart { .. } => "pvm_restart",
    };
    let Some(call) = lib.sym(name) else {
        return Err(format!(
            "{path} is the legacy libpvm3 (no {name}): put pvm-rs's library on LD_LIBRARY_PATH"
        ));
    };
    // SAFETY: the symbols come from a PVM task library with these C signatures (pvm3.h).
    let (mytid, exit, strerror, setopt): (IntFn, IntFn, StrerrorFn, SetoptFn) = unsafe {
        (
            std::mem::transmute::<*mut c_void, IntFn>(mytid),
            std::mem::transmute::<*mut c_void, IntFn>(exit),
            std::mem::transmute::<*mut c_void, StrerrorFn>(strerror),
            std::mem::transmute::<*mut c_void, SetoptFn>(setopt),
        )
    };
    let text = |cc: c_int| -> String {
        // SAFETY: pvm_strerror returns a static C string (or NULL).
        let p = unsafe { strerror(cc) };
        if p.is_null() {
            format!("error {cc}")
        } else {
            unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
        }
    };
    // SAFETY: plain calls into the library; arguments are valid for the C prototypes.
    let me = unsafe { mytid() };
    if me < 0 {
        return Err(format!("cannot enrol in PVM: {} (is a pvmd running?)", text(me)));
    }
    unsafe {
        setopt(3 /* PvmAutoErr */, 0)
    };
    // Progress (progress.rs): elapsed time ticking on a terminal, plain lines otherwise.
    let label = match op {
        Op::Migrate(host) => format!("migrate t{tid:x} -> {host}"),
        Op::Checkpoint(flags) if flags & 1 != 0 => format!("checkpoint application t{tid:x}"),
        Op::Checkpoint(_) => format!("checkpoint t{tid:x}"),
        Op::Restart { app: true } => format!("restart application t{tid:x}"),
        Op::Restart { app: false } => format!("restart t{tid:x}"),
    };
    match op {
        Op::Migrate(host) => println!("pvm-migrate: t{me:x} asks its pvmd to move t{tid:x} to {host}"),
        Op::Checkpoint(flags) if flags & 1 != 0 => println!(
            "pvm-migrate: t{me:x} asks its pvmd to checkpoint the application rooted at t{tid:x} (flags {flags})"
        ),
        Op::Checkpoint(_) => println!("pvm-migrate: t{me:x} asks its pvmd to checkpoint t{tid:x}"),
        Op::Restart { app: true } => println!(
            "pvm-migrate: t{me:x} asks its pvmd to restart the application rooted at t{tid:x} from its last complete checkpoint"
        ),
        Op::Restart { app: false } => {
            println!("pvm-migrate: t{me:x} asks its pvmd to restart t{tid:x} from its last checkpoint")
        }
    }
    let p = pvm_migration::progress::Progress::start(label);
    // SAFETY: the symbol has the C prototype of `name` in our pvm3.h.
    let cc = match op {
        Op::Migrate(host) => {
            let h = CString::new(host).map_err(|_| "host name with a NUL byte".to_string())?;
            let f = unsafe { std::mem::transmute::<*mut c_void, MigrateFn>(call) };
            unsafe { f(tid, h.as_ptr()) }
        }
        Op::Checkpoint(flags) => {
            let f = unsafe { std::mem::transmute::<*mut c_void, SetoptFn>(call) };
            unsafe { f(tid, flags) }
        }
        Op::Restart { .. } => {
            let f = unsafe { std::mem::transmute::<*mut c_void, SetoptFn>(call) };
            unsafe { f(tid, -1) }
        }
    };
    let ms = p.elapsed().as_millis();
    unsafe { exit() };
    // pvm_migrate returns the new host's tid: as pvm_config gives it (positive), or from an
    // older pvmd-rs the pvmd tid, negative as an int (bit 31 set).
    let pvmd_tid = (cc as u32) & 0xc003_ffff == 0x8000_0000;
    if cc < 0 && !(matches!(op, Op::Migrate(_)) && pvmd_tid) {
        let why = if cc == -24 {
            "not supported by this daemon or for this task (PvmNotImpl: a legacy pvmd never supports it; a pvmd-rs daemon logs why)".to_string()
        } else {
            text(cc)
        };
        p.finish(&format!("failed: {why}"));
        Err(format!("{name}(t{tid:x}) failed after {ms} ms: {}", text(cc)))
    } else {
        match op {
            Op::Migrate(_) => p.finish(&format!(
                "now on the host of DTID {:x} (see conf), same tid",
                cc & 0x3ffc_0000
            )),
            Op::Checkpoint(_) => p.finish(&format!("epoch {cc}, task running again")),
            Op::Restart { .. } => p.finish(&format!("epoch {cc}, running again as t{tid:x}")),
        };
        Ok(())
    }
}

/// `pvm-migrate restore-task DIR KEY1 KEY2`: run by a pvmd (as the "program" of a restarted
/// task, so the pvmd's output pipes are this process's stdout and stderr): restores the task
/// in DIR into a fresh pid namespace with those pipes in place of the dumped ones (named
/// KEY1/KEY2, `pipe:[inode]`), then lives as long as the task so the pvmd sees its exit.
pub fn restore_task(dir: &str, args: &[String]) -> Result<(), String> {
    use std::os::fd::AsFd;
    // `KEY1 KEY2 [--lazy ADDR:PORT] [--ticket PATH TEXT]`: post-copy from the source's page
    // server; the resume ticket to write once the task runs (not before: with post-copy the
    // source's copy is only frozen, and must not read a ticket meant for this one).
    let end = args.iter().position(|a| a.starts_with("--")).unwrap_or(args.len());
    let keys = &args[..end];
    let opt = |name: &str, n: usize| -> Option<&[String]> {
        let i = args.iter().position(|a| a == name)?;
        args.get(i + 1..i + 1 + n)
    };
    let lazy = match opt("--lazy", 1) {
        Some(a) => Some(
            a[0].parse::<std::net::SocketAddrV4>()
                .map_err(|e| format!("--lazy {}: {e}", a[0]))?,
        ),
        None => None,
    };
    let ticket = opt("--ticket", 2).map(|a| (std::path::PathBuf::from(&a[0]), a[1].clone()));
    let criu = pvm_migration::Criu::new().map_err(|e| e.to_string())?;
    let mut inherit = Vec::new();
    for (k, fd) in keys.iter().zip([std::io::stdout().as_fd(), std::io::stderr().as_fd()]) {
        if k.starts_with("pipe:[") {
            let fd = fd.try_clone_to_owned().map_err(|e| e.to_string())?;
            inherit.push(pvm_migration::Inherit { fd, key: k.clone() });
        }
    }
    let host = pvm_migration::Host {
        netns: None,
        addr: std::net::Ipv4Addr::LOCALHOST,
    };
    let limit = std::time::Duration::from_secs(60);
    let dir = std::path::Path::new(dir);
    let (mut r, mut pages) = match lazy {
        Some(ps) => {
            let (r, p) = criu
                .restore_lazy_with(&host, dir, ps, &inherit, limit)
                .map_err(|e| e.to_string())?;
            (r, Some(p))
        }
        None => (
            criu.restore_with(&host, dir, &inherit, limit)
                .map_err(|e| e.to_string())?,
            None,
        ),
    };
    drop(inherit);
    if let Some((path, text)) = ticket {
        if let Some(d) = path.parent() {
            let _ = std::fs::create_dir_all(d);
        }
        // Per ticket (`with_extension` made every ticket of a directory share
        // "pvmresume.part": two pvmds writing tickets there swapped or lost them).
        let part = std::path::PathBuf::from(format!("{}.part", path.display()));
        std::fs::write(&part, text + "\n")
            .and_then(|()| std::fs::rename(&part, &path))
            .map_err(|e| format!("write ticket {}: {e}", path.display()))?;
    }
    while r.alive() {
        if pages.as_mut().is_some_and(|p| !p.running()) {
            // Every page is here (or the page server failed: the task then faults and dies).
            if let Some(p) = pages.take() {
                if let Err(e) = p.finish(limit) {
                    eprintln!("pvm-migrate restore-task: {e}");
                }
                // The task can be dumped again from now on (no userfaultfd regions left).
                let _ = std::fs::write(dir.join("pages-done"), b"1");
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_tid;

    #[test]
    fn tids_in_every_printed_form() {
        assert_eq!(parse_tid("t40002"), Some(0x40002));
        assert_eq!(parse_tid("0x40002"), Some(0x40002));
        assert_eq!(parse_tid("262146"), Some(0x40002));
        assert_eq!(parse_tid("-1"), None);
        assert_eq!(parse_tid("tzz"), None);
    }
}
