//! Black-box tests of the v2 key API (`/v2/keys`, docs/api.md): etcd 2.3 semantics plus
//! `noValueOnSuccess`, as observed on a live etcd 3.4, and the request limits.
//!
//! Indexes are never hard-coded: every expectation is built from indexes read from earlier
//! responses, and the tests assert how they relate.

mod common;

use common::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

// ---------------------------------------------------------------------------------------
// helpers

/// A numeric response header; panics when it is missing or not a number.
fn hnum(r: &Resp, name: &str) -> u64 {
    let v = r
        .header(name)
        .unwrap_or_else(|| panic!("no {name} header: {} {:?}", r.status, r.body));
    v.parse()
        .unwrap_or_else(|_| panic!("{name} is not a number: {v:?}"))
}

/// X-Etcd-Index of a response.
fn eidx(r: &Resp) -> u64 {
    hnum(r, "x-etcd-index")
}

/// The cluster id header: present, 1-16 lower-case hex digits.
fn assert_cluster_id(r: &Resp) {
    let v = r
        .header("x-etcd-cluster-id")
        .unwrap_or_else(|| panic!("no X-Etcd-Cluster-Id: {} {:?}", r.status, r.body));
    assert!(
        !v.is_empty()
            && v.len() <= 16
            && v.bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)),
        "bad cluster id {v:?}"
    );
}

/// A successful key answer: status, JSON content type, X-Etcd-Index, X-Raft-Index,
/// X-Raft-Term, cluster id, and exactly `expected` followed by a newline.
fn assert_ok(r: &Resp, status: u16, expected: &str) {
    assert_eq!(r.status, status, "body {:?}", r.body);
    assert_eq!(
        r.content_type(),
        Some("application/json"),
        "{:?}",
        r.headers
    );
    eidx(r);
    hnum(r, "x-raft-index");
    assert!(hnum(r, "x-raft-term") >= 1, "raft term");
    assert_cluster_id(r);
    assert_eq!(r.body, format!("{expected}\n"));
}

/// A v2 error: status, JSON content type, X-Etcd-Index = the error's index, cluster id, no
/// raft headers, and exactly `{"errorCode":..,"message":..,"cause":..,"index":..}\n`.
fn assert_err(r: &Resp, status: u16, code: u32, message: &str, cause: &str, index: u64) {
    assert_eq!(r.status, status, "body {:?}", r.body);
    assert_eq!(
        r.content_type(),
        Some("application/json"),
        "{:?}",
        r.headers
    );
    assert_eq!(eidx(r), index, "X-Etcd-Index of error {:?}", r.body);
    assert_cluster_id(r);
    assert!(
        r.header("x-raft-index").is_none() && r.header("x-raft-term").is_none(),
        "error with raft headers: {:?}",
        r.headers
    );
    assert_eq!(
        r.body,
        format!(
            "{{\"errorCode\":{code},\"message\":{},\"cause\":{},\"index\":{index}}}\n",
            go_json_string(message),
            go_json_string(cause)
        )
    );
}

/// A request-validation error (2xx codes): index 0.
fn assert_invalid(r: &Resp, code: u32, message: &str, cause: &str) {
    assert_err(r, 400, code, message, cause, 0);
}

fn k(key: &str) -> String {
    format!("/v2/keys{key}")
}

fn put(a: &str, key: &str, form: &[(&str, &str)]) -> Resp {
    put_form(a, &k(key), form)
}

fn post(a: &str, key: &str, form: &[(&str, &str)]) -> Resp {
    post_form(a, &k(key), form)
}

fn getk(a: &str, key: &str) -> Resp {
    get(a, &k(key))
}

fn del(a: &str, key_and_query: &str) -> Resp {
    delete(a, &k(key_and_query))
}

/// The `node.modifiedIndex` of a write answer.
fn midx(r: &Resp) -> u64 {
    r.json()["node"]["modifiedIndex"]
        .as_u64()
        .unwrap_or_else(|| panic!("no node.modifiedIndex in {:?}", r.body))
}

/// PUT value on a new key: 201; returns its index.
fn create(a: &str, key: &str, value: &str) -> u64 {
    let r = put(a, key, &[("value", value)]);
    assert_eq!(r.status, 201, "PUT {key}: {:?}", r.body);
    let i = midx(&r);
    assert_eq!(eidx(&r), i);
    i
}

/// PUT dir=true on a new key: 201; returns its index.
fn mkdir(a: &str, key: &str) -> u64 {
    let r = put(a, key, &[("dir", "true")]);
    assert_eq!(r.status, 201, "PUT {key} dir: {:?}", r.body);
    midx(&r)
}

/// The current store index (X-Etcd-Index of a root GET).
fn cur(a: &str) -> u64 {
    let r = get(a, "/v2/keys/");
    assert_eq!(r.status, 200, "{:?}", r.body);
    eidx(&r)
}

/// A key node as etcd writes it.
fn kv(key: &str, value: &str, m: u64, c: u64) -> String {
    format!(
        "{{\"key\":{},\"value\":{},\"modifiedIndex\":{m},\"createdIndex\":{c}}}",
        go_json_string(key),
        go_json_string(value)
    )
}

/// A directory node without `nodes`.
fn dirn(key: &str, m: u64, c: u64) -> String {
    format!(
        "{{\"key\":{},\"dir\":true,\"modifiedIndex\":{m},\"createdIndex\":{c}}}",
        go_json_string(key)
    )
}

/// A directory node with these (already rendered) children.
fn dir_with(key: &str, children: &[String], m: u64, c: u64) -> String {
    format!(
        "{{\"key\":{},\"dir\":true,\"nodes\":[{}],\"modifiedIndex\":{m},\"createdIndex\":{c}}}",
        go_json_string(key),
        children.join(",")
    )
}

/// A node that carries no value (the `node` of a delete / expire event).
fn bare(key: &str, m: u64, c: u64) -> String {
    format!(
        "{{\"key\":{},\"modifiedIndex\":{m},\"createdIndex\":{c}}}",
        go_json_string(key)
    )
}

/// Parse rendered JSON (for order-independent comparisons).
fn jv(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("bad expected JSON {s:?}: {e}"))
}

fn ev(action: &str, node: &str) -> String {
    format!("{{\"action\":\"{action}\",\"node\":{node}}}")
}

fn ev_prev(action: &str, node: &str, prev: &str) -> String {
    format!("{{\"action\":\"{action}\",\"node\":{node},\"prevNode\":{prev}}}")
}

fn now_unix_nanos() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as i128
}

/// Parse `YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z` (Go RFC 3339 nano, UTC, trailing zeros trimmed) to
/// Unix nanoseconds; panics on anything else.
fn expiration_nanos(s: &str) -> i128 {
    let fail = || -> ! { panic!("bad expiration timestamp {s:?}") };
    let b = s.as_bytes();
    if b.len() < 20 || !s.is_ascii() || b[b.len() - 1] != b'Z' {
        fail();
    }
    for (pos, ch) in [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')] {
        if b[pos] != ch {
            fail();
        }
    }
    let field = |from: usize, to: usize| -> i64 {
        let t = &s[from..to];
        if !t.bytes().all(|c| c.is_ascii_digit()) {
            fail();
        }
        t.parse().unwrap_or_else(|_| fail())
    };
    let (year, month, day) = (field(0, 4), field(5, 7), field(8, 10));
    let (hour, min, sec) = (field(11, 13), field(14, 16), field(17, 19));
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 59 {
        fail();
    }
    let frac = &s[19..s.len() - 1];
    let nanos: i128 = if frac.is_empty() {
        0
    } else {
        let d = frac.strip_prefix('.').unwrap_or_else(|| fail());
        if d.is_empty() || d.len() > 9 || d.ends_with('0') || !d.bytes().all(|c| c.is_ascii_digit())
        {
            fail();
        }
        format!("{d:0<9}").parse().unwrap_or_else(|_| fail())
    };
    // Days since the epoch (civil calendar, March-based year).
    let (y, m) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = (era * 146_097 + doe - 719_468) as i128;
    ((days * 86_400 + (hour * 3600 + min * 60 + sec) as i128) * 1_000_000_000) + nanos
}

/// The `expiration` and `ttl` of `node`, checked: RFC 3339 UTC, `ttl` = ceil(seconds left)
/// within `lo..=hi`, and the expiration about `ttl` seconds away.
fn check_ttl_fields(node: &Value, lo: i64, hi: i64) -> (String, i64) {
    let exp = node["expiration"]
        .as_str()
        .unwrap_or_else(|| panic!("no expiration in {node}"))
        .to_string();
    let ttl = node["ttl"]
        .as_i64()
        .unwrap_or_else(|| panic!("no ttl in {node}"));
    assert!(
        (lo..=hi).contains(&ttl),
        "ttl {ttl} not in {lo}..={hi}: {node}"
    );
    let left = expiration_nanos(&exp) - now_unix_nanos();
    assert!(
        left <= ttl as i128 * 1_000_000_000 + 500_000_000
            && left > (ttl as i128 - 2) * 1_000_000_000,
        "expiration {exp} is {left} ns away, ttl {ttl}"
    );
    (exp, ttl)
}

/// Send raw bytes, read until EOF (10 s cap); returns everything received.
fn raw_exchange(addr: &str, req: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    s.write_all(req).expect("write");
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
        assert!(Instant::now() < deadline, "no EOF within 10 s");
    }
    out
}

const KEY_NOT_FOUND: &str = "Key not found";
const COMPARE_FAILED: &str = "Compare failed";
const NOT_A_FILE: &str = "Not a file";
const NOT_A_DIR: &str = "Not a directory";
const KEY_EXISTS: &str = "Key already exists";
const ROOT_RO: &str = "Root is read only";
const DIR_NOT_EMPTY: &str = "Directory not empty";
const INVALID_FIELD: &str = "Invalid field";
const TTL_NAN: &str = "The given TTL in POST form is not a number";
const INDEX_NAN: &str = "The given index in POST form is not a number";
const PREV_VALUE_REQUIRED: &str = "PrevValue is Required in POST form";

// ---------------------------------------------------------------------------------------
// GET

#[test]
fn empty_root_is_a_dir_without_key_indexes_or_nodes() {
    let n = Node::start("node0");
    let a = &n.client;
    let r1 = get(a, "/v2/keys/");
    assert_ok(&r1, 200, r#"{"action":"get","node":{"dir":true}}"#);
    let r2 = get(a, "/v2/keys");
    assert_ok(&r2, 200, r#"{"action":"get","node":{"dir":true}}"#);
    assert_eq!(eidx(&r1), eidx(&r2));
    // Internal writes (self-join, machine registration) consumed indexes already.
    assert!(eidx(&r1) >= 1);
    assert!(hnum(&r1, "x-raft-index") >= 1);
    // All /v2/keys answers of one cluster carry the same id.
    assert_eq!(
        r1.header("x-etcd-cluster-id"),
        r2.header("x-etcd-cluster-id")
    );
}

#[test]
fn get_key_dir_and_root() {
    let n = Node::start("node0");
    let a = &n.client;
    let i1 = create(a, "/a/b", "1");
    let i2 = create(a, "/x", "hello");
    assert_eq!(i2, i1 + 1);

    let r = getk(a, "/a/b");
    assert_ok(&r, 200, &ev("get", &kv("/a/b", "1", i1, i1)));
    assert_eq!(eidx(&r), i2, "GET answers the current index");

    // The directory /a was created implicitly by the first write.
    let listing = ev("get", &dir_with("/a", &[kv("/a/b", "1", i1, i1)], i1, i1));
    assert_ok(&getk(a, "/a"), 200, &listing);
    assert_ok(&getk(a, "/a/"), 200, &listing);

    // The root: no key, no indexes; child directories carry no nodes without recursive.
    let r = get(a, "/v2/keys/?sorted=true");
    assert_ok(
        &r,
        200,
        &format!(
            r#"{{"action":"get","node":{{"dir":true,"nodes":[{},{}]}}}}"#,
            dirn("/a", i1, i1),
            kv("/x", "hello", i2, i2)
        ),
    );
    assert_eq!(eidx(&r), i2);

    // Missing key, and missing key below a missing directory.
    assert_err(&getk(a, "/nope"), 404, 100, KEY_NOT_FOUND, "/nope", i2);
    assert_err(&getk(a, "/a/c/d"), 404, 100, KEY_NOT_FOUND, "/a/c", i2);

    // An empty directory lists without `nodes`.
    let i3 = mkdir(a, "/empty");
    assert_ok(&getk(a, "/empty"), 200, &ev("get", &dirn("/empty", i3, i3)));
}

#[test]
fn raft_headers_move_with_writes() {
    let n = Node::start("node0");
    let a = &n.client;
    let g1 = getk(a, "/");
    let raft1 = hnum(&g1, "x-raft-index");
    let term = hnum(&g1, "x-raft-term");
    let w = put(a, "/r", &[("value", "v")]);
    assert_eq!(w.status, 201);
    let raft2 = hnum(&w, "x-raft-index");
    assert!(raft2 > raft1, "raft index {raft2} after write <= {raft1}");
    assert_eq!(hnum(&w, "x-raft-term"), term);
    assert_eq!(eidx(&w), eidx(&g1) + 1);
    let g2 = getk(a, "/r");
    assert!(hnum(&g2, "x-raft-index") >= raft2);
    assert_eq!(eidx(&g2), eidx(&w));
}

#[test]
fn recursive_and_sorted_listings() {
    let n = Node::start("node0");
    let a = &n.client;
    let ib2 = create(a, "/r/b/2", "b2");
    let ia1 = create(a, "/r/a/1", "a1");
    let ic = create(a, "/r/c", "c");
    let ib1 = create(a, "/r/b/1", "b1");
    let iz = mkdir(a, "/r/z");

    let rdir = |children: &[String]| dir_with("/r", children, ib2, ib2);
    let full = ev(
        "get",
        &rdir(&[
            dir_with("/r/a", &[kv("/r/a/1", "a1", ia1, ia1)], ia1, ia1),
            dir_with(
                "/r/b",
                &[kv("/r/b/1", "b1", ib1, ib1), kv("/r/b/2", "b2", ib2, ib2)],
                ib2,
                ib2,
            ),
            kv("/r/c", "c", ic, ic),
            dirn("/r/z", iz, iz),
        ]),
    );
    assert_ok(&getk(a, "/r?recursive=true&sorted=true"), 200, &full);

    // Without sorted=true the order is unspecified: same content once sorted.
    fn sort_nodes(v: &mut Value) {
        if let Some(arr) = v.get_mut("nodes").and_then(|x| x.as_array_mut()) {
            arr.sort_by(|x, y| x["key"].as_str().cmp(&y["key"].as_str()));
            for c in arr.iter_mut() {
                sort_nodes(c);
            }
        }
    }
    let r = getk(a, "/r?recursive=true");
    assert_eq!(r.status, 200);
    assert!(r.body.ends_with('\n'));
    let mut got = r.json();
    sort_nodes(&mut got["node"]);
    assert_eq!(got, jv(&full));

    // Sorted, not recursive: child directories carry no nodes.
    assert_ok(
        &getk(a, "/r?sorted=true"),
        200,
        &ev(
            "get",
            &rdir(&[
                dirn("/r/a", ia1, ia1),
                dirn("/r/b", ib2, ib2),
                kv("/r/c", "c", ic, ic),
                dirn("/r/z", iz, iz),
            ]),
        ),
    );

    // The root, recursive and sorted: still no key and no indexes on the root itself.
    let r = get(a, "/v2/keys/?recursive=true&sorted=true");
    let inner = full
        .strip_prefix(r#"{"action":"get","node":"#)
        .unwrap()
        .strip_suffix('}')
        .unwrap();
    assert_ok(
        &r,
        200,
        &format!(r#"{{"action":"get","node":{{"dir":true,"nodes":[{inner}]}}}}"#),
    );

    // Byte order: upper case before lower case, "a/" children stay inside "a".
    let i_up = create(a, "/s/B", "1");
    let i_lo = create(a, "/s/a", "2");
    let i_ab = create(a, "/s/ab", "3");
    assert_ok(
        &getk(a, "/s?sorted=true"),
        200,
        &ev(
            "get",
            &dir_with(
                "/s",
                &[
                    kv("/s/B", "1", i_up, i_up),
                    kv("/s/a", "2", i_lo, i_lo),
                    kv("/s/ab", "3", i_ab, i_ab),
                ],
                i_up,
                i_up,
            ),
        ),
    );
}

#[test]
fn hidden_keys_are_omitted_from_listings_but_readable() {
    let n = Node::start("node0");
    let a = &n.client;
    let ih = create(a, "/h/_hid", "secret");
    let iv = create(a, "/h/vis", "1");
    let id = create(a, "/h/_hd/in", "2");

    let vis = kv("/h/vis", "1", iv, iv);
    assert_ok(
        &getk(a, "/h"),
        200,
        &ev("get", &dir_with("/h", std::slice::from_ref(&vis), ih, ih)),
    );
    assert_ok(
        &getk(a, "/h?recursive=true&sorted=true"),
        200,
        &ev("get", &dir_with("/h", &[vis], ih, ih)),
    );
    // By exact path.
    assert_ok(
        &getk(a, "/h/_hid"),
        200,
        &ev("get", &kv("/h/_hid", "secret", ih, ih)),
    );
    assert_ok(
        &getk(a, "/h/_hd?recursive=true"),
        200,
        &ev(
            "get",
            &dir_with("/h/_hd", &[kv("/h/_hd/in", "2", id, id)], id, id),
        ),
    );
    // Hidden keys can be written and deleted by exact path.
    let r = put(a, "/h/_hid", &[("value", "s2")]);
    assert_ok(
        &r,
        200,
        &ev_prev(
            "set",
            &kv("/h/_hid", "s2", id + 1, id + 1),
            &kv("/h/_hid", "secret", ih, ih),
        ),
    );

    // A hidden directory at the top: the root listing does not show it either.
    let it = create(a, "/_top", "t");
    let r = get(a, "/v2/keys/?recursive=true&sorted=true");
    assert_eq!(r.status, 200);
    assert!(!r.body.contains("/_"), "hidden node listed: {}", r.body);
    assert_ok(
        &getk(a, "/_top"),
        200,
        &ev("get", &kv("/_top", "t", it, it)),
    );

    // the choices in docs/api.md: the machine registry is hidden but readable by exact path.
    let r = getk(a, "/_etcd/machines");
    assert_eq!(r.status, 200, "{:?}", r.body);
    let v = r.json();
    assert_eq!(v["node"]["key"], "/_etcd/machines");
    assert_eq!(v["node"]["dir"], true);
    let nodes = v["node"]["nodes"].as_array().expect("registry entries");
    assert_eq!(nodes.len(), 1, "{}", r.body);
    assert_eq!(nodes[0]["key"], "/_etcd/machines/node0");
    assert_eq!(
        nodes[0]["value"],
        format!("raft=http://{}&etcd=http://{}", n.peer, n.client)
    );
}

#[test]
fn head_answers_like_get_without_a_body() {
    let n = Node::start("node0");
    let a = &n.client;
    let i = create(a, "/hd/k", "value");
    for path in [
        "/v2/keys/hd/k",
        "/v2/keys/hd",
        "/v2/keys/",
        "/v2/keys/missing",
    ] {
        let g = get(a, path);
        let h = request(a, "HEAD", path, &[], b"");
        assert_eq!(h.status, g.status, "{path}");
        assert_eq!(h.content_type(), Some("application/json"), "{path}");
        assert_eq!(h.header("x-etcd-index"), g.header("x-etcd-index"), "{path}");
        assert_eq!(h.header("x-etcd-index"), Some(i.to_string().as_str()));
        assert_eq!(h.header("x-raft-term"), g.header("x-raft-term"), "{path}");
        assert_eq!(
            h.header("x-raft-index").is_some(),
            g.header("x-raft-index").is_some(),
            "{path}"
        );
        assert_eq!(
            h.header("x-etcd-cluster-id"),
            g.header("x-etcd-cluster-id"),
            "{path}"
        );
        assert_eq!(
            h.header("content-length"),
            Some(g.body.len().to_string().as_str()),
            "{path}: HEAD Content-Length = length of the GET body"
        );
        // Nothing follows the head on the wire.
        let raw = raw_exchange(
            a,
            format!("HEAD {path} HTTP/1.1\r\nHost: {a}\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        let end = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("end of head")
            + 4;
        assert_eq!(
            &raw[end..],
            b"",
            "{path}: HEAD sent a body {:?}",
            String::from_utf8_lossy(&raw[end..])
        );
    }
}

// ---------------------------------------------------------------------------------------
// PUT: set, dir, prevExist, CAS, TTL, refresh, noValueOnSuccess

#[test]
fn put_sets_new_then_replaces() {
    let n = Node::start("node0");
    let a = &n.client;
    let before = cur(a);
    let r = put(a, "/message", &[("value", "Hello world")]);
    let i = before + 1;
    assert_ok(&r, 201, &ev("set", &kv("/message", "Hello world", i, i)));
    assert_eq!(eidx(&r), i);

    // Replace: 200, prevNode, and createdIndex restarts (the node is replaced).
    let r = put(a, "/message", &[("value", "Hello etcd")]);
    assert_ok(
        &r,
        200,
        &ev_prev(
            "set",
            &kv("/message", "Hello etcd", i + 1, i + 1),
            &kv("/message", "Hello world", i, i),
        ),
    );
    assert_eq!(eidx(&r), i + 1);
    assert_ok(
        &getk(a, "/message"),
        200,
        &ev("get", &kv("/message", "Hello etcd", i + 1, i + 1)),
    );

    // No value: stores "".
    let r = put(a, "/empty", &[]);
    assert_ok(&r, 201, &ev("set", &kv("/empty", "", i + 2, i + 2)));
    // Values are taken verbatim (JSON escaping as Go does it).
    let odd = "a&b <c> \"q\" \\ é\n";
    let r = put(a, "/odd", &[("value", odd)]);
    assert_ok(&r, 201, &ev("set", &kv("/odd", odd, i + 3, i + 3)));
    assert_ok(
        &getk(a, "/odd"),
        200,
        &ev("get", &kv("/odd", odd, i + 3, i + 3)),
    );
    // The value may also come from the query string; the form body wins.
    let r = request(a, "PUT", "/v2/keys/qs?value=fromquery", &[], b"");
    assert_ok(&r, 201, &ev("set", &kv("/qs", "fromquery", i + 4, i + 4)));
    let r = put_form(a, "/v2/keys/qs?value=fromquery", &[("value", "frombody")]);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["node"]["value"], "frombody");
}

#[test]
fn put_dir() {
    let n = Node::start("node0");
    let a = &n.client;
    let before = cur(a);
    let r = put(a, "/d", &[("dir", "true"), ("value", "ignored")]);
    let i = before + 1;
    assert_ok(&r, 201, &ev("set", &dirn("/d", i, i)));
    assert_ok(&getk(a, "/d"), 200, &ev("get", &dirn("/d", i, i)));

    // Setting an existing directory, as a dir or as a key: 102.
    assert_err(
        &put(a, "/d", &[("dir", "true")]),
        403,
        102,
        NOT_A_FILE,
        "/d",
        i,
    );
    assert_err(
        &put(a, "/d", &[("value", "x")]),
        403,
        102,
        NOT_A_FILE,
        "/d",
        i,
    );
    assert_err(
        &put(a, "/d", &[("value", "x"), ("dir", "false")]),
        403,
        102,
        NOT_A_FILE,
        "/d",
        i,
    );

    // dir=true on an existing key replaces it with an empty directory.
    create(a, "/k", "v");
    let r = put(a, "/k", &[("dir", "true")]);
    assert_ok(
        &r,
        200,
        &ev_prev(
            "set",
            &dirn("/k", i + 2, i + 2),
            &kv("/k", "v", i + 1, i + 1),
        ),
    );
    assert_ok(&getk(a, "/k"), 200, &ev("get", &dirn("/k", i + 2, i + 2)));

    // The root is read only.
    assert_err(
        &put(a, "/", &[("value", "x")]),
        400,
        107,
        ROOT_RO,
        "/",
        i + 2,
    );
    assert_err(
        &put_form(a, "/v2/keys", &[("dir", "true")]),
        400,
        107,
        ROOT_RO,
        "/",
        i + 2,
    );
    assert_eq!(cur(a), i + 2, "failed writes do not consume indexes");
}

#[test]
fn prev_exist_create_and_update() {
    let n = Node::start("node0");
    let a = &n.client;
    let before = cur(a);
    let i = before + 1;

    let r = put(a, "/c", &[("value", "one"), ("prevExist", "false")]);
    assert_ok(&r, 201, &ev("create", &kv("/c", "one", i, i)));
    let r = put(a, "/c", &[("value", "two"), ("prevExist", "false")]);
    assert_err(&r, 412, 105, KEY_EXISTS, "/c", i);

    // Update keeps createdIndex and answers prevNode.
    let r = put(a, "/c", &[("value", "two"), ("prevExist", "true")]);
    assert_ok(
        &r,
        200,
        &ev_prev("update", &kv("/c", "two", i + 1, i), &kv("/c", "one", i, i)),
    );
    assert_ok(&getk(a, "/c"), 200, &ev("get", &kv("/c", "two", i + 1, i)));

    // Update of a missing key: 100, cause = the first missing path.
    let r = put(a, "/nokey", &[("value", "x"), ("prevExist", "true")]);
    assert_err(&r, 404, 100, KEY_NOT_FOUND, "/nokey", i + 1);
    let r = put(a, "/c2/d/e", &[("value", "x"), ("prevExist", "true")]);
    assert_err(&r, 404, 100, KEY_NOT_FOUND, "/c2", i + 1);

    // prevExist=true with prevValue is a compare-and-swap.
    let r = put(
        a,
        "/c",
        &[
            ("value", "three"),
            ("prevExist", "true"),
            ("prevValue", "two"),
        ],
    );
    assert_ok(
        &r,
        200,
        &ev_prev(
            "compareAndSwap",
            &kv("/c", "three", i + 2, i),
            &kv("/c", "two", i + 1, i),
        ),
    );
    // Create with dir=true.
    let r = put(a, "/newdir", &[("dir", "true"), ("prevExist", "false")]);
    assert_ok(&r, 201, &ev("create", &dirn("/newdir", i + 3, i + 3)));
    // Creating an existing directory: 105 too.
    let r = put(a, "/newdir", &[("dir", "true"), ("prevExist", "false")]);
    assert_err(&r, 412, 105, KEY_EXISTS, "/newdir", i + 3);
    assert_eq!(cur(a), i + 3);
}

#[test]
fn compare_and_swap_with_all_causes() {
    let n = Node::start("node0");
    let a = &n.client;
    let i = create(a, "/c", "one");

    let r = put(a, "/c", &[("value", "two"), ("prevValue", "nope")]);
    assert_err(&r, 412, 101, COMPARE_FAILED, "[nope != one]", i);
    let r = put(a, "/c", &[("value", "two"), ("prevIndex", "1")]);
    assert_err(&r, 412, 101, COMPARE_FAILED, &format!("[1 != {i}]"), i);
    let r = put(
        a,
        "/c",
        &[("value", "two"), ("prevIndex", "1"), ("prevValue", "nope")],
    );
    assert_err(
        &r,
        412,
        101,
        COMPARE_FAILED,
        &format!("[nope != one] [1 != {i}]"),
        i,
    );
    // One condition right, the other wrong: still a failure naming only the wrong one.
    let r = put(
        a,
        "/c",
        &[
            ("value", "two"),
            ("prevIndex", &i.to_string()),
            ("prevValue", "nope"),
        ],
    );
    assert_err(&r, 412, 101, COMPARE_FAILED, "[nope != one]", i);

    // Match on value.
    let r = put(a, "/c", &[("value", "two"), ("prevValue", "one")]);
    assert_ok(
        &r,
        200,
        &ev_prev(
            "compareAndSwap",
            &kv("/c", "two", i + 1, i),
            &kv("/c", "one", i, i),
        ),
    );
    // Match on index.
    let r = put(
        a,
        "/c",
        &[("value", "three"), ("prevIndex", &(i + 1).to_string())],
    );
    assert_ok(
        &r,
        200,
        &ev_prev(
            "compareAndSwap",
            &kv("/c", "three", i + 2, i),
            &kv("/c", "two", i + 1, i),
        ),
    );
    // Match on both.
    let r = put(
        a,
        "/c",
        &[
            ("value", "four"),
            ("prevIndex", &(i + 2).to_string()),
            ("prevValue", "three"),
        ],
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.json()["action"], "compareAndSwap");
    assert_eq!(eidx(&r), i + 3);

    // prevIndex=0 is no condition: a plain set.
    let r = put(a, "/c", &[("value", "five"), ("prevIndex", "0")]);
    assert_ok(
        &r,
        200,
        &ev_prev(
            "set",
            &kv("/c", "five", i + 4, i + 4),
            &kv("/c", "four", i + 3, i),
        ),
    );

    // Missing key, directory, path through a key.
    let r = put(a, "/nokey", &[("value", "x"), ("prevValue", "one")]);
    assert_err(&r, 404, 100, KEY_NOT_FOUND, "/nokey", i + 4);
    mkdir(a, "/dir");
    let r = put(a, "/dir", &[("value", "x"), ("prevValue", "one")]);
    assert_err(&r, 403, 102, NOT_A_FILE, "/dir", i + 5);
    let r = put(a, "/dir", &[("value", "x"), ("prevIndex", "3")]);
    assert_err(&r, 403, 102, NOT_A_FILE, "/dir", i + 5);
    let r = put(a, "/c/x", &[("value", "x"), ("prevValue", "one")]);
    assert_err(&r, 400, 104, NOT_A_DIR, "/c", i + 5);
    assert_eq!(cur(a), i + 5);
}

#[test]
fn paths_through_a_key_are_104() {
    let n = Node::start("node0");
    let a = &n.client;
    let i = create(a, "/p/q", "v");
    assert_err(&getk(a, "/p/q/x"), 400, 104, NOT_A_DIR, "/p/q", i);
    assert_err(&getk(a, "/p/q/x/y"), 400, 104, NOT_A_DIR, "/p/q", i);
    assert_err(
        &put(a, "/p/q/x", &[("value", "1")]),
        400,
        104,
        NOT_A_DIR,
        "/p/q",
        i,
    );
    assert_err(
        &put(a, "/p/q/x/y", &[("dir", "true")]),
        400,
        104,
        NOT_A_DIR,
        "/p/q",
        i,
    );
    assert_err(
        &put(a, "/p/q/x", &[("value", "1"), ("prevExist", "true")]),
        400,
        104,
        NOT_A_DIR,
        "/p/q",
        i,
    );
    assert_err(
        &put(a, "/p/q/x", &[("value", "1"), ("prevExist", "false")]),
        400,
        104,
        NOT_A_DIR,
        "/p/q",
        i,
    );
    assert_err(
        &post(a, "/p/q", &[("value", "1")]),
        400,
        104,
        NOT_A_DIR,
        "/p/q",
        i,
    );
    assert_err(&del(a, "/p/q/x"), 400, 104, NOT_A_DIR, "/p/q", i);
    assert_err(
        &del(a, "/p/q/x?recursive=true"),
        400,
        104,
        NOT_A_DIR,
        "/p/q",
        i,
    );
    assert_err(
        &del(a, "/p/q/x?prevValue=v"),
        400,
        104,
        NOT_A_DIR,
        "/p/q",
        i,
    );
    assert_eq!(cur(a), i);
}

#[test]
fn update_of_a_directory_ttl() {
    let n = Node::start("node0");
    let a = &n.client;
    let i = mkdir(a, "/k");
    let r = put(
        a,
        "/k",
        &[("dir", "true"), ("prevExist", "true"), ("ttl", "30")],
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    let v = r.json();
    let (exp, _) = check_ttl_fields(&v["node"], 30, 30);
    assert_ok(
        &r,
        200,
        &ev_prev(
            "update",
            &format!(
                r#"{{"key":"/k","dir":true,"expiration":"{exp}","ttl":30,"modifiedIndex":{},"createdIndex":{i}}}"#,
                i + 1
            ),
            &dirn("/k", i, i),
        ),
    );
    // GET shows the TTL.
    let g = getk(a, "/k");
    assert_eq!(g.status, 200);
    let gv = g.json();
    let (gexp, _) = check_ttl_fields(&gv["node"], 29, 30);
    assert_eq!(gexp, exp);

    // A value on a directory: 102.
    let r = put(a, "/k", &[("value", "zz"), ("prevExist", "true")]);
    assert_err(&r, 403, 102, NOT_A_FILE, "/k", i + 1);

    // Update without ttl makes the directory permanent again.
    let r = put(a, "/k", &[("dir", "true"), ("prevExist", "true")]);
    assert_eq!(r.status, 200, "{:?}", r.body);
    let v = r.json();
    assert_eq!(v["action"], "update");
    assert_eq!(v["node"], jv(&dirn("/k", i + 2, i)));
    assert_eq!(v["prevNode"]["expiration"], exp.as_str());
    assert!(v["prevNode"]["ttl"].as_i64().is_some());
    let g = getk(a, "/k");
    assert!(!g.body.contains("expiration"), "{}", g.body);
    // Children are kept by an update of the directory.
    let ic = create(a, "/k/child", "c");
    let r = put(
        a,
        "/k",
        &[("dir", "true"), ("prevExist", "true"), ("ttl", "100")],
    );
    assert_eq!(r.status, 200);
    let g = getk(a, "/k");
    assert_eq!(
        g.json()["node"]["nodes"][0],
        jv(&kv("/k/child", "c", ic, ic))
    );
}

#[test]
fn dir_ttl_update_keeps_the_dir_modified_index_like_etcd() {
    // etcd 2.3/3.4: an update of a directory answers a new modifiedIndex in the event but does
    // not store it on the directory (node.Write is a no-op for directories), so the next
    // prevNode and GET still show the directory's previous modifiedIndex.
    let n = Node::start("node0");
    let a = &n.client;
    let i = mkdir(a, "/k");
    let r = put(
        a,
        "/k",
        &[("dir", "true"), ("prevExist", "true"), ("ttl", "30")],
    );
    assert_eq!(midx(&r), i + 1);
    let g = getk(a, "/k");
    assert_eq!(
        g.json()["node"]["modifiedIndex"],
        i,
        "GET after dir update: {}",
        g.body
    );
    let r = put(a, "/k", &[("dir", "true"), ("prevExist", "true")]);
    assert_eq!(midx(&r), i + 2);
    assert_eq!(r.json()["prevNode"]["modifiedIndex"], i, "{}", r.body);
}

#[test]
fn refresh_keeps_the_value_and_resets_the_ttl() {
    let n = Node::start("node0");
    let a = &n.client;
    let r = put(a, "/t", &[("value", "tv"), ("ttl", "100")]);
    assert_eq!(r.status, 201);
    let i = midx(&r);
    let (exp0, _) = check_ttl_fields(&r.json()["node"], 100, 100);
    let prev0 = format!(
        r#"{{"key":"/t","value":"tv","expiration":"{exp0}","ttl":100,"modifiedIndex":{i},"createdIndex":{i}}}"#
    );

    // Without prevExist: a set that recreates the node (createdIndex = new index).
    let r = put(a, "/t", &[("refresh", "true"), ("ttl", "200")]);
    assert_eq!(r.status, 200, "{:?}", r.body);
    let (exp1, _) = check_ttl_fields(&r.json()["node"], 200, 200);
    let j = i + 1;
    assert_ok(
        &r,
        200,
        &ev_prev(
            "set",
            &format!(
                r#"{{"key":"/t","value":"tv","expiration":"{exp1}","ttl":200,"modifiedIndex":{j},"createdIndex":{j}}}"#
            ),
            &prev0,
        ),
    );

    // With prevExist=true: an update that keeps createdIndex.
    let r = put(
        a,
        "/t",
        &[("refresh", "true"), ("ttl", "300"), ("prevExist", "true")],
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    let (exp2, _) = check_ttl_fields(&r.json()["node"], 300, 300);
    assert_ok(
        &r,
        200,
        &ev_prev(
            "update",
            &format!(
                r#"{{"key":"/t","value":"tv","expiration":"{exp2}","ttl":300,"modifiedIndex":{},"createdIndex":{j}}}"#,
                j + 1
            ),
            &format!(
                r#"{{"key":"/t","value":"tv","expiration":"{exp1}","ttl":200,"modifiedIndex":{j},"createdIndex":{j}}}"#
            ),
        ),
    );
    // With prevValue: a compare-and-swap that keeps the value.
    let r = put(
        a,
        "/t",
        &[("refresh", "true"), ("ttl", "300"), ("prevValue", "tv")],
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.json()["action"], "compareAndSwap");
    assert_eq!(r.json()["node"]["value"], "tv");
    let r = put(
        a,
        "/t",
        &[("refresh", "true"), ("ttl", "300"), ("prevValue", "bad")],
    );
    assert_err(&r, 412, 101, COMPARE_FAILED, "[bad != tv]", j + 2);
    let g = getk(a, "/t");
    assert_eq!(g.json()["node"]["value"], "tv");
    check_ttl_fields(&g.json()["node"], 299, 300);

    // Errors: a value (211), no ttl (212), a missing key (100).
    let r = put(
        a,
        "/t",
        &[("refresh", "true"), ("value", "x"), ("ttl", "200")],
    );
    assert_invalid(
        &r,
        211,
        "Value provided on refresh",
        "A value was provided on a refresh",
    );
    let r = put(a, "/t", &[("refresh", "true")]);
    assert_invalid(
        &r,
        212,
        "A TTL must be provided on refresh",
        "No TTL value set",
    );
    let r = put(a, "/t", &[("refresh", "true"), ("value", "")]);
    assert_invalid(
        &r,
        212,
        "A TTL must be provided on refresh",
        "No TTL value set",
    );
    let r = put(a, "/none", &[("refresh", "true"), ("ttl", "5")]);
    assert_err(&r, 404, 100, KEY_NOT_FOUND, "/none", j + 2);
    assert_eq!(cur(a), j + 2);
}

#[test]
fn no_value_on_success() {
    let n = Node::start("node0");
    let a = &n.client;
    let i = cur(a) + 1;
    let r = put_form(a, "/v2/keys/n?noValueOnSuccess=true", &[("value", "1")]);
    assert_ok(&r, 201, r#"{"action":"set"}"#);
    assert_eq!(eidx(&r), i);
    let r = put(a, "/n", &[("value", "2"), ("noValueOnSuccess", "true")]);
    assert_ok(&r, 200, r#"{"action":"set"}"#);
    assert_eq!(eidx(&r), i + 1);
    let r = put(
        a,
        "/n",
        &[
            ("value", "3"),
            ("prevValue", "2"),
            ("noValueOnSuccess", "true"),
        ],
    );
    assert_ok(&r, 200, r#"{"action":"compareAndSwap"}"#);
    assert_eq!(eidx(&r), i + 2);
    let r = put(
        a,
        "/n2",
        &[
            ("value", "3"),
            ("prevExist", "false"),
            ("noValueOnSuccess", "true"),
        ],
    );
    assert_ok(&r, 201, r#"{"action":"create"}"#);
    let r = put(
        a,
        "/n2",
        &[
            ("value", "4"),
            ("prevExist", "true"),
            ("noValueOnSuccess", "true"),
        ],
    );
    assert_ok(&r, 200, r#"{"action":"update"}"#);
    assert_eq!(eidx(&r), i + 4);
    let r = post(a, "/q", &[("value", "j"), ("noValueOnSuccess", "true")]);
    assert_ok(&r, 201, r#"{"action":"create"}"#);
    assert_eq!(eidx(&r), i + 5);
    assert_ok(
        &getk(a, "/n"),
        200,
        &ev("get", &kv("/n", "3", i + 2, i + 1)),
    );

    // Failures keep their full error body.
    let r = put(
        a,
        "/n",
        &[
            ("value", "9"),
            ("prevValue", "2"),
            ("noValueOnSuccess", "true"),
        ],
    );
    assert_err(&r, 412, 101, COMPARE_FAILED, "[2 != 3]", i + 5);
    // DELETE ignores it.
    let r = del(a, "/n2?noValueOnSuccess=true");
    assert_ok(
        &r,
        200,
        &ev_prev(
            "delete",
            &bare("/n2", i + 6, i + 3),
            &kv("/n2", "4", i + 4, i + 3),
        ),
    );
    // The value is a boolean.
    let r = put(a, "/n", &[("value", "1"), ("noValueOnSuccess", "yes")]);
    assert_invalid(
        &r,
        209,
        INVALID_FIELD,
        "invalid value for \"noValueOnSuccess\"",
    );
}

// ---------------------------------------------------------------------------------------
// POST

#[test]
fn post_creates_in_order_keys() {
    let n = Node::start("node0");
    let a = &n.client;
    let before = cur(a);
    let i = before + 1;
    let name = |x: u64| format!("/queue/{x:020}");

    let r = post(a, "/queue", &[("value", "Job1")]);
    assert_ok(&r, 201, &ev("create", &kv(&name(i), "Job1", i, i)));
    assert_eq!(eidx(&r), i);
    let r = post(a, "/queue", &[("value", "Job2")]);
    assert_ok(
        &r,
        201,
        &ev("create", &kv(&name(i + 1), "Job2", i + 1, i + 1)),
    );
    // No value: "".
    let r = post(a, "/queue", &[]);
    assert_ok(&r, 201, &ev("create", &kv(&name(i + 2), "", i + 2, i + 2)));
    // A directory with a TTL.
    let r = post(a, "/queue", &[("dir", "true"), ("ttl", "50")]);
    assert_eq!(r.status, 201, "{:?}", r.body);
    let (exp, _) = check_ttl_fields(&r.json()["node"], 50, 50);
    assert_ok(
        &r,
        201,
        &ev(
            "create",
            &format!(
                r#"{{"key":"{}","dir":true,"expiration":"{exp}","ttl":50,"modifiedIndex":{},"createdIndex":{}}}"#,
                name(i + 3),
                i + 3,
                i + 3
            ),
        ),
    );

    // The sorted listing is the queue order.
    let r = getk(a, "/queue?sorted=true");
    let keys: Vec<String> = r.json()["node"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(keys, (i..i + 4).map(name).collect::<Vec<_>>());

    // Missing parents are created; the root works as a parent too.
    let r = post(a, "/deep/er", &[("value", "x")]);
    assert_ok(
        &r,
        201,
        &ev(
            "create",
            &kv(&format!("/deep/er/{:020}", i + 4), "x", i + 4, i + 4),
        ),
    );
    let r = post_form(a, "/v2/keys/", &[("value", "r")]);
    assert_ok(
        &r,
        201,
        &ev("create", &kv(&format!("/{:020}", i + 5), "r", i + 5, i + 5)),
    );
    // A key as the parent: 104.
    create(a, "/file", "f");
    let r = post(a, "/file", &[("value", "x")]);
    assert_err(&r, 400, 104, NOT_A_DIR, "/file", i + 6);
}

// ---------------------------------------------------------------------------------------
// DELETE

#[test]
fn delete_keys_and_directories() {
    let n = Node::start("node0");
    let a = &n.client;
    let ix = create(a, "/d1/x", "1");
    let iz = create(a, "/d1/y/z", "2");
    let ie = mkdir(a, "/e1");
    let ik = create(a, "/k", "kv");

    // A key.
    let r = del(a, "/k");
    assert_ok(
        &r,
        200,
        &ev_prev("delete", &bare("/k", ik + 1, ik), &kv("/k", "kv", ik, ik)),
    );
    assert_eq!(eidx(&r), ik + 1);
    assert_err(&getk(a, "/k"), 404, 100, KEY_NOT_FOUND, "/k", ik + 1);
    assert_err(&del(a, "/k"), 404, 100, KEY_NOT_FOUND, "/k", ik + 1);

    // A directory without flags: 102; dir=true on a non-empty one: 108.
    assert_err(&del(a, "/d1"), 403, 102, NOT_A_FILE, "/d1", ik + 1);
    assert_err(
        &del(a, "/d1?dir=true"),
        403,
        108,
        DIR_NOT_EMPTY,
        "/d1",
        ik + 1,
    );
    // dir=true on an empty directory.
    let r = del(a, "/e1?dir=true");
    assert_ok(
        &r,
        200,
        &ev_prev("delete", &dirn("/e1", ik + 2, ie), &dirn("/e1", ie, ie)),
    );
    // dir=true on a key deletes the key.
    let r = del(a, "/d1/x?dir=true");
    assert_ok(
        &r,
        200,
        &ev_prev(
            "delete",
            &bare("/d1/x", ik + 3, ix),
            &kv("/d1/x", "1", ix, ix),
        ),
    );
    // recursive=true on a non-empty directory (implies dir).
    let r = del(a, "/d1?recursive=true");
    assert_ok(
        &r,
        200,
        &ev_prev("delete", &dirn("/d1", ik + 4, ix), &dirn("/d1", ix, ix)),
    );
    assert_err(&getk(a, "/d1/y/z"), 404, 100, KEY_NOT_FOUND, "/d1", ik + 4);
    assert_err(
        &del(a, "/d1?recursive=true"),
        404,
        100,
        KEY_NOT_FOUND,
        "/d1",
        ik + 4,
    );
    let _ = iz;

    // The root, however asked.
    for q in ["/", "/?recursive=true", "/?dir=true", ""] {
        let r = del(a, q);
        assert_err(&r, 400, 107, ROOT_RO, "/", ik + 4);
    }

    // A key with a TTL: prevNode shows expiration and ttl.
    let r = put(a, "/t", &[("value", "v"), ("ttl", "100")]);
    let it = midx(&r);
    let (exp, _) = check_ttl_fields(&r.json()["node"], 100, 100);
    let r = del(a, "/t");
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["prevNode"]["expiration"], exp.as_str());
    check_ttl_fields(&v["prevNode"], 99, 100);
    assert_eq!(v["node"], jv(&bare("/t", it + 1, it)));
    assert_eq!(cur(a), it + 1);
}

#[test]
fn compare_and_delete() {
    let n = Node::start("node0");
    let a = &n.client;
    let i = create(a, "/c", "two");

    assert_err(
        &del(a, "/c?prevValue=nope"),
        412,
        101,
        COMPARE_FAILED,
        "[nope != two]",
        i,
    );
    assert_err(
        &del(a, "/c?prevIndex=1"),
        412,
        101,
        COMPARE_FAILED,
        &format!("[1 != {i}]"),
        i,
    );
    assert_err(
        &del(a, "/c?prevIndex=1&prevValue=nope"),
        412,
        101,
        COMPARE_FAILED,
        &format!("[nope != two] [1 != {i}]"),
        i,
    );
    assert_invalid(
        &del(a, "/c?prevValue="),
        201,
        PREV_VALUE_REQUIRED,
        "\"prevValue\" cannot be empty",
    );
    assert_invalid(
        &del(a, "/c?prevIndex=x"),
        203,
        INDEX_NAN,
        "invalid value for \"prevIndex\"",
    );
    mkdir(a, "/q");
    assert_err(&del(a, "/q?prevValue=x"), 403, 102, NOT_A_FILE, "/q", i + 1);
    assert_err(
        &del(a, "/q?prevValue=x&recursive=true"),
        403,
        102,
        NOT_A_FILE,
        "/q",
        i + 1,
    );
    assert_err(
        &del(a, "/nnn?prevValue=x"),
        404,
        100,
        KEY_NOT_FOUND,
        "/nnn",
        i + 1,
    );

    let r = del(a, "/c?prevValue=two");
    assert_ok(
        &r,
        200,
        &ev_prev(
            "compareAndDelete",
            &bare("/c", i + 2, i),
            &kv("/c", "two", i, i),
        ),
    );
    let j = create(a, "/c", "again");
    let r = del(a, &format!("/c?prevIndex={j}"));
    assert_ok(
        &r,
        200,
        &ev_prev(
            "compareAndDelete",
            &bare("/c", j + 1, j),
            &kv("/c", "again", j, j),
        ),
    );
    assert_eq!(cur(a), j + 1);
}

// ---------------------------------------------------------------------------------------
// parameter parsing

#[test]
fn boolean_parameters_use_go_parse_bool() {
    let n = Node::start("node0");
    let a = &n.client;
    create(a, "/a/b", "1");
    let r = getk(a, "/a?recursive=yes");
    assert_invalid(&r, 209, INVALID_FIELD, "invalid value for \"recursive\"");
    let good = getk(a, "/a?recursive=true");
    assert_eq!(good.status, 200);
    for v in ["TRUE", "True", "t", "T", "1"] {
        let r = getk(a, &format!("/a?recursive={v}"));
        assert_eq!(r.status, 200, "recursive={v}: {:?}", r.body);
        assert_eq!(r.body, good.body, "recursive={v}");
    }
    for v in ["false", "FALSE", "False", "f", "F", "0"] {
        let r = getk(a, &format!("/a?recursive={v}"));
        assert_eq!(r.status, 200, "recursive={v}: {:?}", r.body);
    }
    for (q, name) in [
        ("sorted=yes", "\"sorted\""),
        ("quorum=yes", "\"quorum\""),
        ("recursive=", "\"recursive\""),
        ("wait=on", "\"wait\""),
        ("stream=2", "\"stream\""),
    ] {
        let r = getk(a, &format!("/a?{q}"));
        assert_invalid(&r, 209, INVALID_FIELD, &format!("invalid value for {name}"));
    }
    // Form fields of PUT (etcd quotes some names and not others).
    let r = put(a, "/v", &[("value", "1"), ("dir", "maybe")]);
    assert_invalid(&r, 209, INVALID_FIELD, "invalid value for \"dir\"");
    let r = put(a, "/v", &[("value", "1"), ("prevExist", "maybe")]);
    assert_invalid(&r, 209, INVALID_FIELD, "invalid value for prevExist");
    let r = put(a, "/v", &[("refresh", "maybe"), ("ttl", "4")]);
    assert_invalid(&r, 209, INVALID_FIELD, "invalid value for refresh");
    let r = del(a, "/a?recursive=yes");
    assert_invalid(&r, 209, INVALID_FIELD, "invalid value for \"recursive\"");
    let r = del(a, "/a?dir=yes");
    assert_invalid(&r, 209, INVALID_FIELD, "invalid value for \"dir\"");
    // TRUE works on writes too.
    let r = put(a, "/v", &[("dir", "TRUE")]);
    assert_eq!(r.status, 201);
    assert_eq!(r.json()["node"]["dir"], true);
}

#[test]
fn wait_is_only_for_get() {
    let n = Node::start("node0");
    let a = &n.client;
    let before = cur(a);
    let cause = "\"wait\" can only be used with GET requests";
    let r = put_form(a, "/v2/keys/x?wait=true", &[("value", "1")]);
    assert_invalid(&r, 209, INVALID_FIELD, cause);
    let r = put(a, "/x", &[("value", "1"), ("wait", "true")]);
    assert_invalid(&r, 209, INVALID_FIELD, cause);
    let r = post_form(a, "/v2/keys/x?wait=true", &[("value", "1")]);
    assert_invalid(&r, 209, INVALID_FIELD, cause);
    let r = del(a, "/x?wait=true");
    assert_invalid(&r, 209, INVALID_FIELD, cause);
    // wait=false is fine.
    let r = put(a, "/x", &[("value", "1"), ("wait", "false")]);
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(eidx(&r), before + 1);
}

#[test]
fn ttl_prev_value_and_prev_index_validation() {
    let n = Node::start("node0");
    let a = &n.client;
    let before = cur(a);
    let ttl_cause = "invalid value for \"ttl\"";
    for t in ["abc", "-1", "1.5", "1e3", " 5"] {
        let r = put(a, "/x", &[("value", "1"), ("ttl", t)]);
        assert_invalid(&r, 202, TTL_NAN, ttl_cause);
    }
    let r = post(a, "/q", &[("value", "1"), ("ttl", "-5")]);
    assert_invalid(&r, 202, TTL_NAN, ttl_cause);
    let r = put(a, "/x", &[("value", "1"), ("prevValue", "")]);
    assert_invalid(
        &r,
        201,
        PREV_VALUE_REQUIRED,
        "\"prevValue\" cannot be empty",
    );
    for p in ["abc", "-1", "1.0"] {
        let r = put(a, "/x", &[("value", "1"), ("prevIndex", p)]);
        assert_invalid(&r, 203, INDEX_NAN, "invalid value for \"prevIndex\"");
    }
    assert_eq!(cur(a), before, "rejected requests consume no index");
    // An empty ttl is no TTL.
    let r = put(a, "/x", &[("value", "1"), ("ttl", "")]);
    assert_ok(&r, 201, &ev("set", &kv("/x", "1", before + 1, before + 1)));
}

// ---------------------------------------------------------------------------------------
// paths and encodings

#[test]
fn percent_encoded_keys() {
    let n = Node::start("node0");
    let a = &n.client;
    let i = cur(a) + 1;
    // %2F is decoded before routing: p%2Fq is the key /p/q.
    let r = put_form(a, "/v2/keys/p%2Fq", &[("value", "1")]);
    assert_ok(&r, 201, &ev("set", &kv("/p/q", "1", i, i)));
    assert_ok(
        &getk(a, "/p"),
        200,
        &ev("get", &dir_with("/p", &[kv("/p/q", "1", i, i)], i, i)),
    );
    assert_ok(
        &get(a, "/v2/keys/p%2fq"),
        200,
        &ev("get", &kv("/p/q", "1", i, i)),
    );
    let r = put_form(a, "/v2/keys/sp%20ace", &[("value", "1")]);
    assert_ok(&r, 201, &ev("set", &kv("/sp ace", "1", i + 1, i + 1)));
    let r = put_form(a, "/v2/keys/uni%C3%A9", &[("value", "é")]);
    assert_ok(&r, 201, &ev("set", &kv("/unié", "é", i + 2, i + 2)));
    assert_ok(
        &get(a, "/v2/keys/uni%C3%A9"),
        200,
        &ev("get", &kv("/unié", "é", i + 2, i + 2)),
    );
    // Characters Go escapes in JSON.
    let r = put_form(a, "/v2/keys/a%3Cb%3E%26", &[("value", "<&>")]);
    assert_ok(&r, 201, &ev("set", &kv("/a<b>&", "<&>", i + 3, i + 3)));
    assert!(
        r.body.contains(r#""key":"/a\u003cb\u003e\u0026""#),
        "{}",
        r.body
    );
}

#[test]
fn encoded_slashes_that_make_an_unclean_path_redirect_like_etcd() {
    // etcd 3.4 decodes the path before the Go mux cleans it, so an encoded `//`, `/./` or
    // `/../` inside the key is answered with a 301 to the cleaned path.
    let n = Node::start("node0");
    let a = &n.client;
    create(a, "/p/q", "1");
    for (path, loc) in [
        ("/v2/keys/p%2F%2Fq", "/v2/keys/p/q"),
        ("/v2/keys/p%2F.%2Fq?a=b", "/v2/keys/p/q?a=b"),
        ("/v2/keys/x%2F..%2Fp", "/v2/keys/p"),
    ] {
        let r = get(a, path);
        assert_eq!(r.status, 301, "GET {path}: {} {:?}", r.status, r.body);
        assert_eq!(r.header("location"), Some(loc), "GET {path}");
    }
    // `/v2/keys%2Fp` is `/v2/keys/p` once decoded.
    let r = get(a, "/v2/keys%2Fp");
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.json()["node"]["key"], "/p", "{}", r.body);
}

#[test]
fn unclean_paths_redirect_301() {
    let n = Node::start("node0");
    let a = &n.client;
    create(a, "/p", "1");
    for (path, loc) in [
        ("/v2/keys//p", "/v2/keys/p"),
        ("/v2/keys/./p", "/v2/keys/p"),
        ("/v2/keys/a/../p?x=1", "/v2/keys/p?x=1"),
        ("/v2/keys/p//", "/v2/keys/p/"),
    ] {
        let r = get(a, path);
        assert_eq!(r.status, 301, "GET {path}: {:?}", r.body);
        assert_eq!(r.header("location"), Some(loc), "GET {path}");
        let l = loc.to_string();
        assert_eq!(r.content_type(), Some("text/html"), "GET {path}");
        assert_eq!(
            r.body,
            format!("<a href=\"{l}\">Moved Permanently</a>.\n\n"),
            "GET {path}"
        );
    }
    let before = cur(a);
    let r = put_form(a, "/v2/keys//w?x=1", &[("value", "1")]);
    assert_eq!(r.status, 301, "{:?}", r.body);
    assert_eq!(r.header("location"), Some("/v2/keys/w?x=1"));
    assert_eq!(r.body, "");
    let r = delete(a, "/v2/keys/./p");
    assert_eq!(r.status, 301);
    assert_eq!(cur(a), before, "a redirect writes nothing");
    assert_eq!(getk(a, "/w").status, 404);
    assert_eq!(getk(a, "/p").status, 200);
}

#[test]
fn invalid_percent_encoding_is_a_json_400() {
    let n = Node::start("node0");
    let a = &n.client;
    let before = cur(a);
    for (method, path) in [
        ("GET", "/v2/keys/%zz"),
        ("PUT", "/v2/keys/%zz"),
        ("DELETE", "/v2/keys/a%2"),
    ] {
        let r = request(a, method, path, &[], b"");
        assert_eq!(r.status, 400, "{method} {path}: {:?}", r.body);
        assert_eq!(
            r.content_type(),
            Some("application/json"),
            "{method} {path}"
        );
        assert!(r.body.ends_with('\n'), "{:?}", r.body);
        let v = r.json();
        let o = v.as_object().expect("JSON object");
        assert!(o["errorCode"].as_u64().is_some(), "{}", r.body);
        assert!(o["message"].as_str().is_some(), "{}", r.body);
        assert_eq!(o["index"], 0, "{}", r.body);
        assert_eq!(eidx(&r), 0);
    }
    assert_eq!(cur(a), before);
}

#[test]
fn other_methods_are_405() {
    let n = Node::start("node0");
    let a = &n.client;
    for m in ["PATCH", "TRACE", "PROPFIND"] {
        for p in ["/v2/keys/x", "/v2/keys/", "/v2/keys"] {
            let r = request(a, m, p, &[], b"");
            assert_eq!(r.status, 405, "{m} {p}: {:?}", r.body);
            assert_eq!(
                r.header("allow"),
                Some("HEAD,GET,PUT,POST,DELETE"),
                "{m} {p}"
            );
            assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
            assert_eq!(r.body, "Method Not Allowed\n");
        }
    }
}

#[test]
fn quorum_get_answers_like_a_plain_get() {
    let n = Node::start("node0");
    let a = &n.client;
    let i = create(a, "/qd/k", "v");
    for (q, expected) in [
        ("/qd/k?quorum=true", ev("get", &kv("/qd/k", "v", i, i))),
        (
            "/qd?quorum=true&recursive=true&sorted=true",
            ev("get", &dir_with("/qd", &[kv("/qd/k", "v", i, i)], i, i)),
        ),
    ] {
        let r = getk(a, q);
        assert_ok(&r, 200, &expected);
        assert_eq!(eidx(&r), i);
    }
    assert_err(
        &getk(a, "/none?quorum=true"),
        404,
        100,
        KEY_NOT_FOUND,
        "/none",
        i,
    );
}

#[test]
fn large_values_and_the_body_limit() {
    let n = Node::start("node0");
    let a = &n.client;
    let big = "v".repeat(1024 * 1024);
    let r = put(a, "/big", &[("value", &big)]);
    assert_eq!(r.status, 201, "1 MiB value");
    let i = midx(&r);
    assert_ok(&r, 201, &ev("set", &kv("/big", &big, i, i)));
    let g = getk(a, "/big");
    assert_ok(&g, 200, &ev("get", &kv("/big", &big, i, i)));

    // A body over 1.5 MiB: 413 with an etcd JSON error; nothing written.
    let huge = "w".repeat(3 * 1024 * 1024 / 2 + 16);
    let r = put(a, "/huge", &[("value", &huge)]);
    assert_eq!(r.status, 413, "{:?}", &r.body[..r.body.len().min(200)]);
    assert_eq!(r.content_type(), Some("application/json"));
    assert!(r.body.ends_with("}\n"), "{:?}", r.body);
    let v = r.json();
    let o = v.as_object().expect("object");
    let keys: Vec<&str> = o.keys().map(|s| s.as_str()).collect();
    assert!(o["errorCode"].as_u64().is_some(), "{}", r.body);
    assert!(o["message"].as_str().is_some(), "{}", r.body);
    assert_eq!(
        o.get("index"),
        Some(&Value::from(0)),
        "v2 error bodies carry index (0 for request errors): {} (fields {keys:?})",
        r.body
    );
    assert_eq!(r.header("x-etcd-index"), Some("0"), "{:?}", r.headers);
    assert_eq!(getk(a, "/huge").status, 404);
    assert_eq!(cur(a), i);
}

/// Sends `raw` on a fresh connection, closes the sending side, returns the whole answer.
fn send_and_close(addr: &str, raw: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    s.write_all(raw).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn a_body_cut_short_is_a_bad_request_not_too_large() {
    let n = Node::start("node0");
    let a = &n.client;
    let before = cur(a);
    // A Content-Length longer than what comes.
    let answer = send_and_close(
        a,
        b"PUT /v2/keys/short HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nvalue=abc",
    );
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(answer.contains("\"errorCode\":210"), "{answer}");
    // A chunked body with a broken chunk size.
    let answer = send_and_close(
        a,
        b"PUT /v2/keys/short HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n9\r\nvalue=abc\r\nZZ\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(answer.contains("\"errorCode\":210"), "{answer}");
    // Nothing was written, and the node goes on serving.
    assert_eq!(getk(a, "/short").status, 404);
    assert_eq!(cur(a), before);
    assert_eq!(put(a, "/short", &[("value", "ok")]).status, 201);
}

// ---------------------------------------------------------------------------------------
// TTL

#[test]
fn ttl_keys_show_expiration_and_ttl() {
    let n = Node::start("node0");
    let a = &n.client;
    let r = put(a, "/t", &[("value", "v"), ("ttl", "5")]);
    assert_eq!(r.status, 201);
    let i = midx(&r);
    let (exp, _) = check_ttl_fields(&r.json()["node"], 5, 5);
    assert_ok(
        &r,
        201,
        &ev(
            "set",
            &format!(
                r#"{{"key":"/t","value":"v","expiration":"{exp}","ttl":5,"modifiedIndex":{i},"createdIndex":{i}}}"#
            ),
        ),
    );
    // GET right away: ceil(remaining) = 5; a little later it drops.
    let g = getk(a, "/t");
    let (gexp, gttl) = check_ttl_fields(&g.json()["node"], 4, 5);
    assert_eq!(gexp, exp);
    assert_ok(
        &g,
        200,
        &ev(
            "get",
            &format!(
                r#"{{"key":"/t","value":"v","expiration":"{exp}","ttl":{gttl},"modifiedIndex":{i},"createdIndex":{i}}}"#
            ),
        ),
    );
    poll_until(Duration::from_secs(4), "ttl to drop below 5", || {
        let g = getk(a, "/t");
        let t = g.json()["node"]["ttl"].as_i64()?;
        (t < 5).then_some(())
    });
    // Listings show ttl too.
    let l = getk(a, "/");
    assert_eq!(l.json()["node"]["nodes"][0]["expiration"], exp.as_str());
    // A set without ttl makes it permanent.
    let r = put(a, "/t", &[("value", "v2")]);
    assert_eq!(r.status, 200);
    let (_, pttl) = check_ttl_fields(&r.json()["prevNode"], 1, 5);
    assert_ok(
        &r,
        200,
        &ev_prev(
            "set",
            &kv("/t", "v2", i + 1, i + 1),
            &format!(
                r#"{{"key":"/t","value":"v","expiration":"{exp}","ttl":{pttl},"modifiedIndex":{i},"createdIndex":{i}}}"#
            ),
        ),
    );
    // CAS and update without ttl clear it too.
    let r = put(a, "/t2", &[("value", "a"), ("ttl", "50")]);
    assert_eq!(r.status, 201);
    let r = put(a, "/t2", &[("value", "b"), ("prevValue", "a")]);
    assert!(!r.json()["node"].to_string().contains("ttl"), "{}", r.body);
    let r = put(
        a,
        "/t2",
        &[("value", "c"), ("ttl", "50"), ("prevExist", "true")],
    );
    check_ttl_fields(&r.json()["node"], 50, 50);
    let r = put(a, "/t2", &[("value", "d"), ("prevExist", "true")]);
    assert!(!r.json()["node"].to_string().contains("ttl"), "{}", r.body);
}

#[test]
fn ttl_keys_expire_with_an_expire_event() {
    let n = Node::start("node0");
    let a = &n.client;
    // The TTLs leave the three writes ample time to land before anything expires (the
    // index checks below count on it).
    let r = put(a, "/ex", &[("value", "1"), ("ttl", "3")]);
    assert_eq!(r.status, 201);
    let i = midx(&r);
    let exp = r.json()["node"]["expiration"].as_str().unwrap().to_string();
    // A directory with a TTL takes its children along.
    let r = put(a, "/exd", &[("dir", "true"), ("ttl", "3")]);
    let id = midx(&r);
    let ic = create(a, "/exd/child", "c");
    assert_eq!((id, ic), (i + 1, i + 2));

    let gone = poll_until(Duration::from_secs(10), "the TTL key to expire", || {
        let g = getk(a, "/ex");
        (g.status == 404).then_some(g)
    });
    assert_eq!(gone.json()["cause"], "/ex");
    poll_until(Duration::from_secs(10), "the TTL dir to expire", || {
        (getk(a, "/exd/child").status == 404).then_some(())
    });
    // Each expired node consumed exactly one index (the child goes with its directory).
    assert_eq!(cur(a), i + 4);
    let r = get(a, "/v2/keys/");
    assert_ok(&r, 200, r#"{"action":"get","node":{"dir":true}}"#);

    // The history holds the expire events.
    let w = getk(a, &format!("/ex?wait=true&waitIndex={}", i + 1));
    assert_eq!(w.status, 200);
    let body = w.body.clone();
    let v = w.json();
    let m = v["node"]["modifiedIndex"].as_u64().unwrap();
    assert!(m == i + 3 || m == i + 4, "{body}");
    assert_eq!(
        body,
        format!(
            "{}\n",
            ev_prev(
                "expire",
                &bare("/ex", m, i),
                &format!(
                    r#"{{"key":"/ex","value":"1","expiration":"{exp}","modifiedIndex":{i},"createdIndex":{i}}}"#
                )
            )
        )
    );
    let w = getk(a, &format!("/exd?wait=true&waitIndex={}", i + 3));
    let v = w.json();
    assert_eq!(v["action"], "expire", "{}", w.body);
    assert_eq!(v["node"]["key"], "/exd");
    assert_eq!(v["node"]["dir"], true);
    assert_eq!(v["prevNode"]["dir"], true);
    let md = v["node"]["modifiedIndex"].as_u64().unwrap();
    assert_eq!(m + md, 2 * i + 7, "one index each: {m} and {md}");
}
