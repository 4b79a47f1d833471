//! A network between members that a test can cut, slow down and make
//! lossy, one link at a time, built from network namespaces it creates
//! itself (nothing on the host's own network changes).
//!
//! Each member's raftd runs in a namespace of its own (`raftd
//! --peer-netns`), where member k's peer address 10.199.0.(k+1) is a local
//! address. Member i dialling member j reaches a relay listening on j's
//! address inside i's namespace; the relay opens the onward connection
//! inside j's namespace, so every ordered pair of members has a link of its
//! own. gatewayd and storaged stay in the host namespace (they talk to
//! raftd over Unix sockets), so clients keep reaching every member on
//! loopback while raft traffic between members is cut.
//!
//! This machine's kernel has no netem qdisc, so delay and loss are made by
//! the relay: every chunk is held for the link's delay, and a "lost" one
//! for a retransmission timeout more (TCP repairs loss by resending, so the
//! application sees late bytes, in order).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What a link does to the bytes that cross it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Link {
    Up,
    /// Nothing crosses; connections stay open and resume when healed, as
    /// TCP does across a partition shorter than its give-up time.
    Cut,
    /// Each chunk is late by `delay`; a share `loss` of them by a
    /// retransmission timeout (200 ms) more.
    Slow {
        delay: Duration,
        loss: f64,
    },
}

/// TCP's minimum retransmission timeout on Linux.
const RTO: Duration = Duration::from_millis(200);

type Links = Arc<Mutex<HashMap<(usize, usize), Link>>>;

pub struct Net {
    prefix: String,
    /// Member slots: the peer port of each, by slot.
    ports: Mutex<Vec<u16>>,
    links: Links,
    /// The relays' runtime (Option so that Drop can shut it down without
    /// blocking: a Net is dropped inside tests' async code).
    rt: Option<tokio::runtime::Runtime>,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Member k's peer address (inside every member's namespace).
pub fn address(k: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 199, 0, k as u8 + 1)
}

/// Make member k's peer address local in namespace `ns` (where the relay
/// towards k, or k itself, listens on it).
fn add_address(ns: &str, k: usize) -> Result<(), String> {
    let addr = format!("{}/32", address(k));
    ip(&["-n", ns, "addr", "add", &addr, "dev", "lo"])
}

/// Run `f` on a thread that entered the network namespace at `path`:
/// sockets it opens live there.
fn in_namespace<T: Send + 'static>(
    path: PathBuf,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    std::thread::spawn(move || {
        common::lifecycle::enter_network_namespace(&path).map_err(std::io::Error::other)?;
        f()
    })
    .join()
    .map_err(|_| std::io::Error::other("namespace thread panicked"))?
}

impl Net {
    /// Namespaces for members whose peer ports are `ports`; None where
    /// this machine does not let the test create them (not root).
    pub fn create(ports: &[u16]) -> Option<Net> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("netsplit")
            .enable_all()
            .build()
            .ok()?;
        let net = Net {
            prefix: format!("triad{}x{}", std::process::id(), rand_suffix()),
            ports: Mutex::new(Vec::new()),
            links: Arc::new(Mutex::new(HashMap::new())),
            rt: Some(rt),
        };
        for &p in ports {
            if let Err(e) = net.add(p) {
                eprintln!("netsplit: {e}; no network faults");
                return None;
            }
        }
        Some(net)
    }

    fn name(&self, k: usize) -> String {
        format!("{}m{k}", self.prefix)
    }

    /// The namespace member k's raftd runs in (TRIAD_PEER_NETNS).
    pub fn namespace(&self, k: usize) -> PathBuf {
        PathBuf::from("/run/netns").join(self.name(k))
    }

    /// Add a member slot whose raftd listens on `port`; returns its index.
    pub fn add(&self, port: u16) -> Result<usize, String> {
        let mut ports = self.ports.lock().map_err(|e| e.to_string())?;
        let k = ports.len();
        let name = self.name(k);
        ip(&["netns", "add", &name])?;
        let local = || -> Result<(), String> {
            ip(&["-n", &name, "link", "set", "lo", "up"])?;
            // Its own address and those of every member before it.
            (0..=k).try_for_each(|j| add_address(&name, j))
        };
        if let Err(e) = local() {
            let _ = ip(&["netns", "del", &name]);
            return Err(e);
        }
        // The others learn its address.
        (0..k).try_for_each(|i| add_address(&self.name(i), k))?;
        ports.push(port);
        drop(ports);
        for i in 0..k {
            self.relay(i, k, port)?;
            let back = self.ports.lock().map_err(|e| e.to_string())?[i];
            self.relay(k, i, back)?;
        }
        Ok(k)
    }

    /// Relay for member `from` dialling member `to` at `port`.
    fn relay(&self, from: usize, to: usize, port: u16) -> Result<(), String> {
        let at = SocketAddr::from((address(to), port));
        let listener = in_namespace(self.namespace(from), move || {
            let l = std::net::TcpListener::bind(at)?;
            l.set_nonblocking(true)?;
            Ok(l)
        })
        .map_err(|e| format!("relay {from}->{to} on {at}: {e}"))?;
        let (links, target_ns) = (self.links.clone(), self.namespace(to));
        let rt = self.rt.as_ref().ok_or("no runtime")?;
        let _guard = rt.enter();
        let listener = tokio::net::TcpListener::from_std(listener).map_err(|e| e.to_string())?;
        rt.spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let (links, ns) = (links.clone(), target_ns.clone());
                tokio::spawn(async move {
                    let Ok(Ok(outbound)) = tokio::task::spawn_blocking(move || {
                        in_namespace(ns, move || {
                            let s = std::net::TcpStream::connect_timeout(&at, RTO * 5)?;
                            s.set_nonblocking(true)?;
                            Ok(s)
                        })
                    })
                    .await
                    else {
                        return; // the member is down: so is the dialler's connection
                    };
                    let Ok(outbound) = TcpStream::from_std(outbound) else {
                        return;
                    };
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    let (ir, iw) = inbound.into_split();
                    let (or, ow) = outbound.into_split();
                    tokio::select! {
                        _ = pump(ir, ow, links.clone(), (from, to)) => {}
                        _ = pump(or, iw, links, (to, from)) => {}
                    }
                });
            }
        });
        Ok(())
    }

    fn set(&self, a: usize, b: usize, link: Link) {
        if let Ok(mut l) = self.links.lock() {
            l.insert((a, b), link);
            l.insert((b, a), link);
        }
    }

    fn members(&self) -> usize {
        self.ports.lock().map(|p| p.len()).unwrap_or(0)
    }

    /// Cut member k off from every other member.
    pub fn isolate(&self, k: usize) {
        self.around(k, Link::Cut);
    }

    /// Every link of member k behaves as `link`.
    pub fn around(&self, k: usize, link: Link) {
        for j in 0..self.members() {
            if j != k {
                self.set(k, j, link);
            }
        }
    }

    /// Cut the link between members a and b only.
    pub fn cut(&self, a: usize, b: usize) {
        self.set(a, b, Link::Cut);
    }

    /// Every link up again.
    pub fn heal(&self) {
        if let Ok(mut l) = self.links.lock() {
            l.clear();
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
        for k in 0..self.members() {
            let _ = ip(&["netns", "del", &self.name(k)]);
        }
    }
}

fn rand_suffix() -> u32 {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Copy one direction of a relayed connection through its link.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    links: Links,
    pair: (usize, usize),
) {
    // Chunks wait in order in a bounded queue: reading stops when it is
    // full, so a cut or slow link pushes back on the sender as TCP does.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(tokio::time::Instant, Vec<u8>)>(64);
    let link = move || {
        links
            .lock()
            .map(|l| l.get(&pair).copied().unwrap_or(Link::Up))
            .unwrap_or(Link::Up)
    };
    let link_w = link.clone();
    let reader = async move {
        let mut rng = crate::XorShift(0x9e37_79b9 ^ ((pair.0 as u64) << 8 | pair.1 as u64));
        let mut last = tokio::time::Instant::now();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let mut due = tokio::time::Instant::now();
            if let Link::Slow { delay, loss } = link() {
                due += delay;
                if (rng.next_u64() % 10_000) as f64 / 10_000.0 < loss {
                    due += RTO;
                }
            }
            // In order: never before the chunk ahead of it.
            last = last.max(due);
            if tx.send((last, buf[..n].to_vec())).await.is_err() {
                return;
            }
        }
    };
    let writer = async move {
        while let Some((due, bytes)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            while link_w() == Link::Cut {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
    };
    tokio::join!(reader, writer);
}
