//! Read indexes through this member: for its gatewayd's reads, and for
//! reads a follower forwards, in rounds shared by concurrent reads (one
//! quorum confirmation for every read waiting when a round starts). A read
//! changes nothing, so one that met a leadership change is routed again.

use std::sync::Arc;

use openraft::async_runtime::WatchReceiver;
use openraft::ReadPolicy;
use tonic::Status;

use crate::raft_errors::{leader_failed, leadership_moved, read_error};
use crate::route::{Route, Router, REROUTES, REROUTE_PAUSE};
use crate::Raft;
use common::errors::EtcdError;
use common::proto::raft::ReadIndexResponse;
use common::read_batch::ReadBatch;

#[derive(Clone)]
pub struct ReadIndexes {
    raft: Raft,
    router: Arc<Router>,
    /// Rounds shared by this member's clients' reads, and by reads other
    /// members forwarded here.
    local_reads: Arc<ReadBatch<u64>>,
    forwarded_reads: Arc<ReadBatch<u64>>,
}

impl ReadIndexes {
    pub fn new(router: Arc<Router>) -> Self {
        ReadIndexes {
            raft: router.raft().clone(),
            router,
            local_reads: Arc::default(),
            forwarded_reads: Arc::default(),
        }
    }

    fn term(&self) -> u64 {
        self.raft.metrics().borrow_watched().current_term
    }

    /// `read_index_once` in a round shared with concurrent reads.
    async fn shared_read_index(&self, forwarded: bool) -> Result<u64, Status> {
        let batch = if forwarded {
            &self.forwarded_reads
        } else {
            &self.local_reads
        };
        let service = self.clone();
        batch
            .read(move || {
                let service = service.clone();
                async move { service.read_index_once(forwarded).await }
            })
            .await
    }

    /// A read index for a caller here (`forwarded` false) or a member.
    pub async fn answer_read_index(&self, forwarded: bool) -> Result<ReadIndexResponse, Status> {
        // A read changes nothing: when leadership moved under it (or the
        // old leader went away), it is simply routed again.
        let mut tries = 0;
        let _timed = crate::metrics::ReadIndexTimer::start();
        let read_index = loop {
            match self.shared_read_index(forwarded).await {
                Err(e) if !forwarded && tries < REROUTES && leadership_moved(&e) => {
                    tries += 1;
                    tokio::time::sleep(REROUTE_PAUSE).await;
                }
                r => break r.map_err(|e| crate::metrics::read_index_failed(leader_failed(e)))?,
            }
        };
        Ok(ReadIndexResponse {
            read_index,
            raft_term: self.term(),
            ..Default::default()
        })
    }

    /// A quorum-confirmed read index, here or from the leader (then
    /// applied here before answering).
    async fn read_index_once(&self, forwarded: bool) -> Result<u64, Status> {
        Ok(match self.router.route(forwarded).await? {
            // A forwarded read index is applied by the asking member.
            Route::Here if forwarded => self
                .raft
                .get_read_log_id(ReadPolicy::ReadIndex)
                .await
                .map_err(read_error)?
                .0
                .index(),
            Route::Here => self
                .raft
                .ensure_linearizable(ReadPolicy::ReadIndex)
                .await
                .map_err(read_error)?
                .index(),
            Route::Leader(link) => {
                // A read is simply routed again once another member leads.
                let index = self
                    .router
                    .while_leading(link.id, link.read_indexes.read_index())
                    .await
                    .ok_or_else(|| Status::from(EtcdError::LeaderChanged))??
                    .read_index;
                self.router.wait_applied(index).await?;
                index
            }
        })
    }
}
