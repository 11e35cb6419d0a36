//! Wiring: build every role from the config, mount routes, serve, shut down gracefully.

use crate::config::Config;
use crate::metrics::{new_registry, OfficeMetrics};
use anyhow::Context;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchboard_auth::store::Store;
use switchboard_auth::{
    HashPool, InMemoryReplayGuard, KeyRing, LoginLimiter, LoginLimits, ReplayGuard, TicketGate,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Everything request handlers share. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub gate: Arc<TicketGate>,
    pub store: Arc<Store>,
    pub registry: Arc<Registry>,
    pub office: OfficeMetrics,
    /// Who may try a password now (per IP, per IP and username with backoff, global).
    pub login: Arc<LoginLimiter>,
    /// The bound on concurrent password checks and their memory.
    pub hash_pool: HashPool,
    /// Cancelled when shutdown begins; long-lived sessions watch it to close cleanly.
    pub shutdown: CancellationToken,
    pub ready: Arc<AtomicBool>,
    /// Addresses other roles actually bound (TURN, SFU), for derived URIs.
    pub bound: Arc<BoundAddrs>,
    /// Signaling (rooms, sessions); `signaling.handle().notify(identity, json)` pushes a
    /// server message to an identity's live session.
    pub signaling: switchboard_signal::Signaling,
    /// The SFU behind SFU-mode rooms (`None` when `[sfu] mode = "mesh"`).
    pub sfu: Option<crate::sfu_bridge::Bridge>,
}

/// Where each listener ended up (ports may be ephemeral in tests).
#[derive(Debug, Default, Clone)]
pub struct BoundAddrs {
    pub http: Option<SocketAddr>,
    pub turn_udp: Option<SocketAddr>,
    pub turn_tcp: Option<SocketAddr>,
    pub turn_tls: Option<SocketAddr>,
    pub sfu_udp: Option<SocketAddr>,
    pub sfu_tcp: Option<SocketAddr>,
}

/// A started server. Dropping it does not stop it; call [`RunningServer::shutdown`].
pub struct RunningServer {
    pub http_addr: SocketAddr,
    pub state: AppState,
    join: tokio::task::JoinHandle<()>,
    pub startup: Duration,
}

impl RunningServer {
    /// Begins graceful shutdown and waits until in-flight work has finished or the grace
    /// period (`http.shutdown_grace`) has passed.
    pub async fn shutdown(self) {
        self.state.shutdown.cancel();
        let _ = self.join.await;
    }

    /// `switchboard listening http=ADDR [turn_udp=ADDR ...]`: printed once at startup.
    pub fn listening_line(&self) -> String {
        let b = &self.state.bound;
        let mut line = format!("switchboard listening http={}", self.http_addr);
        for (name, a) in [
            ("turn_udp", b.turn_udp),
            ("turn_tcp", b.turn_tcp),
            ("turn_tls", b.turn_tls),
            ("sfu_udp", b.sfu_udp),
            ("sfu_tcp", b.sfu_tcp),
        ] {
            if let Some(a) = a {
                line.push_str(&format!(" {name}={a}"));
            }
        }
        line
    }

    /// The demo page for `room`. On a dev server (anonymous guest tickets allowed) every tab
    /// opened from it mints its own single-use ticket, so the same URL works in many tabs.
    pub fn demo_url(&self, room: &str) -> String {
        let mut addr = self.http_addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(if addr.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
        }
        format!("http://{addr}/?room={room}")
    }

    /// Resolves when the server has stopped (after a shutdown began elsewhere).
    pub async fn wait(self) {
        let _ = self.join.await;
    }
}

/// Entries per login limiter table (per IP, per IP and username).
const LOGIN_LIMITER_MAX_KEYS: usize = 100_000;

/// Builds and starts the server: binds every listener (failing clearly on a port in use),
/// then serves until `state.shutdown` is cancelled.
pub async fn start(config: Config) -> anyhow::Result<RunningServer> {
    let t0 = Instant::now();
    let config = Arc::new(config);
    let mut registry = new_registry();

    let keyring = Arc::new(KeyRing::from_config(&config.auth).context("auth.keys")?);
    let replay: Arc<dyn ReplayGuard> =
        Arc::new(InMemoryReplayGuard::new(config.auth.replay_max_entries));
    let gate = Arc::new(TicketGate::new(keyring, replay, &mut registry));
    let store = Arc::new(
        Store::open(&config.auth.database)
            .with_context(|| format!("auth.database {:?}", config.auth.database))?,
    );
    let office = OfficeMetrics::register(&mut registry);

    // --- stream gateway (inference.Inference/StreamPredict over gRPC and gRPC-Web) ---
    let stream_gateway = switchboard_stream::Gateway::new(
        &config.stream,
        &config.http.cors_origins,
        gate.clone(),
        &mut registry,
    )
    .context("stream")?;
    // --- end stream gateway ---

    let listener = TcpListener::bind(&config.http.bind)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on http.bind {}: {e}", config.http.bind))?;
    let http_addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    #[allow(unused_mut)]
    let mut bound = BoundAddrs {
        http: Some(http_addr),
        ..Default::default()
    };

    // --- TURN (issue 4): embedded STUN/TURN server on its own sockets ---
    if config.turn.enabled {
        let turn =
            switchboard_turn::TurnServer::start(&config.turn, &mut registry, shutdown.clone())?;
        let a = turn.local_addrs();
        bound.turn_udp = Some(a.udp);
        bound.turn_tcp = Some(a.tcp);
        bound.turn_tls = a.tls;
    }
    // --- end TURN ---

    // --- SFU (issue 6): one UDP port + ICE-TCP for every SFU session; not started when every
    // room is mesh ---
    if !["mesh", "sfu", "auto"].contains(&config.sfu.mode.as_str()) {
        anyhow::bail!(
            "sfu.mode must be \"mesh\", \"sfu\" or \"auto\", not {:?}",
            config.sfu.mode
        );
    }
    let sfu_bridge = if config.sfu.mode == "mesh" {
        None
    } else {
        // The engine runs on its own thread, as in bench/sfu-load; it ends with `shutdown`.
        let (sfu, _engine_thread) = switchboard_sfu::Sfu::start_on_thread(
            config.sfu.clone(),
            &mut registry,
            shutdown.clone(),
        )
        .await
        .map_err(|e| anyhow::anyhow!("sfu.udp_port/sfu.tcp_port: {e}"))?;
        bound.sfu_udp = Some(sfu.local_addr());
        bound.sfu_tcp = sfu.local_tcp_addr();
        Some(crate::sfu_bridge::Bridge::new(sfu, &mut registry))
    };
    // --- end SFU ---

    // --- signaling: rooms and sessions on /v1/signal and gRPC Signal/Connect ---
    // `joined` carries the same ICE servers as GET /v1/ice-servers; the provider reads the
    // finished AppState, which exists only after the registry is frozen, hence the OnceLock.
    let ice_state: Arc<std::sync::OnceLock<AppState>> = Arc::new(std::sync::OnceLock::new());
    let signaling = {
        let ice_state = ice_state.clone();
        let ice: switchboard_signal::IceServersProvider =
            Arc::new(move |identity: &str| match ice_state.get() {
                Some(s) => {
                    crate::api::ice_servers_json(s, identity, None, switchboard_auth::unix_now())
                }
                None => serde_json::json!({"iceServers": [], "ttl": 0}),
            });
        let bridge: Arc<dyn switchboard_signal::SfuBridge> = match &sfu_bridge {
            Some(b) => Arc::new(b.clone()),
            None => Arc::new(switchboard_signal::NoSfu),
        };
        let signaling = switchboard_signal::Signaling::with_sfu(
            config.limits.signal_settings(&config.sfu),
            gate.clone(),
            ice,
            &mut registry,
            shutdown.clone(),
            bridge,
        );
        if let Some(b) = &sfu_bridge {
            b.attach(signaling.handle());
        }
        signaling
    };
    // --- end signaling ---

    // --- stream progress → signaling: small updates for heavy jobs go to the same identity's
    // live signaling sessions as {"type":"stream_progress",...} (the seed's split) ---
    // In SFU rooms they also go over the participant's DataChannel (topic "stream_progress").
    {
        let signaling = signaling.clone();
        let sfu = sfu_bridge.clone();
        stream_gateway.set_progress_sink(Arc::new(switchboard_stream::FnSink(
            move |identity: &str, event: serde_json::Value| {
                if let Some(b) = &sfu {
                    b.push(identity, "stream_progress", &event);
                }
                signaling.handle().notify(identity, event);
            },
        )));
    }

    let a = &config.auth;
    let state = AppState {
        login: Arc::new(LoginLimiter::new(LoginLimits {
            per_ip_per_minute: a.login_attempts_per_ip_per_minute,
            failures_per_pair_per_minute: a.login_failures_per_ip_user_per_minute,
            backoff_max: a.login_backoff_max,
            global_per_second: a.login_attempts_per_second,
            // Per table: ≈ 100 bytes an entry, so a few MiB at most.
            max_keys: LOGIN_LIMITER_MAX_KEYS,
        })),
        hash_pool: HashPool::new(
            a.login_hash_permits(),
            a.login_hash_queue,
            a.login_hash_wait,
        ),
        config: config.clone(),
        gate,
        store,
        registry: Arc::new(registry),
        office,
        shutdown,
        ready: Arc::new(AtomicBool::new(false)),
        bound: Arc::new(bound),
        signaling,
        sfu: sfu_bridge,
    };
    let _ = ice_state.set(state.clone());

    let router = routes(state.clone())
        // stream gateway: `/inference.Inference/{*rest}` (gRPC, gRPC-Web, CORS preflight).
        // Progress events: `stream_gateway.set_progress_sink(..)` once signaling exists.
        .merge(stream_gateway.router(state.shutdown.clone()));
    let threads = crate::conn_threads::ConnThreads::start(config.http.threads)
        .context("http.threads: cannot start connection threads")?;
    let join = tokio::spawn(serve(listener, Arc::new(threads), router, state.clone()));
    state.ready.store(true, Ordering::Release);
    Ok(RunningServer {
        http_addr,
        state,
        join,
        startup: t0.elapsed(),
    })
}

fn routes(state: AppState) -> Router {
    crate::api::routes(state.clone())
        .merge(crate::web::routes(&state))
        .merge(state.signaling.router())
}

/// Accept loop: one hyper connection per TCP stream, HTTP/1.1 or HTTP/2 (prior knowledge)
/// detected per connection, upgrades (WebSocket) allowed. Each connection is served on one
/// of the connection threads ([`crate::conn_threads`]).
async fn serve(
    listener: TcpListener,
    threads: Arc<crate::conn_threads::ConnThreads>,
    router: Router,
    state: AppState,
) {
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
    loop {
        let (stream, remote) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = state.shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let conn = Conn {
            remote,
            router: router.clone(),
            builder: builder.clone(),
            watcher: graceful.watcher(),
        };
        let threads = threads.clone();
        let coalesce = state.config.http.coalesce_writes;
        tokio::spawn(async move {
            if !speaks_h2(&stream).await {
                return conn.serve(stream).await;
            }
            // HTTP/2: move the socket to a connection thread's own reactor.
            let stream = match stream.into_std() {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(%remote, error = %e, "cannot hand the connection over");
                    return;
                }
            };
            let (thread, slot) = threads.pick();
            thread.spawn(async move {
                let _slot = slot;
                match tokio::net::TcpStream::from_std(stream) {
                    Ok(s) if coalesce => {
                        conn.serve(switchboard_stream::coalesce::CoalescingIo::new(s))
                            .await
                    }
                    Ok(s) => conn.serve(s).await,
                    Err(e) => tracing::warn!(%remote, error = %e, "cannot register the connection"),
                }
            });
        });
    }
    state.ready.store(false, Ordering::Release);
    drop(listener);
    let grace = state.config.http.shutdown_grace;
    tracing::info!(grace = ?grace, "shutting down: no new connections; waiting for in-flight work");
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("grace period over; closing remaining connections");
    }
    // Stopping the threads drops connections still open past the grace.
    threads.stop();
}

/// What serving one connection needs.
struct Conn {
    remote: SocketAddr,
    router: Router,
    builder: auto::Builder<TokioExecutor>,
    watcher: hyper_util::server::graceful::Watcher,
}

impl Conn {
    async fn serve<I>(self, stream: I)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let Conn {
            remote,
            router,
            builder,
            watcher,
        } = self;
        let svc =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(remote));
                router.clone().oneshot(req)
            });
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
        if let Err(e) = watcher.watch(conn.into_owned()).await {
            tracing::debug!(%remote, error = %e, "connection ended with error");
        }
    }
}

/// Whether a new connection opens with the HTTP/2 preface (`PRI * HTTP/2.0`), peeked without
/// consuming it. Gives up (false) after [`PREFACE_WAIT`] or on a short, closed stream.
async fn speaks_h2(stream: &tokio::net::TcpStream) -> bool {
    let peek = async {
        let mut buf = [0u8; 4];
        loop {
            match stream.peek(&mut buf).await {
                Ok(n) if n >= 4 => return &buf == b"PRI ",
                Ok(0) | Err(_) => return false,
                // Fewer than 4 bytes so far: wait for more without spinning.
                Ok(_) => tokio::time::sleep(Duration::from_millis(1)).await,
            }
        }
    };
    tokio::time::timeout(PREFACE_WAIT, peek)
        .await
        .unwrap_or(false)
}

/// How long a new connection may take to send its first 4 bytes before it is served as
/// HTTP/1.1 on the shared runtime (hyper's own header timeout then applies).
const PREFACE_WAIT: Duration = Duration::from_secs(10);

/// Waits for SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// What `speaks_h2` says about a connection whose client sends `first` (in two writes, 5 ms
    /// apart) and then keeps it open or closes it; the bytes stay unread for hyper.
    async fn classify(first: &[u8], close: bool) -> (bool, usize) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let first = first.to_vec();
        let client = tokio::spawn(async move {
            let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
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
        let (s, _) = l.accept().await.unwrap();
        let h2 = speaks_h2(&s).await;
        let mut buf = [0u8; 64];
        let unread = s.peek(&mut buf).await.unwrap_or(0);
        drop(client.await);
        (h2, unread)
    }

    #[tokio::test]
    async fn http2_preface_is_recognised_without_consuming_it() {
        let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        assert_eq!(classify(preface, false).await, (true, preface.len()));
        let get = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(classify(get, false).await, (false, get.len()));
        // Too short before the client hangs up: served as HTTP/1.1 (hyper then fails it).
        assert!(!classify(b"PR", true).await.0);
        assert!(!classify(b"", true).await.0);
    }
}
