//! Wiring: build every role from the config, mount routes, serve, shut down gracefully.

use crate::config::Config;
use crate::metrics::{new_registry, OfficeMetrics};
use anyhow::Context;
use axum::Router;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchboard_auth::store::Store;
use switchboard_auth::{InMemoryReplayGuard, KeyRing, KeyedRateLimiter, ReplayGuard, TicketGate};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Everything request handlers share. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub gate: Arc<TicketGate>,
    pub store: Arc<Store>,
    pub registry: Arc<Registry>,
    pub office: OfficeMetrics,
    pub login_per_ip: Arc<KeyedRateLimiter<std::net::IpAddr>>,
    pub login_per_user: Arc<KeyedRateLimiter<String>>,
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
    /// HTTP requests in flight, which a drain waits for.
    pub in_flight: crate::accept::InFlight,
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

/// Builds and starts the server: binds every listener (failing clearly on a port in use),
/// then serves until `state.shutdown` is cancelled.
pub async fn start(config: Config) -> anyhow::Result<RunningServer> {
    let t0 = Instant::now();
    let config = Arc::new(config);
    let shutdown = CancellationToken::new();
    let mut registry = new_registry();

    let keyring = Arc::new(KeyRing::from_config(&config.auth).context("[auth]")?);
    let replay: Arc<dyn ReplayGuard> =
        Arc::new(InMemoryReplayGuard::new(config.auth.replay_max_entries));
    let gate = Arc::new(TicketGate::new(keyring, replay, &mut registry));
    let store = Arc::new(
        Store::open(&config.auth.database)
            .with_context(|| format!("auth.database {:?}", config.auth.database))?,
    );
    let office = OfficeMetrics::register(&mut registry);
    crate::memory::spawn_release_task(&mut registry, shutdown.clone());
    let edge_metrics = crate::accept::EdgeMetrics::register(&mut registry);

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
            switchboard_sfu::metrics::SfuMetrics::registered(&mut registry),
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

    let minute = Duration::from_secs(60);
    let state = AppState {
        login_per_ip: Arc::new(KeyedRateLimiter::new(
            config.auth.login_attempts_per_ip_per_minute,
            minute,
            100_000,
        )),
        login_per_user: Arc::new(KeyedRateLimiter::new(
            config.auth.login_attempts_per_user_per_minute,
            minute,
            100_000,
        )),
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
        in_flight: Default::default(),
    };
    let _ = ice_state.set(state.clone());

    let router = routes(state.clone())
        // stream gateway: `/inference.Inference/{*rest}` (gRPC, gRPC-Web, CORS preflight).
        // Progress events: `stream_gateway.set_progress_sink(..)` once signaling exists.
        .merge(stream_gateway.router(state.shutdown.clone()));
    let threads = crate::conn_threads::ConnThreads::start(config.http.threads)
        .context("http.threads: cannot start connection threads")?;
    let join = tokio::spawn(crate::accept::serve(crate::accept::Edge {
        listener,
        threads: Arc::new(threads),
        router,
        state: state.clone(),
        metrics: edge_metrics,
        max_connections: crate::accept::connection_limit(config.http.max_connections),
    }));
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
