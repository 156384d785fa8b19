//! Cluster membership: member ids, joining, removal, and the small peer protocol for them.
//!
//! **Ids.** A member's id is a hash of its peer URL and the cluster token (as etcd 2.x does),
//! so nodes started together with `--initial-cluster` agree on every id without talking, and
//! `POST /v2/members` gives a member the id the new node will compute for itself. The id is
//! saved in the data file on first start and never recomputed.
//!
//! **Joining** is one idempotent operation on the leader ([`join`]): a node that is unknown is
//! added as a learner and the call waits until it has caught up (a node far behind gets a
//! snapshot); a learner is then promoted to voter; a member whose name or client URL changed
//! gets its record updated; finally the member is written to the machine registry
//! (`/_etcd/machines/<name>`, the choices in docs/api.md). A v0.1 `-C` join, a 2.x
//! `--initial-cluster-state existing` start, a restart, and a member added with
//! `POST /v2/members` all end up here. Membership changes are serialized by one lock.
//!
//! **Removal** ([`remove`]) drops the member from the configuration and the registry; the
//! removed node notices it is no longer a member and shuts itself down.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::storage::{RaftLogReader, RaftLogStorage};
use openraft::{ChangeMembers, CommittedLeaderId, EntryPayload, Vote};
use serde::{Deserialize, Serialize};

use super::log_store::LogStore;
use super::node::RaftNode;
use super::types::{Member, NodeId, StoredMembership, TypeConfig};
use crate::command::Command;
use crate::error::{Code, EtcdError};

/// How long the leader waits for a joining node to catch up before it gives up.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(120);

/// FNV-1a, 64 bit: stable across builds and platforms (unlike std's hasher).
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h.max(1)
}

/// The id of the member at `peer_url` in the cluster named by `token`.
pub fn member_id(peer_url: &str, token: &str) -> NodeId {
    fnv1a(&[peer_url.trim_end_matches('/').as_bytes(), token.as_bytes()])
}

/// The id of a cluster created with these member ids.
pub fn cluster_id(token: &str, members: &BTreeSet<NodeId>) -> u64 {
    let ids: Vec<u8> = members.iter().flat_map(|id| id.to_be_bytes()).collect();
    fnv1a(&[token.as_bytes(), &ids])
}

/// What a node sends to `/join` on a peer port.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinRequest {
    pub id: NodeId,
    pub member: Member,
    /// The joiner's peer protocol version; must equal ours.
    pub version: String,
}

/// The leader's answer to a successful join.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinResponse {
    pub cluster_id: u64,
    /// The leader's applied index after the join: the joiner is ready once it got this far.
    pub applied: u64,
}

/// Leader only: make `req` a voting member with up-to-date details (see the module doc).
pub async fn join(
    node: &RaftNode,
    req: JoinRequest,
    max_size: usize,
    cluster_id: u64,
) -> Result<JoinResponse, EtcdError> {
    if req.version != super::network::PEER_VERSION {
        return Err(EtcdError::raft(format!(
            "peer protocol {} does not match this cluster's {}",
            req.version,
            super::network::PEER_VERSION
        )));
    }
    let _serial = node.membership_lock.lock().await;
    let (known, is_voter, count, name_taken) = {
        let d = node.replica.read();
        let m = d.membership.membership();
        let known = m.get_node(&req.id).cloned();
        let is_voter = m.voter_ids().any(|v| v == req.id);
        let name_taken = m
            .nodes()
            .any(|(id, n)| *id != req.id && !n.name.is_empty() && n.name == req.member.name);
        (known, is_voter, m.nodes().count(), name_taken)
    };
    if name_taken {
        return Err(EtcdError::new(
            Code::ExistingPeerAddr,
            format!("a member named {} already exists", req.member.name),
            0,
        ));
    }
    let change_err = |e: openraft::error::RaftError<
        NodeId,
        openraft::error::ClientWriteError<NodeId, Member>,
    >| { EtcdError::raft(format!("membership change failed: {e}")) };
    match &known {
        None => {
            if count >= max_size {
                return Err(EtcdError::new(
                    Code::NoMorePeer,
                    format!("the cluster has {count} members (-maxsize {max_size})"),
                    0,
                ));
            }
            tracing::info!(id = format!("{:x}", req.id), member = %req.member, "adding learner");
            tokio::time::timeout(
                JOIN_TIMEOUT,
                node.raft.add_learner(req.id, req.member.clone(), true),
            )
            .await
            .map_err(|_| EtcdError::raft("the new member did not catch up in time"))?
            .map_err(change_err)?;
        }
        Some(old)
            if *old != req.member
                && !(req.member.name.is_empty() && req.member.client_url.is_empty()) =>
        {
            tracing::info!(id = format!("{:x}", req.id), member = %req.member, "updating member");
            let nodes = BTreeMap::from([(req.id, req.member.clone())]);
            node.raft
                .change_membership(ChangeMembers::SetNodes(nodes), true)
                .await
                .map_err(change_err)?;
        }
        Some(_) => {}
    }
    if !is_voter && (!req.member.name.is_empty() || known.is_none()) {
        tracing::info!(id = format!("{:x}", req.id), "promoting to voter");
        node.raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([req.id])), false)
            .await
            .map_err(change_err)?;
    }
    if !req.member.name.is_empty() {
        let reg = Command::Register {
            name: req.member.name.clone(),
            peer_url: req.member.peer_url.clone(),
            client_url: req.member.client_url.clone(),
        };
        node.propose(reg).await?;
    }
    Ok(JoinResponse {
        cluster_id,
        applied: node.applied_index(),
    })
}

/// Leader only: add a member that has not started yet (`POST /v2/members`): a learner with
/// no name and no client URL, promoted when it joins.
pub async fn add_member(
    node: &RaftNode,
    peer_url: &str,
    token: &str,
    max_size: usize,
) -> Result<(NodeId, Member), EtcdError> {
    let id = member_id(peer_url, token);
    let _serial = node.membership_lock.lock().await;
    let (exists, url_taken, count) = {
        let d = node.replica.read();
        let m = d.membership.membership();
        let exists = m.get_node(&id).is_some();
        let url_taken = m
            .nodes()
            .any(|(_, n)| n.peer_url.trim_end_matches('/') == peer_url.trim_end_matches('/'));
        (exists, url_taken, m.nodes().count())
    };
    // The URL first: our ids derive from it, so a taken URL is the real reason.
    if url_taken {
        return Err(EtcdError::new(
            Code::ExistingPeerAddr,
            "etcdserver: peerURL exists",
            0,
        ));
    }
    if exists {
        return Err(EtcdError::new(
            Code::ExistingPeerAddr,
            "etcdserver: ID exists",
            0,
        ));
    }
    if count >= max_size {
        return Err(EtcdError::new(
            Code::NoMorePeer,
            format!("the cluster has {count} members"),
            0,
        ));
    }
    let member = Member {
        name: String::new(),
        peer_url: peer_url.to_string(),
        client_url: String::new(),
    };
    node.raft
        .add_learner(id, member.clone(), false)
        .await
        .map_err(|e| EtcdError::raft(format!("membership change failed: {e}")))?;
    Ok((id, member))
}

/// Leader only: update a member's peer URL (`PUT /v2/members/<id>`).
pub async fn update_member(node: &RaftNode, id: NodeId, peer_url: &str) -> Result<(), EtcdError> {
    let _serial = node.membership_lock.lock().await;
    let Some(mut member) = node
        .replica
        .read()
        .membership
        .membership()
        .get_node(&id)
        .cloned()
    else {
        return Err(EtcdError::new(
            Code::KeyNotFound,
            format!("No such member: {id:x}"),
            0,
        ));
    };
    member.peer_url = peer_url.to_string();
    node.raft
        .change_membership(
            ChangeMembers::SetNodes(BTreeMap::from([(id, member.clone())])),
            true,
        )
        .await
        .map_err(|e| EtcdError::raft(format!("membership change failed: {e}")))?;
    if !member.name.is_empty() {
        let reg = Command::Register {
            name: member.name,
            peer_url: member.peer_url,
            client_url: member.client_url,
        };
        node.propose(reg).await?;
    }
    Ok(())
}

/// Leader only: remove a member from the configuration and the registry.
pub async fn remove(node: &RaftNode, id: NodeId) -> Result<(), EtcdError> {
    let _serial = node.membership_lock.lock().await;
    let (member, is_voter) = {
        let d = node.replica.read();
        let m = d.membership.membership();
        (m.get_node(&id).cloned(), m.voter_ids().any(|v| v == id))
    };
    let Some(member) = member else {
        return Err(EtcdError::new(
            Code::KeyNotFound,
            format!("No such member: {id:x}"),
            0,
        ));
    };
    let change = if is_voter {
        ChangeMembers::RemoveVoters(BTreeSet::from([id]))
    } else {
        ChangeMembers::RemoveNodes(BTreeSet::from([id]))
    };
    tracing::info!(id = format!("{id:x}"), member = %member, "removing member");
    // Unregister first: once the configuration drops this member, a leader removing itself
    // stops serving, and the registry entry would stay behind.
    node.propose(Command::Unregister {
        name: member.name,
        id: Some(id),
    })
    .await?;
    node.raft
        .change_membership(change, false)
        .await
        .map_err(|e| EtcdError::raft(format!("membership change failed: {e}")))?;
    Ok(())
}

/// `--force-new-cluster`: make this member, from its own data, a cluster of one. Before Raft
/// starts, the log gets one more entry, a configuration with this member as the only voter
/// (at a term above any it has seen, with a vote for itself at that term); Raft then starts
/// with that configuration, elects this member at once and commits the entry with its first
/// one. Everything in the log stays, including entries this member did not know to be
/// committed (etcd drops those; keeping them never loses an acknowledged write, and a write
/// whose outcome was unknown may then turn out applied, which its client allows for).
///
/// Returns the members the configuration dropped (for the caller to unregister once this
/// member leads); empty when the log is empty (a new cluster: nothing to force) or this
/// member is already alone.
pub async fn force_new_cluster(
    log: &mut LogStore,
    applied: &StoredMembership,
    id: NodeId,
    me: &Member,
) -> Result<Vec<(NodeId, Member)>, String> {
    let state = log.get_log_state().await.map_err(|e| e.to_string())?;
    let Some(last) = state.last_log_id else {
        return Ok(Vec::new());
    };
    // The configuration in force: the last one in the log, else the applied one.
    let mut config = applied.membership().clone();
    let mut from = state.last_purged_log_id.map_or(0, |l| l.index + 1);
    while from <= last.index {
        let to = (from + 1024).min(last.index + 1);
        let entries = log
            .try_get_log_entries(from..to)
            .await
            .map_err(|e| e.to_string())?;
        for e in entries {
            if let EntryPayload::Membership(m) = e.payload {
                config = m;
            }
        }
        from = to;
    }
    if config.get_node(&id).is_none() {
        return Err(format!(
            "this member ({id:x}) is not in the configuration its log holds; \
             --force-new-cluster needs a member's own data directory"
        ));
    }
    let dropped: Vec<(NodeId, Member)> = config
        .nodes()
        .filter(|(n, _)| **n != id)
        .map(|(n, m)| (*n, m.clone()))
        .collect();
    let alone = config.voter_ids().eq([id]);
    if dropped.is_empty() && alone {
        tracing::info!("--force-new-cluster: this member is already a cluster of one");
        return Ok(Vec::new());
    }
    let vote = log.read_vote().await.map_err(|e| e.to_string())?;
    let term = vote
        .map_or(0, |v| v.leader_id().get_term())
        .max(last.leader_id.get_term())
        + 1;
    let entry = openraft::Entry::<TypeConfig> {
        log_id: openraft::LogId::new(CommittedLeaderId::new(term, id), last.index + 1),
        payload: EntryPayload::Membership(openraft::Membership::new(
            vec![BTreeSet::from([id])],
            BTreeMap::from([(id, me.clone())]),
        )),
    };
    log.save_vote(&Vote::new(term, id))
        .await
        .map_err(|e| e.to_string())?;
    log.write_entries([entry]).map_err(|e| e.to_string())?;
    tracing::warn!(
        index = last.index + 1,
        term,
        removed = %dropped.iter().map(|(_, m)| m.to_string()).collect::<Vec<_>>().join(", "),
        "--force-new-cluster: this member is now a cluster of one; the other members are removed \
         (never restart them with their old data: add members afresh)"
    );
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_depend_on_url_and_token() {
        let a = member_id("http://127.0.0.1:7001", "etcd-cluster");
        assert_eq!(a, member_id("http://127.0.0.1:7001/", "etcd-cluster"));
        assert_ne!(a, member_id("http://127.0.0.1:7002", "etcd-cluster"));
        assert_ne!(a, member_id("http://127.0.0.1:7001", "other"));
        // Pinned (computed independently): changing the hash would give the new members of
        // existing clusters ids that differ from what `POST /v2/members` announced.
        assert_eq!(format!("{a:x}"), "7b402c25cf462373");
        let ids = BTreeSet::from([1, 2]);
        assert_eq!(
            cluster_id("t", &ids),
            cluster_id("t", &BTreeSet::from([2, 1]))
        );
    }
}
