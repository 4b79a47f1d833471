//! Generated protobuf/gRPC code. Modules mirror the proto package paths so
//! cross-package references resolve; short aliases follow.

pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}
pub mod authpb {
    tonic::include_proto!("authpb");
}
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}
pub mod triad {
    pub mod storage {
        pub mod v1 {
            tonic::include_proto!("triad.storage.v1");
        }
    }
    pub mod raft {
        pub mod v1 {
            tonic::include_proto!("triad.raft.v1");
        }
    }
}

/// triad.raft.v1: raftd's internal (member-local) protocol.
pub use triad::raft::v1 as raft;
/// triad.storage.v1: storaged's internal protocol.
pub use triad::storage::v1 as storage;

/// Protocol names daemons exchange in Hello to check compatibility.
pub const STORAGE_PROTOCOL: &str = "triad.storage.v1";
pub const RAFT_PROTOCOL: &str = "triad.raft.v1";

/// A daemon's Hello check: the caller must speak our protocol version.
pub fn check_protocol(daemon: &str, ours: &str, asked: &str) -> Result<(), tonic::Status> {
    if asked == ours {
        Ok(())
    } else {
        Err(tonic::Status::failed_precondition(format!(
            "{daemon} speaks {ours}, caller wants {asked}"
        )))
    }
}
