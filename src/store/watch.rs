//! The watcher hub: who is waiting for changes to which path.
//!
//! A watcher sits on one clean path. When an event is applied the hub visits the event's key
//! and each of its ancestors: a watcher on the key itself always fires; a watcher on an
//! ancestor fires only if it is recursive and the part of the key below it has no hidden
//! (`_`) segment (unless the watcher asked to see hidden keys, as v1 prefix watches do).
//! When a directory is deleted or expires, watchers on every removed path below it fire too.
//! A watcher only takes events at or after its `since` index.
//!
//! Delivery never blocks the write path: each watcher has a bounded channel, and a watcher
//! whose channel is full (a client not reading its stream) or closed (a client gone) is
//! dropped, which ends its response. One-shot (long-poll) watchers are removed after their
//! first event; stream watchers stay. The API layer also removes its watcher when the
//! client's request is dropped, so abandoned long-polls leave nothing behind.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::event::Event;
use super::path;

/// Events a watcher may have queued before it is considered too slow and dropped.
pub const WATCHER_BUFFER: usize = 100;

#[derive(Debug)]
struct Entry {
    id: u64,
    recursive: bool,
    stream: bool,
    show_hidden: bool,
    since: u64,
    tx: mpsc::Sender<Arc<Event>>,
}

#[derive(Debug, Default)]
pub struct WatchHub {
    next_id: u64,
    by_path: HashMap<String, Vec<Entry>>,
    count: usize,
}

/// What a caller holds while it waits: the receiving end and the handle to unregister.
#[derive(Debug)]
pub struct Watcher {
    pub id: u64,
    pub path: String,
    pub rx: mpsc::Receiver<Arc<Event>>,
    /// The store index when the watch was set up (the `X-Etcd-Index` of a watch response).
    pub start_index: u64,
}

pub struct WatchSpec<'a> {
    pub path: &'a str,
    pub recursive: bool,
    pub stream: bool,
    pub show_hidden: bool,
    pub since: u64,
}

impl WatchHub {
    pub fn count(&self) -> usize {
        self.count
    }

    pub fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Register a live watcher.
    pub fn add(&mut self, spec: &WatchSpec<'_>, start_index: u64) -> Watcher {
        self.add_preloaded(spec, start_index, Vec::new())
    }

    /// Register a live watcher that first delivers `held` (events from the history).
    pub fn add_preloaded(
        &mut self,
        spec: &WatchSpec<'_>,
        start_index: u64,
        held: Vec<Event>,
    ) -> Watcher {
        let (tx, rx) = mpsc::channel(WATCHER_BUFFER + held.len());
        for ev in held {
            tx.try_send(Arc::new(ev))
                .expect("the channel was sized for the held events");
        }
        let id = self.next_id();
        self.by_path
            .entry(spec.path.to_string())
            .or_default()
            .push(Entry {
                id,
                recursive: spec.recursive,
                stream: spec.stream,
                show_hidden: spec.show_hidden,
                since: spec.since,
                tx,
            });
        self.count += 1;
        Watcher {
            id,
            path: spec.path.to_string(),
            rx,
            start_index,
        }
    }

    /// Unregister (the client went away). Unknown ids are ignored: the watcher may have
    /// fired and been removed already.
    pub fn remove(&mut self, path: &str, id: u64) {
        if let Some(list) = self.by_path.get_mut(path) {
            let before = list.len();
            list.retain(|e| e.id != id);
            self.count -= before - list.len();
            if list.is_empty() {
                self.by_path.remove(path);
            }
        }
    }

    /// Drop every watcher (their responses end); used when the whole store is replaced.
    pub fn clear(&mut self) {
        self.by_path.clear();
        self.count = 0;
    }

    /// Deliver `ev` to everyone interested. `removed` lists every path a delete or expiry
    /// removed (the deleted node and all its descendants).
    pub fn notify(&mut self, ev: &Event, removed: &[String]) {
        if self.count == 0 || ev.refresh {
            return;
        }
        let key = ev.node.key.clone();
        let mut ev = Delivery { ev, shared: None };
        let mut done: HashSet<u64> = HashSet::new();
        for p in removed {
            self.notify_path(&mut ev, p, &key, true, &mut done);
        }
        for p in path::ancestors_and_self(&key) {
            self.notify_path(&mut ev, &p, &key, false, &mut done);
        }
    }

    fn notify_path(
        &mut self,
        ev: &mut Delivery<'_>,
        at: &str,
        key: &str,
        deleted: bool,
        done: &mut HashSet<u64>,
    ) {
        let Some(list) = self.by_path.get_mut(at) else {
            return;
        };
        let original = at == key;
        let before = list.len();
        list.retain(|w| {
            if done.contains(&w.id) {
                return true;
            }
            let visible = original || w.show_hidden || !path::hidden_below(at, key);
            let wanted = w.recursive || original || deleted;
            if !(visible && wanted && ev.ev.index() >= w.since) {
                return true;
            }
            done.insert(w.id);
            match w.tx.try_send(ev.share()) {
                // A one-shot watcher is done after its event; a stream keeps going.
                Ok(()) => w.stream,
                // Full: the client is not keeping up; dropping the sender ends its stream.
                // Closed: the client is gone.
                Err(_) => false,
            }
        });
        self.count -= before - list.len();
        if list.is_empty() {
            self.by_path.remove(at);
        }
    }
}

/// An event on its way to watchers: copied once, into an `Arc` every watcher it reaches
/// shares (a channel slot is then a pointer), and only if some watcher takes it.
struct Delivery<'a> {
    ev: &'a Event,
    shared: Option<Arc<Event>>,
}

impl Delivery<'_> {
    fn share(&mut self) -> Arc<Event> {
        self.shared
            .get_or_insert_with(|| Arc::new(self.ev.clone()))
            .clone()
    }
}
