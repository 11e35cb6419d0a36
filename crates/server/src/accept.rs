//! The HTTP edge's accept loop: one listener for HTTP/1.1 and cleartext HTTP/2.
//!
//! - **Bounded.** At most `[http] max_connections` connections are served; a reserve of
//!   [`HEALTH_RESERVE`] more is served for `/healthz`, `/readyz` and `/metrics` only, so a
//!   full server still answers its health checks; beyond that a connection is closed as soon
//!   as it is accepted. The open-files limit is raised to its hard limit at start, and the
//!   default bound is half of it, so the process never runs out of descriptors for TURN, the
//!   SFU and its database.
//! - **No timers per idle connection.** A new connection is told apart (HTTP/2 preface or not)
//!   by reading its first bytes as they arrive, woken by socket readiness; a client that sends
//!   fewer than four bytes within [`FIRST_BYTES_WAIT`] is closed.
//! - **Draining.** On shutdown the loop keeps accepting, for health checks only (`/readyz`
//!   answers 503), until every request in flight and every signaling session has finished or
//!   `[http] shutdown_grace` has passed. Idle, silent or half-sent connections do not hold it.

use crate::metrics::Label;
use crate::state::AppState;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::response::IntoResponse;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

/// Connections served beyond `max_connections` for health checks and metrics only.
pub const HEALTH_RESERVE: usize = 32;

/// How long a new connection may take to send its first four bytes.
pub const FIRST_BYTES_WAIT: Duration = Duration::from_secs(10);

/// Paths a connection in the health reserve (or opened while draining) may ask for.
const HEALTH_PATHS: &[&str] = &["/healthz", "/readyz", "/metrics"];

/// The edge's `/metrics` series.
#[derive(Clone)]
pub struct EdgeMetrics {
    open: Gauge,
    refused: Family<Label, Counter>,
    accept_errors: Counter,
}

impl EdgeMetrics {
    pub fn register(r: &mut Registry) -> EdgeMetrics {
        let m = EdgeMetrics {
            open: Gauge::default(),
            refused: Family::default(),
            accept_errors: Counter::default(),
        };
        for reason in ["limit", "busy", "first_bytes_timeout"] {
            let _ = m.refused.get_or_create(&[("reason", reason)]);
        }
        r.register(
            "http_connections",
            "Open HTTP connections (HTTP/1.1, HTTP/2, WebSocket)",
            m.open.clone(),
        );
        r.register(
            "http_connections_refused",
            "HTTP connections or requests refused: limit (past max_connections and the health \
             reserve), busy (a non-health request on a reserve connection), first_bytes_timeout",
            m.refused.clone(),
        );
        r.register(
            "http_accept_errors",
            "accept() failures (e.g. out of file descriptors)",
            m.accept_errors.clone(),
        );
        m
    }

    fn refused(&self, reason: &'static str) {
        self.refused.get_or_create(&[("reason", reason)]).inc();
    }
}

/// Raises the soft open-files limit to the hard limit; returns the soft limit in force.
pub fn raise_nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed in.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return raised.rlim_cur;
            }
        }
    }
    lim.rlim_cur
}

/// `[http] max_connections`, with 0 meaning half the open-files limit (at least 64): the
/// other half stays for TURN relays, SFU sockets, upstream connections and files.
pub fn connection_limit(configured: usize) -> usize {
    if configured > 0 {
        return configured;
    }
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct passed in.
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_cur as usize
    } else {
        1024
    };
    (soft / 2).max(64)
}

/// A warning logged at most once per interval, saying how many were held back.
struct ThrottledWarn {
    last: Mutex<Option<Instant>>,
    held: AtomicU64,
    every: Duration,
}

impl ThrottledWarn {
    fn new(every: Duration) -> Self {
        ThrottledWarn {
            last: Mutex::new(None),
            held: AtomicU64::new(0),
            every,
        }
    }

    fn warn(&self, what: &str, detail: &dyn std::fmt::Display) {
        let mut last = self.last.lock();
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < self.every) {
            self.held.fetch_add(1, Ordering::Relaxed);
            return;
        }
        *last = Some(now);
        let more = self.held.swap(0, Ordering::Relaxed);
        tracing::warn!(%detail, similar_since_last = more, "{what}");
    }
}

/// Counts one open connection while it lives.
struct Open {
    live: Arc<AtomicUsize>,
    gauge: Gauge,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::Relaxed);
        self.gauge.dec();
    }
}

/// Requests in flight (until their response body has been sent or dropped).
#[derive(Clone, Default)]
pub struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    pub fn count(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }

    fn enter(&self) -> InFlightGuard {
        self.0.fetch_add(1, Ordering::AcqRel);
        InFlightGuard(self.0.clone())
    }
}

struct InFlightGuard(Arc<AtomicUsize>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request counted in flight until it is done or dropped.
struct Tracked {
    inner: Body,
    _guard: InFlightGuard,
}

impl http_body::Body for Tracked {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A stream whose first bytes were already read: they are read again first.
pub struct Prefixed<S> {
    prefix: Vec<u8>,
    at: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    pub fn new(prefix: Vec<u8>, inner: S) -> Self {
        Prefixed {
            prefix,
            at: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.at < self.prefix.len() {
            let n = (self.prefix.len() - self.at).min(buf.remaining());
            let at = self.at;
            buf.put_slice(&self.prefix[at..at + n]);
            self.at += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Reads a connection's first bytes, up to four (enough to see the HTTP/2 preface), waiting on
/// readiness. `None` when the client closes or sends too little within `wait`.
async fn first_bytes(stream: &mut TcpStream, wait: Duration) -> Option<Vec<u8>> {
    let mut buf = [0u8; 4];
    let mut n = 0;
    let read = async {
        while n < buf.len() {
            match stream.read(&mut buf[n..]).await {
                Ok(0) | Err(_) => return false,
                Ok(k) => n += k,
            }
        }
        true
    };
    match tokio::time::timeout(wait, read).await {
        Ok(true) => Some(buf.to_vec()),
        _ => None,
    }
}

/// Everything the accept loop needs.
pub struct Edge {
    pub listener: TcpListener,
    pub threads: Arc<crate::conn_threads::ConnThreads>,
    pub router: Router,
    pub state: AppState,
    pub metrics: EdgeMetrics,
    /// Normal connections served (health reserve comes on top).
    pub max_connections: usize,
}

/// Serves until shutdown, then drains (see the module docs).
pub async fn serve(edge: Edge) {
    let Edge {
        listener,
        threads,
        router,
        state,
        metrics,
        max_connections,
    } = edge;
    let builder = {
        let mut b = auto::Builder::new(TokioExecutor::new());
        b.http2()
            .timer(hyper_util::rt::TokioTimer::new())
            .max_concurrent_streams(1024)
            .keep_alive_interval(Some(Duration::from_secs(20)))
            .keep_alive_timeout(Duration::from_secs(20));
        b.http1()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(Duration::from_secs(15));
        b
    };
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let live = Arc::new(AtomicUsize::new(0));
    let accept_warn = Arc::new(ThrottledWarn::new(Duration::from_secs(10)));
    let limit_warn = Arc::new(ThrottledWarn::new(Duration::from_secs(10)));
    let in_flight = state.in_flight.clone();
    let shared = Arc::new(Shared {
        router,
        builder,
        threads,
        metrics,
        in_flight: in_flight.clone(),
        coalesce: state.config.http.coalesce_writes,
    });
    let accept = |draining: bool| {
        let shared = shared.clone();
        let live = live.clone();
        let limit_warn = limit_warn.clone();
        move |stream: TcpStream, remote: SocketAddr, watcher: Watcher| {
            let n = live.fetch_add(1, Ordering::Relaxed) + 1;
            shared.metrics.open.inc();
            let open = Open {
                live: live.clone(),
                gauge: shared.metrics.open.clone(),
            };
            if n > max_connections + HEALTH_RESERVE {
                shared.metrics.refused("limit");
                limit_warn.warn(
                    "HTTP connection limit reached: closing new connections",
                    &format_args!("{} open, max_connections {max_connections}", n - 1),
                );
                return;
            }
            let health_only = draining || n > max_connections;
            let _ = stream.set_nodelay(true);
            let shared = shared.clone();
            tokio::spawn(async move {
                shared
                    .serve(stream, remote, health_only, watcher, open)
                    .await
            });
        }
    };
    let serving = accept(false);
    loop {
        let (stream, remote) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of descriptors and friends: back off instead of spinning.
                    shared.metrics.accept_errors.inc();
                    accept_warn.warn("accept failed", &e);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = state.shutdown.cancelled() => break,
        };
        serving(stream, remote, Some(graceful.watcher()));
    }

    state.ready.store(false, Ordering::Release);
    let grace = state.shutdown_grace();
    tracing::info!(grace = ?grace, "draining: health checks only on new connections; waiting for requests and sessions in flight");
    // Ask every connection to finish (HTTP/2 GOAWAY, HTTP/1.1 close after the current request).
    let connections_done = graceful.shutdown();
    tokio::pin!(connections_done);
    let mut signalled = false;
    let deadline = tokio::time::sleep(grace);
    tokio::pin!(deadline);
    let draining = accept(true);
    let mut poll = tokio::time::interval(Duration::from_millis(20));
    loop {
        tokio::select! {
            r = listener.accept() => {
                if let Ok((stream, remote)) = r {
                    draining(stream, remote, None);
                }
            }
            // Drives the signal to every connection; WebSocket sessions and half-read
            // requests are not tracked there, so completion alone does not end the drain.
            _ = &mut connections_done, if !signalled => signalled = true,
            _ = poll.tick() => {
                if state.drained(in_flight.count()) {
                    break;
                }
            }
            _ = &mut deadline => {
                tracing::warn!(
                    requests = in_flight.count(),
                    sessions = state.signaling.open_connections(),
                    "grace period over; closing what remains"
                );
                break;
            }
        }
    }
    drop(listener);
    // Stopping the threads drops connections still open.
    shared.threads.stop();
}

/// What every connection task shares.
struct Shared {
    router: Router,
    builder: auto::Builder<TokioExecutor>,
    threads: Arc<crate::conn_threads::ConnThreads>,
    metrics: EdgeMetrics,
    in_flight: InFlight,
    coalesce: bool,
}

type Watcher = Option<hyper_util::server::graceful::Watcher>;

impl Shared {
    async fn serve(
        self: Arc<Self>,
        mut stream: TcpStream,
        remote: SocketAddr,
        health_only: bool,
        watcher: Watcher,
        open: Open,
    ) {
        let Some(first) = first_bytes(&mut stream, FIRST_BYTES_WAIT).await else {
            self.metrics.refused("first_bytes_timeout");
            return;
        };
        if &first[..] != b"PRI " {
            let io = Prefixed::new(first, stream);
            return self
                .serve_conn(io, remote, health_only, watcher, open)
                .await;
        }
        // HTTP/2: move the socket to a connection thread's own reactor.
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%remote, error = %e, "cannot hand the connection over");
                return;
            }
        };
        let (thread, slot) = self.threads.pick();
        let shared = self.clone();
        thread.spawn(async move {
            let _slot = slot;
            match TcpStream::from_std(stream) {
                Ok(s) if shared.coalesce => {
                    let io =
                        switchboard_stream::coalesce::CoalescingIo::new(Prefixed::new(first, s));
                    shared
                        .serve_conn(io, remote, health_only, watcher, open)
                        .await
                }
                Ok(s) => {
                    let io = Prefixed::new(first, s);
                    shared
                        .serve_conn(io, remote, health_only, watcher, open)
                        .await
                }
                Err(e) => tracing::warn!(%remote, error = %e, "cannot register the connection"),
            }
        });
    }

    async fn serve_conn<I>(
        self: &Arc<Self>,
        io: I,
        remote: SocketAddr,
        health_only: bool,
        watcher: Watcher,
        _open: Open,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let shared = self.clone();
        let svc =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                let shared = shared.clone();
                async move {
                    if health_only && !HEALTH_PATHS.contains(&req.uri().path()) {
                        shared.metrics.refused("busy");
                        let mut resp = crate::error::ApiError::new(
                            http::StatusCode::SERVICE_UNAVAILABLE,
                            "server_busy",
                            "the server is at its connection limit or shutting down; retry shortly",
                        )
                        .into_response();
                        resp.headers_mut().insert(
                            http::header::CONNECTION,
                            http::HeaderValue::from_static("close"),
                        );
                        return Ok::<_, std::convert::Infallible>(resp);
                    }
                    let guard = shared.in_flight.enter();
                    req.extensions_mut().insert(ConnectInfo(remote));
                    let resp = shared.router.clone().oneshot(req).await?;
                    Ok(resp.map(|inner| {
                        Body::new(Tracked {
                            inner,
                            _guard: guard,
                        })
                    }))
                }
            });
        let conn = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(io), svc);
        let result = match watcher {
            Some(w) => w.watch(conn.into_owned()).await,
            None => conn.await,
        };
        if let Err(e) = result {
            tracing::debug!(%remote, error = %e, "connection ended with error");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// What a server sees of a client that sends `first` in two writes, 5 ms apart.
    async fn classify(first: &[u8], close: bool, wait: Duration) -> Option<Vec<u8>> {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let first = first.to_vec();
        let client = tokio::spawn(async move {
            let mut c = TcpStream::connect(addr).await.unwrap();
            let (a, b) = first.split_at(first.len().min(2));
            c.write_all(a).await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
            c.write_all(b).await.unwrap();
            if close {
                drop(c);
                return None;
            }
            Some(c)
        });
        let (mut s, _) = l.accept().await.unwrap();
        let got = first_bytes(&mut s, wait).await;
        drop(client.await);
        got
    }

    #[tokio::test]
    async fn first_bytes_tell_http2_from_http1_and_are_read_again() {
        let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        let got = classify(preface, false, Duration::from_secs(5)).await;
        assert_eq!(got.as_deref(), Some(&b"PRI "[..]));
        let got = classify(
            b"GET /healthz HTTP/1.1\r\n\r\n",
            false,
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(got.as_deref(), Some(&b"GET "[..]));
        // Too short before the client hangs up, or nothing at all: refused.
        assert_eq!(classify(b"PR", true, Duration::from_secs(5)).await, None);
        assert_eq!(classify(b"", true, Duration::from_secs(5)).await, None);
        // Too short and silent: refused when the wait is over.
        assert_eq!(
            classify(b"PR", false, Duration::from_millis(50)).await,
            None
        );
    }

    #[tokio::test]
    async fn prefixed_reads_the_prefix_then_the_stream() {
        let (a, mut b) = tokio::io::duplex(64);
        b.write_all(b" world").await.unwrap();
        drop(b);
        let mut p = Prefixed::new(b"hello".to_vec(), a);
        let mut out = String::new();
        p.read_to_string(&mut out).await.unwrap();
        assert_eq!(out, "hello world");
    }

    #[test]
    fn throttled_warn_holds_back_repeats() {
        let w = ThrottledWarn::new(Duration::from_secs(60));
        w.warn("a", &"x");
        w.warn("a", &"x");
        w.warn("a", &"x");
        assert_eq!(w.held.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn connection_limit_defaults_to_half_the_open_files_limit() {
        assert_eq!(connection_limit(500), 500);
        let auto = connection_limit(0);
        assert!(auto >= 64);
    }
}
