//! The wall clock. The store never reads it: time enters the replicated state inside
//! commands (an absolute expiry time, the leader's time of an expiry round or a batch), so
//! every replica applies the same values. The API reads it to turn a `ttl` into an expiry
//! time and to render remaining TTLs; the leader reads it when it proposes.

use std::time::{SystemTime, UNIX_EPOCH};

/// The wall clock, in Unix nanoseconds (0 before 1970).
pub fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}
