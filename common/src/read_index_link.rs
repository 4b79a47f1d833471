//! Read indexes from a raftd: as messages on its ReadIndexStream (one
//! long-lived call, answered by id), or one ReadIndex call each when that
//! raftd predates the stream (a rolling upgrade). gatewayd asks its own
//! raftd this way, and a follower's raftd asks the leader's.

use std::sync::atomic::{AtomicBool, Ordering};

use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use crate::call_stream::{broke_retryable, CallStream, Opener};
use crate::proto::raft::raft_local_client::RaftLocalClient;
use crate::proto::raft::{ReadIndexRequest, ReadIndexResponse};

pub struct ReadIndexLink {
    client: RaftLocalClient<Channel>,
    /// Calls are marked as forwarded by another member.
    forwarded: bool,
    stream: CallStream<ReadIndexRequest, ReadIndexResponse>,
    /// The raftd answered that it has no ReadIndexStream.
    unary_only: AtomicBool,
}

impl ReadIndexLink {
    pub fn new(client: RaftLocalClient<Channel>, forwarded: bool) -> Self {
        let to = client.clone();
        let opener: Opener<_, _> = Box::new(move |calls| {
            let mut to = to.clone();
            Box::pin(async move {
                let mut req = Request::new(calls);
                if forwarded {
                    crate::proto::mark_forwarded(&mut req);
                }
                Ok(to.read_index_stream(req).await?.into_inner())
            })
        });
        ReadIndexLink {
            client,
            forwarded,
            // A read index may simply be asked for again.
            stream: CallStream::new(opener, broke_retryable),
            unary_only: AtomicBool::new(false),
        }
    }

    /// One quorum-confirmed read index (and the raftd's term).
    pub async fn read_index(&self) -> Result<ReadIndexResponse, Status> {
        if !self.unary_only.load(Ordering::Relaxed) {
            match self.stream.call(ReadIndexRequest::default()).await {
                Err(s) if s.code() == Code::Unimplemented => {
                    self.unary_only.store(true, Ordering::Relaxed);
                }
                other => return other,
            }
        }
        let mut req = Request::new(ReadIndexRequest::default());
        if self.forwarded {
            crate::proto::mark_forwarded(&mut req);
        }
        Ok(self.client.clone().read_index(req).await?.into_inner())
    }
}
