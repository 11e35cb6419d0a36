//! Single use of a ticket's `jti` across every node: the first node to record it in Redis
//! (`SET key 1 NX EXAT forget_after`) opens the session; a replay on any node is refused.
//!
//! While Redis is unreachable, a node records `jti`s in its own in-memory guard instead, so
//! sessions can still open: a ticket could then be used once on each node during the outage
//! (tickets live minutes). Each such check is counted
//! (`switchboard_cluster_replay_fallbacks_total`).

use crate::shared::{ClusterError, Shared};
use async_trait::async_trait;
use switchboard_auth::{InMemoryReplayGuard, ReplayError, ReplayGuard};

/// The cluster-wide replay guard.
pub struct SharedReplayGuard {
    shared: Shared,
    local: InMemoryReplayGuard,
}

impl SharedReplayGuard {
    /// `local_max` bounds the in-memory fallback, as `[auth] replay_max_entries` does.
    pub fn new(shared: Shared, local_max: usize) -> SharedReplayGuard {
        SharedReplayGuard {
            shared,
            local: InMemoryReplayGuard::new(local_max),
        }
    }
}

#[async_trait]
impl ReplayGuard for SharedReplayGuard {
    async fn claim(
        &self,
        issuer: &str,
        jti: &str,
        forget_after: u64,
        now: u64,
    ) -> Result<(), ReplayError> {
        let key = self.shared.key(&["jti", issuer, jti]);
        let set: Result<Option<String>, ClusterError> = self
            .shared
            .call(
                "jti",
                redis::cmd("SET")
                    .arg(&key)
                    .arg(1)
                    .arg("NX")
                    .arg("EXAT")
                    .arg(forget_after.max(now + 1))
                    .clone(),
            )
            .await;
        match set {
            Ok(Some(_)) => {
                // Also remembered here, so a replay during a later outage is still caught on
                // this node.
                let _ = self.local.claim(issuer, jti, forget_after, now).await;
                Ok(())
            }
            Ok(None) => Err(ReplayError::Replayed),
            Err(ClusterError::Unreachable(_)) => {
                self.shared.metrics.replay_fallbacks.inc();
                self.local.claim(issuer, jti, forget_after, now).await
            }
            Err(e) => Err(ReplayError::Backend(e.to_string())),
        }
    }

    fn len(&self) -> usize {
        self.local.len()
    }
}
