//! Keeps the log readable when openraft repeats itself.
//!
//! openraft logs an error for every failed attempt to reach a peer: while one member of a
//! cluster is down, the leader wrote a line per quorum-read round ("timeout while confirming
//! leadership ... Connection refused"), hundreds per second. [`Repeats`] lets the first
//! warning or error from each place in openraft through and then at most one more per
//! [`EVERY`] from that place, so an operator sees that a peer is unreachable, and is reminded
//! while it stays so, without the flood. Our own log lines are never held back.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::callsite::Identifier;
use tracing::subscriber::Interest;
use tracing::{Level, Metadata};
use tracing_subscriber::layer::{Context, Filter};

/// At most one warning or error per place in openraft's code this often.
pub const EVERY: Duration = Duration::from_secs(10);

#[derive(Default)]
pub struct Repeats {
    last: Mutex<HashMap<Identifier, Instant>>,
}

impl Repeats {
    fn held_back(&self, meta: &Metadata<'_>, now: Instant) -> bool {
        if !meta.is_event() || !meta.target().starts_with("openraft") || *meta.level() > Level::WARN
        {
            return false;
        }
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        match last.get(&meta.callsite()) {
            Some(t) if now.duration_since(*t) < EVERY => true,
            _ => {
                last.insert(meta.callsite(), now);
                false
            }
        }
    }
}

impl<S> Filter<S> for Repeats {
    fn enabled(&self, meta: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        !self.held_back(meta, Instant::now())
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> Interest {
        if meta.target().starts_with("openraft") {
            // Decided event by event.
            Interest::sometimes()
        } else {
            Interest::always()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::{Layer, fmt};

    use super::*;

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn repeated_openraft_errors_are_held_back_ours_never() {
        let out = Lines::default();
        let w = out.clone();
        let layer = fmt::layer()
            .with_writer(move || w.clone())
            .with_ansi(false)
            .with_filter(Repeats::default());
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..100 {
                tracing::error!(target: "openraft::core", i, "peer unreachable");
                tracing::warn!(target: "etcd::server", i, "ours");
            }
            tracing::error!(target: "openraft::core", "another place");
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.matches("peer unreachable").count(), 1, "{text}");
        assert_eq!(text.matches("another place").count(), 1, "{text}");
        assert_eq!(text.matches("ours").count(), 100);

        // After the quiet period the place may log again.
        let r = Repeats::default();
        let meta = callsite_meta();
        let t0 = Instant::now();
        assert!(!r.held_back(meta, t0));
        assert!(r.held_back(meta, t0 + Duration::from_secs(1)));
        assert!(!r.held_back(meta, t0 + EVERY + Duration::from_secs(1)));
    }

    fn callsite_meta() -> &'static Metadata<'static> {
        struct Cs;
        static CS: Cs = Cs;
        static META: Metadata<'static> = tracing::metadata!(
            name: "test",
            target: "openraft::x",
            level: Level::ERROR,
            fields: &[],
            callsite: &CS,
            kind: tracing::metadata::Kind::EVENT
        );
        impl tracing::Callsite for Cs {
            fn set_interest(&self, _: Interest) {}
            fn metadata(&self) -> &Metadata<'_> {
                &META
            }
        }
        &META
    }
}
