//! Local access checks (hardening).
//!
//! The task socket is created with the process umask like the legacy one (`srwxr-xr-x`), so the
//! kernel already refuses other users' connect(). Sockets can still end up more open (a umask
//! of 0, a shared PVM_TMP, someone's chmod); this check makes the rule hold regardless: only
//! processes of the daemon's own user may talk to it. The authentication files of the connect
//! handshake (0600, owned by us) are the second line of defence.

/// Why a connection must be refused, or None if its peer runs as our user.
pub fn foreign_peer(stream: &tokio::net::UnixStream) -> Option<String> {
    let me = crate::sys::getuid();
    match stream.peer_cred() {
        Ok(c) if c.uid() == me => None,
        Ok(c) => Some(format!(
            "peer pid {} runs as uid {}, this pvmd as uid {me}",
            c.pid().map_or("?".to_string(), |p| p.to_string()),
            c.uid()
        )),
        Err(e) => Some(format!("can't read the peer's credentials: {e}")),
    }
}
