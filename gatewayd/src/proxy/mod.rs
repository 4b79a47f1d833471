//! gatewayd without a member: an L4 (TCP pass-through) or L7 (gRPC) proxy
//! in front of a remote cluster, whose endpoints may come from DNS SRV.

pub mod l4;
pub mod l7;
pub mod srv;
