//! The peer port serves only member-to-member traffic. A process that can
//! reach a member's peer port but is no member (here: this test, with the
//! cluster's ID and a real member's ID, which clients can learn) can
//! neither write, read, nor change auth or membership through the calls
//! members forward to each other, nor inject raft messages; the members
//! themselves keep forwarding to the leader.

use std::time::Duration;

use common::proto::etcdserverpb::{AuthDisableRequest, MemberListRequest, PutRequest};
use common::proto::peer::raft_peer_client::RaftPeerClient;
use common::proto::peer::RaftMessage;
use common::proto::raft::raft_local_client::RaftLocalClient;
use common::proto::raft::{ProposeBatchRequest, PublishRequest, ReadIndexRequest};
use common::proto::storage::auth_change::Op as Change;
use common::proto::storage::raft_request::Op;
use common::proto::storage::{AuthChange, AuthInfo, RaftRequest};
use prost::Message;
use triad_tests::cluster::Cluster;

fn peer_endpoint(cluster: &Cluster, i: usize) -> String {
    cluster.members[i].peer_url()
}

async fn channel(url: &str) -> tonic::transport::Channel {
    tonic::transport::Channel::from_shared(url.to_string())
        .expect("uri")
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
        .expect("connect to the peer port")
}

/// A request as a member would forward it: marked, and naming a cluster
/// and a member (without the proof only members can make).
fn as_member<T>(msg: T, cluster_id: u64, member_id: u64) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    let md = req.metadata_mut();
    md.insert("triad-forwarded", "1".parse().expect("value"));
    md.insert(
        "triad-cluster-id",
        format!("{cluster_id:x}").parse().expect("value"),
    );
    md.insert(
        "triad-member-id",
        format!("{member_id:x}").parse().expect("value"),
    );
    md.insert("triad-peer-proof", "00".parse().expect("value"));
    req
}

/// One batch on the Propose stream: its answer, or why there was none.
async fn proposed(
    local: &mut RaftLocalClient<tonic::transport::Channel>,
    batch: tonic::Request<ProposeBatchRequest>,
) -> Result<(), tonic::Status> {
    let (metadata, extensions, batch) = batch.into_parts();
    let stream = tonic::Request::from_parts(metadata, extensions, tokio_stream::iter([batch]));
    let mut answers = local.propose(stream).await?.into_inner();
    match answers.message().await? {
        Some(a) if a.failure.is_none() && a.outcomes.iter().all(|o| o.outcome.is_some()) => Ok(()),
        Some(a) => Err(tonic::Status::unavailable(format!("refused: {a:?}"))),
        None => Err(tonic::Status::unavailable("no answer")),
    }
}

fn proposal(op: Op, auth: Option<AuthInfo>) -> prost::bytes::Bytes {
    RaftRequest {
        op: Some(op),
        auth,
        trace_parent: String::new(),
    }
    .encode_to_vec()
    .into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_on_the_peer_port_can_neither_read_nor_write() {
    let cluster = Cluster::start(3);
    let mut c = cluster.client(0).await;
    c.put("secret", "v1", None).await.expect("put");
    // Auth on, with root's password known only to the operator.
    c.user_add("root", "rootpw", None).await.expect("root");
    c.user_grant_role("root", "root").await.expect("grant");
    c.auth_enable().await.expect("enable");
    // Clients learn the IDs: every response header carries them.
    let (cluster_id, _) = {
        let mut authed = etcd_client::Client::connect(
            [cluster.members[0].endpoint()],
            Some(etcd_client::ConnectOptions::new().with_user("root", "rootpw")),
        )
        .await
        .expect("root client");
        let h = authed.status().await.expect("status");
        let h = h.header().expect("header");
        (h.cluster_id(), h.member_id())
    };
    // Every member has learned the peer secret by now (the writes above
    // went through all of them).
    let leader = cluster.leader().await;
    for target in 0..3 {
        // Posing as another member of the cluster.
        let member_id = cluster.member_id((target + 1) % 3).await;
        let ch = channel(&peer_endpoint(&cluster, target)).await;
        let mut local = RaftLocalClient::new(ch.clone());
        let root = AuthInfo {
            user: "root".into(),
            revision: 0,
        };
        for auth in [None, Some(root)] {
            let who = auth
                .as_ref()
                .map_or("no identity", |a| a.user.as_str())
                .to_string();
            let md_member = member_id;
            let writes = vec![
                proposal(
                    Op::Put(PutRequest {
                        key: b"secret".to_vec(),
                        value: b"stolen".to_vec(),
                        ..Default::default()
                    }),
                    auth.clone(),
                ),
                proposal(
                    Op::AuthChange(AuthChange {
                        op: Some(Change::Disable(AuthDisableRequest {})),
                    }),
                    auth.clone(),
                ),
            ];
            let batch = ProposeBatchRequest {
                requests: writes,
                id: 0,
            };
            let refused = proposed(&mut local, as_member(batch, cluster_id, md_member)).await;
            assert!(
                refused.is_err(),
                "member {target} took a stranger's proposals ({who})"
            );
            let read = local
                .read_index(as_member(
                    ReadIndexRequest::default(),
                    cluster_id,
                    md_member,
                ))
                .await;
            assert!(
                read.is_err(),
                "member {target} answered a stranger's read index"
            );
            let publish = PublishRequest {
                client_urls: vec!["http://127.0.0.1:1".into()],
                member_id,
                name: "evil".into(),
            };
            assert!(local
                .publish(as_member(publish, cluster_id, md_member))
                .await
                .is_err());
            let list = MemberListRequest { linearizable: true };
            assert!(local
                .member_list(as_member(list, cluster_id, md_member))
                .await
                .is_err());
        }
        // Without any marking at all: the same.
        let bare = ProposeBatchRequest {
            requests: vec![proposal(
                Op::Put(PutRequest {
                    key: b"secret".to_vec(),
                    value: b"stolen".to_vec(),
                    ..Default::default()
                }),
                None,
            )],
            id: 0,
        };
        let bare = proposed(&mut local, tonic::Request::new(bare)).await;
        assert!(bare.is_err(), "member {target} took an unmarked proposal");
        // Raft messages need the proof too (their body is never read).
        let mut peer = RaftPeerClient::new(ch);
        let msg = RaftMessage {
            cluster_id,
            from: member_id,
            body: vec![0; 16].into(),
        };
        let injected = peer
            .append_entries(as_member(msg, cluster_id, member_id))
            .await
            .expect_err("append from a stranger");
        assert_eq!(
            injected.code(),
            tonic::Code::Unauthenticated,
            "member {target} (leader {leader}): {injected:?}"
        );
    }

    // Nothing changed: auth still on, the key as the client wrote it.
    let mut anonymous = cluster.client(2).await;
    let denied = anonymous.get("secret", None).await;
    assert!(denied.is_err(), "auth was turned off");
    for i in 0..3 {
        let mut root = etcd_client::Client::connect(
            [cluster.members[i].endpoint()],
            Some(etcd_client::ConnectOptions::new().with_user("root", "rootpw")),
        )
        .await
        .expect("root client");
        let got = root.get("secret", None).await.expect("get");
        assert_eq!(got.kvs()[0].value(), b"v1", "member {i}");
        // And members still forward to the leader: writes through each.
        root.put(format!("from{i}"), "ok", None)
            .await
            .expect("write through a member");
    }
}
