//! What Switchboard nodes share when one machine is not enough, through one Redis server
//! (`[cluster] redis_url`): the node registry (each node's entry, renewed every heartbeat,
//! gone within `node_ttl` of its last), the single use of tickets' `jti` across nodes, and the
//! users, login sessions and API keys. Without `redis_url` nothing here runs: a single node
//! keeps all of it in memory (and users in `[auth] database`).
//!
//! Every call to Redis goes through [`Shared`]: one multiplexed connection that reconnects by
//! itself, timed, counted and bounded by a timeout. While Redis is unreachable a node keeps
//! serving its own sessions, `/readyz` says degraded, and the node rejoins by itself when
//! Redis answers again.

mod bus;
mod config;
mod registry;
mod replay;
mod shared;
mod users;

pub use bus::RedisBus;
pub use config::{valid_node_id, ClusterConfig};
pub use registry::{process_cpu, Load, NodeInfo, Registry};
pub use replay::SharedReplayGuard;
pub use shared::{ClusterError, ClusterMetrics, Shared};
pub use users::SharedUsers;

use parking_lot::Mutex;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// This node's membership of the cluster.
#[derive(Clone)]
pub struct Cluster {
    pub shared: Shared,
    pub registry: Registry,
    node: Arc<Mutex<NodeInfo>>,
    heartbeat: Duration,
    ttl: Duration,
}

impl Cluster {
    /// Sets up this node's entry (`url`: its public base URL) and the Redis connection; nothing
    /// is written until [`Cluster::spawn_heartbeat`].
    pub fn new(
        cfg: &ClusterConfig,
        url: String,
        registry: &mut prometheus_client::registry::Registry,
    ) -> Result<Cluster, ClusterError> {
        let shared = Shared::connect(cfg, ClusterMetrics::register(registry))?;
        let id = cfg
            .node_id
            .clone()
            .unwrap_or_else(|| format!("node-{:08x}", rand::random::<u32>()));
        let node = NodeInfo {
            id,
            url: cfg.advertise_url.clone().unwrap_or(url),
            region: cfg.region.clone(),
            started_at: now_ms() / 1000,
            ..Default::default()
        };
        Ok(Cluster {
            registry: Registry::new(shared.clone(), cfg.node_ttl),
            shared,
            node: Arc::new(Mutex::new(node)),
            heartbeat: cfg.heartbeat,
            ttl: cfg.node_ttl,
        })
    }

    pub fn node_id(&self) -> String {
        self.node.lock().id.clone()
    }

    /// This node's entry as it was last written.
    pub fn node(&self) -> NodeInfo {
        self.node.lock().clone()
    }

    /// `None` while Redis answers; else why not (what `/readyz` reports).
    pub fn unreachable(&self) -> Option<String> {
        self.shared.unreachable()
    }

    /// Every live node.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, ClusterError> {
        self.registry.nodes().await
    }

    /// Renews this node's entry every `heartbeat` with its load (`load()` gives sessions and
    /// rooms), and counts the live nodes. On `shutdown` the entry is removed at once.
    pub fn spawn_heartbeat(
        &self,
        load: impl Fn() -> (u64, u64) + Send + 'static,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(me.heartbeat);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let (mut cpu0, mut t0) = (process_cpu(), Instant::now());
            loop {
                tokio::select! {
                    _ = every.tick() => {}
                    _ = shutdown.cancelled() => break,
                }
                let (cpu, t) = (process_cpu(), Instant::now());
                let spent = cpu.saturating_sub(cpu0).as_secs_f64();
                let wall = t.duration_since(t0).as_secs_f64().max(1e-3);
                (cpu0, t0) = (cpu, t);
                let (sessions, rooms) = load();
                let entry = {
                    let mut n = me.node.lock();
                    n.load.sessions = sessions;
                    n.load.rooms = rooms;
                    n.load.cpu_percent = (spent / wall * 1000.0).round() / 10.0;
                    n.clone()
                };
                let now = now_ms();
                if me.registry.beat(&entry, now).await.is_ok() {
                    let fresh = now.saturating_sub(me.ttl.as_millis() as u64);
                    let live: Result<u64, _> = me
                        .shared
                        .call(
                            "heartbeat",
                            redis::cmd("ZCOUNT")
                                .arg(me.shared.key(&["nodes"]))
                                .arg(fresh)
                                .arg("+inf")
                                .clone(),
                        )
                        .await;
                    if let Ok(n) = live {
                        me.shared.metrics.nodes.set(n as i64);
                    }
                }
            }
            let id = me.node_id();
            if let Err(e) = me.registry.leave(&id).await {
                tracing::debug!(error = %e, "could not remove this node's registry entry");
            }
        })
    }

    /// Whether this node runs an SFU (SFU rooms are placed only on such nodes).
    pub fn set_sfu(&self, sfu: bool) {
        self.node.lock().sfu = sfu;
    }

    /// Marks this node draining in its next heartbeats.
    pub fn set_draining(&self, draining: bool) {
        self.node.lock().draining = draining;
    }
}
