//! Jepsen-style tests: concurrent clients run random operations on a few contended keys of
//! a 3- or 5-member cluster (the real binary, every peer link through a proxy of
//! `common/proxy.rs`) while a nemesis kills (`kill -9`) and restarts, pauses (SIGSTOP /
//! SIGCONT), partitions, and replaces members. The recorded history is then checked:
//! linearizability per key against a register (`common/checker.rs`), indexes unique and
//! growing with real time, a recursive watcher that saw every acknowledged change exactly
//! once in index order, TTL keys that expired exactly once at the same index on every member.
//! And the same workload with plain (non-quorum) reads sent to a partitioned member must be
//! caught serving stale data, so the checker cannot silently become a no-op.
//!
//! Short by default (CI: each run a few tens of seconds, every fault kind once - a leader
//! fault hits a follower when the leader is the member kept out of faults);
//! `CHAOS_SECONDS=1800` runs each cluster that long. Every run prints its seed first
//! (`CHAOS_SEED=<n>` replays the same choices) and a table row at the end, also appended to
//! `target/tmp/chaos-table.md`. See `docs/testing-faults.md`.

#[macro_use]
mod common;
use common::{checker, cluster as cluster_common, proxy};

mod checker_tests {
    //! Hand-made histories the checker must accept or reject, and random histories of a
    //! simulated register.
    use super::checker::*;

    const T: u64 = 1_000_000; // a millisecond, in the history's nanoseconds

    fn rec(client: usize, op: Op, call: u64, ret: u64, outcome: Outcome) -> Record {
        Record {
            client,
            api: "test".into(),
            key: "/k".into(),
            op,
            call: call * T,
            ret: ret * T,
            outcome,
            etcd_index: None,
            detail: String::new(),
        }
    }
    fn set(v: &str) -> Op {
        Op::Set { value: v.into() }
    }
    fn create(v: &str) -> Op {
        Op::Create { value: v.into() }
    }
    fn cas(p: &str, v: &str) -> Op {
        Op::Cas {
            prev_value: Some(p.into()),
            prev_index: None,
            value: v.into(),
        }
    }
    fn cas_i(p: u64, v: &str) -> Op {
        Op::Cas {
            prev_value: None,
            prev_index: Some(p),
            value: v.into(),
        }
    }
    fn cad(p: &str) -> Op {
        Op::Cad {
            prev_value: Some(p.into()),
            prev_index: None,
        }
    }
    fn ok(v: &str, i: u64) -> Outcome {
        Outcome::Ok {
            value: Some(v.into()),
            index: i,
            prev: Prev::NotSaid,
        }
    }
    fn ok_prev(v: &str, i: u64, pv: &str, pi: u64) -> Outcome {
        Outcome::Ok {
            value: Some(v.into()),
            index: i,
            prev: Prev::Present {
                value: pv.into(),
                index: Some(pi),
            },
        }
    }
    fn absent() -> Outcome {
        Outcome::Ok {
            value: None,
            index: 0,
            prev: Prev::NotSaid,
        }
    }
    fn deleted(i: u64) -> Outcome {
        Outcome::Ok {
            value: None,
            index: i,
            prev: Prev::NotSaid,
        }
    }
    fn failed(code: u16) -> Outcome {
        Outcome::Failed {
            code,
            value: None,
            index: None,
        }
    }

    fn verdict(h: &[Record]) -> Verdict {
        check_key("/k", h, MAX_STEPS)
    }

    #[track_caller]
    fn must_pass(h: &[Record]) {
        match verdict(h) {
            Verdict::Linearizable => {}
            v => panic!("should be linearizable: {v:?}"),
        }
    }

    #[track_caller]
    fn must_fail(h: &[Record]) -> String {
        match verdict(h) {
            Verdict::Violation(why) => why,
            v => panic!("should be a violation: {v:?}"),
        }
    }

    #[test]
    fn checker_read_that_misses_an_earlier_acknowledged_write_fails() {
        let why = must_fail(&[
            rec(1, set("a"), 0, 10, ok("a", 2)),
            rec(2, Op::Read, 20, 30, absent()),
        ]);
        assert!(why.contains("c2 test /k read -> ok absent"), "{why}");
        // Overlapping, either order is fine.
        must_pass(&[
            rec(1, set("a"), 0, 10, ok("a", 2)),
            rec(2, Op::Read, 5, 30, absent()),
        ]);
        // A read that saw the write must see it with the index the write was given.
        must_fail(&[
            rec(1, set("a"), 0, 10, ok("a", 2)),
            rec(2, Op::Read, 20, 30, ok("a", 3)),
        ]);
    }

    #[test]
    fn checker_lost_acknowledged_write_fails() {
        must_fail(&[
            rec(1, set("a"), 0, 10, ok("a", 2)),
            rec(2, set("b"), 20, 30, ok("b", 3)),
            rec(3, Op::Read, 40, 50, ok("a", 2)),
        ]);
        // ... unless the writes overlap with the read.
        must_pass(&[
            rec(1, set("a"), 0, 10, ok("a", 2)),
            rec(2, set("b"), 20, 45, ok("b", 3)),
            rec(3, Op::Read, 40, 50, ok("a", 2)),
        ]);
    }

    #[test]
    fn checker_two_cas_from_the_same_value_both_succeeding_fails() {
        let start = rec(1, set("a"), 0, 10, ok("a", 2));
        must_fail(&[
            start.clone(),
            rec(2, cas("a", "b"), 20, 30, ok("b", 3)),
            rec(3, cas("a", "c"), 21, 31, ok("c", 4)),
        ]);
        must_fail(&[
            start.clone(),
            rec(2, cas_i(2, "b"), 20, 30, ok("b", 3)),
            rec(3, cas_i(2, "c"), 21, 31, ok("c", 4)),
        ]);
        // One wins, the other fails: fine, in either order of return.
        must_pass(&[
            start.clone(),
            rec(2, cas("a", "b"), 20, 30, ok("b", 3)),
            rec(3, cas("a", "c"), 21, 29, failed(101)),
        ]);
        // A failure that names the current value must name the right one.
        must_fail(&[
            start,
            rec(2, cas("a", "b"), 20, 30, ok("b", 3)),
            rec(
                3,
                cas("a", "c"),
                40,
                50,
                Outcome::Failed {
                    code: 101,
                    value: Some("a".into()),
                    index: None,
                },
            ),
        ]);
    }

    #[test]
    fn checker_indeterminate_write_may_or_may_not_have_happened() {
        let base = [
            rec(1, set("a"), 0, 10, ok("a", 2)),
            rec(2, set("b"), 20, 25, Outcome::Unknown),
        ];
        // It happened (long after its call: the unknown outcome has no return).
        let mut h = base.to_vec();
        h.push(rec(3, Op::Read, 40, 50, ok("a", 2)));
        h.push(rec(3, Op::Read, 60, 70, ok("b", 3)));
        must_pass(&h);
        // It never happened.
        let mut h = base.to_vec();
        h.push(rec(3, Op::Read, 40, 50, ok("a", 2)));
        h.push(rec(3, Op::Read, 60, 70, ok("a", 2)));
        must_pass(&h);
        // But it cannot happen and then be undone.
        let mut h = base.to_vec();
        h.push(rec(3, Op::Read, 40, 50, ok("b", 3)));
        h.push(rec(3, Op::Read, 60, 70, ok("a", 2)));
        must_fail(&h);
        // Nor happen before it was sent.
        must_fail(&[
            rec(1, set("a"), 0, 10, ok("a", 2)),
            rec(3, Op::Read, 12, 15, ok("b", 3)),
            rec(2, set("b"), 20, 25, Outcome::Unknown),
        ]);
        // Definitely not applied: as if never sent.
        must_fail(&[
            rec(1, set("a"), 0, 10, ok("a", 2)),
            rec(2, set("b"), 20, 25, Outcome::NotApplied),
            rec(3, Op::Read, 40, 50, ok("b", 3)),
        ]);
    }

    #[test]
    fn checker_prev_index_cas_after_a_write_of_unknown_index() {
        // The unknown write's index is learnt from the CAS that names it.
        must_pass(&[
            rec(1, set("a"), 0, 10, Outcome::Unknown),
            rec(2, cas_i(7, "b"), 20, 30, ok_prev("b", 8, "a", 7)),
            rec(3, Op::Read, 40, 50, ok("b", 8)),
        ]);
        // A read pins the index: a CAS naming another one cannot succeed afterwards.
        must_fail(&[
            rec(1, set("a"), 0, 10, Outcome::Unknown),
            rec(3, Op::Read, 15, 18, ok("a", 6)),
            rec(2, cas_i(7, "b"), 20, 30, ok("b", 8)),
        ]);
        // An answer's previous node must be the state it replaced.
        must_fail(&[
            rec(1, set("a"), 0, 10, ok("a", 2)),
            rec(2, set("b"), 20, 30, ok_prev("b", 3, "x", 2)),
        ]);
    }

    #[test]
    fn checker_create_and_delete() {
        must_pass(&[
            rec(1, create("a"), 0, 10, ok("a", 2)),
            rec(2, create("b"), 5, 15, failed(105)),
            rec(3, cad("a"), 20, 30, deleted(3)),
            rec(2, cad("a"), 40, 50, failed(100)),
            rec(1, create("c"), 40, 50, ok("c", 4)),
            rec(2, Op::Read, 60, 70, ok("c", 4)),
        ]);
        // Create succeeding on a present key.
        must_fail(&[
            rec(1, create("a"), 0, 10, ok("a", 2)),
            rec(2, create("b"), 20, 30, ok("b", 3)),
        ]);
        // 105 on an absent key.
        must_fail(&[rec(1, create("a"), 0, 10, failed(105))]);
        // Compare-and-delete of an absent key succeeding.
        must_fail(&[
            rec(1, create("a"), 0, 10, ok("a", 2)),
            rec(3, cad("a"), 20, 30, deleted(3)),
            rec(3, cad("a"), 40, 50, deleted(4)),
        ]);
        // A delete of unknown outcome explains a later create.
        must_pass(&[
            rec(1, create("a"), 0, 10, ok("a", 2)),
            rec(3, cad("a"), 20, 30, Outcome::Unknown),
            rec(1, create("b"), 40, 50, ok("b", 4)),
        ]);
    }

    #[test]
    fn checker_step_bound_gives_unknown_instead_of_hanging() {
        // 30 writes of unknown outcome whose values some compare names (so they are not
        // interchangeable), each of which may have happened, in any order, and a read no
        // order explains: the search would try them all.
        let mut h = vec![rec(1, set("a"), 0, 10, ok("a", 2))];
        for c in 0..30 {
            let v = format!("u{c}");
            h.push(rec(c, set(&v), 20, 21, Outcome::Unknown));
            h.push(rec(c + 30, cad(&v), 20, 21, Outcome::Unknown));
        }
        h.push(rec(99, Op::Read, 100, 110, ok("zz", 99)));
        match check_key("/k", &h, 10_000) {
            Verdict::Unknown(_) => {}
            v => panic!("want Unknown, got {v:?}"),
        }
    }

    #[test]
    fn checker_decides_many_writes_of_unknown_outcome_whose_values_nobody_saw() {
        // The same shape with values nobody saw, as when a member is cut off and every
        // write sent to it times out: such writes of the same kind are interchangeable, and
        // the search takes them in call order only. 40 of them, of four kinds.
        const STEPS: u64 = 2_000_000;
        let build = |read: Outcome| {
            let mut h = vec![rec(1, set("a"), 0, 10, ok("a", 2))];
            for c in 0..40 {
                let v = format!("u{c}");
                let op = match c % 4 {
                    0 => set(&v),
                    1 => create(&v),
                    2 => cas("a", &v),
                    _ => cas_i(2, &v),
                };
                h.push(rec(
                    c + 2,
                    op,
                    20 + c as u64 % 7,
                    21 + c as u64,
                    Outcome::Unknown,
                ));
            }
            h.push(rec(99, Op::Read, 300, 310, read));
            h
        };
        let decided = |h: &[Record], want_violation: bool| match check_key("/k", h, STEPS) {
            Verdict::Violation(_) if want_violation => {}
            Verdict::Linearizable if !want_violation => {}
            v => panic!("want a violation: {want_violation}, got {v:?}"),
        };
        // Nothing explains "zz", or absent (nothing here deletes).
        decided(&build(ok("zz", 99)), true);
        decided(&build(absent()), true);
        // "a": none of them took effect.
        decided(&build(ok("a", 2)), false);
        // A read of one of them: "u36" was a plain set, so it may have taken effect last;
        // "u37" was a create, which "a" being there always refused.
        decided(&build(ok("u36", 77)), false);
        decided(&build(ok("u37", 77)), true);
        // The unreduced search cannot decide the first within the same bound.
        match check_key_unreduced("/k", &build(ok("zz", 99)), STEPS) {
            Verdict::Unknown(_) => {}
            v => panic!("want Unknown from the unreduced search, got {v:?}"),
        }
    }

    #[test]
    fn checker_saved_histories_read_back_the_same() {
        let mut h = simulate(7, 4, 200);
        h[3].outcome = Outcome::Unknown;
        h[5].outcome = ok_prev("x", 9, "y", 8);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.jsonl");
        save_history(&path, "/k", &h).unwrap();
        let back = load_history(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(back.len(), h.len());
        for (a, b) in h.iter().zip(&back) {
            assert_eq!(
                (a.client, &a.api, &a.key, &a.op, a.call, a.ret, &a.outcome),
                (b.client, &b.api, &b.key, &b.op, b.call, b.ret, &b.outcome)
            );
            assert_eq!((a.etcd_index, &a.detail), (b.etcd_index, &b.detail));
        }
        assert_eq!(verdict(&h), verdict(&back));
        assert!(load_history("{\"client\": 1}").is_err());
    }

    #[test]
    fn checker_index_order() {
        let mut a = rec(1, set("a"), 0, 10, ok("a", 5));
        let b = rec(2, set("b"), 20, 30, ok("b", 4));
        assert_eq!(check_indexes(&[a.clone(), b.clone()]).len(), 1);
        a.outcome = ok("a", 4);
        let v = check_indexes(&[a.clone(), rec(2, set("b"), 5, 30, ok("b", 4))]);
        assert!(
            v.iter().any(|s| s.contains("two acknowledged writes")),
            "{v:?}"
        );
        a.outcome = ok("a", 3);
        assert!(check_indexes(&[a.clone(), b.clone()]).is_empty());
        let mut r = rec(3, Op::Read, 40, 50, ok("b", 4));
        r.etcd_index = Some(3);
        assert_eq!(check_indexes(&[a, b, r]).len(), 1);
    }

    #[test]
    fn checker_watch() {
        let h = vec![
            rec(1, set("a"), 0, 10, ok("a", 2)),
            rec(2, set("b"), 20, 30, ok("b", 3)),
            rec(
                3,
                set("c"),
                20,
                30,
                Outcome::Failed {
                    code: 300,
                    value: None,
                    index: None,
                },
            ),
            rec(3, cad("b"), 40, 50, deleted(4)),
        ];
        let ev = |i: u64, action: &str, v: Option<&str>| WatchEvent {
            index: i,
            action: action.into(),
            key: "/k".into(),
            value: v.map(String::from),
        };
        let good = vec![
            ev(2, "set", Some("a")),
            ev(3, "set", Some("b")),
            ev(4, "compareAndDelete", None),
        ];
        let none = |_: &str| false;
        assert!(check_watch("/", &good, &[], &h, none).is_empty());
        // Missing, unless in a gap.
        let missing = vec![good[0].clone(), good[2].clone()];
        assert_eq!(check_watch("/", &missing, &[], &h, none).len(), 1);
        assert!(check_watch("/", &missing, &[(3, 3)], &h, none).is_empty());
        // Twice.
        let twice = vec![
            good[0].clone(),
            good[1].clone(),
            good[1].clone(),
            good[2].clone(),
        ];
        assert!(!check_watch("/", &twice, &[], &h, none).is_empty());
        // A write that failed shows up.
        let mut failed_shows = good.clone();
        failed_shows.push(ev(5, "set", Some("c")));
        assert_eq!(check_watch("/", &failed_shows, &[], &h, none).len(), 1);
    }

    // -----------------------------------------------------------------------------------
    // random histories of a simulated register

    use crate::common::rng::Rng;

    /// `n` operations from `clients` clients on one register, each taking effect at a random
    /// moment between its call and its return; some writes' answers are lost (unknown).
    fn simulate(seed: u64, clients: usize, n: usize) -> Vec<Record> {
        let mut rng = Rng::new(seed);
        // Each client: a chain of operations; (call, effect point, return).
        let mut planned: Vec<(u64, u64, u64, usize)> = Vec::new();
        for c in 0..clients {
            let mut t = rng.below(50);
            for _ in 0..n / clients {
                let call = t;
                let eff = call + 1 + rng.below(30);
                let ret = eff + 1 + rng.below(30);
                planned.push((eff, call, ret, c));
                t = ret + 1 + rng.below(10);
            }
        }
        planned.sort();
        let mut state: Option<(String, u64)> = None;
        let mut index = 1u64;
        let mut out = Vec::new();
        for (k, &(_, call, ret, c)) in planned.iter().enumerate() {
            let v = format!("v{k}");
            let pick = rng.below(6);
            let guess = |rng: &mut Rng, state: &Option<(String, u64)>| match state {
                Some((cur, i)) if rng.below(3) > 0 => (cur.clone(), *i),
                _ => (
                    format!("v{}", rng.below(k as u64 + 1)),
                    rng.below(index + 1),
                ),
            };
            let (op, outcome) = match pick {
                0 => (
                    Op::Read,
                    match &state {
                        Some((cur, i)) => ok(cur, *i),
                        None => absent(),
                    },
                ),
                1 => {
                    index += 1;
                    state = Some((v.clone(), index));
                    (set(&v), ok(&v, index))
                }
                2 => {
                    if state.is_none() {
                        index += 1;
                        state = Some((v.clone(), index));
                        (create(&v), ok(&v, index))
                    } else {
                        (create(&v), failed(105))
                    }
                }
                3 | 4 => {
                    let (pv, pi) = guess(&mut rng, &state);
                    let op = if pick == 3 {
                        cas(&pv, &v)
                    } else {
                        cas_i(pi, &v)
                    };
                    match &state {
                        None => (op, failed(100)),
                        Some((cur, i)) if (pick == 3 && *cur == pv) || (pick == 4 && *i == pi) => {
                            index += 1;
                            state = Some((v.clone(), index));
                            (op, ok(&v, index))
                        }
                        Some(_) => (op, failed(101)),
                    }
                }
                _ => {
                    let (pv, _) = guess(&mut rng, &state);
                    match &state {
                        None => (cad(&pv), failed(100)),
                        Some((cur, _)) if *cur == pv => {
                            index += 1;
                            state = None;
                            (cad(&pv), deleted(index))
                        }
                        Some(_) => (cad(&pv), failed(101)),
                    }
                }
            };
            // Lose some answers (the write still happened, or - for failed ones - had no
            // effect anyway).
            let outcome = if !matches!(op, Op::Read) && rng.below(40) == 0 {
                Outcome::Unknown
            } else {
                outcome
            };
            out.push(rec(c, op, call, ret, outcome));
        }
        out.sort_by_key(|r| r.call);
        out
    }

    /// Make about one write in `one_in` of unknown outcome (its answer lost; it took effect
    /// or had none anyway).
    fn lose_answers(h: &mut [Record], rng: &mut Rng, one_in: u64) {
        for r in h.iter_mut() {
            if r.is_write() && rng.below(one_in) == 0 {
                r.outcome = Outcome::Unknown;
            }
        }
    }

    /// Steps allowed for a simulated history of 2,000 operations by 8 clients.
    const STEPS_FOR_2000: u64 = 200_000;

    #[test]
    fn checker_accepts_random_linearizable_histories() {
        // Within a step bound far below MAX_STEPS: memoization keeps the search of a
        // long, busy history short (an Unknown verdict here would mean it does not).
        for seed in 0..20 {
            let h = simulate(seed, 8, 2000);
            match check_key("/k", &h, STEPS_FOR_2000) {
                Verdict::Linearizable => {}
                v => panic!("seed {seed}: {v:?}"),
            }
        }
    }

    #[test]
    fn checker_reductions_agree_with_the_plain_search() {
        // Small random histories, half of their writes of unknown outcome, half of them
        // then given a read of some value written anywhere in the history: the reduced
        // search and the plain one must give the same verdict on every one.
        let (mut lin, mut not) = (0, 0);
        // Histories where values were made one, and where a class had two members or more.
        let (mut merged, mut ordered) = (0, 0);
        for seed in 0..3000 {
            let mut rng = Rng::new(seed);
            let mut h = simulate(seed, 3, 12);
            lose_answers(&mut h, &mut rng, 2);
            if rng.below(2) == 0 {
                // (value, index) of a write: its answer's, or any index for one of
                // unknown outcome.
                let values: Vec<(String, u64)> = h
                    .iter()
                    .filter_map(|r| match &r.outcome {
                        Outcome::Ok {
                            value: Some(v),
                            index,
                            ..
                        } if r.is_write() => Some((v.clone(), *index)),
                        Outcome::Unknown => r.written_value().map(|v| (v.to_string(), 99)),
                        _ => None,
                    })
                    .collect();
                if let Some(r) = h.iter_mut().rev().find(|r| !r.is_write())
                    && !values.is_empty()
                {
                    let (v, i) = &values[rng.below(values.len() as u64) as usize];
                    r.outcome = ok(v, *i);
                }
            }
            let want = check_key_unreduced("/k", &h, 10_000_000);
            let (got, reduced) = check_key_reduced("/k", &h, 10_000_000);
            merged += usize::from(reduced.unseen_values >= 2);
            ordered += usize::from(reduced.later_members >= 1);
            match (&want, &got) {
                (Verdict::Linearizable, Verdict::Linearizable) => lin += 1,
                (Verdict::Violation(_), Verdict::Violation(_)) => not += 1,
                _ => panic!("seed {seed}: plain {want:?}, reduced {got:?}\n{h:#?}"),
            }
        }
        eprintln!(
            "{lin} linearizable, {not} not; values made one in {merged}, classes of two or more in {ordered}"
        );
        assert!(lin > 500 && not > 500, "{lin} linearizable, {not} not");
        assert!(
            merged > 500 && ordered > 500,
            "the reductions had work in {merged} and {ordered} histories only"
        );
    }

    #[test]
    fn checker_decides_random_histories_with_many_writes_of_unknown_outcome() {
        // A quarter of the writes of unknown outcome (they all took effect): the reduced
        // search decides every one within MAX_STEPS (the plain one gives up on seed 1, and
        // on 7 of 10 with a third).
        for seed in 0..10 {
            let mut rng = Rng::new(seed + 1000);
            let mut h = simulate(seed, 7, 2000);
            lose_answers(&mut h, &mut rng, 4);
            match check_key("/k", &h, MAX_STEPS) {
                Verdict::Linearizable => {}
                v => panic!("seed {seed}: {v:?}"),
            }
        }
    }

    #[test]
    fn checker_rejects_random_histories_with_one_stale_read() {
        let mut caught = 0;
        for seed in 0..20 {
            let mut h = simulate(seed, 8, 2000);
            // Make a late read return the value of a write acknowledged long before.
            let Some(w) = h.iter().position(|r| {
                matches!(r.op, Op::Set { .. }) && matches!(r.outcome, Outcome::Ok { .. })
            }) else {
                continue;
            };
            let (wv, wi, wret) = match &h[w].outcome {
                Outcome::Ok {
                    value: Some(v),
                    index,
                    ..
                } => (v.clone(), *index, h[w].ret),
                _ => unreachable!(),
            };
            // A read, begun after the second acknowledged write that followed w's return.
            let later: Vec<u64> = h
                .iter()
                .filter(|r| r.call > wret && r.acked_index().is_some() && r.is_write())
                .map(|r| r.ret)
                .take(2)
                .collect();
            let Some(&after) = later.last() else { continue };
            let Some(r) = h
                .iter()
                .position(|r| matches!(r.op, Op::Read) && r.call > after)
            else {
                continue;
            };
            h[r].outcome = ok(&wv, wi);
            match verdict(&h) {
                Verdict::Violation(_) => caught += 1,
                v => panic!("seed {seed}: a stale read went unnoticed: {v:?}"),
            }
        }
        assert!(caught >= 10, "only {caught} histories were mutated");
    }
}

// =======================================================================================
// the cluster runs

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use checker::{Op, Outcome, Prev, Record, Verdict, WatchEvent};
use cluster_common::{Nodes, REQ, call, call_t, member};
use common::Node;
use common::rng::Rng;
use common::{Resp, parse_response, probe_ready};
use proxy::Net;

// ---------------------------------------------------------------------------------------
// randomness and run length

/// The seed of this test process: `CHAOS_SEED`, or the clock.
fn base_seed() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    *SEED.get_or_init(|| common::rng::seed_from_env("CHAOS_SEED"))
}

/// `CHAOS_SECONDS`: long mode, each cluster run lasts that long.
fn long_seconds() -> Option<u64> {
    std::env::var("CHAOS_SECONDS")
        .ok()
        .map(|s| s.trim().parse().expect("CHAOS_SECONDS must be a number"))
}

/// The cluster runs one at a time (each is several processes on a 2-core machine).
fn one_run_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn nanos_since(start: Instant) -> u64 {
    start.elapsed().as_nanos() as u64
}

// ---------------------------------------------------------------------------------------
// a client with one kept-alive connection

/// One request's fate.
enum Answer {
    Resp(Resp),
    /// The request never left (no connection): definitely not applied.
    NotSent(String),
    /// Sent, perhaps partly, and no complete answer: outcome unknown.
    Lost(String),
}

/// An HTTP/1.1 connection kept alive between requests, to one member.
struct Conn {
    addr: String,
    s: Option<TcpStream>,
}

/// Is the (idle) connection still open? A closed one would take the next request and lose
/// it; better to notice now and connect again.
fn still_open(s: &TcpStream) -> bool {
    let mut b = [0u8; 1];
    if s.set_nonblocking(true).is_err() {
        return false;
    }
    let r = s.peek(&mut b);
    let _ = s.set_nonblocking(false);
    matches!(r, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

impl Conn {
    fn new(addr: &str) -> Conn {
        Conn {
            addr: addr.to_string(),
            s: None,
        }
    }

    fn send(&mut self, method: &str, path: &str, body: &str, timeout: Duration) -> Answer {
        if self.s.as_ref().is_some_and(|s| !still_open(s)) {
            self.s = None;
        }
        if self.s.is_none() {
            let sock: std::net::SocketAddr = self.addr.parse().expect("address");
            match TcpStream::connect_timeout(&sock, Duration::from_secs(2)) {
                Ok(s) => {
                    s.set_nodelay(true).ok();
                    self.s = Some(s);
                }
                Err(e) => return Answer::NotSent(format!("connect {}: {e}", self.addr)),
            }
        }
        let s = self.s.as_mut().expect("connected");
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.addr);
        if !body.is_empty() || method == "PUT" || method == "POST" {
            req.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        req.push_str(body);
        s.set_write_timeout(Some(timeout)).ok();
        if let Err(e) = s.write_all(req.as_bytes()) {
            self.s = None;
            return Answer::Lost(format!("write to {}: {e}", self.addr));
        }
        let deadline = Instant::now() + timeout;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 16384];
        loop {
            let now = Instant::now();
            if now >= deadline {
                self.s = None;
                return Answer::Lost(format!("no answer from {} within {timeout:?}", self.addr));
            }
            s.set_read_timeout(Some(deadline - now)).ok();
            match s.read(&mut chunk) {
                Ok(0) => {
                    self.s = None;
                    return match parse_response(&buf, true, false) {
                        Some(r) => Answer::Resp(r),
                        None => Answer::Lost(format!(
                            "{} closed the connection before answering",
                            self.addr
                        )),
                    };
                }
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(r) = parse_response(&buf, false, false) {
                        if r.header("connection")
                            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
                        {
                            self.s = None;
                        }
                        return Answer::Resp(r);
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => {
                    self.s = None;
                    return Answer::Lost(format!("read from {}: {e}", self.addr));
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// operations and how their answers are read

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// `GET ?quorum=true`
    Read,
    /// `GET` without quorum (only in the stale-read run)
    PlainRead,
    Set,
    Create,
    CasValue,
    CasIndex,
    Cad,
    V1TestAndSet,
    /// v1 `POST prevValue=` (present, empty): create, the key must not exist.
    V1Create,
}

/// The mix of the clients' operations (a kind's share = its count here).
const MIX: [Kind; 17] = [
    Kind::Read,
    Kind::Read,
    Kind::Read,
    Kind::Read,
    Kind::Set,
    Kind::Set,
    Kind::Create,
    Kind::Create,
    Kind::CasValue,
    Kind::CasValue,
    Kind::CasIndex,
    Kind::CasIndex,
    Kind::Cad,
    Kind::Cad,
    Kind::V1TestAndSet,
    Kind::V1TestAndSet,
    Kind::V1Create,
];

/// What the client last knew of a key: its value and index (None: absent).
type Known = Option<(String, u64)>;

/// The request for one operation: (api, op, method, path, body).
fn request_for(
    kind: Kind,
    key: &str,
    value: &str,
    known: &Known,
    guess_index: u64,
) -> (&'static str, Op, &'static str, String, String) {
    // A compare needs a value (an empty `prevValue` is error 201 in v2 and means "create" in
    // v1) and an index: when the client does not know them, ones that may well be wrong.
    let (pv, pi) = match known {
        Some((v, i)) => (v.clone(), *i),
        None => (String::new(), 0),
    };
    let pv = if pv.is_empty() {
        format!("{value}-never")
    } else {
        pv
    };
    let pi = if pi == 0 { guess_index } else { pi };
    let form = |pairs: &[(&str, &str)]| common::form_encode(pairs);
    let keys = format!("/v2/keys{key}");
    match kind {
        Kind::Read => (
            "v2 quorum read",
            Op::Read,
            "GET",
            format!("{keys}?quorum=true"),
            String::new(),
        ),
        Kind::PlainRead => ("v2 plain read", Op::Read, "GET", keys, String::new()),
        Kind::Set => (
            "v2 set",
            Op::Set {
                value: value.into(),
            },
            "PUT",
            keys,
            form(&[("value", value)]),
        ),
        Kind::Create => (
            "v2 create",
            Op::Create {
                value: value.into(),
            },
            "PUT",
            keys,
            form(&[("value", value), ("prevExist", "false")]),
        ),
        Kind::CasValue => (
            "v2 cas prevValue",
            Op::Cas {
                prev_value: Some(pv.clone()),
                prev_index: None,
                value: value.into(),
            },
            "PUT",
            keys,
            form(&[("value", value), ("prevValue", &pv)]),
        ),
        Kind::CasIndex => (
            "v2 cas prevIndex",
            Op::Cas {
                prev_value: None,
                prev_index: Some(pi.max(1)),
                value: value.into(),
            },
            "PUT",
            keys,
            form(&[("value", value), ("prevIndex", &pi.max(1).to_string())]),
        ),
        Kind::Cad => (
            "v2 cad prevValue",
            Op::Cad {
                prev_value: Some(pv.clone()),
                prev_index: None,
            },
            "DELETE",
            format!("{keys}?{}", form(&[("prevValue", &pv)])),
            String::new(),
        ),
        Kind::V1TestAndSet => (
            "v1 TestAndSet",
            Op::Cas {
                prev_value: Some(pv.clone()),
                prev_index: None,
                value: value.into(),
            },
            "POST",
            format!("/v1/keys{key}"),
            form(&[("value", value), ("prevValue", &pv)]),
        ),
        Kind::V1Create => (
            "v1 create",
            Op::Create {
                value: value.into(),
            },
            "POST",
            format!("/v1/keys{key}"),
            form(&[("value", value), ("prevValue", "")]),
        ),
    }
}

/// Cause of an error 300 whose write may have been applied.
const MAYBE: &str = "may or may not have been applied";

/// A v2 `[a != b]` compare cause: the current value (for a compare on the value) or index.
fn compare_cause(cause: &str, op: &Op) -> (Option<String>, Option<u64>) {
    let first = cause
        .split(']')
        .next()
        .unwrap_or("")
        .trim_start_matches('[')
        .split(" != ")
        .nth(1)
        .map(str::to_string);
    match op {
        Op::Cas {
            prev_value: Some(_),
            prev_index: None,
            ..
        }
        | Op::Cad {
            prev_value: Some(_),
            prev_index: None,
        } => (first, None),
        Op::Cas {
            prev_value: None,
            prev_index: Some(_),
            ..
        }
        | Op::Cad {
            prev_value: None,
            prev_index: Some(_),
        } => (None, first.and_then(|s| s.parse().ok())),
        _ => (None, None),
    }
}

/// How an answer reads as an outcome; anything outside the API's contract is marked
/// `unexpected:` in the detail (and counted).
fn interpret(kind: Kind, op: &Op, ans: &Answer) -> (Outcome, Option<u64>, String) {
    let is_read = matches!(op, Op::Read);
    let r = match ans {
        Answer::NotSent(e) => return (Outcome::NotApplied, None, e.clone()),
        Answer::Lost(e) => return (Outcome::Unknown, None, e.clone()),
        Answer::Resp(r) => r,
    };
    let etcd_index = r.header("x-etcd-index").and_then(|v| v.parse().ok());
    let unexpected = || {
        let fate = if is_read {
            Outcome::NotApplied
        } else {
            Outcome::Unknown
        };
        (
            fate,
            etcd_index,
            format!("unexpected: {} {}", r.status, r.body.trim()),
        )
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&r.body) else {
        return unexpected();
    };
    let node = |n: &serde_json::Value| -> Option<(String, u64)> {
        Some((
            n["value"].as_str()?.to_string(),
            n["modifiedIndex"].as_u64()?,
        ))
    };
    let prev_of = |n: &serde_json::Value| match node(n) {
        Some((value, index)) => Prev::Present {
            value,
            index: Some(index),
        },
        None => Prev::Absent,
    };
    if (r.status == 200 || r.status == 201) && v.get("errorCode").is_none() {
        if matches!(kind, Kind::V1TestAndSet | Kind::V1Create) {
            let (Some(value), Some(index)) = (v["value"].as_str(), v["index"].as_u64()) else {
                return unexpected();
            };
            let prev = match v["prevValue"].as_str() {
                Some(p) => Prev::Present {
                    value: p.into(),
                    index: None,
                },
                None => Prev::Absent,
            };
            return (
                Outcome::Ok {
                    value: Some(value.into()),
                    index,
                    prev,
                },
                etcd_index,
                String::new(),
            );
        }
        let n = &v["node"];
        let Some(index) = n["modifiedIndex"].as_u64() else {
            return unexpected();
        };
        let value = n["value"].as_str().map(str::to_string);
        let prev = if is_read {
            Prev::NotSaid
        } else {
            prev_of(&v["prevNode"])
        };
        let value = if matches!(op, Op::Cad { .. }) {
            None
        } else {
            value
        };
        return (
            Outcome::Ok { value, index, prev },
            etcd_index,
            String::new(),
        );
    }
    let code = v["errorCode"].as_u64().unwrap_or(0) as u16;
    let cause = v["cause"].as_str().unwrap_or("").to_string();
    let out = match (code, op) {
        (100, Op::Read) => Outcome::Ok {
            value: None,
            index: 0,
            prev: Prev::NotSaid,
        },
        (100, Op::Cas { .. } | Op::Cad { .. }) => Outcome::Failed {
            code,
            value: None,
            index: None,
        },
        (101, Op::Cas { .. } | Op::Cad { .. }) => {
            let (value, index) = if kind == Kind::V1TestAndSet {
                // "TestAndSet: <current>!=<given>"
                let cur = cause
                    .strip_prefix("TestAndSet: ")
                    .and_then(|c| c.split("!=").next())
                    .map(str::to_string);
                (cur, None)
            } else {
                compare_cause(&cause, op)
            };
            Outcome::Failed { code, value, index }
        }
        // v1's create-only set: "TestAndSet: <current>!=" when the key exists.
        (101, Op::Create { .. }) if kind == Kind::V1Create => Outcome::Failed {
            code: 105,
            value: cause
                .strip_prefix("TestAndSet: ")
                .and_then(|c| c.strip_suffix("!="))
                .map(str::to_string),
            index: None,
        },
        (105, Op::Create { .. }) => Outcome::Failed {
            code,
            value: None,
            index: None,
        },
        (300, _) if cause.contains(MAYBE) && !is_read => Outcome::Unknown,
        (300, _) => Outcome::NotApplied,
        _ => return unexpected(),
    };
    (out, etcd_index, format!("{code} {cause}"))
}

// ---------------------------------------------------------------------------------------
// the clients

/// The keys clients work on move to a fresh set every `EPOCH` (`/chaos/e<n>/k<i>`): a few
/// keys at a time keep the contention high, and each key's history stays short enough for
/// the linearizability search.
const EPOCH: Duration = Duration::from_secs(10);
/// Time a client waits for an answer (the server's own bound is 5 s, plus up to 5 s of
/// waiting for the node to be ready).
const OP_TIMEOUT: Duration = Duration::from_secs(12);

/// Where a client sends its requests.
#[derive(Clone)]
enum Target {
    /// A random member, chosen again after every broken connection.
    Any(Arc<Mutex<Vec<String>>>),
    Fixed(String),
}

struct Client {
    id: usize,
    rng: Rng,
    kinds: Vec<Kind>,
    target: Target,
    keys: usize,
    start: Instant,
    stop: Arc<AtomicBool>,
    /// Writes acknowledged so far, by all clients.
    acked: Arc<AtomicU64>,
}

impl Client {
    fn run(mut self) -> Vec<Record> {
        let mut out = Vec::new();
        let mut conn: Option<Conn> = None;
        let mut known: HashMap<String, Known> = HashMap::new();
        let mut top_index = 1u64;
        let mut n = 0u64;
        while !self.stop.load(Ordering::Relaxed) {
            let c = match conn.as_mut() {
                Some(c) => c,
                None => {
                    let addr = match &self.target {
                        Target::Fixed(a) => a.clone(),
                        Target::Any(list) => {
                            let list = list.lock().unwrap().clone();
                            list[self.rng.below(list.len() as u64) as usize].clone()
                        }
                    };
                    conn.insert(Conn::new(&addr))
                }
            };
            let epoch = self.start.elapsed().as_nanos() / EPOCH.as_nanos();
            let key = format!("/chaos/e{epoch}/k{}", self.rng.below(self.keys as u64));
            let kind = self.rng.pick(&self.kinds);
            n += 1;
            let value = format!("c{}-{n}", self.id);
            // Mostly what this client last saw (so compares often succeed), sometimes stale.
            let k = known.get(&key).cloned().flatten();
            let k = if self.rng.below(5) == 0 { None } else { k };
            let guess = top_index.saturating_sub(self.rng.below(4));
            let (api, op, method, path, body) = request_for(kind, &key, &value, &k, guess);
            let call = nanos_since(self.start);
            let ans = c.send(method, &path, &body, OP_TIMEOUT);
            let ret = nanos_since(self.start);
            match ans {
                Answer::Resp(_) => {}
                Answer::Lost(_) => conn = None,
                // A member that is down: do not hammer it; try another one.
                Answer::NotSent(_) => {
                    conn = None;
                    thread::sleep(Duration::from_millis(20));
                }
            }
            let (outcome, etcd_index, detail) = interpret(kind, &op, &ans);
            if op != Op::Read && matches!(outcome, Outcome::Ok { .. }) {
                self.acked.fetch_add(1, Ordering::Relaxed);
            }
            match &outcome {
                Outcome::Ok { value, index, .. } => {
                    top_index = top_index.max(*index);
                    known.insert(key.clone(), value.clone().map(|v| (v, *index)));
                }
                Outcome::Failed { code: 100, .. } => {
                    known.insert(key.clone(), None);
                }
                Outcome::Failed { value: Some(v), .. } => {
                    let i = known.get(&key).cloned().flatten().map_or(0, |k| k.1);
                    known.insert(key.clone(), Some((v.clone(), i)));
                }
                Outcome::Failed { index: Some(i), .. } => {
                    let v = known.get(&key).cloned().flatten().map(|k| k.0);
                    known.insert(key.clone(), Some((v.unwrap_or_default(), *i)));
                    top_index = top_index.max(*i);
                }
                _ => {}
            }
            out.push(Record {
                client: self.id,
                api: api.into(),
                key,
                op,
                call,
                ret,
                outcome,
                etcd_index,
                detail,
            });
            // A pause between operations: a few clients keep the keys contended without
            // taking all of a small machine's CPU from the members.
            thread::sleep(self.rng.ms(2, 10));
        }
        out
    }
}

// ---------------------------------------------------------------------------------------
// the watcher

/// A recursive watcher on `/chaos`, re-armed after each event with `waitIndex` = the last
/// index + 1, on a member that stays up and is never cut from the majority. Runs until it
/// has seen index `until` (once that is set, non-zero) or the deadline passes.
struct Watcher {
    addr: String,
    from: u64,
    until: Arc<AtomicU64>,
    give_up: Arc<Mutex<Option<Instant>>>,
}

struct Watched {
    events: Vec<WatchEvent>,
    gaps: Vec<(u64, u64)>,
    problems: Vec<String>,
    /// The next index it would have asked for.
    next: u64,
}

impl Watcher {
    fn run(self) -> Watched {
        let mut w = Watched {
            events: Vec::new(),
            gaps: Vec::new(),
            problems: Vec::new(),
            next: self.from,
        };
        let mut conn = Conn::new(&self.addr);
        loop {
            let until = self.until.load(Ordering::Relaxed);
            if until != 0 && w.next > until {
                return w;
            }
            if self
                .give_up
                .lock()
                .unwrap()
                .is_some_and(|t| Instant::now() >= t)
            {
                return w;
            }
            let path = format!(
                "/v2/keys/chaos?wait=true&recursive=true&waitIndex={}",
                w.next
            );
            let r = match conn.send("GET", &path, "", Duration::from_secs(3)) {
                Answer::Resp(r) => r,
                // No event within the timeout: ask again.
                Answer::Lost(_) => continue,
                Answer::NotSent(_) => {
                    thread::sleep(Duration::from_millis(50));
                    continue;
                }
            };
            let v: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_default();
            if r.status == 200 {
                let n = &v["node"];
                let Some(index) = n["modifiedIndex"].as_u64() else {
                    w.problems
                        .push(format!("watch answer without an index: {}", r.body));
                    continue;
                };
                if index < w.next {
                    w.problems.push(format!(
                        "asked for events from {} and got one at {index}: {}",
                        w.next, r.body
                    ));
                }
                w.events.push(WatchEvent {
                    index,
                    action: v["action"].as_str().unwrap_or("").to_string(),
                    key: n["key"].as_str().unwrap_or("").to_string(),
                    value: n["value"].as_str().map(str::to_string),
                });
                w.next = w.next.max(index + 1);
            } else if v["errorCode"] == 401 {
                // "the requested history has been cleared [oldest/asked]"
                let oldest = v["cause"]
                    .as_str()
                    .and_then(|c| c.rsplit('[').next())
                    .and_then(|c| c.split('/').next())
                    .and_then(|c| c.parse::<u64>().ok());
                match oldest {
                    Some(o) if o > w.next => {
                        w.gaps.push((w.next, o - 1));
                        w.next = o;
                    }
                    _ => {
                        w.problems.push(format!("bad 401 answer: {}", r.body));
                        return w;
                    }
                }
            } else {
                w.problems
                    .push(format!("watch: {} {}", r.status, r.body.trim()));
                thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// TTL keys

/// Creates a key with a one-second TTL now and then (`/chaos/ttl/t<n>`), and once it is
/// due asks every member for the key's first event after its creation: it must be the
/// same expiry, at the same index, everywhere.
struct TtlMaker {
    addr: String,
    members: Arc<Mutex<Vec<String>>>,
    start: Instant,
    stop: Arc<AtomicBool>,
    rng: Rng,
}

#[derive(Default)]
struct TtlLog {
    /// (key, index of its creation, when it was created)
    created: Vec<(String, u64, u64)>,
    /// (key, member, (action, index) of the first event after the creation)
    seen: Vec<(String, String, String, u64)>,
    /// Members that could not tell (down, paused, cut off, history moved on).
    unchecked: usize,
}

fn first_event_after(addr: &str, key: &str, created: u64) -> Result<(String, u64), String> {
    let r = call_t(
        addr,
        "GET",
        &format!("/v2/keys{key}?wait=true&waitIndex={}", created + 1),
        "",
        Duration::from_secs(2),
    )?;
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_default();
    match v["node"]["modifiedIndex"].as_u64() {
        Some(i) if r.status == 200 => Ok((v["action"].as_str().unwrap_or("").to_string(), i)),
        _ => Err(format!("{} {}", r.status, r.body.trim())),
    }
}

impl TtlMaker {
    fn run(mut self) -> TtlLog {
        let mut log = TtlLog::default();
        let mut conn = Conn::new(&self.addr);
        let mut pending: Vec<(String, u64, Instant)> = Vec::new();
        let mut n = 0;
        while !self.stop.load(Ordering::Relaxed) {
            n += 1;
            let key = format!("/chaos/ttl/t{n}");
            let body = common::form_encode(&[("value", &format!("t{n}")), ("ttl", "1")]);
            let t = nanos_since(self.start);
            if let Answer::Resp(r) = conn.send("PUT", &format!("/v2/keys{key}"), &body, OP_TIMEOUT)
                && r.status == 201
            {
                let v: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_default();
                if let Some(i) = v["node"]["modifiedIndex"].as_u64() {
                    log.created.push((key.clone(), i, t));
                    pending.push((key, i, Instant::now()));
                }
            }
            // Due a while ago: ask every member.
            let members = self.members.lock().unwrap().clone();
            let (due, later): (Vec<_>, Vec<_>) = pending
                .drain(..)
                .partition(|p| p.2.elapsed() > Duration::from_secs(3));
            pending = later;
            for (key, created, _) in due {
                for m in &members {
                    match first_event_after(m, &key, created) {
                        Ok((action, i)) => log.seen.push((key.clone(), m.clone(), action, i)),
                        Err(_) => log.unchecked += 1,
                    }
                }
            }
            thread::sleep(self.rng.ms(400, 800));
        }
        log
    }
}

/// TTL keys: each expired exactly once (as the watcher saw it), and every member that
/// answered names the same expiry.
fn check_ttl(log: &TtlLog, w: &Watched) -> Vec<String> {
    let mut out = Vec::new();
    let mut expiries: HashMap<&str, Vec<u64>> = HashMap::new();
    for e in &w.events {
        if e.key.starts_with("/chaos/ttl/") && e.action == "expire" {
            expiries.entry(e.key.as_str()).or_default().push(e.index);
        }
    }
    for (key, created, _) in &log.created {
        let got = expiries.get(key.as_str()).cloned().unwrap_or_default();
        if got.len() > 1 {
            out.push(format!("{key} expired {} times: at {got:?}", got.len()));
        }
        if got.is_empty() && !w.gaps.iter().any(|&(_, b)| b > *created) {
            out.push(format!(
                "{key} (created at index {created}) never expired as far as the watcher saw"
            ));
        }
        for (k, m, action, i) in log.seen.iter().filter(|s| s.0 == *key) {
            if action != "expire" || (got.len() == 1 && *i != got[0]) {
                out.push(format!(
                    "{k}: member {m} says its first event after creation was {action} at {i}; the watcher saw expiries at {got:?}"
                ));
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// the cluster and the nemesis

/// Every process started during a run (index = its proxy's index), the current members,
/// and what the nemesis did. Dropped in field order: the processes first, then the proxies.
struct Cluster {
    p: Vec<Node>,
    net: Net,
    members: Vec<usize>,
    /// The member the watcher and the TTL maker talk to: never killed, paused, cut from the
    /// majority or removed.
    immune: usize,
    /// Client addresses of the current members, shared with the clients.
    targets: Arc<Mutex<Vec<String>>>,
    start: Instant,
    log: Mutex<Vec<String>>,
    /// Faults the nemesis applied, by kind.
    counts: BTreeMap<Fault, usize>,
    /// What went wrong outside the checked properties (a removed member that did not exit).
    trouble: Vec<String>,
}

impl Nodes for Cluster {
    const LEADER_TIMEOUT: Duration = Duration::from_secs(3);
    const LISTING_TIMEOUT: Duration = REQ;

    fn nodes(&self) -> &[Node] {
        &self.p
    }

    fn report(&self) -> Option<String> {
        Some(format!(
            "nemesis log:\n{}\n{}",
            self.log.lock().unwrap().join("\n"),
            self.net.stats()
        ))
    }
}

/// How long the cluster may take to be whole again after a fault: generous, as a shared
/// two-core machine can starve the members for many seconds.
const RECOVERY: Duration = Duration::from_secs(120);

/// etcd 2.x's default timing (the binary's own defaults, 50 / 200 ms, are v0.1's): with
/// six debug builds on two loaded cores, a vote can take longer than 200 ms to answer, and
/// elections then fail for a long time. A pause or a partition must outlast the election
/// timeout to depose a leader, hence the nemesis' hold times.
const TIMING: [&str; 4] = ["--heartbeat-interval", "100", "--election-timeout", "1000"];

/// A member that advertises a proxy's address (`peer`) and listens on another port.
fn new_member(name: &str) -> Node {
    member(name).behind_proxy().prepare()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Fault {
    KillLeader,
    KillFollower,
    PauseLeader,
    PauseFollower,
    IsolateLeader,
    IsolateFollower,
    /// Majority / minority, the leader in the minority when it can be.
    Split,
    /// Add a member (`POST /v2/members`, then start it), then remove another one.
    ReplaceMember,
}

const ALL_FAULTS: [Fault; 8] = [
    Fault::KillLeader,
    Fault::KillFollower,
    Fault::PauseLeader,
    Fault::PauseFollower,
    Fault::IsolateLeader,
    Fault::IsolateFollower,
    Fault::Split,
    Fault::ReplaceMember,
];

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::KillLeader => "kill leader",
            Fault::KillFollower => "kill follower",
            Fault::PauseLeader => "pause leader",
            Fault::PauseFollower => "pause follower",
            Fault::IsolateLeader => "isolate leader",
            Fault::IsolateFollower => "isolate follower",
            Fault::Split => "split",
            Fault::ReplaceMember => "replace member",
        }
    }

    /// The same fault on a follower (when the leader is the member kept out of faults).
    fn on_follower(self) -> Fault {
        match self {
            Fault::KillLeader => Fault::KillFollower,
            Fault::PauseLeader => Fault::PauseFollower,
            Fault::IsolateLeader => Fault::IsolateFollower,
            f => f,
        }
    }
}

impl Cluster {
    /// `n` members started together (`--initial-cluster`), each behind its proxy.
    fn start(n: usize, rng: &mut Rng) -> Cluster {
        let mut p: Vec<Node> = (1..=n).map(|i| new_member(&format!("n{i}"))).collect();
        let initial = cluster_common::initial_cluster(&p);
        for x in p.iter_mut() {
            x.args = x.v2_args(&format!("http://{}", x.listen_peer()), &initial, "new");
            x.args.extend(TIMING.map(String::from));
        }
        let pairs: Vec<(String, String)> = p
            .iter()
            .map(|x| (x.peer.clone(), x.listen_peer().to_string()))
            .collect();
        let net = Net::start(&pairs);
        let targets = p.iter().map(|x| x.client.clone()).collect();
        let mut cl = Cluster {
            p,
            net,
            members: (0..n).collect(),
            immune: 0,
            targets: Arc::new(Mutex::new(targets)),
            start: Instant::now(),
            log: Mutex::new(Vec::new()),
            counts: BTreeMap::new(),
            trouble: Vec::new(),
        };
        for i in 0..n {
            cl.p[i].spawn();
            cl.net.set_pid(i, Some(cl.p[i].pid()));
        }
        let took = cl.recover();
        // A follower (so the leader can be hit; the leader moves later, and when it is on
        // the immune member the nemesis hits a follower instead).
        let leader = cl.agreed_leader().unwrap_or_else(|e| fail!(cl, "{e}"));
        let followers: Vec<usize> = (0..n).filter(|&i| i != leader).collect();
        cl.immune = rng.pick(&followers);
        cl.note(format!(
            "{n} members ready after {took:?}; {} is kept out of faults (watcher, TTL keys)",
            cl.p[cl.immune].name
        ));
        cl
    }

    fn note(&self, what: String) {
        let line = format!("[{:8.3}s] {what}", self.start.elapsed().as_secs_f64());
        if std::env::var("CHAOS_VERBOSE").is_ok() {
            eprintln!("{line}");
        }
        self.log.lock().unwrap().push(line);
    }

    fn name(&self, i: usize) -> String {
        self.p[i].name.to_string()
    }

    /// Bounded poll until every member is ready and all name the same leader, a member.
    fn recover(&self) -> Duration {
        self.poll(
            RECOVERY,
            "every member ready and agreeing on a leader",
            || self.agreed_leader(),
        )
        .1
    }

    fn agreed_leader(&self) -> Result<usize, String> {
        let mut seen: Option<String> = None;
        for &i in &self.members {
            probe_ready(self.addr(i), Duration::from_secs(3))
                .map_err(|e| format!("{}: {e}", self.name(i)))?;
            let r = call_t(
                self.addr(i),
                "GET",
                "/v1/leader",
                "",
                Duration::from_secs(3),
            )?;
            if r.status != 200 {
                return Err(format!(
                    "{}: /v1/leader {} {}",
                    self.name(i),
                    r.status,
                    r.body
                ));
            }
            if seen.as_ref().is_some_and(|s| *s != r.body) {
                return Err(format!("leaders differ: {seen:?} vs {}", r.body));
            }
            seen = Some(r.body);
        }
        let url = seen.unwrap_or_default();
        match self.by_peer_url(&url) {
            Some(l) if self.members.contains(&l) => Ok(l),
            _ => Err(format!("leader {url} is not a member")),
        }
    }

    /// Apply one fault (or the follower variant, if the leader is the immune member) for
    /// `hold`, undo it, and wait until the cluster has recovered. Returns the fault applied.
    fn fault(&mut self, want: Fault, rng: &mut Rng, hold: Duration) -> Fault {
        let leader = self.poll(RECOVERY, "a leader", || self.agreed_leader()).0;
        let others: Vec<usize> = self
            .members
            .iter()
            .copied()
            .filter(|&i| i != self.immune)
            .collect();
        let followers: Vec<usize> = others.iter().copied().filter(|&i| i != leader).collect();
        let kind = if leader == self.immune {
            want.on_follower()
        } else {
            want
        };
        let victim = match kind {
            Fault::KillLeader | Fault::PauseLeader | Fault::IsolateLeader => leader,
            _ => rng.pick(&followers),
        };
        let role = |i: usize| if i == leader { "leader" } else { "follower" };
        match kind {
            Fault::KillLeader | Fault::KillFollower => {
                self.note(format!("kill -9 {} ({})", self.name(victim), role(victim)));
                self.p[victim].kill9();
                self.net.set_pid(victim, None);
                thread::sleep(hold);
                // Work-around: on a restart the `info` file's identity wins over the command
                // line, and it derives the peer *listen* port from the advertised peer URL
                // (v0.1 had one port for both), so a node that listens on another port than
                // it advertises (here: behind its proxy) would try to listen on the proxy's
                // port. Without `info` the node takes the same identity from the command line
                // and restarts from its log and snapshot as before (ids live in etcd.redb).
                let _ = std::fs::remove_file(
                    std::path::Path::new(&self.p[victim].data_dir()).join("info"),
                );
                self.p[victim].spawn();
                self.net.set_pid(victim, Some(self.p[victim].pid()));
                self.note(format!("restarted {} from its data dir", self.name(victim)));
            }
            Fault::PauseLeader | Fault::PauseFollower => {
                self.note(format!("SIGSTOP {} ({})", self.name(victim), role(victim)));
                self.p[victim].signal("STOP");
                thread::sleep(hold);
                self.p[victim].signal("CONT");
                self.note(format!("SIGCONT {}", self.name(victim)));
            }
            Fault::IsolateLeader | Fault::IsolateFollower => {
                self.note(format!(
                    "isolate {} ({}) from the others",
                    self.name(victim),
                    role(victim)
                ));
                self.net.cut(victim);
                thread::sleep(hold);
                self.net.heal_all();
                self.note("healed".to_string());
            }
            Fault::Split => {
                let size = (self.members.len() - 1) / 2;
                let mut pool = others.clone();
                let mut minority = Vec::new();
                if leader != self.immune {
                    minority.push(leader);
                    pool.retain(|&i| i != leader);
                }
                while minority.len() < size {
                    let j = rng.below(pool.len() as u64) as usize;
                    minority.push(pool.remove(j));
                }
                let names = |v: &[usize]| {
                    v.iter()
                        .map(|&i| format!("{}{}", self.name(i), if i == leader { "*" } else { "" }))
                        .collect::<Vec<_>>()
                        .join(" ")
                };
                let majority: Vec<usize> = self
                    .members
                    .iter()
                    .copied()
                    .filter(|i| !minority.contains(i))
                    .collect();
                self.note(format!(
                    "split: {} | {} (* = leader)",
                    names(&minority),
                    names(&majority)
                ));
                self.net.split(&[minority]);
                thread::sleep(hold);
                self.net.heal_all();
                self.note("healed".to_string());
            }
            Fault::ReplaceMember => self.replace_member(rng),
        }
        let took = self.recover();
        self.note(format!("recovered after {took:?}"));
        *self.counts.entry(kind).or_default() += 1;
        kind
    }

    /// Add a new member through the members API (as etcd 2.x does: `POST /v2/members`, then
    /// start it with `--initial-cluster-state existing`), then remove another one (never the
    /// immune member; possibly the leader) with `DELETE /v2/members/<id>`: the removed node
    /// must exit on its own.
    fn replace_member(&mut self, rng: &mut Rng) {
        let json = [("Content-Type", "application/json")];
        let via = self.immune;
        let slot = self.p.len();
        let mut x = new_member(&format!("n{}", slot + 1));
        assert_eq!(self.net.add(&x.peer, x.listen_peer()), slot);
        let body = format!(r#"{{"peerURLs":["{}"]}}"#, x.peer_url());
        self.poll(Duration::from_secs(30), "POST /v2/members", || {
            let r = call(self.addr(via), "POST", "/v2/members", &json, &body)?;
            // 409: an earlier try that timed out got through.
            match r.status {
                201 | 409 => Ok(()),
                _ => Err(format!("{} {}", r.status, r.body)),
            }
        });
        let mut initial: Vec<String> = self
            .members
            .iter()
            .map(|&i| format!("{}={}", self.p[i].name, self.p[i].peer_url()))
            .collect();
        initial.push(format!("{}={}", x.name, x.peer_url()));
        x.args = x.v2_args(
            &format!("http://{}", x.listen_peer()),
            &initial.join(","),
            "existing",
        );
        x.args.extend(TIMING.map(String::from));
        x.spawn();
        self.net.set_pid(slot, Some(x.pid()));
        self.p.push(x);
        self.note(format!(
            "added {} (POST /v2/members, then started it)",
            self.name(slot)
        ));
        self.poll(
            Duration::from_secs(60),
            &format!("the new member {} to be ready", self.name(slot)),
            || probe_ready(self.addr(slot), Duration::from_secs(3)),
        );
        self.members.push(slot);
        self.targets
            .lock()
            .unwrap()
            .push(self.addr(slot).to_string());

        let candidates: Vec<usize> = self
            .members
            .iter()
            .copied()
            .filter(|&i| i != via && i != slot)
            .collect();
        let victim = rng.pick(&candidates);
        let peer_url = self.p[victim].peer_url();
        let (id, _) = self.poll(Duration::from_secs(30), "the victim's member id", || {
            let r = call(self.addr(via), "GET", "/v2/members", &[], "")?;
            let v: serde_json::Value = serde_json::from_str(&r.body).map_err(|e| e.to_string())?;
            v["members"]
                .as_array()
                .and_then(|a| {
                    a.iter()
                        .find(|m| m["peerURLs"][0] == peer_url.as_str())
                        .and_then(|m| m["id"].as_str())
                })
                .map(str::to_string)
                .ok_or_else(|| format!("{peer_url} not in {}", r.body))
        });
        let was_leader = self.agreed_leader().ok() == Some(victim);
        self.poll(Duration::from_secs(30), "DELETE /v2/members/<id>", || {
            let r = call(
                self.addr(via),
                "DELETE",
                &format!("/v2/members/{id}"),
                &[],
                "",
            )?;
            // 404/410: an earlier try that timed out got through.
            match r.status {
                204 | 404 | 410 => Ok(()),
                _ => Err(format!("{} {}", r.status, r.body)),
            }
        });
        self.note(format!(
            "removed {}{} (DELETE /v2/members/{id})",
            self.name(victim),
            if was_leader { ", the leader" } else { "" }
        ));
        self.members.retain(|&i| i != victim);
        let gone = self.addr(victim).to_string();
        self.targets.lock().unwrap().retain(|a| *a != gone);
        match self.p[victim].wait_exit(Duration::from_secs(20)) {
            Some(st) if st.success() => {}
            Some(st) => self.trouble.push(format!(
                "removed member {} exited with {st:?}",
                self.name(victim)
            )),
            None => {
                self.trouble.push(format!(
                    "removed member {} still running 20 s after its removal",
                    self.name(victim)
                ));
                self.p[victim].kill9();
            }
        }
        self.net.set_pid(victim, None);
    }
}

// ---------------------------------------------------------------------------------------
// a run

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Quorum reads and writes from every client to random members; every fault kind.
    Chaos,
    /// Plain reads sent to one member that the nemesis keeps cutting off; writes to the
    /// others. The checker must find stale reads.
    StaleReads,
}

struct RunCfg {
    name: &'static str,
    members: usize,
    clients: usize,
    keys: usize,
    /// Mixed into the seed, so the runs of one process differ.
    salt: u64,
    mode: Mode,
}

/// What a run found.
struct RunResult {
    /// Linearizability, index, watch and TTL violations, and unexpected answers.
    violations: Vec<String>,
    /// The linearizability verdicts alone.
    lin_violations: usize,
    /// Keys the checker gave up on (step bound).
    gave_up: usize,
    /// For the stale-read run: violations once the plain reads are left out.
    without_plain_reads: usize,
    row: String,
}

fn fault_counts(counts: &BTreeMap<Fault, usize>) -> String {
    let total: usize = counts.values().sum();
    let each: Vec<String> = counts
        .iter()
        .map(|(f, n)| format!("{} {n}", f.name()))
        .collect();
    format!("{total}: {}", each.join(", "))
}

const TABLE_HEAD: &str = "| run | members | seconds | nemesis events | operations | ok | failed | indeterminate | violations | checker gave up | seed |\n|---|---|---|---|---|---|---|---|---|---|---|\n";

/// Stops the background threads of a run when dropped (also when the run fails).
struct Halt {
    flags: Vec<Arc<AtomicBool>>,
    give_up: Arc<Mutex<Option<Instant>>>,
}

impl Drop for Halt {
    fn drop(&mut self) {
        for f in &self.flags {
            f.store(true, Ordering::Relaxed);
        }
        let mut g = self.give_up.lock().unwrap_or_else(|e| e.into_inner());
        if g.is_none() {
            *g = Some(Instant::now());
        }
    }
}

fn run(cfg: &RunCfg) -> RunResult {
    let _one = one_run_at_a_time();
    let seed = base_seed();
    eprintln!(
        "{}: CHAOS_SEED={seed}{}",
        cfg.name,
        long_seconds().map_or(String::new(), |s| format!(" CHAOS_SECONDS={s}"))
    );
    let mut rng = Rng::new(seed ^ cfg.salt.wrapping_mul(0x2545_f491_4f6c_dd1d));
    let mut cl = Cluster::start(cfg.members, &mut rng);
    let immune_addr = cl.addr(cl.immune).to_string();
    let start = cl.start;

    // Where the watcher starts: just after everything done so far.
    let r = call_t(&immune_addr, "GET", "/v2/keys/?quorum=true", "", REQ)
        .unwrap_or_else(|e| fail!(cl, "{e}"));
    let from = r
        .header("x-etcd-index")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or_else(|| fail!(cl, "no X-Etcd-Index: {:?}", r.headers))
        + 1;
    let until = Arc::new(AtomicU64::new(0));
    let give_up = Arc::new(Mutex::new(None));
    let watcher = {
        let w = Watcher {
            addr: immune_addr.clone(),
            from,
            until: until.clone(),
            give_up: give_up.clone(),
        };
        thread::spawn(move || w.run())
    };

    // The victim of the stale-read run: a follower other than the immune member.
    let victim = match cfg.mode {
        Mode::Chaos => None,
        Mode::StaleReads => {
            let l = cl.recover();
            let _ = l;
            let leader = cl.agreed_leader().unwrap_or_else(|e| fail!(cl, "{e}"));
            let pick: Vec<usize> = (0..cfg.members)
                .filter(|&i| i != cl.immune && i != leader)
                .collect();
            Some(rng.pick(&pick))
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for id in 0..cfg.clients {
        let (kinds, target) = match victim {
            None => (MIX.to_vec(), Target::Any(cl.targets.clone())),
            Some(v) if id % 2 == 0 => (vec![Kind::PlainRead], Target::Fixed(cl.addr(v).into())),
            Some(v) => {
                let others: Vec<String> = (0..cfg.members)
                    .filter(|&i| i != v)
                    .map(|i| cl.addr(i).to_string())
                    .collect();
                let writes = MIX.iter().copied().filter(|k| *k != Kind::Read).collect();
                (writes, Target::Any(Arc::new(Mutex::new(others))))
            }
        };
        let c = Client {
            id,
            rng: rng.fork(),
            kinds,
            target,
            keys: cfg.keys,
            start,
            stop: stop.clone(),
            acked: acked.clone(),
        };
        clients.push(thread::spawn(move || c.run()));
    }
    let ttl_stop = Arc::new(AtomicBool::new(false));
    let ttl = {
        let t = TtlMaker {
            addr: immune_addr.clone(),
            members: cl.targets.clone(),
            start,
            stop: ttl_stop.clone(),
            rng: rng.fork(),
        };
        thread::spawn(move || t.run())
    };

    // If the run fails half-way, the threads stop too.
    let _halt = Halt {
        flags: vec![stop.clone(), ttl_stop.clone()],
        give_up: give_up.clone(),
    };

    // The nemesis.
    let long = long_seconds();
    let plan: Vec<Fault> = match (cfg.mode, long) {
        (Mode::StaleReads, _) => vec![Fault::IsolateFollower; 3],
        (Mode::Chaos, None) => {
            let mut all = ALL_FAULTS.to_vec();
            for i in (1..all.len()).rev() {
                all.swap(i, rng.below(i as u64 + 1) as usize);
            }
            all
        }
        (Mode::Chaos, Some(_)) => Vec::new(),
    };
    let deadline = long.map(|s| start + Duration::from_secs(s));
    let (hold, quiet) = if long.is_some() {
        ((2200, 6000), (500, 3000))
    } else {
        ((2200, 3500), (300, 1000))
    };
    let mut i = 0;
    loop {
        let want = match deadline {
            Some(d) if Instant::now() >= d => break,
            Some(_) => rng.pick(&ALL_FAULTS),
            None if i >= plan.len() => break,
            None => plan[i],
        };
        i += 1;
        thread::sleep(rng.ms(quiet.0, quiet.1));
        let hold = rng.ms(hold.0, hold.1);
        match victim {
            None => {
                cl.fault(want, &mut rng, hold);
            }
            Some(v) => {
                // Cut off the readers' member, whatever its role now.
                cl.note(format!(
                    "isolate {} (the plain readers' member)",
                    cl.name(v)
                ));
                cl.net.cut(v);
                // Hold the partition until the majority has acknowledged writes the cut-off
                // member cannot know of (a new leader may have to be elected first), and the
                // plain readers have had time to read it.
                let cut_at = Instant::now();
                let before = acked.load(Ordering::Relaxed);
                while cut_at.elapsed() < Duration::from_secs(30)
                    && (acked.load(Ordering::Relaxed) < before + 30 || cut_at.elapsed() < hold)
                {
                    thread::sleep(Duration::from_millis(50));
                }
                let during = acked.load(Ordering::Relaxed) - before;
                thread::sleep(Duration::from_millis(500));
                cl.net.heal_all();
                cl.note(format!(
                    "healed after {:?}; {during} writes acknowledged meanwhile",
                    cut_at.elapsed()
                ));
                cl.recover();
                *cl.counts.entry(Fault::IsolateFollower).or_default() += 1;
            }
        }
    }
    thread::sleep(rng.ms(quiet.0, quiet.1));

    // Stop the clients, let the TTL keys expire, read every key once more, and bring the
    // watcher up to date.
    stop.store(true, Ordering::Relaxed);
    let mut hist: Vec<Record> = clients
        .into_iter()
        .flat_map(|c| c.join().expect("client thread"))
        .collect();
    ttl_stop.store(true, Ordering::Relaxed);
    let ttl_log = ttl.join().expect("ttl thread");
    cl.poll(Duration::from_secs(30), "the TTL keys to expire", || {
        let r = call_t(
            &immune_addr,
            "GET",
            "/v2/keys/chaos/ttl?quorum=true",
            "",
            REQ,
        )?;
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_default();
        match v["node"]["nodes"].as_array() {
            Some(a) if !a.is_empty() => Err(format!("{} left", a.len())),
            _ => Ok(()),
        }
    });
    let keys: std::collections::BTreeSet<String> = hist.iter().map(|r| r.key.clone()).collect();
    let mut last = Conn::new(&immune_addr);
    for key in keys {
        let op = Op::Read;
        let call = nanos_since(start);
        let ans = last.send("GET", &format!("/v2/keys{key}?quorum=true"), "", OP_TIMEOUT);
        let ret = nanos_since(start);
        let (outcome, etcd_index, detail) = interpret(Kind::Read, &op, &ans);
        hist.push(Record {
            client: 999,
            api: "final quorum read".into(),
            key,
            op,
            call,
            ret,
            outcome,
            etcd_index,
            detail,
        });
    }
    let r = call_t(
        &immune_addr,
        "PUT",
        "/v2/keys/chaos/done",
        "value=done",
        REQ,
    )
    .unwrap_or_else(|e| fail!(cl, "{e}"));
    let done: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_default();
    let Some(done_index) = done["node"]["modifiedIndex"].as_u64() else {
        fail!(cl, "PUT /chaos/done: {} {}", r.status, r.body)
    };
    until.store(done_index, Ordering::Relaxed);
    *give_up.lock().unwrap() = Some(Instant::now() + Duration::from_secs(60));
    let watched = watcher.join().expect("watcher thread");
    let (_, conv) = cl.converge(&cl.members.clone(), "/chaos", Duration::from_secs(60));
    let seconds = start.elapsed().as_secs();

    // The checks.
    hist.sort_by_key(|r| r.call);
    let mut violations = Vec::new();
    let verdicts = checker::check_all(&hist, checker::MAX_STEPS);
    let mut lin_violations = 0;
    let mut gave_up = 0;
    let saved = |key: &str| {
        let name = format!("chaos-history-{seed}{}.jsonl", key.replace('/', "-"));
        let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
        match checker::save_history(&path, key, &hist) {
            Ok(()) => format!("history saved to {}", path.display()),
            Err(e) => format!("history not saved: {e}"),
        }
    };
    for (key, v) in &verdicts {
        // (Stale-reads runs are not linearizable on purpose.)
        if cfg.mode == Mode::Chaos && !matches!(v, Verdict::Linearizable) {
            eprintln!("{key}: {}", saved(key));
        }
        match v {
            Verdict::Linearizable => {}
            Verdict::Violation(why) => {
                lin_violations += 1;
                violations.push(format!("linearizability, {key}: {why}"));
            }
            Verdict::Unknown(why) => {
                gave_up += 1;
                eprintln!("checker gave up: {why}");
            }
        }
    }
    let without_plain_reads = if cfg.mode == Mode::StaleReads {
        let rest: Vec<Record> = hist
            .iter()
            .filter(|r| r.api != "v2 plain read")
            .cloned()
            .collect();
        checker::check_all(&rest, checker::MAX_STEPS)
            .values()
            .filter(|v| matches!(v, Verdict::Violation(_)))
            .count()
    } else {
        0
    };
    let quorum_hist: Vec<Record> = hist
        .iter()
        .filter(|r| r.api != "v2 plain read")
        .cloned()
        .collect();
    violations.extend(
        checker::check_indexes(&quorum_hist)
            .into_iter()
            .map(|v| format!("indexes: {v}")),
    );
    if watched.next <= done_index {
        violations.push(format!(
            "the watcher stopped at index {} before reaching {done_index}",
            watched.next
        ));
    }
    violations.extend(watched.problems.iter().map(|p| format!("watcher: {p}")));
    violations.extend(
        checker::check_watch("/chaos/", &watched.events, &watched.gaps, &hist, |k| {
            k.starts_with("/chaos/ttl/") || k == "/chaos/done"
        })
        .into_iter()
        .map(|v| format!("watch: {v}")),
    );
    violations.extend(
        check_ttl(&ttl_log, &watched)
            .into_iter()
            .map(|v| format!("ttl: {v}")),
    );
    let unexpected: Vec<&Record> = hist
        .iter()
        .filter(|r| r.detail.starts_with("unexpected"))
        .collect();
    violations.extend(unexpected.iter().map(|r| format!("unexpected answer: {r}")));
    violations.extend(cl.trouble.iter().map(|t| format!("nemesis: {t}")));

    // The report.
    let count = |f: &dyn Fn(&Outcome) -> bool| hist.iter().filter(|r| f(&r.outcome)).count();
    let ok = count(&|o| matches!(o, Outcome::Ok { .. }));
    let failed = count(&|o| matches!(o, Outcome::Failed { .. } | Outcome::NotApplied));
    let unknown = count(&|o| matches!(o, Outcome::Unknown));
    let ttl_members = ttl_log
        .seen
        .iter()
        .map(|s| &s.1)
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    eprintln!(
        "{}: {} operations on {} keys ({ok} ok, {failed} failed, {unknown} indeterminate); \
         watcher: {} events, {} gaps; TTL keys: {} created, {} member answers from {ttl_members} \
         members agree, {} not checkable; converged {conv:?} after the end; {}",
        cfg.name,
        hist.len(),
        verdicts.len(),
        watched.events.len(),
        watched.gaps.len(),
        ttl_log.created.len(),
        ttl_log.seen.len(),
        ttl_log.unchecked,
        cl.net.stats()
    );
    eprintln!("nemesis log:\n{}", cl.log.lock().unwrap().join("\n"));
    let row = format!(
        "| {} | {} | {seconds} | {} | {} | {ok} | {failed} | {unknown} | {} | {gave_up} | {seed} |",
        cfg.name,
        cfg.members,
        fault_counts(&cl.counts),
        hist.len(),
        violations.len(),
    );
    eprintln!("{TABLE_HEAD}{row}");
    let table = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("chaos-table.md");
    let new = !table.exists();
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&table)
    {
        let _ = writeln!(f, "{}{row}", if new { TABLE_HEAD } else { "" });
    }
    if cfg.mode == Mode::Chaos && !violations.is_empty() {
        let shown: Vec<&String> = violations.iter().take(10).collect();
        fail!(
            cl,
            "{}: {} violations (seed {seed}); the first ones:\n{}",
            cfg.name,
            violations.len(),
            shown
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n\n")
        );
    }
    RunResult {
        violations,
        lin_violations,
        gave_up,
        without_plain_reads,
        row,
    }
}

// ---------------------------------------------------------------------------------------
// the tests

#[test]
fn chaos_three_members() {
    let r = run(&RunCfg {
        name: "chaos-3",
        members: 3,
        clients: 5,
        keys: 3,
        salt: 3,
        mode: Mode::Chaos,
    });
    assert_eq!(r.gave_up, 0, "the checker gave up on some keys: {}", r.row);
}

#[test]
fn chaos_five_members() {
    let r = run(&RunCfg {
        name: "chaos-5",
        members: 5,
        clients: 7,
        keys: 3,
        salt: 5,
        mode: Mode::Chaos,
    });
    assert_eq!(r.gave_up, 0, "the checker gave up on some keys: {}", r.row);
}

/// The checker is not a no-op: plain reads served by a member cut off from the others
/// return stale data, and the checker must say so - while the same history without those
/// reads (quorum reads and writes) stays linearizable.
#[test]
fn stale_plain_reads_are_caught() {
    let r = run(&RunCfg {
        name: "stale-reads",
        members: 3,
        clients: 6,
        keys: 2,
        salt: 7,
        mode: Mode::StaleReads,
    });
    assert!(
        r.lin_violations > 0,
        "plain reads on a cut-off member went unnoticed: {}",
        r.row
    );
    assert_eq!(
        r.without_plain_reads, 0,
        "without the plain reads the history should be linearizable: {}",
        r.row
    );
    eprintln!(
        "as expected, {} violations ({} keys not linearizable), e.g.:\n{}",
        r.violations.len(),
        r.lin_violations,
        r.violations.first().map(String::as_str).unwrap_or("")
    );
}
