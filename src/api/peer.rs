//! The peer port: Raft RPCs between members (`POST /raft/append`, `/raft/vote`,
//! `/raft/snapshot`, JSON bodies answered with the serialized `Result` of the openraft call)
//! and the small v0.1 peer endpoints (`/name`, `/version`, `/etcdURL`).

use axum::extract::{Request, State};
use axum::http::Method;
use axum::response::Response;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::AppRef;
use super::response::{self, json, text};

/// What peers compare before they talk Raft: the wire protocol of this implementation.
pub const PEER_VERSION: &str = "etcd-rs/1";

/// Raft messages can be large (a batch of entries, a snapshot chunk), but not unbounded.
const MAX_RAFT_BODY: usize = 1 << 30;

pub async fn dispatch(State(st): State<AppRef>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    match (method, path.as_str()) {
        (Method::GET, "/name") => text(200, st.node.me.name.clone()),
        (Method::GET, "/version") => text(200, PEER_VERSION),
        (Method::GET, "/etcdURL") => text(200, st.node.me.client_url.clone()),
        (Method::POST, "/raft/append") => {
            rpc(req, |r| async move { st.node.raft.append_entries(r).await }).await
        }
        (Method::POST, "/raft/vote") => {
            rpc(req, |r| async move { st.node.raft.vote(r).await }).await
        }
        (Method::POST, "/raft/snapshot") => {
            rpc(
                req,
                |r| async move { st.node.raft.install_snapshot(r).await },
            )
            .await
        }
        _ => response::not_found(),
    }
}

async fn rpc<Req, Resp, E, F, Fut>(req: Request, call: F) -> Response
where
    Req: DeserializeOwned,
    Resp: Serialize,
    E: Serialize,
    F: FnOnce(Req) -> Fut,
    Fut: std::future::Future<Output = Result<Resp, E>>,
{
    let bytes = match axum::body::to_bytes(req.into_body(), MAX_RAFT_BODY).await {
        Ok(b) => b,
        Err(e) => return text(400, format!("cannot read body: {e}")),
    };
    let parsed: Req = match serde_json::from_slice(&bytes) {
        Ok(r) => r,
        Err(e) => return text(400, format!("bad raft message: {e}")),
    };
    let result = call(parsed).await;
    match serde_json::to_string(&result) {
        Ok(body) => json(200, body),
        Err(e) => text(500, format!("cannot encode answer: {e}")),
    }
}
