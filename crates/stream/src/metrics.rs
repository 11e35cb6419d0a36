//! The gateway's Prometheus metrics (registered under the server's `switchboard` prefix).
//! For dashboards built on Envoy's cluster statistics: Envoy's `rx_reset` is
//! `stream_resets_total`, its `upstream_rq_timeout` is `stream_upstream_timeouts_total`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// One label of a metric family: `[("reason", "expired")]`. Label values are a bounded set of
/// static strings, so no label can grow the series without bound.
pub type Label = [(&'static str, &'static str); 1];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabel {
    pub upstream: String,
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabel {
    pub upstream: String,
    pub endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabel {
    pub backend: String,
}

/// Cheap to clone (every metric is an `Arc` inside).
#[derive(Clone)]
pub struct StreamMetrics {
    pub active: Gauge,
    pub finished: Family<Label, Counter>,
    pub duration: Histogram,
    pub ttfc: Histogram,
    pub chunks: Counter,
    pub bytes: Counter,
    pub resets: Counter,
    pub upstream_errors: Family<UpstreamLabel, Counter>,
    pub upstream_timeouts: Family<BackendLabel, Counter>,
    pub upstream_retries: Counter,
    pub upstream_healthy: Family<EndpointLabel, Gauge>,
    pub circuit_opened: Family<EndpointLabel, Counter>,
    pub limited: Family<Label, Counter>,
}

impl StreamMetrics {
    /// Metrics that are not registered anywhere (tests, tools).
    pub fn unregistered() -> Self {
        StreamMetrics {
            active: Gauge::default(),
            finished: Family::default(),
            duration: Histogram::new(exponential_buckets(0.001, 2.0, 22)),
            ttfc: Histogram::new(exponential_buckets(0.00005, 2.0, 20)),
            chunks: Counter::default(),
            bytes: Counter::default(),
            resets: Counter::default(),
            upstream_errors: Family::default(),
            upstream_timeouts: Family::default(),
            upstream_retries: Counter::default(),
            upstream_healthy: Family::default(),
            circuit_opened: Family::default(),
            limited: Family::default(),
        }
    }

    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::unregistered();
        for r in [
            "per_identity",
            "max_streams",
            "request_too_large",
            "chunk_too_large",
            "upstream_full",
        ] {
            let _ = m.limited.get_or_create(&[("reason", r)]);
        }
        let r = registry.sub_registry_with_prefix("stream");
        r.register(
            "active",
            "gRPC streams open now (gRPC and gRPC-Web)",
            m.active.clone(),
        );
        r.register(
            "finished",
            "Streams finished, by gRPC status sent to the client",
            m.finished.clone(),
        );
        r.register(
            "duration_seconds",
            "Stream lifetime, from request to last byte or reset",
            m.duration.clone(),
        );
        r.register(
            "time_to_first_chunk_seconds",
            "From request arrival to the first chunk handed to the client",
            m.ttfc.clone(),
        );
        r.register("chunks", "Chunks sent to clients", m.chunks.clone());
        r.register(
            "bytes",
            "Chunk payload bytes sent to clients (gRPC messages, before gRPC-Web text encoding)",
            m.bytes.clone(),
        );
        r.register(
            "resets",
            "Streams the client cancelled or disconnected before the end (Envoy's rx_reset)",
            m.resets.clone(),
        );
        r.register(
            "upstream_errors",
            "Upstream failures by kind: connect, reset, status, protocol, http",
            m.upstream_errors.clone(),
        );
        r.register(
            "upstream_timeouts",
            "Streams whose deadline passed while an upstream was producing (Envoy's upstream_rq_timeout)",
            m.upstream_timeouts.clone(),
        );
        r.register(
            "upstream_retries",
            "Stream openings retried on another endpoint before the first chunk",
            m.upstream_retries.clone(),
        );
        r.register(
            "upstream_healthy",
            "1 when an upstream endpoint passes active health checks",
            m.upstream_healthy.clone(),
        );
        r.register(
            "circuit_opened",
            "Times an endpoint's circuit breaker opened",
            m.circuit_opened.clone(),
        );
        r.register(
            "limited",
            "Streams refused or ended by a limit, by reason",
            m.limited.clone(),
        );
        m
    }

    pub fn limit(&self, reason: &'static str) {
        self.limited.get_or_create(&[("reason", reason)]).inc();
    }

    pub fn upstream_error(&self, upstream: &str, kind: &'static str) {
        self.upstream_errors
            .get_or_create(&UpstreamLabel {
                upstream: upstream.to_string(),
                kind,
            })
            .inc();
    }
}
