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
