//! Every etcd 3.4 RPC, called raw over gRPC against a triad member and a
//! reference etcd with the same script: whether each response carries a
//! header and which header fields are set, the gRPC code of each refusal,
//! the status of a message over the receive limit, and the watch stream's
//! edges (a client that half-closes keeps its events; empty ranges and
//! negative revisions are cancelled with etcd's reasons).

use std::time::Duration;

use common::proto::etcdserverpb as pb;
use common::proto::v3electionpb::{election_client::ElectionClient, CampaignRequest};
use common::proto::v3lockpb::{lock_client::LockClient, LockRequest, UnlockRequest};
use pb::{
    auth_client::AuthClient, cluster_client::ClusterClient, kv_client::KvClient,
    lease_client::LeaseClient, maintenance_client::MaintenanceClient, watch_client::WatchClient,
    ResponseHeader,
};
use tonic::transport::Channel;
use triad_tests::{grpc_channel, reference_etcd, Member};

/// Which header fields a response has set (their values differ between
/// servers; their presence must not).
fn header(h: &Option<ResponseHeader>) -> String {
    match h {
        None => "no header".into(),
        Some(h) => {
            let mut set = Vec::new();
            for (name, on) in [
                ("cluster", h.cluster_id != 0),
                ("member", h.member_id != 0),
                ("revision", h.revision != 0),
                ("term", h.raft_term != 0),
            ] {
                if on {
                    set.push(name);
                }
            }
            format!("header[{}]", set.join(","))
        }
    }
}

/// One call's line: its name and either its header shape or its code.
fn line<T>(
    name: &str,
    r: Result<tonic::Response<T>, tonic::Status>,
    h: fn(&T) -> &Option<ResponseHeader>,
) -> String {
    match r {
        Ok(resp) => format!("{name}: {}", header(h(resp.get_ref()))),
        Err(s) => format!("{name}: {:?} {}", s.code(), s.message()),
    }
}

macro_rules! call {
    ($out:expr, $name:literal, $call:expr) => {
        $out.push(line($name, $call.await, |r| &r.header))
    };
}

/// The walk: every unary RPC etcd 3.4 has, successes and refusals.
async fn walk(ch: Channel) -> Vec<String> {
    let mut kv = KvClient::new(ch.clone());
    let mut lease = LeaseClient::new(ch.clone());
    let mut cluster = ClusterClient::new(ch.clone());
    let mut maint = MaintenanceClient::new(ch.clone());
    let mut auth = AuthClient::new(ch.clone());
    let mut out = Vec::new();

    call!(
        out,
        "put",
        kv.put(pb::PutRequest {
            key: b"a".to_vec(),
            value: b"1".to_vec(),
            ..Default::default()
        })
    );
    call!(
        out,
        "put prev",
        kv.put(pb::PutRequest {
            key: b"a".to_vec(),
            value: b"2".to_vec(),
            prev_kv: true,
            ..Default::default()
        })
    );
    call!(
        out,
        "range",
        kv.range(pb::RangeRequest {
            key: b"a".to_vec(),
            ..Default::default()
        })
    );
    call!(
        out,
        "range serializable",
        kv.range(pb::RangeRequest {
            key: b"a".to_vec(),
            serializable: true,
            ..Default::default()
        })
    );
    call!(
        out,
        "range future",
        kv.range(pb::RangeRequest {
            key: b"a".to_vec(),
            revision: 1000,
            ..Default::default()
        })
    );
    call!(
        out,
        "delete",
        kv.delete_range(pb::DeleteRangeRequest {
            key: b"nothing".to_vec(),
            ..Default::default()
        })
    );
    call!(
        out,
        "txn",
        kv.txn(pb::TxnRequest {
            success: vec![pb::RequestOp {
                request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                    key: b"t".to_vec(),
                    ..Default::default()
                }))
            }],
            ..Default::default()
        })
    );
    call!(out, "put empty key", kv.put(pb::PutRequest::default()));
    call!(
        out,
        "compact",
        kv.compact(pb::CompactionRequest {
            revision: 2,
            physical: true
        })
    );
    call!(
        out,
        "compact again",
        kv.compact(pb::CompactionRequest {
            revision: 2,
            ..Default::default()
        })
    );

    let granted = lease
        .lease_grant(pb::LeaseGrantRequest { ttl: 60, id: 0x77 })
        .await;
    out.push(line("lease grant", granted, |r| &r.header));
    call!(
        out,
        "lease grant again",
        lease.lease_grant(pb::LeaseGrantRequest { ttl: 60, id: 0x77 })
    );
    call!(
        out,
        "lease ttl",
        lease.lease_time_to_live(pb::LeaseTimeToLiveRequest {
            id: 0x77,
            keys: true
        })
    );
    call!(
        out,
        "lease ttl unknown",
        lease.lease_time_to_live(pb::LeaseTimeToLiveRequest {
            id: 0x78,
            keys: false
        })
    );
    call!(
        out,
        "lease leases",
        lease.lease_leases(pb::LeaseLeasesRequest {})
    );
    call!(
        out,
        "lease revoke",
        lease.lease_revoke(pb::LeaseRevokeRequest { id: 0x77 })
    );
    call!(
        out,
        "lease revoke unknown",
        lease.lease_revoke(pb::LeaseRevokeRequest { id: 0x77 })
    );

    call!(
        out,
        "member list",
        cluster.member_list(pb::MemberListRequest::default())
    );
    let added = cluster
        .member_add(pb::MemberAddRequest {
            peer_ur_ls: vec!["http://127.0.0.1:1".into()],
            is_learner: true,
        })
        .await;
    let learner = added
        .as_ref()
        .ok()
        .and_then(|r| r.get_ref().member.as_ref())
        .map_or(0, |m| m.id);
    out.push(line("member add learner", added, |r| &r.header));
    call!(
        out,
        "member promote unready",
        cluster.member_promote(pb::MemberPromoteRequest { id: learner })
    );
    call!(
        out,
        "member update",
        cluster.member_update(pb::MemberUpdateRequest {
            id: learner,
            peer_ur_ls: vec!["http://127.0.0.1:2".into()]
        })
    );
    call!(
        out,
        "member remove",
        cluster.member_remove(pb::MemberRemoveRequest { id: learner })
    );
    call!(
        out,
        "member remove unknown",
        cluster.member_remove(pb::MemberRemoveRequest { id: learner })
    );

    let status = maint.status(pb::StatusRequest {}).await;
    let me = status
        .as_ref()
        .ok()
        .and_then(|r| r.get_ref().header.as_ref())
        .map_or(0, |h| h.member_id);
    out.push(line("status", status, |r| &r.header));
    call!(out, "alarm get", maint.alarm(pb::AlarmRequest::default()));
    call!(out, "hash", maint.hash(pb::HashRequest {}));
    call!(
        out,
        "hashkv",
        maint.hash_kv(pb::HashKvRequest { revision: 0 })
    );
    call!(
        out,
        "hashkv compacted",
        maint.hash_kv(pb::HashKvRequest { revision: 1 })
    );
    call!(
        out,
        "defragment",
        maint.defragment(pb::DefragmentRequest {})
    );
    call!(
        out,
        "move leader to self",
        maint.move_leader(pb::MoveLeaderRequest { target_id: me })
    );
    call!(
        out,
        "move leader unknown",
        maint.move_leader(pb::MoveLeaderRequest { target_id: 12345 })
    );
    match maint.snapshot(pb::SnapshotRequest {}).await {
        Ok(resp) => {
            let mut stream = resp.into_inner();
            let first = stream.message().await.ok().flatten();
            out.push(format!(
                "snapshot first: {}",
                first.map_or("none".into(), |m| header(&m.header))
            ));
        }
        Err(s) => out.push(format!("snapshot: {:?}", s.code())),
    }

    call!(
        out,
        "user add",
        auth.user_add(pb::AuthUserAddRequest {
            name: "root".into(),
            password: "pw".into(),
            ..Default::default()
        })
    );
    call!(
        out,
        "user add again",
        auth.user_add(pb::AuthUserAddRequest {
            name: "root".into(),
            password: "pw".into(),
            ..Default::default()
        })
    );
    call!(
        out,
        "user get",
        auth.user_get(pb::AuthUserGetRequest {
            name: "root".into()
        })
    );
    call!(
        out,
        "user get unknown",
        auth.user_get(pb::AuthUserGetRequest {
            name: "nobody".into()
        })
    );
    call!(out, "user list", auth.user_list(pb::AuthUserListRequest {}));
    call!(
        out,
        "user password",
        auth.user_change_password(pb::AuthUserChangePasswordRequest {
            name: "root".into(),
            password: "pw".into(),
            ..Default::default()
        })
    );
    call!(
        out,
        "role add",
        auth.role_add(pb::AuthRoleAddRequest { name: "r".into() })
    );
    call!(
        out,
        "role get",
        auth.role_get(pb::AuthRoleGetRequest { role: "r".into() })
    );
    call!(out, "role list", auth.role_list(pb::AuthRoleListRequest {}));
    call!(
        out,
        "role grant",
        auth.role_grant_permission(pb::AuthRoleGrantPermissionRequest {
            name: "r".into(),
            perm: Some(common::proto::authpb::Permission {
                perm_type: 0,
                key: b"k".to_vec(),
                range_end: Vec::new()
            })
        })
    );
    call!(
        out,
        "role revoke",
        auth.role_revoke_permission(pb::AuthRoleRevokePermissionRequest {
            role: "r".into(),
            key: b"k".to_vec(),
            range_end: Vec::new()
        })
    );
    call!(
        out,
        "user grant",
        auth.user_grant_role(pb::AuthUserGrantRoleRequest {
            user: "root".into(),
            role: "root".into()
        })
    );
    call!(
        out,
        "user revoke",
        auth.user_revoke_role(pb::AuthUserRevokeRoleRequest {
            name: "root".into(),
            role: "root".into()
        })
    );
    call!(
        out,
        "role delete",
        auth.role_delete(pb::AuthRoleDeleteRequest { role: "r".into() })
    );
    call!(
        out,
        "role delete unknown",
        auth.role_delete(pb::AuthRoleDeleteRequest { role: "r".into() })
    );
    call!(
        out,
        "auth disable",
        auth.auth_disable(pb::AuthDisableRequest {})
    );
    call!(
        out,
        "authenticate",
        auth.authenticate(pb::AuthenticateRequest {
            name: "root".into(),
            password: "pw".into()
        })
    );
    call!(
        out,
        "user delete",
        auth.user_delete(pb::AuthUserDeleteRequest {
            name: "root".into()
        })
    );
    call!(
        out,
        "auth enable no root",
        auth.auth_enable(pb::AuthEnableRequest {})
    );

    let mut lock = LockClient::new(ch.clone());
    call!(
        out,
        "lock lease unknown",
        lock.lock(LockRequest {
            name: b"l".to_vec(),
            lease: 0x7a
        })
    );
    call!(
        out,
        "lease for lock",
        lease.lease_grant(pb::LeaseGrantRequest { ttl: 60, id: 0x79 })
    );
    let held = lock
        .lock(LockRequest {
            name: b"l".to_vec(),
            lease: 0x79,
        })
        .await;
    let key = held
        .as_ref()
        .map(|r| r.get_ref().key.clone())
        .unwrap_or_default();
    out.push(line("lock", held, |r| &r.header));
    call!(out, "unlock", lock.unlock(UnlockRequest { key }));
    let mut election = ElectionClient::new(ch.clone());
    let campaign = election
        .campaign(CampaignRequest {
            name: b"e".to_vec(),
            lease: 0x79,
            value: b"v".to_vec(),
        })
        .await;
    out.push(line("campaign", campaign, |r| &r.header));
    match election
        .observe(common::proto::v3electionpb::LeaderRequest {
            name: b"e".to_vec(),
        })
        .await
    {
        Ok(resp) => {
            let first =
                tokio::time::timeout(Duration::from_secs(5), resp.into_inner().message()).await;
            let shape = match first {
                Ok(Ok(Some(m))) => header(&m.header),
                other => format!("{other:?}"),
            };
            out.push(format!("observe first: {shape}"));
        }
        Err(s) => out.push(format!("observe: {:?} {}", s.code(), s.message())),
    }
    let keepalive = pb::LeaseKeepAliveRequest { id: 0x79 };
    match lease
        .lease_keep_alive(tokio_stream::iter(vec![keepalive]))
        .await
    {
        Ok(resp) => {
            let first =
                tokio::time::timeout(Duration::from_secs(5), resp.into_inner().message()).await;
            let shape = match first {
                Ok(Ok(Some(m))) => header(&m.header),
                other => format!("{other:?}"),
            };
            out.push(format!("keepalive first: {shape}"));
        }
        Err(s) => out.push(format!("keepalive: {:?} {}", s.code(), s.message())),
    }
    out
}

/// What a watch stream answers to creates a client then stops sending:
/// empty range, negative revisions, and a put made after the half-close.
async fn watch_edges(ch: Channel) -> Vec<String> {
    let mut kv = KvClient::new(ch.clone());
    let mut watch = WatchClient::new(ch);
    let create = |key: &[u8], end: &[u8], start: i64| pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
            pb::WatchCreateRequest {
                key: key.to_vec(),
                range_end: end.to_vec(),
                start_revision: start,
                ..Default::default()
            },
        )),
    };
    let requests = vec![
        create(b"z", b"a", 0),
        create(b"w", b"", -5),
        create(b"w", b"", 0),
    ];
    let mut stream = watch
        .watch(tokio_stream::iter(requests))
        .await
        .expect("watch")
        .into_inner();
    let mut out = Vec::new();
    let mut describe = |r: pb::WatchResponse| {
        let events: Vec<String> = r
            .events
            .iter()
            .map(|e| {
                String::from_utf8_lossy(
                    &e.kv.as_ref().map(|kv| kv.value.clone()).unwrap_or_default(),
                )
                .into_owned()
            })
            .collect();
        out.push(format!(
            "watch {} created={} canceled={} compact={} reason={:?} events={events:?} {}",
            r.watch_id,
            r.created,
            r.canceled,
            r.compact_revision,
            r.cancel_reason,
            header(&r.header)
        ));
    };
    // The three creates' answers (the -5 one also gets its cancellation).
    for _ in 0..4 {
        match tokio::time::timeout(Duration::from_secs(5), stream.message()).await {
            Ok(Ok(Some(r))) => describe(r),
            other => panic!("watch stream ended early: {other:?}"),
        }
    }
    kv.put(pb::PutRequest {
        key: b"w".to_vec(),
        value: b"after half-close".to_vec(),
        ..Default::default()
    })
    .await
    .expect("put");
    match tokio::time::timeout(Duration::from_secs(5), stream.message()).await {
        Ok(Ok(Some(r))) => describe(r),
        other => out.push(format!("no event after half-close: {other:?}")),
    }
    out
}

/// A put over the server's receive limit (etcd's is max-request-bytes
/// plus 512 KiB): the code and text clients see.
async fn oversized_put(ch: Channel) -> String {
    let mut kv = KvClient::new(ch).max_encoding_message_size(usize::MAX);
    let value = vec![b'x'; 3_000_000];
    match kv
        .put(pb::PutRequest {
            key: b"big".to_vec(),
            value,
            ..Default::default()
        })
        .await
    {
        Ok(_) => "accepted".into(),
        Err(s) => format!("{:?} {}", s.code(), s.message()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_answers_with_etcds_headers_and_codes() {
    let Some(etcd) = reference_etcd(&[]) else {
        return;
    };
    let triad = Member::start();
    let theirs = walk(grpc_channel(&etcd.endpoint()).await).await;
    let ours = walk(grpc_channel(&triad.endpoint()).await).await;
    let diff: Vec<String> = theirs
        .iter()
        .zip(&ours)
        .filter(|(a, b)| a != b)
        .map(|(a, b)| format!("etcd  {a}\ntriad {b}"))
        .collect();
    assert!(
        diff.is_empty() && theirs.len() == ours.len(),
        "differences:\n{}",
        diff.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_stream_edges_match_etcd() {
    let Some(etcd) = reference_etcd(&[]) else {
        return;
    };
    let triad = Member::start();
    let theirs = watch_edges(grpc_channel(&etcd.endpoint()).await).await;
    let ours = watch_edges(grpc_channel(&triad.endpoint()).await).await;
    assert!(
        theirs
            .last()
            .is_some_and(|l| l.contains("after half-close")),
        "{theirs:#?}"
    );
    assert_eq!(ours.last(), theirs.last());
    // etcd cancels the -5 watcher from its sync loop, before or after the
    // next create's answer: the order across watchers is not fixed.
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(sorted(ours), sorted(theirs));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_is_resource_exhausted_as_in_etcd() {
    let Some(etcd) = reference_etcd(&[]) else {
        return;
    };
    let triad = Member::start();
    let theirs = oversized_put(grpc_channel(&etcd.endpoint()).await).await;
    let ours = oversized_put(grpc_channel(&triad.endpoint()).await).await;
    assert!(
        theirs.starts_with("ResourceExhausted grpc: received message larger than max"),
        "{theirs}"
    );
    assert_eq!(ours, theirs);
}
