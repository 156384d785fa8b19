//! Throughput workloads: PUT, GET, quorum GET and CAS over N connections
//! (spread round-robin over the targets), and the timed phase `scale` reuses.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::{Method, StatusCode};
use tokio::task::JoinSet;

use crate::cli::{Api, Kind, Options, WorkloadDef};
use crate::http::{
    Conn, Response, Target, describe, encode, error_code, is_unsupported, keys_path, make_value,
    node_modified_index, node_value, open_conns, scale_key_path, scale_value, snippet,
    write_method,
};
use crate::report::{ErrorLog, Report, Status, Tally};

/// Number of keys written before the read workloads.
pub const GET_KEYS: usize = 100;
/// etcd's error code for a failed prevIndex/prevValue comparison.
const COMPARE_FAILED: u64 = 101;
/// How long the other members may take to show the setup writes.
const BARRIER_TIMEOUT: Duration = Duration::from_secs(10);

/// Replica, read-only state of a running load workload.
pub struct Load {
    pub def: WorkloadDef,
    pub requests: usize,
    /// The value of every `put-*` write.
    pub value: String,
    /// Size of the per-key values of `scale`.
    pub value_size: usize,
    pub next: AtomicUsize,
    pub deadline: Instant,
    pub capped: AtomicBool,
    pub errors: ErrorLog,
}

pub enum Outcome {
    Ok,
    Conflict,
    Error,
}

/// One timed operation of a load workload (for CAS: read plus swap).
pub async fn one_op(load: &Load, conn: &mut Conn, worker: usize, i: usize) -> Outcome {
    let api = load.def.api;
    let (method, path, form) = match load.def.kind {
        Kind::Put => (
            write_method(api),
            keys_path(api, &format!("k{i}")),
            Some(format!("value={}", load.value)),
        ),
        Kind::Scale => (
            Method::PUT,
            scale_key_path(i),
            Some(format!("value={}", scale_value(i, load.value_size))),
        ),
        Kind::Get => (
            Method::GET,
            keys_path(api, &format!("k{}", i % GET_KEYS)),
            None,
        ),
        Kind::QuorumGet => (
            Method::GET,
            format!(
                "{}?quorum=true",
                keys_path(api, &format!("k{}", i % GET_KEYS))
            ),
            None,
        ),
        Kind::Cas => {
            let get_path = keys_path(api, "cas");
            let index = match conn.request(Method::GET, &get_path, None).await {
                Ok(resp) if resp.status == StatusCode::OK => {
                    match node_modified_index(&resp.body) {
                        Some(v) => v,
                        None => {
                            load.errors.record(format!(
                                "GET {get_path}: no node.modifiedIndex in {}",
                                snippet(&resp.body)
                            ));
                            return Outcome::Error;
                        }
                    }
                }
                Ok(resp) => {
                    load.errors.record(describe(&Method::GET, &get_path, &resp));
                    return Outcome::Error;
                }
                Err(e) => {
                    load.errors.record(format!("GET {get_path}: {e:#}"));
                    return Outcome::Error;
                }
            };
            (
                Method::PUT,
                format!("{get_path}?prevIndex={index}"),
                Some(format!("value=w{worker}-{i}")),
            )
        }
        Kind::Watch => unreachable!("watch has its own runner"),
    };
    match conn.request(method.clone(), &path, form.as_deref()).await {
        Ok(resp) if resp.status.is_success() => Outcome::Ok,
        // Another connection swapped first: "compare failed", an expected outcome.
        Ok(resp) if load.def.kind == Kind::Cas && is_compare_failed(&resp) => Outcome::Conflict,
        Ok(resp) => {
            load.errors.record(describe(&method, &path, &resp));
            Outcome::Error
        }
        Err(e) => {
            load.errors.record(format!("{method} {path}: {e:#}"));
            Outcome::Error
        }
    }
}

pub async fn worker_loop(load: Arc<Load>, mut conn: Conn, worker: usize) -> Tally {
    let mut tally = Tally::default();
    loop {
        if Instant::now() >= load.deadline {
            if load.next.load(Ordering::Relaxed) < load.requests {
                load.capped.store(true, Ordering::Relaxed);
            }
            break;
        }
        let i = load.next.fetch_add(1, Ordering::Relaxed);
        if i >= load.requests {
            break;
        }
        let start = Instant::now();
        let outcome = one_op(&load, &mut conn, worker, i).await;
        let elapsed = start.elapsed().as_micros() as u64;
        match outcome {
            Outcome::Ok => {
                tally.ok += 1;
                tally.latencies_us.push(elapsed);
            }
            Outcome::Conflict => {
                tally.conflicts += 1;
                tally.latencies_us.push(elapsed);
            }
            Outcome::Error => {}
        }
    }
    tally
}

/// The untimed first write of a workload; decides whether it is supported.
/// Returns the answer's body on success.
pub async fn probe(conn: &mut Conn, api: Api, key: &str, value: &str) -> Result<Bytes, Status> {
    let method = write_method(api);
    let path = keys_path(api, key);
    match conn
        .request(
            method.clone(),
            &path,
            Some(&format!("value={}", encode(value))),
        )
        .await
    {
        Ok(resp) if resp.status.is_success() => Ok(resp.body),
        Ok(resp) if is_unsupported(&resp) => Err(Status::Unsupported(format!(
            "{method} {path} -> {}",
            resp.status.as_u16()
        ))),
        Ok(resp) => Err(Status::Failed(describe(&method, &path, &resp))),
        Err(e) => Err(Status::Failed(format!("{method} {path}: {e:#}"))),
    }
}

pub async fn run_load(targets: &[Arc<Target>], def: WorkloadDef, opts: &Options) -> Report {
    let conns_n = opts.conns.unwrap_or(def.conns);
    let mut report = Report::new(&def, conns_n, opts.requests);
    let mut conns = match open_conns(targets, conns_n).await {
        Ok(c) => c,
        Err(e) => {
            report.status = Status::Failed(format!("opening {conns_n} connections: {e:#}"));
            return report;
        }
    };
    let value = make_value(opts.value_size);

    // Untimed probe / setup writes.
    let probe_result = match def.kind {
        Kind::Put => probe(&mut conns[0], def.api, "probe", &value).await,
        Kind::Get | Kind::QuorumGet => probe(&mut conns[0], def.api, "k0", &value).await,
        Kind::Cas => probe(&mut conns[0], def.api, "cas", "c0").await,
        Kind::Watch | Kind::Scale => unreachable!("{:?} has its own runner", def.kind),
    };
    if let Err(status) = probe_result {
        report.status = status;
        return report;
    }
    if matches!(def.kind, Kind::Get | Kind::QuorumGet)
        && let Err(why) = write_get_keys(&mut conns, def.api, &value).await
    {
        report.status = Status::Failed(why);
        return report;
    }
    // Every member must see the setup writes before the timed phase reads them.
    if targets.len() > 1
        && let Err(why) = barrier(&mut conns, targets.len()).await
    {
        report.status = Status::Failed(why);
        return report;
    }

    let load = Arc::new(Load {
        def: def.clone(),
        requests: opts.requests,
        value,
        value_size: opts.value_size,
        next: AtomicUsize::new(0),
        deadline: Instant::now() + opts.duration_cap,
        capped: AtomicBool::new(false),
        errors: ErrorLog::default(),
    });
    let done = drive(load, conns).await;
    done.fill(&mut report);
    if def.kind == Kind::Cas {
        let attempts = report.ok + report.conflicts;
        report.note = format!(
            "412={} attempts/s={:.1}",
            report.conflicts,
            attempts as f64 / report.secs.max(f64::MIN_POSITIVE)
        );
    }
    report
}

/// A lost CAS race: 412 with etcd's "compare failed" error code. Any other
/// 412 (or a 412 without an etcd error body) is an error.
pub fn is_compare_failed(resp: &Response) -> bool {
    resp.status == StatusCode::PRECONDITION_FAILED && error_code(&resp.body) == Some(COMPARE_FAILED)
}

/// Writes keys `k1..k{GET_KEYS}` (`k0` is the probe) over all connections.
async fn write_get_keys(conns: &mut Vec<Conn>, api: Api, value: &str) -> Result<(), String> {
    let errors = Arc::new(ErrorLog::default());
    let stride = conns.len();
    let mut set = JoinSet::new();
    for (w, mut conn) in conns.drain(..).enumerate() {
        let errors = errors.clone();
        let form = format!("value={value}");
        set.spawn(async move {
            for k in (1 + w..GET_KEYS).step_by(stride) {
                let path = keys_path(api, &format!("k{k}"));
                let method = write_method(api);
                match conn.request(method.clone(), &path, Some(&form)).await {
                    Ok(resp) if resp.status.is_success() => {}
                    Ok(resp) => errors.record(describe(&method, &path, &resp)),
                    Err(e) => errors.record(format!("{method} {path}: {e:#}")),
                }
            }
            (w, conn)
        });
    }
    let mut back = Vec::with_capacity(stride);
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(pair) => back.push(pair),
            Err(e) => errors.record(format!("setup task: {e}")),
        }
    }
    // Keep the round-robin order: connection c still goes to target c % n.
    back.sort_by_key(|(w, _)| *w);
    conns.extend(back.into_iter().map(|(_, conn)| conn));
    if errors.count() > 0 {
        return Err(format!(
            "{} of the {GET_KEYS} setup writes failed, first: {}",
            errors.count(),
            errors.samples().join(" | ")
        ));
    }
    Ok(())
}

/// Writes a fresh value to `bench/barrier` through the first connection, then
/// waits (bounded) until the first connection of every other target reads it
/// back: from then on every member has applied the setup writes before it.
pub async fn barrier(conns: &mut [Conn], targets: usize) -> Result<(), String> {
    let stamp = format!(
        "b{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let path = keys_path(Api::V2, "barrier");
    let form = format!("value={stamp}");
    match conns[0].request(Method::PUT, &path, Some(&form)).await {
        Ok(resp) if resp.status.is_success() => {}
        Ok(resp) => return Err(format!("barrier: {}", describe(&Method::PUT, &path, &resp))),
        Err(e) => return Err(format!("barrier: PUT {path}: {e:#}")),
    }
    let deadline = Instant::now() + BARRIER_TIMEOUT;
    for conn in conns.iter_mut().take(targets).skip(1) {
        loop {
            let last = match conn.request(Method::GET, &path, None).await {
                Ok(resp) if node_value(&resp.body).as_deref() == Some(stamp.as_str()) => break,
                Ok(resp) => describe(&Method::GET, &path, &resp),
                Err(e) => format!("GET {path}: {e:#}"),
            };
            if Instant::now() >= deadline {
                return Err(format!(
                    "barrier: {} did not see the setup writes within {}s; last answer: {last}",
                    conn.target_name(),
                    BARRIER_TIMEOUT.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    Ok(())
}

/// What the timed phase of a load produced.
pub struct Done {
    pub ok: usize,
    pub conflicts: usize,
    /// Sorted, of the ok and conflicting operations.
    pub latencies_us: Vec<u64>,
    pub secs: f64,
    pub errors: usize,
    pub error_samples: Vec<String>,
    pub capped: bool,
}

impl Done {
    /// Copies the figures into `report`; `req/s` counts successful operations.
    pub fn fill(self, report: &mut Report) {
        report.ok = self.ok;
        report.conflicts = self.conflicts;
        report.secs = self.secs;
        report.latencies_us = self.latencies_us;
        report.errors = self.errors;
        report.error_samples = self.error_samples;
        report.capped = self.capped;
        if report.secs > 0.0 {
            report.throughput = Some(report.ok as f64 / report.secs);
        }
    }
}

/// The timed phase: one worker per connection until the requests run out or
/// the deadline passes.
pub async fn drive(load: Arc<Load>, conns: Vec<Conn>) -> Done {
    let start = Instant::now();
    let mut set = JoinSet::new();
    for (w, conn) in conns.into_iter().enumerate() {
        set.spawn(worker_loop(load.clone(), conn, w));
    }
    let mut done = Done {
        ok: 0,
        conflicts: 0,
        latencies_us: Vec::with_capacity(load.requests.min(1 << 24)),
        secs: 0.0,
        errors: 0,
        error_samples: Vec::new(),
        capped: false,
    };
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(t) => {
                done.ok += t.ok;
                done.conflicts += t.conflicts;
                done.latencies_us.extend(t.latencies_us);
            }
            Err(e) => load.errors.record(format!("worker task: {e}")),
        }
    }
    done.secs = start.elapsed().as_secs_f64();
    done.latencies_us.sort_unstable();
    done.errors = load.errors.count();
    done.error_samples = load.errors.samples();
    done.capped = load.capped.load(Ordering::Relaxed);
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_compare_failed_412s_are_lost_races() {
        let resp = |code: u16, body: &str| Response {
            status: StatusCode::from_u16(code).unwrap(),
            body: Bytes::from(body.to_string()),
        };
        let failed = r#"{"errorCode":101,"message":"Compare failed","cause":"[5 != 4]","index":5}"#;
        assert!(is_compare_failed(&resp(412, failed)));
        assert!(!is_compare_failed(&resp(412, r#"{"errorCode":105}"#)));
        assert!(!is_compare_failed(&resp(412, "precondition failed")));
        assert!(!is_compare_failed(&resp(200, failed)));
    }
}
