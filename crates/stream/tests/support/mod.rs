//! Test harness: the gateway served on 127.0.0.1:0 (HTTP/1.1 + h2c, like the server), a
//! ticket minter, and a tonic mock upstream whose behaviour is picked by the task_id.
#![allow(dead_code)]

use axum::Router;
use futures::Stream;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use switchboard_auth::{
    unix_now, AuthConfig, InMemoryReplayGuard, KeyConfig, KeyRing, MintRequest, Scope, TicketGate,
};
use switchboard_proto::inference::inference_client::InferenceClient;
use switchboard_proto::inference::inference_server::{Inference, InferenceServer};
use switchboard_proto::inference::{PredictChunk, PredictRequest};
use switchboard_stream::{Gateway, RecordingSink, StreamConfig, StreamMetrics};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tower::ServiceExt;

pub struct Harness {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub keyring: Arc<KeyRing>,
    pub gateway: Gateway,
    pub sink: Arc<RecordingSink>,
    pub registry: Arc<Registry>,
}

pub async fn serve_router(router: Router, shutdown: CancellationToken) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (s, _) = tokio::select! {
                r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
                _ = shutdown.cancelled() => return,
            };
            let router = router.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| router.clone().oneshot(req));
                let mut b = auto::Builder::new(TokioExecutor::new());
                b.http2().max_concurrent_streams(1024);
                let _ = b.serve_connection(TokioIo::new(s), svc).await;
            });
        }
    });
    addr
}

impl Harness {
    pub async fn start(cfg: StreamConfig) -> Harness {
        let auth = AuthConfig {
            keys: vec![KeyConfig {
                kid: "k1".into(),
                secret: Some("stream-test-secret-0123456789abcdef".into()),
                ..Default::default()
            }],
            ..Default::default()
        };
        let keyring = Arc::new(KeyRing::from_config(&auth).unwrap());
        let mut registry = Registry::with_prefix("switchboard");
        let gate = Arc::new(TicketGate::new(
            keyring.clone(),
            Arc::new(InMemoryReplayGuard::new(1000)),
            &mut registry,
        ));
        let metrics = StreamMetrics::register(&mut registry);
        let gateway = Gateway::with_workers(
            &cfg,
            &["http://allowed.example".to_string()],
            gate,
            metrics,
            Vec::new(),
        )
        .expect("gateway builds");
        let sink = Arc::new(RecordingSink::default());
        gateway.set_progress_sink(sink.clone());
        let shutdown = CancellationToken::new();
        let addr = serve_router(gateway.router(shutdown.clone()), shutdown.clone()).await;
        Harness {
            addr,
            shutdown,
            keyring,
            gateway,
            sink,
            registry: Arc::new(registry),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn token(&self, identity: &str, scopes: &[Scope]) -> String {
        let req = MintRequest::new(identity, scopes.iter().copied());
        self.keyring.mint(&req, unix_now()).unwrap().0
    }

    pub async fn client(&self) -> InferenceClient<tonic::transport::Channel> {
        client_for(&self.url()).await
    }

    /// A gRPC ticket for `identity` and a client to present it with.
    pub async fn grpc_client(&self, identity: &str) -> (String, InferenceClient<Channel>) {
        (self.token(identity, &[Scope::Grpc]), self.client().await)
    }

    pub fn metrics_text(&self) -> String {
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, &self.registry).unwrap();
        s
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub async fn client_for(url: &str) -> InferenceClient<tonic::transport::Channel> {
    let ch = tonic::transport::Endpoint::from_shared(url.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap();
    InferenceClient::new(ch)
}

pub fn request(
    token: Option<&str>,
    task_id: &str,
    payload: &str,
) -> tonic::Request<PredictRequest> {
    let mut r = tonic::Request::new(PredictRequest {
        task_id: task_id.into(),
        payload: payload.as_bytes().to_vec(),
    });
    if let Some(t) = token {
        r.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    r
}

/// Counters a mock upstream keeps.
#[derive(Default)]
pub struct MockStats {
    pub calls: AtomicUsize,
    pub produced: AtomicUsize,
    pub cancelled: AtomicUsize,
    pub last_timeout: parking_lot::Mutex<Option<String>>,
    pub last_identity: parking_lot::Mutex<Option<String>>,
}

/// A tonic upstream. task_id picks the behaviour:
/// - `ok:N` N chunks of 100 bytes then done; `slow:MS` a chunk every MS ms, forever;
/// - `big:N` N chunks of 64 KiB as fast as flow control allows;
/// - `unavailable` UNAVAILABLE at once; `fail-after-1` one chunk then UNAVAILABLE;
/// - `invalid` INVALID_ARGUMENT at once.
#[derive(Clone, Default)]
pub struct Mock {
    pub stats: Arc<MockStats>,
    /// Answer UNAVAILABLE to every call (a server that is up but cannot serve).
    pub always_unavailable: bool,
}

struct CancelGuard {
    stats: Arc<MockStats>,
    finished: bool,
}
impl Drop for CancelGuard {
    fn drop(&mut self) {
        if !self.finished {
            self.stats.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

type ChunkResult = Result<PredictChunk, tonic::Status>;

#[tonic::async_trait]
impl Inference for Mock {
    type StreamPredictStream = Pin<Box<dyn Stream<Item = ChunkResult> + Send>>;

    async fn stream_predict(
        &self,
        req: tonic::Request<PredictRequest>,
    ) -> Result<tonic::Response<Self::StreamPredictStream>, tonic::Status> {
        let stats = self.stats.clone();
        stats.calls.fetch_add(1, Ordering::SeqCst);
        *stats.last_timeout.lock() = req
            .metadata()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        *stats.last_identity.lock() = req
            .metadata()
            .get("x-switchboard-identity")
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let task = req.into_inner().task_id;
        let (kind, arg) = task.split_once(':').unwrap_or((task.as_str(), ""));
        let n: u64 = arg.parse().unwrap_or(1);
        let (tx, rx) = tokio::sync::mpsc::channel::<ChunkResult>(1);
        if self.always_unavailable {
            return Err(tonic::Status::unavailable("mock refuses everything"));
        }
        match kind {
            "unavailable" => return Err(tonic::Status::unavailable("mock is down")),
            "invalid" => return Err(tonic::Status::invalid_argument("mock dislikes this")),
            _ => {}
        }
        let kind = kind.to_string();
        tokio::spawn(async move {
            let mut guard = CancelGuard {
                stats: stats.clone(),
                finished: false,
            };
            let mut i = 0u64;
            loop {
                let chunk = match kind.as_str() {
                    "ok" if i < n => vec![i as u8; 100],
                    "big" if i < n => vec![7u8; 64 * 1024],
                    "slow" => {
                        tokio::time::sleep(Duration::from_millis(n)).await;
                        vec![1u8; 10]
                    }
                    "fail-after-1" if i == 1 => {
                        let _ = tx.send(Err(tonic::Status::unavailable("mock broke"))).await;
                        guard.finished = true;
                        return;
                    }
                    "fail-after-1" => vec![1u8; 10],
                    _ => break,
                };
                let msg = PredictChunk {
                    index: i as i32,
                    partial: chunk,
                    done: false,
                };
                if tx.send(Ok(msg)).await.is_err() {
                    return; // client went away: the guard counts it
                }
                stats.produced.fetch_add(1, Ordering::SeqCst);
                i += 1;
            }
            let _ = tx
                .send(Ok(PredictChunk {
                    index: -1,
                    partial: Vec::new(),
                    done: true,
                }))
                .await;
            guard.finished = true;
        });
        Ok(tonic::Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// Starts a mock upstream on 127.0.0.1:0; returns its URL.
pub async fn start_mock(mock: Mock, shutdown: CancellationToken) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(InferenceServer::new(mock))
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                shutdown.cancelled_owned(),
            )
            .await;
    });
    format!("http://{addr}")
}

/// A loopback URL where nothing listens.
pub async fn dead_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap();
    drop(l);
    format!("http://{a}")
}

pub async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}
