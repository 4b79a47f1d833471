//! The request objects of a JSON gateway call, decoded from the HTTP body
//! as they arrive (grpc-gateway's decoder on the request body): a
//! streaming call's client sends each request when it likes, on a body it
//! keeps open, and the body's end is its close-send.

use std::pin::Pin;

use axum::body::{Body, BodyDataStream};
use futures::{Stream, StreamExt};
use serde::de::DeserializeOwned;
use tonic::Status;

/// The largest request object accepted (axum's default body limit, which
/// bounds the unary calls' bodies too).
pub const MAX_OBJECT_BYTES: usize = 2 << 20;

/// Reads one JSON object after another from a request body.
pub struct ObjectReader {
    body: BodyDataStream,
    /// Received bytes not yet decoded.
    buf: Vec<u8>,
    /// Whether `buf` may hold a complete object not tried yet: an object
    /// ends with `}`, so bytes without one cannot complete it.
    untried: bool,
    ended: bool,
}

impl ObjectReader {
    pub fn new(body: Body) -> ObjectReader {
        ObjectReader {
            body: body.into_data_stream(),
            buf: Vec::new(),
            untried: false,
            ended: false,
        }
    }

    /// The next object; None once the body ended (whitespace between and
    /// after objects is skipped). A malformed or oversized object is
    /// InvalidArgument.
    pub async fn next<T: DeserializeOwned>(&mut self) -> Result<Option<T>, Status> {
        loop {
            let start = self
                .buf
                .iter()
                .position(|b| !b.is_ascii_whitespace())
                .unwrap_or(self.buf.len());
            self.buf.drain(..start);
            // What is not an object fails at once.
            let object = self.buf.first() == Some(&b'{');
            if !self.buf.is_empty() && (self.untried || self.ended || !object) {
                self.untried = false;
                let mut objects = serde_json::Deserializer::from_slice(&self.buf).into_iter::<T>();
                match objects.next() {
                    Some(Ok(object)) => {
                        let used = objects.byte_offset();
                        self.buf.drain(..used);
                        self.untried = true;
                        return Ok(Some(object));
                    }
                    // Incomplete: wait for more of it.
                    Some(Err(e)) if e.is_eof() && !self.ended => {}
                    Some(Err(e)) => return Err(Status::invalid_argument(e.to_string())),
                    None => {}
                }
            }
            if self.ended {
                return Ok(None);
            }
            if self.buf.len() > MAX_OBJECT_BYTES {
                return Err(Status::invalid_argument(format!(
                    "request object larger than {MAX_OBJECT_BYTES} bytes"
                )));
            }
            match self.body.next().await {
                Some(Ok(bytes)) => {
                    self.untried |= bytes.contains(&b'}');
                    self.buf.extend_from_slice(&bytes);
                }
                // A body that fails (the client went away) has ended.
                Some(Err(_)) | None => self.ended = true,
            }
        }
    }

    /// The remaining objects as a stream that ends with the body, or at
    /// the first malformed object (grpc-gateway then closes the send side
    /// and the call goes on).
    pub fn into_stream<T>(self) -> Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>
    where
        T: DeserializeOwned + Send + 'static,
    {
        futures::stream::unfold(self, |mut reader| async move {
            match reader.next::<T>().await {
                Ok(Some(object)) => Some((Ok(object), reader)),
                Ok(None) | Err(_) => None,
            }
        })
        .boxed()
    }
}

/// The first object of `body` (unary calls): an empty body is the empty
/// message, and what follows the first object is not read, as
/// grpc-gateway decodes one value.
pub fn first_object<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, Status> {
    match serde_json::Deserializer::from_slice(body)
        .into_iter::<T>()
        .next()
    {
        None => Ok(T::default()),
        Some(Ok(object)) => Ok(object),
        Some(Err(e)) => Err(Status::invalid_argument(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Default, Debug, PartialEq)]
    struct Obj {
        a: u32,
    }

    fn chunked(parts: &[&'static str]) -> Body {
        let chunks: Vec<Result<axum::body::Bytes, std::io::Error>> = parts
            .iter()
            .map(|p| Ok(axum::body::Bytes::from_static(p.as_bytes())))
            .collect();
        Body::from_stream(futures::stream::iter(chunks))
    }

    #[tokio::test]
    async fn objects_split_across_chunks() {
        let mut r = ObjectReader::new(chunked(&[" {\"a\"", ":1}{\"a\":", "2}\n", "\n{\"a\":3}  "]));
        for want in 1..=3 {
            assert_eq!(r.next::<Obj>().await.ok().flatten(), Some(Obj { a: want }));
        }
        assert_eq!(r.next::<Obj>().await.ok(), Some(None));
    }

    #[tokio::test]
    async fn malformed_and_truncated_objects_are_invalid() {
        let mut r = ObjectReader::new(chunked(&["{\"a\":1} x"]));
        assert!(r.next::<Obj>().await.is_ok());
        assert!(r.next::<Obj>().await.is_err());
        let mut r = ObjectReader::new(chunked(&["{\"a\":"]));
        assert!(r.next::<Obj>().await.is_err());
        // Not an object: refused before the body ends.
        let pending = futures::stream::pending::<Result<axum::body::Bytes, std::io::Error>>();
        let body =
            futures::stream::iter([Ok(axum::body::Bytes::from_static(b"12"))]).chain(pending);
        let mut r = ObjectReader::new(Body::from_stream(body));
        assert!(r.next::<Obj>().await.is_err());
    }

    #[test]
    fn unary_body_is_its_first_object() {
        assert_eq!(first_object::<Obj>(b"  ").ok(), Some(Obj::default()));
        assert_eq!(
            first_object::<Obj>(b"{\"a\":4} junk").ok(),
            Some(Obj { a: 4 })
        );
        assert!(first_object::<Obj>(b"junk").is_err());
    }
}
