//! Statistics on the client port: `/v1/stats/{self,leader,store}` (v0.1.2) and
//! `/v2/stats/{self,leader,store}` (etcd 2.x), in etcd's field order.

use axum::http::{HeaderValue, Method, header};
use axum::response::Response;
use openraft::ServerState;
use serde::Serialize;

use super::AppRef;
use super::response::{self, json};
use crate::clock::now_nanos;
use crate::error::Code;
use crate::go::{go_duration, go_json, rfc3339_nanos};

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
            let stats = st.node.replica.read().state.store.stats();
            json(200, go_json(&stats.v1()))
        }
        _ => response::empty(200),
    }
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
    let stats = st.node.replica.read().state.store.stats();
    json(200, go_json(&stats))
}
