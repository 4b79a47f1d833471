//! L4 proxy mode (etcd's `etcd gateway`): gatewayd without a local member,
//! forwarding client TCP connections to the members of a remote cluster.
//! Each new connection goes to the next healthy endpoint (round robin);
//! an endpoint that refuses or times out is marked down and skipped until
//! a background check finds it accepting again, so clients fail over to
//! the others. Bytes are passed through untouched (TLS included).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

/// How long a connection attempt to a member may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(1);

pub struct Endpoint {
    pub addr: String,
    up: AtomicBool,
}

pub struct L4Proxy {
    endpoints: Vec<Endpoint>,
    next: AtomicUsize,
    /// How often endpoints marked down are tried again (etcd's --retry-delay).
    retry_delay: Duration,
}

impl L4Proxy {
    pub fn new(endpoints: Vec<String>, retry_delay: Duration) -> Arc<L4Proxy> {
        Arc::new(L4Proxy {
            endpoints: endpoints
                .into_iter()
                .map(|addr| Endpoint {
                    addr,
                    up: AtomicBool::new(true),
                })
                .collect(),
            next: AtomicUsize::new(0),
            retry_delay,
        })
    }

    /// Whether each endpoint is currently considered up.
    pub fn health(&self) -> Vec<(String, bool)> {
        self.endpoints
            .iter()
            .map(|e| (e.addr.clone(), e.up.load(Ordering::Relaxed)))
            .collect()
    }

    async fn dial(addr: &str) -> std::io::Result<TcpStream> {
        match tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connect timed out",
            )),
        }
    }

    /// A connection to the next endpoint that accepts one: healthy ones in
    /// turn first, then (all down) every one once more.
    async fn connect(&self) -> Option<TcpStream> {
        let n = self.endpoints.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for pass in [true, false] {
            for i in 0..n {
                let e = &self.endpoints[(start + i) % n];
                if pass && !e.up.load(Ordering::Relaxed) {
                    continue;
                }
                match Self::dial(&e.addr).await {
                    Ok(s) => {
                        e.up.store(true, Ordering::Relaxed);
                        return Some(s);
                    }
                    Err(err) => {
                        if e.up.swap(false, Ordering::Relaxed) {
                            tracing::warn!(endpoint = %e.addr, error = %err, "member unreachable; failing over");
                        }
                    }
                }
            }
        }
        None
    }

    /// Re-check endpoints marked down every retry delay.
    async fn monitor(self: Arc<Self>) {
        loop {
            tokio::time::sleep(self.retry_delay).await;
            for e in &self.endpoints {
                if !e.up.load(Ordering::Relaxed) && Self::dial(&e.addr).await.is_ok() {
                    tracing::info!(endpoint = %e.addr, "member reachable again");
                    e.up.store(true, Ordering::Relaxed);
                }
            }
        }
    }

    /// Accept and forward until `stop` resolves.
    pub async fn serve(
        self: Arc<Self>,
        listeners: Vec<(SocketAddr, TcpListener)>,
        stop: impl std::future::Future<Output = ()>,
    ) {
        tokio::spawn(self.clone().monitor());
        for (addr, listener) in listeners {
            tracing::info!(%addr, endpoints = ?self.health(), "L4 proxy serving");
            let proxy = self.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((mut client, _)) = listener.accept().await else {
                        continue;
                    };
                    let _ = client.set_nodelay(true);
                    let proxy = proxy.clone();
                    tokio::spawn(async move {
                        let Some(mut upstream) = proxy.connect().await else {
                            tracing::warn!("no member reachable; connection dropped");
                            return;
                        };
                        let _ = upstream.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    });
                }
            });
        }
        stop.await;
    }
}
