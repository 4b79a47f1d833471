//! Who may call this raftd over TCP, and how it proves itself to others.
//!
//! Every member holds the cluster's peer secret: 32 random bytes that a
//! leader proposes once through raft (the first one applied stays), so
//! they reach members only as the log and snapshots do, over the leader's
//! own connections to the members' peer URLs. Every call to a peer names
//! the caller's cluster and member ID and carries a proof, a digest of the
//! secret and both IDs; the secret itself never travels outside raft.
//!
//! A receiver that knows the secret refuses raft messages whose proof is
//! wrong (before it knows it, during a new cluster's first election, it
//! checks only the cluster ID, as etcd does). Forwarded client work
//! (`RaftLocal` on the peer port) is trusted with the identity of the
//! client it carries, so it is refused outright until the secret is known
//! and must come from a current member. With peer TLS and client
//! certificates the certificate must also belong to that member (a name
//! or address matching the host of one of its peer URLs); the CA, the CRL
//! and `--peer-cert-allowed-cn`/`-hostname` were checked at the handshake.

use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::transport::Channel;
use tonic::{Request, Status};

use crate::types::NodeId;
use crate::Raft;
use common::cert_names::CertNames;
use common::proto::storage::raft_request::Op;
use common::proto::storage::storage_client::StorageClient;
use common::proto::storage::{RaftRequest, StatusRequest};

const CLUSTER_METADATA: &str = "triad-cluster-id";
const MEMBER_METADATA: &str = "triad-member-id";
const PROOF_METADATA: &str = "triad-peer-proof";

/// Whether a peer's certificate must belong to the member it calls as
/// (`--peer-client-cert-auth`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CertPolicy {
    pub required: bool,
}

pub struct PeerAuth {
    cluster_id: u64,
    member_id: NodeId,
    secret: RwLock<Option<Arc<Vec<u8>>>>,
    certs: CertPolicy,
}

/// This raftd's peer auth, set once at start (outgoing calls reach it from
/// deep inside openraft's network and the forwarding links).
static PEER_AUTH: OnceLock<Arc<PeerAuth>> = OnceLock::new();

/// The member sending a call that arrived over TCP (an extension the
/// peer port's interceptor adds to every request it admits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCaller(pub NodeId);

impl PeerAuth {
    pub fn install(cluster_id: u64, member_id: NodeId, certs: CertPolicy) -> Arc<PeerAuth> {
        let auth = PEER_AUTH.get_or_init(|| {
            Arc::new(PeerAuth {
                cluster_id,
                member_id,
                secret: RwLock::new(None),
                certs,
            })
        });
        common::proto::set_forward_credentials(attach);
        auth.clone()
    }

    fn secret(&self) -> Option<Arc<Vec<u8>>> {
        self.secret.read().ok().and_then(|s| s.clone())
    }

    pub fn knows_secret(&self) -> bool {
        self.secret().is_some()
    }

    fn learn(&self, secret: Vec<u8>) {
        if let Ok(mut s) = self.secret.write() {
            if s.is_none() {
                tracing::info!("the cluster's peer secret is known; peer calls are authenticated");
                *s = Some(Arc::new(secret));
            }
        }
    }

    /// The proof `member` of this cluster presents.
    fn proof(&self, secret: &[u8], member: NodeId) -> String {
        let mut bytes = secret.to_vec();
        bytes.extend_from_slice(&self.cluster_id.to_be_bytes());
        bytes.extend_from_slice(&member.to_be_bytes());
        common::secrets::digest(&bytes)
    }

    fn add_credentials(&self, md: &mut MetadataMap) {
        let hex = |v: u64| MetadataValue::try_from(format!("{v:x}")).ok();
        if let Some(v) = hex(self.cluster_id) {
            md.insert(CLUSTER_METADATA, v);
        }
        if let Some(v) = hex(self.member_id) {
            md.insert(MEMBER_METADATA, v);
        }
        let proof = self.secret().map(|s| self.proof(&s, self.member_id));
        if let Some(v) = proof.and_then(|p| MetadataValue::try_from(p).ok()) {
            md.insert(PROOF_METADATA, v);
        }
    }

    /// The calling member of an incoming peer call: its IDs, its proof
    /// (required once this raftd knows the secret, or always with
    /// `need_secret`) and its certificate.
    fn caller<T>(&self, req: &Request<T>, need_secret: bool) -> Result<NodeId, Status> {
        let md = req.metadata();
        let id = |key: &str| {
            md.get(key)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| u64::from_str_radix(v, 16).ok())
        };
        let cluster = id(CLUSTER_METADATA).unwrap_or(0);
        if cluster != self.cluster_id {
            return Err(Status::permission_denied(format!(
                "request cluster ID mismatch (got {cluster:x} want {:x})",
                self.cluster_id
            )));
        }
        let member = id(MEMBER_METADATA)
            .filter(|m| *m != 0 && *m != self.member_id)
            .ok_or_else(|| Status::permission_denied("peer call without a member ID"))?;
        match self.secret() {
            Some(secret) => {
                let given = md.get(PROOF_METADATA).and_then(|v| v.to_str().ok());
                let expected = self.proof(&secret, member);
                if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), expected.as_bytes())) {
                    return Err(Status::unauthenticated(format!(
                        "member {member:x} did not prove it belongs to this cluster"
                    )));
                }
            }
            None if need_secret => {
                return Err(Status::unavailable(
                    "this member does not know the cluster's peer secret yet",
                ))
            }
            None => {}
        }
        Ok(member)
    }

    /// The member ID a call names (0 if none), before it is admitted.
    pub fn caller_id<T>(&self, req: &Request<T>) -> NodeId {
        req.metadata()
            .get(MEMBER_METADATA)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| u64::from_str_radix(v, 16).ok())
            .unwrap_or(0)
    }

    /// Admit a raft message (`from` as the message says): the caller's
    /// credentials, and its certificate if required.
    pub fn admit_raft<T>(&self, req: &Request<T>, raft: &Raft, from: NodeId) -> Result<(), Status> {
        let member = self.caller(req, false)?;
        if member != from {
            return Err(Status::permission_denied(format!(
                "a message from {from:x} sent by member {member:x}"
            )));
        }
        self.check_certificate(req, raft, member)
    }

    /// Admit forwarded client work: a proven, current member of this
    /// cluster, certificate included.
    pub fn admit_forwarded<T>(&self, req: &Request<T>, raft: &Raft) -> Result<NodeId, Status> {
        let member = self.caller(req, true)?;
        let known = {
            let metrics = raft.metrics();
            let m = metrics.borrow_watched();
            m.membership_config.membership().get_node(&member).is_some()
        };
        if !known {
            return Err(Status::permission_denied(format!(
                "{member:x} is not a member of this cluster"
            )));
        }
        self.check_certificate(req, raft, member)?;
        Ok(member)
    }

    fn check_certificate<T>(
        &self,
        req: &Request<T>,
        raft: &Raft,
        member: NodeId,
    ) -> Result<(), Status> {
        if !self.certs.required {
            return Ok(());
        }
        let certs = req.peer_certs();
        let Some(cert) = certs.as_ref().and_then(|c| c.first()) else {
            return Err(Status::unauthenticated(
                "peer call without a client certificate",
            ));
        };
        let names = CertNames::parse(cert.as_ref())
            .ok_or_else(|| Status::unauthenticated("unreadable peer certificate"))?;
        let urls = {
            let metrics = raft.metrics();
            let m = metrics.borrow_watched();
            m.membership_config
                .membership()
                .get_node(&member)
                .map(|n| n.peer_urls.clone())
        };
        // A member not in this raftd's membership yet (it learns of it
        // from the log) is judged by the CA alone.
        if let Some(urls) = urls {
            let hosts: Vec<&str> = urls.iter().filter_map(|u| url_host(u)).collect();
            if !hosts.iter().any(|h| names.covers(h)) {
                return Err(Status::permission_denied(format!(
                    "peer certificate does not belong to member {member:x} ({})",
                    hosts.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// Take the secret from storaged if it has applied one; whether it had.
    pub async fn recall(&self, storage: &StorageClient<Channel>) -> bool {
        let status = storage.clone().status(StatusRequest {}).await;
        match status.map(|s| s.into_inner().peer_secret) {
            Ok(secret) if !secret.is_empty() => {
                self.learn(secret);
                true
            }
            _ => false,
        }
    }

    /// Learn the secret from storaged; while this raftd leads and none
    /// was ever applied, propose one. Runs until the secret is known.
    pub async fn learn_secret(self: Arc<Self>, storage: StorageClient<Channel>, raft: Raft) {
        let mut proposed = false;
        loop {
            if self.recall(&storage).await {
                return;
            }
            let leads = raft.metrics().borrow_watched().current_leader == Some(self.member_id);
            if leads && !proposed {
                match fresh_secret() {
                    Ok(secret) => {
                        let req = RaftRequest {
                            op: Some(Op::PeerSecret(secret)),
                            auth: None,
                            trace_parent: String::new(),
                        };
                        proposed = crate::own_proposals::propose_request(&raft, req)
                            .await
                            .is_ok();
                    }
                    Err(e) => tracing::error!(error = %e, "cannot draw a peer secret"),
                }
            }
            // Quick: until the secret is known, forwarded work is refused.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The largest messages the peer port decodes.
pub struct MessageLimits {
    /// A raft message: up to openraft's 300 entries per append, each at
    /// most a request of `--max-request-bytes` and its envelope.
    pub raft: usize,
    /// A forwarded batch of proposals (split to fit by the sender).
    pub forwarded: usize,
}

/// The most a forwarded batch may hold; larger batches are split.
pub const FORWARDED_BATCH_BYTES: usize = 16 * 1024 * 1024;

pub fn message_limits(max_request_bytes: usize) -> MessageLimits {
    let request = max_request_bytes.saturating_add(4096);
    MessageLimits {
        raft: request.saturating_mul(300).max(64 * 1024 * 1024),
        forwarded: FORWARDED_BATCH_BYTES.max(request).saturating_add(64 * 1024),
    }
}

/// Credentials on an outgoing call to a peer.
pub fn attach(md: &mut MetadataMap) {
    if let Some(auth) = PEER_AUTH.get() {
        auth.add_credentials(md);
    }
}

/// `msg` as a call to a peer, with this member's credentials.
pub fn request<T>(msg: T) -> Request<T> {
    let mut req = Request::new(msg);
    attach(req.metadata_mut());
    req
}

fn fresh_secret() -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut secret = vec![0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut secret)?;
    Ok(secret)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The host of an http(s) URL (brackets of an IPv6 literal removed).
fn url_host(url: &str) -> Option<&str> {
    let hostport = common::config::url_host_port(url).ok()?;
    let host = match hostport.rsplit_once(':') {
        Some((h, _)) => h,
        None => hostport,
    };
    Some(host.trim_start_matches('[').trim_end_matches(']'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(member: NodeId) -> PeerAuth {
        PeerAuth {
            cluster_id: 0xc1,
            member_id: member,
            secret: RwLock::new(None),
            certs: CertPolicy::default(),
        }
    }

    fn call_from(sender: &PeerAuth) -> Request<()> {
        let mut req = Request::new(());
        sender.add_credentials(req.metadata_mut());
        req
    }

    #[test]
    fn proofs_bind_the_secret_the_cluster_and_the_member() {
        let (a, b) = (auth(1), auth(2));
        // Before the secret: IDs only for raft, nothing for forwarded work.
        assert_eq!(b.caller(&call_from(&a), false).ok(), Some(1));
        assert_eq!(
            b.caller(&call_from(&a), true).map_err(|s| s.code()),
            Err(tonic::Code::Unavailable)
        );
        a.learn(vec![7; 32]);
        b.learn(vec![7; 32]);
        assert_eq!(b.caller(&call_from(&a), true).ok(), Some(1));
        // A caller without the secret, or with another one, is refused.
        let stranger = auth(1);
        assert_eq!(
            b.caller(&call_from(&stranger), false).map_err(|s| s.code()),
            Err(tonic::Code::Unauthenticated)
        );
        stranger.learn(vec![8; 32]);
        assert!(b.caller(&call_from(&stranger), false).is_err());
        // A proof copied from member 1 does not make member 3.
        let mut forged = call_from(&a);
        forged
            .metadata_mut()
            .insert(MEMBER_METADATA, MetadataValue::from_static("3"));
        assert!(b.caller(&forged, true).is_err());
        // Another cluster, or no IDs at all.
        let mut other = auth(1);
        other.cluster_id = 0xc2;
        assert_eq!(
            b.caller(&call_from(&other), false).map_err(|s| s.code()),
            Err(tonic::Code::PermissionDenied)
        );
        assert!(b.caller(&Request::new(()), false).is_err());
    }

    #[test]
    fn url_hosts() {
        assert_eq!(url_host("https://10.0.0.1:2380"), Some("10.0.0.1"));
        assert_eq!(url_host("http://m1.example:2380/"), Some("m1.example"));
        assert_eq!(url_host("https://[::1]:2380"), Some("::1"));
    }
}
