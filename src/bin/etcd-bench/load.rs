//! Throughput workloads: PUT, GET, quorum GET and CAS over N connections.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use bytes::Bytes;
use hyper::{Method, StatusCode};
use tokio::task::JoinSet;

use crate::cli::{Api, Kind, Options, WorkloadDef};
use crate::http::{
    Conn, Target, describe, encode, is_unsupported, keys_path, make_value, node_value, open_conns,
    snippet, write_method,
};
use crate::report::{ErrorLog, Report, Status, Tally};

/// Number of keys written before the read workloads.
pub const GET_KEYS: usize = 100;

/// Shared, read-only state of a running load workload.
pub struct Load {
    pub def: WorkloadDef,
    pub requests: usize,
    pub value: String,
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
            let current = match conn.request(Method::GET, &get_path, None).await {
                Ok(resp) if resp.status == StatusCode::OK => match node_value(&resp.body) {
                    Some(v) => v,
                    None => {
                        load.errors.record(format!(
                            "GET {get_path}: no node.value in {}",
                            snippet(&resp.body)
                        ));
                        return Outcome::Error;
                    }
                },
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
                format!("{get_path}?prevValue={}", encode(&current)),
                Some(format!("value=w{worker}-{i}")),
            )
        }
        Kind::Watch => unreachable!("watch has its own runner"),
    };
    match conn.request(method.clone(), &path, form.as_deref()).await {
        Ok(resp) if resp.status.is_success() => Outcome::Ok,
        Ok(resp)
            if load.def.kind == Kind::Cas && resp.status == StatusCode::PRECONDITION_FAILED =>
        {
            Outcome::Conflict
        }
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

pub async fn run_load(target: &Arc<Target>, def: WorkloadDef, opts: &Options) -> Report {
    let conns_n = opts.conns.unwrap_or(def.conns);
    let mut report = Report::new(&def, conns_n, opts.requests);
    let mut conns = match open_conns(target, conns_n).await {
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
        Kind::Watch => unreachable!("watch has its own runner"),
    };
    if let Err(status) = probe_result {
        report.status = status;
        return report;
    }
    if matches!(def.kind, Kind::Get | Kind::QuorumGet) {
        let setup_errors = Arc::new(ErrorLog::default());
        let stride = conns.len();
        let mut set = JoinSet::new();
        for (w, mut conn) in conns.drain(..).enumerate() {
            let errors = setup_errors.clone();
            let value = value.clone();
            set.spawn(async move {
                for k in (1 + w..GET_KEYS).step_by(stride) {
                    let path = keys_path(def.api, &format!("k{k}"));
                    let method = write_method(def.api);
                    match conn
                        .request(method.clone(), &path, Some(&format!("value={value}")))
                        .await
                    {
                        Ok(resp) if resp.status.is_success() => {}
                        Ok(resp) => errors.record(describe(&method, &path, &resp)),
                        Err(e) => errors.record(format!("{method} {path}: {e:#}")),
                    }
                }
                conn
            });
        }
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok(conn) => conns.push(conn),
                Err(e) => setup_errors.record(format!("setup task: {e}")),
            }
        }
        if setup_errors.count() > 0 {
            report.status = Status::Failed(format!(
                "{} of the {GET_KEYS} setup writes failed, first: {}",
                setup_errors.count(),
                setup_errors.samples().join(" | ")
            ));
            return report;
        }
    }

    let start = Instant::now();
    let load = Arc::new(Load {
        def,
        requests: opts.requests,
        value,
        next: AtomicUsize::new(0),
        deadline: start + opts.duration_cap,
        capped: AtomicBool::new(false),
        errors: ErrorLog::default(),
    });
    let mut set = JoinSet::new();
    for (w, conn) in conns.into_iter().enumerate() {
        set.spawn(worker_loop(load.clone(), conn, w));
    }
    let mut latencies = Vec::with_capacity(opts.requests);
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(t) => {
                report.ok += t.ok;
                report.conflicts += t.conflicts;
                latencies.extend(t.latencies_us);
            }
            Err(e) => load.errors.record(format!("worker task: {e}")),
        }
    }
    report.secs = start.elapsed().as_secs_f64();
    latencies.sort_unstable();
    report.latencies_us = latencies;
    report.errors = load.errors.count();
    report.error_samples = load.errors.samples();
    report.capped = load.capped.load(Ordering::Relaxed);
    if report.secs > 0.0 {
        report.throughput = Some((report.ok + report.conflicts) as f64 / report.secs);
    }
    if def.kind == Kind::Cas {
        report.note = format!("412={}", report.conflicts);
    }
    report
}
