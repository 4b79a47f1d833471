//! The one binary encoding raftd uses for openraft's types, on disk (log
//! entries, vote) and on the wire to peers: postcard over serde.

use std::io;

/// Sized first, then written into a buffer of exactly that size: a large
/// entry (or a batch of them) written into a growing buffer was copied
/// again at every doubling, a sixth of a leader's CPU with 256 KiB values.
/// The sizing pass copies nothing.
pub fn encode<T: serde::Serialize>(v: &T) -> io::Result<Vec<u8>> {
    let other = |e: postcard::Error| io::Error::other(e.to_string());
    let size = postcard::experimental::serialized_size(v).map_err(other)?;
    postcard::to_extend(v, Vec::with_capacity(size)).map_err(other)
}

pub fn decode<T: serde::de::DeserializeOwned>(b: &[u8]) -> io::Result<T> {
    postcard::from_bytes(b).map_err(|e| io::Error::other(e.to_string()))
}
