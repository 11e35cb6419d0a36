//! Switchboard's embedded STUN/TURN server (RFC 8489 STUN, RFC 8656/5766 TURN, RFC 6156 IPv6
//! relays), compatible with coturn's TURN REST credentials and config key names.
//!
//! Two halves, like quinn-proto/quinn:
//! - [`core`] is sans-IO: the STUN codec, long-term credentials (realm, stateless nonces, MD5
//!   and SHA-256 keys, TURN REST usernames), the peer address policy and the allocation state
//!   machine. Packets and instants go in; reply bytes and relay instructions come out.
//! - [`driver`] owns sockets on tokio: batched UDP (`recvmmsg`, GSO sends; one `SO_REUSEPORT`
//!   socket per worker), TCP and TLS framing, and one relay socket per allocation in the port
//!   range. [`TurnServer::start`] is what the `switchboard` binary calls.
//!
//! Data flow: client datagram → driver → `TurnCore::handle_client` → reply to client or
//! payload to a peer through the allocation's relay socket; peer datagram on a relay socket →
//! `TurnCore::handle_peer` → ChannelData or Data indication back to the client.

pub mod core;
pub mod driver;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod metrics;

pub use driver::{TurnAddrs, TurnServer};
pub use metrics::TurnMetrics;

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Everything that can go wrong starting or running the TURN server.
#[derive(Debug, thiserror::Error)]
pub enum TurnError {
    #[error("turn config: {0}")]
    Config(String),
    #[error("turn: cannot listen on {what} {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: String,
        source: std::io::Error,
    },
    #[error("turn tls: {0}")]
    Tls(String),
    #[error("turn: {0}")]
    Io(#[from] std::io::Error),
}

/// Default `user_quota`. A browser's RTCPeerConnection makes about one allocation per TURN URI
/// per ICE gathering; `/v1/ice-servers` hands out two or three URIs (UDP, TCP, TLS), so a peer
/// in a full mesh room (`mesh_max_peers` = 4: three connections) holds about 9, and the same
/// user in three tabs or devices, with a page reload leaving its old allocations to expire,
/// stays well under 64. One user then holds at most 64 of the default range's 12,288
/// allocations (`total_quota`), about 0.5 %.
pub const DEFAULT_USER_QUOTA: u32 = 64;

/// Linux's default ephemeral port range (32768-60999), used for `min_port = 0` when
/// `/proc/sys/net/ipv4/ip_local_port_range` cannot be read.
const DEFAULT_EPHEMERAL_PORTS: u32 = 28_232;

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
    /// Allocations one user may hold at once; beyond it Allocate answers 486 (Allocation
    /// Quota Reached). A TURN REST username `<expiry>:<user>` counts against `<user>`, so new
    /// credentials do not reset it. Default [`DEFAULT_USER_QUOTA`]; 0 = unlimited (coturn's
    /// default and meaning, kept as an explicit opt-out).
    pub user_quota: u32,
    /// Allocations in total; beyond it Allocate answers 508 (Insufficient Capacity). Unset:
    /// three quarters of the relay ports ([`TurnConfig::effective_total_quota`]), so that
    /// allocations alone never exhaust the port range. 0 = unlimited (coturn's meaning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_quota: Option<u32>,
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
    /// Local IPv6 address for IPv6 relays (RFC 6156). Unset: IPv6 allocations answer 440
    /// unless `listen` is an IPv6 address.
    pub relay_ip6: Option<String>,
    /// Static long-term users, `"name:password"` each (coturn: user). Checked before REST.
    pub user: Vec<String>,
    /// Longest allocation lifetime a client may ask for (coturn: max-allocate-lifetime).
    #[serde(with = "switchboard_auth::duration")]
    pub max_allocate_lifetime: Duration,
    /// Allocation lifetime when the client asks for less or nothing (RFC 8656: 10 minutes).
    #[serde(with = "switchboard_auth::duration")]
    pub default_allocate_lifetime: Duration,
    /// Permission lifetime (coturn: permission-lifetime; RFC 8656: 5 minutes).
    #[serde(with = "switchboard_auth::duration")]
    pub permission_lifetime: Duration,
    /// Channel binding lifetime (coturn: channel-lifetime; RFC 8656: 10 minutes).
    #[serde(with = "switchboard_auth::duration")]
    pub channel_lifetime: Duration,
    /// How long a nonce stays valid before the client gets 438 Stale Nonce (coturn: stale-nonce).
    #[serde(with = "switchboard_auth::duration")]
    pub stale_nonce: Duration,
    /// Permissions per allocation (CreatePermission beyond this answers 508).
    pub max_permissions: usize,
    /// Channel bindings per allocation (ChannelBind beyond this answers 508).
    pub max_channels: usize,
    /// Send a SOFTWARE attribute in Binding responses (off: do not advertise the version).
    pub software_attribute: bool,
    /// UDP worker threads, each with a listener socket sharing the port via SO_REUSEPORT
    /// (0 = one per CPU core, max 8). Always 1 when the listen port is 0.
    pub udp_workers: usize,
    /// Receive/send buffer size in bytes asked for on UDP listener sockets.
    pub socket_buffer: usize,
    /// Send runs of equal-size datagrams to one destination as one UDP GSO message (Linux
    /// ≥ 4.18; probed at start, switched off by itself if the kernel refuses it). `false`
    /// switches GSO off for the whole process, the SFU's sends included.
    pub udp_gso: bool,
    /// Receive coalescing on busy UDP worker threads: a worker that was woken again less than
    /// this long after it went idle, and found datagrams, waits this long before it waits for
    /// the next datagram, so each wakeup handles (and each GSO send merges) more of them.
    /// Adds at most this much delay per relayed datagram, only while busy. Off by default
    /// ("0s"): on the loopback benchmark it saved no CPU at paced rates (see decision 0025).
    #[serde(with = "switchboard_auth::duration")]
    pub udp_coalesce: Duration,
    /// A UDP worker thread that handled datagrams since it last waited gives up its core once
    /// (`sched_yield`) before it waits again, so the processes it just sent to (on the same
    /// host: echo peers, media servers, the kernel's softirq work) run first and their answers
    /// are already queued when it checks its sockets — one wakeup drains several of them
    /// instead of sleeping and being woken for each. Costs one syscall per busy wait; adds
    /// no delay when nothing else is runnable. See decision 0026.
    pub udp_yield: bool,
    /// With more than one UDP worker: while the workers are lightly loaded, steer every client
    /// datagram to the first worker (a one-instruction BPF program on the SO_REUSEPORT group),
    /// and spread them over all workers by the kernel's hash as soon as that worker is more
    /// than half busy; back to one worker after a second below 30 % in total. Fewer threads
    /// waking per datagram at light load, every core under heavy load. See decision 0027.
    pub udp_consolidate: bool,
    /// Concurrent TCP + TLS client connections; more are closed at accept.
    pub max_tcp_connections: usize,
    /// Refuse RFC 6062 TCP relay allocations (coturn: no-tcp-relay); Allocate with
    /// REQUESTED-TRANSPORT TCP then answers 442.
    pub no_tcp_relay: bool,
}

impl TurnConfig {
    /// Relay ports available per address family: `max_port - min_port + 1`, or, with
    /// `min_port = 0` (any ephemeral port), the size of the kernel's ephemeral port range.
    pub fn relay_ports(&self) -> u32 {
        if self.min_port == 0 {
            return std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
                .ok()
                .and_then(|s| {
                    let mut it = s.split_whitespace().map(|p| p.parse::<u32>().ok());
                    Some((it.next()??, it.next()??))
                })
                .filter(|(lo, hi)| lo <= hi)
                .map_or(DEFAULT_EPHEMERAL_PORTS, |(lo, hi)| hi - lo + 1);
        }
        (self.max_port as u32 + 1).saturating_sub(self.min_port as u32)
    }

    /// `total_quota` as enforced (0 = unlimited): the configured value, or when unset three
    /// quarters of [`TurnConfig::relay_ports`] (12,288 for the default 49152-65535). The
    /// quarter left over keeps a relay bind reliable (it tries up to 64 random ports of the
    /// range, which fails ~1e-8 of the time at 75 % full but 4 % at 95 %), leaves room for the
    /// second port EVEN-PORT reservations hold, and for other sockets of the host in the
    /// part of the range that overlaps the kernel's ephemeral ports.
    pub fn effective_total_quota(&self) -> u32 {
        match self.total_quota {
            Some(n) => n,
            None => (self.relay_ports() / 4 * 3).max(1),
        }
    }
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
            user_quota: DEFAULT_USER_QUOTA,
            total_quota: None,
            max_bps: 0,
            denied_peer_ip: Vec::new(),
            allowed_peer_ip: Vec::new(),
            allow_loopback_peers: false,
            relay_ip: None,
            external_ip: None,
            min_port: 49152,
            max_port: 65535,
            relay_ip6: None,
            user: Vec::new(),
            max_allocate_lifetime: Duration::from_secs(3600),
            default_allocate_lifetime: Duration::from_secs(600),
            permission_lifetime: Duration::from_secs(300),
            channel_lifetime: Duration::from_secs(600),
            stale_nonce: Duration::from_secs(600),
            max_permissions: 64,
            max_channels: 64,
            software_attribute: false,
            udp_workers: 0,
            socket_buffer: 4 << 20,
            udp_gso: true,
            udp_coalesce: Duration::ZERO,
            udp_yield: true,
            udp_consolidate: true,
            max_tcp_connections: 10_000,
            no_tcp_relay: false,
        }
    }
}
