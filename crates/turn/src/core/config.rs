//! The core's settings.

use super::policy::PeerPolicy;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

/// Core settings, derived from [`crate::TurnConfig`] by the driver.
pub struct CoreConfig {
    pub realm: String,
    pub secrets: Vec<Vec<u8>>,
    pub users: HashMap<String, String>,
    pub policy: PeerPolicy,
    /// Allocations at once per user (see [`super::quota_key`]); beyond it 486. 0 = unlimited.
    pub user_quota: u32,
    /// Allocations at once in total; beyond it 508. 0 = unlimited.
    pub total_quota: u32,
    pub max_bps: u64,
    pub default_lifetime: Duration,
    pub max_lifetime: Duration,
    pub permission_lifetime: Duration,
    pub channel_lifetime: Duration,
    pub nonce_lifetime: Duration,
    pub max_permissions: usize,
    pub max_channels: usize,
    pub software: Option<String>,
    /// Advertised instead of the relay's own IP, per family (`external_ip`).
    pub external_v4: Option<IpAddr>,
    pub external_v6: Option<IpAddr>,
    /// Key for stateless nonces (random per process).
    pub nonce_key: [u8; 32],
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
            policy,
            user_quota: 0,
            total_quota: 0,
            max_bps: 0,
            default_lifetime: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            permission_lifetime: Duration::from_secs(300),
            channel_lifetime: Duration::from_secs(600),
            nonce_lifetime: Duration::from_secs(600),
            max_permissions: 64,
            max_channels: 64,
            software: None,
            external_v4: None,
            external_v6: None,
            nonce_key: rand::random(),
        }
    }
}
