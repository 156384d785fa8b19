//! Hostile and broken clients against a running node (issue 9, section 3), black-box: the
//! real binary on loopback, raw bytes over TCP.
//!
//! * Malformed requests - a table of hand-picked ones with the exact answer each gets, then
//!   1,600 seeded random ones (`HOSTILE_SEED=<n>` replays a run): never a 5xx, an etcd JSON
//!   error wherever the answer is JSON, and after every batch the node still takes a write
//!   and reads it back.
//! * Slow and idle clients - 10,000 idle connections (fewer only when the hard open-files
//!   limit is too low, and the test says so), a connection cap, slowloris clients, watchers
//!   that never read: the server's memory (VmRSS from /proc) stays under a stated bound,
//!   other clients are served meanwhile, and the timeouts close what they should. Short
//!   timeouts through the `--client-*-timeout` flags keep this fast.
//! * A full disk - the data dir on a small tmpfs (the test runs as root; it fails, loudly,
//!   when it cannot mount): writes fail with error 300 naming ENOSPC, the node exits with
//!   code 1, and a restart after space returns has every acknowledged write.
//!
//! The limits themselves are described in docs/limits.md.

mod common;

use common::*;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------
// helpers

/// What came back for raw bytes sent on a fresh connection.
#[derive(Debug)]
struct Raw {
    /// The parsed response, if a complete one came.
    resp: Option<Resp>,
    /// Everything received.
    bytes: Vec<u8>,
    /// The server closed the connection (EOF or reset) before `timeout`.
    closed: bool,
}

/// Send `req` on a new connection, optionally half-close (so the server sees the end of the
/// request), and read until the server closes or `timeout` passes.
fn raw(addr: &str, req: &[u8], half_close: bool, timeout: Duration) -> Raw {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_nodelay(true).ok();
    s.set_write_timeout(Some(timeout)).ok();
    // The server may answer and close before it has read everything (431, 413): go on and
    // read its answer.
    let _ = s.write_all(req);
    if half_close {
        let _ = s.shutdown(Shutdown::Write);
    }
    let head_only = req.starts_with(b"HEAD ");
    let deadline = Instant::now() + timeout;
    let mut bytes = Vec::new();
    let mut buf = [0u8; 16384];
    let mut closed = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        s.set_read_timeout(Some(left)).ok();
        match s.read(&mut buf) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(_) => {
                closed = true;
                break;
            }
        }
    }
    let resp = parse_response(&bytes, true, head_only);
    Raw {
        resp,
        bytes,
        closed,
    }
}

/// One request (its head written with `\n` line ends), the connection left open for the
/// answer; the head should say `Connection: close`.
fn req(addr: &str, head: &str, body: &[u8]) -> Raw {
    let mut bytes = head.replace('\n', "\r\n").into_bytes();
    bytes.extend_from_slice(body);
    raw(addr, &bytes, false, Duration::from_secs(10))
}

/// The response, or a panic naming the request.
fn answered(r: &Raw, what: &str) -> Resp {
    r.resp.clone().unwrap_or_else(|| {
        panic!(
            "{what}: no complete response; got {:?}",
            String::from_utf8_lossy(&r.bytes)
        )
    })
}

/// Assert an etcd v2 JSON error: status, `errorCode`, `message`, `cause` exactly.
fn assert_etcd_error(r: &Resp, status: u16, code: u64, message: &str, cause: &str) {
    assert_eq!(r.status, status, "{r:?}");
    assert_eq!(r.content_type(), Some("application/json"), "{r:?}");
    let j = r.json();
    assert_eq!(j["errorCode"], code, "{r:?}");
    assert_eq!(j["message"], message, "{r:?}");
    assert_eq!(j["cause"], cause, "{r:?}");
}

/// The node still works: a write that is acknowledged, and a read that returns it.
fn assert_serving(addr: &str, round: usize) {
    let value = format!("round-{round}");
    let t = Instant::now();
    let w = request_timeout(
        addr,
        "PUT",
        "/v2/keys/hostile-check",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        format!("value={value}").as_bytes(),
        Duration::from_secs(10),
    )
    .unwrap_or_else(|e| panic!("round {round}: the write failed: {e}"));
    assert!(w.status == 200 || w.status == 201, "round {round}: {w:?}");
    let r = request_timeout(
        addr,
        "GET",
        "/v2/keys/hostile-check",
        &[],
        b"",
        Duration::from_secs(10),
    )
    .unwrap_or_else(|e| panic!("round {round}: the read failed: {e}"));
    assert_eq!(r.status, 200, "round {round}: {r:?}");
    assert_eq!(r.json()["node"]["value"], value, "round {round}");
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "round {round}: a write and a read took {:?}",
        t.elapsed()
    );
}

/// A line of /proc/PID/status, in kB (VmRSS, VmHWM).
fn proc_kb(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

fn rss_mib(pid: u32) -> f64 {
    proc_kb(pid, "VmRSS") as f64 / 1024.0
}

/// Open descriptors of a process.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read /proc fd")
        .count()
}

/// Open descriptors of a process once the count has stopped moving (the same three times in
/// a row, 100 ms apart, within 10 s): a connection just answered may still be closing.
fn settled_fds(pid: u32) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = open_fds(pid);
    let mut same = 0;
    while same < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        let now = open_fds(pid);
        same = if now == last { same + 1 } else { 0 };
        last = now;
    }
    last
}

/// Raise this process's soft open-files limit to the hard one (the server, a child, inherits
/// it); returns the new soft limit.
fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                lim = want;
            }
        }
    }
    lim.rlim_cur
}

/// A small deterministic generator (xorshift64*), so a failing random request can be
/// reproduced from the seed printed with it.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T: ?Sized>(&mut self, xs: &[&'a T]) -> &'a T {
        xs[self.below(xs.len())]
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

// ---------------------------------------------------------------------------------------
// malformed requests

/// Hand-picked malformed requests and the exact answer of each. Answers that come from the
/// HTTP layer (a request it cannot parse, headers over the limits) have an empty body and
/// close the connection, as Go's server answers them with plain text; everything the etcd API
/// answers is etcd's JSON.
#[test]
fn malformed_requests_get_exact_answers_and_the_node_keeps_serving() {
    let n = Node::start_args("node0", &["--client-body-timeout", "2"]);
    let a = n.client.as_str();
    let get_head = |path: &str| format!("GET {path} HTTP/1.1\nHost: x\nConnection: close\n\n");

    // Dot segments and doubled slashes: cleaned and redirected (301), as Go's mux does.
    let r = answered(&req(a, &get_head("/v2/keys/../a"), b""), "..");
    assert_eq!((r.status, r.header("location")), (301, Some("/v2/a")));
    let r = answered(
        &req(a, &get_head("/v1/keys/../../etc/passwd"), b""),
        "../..",
    );
    assert_eq!((r.status, r.header("location")), (301, Some("/etc/passwd")));
    let r = answered(&req(a, &get_head("/v2/keys//a"), b""), "//");
    assert_eq!((r.status, r.header("location")), (301, Some("/v2/keys/a")));

    // %00 is a byte of a key like any other.
    let r = answered(&req(a, &get_head("/v2/keys/nul%00key"), b""), "%00");
    assert_etcd_error(&r, 404, 100, "Key not found", "/nul\u{0}key");

    // Bad percent-escapes and invalid UTF-8, in the key and in the query.
    let r = answered(&req(a, &get_head("/v2/keys/a%zz"), b""), "bad escape");
    assert_etcd_error(
        &r,
        400,
        209,
        "Invalid field",
        "invalid URL escape in key \"/v2/keys/a%zz\"",
    );
    let r = answered(&req(a, &get_head("/v2/keys/a%"), b""), "lone %");
    assert_etcd_error(
        &r,
        400,
        209,
        "Invalid field",
        "invalid URL escape in key \"/v2/keys/a%\"",
    );
    let r = answered(
        &req(a, &get_head("/v2/keys/a%ff%fe"), b""),
        "escaped non-UTF-8",
    );
    assert_etcd_error(&r, 400, 209, "Invalid field", "key is not valid UTF-8");
    let r = answered(&req(a, &get_head("/v2/keys/a?recursive=%zz"), b""), "query");
    assert_etcd_error(
        &r,
        400,
        210,
        "Invalid POST form",
        "invalid URL escape \"%zz\"",
    );
    // Raw bytes that are not allowed in a request line: the HTTP layer refuses the request.
    let mut bad = b"GET /v2/keys/a\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
    let r = raw(a, &bad, true, Duration::from_secs(10));
    let resp = answered(&r, "raw 0xff");
    assert_eq!((resp.status, resp.body.as_str()), (400, ""));
    assert!(r.closed);
    bad = b"PUT /v2/keys/a HTTP/1.1\r\nHost: x\r\nX-Bad: a\x00b\r\n\r\n".to_vec();
    let resp = answered(
        &raw(a, &bad, true, Duration::from_secs(10)),
        "NUL in header",
    );
    assert_eq!(resp.status, 400);

    // Garbage instead of a request line; an unknown method.
    let resp = answered(
        &raw(
            a,
            b"\x16\x03\x01garbage\r\n\r\n",
            true,
            Duration::from_secs(10),
        ),
        "garbage",
    );
    assert_eq!(resp.status, 400);
    let r = answered(
        &req(
            a,
            "BREW /v2/keys/a HTTP/1.1\nHost: x\nConnection: close\n\n",
            b"",
        ),
        "BREW",
    );
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("HEAD,GET,PUT,POST,DELETE"));

    // Header floods and a huge request target.
    let mut flood = String::from("GET /v2/keys/ HTTP/1.1\nHost: x\nConnection: close\n");
    for i in 0..200 {
        flood.push_str(&format!("X-Flood-{i}: v\n"));
    }
    flood.push('\n');
    let r = answered(&req(a, &flood, b""), "200 headers");
    assert_eq!((r.status, r.body.as_str()), (431, ""));
    let big = format!(
        "GET /v2/keys/ HTTP/1.1\nHost: x\nConnection: close\nX-Big: {}\n\n",
        "a".repeat(300 << 10)
    );
    let r = answered(&req(a, &big, b""), "300 KiB header");
    assert_eq!((r.status, r.body.as_str()), (431, ""));
    let r = answered(
        &req(
            a,
            &get_head(&format!("/v2/keys/{}", "k".repeat(70_000))),
            b"",
        ),
        "uri",
    );
    assert_eq!((r.status, r.body.as_str()), (414, ""));

    // Huge and repeated query parameters (within the request-line limit): the first value
    // of a repeated field wins, as in Go.
    let many = "value=first&".to_string() + &"value=again&".repeat(4000);
    let r = answered(
        &req(
            a,
            &format!(
                "PUT /v2/keys/many?{many} HTTP/1.1\nHost: x\nConnection: close\nContent-Length: 0\n\n"
            ),
            b"",
        ),
        "repeated params",
    );
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.json()["node"]["value"], "first");
    let long = "L".repeat(60_000);
    let r = answered(
        &req(
            a,
            &format!(
                "PUT /v2/keys/long?value={long} HTTP/1.1\nHost: x\nConnection: close\nContent-Length: 0\n\n"
            ),
            b"",
        ),
        "long param",
    );
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.json()["node"]["value"], long.as_str());

    // Wrong content types: a body that is not a form is not read as one (Go's FormValue), so
    // the value is empty rather than the JSON text.
    for ct in [
        "application/json",
        "text/plain",
        "multipart/form-data; boundary=x",
    ] {
        let body = br#"value=not-a-form"#;
        let r = answered(
            &req(
                a,
                &format!(
                    "PUT /v2/keys/ct HTTP/1.1\nHost: x\nConnection: close\nContent-Type: {ct}\nContent-Length: {}\n\n",
                    body.len()
                ),
                body,
            ),
            ct,
        );
        // The first creates the key, the others replace it.
        let want = if ct == "application/json" { 201 } else { 200 };
        assert_eq!(r.status, want, "{ct}: {r:?}");
        assert_eq!(r.json()["node"]["value"], "", "{ct}");
    }

    // Bodies over the limit (1.5 MiB): refused by their declared length before reading, or
    // once a chunked body passes the limit.
    let r = answered(
        &req(
            a,
            "PUT /v2/keys/big HTTP/1.1\nHost: x\nConnection: close\nContent-Type: application/x-www-form-urlencoded\nContent-Length: 2000000\n\n",
            b"value=",
        ),
        "declared 2 MB",
    );
    assert_etcd_error(
        &r,
        413,
        210,
        "Invalid POST form",
        "request body too large (limit 1572864 bytes)",
    );
    let mut chunked = Vec::new();
    for _ in 0..20 {
        chunked.extend_from_slice(format!("{:x}\r\n", 100_000).as_bytes());
        chunked.extend(std::iter::repeat_n(b'v', 100_000));
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let r = answered(
        &req(
            a,
            "PUT /v2/keys/big HTTP/1.1\nHost: x\nConnection: close\nContent-Type: application/x-www-form-urlencoded\nTransfer-Encoding: chunked\n\n",
            &chunked,
        ),
        "chunked 2 MB",
    );
    assert_etcd_error(
        &r,
        413,
        210,
        "Invalid POST form",
        "request body too large (limit 1572864 bytes)",
    );

    // Bodies cut short: the client goes away (400 at once), or stays and sends nothing more
    // (400 once the body timeout, 2 s here, passes). Neither is written.
    let form = "Content-Type: application/x-www-form-urlencoded";
    let short = format!(
        "PUT /v2/keys/cut HTTP/1.1\nHost: x\nConnection: close\n{form}\nContent-Length: 100\n\n"
    );
    let truncated = format!(
        "PUT /v2/keys/cut HTTP/1.1\nHost: x\nConnection: close\n{form}\nTransfer-Encoding: chunked\n\n"
    );
    let bad_size = format!(
        "PUT /v2/keys/cut HTTP/1.1\nHost: x\nConnection: close\n{form}\nTransfer-Encoding: chunked\n\n"
    );
    let cases: [(&str, &String, &[u8]); 3] = [
        ("short Content-Length", &short, b"value=1"),
        ("truncated chunked", &truncated, b"7\r\nvalue=1\r\n"),
        ("bad chunk size", &bad_size, b"zz\r\nvalue=1\r\n0\r\n\r\n"),
    ];
    for (what, head, body) in cases {
        let mut bytes = head.replace('\n', "\r\n").into_bytes();
        bytes.extend_from_slice(body);
        let r = answered(&raw(a, &bytes, true, Duration::from_secs(10)), what);
        assert_etcd_error(
            &r,
            400,
            210,
            "Invalid POST form",
            "cannot read the body: error reading a body from connection",
        );
        if what == "bad chunk size" {
            continue;
        }
        let t = Instant::now();
        let r = answered(&raw(a, &bytes, false, Duration::from_secs(10)), what);
        assert_etcd_error(
            &r,
            400,
            210,
            "Invalid POST form",
            "cannot read the body: the body did not arrive within 2s",
        );
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(1900) && took < Duration::from_secs(6),
            "{took:?}"
        );
    }
    let r = get(a, "/v2/keys/cut");
    assert_etcd_error(&r, 404, 100, "Key not found", "/cut");

    // Conflicting lengths.
    let r = answered(
        &req(
            a,
            "PUT /v2/keys/cl HTTP/1.1\nHost: x\nConnection: close\nContent-Length: 5\nContent-Length: 6\n\n",
            b"value=",
        ),
        "two lengths",
    );
    assert_eq!((r.status, r.body.as_str()), (400, ""));

    assert_serving(a, 0);
}

/// Seeded random requests: methods, paths built from hostile pieces, query strings from the
/// fields etcd knows with random values, random bodies and content types. Nothing may answer
/// 5xx (one healthy node has no Raft errors to report), every JSON error must be in etcd's
/// shape, and the node must take a write and read it back after every batch. Watches
/// (`wait`, `/v1/watch`) and membership changes are left out: they wait or change the cluster
/// by design.
#[test]
fn random_requests_never_take_the_node_down() {
    let n = Node::start_args("node0", &["--client-body-timeout", "1"]);
    let a = n.client.as_str();
    // A new seed each run, printed with any failure; HOSTILE_SEED replays one.
    let seed = std::env::var("HOSTILE_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0x5eed_0000_u64 + u64::from(std::process::id()));
    // (xorshift needs a state other than 0.)
    let mut rng = Rng(seed.max(1));
    let methods = [
        "GET", "PUT", "POST", "DELETE", "HEAD", "OPTIONS", "PATCH", "TRACE", "get", "X-Y",
    ];
    let prefixes = [
        "/v2/keys",
        "/v1/keys",
        "/v2/stats/self",
        "/v2/stats/store",
        "/v2/stats/leader",
        "/v2/machines",
        "/v1/machines",
        "/v1/leader",
        "/version",
        "/health",
        "/metrics",
        "",
        "/v2",
        "/v2/keys/_hidden",
    ];
    let segments = [
        "a", "b", "..", ".", "", "%00", "%zz", "%", "%ff", "%2F", "%2e%2e", "_x", "k%20y",
        "\u{e9}", "a;b", "a=b", "~", "*", "a%0Ab",
    ];
    let fields = [
        "value",
        "ttl",
        "prevValue",
        "prevIndex",
        "prevExist",
        "dir",
        "recursive",
        "sorted",
        "quorum",
        "consistent",
        "refresh",
        "stream",
        "dir",
        "noValueOnSuccess",
        "x",
    ];
    let values = [
        "",
        "1",
        "0",
        "-1",
        "true",
        "false",
        "99999999999999999999",
        "%zz",
        "%ff",
        "a+b",
        "%00",
        "1e9",
        " ",
        "TRUE",
    ];
    let types = [
        "application/x-www-form-urlencoded",
        "application/json",
        "text/plain",
        "",
    ];
    let mut statuses = std::collections::BTreeMap::new();
    const BATCH: usize = 200;
    for round in 1..=8 {
        for i in 0..BATCH {
            let method = rng.pick(&methods).to_string();
            let mut path = rng.pick(&prefixes).to_string();
            for _ in 0..rng.below(4) {
                path.push('/');
                path.push_str(rng.pick(&segments));
            }
            if path.is_empty() {
                path.push('/');
            }
            let mut query = Vec::new();
            for _ in 0..rng.below(4) {
                query.push(format!("{}={}", rng.pick(&fields), rng.pick(&values)));
            }
            if !query.is_empty() {
                path = format!("{path}?{}", query.join("&"));
            }
            let body = match rng.below(4) {
                0 => Vec::new(),
                1 => format!("value={}", rng.pick(&values)).into_bytes(),
                2 => {
                    let len = rng.below(64);
                    rng.bytes(len)
                }
                _ => format!(
                    "{}={}&ttl={}",
                    rng.pick(&fields),
                    rng.pick(&values),
                    rng.below(9)
                )
                .into_bytes(),
            };
            let ctype = rng.pick(&types);
            let mut head = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
            if !ctype.is_empty() {
                head.push_str(&format!("Content-Type: {ctype}\r\n"));
            }
            head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
            let mut bytes = head.into_bytes();
            bytes.extend_from_slice(&body);
            let what = format!(
                "HOSTILE_SEED={seed}, round {round}, request {i}: {:?}",
                String::from_utf8_lossy(&bytes)
            );
            let r = raw(a, &bytes, false, Duration::from_secs(10));
            let resp = answered(&r, &what);
            assert!(resp.status < 500, "{what}: {resp:?}");
            *statuses.entry(resp.status).or_insert(0u32) += 1;
            // (A HEAD answer has the headers of the GET answer and no body.)
            let json = resp.content_type() == Some("application/json") && method != "HEAD";
            if resp.status >= 400 && json {
                let j: serde_json::Value = serde_json::from_str(&resp.body)
                    .unwrap_or_else(|e| panic!("{what}: {e}: {resp:?}"));
                assert!(
                    j["errorCode"].is_u64() && j["message"].is_string(),
                    "{what}: not an etcd error: {resp:?}"
                );
            } else if json {
                let parsed = serde_json::from_str::<serde_json::Value>(&resp.body);
                assert!(parsed.is_ok(), "{what}: {resp:?}");
            }
        }
        assert_serving(a, round);
    }
    // The generator reaches more than the happy path: several kinds of answers came back.
    let kinds: Vec<u16> = statuses.keys().copied().collect();
    for want in [200, 301, 400, 404, 405] {
        assert!(kinds.contains(&want), "no {want} among {statuses:?}");
    }
}

// ---------------------------------------------------------------------------------------
// slow and idle clients

/// Bound on the growth of the server's resident memory with 10,000 idle connections open (a
/// tenth of them in the middle of their headers); docs/limits.md has the measured figure.
const IDLE_RSS_BOUND_MIB: f64 = 64.0;

/// 10,000 idle connections (the header timeout is long here; the slowloris test checks that
/// it closes idle ones): the server accepts them all, serves others meanwhile, its memory
/// grows by less than [`IDLE_RSS_BOUND_MIB`], and it lets go of them when they close.
#[test]
fn ten_thousand_idle_connections_cost_little_and_others_are_served() {
    let limit = raise_nofile();
    // This process and the server each hold one end of every connection; keep room for the
    // rest of the test binary.
    let count = 10_000.min(limit.saturating_sub(500) as usize);
    if count < 10_000 {
        eprintln!("hard open-files limit is {limit}: using {count} idle connections");
    }
    assert!(
        count >= 1000,
        "open-files limit {limit} is too low for this test"
    );
    // The derived cap keeps 2,048 descriptors back, more than the test needs: set it.
    let cap = (count + 100).to_string();
    let n = Node::start_args(
        "node0",
        &["--client-header-timeout", "600", "--max-connections", &cap],
    );
    let a = n.client.as_str();
    let pid = n.pid();
    assert_serving(a, 0);
    let rss0 = rss_mib(pid);
    let fds0 = settled_fds(pid);

    let mut idle = Vec::with_capacity(count);
    for i in 0..count {
        let mut s = TcpStream::connect(a).unwrap_or_else(|e| panic!("connection {i}: {e}"));
        if i % 10 == 0 {
            // Part of a request head, never finished.
            s.write_all(b"GET /v2/keys/ HTTP/1.1\r\nHost: x\r\nX-Wait: ")
                .expect("write");
        }
        idle.push(s);
    }
    // (A few descriptors counted in `fds0` may be gone by now: the connection of the last
    // request, which the server closes just after answering, and the like.)
    let deadline = Instant::now() + Duration::from_secs(120);
    while open_fds(pid) + 8 < fds0 + count {
        assert!(
            Instant::now() < deadline,
            "the server holds {} descriptors, {fds0} before {count} connections",
            open_fds(pid)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Other clients are served while they wait.
    for round in 1..=5 {
        assert_serving(a, round);
    }
    let rss = rss_mib(pid);
    eprintln!(
        "{count} idle connections: RSS {rss0:.1} MiB -> {rss:.1} MiB (+{:.1} MiB)",
        rss - rss0
    );
    assert!(
        rss - rss0 < IDLE_RSS_BOUND_MIB,
        "{count} idle connections took {:.1} MiB",
        rss - rss0
    );
    // None of them got an answer, and none was closed.
    for (i, s) in idle.iter_mut().enumerate().step_by(101) {
        s.set_nonblocking(true).unwrap();
        let mut b = [0u8; 64];
        match s.read(&mut b) {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            other => panic!("idle connection {i}: {other:?}"),
        }
    }
    drop(idle);
    poll_until(Duration::from_secs(60), "the server to let them go", || {
        (open_fds(pid) < fds0 + 10).then_some(())
    });
    assert_serving(a, 6);
}

#[test]
fn connections_over_the_cap_are_closed_at_once() {
    let n = Node::start_args("node0", &["--max-connections", "20"]);
    let a = n.client.as_str();
    let pid = n.pid();
    let fds0 = settled_fds(pid);
    let mut idle: Vec<TcpStream> = (0..20).map(|_| TcpStream::connect(a).unwrap()).collect();
    poll_until(Duration::from_secs(60), "20 connections accepted", || {
        (open_fds(pid) >= fds0 + 20).then_some(())
    });
    // The 21st: accepted by the kernel, closed by the server without an answer.
    let t = Instant::now();
    let r = raw(
        a,
        b"GET /v2/keys/ HTTP/1.1\r\nHost: x\r\n\r\n",
        false,
        Duration::from_secs(5),
    );
    assert!(r.closed && r.bytes.is_empty(), "{r:?}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    // Room again once some go.
    idle.truncate(15);
    poll_until(Duration::from_secs(10), "a place to free up", || {
        request_timeout(a, "GET", "/v2/keys/", &[], b"", Duration::from_secs(2))
            .ok()
            .filter(|r| r.status == 200)
    });
    assert_serving(a, 0);
    assert!(
        n.stderr().contains("connection limit reached"),
        "{}",
        n.stderr()
    );
}

/// Slowloris: 300 clients each sending one header byte per second, half of them from the
/// start and half only after 3.5 s of silence, plus 300 that send nothing. The header timeout
/// (4 s here) counts from the accept, so every one of them is closed about 4 s after it
/// connected, without an answer; writes and reads go on meanwhile, and memory stays low.
#[test]
fn slowloris_clients_are_cut_off_by_the_header_timeout() {
    const CLIENTS: usize = 300;
    const SILENT: usize = 300;
    const LATE_START: Duration = Duration::from_millis(3500);
    let n = Node::start_args("node0", &["--client-header-timeout", "4"]);
    let a = n.client.clone();
    let pid = n.pid();
    let rss0 = rss_mib(pid);
    let fds0 = settled_fds(pid);
    // Clients that connect and send nothing at all.
    let silent: Vec<TcpStream> = (0..SILENT)
        .map(|_| TcpStream::connect(&a).unwrap())
        .collect();
    let silent_since = Instant::now();
    let head = b"GET /v2/keys/slow HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n\r\n";
    let loris = std::thread::spawn(move || {
        // (index, socket, connected at, bytes sent, next byte due)
        let mut open: Vec<(usize, TcpStream, Instant, usize, Instant)> = (0..CLIENTS)
            .map(|i| {
                let s = TcpStream::connect(&a).unwrap();
                s.set_nonblocking(true).unwrap();
                let now = Instant::now();
                let first = if i % 2 == 0 { now } else { now + LATE_START };
                (i, s, now, 0, first)
            })
            .collect();
        let start = Instant::now();
        let mut closed = Vec::new();
        let mut answers = 0;
        while !open.is_empty() && start.elapsed() < Duration::from_secs(30) {
            open.retain_mut(|(i, s, since, sent, due)| {
                let mut buf = [0u8; 256];
                let gone = match s.read(&mut buf) {
                    Ok(0) => true,
                    Ok(_) => {
                        answers += 1;
                        true
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        if Instant::now() >= *due && *sent < head.len() {
                            *due += Duration::from_secs(1);
                            *sent += 1;
                            s.write_all(&head[*sent - 1..*sent]).is_err()
                        } else {
                            false
                        }
                    }
                    Err(_) => true,
                };
                if gone {
                    closed.push((*i, since.elapsed(), *sent));
                }
                !gone
            });
            std::thread::sleep(Duration::from_millis(100));
        }
        (closed, answers, open.len())
    });
    // Meanwhile the node serves others.
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut round = 0;
    let mut peak = rss0;
    while Instant::now() < deadline {
        round += 1;
        assert_serving(&n.client, round);
        peak = peak.max(rss_mib(pid));
    }
    let (closed, answers, still_open) = loris.join().unwrap();
    assert_eq!(still_open, 0, "slow clients still open after 30 s");
    assert_eq!(closed.len(), CLIENTS);
    assert_eq!(answers, 0, "a slow client got an answer");
    for (i, after, bytes) in &closed {
        // Closed 4 s after connecting (+ this loop's 100 ms step and scheduling on a busy
        // machine); a late starter would last 3.5 + 4 s if the clock started at its first
        // byte.
        assert!(
            *after >= Duration::from_millis(3900) && *after < Duration::from_millis(6500),
            "client {i} closed after {after:?}"
        );
        assert!(
            *bytes <= 6,
            "client {i} sent {bytes} bytes before the close"
        );
    }
    eprintln!("{CLIENTS} slowloris + {SILENT} silent clients: RSS {rss0:.1} -> peak {peak:.1} MiB");
    assert!(peak - rss0 < 32.0, "RSS grew by {:.1} MiB", peak - rss0);
    // The silent ones are gone too: the server holds no connection of theirs, and each of
    // them reads the end of its connection.
    poll_until(
        Duration::from_secs(20),
        "silent connections to be closed",
        || (open_fds(pid) < fds0 + 5).then_some(()),
    );
    for (i, mut s) in silent.into_iter().enumerate() {
        s.set_read_timeout(Some(Duration::from_secs(5))).ok();
        let mut b = [0u8; 16];
        assert!(
            matches!(s.read(&mut b), Ok(0) | Err(_)),
            "silent connection {i} still open"
        );
    }
    assert!(silent_since.elapsed() >= Duration::from_millis(3900));
    assert_serving(&n.client, round + 1);
}

/// Watchers that never read their responses: stream watchers stay subscribed until their
/// queue fills, long-poll watchers get one event each. Large writes go on, at full speed; the
/// server's memory stays bounded; once the write timeout (2 s) passes for a connection whose
/// answer is stuck, or the header timeout (3 s) for one whose answer went out, the connection
/// is closed.
#[test]
fn watchers_that_never_read_are_cut_off() {
    const STREAMS: usize = 20;
    const POLLS: usize = 20;
    let n = Node::start_args(
        "node0",
        &[
            "--client-write-timeout",
            "2",
            "--client-header-timeout",
            "3",
        ],
    );
    let a = n.client.as_str();
    let pid = n.pid();
    assert_serving(a, 0);
    let rss0 = rss_mib(pid);
    let fds0 = settled_fds(pid);
    let mut watchers = Vec::new();
    for i in 0..STREAMS + POLLS {
        let mut s = TcpStream::connect(a).unwrap();
        let stream = if i < STREAMS { "&stream=true" } else { "" };
        let req = format!(
            "GET /v2/keys/big?wait=true&recursive=true{stream} HTTP/1.1\r\nHost: x\r\n\r\n"
        );
        s.write_all(req.as_bytes()).unwrap();
        // The head arrives once the watcher is registered; read that much and no more.
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        s.set_read_timeout(Some(Duration::from_secs(10))).ok();
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(s.read(&mut b).unwrap(), 1, "watcher {i}");
            head.push(b[0]);
        }
        assert!(head.starts_with(b"HTTP/1.1 200"), "watcher {i}");
        watchers.push(s);
    }
    // 40 writes of 256 KiB values: 10 MiB per stream watcher, more than its socket holds.
    // (Each watcher encodes each event itself, so on a busy machine the first writes share
    // the CPU with that work; none waits for a watcher.)
    let value = format!("value={}", "w".repeat(256 << 10));
    let mut slowest = Duration::ZERO;
    let mut peak = rss0;
    for i in 0..40 {
        let t = Instant::now();
        let r = request_timeout(
            a,
            "PUT",
            &format!("/v2/keys/big/{}", i % 4),
            &[("Content-Type", "application/x-www-form-urlencoded")],
            value.as_bytes(),
            Duration::from_secs(30),
        )
        .unwrap_or_else(|e| panic!("write {i}: {e}"));
        assert!(r.status == 200 || r.status == 201, "{r:?}");
        slowest = slowest.max(t.elapsed());
        peak = peak.max(rss_mib(pid));
    }
    assert!(
        slowest < Duration::from_secs(15),
        "a write took {slowest:?}"
    );
    assert_serving(a, 1);
    poll_until(
        Duration::from_secs(20),
        "the stuck connections to close",
        || {
            peak = peak.max(rss_mib(pid));
            (open_fds(pid) < fds0 + 5).then_some(())
        },
    );
    eprintln!(
        "{STREAMS} stream + {POLLS} long-poll watchers not reading, 40 x 256 KiB writes: RSS {rss0:.1} -> peak {peak:.1} MiB"
    );
    assert!(
        peak - rss0 < 192.0,
        "RSS grew by {:.1} MiB with stuck watchers",
        peak - rss0
    );
    assert_serving(a, 2);
    drop(watchers);
}

// ---------------------------------------------------------------------------------------
// a disk that fills up

/// A tmpfs of `size` mounted on a fresh temp dir, unmounted when dropped. Needs root (or
/// CAP_SYS_ADMIN), which CI has: without it the test fails and says so, it never passes
/// silently.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::Builder::new()
            .prefix("etcd-hostile-tmpfs-")
            .tempdir()
            .expect("tempdir");
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "cannot mount a {size} tmpfs for the full-disk test (it needs root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { dir }
    }

    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

/// Fill the file system holding `path` with a file there: 1 MiB pieces, then 4 KiB ones,
/// until it reports ENOSPC. Returns the bytes written.
fn fill(path: &std::path::Path) -> u64 {
    let mut f = std::fs::File::create(path).expect("create ballast");
    let mut total = 0;
    for piece in [1 << 20, 4096] {
        let buf = vec![0xa5u8; piece];
        loop {
            match f.write(&buf) {
                Ok(0) => break,
                Ok(k) => total += k as u64,
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling {}: {e}", path.display()),
            }
        }
    }
    let _ = f.sync_all();
    total
}

/// A node whose data dir is on `mnt`; its stderr log stays on the ordinary temp dir.
fn node_on(mnt: &std::path::Path, extra: &[&str]) -> Node {
    Node::build("node0")
        .args(extra)
        .data_dir(&mnt.join("data"))
        .ready_within(Duration::from_secs(30))
        .start()
}

fn put_value(addr: &str, key: &str, value: &str) -> Result<Resp, String> {
    request_timeout(
        addr,
        "PUT",
        &format!("/v2/keys/{key}"),
        &[("Content-Type", "application/x-www-form-urlencoded")],
        format!("value={value}").as_bytes(),
        Duration::from_secs(30),
    )
}

fn assert_value(addr: &str, key: &str, value: &str) {
    let r = request_timeout(
        addr,
        "GET",
        &format!("/v2/keys/{key}"),
        &[],
        b"",
        Duration::from_secs(30),
    )
    .unwrap_or_else(|e| panic!("GET {key}: {e}"));
    assert_eq!(r.status, 200, "{key}: {}", &r.body[..r.body.len().min(300)]);
    let j = r.json();
    assert!(j["node"]["value"] == value, "{key}: another value");
}

/// The data dir on a 160 MiB tmpfs that another file then fills. The log's current segment
/// is allocated ahead (64 MiB), so writes go on until it is full; the write that needs a new
/// segment fails with error 300 naming ENOSPC, and the node exits (code 1, one line saying
/// why) instead of acknowledging anything more. Restarted on the still full disk it serves
/// every acknowledged write; restarted once space returns it takes writes again, with every
/// acknowledged write present.
#[test]
fn a_full_disk_fails_writes_clearly_and_loses_nothing_acknowledged() {
    let mnt = Tmpfs::mount("160m");
    let mut n = node_on(mnt.path(), &[]);
    let a = n.client.clone();
    let ballast = mnt.path().join("ballast");
    let filled = fill(&ballast);
    eprintln!("ballast: {} MiB", filled >> 20);

    let value = |i: usize| format!("{i:04}-{}", "v".repeat(1 << 20));
    let mut acked = Vec::new();
    let failure = loop {
        let i = acked.len();
        assert!(i < 100, "100 writes of 1 MiB on a full disk all succeeded");
        match put_value(&a, &format!("full/{i}"), &value(i)) {
            Ok(r) if r.status == 201 => acked.push(i),
            Ok(r) => break r,
            Err(e) => panic!("write {i}: no answer: {e}"),
        }
    };
    eprintln!("{} writes acknowledged on the full disk", acked.len());
    assert!(!acked.is_empty());
    assert_eq!(failure.status, 500, "{failure:?}");
    let j = failure.json();
    assert_eq!(j["errorCode"], 300);
    assert_eq!(j["message"], "Raft Internal Error");
    let cause = j["cause"].as_str().unwrap();
    assert!(
        cause.contains("No space left on device")
            && cause.ends_with("the write may or may not have been applied"),
        "{cause}"
    );

    // The node stops by itself, with code 1 and one line naming the cause.
    let status = n.expect_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(1), "{}", n.stderr());
    // The one line the process ends with (log lines of stopping tasks may follow it).
    let log = strip_ansi(&n.stderr());
    let ends: Vec<&str> = log.lines().filter(|l| l.starts_with("etcd: ")).collect();
    assert_eq!(ends.len(), 1, "{log}");
    let last = ends[0];
    assert!(
        last.starts_with("etcd: log ")
            && last.contains("No space left on device")
            && last.ends_with("; stopping"),
        "{last}"
    );

    // Restarted while the disk is still full: every acknowledged write is there.
    n.restart();
    for &i in &acked {
        assert_value(&a, &format!("full/{i}"), &value(i));
    }
    let status = n.stop();
    assert!(status.success(), "{status:?}: {}", n.stderr());

    // Space returns: restarted, it has every acknowledged write and takes new ones (which
    // need a new log segment) again.
    std::fs::remove_file(&ballast).unwrap();
    n.restart();
    for &i in &acked {
        assert_value(&a, &format!("full/{i}"), &value(i));
    }
    let failed = acked.len();
    let r = get(&a, &format!("/v2/keys/full/{failed}"));
    // The write that failed may or may not have been applied; nothing else is possible.
    assert!(
        r.status == 404 || r.json()["node"]["value"] == value(failed),
        "{}",
        &r.body[..r.body.len().min(300)]
    );
    for i in 0..3 {
        let key = format!("after/{i}");
        let r = put_value(&a, &key, &value(i)).unwrap();
        assert_eq!(r.status, 201, "{r:?}");
        assert_value(&a, &key, &value(i));
    }
    let status = n.stop();
    assert!(status.success(), "{status:?}");
}

/// `--max-request-bytes` (etcd 3.x's flag) sets the body limit: a body at the limit is
/// taken, one byte more is 413 in etcd's JSON shape, whether its length is declared or it
/// comes chunked.
#[test]
fn the_body_limit_is_a_flag() {
    let n = Node::start_args("node0", &["--max-request-bytes", "4096"]);
    let a = n.client.as_str();
    let form = "Content-Type: application/x-www-form-urlencoded";
    let at_limit = format!("value={}", "x".repeat(4096 - 6));
    let r = answered(
        &req(
            a,
            &format!(
                "PUT /v2/keys/lim HTTP/1.1\nHost: x\nConnection: close\n{form}\nContent-Length: 4096\n\n"
            ),
            at_limit.as_bytes(),
        ),
        "at the limit",
    );
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.json()["node"]["value"], &at_limit[6..]);
    let over = format!("{at_limit}x");
    let r = answered(
        &req(
            a,
            &format!(
                "PUT /v2/keys/lim HTTP/1.1\nHost: x\nConnection: close\n{form}\nContent-Length: 4097\n\n"
            ),
            over.as_bytes(),
        ),
        "declared over",
    );
    assert_etcd_error(
        &r,
        413,
        210,
        "Invalid POST form",
        "request body too large (limit 4096 bytes)",
    );
    let mut chunked = format!("{:x}\r\n", over.len()).into_bytes();
    chunked.extend_from_slice(over.as_bytes());
    chunked.extend_from_slice(b"\r\n0\r\n\r\n");
    let r = answered(
        &req(
            a,
            &format!(
                "PUT /v2/keys/lim HTTP/1.1\nHost: x\nConnection: close\n{form}\nTransfer-Encoding: chunked\n\n"
            ),
            &chunked,
        ),
        "chunked over",
    );
    assert_etcd_error(
        &r,
        413,
        210,
        "Invalid POST form",
        "request body too large (limit 4096 bytes)",
    );
    // v1 too.
    let r = answered(
        &req(
            a,
            &format!(
                "POST /v1/keys/lim HTTP/1.1\nHost: x\nConnection: close\n{form}\nContent-Length: 4097\n\n"
            ),
            over.as_bytes(),
        ),
        "v1 over",
    );
    assert_eq!(r.status, 413, "{r:?}");
    let r = get(a, "/v2/keys/lim");
    assert_eq!(r.json()["node"]["value"], &at_limit[6..]);
    assert_serving(a, 0);
}

/// The disk fills up when a snapshot is due (`--snapshot-count 20`): saving it fails, Raft's
/// core stops, and the node exits with code 1 naming ENOSPC instead of answering every later
/// write with "no leader". The write in flight at that moment may get no answer (its outcome
/// is unknown); every acknowledged one is there after a restart once space has returned.
#[test]
fn a_full_disk_at_a_snapshot_stops_the_node_and_loses_nothing_acknowledged() {
    let mnt = Tmpfs::mount("100m");
    let mut n = node_on(mnt.path(), &["--snapshot-count", "20"]);
    let a = n.client.clone();
    let ballast = mnt.path().join("ballast");
    fill(&ballast);

    // 20 values of 100 KB make a snapshot of 2 MB: more than the free pages the data file
    // has to spare, so saving it needs new space. The snapshot is built at low priority, so
    // on a busy machine it may come well after the 20th write: keep writing, slowly once
    // past it (the log's segment has room for all of them), for up to 60 s.
    let value = |i: usize| format!("{i}-{}", "s".repeat(100_000));
    let mut acked = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut i = 0;
    let stopped = loop {
        if Instant::now() >= deadline {
            break false;
        }
        match put_value(&a, &format!("snap/{i}"), &value(i)) {
            Ok(r) if r.status == 201 => acked.push(i),
            // Once Raft has stopped, a write is answered with an error or not at all.
            Ok(r) => {
                assert!(r.status >= 500, "{r:?}");
                break true;
            }
            Err(_) => break true,
        }
        i += 1;
        if i > 25 {
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    assert!(
        stopped,
        "{} writes went through with a full disk; stderr:\n{}",
        acked.len(),
        n.stderr()
    );
    assert!(!acked.is_empty());
    let status = n.expect_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(1), "{}", n.stderr());
    // The one line the process ends with (log lines of stopping tasks may follow it).
    let log = strip_ansi(&n.stderr());
    let ends: Vec<&str> = log.lines().filter(|l| l.starts_with("etcd: ")).collect();
    assert_eq!(ends.len(), 1, "{log}");
    let last = ends[0];
    assert!(
        last.starts_with("etcd: raft stopped: when Write Snapshot")
            && last.contains("No space left on device")
            && last.ends_with("; stopping"),
        "{last}"
    );

    std::fs::remove_file(&ballast).unwrap();
    n.restart();
    for &i in &acked {
        assert_value(&a, &format!("snap/{i}"), &value(i));
    }
    let r = put_value(&a, "snap/after", "1").unwrap();
    assert_eq!(r.status, 201, "{r:?}");
    let status = n.stop();
    assert!(status.success(), "{status:?}");
}

/// The limit flags are checked like every other flag (a bad value: one line, the usage,
/// exit 2) and read from their `ETCD_*` variables.
#[test]
fn the_limit_flags_are_checked_and_read_from_the_environment() {
    for (flag, value, why) in [
        ("--max-request-bytes", "10", "must be at least 1024"),
        ("--client-header-timeout", "abc", "parse error"),
        ("--client-body-timeout", "-1", "parse error"),
        ("--client-write-timeout", "1.5", "parse error"),
        ("--max-connections", "many", "parse error"),
    ] {
        let out = Node::command(&[flag.to_string(), value.to_string()])
            .capture_output()
            .spawn()
            .finish(Duration::from_secs(10));
        assert_eq!(out.code, Some(2), "{flag} {value}: {}", out.stderr);
        let err = out.stderr;
        assert_eq!(
            err.lines().next(),
            Some(format!("etcd: invalid value {value:?} for flag {flag}: {why}").as_str()),
            "{err}"
        );
    }

    // ETCD_MAX_REQUEST_BYTES=2048 in place of the flag.
    let n = Node::build("node0")
        .env("ETCD_MAX_REQUEST_BYTES", "2048")
        .start();
    let body = format!("value={}", "e".repeat(2048));
    let r = request(
        &n.client,
        "PUT",
        "/v2/keys/env",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        body.as_bytes(),
    );
    assert_etcd_error(
        &r,
        413,
        210,
        "Invalid POST form",
        "request body too large (limit 2048 bytes)",
    );
}
