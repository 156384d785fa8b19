//! Black-box tests of the admin endpoints of the client port: `/version`, `GET /`, `/health`,
//! `/v2/machines`, `/v2/leader`, `/v2/members`, `/v2/stats/{self,store,leader}`, `/metrics`
//! (docs/api.md), and one store behind `/v1` and `/v2` (docs/api.md).

mod common;

use common::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

// ---------------------------------------------------------------------------------------
// helpers

fn ct(r: &Resp) -> Option<&str> {
    r.header("content-type")
}

/// The top-level keys of a JSON object body, in the order they appear on the wire.
fn key_order(body: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let b = body.as_bytes();
    let (mut depth, mut i) = (0i32, 0usize);
    while i < b.len() {
        match b[i] {
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth -= 1,
            b'"' => {
                let start = i + 1;
                i += 1;
                while b[i] != b'"' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                let s = &body[start..i];
                let mut j = i + 1;
                while j < b.len() && b[j] == b' ' {
                    j += 1;
                }
                if depth == 1 && j < b.len() && b[j] == b':' {
                    keys.push(s.to_string());
                }
            }
            _ => {}
        }
        i += 1;
    }
    keys
}

fn assert_cluster_id(r: &Resp) -> String {
    let v = r
        .header("x-etcd-cluster-id")
        .unwrap_or_else(|| panic!("no X-Etcd-Cluster-Id: {:?}", r.headers));
    assert!(
        !v.is_empty()
            && v.len() <= 16
            && v.bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)),
        "bad cluster id {v:?}"
    );
    v.to_string()
}

/// A member id: unpadded lower-case hex of a non-zero uint64.
fn assert_member_id(id: &str) {
    assert!(
        !id.is_empty()
            && id.len() <= 16
            && !id.starts_with('0')
            && id
                .bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)),
        "bad member id {id:?}"
    );
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction]Z`.
fn assert_rfc3339_utc(s: &str) {
    let b = s.as_bytes();
    let ok = b.len() >= 20
        && s.ends_with('Z')
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && [0..4, 5..7, 8..10, 11..13, 14..16, 17..19]
            .into_iter()
            .all(|r| s[r].bytes().all(|c| c.is_ascii_digit()))
        && (b.len() == 20
            || (b[19] == b'.'
                && b.len() <= 30
                && s[20..s.len() - 1].bytes().all(|c| c.is_ascii_digit())));
    assert!(ok, "not an RFC 3339 UTC time: {s:?}");
}

/// A Go `time.Duration` string such as `1m26.653947956s`, `2.5ms` or `0s`.
fn assert_go_duration(s: &str) {
    let mut rest = s;
    let mut parts = 0;
    while !rest.is_empty() {
        let num_len = rest
            .bytes()
            .take_while(|c| c.is_ascii_digit() || *c == b'.')
            .count();
        assert!(num_len > 0, "bad Go duration {s:?}");
        rest = &rest[num_len..];
        let unit = ["h", "ms", "µs", "us", "ns", "m", "s"]
            .into_iter()
            .find(|u| rest.starts_with(u))
            .unwrap_or_else(|| panic!("bad Go duration {s:?}"));
        rest = &rest[unit.len()..];
        parts += 1;
    }
    assert!(parts > 0, "empty duration");
}

fn version(a: &str) -> (String, String) {
    let r = get(a, "/version");
    assert_eq!(r.status, 200);
    let v = r.json();
    (
        v["etcdserver"].as_str().unwrap().to_string(),
        v["etcdcluster"].as_str().unwrap().to_string(),
    )
}

/// The single member of a one-node cluster as `/v2/members` shows it.
fn member_id(a: &str) -> String {
    let r = get(a, "/v2/members");
    assert_eq!(r.status, 200);
    r.json()["members"][0]["id"].as_str().unwrap().to_string()
}

fn assert_405(r: &Resp, allow: Option<&str>, what: &str) {
    assert_eq!(r.status, 405, "{what}: {:?}", r.body);
    if let Some(al) = allow {
        assert_eq!(r.header("allow"), Some(al), "{what}");
    }
    assert_eq!(ct(r), Some("text/plain; charset=utf-8"), "{what}");
    assert_eq!(r.body, "Method Not Allowed\n", "{what}");
}

// ---------------------------------------------------------------------------------------
// version, root, health

#[test]
fn version_is_json_and_get_only() {
    let n = Node::start("node0");
    let a = &n.client;
    let r = get(a, "/version");
    assert_eq!(r.status, 200);
    assert_eq!(ct(&r), Some("application/json"));
    assert!(r.header("x-etcd-cluster-id").is_none(), "{:?}", r.headers);
    assert_eq!(key_order(&r.body), ["etcdserver", "etcdcluster"]);
    let (server, cluster) = version(a);
    assert_eq!(
        r.body,
        format!(r#"{{"etcdserver":"{server}","etcdcluster":"{cluster}"}}"#),
        "no trailing newline"
    );
    // Versions real v2 clients accept: server X.Y.Z, cluster X.Y.0, both 2.x or later.
    let nums: Vec<u64> = server
        .split('.')
        .map(|p| p.parse().expect("numeric version part"))
        .collect();
    assert_eq!(nums.len(), 3, "{server}");
    assert!(nums[0] >= 2, "{server}");
    assert_eq!(cluster, format!("{}.{}.0", nums[0], nums[1]));

    for m in ["POST", "PUT", "DELETE"] {
        assert_405(
            &request(a, m, "/version", &[], b""),
            Some("GET"),
            &format!("{m} /version"),
        );
    }
}

#[test]
fn root_and_unserved_paths_are_404_on_both_ports() {
    // etcd v0.1.2 and etcd 3.4 answer Go's `404 page not found` for `/` and for every path
    // they do not serve, whatever the method; a probe must not take them for endpoints.
    let n = Node::start("node0");
    for (port, addr) in [("client", &n.client), ("peer", &n.peer)] {
        for p in [
            "/",
            "/nothing/here",
            "/v1/unknown",
            "/v2",
            "/v2/",
            "/version/",
            "/debug/vars",
        ] {
            for m in ["GET", "HEAD", "POST", "PUT", "DELETE"] {
                let what = format!("{m} {p} on the {port} port");
                let r = request(addr, m, p, &[], b"");
                assert_eq!(r.status, 404, "{what}: {}", r.body);
                assert_eq!(ct(&r), Some("text/plain; charset=utf-8"), "{what}");
                let body = if m == "HEAD" {
                    ""
                } else {
                    "404 page not found\n"
                };
                assert_eq!(r.body, body, "{what}");
            }
        }
    }
    // The documented endpoints are unchanged.
    assert_eq!(get(&n.client, "/version").status, 200);
    assert_eq!(get(&n.client, "/health").status, 200);
    assert_eq!(get(&n.peer, "/version").status, 200);
}

#[test]
fn health() {
    let n = Node::start("node0");
    let a = &n.client;
    let r = get(a, "/health");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, r#"{"health":"true"}"#);
    // etcd 2.3 and 3.4 write it without a Content-Type: Go sniffs text/plain.
    assert_eq!(ct(&r), Some("text/plain; charset=utf-8"));
}

#[test]
fn get_only_endpoints_refuse_other_methods_like_etcd() {
    // etcd 2.3/3.4 guard these handlers with allowMethod(GET): anything else, HEAD included,
    // is 405 with `Allow: GET`.
    let n = Node::start("node0");
    let a = &n.client;
    let mut wrong = Vec::new();
    for p in [
        "/version",
        "/health",
        "/v2/stats/self",
        "/v2/stats/store",
        "/v2/stats/leader",
    ] {
        for m in ["POST", "PUT", "DELETE", "HEAD"] {
            let r = request(a, m, p, &[], b"");
            let ok = r.status == 405
                && r.header("allow") == Some("GET")
                && ct(&r) == Some("text/plain; charset=utf-8")
                && (m == "HEAD" || r.body == "Method Not Allowed\n");
            if !ok {
                wrong.push(format!(
                    "{m} {p}: {} Allow {:?} {:?}",
                    r.status,
                    r.header("allow"),
                    r.body
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "expected 405 with Allow: GET:\n{}",
        wrong.join("\n")
    );
}

// ---------------------------------------------------------------------------------------
// machines, leader, members

#[test]
fn machines_and_leader() {
    let n = Node::start("node0");
    let a = &n.client;
    let r = get(a, "/v2/machines");
    assert_eq!(r.status, 200);
    assert_eq!(ct(&r), Some("text/plain; charset=utf-8"));
    assert_eq!(r.body, format!("http://{}", n.client));
    let h = request(a, "HEAD", "/v2/machines", &[], b"");
    assert_eq!(h.status, 200);
    assert_eq!(
        h.header("content-length"),
        Some(r.body.len().to_string().as_str())
    );
    assert_405(
        &request(a, "POST", "/v2/machines", &[], b""),
        Some("GET,HEAD"),
        "POST /v2/machines",
    );

    // the choices in docs/api.md: /v2/leader is the leader's peer URL as plain text.
    let r = get(a, "/v2/leader");
    assert_eq!(r.status, 200);
    assert_eq!(ct(&r), Some("text/plain; charset=utf-8"));
    assert_eq!(r.body, format!("http://{}", n.peer));
}

#[test]
fn members() {
    let n = Node::start("node0");
    let a = &n.client;
    let r = get(a, "/v2/members");
    assert_eq!(r.status, 200);
    assert_eq!(ct(&r), Some("application/json"));
    let cid = assert_cluster_id(&r);
    let id = r.json()["members"][0]["id"].as_str().unwrap().to_string();
    assert_member_id(&id);
    let member = format!(
        r#"{{"id":"{id}","name":"node0","peerURLs":["http://{}"],"clientURLs":["http://{}"]}}"#,
        n.peer, n.client
    );
    assert_eq!(r.body, format!("{{\"members\":[{member}]}}\n"));
    // Same cluster id as the key API.
    let k = get(a, "/v2/keys/");
    assert_eq!(k.header("x-etcd-cluster-id"), Some(cid.as_str()));

    let r = get(a, "/v2/members/leader");
    assert_eq!(r.status, 200);
    assert_eq!(ct(&r), Some("application/json"));
    assert_eq!(assert_cluster_id(&r), cid);
    assert_eq!(r.body, format!("{member}\n"));

    // Unknown or non-hex ids.
    for bad in ["abc", "zz", "ffffffffffffffff"] {
        let r = request(a, "DELETE", &format!("/v2/members/{bad}"), &[], b"");
        assert_eq!(r.status, 404, "DELETE {bad}");
        assert_eq!(ct(&r), Some("application/json"));
        assert_eq!(r.body, format!(r#"{{"message":"No such member: {bad}"}}"#));
    }
    // Methods.
    assert_405(
        &request(a, "PATCH", "/v2/members", &[], b""),
        Some("GET,POST,DELETE,PUT"),
        "PATCH /v2/members",
    );
    let r = request(a, "DELETE", "/v2/members", &[], b"");
    assert_eq!(r.status, 405, "DELETE without an id");
    // The member is still there.
    assert_eq!(member_id(a), id);
}

// ---------------------------------------------------------------------------------------
// stats

#[test]
fn stats_self() {
    let n = Node::start("node0");
    let a = &n.client;
    let id = member_id(a);
    let r = get(a, "/v2/stats/self");
    assert_eq!(r.status, 200);
    assert_eq!(ct(&r), Some("application/json"));
    assert!(!r.body.ends_with('\n'), "no trailing newline: {:?}", r.body);
    assert_eq!(
        key_order(&r.body),
        [
            "name",
            "id",
            "state",
            "startTime",
            "leaderInfo",
            "recvAppendRequestCnt",
            "sendAppendRequestCnt"
        ],
        "{}",
        r.body
    );
    let v = r.json();
    assert_eq!(v["name"], "node0");
    assert_eq!(v["id"], id.as_str());
    assert_eq!(v["state"], "StateLeader");
    assert_rfc3339_utc(v["startTime"].as_str().unwrap());
    let li = &v["leaderInfo"];
    assert_eq!(
        li.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["leader", "startTime", "uptime"]
    );
    assert!(r.body.contains(r#""leaderInfo":{"leader":"#), "{}", r.body);
    assert_eq!(li["leader"], id.as_str());
    assert_rfc3339_utc(li["startTime"].as_str().unwrap());
    assert_go_duration(li["uptime"].as_str().unwrap());
    assert_eq!(v["recvAppendRequestCnt"], 0);
    assert_eq!(v["sendAppendRequestCnt"], 0);
}

#[test]
fn stats_leader_of_a_single_node() {
    let n = Node::start("node0");
    let a = &n.client;
    let id = member_id(a);
    let r = get(a, "/v2/stats/leader");
    assert_eq!(r.status, 200);
    assert_eq!(ct(&r), Some("application/json"));
    assert_eq!(r.body, format!(r#"{{"leader":"{id}","followers":{{}}}}"#));
}

const STORE_FIELDS: [&str; 16] = [
    "getsSuccess",
    "getsFail",
    "setsSuccess",
    "setsFail",
    "deleteSuccess",
    "deleteFail",
    "updateSuccess",
    "updateFail",
    "createSuccess",
    "createFail",
    "compareAndSwapSuccess",
    "compareAndSwapFail",
    "compareAndDeleteSuccess",
    "compareAndDeleteFail",
    "expireCount",
    "watchers",
];

fn store_stats(a: &str) -> BTreeMap<String, u64> {
    let r = get(a, "/v2/stats/store");
    assert_eq!(r.status, 200);
    assert_eq!(ct(&r), Some("application/json"));
    assert_eq!(key_order(&r.body), STORE_FIELDS, "{}", r.body);
    assert!(!r.body.ends_with('\n'));
    r.json()
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().expect("counter")))
        .collect()
}

/// Assert that exactly the listed counters moved, by the listed amounts.
fn assert_moved(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
    moved: &[(&str, u64)],
    what: &str,
) {
    for f in STORE_FIELDS {
        let want = moved
            .iter()
            .find(|(k, _)| *k == f)
            .map(|(_, d)| *d)
            .unwrap_or(0);
        assert_eq!(
            after[f] as i64 - before[f] as i64,
            want as i64,
            "{what}: {f} moved from {} to {}",
            before[f],
            after[f]
        );
    }
}

/// One step of the counter test: name, the request, the counters it must move.
type Step<'a> = (&'a str, Box<dyn Fn() -> Resp + 'a>, Vec<(&'a str, u64)>);

#[test]
fn store_stats_count_operations() {
    let n = Node::start("node0");
    let a = &n.client;
    let s = |x: &str| format!("/v2/keys{x}");
    let form = |m: &str, k: &str, f: &[(&str, &str)]| {
        let r = send_form(a, m, &s(k), f);
        assert!(r.status < 500, "{m} {k}: {:?}", r.body);
        r
    };
    let mut before = store_stats(a);
    assert_eq!(before["watchers"], 0);
    let steps: Vec<Step> = vec![
        (
            "get missing",
            Box::new(|| get(a, &s("/k"))),
            vec![("getsFail", 1)],
        ),
        (
            "set",
            Box::new(|| form("PUT", "/k", &[("value", "1")])),
            vec![("setsSuccess", 1)],
        ),
        (
            "get",
            Box::new(|| get(a, &s("/k"))),
            vec![("getsSuccess", 1)],
        ),
        (
            "get dir",
            Box::new(|| get(a, &s("/"))),
            vec![("getsSuccess", 1)],
        ),
        (
            "set through key",
            Box::new(|| form("PUT", "/k/x", &[("value", "1")])),
            vec![("setsFail", 1)],
        ),
        (
            "create existing",
            Box::new(|| form("PUT", "/k", &[("value", "1"), ("prevExist", "false")])),
            vec![("createFail", 1)],
        ),
        (
            "create",
            Box::new(|| form("PUT", "/n", &[("value", "1"), ("prevExist", "false")])),
            vec![("createSuccess", 1)],
        ),
        (
            "post",
            Box::new(|| form("POST", "/q", &[("value", "1")])),
            vec![("createSuccess", 1)],
        ),
        (
            "update",
            Box::new(|| form("PUT", "/k", &[("value", "2"), ("prevExist", "true")])),
            vec![("updateSuccess", 1)],
        ),
        (
            "update missing",
            Box::new(|| form("PUT", "/none", &[("value", "2"), ("prevExist", "true")])),
            vec![("updateFail", 1)],
        ),
        (
            "cas fail",
            Box::new(|| form("PUT", "/k", &[("value", "3"), ("prevValue", "x")])),
            vec![("compareAndSwapFail", 1)],
        ),
        (
            "cas missing",
            Box::new(|| form("PUT", "/none", &[("value", "3"), ("prevValue", "x")])),
            vec![("compareAndSwapFail", 1)],
        ),
        (
            "cas",
            Box::new(|| form("PUT", "/k", &[("value", "3"), ("prevValue", "2")])),
            vec![("compareAndSwapSuccess", 1)],
        ),
        (
            "cad missing",
            Box::new(|| delete(a, &s("/none?prevValue=3"))),
            vec![("compareAndDeleteFail", 1)],
        ),
        (
            "cad",
            Box::new(|| delete(a, &s("/k?prevValue=3"))),
            vec![("compareAndDeleteSuccess", 1)],
        ),
        (
            "delete",
            Box::new(|| delete(a, &s("/n"))),
            vec![("deleteSuccess", 1)],
        ),
        (
            "delete missing",
            Box::new(|| delete(a, &s("/n"))),
            vec![("deleteFail", 1)],
        ),
        // Requests refused before the store touch no counter.
        (
            "bad ttl",
            Box::new(|| form("PUT", "/k", &[("value", "1"), ("ttl", "x")])),
            vec![],
        ),
        (
            "bad bool",
            Box::new(|| get(a, &s("/k?recursive=yes"))),
            vec![],
        ),
        (
            "bad prevIndex",
            Box::new(|| delete(a, &s("/k?prevIndex=x"))),
            vec![],
        ),
    ];
    for (what, op, moved) in &steps {
        op();
        let after = store_stats(a);
        assert_moved(&before, &after, moved, what);
        before = after;
    }

    // Expiry. /e is the only key with a TTL, so the only expiry there can be; the TTL is long
    // enough that it cannot expire before the stats read right after the set.
    form("PUT", "/e", &[("value", "1"), ("ttl", "3")]);
    let b2 = store_stats(a);
    assert_moved(&before, &b2, &[("setsSuccess", 1)], "set with ttl");
    let after = poll_until(Duration::from_secs(10), "expireCount to move", || {
        let s = store_stats(a);
        (s["expireCount"] > b2["expireCount"]).then_some(s)
    });
    assert_moved(&b2, &after, &[("expireCount", 1)], "expiry");

    // Watchers: a pending watch is counted until it fires.
    let a2 = a.to_string();
    let watch = std::thread::spawn(move || {
        request_timeout(
            &a2,
            "GET",
            "/v2/keys/w?wait=true",
            &[],
            b"",
            Duration::from_secs(20),
        )
    });
    poll_until(Duration::from_secs(10), "the watcher to register", || {
        (store_stats(a)["watchers"] == 1).then_some(())
    });
    form("PUT", "/w", &[("value", "1")]);
    let r = watch.join().unwrap().expect("watch answer");
    assert_eq!(r.status, 200);
    poll_until(Duration::from_secs(10), "the watcher to go", || {
        (store_stats(a)["watchers"] == 0).then_some(())
    });
}

// ---------------------------------------------------------------------------------------
// metrics

/// Parse Prometheus text format: (name{labels}, value) samples; checks the syntax and that
/// every sample's family was declared by a `# TYPE` line before it.
fn parse_metrics(body: &str) -> Vec<(String, String, f64)> {
    let mut typed: BTreeMap<String, String> = BTreeMap::new();
    let mut out = Vec::new();
    for line in body.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut p = rest.splitn(3, ' ');
            let kind = p.next().unwrap();
            let name = p.next().unwrap_or_else(|| panic!("bad comment {line:?}"));
            if kind == "TYPE" {
                let t = p.next().unwrap_or("");
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&t),
                    "bad TYPE line {line:?}"
                );
                typed.insert(name.to_string(), t.to_string());
            }
            continue;
        }
        assert!(!line.starts_with('#'), "bad comment {line:?}");
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad sample {line:?}"));
        let (name, labels) = match series.find('{') {
            Some(p) => {
                assert!(series.ends_with('}'), "bad labels {line:?}");
                (&series[..p], &series[p..])
            }
            None => (series, ""),
        };
        assert!(
            !name.is_empty()
                && name
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b':'),
            "bad metric name {line:?}"
        );
        let v: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            x => x.parse().unwrap_or_else(|_| panic!("bad value {line:?}")),
        };
        let family = ["_bucket", "_sum", "_count"]
            .into_iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| typed.get(*f).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(name);
        assert!(
            typed.contains_key(family),
            "sample before its TYPE: {line:?}"
        );
        out.push((name.to_string(), labels.to_string(), v));
    }
    out
}

fn metrics(a: &str) -> Vec<(String, String, f64)> {
    let r = get(a, "/metrics");
    assert_eq!(r.status, 200);
    let t = ct(&r).unwrap_or("");
    assert!(t.starts_with("text/plain"), "Content-Type {t:?}");
    parse_metrics(&r.body)
}

fn msum(m: &[(String, String, f64)], name: &str, label: Option<&str>) -> f64 {
    m.iter()
        .filter(|(n, l, _)| n == name && label.is_none_or(|x| l.contains(x)))
        .map(|(_, _, v)| *v)
        .sum()
}

#[test]
fn metrics_are_prometheus_text() {
    let n = Node::start("node0");
    let a = &n.client;
    let m0 = metrics(a);
    for name in [
        "etcd_store_writes_total",
        "etcd_store_watchers",
        "etcd_server_proposal_durations_seconds_bucket",
        "etcd_server_proposal_durations_seconds_count",
        "etcd_http_received_total",
    ] {
        assert!(m0.iter().any(|(n, _, _)| n == name), "no {name}");
    }
    // Histogram: cumulative buckets, +Inf bucket = count.
    let buckets: Vec<&(String, String, f64)> = m0
        .iter()
        .filter(|(n, _, _)| n == "etcd_server_proposal_durations_seconds_bucket")
        .collect();
    assert!(buckets.windows(2).all(|w| w[0].2 <= w[1].2), "{buckets:?}");
    let inf = buckets.last().unwrap();
    assert!(inf.1.contains("le=\"+Inf\""), "{inf:?}");
    let count0 = msum(&m0, "etcd_server_proposal_durations_seconds_count", None);
    assert_eq!(inf.2, count0);

    let r = put_form(a, "/v2/keys/m", &[("value", "1")]);
    assert_eq!(r.status, 201);
    let m1 = metrics(a);
    assert_eq!(
        msum(&m1, "etcd_store_writes_total", None),
        msum(&m0, "etcd_store_writes_total", None) + 1.0
    );
    assert_eq!(
        msum(&m1, "etcd_http_received_total", Some("method=\"PUT\"")),
        msum(&m0, "etcd_http_received_total", Some("method=\"PUT\"")) + 1.0
    );
    assert!(msum(&m1, "etcd_server_proposal_durations_seconds_count", None) > count0);
    assert_eq!(msum(&m1, "etcd_store_watchers", None), 0.0);

    let a2 = a.to_string();
    let watch = std::thread::spawn(move || {
        request_timeout(
            &a2,
            "GET",
            "/v2/keys/w?wait=true",
            &[],
            b"",
            Duration::from_secs(20),
        )
    });
    poll_until(Duration::from_secs(10), "etcd_store_watchers = 1", || {
        (msum(&metrics(a), "etcd_store_watchers", None) == 1.0).then_some(())
    });
    put_form(a, "/v2/keys/w", &[("value", "1")]);
    watch.join().unwrap().expect("watch answer");
    poll_until(Duration::from_secs(10), "etcd_store_watchers = 0", || {
        (msum(&metrics(a), "etcd_store_watchers", None) == 0.0).then_some(())
    });
}

// ---------------------------------------------------------------------------------------
// one store behind /v1 and /v2 (docs/api.md)

#[test]
fn v1_and_v2_share_keys_and_index() {
    let n = Node::start("node0");
    let a = &n.client;
    let r = post_form(a, "/v1/keys/shared", &[("value", "a")]);
    assert_eq!(r.status, 200, "{:?}", r.body);
    let i = r.json()["index"].as_u64().unwrap();

    let g = get(a, "/v2/keys/shared");
    assert_eq!(g.status, 200);
    assert_eq!(
        g.body,
        format!(
            "{{\"action\":\"get\",\"node\":{{\"key\":\"/shared\",\"value\":\"a\",\"modifiedIndex\":{i},\"createdIndex\":{i}}}}}\n"
        )
    );
    assert_eq!(g.header("x-etcd-index"), Some(i.to_string().as_str()));

    let p = put_form(a, "/v2/keys/shared", &[("value", "b")]);
    assert_eq!(p.status, 200);
    assert_eq!(p.json()["node"]["modifiedIndex"], i + 1);
    assert_eq!(p.json()["prevNode"]["value"], "a");
    let g = get(a, "/v1/keys/shared");
    assert_eq!(g.status, 200);
    assert_eq!(
        g.json(),
        json!({"action": "GET", "key": "/shared", "value": "b", "index": i + 1})
    );

    // A v2 directory is listed by v1; a v2 delete is seen by v1 and the other way round.
    let d = put_form(a, "/v2/keys/dir/x", &[("value", "x")]);
    assert_eq!(d.json()["node"]["modifiedIndex"], i + 2);
    let l = get(a, "/v1/keys/dir");
    assert_eq!(l.status, 200);
    assert_eq!(
        l.json(),
        json!([{"action": "GET", "key": "/dir/x", "value": "x", "index": i + 2}])
    );
    let r = delete(a, "/v1/keys/shared");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["index"], i + 3);
    let g = get(a, "/v2/keys/shared");
    assert_eq!(g.status, 404);
    assert_eq!(
        g.json(),
        json!({"errorCode": 100, "message": "Key not found", "cause": "/shared", "index": i + 3})
    );
    let r = delete(a, "/v2/keys/dir/x");
    assert_eq!(r.status, 200);
    let g = get(a, "/v1/keys/dir/x");
    assert_eq!(g.status, 404);
    // Both APIs report the same current index.
    let v2 = get(a, "/v2/keys/");
    let v2i: u64 = v2.header("x-etcd-index").unwrap().parse().unwrap();
    assert_eq!(v2i, i + 4);
    let v1 = get(a, "/v1/keys/");
    let v1i = v1.json().as_array().unwrap()[0]["index"].as_u64().unwrap();
    assert_eq!(v1i, v2i);
    // The v2 history holds the v1 writes.
    let w = get(a, &format!("/v2/keys/shared?wait=true&waitIndex={i}"));
    assert_eq!(w.status, 200);
    let wv: Value = w.json();
    assert_eq!(wv["action"], "set");
    assert_eq!(wv["node"]["value"], "a");
}

#[test]
fn machines_lists_only_members_that_published_a_client_url() {
    // A member added with POST /v2/members has not started: no client URL yet. Machine lists
    // must not show an empty entry for it (python-etcd reads machines[0] as a URL).
    let n = Node::start("node0");
    let a = n.client.as_str();
    let body = format!(r#"{{"peerURLs":["http://127.0.0.1:{}"]}}"#, free_port());
    let r = request(
        a,
        "POST",
        "/v2/members",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["clientURLs"], json!([]));
    let members = get(a, "/v2/members").json();
    assert_eq!(members["members"].as_array().map(Vec::len), Some(2));
    let own = format!("http://{a}");
    assert_eq!(get(a, "/v2/machines").body, own);
    assert_eq!(get(a, "/v1/machines").body, own);
}
