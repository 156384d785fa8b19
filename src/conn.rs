//! Serving HTTP/1.1 connections on a port, with the limits of `docs/limits.md`.
//!
//! axum's own `serve` has no timer, so hyper's header-read timeout never fires there, it has
//! no cap on connections and it waits a whole second after a failed `accept` (EMFILE). This
//! loop is ours instead:
//!
//! * **Connection cap.** At most `max_connections` connections are open on the port (TLS
//!   handshakes in progress included). One accepted beyond that is closed at once, so the
//!   client sees a closed connection rather than waiting in the kernel's backlog, and the
//!   descriptors the log and the snapshots need are never taken by clients.
//! * **Header timeout.** A request's head (request line and headers) must arrive within
//!   `header_timeout` of the server starting to wait for it: from the connection's accept
//!   (a TLS handshake included), or from the end of the previous response on a kept-alive
//!   connection. So a connection that never completes its headers (slowloris), and an idle
//!   kept-alive one, is closed after it, without an answer. (hyper's own timer covers the
//!   later requests; it would start the first one's only when its first byte came, so that
//!   one has a deadline of its own here.)
//! * **Body timeout.** Once a handler has had to wait for a body, the rest of it must come
//!   within `body_timeout`; otherwise reading it fails (the handler answers 400, as for a
//!   body cut short) and the connection is closed.
//! * **Write timeout.** A client that stops reading may hold an answer in the server's
//!   buffers for at most `write_timeout`: a write that makes no progress for that long
//!   closes the connection.
//! * **Header size.** Request line and headers together may be at most 256 KiB, in at most
//!   100 header lines, the request target at most 65,534 bytes; over these, hyper answers
//!   `431 Request Header Fields Too Large` (or `414 URI Too Long`) and closes. (etcd, Go,
//!   allows 1 MiB of headers; no client comes near either.)
//!
//! Shutdown: stop accepting, ask every connection to finish its request in flight and close,
//! then wait for them (the caller bounds the wait).
//!
//! A port's requests go straight to its [`Handler`], one function that dispatches by hand
//! (`api/mod.rs` says why), with no route table in between: axum's router, with only a
//! fallback in it, still cost ~5% of the server's CPU per write and ~6% per read (its service
//! wrappers, extensions and response mapping; measured in alternating pairs). What it did to
//! every answer is done here, in [`finish`].

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{Method, header};
use axum::response::Response;
use futures_util::future::BoxFuture;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Sleep;

/// Largest request head (request line and headers).
pub const MAX_HEADER_BYTES: usize = 256 << 10;
/// Most header lines in one request (hyper's default; Go has no count of its own).
pub const MAX_HEADERS: usize = 100;
/// How many connections above the cap are reported in one warning at most every this often.
const CAP_WARNING_EVERY: Duration = Duration::from_secs(10);

/// What answers every request of a port.
pub type Handler = Arc<dyn Fn(Request) -> BoxFuture<'static, Response> + Send + Sync>;

/// `f` as a port's [`Handler`].
pub fn handler<F, Fut>(f: F) -> Handler
where
    F: Fn(Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response> + Send + 'static,
{
    Arc::new(move |req| Box::pin(f(req)))
}

/// What every answer gets on its way out (as axum's router did it): a `Content-Length` when
/// the body's size is known and the handler set none, and no body for a `HEAD` request (the
/// length stays that of the `GET` answer). A successful answer to `CONNECT` gets no length
/// added and loses its body, if it has one.
///
/// (hyper would write the length of most answers itself, but after the `Connection` header it
/// adds, not before: the header stays ours, so answers stay byte for byte what they were.)
fn finish(method: &Method, mut res: Response) -> Response {
    if method == Method::CONNECT && res.status().is_success() {
        if res.headers().contains_key(header::CONTENT_LENGTH)
            || res.headers().contains_key(header::TRANSFER_ENCODING)
            || res.body().size_hint().lower() != 0
        {
            *res.body_mut() = Body::empty();
        }
        return res;
    }
    if !res.headers().contains_key(header::CONTENT_LENGTH)
        && let Some(n) = res.body().size_hint().exact()
    {
        res.headers_mut()
            .insert(header::CONTENT_LENGTH, crate::api::response::number(n));
    }
    if method == Method::HEAD {
        *res.body_mut() = Body::empty();
    }
    res
}

/// The limits of one port.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub header_timeout: Option<Duration>,
    pub body_timeout: Option<Duration>,
    pub write_timeout: Option<Duration>,
}

/// The peer port's limits: members keep a few connections each; the timeouts are etcd's
/// peer read timeout (5 minutes), longer than the peer client's 90 s idle pool timeout, so a
/// member never reuses a connection the other side is closing.
pub const PEER_LIMITS: Limits = Limits {
    max_connections: 1024,
    header_timeout: Some(Duration::from_secs(300)),
    body_timeout: Some(Duration::from_secs(300)),
    write_timeout: Some(Duration::from_secs(300)),
};

/// Descriptors kept back from client connections when their cap is derived from the
/// open-files limit: the log, the data file, snapshots, the peer port and its clients.
pub const RESERVED_FDS: u64 = 1024 + PEER_LIMITS.max_connections as u64;

/// The client port's limits from the configuration; a cap of 0 means "what the open-files
/// limit allows, less [`RESERVED_FDS`]".
pub fn client_limits(cfg: &crate::config::Config) -> Limits {
    let secs = |s: u64| (s > 0).then(|| Duration::from_secs(s));
    let max_connections = match cfg.max_connections {
        0 => auto_max_connections(),
        n => n,
    };
    Limits {
        max_connections,
        header_timeout: secs(cfg.header_timeout_s),
        body_timeout: secs(cfg.body_timeout_s),
        write_timeout: secs(cfg.write_timeout_s),
    }
}

/// The open-files limit less [`RESERVED_FDS`] (at least 64).
fn auto_max_connections() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct we pass.
    let cur = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_cur
    } else {
        1024
    };
    let n = cur.saturating_sub(RESERVED_FDS).max(64);
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// Serve `handler` on `listener` (over TLS when `tls` is given) until `stop` turns true, then
/// wait for the open connections to finish.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    handler: Handler,
    mut stop: watch::Receiver<bool>,
    limits: Limits,
    what: &'static str,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let open = Arc::new(AtomicUsize::new(0));
    // Every connection task holds a receiver; `closed()` tells when the last one is gone.
    let (conns_tx, conns_rx) = watch::channel(());
    let mut refused = Refusals::default();
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.wait_for(|s| *s) => break,
        };
        let (stream, addr) = match accepted {
            Ok(c) => c,
            Err(e) => {
                if !is_connection_error(&e) {
                    // Most likely out of descriptors (EMFILE): connections will close and
                    // free some; try again soon rather than spinning.
                    tracing::warn!(port = what, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                continue;
            }
        };
        let slot = match Slot::take(&open, limits.max_connections) {
            Some(slot) => slot,
            None => {
                drop(stream);
                refused.note(what, limits.max_connections);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let acceptor = acceptor.clone();
        let mut stop = stop.clone();
        let conns_rx = conns_rx.clone();
        let accepted = tokio::time::Instant::now();
        let fut = async move {
            let _slot = slot;
            let _alive = conns_rx;
            // Until its first byte, a connection costs only this task and its socket: hyper's
            // buffers are made once there is something to read.
            if !first_byte(&stream, &mut stop, limits.header_timeout).await {
                return;
            }
            // The connection's state machine is large (hyper's, rustls'): boxed, so a
            // waiting connection's task stays small.
            let io = Guarded::new(stream, limits.write_timeout);
            match acceptor {
                None => Box::pin(serve_connection(io, handler, stop, limits, accepted)).await,
                Some(acceptor) => {
                    Box::pin(async move {
                        if let Some(tls) = crate::tls::handshake(io, &acceptor, addr).await {
                            serve_connection(tls, handler, stop, limits, accepted).await;
                        }
                    })
                    .await
                }
            }
        };
        tokio::spawn(fut);
    }
    drop(conns_rx);
    drop(listener);
    conns_tx.closed().await;
}

/// Wait until the client sends something (or closes): false when the header timeout passes
/// first or the server stops.
async fn first_byte(
    stream: &TcpStream,
    stop: &mut watch::Receiver<bool>,
    limit: Option<Duration>,
) -> bool {
    // (`readable()` can report a fresh socket ready before any byte came: peek instead.)
    let mut byte = [0u8; 1];
    let wait = async {
        match limit {
            Some(limit) => tokio::time::timeout(limit, stream.peek(&mut byte))
                .await
                .is_ok_and(|r| r.is_ok()),
            None => stream.peek(&mut byte).await.is_ok(),
        }
    };
    tokio::select! {
        ok = wait => ok,
        _ = stop.wait_for(|s| *s) => false,
    }
}

/// One connection, until it closes or the server stops; its first request's head must be
/// complete within the header timeout of `accepted`.
async fn serve_connection<IO>(
    io: IO,
    handler: Handler,
    mut stop: watch::Receiver<bool>,
    limits: Limits,
    accepted: tokio::time::Instant,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let body_timeout = limits.body_timeout;
    // Set once hyper has read a whole request head (it then calls the service).
    let first_head = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = first_head.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        seen.store(true, Ordering::Relaxed);
        let req = req.map(|b| match body_timeout {
            Some(limit) => Body::new(BodyDeadline::new(b, limit)),
            None => Body::new(b),
        });
        let method = req.method().clone();
        let answer = handler(req);
        async move { Ok::<_, std::convert::Infallible>(finish(&method, answer.await)) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        // (The header count is hyper's default, MAX_HEADERS: setting it explicitly would
        // move every request's header array to the heap.)
        // hyper's buffer limit (~400 KiB) stays: it also bounds what is queued for a client
        // that does not read.
        .max_header_size(MAX_HEADER_BYTES);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let first_deadline = async {
        match limits.header_timeout {
            Some(limit) => {
                tokio::time::sleep_until(accepted + limit).await;
                if first_head.load(Ordering::Relaxed) {
                    std::future::pending::<()>().await;
                }
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = conn.as_mut() => return,
        // No complete head in time: dropping the connection closes it.
        _ = first_deadline => return,
        _ = stop.wait_for(|s| *s) => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// A counted place among the port's open connections; given back when dropped.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(open: &Arc<AtomicUsize>, max: usize) -> Option<Slot> {
        let mut cur = open.load(Ordering::Relaxed);
        loop {
            if cur >= max {
                return None;
            }
            match open.compare_exchange_weak(cur, cur + 1, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return Some(Slot(open.clone())),
                Err(now) => cur = now,
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Connections refused at the cap, reported at most once per [`CAP_WARNING_EVERY`].
#[derive(Default)]
struct Refusals {
    since_report: u64,
    last_report: Option<Instant>,
}

impl Refusals {
    fn note(&mut self, what: &str, max: usize) {
        self.since_report += 1;
        let now = Instant::now();
        if self
            .last_report
            .is_none_or(|t| now.duration_since(t) >= CAP_WARNING_EVERY)
        {
            tracing::warn!(
                port = what,
                max_connections = max,
                refused = self.since_report,
                "connection limit reached: closing new connections"
            );
            self.since_report = 0;
            self.last_report = Some(now);
        }
    }
}

/// A connection's socket with a write timeout: a write (or flush, or shutdown) that stays
/// blocked for longer than the limit fails with `TimedOut`, which closes the connection. The
/// timer is only created when a write has to wait.
pub struct Guarded<IO> {
    io: IO,
    limit: Option<Duration>,
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<IO> Guarded<IO> {
    pub fn new(io: IO, limit: Option<Duration>) -> Self {
        Guarded {
            io,
            limit,
            stalled: None,
        }
    }

    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    /// After a write attempt: Ready clears the stall timer, Pending starts or checks it.
    fn watch<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match r {
            Poll::Ready(r) => {
                self.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let Some(limit) = self.limit else {
                    return Poll::Pending;
                };
                let timer = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                if timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client stopped reading",
                    )));
                }
                Poll::Pending
            }
        }
    }
}

impl Guarded<TcpStream> {
    pub async fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.io.peek(buf).await
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Guarded<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Guarded<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        self.watch(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.watch(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_flush(cx);
        self.watch(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_shutdown(cx);
        self.watch(cx, r)
    }
}

/// A request body whose rest must arrive within `limit` of the first time its reader had to
/// wait for it (no timer is made for a body that came with the head).
struct BodyDeadline {
    inner: Incoming,
    limit: Duration,
    timer: Option<Pin<Box<Sleep>>>,
}

impl BodyDeadline {
    fn new(inner: Incoming, limit: Duration) -> Self {
        BodyDeadline {
            inner,
            limit,
            timer: None,
        }
    }
}

/// The error a body that came too slowly ends with.
#[derive(Debug)]
pub struct BodyTimedOut(pub Duration);

impl std::fmt::Display for BodyTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the body did not arrive within {:?}", self.0)
    }
}

impl std::error::Error for BodyTimedOut {}

impl HttpBody for BodyDeadline {
    type Data = bytes::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(r) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(r.map(|r| r.map_err(Into::into)));
        }
        let limit = this.limit;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        ready!(timer.as_mut().poll(cx));
        Poll::Ready(Some(Err(Box::new(BodyTimedOut(limit)))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
