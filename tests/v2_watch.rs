//! Black-box tests of v2 watches (`/v2/keys/<key>?wait=true`): long polls, `waitIndex` from the
//! history or the future, recursive watches on segment boundaries, hidden keys, directory
//! delete/expire, the 1000-event history window (401), `stream=true`, and resource hygiene
//! (docs/api.md).
//!
//! A watch flushes its headers when it is registered, so a test that has read the status line
//! and headers knows the watcher is in place before it triggers a write: no races, no sleeps.

mod common;

use common::*;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------
// a streaming HTTP client

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// An open GET whose head has been read and whose body is read incrementally.
struct Watch {
    sock: TcpStream,
    status: u16,
    headers: Vec<(String, String)>,
    chunked: bool,
    /// Raw bytes received after the head, not decoded yet.
    raw: Vec<u8>,
    /// Decoded body bytes not consumed yet.
    data: Vec<u8>,
    /// The body is complete (terminal chunk, or EOF for a close-delimited body).
    ended: bool,
    /// The peer closed the connection.
    eof: bool,
    what: String,
}

impl Watch {
    /// Connect, send `GET path` (Connection: close) and read the status line and headers
    /// (10 s cap).
    fn open(addr: &str, path: &str) -> Watch {
        let mut sock = TcpStream::connect(addr).expect("connect");
        sock.set_nodelay(true).ok();
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        sock.write_all(req.as_bytes()).expect("send request");
        let mut w = Watch {
            sock,
            status: 0,
            headers: Vec::new(),
            chunked: false,
            raw: Vec::new(),
            data: Vec::new(),
            ended: false,
            eof: false,
            what: format!("GET {path}"),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let head_end = loop {
            if let Some(p) = find(&w.raw, b"\r\n\r\n") {
                break p;
            }
            assert!(
                !w.eof,
                "{}: closed before the head: {:?}",
                w.what,
                String::from_utf8_lossy(&w.raw)
            );
            assert!(
                w.fill(deadline),
                "{}: no head within 10 s (got {:?})",
                w.what,
                String::from_utf8_lossy(&w.raw)
            );
        };
        let head = String::from_utf8_lossy(&w.raw[..head_end]).into_owned();
        w.raw.drain(..head_end + 4);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        w.status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        w.headers = lines
            .filter_map(|l| {
                let (k, v) = l.split_once(':')?;
                Some((k.trim().to_string(), v.trim().to_string()))
            })
            .collect();
        w.chunked = w
            .header("transfer-encoding")
            .map(|v| v.eq_ignore_ascii_case("chunked"))
            .unwrap_or(false);
        if let Some(cl) = w.header("content-length") {
            // A complete, non-chunked answer (e.g. an error): read it now.
            let n: usize = cl.parse().expect("content-length");
            while w.raw.len() < n && !w.eof {
                assert!(w.fill(deadline), "{}: body not complete", w.what);
            }
            w.data = w.raw.drain(..n.min(w.raw.len())).collect();
            w.ended = true;
        }
        w.decode();
        w
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn hnum(&self, name: &str) -> u64 {
        self.header(name)
            .unwrap_or_else(|| panic!("{}: no {name} header: {:?}", self.what, self.headers))
            .parse()
            .unwrap_or_else(|_| panic!("{}: {name} not a number", self.what))
    }

    /// Read once from the socket (until `deadline`); false on timeout.
    fn fill(&mut self, deadline: Instant) -> bool {
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        self.sock
            .set_read_timeout(Some((deadline - now).max(Duration::from_millis(1))))
            .ok();
        let mut buf = [0u8; 16384];
        match self.sock.read(&mut buf) {
            Ok(0) => {
                self.eof = true;
                true
            }
            Ok(n) => {
                self.raw.extend_from_slice(&buf[..n]);
                true
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => false,
            Err(e) if e.kind() == ErrorKind::Interrupted => true,
            Err(_) => {
                self.eof = true;
                true
            }
        }
    }

    /// Move complete chunks from `raw` to `data`.
    fn decode(&mut self) {
        if self.ended {
            return;
        }
        if !self.chunked {
            self.data.append(&mut self.raw);
            if self.eof {
                self.ended = true;
            }
            return;
        }
        while let Some(le) = find(&self.raw, b"\r\n") {
            let size_txt = String::from_utf8_lossy(&self.raw[..le]).into_owned();
            let size = usize::from_str_radix(size_txt.split(';').next().unwrap().trim(), 16)
                .unwrap_or_else(|_| panic!("{}: bad chunk size {size_txt:?}", self.what));
            if size == 0 {
                self.ended = true;
                self.raw.clear();
                break;
            }
            if self.raw.len() < le + 2 + size + 2 {
                break;
            }
            let chunk: Vec<u8> = self.raw[le + 2..le + 2 + size].to_vec();
            self.data.extend_from_slice(&chunk);
            self.raw.drain(..le + 2 + size + 2);
        }
    }

    /// The next complete body line (with its `\n`), waiting at most `d`; None on timeout or
    /// when the body ends first.
    fn line(&mut self, d: Duration) -> Option<String> {
        let deadline = Instant::now() + d;
        loop {
            if let Some(p) = self.data.iter().position(|&b| b == b'\n') {
                let l: Vec<u8> = self.data.drain(..=p).collect();
                return Some(String::from_utf8(l).expect("utf-8 body"));
            }
            if self.ended || self.eof {
                return None;
            }
            if !self.fill(deadline) {
                return None;
            }
            self.decode();
        }
    }

    /// The next line, which must come within 10 s.
    fn event(&mut self) -> String {
        let what = self.what.clone();
        self.line(Duration::from_secs(10)).unwrap_or_else(|| {
            panic!(
                "{what}: no event within 10 s (ended {}, buffered {:?})",
                self.ended,
                String::from_utf8_lossy(&self.data)
            )
        })
    }

    /// Assert that nothing arrives within `d` and the response is still open.
    fn assert_quiet(&mut self, d: Duration) {
        if let Some(l) = self.line(d) {
            panic!("{}: unexpected event {l:?}", self.what);
        }
        assert!(!self.ended && !self.eof, "{}: response ended", self.what);
        assert!(
            self.data.is_empty(),
            "{}: partial data {:?}",
            self.what,
            self.data
        );
    }

    /// Wait (at most 10 s) for the end of the body; returns what was left unread.
    fn finish(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.ended {
            assert!(
                !(self.eof && self.chunked),
                "{}: connection closed inside the body",
                self.what
            );
            if !self.eof {
                assert!(
                    self.fill(deadline),
                    "{}: body did not end within 10 s",
                    self.what
                );
            }
            self.decode();
        }
        String::from_utf8(std::mem::take(&mut self.data)).expect("utf-8")
    }
}

// ---------------------------------------------------------------------------------------
// helpers

fn hnum(r: &Resp, name: &str) -> u64 {
    r.header(name)
        .unwrap_or_else(|| panic!("no {name} header: {} {:?}", r.status, r.body))
        .parse()
        .unwrap_or_else(|_| panic!("{name} not a number"))
}

fn cur(a: &str) -> u64 {
    let r = get(a, "/v2/keys/");
    assert_eq!(r.status, 200);
    hnum(&r, "x-etcd-index")
}

fn put(a: &str, key: &str, form: &[(&str, &str)]) -> Resp {
    let r = put_form(a, &format!("/v2/keys{key}"), form);
    assert!(
        r.status == 200 || r.status == 201,
        "PUT {key} {form:?}: {} {:?}",
        r.status,
        r.body
    );
    r
}

fn set(a: &str, key: &str, value: &str) -> Resp {
    put(a, key, &[("value", value)])
}

fn midx(r: &Resp) -> u64 {
    r.json()["node"]["modifiedIndex"]
        .as_u64()
        .unwrap_or_else(|| panic!("no modifiedIndex in {:?}", r.body))
}

/// Headers of a watch: 200, JSON, chunked, X-Etcd-Index = `index`, raft headers, cluster id.
fn assert_watch_head(w: &Watch, index: u64) {
    assert_eq!(w.status, 200, "{}: {:?}", w.what, w.headers);
    assert_eq!(
        w.header("content-type")
            .map(|v| v.split(';').next().unwrap().trim()),
        Some("application/json"),
        "{}",
        w.what
    );
    assert!(w.chunked, "{}: not chunked: {:?}", w.what, w.headers);
    assert_eq!(w.hnum("x-etcd-index"), index, "{}: X-Etcd-Index", w.what);
    w.hnum("x-raft-index");
    assert!(w.hnum("x-raft-term") >= 1);
    let id = w.header("x-etcd-cluster-id").expect("cluster id");
    assert!(
        !id.is_empty()
            && id.len() <= 16
            && id
                .bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)),
        "bad cluster id {id:?}"
    );
}

/// `/v2/stats/store` field `watchers`.
fn watchers(a: &str) -> u64 {
    let r = get(a, "/v2/stats/store");
    assert_eq!(r.status, 200);
    r.json()["watchers"].as_u64().expect("watchers")
}

const SHORT: Duration = Duration::from_millis(300);

// ---------------------------------------------------------------------------------------
// long polls

#[test]
fn long_poll_flushes_headers_then_delivers_one_event() {
    let n = Node::start("node0");
    let a = &n.client;
    let x = cur(a);
    let mut w = Watch::open(a, "/v2/keys/w?wait=true");
    assert_watch_head(&w, x);
    // Nothing yet; a write elsewhere does not wake it.
    w.assert_quiet(SHORT);
    set(a, "/other", "1");
    set(a, "/ww", "1");
    set(a, "/w2", "1");
    w.assert_quiet(SHORT);
    // The write of the key: its event is exactly the write's answer.
    let r = set(a, "/w", "1");
    assert_eq!(w.event(), r.body);
    assert_eq!(midx(&r), x + 4);
    // A plain watch ends after one event.
    assert_eq!(w.finish(), "");

    // A second watch sees the replace with prevNode.
    let mut w = Watch::open(a, "/v2/keys/w?wait=true");
    assert_watch_head(&w, x + 4);
    let r = set(a, "/w", "2");
    let e = w.event();
    assert_eq!(e, r.body);
    assert!(e.contains("\"prevNode\""), "{e}");
    assert_eq!(w.finish(), "");
}

/// method, key (with query), form.
type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>);

#[test]
fn every_kind_of_write_is_delivered_as_its_answer() {
    let n = Node::start("node0");
    let a = &n.client;
    let cases: Vec<Case> = vec![
        ("PUT", "/k", vec![("value", "1")]),
        ("PUT", "/k", vec![("value", "2"), ("prevExist", "true")]),
        ("PUT", "/k", vec![("value", "3"), ("prevValue", "2")]),
        ("DELETE", "/k?prevValue=3", vec![]),
        ("PUT", "/k", vec![("value", "4"), ("prevExist", "false")]),
        ("DELETE", "/k", vec![]),
        ("PUT", "/k", vec![("dir", "true")]),
        (
            "PUT",
            "/k",
            vec![("dir", "true"), ("prevExist", "true"), ("ttl", "100")],
        ),
        ("DELETE", "/k?dir=true", vec![]),
    ];
    for (method, key, form) in cases {
        let x = cur(a);
        let mut w = Watch::open(a, "/v2/keys/k?wait=true");
        assert_watch_head(&w, x);
        let r = send_form(a, method, &format!("/v2/keys{key}"), &form);
        assert!(r.status < 300, "{method} {key} {form:?}: {:?}", r.body);
        assert_eq!(w.event(), r.body, "{method} {key} {form:?}");
        assert_eq!(w.finish(), "");
        // The same event from the history.
        let h = get(a, &format!("/v2/keys/k?wait=true&waitIndex={}", x + 1));
        assert_eq!(h.status, 200);
        assert_eq!(h.body, r.body, "history of {method} {key} {form:?}");
    }
    // POST: a watch on the parent directory with recursive.
    let x = cur(a);
    let mut w = Watch::open(a, "/v2/keys/q?wait=true&recursive=true");
    let r = post_form(a, "/v2/keys/q", &[("value", "job")]);
    assert_eq!(r.status, 201);
    assert_eq!(w.event(), r.body);
    assert_eq!(hnum(&r, "x-etcd-index"), x + 1);
}

#[test]
fn wait_index_in_the_history_answers_at_once() {
    let n = Node::start("node0");
    let a = &n.client;
    let r1 = set(a, "/h", "v1");
    let i = midx(&r1);
    let r2 = set(a, "/h", "v2");
    set(a, "/other", "o");
    let now = cur(a);
    assert_eq!(now, i + 2);

    let r = get(a, &format!("/v2/keys/h?wait=true&waitIndex={i}"));
    assert_eq!(r.status, 200);
    assert_eq!(r.body, r1.body);
    // X-Etcd-Index is the index when the watch was registered, not the event's.
    assert_eq!(hnum(&r, "x-etcd-index"), now);
    assert!(r.header("x-raft-index").is_some() && r.header("x-raft-term").is_some());
    assert_eq!(r.content_type(), Some("application/json"));
    // The first matching event at or after waitIndex.
    let r = get(a, &format!("/v2/keys/h?wait=true&waitIndex={}", i + 1));
    assert_eq!(r.body, r2.body);
    let r = get(
        a,
        &format!("/v2/keys/?wait=true&recursive=true&waitIndex={i}"),
    );
    assert_eq!(r.body, r1.body);

    // No matching event after waitIndex in the history: the watch waits.
    let mut w = Watch::open(a, &format!("/v2/keys/h?wait=true&waitIndex={}", i + 2));
    assert_watch_head(&w, now);
    w.assert_quiet(SHORT);
    let r3 = set(a, "/h", "v3");
    assert_eq!(w.event(), r3.body);

    // A bad waitIndex.
    for bad in ["abc", "-1", "1.5"] {
        let r = get(a, &format!("/v2/keys/h?wait=true&waitIndex={bad}"));
        assert_eq!(r.status, 400);
        assert_eq!(hnum(&r, "x-etcd-index"), 0);
        assert_eq!(
            r.body,
            "{\"errorCode\":203,\"message\":\"The given index in POST form is not a number\",\
             \"cause\":\"invalid value for \\\"waitIndex\\\"\",\"index\":0}\n"
        );
    }
}

#[test]
fn wait_index_in_the_future_skips_earlier_events() {
    let n = Node::start("node0");
    let a = &n.client;
    let x = cur(a);
    let mut w = Watch::open(a, &format!("/v2/keys/f?wait=true&waitIndex={}", x + 3));
    assert_watch_head(&w, x);
    set(a, "/f", "1");
    set(a, "/f", "2");
    w.assert_quiet(SHORT);
    let r = set(a, "/f", "3");
    assert_eq!(midx(&r), x + 3);
    assert_eq!(w.event(), r.body);
    assert_eq!(w.finish(), "");
}

#[test]
fn recursive_watches_match_whole_segments() {
    let n = Node::start("node0");
    let a = &n.client;
    let x = cur(a);
    let mut rec = Watch::open(a, "/v2/keys/foo?wait=true&recursive=true");
    let mut plain = Watch::open(a, "/v2/keys/foo?wait=true");
    let mut root = Watch::open(a, "/v2/keys/?wait=true&recursive=true");
    assert_watch_head(&rec, x);
    assert_watch_head(&plain, x);
    assert_watch_head(&root, x);

    let r0 = set(a, "/foobar", "1");
    assert_eq!(root.event(), r0.body);
    set(a, "/fo", "1");
    set(a, "/foo2/x", "1");
    rec.assert_quiet(SHORT);
    let r = set(a, "/foo/bar/baz", "1");
    assert_eq!(rec.event(), r.body);
    // Not recursive: a change below is no event, the key itself is (here: /foo is a dir,
    // deleting it recursively fires).
    plain.assert_quiet(SHORT);
    let r = request(a, "DELETE", "/v2/keys/foo?recursive=true", &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(plain.event(), r.body);

    // History scans follow the same rule.
    let h = get(
        a,
        &format!("/v2/keys/foo?wait=true&recursive=true&waitIndex={}", x + 1),
    );
    assert_eq!(h.json()["node"]["key"], "/foo/bar/baz", "{}", h.body);
}

#[test]
fn hidden_keys_are_not_delivered_to_ancestor_watchers() {
    let n = Node::start("node0");
    let a = &n.client;
    let mut anc = Watch::open(a, "/v2/keys/wd?wait=true&recursive=true");
    let mut root = Watch::open(a, "/v2/keys/?wait=true&recursive=true");
    let mut own = Watch::open(a, "/v2/keys/wd/_h?wait=true");
    let mut hidden_dir = Watch::open(a, "/v2/keys/wd/_hd?wait=true&recursive=true");

    let rh = set(a, "/wd/_h", "1");
    let rhd = set(a, "/wd/_hd/x", "1");
    // Watching the hidden key itself, or from inside a hidden directory, works.
    assert_eq!(own.event(), rh.body);
    assert_eq!(hidden_dir.event(), rhd.body);
    anc.assert_quiet(SHORT);
    root.assert_quiet(SHORT);
    let rv = set(a, "/wd/v", "1");
    assert_eq!(anc.event(), rv.body);
    assert_eq!(root.event(), rv.body);
}

#[test]
fn directory_delete_and_expire_notify_watchers_below() {
    let n = Node::start("node0");
    let a = &n.client;
    set(a, "/d/sub/k", "1");
    set(a, "/d/other", "1");
    let mut w = Watch::open(a, "/v2/keys/d/sub/k?wait=true");
    let mut wrec = Watch::open(a, "/v2/keys/d/sub?wait=true&recursive=true");
    let r = request(a, "DELETE", "/v2/keys/d/other", &[], b"");
    assert_eq!(r.status, 200);
    w.assert_quiet(SHORT);
    let r = request(a, "DELETE", "/v2/keys/d?recursive=true", &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(w.event(), r.body);
    assert_eq!(wrec.event(), r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["node"]["key"], "/d");
    assert_eq!(v["node"]["dir"], true);

    // Expiry of a directory with a TTL. The watch asks for the index after the `set` below
    // and is open (head read, so registered) before the `set`: the expiry is delivered live.
    // The TTL leaves the `set` ample time to land before the directory expires.
    let rd = put(a, "/e", &[("dir", "true"), ("ttl", "3")]);
    let ie = midx(&rd);
    let mut w = Watch::open(a, &format!("/v2/keys/e/k?wait=true&waitIndex={}", ie + 2));
    assert_eq!(w.status, 200);
    let rk = set(a, "/e/k", "1");
    assert_eq!(midx(&rk), ie + 1, "{}", rk.body);
    let e = w.event();
    let v: serde_json::Value = serde_json::from_str(&e).unwrap();
    assert_eq!(v["action"], "expire", "{e}");
    assert_eq!(v["node"]["key"], "/e");
    assert_eq!(v["node"]["dir"], true);
    assert_eq!(v["node"]["createdIndex"], ie);
    assert_eq!(v["node"]["modifiedIndex"], ie + 2);
    assert_eq!(v["prevNode"]["key"], "/e");
    assert_eq!(v["prevNode"]["dir"], true);
    assert_eq!(v["prevNode"]["expiration"], rd.json()["node"]["expiration"]);
    assert_eq!(w.finish(), "");
}

#[test]
fn history_is_the_last_1000_events() {
    let n = Node::start("node0");
    let a = n.client.clone();
    // More than 1000 writes, from a few threads.
    let mut hs = Vec::new();
    for t in 0..4 {
        let a = a.clone();
        hs.push(thread::spawn(move || {
            for j in 0..260 {
                set(&a, &format!("/h/{t}"), &j.to_string());
            }
        }));
    }
    for h in hs {
        h.join().expect("writer");
    }
    let now = cur(&a);
    assert!(now > 1040);
    let oldest = now - 999;
    let cleared = |asked: u64| {
        let r = get(
            &a,
            &format!("/v2/keys/h?wait=true&recursive=true&waitIndex={asked}"),
        );
        assert_eq!(r.status, 400, "waitIndex {asked}: {:?}", r.body);
        assert_eq!(r.content_type(), Some("application/json"));
        assert_eq!(hnum(&r, "x-etcd-index"), now);
        assert_eq!(
            r.body,
            format!(
                "{{\"errorCode\":401,\"message\":\"The event in requested index is outdated and cleared\",\"cause\":\"the requested history has been cleared [{oldest}/{asked}]\",\"index\":{now}}}\n"
            )
        );
    };
    cleared(1);
    cleared(oldest - 1);
    // The oldest held event is still there.
    let r = get(
        &a,
        &format!("/v2/keys/h?wait=true&recursive=true&waitIndex={oldest}"),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.json()["node"]["modifiedIndex"], oldest);
    assert_eq!(hnum(&r, "x-etcd-index"), now);
}

#[test]
fn stream_delivers_every_event_on_one_response() {
    let n = Node::start("node0");
    let a = &n.client;
    let x = cur(a);
    let mut w = Watch::open(a, "/v2/keys/s?wait=true&stream=true&recursive=true");
    assert_watch_head(&w, x);
    w.assert_quiet(SHORT);
    let mut writes = Vec::new();
    for j in 0..5 {
        writes.push(set(a, &format!("/s/{}", j % 2), &j.to_string()));
    }
    writes.push(request(a, "DELETE", "/v2/keys/s?recursive=true", &[], b""));
    for r in &writes {
        let e = w.event();
        assert_eq!(e, r.body);
        assert_eq!(e.matches('\n').count(), 1, "one event per line: {e:?}");
    }
    // Still open.
    w.assert_quiet(SHORT);
    let r = set(a, "/s/again", "1");
    assert_eq!(w.event(), r.body);
}

#[test]
fn stream_from_a_past_index_delivers_history_then_live_events() {
    // A deliberate difference from etcd 3.4, which answers only the first matching event from
    // the history and then keeps the response open without ever delivering another event (a
    // stream that silently drops writes). Here a stream from a past index delivers every
    // matching event still held, in order, and then keeps streaming live events.
    let n = Node::start("node0");
    let a = &n.client;
    let first = set(a, "/s/a", "1");
    set(a, "/other", "1");
    let second = set(a, "/s/b", "1");
    let mut w = Watch::open(
        a,
        &format!(
            "/v2/keys/s?wait=true&stream=true&recursive=true&waitIndex={}",
            midx(&first)
        ),
    );
    assert_eq!(w.event(), first.body);
    assert_eq!(w.event(), second.body);
    w.assert_quiet(SHORT);
    let live = set(a, "/s/live", "1");
    assert_eq!(w.event(), live.body);
}

#[test]
fn refresh_is_not_delivered() {
    let n = Node::start("node0");
    let a = &n.client;
    set(a, "/t", "v");
    put(a, "/t", &[("value", "v"), ("ttl", "100")]);
    let mut w = Watch::open(a, "/v2/keys/t?wait=true");
    let mut ws = Watch::open(a, "/v2/keys/?wait=true&stream=true&recursive=true");
    let r = put(a, "/t", &[("refresh", "true"), ("ttl", "200")]);
    assert_eq!(r.status, 200);
    let r = put(
        a,
        "/t",
        &[("refresh", "true"), ("ttl", "300"), ("prevExist", "true")],
    );
    assert_eq!(r.status, 200);
    w.assert_quiet(SHORT);
    ws.assert_quiet(SHORT);
    let r = set(a, "/t", "after");
    assert_eq!(w.event(), r.body);
    assert_eq!(ws.event(), r.body);
}

#[test]
fn watchers_are_freed_when_clients_disconnect() {
    let n = Node::start("node0");
    let a = &n.client;
    assert_eq!(watchers(a), 0);
    let mut ws = Vec::new();
    for j in 0..200 {
        let path = match j % 4 {
            0 => format!("/v2/keys/x{j}?wait=true"),
            1 => format!("/v2/keys/d{j}?wait=true&recursive=true"),
            2 => format!("/v2/keys/s{j}?wait=true&stream=true"),
            _ => "/v2/keys/?wait=true&recursive=true&stream=true".to_string(),
        };
        let w = Watch::open(a, &path);
        assert_eq!(w.status, 200);
        ws.push(w);
    }
    assert_eq!(watchers(a), 200);
    drop(ws);
    poll_until(Duration::from_secs(10), "watchers to drop to 0", || {
        (watchers(a) == 0).then_some(())
    });
    // A delivered (finished) watch is freed too.
    let mut w = Watch::open(a, "/v2/keys/one?wait=true");
    assert_eq!(watchers(a), 1);
    let r = set(a, "/one", "1");
    assert_eq!(w.event(), r.body);
    poll_until(Duration::from_secs(10), "the fired watcher to go", || {
        (watchers(a) == 0).then_some(())
    });
}

#[test]
fn a_stuck_stream_watcher_does_not_block_writes() {
    let n = Node::start("node0");
    let a = n.client.clone();
    // A stream watcher that never reads.
    let stuck = Watch::open(&a, "/v2/keys/?wait=true&stream=true&recursive=true");
    assert_eq!(stuck.status, 200);
    // A healthy watcher that keeps reading, in its own thread.
    let (tx, rx) = mpsc::channel::<String>();
    let mut healthy = Watch::open(&a, "/v2/keys/big?wait=true&stream=true&recursive=true");
    thread::spawn(move || {
        while let Some(l) = healthy.line(Duration::from_secs(30)) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });

    let value = "x".repeat(2048);
    let start = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut last = None;
    for j in 0..500 {
        let t = Instant::now();
        let r = set(&a, &format!("/big/{}", j % 10), &value);
        slowest = slowest.max(t.elapsed());
        last = Some(r);
    }
    let total = start.elapsed();
    assert!(
        total < Duration::from_secs(60),
        "500 writes took {total:?} with a stuck watcher"
    );
    assert!(
        slowest < Duration::from_secs(5),
        "a write took {slowest:?} with a stuck watcher"
    );
    // Still fast afterwards.
    let t = Instant::now();
    set(&a, "/after", "1");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    // The healthy watcher got every event, in order.
    let last = last.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut count = 0;
    loop {
        let l = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("healthy watcher stalled");
        count += 1;
        if l == last.body {
            break;
        }
    }
    assert_eq!(count, 500);
    drop(stuck);
}
