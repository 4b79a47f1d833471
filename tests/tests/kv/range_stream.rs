//! etcd 3.7's RangeStream: the chunks of a streamed range, merged, equal
//! Range's response for every kind of range; each chunk stays within
//! --max-request-bytes (one key at least); header, more and count come on
//! the last chunk only; the stream reads at the revision of its first
//! chunk; what it cannot stream is refused as etcd refuses it; and a range
//! far larger than memory allows streams with every daemon's memory flat.

use std::time::{Duration, Instant};

use common::proto::etcdserverpb as pb;
use pb::kv_client::KvClient;
use pb::range_request::{SortOrder, SortTarget};
use prost::Message;
use tonic::Code;
use triad_tests::{grpc_channel, Member};

/// Every chunk of a streamed range, or the status it ended with (with
/// the chunks before it).
async fn chunks(
    kv: &mut KvClient<tonic::transport::Channel>,
    req: pb::RangeRequest,
) -> (Vec<pb::RangeResponse>, Option<tonic::Status>) {
    let mut stream = match kv.range_stream(req).await {
        Ok(s) => s.into_inner(),
        Err(e) => return (Vec::new(), Some(e)),
    };
    let mut out = Vec::new();
    loop {
        match stream.message().await {
            Ok(Some(m)) => out.push(m.range_response.expect("range_response set")),
            Ok(None) => return (out, None),
            Err(e) => return (out, Some(e)),
        }
    }
}

/// What proto.Merge of the chunks gives: kvs appended, the last chunk's
/// header, more and count.
fn merged(chunks: &[pb::RangeResponse]) -> pb::RangeResponse {
    let mut out = pb::RangeResponse::default();
    for c in chunks {
        out.kvs.extend(c.kvs.iter().cloned());
        if c.header.is_some() {
            out.header = c.header;
        }
        out.more |= c.more;
        out.count = out.count.max(c.count);
    }
    out
}

#[tokio::test]
async fn streamed_ranges_merge_to_what_range_answers() {
    let limit = 64 * 1024;
    let m = Member::start_with_env(&[("ETCD_MAX_REQUEST_BYTES", &limit.to_string())]);
    let ch = grpc_channel(&m.endpoint()).await;
    let mut kv = KvClient::new(ch);
    let put = |key: String, size: usize| pb::PutRequest {
        key: key.into_bytes(),
        value: vec![b'v'; size],
        ..Default::default()
    };
    for i in 0..300 {
        kv.put(put(format!("k/{i:04}"), 900 + i)).await.unwrap();
    }
    let old = kv
        .put(put("k/0000".into(), 10))
        .await
        .unwrap()
        .into_inner()
        .header
        .unwrap()
        .revision;
    for i in (0..300).step_by(7) {
        kv.delete_range(pb::DeleteRangeRequest {
            key: format!("k/{i:04}").into_bytes(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    // A value near the limit goes alone in its chunk.
    kv.put(put("k/big".into(), limit - 200)).await.unwrap();
    kv.put(put("z".into(), 100)).await.unwrap();

    let range = |key: &str, end: &str| pb::RangeRequest {
        key: key.as_bytes().to_vec(),
        range_end: end.as_bytes().to_vec(),
        ..Default::default()
    };
    let cases = vec![
        ("a prefix", range("k/", "k0")),
        ("everything", range("\0", "\0")),
        ("from a key", range("k/0150", "\0")),
        (
            "with a limit",
            pb::RangeRequest {
                limit: 123,
                ..range("k/", "k0")
            },
        ),
        (
            "a limit past the end",
            pb::RangeRequest {
                limit: 5000,
                ..range("k/", "k0")
            },
        ),
        (
            "keys only",
            pb::RangeRequest {
                keys_only: true,
                ..range("k/", "k0")
            },
        ),
        (
            "count only",
            pb::RangeRequest {
                count_only: true,
                ..range("k/", "k0")
            },
        ),
        (
            "an old revision",
            pb::RangeRequest {
                revision: old,
                ..range("k/", "k0")
            },
        ),
        (
            "serializable",
            pb::RangeRequest {
                serializable: true,
                ..range("k/", "k0")
            },
        ),
        (
            "sorted by key ascending",
            pb::RangeRequest {
                sort_order: SortOrder::Ascend as i32,
                ..range("k/", "k0")
            },
        ),
        ("one key", range("k/0001", "")),
        ("a deleted key", range("k/0007", "")),
        ("nothing", range("nothing/", "nothing0")),
    ];
    for (what, req) in cases {
        let (got, err) = chunks(&mut kv, req.clone()).await;
        assert!(err.is_none(), "{what}: {err:?}");
        let whole = kv.range(req.clone()).await.unwrap().into_inner();
        let mut expected = whole.clone();
        let mut merged = merged(&got);
        // The member's fields are the same; compare the rest as sent.
        expected.header.as_mut().unwrap().raft_term = 0;
        merged.header.as_mut().expect("a header").raft_term = 0;
        assert_eq!(merged, expected, "{what}: merged chunks differ from Range");
        let (last, rest) = got.split_last().expect("at least one chunk");
        assert!(last.header.is_some(), "{what}");
        for c in rest {
            assert!(
                c.header.is_none() && !c.more && c.count == 0 && !c.kvs.is_empty(),
                "{what}: header, more or count before the last chunk"
            );
        }
        for c in &got {
            assert!(
                c.encoded_len() <= limit || c.kvs.len() == 1,
                "{what}: a chunk of {} bytes",
                c.encoded_len()
            );
        }
        if what == "a prefix" {
            assert!(got.len() > 3, "{} chunks only", got.len());
        }
    }

    // One read revision for the whole stream.
    let mut stream = kv
        .range_stream(range("k/", "k0"))
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert!(!first.range_response.unwrap().kvs.is_empty());
    kv.put(put("k/9999".into(), 5)).await.unwrap();
    let mut rest = Vec::new();
    while let Some(m) = stream.message().await.unwrap() {
        rest.push(m.range_response.unwrap());
    }
    assert!(
        !rest
            .iter()
            .flat_map(|c| &c.kvs)
            .any(|kv| kv.key == b"k/9999"),
        "a key written after the stream started was in it"
    );

    // What etcd refuses.
    let refused = [
        (
            pb::RangeRequest {
                sort_target: SortTarget::Value as i32,
                sort_order: SortOrder::Descend as i32,
                ..range("k/", "k0")
            },
            Code::Unimplemented,
            "RangeStream does not support custom sort orders",
        ),
        (
            pb::RangeRequest {
                min_mod_revision: 3,
                ..range("k/", "k0")
            },
            Code::Unimplemented,
            "RangeStream does not support revision filters",
        ),
        (
            range("", ""),
            Code::InvalidArgument,
            "etcdserver: key is not provided",
        ),
        (
            pb::RangeRequest {
                revision: 1 << 40,
                ..range("k/", "k0")
            },
            Code::OutOfRange,
            "etcdserver: mvcc: required revision is a future revision",
        ),
    ];
    for (req, code, message) in refused {
        let (got, err) = chunks(&mut kv, req).await;
        let err = err.expect("refused");
        assert!(got.is_empty());
        assert_eq!((err.code(), err.message()), (code, message));
    }
    kv.compact(pb::CompactionRequest {
        revision: old + 1,
        ..Default::default()
    })
    .await
    .unwrap();
    let (_, err) = chunks(
        &mut kv,
        pb::RangeRequest {
            revision: old,
            ..range("k/", "k0")
        },
    )
    .await;
    assert_eq!(
        err.expect("compacted").message(),
        "etcdserver: mvcc: required revision has been compacted"
    );
}

fn rss_bytes(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// 1 GiB of values streamed to a slow client: gatewayd and storaged grow
/// by a bounded amount (chunks in flight and caches), not by the result.
#[tokio::test]
async fn a_range_larger_than_memory_streams_with_memory_flat() {
    const VALUE: usize = 1024 * 1024;
    const VALUES: usize = 1024;
    let m = Member::start_with_env(&[("TRIAD_STORAGED_CACHE_MB", "32")]);
    let ch = grpc_channel(&m.endpoint()).await;
    let mut kv = KvClient::new(ch);
    let started = Instant::now();
    for i in 0..VALUES {
        let mut value = vec![0u8; VALUE];
        value[..8].copy_from_slice(&(i as u64).to_be_bytes());
        kv.put(pb::PutRequest {
            key: format!("big/{i:05}").into_bytes(),
            value,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("put {i}: {e:?}\n{}", m.logs()));
    }
    eprintln!("wrote 1 GiB in {:?}", started.elapsed());
    let daemons = ["gatewayd", "storaged"];
    let pids: Vec<i32> = daemons.iter().map(|d| m.pid(d).expect("a pid")).collect();
    let before: Vec<u64> = pids.iter().map(|p| rss_bytes(*p)).collect();
    let mut peak = before.clone();
    let mut stream = kv
        .range_stream(pb::RangeRequest {
            key: b"big/".to_vec(),
            range_end: b"big0".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let (mut seen, mut bytes) = (0usize, 0usize);
    let mut count = 0;
    while let Some(m) = stream.message().await.unwrap() {
        let r = m.range_response.unwrap();
        for kv in &r.kvs {
            assert_eq!(kv.value[..8], (seen as u64).to_be_bytes(), "out of order");
            seen += 1;
            bytes += kv.value.len();
        }
        count = r.count;
        // A slow client: the server must wait, not buffer.
        tokio::time::sleep(Duration::from_millis(2)).await;
        for (p, pid) in peak.iter_mut().zip(&pids) {
            *p = (*p).max(rss_bytes(*pid));
        }
    }
    assert_eq!((seen, count), (VALUES, VALUES as i64));
    assert_eq!(bytes, VALUES * VALUE);
    for ((d, b), p) in daemons.iter().zip(&before).zip(&peak) {
        let grew = p.saturating_sub(*b);
        eprintln!("{d}: RSS {} MiB before, peak {} MiB", b >> 20, p >> 20);
        assert!(
            grew < 128 << 20,
            "{d} grew by {} MiB streaming 1 GiB",
            grew >> 20
        );
    }
}
