//! Checks of recorded client histories (test support, no server involved).
//!
//! * [`check_key`]: is one key's history linearizable against a register (a value or absent,
//!   and the index of the current value)? Wing & Gong's search with Lowe's memoization, the
//!   algorithm of Knossos and Porcupine: walk the history's call/return entries in time
//!   order; linearize (apply to the model) an operation whose call comes before every return
//!   still pending; on reaching a return whose operation is not linearized yet, undo the last
//!   choice and try the next one. A cache of (set of linearized operations, model state)
//!   prunes every configuration seen before. Operations of unknown outcome stay candidates to
//!   the end; two reductions keep them from multiplying the search (values nobody saw are
//!   one value; the same operation of unknown outcome is taken in call order). A step bound turns a search that would take too long into
//!   [`Verdict::Unknown`] instead of a hang.
//! * [`check_indexes`]: indexes given to acknowledged writes are unique and grow with real
//!   time; quorum reads and applied-but-refused writes see at least every write acknowledged
//!   before they began.
//! * [`check_watch`]: a recursive watcher saw every acknowledged change of its prefix exactly
//!   once, in index order, nothing that definitely failed, and no change twice.
//!
//! Outcomes ([`Outcome`]): `Ok` (applied, with what the answer said), `Failed` (a store error:
//! the command went through the log and its condition did not hold - an observation of the
//! state, with no effect), `NotApplied` (definitely not applied and nothing observed: dropped)
//! and `Unknown` (timeouts, cut connections, error 300 "may or may not have been applied": the
//! operation may take effect at any moment after its call, or never - its return is at
//! infinity and it need not be linearized at all).
#![allow(dead_code)]

use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;

/// Nanoseconds since the start of a run (a monotonic clock).
pub type Time = u64;

/// What a client asked for, on one key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Unconditional write (v2 `PUT value=`, v1 set).
    Set { value: String },
    /// Write only if absent (v2 `prevExist=false`): error 105 when present.
    Create { value: String },
    /// Compare-and-swap on the value and/or the index: 101 when the comparison fails, 100
    /// when the key is absent. v1 TestAndSet is one on the value.
    Cas {
        prev_value: Option<String>,
        prev_index: Option<u64>,
        value: String,
    },
    /// Compare-and-delete: 101 / 100 as CAS.
    Cad {
        prev_value: Option<String>,
        prev_index: Option<u64>,
    },
    /// A linearizable read (`quorum=true`); a 404 is an `Ok` read of an absent key.
    Read,
}

/// What an acknowledged answer said the previous node was.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Prev {
    /// The answer does not say.
    NotSaid,
    Absent,
    Present {
        value: String,
        index: Option<u64>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Done: the key's value afterwards (None: absent, after a delete or for a 404 read) and
    /// the index the answer gave (a write: the index of its change; a read: the node's
    /// modifiedIndex, 0 when absent), and the previous node if the answer says.
    Ok {
        value: Option<String>,
        index: u64,
        prev: Prev,
    },
    /// A store error (100, 101, 105): applied in the log, condition false, no change. The
    /// current value or index when the error names them.
    Failed {
        code: u16,
        value: Option<String>,
        index: Option<u64>,
    },
    /// Definitely not applied, nothing observed (refused connection, error 300 that says so).
    NotApplied,
    /// May have been applied at any moment after the call, or never.
    Unknown,
}

/// One operation of a history (saved as JSON lines when the checker gives up, see
/// [`save_history`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Record {
    pub client: usize,
    /// How it was sent, for reports ("v2 set", "v1 TestAndSet", ...).
    pub api: Cow<'static, str>,
    pub key: String,
    pub op: Op,
    /// When the request was sent and when its answer (or the giving up) came.
    pub call: Time,
    pub ret: Time,
    pub outcome: Outcome,
    /// `X-Etcd-Index` of the answer, if any.
    pub etcd_index: Option<u64>,
    /// Status, error cause, transport error: for reports only.
    pub detail: String,
}

impl Record {
    pub fn is_write(&self) -> bool {
        !matches!(self.op, Op::Read)
    }

    /// Acknowledged write: the index of its change.
    pub fn acked_index(&self) -> Option<u64> {
        match (&self.op, &self.outcome) {
            (Op::Read, _) => None,
            (_, Outcome::Ok { index, .. }) => Some(*index),
            _ => None,
        }
    }

    /// The value this operation writes, if it writes one.
    pub fn written_value(&self) -> Option<&str> {
        match &self.op {
            Op::Set { value } | Op::Create { value } | Op::Cas { value, .. } => Some(value),
            _ => None,
        }
    }
}

pub fn secs(t: Time) -> String {
    format!("{:.6}s", t as f64 / 1e9)
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cmp = |pv: &Option<String>, pi: &Option<u64>| {
            let mut s = Vec::new();
            if let Some(v) = pv {
                s.push(format!("prevValue={v:?}"));
            }
            if let Some(i) = pi {
                s.push(format!("prevIndex={i}"));
            }
            s.join(" ")
        };
        match self {
            Op::Set { value } => write!(f, "set {value:?}"),
            Op::Create { value } => write!(f, "create {value:?}"),
            Op::Cas {
                prev_value,
                prev_index,
                value,
            } => write!(f, "cas {} -> {value:?}", cmp(prev_value, prev_index)),
            Op::Cad {
                prev_value,
                prev_index,
            } => write!(f, "cad {}", cmp(prev_value, prev_index)),
            Op::Read => write!(f, "read"),
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Ok { value, index, prev } => {
                match value {
                    Some(v) => write!(f, "ok {v:?}@{index}")?,
                    None if *index > 0 => write!(f, "ok deleted@{index}")?,
                    None => write!(f, "ok absent")?,
                }
                match prev {
                    Prev::NotSaid => Ok(()),
                    Prev::Absent => write!(f, " (prev: absent)"),
                    Prev::Present { value, index } => write!(
                        f,
                        " (prev: {value:?}@{})",
                        index.map_or("?".to_string(), |i| i.to_string())
                    ),
                }
            }
            Outcome::Failed { code, value, index } => {
                write!(f, "failed {code}")?;
                if let Some(v) = value {
                    write!(f, " (current {v:?})")?;
                }
                if let Some(i) = index {
                    write!(f, " (current index {i})")?;
                }
                Ok(())
            }
            Outcome::NotApplied => write!(f, "not applied"),
            Outcome::Unknown => write!(f, "unknown"),
        }
    }
}

impl std::fmt::Display for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "c{} {} {} {} -> {} [{} .. {}]",
            self.client,
            self.api,
            self.key,
            self.op,
            self.outcome,
            secs(self.call),
            if matches!(self.outcome, Outcome::Unknown) {
                "?".to_string()
            } else {
                secs(self.ret)
            }
        )?;
        if !self.detail.is_empty() {
            write!(f, " ({})", self.detail)?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// the register model

/// The register: absent, or (value id, index of the value; 0 = not known, as after a write
/// whose answer never came).
type State = Option<(u32, u64)>;

/// One operation, ready for the model: values interned.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum MOp {
    Set(u32),
    Create(u32),
    Cas(Option<u32>, Option<u64>, u32),
    Cad(Option<u32>, Option<u64>),
    Read,
}

#[derive(Clone, Debug)]
enum MPrev {
    NotSaid,
    Absent,
    Present(u32, Option<u64>),
}

#[derive(Clone, Debug)]
enum MOut {
    Ok(Option<u32>, u64, MPrev),
    Failed(u16, Option<u32>, Option<u64>),
    Unknown,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Cmp {
    Yes,
    No,
    /// The index of the current value is not known (its write's answer never came).
    Maybe,
}

fn compare(pv: Option<u32>, pi: Option<u64>, v: u32, i: u64) -> Cmp {
    if pv.is_some_and(|p| p != v) {
        return Cmp::No;
    }
    match pi {
        None => Cmp::Yes,
        Some(_) if i == 0 => Cmp::Maybe,
        Some(p) if p == i => Cmp::Yes,
        Some(_) => Cmp::No,
    }
}

fn index_fits(known: u64, seen: u64) -> bool {
    known == 0 || known == seen
}

fn prev_fits(prev: &MPrev, st: &State) -> bool {
    match (prev, st) {
        (MPrev::NotSaid, _) => true,
        (MPrev::Absent, None) => true,
        (MPrev::Present(pv, pi), Some((v, i))) => pv == v && pi.is_none_or(|p| index_fits(*i, p)),
        _ => false,
    }
}

/// The state after `op` with outcome `out` in state `st`, if the model allows it. For an
/// operation of unknown outcome only an effect is returned: taking effect without changing
/// anything is the same as never taking effect, which is always allowed.
fn step(st: &State, op: &MOp, out: &MOut) -> Option<State> {
    match out {
        MOut::Ok(value, index, prev) => {
            let index = *index;
            match op {
                MOp::Read => match (value, st) {
                    (None, None) => Some(None),
                    (Some(v), Some((cur, i))) if v == cur && index_fits(*i, index) => {
                        Some(Some((*v, index)))
                    }
                    _ => None,
                },
                MOp::Set(v) => prev_fits(prev, st).then_some(Some((*v, index))),
                MOp::Create(v) => {
                    (st.is_none() && prev_fits(prev, st)).then_some(Some((*v, index)))
                }
                MOp::Cas(pv, pi, v) => {
                    let (cur, i) = (*st)?;
                    (compare(*pv, *pi, cur, i) != Cmp::No && prev_fits(prev, st))
                        .then_some(Some((*v, index)))
                }
                MOp::Cad(pv, pi) => {
                    let (cur, i) = (*st)?;
                    (compare(*pv, *pi, cur, i) != Cmp::No && prev_fits(prev, st)).then_some(None)
                }
            }
        }
        MOut::Failed(code, cur_value, cur_index) => match (code, st) {
            (100, None) => Some(None),
            (105, Some(_)) => Some(*st),
            (101, Some((cur, i))) => {
                let cmp = match op {
                    MOp::Cas(pv, pi, _) | MOp::Cad(pv, pi) => compare(*pv, *pi, *cur, *i),
                    _ => return None,
                };
                if cmp == Cmp::Yes
                    || cur_value.is_some_and(|v| v != *cur)
                    || cur_index.is_some_and(|ci| !index_fits(*i, ci))
                {
                    return None;
                }
                // The error names the current index: now it is known.
                Some(Some((
                    *cur,
                    if *i == 0 { cur_index.unwrap_or(0) } else { *i },
                )))
            }
            _ => None,
        },
        MOut::Unknown => match op {
            MOp::Read => None,
            MOp::Set(v) => Some(Some((*v, 0))),
            MOp::Create(v) => st.is_none().then_some(Some((*v, 0))),
            MOp::Cas(pv, pi, v) => {
                let (cur, i) = (*st)?;
                (compare(*pv, *pi, cur, i) != Cmp::No).then_some(Some((*v, 0)))
            }
            MOp::Cad(pv, pi) => {
                let (cur, i) = (*st)?;
                (compare(*pv, *pi, cur, i) != Cmp::No).then_some(None)
            }
        },
    }
}

// ---------------------------------------------------------------------------------------
// the search

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// Not linearizable: an explanation (the longest linearizable prefix found, the operation
    /// that could not follow it, and what was pending then).
    Violation(String),
    /// The step bound was reached before an answer.
    Unknown(String),
}

/// Default step bound for [`check_key`].
pub const MAX_STEPS: u64 = 5_000_000;

const NIL: usize = usize::MAX;

/// The one value id of all values never seen (see [`check_key`]).
const UNSEEN: u32 = 0;

/// 128-bit pseudo-random numbers for Zobrist hashing of the linearized set: the cache keeps
/// (hash of the set, state) instead of the set itself, so a step costs O(1). (Two different
/// sets sharing a hash would prune a branch wrongly; with 128 bits and at most `MAX_STEPS`
/// entries the odds are below 1e-20.)
fn zobrist(i: usize) -> u128 {
    let mut x = (i as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut next = || {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    (u128::from(next()) << 64) | u128::from(next())
}

/// Is the history of one key linearizable? `hist` may hold other keys' records: only `key`'s
/// are checked. `NotApplied` operations and reads of unknown outcome are left out (neither
/// changes nor observes anything); writes of unknown outcome are reduced as the comments in
/// `search` say.
pub fn check_key(key: &str, hist: &[Record], max_steps: u64) -> Verdict {
    search(key, hist, max_steps, true, &mut Reduced::default())
}

/// How much the reductions of [`check_key`] had to work with in one history.
#[derive(Debug, Default, Clone, Copy)]
pub struct Reduced {
    /// Distinct values made one (`UNSEEN`).
    pub unseen_values: usize,
    /// Operations of unknown outcome with an earlier member of their class.
    pub later_members: usize,
}

/// [`check_key`], also saying how much its reductions had to work with.
pub fn check_key_reduced(key: &str, hist: &[Record], max_steps: u64) -> (Verdict, Reduced) {
    let mut r = Reduced::default();
    (search(key, hist, max_steps, true, &mut r), r)
}

/// [`check_key`] without the reductions for operations of unknown outcome (values never
/// seen made one, a class's members taken in call order): the plain search, for tests that
/// compare the two.
pub fn check_key_unreduced(key: &str, hist: &[Record], max_steps: u64) -> Verdict {
    search(key, hist, max_steps, false, &mut Reduced::default())
}

fn search(
    key: &str,
    hist: &[Record],
    max_steps: u64,
    reduce: bool,
    reduced: &mut Reduced,
) -> Verdict {
    let recs: Vec<&Record> = hist
        .iter()
        .filter(|r| r.key == key)
        .filter(|r| match r.outcome {
            Outcome::NotApplied => false,
            Outcome::Unknown => r.is_write(),
            _ => true,
        })
        .collect();
    // A value that only operations of unknown outcome write, and that no answer and no
    // compare ever names, is never seen: the model cannot tell such values apart, so they
    // all become one, `UNSEEN`. Then writes of them are interchangeable, see below.
    let mut seen: HashSet<&str> = HashSet::new();
    for r in &recs {
        let unknown = matches!(r.outcome, Outcome::Unknown);
        match &r.op {
            Op::Set { value } | Op::Create { value } if !unknown => {
                seen.insert(value);
            }
            Op::Cas {
                prev_value, value, ..
            } => {
                seen.extend(prev_value.as_deref());
                if !unknown {
                    seen.insert(value);
                }
            }
            Op::Cad { prev_value, .. } => seen.extend(prev_value.as_deref()),
            _ => {}
        }
        match &r.outcome {
            Outcome::Ok { value, prev, .. } => {
                seen.extend(value.as_deref());
                if let Prev::Present { value, .. } = prev {
                    seen.insert(value);
                }
            }
            Outcome::Failed { value, .. } => seen.extend(value.as_deref()),
            Outcome::NotApplied | Outcome::Unknown => {}
        }
    }
    let mut values: HashMap<String, u32> = HashMap::new();
    let mut names: Vec<String> = vec!["(a value never seen)".to_string()];
    let mut unseen: HashSet<String> = HashSet::new();
    let mut intern = |s: &str| -> u32 {
        if reduce && !seen.contains(s) {
            unseen.insert(s.to_string());
            return UNSEEN;
        }
        if let Some(&id) = values.get(s) {
            return id;
        }
        let id = names.len() as u32;
        names.push(s.to_string());
        values.insert(s.to_string(), id);
        id
    };
    let ops: Vec<(MOp, MOut)> = recs
        .iter()
        .map(|r| {
            let op = match &r.op {
                Op::Set { value } => MOp::Set(intern(value)),
                Op::Create { value } => MOp::Create(intern(value)),
                Op::Cas {
                    prev_value,
                    prev_index,
                    value,
                } => MOp::Cas(
                    prev_value.as_deref().map(&mut intern),
                    *prev_index,
                    intern(value),
                ),
                Op::Cad {
                    prev_value,
                    prev_index,
                } => MOp::Cad(prev_value.as_deref().map(&mut intern), *prev_index),
                Op::Read => MOp::Read,
            };
            let out = match &r.outcome {
                Outcome::Ok { value, index, prev } => MOut::Ok(
                    value.as_deref().map(&mut intern),
                    *index,
                    match prev {
                        Prev::NotSaid => MPrev::NotSaid,
                        Prev::Absent => MPrev::Absent,
                        Prev::Present { value, index } => MPrev::Present(intern(value), *index),
                    },
                ),
                Outcome::Failed { code, value, index } => {
                    MOut::Failed(*code, value.as_deref().map(&mut intern), *index)
                }
                Outcome::Unknown | Outcome::NotApplied => MOut::Unknown,
            };
            (op, out)
        })
        .collect();
    let n = ops.len();
    let known = |i: usize| !matches!(ops[i].1, MOut::Unknown);

    // Entries: (time, 0 = call / 1 = return, op). A call and a return at the same instant
    // count as overlapping (the call first).
    let mut entries: Vec<(Time, u8, usize)> = Vec::with_capacity(2 * n);
    for (i, r) in recs.iter().enumerate() {
        entries.push((r.call, 0, i));
        if known(i) {
            entries.push((r.ret.max(r.call), 1, i));
        }
    }
    entries.sort();
    let m = entries.len();
    if m == 0 {
        return Verdict::Linearizable;
    }
    // A doubly linked list over the entries; `m` is the head sentinel.
    let mut next = vec![NIL; m + 1];
    let mut prev = vec![NIL; m + 1];
    next[m] = 0;
    prev[0] = m;
    for i in 0..m {
        if i + 1 < m {
            next[i] = i + 1;
            prev[i + 1] = i;
        }
    }
    let mut ret_at = vec![NIL; n];
    for (pos, e) in entries.iter().enumerate() {
        if e.1 == 1 {
            ret_at[e.2] = pos;
        }
    }
    let unlink = |x: usize, next: &mut Vec<usize>, prev: &mut Vec<usize>| {
        let (p, nx) = (prev[x], next[x]);
        next[p] = nx;
        if nx != NIL {
            prev[nx] = p;
        }
    };
    let relink = |x: usize, next: &mut Vec<usize>, prev: &mut Vec<usize>| {
        let (p, nx) = (prev[x], next[x]);
        next[p] = x;
        if nx != NIL {
            prev[nx] = x;
        }
    };
    let z: Vec<u128> = (0..n).map(zobrist).collect();
    // Operations of unknown outcome that are the same operation (the same kind, compare and
    // value - values never seen are one value) form a class, its members in call order, and
    // the search linearizes a class's members in that order only: a linearization that
    // takes a later member where an earlier one is still free stays valid with the earlier
    // one in its place (called earlier, no return to respect, the same effect), so nothing
    // is lost, while k free members no longer make k! orders of the same states.
    let mut class = vec![NIL; n];
    let mut rank = vec![0usize; n];
    let mut taken: Vec<usize> = Vec::new();
    let mut class_of: HashMap<&MOp, usize> = HashMap::new();
    for e in &entries {
        let i = e.2;
        if reduce && e.1 == 0 && !known(i) {
            let c = *class_of.entry(&ops[i].0).or_insert_with(|| {
                taken.push(0);
                taken.len() - 1
            });
            class[i] = c;
            rank[i] = taken[c];
            taken[c] += 1;
        }
    }
    taken.iter_mut().for_each(|t| *t = 0);
    reduced.unseen_values = unseen.len();
    reduced.later_members = rank.iter().filter(|&&r| r > 0).count();

    struct Frame {
        pos: usize,
        state: State,
    }
    let mut stack: Vec<Frame> = Vec::new();
    let mut cache: HashSet<(u128, State)> = HashSet::new();
    let mut state: State = None;
    let mut lin_hash: u128 = 0;
    let total_known = (0..n).filter(|&i| known(i)).count();
    let mut left = total_known;
    let mut steps: u64 = 0;
    // The deepest point reached, for the report: ops linearized (in order), the state then,
    // and the operation whose return stopped the search there.
    let mut best: (usize, Vec<usize>, State, usize) = (0, Vec::new(), None, NIL);
    let mut entry = next[m];
    loop {
        if left == 0 {
            return Verdict::Linearizable;
        }
        steps += 1;
        if steps > max_steps {
            return Verdict::Unknown(format!(
                "key {key}: no answer after {max_steps} steps ({n} operations, {} of unknown outcome)",
                (0..n).filter(|&i| !known(i)).count()
            ));
        }
        if entry != NIL && entries[entry].1 == 0 {
            let i = entries[entry].2;
            let c = class[i];
            // An operation of unknown outcome is taken only when it is its class's next
            // member.
            let stepped = if c == NIL || rank[i] == taken[c] {
                step(&state, &ops[i].0, &ops[i].1)
            } else {
                None
            };
            if let Some(s) = stepped {
                let h = lin_hash ^ z[i];
                if cache.insert((h, s)) {
                    if c != NIL {
                        taken[c] += 1;
                    }
                    stack.push(Frame { pos: entry, state });
                    state = s;
                    lin_hash = h;
                    unlink(entry, &mut next, &mut prev);
                    if ret_at[i] != NIL {
                        unlink(ret_at[i], &mut next, &mut prev);
                        left -= 1;
                    }
                    entry = next[m];
                    continue;
                }
            }
            entry = next[entry];
        } else {
            // A return whose operation is not linearized (or the end): back up.
            let linearized_known = total_known - left;
            if linearized_known > best.0 || (best.3 == NIL && entry != NIL) {
                best = (
                    linearized_known,
                    stack.iter().map(|f| entries[f.pos].2).collect(),
                    state,
                    if entry == NIL { NIL } else { entries[entry].2 },
                );
            }
            let Some(f) = stack.pop() else {
                return Verdict::Violation(explain(key, &recs, &names, &ops, &entries, &best));
            };
            let i = entries[f.pos].2;
            if ret_at[i] != NIL {
                relink(ret_at[i], &mut next, &mut prev);
                left += 1;
            }
            if class[i] != NIL {
                taken[class[i]] -= 1;
            }
            relink(f.pos, &mut next, &mut prev);
            state = f.state;
            lin_hash ^= z[i];
            entry = next[f.pos];
        }
    }
}

fn show_state(st: &State, names: &[String]) -> String {
    match st {
        None => "absent".to_string(),
        Some((v, 0)) => format!("{:?}@? (index not known)", names[*v as usize]),
        Some((v, i)) => format!("{:?}@{i}", names[*v as usize]),
    }
}

fn explain(
    key: &str,
    recs: &[&Record],
    names: &[String],
    ops: &[(MOp, MOut)],
    entries: &[(Time, u8, usize)],
    best: &(usize, Vec<usize>, State, usize),
) -> String {
    let (count, order, state, stuck) = best;
    let total = ops.iter().filter(|o| !matches!(o.1, MOut::Unknown)).count();
    let mut s = format!(
        "key {key}: not linearizable ({} operations, {} of unknown outcome).\n\
         Longest linearizable prefix: {count} of {total} operations of known outcome, leaving \
         the key {}.\n",
        ops.len(),
        ops.len() - total,
        show_state(state, names)
    );
    let from = order.len().saturating_sub(8);
    let _ = writeln!(s, "Its last operations, in linearization order:");
    for &i in &order[from..] {
        let _ = writeln!(s, "  {}", recs[i]);
    }
    if *stuck != NIL {
        let r = recs[*stuck];
        let _ = writeln!(
            s,
            "Then nothing can be linearized before this operation returns:\n  {r} - {}\nPending then (called before it returned, not linearized):",
            match step(state, &ops[*stuck].0, &ops[*stuck].1) {
                Some(_) => "fits the state, but what must follow it does not",
                None => "does not fit the state",
            }
        );
        let done: HashSet<usize> = order.iter().copied().collect();
        for &(t, kind, i) in entries {
            if kind == 0 && t <= r.ret && !done.contains(&i) && i != *stuck {
                let why = match step(state, &ops[i].0, &ops[i].1) {
                    Some(_) => "fits the state, but nothing after it does",
                    None => "does not fit the state",
                };
                let _ = writeln!(s, "  {} - {why}", recs[i]);
            }
        }
    }
    s
}

// ---------------------------------------------------------------------------------------
// all keys

/// Saves `key`'s records of `hist` as JSON lines (one record per line) to `path`, so a
/// history the checker could not decide, or found wrong, can be checked again without the
/// run that made it ([`load_history`]).
pub fn save_history(path: &std::path::Path, key: &str, hist: &[Record]) -> std::io::Result<()> {
    let mut out = String::new();
    for r in hist.iter().filter(|r| r.key == key) {
        out.push_str(&serde_json::to_string(r).map_err(std::io::Error::other)?);
        out.push('\n');
    }
    std::fs::write(path, out)
}

/// Reads a history saved by [`save_history`].
pub fn load_history(text: &str) -> Result<Vec<Record>, String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(n, l)| serde_json::from_str(l).map_err(|e| format!("line {}: {e}", n + 1)))
        .collect()
}

/// The verdicts for every key of a history, keys in order.
pub fn check_all(hist: &[Record], max_steps: u64) -> BTreeMap<String, Verdict> {
    let keys: std::collections::BTreeSet<&str> = hist.iter().map(|r| r.key.as_str()).collect();
    keys.into_iter()
        .map(|k| (k.to_string(), check_key(k, hist, max_steps)))
        .collect()
}

// ---------------------------------------------------------------------------------------
// indexes

/// Indexes of acknowledged writes are unique and grow with real time: a write acknowledged
/// before another began has the smaller index. Answers that show the store's index
/// (`X-Etcd-Index` of quorum reads and of writes refused by the store after going through the
/// log) show at least the index of every write acknowledged before they began. Returns the
/// violations found.
pub fn check_indexes(hist: &[Record]) -> Vec<String> {
    let mut out = Vec::new();
    let mut by_index: HashMap<u64, &Record> = HashMap::new();
    for r in hist {
        if let Some(i) = r.acked_index()
            && let Some(other) = by_index.insert(i, r)
        {
            out.push(format!(
                "two acknowledged writes got index {i}:\n  {other}\n  {r}"
            ));
        }
    }
    // Acknowledged writes by return time, with the largest index returned so far.
    let mut acked: Vec<(Time, u64, &Record)> = hist
        .iter()
        .filter_map(|r| r.acked_index().map(|i| (r.ret, i, r)))
        .collect();
    acked.sort_by_key(|a| (a.0, a.1));
    let mut best: Vec<(u64, &Record)> = Vec::with_capacity(acked.len());
    for &(_, i, r) in &acked {
        match best.last() {
            Some(&(b, _)) if b >= i => best.push(*best.last().unwrap()),
            _ => best.push((i, r)),
        }
    }
    let before = |t: Time| -> Option<(u64, &Record)> {
        let n = acked.partition_point(|a| a.0 < t);
        (n > 0).then(|| best[n - 1])
    };
    for r in hist {
        let Some((max, w)) = before(r.call) else {
            continue;
        };
        if let Some(i) = r.acked_index() {
            if i <= max {
                out.push(format!(
                    "write acknowledged with index {i}, not above index {max} of a write acknowledged before it began:\n  {w}\n  {r}"
                ));
            }
        } else if let (Some(ei), true) = (
            r.etcd_index,
            matches!(
                (&r.op, &r.outcome),
                (Op::Read, Outcome::Ok { .. }) | (_, Outcome::Failed { .. })
            ),
        ) && ei < max
        {
            out.push(format!(
                "answer with X-Etcd-Index {ei}, below index {max} of a write acknowledged before it began:\n  {w}\n  {r}"
            ));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// watches

/// One event a watcher received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEvent {
    pub index: u64,
    pub action: String,
    pub key: String,
    pub value: Option<String>,
}

/// What a recursive watcher on `prefix` received: `events` in arrival order, and `gaps`
/// (inclusive index ranges it could not see: it got error 401 - the history window of 1000
/// events had moved past it - and restarted later). Checked against the history: events
/// come in increasing index order, each at most once; every acknowledged write under the
/// prefix (outside the gaps) is there at its index, with its key and value; every set,
/// create or swap event carries the value of a write that was acknowledged or of unknown
/// outcome (never one that definitely failed), and no value shows up twice (values are
/// unique per write: twice would be a write applied twice); a delete event matches a
/// compare-and-delete acknowledged at that index or of unknown outcome. Events of keys
/// under the prefix that no client wrote (`other_keys` decides which keys are not the
/// clients': TTL keys, say) are only checked for order.
pub fn check_watch(
    prefix: &str,
    events: &[WatchEvent],
    gaps: &[(u64, u64)],
    hist: &[Record],
    other_keys: impl Fn(&str) -> bool,
) -> Vec<String> {
    let mut out = Vec::new();
    for w in events.windows(2) {
        if w[1].index <= w[0].index {
            out.push(format!(
                "watch events out of order or repeated: {:?} then {:?}",
                w[0], w[1]
            ));
        }
    }
    let in_gap = |i: u64| gaps.iter().any(|&(a, b)| a <= i && i <= b);
    let by_index: HashMap<u64, &WatchEvent> = events.iter().map(|e| (e.index, e)).collect();
    let mine = |k: &str| k.starts_with(prefix) && !other_keys(k);
    for r in hist.iter().filter(|r| mine(&r.key)) {
        let Some(i) = r.acked_index() else { continue };
        if in_gap(i) {
            continue;
        }
        match by_index.get(&i) {
            None => out.push(format!(
                "the watcher never saw the acknowledged change at index {i}:\n  {r}"
            )),
            Some(e) => {
                let fits = e.key == r.key
                    && match r.written_value() {
                        Some(v) => e.value.as_deref() == Some(v),
                        None => e.action == "compareAndDelete",
                    };
                if !fits {
                    out.push(format!(
                        "the watcher saw {e:?} at index {i}, where this change was acknowledged:\n  {r}"
                    ));
                }
            }
        }
    }
    let mut writers: HashMap<&str, &Record> = HashMap::new();
    for r in hist.iter().filter(|r| mine(&r.key)) {
        if let Some(v) = r.written_value() {
            writers.insert(v, r);
        }
    }
    let mut seen_values: HashMap<&str, u64> = HashMap::new();
    for e in events.iter().filter(|e| mine(&e.key)) {
        match e.action.as_str() {
            "set" | "create" | "compareAndSwap" | "update" => {
                let Some(v) = e.value.as_deref() else {
                    out.push(format!("watch event without a value: {e:?}"));
                    continue;
                };
                if let Some(first) = seen_values.insert(v, e.index) {
                    out.push(format!(
                        "value {v:?} written twice: at index {first} and at {} ({e:?})",
                        e.index
                    ));
                }
                match writers.get(v) {
                    None => out.push(format!("the watcher saw a value nobody wrote: {e:?}")),
                    Some(r) if r.key != e.key => out.push(format!(
                        "{e:?} shows a value written to another key:\n  {r}"
                    )),
                    Some(r) => match &r.outcome {
                        Outcome::Ok { .. } | Outcome::Unknown => {}
                        _ => out.push(format!(
                            "the watcher saw the change of a write that failed: {e:?}\n  {r}"
                        )),
                    },
                }
            }
            "compareAndDelete" => {
                let ok = hist.iter().any(|r| {
                    r.key == e.key
                        && matches!(r.op, Op::Cad { .. })
                        && match r.outcome {
                            Outcome::Ok { index, .. } => index == e.index,
                            Outcome::Unknown => true,
                            _ => false,
                        }
                });
                if !ok {
                    out.push(format!(
                        "the watcher saw a delete no client may have made: {e:?}"
                    ));
                }
            }
            _ => out.push(format!("unexpected watch event: {e:?}")),
        }
    }
    out
}
