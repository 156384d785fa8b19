//! Starting and stopping a node: data directory, identity, listeners, Raft, background tasks.
//!
//! Start-up order matters for clear failures: the data directory and the `info` file first
//! (not writable -> one line naming the path), then both listeners (port in use -> one line
//! naming the address), then the data file (corrupt -> one line naming the file), and only
//! then Raft. Requests that arrive before the node has recovered wait for it (bounded).
//!
//! The data directory holds only files this server owns (Decision D11): `info` (the node's
//! identity, v0.1's JSON) and `etcd.redb` (Raft log, vote, snapshots, node id). `-f` removes
//! exactly those. An existing `info` wins over the command line unless `-f` is given.
//!
//! Shutdown (SIGINT/SIGTERM): stop accepting, end open watches, give in-flight requests a
//! bounded grace period, stop Raft, close the data file.

use std::collections::BTreeMap;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::Duration;

use openraft::storage::RaftLogStorage;
use openraft::{ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::api::{self, AppState, now_nanos};
use crate::command::Command;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::raft::disk::{Disk, META_NODE_ID};

/// Where the cluster id is kept in the data file.
const META_CLUSTER_ID: &str = "cluster_id";
use crate::raft::log_store::LogStore;
use crate::raft::network::{Network, PeerClient};
use crate::raft::node::RaftNode;
use crate::raft::state_machine::StateMachine;
use crate::raft::types::{Member, NodeId, Raft, TypeConfig};

/// The data file inside the data directory.
pub const DATA_FILE: &str = "etcd.redb";
/// The identity file inside the data directory.
pub const INFO_FILE: &str = "info";
/// How long in-flight requests may take to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// The node identity as v0.1 wrote it to `<data dir>/info`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Info {
    pub name: String,
    #[serde(rename = "raftURL")]
    pub raft_url: String,
    #[serde(rename = "etcdURL")]
    pub etcd_url: String,
    #[serde(rename = "webURL", default)]
    pub web_url: String,
    #[serde(rename = "raftListenHost", default)]
    pub raft_listen_host: String,
    #[serde(rename = "etcdListenHost", default)]
    pub etcd_listen_host: String,
    #[serde(rename = "raftTLS", default)]
    pub raft_tls: InfoTls,
    #[serde(rename = "etcdTLS", default)]
    pub etcd_tls: InfoTls,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct InfoTls {
    #[serde(rename = "CertFile", default)]
    pub cert_file: String,
    #[serde(rename = "KeyFile", default)]
    pub key_file: String,
    #[serde(rename = "CAFile", default)]
    pub ca_file: String,
}

fn host_of(hostport: &str) -> &str {
    hostport.rsplit_once(':').map_or(hostport, |(h, _)| h)
}

fn port_of(url: &str) -> Option<&str> {
    url.rsplit_once(':').map(|(_, p)| p.trim_end_matches('/'))
}

fn path_str(p: &Option<PathBuf>) -> String {
    p.as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

impl Info {
    fn from_config(cfg: &Config) -> Info {
        Info {
            name: cfg.name.clone(),
            raft_url: cfg.peer_url.clone(),
            etcd_url: cfg.client_url.clone(),
            web_url: String::new(),
            raft_listen_host: host_of(&cfg.peer_listen).to_string(),
            etcd_listen_host: host_of(&cfg.client_listen).to_string(),
            raft_tls: InfoTls {
                cert_file: path_str(&cfg.peer_tls.cert),
                key_file: path_str(&cfg.peer_tls.key),
                ca_file: path_str(&cfg.peer_tls.ca),
            },
            etcd_tls: InfoTls {
                cert_file: path_str(&cfg.client_tls.cert),
                key_file: path_str(&cfg.client_tls.key),
                ca_file: path_str(&cfg.client_tls.ca),
            },
        }
    }

    /// Let the saved identity win over the command line (v0.1 behaviour).
    fn apply_to(&self, cfg: &mut Config) {
        cfg.name = self.name.clone();
        cfg.peer_url = self.raft_url.clone();
        cfg.client_url = self.etcd_url.clone();
        if let Some(port) = port_of(&self.raft_url) {
            let host = if self.raft_listen_host.is_empty() {
                host_of(&cfg.peer_listen)
            } else {
                &self.raft_listen_host
            };
            cfg.peer_listen = format!("{host}:{port}");
        }
        if let Some(port) = port_of(&self.etcd_url) {
            let host = if self.etcd_listen_host.is_empty() {
                host_of(&cfg.client_listen)
            } else {
                &self.etcd_listen_host
            };
            cfg.client_listen = format!("{host}:{port}");
        }
    }

    /// 1-space indented JSON, like v0.1's `json.MarshalIndent(info, "", " ")`.
    fn to_pretty(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let fmt = serde_json::ser::PrettyFormatter::with_indent(b" ");
        let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
        self.serialize(&mut ser).expect("plain struct");
        out
    }
}

/// Create the data directory, apply `-f`, and reconcile `info` with the command line.
pub fn prepare_data_dir(cfg: &mut Config) -> Result<()> {
    let dir = cfg.data_dir.clone();
    let io =
        |what: &str, p: &Path, e: std::io::Error| Error::Io(format!("{what} {}: {e}", p.display()));
    std::fs::create_dir_all(&dir).map_err(|e| io("cannot create data directory", &dir, e))?;
    let info_path = dir.join(INFO_FILE);
    if cfg.force {
        for f in [INFO_FILE, DATA_FILE] {
            let p = dir.join(f);
            match std::fs::remove_file(&p) {
                Ok(()) => tracing::warn!(file = %p.display(), "removed (-f)"),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io("cannot remove", &p, e)),
            }
        }
    }
    match std::fs::read(&info_path) {
        Ok(bytes) => {
            let info: Info = serde_json::from_slice(&bytes).map_err(|e| {
                Error::Config(format!(
                    "cannot read {}: {e} (start with -f to discard it)",
                    info_path.display()
                ))
            })?;
            let wanted = Info::from_config(cfg);
            if info.name != wanted.name
                || info.raft_url != wanted.raft_url
                || info.etcd_url != wanted.etcd_url
            {
                tracing::warn!(
                    file = %info_path.display(),
                    "using the identity saved in the data directory ({} {} {}); start with -f to change it",
                    info.name, info.raft_url, info.etcd_url
                );
            }
            info.apply_to(cfg);
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let tmp = dir.join(format!("{INFO_FILE}.tmp"));
            std::fs::write(&tmp, Info::from_config(cfg).to_pretty())
                .and_then(|_| std::fs::rename(&tmp, &info_path))
                .map_err(|e| io("cannot write", &info_path, e))
        }
        Err(e) => Err(io("cannot read", &info_path, e)),
    }
}

async fn bind(what: &str, addr: &str) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Io(format!("cannot listen on {what} address {addr}: {e}")))
}

/// This node's Raft id: read from the data file, or made up once and saved there.
fn node_id(disk: &Disk, cfg: &Config) -> Result<NodeId> {
    let storage = |e: crate::raft::disk::DiskError| Error::Storage(e.to_string());
    if let Some(bytes) = disk.read_meta(META_NODE_ID).map_err(storage)? {
        let arr: [u8; 8] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| Error::Storage(format!("{}: bad node id", disk.path().display())))?;
        return Ok(u64::from_be_bytes(arr));
    }
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write(cfg.name.as_bytes());
    h.write(cfg.peer_url.as_bytes());
    h.write_i64(now_nanos());
    h.write_u32(std::process::id());
    let id = h.finish().max(1);
    disk.write_meta(META_NODE_ID, &id.to_be_bytes(), true)
        .map_err(storage)?;
    Ok(id)
}

/// The cluster id: read from the data file, or made up by the node that creates the cluster.
fn cluster_id(disk: &Disk, cfg: &Config, id: NodeId) -> Result<u64> {
    let storage = |e: crate::raft::disk::DiskError| Error::Storage(e.to_string());
    if let Some(bytes) = disk.read_meta(META_CLUSTER_ID).map_err(storage)? {
        let arr: [u8; 8] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| Error::Storage(format!("{}: bad cluster id", disk.path().display())))?;
        return Ok(u64::from_be_bytes(arr));
    }
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write(cfg.initial_cluster_token.as_bytes());
    h.write_u64(id);
    h.write_i64(now_nanos());
    let cid = h.finish().max(1);
    disk.write_meta(META_CLUSTER_ID, &cid.to_be_bytes(), true)
        .map_err(storage)?;
    Ok(cid)
}

fn raft_config(cfg: &Config) -> Result<openraft::Config> {
    openraft::Config {
        cluster_name: "etcd".to_string(),
        heartbeat_interval: cfg.heartbeat_ms,
        election_timeout_min: cfg.election_ms,
        election_timeout_max: cfg.election_ms * 2,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(cfg.snapshot_count),
        max_in_snapshot_log_to_keep: 1000,
        install_snapshot_timeout: 2000,
        ..Default::default()
    }
    .validate()
    .map_err(|e| Error::Config(format!("raft timing: {e}")))
}

/// Run a node until `shutdown` resolves.
pub async fn run(
    mut cfg: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    prepare_data_dir(&mut cfg)?;
    let client_listener = bind("client", &cfg.client_listen).await?;
    let peer_listener = bind("peer", &cfg.peer_listen).await?;

    let storage = |e: crate::raft::disk::DiskError| Error::Storage(e.to_string());
    let disk = Disk::open(&cfg.data_dir.join(DATA_FILE)).map_err(storage)?;
    let id = node_id(&disk, &cfg)?;
    let cluster_id = cluster_id(&disk, &cfg, id)?;
    let mut log_store: LogStore<TypeConfig> = LogStore::new(disk.clone()).map_err(storage)?;
    let boot_last = log_store
        .get_log_state()
        .await
        .map_err(|e| Error::Storage(e.to_string()))?
        .last_log_id
        .map_or(0, |l| l.index);
    let (sm, shared) = StateMachine::open(disk.clone(), cfg.history_size)?;
    let me = Member {
        name: cfg.name.clone(),
        peer_url: cfg.peer_url.clone(),
        client_url: cfg.client_url.clone(),
    };
    let peer_stats = Arc::new(crate::metrics::PeerStats::default());
    let network = Network {
        client: PeerClient::new(),
        stats: peer_stats.clone(),
    };
    let raft = Raft::new(id, Arc::new(raft_config(&cfg)?), network, log_store, sm)
        .await
        .map_err(|e| Error::Raft(e.to_string()))?;
    let fresh = !raft
        .is_initialized()
        .await
        .map_err(|e| Error::Raft(e.to_string()))?;
    if fresh {
        raft.initialize(BTreeMap::from([(id, me.clone())]))
            .await
            .map_err(|e| Error::Raft(e.to_string()))?;
    }
    tracing::info!(name = %cfg.name, id = format!("{id:x}"), fresh, client = %cfg.client_url, peer = %cfg.peer_url, "node starting");

    let node = RaftNode::new(id, me, raft.clone(), shared.clone(), peer_stats);
    let state = Arc::new(AppState {
        node: node.clone(),
        cfg: Arc::new(cfg.clone()),
        start_time: now_nanos(),
        leader_since: AtomicI64::new(now_nanos()),
        cluster_id,
        http: Default::default(),
    });

    // A single voter need not wait out an election timeout.
    if voters_are_only(&node, id) {
        let _ = raft.trigger().elect().await;
    }
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(become_ready(node.clone(), boot_last));
    tasks.spawn(node.clone().expire_loop());
    tasks.spawn(track_leader(state.clone()));

    let (stop_tx, stop_rx) = watch::channel(false);
    let client = serve(
        client_listener,
        api::client_router(state.clone()),
        stop_rx.clone(),
    );
    let peer = serve(peer_listener, api::peer_router(state.clone()), stop_rx);
    let servers = tokio::spawn(async move { tokio::join!(client, peer) });

    shutdown.await;
    tracing::info!("shutting down");
    stop_tx.send_replace(true);
    // Open watches would keep their connections forever: end them now.
    shared.read().store.close_watches();
    if tokio::time::timeout(SHUTDOWN_GRACE, servers).await.is_err() {
        tracing::warn!("requests still running after {SHUTDOWN_GRACE:?}; closing anyway");
    }
    tasks.abort_all();
    let _ = raft.shutdown().await;
    drop(node);
    drop(state);
    Ok(())
}

fn voters_are_only(node: &RaftNode, id: NodeId) -> bool {
    let d = node.shared.read();
    let voters: Vec<NodeId> = d.membership.membership().voter_ids().collect();
    voters == [id]
}

async fn serve(listener: TcpListener, router: axum::Router, mut stop: watch::Receiver<bool>) {
    let graceful = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    if let Err(e) = axum::serve(listener, router)
        .with_graceful_shutdown(graceful)
        .await
    {
        tracing::error!(error = %e, "server stopped");
    }
}

/// Wait until a leader is known and everything the log held at start-up is applied; the
/// leader then makes sure this node is in the machine registry. Then open the gates.
async fn become_ready(node: Arc<RaftNode>, boot_last: u64) {
    let mut metrics = node.raft.metrics();
    loop {
        {
            let m = metrics.borrow_and_update();
            let applied = m.last_applied.map_or(0, |l| l.index);
            if m.current_leader.is_some() && applied >= boot_last {
                break;
            }
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
    if node.state() == ServerState::Leader {
        let me = node.me.clone();
        let register = Command::Register {
            name: me.name,
            peer_url: me.peer_url,
            client_url: me.client_url,
        };
        loop {
            match node.propose(register.clone()).await {
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "registering this node failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
    tracing::info!(index = node.shared.read().store.index(), "ready");
    node.set_ready();
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
