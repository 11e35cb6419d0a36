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
