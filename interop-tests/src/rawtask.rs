//! A raw client of a pvmd's task socket, for hostile-input tests: sends exactly the bytes a
//! test wants (garbage, truncated frames, huge lengths) or does the real connect handshake
//! with authentication files, and reports how the daemon reacted (EOF, reply, silence).
//!
//! Works against both daemons: nothing here depends on pvmd-rs, only on the wire format.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use pvm_proto::codes::{Tm, ENC_XDR, MSGHDR_LEN, SYSCTX_TM};
use pvm_proto::frag::{FragFlags, StreamFragHeader, HEADER_LEN};
use pvm_proto::mesg::MsgHeader;
use pvm_proto::xdr::{XdrReader, XdrWriter};
use pvm_proto::Tid;

/// A frame header followed by `body`, claiming `claim` bytes (or the body's length).
pub fn frag(dst: Tid, src: Tid, body: &[u8], flags: FragFlags, claim: Option<u32>) -> Vec<u8> {
    let mut v = StreamFragHeader {
        dst,
        src,
        len: claim.unwrap_or(body.len() as u32),
        flags,
    }
    .to_bytes()
    .to_vec();
    v.extend_from_slice(body);
    v
}

/// A message header with `tag`, context `ctx`, wait id `wid`.
pub fn msg_header(tag: i32, ctx: i32, wid: i32) -> Vec<u8> {
    MsgHeader {
        enc: ENC_XDR,
        tag,
        ctx,
        wid,
        crc: 0,
    }
    .to_bytes()
    .to_vec()
}

/// A whole one-fragment request to the local pvmd.
pub fn request(tag: i32, wid: i32, body: &[u8]) -> Vec<u8> {
    let mut p = msg_header(tag, SYSCTX_TM, wid);
    p.extend_from_slice(body);
    frag(Tid::LOCAL_PVMD, Tid::NONE, &p, FragFlags::SOM | FragFlags::EOM, None)
}

/// A whole one-fragment user message (context 0) to `dst`, with the frame's src set to `src`.
pub fn user_message(dst: Tid, src: Tid, tag: i32, body: &[u8]) -> Vec<u8> {
    let mut p = msg_header(tag, 0, 0);
    p.extend_from_slice(body);
    frag(dst, src, &p, FragFlags::SOM | FragFlags::EOM, None)
}

/// How a connection ended up after a probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reaction {
    /// The daemon closed the connection (after sending this many bytes).
    Closed { after: Duration, bytes: usize },
    /// Still open after the wait; bytes received meanwhile.
    Open { bytes: usize },
    /// Read error (e.g. connection reset).
    Error(String),
}

/// A raw connection to a task socket.
pub struct RawTask {
    pub s: UnixStream,
    pub tid: Option<Tid>,
    buf: Vec<u8>,
    /// The pid claimed in TM_CONN2: a `sleep` child of ours, because the legacy daemon sends
    /// SIGTERM to whatever pid a task claims when it stops (claiming the test's own pid would
    /// kill the test).
    stand_in: Option<std::process::Child>,
}

impl Drop for RawTask {
    fn drop(&mut self) {
        if let Some(mut c) = self.stand_in.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl RawTask {
    pub fn connect(sock: &str) -> std::io::Result<RawTask> {
        let s = UnixStream::connect(sock)?;
        Ok(RawTask {
            s,
            tid: None,
            buf: Vec::new(),
            stand_in: None,
        })
    }

    pub fn send(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.s.write_all(b)
    }

    /// Reads until EOF or `wait` passes.
    pub fn react(&mut self, wait: Duration) -> Reaction {
        let t = Instant::now();
        let mut n = 0;
        let mut b = [0u8; 65536];
        loop {
            let left = wait.saturating_sub(t.elapsed());
            if left.is_zero() {
                return Reaction::Open { bytes: n };
            }
            self.s.set_read_timeout(Some(left)).expect("set timeout");
            match self.s.read(&mut b) {
                Ok(0) => {
                    return Reaction::Closed {
                        after: t.elapsed(),
                        bytes: n,
                    }
                }
                Ok(k) => {
                    n += k;
                    self.buf.extend_from_slice(&b[..k]);
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Reaction::Open { bytes: n }
                }
                Err(e) => return Reaction::Error(e.to_string()),
            }
        }
    }

    /// Next whole message (frag header, msg header, body; single- or multi-fragment) within `wait`.
    pub fn recv(&mut self, wait: Duration) -> Option<(StreamFragHeader, MsgHeader, Vec<u8>)> {
        let t = Instant::now();
        loop {
            if let Some(m) = self.take_message() {
                return Some(m);
            }
            let left = wait.saturating_sub(t.elapsed());
            if left.is_zero() {
                return None;
            }
            self.s.set_read_timeout(Some(left)).ok()?;
            let mut b = [0u8; 65536];
            match self.s.read(&mut b) {
                Ok(0) => return None,
                Ok(k) => self.buf.extend_from_slice(&b[..k]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return None,
                Err(_) => return None,
            }
        }
    }

    fn take_message(&mut self) -> Option<(StreamFragHeader, MsgHeader, Vec<u8>)> {
        let mut off = 0;
        let mut first: Option<(StreamFragHeader, MsgHeader)> = None;
        let mut body = Vec::new();
        loop {
            let fh = StreamFragHeader::parse(&self.buf[off..], u32::MAX).ok()?;
            let end = off + HEADER_LEN + fh.len as usize;
            if self.buf.len() < end {
                return None;
            }
            let p = &self.buf[off + HEADER_LEN..end];
            if first.is_none() {
                let mh = MsgHeader::parse(p).ok()?;
                first = Some((fh, mh));
                body.extend_from_slice(&p[MSGHDR_LEN.min(p.len())..]);
            } else {
                body.extend_from_slice(p);
            }
            off = end;
            if fh.flags.contains(FragFlags::EOM) {
                self.buf.drain(..off);
                let (f, m) = first?;
                return Some((f, m, body));
            }
        }
    }

    /// The connect handshake with authentication files in `tmp` (as libpvm does it). The tid,
    /// or why it failed.
    pub fn handshake(&mut self, tmp: &Path, version: i32) -> Result<Tid, String> {
        // Short: the legacy daemon refuses t-auth paths past a fixed buffer (about 100 bytes).
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let tauth = tmp.join(format!("ta{}", N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)));
        std::fs::write(&tauth, b"").map_err(|e| format!("t-auth: {e}"))?;
        let mut w = XdrWriter::new();
        w.int(version).string(&tauth.display().to_string());
        self.send(&request(Tm::Connect.code(), 0, &w.into_inner()))
            .map_err(|e| format!("send TM_CONNECT: {e}"))?;
        let (_, mh, body) = self.recv(Duration::from_secs(5)).ok_or("no TM_CONNECT reply")?;
        let _ = std::fs::remove_file(&tauth);
        if mh.tag != Tm::Connect.code() {
            return Err(format!("reply tag {:#x}", mh.tag));
        }
        let mut r = XdrReader::new(&body);
        let _v = r.int("version").map_err(|e| e.to_string())?;
        let ack = r.int("ack").map_err(|e| e.to_string())?;
        if ack != 1 {
            return Err(format!("TM_CONNECT refused (ack {ack})"));
        }
        let dauth = r.string("dauth").map_err(|e| e.to_string())?;
        std::fs::OpenOptions::new()
            .write(true)
            .open(&dauth)
            .and_then(|mut f| f.write_all(b"x"))
            .map_err(|e| format!("write d-auth {dauth}: {e}"))?;
        let child = std::process::Command::new("sleep")
            .arg("120")
            .spawn()
            .map_err(|e| format!("start stand-in: {e}"))?;
        let mut w = XdrWriter::new();
        w.int(child.id() as i32).int(0);
        self.stand_in = Some(child);
        self.send(&request(Tm::Conn2.code(), 0, &w.into_inner()))
            .map_err(|e| format!("send TM_CONN2: {e}"))?;
        let (_, mh, body) = self.recv(Duration::from_secs(5)).ok_or("no TM_CONN2 reply")?;
        if mh.tag != Tm::Conn2.code() {
            return Err(format!("reply tag {:#x}", mh.tag));
        }
        let mut r = XdrReader::new(&body);
        let ack = r.int("ack").map_err(|e| e.to_string())?;
        if ack != 1 {
            return Err(format!("TM_CONN2 refused (ack {ack})"));
        }
        let tid = Tid(r.int("tid").map_err(|e| e.to_string())?);
        self.tid = Some(tid);
        Ok(tid)
    }

    /// Sends TM_CONFIG and waits for its reply: is this task still served?
    pub fn served(&mut self) -> bool {
        if self.send(&request(Tm::Config.code(), 0, &[])).is_err() {
            return false;
        }
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5) {
            match self.recv(Duration::from_secs(5)) {
                Some((_, mh, _)) if mh.tag == Tm::Config.code() => return true,
                Some(_) => continue,
                None => return false,
            }
        }
        false
    }
}

/// Resident set size of a process in kB (VmRSS), if it is alive.
pub fn rss_kb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Open file descriptors of a process.
pub fn fd_count(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// A process exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
        .unwrap_or(false)
}

/// Seeded pseudo-random bytes (xorshift), the same on every run.
pub fn seeded_bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
