//! Slave start-up (startup.md §4.5, pvmd.c: slave_config()): the five positional arguments
//! from the master, sockets, the `ddpro<…>` line on stdout, one byte (or end of file) from
//! stdin, into the background, then the same serving loop as a master with the datagram socket
//! attached.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use crate::cli::{self, Args};
use crate::daemon::netd::{NetConfig, MTU};
use crate::daemon::{Daemon, HostConfig};
use crate::files::{self, Claim, FsAuth, TmpNames};
use crate::hosts::{ddpro_line, hex_addr, Host, HostTable, SlaveArgs};
use crate::log::{self, Log};
use crate::server::{self, Stop};
use crate::{sys, ARCH, PVM_VER};

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn bailout(log: &mut Log, n: u8) -> ExitCode {
    log.line(&format!("pvmbailout({n})"));
    ExitCode::from(n)
}

/// Runs a slave pvmd; `args.slave` is set.
pub fn main(args: Args) -> ExitCode {
    let pid = std::process::id();
    let uid = sys::getuid();
    let mut log = Log::stderr(pid);
    let setup = log::init(args.debug, |k| std::env::var(k).ok()); // docs/tracing.md
    let mut args = args;
    args.debug = setup.debug_mask;
    for w in &setup.warnings {
        log.line(&format!("main() {w}"));
    }
    let words: Vec<&str> = args
        .positional
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let no_fork = args.positional.iter().any(|a| a == "-f");
    let Some(sa) = SlaveArgs::parse(&words) else {
        log.line("slave_config: bad args");
        return bailout(&mut log, 0);
    };
    let root = env_nonempty("PVM_ROOT").unwrap_or_else(|| "/usr/lib/pvm3".to_string());
    std::env::set_var("PVM_ROOT", &root);
    std::env::set_var("PVM_ARCH", ARCH);
    let name = args.hostname.clone().unwrap_or_else(|| sa.my_addr.ip().to_string());

    let tmp = PathBuf::from(env_nonempty("PVM_TMP").unwrap_or_else(|| "/tmp".to_string()));
    let mut names = TmpNames::new(&tmp, pid);
    let sock_path = names.next_name();
    let sock_str = sock_path.to_string_lossy().into_owned();
    let udp = match UdpSocket::bind(SocketAddrV4::new(*sa.my_addr.ip(), 0)) {
        Ok(u) => u,
        Err(e) => {
            log.line(&format!("mksocs() bind netsock {}: {e}", sa.my_addr.ip()));
            println!("PvmCantStart");
            return bailout(&mut log, 1);
        }
    };
    let udp_addr = match udp.local_addr() {
        Ok(SocketAddr::V4(a)) => a,
        _ => {
            println!("PvmCantStart");
            return bailout(&mut log, 1);
        }
    };
    let _ = std::fs::remove_file(&sock_path);
    let std_listener = match std::os::unix::net::UnixListener::bind(&sock_path) {
        Ok(l) => l,
        Err(e) => {
            log.line(&format!("mksocs() bind loclsock {sock_str}: {e}"));
            println!("PvmCantStart");
            return bailout(&mut log, 1);
        }
    };
    let addr_file = files::address_file_path(&tmp, uid);
    match files::claim_address_file(&addr_file, &sock_str) {
        Ok(Claim::Created) | Ok(Claim::ReplacedStale(_)) => {}
        Ok(Claim::Running(_)) | Err(_) => {
            let _ = std::fs::remove_file(&sock_path);
            println!("PvmDupHost");
            let _ = std::io::stdout().flush();
            return bailout(&mut log, 1);
        }
    }

    // The line the master (pvmd' or hoster) waits for.
    {
        let mut out = std::io::stdout();
        let _ = writeln!(
            out,
            "{}",
            ddpro_line(ARCH, udp_addr, MTU as i32, pvm_proto::codes::DSIG_X86_64)
        );
        let _ = out.flush();
    }
    if !args.manual {
        // Returns when the starter closes the pipe (or sends its byte).
        let mut b = [0u8; 1];
        let _ = std::io::stdin().read(&mut b);
    }
    if !no_fork {
        match sys::fork_detach() {
            Ok(true) => return ExitCode::SUCCESS, // the parent: lets the rsh finish
            Ok(false) => {}
            Err(e) => log.line(&format!("slave_config() fork: {e}")),
        }
    }
    let pid = std::process::id();
    log = Log::stderr(pid);
    let logmax = env_nonempty("PVMDLOGMAX")
        .map(|v| cli::pvmstrtoi(&v).max(0) as u64)
        .unwrap_or(log::DEFAULT_LOG_MAX);
    if let Err(e) = log.open_file(&files::log_file_path(&tmp, uid), logmax) {
        log.line(&format!("pvmsetlog() can't open log file: {e}"));
    }
    if sys::detach_stdio().is_ok() {
        log.quiet_stderr();
    }
    sys::ignore_sighup();
    std::env::set_var("PVMSOCK", &sock_str);
    let wd = env_nonempty("PVM_WD")
        .or_else(|| env_nonempty("HOME"))
        .unwrap_or_else(|| "/".to_string());
    let _ = std::env::set_current_dir(&wd);
    log.set_tid(pvm_proto::Tid::pvmd(sa.my_index).bits());
    log.line(&format!("{name} ({udp_addr}) {ARCH} {PVM_VER}"));
    log.line(&format!("ready {}", log::ctime(SystemTime::now())));
    if args.debug & 0x8 != 0 {
        log.line(&format!(
            "slave_config() master {} at {}, we are {} at {}",
            sa.master_index, sa.master_addr, sa.my_index, udp_addr
        ));
    }

    let host = HostConfig {
        index: sa.my_index,
        ..HostConfig::master(&name, ARCH, &hex_addr(udp_addr))
    };
    let mut table = HostTable {
        serial: 0,
        master: sa.master_index,
        console: sa.master_index,
        hosts: BTreeMap::new(),
    };
    table.hosts.insert(
        sa.master_index,
        Host {
            index: sa.master_index,
            name: sa.master_addr.ip().to_string(),
            arch: ARCH.to_string(),
            addr: sa.master_addr,
            mtu: sa.master_mtu,
            speed: 1000,
            dsig: pvm_proto::codes::DSIG_X86_64,
        },
    );
    table.hosts.insert(
        sa.my_index,
        Host {
            index: sa.my_index,
            name: name.clone(),
            arch: ARCH.to_string(),
            addr: udp_addr,
            mtu: MTU as i32,
            speed: 1000,
            dsig: pvm_proto::codes::DSIG_X86_64,
        },
    );
    let mut daemon = Daemon::new(host, FsAuth::new(names), args.debug);
    daemon.start_probe(); // migrate.rs hook: CRIU probe off the event loop
    daemon.enable_net(NetConfig {
        addr: udp_addr,
        table,
        mtu: MTU,
    });
    let epath_spec = env_nonempty("PVM_PATH").unwrap_or_else(|| crate::launch::DEFAULT_EPATH.to_string());
    let epath = crate::launch::expand_epath(&epath_spec, |k| std::env::var(k).ok());

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
    let udp = udp
        .set_nonblocking(true)
        .and_then(|()| tokio::net::UdpSocket::from_std(udp));
    let (listener, udp, signals) = match (listener, udp, server::Signals::install()) {
        (Ok(l), Ok(u), Ok(s)) => (l, u, s),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            log.line(&format!("main() can't set up sockets or signals: {e}"));
            cleanup(&addr_file, &sock_str, &sock_path);
            return bailout(&mut log, 1);
        }
    };
    if let Some(spec) = env_nonempty("PVMD_METRICS") {
        // metrics.rs: loopback of this host (of its network namespace).
        match crate::metrics::start(&spec) {
            Ok(a) => log.line(&format!("main() metrics on http://{a}/metrics")),
            Err(e) => log.line(&format!("main() {e}")),
        }
    }
    drop(guard);
    let stop = rt.block_on(server::serve_net(
        listener,
        signals,
        epath,
        &mut daemon,
        &mut log,
        Some(udp),
    ));
    let code = match stop {
        Stop::Signal(n) => {
            log.line(&format!("catch() caught signal {n}"));
            n as u8
        }
        Stop::Halt => 0,
        Stop::ListenerFailed => 1,
    };
    log.line(&format!("pvmbailout({code})"));
    for pid in daemon.task_pids() {
        sys::kill(pid, libc::SIGTERM);
    }
    cleanup(&addr_file, &sock_str, &sock_path);
    ExitCode::from(code)
}

/// Removes the address file (only if it still names our socket) and the socket.
pub fn cleanup(addr_file: &Path, sock_str: &str, sock_path: &Path) {
    if std::fs::read(addr_file)
        .map(|c| c == sock_str.as_bytes())
        .unwrap_or(false)
    {
        let _ = std::fs::remove_file(addr_file);
    }
    let _ = std::fs::remove_file(sock_path);
}
