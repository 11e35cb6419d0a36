//! Who may try a password now: the limits in front of `POST /v1/login`.
//!
//! Three limits, checked in this order before any password is hashed:
//! - **per client IP** (IPv6 by /64): a token bucket of failed attempts per minute. A successful
//!   login gives its token back, so only failures count.
//! - **per (client IP, username)**: failures with exponential backoff. The first
//!   `failures_per_pair_per_minute − 1` failures are free; each later one blocks the pair for
//!   60 s / that number, doubling with every further failure up to `backoff_max`. A success
//!   forgets the pair. Failures from one address never block the same username from another,
//!   so an attacker cannot lock a user out by guessing wrong on purpose.
//! - **global**: attempts per second across the server, a ceiling on the CPU that password
//!   hashing may take however many addresses an attacker has. An attempt refused later (or
//!   whose hash never ran) gives its token back. Addresses in good standing (a login from
//!   them succeeded within [`TRUST_FOR`]) draw from a second budget of the same size, so a
//!   password-guessing run from many other addresses, which spends the first, does not lock
//!   out users who log in from where they did before. Good standing is earned by a correct
//!   password only; a new address waits with everyone else while such a run lasts.
//!
//! Memory is bounded: usernames longer than [`MAX_USERNAME_BYTES`] are refused before anything
//! is stored, pairs are stored as a 16-byte keyed digest of the username (never the name), and
//! each table holds at most `max_keys` entries. A pair is only stored when it fails; when its
//! table is full of live entries a failure goes unrecorded (the per-IP and global limits still
//! apply) rather than refusing anyone. Time is passed in, so tests script it.

use crate::limit::KeyedRateLimiter;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Longest username accepted by the login edge; longer ones are refused before any limiter
/// stores anything.
pub const MAX_USERNAME_BYTES: usize = 256;
/// Longest password accepted by the login edge.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// A pair's failures are forgotten after this many times `backoff_max` with no failure.
const FORGET_AFTER_BACKOFFS: u32 = 4;

/// How long an address stays in good standing after its last successful login.
pub const TRUST_FOR: Duration = Duration::from_secs(30 * 24 * 3600);

/// Settings of a [`LoginLimiter`].
#[derive(Clone, Debug)]
pub struct LoginLimits {
    /// Failed attempts per client IP per minute (burst of the same size).
    pub per_ip_per_minute: u32,
    /// Failures per (client IP, username) before backoff; also sets the first backoff step
    /// (60 s divided by this).
    pub failures_per_pair_per_minute: u32,
    /// Longest block of a (client IP, username) pair that keeps failing.
    pub backoff_max: Duration,
    /// Attempts per second across the server (burst of the same size).
    pub global_per_second: u32,
    /// Entries per table (per IP, per pair).
    pub max_keys: usize,
}

/// Why an attempt was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginRefusal {
    /// Empty or oversized username or password; nothing was stored.
    Invalid,
    /// The client IP used up its failed attempts.
    Ip(Duration),
    /// This (client IP, username) pair is backing off after repeated failures.
    Pair(Duration),
    /// The server-wide ceiling on attempts per second.
    Global(Duration),
}

impl LoginRefusal {
    /// How long the client should wait (`None` for [`LoginRefusal::Invalid`]).
    pub fn retry_after(&self) -> Option<Duration> {
        match *self {
            LoginRefusal::Invalid => None,
            LoginRefusal::Ip(d) | LoginRefusal::Pair(d) | LoginRefusal::Global(d) => Some(d),
        }
    }
}

/// Checks the sizes of a login body's fields; refuses empty ones too (no hash is needed to
/// know they are wrong).
pub fn validate(username: &str, password: &str) -> Result<(), LoginRefusal> {
    if username.is_empty()
        || password.is_empty()
        || username.len() > MAX_USERNAME_BYTES
        || password.len() > MAX_PASSWORD_BYTES
    {
        return Err(LoginRefusal::Invalid);
    }
    Ok(())
}

/// The address a limit is keyed by: IPv4 as is (also when mapped into IPv6), IPv6 by its /64,
/// the smallest block one subscriber usually gets.
pub fn ip_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

type PairKey = (IpAddr, [u8; 16]);

struct PairState {
    failures: u32,
    blocked_until: Instant,
    last_failure: Instant,
}

/// The login limits (see the module docs).
pub struct LoginLimiter {
    limits: LoginLimits,
    per_ip: KeyedRateLimiter<IpAddr>,
    global: KeyedRateLimiter<()>,
    /// The global budget of addresses in good standing.
    global_trusted: KeyedRateLimiter<()>,
    /// Addresses in good standing: the time of their last successful login.
    trusted: Mutex<HashMap<IpAddr, Instant>>,
    pairs: Mutex<HashMap<PairKey, PairState>>,
    /// Keys the username digest, so that stored digests cannot be matched to names offline
    /// and colliding names cannot be chosen.
    salt: [u8; 16],
}

/// An admitted attempt. Settle it with [`LoginAttempt::succeeded`], [`LoginAttempt::failed`]
/// or [`LoginAttempt::not_checked`]; dropping it unsettled keeps its tokens spent, which is
/// right for a request abandoned while its hash ran.
#[must_use = "settle the attempt with succeeded, failed or not_checked"]
pub struct LoginAttempt<'a> {
    limiter: &'a LoginLimiter,
    ip: IpAddr,
    pair: PairKey,
    /// The attempt took its global token from the good-standing budget.
    trusted: bool,
}

impl LoginLimiter {
    pub fn new(limits: LoginLimits) -> LoginLimiter {
        let minute = Duration::from_secs(60);
        LoginLimiter {
            per_ip: KeyedRateLimiter::new(limits.per_ip_per_minute, minute, limits.max_keys),
            global: KeyedRateLimiter::new(limits.global_per_second, Duration::from_secs(1), 1),
            global_trusted: KeyedRateLimiter::new(
                limits.global_per_second,
                Duration::from_secs(1),
                1,
            ),
            trusted: Mutex::new(HashMap::new()),
            pairs: Mutex::new(HashMap::new()),
            salt: rand::random(),
            limits,
        }
    }

    fn pair_key(&self, ip: IpAddr, username: &str) -> PairKey {
        let mut h = Sha256::new();
        h.update(self.salt);
        h.update(username.as_bytes());
        let d = h.finalize();
        let mut out = [0u8; 16];
        out.copy_from_slice(&d[..16]);
        (ip, out)
    }

    /// Admits an attempt for `username` from `ip` at `now`, or says why not. A refusal by a
    /// later limit gives back what an earlier one took.
    pub fn begin(
        &self,
        ip: IpAddr,
        username: &str,
        now: Instant,
    ) -> Result<LoginAttempt<'_>, LoginRefusal> {
        if username.is_empty() || username.len() > MAX_USERNAME_BYTES {
            return Err(LoginRefusal::Invalid);
        }
        let ip = ip_key(ip);
        let pair = self.pair_key(ip, username);
        if let Some(st) = self.pairs.lock().get(&pair) {
            if st.blocked_until > now {
                return Err(LoginRefusal::Pair(st.blocked_until - now));
            }
        }
        self.per_ip.check(&ip, now).map_err(LoginRefusal::Ip)?;
        let trusted = self.in_good_standing(ip, now);
        if let Err(retry) = self.global_for(trusted).check(&(), now) {
            self.per_ip.refund(&ip);
            return Err(LoginRefusal::Global(retry));
        }
        Ok(LoginAttempt {
            limiter: self,
            ip,
            pair,
            trusted,
        })
    }

    fn global_for(&self, trusted: bool) -> &KeyedRateLimiter<()> {
        if trusted {
            &self.global_trusted
        } else {
            &self.global
        }
    }

    fn in_good_standing(&self, ip: IpAddr, now: Instant) -> bool {
        self.trusted
            .lock()
            .get(&ip)
            .is_some_and(|&at| now.saturating_duration_since(at) < TRUST_FOR)
    }

    /// Puts `ip` in good standing from `now`. At `max_keys` addresses, lapsed ones are dropped
    /// first, then the one whose last login is oldest.
    fn trust(&self, ip: IpAddr, now: Instant) {
        let mut trusted = self.trusted.lock();
        if !trusted.contains_key(&ip) && trusted.len() >= self.limits.max_keys {
            trusted.retain(|_, at| now.saturating_duration_since(*at) < TRUST_FOR);
            if trusted.len() >= self.limits.max_keys {
                let oldest = trusted.iter().min_by_key(|(_, at)| **at).map(|(k, _)| *k);
                if let Some(k) = oldest {
                    trusted.remove(&k);
                }
            }
        }
        trusted.insert(ip, now);
    }

    /// The block after the `failures`-th failure in a row of one pair, if any.
    fn backoff(&self, failures: u32) -> Option<Duration> {
        let free = self.limits.failures_per_pair_per_minute.max(1);
        let over = failures.checked_sub(free)?;
        let base = Duration::from_secs(60) / free;
        let step = base.saturating_mul(1u32 << over.min(20));
        Some(step.min(self.limits.backoff_max.max(base)))
    }

    fn forget_after(&self) -> Duration {
        self.limits
            .backoff_max
            .max(Duration::from_secs(60))
            .saturating_mul(FORGET_AFTER_BACKOFFS)
    }

    fn record_failure(&self, pair: PairKey, now: Instant) {
        let forget = self.forget_after();
        let mut pairs = self.pairs.lock();
        if !pairs.contains_key(&pair) && pairs.len() >= self.limits.max_keys {
            pairs.retain(|_, st| now.saturating_duration_since(st.last_failure) < forget);
            if pairs.len() >= self.limits.max_keys {
                return;
            }
        }
        let st = pairs.entry(pair).or_insert(PairState {
            failures: 0,
            blocked_until: now,
            last_failure: now,
        });
        if now.saturating_duration_since(st.last_failure) >= forget {
            st.failures = 0;
        }
        st.failures = st.failures.saturating_add(1);
        st.last_failure = now;
        if let Some(block) = self.backoff(st.failures) {
            st.blocked_until = now + block;
        }
    }

    /// Entries in the per-IP table.
    pub fn ip_entries(&self) -> usize {
        self.per_ip.len()
    }

    /// Entries in the per-(IP, username) table.
    pub fn pair_entries(&self) -> usize {
        self.pairs.lock().len()
    }

    /// Addresses in good standing.
    pub fn trusted_entries(&self) -> usize {
        self.trusted.lock().len()
    }
}

impl LoginAttempt<'_> {
    /// The password was right: the IP's token comes back, the pair is forgotten and the
    /// address is in good standing from `now`.
    pub fn succeeded(self, now: Instant) {
        self.limiter.per_ip.refund(&self.ip);
        self.limiter.pairs.lock().remove(&self.pair);
        self.limiter.trust(self.ip, now);
    }

    /// The password was wrong (or the user unknown): counted against the IP and the pair.
    pub fn failed(self, now: Instant) {
        self.limiter.record_failure(self.pair, now);
    }

    /// No password was checked (no hashing slot was free): every token comes back.
    pub fn not_checked(self) {
        self.limiter.per_ip.refund(&self.ip);
        self.limiter.global_for(self.trusted).refund(&());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> LoginLimits {
        LoginLimits {
            per_ip_per_minute: 100,
            failures_per_pair_per_minute: 5,
            backoff_max: Duration::from_secs(15 * 60),
            global_per_second: 1000,
            max_keys: 1000,
        }
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    const S: Duration = Duration::from_secs(1);

    /// A login from `ip(last)` for `user` at `t` that the limiter admits and whose password
    /// check fails.
    fn fail(l: &LoginLimiter, last: u8, user: &str, t: Instant) {
        l.begin(ip(last), user, t).unwrap().failed(t);
    }

    #[test]
    fn a_failing_pair_backs_off_exponentially_up_to_the_cap() {
        let l = LoginLimiter::new(limits());
        let mut t = Instant::now();
        // Four free failures, then the fifth blocks for 60 s / 5 = 12 s.
        for _ in 0..5 {
            fail(&l, 2, "alice", t);
        }
        let mut blocks = Vec::new();
        loop {
            let Err(LoginRefusal::Pair(d)) = l.begin(ip(2), "alice", t) else {
                panic!("pair should be blocked");
            };
            blocks.push(d.as_secs());
            // Still blocked a moment before the end, admitted at the end.
            assert!(l.begin(ip(2), "alice", t + d - S).is_err());
            t += d;
            fail(&l, 2, "alice", t);
            if blocks.len() == 9 {
                break;
            }
        }
        assert_eq!(blocks, [12, 24, 48, 96, 192, 384, 768, 900, 900]);
    }

    #[test]
    fn another_ip_is_not_locked_out_and_success_resets() {
        let l = LoginLimiter::new(limits());
        let t = Instant::now();
        for _ in 0..5 {
            fail(&l, 2, "alice", t);
        }
        assert!(matches!(
            l.begin(ip(2), "alice", t),
            Err(LoginRefusal::Pair(_))
        ));
        // The same user from elsewhere, and another user from the attacker's address.
        l.begin(ip(3), "alice", t).unwrap().succeeded(t);
        fail(&l, 2, "bob", t);
        // After its block, a success forgets the pair: the next failure is free again.
        let t = t + Duration::from_secs(12);
        l.begin(ip(2), "alice", t).unwrap().succeeded(t);
        fail(&l, 2, "alice", t);
        fail(&l, 2, "alice", t);
    }

    #[test]
    fn failures_are_forgotten_after_a_quiet_spell() {
        let l = LoginLimiter::new(limits());
        let t = Instant::now();
        for _ in 0..4 {
            fail(&l, 2, "alice", t);
        }
        // An hour (4 x backoff_max) later the four earlier failures no longer count.
        let t = t + Duration::from_secs(3600);
        for _ in 0..4 {
            fail(&l, 2, "alice", t);
        }
        assert!(l.begin(ip(2), "alice", t).is_ok());
    }

    #[test]
    fn per_ip_counts_failures_only() {
        let l = LoginLimiter::new(LoginLimits {
            per_ip_per_minute: 3,
            ..limits()
        });
        let t = Instant::now();
        for _ in 0..10 {
            l.begin(ip(2), "alice", t).unwrap().succeeded(t);
        }
        for u in ["a", "b", "c"] {
            fail(&l, 2, u, t);
        }
        let Err(LoginRefusal::Ip(retry)) = l.begin(ip(2), "d", t) else {
            panic!("per-IP limit");
        };
        // One failure comes back every 60 s / 3.
        assert!(retry > Duration::from_secs(19) && retry <= Duration::from_secs(20));
        fail(&l, 3, "d", t);
        let t = t + Duration::from_secs(21);
        fail(&l, 2, "d", t);
    }

    #[test]
    fn global_ceiling_and_refunds() {
        let l = LoginLimiter::new(LoginLimits {
            global_per_second: 2,
            ..limits()
        });
        let t = Instant::now();
        let a = l.begin(ip(2), "a", t).unwrap();
        // An attempt whose hash never ran gives its global token back.
        l.begin(ip(3), "b", t).unwrap().not_checked();
        let b = l.begin(ip(4), "c", t).unwrap();
        assert!(matches!(
            l.begin(ip(5), "d", t),
            Err(LoginRefusal::Global(_))
        ));
        a.failed(t);
        b.failed(t);
        // Half a second later one token is back.
        let t = t + Duration::from_millis(500);
        fail(&l, 5, "d", t);
        assert!(l.begin(ip(6), "e", t).is_err());
    }

    #[test]
    fn an_address_that_logged_in_before_keeps_its_share_while_others_spend_the_ceiling() {
        let l = LoginLimiter::new(LoginLimits {
            global_per_second: 2,
            ..limits()
        });
        let t = Instant::now();
        // Alice logged in from 127.0.0.2 yesterday.
        l.begin(ip(2), "alice", t).unwrap().succeeded(t);
        // Today a password-guessing run from many addresses spends the ceiling every second.
        let t = t + Duration::from_secs(86_400);
        fail(&l, 10, "alice", t);
        fail(&l, 11, "bob", t);
        assert!(matches!(
            l.begin(ip(12), "carol", t),
            Err(LoginRefusal::Global(_))
        ));
        // Alice, from the address she used before, is still admitted, and so is a second try.
        l.begin(ip(2), "alice", t).unwrap().succeeded(t);
        l.begin(ip(2), "alice", t).unwrap().failed(t);
        // Addresses in good standing have a ceiling of their own, not none.
        assert!(matches!(
            l.begin(ip(2), "alice", t),
            Err(LoginRefusal::Global(_))
        ));
        // Good standing is earned by a success only, and it is forgotten after TRUST_FOR.
        let later = t + TRUST_FOR + S;
        fail(&l, 10, "x", later);
        fail(&l, 11, "y", later);
        assert!(matches!(
            l.begin(ip(2), "alice", later),
            Err(LoginRefusal::Global(_))
        ));
    }

    #[test]
    fn a_global_refusal_does_not_cost_the_ip() {
        let l = LoginLimiter::new(LoginLimits {
            per_ip_per_minute: 1,
            global_per_second: 1,
            ..limits()
        });
        let t = Instant::now();
        fail(&l, 2, "a", t);
        assert!(matches!(
            l.begin(ip(3), "a", t),
            Err(LoginRefusal::Global(_))
        ));
        fail(&l, 3, "a", t + S);
    }

    #[test]
    fn oversized_usernames_store_nothing() {
        let l = LoginLimiter::new(limits());
        let t = Instant::now();
        let huge = "u".repeat(64 * 1024);
        for i in 0..1000u32 {
            let from = IpAddr::from([10, 0, (i >> 8) as u8, i as u8]);
            assert_eq!(l.begin(from, &huge, t).err(), Some(LoginRefusal::Invalid));
            assert_eq!(l.begin(from, "", t).err(), Some(LoginRefusal::Invalid));
        }
        assert_eq!((l.ip_entries(), l.pair_entries()), (0, 0));
        assert_eq!(validate(&huge, "pw"), Err(LoginRefusal::Invalid));
        assert_eq!(
            validate("alice", &"p".repeat(1025)),
            Err(LoginRefusal::Invalid)
        );
        assert_eq!(validate("alice", ""), Err(LoginRefusal::Invalid));
        assert!(validate(&"u".repeat(256), &"p".repeat(1024)).is_ok());
        // The longest accepted name is stored as a digest: entries do not grow with it.
        fail(&l, 2, &"u".repeat(256), t);
        assert_eq!((l.ip_entries(), l.pair_entries()), (1, 1));
    }

    #[test]
    fn tables_are_bounded_and_a_full_pair_table_refuses_no_one() {
        let l = LoginLimiter::new(LoginLimits {
            max_keys: 10,
            ..limits()
        });
        let t = Instant::now();
        for i in 0..10 {
            fail(&l, i, "alice", t);
        }
        assert_eq!(l.pair_entries(), 10);
        // The per-IP table is full of live buckets: a new address is refused (briefly) ...
        assert!(matches!(
            l.begin(ip(50), "alice", t),
            Err(LoginRefusal::Ip(_))
        ));
        // ... and admitted once the buckets have refilled and can be dropped. Its failure is
        // not recorded while the pair table is full of live entries; nothing else changes.
        let t = t + Duration::from_secs(60);
        for _ in 0..10 {
            fail(&l, 50, "alice", t);
        }
        assert_eq!(l.pair_entries(), 10);
        assert!(l.ip_entries() <= 10);
        // The old pairs are forgotten after a quiet hour; then new ones are recorded again.
        let t = t + Duration::from_secs(3600);
        for _ in 0..5 {
            fail(&l, 50, "alice", t);
        }
        assert_eq!(l.pair_entries(), 1);
        assert!(matches!(
            l.begin(ip(50), "alice", t),
            Err(LoginRefusal::Pair(_))
        ));
        // Good standing holds at most max_keys addresses; the oldest login gives way.
        for i in 100..120 {
            l.begin(ip(i), "alice", t)
                .unwrap()
                .succeeded(t + S * u32::from(i));
        }
        assert_eq!(l.trusted_entries(), 10);
        assert!(l.in_good_standing(ip(119), t + S * 120));
        assert!(!l.in_good_standing(ip(100), t + S * 120));
    }

    #[test]
    fn ipv6_is_keyed_by_its_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(ip_key(a), ip_key(b));
        assert_ne!(ip_key(a), ip_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(ip_key(mapped), IpAddr::from([192, 0, 2, 7]));
    }
}
