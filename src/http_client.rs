//! A small HTTP/1.1 client for talking to other etcd servers as a client does: the discovery
//! service at bootstrap (`discovery.rs`) and the members behind a proxy (`proxy.rs`).
//! (Peers talk through `raft::network::PeerClient`, which speaks the peer protocol.)

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

pub type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// A pooled client for `http://` and `https://` URLs.
#[derive(Clone)]
pub struct HttpClient {
    http: Client<Connector, Full<Bytes>>,
}

/// A request that got no answer.
#[derive(Debug)]
pub struct SendError {
    /// No connection could be made: the server never saw the request.
    pub connect: bool,
    pub message: String,
}

/// A complete answer.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl HttpClient {
    /// `tls` is used for `https://` URLs.
    pub fn new(tls: rustls::ClientConfig, connect_timeout: Duration) -> HttpClient {
        HttpClient {
            http: pooled(tls, connect_timeout),
        }
    }

    /// Send a request and return the answer as it streams in.
    pub async fn send(&self, req: Request<Full<Bytes>>) -> Result<Response<Incoming>, String> {
        self.try_send(req).await.map_err(|e| e.message)
    }

    /// Like [`send`](Self::send), telling a failure to connect (the request never left)
    /// from one after it may have been sent.
    pub async fn try_send(
        &self,
        req: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, SendError> {
        self.http.request(req).await.map_err(|e| SendError {
            connect: e.is_connect(),
            message: error_chain(&e),
        })
    }

    /// One request with a form body (or none), read to the end within `timeout` (None: no
    /// limit, for a long poll).
    pub async fn call(
        &self,
        method: Method,
        url: &str,
        form: Option<String>,
        timeout: Option<Duration>,
    ) -> Result<Answer, String> {
        let mut req = Request::builder().method(method).uri(url);
        if form.is_some() {
            req = req.header("content-type", "application/x-www-form-urlencoded");
        }
        let req = req
            .body(Full::new(Bytes::from(form.unwrap_or_default())))
            .map_err(|e| format!("{url}: {e}"))?;
        let call = async {
            let resp = self.send(req).await?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| error_chain(&e))?
                .to_bytes();
            Ok(Answer {
                status,
                headers,
                body,
            })
        };
        let res = match timeout {
            Some(t) => tokio::time::timeout(t, call)
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {t:?}"))),
            None => call.await,
        };
        res.map_err(|e| format!("{url}: {e}"))
    }
}

/// A pooled HTTP/1.1 client for `http://` and `https://` URLs (`tls` for the latter), with
/// TCP_NODELAY, a connect timeout, and idle connections kept 30 s. The peer client
/// (`raft::network`) is one too.
pub fn pooled(
    tls: rustls::ClientConfig,
    connect_timeout: Duration,
) -> Client<Connector, Full<Bytes>> {
    let mut tcp = HttpConnector::new();
    tcp.set_nodelay(true);
    tcp.set_connect_timeout(Some(connect_timeout));
    tcp.enforce_http(false);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(tcp);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector)
}

/// An error with its causes, on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let more = c.to_string();
        if !s.contains(&more) {
            s.push_str(": ");
            s.push_str(&more);
        }
        cur = c.source();
    }
    s
}
