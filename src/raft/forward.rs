//! Forwarding on a follower: the writes waiting on this node go to the leader in one
//! `/raft/propose` call (up to [`MAX_FORWARD`] commands, [`FORWARD_IN_FLIGHT`] calls
//! outstanding per leader); the leader puts them into its own queue, so they join its
//! batches. Each command still gets its own result.

use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc};

use super::batch::{Proposal, drain};
use super::network::{CallError, PeerClient};
use super::proposal::{
    FORWARD_IN_FLIGHT, MAX_FORWARD, PROPOSAL_TIMEOUT, ProposeError, RETRY_PAUSE, Written,
    leader_of, unknown_outcome,
};
use super::types::{NodeId, Raft};
use crate::command::Command;

/// Follower side of forwarding: send what has accumulated to the leader in one call, with at
/// most [`FORWARD_IN_FLIGHT`] calls outstanding per leader (while they are, writes pile up for
/// the next call). Each member has its own budget, so calls stuck on a leader that stopped
/// answering do not hold up writes once another node leads.
pub(super) async fn forwarder(
    raft: Raft,
    client: PeerClient,
    me: NodeId,
    mut rx: mpsc::Receiver<Proposal>,
) {
    // One budget per member that has led (a handful at most), kept across leader changes.
    let mut budgets: std::collections::HashMap<NodeId, Arc<Semaphore>> = Default::default();
    loop {
        let Some(first) = rx.recv().await else { return };
        let (leader, slot) = loop {
            let Some((id, leader)) = leader_of(&raft).filter(|(id, _)| *id != me) else {
                // No leader, or this node leads now: the callers retry (and propose locally).
                break (None, None);
            };
            let slots = budgets
                .entry(id)
                .or_insert_with(|| Arc::new(Semaphore::new(FORWARD_IN_FLIGHT)))
                .clone();
            // Look at the leader again now and then while its budget is used up.
            if let Ok(Ok(slot)) = tokio::time::timeout(RETRY_PAUSE, slots.acquire_owned()).await {
                break (Some(leader), Some(slot));
            }
        };
        // Writes whose caller gave up (timed out) are not sent.
        let batch: Vec<Proposal> = drain(first, &mut rx, MAX_FORWARD)
            .into_iter()
            .filter(|p| !p.tx.is_closed())
            .collect();
        if batch.is_empty() {
            continue;
        }
        let client = client.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let (cmds, txs): (Vec<Command>, Vec<_>) =
                batch.into_iter().map(|p| (p.cmd, p.tx)).unzip();
            let n = cmds.len();
            let all = |e: ProposeError| (0..n).map(|_| Err(e.clone())).collect::<Vec<_>>();
            let answers = match leader {
                Some(leader) => {
                    let answer: Result<Vec<Result<Written, ProposeError>>, CallError> = client
                        .post(
                            &leader.peer_url,
                            "/raft/propose",
                            &cmds,
                            Some(|out, cmds| super::codec::encode_commands(out, cmds)),
                            PROPOSAL_TIMEOUT,
                        )
                        .await;
                    match answer {
                        Ok(rs) if rs.len() == n => rs,
                        Ok(rs) => all(unknown_outcome(format!(
                            "the leader answered {} of {n} forwarded writes",
                            rs.len()
                        ))),
                        // Never reached the leader: safe to try again once a leader is known.
                        Err(CallError::Connect(..)) => all(ProposeError::NotLeader),
                        // Sent, outcome unknown: do not risk applying them twice.
                        Err(e) => all(unknown_outcome(format!(
                            "forwarding to the leader failed: {e}"
                        ))),
                    }
                }
                None => all(ProposeError::NotLeader),
            };
            for (tx, answer) in txs.into_iter().zip(answers) {
                let _ = tx.send(answer);
            }
        });
    }
}
