//! `[stream]`: the gateway's configuration. Every key is documented here and in
//! docs/configuration.md; each can be overridden with `SWITCHBOARD_STREAM_<KEY>`.

use serde::{Deserialize, Serialize};
use std::time::Duration;
use switchboard_auth::duration;

/// `[stream]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamConfig {
    /// Serve `inference.Inference/StreamPredict` (gRPC and gRPC-Web) on the HTTP port.
    pub enabled: bool,
    /// Upstream gRPC servers (`[[stream.upstreams]]`).
    pub upstreams: Vec<UpstreamConfig>,
    /// Request → backend routing (`[[stream.routes]]`); first match wins. With no routes at all,
    /// every task goes to the built-in `local:digest` worker.
    pub routes: Vec<RouteConfig>,
    /// Origins allowed to call the gateway over gRPC-Web from a browser (CORS). Empty = use
    /// `[http] cors_origins`; `["*"]` = any origin.
    pub cors_origins: Vec<String>,
    /// Most streams one identity (the ticket's `sub`) may have open at once; the next one gets
    /// RESOURCE_EXHAUSTED.
    pub max_streams_per_identity: usize,
    /// Most streams open on this node at once; the next one gets RESOURCE_EXHAUSTED.
    pub max_streams: usize,
    /// Largest request message (`PredictRequest`, encoded) in bytes; larger gets
    /// RESOURCE_EXHAUSTED.
    pub max_request_bytes: usize,
    /// Largest single response message accepted from a backend, in bytes; a larger one ends the
    /// stream with RESOURCE_EXHAUSTED (bounds memory per stream).
    pub max_chunk_bytes: usize,
    /// Deadline applied when the client sends no `grpc-timeout`. "0s" = none.
    #[serde(with = "duration")]
    pub default_deadline: Duration,
    /// Upper bound on any deadline, including one the client asks for. "0s" = no bound.
    #[serde(with = "duration")]
    pub max_deadline: Duration,
    /// Progress events for a stream go out at most this often (plus the final one).
    #[serde(with = "duration")]
    pub progress_interval: Duration,
    /// Longest accepted `task_id`, in bytes.
    pub max_task_id_bytes: usize,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            enabled: true,
            upstreams: Vec::new(),
            routes: Vec::new(),
            cors_origins: Vec::new(),
            max_streams_per_identity: 8,
            max_streams: 10_000,
            max_request_bytes: 4 * 1024 * 1024,
            max_chunk_bytes: 4 * 1024 * 1024,
            default_deadline: Duration::from_secs(0),
            max_deadline: Duration::from_secs(0),
            progress_interval: Duration::from_millis(100),
            max_task_id_bytes: 256,
        }
    }
}

/// How an upstream spreads streams over its endpoints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LbPolicy {
    /// Each new stream starts at the next endpoint in turn.
    #[default]
    RoundRobin,
    /// Each new stream goes to the endpoint with the fewest open streams.
    LeastLoaded,
}

/// `[[stream.upstreams]]`: one named pool of gRPC servers reached over cleartext HTTP/2.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamConfig {
    /// The name routes refer to.
    pub name: String,
    /// One endpoint, e.g. "http://127.0.0.1:50051".
    pub url: String,
    /// More endpoints of the same pool (failover and load balancing across all of them).
    pub urls: Vec<String>,
    /// "round_robin" or "least_loaded".
    pub lb_policy: LbPolicy,
    /// Most streams open at once per endpoint (like Envoy's `max_concurrent_streams`); a full
    /// endpoint is skipped, and when all are full the caller gets RESOURCE_EXHAUSTED.
    pub max_concurrent_streams: usize,
    /// TCP connect timeout.
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    /// HTTP/2 PING interval on upstream connections, also while idle; "0s" = off. Long
    /// streams never hit an idle timeout: there is none on live streams.
    #[serde(with = "duration")]
    pub keepalive_interval: Duration,
    /// A PING unanswered for this long closes the connection (its streams fail over or end
    /// with UNAVAILABLE).
    #[serde(with = "duration")]
    pub keepalive_timeout: Duration,
    /// TCP keepalive on upstream sockets; "0s" = off.
    #[serde(with = "duration")]
    pub tcp_keepalive: Duration,
    /// Active health check period; "0s" = no active checks. The probe calls
    /// `grpc.health.v1.Health/Check`: SERVING, or UNIMPLEMENTED (server alive without a
    /// health service), counts as healthy.
    #[serde(with = "duration")]
    pub health_check_interval: Duration,
    /// How long a probe may take.
    #[serde(with = "duration")]
    pub health_check_timeout: Duration,
    /// Consecutive failed probes before an endpoint is taken out of rotation (one good probe
    /// brings it back).
    pub unhealthy_threshold: u32,
    /// Consecutive failed stream openings (connect errors, resets and UNAVAILABLE before the
    /// first chunk) that open the endpoint's circuit breaker; 0 = no breaker.
    pub circuit_failure_threshold: u32,
    /// How long an open breaker keeps the endpoint out before one trial stream is let through.
    #[serde(with = "duration")]
    pub circuit_open_for: Duration,
    /// Endpoints tried per stream when opening fails before the first chunk (1 = no retry).
    /// Once a chunk went out to the client a stream is never retried.
    pub max_attempts: usize,
    /// Read ahead (64 KiB per `recv`) and coalesce writes (window updates, requests) on
    /// connections to this upstream (decision 0033).
    pub coalesce_io: bool,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            name: String::new(),
            url: String::new(),
            urls: Vec::new(),
            lb_policy: LbPolicy::RoundRobin,
            max_concurrent_streams: 1000,
            connect_timeout: Duration::from_secs(2),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
            tcp_keepalive: Duration::from_secs(60),
            health_check_interval: Duration::from_secs(5),
            health_check_timeout: Duration::from_secs(1),
            unhealthy_threshold: 2,
            circuit_failure_threshold: 5,
            circuit_open_for: Duration::from_secs(10),
            max_attempts: 2,
            coalesce_io: true,
        }
    }
}

impl UpstreamConfig {
    /// `url` followed by `urls`, empty entries dropped.
    pub fn endpoints(&self) -> Vec<String> {
        std::iter::once(&self.url)
            .chain(self.urls.iter())
            .filter(|u| !u.trim().is_empty())
            .cloned()
            .collect()
    }
}

/// `[[stream.routes]]`: first match wins.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouteConfig {
    /// Matches a `task_id` starting with this; "" matches every task_id.
    pub task_prefix: String,
    /// Optional: also require this request metadata key (lower-case header name)...
    pub header: String,
    /// ...to have exactly this value ("" = any value, as long as the key is present).
    pub header_value: String,
    /// An upstream's name, or "local:<worker>" (built in: "local:digest").
    pub backend: String,
}
