//! The HTTP surface: the handlers of the client port (4001: `/v1`, `/v2`, `/version`,
//! stats...) and of the peer port (7001: Raft RPCs and the small v0.1 peer endpoints).
//!
//! Requests are dispatched by hand rather than through a route table, because legacy etcd's
//! routing has observable quirks clients rely on: non-clean paths (`//`, `/./`, `/../`) are
//! answered with 301 to the cleaned path, `/v1/keys` redirects to `/v1/keys/`, keys are
//! percent-decoded before use, unknown methods get an empty 405, and `/` and every path etcd
//! does not serve answer `404 page not found` (docs/api.md).
//!
//! Every handler waits (bounded) until the node is ready, so a restarting node never serves
//! a read from a half-recovered store.

pub mod access;
pub mod admin;
pub mod auth;
pub mod leader_calls;
pub mod members;
pub mod metrics;
pub mod params;
pub mod peer;
pub mod response;
pub mod stats;
pub mod v1;
pub mod v2;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use axum::extract::Request;
use axum::http::{HeaderValue, Method, header};
use axum::response::Response;

use crate::config::Config;
use crate::conn::Handler;
use crate::raft::node::RaftNode;

/// The version this server reports (the etcd API level it implements).
pub const VERSION: &str = "2.3.8";
/// The cluster version reported by `/version`.
pub const CLUSTER_VERSION: &str = "2.3.0";

/// Everything a handler needs.
pub struct AppState {
    pub node: Arc<RaftNode>,
    pub cfg: Arc<Config>,
    /// When this process started (Unix ns).
    pub start_time: i64,
    /// When this node last saw the leader change (Unix ns), for `leaderInfo.uptime`.
    pub leader_since: AtomicI64,
    /// The cluster's id, as `X-Etcd-Cluster-Id` shows it (lower-case hex); learned from the
    /// leader when this node joins.
    pub cluster_id: std::sync::atomic::AtomicU64,
    /// [`AppState::cluster_id_header`]'s last value, with the id it shows.
    pub cluster_header: std::sync::Mutex<Option<(u64, HeaderValue)>>,
    /// Client requests received, by method (see [`metrics::METHODS`]).
    pub http: metrics::HttpCounters,
    /// Set when this node learns it was removed from the cluster: it then shuts down.
    pub removed: tokio::sync::watch::Sender<bool>,
}

impl AppState {
    pub fn cluster_id(&self) -> u64 {
        self.cluster_id.load(Ordering::Relaxed)
    }

    /// `X-Etcd-Cluster-Id`'s value (on every v2 answer): rendered once per cluster id.
    pub fn cluster_id_header(&self) -> HeaderValue {
        let id = self.cluster_id();
        let mut cached = self
            .cluster_header
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match &*cached {
            Some((at, h)) if *at == id => h.clone(),
            _ => {
                let h =
                    HeaderValue::from_str(&format!("{id:x}")).expect("hex is a valid header value");
                *cached = Some((id, h.clone()));
                h
            }
        }
    }
}

pub type AppRef = Arc<AppState>;

/// The client port's handler.
pub fn client_handler(state: AppRef) -> Handler {
    crate::conn::handler(move |req| client_entry(state.clone(), req))
}

/// Every client request: count it, decode and check its path, dispatch it, add CORS. (One
/// function rather than a stack of middleware layers: this is the hot path.)
async fn client_entry(st: AppRef, req: Request) -> Response {
    metrics::count_request(&st, req.method());
    let origin = if st.cfg.cors.is_empty() {
        None
    } else {
        req.headers().get(header::ORIGIN).cloned()
    };
    let resp = match prepare_path(&req) {
        Ok(path) => dispatch_client(st.clone(), req, path).await,
        Err(r) => *r,
    };
    with_cors(&st, origin, resp)
}

/// The peer port's handler: a path with a bad escape is refused and an unclean one redirected,
/// as on the client port (the peer routes then match the path as sent).
pub fn peer_handler(state: AppRef) -> Handler {
    crate::conn::handler(move |req: Request| {
        let st = state.clone();
        async move {
            match prepare_path(&req) {
                Ok(_) => peer::dispatch(st, req).await,
                Err(r) => *r,
            }
        }
    })
}

/// `path` is the request's path after percent-decoding (by [`prepare_path`]): routing and
/// keys use it, as Go's server does (`%2F` in a key is a `/`).
async fn dispatch_client(st: AppRef, req: Request, path: String) -> Response {
    if path == "/v2/keys" || path.starts_with("/v2/keys/") {
        return v2::keys(st, &path["/v2/keys".len()..], req).await;
    }
    if auth::is_auth_path(&path) {
        return auth::dispatch(st, &path, req).await;
    }
    if let Some(rest) = path.strip_prefix("/v1/keys/") {
        return v1::keys(st, rest, req).await;
    }
    if let Some(rest) = path.strip_prefix("/v1/watch/") {
        return v1::watch(st, rest, req).await;
    }
    if let Some(rest) = path.strip_prefix("/v1/stats/") {
        return stats::v1_stats(st, rest, req.method()).await;
    }
    match path.as_str() {
        "/v1/keys" | "/v1/watch" | "/v1/stats" => {
            response::moved(&format!("{path}/"), req.uri().query(), req.method())
        }
        "/v1/leader" => admin::v1_leader(st).await,
        "/v2/leader" => admin::v1_leader(st).await,
        "/v2/machines" => admin::v2_machines(st, req.method()),
        "/v2/members" | "/v2/members/" if req.method() == Method::POST => {
            members::v2_members_add(st, req).await
        }
        // A member change without an id: 405 (as etcd 3.4: cluster id, no Allow).
        "/v2/members" | "/v2/members/"
            if req.method() == Method::DELETE || req.method() == Method::PUT =>
        {
            let mut r = response::text(405, "Method Not Allowed\n");
            r.headers_mut()
                .insert(response::X_ETCD_CLUSTER_ID, st.cluster_id_header());
            r
        }
        "/v2/members" | "/v2/members/" => members::v2_members(st, req.method()),
        "/v2/members/leader" => members::v2_members_leader(st, req.method()),
        p if p.starts_with("/v2/members/") => {
            members::v2_member(st, &p["/v2/members/".len()..], req).await
        }
        // etcd serves these to GET only (405 with `Allow: GET` otherwise).
        "/v2/stats/self" | "/v2/stats/leader" | "/v2/stats/store" | "/health" | "/version"
            if req.method() != Method::GET =>
        {
            response::method_not_allowed("GET")
        }
        "/v2/stats/self" => stats::v2_stats_self(st),
        "/v2/stats/leader" => stats::v2_stats_leader(st),
        "/v2/stats/store" => stats::v2_stats_store(st),
        "/health" => admin::health(st).await,
        "/metrics" => metrics::render(st),
        "/v1/machines" => admin::v1_machines(st).await,
        "/version" => admin::version(req.method()),
        // `/` and every path etcd does not serve: 404, as etcd v0.1.2 and 3.4 answer.
        _ => response::not_found(),
    }
}

/// Decode the path (a malformed escape is a 400 JSON error, the choices in docs/api.md); a
/// decoded path that is not clean (`//`, `/./`, `/../`) is answered with 301 to the cleaned
/// path, as Go's ServeMux does; otherwise the decoded path goes to the handlers.
fn prepare_path(req: &Request) -> Result<String, Box<Response>> {
    let decoded =
        params::decode_key(req.uri().path()).map_err(|e| Box::new(response::v2_error(&e)))?;
    if let Some(clean) = clean_request_path(&decoded) {
        let location =
            percent_encoding::utf8_percent_encode(&clean, params::PATH_ESCAPE).to_string();
        return Err(Box::new(response::moved(
            &location,
            req.uri().query(),
            req.method(),
        )));
    }
    Ok(decoded)
}

/// The cleaned form of a request path, or None if it is clean already. A trailing slash is
/// kept (it is meaningful to the dispatch).
fn clean_request_path(raw: &str) -> Option<String> {
    let unclean = raw.contains("//")
        || raw.contains("/./")
        || raw.contains("/../")
        || raw.ends_with("/.")
        || raw.ends_with("/..");
    if !unclean {
        return None;
    }
    let mut clean = crate::store::path::clean(raw);
    if raw.ends_with('/') && clean != "/" {
        clean.push('/');
    }
    Some(clean)
}

/// `-cors`: add `Access-Control-Allow-Origin` for allowed origins.
fn with_cors(st: &AppState, origin: Option<HeaderValue>, mut resp: Response) -> Response {
    if st.cfg.cors.is_empty() {
        return resp;
    }
    let allow = if st.cfg.cors.iter().any(|o| o == "*") {
        Some(HeaderValue::from_static("*"))
    } else {
        origin.filter(|o| st.cfg.cors.iter().any(|c| o.as_bytes() == c.as_bytes()))
    };
    if let Some(v) = allow {
        resp.headers_mut()
            .insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
    }
    resp
}

/// Wait until the node may answer, or produce the error response.
pub async fn ready_or_error(st: &AppState) -> Result<(), Response> {
    st.node
        .wait_ready()
        .await
        .map_err(|e| response::v1_error(&e, &e.cause))
}

pub fn record_leader_change(st: &AppState) {
    st.leader_since
        .store(crate::clock::now_nanos(), Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_paths_are_cleaned_like_go() {
        assert_eq!(clean_request_path("/v1/keys/foo"), None);
        assert_eq!(clean_request_path("/v1/keys/"), None);
        assert_eq!(
            clean_request_path("/v1/keys/foo//foo2").as_deref(),
            Some("/v1/keys/foo/foo2")
        );
        assert_eq!(
            clean_request_path("/v1/keys/foo/../testAndSet").as_deref(),
            Some("/v1/keys/testAndSet")
        );
        assert_eq!(
            clean_request_path("/v1/keys/a//b/").as_deref(),
            Some("/v1/keys/a/b/")
        );
        assert_eq!(
            clean_request_path("/v1/keys/.").as_deref(),
            Some("/v1/keys")
        );
    }
}
