//! The gRPC codec of every generated service and client: prost's, except
//! that transactions are decoded by `nested_txn`, so a txn nested as deep
//! as etcd accepts decodes, and one nested deeper is refused with etcd's
//! "too many operations" instead of an internal decode error.

use std::any::{Any, TypeId};
use std::marker::PhantomData;

use bytes::Buf;
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder};
use tonic::Status;
use tonic_prost::ProstEncoder;

use crate::errors::EtcdError;
use crate::nested_txn;
use crate::proto::etcdserverpb::{TxnRequest, TxnResponse};

#[derive(Debug, Clone)]
pub struct TriadCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for TriadCodec<T, U> {
    fn default() -> Self {
        TriadCodec(PhantomData)
    }
}

impl<T, U> Codec for TriadCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = TriadDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        TriadDecoder(PhantomData)
    }
}

#[derive(Debug, Clone)]
pub struct TriadDecoder<U>(PhantomData<U>);

impl<U: Message + Default + 'static> Decoder for TriadDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        let decoded: Result<Box<dyn Any>, nested_txn::NestedError> =
            if TypeId::of::<U>() == TypeId::of::<TxnRequest>() {
                let bytes = buf.copy_to_bytes(buf.remaining());
                nested_txn::txn_request(&bytes).map(|t| Box::new(t) as Box<dyn Any>)
            } else if TypeId::of::<U>() == TypeId::of::<TxnResponse>() {
                let bytes = buf.copy_to_bytes(buf.remaining());
                nested_txn::txn_response(&bytes).map(|t| Box::new(t) as Box<dyn Any>)
            } else {
                return U::decode(buf)
                    .map(Some)
                    .map_err(|e| decode_status(e.into()));
            };
        match decoded.map(|any| any.downcast::<U>()) {
            Ok(Ok(item)) => Ok(Some(*item)),
            Ok(Err(_)) => Err(Status::internal("codec: message type mismatch")),
            Err(e) => Err(decode_status(e)),
        }
    }
}

/// tonic's status for an undecodable message (Internal), or etcd's for a
/// transaction nested too deep.
fn decode_status(e: nested_txn::NestedError) -> Status {
    match e {
        nested_txn::NestedError::TooDeep => EtcdError::TooManyOps.into(),
        nested_txn::NestedError::Decode(e) => Status::internal(e.to_string()),
    }
}
