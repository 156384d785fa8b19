//! HTTP plumbing: targets, one keep-alive connection per worker, request
//! building and the small JSON helpers the workloads need.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::cli::Api;

/// Bound on connecting and on every single request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections opened at the same time while setting a workload up.
pub const CONNECT_PARALLELISM: usize = 64;

/// Where to send requests: the resolved address, the Host header and an
/// optional path prefix taken from the URL.
pub struct Target {
    pub addr: SocketAddr,
    pub host: String,
    pub prefix: String,
}

pub async fn resolve_target(url: &str) -> Result<Target> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("URL must start with http:// (got `{url}`)"))?;
    let (authority, path) = match rest.find('/') {
        Some(p) => (&rest[..p], &rest[p..]),
        None => (rest, ""),
    };
    if authority.is_empty() {
        bail!("URL `{url}` has no host");
    }
    let has_port = match authority.rfind(']') {
        Some(end) => authority[end..].contains(':'),
        None => authority.contains(':'),
    };
    let host_port = if has_port {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let addr = tokio::time::timeout(REQUEST_TIMEOUT, tokio::net::lookup_host(host_port.clone()))
        .await
        .map_err(|_| anyhow!("resolving {host_port} timed out"))?
        .with_context(|| format!("resolving {host_port}"))?
        .next()
        .ok_or_else(|| anyhow!("{host_port} resolves to no address"))?;
    Ok(Target {
        addr,
        host: authority.to_string(),
        prefix: path.trim_end_matches('/').to_string(),
    })
}

/// Percent-encode for a query string or form value (everything but unreserved).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A response body as one short line (whitespace runs collapsed, cut at 300).
pub fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let words: Vec<&str> = text.split_whitespace().collect();
    let line = words.join(" ");
    let mut out: String = line.chars().take(300).collect();
    if line.chars().count() > 300 {
        out.push_str("...");
    }
    out
}

pub struct Response {
    pub status: StatusCode,
    pub body: Bytes,
}

/// One HTTP/1.1 keep-alive connection, re-opened after a transport error or
/// timeout (a connection whose request was abandoned is not reused).
pub struct Conn {
    pub target: Arc<Target>,
    pub sender: Option<SendRequest<Full<Bytes>>>,
}

impl Conn {
    /// A connection that connects on its first request (and reconnects after
    /// an error), for polling a server that may not listen yet.
    pub fn lazy(target: Arc<Target>) -> Conn {
        Conn {
            target,
            sender: None,
        }
    }

    /// The target's `host:port`, for messages.
    pub fn target_name(&self) -> &str {
        &self.target.host
    }

    pub async fn open(target: Arc<Target>) -> Result<Conn> {
        let sender = connect(&target).await?;
        Ok(Conn {
            target,
            sender: Some(sender),
        })
    }

    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        form: Option<&str>,
    ) -> Result<Response> {
        let target = self.target.clone();
        let sender = &mut self.sender;
        let result = tokio::time::timeout(REQUEST_TIMEOUT, async {
            if sender.as_ref().is_none_or(|s| s.is_closed()) {
                *sender = Some(connect(&target).await?);
            }
            let s = sender.as_mut().expect("connected above");
            s.ready().await.context("connection closed")?;
            let req = build_request(&target, method, path, form)?;
            let resp = s.send_request(req).await.context("sending request")?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .context("reading response body")?
                .to_bytes();
            Ok::<_, anyhow::Error>(Response { status, body })
        })
        .await;
        match result {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => {
                self.sender = None;
                Err(e)
            }
            Err(_) => {
                self.sender = None;
                Err(anyhow!("timed out after {}s", REQUEST_TIMEOUT.as_secs()))
            }
        }
    }
}

pub async fn connect(target: &Target) -> Result<SendRequest<Full<Bytes>>> {
    let stream = tokio::time::timeout(REQUEST_TIMEOUT, TcpStream::connect(target.addr))
        .await
        .map_err(|_| anyhow!("connecting to {} timed out", target.addr))?
        .with_context(|| format!("connecting to {}", target.addr))?;
    stream.set_nodelay(true)?;
    let (sender, conn) = tokio::time::timeout(
        REQUEST_TIMEOUT,
        hyper::client::conn::http1::handshake(TokioIo::new(stream)),
    )
    .await
    .map_err(|_| anyhow!("HTTP handshake timed out"))??;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

pub fn build_request(
    target: &Target,
    method: Method,
    path: &str,
    form: Option<&str>,
) -> Result<Request<Full<Bytes>>> {
    let mut builder = Request::builder()
        .method(method)
        .uri(format!("{}{}", target.prefix, path))
        .header(HOST, target.host.as_str());
    let body = match form {
        Some(f) => {
            builder = builder.header(CONTENT_TYPE, "application/x-www-form-urlencoded");
            Bytes::from(f.to_string())
        }
        None => Bytes::new(),
    };
    Ok(builder.body(Full::new(body))?)
}

/// Opens `n` connections, a bounded number at a time; connection `c` goes to
/// `targets[c % targets.len()]`, and the result keeps that order.
pub async fn open_conns(targets: &[Arc<Target>], n: usize) -> Result<Vec<Conn>> {
    if targets.is_empty() {
        bail!("no target to connect to");
    }
    let sem = Arc::new(Semaphore::new(CONNECT_PARALLELISM));
    let mut set = JoinSet::new();
    for c in 0..n {
        let target = targets[c % targets.len()].clone();
        let sem = sem.clone();
        set.spawn(async move {
            let _permit = sem.acquire_owned().await?;
            Conn::open(target).await.map(|conn| (c, conn))
        });
    }
    let mut conns = Vec::with_capacity(n);
    while let Some(joined) = set.join_next().await {
        conns.push(joined.context("connect task")??);
    }
    conns.sort_by_key(|(c, _)| *c);
    Ok(conns.into_iter().map(|(_, conn)| conn).collect())
}

pub fn keys_path(api: Api, key: &str) -> String {
    match api {
        Api::V1 => format!("/v1/keys/bench/{key}"),
        Api::V2 => format!("/v2/keys/bench/{key}"),
    }
}

pub fn write_method(api: Api) -> Method {
    match api {
        Api::V1 => Method::POST,
        Api::V2 => Method::PUT,
    }
}

pub fn make_value(size: usize) -> String {
    (0..size).map(|j| (b'a' + (j % 26) as u8) as char).collect()
}

/// Path of key `i` of the `scale` workload (zero-padded, so that the keys of
/// one million sort and read alike).
pub fn scale_key_path(i: usize) -> String {
    format!("/v2/keys/scale/k{i:07}")
}

/// The value `scale` writes to key `i`: its number, then filler, `size` bytes
/// in all (cut short when `size` is smaller than the number).
pub fn scale_value(i: usize, size: usize) -> String {
    let mut v = format!("v{i:07}-");
    v.truncate(size);
    let filler = make_value(size - v.len());
    v.push_str(&filler);
    v
}

/// The value of `node.value` in an etcd JSON answer.
pub fn node_value(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.get("node")?.get("value")?.as_str().map(String::from)
}

pub fn node_modified_index(body: &[u8]) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.get("node")?.get("modifiedIndex")?.as_u64()
}

/// The `errorCode` of an etcd JSON error answer (101: compare failed).
pub fn error_code(body: &[u8]) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.get("errorCode")?.as_u64()
}

/// True when a 404/405 means "no such endpoint" rather than an etcd error
/// (etcd errors are JSON objects carrying an `errorCode`).
pub fn is_unsupported(resp: &Response) -> bool {
    if resp.status != StatusCode::NOT_FOUND && resp.status != StatusCode::METHOD_NOT_ALLOWED {
        return false;
    }
    let etcd_error = serde_json::from_slice::<serde_json::Value>(&resp.body)
        .ok()
        .is_some_and(|v| v.get("errorCode").is_some());
    !etcd_error
}

pub fn describe(method: &Method, path: &str, resp: &Response) -> String {
    format!(
        "{method} {path} -> {}: {}",
        resp.status.as_u16(),
        snippet(&resp.body)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Connection `c` goes to target `c % n`, in order, whatever order the
    /// connects finish in.
    #[tokio::test]
    async fn connections_are_spread_round_robin() {
        let mut targets = Vec::new();
        for _ in 0..3 {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move {
                let mut held = Vec::new();
                while let Ok((sock, _)) = listener.accept().await {
                    held.push(sock);
                }
            });
            targets.push(Arc::new(
                resolve_target(&format!("http://{addr}")).await.unwrap(),
            ));
        }
        let conns = open_conns(&targets, 7).await.unwrap();
        let got: Vec<&str> = conns.iter().map(|c| c.target_name()).collect();
        let want: Vec<&str> = (0..7).map(|c| targets[c % 3].host.as_str()).collect();
        assert_eq!(got, want);
        assert!(open_conns(&[], 1).await.is_err());
    }

    #[test]
    fn scale_keys_and_values() {
        assert_eq!(scale_key_path(42), "/v2/keys/scale/k0000042");
        assert_eq!(scale_key_path(12_345_678), "/v2/keys/scale/k12345678");
        let v = scale_value(42, 100);
        assert_eq!(v.len(), 100);
        assert!(v.starts_with("v0000042-abc"), "{v}");
        assert_ne!(scale_value(1, 100), scale_value(2, 100));
        assert_eq!(scale_value(42, 4), "v000");
        assert_eq!(scale_value(42, 0), "");
    }

    #[test]
    fn encodes_query_values() {
        assert_eq!(encode("a-b_c.d~9"), "a-b_c.d~9");
        assert_eq!(encode("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }

    #[test]
    fn tells_missing_endpoints_from_etcd_errors() {
        let resp = |code: u16, body: &str| Response {
            status: StatusCode::from_u16(code).unwrap(),
            body: Bytes::from(body.to_string()),
        };
        assert!(is_unsupported(&resp(404, "404 page not found")));
        assert!(is_unsupported(&resp(405, "")));
        assert!(!is_unsupported(&resp(
            404,
            r#"{"errorCode":100,"message":"Key not found"}"#
        )));
        assert!(!is_unsupported(&resp(500, "boom")));
    }

    #[test]
    fn snippets_are_one_short_line() {
        let long = "x ".repeat(500);
        let s = snippet(format!("<html>\n  <body>{long}</body>").as_bytes());
        assert!(!s.contains('\n'));
        assert!(s.len() <= 303 && s.ends_with("..."));
    }
}
