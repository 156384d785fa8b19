//! Properties of the parsers: key paths (`store::path::clean`), forms and percent-decoding
//! (`api::params`), the v1/v2 number and TTL parsers, and the two binary decoders fed from
//! disk or the network (`raft::codec::decode_entry`, `StoreSnapshot::decode`).
//!
//! Each parser is checked against a reference written here (Go's rules, stated plainly), for
//! round trips where there is an encoder, and for never panicking on arbitrary input.
//!
//! Runs 256 cases per property by default; for a longer run:
//! `PROPTEST_CASES=10000 cargo test --test parsing_props`.

use etcd::api::params::{Form, decode_key, parse_ttl_v1};
use etcd::command::Command;
use etcd::error::Code;
use etcd::go::{parse_bool, parse_int as parse_go_int, parse_uint as parse_index};
use etcd::raft::codec::{decode_entry, encode_entry, entry_log_id};
use etcd::raft::types::{Batch, LogId, TypeConfig};
use etcd::store::path::clean;
use etcd::store::{Store, StoreSnapshot};
use openraft::{CommittedLeaderId, Entry, EntryPayload};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------
// key paths

/// Go's `path.Clean`, from its documented rules: collapse repeated slashes, drop `.`
/// elements, drop each `..` with the element before it, drop `..` at the start of a rooted
/// path; the empty result is `.` (or `/` when rooted).
fn go_clean(p: &str) -> String {
    if p.is_empty() {
        return ".".into();
    }
    let rooted = p.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    // Leading `..`s a relative path keeps.
    let mut kept_up = 0;
    for el in p.split('/') {
        match el {
            "" | "." => {}
            ".." => {
                if out.len() > kept_up {
                    out.pop();
                } else if !rooted {
                    out.push("..");
                    kept_up += 1;
                }
            }
            el => out.push(el),
        }
    }
    let body = out.join("/");
    match (rooted, body.is_empty()) {
        (true, _) => format!("/{body}"),
        (false, true) => ".".into(),
        (false, false) => body,
    }
}

/// Paths made of the elements that matter to cleaning, joined by one or more slashes.
fn messy_path() -> impl Strategy<Value = String> {
    let element = prop_oneof![
        Just(""),
        Just("."),
        Just(".."),
        Just("..."),
        Just(".a"),
        Just("a."),
        Just("a"),
        Just("b"),
        Just("_h"),
        Just("é"),
        Just("a b"),
    ];
    (
        any::<bool>(),
        prop::collection::vec((element, 1..3usize), 0..8),
        any::<bool>(),
    )
        .prop_map(|(lead, parts, trail)| {
            let mut s = String::new();
            if lead {
                s.push('/');
            }
            for (i, (el, slashes)) in parts.iter().enumerate() {
                if i > 0 {
                    s.push_str(&"/".repeat(*slashes));
                }
                s.push_str(el);
            }
            if trail {
                s.push('/');
            }
            s
        })
}

fn any_path() -> impl Strategy<Value = String> {
    prop_oneof![messy_path(), any::<String>(), "[/.a]{0,12}"]
}

proptest! {
    #![proptest_config(config())]

    /// etcd cleans a key with `path.Clean(path.Join("/", key))`.
    #[test]
    fn clean_is_gos_clean_of_the_rooted_key(key in any_path()) {
        let want = if key.is_empty() { "/".to_string() } else { go_clean(&format!("/{key}")) };
        prop_assert_eq!(clean(&key), want);
    }

    #[test]
    fn clean_is_idempotent_and_canonical(key in any_path()) {
        let c = clean(&key);
        prop_assert_eq!(clean(&c), c.clone());
        prop_assert!(c.starts_with('/'));
        prop_assert!(!c.contains("//"), "{c:?}");
        prop_assert!(c == "/" || !c.ends_with('/'), "{c:?}");
        prop_assert!(c.split('/').skip(1).all(|el| el != "." && el != ".."), "{c:?}");
        // A leading slash, or one more `/.` at the end, changes nothing.
        prop_assert_eq!(clean(&format!("/{key}")), c.clone());
        prop_assert_eq!(clean(&format!("{key}/.")), c);
    }

    /// Elements without dots or slashes come through in order.
    #[test]
    fn plain_elements_survive_cleaning(
        els in prop::collection::vec("[a-z_é0-9 ]{1,4}", 0..6),
        slashes in prop::collection::vec(1..4usize, 6),
    ) {
        let mut key = String::new();
        for (el, n) in els.iter().zip(&slashes) {
            key.push_str(&"/".repeat(*n));
            key.push_str(el);
        }
        let want = if els.is_empty() { "/".to_string() } else { format!("/{}", els.join("/")) };
        prop_assert_eq!(clean(&key), want);
    }
}

// ---------------------------------------------------------------------------------------
// forms and percent-decoding

/// Percent-encode every byte that is not unreserved, in upper or lower case hex; a space
/// becomes `+` or `%20`.
fn encode_component(s: &str, upper: bool, plus: bool) -> String {
    let mut out = String::new();
    for &b in s.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' if plus => out.push('+'),
            b if upper => out.push_str(&format!("%{b:02X}")),
            b => out.push_str(&format!("%{b:02x}")),
        }
    }
    out
}

fn encode_pairs(pairs: &[(String, String)], upper: bool, plus: bool) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                encode_component(k, upper, plus),
                encode_component(v, upper, plus)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Field names from a small set, so that repeats happen; any values.
fn pairs() -> impl Strategy<Value = Vec<(String, String)>> {
    let name = prop_oneof![
        Just("value".to_string()),
        Just("ttl".to_string()),
        Just("prevValue".to_string()),
        Just("a b".to_string()),
        Just("é;&=".to_string()),
        any::<String>(),
    ];
    prop::collection::vec((name, any::<String>()), 0..6)
}

/// Go's `url.ParseQuery` error for one source: a `;` anywhere wins, else the first `%` not
/// followed by two hex digits.
fn go_query_error(s: &[u8]) -> Option<&'static str> {
    if s.contains(&b';') {
        return Some("semicolon");
    }
    let bad = s.iter().enumerate().any(|(i, &b)| {
        b == b'%'
            && !(s.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && s.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
    });
    bad.then_some("escape")
}

fn kind(reason: Option<String>) -> Option<&'static str> {
    reason.map(|r| {
        if r == "invalid semicolon separator in query" {
            "semicolon"
        } else {
            assert!(r.starts_with("invalid URL escape \"%"), "{r}");
            "escape"
        }
    })
}

/// Bytes that look like forms: names, `=`, `&`, `;`, `%` with and without hex, `+`.
fn formish() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"value".to_vec()),
        Just(b"=".to_vec()),
        Just(b"&".to_vec()),
        Just(b";".to_vec()),
        Just(b"%".to_vec()),
        Just(b"%4".to_vec()),
        Just(b"%41".to_vec()),
        Just(b"%e9".to_vec()),
        Just(b"%zz".to_vec()),
        Just(b"+".to_vec()),
        Just(vec![0xff]),
        Just("é".as_bytes().to_vec()),
        any::<u8>().prop_map(|b| vec![b]),
    ];
    prop::collection::vec(piece, 0..12).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn encoded_forms_decode_to_what_was_encoded(
        body in pairs(),
        query in pairs(),
        upper in any::<bool>(),
        plus in any::<bool>(),
    ) {
        let b = encode_pairs(&body, upper, plus);
        let q = encode_pairs(&query, upper, plus);
        let f = Form::parse(b.as_bytes(), Some(&q));
        prop_assert_eq!(f.malformed(), None);
        // Go's FormValue: the body's first value, else the query's first value.
        for (name, _) in body.iter().chain(&query) {
            let want = body
                .iter()
                .chain(&query)
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str());
            prop_assert_eq!(f.get(name), want);
            prop_assert!(f.has(name));
        }
        prop_assert!(!f.has("surely-absent"));
        prop_assert_eq!(f.value("surely-absent"), "");
    }

    /// Any bytes: no panic, and refused exactly when Go refuses, for Go's reason.
    #[test]
    fn any_form_is_parsed_or_refused_like_go(
        body in prop_oneof![formish(), prop::collection::vec(any::<u8>(), 0..40)],
        query in prop::option::of(formish().prop_map(|b| String::from_utf8_lossy(&b).into_owned())),
    ) {
        let f = Form::parse(&body, query.as_deref());
        let want = go_query_error(&body)
            .or_else(|| query.as_deref().and_then(|q| go_query_error(q.as_bytes())));
        prop_assert_eq!(kind(f.malformed()), want);
        let _ = f.get("value");
    }

    #[test]
    fn encoded_keys_decode_to_the_key(key in any::<String>(), upper in any::<bool>()) {
        let all = encode_component(&key, upper, false);
        prop_assert_eq!(decode_key(&all).unwrap(), key.clone());
        // The way a Location header writes a path back.
        let partly = percent_encoding::utf8_percent_encode(&key, etcd::api::params::PATH_ESCAPE)
            .to_string();
        prop_assert_eq!(decode_key(&partly).unwrap(), key.clone());
        // A key without `%` is itself.
        if !key.contains('%') {
            prop_assert_eq!(decode_key(&key).unwrap(), key);
        }
    }

    /// Any key: no panic; refused (209) exactly when an escape is bad or the bytes it makes
    /// are not UTF-8.
    #[test]
    fn any_key_is_decoded_or_refused(
        raw in prop_oneof![
            any::<String>(),
            formish().prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        ],
    ) {
        let bytes = raw.as_bytes();
        let mut decoded = Vec::new();
        let mut ok = true;
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' {
                match bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok().filter(|_| !h.starts_with('+')))
                {
                    Some(b) => decoded.push(b),
                    None => {
                        ok = false;
                        break;
                    }
                }
                i += 3;
            } else {
                decoded.push(bytes[i]);
                i += 1;
            }
        }
        let want = if ok { String::from_utf8(decoded).ok() } else { None };
        match decode_key(&raw) {
            Ok(k) => prop_assert_eq!(Some(k), want),
            Err(e) => {
                prop_assert_eq!(e.code, Code::InvalidField);
                prop_assert_eq!(None, want);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// numbers: v1 ttl (Go Atoi), v2 ttl and indexes (Go ParseUint), booleans (Go ParseBool)

/// Strings that look like numbers, and some that almost do.
fn numberish() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| format!("+{n}")),
        any::<u64>().prop_map(|n| format!("-{n}")),
        any::<u128>().prop_map(|n| n.to_string()),
        "[-+ 0-9_.xe]{0,6}",
        any::<String>(),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn integers_parse_like_go_atoi(s in numberish()) {
        let digits = s.strip_prefix(['+', '-']).unwrap_or(&s);
        let shaped = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
        let want = if shaped { s.parse::<i128>().ok().and_then(|n| i64::try_from(n).ok()) } else { None };
        prop_assert_eq!(parse_go_int(&s), want);
        let ttl = if s.is_empty() { Some(None) } else { want.map(Some) };
        prop_assert_eq!(parse_ttl_v1(&s), ttl);
    }

    #[test]
    fn indexes_parse_like_go_parseuint(s in numberish()) {
        let shaped = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let want = if shaped { s.parse::<u128>().ok().and_then(|n| u64::try_from(n).ok()) } else { None };
        prop_assert_eq!(parse_index(&s), want);
    }

    #[test]
    fn numbers_round_trip(n in any::<i64>(), u in any::<u64>()) {
        prop_assert_eq!(parse_go_int(&n.to_string()), Some(n));
        prop_assert_eq!(parse_ttl_v1(&n.to_string()), Some(Some(n)));
        prop_assert_eq!(parse_index(&u.to_string()), Some(u));
        prop_assert_eq!(parse_index(&format!("{u:030}")), Some(u), "leading zeros");
    }

    #[test]
    fn booleans_parse_like_go_parsebool(s in prop_oneof![
        "[tTfF01]|true|false|TRUE|FALSE|True|False|tRUE|yes|no|",
        any::<String>(),
    ]) {
        let want = match s.as_str() {
            "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
            "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
            _ => None,
        };
        prop_assert_eq!(parse_bool(&s), want);
    }
}

// ---------------------------------------------------------------------------------------
// log entries

fn opt_string() -> impl Strategy<Value = Option<String>> {
    prop::option::of(any::<String>())
}

fn command() -> impl Strategy<Value = Command> {
    let at = prop::option::of(any::<i64>());
    prop_oneof![
        (any::<String>(), opt_string(), at.clone(), any::<bool>()).prop_map(
            |(key, value, expire_at, refresh)| Command::Set {
                key,
                value,
                expire_at,
                refresh
            }
        ),
        (any::<String>(), opt_string(), at.clone(), any::<bool>()).prop_map(
            |(key, value, expire_at, unique)| Command::Create {
                key,
                value,
                expire_at,
                unique
            }
        ),
        (any::<String>(), any::<String>(), at.clone(), any::<bool>()).prop_map(
            |(key, value, expire_at, refresh)| Command::Update {
                key,
                value,
                expire_at,
                refresh
            }
        ),
        (
            any::<String>(),
            opt_string(),
            prop::option::of(any::<u64>()),
            any::<String>(),
            at,
            any::<bool>()
        )
            .prop_map(|(key, prev_value, prev_index, value, expire_at, refresh)| {
                Command::CompareAndSwap {
                    key,
                    prev_value,
                    prev_index,
                    value,
                    expire_at,
                    refresh,
                }
            }),
        (any::<String>(), any::<bool>(), any::<bool>()).prop_map(|(key, dir, recursive)| {
            Command::Delete {
                key,
                dir,
                recursive,
            }
        }),
        (
            any::<String>(),
            opt_string(),
            prop::option::of(any::<u64>())
        )
            .prop_map(|(key, prev_value, prev_index)| Command::CompareAndDelete {
                key,
                prev_value,
                prev_index
            }),
        any::<i64>().prop_map(|now| Command::Expire { now }),
        (any::<String>(), any::<String>(), any::<String>()).prop_map(
            |(name, peer_url, client_url)| Command::Register {
                name,
                peer_url,
                client_url
            }
        ),
        (any::<String>(), prop::option::of(any::<u64>()))
            .prop_map(|(name, id)| Command::Unregister { name, id }),
        prop_oneof![
            Just(r#"{"base":3,"op":"Enable"}"#),
            Just(r#"{"base":0,"op":"Disable"}"#),
        ]
        .prop_map(|json| Command::Auth(serde_json::from_str(json).unwrap())),
    ]
}

fn entry() -> impl Strategy<Value = Entry<TypeConfig>> {
    let log_id = (any::<u64>(), any::<u64>(), any::<u64>())
        .prop_map(|(term, node, index)| LogId::new(CommittedLeaderId::new(term, node), index));
    let payload = prop_oneof![
        1 => Just(EntryPayload::Blank),
        4 => (any::<i64>(), prop::collection::vec(command(), 0..6)).prop_map(|(at, cmds)| {
            EntryPayload::Normal(Batch { at, cmds: cmds.into() })
        }),
    ];
    (log_id, payload).prop_map(|(log_id, payload)| Entry { log_id, payload })
}

fn encoded(e: &Entry<TypeConfig>) -> Vec<u8> {
    let mut buf = Vec::new();
    encode_entry(&mut buf, e);
    buf
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn entries_round_trip(e in entry()) {
        let buf = encoded(&e);
        prop_assert_eq!(decode_entry(&buf).unwrap(), e.clone());
        prop_assert_eq!(entry_log_id(&buf).unwrap(), e.log_id);
    }

    /// A cut, lengthened or corrupted entry is an error or some entry, never a panic; a cut
    /// or lengthened one is always an error.
    #[test]
    fn damaged_entries_never_panic(
        e in entry(),
        cut in any::<prop::sample::Index>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 1..=255u8), 1..4),
        extra in prop::collection::vec(any::<u8>(), 1..4),
    ) {
        let buf = encoded(&e);
        let at = cut.index(buf.len());
        prop_assert!(decode_entry(&buf[..at]).is_err());
        let mut longer = buf.clone();
        longer.extend_from_slice(&extra);
        prop_assert!(decode_entry(&longer).is_err());
        let mut bad = buf.clone();
        for (i, x) in flips {
            let i = i.index(bad.len());
            bad[i] ^= x;
        }
        let _ = decode_entry(&bad);
        let _ = entry_log_id(&bad);
    }

    #[test]
    fn any_bytes_decode_to_an_error_or_an_entry(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(e) = decode_entry(&bytes) {
            // What decodes encodes back to the same bytes, except where a field has more
            // than one spelling (an over-long varint); decoding that again gives the same.
            prop_assert_eq!(decode_entry(&encoded(&e)).unwrap(), e);
        }
        let _ = entry_log_id(&bytes);
    }
}

// ---------------------------------------------------------------------------------------
// store snapshots

/// A name for one path element: anything but empty, `.`, `..` or with a `/`.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-c_]{1,3}",
        any::<String>().prop_filter("a plain element", |s| {
            !s.is_empty() && s != "." && s != ".." && !s.contains('/')
        }),
    ]
}

/// One write of [`build`]: the path elements, the value (None: a directory), a TTL in
/// seconds, and which write (0: recursive delete, 1: in-order create, else set).
type Write = (Vec<String>, Option<String>, Option<i64>, u8);

fn writes() -> impl Strategy<Value = Vec<Write>> {
    let write = (
        prop::collection::vec(name(), 1..4),
        prop::option::of(any::<String>()),
        prop::option::of(0..1000i64),
        0..10u8,
    );
    prop::collection::vec(write, 0..30)
}

/// A store made by the writes (those that fail change nothing).
fn build(writes: &[Write]) -> Store {
    const T0: i64 = 1_900_000_000_000_000_000;
    let mut st = Store::new(8);
    for (els, value, ttl, what) in writes {
        let key = format!("/{}", els.join("/"));
        let at = ttl.map(|s| T0 + s * 1_000_000_000);
        let _ = match what {
            0 => st.delete(&key, true, true),
            1 => st.create(&key, value.clone(), at, true),
            _ => st.set(&key, value.clone(), at, false),
        };
    }
    st
}

fn encode_snapshot(s: &StoreSnapshot) -> Vec<u8> {
    let mut out = Vec::new();
    s.encode(&mut out).unwrap();
    out
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn stores_round_trip_through_snapshots(w in writes()) {
        let st = build(&w);
        let snap = st.snapshot();
        let bytes = encode_snapshot(&snap);
        let back = StoreSnapshot::decode(&mut bytes.as_slice()).unwrap();
        prop_assert_eq!(&back.root, &snap.root);
        prop_assert_eq!(back.index, snap.index);
        prop_assert_eq!(&back.history, &snap.history);
        prop_assert_eq!(&back.stats, &snap.stats);
        let mut restored = Store::new(8);
        restored.restore(back);
        prop_assert_eq!(restored.get("/", true, true), st.get("/", true, true));
        prop_assert_eq!(restored.next_expiry(), st.next_expiry());
        prop_assert_eq!(encode_snapshot(&restored.snapshot()), bytes);
    }

    #[test]
    fn damaged_snapshots_never_panic(
        w in writes(),
        cut in any::<prop::sample::Index>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 1..=255u8), 1..4),
    ) {
        let bytes = encode_snapshot(&build(&w).snapshot());
        let at = cut.index(bytes.len());
        prop_assert!(StoreSnapshot::decode(&mut &bytes[..at]).is_err());
        let mut bad = bytes.clone();
        for (i, x) in flips {
            let i = i.index(bad.len());
            bad[i] ^= x;
        }
        if let Ok(snap) = StoreSnapshot::decode(&mut bad.as_slice()) {
            // Whatever decodes can be restored and used.
            let mut s = Store::new(8);
            s.restore(snap);
            let _ = s.get("/", true, true);
            let _ = s.expire(i64::MAX);
        }
    }

    #[test]
    fn any_bytes_are_a_snapshot_or_an_error(
        with_header in any::<bool>(),
        tail in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        let mut bytes = if with_header { b"etcdsnap\x01".to_vec() } else { Vec::new() };
        bytes.extend_from_slice(&tail);
        if let Ok(snap) = StoreSnapshot::decode(&mut bytes.as_slice()) {
            let mut s = Store::new(8);
            s.restore(snap);
            let _ = s.get("/", true, true);
        }
    }
}
