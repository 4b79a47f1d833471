//! Auth tokens and identities on triad: AuthStatus and its revision, simple
//! tokens that expire after --auth-token-ttl unused and are valid on every
//! member, JWTs (--auth-token jwt,...) carrying the auth revision so a token
//! issued before a change is refused with etcd's "revision of auth store is
//! old", and users and roles surviving a kill -9 of storaged (simple tokens
//! do not: clients authenticate again, as after an etcd restart).

use std::time::Duration;

use common::proto::etcdserverpb::auth_client::AuthClient;
use common::proto::etcdserverpb::kv_client::KvClient;
use common::proto::etcdserverpb::*;
use tonic::transport::Channel;
use tonic::{Code, Request};
use triad_tests::cluster::Cluster;
use triad_tests::{grpc_channel as channel, login, with_token, Member};

/// root (admin) and dave (readwrite on "d/"), auth enabled.
async fn set_up_users(ch: &Channel) {
    let mut auth = AuthClient::new(ch.clone());
    for name in ["root", "dave"] {
        auth.user_add(AuthUserAddRequest {
            name: name.into(),
            password: "pw".into(),
            ..Default::default()
        })
        .await
        .expect("user add");
    }
    auth.role_add(AuthRoleAddRequest { name: "d".into() })
        .await
        .expect("role add");
    auth.role_grant_permission(AuthRoleGrantPermissionRequest {
        name: "d".into(),
        perm: Some(common::proto::authpb::Permission {
            perm_type: 2,
            key: b"d/".to_vec(),
            range_end: b"d0".to_vec(),
        }),
    })
    .await
    .expect("grant permission");
    for (user, role) in [("root", "root"), ("dave", "d")] {
        auth.user_grant_role(AuthUserGrantRoleRequest {
            user: user.into(),
            role: role.into(),
        })
        .await
        .expect("grant role");
    }
    auth.auth_enable(AuthEnableRequest {})
        .await
        .expect("enable");
}

async fn put(ch: &Channel, token: &str, key: &str) -> Result<(), tonic::Status> {
    KvClient::new(ch.clone())
        .put(with_token(
            PutRequest {
                key: key.into(),
                value: b"v".to_vec(),
                ..Default::default()
            },
            token,
        ))
        .await
        .map(|_| ())
}

async fn status(ch: &Channel, token: Option<&str>) -> (bool, u64) {
    let mut auth = AuthClient::new(ch.clone());
    let req = match token {
        Some(t) => with_token(AuthStatusRequest {}, t),
        None => Request::new(AuthStatusRequest {}),
    };
    let s = auth
        .auth_status(req)
        .await
        .expect("auth status")
        .into_inner();
    (s.enabled, s.auth_revision)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_tokens_expire_unused_and_users_survive_storaged_restart() {
    let m = Member::start_with_env(&[("TRIAD_AUTH_TOKEN_TTL", "2")]);
    let ch = channel(&m.endpoint()).await;
    assert_eq!(status(&ch, None).await, (false, 1));
    set_up_users(&ch).await;
    // 2 users + 1 role + 1 permission + 2 grants + enable.
    assert_eq!(status(&ch, None).await, (true, 8));

    let dave = login(&ch, "dave", "pw").await;
    put(&ch, &dave, "d/1").await.expect("dave writes d/");
    let denied = put(&ch, &dave, "e")
        .await
        .expect_err("dave may not write e");
    assert_eq!(denied.code(), Code::PermissionDenied);
    // Used within its TTL, a token lives on.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(800)).await;
        put(&ch, &dave, "d/2")
            .await
            .expect("token kept alive by use");
    }
    // Unused for longer than the TTL, it is gone.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let expired = put(&ch, &dave, "d/3").await.expect_err("expired token");
    assert_eq!(expired.code(), Code::Unauthenticated);
    assert_eq!(expired.message(), "etcdserver: invalid auth token");

    // storaged restarts: users, roles and the enabled flag are on disk.
    let dave = login(&ch, "dave", "pw").await;
    let pid = m.kill9("storaged");
    m.wait_restarted("storaged", pid);
    let mut again = None;
    for _ in 0..100 {
        match AuthClient::new(ch.clone())
            .authenticate(AuthenticateRequest {
                name: "dave".into(),
                password: "pw".into(),
            })
            .await
        {
            Ok(r) => {
                again = Some(r.into_inner().token);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let again = again.expect("dave logs in after the restart");
    let lost = put(&ch, &dave, "d/4")
        .await
        .expect_err("simple tokens are in memory");
    assert_eq!(lost.code(), Code::Unauthenticated);
    put(&ch, &again, "d/4").await.expect("a new token works");
    assert_eq!(
        put(&ch, &again, "e").await.expect_err("still no e").code(),
        Code::PermissionDenied
    );
    assert_eq!(status(&ch, None).await, (true, 8));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simple_token_is_valid_on_every_member() {
    let c = Cluster::start(3);
    let eps = c.endpoints();
    let first = channel(&eps[0]).await;
    set_up_users(&first).await;
    let dave = login(&first, "dave", "pw").await;
    for ep in &eps {
        let ch = channel(ep).await;
        put(&ch, &dave, "d/x").await.expect("token accepted here");
        let denied = put(&ch, &dave, "x").await.expect_err("and judged here");
        assert_eq!(denied.code(), Code::PermissionDenied);
    }
}

/// An EC key pair for ES256 tokens, as PEM files.
fn jwt_keys(dir: &std::path::Path) -> (String, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let private = dir.join("jwt.key");
    let public = dir.join("jwt.pub");
    std::fs::write(&private, key.serialize_pem()).expect("write key");
    std::fs::write(&public, key.public_key_pem()).expect("write pub");
    (
        private.to_string_lossy().into_owned(),
        public.to_string_lossy().into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_tokens_carry_the_auth_revision() {
    let keys = tempfile::tempdir().expect("tempdir");
    let (private, public) = jwt_keys(keys.path());
    let spec = format!("jwt,pub-key={public},priv-key={private},sign-method=ES256,ttl=1m");
    let m = Member::start_with_env(&[("TRIAD_AUTH_TOKEN", &spec)]);
    let ch = channel(&m.endpoint()).await;
    set_up_users(&ch).await;
    let dave = login(&ch, "dave", "pw").await;
    assert_eq!(dave.split('.').count(), 3, "a JWT: {dave}");
    put(&ch, &dave, "d/1")
        .await
        .expect("dave writes with a JWT");
    // Any change to the auth store makes earlier tokens stale.
    let root = login(&ch, "root", "pw").await;
    AuthClient::new(ch.clone())
        .role_add(with_token(
            AuthRoleAddRequest {
                name: "other".into(),
            },
            &root,
        ))
        .await
        .expect("role add");
    let stale = put(&ch, &dave, "d/2").await.expect_err("stale token");
    assert_eq!(stale.code(), Code::InvalidArgument);
    assert_eq!(stale.message(), "etcdserver: revision of auth store is old");
    let fresh = login(&ch, "dave", "pw").await;
    put(&ch, &fresh, "d/2").await.expect("a fresh token works");
    // A token signed by someone else is refused.
    let forged = format!("{}.{}.AAAA", fresh.split('.').next().unwrap_or(""), "e30");
    let refused = put(&ch, &forged, "d/3").await.expect_err("forged token");
    assert_eq!(refused.message(), "etcdserver: invalid auth token");
}

#[test]
fn bad_token_settings_are_config_errors() {
    for (k, v) in [
        ("--auth-token", "bogus"),
        ("--auth-token", "jwt,sign-method=RS256"),
        ("--bcrypt-cost", "3"),
    ] {
        let out = std::process::Command::new(triad_tests::bin("gatewayd"))
            .args([k, v])
            .output()
            .expect("run gatewayd");
        assert!(!out.status.success(), "{k} {v} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "one-line error: {err}");
    }
}
