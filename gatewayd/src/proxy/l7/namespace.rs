//! Key namespacing for the L7 proxy (etcd grpc-proxy's `--namespace`):
//! every key a client sends gets the prefix, every key the cluster sends
//! back loses it, so clients of the proxy see a keyspace of their own.

use common::errors::EtcdError;
use common::keys::prefix_end;
use common::proto::etcdserverpb::request_op::Request as Op;
use common::proto::etcdserverpb::response_op::Response as OpResp;
use common::proto::etcdserverpb::*;
use common::proto::mvccpb::KeyValue;
use tonic::Status;

#[derive(Clone, Default)]
pub struct Namespace {
    prefix: Vec<u8>,
}

impl Namespace {
    pub fn new(prefix: &str) -> Namespace {
        Namespace {
            prefix: prefix.as_bytes().to_vec(),
        }
    }

    fn active(&self) -> bool {
        !self.prefix.is_empty()
    }

    /// etcd's prefixInterval: `key` and `range_end` moved under the prefix;
    /// the from-key end ("\0") becomes the end of the prefix's own range.
    pub fn interval(&self, key: &mut Vec<u8>, range_end: &mut Vec<u8>) -> Result<(), Status> {
        if !self.active() {
            return Ok(());
        }
        // Without a namespace the member refuses an empty key; with one,
        // prefixing would hide that, so refuse here as etcd's client does.
        if key.is_empty() && range_end.is_empty() {
            return Err(EtcdError::EmptyKey.into());
        }
        key.splice(0..0, self.prefix.iter().copied());
        if range_end.as_slice() == [0] {
            *range_end = prefix_end(&self.prefix);
        } else if !range_end.is_empty() {
            range_end.splice(0..0, self.prefix.iter().copied());
        }
        Ok(())
    }

    /// A key the cluster sent, as the client knows it.
    pub fn strip(&self, key: &mut Vec<u8>) {
        if self.active() && key.starts_with(&self.prefix) {
            key.drain(..self.prefix.len());
        }
    }

    /// Whether a key the cluster sent lies in the namespace.
    pub fn contains(&self, key: &[u8]) -> bool {
        key.starts_with(&self.prefix)
    }

    pub fn strip_kvs(&self, kvs: &mut [KeyValue]) {
        for kv in kvs {
            self.strip(&mut kv.key);
        }
    }

    pub fn range(&self, r: &mut RangeRequest) -> Result<(), Status> {
        self.interval(&mut r.key, &mut r.range_end)
    }

    pub fn put(&self, r: &mut PutRequest) -> Result<(), Status> {
        if self.active() && r.key.is_empty() {
            return Err(EtcdError::EmptyKey.into());
        }
        self.interval(&mut r.key, &mut Vec::new())
    }

    pub fn delete(&self, r: &mut DeleteRangeRequest) -> Result<(), Status> {
        self.interval(&mut r.key, &mut r.range_end)
    }

    pub fn txn(&self, t: &mut TxnRequest) -> Result<(), Status> {
        for c in &mut t.compare {
            self.interval(&mut c.key, &mut c.range_end)?;
        }
        for op in t.success.iter_mut().chain(t.failure.iter_mut()) {
            match &mut op.request {
                Some(Op::RequestRange(r)) => self.range(r)?,
                Some(Op::RequestPut(r)) => self.put(r)?,
                Some(Op::RequestDeleteRange(r)) => self.delete(r)?,
                Some(Op::RequestTxn(t)) => self.txn(t)?,
                None => {}
            }
        }
        Ok(())
    }

    pub fn txn_response(&self, t: &mut TxnResponse) {
        for op in &mut t.responses {
            match &mut op.response {
                Some(OpResp::ResponseRange(r)) => self.strip_kvs(&mut r.kvs),
                Some(OpResp::ResponsePut(r)) => {
                    if let Some(kv) = &mut r.prev_kv {
                        self.strip(&mut kv.key);
                    }
                }
                Some(OpResp::ResponseDeleteRange(r)) => self.strip_kvs(&mut r.prev_kvs),
                Some(OpResp::ResponseTxn(t)) => self.txn_response(t),
                None => {}
            }
        }
    }

    pub fn events(&self, events: &mut [common::proto::mvccpb::Event]) {
        for e in events {
            if let Some(kv) = &mut e.kv {
                self.strip(&mut kv.key);
            }
            if let Some(kv) = &mut e.prev_kv {
                self.strip(&mut kv.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interval(ns: &str, key: &[u8], end: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let (mut k, mut e) = (key.to_vec(), end.to_vec());
        Namespace::new(ns).interval(&mut k, &mut e).unwrap();
        (k, e)
    }

    #[test]
    fn intervals_move_under_the_prefix() {
        assert_eq!(interval("/n/", b"a", b""), (b"/n/a".to_vec(), vec![]));
        assert_eq!(
            interval("/n/", b"a", b"b"),
            (b"/n/a".to_vec(), b"/n/b".to_vec())
        );
        // from-key and "all keys" stay inside the namespace
        assert_eq!(
            interval("/n/", b"a", b"\0"),
            (b"/n/a".to_vec(), b"/n0".to_vec())
        );
        assert_eq!(
            interval("/n/", b"", b"\0"),
            (b"/n/".to_vec(), b"/n0".to_vec())
        );
        // no namespace: untouched
        assert_eq!(interval("", b"a", b"\0"), (b"a".to_vec(), vec![0]));
    }

    #[test]
    fn empty_key_refused_and_keys_stripped() {
        let ns = Namespace::new("/n/");
        let err = ns.interval(&mut vec![], &mut vec![]).unwrap_err();
        assert_eq!(err.message(), "etcdserver: key is not provided");
        let mut k = b"/n/x".to_vec();
        ns.strip(&mut k);
        assert_eq!(k, b"x");
        assert!(!ns.contains(b"/m/x"));
    }
}
