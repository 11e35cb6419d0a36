//! What Switchboard nodes share. Work in progress: today this crate holds the `[cluster]`
//! config section; the in-memory and Redis implementations are not written yet.

use serde::{Deserialize, Serialize};

/// `[cluster]`
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Redis URL for multi-node mode; unset = single node, state in memory.
    pub redis_url: Option<String>,
    /// This node's id in the registry (default: random).
    pub node_id: Option<String>,
}
