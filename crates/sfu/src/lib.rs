//! Switchboard's SFU (server-side WebRTC). Work in progress: today this crate holds the `[sfu]`
//! config section; forwarding lands with its issue.

use serde::{Deserialize, Serialize};

/// `[sfu]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SfuConfig {
    /// "mesh", "sfu", or "auto" (SFU once a room exceeds `mesh_max_peers`).
    pub mode: String,
    /// Largest room kept in mesh mode under "auto".
    pub mesh_max_peers: usize,
    /// UDP port shared by all SFU sessions.
    pub udp_port: u16,
    /// ICE-TCP fallback port.
    pub tcp_port: u16,
    /// Address the SFU binds media sockets to.
    pub bind_ip: String,
    /// Public address advertised in ICE candidates (default: `bind_ip`).
    pub public_ip: Option<String>,
}

impl Default for SfuConfig {
    fn default() -> Self {
        SfuConfig {
            mode: "auto".into(),
            mesh_max_peers: 4,
            udp_port: 7882,
            tcp_port: 7881,
            bind_ip: "0.0.0.0".into(),
            public_ip: None,
        }
    }
}
