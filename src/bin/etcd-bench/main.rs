//! `etcd-bench`: a small, bounded HTTP load generator for etcd-style key/value
//! servers (the legacy v1/v2 keys API, as served by old etcd releases, by this
//! crate's `etcd` binary, and by etcd 3.4 with `--enable-v2=true`).
//!
//! ```text
//! etcd-bench [options] URL [URL...]   e.g. etcd-bench --workload put-v2-64 http://127.0.0.1:4001
//! etcd-bench --await-key I URL        time until a (re)starting server serves scale key I
//! ```
//!
//! # Workloads
//!
//! Every workload uses exactly N client connections: one HTTP/1.1 keep-alive
//! connection per worker task (no pool), each worker issuing its requests back
//! to back. The number in the name is N (any N works, e.g. `put-v2-3`;
//! `--conns` overrides it). Requests are handed out from one shared counter,
//! so `--requests` is the total per workload, not per connection.
//!
//! With several URLs (`--endpoints a,b,c` or several arguments: the client
//! URLs of one cluster's members), connection `c` goes to URL `c mod n` and
//! stays there, so the load is spread evenly: `put-v2-3` against three members
//! is one sequential writer pinned to each. The untimed setup writes go to the
//! first URL, and before the timed phase every other member must read back a
//! barrier key written after them (bounded, 10 s), so reads on followers find
//! their keys.
//!
//! | name | what one request is |
//! | --- | --- |
//! | `put-v1-1`, `put-v1-64` | `POST /v1/keys/bench/k<i>` form `value=<value>` |
//! | `put-v2-1`, `put-v2-16`, `put-v2-64`, `put-v2-256` | `PUT /v2/keys/bench/k<i>` form `value=<value>` |
//! | `get-v1-64`, `get-v2-64` | `GET /v{1,2}/keys/bench/k<i % 100>` (100 keys are written first, not timed) |
//! | `qget-v2-64` | `GET /v2/keys/bench/k<i % 100>?quorum=true` |
//! | `cas-v2-16`, `cas-v2-64` | one compare-and-swap attempt on the single key `bench/cas`: `GET` it, then `PUT ?prevIndex=<its modifiedIndex>` a new value |
//! | `watch-v2-1000` | not a throughput test, see below |
//! | `scale` | not part of `all`; see below |
//!
//! `put-*` keys are distinct (`i` runs over `0..requests`); the value is
//! `--value-size` bytes. For `cas-v2-*` a successful swap (200) counts as
//! `ok`, so `req/s` is **successful swaps per second**; a lost race (412 with
//! etcd's errorCode 101, "compare failed") is an expected outcome, counted
//! apart (`412=` in the note column, next to `attempts/s`), not an error.
//! `--requests` counts attempts, and the latency columns are those of whole
//! attempts (read plus swap, won or lost).
//!
//! `watch-v2-1000` opens 1000 long-poll watches
//! (`GET /v2/keys/bench/w?wait=true&waitIndex=<next>`, one connection each),
//! waits until they are registered (etcd 3.4 sends the response head at once;
//! for a server that does not, it waits for a settle second), then times one
//! `PUT` to that key until every watcher has received the event. Its latency
//! columns are the fan-out latency across watchers (from the start of the PUT
//! to the moment each watcher had the whole event), `secs` is the time until
//! the last one, and `req/s` is `-`. `waitIndex` makes sure a watcher that
//! registered late still sees the event instead of hanging.
//!
//! `scale` (64 connections; `scale-N` for N) writes `--requests` distinct keys
//! `/v2/keys/scale/k<i:07>`, each with its own `--value-size`-byte value, while
//! one more connection (the probe writer) overwrites `/v2/keys/scale_probe`
//! every `--probe-ms` (default 5 ms; the next write starts right after the
//! previous one when that took longer). With `--pid` it samples the server's
//! `VmRSS` every 100 ms, reads `VmHWM` right after the load, waits
//! `--settle-secs` (default 5) and reads `VmRSS` again. It prints the load's
//! writes/s and latencies, the probe writer's p50/p99/max (the longest write a
//! lone client saw during the load, and when it started) and those memory
//! figures; `--json` gives one object for scripts. Progress goes to stderr
//! every 10 s. `--await-key I` polls `GET /v2/keys/scale/k<I:07>` every 5 ms
//! until it answers 200 with the value `scale` wrote there (bounded by
//! `--duration-cap`), and prints the time that took and what it saw before
//! (connection refused, 404...): `bench/scale.sh` times restarts with it.
//!
//! A workload whose endpoint does not exist on the server (its first request,
//! an untimed write, answers 404 or 405 without an etcd JSON error body) is
//! reported as `unsupported` and skipped; that is not an error.
//!
//! # Reading the numbers
//!
//! Columns: `ok` requests that got the expected status (2xx), `err` all others
//! (bad status, transport error, 10 s timeout), `secs` wall time of the timed
//! phase (connections are opened and the probe/setup writes done before it),
//! `req/s` = ok / secs, and `p50ms p90ms p99ms maxms` nearest-rank percentiles
//! of the per-request latency list (successful and conflicting requests only).
//! The first 3 error bodies of every workload are printed on stderr; the exit
//! status is 1 when any request failed, 2 on a usage error.
//!
//! Client and server share this machine's cores, so the absolute numbers say
//! little on their own; compare two servers by running the same workloads in
//! the same run on the same machine, and look at the ratios of the throughputs
//! and of the medians (p50), which are far steadier than p99/max.
//! `bench/compare.sh` does exactly that against etcd 3.4 (fresh servers,
//! alternating, `ROUNDS` times) and prints a table of medians and `ours/etcd`
//! ratios: req/s above 1 and p50 below 1 favour ours. Short runs are noisy
//! (two runs of the *same* server can differ by 30%+ at a few hundred
//! requests): use 2000 requests or more and 3 or 5 rounds before trusting a
//! difference of less than ~20%. See `bench/README.md`.
//!
//! Everything is bounded: connecting and every request time out after 10 s,
//! and a workload stops handing out requests after `--duration-cap` seconds
//! (default 60; the row then says `capped`), so the tool always terminates.

mod cli;
mod http;
mod load;
mod report;
mod scale;
mod watch;

use std::sync::Arc;
use std::time::Duration;

use cli::{Cli, Kind, Options, USAGE, parse_args};
use http::resolve_target;
use load::run_load;
use report::{Report, Status};
use watch::run_watch;

async fn run(opts: Options) -> i32 {
    let mut targets = Vec::with_capacity(opts.urls.len());
    for url in &opts.urls {
        match resolve_target(url).await {
            Ok(t) => targets.push(Arc::new(t)),
            Err(e) => {
                eprintln!("etcd-bench: {e:#}");
                return 2;
            }
        }
    }
    if let Some(key) = opts.await_key {
        return scale::run_await(targets[0].clone(), key, &opts).await;
    }
    let mut header_printed = false;
    let mut any_failed = false;
    for def in &opts.workloads {
        if def.kind == Kind::Scale {
            let report = scale::run_scale(&targets, def.clone(), &opts).await;
            any_failed |= report.failed();
            if opts.json {
                println!("{}", report.json());
            } else {
                println!("{}", report.text());
            }
            let samples = report.error_samples();
            if !samples.is_empty() {
                eprintln!("etcd-bench: {}: first errors:", report.name);
                for s in &samples {
                    eprintln!("  {s}");
                }
            }
            if let Status::Failed(why) = &report.status {
                eprintln!("etcd-bench: {}: failed: {why}", report.name);
            }
            continue;
        }
        let report = match def.kind {
            Kind::Watch => run_watch(&targets, def.clone(), &opts).await,
            _ => run_load(&targets, def.clone(), &opts).await,
        };
        any_failed |= report.failed();
        if opts.json {
            println!("{}", report.json());
        } else {
            if !header_printed {
                println!("{}", Report::table_header());
                header_printed = true;
            }
            println!("{}", report.table_row());
        }
        if report.errors > 0 {
            eprintln!(
                "etcd-bench: {}: {} errors; first {}:",
                report.name,
                report.errors,
                report.error_samples.len()
            );
            for s in &report.error_samples {
                eprintln!("  {s}");
            }
        }
        if let Status::Failed(why) = &report.status {
            eprintln!("etcd-bench: {}: failed: {why}", report.name);
        }
    }
    i32::from(any_failed)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match parse_args(&args) {
        Ok(Cli::Run(o)) => o,
        Ok(Cli::Help) => {
            print!("{USAGE}");
            std::process::exit(0);
        }
        Err(e) => {
            eprintln!("etcd-bench: {e:#}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("etcd-bench: starting the runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = runtime.block_on(run(opts));
    // Do not wait for connection tasks still winding down.
    runtime.shutdown_timeout(Duration::from_secs(1));
    std::process::exit(code);
}
