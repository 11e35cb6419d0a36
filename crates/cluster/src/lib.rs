//! The `[cluster]` configuration section. Multi-node mode is not available yet: the server
//! refuses a configuration that sets these keys (`Config::validate`), so nothing is parsed and
//! then ignored.

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
