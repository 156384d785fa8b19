//! The Raft state machine: committed entries are applied to the [`Store`] here, in log
//! order, and snapshots of the store are built, saved and installed here.
//!
//! The store lives in memory behind one `RwLock` together with the last applied log id and
//! the membership ([`SmData`]), so a snapshot always pairs a tree with the exact log position
//! it reflects. The API layer reads the store through the same lock ([`Shared`]).
//!
//! What must stay true:
//! * Applying is deterministic: each command of a batch is applied in order with
//!   `Command::apply`, and its result (event or error) is returned to the proposer.
//! * A snapshot is durable in redb before openraft is told it exists (it purges the log
//!   behind it), so a restart finds either the old log or the new snapshot, never neither.
//! * On start-up the last saved snapshot is loaded; openraft then re-applies the committed
//!   log tail on top of it.

use std::io::Cursor;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot};
use openraft::{Entry, EntryPayload, StorageIOError};
use serde::{Deserialize, Serialize};

use super::disk::Disk;
use super::types::{
    BatchResult, LogId, Member, NodeId, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};
use crate::store::{Store, StoreSnapshot};

/// Everything the state machine owns, under one lock.
pub struct SmData {
    pub store: Store,
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
}

/// The handle the rest of the node uses to read the store.
pub struct Shared {
    data: RwLock<SmData>,
}

impl Shared {
    pub fn read(&self) -> RwLockReadGuard<'_, SmData> {
        self.data.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, SmData> {
        self.data.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// Run `f`, which may wait for the store lock or hold it for a while (an apply, a large
/// listing), without taking a runtime worker away from everything else: on a multi-threaded
/// runtime it runs in `block_in_place`, so Raft's heartbeats keep flowing meanwhile.
pub fn off_worker<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// The snapshot payload: the store and where in the log it was taken.
#[derive(Serialize, Deserialize)]
struct SnapshotBody {
    store: StoreSnapshot,
}

pub struct StateMachine {
    shared: Arc<Shared>,
    disk: Disk,
    /// Counts snapshots built by this process, to keep snapshot ids unique.
    built: u64,
}

fn io_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_state_machine(&e).into()
}

impl StateMachine {
    /// Open the state machine, loading the last snapshot saved in `disk` if there is one.
    pub fn open(
        disk: Disk,
        history_size: usize,
    ) -> Result<(StateMachine, Arc<Shared>), crate::error::Error> {
        let mut data = SmData {
            store: Store::new(history_size),
            last_applied: None,
            membership: Default::default(),
        };
        let storage_err = |e: String| crate::error::Error::Storage(e);
        if let Some((meta, body)) = disk
            .load_snapshot()
            .map_err(|e| storage_err(e.to_string()))?
        {
            let meta: SnapshotMeta = serde_json::from_slice(&meta).map_err(|e| {
                storage_err(format!(
                    "{}: bad snapshot metadata: {e}",
                    disk.path().display()
                ))
            })?;
            let body: SnapshotBody = serde_json::from_slice(&body).map_err(|e| {
                storage_err(format!("{}: bad snapshot: {e}", disk.path().display()))
            })?;
            data.store.restore(body.store);
            data.last_applied = meta.last_log_id;
            data.membership = meta.last_membership;
        }
        let shared = Arc::new(Shared {
            data: RwLock::new(data),
        });
        Ok((
            StateMachine {
                shared: shared.clone(),
                disk,
                built: 0,
            },
            shared,
        ))
    }

    async fn save(&self, meta: &SnapshotMeta, body: Vec<u8>) -> Result<(), StorageError> {
        let meta_bytes = serde_json::to_vec(meta).map_err(io_err)?;
        let disk = self.disk.clone();
        let signature = meta.signature();
        tokio::task::spawn_blocking(move || disk.save_snapshot(&meta_bytes, &body))
            .await
            .map_err(io_err)?
            .map_err(|e| StorageIOError::write_snapshot(Some(signature), &e).into())
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let d = self.shared.read();
        Ok((d.last_applied, d.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<BatchResult>, StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<_> = entries.into_iter().collect();
        // Usually the lock is free and applying takes microseconds; only when a long read
        // holds it does the wait move off the worker.
        if let Ok(mut d) = self.shared.data.try_write() {
            return Ok(apply_to(&mut d, entries));
        }
        Ok(off_worker(|| apply_to(&mut self.shared.write(), entries)))
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        self.built += 1;
        SnapshotBuilder {
            shared: self.shared.clone(),
            disk: self.disk.clone(),
            seq: self.built,
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let bytes = snapshot.into_inner();
        let body: SnapshotBody = serde_json::from_slice(&bytes)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        // Durable first: if we crash after this, the restart loads this snapshot.
        self.save(meta, bytes).await?;
        off_worker(|| {
            let mut d = self.shared.write();
            d.store.restore(body.store);
            d.last_applied = meta.last_log_id;
            d.membership = meta.last_membership.clone();
        });
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let disk = self.disk.clone();
        let loaded = tokio::task::spawn_blocking(move || disk.load_snapshot())
            .await
            .map_err(io_err)?
            .map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        let Some((meta, data)) = loaded else {
            return Ok(None);
        };
        let meta: SnapshotMeta =
            serde_json::from_slice(&meta).map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

/// Apply committed entries to the locked data, in order.
fn apply_to(d: &mut SmData, entries: Vec<Entry<TypeConfig>>) -> Vec<BatchResult> {
    let mut out = Vec::new();
    for entry in entries {
        d.last_applied = Some(entry.log_id);
        match entry.payload {
            EntryPayload::Blank => out.push(BatchResult::default()),
            EntryPayload::Normal(batch) => {
                d.store.set_write_time(batch.at);
                let results = batch.cmds.iter().map(|c| c.apply(&mut d.store)).collect();
                out.push(BatchResult(results));
            }
            EntryPayload::Membership(m) => {
                d.membership = StoredMembership::new(Some(entry.log_id), m);
                out.push(BatchResult::default());
            }
        }
    }
    out
}

pub struct SnapshotBuilder {
    shared: Arc<Shared>,
    disk: Disk,
    seq: u64,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        // Copy under the lock (cheap compared to serializing), serialize outside it, so
        // applies and reads wait only for the copy.
        let (store, last_applied, membership) = off_worker(|| {
            let d = self.shared.read();
            (d.store.snapshot(), d.last_applied, d.membership.clone())
        });
        let body = serde_json::to_vec(&SnapshotBody { store }).map_err(io_err)?;
        let snapshot_id = match last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, self.seq),
            None => format!("0-0-{}", self.seq),
        };
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership: membership,
            snapshot_id,
        };
        let sm = StateMachine {
            shared: self.shared.clone(),
            disk: self.disk.clone(),
            built: self.seq,
        };
        sm.save(&meta, body.clone()).await?;
        tracing::info!(
            index = last_applied.map(|l| l.index),
            bytes = body.len(),
            "snapshot saved"
        );
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(body)),
        })
    }
}

/// The members of the current membership config, by id.
pub fn members(membership: &StoredMembership) -> Vec<(NodeId, Member)> {
    membership
        .membership()
        .nodes()
        .map(|(id, m)| (*id, m.clone()))
        .collect()
}
