//! Direct task-task routes (PvmRouteDirect), negotiated with TC_CONREQ / TC_CONACK through the
//! pvmds (wire.md §4.6), in both roles:
//!
//! - requester: on a send with PvmRouteDirect to a task we have no route to, bind a socket (Unix
//!   path on the same host, TCP on our host address otherwise), send TC_CONREQ with its address,
//!   ask the pvmd for a PvmTaskExit notify (TC_TASKEXIT), and wait for TC_CONACK; on acceptance
//!   connect to the address the peer gave, else keep routing through the pvmd;
//! - acceptor: on TC_CONREQ (unless PvmDontRoute) bind a socket of the requester's family,
//!   listen, answer TC_CONACK with its address and accept the connection.
//!
//! Crossed requests: the task with the lower tid ignores the peer's TC_CONREQ; the higher one
//! listens on the socket it had bound for its own request and answers.
//! After that the stream carries ordinary fragments with real src/dst tids.
//!
//! Large fragments between two pvm-rs tasks: our TC_CONREQ and TC_CONACK carry two more ints
//! after the address (`pvm_proto::body::RouteExt`: a magic number and the largest fragment we
//! take, docs/extensions.md). A legacy task unpacks only the fields it knows and never answers
//! with them, so a route is written with large fragments only when both ends offered them (the
//! requester in its TC_CONREQ, the acceptor in its TC_CONACK to such a request); a legacy peer
//! gets the fragments its own library would send. Large fragments are what lets the receiver
//! read a message's bytes straight into their final place (`net.rs`, "in place"), and they
//! save one header, one parse and one reassembly step per 4 KB.

use crate::core::{cget, tmpnam, Lib, RawSock, RouteState, TC_CONACK, TC_CONREQ, TC_TASKEXIT, TIDPVMD, TM_NOTIFY};
use crate::net::{Sock, Stream};
use pvm_proto::body::ROUTE_EXT_MAGIC;
use pvm_proto::codes::{SYSCTX_TC, SYSCTX_TM, TDPROTOCOL};
use pvm_proto::encoding::Unpacker;
use std::io;
use std::net::{Ipv4Addr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// How long a requester waits for TC_CONACK before routing through the pvmd (legacy waits
/// for ever; a lost peer then hangs the sender).
const CONACK_WAIT: Duration = Duration::from_secs(30);

fn last_err() -> io::Error {
    io::Error::last_os_error()
}

fn new_socket(family: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the descriptor is owned immediately.
    let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(last_err());
    }
    // SAFETY: fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn sockaddr_un(path: &str) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    // SAFETY: sockaddr_un is plain data; all-zero is a valid value.
    let mut a: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    a.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let b = path.as_bytes();
    if b.len() >= a.sun_path.len() {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    for (d, s) in a.sun_path.iter_mut().zip(b) {
        *d = *s as libc::c_char;
    }
    Ok((a, std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t))
}

fn sockaddr_in(ip: Ipv4Addr, port: u16) -> libc::sockaddr_in {
    // SAFETY: plain data; zero is valid.
    let mut a: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    a.sin_family = libc::AF_INET as libc::sa_family_t;
    a.sin_port = port.to_be();
    a.sin_addr.s_addr = u32::from(ip).to_be();
    a
}

/// A Unix socket bound to a fresh pvmtmp path.
fn bind_unix() -> io::Result<(RawSock, String)> {
    let fd = new_socket(libc::AF_UNIX)?;
    let path = tmpnam();
    let _ = std::fs::remove_file(&path);
    let (a, len) = sockaddr_un(&path)?;
    // SAFETY: a valid sockaddr_un of the given length.
    if unsafe { libc::bind(fd.as_raw_fd(), &a as *const _ as *const libc::sockaddr, len) } < 0 {
        return Err(last_err());
    }
    Ok((RawSock { fd, unix: true }, path))
}

/// A TCP socket bound to our host address (from TM_CONN2), port 0, TCP_NODELAY.
fn bind_tcp(host_addr: &str) -> io::Result<(RawSock, String)> {
    let ip = crate::core::hex_addr(host_addr)
        .map(|a| match a.ip() {
            std::net::IpAddr::V4(v) => v,
            std::net::IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
        })
        .unwrap_or(Ipv4Addr::UNSPECIFIED);
    let fd = new_socket(libc::AF_INET)?;
    let one: libc::c_int = 1;
    // SAFETY: setsockopt with a c_int option value.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            &one as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    let a = sockaddr_in(ip, 0);
    // SAFETY: a valid sockaddr_in.
    if unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &a as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    } < 0
    {
        return Err(last_err());
    }
    // SAFETY: getsockname into a sockaddr_in-sized buffer.
    let mut got: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    if unsafe { libc::getsockname(fd.as_raw_fd(), &mut got as *mut _ as *mut libc::sockaddr, &mut len) } < 0 {
        return Err(last_err());
    }
    let addr = format!(
        "{:08x}:{:04x}",
        u32::from_be(got.sin_addr.s_addr),
        u16::from_be(got.sin_port)
    );
    Ok((RawSock { fd, unix: false }, addr))
}

fn listen(s: &RawSock) -> io::Result<()> {
    // SAFETY: listen(2) on a bound socket we own.
    if unsafe { libc::listen(s.fd.as_raw_fd(), 1) } < 0 {
        return Err(last_err());
    }
    Ok(())
}

/// Connects our bound socket to the peer's address.
fn connect(s: RawSock, addr: &str) -> io::Result<Sock> {
    let r = if s.unix {
        let (a, len) = sockaddr_un(addr)?;
        // SAFETY: a valid sockaddr_un.
        unsafe { libc::connect(s.fd.as_raw_fd(), &a as *const _ as *const libc::sockaddr, len) }
    } else {
        let sa = crate::core::hex_addr(addr).ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        let ip = match sa.ip() {
            std::net::IpAddr::V4(v) => v,
            std::net::IpAddr::V6(_) => return Err(io::Error::from(io::ErrorKind::InvalidInput)),
        };
        let a = sockaddr_in(ip, sa.port());
        // SAFETY: a valid sockaddr_in.
        unsafe {
            libc::connect(
                s.fd.as_raw_fd(),
                &a as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        }
    };
    if r < 0 {
        return Err(last_err());
    }
    Ok(if s.unix {
        Sock::Unix(UnixStream::from(s.fd))
    } else {
        Sock::Tcp(TcpStream::from(s.fd))
    })
}

fn accept(s: &RawSock) -> io::Result<Sock> {
    // SAFETY: accept(2) on a listening socket we own; peer address not needed.
    let fd = unsafe { libc::accept(s.fd.as_raw_fd(), std::ptr::null_mut(), std::ptr::null_mut()) };
    if fd < 0 {
        return Err(last_err());
    }
    // SAFETY: fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    Ok(if s.unix {
        Sock::Unix(UnixStream::from(fd))
    } else {
        let t = TcpStream::from(fd);
        let _ = t.set_nodelay(true);
        Sock::Tcp(t)
    })
}

fn same_host(a: i32, b: i32) -> bool {
    (a as u32) & 0x3ffc_0000 == (b as u32) & 0x3ffc_0000
}

/// Appends our route extension (magic, largest fragment we take) to a TC_CONREQ/TC_CONACK body.
/// The third int carries capability bits (`vmread::CAP_VMREAD`); an older pvm-rs task reads two
/// ints and ignores it.
fn pk_route_ext(p: &mut pvm_proto::encoding::Packer) {
    let _ = p.pk_int(&[
        ROUTE_EXT_MAGIC,
        crate::net::ROUTE_MAX_FRAG as i32,
        crate::vmread::caps(),
    ]);
}

/// The peer's route extension after the address, if it sent one: the largest fragment it
/// takes (capped at ours), 0 for a legacy peer or an offer too small to be worth using, and
/// its capability bits (0 when absent).
fn upk_route_ext(u: &mut Unpacker<'_>) -> (usize, i32) {
    if u.remaining() < 8 {
        return (0, 0);
    }
    let mut v = [0i32; 2];
    if u.up_int(&mut v).is_err() || v[0] != ROUTE_EXT_MAGIC {
        return (0, 0);
    }
    let max = usize::try_from(v[1]).unwrap_or(0).min(crate::net::ROUTE_MAX_FRAG);
    if max < crate::net::IN_PLACE_MIN {
        return (0, 0);
    }
    let mut caps = [0i32];
    if u.remaining() < 4 || u.up_int(&mut caps).is_err() {
        caps[0] = 0;
    }
    (max, caps[0])
}

/// `peer_max_frag` > 0: the requester offered large fragments, ours go back with the answer.
fn send_conack(lib: &mut Lib, dst: i32, ack: i32, addr: &str, peer_max_frag: usize) {
    let mut p = crate::core::xdr();
    let _ = p.pk_int(&[TDPROTOCOL, ack]);
    let _ = p.pk_str(addr.as_bytes());
    if ack == 0 && peer_max_frag > 0 {
        pk_route_ext(&mut p);
    }
    let me = lib.mytid;
    let _ = lib.send_raw(me, dst, TC_CONACK, SYSCTX_TC, 0, p.body(), true);
}

pub fn on_conreq(lib: &mut Lib, src: i32, u: &mut Unpacker<'_>) {
    let mut v = [0i32];
    let ok = u.up_int(&mut v).is_ok() && v[0] == TDPROTOCOL;
    let addr = u.up_str().map(|b| String::from_utf8_lossy(&b).into_owned());
    let (true, Ok(addr)) = (ok, addr) else {
        send_conack(lib, src, 1, "", 0);
        return;
    };
    let (peer_max_frag, peer_caps) = upk_route_ext(u);
    match lib.routes.remove(&src) {
        Some(RouteState::Requested { sock, path }) => {
            // Crossed requests: the lower tid ignores, the higher listens on its own socket.
            if lib.mytid < src {
                lib.routes.insert(src, RouteState::Requested { sock, path });
                return;
            }
            if listen(&sock).is_err() {
                lib.routes.insert(src, RouteState::Denied);
                send_conack(lib, src, 1, "", 0);
                return;
            }
            let myaddr = if sock.unix {
                path.clone().unwrap_or_default()
            } else {
                local_tcp_addr(&sock).unwrap_or_default()
            };
            lib.routes.insert(
                src,
                RouteState::Listening {
                    sock,
                    path,
                    peer_max_frag,
                    peer_caps,
                },
            );
            send_conack(lib, src, 0, &myaddr, peer_max_frag);
        }
        Some(RouteState::Open(s)) => {
            // Already connected: legacy logs and leaves it.
            lib.routes.insert(src, RouteState::Open(s));
        }
        _ => {
            if cget!(pvmrouteopt) == 1 {
                lib.routes.insert(src, RouteState::Denied);
                send_conack(lib, src, 1, "", 0);
                return;
            }
            let bound = if addr.starts_with('/') {
                bind_unix().map(|(s, p)| (s, Some(p.clone()), p))
            } else {
                let ha = lib.host_addr.clone();
                bind_tcp(&ha).map(|(s, a)| (s, None, a))
            };
            match bound {
                Ok((sock, path, myaddr)) if listen(&sock).is_ok() => {
                    lib.routes.insert(
                        src,
                        RouteState::Listening {
                            sock,
                            path,
                            peer_max_frag,
                            peer_caps,
                        },
                    );
                    send_conack(lib, src, 0, &myaddr, peer_max_frag);
                }
                _ => {
                    lib.routes.insert(src, RouteState::Denied);
                    send_conack(lib, src, 1, "", 0);
                }
            }
        }
    }
}

fn local_tcp_addr(s: &RawSock) -> Option<String> {
    // SAFETY: getsockname into a sockaddr_in-sized buffer.
    let mut got: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    if unsafe { libc::getsockname(s.fd.as_raw_fd(), &mut got as *mut _ as *mut libc::sockaddr, &mut len) } < 0 {
        return None;
    }
    Some(format!(
        "{:08x}:{:04x}",
        u32::from_be(got.sin_addr.s_addr),
        u16::from_be(got.sin_port)
    ))
}

pub fn on_conack(lib: &mut Lib, src: i32, u: &mut Unpacker<'_>) {
    let mut v = [0i32; 2];
    let ok = u.up_int(&mut v).is_ok() && v[0] == TDPROTOCOL && v[1] == 0;
    let addr = u.up_str().map(|b| String::from_utf8_lossy(&b).into_owned());
    let (peer_max_frag, peer_caps) = if ok { upk_route_ext(u) } else { (0, 0) };
    let Some(RouteState::Requested { sock, path }) = lib.routes.remove(&src) else {
        return;
    };
    if let Some(p) = &path {
        let _ = std::fs::remove_file(p);
    }
    let state = match (ok, addr) {
        (true, Ok(addr)) => match connect(sock, &addr).and_then(Stream::new) {
            Ok(mut s) => {
                s.peer_max_frag = peer_max_frag;
                crate::vmread::enable(&mut s, peer_caps);
                RouteState::Open(Box::new(s))
            }
            Err(_) => RouteState::Denied,
        },
        _ => RouteState::Denied,
    };
    lib.routes.insert(src, state);
}

/// TC_TASKEXIT: the peer is gone; only routes not yet open are dropped (an open one ends by EOF).
pub fn on_taskexit(lib: &mut Lib, tid: i32) {
    match lib.routes.remove(&tid) {
        Some(RouteState::Open(s)) => {
            lib.routes.insert(tid, RouteState::Open(s));
        }
        Some(RouteState::Requested { path, .. }) | Some(RouteState::Listening { path, .. }) => {
            if let Some(p) = path {
                let _ = std::fs::remove_file(p);
            }
        }
        _ => {}
    }
}

/// A listening or connected route socket is readable.
pub fn ready(lib: &mut Lib, tid: i32) {
    match lib.routes.remove(&tid) {
        Some(RouteState::Open(mut s)) => {
            s.drain_step();
            lib.routes.insert(tid, RouteState::Open(s));
        }
        Some(RouteState::Listening {
            sock,
            path,
            peer_max_frag,
            peer_caps,
        }) => {
            if let Some(p) = &path {
                let _ = std::fs::remove_file(p);
            }
            let st = match accept(&sock).and_then(Stream::new) {
                Ok(mut s) => {
                    s.peer_max_frag = peer_max_frag;
                    crate::vmread::enable(&mut s, peer_caps);
                    s.drain();
                    RouteState::Open(Box::new(s))
                }
                Err(_) => RouteState::Denied,
            };
            lib.routes.insert(tid, st);
        }
        Some(other) => {
            lib.routes.insert(tid, other);
        }
        None => {}
    }
}

/// Before a send: with PvmRouteDirect and no route yet to a task, ask for one and wait for the
/// answer (processing other input meanwhile), as legacy mroute() does.
pub fn maybe_request(lib: &mut Lib, dst: i32) {
    if cget!(pvmrouteopt) != 3
        || dst <= 0
        || dst & 0x4000_0000 != 0
        || dst == lib.mytid
        || lib.routes.contains_key(&dst)
    {
        return;
    }
    let bound = if same_host(dst, lib.mytid) {
        bind_unix().map(|(s, p)| (s, Some(p.clone()), p))
    } else {
        let ha = lib.host_addr.clone();
        bind_tcp(&ha).map(|(s, a)| (s, None, a))
    };
    let Ok((sock, path, addr)) = bound else {
        lib.routes.insert(dst, RouteState::Denied);
        return;
    };
    lib.routes.insert(dst, RouteState::Requested { sock, path });
    let me = lib.mytid;
    let mut p = crate::core::xdr();
    let _ = p.pk_int(&[TDPROTOCOL]);
    let _ = p.pk_str(addr.as_bytes());
    pk_route_ext(&mut p);
    if lib.send_raw(me, dst, TC_CONREQ, SYSCTX_TC, 0, p.body(), true).is_err() {
        lib.routes.insert(dst, RouteState::Denied);
        return;
    }
    let mut n = crate::core::xdr();
    let _ = n.pk_int(&[1, SYSCTX_TC, TC_TASKEXIT, 1, dst]);
    let _ = lib.send_raw(me, TIDPVMD, TM_NOTIFY, SYSCTX_TM, 0, n.body(), true);
    let deadline = Instant::now() + CONACK_WAIT;
    while matches!(lib.routes.get(&dst), Some(RouteState::Requested { .. })) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || lib.pump(Some(left)).is_err() {
            if let Some(RouteState::Requested { path: Some(p), .. }) = lib.routes.remove(&dst) {
                let _ = std::fs::remove_file(p);
            }
            lib.routes.insert(dst, RouteState::Denied);
            break;
        }
    }
}
