//! etcd: a drop-in replacement for the legacy etcd server (the v1 API of etcd v0.1 and the
//! v2 keys API of etcd 2.x) built on openraft, a write-ahead log of its own, and redb.
//!
//! How one write travels (see `docs/architecture.md`):
//!
//! ```text
//! client --HTTP--> api::v1               parse and validate -> Command (absolute times inside)
//!                  raft::node            coalesce concurrent commands into one batch entry
//!                  openraft              replicate; commit when a quorum has it
//!                  raft::log_store       append the whole batch as one WAL frame (raft::wal), fsync
//!                  raft::state_machine   Command::apply(&mut State), in log order
//!                  state, store          mutate the tree, bump the index, record the event,
//!                                        wake watchers
//! client <--HTTP-- api::response         Event | EtcdError -> status, headers, JSON
//! ```
//!
//! Reads are served from the in-memory store after the node has recovered. Dependencies
//! point one way: `api -> raft -> command -> state -> store`.

pub mod api;
pub mod clock;
pub mod command;
pub mod config;
pub mod conn;
pub mod data_dir;
pub mod discovery;
pub mod error;
pub mod go;
pub mod http_client;
pub mod instruments;
pub mod log_filter;
pub mod proxy;
pub mod raft;
pub mod server;
pub mod state;
pub mod store;
pub mod tls;
