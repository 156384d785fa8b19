//! The openraft type configuration: what a log entry carries and what applying it returns.
//!
//! One Raft entry carries a *batch* of commands ([`Batch`]): openraft 0.9 appends one client
//! entry per storage call on the leader, so concurrent client writes are coalesced by us
//! (group commit, see `raft::node`). Applying a batch yields one result per command, in order
//! ([`BatchResult`]). A member is described by its name and both of its URLs ([`Member`]),
//! which is what `/v1/machines`, `/v2/members` and forwarding need.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::command::{Command, Outcome};

pub type NodeId = u64;

/// The commands of one Raft entry, with the proposing leader's clock (Unix ns) when it
/// proposed them. The time is part of the log, so every replica stamps the resulting events
/// alike: it is the moment their TTLs are rendered at, as etcd renders them at write time.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    pub at: i64,
    /// Replica, so the copies openraft makes of an entry (the log's cache hands one to the
    /// state machine, replication serializes another) never copy the commands.
    pub cmds: std::sync::Arc<[Command]>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BatchResult(pub Vec<Outcome>);

/// A cluster member as the membership config records it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub name: String,
    pub peer_url: String,
    pub client_url: String,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})", self.name, self.peer_url)
    }
}

openraft::declare_raft_types!(
    pub TypeConfig:
        D = Batch,
        R = BatchResult,
        NodeId = NodeId,
        Node = Member,
        SnapshotData = super::snapshot::SnapshotData,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, Member>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Member>;
pub type StorageError = openraft::StorageError<NodeId>;
