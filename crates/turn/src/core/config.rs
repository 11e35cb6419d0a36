//! The core's settings.

use super::policy::PeerPolicy;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

/// Core settings, derived from [`crate::TurnConfig`] by the driver.
pub struct CoreConfig {
    /// Long-term credential realm.
    pub realm: String,
    /// TURN REST shared secrets, the current one first.
    pub secrets: Vec<Vec<u8>>,
    /// Static long-term users: name → password.
    pub users: HashMap<String, String>,
    /// Key for stateless nonces (random per process).
    pub nonce_key: [u8; 32],
    /// Which peer addresses may be relayed to.
    pub policy: PeerPolicy,
    /// Quotas and per-allocation caps.
    pub limits: Limits,
    /// How long allocations, permissions, channels and nonces last.
    pub lifetimes: Lifetimes,
    /// SOFTWARE attribute of Binding responses (`None`: not sent).
    pub software: Option<String>,
    /// Advertised instead of the relay's own IP, per family (`external_ip`).
    pub external_v4: Option<IpAddr>,
    pub external_v6: Option<IpAddr>,
}

/// How much the server, one user and one allocation may hold.
pub struct Limits {
    /// Allocations at once per user (see [`super::quota_key`]); beyond it 486. 0 = unlimited.
    pub user_quota: u32,
    /// Allocations at once in total; beyond it 508. 0 = unlimited.
    pub total_quota: u32,
    /// Bytes per second per allocation, both directions together; 0 = unlimited.
    pub max_bps: u64,
    /// Permissions per allocation; beyond it 508.
    pub max_permissions: usize,
    /// Channel bindings per allocation; beyond it 508.
    pub max_channels: usize,
}

/// How long things last.
pub struct Lifetimes {
    /// Allocation lifetime when the client asks for less or nothing.
    pub default_allocation: Duration,
    /// Longest allocation lifetime a client gets.
    pub max_allocation: Duration,
    /// Permission lifetime.
    pub permission: Duration,
    /// Channel binding lifetime.
    pub channel: Duration,
    /// How long a nonce stays valid before the client gets 438 Stale Nonce.
    pub nonce: Duration,
}

impl CoreConfig {
    /// Defaults matching the RFCs, for tests: 600 s allocations (max 3600 s), 300 s
    /// permissions, 600 s channels, and no quotas (the server's defaults are set from
    /// [`crate::TurnConfig`] by [`crate::driver::core_config`]).
    pub fn new(realm: &str, policy: PeerPolicy) -> Self {
        CoreConfig {
            realm: realm.into(),
            secrets: Vec::new(),
            users: HashMap::new(),
            nonce_key: rand::random(),
            policy,
            limits: Limits {
                user_quota: 0,
                total_quota: 0,
                max_bps: 0,
                max_permissions: 64,
                max_channels: 64,
            },
            lifetimes: Lifetimes {
                default_allocation: Duration::from_secs(600),
                max_allocation: Duration::from_secs(3600),
                permission: Duration::from_secs(300),
                channel: Duration::from_secs(600),
                nonce: Duration::from_secs(600),
            },
            software: None,
            external_v4: None,
            external_v6: None,
        }
    }
}
