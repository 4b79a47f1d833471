//! DNS SRV discovery of a cluster's client endpoints, as etcd's gateway
//! does it (`--discovery-srv example.com` → `_etcd-client._tcp` and
//! `_etcd-client-ssl._tcp` records), with `common::dns_srv`'s questions.

use std::net::SocketAddr;

use common::dns_srv::{parse, query, SrvError, TIMEOUT};
use tokio::net::UdpSocket;

pub use common::dns_srv::system_name_server;

/// `host:port` of every client endpoint `domain` publishes (plain and TLS
/// records), asking `server`.
pub async fn client_endpoints(domain: &str, server: SocketAddr) -> Result<Vec<String>, SrvError> {
    let socket = UdpSocket::bind(if server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    })
    .await?;
    socket.connect(server).await?;
    let mut endpoints = Vec::new();
    for (i, service) in ["_etcd-client._tcp", "_etcd-client-ssl._tcp"]
        .iter()
        .enumerate()
    {
        let name = format!("{service}.{domain}");
        socket.send(&query(0x7421 + i as u16, &name)).await?;
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(TIMEOUT, socket.recv(&mut buf))
            .await
            .map_err(|_| SrvError::Timeout(server))??;
        for (target, port) in parse(&buf[..n])? {
            endpoints.push(format!("{}:{port}", target.trim_end_matches('.')));
        }
    }
    if endpoints.is_empty() {
        return Err(SrvError::NoRecords(domain.to_string()));
    }
    Ok(endpoints)
}
