//! Lease data in the state machine: grant, revoke (deleting every attached
//! key in one revision, in key order as etcd does) and TTL checkpoints,
//! applied inside the batch's write transaction. Liveness and expiry are the
//! lessor's (raftd, on the leader); storaged only keeps what must survive.
//!
//! `leases`: lease id (i64 big-endian) → LeaseRecord.
//! `lease_keys`: lease id ++ key → (), the keys attached to each lease.

use fjall::Readable;
use prost::Message;

use crate::record::Record;
use crate::schema::Keyspaces;
use crate::write::WriteTxn;
use crate::StoreError;
use common::errors::EtcdError;
use common::proto::etcdserverpb::{
    LeaseCheckpointRequest, LeaseCheckpointResponse, LeaseGrantRequest, LeaseGrantResponse,
    LeaseRevokeRequest, LeaseRevokeResponse,
};
use common::proto::storage::{LeaseInfo, LeaseRecord};

/// The keys attached to `lease`, in key order; None if there is no such lease.
pub fn keys_of<R: Readable>(
    r: &R,
    ks: &Keyspaces,
    lease: i64,
) -> Result<Option<Vec<Vec<u8>>>, StoreError> {
    if !r.contains_key(&ks.leases, lease.to_be_bytes())? {
        return Ok(None);
    }
    let mut keys = Vec::new();
    for g in r.prefix(&ks.lease_keys, lease.to_be_bytes()) {
        let k = g.key()?;
        keys.push(k[8..].to_vec());
    }
    Ok(Some(keys))
}

/// Every lease with its record.
pub fn all<R: Readable>(r: &R, ks: &Keyspaces) -> Result<Vec<LeaseInfo>, StoreError> {
    let mut out = Vec::new();
    for g in r.iter(&ks.leases) {
        let (k, v) = g.into_inner()?;
        let id = i64::from_be_bytes(k.as_ref().try_into().map_err(|_| StoreError::CorruptKey)?);
        out.push(LeaseInfo {
            id,
            lease: Some(LeaseRecord::decode(v.as_ref())?),
        });
    }
    Ok(out)
}

impl WriteTxn<'_, '_> {
    pub fn lease_grant(&mut self, g: &LeaseGrantRequest) -> Result<LeaseGrantResponse, StoreError> {
        if self.lease_exists(g.id)? {
            return Err(EtcdError::LeaseExist.into());
        }
        crate::metrics::lease_granted(g.ttl);
        let rec = LeaseRecord {
            ttl: g.ttl,
            remaining_ttl: 0,
        };
        self.tx
            .insert(&self.ks.leases, g.id.to_be_bytes(), rec.encode_to_vec());
        Ok(LeaseGrantResponse {
            header: self.header(),
            id: g.id,
            ttl: g.ttl,
            error: String::new(),
        })
    }

    pub fn lease_revoke(
        &mut self,
        r: &LeaseRevokeRequest,
    ) -> Result<LeaseRevokeResponse, StoreError> {
        let keys = keys_of(&*self.tx, self.ks, r.id)?.ok_or(EtcdError::LeaseNotFound)?;
        for key in keys {
            if let Some((rev, old)) = self.latest_live(&key)? {
                let prev = old.into_kv(key.clone(), rev);
                self.write(&key, Record::tombstone(), Some(prev));
            }
        }
        self.tx.remove(&self.ks.leases, r.id.to_be_bytes());
        crate::metrics::LEASES_REVOKED.inc();
        Ok(LeaseRevokeResponse {
            header: self.header(),
        })
    }

    pub fn lease_checkpoint(
        &mut self,
        c: &LeaseCheckpointRequest,
    ) -> Result<LeaseCheckpointResponse, StoreError> {
        for cp in &c.checkpoints {
            let Some(v) = self.tx.get(&self.ks.leases, cp.id.to_be_bytes())? else {
                continue;
            };
            let mut rec = LeaseRecord::decode(v.as_ref())?;
            rec.remaining_ttl = cp.remaining_ttl;
            self.tx
                .insert(&self.ks.leases, cp.id.to_be_bytes(), rec.encode_to_vec());
        }
        Ok(LeaseCheckpointResponse {
            header: self.header(),
        })
    }
}
