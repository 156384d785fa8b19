//! Store counters behind `/v2/stats/store`, `/v1/stats/store` and `/metrics`.
//!
//! Write counters change only when commands are applied, so they are identical on every
//! member. They count the way etcd 3.4 does, quirks included: a few refusals count as
//! successes and a create that meets a key on its way is also a failed set (see
//! `write.rs`). Read counters count the reads this node served. All counters are atomics so
//! that reads, which hold the store only for reading, can count themselves.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

macro_rules! counters {
    ($($field:ident => $json:literal),* $(,)?) => {
        #[derive(Debug, Default)]
        pub struct Stats { $(pub $field: AtomicU64,)* }

        /// A plain copy of the counters, in the field order of `/v2/stats/store`.
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
        pub struct StatsSnapshot { $(#[serde(rename = $json)] pub $field: u64,)* }

        impl Stats {
            pub fn snapshot(&self) -> StatsSnapshot {
                StatsSnapshot { $($field: self.$field.load(Ordering::Relaxed),)* }
            }
            pub fn restore(&self, s: &StatsSnapshot) {
                $(self.$field.store(s.$field, Ordering::Relaxed);)*
            }
        }
    };
}

counters! {
    gets_success => "getsSuccess",
    gets_fail => "getsFail",
    sets_success => "setsSuccess",
    sets_fail => "setsFail",
    delete_success => "deleteSuccess",
    delete_fail => "deleteFail",
    update_success => "updateSuccess",
    update_fail => "updateFail",
    create_success => "createSuccess",
    create_fail => "createFail",
    compare_and_swap_success => "compareAndSwapSuccess",
    compare_and_swap_fail => "compareAndSwapFail",
    compare_and_delete_success => "compareAndDeleteSuccess",
    compare_and_delete_fail => "compareAndDeleteFail",
    expire_count => "expireCount",
    watchers => "watchers",
}

impl Stats {
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Count one outcome: `ok` picks the success or the failure counter.
    pub fn count(ok: bool, success: &AtomicU64, fail: &AtomicU64) {
        Self::inc(if ok { success } else { fail });
    }
}

impl StatsSnapshot {
    /// The v0.1 shape `{"gets","sets","deletes","testAndSets"}`, derived from the v2 counters.
    pub fn v1(&self) -> V1Stats {
        V1Stats {
            gets: self.gets_success + self.gets_fail,
            sets: self.sets_success
                + self.sets_fail
                + self.create_success
                + self.create_fail
                + self.update_success
                + self.update_fail,
            deletes: self.delete_success + self.delete_fail + self.expire_count,
            test_and_sets: self.compare_and_swap_success + self.compare_and_swap_fail,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct V1Stats {
    pub gets: u64,
    pub sets: u64,
    pub deletes: u64,
    #[serde(rename = "testAndSets")]
    pub test_and_sets: u64,
}
