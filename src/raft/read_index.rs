//! Read indexes for quorum reads: a linearizable read waits for a round of leadership
//! confirmation that starts after it arrived, then for this node to apply up to the index the
//! round returns. Concurrent reads share one round, on the leader (heartbeats to a quorum) and
//! on a follower (one call to the leader for all its waiting reads).

use tokio::sync::{mpsc, oneshot};

use openraft::error::RaftError;

use super::network::{CallError, PeerClient};
use super::proposal::{PROPOSAL_TIMEOUT, ProposeError, leader_of, shutting_down};
use super::types::{NodeId, Raft};
use crate::error::EtcdError;

/// A read waiting for a read index (see [`read_index_rounds`]).
pub(super) type ReadWaiter = oneshot::Sender<Result<u64, ProposeError>>;

/// Reads waiting for a read index, at most.
pub(super) const READS_WAITING: usize = 16 * 1024;

/// Wait for the next read-index round (bounded by [`PROPOSAL_TIMEOUT`]).
pub(super) async fn read_index(rounds: &mpsc::Sender<ReadWaiter>) -> Result<u64, ProposeError> {
    let (tx, rx) = oneshot::channel();
    if rounds.send(tx).await.is_err() {
        return Err(shutting_down());
    }
    match tokio::time::timeout(PROPOSAL_TIMEOUT, rx).await {
        Ok(answer) => answer.unwrap_or_else(|_| Err(shutting_down())),
        Err(_) => Err(ProposeError::Failed(EtcdError::raft(
            "read index timed out (no quorum?)",
        ))),
    }
}

/// Serve read-index requests in rounds: take every read waiting, run one `round`, answer
/// them all with its result. A read waits for a round that *starts* after it arrived, so the
/// leadership it is answered with was confirmed after the read began (what makes it
/// linearizable); reads that arrive during a round go to the next one. One round at a time:
/// the reads arriving meanwhile pile up into the next.
pub(super) async fn read_index_rounds<F, Fut>(mut rx: mpsc::Receiver<ReadWaiter>, mut round: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<u64, ProposeError>>,
{
    while let Some(first) = rx.recv().await {
        let mut waiters = vec![first];
        while let Ok(w) = rx.try_recv() {
            waiters.push(w);
        }
        waiters.retain(|w| !w.is_closed());
        if waiters.is_empty() {
            continue;
        }
        let res = round().await;
        for w in waiters {
            let _ = w.send(res.clone());
        }
    }
}

/// One leader's round: confirm leadership with a quorum (heartbeats), return the read index.
pub(super) async fn confirm_leadership(raft: Raft) -> Result<u64, ProposeError> {
    match tokio::time::timeout(PROPOSAL_TIMEOUT, raft.get_read_log_id()).await {
        Ok(Ok((read_log_id, _))) => Ok(read_log_id.map_or(0, |l| l.index)),
        Ok(Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(_)))) => {
            Err(ProposeError::NotLeader)
        }
        Ok(Err(e)) => Err(ProposeError::Failed(EtcdError::raft(e.to_string()))),
        Err(_) => Err(ProposeError::Failed(EtcdError::raft(
            "read index timed out (no quorum?)",
        ))),
    }
}

/// One follower's round: ask the leader for a read index (one call for all waiting reads).
pub(super) async fn leaders_read_index(
    raft: Raft,
    client: PeerClient,
    me: NodeId,
) -> Result<u64, ProposeError> {
    let Some((_, leader)) = leader_of(&raft).filter(|(id, _)| *id != me) else {
        return Err(ProposeError::NotLeader);
    };
    let answer: Result<Result<u64, ProposeError>, CallError> = client
        .post_json(&leader.peer_url, "/raft/read_index", &(), PROPOSAL_TIMEOUT)
        .await;
    match answer {
        Ok(answer) => answer,
        Err(CallError::Connect(..) | CallError::Closed(..)) => Err(ProposeError::NotLeader),
        Err(e) => Err(ProposeError::Failed(EtcdError::raft(format!(
            "read index from the leader: {e}"
        )))),
    }
}
