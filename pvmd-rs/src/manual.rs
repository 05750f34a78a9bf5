//! Manual start of slaves (`so=ms`, startup.md §4): the master shows a person the slave command
//! line to run by hand on the new host, and reads back the line that slave printed.
//!
//! The legacy pvmd' writes `*** Manual startup ***`, `Login to "<host>" and type:`, the command
//! and `Type response: ` to its stderr, reads one line from its stdin, and says `Thanks`. Our
//! master lets go of its stdio once the address line is out (so that whoever reads its stdout
//! sees end of file), so [`capture`] keeps what it needs beforehand:
//!
//! * a terminal on stdin: prompt and reply both there;
//! * else a stdin that can carry a reply (pipe, FIFO, socket, regular file): replies are read
//!   from it; the prompt goes to stderr only if that is a terminal (a pipe on stderr is not held
//!   open, for the same end-of-file reason), and always into the log, where a script finds it;
//! * else (stdin is /dev/null or closed) the controlling terminal (`/dev/tty`), if any;
//! * else a manual start fails at once, saying why.
//!
//! One host is asked at a time (a person answers one prompt after another). A reply must come
//! within [`reply_timeout`], else that host fails with PvmCantStart and a log line saying so.

use std::fs::File;
use std::io::{IsTerminal, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::{mpsc as std_mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;

use crate::daemon::master::SlaveStart;

/// Longest reply line accepted (a ddpro line is under 100 bytes).
const MAX_REPLY: usize = 4096;

/// How long a person has to answer one prompt: `PVMD_MANUAL_TIMEOUT` seconds, default 300.
pub fn reply_timeout() -> Duration {
    let secs = std::env::var("PVMD_MANUAL_TIMEOUT")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|&s| s > 0)
        .unwrap_or(300);
    Duration::from_secs(secs)
}

/// Where prompts go and replies come from.
#[derive(Debug)]
pub struct Console {
    input: File,
    prompt: Option<File>,
}

static CONSOLE: OnceLock<Mutex<Option<Console>>> = OnceLock::new();
type Answer = (u32, Result<String, String>);
/// One manual start to ask about, and where its answer goes.
type Job = (SlaveStart, UnboundedSender<Answer>);
static WORKER: OnceLock<Mutex<std_mpsc::Sender<Job>>> = OnceLock::new();

/// Keeps the terminal or stdin for manual starts; call before the stdio is detached.
pub fn capture() {
    let c = from_stdin().or_else(|| {
        let tty = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/tty")
            .ok()?;
        let prompt = tty.try_clone().ok();
        Some(Console { input: tty, prompt })
    });
    let _ = CONSOLE.set(Mutex::new(c));
}

/// A stdin the caller set up on purpose: a terminal, pipe, FIFO, socket or regular file (not
/// /dev/null, which is how a daemon is usually started from a script).
fn from_stdin() -> Option<Console> {
    let input = File::from(std::io::stdin().as_fd().try_clone_to_owned().ok()?);
    let usable = if input.is_terminal() {
        true
    } else {
        use std::os::unix::fs::FileTypeExt;
        let t = input.metadata().ok()?.file_type();
        t.is_fifo() || t.is_socket() || t.is_file()
    };
    if !usable {
        return None;
    }
    let prompt = if input.is_terminal() {
        input.try_clone().ok()
    } else if std::io::stderr().is_terminal() {
        std::io::stderr().as_fd().try_clone_to_owned().ok().map(File::from)
    } else {
        None
    };
    Some(Console { input, prompt })
}

/// Asks for the reply of one manual start; the answer comes back on `tx` like a start
/// command's first line does.
pub fn start(s: SlaveStart, tx: UnboundedSender<Answer>) {
    let console = CONSOLE.get().and_then(|c| c.lock().ok()?.take());
    let worker = WORKER.get_or_init(|| {
        let (wtx, wrx) = std_mpsc::channel::<Job>();
        let _ = std::thread::Builder::new()
            .name("manual-start".into())
            .spawn(move || worker(console, wrx));
        Mutex::new(wtx)
    });
    if let Ok(w) = worker.lock() {
        let _ = w.send((s, tx));
    }
}

fn worker(mut console: Option<Console>, rx: std_mpsc::Receiver<Job>) {
    while let Ok((s, tx)) = rx.recv() {
        let host = s.manual.clone().unwrap_or_default();
        let cmd = s.argv.first().cloned().unwrap_or_default();
        let res = match console.as_mut() {
            None => Err(format!(
                "manual start (so=ms) of {host}: the master has no terminal or stdin to read the reply from \
                 (start it from a terminal, or with the reply lines on its stdin)"
            )),
            Some(c) => ask(c, &host, &cmd, reply_timeout()),
        };
        let _ = tx.send((s.index, res));
    }
}

/// Shows the prompt for one host and reads its reply line.
pub fn ask(c: &mut Console, host: &str, cmd: &str, timeout: Duration) -> Result<String, String> {
    if let Some(p) = c.prompt.as_mut() {
        let _ = write!(
            p,
            "*** Manual startup ***\nLogin to \"{host}\" and type:\n{cmd}\nType response: "
        );
        let _ = p.flush();
    }
    if c.input.is_terminal() && !foreground(&c.input) {
        // Reading would stop the whole daemon (SIGTTIN) until someone brings it forward.
        return Err(format!(
            "manual start (so=ms) of {host}: the master is not in the foreground of its terminal"
        ));
    }
    let line = read_line(&mut c.input, timeout).map_err(|e| format!("manual start (so=ms) of {host}: {e}"))?;
    if let Some(p) = c.prompt.as_mut() {
        let _ = writeln!(p, "Thanks");
        let _ = p.flush();
    }
    Ok(line)
}

/// One non-empty line (without its end), waiting at most `timeout` in all.
fn read_line(input: &mut File, timeout: Duration) -> Result<String, String> {
    let deadline = Instant::now() + timeout;
    let mut line = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || !readable(input.as_fd(), left) {
            return Err(format!("no reply within {} s", timeout.as_secs()));
        }
        let mut b = [0u8; 1];
        match input.read(&mut b) {
            Ok(0) => return Err("end of file on the master's input before a reply".into()),
            Ok(_) if b[0] == b'\n' => {
                let s = String::from_utf8_lossy(&line).trim().to_string();
                if !s.is_empty() {
                    return Ok(s);
                }
                line.clear();
            }
            Ok(_) if line.len() < MAX_REPLY => line.push(b[0]),
            Ok(_) => return Err(format!("reply longer than {MAX_REPLY} bytes")),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(format!("read error: {e}")),
        }
    }
}

/// Whether this process is in the foreground process group of the terminal `tty`.
fn foreground(tty: &File) -> bool {
    // SAFETY: tcgetpgrp and getpgrp only read process state; the descriptor is open.
    unsafe { libc::tcgetpgrp(tty.as_raw_fd()) == libc::getpgrp() }
}

/// Waits until `fd` is readable (or at end of file), at most `timeout`.
fn readable(fd: std::os::fd::BorrowedFd<'_>, timeout: Duration) -> bool {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: one valid pollfd on the stack, for the duration of the call.
    let r = unsafe { libc::poll(&mut p, 1, ms) };
    r > 0
}

impl Console {
    /// A console over given descriptors (tests).
    pub fn new(input: OwnedFd, prompt: Option<OwnedFd>) -> Console {
        Console {
            input: File::from(input),
            prompt: prompt.map(File::from),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn prompt_reply_and_timeout() {
        let (mut feed, input) = UnixStream::pair().unwrap();
        let (prompt, mut shown) = UnixStream::pair().unwrap();
        let mut c = Console::new(OwnedFd::from(input), Some(OwnedFd::from(prompt)));
        feed.write_all(b"\n  ddpro<2316> arch<LINUX64> ip<0a000002:9000> mtu<4080> dsig<1>\nnext\n")
            .unwrap();
        let r = ask(
            &mut c,
            "h2",
            "pvmd -S -d0x0 -nh2 1 0a000001:8c2d 4080 2 0a000002:0000",
            Duration::from_secs(5),
        );
        assert_eq!(
            r.unwrap(),
            "ddpro<2316> arch<LINUX64> ip<0a000002:9000> mtu<4080> dsig<1>"
        );
        let r = ask(&mut c, "h3", "cmd3", Duration::from_secs(5));
        assert_eq!(r.unwrap(), "next", "the first reply did not eat the second");
        let t = Instant::now();
        let r = ask(&mut c, "h4", "cmd4", Duration::from_millis(300));
        assert!(r.unwrap_err().contains("h4: no reply within"));
        assert!(t.elapsed() >= Duration::from_millis(250));
        drop(c);
        shown.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut text = String::new();
        shown.read_to_string(&mut text).unwrap();
        assert!(text.starts_with(
            "*** Manual startup ***\nLogin to \"h2\" and type:\npvmd -S -d0x0 -nh2 1 0a000001:8c2d 4080 2 0a000002:0000\nType response: Thanks\n"
        ), "{text}");
        assert_eq!(text.matches("Thanks").count(), 2, "{text}");
        drop(feed);
    }

    #[test]
    fn end_of_input_and_overlong_reply() {
        let (feed, input) = UnixStream::pair().unwrap();
        let mut c = Console::new(OwnedFd::from(input), None);
        drop(feed);
        assert!(ask(&mut c, "h", "c", Duration::from_secs(5))
            .unwrap_err()
            .contains("end of file"));
        let (mut feed, input) = UnixStream::pair().unwrap();
        let mut c = Console::new(OwnedFd::from(input), None);
        feed.write_all(&vec![b'x'; MAX_REPLY + 10]).unwrap();
        assert!(ask(&mut c, "h", "c", Duration::from_secs(5))
            .unwrap_err()
            .contains("longer"));
    }
}
