//! A directory's children: a persistent (copy-on-write) B+tree from [`Name`] to a value.
//!
//! Blocks are shared through `Arc`s, so cloning a map - and with it a whole subtree of the
//! key space, which is what a store snapshot does - bumps one reference count. A write walks
//! from the root to its leaf with `Arc::make_mut`: a block owned by this map alone is changed
//! in place; a block a snapshot still shares is copied first (its names and values are cheap
//! to clone: inline names, shared strings), so a write after a snapshot copies only the few
//! blocks on its path, once, and everything it does not touch stays shared.
//!
//! Entries live in leaves of up to [`LEAF_CAP`] in name order; branches hold up to
//! [`BRANCH_CAP`] children and the separators between them. Iteration therefore yields
//! names in byte order.
//!
//! What must stay true:
//! * Every leaf is at the same depth; names ascend strictly across the leaves; for a
//!   branch, every name under `kids[i]` is `< seps[i] <=` every name under `kids[i + 1]`.
//! * No block is empty (an empty map has no root) and none exceeds its capacity. Blocks
//!   below half full are merged with or refilled from a sibling when a removal leaves them
//!   so; appends at the very end of the map fill each leaf before starting the next, so keys
//!   written in ascending order (the common `k0000001, k0000002, ...` shape) pack leaves
//!   full, as does [`Builder`], which builds a map from sorted entries in one pass.
//! * A lookup that finds nothing copies nothing.

use std::sync::Arc;

use super::name::Name;

/// Most entries in one leaf (a leaf is copied whole on its first write after a snapshot).
pub const LEAF_CAP: usize = 32;
/// Most children of one branch.
pub const BRANCH_CAP: usize = 32;

/// A sorted, persistent map from names to values (see the module docs).
pub struct Map<V> {
    root: Option<Arc<Block<V>>>,
}

#[derive(Clone)]
enum Block<V> {
    Leaf(Vec<(Name, V)>),
    Branch(Branch<V>),
}

#[derive(Clone)]
struct Branch<V> {
    seps: Vec<Name>,
    kids: Vec<Arc<Block<V>>>,
}

enum Ins<V> {
    Inserted,
    Replaced(V),
    /// The block split: this separator and block go right of it in the parent.
    Split(Name, Arc<Block<V>>),
}

/// The deepest a map gets: every block but the last on its level is at least half full, so
/// 24 levels would take far more entries than memory holds. A deeper walk is not recorded.
const MAX_DEPTH: usize = 24;

/// Where a key is in a map, or where it would go: the child taken on each branch level from
/// the root down, and the place in the leaf (`Ok`: the key is there; `Err`: it would be
/// inserted there). Made by [`Map::find`]; [`Map::insert_at`] then inserts without searching
/// the blocks again. Each recorded step is checked against the key before it is taken (two
/// comparisons instead of a search), and a step that no longer fits - the map changed since -
/// falls back to searching, so a stale spot costs time, never order.
#[derive(Clone, Copy, Debug)]
pub struct Spot {
    kids: [u8; MAX_DEPTH],
    depth: usize,
    at: Result<usize, usize>,
}

impl Spot {
    fn route(&self) -> Route<'_> {
        Route {
            kids: &self.kids[..self.depth],
            at: self.at,
        }
    }
}

/// The rest of a [`Spot`] below some block.
#[derive(Clone, Copy)]
struct Route<'a> {
    kids: &'a [u8],
    at: Result<usize, usize>,
}

impl<V> Clone for Map<V> {
    fn clone(&self) -> Self {
        Map {
            root: self.root.clone(),
        }
    }
}

impl<V> Default for Map<V> {
    fn default() -> Self {
        Map { root: None }
    }
}

/// Grow a block's vector by about half (at least by one, at most to `cap`, except the one
/// slot of overflow a branch uses just before it splits).
fn make_room<T>(v: &mut Vec<T>, cap: usize) {
    if v.len() == v.capacity() {
        let want = (v.len() + v.len() / 2)
            .clamp(4.min(cap), cap)
            .max(v.len() + 1);
        v.reserve_exact(want - v.len());
    }
}

fn find<V>(entries: &[(Name, V)], key: &[u8]) -> Result<usize, usize> {
    entries.binary_search_by(|(n, _)| n.as_bytes().cmp(key))
}

/// `key`'s place in a leaf: `at` if it is right (checked against its neighbours), otherwise
/// searched.
fn place<V>(
    entries: &[(Name, V)],
    key: &[u8],
    at: Option<Result<usize, usize>>,
) -> Result<usize, usize> {
    let fits = match at {
        Some(Ok(i)) => entries.get(i).is_some_and(|(n, _)| n.as_bytes() == key),
        Some(Err(i)) => {
            i <= entries.len()
                && (i == 0 || entries[i - 1].0.as_bytes() < key)
                && entries.get(i).is_none_or(|(n, _)| key < n.as_bytes())
        }
        None => false,
    };
    match at {
        Some(at) if fits => at,
        _ => find(entries, key),
    }
}

impl<V> Block<V> {
    fn size(&self) -> usize {
        match self {
            Block::Leaf(es) => es.len(),
            Block::Branch(b) => b.kids.len(),
        }
    }

    fn min_size(&self) -> usize {
        match self {
            Block::Leaf(_) => LEAF_CAP / 2,
            Block::Branch(_) => BRANCH_CAP / 2,
        }
    }
}

impl<V> Branch<V> {
    /// The child whose range holds `key`.
    fn index(&self, key: &[u8]) -> usize {
        self.seps.partition_point(|s| s.as_bytes() <= key)
    }

    /// The child whose range holds `key`, taken from `route` when its next step is right
    /// (checked against the separators around it), with the route below that child.
    fn step<'r>(&self, key: &[u8], route: Option<Route<'r>>) -> (usize, Option<Route<'r>>) {
        if let Some(r) = route
            && let Some((&i, kids)) = r.kids.split_first()
        {
            let i = usize::from(i);
            if i < self.kids.len()
                && (i == 0 || self.seps[i - 1].as_bytes() <= key)
                && self.seps.get(i).is_none_or(|s| key < s.as_bytes())
            {
                return (i, Some(Route { kids, at: r.at }));
            }
        }
        (self.index(key), None)
    }
}

impl<V: Clone> Block<V> {
    /// Insert or replace `key`. `rightmost`: this block is the last one on its level, so an
    /// append past its end may leave it full and start a new block.
    fn insert(&mut self, key: &str, v: V, rightmost: bool, route: Option<Route>) -> Ins<V> {
        match self {
            Block::Leaf(es) => match place(es, key.as_bytes(), route.map(|r| r.at)) {
                Ok(i) => Ins::Replaced(std::mem::replace(&mut es[i].1, v)),
                Err(i) => {
                    let entry = (Name::new(key), v);
                    if es.len() < LEAF_CAP {
                        make_room(es, LEAF_CAP);
                        es.insert(i, entry);
                        return Ins::Inserted;
                    }
                    if rightmost && i == es.len() {
                        let sep = entry.0.clone();
                        let mut right = Vec::with_capacity(4);
                        right.push(entry);
                        return Ins::Split(sep, Arc::new(Block::Leaf(right)));
                    }
                    let half = LEAF_CAP / 2;
                    let mut right = es.split_off(half);
                    if i <= half {
                        es.insert(i, entry);
                    } else {
                        make_room(&mut right, LEAF_CAP);
                        right.insert(i - half, entry);
                    }
                    Ins::Split(right[0].0.clone(), Arc::new(Block::Leaf(right)))
                }
            },
            Block::Branch(b) => {
                let (i, below) = b.step(key.as_bytes(), route);
                let last = i + 1 == b.kids.len();
                let (sep, kid) =
                    match Arc::make_mut(&mut b.kids[i]).insert(key, v, rightmost && last, below) {
                        Ins::Split(sep, kid) => (sep, kid),
                        done => return done,
                    };
                if b.kids.len() >= BRANCH_CAP && rightmost && last {
                    let right = Branch {
                        seps: Vec::new(),
                        kids: vec![kid],
                    };
                    return Ins::Split(sep, Arc::new(Block::Branch(right)));
                }
                make_room(&mut b.seps, BRANCH_CAP);
                make_room(&mut b.kids, BRANCH_CAP);
                b.seps.insert(i, sep);
                b.kids.insert(i + 1, kid);
                if b.kids.len() <= BRANCH_CAP {
                    return Ins::Inserted;
                }
                let at = b.kids.len() / 2;
                let kids = b.kids.split_off(at);
                let mut seps = b.seps.split_off(at - 1);
                let up = seps.remove(0);
                Ins::Split(up, Arc::new(Block::Branch(Branch { seps, kids })))
            }
        }
    }

    /// Remove `key` (which the caller knows is present below this block).
    fn remove(&mut self, key: &[u8], route: Option<Route>) -> Option<V> {
        match self {
            Block::Leaf(es) => {
                let i = place(es, key, route.map(|r| r.at)).ok()?;
                Some(es.remove(i).1)
            }
            Block::Branch(b) => {
                let (i, below) = b.step(key, route);
                let v = Arc::make_mut(&mut b.kids[i]).remove(key, below)?;
                b.repair(i);
                Some(v)
            }
        }
    }
}

impl<V: Clone> Branch<V> {
    /// After a removal below `kids[i]`: drop it if empty; if it is under half full, merge it
    /// with a neighbour or even the two out.
    fn repair(&mut self, i: usize) {
        let size = self.kids[i].size();
        if size == 0 {
            self.kids.remove(i);
            if !self.seps.is_empty() {
                self.seps.remove(i.saturating_sub(1));
            }
            return;
        }
        if size >= self.kids[i].min_size() || self.kids.len() < 2 {
            return;
        }
        let l = if i + 1 < self.kids.len() { i } else { i - 1 };
        let (a, b) = self.kids.split_at_mut(l + 1);
        let merged = match (Arc::make_mut(&mut a[l]), Arc::make_mut(&mut b[0])) {
            (Block::Leaf(x), Block::Leaf(y)) => {
                if x.len() + y.len() <= LEAF_CAP {
                    x.reserve_exact(y.len());
                    x.append(y);
                    true
                } else {
                    let half = (x.len() + y.len()) / 2;
                    if x.len() > half {
                        let moved = x.split_off(half);
                        y.splice(0..0, moved);
                    } else {
                        let k = half - x.len();
                        x.extend(y.drain(..k));
                    }
                    self.seps[l] = y[0].0.clone();
                    false
                }
            }
            (Block::Branch(x), Block::Branch(y)) => {
                let sep = self.seps[l].clone();
                if x.kids.len() + y.kids.len() <= BRANCH_CAP {
                    x.seps.push(sep);
                    x.seps.append(&mut y.seps);
                    x.kids.append(&mut y.kids);
                    true
                } else {
                    let mut seps = std::mem::take(&mut x.seps);
                    seps.push(sep);
                    seps.append(&mut y.seps);
                    let mut kids = std::mem::take(&mut x.kids);
                    kids.append(&mut y.kids);
                    let at = kids.len() / 2;
                    y.kids = kids.split_off(at);
                    x.kids = kids;
                    y.seps = seps.split_off(at);
                    self.seps[l] = seps.pop().expect("a separator between the halves");
                    x.seps = seps;
                    false
                }
            }
            _ => unreachable!("siblings are at the same height"),
        };
        if merged {
            self.kids.remove(l + 1);
            self.seps.remove(l);
        }
    }
}

impl<V> Map<V> {
    pub fn new() -> Map<V> {
        Map { root: None }
    }

    pub fn is_empty(&self) -> bool {
        self.root.is_none()
    }

    pub fn get(&self, key: &str) -> Option<&V> {
        let key = key.as_bytes();
        let mut block = self.root.as_deref()?;
        loop {
            match block {
                Block::Branch(b) => block = &b.kids[b.index(key)],
                Block::Leaf(es) => return find(es, key).ok().map(|i| &es[i].1),
            }
        }
    }

    /// Look `key` up as [`Map::get`] does, and also say where it is or would go, for a
    /// change that follows ([`Map::insert_at`]) without searching again. The spot is `None`
    /// for an empty map (or an impossibly deep one).
    pub fn find(&self, key: &str) -> (Option<&V>, Option<Spot>) {
        let key = key.as_bytes();
        let Some(mut block) = self.root.as_deref() else {
            return (None, None);
        };
        let mut spot = Spot {
            kids: [0; MAX_DEPTH],
            depth: 0,
            at: Err(0),
        };
        let mut deep = false;
        loop {
            match block {
                Block::Branch(b) => {
                    let i = b.index(key);
                    match spot.kids.get_mut(spot.depth) {
                        Some(k) => *k = i as u8,
                        None => deep = true,
                    }
                    spot.depth += 1;
                    block = &b.kids[i];
                }
                Block::Leaf(es) => {
                    spot.at = find(es, key);
                    let found = spot.at.ok().map(|i| &es[i].1);
                    return (found, (!deep).then_some(spot));
                }
            }
        }
    }

    /// Entries in name order.
    pub fn iter(&self) -> Iter<'_, V> {
        let mut it = Iter {
            stack: Vec::new(),
            leaf: [].iter(),
        };
        match self.root.as_deref() {
            None => {}
            Some(Block::Leaf(es)) => it.leaf = es.iter(),
            Some(Block::Branch(b)) => {
                it.stack.reserve_exact(8);
                it.stack.push(b.kids.iter());
            }
        }
        it
    }

    /// Do both maps share the same root block (or are both empty)?
    pub fn ptr_eq(&self, other: &Map<V>) -> bool {
        match (&self.root, &other.root) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        }
    }
}

impl<V: Clone> Map<V> {
    /// The value at `key`, for changing it in place (copying the shared blocks on its path).
    pub fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        let (Some(_), spot) = self.find(key) else {
            return None;
        };
        let mut route = spot.as_ref().map(Spot::route);
        let key = key.as_bytes();
        let mut block = Arc::make_mut(self.root.as_mut()?);
        loop {
            match block {
                Block::Branch(b) => {
                    let (i, below) = b.step(key, route);
                    route = below;
                    block = Arc::make_mut(&mut b.kids[i]);
                }
                Block::Leaf(es) => {
                    let i = place(es, key, route.map(|r| r.at)).ok()?;
                    return Some(&mut es[i].1);
                }
            }
        }
    }

    /// Insert or replace; returns the value replaced.
    pub fn insert(&mut self, key: &str, v: V) -> Option<V> {
        self.insert_at(None, key, v)
    }

    /// [`Map::insert`] at the place `spot` found (by [`Map::find`] on this map, for this
    /// key), which saves searching the blocks on the way; `None` searches.
    pub fn insert_at(&mut self, spot: Option<&Spot>, key: &str, v: V) -> Option<V> {
        let Some(root) = &mut self.root else {
            self.root = Some(Arc::new(Block::Leaf(vec![(Name::new(key), v)])));
            return None;
        };
        match Arc::make_mut(root).insert(key, v, true, spot.map(Spot::route)) {
            Ins::Inserted => None,
            Ins::Replaced(old) => Some(old),
            Ins::Split(sep, right) => {
                let left = self.root.take().expect("a root was there");
                self.root = Some(Arc::new(Block::Branch(Branch {
                    seps: vec![sep],
                    kids: vec![left, right],
                })));
                None
            }
        }
    }

    pub fn remove(&mut self, key: &str) -> Option<V> {
        let (Some(_), spot) = self.find(key) else {
            return None;
        };
        let route = spot.as_ref().map(Spot::route);
        let v = Arc::make_mut(self.root.as_mut()?).remove(key.as_bytes(), route);
        loop {
            let next = match self.root.as_deref() {
                Some(Block::Leaf(es)) if es.is_empty() => None,
                Some(Block::Branch(b)) if b.kids.len() <= 1 => b.kids.first().cloned(),
                _ => break,
            };
            self.root = next;
        }
        v
    }
}

impl<V: PartialEq> PartialEq for Map<V> {
    fn eq(&self, other: &Map<V>) -> bool {
        self.iter().eq(other.iter())
    }
}

impl<V: std::fmt::Debug> std::fmt::Debug for Map<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

// A map serializes as a JSON object of its entries (the shape snapshots had before the
// binary codec), and deserializes from one, building in bulk when the names come sorted.

impl<V: serde::Serialize> serde::Serialize for Map<V> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter().map(|(n, v)| (n.as_str(), v)))
    }
}

impl<'de, V: Clone + serde::Deserialize<'de>> serde::Deserialize<'de> for Map<V> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<V>(std::marker::PhantomData<V>);
        impl<'de, V: Clone + serde::Deserialize<'de>> serde::de::Visitor<'de> for Visit<V> {
            type Value = Map<V>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map of names to nodes")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Map<V>, A::Error> {
                let mut entries: Vec<(Name, V)> = Vec::new();
                while let Some((NameKey(k), v)) = a.next_entry()? {
                    entries.push((k, v));
                }
                if entries.windows(2).all(|w| w[0].0 < w[1].0) {
                    let mut b = Builder::default();
                    for (k, v) in entries {
                        b.push(k, v);
                    }
                    return Ok(b.finish());
                }
                let mut m = Map::new();
                for (k, v) in entries {
                    m.insert(k.as_str(), v);
                }
                Ok(m)
            }
        }
        d.deserialize_map(Visit(std::marker::PhantomData))
    }
}

/// A map key read straight into a [`Name`] (no `String` in between).
struct NameKey(Name);

impl<'de> serde::Deserialize<'de> for NameKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = NameKey;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a name")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<NameKey, E> {
                Ok(NameKey(Name::new(v)))
            }
        }
        d.deserialize_str(Visit)
    }
}

/// In-order iteration over a [`Map`].
pub struct Iter<'a, V> {
    /// The children still to visit on each level above the current leaf.
    stack: Vec<std::slice::Iter<'a, Arc<Block<V>>>>,
    leaf: std::slice::Iter<'a, (Name, V)>,
}

impl<'a, V> Iterator for Iter<'a, V> {
    type Item = (&'a Name, &'a V);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some((n, v)) = self.leaf.next() {
                return Some((n, v));
            }
            let level = self.stack.last_mut()?;
            match level.next().map(|b| &**b) {
                None => {
                    self.stack.pop();
                }
                Some(Block::Leaf(es)) => self.leaf = es.iter(),
                Some(Block::Branch(b)) => self.stack.push(b.kids.iter()),
            }
        }
    }
}

/// Builds a [`Map`] from entries pushed in strictly ascending name order, filling every
/// block (the last two on each level are evened out if the last would be under half full).
pub struct Builder<V> {
    leaves: Vec<(Name, Arc<Block<V>>)>,
    cur: Vec<(Name, V)>,
}

impl<V> Default for Builder<V> {
    fn default() -> Self {
        Builder {
            leaves: Vec::new(),
            cur: Vec::new(),
        }
    }
}

impl<V: Clone> Builder<V> {
    /// The name pushed last, if any.
    pub fn last(&self) -> Option<&Name> {
        match self.cur.last() {
            Some((n, _)) => Some(n),
            None => self.leaves.last().map(|(n, _)| n),
        }
    }

    /// Append an entry; its name must be greater than every name pushed before.
    pub fn push(&mut self, name: Name, v: V) {
        debug_assert!(self.cur.last().is_none_or(|(n, _)| *n < name));
        if self.cur.len() == LEAF_CAP {
            self.flush();
        }
        self.cur.push((name, v));
    }

    fn flush(&mut self) {
        // The first leaf grows as it fills (a small directory stays small); once a directory
        // is known to be large, every leaf is allocated full size at once.
        let full = std::mem::replace(&mut self.cur, Vec::with_capacity(LEAF_CAP));
        self.push_leaf(full);
    }

    fn push_leaf(&mut self, mut entries: Vec<(Name, V)>) {
        entries.shrink_to_fit();
        self.leaves
            .push((entries[0].0.clone(), Arc::new(Block::Leaf(entries))));
    }

    pub fn finish(mut self) -> Map<V> {
        let mut last = std::mem::take(&mut self.cur);
        if self.leaves.is_empty() {
            // Empty, or a single leaf: nothing to build above it.
            if last.is_empty() {
                return Map::new();
            }
            last.shrink_to_fit();
            return Map {
                root: Some(Arc::new(Block::Leaf(last))),
            };
        }
        if !last.is_empty() {
            self.push_leaf(last);
        }
        let mut level = self.leaves;
        balance_tail(&mut level);
        while level.len() > 1 {
            let mut up = Vec::with_capacity(level.len().div_ceil(BRANCH_CAP));
            let mut it = level.into_iter().peekable();
            while it.peek().is_some() {
                let mut seps = Vec::with_capacity(BRANCH_CAP - 1);
                let mut kids = Vec::with_capacity(BRANCH_CAP);
                let (first, kid) = it.next().expect("peeked");
                kids.push(kid);
                while kids.len() < BRANCH_CAP {
                    let Some((name, kid)) = it.next() else { break };
                    seps.push(name);
                    kids.push(kid);
                }
                up.push((first, Arc::new(Block::Branch(Branch { seps, kids }))));
            }
            level = up;
            balance_tail(&mut level);
        }
        Map {
            root: level.pop().map(|(_, root)| root),
        }
    }
}

/// Even out the last two blocks of a level if the last one is under half full.
fn balance_tail<V: Clone>(level: &mut Vec<(Name, Arc<Block<V>>)>) {
    let n = level.len();
    if n < 2 || level[n - 1].1.size() >= level[n - 1].1.min_size() {
        return;
    }
    let (last_name, last) = level.pop().expect("two blocks");
    let (prev_name, prev) = level.pop().expect("two blocks");
    let mut pair = Branch {
        seps: vec![last_name],
        kids: vec![prev, last],
    };
    pair.repair(1);
    let mut kids = pair.kids.into_iter();
    level.push((prev_name, kids.next().expect("the first block stays")));
    if let Some(second) = kids.next() {
        level.push((pair.seps.pop().expect("a separator"), second));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    impl<V> Map<V> {
        /// Check the invariants of the module docs; returns the number of entries.
        fn check(&self) -> usize {
            fn walk<V>(
                b: &Block<V>,
                depth: usize,
                leaf_depth: &mut Option<usize>,
                lo: Option<&[u8]>,
                hi: Option<&[u8]>,
                is_root: bool,
            ) -> usize {
                assert!(b.size() > 0, "empty block");
                match b {
                    Block::Leaf(es) => {
                        assert!(es.len() <= LEAF_CAP);
                        assert_eq!(*leaf_depth.get_or_insert(depth), depth, "uneven leaves");
                        for w in es.windows(2) {
                            assert!(w[0].0 < w[1].0);
                        }
                        for (n, _) in es {
                            assert!(lo.is_none_or(|lo| lo <= n.as_bytes()));
                            assert!(hi.is_none_or(|hi| n.as_bytes() < hi));
                        }
                        es.len()
                    }
                    Block::Branch(br) => {
                        assert!(br.kids.len() <= BRANCH_CAP);
                        assert_eq!(br.seps.len() + 1, br.kids.len());
                        assert!(!is_root || br.kids.len() >= 2);
                        let mut total = 0;
                        for (i, kid) in br.kids.iter().enumerate() {
                            let klo = if i == 0 {
                                lo
                            } else {
                                Some(br.seps[i - 1].as_bytes())
                            };
                            let khi = br.seps.get(i).map(|s| s.as_bytes()).or(hi);
                            total += walk(kid, depth + 1, leaf_depth, klo, khi, false);
                        }
                        total
                    }
                }
            }
            self.root
                .as_deref()
                .map_or(0, |r| walk(r, 0, &mut None, None, None, true))
        }

        fn leaf_fill(&self) -> (usize, usize) {
            fn walk<V>(b: &Block<V>, out: &mut (usize, usize)) {
                match b {
                    Block::Leaf(es) => {
                        out.0 += es.len();
                        out.1 += 1;
                    }
                    Block::Branch(br) => br.kids.iter().for_each(|k| walk(k, out)),
                }
            }
            let mut out = (0, 0);
            if let Some(r) = &self.root {
                walk(r, &mut out);
            }
            out
        }
    }

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    fn same(m: &Map<u64>, model: &BTreeMap<String, u64>) {
        assert_eq!(m.check(), model.len());
        let got: Vec<(String, u64)> = m.iter().map(|(n, v)| (n.to_string(), *v)).collect();
        let want: Vec<(String, u64)> = model.iter().map(|(k, v)| (k.clone(), *v)).collect();
        assert_eq!(got, want);
        assert_eq!(m.is_empty(), model.is_empty());
    }

    #[test]
    fn random_operations_match_a_btreemap_and_snapshots_stay_frozen() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut m: Map<u64> = Map::new();
        let mut model = BTreeMap::new();
        let mut frozen: Vec<(Map<u64>, BTreeMap<String, u64>)> = Vec::new();
        for round in 0..40_000u64 {
            let k = format!("k{:04}", rng.next() % 3000);
            match rng.next() % 10 {
                0..=5 => assert_eq!(m.insert(&k, round), model.insert(k, round)),
                6..=8 => assert_eq!(m.remove(&k), model.remove(&k)),
                _ => {
                    let got = m.get_mut(&k).map(|v| {
                        *v += 1;
                        *v
                    });
                    let want = model.get_mut(&k).map(|v| {
                        *v += 1;
                        *v
                    });
                    assert_eq!(got, want);
                }
            }
            if round % 4000 == 0 {
                same(&m, &model);
                frozen.push((m.clone(), model.clone()));
            }
        }
        same(&m, &model);
        for (snap, model) in &frozen {
            same(snap, model);
        }
        // Drain it completely, in random order.
        let keys: Vec<String> = model.keys().cloned().collect();
        let mut order: Vec<usize> = (0..keys.len()).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.next() as usize % (i + 1));
        }
        for (n, &i) in order.iter().enumerate() {
            assert_eq!(m.remove(&keys[i]), model.remove(&keys[i]));
            if n % 97 == 0 {
                same(&m, &model);
            }
        }
        same(&m, &model);
        assert!(m.root.is_none());
    }

    #[test]
    fn inserts_at_a_found_spot_even_a_stale_one_keep_the_order() {
        let mut rng = Rng(0xD1B5_4A32_D192_ED03);
        let mut m: Map<u64> = Map::new();
        let mut model = BTreeMap::new();
        // A spot found some rounds ago, for a key that may be anywhere by now.
        let mut stale: Option<(String, Spot)> = None;
        for round in 0..60_000u64 {
            let k = format!("k{:05}", rng.next() % 20_000);
            match rng.next() % 8 {
                0..=3 => {
                    let (got, spot) = m.find(&k);
                    assert_eq!(got, model.get(&k));
                    assert_eq!(
                        m.insert_at(spot.as_ref(), &k, round),
                        model.insert(k.clone(), round)
                    );
                    if round % 5 == 0 {
                        stale = spot.map(|s| (k, s));
                    }
                }
                4 => {
                    // Some other key's spot, or this key's from before the map changed.
                    let spot = stale.as_ref().map(|(_, s)| *s);
                    assert_eq!(
                        m.insert_at(spot.as_ref(), &k, round),
                        model.insert(k, round)
                    );
                }
                5 => {
                    if let Some((k, s)) = &stale {
                        assert_eq!(
                            m.insert_at(Some(s), k, round),
                            model.insert(k.clone(), round)
                        );
                    }
                }
                _ => assert_eq!(m.remove(&k), model.remove(&k)),
            }
            if round % 6000 == 0 {
                same(&m, &model);
            }
        }
        same(&m, &model);
        // A spot in an empty map, and one found in a map that was emptied since.
        let mut e: Map<u64> = Map::new();
        let (none, spot) = e.find("a");
        assert!(none.is_none() && spot.is_none());
        e.insert("b", 1);
        let (_, spot) = e.find("a");
        e.remove("b");
        assert_eq!(e.insert_at(spot.as_ref(), "a", 2), None);
        assert_eq!(e.get("a"), Some(&2));
        assert_eq!(e.check(), 1);
    }

    #[test]
    fn ascending_appends_and_the_builder_fill_leaves() {
        let mut m: Map<u64> = Map::new();
        let n = 100_000;
        for i in 0..n {
            m.insert(&format!("k{i:07}"), i);
        }
        assert_eq!(m.check(), n as usize);
        let (entries, leaves) = m.leaf_fill();
        assert!(entries as f64 / (leaves * LEAF_CAP) as f64 > 0.99);

        for size in [
            0usize,
            1,
            2,
            17,
            31,
            32,
            33,
            48,
            1000,
            1025,
            1040,
            33 * 32 + 1,
        ] {
            let mut b = Builder::default();
            for i in 0..size {
                b.push(Name::new(&format!("k{i:07}")), i);
            }
            let built = b.finish();
            assert_eq!(built.check(), size);
            assert!(built.iter().map(|(_, v)| *v).eq(0..size), "size {size}");
        }
    }

    #[test]
    fn maps_read_json_objects_sorted_or_not() {
        let m: Map<u64> = serde_json::from_str(r#"{"b":1,"a":2,"b":3,"é":4}"#).unwrap();
        assert_eq!(m.check(), 3);
        let got: Vec<_> = m.iter().map(|(n, v)| (n.as_str(), *v)).collect();
        assert_eq!(got, vec![("a", 2), ("b", 3), ("é", 4)]);
        let json: String = serde_json::to_string(&m).unwrap();
        assert_eq!(json, r#"{"a":2,"b":3,"é":4}"#);
        let big: BTreeMap<String, u64> = (0..1000).map(|i| (format!("k{i:04}"), i)).collect();
        let m: Map<u64> = serde_json::from_str(&serde_json::to_string(&big).unwrap()).unwrap();
        assert_eq!(m.check(), 1000);
        assert!(m.iter().map(|(_, v)| *v).eq(0..1000));
    }

    #[test]
    fn a_miss_copies_nothing_and_a_write_copies_only_its_path() {
        let mut m: Map<u64> = Map::new();
        for i in 0..10_000 {
            m.insert(&format!("k{i:05}"), i);
        }
        let snap = m.clone();
        assert!(m.get_mut("nope").is_none());
        assert!(m.remove("nope").is_none());
        assert!(m.find("k05000").0.is_some() && m.find("nope").0.is_none());
        assert!(m.ptr_eq(&snap));
        *m.get_mut("k05000").unwrap() = 7;
        assert!(!m.ptr_eq(&snap));
        assert_eq!(snap.get("k05000"), Some(&5000));
        let (Some(Block::Branch(a)), Some(Block::Branch(b))) =
            (m.root.as_deref(), snap.root.as_deref())
        else {
            panic!("10000 entries need branches")
        };
        let shared = a
            .kids
            .iter()
            .zip(&b.kids)
            .filter(|(x, y)| Arc::ptr_eq(x, y))
            .count();
        assert_eq!(
            shared,
            a.kids.len() - 1,
            "only one child of the root was copied"
        );
    }
}
