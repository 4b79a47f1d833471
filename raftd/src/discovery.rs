//! etcd 3.6's v3 discovery (and what etcd 3.4's shares with it), run once
//! by a member that has never started: register under `/_etcd/registry/<token>/members/<id>` in a discovery
//! cluster (etcd or triad), wait until `_config/size` members have, and
//! take the first `size` registrations (by create revision) as the initial
//! cluster. Registration is a plain put of this member's own key, so a
//! member that stopped half way through registers again harmlessly.

use std::time::Duration;

use common::config::Member;
use common::discovery::V3Discovery;
use common::proto::etcdserverpb::auth_client::AuthClient;
use common::proto::etcdserverpb::kv_client::KvClient;
use common::proto::etcdserverpb::watch_client::WatchClient;
use common::proto::etcdserverpb::watch_request::RequestUnion;
use common::proto::etcdserverpb::{
    AuthenticateRequest, PutRequest, RangeRequest, WatchCreateRequest, WatchRequest,
};
use common::proto::mvccpb::KeyValue;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};

/// etcd's discovery errors (the messages are etcd's).
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("discovery: invalid peer URL")]
    InvalidUrl,
    #[error("discovery: size key is bad")]
    BadSizeKey,
    #[error("discovery: size key not found")]
    SizeNotFound,
    #[error("discovery: cluster is full")]
    FullCluster,
    #[error("discovery: invalid URL")]
    InvalidDiscoveryUrl,
    #[error("discovery: found duplicate name")]
    DuplicateName,
    #[error("discovery: found duplicate id")]
    DuplicateId,
    #[error("discovery: bad discovery endpoint")]
    BadEndpoint,
    #[error("discovery: token not found")]
    TokenNotFound,
    #[error("discovery cluster {0} has duplicate url")]
    DuplicateUrl(String),
    /// The discovery cluster could not be reached or answered an error:
    /// retried.
    #[error("{0}")]
    Unreachable(String),
}

/// etcd's backoff between attempts: 2^n seconds, at most 2^8.
pub(crate) fn backoff(retries: u32) -> Duration {
    Duration::from_secs(1u64 << retries.min(8))
}

/// One registration seen in the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Registered {
    key: Vec<u8>,
    value: String,
    create_revision: i64,
}

/// The registrations so far, in create order.
#[derive(Debug, Default)]
pub(crate) struct Registrations(Vec<Registered>);

impl Registrations {
    /// Take one registration; etcd skips (and warns of) values that are no
    /// `name=url` and keys already seen.
    pub(crate) fn add(&mut self, key: &[u8], value: &[u8], create_revision: i64) {
        let value = String::from_utf8_lossy(value).trim().to_string();
        if !value.contains('=') {
            tracing::warn!(%value, "invalid peer info returned from discovery service");
            return;
        }
        if self.0.iter().any(|r| r.key == key) {
            tracing::warn!(%value, "found duplicate peer from discovery service");
            return;
        }
        self.0.push(Registered {
            key: key.to_vec(),
            value,
            create_revision,
        });
        self.0.sort_by_key(|r| r.create_revision);
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// etcd's fullness check: this member must be among the first `size`.
    pub(crate) fn check_room(&self, own_key: &[u8], size: usize) -> Result<(), DiscoveryError> {
        for (i, r) in self.0.iter().enumerate() {
            if r.key == own_key {
                break;
            }
            if i + 1 >= size {
                return Err(DiscoveryError::FullCluster);
            }
        }
        Ok(())
    }

    /// The initial cluster the first `size` registrations name.
    pub(crate) fn initial_cluster(&self, size: usize) -> Result<Cluster, DiscoveryError> {
        let spec: Vec<&str> = self.0.iter().take(size).map(|r| r.value.as_str()).collect();
        let spec = spec.join(",");
        let cluster =
            common::config::parse_initial_cluster(&spec).map_err(|_| DiscoveryError::InvalidUrl)?;
        let mut seen = std::collections::HashSet::new();
        for (_, urls) in &cluster {
            if urls.iter().any(|u| !seen.insert(u.clone())) {
                return Err(DiscoveryError::DuplicateUrl(spec));
            }
        }
        Ok(cluster)
    }
}

pub(crate) fn unreachable(e: impl std::fmt::Display) -> DiscoveryError {
    DiscoveryError::Unreachable(e.to_string())
}

/// A connection to the discovery cluster.
struct Registry {
    channel: Channel,
    auth_token: Option<MetadataValue<tonic::metadata::Ascii>>,
    request_timeout: Duration,
    /// `<registry>/_config/size` and `<registry>/members`.
    size_key: String,
    members: String,
}

impl Registry {
    /// Connect to the first endpoint that answers; authenticate when asked.
    async fn connect(d: &V3Discovery) -> Result<Registry, DiscoveryError> {
        let mut last = DiscoveryError::Unreachable("no discovery endpoint".into());
        for url in &d.endpoints {
            let mut endpoint = Endpoint::from_shared(url.clone())
                .map_err(unreachable)?
                .connect_timeout(d.dial_timeout)
                .http2_keep_alive_interval(d.keepalive_time)
                .keep_alive_timeout(d.keepalive_timeout)
                .keep_alive_while_idle(true);
            if let Some(tls) = &d.tls {
                let config = tls.client().map_err(|e| unreachable(e.0))?;
                endpoint = endpoint.tls_config(config).map_err(unreachable)?;
            }
            match endpoint.connect().await {
                Ok(channel) => {
                    let mut registry = Registry {
                        channel,
                        auth_token: None,
                        request_timeout: d.request_timeout,
                        size_key: format!("{}/_config/size", d.registry()),
                        members: d.members_prefix(),
                    };
                    if let Some((name, password)) = &d.credentials {
                        registry.authenticate(name, password).await?;
                    }
                    return Ok(registry);
                }
                Err(e) => last = unreachable(format!("{url}: {e}")),
            }
        }
        Err(last)
    }

    async fn authenticate(&mut self, name: &str, password: &str) -> Result<(), DiscoveryError> {
        let req = AuthenticateRequest {
            name: name.to_string(),
            password: password.to_string(),
        };
        let mut auth = AuthClient::new(self.channel.clone());
        let reply = self.unary(auth.authenticate(req)).await?;
        let token = MetadataValue::try_from(reply.token).map_err(unreachable)?;
        self.auth_token = Some(token);
        Ok(())
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(message);
        if let Some(token) = &self.auth_token {
            req.metadata_mut().insert("token", token.clone());
        }
        req
    }

    /// One unary call within the request timeout; any failure is retried.
    async fn unary<T>(
        &self,
        call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, DiscoveryError> {
        let reply = tokio::time::timeout(self.request_timeout, call)
            .await
            .map_err(unreachable)?
            .map_err(|s| unreachable(s.message()))?;
        Ok(reply.into_inner())
    }

    async fn range(&self, key: &str, prefix: bool) -> Result<(Vec<KeyValue>, i64), DiscoveryError> {
        let key = key.as_bytes().to_vec();
        let range_end = if prefix {
            common::keys::prefix_end(&key)
        } else {
            Vec::new()
        };
        let req = self.request(RangeRequest {
            key,
            range_end,
            ..Default::default()
        });
        let mut kv = KvClient::new(self.channel.clone());
        let reply = self.unary(kv.range(req)).await?;
        let revision = reply.header.map_or(0, |h| h.revision);
        Ok((reply.kvs, revision))
    }

    /// etcd's checkCluster: the size, the registrations so far in create
    /// order and the revision they were read at; the cluster must still
    /// have room for this member.
    async fn check(&self, own_key: &[u8]) -> Result<(Registrations, usize, i64), DiscoveryError> {
        let (size, _) = self.range(&self.size_key, false).await?;
        let size = size.first().ok_or(DiscoveryError::SizeNotFound)?;
        let size: i64 = std::str::from_utf8(&size.value)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(DiscoveryError::BadSizeKey)?;
        if size <= 0 {
            return Err(DiscoveryError::BadSizeKey);
        }
        let size = usize::try_from(size).map_err(|_| DiscoveryError::BadSizeKey)?;
        let (kvs, revision) = self.range(&self.members, true).await?;
        let mut registered = Registrations::default();
        for kv in &kvs {
            registered.add(&kv.key, &kv.value, kv.create_revision);
        }
        registered.check_room(own_key, size)?;
        Ok((registered, size, revision))
    }

    async fn register(&self, own_key: &[u8], value: &str) -> Result<(), DiscoveryError> {
        let req = self.request(PutRequest {
            key: own_key.to_vec(),
            value: value.as_bytes().to_vec(),
            ..Default::default()
        });
        let mut kv = KvClient::new(self.channel.clone());
        self.unary(kv.put(req)).await.map(|_| ())
    }

    /// Watch the registry from just after `revision` until `size` members
    /// have registered.
    async fn wait(
        &self,
        registered: &mut Registrations,
        size: usize,
        revision: i64,
    ) -> Result<(), DiscoveryError> {
        let key = self.members.clone().into_bytes();
        let create = WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                range_end: common::keys::prefix_end(&key),
                key,
                start_revision: revision + 1,
                ..Default::default()
            })),
        };
        // The stream stays open while the watch runs.
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tx.send(create).await.map_err(unreachable)?;
        let mut watch = WatchClient::new(self.channel.clone());
        let mut events = watch
            .watch(self.request(tokio_stream::wrappers::ReceiverStream::new(rx)))
            .await
            .map_err(|s| unreachable(s.message()))?
            .into_inner();
        while registered.len() < size {
            let reply = events
                .message()
                .await
                .map_err(|s| unreachable(s.message()))?
                .ok_or_else(|| unreachable("the discovery watch ended"))?;
            if reply.canceled || reply.compact_revision != 0 {
                return Err(unreachable(format!(
                    "the discovery watch was cancelled: {}",
                    reply.cancel_reason
                )));
            }
            for kv in reply.events.iter().filter_map(|e| e.kv.as_ref()) {
                registered.add(&kv.key, &kv.value, kv.create_revision);
            }
        }
        drop(tx);
        Ok(())
    }
}

/// One pass: check for room, register, then wait for the rest.
async fn attempt(d: &V3Discovery, own_key: &[u8], value: &str) -> Result<Cluster, DiscoveryError> {
    let registry = Registry::connect(d).await?;
    registry.check(own_key).await?;
    registry.register(own_key, value).await?;
    tracing::info!(key = %String::from_utf8_lossy(own_key), "register member itself successfully");
    let (mut registered, size, revision) = registry.check(own_key).await?;
    if registered.len() < size {
        tracing::info!(
            registered = registered.len(),
            size,
            "waiting for the other members to register"
        );
        registry.wait(&mut registered, size, revision).await?;
    }
    registered.initial_cluster(size)
}

/// What this member registers: its name with each peer URL, as
/// `--initial-cluster` lists them.
pub(crate) fn registration(member: &Member) -> String {
    let value: Vec<String> = member
        .peer_urls
        .iter()
        .map(|u| format!("{}={u}", member.name))
        .collect();
    value.join(",")
}

/// The initial cluster, as the discovery cluster names it. Transient
/// failures are retried as etcd retries them; the others are final.
pub async fn join_cluster(member: &Member, d: &V3Discovery) -> Result<Cluster, DiscoveryError> {
    let own_key = format!("{}/{:x}", d.members_prefix(), member.member_id).into_bytes();
    let value = registration(member);
    retrying(|| attempt(d, &own_key, &value)).await
}

/// The initial cluster: (name, peer URLs) of each member.
pub type Cluster = Vec<(String, Vec<String>)>;

/// Run `attempt` until it succeeds or fails for good, with etcd's backoff.
pub(crate) async fn retrying<F, Fut>(mut attempt: F) -> Result<Cluster, DiscoveryError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Cluster, DiscoveryError>>,
{
    let mut retries = 0u32;
    loop {
        match attempt().await {
            Ok(cluster) => {
                tracing::info!(?cluster, "discovery joined cluster successfully");
                return Ok(cluster);
            }
            Err(DiscoveryError::Unreachable(why)) => {
                let wait = backoff(retries);
                tracing::warn!(
                    reason = %why,
                    backoff = ?wait,
                    "retry connecting to discovery service"
                );
                tokio::time::sleep(wait).await;
                retries = retries.saturating_add(1);
            }
            Err(e) => {
                tracing::warn!(error = %e, "discovery failed to join cluster");
                return Err(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(r: &mut Registrations, key: &str, value: &str, create_revision: i64) {
        r.add(key.as_bytes(), value.as_bytes(), create_revision);
    }

    #[test]
    fn the_first_registrations_by_create_revision_make_the_cluster() {
        let mut r = Registrations::default();
        add(&mut r, "/m/3", "c=http://127.0.0.1:3", 9);
        add(&mut r, "/m/1", "a=http://127.0.0.1:1", 5);
        add(&mut r, "/m/bad", "no-equals", 6);
        add(&mut r, "/m/1", "a=http://127.0.0.1:1", 5);
        add(&mut r, "/m/2", "b=http://127.0.0.1:2", 7);
        assert_eq!(r.0.len(), 3);
        let cluster = r.initial_cluster(2).unwrap();
        let names: Vec<&str> = cluster.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert!(r.check_room(b"/m/2", 2).is_ok());
        assert!(matches!(
            r.check_room(b"/m/3", 2),
            Err(DiscoveryError::FullCluster)
        ));
        assert!(matches!(
            r.check_room(b"/m/4", 3),
            Err(DiscoveryError::FullCluster)
        ));
        assert!(r.check_room(b"/m/4", 4).is_ok());
    }

    #[test]
    fn a_url_registered_twice_is_refused() {
        let mut r = Registrations::default();
        add(&mut r, "/m/1", "a=http://127.0.0.1:1", 1);
        add(&mut r, "/m/2", "b=http://127.0.0.1:1", 2);
        assert!(matches!(
            r.initial_cluster(2),
            Err(DiscoveryError::DuplicateUrl(_))
        ));
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(30), Duration::from_secs(256));
    }
}
