//! Where a member's client work runs: here when this raftd leads, else on
//! the leader's raftd, reached over its peer URL (raftd serves RaftLocal
//! there too). A forwarded call is marked so the receiver never forwards it
//! again; while there is no leader the caller waits a bounded time for one,
//! so an election is invisible beyond a short delay.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use tonic::transport::Channel;
use tonic::{Request, Status};

use crate::network::peer_channel;
use crate::types::{NodeId, Raft};
use common::call_stream::{CallStream, Opener};
use common::errors::EtcdError;
use common::proto::raft::raft_local_client::RaftLocalClient;
use common::proto::raft::{ProposeBatchRequest, ProposeBatchResponse};
use common::read_index_link::ReadIndexLink;

/// The way to one member's raftd when it leads: its RaftLocal client and
/// the long-lived streams forwarded proposals and read indexes ride.
pub struct LeaderLink {
    pub client: RaftLocalClient<Channel>,
    pub proposals: CallStream<ProposeBatchRequest, ProposeBatchResponse>,
    pub read_indexes: ReadIndexLink,
}

impl LeaderLink {
    fn new(client: RaftLocalClient<Channel>) -> Self {
        let to = client.clone();
        let opener: Opener<_, _> = Box::new(move |batches| {
            let mut to = to.clone();
            Box::pin(async move { Ok(to.propose(forwarded(batches)).await?.into_inner()) })
        });
        LeaderLink {
            // A batch lost with its stream may have been committed.
            proposals: CallStream::new(opener, || EtcdError::Timeout.into()),
            read_indexes: ReadIndexLink::new(client.clone(), true),
            client,
        }
    }
}

/// A member's link, with the peer URLs it was made for.
type LeaderClient = (Vec<String>, Arc<LeaderLink>);

pub enum Route {
    Here,
    Leader(Arc<LeaderLink>),
}

pub struct Router {
    raft: Raft,
    id: NodeId,
    /// How long to wait for a leader to be elected before "no leader".
    leader_wait: Duration,
    clients: Mutex<HashMap<NodeId, LeaderClient>>,
}

pub use common::proto::is_forwarded;

/// A request to forward to the leader, marked as forwarded.
pub fn forwarded<T>(msg: T) -> Request<T> {
    let mut req = Request::new(msg);
    common::proto::mark_forwarded(&mut req);
    req
}

impl Router {
    pub fn new(raft: Raft, id: NodeId, leader_wait: Duration) -> Self {
        Router {
            raft,
            id,
            leader_wait,
            clients: Mutex::new(HashMap::new()),
        }
    }

    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The leader, waiting up to `leader_wait` for one to be elected.
    pub async fn leader(&self) -> Result<NodeId, Status> {
        if let Some(l) = self.raft.metrics().borrow_watched().current_leader {
            return Ok(l);
        }
        let m = self
            .raft
            .wait(Some(self.leader_wait))
            .metrics(|m| m.current_leader.is_some(), "a leader")
            .await
            .map_err(|_| Status::from(EtcdError::NoLeader))?;
        m.current_leader.ok_or_else(|| EtcdError::NoLeader.into())
    }

    /// Where to run a request; a forwarded one must run here.
    pub async fn route(&self, forwarded: bool) -> Result<Route, Status> {
        let leader = self.leader().await?;
        if leader == self.id {
            return Ok(Route::Here);
        }
        if forwarded {
            return Err(EtcdError::NotLeader.into());
        }
        self.client(leader).map(Route::Leader)
    }

    fn client(&self, id: NodeId) -> Result<Arc<LeaderLink>, Status> {
        // Look the node up in place: a clone of the whole metrics (maps
        // of replication progress and two memberships) per forwarded call
        // is not needed for one node's URLs.
        let urls = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow_watched();
            m.membership_config
                .membership()
                .get_node(&id)
                .map(|n| n.peer_urls.clone())
                .ok_or_else(|| Status::from(EtcdError::NoLeader))?
        };
        let mut clients = self
            .clients
            .lock()
            .map_err(|_| Status::internal("router lock poisoned"))?;
        if let Some((u, c)) = clients.get(&id) {
            if *u == urls {
                return Ok(c.clone());
            }
        }
        let channel = peer_channel(&urls).map_err(Status::unavailable)?;
        let client = RaftLocalClient::new(channel).max_decoding_message_size(usize::MAX);
        let link = Arc::new(LeaderLink::new(client));
        clients.insert(id, (urls, link.clone()));
        Ok(link)
    }

    /// Wait until this member has applied `index` (after a forwarded write
    /// or read index, so the local storaged answers what the leader did).
    pub async fn wait_applied(&self, index: u64) -> Result<(), Status> {
        self.raft
            .wait(None)
            .applied_index_at_least(Some(index), "forwarded request")
            .await
            .map(|_| ())
            .map_err(|_| EtcdError::Stopped.into())
    }
}
