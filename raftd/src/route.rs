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

use crate::peer_client::peer_channel;
use crate::types::NodeId;
use crate::Raft;
use common::call_stream::{CallStream, Opener};
use common::errors::EtcdError;
use common::proto::raft::raft_local_client::RaftLocalClient;
use common::proto::raft::{ProposeBatchRequest, ProposeBatchResponse};
use common::read_index_link::ReadIndexLink;

/// The way to one member's raftd when it leads: its RaftLocal client and
/// the long-lived streams forwarded proposals and read indexes ride.
pub struct LeaderLink {
    /// The member this link reaches.
    pub id: NodeId,
    pub client: RaftLocalClient<Channel>,
    pub proposals: CallStream<ProposeBatchRequest, ProposeBatchResponse>,
    pub read_indexes: ReadIndexLink,
}

impl LeaderLink {
    fn new(id: NodeId, client: RaftLocalClient<Channel>) -> Self {
        let to = client.clone();
        let opener: Opener<_, _> = Box::new(move |batches| {
            let mut to = to.clone();
            Box::pin(async move { Ok(to.propose(forwarded(batches)).await?.into_inner()) })
        });
        LeaderLink {
            // A batch lost with its stream may have been committed.
            proposals: CallStream::new(opener, || EtcdError::Timeout.into()),
            read_indexes: ReadIndexLink::new(client.clone(), true),
            id,
            client,
        }
    }
}

/// A member's link, with the peer URLs it was made for.
type UrlsAndLink<L> = (Vec<String>, Arc<L>);

/// One link per member, remade when the member's peer URLs change.
struct Links<L> {
    by_member: Mutex<HashMap<NodeId, UrlsAndLink<L>>>,
}

impl<L> Links<L> {
    fn new() -> Self {
        Links {
            by_member: Mutex::new(HashMap::new()),
        }
    }

    fn get_or_make(
        &self,
        id: NodeId,
        urls: Vec<String>,
        make: impl FnOnce(&[String]) -> Result<L, Status>,
    ) -> Result<Arc<L>, Status> {
        let mut links = self
            .by_member
            .lock()
            .map_err(|_| Status::internal("router lock poisoned"))?;
        if let Some((u, l)) = links.get(&id) {
            if *u == urls {
                return Ok(l.clone());
            }
        }
        let link = Arc::new(make(&urls)?);
        links.insert(id, (urls, link.clone()));
        Ok(link)
    }
}

/// Where a request runs given the leader: here (None) or on `leader`; a
/// request already forwarded once never travels again.
fn destination(leader: NodeId, me: NodeId, forwarded: bool) -> Result<Option<NodeId>, EtcdError> {
    if leader == me {
        Ok(None)
    } else if forwarded {
        Err(EtcdError::NotLeader)
    } else {
        Ok(Some(leader))
    }
}

/// How often a proposal or read is routed again when leadership moved
/// under it, and the pause before a read is (a leader is being elected).
pub const REROUTES: usize = 3;
pub const REROUTE_PAUSE: Duration = Duration::from_millis(100);

pub enum Route {
    Here,
    Leader(Arc<LeaderLink>),
}

pub struct Router {
    raft: Raft,
    id: NodeId,
    /// How long to wait for a leader to be elected before "no leader".
    leader_wait: Duration,
    links: Links<LeaderLink>,
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
            links: Links::new(),
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

    /// How long a call waits for a leader it can reach.
    pub fn leader_wait(&self) -> Duration {
        self.leader_wait
    }

    /// Wait until a member other than `was` leads, or `pause` has passed
    /// (`was` may lead again once restarted).
    pub async fn leader_moved_from(&self, was: NodeId, pause: Duration) {
        let _ = self
            .raft
            .wait(Some(pause))
            .metrics(
                |m| m.current_leader.is_some_and(|l| l != was),
                "another leader",
            )
            .await;
    }

    /// Where to run a request; a forwarded one must run here.
    pub async fn route(&self, forwarded: bool) -> Result<Route, Status> {
        match destination(self.leader().await?, self.id, forwarded)? {
            None => Ok(Route::Here),
            Some(leader) => self.client(leader).map(Route::Leader),
        }
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
        self.links.get_or_make(id, urls, |urls| {
            let channel = peer_channel(urls).map_err(Status::unavailable)?;
            let client = RaftLocalClient::new(channel).max_decoding_message_size(usize::MAX);
            Ok(LeaderLink::new(id, client))
        })
    }

    /// `call` on the leader `leader`, given up (None) once another member
    /// is known to lead. A frozen leader (SIGSTOP, a hung host) keeps its
    /// TCP connections open, so a call waiting on it would hang until the
    /// HTTP/2 keep-alive fails, 5 to 10 s later; measured, that held
    /// gatewayd's in-flight batches, and so every new write through this
    /// member, for 3 s after a new leader was elected. A call given up on
    /// may still have reached the old leader: its caller answers as for a
    /// call lost in flight.
    pub async fn while_leading<T>(
        &self,
        leader: NodeId,
        call: impl std::future::Future<Output = T>,
    ) -> Option<T> {
        let mut server = self.raft.server_metrics();
        let moved = async move {
            loop {
                let now = server.borrow_watched().current_leader;
                if now.is_some_and(|l| l != leader) || server.changed().await.is_err() {
                    return;
                }
            }
        };
        tokio::select! {
            answered = call => Some(answered),
            () = moved => None,
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_leader_serves_here_and_a_forwarded_request_travels_once() {
        assert_eq!(destination(1, 1, false), Ok(None));
        assert_eq!(destination(1, 1, true), Ok(None));
        assert_eq!(destination(2, 1, false), Ok(Some(2)));
        assert_eq!(destination(2, 1, true), Err(EtcdError::NotLeader));
    }

    #[test]
    fn a_forwarded_request_is_marked() {
        assert!(is_forwarded(&forwarded(())));
        assert!(!is_forwarded(&Request::new(())));
    }

    #[test]
    fn a_link_is_reused_until_its_member_moves() {
        let links: Links<String> = Links::new();
        let urls = |u: &str| vec![u.to_string()];
        let make = |u: &[String]| Ok(u.join(","));
        let a = links.get_or_make(2, urls("http://a"), make).expect("link");
        let again = links
            .get_or_make(2, urls("http://a"), |_| Err(Status::internal("remade")))
            .expect("reused");
        assert!(Arc::ptr_eq(&a, &again));
        let moved = links.get_or_make(2, urls("http://b"), make).expect("link");
        assert_eq!(*moved, "http://b");
        let refused = links.get_or_make(3, urls("x"), |_| Err(Status::unavailable("bad url")));
        assert_eq!(
            refused.err().map(|s| s.code()),
            Some(tonic::Code::Unavailable)
        );
    }
}
