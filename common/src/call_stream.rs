//! Calls carried as messages on one long-lived bidi stream and answered
//! by id: no HTTP/2 stream set-up per call (headers, a server task,
//! trailers) on the hottest paths — gatewayd's proposals, read indexes and
//! point reads, and a follower raftd's proposals and read indexes sent on
//! to the leader. The stream opens on first use and again
//! after it breaks. A call is never sent when the stream cannot be opened,
//! nor when the server ends the stream cleanly (a stopping daemon answers
//! what it read and reads no more): it fails with a status whose source is
//! `NotSent`, and may be sent again. A call sent on a stream that then
//! breaks fails with the status the owner chose.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use crate::proto::raft::{
    BatchFailure, ProposeBatchRequest, ProposeBatchResponse, ReadIndexRequest, ReadIndexResponse,
};
use crate::proto::storage::{CallFailure, ReadCall, ReadReply};

/// The source of a call's failure when the call was never sent.
#[derive(Debug)]
pub struct NotSent;

impl std::fmt::Display for NotSent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the call was not sent")
    }
}

impl std::error::Error for NotSent {}

/// `why`, marked as a call that was never sent.
fn unsent(why: &Status) -> Status {
    let mut s = Status::new(why.code(), why.message());
    s.set_source(Arc::new(NotSent));
    s
}

/// The call failed before it was sent: it may be sent again, whatever it is.
pub fn not_sent(s: &Status) -> bool {
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(s);
    while let Some(e) = src {
        if e.is::<NotSent>() {
            return true;
        }
        src = e.source();
    }
    false
}

/// A request that carries its call id.
pub trait Tagged {
    fn set_id(&mut self, id: u64);
}

/// A reply that names the call it answers, and may carry the call's
/// failure (a gRPC status) instead of an answer.
pub trait TaggedReply {
    fn id(&self) -> u64;
    fn take_failure(&mut self) -> Option<Status>;
}

/// Calls sent and not answered yet, until the stream ends.
struct Calls<Resp> {
    ended: bool,
    waiting: HashMap<u64, oneshot::Sender<Result<Resp, Status>>>,
}

type Waiting<Resp> = Arc<Mutex<Calls<Resp>>>;

/// Opens the bidi call given the stream of requests.
pub type Opener<Req, Resp> = Box<
    dyn Fn(ReceiverStream<Req>) -> BoxFuture<'static, Result<Streaming<Resp>, Status>>
        + Send
        + Sync,
>;

struct Open<Req, Resp> {
    tx: mpsc::Sender<Req>,
    waiting: Waiting<Resp>,
}

pub struct CallStream<Req, Resp> {
    opener: Opener<Req, Resp>,
    /// What a call gets when its stream breaks before it is answered.
    broken: fn() -> Status,
    open: tokio::sync::Mutex<Option<Arc<Open<Req, Resp>>>>,
    next_id: AtomicU64,
}

impl<Req, Resp> CallStream<Req, Resp>
where
    Req: Tagged + Send + 'static,
    Resp: TaggedReply + Send + 'static,
{
    pub fn new(opener: Opener<Req, Resp>, broken: fn() -> Status) -> Self {
        CallStream {
            opener,
            broken,
            open: tokio::sync::Mutex::new(None),
            next_id: AtomicU64::new(1),
        }
    }

    /// The open stream, opening one if needed.
    async fn stream(&self) -> Result<Arc<Open<Req, Resp>>, Status> {
        let mut slot = self.open.lock().await;
        let usable = |o: &&Arc<Open<Req, Resp>>| {
            !o.tx.is_closed() && o.waiting.lock().is_ok_and(|c| !c.ended)
        };
        if let Some(o) = slot.as_ref().filter(usable) {
            return Ok(o.clone());
        }
        let (tx, rx) = mpsc::channel(64);
        let mut answers = (self.opener)(ReceiverStream::new(rx)).await?;
        let waiting: Waiting<Resp> = Arc::new(Mutex::new(Calls {
            ended: false,
            waiting: HashMap::new(),
        }));
        let open = Arc::new(Open {
            tx,
            waiting: waiting.clone(),
        });
        let broken = self.broken;
        tokio::spawn(async move {
            let clean_end = loop {
                match answers.message().await {
                    Ok(Some(resp)) => {
                        let caller = waiting
                            .lock()
                            .ok()
                            .and_then(|mut c| c.waiting.remove(&resp.id()));
                        if let Some(c) = caller {
                            let _ = c.send(Ok(resp));
                        }
                    }
                    Ok(None) => break true,
                    Err(_) => break false,
                }
            };
            if let Ok(mut c) = waiting.lock() {
                c.ended = true;
                for (_, caller) in c.waiting.drain() {
                    // A server ends its stream cleanly only once it has
                    // answered every call it read: the rest were not.
                    let _ = caller.send(Err(if clean_end {
                        unsent(&Status::unavailable("call stream closed by the server"))
                    } else {
                        broken()
                    }));
                }
            }
        });
        *slot = Some(open.clone());
        Ok(open)
    }

    /// Send one call and wait for its answer; a failure the reply carries
    /// is returned as the error it was.
    pub async fn call(&self, req: Req) -> Result<Resp, Status> {
        let mut resp = self.answer(req).await?;
        match resp.take_failure() {
            Some(failure) => Err(failure),
            None => Ok(resp),
        }
    }

    async fn answer(&self, mut req: Req) -> Result<Resp, Status> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        req.set_id(id);
        loop {
            let open = self.stream().await.map_err(|s| unsent(&s))?;
            let (tx, rx) = oneshot::channel();
            let registered = match open.waiting.lock() {
                Ok(mut c) if !c.ended => {
                    c.waiting.insert(id, tx);
                    true
                }
                _ => false,
            };
            if !registered {
                // The stream ended since: the next turn opens another.
                continue;
            }
            match open.tx.send(req).await {
                Ok(()) => return rx.await.unwrap_or_else(|_| Err((self.broken)())),
                // Closed before it took the call: nothing was sent; open a
                // new stream and send it there.
                Err(mpsc::error::SendError(unsent)) => {
                    if let Ok(mut c) = open.waiting.lock() {
                        c.waiting.remove(&id);
                    }
                    req = unsent;
                }
            }
        }
    }
}

/// For calls that may simply be sent again (reads): a stream that broke
/// under them is a transport failure (a source attached), which callers
/// retry as they retry a lost connection.
pub fn broke_retryable() -> Status {
    let mut s = Status::unavailable("call stream ended");
    s.set_source(Arc::new(std::io::Error::from(
        std::io::ErrorKind::ConnectionReset,
    )));
    s
}

/// Requests and replies that carry an `id` field, the replies a `failure`.
macro_rules! tagged {
    ($($req:ty => $resp:ty),* $(,)?) => {$(
        impl Tagged for $req {
            fn set_id(&mut self, id: u64) {
                self.id = id;
            }
        }
        impl TaggedReply for $resp {
            fn id(&self) -> u64 {
                self.id
            }
            fn take_failure(&mut self) -> Option<Status> {
                let f = self.failure.take()?;
                Some(Status::new(tonic::Code::from_i32(f.code), f.message))
            }
        }
    )*};
}

tagged!(
    ProposeBatchRequest => ProposeBatchResponse,
    ReadIndexRequest => ReadIndexResponse,
    ReadCall => ReadReply,
);

/// A failed call as the `failure` its reply carries (the server side of
/// `TaggedReply::take_failure`).
macro_rules! failure_from_status {
    ($($failure:ty),*) => {$(
        impl From<&Status> for $failure {
            fn from(s: &Status) -> Self {
                Self {
                    code: s.code() as i32,
                    message: s.message().to_string(),
                }
            }
        }
    )*};
}

failure_from_status!(BatchFailure, CallFailure);
