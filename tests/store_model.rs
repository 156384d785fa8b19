//! Model-based property test of the store: random sequences of writes, reads, expiries,
//! history scans and snapshot round trips run against the real [`Store`] and against a
//! deliberately simple model written here from etcd's v2 store rules (a flat map from path to
//! node, an index and a list of events). After every step the two must agree on:
//!
//! * the answer: the event (every field, and its v2 JSON from the store's renderer) or the
//!   error (code, cause, index and the current value v1 renders);
//! * the whole tree (a recursive listing with hidden keys, and its JSON), the node count and
//!   the earliest expiry time;
//! * the index, and the write counters of `/v2/stats/store` (etcd's accounting, quirks
//!   included);
//! * the history the store holds (its events, oldest first), and what a watch from a past
//!   index finds in it (`Watch` steps: one-shot and stream, 401 when the index is cleared);
//! * what every live watcher (`LiveWatch` steps: exact or recursive, one-shot or stream,
//!   showing hidden keys or not) was sent, whether its channel is closed, and the number of
//!   watchers the store counts.
//!
//! `Snapshot` steps encode and decode `store.snapshot()`, restore it into a fresh store and
//! compare; sometimes the fresh store carries on in place of the old one. Every snapshot
//! taken must still encode the same bytes, and restore to the state of its time, after all
//! the writes that follow.
//!
//! Keys come from a small alphabet (`/a`, `/a/b`, `/ab`, `/_h`...; some spelled unclean, like
//! `a/b/` or `/a/./b/../c`) so operations collide. The model never calls store code: it
//! keeps its own paths, and only uses the store's data types (`Event`, `NodeView`,
//! `EtcdError`) to say what it expects.
//!
//! Runs 256 cases of up to 40 steps by default; for a longer run:
//! `PROPTEST_CASES=10000 cargo test --test store_model`. A failure prints the shrunk sequence
//! of steps and the calls it made.

use std::collections::BTreeMap;
use std::fmt;

use etcd::error::{Code, EtcdError};
use etcd::store::json::v2_event_json;
use etcd::store::watch::Watcher;
use etcd::store::{Action, Event, NodeView, OnCleared, StatsSnapshot, Store, StoreSnapshot};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use tokio::sync::mpsc::error::TryRecvError;

const S: i64 = 1_000_000_000;
const MS: i64 = 1_000_000;
/// 2030-01-01T00:00:00Z, the clock at the start of every case.
const T0: i64 = 1_893_456_000 * S;
/// Expiry times before 2000-01-01 mean "no TTL" (etcd).
const Y2K: i64 = 946_684_800 * S;
/// A small history, so sequences run past it and watches meet error 401.
const HISTORY: usize = 6;

/// Keys as a client spells them, and the path etcd cleans them to.
const KEYS: &[(&str, &str)] = &[
    ("/a", "/a"),
    ("/a/b", "/a/b"),
    ("/b", "/b"),
    ("/a/b/c", "/a/b/c"),
    ("/ab", "/ab"),
    ("/_h", "/_h"),
    ("/a/_h", "/a/_h"),
    ("/_h/x", "/_h/x"),
    ("a/b/", "/a/b"),
    ("//a//", "/a"),
    ("/a/./b/../c", "/a/c"),
    ("/", "/"),
    ("/x/..", "/"),
];

const VALUES: &[&str] = &["x", "", "y", "<&>é"];

// ---------------------------------------------------------------------------------------
// steps

/// A key: one of the alphabet, or - resolved when the step runs, so that steps often meet
/// a node or an event - the n-th node that exists (in path order), or the key of the n-th
/// latest event.
#[derive(Clone, Copy)]
enum Key {
    Fixed(usize),
    Existing(u8),
    Recent(u8),
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Fixed(i) => write!(f, "{:?}", KEYS[*i].0),
            Key::Existing(n) => write!(f, "Existing({n})"),
            Key::Recent(n) => write!(f, "Recent({n})"),
        }
    }
}

#[derive(Clone, Copy)]
struct Val(usize);

impl Val {
    fn s(self) -> &'static str {
        VALUES[self.0]
    }
}

impl fmt::Debug for Val {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.s())
    }
}

/// The TTL a write asks for.
#[derive(Debug, Clone, Copy)]
enum Ttl {
    None,
    /// Expires this many milliseconds from now.
    Ms(u16),
    /// An absolute time before 2000: no TTL.
    Ancient,
    /// The last representable time (a huge TTL, saturated).
    Far,
}

/// A prevIndex, chosen relative to the key so that it sometimes matches.
#[derive(Debug, Clone, Copy)]
enum Idx {
    Abs(u8),
    /// The key's modified index (1 when there is no key).
    Current,
    CurrentPlus1,
}

/// The waitIndex of a watch.
#[derive(Debug, Clone, Copy)]
enum Since {
    Abs(u8),
    /// This many indexes back from the store index (0: the last write).
    Back(u8),
}

#[derive(Debug, Clone)]
enum Op {
    /// `value: None` makes a directory.
    Set {
        key: Key,
        value: Option<Val>,
        ttl: Ttl,
        refresh: bool,
    },
    Create {
        key: Key,
        value: Option<Val>,
        ttl: Ttl,
        unique: bool,
    },
    Update {
        key: Key,
        value: Val,
        ttl: Ttl,
        refresh: bool,
    },
    Cas {
        key: Key,
        prev_value: Option<Val>,
        prev_index: Option<Idx>,
        value: Val,
        ttl: Ttl,
        refresh: bool,
    },
    Delete {
        key: Key,
        dir: bool,
        recursive: bool,
    },
    Cad {
        key: Key,
        prev_value: Option<Val>,
        prev_index: Option<Idx>,
    },
    /// Move the clock on, then expire what is due.
    Expire { advance_ms: u16 },
    /// Move the clock on without expiring anything (overdue nodes stay until an expiry).
    Tick { advance_ms: u16 },
    Get {
        key: Key,
        recursive: bool,
        hidden: bool,
    },
    /// A watch from a past index, answered from the history (`v1`: an index older than the
    /// history waits for the next change instead of answering 401).
    Watch {
        key: Key,
        recursive: bool,
        stream: bool,
        since: Since,
        v1: bool,
    },
    /// Snapshot round trip; with `adopt`, the restored store carries on instead of the old
    /// (and every live watcher's channel closes).
    Snapshot { adopt: bool },
    /// A live watcher from now on (what it is sent is checked after every step).
    LiveWatch {
        key: Key,
        recursive: bool,
        stream: bool,
        show_hidden: bool,
    },
}

fn key() -> impl Strategy<Value = Key> {
    // The plain keys are picked more often than the unclean spellings.
    prop_oneof![
        4 => (0..8usize).prop_map(Key::Fixed),
        1 => (0..KEYS.len()).prop_map(Key::Fixed),
        3 => any::<u8>().prop_map(Key::Existing),
        1 => (0u8..4).prop_map(Key::Recent),
    ]
}

/// Watches look at recently written keys more often, so that they find events.
fn watch_key() -> impl Strategy<Value = Key> {
    prop_oneof![key(), (0u8..4).prop_map(Key::Recent)]
}

fn val() -> impl Strategy<Value = Val> {
    (0..VALUES.len()).prop_map(Val)
}

fn ttl() -> impl Strategy<Value = Ttl> {
    prop_oneof![
        3 => Just(Ttl::None),
        3 => (0u16..4000).prop_map(Ttl::Ms),
        1 => Just(Ttl::Ancient),
        1 => Just(Ttl::Far),
    ]
}

fn idx() -> impl Strategy<Value = Idx> {
    prop_oneof![
        (0u8..12).prop_map(Idx::Abs),
        Just(Idx::Current),
        Just(Idx::CurrentPlus1),
    ]
}

fn since() -> impl Strategy<Value = Since> {
    prop_oneof![
        1 => (0u8..30).prop_map(Since::Abs),
        4 => (0u8..8).prop_map(Since::Back),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (key(), prop::option::weighted(0.8, val()), ttl(), prop::bool::weighted(0.15))
            .prop_map(|(key, value, ttl, refresh)| Op::Set { key, value, ttl, refresh }),
        3 => (key(), prop::option::weighted(0.8, val()), ttl(), any::<bool>())
            .prop_map(|(key, value, ttl, unique)| Op::Create { key, value, ttl, unique }),
        3 => (key(), val(), ttl(), prop::bool::weighted(0.2))
            .prop_map(|(key, value, ttl, refresh)| Op::Update { key, value, ttl, refresh }),
        4 => (key(), prop::option::of(val()), prop::option::of(idx()), val(), ttl(),
              prop::bool::weighted(0.15))
            .prop_map(|(key, prev_value, prev_index, value, ttl, refresh)| Op::Cas {
                key, prev_value, prev_index, value, ttl, refresh,
            }),
        4 => (key(), any::<bool>(), any::<bool>())
            .prop_map(|(key, dir, recursive)| Op::Delete { key, dir, recursive }),
        3 => (key(), prop::option::of(val()), prop::option::of(idx()))
            .prop_map(|(key, prev_value, prev_index)| Op::Cad { key, prev_value, prev_index }),
        3 => (0u16..3000).prop_map(|advance_ms| Op::Expire { advance_ms }),
        1 => (0u16..3000).prop_map(|advance_ms| Op::Tick { advance_ms }),
        2 => (key(), any::<bool>(), any::<bool>())
            .prop_map(|(key, recursive, hidden)| Op::Get { key, recursive, hidden }),
        3 => (watch_key(), any::<bool>(), any::<bool>(), since())
            .prop_flat_map(|(key, recursive, stream, since)| {
                prop::bool::weighted(0.2)
                    .prop_map(move |v1| Op::Watch { key, recursive, stream, since, v1 })
            }),
        1 => any::<bool>().prop_map(|adopt| Op::Snapshot { adopt }),
        2 => (key(), prop::bool::weighted(0.7), any::<bool>(), prop::bool::weighted(0.3))
            .prop_map(|(key, recursive, stream, show_hidden)| Op::LiveWatch {
                key, recursive, stream, show_hidden,
            }),
    ]
}

// ---------------------------------------------------------------------------------------
// the model

#[derive(Debug, Clone, PartialEq)]
struct MNode {
    dir: bool,
    /// Empty for a directory.
    value: String,
    created: u64,
    modified: u64,
    expire_at: Option<i64>,
}

#[derive(Debug, Clone, Default)]
struct Model {
    /// Every node but the root, by clean path.
    nodes: BTreeMap<String, MNode>,
    index: u64,
    /// Every event ever; the store holds the last `HISTORY`.
    events: Vec<Event>,
    /// The paths the write being made removed (for the watchers at them).
    removed: Vec<String>,
    /// Live watchers, in the order they were made.
    watchers: Vec<MWatcher>,
    /// The write counters of `/v2/stats/store` (reads are not modelled).
    stats: StatsSnapshot,
}

#[derive(Debug, Clone, Copy)]
enum Write {
    Set,
    Create,
    Update,
    Cas,
    Delete,
    Cad,
}

/// A live watcher and what it must have been sent.
#[derive(Debug, Clone)]
struct MWatcher {
    key: String,
    recursive: bool,
    stream: bool,
    show_hidden: bool,
    /// Sent, not yet read.
    pending: Vec<Event>,
    /// Its channel is closed (a one-shot watcher that fired, or a store that was replaced).
    closed: bool,
}

impl MWatcher {
    /// etcd's rules: a watcher at the event's key always hears it; one at an ancestor only
    /// when recursive and nothing below it on the way is hidden (unless it shows hidden
    /// keys); one at a path a removal took away always hears it.
    fn wants(&self, ev: &Event, removed: &[String]) -> bool {
        let k = ev.node.key.as_str();
        if self.key == k || removed.contains(&self.key) {
            return true;
        }
        if !self.recursive || !under(k, &self.key) {
            return false;
        }
        let below = if self.key == "/" {
            k
        } else {
            &k[self.key.len()..]
        };
        self.show_hidden || !below.split('/').any(|seg| seg.starts_with('_'))
    }
}

/// `/a/b` -> `/a`; `/a` -> `/`.
fn parent_of(p: &str) -> &str {
    match p.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &p[..i],
    }
}

/// `/a/b/c` -> `/a`, `/a/b`, `/a/b/c`; `/` -> nothing.
fn prefixes(p: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for seg in p.split('/').filter(|s| !s.is_empty()) {
        cur.push('/');
        cur.push_str(seg);
        out.push(cur.clone());
    }
    out
}

/// Is `p` the directory `dir` or below it?
fn under(p: &str, dir: &str) -> bool {
    dir == "/" || p == dir || (p.starts_with(dir) && p[dir.len()..].starts_with('/'))
}

fn expiry(t: Option<i64>) -> Option<i64> {
    t.filter(|&t| t >= Y2K)
}

fn view(p: &str, n: &MNode) -> NodeView {
    NodeView {
        key: p.to_string(),
        value: (!n.dir).then(|| n.value.clone()),
        dir: n.dir,
        expire_at: n.expire_at,
        modified_index: n.modified,
        created_index: n.created,
        nodes: None,
    }
}

fn root_view() -> NodeView {
    NodeView {
        key: "/".into(),
        value: None,
        dir: true,
        expire_at: None,
        modified_index: 0,
        created_index: 0,
        nodes: None,
    }
}

/// The node left in an event about a removal: no value, no expiry, the new index.
fn removed_view(p: &str, n: &MNode, index: u64) -> NodeView {
    NodeView {
        key: p.to_string(),
        value: None,
        dir: n.dir,
        expire_at: None,
        modified_index: index,
        created_index: n.created,
        nodes: None,
    }
}

fn event(action: Action, node: NodeView, prev: Option<NodeView>, refresh: bool) -> Event {
    Event {
        action,
        node,
        prev_node: prev,
        refresh,
        at: 0,
    }
}

impl Model {
    /// Count a write the way etcd 3.4's `/v2/stats/store` does (measured on etcd 3.4.23):
    /// some refusals count as successes - update of the root or of a directory with a
    /// value; compare-and-swap and delete of the root; compare-and-delete of the root or a
    /// directory, or a failed compare - and a create that runs into a key on its way
    /// counts as a failed set as well.
    fn count(&mut self, w: Write, res: &Result<Event, EtcdError>) {
        let code = res.as_ref().err().map(|e| e.code);
        let st = &mut self.stats;
        let as_success = |codes: &[Code]| code.is_none_or(|c| codes.contains(&c));
        let (ok, success, fail) = match w {
            Write::Set => (code.is_none(), &mut st.sets_success, &mut st.sets_fail),
            Write::Create => {
                if code == Some(Code::NotDir) {
                    st.sets_fail += 1;
                }
                (code.is_none(), &mut st.create_success, &mut st.create_fail)
            }
            Write::Update => (
                as_success(&[Code::RootReadOnly, Code::NotFile]),
                &mut st.update_success,
                &mut st.update_fail,
            ),
            Write::Cas => (
                as_success(&[Code::RootReadOnly]),
                &mut st.compare_and_swap_success,
                &mut st.compare_and_swap_fail,
            ),
            Write::Delete => (
                as_success(&[Code::RootReadOnly]),
                &mut st.delete_success,
                &mut st.delete_fail,
            ),
            Write::Cad => (
                as_success(&[Code::NotFile, Code::TestFailed]),
                &mut st.compare_and_delete_success,
                &mut st.compare_and_delete_fail,
            ),
        };
        *if ok { success } else { fail } += 1;
    }

    fn err(&self, code: Code, cause: impl Into<String>) -> EtcdError {
        EtcdError::new(code, cause, self.index)
    }

    /// Walk to `p`: 104 at a key on the way, 100 at the first missing component.
    /// `Ok(None)` is the root.
    fn lookup(&self, p: &str) -> Result<Option<&MNode>, EtcdError> {
        let mut found: Option<&MNode> = None;
        for pre in prefixes(p) {
            if let Some(parent) = found
                && !parent.dir
            {
                return Err(self.err(Code::NotDir, parent_of(&pre)));
            }
            match self.nodes.get(&pre) {
                Some(n) => found = Some(n),
                None => return Err(self.err(Code::KeyNotFound, pre)),
            }
        }
        Ok(found)
    }

    fn lookup_view(&self, p: &str) -> Result<NodeView, EtcdError> {
        Ok(match self.lookup(p)? {
            Some(n) => view(p, n),
            None => root_view(),
        })
    }

    fn children(&self, p: &str) -> Vec<(&String, &MNode)> {
        self.nodes
            .iter()
            .filter(|(k, _)| parent_of(k) == p)
            .collect()
    }

    fn listing(&self, p: &str, recursive: bool, hidden: bool) -> NodeView {
        let mut v = match self.nodes.get(p) {
            Some(n) => view(p, n),
            None => root_view(),
        };
        if v.dir {
            v.nodes = Some(
                self.children(p)
                    .into_iter()
                    .filter(|(k, _)| hidden || !k.rsplit('/').next().unwrap().starts_with('_'))
                    .map(|(k, n)| {
                        if recursive && n.dir {
                            self.listing(k, true, hidden)
                        } else {
                            view(k, n)
                        }
                    })
                    .collect(),
            );
        }
        v
    }

    fn get(&self, p: &str, recursive: bool, hidden: bool) -> Result<NodeView, EtcdError> {
        self.lookup(p)?;
        Ok(self.listing(p, recursive, hidden))
    }

    fn next_expiry(&self) -> Option<i64> {
        self.nodes.values().filter_map(|n| n.expire_at).min()
    }

    fn commit(&mut self, mut ev: Event, now: i64) -> Event {
        assert_eq!(ev.node.modified_index, self.index + 1, "model bug");
        ev.at = now;
        self.index += 1;
        self.events.push(ev.clone());
        let removed = std::mem::take(&mut self.removed);
        if !ev.refresh {
            for w in self.watchers.iter_mut().filter(|w| !w.closed) {
                if w.wants(&ev, &removed) {
                    w.pending.push(ev.clone());
                    w.closed = !w.stream;
                }
            }
        }
        ev
    }

    fn remove_subtree(&mut self, p: &str) {
        self.removed = self.nodes.keys().filter(|k| under(k, p)).cloned().collect();
        self.nodes.retain(|k, _| !under(k, p));
    }

    /// Put a node at `p` (set and create): parents made as needed.
    fn put(
        &mut self,
        p: &str,
        value: Option<String>,
        expire_at: Option<i64>,
        replace: bool,
        action: Action,
    ) -> Result<Event, EtcdError> {
        if p == "/" {
            return Err(self.err(Code::RootReadOnly, "/"));
        }
        let parent = parent_of(p);
        for pre in prefixes(parent) {
            if self.nodes.get(&pre).is_some_and(|n| !n.dir) {
                return Err(self.err(Code::NotDir, pre));
            }
        }
        if let Some(n) = self.nodes.get(p) {
            if !replace {
                let mut e = self.err(Code::NodeExist, p);
                e.current = (!n.dir).then(|| n.value.clone());
                return Err(e);
            }
            if n.dir {
                return Err(self.err(Code::NotFile, p));
            }
        }
        let next = self.index + 1;
        for pre in prefixes(parent) {
            self.nodes.entry(pre).or_insert(MNode {
                dir: true,
                value: String::new(),
                created: next,
                modified: next,
                expire_at: None,
            });
        }
        let n = MNode {
            dir: value.is_none(),
            value: value.unwrap_or_default(),
            created: next,
            modified: next,
            expire_at: expiry(expire_at),
        };
        let v = view(p, &n);
        self.nodes.insert(p.to_string(), n);
        Ok(event(action, v, None, false))
    }

    fn set(
        &mut self,
        p: &str,
        value: Option<String>,
        expire_at: Option<i64>,
        refresh: bool,
        now: i64,
    ) -> Result<Event, EtcdError> {
        let prev = match self.lookup_view(p) {
            Ok(v) => Some(v),
            Err(e) if e.code == Code::KeyNotFound && !refresh => None,
            Err(e) => return Err(e),
        };
        // A refresh keeps the value; whether the node is a directory is still the request's
        // to say (etcd: `Set(path, dir, n.Value, ...)`).
        let value = match (&prev, refresh) {
            (Some(prev), true) => value.map(|_| prev.value.clone().unwrap_or_default()),
            _ => value,
        };
        let mut ev = self.put(p, value, expire_at, true, Action::Set)?;
        ev.prev_node = prev;
        ev.refresh = refresh;
        Ok(self.commit(ev, now))
    }

    fn create(
        &mut self,
        p: &str,
        value: Option<String>,
        expire_at: Option<i64>,
        unique: bool,
        now: i64,
    ) -> Result<Event, EtcdError> {
        let p = if unique {
            let name = format!("{:020}", self.index + 1);
            if p == "/" {
                format!("/{name}")
            } else {
                format!("{p}/{name}")
            }
        } else {
            p.to_string()
        };
        let ev = self.put(&p, value, expire_at, false, Action::Create)?;
        Ok(self.commit(ev, now))
    }

    fn update(
        &mut self,
        p: &str,
        value: String,
        expire_at: Option<i64>,
        refresh: bool,
        now: i64,
    ) -> Result<Event, EtcdError> {
        if p == "/" {
            return Err(self.err(Code::RootReadOnly, "/"));
        }
        let n = self.lookup(p)?.expect("not the root").clone();
        if n.dir && !value.is_empty() {
            return Err(self.err(Code::NotFile, p));
        }
        let next = self.index + 1;
        let new_value = if refresh { n.value.clone() } else { value };
        let node = self.nodes.get_mut(p).expect("looked up");
        if !node.dir {
            node.value = new_value;
            // A directory keeps its stored modifiedIndex when only its TTL changes (etcd).
            node.modified = next;
        }
        node.expire_at = expiry(expire_at);
        let mut v = view(p, node);
        v.modified_index = next;
        let ev = event(Action::Update, v, Some(view(p, &n)), refresh);
        Ok(self.commit(ev, now))
    }

    /// The compare of a CAS or CAD: empty prevValue and zero prevIndex always match.
    fn compare(
        &self,
        n: &MNode,
        prev_value: Option<&str>,
        prev_index: Option<u64>,
    ) -> Result<(), EtcdError> {
        let pv = prev_value.filter(|v| !v.is_empty());
        let pi = prev_index.filter(|&i| i != 0);
        let value_ok = pv.is_none_or(|v| v == n.value);
        let index_ok = pi.is_none_or(|i| i == n.modified);
        let v = pv.unwrap_or_default();
        let i = pi.unwrap_or_default();
        let cause = match (value_ok, index_ok) {
            (true, true) => return Ok(()),
            (false, true) => format!("[{v} != {}]", n.value),
            (true, false) => format!("[{i} != {}]", n.modified),
            (false, false) => format!("[{v} != {}] [{i} != {}]", n.value, n.modified),
        };
        Err(self
            .err(Code::TestFailed, cause)
            .with_current(n.value.clone()))
    }

    #[allow(clippy::too_many_arguments)]
    fn cas(
        &mut self,
        p: &str,
        prev_value: Option<&str>,
        prev_index: Option<u64>,
        value: String,
        expire_at: Option<i64>,
        refresh: bool,
        now: i64,
    ) -> Result<Event, EtcdError> {
        if p == "/" {
            return Err(self.err(Code::RootReadOnly, "/"));
        }
        let n = self.lookup(p)?.expect("not the root").clone();
        if n.dir {
            return Err(self.err(Code::NotFile, p));
        }
        self.compare(&n, prev_value, prev_index)?;
        let next = self.index + 1;
        let node = self.nodes.get_mut(p).expect("looked up");
        if !refresh {
            node.value = value;
        }
        node.modified = next;
        node.expire_at = expiry(expire_at);
        let v = view(p, node);
        let ev = event(Action::CompareAndSwap, v, Some(view(p, &n)), refresh);
        Ok(self.commit(ev, now))
    }

    fn delete(
        &mut self,
        p: &str,
        dir: bool,
        recursive: bool,
        now: i64,
    ) -> Result<Event, EtcdError> {
        if p == "/" {
            return Err(self.err(Code::RootReadOnly, "/"));
        }
        let n = self.lookup(p)?.expect("not the root").clone();
        if n.dir {
            if !dir && !recursive {
                return Err(self.err(Code::NotFile, p));
            }
            if !recursive && !self.children(p).is_empty() {
                return Err(self.err(Code::DirNotEmpty, p));
            }
        }
        let next = self.index + 1;
        self.remove_subtree(p);
        let ev = event(
            Action::Delete,
            removed_view(p, &n, next),
            Some(view(p, &n)),
            false,
        );
        Ok(self.commit(ev, now))
    }

    fn cad(
        &mut self,
        p: &str,
        prev_value: Option<&str>,
        prev_index: Option<u64>,
        now: i64,
    ) -> Result<Event, EtcdError> {
        if p == "/" {
            // etcd 3.4 does not guard the root here: it finds a directory, 102, and the
            // cause (its internal root path) is trimmed to nothing.
            return Err(self.err(Code::NotFile, ""));
        }
        let n = self.lookup(p)?.expect("not the root").clone();
        if n.dir {
            return Err(self.err(Code::NotFile, p));
        }
        self.compare(&n, prev_value, prev_index)?;
        let next = self.index + 1;
        self.remove_subtree(p);
        let ev = event(
            Action::CompareAndDelete,
            removed_view(p, &n, next),
            Some(view(p, &n)),
            false,
        );
        Ok(self.commit(ev, now))
    }

    /// Remove every node due at `now`, earliest first (ties by path), one event each.
    fn expire(&mut self, now: i64) -> Vec<Event> {
        let mut out = Vec::new();
        loop {
            let due = self
                .nodes
                .iter()
                .filter_map(|(k, n)| n.expire_at.filter(|&t| t <= now).map(|t| (t, k.clone())))
                .min();
            let Some((_, p)) = due else { break };
            let n = self.nodes[&p].clone();
            let next = self.index + 1;
            self.remove_subtree(&p);
            let ev = event(
                Action::Expire,
                removed_view(&p, &n, next),
                Some(view(&p, &n)),
                false,
            );
            out.push(self.commit(ev, now));
        }
        out
    }

    fn held(&self) -> &[Event] {
        &self.events[self.events.len().saturating_sub(HISTORY)..]
    }

    /// What a watch from `since` finds in the history: the first matching event (all of
    /// them for a stream), none, or 401.
    fn scan(
        &self,
        p: &str,
        recursive: bool,
        stream: bool,
        since: u64,
    ) -> Result<Vec<Event>, EtcdError> {
        let since = if since == 0 { self.index + 1 } else { since };
        let held = self.held();
        let oldest = held.first().map_or(0, |e| e.node.modified_index);
        if since < oldest {
            return Err(self.err(
                Code::EventIndexCleared,
                format!("the requested history has been cleared [{oldest}/{since}]"),
            ));
        }
        let matching = held.iter().filter(|e| {
            e.node.modified_index >= since
                && !e.refresh
                && (e.node.key == p
                    || (recursive && under(&e.node.key, p))
                    || (matches!(
                        e.action,
                        Action::Delete | Action::Expire | Action::CompareAndDelete
                    ) && e
                        .prev_node
                        .as_ref()
                        .is_some_and(|prev| prev.dir && under(p, &prev.key))))
        });
        Ok(if stream {
            matching.cloned().collect()
        } else {
            matching.take(1).cloned().collect()
        })
    }
}

// ---------------------------------------------------------------------------------------
// running a sequence

/// An old snapshot and what it must still say.
struct Taken {
    snap: StoreSnapshot,
    bytes: Vec<u8>,
    tree: NodeView,
    index: u64,
    history: Vec<Event>,
}

struct Run {
    store: Store,
    model: Model,
    now: i64,
    taken: Vec<Taken>,
    /// The live watchers, as `model.watchers`.
    live: Vec<Watcher>,
    trace: Vec<String>,
}

fn encode(s: &StoreSnapshot) -> Vec<u8> {
    let mut out = Vec::new();
    s.encode(&mut out).expect("encoding to a vector");
    out
}

fn render(r: &Result<Event, EtcdError>, now: i64) -> String {
    match r {
        Ok(ev) => v2_event_json(ev.action, &ev.node, ev.prev_node.as_ref(), now, false),
        Err(e) => format!(
            "error {} cause={:?} index={} current={:?}",
            e.code.number(),
            e.cause,
            e.index,
            e.current
        ),
    }
}

impl Run {
    fn new() -> Run {
        Run {
            store: Store::new(HISTORY),
            model: Model::default(),
            now: T0,
            taken: Vec::new(),
            live: Vec::new(),
            trace: Vec::new(),
        }
    }

    fn fail(&self, what: &str, got: &dyn fmt::Debug, want: &dyn fmt::Debug) -> TestCaseError {
        TestCaseError::fail(format!(
            "{what} differs\n  store: {got:?}\n  model: {want:?}\ncalls:\n  {}",
            self.trace.join("\n  ")
        ))
    }

    fn same<T: PartialEq + fmt::Debug>(
        &self,
        what: &str,
        got: &T,
        want: &T,
    ) -> Result<(), TestCaseError> {
        if got == want {
            Ok(())
        } else {
            Err(self.fail(what, got, want))
        }
    }

    fn expire_at(&self, ttl: Ttl) -> Option<i64> {
        match ttl {
            Ttl::None => None,
            Ttl::Ms(ms) => Some(self.now + i64::from(ms) * MS),
            Ttl::Ancient => Some(5 * S),
            Ttl::Far => Some(i64::MAX),
        }
    }

    fn index_of(&self, clean: &str, idx: Idx) -> u64 {
        let current = self.model.nodes.get(clean).map_or(1, |n| n.modified);
        match idx {
            Idx::Abs(i) => u64::from(i),
            Idx::Current => current,
            Idx::CurrentPlus1 => current + 1,
        }
    }

    fn answer(
        &mut self,
        w: Write,
        call: String,
        got: Result<Event, EtcdError>,
        want: Result<Event, EtcdError>,
    ) -> Result<(), TestCaseError> {
        self.model.count(w, &want);
        self.trace
            .push(format!("{call} -> {}", render(&got, self.now).trim_end()));
        self.same("the answer", &got, &want)?;
        self.same(
            "the rendered answer",
            &render(&got, self.now),
            &render(&want, self.now),
        )
    }

    /// A key as the step sends it, and its clean path.
    fn resolve(&self, key: Key) -> (String, String) {
        match key {
            Key::Fixed(i) => (KEYS[i].0.to_string(), KEYS[i].1.to_string()),
            Key::Existing(n) => {
                let p = match self.model.nodes.len() {
                    0 => "/a".to_string(),
                    len => self
                        .model
                        .nodes
                        .keys()
                        .nth(usize::from(n) % len)
                        .unwrap()
                        .clone(),
                };
                (p.clone(), p)
            }
            Key::Recent(n) => {
                let events = &self.model.events;
                let p = match events.len() {
                    0 => "/a".to_string(),
                    len => events[len - 1 - usize::from(n) % len].node.key.clone(),
                };
                (p.clone(), p)
            }
        }
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let now = self.now;
        let (raw, clean) = match *op {
            Op::Set { key, .. }
            | Op::Create { key, .. }
            | Op::Update { key, .. }
            | Op::Cas { key, .. }
            | Op::Delete { key, .. }
            | Op::Cad { key, .. }
            | Op::Get { key, .. }
            | Op::Watch { key, .. }
            | Op::LiveWatch { key, .. } => self.resolve(key),
            Op::Expire { .. } | Op::Tick { .. } | Op::Snapshot { .. } => Default::default(),
        };
        self.store.set_write_time(now);
        match *op {
            Op::Set {
                key: _,
                value,
                ttl,
                refresh,
            } => {
                let value = value.map(|v| v.s().to_string());
                let at = self.expire_at(ttl);
                let call = format!(
                    "set({:?}, {value:?}, {at:?}, refresh={refresh})",
                    raw.as_str()
                );
                let got = self.store.set(raw.as_str(), value.clone(), at, refresh);
                let want = self.model.set(clean.as_str(), value, at, refresh, now);
                self.answer(Write::Set, call, got, want)?;
            }
            Op::Create {
                key: _,
                value,
                ttl,
                unique,
            } => {
                let value = value.map(|v| v.s().to_string());
                let at = self.expire_at(ttl);
                let call = format!(
                    "create({:?}, {value:?}, {at:?}, unique={unique})",
                    raw.as_str()
                );
                let got = self.store.create(raw.as_str(), value.clone(), at, unique);
                let want = self.model.create(clean.as_str(), value, at, unique, now);
                self.answer(Write::Create, call, got, want)?;
            }
            Op::Update {
                key: _,
                value,
                ttl,
                refresh,
            } => {
                let at = self.expire_at(ttl);
                let call = format!(
                    "update({:?}, {:?}, {at:?}, refresh={refresh})",
                    raw.as_str(),
                    value.s()
                );
                let got = self
                    .store
                    .update(raw.as_str(), value.s().into(), at, refresh);
                let want = self
                    .model
                    .update(clean.as_str(), value.s().into(), at, refresh, now);
                self.answer(Write::Update, call, got, want)?;
            }
            Op::Cas {
                key: _,
                prev_value,
                prev_index,
                value,
                ttl,
                refresh,
            } => {
                let at = self.expire_at(ttl);
                let pv = prev_value.map(Val::s);
                let pi = prev_index.map(|i| self.index_of(&clean, i));
                let call = format!(
                    "compare_and_swap({:?}, {pv:?}, {pi:?}, {:?}, {at:?}, refresh={refresh})",
                    raw.as_str(),
                    value.s()
                );
                let got = self.store.compare_and_swap(
                    raw.as_str(),
                    pv,
                    pi,
                    value.s().into(),
                    at,
                    refresh,
                );
                let want =
                    self.model
                        .cas(clean.as_str(), pv, pi, value.s().into(), at, refresh, now);
                self.answer(Write::Cas, call, got, want)?;
            }
            Op::Delete {
                key: _,
                dir,
                recursive,
            } => {
                let call = format!(
                    "delete({:?}, dir={dir}, recursive={recursive})",
                    raw.as_str()
                );
                let got = self.store.delete(raw.as_str(), dir, recursive);
                let want = self.model.delete(clean.as_str(), dir, recursive, now);
                self.answer(Write::Delete, call, got, want)?;
            }
            Op::Cad {
                key: _,
                prev_value,
                prev_index,
            } => {
                let pv = prev_value.map(Val::s);
                let pi = prev_index.map(|i| self.index_of(&clean, i));
                let call = format!("compare_and_delete({:?}, {pv:?}, {pi:?})", raw.as_str());
                let got = self.store.compare_and_delete(raw.as_str(), pv, pi);
                let want = self.model.cad(clean.as_str(), pv, pi, now);
                self.answer(Write::Cad, call, got, want)?;
            }
            Op::Expire { advance_ms } | Op::Tick { advance_ms } => {
                self.now += i64::from(advance_ms) * MS;
                let now = self.now;
                if matches!(op, Op::Expire { .. }) {
                    self.store.set_write_time(now);
                    let got = self.store.expire(now);
                    let want = self.model.expire(now);
                    self.model.stats.expire_count += want.len() as u64;
                    let keys: Vec<_> = got.iter().map(|e| e.node.key.as_str()).collect();
                    self.trace.push(format!(
                        "expire(now = T0 + {}ms) -> {keys:?}",
                        (now - T0) / MS
                    ));
                    self.same("the expired events", &got, &want)?;
                } else {
                    self.trace
                        .push(format!("clock: now = T0 + {}ms", (now - T0) / MS));
                }
            }
            Op::Get {
                key: _,
                recursive,
                hidden,
            } => {
                let got = self.store.get(raw.as_str(), recursive, hidden);
                let want = self.model.get(clean.as_str(), recursive, hidden);
                self.trace.push(format!(
                    "get({:?}, recursive={recursive}, hidden={hidden}) -> {}",
                    raw.as_str(),
                    if got.is_ok() { "ok" } else { "error" }
                ));
                self.same("the read", &got, &want)?;
                let json = |r: &Result<NodeView, EtcdError>| match r {
                    Ok(v) => v2_event_json(Action::Get, v, None, now, false),
                    Err(e) => format!("{e:?}"),
                };
                self.same("the rendered read", &json(&got), &json(&want))?;
            }
            Op::Watch {
                key: _,
                recursive,
                stream,
                since,
                v1,
            } => {
                let since = match since {
                    Since::Abs(i) => u64::from(i),
                    Since::Back(k) => self.model.index.saturating_sub(u64::from(k)),
                };
                let got = self
                    .store
                    .watch(
                        raw.as_str(),
                        recursive,
                        stream,
                        Some(since),
                        false,
                        if v1 {
                            OnCleared::WaitForNext
                        } else {
                            OnCleared::Error
                        },
                    )
                    .map(|mut w| {
                        let mut evs = Vec::new();
                        while let Ok(ev) = w.rx.try_recv() {
                            evs.push((*ev).clone());
                        }
                        self.store.unwatch(&w);
                        (w.start_index, evs)
                    });
                let want = match self.model.scan(clean.as_str(), recursive, stream, since) {
                    Err(e) if v1 && e.code == Code::EventIndexCleared => Ok(Vec::new()),
                    r => r,
                }
                .map(|evs| (self.model.index, evs));
                self.trace.push(format!(
                    "watch({:?}, recursive={recursive}, stream={stream}, since={since}, \
                     v1={v1}) -> {:?}",
                    raw.as_str(),
                    got.as_ref()
                        .map(|(_, evs)| evs.iter().map(Event::index).collect::<Vec<_>>())
                        .map_err(|e| e.code.number())
                ));
                self.same("the watch from history", &got, &want)?;
            }
            Op::LiveWatch {
                key: _,
                recursive,
                stream,
                show_hidden,
            } => {
                self.trace.push(format!(
                    "live watch #{} ({raw:?}, recursive={recursive}, stream={stream}, \
                     show_hidden={show_hidden})",
                    self.live.len()
                ));
                let w = self
                    .store
                    .watch(&raw, recursive, stream, None, show_hidden, OnCleared::Error)
                    .map_err(|e| self.fail("a live watch", &e, &"a watcher"))?;
                self.live.push(w);
                self.model.watchers.push(MWatcher {
                    key: clean,
                    recursive,
                    stream,
                    show_hidden,
                    pending: Vec::new(),
                    closed: false,
                });
            }
            Op::Snapshot { adopt } => {
                self.trace
                    .push(format!("snapshot round trip (adopt={adopt})"));
                self.snapshot(adopt)?;
            }
        }
        self.check_watchers()?;
        self.check_state()
    }

    /// What every live watcher was sent since the last step, and whether it is closed.
    fn check_watchers(&mut self) -> Result<(), TestCaseError> {
        for (i, (w, m)) in self
            .live
            .iter_mut()
            .zip(&mut self.model.watchers)
            .enumerate()
        {
            let mut got = Vec::new();
            let closed = loop {
                match w.rx.try_recv() {
                    Ok(ev) => got.push((*ev).clone()),
                    Err(TryRecvError::Empty) => break false,
                    Err(TryRecvError::Disconnected) => break true,
                }
            };
            let want = (std::mem::take(&mut m.pending), m.closed);
            if (&got, closed) != (&want.0, want.1) {
                let what = format!("live watcher #{i}: events and closed");
                return Err(self.fail(&what, &(got, closed), &want));
            }
        }
        let open = self.model.watchers.iter().filter(|w| !w.closed).count();
        self.same("the watcher count", &self.store.watcher_count(), &open)
    }

    /// The whole visible state, store against model.
    fn check_state(&self) -> Result<(), TestCaseError> {
        self.same("the index", &self.store.index(), &self.model.index)?;
        let mut stats = self.store.stats();
        (stats.gets_success, stats.gets_fail, stats.watchers) = (0, 0, 0);
        self.same("the write counters", &stats, &self.model.stats)?;
        let tree = self.store.get("/", true, true);
        let want = self.model.listing("/", true, true);
        self.same("the tree", &tree, &Ok(want.clone()))?;
        self.same(
            "the rendered tree",
            &v2_event_json(Action::Get, &tree.unwrap(), None, self.now, false),
            &v2_event_json(Action::Get, &want, None, self.now, false),
        )?;
        self.same(
            "the node count",
            &self.store.node_count(),
            &(self.model.nodes.len() + 1),
        )?;
        self.same(
            "the next expiry",
            &self.store.next_expiry(),
            &self.model.next_expiry(),
        )?;
        self.same(
            "the history",
            &self.store.snapshot().history,
            &self.model.held().to_vec(),
        )
    }

    fn snapshot(&mut self, adopt: bool) -> Result<(), TestCaseError> {
        let snap = self.store.snapshot();
        let bytes = encode(&snap);
        let back = StoreSnapshot::decode(&mut bytes.as_slice())
            .map_err(|e| self.fail("decoding", &e.to_string(), &"a snapshot"))?;
        self.same("the decoded index", &back.index, &snap.index)?;
        self.same("the decoded tree", &back.root, &snap.root)?;
        self.same("the decoded history", &back.history, &snap.history)?;
        self.same("the decoded stats", &back.stats, &snap.stats)?;
        let mut fresh = Store::new(HISTORY);
        fresh.restore(back);
        self.same(
            "the restored tree",
            &fresh.get("/", true, true),
            &self.store.get("/", true, true),
        )?;
        self.same("the restored index", &fresh.index(), &self.store.index())?;
        self.same(
            "the restored next expiry",
            &fresh.next_expiry(),
            &self.store.next_expiry(),
        )?;
        self.same(
            "the restored node count",
            &fresh.node_count(),
            &self.store.node_count(),
        )?;
        self.same(
            "the restored history",
            &fresh.snapshot().history,
            &snap.history,
        )?;
        self.same(
            "the restored store's snapshot bytes",
            &encode(&fresh.snapshot()),
            &bytes,
        )?;
        self.taken.push(Taken {
            snap,
            bytes,
            tree: self.model.listing("/", true, true),
            index: self.model.index,
            history: self.model.held().to_vec(),
        });
        if adopt {
            self.store = fresh;
            for w in &mut self.model.watchers {
                w.closed = true;
            }
        }
        self.check_taken()
    }

    /// Every snapshot taken still encodes, and restores to, the state of its time.
    fn check_taken(&self) -> Result<(), TestCaseError> {
        for (i, t) in self.taken.iter().enumerate() {
            let what = format!("snapshot #{i} (index {})", t.index);
            self.same(&format!("{what}: bytes"), &encode(&t.snap), &t.bytes)?;
            let mut st = Store::new(HISTORY);
            st.restore(t.snap.clone());
            self.same(
                &format!("{what}: tree"),
                &st.get("/", true, true),
                &Ok(t.tree.clone()),
            )?;
            self.same(&format!("{what}: index"), &st.index(), &t.index)?;
            self.same(
                &format!("{what}: history"),
                &st.snapshot().history,
                &t.history,
            )?;
        }
        Ok(())
    }
}

fn run(ops: &[Op]) -> Result<(), TestCaseError> {
    let mut r = Run::new();
    r.check_state()?;
    for op in ops {
        r.step(op)?;
    }
    r.check_taken()
}

proptest! {
    #![proptest_config(ProptestConfig {
        // Failures are kept as explicit regression tests, not in a persistence file.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_store_behaves_like_the_model(ops in prop::collection::vec(op(), 1..40)) {
        run(&ops)?;
    }
}
