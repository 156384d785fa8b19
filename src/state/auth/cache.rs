//! Remembered password verifications, so a client that sends the same credentials with
//! every request pays for bcrypt (~50-100 ms, slow on purpose) once, not every time.
//!
//! What must stay true:
//! * Only successful verifications are remembered; a wrong password stays slow.
//! * An entry is keyed by the whole `Authorization` value *and* the user's stored bcrypt
//!   hash, so a password change (a new hash) or a deleted and re-created user never matches
//!   an old entry, and nothing has to be invalidated.
//! * The key is two independently keyed SipHashes (128 bits) with random keys drawn when
//!   the process starts: headers and passwords are never kept, and a key cannot be forged
//!   without those random keys.
//! * At most [`VerifyCache::CAPACITY`] entries; the oldest goes first.
//!
//! The cache is process-wide (one per process, shared by every request), because what it
//! holds depends only on the header and the stored hash, not on which server asks.

use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, OnceLock};

/// A 128-bit keyed hash of (header, stored hash).
pub type CacheKey = (u64, u64);

pub struct VerifyCache {
    hashers: (RandomState, RandomState),
    inner: Mutex<(HashSet<CacheKey>, VecDeque<CacheKey>)>,
}

impl Default for VerifyCache {
    fn default() -> Self {
        VerifyCache {
            hashers: (RandomState::new(), RandomState::new()),
            inner: Mutex::new(Default::default()),
        }
    }
}

impl VerifyCache {
    /// Successful verifications remembered.
    pub const CAPACITY: usize = 1024;

    /// The process-wide cache.
    pub fn global() -> &'static VerifyCache {
        static CACHE: OnceLock<VerifyCache> = OnceLock::new();
        CACHE.get_or_init(VerifyCache::default)
    }

    pub fn key(&self, header: &[u8], stored_hash: &str) -> CacheKey {
        let v = (header, stored_hash.as_bytes());
        (self.hashers.0.hash_one(v), self.hashers.1.hash_one(v))
    }

    pub fn contains(&self, key: CacheKey) -> bool {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.0.contains(&key)
    }

    /// Remember a successful verification, evicting the oldest beyond the capacity.
    pub fn insert(&self, key: CacheKey) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (set, order) = &mut *g;
        if !set.insert(key) {
            return;
        }
        order.push_back(key);
        while order.len() > Self::CAPACITY {
            if let Some(old) = order.pop_front() {
                set.remove(&old);
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).0.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_keyed_by_the_stored_hash() {
        let c = VerifyCache::default();
        let k = c.key(b"Basic x", "$2b$10$a");
        assert_ne!(k, c.key(b"Basic x", "$2b$10$b"));
        assert_ne!(k, c.key(b"Basic y", "$2b$10$a"));
        assert_ne!(
            k,
            VerifyCache::default().key(b"Basic x", "$2b$10$a"),
            "random keys"
        );
        assert!(!c.contains(k));
        c.insert(k);
        c.insert(k);
        assert!(c.contains(k));
        assert_eq!(c.len(), 1);
        for i in 0..VerifyCache::CAPACITY {
            c.insert(c.key(format!("Basic {i}").as_bytes(), "$h"));
        }
        assert!(!c.contains(k), "the oldest entry was evicted");
        assert_eq!(c.len(), VerifyCache::CAPACITY);
    }
}
