//! The tokio shell around [`Daemon`]: accepts connections, runs one reader and one writer per
//! connection, feeds fragments to the daemon and carries out what it decides.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use tokio::net::UnixListener;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::conn::{ConnError, Frag, FragReader, ReadEvent, BIG};
use crate::daemon::{AuthFiles, ConnId, Daemon, Out, MAX_FRAG_UNCONNECTED};
use crate::log::Log;
use pvm_proto::frag::StreamFragHeader;

mod arelay; // large messages by descriptor through the daemon's arena
mod coalesce; // relayed fragments of one message written as one (relay.rs)
mod outlet; // a connection's output: direct writes, a writer task only once one must wait
mod relay; // the local relay fast path (reader -> destination socket)
mod spin; // spin-then-block after events (relay.rs, serve_net)
mod splice; // big relayed fragments through a pipe (relay.rs)
mod tasksock;
mod xstream; // pvmd-rs <-> pvmd-rs stream transport (daemon/stream.rs) // task sockets registered for reading only
pub use arelay::offered as arena_relay_offered;
use outlet::Outlet;
use tasksock::{TaskWrite, WriteReg};

enum Event {
    /// Whole fragments read from a connection by one read call.
    Frags(ConnId, Vec<Frag>),
    /// A big fragment starts / continues (passed on while it arrives).
    BigStart(ConnId, StreamFragHeader, Vec<u8>),
    BigChunk(ConnId, Vec<u8>, bool),
    Ended(ConnId, Option<ConnError>),
}

use crate::launch::{ProcLauncher, TaskEvent};

/// A relayed fragment: its rewritten header and its payload.
type RelayFrag = ([u8; 16], Vec<u8>);

enum WriteCmd {
    Data(Vec<u8>),
    /// A buffer from an offset on: what a direct write left of a `Data` (not copied again).
    Tail(Vec<u8>, usize),
    /// Relayed fragments read by one read call, for one destination: headers and payloads
    /// kept apart so payloads are not copied, written with one `writev` where the socket takes
    /// them (one system call per read instead of one per 4 KB fragment of the legacy library).
    Frags(Vec<RelayFrag>),
    /// A big relayed fragment written while it arrives: header, payload so far, the rest as it
    /// comes, and the payload length. Nothing else is written to the connection in between.
    Stream([u8; 16], Vec<u8>, mpsc::UnboundedReceiver<Vec<u8>>, usize),
    /// splice.rs: a source's reader is writing a big fragment to this connection by itself;
    /// nothing else is written until it ends the claim (then the end's bytes first).
    Wait(tokio::sync::oneshot::Receiver<splice::WaitEnd>),
}

/// A big fragment in progress on a connection (see [`ReadEvent::BigStart`]).
enum Streaming {
    /// Relayed: pieces go to the destination's writer.
    Relay(mpsc::UnboundedSender<Vec<u8>>),
    /// For the daemon (or not a fast-path relay): assembled, then handled as a whole.
    Collect(StreamFragHeader, Vec<u8>),
    /// For a task of another host: passed on in pieces while it arrives (xstream.rs).
    Pieces(xstream::Pieces),
}

impl WriteCmd {
    fn len(&self) -> usize {
        match self {
            WriteCmd::Data(b) => b.len(),
            WriteCmd::Tail(b, at) => b.len().saturating_sub(*at),
            WriteCmd::Frags(v) => v.iter().map(|(h, p)| h.len() + p.len()).sum(),
            WriteCmd::Stream(h, _, _, total) => h.len() + total,
            // The claim's own unit in `queued` (splice.rs), so nobody writes directly meanwhile.
            WriteCmd::Wait(_) => 1,
        }
    }
}

/// `write_all` on a write half shared with the main loop (which writes directly when nothing
/// is queued); waits for room through the writer's registration `reg` (tasksock.rs).
async fn write_shared(wr: &TaskWrite, reg: &mut WriteReg, mut buf: &[u8]) -> std::io::Result<()> {
    while !buf.is_empty() {
        match wr.try_write(buf) {
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => wr.writable(reg).await?,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Writes everything queued for one connection, gathering what is queued at the moment into
/// few system calls: small pieces are coalesced into one buffer, big payloads written from
/// where they are. Returns when the queue closes (outlet.rs) or on a write error.
async fn write_loop(conn: Arc<Outlet>, mut rx: mpsc::UnboundedReceiver<WriteCmd>) {
    let wr = conn.wr();
    let mut out: Vec<u8> = Vec::new();
    let mut reg: WriteReg = None;
    'outer: while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        let mut done = 0usize;
        while let Some(cmd) = next.take() {
            done += cmd.len();
            match cmd {
                WriteCmd::Data(b) if b.len() <= BIG => out.extend_from_slice(&b),
                WriteCmd::Data(b) | WriteCmd::Tail(b, 0) => {
                    // A big buffer (a frame from a stream, a message) is written from where
                    // it is, after what was gathered before it.
                    if write_shared(wr, &mut reg, &out).await.is_err() || write_shared(wr, &mut reg, &b).await.is_err()
                    {
                        break 'outer;
                    }
                    out.clear();
                }
                WriteCmd::Tail(b, at) => {
                    let rest = b.get(at..).unwrap_or(&[]);
                    if write_shared(wr, &mut reg, &out).await.is_err()
                        || write_shared(wr, &mut reg, rest).await.is_err()
                    {
                        break 'outer;
                    }
                    out.clear();
                }
                WriteCmd::Frags(v) => {
                    for (h, p) in v {
                        out.extend_from_slice(&h);
                        if p.len() <= BIG {
                            out.extend_from_slice(&p);
                            continue;
                        }
                        // A big payload is written from where it is.
                        if write_shared(wr, &mut reg, &out).await.is_err()
                            || write_shared(wr, &mut reg, &p).await.is_err()
                        {
                            break 'outer;
                        }
                        out.clear();
                    }
                }
                WriteCmd::Stream(h, first, mut more, total) => {
                    out.extend_from_slice(&h);
                    if write_shared(wr, &mut reg, &out).await.is_err()
                        || write_shared(wr, &mut reg, &first).await.is_err()
                    {
                        break 'outer;
                    }
                    out.clear();
                    let mut written = first.len();
                    while written < total {
                        let Some(c) = more.recv().await else { break };
                        if write_shared(wr, &mut reg, &c).await.is_err() {
                            break 'outer;
                        }
                        written += c.len();
                    }
                    // The sender went away inside the fragment: pad it so this stream stays
                    // in step (the message stays incomplete, as it is).
                    while written < total {
                        let n = (total - written).min(64 << 10);
                        if write_shared(wr, &mut reg, &vec![0u8; n]).await.is_err() {
                            break 'outer;
                        }
                        written += n;
                    }
                }
                WriteCmd::Wait(end) => {
                    if write_shared(wr, &mut reg, &out).await.is_err() {
                        break 'outer;
                    }
                    out.clear();
                    if let Ok(end) = end.await {
                        done += end.data.len() + end.pad;
                        if write_shared(wr, &mut reg, &end.data).await.is_err() {
                            break 'outer;
                        }
                        let mut pad = end.pad;
                        while pad > 0 {
                            let n = pad.min(64 << 10);
                            if write_shared(wr, &mut reg, &vec![0u8; n]).await.is_err() {
                                break 'outer;
                            }
                            pad -= n;
                        }
                    }
                }
            }
            if out.len() >= 256 << 10 {
                break;
            }
            next = rx.try_recv().ok();
        }
        if !out.is_empty() {
            if write_shared(wr, &mut reg, &out).await.is_err() {
                break;
            }
            out.clear();
        }
        if out.capacity() > 64 << 10 {
            out = Vec::new();
        }
        conn.queued().fetch_sub(done, Ordering::Relaxed);
        if rx.is_empty() {
            reg = None; // caught up: no more wake-ups when the task reads (tasksock.rs)
        }
    }
    // Dropping the last handle shuts the write direction down.
}

struct ConnHandle {
    /// Shared with the relaying readers and the writer task (outlet.rs).
    out: Arc<Outlet>,
    reader: JoinHandle<()>,
    limit: Arc<AtomicU32>,
    /// Events of this connection's reader not yet handled (relay.rs keeps order with it).
    pending: relay::Pending,
    /// Whether the reader reads ([`Gate`]).
    gate: tokio::sync::watch::Sender<Gate>,
}

/// What a connection's reader may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    Open,
    /// Not read (backlog.rs: too much of its task's output waits for other hosts).
    Paused,
    /// Its process exited: read to the end, never paused again (`Out::Drain`).
    Draining,
}

impl Drop for ConnHandle {
    /// The writer (if any) writes what is queued and ends (outlet.rs: it holds the outlet).
    fn drop(&mut self) {
        self.out.close();
    }
}

/// A task that lets this much output pile up is not reading; it is disconnected (treated as
/// exited) rather than letting the daemon's memory grow without bound.
pub const MAX_QUEUED: usize = 64 << 20;

/// Why the main loop stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Signal(i32),
    /// A task asked the machine to halt.
    Halt,
    ListenerFailed,
}

/// The signals that stop the daemon. Installed before the address line is printed, so a
/// SIGTERM sent as soon as a starter knows the daemon still cleans up (as the legacy does).
pub struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    /// Must be called inside the runtime's context.
    pub fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }
}

/// Serves until SIGTERM/SIGINT (or a fatal listener error). Connections are dropped on return.
pub async fn serve<A: AuthFiles>(
    listener: UnixListener,
    signals: Signals,
    epath: Vec<std::path::PathBuf>,
    daemon: &mut Daemon<A>,
    log: &mut Log,
) -> Stop {
    serve_net(listener, signals, epath, daemon, log, None).await
}

// ---- multi-host (h-multi) ----
async fn udp_recv(
    udp: &Option<tokio::net::UdpSocket>,
    buf: &mut [u8],
) -> std::io::Result<(usize, std::net::SocketAddr)> {
    match udp {
        Some(u) => u.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

/// hardening: resolves when ICMP errors are queued on the pvmd <-> pvmd socket. A queued error
/// raises only EPOLLERR, which wakes no reader (tokio maps it to `Ready::ERROR`), and the next
/// send takes the pending error (it fails, is retried, and the entry stays queued unread).
/// Without this arm the queue was read only when a receive happened to be tried while an error
/// was pending, so whether a killed peer was declared dead depended on timing (a soak in CI
/// waited 20 s on a host that was never deleted).
async fn udp_error_ready(udp: &Option<tokio::net::UdpSocket>) {
    match udp {
        Some(u) => {
            let _ = u.ready(tokio::io::Interest::ERROR).await;
        }
        None => std::future::pending().await,
    }
}

/// Send (and receive) buffer asked for on task connections.
const TASK_SOCKET_BUFFER: i32 = 2 << 20;
/// Receive (and send) buffer asked for on the pvmd <-> pvmd socket.
const UDP_SOCKET_BUFFER: i32 = 4 << 20;
/// Most datagrams taken from the socket per wake-up before the loop flushes and polls again.
const UDP_DRAIN: usize = 64;

/// Takes up to [`UDP_DRAIN`] more datagrams that are already queued; true if the daemon
/// decided to halt.
fn udp_drain<A: AuthFiles>(
    udp: &Option<tokio::net::UdpSocket>,
    buf: &mut [u8],
    daemon: &mut Daemon<A>,
    conns: &mut HashMap<ConnId, ConnHandle>,
    log: &mut Log,
) -> bool {
    let Some(u) = udp else { return false };
    for _ in 0..UDP_DRAIN {
        match u.try_recv_from(buf) {
            Ok((n, std::net::SocketAddr::V4(from))) => {
                let outs = daemon.net_datagram(from, &buf[..n]);
                if apply(outs, daemon, conns, log) {
                    return true;
                }
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            // An ICMP error reported on receive: its queue, as the select arm does.
            Err(_) => return udp_errors(u, daemon, conns, log),
        }
    }
    false
}

/// Puts what the datagram endpoint has to send on the socket.
async fn udp_flush<A: AuthFiles>(udp: &Option<tokio::net::UdpSocket>, daemon: &mut Daemon<A>, log: &mut Log) {
    let Some(u) = udp else { return };
    while let Some(t) = daemon.net_transmit() {
        crate::metrics::DATAGRAMS_OUT.inc(); // metrics.rs
        if let Err(e) = u.send_to(&t.bytes, t.dst).await {
            if e.raw_os_error() == Some(libc::ECONNREFUSED) {
                // hardening: an ICMP error reported on send; retry this datagram once.
                let _ = u.send_to(&t.bytes, t.dst).await;
                continue;
            }
            log.line(&format!("netoutput() sendto {}: {e}", t.dst));
        }
    }
    crate::metrics::sync_link(daemon.net_stats()); // metrics.rs
}

/// hardening: drains the ICMP errors queued on the socket (IP_RECVERR) into the daemon.
fn udp_errors<A: AuthFiles>(
    udp: &tokio::net::UdpSocket,
    daemon: &mut Daemon<A>,
    conns: &mut HashMap<ConnId, ConnHandle>,
    log: &mut Log,
) -> bool {
    use std::os::fd::AsRawFd;
    // Readiness is cleared before the queue is read: an error queued after the reads wakes
    // udp_error_ready again instead of being lost.
    let _ = udp.try_io(tokio::io::Interest::ERROR, || {
        Err::<(), _>(std::io::ErrorKind::WouldBlock.into())
    });
    let mut halt = false;
    for _ in 0..256 {
        let Some((to, refused)) = crate::sys::read_errqueue(udp.as_raw_fd()) else {
            break;
        };
        if refused {
            let outs = daemon.net_unreachable(to);
            halt |= apply(outs, daemon, conns, log);
        }
    }
    halt
}
/// Runs one slave start command (the master plays pvmd'): the first `ddpro<…>` (or `Pvm…`
/// error) line of its stdout, within 60 s (RSHTIMEOUT); stdin is closed after it so the slave
/// goes into the background.
fn run_start(s: crate::daemon::master::SlaveStart, tx: mpsc::UnboundedSender<(u32, Result<String, String>)>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    tokio::spawn(async move {
        let Some((prog, args)) = s.argv.split_first() else {
            return;
        };
        let child = tokio::process::Command::new(prog)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(false)
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => {
                let _ = tx.send((s.index, Err(format!("can't run {prog}: {e}"))));
                return;
            }
        };
        let mut stdin = child.stdin.take();
        if let (Some(i), Some(text)) = (stdin.as_mut(), s.stdin.as_ref()) {
            let _ = i.write_all(text.as_bytes()).await;
        }
        let res = match child.stdout.take() {
            None => Err("no stdout".to_string()),
            Some(o) => {
                let mut lines = tokio::io::BufReader::new(o).lines();
                let find = async {
                    loop {
                        match lines.next_line().await {
                            Ok(Some(l)) if l.starts_with("ddpro") || l.starts_with("Pvm") => return Ok(l),
                            Ok(Some(_)) => continue,
                            _ => return Err("start command ended without a ddpro line".to_string()),
                        }
                    }
                };
                match tokio::time::timeout(std::time::Duration::from_secs(60), find).await {
                    Ok(r) => r,
                    Err(_) => Err("timed out waiting for the slave".to_string()),
                }
            }
        };
        drop(stdin);
        let _ = tx.send((s.index, res));
        let _ = child.wait().await;
    });
}
// ---- end multi-host ----

/// [`serve`] with the pvmd <-> pvmd socket of a multi-host daemon.
pub async fn serve_net<A: AuthFiles>(
    listener: UnixListener,
    signals: Signals,
    epath: Vec<std::path::PathBuf>,
    daemon: &mut Daemon<A>,
    log: &mut Log,
    udp: Option<tokio::net::UdpSocket>,
) -> Stop {
    if let Some(u) = &udp {
        use std::os::fd::AsRawFd;
        let _ = crate::sys::set_recverr(u.as_raw_fd()); // hardening: see guard::Unreachable
                                                        // A window of datagrams in flight (DM_XCAPS) overruns the default 208 KB receive
                                                        // buffer: every drop then costs a retransmission timeout.
        let _ = crate::sys::set_socket_buffers(u.as_raw_fd(), UDP_SOCKET_BUFFER);
        // hardening: the optional datagram key (dgauth.rs).
        match crate::dgauth::machine_key() {
            Ok(Some(k)) => {
                log.line(&format!("netinit() datagram key {:08x} loaded", k.id));
                daemon.set_datagram_key(Some(k.clone()));
            }
            Ok(None) => {}
            Err(e) => log.line(&format!("netinit() datagram key not used: {e}")),
        }
    }
    let mut udp_buf = vec![0u8; 65536]; // multi-host
    let (mut xs, mut xs_rx) = xstream::XShell::new(&udp, daemon, log); // stream transport
    let (start_tx, mut start_rx) = mpsc::unbounded_channel::<(u32, Result<String, String>)>(); // multi-host
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel::<Event>();
    let (task_tx, mut task_rx) = mpsc::unbounded_channel::<TaskEvent>();
    daemon.set_launcher(Box::new(ProcLauncher::new(epath, task_tx)));
    // mig_move.rs: results of CRIU dumps, restores and image streams run on threads.
    let mut mig_rx = daemon.take_mig_events().unwrap_or_else(|| mpsc::unbounded_channel().1);
    let mut conns: HashMap<ConnId, ConnHandle> = HashMap::new();
    // Our children are tasks that exec at once: a fork must not copy the arena (arelay.rs).
    pvm_arena::children_exec();
    let mut arena_relay = arelay::ArenaRelay::default();
    let mut streams: HashMap<ConnId, Streaming> = HashMap::new();
    let mut next_id: ConnId = 1;
    let routes: relay::SharedRoutes = Default::default();
    // spin.rs: poll a little longer after each event before sleeping.
    match pvm_proto::spin::window(std::env::var("PVMD_SPIN_US").ok().as_deref()) {
        Ok(Some(w)) => drop(tokio::spawn(spin::spinner(w))),
        Ok(None) => log.line("spin-then-block off (PVMD_SPIN_US=0)"),
        Err(e) => log.line(&format!("PVMD_SPIN_US: {e}")),
    }
    // hardening: connections that must have finished the connect handshake by then, in
    // order (one timer for all, not one task per connection).
    let handshake_time = crate::guard::handshake_timeout();
    let mut expiries: std::collections::VecDeque<(tokio::time::Instant, ConnId)> = Default::default();
    let mut expiry = std::pin::pin!(tokio::time::sleep(handshake_time));
    let Signals {
        term: mut sigterm,
        int: mut sigint,
    } = signals;
    let stop = loop {
        // backlog.rs: what waited for room in a peer's queue (before the stream and datagram
        // flushes below, which put it on the wire); pauses and resumes of senders.
        let held = daemon.net_backlog();
        if !held.is_empty() && apply(held, daemon, &mut conns, log) {
            break Stop::Halt;
        }
        spin::touch(); // spin.rs: an event was handled
        if xstream::flush(&mut xs, daemon, &mut conns, log) {
            break Stop::Halt; // stream transport
        }
        udp_flush(&udp, daemon, log).await; // multi-host
        let (starts, outs) = daemon.rm_slave_starts(); // rm.rs: a registered hoster starts them
        if !starts.is_empty() || !outs.is_empty() {
            lock(&routes).clear(); // relay.rs
        }
        if apply(outs, daemon, &mut conns, log) {
            break Stop::Halt;
        }
        for st in starts {
            if st.manual.is_some() {
                crate::manual::start(st, start_tx.clone());
            } else {
                run_start(st, start_tx.clone());
            }
        }
        udp_flush(&udp, daemon, log).await;
        crate::metrics::sync(|| (daemon.task_count(), daemon.host_table().map_or(1, |t| t.hosts.len()))); // metrics.rs
        let net_wait = daemon.net_deadline().unwrap_or(std::time::Duration::from_secs(3600));
        let rm_wait = daemon.rm_deadline(); // resource-manager waits (daemon/rm.rs)
        let net_wait = rm_wait.map_or(net_wait, |r| r.min(net_wait));
        let lone_wait = daemon.lone_deadline(); // daemon/migrate.rs: limits of a pvmd without network
        let net_wait = lone_wait.map_or(net_wait, |l| l.min(net_wait));
        // relay.rs: set by an event that only relayed; anything else may have changed what
        // relay_target answers, and empties the route table after it is handled.
        let mut only_relayed = false;
        // arelay.rs: when kept blocks go back to the kernel (None, the usual case: no timer).
        let trim_due = arena_relay.trim_due();
        tokio::select! {
            // ---- multi-host arms ----
            r = udp_recv(&udp, &mut udp_buf) => {
                if let Ok((n, std::net::SocketAddr::V4(from))) = r {
                    crate::metrics::DATAGRAMS_IN.inc(); // metrics.rs
                    let outs = daemon.net_datagram(from, &udp_buf[..n]);
                    if apply(outs, daemon, &mut conns, log) {
                        break Stop::Halt;
                    }
                    // What else has arrived is taken now, before the acknowledgements and
                    // replies it causes are flushed at the top of the loop.
                    if udp_drain(&udp, &mut udp_buf, daemon, &mut conns, log) {
                        break Stop::Halt;
                    }
                } else if let (Err(_), Some(u)) = (&r, &udp) {
                    if udp_errors(u, daemon, &mut conns, log) {
                        break Stop::Halt;
                    }
                }
            }
            () = udp_error_ready(&udp) => {
                if let Some(u) = &udp {
                    if udp_errors(u, daemon, &mut conns, log) {
                        break Stop::Halt;
                    }
                }
            }
            _ = tokio::time::sleep(net_wait), if udp.is_some() || rm_wait.is_some() || lone_wait.is_some() => {
                let mut outs = if udp.is_some() { daemon.net_timeout() } else { daemon.lone_timers() };
                outs.extend(daemon.rm_timeout());
                if apply(outs, daemon, &mut conns, log) {
                    break Stop::Halt;
                }
            }
            acc = xs.accept() => xs.accepted(acc, log), // stream transport
            Some(ev) = xs_rx.recv() => {
                if xstream::event(ev, &mut xs, &mut xs_rx, daemon, &mut conns, log) {
                    break Stop::Halt;
                }
            }
            Some((index, res)) = start_rx.recv() => {
                let outs = daemon.slave_started(index, res);
                if apply(outs, daemon, &mut conns, log) {
                    break Stop::Halt;
                }
            }
            // ---- end multi-host arms ----
            _ = sigterm.recv() => break Stop::Signal(libc::SIGTERM),
            _ = sigint.recv() => break Stop::Signal(libc::SIGINT),
            // arelay.rs: blocks kept for reuse go back to the kernel once idle.
            () = async { if let Some(due) = trim_due { tokio::time::sleep_until(due).await } }, if trim_due.is_some() => {
                arena_relay.trim();
            }
            () = &mut expiry, if !expiries.is_empty() => {
                let now = tokio::time::Instant::now();
                let mut outs = Vec::new();
                while let Some(&(due, id)) = expiries.front() {
                    if due > now {
                        expiry.as_mut().reset(due);
                        break;
                    }
                    expiries.pop_front();
                    // Still at the pre-connect fragment limit: TM_CONN2 never completed.
                    if conns.get(&id).is_some_and(|c| c.limit.load(Ordering::Relaxed) == MAX_FRAG_UNCONNECTED) {
                        outs.push(Out::Log(format!("loclinput() connection {id}: no connect handshake in time; closing")));
                        outs.push(Out::Close(id));
                    }
                }
                if apply(outs, daemon, &mut conns, log) {
                    break Stop::Halt;
                }
            }
            acc = listener.accept() => match acc {
                Ok((stream, _)) => {
                    // hardening: only tasks of our own user may enrol, whatever the socket's mode.
                    if let Some(why) = crate::guard::foreign_peer(&stream) {
                        log.line(&format!("loclconn() refused connection: {why}"));
                        drop(stream);
                        continue;
                    }
                    let peer_pid = stream.peer_cred().ok().and_then(|c| c.pid());
                    {
                        // Room for a large message on its way to the task, so the relay
                        // writes it in few calls (a limit, not an allocation: idle
                        // connections cost nothing more).
                        use std::os::fd::AsRawFd;
                        let _ = crate::sys::set_socket_buffers(stream.as_raw_fd(), TASK_SOCKET_BUFFER);
                    }
                    let id = next_id;
                    next_id += 1;
                    let (rd, wr) = match tasksock::split(stream) {
                        Ok(halves) => halves,
                        Err(e) => {
                            log.line(&format!("loclconn() can't register connection: {e}"));
                            continue;
                        }
                    };
                    let limit = Arc::new(AtomicU32::new(MAX_FRAG_UNCONNECTED));
                    let out = Outlet::new(wr);
                    let tx = ev_tx.clone();
                    let lim = limit.clone();
                    let pending = relay::Pending::default();
                    let (pend, rts) = (pending.clone(), routes.clone());
                    let (gate, mut gated) = tokio::sync::watch::channel(Gate::Open);
                    // hardening: a client must finish the connect handshake in time (guard.rs).
                    let due = tokio::time::Instant::now() + handshake_time;
                    if expiries.is_empty() {
                        expiry.as_mut().reset(due);
                    }
                    expiries.push_back((due, id));
                    let reader = tokio::spawn(async move {
                        let mut r = FragReader::new(rd, lim);
                        loop {
                            // backlog.rs: paused while this task has too much waiting for
                            // other hosts; it blocks in its own writes meanwhile.
                            if *gated.borrow() == Gate::Paused
                                && gated.wait_for(|g| *g != Gate::Paused).await.is_err()
                            {
                                return;
                            }
                            // relay.rs: fragments for a connected local task go from here.
                            let mut fast = |f: &[crate::conn::FragRef<'_>]| lock(&rts).relay(id, &pend, f);
                            let ev = match r.next_event_with(&mut fast).await {
                                Ok(Some(ReadEvent::Frags(v))) => Event::Frags(id, v),
                                Ok(Some(ReadEvent::BigStart(h, p))) => {
                                    // splice.rs: a big fragment for a connected local task.
                                    let claim = lock(&rts).claim_big(id, &pend, &h);
                                    let Some((dest, hdr)) = claim else {
                                        pend.fetch_add(1, Ordering::Relaxed);
                                        if tx.send(Event::BigStart(id, h, p)).is_err() {
                                            return;
                                        }
                                        continue;
                                    };
                                    let (rd, left) = r.take_big();
                                    match Box::pin(splice::relay_big(rd, left, hdr, p, &dest)).await {
                                        splice::Outcome::Done => continue,
                                        splice::Outcome::SourceEnded { left } => {
                                            let e = ConnError::Truncated { have: 0, need: left };
                                            let _ = tx.send(Event::Ended(id, Some(e)));
                                            return;
                                        }
                                        splice::Outcome::SourceError(e) => {
                                            let _ = tx.send(Event::Ended(id, Some(e.into())));
                                            return;
                                        }
                                    }
                                }
                                Ok(Some(ReadEvent::BigChunk(c, last))) => Event::BigChunk(id, c, last),
                                Ok(None) => {
                                    let _ = tx.send(Event::Ended(id, None));
                                    return;
                                }
                                Err(e) => {
                                    let _ = tx.send(Event::Ended(id, Some(e)));
                                    return;
                                }
                            };
                            pend.fetch_add(1, Ordering::Relaxed);
                            if tx.send(ev).is_err() {
                                return;
                            }
                        }
                    });
                    conns.insert(id, ConnHandle { out, reader, limit, pending, gate });
                    daemon.accept(id, peer_pid);
                }
                Err(e) => {
                    // EMFILE and friends: keep serving the connections we have.
                    log.line(&format!("loclconn() accept: {e}"));
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
            Some(ev) = mig_rx.recv() => {
                let outs = daemon.mig_event(ev);
                if apply(outs, daemon, &mut conns, log) {
                    break Stop::Halt;
                }
            }
            Some(tev) = task_rx.recv() => {
                let outs = match tev {
                    TaskEvent::Output(tid, data) => daemon.task_output(tid, &data),
                    TaskEvent::Exited(tid) => daemon.task_exited(tid),
                };
                if apply(outs, daemon, &mut conns, log) {
                    break Stop::Halt;
                }
            }
            Some(ev) = ev_rx.recv() => match ev {
                Event::Frags(id, frags) => {
                    handled(&conns, id);
                    let n_conns = conns.len();
                    let mut halt = false;
                    // Consecutive relayed fragments for one destination go out together; any
                    // other fragment flushes them first, so the order on every connection stays
                    // the order of arrival.
                    let mut group: Option<(ConnId, Vec<RelayFrag>)> = None;
                    only_relayed = true;
                    for (h, p) in frags {
                        crate::metrics::frag_in(h.flags.contains(pvm_proto::frag::FragFlags::EOM)); // metrics.rs
                        if !conns.contains_key(&id) {
                            break; // closed by an earlier fragment of the batch
                        }
                        if let Some(tag) = arelay::transfer_tag(&h, &p) {
                            if let Some((t, v)) = group.take() {
                                halt |= queue(&mut conns, t, WriteCmd::Frags(v), daemon, log);
                            }
                            only_relayed = false;
                            halt |= arena_relay.handle(tag, id, (h, p), daemon, &mut conns, log);
                            continue;
                        }
                        if let Some((to, hdr)) = daemon.relay_target(id, &h) {
                            if let Some(c) = conns.get(&to) {
                                lock(&routes).learn(id, h.dst, &hdr, c.out.clone()); // relay.rs
                            }
                            match group.as_mut() {
                                Some((t, v)) if *t == to => v.push((hdr, p)),
                                _ => {
                                    if let Some((t, v)) = group.replace((to, vec![(hdr, p)])) {
                                        halt |= queue(&mut conns, t, WriteCmd::Frags(v), daemon, log);
                                    }
                                }
                            }
                            continue;
                        }
                        if let Some((t, v)) = group.take() {
                            halt |= queue(&mut conns, t, WriteCmd::Frags(v), daemon, log);
                        }
                        only_relayed = false;
                        let outs = daemon.fragment_owned(id, h, p, SystemTime::now());
                        halt |= apply(outs, daemon, &mut conns, log);
                    }
                    if let Some((t, v)) = group.take() {
                        halt |= queue(&mut conns, t, WriteCmd::Frags(v), daemon, log);
                    }
                    // A relay that dropped a connection not reading changed the daemon's state.
                    only_relayed = only_relayed && conns.len() == n_conns;
                    if halt {
                        break Stop::Halt;
                    }
                }
                Event::BigStart(id, h, first) => {
                    handled(&conns, id);
                    crate::metrics::frag_in(h.flags.contains(pvm_proto::frag::FragFlags::EOM)); // metrics.rs: big ones count too
                    if !conns.contains_key(&id) {
                        continue;
                    }
                    match daemon.relay_target(id, &h) {
                        Some((to, hdr)) => {
                            // relay.rs / splice.rs: the next big fragment may go from the reader.
                            if let Some(c) = conns.get(&to) {
                                lock(&routes).learn(id, h.dst, &hdr, c.out.clone());
                            }
                            let n_conns = conns.len();
                            let (stx, srx) = mpsc::unbounded_channel();
                            let cmd = WriteCmd::Stream(hdr, first, srx, h.len as usize);
                            streams.insert(id, Streaming::Relay(stx));
                            if queue(&mut conns, to, cmd, daemon, log) {
                                break Stop::Halt;
                            }
                            only_relayed = conns.len() == n_conns;
                        }
                        None if daemon.pieces_wanted(h.dst) => {
                            streams.insert(id, Streaming::Pieces(xstream::Pieces::new(h, first)));
                        }
                        None => {
                            streams.insert(id, Streaming::Collect(h, first));
                        }
                    }
                }
                Event::BigChunk(id, c, last) => {
                    handled(&conns, id);
                    match streams.get_mut(&id) {
                        Some(Streaming::Relay(tx)) => {
                            let _ = tx.send(c);
                            only_relayed = true; // relay.rs: nothing changed
                        }
                        Some(Streaming::Collect(_, buf)) => buf.extend_from_slice(&c),
                        Some(Streaming::Pieces(ps)) => {
                            let mut halt = false;
                            for (ph, p) in ps.push(c, last) {
                                let outs = daemon.fragment_owned(id, ph, p, SystemTime::now());
                                halt |= apply(outs, daemon, &mut conns, log);
                            }
                            if halt {
                                break Stop::Halt;
                            }
                        }
                        None => continue,
                    }
                    if last {
                        if let Some(Streaming::Collect(h, p)) = streams.remove(&id) {
                            let outs = daemon.fragment_owned(id, h, p, SystemTime::now());
                            if apply(outs, daemon, &mut conns, log) {
                                break Stop::Halt;
                            }
                        }
                    }
                }
                Event::Ended(id, err) => {
                    streams.remove(&id);
                    if let Some(e) = err {
                        log.line(&format!("loclinput() {}: {e}; closing", daemon.conn_name(id)));
                    }
                    conns.remove(&id); // its writer writes what is queued and ends
                    let outs = daemon.closed(id);
                    if apply(outs, daemon, &mut conns, log) {
                        break Stop::Halt;
                    }
                }
            },
        }
        if !only_relayed {
            lock(&routes).clear(); // relay.rs
        }
        // A connection closed by a decision (not by its reader) may have left a big fragment
        // half relayed: dropping its sender lets the destination's writer pad and go on.
        if !streams.is_empty() {
            streams.retain(|id, _| conns.contains_key(id));
        }
    };
    // The task sockets stay open until the runtime ends, after the caller has sent the tasks
    // SIGTERM: a task is stopped by the signal, as under the legacy daemon, and does not first
    // see the end of its connection (and exit on its own).
    let outlets: Vec<Arc<Outlet>> = conns
        .drain()
        .map(|(_, c)| {
            c.reader.abort();
            c.out.clone()
        })
        .collect();
    drop(tokio::spawn(async move {
        let _open = outlets;
        std::future::pending::<()>().await
    }));
    daemon.cleanup();
    // multi-host: what is still queued (a DM_HALT, replies), then FIN|ACK to every pvmd.
    let _ = xstream::flush(&mut xs, daemon, &mut conns, log); // stream transport: best effort
    udp_flush(&udp, daemon, log).await;
    if let Some(u) = &udp {
        for t in daemon.net_bailout() {
            let _ = u.send_to(&t.bytes, t.dst).await;
        }
    }
    stop
}

/// A current-thread runtime like the daemon's, for the unit tests of the connection code.
#[cfg(test)]
pub(crate) fn test_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The route table of relay.rs (a poisoned lock only means a panic elsewhere: the table
/// itself is always consistent).
fn lock(r: &relay::SharedRoutes) -> std::sync::MutexGuard<'_, relay::Routes> {
    r.lock().unwrap_or_else(|e| e.into_inner())
}

/// The main loop has taken one event of `id`'s reader (relay.rs: order).
fn handled(conns: &HashMap<ConnId, ConnHandle>, id: ConnId) {
    if let Some(c) = conns.get(&id) {
        c.pending.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Hands bytes to a connection's writer; a connection that lets more than [`MAX_QUEUED`] pile
/// up is dropped (returned, for the daemon to be told).
fn enqueue(conns: &mut HashMap<ConnId, ConnHandle>, id: ConnId, cmd: WriteCmd, log: &mut Log) -> Option<ConnId> {
    let c = conns.get(&id)?;
    // Nothing queued means the writer task is idle (the runtime is single-threaded): write
    // now, and queue only what the socket did not take.
    let cmd = if c.out.idle() {
        try_direct(c.out.wr(), cmd)? // all written: nothing queued, nothing to report
    } else {
        cmd
    };
    let n = cmd.len();
    let q = c.out.queued().fetch_add(n, Ordering::Relaxed) + n;
    c.out.send(cmd);
    // What was already waiting counts, not the new item: one big message is not a backlog.
    if q - n > MAX_QUEUED {
        log.line(&format!(
            "locloutput() connection {id} is not reading ({q} bytes queued); closing"
        ));
        if let Some(c) = conns.remove(&id) {
            // Nobody reads: drop the queue instead of flushing it.
            c.out.abort();
            c.reader.abort();
            return Some(id);
        }
    }
    None
}

/// Most slices one `writev` is given (the kernel's IOV_MAX is 1024).
const MAX_IOV: usize = 512;

/// [`try_direct`] for a batch of relayed fragments: `writev` over their headers and payloads;
/// what the socket did not take, as one buffer to queue.
fn try_direct_frags(wr: &TaskWrite, v: Vec<RelayFrag>) -> Option<WriteCmd> {
    let mut done = 0usize; // fragments fully written
    let mut partial = 0usize; // bytes of fragment `done` already written
    while done < v.len() {
        let mut iov = Vec::with_capacity(MAX_IOV);
        let (h, p) = &v[done];
        let first: Vec<u8>;
        if partial < h.len() {
            iov.push(std::io::IoSlice::new(&h[partial..]));
            iov.push(std::io::IoSlice::new(p));
        } else {
            first = p[partial - h.len()..].to_vec();
            iov.push(std::io::IoSlice::new(&first));
        }
        for (h, p) in v[done + 1..].iter().take(MAX_IOV / 2 - 1) {
            iov.push(std::io::IoSlice::new(h));
            iov.push(std::io::IoSlice::new(p));
        }
        let want: usize = iov.iter().map(|s| s.len()).sum();
        // WouldBlock, or an error the writer task will meet and end on, count as nothing written.
        let mut n = wr.try_write_vectored(&iov).unwrap_or_default();
        let short = n < want;
        while n > 0 && done < v.len() {
            let left = v[done].0.len() + v[done].1.len() - partial;
            if n >= left {
                n -= left;
                done += 1;
                partial = 0;
            } else {
                partial += n;
                n = 0;
            }
        }
        if short {
            break;
        }
    }
    if done == v.len() {
        return None;
    }
    let mut rest = Vec::new();
    for (i, (h, p)) in v[done..].iter().enumerate() {
        let skip = if i == 0 { partial } else { 0 };
        if skip < h.len() {
            rest.extend_from_slice(&h[skip..]);
            rest.extend_from_slice(p);
        } else {
            rest.extend_from_slice(&p[skip - h.len()..]);
        }
    }
    Some(WriteCmd::Data(rest))
}

/// Writes as much of `cmd` as the socket takes without blocking; the rest, if any, to queue.
fn try_direct(wr: &TaskWrite, cmd: WriteCmd) -> Option<WriteCmd> {
    let cmd = match cmd {
        WriteCmd::Frags(v) => return try_direct_frags(wr, v),
        WriteCmd::Data(b) if b.len() > BIG => {
            // WouldBlock, or an error the writer task will meet and end on: nothing written.
            let n = wr.try_write(&b).unwrap_or_default();
            return match n {
                _ if n >= b.len() => None,
                0 => Some(WriteCmd::Data(b)),
                _ => Some(WriteCmd::Tail(b, n)),
            };
        }
        c => c,
    };
    let (h, p): (&[u8], &[u8]) = match &cmd {
        WriteCmd::Data(b) => (&[], b),
        WriteCmd::Frags(_) | WriteCmd::Tail(..) | WriteCmd::Stream(..) | WriteCmd::Wait(_) => return Some(cmd),
    };
    let total = h.len() + p.len();
    // WouldBlock, or an error the writer task will meet and end on, count as nothing written.
    let n = wr
        .try_write_vectored(&[std::io::IoSlice::new(h), std::io::IoSlice::new(p)])
        .unwrap_or_default();
    if n == total {
        return None;
    }
    if n == 0 {
        return Some(cmd);
    }
    let mut rest = Vec::with_capacity(total - n);
    if n < h.len() {
        rest.extend_from_slice(&h[n..]);
        rest.extend_from_slice(p);
    } else {
        rest.extend_from_slice(&p[n - h.len()..]);
    }
    Some(WriteCmd::Data(rest))
}

/// [`enqueue`] for the relay fast path, telling the daemon about a dropped connection; true if
/// that made it decide to halt.
fn queue<A: AuthFiles>(
    conns: &mut HashMap<ConnId, ConnHandle>,
    id: ConnId,
    cmd: WriteCmd,
    daemon: &mut Daemon<A>,
    log: &mut Log,
) -> bool {
    crate::metrics::FRAGS_OUT.inc(); // metrics.rs
    match enqueue(conns, id, cmd, log) {
        Some(id) => {
            let more = daemon.closed(id);
            apply(more, daemon, conns, log)
        }
        None => false,
    }
}

/// Carries out the daemon's decisions; true if it decided to halt.
fn apply<A: AuthFiles>(
    outs: Vec<Out>,
    daemon: &mut Daemon<A>,
    conns: &mut HashMap<ConnId, ConnHandle>,
    log: &mut Log,
) -> bool {
    let mut closed = Vec::new();
    let mut halt = false;
    for o in outs {
        match o {
            Out::Send(id, bytes) => {
                crate::metrics::FRAGS_OUT.inc(); // metrics.rs
                if let Some(id) = enqueue(conns, id, WriteCmd::Data(bytes), log) {
                    closed.push(id);
                }
            }
            Out::Close(id) => {
                if let Some(c) = conns.remove(&id) {
                    c.reader.abort(); // dropping `c` closes its output (ConnHandle::drop)
                    closed.push(id);
                }
            }
            Out::FragLimit(id, n) => {
                if let Some(c) = conns.get(&id) {
                    c.limit.store(n, Ordering::Relaxed);
                }
            }
            Out::Log(l) => log.line(&l),
            Out::Halt => halt = true,
            Out::Signal(pid, sig) => crate::sys::kill(pid, sig),
            Out::Gate(id, pause) => {
                if let Some(c) = conns.get(&id) {
                    let want = if pause { Gate::Paused } else { Gate::Open };
                    c.gate.send_if_modified(|g| {
                        let change = *g != Gate::Draining && *g != want;
                        if change {
                            *g = want;
                        }
                        change
                    });
                }
            }
            Out::Drain(id) => {
                if let Some(c) = conns.get(&id) {
                    // No more input can come from the exited process, but a child that
                    // inherited the socket could keep it open. With the read side shut down
                    // the reader still gets what the process wrote (it stays queued), then the
                    // end of the stream, and is woken for it; the gate lets a paused reader go
                    // on for good.
                    // SAFETY: shutdown(2) on a socket this connection owns.
                    unsafe { libc::shutdown(c.out.wr().raw_fd(), libc::SHUT_RD) };
                    c.gate.send_replace(Gate::Draining);
                }
            }
        }
    }
    for id in closed {
        let more = daemon.closed(id);
        if !more.is_empty() && apply(more, daemon, conns, log) {
            halt = true;
        }
    }
    halt
}
