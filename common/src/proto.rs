//! Generated protobuf/gRPC code. Modules mirror the proto package paths so
//! cross-package references resolve; short aliases follow.

pub mod mvccpb {
    tonic::include_proto!("mvccpb");
    include!(concat!(env!("OUT_DIR"), "/mvccpb.serde.rs"));
}
pub mod authpb {
    tonic::include_proto!("authpb");
    include!(concat!(env!("OUT_DIR"), "/authpb.serde.rs"));
}
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.serde.rs"));
}
pub mod v3lockpb {
    tonic::include_proto!("v3lockpb");
    include!(concat!(env!("OUT_DIR"), "/v3lockpb.serde.rs"));
}
pub mod v3electionpb {
    tonic::include_proto!("v3electionpb");
    include!(concat!(env!("OUT_DIR"), "/v3electionpb.serde.rs"));
}
pub mod triad {
    pub mod storage {
        pub mod v1 {
            tonic::include_proto!("triad.storage.v1");
        }
    }
    pub mod raft {
        pub mod v1 {
            tonic::include_proto!("triad.raft.v1");
        }
    }
    pub mod peer {
        pub mod v1 {
            tonic::include_proto!("triad.peer.v1");
        }
    }
    pub mod profile {
        pub mod v1 {
            tonic::include_proto!("triad.profile.v1");
        }
    }
}

/// OpenTelemetry's OTLP trace export (the part triad sends).
pub mod opentelemetry {
    pub mod proto {
        pub mod common {
            pub mod v1 {
                tonic::include_proto!("opentelemetry.proto.common.v1");
            }
        }
        pub mod resource {
            pub mod v1 {
                tonic::include_proto!("opentelemetry.proto.resource.v1");
            }
        }
        pub mod trace {
            pub mod v1 {
                tonic::include_proto!("opentelemetry.proto.trace.v1");
            }
        }
        pub mod collector {
            pub mod trace {
                pub mod v1 {
                    tonic::include_proto!("opentelemetry.proto.collector.trace.v1");
                }
            }
        }
    }
}

/// triad.peer.v1: raftd-to-raftd messages over TCP.
pub use triad::peer::v1 as peer;
/// triad.profile.v1: the daemons' CPU profiler (`--enable-pprof`).
pub use triad::profile::v1 as profile;
/// triad.raft.v1: raftd's internal (member-local) protocol.
pub use triad::raft::v1 as raft;
/// triad.storage.v1: storaged's internal protocol.
pub use triad::storage::v1 as storage;

/// Protocol names daemons exchange in Hello to check compatibility.
pub const STORAGE_PROTOCOL: &str = "triad.storage.v1";
pub const RAFT_PROTOCOL: &str = "triad.raft.v1";

/// A daemon's Hello check: the caller must speak our protocol version.
pub fn check_protocol(daemon: &str, ours: &str, asked: &str) -> Result<(), tonic::Status> {
    if asked == ours {
        Ok(())
    } else {
        Err(tonic::Status::failed_precondition(format!(
            "{daemon} speaks {ours}, caller wants {asked}"
        )))
    }
}

/// Why a peer daemon cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{daemon} speaks an incompatible protocol: {message}")]
pub struct Incompatible {
    pub daemon: &'static str,
    pub message: String,
}

/// How often daemons re-check their peers' protocol (one may be upgraded
/// and restarted on its own at any time).
pub const RECHECK: std::time::Duration = std::time::Duration::from_secs(10);

/// Call `hello` until the peer daemon answers (it may still be starting);
/// Err when it answers that it speaks another protocol version.
pub async fn await_compatible<F, Fut, T>(
    daemon: &'static str,
    mut hello: F,
) -> Result<(), Incompatible>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    loop {
        match hello().await {
            Ok(_) => return Ok(()),
            Err(s)
                if s.code() == tonic::Code::FailedPrecondition
                    || s.code() == tonic::Code::Unimplemented =>
            {
                return Err(Incompatible {
                    daemon,
                    message: s.message().to_string(),
                });
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
}

/// Run `check` now and every RECHECK; resolves with the first peer found
/// speaking another protocol (one daemon may be upgraded and restarted on
/// its own at any time).
pub async fn first_incompatible<F, Fut>(mut check: F) -> Incompatible
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), Incompatible>>,
{
    loop {
        if let Err(e) = check().await {
            return e;
        }
        tokio::time::sleep(RECHECK).await;
    }
}

/// storaged's protocol check, for its callers.
pub async fn storaged_compatible(
    client: &storage::storage_client::StorageClient<tonic::transport::Channel>,
) -> Result<(), Incompatible> {
    await_compatible("storaged", || {
        let mut c = client.clone();
        async move {
            c.hello(storage::HelloRequest {
                protocol: STORAGE_PROTOCOL.into(),
            })
            .await
        }
    })
    .await
}

/// Binary metadata carrying a client's identity on member-local reads
/// (gatewayd → storaged Range); writes carry it inside the RaftRequest.
const AUTH_METADATA: &str = "triad-auth-bin";
const FORWARDED_METADATA: &str = "triad-forwarded";

/// Mark a call to the leader's raftd as forwarded by another member, so
/// the receiver never forwards it again.
pub fn mark_forwarded<T>(req: &mut tonic::Request<T>) {
    req.metadata_mut().insert(
        FORWARDED_METADATA,
        tonic::metadata::MetadataValue::from_static("1"),
    );
    if let Some(add) = FORWARD_CREDENTIALS.get() {
        add(req.metadata_mut());
    }
}

/// How a member proves itself on the calls it forwards (raftd's peer
/// credentials), set once by the daemon that forwards.
static FORWARD_CREDENTIALS: std::sync::OnceLock<fn(&mut tonic::metadata::MetadataMap)> =
    std::sync::OnceLock::new();

pub fn set_forward_credentials(add: fn(&mut tonic::metadata::MetadataMap)) {
    let _ = FORWARD_CREDENTIALS.set(add);
}

/// Whether a call arrived forwarded from another member.
pub fn is_forwarded<T>(req: &tonic::Request<T>) -> bool {
    req.metadata().contains_key(FORWARDED_METADATA)
}

/// Attach the identity gatewayd resolved for a client to a local call.
pub fn attach_auth<T>(req: &mut tonic::Request<T>, info: &storage::AuthInfo) {
    use prost::Message;
    let value = tonic::metadata::MetadataValue::from_bytes(&info.encode_to_vec());
    req.metadata_mut().insert_bin(AUTH_METADATA, value);
}

/// The client identity a local call carries; None for the member's own
/// calls. An undecodable value counts as an anonymous client, never as
/// the member itself.
pub fn auth_of<T>(req: &tonic::Request<T>) -> Option<storage::AuthInfo> {
    use prost::Message;
    let value = req.metadata().get_bin(AUTH_METADATA)?;
    let bytes = value.to_bytes().unwrap_or_default();
    Some(storage::AuthInfo::decode(bytes.as_ref()).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn waits_for_an_unreachable_peer_and_refuses_another_protocol() {
        let calls = AtomicU32::new(0);
        let ok = await_compatible("storaged", || {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < 2 {
                    Err(tonic::Status::unavailable("connection refused"))
                } else {
                    Ok(())
                }
            }
        })
        .await;
        assert!(ok.is_ok());
        assert_eq!(calls.load(Ordering::SeqCst), 3);

        let err = await_compatible("raftd", || async {
            check_protocol("raftd", "triad.raft.v2", RAFT_PROTOCOL).map(|_| ())
        })
        .await
        .unwrap_err();
        assert_eq!(err.daemon, "raftd");
        assert!(
            err.to_string()
                .contains("raftd speaks triad.raft.v2, caller wants triad.raft.v1"),
            "{err}"
        );
    }
}
