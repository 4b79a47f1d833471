//! The same scripted KV operations against a fresh triad member and a fresh
//! reference etcd must give the same results: revisions, key-values,
//! counts, `more`, prev_kv(s), txn branches, and for bad requests the same
//! gRPC code and error string.

use etcd_client::{
    Client, CompactionOptions, Compare, CompareOp, DeleteOptions, GetOptions, PutOptions,
    SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse,
};
use triad_tests::{connect, reference_etcd, Member, Proxy};

fn kv(k: &etcd_client::KeyValue) -> String {
    format!(
        "{}={}@c{}m{}v{}l{}",
        String::from_utf8_lossy(k.key()),
        String::from_utf8_lossy(k.value()),
        k.create_revision(),
        k.mod_revision(),
        k.version(),
        k.lease()
    )
}

fn err(e: &etcd_client::Error) -> String {
    match e {
        etcd_client::Error::GRpcStatus(s) => format!("ERR {:?} {}", s.code(), s.message()),
        other => format!("ERR {other}"),
    }
}

fn rev(h: Option<&etcd_client::ResponseHeader>) -> i64 {
    h.map_or(-1, |h| h.revision())
}

fn get_resp(r: &etcd_client::GetResponse) -> String {
    let kvs: Vec<String> = r.kvs().iter().map(kv).collect();
    format!(
        "rev={} count={} more={} [{}]",
        rev(r.header()),
        r.count(),
        r.more(),
        kvs.join(" ")
    )
}

fn txn_resp(r: &etcd_client::TxnResponse) -> String {
    let ops: Vec<String> = r
        .op_responses()
        .iter()
        .map(|o| match o {
            TxnOpResponse::Put(p) => format!(
                "put(rev={} prev={:?})",
                rev(p.header()),
                p.prev_key().map(kv)
            ),
            TxnOpResponse::Get(g) => format!("get({})", get_resp(g)),
            TxnOpResponse::Delete(d) => format!("del(rev={} n={})", rev(d.header()), d.deleted()),
            TxnOpResponse::Txn(t) => format!("txn({})", txn_resp(t)),
        })
        .collect();
    format!(
        "rev={} ok={} {}",
        rev(r.header()),
        r.succeeded(),
        ops.join(" ")
    )
}

async fn transcript(endpoint: &str) -> Vec<String> {
    let mut c: Client = connect(endpoint).await;
    let mut out = Vec::new();
    macro_rules! put {
        ($k:expr, $v:expr, $o:expr) => {
            out.push(match c.put($k, $v, $o).await {
                Ok(r) => format!(
                    "put {} -> rev={} prev={:?}",
                    $k,
                    rev(r.header()),
                    r.prev_key().map(kv)
                ),
                Err(e) => format!("put {} -> {}", $k, err(&e)),
            })
        };
    }
    macro_rules! get {
        ($label:expr, $k:expr, $o:expr) => {
            out.push(match c.get($k, $o).await {
                Ok(r) => format!("{} -> {}", $label, get_resp(&r)),
                Err(e) => format!("{} -> {}", $label, err(&e)),
            })
        };
    }
    macro_rules! del {
        ($label:expr, $k:expr, $o:expr) => {
            out.push(match c.delete($k, $o).await {
                Ok(r) => format!(
                    "{} -> rev={} n={} prev=[{}]",
                    $label,
                    rev(r.header()),
                    r.deleted(),
                    r.prev_kvs().iter().map(kv).collect::<Vec<_>>().join(" ")
                ),
                Err(e) => format!("{} -> {}", $label, err(&e)),
            })
        };
    }
    macro_rules! txn {
        ($label:expr, $t:expr) => {
            out.push(match c.txn($t).await {
                Ok(r) => format!("{} -> {}", $label, txn_resp(&r)),
                Err(e) => format!("{} -> {}", $label, err(&e)),
            })
        };
    }

    // Fresh cluster: the first write gets revision 2.
    get!("empty", "a", None);
    for (k, v) in [
        ("a", "1"),
        ("b", "22"),
        ("c", "3"),
        ("foo", "x"),
        ("foo/1", "y"),
        ("foo/2", "zz"),
        ("z\u{0}", "nul"),
    ] {
        put!(k, v, None);
    }
    put!("a", "10", Some(PutOptions::new().with_prev_key()));
    put!("b", "", Some(PutOptions::new().with_ignore_value()));
    put!("nope", "", Some(PutOptions::new().with_ignore_value()));
    put!("c", "x", Some(PutOptions::new().with_ignore_value()));
    put!("c", "33", Some(PutOptions::new().with_ignore_lease()));
    put!("c", "x", Some(PutOptions::new().with_lease(7)));
    put!(
        "c",
        "x",
        Some(PutOptions::new().with_ignore_lease().with_lease(7))
    );
    put!("", "x", None);
    put!("empty-value", "", None);

    get!("single", "a", None);
    get!("missing", "zz", None);
    get!("prefix", "foo", Some(GetOptions::new().with_prefix()));
    get!("range a..c", "a", Some(GetOptions::new().with_range("c")));
    get!("range empty", "c", Some(GetOptions::new().with_range("a")));
    get!("from-key b", "b", Some(GetOptions::new().with_from_key()));
    get!("all", "\0", Some(GetOptions::new().with_from_key()));
    get!("all keys", "", Some(GetOptions::new().with_all_keys()));
    get!(
        "limit 2",
        "a",
        Some(GetOptions::new().with_from_key().with_limit(2))
    );
    get!(
        "limit 100",
        "a",
        Some(GetOptions::new().with_from_key().with_limit(100))
    );
    get!(
        "rev 3",
        "a",
        Some(GetOptions::new().with_from_key().with_revision(3))
    );
    get!(
        "rev future",
        "a",
        Some(GetOptions::new().with_revision(1000))
    );
    get!(
        "keys only",
        "foo",
        Some(GetOptions::new().with_prefix().with_keys_only())
    );
    get!(
        "count only",
        "foo",
        Some(GetOptions::new().with_prefix().with_count_only())
    );
    get!(
        "serializable",
        "a",
        Some(GetOptions::new().with_serializable())
    );
    for target in [
        SortTarget::Key,
        SortTarget::Version,
        SortTarget::Create,
        SortTarget::Mod,
        SortTarget::Value,
    ] {
        for order in [SortOrder::Ascend, SortOrder::Descend] {
            get!(
                format!("sort {target:?} {order:?}"),
                "a",
                Some(GetOptions::new().with_from_key().with_sort(target, order))
            );
        }
        get!(
            format!("sort {target:?} none"),
            "a",
            Some(
                GetOptions::new()
                    .with_from_key()
                    .with_sort(target, SortOrder::None)
            )
        );
    }
    get!(
        "sort limit",
        "a",
        Some(
            GetOptions::new()
                .with_from_key()
                .with_sort(SortTarget::Value, SortOrder::Descend)
                .with_limit(3)
        )
    );
    get!(
        "min mod 5",
        "a",
        Some(GetOptions::new().with_from_key().with_min_mod_revision(5))
    );
    get!(
        "max mod 5",
        "a",
        Some(GetOptions::new().with_from_key().with_max_mod_revision(5))
    );
    get!(
        "min create 4",
        "a",
        Some(
            GetOptions::new()
                .with_from_key()
                .with_min_create_revision(4)
        )
    );
    get!(
        "max create 4 limit 1",
        "a",
        Some(
            GetOptions::new()
                .with_from_key()
                .with_max_create_revision(4)
                .with_limit(1)
        )
    );
    get!("empty key", "", None);

    // Transactions.
    txn!(
        "txn value eq",
        Txn::new()
            .when([Compare::value("a", CompareOp::Equal, "10")])
            .and_then([
                TxnOp::put("t1", "v", None),
                TxnOp::get("t1", None),
                TxnOp::get("a", None)
            ])
            .or_else([TxnOp::put("t2", "v", None)])
    );
    txn!(
        "txn version greater fails",
        Txn::new()
            .when([Compare::version("a", CompareOp::Greater, 5)])
            .and_then([TxnOp::put("t3", "v", None)])
            .or_else([
                TxnOp::get("a", None),
                TxnOp::delete("t1", Some(DeleteOptions::new().with_prev_key()))
            ])
    );
    txn!(
        "txn mod/create/lease",
        Txn::new().when([
            Compare::mod_revision("a", CompareOp::Less, 100),
            Compare::create_revision("a", CompareOp::Equal, 2),
            Compare::lease("a", CompareOp::Equal, 0),
            Compare::value("b", CompareOp::NotEqual, "x"),
        ])
    );
    txn!(
        "txn missing key value compare",
        Txn::new().when([Compare::value("missing", CompareOp::Equal, "")])
    );
    txn!(
        "txn missing key version compare",
        Txn::new().when([Compare::version("missing", CompareOp::Equal, 0)])
    );
    txn!(
        "txn range compare",
        Txn::new()
            .when([Compare::version("foo", CompareOp::Equal, 1).with_prefix()])
            .and_then([TxnOp::get(
                "foo",
                Some(GetOptions::new().with_prefix().with_count_only())
            )])
    );
    txn!(
        "txn nested",
        Txn::new().and_then([
            TxnOp::put("n1", "a", None),
            TxnOp::txn(
                Txn::new()
                    .when([Compare::value("n1", CompareOp::Equal, "a")])
                    .and_then([TxnOp::put("n2", "b", None)])
                    .or_else([TxnOp::put("n3", "c", None)])
            ),
            TxnOp::get("n", Some(GetOptions::new().with_prefix())),
        ])
    );
    txn!(
        "txn read only",
        Txn::new().and_then([TxnOp::get("a", None)])
    );
    txn!("txn empty", Txn::new());
    txn!(
        "txn delete nothing",
        Txn::new().and_then([TxnOp::delete("nothing-here", None)])
    );
    txn!(
        "txn duplicate put",
        Txn::new().and_then([TxnOp::put("d", "1", None), TxnOp::put("d", "2", None)])
    );
    txn!(
        "txn put in deleted range",
        Txn::new().and_then([
            TxnOp::delete("a", Some(DeleteOptions::new().with_range("z"))),
            TxnOp::put("b", "1", None)
        ])
    );
    txn!(
        "txn same key both branches",
        Txn::new()
            .and_then([TxnOp::put("s", "1", None)])
            .or_else([TxnOp::put("s", "2", None)])
    );
    let many: Vec<TxnOp> = (0..129)
        .map(|i| TxnOp::put(format!("m{i}"), "v", None))
        .collect();
    txn!("txn too many ops", Txn::new().and_then(many));
    txn!(
        "txn lease not found",
        Txn::new().and_then([TxnOp::put("l", "v", Some(PutOptions::new().with_lease(99)))])
    );
    txn!(
        "txn empty compare key",
        Txn::new().when([Compare::value("", CompareOp::Equal, "x")])
    );

    // Deletes.
    del!(
        "del single",
        "c",
        Some(DeleteOptions::new().with_prev_key())
    );
    del!("del missing", "c", None);
    del!(
        "del prefix",
        "foo",
        Some(DeleteOptions::new().with_prefix().with_prev_key())
    );
    del!("del empty key", "", None);
    get!(
        "after deletes",
        "\0",
        Some(GetOptions::new().with_from_key())
    );
    get!(
        "history of c",
        "c",
        Some(GetOptions::new().with_revision(9))
    );

    // Compaction.
    out.push(match c.compact(5, None).await {
        Ok(r) => format!("compact 5 -> rev={}", rev(r.header())),
        Err(e) => format!("compact 5 -> {}", err(&e)),
    });
    for (r, physical) in [(5, false), (4, false), (1000, false), (6, true)] {
        let opts = physical.then(|| CompactionOptions::new().with_physical());
        out.push(match c.compact(r, opts).await {
            Ok(resp) => format!("compact {r} -> rev={}", rev(resp.header())),
            Err(e) => format!("compact {r} -> {}", err(&e)),
        });
    }
    get!(
        "at compacted rev",
        "a",
        Some(GetOptions::new().with_revision(5))
    );
    get!(
        "at compact rev",
        "a",
        Some(GetOptions::new().with_revision(6))
    );
    get!(
        "after compaction",
        "\0",
        Some(GetOptions::new().with_from_key())
    );
    out
}

/// The transcript against `endpoint` is the same as against a fresh etcd.
async fn matches_etcd(endpoint: &str) {
    let ours = transcript(endpoint).await;
    let Some(etcd) = reference_etcd(&[]) else {
        return;
    };
    let theirs = transcript(&etcd.endpoint()).await;
    let mut diffs = Vec::new();
    for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        if a != b {
            diffs.push(format!("#{i}\n  triad: {a}\n  etcd:  {b}"));
        }
    }
    assert_eq!(ours.len(), theirs.len());
    assert!(
        diffs.is_empty(),
        "{} differences from etcd:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
}

#[tokio::test]
async fn kv_operations_match_etcd() {
    let member = Member::start();
    matches_etcd(&member.endpoint()).await;
}

/// The same through the L7 proxy (its cache and forwarding change nothing
/// a client can see).
#[tokio::test]
async fn kv_operations_through_the_l7_proxy_match_etcd() {
    let member = Member::start();
    let proxy = Proxy::in_front_of("l7", &[member.endpoint()], &[]);
    matches_etcd(&proxy.endpoint()).await;
}
