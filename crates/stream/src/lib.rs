//! Switchboard's gRPC server-streaming gateway. Work in progress: today this crate holds the
//! `[stream]` config section; the gateway lands with its issue.

use serde::{Deserialize, Serialize};

/// `[stream]`
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamConfig {
    /// Upstream gRPC servers.
    pub upstreams: Vec<UpstreamConfig>,
    /// Request → backend routing; first match wins.
    pub routes: Vec<RouteConfig>,
}

/// `[[stream.upstreams]]`
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamConfig {
    pub name: String,
    pub url: String,
}

/// `[[stream.routes]]`
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouteConfig {
    /// "" matches every task_id.
    pub task_prefix: String,
    /// An upstream's name, or "local:<worker>".
    pub backend: String,
}
