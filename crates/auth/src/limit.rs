//! Keyed token-bucket rate limiting with bounded memory, for per-IP and per-identity limits
//! (login attempts, joins, connections). Time is passed in, so tests script it.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

struct Bucket {
    tokens: f64,
    last: Instant,
}

/// `burst` tokens per key, refilled at `per_second`. When the table reaches `max_keys`, full
/// (idle) buckets are dropped; if none can be dropped the call is refused, so an attacker
/// spraying keys cannot grow memory.
pub struct KeyedRateLimiter<K> {
    buckets: Mutex<HashMap<K, Bucket>>,
    burst: f64,
    per_second: f64,
    max_keys: usize,
}

impl<K: Hash + Eq + Clone> KeyedRateLimiter<K> {
    pub fn new(burst: u32, per: Duration, max_keys: usize) -> Self {
        let burst = burst.max(1) as f64;
        KeyedRateLimiter {
            buckets: Mutex::new(HashMap::new()),
            burst,
            per_second: burst / per.as_secs_f64().max(1e-9),
            max_keys: max_keys.max(1),
        }
    }

    /// Takes one token for `key`. `Err(retry_after)` when none is left.
    pub fn check(&self, key: &K, now: Instant) -> Result<(), Duration> {
        let mut map = self.buckets.lock();
        if !map.contains_key(key) && map.len() >= self.max_keys {
            let (burst, rate) = (self.burst, self.per_second);
            map.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.last).as_secs_f64() * rate < burst
            });
            if map.len() >= self.max_keys {
                return Err(Duration::from_secs(1));
            }
        }
        let b = map.entry(key.clone()).or_insert(Bucket {
            tokens: self.burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.per_second).min(self.burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / self.per_second))
        }
    }

    /// Gives back a token taken by [`KeyedRateLimiter::check`] for `key` (an attempt that is
    /// not to be counted after all). No-op when the key has since been dropped.
    pub fn refund(&self, key: &K) {
        if let Some(b) = self.buckets.lock().get_mut(key) {
            b.tokens = (b.tokens + 1.0).min(self.burst);
        }
    }

    pub fn len(&self) -> usize {
        self.buckets.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill() {
        let l = KeyedRateLimiter::new(3, Duration::from_secs(60), 100);
        let t0 = Instant::now();
        for _ in 0..3 {
            l.check(&"ip", t0).unwrap();
        }
        let retry = l.check(&"ip", t0).unwrap_err();
        assert!(retry > Duration::from_secs(19) && retry <= Duration::from_secs(20));
        l.check(&"other", t0).unwrap();
        l.check(&"ip", t0 + Duration::from_secs(20)).unwrap();
    }

    #[test]
    fn memory_is_bounded() {
        let l = KeyedRateLimiter::new(2, Duration::from_secs(60), 10);
        let t0 = Instant::now();
        for i in 0..10 {
            l.check(&i, t0).unwrap();
        }
        assert!(l.check(&99, t0).is_err(), "table full of active buckets");
        // Once the buckets have refilled they are idle and can be dropped.
        l.check(&99, t0 + Duration::from_secs(60)).unwrap();
        assert!(l.len() <= 10);
    }

    #[test]
    fn refund_gives_a_token_back_up_to_the_burst() {
        let l = KeyedRateLimiter::new(2, Duration::from_secs(60), 10);
        let t0 = Instant::now();
        l.check(&"ip", t0).unwrap();
        l.check(&"ip", t0).unwrap();
        assert!(l.check(&"ip", t0).is_err());
        l.refund(&"ip");
        l.check(&"ip", t0).unwrap();
        assert!(l.check(&"ip", t0).is_err());
        // Never above the burst, and nothing is stored for an unknown key.
        l.refund(&"other");
        l.refund(&"other");
        assert_eq!(l.len(), 1);
    }
}
