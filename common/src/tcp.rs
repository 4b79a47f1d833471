//! TCP listeners for gRPC servers (clients on gatewayd, peers on raftd).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// HTTP/2 flow-control windows of the TCP ports (clients on gatewayd, peers
/// on raftd), per stream and per connection. With hyper's 1 MiB server
/// default a connection carried 1 MiB before the receiving daemon's one
/// thread handed window back: 256 KiB to 1 MiB values, and raft entries
/// holding them, waited for that round trip. Bodies are read as they
/// arrive and every message is bounded by its decoder, so a window is
/// credit for data already on its way, not room a sender can park bytes in.
pub const STREAM_WINDOW_BYTES: u32 = 4 << 20;
pub const CONNECTION_WINDOW_BYTES: u32 = 16 << 20;

/// A TCP listener on `addr` with SO_REUSEADDR (as Go's listeners, and
/// tokio's, always set it) and SO_REUSEPORT when `reuse_port`
/// (`--socket-reuse-port`).
pub fn bind(addr: std::net::SocketAddr, reuse_port: bool) -> io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    if reuse_port {
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    socket.listen(1024)
}

/// A gRPC server for a TCP port (Nagle off, the windows above).
pub fn server() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
}

/// Accepted connections with Nagle off (gRPC responses are small writes,
/// and Nagle with delayed ACKs would add ~40 ms to some of them; tonic's
/// own `tcp_nodelay` only applies to listeners it binds itself), and
/// writes batched (see `BatchedWrites`).
pub fn nodelay_batched_connections(
    listener: tokio::net::TcpListener,
) -> impl futures::Stream<Item = io::Result<BatchedWrites>> {
    use futures::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|conn| {
        let conn = conn?;
        conn.set_nodelay(true)?;
        Ok(BatchedWrites(conn))
    })
}

/// A connection that tells HTTP/2 it has no vectored writes. h2 then
/// copies DATA frames of up to 1 KiB into its write buffer, where frames
/// of many streams go out in one write(2); with vectored writes it chains
/// every frame over 256 bytes and flushes it alone. A watch event with a
/// few hundred bytes of value, fanned out to 1,000 streams, took 1,000
/// writes instead of one per connection, and a unary response over 256
/// bytes took two (the DATA frame, then the trailers).
pub struct BatchedWrites(TcpStream);

impl AsyncRead for BatchedWrites {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for BatchedWrites {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
    // is_write_vectored: false, the default.
}

impl Connected for BatchedWrites {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.0.connect_info()
    }
}
