//! Durability: an acknowledged write must survive a crash (SIGKILL), a graceful stop and
//! snapshots, the store index must never go backwards, and a restarting node must never
//! serve a half-recovered store.
//!
//! The load (`common/load.rs`, v1 API): each writer thread owns its keys and records every
//! attempt per key in order (sets with a unique value, and in most tests some deletes, the
//! keys and deletes drawn from the seed that `PERSIST_SEED` replays) and which attempt was
//! acknowledged last (HTTP 200 with the JSON body echoing key, value and index; for a delete
//! also 404/100); the ledger built from those records tells what each key may hold.
//! After a restart every key must be in the state of the last acknowledged attempt or of a
//! *later* attempt of the same key (an unacknowledged write may or may not have made it),
//! never an older one and never a value nobody wrote. The `prevValue`/`newKey` of every
//! acknowledged answer is held to the same rule while the load runs.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::load::{Ack, Api, Keys, Ledger, Load, LoadSpec, Ops, Run, Seed};
use common::rng::Rng;
use common::{Node, form_encode, request_timeout};

/// Timeout of a single read or write of the checks.
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
// the load

/// The load of these tests: 32 writers on `addr` (v1 API), each on 20 keys of its own drawn
/// from `seed`, with deletes mixed in, back to back until stopped.
fn churn(addr: &str, prefix: &str, seed: u64) -> LoadSpec {
    LoadSpec {
        writers: 32,
        api: Api::V1,
        keys: Keys::Random(20),
        ops: Ops::WithDeletes,
        after_no_answer: Duration::from_millis(5),
        seed: Seed::Value(seed),
        ..LoadSpec::new(prefix, &[addr.to_string()])
    }
}

/// Add what a finished load did to the ledger, its problems to `violations`; returns its
/// acknowledged sets.
fn record(run: Run, ledger: &mut Ledger, violations: &mut Vec<String>) -> Vec<Ack> {
    ledger.record(&run);
    violations.extend(
        run.problems
            .iter()
            .map(|p| format!("{p} (load seed {})", run.seed)),
    );
    run.acked_sets()
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
    let mut violations = Vec::new();
    let mut total_acked = 0;
    for cycle in 0..5 {
        let tag = format!("cycle {cycle}");
        let load = Load::resume(churn(&node.client, "/p", rng.next()), &ledger);
        let delay = rng.range(200, 1500);
        thread::sleep(Duration::from_millis(delay));
        node.kill9();
        let run = load.finish();
        let (unacked, elapsed) = (run.unacked(), run.elapsed);
        let acks = record(run, &mut ledger, &mut violations);
        total_acked += acks.len();
        eprintln!(
            "{tag}: killed after {delay} ms of load: {} writes acknowledged, {unacked} not \
             ({elapsed:?})",
            acks.len(),
        );
        assert!(!acks.is_empty(), "{tag}: no write was acknowledged");
        let shared = Arc::new(ledger);
        restart_gated(&mut node, &shared, &tag, &mut violations);
        ledger = unshare(shared);
        ledger = verify_after_restart(&node, ledger, Some(&acks), &tag, &mut violations);
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
    let run = Load::start(LoadSpec {
        writers: 8,
        keys: Keys::InTurn(250),
        ops: Ops::SetsOnly,
        limit: Some(250),
        ..churn(&node.client, "/snap", rng.next())
    })
    .wait();
    let (unacked, elapsed) = (run.unacked(), run.elapsed);
    let acks = record(run, &mut ledger, &mut violations);
    eprintln!(
        "snapshots: {} writes acknowledged, {unacked} not ({elapsed:?})",
        acks.len(),
    );
    assert_eq!(
        acks.len(),
        2000,
        "every write to a healthy node must succeed ({unacked} failed); stderr:\n{}",
        node.stderr()
    );
    node.kill9();
    let shared = Arc::new(ledger);
    restart_gated(&mut node, &shared, "snapshots restart 1", &mut violations);
    ledger = unshare(shared);
    ledger = verify_after_restart(&node, ledger, None, "snapshots restart 1", &mut violations);
    report(&violations, &node);

    // Heavy load, SIGKILL in the middle, three times.
    for round in 0..3 {
        let tag = format!("snapshots heavy {round}");
        let load = Load::resume(churn(&node.client, "/heavy", rng.next()), &ledger);
        let delay = rng.range(200, 1500);
        thread::sleep(Duration::from_millis(delay));
        node.kill9();
        let run = load.finish();
        let unacked = run.unacked();
        let acks = record(run, &mut ledger, &mut violations);
        eprintln!(
            "{tag}: killed after {delay} ms: {} acknowledged, {unacked} not",
            acks.len(),
        );
        assert!(!acks.is_empty(), "{tag}: no write acknowledged");
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
    let load = Load::start(churn(&node.client, "/rec", rng.next()));
    thread::sleep(Duration::from_millis(rng.range(800, 1500)));
    node.kill9();
    let run = load.finish();
    let unacked = run.unacked();
    let acks = record(run, &mut ledger, &mut violations);
    eprintln!(
        "kill during recovery: {} acknowledged, {unacked} not",
        acks.len(),
    );
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
        Some(&acks),
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
    let run = Load::start(LoadSpec {
        writers: 8,
        keys: Keys::InTurn(10),
        ops: Ops::SetsOnly,
        limit: Some(100),
        ..churn(&node.client, "/long", 0)
    })
    .wait();
    let acks = record(run, &mut ledger, &mut violations);
    assert_eq!(acks.len(), 800, "stderr:\n{}", node.stderr());
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
    let load = Load::start(churn(&node.client, "/g", rng.next()));
    thread::sleep(Duration::from_millis(rng.range(400, 1200)));
    let stopped = Instant::now();
    let status = node.stop(); // SIGTERM, bounded wait
    let took = stopped.elapsed();
    let run = load.finish();
    let unacked = run.unacked();
    let acks = record(run, &mut ledger, &mut violations);
    eprintln!(
        "sigterm: exit {status:?} after {took:?}; {} acknowledged, {unacked} not",
        acks.len(),
    );
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
    assert!(!acks.is_empty());
    node.restart();
    verify_after_restart(&node, ledger, Some(&acks), "sigterm", &mut violations);
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
