//! Black-box tests of the v1 watch (`/v1/watch/<prefix>`): long-poll GET, POST `index=N`
//! from history, prefix matching on segment boundaries, expiry events.
//!
//! A GET watch cannot tell when it is registered, so the GET tests keep writing "trigger"
//! events until the watch answers and then check that the answer is one of the triggers (and
//! never one of the events that must not match). POST `index=N` watches are race-free.

mod common;

use common::*;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------
// helpers

/// A request running in its own thread.
struct Pending {
    rx: mpsc::Receiver<Result<Resp, String>>,
    what: String,
}

impl Pending {
    /// Start `method path` with an optional form body; the read timeout is 30 s.
    fn start(addr: &str, method: &str, path: &str, form: &[(&str, &str)]) -> Pending {
        let (tx, rx) = mpsc::channel();
        let addr = addr.to_string();
        let method_s = method.to_string();
        let path_s = path.to_string();
        let body = form_encode(form);
        let has_form = !form.is_empty();
        thread::spawn(move || {
            let headers: &[(&str, &str)] = if has_form {
                &[("Content-Type", "application/x-www-form-urlencoded")]
            } else {
                &[]
            };
            let r = request_timeout(
                &addr,
                &method_s,
                &path_s,
                headers,
                body.as_bytes(),
                Duration::from_secs(30),
            );
            let _ = tx.send(r);
        });
        Pending {
            rx,
            what: format!("{method} {path} {form:?}"),
        }
    }

    fn get(addr: &str, path: &str) -> Pending {
        Pending::start(addr, "GET", path, &[])
    }

    fn post_index(addr: &str, path: &str, index: u64) -> Pending {
        let i = index.to_string();
        Pending::start(addr, "POST", path, &[("index", &i)])
    }

    /// The answer if it arrived within `d`.
    fn wait_for(&self, d: Duration) -> Option<Resp> {
        match self.rx.recv_timeout(d) {
            Ok(Ok(r)) => Some(r),
            Ok(Err(e)) => panic!("{}: {e}", self.what),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{}: thread died", self.what),
        }
    }

    /// The answer, waiting at most 10 s.
    fn wait(&self) -> Resp {
        self.wait_for(Duration::from_secs(10))
            .unwrap_or_else(|| panic!("{}: no answer within 10 s", self.what))
    }

    /// Assert that no answer arrives within `d` (the watch is blocking).
    fn assert_pending(&self, d: Duration) {
        if let Some(r) = self.wait_for(d) {
            panic!(
                "{}: expected to block, answered {} {:?}",
                self.what, r.status, r.body
            );
        }
    }
}

/// Call `trigger(i)` (i = 0, 1, ...) every 100 ms until the watch answers (at most 10 s); every
/// trigger returns the responses of the writes it made. Returns the watch answer and all
/// trigger responses.
fn answer_with_triggers(
    p: &Pending,
    mut trigger: impl FnMut(usize) -> Vec<Resp>,
) -> (Resp, Vec<Resp>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut writes = Vec::new();
    let mut i = 0;
    loop {
        if let Some(r) = p.wait_for(Duration::from_millis(100)) {
            return (r, writes);
        }
        assert!(
            Instant::now() < deadline,
            "{}: no answer within 10 s of triggers",
            p.what
        );
        writes.extend(trigger(i));
        i += 1;
    }
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

/// The watch answer: 200, JSON, and exactly the body of one of `writes` (returns its position).
fn assert_answer_is_one_of(answer: &Resp, writes: &[Resp]) -> usize {
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer.content_type(), Some("application/json"));
    writes
        .iter()
        .position(|w| w.body == answer.body)
        .unwrap_or_else(|| {
            panic!(
                "watch answered {:?}, which is none of the writes {:?}",
                answer.body,
                writes.iter().map(|w| &w.body).collect::<Vec<_>>()
            )
        })
}

fn assert_same_answer(answer: &Resp, write: &Resp) {
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer.content_type(), Some("application/json"));
    assert_eq!(answer.body, write.body);
}

const INDEX_NAN: &str = r#"{"errorCode":203,"message":"The given index in POST form is not a number","cause":"Watch From Index"}"#;

// ---------------------------------------------------------------------------------------
// GET long-polls

#[test]
fn get_watch_is_woken_by_a_set_below_the_prefix() {
    let n = Node::start("node0");
    let a = n.client.clone();
    let w = Pending::get(&a, "/v1/watch/foo");
    let (answer, writes) =
        answer_with_triggers(&w, |i| vec![set(&a, "foo/foo", &format!("barbar{i}"))]);
    let k = assert_answer_is_one_of(&answer, &writes);
    let v = answer.json();
    assert_eq!(v["action"], "SET");
    assert_eq!(v["key"], "/foo/foo");
    assert_eq!(v["value"], format!("barbar{k}"));
}

#[test]
fn get_watch_matches_whole_segments_only() {
    let n = Node::start("node0");
    let a = n.client.clone();
    let w = Pending::get(&a, "/v1/watch/ab");
    // Every round writes /abc first: it must never be the answer.
    let (answer, writes) = answer_with_triggers(&w, |i| {
        vec![
            set(&a, "abc", &i.to_string()),
            set(&a, "ab/x", &i.to_string()),
        ]
    });
    let k = assert_answer_is_one_of(&answer, &writes);
    assert_eq!(k % 2, 1, "answered with /abc: {:?}", answer.body);
    assert_eq!(answer.json()["key"], "/ab/x");

    // The same from history: from the first /abc event on, the first match is /ab/x.
    let first_abc = idx(&writes[0]);
    let r = post_form(&a, "/v1/watch/ab", &[("index", &first_abc.to_string())]);
    assert_same_answer(&r, &writes[1]);
    // A prefix that is not a whole segment of anything never matches: /a/b is not under /ab.
    let w2 = Pending::post_index(&a, "/v1/watch/a", first_abc);
    w2.assert_pending(Duration::from_millis(300));
    let r = set(&a, "a/b", "1");
    assert_same_answer(&w2.wait(), &r);
}

#[test]
fn get_watch_is_woken_by_a_delete() {
    let n = Node::start("node0");
    let a = n.client.clone();
    for i in 0..100 {
        set(&a, &format!("d/k/{i}"), &format!("v{i}"));
    }
    let w = Pending::get(&a, "/v1/watch/d/k");
    let (answer, writes) = answer_with_triggers(&w, |i| {
        let r = delete(&a, &format!("/v1/keys/d/k/{i}"));
        assert_eq!(r.status, 200, "{:?}", r.body);
        vec![r]
    });
    let k = assert_answer_is_one_of(&answer, &writes);
    assert_eq!(
        answer.body,
        format!(
            r#"{{"action":"DELETE","key":"/d/k/{k}","prevValue":"v{k}","index":{}}}"#,
            idx(&writes[k])
        )
    );
}

#[test]
fn watch_of_a_key_sees_its_delete_not_its_siblings() {
    // The transcript's sequence: watch /foo/foo, set /foo/foo2, delete /foo/foo.
    let n = Node::start("node0");
    let a = &n.client;
    let s = idx(&set(a, "foo/foo", "barbar"));
    let w = Pending::post_index(a, "/v1/watch/foo/foo", s + 1);
    w.assert_pending(Duration::from_millis(200));
    let sib = set(a, "foo/foo2", "x");
    assert_eq!(idx(&sib), s + 1);
    let del = delete(a, "/v1/keys/foo/foo");
    assert_eq!(
        del.body,
        format!(
            r#"{{"action":"DELETE","key":"/foo/foo","prevValue":"barbar","index":{}}}"#,
            s + 2
        )
    );
    assert_same_answer(&w.wait(), &del);
}

#[test]
fn watch_sees_test_and_set_and_ttl_zero_deletes() {
    let n = Node::start("node0");
    let a = &n.client;
    let s = idx(&set(a, "t/k", "one"));

    let w = Pending::post_index(a, "/v1/watch/t", s + 1);
    let cas = post_form(a, "/v1/keys/t/k", &[("prevValue", "one"), ("value", "two")]);
    assert_eq!(cas.status, 200, "{:?}", cas.body);
    assert_same_answer(&w.wait(), &cas);

    let w = Pending::post_index(a, "/v1/watch/t/k", s + 2);
    let del = post_form(a, "/v1/keys/t/k", &[("value", "x"), ("ttl", "0")]);
    assert_eq!(
        del.body,
        format!(
            r#"{{"action":"DELETE","key":"/t/k","prevValue":"two","index":{}}}"#,
            s + 2
        )
    );
    assert_same_answer(&w.wait(), &del);
}

#[test]
fn root_watch() {
    let n = Node::start("node0");
    let a = n.client.clone();
    let w = Pending::get(&a, "/v1/watch/");
    let (answer, writes) = answer_with_triggers(&w, |i| vec![set(&a, &format!("zz{i}"), "1")]);
    let k = assert_answer_is_one_of(&answer, &writes);
    assert_eq!(answer.json()["key"], format!("/zz{k}"));

    // From history, the root matches every event.
    let first = idx(&writes[0]);
    let r = post_form(&a, "/v1/watch/", &[("index", &first.to_string())]);
    assert_same_answer(&r, &writes[0]);
}

#[test]
fn trailing_slash_watch() {
    let n = Node::start("node0");
    let a = n.client.clone();
    set(&a, "a", "1");
    let w = Pending::get(&a, "/v1/watch/a/");
    let (answer, writes) = answer_with_triggers(&w, |i| vec![set(&a, "a", &format!("v{i}"))]);
    let k = assert_answer_is_one_of(&answer, &writes);
    let prev = if k == 0 {
        "1".to_string()
    } else {
        format!("v{}", k - 1)
    };
    assert_eq!(
        answer.body,
        format!(
            r#"{{"action":"SET","key":"/a","prevValue":"{prev}","value":"v{k}","index":{}}}"#,
            idx(&writes[k])
        )
    );
}

#[test]
fn get_watch_ignores_an_index_in_the_query() {
    let n = Node::start("node0");
    let a = n.client.clone();
    let old = set(&a, "foo", "old");
    let w = Pending::get(&a, &format!("/v1/watch/foo?index={}", idx(&old)));
    let (answer, writes) = answer_with_triggers(&w, |i| vec![set(&a, "foo", &format!("new{i}"))]);
    assert_answer_is_one_of(&answer, &writes);
}

// ---------------------------------------------------------------------------------------
// POST index=N

#[test]
fn post_index_answers_from_history() {
    let n = Node::start("node0");
    let a = &n.client;
    let foo = post_form(a, "/v1/keys/foo", &[("value", "bar")]);
    let i = idx(&foo);
    let other = set(a, "other", "o");
    assert_eq!(idx(&other), i + 1);
    let foofoo = set(a, "foo2/x", "y"); // not under /foo
    assert_eq!(idx(&foofoo), i + 2);
    let del = delete(a, "/v1/keys/foo");
    assert_eq!(idx(&del), i + 3);
    let sub = set(a, "foo/sub", "s");
    assert_eq!(idx(&sub), i + 4);

    // Exactly at an event.
    assert_same_answer(
        &post_form(a, "/v1/watch/foo", &[("index", &i.to_string())]),
        &foo,
    );
    // Before the first matching event: scans forward.
    assert_same_answer(&post_form(a, "/v1/watch/foo", &[("index", "1")]), &foo);
    // Skips events under other prefixes.
    assert_same_answer(
        &post_form(a, "/v1/watch/foo", &[("index", &(i + 1).to_string())]),
        &del,
    );
    assert_same_answer(
        &post_form(a, "/v1/watch/foo", &[("index", &(i + 4).to_string())]),
        &sub,
    );
    assert_same_answer(&post_form(a, "/v1/watch/foo/sub", &[("index", "1")]), &sub);
    // The index may come from the query string of a POST too.
    assert_same_answer(
        &request(
            a,
            "POST",
            &format!("/v1/watch/foo?index={}", i + 2),
            &[],
            b"",
        ),
        &del,
    );
    // The key itself, without the trailing slash.
    assert_same_answer(&post_form(a, "/v1/watch/other/", &[("index", "1")]), &other);

    // A future index waits, then answers the event with that index.
    let w = Pending::post_index(a, "/v1/watch/foo", i + 5);
    w.assert_pending(Duration::from_millis(300));
    let next = set(a, "foo/next", "n");
    assert_eq!(idx(&next), i + 5);
    assert_same_answer(&w.wait(), &next);

    // No matching event since N: waits for the next one.
    let w = Pending::post_index(a, "/v1/watch/other", i + 2);
    w.assert_pending(Duration::from_millis(300));
    let o2 = set(a, "other", "o2");
    assert_same_answer(&w.wait(), &o2);
}

#[test]
fn history_replays_the_recorded_response() {
    // v0.1.2 keeps the write responses themselves: the replay of a TTL set carries the ttl it
    // answered when it was written, not the remaining time now.
    let n = Node::start("node0");
    let a = &n.client;
    let r = post_form(a, "/v1/keys/h", &[("value", "v"), ("ttl", "100")]);
    let ttl0 = r.json()["ttl"].as_i64().expect("ttl");
    // Wait until the remaining ttl has visibly dropped.
    poll_until(Duration::from_secs(4), "ttl to drop", || {
        let g = get(a, "/v1/keys/h");
        (g.json()["ttl"].as_i64().expect("ttl") < ttl0).then_some(())
    });
    let replay = post_form(a, "/v1/watch/h", &[("index", &idx(&r).to_string())]);
    assert_same_answer(&replay, &r);
}

#[test]
fn index_older_than_the_history_waits() {
    let n = Node::start_args("node0", &["-m", "3"]);
    let a = n.client.clone();
    let first = set(&a, "h/a", "1");
    set(&a, "h/b", "1");
    set(&a, "h/c", "1");
    let last = set(&a, "h/d", "1");
    assert_eq!(idx(&last), idx(&first) + 3);

    // Within the window: answered at once.
    let r = post_form(
        &a,
        "/v1/watch/h",
        &[("index", &(idx(&first) + 2).to_string())],
    );
    assert_eq!(r.json()["key"], "/h/c", "{:?}", r.body);
    // The window holds exactly the last 3 events: /h/b is the oldest one kept.
    let r = post_form(
        &a,
        "/v1/watch/h",
        &[("index", &(idx(&first) + 1).to_string())],
    );
    assert_eq!(r.json()["key"], "/h/b", "{:?}", r.body);

    // Older than the window: not an error, and not answered from history either.
    let w = Pending::post_index(&a, "/v1/watch/h", idx(&first));
    let (answer, writes) = answer_with_triggers(&w, |i| vec![set(&a, &format!("h/new{i}"), "n")]);
    assert_answer_is_one_of(&answer, &writes);
}

#[test]
fn bad_or_missing_index_is_203() {
    let n = Node::start("node0");
    let a = &n.client;
    for form in [
        &[("index", "abc")][..],
        &[("index", "")][..],
        &[("index", "-1")][..],
        &[("index", "1.5")][..],
        &[][..],
    ] {
        let r = post_form(a, "/v1/watch/foo", form);
        assert_eq!(r.status, 400, "{form:?}: {:?}", r.body);
        assert_eq!(r.content_type(), Some("application/json"), "{form:?}");
        assert_eq!(r.body.trim_end_matches('\n'), INDEX_NAN, "{form:?}");
    }
    // POST without any body.
    let r = request(a, "POST", "/v1/watch/foo", &[], b"");
    assert_eq!(r.status, 400);
    assert_eq!(r.body.trim_end_matches('\n'), INDEX_NAN);
}

#[test]
fn other_methods_are_405() {
    let n = Node::start("node0");
    let a = &n.client;
    for method in ["DELETE", "PUT", "HEAD", "PATCH"] {
        let r = request(a, method, "/v1/watch/foo", &[], b"");
        assert_eq!(r.status, 405, "{method}: {:?}", r.body);
        assert_eq!(r.body, "", "{method}");
    }
}

// ---------------------------------------------------------------------------------------
// expiry and many watchers

#[test]
fn watch_is_woken_by_expiry() {
    let n = Node::start("node0");
    let a = &n.client;
    let r = post_form(a, "/v1/keys/foo/ttlkey", &[("value", "t"), ("ttl", "2")]);
    assert_eq!(r.status, 200, "{:?}", r.body);
    let s = idx(&r);
    let exp = r.json()["expiration"]
        .as_str()
        .expect("expiration")
        .to_string();

    let by_get = Pending::get(a, "/v1/watch/foo/ttlkey");
    let by_prefix = Pending::get(a, "/v1/watch/foo");
    let by_index = Pending::post_index(a, "/v1/watch/foo/ttlkey", s + 1);
    let expected = format!(
        r#"{{"action":"DELETE","key":"/foo/ttlkey","prevValue":"t","expiration":"{exp}","index":{}}}"#,
        s + 1
    );
    for w in [&by_get, &by_prefix, &by_index] {
        let ans = w.wait();
        assert_eq!(ans.status, 200, "{:?}", ans.body);
        assert_eq!(ans.content_type(), Some("application/json"));
        assert_eq!(ans.body, expected);
    }
    // The key is gone and the expiry is in the history.
    let g = get(a, "/v1/keys/foo/ttlkey");
    assert_eq!(g.status, 404);
    let h = post_form(a, "/v1/watch/foo", &[("index", &(s + 1).to_string())]);
    assert_eq!(h.body, expected);
    // It consumed exactly one index.
    let next = set(a, "next", "1");
    assert_eq!(idx(&next), s + 2);
}

#[test]
fn many_watchers_are_woken_by_one_set() {
    let n = Node::start("node0");
    let a = &n.client;
    let paths = ["/v1/watch/m", "/v1/watch/m/", "/v1/watch/m/k"];
    let watchers: Vec<Pending> = (0..30)
        .map(|i| Pending::get(a, paths[i % paths.len()]))
        .collect();
    // Writes that do not match wake nobody.
    set(a, "mm", "x");
    set(a, "other/m", "x");
    set(a, "m2/k", "x");
    // Wait until all 30 watchers are registered (the store counts v1 watchers in its
    // `watchers` stat), then check that none has answered and write once.
    poll_until(Duration::from_secs(10), "30 registered watchers", || {
        let r = get(a, "/v2/stats/store");
        assert_eq!(r.status, 200, "{:?}", r.body);
        (r.json()["watchers"].as_u64() == Some(30)).then_some(())
    });
    for w in &watchers {
        w.assert_pending(Duration::ZERO);
    }
    let one = set(a, "m/k", "v");
    for w in &watchers {
        assert_same_answer(&w.wait(), &one);
    }
}

#[test]
fn pending_watches_do_not_block_shutdown() {
    let mut n = Node::start("node0");
    let a = n.client.clone();
    let w1 = Pending::get(&a, "/v1/watch/foo");
    let w2 = Pending::post_index(&a, "/v1/watch/", 1_000_000);
    w1.assert_pending(Duration::from_millis(300));
    // stop() panics when the process is not gone within 10 s of SIGTERM.
    let st = n.stop();
    assert!(st.success(), "exit status {st:?}");
    // The waiting clients are released (answer or closed connection), not left hanging.
    for w in [&w1, &w2] {
        match w.rx.recv_timeout(Duration::from_secs(5)) {
            Ok(_) => {}
            Err(e) => panic!("{}: still waiting after shutdown: {e:?}", w.what),
        }
    }
}

#[test]
fn abandoned_watches_do_not_disturb_the_server() {
    use std::io::Write;
    let n = Node::start("node0");
    let a = &n.client;
    // Clients that give up on their long-polls.
    for _ in 0..20 {
        let mut s = std::net::TcpStream::connect(a).expect("connect");
        write!(
            s,
            "GET /v1/watch/foo HTTP/1.1\r\nHost: {a}\r\nConnection: close\r\n\r\n"
        )
        .expect("write");
        drop(s);
    }
    let w = Pending::get(a, "/v1/watch/foo");
    let (answer, writes) = answer_with_triggers(&w, |i| vec![set(a, "foo/k", &i.to_string())]);
    assert_answer_is_one_of(&answer, &writes);
    assert_eq!(get(a, "/v1/keys/foo/k").status, 200);
}
