//! The tests' one write load: [`Load`], writer threads that each own their keys
//! (`<prefix>/w<w>/k<n>`), choose their operations and keys from a seeded generator
//! ([`crate::common::rng::Rng`]: the same seed gives every writer the same sequence of
//! choices), and record for every attempt what it got ([`Attempt`]: acknowledged with its
//! index and the state before it, refused, no answer, or an answer that makes no sense).
//!
//! The records of a [`Run`] give both kinds of check:
//! * the acknowledged writes ([`Run::acked`], [`Run::acked_sets`]): all must be present later;
//! * the [`Ledger`] built from them ([`Ledger::record`]): what each key may hold now, after a
//!   crash that left unacknowledged writes in doubt (the state of the last acknowledged
//!   attempt, or of a later attempt; never an older one, never one nobody made).
//!
//! While the load runs, with [`Acks::Check`], every acknowledgement is held to the writer's
//! own ledger at once: it must echo the key and value written (for a delete: the key), the
//! state before it that it reports (`prevValue`/`newKey`, `prevNode`) must be allowed by the
//! ledger, and the index of a writer's acknowledged writes must grow (they are sequential).
//! Such violations are [`Run::problems`].
//!
//! A load resumed from a ledger ([`Load::resume`]) continues its writers' numbering and the
//! index check where the previous load left them.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::rng::{Rng, seed_from_env};
use crate::common::{Resp, form_encode, request_timeout};

/// Timeout of one request of a writer.
pub const REQ_TIMEOUT: Duration = Duration::from_secs(10);

/// With [`Ops::WithDeletes`], one operation in this many (drawn from the seed) is a delete.
pub const DELETE_ONE_IN: u64 = 7;

/// Which API the writers use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `POST /v1/keys/KEY` (200) and `DELETE /v1/keys/KEY`.
    V1,
    /// `PUT /v2/keys/KEY` (201 created, 200 replaced) and `DELETE /v2/keys/KEY`.
    V2,
}

/// Which of its keys a writer's next operation is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keys {
    /// A new key for every attempt.
    Unique,
    /// `n` keys in turn (`k0`, `k1`, ... `k<n-1>`, `k0`, ...).
    InTurn(usize),
    /// One of `n` keys drawn from the seed.
    Random(usize),
}

/// What the writers send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ops {
    SetsOnly,
    /// Sets, and one operation in [`DELETE_ONE_IN`] a delete.
    WithDeletes,
}

/// What a writer makes of an answer with an acknowledging status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// The body must echo the key and value, name the index and the state before, and be
    /// allowed by the ledger (else a problem, and the attempt is not counted as acknowledged).
    Check,
    /// Only the status counts.
    Trust,
}

/// Where the seed of the writers' choices comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seed {
    /// This environment variable, else the clock (printed with the variable to replay).
    Env(&'static str),
    /// This value (from a test's own replayable generator).
    Value(u64),
}

/// What a [`Load`] does; `LoadSpec::new` gives the defaults, to be changed with struct
/// update syntax.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// Writer `w` owns the keys `<prefix>/w<w>/k<n>`.
    pub prefix: String,
    /// Client addresses; writer `w` sends to `targets[w % len]`.
    pub targets: Vec<String>,
    /// Number of writers (default: one per target).
    pub writers: usize,
    pub api: Api,
    pub keys: Keys,
    pub ops: Ops,
    pub acks: Acks,
    /// Sleep after every attempt.
    pub pause: Duration,
    /// Extra sleep after an error answer.
    pub after_refusal: Duration,
    /// Extra sleep after an attempt without an answer (the node is probably down).
    pub after_no_answer: Duration,
    /// Attempts per writer (None: until stopped).
    pub limit: Option<usize>,
    pub seed: Seed,
}

impl LoadSpec {
    /// One writer per target, v2 sets of unique keys, checked acknowledgements, no pauses,
    /// no limit, the seed from `LOAD_SEED`.
    pub fn new(prefix: &str, targets: &[String]) -> LoadSpec {
        LoadSpec {
            prefix: prefix.to_string(),
            targets: targets.to_vec(),
            writers: targets.len(),
            api: Api::V2,
            keys: Keys::Unique,
            ops: Ops::SetsOnly,
            acks: Acks::Check,
            pause: Duration::ZERO,
            after_refusal: Duration::ZERO,
            after_no_answer: Duration::ZERO,
            limit: None,
            seed: Seed::Env("LOAD_SEED"),
        }
    }
}

/// One operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Set(String),
    Delete,
}

impl Op {
    /// The state the key is in after this operation.
    fn value(&self) -> Option<&str> {
        match self {
            Op::Set(v) => Some(v),
            Op::Delete => None,
        }
    }
}

/// The state of a key before an acknowledged operation, as its answer reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Before {
    Absent,
    Value(String),
    /// Not looked at ([`Acks::Trust`]).
    Unknown,
}

/// What an attempt got.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Acknowledged, with its index (0 when the answer has none: a delete of a missing key,
    /// or [`Acks::Trust`]).
    Acked { index: u64, before: Before },
    /// An error answer. The operation may still take effect (a proposal that timed out),
    /// so the ledger counts it as in doubt, like an attempt without an answer.
    Refused { status: u16, body: String },
    /// No complete answer (refused connection, reset, timeout).
    NoAnswer(String),
    /// An acknowledging status with an answer that makes no sense (a problem).
    Bad(String),
}

/// One attempt of one writer.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The writer's name, `<prefix>/w<w>`.
    pub writer: String,
    pub key: String,
    pub op: Op,
    pub outcome: Outcome,
}

impl Attempt {
    fn describe(&self) -> String {
        match &self.op {
            Op::Set(v) => format!("set {}={v}", self.key),
            Op::Delete => format!("delete {}", self.key),
        }
    }
}

/// One acknowledged set.
#[derive(Clone, Debug)]
pub struct Ack {
    pub key: String,
    pub value: String,
    pub index: u64,
}

/// What a load did: every attempt, writer by writer in order, and the problems seen.
pub struct Run {
    pub seed: u64,
    pub attempts: Vec<Attempt>,
    pub problems: Vec<String>,
    pub elapsed: Duration,
}

impl Run {
    /// The acknowledged sets (key, value, index).
    pub fn acked_sets(&self) -> Vec<Ack> {
        self.attempts
            .iter()
            .filter_map(|a| match (&a.op, &a.outcome) {
                (Op::Set(value), Outcome::Acked { index, .. }) => Some(Ack {
                    key: a.key.clone(),
                    value: value.clone(),
                    index: *index,
                }),
                _ => None,
            })
            .collect()
    }

    /// The acknowledged sets as (key, value).
    pub fn acked(&self) -> Vec<(String, String)> {
        self.acked_sets()
            .into_iter()
            .map(|a| (a.key, a.value))
            .collect()
    }

    /// Attempts without an acknowledgement (refused or unanswered; not the bad ones).
    pub fn unacked(&self) -> usize {
        self.attempts
            .iter()
            .filter(|a| matches!(a.outcome, Outcome::Refused { .. } | Outcome::NoAnswer(_)))
            .count()
    }
}

/// Every attempt at one key, in order (`None` = a delete), and the last acknowledged one.
#[derive(Debug, Default, Clone)]
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

/// How far a writer got.
#[derive(Debug, Default, Clone)]
struct WriterLog {
    attempts: usize,
    /// Index of its last acknowledged write (its writes are sequential, so they must grow).
    last_index: u64,
}

/// What the loads recorded so far, key by key: what each key may hold now.
#[derive(Debug, Default, Clone)]
pub struct Ledger {
    keys: BTreeMap<String, KeyLog>,
    writers: BTreeMap<String, WriterLog>,
}

impl Ledger {
    /// Add a run's attempts.
    pub fn record(&mut self, run: &Run) {
        for a in &run.attempts {
            self.apply(a);
        }
    }

    fn apply(&mut self, a: &Attempt) {
        let log = self.keys.entry(a.key.clone()).or_default();
        log.attempts.push(a.op.value().map(str::to_string));
        let w = self.writers.entry(a.writer.clone()).or_default();
        w.attempts += 1;
        if let Outcome::Acked { index, .. } = a.outcome {
            log.acked = Some(log.attempts.len() - 1);
            log.acked_index = index;
            w.last_index = w.last_index.max(index);
        }
    }

    /// The part of the ledger about one writer's keys.
    fn of_writer(&self, writer: &str) -> Ledger {
        let prefix = format!("{writer}/");
        Ledger {
            keys: self
                .keys
                .iter()
                .filter(|(k, _)| k.starts_with(&prefix))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            writers: self
                .writers
                .get(writer)
                .map(|w| (writer.to_string(), w.clone()))
                .into_iter()
                .collect(),
        }
    }

    fn writer(&self, writer: &str) -> WriterLog {
        self.writers.get(writer).cloned().unwrap_or_default()
    }

    /// Check a value read for `key` (None: absent) against the ledger; Err describes a
    /// violation. A key never attempted may only be absent.
    pub fn check_value(&self, key: &str, value: Option<&str>) -> Result<(), String> {
        match self.keys.get(key) {
            Some(log) => log.check(key, value),
            None => KeyLog::default().check(key, value),
        }
    }

    /// The highest index of an acknowledged write.
    pub fn max_acked_index(&self) -> u64 {
        self.writers
            .values()
            .map(|w| w.last_index)
            .max()
            .unwrap_or(0)
    }

    /// How many keys had an acknowledged attempt.
    pub fn acked_count(&self) -> usize {
        self.keys.values().filter(|k| k.acked.is_some()).count()
    }

    /// Every key that was attempted.
    pub fn attempted_keys(&self) -> Vec<String> {
        self.keys.keys().cloned().collect()
    }

    /// Keys whose last attempt was an acknowledged set: they must be readable.
    pub fn acked_keys(&self) -> Vec<String> {
        self.keys
            .iter()
            .filter(|(_, k)| {
                let last = k.attempts.len().checked_sub(1);
                last.is_some() && k.acked == last && k.attempts[k.acked.unwrap()].is_some()
            })
            .map(|(key, _)| key.clone())
            .collect()
    }
}

/// Running writer threads; [`Load::finish`] or [`Load::wait`] gives their [`Run`].
pub struct Load {
    seed: u64,
    stop: Arc<AtomicBool>,
    handles: Vec<thread::JoinHandle<(Vec<Attempt>, Vec<String>)>>,
    started: Instant,
}

impl Load {
    /// Start the writers on fresh keys.
    pub fn start(spec: LoadSpec) -> Load {
        Load::resume(spec, &Ledger::default())
    }

    /// Start the writers where the loads recorded in `history` left them.
    pub fn resume(spec: LoadSpec, history: &Ledger) -> Load {
        assert!(!spec.targets.is_empty(), "a load needs a target");
        let seed = match spec.seed {
            Seed::Env(var) => {
                let seed = seed_from_env(var);
                eprintln!(
                    "load {}: {} writers, seed {seed} (set {var}={seed} to replay)",
                    spec.prefix, spec.writers
                );
                seed
            }
            Seed::Value(seed) => {
                eprintln!(
                    "load {}: {} writers, seed {seed}",
                    spec.prefix, spec.writers
                );
                seed
            }
        };
        let mut root = Rng::new(seed);
        let spec = Arc::new(spec);
        let stop = Arc::new(AtomicBool::new(false));
        let handles = (0..spec.writers)
            .map(|w| {
                let name = format!("{}/w{w}", spec.prefix);
                let book = history.of_writer(&name);
                let (spec, stop, rng) = (spec.clone(), stop.clone(), root.fork());
                thread::spawn(move || writer(w, name, &spec, rng, book, &stop))
            })
            .collect();
        Load {
            seed,
            stop,
            handles,
            started: Instant::now(),
        }
    }

    /// Stop the writers and collect what they did.
    pub fn finish(self) -> Run {
        self.stop.store(true, Ordering::SeqCst);
        self.wait()
    }

    /// Wait for the writers to reach their limit and collect what they did.
    pub fn wait(self) -> Run {
        let mut run = Run {
            seed: self.seed,
            attempts: Vec::new(),
            problems: Vec::new(),
            elapsed: Duration::ZERO,
        };
        for h in self.handles {
            let (attempts, problems) = h.join().expect("writer thread panicked");
            run.attempts.extend(attempts);
            run.problems.extend(problems);
        }
        run.elapsed = self.started.elapsed();
        run
    }
}

/// One writer: its attempts, checked against its own part of the ledger as they come.
fn writer(
    w: usize,
    name: String,
    spec: &LoadSpec,
    mut rng: Rng,
    mut book: Ledger,
    stop: &AtomicBool,
) -> (Vec<Attempt>, Vec<String>) {
    let addr = &spec.targets[w % spec.targets.len()];
    let first = book.writer(&name).attempts;
    let mut attempts = Vec::new();
    let mut problems = Vec::new();
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) && spec.limit.is_none_or(|l| n < l) {
        let seq = first + n;
        n += 1;
        let k = match spec.keys {
            Keys::Unique => seq,
            Keys::InTurn(keys) => seq % keys,
            Keys::Random(keys) => rng.below(keys as u64) as usize,
        };
        let key = format!("{name}/k{k:05}");
        let op = if spec.ops == Ops::WithDeletes && rng.below(DELETE_ONE_IN) == 0 {
            Op::Delete
        } else {
            Op::Set(format!("w{w}-{seq}"))
        };
        let outcome = send(spec, addr, &key, &op);
        let a = Attempt {
            writer: name.clone(),
            key,
            op,
            outcome,
        };
        let sleep = match &a.outcome {
            Outcome::Acked { index, before } => {
                let state = match before {
                    Before::Absent => Some(None),
                    Before::Value(v) => Some(Some(v.as_str())),
                    Before::Unknown => None,
                };
                if let Some(state) = state
                    && let Err(e) = book.check_value(&a.key, state)
                {
                    problems.push(format!(
                        "the answer to {} (via {addr}) reports the state before it: {e}",
                        a.describe()
                    ));
                }
                let last = book.writer(&name).last_index;
                if *index > 0 && *index <= last {
                    problems.push(format!(
                        "{}: acknowledged with index {index}, but an earlier acknowledged \
                         write of the same writer had index {last}",
                        a.key
                    ));
                }
                Duration::ZERO
            }
            Outcome::Refused { .. } => spec.after_refusal,
            Outcome::NoAnswer(_) => spec.after_no_answer,
            Outcome::Bad(e) => {
                problems.push(e.clone());
                spec.after_refusal
            }
        };
        book.apply(&a);
        attempts.push(a);
        thread::sleep(sleep + spec.pause);
    }
    (attempts, problems)
}

fn json(body: &str) -> Option<serde_json::Value> {
    serde_json::from_str(body).ok()
}

fn u64_at(v: &serde_json::Value, path: &[&str]) -> Option<u64> {
    path.iter().try_fold(v, |v, p| v.get(p))?.as_u64()
}

fn str_at<'a>(v: &'a serde_json::Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, p| v.get(p))?.as_str()
}

/// One attempt: the request and what its answer means.
fn send(spec: &LoadSpec, addr: &str, key: &str, op: &Op) -> Outcome {
    let (method, path) = match (spec.api, op) {
        (Api::V1, Op::Set(_)) => ("POST", format!("/v1/keys{key}")),
        (Api::V2, Op::Set(_)) => ("PUT", format!("/v2/keys{key}")),
        (Api::V1, Op::Delete) => ("DELETE", format!("/v1/keys{key}")),
        (Api::V2, Op::Delete) => ("DELETE", format!("/v2/keys{key}")),
    };
    let form = match op {
        Op::Set(v) => form_encode(&[("value", v)]),
        Op::Delete => String::new(),
    };
    let headers: &[(&str, &str)] = match op {
        Op::Set(_) => &[("Content-Type", "application/x-www-form-urlencoded")],
        Op::Delete => &[],
    };
    match request_timeout(addr, method, &path, headers, form.as_bytes(), REQ_TIMEOUT) {
        Ok(r) => judge(spec, key, op, &r),
        Err(e) => Outcome::NoAnswer(e),
    }
}

/// What an answer to `op` on `key` means.
fn judge(spec: &LoadSpec, key: &str, op: &Op, r: &Resp) -> Outcome {
    let missing = r.status == 404 && json(&r.body).is_some_and(|v| v["errorCode"] == 100);
    let acked = match (spec.api, op) {
        (Api::V1, Op::Set(_)) => r.status == 200,
        (Api::V2, Op::Set(_)) => r.status == 200 || r.status == 201,
        (_, Op::Delete) => r.status == 200 || missing,
    };
    if !acked {
        return Outcome::Refused {
            status: r.status,
            body: r.body.clone(),
        };
    }
    if spec.acks == Acks::Trust {
        return Outcome::Acked {
            index: 0,
            before: Before::Unknown,
        };
    }
    if missing {
        return Outcome::Acked {
            index: 0,
            before: Before::Absent,
        };
    }
    let what = match op {
        Op::Set(v) => format!("set {key}={v}"),
        Op::Delete => format!("delete {key}"),
    };
    let bad = || Outcome::Bad(format!("{what}: {} {:?}", r.status, r.body));
    let Some(v) = json(&r.body) else {
        return bad();
    };
    let acked = |index: u64, before: Before| Outcome::Acked { index, before };
    match (spec.api, op) {
        // 200 {"key", "value", "index", and "prevValue" or "newKey": true}
        (Api::V1, Op::Set(value)) => {
            let (Some(index), Some(true), Some(true)) = (
                u64_at(&v, &["index"]),
                str_at(&v, &["key"]).map(|k| k == key),
                str_at(&v, &["value"]).map(|x| x == value),
            ) else {
                return bad();
            };
            match (str_at(&v, &["prevValue"]), v.get("newKey")) {
                (Some(prev), None) => acked(index, Before::Value(prev.to_string())),
                (None, Some(serde_json::Value::Bool(true))) => acked(index, Before::Absent),
                _ => bad(),
            }
        }
        // 200 {"key", "prevValue", "index"}
        (Api::V1, Op::Delete) => {
            match (
                str_at(&v, &["key"]) == Some(key),
                str_at(&v, &["prevValue"]),
                u64_at(&v, &["index"]),
            ) {
                (true, Some(prev), Some(index)) => acked(index, Before::Value(prev.to_string())),
                _ => bad(),
            }
        }
        // 201 without prevNode (created) or 200 with it (replaced):
        // {"action": "set", "node": {"key", "value", "modifiedIndex"}, "prevNode": {"value"}}
        (Api::V2, Op::Set(value)) => {
            let (Some("set"), Some(true), Some(true), Some(index)) = (
                str_at(&v, &["action"]),
                str_at(&v, &["node", "key"]).map(|k| k == key),
                str_at(&v, &["node", "value"]).map(|x| x == value),
                u64_at(&v, &["node", "modifiedIndex"]),
            ) else {
                return bad();
            };
            match (r.status, v.get("prevNode")) {
                (201, None) => acked(index, Before::Absent),
                (200, Some(_)) => match str_at(&v, &["prevNode", "value"]) {
                    Some(prev) => acked(index, Before::Value(prev.to_string())),
                    None => bad(),
                },
                _ => bad(),
            }
        }
        // 200 {"action": "delete", "node": {"key", "modifiedIndex"}, "prevNode": {"value"}}
        (Api::V2, Op::Delete) => {
            match (
                str_at(&v, &["action"]),
                str_at(&v, &["node", "key"]) == Some(key),
                u64_at(&v, &["node", "modifiedIndex"]),
                str_at(&v, &["prevNode", "value"]),
            ) {
                (Some("delete"), true, Some(index), Some(prev)) => {
                    acked(index, Before::Value(prev.to_string()))
                }
                _ => bad(),
            }
        }
    }
}
