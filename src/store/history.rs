//! The event history: a ring of the last N events (1000 by default, `-m`), so a watcher can
//! ask for "everything since index i" and reconnecting clients miss nothing.
//!
//! Store indexes grow by exactly one per event, so the ring always holds a contiguous run of
//! indexes `[oldest, newest]`. A request older than `oldest` has lost events: v2 answers it
//! with error 401 (`the requested history has been cleared [oldest/asked]`); v1 simply waits
//! for the next change. The ring travels in store snapshots, so after a restart or a
//! snapshot install it holds the snapshot's events and then what the replayed log tail
//! produced.

use std::collections::VecDeque;

use super::event::{Action, Event};
use super::path;
use crate::error::{Code, EtcdError};

#[derive(Debug)]
pub struct History {
    capacity: usize,
    events: VecDeque<Event>,
}

impl History {
    pub fn new(capacity: usize) -> History {
        let capacity = capacity.max(1);
        History {
            capacity,
            events: VecDeque::with_capacity(capacity.min(4096)),
        }
    }

    pub fn push(&mut self, ev: Event) {
        if self.events.len() == self.capacity {
            self.events.pop_front();
        }
        self.events.push_back(ev);
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The events held, oldest first.
    pub fn events(&self) -> impl Iterator<Item = &Event> {
        self.events.iter()
    }

    /// Index of the oldest event held (0 when empty).
    pub fn oldest(&self) -> u64 {
        self.events.front().map_or(0, Event::index)
    }

    /// The first event at or after `since` that concerns `key`: the key itself, anything
    /// below it when `recursive`, or the deletion/expiry of a directory above it. `Ok(None)`
    /// when `since` is newer than everything held; error 401 when it is older than the ring.
    pub fn scan(
        &self,
        key: &str,
        recursive: bool,
        since: u64,
        current: u64,
    ) -> Result<Option<Event>, EtcdError> {
        let oldest = self.oldest();
        if since < oldest {
            return Err(EtcdError::new(
                Code::EventIndexCleared,
                format!("the requested history has been cleared [{oldest}/{since}]"),
                current,
            ));
        }
        let Some(last) = self.events.back() else {
            return Ok(None);
        };
        if since > last.index() {
            return Ok(None);
        }
        let skip = (since - oldest) as usize;
        Ok(self
            .events
            .iter()
            .skip(skip)
            .find(|e| matches(e, key, recursive))
            .cloned())
    }
}

impl History {
    /// Every event at or after `since` that concerns `key` (see [`History::scan`]).
    pub fn scan_all(&self, key: &str, recursive: bool, since: u64) -> Vec<Event> {
        self.events
            .iter()
            .filter(|e| e.index() >= since && matches(e, key, recursive))
            .cloned()
            .collect()
    }
}

/// Does event `e` concern a watch on `key`? (etcd's history rule, also used for live events.)
pub fn matches(e: &Event, key: &str, recursive: bool) -> bool {
    if e.refresh {
        return false;
    }
    let k = e.node.key.as_str();
    if k == key || (recursive && path::is_under(k, key)) {
        return true;
    }
    matches!(
        e.action,
        Action::Delete | Action::Expire | Action::CompareAndDelete
    ) && e
        .prev_node
        .as_ref()
        .is_some_and(|p| p.dir && path::is_under(key, &p.key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::event::NodeView;

    fn ev(key: &str, idx: u64) -> Event {
        Event {
            action: Action::Set,
            node: NodeView {
                key: key.into(),
                value: Some("v".into()),
                dir: false,
                expire_at: None,
                modified_index: idx,
                created_index: idx,

                nodes: None,
            },
            prev_node: None,
            refresh: false,
            at: 0,
        }
    }

    #[test]
    fn scan_finds_first_match_and_reports_cleared() {
        let mut h = History::new(3);
        for (i, k) in ["/a", "/b/c", "/bc", "/b"].iter().enumerate() {
            h.push(ev(k, i as u64 + 1));
        }
        assert_eq!(h.oldest(), 2);
        let e = h.scan("/b", true, 2, 4).unwrap().unwrap();
        assert_eq!(e.node.key, "/b/c");
        let e = h.scan("/b", false, 2, 4).unwrap().unwrap();
        assert_eq!(e.index(), 4);
        assert!(h.scan("/b", true, 5, 4).unwrap().is_none());
        let err = h.scan("/b", true, 1, 4).unwrap_err();
        assert_eq!(err.code, Code::EventIndexCleared);
        assert_eq!(err.cause, "the requested history has been cleared [2/1]");
        assert_eq!(err.index, 4);
        // /bc is not under /b
        assert!(h.scan("/b", true, 3, 4).unwrap().unwrap().index() == 4);
    }
}
