//! Switchboard's ticket office.
//!
//! Data flows one way: a caller proves who it is (API key or user session, see [`store`]), the
//! [`KeyRing`] signs a [`Claims`] set into a compact JWT ([`KeyRing::mint`]), and every edge that
//! opens a session verifies it ([`KeyRing::verify`]) and, where the session opens, consumes its
//! `jti` through a [`ReplayGuard`]. TURN REST credentials ([`turn_rest`]) are derived from the
//! verified identity with coturn's `use-auth-secret` scheme, so the embedded TURN server and a
//! coturn accept the same credentials.
//!
//! Nothing here does I/O except [`store`] (SQLite); time is always passed in as UNIX seconds so
//! tests can script it. Password checks are bounded by a [`HashPool`] (concurrency and memory)
//! and admitted by a [`LoginLimiter`] (per IP, per IP and username with backoff, global).

pub mod config;
pub mod duration;
mod error;
pub mod gate;
pub mod hashing;
mod jwt;
mod keyring;
pub mod limit;
pub mod login_limit;
pub mod presented;
pub mod replay;
pub mod store;
pub mod turn_rest;

pub use config::{AuthConfig, KeyConfig};
pub use error::{AuthError, ConfigError};
pub use gate::TicketGate;
pub use hashing::{HashPool, HashSlot};
pub use jwt::{claim_limits, Claims, MintRequest, Scope, Scopes};
pub use limit::KeyedRateLimiter;
pub use login_limit::{LoginLimiter, LoginLimits, LoginRefusal};
/// The `aud` claim type, for code that builds claims by hand.
pub mod jwt_audience {
    pub use crate::jwt::Audience;
}
pub use keyring::{generate_ed25519_pem, generate_secret, Algorithm, KeyRing, VerifyPolicy};
pub use replay::{InMemoryReplayGuard, ReplayError, ReplayGuard};

/// Tokens larger than this are rejected before any parsing (`oversized`).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Current UNIX time in seconds.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
