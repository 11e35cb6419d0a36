//! Wiring: build every role from the config (one small builder each), mount routes, serve,
//! shut down gracefully. The shared state lives in [`crate::state`].

use crate::config::Config;
use crate::ice::IceServers;
use crate::metrics::{new_registry, OfficeMetrics};
use crate::state::{AppState, BoundAddrs, Office};
use crate::users::Users;
use anyhow::Context;
use axum::Router;
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

/// A started server. Dropping it does not stop it; call [`RunningServer::shutdown`].
pub struct RunningServer {
    pub http_addr: SocketAddr,
    pub state: AppState,
    join: tokio::task::JoinHandle<()>,
    pub startup: Duration,
    /// Stops the cluster bus once the drain is over: until then a draining node still hands
    /// its sessions over to the nodes they resume on.
    bus_stop: CancellationToken,
}

impl RunningServer {
    /// Begins graceful shutdown and waits until in-flight work has finished or the grace
    /// period (`http.shutdown_grace`) has passed.
    pub async fn shutdown(self) {
        self.state.begin_shutdown();
        let _ = self.join.await;
        self.bus_stop.cancel();
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
        self.bus_stop.cancel();
    }
}

/// Entries per login limiter table (per IP, per IP and username, addresses in good standing).
const LOGIN_LIMITER_MAX_KEYS: usize = 100_000;

/// Builds and starts the server: binds every listener (failing clearly on a port in use),
/// then serves until `state.shutdown` is cancelled.
pub async fn start(config: Config) -> anyhow::Result<RunningServer> {
    let t0 = Instant::now();
    config.validate()?;
    let config = Arc::new(config);
    let shutdown = CancellationToken::new();
    let mut registry = new_registry();

    let listener = bind_http(&config.http.bind)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on http.bind {}: {e}", config.http.bind))?;
    let http_addr = listener.local_addr()?;
    let cluster = cluster(&config, http_addr, &mut registry)?;
    let gate = ticket_gate(&config, cluster.as_ref(), &mut registry)?;
    let office = office(&config, cluster.as_ref(), &mut registry)?;
    crate::memory::spawn_release_task(&mut registry, shutdown.clone());
    let edge_metrics = crate::accept::EdgeMetrics::register(&mut registry);
    let stream_gateway = switchboard_stream::Gateway::new(
        &config.stream,
        &config.http.cors_origins,
        gate.clone(),
        &mut registry,
    )
    .context("[stream]")?;

    let mut bound = BoundAddrs {
        http: Some(http_addr),
        ..Default::default()
    };
    turn(&config, &mut registry, &shutdown, &mut bound)?;
    let sfu = sfu(&config, &mut registry, &shutdown, &mut bound).await?;
    let ice = Arc::new(IceServers::new(&config.turn, bound.turn_ports()));
    if config.turn.enabled && ice.host_from_request() {
        tracing::info!(
            listen = %config.turn.listen,
            "TURN listens on every address and turn.external_ip is not set: the ICE servers \
             document names the host each client used to reach this server"
        );
    }
    let bus = cluster.as_ref().map(|c| {
        switchboard_cluster::RedisBus::new(
            c.shared.clone(),
            c.registry.clone(),
            &c.node_id(),
            &mut registry,
        )
    });
    let signaling = signaling(
        &config,
        &gate,
        &ice,
        &sfu,
        bus.clone(),
        &mut registry,
        &shutdown,
    );
    let bus_stop = CancellationToken::new();
    if let Some(bus) = &bus {
        let handle = signaling.handle();
        bus.start(
            Arc::new(move |ev| handle.inbound(ev)),
            config.limits.signal_settings(&config.sfu).resume_grace,
            config.cluster.heartbeat,
            bus_stop.clone(),
        );
    }
    send_progress_to_signaling(&stream_gateway, &signaling, &sfu);
    if let Some(c) = &cluster {
        c.set_sfu(sfu.is_some());
        let handle = signaling.handle();
        c.spawn_heartbeat(
            move || {
                let s = handle.stats();
                (s.sessions as u64, s.rooms as u64)
            },
            shutdown.clone(),
        );
    }

    let state = AppState {
        config: config.clone(),
        gate,
        office: Arc::new(office),
        ice,
        registry: Arc::new(registry),
        shutdown,
        ready: Arc::new(AtomicBool::new(false)),
        bound: Arc::new(bound),
        signaling,
        sfu,
        cluster,
        in_flight: Default::default(),
    };
    let router = routes(state.clone())
        // stream gateway: `/inference.Inference/{*rest}` (gRPC, gRPC-Web, CORS preflight).
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
        bus_stop,
    })
}

/// Pending connections the HTTP listener queues before accepting them. The operating system's
/// default (128 with tokio's `bind`) overflows when hundreds of clients reconnect at once, as
/// they do to the nodes that take over from a dead one; an overflowed SYN waits a second for
/// its retransmission.
const HTTP_BACKLOG: u32 = 4096;

/// Binds the HTTP listener with [`HTTP_BACKLOG`].
async fn bind_http(bind: &str) -> std::io::Result<TcpListener> {
    let addr = tokio::net::lookup_host(bind).await?.next().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address to bind")
    })?;
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(HTTP_BACKLOG)
}

/// This node's membership of the cluster, when `[cluster] redis_url` is set.
fn cluster(
    config: &Config,
    http_addr: SocketAddr,
    registry: &mut Registry,
) -> anyhow::Result<Option<switchboard_cluster::Cluster>> {
    if !config.cluster.enabled() {
        return Ok(None);
    }
    let mut addr = http_addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let c = switchboard_cluster::Cluster::new(&config.cluster, format!("http://{addr}"), registry)
        .context("[cluster]")?;
    tracing::info!(node = %c.node_id(), url = %c.node().url, "multi-node mode: joining the cluster");
    Ok(Some(c))
}

/// The key ring and the single-use guard every edge verifies tickets with (shared by every
/// node in multi-node mode).
fn ticket_gate(
    config: &Config,
    cluster: Option<&switchboard_cluster::Cluster>,
    registry: &mut Registry,
) -> anyhow::Result<Arc<TicketGate>> {
    let keyring = Arc::new(KeyRing::from_config(&config.auth).context("[auth]")?);
    let max = config.auth.replay_max_entries;
    let replay: Arc<dyn ReplayGuard> = match cluster {
        Some(c) => Arc::new(switchboard_cluster::SharedReplayGuard::new(
            c.shared.clone(),
            max,
        )),
        None => Arc::new(InMemoryReplayGuard::new(max)),
    };
    Ok(Arc::new(TicketGate::new(keyring, replay, registry)))
}

/// The user and API-key store (SQLite, or the cluster's Redis) with its login limits and
/// password-hashing pool.
fn office(
    config: &Config,
    cluster: Option<&switchboard_cluster::Cluster>,
    registry: &mut Registry,
) -> anyhow::Result<Office> {
    let a = &config.auth;
    let (users, label) = match cluster {
        Some(c) => (
            Users::Shared(Box::new(switchboard_cluster::SharedUsers::new(
                c.shared.clone(),
            ))),
            "cluster store (Redis)".to_string(),
        ),
        None => {
            let store = Store::open(&a.database)
                .with_context(|| format!("auth.database {:?}", a.database))?;
            (
                Users::Local(Arc::new(store)),
                format!("auth.database {}", a.database),
            )
        }
    };
    Ok(Office {
        users,
        store_health: crate::storage::StoreHealth::new(&label),
        login: LoginLimiter::new(LoginLimits {
            per_ip_per_minute: a.login_attempts_per_ip_per_minute,
            failures_per_pair_per_minute: a.login_failures_per_ip_user_per_minute,
            backoff_max: a.login_backoff_max,
            global_per_second: a.login_attempts_per_second,
            // Per table: ≈ 100 bytes an entry, so a few MiB at most.
            max_keys: LOGIN_LIMITER_MAX_KEYS,
        }),
        hash_pool: HashPool::new(
            a.login_hash_permits(),
            a.login_hash_queue,
            a.login_hash_wait,
        ),
        metrics: OfficeMetrics::register(registry),
    })
}

/// The embedded STUN/TURN server on its own sockets (when `[turn] enabled`).
fn turn(
    config: &Config,
    registry: &mut Registry,
    shutdown: &CancellationToken,
    bound: &mut BoundAddrs,
) -> anyhow::Result<()> {
    if !config.turn.enabled {
        return Ok(());
    }
    let turn = switchboard_turn::TurnServer::start(&config.turn, registry, shutdown.clone())?;
    let a = turn.local_addrs();
    bound.turn_udp = Some(a.udp);
    bound.turn_tcp = Some(a.tcp);
    bound.turn_tls = a.tls;
    Ok(())
}

/// The SFU (one UDP port and ICE-TCP for every session) on its own thread, unless every room
/// is mesh.
async fn sfu(
    config: &Config,
    registry: &mut Registry,
    shutdown: &CancellationToken,
    bound: &mut BoundAddrs,
) -> anyhow::Result<Option<crate::sfu_bridge::Bridge>> {
    if config.sfu.mode == switchboard_sfu::SfuMode::Mesh {
        return Ok(None);
    }
    // The engine runs on its own thread, as in bench/sfu-load; it ends with `shutdown`.
    let (sfu, _engine_thread) = switchboard_sfu::Sfu::start_on_thread(
        config.sfu.clone(),
        switchboard_sfu::metrics::SfuMetrics::registered(registry),
        shutdown.clone(),
    )
    .await
    .map_err(|e| anyhow::anyhow!("sfu.udp_port/sfu.tcp_port: {e}"))?;
    bound.sfu_udp = Some(sfu.local_addr());
    bound.sfu_tcp = sfu.local_tcp_addr();
    Ok(Some(crate::sfu_bridge::Bridge::new(sfu, registry)))
}

/// Rooms and sessions on `/v1/signal` and gRPC `Signal/Connect`; `joined` carries the same ICE
/// servers document as `GET /v1/ice-servers`.
fn signaling(
    config: &Config,
    gate: &Arc<TicketGate>,
    ice: &Arc<IceServers>,
    sfu: &Option<crate::sfu_bridge::Bridge>,
    bus: Option<switchboard_cluster::RedisBus>,
    registry: &mut Registry,
    shutdown: &CancellationToken,
) -> switchboard_signal::Signaling {
    let provider: switchboard_signal::IceServersProvider = {
        let ice = ice.clone();
        Arc::new(move |identity: &str, host: Option<&str>| {
            ice.document(identity, switchboard_auth::unix_now(), host)
        })
    };
    let bridge: Arc<dyn switchboard_signal::SfuBridge> = match sfu {
        Some(b) => Arc::new(b.clone()),
        None => Arc::new(switchboard_signal::NoSfu),
    };
    let mut settings = config.limits.signal_settings(&config.sfu);
    if config.cluster.enabled() {
        // A node's death is noticed within node_ttl and one heartbeat; what was forwarded to it
        // in that time is kept to be sent again where its clients resume.
        settings.forward_retention = 2 * (config.cluster.node_ttl + config.cluster.heartbeat);
    }
    let signaling = switchboard_signal::Signaling::with_parts(
        settings,
        gate.clone(),
        provider,
        registry,
        shutdown.clone(),
        bridge,
        bus.map(|b| Arc::new(b) as Arc<dyn switchboard_signal::cluster::ClusterBus>),
    );
    if let Some(b) = sfu {
        b.attach(signaling.handle());
    }
    signaling
}

/// Progress of heavy jobs (stream gateway) goes to the same identity's live signaling
/// session as `{"type":"stream_progress",...}`, and in SFU rooms over its DataChannel too
/// (topic `stream_progress`).
fn send_progress_to_signaling(
    gateway: &switchboard_stream::Gateway,
    signaling: &switchboard_signal::Signaling,
    sfu: &Option<crate::sfu_bridge::Bridge>,
) {
    let signaling = signaling.clone();
    let sfu = sfu.clone();
    gateway.set_progress_sink(Arc::new(switchboard_stream::FnSink(
        move |identity: &str, event: serde_json::Value| {
            if let Some(b) = &sfu {
                b.push(identity, "stream_progress", &event);
            }
            signaling.handle().notify(identity, event);
        },
    )));
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
