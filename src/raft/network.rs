//! Raft RPCs to peers: HTTP to the peer port (`POST /raft/append`, `/raft/vote`,
//! `/raft/snapshot`, served by `api::peer`), with JSON bodies, except that AppendEntries and
//! forwarded writes go in a binary form (`codec`) to a peer whose answers said it reads it
//! (every peer of this release; one of an earlier release is sent JSON). Answers are JSON.
//!
//! Every call is bounded by openraft's per-RPC deadline (`RPCOption::hard_ttl`), so a peer
//! that answers slowly or not at all costs a timeout, never a stuck replication task. A peer
//! we cannot connect to is reported as `Unreachable`, which makes openraft back off before
//! trying it again. The remote side answers with the serialized `Result` of its openraft
//! call, so a remote Raft error comes back as itself.
//!
//! [`PeerClient`] is also what the API uses to forward requests to the leader.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::HeaderName;
use hyper_util::client::legacy::Client;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::log_store::Durable;
use super::types::{Member, NodeId, TypeConfig};
use crate::instruments::PeerStats;

/// Why a call to a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("cannot connect to {0}: {1}")]
    Connect(String, String),
    /// The connection was closed before an answer came (the peer may or may not have
    /// received the request).
    #[error("{0}: connection closed before an answer: {1}")]
    Closed(String, String),
    #[error("{0}: no answer within {1:?}")]
    Timeout(String, Duration),
    #[error("{0}: {1}")]
    Other(String, String),
}

/// What peers compare before they talk Raft: the wire protocol of this implementation.
/// Version 2: `/raft/propose` carries a list of commands (forwarded writes are batched).
pub const PEER_VERSION: &str = "etcd-rs/2";

/// The content type of a binary peer body (`raft::codec`): AppendEntries and forwarded
/// writes, which carry commands and are most of the peer traffic.
pub const BINARY: &str = "application/x-etcd-rs-raft";
/// The header with which a peer's answers say it reads binary bodies. A peer of an earlier
/// release does not send it and is sent JSON.
pub const READS_BINARY: HeaderName = HeaderName::from_static("x-etcd-rs-reads-binary");

/// Encodes a request in the binary form (`raft::codec`).
pub type Encode<Req> = fn(&mut Vec<u8>, &Req);

/// An HTTP client for peer ports, shared by every connection (it pools connections).
#[derive(Clone)]
pub struct PeerClient {
    http: Client<crate::http_client::Connector, Full<Bytes>>,
    /// Peer URLs that said they read binary bodies, in their last answer to a call that has a
    /// binary form. Until a peer has answered one it is sent JSON, which every release reads.
    /// Shared with [`PeerClient::another_pool`].
    binary: Arc<Mutex<HashSet<String>>>,
}

/// What a peer answered to one call.
enum Sent {
    /// 2xx: the body, and whether the peer says it reads binary bodies.
    Answer { reads_binary: bool, body: Bytes },
    /// 400 "bad peer message": the peer could not read the request and did nothing with it.
    NotUnderstood(String),
}

impl PeerClient {
    /// A client for `http://` and `https://` peer URLs; `tls` is used for the latter (our
    /// certificate as client certificate, the peer CA as trust anchor).
    pub fn new(tls: rustls::ClientConfig) -> PeerClient {
        PeerClient {
            http: crate::http_client::pooled(tls, Duration::from_secs(2)),
            binary: Default::default(),
        }
    }

    /// A client with a pool of connections of its own, which knows what this one learned about
    /// which peers read binary bodies. A pooled connection is driven by the runtime that
    /// opened it: a task on another runtime than Raft's (the forwarder) uses its own pool, so
    /// Raft's calls never ride on connections driven by the clients' runtime.
    pub fn another_pool(&self, tls: rustls::ClientConfig) -> PeerClient {
        PeerClient {
            http: crate::http_client::pooled(tls, Duration::from_secs(2)),
            binary: self.binary.clone(),
        }
    }

    /// POST `body` as JSON to `<base><path>` and decode the JSON answer, within `timeout`.
    pub async fn post_json<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        base: &str,
        path: &str,
        body: &Req,
        timeout: Duration,
    ) -> Result<Resp, CallError> {
        self.post(base, path, body, None, timeout).await
    }

    /// POST `body` to `<base><path>` and decode the JSON answer, within `timeout` per try:
    /// in its binary form (`encode`) to a peer that said it reads it, else as JSON. A peer
    /// that cannot read the binary body (an older release after a downgrade) answers 400
    /// without doing anything, and is sent the JSON form at once.
    pub async fn post<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        base: &str,
        path: &str,
        body: &Req,
        encode: Option<Encode<Req>>,
        timeout: Duration,
    ) -> Result<Resp, CallError> {
        let base = base.trim_end_matches('/');
        let url = format!("{base}{path}");
        if let Some(encode) = encode
            && self.reads_binary(base)
        {
            let mut payload = Vec::new();
            encode(&mut payload, body);
            match self.send(&url, BINARY, payload, timeout).await? {
                Sent::Answer { reads_binary, body } => {
                    if !reads_binary {
                        self.set_reads_binary(base, false);
                    }
                    return decode_answer(&url, &body);
                }
                Sent::NotUnderstood(why) => {
                    tracing::info!(peer = base, %why, "peer does not read binary bodies; sending JSON");
                    self.set_reads_binary(base, false);
                }
            }
        }
        let payload =
            serde_json::to_vec(body).map_err(|e| CallError::Other(url.clone(), e.to_string()))?;
        match self.send(&url, JSON, payload, timeout).await? {
            Sent::Answer { reads_binary, body } => {
                // Sent JSON, so the peer was not known to read binary: learn it now.
                if encode.is_some() && reads_binary {
                    self.set_reads_binary(base, true);
                }
                decode_answer(&url, &body)
            }
            Sent::NotUnderstood(text) => Err(CallError::Other(url, format!("HTTP 400: {text}"))),
        }
    }

    fn reads_binary(&self, base: &str) -> bool {
        self.binary
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(base)
    }

    /// Called only when an answer changes what is known, not on every call.
    fn set_reads_binary(&self, base: &str, yes: bool) {
        let mut set = self.binary.lock().unwrap_or_else(|e| e.into_inner());
        if yes {
            set.insert(base.to_string());
        } else {
            set.remove(base);
        }
    }

    /// One POST, bounded by `timeout`.
    async fn send(
        &self,
        url: &str,
        content_type: &'static str,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<Sent, CallError> {
        let req = hyper::Request::post(url)
            .header("content-type", content_type)
            .body(Full::new(Bytes::from(payload)))
            .map_err(|e| CallError::Other(url.to_string(), e.to_string()))?;
        let call = async {
            let resp = self.http.request(req).await.map_err(|e| {
                if e.is_connect() {
                    CallError::Connect(url.to_string(), error_chain(&e))
                } else if closed_early(&e) {
                    CallError::Closed(url.to_string(), error_chain(&e))
                } else {
                    CallError::Other(url.to_string(), e.to_string())
                }
            })?;
            let status = resp.status();
            let reads_binary = resp.headers().contains_key(READS_BINARY);
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| CallError::Other(url.to_string(), e.to_string()))?
                .to_bytes();
            if status.is_success() {
                return Ok(Sent::Answer { reads_binary, body });
            }
            let text = String::from_utf8_lossy(&body).into_owned();
            if status == hyper::StatusCode::BAD_REQUEST && text.starts_with(NOT_UNDERSTOOD) {
                return Ok(Sent::NotUnderstood(text));
            }
            Err(CallError::Other(
                url.to_string(),
                format!("HTTP {status}: {text}"),
            ))
        };
        match tokio::time::timeout(timeout, call).await {
            Ok(r) => r,
            Err(_) => Err(CallError::Timeout(url.to_string(), timeout)),
        }
    }
}

const JSON: &str = "application/json";
/// How a peer's 400 answer begins when it could not read a request (`api::peer`): nothing
/// was done with it, so it is safe to send again in another form.
pub const NOT_UNDERSTOOD: &str = "bad peer message";

fn decode_answer<Resp: DeserializeOwned>(url: &str, body: &[u8]) -> Result<Resp, CallError> {
    serde_json::from_slice(body)
        .map_err(|e| CallError::Other(url.to_string(), format!("bad answer: {e}")))
}

/// Did the peer close the connection without answering (hyper's "incomplete message")?
fn closed_early(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(c) = cur {
        if let Some(h) = c.downcast_ref::<hyper::Error>()
            && (h.is_incomplete_message() || h.is_closed() || h.is_canceled())
        {
            return true;
        }
        cur = c.source();
    }
    false
}

/// An error with its causes, so "client error (Connect)" also says *why* (a refused
/// connection, an unknown certificate issuer...).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let msg = c.to_string();
        if !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        cur = c.source();
    }
    out
}

/// Builds one [`PeerConnection`] per target; openraft asks for them as replication starts.
#[derive(Clone)]
pub struct Network {
    pub client: PeerClient,
    /// Round-trip times of AppendEntries per follower, for `/v2/stats/leader`.
    pub stats: Arc<PeerStats>,
    /// How far this node's log is durable: an AppendEntries names a commit index only once
    /// it is (a leader may count itself before its own sync is done, see `log_store`).
    pub durable: Durable,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> PeerConnection {
        PeerConnection {
            client: self.client.clone(),
            target,
            peer_url: node.peer_url.clone(),
            stats: self.stats.clone(),
            durable: self.durable.clone(),
        }
    }
}

pub struct PeerConnection {
    client: PeerClient,
    target: NodeId,
    peer_url: String,
    stats: Arc<PeerStats>,
    durable: Durable,
}

impl PeerConnection {
    async fn rpc<Req, Resp, E>(
        &self,
        path: &str,
        req: &Req,
        encode: Option<Encode<Req>>,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, Member, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let ttl = option.hard_ttl();
        let answer: Result<Resp, E> = self
            .client
            .post(&self.peer_url, path, req, encode, ttl)
            .await
            .map_err(|e| match e {
                CallError::Connect(..) | CallError::Closed(..) => {
                    RPCError::Unreachable(Unreachable::new(&e))
                }
                CallError::Timeout(..) | CallError::Other(..) => {
                    RPCError::Network(NetworkError::new(&e))
                }
            })?;
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        // A follower that learns a commit index may apply up to it: not before the entries
        // are on this node's disk too (its sync may still run, see `log_store`).
        if let Some(c) = rpc.leader_commit {
            let wait = self.durable.reached(c.index);
            match tokio::time::timeout(option.hard_ttl(), wait).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    let e = std::io::Error::other(format!("this node's log stopped: {e}"));
                    return Err(RPCError::Unreachable(Unreachable::new(&e)));
                }
                Err(_) => {
                    let e = std::io::Error::other("this node's log sync is late");
                    return Err(RPCError::Network(NetworkError::new(&e)));
                }
            }
        }
        let started = Instant::now();
        let res = self
            .rpc(
                "/raft/append",
                &rpc,
                Some(super::codec::encode_append),
                &option,
            )
            .await;
        match &res {
            Ok(_) => self.stats.success(self.target, started.elapsed()),
            Err(_) => self.stats.failure(self.target),
        }
        res
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        self.rpc("/raft/vote", &rpc, None, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Member, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.rpc("/raft/snapshot", &rpc, None, &option).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use axum::extract::State;
    use axum::http::{HeaderMap, HeaderValue, StatusCode};
    use axum::response::{IntoResponse, Response};

    use super::*;
    use crate::command::Command;
    use crate::raft::codec;

    /// A peer that reads binary bodies or not (`new`), and notes every content type sent.
    #[derive(Default)]
    struct FakePeer {
        new: AtomicBool,
        seen: Mutex<Vec<String>>,
    }

    async fn propose(State(p): State<Arc<FakePeer>>, h: HeaderMap, body: Bytes) -> Response {
        let ct = h
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        p.seen.lock().unwrap().push(ct.clone());
        let new = p.new.load(Ordering::SeqCst);
        let cmds = if new && ct == BINARY {
            codec::decode_commands(&body).map_err(|e| e.to_string())
        } else {
            serde_json::from_slice::<Vec<Command>>(&body).map_err(|e| e.to_string())
        };
        match cmds {
            Err(e) => (StatusCode::BAD_REQUEST, format!("{NOT_UNDERSTOOD}: {e}")).into_response(),
            Ok(cmds) => {
                let keys: Vec<_> = cmds
                    .iter()
                    .filter_map(|c| c.key().map(String::from))
                    .collect();
                let mut r = serde_json::to_string(&keys).unwrap().into_response();
                if new {
                    r.headers_mut()
                        .insert(READS_BINARY, HeaderValue::from_static("1"));
                }
                r
            }
        }
    }

    fn set(key: &str) -> Command {
        Command::Set {
            key: key.into(),
            value: Some("v".into()),
            expire_at: None,
            refresh: false,
        }
    }

    /// JSON until the peer says it reads binary, binary after that; a peer that stops
    /// reading it (a downgrade) gets the same call again in JSON, and JSON from then on.
    #[tokio::test]
    async fn binary_bodies_only_to_peers_that_read_them() {
        let peer = Arc::new(FakePeer::default());
        peer.new.store(true, Ordering::SeqCst);
        let app = axum::Router::new()
            .route("/raft/propose", axum::routing::post(propose))
            .with_state(peer.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });

        let client = PeerClient::new(crate::tls::public_client_config());
        let call = |keys: &[&str]| {
            let cmds: Vec<Command> = keys.iter().map(|k| set(k)).collect();
            let (client, base) = (client.clone(), base.clone());
            async move {
                client
                    .post::<_, Vec<String>>(
                        &base,
                        "/raft/propose",
                        &cmds,
                        Some(|out, cmds| codec::encode_commands(out, cmds)),
                        Duration::from_secs(5),
                    )
                    .await
                    .unwrap()
            }
        };
        assert_eq!(call(&["/a"]).await, ["/a"]);
        assert_eq!(call(&["/b", "/c"]).await, ["/b", "/c"]);
        peer.new.store(false, Ordering::SeqCst);
        assert_eq!(call(&["/d"]).await, ["/d"], "answered after falling back");
        assert_eq!(call(&["/e"]).await, ["/e"]);
        // Plain JSON calls are never sent in binary.
        let plain: Vec<String> = client
            .post_json(
                &base,
                "/raft/propose",
                &vec![set("/f")],
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        assert_eq!(plain, ["/f"]);
        assert_eq!(
            *peer.seen.lock().unwrap(),
            [JSON, BINARY, BINARY, JSON, JSON, JSON],
            "content types sent, in order"
        );
    }
}
