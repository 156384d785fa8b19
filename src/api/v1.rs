//! The v1 API of etcd v0.1.2 (`/v1/keys`, `/v1/watch`) as a view of the v2 store.
//!
//! The v1 request forms map onto store operations (the choices in docs/api.md):
//!
//! | v1 request                                 | store operation                   |
//! |--------------------------------------------|-----------------------------------|
//! | `GET /v1/keys/k`                           | get (directory: its children)     |
//! | `POST`/`PUT` `value=v [ttl=n]`             | set                               |
//! | `... prevValue=p` (p non-empty)            | compare-and-swap on the value     |
//! | `... prevValue=` (present, empty)          | create (must not exist)           |
//! | `... ttl=n` with n <= 0                    | delete (the key expires at once)  |
//! | `DELETE /v1/keys/k`                        | delete a key (never a directory)  |
//! | `GET /v1/watch/p`, `POST ... index=n`      | recursive watch (prefix on segments), from history when `index` is held |
//!
//! Errors are re-phrased the way v0.1 phrased them: v0.1 messages, causes like `get: /k`,
//! `set: /k`, `delete: /k`, `TestAndSet: one!=two`; a set into or through a key and a set
//! of the root are 102; a delete of a directory is 100. The store's answer decides the
//! outcome; the v1 layer only renders it.

use axum::extract::Request;
use axum::http::Method;
use axum::response::Response;

use super::params::{self, read_form};
use super::response::{self, json, v1_error_code};
use super::{AppRef, ready_or_error};
use crate::clock::now_nanos;
use crate::command::Command;
use crate::error::{Code, EtcdError};
use crate::store::json::{v1_event_json, v1_get_json};
use crate::store::{OnCleared, path};

/// First path segments a v1 client may not write to.
const KEYWORDS: [&str; 2] = ["_etcd", "ephemeralNodes"];

/// `/v1/keys/<url_key>`, the key already percent-decoded.
pub async fn keys(st: AppRef, url_key: &str, req: Request) -> Response {
    let method = req.method().clone();
    if ![Method::GET, Method::POST, Method::PUT, Method::DELETE].contains(&method) {
        return response::empty(405);
    }
    let key = path::clean(url_key);
    if let Err(resp) = ready_or_error(&st).await {
        return resp;
    }
    match method {
        Method::GET => get(&st, &key),
        Method::DELETE => delete(&st, &key).await,
        _ => match read_form(req).await {
            Ok(form) => set(&st, &key, url_key, &form).await,
            Err(resp) => resp,
        },
    }
}

fn get(st: &AppRef, key: &str) -> Response {
    let now = now_nanos();
    // Copy under the lock, render after releasing it.
    let (res, index) = {
        let d = st.node.replica.read();
        (d.state.store.get(key, false, true), d.state.store.index())
    };
    match res {
        Ok(view) => json(200, v1_get_json(&view, index, now)),
        // A missing key and a path through a key are both "not found" in v0.1.
        Err(_) => v1_error_code(Code::KeyNotFound, &format!("get: {key}")),
    }
}

async fn set(st: &AppRef, key: &str, url_key: &str, form: &params::Form) -> Response {
    if path::segments(key)
        .next()
        .is_some_and(|first| KEYWORDS.contains(&first))
    {
        return v1_error_code(Code::KeywordPrefix, "Set");
    }
    if let Some(bad) = form.malformed() {
        return v1_error_code(Code::InvalidForm, &bad);
    }
    let value = form.value("value");
    if value.is_empty() {
        return v1_error_code(Code::ValueRequired, "Set");
    }
    let Some(ttl) = params::parse_ttl_v1(form.value("ttl")) else {
        return v1_error_code(Code::TtlNan, "Set");
    };
    let now = now_nanos();
    if ttl.is_some_and(|t| t <= 0) {
        // Already expired when it arrives: v0.1 deletes the key instead.
        return delete(st, key).await;
    }
    let expire_at = ttl.map(|t| now.saturating_add(t.saturating_mul(1_000_000_000)));
    let (key_s, value_s) = (key.to_string(), value.to_string());
    let (cmd, kind) = match form.get("prevValue") {
        None => (
            Command::Set {
                key: key_s,
                value: Some(value_s),
                expire_at,
                refresh: false,
            },
            SetKind::Set,
        ),
        Some("") => (
            Command::Create {
                key: key_s,
                value: Some(value_s),
                expire_at,
                unique: false,
            },
            SetKind::CreateOnly,
        ),
        Some(prev) => (
            Command::CompareAndSwap {
                key: key_s,
                prev_value: Some(prev.to_string()),
                prev_index: None,
                value: value_s,
                expire_at,
                refresh: false,
            },
            SetKind::TestAndSet {
                prev,
                url_key: url_key.trim_start_matches('/'),
            },
        ),
    };
    write(st, cmd, |e| set_error(&kind, key, e)).await
}

/// Which v1 set form a request was, for phrasing its errors as v0.1 did.
enum SetKind<'a> {
    Set,
    /// `prevValue=` present and empty: the key must not exist yet.
    CreateOnly,
    /// `prevValue=<prev>`: TestAndSet; `url_key` is the key as the URL spelled it.
    TestAndSet {
        prev: &'a str,
        url_key: &'a str,
    },
}

/// A failed v1 set, worded as v0.1 worded it: 101 with `TestAndSet: <current>!=<given>`,
/// 100 for a TestAndSet of a missing key, and 102 (`set: <key>`) for everything that runs into
/// a directory, through a key, or at the root.
fn set_error(kind: &SetKind<'_>, key: &str, e: &EtcdError) -> Response {
    let current = e.current.as_deref().unwrap_or_default();
    match (kind, e.code) {
        (SetKind::CreateOnly, Code::NodeExist) => {
            v1_error_code(Code::TestFailed, &format!("TestAndSet: {current}!="))
        }
        (SetKind::TestAndSet { prev, url_key }, Code::KeyNotFound | Code::NotDir) => v1_error_code(
            Code::KeyNotFound,
            &format!("TestAndSet: key not found and previousValue is not empty {url_key}:{prev} "),
        ),
        (SetKind::TestAndSet { prev, .. }, Code::TestFailed) => {
            v1_error_code(Code::TestFailed, &format!("TestAndSet: {current}!={prev}"))
        }
        _ => v1_error_code(Code::NotFile, &format!("set: {key}")),
    }
}

async fn delete(st: &AppRef, key: &str) -> Response {
    let cmd = Command::Delete {
        key: key.to_string(),
        dir: false,
        recursive: false,
    };
    write(st, cmd, |_| {
        v1_error_code(Code::KeyNotFound, &format!("delete: {key}"))
    })
    .await
}

/// Propose a write and render its outcome; `store_error` renders a failure the store
/// reported (Raft failures are rendered as they are). The remaining TTL is rendered as of the
/// write (the time in its log entry, a little after the request computed the expiry), so
/// `ttl=5` answers 4 as in v0.1, and a watcher or a history replay sees the same body.
async fn write(
    st: &AppRef,
    cmd: Command,
    store_error: impl Fn(&EtcdError) -> Response,
) -> Response {
    match st.node.propose(cmd).await {
        Ok(w) => match w.result.into_key() {
            Ok(Some(ev)) => json(200, v1_event_json(&ev, ev.at)),
            Ok(None) => response::empty(200),
            Err(e) => store_error(&e),
        },
        Err(e) => v1_error_code(e.code, &e.cause),
    }
}

/// Removes a watcher when the waiting request goes away (answered or abandoned).
struct WatchGuard<'a> {
    st: &'a AppRef,
    watcher: Option<crate::store::watch::Watcher>,
}

impl Drop for WatchGuard<'_> {
    fn drop(&mut self) {
        if let Some(w) = &self.watcher {
            self.st.node.replica.read().state.store.unwatch(w);
        }
    }
}

/// `/v1/watch/<key>`, the key already percent-decoded.
pub async fn watch(st: AppRef, url_key: &str, req: Request) -> Response {
    let method = req.method().clone();
    if method != Method::GET && method != Method::POST {
        return response::empty(405);
    }
    let key = path::clean(url_key);
    let since = if method == Method::POST {
        let form = match read_form(req).await {
            Ok(f) => f,
            Err(resp) => return resp,
        };
        if let Some(bad) = form.malformed() {
            return v1_error_code(Code::InvalidForm, &bad);
        }
        match crate::go::parse_uint(form.value("index")) {
            Some(i) => Some(i),
            None => return v1_error_code(Code::IndexNan, "Watch From Index"),
        }
    } else {
        None
    };
    if let Err(resp) = ready_or_error(&st).await {
        return resp;
    }
    let watcher = {
        let d = st.node.replica.read();
        d.state
            .store
            .watch(&key, true, false, since, true, OnCleared::WaitForNext)
    };
    let watcher = match watcher {
        Ok(w) => w,
        Err(e) => return v1_error_code(e.code, &e.cause),
    };
    let mut guard = WatchGuard {
        st: &st,
        watcher: Some(watcher),
    };
    let ev = guard.watcher.as_mut().expect("set above").rx.recv().await;
    match ev {
        Some(ev) => json(200, v1_event_json(&ev, ev.at)),
        None => v1_error_code(Code::WatcherCleared, &key),
    }
}
