//! `[cluster]`: multi-node mode through one Redis server.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// `[cluster]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Redis for multi-node mode: `redis://[:password@]host:port[/db]`, `rediss://` for TLS.
    /// Unset: a single node, everything in memory (and users in `[auth] database`).
    pub redis_url: Option<String>,
    /// This node's id in the registry: 1 to 64 letters, digits, `-`, `_`, `.` (default: random).
    pub node_id: Option<String>,
    /// This node's public base URL (`http(s)://host:port`) that clients and other nodes are
    /// given; default: `http://<http.bind>` (fine on one machine, wrong behind NAT).
    pub advertise_url: Option<String>,
    /// A label for the node's location (e.g. `eu-west`), shown in the registry.
    pub region: String,
    /// How often a node renews its registry entry.
    #[serde(with = "switchboard_auth::duration")]
    pub heartbeat: Duration,
    /// How long an entry lives without renewal: a node that stops is gone from the registry
    /// this long after its last heartbeat. At least twice `heartbeat`.
    #[serde(with = "switchboard_auth::duration")]
    pub node_ttl: Duration,
    /// Prefix of every Redis key this deployment writes, so several deployments can share one
    /// Redis.
    pub key_prefix: String,
    /// On SIGTERM or `switchboard drain`, how long the node waits for its clients to resume on
    /// other nodes before it exits (it exits sooner once none is left).
    #[serde(with = "switchboard_auth::duration")]
    pub drain_timeout: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            redis_url: None,
            node_id: None,
            advertise_url: None,
            region: String::new(),
            heartbeat: Duration::from_secs(1),
            node_ttl: Duration::from_secs(3),
            key_prefix: "switchboard".into(),
            drain_timeout: Duration::from_secs(30),
        }
    }
}

impl ClusterConfig {
    /// Whether multi-node mode is on.
    pub fn enabled(&self) -> bool {
        self.redis_url.is_some()
    }

    /// Every problem with the section, as `(key, message)`.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Some(url) = &self.redis_url {
            let scheme = url.split_once("://").map(|(s, _)| s);
            if !matches!(scheme, Some("redis" | "rediss")) {
                out.push((
                    "cluster.redis_url",
                    "must start with redis:// or rediss:// (TLS)".to_string(),
                ));
            } else if let Err(e) = redis::Client::open(url.as_str()) {
                out.push(("cluster.redis_url", format!("is not a Redis URL: {e}")));
            }
        }
        if let Some(id) = &self.node_id {
            if !valid_node_id(id) {
                out.push((
                    "cluster.node_id",
                    format!("{id:?}: 1 to 64 letters, digits, '-', '_' or '.'"),
                ));
            }
        }
        if let Some(u) = &self.advertise_url {
            if !(u.starts_with("http://") || u.starts_with("https://")) || u.len() > 256 {
                out.push((
                    "cluster.advertise_url",
                    format!("{u:?}: an http:// or https:// base URL"),
                ));
            }
        }
        if self.heartbeat.is_zero() {
            out.push(("cluster.heartbeat", "must be more than 0".into()));
        }
        if self.node_ttl < self.heartbeat * 2 {
            out.push((
                "cluster.node_ttl",
                "must be at least twice cluster.heartbeat, or a node vanishes between beats".into(),
            ));
        }
        if self.region.len() > 64 {
            out.push(("cluster.region", "at most 64 bytes".into()));
        }
        if self.key_prefix.is_empty()
            || self.key_prefix.len() > 64
            || self.key_prefix.contains(['{', '}', ' '])
        {
            out.push((
                "cluster.key_prefix",
                "1 to 64 bytes, without spaces or braces".into(),
            ));
        }
        out
    }
}

/// A node id: what goes into Redis keys and URLs.
pub fn valid_node_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_single_node_and_sound() {
        let c = ClusterConfig::default();
        assert!(!c.enabled());
        assert!(c.problems().is_empty());
    }

    #[test]
    fn bad_values_are_named() {
        let c = ClusterConfig {
            redis_url: Some("http://x".into()),
            node_id: Some("a b".into()),
            advertise_url: Some("ws://x".into()),
            node_ttl: Duration::from_millis(1500),
            ..Default::default()
        };
        let keys: Vec<_> = c.problems().into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            [
                "cluster.redis_url",
                "cluster.node_id",
                "cluster.advertise_url",
                "cluster.node_ttl"
            ]
        );
        let ok = ClusterConfig {
            redis_url: Some("rediss://:secret@redis.example:6380/2".into()),
            node_id: Some("node-a.1".into()),
            advertise_url: Some("https://a.example".into()),
            ..Default::default()
        };
        assert!(ok.problems().is_empty(), "{:?}", ok.problems());
    }
}
