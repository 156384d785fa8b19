//! How openraft is wired in: one file per openraft trait, plus the node handle.
//!
//! * `types` - the type configuration (a log entry carries a batch of commands).
//! * `wal`, `codec`, `log_store` - `RaftLogStorage` on a write-ahead log of our own: one
//!   write and one fsync per append call; `migrate` moves an older release's log out of redb.
//! * `disk`, `snapshot` - the redb data file (snapshots, node metadata) and its tables.
//! * `state_machine` - `RaftStateMachine`: applies batches to the store; snapshots.
//! * `network` - `RaftNetworkFactory`: JSON over HTTP to peers' `api::peer`.
//! * `node` - what the API uses: proposals, leader info, readiness, expiry; with `batch`
//!   (group commit on the leader), `forward` (writes a follower sends to the leader),
//!   `read_index` (quorum reads) and `proposal` (what they share).
//! * `cluster` - member ids, joining, removal, `--force-new-cluster`.

mod batch;
pub mod cluster;
pub mod codec;
pub mod disk;
mod forward;
pub mod log_store;
pub mod migrate;
pub mod network;
pub mod node;
mod proposal;
mod read_index;
pub mod snapshot;
pub mod state_machine;
pub mod types;
pub mod wal;
