//! Durability: an acknowledged write must survive a crash (SIGKILL), a graceful stop and
//! snapshots, the store index must never go backwards, and a restarting node must never
//! serve a half-recovered store.
//!
//! Each writer thread owns its keys and records every attempt per key in order (sets with a
//! unique value, and in most tests some deletes) and which attempt was acknowledged last
//! (HTTP 200 with the JSON body echoing key, value and index; for a delete also 404/100).
//! After a restart every key must be in the state of the last acknowledged attempt or of a
//! *later* attempt of the same key (an unacknowledged write may or may not have made it),
//! never an older one and never a value nobody wrote. The `prevValue`/`newKey` of every
//! acknowledged answer is held to the same rule while the load runs.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::rng::Rng;
use common::{Node, form_encode, request_timeout};

/// Timeout of a single write or read issued by the load generators.
const REQ_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------
// small utilities

/// Outcome of one HTTP exchange, as far as these tests care.
enum Answer {
    /// No complete HTTP answer (refused, reset, timed out).
    NoAnswer(String),
    /// A complete answer.
    Http(u16, String),
}

fn call(addr: &str, method: &str, path: &str, form: Option<&str>, timeout: Duration) -> Answer {
    let headers: &[(&str, &str)] = if form.is_some() {
        &[("Content-Type", "application/x-www-form-urlencoded")]
    } else {
        &[]
    };
    let body = form.unwrap_or("").as_bytes();
    match request_timeout(addr, method, path, headers, body, timeout) {
        Ok(r) => Answer::Http(r.status, r.body),
        Err(e) => Answer::NoAnswer(e),
    }
}

fn json(body: &str) -> Option<serde_json::Value> {
    serde_json::from_str(body).ok()
}

fn field_u64(v: &serde_json::Value, name: &str) -> Option<u64> {
    v.get(name).and_then(|x| x.as_u64())
}

fn field_str<'a>(v: &'a serde_json::Value, name: &str) -> Option<&'a str> {
    v.get(name).and_then(|x| x.as_str())
}

// ---------------------------------------------------------------------------------------
// the ledger of what was written

/// Every attempt at one key, in order (`None` = a delete), and the position of the last
/// acknowledged one.
#[derive(Default, Clone)]
struct KeyLog {
    attempts: Vec<Option<String>>,
    acked: Option<usize>,
    acked_index: u64,
}

impl KeyLog {
    fn describe(&self, pos: usize) -> String {
        match &self.attempts[pos] {
            Some(v) => format!("set {v:?}"),
            None => "delete".to_string(),
        }
    }

    /// Check that the key may hold `value` (None: absent) now: the state must come from the
    /// last acknowledged attempt or a later one, never an older one or one nobody made.
    fn check(&self, key: &str, value: Option<&str>) -> Result<(), String> {
        // Latest attempt that leaves the key in this state; Some(None) = the initial absence.
        let pos: Option<Option<usize>> = match value {
            Some(v) => self
                .attempts
                .iter()
                .rposition(|a| a.as_deref() == Some(v))
                .map(Some),
            None => Some(self.attempts.iter().rposition(|a| a.is_none())),
        };
        let Some(pos) = pos else {
            return Err(format!("{key}: value {value:?} was never written"));
        };
        match self.acked {
            Some(a) if pos.is_none_or(|p| p < a) => Err(format!(
                "{key}: LOST acknowledged {} (index {}): found {}",
                self.describe(a),
                self.acked_index,
                match value {
                    Some(v) => format!("older value {v:?}"),
                    None => "the key missing".to_string(),
                }
            )),
            _ => Ok(()),
        }
    }
}

/// The keys of one writer thread: `<prefix>/k<n>`.
struct Group {
    prefix: String,
    keys: Vec<KeyLog>,
    /// Index of the last acknowledged write of this group (writes of one group are
    /// sequential, so their indexes must grow).
    last_index: u64,
}

impl Group {
    fn key(&self, n: usize) -> String {
        format!("{}/k{n}", self.prefix)
    }
}

#[derive(Default)]
struct Ledger {
    groups: Vec<Group>,
}

impl Ledger {
    fn add_groups(&mut self, prefix: &str, count: usize, keys: usize) -> Vec<usize> {
        let first = self.groups.len();
        for t in 0..count {
            self.groups.push(Group {
                prefix: format!("{prefix}/t{t}"),
                keys: vec![KeyLog::default(); keys],
                last_index: 0,
            });
        }
        (first..first + count).collect()
    }

    fn max_acked_index(&self) -> u64 {
        self.groups.iter().map(|g| g.last_index).max().unwrap_or(0)
    }

    fn acked_count(&self) -> usize {
        self.groups
            .iter()
            .flat_map(|g| g.keys.iter())
            .filter(|k| k.acked.is_some())
            .count()
    }

    /// Check a value read for `key` against the ledger; Err describes a violation.
    fn check_value(&self, key: &str, value: Option<&str>) -> Result<(), String> {
        let Some((g, n)) = self.locate(key) else {
            return Err(format!("{key}: not a key of this test"));
        };
        self.groups[g].keys[n].check(key, value)
    }

    fn locate(&self, key: &str) -> Option<(usize, usize)> {
        let (prefix, k) = key.rsplit_once("/k")?;
        let n: usize = k.parse().ok()?;
        let g = self.groups.iter().position(|g| g.prefix == prefix)?;
        (n < self.groups[g].keys.len()).then_some((g, n))
    }

    /// Every key that was attempted at least once.
    fn attempted_keys(&self) -> Vec<String> {
        let mut out = Vec::new();
        for g in &self.groups {
            for (n, k) in g.keys.iter().enumerate() {
                if !k.attempts.is_empty() {
                    out.push(g.key(n));
                }
            }
        }
        out
    }

    /// Keys whose last attempt was an acknowledged set: they must be readable.
    fn acked_keys(&self) -> Vec<String> {
        let mut out = Vec::new();
        for g in &self.groups {
            for (n, k) in g.keys.iter().enumerate() {
                let last = k.attempts.len().checked_sub(1);
                if last.is_some() && k.acked == last && k.attempts[k.acked.unwrap()].is_some() {
                    out.push(g.key(n));
                }
            }
        }
        out
    }
}

/// One acknowledged write.
#[derive(Clone, Debug)]
struct Ack {
    key: String,
    value: String,
    index: u64,
}

/// What a load run produced.
struct LoadResult {
    acks: Vec<Ack>,
    unacked: u64,
    violations: Vec<String>,
    elapsed: Duration,
}

struct WriterOut {
    group: usize,
    keys: Vec<KeyLog>,
    last_index: u64,
    acks: Vec<Ack>,
    unacked: u64,
    violations: Vec<String>,
}

/// What a [`Load`] writer sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ops {
    SetsOnly,
    WithDeletes,
}

/// Writer threads over ledger groups, each issuing v1 sets back to back.
struct Load {
    stop: Arc<AtomicBool>,
    handles: Vec<thread::JoinHandle<WriterOut>>,
    started: Instant,
}

impl Load {
    /// Start one writer per group. `tag` makes values unique across runs; `limit` bounds the
    /// number of operations per thread (None: until stopped); `ops` says whether deletes are
    /// mixed in.
    /// Operations rotate over the group's keys.
    fn start(
        addr: &str,
        ledger: &mut Ledger,
        groups: &[usize],
        tag: &str,
        limit: Option<usize>,
        ops: Ops,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let mut handles = Vec::new();
        for &g in groups {
            let group = &mut ledger.groups[g];
            let keys = std::mem::take(&mut group.keys);
            let prefix = group.prefix.clone();
            let last_index = group.last_index;
            let addr = addr.to_string();
            let tag = tag.to_string();
            let stop = stop.clone();
            handles.push(thread::spawn(move || {
                writer(g, addr, prefix, tag, keys, last_index, limit, ops, stop)
            }));
        }
        Load {
            stop,
            handles,
            started: Instant::now(),
        }
    }

    fn stop_and_join(self, ledger: &mut Ledger) -> LoadResult {
        self.stop.store(true, Ordering::SeqCst);
        self.join(ledger)
    }

    fn join(self, ledger: &mut Ledger) -> LoadResult {
        let mut res = LoadResult {
            acks: Vec::new(),
            unacked: 0,
            violations: Vec::new(),
            elapsed: Duration::ZERO,
        };
        for h in self.handles {
            let out = h.join().expect("writer thread panicked");
            let group = &mut ledger.groups[out.group];
            group.keys = out.keys;
            group.last_index = out.last_index;
            res.acks.extend(out.acks);
            res.unacked += out.unacked;
            res.violations.extend(out.violations);
        }
        res.elapsed = self.started.elapsed();
        res
    }
}

/// How one writer request went.
enum Outcome {
    /// Acknowledged: the state the key was in before (None: absent) and the index (0 when
    /// the answer has none, a delete of a missing key).
    Acked(Option<String>, u64),
    /// Not acknowledged (no answer or an error status).
    NotAcked,
    /// An answer that makes no sense.
    Bad(String),
}

fn do_set(addr: &str, key: &str, value: &str) -> Outcome {
    let form = form_encode(&[("value", value)]);
    match call(
        addr,
        "POST",
        &format!("/v1/keys{key}"),
        Some(&form),
        REQ_TIMEOUT,
    ) {
        Answer::Http(200, body) => {
            let bad = || Outcome::Bad(format!("POST {key} value={value}: 200 {body:?}"));
            let Some(v) = json(&body) else { return bad() };
            let (Some(index), Some(true), Some(true)) = (
                field_u64(&v, "index"),
                field_str(&v, "key").map(|k| k == key),
                field_str(&v, "value").map(|x| x == value),
            ) else {
                return bad();
            };
            match (field_str(&v, "prevValue"), v.get("newKey")) {
                (Some(prev), None) => Outcome::Acked(Some(prev.to_string()), index),
                (None, Some(serde_json::Value::Bool(true))) => Outcome::Acked(None, index),
                _ => bad(),
            }
        }
        Answer::Http(_, _) => Outcome::NotAcked,
        Answer::NoAnswer(_) => {
            // Probably down: do not spin.
            thread::sleep(Duration::from_millis(5));
            Outcome::NotAcked
        }
    }
}

fn do_delete(addr: &str, key: &str) -> Outcome {
    match call(addr, "DELETE", &format!("/v1/keys{key}"), None, REQ_TIMEOUT) {
        Answer::Http(200, body) => {
            let v = json(&body);
            let index = v.as_ref().and_then(|v| field_u64(v, "index"));
            let prev = v.as_ref().and_then(|v| field_str(v, "prevValue"));
            let key_ok = v.as_ref().and_then(|v| field_str(v, "key")) == Some(key);
            match (key_ok, prev, index) {
                (true, Some(prev), Some(index)) => Outcome::Acked(Some(prev.to_string()), index),
                _ => Outcome::Bad(format!("DELETE {key}: 200 {body:?}")),
            }
        }
        Answer::Http(404, body)
            if json(&body).is_some_and(|v| field_u64(&v, "errorCode") == Some(100)) =>
        {
            Outcome::Acked(None, 0)
        }
        Answer::Http(_, _) => Outcome::NotAcked,
        Answer::NoAnswer(_) => {
            thread::sleep(Duration::from_millis(5));
            Outcome::NotAcked
        }
    }
}

/// One writer: sets (and, with [`Ops::WithDeletes`], every 7th operation a delete) rotating over its
/// keys, back to back. Every acknowledged answer is checked against the ledger at once:
/// the `prevValue`/`newKey` it reports must not be older than the last acknowledged state.
#[allow(clippy::too_many_arguments)]
fn writer(
    group: usize,
    addr: String,
    prefix: String,
    tag: String,
    mut keys: Vec<KeyLog>,
    mut last_index: u64,
    limit: Option<usize>,
    ops: Ops,
    stop: Arc<AtomicBool>,
) -> WriterOut {
    let mut acks = Vec::new();
    let mut unacked = 0;
    let mut violations = Vec::new();
    let mut seq = 0usize;
    while !stop.load(Ordering::SeqCst) && limit.is_none_or(|l| seq < l) {
        let n = seq % keys.len();
        let key = format!("{prefix}/k{n}");
        let op = if ops == Ops::WithDeletes && seq % 7 == 3 {
            None
        } else {
            Some(format!("{tag}-s{seq}"))
        };
        seq += 1;
        let outcome = match &op {
            Some(value) => do_set(&addr, &key, value),
            None => do_delete(&addr, &key),
        };
        let log = &mut keys[n];
        match outcome {
            Outcome::Acked(prior, index) => {
                if let Err(e) = log.check(&key, prior.as_deref()) {
                    violations.push(format!(
                        "the answer to {} reports the state before it: {e}",
                        match &op {
                            Some(v) => format!("set {key}={v}"),
                            None => format!("delete {key}"),
                        }
                    ));
                }
                if index > 0 {
                    if index <= last_index {
                        violations.push(format!(
                            "{key}: acknowledged with index {index}, but an earlier acknowledged \
                             write of the same writer had index {last_index}"
                        ));
                    }
                    last_index = last_index.max(index);
                }
                log.attempts.push(op.clone());
                log.acked = Some(log.attempts.len() - 1);
                log.acked_index = index;
                if let Some(value) = op {
                    acks.push(Ack { key, value, index });
                }
            }
            Outcome::NotAcked => {
                log.attempts.push(op);
                unacked += 1;
            }
            Outcome::Bad(e) => {
                log.attempts.push(op);
                violations.push(e);
            }
        }
    }
    WriterOut {
        group,
        keys,
        last_index,
        acks,
        unacked,
        violations,
    }
}

// ---------------------------------------------------------------------------------------
// checks after a restart

/// GET every attempted key (4 threads) and check it against the ledger. Returns the
/// highest store index seen in the answers.
fn verify_all(addr: &str, ledger: &Arc<Ledger>, violations: &mut Vec<String>) -> u64 {
    let keys = Arc::new(ledger.attempted_keys());
    let next = Arc::new(AtomicU64::new(0));
    let found = Arc::new(Mutex::new(Vec::new()));
    let max_index = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (keys, next, found, max_index, ledger) = (
                keys.clone(),
                next.clone(),
                found.clone(),
                max_index.clone(),
                ledger.clone(),
            );
            let addr = addr.to_string();
            thread::spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst) as usize;
                    let Some(key) = keys.get(i) else { break };
                    let problem =
                        match call(&addr, "GET", &format!("/v1/keys{key}"), None, REQ_TIMEOUT) {
                            Answer::Http(200, body) => match json(&body) {
                                Some(v) => {
                                    if let Some(ix) = field_u64(&v, "index") {
                                        max_index.fetch_max(ix, Ordering::SeqCst);
                                    }
                                    ledger.check_value(key, field_str(&v, "value")).err()
                                }
                                None => Some(format!("GET {key}: 200 with body {body:?}")),
                            },
                            Answer::Http(404, body)
                                if json(&body)
                                    .is_some_and(|v| field_u64(&v, "errorCode") == Some(100)) =>
                            {
                                ledger.check_value(key, None).err()
                            }
                            Answer::Http(s, body) => Some(format!("GET {key}: {s} {body:?}")),
                            Answer::NoAnswer(e) => Some(format!("GET {key}: no answer: {e}")),
                        };
                    if let Some(p) = problem {
                        found.lock().unwrap().push(p);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("verify thread panicked");
    }
    violations.extend(found.lock().unwrap().drain(..));
    max_index.load(Ordering::SeqCst)
}

/// The current store index (from a GET of the root listing or of a key).
fn store_index(addr: &str) -> u64 {
    match call(addr, "GET", "/v1/keys/_etcd", None, REQ_TIMEOUT) {
        Answer::Http(200, body) => {
            let v = json(&body).unwrap_or_else(|| panic!("GET /v1/keys/_etcd: {body:?}"));
            let first = if v.is_array() { &v[0] } else { &v };
            field_u64(first, "index").unwrap_or_else(|| panic!("no index in {body}"))
        }
        Answer::Http(s, body) => panic!("GET /v1/keys/_etcd: {s} {body}"),
        Answer::NoAnswer(e) => panic!("GET /v1/keys/_etcd: {e}"),
    }
}

/// For the last (at most) 500 acknowledged writes whose index lies well inside the watch
/// history window, a watch from that index must return exactly that write (the history is
/// rebuilt from the log on restart).
fn check_watches(addr: &str, acks: &[Ack], window: u64, violations: &mut Vec<String>) -> usize {
    let current = store_index(addr);
    let mut recent: Vec<Ack> = acks
        .iter()
        .filter(|a| a.index + window > current)
        .cloned()
        .collect();
    recent.sort_by_key(|a| a.index);
    let skip = recent.len().saturating_sub(500);
    let recent = Arc::new(recent.split_off(skip));
    let next = Arc::new(AtomicU64::new(0));
    let found = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (recent, next, found) = (recent.clone(), next.clone(), found.clone());
            let addr = addr.to_string();
            thread::spawn(move || {
                loop {
                    // A hanging watch costs 5 s: give up after a few problems.
                    if found.lock().unwrap().len() >= 5 {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::SeqCst) as usize;
                    let Some(a) = recent.get(i) else { break };
                    let form = format!("index={}", a.index);
                    let what = format!("POST /v1/watch{} index={}", a.key, a.index);
                    let problem = match call(
                        &addr,
                        "POST",
                        &format!("/v1/watch{}", a.key),
                        Some(&form),
                        Duration::from_secs(5),
                    ) {
                        Answer::Http(200, body) => match json(&body) {
                            Some(v) => {
                                let ix = field_u64(&v, "index").unwrap_or(0);
                                let val = field_str(&v, "value");
                                if ix < a.index {
                                    Some(format!("{what}: answered an older index: {body}"))
                                } else if ix == a.index && val != Some(a.value.as_str()) {
                                    Some(format!(
                                        "{what}: event has value {val:?}, the acknowledged \
                                         write was {:?}: {body}",
                                        a.value
                                    ))
                                } else if ix > a.index {
                                    Some(format!(
                                        "{what}: the acknowledged SET at index {} is missing \
                                         from the rebuilt history (got {body})",
                                        a.index
                                    ))
                                } else {
                                    None
                                }
                            }
                            None => Some(format!("{what}: 200 with body {body:?}")),
                        },
                        Answer::Http(s, body) => Some(format!("{what}: {s} {body}")),
                        Answer::NoAnswer(e) => Some(format!(
                            "{what}: no answer within 5 s (history not rebuilt?): {e}"
                        )),
                    };
                    if let Some(p) = problem {
                        found.lock().unwrap().push(p);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("watch thread panicked");
    }
    violations.extend(found.lock().unwrap().drain(..));
    recent.len()
}

/// A write after the restart must get an index above every acknowledged one.
fn check_new_write(addr: &str, ledger: &Ledger, tag: &str, violations: &mut Vec<String>) {
    let max = ledger.max_acked_index();
    let value = format!("probe-{tag}");
    match call(
        addr,
        "POST",
        "/v1/keys/probe",
        Some(&form_encode(&[("value", &value)])),
        REQ_TIMEOUT,
    ) {
        Answer::Http(200, body) => {
            let ix = json(&body)
                .and_then(|v| field_u64(&v, "index"))
                .unwrap_or(0);
            if ix <= max {
                violations.push(format!(
                    "{tag}: a write after the restart got index {ix}, not above the highest \
                     acknowledged index {max} (index went backwards): {body}"
                ));
            }
        }
        Answer::Http(s, body) => violations.push(format!("{tag}: probe write: {s} {body}")),
        Answer::NoAnswer(e) => violations.push(format!("{tag}: probe write: {e}")),
    }
}

/// Spawn the node again and, while it recovers, hammer GETs of acknowledged keys: every
/// answer must be a connection failure, a 500/300 "not ready", or the right value. Also
/// measure how long until `/v1/leader` answers 200. Returns that delay.
fn restart_gated(
    node: &mut Node,
    ledger: &Arc<Ledger>,
    tag: &str,
    violations: &mut Vec<String>,
) -> Option<Duration> {
    let keys = Arc::new(ledger.acked_keys());
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new((0u64, 0u64, 0u64))); // (refused, not ready, good)
    let found = Arc::new(Mutex::new(Vec::new()));
    let spawned = Instant::now();
    node.spawn();
    let hammers: Vec<_> = (0..3)
        .map(|h| {
            let (keys, stop, seen, found, ledger) = (
                keys.clone(),
                stop.clone(),
                seen.clone(),
                found.clone(),
                ledger.clone(),
            );
            let addr = node.client.clone();
            thread::spawn(move || {
                let mut i = h * 7919;
                while !stop.load(Ordering::SeqCst) && !keys.is_empty() {
                    let key = &keys[i % keys.len()];
                    i += 1;
                    match call(&addr, "GET", &format!("/v1/keys{key}"), None, REQ_TIMEOUT) {
                        Answer::NoAnswer(_) => {
                            seen.lock().unwrap().0 += 1;
                            thread::sleep(Duration::from_millis(2));
                        }
                        Answer::Http(500, body)
                            if json(&body)
                                .is_some_and(|v| field_u64(&v, "errorCode") == Some(300)) =>
                        {
                            seen.lock().unwrap().1 += 1;
                        }
                        Answer::Http(200, body) => {
                            seen.lock().unwrap().2 += 1;
                            let v = json(&body);
                            let value = v.as_ref().and_then(|v| field_str(v, "value"));
                            if let Err(e) = ledger.check_value(key, value) {
                                found.lock().unwrap().push(format!(
                                    "during recovery, GET {key} answered 200 {body}: {e}"
                                ));
                            }
                        }
                        Answer::Http(s, body) => found.lock().unwrap().push(format!(
                            "during recovery, GET {key} answered {s} {body} (expected the \
                             value, a 500/300 or no connection)"
                        )),
                    }
                }
            })
        })
        .collect();
    let mut leader_after = None;
    let deadline = spawned + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Answer::Http(200, _) = call(
            &node.client,
            "GET",
            "/v1/leader",
            None,
            Duration::from_secs(2),
        ) {
            leader_after = Some(spawned.elapsed());
            break;
        }
        thread::sleep(Duration::from_millis(10));
    }
    let ready = node.poll_ready(Duration::from_secs(15)).is_ok();
    // Keep hammering a little after the node is ready.
    thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    for h in hammers {
        h.join().expect("hammer thread panicked");
    }
    let (refused, not_ready, good) = *seen.lock().unwrap();
    eprintln!(
        "{tag}: restart: /v1/leader 200 after {leader_after:?}; recovery GETs: {refused} \
         without answer, {not_ready} not ready, {good} values"
    );
    violations.extend(found.lock().unwrap().drain(..));
    match leader_after {
        Some(d) if d > Duration::from_secs(2) => violations.push(format!(
            "{tag}: /v1/leader answered 200 only {d:?} after the restart was spawned (> 2 s)"
        )),
        None => violations.push(format!(
            "{tag}: /v1/leader never answered 200 within 15 s of the restart"
        )),
        _ => {}
    }
    assert!(
        ready,
        "{tag}: node not ready within 15 s of restart; stderr:\n{}",
        node.stderr()
    );
    leader_after
}

/// Take the ledger out of its Arc again once all checker threads are gone.
fn unshare(ledger: Arc<Ledger>) -> Ledger {
    Arc::try_unwrap(ledger).unwrap_or_else(|_| panic!("ledger still shared"))
}

fn report(violations: &[String], node: &Node) {
    if violations.is_empty() {
        return;
    }
    let shown: Vec<&String> = violations.iter().take(40).collect();
    panic!(
        "{} violation(s), first {}:\n{}\n--- server stderr (tail) ---\n{}",
        violations.len(),
        shown.len(),
        shown
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        tail(&node.stderr(), 4000)
    );
}

fn tail(s: &str, n: usize) -> &str {
    let mut start = s.len().saturating_sub(n);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// Full check after a restart: every key, the index, a new write, and when `acks` is given
/// watches from the index of the last of them.
fn verify_after_restart(
    node: &Node,
    ledger: Ledger,
    acks: Option<&[Ack]>,
    tag: &str,
    violations: &mut Vec<String>,
) -> Ledger {
    let shared = Arc::new(ledger);
    let seen_index = verify_all(&node.client, &shared, violations);
    let ledger = unshare(shared);
    let max = ledger.max_acked_index();
    let index = store_index(&node.client).max(seen_index);
    if index < max {
        violations.push(format!(
            "{tag}: store index after restart is {index}, below the highest acknowledged \
             index {max}"
        ));
    }
    let watched = acks.map_or(0, |acks| check_watches(&node.client, acks, 900, violations));
    check_new_write(&node.client, &ledger, tag, violations);
    eprintln!(
        "{tag}: verified {} keys ({} with an acknowledged write), store index {index} >= {max}, \
         {watched} watches",
        ledger.attempted_keys().len(),
        ledger.acked_count()
    );
    ledger
}

// ---------------------------------------------------------------------------------------
// the tests

/// 32 writers, SIGKILL after a random 200..1500 ms, restart, check; five times on the same
/// data directory, all acknowledged writes of all cycles must survive every cycle.
#[test]
fn acknowledged_writes_survive_repeated_kill9() {
    let mut rng = Rng::from_env("PERSIST_SEED", "kill9 cycles");
    let mut node = Node::prepare("p0", &[]);
    node.spawn();
    node.wait_ready();
    let mut ledger = Ledger::default();
    let groups = ledger.add_groups("/p", 32, 20);
    let mut violations = Vec::new();
    let mut total_acked = 0;
    for cycle in 0..5 {
        let tag = format!("cycle {cycle}");
        let load = Load::start(
            &node.client,
            &mut ledger,
            &groups,
            &format!("c{cycle}"),
            None,
            Ops::WithDeletes,
        );
        let delay = rng.range(200, 1500);
        thread::sleep(Duration::from_millis(delay));
        node.kill9();
        let res = load.stop_and_join(&mut ledger);
        total_acked += res.acks.len();
        eprintln!(
            "{tag}: killed after {delay} ms of load: {} writes acknowledged, {} not ({:?})",
            res.acks.len(),
            res.unacked,
            res.elapsed
        );
        violations.extend(res.violations);
        assert!(!res.acks.is_empty(), "{tag}: no write was acknowledged");
        let shared = Arc::new(ledger);
        restart_gated(&mut node, &shared, &tag, &mut violations);
        ledger = unshare(shared);
        ledger = verify_after_restart(&node, ledger, Some(&res.acks), &tag, &mut violations);
        report(&violations, &node);
    }
    eprintln!("kill9 cycles: {total_acked} acknowledged writes in total, all present");
}

/// Snapshots every 200 entries: 2000 keys written, SIGKILL, all there after the restart;
/// then SIGKILL in the middle of heavy load with snapshots being taken.
#[test]
fn acknowledged_writes_survive_kill9_with_snapshots() {
    let mut rng = Rng::from_env("PERSIST_SEED", "snapshots");
    let mut node = Node::prepare("s0", &["-snapshotCount", "200"]);
    node.spawn();
    node.wait_ready();
    let mut ledger = Ledger::default();
    let mut violations = Vec::new();

    // 8 writers x 250 distinct keys, each written once.
    let fixed = ledger.add_groups("/snap", 8, 250);
    let res = Load::start(
        &node.client,
        &mut ledger,
        &fixed,
        "fixed",
        Some(250),
        Ops::SetsOnly,
    )
    .join(&mut ledger);
    eprintln!(
        "snapshots: {} writes acknowledged, {} not ({:?})",
        res.acks.len(),
        res.unacked,
        res.elapsed
    );
    violations.extend(res.violations);
    assert_eq!(
        res.acks.len(),
        2000,
        "every write to a healthy node must succeed ({} failed); stderr:\n{}",
        res.unacked,
        node.stderr()
    );
    node.kill9();
    let shared = Arc::new(ledger);
    restart_gated(&mut node, &shared, "snapshots restart 1", &mut violations);
    ledger = unshare(shared);
    ledger = verify_after_restart(&node, ledger, None, "snapshots restart 1", &mut violations);
    report(&violations, &node);

    // Heavy load, SIGKILL in the middle, three times.
    let heavy = ledger.add_groups("/heavy", 32, 20);
    for round in 0..3 {
        let tag = format!("snapshots heavy {round}");
        let load = Load::start(
            &node.client,
            &mut ledger,
            &heavy,
            &format!("h{round}"),
            None,
            Ops::WithDeletes,
        );
        let delay = rng.range(200, 1500);
        thread::sleep(Duration::from_millis(delay));
        node.kill9();
        let res = load.stop_and_join(&mut ledger);
        eprintln!(
            "{tag}: killed after {delay} ms: {} acknowledged, {} not",
            res.acks.len(),
            res.unacked
        );
        violations.extend(res.violations);
        assert!(!res.acks.is_empty(), "{tag}: no write acknowledged");
        let shared = Arc::new(ledger);
        restart_gated(&mut node, &shared, &tag, &mut violations);
        ledger = unshare(shared);
        ledger = verify_after_restart(&node, ledger, None, &tag, &mut violations);
        report(&violations, &node);
    }
}

/// A crash while the node is still recovering (replaying its log) loses nothing either.
#[test]
fn kill9_during_recovery_loses_nothing() {
    let mut rng = Rng::from_env("PERSIST_SEED", "kill during recovery");
    let mut node = Node::start("r0");
    let mut ledger = Ledger::default();
    let mut violations = Vec::new();
    let groups = ledger.add_groups("/rec", 32, 20);
    let load = Load::start(
        &node.client,
        &mut ledger,
        &groups,
        "r",
        None,
        Ops::WithDeletes,
    );
    thread::sleep(Duration::from_millis(rng.range(800, 1500)));
    node.kill9();
    let res = load.stop_and_join(&mut ledger);
    eprintln!(
        "kill during recovery: {} acknowledged, {} not",
        res.acks.len(),
        res.unacked
    );
    violations.extend(res.violations);
    for _ in 0..3 {
        node.spawn();
        thread::sleep(Duration::from_millis(rng.range(0, 60)));
        node.kill9();
    }
    let shared = Arc::new(ledger);
    restart_gated(
        &mut node,
        &shared,
        "after kills during recovery",
        &mut violations,
    );
    ledger = unshare(shared);
    verify_after_restart(
        &node,
        ledger,
        Some(&res.acks),
        "after kills during recovery",
        &mut violations,
    );
    report(&violations, &node);
}

/// The 2.x spelling `--snapshot-count` works the same, with the harness's plain restart.
#[test]
fn acknowledged_writes_survive_kill9_with_long_snapshot_flag() {
    let mut node = Node::start_args("s1", &["--snapshot-count", "200"]);
    let mut ledger = Ledger::default();
    let mut violations = Vec::new();
    let groups = ledger.add_groups("/long", 8, 10);
    let res = Load::start(
        &node.client,
        &mut ledger,
        &groups,
        "a",
        Some(100),
        Ops::SetsOnly,
    )
    .join(&mut ledger);
    violations.extend(res.violations);
    assert_eq!(res.acks.len(), 800, "stderr:\n{}", node.stderr());
    node.kill9();
    node.restart();
    verify_after_restart(&node, ledger, None, "long flag", &mut violations);
    report(&violations, &node);
}

/// SIGTERM in the middle of load: exit 0, and every acknowledged write is there after a
/// restart.
#[test]
fn acknowledged_writes_survive_sigterm_under_load() {
    let mut rng = Rng::from_env("PERSIST_SEED", "sigterm");
    let mut node = Node::start("g0");
    let mut ledger = Ledger::default();
    let mut violations = Vec::new();
    let groups = ledger.add_groups("/g", 32, 20);
    let load = Load::start(
        &node.client,
        &mut ledger,
        &groups,
        "g",
        None,
        Ops::WithDeletes,
    );
    thread::sleep(Duration::from_millis(rng.range(400, 1200)));
    let stopped = Instant::now();
    let status = node.stop(); // SIGTERM, bounded wait
    let took = stopped.elapsed();
    let res = load.stop_and_join(&mut ledger);
    eprintln!(
        "sigterm: exit {status:?} after {took:?}; {} acknowledged, {} not",
        res.acks.len(),
        res.unacked
    );
    violations.extend(res.violations);
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGTERM under load; stderr:\n{}",
        node.stderr()
    );
    assert!(
        took < Duration::from_secs(5),
        "SIGTERM under load took {took:?}"
    );
    assert!(!res.acks.is_empty());
    node.restart();
    verify_after_restart(&node, ledger, Some(&res.acks), "sigterm", &mut violations);
    report(&violations, &node);
}

/// The watch history is rebuilt on restart even when the node recovers from a snapshot:
/// a watch from the index of one of the last few hundred writes (well inside the 1000-event
/// window the node served before the crash) returns that write instead of hanging.
#[test]
fn watch_history_survives_kill9_with_snapshots() {
    let mut node = Node::start_args("w0", &["-snapshotCount", "200"]);
    let mut acks = Vec::new();
    for i in 0..450 {
        let key = format!("/hist/k{i}");
        let value = format!("v{i}");
        let r = common::post_form(
            &node.client,
            &format!("/v1/keys{key}"),
            &[("value", &value)],
        );
        assert_eq!(r.status, 200, "{}", r.body);
        let index = r.json()["index"].as_u64().expect("index");
        acks.push(Ack { key, value, index });
    }
    // Before the crash the whole window answers at once.
    let mut violations = Vec::new();
    let probe: Vec<Ack> = [0, 150, 300, 449]
        .iter()
        .map(|&i| acks[i].clone())
        .collect();
    check_watches(&node.client, &probe, 900, &mut violations);
    assert!(violations.is_empty(), "before the crash: {violations:#?}");
    node.kill9();
    node.restart();
    check_watches(&node.client, &probe, 900, &mut violations);
    assert!(
        violations.is_empty(),
        "after kill -9 and restart with -snapshotCount 200, watches from indexes of the last 450 \
         writes no longer answer (history rebuilt only from the log after the last snapshot?):\n{}",
        violations.join("\n")
    );
}

/// A data directory written by the release before the write-ahead log (ee85d0e: the Raft
/// log, a JSON snapshot and purged entries all in `etcd.redb`, left by `kill -9`) starts with
/// every key, index and TTL it had, moves its log into `wal/`, and keeps working after that.
#[test]
fn data_dir_of_the_previous_release_is_migrated() {
    let mut node = Node::prepare("node0", &[]);
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/legacy/datadir-ee85d0e.tar.gz"
    );
    let st = std::process::Command::new("tar")
        .args(["xzf", fixture, "-C"])
        .arg(&node.dir)
        .status()
        .expect("run tar");
    assert!(st.success(), "unpacking {fixture}");
    // The node comes back with the identity it saved (its old ports).
    node.client = "127.0.0.1:14001".into();
    node.peer = "127.0.0.1:17001".into();
    let data_arg = node.dir.join("node0").to_string_lossy().into_owned();
    node.args = [
        "-n",
        "node0",
        "-d",
        &data_arg,
        "-c",
        &node.client,
        "-s",
        &node.peer,
    ]
    .map(String::from)
    .to_vec();
    let data = node.dir.join("node0");
    assert!(!data.join("wal").exists());
    node.spawn();
    node.wait_ready();

    let check = |node: &Node, sets: u64| {
        let get = |key: &str| common::get(&node.client, &format!("/v2/keys{key}"));
        let r = get("/legacy/k1");
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(
            r.body,
            "{\"action\":\"get\",\"node\":{\"key\":\"/legacy/k1\",\"value\":\"value-1\",\"modifiedIndex\":2,\"createdIndex\":2}}\n"
        );
        let r = get("/legacy/k1300");
        assert!(
            r.body
                .contains("\"value\":\"value-1300\",\"modifiedIndex\":1301"),
            "{}",
            r.body
        );
        assert_eq!(get("/legacy/k7").status, 404);
        assert!(
            get("/legacy/k8")
                .body
                .contains("\"value\":\"swapped\",\"modifiedIndex\":1309,\"createdIndex\":9")
        );
        assert!(get("/dir1/sub/key").body.contains("\"value\":\"deep\""));
        assert!(get("/_hidden").body.contains("\"value\":\"secret\""));
        assert!(get("/queue/00000000000000001305").body.contains("job1"));
        assert!(get("/emptydir").body.contains("\"dir\":true"));
        assert!(get("/v1key").body.contains("fromv1"));
        let ttl = get("/ttlkey");
        assert!(
            ttl.body
                .contains("\"expiration\":\"2126-11-13T01:15:58.948129043Z\""),
            "{}",
            ttl.body
        );
        // 1,300 of the 1,310 writes were behind the old snapshot and purged log entries.
        let listing = get("/legacy");
        assert_eq!(listing.body.matches("\"key\":\"/legacy/k").count(), 1299);
        let stats = common::get(&node.client, "/v2/stats/store");
        assert!(
            stats.body.contains(&format!("\"setsSuccess\":{sets}")),
            "{}",
            stats.body
        );
    };
    check(&node, 1307);
    let r = common::get(&node.client, "/v2/keys/legacy/k1");
    assert_eq!(r.header("X-Etcd-Index"), Some("1310"));
    assert!(
        node.stderr()
            .contains("moved the Raft log into the write-ahead log")
    );
    assert!(data.join("wal").join("0000000000000000.wal").exists());

    // New writes go on from there, and everything survives a kill -9 and a restart.
    let r = common::put_form(&node.client, "/v2/keys/after", &[("value", "migration")]);
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(r.body.contains("\"modifiedIndex\":1311"), "{}", r.body);
    node.kill9();
    node.restart();
    check(&node, 1308);
    assert!(
        common::get(&node.client, "/v2/keys/after")
            .body
            .contains("migration")
    );
    assert_eq!(
        node.stderr().matches("moved the Raft log").count(),
        1,
        "migrated once"
    );
    node.stop();
}
