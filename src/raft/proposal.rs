//! What every part of proposing shares (`node.rs`, `batch.rs`, `forward.rs`,
//! `read_index.rs`): the limits, the outcome of a proposal and its errors, and who leads.

use std::time::Duration;

use openraft::ServerState;
use openraft::error::{ClientWriteError, RaftError};
use serde::{Deserialize, Serialize};

use super::types::{Member, NodeId, Raft};
use crate::command::Outcome;
use crate::error::EtcdError;

/// Most commands in one Raft entry.
pub const MAX_BATCH: usize = 1024;
/// Most bytes of keys and values in one Raft entry (a single larger command still goes alone).
pub const MAX_BATCH_BYTES: usize = 4 << 20;
/// Batches proposed and not yet applied, at most (see the module docs).
pub const MAX_IN_FLIGHT: usize = 1;
/// Most commands a follower forwards to the leader in one call.
pub const MAX_FORWARD: usize = 256;
/// Forwarding calls from one follower outstanding at once.
pub const FORWARD_IN_FLIGHT: usize = 4;
/// How long a proposal may take before the client gets error 300.
pub const PROPOSAL_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the leader checks for due TTLs.
pub const EXPIRE_TICK: Duration = Duration::from_millis(500);
/// Pause before retrying a proposal or read that found no leader.
pub(super) const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// How long a request waits for the node to become ready before it fails.
pub const READY_TIMEOUT: Duration = Duration::from_secs(5);

/// The outcome of a proposal: the command's own result and the Raft position it was
/// applied at (for `X-Raft-Index` / `X-Raft-Term`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Written {
    pub result: Outcome,
    pub raft_index: u64,
    pub raft_term: u64,
}

/// Why a proposal did not go through on the node it was sent to.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ProposeError {
    /// This node is not (or no longer) the leader: the command was not appended, so it is
    /// safe to send it to the leader.
    NotLeader,
    /// The proposal failed (or its outcome is unknown, e.g. a timeout): do not retry.
    Failed(EtcdError),
}

/// The current leader and its member record, as far as `raft` knows.
pub(super) fn leader_of(raft: &Raft) -> Option<(NodeId, Member)> {
    let m = raft.metrics();
    let m = m.borrow();
    let id = m.current_leader?;
    let member = m.membership_config.membership().get_node(&id).cloned()?;
    Some((id, member))
}

pub(super) fn shutting_down() -> ProposeError {
    ProposeError::Failed(EtcdError::raft("node is shutting down"))
}

/// Error 300 for a write that may have been applied (sent or proposed, then no answer): the
/// cause says so, so a client knows to check (or retry with `prevValue`/`prevIndex`) rather
/// than assume it failed. Errors without these words were never proposed.
pub(super) fn unknown_outcome(why: impl std::fmt::Display) -> ProposeError {
    ProposeError::Failed(EtcdError::raft(format!(
        "{why}; the write may or may not have been applied"
    )))
}

/// A failed `client_write`. Never [`ProposeError::NotLeader`]: openraft 0.9 answers
/// `ForwardToLeader` both when it refuses the entry up front and when the entry *was* appended
/// and then cut from this node's log by a newer leader (`DeleteConflictLog`). In the second
/// case the entry may survive on another member and be committed by a later leader (possible
/// with five members), so sending the commands again could apply them twice: the outcome is
/// unknown, and the client is told so (error 300). The batcher checks leadership just before
/// proposing, so a plain "not the leader" rarely gets here.
pub(super) fn propose_error(
    e: &RaftError<NodeId, ClientWriteError<NodeId, Member>>,
) -> ProposeError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => {
            unknown_outcome("leadership changed while the write was in flight")
        }
        other => unknown_outcome(other),
    }
}

/// Does this node lead, as far as `raft` knows?
pub(super) fn leads(raft: &Raft) -> bool {
    let m = raft.metrics();
    let m = m.borrow();
    m.state == ServerState::Leader && m.current_leader == Some(m.id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::error::ForwardToLeader;

    /// A rejected `client_write` is never resent: `ForwardToLeader` may follow an append
    /// that another member still holds (see `propose_error`).
    #[test]
    fn forward_to_leader_from_client_write_is_an_unknown_outcome() {
        let e = RaftError::APIError(ClientWriteError::ForwardToLeader(ForwardToLeader {
            leader_id: Some(7),
            leader_node: None,
        }));
        match propose_error(&e) {
            ProposeError::Failed(err) => {
                assert_eq!(err.code, crate::error::Code::RaftInternal);
                assert!(
                    err.cause.contains("may or may not have been applied"),
                    "{err:?}"
                );
            }
            ProposeError::NotLeader => panic!("a possibly appended write would be sent again"),
        }
    }
}
