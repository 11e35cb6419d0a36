//! `upstream` backend: a named pool of gRPC servers reached over cleartext HTTP/2 (h2c, prior
//! knowledge), doing what an Envoy cluster in front of gRPC ML servers does: keepalive PINGs,
//! no idle timeout on live streams, a per-endpoint stream cap, round-robin or least-loaded
//! choice, active health checks, a circuit breaker per endpoint, and failover to another
//! endpoint only before the first chunk.
//!
//! Chunks are passed through as raw gRPC messages (never decoded): the response body is read
//! only when the client is ready for more, so HTTP/2 flow control pushes back on the upstream.

use crate::backend::{Backend, BackendRequest, ChunkStream};
use crate::coalesce::CoalescingIo;
use crate::config::{LbPolicy, UpstreamConfig};
use crate::metrics::{EndpointLabel, StreamMetrics};
use crate::status::{Code, Status};
use crate::wire::{self, MessageSplitter, Messages, WireError};
use async_trait::async_trait;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use http::{HeaderMap, Request, Uri};
use http_body::Body as _;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use parking_lot::Mutex;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Path of the one RPC this gateway proxies.
pub const STREAM_PREDICT_PATH: &str = "/inference.Inference/StreamPredict";
const HEALTH_PATH: &str = "/grpc.health.v1.Health/Check";
/// Metadata header carrying the verified identity to the upstream (client values are dropped).
pub const IDENTITY_HEADER: &str = "x-switchboard-identity";

/// Per-endpoint circuit breaker, sans-IO (time passed in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Breaker {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One trial stream is in flight; its outcome closes or reopens the breaker.
    HalfOpen,
}

impl Breaker {
    pub fn new() -> Self {
        Breaker::Closed { failures: 0 }
    }

    /// May a stream be sent now? Moves Open → HalfOpen once the open period is over (letting
    /// exactly this one caller through).
    pub fn allow(&mut self, now: Instant) -> bool {
        match *self {
            Breaker::Closed { .. } => true,
            Breaker::Open { until } if now >= until => {
                *self = Breaker::HalfOpen;
                true
            }
            Breaker::Open { .. } | Breaker::HalfOpen => false,
        }
    }

    pub fn on_success(&mut self) {
        *self = Breaker::Closed { failures: 0 };
    }

    /// Records a failure; returns true when this one opened the breaker.
    pub fn on_failure(&mut self, now: Instant, threshold: u32, open_for: Duration) -> bool {
        if threshold == 0 {
            return false;
        }
        match *self {
            Breaker::Closed { failures } if failures + 1 < threshold => {
                *self = Breaker::Closed {
                    failures: failures + 1,
                };
                false
            }
            Breaker::Open { .. } => false,
            _ => {
                *self = Breaker::Open {
                    until: now + open_for,
                };
                true
            }
        }
    }
}

impl Default for Breaker {
    fn default() -> Self {
        Self::new()
    }
}

/// One server of a pool.
pub struct Endpoint {
    pub url: String,
    base: Uri,
    active: AtomicUsize,
    healthy: AtomicBool,
    probe_failures: AtomicU32,
    breaker: Mutex<Breaker>,
    label: EndpointLabel,
}

impl Endpoint {
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }
    fn uri(&self, path: &str) -> Result<Uri, Status> {
        let mut parts = self.base.clone().into_parts();
        parts.path_and_query = Some(
            path.parse()
                .map_err(|_| Status::internal("bad upstream path"))?,
        );
        Uri::from_parts(parts).map_err(|_| Status::internal("bad upstream url"))
    }
}

/// Holds one stream slot on an endpoint; released when the stream ends or is dropped.
struct ActiveGuard(Arc<Endpoint>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A named pool of upstream endpoints.
type HttpClient = Client<UpstreamConnector, Full<Bytes>>;

/// Read-ahead on upstream connections: a tonic server writes ready messages in 32 KiB runs.
const UPSTREAM_READ_AHEAD: usize = 64 * 1024;

/// Connects like [`HttpConnector`] and wraps the socket in a [`CoalescingIo`] with read-ahead:
/// the upstream's DATA frames are read in runs, and the window updates and requests the
/// gateway writes share writes (decision 0033).
#[derive(Clone)]
pub struct UpstreamConnector {
    http: HttpConnector,
    coalesce: bool,
}

type UpstreamIo = TokioIo<CoalescingIo<tokio::net::TcpStream>>;

impl tower::Service<http::Uri> for UpstreamConnector {
    type Response = UpstreamIo;
    type Error = <HttpConnector as tower::Service<http::Uri>>::Error;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<UpstreamIo, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.http.poll_ready(cx)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let connecting = self.http.call(uri);
        let coalesce = self.coalesce;
        Box::pin(async move {
            let tcp = connecting.await?.into_inner();
            Ok(TokioIo::new(if coalesce {
                CoalescingIo::with_read_ahead(tcp, UPSTREAM_READ_AHEAD)
            } else {
                CoalescingIo::passthrough(tcp)
            }))
        })
    }
}

static NEXT_POOL_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

thread_local! {
    /// Per thread, per pool: a client with its own connection pool.
    static THREAD_CLIENTS: std::cell::RefCell<Vec<(u64, HttpClient)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// SETTINGS_MAX_FRAME_SIZE the gateway announces to upstreams.
const UPSTREAM_MAX_FRAME: u32 = 64 * 1024;

pub struct UpstreamPool {
    name: String,
    cfg: UpstreamConfig,
    endpoints: Vec<Arc<Endpoint>>,
    /// How each thread's HTTP/2 client is built (see [`UpstreamPool::client`]).
    builder: hyper_util::client::legacy::Builder,
    connector: UpstreamConnector,
    /// Tells this pool's per-thread clients apart from other pools' in the thread-local map.
    id: u64,
    rr: AtomicUsize,
    max_chunk_bytes: usize,
    metrics: StreamMetrics,
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamConfigError {
    #[error("stream upstream {0:?}: no url")]
    NoUrl(String),
    #[error("stream upstream {name:?}: invalid url {url:?} (want http://host:port)")]
    BadUrl { name: String, url: String },
}

impl UpstreamPool {
    /// `max_chunk_bytes` bounds one response message (`[stream] max_chunk_bytes`).
    pub fn new(
        cfg: &UpstreamConfig,
        max_chunk_bytes: usize,
        metrics: StreamMetrics,
    ) -> Result<Self, UpstreamConfigError> {
        let urls = cfg.endpoints();
        if urls.is_empty() {
            return Err(UpstreamConfigError::NoUrl(cfg.name.clone()));
        }
        let mut endpoints = Vec::new();
        for url in urls {
            let base: Uri = url.parse().map_err(|_| UpstreamConfigError::BadUrl {
                name: cfg.name.clone(),
                url: url.clone(),
            })?;
            if base.scheme_str() != Some("http") || base.authority().is_none() {
                return Err(UpstreamConfigError::BadUrl {
                    name: cfg.name.clone(),
                    url,
                });
            }
            let label = EndpointLabel {
                upstream: cfg.name.clone(),
                endpoint: url.clone(),
            };
            metrics.upstream_healthy.get_or_create(&label).set(1);
            endpoints.push(Arc::new(Endpoint {
                url,
                base,
                active: AtomicUsize::new(0),
                healthy: AtomicBool::new(true),
                probe_failures: AtomicU32::new(0),
                breaker: Mutex::new(Breaker::new()),
                label,
            }));
        }
        let mut conn = HttpConnector::new();
        conn.set_nodelay(true);
        conn.set_connect_timeout(Some(cfg.connect_timeout));
        if !cfg.tcp_keepalive.is_zero() {
            conn.set_keepalive(Some(cfg.tcp_keepalive));
        }
        let mut b = Client::builder(TokioExecutor::new());
        b.http2_only(true)
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            // No idle timeout: a connection carrying a long stream is never closed for quiet.
            .pool_idle_timeout(None)
            .http2_adaptive_window(false)
            // Larger DATA frames from the upstream: fewer frames to read and forward per chunk
            // (a tonic server, for one, sends its ready messages in 32 KiB runs).
            .http2_max_frame_size(UPSTREAM_MAX_FRAME)
            .http2_initial_stream_window_size(256 * 1024)
            .http2_initial_connection_window_size(4 * 1024 * 1024);
        if !cfg.keepalive_interval.is_zero() {
            b.http2_keep_alive_interval(cfg.keepalive_interval)
                .http2_keep_alive_timeout(cfg.keepalive_timeout)
                .http2_keep_alive_while_idle(true);
        }
        Ok(UpstreamPool {
            name: cfg.name.clone(),
            cfg: cfg.clone(),
            endpoints,
            builder: b,
            connector: UpstreamConnector {
                http: conn,
                coalesce: cfg.coalesce_io,
            },
            id: NEXT_POOL_ID.fetch_add(1, Ordering::Relaxed),
            rr: AtomicUsize::new(0),
            max_chunk_bytes,
            metrics,
        })
    }

    /// The calling thread's client. A hyper client's connection task runs on the runtime that
    /// opened the connection; one client per thread keeps a proxied stream's upstream
    /// connection on the thread that serves its client connection (the server's connection
    /// threads), so chunks are not handed across threads. A clone of the same builder
    /// configuration, with its own pool.
    fn client(&self) -> HttpClient {
        THREAD_CLIENTS.with(|c| {
            let mut c = c.borrow_mut();
            if let Some((_, client)) = c.iter().find(|(id, _)| *id == self.id) {
                return client.clone();
            }
            // Pools are built at startup; a thread that saw many (tests) starts over.
            if c.len() >= 64 {
                c.clear();
            }
            let client = self.builder.build(self.connector.clone());
            c.push((self.id, client.clone()));
            client
        })
    }

    pub fn endpoints(&self) -> &[Arc<Endpoint>] {
        &self.endpoints
    }

    /// Endpoints in the order this stream should try them.
    fn order(&self) -> Vec<Arc<Endpoint>> {
        let n = self.endpoints.len();
        match self.cfg.lb_policy {
            LbPolicy::RoundRobin => {
                let start = self.rr.fetch_add(1, Ordering::Relaxed);
                (0..n)
                    .map(|i| self.endpoints[(start + i) % n].clone())
                    .collect()
            }
            LbPolicy::LeastLoaded => {
                let start = self.rr.fetch_add(1, Ordering::Relaxed);
                let mut v: Vec<_> = (0..n)
                    .map(|i| self.endpoints[(start + i) % n].clone())
                    .collect();
                // Stable sort: ties keep the rotating order, so equal loads still spread.
                v.sort_by_key(|e| e.active());
                v
            }
        }
    }

    /// Runs active health checks until `shutdown` (no-op when the interval is zero).
    pub fn spawn_health_checks(self: &Arc<Self>, shutdown: CancellationToken) {
        if self.cfg.health_check_interval.is_zero() {
            return;
        }
        for ep in self.endpoints.clone() {
            let pool = self.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(pool.cfg.health_check_interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tick.tick() => {}
                    }
                    let ok = pool.probe(&ep).await;
                    pool.record_probe(&ep, ok);
                }
            });
        }
    }

    fn record_probe(&self, ep: &Endpoint, ok: bool) {
        let was = ep.healthy.load(Ordering::Relaxed);
        if ok {
            ep.probe_failures.store(0, Ordering::Relaxed);
            ep.healthy.store(true, Ordering::Relaxed);
        } else {
            let n = ep.probe_failures.fetch_add(1, Ordering::Relaxed) + 1;
            if n >= self.cfg.unhealthy_threshold.max(1) {
                ep.healthy.store(false, Ordering::Relaxed);
            }
        }
        let now = ep.healthy.load(Ordering::Relaxed);
        if now != was {
            tracing::warn!(upstream = %self.name, endpoint = %ep.url, healthy = now, "upstream health changed");
        }
        self.metrics
            .upstream_healthy
            .get_or_create(&ep.label)
            .set(now as i64);
    }

    /// `grpc.health.v1.Health/Check` with an empty service name. SERVING is healthy, and so is
    /// UNIMPLEMENTED: the server answered gRPC, it just has no health service.
    async fn probe(&self, ep: &Endpoint) -> bool {
        let fut = async {
            let uri = ep.uri(HEALTH_PATH).ok()?;
            let req = Request::post(uri)
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(Full::new(wire::encode_frame(0, &[])))
                .ok()?;
            let resp = self.client().request(req).await.ok()?;
            if resp.status() != 200 {
                return Some(false);
            }
            let head_status = grpc_status_of(resp.headers());
            let collected = http_body_util::Limited::new(resp.into_body(), 64 * 1024)
                .collect()
                .await
                .ok()?;
            let trailer_status = collected.trailers().and_then(grpc_status_of);
            let body = collected.to_bytes();
            match head_status.or(trailer_status).map(|s| s.code) {
                Some(Code::Unimplemented) => Some(true),
                Some(Code::Ok) => {
                    let frames = wire::decode_all(&body, 1024).ok()?;
                    // HealthCheckResponse { status = 1 (SERVING) } is the two bytes 08 01.
                    Some(frames.first().map(|f| &f.payload[..]) == Some(&[0x08, 0x01][..]))
                }
                _ => Some(false),
            }
        };
        matches!(
            tokio::time::timeout(self.cfg.health_check_timeout, fut).await,
            Ok(Some(true))
        )
    }

    /// One attempt on one endpoint, up to the first message (or the end of the stream).
    async fn attempt(&self, ep: &Arc<Endpoint>, req: &BackendRequest) -> Result<Opened, Failure> {
        let uri = ep
            .uri(STREAM_PREDICT_PATH)
            .map_err(|s| Failure::fatal(s, "protocol"))?;
        let mut b = Request::post(uri)
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("user-agent", "switchboard-stream")
            .header(IDENTITY_HEADER, sanitize_header(&req.identity));
        if let Some(d) = req.deadline {
            let left = d.saturating_duration_since(tokio::time::Instant::now());
            b = b.header("grpc-timeout", wire::format_grpc_timeout(left));
        }
        let http_req = b
            .body(Full::new(wire::encode_frame(0, &req.raw)))
            .map_err(|e| Failure::fatal(Status::internal(e.to_string()), "protocol"))?;
        let resp = self.client().request(http_req).await.map_err(|e| {
            Failure::retry(Status::unavailable(format!("upstream: {e}")), "connect")
        })?;
        let (parts, body) = resp.into_parts();
        if parts.status != 200 {
            let code = Code::from_http(parts.status.as_u16());
            let s = Status::new(code, format!("upstream answered HTTP {}", parts.status));
            return Err(if code == Code::Unavailable {
                Failure::retry(s, "http")
            } else {
                Failure::fatal(s, "http")
            });
        }
        if let Some(s) = grpc_status_of(&parts.headers) {
            // Trailers-only response.
            return classify_status(s, Vec::new());
        }
        let mut stream = UpstreamBody {
            body,
            splitter: MessageSplitter::new(self.max_chunk_bytes),
            queued: None,
            done: false,
            pool: self.name.clone(),
            metrics: self.metrics.clone(),
        };
        match stream.next().await {
            Some(Ok(first)) => Ok(Opened {
                first: Some(first),
                rest: stream,
            }),
            None => Ok(Opened {
                first: None,
                rest: stream,
            }),
            Some(Err(e)) if e.transport => Err(Failure::retry(e.status, "reset")),
            Some(Err(e)) => classify_status(e.status, Vec::new()),
        }
    }
}

/// What `attempt` yields when a stream got going.
struct Opened {
    first: Option<Messages>,
    rest: UpstreamBody,
}

struct Failure {
    status: Status,
    kind: &'static str,
    retry: bool,
}

impl Failure {
    fn retry(status: Status, kind: &'static str) -> Self {
        Failure {
            status,
            kind,
            retry: true,
        }
    }
    fn fatal(status: Status, kind: &'static str) -> Self {
        Failure {
            status,
            kind,
            retry: false,
        }
    }
}

/// A status that ended the stream before any chunk: UNAVAILABLE is worth another endpoint;
/// any other is the application's answer and goes to the client as is.
fn classify_status(s: Status, _: Vec<()>) -> Result<Opened, Failure> {
    if s.code == Code::Unavailable {
        Err(Failure::retry(s, "status"))
    } else {
        Err(Failure {
            status: s,
            kind: "",
            retry: false,
        })
    }
}

fn sanitize_header(v: &str) -> String {
    v.chars()
        .filter(|c| (' '..='~').contains(c))
        .take(256)
        .collect()
}

/// `grpc-status` / `grpc-message` of a header or trailer map.
pub fn grpc_status_of(h: &HeaderMap) -> Option<Status> {
    let code = h
        .get("grpc-status")?
        .to_str()
        .ok()?
        .trim()
        .parse::<i32>()
        .ok()?;
    let message = h
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .map(wire::decode_grpc_message)
        .unwrap_or_default();
    Some(Status::new(Code::from_i32(code), message))
}

struct UpErr {
    status: Status,
    /// The transport failed (reset, connection lost) rather than the server answering.
    transport: bool,
}

/// The upstream response body as a stream of [`Messages`] runs. Reads one HTTP/2 DATA frame
/// at a time, only when polled, and hands on the whole messages inside it as a slice of the
/// frame (see [`MessageSplitter`]): the gateway forwards upstream bytes without re-framing.
struct UpstreamBody {
    body: Incoming,
    splitter: MessageSplitter,
    /// The second run of the last DATA frame, when it yielded two.
    queued: Option<Messages>,
    done: bool,
    pool: String,
    metrics: StreamMetrics,
}

impl UpstreamBody {
    fn fail(
        &mut self,
        kind: &'static str,
        status: Status,
        transport: bool,
    ) -> Poll<Option<Result<Messages, UpErr>>> {
        self.done = true;
        self.queued = None;
        if kind == "chunk_too_large" {
            self.metrics.limit(kind);
        } else {
            self.metrics.upstream_error(&self.pool, kind);
        }
        Poll::Ready(Some(Err(UpErr { status, transport })))
    }
}

impl Stream for UpstreamBody {
    type Item = Result<Messages, UpErr>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(m) = this.queued.take() {
                return Poll::Ready(Some(Ok(m)));
            }
            if this.done {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => match this.splitter.push(data) {
                        Ok([first, second]) => match (first, second) {
                            (Some(a), b) => {
                                this.queued = b;
                                return Poll::Ready(Some(Ok(a)));
                            }
                            (None, Some(b)) => return Poll::Ready(Some(Ok(b))),
                            (None, None) => {}
                        },
                        Err(WireError::Compressed) => {
                            return this.fail(
                                "protocol",
                                Status::internal("upstream sent a compressed message"),
                                false,
                            )
                        }
                        Err(e) => {
                            return this.fail(
                                "chunk_too_large",
                                Status::resource_exhausted(format!("upstream chunk: {e}")),
                                false,
                            )
                        }
                    },
                    Err(frame) => {
                        let status = frame
                            .trailers_ref()
                            .and_then(grpc_status_of)
                            .unwrap_or_else(|| {
                                Status::internal("upstream trailers without grpc-status")
                            });
                        if this.splitter.finish().is_err() {
                            return this.fail(
                                "protocol",
                                Status::internal("upstream ended inside a message"),
                                false,
                            );
                        }
                        if status.code == Code::Ok {
                            this.done = true;
                            return Poll::Ready(None);
                        }
                        return this.fail("status", status, false);
                    }
                },
                Poll::Ready(Some(Err(e))) => {
                    return this.fail(
                        "reset",
                        Status::unavailable(format!("upstream stream failed: {e}")),
                        true,
                    )
                }
                Poll::Ready(None) => {
                    return this.fail(
                        "protocol",
                        Status::unavailable("upstream ended the stream without a status"),
                        true,
                    )
                }
            }
        }
    }
}

#[async_trait]
impl Backend for UpstreamPool {
    fn name(&self) -> &str {
        &self.name
    }

    async fn open(&self, req: BackendRequest) -> Result<ChunkStream, Status> {
        let max_attempts = self.cfg.max_attempts.max(1);
        let mut attempts = 0;
        let mut last: Option<Status> = None;
        let mut saw_full = false;
        for ep in self.order() {
            if attempts >= max_attempts {
                break;
            }
            if !ep.is_healthy() {
                continue;
            }
            // Take a slot first so concurrent openers respect the cap.
            let n = ep.active.fetch_add(1, Ordering::Relaxed);
            let guard = ActiveGuard(ep.clone());
            if n >= self.cfg.max_concurrent_streams {
                saw_full = true;
                continue;
            }
            if !ep.breaker.lock().allow(Instant::now()) {
                continue;
            }
            if attempts > 0 {
                self.metrics.upstream_retries.inc();
            }
            attempts += 1;
            match self.attempt(&ep, &req).await {
                Ok(opened) => {
                    ep.breaker.lock().on_success();
                    let first = futures::stream::iter(opened.first.map(Ok));
                    let rest = opened.rest.map(|r| r.map_err(|e| e.status));
                    let s = first.chain(rest).map(move |item| {
                        let _hold = &guard;
                        item
                    });
                    return Ok(Box::pin(s));
                }
                Err(f) => {
                    // "status" and "reset" were counted where the body was read.
                    if matches!(f.kind, "connect" | "http" | "protocol") {
                        self.metrics.upstream_error(&self.name, f.kind);
                    }
                    if f.retry {
                        let opened = ep.breaker.lock().on_failure(
                            Instant::now(),
                            self.cfg.circuit_failure_threshold,
                            self.cfg.circuit_open_for,
                        );
                        if opened {
                            tracing::warn!(upstream = %self.name, endpoint = %ep.url, "circuit breaker opened");
                            self.metrics.circuit_opened.get_or_create(&ep.label).inc();
                        }
                        tracing::debug!(upstream = %self.name, endpoint = %ep.url, status = %f.status, "stream opening failed; trying another endpoint");
                        last = Some(f.status);
                        continue;
                    }
                    // The server answered: it is alive, whatever it said.
                    ep.breaker.lock().on_success();
                    return Err(f.status);
                }
            }
        }
        if let Some(s) = last {
            return Err(s);
        }
        if saw_full {
            self.metrics.limit("upstream_full");
            return Err(Status::resource_exhausted(format!(
                "upstream {:?} is at max_concurrent_streams",
                self.name
            )));
        }
        Err(Status::unavailable(format!(
            "no healthy endpoint in upstream {:?}",
            self.name
        )))
    }
}

#[cfg(test)]
mod tests;
