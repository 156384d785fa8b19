//! The replicated state: everything the Raft log changes, in one place.
//!
//! * the key space ([`Store`], `store/`: the tree, its index, history, watches, TTLs);
//! * the auth state ([`auth::AuthState`]: users, roles, the switch);
//! * the members removed from the cluster (so `/v2/members` answers 410 for them).
//!
//! Every replica applies the same commands (`command.rs`) in log order to its `State` and so
//! holds the same state; a snapshot is the `State` ([`State::snapshot`]), saved and sent as the
//! store's binary stream with the other two parts in its metadata (`store/snapshot.rs`), in
//! the same shape as before they moved here, so every snapshot ever written still loads.
//!
//! Like the store, this module is pure: no clock, no I/O.

pub mod auth;

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::store::{Store, StoreSnapshot};
use auth::AuthState;

/// The snapshot metadata field of the removed members.
const REMOVED_MEMBERS: &str = "removed_members";
/// The snapshot metadata field of the auth state.
const AUTH: &str = "auth";

pub struct State {
    /// The key space.
    pub store: Store,
    /// `/v2/auth`: changed only by applied auth commands.
    pub auth: AuthState,
    /// Ids of members removed from the cluster.
    pub removed_members: BTreeSet<u64>,
}

impl State {
    pub fn new(history_size: usize) -> State {
        State {
            store: Store::new(history_size),
            auth: AuthState::default(),
            removed_members: BTreeSet::new(),
        }
    }

    /// The whole state as it is now; as cheap as [`Store::snapshot`] (the auth state and the
    /// removed members are small).
    pub fn snapshot(&self) -> StoreSnapshot {
        let mut snap = self.store.snapshot();
        snap.extra = extras(&self.auth, &self.removed_members);
        snap
    }

    /// Check that a snapshot's auth state and removed members read back, without taking it
    /// (what [`restore`](Self::restore) would refuse).
    pub fn verify(snap: &StoreSnapshot) -> Result<(), serde_json::Error> {
        use serde::Deserialize;
        if let Some(v) = snap.extra.get(AUTH) {
            AuthState::deserialize(v)?;
        }
        if let Some(v) = snap.extra.get(REMOVED_MEMBERS) {
            BTreeSet::<u64>::deserialize(v)?;
        }
        Ok(())
    }

    /// Replace the whole state with a snapshot. Snapshots from before auth existed have no
    /// auth state: auth is then off.
    pub fn restore(&mut self, mut snap: StoreSnapshot) -> Result<(), serde_json::Error> {
        let auth = match snap.extra.remove(AUTH) {
            Some(v) => serde_json::from_value(v)?,
            None => AuthState::default(),
        };
        let removed = match snap.extra.remove(REMOVED_MEMBERS) {
            Some(v) => serde_json::from_value(v)?,
            None => BTreeSet::new(),
        };
        self.store.restore(snap);
        self.auth = auth;
        self.removed_members = removed;
        Ok(())
    }
}

fn extras(auth: &AuthState, removed: &BTreeSet<u64>) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert(
        REMOVED_MEMBERS.into(),
        serde_json::to_value(removed).expect("a set of numbers"),
    );
    m.insert(
        AUTH.into(),
        serde_json::to_value(auth).expect("plain structs serialize"),
    );
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_carries_the_auth_state_and_the_removed_members() {
        let mut st = State::new(100);
        st.store.set("/a", Some("1".into()), None, false).unwrap();
        st.removed_members.insert(42);
        st.auth =
            serde_json::from_str(r#"{"enabled":true,"users":{},"roles":{},"version":7}"#).unwrap();
        let mut bytes = Vec::new();
        st.snapshot().encode(&mut bytes).unwrap();
        let snap = StoreSnapshot::decode(&mut bytes.as_slice()).unwrap();
        let mut back = State::new(100);
        back.restore(snap).unwrap();
        assert_eq!(back.store.index(), 1);
        assert_eq!(back.removed_members, BTreeSet::from([42]));
        assert_eq!(back.auth, st.auth);
        assert!(back.auth.enabled());
    }

    #[test]
    fn a_snapshot_without_them_restores_defaults() {
        let mut st = State::new(100);
        st.removed_members.insert(7);
        let mut bare = Store::new(100).snapshot();
        bare.extra.clear();
        st.restore(bare).unwrap();
        assert!(st.removed_members.is_empty());
        assert_eq!(st.auth, AuthState::default());
    }
}
