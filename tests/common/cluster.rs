//! Cluster scaffolding shared by `tests/cluster.rs`, `tests/cluster_faults.rs` and
//! `tests/chaos.rs`: [`member`] (a [`Node`] as a cluster member), the `fail!` /
//! `ensure!` macros that attach every node's log to a failure, and the [`Nodes`] trait
//! (polling, leader agreement, convergence, expected error 300, the writes a load got
//! acknowledged) that each test's `Cluster` implements.
//!
//! `common::cluster`; its `ensure!`/`fail!` reach a test crate that declares
//! `#[macro_use] mod common;`. Each crate uses a different part of it, hence the
//! `allow(dead_code)` below (the same reason as in `common/mod.rs`).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::load::{Load, Run};
use crate::common::node::NodeBuilder;
use crate::common::{Node, Resp, request_timeout};

/// Timeout of one ordinary request made by these tests.
pub const REQ: Duration = Duration::from_secs(10);

/// Panic with a message and the tail of every node's log.
#[allow(unused_macros)]
macro_rules! fail {
    ($cl:expr, $($arg:tt)*) => {
        {
            // The message again after the logs: CI shows the tail of the output.
            let msg = format!($($arg)*);
            panic!("{msg}\n\n{}\n\nFAILED: {msg}", $cl.logs())
        }
    };
}

/// Assert with the nodes' logs attached.
#[allow(unused_macros)]
macro_rules! ensure {
    ($cl:expr, $cond:expr, $($arg:tt)*) => {
        if !$cond {
            fail!($cl, $($arg)*);
        }
    };
}

// ---------------------------------------------------------------------------------------
// members

/// A cluster member to build: the harness flags plus `-v` (so its log explains what it did),
/// `NO_COLOR=1`; e.g. `member("node1").args(&["-C", peer]).prepare()`.
pub fn member(name: &str) -> NodeBuilder {
    Node::build(name).arg("-v").env("NO_COLOR", "1")
}

/// How long a member may take to exit after SIGTERM.
pub const TERM_WAIT: Duration = Duration::from_secs(15);

/// `NAME=PEER_URL,...` of `nodes`, for `--initial-cluster`.
pub fn initial_cluster(nodes: &[Node]) -> String {
    nodes
        .iter()
        .map(|p| format!("{}={}", p.name, p.peer_url()))
        .collect::<Vec<_>>()
        .join(",")
}

// ---------------------------------------------------------------------------------------
// clusters

/// What the tests ask of a set of running nodes; each test crate's `Cluster` provides the
/// nodes (and the request timeouts it polls with).
pub trait Nodes {
    /// Timeout of one `/v1/leader` request while polling for a leader.
    const LEADER_TIMEOUT: Duration;
    /// Timeout of one full listing while polling for the nodes to converge.
    const LISTING_TIMEOUT: Duration;

    fn nodes(&self) -> &[Node];

    /// Something to add to the report after the nodes' logs.
    fn report(&self) -> Option<String> {
        None
    }

    /// The tail of every node's log (and the report), for a failure message.
    fn logs(&self) -> String {
        let mut s: Vec<String> = self.nodes().iter().map(|p| p.tail(40)).collect();
        s.extend(self.report());
        s.join("\n\n")
    }

    fn addr(&self, i: usize) -> &str {
        &self.nodes()[i].client
    }

    /// The node whose advertised peer URL is `url`.
    fn by_peer_url(&self, url: &str) -> Option<usize> {
        self.nodes().iter().position(|p| p.peer_url() == url)
    }

    /// Poll `f` (every 20 ms) until Ok, up to `timeout`; panics with the last error, the
    /// time spent and the nodes' logs.
    fn poll<T>(
        &self,
        timeout: Duration,
        what: &str,
        mut f: impl FnMut() -> Result<T, String>,
    ) -> (T, Duration) {
        let start = Instant::now();
        loop {
            let err = match f() {
                Ok(v) => return (v, start.elapsed()),
                Err(e) => e,
            };
            if start.elapsed() >= timeout {
                fail!(
                    self,
                    "timed out after {:?} waiting for {what}; last: {err}",
                    start.elapsed()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Poll until every node of `ask` names the same leader, one of `ask`; returns it.
    fn leader(&self, ask: &[usize], timeout: Duration) -> (usize, Duration) {
        let nodes = self.nodes();
        self.poll(timeout, "a leader the nodes agree on", || {
            let mut seen: Option<String> = None;
            for &i in ask {
                let r = call_t(self.addr(i), "GET", "/v1/leader", "", Self::LEADER_TIMEOUT)?;
                if r.status != 200 {
                    return Err(format!(
                        "{}: /v1/leader {} {}",
                        nodes[i].name, r.status, r.body
                    ));
                }
                if let Some(s) = &seen
                    && *s != r.body
                {
                    return Err(format!(
                        "leaders differ: {s} vs {} ({})",
                        r.body, nodes[i].name
                    ));
                }
                seen = Some(r.body);
            }
            let url = seen.unwrap_or_default();
            match self.by_peer_url(&url) {
                Some(l) if ask.contains(&l) => Ok(l),
                _ => Err(format!("leader {url} is not one of the nodes asked")),
            }
        })
    }

    /// Poll until the full sorted recursive listing of `path` is the same on every node of
    /// `ask`; returns it (and the time it took).
    fn converge(&self, ask: &[usize], path: &str, timeout: Duration) -> (String, Duration) {
        let nodes = self.nodes();
        self.poll(timeout, &format!("{path} to be the same on every node"), || {
            let mut bodies = Vec::new();
            for &i in ask {
                bodies.push((i, listing(self.addr(i), path, Self::LISTING_TIMEOUT)?));
            }
            let (i0, b0) = &bodies[0];
            for (i, b) in &bodies[1..] {
                if b != b0 {
                    return Err(format!(
                        "{} and {} differ ({} vs {} bytes), first difference at byte {}: {:?} vs {:?}",
                        nodes[*i0].name,
                        nodes[*i].name,
                        b0.len(),
                        b.len(),
                        first_diff(b0, b),
                        snippet(b0, first_diff(b0, b)),
                        snippet(b, first_diff(b0, b)),
                    ));
                }
            }
            Ok(b0.clone())
        })
    }

    /// A request to node `i` that must fail with error 300 (HTTP 500) within 10 s (it is
    /// given 15 s); returns how long it took.
    fn expect_300(&self, i: usize, what: &str, method: &str, path: &str, body: &str) -> Duration {
        let name = &self.nodes()[i].name;
        let start = Instant::now();
        let r = call_t(self.addr(i), method, path, body, Duration::from_secs(15))
            .unwrap_or_else(|e| fail!(self, "{what} on {name}: {e} (after {:?})", start.elapsed()));
        let took = start.elapsed();
        let code = serde_json::from_str::<serde_json::Value>(&r.body)
            .ok()
            .map(|v| v["errorCode"].clone());
        ensure!(
            self,
            r.status == 500 && code == Some(serde_json::json!(300)),
            "{what} on {name}: got {} {:?} after {took:?}, want 500 with errorCode 300",
            r.status,
            r.body
        );
        ensure!(
            self,
            took < Duration::from_secs(10),
            "{what} on {name}: error 300 only after {took:?}"
        );
        took
    }

    /// Stop `load` and return the writes it got acknowledged (key, value); an answer that
    /// made no sense (wrong key or value, an impossible state before, an index going
    /// backwards) fails the test.
    fn acked_writes(&self, load: Load) -> Vec<(String, String)> {
        self.finished_run(load).acked()
    }

    /// Stop `load` and return all it did, checked as [`Nodes::acked_writes`] checks it.
    fn finished_run(&self, load: Load) -> Run {
        let run = load.finish();
        ensure!(
            self,
            run.problems.is_empty(),
            "{} wrong acknowledgement(s) (load seed {}), first ones:\n{}",
            run.problems.len(),
            run.seed,
            run.problems[..run.problems.len().min(10)].join("\n")
        );
        run
    }

    /// Poll until node `i` answers `/v1/leader` with error 301 (no leader known); returns
    /// how long it took.
    fn wait_no_leader(&self, i: usize, what: &str, timeout: Duration) -> Duration {
        self.poll(timeout, what, || {
            let r = call(self.addr(i), "GET", "/v1/leader", &[], "")?;
            let v: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_default();
            if r.status == 500 && v["errorCode"] == 301 {
                Ok(())
            } else {
                Err(format!("{} {:?}", r.status, r.body))
            }
        })
        .1
    }
}

pub fn first_diff(a: &str, b: &str) -> usize {
    a.bytes()
        .zip(b.bytes())
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()))
}

pub fn snippet(s: &str, at: usize) -> String {
    let from = at.saturating_sub(60);
    let to = (at + 60).min(s.len());
    String::from_utf8_lossy(&s.as_bytes()[from..to]).into_owned()
}

// ---------------------------------------------------------------------------------------
// requests

/// One request, 10 s timeout, errors as text.
pub fn call(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<Resp, String> {
    request_timeout(addr, method, path, headers, body.as_bytes(), REQ)
        .map_err(|e| format!("{method} http://{addr}{path}: {e}"))
}

/// One request with a form body (if any) and the given timeout, errors as text.
pub fn call_t(
    addr: &str,
    method: &str,
    path: &str,
    body: &str,
    timeout: Duration,
) -> Result<Resp, String> {
    let headers: &[(&str, &str)] = if body.is_empty() {
        &[]
    } else {
        &[("Content-Type", "application/x-www-form-urlencoded")]
    };
    request_timeout(addr, method, path, headers, body.as_bytes(), timeout)
        .map_err(|e| format!("{method} http://{addr}{path}: {e}"))
}

/// `GET /v2/keys<path>?recursive=true&sorted=true` -> body (200 only).
pub fn listing(addr: &str, path: &str, timeout: Duration) -> Result<String, String> {
    let r = call_t(
        addr,
        "GET",
        &format!("/v2/keys{path}?recursive=true&sorted=true"),
        "",
        timeout,
    )?;
    if r.status != 200 {
        return Err(format!("GET {path} on {addr}: {} {}", r.status, r.body));
    }
    Ok(r.body)
}

/// Keys and values of every leaf in a v2 listing body.
pub fn leaves(body: &str) -> Result<BTreeMap<String, String>, String> {
    fn walk(v: &serde_json::Value, out: &mut BTreeMap<String, String>) {
        if let Some(children) = v.get("nodes").and_then(|n| n.as_array()) {
            for c in children {
                walk(c, out);
            }
        } else if let (Some(k), Some(val)) = (v["key"].as_str(), v["value"].as_str()) {
            out.insert(k.to_string(), val.to_string());
        }
    }
    let v: serde_json::Value =
        serde_json::from_str(body).map_err(|e| format!("listing is not JSON: {e}"))?;
    let mut out = BTreeMap::new();
    walk(&v["node"], &mut out);
    Ok(out)
}

/// The acknowledged writes (key, value) that a v2 listing body does not show with that value.
pub fn not_listed<'a>(
    body: &str,
    acked: &'a [(String, String)],
) -> Result<Vec<&'a (String, String)>, String> {
    let have = leaves(body)?;
    Ok(acked
        .iter()
        .filter(|(k, v)| have.get(k) != Some(v))
        .collect())
}
