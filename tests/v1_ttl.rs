//! Black-box tests of v1 TTLs: the `expiration`/`ttl` fields, expiry (through the log, one
//! index per expired key, the choices in docs/api.md), `ttl<=0` deletes, clearing a TTL, restarts.

mod common;

use common::*;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

// ---------------------------------------------------------------------------------------
// helpers

const SEC: i128 = 1_000_000_000;

fn now_nanos() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as i128
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parse the `expiration` format: Go's RFC 3339 with nanoseconds in UTC,
/// `YYYY-MM-DDTHH:MM:SS[.fraction]Z`, the fraction 1-9 digits without trailing zeros.
/// Returns Unix nanoseconds; panics on anything else.
fn parse_expiration(s: &str) -> i128 {
    let bad = || -> ! { panic!("not an RFC 3339 UTC timestamp with nanoseconds: {s:?}") };
    let b = s.as_bytes();
    if b.len() < 20 || !s.ends_with('Z') || !s.is_ascii() {
        bad();
    }
    let num = |r: std::ops::Range<usize>| -> i64 {
        let part = &s[r];
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            bad();
        }
        part.parse().unwrap_or_else(|_| bad())
    };
    if b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        bad();
    }
    let (y, mo, d, h, mi, se) = (
        num(0..4),
        num(5..7),
        num(8..10),
        num(11..13),
        num(14..16),
        num(17..19),
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        bad();
    }
    let rest = &s[19..s.len() - 1];
    let frac_nanos: i128 = if rest.is_empty() {
        0
    } else {
        let digits = rest.strip_prefix('.').unwrap_or_else(|| bad());
        if digits.is_empty()
            || digits.len() > 9
            || digits.ends_with('0')
            || !digits.bytes().all(|c| c.is_ascii_digit())
        {
            bad();
        }
        let mut padded = digits.to_string();
        while padded.len() < 9 {
            padded.push('0');
        }
        padded.parse::<i128>().unwrap_or_else(|_| bad())
    };
    let days = days_from_civil(y, mo, d) as i128;
    ((days * 86_400 + (h * 3600 + mi * 60 + se) as i128) * SEC) + frac_nanos
}

fn idx(r: &Resp) -> u64 {
    r.json()["index"]
        .as_u64()
        .unwrap_or_else(|| panic!("no index in {:?}", r.body))
}

fn set(addr: &str, key: &str, value: &str) -> Resp {
    let r = post_form(addr, &format!("/v1/keys/{key}"), &[("value", value)]);
    assert_eq!(r.status, 200, "set {key}: {:?}", r.body);
    r
}

fn set_ttl(addr: &str, key: &str, value: &str, ttl: &str) -> Resp {
    post_form(
        addr,
        &format!("/v1/keys/{key}"),
        &[("value", value), ("ttl", ttl)],
    )
}

fn exp_of(r: &Resp) -> String {
    r.json()["expiration"]
        .as_str()
        .unwrap_or_else(|| panic!("no expiration in {:?}", r.body))
        .to_string()
}

/// The `ttl` of a response that has an `expiration`. Like v0.1 (`json:"ttl,omitempty"`), a
/// remaining TTL that rounds down to 0 is left out of the body, so absent means 0.
fn ttl_of(r: &Resp) -> i64 {
    let j = r.json();
    assert!(j["expiration"].is_string(), "no expiration in {:?}", r.body);
    match &j["ttl"] {
        serde_json::Value::Null => 0,
        t => t
            .as_i64()
            .unwrap_or_else(|| panic!("bad ttl in {:?}", r.body)),
    }
}

fn assert_ok(r: &Resp, expected: &str) {
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.content_type(), Some("application/json"));
    assert_eq!(r.body, expected);
}

fn assert_not_found(r: &Resp, cause: &str) {
    assert_eq!(r.status, 404, "{:?}", r.body);
    assert_eq!(r.content_type(), Some("application/json"));
    assert_eq!(
        r.body.trim_end_matches('\n'),
        format!(r#"{{"errorCode":100,"message":"Key Not Found","cause":"{cause}"}}"#)
    );
}

/// Poll GET until the key answers 404 (up to 3 s after its expiration); checks on the way that
/// it never disappears early and never shows a negative ttl. Returns the 404 answer.
fn wait_expired(addr: &str, key: &str, exp: i128) -> Resp {
    let path = format!("/v1/keys/{key}");
    poll_until(
        Duration::from_nanos(((exp - now_nanos()).max(0) + 3 * SEC) as u64),
        &format!("{key} to expire"),
        || {
            let before = now_nanos();
            let r = get(addr, &path);
            if r.status == 404 {
                assert!(
                    now_nanos() >= exp,
                    "{key} gone {} ms before its expiration",
                    (exp - before) / 1_000_000
                );
                return Some(r);
            }
            assert_eq!(r.status, 200, "{:?}", r.body);
            let ttl = ttl_of(&r);
            assert!(ttl >= 0, "negative ttl {ttl}: {:?}", r.body);
            None
        },
    )
}

/// Wait (bounded) until the wall clock is past `t`.
fn wait_clock_past(t: i128) {
    poll_until(
        Duration::from_nanos(((t - now_nanos()).max(0) + SEC) as u64),
        "the clock",
        || (now_nanos() > t).then_some(()),
    );
}

// ---------------------------------------------------------------------------------------
// tests

#[test]
fn ttl_set_answers_expiration_and_remaining_seconds_rounded_down() {
    let n = Node::start("node0");
    let a = &n.client;
    let before = now_nanos();
    let r = set_ttl(a, "foo", "bar", "5");
    let after = now_nanos();
    let i = idx(&r);
    let exp_s = exp_of(&r);
    let exp = parse_expiration(&exp_s);
    assert!(
        exp >= before + 5 * SEC - 50_000_000 && exp <= after + 5 * SEC + 50_000_000,
        "expiration {exp_s} not 5 s after the request"
    );
    let ttl = ttl_of(&r);
    assert!((4..=5).contains(&ttl), "ttl {ttl}");
    assert_ok(
        &r,
        &format!(
            r#"{{"action":"SET","key":"/foo","value":"bar","newKey":true,"expiration":"{exp_s}","ttl":{ttl},"index":{i}}}"#
        ),
    );

    let g = get(a, "/v1/keys/foo");
    let gttl = ttl_of(&g);
    assert!(gttl <= ttl && gttl >= 3, "ttl {gttl}");
    assert_ok(
        &g,
        &format!(
            r#"{{"action":"GET","key":"/foo","value":"bar","expiration":"{exp_s}","ttl":{gttl},"index":{i}}}"#
        ),
    );

    // A longer TTL: 100 answers 99 (or 100 on a coarse clock).
    let r = set_ttl(a, "long", "x", "100");
    let ttl = ttl_of(&r);
    assert!((99..=100).contains(&ttl), "ttl {ttl}");
    let exp = parse_expiration(&exp_of(&r));
    assert!(exp > now_nanos() + 98 * SEC);
}

#[test]
fn get_shows_a_decreasing_ttl() {
    let n = Node::start("node0");
    let a = &n.client;
    let r = set_ttl(a, "foo", "bar", "5");
    let exp_s = exp_of(&r);
    let exp = parse_expiration(&exp_s);
    let first = ttl_of(&r);
    let mut last = first;
    poll_until(Duration::from_secs(3), "the ttl to drop", || {
        let t0 = now_nanos();
        let g = get(a, "/v1/keys/foo");
        let t1 = now_nanos();
        assert_eq!(g.status, 200, "{:?}", g.body);
        assert_eq!(exp_of(&g), exp_s, "expiration changed");
        let ttl = ttl_of(&g);
        // Rounded down: floor of the remaining time when the server answered.
        let lo = ((exp - t1) / SEC) as i64;
        let hi = ((exp - t0) / SEC) as i64;
        assert!(
            ttl >= lo && ttl <= hi,
            "ttl {ttl} not floor(remaining) in [{lo}, {hi}]"
        );
        assert!(ttl <= last, "ttl went up from {last} to {ttl}");
        last = ttl;
        (ttl < first).then_some(())
    });
}

#[test]
fn key_is_gone_after_expiry_and_expiry_consumes_one_index() {
    let n = Node::start("node0");
    let a = &n.client;
    set(a, "other", "o");
    // Long enough that the GET right after the set finds it even on a slow machine.
    let r = set_ttl(a, "k", "v", "3");
    assert_eq!(r.status, 200, "{:?}", r.body);
    let s = idx(&r);
    let exp = parse_expiration(&exp_of(&r));
    let g = get(a, "/v1/keys/k");
    assert_eq!(g.status, 200, "present right after the set: {:?}", g.body);

    let gone = wait_expired(a, "k", exp);
    assert_not_found(&gone, "get: /k");

    // The expiry took exactly one index.
    let o = get(a, "/v1/keys/other");
    assert_eq!(idx(&o), s + 1, "{:?}", o.body);
    let root = get(a, "/v1/keys/");
    assert!(
        !root.body.contains("\"/k\""),
        "expired key still listed: {}",
        root.body
    );
    let next = set(a, "next", "1");
    assert_eq!(idx(&next), s + 2);
    // Setting it again makes a new key.
    let again = set(a, "k", "w");
    assert_eq!(
        again.body,
        format!(
            r#"{{"action":"SET","key":"/k","value":"w","newKey":true,"index":{}}}"#,
            s + 3
        )
    );
}

#[test]
fn several_keys_expire_with_one_index_each() {
    let n = Node::start("node0");
    let a = &n.client;
    // No key expires before the last set (the indices below assume it), and e/3 goes last.
    let r1 = set_ttl(a, "e/1", "v", "2");
    let r2 = set_ttl(a, "e/2", "v", "2");
    let r3 = set_ttl(a, "e/3", "v", "3");
    let s = idx(&r3);
    let exp = parse_expiration(&exp_of(&r3));
    assert_eq!(idx(&r1) + 2, s);
    assert_eq!(idx(&r2) + 1, s);
    wait_expired(a, "e/3", exp);
    for k in ["e/1", "e/2"] {
        assert_not_found(&get(a, &format!("/v1/keys/{k}")), &format!("get: /{k}"));
    }
    let d = get(a, "/v1/keys/e");
    assert_ok(&d, "[]");
    let next = set(a, "next", "1");
    assert_eq!(idx(&next), s + 4);
}

#[test]
fn ttl_zero_or_negative_deletes() {
    let n = Node::start("node0");
    let a = &n.client;
    let base = idx(&set(a, "base", "b"));

    // Missing key.
    for ttl in ["0", "-1", "-100"] {
        let r = set_ttl(a, "ttl0", "x", ttl);
        assert_not_found(&r, "delete: /ttl0");
    }
    // A directory.
    set(a, "dir/child", "c");
    let r = set_ttl(a, "dir", "x", "0");
    assert_not_found(&r, "delete: /dir");
    assert_eq!(idx(&get(a, "/v1/keys/base")), base + 1);

    // Existing key: deleted, answered like a DELETE.
    set(a, "putkey", "y");
    let r = set_ttl(a, "putkey", "x", "0");
    assert_ok(
        &r,
        &format!(
            r#"{{"action":"DELETE","key":"/putkey","prevValue":"y","index":{}}}"#,
            base + 3
        ),
    );
    assert_not_found(&get(a, "/v1/keys/putkey"), "get: /putkey");
    set(a, "putkey", "y2");
    let r = set_ttl(a, "putkey", "x", "-1");
    assert_ok(
        &r,
        &format!(
            r#"{{"action":"DELETE","key":"/putkey","prevValue":"y2","index":{}}}"#,
            base + 5
        ),
    );
    assert_not_found(&get(a, "/v1/keys/putkey"), "get: /putkey");
}

#[test]
fn delete_of_a_ttl_key_shows_its_expiration() {
    let n = Node::start("node0");
    let a = &n.client;
    let r = set_ttl(a, "t", "v", "100");
    let i = idx(&r);
    let exp_s = exp_of(&r);
    let d = delete(a, "/v1/keys/t");
    assert_ok(
        &d,
        &format!(
            r#"{{"action":"DELETE","key":"/t","prevValue":"v","expiration":"{exp_s}","index":{}}}"#,
            i + 1
        ),
    );
    // ttl=0 on a TTL key is a delete of a TTL key too.
    let r = set_ttl(a, "t", "v", "100");
    let exp_s = exp_of(&r);
    let d = set_ttl(a, "t", "w", "0");
    assert_ok(
        &d,
        &format!(
            r#"{{"action":"DELETE","key":"/t","prevValue":"v","expiration":"{exp_s}","index":{}}}"#,
            i + 3
        ),
    );
}

#[test]
fn set_without_ttl_makes_the_key_permanent() {
    let n = Node::start("node0");
    let a = &n.client;
    // The TTLs are long enough that the overwrites below land before the old expirations.
    let r = set_ttl(a, "k", "v", "3");
    let i = idx(&r);
    let r = set(a, "k", "w");
    assert_ok(
        &r,
        &format!(
            r#"{{"action":"SET","key":"/k","prevValue":"v","value":"w","index":{}}}"#,
            i + 1
        ),
    );

    // A new TTL replaces the old one.
    let r = set_ttl(a, "k2", "v", "3");
    let exp1 = parse_expiration(&exp_of(&r));
    let r = set_ttl(a, "k2", "v2", "100");
    let j = idx(&r);
    assert_eq!(j, i + 3);
    let exp2_s = exp_of(&r);
    assert!(parse_expiration(&exp2_s) > exp1 + 90 * SEC);
    assert_eq!(r.json()["prevValue"], "v");

    // Well past both old expirations (k's is the earlier one), both keys are still there
    // and nothing was expired (the index did not move).
    wait_clock_past(exp1 + 1_500_000_000);
    let g = get(a, "/v1/keys/k");
    assert_ok(
        &g,
        &format!(r#"{{"action":"GET","key":"/k","value":"w","index":{j}}}"#),
    );
    let g = get(a, "/v1/keys/k2");
    assert_eq!(g.status, 200, "{:?}", g.body);
    assert_eq!(exp_of(&g), exp2_s);
    assert_eq!(idx(&g), j);
}

#[test]
fn test_and_set_with_ttl() {
    let n = Node::start("node0");
    let a = &n.client;
    let i = idx(&set(a, "testAndSet", "two"));
    let r = post_form(
        a,
        "/v1/keys/testAndSet",
        &[("prevValue", "two"), ("value", "four"), ("ttl", "10")],
    );
    let exp_s = exp_of(&r);
    parse_expiration(&exp_s);
    let ttl = ttl_of(&r);
    assert!((9..=10).contains(&ttl), "ttl {ttl}");
    assert_ok(
        &r,
        &format!(
            r#"{{"action":"SET","key":"/testAndSet","prevValue":"two","value":"four","expiration":"{exp_s}","ttl":{ttl},"index":{}}}"#,
            i + 1
        ),
    );
    let g = get(a, "/v1/keys/testAndSet");
    assert_eq!(exp_of(&g), exp_s);

    // A bad ttl is refused before the comparison.
    let r = post_form(
        a,
        "/v1/keys/testAndSet",
        &[("prevValue", "nope"), ("value", "x"), ("ttl", "x")],
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["errorCode"], 202);

    // A TestAndSet without ttl makes it permanent again.
    let r = post_form(
        a,
        "/v1/keys/testAndSet",
        &[("prevValue", "four"), ("value", "five")],
    );
    assert_ok(
        &r,
        &format!(
            r#"{{"action":"SET","key":"/testAndSet","prevValue":"four","value":"five","index":{}}}"#,
            i + 2
        ),
    );

    // Create-only (empty prevValue) with a TTL, then expiry.
    let r = post_form(
        a,
        "/v1/keys/fresh",
        &[("prevValue", ""), ("value", "f"), ("ttl", "1")],
    );
    let exp_s = exp_of(&r);
    // ttl=1 rounds down to 0 by the time it is answered, and a zero ttl is omitted.
    assert_eq!(ttl_of(&r), 0);
    assert_ok(
        &r,
        &format!(
            r#"{{"action":"SET","key":"/fresh","value":"f","newKey":true,"expiration":"{exp_s}","index":{}}}"#,
            i + 3
        ),
    );
    wait_expired(a, "fresh", parse_expiration(&exp_s));
}

#[test]
fn key_that_expired_while_down_is_gone_after_restart() {
    let mut n = Node::start("node0");
    let a = n.client.clone();
    set(&a, "keep", "1");
    let r = set_ttl(&a, "shortttl", "1", "2");
    assert_eq!(r.status, 200, "{:?}", r.body);
    let s = idx(&r);
    let exp = parse_expiration(&exp_of(&r));
    let st = n.stop();
    assert!(st.success(), "SIGTERM exit status {st:?}");
    wait_clock_past(exp + 500_000_000);
    n.restart();

    poll_until(
        Duration::from_secs(3),
        "shortttl gone after restart",
        || {
            let g = get(&a, "/v1/keys/shortttl");
            if g.status == 404 {
                return Some(g);
            }
            assert_eq!(g.status, 200, "{:?}", g.body);
            assert!(ttl_of(&g) >= 0, "negative ttl: {:?}", g.body);
            None
        },
    );
    assert_not_found(&get(&a, "/v1/keys/shortttl"), "get: /shortttl");
    let g = get(&a, "/v1/keys/keep");
    assert_eq!(g.status, 200);
    assert_eq!(g.json()["value"], "1");
    let next = set(&a, "x", "1");
    assert!(idx(&next) >= s + 2, "index went back: {:?}", next.body);
}

#[test]
fn ttl_key_survives_a_restart_with_the_same_expiration() {
    let mut n = Node::start("node0");
    let a = n.client.clone();
    let r = set_ttl(&a, "persistttl", "1", "100");
    let exp_s = exp_of(&r);
    let exp = parse_expiration(&exp_s);
    let st = n.stop();
    assert!(st.success(), "SIGTERM exit status {st:?}");
    n.restart();
    let t0 = now_nanos();
    let g = get(&a, "/v1/keys/persistttl");
    let t1 = now_nanos();
    assert_eq!(g.status, 200, "{:?}", g.body);
    assert_eq!(g.content_type(), Some("application/json"));
    assert_eq!(exp_of(&g), exp_s);
    let ttl = ttl_of(&g);
    let lo = ((exp - t1) / SEC) as i64;
    let hi = ((exp - t0) / SEC) as i64;
    assert!(ttl >= lo && ttl <= hi, "ttl {ttl} not in [{lo}, {hi}]");
    assert_eq!(
        g.body,
        format!(
            r#"{{"action":"GET","key":"/persistttl","value":"1","expiration":"{exp_s}","ttl":{ttl},"index":{}}}"#,
            idx(&g)
        )
    );
    assert!(idx(&g) >= idx(&r));
}

#[test]
fn expiration_parser_self_check() {
    assert_eq!(parse_expiration("1970-01-01T00:00:00Z"), 0);
    assert_eq!(parse_expiration("1970-01-01T00:00:01.5Z"), 1_500_000_000);
    assert_eq!(
        parse_expiration("2026-11-21T13:53:15.225264963Z"),
        1_795_269_195_225_264_963
    );
    assert!(std::panic::catch_unwind(|| parse_expiration("2026-11-21T13:53:15.10Z")).is_err());
    assert!(std::panic::catch_unwind(|| parse_expiration("2026-11-21T13:53:15+01:00")).is_err());
}

#[test]
fn ttl_is_parsed_like_go_atoi() {
    // v0.1.2 parsed ttl with strconv.Atoi: an explicit sign and leading zeros are fine.
    let n = Node::start("node0");
    let a = &n.client;
    for (key, ttl) in [("plus", "+5"), ("zeros", "0005")] {
        let r = set_ttl(a, key, "v", ttl);
        assert_eq!(r.status, 200, "ttl={ttl}: {:?}", r.body);
        let t = ttl_of(&r);
        assert!((4..=5).contains(&t), "ttl={ttl} answered ttl {t}");
    }
    let r = set_ttl(a, "minus0", "v", "-0");
    assert_not_found(&r, "delete: /minus0");
}

#[test]
fn a_deleted_and_recreated_key_does_not_inherit_the_old_expiry() {
    let n = Node::start("node0");
    let a = &n.client;
    // Long enough that the delete lands before the expiration.
    let r = set_ttl(a, "r", "v", "3");
    let exp = parse_expiration(&exp_of(&r));
    let d = delete(a, "/v1/keys/r");
    assert_eq!(d.status, 200, "{:?}", d.body);
    let again = set(a, "r", "permanent");
    let i = idx(&again);
    wait_clock_past(exp + 1_500_000_000);
    assert_ok(
        &get(a, "/v1/keys/r"),
        &format!(r#"{{"action":"GET","key":"/r","value":"permanent","index":{i}}}"#),
    );
}
