//! Single use of a ticket's `jti`: the first session it opens wins, later ones are refused.
//!
//! The trait is async so a shared store (Redis, in multi-node mode) can implement it. The
//! in-memory implementation is bounded: entries are dropped once their ticket has expired (plus
//! leeway), and when the table is full of live entries new sessions are refused rather than old
//! entries evicted — evicting would re-open a replay window.

use async_trait::async_trait;
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ReplayError {
    #[error("ticket already used")]
    Replayed,
    #[error("replay guard is full")]
    Full,
    #[error("replay guard backend failed: {0}")]
    Backend(String),
}

impl From<ReplayError> for crate::AuthError {
    fn from(e: ReplayError) -> Self {
        match e {
            ReplayError::Replayed => crate::AuthError::Replayed,
            ReplayError::Full => crate::AuthError::ReplayGuardFull,
            ReplayError::Backend(_) => crate::AuthError::Internal,
        }
    }
}

#[async_trait]
pub trait ReplayGuard: Send + Sync + 'static {
    /// Records `(issuer, jti)` as used until `forget_after` (UNIX seconds). Fails with
    /// [`ReplayError::Replayed`] if it was already recorded and not yet forgotten.
    async fn claim(
        &self,
        issuer: &str,
        jti: &str,
        forget_after: u64,
        now: u64,
    ) -> Result<(), ReplayError>;

    /// Entries currently held (for metrics).
    fn len(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

struct Inner {
    seen: HashMap<Box<str>, u64>,
    // Insertion order with expiry; expiries are not monotone across TTLs, so the sweep pops
    // only what has expired from the front and a full sweep runs when the table is full.
    order: VecDeque<(u64, Box<str>)>,
}

/// Process-local replay guard with a hard cap on entries.
pub struct InMemoryReplayGuard {
    inner: Mutex<Inner>,
    max_entries: usize,
}

impl InMemoryReplayGuard {
    pub fn new(max_entries: usize) -> Self {
        InMemoryReplayGuard {
            inner: Mutex::new(Inner {
                seen: HashMap::new(),
                order: VecDeque::new(),
            }),
            max_entries: max_entries.max(1),
        }
    }

    fn sweep_front(inner: &mut Inner, now: u64) {
        while let Some((exp, _)) = inner.order.front() {
            if *exp >= now {
                break;
            }
            let (_, key) = inner.order.pop_front().expect("front exists");
            if inner.seen.get(&key).is_some_and(|e| *e < now) {
                inner.seen.remove(&key);
            }
        }
    }

    fn sweep_all(inner: &mut Inner, now: u64) {
        inner.seen.retain(|_, exp| *exp >= now);
        let seen = &inner.seen;
        inner.order.retain(|(_, k)| seen.contains_key(k));
    }
}

#[async_trait]
impl ReplayGuard for InMemoryReplayGuard {
    async fn claim(
        &self,
        issuer: &str,
        jti: &str,
        forget_after: u64,
        now: u64,
    ) -> Result<(), ReplayError> {
        let key: Box<str> = format!("{issuer}\u{0}{jti}").into_boxed_str();
        let mut inner = self.inner.lock();
        Self::sweep_front(&mut inner, now);
        if let Some(exp) = inner.seen.get(&key) {
            if *exp >= now {
                return Err(ReplayError::Replayed);
            }
        }
        if inner.seen.len() >= self.max_entries {
            Self::sweep_all(&mut inner, now);
            if inner.seen.len() >= self.max_entries {
                return Err(ReplayError::Full);
            }
        }
        inner.seen.insert(key.clone(), forget_after);
        inner.order.push_back((forget_after, key));
        Ok(())
    }

    fn len(&self) -> usize {
        self.inner.lock().seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn second_claim_is_a_replay_until_expiry() {
        let g = InMemoryReplayGuard::new(10);
        g.claim("iss", "a", 100, 0).await.unwrap();
        assert_eq!(
            g.claim("iss", "a", 100, 50).await,
            Err(ReplayError::Replayed)
        );
        // A different issuer's jti is a different ticket.
        g.claim("other", "a", 100, 50).await.unwrap();
        // After expiry the entry is forgotten (the ticket itself no longer verifies by then).
        g.claim("iss", "a", 300, 101).await.unwrap();
    }

    #[tokio::test]
    async fn memory_is_bounded_and_expired_entries_go() {
        let g = InMemoryReplayGuard::new(3);
        for (i, jti) in ["a", "b", "c"].iter().enumerate() {
            g.claim("i", jti, 10 + i as u64, 0).await.unwrap();
        }
        assert_eq!(g.claim("i", "d", 20, 5).await, Err(ReplayError::Full));
        // Once the first ones expire there is room again.
        g.claim("i", "d", 20, 11).await.unwrap();
        assert!(g.len() <= 3);
        for n in 0..10_000u64 {
            g.claim("i", &n.to_string(), 100 + n, 100 + n)
                .await
                .unwrap();
        }
        assert!(g.len() <= 3);
    }
}
