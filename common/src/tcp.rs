//! TCP listeners for gRPC servers (clients on gatewayd, peers on raftd).

/// Accepted connections with Nagle off: gRPC responses are small writes,
/// and Nagle with delayed ACKs would add ~40 ms to some of them. (tonic's
/// own `tcp_nodelay` only applies to listeners it binds itself.)
pub fn nodelay_connections(
    listener: tokio::net::TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use futures::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|conn| {
        let conn = conn?;
        conn.set_nodelay(true)?;
        Ok(conn)
    })
}
