//! Raft RPCs to peers: JSON over HTTP to the peer port (`POST /raft/append`, `/raft/vote`,
//! `/raft/snapshot`, served by `api::peer`).
//!
//! Every call is bounded by openraft's per-RPC deadline (`RPCOption::hard_ttl`), so a peer
//! that answers slowly or not at all costs a timeout, never a stuck replication task. A peer
//! we cannot connect to is reported as `Unreachable`, which makes openraft back off before
//! trying it again. The remote side answers with the serialized `Result` of its openraft
//! call, so a remote Raft error comes back as itself.
//!
//! [`PeerClient`] is also what the API uses to forward requests to the leader.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
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

/// An HTTP client for peer ports, shared by every connection (it pools connections).
#[derive(Clone)]
pub struct PeerClient {
    http: Client<crate::http_client::Connector, Full<Bytes>>,
}

impl PeerClient {
    /// A client for `http://` and `https://` peer URLs; `tls` is used for the latter (our
    /// certificate as client certificate, the peer CA as trust anchor).
    pub fn new(tls: rustls::ClientConfig) -> PeerClient {
        PeerClient {
            http: crate::http_client::pooled(tls, Duration::from_secs(2)),
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
        let url = format!("{}{}", base.trim_end_matches('/'), path);
        let payload =
            serde_json::to_vec(body).map_err(|e| CallError::Other(url.clone(), e.to_string()))?;
        let req = hyper::Request::post(&url)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(payload)))
            .map_err(|e| CallError::Other(url.clone(), e.to_string()))?;
        let call = async {
            let resp = self.http.request(req).await.map_err(|e| {
                if e.is_connect() {
                    CallError::Connect(url.clone(), error_chain(&e))
                } else if closed_early(&e) {
                    CallError::Closed(url.clone(), error_chain(&e))
                } else {
                    CallError::Other(url.clone(), e.to_string())
                }
            })?;
            let status = resp.status();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| CallError::Other(url.clone(), e.to_string()))?
                .to_bytes();
            if !status.is_success() {
                let text = String::from_utf8_lossy(&bytes).into_owned();
                return Err(CallError::Other(
                    url.clone(),
                    format!("HTTP {status}: {text}"),
                ));
            }
            serde_json::from_slice(&bytes)
                .map_err(|e| CallError::Other(url.clone(), format!("bad answer: {e}")))
        };
        match tokio::time::timeout(timeout, call).await {
            Ok(r) => r,
            Err(_) => Err(CallError::Timeout(url, timeout)),
        }
    }
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
            .post_json(&self.peer_url, path, req, ttl)
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
        let res = self.rpc("/raft/append", &rpc, &option).await;
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
        self.rpc("/raft/vote", &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Member, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.rpc("/raft/snapshot", &rpc, &option).await
    }
}
