//! Requests no member could store are refused before they reach the raft
//! log, and nothing a client sends can stop a member: keys beyond the
//! store's bound (a documented deviation: etcd stores them) are refused
//! with "etcdserver: key is too large" while every member keeps serving;
//! reads, compares and deletes naming such keys answer as for any absent
//! key; transactions nest exactly as deep as etcd lets them.

use common::proto::etcdserverpb::kv_client::KvClient;
use common::proto::etcdserverpb::request_op::Request as Op;
use common::proto::etcdserverpb::response_op::Response as Resp;
use common::proto::etcdserverpb::{PutRequest, RequestOp, TxnRequest};
use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp};
use triad_tests::cluster::Cluster;
use triad_tests::{grpc_channel, reference_etcd, Member, DAEMONS};

const TOO_LARGE: &str = "etcdserver: key is too large";

fn refusal(e: etcd_client::Error) -> (tonic::Code, String) {
    match e {
        etcd_client::Error::GRpcStatus(s) => (s.code(), s.message().to_string()),
        other => panic!("not a gRPC status: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_beyond_the_store_bound_are_refused_and_every_member_serves_on() {
    let cluster = Cluster::start(3);
    let pids: Vec<Vec<i32>> = (0..3)
        .map(|i| {
            DAEMONS
                .iter()
                .map(|d| cluster.pid(i, d).expect("pid"))
                .collect()
        })
        .collect();

    // etcdctl's put of a 64 KiB key, on every member.
    let key = "a".repeat(65_536);
    for i in 0..3 {
        let out = cluster.etcdctl(i, &["put", &key, "v"]);
        assert!(!out.status.success(), "a 64 KiB key was stored");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(TOO_LARGE), "member {i}: {err}");
    }
    let mut c = cluster.client(1).await;
    let zeros = vec![0u8; 40_000];
    let e = c.put(zeros.clone(), "v", None).await.expect_err("stored");
    assert_eq!(refusal(e), (tonic::Code::InvalidArgument, TOO_LARGE.into()));
    let in_txn = Txn::new().and_then([TxnOp::put(zeros.clone(), "v", None)]);
    let e = c.txn(in_txn).await.expect_err("stored in a txn");
    assert_eq!(refusal(e), (tonic::Code::InvalidArgument, TOO_LARGE.into()));
    let name = "u".repeat(70_000);
    let e = c.user_add(name, "pw", None).await.expect_err("user added");
    assert_eq!(
        refusal(e),
        (
            tonic::Code::InvalidArgument,
            "etcdserver: user name is too large".into()
        )
    );
    let e = c
        .role_add("r".repeat(70_000))
        .await
        .expect_err("role added");
    assert_eq!(refusal(e).1, "etcdserver: role name is too large");

    // What only names such a key answers as etcd does for an absent key.
    let long = vec![b'k'; 70_000];
    let compared = Txn::new()
        .when([Compare::value(long.clone(), CompareOp::Equal, "v")])
        .and_then([TxnOp::put("then", "1", None)])
        .or_else([TxnOp::put("else", "1", None)]);
    assert!(!c.txn(compared).await.expect("txn").succeeded());
    let deleted = c.delete(long.clone(), None).await.expect("delete");
    assert_eq!(deleted.deleted(), 0);
    let got = c.get(long.clone(), None).await.expect("get");
    assert!(got.kvs().is_empty());
    let from = c
        .get(long, Some(GetOptions::new().with_from_key()))
        .await
        .expect("range from a long key");
    assert!(from.kvs().iter().all(|kv| kv.key() > b"k".as_slice()));

    // Nobody crashed or restarted; every member still writes and reads.
    for (i, before) in pids.iter().enumerate() {
        let now: Vec<i32> = DAEMONS
            .iter()
            .map(|d| cluster.pid(i, d).expect("pid"))
            .collect();
        assert_eq!(
            &now,
            before,
            "member {i} restarted a daemon\n{}",
            cluster.logs(i)
        );
        let mut c = cluster.client(i).await;
        c.put(format!("after{i}"), "ok", None).await.expect("put");
        let got = c.get(format!("after{i}"), None).await.expect("get");
        assert_eq!(got.kvs()[0].value(), b"ok");
    }
    let mut c = cluster.client(0).await;
    let rev = c
        .get("x", None)
        .await
        .expect("get")
        .header()
        .expect("header")
        .revision();
    cluster.assert_equal_hashes(rev).await;
}

/// A transaction `depth` deep whose innermost level puts one key.
fn nested(depth: usize) -> TxnRequest {
    let mut txn = TxnRequest {
        success: vec![RequestOp {
            request: Some(Op::RequestPut(PutRequest {
                key: format!("deep{depth}").into(),
                value: b"v".to_vec(),
                ..Default::default()
            })),
        }],
        ..Default::default()
    };
    for _ in 1..depth {
        txn = TxnRequest {
            success: vec![RequestOp {
                request: Some(Op::RequestTxn(txn)),
            }],
            ..Default::default()
        };
    }
    txn
}

async fn nesting_outcomes(endpoint: &str) -> Vec<String> {
    let mut kv = KvClient::new(grpc_channel(endpoint).await);
    let mut out = Vec::new();
    for depth in [1, 49, 50, 51, 100, 128, 129, 300] {
        let answer = match kv.txn(nested(depth)).await {
            Ok(r) => {
                let mut levels = 0;
                let mut t = r.into_inner();
                while let Some(Some(Resp::ResponseTxn(inner))) =
                    t.responses.into_iter().next().map(|r| r.response)
                {
                    levels += 1;
                    t = inner;
                }
                format!("ok, {levels} nested responses")
            }
            Err(s) => format!("{:?}: {}", s.code(), s.message()),
        };
        out.push(format!("{depth}: {answer}"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_nest_as_deep_as_etcd_allows() {
    let member = Member::start();
    let ours = nesting_outcomes(&member.endpoint()).await;
    assert_eq!(ours[2], "50: ok, 49 nested responses");
    assert_eq!(ours[5], "128: ok, 127 nested responses");
    assert_eq!(
        ours[6],
        "129: InvalidArgument: etcdserver: too many operations in txn request"
    );
    assert_eq!(member.etcdctl(&["get", "deep128"]).status.code(), Some(0));
    let Some(etcd) = reference_etcd(&[]) else {
        return;
    };
    assert_eq!(ours, nesting_outcomes(&etcd.endpoint()).await);
}
