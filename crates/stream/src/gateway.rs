//! The edge: `inference.Inference/StreamPredict` over gRPC (HTTP/2) and gRPC-Web (binary and
//! text, HTTP/1.1 or HTTP/2), with CORS for browsers. One request flows like this:
//!
//! CORS check → content type (gRPC / gRPC-Web / gRPC-Web text) → ticket (`grpc` scope) →
//! deadline → admission (per-identity and global stream limits) → bounded request read →
//! route by `task_id` (and optional metadata) → backend `open` → [`ResponseBody`], which pulls
//! one chunk at a time from the backend only when hyper can send it, ends with the status
//! (HTTP/2 trailers, or a gRPC-Web trailer frame), enforces the deadline, closes on shutdown,
//! reports progress and metrics, and counts a drop before the end as a reset.

use crate::backend::{
    Backend, BackendRequest, ChunkStream, DigestWorker, LocalBackend, LocalWorker,
};
use crate::config::StreamConfig;
use crate::metrics::{BackendLabel, StreamMetrics};
use crate::progress::{NoProgress, ProgressEvent, ProgressState, ProgressThrottle, SharedSink};
use crate::status::{Code, Status};
use crate::upstream::{UpstreamPool, STREAM_PREDICT_PATH};
use crate::wire;
use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use axum::routing::any;
use axum::Router;
use base64::Engine;
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode};
use http_body::Frame;
use http_body_util::BodyExt;
use parking_lot::{Mutex, RwLock};
use prometheus_client::registry::Registry;
use prost::Message;
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use switchboard_auth::{unix_now, Scope, TicketGate};
use switchboard_proto::inference::PredictRequest;
use tokio_util::sync::CancellationToken;

/// Why the gateway could not be built from its config.
mod body;
pub use body::ResponseBody;

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error(transparent)]
    Upstream(#[from] crate::upstream::UpstreamConfigError),
    #[error("stream upstream name {0:?} is used twice")]
    DuplicateUpstream(String),
    #[error("stream route {index} names backend {backend:?}, which is neither an upstream nor a known local worker (built in: local:digest)")]
    UnknownBackend { index: usize, backend: String },
}

/// How the client frames the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Grpc,
    WebBinary,
    WebText,
}

impl Mode {
    fn from_content_type(ct: &str) -> Option<Mode> {
        let base = ct.split(';').next().unwrap_or("").trim();
        match base {
            "application/grpc" | "application/grpc+proto" => Some(Mode::Grpc),
            "application/grpc-web" | "application/grpc-web+proto" => Some(Mode::WebBinary),
            "application/grpc-web-text" | "application/grpc-web-text+proto" => Some(Mode::WebText),
            _ => None,
        }
    }
    fn content_type(self) -> &'static str {
        match self {
            Mode::Grpc => "application/grpc",
            Mode::WebBinary => "application/grpc-web+proto",
            Mode::WebText => "application/grpc-web-text+proto",
        }
    }
}

struct Route {
    prefix: String,
    header: Option<HeaderName>,
    header_value: String,
    backend: Arc<dyn Backend>,
    upstream: bool,
}

struct Inner {
    cfg: StreamConfig,
    cors_origins: Vec<String>,
    gate: Arc<TicketGate>,
    routes: Vec<Route>,
    pools: Vec<Arc<UpstreamPool>>,
    metrics: StreamMetrics,
    sink: RwLock<SharedSink>,
    per_identity: Mutex<HashMap<String, usize>>,
    total: AtomicUsize,
    shutdown: OnceLock<CancellationToken>,
}

/// The stream gateway. Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

/// Checks `[stream]` the way [`Gateway::new`] would (upstream names and URLs, route backends
/// and header names) without building anything that runs.
pub fn check_config(cfg: &StreamConfig) -> Result<(), StreamError> {
    let metrics = StreamMetrics::register(&mut Registry::default());
    resolve(cfg, &metrics, Vec::new()).map(|_| ())
}

/// The upstream pools and the routes to them (or to local workers) that `cfg` describes.
fn resolve(
    cfg: &StreamConfig,
    metrics: &StreamMetrics,
    workers: Vec<Arc<dyn LocalWorker>>,
) -> Result<(Vec<Route>, Vec<Arc<UpstreamPool>>), StreamError> {
    let mut locals: HashMap<String, Arc<dyn Backend>> = HashMap::new();
    let builtin: Arc<dyn LocalWorker> = Arc::new(DigestWorker);
    for w in std::iter::once(builtin).chain(workers) {
        let b: Arc<dyn Backend> = Arc::new(LocalBackend::new(w));
        locals.insert(b.name().to_string(), b);
    }
    let mut pools: Vec<Arc<UpstreamPool>> = Vec::new();
    for u in &cfg.upstreams {
        if pools.iter().any(|p| p.name() == u.name) {
            return Err(StreamError::DuplicateUpstream(u.name.clone()));
        }
        pools.push(Arc::new(UpstreamPool::new(
            u,
            cfg.max_chunk_bytes,
            metrics.clone(),
        )?));
    }
    let mut route_cfgs = cfg.routes.clone();
    if route_cfgs.is_empty() {
        route_cfgs.push(crate::config::RouteConfig {
            backend: "local:digest".into(),
            ..Default::default()
        });
    }
    let mut routes = Vec::new();
    for (index, r) in route_cfgs.iter().enumerate() {
        let (backend, upstream): (Arc<dyn Backend>, bool) = if let Some(b) = locals.get(&r.backend)
        {
            (b.clone(), false)
        } else if let Some(p) = pools.iter().find(|p| p.name() == r.backend) {
            (p.clone(), true)
        } else {
            return Err(StreamError::UnknownBackend {
                index,
                backend: r.backend.clone(),
            });
        };
        let header = if r.header.is_empty() {
            None
        } else {
            Some(
                HeaderName::from_bytes(r.header.to_ascii_lowercase().as_bytes()).map_err(|_| {
                    StreamError::UnknownBackend {
                        index,
                        backend: format!("(invalid header name {:?})", r.header),
                    }
                })?,
            )
        };
        routes.push(Route {
            prefix: r.task_prefix.clone(),
            header,
            header_value: r.header_value.clone(),
            backend,
            upstream,
        });
    }
    Ok((routes, pools))
}

impl Gateway {
    /// Builds the gateway with the built-in local workers and registers its metrics.
    /// `http_cors_origins` (`[http] cors_origins`) applies when `[stream] cors_origins` is empty.
    pub fn new(
        cfg: &StreamConfig,
        http_cors_origins: &[String],
        gate: Arc<TicketGate>,
        registry: &mut Registry,
    ) -> Result<Gateway, StreamError> {
        Self::with_workers(
            cfg,
            http_cors_origins,
            gate,
            StreamMetrics::register(registry),
            Vec::new(),
        )
    }

    /// Like [`Gateway::new`], with extra local workers (reachable as `local:<name>`) and
    /// caller-owned metrics.
    pub fn with_workers(
        cfg: &StreamConfig,
        http_cors_origins: &[String],
        gate: Arc<TicketGate>,
        metrics: StreamMetrics,
        workers: Vec<Arc<dyn LocalWorker>>,
    ) -> Result<Gateway, StreamError> {
        let (routes, pools) = resolve(cfg, &metrics, workers)?;
        let cors_origins = if cfg.cors_origins.is_empty() {
            http_cors_origins.to_vec()
        } else {
            cfg.cors_origins.clone()
        };
        Ok(Gateway {
            inner: Arc::new(Inner {
                cfg: cfg.clone(),
                cors_origins,
                gate,
                routes,
                pools,
                metrics,
                sink: RwLock::new(Arc::new(NoProgress)),
                per_identity: Mutex::new(HashMap::new()),
                total: AtomicUsize::new(0),
                shutdown: OnceLock::new(),
            }),
        })
    }

    /// Where progress events go (the server connects signaling's `notify` here).
    pub fn set_progress_sink(&self, sink: SharedSink) {
        *self.inner.sink.write() = sink;
    }

    pub fn metrics(&self) -> &StreamMetrics {
        &self.inner.metrics
    }

    /// Streams open now.
    pub fn active_streams(&self) -> usize {
        self.inner.total.load(Ordering::Relaxed)
    }

    /// The routes to merge into the server's router: `/inference.Inference/{*rest}` for gRPC,
    /// gRPC-Web and CORS preflight. Starts the upstream health checks; open streams end with
    /// UNAVAILABLE and health checks stop when `shutdown` is cancelled.
    pub fn router(&self, shutdown: CancellationToken) -> Router {
        let _ = self.inner.shutdown.set(shutdown.clone());
        if self.inner.cfg.enabled {
            for p in &self.inner.pools {
                p.spawn_health_checks(shutdown.clone());
            }
        }
        Router::new()
            .route("/inference.Inference/{*rest}", any(handle))
            .with_state(self.inner.clone())
    }
}

fn origin_allowed(origins: &[String], origin: &str) -> bool {
    origins
        .iter()
        .any(|o| o == "*" || o.eq_ignore_ascii_case(origin))
}

/// Browsers send `Origin` on same-origin POSTs too (e.g. the demo page served by Switchboard
/// itself); those are always allowed.
fn same_origin(origin: &str, host: Option<&str>) -> bool {
    let Some(host) = host else { return false };
    origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .is_some_and(|rest| rest.eq_ignore_ascii_case(host))
}

fn add_cors(h: &mut HeaderMap, origin: &HeaderValue) {
    h.insert("access-control-allow-origin", origin.clone());
    h.insert("vary", HeaderValue::from_static("origin"));
    h.insert(
        "access-control-expose-headers",
        HeaderValue::from_static("grpc-status,grpc-message,grpc-status-details-bin"),
    );
}

async fn handle(State(inner): State<Arc<Inner>>, req: Request<Body>) -> Response {
    let t0 = Instant::now();
    let origin = req.headers().get(http::header::ORIGIN).cloned();
    if let Some(o) = &origin {
        let host = req
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()));
        let ok = o
            .to_str()
            .map(|s| same_origin(s, host) || origin_allowed(&inner.cors_origins, s))
            .unwrap_or(false);
        if !ok {
            return plain(StatusCode::FORBIDDEN, "origin not allowed");
        }
    }
    if req.method() == Method::OPTIONS {
        let Some(o) = origin else {
            return plain(StatusCode::BAD_REQUEST, "preflight without origin");
        };
        let mut r = plain(StatusCode::NO_CONTENT, "");
        let h = r.headers_mut();
        add_cors(h, &o);
        h.insert(
            "access-control-allow-methods",
            HeaderValue::from_static("POST, OPTIONS"),
        );
        h.insert(
            "access-control-allow-headers",
            HeaderValue::from_static(
                "authorization,content-type,x-grpc-web,x-user-agent,grpc-timeout",
            ),
        );
        h.insert("access-control-max-age", HeaderValue::from_static("600"));
        return r;
    }
    let mode = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(Mode::from_content_type);
    let Some(mode) = mode else {
        return plain(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "want application/grpc, application/grpc-web or application/grpc-web-text",
        );
    };
    if req.method() != Method::POST {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "gRPC calls are POST");
    }
    let mut resp = match start_stream(&inner, mode, req, t0).await {
        Ok(body) => {
            let mut r = Response::new(Body::new(body));
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static(mode.content_type()),
            );
            r
        }
        Err(s) => {
            inner
                .metrics
                .finished
                .get_or_create(&[("code", s.code.label())])
                .inc();
            trailers_only(mode, &s)
        }
    };
    if let Some(o) = &origin {
        add_cors(resp.headers_mut(), o);
    }
    resp
}

fn plain(status: StatusCode, msg: &'static str) -> Response {
    let mut r = Response::new(Body::from(msg));
    *r.status_mut() = status;
    r
}

fn status_headers(h: &mut HeaderMap, s: &Status) {
    h.insert("grpc-status", HeaderValue::from(s.code as u8 as u16));
    if !s.message.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&wire::encode_grpc_message(&s.message)) {
            h.insert("grpc-message", v);
        }
    }
}

/// An error before any chunk: status in the response headers, empty body.
fn trailers_only(mode: Mode, s: &Status) -> Response {
    let mut r = Response::new(Body::empty());
    let h = r.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(mode.content_type()),
    );
    status_headers(h, s);
    r
}

fn bearer(h: &HeaderMap) -> Option<&str> {
    let v = h.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    switchboard_auth::presented::bearer(v)
}

/// One stream slot for an identity (and on the node); released on drop.
struct Admission {
    inner: Arc<Inner>,
    identity: String,
}

impl Admission {
    fn take(inner: &Arc<Inner>, identity: &str) -> Result<Admission, Status> {
        let max_total = inner.cfg.max_streams;
        if inner.total.fetch_add(1, Ordering::AcqRel) >= max_total {
            inner.total.fetch_sub(1, Ordering::AcqRel);
            inner.metrics.limit("max_streams");
            return Err(Status::resource_exhausted(
                "too many streams on this server",
            ));
        }
        let mut m = inner.per_identity.lock();
        let n = m.entry(identity.to_string()).or_insert(0);
        if *n >= inner.cfg.max_streams_per_identity {
            drop(m);
            inner.total.fetch_sub(1, Ordering::AcqRel);
            inner.metrics.limit("per_identity");
            return Err(Status::resource_exhausted(format!(
                "at most {} concurrent streams per identity",
                inner.cfg.max_streams_per_identity
            )));
        }
        *n += 1;
        Ok(Admission {
            inner: inner.clone(),
            identity: identity.to_string(),
        })
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut m = self.inner.per_identity.lock();
        if let Some(n) = m.get_mut(&self.identity) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.identity);
            }
        }
        drop(m);
        self.inner.total.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn start_stream(
    inner: &Arc<Inner>,
    mode: Mode,
    req: Request<Body>,
    t0: Instant,
) -> Result<ResponseBody, Status> {
    if !inner.cfg.enabled {
        return Err(Status::new(Code::Unimplemented, "stream gateway disabled"));
    }
    if req.uri().path() != STREAM_PREDICT_PATH {
        return Err(Status::new(
            Code::Unimplemented,
            format!("unknown method {}", req.uri().path()),
        ));
    }
    let token = bearer(req.headers()).ok_or_else(|| {
        inner
            .gate
            .count_failure(&switchboard_auth::AuthError::MissingToken);
        Status::new(
            Code::Unauthenticated,
            "authorization: Bearer <ticket> required",
        )
    })?;
    // Streams are requests, not sessions: the ticket is verified per call and its jti is
    // not consumed (see docs/decisions/0031).
    let claims = inner.gate.check(token, Scope::Grpc, unix_now())?;

    let mut budget = match req.headers().get("grpc-timeout") {
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| wire::parse_grpc_timeout(s).ok())
                .ok_or_else(|| Status::invalid_argument("malformed grpc-timeout"))?,
        ),
        None => (!inner.cfg.default_deadline.is_zero()).then_some(inner.cfg.default_deadline),
    };
    if !inner.cfg.max_deadline.is_zero() {
        budget = Some(budget.map_or(inner.cfg.max_deadline, |b| b.min(inner.cfg.max_deadline)));
    }
    let deadline = budget.map(|b| tokio::time::Instant::now() + b);

    let admission = Admission::take(inner, &claims.sub)?;

    let (parts, body) = req.into_parts();
    let max = inner.cfg.max_request_bytes;
    let wire_limit = match mode {
        Mode::WebText => (max + 5) / 3 * 4 + 8,
        _ => max + 5,
    };
    let read = http_body_util::Limited::new(body, wire_limit).collect();
    let collected = match deadline {
        Some(d) => tokio::time::timeout_at(d, read)
            .await
            .map_err(|_| Status::deadline_exceeded())?,
        None => read.await,
    };
    let raw_body = match collected {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            inner.metrics.limit("request_too_large");
            return Err(Status::resource_exhausted(format!(
                "request larger than {max} bytes"
            )));
        }
        Err(_) => return Err(Status::new(Code::Cancelled, "request body not received")),
    };
    let decoded;
    let body_bytes: &[u8] = if mode == Mode::WebText {
        decoded = wire::decode_web_text(&raw_body)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        &decoded
    } else {
        &raw_body
    };
    let frames = wire::decode_all(body_bytes, max).map_err(|e| match e {
        wire::WireError::TooLarge { .. } => {
            inner.metrics.limit("request_too_large");
            Status::resource_exhausted(e.to_string())
        }
        _ => Status::invalid_argument(e.to_string()),
    })?;
    let [frame] = frames.as_slice() else {
        return Err(Status::invalid_argument(format!(
            "server streaming call wants exactly one request message, got {}",
            frames.len()
        )));
    };
    if frame.flags & wire::COMPRESSED_FLAG != 0 {
        return Err(Status::new(
            Code::Unimplemented,
            "compressed requests are not supported (grpc-encoding identity only)",
        ));
    }
    if frame.flags != 0 {
        return Err(Status::invalid_argument("unexpected frame flags"));
    }
    let pr = PredictRequest::decode(frame.payload.clone())
        .map_err(|e| Status::invalid_argument(format!("bad PredictRequest: {e}")))?;
    if pr.task_id.len() > inner.cfg.max_task_id_bytes {
        return Err(Status::invalid_argument(format!(
            "task_id longer than {} bytes",
            inner.cfg.max_task_id_bytes
        )));
    }

    let route = inner
        .routes
        .iter()
        .find(|r| {
            pr.task_id.starts_with(&r.prefix)
                && r.header
                    .as_ref()
                    .is_none_or(|h| match parts.headers.get(h) {
                        Some(v) => {
                            r.header_value.is_empty() || v.as_bytes() == r.header_value.as_bytes()
                        }
                        None => false,
                    })
        })
        .ok_or_else(|| {
            Status::new(
                Code::NotFound,
                format!(
                    "no [[stream.routes]] entry matches task_id {:?}",
                    pr.task_id
                ),
            )
        })?;

    let breq = BackendRequest {
        identity: claims.sub.clone(),
        task_id: pr.task_id.clone(),
        payload: Bytes::from(pr.payload),
        raw: frame.payload.clone(),
        deadline,
    };
    let shutdown = inner.shutdown.get().cloned().unwrap_or_default();
    let open = route.backend.open(breq);
    let opened = tokio::select! {
        r = async {
            match deadline {
                Some(d) => tokio::time::timeout_at(d, open).await.map_err(|_| Status::deadline_exceeded()).and_then(|r| r),
                None => open.await,
            }
        } => r,
        _ = shutdown.cancelled() => Err(Status::unavailable("server is shutting down")),
    };
    let stream = match opened {
        Ok(s) => s,
        Err(s) => {
            if s.code == Code::DeadlineExceeded && route.upstream {
                inner
                    .metrics
                    .upstream_timeouts
                    .get_or_create(&BackendLabel {
                        backend: route.backend.name().to_string(),
                    })
                    .inc();
            }
            return Err(s);
        }
    };
    inner.metrics.active.inc();
    let throttle = ProgressThrottle::new(inner.cfg.progress_interval);
    Ok(ResponseBody {
        inner: inner.clone(),
        stream,
        mode,
        deadline: deadline.map(|d| Box::pin(tokio::time::sleep_until(d))),
        shutdown: Box::pin(shutdown.cancelled_owned()),
        t0,
        chunks: 0,
        bytes: 0,
        done: false,
        identity: claims.sub,
        task_id: pr.task_id,
        backend: route.backend.name().to_string(),
        upstream: route.upstream,
        throttle,
        pending_end: None,
        yield_after_first: false,
        _admission: admission,
    })
}
