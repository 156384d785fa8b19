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
//!
//! Semantics follow etcd's v2 store as etcd 3.4 answers (set replaces and so restarts
//! `createdIndex`; update and compare-and-swap keep it; implicit parent directories take the
//! index of the write that made them; a write or read that runs into a key on its way answers
//! 104 with that key's path).

pub mod event;
pub mod history;
pub mod node;
pub mod path;
pub mod stats;
pub mod ttl;
pub mod watch;

use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::auth::AuthState;
use crate::error::{Code, EtcdError};
pub use event::{Action, Event, NodeView};
use history::History;
use node::Node;
pub use stats::{Stats, StatsSnapshot};
use ttl::ExpiryIndex;
use watch::{WatchHub, WatchSpec, Watcher};

/// Expiry times before 2000-01-01 mean "no TTL" (etcd's rule for times that were zero or
/// mangled in transit).
pub const MIN_EXPIRE_AT: i64 = 946_684_800 * 1_000_000_000;

/// The whole store as a snapshot carries it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoreSnapshot {
    pub index: u64,
    pub root: Node,
    pub stats: StatsSnapshot,
    /// The event history as it was, so watches from an index keep working across restarts
    /// and snapshot installs.
    #[serde(default)]
    pub history: Vec<Event>,
    /// Ids of members removed from the cluster.
    #[serde(default)]
    pub removed_members: std::collections::BTreeSet<u64>,
    /// Users, roles and the auth switch (absent in snapshots from before auth existed).
    #[serde(default)]
    pub auth: AuthState,
}

pub struct Store {
    root: Node,
    index: u64,
    /// The time of the log entry being applied (set by the state machine), stamped on events.
    write_time: i64,
    history: History,
    expiry: ExpiryIndex,
    hub: Mutex<WatchHub>,
    stats: Stats,
    /// `/v2/auth` state, changed only by applied auth commands (see `crate::auth`).
    pub auth: AuthState,
    /// Ids of members removed from the cluster (replicated; `/v2/members` answers 410).
    pub removed_members: std::collections::BTreeSet<u64>,
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
            auth: AuthState::default(),
            removed_members: Default::default(),
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
        self.lookup(&path::clean(key))
            .ok()?
            .value()
            .map(str::to_string)
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
    // writes

    /// Set the time of the writes that follow (the proposer's clock, carried in the log).
    pub fn set_write_time(&mut self, at: i64) {
        self.write_time = at;
    }

    /// Record a successful write: bump the index, keep the event, wake watchers.
    fn commit(&mut self, mut ev: Event, removed: &[String]) -> Event {
        debug_assert_eq!(ev.index(), self.index + 1);
        ev.at = self.write_time;
        self.index = ev.index();
        self.hub
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .notify(&ev, removed);
        self.history.push(ev.clone());
        ev
    }

    fn normalize_expiry(expire_at: Option<i64>) -> Option<i64> {
        expire_at.filter(|&t| t >= MIN_EXPIRE_AT)
    }

    /// Set a key (or, with `value: None`, make a directory), replacing any key there.
    /// `refresh` keeps the value and only resets the TTL (not shown to watchers).
    pub fn set(
        &mut self,
        key: &str,
        value: Option<String>,
        expire_at: Option<i64>,
        refresh: bool,
    ) -> Result<Event, EtcdError> {
        let key = path::clean(key);
        let res = self.set_inner(&key, value, expire_at, refresh);
        Stats::count(res.is_ok(), &self.stats.sets_success, &self.stats.sets_fail);
        res
    }

    fn set_inner(
        &mut self,
        key: &str,
        value: Option<String>,
        expire_at: Option<i64>,
        refresh: bool,
    ) -> Result<Event, EtcdError> {
        // A missing key is fine for a set (it creates it), but not for a refresh.
        let prev = match self.lookup(key) {
            Ok(n) => Ok(n.view(key)),
            Err(e) if e.code == Code::KeyNotFound && !refresh => Err(e),
            Err(e) => return Err(e),
        };
        let value = match (&prev, refresh) {
            (Ok(p), true) if p.dir => None,
            (Ok(p), true) => p.value.clone(),
            _ => value,
        };
        let mut ev = self.create_node(key, value, expire_at, true, Action::Set)?;
        ev.prev_node = prev.ok();
        ev.refresh = refresh;
        Ok(self.commit(ev, &[]))
    }

    /// Create a node that must not exist yet. With `unique`, the node is a new child of
    /// `key` named after the new index, zero-padded to 20 digits (in-order keys).
    pub fn create(
        &mut self,
        key: &str,
        value: Option<String>,
        expire_at: Option<i64>,
        unique: bool,
    ) -> Result<Event, EtcdError> {
        let mut key = path::clean(key);
        if unique {
            key = path::join(&key, &format!("{:020}", self.index + 1));
        }
        let res = self
            .create_node(&key, value, expire_at, false, Action::Create)
            .map(|ev| self.commit(ev, &[]));
        Stats::count(
            res.is_ok(),
            &self.stats.create_success,
            &self.stats.create_fail,
        );
        res
    }

    /// Shared by set and create: make parent directories, then put the node at `key`.
    /// Does not commit; the caller completes the event.
    fn create_node(
        &mut self,
        key: &str,
        value: Option<String>,
        expire_at: Option<i64>,
        replace: bool,
        action: Action,
    ) -> Result<Event, EtcdError> {
        let cur = self.index;
        let next = cur + 1;
        let Some((parent, name)) = path::split(key) else {
            return Err(EtcdError::new(Code::RootReadOnly, "/", cur));
        };
        let expire_at = Self::normalize_expiry(expire_at);

        // Walk to the parent, creating missing directories. A key on the way stops the
        // walk (104); nothing was created before it (everything after a missing component is
        // missing too), so a failed create leaves the tree as it was.
        let mut dir = &mut self.root;
        let mut at = String::new();
        for seg in path::segments(parent) {
            at.push('/');
            at.push_str(seg);
            let children = dir
                .children_mut()
                .expect("the walk only descends into directories");
            let child = children
                .entry(seg.to_string())
                .or_insert_with(|| Node::new_dir(next, None));
            if !child.is_dir() {
                return Err(EtcdError::new(Code::NotDir, at, cur));
            }
            dir = child;
        }
        let children = dir.children_mut().expect("parent is a directory");

        let mut prev = None;
        if let Some(existing) = children.get(name) {
            if !replace {
                let mut e = EtcdError::new(Code::NodeExist, key, cur);
                e.current = existing.value().map(str::to_string);
                return Err(e);
            }
            if existing.is_dir() {
                return Err(EtcdError::new(Code::NotFile, key, cur));
            }
            prev = Some(existing.expire_at);
        }
        let node = match value {
            Some(v) => Node::new_value(v, next, expire_at),
            None => Node::new_dir(next, expire_at),
        };
        let view = node.view(key);
        children.insert(name.to_string(), node);
        if let Some(Some(old_expiry)) = prev {
            self.expiry.remove(old_expiry, key);
        }
        if let Some(t) = expire_at {
            self.expiry.insert(t, key);
        }
        Ok(Event {
            action,
            node: view,
            prev_node: None,
            refresh: false,
            at: 0,
        })
    }

    /// Change an existing node: a key's value, or only the TTL of a directory (whose value
    /// must then be empty). `refresh` keeps the value.
    pub fn update(
        &mut self,
        key: &str,
        value: String,
        expire_at: Option<i64>,
        refresh: bool,
    ) -> Result<Event, EtcdError> {
        let key = path::clean(key);
        let res = self.update_inner(&key, value, expire_at, refresh);
        Stats::count(
            res.is_ok(),
            &self.stats.update_success,
            &self.stats.update_fail,
        );
        res
    }

    fn update_inner(
        &mut self,
        key: &str,
        value: String,
        expire_at: Option<i64>,
        refresh: bool,
    ) -> Result<Event, EtcdError> {
        if key == "/" {
            return Err(EtcdError::new(Code::RootReadOnly, "/", self.index));
        }
        let n = self.lookup(key)?;
        if n.is_dir() && !value.is_empty() {
            return Err(EtcdError::new(Code::NotFile, key, self.index));
        }
        let prev = n.view(key);
        let ev = self.rewrite(
            key,
            Action::Update,
            if refresh { None } else { Some(value) },
            expire_at,
            prev,
        );
        Ok(ev)
    }

    /// Compare-and-swap a key's value. Only the conditions given are checked.
    pub fn compare_and_swap(
        &mut self,
        key: &str,
        prev_value: Option<&str>,
        prev_index: Option<u64>,
        value: String,
        expire_at: Option<i64>,
        refresh: bool,
    ) -> Result<Event, EtcdError> {
        let key = path::clean(key);
        let res = self.cas_inner(&key, prev_value, prev_index, value, expire_at, refresh);
        Stats::count(
            res.is_ok(),
            &self.stats.compare_and_swap_success,
            &self.stats.compare_and_swap_fail,
        );
        res
    }

    fn cas_inner(
        &mut self,
        key: &str,
        prev_value: Option<&str>,
        prev_index: Option<u64>,
        value: String,
        expire_at: Option<i64>,
        refresh: bool,
    ) -> Result<Event, EtcdError> {
        let prev = self.compared_key(key, prev_value, prev_index)?;
        Ok(self.rewrite(
            key,
            Action::CompareAndSwap,
            if refresh { None } else { Some(value) },
            expire_at,
            prev,
        ))
    }

    /// etcd's compare: an absent/empty prevValue or a zero prevIndex always matches.
    fn compare(
        &self,
        n: &Node,
        prev_value: Option<&str>,
        prev_index: Option<u64>,
    ) -> Result<(), EtcdError> {
        let current = n.value().unwrap_or_default();
        let pv = prev_value.filter(|v| !v.is_empty());
        let pi = prev_index.filter(|&i| i != 0);
        let value_ok = pv.is_none_or(|v| v == current);
        let index_ok = pi.is_none_or(|i| i == n.modified_index);
        let cause = match (value_ok, index_ok) {
            (true, true) => return Ok(()),
            (false, true) => format!("[{} != {}]", pv.unwrap_or_default(), current),
            (true, false) => format!("[{} != {}]", pi.unwrap_or_default(), n.modified_index),
            (false, false) => format!(
                "[{} != {}] [{} != {}]",
                pv.unwrap_or_default(),
                current,
                pi.unwrap_or_default(),
                n.modified_index
            ),
        };
        Err(EtcdError::new(Code::TestFailed, cause, self.index).with_current(current))
    }

    /// Write a new value (None: keep it) and expiry into an existing node, keeping its
    /// created index, and commit the event.
    fn rewrite(
        &mut self,
        key: &str,
        action: Action,
        value: Option<String>,
        expire_at: Option<i64>,
        prev: NodeView,
    ) -> Event {
        let next = self.index + 1;
        let expire_at = Self::normalize_expiry(expire_at);
        let refresh = value.is_none();
        let node = self.node_mut(key).expect("looked up just before");
        if let (Some(v), node::Kind::Value(cur)) = (value, &mut node.kind) {
            *cur = v;
        }
        // etcd keeps a directory's stored modifiedIndex when only its TTL changes (the event
        // still reports the new index); clients see this in later reads and prevNodes.
        if !node.is_dir() {
            node.modified_index = next;
        }
        let old_expiry = std::mem::replace(&mut node.expire_at, expire_at);
        let mut view = node.view(key);
        view.modified_index = next;
        if let Some(t) = old_expiry {
            self.expiry.remove(t, key);
        }
        if let Some(t) = expire_at {
            self.expiry.insert(t, key);
        }
        let ev = Event {
            action,
            node: view,
            prev_node: Some(prev),
            refresh,
            at: 0,
        };
        self.commit(ev, &[])
    }

    /// Delete a key, or a directory (`dir` for an empty one, `recursive` for any).
    pub fn delete(&mut self, key: &str, dir: bool, recursive: bool) -> Result<Event, EtcdError> {
        let key = path::clean(key);
        let res = self.delete_inner(&key, dir || recursive, recursive);
        Stats::count(
            res.is_ok(),
            &self.stats.delete_success,
            &self.stats.delete_fail,
        );
        res
    }

    fn delete_inner(&mut self, key: &str, dir: bool, recursive: bool) -> Result<Event, EtcdError> {
        if key == "/" {
            return Err(EtcdError::new(Code::RootReadOnly, "/", self.index));
        }
        let n = self.lookup(key)?;
        if let Some(children) = n.children() {
            if !dir {
                return Err(EtcdError::new(Code::NotFile, key, self.index));
            }
            if !children.is_empty() && !recursive {
                return Err(EtcdError::new(Code::DirNotEmpty, key, self.index));
            }
        }
        Ok(self.remove(key, Action::Delete))
    }

    /// Delete a key if it still has the given value and/or modified index.
    pub fn compare_and_delete(
        &mut self,
        key: &str,
        prev_value: Option<&str>,
        prev_index: Option<u64>,
    ) -> Result<Event, EtcdError> {
        let key = path::clean(key);
        let res = self.cad_inner(&key, prev_value, prev_index);
        Stats::count(
            res.is_ok(),
            &self.stats.compare_and_delete_success,
            &self.stats.compare_and_delete_fail,
        );
        res
    }

    fn cad_inner(
        &mut self,
        key: &str,
        prev_value: Option<&str>,
        prev_index: Option<u64>,
    ) -> Result<Event, EtcdError> {
        self.compared_key(key, prev_value, prev_index)?;
        Ok(self.remove(key, Action::CompareAndDelete))
    }

    /// The checks a compare-and-swap and a compare-and-delete share: not the root, an
    /// existing key (not a directory), and the given conditions hold. Returns the key's view.
    fn compared_key(
        &self,
        key: &str,
        prev_value: Option<&str>,
        prev_index: Option<u64>,
    ) -> Result<NodeView, EtcdError> {
        if key == "/" {
            return Err(EtcdError::new(Code::RootReadOnly, "/", self.index));
        }
        let n = self.lookup(key)?;
        if n.is_dir() {
            return Err(EtcdError::new(Code::NotFile, key, self.index));
        }
        self.compare(n, prev_value, prev_index)?;
        Ok(n.view(key))
    }

    /// Remove the node at `key` (which exists) with its subtree, and commit the event.
    fn remove(&mut self, key: &str, action: Action) -> Event {
        let next = self.index + 1;
        let (parent, name) = path::split(key).expect("never the root");
        let parent = self
            .node_mut(parent)
            .and_then(Node::children_mut)
            .expect("parent exists");
        let old = parent.remove(name).expect("node exists");
        let mut removed = Vec::new();
        let expiry = &mut self.expiry;
        old.for_each_post_order(key, &mut |p, n| {
            if let Some(t) = n.expire_at {
                expiry.remove(t, p);
            }
            removed.push(p.to_string());
        });
        let prev = old.view(key);
        let node = NodeView {
            key: key.to_string(),
            value: None,
            dir: old.is_dir(),
            expire_at: None,
            modified_index: next,
            created_index: old.created_index,
            nodes: None,
        };
        let ev = Event {
            action,
            node,
            prev_node: Some(prev),
            refresh: false,
            at: 0,
        };
        self.commit(ev, &removed)
    }

    /// Remove every node whose expiry time is at or before `now` (the leader's clock,
    /// carried in the command), in expiry order, one event and one index each.
    pub fn expire(&mut self, now: i64) -> Vec<Event> {
        let mut out = Vec::new();
        while let Some((t, key)) = self.expiry.pop_due(now) {
            // The popped entry is gone already; `remove` clears the rest of the subtree's.
            if self.node_mut(&key).is_none_or(|n| n.expire_at != Some(t)) {
                continue;
            }
            let ev = self.remove(&key, Action::Expire);
            Stats::inc(&self.stats.expire_count);
            out.push(ev);
        }
        out
    }

    // -----------------------------------------------------------------------------------
    // snapshots

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
            auth: self.auth.clone(),
            removed_members: self.removed_members.clone(),
        }
    }

    /// Replace the whole store with a snapshot. History starts empty and every watcher is
    /// dropped (their clients see the watch end and must watch again).
    pub fn restore(&mut self, snap: StoreSnapshot) {
        let history_size = self.history.capacity();
        self.root = snap.root;
        self.index = snap.index;
        self.auth = snap.auth;
        self.removed_members = snap.removed_members;
        self.history = History::new(history_size);
        for ev in snap.history {
            self.history.push(ev);
        }
        self.expiry.clear();
        let expiry = &mut self.expiry;
        self.root.for_each_post_order("/", &mut |p, n| {
            if let Some(t) = n.expire_at {
                expiry.insert(t, p);
            }
        });
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
