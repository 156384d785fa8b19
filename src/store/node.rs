//! The tree node: a key with a value, or a directory of named children.
//!
//! A node does not store its own path (the walk from the root knows it); it stores the two
//! indexes etcd reports - `created_index` (the write that created it) and `modified_index`
//! (the last write that changed it) - and an optional absolute expiry time in Unix
//! nanoseconds. Children live in a persistent B+tree ([`Dir`], see [`super::tree`]), so
//! listings come out in byte order of their names, which is also the order of their full
//! keys.
//!
//! The tree is built for sharing: a value is an `Arc<str>` and a directory's children sit in
//! `Arc`-shared blocks, so cloning a node - the store's root included - is a reference-count
//! bump and leaves both copies independent (a later write to either copies only what it
//! changes). A node is 40 bytes (its expiry uses the zero niche: every stored expiry is after
//! 2000-01-01, see [`super::MIN_EXPIRE_AT`]).
//!
//! Views ([`NodeView`]) are copies taken for responses and events; the tree itself never
//! leaves the store except inside a snapshot.
//!
//! `Node` (de)serializes with serde in the JSON shape snapshots had before the binary codec
//! (`{"created_index","modified_index","expire_at"?,"kind":{"Value":".."}|{"Dir":{..}}}`),
//! so old snapshots still load.

use std::num::NonZeroI64;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::event::NodeView;
use super::path;
use super::tree::Map;

/// A directory's children by name.
pub type Dir = Map<Node>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub created_index: u64,
    pub modified_index: u64,
    #[serde(
        rename = "expire_at",
        default,
        skip_serializing_if = "Option::is_none",
        with = "expiry_serde"
    )]
    expire: Option<NonZeroI64>,
    pub kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Kind {
    Value(#[serde(with = "value_serde")] Arc<str>),
    Dir(Dir),
}

impl Node {
    pub fn new_value(value: impl Into<Arc<str>>, index: u64, expire_at: Option<i64>) -> Node {
        Node::with_kind(Kind::Value(value.into()), index, index, expire_at)
    }

    pub fn new_dir(index: u64, expire_at: Option<i64>) -> Node {
        Node::with_kind(Kind::Dir(Dir::new()), index, index, expire_at)
    }

    /// A node of any kind with both indexes given (restoring a snapshot).
    pub fn with_kind(kind: Kind, created: u64, modified: u64, expire_at: Option<i64>) -> Node {
        Node {
            created_index: created,
            modified_index: modified,
            expire: expire_at.and_then(NonZeroI64::new),
            kind,
        }
    }

    /// The absolute expiry time (Unix ns), if the node has a TTL.
    pub fn expire_at(&self) -> Option<i64> {
        self.expire.map(NonZeroI64::get)
    }

    /// Set or clear the expiry time; returns the previous one.
    pub fn set_expire_at(&mut self, expire_at: Option<i64>) -> Option<i64> {
        std::mem::replace(&mut self.expire, expire_at.and_then(NonZeroI64::new))
            .map(NonZeroI64::get)
    }

    pub fn is_dir(&self) -> bool {
        matches!(self.kind, Kind::Dir(_))
    }

    pub fn value(&self) -> Option<&str> {
        match &self.kind {
            Kind::Value(v) => Some(v),
            Kind::Dir(_) => None,
        }
    }

    pub fn children(&self) -> Option<&Dir> {
        match &self.kind {
            Kind::Dir(c) => Some(c),
            Kind::Value(_) => None,
        }
    }

    pub fn children_mut(&mut self) -> Option<&mut Dir> {
        match &mut self.kind {
            Kind::Dir(c) => Some(c),
            Kind::Value(_) => None,
        }
    }

    /// The node alone (no children), as `prevNode` and event nodes show it.
    pub fn view(&self, key: &str) -> NodeView {
        NodeView {
            key: key.to_string(),
            value: self.value().map(str::to_string),
            dir: self.is_dir(),
            expire_at: self.expire_at(),
            modified_index: self.modified_index,
            created_index: self.created_index,
            nodes: None,
        }
    }

    /// The node as a GET shows it: a directory lists its children (hidden ones only when
    /// `include_hidden`), and their children too when `recursive`.
    pub fn listing(&self, key: &str, recursive: bool, include_hidden: bool) -> NodeView {
        let mut view = self.view(key);
        if let Some(children) = self.children() {
            view.nodes = Some(Self::list_children(
                key,
                children,
                recursive,
                include_hidden,
            ));
        }
        view
    }

    fn list_children(
        key: &str,
        children: &Dir,
        recursive: bool,
        include_hidden: bool,
    ) -> Vec<NodeView> {
        children
            .iter()
            .map(|(name, child)| (name.as_str(), child))
            .filter(|(name, _)| include_hidden || !path::is_hidden_name(name))
            .map(|(name, child)| {
                let child_key = path::join(key, name);
                if recursive {
                    child.listing(&child_key, true, include_hidden)
                } else {
                    child.view(&child_key)
                }
            })
            .collect()
    }

    /// Visit this node and every descendant (children before their parent), with full keys.
    pub fn for_each_post_order(&self, key: &str, f: &mut dyn FnMut(&str, &Node)) {
        if let Some(children) = self.children() {
            for (name, child) in children.iter() {
                child.for_each_post_order(&path::join(key, name.as_str()), f);
            }
        }
        f(key, self);
    }

    /// Visit every node of this subtree that has an expiry time, with its full key. Paths are
    /// built in one buffer, so a large tree with few TTLs costs no allocation per node.
    pub fn for_each_expiring(&self, key: &str, f: &mut dyn FnMut(&str, i64)) {
        fn walk(node: &Node, path: &mut String, f: &mut dyn FnMut(&str, i64)) {
            if let Some(t) = node.expire_at() {
                f(if path.is_empty() { "/" } else { path }, t);
            }
            if let Some(children) = node.children() {
                for (name, child) in children.iter() {
                    let len = path.len();
                    path.push('/');
                    path.push_str(name.as_str());
                    walk(child, path, f);
                    path.truncate(len);
                }
            }
        }
        let mut path = if key == "/" {
            String::new()
        } else {
            key.to_string()
        };
        walk(self, &mut path, f);
    }

    /// Number of nodes in this subtree, including itself.
    pub fn count(&self) -> usize {
        1 + self
            .children()
            .map_or(0, |c| c.iter().map(|(_, n)| n.count()).sum())
    }
}

/// Old snapshots wrote `expire_at` as a plain number; zero (never stored) means none.
mod expiry_serde {
    use std::num::NonZeroI64;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<NonZeroI64>, s: S) -> Result<S::Ok, S::Error> {
        v.map(NonZeroI64::get).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<NonZeroI64>, D::Error> {
        Ok(Option::<i64>::deserialize(d)?.and_then(NonZeroI64::new))
    }
}

mod value_serde {
    use std::sync::Arc;

    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Arc<str>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<str>, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = Arc<str>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Arc<str>, E> {
                Ok(Arc::from(v))
            }
        }
        d.deserialize_str(Visit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_are_compact() {
        assert_eq!(std::mem::size_of::<Kind>(), 16);
        assert_eq!(std::mem::size_of::<Node>(), 40);
    }

    #[test]
    fn listing_hides_underscore_children_unless_asked() {
        let mut root = Node::new_dir(0, None);
        let c = root.children_mut().unwrap();
        c.insert("a", Node::new_value("1", 2, None));
        c.insert("_h", Node::new_value("h", 3, None));
        let mut d = Node::new_dir(4, None);
        d.children_mut()
            .unwrap()
            .insert("x", Node::new_value("x", 4, None));
        c.insert("d", d);

        let v = root.listing("/", false, false);
        let keys: Vec<_> = v
            .nodes
            .as_ref()
            .unwrap()
            .iter()
            .map(|n| n.key.as_str())
            .collect();
        assert_eq!(keys, vec!["/a", "/d"]);
        assert!(
            v.nodes.as_ref().unwrap()[1].nodes.is_none(),
            "not recursive"
        );

        let v = root.listing("/", true, true);
        let keys: Vec<_> = v
            .nodes
            .as_ref()
            .unwrap()
            .iter()
            .map(|n| n.key.as_str())
            .collect();
        assert_eq!(keys, vec!["/_h", "/a", "/d"]);
        assert_eq!(
            v.nodes.as_ref().unwrap()[2].nodes.as_ref().unwrap()[0].key,
            "/d/x"
        );
        assert_eq!(root.count(), 5);
    }

    #[test]
    fn expiring_nodes_are_found_with_their_paths() {
        let mut root = Node::new_dir(0, Some(1));
        let c = root.children_mut().unwrap();
        c.insert("a", Node::new_value("1", 2, Some(5)));
        c.insert("b", Node::new_value("1", 2, None));
        let mut d = Node::new_dir(4, Some(6));
        d.children_mut()
            .unwrap()
            .insert("x", Node::new_value("x", 4, Some(7)));
        c.insert("d", d);
        let mut seen = Vec::new();
        root.for_each_expiring("/", &mut |p, t| seen.push((p.to_string(), t)));
        assert_eq!(
            seen,
            vec![
                ("/".to_string(), 1),
                ("/a".to_string(), 5),
                ("/d".to_string(), 6),
                ("/d/x".to_string(), 7)
            ]
        );
        let d = root.children().unwrap().get("d").unwrap();
        seen.clear();
        d.for_each_expiring("/d", &mut |p, t| seen.push((p.to_string(), t)));
        assert_eq!(seen.len(), 2);
    }
}
