//! Image transfer between hosts: one TCP stream carrying the files of an image directory.
//!
//! Frame per file: `u16 name length, name (one path component), u64 size, bytes`; a name
//! length of 0 ends the stream. The receiver refuses names that are not a single plain
//! component and never allocates more than its copy buffer, whatever the sender claims.

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

use crate::error::{io, MigError, Result};
use crate::netns::Host;

const MAX_NAME: usize = 255;
/// Largest read of a file's bytes from the stream (and the receive buffer's size).
const RECV_CHUNK: usize = 1 << 20;

/// Sends every regular file of `dir` (not recursive: CRIU image dirs are flat).
pub fn send_dir(dir: &Path, to: &mut impl Write) -> Result<u64> {
    let mut total = 0u64;
    let mut names: Vec<_> = fs::read_dir(dir)
        .map_err(io("read image dir"))?
        .flatten()
        .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
        .collect();
    names.sort_by_key(|e| e.file_name());
    for e in names {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.len() > MAX_NAME || [".log", ".socket", ".out"].iter().any(|s| name.ends_with(s)) {
            continue;
        }
        let mut f = File::open(e.path()).map_err(io("open image file"))?;
        let size = f.metadata().map_err(io("stat image file"))?.len();
        to.write_all(&(name.len() as u16).to_be_bytes()).map_err(io("send"))?;
        to.write_all(name.as_bytes()).map_err(io("send"))?;
        to.write_all(&size.to_be_bytes()).map_err(io("send"))?;
        let n = io::copy(&mut (&mut f).take(size), to).map_err(io("send"))?;
        if n != size {
            return Err(MigError::Transfer(format!(
                "{name} shrank while sending ({n} of {size})"
            )));
        }
        total += size;
    }
    to.write_all(&0u16.to_be_bytes()).map_err(io("send"))?;
    to.flush().map_err(io("send"))?;
    Ok(total)
}

/// Receives a stream made by [`send_dir`] into `dir` (created if missing).
pub fn recv_dir(from: &mut impl Read, dir: &Path) -> Result<u64> {
    fs::create_dir_all(dir).map_err(io("create image dir"))?;
    let mut total = 0u64;
    // Grows with the files it carries, never past RECV_CHUNK whatever size a stream claims.
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let mut l = [0u8; 2];
        from.read_exact(&mut l).map_err(io("receive name length"))?;
        let len = u16::from_be_bytes(l) as usize;
        if len == 0 {
            return Ok(total);
        }
        if len > MAX_NAME {
            return Err(MigError::Transfer(format!("name length {len} > {MAX_NAME}")));
        }
        let mut name = vec![0u8; len];
        from.read_exact(&mut name).map_err(io("receive name"))?;
        let name = String::from_utf8(name).map_err(|_| MigError::Transfer("name is not UTF-8".into()))?;
        if name.contains('/') || name == "." || name == ".." || name.contains('\0') {
            return Err(MigError::Transfer(format!("refused file name {name:?}")));
        }
        let mut s = [0u8; 8];
        from.read_exact(&mut s).map_err(io("receive size"))?;
        let size = u64::from_be_bytes(s);
        if (buf.len() as u64) < size.min(RECV_CHUNK as u64) {
            buf.resize(size.min(RECV_CHUNK as u64) as usize, 0);
        }
        let mut f = File::create(dir.join(&name)).map_err(io("create image file"))?;
        // Straight from the stream into the file in chunks of up to 1 MiB: `io::copy` into a
        // `BufWriter` wrote 8 KiB at a time, 32 768 writes per 256 MB image.
        let mut left = size;
        while left > 0 {
            let want = left.min(buf.len() as u64) as usize;
            let got = match from.read(&mut buf[..want]) {
                Ok(0) => {
                    return Err(MigError::Transfer(format!(
                        "{name}: stream ended after {} of {size} bytes",
                        size - left
                    )))
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io("receive file")(e)),
            };
            f.write_all(&buf[..got]).map_err(io("write image file"))?;
            left -= got as u64;
        }
        total += size;
    }
}

/// A listener on host `to`, port chosen by the kernel.
pub fn listen(to: &Host) -> Result<TcpListener> {
    let addr = SocketAddr::from((to.addr, 0));
    to.run_in(move || TcpListener::bind(addr))?.map_err(io("listen"))
}

/// Accepts one connection, giving up at `timeout` (so a sender that never connects cannot
/// leave a thread blocked in accept forever).
pub fn accept(l: &TcpListener, timeout: Duration) -> Result<TcpStream> {
    l.set_nonblocking(true).map_err(io("listen"))?;
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match l.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).map_err(io("accept"))?;
                s.set_read_timeout(Some(timeout)).map_err(io("socket option"))?;
                return Ok(s);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if std::time::Instant::now() >= deadline {
                    return Err(MigError::Timeout {
                        step: "accept image stream",
                        limit: timeout,
                    });
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => {
                return Err(MigError::Io {
                    step: "accept",
                    source: e,
                })
            }
        }
    }
}

/// A connection from host `from` to `addr`.
pub fn connect(from: &Host, addr: SocketAddr, timeout: Duration) -> Result<TcpStream> {
    let s = from
        .run_in(move || TcpStream::connect_timeout(&addr, timeout))?
        .map_err(io("connect"))?;
    s.set_read_timeout(Some(timeout)).map_err(io("socket option"))?;
    s.set_write_timeout(Some(timeout)).map_err(io("socket option"))?;
    Ok(s)
}

/// Copies image dir `src` (on `from`) to `dst` (on `to`) over TCP between the hosts.
/// Returns the bytes carried.
pub fn copy_dir(from: &Host, src: &Path, to: &Host, dst: &Path, timeout: Duration) -> Result<u64> {
    let l = listen(to)?;
    let addr = l.local_addr().map_err(io("listen"))?;
    let dst = dst.to_path_buf();
    let rx = std::thread::spawn(move || -> Result<u64> {
        let s = accept(&l, timeout)?;
        recv_dir(&mut BufReader::with_capacity(1 << 20, s), &dst)
    });
    let mut s = connect(from, addr, timeout)?;
    let sent = send_dir(src, &mut s);
    drop(s);
    let got = rx.join().map_err(|_| MigError::Transfer("receiver panicked".into()))?;
    let sent = sent?;
    let got = got?;
    if sent != got {
        return Err(MigError::Transfer(format!("sent {sent} bytes, received {got}")));
    }
    Ok(got)
}

/// Sends `bytes` from `from` to `to` over the same kind of stream: the physical limit a
/// migration of that much memory is compared with. With `data` the bytes are `data` itself
/// (distinct memory, read from RAM like a task's pages); without, one cached 1 MiB buffer is
/// sent again and again (the first version of this baseline; it never reads memory).
pub fn raw_copy(from: &Host, to: &Host, bytes: u64, data: Option<&[u8]>, timeout: Duration) -> Result<Duration> {
    let l = listen(to)?;
    let addr = l.local_addr().map_err(io("listen"))?;
    let t0 = std::time::Instant::now();
    let rx = std::thread::spawn(move || -> Result<u64> {
        let mut s = accept(&l, timeout)?;
        io::copy(&mut s, &mut io::sink()).map_err(io("receive"))
    });
    let mut s = connect(from, addr, timeout)?;
    match data {
        Some(d) => {
            let d = &d[..d.len().min(bytes as usize)];
            s.write_all(d).map_err(io("send"))?;
        }
        None => {
            let buf = vec![0x5au8; 1 << 20];
            let mut left = bytes;
            while left > 0 {
                let n = left.min(buf.len() as u64) as usize;
                s.write_all(&buf[..n]).map_err(io("send"))?;
                left -= n as u64;
            }
        }
    }
    drop(s);
    let got = rx
        .join()
        .map_err(|_| MigError::Transfer("receiver panicked".into()))??;
    if got != bytes {
        return Err(MigError::Transfer(format!("raw copy: {got} of {bytes} bytes")));
    }
    Ok(t0.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_round_trip_and_refusals() {
        let base = std::env::temp_dir().join(format!("pvm-mig-unit-{}", std::process::id()));
        let (a, b) = (base.join("a"), base.join("b"));
        fs::create_dir_all(&a).unwrap();
        fs::write(a.join("pages-1.img"), vec![7u8; 100_000]).unwrap();
        fs::write(a.join("core-1.img"), b"core").unwrap();
        fs::write(a.join("dump.log"), b"not sent").unwrap();
        let mut wire = Vec::new();
        assert_eq!(send_dir(&a, &mut wire).unwrap(), 100_004);
        assert_eq!(recv_dir(&mut &wire[..], &b).unwrap(), 100_004);
        assert_eq!(fs::read(b.join("pages-1.img")).unwrap(), vec![7u8; 100_000]);
        assert!(!b.join("dump.log").exists());
        // Truncated stream, path traversal, oversized name.
        assert!(recv_dir(&mut &wire[..wire.len() - 3], &b).is_err());
        let mut evil = Vec::new();
        evil.extend_from_slice(&5u16.to_be_bytes());
        evil.extend_from_slice(b"../x1");
        evil.extend_from_slice(&0u64.to_be_bytes());
        assert!(matches!(recv_dir(&mut &evil[..], &b), Err(MigError::Transfer(m)) if m.contains("refused")));
        assert!(recv_dir(&mut &[0xffu8, 0xff][..], &b).is_err());
        // A size claim far beyond the data is an error, not an allocation.
        let mut big = Vec::new();
        big.extend_from_slice(&1u16.to_be_bytes());
        big.push(b'z');
        big.extend_from_slice(&u64::MAX.to_be_bytes());
        assert!(recv_dir(&mut &big[..], &b).is_err());
        fs::remove_dir_all(&base).unwrap();
    }
}
