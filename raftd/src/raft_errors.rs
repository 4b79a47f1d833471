//! The one mapping from openraft's errors, and a leader's failures, to
//! etcd's: what a client sees when a proposal or a read index did not go
//! through this member, and which of those may be routed again.

use openraft::error::{ClientWriteError, LinearizableReadError, RaftError};
use tonic::Status;

use crate::types::TypeConfig;
use common::errors::EtcdError;

/// The leader asked was no longer leading, or could not be reached.
pub fn leadership_moved(e: &Status) -> bool {
    let moved = [
        EtcdError::NotLeader,
        EtcdError::LeaderChanged,
        EtcdError::NoLeader,
    ];
    std::error::Error::source(e).is_some()
        || EtcdError::of_status(e).is_some_and(|k| moved.contains(&k))
}

/// A call to the leader that was never sent (its stream could not be
/// opened, or the leader ended it before reading the call): it may be
/// sent again.
pub fn never_sent(e: &Status) -> bool {
    common::call_stream::not_sent(e)
}

/// The leader could not be asked or failed to answer: etcd's unavailability
/// (a proposal may or may not have been committed, as with etcd).
pub fn leader_failed(s: Status) -> Status {
    if std::error::Error::source(&s).is_some() {
        tracing::warn!(error = %s, "forwarding to the leader failed");
        EtcdError::Timeout.into()
    } else {
        s
    }
}

/// etcd's error for a proposal that was not committed through this node.
pub fn write_error(e: &ClientWriteError<TypeConfig>) -> EtcdError {
    match e {
        ClientWriteError::ForwardToLeader(f) if f.leader_id.is_none() => EtcdError::NoLeader,
        ClientWriteError::ForwardToLeader(_) => EtcdError::NotLeader,
        ClientWriteError::LogEntryDiscarded(_) => EtcdError::LeaderChanged,
        ClientWriteError::ChangeMembershipError(_) | ClientWriteError::PreconditionFailed(_) => {
            EtcdError::NotCapable
        }
    }
}

pub fn read_error(e: RaftError<TypeConfig, LinearizableReadError<TypeConfig>>) -> Status {
    match e {
        RaftError::APIError(LinearizableReadError::ForwardToLeader(f)) if f.leader_id.is_none() => {
            EtcdError::NoLeader.into()
        }
        RaftError::APIError(LinearizableReadError::ForwardToLeader(_)) => {
            EtcdError::NotLeader.into()
        }
        RaftError::APIError(LinearizableReadError::QuorumNotEnough(_)) => EtcdError::Timeout.into(),
        RaftError::Fatal(_) => EtcdError::Stopped.into(),
    }
}
