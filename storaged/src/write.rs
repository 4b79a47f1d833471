//! Applying etcd writes inside one fjall write transaction: Put,
//! DeleteRange, Txn (compares, nested txns, etcd's pre-checks) and the
//! logical part of Compaction. All changes of one request share one main
//! revision; `sub` orders them. Errors that etcd returns at apply time
//! (lease not found, key not found for ignore_value, ...) leave no trace.

use fjall::{Readable, SingleWriterWriteTx};

use crate::keys::{self, Rev};
use crate::read::{self, KeyRange, RevBounds};
use crate::record::Record;
use crate::schema::Keyspaces;
use crate::StoreError;
use common::errors::EtcdError;
use common::proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use common::proto::etcdserverpb::request_op::Request;
use common::proto::etcdserverpb::response_op::Response;
use common::proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, Compare, DeleteRangeRequest, DeleteRangeResponse,
    PutRequest, PutResponse, RequestOp, ResponseHeader, ResponseOp, TxnRequest, TxnResponse,
};
use common::proto::mvccpb::{Event, KeyValue};

/// Revision state carried across the entries of one applied batch.
#[derive(Debug, Clone, Copy)]
pub struct RevState {
    pub current: i64,
    pub compacted: i64,
}

/// One write request in progress: its pending main revision and how many
/// changes it has made so far.
pub struct WriteTxn<'a, 'db> {
    pub(crate) tx: &'a mut SingleWriterWriteTx<'db>,
    pub(crate) ks: &'a Keyspaces,
    begin: i64,
    compacted: i64,
    changes: i64,
    /// The changes made, as watch events (with prev_kv), in order.
    events: Vec<Event>,
}

impl<'a, 'db> WriteTxn<'a, 'db> {
    pub fn new(tx: &'a mut SingleWriterWriteTx<'db>, ks: &'a Keyspaces, revs: RevState) -> Self {
        WriteTxn {
            tx,
            ks,
            begin: revs.current,
            compacted: revs.compacted,
            changes: 0,
            events: Vec::new(),
        }
    }

    /// The revision this request ends at (begin + 1 once it changed anything).
    pub fn rev(&self) -> i64 {
        if self.changes > 0 {
            self.begin + 1
        } else {
            self.begin
        }
    }

    pub(crate) fn header(&self) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            revision: self.rev(),
            ..Default::default()
        })
    }

    fn bounds(&self) -> RevBounds {
        RevBounds {
            current: self.rev(),
            compacted: self.compacted,
        }
    }

    pub(crate) fn latest_live(&self, key: &[u8]) -> Result<Option<(Rev, Record)>, StoreError> {
        Ok(
            read::latest(&*self.tx, self.ks.index.as_ref(), key, self.rev())?
                .filter(|(_, r)| !r.tombstone),
        )
    }

    /// Every live key-value named by (key, range_end), as this txn sees them.
    fn live_in(&self, key: &[u8], range_end: &[u8]) -> Result<Vec<KeyValue>, StoreError> {
        let range = KeyRange::new(key, range_end);
        Ok(read::scan(
            &*self.tx,
            self.ks.index.as_ref(),
            &range,
            self.rev(),
            0,
            true,
        )?
        .0)
    }

    /// Store `rec` as the next change of this request and record its event.
    pub(crate) fn write(&mut self, key: &[u8], rec: Record, prev_kv: Option<KeyValue>) {
        let rev = Rev {
            main: self.begin + 1,
            sub: self.changes,
        };
        let esc = keys::escape(key);
        self.tx
            .insert(&self.ks.index, keys::index_key(&esc, rev), rec.encode());
        self.tx.insert(&self.ks.revs, keys::rev_key(rev), esc);
        self.changes += 1;
        crate::metrics::key_changed(prev_kv.is_some(), !rec.tombstone);
        // Keep each lease's set of attached keys current.
        let old_lease = prev_kv.as_ref().map_or(0, |kv| kv.lease);
        let new_lease = if rec.tombstone { 0 } else { rec.lease };
        if old_lease != 0 && old_lease != new_lease {
            self.tx.remove(
                &self.ks.lease_keys,
                crate::schema::lease_attachment(old_lease, key),
            );
        }
        if new_lease != 0 {
            self.tx.insert(
                &self.ks.lease_keys,
                crate::schema::lease_attachment(new_lease, key),
                [],
            );
        }
        self.events
            .push(crate::events::event(key.to_vec(), rev, rec, prev_kv));
    }

    /// The watch events of the changes made so far.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    pub(crate) fn lease_exists(&self, lease: i64) -> Result<bool, StoreError> {
        Ok(self.tx.contains_key(&self.ks.leases, lease.to_be_bytes())?)
    }

    /// etcd's checkRequestPut: errors a Put would hit, without writing.
    fn check_put(&self, p: &PutRequest) -> Result<(), StoreError> {
        if (p.ignore_value || p.ignore_lease) && self.latest_live(&p.key)?.is_none() {
            return Err(EtcdError::KeyNotFound.into());
        }
        if p.lease != 0 && !self.lease_exists(p.lease)? {
            return Err(EtcdError::LeaseNotFound.into());
        }
        Ok(())
    }

    pub fn put(&mut self, p: &PutRequest) -> Result<PutResponse, StoreError> {
        self.check_put(p)?;
        let prev = self.latest_live(&p.key)?;
        let (value, lease) = match &prev {
            Some((_, old)) => (
                if p.ignore_value {
                    old.value.clone()
                } else {
                    p.value.clone()
                },
                if p.ignore_lease { old.lease } else { p.lease },
            ),
            None => (p.value.clone(), p.lease),
        };
        let (create_revision, version) = match &prev {
            Some((_, old)) => (old.create_revision, old.version + 1),
            None => (self.begin + 1, 1),
        };
        let rec = Record {
            tombstone: false,
            create_revision,
            version,
            lease,
            value,
        };
        let prev_kv = prev.map(|(rev, old)| old.into_kv(p.key.clone(), rev));
        crate::metrics::put(p.key.len() + rec.value.len());
        self.write(&p.key, rec, prev_kv.clone());
        Ok(PutResponse {
            header: self.header(),
            prev_kv: if p.prev_kv { prev_kv } else { None },
        })
    }

    pub fn delete_range(
        &mut self,
        d: &DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, StoreError> {
        let live = self.live_in(&d.key, &d.range_end)?;
        crate::metrics::DELETES.inc();
        for kv in &live {
            self.write(&kv.key, Record::tombstone(), Some(kv.clone()));
        }
        Ok(DeleteRangeResponse {
            header: self.header(),
            deleted: live.len() as i64,
            prev_kvs: if d.prev_kv { live } else { Vec::new() },
        })
    }

    pub fn txn(&mut self, t: &TxnRequest) -> Result<TxnResponse, StoreError> {
        let path = self.compare_to_path(t)?;
        self.check_requests(t, &path)?;
        let mut path_iter = path.into_iter();
        let done = self.execute(t, &mut path_iter)?;
        crate::metrics::txn_done(&done);
        Ok(done)
    }

    /// Every compare of the txn and of the nested txns it will run,
    /// evaluated against the state before the txn (as etcd does).
    fn compare_to_path(&self, t: &TxnRequest) -> Result<Vec<bool>, StoreError> {
        let mut ok = true;
        for c in &t.compare {
            if !self.compare(c)? {
                ok = false;
                break;
            }
        }
        let mut path = vec![ok];
        for op in if ok { &t.success } else { &t.failure } {
            if let Some(Request::RequestTxn(nested)) = &op.request {
                path.extend(self.compare_to_path(nested)?);
            }
        }
        Ok(path)
    }

    fn compare(&self, c: &Compare) -> Result<bool, StoreError> {
        crate::metrics::RANGES.inc(); // etcd's compare is a range
        let kvs = self.live_in(&c.key, &c.range_end)?;
        if kvs.is_empty() {
            // A missing key has no value to compare; other targets compare zero.
            return Ok(
                c.target != CompareTarget::Value as i32 && compare_kv(c, &KeyValue::default())
            );
        }
        Ok(kvs.iter().all(|kv| compare_kv(c, kv)))
    }

    /// etcd's checkRequests: puts and ranges on the chosen path must be
    /// able to succeed before anything is written.
    fn check_requests(&self, t: &TxnRequest, path: &[bool]) -> Result<usize, StoreError> {
        let Some((&ok, mut rest)) = path.split_first() else {
            return Ok(0);
        };
        let mut used = 0;
        for op in if ok { &t.success } else { &t.failure } {
            match &op.request {
                Some(Request::RequestTxn(nested)) => {
                    let n = self.check_requests(nested, rest)?;
                    rest = &rest[n + 1..];
                    used += n + 1;
                }
                Some(Request::RequestPut(p)) => self.check_put(p)?,
                Some(Request::RequestRange(r)) => {
                    self.bounds().resolve(r.revision)?;
                }
                _ => {}
            }
        }
        Ok(used)
    }

    fn execute(
        &mut self,
        t: &TxnRequest,
        path: &mut impl Iterator<Item = bool>,
    ) -> Result<TxnResponse, StoreError> {
        let ok = path.next().unwrap_or(false);
        let ops: &[RequestOp] = if ok { &t.success } else { &t.failure };
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let response = match &op.request {
                Some(Request::RequestRange(r)) => Some(Response::ResponseRange(
                    read::range_request(&*self.tx, self.ks.index.as_ref(), r, self.bounds())?,
                )),
                Some(Request::RequestPut(p)) => Some(Response::ResponsePut(self.put(p)?)),
                Some(Request::RequestDeleteRange(d)) => {
                    Some(Response::ResponseDeleteRange(self.delete_range(d)?))
                }
                Some(Request::RequestTxn(nested)) => {
                    let mut inner = self.execute(nested, path)?;
                    // etcd leaves nested txn responses with an empty header.
                    inner.header = Some(ResponseHeader::default());
                    Some(Response::ResponseTxn(inner))
                }
                None => None,
            };
            responses.push(ResponseOp { response });
        }
        Ok(TxnResponse {
            header: self.header(),
            succeeded: ok,
            responses,
        })
    }
}

fn compare_kv(c: &Compare, kv: &KeyValue) -> bool {
    use std::cmp::Ordering;
    let target = CompareTarget::try_from(c.target);
    let ord: Ordering = match (target, &c.target_union) {
        (Ok(CompareTarget::Value), Some(TargetUnion::Value(v))) => {
            kv.value.as_slice().cmp(v.as_slice())
        }
        (Ok(CompareTarget::Value), _) => kv.value.as_slice().cmp(&[][..]),
        (Ok(CompareTarget::Create), u) => kv.create_revision.cmp(&match u {
            Some(TargetUnion::CreateRevision(r)) => *r,
            _ => 0,
        }),
        (Ok(CompareTarget::Mod), u) => kv.mod_revision.cmp(&match u {
            Some(TargetUnion::ModRevision(r)) => *r,
            _ => 0,
        }),
        (Ok(CompareTarget::Version), u) => kv.version.cmp(&match u {
            Some(TargetUnion::Version(r)) => *r,
            _ => 0,
        }),
        (Ok(CompareTarget::Lease), u) => kv.lease.cmp(&match u {
            Some(TargetUnion::Lease(r)) => *r,
            _ => 0,
        }),
        (Err(_), _) => return true,
    };
    match CompareResult::try_from(c.result) {
        Ok(CompareResult::Equal) => ord == Ordering::Equal,
        Ok(CompareResult::NotEqual) => ord != Ordering::Equal,
        Ok(CompareResult::Greater) => ord == Ordering::Greater,
        Ok(CompareResult::Less) => ord == Ordering::Less,
        Err(_) => true,
    }
}

/// The logical part of etcd's Compact: validate and record the revision;
/// the compactor removes the old revisions in the background.
pub fn compaction(
    revs: &mut RevState,
    c: &CompactionRequest,
) -> Result<CompactionResponse, StoreError> {
    if c.revision <= revs.compacted {
        return Err(EtcdError::Compacted.into());
    }
    if c.revision > revs.current {
        return Err(EtcdError::FutureRev.into());
    }
    revs.compacted = c.revision;
    Ok(CompactionResponse {
        header: Some(ResponseHeader {
            revision: revs.current,
            ..Default::default()
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmp(target: CompareTarget, result: CompareResult, u: TargetUnion) -> Compare {
        Compare {
            result: result as i32,
            target: target as i32,
            key: b"k".to_vec(),
            target_union: Some(u),
            range_end: vec![],
        }
    }

    #[test]
    fn compares_follow_etcd() {
        let kv = KeyValue {
            key: b"k".to_vec(),
            create_revision: 2,
            mod_revision: 5,
            version: 3,
            value: b"v".to_vec(),
            lease: 0,
        };
        assert!(compare_kv(
            &cmp(
                CompareTarget::Version,
                CompareResult::Equal,
                TargetUnion::Version(3)
            ),
            &kv
        ));
        assert!(compare_kv(
            &cmp(
                CompareTarget::Mod,
                CompareResult::Greater,
                TargetUnion::ModRevision(4)
            ),
            &kv
        ));
        assert!(compare_kv(
            &cmp(
                CompareTarget::Create,
                CompareResult::Less,
                TargetUnion::CreateRevision(3)
            ),
            &kv
        ));
        assert!(compare_kv(
            &cmp(
                CompareTarget::Value,
                CompareResult::NotEqual,
                TargetUnion::Value(b"w".to_vec())
            ),
            &kv
        ));
        assert!(compare_kv(
            &cmp(
                CompareTarget::Lease,
                CompareResult::Equal,
                TargetUnion::Lease(0)
            ),
            &kv
        ));
        // A mismatched union member compares against zero.
        assert!(compare_kv(
            &cmp(
                CompareTarget::Version,
                CompareResult::Greater,
                TargetUnion::ModRevision(9)
            ),
            &kv
        ));
    }

    #[test]
    fn compaction_bounds() {
        let mut r = RevState {
            current: 10,
            compacted: 3,
        };
        assert!(matches!(
            compaction(
                &mut r,
                &CompactionRequest {
                    revision: 3,
                    physical: false
                }
            ),
            Err(StoreError::Etcd(EtcdError::Compacted))
        ));
        assert!(matches!(
            compaction(
                &mut r,
                &CompactionRequest {
                    revision: 11,
                    physical: false
                }
            ),
            Err(StoreError::Etcd(EtcdError::FutureRev))
        ));
        assert!(compaction(
            &mut r,
            &CompactionRequest {
                revision: 10,
                physical: false
            }
        )
        .is_ok());
        assert_eq!(r.compacted, 10);
    }
}
