//! systemd socket activation: listening sockets passed in by the service
//! manager (`LISTEN_FDS`, from a `.socket` unit) are used instead of
//! binding, so the port stays open while the daemon restarts and clients
//! queue instead of being refused.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::FromRawFd;

/// The TCP listeners systemd passed to this process, with their addresses
/// (empty when not socket-activated). Taken once: the variables are
/// cleared so child processes do not see them.
pub fn inherited_listeners() -> Vec<(SocketAddr, TcpListener)> {
    let fds = match sd_notify::listen_fds() {
        Ok(fds) => fds,
        Err(_) => return Vec::new(),
    };
    let mut out = Vec::new();
    for fd in fds {
        // SAFETY: sd_notify::listen_fds checked LISTEN_PID is this process;
        // systemd hands these descriptors to us alone, each exactly once.
        let listener = unsafe { TcpListener::from_raw_fd(fd) };
        match listener.local_addr() {
            Ok(addr) => out.push((addr, listener)),
            Err(e) => tracing::warn!(fd, error = %e, "ignoring a passed socket that is not TCP"),
        }
    }
    out
}

/// The inherited listener for `addr`, if systemd passed one (a wildcard
/// listen address matches a socket bound to the same port).
pub fn take_listener(
    inherited: &mut Vec<(SocketAddr, TcpListener)>,
    addr: SocketAddr,
) -> Option<TcpListener> {
    let at = inherited.iter().position(|(a, _)| {
        *a == addr
            || (a.port() == addr.port() && (a.ip().is_unspecified() || addr.ip().is_unspecified()))
    })?;
    Some(inherited.remove(at).1)
}
