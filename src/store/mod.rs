//! The key space: one tree of keys and directories serving both the v1 and the v2 API.
//!
//! This module is pure. It reads no clock and does no I/O: every write arrives as a call made
//! by an applied Raft command, with absolute expiry times inside; reads take `now` only to
//! render remaining TTLs. Applying the same commands in the same order therefore yields the
//! same tree, the same indexes and the same events on every replica, at any time.
//!
//! What must stay true:
//! * The store index grows by exactly one per successful write (each expired node is one
//!   write); failed writes leave it and the tree untouched.
//! * Every successful write yields one [`Event`], recorded in the [`History`] ring and
//!   delivered to matching watchers, except TTL refreshes, which are recorded but not
//!   delivered.
//! * The expiry index holds exactly the nodes that have an expiry time.
//! * A [`StoreSnapshot`] never changes once taken, whatever the store does next.
//!
//! The tree is persistent: directories keep their children in `Arc`-shared B+tree blocks
//! and values are shared strings ([`node`], [`tree`]). Taking a snapshot clones the root -
//! one reference-count bump, however large the tree - so it costs the store's lock nothing;
//! a later write copies the few blocks on its path that the snapshot still shares (only the
//! first write to each block pays), and blocks owned by the store alone change in place.
//! Snapshots travel as a compact binary stream ([`snapshot`]).
//!
//! Semantics follow etcd's v2 store as etcd 3.4 answers (set replaces and so restarts
//! `createdIndex`; update and compare-and-swap keep it; implicit parent directories take the
//! index of the write that made them; a write or read that runs into a key on its way answers
//! 104 with that key's path).

pub mod event;
pub mod history;
pub mod json;
pub mod name;
pub mod node;
pub mod path;
pub mod snapshot;
pub mod stats;
pub mod tree;
pub mod ttl;
pub mod watch;
mod write;

use std::sync::Mutex;

use crate::error::{Code, EtcdError};
pub use event::{Action, Event, NodeView};
use history::History;
use node::Node;
pub use snapshot::{SnapshotError, StoreSnapshot};
pub use stats::{Stats, StatsSnapshot};
use ttl::ExpiryIndex;
use watch::{WatchHub, WatchSpec, Watcher};

/// Expiry times before 2000-01-01 mean "no TTL" (etcd's rule for times that were zero or
/// mangled in transit).
pub const MIN_EXPIRE_AT: i64 = 946_684_800 * 1_000_000_000;

pub struct Store {
    root: Node,
    index: u64,
    /// The time of the log entry being applied (set by the state machine), stamped on events.
    write_time: i64,
    history: History,
    expiry: ExpiryIndex,
    hub: Mutex<WatchHub>,
    stats: Stats,
}

/// How a watch should treat a start index older than the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnCleared {
    /// v2: error 401.
    Error,
    /// v1: wait for the next change instead.
    WaitForNext,
}

impl Store {
    pub fn new(history_size: usize) -> Store {
        Store {
            root: Node::new_dir(0, None),
            index: 0,
            write_time: 0,
            history: History::new(history_size),
            expiry: ExpiryIndex::default(),
            hub: Mutex::new(WatchHub::default()),
            stats: Stats::default(),
        }
    }

    /// The index of the last successful write.
    pub fn index(&self) -> u64 {
        self.index
    }

    pub fn stats(&self) -> StatsSnapshot {
        let mut s = self.stats.snapshot();
        s.watchers = self.hub().count() as u64;
        s
    }

    /// The earliest expiry time of any node, so the leader knows when to propose an expiry.
    pub fn next_expiry(&self) -> Option<i64> {
        self.expiry.next()
    }

    fn hub(&self) -> std::sync::MutexGuard<'_, WatchHub> {
        // A panic while holding the hub cannot leave it inconsistent in a way that matters
        // more than stopping every watch, so recover from poisoning.
        self.hub.lock().unwrap_or_else(|e| e.into_inner())
    }

    // -----------------------------------------------------------------------------------
    // reads

    /// Read a node; a directory comes with its children (and theirs when `recursive`).
    /// Hidden children are listed only with `include_hidden` (v1 lists them, v2 does not).
    pub fn get(
        &self,
        key: &str,
        recursive: bool,
        include_hidden: bool,
    ) -> Result<NodeView, EtcdError> {
        let key = path::clean(key);
        let res = self
            .lookup(&key)
            .map(|n| n.listing(&key, recursive, include_hidden));
        Stats::count(res.is_ok(), &self.stats.gets_success, &self.stats.gets_fail);
        res
    }

    /// The value of a key, without counting a read (for internal bookkeeping).
    pub fn peek_value(&self, key: &str) -> Option<String> {
        self.node(&path::clean(key))?.value().map(str::to_string)
    }

    /// The length of the value at `key` (0 for a directory or a missing key); no copy.
    pub fn value_len(&self, key: &str) -> usize {
        self.node(&path::clean(key))
            .and_then(Node::value)
            .map_or(0, str::len)
    }

    /// Walk to a node. A component that is a key -> 104 (cause: that key); a missing
    /// component -> 100 (cause: the path up to it).
    fn lookup(&self, key: &str) -> Result<&Node, EtcdError> {
        let mut cur = &self.root;
        let mut at = String::new();
        for seg in path::segments(key) {
            let Some(children) = cur.children() else {
                return Err(EtcdError::new(
                    Code::NotDir,
                    if at.is_empty() { "/" } else { &at },
                    self.index,
                ));
            };
            at.push('/');
            at.push_str(seg);
            cur = children
                .get(seg)
                .ok_or_else(|| EtcdError::new(Code::KeyNotFound, at.clone(), self.index))?;
        }
        Ok(cur)
    }

    /// The node at a clean path, if there is one (no error built, nothing counted).
    fn node(&self, key: &str) -> Option<&Node> {
        let mut cur = &self.root;
        for seg in path::segments(key) {
            cur = cur.children()?.get(seg)?;
        }
        Some(cur)
    }

    /// The node at a clean path, for changing it: the shared blocks on the way are copied
    /// (see `tree`), so call it only for a node known to exist.
    fn node_mut(&mut self, key: &str) -> Option<&mut Node> {
        let mut cur = &mut self.root;
        for seg in path::segments(key) {
            cur = cur.children_mut()?.get_mut(seg)?;
        }
        Some(cur)
    }

    // -----------------------------------------------------------------------------------
    // watches

    /// Start watching `key`. With `since` (a waitIndex), a matching event still in the
    /// history answers at once; otherwise the watcher waits for the next matching event.
    pub fn watch(
        &self,
        key: &str,
        recursive: bool,
        stream: bool,
        since: Option<u64>,
        show_hidden: bool,
        on_cleared: OnCleared,
    ) -> Result<Watcher, EtcdError> {
        let key = path::clean(key);
        let mut since = since.filter(|&i| i > 0).unwrap_or(self.index + 1);
        let mut hub = self.hub();
        match self.history.scan(&key, recursive, since, self.index) {
            Ok(Some(_)) if stream => {
                // A stream from a past index: every matching event still held, then live ones.
                let held = self.history.scan_all(&key, recursive, since);
                let spec = WatchSpec {
                    path: &key,
                    recursive,
                    stream,
                    show_hidden,
                    since: self.index + 1,
                };
                return Ok(hub.add_preloaded(&spec, self.index, held));
            }
            Ok(Some(ev)) => {
                let (tx, rx) = tokio::sync::mpsc::channel(1);
                tx.try_send(std::sync::Arc::new(ev))
                    .expect("a fresh channel has room for one event");
                return Ok(Watcher {
                    id: hub.next_id(),
                    path: key,
                    rx,
                    start_index: self.index,
                });
            }
            Ok(None) => {}
            Err(e) if on_cleared == OnCleared::Error => return Err(e),
            Err(_) => since = self.index + 1,
        }
        let spec = WatchSpec {
            path: &key,
            recursive,
            stream,
            show_hidden,
            since,
        };
        Ok(hub.add(&spec, self.index))
    }

    /// Stop a watch whose client went away.
    pub fn unwatch(&self, w: &Watcher) {
        self.hub().remove(&w.path, w.id);
    }

    /// End every open watch (shutdown): their clients get an answer instead of a hang.
    pub fn close_watches(&self) {
        self.hub().clear();
    }

    pub fn watcher_count(&self) -> usize {
        self.hub().count()
    }

    // -----------------------------------------------------------------------------------
    // snapshots

    /// The whole store as it is now. Cheap - the tree is shared, not copied (the history,
    /// at most its capacity of events, is) - so it can be taken under the state machine's
    /// lock and encoded elsewhere while writes go on.
    pub fn snapshot(&self) -> StoreSnapshot {
        let mut stats = self.stats.snapshot();
        stats.gets_success = 0;
        stats.gets_fail = 0;
        stats.watchers = 0;
        StoreSnapshot {
            index: self.index,
            root: self.root.clone(),
            stats,
            history: self.history.events().cloned().collect(),
            extra: Default::default(),
        }
    }

    /// Replace the whole store with a snapshot (O(1) for the tree, which is shared with the
    /// snapshot, plus one walk to rebuild the expiry index). The history becomes the
    /// snapshot's and every watcher is dropped (their clients see the watch end and must
    /// watch again).
    pub fn restore(&mut self, snap: StoreSnapshot) {
        let history_size = self.history.capacity();
        self.root = snap.root;
        self.index = snap.index;
        self.history = History::new(history_size);
        for ev in snap.history {
            self.history.push(ev);
        }
        self.expiry.clear();
        let expiry = &mut self.expiry;
        self.root
            .for_each_expiring("/", &mut |p, t| expiry.insert(t, p));
        let gets = (
            self.stats.snapshot().gets_success,
            self.stats.snapshot().gets_fail,
        );
        self.stats.restore(&snap.stats);
        self.stats
            .gets_success
            .store(gets.0, std::sync::atomic::Ordering::Relaxed);
        self.stats
            .gets_fail
            .store(gets.1, std::sync::atomic::Ordering::Relaxed);
        self.hub
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Number of nodes in the tree (root included).
    pub fn node_count(&self) -> usize {
        self.root.count()
    }
}

#[cfg(test)]
mod tests;
