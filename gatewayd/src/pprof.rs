//! `/debug/pprof` on the client URLs (etcd's `--enable-pprof`, Go's
//! net/http/pprof paths): `profile?seconds=N` samples the member's three
//! daemons at once (gatewayd itself; storaged and raftd through their
//! `Profiler` service) and answers one gzipped pprof CPU profile whose
//! samples carry a `daemon` label; `cmdline` is gatewayd's command line.
//! Heap profiles are not offered: the daemons allocate through mimalloc,
//! which records no allocation sites.

use std::path::PathBuf;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use common::cpu_profile::{self, DEFAULT_SECONDS, FREQUENCY};
use common::proto::profile::profiler_client::ProfilerClient;
use common::proto::profile::{CpuRequest, CpuResponse};

/// The sockets of the daemons profiled besides gatewayd.
#[derive(Clone)]
pub struct Daemons {
    pub raftd_socket: PathBuf,
    pub storaged_socket: PathBuf,
}

pub fn routes(daemons: Daemons) -> Router {
    Router::new()
        .route("/debug/pprof/", get(index))
        .route("/debug/pprof/profile", get(profile))
        .route("/debug/pprof/cmdline", get(cmdline))
        .route("/debug/pprof/{name}", get(unknown))
        .with_state(daemons)
}

const INDEX: &str = "<html>\n<head>\n<title>/debug/pprof/</title>\n</head>\n<body>\n\
/debug/pprof/<br>\n<br>\nProfiles:<br>\n\
<a href=\"profile\">profile</a>: CPU profile of the member's daemons (?seconds=N, default 30)<br>\n\
<a href=\"cmdline\">cmdline</a>: gatewayd's command line<br>\n</body>\n</html>\n";

async fn index() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX).into_response()
}

async fn cmdline() -> Response {
    let args: Vec<String> = std::env::args().collect();
    (
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        args.join("\0"),
    )
        .into_response()
}

async fn unknown() -> Response {
    plain_error(StatusCode::NOT_FOUND, "Unknown profile")
}

/// Go's pprof error answer.
fn plain_error(status: StatusCode, text: &str) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::HeaderName::from_static("x-go-pprof"), "1"),
        ],
        format!("{text}\n"),
    )
        .into_response()
}

#[derive(serde::Deserialize)]
struct ProfileQuery {
    seconds: Option<String>,
}

/// Ask one sibling daemon for its stacks.
async fn remote(socket: PathBuf, seconds: u32) -> Result<CpuResponse, tonic::Status> {
    let mut client =
        ProfilerClient::new(common::uds::channel(&socket)).max_decoding_message_size(usize::MAX);
    let req = CpuRequest {
        seconds,
        frequency: FREQUENCY,
    };
    Ok(client.cpu(req).await?.into_inner())
}

async fn profile(State(d): State<Daemons>, Query(q): Query<ProfileQuery>) -> Response {
    // Go: a missing, unparsable or non-positive duration means 30 s.
    let seconds = q
        .seconds
        .as_deref()
        .and_then(|s| s.parse::<i64>().ok())
        .filter(|s| *s > 0)
        .map_or(DEFAULT_SECONDS, |s| u32::try_from(s).unwrap_or(u32::MAX));
    if seconds > cpu_profile::MAX_SECONDS {
        return plain_error(
            StatusCode::BAD_REQUEST,
            &cpu_profile::ProfileError::TooLong.to_string(),
        );
    }
    let started = std::time::SystemTime::now();
    let (own, raftd, storaged) = tokio::join!(
        cpu_profile::sample(seconds, FREQUENCY),
        remote(d.raftd_socket.clone(), seconds),
        remote(d.storaged_socket.clone(), seconds),
    );
    let own = match own {
        Ok(p) => p,
        Err(e) => return plain_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let mut parts = vec![("gatewayd", own)];
    for (name, part) in [("raftd", raftd), ("storaged", storaged)] {
        match part {
            Ok(p) => parts.push((name, p)),
            // A daemon down or busy profiling leaves its part out.
            Err(e) => tracing::warn!(daemon = name, error = %e.message(), "no CPU profile"),
        }
    }
    match cpu_profile::encode(&parts, started, seconds, FREQUENCY) {
        Ok(body) => (
            [
                (header::CONTENT_TYPE, "application/octet-stream"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"profile\"",
                ),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            body,
        )
            .into_response(),
        Err(e) => plain_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}
