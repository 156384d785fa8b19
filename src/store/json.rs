//! How both API eras render events and node views as JSON.
//!
//! The v2 shape is the model (`{"action","node","prevNode"}` with `key, value, dir,
//! expiration, ttl, nodes, modifiedIndex, createdIndex`); the v1 shape (`{"action":"SET",
//! "key","prevValue","value","newKey","expiration","ttl","index"}`) is a view of it.
//!
//! The remaining `ttl` is computed here from the `now` the caller passes in: v2 rounds the
//! remaining time up, v1 (v0.1) rounds it down.
//!
//! JSON is written the way Go's `encoding/json` writes it - struct field order, and `<`, `>`,
//! `&`, U+2028, U+2029 escaped as `\u003c`... - so bodies match the original byte for byte.

use serde::Serialize;

use super::event::{Action, Event, NodeView};
use crate::go::{go_json, rfc3339_nanos};

// ---------------------------------------------------------------------------------------
// v2 rendering

/// A node as v2 shows it; it borrows the view's strings (a write's answer renders two).
#[derive(Serialize)]
struct NodeJson<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    key: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    dir: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    expiration: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ttl: Option<i64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    nodes: Vec<NodeJson<'a>>,
    #[serde(rename = "modifiedIndex", skip_serializing_if = "is_zero")]
    modified_index: u64,
    #[serde(rename = "createdIndex", skip_serializing_if = "is_zero")]
    created_index: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl NodeView {
    fn to_json_v2(&self, now: i64) -> NodeJson<'_> {
        NodeJson {
            // The root's key is empty in v2b and therefore omitted.
            key: if self.key == "/" { "" } else { &self.key },
            // Key views always carry their value (maybe ""); delete and expire events don't.
            value: if self.dir {
                None
            } else {
                self.value.as_deref()
            },
            dir: self.dir,
            expiration: self.expire_at.map(rfc3339_nanos),
            // Go's omitempty: a TTL that has run out is left out; the expiration stays.
            ttl: self.expire_at.map(|t| ttl_ceil(t, now)).filter(|&t| t != 0),
            nodes: self
                .nodes
                .as_ref()
                .map(|n| n.iter().map(|c| c.to_json_v2(now)).collect())
                .unwrap_or_default(),
            modified_index: self.modified_index,
            created_index: self.created_index,
        }
    }
}

#[derive(Serialize)]
struct EventJson<'a> {
    action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<NodeJson<'a>>,
    #[serde(rename = "prevNode", skip_serializing_if = "Option::is_none")]
    prev_node: Option<NodeJson<'a>>,
}

/// The v2 body of an event, with its trailing newline. `no_value` drops `node` and
/// `prevNode` (`noValueOnSuccess=true`).
pub fn v2_event_json(
    action: Action,
    node: &NodeView,
    prev: Option<&NodeView>,
    now: i64,
    no_value: bool,
) -> String {
    let body = EventJson {
        action: action.as_v2(),
        node: (!no_value).then(|| node.to_json_v2(now)),
        prev_node: if no_value {
            None
        } else {
            prev.map(|p| p.to_json_v2(now))
        },
    };
    let mut s = go_json(&body);
    s.push('\n');
    s
}

// ---------------------------------------------------------------------------------------
// v1 rendering

#[derive(Serialize)]
struct V1Json<'a> {
    action: &'static str,
    key: &'a str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    dir: bool,
    #[serde(rename = "prevValue", skip_serializing_if = "Option::is_none")]
    prev_value: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<&'a str>,
    #[serde(rename = "newKey", skip_serializing_if = "std::ops::Not::not")]
    new_key: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    expiration: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ttl: Option<i64>,
    index: u64,
}

/// The v1 body of a write event (no trailing newline, as v0.1 sent it).
pub fn v1_event_json(ev: &Event, now: i64) -> String {
    let prev_value = ev.prev_node.as_ref().and_then(|p| p.value.as_deref());
    let body = if ev.action.is_removal() {
        // v0.1 DELETE: the old value, and the expiration (without ttl) if it had one.
        let expire_at = ev.prev_node.as_ref().and_then(|p| p.expire_at);
        V1Json {
            action: ev.action.as_v1(),
            key: &ev.node.key,
            dir: false,
            prev_value,
            value: None,
            new_key: false,
            expiration: expire_at.map(rfc3339_nanos),
            ttl: None,
            index: ev.index(),
        }
    } else {
        V1Json {
            action: ev.action.as_v1(),
            key: &ev.node.key,
            dir: ev.node.dir,
            prev_value,
            value: ev.node.value.as_deref(),
            new_key: ev.prev_node.is_none(),
            expiration: ev.node.expire_at.map(rfc3339_nanos),
            ttl: ev
                .node
                .expire_at
                .map(|t| ttl_floor(t, now))
                .filter(|&t| t != 0),
            index: ev.index(),
        }
    };
    go_json(&body)
}

fn v1_get_entry(n: &NodeView, index: u64, now: i64) -> V1Json<'_> {
    V1Json {
        action: "GET",
        key: &n.key,
        dir: n.dir,
        prev_value: None,
        value: if n.dir { None } else { n.value.as_deref() },
        new_key: false,
        expiration: n.expire_at.map(rfc3339_nanos),
        ttl: n.expire_at.map(|t| ttl_floor(t, now)).filter(|&t| t != 0),
        index,
    }
}

/// The v1 body of a GET: one object for a key, an array of the direct children for a
/// directory (`[]` when empty). `index` is the store's current index.
pub fn v1_get_json(n: &NodeView, index: u64, now: i64) -> String {
    if n.dir {
        let entries: Vec<V1Json<'_>> = n
            .nodes
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|c| v1_get_entry(c, index, now))
            .collect();
        go_json(&entries)
    } else {
        go_json(&v1_get_entry(n, index, now))
    }
}

// ---------------------------------------------------------------------------------------
// shared helpers

const NANOS: i64 = 1_000_000_000;

/// Whole seconds left, rounded up (v2). A node past its expiry (waiting for the next expire
/// command) shows 0.
pub fn ttl_ceil(expire_at: i64, now: i64) -> i64 {
    let left = expire_at - now;
    if left <= 0 {
        0
    } else {
        (left + NANOS - 1) / NANOS
    }
}

/// Whole seconds left, rounded down (v0.1: `ttl=5` answers 4).
pub fn ttl_floor(expire_at: i64, now: i64) -> i64 {
    let left = expire_at - now;
    if left <= 0 { 0 } else { left / NANOS }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, value: &str, idx: u64) -> NodeView {
        NodeView {
            key: key.into(),
            value: Some(value.into()),
            dir: false,
            expire_at: None,
            modified_index: idx,
            created_index: idx,
            nodes: None,
        }
    }

    #[test]
    fn ttl_rounding_per_era() {
        let now = 1_000 * NANOS;
        assert_eq!(ttl_floor(now + 5 * NANOS - 1, now), 4);
        assert_eq!(ttl_ceil(now + 5 * NANOS - 1, now), 5);
        assert_eq!(ttl_ceil(now + 5 * NANOS, now), 5);
        assert_eq!(ttl_floor(now - 1, now), 0);
        assert_eq!(ttl_ceil(now - 1, now), 0);
    }

    #[test]
    fn v1_set_and_update_bodies() {
        let ev = Event {
            action: Action::Set,
            node: kv("/message", "Hello world", 3),
            prev_node: None,
            refresh: false,
            at: 0,
        };
        assert_eq!(
            v1_event_json(&ev, 0),
            r#"{"action":"SET","key":"/message","value":"Hello world","newKey":true,"index":3}"#
        );
        let ev = Event {
            action: Action::Set,
            node: kv("/message", "Hello etcd", 4),
            prev_node: Some(kv("/message", "Hello world", 3)),
            refresh: false,
            at: 0,
        };
        assert_eq!(
            v1_event_json(&ev, 0),
            r#"{"action":"SET","key":"/message","prevValue":"Hello world","value":"Hello etcd","index":4}"#
        );
    }

    #[test]
    fn v1_delete_shows_expiration_without_ttl() {
        let mut prev = kv("/foo/ttlkey", "t", 11);
        prev.expire_at = Some(1_795_269_224 * NANOS + 695_533_196);
        let ev = Event {
            action: Action::Expire,
            node: NodeView {
                value: None,
                modified_index: 12,
                created_index: 11,
                ..kv("/foo/ttlkey", "", 12)
            },
            prev_node: Some(prev),
            refresh: false,
            at: 0,
        };
        assert_eq!(
            v1_event_json(&ev, 0),
            r#"{"action":"DELETE","key":"/foo/ttlkey","prevValue":"t","expiration":"2026-11-21T13:53:44.695533196Z","index":12}"#
        );
    }

    #[test]
    fn go_escaping_of_html_characters() {
        let ev = Event {
            action: Action::Set,
            node: kv("/special", "<a&b>\"q\"é", 34),
            prev_node: None,
            refresh: false,
            at: 0,
        };
        assert_eq!(
            v1_event_json(&ev, 0),
            r#"{"action":"SET","key":"/special","value":"\u003ca\u0026b\u003e\"q\"é","newKey":true,"index":34}"#
        );
    }

    #[test]
    fn v1_listing_is_an_array() {
        let dir = NodeView {
            key: "/foo".into(),
            value: None,
            dir: true,
            expire_at: None,
            modified_index: 8,
            created_index: 8,
            nodes: Some(vec![
                NodeView {
                    dir: true,
                    value: None,
                    nodes: None,
                    ..kv("/foo/foo_dir", "", 20)
                },
                kv("/foo/foo2", "x", 9),
            ]),
        };
        assert_eq!(
            v1_get_json(&dir, 20, 0),
            r#"[{"action":"GET","key":"/foo/foo_dir","dir":true,"index":20},{"action":"GET","key":"/foo/foo2","value":"x","index":20}]"#
        );
        let empty = NodeView {
            nodes: Some(vec![]),
            ..dir
        };
        assert_eq!(v1_get_json(&empty, 20, 0), "[]");
    }

    #[test]
    fn v2_bodies() {
        let ev = kv("/message", "Hello world", 2);
        assert_eq!(
            v2_event_json(Action::Set, &ev, None, 0, false),
            "{\"action\":\"set\",\"node\":{\"key\":\"/message\",\"value\":\"Hello world\",\"modifiedIndex\":2,\"createdIndex\":2}}\n"
        );
        assert_eq!(
            v2_event_json(Action::Set, &ev, None, 0, true),
            "{\"action\":\"set\"}\n"
        );
        let root = NodeView {
            key: "/".into(),
            value: None,
            dir: true,
            expire_at: None,
            modified_index: 0,
            created_index: 0,
            nodes: Some(vec![]),
        };
        assert_eq!(
            v2_event_json(Action::Get, &root, None, 0, false),
            "{\"action\":\"get\",\"node\":{\"dir\":true}}\n"
        );
    }
}
