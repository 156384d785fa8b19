//! Starting and stopping a node: data directory, identity, listeners, Raft, background tasks.
//!
//! Start-up order matters for clear failures: the data directory and the `info` file first
//! (not writable -> one line naming the path), then both listeners (port in use -> one line
//! naming the address), then the data file (corrupt -> one line naming the file), and only
//! then Raft. Requests that arrive before the node has recovered wait for it (bounded).
//!
//! The data directory and its `info` file are handled in [`crate::data_dir`].
//!
//! Shutdown (SIGINT/SIGTERM): stop accepting, end open watches, give in-flight requests a
//! bounded grace period, stop Raft, close the data file.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::Duration;

use openraft::SnapshotPolicy;
use openraft::storage::RaftLogStorage;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::api::{self, AppState};
use crate::clock::now_nanos;
use crate::command::Command;
use crate::config::{ClusterState, Config};
use crate::data_dir::{DATA_FILE, WAL_DIR, prepare_data_dir};
use crate::error::{Error, EtcdError, Result};
use crate::raft::cluster::{self, JoinRequest, JoinResponse};
use crate::raft::disk::{Disk, META_CLUSTER_ID, META_NODE_ID, META_WAL};

use crate::raft::log_store::LogStore;
use crate::raft::network::{Network, PeerClient};
use crate::raft::node::{Forwarding, RaftNode};
use crate::raft::state_machine::StateMachine;
use crate::raft::types::{Member, NodeId, Raft};

/// How long in-flight requests may take to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

async fn bind(what: &str, addr: &str) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Io(format!("cannot listen on {what} address {addr}: {e}")))
}

/// This node's Raft id: read from the data file, or (first start) derived from its peer URL
/// and the cluster token, as etcd 2.x does, and saved.
fn node_id(disk: &Disk, cfg: &Config) -> Result<NodeId> {
    if let Some(id) = read_u64(disk, META_NODE_ID)? {
        return Ok(id);
    }
    let id = cluster::member_id(&cfg.peer_url, &cfg.initial_cluster_token);
    write_u64(disk, META_NODE_ID, id)?;
    Ok(id)
}

fn read_u64(disk: &Disk, key: &str) -> Result<Option<u64>> {
    disk.read_u64(key)
        .map_err(|e| Error::Storage(e.to_string()))
}

fn write_u64(disk: &Disk, key: &str, v: u64) -> Result<()> {
    disk.write_u64(key, v)
        .map_err(|e| Error::Storage(e.to_string()))
}

fn raft_config(cfg: &Config) -> Result<openraft::Config> {
    openraft::Config {
        cluster_name: "etcd".to_string(),
        heartbeat_interval: cfg.heartbeat_ms,
        election_timeout_min: cfg.election_ms,
        election_timeout_max: cfg.election_ms * 2,
        // Snapshots count writes, not entries (one entry carries a batch of them): the state
        // machine says when one is due and `RaftNode` asks for it.
        snapshot_policy: SnapshotPolicy::Never,
        max_in_snapshot_log_to_keep: 1000,
        // Per snapshot chunk (3 MiB): generous for a loaded machine.
        install_snapshot_timeout: 10_000,
        ..Default::default()
    }
    .validate()
    .map_err(|e| Error::Config(format!("raft timing: {e}")))
}

/// How a fresh node (empty log) comes into a cluster.
enum Bootstrap {
    /// Already a member (the log says so): just start.
    Restart,
    /// Create a new cluster with these members.
    Create(BTreeMap<NodeId, Member>),
    /// Join an existing cluster through these peer URLs.
    Join(Vec<String>),
}

fn plan(cfg: &Config, me: &Member, id: NodeId, fresh: bool) -> Bootstrap {
    if !fresh {
        return Bootstrap::Restart;
    }
    let others: Vec<String> = cfg
        .initial_cluster
        .iter()
        .filter(|(name, url)| {
            *name != cfg.name && url.trim_end_matches('/') != cfg.peer_url.trim_end_matches('/')
        })
        .map(|(_, url)| url.clone())
        .collect();
    if !cfg.join.is_empty() {
        let peers = cfg.join.iter().map(|p| {
            if p.contains("://") {
                p.clone()
            } else {
                format!("{}://{p}", scheme(&cfg.peer_url))
            }
        });
        return Bootstrap::Join(peers.collect());
    }
    if cfg.initial_cluster_state == ClusterState::Existing && !others.is_empty() {
        return Bootstrap::Join(others);
    }
    if others.is_empty() {
        return Bootstrap::Create(BTreeMap::from([(id, me.clone())]));
    }
    // Every member of a new multi-node cluster initializes with the same configuration
    // (names and peer URLs; client URLs are filled in when each member joins).
    let members = cfg
        .initial_cluster
        .iter()
        .map(|(name, url)| {
            let mid = cluster::member_id(url, &cfg.initial_cluster_token);
            (
                mid,
                Member {
                    name: name.clone(),
                    peer_url: url.clone(),
                    client_url: String::new(),
                },
            )
        })
        .collect();
    Bootstrap::Create(members)
}

fn scheme(url: &str) -> &str {
    url.split_once("://").map_or("http", |(s, _)| s)
}

/// How a member's run ended without an error.
#[derive(Debug)]
pub enum Stopped {
    /// Shut down (a signal, or removal from the cluster).
    Done,
    /// Discovery found the cluster full and `--discovery-fallback proxy` asks to serve it as
    /// a proxy instead: this configuration (proxy mode, the cluster's members) says how.
    BecomeProxy(Box<Config>),
}

/// Run a node until `shutdown` resolves (or the node is removed from its cluster).
pub async fn run(
    mut cfg: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Stopped> {
    // Shared with the threads that open the log and load the snapshot: a start that fails
    // early returns while they still run, and the directory stays locked until they end.
    let dir_lock = Arc::new(prepare_data_dir(&mut cfg)?);
    api::params::set_max_body(cfg.max_request_bytes);
    // Certificates first: a bad file is reported before anything is bound or opened.
    let client_tls = crate::tls::server_config(&cfg.client_tls)?;
    let peer_tls = crate::tls::server_config(&cfg.peer_tls)?;
    let peer_client_tls = crate::tls::client_config(&cfg.peer_tls)?;
    let client_listener = bind("client", &cfg.client_listen).await?;
    let peer_listener = bind("peer", &cfg.peer_listen).await?;

    let storage = |e: crate::raft::disk::DiskError| Error::Storage(e.to_string());
    let wal_dir = cfg.data_dir.join(WAL_DIR);
    // Start-up reads two independent things: the log (every segment is scanned) and the data
    // file (checked page by page, then the snapshot is decoded). An existing log is opened
    // on a thread of its own while the data file is checked; the snapshot loads while the
    // rest of the start-up goes on. (Without segments the log may first have to be moved out
    // of the data file: `legacy_log`.)
    let early_log =
        crate::raft::wal::has_segments(&wal_dir).then(|| open_log(&wal_dir, dir_lock.clone()));
    let opening = std::time::Instant::now();
    let disk = Disk::open(&cfg.data_dir.join(DATA_FILE)).map_err(storage)?;
    tracing::info!(
        ms = opening.elapsed().as_millis(),
        "data file checked and open"
    );
    crate::raft::migrate::legacy_log(&disk, &wal_dir).await?;
    let had_log = crate::raft::wal::has_segments(&wal_dir);
    if !had_log && read_u64(&disk, META_WAL)?.is_some() {
        return Err(Error::Storage(format!(
            "the log in {} is missing, though this member wrote one: restore it, or remove \
             the data directory and add the member to its cluster again",
            wal_dir.display()
        )));
    }
    let loading = {
        let (disk, history, every) = (disk.clone(), cfg.history_size, cfg.snapshot_count);
        let locked = dir_lock.clone();
        tokio::task::spawn_blocking(move || {
            let _locked = locked;
            StateMachine::open(disk, history, every)
        })
    };
    let mut log_store = match early_log {
        Some(opened) => opened,
        None => open_log(&wal_dir, dir_lock.clone()),
    }
    .await
    .map_err(|e| Error::Storage(format!("opening the log: {e}")))??;
    if !had_log {
        write_u64(&disk, META_WAL, 1)?;
    }
    let mut log_failure = log_store.failure();
    let log_empty = log_store
        .get_log_state()
        .await
        .map_err(|e| Error::Storage(e.to_string()))?
        .last_log_id
        .is_none();
    if let Some(url) = cfg.discovery.clone() {
        if log_empty {
            // As etcd: the discovery URL is the cluster token, so every member computes the
            // same ids from the registered peer URLs.
            cfg.initial_cluster_token = url.clone();
            let id = node_id(&disk, &cfg)?;
            match crate::discovery::bootstrap(&url, id, &cfg.name, &cfg.peer_url).await {
                Ok(members) => {
                    cfg.initial_cluster = members;
                    cfg.initial_cluster_state = ClusterState::New;
                }
                Err(crate::discovery::Failure::Full { why, members })
                    if cfg.discovery_fallback_proxy =>
                {
                    tracing::warn!("{why}; becoming a proxy (--discovery-fallback proxy)");
                    cfg.initial_cluster = members;
                    cfg.proxy = crate::config::ProxyMode::On;
                    return Ok(Stopped::BecomeProxy(Box::new(cfg)));
                }
                Err(e) => return Err(e.into()),
            }
        } else {
            tracing::info!("this member has a log: the discovery URL is not used");
        }
    }
    let id = node_id(&disk, &cfg)?;
    let (mut sm, shared) = loading
        .await
        .map_err(|e| Error::Storage(format!("loading the snapshot: {e}")))??;
    // A leader with followers syncs its own entries while it replicates them; what must not
    // run ahead of its disk waits for `durable` (see `raft::log_store`).
    let durable = log_store.durable();
    sm.apply_when_durable(durable.clone());
    log_store.defer_syncs_when_leading(id);
    let me = Member {
        name: cfg.name.clone(),
        peer_url: cfg.peer_url.clone(),
        client_url: cfg.client_url.clone(),
    };
    let dropped = if cfg.force_new_cluster {
        let applied = shared.read().membership.clone();
        cluster::force_new_cluster(&mut log_store, &applied, id, &me)
            .await
            .map_err(|e| Error::Raft(format!("--force-new-cluster: {e}")))?
    } else {
        Vec::new()
    };
    let boot_last = log_store
        .get_log_state()
        .await
        .map_err(|e| Error::Storage(e.to_string()))?
        .last_log_id
        .map_or(0, |l| l.index);
    let peer_stats = Arc::new(crate::instruments::PeerStats::default());
    let peer_client = PeerClient::new(peer_client_tls.clone());
    let forward_client = peer_client.another_pool(peer_client_tls);
    let network = Network {
        client: peer_client.clone(),
        stats: peer_stats.clone(),
        durable,
    };
    // Raft runs on a runtime of its own (one thread): its core, state machine and the write
    // batcher are never queued behind client connections.
    let raft_rt = RaftRuntime(Some(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("raft")
            .enable_all()
            .build()
            .map_err(|e| Error::Io(format!("cannot start the raft runtime: {e}")))?,
    ));
    let raft_config = Arc::new(raft_config(&cfg)?);
    let raft = raft_rt
        .handle()
        .spawn({
            let log_store = log_store.clone();
            async move { Raft::new(id, raft_config, network, log_store, sm).await }
        })
        .await
        .map_err(|e| Error::Raft(e.to_string()))?
        .map_err(|e| Error::Raft(e.to_string()))?;
    let fresh = !raft
        .is_initialized()
        .await
        .map_err(|e| Error::Raft(e.to_string()))?;
    let plan = plan(&cfg, &me, id, fresh);
    let mut cluster_id = read_u64(&disk, META_CLUSTER_ID)?.unwrap_or(0);
    if let Bootstrap::Create(members) = &plan {
        let ids = members.keys().copied().collect();
        cluster_id = cluster::cluster_id(&cfg.initial_cluster_token, &ids);
        write_u64(&disk, META_CLUSTER_ID, cluster_id)?;
        raft.initialize(members.clone())
            .await
            .map_err(|e| Error::Raft(e.to_string()))?;
    }
    tracing::info!(name = %cfg.name, id = format!("{id:x}"), fresh, client = %cfg.client_url, peer = %cfg.peer_url, "node starting");

    let (removed_tx, mut removed_rx) = watch::channel(false);
    let main_rt = tokio::runtime::Handle::current();
    let node = {
        let _raft_context = raft_rt.handle().enter();
        RaftNode::new(
            id,
            me.clone(),
            raft.clone(),
            shared.clone(),
            peer_stats,
            peer_client,
            Forwarding {
                client: forward_client,
                runtime: main_rt,
            },
        )
    };
    let state = Arc::new(AppState {
        node: node.clone(),
        cfg: Arc::new(cfg.clone()),
        start_time: now_nanos(),
        leader_since: AtomicI64::new(now_nanos()),
        cluster_id: cluster_id.into(),
        cluster_header: Default::default(),
        http: Default::default(),
        removed: removed_tx,
    });

    // A single voter need not wait out an election timeout.
    if voters_are_only(&node, id) {
        let _ = raft.trigger().elect().await;
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let client = crate::conn::serve(
        client_listener,
        client_tls,
        api::client_handler(state.clone()),
        stop_rx.clone(),
        crate::conn::client_limits(&cfg),
        "client",
    );
    // The peer port is served on Raft's runtime: an AppendEntries or a forwarded write goes
    // from the socket to the Raft core without changing threads.
    let peer_listener = peer_listener
        .into_std()
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|e| Error::Io(format!("peer listener: {e}")))?;
    let peer_handler = api::peer_handler(state.clone());
    let peer = raft_rt.handle().spawn(async move {
        match TcpListener::from_std(peer_listener) {
            Ok(l) => {
                crate::conn::serve(
                    l,
                    peer_tls,
                    peer_handler,
                    stop_rx,
                    crate::conn::PEER_LIMITS,
                    "peer",
                )
                .await
            }
            Err(e) => tracing::error!(error = %e, "cannot serve the peer port"),
        }
    });
    let servers = tokio::spawn(async move {
        let _ = tokio::join!(client, peer);
    });

    // A joining node serves its peer port first: the leader replicates to it while it joins.
    let mut joined_at = 0;
    if let Bootstrap::Join(peers) = &plan {
        match join_cluster(&state, peers, cfg.max_retry).await {
            Ok(resp) => {
                write_u64(&disk, META_CLUSTER_ID, resp.cluster_id)?;
                state
                    .cluster_id
                    .store(resp.cluster_id, std::sync::atomic::Ordering::Relaxed);
                joined_at = resp.applied;
            }
            Err(e) => {
                stop_tx.send_replace(true);
                let _ = raft.shutdown().await;
                return Err(e);
            }
        }
    }

    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(become_ready(
        state.clone(),
        boot_last.max(joined_at),
        dropped,
    ));
    tasks.spawn(node.clone().expire_loop());
    tasks.spawn(track_leader(state.clone()));
    tasks.spawn(track_voters(raft.clone(), log_store));
    tasks.spawn(watch_removal(state.clone()));

    let mut failed = None;
    let mut raft_failed = None;
    let mut removed = false;
    tokio::select! {
        _ = shutdown => tracing::info!("shutting down"),
        _ = removed_rx.wait_for(|r| *r) => {
            tracing::warn!("this node was removed from the cluster; shutting down");
            removed = true;
        }
        Ok(why) = log_failure.wait_for(|f| f.is_some()) => {
            failed = why.clone();
        }
        why = raft_stopped(&raft) => raft_failed = Some(why),
    }
    if let Some(why) = raft_failed {
        // A failed log write stops Raft's core too, and is reported before it: its own
        // message (which write, which file) says more.
        failed = Some(log_failure.borrow().clone().unwrap_or(why));
    }
    if failed.is_some() || removed {
        // Nothing more will be applied here: requests waiting for an apply get their answer
        // now, not at their deadline.
        node.replica.stop_waiters();
    }
    stop_tx.send_replace(true);
    // Open watches would keep their connections forever: end them now.
    shared.read().state.store.close_watches();
    if tokio::time::timeout(SHUTDOWN_GRACE, servers).await.is_err() {
        tracing::warn!("requests still running after {SHUTDOWN_GRACE:?}; closing anyway");
    }
    tasks.abort_all();
    let _ = raft.shutdown().await;
    node.replica.stop_waiters();
    drop(node);
    drop(state);
    drop(raft_rt);
    match failed {
        // The log's state on disk is unknown after a failed write: stop, acknowledging
        // nothing more, and say why.
        Some(why) => Err(Error::Storage(format!("{why}; stopping"))),
        None => Ok(Stopped::Done),
    }
}

/// Tell the log whether the cluster has voters besides this node (whether a leader's append
/// may defer its sync): looked at twice a second, as a change of membership is rare and a
/// late answer only costs speed for a moment.
async fn track_voters(raft: Raft, log: LogStore) {
    let m = raft.metrics();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        let voters = m
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .count();
        log.set_replicated(voters > 1);
        tick.tick().await;
    }
}

/// Resolves when Raft's core has stopped by itself (a fatal error, such as a snapshot that
/// could not be saved on a full disk): the node can then commit nothing more, so it must stop
/// rather than answer every write with "no leader" forever.
async fn raft_stopped(raft: &Raft) -> String {
    // Looked at twice a second rather than on every change of the metrics: those change with
    // every write, and a task woken per write costs a sequential writer ~20% (measured).
    let m = raft.metrics();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        if let Err(fatal) = &m.borrow().running_state {
            return format!("raft stopped: {fatal}");
        }
        if m.has_changed().is_err() {
            return "raft stopped".to_string();
        }
    }
}

/// Open (scan) the log in `dir` on a blocking thread, holding the data directory's lock.
fn open_log(
    dir: &std::path::Path,
    locked: Arc<std::fs::File>,
) -> tokio::task::JoinHandle<Result<LogStore>> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let _locked = locked;
        let opening = std::time::Instant::now();
        let log =
            LogStore::open(&dir, Default::default()).map_err(|e| Error::Storage(e.to_string()))?;
        tracing::info!(ms = opening.elapsed().as_millis(), "log open");
        Ok(log)
    })
}

/// The runtime Raft's tasks run on; stopped (without waiting) when dropped, which may happen
/// inside the main runtime.
struct RaftRuntime(Option<tokio::runtime::Runtime>);

impl RaftRuntime {
    fn handle(&self) -> &tokio::runtime::Handle {
        self.0.as_ref().expect("running until dropped").handle()
    }
}

impl Drop for RaftRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Ask the cluster (through any of `peers`) to take this node in; retried `retries` times.
async fn join_cluster(state: &AppState, peers: &[String], retries: u32) -> Result<JoinResponse> {
    let req = JoinRequest {
        id: state.node.id,
        member: state.node.me.clone(),
        version: crate::raft::network::PEER_VERSION.to_string(),
    };
    let mut last = String::from("no peers given");
    for attempt in 0..=retries {
        if attempt > 0 {
            tokio::time::sleep(JOIN_RETRY_PAUSE).await;
        }
        for peer in peers {
            let answer: std::result::Result<std::result::Result<JoinResponse, EtcdError>, _> =
                state
                    .node
                    .client
                    .post_json(peer, "/join", &req, cluster::JOIN_TIMEOUT)
                    .await;
            match answer {
                Ok(Ok(resp)) => {
                    tracing::info!(peer = %peer, "joined the cluster");
                    return Ok(resp);
                }
                Ok(Err(e))
                    if matches!(
                        e.code,
                        crate::error::Code::NoMorePeer | crate::error::Code::ExistingPeerAddr
                    ) =>
                {
                    return Err(Error::Config(format!(
                        "{peer} refused the join: {} ({})",
                        e.code.message_v2(),
                        e.cause
                    )));
                }
                Ok(Err(e)) => last = format!("{peer}: {}", e.cause),
                Err(e) => last = e.to_string(),
            }
            tracing::warn!(error = %last, "join attempt failed");
        }
    }
    Err(Error::Io(format!(
        "cannot join the cluster after {} attempts: {last}",
        retries + 1
    )))
}

/// Pause between rounds of join attempts.
const JOIN_RETRY_PAUSE: Duration = Duration::from_secs(2);

fn voters_are_only(node: &RaftNode, id: NodeId) -> bool {
    let d = node.replica.read();
    let voters: Vec<NodeId> = d.membership.membership().voter_ids().collect();
    voters == [id]
}

/// Open the gates once this node's store is current: on the leader, once everything its log
/// held at start-up and an entry of its own term are applied; on a follower, once it has
/// applied the leader's read index. On the way, make sure the cluster's record of this node
/// (voter, name, client URL, registry entry) is current.
async fn become_ready(state: Arc<AppState>, boot_last: u64, dropped: Vec<(NodeId, Member)>) {
    let node = &state.node;
    loop {
        let ok = match node.leader() {
            // The leader: everything its log held at start-up applied, and its own blank
            // entry too, so the configuration it reads (to record this member) is current.
            Some((id, _)) if id == node.id => {
                let applied = node.raft_position().0;
                applied >= boot_last && node.applied_current_term()
            }
            Some(_) => node.linearizable_read().await.is_ok(),
            None => false,
        };
        if ok {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    loop {
        let req = JoinRequest {
            id: node.id,
            member: node.me.clone(),
            version: crate::raft::network::PEER_VERSION.to_string(),
        };
        match crate::api::leader_calls::join(&state, req).await {
            Ok(_) => break,
            Err(e) => {
                tracing::warn!(error = %e, "updating this member's record failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    // After --force-new-cluster: the members the configuration dropped leave the registry and
    // are remembered as removed (`/v2/members` answers 410 for them).
    for (id, member) in dropped {
        let cmd = Command::Unregister {
            name: member.name.clone(),
            id: Some(id),
        };
        while let Err(e) = node.propose(cmd.clone()).await {
            tracing::warn!(error = %e, member = %member, "unregistering a removed member failed; retrying");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    tracing::info!(index = node.replica.read().state.store.index(), "ready");
    node.set_ready();
}

/// Tell `run` to stop once this node, having been a member, is no longer in the cluster.
async fn watch_removal(state: Arc<AppState>) {
    let node = &state.node;
    let removed = &state.removed;
    let mut m = node.raft.server_metrics();
    let mut was_member = false;
    loop {
        let is_member = m
            .borrow_and_update()
            .membership_config
            .membership()
            .get_node(&node.id)
            .is_some();
        if is_member {
            was_member = true;
        } else if was_member {
            removed.send_replace(true);
            return;
        }
        if m.changed().await.is_err() {
            return;
        }
    }
}

async fn track_leader(state: Arc<AppState>) {
    let mut m = state.node.raft.server_metrics();
    let mut last = m.borrow().current_leader;
    while m.changed().await.is_ok() {
        let now = m.borrow().current_leader;
        if now != last {
            last = now;
            api::record_leader_change(&state);
            tracing::info!(leader = ?now.map(|l| format!("{l:x}")), "leader changed");
        }
    }
}
