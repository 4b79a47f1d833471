//! storaged: the member's state machine. Owns the MVCC store on fjall
//! (revisions, key index, leases, applied raft log id) and serves it to
//! raftd (Apply) and gatewayd (Range, Status, WaitCompaction) over a Unix
//! socket. storaged never talks to the network.

pub mod alarm;
pub mod apply;
pub mod auth;
pub mod compactor;
pub mod config;
pub mod etcd_db;
pub mod etcd_export;
pub mod etcd_import;
pub mod event_feed;
pub mod events;
pub mod fatal;
pub mod hash;
pub mod identity;
pub mod journal_writeback;
pub mod keys;
pub mod lease;
pub mod metrics;
pub mod permission;
pub mod read;
pub mod read_fence;
pub mod record;
pub mod schema;
pub mod service;
pub mod slow_request;
pub mod snapshot;
pub mod store;
pub mod versions;
pub mod write;

use common::errors::EtcdError;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    #[error("storage: {0}")]
    Fjall(#[from] fjall::Error),
    #[error(transparent)]
    Corrupt(#[from] record::CorruptRecord),
    #[error("corrupt key in the MVCC store")]
    CorruptKey,
    #[error("corrupt metadata: {0}")]
    Meta(#[from] prost::DecodeError),
    #[error("apply entry without a log id")]
    MissingLogId,
    #[error("apply gap: applied {applied:?}, got entry {got}")]
    Gap { applied: Option<u64>, got: u64 },
    #[error("a storaged lock was poisoned")]
    Poisoned,
    #[error("snapshot: {0}")]
    Io(#[from] std::io::Error),
    /// fsync of the journal failed: the kernel may have dropped the pages.
    #[error("storage: journal fsync: {0}")]
    JournalSync(std::io::Error),
    #[error("snapshot stream ended before it was complete")]
    IncompleteSnapshot,
    /// An etcd backend file that cannot be read or holds what etcd would not.
    #[error("etcd snapshot: {0}")]
    EtcdSnapshot(String),
    #[error("etcd snapshot: {0}")]
    BboltRead(#[from] common::bbolt::read::ReadError),
    #[error("etcd snapshot: {0}")]
    BboltWrite(#[from] common::bbolt::write::WriteError),
}

impl From<StoreError> for tonic::Status {
    fn from(e: StoreError) -> tonic::Status {
        fatal::report(&e);
        match e {
            StoreError::Etcd(e) => e.into(),
            StoreError::Gap { .. } => tonic::Status::failed_precondition(e.to_string()),
            other => tonic::Status::internal(other.to_string()),
        }
    }
}

#[cfg(test)]
mod etcd_tests;
#[cfg(test)]
mod store_tests;
