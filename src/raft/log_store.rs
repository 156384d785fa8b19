//! The durable Raft log of a node, on the write-ahead log (`raft::wal`).
//!
//! [`LogStore`] implements openraft's [`RaftLogStorage`] and [`RaftLogReader`]. Everything it
//! persists is a record in the WAL, in the order openraft asked for it:
//!
//! | record       | body                                   | written by                     |
//! |--------------|----------------------------------------|--------------------------------|
//! | `ENTRY`      | one log entry (`raft::codec`)          | `append` (all entries of a call in one frame) |
//! | `VOTE`       | the vote                               | `save_vote`                    |
//! | `COMMITTED`  | the committed log id (a hint)          | added to the next frame after `save_committed` |
//! | `TRUNCATE`   | first index removed                    | `truncate`                     |
//! | `PURGE`      | last log id removed                    | `purge`                        |
//! | `CHECKPOINT` | vote, committed and purge point so far | first frame of every segment   |
//!
//! Reading the WAL back from the oldest segment replays these records and rebuilds the
//! state: later entries at an index replace earlier ones, `TRUNCATE` and `PURGE` cut, and the
//! `CHECKPOINT` at the start of each segment carries what the removed segments before it said.
//!
//! # What must stay true
//!
//! * **Durable before acknowledged.** `append` writes the entries of one call as one frame,
//!   syncs it (one `fdatasync` for the whole call: group commit) and only then calls
//!   openraft's callback. `save_vote`, `truncate` and `purge` return once their record is
//!   synced.
//! * **One writer, in call order.** Writes go through one [`Writer`] behind a lock, in the
//!   order openraft issues them, so a vote and an append reach the disk in that order.
//!
//! The one exception is a leader with followers: there the durability of its own entries
//! is not needed before it replicates them, only before anything depends on its copy (see
//! [`Durable`]). Its `append` writes the frame, hands the sync to the WAL's sync thread and
//! reports the entries flushed at once, so openraft sends them to the followers while the
//! leader's disk syncs (etcd's leader writes and sends in parallel too). What keeps this
//! safe: the state machine applies an entry only once it is durable here, and an
//! AppendEntries names a commit index only once it is durable here - so nothing acts on a
//! commit (no client is answered, no follower applies) until the leader's copy and a
//! quorum's are on disk, exactly as if the leader had synced first. A follower, a candidate
//! and a single node always sync before they report.
//!
//! The writes block the calling thread for the sync. openraft 0.9's core waits for every
//! append to be flushed before it does anything else, and Raft runs on a runtime of its own
//! (`server`), so blocking there costs nothing that waiting would not; handing the write to
//! another thread and back (measured) cost two thread wake-ups per write.
//! * **No holes.** openraft appends contiguously and truncates before it overwrites; an open
//!   that finds a gap between the purge point and the last entry fails with a clear error.
//! * **A failed write stops the node.** After an I/O error the WAL refuses every later write;
//!   the error is reported to openraft (which stops) and through [`LogStore::failure`] to the
//!   server, which exits. Nothing is acknowledged after it.
//!
//! Recent entries are also kept in memory (up to [`CACHE_BYTES`]): applying and replicating
//! them needs no disk read and no decoding. Older ones are read back from their segment.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, LogId, RaftLogReader, StorageError, StorageIOError, Vote};
use tokio::sync::watch;

use super::codec::{self, CodecError, Dec, Enc};
use super::types::{NodeId, TypeConfig};
use super::wal::{Options, Pos, Synced, Wal, WalError, WalReader};

/// Entry bytes kept in memory beyond what is on disk anyway (tests: small, to exercise reads
/// from disk).
pub const CACHE_BYTES: usize = if cfg!(test) { 64 << 10 } else { 4 << 20 };

mod rec {
    pub const ENTRY: u8 = 1;
    pub const VOTE: u8 = 2;
    pub const COMMITTED: u8 = 3;
    pub const TRUNCATE: u8 = 4;
    pub const PURGE: u8 = 5;
    pub const CHECKPOINT: u8 = 6;
}

type RaftEntry = Entry<TypeConfig>;

/// One log entry as the store knows it.
struct Slot {
    log_id: LogId<NodeId>,
    /// Where its encoded bytes are on disk, once written.
    at: Option<(Pos, u32)>,
    /// The entry itself, while cached.
    entry: Option<RaftEntry>,
    /// Encoded size, for the cache budget.
    size: u32,
}

/// The in-memory state shared by the store, its readers and the writer.
#[derive(Default)]
struct State {
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
    last_purged: Option<LogId<NodeId>>,
    /// The entries by index. openraft keeps them contiguous (its storage test suite also
    /// appends with holes, which a map takes in its stride).
    slots: BTreeMap<u64, Slot>,
    cached_bytes: usize,
    /// Entries below this index are not cached.
    cache_from: u64,
}

impl State {
    fn last_index(&self) -> Option<u64> {
        self.slots.last_key_value().map(|(i, _)| *i)
    }

    /// Adds an entry at `log_id.index`, replacing that index and everything after it.
    fn push(&mut self, log_id: LogId<NodeId>, entry: Option<RaftEntry>, size: u32) {
        if self.last_index().is_some_and(|last| log_id.index <= last) {
            self.truncate(log_id.index);
        }
        if entry.is_some() {
            self.cached_bytes += size as usize;
        }
        self.slots.insert(
            log_id.index,
            Slot {
                log_id,
                at: None,
                entry,
                size,
            },
        );
    }

    /// Removes the entries `since..`.
    fn truncate(&mut self, since: u64) {
        for (_, s) in self.slots.split_off(&since) {
            if s.entry.is_some() {
                self.cached_bytes -= s.size as usize;
            }
        }
    }

    /// Removes the entries `..=upto` and remembers the purge point.
    fn purge(&mut self, upto: LogId<NodeId>) {
        if self.last_purged.is_some_and(|p| p.index >= upto.index) {
            return;
        }
        let rest = self.slots.split_off(&(upto.index + 1));
        for (_, s) in std::mem::replace(&mut self.slots, rest) {
            if s.entry.is_some() {
                self.cached_bytes -= s.size as usize;
            }
        }
        self.last_purged = Some(upto);
    }

    /// Drops the oldest cached entries that are on disk until the cache fits its budget.
    fn evict(&mut self) {
        if self.cached_bytes <= CACHE_BYTES {
            return;
        }
        for (&i, s) in self.slots.range_mut(self.cache_from..) {
            if self.cached_bytes <= CACHE_BYTES || s.at.is_none() {
                break;
            }
            if s.entry.take().is_some() {
                self.cached_bytes -= s.size as usize;
            }
            self.cache_from = i + 1;
        }
    }

    /// Is there a gap between the purge point and the last entry?
    fn gap(&self) -> Option<(u64, u64)> {
        let mut expect = self.last_purged.map_or(0, |p| p.index + 1);
        for &i in self.slots.keys() {
            if i != expect {
                return Some((expect, i - 1));
            }
            expect = i + 1;
        }
        None
    }
}

struct Shared {
    state: Mutex<State>,
    /// A committed hint not yet written: the next frame carries it.
    committed: Mutex<Option<Option<LogId<NodeId>>>>,
    failure: watch::Sender<Option<String>>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// How far this node's log is durable: the highest index synced to disk (or the failure
/// that stopped the log). Everything that must not run ahead of the local disk waits on it:
/// applying an entry, telling followers an index is committed. Cheap to clone.
#[derive(Clone)]
pub struct Durable(Arc<watch::Sender<(u64, Option<String>)>>);

impl Durable {
    fn new(index: u64) -> Durable {
        Durable(Arc::new(watch::channel((index, None)).0))
    }

    /// The log is durable up to `index` (it only grows this way).
    fn advance(&self, index: u64) {
        self.0.send_if_modified(|(d, _)| {
            let grew = index > *d;
            *d = (*d).max(index);
            grew
        });
    }

    /// Entries from `since` on were removed (a follower's conflicting tail).
    fn truncated(&self, since: u64) {
        self.0.send_if_modified(|(d, _)| {
            let shrank = *d >= since;
            *d = (*d).min(since.saturating_sub(1));
            shrank
        });
    }

    fn fail(&self, why: String) {
        self.0.send_modify(|(_, f)| *f = Some(why));
    }

    /// The highest durable index now.
    pub fn index(&self) -> u64 {
        self.0.borrow().0
    }

    /// Wait until the log is durable up to `index`; an error when the log stopped instead.
    pub async fn reached(&self, index: u64) -> Result<(), String> {
        if self.index() >= index {
            return Ok(());
        }
        let mut rx = self.0.subscribe();
        let res = rx.wait_for(|(d, f)| *d >= index || f.is_some()).await;
        match res {
            Ok(v) if v.0 >= index => Ok(()),
            Ok(v) => Err(v.1.clone().unwrap_or_default()),
            Err(_) => Err("the log was closed".to_string()),
        }
    }
}

/// When `append` may report entries flushed before their sync (see the module docs).
#[derive(Default)]
struct Deferral {
    /// This node's id, once the server allows deferring (tests never do).
    me: std::sync::OnceLock<NodeId>,
    /// Whether the cluster has other voters (a hint, kept by the server).
    replicated: std::sync::atomic::AtomicBool,
}

/// The Raft log, vote and committed hint of one node. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct LogStore {
    shared: Arc<Shared>,
    writer: Arc<Mutex<Writer>>,
    reader: WalReader,
    max_payload: usize,
    durable: Durable,
    deferral: Arc<Deferral>,
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore").finish_non_exhaustive()
    }
}

/// An error opening the log: damage, a gap, or I/O. One line.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error("log {0}: {1}")]
    Gap(String, String),
}

impl LogStore {
    /// Opens (or creates) the log in `dir` and reads it back. Blocking.
    pub fn open(dir: &Path, opts: Options) -> Result<LogStore, OpenError> {
        let mut state = State::default();
        let mut seg_max = BTreeMap::new();
        let wal = Wal::open(dir, opts, &mut |pos, payload| {
            replay(&mut state, &mut seg_max, pos, payload).map_err(|e| e.0)
        })?;
        if let Some((from, to)) = state.gap() {
            return Err(OpenError::Gap(
                dir.display().to_string(),
                format!(
                    "entries {from}..={to} are missing (purged up to {:?}): a segment was lost?",
                    state.last_purged.map(|p| p.index)
                ),
            ));
        }
        state.cache_from = state.last_index().map_or(0, |l| l + 1);
        let durable = Durable::new(state.last_index().unwrap_or(0));
        let (failure, _) = watch::channel(None);
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            committed: Mutex::new(None),
            failure,
        });
        let reader = wal.reader();
        let max_payload = wal.max_payload();
        let writer = Arc::new(Mutex::new(Writer::new(wal, shared.clone(), seg_max)));
        Ok(LogStore {
            shared,
            writer,
            reader,
            max_payload,
            durable,
            deferral: Default::default(),
        })
    }

    /// How far the log is durable (what applying and committing wait for).
    pub fn durable(&self) -> Durable {
        self.durable.clone()
    }

    /// Let `append` defer the sync of this node's own entries while it leads a cluster with
    /// other voters (see the module docs); `me` is this node's id.
    pub fn defer_syncs_when_leading(&self, me: NodeId) {
        let _ = self.deferral.me.set(me);
    }

    /// Whether the cluster has voters besides this node (a hint: a wrong one costs speed,
    /// never safety).
    pub fn set_replicated(&self, replicated: bool) {
        self.deferral
            .replicated
            .store(replicated, std::sync::atomic::Ordering::Relaxed);
    }

    /// What a deferred sync of entries up to `last` reports to: `durable`, or the failure.
    fn report_sync(&self, last: Option<u64>) -> Synced {
        let (durable, shared) = (self.durable.clone(), self.shared.clone());
        Box::new(move |res| match res {
            Ok(()) => {
                if let Some(last) = last {
                    durable.advance(last);
                }
            }
            Err(e) => {
                let why = format!("the log stopped after a failed sync: {e}");
                shared.failure.send_replace(Some(why.clone()));
                durable.fail(why);
            }
        })
    }

    /// Does this node lead a cluster with followers, so an append may defer its sync?
    fn defers(&self) -> bool {
        if !self
            .deferral
            .replicated
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return false;
        }
        let Some(&me) = self.deferral.me.get() else {
            return false;
        };
        self.shared
            .state()
            .vote
            .is_some_and(|v| v.is_committed() && v.leader_id().voted_for() == Some(me))
    }

    /// Becomes `Some(reason)` when a write to the log failed: the node must stop.
    pub fn failure(&self) -> watch::Receiver<Option<String>> {
        self.shared.failure.subscribe()
    }

    /// The writer, for one write at a time (blocking: see the module docs).
    fn writer(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn read_range(&self, lo: u64, hi: Option<u64>) -> io::Result<Vec<RaftEntry>> {
        let mut out: Vec<Option<RaftEntry>> = Vec::new();
        let mut from_disk = Vec::new();
        {
            let st = self.shared.state();
            let range = match hi {
                Some(hi) => st.slots.range(lo..hi),
                None => st.slots.range(lo..),
            };
            for (_, slot) in range {
                match (&slot.entry, slot.at) {
                    (Some(e), _) => out.push(Some(e.clone())),
                    (None, Some(at)) => {
                        from_disk.push((out.len(), at));
                        out.push(None);
                    }
                    (None, None) => unreachable!("an entry leaves the cache only once written"),
                }
            }
        }
        for (i, (pos, len)) in from_disk {
            let bytes = self.reader.read(pos, len as usize)?;
            let entry = codec::decode_entry(&bytes).map_err(io::Error::other)?;
            out[i] = Some(entry);
        }
        Ok(out.into_iter().map(|e| e.expect("filled")).collect())
    }
}

/// Rebuilds the state from one frame's records (on open).
fn replay(
    st: &mut State,
    seg_max: &mut BTreeMap<u64, u64>,
    pos: Pos,
    payload: &[u8],
) -> Result<(), CodecError> {
    let mut d = Dec::new(payload);
    while !d.is_empty() {
        let tag = d.u8()?;
        let body = d.bytes()?;
        let mut b = Dec::new(body);
        match tag {
            rec::ENTRY => {
                let log_id = codec::entry_log_id(body)?;
                let offset = pos.offset + (d.position() - body.len()) as u64;
                if st.last_purged.is_some_and(|p| log_id.index <= p.index) {
                    continue;
                }
                st.push(log_id, None, body.len() as u32);
                st.slots.get_mut(&log_id.index).expect("pushed").at = Some((
                    Pos {
                        segment: pos.segment,
                        offset,
                    },
                    body.len() as u32,
                ));
                let m = seg_max.entry(pos.segment).or_insert(0);
                *m = (*m).max(log_id.index);
            }
            rec::VOTE => st.vote = Some(b.vote()?),
            rec::COMMITTED => st.committed = b.opt_log_id()?,
            rec::TRUNCATE => {
                let since = b.varint()?;
                if st.last_index().is_some_and(|l| since <= l) {
                    st.truncate(since);
                }
            }
            rec::PURGE => st.purge(b.log_id()?),
            rec::CHECKPOINT => {
                // What every record before this segment said (they may be removed by now).
                let (vote, committed, purged) = (b.opt_vote()?, b.opt_log_id()?, b.opt_log_id()?);
                if vote.is_some() {
                    st.vote = vote;
                }
                if committed.is_some() {
                    st.committed = committed;
                }
                if let Some(p) = purged {
                    st.purge(p);
                }
            }
            t => return Err(CodecError(format!("unknown log record kind {t}"))),
        }
    }
    Ok(())
}

fn record(out: &mut Vec<u8>, tag: u8, body: &[u8]) {
    out.push(tag);
    Enc(out).bytes(body);
}

/// Writes and syncs records, one call at a time.
struct Writer {
    wal: Wal,
    shared: Arc<Shared>,
    /// The highest entry index in each segment (which segments a purge may remove).
    seg_max: BTreeMap<u64, u64>,
    /// What the log says so far, for the checkpoint of the next segment.
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
    purged: Option<LogId<NodeId>>,
}

impl Writer {
    fn new(wal: Wal, shared: Arc<Shared>, seg_max: BTreeMap<u64, u64>) -> Writer {
        let (vote, committed, purged) = {
            let st = shared.state();
            (st.vote, st.committed, st.last_purged)
        };
        Writer {
            wal,
            shared,
            seg_max,
            vote,
            committed,
            purged,
        }
    }

    fn vote(&mut self, vote: Vote<NodeId>) -> Result<(), WalError> {
        let mut body = Vec::new();
        Enc(&mut body).vote(&vote);
        self.write_records(rec::VOTE, &body)?;
        self.vote = Some(vote);
        self.shared.state().vote = Some(vote);
        Ok(())
    }

    fn truncate(&mut self, since: u64) -> Result<(), WalError> {
        let mut body = Vec::new();
        Enc(&mut body).varint(since);
        self.write_records(rec::TRUNCATE, &body).map(|_| ())
    }

    /// The committed hint to add to the next frame, if it changed.
    fn committed_record(&mut self, out: &mut Vec<u8>) {
        let pending = self
            .shared
            .committed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(c) = pending
            && c != self.committed
        {
            let mut body = Vec::new();
            Enc(&mut body).opt_log_id(c.as_ref());
            record(out, rec::COMMITTED, &body);
            self.committed = c;
        }
    }

    fn checkpoint(&self) -> Vec<u8> {
        let mut body = Vec::new();
        let mut e = Enc(&mut body);
        e.opt_vote(self.vote.as_ref());
        e.opt_log_id(self.committed.as_ref());
        e.opt_log_id(self.purged.as_ref());
        let mut out = Vec::new();
        record(&mut out, rec::CHECKPOINT, &body);
        out
    }

    /// Writes one frame: the committed hint (if due) and one record.
    fn write_records(&mut self, tag: u8, body: &[u8]) -> Result<Pos, WalError> {
        let mut payload = Vec::new();
        record(&mut payload, tag, body);
        self.committed_record(&mut payload);
        self.write(&payload, None)
    }

    /// Writes one frame; with `synced`, its sync is deferred (see [`Wal::write_deferred`]).
    fn write(&mut self, payload: &[u8], synced: Option<Synced>) -> Result<Pos, WalError> {
        let checkpoint = self.checkpoint();
        let checkpoint = || checkpoint.clone();
        let res = match synced {
            None => self.wal.write(payload, &checkpoint),
            Some(synced) => self.wal.write_deferred(payload, &checkpoint, synced),
        };
        if let Err(e) = &res {
            self.shared.failure.send_replace(Some(e.to_string()));
        }
        res
    }

    fn append(
        &mut self,
        mut payload: Vec<u8>,
        entries: &[(LogId<NodeId>, u32, u32)],
        synced: Option<Synced>,
    ) -> Result<(), WalError> {
        self.committed_record(&mut payload);
        let pos = self.write(&payload, synced)?;
        if let Some(max) = entries.iter().map(|e| e.0.index).max() {
            let m = self.seg_max.entry(pos.segment).or_insert(0);
            *m = (*m).max(max);
        }
        let mut st = self.shared.state();
        for &(log_id, off, len) in entries {
            let at = Pos {
                segment: pos.segment,
                offset: pos.offset + u64::from(off),
            };
            // The slot may be gone already (truncated or purged meanwhile): then skip it.
            if let Some(slot) = st.slots.get_mut(&log_id.index)
                && slot.log_id == log_id
            {
                slot.at = Some((at, len));
            }
        }
        st.evict();
        Ok(())
    }

    fn purge(&mut self, upto: LogId<NodeId>) -> Result<(), WalError> {
        let mut body = Vec::new();
        Enc(&mut body).log_id(&upto);
        self.write_records(rec::PURGE, &body)?;
        self.purged = Some(upto);
        // Remove the oldest segments whose entries are all purged (never the active one).
        let active = self.wal.active_segment();
        let mut below = None;
        for no in self.wal.segments() {
            if no >= active || self.seg_max.get(&no).is_some_and(|&m| m > upto.index) {
                break;
            }
            below = Some(no + 1);
        }
        if let Some(below) = below {
            self.wal.remove_segments_below(below);
            self.seg_max.retain(|&no, _| no >= below);
        }
        Ok(())
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
    if hi.is_some_and(|h| h <= lo) {
        return None;
    }
    Some((lo, hi))
}

fn write_err(e: WalError) -> StorageError<NodeId> {
    StorageIOError::write_logs(&e).into()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<RaftEntry>, StorageError<NodeId>> {
        match half_open(&range) {
            None => Ok(Vec::new()),
            Some((lo, hi)) => self
                .read_range(lo, hi)
                .map_err(|e| StorageIOError::read_logs(&e).into()),
        }
    }
}

impl LogStore {
    /// Append entries and sync them (what [`RaftLogStorage::append`] does, without Raft's
    /// callback: for `--force-new-cluster`, which writes one entry before Raft starts).
    pub fn write_entries<I>(&mut self, entries: I) -> Result<(), WalError>
    where
        I: IntoIterator<Item = RaftEntry>,
    {
        let mut last = None;
        let res = self.write_entries_with(
            entries.into_iter().inspect(|e| last = Some(e.log_id.index)),
            None,
        );
        if let (Ok(()), Some(last)) = (&res, last) {
            self.durable.advance(last);
        }
        res
    }

    /// Writes entries as [`LogStore::write_entries`] does; with `synced`, the last frame's sync
    /// is deferred and `synced` gets its outcome.
    fn write_entries_with<I>(&mut self, entries: I, synced: Option<Synced>) -> Result<(), WalError>
    where
        I: IntoIterator<Item = RaftEntry>,
    {
        // Encode outside the lock; one payload per call, split only when it would not fit
        // into a segment (then every part is synced in turn, the callback after the last).
        let mut jobs = Vec::new();
        let mut payload = Vec::new();
        let mut placed = Vec::new();
        let mut cached = Vec::new();
        let mut scratch = Vec::new();
        for entry in entries {
            scratch.clear();
            codec::encode_entry(&mut scratch, &entry);
            if !payload.is_empty() && payload.len() + scratch.len() + 16 > self.max_payload {
                jobs.push((std::mem::take(&mut payload), std::mem::take(&mut placed)));
            }
            if scratch.len() + 16 > self.max_payload {
                return Err(WalError::Stopped(format!(
                    "log entry {} is {} bytes, more than a segment holds",
                    entry.log_id.index,
                    scratch.len()
                )));
            }
            payload.push(rec::ENTRY);
            Enc(&mut payload).varint(scratch.len() as u64);
            let off = payload.len() as u32;
            payload.extend_from_slice(&scratch);
            placed.push((entry.log_id, off, scratch.len() as u32));
            cached.push((entry, scratch.len() as u32));
        }
        if !payload.is_empty() {
            jobs.push((payload, placed));
        }
        {
            let mut st = self.shared.state();
            for (entry, size) in cached {
                st.push(entry.log_id, Some(entry), size);
            }
        }
        let mut writer = self.writer();
        let n = jobs.len();
        let mut synced = synced;
        let res = jobs
            .into_iter()
            .enumerate()
            .try_for_each(|(i, (payload, entries))| {
                let deferred = if i + 1 == n { synced.take() } else { None };
                writer.append(payload, &entries, deferred)
            });
        drop(writer);
        // Not handed to the log (no entries, or an earlier part failed): report it now.
        if let Some(synced) = synced {
            synced(res.clone().map_err(|e| e.to_string()));
        }
        res
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let st = self.shared.state();
        Ok(LogState {
            last_purged_log_id: st.last_purged,
            last_log_id: st
                .slots
                .last_key_value()
                .map(|(_, s)| s.log_id)
                .or(st.last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.writer()
            .vote(*vote)
            .map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(self.shared.state().vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        // A hint (openraft treats it as a lower bound): written with the next frame, so a
        // commit costs no write of its own.
        self.shared.state().committed = committed;
        *self
            .shared
            .committed
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(committed);
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(self.shared.state().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = RaftEntry> + Send,
        I::IntoIter: Send,
    {
        if !self.defers() {
            let res = self.write_entries(entries);
            callback.log_io_completed(res.clone().map_err(io::Error::other));
            return res.map_err(write_err);
        }
        // A leader with followers: report the entries flushed once written; the sync runs
        // meanwhile, and what depends on it waits for `durable` (see the module docs).
        let entries: Vec<RaftEntry> = entries.into_iter().collect();
        let synced = self.report_sync(entries.last().map(|e| e.log_id.index));
        let res = self.write_entries_with(entries, Some(synced));
        callback.log_io_completed(res.clone().map_err(io::Error::other));
        res.map_err(write_err)
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        tracing::debug!(%log_id, "truncating log since");
        self.shared.state().truncate(log_id.index);
        self.writer().truncate(log_id.index).map_err(write_err)?;
        // After the write: it waited for a deferred sync still running, which reports the
        // entries it synced (some of them now cut off) as durable.
        self.durable.truncated(log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        tracing::debug!(%log_id, "purging log up to");
        self.shared.state().purge(log_id);
        self.writer().purge(log_id).map_err(write_err)
    }
}

#[cfg(test)]
mod tests;
