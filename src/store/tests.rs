//! Unit tests of the store's write and watch semantics (etcd's v2 store rules).

use super::*;
use crate::error::Code;

const S: i64 = 1_000_000_000;
const T0: i64 = 1_800_000_000 * S; // a "now" in 2027

fn val(s: &str) -> Option<String> {
    Some(s.to_string())
}

#[test]
fn set_creates_then_replaces_and_restarts_created_index() {
    let mut st = Store::new(1000);
    let e1 = st.set("/message", val("Hello world"), None, false).unwrap();
    assert_eq!(
        (e1.action, e1.index(), e1.node.created_index),
        (Action::Set, 1, 1)
    );
    assert!(e1.prev_node.is_none());
    let e2 = st.set("message/", val("Hello etcd"), None, false).unwrap();
    assert_eq!((e2.node.modified_index, e2.node.created_index), (2, 2));
    let prev = e2.prev_node.unwrap();
    assert_eq!(
        (prev.value.as_deref(), prev.modified_index),
        (Some("Hello world"), 1)
    );
    assert_eq!(st.index(), 2);
}

#[test]
fn parents_are_created_with_the_write_index() {
    let mut st = Store::new(1000);
    st.set("/a", val("1"), None, false).unwrap();
    st.set("/d/e/x", val("1"), None, false).unwrap();
    let d = st.get("/d", false, false).unwrap();
    assert!(d.dir);
    assert_eq!((d.created_index, d.modified_index), (2, 2));
    assert_eq!(d.nodes.unwrap()[0].key, "/d/e");
}

#[test]
fn errors_do_not_consume_indexes() {
    let mut st = Store::new(1000);
    st.set("/a", val("1"), None, false).unwrap();
    st.set("/d/x", val("1"), None, false).unwrap();
    let e = st.set("/d", val("1"), None, false).unwrap_err();
    assert_eq!(
        (e.code, e.cause.as_str(), e.index),
        (Code::NotFile, "/d", 2)
    );
    let e = st.delete("/nokey", false, false).unwrap_err();
    assert_eq!((e.code, e.cause.as_str()), (Code::KeyNotFound, "/nokey"));
    let e = st
        .compare_and_swap("/a", Some("zz"), None, "2".into(), None, false)
        .unwrap_err();
    assert_eq!(
        (e.code, e.cause.as_str(), e.current.as_deref()),
        (Code::TestFailed, "[zz != 1]", Some("1"))
    );
    assert_eq!(st.index(), 2);
    assert_eq!(st.set("/b", val("1"), None, false).unwrap().index(), 3);
}

#[test]
fn paths_through_keys() {
    let mut st = Store::new(1000);
    st.set("/a", val("1"), None, false).unwrap();
    // set, get and create all answer "not a directory" with the key in the way (etcd 3.4)
    let e = st.set("/a/b", val("x"), None, false).unwrap_err();
    assert_eq!((e.code, e.cause.as_str()), (Code::NotDir, "/a"));
    let e = st.get("/a/b/c", false, false).unwrap_err();
    assert_eq!((e.code, e.cause.as_str()), (Code::NotDir, "/a"));
    let e = st.create("/a/b", val("x"), None, false).unwrap_err();
    assert_eq!((e.code, e.cause.as_str()), (Code::NotDir, "/a"));
    let e = st.get("/nope/deeper", false, false).unwrap_err();
    assert_eq!(
        (e.code, e.cause.as_str(), e.index),
        (Code::KeyNotFound, "/nope", 1)
    );
    assert_eq!(st.index(), 1);
    assert!(st.get("/", false, true).unwrap().nodes.unwrap().len() == 1);
}

#[test]
fn root_is_read_only() {
    let mut st = Store::new(1000);
    for e in [
        st.set("/", val("x"), None, false).unwrap_err(),
        st.delete("/", true, true).unwrap_err(),
        st.update("/", String::new(), None, false).unwrap_err(),
        st.compare_and_swap("/", Some("a"), None, "b".into(), None, false)
            .unwrap_err(),
    ] {
        assert_eq!((e.code, e.cause.as_str()), (Code::RootReadOnly, "/"));
    }
}

#[test]
fn create_update_and_unique_names() {
    let mut st = Store::new(1000);
    let e = st.create("/x", val("1"), None, false).unwrap();
    assert_eq!(e.action, Action::Create);
    let e = st.create("/x", val("2"), None, false).unwrap_err();
    assert_eq!(
        (e.code, e.cause.as_str(), e.current.as_deref()),
        (Code::NodeExist, "/x", Some("1"))
    );
    let e = st.update("/x", "3".into(), None, false).unwrap();
    assert_eq!(
        (e.action, e.node.created_index, e.node.modified_index),
        (Action::Update, 1, 2)
    );
    let e = st.update("/missing", "3".into(), None, false).unwrap_err();
    assert_eq!(e.code, Code::KeyNotFound);
    let e = st.create("/queue", val("Job1"), None, true).unwrap();
    assert_eq!(e.node.key, "/queue/00000000000000000003");
    assert_eq!(e.index(), 3);
}

#[test]
fn compare_and_swap_causes() {
    let mut st = Store::new(1000);
    st.set("/k", val("one"), None, false).unwrap();
    let e = st
        .compare_and_swap("/k", Some("two"), Some(7), "x".into(), None, false)
        .unwrap_err();
    assert_eq!(e.cause, "[two != one] [7 != 1]");
    let e = st
        .compare_and_swap("/k", None, Some(7), "x".into(), None, false)
        .unwrap_err();
    assert_eq!(e.cause, "[7 != 1]");
    let ev = st
        .compare_and_swap("/k", Some("one"), Some(1), "two".into(), None, false)
        .unwrap();
    assert_eq!(
        (ev.action, ev.node.created_index, ev.index()),
        (Action::CompareAndSwap, 1, 2)
    );
    st.set("/dir/x", val("1"), None, false).unwrap();
    let e = st
        .compare_and_swap("/dir", Some("a"), None, "b".into(), None, false)
        .unwrap_err();
    assert_eq!(e.code, Code::NotFile);
}

#[test]
fn delete_rules_for_directories() {
    let mut st = Store::new(1000);
    st.set("/a/b", val("1"), None, false).unwrap();
    assert_eq!(
        st.delete("/a", false, false).unwrap_err().code,
        Code::NotFile
    );
    assert_eq!(
        st.delete("/a", true, false).unwrap_err().code,
        Code::DirNotEmpty
    );
    let e = st.delete("/a", false, true).unwrap();
    assert_eq!(
        (e.node.dir, e.node.modified_index, e.node.created_index),
        (true, 2, 1)
    );
    assert!(e.prev_node.unwrap().dir);
    assert_eq!(
        st.get("/a", false, false).unwrap_err().code,
        Code::KeyNotFound
    );
    // dir=true on a key deletes it
    st.set("/k", val("v"), None, false).unwrap();
    assert_eq!(st.delete("/k", true, false).unwrap().action, Action::Delete);
    // compare-and-delete
    st.set("/c", val("v"), None, false).unwrap();
    assert_eq!(
        st.compare_and_delete("/c", Some("w"), None)
            .unwrap_err()
            .code,
        Code::TestFailed
    );
    assert_eq!(
        st.compare_and_delete("/c", Some("v"), None).unwrap().action,
        Action::CompareAndDelete
    );
}

#[test]
fn ttl_expiry_is_ordered_and_consumes_indexes() {
    let mut st = Store::new(1000);
    st.set("/late", val("1"), Some(T0 + 10 * S), false).unwrap();
    st.set("/early", val("1"), Some(T0 + 5 * S), false).unwrap();
    st.set("/d/x", val("1"), None, false).unwrap();
    st.update("/d", String::new(), Some(T0 + 7 * S), false)
        .unwrap();
    assert_eq!(st.next_expiry(), Some(T0 + 5 * S));
    assert!(st.expire(T0 + 4 * S).is_empty());
    let evs = st.expire(T0 + 8 * S);
    let got: Vec<_> = evs
        .iter()
        .map(|e| (e.node.key.as_str(), e.index(), e.action))
        .collect();
    assert_eq!(
        got,
        vec![("/early", 5, Action::Expire), ("/d", 6, Action::Expire)]
    );
    assert_eq!(
        evs[0].prev_node.as_ref().unwrap().expire_at,
        Some(T0 + 5 * S)
    );
    assert_eq!(
        st.get("/d/x", false, false).unwrap_err().code,
        Code::KeyNotFound
    );
    assert_eq!(st.next_expiry(), Some(T0 + 10 * S));
    // a set without ttl makes the key permanent
    st.set("/late", val("2"), None, false).unwrap();
    assert_eq!(st.next_expiry(), None);
    assert!(st.expire(T0 + 100 * S).is_empty());
    assert_eq!(st.stats().expire_count, 2);
}

#[test]
fn expiry_before_2000_means_permanent() {
    let mut st = Store::new(1000);
    let e = st.set("/k", val("v"), Some(5), false).unwrap();
    assert_eq!(e.node.expire_at, None);
    assert_eq!(st.next_expiry(), None);
}

#[test]
fn refresh_keeps_value_and_is_not_delivered() {
    let mut st = Store::new(1000);
    st.set("/t", val("v"), Some(T0 + S), false).unwrap();
    let mut w = st
        .watch("/t", false, false, None, false, OnCleared::Error)
        .unwrap();
    let e = st
        .update("/t", String::new(), Some(T0 + 100 * S), true)
        .unwrap();
    assert_eq!(
        (e.node.value.as_deref(), e.refresh, e.index()),
        (Some("v"), true, 2)
    );
    assert!(w.rx.try_recv().is_err(), "refresh must not wake watchers");
    assert_eq!(st.next_expiry(), Some(T0 + 100 * S));
    let e = st
        .set("/t", Some(String::new()), Some(T0 + 200 * S), true)
        .unwrap();
    assert_eq!(
        (e.node.value.as_deref(), e.node.created_index),
        (Some("v"), 3)
    );
    assert!(w.rx.try_recv().is_err());
    st.set("/t", val("w"), None, false).unwrap();
    assert_eq!(w.rx.try_recv().unwrap().index(), 4);
}

#[test]
fn watchers_exact_recursive_hidden_and_dir_deletes() {
    let mut st = Store::new(1000);
    let mut exact = st
        .watch("/foo", false, false, None, false, OnCleared::Error)
        .unwrap();
    let mut rec = st
        .watch("/foo", true, true, None, false, OnCleared::Error)
        .unwrap();
    let mut v1root = st
        .watch("/", true, true, None, true, OnCleared::WaitForNext)
        .unwrap();
    let mut below = st
        .watch("/foo/bar/baz", false, false, None, false, OnCleared::Error)
        .unwrap();
    assert_eq!(st.watcher_count(), 4);

    st.set("/foobar", val("1"), None, false).unwrap(); // 1: not under /foo
    st.set("/foo/_hidden", val("1"), None, false).unwrap(); // 2: hidden from /foo watchers
    st.set("/foo/bar/baz", val("1"), None, false).unwrap(); // 3
    assert!(exact.rx.try_recv().is_err());
    assert_eq!(rec.rx.try_recv().unwrap().index(), 3);
    let seen: Vec<u64> = std::iter::from_fn(|| v1root.rx.try_recv().ok())
        .map(|e| e.index())
        .collect();
    assert_eq!(
        seen,
        vec![1, 2, 3],
        "a show-hidden watcher sees hidden keys"
    );
    assert_eq!(below.rx.try_recv().unwrap().index(), 3);
    let mut below = st
        .watch("/foo/bar/baz", false, false, None, false, OnCleared::Error)
        .unwrap();

    st.delete("/foo", true, true).unwrap(); // 4: reaches every watcher under /foo
    assert_eq!(exact.rx.try_recv().unwrap().index(), 4);
    assert_eq!(rec.rx.try_recv().unwrap().index(), 4);
    assert_eq!(below.rx.try_recv().unwrap().index(), 4);
    assert!(
        rec.rx.try_recv().is_err(),
        "delivered once even though matched twice"
    );
    // one-shot watchers are gone, streams stay
    assert_eq!(st.watcher_count(), 2);
    st.unwatch(&rec);
    st.unwatch(&v1root);
    assert_eq!(st.watcher_count(), 0);
}

#[test]
fn watch_from_history_and_cleared_index() {
    let mut st = Store::new(3);
    for i in 0..5 {
        st.set(&format!("/k{}", i % 2), val("v"), None, false)
            .unwrap();
    }
    // history holds 3, 4, 5
    let mut w = st
        .watch("/k0", false, false, Some(3), false, OnCleared::Error)
        .unwrap();
    assert_eq!(w.rx.try_recv().unwrap().index(), 3);
    let e = st
        .watch("/k0", false, false, Some(2), false, OnCleared::Error)
        .unwrap_err();
    assert_eq!(
        (e.code, e.cause.as_str(), e.index),
        (
            Code::EventIndexCleared,
            "the requested history has been cleared [3/2]",
            5
        )
    );
    // v1 waits instead
    let mut w = st
        .watch("/k0", false, false, Some(2), false, OnCleared::WaitForNext)
        .unwrap();
    assert!(w.rx.try_recv().is_err());
    st.set("/k0", val("x"), None, false).unwrap();
    assert_eq!(w.rx.try_recv().unwrap().index(), 6);
    // a future index waits
    let mut w = st
        .watch("/k1", false, false, Some(8), false, OnCleared::Error)
        .unwrap();
    st.set("/k1", val("x"), None, false).unwrap(); // 7: too early
    assert!(w.rx.try_recv().is_err());
    st.set("/k1", val("y"), None, false).unwrap(); // 8
    assert_eq!(w.rx.try_recv().unwrap().index(), 8);
}

#[test]
fn a_slow_stream_watcher_is_dropped_not_waited_for() {
    let mut st = Store::new(1000);
    let mut w = st
        .watch("/s", false, true, None, false, OnCleared::Error)
        .unwrap();
    for i in 0..(watch::WATCHER_BUFFER + 5) {
        st.set("/s", val(&i.to_string()), None, false).unwrap();
    }
    assert_eq!(st.watcher_count(), 0);
    let mut n = 0;
    while w.rx.try_recv().is_ok() {
        n += 1;
    }
    assert_eq!(n, watch::WATCHER_BUFFER);
}

#[test]
fn snapshot_round_trip_rebuilds_expiry() {
    let mut st = Store::new(1000);
    st.set("/a/b", val("1"), Some(T0 + S), false).unwrap();
    st.set("/c", val("2"), None, false).unwrap();
    let snap = st.snapshot();
    let json = serde_json::to_vec(&snap).unwrap();
    let mut st2 = Store::new(1000);
    st2.restore(serde_json::from_slice(&json).unwrap());
    assert_eq!(st2.index(), 2);
    assert_eq!(st2.next_expiry(), Some(T0 + S));
    assert_eq!(
        st2.get("/", true, true).unwrap(),
        st.get("/", true, true).unwrap()
    );
    assert_eq!(st2.stats().sets_success, 2);
    // the history comes along: a watch from an old index still answers
    let mut w = st2
        .watch("/c", false, false, Some(1), false, OnCleared::Error)
        .unwrap();
    assert_eq!(w.rx.try_recv().unwrap().index(), 2);
    assert_eq!(st2.expire(T0 + S).len(), 1);
}

#[test]
fn a_stream_from_history_continues_live() {
    let mut st = Store::new(1000);
    st.set("/s/a", val("1"), None, false).unwrap(); // 1
    st.set("/other", val("1"), None, false).unwrap(); // 2
    st.set("/s/b", val("2"), None, false).unwrap(); // 3
    let mut w = st
        .watch("/s", true, true, Some(1), false, OnCleared::Error)
        .unwrap();
    st.set("/s/c", val("3"), None, false).unwrap(); // 4
    let got: Vec<u64> = std::iter::from_fn(|| w.rx.try_recv().ok())
        .map(|e| e.index())
        .collect();
    assert_eq!(got, vec![1, 3, 4]);
    assert_eq!(st.watcher_count(), 1);
}

#[test]
fn a_directory_ttl_update_keeps_its_stored_modified_index() {
    let mut st = Store::new(1000);
    st.set("/d", None, None, false).unwrap(); // 1
    let e = st
        .update("/d", String::new(), Some(T0 + 30 * S), false)
        .unwrap();
    assert_eq!(e.node.modified_index, 2, "the event reports the write");
    assert_eq!(
        st.get("/d", false, false).unwrap().modified_index,
        1,
        "the node keeps it, as etcd does"
    );
    assert_eq!(st.index(), 2);
}

#[test]
fn value_len_counts_a_key_value_and_nothing_else() {
    let mut st = Store::new(1000);
    st.set("/a/b", val("hello"), None, false).unwrap();
    assert_eq!(st.value_len("/a/b"), 5);
    assert_eq!(st.value_len("a/b/"), 5, "the key is cleaned like any other");
    assert_eq!(st.value_len("/a"), 0, "a directory has no value");
    assert_eq!(st.value_len("/missing"), 0);
    assert_eq!(st.value_len("/a/b/c"), 0, "below a key");
    assert_eq!(
        st.stats().gets_success + st.stats().gets_fail,
        0,
        "not a client read"
    );
}

#[test]
fn failed_writes_copy_nothing_a_snapshot_shares() {
    let mut st = Store::new(10);
    for i in 0..100 {
        st.set(&format!("/d/k{i:03}"), val("v"), None, false)
            .unwrap();
    }
    st.set("/d/sub/x", val("1"), None, false).unwrap();
    let snap = st.snapshot();
    assert!(st.create("/d/k001", val("x"), None, false).is_err());
    assert!(st.set("/d/k001/below", val("x"), None, false).is_err());
    assert!(st.create("/d/k001/below", val("x"), None, false).is_err());
    assert!(st.set("/d/sub", val("x"), None, false).is_err());
    assert!(st.update("/d/nope", "x".into(), None, false).is_err());
    assert!(
        st.compare_and_swap("/d/k002", Some("no"), None, "x".into(), None, false)
            .is_err()
    );
    assert!(st.delete("/d/sub", true, false).is_err());
    assert!(st.compare_and_delete("/d/k003", None, Some(999)).is_err());
    assert!(st.expire(T0).is_empty());
    let shared = |a: &Node, b: &Node| a.children().unwrap().ptr_eq(b.children().unwrap());
    let d = |n: &Node| n.children().unwrap().get("d").unwrap().clone();
    assert!(shared(&st.root, &snap.root));
    assert!(shared(&d(&st.root), &d(&snap.root)));
    st.set("/d/k001", val("y"), None, false).unwrap();
    assert!(!shared(&st.root, &snap.root));
    assert!(!shared(&d(&st.root), &d(&snap.root)));
    assert_eq!(
        d(&snap.root)
            .children()
            .unwrap()
            .get("k001")
            .unwrap()
            .value(),
        Some("v")
    );
}

#[test]
fn write_counters_follow_etcds_accounting() {
    // Measured on etcd 3.4.23 (`/v2/stats/store` before and after each request): some
    // refusals count as successes, and a create that meets a key on its way is a failed
    // set too.
    let mut st = Store::new(100);
    st.set("/st/k", val("v"), None, false).unwrap();
    st.set("/st/d/x", val("v"), None, false).unwrap();
    type Write = fn(&mut Store) -> Result<Event, EtcdError>;
    let cases: Vec<(&str, Write, Code, &[&str])> = vec![
        (
            "set root",
            |s| s.set("/", val("x"), None, false),
            Code::RootReadOnly,
            &["setsFail"],
        ),
        (
            "set through key",
            |s| s.set("/st/k/x", val("x"), None, false),
            Code::NotDir,
            &["setsFail"],
        ),
        (
            "set on dir",
            |s| s.set("/st/d", val("x"), None, false),
            Code::NotFile,
            &["setsFail"],
        ),
        (
            "refresh missing",
            |s| s.set("/st/no", val(""), Some(T0), true),
            Code::KeyNotFound,
            &["setsFail"],
        ),
        (
            "create existing",
            |s| s.create("/st/k", val("x"), None, false),
            Code::NodeExist,
            &["createFail"],
        ),
        (
            "create through key",
            |s| s.create("/st/k/x", val("x"), None, false),
            Code::NotDir,
            &["createFail", "setsFail"],
        ),
        (
            "post through key",
            |s| s.create("/st/k", val("x"), None, true),
            Code::NotDir,
            &["createFail", "setsFail"],
        ),
        (
            "create root",
            |s| s.create("/", val("x"), None, false),
            Code::RootReadOnly,
            &["createFail"],
        ),
        (
            "update missing",
            |s| s.update("/st/no", "x".into(), None, false),
            Code::KeyNotFound,
            &["updateFail"],
        ),
        (
            "update root",
            |s| s.update("/", "x".into(), None, false),
            Code::RootReadOnly,
            &["updateSuccess"],
        ),
        (
            "update dir value",
            |s| s.update("/st/d", "x".into(), None, false),
            Code::NotFile,
            &["updateSuccess"],
        ),
        (
            "update through key",
            |s| s.update("/st/k/x", "x".into(), None, false),
            Code::NotDir,
            &["updateFail"],
        ),
        (
            "cas root",
            |s| s.compare_and_swap("/", Some("a"), None, "x".into(), None, false),
            Code::RootReadOnly,
            &["compareAndSwapSuccess"],
        ),
        (
            "cas missing",
            |s| s.compare_and_swap("/st/no", Some("a"), None, "x".into(), None, false),
            Code::KeyNotFound,
            &["compareAndSwapFail"],
        ),
        (
            "cas dir",
            |s| s.compare_and_swap("/st/d", Some("a"), None, "x".into(), None, false),
            Code::NotFile,
            &["compareAndSwapFail"],
        ),
        (
            "cas fail",
            |s| s.compare_and_swap("/st/k", Some("a"), None, "x".into(), None, false),
            Code::TestFailed,
            &["compareAndSwapFail"],
        ),
        (
            "cas through key",
            |s| s.compare_and_swap("/st/k/x", Some("a"), None, "x".into(), None, false),
            Code::NotDir,
            &["compareAndSwapFail"],
        ),
        (
            "delete root",
            |s| s.delete("/", true, true),
            Code::RootReadOnly,
            &["deleteSuccess"],
        ),
        (
            "delete missing",
            |s| s.delete("/st/no", false, false),
            Code::KeyNotFound,
            &["deleteFail"],
        ),
        (
            "delete dir",
            |s| s.delete("/st/d", false, false),
            Code::NotFile,
            &["deleteFail"],
        ),
        (
            "delete non-empty",
            |s| s.delete("/st/d", true, false),
            Code::DirNotEmpty,
            &["deleteFail"],
        ),
        (
            "delete through key",
            |s| s.delete("/st/k/x", false, false),
            Code::NotDir,
            &["deleteFail"],
        ),
        (
            "cad root",
            |s| s.compare_and_delete("/", Some("a"), None),
            Code::NotFile,
            &["compareAndDeleteSuccess"],
        ),
        (
            "cad missing",
            |s| s.compare_and_delete("/st/no", Some("a"), None),
            Code::KeyNotFound,
            &["compareAndDeleteFail"],
        ),
        (
            "cad dir",
            |s| s.compare_and_delete("/st/d", Some("a"), None),
            Code::NotFile,
            &["compareAndDeleteSuccess"],
        ),
        (
            "cad fail",
            |s| s.compare_and_delete("/st/k", Some("a"), None),
            Code::TestFailed,
            &["compareAndDeleteSuccess"],
        ),
        (
            "cad through key",
            |s| s.compare_and_delete("/st/k/x", Some("a"), None),
            Code::NotDir,
            &["compareAndDeleteFail"],
        ),
    ];
    let counters = |s: &Store| {
        let v = serde_json::to_value(s.stats()).unwrap();
        v.as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    for (what, write, code, moved) in cases {
        let before = counters(&st);
        assert_eq!(write(&mut st).unwrap_err().code, code, "{what}");
        let after = counters(&st);
        let changed: Vec<&str> = after
            .iter()
            .filter(|(k, v)| before[*k] != **v)
            .map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(changed, moved, "{what}");
        assert!(moved.iter().all(|k| after[*k] == before[*k] + 1), "{what}");
    }
    assert_eq!(st.index(), 2, "no refusal used an index");
}
