//! Switchboard's STUN/TURN server (RFC 8489, RFC 8656). Work in progress: today this crate
//! holds the `[turn]` config section; the server itself lands with its issue.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// `[turn]`: key names follow coturn's where coturn has the key.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TurnConfig {
    /// Start the embedded STUN/TURN server.
    pub enabled: bool,
    /// UDP and TCP listen address for STUN/TURN.
    pub listen: String,
    /// TURN over TLS listen address (used only when `cert` and `pkey` are set).
    pub tls_listen: String,
    /// PEM certificate chain for TURN over TLS (coturn: cert).
    pub cert: Option<String>,
    /// PEM private key for TURN over TLS (coturn: pkey).
    pub pkey: Option<String>,
    /// Long-term credential realm.
    pub realm: String,
    /// TURN REST shared secret (coturn: static-auth-secret). `/v1/ice-servers` signs with it.
    pub static_auth_secret: String,
    /// Older secrets still accepted while rotating.
    pub previous_auth_secrets: Vec<String>,
    /// Lifetime of TURN REST credentials handed out by `/v1/ice-servers`.
    #[serde(with = "switchboard_auth::duration")]
    pub credential_ttl: Duration,
    /// URIs advertised by `/v1/ice-servers`. Empty: derived from `listen`/`external_ip`.
    pub uris: Vec<String>,
    /// Allocations per user (0 = unlimited).
    pub user_quota: u32,
    /// Allocations in total (0 = unlimited).
    pub total_quota: u32,
    /// Bytes per second per allocation (0 = unlimited).
    pub max_bps: u64,
    /// Peer address ranges that are refused (in addition to the built-in defaults).
    pub denied_peer_ip: Vec<String>,
    /// Peer ranges allowed even when a denied range covers them.
    pub allowed_peer_ip: Vec<String>,
    /// Allow relaying to loopback peers (tests and local demos only).
    pub allow_loopback_peers: bool,
    /// Local address relay sockets bind to.
    pub relay_ip: Option<String>,
    /// Public address advertised in XOR-RELAYED-ADDRESS and in derived URIs.
    pub external_ip: Option<String>,
    /// Lowest relay port.
    pub min_port: u16,
    /// Highest relay port.
    pub max_port: u16,
}

impl Default for TurnConfig {
    fn default() -> Self {
        TurnConfig {
            enabled: true,
            listen: "0.0.0.0:3478".into(),
            tls_listen: "0.0.0.0:5349".into(),
            cert: None,
            pkey: None,
            realm: "switchboard".into(),
            static_auth_secret: String::new(),
            previous_auth_secrets: Vec::new(),
            credential_ttl: Duration::from_secs(3600),
            uris: Vec::new(),
            user_quota: 0,
            total_quota: 0,
            max_bps: 0,
            denied_peer_ip: Vec::new(),
            allowed_peer_ip: Vec::new(),
            allow_loopback_peers: false,
            relay_ip: None,
            external_ip: None,
            min_port: 49152,
            max_port: 65535,
        }
    }
}
