//! `watch-v2-1000`: fan-out latency of one write to many long-poll watchers.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::{Method, StatusCode};
use tokio::task::JoinSet;

use crate::cli::{Options, WorkloadDef};
use crate::http::{
    Conn, REQUEST_TIMEOUT, Response, Target, build_request, describe, keys_path,
    node_modified_index, node_value, open_conns, snippet, write_method,
};
use crate::load::probe;
use crate::report::{ErrorLog, Report, Status};

/// A registered watcher's result: when it had the whole event, and the event.
pub type WatchResult = Result<(Instant, Bytes), String>;

/// One long-poll watch on its own connection; `got_head` is set (and `heads`
/// counted) once the response head arrived.
pub async fn watch_one(
    conn: Conn,
    path: &str,
    heads: &AtomicUsize,
    got_head: &mut bool,
) -> WatchResult {
    let mut sender = conn.sender.ok_or("not connected")?;
    let fail = |e: &dyn std::fmt::Display| format!("GET {path}: {e}");
    sender.ready().await.map_err(|e| fail(&e))?;
    let req = build_request(&conn.target, Method::GET, path, None).map_err(|e| fail(&e))?;
    let resp = sender.send_request(req).await.map_err(|e| fail(&e))?;
    *got_head = true;
    heads.fetch_add(1, Ordering::Relaxed);
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| fail(&format!("reading body: {e}")))?
        .to_bytes();
    let at = Instant::now();
    if status != StatusCode::OK {
        return Err(describe(&Method::GET, path, &Response { status, body }));
    }
    Ok((at, body))
}

pub async fn run_watch(targets: &[Arc<Target>], def: WorkloadDef, opts: &Options) -> Report {
    let watchers = opts.conns.unwrap_or(def.conns);
    let mut report = Report::new(&def, watchers, watchers);
    let mut writer = match Conn::open(targets[0].clone()).await {
        Ok(c) => c,
        Err(e) => {
            report.status = Status::Failed(format!("{e:#}"));
            return report;
        }
    };
    let body = match probe(&mut writer, def.api, "w", "init").await {
        Ok(b) => b,
        Err(status) => {
            report.status = status;
            return report;
        }
    };
    let Some(index) = node_modified_index(&body) else {
        report.status = Status::Failed(format!(
            "no node.modifiedIndex in the answer to the setup write: {}",
            snippet(&body)
        ));
        return report;
    };
    let path = format!(
        "{}?wait=true&waitIndex={}",
        keys_path(def.api, "w"),
        index + 1
    );

    let setup_start = Instant::now();
    let conns = match open_conns(targets, watchers).await {
        Ok(c) => c,
        Err(e) => {
            report.status = Status::Failed(format!(
                "opening {watchers} watcher connections: {e:#} (is `ulimit -n` high enough?)"
            ));
            return report;
        }
    };
    let heads = Arc::new(AtomicUsize::new(0));
    let settled = Arc::new(AtomicUsize::new(0));
    let mut set: JoinSet<WatchResult> = JoinSet::new();
    for conn in conns {
        let (heads, settled, path) = (heads.clone(), settled.clone(), path.clone());
        set.spawn(async move {
            let mut got_head = false;
            let result = watch_one(conn, &path, &heads, &mut got_head).await;
            if !got_head {
                settled.fetch_add(1, Ordering::Relaxed);
            }
            result
        });
    }

    // Wait until every watcher has its response head (etcd 3.4 flushes it at
    // once) or has failed, bounded; a server that answers only with the event
    // gets a fixed settle time instead.
    let settle_deadline = Instant::now() + Duration::from_secs(3);
    while heads.load(Ordering::Relaxed) + settled.load(Ordering::Relaxed) < watchers
        && Instant::now() < settle_deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let registered = heads.load(Ordering::Relaxed);
    if registered < watchers {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let setup_secs = setup_start.elapsed().as_secs_f64();

    let errors = ErrorLog::default();
    let put_path = keys_path(def.api, "w");
    let put_start = Instant::now();
    let put = writer
        .request(write_method(def.api), &put_path, Some("value=fire"))
        .await;
    let put_ms = put_start.elapsed().as_secs_f64() * 1000.0;
    match put {
        Ok(resp) if resp.status.is_success() => {}
        Ok(resp) => errors.record(describe(&write_method(def.api), &put_path, &resp)),
        Err(e) => errors.record(format!("PUT {put_path}: {e:#}")),
    }

    let wait_deadline = tokio::time::Instant::from_std(put_start + REQUEST_TIMEOUT);
    let mut latencies = Vec::with_capacity(watchers);
    let mut last = put_start;
    loop {
        match tokio::time::timeout_at(wait_deadline, set.join_next()).await {
            Ok(None) => break,
            Ok(Some(Ok(Ok((at, body))))) => {
                if node_value(&body).as_deref() == Some("fire") {
                    report.ok += 1;
                    latencies.push(at.saturating_duration_since(put_start).as_micros() as u64);
                    last = last.max(at);
                } else {
                    errors.record(format!("watch got an unexpected event: {}", snippet(&body)));
                }
            }
            Ok(Some(Ok(Err(e)))) => errors.record(e),
            Ok(Some(Err(e))) => errors.record(format!("watcher task: {e}")),
            Err(_) => {
                let missing = set.len();
                set.abort_all();
                for _ in 0..missing {
                    errors.record(format!(
                        "watcher got no event within {}s of the PUT",
                        REQUEST_TIMEOUT.as_secs()
                    ));
                }
                break;
            }
        }
    }
    latencies.sort_unstable();
    report.latencies_us = latencies;
    report.secs = last.saturating_duration_since(put_start).as_secs_f64();
    report.errors = errors.count();
    report.error_samples = errors.samples();
    report.note = format!(
        "fan-out latency; heads={registered}/{watchers} setup={setup_secs:.2}s put={put_ms:.2}ms"
    );
    report
}
