//! The v2 keys API of etcd 2.x (`/v2/keys`), the choices in docs/api.md: etcd 2.3 semantics plus
//! `noValueOnSuccess`, checked against the real etcd 3.4 (`--enable-v2`).
//!
//! A request is validated in etcd's order (405, then every parameter, then the store), then
//! dispatched:
//!
//! | method | condition (first match)                       | operation            |
//! |--------|-----------------------------------------------|----------------------|
//! | GET    | `wait=true`                                   | watch                |
//! | GET    | otherwise (`quorum=true`: linearizable)       | get                  |
//! | PUT    | `prevExist=false`                             | create               |
//! | PUT    | `prevExist=true`, no prevValue/prevIndex      | update               |
//! | PUT    | `prevExist=true` or prevValue/prevIndex given | compare-and-swap     |
//! | PUT    | otherwise                                     | set                  |
//! | POST   |                                               | create in-order key  |
//! | DELETE | prevValue/prevIndex given                     | compare-and-delete   |
//! | DELETE | otherwise                                     | delete               |
//!
//! Every answer carries `X-Etcd-Index` and `X-Etcd-Cluster-Id`; successes also carry
//! `X-Raft-Index` and `X-Raft-Term`. Bodies end with a newline. Watches send their headers as
//! soon as they are registered and then the event(s), so a client knows the watch is set.

use std::convert::Infallible;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, header};
use axum::response::Response;
use bytes::Bytes;

use super::AppRef;
use super::params::{Form, read_form};
use super::response::{self, JSON};
use crate::clock::now_nanos;
use crate::command::Command;
use crate::error::{Code, EtcdError};
use crate::raft::state_machine::off_worker;
use crate::store::json::v2_event_json;
use crate::store::watch::Watcher;
use crate::store::{Action, OnCleared, path};

const ALLOW: &str = "HEAD,GET,PUT,POST,DELETE";

/// A parsed, validated `/v2/keys` request.
#[derive(Debug, Default)]
struct KeyRequest {
    key: String,
    value: String,
    dir: bool,
    prev_value: Option<String>,
    prev_index: u64,
    prev_exist: Option<bool>,
    wait: bool,
    wait_index: u64,
    recursive: bool,
    quorum: bool,
    stream: bool,
    refresh: bool,
    no_value: bool,
    ttl: Option<u64>,
}

/// `/v2/keys<url_key>`, the key already percent-decoded.
pub async fn keys(st: AppRef, url_key: &str, req: Request) -> Response {
    let method = req.method().clone();
    if ![
        Method::GET,
        Method::HEAD,
        Method::PUT,
        Method::POST,
        Method::DELETE,
    ]
    .contains(&method)
    {
        let mut r = response::text(405, "Method Not Allowed\n");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(ALLOW));
        return r;
    }
    let cluster = st.cluster_id_header();
    let with_cluster = |mut r: Response| {
        r.headers_mut()
            .insert(response::X_ETCD_CLUSTER_ID, cluster.clone());
        r
    };
    let key = path::clean(url_key);
    let authorization = req.headers().get(header::AUTHORIZATION).cloned();
    let form = match read_form(req).await {
        Ok(f) => f,
        Err(resp) => return with_cluster(resp),
    };
    let mut kr = match parse(&form, &method, key) {
        Ok(kr) => kr,
        Err(e) => return with_cluster(response::v2_error(&e)),
    };
    if let Err(e) = st.node.wait_ready().await {
        return with_cluster(response::v2_error(&e));
    }
    // Auth (etcd 2.3): after parsing, before the store; checks the key as sent.
    if let Err(r) =
        super::access::authorize_key(&st, authorization.as_ref(), url_key, &method, kr.recursive)
            .await
    {
        return with_cluster(r);
    }
    let resp = match method {
        Method::GET | Method::HEAD if kr.wait => watch(&st, &kr).await,
        Method::GET | Method::HEAD => get(&st, &kr).await,
        Method::DELETE => write(&st, delete_command(&mut kr), kr.no_value).await,
        Method::POST => {
            let cmd = Command::Create {
                key: std::mem::take(&mut kr.key),
                value: (!kr.dir).then(|| std::mem::take(&mut kr.value)),
                expire_at: expire_at(kr.ttl),
                unique: true,
            };
            write(&st, cmd, kr.no_value).await
        }
        _ => write(&st, put_command(&mut kr), kr.no_value).await,
    };
    with_cluster(resp)
}

fn get_bool(form: &Form, name: &str) -> Result<bool, EtcdError> {
    match form.get(name) {
        None => Ok(false),
        Some(v) => crate::go::parse_bool(v).ok_or_else(|| {
            EtcdError::new(
                Code::InvalidField,
                format!("invalid value for \"{name}\""),
                0,
            )
        }),
    }
}

fn get_u64(form: &Form, name: &str, code: Code) -> Result<u64, EtcdError> {
    match form.get(name) {
        None => Ok(0),
        Some(v) => crate::go::parse_uint(v)
            .ok_or_else(|| EtcdError::new(code, format!("invalid value for \"{name}\""), 0)),
    }
}

/// Validate every parameter, in etcd 2.3's order.
fn parse(form: &Form, method: &Method, key: String) -> Result<KeyRequest, EtcdError> {
    if let Some(bad) = form.malformed() {
        return Err(EtcdError::new(Code::InvalidForm, bad, 0));
    }
    let mut kr = KeyRequest {
        key,
        prev_index: get_u64(form, "prevIndex", Code::IndexNan)?,
        wait_index: get_u64(form, "waitIndex", Code::IndexNan)?,
        recursive: get_bool(form, "recursive")?,
        ..Default::default()
    };
    get_bool(form, "sorted")?; // listings are always sorted; the flag is still validated
    kr.wait = get_bool(form, "wait")?;
    kr.dir = get_bool(form, "dir")?;
    kr.quorum = get_bool(form, "quorum")? || get_bool(form, "consistent")?;
    kr.stream = get_bool(form, "stream")?;
    if kr.wait && method != Method::GET {
        return Err(EtcdError::new(
            Code::InvalidField,
            "\"wait\" can only be used with GET requests",
            0,
        ));
    }
    if let Some(pv) = form.get("prevValue") {
        if pv.is_empty() {
            return Err(EtcdError::new(
                Code::PrevValueRequired,
                "\"prevValue\" cannot be empty",
                0,
            ));
        }
        kr.prev_value = Some(pv.to_string());
    }
    kr.no_value = get_bool(form, "noValueOnSuccess")?;
    if !form.value("ttl").is_empty() {
        let ttl = crate::go::parse_uint(form.value("ttl"))
            .ok_or_else(|| EtcdError::new(Code::TtlNan, "invalid value for \"ttl\"", 0))?;
        kr.ttl = Some(ttl);
    }
    if form.has("prevExist") {
        let pe = crate::go::parse_bool(form.value("prevExist"))
            .ok_or_else(|| EtcdError::new(Code::InvalidField, "invalid value for prevExist", 0))?;
        kr.prev_exist = Some(pe);
    }
    if form.has("refresh") {
        kr.refresh = crate::go::parse_bool(form.value("refresh"))
            .ok_or_else(|| EtcdError::new(Code::InvalidField, "invalid value for refresh", 0))?;
        if kr.refresh {
            if !form.value("value").is_empty() {
                return Err(EtcdError::new(
                    Code::RefreshValue,
                    "A value was provided on a refresh",
                    0,
                ));
            }
            if kr.ttl.is_none() {
                return Err(EtcdError::new(
                    Code::RefreshTtlRequired,
                    "No TTL value set",
                    0,
                ));
            }
        }
    }
    kr.value = form.value("value").to_string();
    Ok(kr)
}

fn expire_at(ttl: Option<u64>) -> Option<i64> {
    ttl.map(|t| {
        now_nanos().saturating_add((t.min(i64::MAX as u64 / 1_000_000_000) as i64) * 1_000_000_000)
    })
}

/// The write a PUT asks for; the key, value and prevValue move into it.
fn put_command(kr: &mut KeyRequest) -> Command {
    let key = std::mem::take(&mut kr.key);
    let value = std::mem::take(&mut kr.value);
    let expire_at = expire_at(kr.ttl);
    let has_compare = kr.prev_index > 0 || kr.prev_value.is_some();
    match kr.prev_exist {
        Some(false) => Command::Create {
            key,
            value: (!kr.dir).then_some(value),
            expire_at,
            unique: false,
        },
        Some(true) if !has_compare => Command::Update {
            key,
            value,
            expire_at,
            refresh: kr.refresh,
        },
        _ if has_compare || kr.prev_exist == Some(true) => Command::CompareAndSwap {
            key,
            prev_value: kr.prev_value.take(),
            prev_index: Some(kr.prev_index).filter(|&i| i > 0),
            value,
            expire_at,
            refresh: kr.refresh,
        },
        _ => Command::Set {
            key,
            value: (!kr.dir).then_some(value),
            expire_at,
            refresh: kr.refresh,
        },
    }
}

/// The delete a DELETE asks for; the key and prevValue move into it.
fn delete_command(kr: &mut KeyRequest) -> Command {
    if kr.prev_index > 0 || kr.prev_value.is_some() {
        Command::CompareAndDelete {
            key: std::mem::take(&mut kr.key),
            prev_value: kr.prev_value.take(),
            prev_index: Some(kr.prev_index).filter(|&i| i > 0),
        }
    } else {
        Command::Delete {
            key: std::mem::take(&mut kr.key),
            dir: kr.dir,
            recursive: kr.recursive,
        }
    }
}

fn raft_headers(r: &mut Response, etcd_index: u64, raft_index: u64, raft_term: u64) {
    let h = r.headers_mut();
    h.insert(response::X_ETCD_INDEX, response::number(etcd_index));
    h.insert(response::X_RAFT_INDEX, response::number(raft_index));
    h.insert(response::X_RAFT_TERM, response::number(raft_term));
}

async fn get(st: &AppRef, kr: &KeyRequest) -> Response {
    if kr.quorum
        && let Err(e) = st.node.linearizable_read().await
    {
        return response::v2_error(&e);
    }
    let (raft_index, raft_term) = st.node.raft_position();
    // The view is copied under the lock and rendered after it is released; a recursive
    // listing (possibly the whole store) does both off the runtime's workers.
    let render = || {
        let (res, index) = {
            let d = st.node.replica.read();
            (
                d.state.store.get(&kr.key, kr.recursive, false),
                d.state.store.index(),
            )
        };
        res.map(|view| {
            (
                v2_event_json(Action::Get, &view, None, now_nanos(), false),
                index,
            )
        })
    };
    let res = if kr.recursive {
        off_worker(render)
    } else {
        render()
    };
    match res {
        Ok((body, index)) => {
            let mut r = response::json(200, body);
            raft_headers(&mut r, index, raft_index, raft_term);
            r
        }
        Err(e) => response::v2_error(&e),
    }
}

async fn write(st: &AppRef, cmd: Command, no_value: bool) -> Response {
    match st.node.propose(cmd).await {
        Ok(w) => match w.result.into_key() {
            Ok(Some(ev)) => {
                let created = ev.action == Action::Create
                    || (ev.action == Action::Set && ev.prev_node.is_none());
                let hide = no_value
                    && matches!(
                        ev.action,
                        Action::Set | Action::CompareAndSwap | Action::Create | Action::Update
                    );
                let body = v2_event_json(ev.action, &ev.node, ev.prev_node.as_ref(), ev.at, hide);
                let mut r = response::json(if created { 201 } else { 200 }, body);
                raft_headers(&mut r, ev.index(), w.raft_index, w.raft_term);
                r
            }
            Ok(None) => response::empty(200),
            Err(e) => response::v2_error(&e),
        },
        Err(e) => response::v2_error(&e),
    }
}

/// Removes a watcher when its response goes away (sent, or the client left).
struct WatchGuard {
    st: AppRef,
    watcher: Watcher,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.st
            .node
            .replica
            .read()
            .state
            .store
            .unwatch(&self.watcher);
    }
}

async fn watch(st: &AppRef, kr: &KeyRequest) -> Response {
    let since = Some(kr.wait_index).filter(|&i| i > 0);
    let watcher = {
        let d = st.node.replica.read();
        d.state.store.watch(
            &kr.key,
            kr.recursive,
            kr.stream,
            since,
            false,
            OnCleared::Error,
        )
    };
    let watcher = match watcher {
        Ok(w) => w,
        Err(e) => return response::v2_error(&e),
    };
    let (raft_index, raft_term) = st.node.raft_position();
    let start_index = watcher.start_index;
    let stream = kr.stream;
    let guard = WatchGuard {
        st: st.clone(),
        watcher,
    };
    // The headers go out now; each event is one JSON line; a one-shot watch ends after it.
    let events = event_stream(guard, stream);
    let mut r = Response::new(Body::from_stream(events));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON));
    raft_headers(&mut r, start_index, raft_index, raft_term);
    r
}

/// The body of a watch response: the events as they come, as v2 JSON lines; a one-shot
/// watch ends after its first event. Dropping the body (client gone) drops the guard.
fn event_stream(
    guard: WatchGuard,
    stream: bool,
) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> + Send {
    futures_util::stream::unfold((guard, false), move |(mut guard, done)| async move {
        if done {
            return None;
        }
        let ev = guard.watcher.rx.recv().await?;
        let line = v2_event_json(ev.action, &ev.node, ev.prev_node.as_ref(), ev.at, false);
        Some((Ok(Bytes::from(line)), (guard, !stream)))
    })
}
