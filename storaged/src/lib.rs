//! storaged: the member's state machine. Owns the MVCC store on fjall
//! (revisions, key index, leases, applied raft log id) and serves it to
//! raftd (Apply) and gatewayd (Range, Status, WaitCompaction) over a Unix
//! socket. storaged never talks to the network.

pub mod alarm;
pub mod auth;
pub mod compactor;
pub mod event_feed;
pub mod events;
pub mod hash;
pub mod journal_writeback;
pub mod keys;
pub mod lease;
pub mod metrics;
pub mod permission;
pub mod read;
pub mod record;
pub mod service;
pub mod snapshot;
pub mod store;
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
}

/// Set once the store failed in a way only a restart cures: fjall refuses
/// every write after a failed persist (a full disk, say) until the
/// database is opened again. storaged's main exits on it, so its
/// supervisor restarts it and it recovers from its journal.
pub static FATAL: std::sync::LazyLock<tokio::sync::watch::Sender<Option<String>>> =
    std::sync::LazyLock::new(|| tokio::sync::watch::Sender::new(None));

impl StoreError {
    fn is_fatal(&self) -> bool {
        // A lock of ours poisoned means a thread panicked holding it (the
        // store's state is unknown): also only a restart cures it.
        matches!(
            self,
            StoreError::Fjall(fjall::Error::Poisoned | fjall::Error::Io(_))
                | StoreError::Poisoned
                | StoreError::JournalSync(_)
        )
    }
}

impl From<StoreError> for tonic::Status {
    fn from(e: StoreError) -> tonic::Status {
        if e.is_fatal() {
            FATAL.send_if_modified(|f| {
                let first = f.is_none();
                if first {
                    *f = Some(e.to_string());
                }
                first
            });
        }
        match e {
            StoreError::Etcd(e) => e.into(),
            StoreError::Gap { .. } => tonic::Status::failed_precondition(e.to_string()),
            other => tonic::Status::internal(other.to_string()),
        }
    }
}

#[cfg(test)]
mod store_tests;
