//! Decoding of the messages that nest transactions (`TxnRequest`,
//! `TxnResponse`, and triad's `RaftRequest`/`RaftResult` that carry them)
//! to any depth etcd accepts. prost stops at 100 levels of messages, two
//! per transaction level, so a txn nested 50 deep could not be decoded
//! although etcd applies up to its ops budget (128 levels by default).
//! Here every transaction level is split off and decoded with its own
//! budget of prost recursion; the levels themselves are bounded by
//! `MAX_TXN_DEPTH`.

use prost::encoding::{decode_key, decode_varint, skip_field, DecodeContext, WireType};
use prost::{DecodeError, Message};

use crate::proto::etcdserverpb::request_op::Request;
use crate::proto::etcdserverpb::response_op::Response;
use crate::proto::etcdserverpb::{RequestOp, ResponseOp, TxnRequest, TxnResponse};
use crate::proto::storage::{raft_request, raft_result, RaftRequest, RaftResult};

/// Deepest transaction nesting decoded. etcd's own budget (`--max-txn-ops`
/// per level, one op spent per level) refuses deeper chains with the
/// default of 128; this bound keeps every recursive walk of a request
/// (checks, apply, encoding) far from the end of a thread's stack.
pub const MAX_TXN_DEPTH: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NestedError {
    /// Deeper than `MAX_TXN_DEPTH` (etcd answers such a request "too many
    /// operations").
    #[error("transaction nested too deep")]
    TooDeep,
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

pub fn txn_request(buf: &[u8]) -> Result<TxnRequest, NestedError> {
    txn_request_at(buf, 0)
}

pub fn txn_response(buf: &[u8]) -> Result<TxnResponse, NestedError> {
    txn_response_at(buf, 0)
}

pub fn raft_request(buf: &[u8]) -> Result<RaftRequest, NestedError> {
    if !has_field(buf, 3)? {
        return Ok(RaftRequest::decode(buf)?); // no transaction: as is
    }
    let parts = split(buf, &[3], &[1, 2, 3, 4, 5, 6, 7, 8, 9])?;
    let mut req = RaftRequest::decode(parts.plain.as_slice())?;
    if let Some(txn) = parts.winning_nested() {
        req.op = Some(raft_request::Op::Txn(txn_request_at(txn, 0)?));
    }
    Ok(req)
}

pub fn raft_result(buf: &[u8]) -> Result<RaftResult, NestedError> {
    if !has_field(buf, 3)? {
        return Ok(RaftResult::decode(buf)?);
    }
    let parts = split(buf, &[3], &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10])?;
    let mut res = RaftResult::decode(parts.plain.as_slice())?;
    if let Some(txn) = parts.winning_nested() {
        res.result = Some(raft_result::Result::Txn(txn_response_at(txn, 0)?));
    }
    Ok(res)
}

fn deeper(depth: usize) -> Result<usize, NestedError> {
    if depth >= MAX_TXN_DEPTH {
        return Err(NestedError::TooDeep);
    }
    Ok(depth + 1)
}

fn txn_request_at(buf: &[u8], depth: usize) -> Result<TxnRequest, NestedError> {
    let depth = deeper(depth)?;
    let parts = split(buf, &[2, 3], &[])?;
    let mut txn = TxnRequest::decode(parts.plain.as_slice())?;
    for (field, op) in parts.nested {
        let op = request_op(op, depth)?;
        if field == 2 {
            txn.success.push(op);
        } else {
            txn.failure.push(op);
        }
    }
    Ok(txn)
}

fn request_op(buf: &[u8], depth: usize) -> Result<RequestOp, NestedError> {
    if !has_field(buf, 4)? {
        return Ok(RequestOp::decode(buf)?); // a put's value is not copied
    }
    let parts = split(buf, &[4], &[1, 2, 3, 4])?;
    let mut op = RequestOp::decode(parts.plain.as_slice())?;
    if let Some(txn) = parts.winning_nested() {
        op.request = Some(Request::RequestTxn(txn_request_at(txn, depth)?));
    }
    Ok(op)
}

fn txn_response_at(buf: &[u8], depth: usize) -> Result<TxnResponse, NestedError> {
    let depth = deeper(depth)?;
    let parts = split(buf, &[3], &[])?;
    let mut txn = TxnResponse::decode(parts.plain.as_slice())?;
    for (_, op) in parts.nested {
        txn.responses.push(response_op(op, depth)?);
    }
    Ok(txn)
}

fn response_op(buf: &[u8], depth: usize) -> Result<ResponseOp, NestedError> {
    if !has_field(buf, 4)? {
        return Ok(ResponseOp::decode(buf)?);
    }
    let parts = split(buf, &[4], &[1, 2, 3, 4])?;
    let mut op = ResponseOp::decode(parts.plain.as_slice())?;
    if let Some(txn) = parts.winning_nested() {
        op.response = Some(Response::ResponseTxn(txn_response_at(txn, depth)?));
    }
    Ok(op)
}

/// Whether the message in `buf` has field `field` (a cheap walk over its
/// top-level fields, so messages without a transaction in them decode
/// from `buf` as they are, copying nothing).
fn has_field(buf: &[u8], field: u32) -> Result<bool, NestedError> {
    let mut rest = buf;
    while !rest.is_empty() {
        let (f, wire_type) = decode_key(&mut rest)?;
        if f == field {
            return Ok(true);
        }
        skip_field(wire_type, f, &mut rest, DecodeContext::default())?;
    }
    Ok(false)
}

/// A message's fields, split into the ones that nest a transaction and
/// the rest (re-assembled, for prost).
struct Parts<'a> {
    plain: Vec<u8>,
    nested: Vec<(u32, &'a [u8])>,
    /// Of the message's oneof fields, the last one seen nests a
    /// transaction (protobuf: the last member of a oneof on the wire wins).
    nested_wins: bool,
}

impl<'a> Parts<'a> {
    fn winning_nested(&self) -> Option<&'a [u8]> {
        if self.nested_wins {
            self.nested.last().map(|(_, b)| *b)
        } else {
            None
        }
    }
}

fn split<'a>(buf: &'a [u8], nested: &[u32], oneof: &[u32]) -> Result<Parts<'a>, NestedError> {
    let mut parts = Parts {
        plain: Vec::with_capacity(buf.len()),
        nested: Vec::new(),
        nested_wins: false,
    };
    let mut rest = buf;
    while !rest.is_empty() {
        let start = rest;
        let (field, wire_type) = decode_key(&mut rest)?;
        let value = rest;
        // Checks the field's length against what is left, for both kinds.
        skip_field(wire_type, field, &mut rest, DecodeContext::default())?;
        if wire_type == WireType::LengthDelimited && nested.contains(&field) {
            let mut body = &value[..value.len() - rest.len()];
            decode_varint(&mut body)?; // the length skip_field checked
            parts.nested.push((field, body));
            parts.nested_wins |= oneof.contains(&field);
            continue;
        }
        if oneof.contains(&field) {
            parts.nested_wins = false;
        }
        parts
            .plain
            .extend_from_slice(&start[..start.len() - rest.len()]);
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::etcdserverpb::{Compare, PutRequest, RangeRequest, ResponseHeader};

    fn nest_request(depth: usize) -> TxnRequest {
        let mut txn = TxnRequest {
            compare: vec![Compare {
                key: b"c".to_vec(),
                ..Default::default()
            }],
            success: vec![RequestOp {
                request: Some(Request::RequestPut(PutRequest {
                    key: b"k".to_vec(),
                    value: b"v".to_vec(),
                    ..Default::default()
                })),
            }],
            failure: vec![RequestOp {
                request: Some(Request::RequestRange(RangeRequest {
                    key: b"r".to_vec(),
                    ..Default::default()
                })),
            }],
        };
        for _ in 1..depth {
            txn = TxnRequest {
                compare: vec![],
                success: vec![
                    RequestOp {
                        request: Some(Request::RequestRange(RangeRequest {
                            key: b"first".to_vec(),
                            ..Default::default()
                        })),
                    },
                    RequestOp {
                        request: Some(Request::RequestTxn(txn)),
                    },
                ],
                failure: vec![],
            };
        }
        txn
    }

    fn nest_response(depth: usize) -> TxnResponse {
        let mut txn = TxnResponse {
            header: Some(ResponseHeader {
                revision: 7,
                ..Default::default()
            }),
            succeeded: true,
            responses: vec![],
        };
        for _ in 1..depth {
            txn = TxnResponse {
                header: None,
                succeeded: false,
                responses: vec![ResponseOp {
                    response: Some(Response::ResponseTxn(txn)),
                }],
            };
        }
        txn
    }

    #[test]
    fn deep_transactions_decode_as_encoded() {
        for depth in [1, 2, 49, 50, 51, 128, MAX_TXN_DEPTH] {
            let txn = nest_request(depth);
            let bytes = txn.encode_to_vec();
            assert_eq!(txn_request(&bytes).as_ref(), Ok(&txn), "depth {depth}");
            let req = RaftRequest {
                op: Some(raft_request::Op::Txn(txn)),
                auth: None,
                trace_parent: String::new(),
            };
            assert_eq!(raft_request(&req.encode_to_vec()), Ok(req));
            let resp = nest_response(depth);
            assert_eq!(txn_response(&resp.encode_to_vec()).as_ref(), Ok(&resp));
            let res = RaftResult {
                result: Some(raft_result::Result::Txn(resp)),
            };
            assert_eq!(raft_result(&res.encode_to_vec()), Ok(res));
        }
        // prost alone stops at about 50 levels.
        assert!(TxnRequest::decode(nest_request(60).encode_to_vec().as_slice()).is_err());
    }

    #[test]
    fn too_deep_is_its_own_error() {
        let bytes = nest_request(MAX_TXN_DEPTH + 1).encode_to_vec();
        assert_eq!(txn_request(&bytes), Err(NestedError::TooDeep));
        let bytes = nest_response(MAX_TXN_DEPTH + 1).encode_to_vec();
        assert_eq!(txn_response(&bytes), Err(NestedError::TooDeep));
    }

    #[test]
    fn other_messages_and_garbage_decode_as_prost_does() {
        let req = RaftRequest {
            op: Some(raft_request::Op::Put(PutRequest {
                key: b"k".to_vec(),
                ..Default::default()
            })),
            auth: None,
            trace_parent: String::new(),
        };
        assert_eq!(raft_request(&req.encode_to_vec()), Ok(req));
        for garbage in [&b"\xff"[..], b"\x1a\x05ab", b"\x0b", b"\x1a\x02\x12\xff"] {
            assert!(raft_request(garbage).is_err(), "{garbage:?}");
            assert!(txn_request(garbage).is_err() || TxnRequest::decode(garbage).is_ok());
        }
    }

    #[test]
    fn the_last_oneof_member_wins() {
        let put = RequestOp {
            request: Some(Request::RequestPut(PutRequest {
                key: b"p".to_vec(),
                ..Default::default()
            })),
        };
        let txn = RequestOp {
            request: Some(Request::RequestTxn(TxnRequest::default())),
        };
        let mut both = txn.encode_to_vec();
        both.extend(put.encode_to_vec());
        assert_eq!(request_op(&both, 0), Ok(put.clone()));
        let mut both = put.encode_to_vec();
        both.extend(txn.encode_to_vec());
        assert_eq!(request_op(&both, 0), Ok(txn));
    }
}
