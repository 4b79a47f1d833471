//! etcd 3.7's RangeStream: a range sent in chunks, each within
//! `--max-request-bytes` where one key allows, all read at the revision
//! of the first; header, `more` and `count` on the last chunk only, so
//! the chunks merged equal Range's response. At most one chunk waits for
//! the client and one is read, whatever the result's size.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::backend::Backend;
use common::proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use common::proto::etcdserverpb::{RangeRequest, RangeResponse, RangeStreamResponse};
use common::proto::storage::AuthInfo;

/// Room for a chunk's header, `more` and `count` within the limit.
const RESPONSE_OVERHEAD: usize = 128;

pub type Chunks = ReceiverStream<Result<RangeStreamResponse, Status>>;

/// What RangeStream refuses that Range takes: orders other than by key
/// ascending and revision filters need the whole result before the first
/// chunk (etcd answers Unimplemented).
pub fn check_streamable(r: &RangeRequest) -> Result<(), Status> {
    let order = SortOrder::try_from(r.sort_order).unwrap_or(SortOrder::None);
    let target = SortTarget::try_from(r.sort_target).unwrap_or(SortTarget::Key);
    if !(order == SortOrder::None || target == SortTarget::Key && order == SortOrder::Ascend) {
        return Err(Status::unimplemented(
            "RangeStream does not support custom sort orders",
        ));
    }
    if r.min_mod_revision != 0
        || r.max_mod_revision != 0
        || r.min_create_revision != 0
        || r.max_create_revision != 0
    {
        return Err(Status::unimplemented(
            "RangeStream does not support revision filters",
        ));
    }
    Ok(())
}

/// Stream `r` (checked, and read-indexed unless serializable) to the
/// client on behalf of `who`.
pub fn serve(backend: Arc<Backend>, who: AuthInfo, r: RangeRequest, max_bytes: usize) -> Chunks {
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        let last = match send_chunks(&backend, &who, r, max_bytes, &tx).await {
            Ok(Some(mut last)) => {
                backend.fill(&mut last.header);
                Ok(RangeStreamResponse {
                    range_response: Some(last),
                })
            }
            Ok(None) => return, // the client went away
            Err(e) => Err(e),
        };
        let _ = tx.send(last).await;
    });
    ReceiverStream::new(rx)
}

/// Send every chunk but the last; the last (with header, `more` and
/// `count`) is returned, or None once the client is gone.
async fn send_chunks(
    backend: &Backend,
    who: &AuthInfo,
    r: RangeRequest,
    max_bytes: usize,
    tx: &mpsc::Sender<Result<RangeStreamResponse, Status>>,
) -> Result<Option<RangeResponse>, Status> {
    if r.count_only {
        return backend.range(r, Some(who)).await.map(Some);
    }
    let budget = max_bytes.saturating_sub(RESPONSE_OVERHEAD).max(1);
    let total_limit = if r.limit > 0 { r.limit } else { i64::MAX };
    let mut reader = backend.chunk_reader().await?;
    let mut next = RangeRequest {
        key: r.key.clone(),
        range_end: r.range_end.clone(),
        revision: r.revision,
        keys_only: r.keys_only,
        ..Default::default()
    };
    let (mut header_revision, mut sent) = (0i64, 0i64);
    loop {
        next.limit = total_limit - sent;
        let chunk = reader.next(next.clone(), Some(who), budget).await?;
        if header_revision == 0 {
            header_revision = chunk.header.as_ref().map_or(0, |h| h.revision);
            if next.revision <= 0 {
                next.revision = header_revision;
            }
        }
        sent += chunk.kvs.len() as i64;
        let after_last = chunk
            .kvs
            .last()
            .map(|kv| [kv.key.as_slice(), b"\0"].concat());
        let done = !chunk.more || sent >= total_limit;
        if done {
            // Range's count: every match, also past the limit.
            let mut count = sent;
            if chunk.more {
                if let Some(from) = after_last {
                    let rest = RangeRequest {
                        key: from,
                        range_end: r.range_end.clone(),
                        revision: next.revision,
                        count_only: true,
                        ..Default::default()
                    };
                    count += backend.range(rest, Some(who)).await?.count;
                }
            }
            return Ok(Some(RangeResponse {
                header: Some(common::proto::etcdserverpb::ResponseHeader {
                    revision: header_revision,
                    ..Default::default()
                }),
                kvs: chunk.kvs,
                more: chunk.more,
                count,
            }));
        }
        let Some(from) = after_last else {
            return Err(common::errors::unavailable("storaged sent an empty chunk"));
        };
        next.key = from;
        let piece = RangeStreamResponse {
            range_response: Some(RangeResponse {
                kvs: chunk.kvs,
                ..Default::default()
            }),
        };
        if tx.send(Ok(piece)).await.is_err() {
            return Ok(None);
        }
    }
}
