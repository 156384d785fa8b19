//! The durable Raft log of a node, on redb.
//!
//! [`LogStore`] implements openraft 0.9's storage-v2 [`RaftLogStorage`] and [`RaftLogReader`] on
//! top of the node's data file ([`Disk`]). Log entries live in the [`LOGS`] table keyed by index
//! (value: serde_json of the entry); the vote, the committed hint and the purge point live in the
//! [`META`] table under [`META_VOTE`], [`META_COMMITTED`] and [`META_LAST_PURGED`] (serde_json).
//!
//! # What must stay true
//!
//! * **Durable before the callback.** [`RaftLogStorage::append`] commits with
//!   `Durability::Immediate` (one fsync) and only then calls
//!   [`LogFlushed::log_io_completed`]. When `append` returns, the entries are committed, so they
//!   are readable through any [`LogStore`] clone, and they are on disk. `save_vote`, `truncate`
//!   and `purge` are also durable before they return. Only the committed hint
//!   (`save_committed`) is kept in memory and written inside the next append's transaction: a
//!   commit costs no transaction of its own. Openraft treats it as a lower bound, so losing the
//!   last few updates in a crash is harmless.
//! * **One transaction per append: this is the group commit.** Every entry of one `append` call
//!   goes into one redb write transaction and costs one fsync together. Never commit per entry.
//!   On the leader, openraft 0.9 hands over one entry per call, so the application gets group
//!   commit by packing many client commands into one entry. Followers receive whole AppendEntries
//!   payloads (up to `max_payload_entries`) in one call.
//! * **Write I/O happens in order.** Openraft requires that a later write (vote or log) never
//!   lands before an earlier one. Each write method waits for its own transaction to commit
//!   before it returns, openraft issues them one at a time through `&mut self`, and redb admits one
//!   write transaction at a time. So writes reach the file in call order. Do not make a write
//!   fire-and-forget without keeping this order.
//! * **No holes.** `truncate` deletes `[index, ∞)` and `purge` deletes `[0, index]`, each in one
//!   transaction. `purge` records the purge point in the same transaction, so
//!   `get_log_state` never shows a gap. When the log is empty, `last_log_id` falls back to
//!   `last_purged_log_id`.
//!
//! # Threads
//!
//! redb's `begin_write` blocks the thread while another write transaction is open (the state
//! machine or snapshot code may share this file), and a durable commit blocks for the fsync.
//! All writes therefore run in `tokio::task::spawn_blocking`; this store needs a Tokio runtime.
//! Reads are MVCC snapshots that never wait for a writer, so they run inline on the calling task.
//! No redb transaction is held across an `.await`.

use std::fmt::Debug;
use std::io;
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    ErrorSubject, ErrorVerb, LogId, RaftLogId, RaftLogReader, RaftTypeConfig, StorageError,
    StorageIOError, Vote,
};
use redb::ReadableTable;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::disk::{Disk, DiskError, LOGS, META, META_COMMITTED, META_LAST_PURGED, META_VOTE};

/// The Raft log, vote and committed hint of one node, stored in its [`Disk`].
///
/// Cheap to clone; clones share the database. The clone returned by `get_log_reader` is used by
/// the replication tasks for concurrent reads.
pub struct LogStore<C: RaftTypeConfig> {
    disk: Disk,
    /// The latest committed hint not yet written (encoded): written by the next append's
    /// transaction, so saving it costs no transaction of its own.
    committed: Arc<Mutex<Option<Vec<u8>>>>,
    _config: PhantomData<C>,
}

impl<C: RaftTypeConfig> Clone for LogStore<C> {
    fn clone(&self) -> Self {
        LogStore {
            disk: self.disk.clone(),
            committed: self.committed.clone(),
            _config: PhantomData,
        }
    }
}

impl<C: RaftTypeConfig> Debug for LogStore<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore")
            .field("path", &self.disk.path())
            .finish()
    }
}

impl<C: RaftTypeConfig> LogStore<C> {
    /// Builds the log store on an open [`Disk`].
    ///
    /// Decodes the stored vote, purge point, committed hint and last entry once, so that a file
    /// written by an incompatible build fails here with a clear error instead of inside Raft.
    pub fn new(disk: Disk) -> Result<Self, DiskError> {
        let store = LogStore {
            disk,
            committed: Arc::new(Mutex::new(None)),
            _config: PhantomData,
        };
        store.load_meta::<Vote<C::NodeId>>(META_VOTE)?;
        store.load_meta::<Option<LogId<C::NodeId>>>(META_COMMITTED)?;
        store.log_state()?;
        Ok(store)
    }

    /// The data file this store writes to.
    pub fn disk(&self) -> &Disk {
        &self.disk
    }

    /// Reads and decodes one META record.
    fn load_meta<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, DiskError> {
        match self.disk.read_meta(key)? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| self.disk.codec_err(key, e)),
        }
    }

    /// Encodes and writes one META record in its own transaction (on the blocking pool).
    async fn store_meta<T: Serialize>(
        &self,
        key: &'static str,
        value: &T,
        durable: bool,
    ) -> Result<(), DiskError> {
        let bytes = serde_json::to_vec(value).map_err(|e| self.disk.codec_err(key, e))?;
        self.blocking(move |disk| disk.write_meta(key, &bytes, durable))
            .await
    }

    /// Runs a blocking closure (a redb write) on Tokio's blocking pool and waits for it.
    async fn blocking<T, F>(&self, f: F) -> Result<T, DiskError>
    where
        T: Send + 'static,
        F: FnOnce(&Disk) -> Result<T, DiskError> + Send + 'static,
    {
        let disk = self.disk.clone();
        match tokio::task::spawn_blocking(move || f(&disk)).await {
            Ok(result) => result,
            Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
            Err(join) => Err(self.disk.io_err(redb::Error::Io(io::Error::other(format!(
                "storage task did not run: {join}"
            ))))),
        }
    }

    /// Decodes one stored log entry.
    fn decode_entry(&self, index: u64, bytes: &[u8]) -> Result<C::Entry, DiskError> {
        serde_json::from_slice(bytes)
            .map_err(|e| self.disk.codec_err(&format!("log entry {index}"), e))
    }

    /// The stored log state; `last_log_id` falls back to the purge point when the log is empty.
    fn log_state(&self) -> Result<LogState<C>, DiskError> {
        let last_purged = self.load_meta::<LogId<C::NodeId>>(META_LAST_PURGED)?;
        let txn = self.disk.begin_read()?;
        let table = txn.open_table(LOGS).map_err(|e| self.disk.io_err(e))?;
        let last = match table.last().map_err(|e| self.disk.io_err(e))? {
            Some((k, v)) => Some(
                self.decode_entry(k.value(), v.value())?
                    .get_log_id()
                    .clone(),
            ),
            None => None,
        };
        Ok(LogState {
            last_log_id: last.or_else(|| last_purged.clone()),
            last_purged_log_id: last_purged,
        })
    }

    /// Entries with index in `[lo, hi)` (`hi = None`: unbounded) that are present.
    fn read_entries(&self, lo: u64, hi: Option<u64>) -> Result<Vec<C::Entry>, DiskError> {
        if hi.is_some_and(|hi| hi <= lo) {
            return Ok(Vec::new());
        }
        let txn = self.disk.begin_read()?;
        let table = txn.open_table(LOGS).map_err(|e| self.disk.io_err(e))?;
        let iter = match hi {
            Some(hi) => table.range(lo..hi),
            None => table.range(lo..),
        }
        .map_err(|e| self.disk.io_err(e))?;
        let mut entries = Vec::new();
        for item in iter {
            let (k, v) = item.map_err(|e| self.disk.io_err(e))?;
            entries.push(self.decode_entry(k.value(), v.value())?);
        }
        Ok(entries)
    }
}

/// Normalises any `RangeBounds<u64>` into a half-open `[lo, hi)`, `hi = None` meaning unbounded.
fn half_open<RB: RangeBounds<u64>>(range: &RB) -> Option<(u64, Option<u64>)> {
    let lo = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.checked_add(1)?,
        Bound::Unbounded => 0,
    };
    let hi = match range.end_bound() {
        Bound::Included(&e) => e.checked_add(1),
        Bound::Excluded(&e) => Some(e),
        Bound::Unbounded => None,
    };
    Some((lo, hi))
}

fn io_error<NID: openraft::NodeId>(
    subject: ErrorSubject<NID>,
    verb: ErrorVerb,
    e: &DiskError,
) -> StorageError<NID> {
    StorageIOError::new(subject, verb, e).into()
}

impl<C: RaftTypeConfig> RaftLogReader<C> for LogStore<C> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<C::Entry>, StorageError<C::NodeId>> {
        let Some((lo, hi)) = half_open(&range) else {
            return Ok(Vec::new());
        };
        self.read_entries(lo, hi)
            .map_err(|e| StorageIOError::read_logs(&e).into())
    }
}

impl<C: RaftTypeConfig> RaftLogStorage<C> for LogStore<C> {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<C>, StorageError<C::NodeId>> {
        self.log_state()
            .map_err(|e| StorageIOError::read_logs(&e).into())
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        self.store_meta(META_VOTE, vote, true)
            .await
            .map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<C::NodeId>>, StorageError<C::NodeId>> {
        self.load_meta(META_VOTE)
            .map_err(|e| StorageIOError::read_vote(&e).into())
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<C::NodeId>>,
    ) -> Result<(), StorageError<C::NodeId>> {
        // A hint only (openraft treats it as a lower bound): kept in memory and written by the
        // next append's transaction, so a commit costs no transaction and no thread hop.
        let bytes = serde_json::to_vec(&committed).map_err(|e| {
            io_error(
                ErrorSubject::Store,
                ErrorVerb::Write,
                &self.disk.codec_err(META_COMMITTED, e),
            )
        })?;
        *self.committed.lock().unwrap_or_else(|e| e.into_inner()) = Some(bytes);
        Ok(())
    }

    async fn read_committed(
        &mut self,
    ) -> Result<Option<LogId<C::NodeId>>, StorageError<C::NodeId>> {
        let pending = self
            .committed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(bytes) = pending {
            return serde_json::from_slice::<Option<LogId<C::NodeId>>>(&bytes).map_err(|e| {
                io_error(
                    ErrorSubject::Store,
                    ErrorVerb::Read,
                    &self.disk.codec_err(META_COMMITTED, e),
                )
            });
        }
        self.load_meta::<Option<LogId<C::NodeId>>>(META_COMMITTED)
            .map(Option::flatten)
            .map_err(|e| io_error(ErrorSubject::Store, ErrorVerb::Read, &e))
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<C>,
    ) -> Result<(), StorageError<C::NodeId>>
    where
        I: IntoIterator<Item = C::Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<C::Entry> = entries.into_iter().collect();
        let count = entries.len();
        let committed = self
            .committed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();

        // All entries of this call: one transaction, one fsync (Durability::Immediate).
        let result = self
            .blocking(move |disk| {
                let txn = disk.begin_write(true)?;
                {
                    let mut table = txn.open_table(LOGS).map_err(|e| disk.io_err(e))?;
                    for entry in &entries {
                        let index = entry.get_log_id().index;
                        let bytes = serde_json::to_vec(entry)
                            .map_err(|e| disk.codec_err(&format!("log entry {index}"), e))?;
                        table
                            .insert(index, bytes.as_slice())
                            .map_err(|e| disk.io_err(e))?;
                    }
                    if let Some(c) = &committed {
                        let mut meta = txn.open_table(META).map_err(|e| disk.io_err(e))?;
                        meta.insert(META_COMMITTED, c.as_slice())
                            .map_err(|e| disk.io_err(e))?;
                    }
                }
                txn.commit().map_err(|e| disk.io_err(e))
            })
            .await;

        match result {
            Ok(()) => {
                tracing::trace!(count, "appended log entries");
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                tracing::error!(count, error = %e, "appending log entries failed");
                callback.log_io_completed(Err(io::Error::other(e.to_string())));
                Err(StorageIOError::write_logs(&e).into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        tracing::debug!(%log_id, "truncating log since");
        let since = log_id.index;
        self.blocking(move |disk| {
            let txn = disk.begin_write(true)?;
            {
                let mut table = txn.open_table(LOGS).map_err(|e| disk.io_err(e))?;
                table
                    .retain_in(since.., |_, _| false)
                    .map_err(|e| disk.io_err(e))?;
            }
            txn.commit().map_err(|e| disk.io_err(e))
        })
        .await
        .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Delete, &e))
    }

    async fn purge(&mut self, log_id: LogId<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        tracing::debug!(%log_id, "purging log up to");
        let upto = log_id.index;
        let purged = serde_json::to_vec(&log_id)
            .map_err(|e| self.disk.codec_err(META_LAST_PURGED, e))
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Delete, &e))?;
        self.blocking(move |disk| {
            let txn = disk.begin_write(true)?;
            {
                let mut meta = txn.open_table(META).map_err(|e| disk.io_err(e))?;
                meta.insert(META_LAST_PURGED, purged.as_slice())
                    .map_err(|e| disk.io_err(e))?;
                let mut logs = txn.open_table(LOGS).map_err(|e| disk.io_err(e))?;
                logs.retain_in(..=upto, |_, _| false)
                    .map_err(|e| disk.io_err(e))?;
            }
            txn.commit().map_err(|e| disk.io_err(e))
        })
        .await
        .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Delete, &e))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::io::Cursor;
    use std::path::{Path, PathBuf};
    use std::sync::{Arc, Mutex};

    use openraft::storage::{
        RaftLogReaderExt, RaftLogStorageExt, RaftSnapshotBuilder, RaftStateMachine, Snapshot,
    };
    use openraft::testing::{StoreBuilder, Suite};
    use openraft::{
        BasicNode, CommittedLeaderId, Entry, EntryPayload, SnapshotMeta, StoredMembership,
    };
    use redb::ReadableTableMetadata;
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Put {
        key: String,
        value: String,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Prev(Option<String>);

    openraft::declare_raft_types!(
        pub TestConfig:
            D = Put,
            R = Prev,
    );

    type Store = LogStore<TestConfig>;

    /// What the in-memory state machine holds and its snapshots carry.
    #[derive(Debug, Default, Clone, Serialize, Deserialize)]
    struct SmData {
        last_applied: Option<LogId<u64>>,
        membership: StoredMembership<u64, BasicNode>,
        kv: BTreeMap<String, String>,
    }

    #[derive(Debug, Default)]
    struct SmInner {
        data: SmData,
        snapshot: Option<(SnapshotMeta<u64, BasicNode>, Vec<u8>)>,
        built: u64,
    }

    /// A minimal in-memory state machine, only here to drive the openraft storage suite.
    #[derive(Debug, Clone, Default)]
    struct MemSm(Arc<Mutex<SmInner>>);

    impl RaftSnapshotBuilder<TestConfig> for MemSm {
        async fn build_snapshot(&mut self) -> Result<Snapshot<TestConfig>, StorageError<u64>> {
            let mut inner = self.0.lock().unwrap();
            inner.built += 1;
            let bytes = serde_json::to_vec(&inner.data)
                .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
            let meta = SnapshotMeta {
                last_log_id: inner.data.last_applied,
                last_membership: inner.data.membership.clone(),
                snapshot_id: format!("snap-{}", inner.built),
            };
            inner.snapshot = Some((meta.clone(), bytes.clone()));
            Ok(Snapshot {
                meta,
                snapshot: Box::new(Cursor::new(bytes)),
            })
        }
    }

    impl RaftStateMachine<TestConfig> for MemSm {
        type SnapshotBuilder = Self;

        async fn applied_state(
            &mut self,
        ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>), StorageError<u64>>
        {
            let inner = self.0.lock().unwrap();
            Ok((inner.data.last_applied, inner.data.membership.clone()))
        }

        async fn apply<I>(&mut self, entries: I) -> Result<Vec<Prev>, StorageError<u64>>
        where
            I: IntoIterator<Item = Entry<TestConfig>> + Send,
            I::IntoIter: Send,
        {
            let mut inner = self.0.lock().unwrap();
            let mut replies = Vec::new();
            for entry in entries {
                inner.data.last_applied = Some(entry.log_id);
                let reply = match entry.payload {
                    EntryPayload::Blank => Prev(None),
                    EntryPayload::Normal(put) => Prev(inner.data.kv.insert(put.key, put.value)),
                    EntryPayload::Membership(m) => {
                        inner.data.membership = StoredMembership::new(Some(entry.log_id), m);
                        Prev(None)
                    }
                };
                replies.push(reply);
            }
            Ok(replies)
        }

        async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
            self.clone()
        }

        async fn begin_receiving_snapshot(
            &mut self,
        ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<u64>> {
            Ok(Box::new(Cursor::new(Vec::new())))
        }

        async fn install_snapshot(
            &mut self,
            meta: &SnapshotMeta<u64, BasicNode>,
            snapshot: Box<Cursor<Vec<u8>>>,
        ) -> Result<(), StorageError<u64>> {
            let bytes = snapshot.into_inner();
            let data: SmData = serde_json::from_slice(&bytes)
                .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
            let mut inner = self.0.lock().unwrap();
            inner.data = SmData {
                last_applied: meta.last_log_id,
                membership: meta.last_membership.clone(),
                kv: data.kv,
            };
            inner.snapshot = Some((meta.clone(), bytes));
            Ok(())
        }

        async fn get_current_snapshot(
            &mut self,
        ) -> Result<Option<Snapshot<TestConfig>>, StorageError<u64>> {
            let inner = self.0.lock().unwrap();
            Ok(inner.snapshot.as_ref().map(|(meta, bytes)| Snapshot {
                meta: meta.clone(),
                snapshot: Box::new(Cursor::new(bytes.clone())),
            }))
        }
    }

    /// Builds a fresh store in a temporary directory, removed when the guard drops.
    struct Builder;

    impl StoreBuilder<TestConfig, Store, MemSm, tempfile::TempDir> for Builder {
        async fn build(&self) -> Result<(tempfile::TempDir, Store, MemSm), StorageError<u64>> {
            let dir = tempfile::tempdir().map_err(|e| StorageIOError::write(&e))?;
            let disk =
                Disk::open(&dir.path().join("etcd.redb")).map_err(|e| StorageIOError::write(&e))?;
            let store = LogStore::new(disk).map_err(|e| StorageIOError::write(&e))?;
            Ok((dir, store, MemSm::default()))
        }
    }

    #[test]
    fn openraft_storage_suite() {
        let started = std::time::Instant::now();
        Suite::test_all(Builder).unwrap();
        eprintln!("openraft storage suite passed in {:?}", started.elapsed());
    }

    fn log_id(term: u64, index: u64) -> LogId<u64> {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn put(term: u64, index: u64) -> Entry<TestConfig> {
        Entry {
            log_id: log_id(term, index),
            payload: EntryPayload::Normal(Put {
                key: format!("k{index}"),
                value: format!("v{index}"),
            }),
        }
    }

    fn open(path: &Path) -> Store {
        LogStore::new(Disk::open(path).unwrap()).unwrap()
    }

    #[tokio::test]
    async fn empty_store_state() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(&dir.path().join("etcd.redb"));
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id, None);
        assert_eq!(state.last_purged_log_id, None);
        assert_eq!(store.read_vote().await.unwrap(), None);
        assert_eq!(store.read_committed().await.unwrap(), None);
        assert!(store.try_get_log_entries(..).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn ranges_and_batches() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(&dir.path().join("etcd.redb"));
        // One call, many entries: one transaction.
        store
            .blocking_append((1..=300).map(|i| put(1, i)))
            .await
            .unwrap();
        let mut reader = store.get_log_reader().await;

        let idx = |v: Vec<Entry<TestConfig>>| v.iter().map(|e| e.log_id.index).collect::<Vec<_>>();
        assert_eq!(
            idx(reader.try_get_log_entries(5..8).await.unwrap()),
            [5, 6, 7]
        );
        assert_eq!(
            idx(reader.try_get_log_entries(5..=7).await.unwrap()),
            [5, 6, 7]
        );
        assert_eq!(
            idx(reader.try_get_log_entries(298..).await.unwrap()),
            [298, 299, 300]
        );
        assert_eq!(reader.try_get_log_entries(..).await.unwrap().len(), 300);
        assert!(reader.try_get_log_entries(8..8).await.unwrap().is_empty());
        #[allow(clippy::reversed_empty_ranges)]
        let inverted = reader.try_get_log_entries(9..3).await.unwrap();
        assert!(inverted.is_empty());
        let beyond = (Bound::Excluded(u64::MAX), Bound::Unbounded);
        assert!(reader.try_get_log_entries(beyond).await.unwrap().is_empty());
        assert_eq!(
            reader
                .try_get_log_entries(0..=u64::MAX)
                .await
                .unwrap()
                .len(),
            300
        );
        assert_eq!(reader.get_log_id(42).await.unwrap(), log_id(1, 42));

        // Truncate [250, ∞) then overwrite from 250 with a new term.
        store.truncate(log_id(1, 250)).await.unwrap();
        assert_eq!(
            store.get_log_state().await.unwrap().last_log_id,
            Some(log_id(1, 249))
        );
        store
            .blocking_append((250..=260).map(|i| put(2, i)))
            .await
            .unwrap();
        assert_eq!(
            store.get_log_state().await.unwrap().last_log_id,
            Some(log_id(2, 260))
        );

        // Purge everything: last_log_id falls back to last_purged.
        store.purge(log_id(2, 260)).await.unwrap();
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id(2, 260)));
        assert_eq!(state.last_log_id, Some(log_id(2, 260)));
        assert!(reader.try_get_log_entries(..).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn state_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data").join("etcd.redb");
        let vote = Vote::new_committed(3, 2);
        let before;
        let entries_before;
        {
            let mut store = open(&path);
            store.blocking_append([put(1, 1)]).await.unwrap();
            store
                .blocking_append((2..=20).map(|i| put(2, i)))
                .await
                .unwrap();
            store.save_vote(&Vote::new(2, 1)).await.unwrap();
            store.save_vote(&vote).await.unwrap();
            store.purge(log_id(2, 5)).await.unwrap();
            store.truncate(log_id(2, 18)).await.unwrap();
            store.save_committed(Some(log_id(2, 12))).await.unwrap();
            // A durable commit after the committed hint persists the hint too.
            store.blocking_append([put(3, 18)]).await.unwrap();
            before = store.get_log_state().await.unwrap();
            entries_before = store.try_get_log_entries(..).await.unwrap();
            // `store` and every clone drop here, which closes the file.
        }
        assert_eq!(before.last_purged_log_id, Some(log_id(2, 5)));
        assert_eq!(before.last_log_id, Some(log_id(3, 18)));
        assert_eq!(entries_before.len(), 13); // 6..=18

        let mut store = open(&path);
        assert_eq!(store.get_log_state().await.unwrap(), before);
        assert_eq!(store.read_vote().await.unwrap(), Some(vote));
        assert_eq!(store.read_committed().await.unwrap(), Some(log_id(2, 12)));
        assert_eq!(store.try_get_log_entries(..).await.unwrap(), entries_before);
        assert!(store.try_get_log_entries(..=5).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn appended_entries_are_in_the_file_when_append_returns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("etcd.redb");
        {
            let mut store = open(&path);
            // blocking_append returns only after `append` returned and the callback fired.
            store
                .blocking_append((1..=64).map(|i| put(1, i)))
                .await
                .unwrap();
        }
        // A fresh handle on the same file sees every entry, byte for byte as a raw row.
        let disk = Disk::open(&path).unwrap();
        let txn = disk.begin_read().unwrap();
        let table = txn.open_table(LOGS).unwrap();
        assert_eq!(table.len().unwrap(), 64);
        let row = table.get(64).unwrap().unwrap();
        let entry: Entry<TestConfig> = serde_json::from_slice(row.value()).unwrap();
        assert_eq!(entry, put(1, 64));
    }

    #[tokio::test]
    async fn corrupt_record_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("etcd.redb");
        let disk = Disk::open(&path).unwrap();
        disk.write_meta(META_VOTE, b"{not json", true).unwrap();
        let msg = LogStore::<TestConfig>::new(disk).unwrap_err().to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("bad vote record"), "{msg}");
    }

    const CRASH_DIR_ENV: &str = "LOGSTORE_CRASH_TEST_DIR";

    /// Child half of `entries_survive_process_abort` (the same test, re-run in a child process
    /// with CRASH_DIR_ENV set): appends, then dies without closing redb.
    fn crash_child(dir: std::ffi::OsString) -> ! {
        let path = PathBuf::from(dir).join("etcd.redb");
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let mut store = open(&path);
            store.save_vote(&Vote::new_committed(7, 1)).await.unwrap();
            for i in 1..=10 {
                store.blocking_append([put(7, i)]).await.unwrap();
            }
            store
                .blocking_append((11..=100).map(|i| put(7, i)))
                .await
                .unwrap();
        });
        println!("CHILD APPENDED");
        std::process::abort();
    }

    #[test]
    fn entries_survive_process_abort() {
        if let Some(dir) = std::env::var_os(CRASH_DIR_ENV) {
            crash_child(dir);
        }
        let dir = tempfile::tempdir().unwrap();
        let test_path = module_path!().split_once("::").map_or("", |(_, rest)| rest);
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                &format!("{test_path}::entries_survive_process_abort"),
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CRASH_DIR_ENV, dir.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("CHILD APPENDED"),
            "child did not run: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "child should have aborted");

        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let mut store = open(&dir.path().join("etcd.redb"));
            let state = store.get_log_state().await.unwrap();
            assert_eq!(state.last_log_id, Some(log_id(7, 100)));
            assert_eq!(
                store.read_vote().await.unwrap(),
                Some(Vote::new_committed(7, 1))
            );
            let entries = store.get_log_entries(1..=100).await.unwrap();
            assert_eq!(entries.last(), Some(&put(7, 100)));
        });
    }
}
