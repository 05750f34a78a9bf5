//! The tokio shell around [`Daemon`]: accepts connections, runs one reader and one writer per
//! connection, feeds fragments to the daemon and carries out what it decides.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use pvm_proto::frag::StreamFragHeader;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixListener;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::conn::{ConnError, FragReader};
use crate::daemon::{AuthFiles, ConnId, Daemon, Out, MAX_FRAG_UNCONNECTED};
use crate::log::Log;

enum Event {
    Frag(ConnId, StreamFragHeader, Vec<u8>),
    Ended(ConnId, Option<ConnError>),
    /// hardening: the handshake time of this connection is over.
    HandshakeExpired(ConnId),
}

use crate::launch::{ProcLauncher, TaskEvent};

enum WriteCmd {
    Data(Vec<u8>),
    Close,
}

struct ConnHandle {
    writer: mpsc::UnboundedSender<WriteCmd>,
    reader: JoinHandle<()>,
    writer_task: JoinHandle<()>,
    limit: Arc<AtomicU32>,
    /// Bytes handed to the writer and not yet written.
    queued: Arc<AtomicUsize>,
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

/// Puts what the datagram endpoint has to send on the socket.
async fn udp_flush<A: AuthFiles>(udp: &Option<tokio::net::UdpSocket>, daemon: &mut Daemon<A>, log: &mut Log) {
    let Some(u) = udp else { return };
    while let Some(t) = daemon.net_transmit() {
        if let Err(e) = u.send_to(&t.bytes, t.dst).await {
            if e.raw_os_error() == Some(libc::ECONNREFUSED) {
                // hardening: an ICMP error reported on send; retry this datagram once.
                let _ = u.send_to(&t.bytes, t.dst).await;
                continue;
            }
            log.line(&format!("netoutput() sendto {}: {e}", t.dst));
        }
    }
}

/// hardening: drains the ICMP errors queued on the socket (IP_RECVERR) into the daemon.
fn udp_errors<A: AuthFiles>(
    udp: &tokio::net::UdpSocket,
    daemon: &mut Daemon<A>,
    conns: &mut HashMap<ConnId, ConnHandle>,
    log: &mut Log,
) -> bool {
    use std::os::fd::AsRawFd;
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
    use tokio::io::AsyncBufReadExt;
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
    let (start_tx, mut start_rx) = mpsc::unbounded_channel::<(u32, Result<String, String>)>(); // multi-host
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel::<Event>();
    let (task_tx, mut task_rx) = mpsc::unbounded_channel::<TaskEvent>();
    daemon.set_launcher(Box::new(ProcLauncher::new(epath, task_tx)));
    let mut conns: HashMap<ConnId, ConnHandle> = HashMap::new();
    let mut next_id: ConnId = 1;
    let Signals {
        term: mut sigterm,
        int: mut sigint,
    } = signals;
    let stop = loop {
        udp_flush(&udp, daemon, log).await; // multi-host
        for st in daemon.take_slave_starts() {
            run_start(st, start_tx.clone());
        }
        udp_flush(&udp, daemon, log).await;
        let net_wait = daemon.net_deadline().unwrap_or(std::time::Duration::from_secs(3600));
        tokio::select! {
            // ---- multi-host arms ----
            r = udp_recv(&udp, &mut udp_buf) => {
                if let Ok((n, std::net::SocketAddr::V4(from))) = r {
                    let outs = daemon.net_datagram(from, &udp_buf[..n]);
                    if apply(outs, daemon, &mut conns, log) {
                        break Stop::Halt;
                    }
                } else if let (Err(_), Some(u)) = (&r, &udp) {
                    if udp_errors(u, daemon, &mut conns, log) {
                        break Stop::Halt;
                    }
                }
            }
            _ = tokio::time::sleep(net_wait), if udp.is_some() => {
                let outs = daemon.net_timeout();
                if apply(outs, daemon, &mut conns, log) {
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
            acc = listener.accept() => match acc {
                Ok((stream, _)) => {
                    // hardening: only tasks of our own user may enrol, whatever the socket's mode.
                    if let Some(why) = crate::guard::foreign_peer(&stream) {
                        log.line(&format!("loclconn() refused connection: {why}"));
                        drop(stream);
                        continue;
                    }
                    let peer_pid = stream.peer_cred().ok().and_then(|c| c.pid());
                    let id = next_id;
                    next_id += 1;
                    let (rd, mut wr) = stream.into_split();
                    let limit = Arc::new(AtomicU32::new(MAX_FRAG_UNCONNECTED));
                    let (wtx, mut wrx) = mpsc::unbounded_channel::<WriteCmd>();
                    let queued = Arc::new(AtomicUsize::new(0));
                    let wq = queued.clone();
                    let writer_task = tokio::spawn(async move {
                        while let Some(cmd) = wrx.recv().await {
                            match cmd {
                                WriteCmd::Data(b) => {
                                    let ok = wr.write_all(&b).await.is_ok();
                                    wq.fetch_sub(b.len(), Ordering::Relaxed);
                                    if !ok {
                                        break;
                                    }
                                }
                                WriteCmd::Close => break,
                            }
                        }
                        let _ = wr.shutdown().await;
                    });
                    let tx = ev_tx.clone();
                    let lim = limit.clone();
                    // hardening: a client must finish the connect handshake in time (guard.rs).
                    let expire = ev_tx.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(crate::guard::handshake_timeout()).await;
                        let _ = expire.send(Event::HandshakeExpired(id));
                    });
                    let reader = tokio::spawn(async move {
                        let mut r = FragReader::new(rd, lim);
                        loop {
                            match r.next().await {
                                Ok(Some((h, p))) => {
                                    if tx.send(Event::Frag(id, h, p)).is_err() {
                                        return;
                                    }
                                }
                                Ok(None) => {
                                    let _ = tx.send(Event::Ended(id, None));
                                    return;
                                }
                                Err(e) => {
                                    let _ = tx.send(Event::Ended(id, Some(e)));
                                    return;
                                }
                            }
                        }
                    });
                    conns.insert(id, ConnHandle { writer: wtx, reader, writer_task, limit, queued });
                    daemon.accept(id, peer_pid);
                }
                Err(e) => {
                    // EMFILE and friends: keep serving the connections we have.
                    log.line(&format!("loclconn() accept: {e}"));
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
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
                Event::Frag(id, h, p) => {
                    let outs = daemon.fragment(id, h, &p, SystemTime::now());
                    if apply(outs, daemon, &mut conns, log) {
                        break Stop::Halt;
                    }
                }
                Event::HandshakeExpired(id) => {
                    // Still at the pre-connect fragment limit: TM_CONN2 never completed.
                    if conns.get(&id).is_some_and(|c| c.limit.load(Ordering::Relaxed) == MAX_FRAG_UNCONNECTED) {
                        let outs = vec![
                            Out::Log(format!("loclinput() connection {id}: no connect handshake in time; closing")),
                            Out::Close(id),
                        ];
                        if apply(outs, daemon, &mut conns, log) {
                            break Stop::Halt;
                        }
                    }
                }
                Event::Ended(id, err) => {
                    if let Some(e) = err {
                        log.line(&format!("loclinput() connection {id}: {e}; closing"));
                    }
                    if let Some(c) = conns.remove(&id) {
                        drop(c.writer);
                    }
                    let outs = daemon.closed(id);
                    if apply(outs, daemon, &mut conns, log) {
                        break Stop::Halt;
                    }
                }
            },
        }
    };
    for (_, c) in conns.drain() {
        c.reader.abort();
    }
    daemon.cleanup();
    // multi-host: what is still queued (a DM_HALT, replies), then FIN|ACK to every pvmd.
    udp_flush(&udp, daemon, log).await;
    if let Some(u) = &udp {
        for t in daemon.net_bailout() {
            let _ = u.send_to(&t.bytes, t.dst).await;
        }
    }
    stop
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
                let Some(c) = conns.get(&id) else { continue };
                let q = c.queued.fetch_add(bytes.len(), Ordering::Relaxed) + bytes.len();
                let _ = c.writer.send(WriteCmd::Data(bytes));
                if q > MAX_QUEUED {
                    log.line(&format!(
                        "locloutput() connection {id} is not reading ({q} bytes queued); closing"
                    ));
                    if let Some(c) = conns.remove(&id) {
                        // Nobody reads: drop the queue instead of flushing it.
                        c.writer_task.abort();
                        c.reader.abort();
                        closed.push(id);
                    }
                }
            }
            Out::Close(id) => {
                if let Some(c) = conns.remove(&id) {
                    let _ = c.writer.send(WriteCmd::Close);
                    c.reader.abort();
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
