//! `/metrics`: Prometheus text exposition of the store, Raft and HTTP counters.
//!
//! Names follow etcd 2.x/3.x where a counterpart exists (`etcd_store_*`,
//! `etcd_server_proposal_durations_seconds`, `etcd_http_received_total`...).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::Method;
use axum::response::Response;

use super::{AppRef, response};

pub const METHODS: [&str; 6] = ["GET", "PUT", "POST", "DELETE", "HEAD", "OTHER"];

#[derive(Debug, Default)]
pub struct HttpCounters {
    received: [AtomicU64; METHODS.len()],
}

impl HttpCounters {
    fn slot(m: &Method) -> usize {
        match *m {
            Method::GET => 0,
            Method::PUT => 1,
            Method::POST => 2,
            Method::DELETE => 3,
            Method::HEAD => 4,
            _ => 5,
        }
    }
}

pub fn count_request(st: &super::AppState, method: &Method) {
    st.http.received[HttpCounters::slot(method)].fetch_add(1, Ordering::Relaxed);
}

fn line(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(&str, u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, v) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {v}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
    }
}

pub fn render(st: AppRef) -> Response {
    let s = st.node.replica.read().state.store.stats();
    let m = st.node.raft.metrics().borrow().clone();
    let mut out = String::with_capacity(4096);
    line(
        &mut out,
        "etcd_store_reads_total",
        "counter",
        "Total number of reads from the store.",
        &[
            ("action=\"get\",outcome=\"success\"", s.gets_success),
            ("action=\"get\",outcome=\"fail\"", s.gets_fail),
        ],
    );
    line(
        &mut out,
        "etcd_store_writes_total",
        "counter",
        "Total number of writes to the store.",
        &[
            ("action=\"set\",outcome=\"success\"", s.sets_success),
            ("action=\"set\",outcome=\"fail\"", s.sets_fail),
            ("action=\"create\",outcome=\"success\"", s.create_success),
            ("action=\"create\",outcome=\"fail\"", s.create_fail),
            ("action=\"update\",outcome=\"success\"", s.update_success),
            ("action=\"update\",outcome=\"fail\"", s.update_fail),
            (
                "action=\"compareAndSwap\",outcome=\"success\"",
                s.compare_and_swap_success,
            ),
            (
                "action=\"compareAndSwap\",outcome=\"fail\"",
                s.compare_and_swap_fail,
            ),
            ("action=\"delete\",outcome=\"success\"", s.delete_success),
            ("action=\"delete\",outcome=\"fail\"", s.delete_fail),
            (
                "action=\"compareAndDelete\",outcome=\"success\"",
                s.compare_and_delete_success,
            ),
            (
                "action=\"compareAndDelete\",outcome=\"fail\"",
                s.compare_and_delete_fail,
            ),
        ],
    );
    line(
        &mut out,
        "etcd_store_expires_total",
        "counter",
        "Total number of expired keys.",
        &[("", s.expire_count)],
    );
    line(
        &mut out,
        "etcd_store_watchers",
        "gauge",
        "Count of currently active watchers.",
        &[("", s.watchers)],
    );
    let index = st.node.replica.read().state.store.index();
    line(
        &mut out,
        "etcd_store_index",
        "gauge",
        "The store index of the last write.",
        &[("", index)],
    );
    let is_leader = u64::from(st.node.is_leader());
    line(
        &mut out,
        "etcd_server_has_leader",
        "gauge",
        "Whether a leader exists (1) or not (0).",
        &[("", u64::from(m.current_leader.is_some()))],
    );
    line(
        &mut out,
        "etcd_server_is_leader",
        "gauge",
        "Whether this member is the leader.",
        &[("", is_leader)],
    );
    line(
        &mut out,
        "etcd_raft_term",
        "gauge",
        "The current Raft term.",
        &[("", m.current_term)],
    );
    line(
        &mut out,
        "etcd_raft_last_log_index",
        "gauge",
        "Index of the last Raft log entry.",
        &[("", m.last_log_index.unwrap_or(0))],
    );
    line(
        &mut out,
        "etcd_raft_applied_index",
        "gauge",
        "Index of the last applied Raft entry.",
        &[("", m.last_applied.map_or(0, |l| l.index))],
    );
    line(
        &mut out,
        "etcd_raft_snapshot_index",
        "gauge",
        "Raft index of the last snapshot.",
        &[("", m.snapshot.map_or(0, |l| l.index))],
    );
    line(
        &mut out,
        "etcd_server_proposals_failed_total",
        "counter",
        "Proposals that failed.",
        &[("", st.node.proposals_failed.load(Ordering::Relaxed))],
    );
    st.node.proposal_seconds.render(
        &mut out,
        "etcd_server_proposal_durations_seconds",
        "Time from receiving a write to applying it.",
    );
    let received: Vec<String> = METHODS.iter().map(|m| format!("method=\"{m}\"")).collect();
    let samples: Vec<(&str, u64)> = received
        .iter()
        .zip(&st.http.received)
        .map(|(l, c)| (l.as_str(), c.load(Ordering::Relaxed)))
        .collect();
    line(
        &mut out,
        "etcd_http_received_total",
        "counter",
        "Client requests received, by method.",
        &samples,
    );
    response::with_body(200, Some("text/plain; version=0.0.4; charset=utf-8"), out)
}
