//! Black-box tests of `/v2/auth` and of the permission checks on `/v2/keys` (etcd 2.3
//! semantics, docs/api.md). Every expected status, header and body below was taken from
//! the real etcd 3.4 (`--enable-v2=true`) answering the same requests.
//!
//! The equivalent curl for most steps: `curl -u root:rootpw -X PUT
//! http://127.0.0.1:4001/v2/auth/users/alice -d '{"user":"alice","password":"pw"}'`.

mod common;

use common::*;
use std::process::{Command, Stdio};
use std::time::Duration;

// ---------------------------------------------------------------------------------------
// helpers

const DENIED_KEY: &str = "{\"errorCode\":110,\"message\":\"The request requires user authentication\",\"cause\":\"Insufficient credentials\",\"index\":0}\n";
const DENIED_ADMIN: &str = r#"{"message":"Insufficient credentials"}"#;
const ROOT_ROLE: &str = r#"{"role":"root","permissions":{"kv":{"read":["/*"],"write":["/*"]}}}"#;

fn base64(data: &[u8]) -> String {
    const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64(format!("{user}:{password}").as_bytes()))
}

/// A request with optional Basic credentials.
fn call(addr: &str, method: &str, path: &str, creds: Option<(&str, &str)>, body: &str) -> Resp {
    let auth = creds.map(|(u, p)| basic(u, p));
    let mut headers: Vec<(&str, &str)> = Vec::new();
    if let Some(a) = &auth {
        headers.push(("Authorization", a));
    }
    request(addr, method, path, &headers, body.as_bytes())
}

/// A key write (form body) with optional credentials.
fn put_key(addr: &str, path: &str, value: &str, creds: Option<(&str, &str)>) -> Resp {
    let auth = creds.map(|(u, p)| basic(u, p));
    let mut headers = vec![("Content-Type", "application/x-www-form-urlencoded")];
    if let Some(a) = &auth {
        headers.push(("Authorization", a));
    }
    let body = form_encode(&[("value", value)]);
    request(addr, "PUT", path, &headers, body.as_bytes())
}

const ROOT: Option<(&str, &str)> = Some(("root", "rootpw"));

fn show(r: &Resp) -> String {
    format!("{} {:?} {:?}", r.status, r.headers, r.body)
}

/// A successful admin answer: status, JSON, the cluster id, the exact body.
#[track_caller]
fn assert_ok(r: &Resp, status: u16, body: &str) {
    assert_eq!(r.status, status, "{}", show(r));
    assert_eq!(r.content_type(), Some("application/json"), "{}", show(r));
    assert!(r.header("x-etcd-cluster-id").is_some(), "{}", show(r));
    assert_eq!(r.body, body, "{}", show(r));
}

/// An admin error: `{"message":...}` without a newline; the cluster id only after the
/// credentials were accepted.
#[track_caller]
fn assert_message(r: &Resp, status: u16, message: &str, cluster_id: bool) {
    assert_eq!(r.status, status, "{}", show(r));
    assert_eq!(r.content_type(), Some("application/json"), "{}", show(r));
    assert_eq!(
        r.body,
        format!("{{\"message\":{}}}", go_json_string(message)),
        "{}",
        show(r)
    );
    assert_eq!(
        r.header("x-etcd-cluster-id").is_some(),
        cluster_id,
        "{}",
        show(r)
    );
}

#[track_caller]
fn assert_admin_denied(r: &Resp) {
    assert_message(r, 401, "Insufficient credentials", false);
    assert_eq!(r.body, DENIED_ADMIN);
    assert!(r.header("www-authenticate").is_none());
}

/// A key request refused by auth: error 110 in the v2 key-error shape.
#[track_caller]
fn assert_key_denied(r: &Resp) {
    assert_eq!(r.status, 401, "{}", show(r));
    assert_eq!(r.content_type(), Some("application/json"));
    assert_eq!(r.header("x-etcd-index"), Some("0"), "{}", show(r));
    assert!(r.header("x-etcd-cluster-id").is_some(), "{}", show(r));
    assert!(r.header("www-authenticate").is_none(), "{}", show(r));
    assert_eq!(r.body, DENIED_KEY);
}

#[track_caller]
fn assert_key_ok(r: &Resp) {
    assert!(
        r.status == 200 || r.status == 201,
        "expected success: {}",
        show(r)
    );
}

#[track_caller]
fn assert_405(r: &Resp, allow: &str) {
    assert_eq!(r.status, 405, "{}", show(r));
    assert_eq!(r.header("allow"), Some(allow));
    assert_eq!(r.content_type(), Some("text/plain"));
    assert!(r.header("x-etcd-cluster-id").is_none());
}

fn create_root(addr: &str) {
    let r = call(
        addr,
        "PUT",
        "/v2/auth/users/root",
        None,
        r#"{"user":"root","password":"rootpw"}"#,
    );
    assert_ok(&r, 201, "{\"user\":\"root\",\"roles\":[\"root\"]}\n");
}

fn enable(addr: &str) {
    let r = call(addr, "PUT", "/v2/auth/enable", None, "");
    assert_ok(&r, 200, "");
}

/// Root, a role `fooer` (read/write `/foo*`, read `/s`), user alice holding it, auth on.
fn setup_alice(addr: &str) {
    create_root(addr);
    let r = call(
        addr,
        "PUT",
        "/v2/auth/roles/fooer",
        None,
        r#"{"role":"fooer","permissions":{"kv":{"read":["/foo*","/s"],"write":["/foo*"]}}}"#,
    );
    assert_ok(
        &r,
        201,
        "{\"role\":\"fooer\",\"permissions\":{\"kv\":{\"read\":[\"/foo*\",\"/s\"],\"write\":[\"/foo*\"]}}}\n",
    );
    let r = call(
        addr,
        "PUT",
        "/v2/auth/users/alice",
        None,
        r#"{"user":"alice","password":"alicepw","roles":["fooer"]}"#,
    );
    assert_ok(&r, 200, "{\"user\":\"alice\",\"roles\":[\"fooer\"]}\n");
    enable(addr);
}

const ALICE: Option<(&str, &str)> = Some(("alice", "alicepw"));

// ---------------------------------------------------------------------------------------
// enable / disable, guest

#[test]
fn enabling_needs_root_and_guest_then_serves_anonymous_requests() {
    let n = Node::start("auth0");
    let a = n.client.as_str();
    assert_ok(&get(a, "/v2/auth/enable"), 200, "{\"enabled\":false}\n");
    // Auth off: everything is open, admin API included.
    assert_key_ok(&put_key(a, "/v2/keys/open", "1", None));
    assert_message(
        &call(a, "PUT", "/v2/auth/enable", None, ""),
        409,
        "auth: No root user available, please create one",
        true,
    );
    assert_message(
        &call(a, "DELETE", "/v2/auth/enable", None, ""),
        409,
        "auth: already disabled",
        true,
    );
    create_root(a);
    enable(a);
    assert_ok(&get(a, "/v2/auth/enable"), 200, "{\"enabled\":true}\n");
    // Enabling created guest with everything.
    assert_ok(
        &call(a, "GET", "/v2/auth/roles/guest", ROOT, ""),
        200,
        "{\"role\":\"guest\",\"permissions\":{\"kv\":{\"read\":[\"/*\"],\"write\":[\"/*\"]}}}\n",
    );
    // Anonymous key requests run as guest.
    assert_key_ok(&put_key(a, "/v2/keys/anon", "1", None));
    let r = get(a, "/v2/keys/anon");
    assert_eq!(r.status, 200, "{}", show(&r));
    assert_eq!(r.json()["node"]["value"], "1");
    // An empty Authorization header counts as none.
    let r = request(a, "GET", "/v2/keys/anon", &[("Authorization", "")], b"");
    assert_eq!(r.status, 200, "{}", show(&r));
    // Already on: needs root credentials first, then 409.
    assert_admin_denied(&call(a, "PUT", "/v2/auth/enable", None, ""));
    assert_message(
        &call(a, "PUT", "/v2/auth/enable", ROOT, ""),
        409,
        "auth: already enabled",
        true,
    );
}

#[test]
fn deleting_guest_locks_out_anonymous_requests() {
    let n = Node::start("auth0");
    let a = n.client.as_str();
    create_root(a);
    enable(a);
    assert_key_ok(&put_key(a, "/v2/keys/k", "v", None));
    assert_admin_denied(&call(a, "DELETE", "/v2/auth/roles/guest", None, ""));
    assert_ok(
        &call(a, "DELETE", "/v2/auth/roles/guest", ROOT, ""),
        200,
        "",
    );
    // Reads, writes, watches and missing keys alike: 401 before the store is consulted.
    assert_key_denied(&get(a, "/v2/keys/k"));
    assert_key_denied(&get(a, "/v2/keys/missing"));
    assert_key_denied(&get(a, "/v2/keys/k?wait=true"));
    assert_key_denied(&put_key(a, "/v2/keys/k", "w", None));
    assert_key_denied(&call(a, "DELETE", "/v2/keys/k", None, ""));
    let r = call(a, "HEAD", "/v2/keys/k", None, "");
    assert_eq!(r.status, 401, "{}", show(&r));
    assert_eq!(r.header("x-etcd-index"), Some("0"));
    // 405 and parameter errors come first.
    let r = request(a, "PATCH", "/v2/keys/k", &[], b"");
    assert_eq!(r.status, 405, "{}", show(&r));
    let r = get(a, "/v2/keys/k?recursive=yes");
    assert_eq!(r.status, 400, "{}", show(&r));
    assert_eq!(r.json()["errorCode"], 209);
    // Root still gets in; v1 is not covered by auth at all.
    let r = call(a, "GET", "/v2/keys/k", ROOT, "");
    assert_eq!(r.status, 200, "{}", show(&r));
    let r = get(a, "/v1/keys/k");
    assert_eq!(r.status, 200, "{}", show(&r));
}

#[test]
fn disabling_reopens_everything() {
    let n = Node::start("auth0");
    let a = n.client.as_str();
    setup_alice(a);
    assert_ok(
        &call(a, "DELETE", "/v2/auth/roles/guest", ROOT, ""),
        200,
        "",
    );
    assert_key_denied(&get(a, "/v2/keys/x"));
    assert_admin_denied(&call(a, "DELETE", "/v2/auth/enable", None, ""));
    assert_admin_denied(&call(a, "DELETE", "/v2/auth/enable", ALICE, ""));
    assert_ok(&call(a, "DELETE", "/v2/auth/enable", ROOT, ""), 200, "");
    assert_ok(&get(a, "/v2/auth/enable"), 200, "{\"enabled\":false}\n");
    assert_key_ok(&put_key(a, "/v2/keys/x", "1", None));
    // Even bad credentials are ignored while auth is off.
    assert_key_ok(&put_key(a, "/v2/keys/x", "2", Some(("alice", "wrong"))));
    assert_message(
        &call(a, "DELETE", "/v2/auth/enable", None, ""),
        409,
        "auth: already disabled",
        true,
    );
    // The root user may be deleted once auth is off.
    assert_ok(&call(a, "DELETE", "/v2/auth/users/root", None, ""), 200, "");
}

// ---------------------------------------------------------------------------------------
// key permissions

#[test]
fn a_role_on_foo_star_reads_and_writes_under_it_and_nowhere_else() {
    let n = Node::start("auth0");
    let a = n.client.as_str();
    setup_alice(a);
    assert_ok(
        &call(a, "DELETE", "/v2/auth/roles/guest", ROOT, ""),
        200,
        "",
    );

    assert_key_ok(&put_key(a, "/v2/keys/foo/a", "1", ALICE));
    let r = call(a, "GET", "/v2/keys/foo/a", ALICE, "");
    assert_eq!(r.status, 200, "{}", show(&r));
    assert_eq!(r.json()["node"]["value"], "1");
    // `/foo*` is a plain prefix: `/foobar` is covered too.
    assert_key_ok(&put_key(a, "/v2/keys/foobar", "2", ALICE));
    // POST is checked on the parent as sent.
    let r = call(a, "POST", "/v2/keys/foo/q", ALICE, "");
    assert_eq!(r.status, 201, "{}", show(&r));
    assert_key_ok(&call(a, "DELETE", "/v2/keys/foo/a", ALICE, ""));
    // A missing key under the prefix is the store's 404, not a 401.
    assert_eq!(call(a, "GET", "/v2/keys/foo/a", ALICE, "").status, 404);

    // Elsewhere: 401, for reads, writes and missing keys.
    assert_key_ok(&put_key(a, "/v2/keys/other", "x", ROOT));
    assert_key_denied(&call(a, "GET", "/v2/keys/other", ALICE, ""));
    assert_key_denied(&put_key(a, "/v2/keys/other", "y", ALICE));
    assert_key_denied(&call(a, "GET", "/v2/keys/nothing", ALICE, ""));
    assert_key_denied(&call(a, "GET", "/v2/keys/fo", ALICE, ""));
    // `/s` is read-only for alice.
    assert_key_ok(&put_key(a, "/v2/keys/s", "1", ROOT));
    assert_eq!(call(a, "GET", "/v2/keys/s", ALICE, "").status, 200);
    assert_key_denied(&put_key(a, "/v2/keys/s", "2", ALICE));
    // `/v2/keys` checks "" and `/v2/keys/` checks "/": neither matches `/foo*`.
    assert_key_denied(&call(a, "GET", "/v2/keys", ALICE, ""));
    assert_key_denied(&call(a, "GET", "/v2/keys/", ALICE, ""));
    // Root may do anything.
    assert_eq!(call(a, "GET", "/v2/keys", ROOT, "").status, 200);
    assert_eq!(
        call(a, "GET", "/v2/keys/?recursive=true", ROOT, "").status,
        200
    );
    // The key is checked as sent: `/foo%2Fa` is `/foo/a`.
    assert_key_ok(&put_key(a, "/v2/keys/foo%2Fb", "1", ALICE));
}

#[test]
fn recursive_needs_star_patterns_for_users_but_is_ignored_for_guest() {
    let n = Node::start("auth0");
    let a = n.client.as_str();
    setup_alice(a);
    assert_key_ok(&put_key(a, "/v2/keys/foo/a", "1", ROOT));
    assert_key_ok(&put_key(a, "/v2/keys/s/x", "1", ROOT));
    // `/foo*` covers `/foo` recursively; the exact `/s` does not.
    let r = call(a, "GET", "/v2/keys/foo?recursive=true", ALICE, "");
    assert_eq!(r.status, 200, "{}", show(&r));
    assert_eq!(call(a, "GET", "/v2/keys/s", ALICE, "").status, 200);
    assert_key_denied(&call(a, "GET", "/v2/keys/s?recursive=true", ALICE, ""));
    assert_key_denied(&call(a, "DELETE", "/v2/keys/s?recursive=true", ALICE, ""));
    // The same role as guest: the recursive flag is ignored.
    let r = call(
        a,
        "PUT",
        "/v2/auth/roles/guest",
        ROOT,
        r#"{"role":"guest","revoke":{"kv":{"read":["/*"],"write":["/*"]}}}"#,
    );
    assert_ok(
        &r,
        200,
        "{\"role\":\"guest\",\"permissions\":{\"kv\":{\"read\":[],\"write\":[]}}}\n",
    );
    let r = call(
        a,
        "PUT",
        "/v2/auth/roles/guest",
        ROOT,
        r#"{"role":"guest","grant":{"kv":{"read":["/s"]}}}"#,
    );
    assert_ok(
        &r,
        200,
        "{\"role\":\"guest\",\"permissions\":{\"kv\":{\"read\":[\"/s\"],\"write\":[]}}}\n",
    );
    let r = get(a, "/v2/keys/s?recursive=true");
    assert_eq!(r.status, 200, "{}", show(&r));
    // Nothing is filtered after the check: the whole subtree comes back.
    assert_eq!(r.json()["node"]["nodes"][0]["key"], "/s/x");
    assert_key_denied(&get(a, "/v2/keys/foo"));
    assert_key_denied(&put_key(a, "/v2/keys/s", "1", None));
    // Watches are reads.
    let r = get(a, "/v2/keys/s?wait=true&waitIndex=1&recursive=true");
    assert_eq!(r.status, 200, "{}", show(&r));
    assert_key_denied(&get(a, "/v2/keys/foo?wait=true&waitIndex=1"));
}

#[test]
fn bad_credentials_get_401_without_falling_back_to_guest() {
    let n = Node::start("auth0");
    let a = n.client.as_str();
    setup_alice(a);
    // guest may do everything, yet none of these become guest.
    assert_key_ok(&put_key(a, "/v2/keys/foo/a", "1", None));
    assert_key_denied(&call(
        a,
        "GET",
        "/v2/keys/foo/a",
        Some(("alice", "wrong")),
        "",
    ));
    assert_key_denied(&call(a, "GET", "/v2/keys/foo/a", Some(("nobody", "x")), ""));
    for header in [
        "Bearer abc",
        "Basic !!!!",
        "Basic YWxpY2U",               // no padding
        "Basic YWxpY2U=",              // "alice": no colon
        "Basic  YWxpY2U6YWxpY2Vwdw==", // two spaces
    ] {
        let r = request(
            a,
            "GET",
            "/v2/keys/foo/a",
            &[("Authorization", header)],
            b"",
        );
        assert_key_denied(&r);
    }
    // The scheme is case-insensitive, as in Go.
    let r = request(
        a,
        "GET",
        "/v2/keys/foo/a",
        &[("Authorization", "bAsIc YWxpY2U6YWxpY2Vwdw==")],
        b"",
    );
    assert_eq!(r.status, 200, "{}", show(&r));
    // Admin: wrong password, unknown user, and a user without root.
    for creds in [Some(("root", "bad")), Some(("nobody", "x")), ALICE, None] {
        assert_admin_denied(&call(a, "GET", "/v2/auth/users", creds, ""));
    }
}

#[test]
fn a_password_change_invalidates_the_old_one() {
    let n = Node::start("auth0");
    let a = n.client.as_str();
    setup_alice(a);
    // Verified once (and remembered)...
    assert_eq!(call(a, "GET", "/v2/keys/foo", ALICE, "").status, 404);
    assert_eq!(call(a, "GET", "/v2/keys/foo", ALICE, "").status, 404);
    let r = call(
        a,
        "PUT",
        "/v2/auth/users/alice",
        ROOT,
        r#"{"user":"alice","password":"newpw"}"#,
    );
    assert_ok(&r, 200, "{\"user\":\"alice\",\"roles\":[\"fooer\"]}\n");
    // ...but not after the change.
    assert_key_denied(&call(a, "GET", "/v2/keys/foo", ALICE, ""));
    assert_eq!(
        call(a, "GET", "/v2/keys/foo", Some(("alice", "newpw")), "").status,
        404
    );
    // A deleted user is gone at once, too.
    assert_ok(
        &call(a, "DELETE", "/v2/auth/users/alice", ROOT, ""),
        200,
        "",
    );
    assert_key_denied(&call(
        a,
        "GET",
        "/v2/keys/foo",
        Some(("alice", "newpw")),
        "",
    ));
}

// ---------------------------------------------------------------------------------------
// the admin API

#[test]
fn admin_endpoints_need_root_once_auth_is_on() {
    let n = Node::start("auth0");
    let a = n.client.as_str();
    setup_alice(a);
    // GET enable stays open.
    assert_ok(&get(a, "/v2/auth/enable"), 200, "{\"enabled\":true}\n");
    for (method, path, body) in [
        ("GET", "/v2/auth/users", ""),
        ("GET", "/v2/auth/roles", ""),
        ("GET", "/v2/auth/users/alice", ""),
        (
            "PUT",
            "/v2/auth/users/bob",
            r#"{"user":"bob","password":"b"}"#,
        ),
        ("DELETE", "/v2/auth/users/alice", ""),
        ("GET", "/v2/auth/roles/fooer", ""),
        ("PUT", "/v2/auth/roles/r", r#"{"role":"r"}"#),
        ("DELETE", "/v2/auth/roles/fooer", ""),
        ("DELETE", "/v2/auth/enable", ""),
    ] {
        assert_admin_denied(&call(a, method, path, None, body));
        assert_admin_denied(&call(a, method, path, ALICE, body));
    }
    // Member changes need root too; reading the members stays open.
    let members = get(a, "/v2/members");
    assert_eq!(members.status, 200);
    let id = members.json()["members"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    for creds in [None, ALICE] {
        let auth = creds.map(|(u, p)| basic(u, p));
        let mut headers = vec![("Content-Type", "application/json")];
        if let Some(h) = &auth {
            headers.push(("Authorization", h));
        }
        let body = br#"{"peerURLs":["http://127.0.0.1:1"]}"#;
        assert_admin_denied(&request(a, "POST", "/v2/members", &headers, body));
        assert_admin_denied(&request(
            a,
            "PUT",
            &format!("/v2/members/{id}"),
            &headers,
            body,
        ));
        assert_admin_denied(&request(
            a,
            "DELETE",
            &format!("/v2/members/{id}"),
            &headers,
            b"",
        ));
    }
    assert_eq!(
        get(a, "/v2/members").json()["members"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    // 405 and Invalid path come before the credentials.
    assert_405(&call(a, "POST", "/v2/auth/users", None, ""), "GET");
    assert_message(
        &call(a, "GET", "/v2/auth/users/a/b", None, ""),
        400,
        "Invalid path",
        false,
    );
    // A user granted root is an admin.
    let r = call(
        a,
        "PUT",
        "/v2/auth/users/alice",
        ROOT,
        r#"{"user":"alice","grant":["root"]}"#,
    );
    assert_ok(
        &r,
        200,
        "{\"user\":\"alice\",\"roles\":[\"fooer\",\"root\"]}\n",
    );
    assert_eq!(call(a, "GET", "/v2/auth/users", ALICE, "").status, 200);
    assert_message(
        &call(a, "DELETE", "/v2/auth/users/root", ALICE, ""),
        403,
        "auth: Cannot delete root user while auth is enabled.",
        true,
    );
}

#[test]
fn listings_have_the_2_3_shapes() {
    let n = Node::start("auth0");
    let a = n.client.as_str();
    assert_ok(&get(a, "/v2/auth/users"), 200, "{\"users\":null}\n");
    assert_ok(&get(a, "/v2/auth/users/"), 200, "{\"users\":null}\n");
    assert_ok(
        &get(a, "/v2/auth/roles"),
        200,
        &format!("{{\"roles\":[{ROOT_ROLE}]}}\n"),
    );
    assert_ok(
        &get(a, "/v2/auth/roles/root"),
        200,
        &format!("{ROOT_ROLE}\n"),
    );
    create_root(a);
    let r = call(
        a,
        "PUT",
        "/v2/auth/users/bob",
        None,
        r#"{"user":"bob","password":"b","roles":["nope","r1"]}"#,
    );
    assert_ok(&r, 200, "{\"user\":\"bob\",\"roles\":[\"nope\",\"r1\"]}\n");
    let r = call(a, "PUT", "/v2/auth/roles/r1", None, r#"{"role":"r1"}"#);
    let r1 = r#"{"role":"r1","permissions":{"kv":{"read":null,"write":null}}}"#;
    assert_ok(&r, 201, &format!("{r1}\n"));
    let r = call(
        a,
        "PUT",
        "/v2/auth/users/alice",
        None,
        r#"{"user":"alice","password":"a"}"#,
    );
    assert_ok(&r, 201, "{\"user\":\"alice\",\"roles\":null}\n");
    // Users sorted, roles as objects, missing roles skipped, no roles -> field left out.
    assert_ok(
        &get(a, "/v2/auth/users"),
        200,
        &format!(
            "{{\"users\":[{{\"user\":\"alice\"}},{{\"user\":\"bob\",\"roles\":[{r1}]}},{{\"user\":\"root\",\"roles\":[{ROOT_ROLE}]}}]}}\n"
        ),
    );
    assert_ok(
        &get(a, "/v2/auth/users/alice"),
        200,
        "{\"user\":\"alice\"}\n",
    );
    assert_ok(
        &get(a, "/v2/auth/users/root"),
        200,
        &format!("{{\"user\":\"root\",\"roles\":[{ROOT_ROLE}]}}\n"),
    );
    // A single user with a role that does not exist: 404.
    assert_message(
        &get(a, "/v2/auth/users/bob"),
        404,
        "auth: Role nope does not exist.",
        true,
    );
    assert_ok(
        &get(a, "/v2/auth/roles"),
        200,
        &format!("{{\"roles\":[{r1},{ROOT_ROLE}]}}\n"),
    );
    assert_405(&call(a, "HEAD", "/v2/auth/roles", None, ""), "GET");
    assert_405(
        &call(a, "POST", "/v2/auth/roles/r1", None, ""),
        "GET,PUT,DELETE",
    );
    assert_405(
        &call(a, "POST", "/v2/auth/enable", None, ""),
        "GET,PUT,DELETE",
    );
}

#[test]
fn user_writes_answer_like_etcd() {
    let n = Node::start("auth0");
    let a = n.client.as_str();
    let put =
        |name: &str, body: &str| call(a, "PUT", &format!("/v2/auth/users/{name}"), None, body);
    assert_message(
        &put("alice", r#"{"user":"alice"}"#),
        400,
        "auth: Cannot create user alice with an empty password",
        true,
    );
    assert_ok(
        &put("alice", r#"{"user":"alice","password":"a"}"#),
        201,
        "{\"user\":\"alice\",\"roles\":null}\n",
    );
    // Same password again: a new salt, so a change.
    assert_ok(
        &put("alice", r#"{"user":"alice","password":"a"}"#),
        200,
        "{\"user\":\"alice\",\"roles\":[]}\n",
    );
    assert_message(
        &put("alice", r#"{"user":"alice"}"#),
        400,
        "auth: User not updated. Use grant/revoke/password to update the user.",
        true,
    );
    assert_message(
        &put("alice", r#"{"user":"alice","password":"a","roles":["x"]}"#),
        409,
        "auth: User alice already exists.",
        true,
    );
    assert_message(
        &put("carol", r#"{"user":"carol","grant":["x"]}"#),
        404,
        "auth: User carol does not exist.",
        true,
    );
    // Role names are not checked on grant.
    assert_ok(
        &put(
            "alice",
            r#"{"user":"alice","grant":["y","x"],"password":"z"}"#,
        ),
        200,
        "{\"user\":\"alice\",\"roles\":[\"x\",\"y\"]}\n",
    );
    assert_message(
        &put("alice", r#"{"user":"alice","grant":["x"]}"#),
        409,
        "auth: Granting duplicate role x for user alice",
        true,
    );
    assert_message(
        &put("alice", r#"{"user":"alice","revoke":["q"]}"#),
        409,
        "auth: Revoking ungranted role q for user alice",
        true,
    );
    assert_message(
        &put("alice", r#"{"user":"alice","revoke":["x"],"roles":["k"]}"#),
        400,
        "User JSON contains both roles and grant/revoke",
        true,
    );
    assert_ok(
        &put("alice", r#"{"user":"alice","revoke":["x","y"]}"#),
        200,
        "{\"user\":\"alice\",\"roles\":[]}\n",
    );
    assert_message(
        &put("alice", r#"{"user":"bob"}"#),
        400,
        "User JSON name does not match the name in the URL",
        true,
    );
    assert_message(
        &put("alice", "null"),
        400,
        "User JSON name does not match the name in the URL",
        true,
    );
    for bad in ["", r#"{"user":"#, r#"{"user":"alice","password":5}"#, "[]"] {
        assert_message(
            &put("alice", bad),
            400,
            "Invalid JSON in request body.",
            true,
        );
    }
    // Go's decoder: first value only, keys in any case, unknown keys ignored.
    assert_ok(
        &put(
            "alice",
            r#"{"USER":"alice","extra":1,"password":"q"} trailing"#,
        ),
        200,
        "{\"user\":\"alice\",\"roles\":[]}\n",
    );
    // Names are escaped as Go does.
    assert_ok(
        &put("a%3Cb", r#"{"user":"a<b","password":"q"}"#),
        201,
        "{\"user\":\"a\\u003cb\",\"roles\":null}\n",
    );
    assert_message(
        &call(a, "DELETE", "/v2/auth/users/nobody", None, ""),
        404,
        "auth: User nobody does not exist",
        true,
    );
    assert_ok(
        &call(a, "DELETE", "/v2/auth/users/alice", None, ""),
        200,
        "",
    );
    assert_message(
        &get(a, "/v2/auth/users/alice"),
        404,
        "auth: User alice does not exist.",
        true,
    );
}

#[test]
fn roles_grant_and_revoke_and_root_is_immutable() {
    let n = Node::start("auth0");
    let a = n.client.as_str();
    let put =
        |name: &str, body: &str| call(a, "PUT", &format!("/v2/auth/roles/{name}"), None, body);
    for r in [
        put("root", r#"{"role":"root"}"#),
        put("root", r#"{"role":"root","grant":{"kv":{"read":["/x"]}}}"#),
        call(a, "DELETE", "/v2/auth/roles/root", None, ""),
    ] {
        assert_message(
            &r,
            403,
            "auth: Cannot modify role root: is root role.",
            true,
        );
    }
    // Create echoes the body as parsed, grant/revoke included.
    let r2 = r#"{"role":"r2","permissions":{"kv":{"read":["/b","/a*"],"write":null}},"grant":{"kv":{"read":[],"write":null}}}"#;
    assert_ok(
        &put(
            "r2",
            r#"{"role":"r2","permissions":{"kv":{"read":["/b","/a*"]}},"grant":{"kv":{"read":[]}}}"#,
        ),
        201,
        &format!("{r2}\n"),
    );
    assert_ok(&get(a, "/v2/auth/roles/r2"), 200, &format!("{r2}\n"));
    assert_message(
        &put("r2", r#"{"role":"r2"}"#),
        409,
        "auth: Role r2 already exists.",
        true,
    );
    // Grant: sorted sets.
    assert_ok(
        &put(
            "r2",
            r#"{"role":"r2","grant":{"kv":{"read":["/c"],"write":["/z","/y"]}}}"#,
        ),
        200,
        "{\"role\":\"r2\",\"permissions\":{\"kv\":{\"read\":[\"/a*\",\"/b\",\"/c\"],\"write\":[\"/y\",\"/z\"]}}}\n",
    );
    assert_message(
        &put("r2", r#"{"role":"r2","grant":{"kv":{"read":["/c"]}}}"#),
        409,
        "auth: Granting duplicate read permission /c",
        true,
    );
    assert_message(
        &put("r2", r#"{"role":"r2","grant":{"kv":{"write":["/z"]}}}"#),
        409,
        "auth: Granting duplicate write permission /z",
        true,
    );
    // Revoking what is not there is skipped; if that leaves the role as it was: 400.
    assert_message(
        &put("r2", r#"{"role":"r2","revoke":{"kv":{"write":["/nope"]}}}"#),
        400,
        "auth: Role not updated. Use grant/revoke to update the role.",
        true,
    );
    assert_ok(
        &put(
            "r2",
            r#"{"role":"r2","revoke":{"kv":{"write":["/z","/y","/nope"]}}}"#,
        ),
        200,
        "{\"role\":\"r2\",\"permissions\":{\"kv\":{\"read\":[\"/a*\",\"/b\",\"/c\"],\"write\":[]}}}\n",
    );
    assert_message(
        &put(
            "r2",
            r#"{"role":"r2","revoke":{"kv":{"read":["/a*"]}},"permissions":{"kv":{"read":["/q"]}}}"#,
        ),
        400,
        "Role JSON contains both permissions and grant/revoke",
        true,
    );
    assert_message(
        &put("r9", r#"{"role":"r9","revoke":{"kv":{"read":["/a*"]}}}"#),
        404,
        "auth: Role r9 does not exist.",
        true,
    );
    assert_message(
        &put("r1", r#"{"role":"r2"}"#),
        400,
        "Role JSON name does not match the name in the URL",
        true,
    );
    assert_message(
        &put("r1", r#"{"role":"#),
        400,
        "Invalid JSON in request body.",
        true,
    );
    assert_message(
        &get(a, "/v2/auth/roles/r9"),
        404,
        "auth: Role r9 does not exist.",
        true,
    );
    assert_message(
        &call(a, "DELETE", "/v2/auth/roles/r9", None, ""),
        404,
        "auth: Role r9 doesn't exist.",
        true,
    );
    assert_message(
        &call(a, "GET", "/v2/auth/roles/r2/x", None, ""),
        400,
        "Invalid path",
        false,
    );
    assert_ok(&call(a, "DELETE", "/v2/auth/roles/r2", None, ""), 200, "");
    assert_ok(
        &get(a, "/v2/auth/roles"),
        200,
        &format!("{{\"roles\":[{ROOT_ROLE}]}}\n"),
    );
}

// ---------------------------------------------------------------------------------------
// through the log

#[test]
fn auth_writes_consume_no_store_index_and_survive_restarts_and_snapshots() {
    let mut n = Node::start_args("auth0", &["-snapshotCount", "3"]);
    let a = n.client.clone();
    let before = put_key(&a, "/v2/keys/mark", "1", None);
    let index = before.json()["node"]["modifiedIndex"].as_u64().unwrap();
    setup_alice(&a);
    let after = put_key(&a, "/v2/keys/mark", "2", None);
    assert_eq!(
        after.json()["node"]["modifiedIndex"].as_u64().unwrap(),
        index + 1,
        "auth writes took no store index"
    );
    // Enough writes for several snapshots, then a restart from disk.
    for i in 0..10 {
        assert_key_ok(&put_key(&a, &format!("/v2/keys/foo/{i}"), "x", ALICE));
    }
    n.stop();
    n.restart();
    assert_ok(&get(&a, "/v2/auth/enable"), 200, "{\"enabled\":true}\n");
    assert_eq!(call(&a, "GET", "/v2/keys/foo/1", ALICE, "").status, 200);
    assert_key_denied(&call(&a, "GET", "/v2/keys/mark", ALICE, ""));
    assert_admin_denied(&call(&a, "GET", "/v2/auth/users", ALICE, ""));
    assert_ok(
        &call(&a, "GET", "/v2/auth/users/alice", ROOT, ""),
        200,
        "{\"user\":\"alice\",\"roles\":[{\"role\":\"fooer\",\"permissions\":{\"kv\":{\"read\":[\"/foo*\",\"/s\"],\"write\":[\"/foo*\"]}}}]}\n",
    );
}

#[test]
fn a_follower_forwards_auth_writes_and_enforces_them() {
    let n1 = Node::start("auth1");
    let n2 = Node::start_args("auth2", &["-C", &n1.peer]);
    let (a1, a2) = (n1.client.as_str(), n2.client.as_str());
    poll_until(Duration::from_secs(15), "two members", || {
        let r = get(a2, "/v2/members");
        (r.status == 200 && r.json()["members"].as_array().map(Vec::len) == Some(2)).then_some(())
    });
    // Written through the follower; the answers are the leader's.
    setup_alice(a2);
    assert_message(
        &call(
            a2,
            "PUT",
            "/v2/auth/users/alice",
            ROOT,
            r#"{"user":"alice","grant":["fooer"]}"#,
        ),
        409,
        "auth: Granting duplicate role fooer for user alice",
        true,
    );
    // Both nodes enforce the same state.
    for a in [a1, a2] {
        poll_until(Duration::from_secs(10), "auth replicated", || {
            (get(a, "/v2/auth/enable").body == "{\"enabled\":true}\n").then_some(())
        });
        assert_key_ok(&put_key(a, "/v2/keys/foo/x", "1", ALICE));
        assert_key_denied(&put_key(a, "/v2/keys/bar", "1", ALICE));
        assert_admin_denied(&call(a, "GET", "/v2/auth/users", ALICE, ""));
    }
}

// ---------------------------------------------------------------------------------------
// etcdctl v2

/// One etcdctl v2 call: stdin (a password prompt's answer), arguments, then stdout, stderr
/// (without the `stty` complaints about a non-terminal stdin) and exit code as etcdctl 3.4
/// printed them against etcd 3.4.
type CtlStep = (
    Option<&'static str>,
    &'static [&'static str],
    &'static str,
    &'static str,
    i32,
);

const CTL_SESSION: &[CtlStep] = &[
    (
        Some("rootpw"),
        &["user", "add", "root"],
        "New password: \nUser root created\n",
        "",
        0,
    ),
    (
        None,
        &["role", "add", "fooer"],
        "Role fooer created\n",
        "",
        0,
    ),
    (
        None,
        &["role", "grant", "fooer", "--path", "/foo/*", "--rw"],
        "Role fooer updated\n",
        "",
        0,
    ),
    (
        None,
        &["role", "grant", "fooer", "--path", "/foo", "--read"],
        "Role fooer updated\n",
        "",
        0,
    ),
    (
        Some("alicepw"),
        &["user", "add", "alice"],
        "New password: \nUser alice created\n",
        "",
        0,
    ),
    (
        None,
        &["user", "grant", "alice", "--roles", "fooer"],
        "User alice updated\n",
        "",
        0,
    ),
    (
        None,
        &["user", "get", "alice"],
        "User: alice\nRoles:  fooer\n",
        "",
        0,
    ),
    (
        None,
        &["role", "get", "fooer"],
        "Role: fooer\nKV Read:\n\t/foo\n\t/foo/*\nKV Write:\n\t/foo/*\n",
        "",
        0,
    ),
    (None, &["user", "list"], "alice\nroot\n", "", 0),
    (None, &["role", "list"], "fooer\nroot\n", "", 0),
    (None, &["auth", "enable"], "Authentication Enabled\n", "", 0),
    (None, &["set", "/foo/bar", "baz"], "baz\n", "", 0),
    (
        None,
        &["role", "list"],
        "",
        "unexpected status code 401\n",
        1,
    ),
    (
        None,
        &["--username", "root:rootpw", "role", "list"],
        "fooer\nguest\nroot\n",
        "",
        0,
    ),
    (
        None,
        &["--username", "alice:alicepw", "get", "/foo/bar"],
        "baz\n",
        "",
        0,
    ),
    (
        None,
        &["--username", "alice:alicepw", "set", "/foo/x", "1"],
        "1\n",
        "",
        0,
    ),
    (
        None,
        &["--username", "alice:alicepw", "set", "/other", "1"],
        "",
        "Error:  110: The request requires user authentication (Insufficient credentials) [0]\n",
        4,
    ),
    (
        None,
        &["--username", "alice:wrong", "get", "/foo/bar"],
        "",
        "Error:  110: The request requires user authentication (Insufficient credentials) [0]\n",
        4,
    ),
    (
        None,
        &["--username", "alice:alicepw", "ls", "/foo"],
        "/foo/bar\n/foo/x\n",
        "",
        0,
    ),
    (
        None,
        &["--username", "alice:alicepw", "user", "list"],
        "",
        "Insufficient credentials\n",
        1,
    ),
    (
        None,
        &["--username", "root:rootpw", "role", "remove", "guest"],
        "Role guest removed\n",
        "",
        0,
    ),
    (
        None,
        &["get", "/foo/bar"],
        "",
        "Error:  110: The request requires user authentication (Insufficient credentials) [0]\n",
        4,
    ),
    (
        None,
        &[
            "--username",
            "root:rootpw",
            "role",
            "revoke",
            "fooer",
            "--path",
            "/foo",
            "--read",
        ],
        "Role fooer updated\n",
        "",
        0,
    ),
    (
        None,
        &["--username", "root:rootpw", "role", "get", "fooer"],
        "Role: fooer\nKV Read:\n\t/foo/*\nKV Write:\n\t/foo/*\n",
        "",
        0,
    ),
    (
        None,
        &[
            "--username",
            "root:rootpw",
            "user",
            "revoke",
            "alice",
            "--roles",
            "fooer",
        ],
        "User alice updated\n",
        "",
        0,
    ),
    (
        None,
        &["--username", "root:rootpw", "user", "get", "alice"],
        "User: alice\nRoles: \n",
        "",
        0,
    ),
    (
        None,
        &["--username", "root:rootpw", "user", "remove", "alice"],
        "User alice removed\n",
        "",
        0,
    ),
    (
        None,
        &["--username", "root:rootpw", "auth", "disable"],
        "Authentication Disabled\n",
        "",
        0,
    ),
    (None, &["get", "/foo/bar"], "baz\n", "", 0),
];

fn etcdctl_present() -> bool {
    Command::new("etcdctl")
        .arg("--version")
        .env("ETCDCTL_API", "2")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn etcdctl_v2_auth_session_matches_etcd_3_4() {
    if !etcdctl_present() {
        println!("NOTICE: etcdctl not found; skipping the etcdctl v2 auth session");
        return;
    }
    let n = Node::start("auth0");
    let endpoint = n.url("");
    for (stdin, args, want_out, want_err, want_code) in CTL_SESSION {
        let mut child = Command::new("etcdctl")
            .env("ETCDCTL_API", "2")
            .arg("--endpoints")
            .arg(&endpoint)
            .args(*args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn etcdctl");
        {
            use std::io::Write;
            let mut input = child.stdin.take().expect("stdin");
            if let Some(s) = stdin {
                input
                    .write_all(format!("{s}\n").as_bytes())
                    .expect("write stdin");
            }
        }
        let out = child.wait_with_output().expect("etcdctl output");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr: String = String::from_utf8_lossy(&out.stderr)
            .lines()
            .filter(|l| !l.starts_with("stty:"))
            .map(|l| format!("{l}\n"))
            .collect();
        let what = format!("etcdctl {}", args.join(" "));
        assert_eq!(stdout, *want_out, "{what}: stdout (stderr {stderr:?})");
        assert_eq!(stderr, *want_err, "{what}: stderr");
        assert_eq!(out.status.code(), Some(*want_code), "{what}: exit code");
    }
}
