//! The tree node: a key with a value, or a directory of named children.
//!
//! A node does not store its own path (the walk from the root knows it); it stores the two
//! indexes etcd reports - `created_index` (the write that created it) and `modified_index`
//! (the last write that changed it) - and an optional absolute expiry time in Unix
//! nanoseconds. Children live in a `BTreeMap`, so listings come out in byte order of their
//! names, which is also the order of their full keys.
//!
//! Views ([`NodeView`]) are copies taken for responses and events; the tree itself never
//! leaves the store.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::event::NodeView;
use super::path;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub created_index: u64,
    pub modified_index: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expire_at: Option<i64>,
    pub kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Kind {
    Value(String),
    Dir(BTreeMap<String, Node>),
}

impl Node {
    pub fn new_value(value: String, index: u64, expire_at: Option<i64>) -> Node {
        Node {
            created_index: index,
            modified_index: index,
            expire_at,
            kind: Kind::Value(value),
        }
    }

    pub fn new_dir(index: u64, expire_at: Option<i64>) -> Node {
        Node {
            created_index: index,
            modified_index: index,
            expire_at,
            kind: Kind::Dir(BTreeMap::new()),
        }
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

    pub fn children(&self) -> Option<&BTreeMap<String, Node>> {
        match &self.kind {
            Kind::Dir(c) => Some(c),
            Kind::Value(_) => None,
        }
    }

    pub fn children_mut(&mut self) -> Option<&mut BTreeMap<String, Node>> {
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
            expire_at: self.expire_at,
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
        children: &BTreeMap<String, Node>,
        recursive: bool,
        include_hidden: bool,
    ) -> Vec<NodeView> {
        children
            .iter()
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
            for (name, child) in children {
                child.for_each_post_order(&path::join(key, name), f);
            }
        }
        f(key, self);
    }

    /// Number of nodes in this subtree, including itself.
    pub fn count(&self) -> usize {
        1 + self
            .children()
            .map_or(0, |c| c.values().map(Node::count).sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_hides_underscore_children_unless_asked() {
        let mut root = Node::new_dir(0, None);
        let c = root.children_mut().unwrap();
        c.insert("a".into(), Node::new_value("1".into(), 2, None));
        c.insert("_h".into(), Node::new_value("h".into(), 3, None));
        let mut d = Node::new_dir(4, None);
        d.children_mut()
            .unwrap()
            .insert("x".into(), Node::new_value("x".into(), 4, None));
        c.insert("d".into(), d);

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
}
