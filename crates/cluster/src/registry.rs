//! The node registry: every node writes its entry (id, public URL, region, load) with a TTL and
//! renews it every `heartbeat`; a node that stops renewing is gone within `node_ttl`.
//!
//! Keys: `<prefix>:node:<id>` holds the entry as JSON with a TTL; `<prefix>:nodes` is a sorted
//! set of ids by last renewal, so listing needs no `SCAN`. Ids whose entry has expired are
//! pruned from the set when listed.

use crate::shared::{ClusterError, Shared};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// What a node says about itself.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: String,
    /// Public base URL (`http(s)://host:port`).
    pub url: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub region: String,
    /// UNIX seconds the node started.
    pub started_at: u64,
    pub load: Load,
    /// The node is draining: it takes no new sessions.
    #[serde(default)]
    pub draining: bool,
    /// The node runs an SFU, so SFU rooms may be placed on it.
    #[serde(default)]
    pub sfu: bool,
}

/// A node's load, as of its last heartbeat.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Load {
    /// Signaling sessions (attached or awaiting resume).
    pub sessions: u64,
    pub rooms: u64,
    /// Process CPU since the previous heartbeat, in percent of one core.
    pub cpu_percent: f64,
}

/// Reads and writes the registry.
#[derive(Clone)]
pub struct Registry {
    shared: Shared,
    ttl: Duration,
}

impl Registry {
    pub fn new(shared: Shared, ttl: Duration) -> Registry {
        Registry { shared, ttl }
    }

    /// How long an entry lives without renewal.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Writes (or renews) `node`'s entry.
    pub async fn beat(&self, node: &NodeInfo, now_ms: u64) -> Result<(), ClusterError> {
        let json = serde_json::to_string(node).map_err(|e| ClusterError::Corrupt(e.to_string()))?;
        let mut p = redis::pipe();
        p.cmd("SET")
            .arg(self.shared.key(&["node", &node.id]))
            .arg(json)
            .arg("PX")
            .arg(self.ttl.as_millis() as u64)
            .ignore()
            .cmd("ZADD")
            .arg(self.shared.key(&["nodes"]))
            .arg(now_ms)
            .arg(&node.id)
            .ignore();
        self.shared.call::<()>("heartbeat", p).await
    }

    /// Removes `id`'s entry at once (a node leaving cleanly).
    pub async fn leave(&self, id: &str) -> Result<(), ClusterError> {
        let mut p = redis::pipe();
        p.cmd("DEL")
            .arg(self.shared.key(&["node", id]))
            .ignore()
            .cmd("ZREM")
            .arg(self.shared.key(&["nodes"]))
            .arg(id)
            .ignore();
        self.shared.call::<()>("leave", p).await
    }

    /// Every live node, ordered by id; ids whose entry expired are pruned.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, ClusterError> {
        let set = self.shared.key(&["nodes"]);
        let ids: Vec<String> = self
            .shared
            .call(
                "nodes",
                redis::cmd("ZRANGE").arg(&set).arg(0).arg(-1).clone(),
            )
            .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids
            .iter()
            .map(|id| self.shared.key(&["node", id]))
            .collect();
        let entries: Vec<Option<String>> = self
            .shared
            .call("nodes", redis::cmd("MGET").arg(&keys).clone())
            .await?;
        let mut live = Vec::new();
        let mut gone = Vec::new();
        for (id, e) in ids.iter().zip(entries) {
            match e.and_then(|j| serde_json::from_str::<NodeInfo>(&j).ok()) {
                Some(n) => live.push(n),
                None => gone.push(id.clone()),
            }
        }
        if !gone.is_empty() {
            // Best effort: the next listing prunes what this one could not.
            let _ = self
                .shared
                .call::<()>("prune", redis::cmd("ZREM").arg(&set).arg(&gone).clone())
                .await;
        }
        live.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(live)
    }
}

/// CPU time of this process so far, from `/proc/self/stat` (user + system).
pub fn process_cpu() -> Duration {
    let Ok(s) = std::fs::read_to_string("/proc/self/stat") else {
        return Duration::ZERO;
    };
    let Some(rest) = s.rfind(')').map(|i| &s[i + 2..]) else {
        return Duration::ZERO;
    };
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks = f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_info_round_trips_and_omits_an_empty_region() {
        let n = NodeInfo {
            id: "a".into(),
            url: "http://127.0.0.1:7880".into(),
            started_at: 5,
            ..Default::default()
        };
        let j = serde_json::to_string(&n).unwrap();
        assert!(!j.contains("region"), "{j}");
        assert_eq!(serde_json::from_str::<NodeInfo>(&j).unwrap(), n);
    }

    #[test]
    fn process_cpu_grows() {
        let a = process_cpu();
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed() < Duration::from_millis(60) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
        assert!(process_cpu() >= a);
    }
}
