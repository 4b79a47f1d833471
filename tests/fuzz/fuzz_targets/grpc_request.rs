//! gRPC request decoding and etcd's request checks: any bytes, decoded as
//! the request type the first byte picks, must give a value or an error,
//! never a panic; decoded requests go through gatewayd's validation (and
//! the L7 proxy's namespacing) the way a client's would.
#![no_main]

use common::proto::etcdserverpb::*;
use gatewayd::proxy::l7::namespace::Namespace;
use common::validate;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Some((which, body)) = data.split_first() else {
        return;
    };
    let ns = Namespace::new("/fuzz/");
    match which % 6 {
        0 => {
            if let Ok(mut r) = RangeRequest::decode(body) {
                let _ = validate::check_range(&r);
                let _ = ns.range(&mut r);
            }
        }
        1 => {
            if let Ok(mut p) = PutRequest::decode(body) {
                let _ = validate::check_put(&p);
                let _ = ns.put(&mut p);
            }
        }
        2 => {
            if let Ok(mut d) = DeleteRangeRequest::decode(body) {
                let _ = validate::check_delete(&d);
                let _ = ns.delete(&mut d);
            }
        }
        3 => {
            if let Ok(mut t) = common::nested_txn::txn_request(body) {
                let _ = validate::check_txn(&t, 128);
                let _ = ns.txn(&mut t);
            }
        }
        4 => {
            let _ = WatchRequest::decode(body);
        }
        _ => {
            let _ = LeaseGrantRequest::decode(body);
            let _ = AuthRoleGrantPermissionRequest::decode(body);
        }
    }
});
