//! Events and node views: what a write did, as the store records it (`json.rs` renders them
//! for both API eras).
//!
//! Every successful write produces one [`Event`]: the action, the node as it is after the
//! write, and the node as it was before (`prev_node`). The same event answers the writer,
//! goes into the history ring and wakes watchers, so all three always agree.
//!
//! Views hold absolute expiry times; the remaining `ttl` is computed when rendering, from the
//! `now` the caller passes in (the store itself never reads a clock).

use serde::{Deserialize, Serialize};

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    Get,
    Set,
    Create,
    Update,
    CompareAndSwap,
    Delete,
    CompareAndDelete,
    Expire,
}

impl Action {
    pub fn as_v2(self) -> &'static str {
        match self {
            Action::Get => "get",
            Action::Set => "set",
            Action::Create => "create",
            Action::Update => "update",
            Action::CompareAndSwap => "compareAndSwap",
            Action::Delete => "delete",
            Action::CompareAndDelete => "compareAndDelete",
            Action::Expire => "expire",
        }
    }

    /// v0.1 knew three actions: GET, SET (also TestAndSet) and DELETE (also expiry).
    pub fn as_v1(self) -> &'static str {
        match self {
            Action::Get => "GET",
            Action::Set | Action::Create | Action::Update | Action::CompareAndSwap => "SET",
            Action::Delete | Action::CompareAndDelete | Action::Expire => "DELETE",
        }
    }

    pub fn is_removal(self) -> bool {
        matches!(
            self,
            Action::Delete | Action::CompareAndDelete | Action::Expire
        )
    }
}

/// A copy of one node (and, for listings, its children) taken for a response or an event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeView {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default)]
    pub dir: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expire_at: Option<i64>,
    pub modified_index: u64,
    pub created_index: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Vec<NodeView>>,
}

/// The result of one successful write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub action: Action,
    pub node: NodeView,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_node: Option<NodeView>,
    /// A TTL refresh: recorded in history (it consumed an index) but never shown to watchers.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub refresh: bool,
    /// When the write happened (Unix ns, from the log entry): TTLs in the event are rendered
    /// as of this moment, in the answer, in watch deliveries and in history replays alike.
    #[serde(default)]
    pub at: i64,
}

impl Event {
    /// The store index this event was written at.
    pub fn index(&self) -> u64 {
        self.node.modified_index
    }
}
