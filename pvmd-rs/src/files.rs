//! The daemon's files in PVM_TMP: the address file `pvmd.<uid>`, the `pvmtmp<pid>.<k>` names
//! used for the socket and the d-auth files, and the authentication file operations.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::daemon::AuthFiles;

/// `PVM_TMP/pvmd.<uid>`.
pub fn address_file_path(tmp: &Path, uid: u32) -> PathBuf {
    tmp.join(format!("pvmd.{uid}"))
}

/// `PVM_TMP/pvml.<uid>`.
pub fn log_file_path(tmp: &Path, uid: u32) -> PathBuf {
    tmp.join(format!("pvml.{uid}"))
}

/// Generator of `PVM_TMP/pvmtmp<pid6>.<k>` names; `k` counts per process, modulo 10000.
#[derive(Debug, Clone)]
pub struct TmpNames {
    tmp: PathBuf,
    pid: u32,
    next: u32,
}

impl TmpNames {
    pub fn new(tmp: &Path, pid: u32) -> Self {
        TmpNames {
            tmp: tmp.to_path_buf(),
            pid,
            next: 0,
        }
    }

    pub fn next_name(&mut self) -> PathBuf {
        let k = self.next;
        self.next = (self.next + 1) % 10000;
        self.tmp.join(format!("pvmtmp{:06}.{}", self.pid, k))
    }
}

/// What claiming the address file found.
#[derive(Debug)]
pub enum Claim {
    /// We created it.
    Created,
    /// A file was there but nothing listened behind it; it was replaced. Holds the old contents.
    ReplacedStale(String),
    /// A daemon answers at the address in the file.
    Running(String),
}

fn create_exclusive(path: &Path, contents: &str) -> io::Result<()> {
    let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    if let Err(e) = f.write_all(contents.as_bytes()) {
        let _ = fs::remove_file(path);
        return Err(e);
    }
    Ok(())
}

/// True if something accepts connections at `addr` (a Unix path, or `%08x:%04x` TCP).
fn address_is_live(addr: &str) -> bool {
    if addr.starts_with('/') {
        return UnixStream::connect(addr).is_ok();
    }
    let Some((ip, port)) = addr.split_once(':') else {
        return false;
    };
    let (Ok(ip), Ok(port)) = (u32::from_str_radix(ip, 16), u16::from_str_radix(port, 16)) else {
        return false;
    };
    let sa = std::net::SocketAddr::from((std::net::Ipv4Addr::from(ip), port));
    std::net::TcpStream::connect_timeout(&sa, Duration::from_secs(1)).is_ok()
}

/// Creates the address file with O_CREAT|O_EXCL, mode 0600, holding exactly `sock` (no newline).
///
/// Unlike the legacy daemon, a file left by a dead daemon does not block the start: if nobody
/// accepts connections at the address it names, it is removed — only if it is still the same
/// file we read (same inode), so two daemons racing cannot remove each other's fresh file — and
/// created again.
pub fn claim_address_file(path: &Path, sock: &str) -> io::Result<Claim> {
    match create_exclusive(path, sock) {
        Ok(()) => return Ok(Claim::Created),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    // hardening: a planted FIFO or symlink must neither block nor redirect us: it is no
    // daemon's address file, so it is removed (the link itself, never its target) and replaced.
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path);
    let regular = matches!(&opened, Ok(f) if f.metadata().map(|m| m.is_file()).unwrap_or(false));
    let mut f = match opened {
        Ok(f) if regular => f,
        Err(e) if e.raw_os_error() != Some(libc::ELOOP) => return Err(e),
        _ => {
            fs::remove_file(path)?;
            return match create_exclusive(path, sock) {
                Ok(()) => Ok(Claim::ReplacedStale("(not a regular file)".into())),
                Err(e) => Err(e),
            };
        }
    };
    let ino = f.metadata()?.ino();
    let mut old = String::new();
    Read::by_ref(&mut f)
        .take(4096)
        .read_to_string(&mut old)
        .unwrap_or_default();
    if address_is_live(old.trim()) {
        return Ok(Claim::Running(old));
    }
    match fs::symlink_metadata(path) {
        Ok(m) if m.ino() == ino => fs::remove_file(path)?,
        _ => return Ok(Claim::Running(old)),
    }
    match create_exclusive(path, sock) {
        Ok(()) => Ok(Claim::ReplacedStale(old)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(Claim::Running(old)),
        Err(e) => Err(e),
    }
}

/// Authentication files on the real file system.
#[derive(Debug)]
pub struct FsAuth {
    names: TmpNames,
}

impl FsAuth {
    /// `names` must already have handed out the socket's name, so d-auth files get `.1`, `.2`...
    pub fn new(names: TmpNames) -> Self {
        FsAuth { names }
    }
}

impl AuthFiles for FsAuth {
    /// Writes the one proof byte. Stricter than the legacy daemon, which would write into any
    /// file a task names: the target must be an empty regular file reached without a symlink,
    /// which is exactly what libpvm creates.
    fn write_task_auth(&mut self, path: &str) -> io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)?;
        let m = f.metadata()?;
        if !m.is_file() || m.len() != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "t-auth file is not an empty regular file",
            ));
        }
        f.write_all(&path.as_bytes()[..1.min(path.len())])
    }

    fn create_pvmd_auth(&mut self) -> io::Result<String> {
        let p = self.names.next_name();
        OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&p)?;
        Ok(p.to_string_lossy().into_owned())
    }

    fn pvmd_auth_written(&mut self, path: &str) -> io::Result<bool> {
        let m = fs::symlink_metadata(path)?;
        Ok(m.is_file() && m.len() >= 1)
    }

    fn remove(&mut self, path: &str) {
        let _ = fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::net::UnixListener;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("pvmd-rs-files-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn names() {
        let mut n = TmpNames::new(Path::new("/tmp"), 10842);
        assert_eq!(n.next_name(), PathBuf::from("/tmp/pvmtmp010842.0"));
        assert_eq!(n.next_name(), PathBuf::from("/tmp/pvmtmp010842.1"));
        assert_eq!(address_file_path(Path::new("/t"), 0), PathBuf::from("/t/pvmd.0"));
        assert_eq!(log_file_path(Path::new("/t"), 1001), PathBuf::from("/t/pvml.1001"));
    }

    #[test]
    fn address_file_fresh_stale_and_live() {
        let d = tmpdir("addr");
        let path = d.join("pvmd.0");
        assert!(matches!(
            claim_address_file(&path, "/x/sock.0").unwrap(),
            Claim::Created
        ));
        assert_eq!(fs::read(&path).unwrap(), b"/x/sock.0");
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        // Stale: nothing listens at /x/sock.0.
        match claim_address_file(&path, "/x/sock.1").unwrap() {
            Claim::ReplacedStale(old) => assert_eq!(old, "/x/sock.0"),
            c => panic!("{c:?}"),
        }
        assert_eq!(fs::read(&path).unwrap(), b"/x/sock.1");
        // Live: a listener behind the address in the file.
        let sock = d.join("live.sock");
        let _l = UnixListener::bind(&sock).unwrap();
        fs::remove_file(&path).unwrap();
        claim_address_file(&path, sock.to_str().unwrap()).unwrap();
        assert!(matches!(
            claim_address_file(&path, "/other").unwrap(),
            Claim::Running(_)
        ));
        assert_eq!(fs::read(&path).unwrap(), sock.to_str().unwrap().as_bytes());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn auth_files() {
        let d = tmpdir("auth");
        let mut names = TmpNames::new(&d, 7);
        names.next_name();
        let mut a = FsAuth::new(names);
        let t = d.join("tauth");
        fs::File::create(&t).unwrap();
        a.write_task_auth(t.to_str().unwrap()).unwrap();
        assert_eq!(fs::read(&t).unwrap(), b"/");
        // Not empty any more: refused (never overwrite a file with content).
        assert!(a.write_task_auth(t.to_str().unwrap()).is_err());
        // Symlinks are refused.
        let link = d.join("link");
        std::os::unix::fs::symlink(d.join("other"), &link).unwrap();
        fs::File::create(d.join("other")).unwrap();
        assert!(a.write_task_auth(link.to_str().unwrap()).is_err());
        assert!(a.write_task_auth(d.join("missing").to_str().unwrap()).is_err());
        let p = a.create_pvmd_auth().unwrap();
        assert!(p.ends_with("pvmtmp000007.1"), "{p}");
        assert!(!a.pvmd_auth_written(&p).unwrap());
        fs::write(&p, b"/").unwrap();
        assert!(a.pvmd_auth_written(&p).unwrap());
        a.remove(&p);
        assert!(!Path::new(&p).exists());
        fs::remove_dir_all(&d).unwrap();
    }
}
