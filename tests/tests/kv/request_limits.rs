//! Request size limits as etcd: `--max-request-bytes` (default 1.5 MiB)
//! refuses larger writes with "etcdserver: request is too large"; values
//! just under the limit round-trip. Compared with etcd for the same sizes.

use etcd_client::Client;
use triad_tests::{connect, reference_etcd, Member};

async fn outcome(c: &mut Client, size: usize) -> String {
    let value = vec![b'x'; size];
    match c.put("big", value.clone(), None).await {
        Ok(_) => {
            let got = c.get("big", None).await.expect("read back");
            assert_eq!(
                got.kvs()[0].value(),
                value.as_slice(),
                "value of {size} bytes round-trips"
            );
            "ok".to_string()
        }
        Err(etcd_client::Error::GRpcStatus(s)) => format!("{:?}: {}", s.code(), s.message()),
        Err(e) => format!("error: {e}"),
    }
}

async fn outcomes(endpoint: &str, sizes: &[usize]) -> Vec<String> {
    let mut c = connect(endpoint).await;
    let mut out = Vec::new();
    for &s in sizes {
        out.push(format!("{s}: {}", outcome(&mut c, s).await));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_limit_matches_etcd() {
    let sizes = [1024 * 1024, 1536 * 1024 - 64, 1536 * 1024 + 1, 2000 * 1024];
    let member = Member::start();
    let ours = outcomes(&member.endpoint(), &sizes).await;
    assert_eq!(ours[0], format!("{}: ok", sizes[0]));
    assert_eq!(
        ours[2],
        format!(
            "{}: InvalidArgument: etcdserver: request is too large",
            sizes[2]
        )
    );
    let Some(etcd) = reference_etcd(&[]) else {
        return;
    };
    assert_eq!(ours, outcomes(&etcd.endpoint(), &sizes).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_limit_matches_etcd() {
    let sizes = [900, 1100, 4096];
    let member = Member::start_with_env(&[("TRIAD_MAX_REQUEST_BYTES", "1024")]);
    let ours = outcomes(&member.endpoint(), &sizes).await;
    assert_eq!(
        ours[1],
        "1100: InvalidArgument: etcdserver: request is too large"
    );
    let Some(etcd) = reference_etcd(&["--max-request-bytes", "1024"]) else {
        return;
    };
    assert_eq!(ours, outcomes(&etcd.endpoint(), &sizes).await);
}
