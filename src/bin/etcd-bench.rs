//! `etcd-bench`: a small, bounded HTTP load generator for etcd-style key/value
//! servers (the legacy v1/v2 keys API, as served by old etcd releases, by this
//! crate's `etcd` binary, and by etcd 3.4 with `--enable-v2=true`).
//!
//! ```text
//! etcd-bench [options] URL          e.g. etcd-bench --workload put-v2-64 http://127.0.0.1:4001
//! ```
//!
//! # Workloads
//!
//! Every workload uses exactly N client connections: one HTTP/1.1 keep-alive
//! connection per worker task (no pool), each worker issuing its requests back
//! to back. The number in the name is N (`--conns` overrides it). Requests
//! are handed out from one shared counter, so `--requests` is the total per
//! workload, not per connection.
//!
//! | name | what one request is |
//! | --- | --- |
//! | `put-v1-1`, `put-v1-64` | `POST /v1/keys/bench/k<i>` form `value=<value>` |
//! | `put-v2-1`, `put-v2-64`, `put-v2-256` | `PUT /v2/keys/bench/k<i>` form `value=<value>` |
//! | `get-v1-64`, `get-v2-64` | `GET /v{1,2}/keys/bench/k<i % 100>` (100 keys are written first, not timed) |
//! | `qget-v2-64` | `GET /v2/keys/bench/k<i % 100>?quorum=true` |
//! | `cas-v2-64` | one compare-and-swap attempt on the single key `bench/cas`: `GET` it, then `PUT ?prevValue=<cur>` a new value |
//! | `watch-v2-1000` | not a throughput test, see below |
//!
//! `put-*` keys are distinct (`i` runs over `0..requests`); the value is
//! `--value-size` bytes. For `cas-v2-64` a successful swap (200/201) counts as
//! `ok`, a lost race (412) is counted separately as a conflict (`412=` in the
//! note column), and `req/s` is attempts (ok + conflicts) per second; its
//! latency is that of the whole attempt (read plus swap).
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
//! `bench/compare.sh` does exactly that against etcd 3.4 (each server fresh,
//! one after the other) and prints `ours/etcd` ratios: req/s above 1 and p50
//! below 1 favour ours. Short runs are noisy (two runs of the *same* server can
//! differ by 30%+ at a few hundred requests): use the default 2000 requests or
//! more, and `ROUNDS=3` or 5 there, whose ratios are medians over the rounds,
//! before trusting a difference of less than ~20%.
//!
//! Everything is bounded: connecting and every request time out after 10 s,
//! and a workload stops handing out requests after `--duration-cap` seconds
//! (default 60; the row then says `capped`), so the tool always terminates.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Bound on connecting and on every single request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Number of keys written before the read workloads.
const GET_KEYS: usize = 100;
/// Error bodies printed per workload.
const ERROR_SAMPLES: usize = 3;
/// Connections opened at the same time while setting a workload up.
const CONNECT_PARALLELISM: usize = 64;
const DEFAULT_WORKLOADS: &[&str] = &["put-v1-1", "put-v1-64", "put-v2-1", "put-v2-64"];

const USAGE: &str = "\
usage: etcd-bench [options] URL

URL is the client URL of the server, e.g. http://127.0.0.1:4001 (http only).

options:
  --workload NAME     workload to run; repeatable, or comma-separated; `all` runs
                      every one (default: put-v1-1,put-v1-64,put-v2-1,put-v2-64)
  --requests N        requests per workload, shared by its connections (default 2000;
                      ignored by watch-v2-1000)
  --conns N           override the connection count of every workload (for
                      watch-v2-1000: the number of watchers)
  --value-size B      bytes per written value (default 64)
  --duration-cap S    stop handing out requests after S seconds (default 60)
  --json              print one JSON object per workload instead of the table
  -h, --help          this text

workloads:
  put-v1-1 put-v1-64               POST /v1/keys/bench/k<i> value=...
  put-v2-1 put-v2-64 put-v2-256    PUT  /v2/keys/bench/k<i> value=...
  get-v1-64 get-v2-64              GET  /v{1,2}/keys/bench/k<i%100> (100 keys written first)
  qget-v2-64                       GET  /v2/keys/bench/k<i%100>?quorum=true
  cas-v2-64                        GET bench/cas then PUT ?prevValue=<cur>; 412 = conflict
  watch-v2-1000                    1000 watchers on bench/w, one PUT, fan-out latency

A workload whose endpoint answers 404/405 is reported as `unsupported` and skipped.
Exit status: 0 all requests succeeded, 1 some failed, 2 usage error.
";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Api {
    V1,
    V2,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Put,
    Get,
    QuorumGet,
    Cas,
    Watch,
}

#[derive(Clone, Copy, Debug)]
struct WorkloadDef {
    name: &'static str,
    api: Api,
    kind: Kind,
    conns: usize,
}

const WORKLOADS: &[WorkloadDef] = &[
    WorkloadDef {
        name: "put-v1-1",
        api: Api::V1,
        kind: Kind::Put,
        conns: 1,
    },
    WorkloadDef {
        name: "put-v1-64",
        api: Api::V1,
        kind: Kind::Put,
        conns: 64,
    },
    WorkloadDef {
        name: "put-v2-1",
        api: Api::V2,
        kind: Kind::Put,
        conns: 1,
    },
    WorkloadDef {
        name: "put-v2-64",
        api: Api::V2,
        kind: Kind::Put,
        conns: 64,
    },
    WorkloadDef {
        name: "put-v2-256",
        api: Api::V2,
        kind: Kind::Put,
        conns: 256,
    },
    WorkloadDef {
        name: "get-v1-64",
        api: Api::V1,
        kind: Kind::Get,
        conns: 64,
    },
    WorkloadDef {
        name: "get-v2-64",
        api: Api::V2,
        kind: Kind::Get,
        conns: 64,
    },
    WorkloadDef {
        name: "qget-v2-64",
        api: Api::V2,
        kind: Kind::QuorumGet,
        conns: 64,
    },
    WorkloadDef {
        name: "cas-v2-64",
        api: Api::V2,
        kind: Kind::Cas,
        conns: 64,
    },
    WorkloadDef {
        name: "watch-v2-1000",
        api: Api::V2,
        kind: Kind::Watch,
        conns: 1000,
    },
];

struct Options {
    workloads: Vec<WorkloadDef>,
    requests: usize,
    conns: Option<usize>,
    value_size: usize,
    duration_cap: Duration,
    json: bool,
    url: String,
}

enum Cli {
    Run(Options),
    Help,
}

fn parse_number(flag: &str, value: &str) -> Result<usize> {
    value
        .parse::<usize>()
        .map_err(|_| anyhow!("{flag}: `{value}` is not a non-negative integer"))
}

fn parse_args(args: &[String]) -> Result<Cli> {
    let mut names: Vec<String> = Vec::new();
    let mut requests = 2000;
    let mut conns = None;
    let mut value_size = 64;
    let mut cap_secs = 60.0_f64;
    let mut json = false;
    let mut url: Option<String> = None;

    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_str();
        i += 1;
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg, None),
        };
        let mut value = |flag: &str| -> Result<String> {
            if let Some(v) = inline.clone() {
                return Ok(v);
            }
            let v = args
                .get(i)
                .cloned()
                .ok_or_else(|| anyhow!("{flag} needs a value"))?;
            i += 1;
            Ok(v)
        };
        match flag {
            "-h" | "--help" => return Ok(Cli::Help),
            "--json" => json = true,
            "--workload" => {
                let v = value(flag)?;
                names.extend(
                    v.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(String::from),
                );
            }
            "--requests" => requests = parse_number(flag, &value(flag)?)?,
            "--conns" => {
                let n = parse_number(flag, &value(flag)?)?;
                if n == 0 {
                    bail!("--conns must be at least 1");
                }
                conns = Some(n);
            }
            "--value-size" => value_size = parse_number(flag, &value(flag)?)?,
            "--duration-cap" => {
                let v = value(flag)?;
                cap_secs = v
                    .parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && *s > 0.0)
                    .ok_or_else(|| anyhow!("--duration-cap: `{v}` is not a positive number"))?;
            }
            _ if flag.starts_with('-') && flag.len() > 1 => bail!("unknown option {flag}"),
            _ => {
                if url.is_some() {
                    bail!("more than one URL given");
                }
                url = Some(arg.to_string());
            }
        }
    }

    let url = url.ok_or_else(|| anyhow!("missing URL"))?;
    if names.is_empty() {
        names = DEFAULT_WORKLOADS.iter().map(|s| s.to_string()).collect();
    }
    let mut workloads = Vec::new();
    for name in &names {
        if name == "all" {
            workloads.extend(WORKLOADS.iter().copied());
            continue;
        }
        let def = WORKLOADS
            .iter()
            .find(|w| w.name == name)
            .ok_or_else(|| anyhow!("unknown workload `{name}`"))?;
        workloads.push(*def);
    }
    Ok(Cli::Run(Options {
        workloads,
        requests,
        conns,
        value_size,
        duration_cap: Duration::from_secs_f64(cap_secs),
        json,
        url,
    }))
}

/// Where to send requests: the resolved address, the Host header and an
/// optional path prefix taken from the URL.
struct Target {
    addr: SocketAddr,
    host: String,
    prefix: String,
}

async fn resolve_target(url: &str) -> Result<Target> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("URL must start with http:// (got `{url}`)"))?;
    let (authority, path) = match rest.find('/') {
        Some(p) => (&rest[..p], &rest[p..]),
        None => (rest, ""),
    };
    if authority.is_empty() {
        bail!("URL `{url}` has no host");
    }
    let has_port = match authority.rfind(']') {
        Some(end) => authority[end..].contains(':'),
        None => authority.contains(':'),
    };
    let host_port = if has_port {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let addr = tokio::time::timeout(REQUEST_TIMEOUT, tokio::net::lookup_host(host_port.clone()))
        .await
        .map_err(|_| anyhow!("resolving {host_port} timed out"))?
        .with_context(|| format!("resolving {host_port}"))?
        .next()
        .ok_or_else(|| anyhow!("{host_port} resolves to no address"))?;
    Ok(Target {
        addr,
        host: authority.to_string(),
        prefix: path.trim_end_matches('/').to_string(),
    })
}

/// Percent-encode for a query string or form value (everything but unreserved).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A response body as one short line (whitespace runs collapsed, cut at 300).
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let words: Vec<&str> = text.split_whitespace().collect();
    let line = words.join(" ");
    let mut out: String = line.chars().take(300).collect();
    if line.chars().count() > 300 {
        out.push_str("...");
    }
    out
}

struct Response {
    status: StatusCode,
    body: Bytes,
}

/// One HTTP/1.1 keep-alive connection, re-opened after a transport error or
/// timeout (a connection whose request was abandoned is not reused).
struct Conn {
    target: Arc<Target>,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Conn {
    async fn open(target: Arc<Target>) -> Result<Conn> {
        let sender = connect(&target).await?;
        Ok(Conn {
            target,
            sender: Some(sender),
        })
    }

    async fn request(
        &mut self,
        method: Method,
        path: &str,
        form: Option<&str>,
    ) -> Result<Response> {
        let target = self.target.clone();
        let sender = &mut self.sender;
        let result = tokio::time::timeout(REQUEST_TIMEOUT, async {
            if sender.as_ref().is_none_or(|s| s.is_closed()) {
                *sender = Some(connect(&target).await?);
            }
            let s = sender.as_mut().expect("connected above");
            s.ready().await.context("connection closed")?;
            let req = build_request(&target, method, path, form)?;
            let resp = s.send_request(req).await.context("sending request")?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .context("reading response body")?
                .to_bytes();
            Ok::<_, anyhow::Error>(Response { status, body })
        })
        .await;
        match result {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => {
                self.sender = None;
                Err(e)
            }
            Err(_) => {
                self.sender = None;
                Err(anyhow!("timed out after {}s", REQUEST_TIMEOUT.as_secs()))
            }
        }
    }
}

async fn connect(target: &Target) -> Result<SendRequest<Full<Bytes>>> {
    let stream = tokio::time::timeout(REQUEST_TIMEOUT, TcpStream::connect(target.addr))
        .await
        .map_err(|_| anyhow!("connecting to {} timed out", target.addr))?
        .with_context(|| format!("connecting to {}", target.addr))?;
    stream.set_nodelay(true)?;
    let (sender, conn) = tokio::time::timeout(
        REQUEST_TIMEOUT,
        hyper::client::conn::http1::handshake(TokioIo::new(stream)),
    )
    .await
    .map_err(|_| anyhow!("HTTP handshake timed out"))??;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

fn build_request(
    target: &Target,
    method: Method,
    path: &str,
    form: Option<&str>,
) -> Result<Request<Full<Bytes>>> {
    let mut builder = Request::builder()
        .method(method)
        .uri(format!("{}{}", target.prefix, path))
        .header(HOST, target.host.as_str());
    let body = match form {
        Some(f) => {
            builder = builder.header(CONTENT_TYPE, "application/x-www-form-urlencoded");
            Bytes::from(f.to_string())
        }
        None => Bytes::new(),
    };
    Ok(builder.body(Full::new(body))?)
}

/// Opens `n` connections, a bounded number at a time.
async fn open_conns(target: &Arc<Target>, n: usize) -> Result<Vec<Conn>> {
    let sem = Arc::new(Semaphore::new(CONNECT_PARALLELISM));
    let mut set = JoinSet::new();
    for _ in 0..n {
        let target = target.clone();
        let sem = sem.clone();
        set.spawn(async move {
            let _permit = sem.acquire_owned().await?;
            Conn::open(target).await
        });
    }
    let mut conns = Vec::with_capacity(n);
    while let Some(joined) = set.join_next().await {
        conns.push(joined.context("connect task")??);
    }
    Ok(conns)
}

fn keys_path(api: Api, key: &str) -> String {
    match api {
        Api::V1 => format!("/v1/keys/bench/{key}"),
        Api::V2 => format!("/v2/keys/bench/{key}"),
    }
}

fn write_method(api: Api) -> Method {
    match api {
        Api::V1 => Method::POST,
        Api::V2 => Method::PUT,
    }
}

fn make_value(size: usize) -> String {
    (0..size).map(|j| (b'a' + (j % 26) as u8) as char).collect()
}

/// The value of `node.value` in an etcd JSON answer.
fn node_value(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.get("node")?.get("value")?.as_str().map(String::from)
}

fn node_modified_index(body: &[u8]) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.get("node")?.get("modifiedIndex")?.as_u64()
}

/// True when a 404/405 means "no such endpoint" rather than an etcd error
/// (etcd errors are JSON objects carrying an `errorCode`).
fn is_unsupported(resp: &Response) -> bool {
    if resp.status != StatusCode::NOT_FOUND && resp.status != StatusCode::METHOD_NOT_ALLOWED {
        return false;
    }
    let etcd_error = serde_json::from_slice::<serde_json::Value>(&resp.body)
        .ok()
        .is_some_and(|v| v.get("errorCode").is_some());
    !etcd_error
}

/// Errors of one workload: the count and the first few descriptions.
#[derive(Default)]
struct ErrorLog {
    count: AtomicUsize,
    samples: Mutex<Vec<String>>,
}

impl ErrorLog {
    fn record(&self, what: String) {
        self.count.fetch_add(1, Ordering::Relaxed);
        let mut samples = self.samples.lock().expect("error log poisoned");
        if samples.len() < ERROR_SAMPLES {
            samples.push(what);
        }
    }
    fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }
    fn samples(&self) -> Vec<String> {
        self.samples.lock().expect("error log poisoned").clone()
    }
}

fn describe(method: &Method, path: &str, resp: &Response) -> String {
    format!(
        "{method} {path} -> {}: {}",
        resp.status.as_u16(),
        snippet(&resp.body)
    )
}

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u64>,
    ok: usize,
    conflicts: usize,
}

enum Status {
    Done,
    Unsupported(String),
    Failed(String),
}

struct Report {
    name: &'static str,
    conns: usize,
    requests: usize,
    status: Status,
    ok: usize,
    conflicts: usize,
    errors: usize,
    secs: f64,
    throughput: Option<f64>,
    latencies_us: Vec<u64>,
    capped: bool,
    note: String,
    error_samples: Vec<String>,
}

impl Report {
    fn new(def: &WorkloadDef, conns: usize, requests: usize) -> Report {
        Report {
            name: def.name,
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

    fn percentile_ms(&self, p: f64) -> Option<f64> {
        let n = self.latencies_us.len();
        if n == 0 {
            return None;
        }
        let rank = ((p * n as f64).ceil() as usize).clamp(1, n);
        Some(self.latencies_us[rank - 1] as f64 / 1000.0)
    }

    fn failed(&self) -> bool {
        matches!(self.status, Status::Failed(_)) || self.errors > 0
    }

    fn note_text(&self) -> String {
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

    fn table_header() -> String {
        format!(
            "{:<14} {:>5} {:>7} {:>5} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}  note",
            "workload", "conns", "ok", "err", "secs", "req/s", "p50ms", "p90ms", "p99ms", "maxms"
        )
    }

    fn table_row(&self) -> String {
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

    fn json(&self) -> serde_json::Value {
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

/// Shared, read-only state of a running load workload.
struct Load {
    def: WorkloadDef,
    requests: usize,
    value: String,
    next: AtomicUsize,
    deadline: Instant,
    capped: AtomicBool,
    errors: ErrorLog,
}

enum Outcome {
    Ok,
    Conflict,
    Error,
}

/// One timed operation of a load workload (for CAS: read plus swap).
async fn one_op(load: &Load, conn: &mut Conn, worker: usize, i: usize) -> Outcome {
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

async fn worker_loop(load: Arc<Load>, mut conn: Conn, worker: usize) -> Tally {
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
async fn probe(conn: &mut Conn, api: Api, key: &str, value: &str) -> Result<Bytes, Status> {
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

async fn run_load(target: &Arc<Target>, def: WorkloadDef, opts: &Options) -> Report {
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

/// A registered watcher's result: when it had the whole event, and the event.
type WatchResult = Result<(Instant, Bytes), String>;

/// One long-poll watch on its own connection; `got_head` is set (and `heads`
/// counted) once the response head arrived.
async fn watch_one(
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

async fn run_watch(target: &Arc<Target>, def: WorkloadDef, opts: &Options) -> Report {
    let watchers = opts.conns.unwrap_or(def.conns);
    let mut report = Report::new(&def, watchers, watchers);
    let mut writer = match Conn::open(target.clone()).await {
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
    let conns = match open_conns(target, watchers).await {
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

async fn run(opts: Options) -> i32 {
    let target = match resolve_target(&opts.url).await {
        Ok(t) => Arc::new(t),
        Err(e) => {
            eprintln!("etcd-bench: {e:#}");
            return 2;
        }
    };
    if !opts.json {
        println!("{}", Report::table_header());
    }
    let mut any_failed = false;
    for def in &opts.workloads {
        let report = match def.kind {
            Kind::Watch => run_watch(&target, *def, &opts).await,
            _ => run_load(&target, *def, &opts).await,
        };
        any_failed |= report.failed();
        if opts.json {
            println!("{}", report.json());
        } else {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn report_with(latencies_ms: &[u64]) -> Report {
        let mut r = Report::new(&WORKLOADS[3], 64, 100);
        r.latencies_us = latencies_ms.iter().map(|ms| ms * 1000).collect();
        r
    }

    #[test]
    fn parses_options_and_defaults() {
        let Cli::Run(o) = parse_args(&args(&["http://h:1"])).unwrap() else {
            panic!("expected a run")
        };
        let names: Vec<_> = o.workloads.iter().map(|w| w.name).collect();
        assert_eq!(names, DEFAULT_WORKLOADS);
        assert_eq!(
            (o.requests, o.value_size, o.conns, o.json),
            (2000, 64, None, false)
        );
        assert_eq!(o.duration_cap, Duration::from_secs(60));

        let Cli::Run(o) = parse_args(&args(&[
            "--workload",
            "cas-v2-64,get-v2-64",
            "--workload=watch-v2-1000",
            "--requests",
            "7",
            "--conns=3",
            "--json",
            "--duration-cap",
            "0.5",
            "http://h:1",
        ]))
        .unwrap() else {
            panic!("expected a run")
        };
        let names: Vec<_> = o.workloads.iter().map(|w| w.name).collect();
        assert_eq!(names, ["cas-v2-64", "get-v2-64", "watch-v2-1000"]);
        assert_eq!((o.requests, o.conns, o.json), (7, Some(3), true));
        assert_eq!(o.duration_cap, Duration::from_millis(500));

        for bad in [
            &["--workload", "nope", "http://h"][..],
            &["--requests", "x", "http://h"],
            &["--conns", "0", "http://h"],
            &["--frobnicate", "http://h"],
            &["http://a", "http://b"],
            &["--requests"],
            &[],
        ] {
            assert!(parse_args(&args(bad)).is_err(), "{bad:?}");
        }
        assert!(matches!(parse_args(&args(&["-h"])), Ok(Cli::Help)));
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

    #[test]
    fn encodes_query_values() {
        assert_eq!(encode("a-b_c.d~9"), "a-b_c.d~9");
        assert_eq!(encode("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }

    #[test]
    fn tells_missing_endpoints_from_etcd_errors() {
        let resp = |code: u16, body: &str| Response {
            status: StatusCode::from_u16(code).unwrap(),
            body: Bytes::from(body.to_string()),
        };
        assert!(is_unsupported(&resp(404, "404 page not found")));
        assert!(is_unsupported(&resp(405, "")));
        assert!(!is_unsupported(&resp(
            404,
            r#"{"errorCode":100,"message":"Key not found"}"#
        )));
        assert!(!is_unsupported(&resp(500, "boom")));
    }

    /// bench/compare.sh reads the table with awk: column 1 name, 3 `-` for
    /// unsupported/failed rows, 6 req/s, 7 p50; the note comes last.
    #[test]
    fn table_rows_keep_the_columns_compare_sh_reads() {
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

    #[test]
    fn snippets_are_one_short_line() {
        let long = "x ".repeat(500);
        let s = snippet(format!("<html>\n  <body>{long}</body>").as_bytes());
        assert!(!s.contains('\n'));
        assert!(s.len() <= 303 && s.ends_with("..."));
    }
}
