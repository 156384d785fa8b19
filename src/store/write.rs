//! The writes of the [`Store`]: set, create, update, compare-and-swap, delete,
//! compare-and-delete and expiry. Each successful one goes through [`Store::commit`], which
//! bumps the index, records the event and wakes watchers; a failed one changes nothing.
//!
//! A write checks with shared reads (`lookup`, `get`) first and only then takes the mutable
//! path (`node_mut`, `get_mut`, `insert`, `remove`), which copies the blocks a snapshot still
//! shares: a write that fails copies nothing.

use super::node::{self, Node};
use super::{Action, Event, MIN_EXPIRE_AT, NodeView, Stats, Store, path};
use crate::error::{Code, EtcdError};

/// Does etcd count this outcome as a success? A success is, and so are the refusals listed:
/// etcd 3.4's store returns those errors without recording them where its deferred counter
/// looks, so `/v2/stats/store` counts them as successes (update: root and a value for a
/// directory; compare-and-swap and delete: root; compare-and-delete: a directory, the root,
/// a failed compare). Only the lookup errors (100, 104) and the rest count as failures.
fn counted_ok(res: &Result<Event, EtcdError>, counted_as_success: &[Code]) -> bool {
    match res {
        Ok(_) => true,
        Err(e) => counted_as_success.contains(&e.code),
    }
}

impl Store {
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
    /// `refresh` keeps the value (any given one is ignored) and resets the TTL; the event is
    /// not shown to watchers.
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
        // A refresh keeps the value, but whether the node is a directory is still the
        // request's to say, as in etcd (`Set(path, dir, n.Value, ...)`): `dir=true&refresh`
        // on a key replaces it with a directory. On a directory either way is 102. A missing
        // key is fine for a set (it creates it), but not for a refresh.
        let value = if refresh {
            let current = self.lookup(key)?.value().unwrap_or_default().to_string();
            value.map(|_| current)
        } else {
            value
        };
        // `create_node` finds the node it replaces (the event's `prevNode`) on its own walk.
        let mut ev = self.create_node(key, value, expire_at, true, Action::Set)?;
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
        // etcd counts a create that runs into a key on its way as a failed set too.
        if res.as_ref().is_err_and(|e| e.code == Code::NotDir) {
            Stats::inc(&self.stats.sets_fail);
        }
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

        // Check with shared reads first, so a failed create copies nothing. A key on the way
        // stops the walk (104); once a component is missing, everything after it is too.
        let mut found = Some(&self.root);
        let mut at = String::new();
        for seg in path::segments(parent) {
            let Some(dir) = found else { break };
            at.push('/');
            at.push_str(seg);
            found = dir.children().and_then(|c| c.get(seg));
            if found.is_some_and(|n| !n.is_dir()) {
                return Err(EtcdError::new(Code::NotDir, at, cur));
            }
        }
        let mut prev = None;
        // Where the name is or will go in its directory, so the insert below need not
        // search that directory (it may hold millions of names) a second time.
        let (existing, spot) = match found.and_then(Node::children) {
            Some(c) => c.find(name),
            None => (None, None),
        };
        if let Some(existing) = existing {
            if !replace {
                let mut e = EtcdError::new(Code::NodeExist, key, cur);
                e.current = existing.value().map(str::to_string);
                return Err(e);
            }
            if existing.is_dir() {
                return Err(EtcdError::new(Code::NotFile, key, cur));
            }
            prev = Some(existing.view(key));
        }

        // Now walk to the parent for writing, creating the missing directories.
        let mut dir = &mut self.root;
        for seg in path::segments(parent) {
            let children = dir
                .children_mut()
                .expect("the walk only descends into directories");
            if children.get(seg).is_none() {
                children.insert(seg, Node::new_dir(next, None));
            }
            dir = children.get_mut(seg).expect("present or just made");
        }
        let children = dir.children_mut().expect("parent is a directory");
        let node = match value {
            Some(v) => Node::new_value(v, next, expire_at),
            None => Node::new_dir(next, expire_at),
        };
        let view = node.view(key);
        children.insert_at(spot.as_ref(), name, node);
        if let Some(old_expiry) = prev.as_ref().and_then(|p| p.expire_at) {
            self.expiry.remove(old_expiry, key);
        }
        if let Some(t) = expire_at {
            self.expiry.insert(t, key);
        }
        Ok(Event {
            action,
            node: view,
            prev_node: prev,
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
            counted_ok(&res, &[Code::RootReadOnly, Code::NotFile]),
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
            counted_ok(&res, &[Code::RootReadOnly]),
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
            *cur = v.into();
        }
        // etcd keeps a directory's stored modifiedIndex when only its TTL changes (the event
        // still reports the new index); clients see this in later reads and prevNodes.
        if !node.is_dir() {
            node.modified_index = next;
        }
        let old_expiry = node.set_expire_at(expire_at);
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
            counted_ok(&res, &[Code::RootReadOnly]),
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
            counted_ok(&res, &[Code::NotFile, Code::TestFailed]),
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
        // etcd's compare-and-delete has no read-only guard: it finds the root, a directory,
        // and answers 102 with its internal root path as the cause, which the v2 layer trims
        // to nothing.
        if key == "/" {
            return Err(EtcdError::new(Code::NotFile, "", self.index));
        }
        self.compared_key(key, prev_value, prev_index)?;
        Ok(self.remove(key, Action::CompareAndDelete))
    }

    /// The checks a compare-and-swap and a compare-and-delete share: not the root (107), an
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
            if let Some(t) = n.expire_at() {
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
            if self.node(&key).is_none_or(|n| n.expire_at() != Some(t)) {
                continue;
            }
            let ev = self.remove(&key, Action::Expire);
            Stats::inc(&self.stats.expire_count);
            out.push(ev);
        }
        out
    }
}
