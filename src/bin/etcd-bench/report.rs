//! Results of one workload: counts, latencies, the table row and JSON.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::cli::WorkloadDef;

/// Error bodies printed per workload.
pub const ERROR_SAMPLES: usize = 3;

/// Errors of one workload: the count and the first few descriptions.
#[derive(Default)]
pub struct ErrorLog {
    pub count: AtomicUsize,
    pub samples: Mutex<Vec<String>>,
}

impl ErrorLog {
    pub fn record(&self, what: String) {
        self.count.fetch_add(1, Ordering::Relaxed);
        let mut samples = self.samples.lock().expect("error log poisoned");
        if samples.len() < ERROR_SAMPLES {
            samples.push(what);
        }
    }
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }
    pub fn samples(&self) -> Vec<String> {
        self.samples.lock().expect("error log poisoned").clone()
    }
}

#[derive(Default)]
pub struct Tally {
    pub latencies_us: Vec<u64>,
    pub ok: usize,
    pub conflicts: usize,
}

pub enum Status {
    Done,
    Unsupported(String),
    Failed(String),
}

pub struct Report {
    pub name: String,
    pub conns: usize,
    pub requests: usize,
    pub status: Status,
    pub ok: usize,
    pub conflicts: usize,
    pub errors: usize,
    pub secs: f64,
    pub throughput: Option<f64>,
    pub latencies_us: Vec<u64>,
    pub capped: bool,
    pub note: String,
    pub error_samples: Vec<String>,
}

impl Report {
    pub fn new(def: &WorkloadDef, conns: usize, requests: usize) -> Report {
        Report {
            name: def.name.clone(),
            conns,
            requests,
            status: Status::Done,
            ok: 0,
            conflicts: 0,
            errors: 0,
            secs: 0.0,
            throughput: None,
            latencies_us: Vec::new(),
            capped: false,
            note: String::new(),
            error_samples: Vec::new(),
        }
    }

    pub fn percentile_ms(&self, p: f64) -> Option<f64> {
        let n = self.latencies_us.len();
        if n == 0 {
            return None;
        }
        let rank = ((p * n as f64).ceil() as usize).clamp(1, n);
        Some(self.latencies_us[rank - 1] as f64 / 1000.0)
    }

    pub fn failed(&self) -> bool {
        matches!(self.status, Status::Failed(_)) || self.errors > 0
    }

    pub fn note_text(&self) -> String {
        let mut parts = Vec::new();
        match &self.status {
            Status::Done => {}
            Status::Unsupported(why) => parts.push(format!("unsupported ({why})")),
            Status::Failed(_) => parts.push("FAILED (see stderr)".to_string()),
        }
        if !self.note.is_empty() {
            parts.push(self.note.clone());
        }
        if self.capped {
            parts.push("capped".to_string());
        }
        parts.join("; ")
    }

    pub fn table_header() -> String {
        format!(
            "{:<14} {:>5} {:>7} {:>5} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}  note",
            "workload", "conns", "ok", "err", "secs", "req/s", "p50ms", "p90ms", "p99ms", "maxms"
        )
    }

    pub fn table_row(&self) -> String {
        let ms = |p: f64| {
            self.percentile_ms(p)
                .map_or_else(|| "-".to_string(), |v| format!("{v:.3}"))
        };
        let (ok, err, secs) = match self.status {
            Status::Unsupported(_) | Status::Failed(_) => {
                ("-".to_string(), "-".to_string(), "-".to_string())
            }
            _ => (
                self.ok.to_string(),
                self.errors.to_string(),
                format!("{:.3}", self.secs),
            ),
        };
        let rate = self
            .throughput
            .map_or_else(|| "-".to_string(), |t| format!("{t:.1}"));
        format!(
            "{:<14} {:>5} {:>7} {:>5} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}  {}",
            self.name,
            self.conns,
            ok,
            err,
            secs,
            rate,
            ms(0.50),
            ms(0.90),
            ms(0.99),
            ms(1.0),
            self.note_text()
        )
        .trim_end()
        .to_string()
    }

    pub fn json(&self) -> serde_json::Value {
        let (status, reason) = match &self.status {
            Status::Done => ("done", None),
            Status::Unsupported(r) => ("unsupported", Some(r.clone())),
            Status::Failed(r) => ("failed", Some(r.clone())),
        };
        serde_json::json!({
            "workload": self.name,
            "status": status,
            "reason": reason,
            "conns": self.conns,
            "requests": self.requests,
            "ok": self.ok,
            "conflicts": self.conflicts,
            "errors": self.errors,
            "secs": self.secs,
            "throughput": self.throughput,
            "p50_ms": self.percentile_ms(0.50),
            "p90_ms": self.percentile_ms(0.90),
            "p99_ms": self.percentile_ms(0.99),
            "max_ms": self.percentile_ms(1.0),
            "capped": self.capped,
            "note": self.note,
            "error_samples": self.error_samples,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report_with(latencies_ms: &[u64]) -> Report {
        let mut r = Report::new(&WorkloadDef::parse("put-v2-64").unwrap(), 64, 100);
        r.latencies_us = latencies_ms.iter().map(|ms| ms * 1000).collect();
        r
    }

    #[test]
    fn nearest_rank_percentiles() {
        let r = report_with(&(1..=100).collect::<Vec<_>>());
        assert_eq!(r.percentile_ms(0.50), Some(50.0));
        assert_eq!(r.percentile_ms(0.99), Some(99.0));
        assert_eq!(r.percentile_ms(1.0), Some(100.0));
        assert_eq!(report_with(&[7]).percentile_ms(0.5), Some(7.0));
        assert_eq!(report_with(&[]).percentile_ms(0.5), None);
    }

    /// bench/summarize.py reads the tables of compare.sh and compare_cluster.sh:
    /// column 1 name, 2 conns, 3 `-` for unsupported/failed rows, 4 err, 6 req/s,
    /// 7 p50, and `412=<n>` in the note, which comes last.
    #[test]
    fn table_rows_keep_the_columns_summarize_py_reads() {
        let mut r = report_with(&[1, 2, 3]);
        r.ok = 3;
        r.secs = 0.5;
        r.throughput = Some(6.0);
        let row = r.table_row();
        let cols: Vec<_> = row.split_whitespace().collect();
        assert_eq!(cols.len(), 10, "{row}");
        assert_eq!(
            (cols[0], cols[2], cols[5], cols[6]),
            ("put-v2-64", "3", "6.0", "2.000")
        );
        r.note = "412=17 attempts/s=40.0".into();
        let row = r.table_row();
        let cols: Vec<_> = row.split_whitespace().collect();
        assert_eq!((cols[1], cols[3], cols[10]), ("64", "0", "412=17"), "{row}");
        r.note.clear();

        r.status = Status::Unsupported("PUT /v2/keys/bench/probe -> 404".into());
        let row = r.table_row();
        let cols: Vec<_> = row.split_whitespace().collect();
        assert_eq!((cols[2], cols[10]), ("-", "unsupported"), "{row}");

        r.status = Status::Failed("PUT x -> 500: multi\nline".into());
        let row = r.table_row();
        assert!(!row.contains('\n'));
        assert_eq!(row.split_whitespace().nth(2), Some("-"));
        assert!(row.contains("FAILED"));
        assert_eq!(Report::table_header().split_whitespace().count(), 11);
    }
}
