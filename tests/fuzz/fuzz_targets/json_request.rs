//! The JSON gateway's request parsing: any body, parsed as the request
//! type the first byte picks (etcd's JSON encoding: base64 bytes, int64 as
//! strings), must give a request or an error, never a panic; what parses
//! is checked as gRPC requests are.
#![no_main]

use common::proto::etcdserverpb::*;
use common::validate;
use gatewayd::api::json_gateway::decode_body;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((which, body)) = data.split_first() else {
        return;
    };
    match which % 5 {
        0 => {
            if let Ok(r) = decode_body::<RangeRequest>(body) {
                let _ = validate::check_range(&r);
            }
        }
        1 => {
            if let Ok(p) = decode_body::<PutRequest>(body) {
                let _ = validate::check_put(&p);
            }
        }
        2 => {
            if let Ok(t) = decode_body::<TxnRequest>(body) {
                let _ = validate::check_txn(&t, 128);
            }
        }
        3 => {
            let _ = decode_body::<WatchRequest>(body);
        }
        _ => {
            let _ = decode_body::<AuthUserAddRequest>(body);
            let _ = decode_body::<LeaseKeepAliveRequest>(body);
        }
    }
});
