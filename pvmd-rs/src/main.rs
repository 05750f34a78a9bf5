//! `pvmd`: startup sequence of the legacy master daemon, then the tokio shell.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use pvm_proto::codes::{DDPROTOCOL, SDPROTOCOL, TDPROTOCOL};
use pvmd_rs::cli::{self, Command};
use pvmd_rs::daemon::{Daemon, HostConfig};
use pvmd_rs::files::{self, Claim, FsAuth, TmpNames};
use pvmd_rs::hostfile;
use pvmd_rs::log::{self, Log};
use pvmd_rs::server::{self, Stop};
use pvmd_rs::{sys, ARCH, PVM_VER};

/// What the legacy daemon prints on stdout when started as root without PVM_ALLOW_ROOT.
const ROOT_MESSAGE: &str = "
*** Error: PVM is being run as user \"root\" ***!

This is not a good idea, and often doesn't work!

The root user cannot typically rsh/ssh to remote
computers over the network, to add them as hosts
to the PVM virtual machine.

You can install PVM in a system-wide directory,
with the files *owned* by user \"root\",
but you need to *run* PVM as a *regular* user!


*If* you know what you're doing, and you are
willing to accept the security risks, then you
can enable root execution of PVM by setting the
PVM_ALLOW_ROOT environment variable in your shell.

Please send any inquiries regarding this feature
to:  pvm@csm.msr.ornl.gov

";

/// Names of the debug mask bits, for the startup log line.
const DEBUG_NAMES: [(u32, &str); 11] = [
    (0x2, "msg"),
    (0x4, "tsk"),
    (0x8, "slv"),
    (0x10, "hst"),
    (0x40, "net"),
    (0x80, "mpp"),
    (0x200, "app"),
    (0x800, "mem"),
    (0x1000, "sem"),
    (0x4000, "rte"),
    (0x8000, "mbx"),
];

fn debug_flags(mask: u32) -> String {
    DEBUG_NAMES
        .iter()
        .filter(|(b, _)| mask & b != 0)
        .map(|(_, n)| *n)
        .collect::<Vec<_>>()
        .join(",")
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn gethostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// The legacy exits with the bail-out code; it logs `pvmbailout(n)` first.
fn bailout(log: &mut Log, n: u8) -> ExitCode {
    log.line(&format!("pvmbailout({n})"));
    ExitCode::from(n)
}

/// First IPv4 address of `name`, like gethostbyname; loopback if it does not resolve.
fn resolve(name: &str) -> Ipv4Addr {
    if let Ok(ip) = name.parse::<Ipv4Addr>() {
        return ip;
    }
    (name, 0)
        .to_socket_addrs()
        .ok()
        .and_then(|mut it| {
            it.find_map(|a| match a.ip() {
                IpAddr::V4(v4) => Some(v4),
                IpAddr::V6(_) => None,
            })
        })
        .unwrap_or(Ipv4Addr::LOCALHOST)
}

fn hex_addr(sa: SocketAddr) -> String {
    match sa {
        SocketAddr::V4(v4) => format!("{:08x}:{:04x}", u32::from(*v4.ip()), v4.port()),
        SocketAddr::V6(_) => "00000000:0000".to_string(),
    }
}

fn main() -> ExitCode {
    let argv0 = std::env::args().next().unwrap_or_else(|| "pvmd".to_string());
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let args = match cli::parse(&argv, std::env::var("PVMDDEBUG").ok().as_deref()) {
        Command::Help => {
            println!("{}", cli::HELP);
            return ExitCode::SUCCESS;
        }
        Command::Version => {
            println!(
                "pvmd (pvm-rs) {} compatible with PVM {PVM_VER}",
                env!("CARGO_PKG_VERSION")
            );
            return ExitCode::SUCCESS;
        }
        Command::Run(a) => a,
    };

    if sys::getuid() == 0 && std::env::var_os("PVM_ALLOW_ROOT").is_none() {
        // Same words, stream and exit status as the legacy daemon.
        let mut out = std::io::stdout();
        let _ = out.write_all(ROOT_MESSAGE.as_bytes());
        let _ = out.flush();
        let mut l = Log::stderr(0);
        l.set_prefix_raw("pvmd pid-1");
        return bailout(&mut l, 0);
    }

    let pid = std::process::id();
    let uid = sys::getuid();
    let mut log = Log::stderr(pid);
    // Structured logging (docs/tracing.md): PVMD_LOG may add legacy debug bits.
    let setup = log::init(args.debug, |k| std::env::var(k).ok());
    let mut args = args;
    args.debug = setup.debug_mask;
    for w in &setup.warnings {
        log.line(&format!("main() {w}"));
    }
    let root = env_nonempty("PVM_ROOT").unwrap_or_else(|| "/usr/lib/pvm3".to_string());
    std::env::set_var("PVM_ROOT", &root);
    std::env::set_var("PVM_ARCH", ARCH);

    if args.debug != 0 {
        log.line(&format!("version {PVM_VER}"));
        log.line(&format!("ddpro {DDPROTOCOL} tdpro {TDPROTOCOL}"));
        log.line(&format!(
            "main() debug mask is 0x{:x} ({})",
            args.debug,
            debug_flags(args.debug)
        ));
    }
    let name = args.hostname.clone().unwrap_or_else(gethostname);

    if args.test {
        log.line(&format!(
            "version {PVM_VER} ddpro {DDPROTOCOL} tdpro {TDPROTOCOL} sdpro {SDPROTOCOL}"
        ));
        log.line(&log::ctime(SystemTime::now()));
        log.line(&format!("argv[0]=\"{argv0}\""));
        for (i, a) in args.positional.iter().enumerate() {
            log.line(&format!("argv[{}]=\"{a}\"", i + 1));
        }
        return ExitCode::SUCCESS;
    }
    if args.slave {
        return pvmd_rs::slave::main(args); // multi-host
    }

    let hostfile_path = match args.master_hostfile() {
        Ok(p) => p.map(str::to_string).or_else(|| env_nonempty("PVMHOSTFILE")),
        Err(usage) => {
            log.line(usage);
            return bailout(&mut log, 0);
        }
    };
    let mut hf = hostfile::Hostfile::default();
    if let Some(p) = &hostfile_path {
        match std::fs::read_to_string(p) {
            Ok(text) => {
                let (parsed, errors) = hostfile::parse(&text);
                for e in errors {
                    log.line(&format!("{p}: {e}"));
                }
                hf = parsed;
            }
            Err(e) => {
                log.line(&format!("master_config() can't open hostfile {p}: {e}"));
                return bailout(&mut log, 1);
            }
        }
    }
    // Our own line, else the `*` defaults (startup.md §2).
    let me = hf.find(&name).cloned().or_else(|| {
        (hf.defaults != hostfile::HostOpts::default()).then(|| hostfile::HostLine {
            name: name.clone(),
            no_start: true,
            overload: false,
            opts: hf.defaults.clone(),
            line: 0,
        })
    });
    let aname = me
        .as_ref()
        .and_then(|h| h.opts.aname.clone())
        .unwrap_or_else(|| name.clone());

    let tmp = PathBuf::from(env_nonempty("PVM_TMP").unwrap_or_else(|| "/tmp".to_string()));
    let mut names = TmpNames::new(&tmp, pid);
    let sock_path = names.next_name();
    let sock_str = sock_path.to_string_lossy().into_owned();

    let ip = resolve(&aname);
    let udp = match UdpSocket::bind((ip, 0)).or_else(|_| UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))) {
        Ok(u) => u,
        Err(e) => {
            log.line(&format!("mksocs() bind netsock: {e}"));
            return bailout(&mut log, 1);
        }
    };
    let udp_addr = udp.local_addr().unwrap_or_else(|_| SocketAddr::from((ip, 0)));

    let _ = std::fs::remove_file(&sock_path);
    let std_listener = match std::os::unix::net::UnixListener::bind(&sock_path) {
        Ok(l) => l,
        Err(e) => {
            log.line(&format!("mksocs() bind loclsock {sock_str}: {e}"));
            return bailout(&mut log, 1);
        }
    };
    let addr_file = files::address_file_path(&tmp, uid);
    let mut stale = None;
    match files::claim_address_file(&addr_file, &sock_str) {
        Ok(Claim::Created) => {}
        Ok(Claim::ReplacedStale(old)) => stale = Some(old),
        Ok(Claim::Running(old)) => {
            log.line(&format!(
                "mksocs() pvmd already running? ({} names {old}, which accepts connections)",
                addr_file.display()
            ));
            let _ = std::fs::remove_file(&sock_path);
            return bailout(&mut log, 1);
        }
        Err(e) => {
            log.line(&format!(
                "mksocs() can't write address file {}: {e}",
                addr_file.display()
            ));
            let _ = std::fs::remove_file(&sock_path);
            return bailout(&mut log, 1);
        }
    }
    let logmax = env_nonempty("PVMDLOGMAX")
        .map(|v| cli::pvmstrtoi(&v).max(0) as u64)
        .unwrap_or(log::DEFAULT_LOG_MAX);
    if let Err(e) = log.open_file(&files::log_file_path(&tmp, uid), logmax) {
        log.line(&format!("pvmsetlog() can't open log file: {e}"));
    }
    if let Some(old) = stale {
        log.line(&format!(
            "mksocs() replaced stale address file {} (it named {old}, where nothing listens)",
            addr_file.display()
        ));
    }
    std::env::set_var("PVMSOCK", &sock_str);
    let wd = me
        .as_ref()
        .and_then(|h| h.opts.wdir.clone())
        .or_else(|| env_nonempty("PVM_WD"))
        .or_else(|| env_nonempty("HOME"))
        .unwrap_or_else(|| "/".to_string());
    if let Err(e) = std::env::set_current_dir(&wd) {
        log.line(&format!("master_config() can't chdir to {wd}: {e}"));
    }

    let host = HostConfig {
        speed: me.as_ref().and_then(|h| h.opts.speed).unwrap_or(1000),
        ..HostConfig::master(&name, ARCH, &hex_addr(udp_addr))
    };

    sys::tune_malloc();
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            log.line(&format!("main() can't start runtime: {e}"));
            cleanup(&addr_file, &sock_str, &sock_path);
            return bailout(&mut log, 1);
        }
    };
    let guard = rt.enter();
    let listener = std_listener
        .set_nonblocking(true)
        .and_then(|()| tokio::net::UnixListener::from_std(std_listener));
    let (listener, signals) = match (listener, server::Signals::install()) {
        (Ok(l), Ok(s)) => (l, s),
        (Err(e), _) | (_, Err(e)) => {
            log.line(&format!("main() can't set up the local socket or signals: {e}"));
            cleanup(&addr_file, &sock_str, &sock_path);
            return bailout(&mut log, 1);
        }
    };
    start_metrics(&mut log);
    drop(guard);

    // The address line for pvm_start_pvmd(), then let go of the caller's stdio.
    {
        let mut out = std::io::stdout();
        let _ = writeln!(out, "{sock_str}");
        let _ = out.flush();
    }
    pvmd_rs::manual::capture(); // so=ms: the terminal or stdin, before they are let go
    if sys::detach_stdio().is_ok() {
        log.quiet_stderr();
    }
    sys::ignore_sighup();
    log.set_tid(host.pvmd_tid().bits());
    log.line(&format!("{name} ({udp_addr}) {ARCH} {PVM_VER}"));
    log.line(&format!("ready {}", log::ctime(SystemTime::now())));

    let mut daemon = Daemon::new(host, FsAuth::new(names), args.debug);
    // bx= of our hostfile line, else PVM_DEBUGGER, else $PVM_ROOT/lib/debugger; $VARs expanded.
    let debugger = me
        .as_ref()
        .and_then(|h| h.opts.bpath.clone())
        .or_else(|| std::env::var("PVM_DEBUGGER").ok())
        .unwrap_or_else(|| pvmd_rs::daemon::DEFAULT_DEBUGGER.to_string());
    if let Some(d) = pvmd_rs::launch::expand_epath(&debugger, |k| std::env::var(k).ok()).first() {
        daemon.set_debugger(d.to_string_lossy().into_owned());
    }
    daemon.start_probe(); // migrate.rs hook: CRIU probe off the event loop
    let epath_spec = me
        .as_ref()
        .and_then(|h| h.opts.epath.clone())
        .or_else(|| env_nonempty("PVM_PATH"))
        .unwrap_or_else(|| pvmd_rs::launch::DEFAULT_EPATH.to_string());
    let epath = pvmd_rs::launch::expand_epath(&epath_spec, |k| std::env::var(k).ok());
    // ---- multi-host: a master with a real address can add hosts ----
    let net_udp = match udp_addr {
        SocketAddr::V4(a) if !a.ip().is_loopback() => {
            daemon.enable_net(pvmd_rs::daemon::netd::NetConfig::master(daemon.host(), a));
            daemon.set_hostfile(hf.clone(), pvmd_rs::daemon::master::boot_lines(&hf, &name));
            let _g = rt.enter();
            udp.try_clone()
                .and_then(|u| u.set_nonblocking(true).map(|()| u))
                .and_then(tokio::net::UdpSocket::from_std)
                .ok()
        }
        _ => None,
    };
    let stop = if net_udp.is_some() {
        rt.block_on(server::serve_net(
            listener,
            signals,
            epath,
            &mut daemon,
            &mut log,
            net_udp,
        ))
    } else {
        rt.block_on(server::serve(listener, signals, epath, &mut daemon, &mut log))
    };
    // ---- end multi-host ----
    drop(udp);
    let code = match stop {
        Stop::Signal(n) => {
            log.line(&format!("catch() caught signal {n}"));
            n as u8
        }
        Stop::Halt => 0,
        Stop::ListenerFailed => 1,
    };
    // Same order as the legacy bail-out: log, address file, local tasks, peers, socket.
    log.line(&format!("pvmbailout({code})"));
    remove_address_file(&addr_file, &sock_str);
    for pid in daemon.task_pids() {
        sys::kill(pid, libc::SIGTERM);
    }
    if args.debug != 0 {
        log.line("sending FIN|ACK to all pvmds");
    }
    let _ = std::fs::remove_file(&sock_path);
    ExitCode::from(code)
}

/// `PVMD_METRICS=127.0.0.1:PORT`: the Prometheus endpoint (metrics.rs); a refused or unusable
/// address is logged (on stderr too, stdio is not detached yet) and the daemon goes on.
fn start_metrics(log: &mut Log) {
    if let Some(spec) = env_nonempty("PVMD_METRICS") {
        match pvmd_rs::metrics::start(&spec) {
            Ok(a) => log.line(&format!("main() metrics on http://{a}/metrics")),
            Err(e) => log.line(&format!("main() {e}")),
        }
    }
}

fn remove_address_file(addr_file: &Path, sock_str: &str) {
    if std::fs::read(addr_file)
        .map(|c| c == sock_str.as_bytes())
        .unwrap_or(false)
    {
        let _ = std::fs::remove_file(addr_file);
    }
}

/// Removes the address file (only if it still names our socket) and the socket.
fn cleanup(addr_file: &Path, sock_str: &str, sock_path: &Path) {
    if std::fs::read(addr_file)
        .map(|c| c == sock_str.as_bytes())
        .unwrap_or(false)
    {
        let _ = std::fs::remove_file(addr_file);
    }
    let _ = std::fs::remove_file(sock_path);
}
