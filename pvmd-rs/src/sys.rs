//! The few libc calls std does not offer. All `unsafe` of the daemon is in this file.

/// Real user id (the legacy names its files after it).
pub fn getuid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

/// Local broken-down time of `secs` since the epoch: (month 1-12, day, hour, min, sec, weekday
/// 0=Sunday, year).
pub fn localtime(secs: i64) -> (u32, u32, u32, u32, u32, u32, i32) {
    let t: libc::time_t = secs as libc::time_t;
    // SAFETY: an all-zero tm is a valid value to be overwritten; localtime_r only writes into it.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the duration of the call.
    let ok = unsafe { !libc::localtime_r(&t, &mut tm).is_null() };
    if !ok {
        return (1, 1, 0, 0, 0, 4, 1970);
    }
    (
        (tm.tm_mon + 1) as u32,
        tm.tm_mday as u32,
        tm.tm_hour as u32,
        tm.tm_min as u32,
        tm.tm_sec as u32,
        tm.tm_wday as u32,
        tm.tm_year + 1900,
    )
}

/// Ignores SIGHUP, as the legacy daemon does (it outlives the shell that started it).
pub fn ignore_sighup() {
    // SAFETY: installing SIG_IGN for SIGHUP has no memory-safety implications.
    unsafe {
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
    }
}

/// Points stdin, stdout and stderr at /dev/null so that whoever reads our stdout (pvm_start_pvmd,
/// a test) sees end of file once the address line has been written.
pub fn detach_stdio() -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let null = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null")?;
    for fd in 0..3 {
        // SAFETY: dup2 on valid descriptors; the old ones are replaced atomically.
        if unsafe { libc::dup2(null.as_raw_fd(), fd) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Sends `sig` to `pid` (errors, e.g. the task is gone, are ignored as the legacy does).
pub fn kill(pid: i32, sig: i32) {
    if pid <= 0 {
        return;
    }
    // SAFETY: kill(2) has no memory-safety preconditions; pid > 0 targets one process.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Multi-host: forks; the parent gets `Ok(true)` and should exit, the child `Ok(false)` and
/// starts a new session so that it outlives the rsh that started it (legacy slave start-up).
/// Only call while the process has a single thread.
pub fn fork_detach() -> std::io::Result<bool> {
    // SAFETY: called before any thread or runtime exists; the child only continues Rust code
    // that owns no locks.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if pid > 0 {
        return Ok(true);
    }
    // SAFETY: setsid has no memory-safety preconditions.
    unsafe {
        libc::setsid();
    }
    Ok(false)
}

// ---- hardening: ICMP errors on the pvmd <-> pvmd socket ----

/// Asks the kernel to queue ICMP errors on a UDP socket (IP_RECVERR), so that a peer whose
/// port is closed can be noticed (see `guard::Unreachable`).
pub fn set_recverr(fd: std::os::fd::RawFd) -> std::io::Result<()> {
    set_int_opt(fd, libc::IPPROTO_IP, libc::IP_RECVERR, 1)
}

/// setsockopt(2) of one `int` option.
fn set_int_opt(fd: std::os::fd::RawFd, level: libc::c_int, opt: libc::c_int, v: libc::c_int) -> std::io::Result<()> {
    // SAFETY: fd is a socket owned by the caller; the option value is a valid c_int.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            &v as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Takes one entry of the socket's error queue: the destination of the datagram that failed and
/// whether the failure was "connection refused" (ICMP port unreachable). None when empty.
pub fn read_errqueue(fd: std::os::fd::RawFd) -> Option<(std::net::SocketAddrV4, bool)> {
    let mut data = [0u8; 64];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: all-zero sockaddr_in and msghdr are valid values to be filled in.
    let mut name: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    let mut ctl = [0u64; 64];
    // SAFETY: as above.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = &mut name as *mut libc::sockaddr_in as *mut libc::c_void;
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = ctl.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = std::mem::size_of_val(&ctl);
    // SAFETY: every pointer in msg refers to a live local buffer of the stated size.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT) };
    if n < 0 {
        return None;
    }
    let mut refused = false;
    // SAFETY: CMSG_* walk the control buffer the kernel just filled, within msg_controllen.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::IPPROTO_IP && (*c).cmsg_type == libc::IP_RECVERR {
                let ee = libc::CMSG_DATA(c) as *const libc::sock_extended_err;
                refused = (*ee).ee_errno as i32 == libc::ECONNREFUSED;
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    let addr = std::net::SocketAddrV4::new(
        std::net::Ipv4Addr::from(u32::from_be(name.sin_addr.s_addr)),
        u16::from_be(name.sin_port),
    );
    Some((addr, refused))
}

/// Fixes glibc's malloc thresholds. By default glibc raises its mmap threshold each time a
/// large block is freed, after which 16 MB message buffers come from the heap and stay
/// resident: the daemon would keep its peak size forever. With a fixed threshold, blocks of a
/// megabyte and more are mapped and returned to the system when freed, and the heap top is
/// trimmed beyond 4 MB of free space.
pub fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator parameters; it is called before the runtime
        // starts any other thread.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 4 << 20);
        }
    }
}

/// Sets TCP_USER_TIMEOUT: written data that the peer's kernel has not acknowledged after
/// `ms` milliseconds fails the connection (ETIMEDOUT) instead of being retransmitted for the
/// kernel's default of about 15 minutes.
pub fn set_tcp_user_timeout(fd: std::os::fd::RawFd, ms: u32) -> std::io::Result<()> {
    set_int_opt(fd, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, ms as libc::c_int)
}

/// Turns TCP keepalive on: after `idle_s` seconds without traffic the kernel probes the peer
/// every `intvl_s` seconds and fails the connection after `cnt` unanswered probes (or earlier
/// under TCP_USER_TIMEOUT).
pub fn set_tcp_keepalive(fd: std::os::fd::RawFd, idle_s: u32, intvl_s: u32, cnt: u32) -> std::io::Result<()> {
    set_int_opt(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1)?;
    set_int_opt(fd, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, idle_s as libc::c_int)?;
    set_int_opt(fd, libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, intvl_s as libc::c_int)?;
    set_int_opt(fd, libc::IPPROTO_TCP, libc::TCP_KEEPCNT, cnt as libc::c_int)
}

/// Asks for `bytes` of send and receive buffer on a socket: SO_SNDBUF/SO_RCVBUF (the kernel caps
/// them at wmem_max/rmem_max), then the FORCE variants, which lift that cap where the process
/// may (CAP_NET_ADMIN) and fail harmlessly elsewhere. Returns the receive buffer obtained.
pub fn set_socket_buffers(fd: std::os::fd::RawFd, bytes: i32) -> i32 {
    for opt in [
        libc::SO_SNDBUF,
        libc::SO_RCVBUF,
        libc::SO_SNDBUFFORCE,
        libc::SO_RCVBUFFORCE,
    ] {
        let _ = set_int_opt(fd, libc::SOL_SOCKET, opt, bytes);
    }
    let mut got: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: got and len are valid locals of the stated size.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &mut got as *mut libc::c_int as *mut libc::c_void,
            &mut len,
        )
    };
    if r == 0 {
        got
    } else {
        0
    }
}

/// The MTU of the route to `to` (the outgoing interface's, or a smaller path MTU the kernel
/// learnt), from a throwaway connected UDP socket; nothing is sent. None if the kernel has no
/// route or does not say.
pub fn route_mtu(to: std::net::SocketAddrV4) -> Option<usize> {
    use std::os::fd::AsRawFd;
    let sock = std::net::UdpSocket::bind(("0.0.0.0", 0)).ok()?;
    sock.connect(to).ok()?;
    let mut mtu: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: the socket is open for the whole call; mtu and len are valid locals of the
    // stated size.
    let r = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MTU,
            &mut mtu as *mut libc::c_int as *mut libc::c_void,
            &mut len,
        )
    };
    (r == 0 && mtu > 0).then_some(mtu as usize)
}
