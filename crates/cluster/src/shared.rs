//! The connection to the cluster's Redis, shared by the registry, the replay guard and the user
//! store: one multiplexed connection that reconnects by itself (redis-rs `ConnectionManager`),
//! every call bounded by a timeout, timed and counted, and the store's health as the node sees
//! it (`/readyz` says degraded while Redis cannot be reached).

use crate::config::ClusterConfig;
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One label of a metric family.
pub type Label = [(&'static str, &'static str); 1];

/// How long one Redis call may take before it counts as failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// What went wrong talking to Redis.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClusterError {
    #[error("the cluster store (Redis) is unreachable: {0}")]
    Unreachable(String),
    #[error("the cluster store (Redis) answered with an error: {0}")]
    Redis(String),
    #[error("the cluster store holds malformed data: {0}")]
    Corrupt(String),
}

/// The cluster's `/metrics` series.
#[derive(Clone)]
pub struct ClusterMetrics {
    /// Live nodes in the registry, this one included.
    pub nodes: Gauge,
    /// 1 while Redis answers, 0 while it does not.
    pub redis_up: Gauge,
    /// Round-trip time of each Redis call.
    pub redis_seconds: Histogram,
    /// Failed Redis calls, by operation.
    pub redis_errors: Family<Label, Counter>,
    /// Times this node lost and regained Redis.
    pub redis_reconnects: Counter,
    /// Tickets whose single use could only be checked on this node (Redis unreachable).
    pub replay_fallbacks: Counter,
}

impl ClusterMetrics {
    pub fn register(r: &mut Registry) -> ClusterMetrics {
        let m = ClusterMetrics {
            nodes: Gauge::default(),
            redis_up: Gauge::default(),
            redis_seconds: Histogram::new([
                0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 2.0,
            ]),
            redis_errors: Family::default(),
            redis_reconnects: Counter::default(),
            replay_fallbacks: Counter::default(),
        };
        r.register(
            "cluster_nodes",
            "Live nodes in the cluster registry",
            m.nodes.clone(),
        );
        r.register(
            "cluster_redis_up",
            "1 while the cluster's Redis answers",
            m.redis_up.clone(),
        );
        r.register(
            "cluster_redis_seconds",
            "Round-trip time of calls to the cluster's Redis",
            m.redis_seconds.clone(),
        );
        r.register(
            "cluster_redis_errors",
            "Failed calls to the cluster's Redis, by operation",
            m.redis_errors.clone(),
        );
        r.register(
            "cluster_redis_reconnects",
            "Times this node regained the cluster's Redis after losing it",
            m.redis_reconnects.clone(),
        );
        r.register(
            "cluster_replay_fallbacks",
            "Tickets whose single use was checked on this node only, Redis being unreachable",
            m.replay_fallbacks.clone(),
        );
        m
    }
}

/// Whether this node can reach Redis, and since when not.
#[derive(Default)]
struct Health {
    /// `Some(error)` while Redis is unreachable.
    down: Option<String>,
}

/// The shared Redis connection. Cheap to clone.
#[derive(Clone)]
pub struct Shared {
    conn: ConnectionManager,
    /// For the dedicated pub/sub connection.
    client: redis::Client,
    prefix: Arc<str>,
    health: Arc<Mutex<Health>>,
    pub metrics: ClusterMetrics,
}

impl Shared {
    /// Connects lazily: a node starts even when Redis is down, serves what it can locally, and
    /// joins the cluster once Redis answers.
    pub fn connect(cfg: &ClusterConfig, metrics: ClusterMetrics) -> Result<Shared, ClusterError> {
        let url = cfg
            .redis_url
            .as_deref()
            .ok_or_else(|| ClusterError::Unreachable("no cluster.redis_url".into()))?;
        let client = redis::Client::open(url).map_err(|e| ClusterError::Redis(e.to_string()))?;
        let conn_cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CALL_TIMEOUT))
            .set_response_timeout(Some(CALL_TIMEOUT))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), conn_cfg)
            .map_err(|e| ClusterError::Redis(e.to_string()))?;
        metrics.redis_up.set(0);
        Ok(Shared {
            conn,
            client,
            prefix: cfg.key_prefix.as_str().into(),
            health: Arc::new(Mutex::new(Health {
                down: Some("not connected yet".into()),
            })),
            metrics,
        })
    }

    /// `prefix:part1:part2...`
    pub fn key(&self, parts: &[&str]) -> String {
        let mut k = String::with_capacity(self.prefix.len() + 32);
        k.push_str(&self.prefix);
        for p in parts {
            k.push(':');
            k.push_str(p);
        }
        k
    }

    /// The Redis client, for connections of their own (pub/sub).
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// `None` while Redis answers; else why not.
    pub fn unreachable(&self) -> Option<String> {
        self.health.lock().down.clone()
    }

    /// Runs one command or pipeline, timed, counted and bounded by [`CALL_TIMEOUT`].
    pub async fn call<T: redis::FromRedisValue>(
        &self,
        op: &'static str,
        cmd: impl Command,
    ) -> Result<T, ClusterError> {
        let t0 = Instant::now();
        let mut conn = self.conn.clone();
        let r = tokio::time::timeout(CALL_TIMEOUT, cmd.run(&mut conn)).await;
        self.metrics
            .redis_seconds
            .observe(t0.elapsed().as_secs_f64());
        let r = match r {
            Err(_) => Err(ClusterError::Unreachable(format!("{op} timed out"))),
            Ok(Err(e)) if is_connection_error(&e) => Err(ClusterError::Unreachable(e.to_string())),
            Ok(Err(e)) => Err(ClusterError::Redis(e.to_string())),
            Ok(Ok(v)) => {
                redis::from_redis_value(v).map_err(|e| ClusterError::Corrupt(e.to_string()))
            }
        };
        match &r {
            Ok(_) => self.mark_up(),
            Err(ClusterError::Unreachable(e)) => {
                self.mark_down(e);
                self.metrics.redis_errors.get_or_create(&[("op", op)]).inc();
            }
            Err(_) => {
                self.metrics.redis_errors.get_or_create(&[("op", op)]).inc();
            }
        }
        r
    }

    fn mark_up(&self) {
        let mut h = self.health.lock();
        if let Some(was) = h.down.take() {
            if was != "not connected yet" {
                tracing::info!("cluster store (Redis) reachable again");
                self.metrics.redis_reconnects.inc();
            }
            self.metrics.redis_up.set(1);
        }
    }

    fn mark_down(&self, error: &str) {
        let mut h = self.health.lock();
        if h.down.is_none() || h.down.as_deref() == Some("not connected yet") {
            tracing::warn!(%error, "cluster store (Redis) unreachable; local sessions go on");
        }
        h.down = Some(error.to_string());
        self.metrics.redis_up.set(0);
    }
}

fn is_connection_error(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
}

/// Something [`Shared::call`] can send: a command or a pipeline.
pub trait Command: Send {
    fn run(
        self,
        conn: &mut ConnectionManager,
    ) -> impl std::future::Future<Output = redis::RedisResult<redis::Value>> + Send;
}

impl Command for redis::Cmd {
    async fn run(self, conn: &mut ConnectionManager) -> redis::RedisResult<redis::Value> {
        self.query_async(conn).await
    }
}

impl Command for redis::Pipeline {
    async fn run(self, conn: &mut ConnectionManager) -> redis::RedisResult<redis::Value> {
        self.query_async(conn).await
    }
}
