//! `[auth]` and `[[auth.keys]]` config sections.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// `[auth]`: who we are as an issuer, what we accept, how long tickets live.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// `iss` of tickets we mint; also accepted when verifying.
    pub issuer: String,
    /// Further `iss` values accepted when verifying (e.g. the Django app's "your-service").
    pub accepted_issuers: Vec<String>,
    /// `aud` we mint and require.
    pub audience: String,
    /// Lifetime of a minted ticket when the caller asks for none.
    #[serde(with = "crate::duration")]
    pub token_ttl: Duration,
    /// Upper bound on any minted ticket's lifetime; longer requests are refused with 400.
    #[serde(with = "crate::duration")]
    pub max_token_ttl: Duration,
    /// Longest lifetime a ticket may have to be accepted, whoever minted it: `exp - iat` (when
    /// `iat` is present) and `exp - now` must not exceed it, each allowing `leeway`. Unset: the
    /// same as `max_token_ttl`, the longest lifetime the server mints itself. It may not be
    /// shorter than `max_token_ttl` (the server would refuse its own tickets).
    #[serde(
        default,
        with = "crate::duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_ticket_lifetime: Option<Duration>,
    /// Clock-skew tolerance applied to `exp`, `nbf` and the ticket lifetime bound.
    #[serde(with = "crate::duration")]
    pub leeway: Duration,
    /// Key ring. The first key signs; all keys verify (rotation: add the new key second, deploy,
    /// move it first, deploy, drop the old one after `max_token_ttl`).
    pub keys: Vec<KeyConfig>,
    /// SQLite file with users, API keys and login sessions. ":memory:" keeps them in memory.
    pub database: String,
    /// Lifetime of a login session cookie.
    #[serde(with = "crate::duration")]
    pub session_ttl: Duration,
    /// Mark the session cookie `Secure` (set when served over HTTPS).
    pub cookie_secure: bool,
    /// Let unauthenticated callers mint `webrtc`+`grpc` tickets for a random guest identity.
    /// Only for `--dev` and demos; never enable on a public address.
    pub allow_anonymous_tokens: bool,
    /// Failed login attempts allowed per client IP (IPv6: per /64) per minute, as a burst of
    /// this size refilling over a minute; then 429 with `Retry-After`. A successful login does
    /// not count.
    pub login_attempts_per_ip_per_minute: u32,
    /// Failed logins of one username from one client IP before that pair backs off: each
    /// further failure blocks the pair (429) for 60 s divided by this, doubling per failure up
    /// to `login_backoff_max`. A success resets the pair. Failures from one address never
    /// block the username from another. Formerly `login_attempts_per_user_per_minute` (still
    /// accepted), which counted a username's attempts from anywhere and so let anyone lock a
    /// user out.
    #[serde(alias = "login_attempts_per_user_per_minute")]
    pub login_failures_per_ip_user_per_minute: u32,
    /// Longest block of a (client IP, username) pair that keeps failing. Its failures are
    /// forgotten after four times this with no failure.
    #[serde(with = "crate::duration")]
    pub login_backoff_max: Duration,
    /// Login attempts per second across the whole server (burst of the same size); beyond it
    /// 429. A ceiling on the CPU password hashing may take, however many addresses send.
    pub login_attempts_per_second: u32,
    /// Password checks (Argon2id, 19 MiB of memory each) that run at once; 0 = one per CPU
    /// core. Each has its own memory, allocated on first use and reused, so hashing holds at
    /// most this × 19 MiB.
    pub login_hash_concurrency: usize,
    /// Logins that may wait for a free password check when all are busy; beyond it the login
    /// gets 503 with `Retry-After` at once.
    pub login_hash_queue: usize,
    /// Longest wait for a free password check; then 503 with `Retry-After`.
    #[serde(with = "crate::duration")]
    pub login_hash_wait: Duration,
    /// Upper bound on remembered `jti`s (entries expire with their ticket).
    pub replay_max_entries: usize,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            issuer: "switchboard".into(),
            accepted_issuers: Vec::new(),
            audience: "realtime-clients".into(),
            token_ttl: Duration::from_secs(300),
            max_token_ttl: Duration::from_secs(300),
            max_ticket_lifetime: None,
            leeway: Duration::from_secs(30),
            keys: Vec::new(),
            database: "switchboard.db".into(),
            session_ttl: Duration::from_secs(12 * 3600),
            cookie_secure: false,
            allow_anonymous_tokens: false,
            login_attempts_per_ip_per_minute: 20,
            login_failures_per_ip_user_per_minute: 5,
            login_backoff_max: Duration::from_secs(15 * 60),
            login_attempts_per_second: 20,
            login_hash_concurrency: 0,
            login_hash_queue: 16,
            login_hash_wait: Duration::from_secs(1),
            replay_max_entries: 1_000_000,
        }
    }
}

impl AuthConfig {
    /// The lifetime bound verification applies: `max_ticket_lifetime`, or `max_token_ttl`
    /// when that is unset.
    pub fn ticket_lifetime_limit(&self) -> Duration {
        self.max_ticket_lifetime.unwrap_or(self.max_token_ttl)
    }

    /// `login_hash_concurrency` with 0 resolved to the number of CPU cores (at least 1).
    pub fn login_hash_permits(&self) -> usize {
        match self.login_hash_concurrency {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

/// `[[auth.keys]]`: one key of the ring. Exactly one source of key material is set.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeyConfig {
    /// Key id written to the JWT header `kid`.
    pub kid: String,
    /// "HS256" (default) or "EdDSA" (Ed25519).
    pub algorithm: String,
    /// HS256 shared secret, inline.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// HS256 shared secret read from a file (trailing newline trimmed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<String>,
    /// HS256 shared secret read from this environment variable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<String>,
    /// EdDSA PKCS#8 PEM private key file (signs and verifies).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private_key_file: Option<String>,
    /// EdDSA PKCS#8 PEM private key, inline.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    /// EdDSA SPKI PEM public key file (verifies only; cannot be the first key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_key_file: Option<String>,
    /// EdDSA SPKI PEM public key, inline.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
}

impl std::fmt::Debug for KeyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("KeyConfig")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("secret_file", &self.secret_file)
            .field("secret_env", &self.secret_env)
            .field("private_key_file", &self.private_key_file)
            .field(
                "private_key",
                &self.private_key.as_ref().map(|_| "<redacted>"),
            )
            .field("public_key_file", &self.public_key_file)
            .finish()
    }
}
