//! The peer port: Raft RPCs between members (`POST /raft/append`, `/raft/vote`,
//! `/raft/snapshot`, JSON bodies - binary for AppendEntries and forwarded writes from a peer
//! that knows we read them - answered with the JSON of the `Result` of the openraft call),
//! the cluster calls (`/raft/propose` for forwarded writes, batched, `/raft/read_index` for
//! linearizable reads on followers, `/join`, `/raft/member` for member changes), and the
//! small v0.1 peer endpoints (`/name`, `/version`, `/etcdURL`, `DELETE /remove/<name>`).
//!
//! Cluster calls that only the leader can serve are relayed to the leader by a follower that
//! receives them (one hop, `leader_calls.rs`), so a joiner may name any member with `-C`.

use axum::extract::Request;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, Method};
use axum::response::Response;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::AppRef;
use super::leader_calls::{MemberOp, join, member_op};
use super::response::{self, json, text};
use crate::command::Command;
use crate::error::{Code, EtcdError};
use crate::raft::cluster::JoinRequest;
use crate::raft::codec::{self, CodecError};
use crate::raft::network::{BINARY, NOT_UNDERSTOOD, READS_BINARY};
use crate::raft::node::ProposeError;
use crate::raft::types::NodeId;

/// Raft messages can be large (a batch of entries, a snapshot chunk), but not unbounded.
const MAX_RAFT_BODY: usize = 1 << 30;

pub async fn dispatch(st: AppRef, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    match (method, path.as_str()) {
        (Method::GET, "/name") => text(200, st.node.me.name.clone()),
        (Method::GET, "/version") => text(200, crate::raft::network::PEER_VERSION),
        (Method::GET, "/etcdURL") => text(200, st.node.me.client_url.clone()),
        (Method::GET, "/members") => super::members::peer_members(st),
        (Method::POST, "/raft/append") => {
            rpc(req, Some(codec::decode_append), |r| async move {
                Ok::<_, ()>(st.node.raft.append_entries(r).await)
            })
            .await
        }
        (Method::POST, "/raft/vote") => {
            rpc(req, None, |r| async move {
                Ok::<_, ()>(st.node.raft.vote(r).await)
            })
            .await
        }
        (Method::POST, "/raft/snapshot") => {
            rpc(req, None, |r| async move {
                Ok::<_, ()>(st.node.raft.install_snapshot(r).await)
            })
            .await
        }
        (Method::POST, "/raft/propose") => rpc(
            req,
            Some(codec::decode_commands),
            |cmds: Vec<Command>| async move { Ok::<_, ()>(st.node.propose_forwarded(cmds).await) },
        )
        .await,
        (Method::POST, "/raft/read_index") => {
            rpc(req, None, |(): ()| async move {
                Ok::<_, ()>(if st.node.is_leader() {
                    st.node.read_index_local().await
                } else {
                    Err(ProposeError::NotLeader)
                })
            })
            .await
        }
        (Method::POST, "/raft/removed") => {
            rpc(req, None, |id: NodeId| async move {
                if id == st.node.id {
                    tracing::warn!("the leader says this node was removed from the cluster");
                    st.removed.send_replace(true);
                }
                Ok::<_, ()>(())
            })
            .await
        }
        (Method::POST, "/join") => {
            rpc(req, None, |j: JoinRequest| async move {
                Ok::<_, ()>(join(&st, j).await)
            })
            .await
        }
        (Method::POST, "/raft/member") => {
            rpc(req, None, |op: MemberOp| async move {
                Ok::<_, ()>(member_op(&st, op).await)
            })
            .await
        }
        (Method::DELETE, p) if p.starts_with("/remove/") => {
            let name = p["/remove/".len()..].to_string();
            let id = st
                .node
                .members()
                .into_iter()
                .find(|(_, m)| m.name == name)
                .map(|(id, _)| id);
            let res = match id {
                Some(id) => member_op(&st, MemberOp::Remove { id }).await.map(|_| ()),
                None => Err(EtcdError::new(
                    Code::KeyNotFound,
                    format!("no member named {name}"),
                    0,
                )),
            };
            match res {
                Ok(()) => text(200, "removed"),
                Err(e) => json(
                    e.code.http_status(),
                    serde_json::to_string(&e).unwrap_or_default(),
                ),
            }
        }
        (_, p) if p.starts_with("/remove/") => response::empty(405),
        _ => response::not_found(),
    }
}

/// Decodes a request from its binary form (`raft::codec`).
type Decode<Req> = fn(&[u8]) -> Result<Req, CodecError>;

/// Read a request - JSON, or the binary form if it has one (`binary`) and comes in it - run
/// `call`, answer its result as JSON. Every answer says that this server reads binary bodies.
/// A request that cannot be read gets 400 "bad peer message" and nothing is done with it
/// (the sender may then try JSON, `raft::network`).
async fn rpc<Req, Resp, F, Fut>(req: Request, binary: Option<Decode<Req>>, call: F) -> Response
where
    Req: DeserializeOwned,
    Resp: Serialize,
    F: FnOnce(Req) -> Fut,
    Fut: std::future::Future<Output = Result<Resp, ()>>,
{
    let in_binary = req
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == BINARY.as_bytes());
    let bytes = match axum::body::to_bytes(req.into_body(), MAX_RAFT_BODY).await {
        Ok(b) => b,
        Err(e) => return text(400, format!("cannot read body: {e}")),
    };
    let parsed: Result<Req, String> = match binary.filter(|_| in_binary) {
        Some(decode) => decode(&bytes).map_err(|e| e.to_string()),
        None => serde_json::from_slice(&bytes).map_err(|e| e.to_string()),
    };
    let parsed = match parsed {
        Ok(r) => r,
        Err(e) => return text(400, format!("{NOT_UNDERSTOOD}: {e}")),
    };
    let mut answer = match call(parsed).await {
        Ok(result) => match serde_json::to_string(&result) {
            Ok(body) => json(200, body),
            Err(e) => text(500, format!("cannot encode answer: {e}")),
        },
        Err(()) => text(500, "internal error"),
    };
    answer
        .headers_mut()
        .insert(READS_BINARY, HeaderValue::from_static("1"));
    answer
}
