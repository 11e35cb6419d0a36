//! Quotas: what `user_quota` counts against ([`quota_key`]), the allocations held per user,
//! the `total_quota` and `user_quota` checks at Allocate, and the per-allocation token bucket
//! that enforces `max_bps`.

use super::turn_core::TurnCore;
use std::collections::HashMap;
use std::time::Instant;

/// What `user_quota` counts against for `username`: a static user by its name; a TURN REST
/// username `<expiry>:<user>` by `<user>`, so that fresh credentials for the same user (a new
/// `/v1/ice-servers` call gives a new expiry) share one quota, as coturn's quota does; a REST
/// username without a user part by itself.
pub fn quota_key<'a>(users: &HashMap<String, String>, username: &'a str) -> &'a str {
    if users.contains_key(username) {
        return username;
    }
    match username.split_once(':') {
        Some((expiry, user))
            if !expiry.is_empty()
                && !user.is_empty()
                && expiry.bytes().all(|b| b.is_ascii_digit()) =>
        {
            user
        }
        _ => username,
    }
}

/// Allocations held per quota key ([`quota_key`]); a key that holds none has no entry.
#[derive(Default)]
pub(super) struct UserCounts(HashMap<Box<str>, u32>);

impl UserCounts {
    /// Allocations `key` holds.
    pub(super) fn used(&self, key: &str) -> u32 {
        self.0.get(key).copied().unwrap_or(0)
    }

    /// `key` holds one more allocation.
    pub(super) fn add(&mut self, key: &str) {
        *self.0.entry(key.into()).or_insert(0) += 1;
    }

    /// Keys that hold an allocation.
    #[cfg(test)]
    pub(super) fn users(&self) -> usize {
        self.0.len()
    }

    /// `key` holds one allocation fewer; at none its entry goes.
    pub(super) fn release(&mut self, key: &str) {
        if let Some(n) = self.0.get_mut(key) {
            *n -= 1;
            if *n == 0 {
                self.0.remove(key);
            }
        }
    }
}

impl TurnCore {
    /// Whether one more allocation for `username` would exceed `total_quota` (508) or its
    /// user's `user_quota` (486): the error to answer with, the refusal counted.
    pub(super) fn over_quota(&self, username: &str) -> Option<(u16, &'static str)> {
        if self.cfg.limits.total_quota > 0
            && self.allocations.len() >= self.cfg.limits.total_quota as usize
        {
            self.metrics.quota("total");
            return Some((508, "Insufficient Capacity"));
        }
        let used = self.per_user.used(quota_key(&self.cfg.users, username));
        if self.cfg.limits.user_quota > 0 && used >= self.cfg.limits.user_quota {
            self.metrics.quota("user");
            return Some((486, "Allocation Quota Reached"));
        }
        None
    }
}

/// An allocation's bandwidth allowance (`max_bps`): bytes it may still relay, refilled with
/// time up to one second's worth.
pub(super) struct Bucket {
    tokens: u64,
    last: Instant,
}

impl Bucket {
    /// A full bucket for `max_bps`.
    pub(super) fn full(max_bps: u64, now: Instant) -> Self {
        Bucket {
            tokens: max_bps,
            last: now,
        }
    }

    /// Takes `n` bytes' worth after refilling for the time since the last refill; `false`
    /// (nothing taken) when there is not enough. `max_bps` 0 is unlimited.
    pub(super) fn take(&mut self, max_bps: u64, n: usize, now: Instant) -> bool {
        if max_bps == 0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.last);
        let refill =
            (elapsed.as_nanos().min(u64::MAX as u128 / 2) * max_bps as u128 / 1_000_000_000) as u64;
        if refill > 0 {
            self.tokens = (self.tokens + refill).min(max_bps);
            self.last = now;
        }
        if self.tokens >= n as u64 {
            self.tokens -= n as u64;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::test_support::{harness, udp_client, USER};
    use std::time::Duration;

    #[test]
    fn user_counts_forget_a_user_who_holds_none() {
        let mut u = UserCounts::default();
        u.add("a");
        u.add("a");
        u.add("b");
        assert_eq!((u.used("a"), u.used("b"), u.used("c")), (2, 1, 0));
        u.release("a");
        assert_eq!(u.used("a"), 1);
        u.release("a");
        assert_eq!(u.used("a"), 0);
        assert_eq!(u.users(), 1, "no entry left for a");
        u.release("nobody");
        assert_eq!(u.users(), 1);
    }

    #[test]
    fn an_unlimited_bucket_takes_anything() {
        let now = Instant::now();
        let mut b = Bucket::full(0, now);
        assert!(b.take(0, usize::MAX, now));
        assert!(b.take(0, usize::MAX, now));
    }

    /// A full bucket holds one second's worth; what is refused takes nothing; time refills it
    /// in proportion, up to one second's worth again.
    #[test]
    fn a_bucket_allows_one_second_of_burst_and_refills_with_time() {
        let t0 = Instant::now();
        let mut b = Bucket::full(1000, t0);
        assert!(b.take(1000, 600, t0));
        assert!(!b.take(1000, 600, t0));
        assert!(b.take(1000, 400, t0));
        assert!(!b.take(1000, 1, t0));
        let t1 = t0 + Duration::from_millis(100);
        assert!(b.take(1000, 100, t1));
        assert!(!b.take(1000, 1, t1));
        let t2 = t1 + Duration::from_secs(10);
        assert!(b.take(1000, 1000, t2));
        assert!(!b.take(1000, 1, t2));
    }

    /// At a low rate, calls more often than one byte's worth of time must not lose that time:
    /// the refill clock only moves when a refill happened.
    #[test]
    fn time_that_bought_no_byte_yet_is_kept() {
        let t0 = Instant::now();
        let mut b = Bucket::full(1, t0);
        assert!(b.take(1, 1, t0));
        for ms in (100..1000).step_by(100) {
            assert!(!b.take(1, 1, t0 + Duration::from_millis(ms)));
        }
        assert!(b.take(1, 1, t0 + Duration::from_secs(1)));
    }

    /// With both quotas reached, `total_quota` answers first (508); below it, the user's
    /// quota (486). Each refusal is counted under its quota.
    #[test]
    fn the_total_quota_is_checked_before_the_user_quota() {
        let mut h = harness(|c| {
            c.limits.user_quota = 1;
            c.limits.total_quota = 1;
        });
        h.allocate(0, &udp_client(1), false);
        assert_eq!(
            h.core.over_quota(USER),
            Some((508, "Insufficient Capacity"))
        );
        let mut h = harness(|c| c.limits.user_quota = 1);
        h.allocate(0, &udp_client(1), false);
        assert_eq!(
            h.core.over_quota(USER),
            Some((486, "Allocation Quota Reached"))
        );
        assert_eq!(h.core.over_quota("someone-else"), None);
        let quota = |q| {
            h.metrics
                .quota_rejections
                .get_or_create(&[("quota", q)])
                .get()
        };
        assert_eq!((quota("user"), quota("total")), (1, 0));
    }
}
