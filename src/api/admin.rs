//! Cluster and node information on the client port: `/v1/leader`, `/v1/machines`,
//! `/v1/stats/*`, `/version` and the version text.

use axum::http::{HeaderValue, Method, header};
use axum::response::Response;
use openraft::ServerState;
use serde::Serialize;

use super::response::{self, json, text};
use super::{AppRef, CLUSTER_VERSION, VERSION};
use crate::api::peer::MemberOp;
use crate::clock::now_nanos;
use crate::error::Code;
use crate::go::{go_duration, go_json, rfc3339_nanos};

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

fn state_name(s: ServerState) -> &'static str {
    match s {
        ServerState::Leader => "leader",
        ServerState::Candidate => "candidate",
        _ => "follower",
    }
}

/// `/v1/stats/self` and `/v2/stats/self`: the v2 form adds `id` and names states and the
/// leader the 2.x way.
#[derive(Serialize)]
struct SelfStats {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    state: &'static str,
    #[serde(rename = "startTime")]
    start_time: String,
    #[serde(rename = "leaderInfo")]
    leader_info: LeaderInfo,
    #[serde(rename = "recvAppendRequestCnt")]
    recv_append: u64,
    #[serde(rename = "sendAppendRequestCnt")]
    send_append: u64,
}

#[derive(Serialize)]
struct LeaderInfo {
    leader: String,
    uptime: String,
    #[serde(rename = "startTime")]
    start_time: String,
}

#[derive(Serialize)]
struct LeaderStats {
    leader: String,
    followers: std::collections::BTreeMap<String, FollowerStats>,
}

/// `/v1/stats/{self,leader,store}`; anything else answers 200 with an empty body (v0.1.2).
pub async fn v1_stats(st: AppRef, which: &str, method: &Method) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return response::empty(405);
    }
    match which {
        "self" => self_stats(&st, false),
        "leader" => {
            if !st.node.is_leader() {
                return match st.node.leader() {
                    Some((_, m)) => {
                        let mut r = response::empty(307);
                        if let Ok(v) =
                            HeaderValue::from_str(&format!("{}/v1/stats/leader", m.client_url))
                        {
                            r.headers_mut().insert(header::LOCATION, v);
                        }
                        r
                    }
                    None => response::v1_error_code(Code::LeaderElect, ""),
                };
            }
            let body = LeaderStats {
                leader: st.node.me.name.clone(),
                followers: Default::default(),
            };
            json(200, go_json(&body))
        }
        "store" => {
            let stats = st.node.replica.read().store.stats();
            json(200, go_json(&stats.v1()))
        }
        _ => response::empty(200),
    }
}

// ---------------------------------------------------------------------------------------
// v2 (etcd 2.x) admin endpoints

fn admin_json(status: u16, body: String) -> Response {
    json(status, body)
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
        .insert("x-etcd-cluster-id", st.cluster_id_header());
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
    with_cluster(&st, admin_json(200, go_json(&body) + "\n"))
}

/// `GET /members` on the peer port: the members as a JSON array, as etcd 2.x serves it to
/// its proxies and to members that join (a proxy learns the client URLs from it).
pub fn peer_members(st: AppRef) -> Response {
    let mut members = st.node.members();
    members.sort_by_key(|(id, _)| *id);
    let list: Vec<MemberJson> = members.iter().map(|(id, m)| member_json(*id, m)).collect();
    with_cluster(&st, admin_json(200, go_json(&list) + "\n"))
}

/// `/v2/members/<id>`: `PUT` (new peer URLs) and `DELETE` (remove), as etcd 2.x answers them.
pub async fn v2_member(st: AppRef, id: &str, req: axum::extract::Request) -> Response {
    let method = req.method().clone();
    if method != Method::PUT && method != Method::DELETE {
        return super::response::method_not_allowed("GET,POST,DELETE,PUT");
    }
    // With auth on, member changes need a root user (etcd 2.3).
    if let Err(r) = crate::api::auth::authorize_admin(&st, req.headers()).await {
        return r;
    }
    let Ok(mid) = u64::from_str_radix(id, 16) else {
        return with_cluster(&st, message(404, &format!("No such member: {id}")));
    };
    // Whether the member exists is the leader's call (this node may lag); a member that was
    // removed answers 410, as etcd does.
    let member_now = st.node.member(mid).is_some();
    if !member_now && st.node.replica.read().store.removed_members.contains(&mid) {
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
    let r = match crate::api::peer::member_op(&st, op).await {
        Ok(_) => response::empty(204),
        Err(e) => member_error(&e),
    };
    with_cluster(&st, r)
}

/// `POST /v2/members` with `{"peerURLs":[...]}`: add a member that will join later.
pub async fn v2_members_add(st: AppRef, req: axum::extract::Request) -> Response {
    if let Err(r) = crate::api::auth::authorize_admin(&st, req.headers()).await {
        return r;
    }
    let url = match peer_urls_body(req).await {
        Ok(u) => u,
        Err(r) => return with_cluster(&st, r),
    };
    let r = match crate::api::peer::member_op(&st, MemberOp::Add { peer_url: url }).await {
        Ok(done) => admin_json(201, go_json(&member_json(done.id, &done.member)) + "\n"),
        Err(e) => member_error(&e),
    };
    with_cluster(&st, r)
}

fn message(status: u16, msg: &str) -> Response {
    admin_json(status, go_json(&serde_json::json!({ "message": msg })))
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
        Some((id, m)) => admin_json(200, go_json(&member_json(id, &m)) + "\n"),
        None => admin_json(503, r#"{"message":"During election"}"#.to_string()),
    };
    with_cluster(&st, r)
}

fn state_name_v2(s: ServerState) -> &'static str {
    match s {
        ServerState::Leader => "StateLeader",
        ServerState::Candidate => "StateCandidate",
        _ => "StateFollower",
    }
}

/// `GET /v2/stats/self`.
pub fn v2_stats_self(st: AppRef) -> Response {
    self_stats(&st, true)
}

fn self_stats(st: &AppRef, v2: bool) -> Response {
    let since = st.leader_since.load(std::sync::atomic::Ordering::Relaxed);
    let state = st.node.state();
    let leader = st
        .node
        .leader()
        .map(|(id, m)| if v2 { format!("{id:x}") } else { m.name });
    let body = SelfStats {
        name: st.node.me.name.clone(),
        id: v2.then(|| format!("{:x}", st.node.id)),
        state: if v2 {
            state_name_v2(state)
        } else {
            state_name(state)
        },
        start_time: rfc3339_nanos(st.start_time),
        leader_info: LeaderInfo {
            leader: leader.unwrap_or_default(),
            uptime: go_duration(now_nanos() - since),
            start_time: rfc3339_nanos(since),
        },
        recv_append: 0,
        send_append: 0,
    };
    json(200, go_json(&body))
}

/// One follower in `/v2/stats/leader`, fields in etcd's order.
#[derive(Serialize)]
struct FollowerStats {
    latency: Latency,
    counts: Counts,
}

#[derive(Serialize)]
struct Latency {
    current: f64,
    average: f64,
    #[serde(rename = "standardDeviation")]
    standard_deviation: f64,
    minimum: f64,
    maximum: f64,
}

#[derive(Serialize)]
struct Counts {
    fail: u64,
    success: u64,
}

/// `GET /v2/stats/leader`: per-follower RPC latency and counts; 403 on a non-leader.
pub fn v2_stats_leader(st: AppRef) -> Response {
    if !st.node.is_leader() {
        return json(403, r#"{"message":"not current leader"}"#.to_string());
    }
    let mut followers = std::collections::BTreeMap::new();
    for (id, _) in st.node.members() {
        if id == st.node.id {
            continue;
        }
        let s = st.node.peer_stats.get(id);
        let follower = FollowerStats {
            latency: Latency {
                current: s.current,
                average: s.average,
                standard_deviation: s.standard_deviation(),
                minimum: s.minimum,
                maximum: s.maximum,
            },
            counts: Counts {
                fail: s.fail,
                success: s.success,
            },
        };
        followers.insert(format!("{id:x}"), follower);
    }
    let body = LeaderStats {
        leader: format!("{:x}", st.node.id),
        followers,
    };
    json(200, go_json(&body))
}

/// `GET /v2/stats/store`: the store counters.
pub fn v2_stats_store(st: AppRef) -> Response {
    let stats = st.node.replica.read().store.stats();
    json(200, go_json(&stats))
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
