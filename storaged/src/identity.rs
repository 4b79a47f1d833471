//! Whose data a store is: the cluster and member IDs raftd claims it for on
//! its first start, kept beside the store (not in it: a snapshot received
//! from another member replaces the store, not who it belongs to). A claim
//! for another member or cluster is refused, so a data dir put together
//! from two members' directories does not start.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "storaged's data belongs to member {have_member:x} of cluster {have_cluster:x}, \
         not to member {member:x} of cluster {cluster:x}"
    )]
    Other {
        have_cluster: u64,
        have_member: u64,
        cluster: u64,
        member: u64,
    },
    #[error("cannot record whose data this is in {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The identity file of the store in `store_dir`.
fn path(store_dir: &Path) -> PathBuf {
    store_dir.with_extension("identity")
}

/// Whether the store in `store_dir` was ever claimed (it served a member).
pub fn claimed(store_dir: &Path) -> bool {
    path(store_dir).exists()
}

/// Claim the store in `store_dir` for (cluster, member).
pub fn claim(store_dir: &Path, cluster: u64, member: u64) -> Result<(), IdentityError> {
    let path = path(store_dir);
    let io = |source| IdentityError::Io {
        path: path.clone(),
        source,
    };
    let wanted = format!("{cluster:x} {member:x}\n");
    match std::fs::read_to_string(&path) {
        Ok(have) => {
            let mut ids = have
                .split_whitespace()
                .map(|h| u64::from_str_radix(h, 16).unwrap_or(0));
            let (have_cluster, have_member) = (ids.next().unwrap_or(0), ids.next().unwrap_or(0));
            if (have_cluster, have_member) == (cluster, member) {
                return Ok(());
            }
            Err(IdentityError::Other {
                have_cluster,
                have_member,
                cluster,
                member,
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            common::durable::write_file(&path, wanted.as_bytes()).map_err(io)?;
            Ok(())
        }
        Err(e) => Err(io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_claim_stays() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = dir.path().join("storaged");
        claim(&store, 0xa, 1).expect("first claim");
        claim(&store, 0xa, 1).expect("same claim");
        let e = claim(&store, 0xb, 1).expect_err("another cluster");
        assert!(e.to_string().contains("member 1 of cluster a"), "{e}");
        assert!(claim(&store, 0xa, 2).is_err());
    }
}
