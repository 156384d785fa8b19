//! Cluster and node information on the client port: `/v1/leader`, `/v1/machines`,
//! `/v2/machines`, `/health`, `/version`. The members API is in `members.rs`, the statistics
//! in `stats.rs`.

use axum::http::{HeaderValue, Method, header};
use axum::response::Response;

use super::response::{self, json, text};
use super::{AppRef, CLUSTER_VERSION, VERSION};
use crate::error::Code;

/// `GET /v1/leader`: the leader's peer URL.
pub async fn v1_leader(st: AppRef) -> Response {
    match st.node.leader() {
        Some((_, m)) => text(200, m.peer_url),
        None => response::v1_error_code(Code::LeaderElect, ""),
    }
}

/// `GET /v1/machines`: client URLs, the leader first, then this node, then the others.
pub async fn v1_machines(st: AppRef) -> Response {
    text(200, machine_list(&st).join(", "))
}

pub fn machine_list(st: &AppRef) -> Vec<String> {
    let members = st.node.members();
    let leader = st.node.leader().map(|(id, _)| id);
    let mut order: Vec<_> = members.iter().collect();
    order.sort_by_key(|(id, _)| (Some(*id) != leader, *id != st.node.id, *id));
    order
        .into_iter()
        .map(|(_, m)| m.client_url.clone())
        // A member that has not started yet (or not yet published its client URL) has none.
        .filter(|u| !u.is_empty())
        .collect()
}

/// `GET /v2/machines`: every member's client URL, sorted, `", "`-joined.
pub fn v2_machines(st: AppRef, method: &Method) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return super::response::method_not_allowed("GET,HEAD");
    }
    let mut urls: Vec<String> = st
        .node
        .members()
        .into_iter()
        .map(|(_, m)| m.client_url)
        .filter(|u| !u.is_empty())
        .collect();
    urls.sort();
    text(200, urls.join(", "))
}

/// `GET /health`: healthy when a leader is known and this node can commit (or, on a
/// follower, knows a leader). Answers within a bounded time.
pub async fn health(st: AppRef) -> Response {
    let healthy = st.node.is_ready()
        && st.node.leader().is_some()
        && tokio::time::timeout(
            std::time::Duration::from_secs(2),
            st.node.linearizable_read(),
        )
        .await
        .is_ok_and(|r| r.is_ok());
    // JSON text, but etcd sends it as text/plain.
    if healthy {
        text(200, r#"{"health":"true"}"#)
    } else {
        text(503, r#"{"health":"false"}"#)
    }
}

/// `GET /version`: the 2.x JSON form.
pub fn version(method: &Method) -> Response {
    if method != Method::GET && method != Method::HEAD {
        let mut r = text(405, "Method Not Allowed\n");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET"));
        return r;
    }
    json(
        200,
        format!("{{\"etcdserver\":\"{VERSION}\",\"etcdcluster\":\"{CLUSTER_VERSION}\"}}"),
    )
}
