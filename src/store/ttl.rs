//! The expiry index: every node with a TTL, ordered by (expire time, path), so the leader
//! can tell cheaply whether anything is due and an expire command can remove due nodes in
//! expiry order. It mirrors the tree: the store adds an entry when it gives a node an
//! expiry and removes it whenever that node is replaced, deleted or expired.

use std::collections::BTreeSet;

#[derive(Debug, Default)]
pub struct ExpiryIndex {
    entries: BTreeSet<(i64, String)>,
}

impl ExpiryIndex {
    pub fn insert(&mut self, expire_at: i64, path: &str) {
        self.entries.insert((expire_at, path.to_string()));
    }

    pub fn remove(&mut self, expire_at: i64, path: &str) {
        self.entries.remove(&(expire_at, path.to_string()));
    }

    /// The earliest expiry time, if any node has one.
    pub fn next(&self) -> Option<i64> {
        self.entries.first().map(|(t, _)| *t)
    }

    /// Take the earliest entry if it is due at `now` (expire time <= now).
    pub fn pop_due(&mut self, now: i64) -> Option<(i64, String)> {
        if self.next()? <= now {
            self.entries.pop_first()
        } else {
            None
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_in_expiry_order_only_when_due() {
        let mut x = ExpiryIndex::default();
        x.insert(30, "/c");
        x.insert(10, "/a");
        x.insert(20, "/b");
        x.remove(20, "/b");
        assert_eq!(x.next(), Some(10));
        assert_eq!(x.pop_due(9), None);
        assert_eq!(x.pop_due(10), Some((10, "/a".into())));
        assert_eq!(x.pop_due(29), None);
        assert_eq!(x.len(), 1);
    }
}
