//! Bootstrap through a discovery service (`--discovery URL`), etcd 2.x's protocol.
//!
//! The URL names a directory of an etcd keys API, directly or through the discovery service
//! (`http://discovery.example/<token>`, which keeps it under `/_etcd/registry/<token>` of its
//! own etcd). Whoever made the token wrote the cluster's size at `<url>/_config/size`. A new
//! member then:
//!
//! 1. reads the size and the members registered so far (a listing of `<url>`, in creation
//!    order); if the cluster is full without it, it stops: the cluster formed without it;
//! 2. registers itself: creates `<url>/<id in hex>` with `prevExist=false` and the value
//!    `name=peerURL` (a registration it made before a crash is reused);
//! 3. waits (watching `<url>` recursively) until `size` members are registered;
//! 4. starts a new cluster of the first `size` registered members, as `--initial-cluster`
//!    would, with the discovery URL as the cluster token (so every member computes the same
//!    ids).
//!
//! Connection failures and server errors are retried with a growing pause (1 s doubling to
//! 16 s), for as long as it takes, as etcd does; a token without a size, an answer that is not
//! etcd's, a full cluster and a name registered twice are errors. A member with a data
//! directory never asks the service again (`server.rs`).

use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::http_client::{Answer, HttpClient};

/// How long one request may take (a watch is not limited).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_PAUSE: Duration = Duration::from_secs(16);

/// A registered member: its key (the member id in hex), value and creation index.
#[derive(Debug, Clone, PartialEq)]
struct Registered {
    key: String,
    value: String,
    created: u64,
}

/// Why a step failed: worth retrying, or not.
enum Fail {
    Retry(String),
    Fatal(String),
    /// The cluster is full without this member: its first `size` registrations.
    Full(String, Vec<Registered>),
}

impl From<String> for Fail {
    fn from(s: String) -> Self {
        Fail::Retry(s)
    }
}

struct Discovery {
    client: HttpClient,
    /// The directory's URL, without a trailing `/`.
    url: String,
    /// This member's key in the directory (its id in hex); None for a proxy.
    me: Option<String>,
    /// `name=peerURL`.
    value: String,
}

/// Why discovery gave up.
#[derive(Debug)]
pub enum Failure {
    /// The cluster formed without this member (its members, for a fallback proxy).
    Full {
        why: String,
        members: Vec<(String, String)>,
    },
    Other(String),
}

impl From<Failure> for Error {
    fn from(f: Failure) -> Error {
        match f {
            Failure::Full { why, .. } | Failure::Other(why) => Error::Config(why),
        }
    }
}

/// Register this member under `url` and wait for the cluster to be complete; the members of
/// the new cluster as `(name, peer URL)`, in registration order.
pub async fn bootstrap(
    url: &str,
    id: u64,
    name: &str,
    peer_url: &str,
) -> std::result::Result<Vec<(String, String)>, Failure> {
    let d = Discovery::new(url, Some((id, format!("{name}={peer_url}"))));
    tracing::info!(url = %d.url, id = %format!("{id:x}"), "bootstrapping through the discovery service");
    d.run().await
}

/// The members of the cluster formed under `url`, waiting until it is complete (for a proxy:
/// nothing is registered).
pub async fn cluster(url: &str) -> Result<Vec<(String, String)>> {
    let d = Discovery::new(url, None);
    tracing::info!(url = %d.url, "reading the cluster's members from the discovery service");
    Ok(d.run().await?)
}

impl Discovery {
    fn new(url: &str, me: Option<(u64, String)>) -> Discovery {
        Discovery {
            client: HttpClient::new(crate::tls::public_client_config(), Duration::from_secs(5)),
            url: url.trim_end_matches('/').to_string(),
            me: me.as_ref().map(|(id, _)| format!("{id:x}")),
            value: me.map(|(_, v)| v).unwrap_or_default(),
        }
    }

    async fn run(&self) -> std::result::Result<Vec<(String, String)>, Failure> {
        let url = &self.url;
        let mut pause = Duration::from_secs(1);
        // Run a step until it succeeds or fails for good, pausing longer after each retry.
        macro_rules! retrying {
            ($what:expr, $step:expr) => {
                loop {
                    match $step.await {
                        Ok(v) => break v,
                        Err(Fail::Full(why, nodes)) => {
                            return Err(Failure::Full {
                                why: format!("discovery {url}: {why}"),
                                members: members_of(&nodes).unwrap_or_default(),
                            });
                        }
                        Err(Fail::Fatal(why)) => {
                            return Err(Failure::Other(format!("discovery {url}: {why}")));
                        }
                        Err(Fail::Retry(why)) => {
                            tracing::warn!(error = %why, retry_in = ?pause, "discovery: {} failed", $what);
                            tokio::time::sleep(pause).await;
                            pause = (pause * 2).min(MAX_PAUSE);
                        }
                    }
                }
            };
        }
        if self.me.is_some() {
            // Registering in a full cluster would only make the listing longer: look first.
            retrying!("checking the cluster", self.check());
            retrying!("registering", self.register());
        }
        let all = retrying!("waiting for the members", self.wait_all());
        members_of(&all).map_err(|why| Failure::Other(format!("discovery {url}: {why}")))
    }
    async fn get(&self, path_and_query: &str, timeout: Option<Duration>) -> Result<Answer, Fail> {
        let url = format!("{}{path_and_query}", self.url);
        let a = self.client.call(Method::GET, &url, None, timeout).await?;
        if a.status.is_server_error() {
            return Err(Fail::Retry(format!("{url}: HTTP {}", a.status)));
        }
        Ok(a)
    }

    /// The size, the members registered (in creation order) and the index of the listing;
    /// a full cluster without this member is an error.
    async fn check(&self) -> Result<(usize, Vec<Registered>, u64), Fail> {
        let a = self.get("/_config/size", Some(REQUEST_TIMEOUT)).await?;
        let v = json(&a)?;
        if a.status == StatusCode::NOT_FOUND && v["errorCode"] == 100 {
            return Err(Fail::Fatal(
                "the token has no size (no _config/size key): create it with the discovery \
                 service's /new?size=N"
                    .into(),
            ));
        }
        if a.status != StatusCode::OK {
            return Err(Fail::Fatal(format!("_config/size: HTTP {}", a.status)));
        }
        let size = v["node"]["value"]
            .as_str()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .filter(|&n| n > 0)
            .ok_or_else(|| Fail::Fatal(format!("bad _config/size value: {}", v["node"])))?;
        let a = self.get("", Some(REQUEST_TIMEOUT)).await?;
        let v = json(&a)?;
        if a.status != StatusCode::OK {
            return Err(Fail::Fatal(format!("listing: HTTP {}: {v}", a.status)));
        }
        let mut nodes: Vec<Registered> = v["node"]["nodes"]
            .as_array()
            .map(|ns| ns.iter().filter_map(registered).collect())
            .unwrap_or_default();
        nodes.sort_by_key(|n| n.created);
        let index =
            etcd_index(&a).unwrap_or_else(|| nodes.iter().map(|n| n.created).max().unwrap_or(0));
        if let Some(me) = &self.me
            && nodes.len() >= size
            && !nodes[..size].iter().any(|n| &n.key == me)
        {
            return Err(Fail::Full(
                format!(
                    "the cluster is full: {size} members registered already ({}); this member \
                 cannot join through discovery (add it with -C or /v2/members instead)",
                    nodes[..size]
                        .iter()
                        .map(|n| n.value.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                nodes[..size].to_vec(),
            ));
        }
        Ok((size, nodes, index))
    }

    /// Create this member's key; one made by an earlier attempt of this member counts.
    async fn register(&self) -> Result<(), Fail> {
        let me = self.me.as_deref().unwrap_or_default();
        let url = format!("{}/{me}?prevExist=false", self.url);
        let form = format!(
            "value={}",
            percent_encoding::utf8_percent_encode(&self.value, percent_encoding::NON_ALPHANUMERIC)
        );
        let a = self
            .client
            .call(Method::PUT, &url, Some(form), Some(REQUEST_TIMEOUT))
            .await?;
        if a.status.is_server_error() {
            return Err(Fail::Retry(format!("{url}: HTTP {}", a.status)));
        }
        if a.status == StatusCode::CREATED {
            tracing::info!(key = %me, value = %self.value, "discovery: registered");
            return Ok(());
        }
        let v = json(&a)?;
        if v["errorCode"] != 105 {
            return Err(Fail::Fatal(format!("registering: HTTP {}: {v}", a.status)));
        }
        let a = self.get(&format!("/{me}"), Some(REQUEST_TIMEOUT)).await?;
        let v = json(&a)?;
        if v["node"]["value"] == self.value.as_str() {
            tracing::info!(key = %me, "discovery: registered by an earlier start");
            return Ok(());
        }
        Err(Fail::Fatal(format!(
            "another member registered this member's id {me} ({}): a member id is made from the \
             peer URL and the token, so two members advertise the same peer URL",
            v["node"]["value"]
        )))
    }

    /// Watch the directory until `size` members are registered; the first `size`.
    async fn wait_all(&self) -> Result<Vec<Registered>, Fail> {
        let (size, mut nodes, mut index) = self.check().await?;
        while nodes.len() < size {
            tracing::info!(
                found = nodes.len(),
                size,
                "discovery: waiting for {} more member(s)",
                size - nodes.len()
            );
            let a = self
                .get(
                    &format!("?wait=true&recursive=true&waitIndex={}", index + 1),
                    None,
                )
                .await?;
            let v = json(&a)?;
            if a.status == StatusCode::BAD_REQUEST && v["errorCode"] == 401 {
                // The history moved past our index: look again.
                (_, nodes, index) = self.check().await?;
                continue;
            }
            if a.status != StatusCode::OK {
                return Err(Fail::Retry(format!("watch: HTTP {}: {v}", a.status)));
            }
            index = v["node"]["modifiedIndex"].as_u64().unwrap_or(index + 1);
            let parent_key = v["node"]["key"]
                .as_str()
                .and_then(|k| k.rsplit_once('/'))
                .map(|(p, _)| p.to_string());
            let own_dir = v["node"]["key"].as_str().is_some_and(|k| {
                parent_key.is_some() && !k.ends_with("/_config") && !k.contains("/_config/")
            });
            if !own_dir {
                continue;
            }
            match v["action"].as_str() {
                Some("delete" | "expire" | "compareAndDelete") => {
                    let key = base(v["node"]["key"].as_str().unwrap_or_default());
                    nodes.retain(|n| n.key != key);
                }
                _ => {
                    if let Some(n) = registered(&v["node"])
                        && !nodes.iter().any(|m| m.key == n.key)
                    {
                        nodes.push(n);
                    }
                }
            }
        }
        nodes.sort_by_key(|n| n.created);
        nodes.truncate(size);
        if let Some(me) = &self.me
            && !nodes.iter().any(|n| &n.key == me)
        {
            return Err(Fail::Full(
                "the cluster filled up without this member's registration".into(),
                nodes,
            ));
        }
        Ok(nodes)
    }
}

fn json(a: &Answer) -> Result<Value, Fail> {
    serde_json::from_slice(&a.body).map_err(|_| {
        Fail::Fatal(format!(
            "not an etcd keys API answer (HTTP {}: {:?}): is the URL a discovery token URL?",
            a.status,
            String::from_utf8_lossy(&a.body[..a.body.len().min(120)])
        ))
    })
}

fn etcd_index(a: &Answer) -> Option<u64> {
    a.headers
        .get("x-etcd-index")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse().ok())
}

fn base(key: &str) -> &str {
    key.rsplit_once('/').map_or(key, |(_, b)| b)
}

/// A registration from a listing or an event node (not `_config`, not a directory).
fn registered(node: &Value) -> Option<Registered> {
    let key = base(node["key"].as_str()?);
    if key == "_config" || node["dir"] == true {
        return None;
    }
    Some(Registered {
        key: key.to_string(),
        value: node["value"].as_str()?.to_string(),
        created: node["createdIndex"].as_u64()?,
    })
}

/// The new cluster's `(name, peer URL)` pairs from the registrations' `name=url[,...]`
/// values; a name used twice is an error.
fn members_of(nodes: &[Registered]) -> std::result::Result<Vec<(String, String)>, String> {
    let mut members: Vec<(String, String)> = Vec::new();
    for n in nodes {
        for pair in n.value.split(',').filter(|p| !p.trim().is_empty()) {
            let Some((name, url)) = pair.split_once('=') else {
                return Err(format!(
                    "registration {} is not name=URL: {:?}",
                    n.key, n.value
                ));
            };
            let (name, url) = (name.trim(), url.trim());
            if let Some((_, other)) = members.iter().find(|(m, _)| m == name) {
                if other != url {
                    return Err(format!(
                        "the name {name:?} is registered twice ({other} and {url}): every member \
                         needs its own --name"
                    ));
                }
                continue;
            }
            members.push((name.to_string(), url.to_string()));
        }
    }
    Ok(members)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(key: &str, value: &str, created: u64) -> Registered {
        Registered {
            key: key.into(),
            value: value.into(),
            created,
        }
    }

    #[test]
    fn registrations_become_the_initial_cluster_in_order() {
        let nodes = [
            reg("a1", "n1=http://127.0.0.1:7001", 5),
            reg("b2", "n2=http://127.0.0.1:7002", 6),
        ];
        assert_eq!(
            members_of(&nodes).unwrap(),
            vec![
                ("n1".to_string(), "http://127.0.0.1:7001".to_string()),
                ("n2".to_string(), "http://127.0.0.1:7002".to_string())
            ]
        );
        let dup = [
            reg("a1", "n1=http://127.0.0.1:7001", 5),
            reg("b2", "n1=http://127.0.0.1:7002", 6),
        ];
        assert!(members_of(&dup).unwrap_err().contains("registered twice"));
        assert!(members_of(&[reg("a1", "garbage", 1)]).is_err());
    }

    #[test]
    fn listings_skip_the_config_and_directories() {
        let v: Value = serde_json::from_str(
            r#"{"key":"/_etcd/registry/t/_config","dir":true,"createdIndex":2}"#,
        )
        .unwrap();
        assert_eq!(registered(&v), None);
        let v: Value = serde_json::from_str(
            r#"{"key":"/_etcd/registry/t/7b40","value":"n=http://h:1","createdIndex":9,"modifiedIndex":9}"#,
        )
        .unwrap();
        assert_eq!(registered(&v), Some(reg("7b40", "n=http://h:1", 9)));
    }
}
