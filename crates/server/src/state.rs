//! What request handlers share: the server's state, built once by `app::start` and cloned
//! into every route. Route modules (`api`, `web`, `accept`) depend on this module, not on
//! each other.

use crate::config::Config;
use crate::ice::IceServers;
use crate::metrics::OfficeMetrics;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use switchboard_auth::{HashPool, LoginLimiter, TicketGate};
use tokio_util::sync::CancellationToken;

/// Everything request handlers share. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    /// Verifies tickets and consumes their `jti` (every edge).
    pub gate: Arc<TicketGate>,
    /// The ticket office's own state: users, logins, API keys.
    pub office: Arc<Office>,
    /// The ICE servers document (`/v1/ice-servers`, signaling's `joined`).
    pub ice: Arc<IceServers>,
    pub registry: Arc<Registry>,
    /// Cancelled when shutdown begins; long-lived sessions watch it to close cleanly.
    pub shutdown: CancellationToken,
    pub ready: Arc<AtomicBool>,
    /// Addresses the listeners actually bound (ports may be ephemeral).
    pub bound: Arc<BoundAddrs>,
    /// Signaling (rooms, sessions); `signaling.handle().notify(identity, json)` pushes a
    /// server message to an identity's live session.
    pub signaling: switchboard_signal::Signaling,
    /// The SFU behind SFU-mode rooms (`None` when `[sfu] mode = "mesh"`).
    pub sfu: Option<crate::sfu_bridge::Bridge>,
    /// This node's membership of the cluster (multi-node mode only).
    pub cluster: Option<switchboard_cluster::Cluster>,
    /// HTTP requests in flight, which a drain waits for.
    pub in_flight: crate::accept::InFlight,
}

impl AppState {
    /// Begins the shutdown. In a cluster, signaling's clients are first told to move to other
    /// nodes and their sessions wait there for their resume ([`Signaling::drain`]); the node
    /// then exits once none is left or after `[cluster] drain_timeout`. Returns how many
    /// clients were told to move.
    ///
    /// [`Signaling::drain`]: switchboard_signal::Signaling::drain
    pub fn begin_shutdown(&self) -> usize {
        if self.shutdown.is_cancelled() {
            return 0;
        }
        if let Some(c) = &self.cluster {
            c.set_draining(true);
        }
        let moved = self.signaling.drain();
        if moved > 0 {
            tracing::info!(
                clients = moved,
                "draining: clients told to resume on other nodes"
            );
        }
        self.shutdown.cancel();
        moved
    }

    /// How long a shutdown waits for requests and sessions: `http.shutdown_grace`, or in a
    /// cluster the longer of it and `cluster.drain_timeout`.
    pub fn shutdown_grace(&self) -> std::time::Duration {
        let grace = self.config.http.shutdown_grace;
        match &self.cluster {
            Some(_) => grace.max(self.config.cluster.drain_timeout),
            None => grace,
        }
    }

    /// Whether what a shutdown waits for is done: no request in flight, no signaling
    /// connection, and in a cluster no session still waiting for its resume elsewhere.
    pub fn drained(&self, in_flight: usize) -> bool {
        in_flight == 0
            && self.signaling.open_connections() == 0
            && (self.cluster.is_none() || self.signaling.handle().sessions() == 0)
    }
}

/// The ticket office: the user and API-key store, who may try a password, and its metrics.
pub struct Office {
    /// Users, login sessions and API keys (SQLite, or the cluster's Redis).
    pub users: crate::users::Users,
    /// Whether the store works (`/readyz` says degraded when it does not).
    pub store_health: crate::storage::StoreHealth,
    /// Who may try a password now (per IP, per IP and username with backoff, global).
    pub login: LoginLimiter,
    /// The bound on concurrent password checks and their memory.
    pub hash_pool: HashPool,
    pub metrics: OfficeMetrics,
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

impl BoundAddrs {
    /// TURN's ports, for the ICE servers document.
    pub fn turn_ports(&self) -> crate::ice::TurnPorts {
        crate::ice::TurnPorts {
            udp: self.turn_udp,
            tcp: self.turn_tcp,
            tls: self.turn_tls,
        }
    }
}
