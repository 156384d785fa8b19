//! The Raft state machine: committed entries are applied to the replicated [`State`] here,
//! in log order, and snapshots of it are built, saved and installed here.
//!
//! The store lives in memory behind one `RwLock` together with the last applied log id and
//! the membership ([`SmData`]), so a snapshot always pairs a tree with the exact log position
//! it reflects. The API layer reads the store through the same lock ([`Replica`]).
//!
//! What must stay true:
//! * Applying is deterministic: each command of a batch is applied in order with
//!   `Command::apply`, and its result (event or error) is returned to the proposer.
//! * Building a snapshot never stops applies or reads: the builder takes an O(1) copy of the
//!   store (its tree is shared, see `store::tree`) under the read lock, between two applies,
//!   and encodes it on a blocking thread while the store moves on.
//! * A snapshot is durable in redb before openraft is told it exists (it purges the log
//!   behind it), so a restart finds either the old log or the new snapshot, never neither.
//! * On start-up the last saved snapshot is loaded; openraft then re-applies the committed
//!   log tail on top of it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use tokio::sync::oneshot;

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot};
use openraft::{Entry, EntryPayload, StorageIOError};

use super::disk::Disk;
use super::log_store::Durable;
use super::snapshot::{self, ChunkReader, SnapshotData, Stored};
use super::types::{
    BatchResult, LogId, Member, NodeId, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};
use crate::state::State;
use crate::store::StoreSnapshot;

/// Everything the state machine owns, under one lock.
pub struct SmData {
    /// Writes (commands) applied since the last snapshot was taken.
    writes_since_snapshot: u64,
    /// The replicated state: the key space, the auth state, the removed members.
    pub state: State,
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
}

/// This member's copy of the replicated state, as applied so far: the handle the rest of the
/// node reads the store through.
pub struct Replica {
    data: RwLock<SmData>,
    /// Writes between snapshots (`-snapshotCount`).
    snapshot_every: u64,
    /// Signalled when that many writes were applied since the last snapshot.
    pub snapshot_due: tokio::sync::Notify,
    /// Whether `/v2/auth` is enabled in the applied state, readable without the lock: every
    /// request asks, and with auth off (the usual case) none of them need wait for an apply.
    /// Set under the write lock after every change, so a request that starts after this node
    /// applied a change sees it, as it would under the lock.
    auth_enabled: AtomicBool,
    /// The index of the last applied entry, readable without a lock (stored with `waiters`
    /// held, so a waiter that checks it under that lock cannot miss its wake-up).
    applied: AtomicU64,
    /// Who waits for an index to be applied here.
    waiters: Mutex<Waiters>,
}

/// Indexes waited for at which the waiters' senders left behind by waits that gave up are
/// cleared out.
const MAX_WAITING_INDEXES: usize = 4096;

/// Tasks waiting until this member has applied an index (a write forwarded to the leader, a
/// quorum read), by index: the apply that reaches an index wakes exactly its waiters, once.
#[derive(Default)]
struct Waiters {
    closed: bool,
    by_index: BTreeMap<u64, Vec<oneshot::Sender<()>>>,
}

impl Replica {
    /// Wait until this member has applied `index`, at most `timeout`. False when the time ran
    /// out or applying stopped for good ([`Replica::stop_waiters`]).
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> bool {
        if self.applied.load(Ordering::Acquire) >= index {
            return true;
        }
        let rx = {
            let mut w = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
            if self.applied.load(Ordering::Acquire) >= index {
                return true;
            }
            if w.closed {
                return false;
            }
            // A waiter that gave up leaves its sender behind until its index is applied;
            // while applying lags far behind, clear those out now and then.
            if w.by_index.len() >= MAX_WAITING_INDEXES {
                w.by_index.retain(|_, txs| {
                    txs.retain(|tx| !tx.is_closed());
                    !txs.is_empty()
                });
            }
            let (tx, rx) = oneshot::channel();
            w.by_index.entry(index).or_default().push(tx);
            rx
        };
        matches!(tokio::time::timeout(timeout, rx).await, Ok(Ok(())))
    }

    /// Nothing more will be applied here (Raft's core stopped or was shut down, or this
    /// member was removed): refuse every waiter now instead of at its deadline.
    pub fn stop_waiters(&self) {
        let mut w = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        w.closed = true;
        w.by_index.clear();
    }

    pub fn read(&self) -> RwLockReadGuard<'_, SmData> {
        self.data.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, SmData> {
        self.data.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Is auth enabled in the applied state? (Without taking the lock.)
    pub fn auth_enabled(&self) -> bool {
        self.auth_enabled.load(Ordering::Acquire)
    }

    /// Publish what lock-free readers see of `d`; call with `d` still locked for writing.
    fn publish(&self, d: &SmData) {
        self.auth_enabled
            .store(d.state.auth.enabled(), Ordering::Release);
        let index = d.last_applied.map_or(0, |l| l.index);
        let ready = {
            let mut w = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
            let applied = self.applied.load(Ordering::Acquire).max(index);
            self.applied.store(applied, Ordering::Release);
            match w.by_index.first_key_value() {
                Some((&first, _)) if first <= applied => {
                    let later = w.by_index.split_off(&(applied + 1));
                    std::mem::replace(&mut w.by_index, later)
                }
                _ => return,
            }
        };
        for tx in ready.into_values().flatten() {
            let _ = tx.send(());
        }
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

pub struct StateMachine {
    replica: Arc<Replica>,
    disk: Disk,
    /// Counts snapshots built by this process, to keep snapshot ids unique.
    built: u64,
    /// How far this node's log is durable: an entry is applied only once it is (a leader
    /// may commit before its own sync is done, see `log_store`).
    durable: Option<Durable>,
}

impl StateMachine {
    /// Apply an entry only once `durable` has reached it.
    pub fn apply_when_durable(&mut self, durable: Durable) {
        self.durable = Some(durable);
    }

    /// Open the state machine, loading the last snapshot saved in `disk` if there is one.
    /// Blocking.
    pub fn open(
        disk: Disk,
        history_size: usize,
        snapshot_every: u64,
    ) -> Result<(StateMachine, Arc<Replica>), crate::error::Error> {
        let mut data = SmData {
            writes_since_snapshot: 0,
            state: State::new(history_size),
            last_applied: None,
            membership: Default::default(),
        };
        let storage_err = |e: String| {
            crate::error::Error::Storage(format!("{}: snapshot: {e}", disk.path().display()))
        };
        if let Some((meta, stored)) =
            snapshot::current(&disk).map_err(|e| storage_err(e.to_string()))?
        {
            let loading = std::time::Instant::now();
            let snap = match stored {
                Stored::Chunks { generation, len } => {
                    snapshot::read_ahead(&disk, generation, len, |mut r| snapshot::decode(&mut r))
                        .map_err(|e| storage_err(e.to_string()))?
                }
                Stored::Legacy(bytes) => snapshot::decode(&mut bytes.as_slice()),
            }
            .map_err(storage_err)?;
            data.state
                .restore(snap)
                .map_err(|e| storage_err(e.to_string()))?;
            data.last_applied = meta.last_log_id;
            data.membership = meta.last_membership;
            tracing::info!(
                log_index = meta.last_log_id.map_or(0, |l| l.index),
                ms = loading.elapsed().as_millis(),
                "store loaded from the snapshot"
            );
        }
        let applied = data.last_applied.map_or(0, |l| l.index);
        let replica = Arc::new(Replica {
            auth_enabled: AtomicBool::new(data.state.auth.enabled()),
            applied: AtomicU64::new(applied),
            waiters: Default::default(),
            data: RwLock::new(data),
            snapshot_every,
            snapshot_due: Default::default(),
        });
        Ok((
            StateMachine {
                replica: replica.clone(),
                disk,
                built: 0,
                durable: None,
            },
            replica,
        ))
    }

    /// The directory a received snapshot is spooled into.
    fn spool_dir(&self) -> std::path::PathBuf {
        self.disk
            .path()
            .parent()
            .map_or_else(|| std::path::PathBuf::from("."), |p| p.to_path_buf())
    }
}

/// Runs blocking storage work on Tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(format!("snapshot task failed: {e}")))
}

/// Runs `f` on a thread of its own at the lowest CPU priority: building a snapshot of a large
/// store takes a core for a few hundred milliseconds, and client requests come first (at full
/// priority the build stalled writes for ~60 ms on a busy 2-core machine).
async fn in_background<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("snapshot".into())
        .spawn(move || {
            // SAFETY: setpriority only reads its integer arguments; a thread id names this
            // thread alone on Linux. Failing to lower the priority is harmless.
            unsafe {
                let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
                libc::setpriority(libc::PRIO_PROCESS, tid, 19);
            }
            let _ = tx.send(f());
        })
        .map_err(|e| format!("cannot start the snapshot thread: {e}"))?;
    rx.await
        .unwrap_or_else(|_| Err("the snapshot thread failed".into()))
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let d = self.replica.read();
        Ok((d.last_applied, d.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<BatchResult>, StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<_> = entries.into_iter().collect();
        if let (Some(durable), Some(last)) = (&self.durable, entries.last()) {
            let last = last.log_id;
            durable
                .reached(last.index)
                .await
                .map_err(|e| StorageIOError::apply(last, &std::io::Error::other(e)))?;
        }
        // Usually the lock is free and applying takes microseconds; only when a long read
        // holds it does the wait move off the worker.
        let results = match self.replica.data.try_write() {
            Ok(mut d) => apply_to(&mut d, entries, &self.replica),
            Err(_) => off_worker(|| apply_to(&mut self.replica.write(), entries, &self.replica)),
        };
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        // Between two applies (openraft calls this from the state machine's task): an O(1)
        // copy of the store that later applies do not change.
        self.built += 1;
        let mut d = self.replica.write();
        d.writes_since_snapshot = 0;
        SnapshotBuilder {
            store: d.state.snapshot(),
            last_applied: d.last_applied,
            membership: d.membership.clone(),
            disk: self.disk.clone(),
            seq: self.built,
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotData>, StorageError> {
        let data = SnapshotData::receive_into(&self.spool_dir())
            .await
            .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        Ok(Box::new(data))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<SnapshotData>,
    ) -> Result<(), StorageError> {
        let signature = meta.signature();
        let err = |e: String| -> StorageError {
            StorageIOError::read_snapshot(Some(signature.clone()), &std::io::Error::other(e)).into()
        };
        let mut reader = snapshot
            .into_reader()
            .await
            .map_err(|e| err(e.to_string()))?;
        let (disk, m) = (self.disk.clone(), meta.clone());
        // Check it decodes, then keep the very bytes received - durable first: if we crash
        // after this, the restart loads this snapshot.
        let snap = blocking(move || {
            let snap = snapshot::decode(&mut reader)?;
            State::verify(&snap).map_err(|e| format!("snapshot: {e}"))?;
            reader
                .seek(std::io::SeekFrom::Start(0))
                .map_err(|e| e.to_string())?;
            snapshot::save(&disk, &m, |w| std::io::copy(&mut reader, w).map(|_| ()))
                .map_err(|e| e.to_string())?;
            Ok(snap)
        })
        .await
        .map_err(err)?;
        off_worker(|| {
            let mut d = self.replica.write();
            d.writes_since_snapshot = 0;
            // Verified when it was decoded: this cannot fail.
            if let Err(e) = d.state.restore(snap) {
                tracing::error!(error = %e, "installing a snapshot");
            }
            d.last_applied = meta.last_log_id;
            d.membership = meta.last_membership.clone();
            self.replica.publish(&d);
        });
        tracing::info!(
            index = meta.last_log_id.map(|l| l.index),
            "snapshot installed"
        );
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let disk = self.disk.clone();
        let loaded = blocking(move || {
            let Some((meta, stored)) = snapshot::current(&disk).map_err(|e| e.to_string())? else {
                return Ok(None);
            };
            let data = match stored {
                Stored::Chunks { generation, len } => SnapshotData::Stored(
                    ChunkReader::open(&disk, generation, len).map_err(|e| e.to_string())?,
                ),
                Stored::Legacy(bytes) => SnapshotData::Memory(std::io::Cursor::new(bytes)),
            };
            Ok(Some((meta, data)))
        })
        .await
        .map_err(|e| StorageIOError::read_snapshot(None, &std::io::Error::other(e)))?;
        Ok(loaded.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(data),
        }))
    }
}

/// Apply committed entries to the locked data, in order.
fn apply_to(
    d: &mut SmData,
    entries: Vec<Entry<TypeConfig>>,
    replica: &Replica,
) -> Vec<BatchResult> {
    let mut out = Vec::new();
    for entry in entries {
        d.last_applied = Some(entry.log_id);
        match entry.payload {
            EntryPayload::Blank => out.push(BatchResult::default()),
            EntryPayload::Normal(batch) => {
                d.state.store.set_write_time(batch.at);
                let results = batch.cmds.iter().map(|c| c.apply(&mut d.state)).collect();
                out.push(BatchResult(results));
                d.writes_since_snapshot += batch.cmds.len() as u64;
            }
            EntryPayload::Membership(m) => {
                d.membership = StoredMembership::new(Some(entry.log_id), m);
                out.push(BatchResult::default());
            }
        }
    }
    replica.publish(d);
    if d.writes_since_snapshot >= replica.snapshot_every {
        // `RaftNode` asks openraft for a snapshot; until one is taken, reminders are free.
        replica.snapshot_due.notify_one();
    }
    out
}

/// A snapshot taken between two applies, to be encoded and saved off the apply path.
pub struct SnapshotBuilder {
    store: StoreSnapshot,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    disk: Disk,
    seq: u64,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let snapshot_id = match self.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, self.seq),
            None => format!("0-0-{}", self.seq),
        };
        let meta = SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
            snapshot_id,
        };
        let (disk, m, store) = (self.disk.clone(), meta.clone(), self.store.clone());
        let started = std::time::Instant::now();
        let (len, reader) = in_background(move || {
            let len = snapshot::save(&disk, &m, |mut w| store.encode(&mut w))
                .map_err(|e| e.to_string())?;
            let gen_reader = match snapshot::current(&disk).map_err(|e| e.to_string())? {
                Some((_, Stored::Chunks { generation, len })) => {
                    ChunkReader::open(&disk, generation, len).map_err(|e| e.to_string())?
                }
                _ => return Err("the snapshot just saved is not there".into()),
            };
            Ok((len, gen_reader))
        })
        .await
        .map_err(|e| {
            StorageIOError::write_snapshot(Some(meta.signature()), &std::io::Error::other(e))
        })?;
        tracing::info!(
            index = self.last_applied.map(|l| l.index),
            bytes = len,
            took_ms = started.elapsed().as_millis() as u64,
            "snapshot saved"
        );
        Ok(Snapshot {
            meta,
            snapshot: Box::new(SnapshotData::Stored(reader)),
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

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::CommittedLeaderId;

    fn replica() -> Arc<Replica> {
        Arc::new(Replica {
            data: RwLock::new(SmData {
                writes_since_snapshot: 0,
                state: State::new(10),
                last_applied: None,
                membership: Default::default(),
            }),
            snapshot_every: 1000,
            snapshot_due: Default::default(),
            auth_enabled: AtomicBool::new(false),
            applied: AtomicU64::new(0),
            waiters: Default::default(),
        })
    }

    fn apply_up_to(r: &Replica, index: u64) {
        let mut d = r.write();
        d.last_applied = Some(LogId::new(CommittedLeaderId::new(1, 1), index));
        r.publish(&d);
    }

    #[tokio::test]
    async fn waiters_wake_when_their_index_is_applied_and_not_before() {
        let r = replica();
        apply_up_to(&r, 3);
        // Already applied: no wait.
        assert!(r.wait_applied(3, Duration::ZERO).await);
        let wait = |i: u64, ms: u64| {
            let r = r.clone();
            tokio::spawn(async move { r.wait_applied(i, Duration::from_millis(ms)).await })
        };
        let (w5, w6, w9) = (wait(5, 5000), wait(6, 5000), wait(9, 50));
        tokio::task::yield_now().await;
        apply_up_to(&r, 4);
        tokio::task::yield_now().await;
        assert!(!w5.is_finished() && !w6.is_finished());
        apply_up_to(&r, 6);
        assert!(w5.await.unwrap() && w6.await.unwrap());
        assert_eq!(r.waiters.lock().unwrap().by_index.len(), 1);
        // Not applied in time.
        assert!(!w9.await.unwrap());
        // Applying stopped for good: refused at once, not at the deadline.
        let started = std::time::Instant::now();
        let w12 = wait(12, 5000);
        tokio::task::yield_now().await;
        r.stop_waiters();
        assert!(!w12.await.unwrap());
        assert!(!r.wait_applied(13, Duration::from_secs(5)).await);
        assert!(started.elapsed() < Duration::from_secs(1));
        // What was applied stays applied.
        assert!(r.wait_applied(6, Duration::ZERO).await);
    }

    #[tokio::test]
    async fn waits_that_gave_up_do_not_pile_up() {
        use futures_util::FutureExt;
        let r = replica();
        // Each waiter gives up (its future dropped) before its index is applied.
        for i in 0..10_000 {
            assert!(
                r.wait_applied(100 + i, Duration::from_secs(5))
                    .now_or_never()
                    .is_none()
            );
        }
        assert!(r.waiters.lock().unwrap().by_index.len() <= MAX_WAITING_INDEXES);
    }
}
