//! Black-box tests of the v1 key API (`/v1/keys`) and the small v1 endpoints, following the
//! answers etcd v0.1.2 gave, as amended by the choices in docs/api.md (v2 status mapping, JSON
//! content type, store index).

mod common;

use common::*;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------
// helpers

/// The `index` field of a JSON object response.
fn idx(r: &Resp) -> u64 {
    r.json()["index"]
        .as_u64()
        .unwrap_or_else(|| panic!("no index in {:?}", r.body))
}

/// The current store index as reported by a GET (root listing entries carry it).
fn store_index(addr: &str) -> u64 {
    let r = get(addr, "/v1/keys/");
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    let first = &v.as_array().expect("root listing is an array")[0];
    first["index"].as_u64().expect("index")
}

fn assert_json_ct(r: &Resp) {
    assert_eq!(
        r.content_type(),
        Some("application/json"),
        "Content-Type of {} {:?}",
        r.status,
        r.body
    );
}

/// 200, JSON content type, and exactly this body (byte form: field order and escaping).
fn assert_ok(r: &Resp, expected: &str) {
    assert_eq!(r.status, 200, "body {:?}", r.body);
    assert_json_ct(r);
    assert_eq!(r.body, expected);
}

/// A v1 error: status, JSON content type, and the exact object (a trailing newline allowed).
fn assert_err(r: &Resp, status: u16, code: u64, message: &str, cause: &str) {
    assert_eq!(r.status, status, "body {:?}", r.body);
    assert_json_ct(r);
    let expected = format!(
        "{{\"errorCode\":{code},\"message\":{},\"cause\":{}}}",
        go_json_string(message),
        go_json_string(cause)
    );
    assert_eq!(r.body.trim_end_matches('\n'), expected);
}

/// A listing as a vector of objects sorted by key (server order is unspecified).
fn listing(r: &Resp) -> Vec<Value> {
    assert_eq!(r.status, 200, "body {:?}", r.body);
    assert_json_ct(r);
    let mut v = r
        .json()
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {:?}", r.body))
        .clone();
    v.sort_by(|a, b| a["key"].as_str().cmp(&b["key"].as_str()));
    v
}

fn set(addr: &str, key: &str, value: &str) -> Resp {
    post_form(addr, &format!("/v1/keys/{key}"), &[("value", value)])
}

fn set_ok(addr: &str, key: &str, value: &str) -> u64 {
    let r = set(addr, key, value);
    assert_eq!(r.status, 200, "set {key}: {:?}", r.body);
    idx(&r)
}

const VALUE_REQUIRED: &str = "Value is Required in POST form";
const TTL_NAN: &str = "The given TTL in POST form is not a number";
const KEYWORD: &str = "The prefix of the given key is a keyword in etcd";
const PREV_NE: &str = "The given PrevValue is not equal to the value of the key";

// ---------------------------------------------------------------------------------------
// set / get / update / delete

#[test]
fn readme_walkthrough_set_get_update_delete() {
    let n = Node::start("node0");
    let a = &n.client;

    let r = set(a, "message", "Hello world");
    let i = idx(&r);
    assert_ok(
        &r,
        &format!(
            r#"{{"action":"SET","key":"/message","value":"Hello world","newKey":true,"index":{i}}}"#
        ),
    );

    let r = get(a, "/v1/keys/message");
    assert_ok(
        &r,
        &format!(r#"{{"action":"GET","key":"/message","value":"Hello world","index":{i}}}"#),
    );

    let r = set(a, "message", "Hello etcd");
    assert_ok(
        &r,
        &format!(
            r#"{{"action":"SET","key":"/message","prevValue":"Hello world","value":"Hello etcd","index":{}}}"#,
            i + 1
        ),
    );

    let r = get(a, "/v1/keys/message");
    assert_ok(
        &r,
        &format!(
            r#"{{"action":"GET","key":"/message","value":"Hello etcd","index":{}}}"#,
            i + 1
        ),
    );

    let r = delete(a, "/v1/keys/message");
    assert_ok(
        &r,
        &format!(
            r#"{{"action":"DELETE","key":"/message","prevValue":"Hello etcd","index":{}}}"#,
            i + 2
        ),
    );

    let r = get(a, "/v1/keys/message");
    assert_err(&r, 404, 100, "Key Not Found", "get: /message");

    let r = delete(a, "/v1/keys/message");
    assert_err(&r, 404, 100, "Key Not Found", "delete: /message");

    // Neither failure consumed an index.
    assert_eq!(store_index(a), i + 2);
    let r = set(a, "after", "1");
    assert_eq!(idx(&r), i + 3);
}

#[test]
fn first_user_index_follows_internal_writes() {
    // The machine registration is an internal write; the first user write comes after it.
    let n = Node::start("node0");
    let before = store_index(&n.client);
    assert!(before >= 1, "registration consumed an index: {before}");
    let i = set_ok(&n.client, "k", "v");
    assert_eq!(i, before + 1);
}

#[test]
fn put_sets_like_post() {
    let n = Node::start("node0");
    let a = &n.client;
    let r = put_form(a, "/v1/keys/putkey", &[("value", "x")]);
    let i = idx(&r);
    assert_ok(
        &r,
        &format!(r#"{{"action":"SET","key":"/putkey","value":"x","newKey":true,"index":{i}}}"#),
    );
    let r = put_form(a, "/v1/keys/putkey", &[("value", "y")]);
    assert_ok(
        &r,
        &format!(
            r#"{{"action":"SET","key":"/putkey","prevValue":"x","value":"y","index":{}}}"#,
            i + 1
        ),
    );
    let r = get(a, "/v1/keys/putkey");
    assert_ok(
        &r,
        &format!(
            r#"{{"action":"GET","key":"/putkey","value":"y","index":{}}}"#,
            i + 1
        ),
    );
    // PUT with prevValue is a TestAndSet too.
    let r = put_form(a, "/v1/keys/putkey", &[("prevValue", "zz"), ("value", "w")]);
    assert_err(&r, 412, 101, PREV_NE, "TestAndSet: y!=zz");
    // PUT without value.
    let r = put_form(a, "/v1/keys/putkey", &[]);
    assert_err(&r, 400, 200, VALUE_REQUIRED, "Set");
    assert_eq!(store_index(a), i + 1);
}

#[test]
fn value_is_required() {
    let n = Node::start("node0");
    let a = &n.client;
    let before = store_index(a);

    // No value at all (empty body).
    let r = request(a, "POST", "/v1/keys/novalue", &[], b"");
    assert_err(&r, 400, 200, VALUE_REQUIRED, "Set");
    // value= (empty).
    let r = post_form(a, "/v1/keys/novalue", &[("value", "")]);
    assert_err(&r, 400, 200, VALUE_REQUIRED, "Set");
    // Only a ttl.
    let r = post_form(a, "/v1/keys/novalue", &[("ttl", "5")]);
    assert_err(&r, 400, 200, VALUE_REQUIRED, "Set");
    // A JSON body is not a form: ignored.
    let r = request(
        a,
        "POST",
        "/v1/keys/json",
        &[("Content-Type", "application/json")],
        br#"{"value":"x"}"#,
    );
    assert_err(&r, 400, 200, VALUE_REQUIRED, "Set");
    // A form body without the form content type is not read either.
    let r = request(
        a,
        "POST",
        "/v1/keys/json",
        &[("Content-Type", "text/plain")],
        b"value=x",
    );
    assert_err(&r, 400, 200, VALUE_REQUIRED, "Set");

    for k in ["novalue", "json"] {
        let r = get(a, &format!("/v1/keys/{k}"));
        assert_err(&r, 404, 100, "Key Not Found", &format!("get: /{k}"));
    }
    assert_eq!(store_index(a), before);
}

#[test]
fn ttl_must_be_an_integer() {
    let n = Node::start("node0");
    let a = &n.client;
    let before = store_index(a);
    for bad in ["abc", "1.5", "5s", " 5", "1e3", "99999999999999999999999"] {
        let r = post_form(a, "/v1/keys/badttl", &[("value", "x"), ("ttl", bad)]);
        assert_err(&r, 400, 202, TTL_NAN, "Set");
    }
    let r = get(a, "/v1/keys/badttl");
    assert_err(&r, 404, 100, "Key Not Found", "get: /badttl");
    assert_eq!(store_index(a), before);

    // An empty ttl means "no TTL": a permanent key.
    let r = post_form(a, "/v1/keys/emptyttl", &[("value", "x"), ("ttl", "")]);
    let i = idx(&r);
    assert_eq!(i, before + 1);
    assert_ok(
        &r,
        &format!(r#"{{"action":"SET","key":"/emptyttl","value":"x","newKey":true,"index":{i}}}"#),
    );
    let r = get(a, "/v1/keys/emptyttl");
    assert_ok(
        &r,
        &format!(r#"{{"action":"GET","key":"/emptyttl","value":"x","index":{i}}}"#),
    );
}

// ---------------------------------------------------------------------------------------
// keywords and the machine registry

#[test]
fn keyword_prefixes_are_refused_for_set() {
    let n = Node::start("node0");
    let a = &n.client;
    let before = store_index(a);
    for key in [
        "_etcd/foo",
        "_etcd",
        "_etcd/machines/node0",
        "_etcd/a/b/c",
        "ephemeralNodes/x",
        "ephemeralNodes",
    ] {
        let r = set(a, key, "x");
        assert_err(&r, 400, 400, KEYWORD, "Set");
        let r = put_form(a, &format!("/v1/keys/{key}"), &[("value", "x")]);
        assert_err(&r, 400, 400, KEYWORD, "Set");
        // TestAndSet goes through the same check.
        let r = post_form(
            a,
            &format!("/v1/keys/{key}"),
            &[("value", "x"), ("prevValue", "y")],
        );
        assert_err(&r, 400, 400, KEYWORD, "Set");
    }
    assert_eq!(store_index(a), before);

    // Only the first segment counts, and only exact names.
    let i = set_ok(a, "_etcdx", "1");
    assert_eq!(i, before + 1);
    let i = set_ok(a, "foo/_etcd", "1");
    assert_eq!(i, before + 2);
    let i = set_ok(a, "ephemeralNodesX/y", "1");
    assert_eq!(i, before + 3);

    // The registry entry was not touched by the refused writes.
    let r = get(a, "/v1/keys/_etcd/machines/node0");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["value"],
        format!("raft=http://{}&etcd=http://{}", n.peer, n.client)
    );
}

#[test]
fn machine_registry_is_readable() {
    let n = Node::start("node0");
    let a = &n.client;
    let i = store_index(a);

    let r = get(a, "/v1/keys/_etcd/machines/node0");
    assert_ok(
        &r,
        &format!(
            r#"{{"action":"GET","key":"/_etcd/machines/node0","value":"raft=http://{}\u0026etcd=http://{}","index":{i}}}"#,
            n.peer, n.client
        ),
    );

    let r = get(a, "/v1/keys/_etcd/machines");
    assert_ok(
        &r,
        &format!(
            r#"[{{"action":"GET","key":"/_etcd/machines/node0","value":"raft=http://{}\u0026etcd=http://{}","index":{i}}}]"#,
            n.peer, n.client
        ),
    );
    let r = get(a, "/v1/keys/_etcd/machines/");
    assert_eq!(r.status, 200);
    assert_eq!(r.json().as_array().map(|v| v.len()), Some(1));

    let r = get(a, "/v1/keys/_etcd");
    assert_ok(
        &r,
        &format!(r#"[{{"action":"GET","key":"/_etcd/machines","dir":true,"index":{i}}}]"#),
    );

    let r = get(a, "/v1/keys/_etcd/machines/nobody");
    assert_err(&r, 404, 100, "Key Not Found", "get: /_etcd/machines/nobody");
}

// ---------------------------------------------------------------------------------------
// TestAndSet

#[test]
fn test_and_set_all_cases() {
    let n = Node::start("node0");
    let a = &n.client;

    let r = set(a, "testAndSet", "one");
    let i = idx(&r);
    assert_ok(
        &r,
        &format!(
            r#"{{"action":"SET","key":"/testAndSet","value":"one","newKey":true,"index":{i}}}"#
        ),
    );

    // Mismatch.
    let r = post_form(
        a,
        "/v1/keys/testAndSet",
        &[("prevValue", "two"), ("value", "three")],
    );
    assert_err(&r, 412, 101, PREV_NE, "TestAndSet: one!=two");
    assert_eq!(store_index(a), i);

    // Match.
    let r = post_form(
        a,
        "/v1/keys/testAndSet",
        &[("prevValue", "one"), ("value", "two")],
    );
    assert_ok(
        &r,
        &format!(
            r#"{{"action":"SET","key":"/testAndSet","prevValue":"one","value":"two","index":{}}}"#,
            i + 1
        ),
    );
    let r = get(a, "/v1/keys/testAndSet");
    assert_ok(
        &r,
        &format!(
            r#"{{"action":"GET","key":"/testAndSet","value":"two","index":{}}}"#,
            i + 1
        ),
    );

    // Missing key with a non-empty prevValue: the key as given in the URL, and a trailing space.
    let r = post_form(
        a,
        "/v1/keys/tas_missing",
        &[("prevValue", "x"), ("value", "y")],
    );
    assert_err(
        &r,
        404,
        100,
        "Key Not Found",
        "TestAndSet: key not found and previousValue is not empty tas_missing:x ",
    );
    let r = post_form(
        a,
        "/v1/keys/dir/tas_missing",
        &[("prevValue", "x"), ("value", "y")],
    );
    assert_err(
        &r,
        404,
        100,
        "Key Not Found",
        "TestAndSet: key not found and previousValue is not empty dir/tas_missing:x ",
    );
    assert_eq!(store_index(a), i + 1);

    // Missing key with an empty prevValue: created.
    let r = post_form(
        a,
        "/v1/keys/tas_missing",
        &[("prevValue", ""), ("value", "y")],
    );
    assert_ok(
        &r,
        &format!(
            r#"{{"action":"SET","key":"/tas_missing","value":"y","newKey":true,"index":{}}}"#,
            i + 2
        ),
    );

    // Existing key with an empty prevValue: 101 `y!=`.
    let r = post_form(
        a,
        "/v1/keys/tas_missing",
        &[("prevValue", ""), ("value", "z")],
    );
    assert_err(&r, 412, 101, PREV_NE, "TestAndSet: y!=");
    let r = get(a, "/v1/keys/tas_missing");
    assert_ok(
        &r,
        &format!(
            r#"{{"action":"GET","key":"/tas_missing","value":"y","index":{}}}"#,
            i + 2
        ),
    );

    // prevValue without value: value is checked first.
    let r = post_form(a, "/v1/keys/testAndSet", &[("prevValue", "two")]);
    assert_err(&r, 400, 200, VALUE_REQUIRED, "Set");

    // prevValue in the query string counts too.
    let r = post_form(
        a,
        "/v1/keys/testAndSet?prevValue=nope",
        &[("value", "three")],
    );
    assert_err(&r, 412, 101, PREV_NE, "TestAndSet: two!=nope");
    assert_eq!(store_index(a), i + 2);

    // A successful TestAndSet with the special characters in values.
    let r = post_form(
        a,
        "/v1/keys/testAndSet",
        &[("prevValue", "two"), ("value", "a&b")],
    );
    assert_ok(
        &r,
        &format!(
            r#"{{"action":"SET","key":"/testAndSet","prevValue":"two","value":"a\u0026b","index":{}}}"#,
            i + 3
        ),
    );
    let r = post_form(
        a,
        "/v1/keys/testAndSet",
        &[("prevValue", "a"), ("value", "c")],
    );
    assert_err(&r, 412, 101, PREV_NE, "TestAndSet: a&b!=a");
}

// ---------------------------------------------------------------------------------------
// files and directories

#[test]
fn set_on_a_directory_under_a_key_or_root_is_not_a_file() {
    let n = Node::start("node0");
    let a = &n.client;
    set_ok(a, "foo/foo_dir/bar", "barbarbar");
    let i = set_ok(a, "foo/foo2", "x");

    // An existing directory.
    let r = set(a, "foo/foo_dir", "x");
    assert_err(&r, 403, 102, "Not A File", "set: /foo/foo_dir");
    let r = set(a, "foo", "one");
    assert_err(&r, 403, 102, "Not A File", "set: /foo");
    // Through a key.
    let r = set(a, "foo/foo2/sub", "x");
    assert_err(&r, 403, 102, "Not A File", "set: /foo/foo2/sub");
    let r = set(a, "foo/foo2/sub/deeper", "x");
    assert_err(&r, 403, 102, "Not A File", "set: /foo/foo2/sub/deeper");
    // Reading through a key is "not found".
    let r = get(a, "/v1/keys/foo/foo2/sub");
    assert_err(&r, 404, 100, "Key Not Found", "get: /foo/foo2/sub");
    // The root.
    let r = post_form(a, "/v1/keys/", &[("value", "x")]);
    assert_err(&r, 403, 102, "Not A File", "set: /");
    // A TestAndSet on a directory does not succeed either.
    let r = post_form(a, "/v1/keys/foo", &[("prevValue", ""), ("value", "x")]);
    assert!(
        r.status >= 400,
        "create over a directory answered {} {:?}",
        r.status,
        r.body
    );

    assert_eq!(store_index(a), i);
    let r = get(a, "/v1/keys/foo/foo2");
    assert_ok(
        &r,
        &format!(r#"{{"action":"GET","key":"/foo/foo2","value":"x","index":{i}}}"#),
    );
}

#[test]
fn delete_of_a_directory_or_root_is_key_not_found() {
    let n = Node::start("node0");
    let a = &n.client;
    let i0 = set_ok(a, "foo/foo_dir/bar", "barbarbar");

    let r = delete(a, "/v1/keys/foo/foo_dir");
    assert_err(&r, 404, 100, "Key Not Found", "delete: /foo/foo_dir");
    let r = delete(a, "/v1/keys/foo");
    assert_err(&r, 404, 100, "Key Not Found", "delete: /foo");
    let r = delete(a, "/v1/keys/");
    assert_err(&r, 404, 100, "Key Not Found", "delete: /");
    let r = delete(a, "/v1/keys/foo/foo_dir/bar/below");
    assert_err(
        &r,
        404,
        100,
        "Key Not Found",
        "delete: /foo/foo_dir/bar/below",
    );
    assert_eq!(store_index(a), i0);

    // Delete the last child: the directory stays, empty.
    let r = delete(a, "/v1/keys/foo/foo_dir/bar");
    assert_ok(
        &r,
        &format!(
            r#"{{"action":"DELETE","key":"/foo/foo_dir/bar","prevValue":"barbarbar","index":{}}}"#,
            i0 + 1
        ),
    );
    let r = get(a, "/v1/keys/foo/foo_dir");
    assert_ok(&r, "[]");
    let r = get(a, "/v1/keys/foo/foo_dir/");
    assert_ok(&r, "[]");
    // Still a directory: not settable, not deletable.
    let r = set(a, "foo/foo_dir", "x");
    assert_err(&r, 403, 102, "Not A File", "set: /foo/foo_dir");
    let r = delete(a, "/v1/keys/foo/foo_dir");
    assert_err(&r, 404, 100, "Key Not Found", "delete: /foo/foo_dir");
    assert_eq!(store_index(a), i0 + 1);
}

#[test]
fn listings() {
    let n = Node::start("node0");
    let a = &n.client;
    set_ok(a, "foo/foo_dir/bar", "barbarbar");
    let i = set_ok(a, "foo/foo2", "x");

    let expected = vec![
        json!({"action":"GET","key":"/foo/foo2","value":"x","index":i}),
        json!({"action":"GET","key":"/foo/foo_dir","dir":true,"index":i}),
    ];
    // With and without a trailing slash.
    let with = listing(&get(a, "/v1/keys/foo/"));
    let without = listing(&get(a, "/v1/keys/foo"));
    assert_eq!(with, expected);
    assert_eq!(without, expected);

    // Field order of the entries (byte form).
    let r = get(a, "/v1/keys/foo");
    assert!(
        r.body.contains(&format!(
            r#"{{"action":"GET","key":"/foo/foo_dir","dir":true,"index":{i}}}"#
        )),
        "{}",
        r.body
    );
    assert!(
        r.body.contains(&format!(
            r#"{{"action":"GET","key":"/foo/foo2","value":"x","index":{i}}}"#
        )),
        "{}",
        r.body
    );

    // A directory with one child.
    let r = get(a, "/v1/keys/foo/foo_dir");
    assert_ok(
        &r,
        &format!(
            r#"[{{"action":"GET","key":"/foo/foo_dir/bar","value":"barbarbar","index":{i}}}]"#
        ),
    );

    // The root lists /_etcd as a directory, plus ours.
    let root = listing(&get(a, "/v1/keys/"));
    assert_eq!(
        root,
        vec![
            json!({"action":"GET","key":"/_etcd","dir":true,"index":i}),
            json!({"action":"GET","key":"/foo","dir":true,"index":i}),
        ]
    );

    // Entries carry the current store index, not their own modification index.
    let j = set_ok(a, "other", "o");
    assert_eq!(j, i + 1);
    let entries = listing(&get(a, "/v1/keys/foo"));
    for e in &entries {
        assert_eq!(e["index"], json!(j), "{e}");
    }

    // A TTL child shows its expiration and ttl.
    let r = post_form(a, "/v1/keys/foo/t", &[("value", "tv"), ("ttl", "100")]);
    let set_resp = r.json();
    let k = idx(&r);
    let entries = listing(&get(a, "/v1/keys/foo"));
    let t = entries
        .iter()
        .find(|e| e["key"] == "/foo/t")
        .expect("ttl child listed");
    assert_eq!(t["action"], "GET");
    assert_eq!(t["value"], "tv");
    assert_eq!(t["expiration"], set_resp["expiration"]);
    let ttl = t["ttl"].as_i64().expect("ttl");
    assert!((97..=100).contains(&ttl), "ttl {ttl}");
    assert_eq!(t["index"], json!(k));
    let keys: Vec<&str> = t
        .as_object()
        .unwrap()
        .keys()
        .map(|s| s.as_str())
        .collect::<Vec<_>>();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        vec!["action", "expiration", "index", "key", "ttl", "value"]
    );
}

#[test]
fn trailing_slashes_name_the_same_node() {
    let n = Node::start("node0");
    let a = &n.client;
    let i = set_ok(a, "a", "1");
    // A key read with a trailing slash.
    let r = get(a, "/v1/keys/a/");
    assert_ok(
        &r,
        &format!(r#"{{"action":"GET","key":"/a","value":"1","index":{i}}}"#),
    );
    // A set with a trailing slash.
    let r = post_form(a, "/v1/keys/newkey/", &[("value", "1")]);
    assert_ok(
        &r,
        &format!(
            r#"{{"action":"SET","key":"/newkey","value":"1","newKey":true,"index":{}}}"#,
            i + 1
        ),
    );
    let r = get(a, "/v1/keys/newkey");
    assert_ok(
        &r,
        &format!(
            r#"{{"action":"GET","key":"/newkey","value":"1","index":{}}}"#,
            i + 1
        ),
    );
    // A delete with a trailing slash.
    let r = delete(a, "/v1/keys/newkey/");
    assert_ok(
        &r,
        &format!(
            r#"{{"action":"DELETE","key":"/newkey","prevValue":"1","index":{}}}"#,
            i + 2
        ),
    );
}

#[test]
fn failed_writes_do_not_consume_an_index() {
    let n = Node::start("node0");
    let a = &n.client;
    let i = set_ok(a, "a", "1");
    let i2 = set_ok(a, "d/x", "1");
    assert_eq!(i2, i + 1);
    let check = |what: &str| {
        let r = get(a, "/v1/keys/a");
        assert_eq!(
            r.json(),
            json!({"action":"GET","key":"/a","value":"1","index":i2}),
            "after {what}"
        );
    };
    check("nothing");

    assert_err(&set(a, "d", "1"), 403, 102, "Not A File", "set: /d");
    check("set on a directory");
    assert_err(
        &delete(a, "/v1/keys/nokey"),
        404,
        100,
        "Key Not Found",
        "delete: /nokey",
    );
    check("delete of a missing key");
    assert_err(
        &post_form(a, "/v1/keys/a", &[("prevValue", "zz"), ("value", "2")]),
        412,
        101,
        PREV_NE,
        "TestAndSet: 1!=zz",
    );
    check("failed TestAndSet");
    assert_err(
        &post_form(a, "/v1/keys/nokey", &[("prevValue", "zz"), ("value", "2")]),
        404,
        100,
        "Key Not Found",
        "TestAndSet: key not found and previousValue is not empty nokey:zz ",
    );
    check("TestAndSet of a missing key");
    assert_err(
        &post_form(a, "/v1/keys/a", &[("prevValue", ""), ("value", "2")]),
        412,
        101,
        PREV_NE,
        "TestAndSet: 1!=",
    );
    check("create of an existing key");
    assert_err(
        &post_form(a, "/v1/keys/nokey", &[("value", "1"), ("ttl", "0")]),
        404,
        100,
        "Key Not Found",
        "delete: /nokey",
    );
    check("ttl=0 on a missing key");
    assert_err(&set(a, "a/b", "1"), 403, 102, "Not A File", "set: /a/b");
    check("set through a key");
    assert_err(
        &delete(a, "/v1/keys/d"),
        404,
        100,
        "Key Not Found",
        "delete: /d",
    );
    check("delete of a directory");
    assert_err(&set(a, "_etcd/x", "1"), 400, 400, KEYWORD, "Set");
    check("keyword");
    assert_err(&set(a, "b", ""), 400, 200, VALUE_REQUIRED, "Set");
    check("empty value");

    let r = set(a, "b", "1");
    assert_ok(
        &r,
        &format!(
            r#"{{"action":"SET","key":"/b","value":"1","newKey":true,"index":{}}}"#,
            i2 + 1
        ),
    );
}

// ---------------------------------------------------------------------------------------
// form handling

#[test]
fn query_string_and_form_precedence() {
    let n = Node::start("node0");
    let a = &n.client;

    // Value in the query string of a POST without a body.
    let r = request(a, "POST", "/v1/keys/qs?value=q", &[], b"");
    let i = idx(&r);
    assert_ok(
        &r,
        &format!(r#"{{"action":"SET","key":"/qs","value":"q","newKey":true,"index":{i}}}"#),
    );
    // Percent-encoded query value.
    let r = request(a, "PUT", "/v1/keys/qs2?value=a%20b%26c", &[], b"");
    assert_ok(
        &r,
        &format!(
            r#"{{"action":"SET","key":"/qs2","value":"a b\u0026c","newKey":true,"index":{}}}"#,
            i + 1
        ),
    );

    // Body wins over the query.
    let r = post_form(a, "/v1/keys/qf?value=fromquery", &[("value", "fromform")]);
    assert_ok(
        &r,
        &format!(
            r#"{{"action":"SET","key":"/qf","value":"fromform","newKey":true,"index":{}}}"#,
            i + 2
        ),
    );
    // A bad ttl in the query is overridden by an empty one in the body (permanent key).
    let r = post_form(a, "/v1/keys/qt?ttl=abc", &[("value", "b"), ("ttl", "")]);
    assert_ok(
        &r,
        &format!(
            r#"{{"action":"SET","key":"/qt","value":"b","newKey":true,"index":{}}}"#,
            i + 3
        ),
    );
    // ... and a bad one in the body overrides a good one in the query.
    let r = post_form(a, "/v1/keys/qt?ttl=5", &[("value", "b"), ("ttl", "abc")]);
    assert_err(&r, 400, 202, TTL_NAN, "Set");

    // Repeated fields: the first one counts.
    let r = post_form(
        a,
        "/v1/keys/rep",
        &[("value", "first"), ("value", "second")],
    );
    assert_ok(
        &r,
        &format!(
            r#"{{"action":"SET","key":"/rep","value":"first","newKey":true,"index":{}}}"#,
            i + 4
        ),
    );

    // Form fields are percent-decoded, `+` is a space.
    let r = request(
        a,
        "POST",
        "/v1/keys/enc",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"value=Hello+world%21%3D",
    );
    assert_ok(
        &r,
        &format!(
            r#"{{"action":"SET","key":"/enc","value":"Hello world!=","newKey":true,"index":{}}}"#,
            i + 5
        ),
    );

    // GET and DELETE take no form body: a body on a GET is not a write.
    let r = request(
        a,
        "GET",
        "/v1/keys/qs",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"value=zzz",
    );
    assert_ok(
        &r,
        &format!(
            r#"{{"action":"GET","key":"/qs","value":"q","index":{}}}"#,
            i + 5
        ),
    );
}

#[test]
fn special_characters_are_escaped_like_go() {
    let n = Node::start("node0");
    let a = &n.client;
    let value = "<a&b>\"q\"é";
    let r = set(a, "special", value);
    let i = idx(&r);
    assert_ok(
        &r,
        &format!(
            r#"{{"action":"SET","key":"/special","value":"\u003ca\u0026b\u003e\"q\"é","newKey":true,"index":{i}}}"#
        ),
    );
    let r = get(a, "/v1/keys/special");
    assert_ok(
        &r,
        &format!(
            r#"{{"action":"GET","key":"/special","value":"\u003ca\u0026b\u003e\"q\"é","index":{i}}}"#
        ),
    );
    assert_eq!(r.json()["value"], value);

    // Backslash, newline, tab and a control character.
    let value = "back\\slash\nnew\tline\u{1}";
    let r = set(a, "ctl", value);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["value"], value);
    let r = get(a, "/v1/keys/ctl");
    assert_eq!(r.json()["value"], value);
    assert!(
        r.body.contains(r#""back\\slash\nnew\tline\u0001""#),
        "{}",
        r.body
    );

    // Go also escapes the JavaScript line separators, and the key is escaped like the value.
    let r = post_form(a, "/v1/keys/%3Ck%3E", &[("value", "l\u{2028}p\u{2029}")]);
    let j = idx(&r);
    assert_ok(
        &r,
        &format!(
            r#"{{"action":"SET","key":"/\u003ck\u003e","value":"l\u2028p\u2029","newKey":true,"index":{j}}}"#
        ),
    );
}

#[test]
fn escaped_and_unicode_keys() {
    let n = Node::start("node0");
    let a = &n.client;
    let r = get(a, "/v1/keys/a%20b");
    assert_err(&r, 404, 100, "Key Not Found", "get: /a b");

    let r = post_form(a, "/v1/keys/a%20b", &[("value", "sp")]);
    let i = idx(&r);
    assert_ok(
        &r,
        &format!(r#"{{"action":"SET","key":"/a b","value":"sp","newKey":true,"index":{i}}}"#),
    );
    let r = get(a, "/v1/keys/a%20b");
    assert_ok(
        &r,
        &format!(r#"{{"action":"GET","key":"/a b","value":"sp","index":{i}}}"#),
    );
    // The root listing shows the decoded key.
    let root = listing(&get(a, "/v1/keys/"));
    assert!(root.iter().any(|e| e["key"] == "/a b"), "{root:?}");

    // UTF-8 keys.
    let r = post_form(a, "/v1/keys/%C3%A9t%C3%A9", &[("value", "1")]);
    assert_ok(
        &r,
        &format!(
            r#"{{"action":"SET","key":"/été","value":"1","newKey":true,"index":{}}}"#,
            i + 1
        ),
    );
    let r = get(a, "/v1/keys/%C3%A9t%C3%A9");
    assert_eq!(r.json()["key"], "/été");

    // An escaped slash is decoded before the key is split into segments.
    let r = post_form(a, "/v1/keys/p%2Fq", &[("value", "1")]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["key"], "/p/q");
    let r = get(a, "/v1/keys/p");
    assert_eq!(
        listing(&r),
        vec![json!({"action":"GET","key":"/p/q","value":"1","index":i + 2})]
    );
}

#[test]
fn invalid_percent_encoding_is_a_json_400() {
    let n = Node::start("node0");
    let a = &n.client;
    let before = store_index(a);
    for (method, path) in [
        ("GET", "/v1/keys/%zz"),
        ("POST", "/v1/keys/%zz?value=1"),
        ("DELETE", "/v1/keys/a%zz"),
        ("GET", "/v1/keys/%"),
        ("GET", "/v1/keys/%C3"),
    ] {
        let r = request(a, method, path, &[], b"");
        assert_eq!(r.status, 400, "{method} {path}: {:?}", r.body);
        assert_json_ct(&r);
        let v = r.json();
        assert!(v["errorCode"].is_u64(), "{method} {path}: {v}");
        assert!(v["message"].is_string(), "{method} {path}: {v}");
    }
    assert_eq!(store_index(a), before);
}

#[test]
fn body_limits() {
    let n = Node::start("node0");
    let a = &n.client;
    let before = store_index(a);

    // 2 MiB form body -> 413 with an etcd JSON error.
    let mut body = b"value=".to_vec();
    body.extend(std::iter::repeat_n(b'a', 2 * 1024 * 1024));
    let r = request(
        a,
        "POST",
        "/v1/keys/big",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        &body,
    );
    assert_eq!(r.status, 413, "{:?}", &r.body[..r.body.len().min(200)]);
    assert_json_ct(&r);
    let v = r.json();
    assert!(v["errorCode"].is_u64(), "{v}");
    assert!(v["message"].is_string(), "{v}");

    // The same over a chunked body (no Content-Length to look at).
    let mut chunked = Vec::new();
    for piece in body.chunks(64 * 1024) {
        chunked.extend(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend(piece);
        chunked.extend(b"\r\n");
    }
    chunked.extend(b"0\r\n\r\n");
    let r = request(
        a,
        "PUT",
        "/v1/keys/big",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Transfer-Encoding", "chunked"),
        ],
        &chunked,
    );
    assert_eq!(r.status, 413, "{:?}", &r.body[..r.body.len().min(200)]);
    assert_json_ct(&r);
    assert!(r.json()["errorCode"].is_u64());

    let r = get(a, "/v1/keys/big");
    assert_err(&r, 404, 100, "Key Not Found", "get: /big");
    assert_eq!(store_index(a), before);

    // A 1 MiB value is fine.
    let value = "v".repeat(1024 * 1024);
    let r = set(a, "onemib", &value);
    assert_eq!(r.status, 200);
    assert_eq!(idx(&r), before + 1);
    let r = get(a, "/v1/keys/onemib");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["value"].as_str().map(str::len), Some(value.len()));
    assert_eq!(r.json()["value"], value.as_str());

    // The limit is 1.5 MiB of body: exactly that much is fine, one byte more is not.
    let limit = 1536 * 1024;
    let mut body = b"value=".to_vec();
    body.extend(std::iter::repeat_n(b'c', limit - body.len()));
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let r = request(a, "POST", "/v1/keys/atlimit", &form, &body);
    assert_eq!(r.status, 200, "{:?}", &r.body[..r.body.len().min(200)]);
    assert_eq!(idx(&r), before + 2);
    body.push(b'c');
    let r = request(a, "POST", "/v1/keys/overlimit", &form, &body);
    assert_eq!(r.status, 413, "{:?}", &r.body[..r.body.len().min(200)]);
    assert_json_ct(&r);
    assert!(r.json()["errorCode"].is_u64());
    assert_eq!(store_index(a), before + 2);
}

#[test]
fn invalid_percent_encoding_in_a_form_value_is_refused() {
    // v0.1.2 dropped an undecodable pair (so: 200 "Value is Required"); docs/api.md asks for a 400
    // JSON error. Either way the user sees a 400 JSON error and nothing is stored.
    let n = Node::start("node0");
    let a = &n.client;
    let before = store_index(a);
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    for (path, body) in [
        ("/v1/keys/bad", &b"value=%zz"[..]),
        ("/v1/keys/bad?value=%zz", &b""[..]),
        ("/v1/keys/bad", &b"value=ok%"[..]),
    ] {
        let r = request(a, "POST", path, &form, body);
        assert_eq!(
            r.status,
            400,
            "POST {path} {:?}: {:?}",
            String::from_utf8_lossy(body),
            r.body
        );
        assert_json_ct(&r);
        assert!(r.json()["errorCode"].is_u64(), "{:?}", r.body);
    }
    assert_err(
        &get(a, "/v1/keys/bad"),
        404,
        100,
        "Key Not Found",
        "get: /bad",
    );
    assert_eq!(store_index(a), before);
}

// ---------------------------------------------------------------------------------------
// routing

#[test]
fn non_clean_paths_redirect() {
    let n = Node::start("node0");
    let a = &n.client;
    let i = set_ok(a, "foo/foo2", "x");

    for (method, path, location) in [
        ("GET", "/v1/keys/foo//foo2", "/v1/keys/foo/foo2"),
        ("GET", "/v1/keys/foo/../foo/foo2", "/v1/keys/foo/foo2"),
        ("GET", "/v1/keys/foo/./foo2", "/v1/keys/foo/foo2"),
        ("DELETE", "/v1/keys/foo//foo2", "/v1/keys/foo/foo2"),
        ("GET", "/v1/keys", "/v1/keys/"),
        ("GET", "/v1/watch", "/v1/watch/"),
        ("GET", "/v1/stats", "/v1/stats/"),
        ("GET", "//v1/keys/foo", "/v1/keys/foo"),
    ] {
        let r = request(a, method, path, &[], b"");
        assert_eq!(r.status, 301, "{method} {path}: {:?}", r.body);
        assert_eq!(r.header("location"), Some(location), "{method} {path}");
    }
    // A POST to a non-clean path is redirected, not applied.
    let r = post_form(a, "/v1/keys/a//b", &[("value", "x")]);
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("/v1/keys/a/b"));
    let r = post_form(a, "/v1/keys/foo/../bar", &[("value", "x")]);
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("/v1/keys/bar"));
    let r = get(a, "/v1/keys/foo/foo2");
    assert_ok(
        &r,
        &format!(r#"{{"action":"GET","key":"/foo/foo2","value":"x","index":{i}}}"#),
    );
    assert_eq!(store_index(a), i);
    assert_err(
        &get(a, "/v1/keys/a/b"),
        404,
        100,
        "Key Not Found",
        "get: /a/b",
    );
}

#[test]
fn other_methods_are_405_with_an_empty_body() {
    let n = Node::start("node0");
    let a = &n.client;
    let i = set_ok(a, "putkey", "x");
    for method in ["HEAD", "PATCH", "OPTIONS"] {
        let r = request(
            a,
            method,
            "/v1/keys/putkey",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            if method == "PATCH" { b"value=z" } else { b"" },
        );
        assert_eq!(r.status, 405, "{method}");
        assert_eq!(r.body, "", "{method}");
        if method != "HEAD" {
            assert!(
                matches!(r.header("content-length"), None | Some("0")),
                "{method}: {:?}",
                r.headers
            );
        }
    }
    let r = get(a, "/v1/keys/putkey");
    assert_ok(
        &r,
        &format!(r#"{{"action":"GET","key":"/putkey","value":"x","index":{i}}}"#),
    );
}

#[test]
fn leader_and_machines() {
    let n = Node::start("node0");
    let a = &n.client;
    let r = get(a, "/v1/leader");
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type(), Some("text/plain"));
    assert_eq!(r.body.trim_end(), format!("http://{}", n.peer));
    assert!(!r.body.starts_with(' '));

    let r = get(a, "/v1/machines");
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type(), Some("text/plain"));
    assert_eq!(r.body.trim_end(), format!("http://{}", n.client));
}

#[test]
fn version_endpoints() {
    let n = Node::start("node0");
    let a = &n.client;
    let r = get(a, "/version");
    assert_eq!(r.status, 200);
    assert_json_ct(&r);
    let v = r.json();
    let obj = v.as_object().expect("object");
    let keys: Vec<&String> = obj.keys().collect();
    assert_eq!(keys.len(), 2, "{v}");
    let server = v["etcdserver"].as_str().expect("etcdserver string");
    let cluster = v["etcdcluster"].as_str().expect("etcdcluster string");
    assert!(!server.is_empty() && !cluster.is_empty());
    assert!(
        r.body.starts_with(r#"{"etcdserver":"#),
        "field order: {}",
        r.body
    );

    // `/` and unrouted paths are not the version: 404, as etcd v0.1.2 answered.
    for path in ["/", "/v1/unknown", "/test/other"] {
        let r = get(a, path);
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(r.body, "404 page not found\n", "{path}");
    }
}

#[test]
fn stats_endpoints() {
    let n = Node::start("node0");
    let a = &n.client;

    let stats = || {
        let r = get(a, "/v1/stats/store");
        assert_eq!(r.status, 200);
        assert_json_ct(&r);
        // Exact field order and integer values.
        let v = r.json();
        let body = &r.body;
        let expected = format!(
            r#"{{"gets":{},"sets":{},"deletes":{},"testAndSets":{}}}"#,
            v["gets"].as_u64().expect("gets"),
            v["sets"].as_u64().expect("sets"),
            v["deletes"].as_u64().expect("deletes"),
            v["testAndSets"].as_u64().expect("testAndSets"),
        );
        assert_eq!(body.trim_end(), expected);
        v
    };
    let s0 = stats();
    set_ok(a, "k", "1");
    let s1 = stats();
    assert_eq!(s1["sets"].as_u64(), Some(s0["sets"].as_u64().unwrap() + 1));
    assert_eq!(s1["gets"], s0["gets"]);
    get(a, "/v1/keys/k");
    let s2 = stats();
    assert_eq!(s2["gets"].as_u64(), Some(s1["gets"].as_u64().unwrap() + 1));
    post_form(a, "/v1/keys/k", &[("prevValue", "1"), ("value", "2")]);
    let s3 = stats();
    assert_eq!(
        s3["testAndSets"].as_u64(),
        Some(s2["testAndSets"].as_u64().unwrap() + 1)
    );
    delete(a, "/v1/keys/k");
    let s4 = stats();
    assert_eq!(
        s4["deletes"].as_u64(),
        Some(s3["deletes"].as_u64().unwrap() + 1)
    );

    let r = get(a, "/v1/stats/self");
    assert_eq!(r.status, 200);
    assert_json_ct(&r);
    let v = r.json();
    assert_eq!(v["name"], "node0", "{v}");
    assert_eq!(v["state"], "leader", "{v}");
    assert!(
        v["startTime"].as_str().is_some_and(|s| s.ends_with('Z')),
        "{v}"
    );
    assert_eq!(v["leaderInfo"]["leader"], "node0", "{v}");
    assert!(v["leaderInfo"]["uptime"].is_string(), "{v}");
    assert!(v["recvAppendRequestCnt"].is_u64(), "{v}");
    assert!(v["sendAppendRequestCnt"].is_u64(), "{v}");

    let r = get(a, "/v1/stats/leader");
    assert_eq!(r.status, 200);
    assert_json_ct(&r);
    assert_eq!(r.json(), json!({"leader":"node0","followers":{}}));

    let r = get(a, "/v1/stats/foo");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "");
}

#[test]
fn cors_header_only_with_the_flag() {
    let plain = Node::start("node0");
    let r = request(
        &plain.client,
        "GET",
        "/v1/keys/",
        &[("Origin", "http://example.com")],
        b"",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), None);

    let n = Node::start_args("node0", &["-cors=*"]);
    let a = &n.client;
    let i = set_ok(a, "a", "3");
    let origin = [("Origin", "http://example.com")];
    let r = request(a, "GET", "/v1/keys/a", &origin, b"");
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert_ok(
        &r,
        &format!(r#"{{"action":"GET","key":"/a","value":"3","index":{i}}}"#),
    );
    // Errors carry it too.
    let r = request(a, "GET", "/v1/keys/missing", &origin, b"");
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert_err(&r, 404, 100, "Key Not Found", "get: /missing");
    // A preflight is still a 405 for the key handler, with the header.
    let r = request(a, "OPTIONS", "/v1/keys/a", &origin, b"");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
}

#[test]
fn concurrent_writes_get_distinct_consecutive_indexes() {
    let n = Node::start("node0");
    let a = n.client.clone();
    let start = store_index(&a);
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let a = a.clone();
            std::thread::spawn(move || {
                (0..10)
                    .map(|k| {
                        let r = set(&a, &format!("c/{t}/{k}"), &format!("{t}-{k}"));
                        assert_eq!(r.status, 200, "{:?}", r.body);
                        idx(&r)
                    })
                    .collect::<Vec<u64>>()
            })
        })
        .collect();
    let mut all: Vec<u64> = threads
        .into_iter()
        .flat_map(|h| h.join().expect("writer thread"))
        .collect();
    all.sort();
    let expected: Vec<u64> = (start + 1..=start + 160).collect();
    assert_eq!(all, expected);
    assert_eq!(store_index(&a), start + 160);
    for t in 0..16 {
        let l = listing(&get(&a, &format!("/v1/keys/c/{t}")));
        assert_eq!(l.len(), 10);
    }
}
