//! The one binary encoding raftd uses for openraft's types, on disk (log
//! entries, vote) and on the wire to peers: postcard over serde.

use std::io;

pub fn encode<T: serde::Serialize>(v: &T) -> io::Result<Vec<u8>> {
    postcard::to_stdvec(v).map_err(|e| io::Error::other(e.to_string()))
}

pub fn decode<T: serde::de::DeserializeOwned>(b: &[u8]) -> io::Result<T> {
    postcard::from_bytes(b).map_err(|e| io::Error::other(e.to_string()))
}
