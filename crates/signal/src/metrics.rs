//! `/metrics` series for signaling (`switchboard_signal_*`, `switchboard_client_rtt_seconds`).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// One label of a metric family: `[("reason", "expired")]`. Label values are a bounded set of
/// static strings, so no label can grow the series without bound.
pub type Label = [(&'static str, &'static str); 1];

#[derive(Clone)]
pub struct SignalMetrics {
    pub connections: Family<Label, Gauge>,
    pub sessions: Gauge,
    pub detached: Gauge,
    pub rooms: Gauge,
    pub messages: Family<Label, Counter>,
    pub errors: Family<Label, Counter>,
    pub closes: Family<Label, Counter>,
    pub resumes: Family<Label, Counter>,
    /// Bytes held in resume buffers.
    pub resume_bytes: Gauge,
    /// Messages evicted from resume buffers, by the bound that evicted them.
    pub resume_evictions: Family<Label, Counter>,
    /// Detached sessions ended because their resume buffer lost messages.
    pub resume_overflows: Counter,
    pub client_rtt: Histogram,
    /// Cluster mode: messages sent to members on other nodes.
    pub cluster_forwarded: Counter,
    /// Cluster mode: messages from other nodes whose recipient was no longer here.
    pub cluster_undeliverable: Counter,
}

/// The bounds that evict messages from resume buffers (`resume_evictions` labels).
pub const RESUME_BOUNDS: &[&str] = &["count", "session_bytes", "total_bytes"];

/// Error codes pre-registered at zero so dashboards see every series.
pub const ERROR_CODES: &[&str] = &[
    "malformed_json",
    "missing_type",
    "unknown_type",
    "bad_message",
    "binary_frame",
    "frame_too_large",
    "rate_limited",
    "join_rate_limited",
    "not_joined",
    "unknown_target",
    "already_joined",
    "forbidden_peer_id",
    "forbidden_room",
    "room_full",
    "sfu_unavailable",
    "sfu_not_sfu_room",
    "unknown_resume_token",
    "resume_gap",
    "too_many_connections",
    "server_full",
    "unauthorized",
    "cluster_unavailable",
];

/// Reasons a connection was closed by the server (or found dead).
pub const CLOSE_REASONS: &[&str] = &[
    "slow_consumer",
    "dead",
    "frame_too_large",
    "rate_limited",
    "replaced",
    "resumed_elsewhere",
    "shutdown",
    "draining",
];

impl SignalMetrics {
    pub fn register(r: &mut Registry) -> Self {
        let m = SignalMetrics {
            connections: Family::default(),
            sessions: Gauge::default(),
            detached: Gauge::default(),
            rooms: Gauge::default(),
            messages: Family::default(),
            errors: Family::default(),
            closes: Family::default(),
            resumes: Family::default(),
            resume_bytes: Gauge::default(),
            resume_evictions: Family::default(),
            resume_overflows: Counter::default(),
            cluster_forwarded: Counter::default(),
            cluster_undeliverable: Counter::default(),
            client_rtt: Histogram::new([
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0,
            ]),
        };
        for t in ["websocket", "grpc"] {
            let _ = m.connections.get_or_create(&[("transport", t)]);
        }
        for c in ERROR_CODES {
            let _ = m.errors.get_or_create(&[("code", c)]);
        }
        for c in CLOSE_REASONS {
            let _ = m.closes.get_or_create(&[("code", c)]);
        }
        for b in RESUME_BOUNDS {
            let _ = m.resume_evictions.get_or_create(&[("bound", b)]);
        }
        r.register(
            "signal_connections",
            "Open signaling connections, by transport",
            m.connections.clone(),
        );
        r.register(
            "signal_sessions",
            "Joined signaling sessions (attached or awaiting resume)",
            m.sessions.clone(),
        );
        r.register(
            "signal_sessions_detached",
            "Sessions whose connection was lost and that may still resume",
            m.detached.clone(),
        );
        r.register(
            "signal_rooms",
            "Rooms with at least one peer",
            m.rooms.clone(),
        );
        r.register(
            "signal_messages",
            "Client messages accepted, by type",
            m.messages.clone(),
        );
        r.register(
            "signal_errors",
            "Error messages sent to clients, by code",
            m.errors.clone(),
        );
        r.register(
            "signal_closes",
            "Connections closed by the server or found dead, by reason",
            m.closes.clone(),
        );
        r.register(
            "signal_resumes",
            "Resume attempts, by result",
            m.resumes.clone(),
        );
        r.register(
            "signal_resume_bytes",
            "Bytes held in resume buffers, all sessions together",
            m.resume_bytes.clone(),
        );
        r.register(
            "signal_resume_evictions",
            "Messages evicted from resume buffers, by the bound that evicted them (count, session_bytes, total_bytes)",
            m.resume_evictions.clone(),
        );
        r.register(
            "signal_resume_overflows",
            "Sessions awaiting resume that ended because their buffer lost messages",
            m.resume_overflows.clone(),
        );
        r.register(
            "signal_cluster_forwarded",
            "Messages relayed to room members whose sessions are on other nodes",
            m.cluster_forwarded.clone(),
        );
        r.register(
            "signal_cluster_undeliverable",
            "Messages from other nodes whose recipient had left or moved on",
            m.cluster_undeliverable.clone(),
        );
        r.register(
            "client_rtt_seconds",
            "DataChannel round-trip times reported by browser SDKs",
            m.client_rtt.clone(),
        );
        m
    }

    pub fn error(&self, code: &'static str) {
        self.errors.get_or_create(&[("code", code)]).inc();
    }

    pub fn close(&self, code: &'static str) {
        self.closes.get_or_create(&[("code", code)]).inc();
    }
}
