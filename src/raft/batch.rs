//! Group commit on the leader: every proposal goes into one queue; the batcher takes whatever
//! has accumulated (up to [`MAX_BATCH`] commands or [`MAX_BATCH_BYTES`]) and proposes it as
//! *one* Raft entry, with at most [`MAX_IN_FLIGHT`] batch outstanding, and gives each command
//! its own result back (see `node.rs` for why one in flight).

use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};

use super::proposal::{
    MAX_BATCH, MAX_BATCH_BYTES, MAX_IN_FLIGHT, PROPOSAL_TIMEOUT, ProposeError, Written, leads,
    propose_error, unknown_outcome,
};
use super::types::{Batch, Raft};
use crate::command::Command;

/// A command waiting to be proposed, with the way back to its caller.
pub(super) struct Proposal {
    pub(super) cmd: Command,
    pub(super) tx: oneshot::Sender<Result<Written, ProposeError>>,
    /// Bytes this command adds to a batch and to its answer (see [`drain`]).
    pub(super) cost: usize,
}

impl Proposal {
    pub(super) fn new(
        cmd: Command,
        tx: oneshot::Sender<Result<Written, ProposeError>>,
    ) -> Proposal {
        let cost = cmd.approx_size();
        Proposal { cmd, tx, cost }
    }
}

/// Drain the queue into batches; propose each batch as one entry.
pub(super) async fn batcher(raft: Raft, mut rx: mpsc::Receiver<Proposal>) {
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    loop {
        // Take a slot first: while none is free, proposals pile up into the next batch.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else { return };
        let batch = drain(first, &mut rx, MAX_BATCH);
        let raft = raft.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let (cmds, txs): (Vec<Command>, Vec<_>) =
                batch.into_iter().map(|p| (p.cmd, p.tx)).unzip();
            let n = cmds.len();
            // Not the leader (any more): nothing is appended, the callers may send it on.
            // After this check a rejection is no longer proof of that (see `propose_error`).
            if !leads(&raft) {
                for tx in txs {
                    let _ = tx.send(Err(ProposeError::NotLeader));
                }
                return;
            }
            match tokio::time::timeout(
                PROPOSAL_TIMEOUT,
                raft.client_write(Batch {
                    at: crate::clock::now_nanos(),
                    cmds: cmds.into(),
                }),
            )
            .await
            {
                Ok(Ok(resp)) => {
                    let (raft_index, raft_term) = (resp.log_id.index, resp.log_id.leader_id.term);
                    debug_assert_eq!(resp.data.0.len(), n);
                    for (tx, result) in txs.into_iter().zip(resp.data.0) {
                        let _ = tx.send(Ok(Written {
                            result,
                            raft_index,
                            raft_term,
                        }));
                    }
                }
                Ok(Err(e)) => {
                    let err = propose_error(&e);
                    for tx in txs {
                        let _ = tx.send(Err(err.clone()));
                    }
                }
                Err(_) => {
                    for tx in txs {
                        let _ =
                            tx.send(Err(unknown_outcome("the proposal timed out (no quorum?)")));
                    }
                }
            }
        });
    }
}

/// `first` and whatever else is waiting in `rx`, up to `max` commands or [`MAX_BATCH_BYTES`].
pub(super) fn drain(
    first: Proposal,
    rx: &mut mpsc::Receiver<Proposal>,
    max: usize,
) -> Vec<Proposal> {
    let mut bytes = first.cost;
    let mut batch = vec![first];
    while batch.len() < max && bytes < MAX_BATCH_BYTES {
        match rx.try_recv() {
            Ok(p) => {
                bytes += p.cost;
                batch.push(p);
            }
            Err(_) => break,
        }
    }
    batch
}
