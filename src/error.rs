//! Errors: the one table of etcd error codes, their messages in both API eras and their HTTP
//! statuses, plus the internal error type for things that are not the client's fault.
//!
//! Two kinds of failure are kept apart on purpose (as toydb does):
//! * [`EtcdError`] - the client's request failed (key not found, compare failed, bad form
//!   field, no leader...). It is data: it travels through the Raft log as the result of a
//!   command, is rendered as etcd's JSON error shape, and never stops the node.
//! * [`Error`] - this node has a problem (I/O, redb, raft fatal, bad configuration). It is
//!   logged; at start-up it becomes one clear line on stderr and a non-zero exit.
//!
//! The store fills an `EtcdError` with the v2 cause (the offending key path, or the compare
//! text `[given != current]`) and the store index at the time of the failure. The v1 layer
//! renders the same error with v0.1 messages and causes (`get: /foo`, `TestAndSet: one!=two`),
//! for which it may need the current value of the key (`current`).

use serde::{Deserialize, Serialize};

/// An etcd error code. The numbers are the wire values clients switch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[repr(u16)]
pub enum Code {
    KeyNotFound = 100,
    TestFailed = 101,
    NotFile = 102,
    NoMorePeer = 103,
    NotDir = 104,
    NodeExist = 105,
    KeywordPrefix = 106,
    RootReadOnly = 107,
    DirNotEmpty = 108,
    ExistingPeerAddr = 109,
    Unauthorized = 110,
    ValueRequired = 200,
    PrevValueRequired = 201,
    TtlNan = 202,
    IndexNan = 203,
    ValueOrTtlRequired = 204,
    InvalidField = 209,
    InvalidForm = 210,
    RefreshValue = 211,
    RefreshTtlRequired = 212,
    RaftInternal = 300,
    LeaderElect = 301,
    WatcherCleared = 400,
    EventIndexCleared = 401,
    ClientInternal = 500,
    /// Not an etcd error code, and never shown to a client: how the peer port carries a
    /// refusal of the auth store, with its HTTP status in `index` (`ApplyError::to_wire`).
    /// Inside a node, auth outcomes are typed (`command::Outcome::Auth`).
    AuthRefused = 1000,
}

impl Code {
    pub fn number(self) -> u16 {
        self as u16
    }

    /// The v2 (etcd 2.x) message, exact.
    pub fn message_v2(self) -> &'static str {
        use Code::*;
        match self {
            KeyNotFound => "Key not found",
            TestFailed => "Compare failed",
            NotFile => "Not a file",
            NoMorePeer => "Reached the max number of peers in the cluster",
            NotDir => "Not a directory",
            NodeExist => "Key already exists",
            KeywordPrefix => "The prefix of given key is a keyword in etcd",
            RootReadOnly => "Root is read only",
            DirNotEmpty => "Directory not empty",
            ExistingPeerAddr => "Peer address has existed",
            Unauthorized => "The request requires user authentication",
            ValueRequired => "Value is Required in POST form",
            PrevValueRequired => "PrevValue is Required in POST form",
            TtlNan => "The given TTL in POST form is not a number",
            IndexNan => "The given index in POST form is not a number",
            ValueOrTtlRequired => "Value or TTL is required in POST form",
            InvalidField => "Invalid field",
            InvalidForm => "Invalid POST form",
            RefreshValue => "Value provided on refresh",
            RefreshTtlRequired => "A TTL must be provided on refresh",
            RaftInternal => "Raft Internal Error",
            LeaderElect => "During Leader Election",
            WatcherCleared => "watcher is cleared due to etcd recovery",
            EventIndexCleared => "The event in requested index is outdated and cleared",
            ClientInternal => "Client Internal Error",
            AuthRefused => "Auth refused",
        }
    }

    /// The v1 (etcd v0.1.2) message, exact; codes v0.1 did not have use the v2 text.
    pub fn message_v1(self) -> &'static str {
        use Code::*;
        match self {
            KeyNotFound => "Key Not Found",
            TestFailed => "The given PrevValue is not equal to the value of the key",
            NotFile => "Not A File",
            NoMorePeer => "Reached the max number of machines in the cluster",
            KeywordPrefix => "The prefix of the given key is a keyword in etcd",
            other => other.message_v2(),
        }
    }

    /// HTTP status for this code (the v2 mapping, used by both APIs: the choices in docs/api.md).
    pub fn http_status(self) -> u16 {
        use Code::*;
        match self {
            KeyNotFound => 404,
            TestFailed | NodeExist => 412,
            NotFile | DirNotEmpty => 403,
            Unauthorized => 401,
            RaftInternal | LeaderElect => 500,
            _ => 400,
        }
    }
}

/// A failed client request, in the shape etcd reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{} ({}): {}", .code.message_v2(), .code.number(), .cause)]
pub struct EtcdError {
    pub code: Code,
    /// The v2 cause: usually the offending key path.
    pub cause: String,
    /// The store index when the error happened (0 for request-validation errors).
    pub index: u64,
    /// The key's current value, for compare failures (v1 renders `TestAndSet: cur!=given`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
}

impl EtcdError {
    pub fn new(code: Code, cause: impl Into<String>, index: u64) -> Self {
        EtcdError {
            code,
            cause: cause.into(),
            index,
            current: None,
        }
    }

    pub fn with_current(mut self, current: impl Into<String>) -> Self {
        self.current = Some(current.into());
        self
    }

    /// Raft Internal Error (300): the write could not be committed (no leader, timeout,
    /// shutting down). The cause says why.
    pub fn raft(cause: impl Into<String>) -> Self {
        EtcdError::new(Code::RaftInternal, cause, 0)
    }
}

/// Something went wrong in this node, not in the request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Io(String),
    #[error("{0}")]
    Storage(String),
    #[error("raft: {0}")]
    Raft(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_v2_mapping() {
        assert_eq!(Code::KeyNotFound.http_status(), 404);
        assert_eq!(Code::TestFailed.http_status(), 412);
        assert_eq!(Code::NodeExist.http_status(), 412);
        assert_eq!(Code::NotFile.http_status(), 403);
        assert_eq!(Code::DirNotEmpty.http_status(), 403);
        assert_eq!(Code::RaftInternal.http_status(), 500);
        assert_eq!(Code::LeaderElect.http_status(), 500);
        assert_eq!(Code::TtlNan.http_status(), 400);
        assert_eq!(Code::EventIndexCleared.http_status(), 400);
        assert_eq!(Code::Unauthorized.http_status(), 401);
    }

    #[test]
    fn messages_differ_per_era() {
        assert_eq!(Code::KeyNotFound.message_v1(), "Key Not Found");
        assert_eq!(Code::KeyNotFound.message_v2(), "Key not found");
        assert_eq!(Code::NotFile.message_v1(), "Not A File");
        assert_eq!(
            Code::TtlNan.message_v1(),
            "The given TTL in POST form is not a number"
        );
        assert_eq!(Code::KeyNotFound.number(), 100);
        assert_eq!(Code::EventIndexCleared.number(), 401);
    }
}
