//! Unix-socket gRPC plumbing for the member-local links: binding a socket
//! (stale file replaced, mode 0600 or 0660), refusing peers whose uid is not
//! ours (or root), and lazily-connecting, self-reconnecting client channels.
//! Both ends use `UdsStream` (see there for why).

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use futures::{Stream, StreamExt};
use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};
use tonic::transport::{Channel, Endpoint};

use crate::uds_stream::UdsStream;

/// Bind `path`, replacing a stale socket file left by a crashed process.
/// `group_access` widens the mode from 0600 to 0660.
pub fn bind(path: &Path, group_access: bool) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    let mode = if group_access { 0o660 } else { 0o600 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(listener)
}

/// Accepted connections whose peer runs as our uid or as root; others are
/// dropped (and logged) before any byte is read.
pub fn incoming(listener: UnixListener) -> impl Stream<Item = io::Result<UdsStream>> {
    let own_uid = nix::unistd::geteuid().as_raw();
    tokio_stream::wrappers::UnixListenerStream::new(listener).filter_map(move |conn| async move {
        match conn {
            Ok(stream) => match stream.peer_cred() {
                Ok(cred) if cred.uid() == own_uid || cred.uid() == 0 => {
                    Some(UdsStream::new(stream))
                }
                Ok(cred) => {
                    tracing::warn!(
                        uid = cred.uid(),
                        "refused unix-socket peer with foreign uid"
                    );
                    None
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read unix-socket peer credentials");
                    None
                }
            },
            Err(e) => Some(Err(e)),
        }
    })
}

/// HTTP/2 flow-control window of each member-local link and of each stream
/// on it, both ends. hyper's server default (1 MiB) made a batch of large
/// values wait for the receiving daemon (one thread, busy) to hand back
/// window every MiB. The Unix sockets' peers are this member's own
/// daemons; the TCP ports have their own (`tcp`).
pub const LINK_WINDOW_BYTES: u32 = 16 << 20;

/// A server for a member-local link.
pub fn server() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .initial_connection_window_size(LINK_WINDOW_BYTES)
        .initial_stream_window_size(LINK_WINDOW_BYTES)
}

/// A channel to a Unix socket that connects on first use and reconnects
/// after the peer daemon restarts.
pub fn channel(path: &Path) -> Channel {
    let path: PathBuf = path.to_path_buf();
    // The URI is required by tonic but unused: the connector picks the socket.
    Endpoint::from_static("http://localhost")
        .initial_connection_window_size(LINK_WINDOW_BYTES)
        .initial_stream_window_size(LINK_WINDOW_BYTES)
        .connect_timeout(std::time::Duration::from_secs(1))
        .tcp_nodelay(true)
        .connect_with_connector_lazy(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                let stream = UnixStream::connect(path).await?;
                UdsStream::new(stream).map(TokioIo::new)
            }
        }))
}
