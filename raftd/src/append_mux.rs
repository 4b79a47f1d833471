//! Single append requests on one long-lived StreamAppend call per target.
//!
//! openraft sends each heartbeat as a one-item append stream, and every
//! linearizable read on the leader waits for a heartbeat round: opening a
//! new HTTP/2 stream per heartbeat (headers, a server task, trailers) was
//! most of raftd's CPU per read. Here such requests travel as messages on
//! one open call; the peer answers the requests of a stream in order, so
//! replies are matched first in, first out.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::Channel;
use tonic::Status;

use common::proto::peer::raft_peer_client::RaftPeerClient;
use common::proto::peer::RaftMessage;

/// More unanswered requests than this: the peer stopped answering on this
/// call (its callers have timed out); start a new one.
const MAX_UNANSWERED: usize = 32;

type Reply = oneshot::Sender<Result<RaftMessage, Status>>;

#[derive(Default)]
struct Waiting {
    /// The call ended: nothing more will be answered on it.
    ended: bool,
    replies: VecDeque<Reply>,
}

struct Open {
    tx: mpsc::UnboundedSender<RaftMessage>,
    waiting: Arc<Mutex<Waiting>>,
}

/// The long-lived call to one target, opened on first use and again after
/// it ends.
#[derive(Default)]
pub struct AppendMux {
    open: Option<Open>,
}

impl AppendMux {
    /// Send one append request and wait for its reply.
    pub async fn call(
        &mut self,
        client: &mut RaftPeerClient<Channel>,
        msg: RaftMessage,
    ) -> Result<RaftMessage, Status> {
        let (reply, answer) = oneshot::channel();
        let mut queued = self.queue(msg, reply);
        if let Err((msg, reply)) = queued {
            self.open = Some(open(client).await?);
            queued = self.queue(msg, reply);
        }
        if queued.is_err() {
            return Err(Status::unavailable("append stream closed"));
        }
        answer
            .await
            .unwrap_or_else(|_| Err(Status::unavailable("append stream closed")))
    }

    /// Queue `msg` on the open call; gives it back if there is none usable.
    fn queue(&self, msg: RaftMessage, reply: Reply) -> Result<(), (RaftMessage, Reply)> {
        let Some(open) = &self.open else {
            return Err((msg, reply));
        };
        let Ok(mut waiting) = open.waiting.lock() else {
            return Err((msg, reply));
        };
        if waiting.ended || waiting.replies.len() >= MAX_UNANSWERED {
            return Err((msg, reply));
        }
        match open.tx.send(msg) {
            Ok(()) => {
                waiting.replies.push_back(reply);
                Ok(())
            }
            Err(mpsc::error::SendError(msg)) => Err((msg, reply)),
        }
    }
}

/// Open a StreamAppend call whose replies are handed to the waiting
/// requests in order; when it ends, those still waiting fail.
async fn open(client: &mut RaftPeerClient<Channel>) -> Result<Open, Status> {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut replies = client
        .stream_append(crate::peer_auth::request(UnboundedReceiverStream::new(rx)))
        .await?
        .into_inner();
    let waiting = Arc::new(Mutex::new(Waiting::default()));
    let shared = waiting.clone();
    tokio::spawn(async move {
        let end = loop {
            match replies.message().await {
                Ok(Some(m)) => {
                    let reply = shared.lock().ok().and_then(|mut w| w.replies.pop_front());
                    if let Some(r) = reply {
                        let _ = r.send(Ok(m));
                    }
                }
                Ok(None) => break Status::unavailable("append stream ended"),
                Err(s) => break s,
            }
        };
        if let Ok(mut w) = shared.lock() {
            w.ended = true;
            for r in w.replies.drain(..) {
                let _ = r.send(Err(Status::new(end.code(), end.message())));
            }
        }
    });
    Ok(Open { tx, waiting })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use common::proto::etcdserverpb::{HashKvRequest, HashKvResponse};
    use common::proto::peer::raft_peer_server::{RaftPeer, RaftPeerServer};
    use common::proto::peer::{ClusterRequest, ClusterResponse, SnapshotChunk};
    use tokio_stream::wrappers::ReceiverStream;
    use tokio_stream::StreamExt;
    use tonic::{Request, Response, Streaming};

    /// A peer whose StreamAppend echoes each message, and ends the call
    /// right after answering a message whose body is "end" (as openraft
    /// ends it after an error result).
    #[derive(Default)]
    struct Echo {
        opened: Arc<AtomicUsize>,
    }

    type Unary = Result<Response<RaftMessage>, Status>;

    #[tonic::async_trait]
    impl RaftPeer for Echo {
        async fn append_entries(&self, _: Request<RaftMessage>) -> Unary {
            Err(Status::unimplemented("test"))
        }
        type StreamAppendStream = ReceiverStream<Result<RaftMessage, Status>>;
        async fn stream_append(
            &self,
            req: Request<Streaming<RaftMessage>>,
        ) -> Result<Response<Self::StreamAppendStream>, Status> {
            self.opened.fetch_add(1, Ordering::SeqCst);
            let mut input = req.into_inner();
            let (tx, rx) = mpsc::channel(8);
            tokio::spawn(async move {
                while let Some(Ok(m)) = input.next().await {
                    let end = m.body.as_ref() == b"end";
                    if tx.send(Ok(m)).await.is_err() || end {
                        break;
                    }
                }
            });
            Ok(Response::new(ReceiverStream::new(rx)))
        }
        async fn vote(&self, _: Request<RaftMessage>) -> Unary {
            Err(Status::unimplemented("test"))
        }
        async fn pre_vote(&self, _: Request<RaftMessage>) -> Unary {
            Err(Status::unimplemented("test"))
        }
        async fn transfer_leader(&self, _: Request<RaftMessage>) -> Unary {
            Err(Status::unimplemented("test"))
        }
        async fn install_snapshot(&self, _: Request<Streaming<SnapshotChunk>>) -> Unary {
            Err(Status::unimplemented("test"))
        }
        async fn hash_kv(
            &self,
            _: Request<HashKvRequest>,
        ) -> Result<Response<HashKvResponse>, Status> {
            Err(Status::unimplemented("test"))
        }
        async fn cluster(
            &self,
            _: Request<ClusterRequest>,
        ) -> Result<Response<ClusterResponse>, Status> {
            Err(Status::unimplemented("test"))
        }
    }

    fn msg(body: &[u8]) -> RaftMessage {
        RaftMessage {
            cluster_id: 1,
            from: 2,
            body: body.to_vec().into(),
        }
    }

    #[tokio::test]
    async fn single_requests_share_one_call_and_survive_its_end() {
        let dir = std::env::temp_dir().join(format!("append-mux-{}", std::process::id()));
        let path = dir.join("peer.sock");
        let listener = common::uds::bind(&path, false).expect("bind");
        let opened = Arc::new(AtomicUsize::new(0));
        let echo = Echo {
            opened: opened.clone(),
        };
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(RaftPeerServer::new(echo))
                .serve_with_incoming(common::uds::incoming(listener)),
        );
        let mut client = RaftPeerClient::new(common::uds::channel(&path));
        let mut mux = AppendMux::default();

        // Answers come back to the request that asked, in order, on one call.
        for body in [&b"1"[..], b"2", b"3"] {
            let reply = mux.call(&mut client, msg(body)).await.expect("reply");
            assert_eq!(reply.body, body);
        }
        assert_eq!(opened.load(Ordering::SeqCst), 1);

        // The peer ends the call after answering: the next request opens
        // another one and is answered there.
        let reply = mux.call(&mut client, msg(b"end")).await.expect("reply");
        assert_eq!(reply.body.as_ref(), b"end");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let reply = mux.call(&mut client, msg(b"4")).await.expect("reply");
        assert_eq!(reply.body.as_ref(), b"4");
        assert_eq!(opened.load(Ordering::SeqCst), 2);
        let _ = std::fs::remove_dir_all(dir);
    }
}
