//! The legacy command line: `pvmd [-d<mask>] [-n<hostname>] [-s|-S] [-f] [-t] [hostfile | 5 slave args]`.
//!
//! Parsed the way the legacy daemon does it: an argument starting with `-` is looked at by its
//! second character only; unknown switches (and `-f`) are kept as positional arguments, so a
//! master given `-x` sees two positionals and reports the usage error.

/// The usage line the legacy master writes to its log.
pub const USAGE: &str = "usage: pvmd3 [-ddebugmask] [-nhostname] [hostfile]";

pub const HELP: &str = "\
pvmd - PVM 3.4.6 compatible daemon (pvm-rs)

usage: pvmd [-d<mask>] [-n<hostname>] [-s|-S] [-f] [-t] [hostfile]
       pvmd -s|-S [options] <master index> <master ip:port> <master mtu> <my index> <my ip:port>

  -d<mask>      debug mask (0x hex, leading-0 octal or decimal; env PVMDDEBUG)
  -n<hostname>  host name to use instead of gethostname()
  -s            slave mode (started by a master pvmd)
  -S            slave mode, manual start
  -f            slave: do not fork into the background
  -t            test mode: log version and arguments, then exit
  --help        this text
  --version     version

Environment: PVM_ROOT (default /usr/lib/pvm3), PVM_TMP (default /tmp), PVMHOSTFILE,
PVMDDEBUG, PVMDLOGMAX, PVM_ALLOW_ROOT.
pvm-rs: PVMD_LOG=<filter> (e.g. info,pvmd::net=debug), PVMD_LOG_FORMAT=text|json,
PVMD_LOG_FILE=<path> (structured events; targets named after the -d bits),
PVMD_METRICS=127.0.0.1:<port> (Prometheus metrics, loopback only). See docs/tracing.md.
PVMD_SPIN_US=<µs> (poll this long after each event before sleeping; default 50, 0 = off;
not while the machine has more runnable tasks than CPUs). See docs/bench-daemon.md.
PVMD_PEER_TIMEOUT=<s> (a pvmd-rs peer silent this long while a packet to it waits is dead;
default 10, 0 = the legacy rule of 10 sends over 180 s, which legacy peers always get).
PVMD_FIT_MTU=0 (datagrams to pvmd-rs peers of 4080 bytes as legacy, not cut to the route's MTU).
The master prints its socket address on stdout, then serves tasks.";

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Args {
    pub debug: u32,
    pub hostname: Option<String>,
    pub slave: bool,
    /// `-S`: slave started by hand (does not wait on stdin).
    pub manual: bool,
    pub test: bool,
    /// Positional arguments, including unknown switches and `-f`/`-S`, as the legacy keeps them.
    pub positional: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Run(Args),
    Help,
    Version,
}

/// `pvmstrtoi`: `0x` hex, leading-`0` octal, else decimal; parsing stops at the first bad digit.
pub fn pvmstrtoi(s: &str) -> i64 {
    let s = s.trim_start();
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (radix, digits) = if let Some(r) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        (16, r)
    } else if s.len() > 1 && s.starts_with('0') {
        (8, &s[1..])
    } else {
        (10, s)
    };
    let mut v: i64 = 0;
    for c in digits.chars() {
        match c.to_digit(radix) {
            Some(d) => v = v.wrapping_mul(radix as i64).wrapping_add(d as i64),
            None => break,
        }
    }
    if neg {
        -v
    } else {
        v
    }
}

/// Parses `argv[1..]`; `env_debug` is the value of PVMDDEBUG (the `-d` switch overrides it).
pub fn parse(args: &[String], env_debug: Option<&str>) -> Command {
    match args.first().map(String::as_str) {
        Some("--help") => return Command::Help,
        Some("--version") => return Command::Version,
        _ => {}
    }
    let mut a = Args {
        debug: env_debug.map(|s| pvmstrtoi(s) as u32).unwrap_or(0),
        ..Args::default()
    };
    for arg in args {
        let mut chars = arg.chars();
        if chars.next() != Some('-') {
            a.positional.push(arg.clone());
            continue;
        }
        match chars.next() {
            Some('d') => a.debug = pvmstrtoi(&arg[2..]) as u32,
            Some('n') => a.hostname = Some(arg[2..].to_string()).filter(|s| !s.is_empty()),
            Some('S') => {
                a.slave = true;
                a.manual = true;
                a.positional.push(arg.clone());
            }
            Some('s') => a.slave = true,
            Some('t') => a.test = true,
            _ => a.positional.push(arg.clone()),
        }
    }
    Command::Run(a)
}

impl Args {
    /// The master's hostfile, or the usage error the legacy logs.
    pub fn master_hostfile(&self) -> Result<Option<&str>, &'static str> {
        match self.positional.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(one)),
            _ => Err(USAGE),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(v: &[&str]) -> Args {
        match parse(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>(), None) {
            Command::Run(a) => a,
            c => panic!("{c:?}"),
        }
    }

    #[test]
    fn strtoi_bases() {
        assert_eq!(pvmstrtoi("0x58"), 0x58);
        assert_eq!(pvmstrtoi("0X1F"), 31);
        assert_eq!(pvmstrtoi("017"), 15);
        assert_eq!(pvmstrtoi("17"), 17);
        assert_eq!(pvmstrtoi("0"), 0);
        assert_eq!(pvmstrtoi(""), 0);
        assert_eq!(pvmstrtoi("12abc"), 12);
        assert_eq!(pvmstrtoi("09"), 0);
        assert_eq!(pvmstrtoi("-8"), -8);
    }

    #[test]
    fn master_options() {
        let a = run(&["-d0x10", "-nvm", "hosts"]);
        assert_eq!(a.debug, 0x10);
        assert_eq!(a.hostname.as_deref(), Some("vm"));
        assert!(!a.slave);
        assert_eq!(a.master_hostfile(), Ok(Some("hosts")));
    }

    #[test]
    fn env_debug_is_overridden_by_switch() {
        let Command::Run(a) = parse(&[], Some("0x4")) else {
            panic!()
        };
        assert_eq!(a.debug, 4);
        let Command::Run(a) = parse(&["-d8".into()], Some("0x4")) else {
            panic!()
        };
        assert_eq!(a.debug, 8);
    }

    #[test]
    fn unknown_switch_is_positional_and_gives_usage() {
        let a = run(&["-x", "hosts"]);
        assert_eq!(a.positional, vec!["-x", "hosts"]);
        assert_eq!(a.master_hostfile(), Err(USAGE));
        assert_eq!(run(&["a", "b"]).master_hostfile(), Err(USAGE));
    }

    #[test]
    fn slave_args_like_the_master_builds_them() {
        let a = run(&[
            "-s",
            "-d0x58",
            "-n10.77.0.2",
            "1",
            "0a4d0001:cdeb",
            "4080",
            "2",
            "0a4d0002:0000",
        ]);
        assert!(a.slave && !a.manual);
        assert_eq!(a.debug, 0x58);
        assert_eq!(a.positional.len(), 5);
        let a = run(&["-S", "1", "a", "4080", "2", "b"]);
        assert!(a.slave && a.manual);
    }

    #[test]
    fn help_and_version_only_as_first_argument() {
        assert_eq!(parse(&["--help".into()], None), Command::Help);
        assert_eq!(parse(&["--version".into()], None), Command::Version);
        assert!(matches!(parse(&["x".into(), "--help".into()], None), Command::Run(_)));
    }
}
