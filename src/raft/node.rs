//! The handle the API uses to talk to Raft: propose commands, learn who leads, wait until
//! the node is ready to answer.
//!
//! **Group commit.** openraft 0.9 persists one client entry per storage call on the leader,
//! so proposing each request as its own entry would cost one fsync per write. Instead every
//! proposal goes into a queue; a batcher task (`batch.rs`) takes whatever has accumulated (up to
//! [`MAX_BATCH`] commands or [`MAX_BATCH_BYTES`]) and proposes it as *one* entry, with at most
//! [`MAX_IN_FLIGHT`] batch outstanding: the next batch fills while the current one is synced
//! and applied. (The log is synced on Raft's own thread, which also applies entries, so a
//! second batch in flight only made the first one's answer wait for the second one's sync:
//! measured, one in flight gave sequential writes ~12% more throughput and CAS on one key
//! ~30% more successes, with no loss at 64 or 256 connections.) Each command gets its own
//! result back. A write is answered only after its entry is committed and applied.
//!
//! **Forwarding.** A follower does not send each write to the leader on its own: a forwarder
//! task (`forward.rs`) coalesces the writes waiting on this node into one `/raft/propose` call (up to
//! [`MAX_FORWARD`] commands, [`FORWARD_IN_FLIGHT`] calls outstanding), and the leader puts them
//! into its own queue, so they join its batches. Each command still gets its own result.
//!
//! **Quorum reads** wait for a read-index round shared by the reads waiting (`read_index.rs`).
//!
//! **Time.** The leader proposes `Expire { now }` with its own clock every
//! [`EXPIRE_TICK`] when some node is due; replicas never expire anything on their own.
//!
//! **Readiness.** After a restart the node answers nothing until its store has caught up with
//! everything its log held at start-up and a leader is known: a read never sees a half
//! recovered store.

use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::ServerState;
use tokio::sync::{mpsc, oneshot, watch};

use super::batch::{Proposal, batcher};
use super::forward::forwarder;
use super::network::PeerClient;
pub use super::proposal::{
    EXPIRE_TICK, FORWARD_IN_FLIGHT, MAX_BATCH, MAX_BATCH_BYTES, MAX_FORWARD, MAX_IN_FLIGHT,
    PROPOSAL_TIMEOUT, ProposeError, READY_TIMEOUT, Written,
};
use super::proposal::{RETRY_PAUSE, leader_of, leads, shutting_down, unknown_outcome};
use super::read_index::{
    READS_WAITING, ReadWaiter, confirm_leadership, leaders_read_index, read_index,
    read_index_rounds,
};
use super::state_machine::{Replica, members};
use super::types::{Member, NodeId, Raft};
use crate::command::Command;
use crate::error::EtcdError;
use crate::instruments::{Histogram, PeerStats};

pub struct RaftNode {
    pub id: NodeId,
    pub me: Member,
    pub raft: Raft,
    pub replica: Arc<Replica>,
    queue: mpsc::Sender<Proposal>,
    /// Writes waiting to be forwarded to the leader (this node follows).
    forward_queue: mpsc::Sender<Proposal>,
    /// Reads waiting for this node (leading) to confirm its leadership.
    read_local: mpsc::Sender<ReadWaiter>,
    /// Reads waiting for the leader's read index (this node follows).
    read_remote: mpsc::Sender<ReadWaiter>,
    ready_tx: watch::Sender<bool>,
    /// How long proposals took, from queueing to applied (for `/metrics`).
    pub proposal_seconds: Histogram,
    /// Proposals that failed (no leader, timeout, shutdown).
    pub proposals_failed: std::sync::atomic::AtomicU64,
    /// Round-trip statistics of the RPCs this node sends to its peers.
    pub peer_stats: Arc<PeerStats>,
    /// The client for peer ports (forwarding to the leader).
    pub client: PeerClient,
    /// Serializes membership changes (joins, removals).
    pub membership_lock: tokio::sync::Mutex<()>,
}

/// Where a follower's forwarder runs - the clients' runtime - and the peer client (a pool of
/// its own, see `PeerClient::another_pool`) it sends with.
pub struct Forwarding {
    pub client: PeerClient,
    pub runtime: tokio::runtime::Handle,
}

impl RaftNode {
    /// Wrap a started Raft instance and spawn the batcher (on the current runtime, Raft's) and
    /// the forwarder (as `forwarding` says). The node is not ready until
    /// [`RaftNode::set_ready`] is called.
    pub fn new(
        id: NodeId,
        me: Member,
        raft: Raft,
        replica: Arc<Replica>,
        peer_stats: Arc<PeerStats>,
        client: PeerClient,
        forwarding: Forwarding,
    ) -> Arc<RaftNode> {
        let (queue, rx) = mpsc::channel(16 * MAX_BATCH);
        tokio::spawn(batcher(raft.clone(), rx));
        let (forward_queue, rx) = mpsc::channel(16 * MAX_FORWARD);
        // On the clients' runtime: a write's hand-off to the forwarder and the leader's answer
        // back stay on the worker that serves the client, instead of crossing to Raft's thread
        // and back (two thread wake-ups per forwarded write; see docs/architecture.md).
        // With a connection pool of its own, so that Raft's own calls never use connections
        // driven by the clients' runtime.
        forwarding
            .runtime
            .spawn(forwarder(raft.clone(), forwarding.client, id, rx));
        let (read_local, rx) = mpsc::channel(READS_WAITING);
        let r = raft.clone();
        tokio::spawn(read_index_rounds(rx, move || confirm_leadership(r.clone())));
        tokio::spawn(snapshot_when_due(raft.clone(), replica.clone()));
        let (read_remote, rx) = mpsc::channel(READS_WAITING);
        let (r, c) = (raft.clone(), client.clone());
        tokio::spawn(read_index_rounds(rx, move || {
            leaders_read_index(r.clone(), c.clone(), id)
        }));
        let (ready_tx, _) = watch::channel(false);
        Arc::new(RaftNode {
            id,
            me,
            raft,
            replica,
            queue,
            forward_queue,
            read_local,
            read_remote,
            ready_tx,
            proposal_seconds: Histogram::default(),
            proposals_failed: Default::default(),
            peer_stats,
            client,
            membership_lock: tokio::sync::Mutex::new(()),
        })
    }

    /// Propose a command and wait until it is applied on this node. On a follower the
    /// command is forwarded to the leader (the choices in docs/api.md), and the answer waits until this node
    /// has applied it too, so the client reads its own write here. A command is re-sent only
    /// when it provably was not taken (not the leader, leader unreachable), until
    /// [`PROPOSAL_TIMEOUT`]; then error 300.
    pub async fn propose(&self, cmd: Command) -> Result<Written, EtcdError> {
        let started = Instant::now();
        let deadline = started + PROPOSAL_TIMEOUT;
        let res = loop {
            let attempt = match self.leader_id() {
                Some(id) if id == self.id => self.propose_local(cmd.clone(), deadline).await,
                Some(_) => self.forward(&cmd, deadline).await,
                None => Err(ProposeError::NotLeader),
            };
            match attempt {
                Ok(w) => break Ok(w),
                Err(ProposeError::Failed(e)) => break Err(e),
                Err(ProposeError::NotLeader) if Instant::now() < deadline => {
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(ProposeError::NotLeader) => {
                    break Err(EtcdError::raft(
                        "no leader (the cluster may have lost its quorum)",
                    ));
                }
            }
        };
        match &res {
            Ok(_) => self.proposal_seconds.observe(started.elapsed()),
            Err(_) => {
                self.proposals_failed
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        res
    }

    /// Propose through this node's own batcher (it must be the leader); waiting for room in
    /// the queue ends at `deadline`.
    async fn propose_local(
        &self,
        cmd: Command,
        deadline: Instant,
    ) -> Result<Written, ProposeError> {
        let (tx, rx) = oneshot::channel();
        let left = deadline.saturating_duration_since(Instant::now());
        enqueue(&self.queue, Proposal::new(cmd, tx), left).await?;
        // One deadline for the whole wait, queue included.
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx).await {
            Ok(answer) => {
                answer.unwrap_or_else(|_| Err(unknown_outcome("the node is shutting down")))
            }
            Err(_) => Err(unknown_outcome("the proposal timed out (no quorum?)")),
        }
    }

    /// Leader only: propose commands forwarded by a follower, in their order, each with its
    /// own result. They go through this node's batcher like its own clients' writes.
    pub async fn propose_forwarded(
        &self,
        cmds: Vec<Command>,
    ) -> Vec<Result<Written, ProposeError>> {
        if !self.is_leader() {
            return cmds.iter().map(|_| Err(ProposeError::NotLeader)).collect();
        }
        let mut waiting = Vec::with_capacity(cmds.len());
        let deadline = Instant::now() + PROPOSAL_TIMEOUT;
        for cmd in cmds {
            let (tx, rx) = oneshot::channel();
            let left = deadline.saturating_duration_since(Instant::now());
            waiting.push(
                enqueue(&self.queue, Proposal::new(cmd, tx), left)
                    .await
                    .map(|()| rx),
            );
        }
        let mut out = Vec::with_capacity(waiting.len());
        for w in waiting {
            out.push(match w {
                Ok(rx) => rx.await.unwrap_or_else(|_| Err(shutting_down())),
                Err(e) => Err(e),
            });
        }
        out
    }

    /// Send a command to the leader through the forwarder, then wait (bounded) until this
    /// node has applied it too (read-your-writes here).
    async fn forward(&self, cmd: &Command, deadline: Instant) -> Result<Written, ProposeError> {
        let (tx, rx) = oneshot::channel();
        let left = deadline.saturating_duration_since(Instant::now());
        // The leader's answer carries the key's previous value too: count it, so that one
        // forwarding call and its answer stay within MAX_BATCH_BYTES.
        let mut pending = Proposal::new(cmd.clone(), tx);
        if let Some(key) = cmd.key() {
            pending.cost += self.replica.read().state.store.value_len(key);
        }
        enqueue(&self.forward_queue, pending, left).await?;
        let left = deadline.saturating_duration_since(Instant::now());
        let w = match tokio::time::timeout(left, rx).await {
            Ok(answer) => answer.unwrap_or_else(|_| Err(shutting_down()))?,
            // Perhaps sent, outcome unknown: do not risk applying it twice. (If it is still
            // queued here, the forwarder drops it: this caller is gone.)
            Err(_) => return Err(unknown_outcome("forwarding to the leader timed out")),
        };
        // Answer only once this member has applied the write too: a success from a member
        // means that member holds it (as etcd's own wait for the local apply does). The
        // leader committed it, but if it dies now, this member may never learn the entry, and
        // a cluster later rebuilt from this member alone would not have it.
        let left = deadline.saturating_duration_since(Instant::now());
        if self.replica.wait_applied(w.raft_index, left).await {
            Ok(w)
        } else {
            Err(unknown_outcome(
                "the leader answered, but this member did not apply the write in time",
            ))
        }
    }

    pub fn set_ready(&self) {
        self.ready_tx.send_replace(true);
    }

    pub fn is_ready(&self) -> bool {
        *self.ready_tx.borrow()
    }

    /// Wait (bounded) until the node may answer requests.
    pub async fn wait_ready(&self) -> Result<(), EtcdError> {
        if self.is_ready() {
            return Ok(());
        }
        let mut rx = self.ready_tx.subscribe();
        match tokio::time::timeout(READY_TIMEOUT, rx.wait_for(|r| *r)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(EtcdError::raft(
                "this node has not recovered its store or found a leader yet",
            )),
        }
    }

    /// Make the next local read linearizable (`quorum=true`): get a read index - the leader's
    /// commit index, confirmed by a quorum still following it (a read-index round, no log
    /// entry) - and wait until this node has applied up to it. Reads that arrive together
    /// share one round (see [`read_index_rounds`]); a follower asks the leader for the index.
    pub async fn linearizable_read(&self) -> Result<(), EtcdError> {
        let deadline = Instant::now() + PROPOSAL_TIMEOUT;
        loop {
            let attempt = match self.leader_id() {
                Some(id) if id == self.id => self.read_index_local().await,
                Some(_) => read_index(&self.read_remote).await,
                None => Err(ProposeError::NotLeader),
            };
            match attempt {
                Ok(index) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    return match self.replica.wait_applied(index, left).await {
                        true => Ok(()),
                        false => Err(EtcdError::raft("catching up with the leader timed out")),
                    };
                }
                Err(ProposeError::Failed(e)) => return Err(e),
                Err(ProposeError::NotLeader) if Instant::now() < deadline => {
                    tokio::time::sleep(RETRY_PAUSE).await
                }
                Err(ProposeError::NotLeader) => {
                    return Err(EtcdError::raft(
                        "no leader (the cluster may have lost its quorum)",
                    ));
                }
            }
        }
    }

    /// Leader only: confirm leadership with a quorum and return the read index (not yet
    /// necessarily applied here). Shares a round with the reads waiting at the same time.
    pub async fn read_index_local(&self) -> Result<u64, ProposeError> {
        read_index(&self.read_local).await
    }

    /// The current leader and its member record, as far as this node knows.
    pub fn leader(&self) -> Option<(NodeId, Member)> {
        leader_of(&self.raft)
    }

    /// The current leader's id, as far as `raft` knows (no member record copied).
    pub fn leader_id(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    pub fn is_leader(&self) -> bool {
        leads(&self.raft)
    }

    pub fn state(&self) -> ServerState {
        self.raft.metrics().borrow().state
    }

    /// The member record of `id`, if it is in the current configuration.
    pub fn member(&self, id: NodeId) -> Option<Member> {
        self.replica
            .read()
            .membership
            .membership()
            .get_node(&id)
            .cloned()
    }

    /// Every member of the current configuration, by id.
    pub fn members(&self) -> Vec<(NodeId, Member)> {
        members(&self.replica.read().membership)
    }

    /// The log index this node's store has applied up to. It can run ahead of what openraft
    /// reports (`raft_position`) for a moment, never behind: an answer that waits for a change
    /// to be applied elsewhere names this index.
    pub fn applied_index(&self) -> u64 {
        self.replica.read().last_applied.map_or(0, |l| l.index)
    }

    /// Raft commit position as of now: (last applied index, current term).
    pub fn raft_position(&self) -> (u64, u64) {
        let m = self.raft.metrics();
        let m = m.borrow();
        (m.last_applied.map_or(0, |l| l.index), m.current_term)
    }

    /// Has this node applied an entry of the current term? A new leader appends a blank entry
    /// in its term; once that is applied, everything committed before it is applied here too -
    /// the cluster configuration included, which a freshly initialized member has not applied
    /// before that.
    pub fn applied_current_term(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.last_applied
            .is_some_and(|l| l.leader_id.term == m.current_term)
    }

    /// Leader only: propose an expiry when some node is due. Runs until the node stops.
    pub async fn expire_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(EXPIRE_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if !self.is_leader() || !self.is_ready() {
                continue;
            }
            let now = crate::clock::now_nanos();
            let due = self
                .replica
                .read()
                .state
                .store
                .next_expiry()
                .is_some_and(|t| t <= now);
            if due && let Err(e) = self.propose(Command::Expire { now }).await {
                tracing::warn!(error = %e, "expiry proposal failed");
            }
        }
    }
}

/// Ask openraft for a snapshot whenever the state machine says one is due (`-snapshotCount`
/// writes since the last one). A request while one is being built is ignored by openraft;
/// the next applied batch reminds us.
async fn snapshot_when_due(raft: Raft, replica: Arc<Replica>) {
    loop {
        replica.snapshot_due.notified().await;
        if raft.trigger().snapshot().await.is_err() {
            return;
        }
    }
}

/// Put a proposal into a queue, waiting at most `wait` for room. Not queued means not
/// proposed, so a timeout here is a plain failure (error 300), never a duplicate.
pub(super) async fn enqueue(
    queue: &mpsc::Sender<Proposal>,
    p: Proposal,
    wait: Duration,
) -> Result<(), ProposeError> {
    // Almost always there is room: no timer then.
    let p = match queue.try_send(p) {
        Ok(()) => return Ok(()),
        Err(mpsc::error::TrySendError::Closed(_)) => return Err(shutting_down()),
        Err(mpsc::error::TrySendError::Full(p)) => p,
    };
    match tokio::time::timeout(wait, queue.send(p)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(shutting_down()),
        Err(_) => Err(ProposeError::Failed(EtcdError::raft(
            "too many writes waiting (the leader is not keeping up)",
        ))),
    }
}
