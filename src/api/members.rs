//! The members API of etcd 2.x on the client port (`/v2/members`, `/v2/members/<id>`,
//! `/v2/members/leader`) and the member list the peer port serves (`GET /members`).

use axum::http::{Method, header};
use axum::response::Response;
use serde::Serialize;

use super::AppRef;
use super::response::{self, json, message};
use crate::api::leader_calls::MemberOp;
use crate::error::Code;
use crate::go::go_json;

#[derive(Serialize)]
struct MemberJson {
    id: String,
    name: String,
    #[serde(rename = "peerURLs")]
    peer_urls: Vec<String>,
    #[serde(rename = "clientURLs")]
    client_urls: Vec<String>,
}

fn member_json(id: u64, m: &crate::raft::types::Member) -> MemberJson {
    MemberJson {
        id: format!("{id:x}"),
        name: m.name.clone(),
        peer_urls: vec![m.peer_url.clone()],
        client_urls: if m.client_url.is_empty() {
            vec![]
        } else {
            vec![m.client_url.clone()]
        },
    }
}

fn with_cluster(st: &AppRef, mut r: Response) -> Response {
    r.headers_mut()
        .insert(response::X_ETCD_CLUSTER_ID, st.cluster_id_header());
    r
}

/// `GET /v2/members`: `{"members":[...]}` sorted by id.
pub fn v2_members(st: AppRef, method: &Method) -> Response {
    if method != Method::GET {
        return super::response::method_not_allowed("GET,POST,DELETE,PUT");
    }
    #[derive(Serialize)]
    struct Members {
        members: Vec<MemberJson>,
    }
    let mut members = st.node.members();
    members.sort_by_key(|(id, _)| *id);
    let body = Members {
        members: members.iter().map(|(id, m)| member_json(*id, m)).collect(),
    };
    with_cluster(&st, json(200, go_json(&body) + "\n"))
}

/// `GET /members` on the peer port: the members as a JSON array, as etcd 2.x serves it to
/// its proxies and to members that join (a proxy learns the client URLs from it).
pub fn peer_members(st: AppRef) -> Response {
    let mut members = st.node.members();
    members.sort_by_key(|(id, _)| *id);
    let list: Vec<MemberJson> = members.iter().map(|(id, m)| member_json(*id, m)).collect();
    with_cluster(&st, json(200, go_json(&list) + "\n"))
}

/// `/v2/members/<id>`: `PUT` (new peer URLs) and `DELETE` (remove), as etcd 2.x answers them.
pub async fn v2_member(st: AppRef, id: &str, req: axum::extract::Request) -> Response {
    let method = req.method().clone();
    if method != Method::PUT && method != Method::DELETE {
        return super::response::method_not_allowed("GET,POST,DELETE,PUT");
    }
    // With auth on, member changes need a root user (etcd 2.3).
    if let Err(r) = crate::api::access::authorize_admin(&st, req.headers()).await {
        return r;
    }
    let Ok(mid) = u64::from_str_radix(id, 16) else {
        return with_cluster(&st, message(404, &format!("No such member: {id}")));
    };
    // Whether the member exists is the leader's call (this node may lag); a member that was
    // removed answers 410, as etcd does.
    let member_now = st.node.member(mid).is_some();
    if !member_now && st.node.replica.read().state.removed_members.contains(&mid) {
        return with_cluster(
            &st,
            message(410, &format!("Member permanently removed: {id}")),
        );
    }
    let op = if method == Method::DELETE {
        MemberOp::Remove { id: mid }
    } else {
        match peer_urls_body(req).await {
            Ok(url) => MemberOp::Update {
                id: mid,
                peer_url: url,
            },
            Err(r) => return with_cluster(&st, r),
        }
    };
    let r = match crate::api::leader_calls::member_op(&st, op).await {
        Ok(_) => response::empty(204),
        Err(e) => member_error(&e),
    };
    with_cluster(&st, r)
}

/// `POST /v2/members` with `{"peerURLs":[...]}`: add a member that will join later.
pub async fn v2_members_add(st: AppRef, req: axum::extract::Request) -> Response {
    if let Err(r) = crate::api::access::authorize_admin(&st, req.headers()).await {
        return r;
    }
    let url = match peer_urls_body(req).await {
        Ok(u) => u,
        Err(r) => return with_cluster(&st, r),
    };
    let r = match crate::api::leader_calls::member_op(&st, MemberOp::Add { peer_url: url }).await {
        Ok(done) => json(201, go_json(&member_json(done.id, &done.member)) + "\n"),
        Err(e) => member_error(&e),
    };
    with_cluster(&st, r)
}

fn member_error(e: &crate::error::EtcdError) -> Response {
    match e.code {
        Code::KeyNotFound => message(404, &e.cause),
        Code::ExistingPeerAddr => message(409, &e.cause),
        Code::NoMorePeer => message(409, &format!("etcdserver: {}", e.cause)),
        _ => message(500, "Internal Server Error"),
    }
}

/// Parse a members request body: Content-Type exactly application/json, `{"peerURLs":[url]}`.
async fn peer_urls_body(req: axum::extract::Request) -> Result<String, Response> {
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if ct != "application/json" {
        return Err(message(
            415,
            &format!("Bad Content-Type {ct}, accept application/json"),
        ));
    }
    let bytes = crate::api::params::read_body(req.into_body()).await?;
    #[derive(serde::Deserialize)]
    struct Body {
        #[serde(rename = "peerURLs")]
        peer_urls: Vec<String>,
    }
    let body: Body = serde_json::from_slice(&bytes).map_err(|e| message(400, &e.to_string()))?;
    let url = body
        .peer_urls
        .into_iter()
        .next()
        .ok_or_else(|| message(400, "peerURLs must not be empty"))?;
    let parsed_ok =
        (url.starts_with("http://") || url.starts_with("https://")) && url.contains(':');
    if !parsed_ok {
        return Err(message(
            400,
            &format!("URL scheme must be http or https: {url}"),
        ));
    }
    Ok(url)
}

/// `GET /v2/members/leader`: the leader's member object, or 503 during an election.
pub fn v2_members_leader(st: AppRef, method: &Method) -> Response {
    if method != Method::GET {
        return super::response::method_not_allowed("GET");
    }
    let r = match st.node.leader() {
        Some((id, m)) => json(200, go_json(&member_json(id, &m)) + "\n"),
        None => json(503, r#"{"message":"During election"}"#.to_string()),
    };
    with_cluster(&st, r)
}
