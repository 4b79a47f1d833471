//! `/debug/pprof` on the client URLs (etcd's `--enable-pprof`, Go's
//! net/http/pprof paths): `profile?seconds=N` samples the member's three
//! daemons at once (gatewayd itself; storaged and raftd through their
//! `Profiler` service) and answers one gzipped pprof CPU profile whose
//! samples carry a `daemon` label; `heap` (and `allocs`, the same profile)
//! merges the three daemons' sampled allocations the same way; `cmdline`
//! is gatewayd's command line.

use std::path::PathBuf;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use common::cpu_profile::{self, DEFAULT_SECONDS, FREQUENCY};
use common::proto::profile::profiler_client::ProfilerClient;
use common::proto::profile::{CpuRequest, CpuResponse, HeapRequest, HeapResponse};

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
        .route("/debug/pprof/heap", get(heap))
        .route("/debug/pprof/allocs", get(heap))
        .route("/debug/pprof/{name}", get(unknown))
        .with_state(daemons)
}

const INDEX: &str = "<html>\n<head>\n<title>/debug/pprof/</title>\n</head>\n<body>\n\
/debug/pprof/<br>\n<br>\nProfiles:<br>\n\
<a href=\"profile\">profile</a>: CPU profile of the member's daemons (?seconds=N, default 30)<br>\n\
<a href=\"heap\">heap</a>: sampled allocations of the member's daemons, live and since start<br>\n\
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

/// Ask one sibling daemon for its sampled allocations.
async fn remote_heap(socket: PathBuf) -> Result<HeapResponse, tonic::Status> {
    let mut client =
        ProfilerClient::new(common::uds::channel(&socket)).max_decoding_message_size(usize::MAX);
    Ok(client.heap(HeapRequest {}).await?.into_inner())
}

async fn heap(State(d): State<Daemons>) -> Response {
    let (own, raftd, storaged) = tokio::join!(
        cpu_profile::heap(),
        remote_heap(d.raftd_socket.clone()),
        remote_heap(d.storaged_socket.clone()),
    );
    match gather(own, raftd, storaged) {
        Ok(parts) => profile_answer(cpu_profile::encode_heap(&parts), "heap"),
        Err(e) => plain_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// The daemons' parts of a profile: gatewayd's must be there; a sibling
/// that is down or busy profiling leaves its part out.
fn gather<T>(
    own: Result<T, cpu_profile::ProfileError>,
    raftd: Result<T, tonic::Status>,
    storaged: Result<T, tonic::Status>,
) -> Result<Vec<(&'static str, T)>, cpu_profile::ProfileError> {
    let own = own?;
    let mut parts = vec![("gatewayd", own)];
    for (name, part) in [("raftd", raftd), ("storaged", storaged)] {
        match part {
            Ok(p) => parts.push((name, p)),
            Err(e) => tracing::warn!(daemon = name, error = %e.message(), "no profile part"),
        }
    }
    Ok(parts)
}

/// A profile as Go's pprof handler sends it.
fn profile_answer(encoded: std::io::Result<Vec<u8>>, name: &'static str) -> Response {
    match encoded {
        Ok(body) => (
            [
                (header::CONTENT_TYPE, "application/octet-stream".to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{name}\""),
                ),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_string()),
            ],
            body,
        )
            .into_response(),
        Err(e) => plain_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
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
    match gather(own, raftd, storaged) {
        Ok(parts) => profile_answer(
            cpu_profile::encode(&parts, started, seconds, FREQUENCY),
            "profile",
        ),
        Err(e) => plain_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}
