//! Command line of pvmdump; everything else is in the library.

use pvmdump::{analyse_with, Config};
use std::io::Write;
use std::process::ExitCode;

const USAGE: &str = "\
pvmdump - decode PVM 3.4 traffic from pcap/pcapng captures and hex vectors

Usage: pvmdump [OPTIONS] FILE...

Prints one line per PVM fragment (DD: pvmd<->pvmd UDP datagram, TD: task<->task TCP stream
fragment) and one MSG line per reassembled message, with its body decoded; NOTE, ERROR and
CHECK lines report capture events, malformed input (bodies that do not decode included) and
--check differences. Lines start with the packet number and time.

Input formats are told apart by content: pcap (any byte order, micro/nanosecond), pcapng, and
hex vectors ('#' first). Link types: Ethernet, Linux cooked SLL/SLL2, raw IPv4, BSD loopback.

Options:
      --check            re-encode fragment and message headers and every message body and
                         report differing bytes (message header bytes 12..16 and 24..32 and
                         the XDR pad bytes of bodies, which legacy leaves uninitialised, are
                         masked; body offsets are within the reassembled message body)
      --udp-port PORT    UDP with this source or destination port is PVM (repeatable, or a
                         comma-separated list)
      --tcp-port PORT    TCP with this port is a task<->task stream (repeatable)
      --all-udp          every UDP datagram is PVM
      --no-guess         do not sniff content; only ports and direct-route addresses learned
                         from TC_CONREQ/TC_CONACK decide (default: sniff, see below)
      --hex-stream       hex vector frames are stream fragments (default unless the file
                         name starts with dd_)
      --hex-datagram     hex vector frames are UDP payloads (default for dd_* files)
      --max-message N    largest message reassembled, bytes (default 16777216)
  -q, --quiet            print no summary on stderr
  -h, --help             print this help
  -V, --version          print the version

Without ports, UDP is PVM when its payload has the shape of a DDFRAGHDR datagram (reserved
bytes zero, defined flags only, length fitting the flags, at most 4080 bytes), and TCP when the
connection's first bytes are a TDFRAGHDR with SOM and a length of at least 32, or when an
endpoint was announced in a TC_CONREQ/TC_CONACK earlier in the capture.

Exit status:
  0  everything decoded
  1  --check found differences
  2  usage error
  3  an input file could not be read (missing, or not a known format)
  4  malformed or truncated input was reported (decoding went on where it could)
";

struct Args {
    cfg: Config,
    files: Vec<String>,
    hex_stream: Option<bool>,
    quiet: bool,
}

fn ports(v: &str, out: &mut Vec<u16>) -> Result<(), String> {
    for p in v.split(',') {
        out.push(p.trim().parse().map_err(|_| format!("invalid port `{p}`"))?);
    }
    Ok(())
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut a = Args {
        cfg: Config::default(),
        files: Vec::new(),
        hex_stream: None,
        quiet: false,
    };
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let value = |it: &mut dyn Iterator<Item = String>| -> Result<String, String> {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or(format!("{name} needs a value"))
        };
        match name.as_str() {
            "-h" | "--help" => {
                print!("{USAGE}");
                return Ok(None);
            }
            "-V" | "--version" => {
                println!("pvmdump {}", env!("CARGO_PKG_VERSION"));
                return Ok(None);
            }
            "--check" => a.cfg.check = true,
            "--all-udp" => a.cfg.all_udp = true,
            "--no-guess" => a.cfg.no_guess = true,
            "--hex-stream" => a.hex_stream = Some(true),
            "--hex-datagram" => a.hex_stream = Some(false),
            "-q" | "--quiet" => a.quiet = true,
            "--udp-port" => ports(&value(&mut it)?, &mut a.cfg.udp_ports)?,
            "--tcp-port" => ports(&value(&mut it)?, &mut a.cfg.tcp_ports)?,
            "--max-message" => {
                let v = value(&mut it)?;
                a.cfg.max_message = v.parse().map_err(|_| format!("invalid size `{v}`"))?;
            }
            "--" => a.files.extend(it.by_ref()),
            s if s.starts_with('-') && s.len() > 1 => return Err(format!("unknown option `{s}`")),
            _ => a.files.push(arg),
        }
    }
    if a.files.is_empty() {
        return Err("no input file".to_string());
    }
    Ok(Some(a))
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Some(a)) => a,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pvmdump: {e}\nTry `pvmdump --help`.");
            return ExitCode::from(2);
        }
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let (mut unreadable, mut diffs, mut errors) = (false, 0, 0);
    for f in &args.files {
        let bytes = match std::fs::read(f) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("pvmdump: {f}: {e}");
                unreadable = true;
                continue;
            }
        };
        let base = std::path::Path::new(f)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let hex_stream = args.hex_stream.unwrap_or(!base.starts_with("dd_"));
        if args.files.len() > 1 {
            let _ = writeln!(out, "==> {f} <==");
        }
        let mut broken_pipe = false;
        let r = analyse_with(&bytes, args.cfg.clone(), hex_stream, &mut |l| {
            if !broken_pipe && writeln!(out, "{l}").is_err() {
                broken_pipe = true;
            }
        });
        match r {
            Ok(s) => {
                diffs += s.check_diffs;
                errors += s.errors;
                if !args.quiet {
                    let _ = out.flush();
                    eprintln!(
                        "pvmdump: {f}: {} packets, {} PVM fragments, {} messages, {} retransmissions, {} errors{}",
                        s.packets,
                        s.fragments,
                        s.messages,
                        s.retransmissions,
                        s.errors,
                        if args.cfg.check {
                            format!(", {} check differences", s.check_diffs)
                        } else {
                            String::new()
                        }
                    );
                }
            }
            Err(e) => {
                let _ = out.flush();
                eprintln!("pvmdump: {f}: {e}");
                unreadable = true;
            }
        }
    }
    let _ = out.flush();
    if unreadable {
        ExitCode::from(3)
    } else if diffs > 0 {
        ExitCode::from(1)
    } else if errors > 0 {
        ExitCode::from(4)
    } else {
        ExitCode::SUCCESS
    }
}
