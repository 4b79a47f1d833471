//! The one place that maps triad's internal errors to etcd's gRPC statuses:
//! the same message strings and codes etcd's `rpctypes` uses, so clients'
//! error matching (`rpctypes.ErrCompacted` and friends) works unchanged.

use tonic::{Code, Status};

/// An error an etcd client can see. The numeric code travels inside raft
/// results (`RaftResult.error`) between daemons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EtcdError {
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    #[error("etcdserver: key not found")]
    KeyNotFound,
    #[error("etcdserver: value is provided")]
    ValueProvided,
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    #[error("etcdserver: invalid sort option")]
    InvalidSortOption,
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRev,
    #[error("etcdserver: mvcc: database space exceeded")]
    NoSpace,
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    #[error("etcdserver: lease already exists")]
    LeaseExist,
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    #[error("etcdserver: no leader")]
    NoLeader,
    #[error("etcdserver: not leader")]
    NotLeader,
    #[error("etcdserver: leader changed")]
    LeaderChanged,
    #[error("etcdserver: request timed out")]
    Timeout,
    #[error("etcdserver: server stopped")]
    Stopped,
    #[error("etcdserver: not capable")]
    NotCapable,
    #[error("etcdserver: corrupt cluster")]
    Corrupt,
    #[error("etcdserver: member ID already exist")]
    MemberExist,
    #[error("etcdserver: Peer URLs already exists")]
    PeerUrlExist,
    #[error("etcdserver: re-configuration failed due to not enough started members")]
    MemberNotEnoughStarted,
    #[error("etcdserver: unhealthy cluster")]
    Unhealthy,
    #[error("etcdserver: given member URLs are invalid")]
    MemberBadUrls,
    #[error("etcdserver: member not found")]
    MemberNotFound,
    #[error("etcdserver: can only promote a learner member")]
    MemberNotLearner,
    #[error("etcdserver: can only promote a learner member which is in sync with leader")]
    LearnerNotReady,
    #[error("etcdserver: too many learner members in cluster")]
    TooManyLearners,
    #[error("etcdserver: bad leader transferee")]
    BadLeaderTransferee,
    #[error("etcdserver: rpc not supported for learner")]
    NotSupportedForLearner,
    #[error("etcdserver: root user does not exist")]
    RootUserNotExist,
    #[error("etcdserver: root user does not have root role")]
    RootRoleNotExist,
    #[error("etcdserver: user name already exists")]
    UserAlreadyExist,
    #[error("etcdserver: user name is empty")]
    UserEmpty,
    #[error("etcdserver: user name not found")]
    UserNotFound,
    #[error("etcdserver: role name already exists")]
    RoleAlreadyExist,
    #[error("etcdserver: role name not found")]
    RoleNotFound,
    #[error("etcdserver: role name is empty")]
    RoleEmpty,
    #[error("etcdserver: authentication failed, invalid user ID or password")]
    AuthFailed,
    #[error("etcdserver: permission denied")]
    PermissionDenied,
    #[error("etcdserver: role is not granted to the user")]
    RoleNotGranted,
    #[error("etcdserver: permission is not granted to the role")]
    PermissionNotGranted,
    #[error("etcdserver: authentication is not enabled")]
    AuthNotEnabled,
    #[error("etcdserver: invalid auth token")]
    InvalidAuthToken,
    #[error("etcdserver: invalid auth management")]
    InvalidAuthMgmt,
    #[error("etcdserver: revision of auth store is old")]
    AuthOldRevision,
    // triad's own bounds (etcd has none of these).
    #[error("etcdserver: key is too large")]
    KeyTooLarge,
    #[error("etcdserver: user name is too large")]
    UserNameTooLarge,
    #[error("etcdserver: role name is too large")]
    RoleNameTooLarge,
    /// A request no member can decode (it reached the log without passing
    /// a gatewayd, or from a newer version).
    #[error("etcdserver: malformed request")]
    Malformed,
    #[error("etcdserver: wrong downgrade target version format")]
    WrongDowngradeVersionFormat,
    #[error("etcdserver: invalid downgrade target version")]
    InvalidDowngradeTargetVersion,
    #[error("etcdserver: cluster has a downgrade job in progress")]
    DowngradeInProcess,
    #[error("etcdserver: no inflight downgrade job")]
    NoInflightDowngrade,
    #[error("etcdserver: cluster version not found during downgrade")]
    ClusterVersionUnavailable,
}

/// Wire codes are positions in this list: append only.
const ALL: [EtcdError; 57] = [
    EtcdError::EmptyKey,
    EtcdError::KeyNotFound,
    EtcdError::ValueProvided,
    EtcdError::LeaseProvided,
    EtcdError::TooManyOps,
    EtcdError::DuplicateKey,
    EtcdError::InvalidSortOption,
    EtcdError::Compacted,
    EtcdError::FutureRev,
    EtcdError::NoSpace,
    EtcdError::LeaseNotFound,
    EtcdError::LeaseExist,
    EtcdError::LeaseTtlTooLarge,
    EtcdError::RequestTooLarge,
    EtcdError::NoLeader,
    EtcdError::NotLeader,
    EtcdError::LeaderChanged,
    EtcdError::Timeout,
    EtcdError::Stopped,
    EtcdError::NotCapable,
    EtcdError::Corrupt,
    EtcdError::MemberExist,
    EtcdError::PeerUrlExist,
    EtcdError::MemberNotEnoughStarted,
    EtcdError::MemberBadUrls,
    EtcdError::MemberNotFound,
    EtcdError::MemberNotLearner,
    EtcdError::LearnerNotReady,
    EtcdError::TooManyLearners,
    EtcdError::BadLeaderTransferee,
    EtcdError::NotSupportedForLearner,
    EtcdError::RootUserNotExist,
    EtcdError::RootRoleNotExist,
    EtcdError::UserAlreadyExist,
    EtcdError::UserEmpty,
    EtcdError::UserNotFound,
    EtcdError::RoleAlreadyExist,
    EtcdError::RoleNotFound,
    EtcdError::RoleEmpty,
    EtcdError::AuthFailed,
    EtcdError::PermissionDenied,
    EtcdError::RoleNotGranted,
    EtcdError::PermissionNotGranted,
    EtcdError::AuthNotEnabled,
    EtcdError::InvalidAuthToken,
    EtcdError::InvalidAuthMgmt,
    EtcdError::AuthOldRevision,
    EtcdError::KeyTooLarge,
    EtcdError::UserNameTooLarge,
    EtcdError::RoleNameTooLarge,
    EtcdError::Malformed,
    // New variants go last: a wire code is a position here.
    EtcdError::Unhealthy,
    EtcdError::WrongDowngradeVersionFormat,
    EtcdError::InvalidDowngradeTargetVersion,
    EtcdError::DowngradeInProcess,
    EtcdError::NoInflightDowngrade,
    EtcdError::ClusterVersionUnavailable,
];

impl EtcdError {
    /// etcd's gRPC code for this error (as in etcd's `rpctypes`).
    pub fn grpc_code(self) -> Code {
        use EtcdError::*;
        match self {
            EmptyKey
            | KeyNotFound
            | ValueProvided
            | LeaseProvided
            | TooManyOps
            | DuplicateKey
            | InvalidSortOption
            | RequestTooLarge
            | MemberBadUrls
            | UserEmpty
            | RoleEmpty
            | AuthFailed
            | InvalidAuthMgmt
            | AuthOldRevision
            | KeyTooLarge
            | UserNameTooLarge
            | RoleNameTooLarge
            | Malformed
            | WrongDowngradeVersionFormat
            | InvalidDowngradeTargetVersion => Code::InvalidArgument,
            Compacted | FutureRev | LeaseTtlTooLarge => Code::OutOfRange,
            NoSpace => Code::ResourceExhausted,
            LeaseNotFound | MemberNotFound => Code::NotFound,
            LeaseExist
            | NotLeader
            | NotCapable
            | MemberExist
            | PeerUrlExist
            | MemberNotEnoughStarted
            | MemberNotLearner
            | LearnerNotReady
            | TooManyLearners
            | BadLeaderTransferee
            | RootUserNotExist
            | RootRoleNotExist
            | UserAlreadyExist
            | UserNotFound
            | RoleAlreadyExist
            | RoleNotFound
            | RoleNotGranted
            | PermissionNotGranted
            | AuthNotEnabled
            | DowngradeInProcess
            | NoInflightDowngrade
            | ClusterVersionUnavailable => Code::FailedPrecondition,
            PermissionDenied => Code::PermissionDenied,
            InvalidAuthToken => Code::Unauthenticated,
            NoLeader | LeaderChanged | Timeout | Stopped | NotSupportedForLearner | Unhealthy => {
                Code::Unavailable
            }
            Corrupt => Code::DataLoss,
        }
    }

    /// Stable wire code used inside triad's internal protocols (never 0).
    pub fn wire_code(self) -> u32 {
        ALL.iter()
            .position(|e| *e == self)
            .map_or(0, |i| i as u32 + 1)
    }

    /// The etcd error a status carries, if it is one of ours.
    pub fn of_status(s: &Status) -> Option<Self> {
        ALL.iter()
            .copied()
            .find(|e| e.grpc_code() == s.code() && e.to_string() == s.message())
    }

    pub fn from_wire_code(code: u32) -> Option<Self> {
        (code as usize)
            .checked_sub(1)
            .and_then(|i| ALL.get(i).copied())
    }
}

impl From<EtcdError> for Status {
    fn from(e: EtcdError) -> Status {
        Status::new(e.grpc_code(), e.to_string())
    }
}

/// How etcd's Maintenance service reports an auth refusal: the auth
/// store's own error text ("auth: ..."), code Unknown, not the KV service's
/// translated status.
pub fn maintenance_auth_status(s: Status) -> Status {
    let Some(e) = EtcdError::of_status(&s) else {
        return s;
    };
    let raw = match e {
        EtcdError::PermissionDenied => "auth: permission denied",
        EtcdError::UserEmpty => "auth: user name is empty",
        EtcdError::UserNotFound => "auth: user name not found",
        EtcdError::AuthOldRevision => "auth: revision in header is old",
        _ => return s,
    };
    Status::unknown(raw)
}

/// A status as etcd (Go's grpc) prints it, for texts etcd sends inside
/// messages (a watch's cancel reason): "rpc error: code = X desc = Y".
pub fn go_status_text(s: &Status) -> String {
    let code = match s.code() {
        Code::Cancelled => "Canceled".to_string(),
        other => format!("{other:?}"),
    };
    format!("rpc error: code = {code} desc = {}", s.message())
}

/// tonic's own refusals in grpc-go's words: a message over the receive
/// limit is ResourceExhausted "grpc: received message larger than max (N vs.
/// M)" there; tonic's OutOfRange would read as "future revision" to etcd
/// clients. Other statuses pass unchanged.
pub fn as_grpc_go(s: Status) -> Status {
    match oversized_message(s.message()) {
        Some((len, limit)) if s.code() == Code::OutOfRange => Status::resource_exhausted(format!(
            "grpc: received message larger than max ({len} vs. {limit})"
        )),
        _ => s,
    }
}

/// The sizes in tonic's "decoded message length too large" text.
fn oversized_message(message: &str) -> Option<(u64, u64)> {
    let rest = message.strip_prefix("Error, decoded message length too large: found ")?;
    let (len, rest) = rest.split_once(" bytes, the limit is: ")?;
    let limit = rest.strip_suffix(" bytes")?;
    Some((len.parse().ok()?, limit.parse().ok()?))
}

/// An error as etcd's lock and election services return it: they call the
/// server through an in-process client, which turns etcd's own errors into
/// plain Go errors, so clients see them with code Unknown and the same text.
pub fn through_inner_client(s: Status) -> Status {
    match EtcdError::of_status(&s) {
        Some(_) => Status::unknown(s.message()),
        None => s,
    }
}

/// The Status for an error code carried inside an internal message; an
/// unknown code (a newer peer daemon) is reported, not guessed at.
pub fn status_from_wire(code: u32) -> Status {
    EtcdError::from_wire_code(code)
        .map(Status::from)
        .unwrap_or_else(|| unavailable(format!("unknown error code {code}")))
}

/// A daemon of this member could not be reached or failed internally: the
/// client sees etcd's generic unavailability, with the cause for operators.
pub fn unavailable(cause: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("etcdserver: {cause}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_messages_read_as_grpc_go_reports_them() {
        let tonic = Status::out_of_range(
            "Error, decoded message length too large: found 3000010 bytes, the limit is: 2097152 bytes",
        );
        let go = as_grpc_go(tonic);
        assert_eq!(go.code(), Code::ResourceExhausted);
        assert_eq!(
            go.message(),
            "grpc: received message larger than max (3000010 vs. 2097152)"
        );
        let revision =
            Status::out_of_range("etcdserver: mvcc: required revision is a future revision");
        assert_eq!(as_grpc_go(revision.clone()).code(), Code::OutOfRange);
    }

    #[test]
    fn wire_codes_round_trip() {
        for e in ALL {
            assert_eq!(EtcdError::from_wire_code(e.wire_code()), Some(e));
        }
        assert_eq!(EtcdError::from_wire_code(0), None);
        assert_eq!(EtcdError::from_wire_code(999), None);
    }

    #[test]
    fn statuses_match_etcd() {
        let s = Status::from(EtcdError::Compacted);
        assert_eq!(s.code(), Code::OutOfRange);
        assert_eq!(
            s.message(),
            "etcdserver: mvcc: required revision has been compacted"
        );
        assert_eq!(
            Status::from(EtcdError::EmptyKey).code(),
            Code::InvalidArgument
        );
    }
}
