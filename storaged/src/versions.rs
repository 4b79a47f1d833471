//! The cluster version, a downgrade in progress and each member's server
//! version, as applied through raft (etcd keeps the first two in its
//! `cluster` bucket; the members' versions etcd asks each peer for).

use common::errors::EtcdError;
use common::proto::storage::raft_request::Op;
use common::proto::storage::raft_result::Result as Outcome;
use common::proto::storage::{DowngradeSet, MemberVersion, RaftRequest, VersionsApplied};
use fjall::Readable;
use prost::Message;

use crate::schema::Keyspaces;
use crate::StoreError;

const CLUSTER_VERSION: &[u8] = b"cluster_version";
const DOWNGRADE: &[u8] = b"downgrade";
const MEMBER_VERSION_PREFIX: &[u8] = b"member_version/";

fn member_key(id: u64) -> Vec<u8> {
    [MEMBER_VERSION_PREFIX, &id.to_be_bytes()].concat()
}

/// Apply a version setting. The cluster version and a member's version are
/// the member's own requests (never a client's); a downgrade's caller was
/// checked to be an administrator before it was proposed.
pub fn apply(
    tx: &mut fjall::SingleWriterWriteTx<'_>,
    ks: &Keyspaces,
    req: &RaftRequest,
    op: &Op,
) -> Result<Outcome, StoreError> {
    let members_own = req.auth.is_none();
    match op {
        Op::ClusterVersion(v) if members_own => tx.insert(&ks.meta, CLUSTER_VERSION, v.as_bytes()),
        Op::MemberVersion(m) if members_own => {
            tx.insert(&ks.meta, member_key(m.member_id), m.version.as_bytes())
        }
        Op::Downgrade(d) => tx.insert(&ks.meta, DOWNGRADE, d.encode_to_vec()),
        _ => return Err(EtcdError::NotCapable.into()),
    }
    let cluster_version = read_cluster_version(&*tx, ks)?;
    Ok(Outcome::Versions(VersionsApplied { cluster_version }))
}

fn read_cluster_version<R: Readable>(r: &R, ks: &Keyspaces) -> Result<String, StoreError> {
    Ok(r.get(&ks.meta, CLUSTER_VERSION)?
        .map(|v| String::from_utf8_lossy(&v).into_owned())
        .unwrap_or_default())
}

/// What is applied: (cluster version, downgrade, members' versions).
pub fn read<R: Readable>(
    r: &R,
    ks: &Keyspaces,
) -> Result<(String, Option<DowngradeSet>, Vec<MemberVersion>), StoreError> {
    let downgrade = match r.get(&ks.meta, DOWNGRADE)? {
        Some(v) => Some(DowngradeSet::decode(v.as_ref())?),
        None => None,
    };
    let mut members = Vec::new();
    for g in r.prefix(&ks.meta, MEMBER_VERSION_PREFIX) {
        let (k, v) = g.into_inner()?;
        let id = k[MEMBER_VERSION_PREFIX.len()..]
            .try_into()
            .map(u64::from_be_bytes)
            .map_err(|_| StoreError::CorruptKey)?;
        members.push(MemberVersion {
            member_id: id,
            version: String::from_utf8_lossy(&v).into_owned(),
        });
    }
    Ok((read_cluster_version(r, ks)?, downgrade, members))
}
