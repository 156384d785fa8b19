//! Small lock-free instruments behind `/metrics` and `/v2/stats/leader`: a latency histogram
//! with Prometheus buckets, and per-peer RPC statistics (latency mean, deviation, min, max,
//! successes and failures) as etcd's leader stats report them.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the proposal latency buckets (etcd's: 1 ms doubling to 4 s).
pub const BUCKETS: [f64; 13] = [
    0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 4.096,
];

#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|&b| secs <= b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_nanos
            .fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }

    /// Append this histogram in Prometheus text format (cumulative buckets).
    pub fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            cumulative += self.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// Round-trip statistics of the RPCs to one peer (milliseconds).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PeerStat {
    pub current: f64,
    pub average: f64,
    pub m2: f64,
    pub minimum: f64,
    pub maximum: f64,
    pub success: u64,
    pub fail: u64,
}

impl PeerStat {
    pub fn standard_deviation(&self) -> f64 {
        if self.success < 2 {
            0.0
        } else {
            (self.m2 / self.success as f64).sqrt()
        }
    }
}

/// Per-peer RPC statistics, keyed by node id.
#[derive(Debug, Default)]
pub struct PeerStats {
    peers: Mutex<BTreeMap<u64, PeerStat>>,
}

impl PeerStats {
    pub fn success(&self, peer: u64, d: Duration) {
        let ms = d.as_secs_f64() * 1000.0;
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        let s = peers.entry(peer).or_default();
        s.success += 1;
        s.current = ms;
        // Welford's running mean and variance.
        let delta = ms - s.average;
        s.average += delta / s.success as f64;
        s.m2 += delta * (ms - s.average);
        s.minimum = if s.success == 1 {
            ms
        } else {
            s.minimum.min(ms)
        };
        s.maximum = s.maximum.max(ms);
    }

    pub fn failure(&self, peer: u64) {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        peers.entry(peer).or_default().fail += 1;
    }

    pub fn get(&self, peer: u64) -> PeerStat {
        self.peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&peer)
            .cloned()
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(300));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(10));
        let mut out = String::new();
        h.render(&mut out, "x", "help");
        assert!(out.contains("x_bucket{le=\"0.0005\"} 1\n"));
        assert!(out.contains("x_bucket{le=\"0.004\"} 2\n"));
        assert!(out.contains("x_bucket{le=\"4.096\"} 2\n"));
        assert!(out.contains("x_bucket{le=\"+Inf\"} 3\n"));
        assert!(out.contains("x_count 3\n"));
    }

    #[test]
    fn peer_stats_track_mean_and_extremes() {
        let p = PeerStats::default();
        for ms in [1, 2, 3] {
            p.success(7, Duration::from_millis(ms));
        }
        p.failure(7);
        let s = p.get(7);
        assert_eq!((s.success, s.fail), (3, 1));
        assert!((s.average - 2.0).abs() < 1e-9);
        assert!((s.minimum - 1.0).abs() < 1e-9 && (s.maximum - 3.0).abs() < 1e-9);
        assert!((s.standard_deviation() - (2.0f64 / 3.0).sqrt()).abs() < 1e-9);
    }
}
