//! Proxy mode (`--proxy on|readonly`), as etcd 2.x ran it on every machine that was not a
//! member: the client API on the local port, every request forwarded to a member, no data
//! held here.
//!
//! * **Members.** The cluster is named by `--initial-cluster` (peer URLs; no entry for the
//!   proxy itself) or by `--discovery` (the registered members, once the cluster is
//!   complete). The proxy asks a member's peer port for `GET /members` to learn the client
//!   URLs, at start and then every `--proxy-refresh-interval` (30 s), from any member it knows.
//! * **Forwarding.** A request goes to the next member in turn (round robin), with its path,
//!   query, headers (less the hop-by-hop ones) and body; the answer streams back as it comes,
//!   so a watch is a long poll through the proxy. A member that cannot be reached is left
//!   alone for `--proxy-failure-wait` (5 s) and the request goes to the next one. A request
//!   that may have reached a member before it failed is retried elsewhere only when it is a
//!   read; a write then answers error 300 with "may or may not have been applied", as a member
//!   does when it loses its leader mid-write.
//! * **Its member list survives a restart.** After each member list it learns, the proxy
//!   saves the cluster's peer URLs in `<data-dir>/proxy/cluster` (etcd 2.x's file and
//!   format: `{"PeerURLs":[...]}`, written to `cluster.bak`, synced, renamed). A proxy that
//!   starts with that file uses it instead of `--initial-cluster` or `--discovery` (a
//!   discovery URL is then ignored with a warning), so it still finds the cluster after the
//!   members named on its command line are gone. A file it cannot read or parse stops the
//!   start with one line naming it.
//! * **Errors** (etcd's): no member known or reachable: `503 {"message":"proxy: zero
//!   endpoints currently available"}`; every member failed: `502 {"message":"proxy: unable to
//!   get response from N endpoint(s)"}`; `readonly` answers anything but GET with an empty
//!   `501`.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderName};
use hyper::{HeaderMap, Method, StatusCode};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::config::{Config, ProxyMode};
use crate::error::{Error, Result};
use crate::http_client::HttpClient;

/// A member as `GET /members` on a peer port describes it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
struct MemberInfo {
    #[serde(rename = "peerURLs", default)]
    peer_urls: Vec<String>,
    #[serde(rename = "clientURLs", default)]
    client_urls: Vec<String>,
}

#[derive(Debug, Clone)]
struct Endpoint {
    url: String,
    failed_until: Option<Instant>,
}

/// What `<data-dir>/proxy/cluster` holds (etcd 2.x's field name).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct SavedCluster {
    #[serde(rename = "PeerURLs")]
    peer_urls: Vec<String>,
}

/// The proxy's copy of the member list on disk (see the module docs).
struct ClusterFile {
    path: PathBuf,
    /// What the file holds now (written or read), so an unchanged list is not written again.
    saved: Mutex<Option<Vec<String>>>,
}

impl ClusterFile {
    /// Makes `<data_dir>/proxy` (owner only, as etcd) and reads the file if there is one.
    fn open(data_dir: &Path) -> Result<(ClusterFile, Option<Vec<String>>)> {
        let dir = data_dir.join("proxy");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| {
                Error::Io(format!(
                    "cannot create the proxy directory {}: {e}",
                    dir.display()
                ))
            })?;
        let path = dir.join("cluster");
        let saved = match std::fs::read(&path) {
            Ok(bytes) => {
                let c: SavedCluster = serde_json::from_slice(&bytes).map_err(|e| {
                    Error::Io(format!(
                        "the proxy's cluster file {} is damaged ({e}); remove it to start from \
                         --initial-cluster or --discovery again",
                        path.display()
                    ))
                })?;
                Some(sorted(c.peer_urls)).filter(|u| !u.is_empty())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(Error::Io(format!(
                    "cannot read the proxy's cluster file {}: {e}",
                    path.display()
                )));
            }
        };
        let file = ClusterFile {
            path,
            saved: Mutex::new(saved.clone()),
        };
        Ok((file, saved))
    }

    /// Saves `peer_urls` unless the file holds them already: `cluster.bak`, synced, renamed
    /// over `cluster`. A failure is logged; the proxy goes on with what it knows.
    async fn save(&self, peer_urls: Vec<String>) {
        let peer_urls = sorted(peer_urls);
        if peer_urls.is_empty() || lock(&self.saved).as_ref() == Some(&peer_urls) {
            return;
        }
        let path = self.path.clone();
        let body = SavedCluster {
            peer_urls: peer_urls.clone(),
        };
        let write = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let bytes = serde_json::to_vec(&body).map_err(std::io::Error::other)?;
            crate::data_dir::replace_file(&path, &path.with_extension("bak"), &bytes, 0o600)
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        match write {
            Ok(()) => {
                tracing::info!(path = %self.path.display(), peers = ?peer_urls, "proxy: saved the member list");
                *lock(&self.saved) = Some(peer_urls);
            }
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "proxy: cannot save the member list")
            }
        }
    }
}

/// `urls` in order, each once (how the file holds them, so lists compare).
fn sorted(mut urls: Vec<String>) -> Vec<String> {
    urls.sort();
    urls.dedup();
    urls
}

struct Proxy {
    readonly: bool,
    /// For the members' client URLs.
    client: HttpClient,
    /// For the members' peer ports (`/members`).
    peers: HttpClient,
    endpoints: Mutex<Vec<Endpoint>>,
    /// Peer URLs to ask for the member list.
    peer_urls: Mutex<Vec<String>>,
    next: AtomicUsize,
    failure_wait: Duration,
    /// This proxy's own client URL, never forwarded to (a member advertising it would loop).
    own_url: String,
    cluster_file: ClusterFile,
}

/// Run a proxy until `shutdown` resolves.
pub async fn run(cfg: Config, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
    crate::api::params::set_max_body(cfg.max_request_bytes);
    let server_tls = crate::tls::server_config(&cfg.client_tls)?;
    let client_tls = crate::tls::client_config(&cfg.client_tls)?;
    let peer_tls = crate::tls::client_config(&cfg.peer_tls)?;
    let listener = tokio::net::TcpListener::bind(&cfg.client_listen)
        .await
        .map_err(|e| {
            Error::Io(format!(
                "cannot listen for clients on {}: {e}",
                cfg.client_listen
            ))
        })?;
    let (cluster_file, saved) = ClusterFile::open(&cfg.data_dir)?;
    let peer_urls = match saved {
        Some(saved) => {
            if cfg.discovery.is_some() {
                tracing::warn!(path = %cluster_file.path.display(), "proxy: --discovery ignored: this proxy has a member list from an earlier run");
            }
            tracing::info!(path = %cluster_file.path.display(), peers = ?saved, "proxy: using the member list saved by an earlier run");
            saved
        }
        None => {
            let mut peer_urls: Vec<String> =
                cfg.initial_cluster.iter().map(|(_, u)| u.clone()).collect();
            if peer_urls.is_empty()
                && let Some(url) = &cfg.discovery
            {
                peer_urls = crate::discovery::cluster(url)
                    .await?
                    .into_iter()
                    .map(|(_, u)| u)
                    .collect();
            }
            peer_urls
        }
    };
    let proxy = Arc::new(Proxy {
        readonly: cfg.proxy == ProxyMode::ReadOnly,
        client: HttpClient::new(client_tls, Duration::from_secs(1)),
        peers: HttpClient::new(peer_tls, Duration::from_secs(1)),
        endpoints: Mutex::new(Vec::new()),
        peer_urls: Mutex::new(peer_urls),
        next: AtomicUsize::new(0),
        failure_wait: Duration::from_millis(cfg.proxy_failure_wait_ms),
        own_url: cfg.client_url.trim_end_matches('/').to_string(),
        cluster_file,
    });
    tracing::info!(
        listen = %cfg.client_listen,
        mode = if proxy.readonly { "readonly" } else { "on" },
        members = ?lock(&proxy.peer_urls),
        "proxy starting"
    );
    let refresh = tokio::spawn(refresh_loop(
        proxy.clone(),
        Duration::from_millis(cfg.proxy_refresh_ms),
    ));
    let (stop_tx, stop_rx) = watch::channel(false);
    let handler = {
        let proxy = proxy.clone();
        crate::conn::handler(move |req| forward(proxy.clone(), req))
    };
    let limits = crate::conn::client_limits(&cfg);
    let server = tokio::spawn(crate::conn::serve(
        listener, server_tls, handler, stop_rx, limits, "client",
    ));
    shutdown.await;
    tracing::info!("proxy shutting down");
    stop_tx.send_replace(true);
    refresh.abort();
    let _ = tokio::time::timeout(Duration::from_secs(3), server).await;
    Ok(())
}

/// Learn the members' client URLs now (retrying every second until a member answers), then
/// every `every`.
async fn refresh_loop(proxy: Arc<Proxy>, every: Duration) {
    let mut known = false;
    loop {
        let ok = proxy.refresh().await;
        known |= ok;
        let pause = if known { every } else { Duration::from_secs(1) };
        tokio::time::sleep(pause).await;
    }
}

impl Proxy {
    /// Ask the known peer URLs, in turn, for the member list; true when one answered.
    async fn refresh(&self) -> bool {
        let peers = lock(&self.peer_urls).clone();
        for peer in &peers {
            let url = format!("{}/members", peer.trim_end_matches('/'));
            let answer = self
                .peers
                .call(Method::GET, &url, None, Some(Duration::from_secs(5)))
                .await;
            let members: Vec<MemberInfo> = match answer {
                Ok(a) if a.status == StatusCode::OK => match serde_json::from_slice(&a.body) {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(%url, error = %e, "proxy: bad member list");
                        continue;
                    }
                },
                Ok(a) => {
                    tracing::warn!(%url, status = %a.status, "proxy: member list refused");
                    continue;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "proxy: member list unavailable");
                    continue;
                }
            };
            self.set_members(&members);
            let peers = members.iter().flat_map(|m| m.peer_urls.iter().cloned());
            self.cluster_file.save(peers.collect()).await;
            return true;
        }
        tracing::warn!(peers = ?peers, "proxy: no member answered for the member list");
        false
    }

    fn set_members(&self, members: &[MemberInfo]) {
        let mut urls: Vec<String> = members
            .iter()
            .flat_map(|m| m.client_urls.iter())
            .map(|u| u.trim_end_matches('/').to_string())
            .filter(|u| *u != self.own_url)
            .collect();
        urls.sort();
        urls.dedup();
        let peers: Vec<String> = members
            .iter()
            .flat_map(|m| m.peer_urls.iter().cloned())
            .collect();
        if !peers.is_empty() {
            let mut known = lock(&self.peer_urls);
            // Keep the configured ones too: a member may come back.
            for p in peers {
                if !known.contains(&p) {
                    known.push(p);
                }
            }
        }
        let mut eps = lock(&self.endpoints);
        let old = std::mem::take(&mut *eps);
        *eps = urls
            .into_iter()
            .map(|url| Endpoint {
                failed_until: old
                    .iter()
                    .find(|e| e.url == url)
                    .and_then(|e| e.failed_until),
                url,
            })
            .collect();
        tracing::debug!(endpoints = ?eps.iter().map(|e| &e.url).collect::<Vec<_>>(), "proxy: members refreshed");
    }

    /// The endpoints to try, in turn from the next one; failed ones are left out until their
    /// wait is over.
    fn available(&self) -> Vec<String> {
        let now = Instant::now();
        let eps = lock(&self.endpoints);
        if eps.is_empty() {
            return Vec::new();
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % eps.len();
        (0..eps.len())
            .map(|i| &eps[(start + i) % eps.len()])
            .filter(|e| e.failed_until.is_none_or(|t| t <= now))
            .map(|e| e.url.clone())
            .collect()
    }

    fn failed(&self, url: &str, why: &str) {
        tracing::warn!(endpoint = url, error = why, wait = ?self.failure_wait, "proxy: member failed");
        let until = Instant::now() + self.failure_wait;
        if let Some(e) = lock(&self.endpoints).iter_mut().find(|e| e.url == url) {
            e.failed_until = Some(until);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Hop-by-hop headers: about one connection, never forwarded.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "content-length"
    )
}

fn copy_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for (k, v) in from {
        if !hop_by_hop(k) {
            to.append(k, v.clone());
        }
    }
}

fn message(status: StatusCode, text: &str) -> Response {
    let body = serde_json::json!({ "message": text }).to_string();
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .expect("static parts")
}

async fn forward(p: Arc<Proxy>, req: Request) -> Response {
    if p.readonly && req.method() != Method::GET {
        return Response::builder()
            .status(StatusCode::NOT_IMPLEMENTED)
            .body(Body::empty())
            .expect("static parts");
    }
    let (parts, body) = req.into_parts();
    let limit = crate::api::params::max_body();
    let body = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(e) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            return if too_large {
                crate::api::response::too_large(limit)
            } else {
                crate::api::response::v2_error(&crate::error::EtcdError::new(
                    crate::error::Code::InvalidForm,
                    format!("the request body could not be read: {e}"),
                    0,
                ))
            };
        }
    };
    let endpoints = p.available();
    if endpoints.is_empty() {
        return message(
            StatusCode::SERVICE_UNAVAILABLE,
            "proxy: zero endpoints currently available",
        );
    }
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let idempotent = parts.method == Method::GET || parts.method == Method::HEAD;
    for ep in &endpoints {
        let mut out = hyper::Request::builder()
            .method(parts.method.clone())
            .uri(format!("{ep}{target}"));
        if let Some(h) = out.headers_mut() {
            copy_headers(&parts.headers, h);
        }
        let out = match out.body(Full::new(Bytes::clone(&body))) {
            Ok(r) => r,
            Err(e) => return message(StatusCode::BAD_REQUEST, &format!("proxy: {e}")),
        };
        match p.client.try_send(out).await {
            Ok(resp) => {
                let (rparts, rbody) = resp.into_parts();
                let mut answer = Response::builder().status(rparts.status);
                if let Some(h) = answer.headers_mut() {
                    copy_headers(&rparts.headers, h);
                }
                return answer
                    .body(Body::new(rbody))
                    .unwrap_or_else(|_| message(StatusCode::BAD_GATEWAY, "proxy: bad answer"));
            }
            Err(e) => {
                p.failed(ep, &e.message);
                if !e.connect && !idempotent {
                    return crate::api::response::v2_error(&crate::error::EtcdError::raft(
                        format!(
                            "proxy: the member {ep} failed before answering ({}); the write may or \
                         may not have been applied",
                            e.message
                        ),
                    ));
                }
            }
        }
    }
    message(
        StatusCode::BAD_GATEWAY,
        &format!(
            "proxy: unable to get response from {} endpoint(s)",
            endpoints.len()
        ),
    )
}
