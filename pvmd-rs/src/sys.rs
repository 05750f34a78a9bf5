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
