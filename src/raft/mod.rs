//! How openraft is wired in: one file per openraft trait, plus the node handle.
//!
//! * `types` - the type configuration (a log entry carries a batch of commands).
//! * `disk` - the redb data file and all its tables.
//! * `log_store` - `RaftLogStorage` on redb: one transaction and one fsync per append call.
//! * `state_machine` - `RaftStateMachine`: applies batches to the store; snapshots.
//! * `network` - `RaftNetworkFactory`: JSON over HTTP to peers' `api::peer`.
//! * `node` - what the API uses: group-committing proposals, leader info, readiness, expiry.

pub mod cluster;
pub mod codec;
pub mod disk;
pub mod log_store;
pub mod migrate;
pub mod network;
pub mod node;
pub mod snapshot;
pub mod state_machine;
pub mod types;
pub mod wal;
