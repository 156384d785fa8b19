//! Cluster calls only the leader serves - a member joining, a member change - run here when
//! this node leads, else relayed to the leader's peer port (one hop), whichever member the
//! caller asked (the peer port, the members API and a restarting member all come here).

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::AppRef;
use crate::error::EtcdError;
use crate::raft::cluster::{self, JoinRequest, JoinResponse};
use crate::raft::types::{Member, NodeId};

/// A member change, as the members API asks the leader for it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum MemberOp {
    Add { peer_url: String },
    Update { id: NodeId, peer_url: String },
    Remove { id: NodeId },
}

/// The leader's answer to a member change: the member concerned.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberDone {
    pub id: NodeId,
    pub member: Member,
    /// The leader's applied index after the change: a relaying node waits until it has
    /// applied that far, so its next read shows the change.
    #[serde(default)]
    pub applied: u64,
}

/// Serve a join here if this node leads, else relay it to the leader.
pub async fn join(st: &AppRef, j: JoinRequest) -> Result<JoinResponse, EtcdError> {
    let cid = st.cluster_id();
    if st.node.is_leader() {
        return cluster::join(&st.node, j, st.cfg.max_cluster_size, cid).await;
    }
    relay(st, "/join", &j).await
}

/// Run a member change on the leader (here, or relayed).
pub async fn member_op(st: &AppRef, op: MemberOp) -> Result<MemberDone, EtcdError> {
    if st.node.is_leader() {
        let node = &st.node;
        return match op {
            MemberOp::Add { peer_url } => {
                let (id, member) = cluster::add_member(
                    node,
                    &peer_url,
                    &st.cfg.initial_cluster_token,
                    st.cfg.max_cluster_size,
                )
                .await?;
                Ok(MemberDone {
                    id,
                    member,
                    applied: node.applied_index(),
                })
            }
            MemberOp::Update { id, peer_url } => {
                cluster::update_member(node, id, &peer_url).await?;
                let member = node.member(id).unwrap_or_default();
                Ok(MemberDone {
                    id,
                    member,
                    applied: node.applied_index(),
                })
            }
            MemberOp::Remove { id } => {
                let member = node.member(id).unwrap_or_default();
                cluster::remove(node, id).await?;
                // The removed node gets no more log entries, so it would never learn of its
                // removal: tell it (best effort; it also notices if it sees the new config).
                if id == node.id {
                    st.removed.send_replace(true);
                } else {
                    let _: Result<(), _> = node
                        .client
                        .post_json(
                            &member.peer_url,
                            "/raft/removed",
                            &id,
                            Duration::from_secs(2),
                        )
                        .await;
                }
                Ok(MemberDone {
                    id,
                    member,
                    applied: node.applied_index(),
                })
            }
        };
    }
    let done: MemberDone = relay(st, "/raft/member", &op).await?;
    // The leader committed the change: it is done whether or not this member has applied
    // it yet (it usually has, within a heartbeat).
    st.node
        .replica
        .wait_applied(done.applied, Duration::from_secs(5))
        .await;
    Ok(done)
}

/// Send a cluster call that only the leader serves to the leader's peer `path`.
async fn relay<Req: Serialize, Resp: DeserializeOwned>(
    st: &AppRef,
    path: &str,
    req: &Req,
) -> Result<Resp, EtcdError> {
    let leader = wait_leader(st).await?;
    st.node
        .client
        .post_json::<_, Result<Resp, EtcdError>>(&leader.peer_url, path, req, cluster::JOIN_TIMEOUT)
        .await
        .map_err(|e| EtcdError::raft(format!("relaying {path} to the leader: {e}")))?
}

/// The leader's record, waiting (bounded) for an election to finish.
async fn wait_leader(st: &AppRef) -> Result<Member, EtcdError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if let Some((_, m)) = st.node.leader() {
            return Ok(m);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(EtcdError::raft("no leader"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
