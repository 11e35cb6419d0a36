//! `switchboard_turn_*` series. Counters used per packet are resolved once here, so the hot
//! path only bumps atomics.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// One label of a metric family: `[("reason", "expired")]`. Label values are a bounded set of
/// static strings, so no label can grow the series without bound.
pub type Label = [(&'static str, &'static str); 1];

/// The `quota` labels of `switchboard_turn_quota_rejections_total`.
pub const QUOTAS: &[&str] = &[
    "user",
    "total",
    "ports",
    "reservations",
    "permissions",
    "channels",
    "bandwidth",
    "tcp_connections",
    "tcp_peer_connections",
];

/// Every TURN series. Cheap to clone (shared atomics).
#[derive(Clone, Debug, Default)]
pub struct TurnMetrics {
    pub allocations: Gauge,
    pub allocations_created: Counter,
    pub allocations_expired: Counter,
    pub allocations_deleted: Counter,
    pub bytes_to_peer: Counter,
    pub bytes_to_client: Counter,
    pub packets_to_peer: Counter,
    pub packets_to_client: Counter,
    pub auth_failures: Family<Label, Counter>,
    pub denied_peers: Counter,
    pub quota_rejections: Family<Label, Counter>,
    /// Input that could not be decoded or was refused before any state was touched.
    pub malformed: Family<Label, Counter>,
    /// Relayed packets dropped (no permission, bandwidth limit, full client queue).
    pub dropped: Family<Label, Counter>,
    pub tcp_connections: Gauge,
    /// RFC 6062 TCP connections to peers (pending a ConnectionBind, or relaying).
    pub peer_tcp_connections: Gauge,
    /// UDP GSO messages the kernel refused (their datagrams were re-sent one by one).
    pub gso_fallbacks: Counter,
    /// 1 while client datagrams are spread over all UDP workers, 0 while the first takes them.
    pub udp_spread: Gauge,
    /// Switches between the two (see `TurnConfig::udp_consolidate`).
    pub udp_steering_changes: Counter,
}

impl TurnMetrics {
    /// Registers every series under `switchboard_turn_` (the registry carries `switchboard`).
    pub fn register(registry: &mut Registry) -> Self {
        let m = TurnMetrics::default();
        let r = registry.sub_registry_with_prefix("turn");
        r.register(
            "allocations",
            "Current TURN allocations",
            m.allocations.clone(),
        );
        r.register(
            "allocations_created",
            "TURN allocations created",
            m.allocations_created.clone(),
        );
        r.register(
            "allocations_expired",
            "TURN allocations that expired without refresh",
            m.allocations_expired.clone(),
        );
        r.register(
            "allocations_deleted",
            "TURN allocations deleted by the client (Refresh lifetime 0) or by connection close",
            m.allocations_deleted.clone(),
        );
        let bytes: Family<Label, Counter> = Family::default();
        let packets: Family<Label, Counter> = Family::default();
        r.register(
            "relayed_bytes",
            "Payload bytes relayed, by direction",
            bytes.clone(),
        );
        r.register(
            "relayed_packets",
            "Packets relayed, by direction",
            packets.clone(),
        );
        r.register(
            "auth_failures",
            "TURN requests refused by long-term credential checks, by reason",
            m.auth_failures.clone(),
        );
        r.register(
            "denied_peers",
            "Peer addresses refused by the peer address policy (403)",
            m.denied_peers.clone(),
        );
        r.register(
            "quota_rejections",
            "Requests or packets refused by a quota, by quota",
            m.quota_rejections.clone(),
        );
        // Every quota's series exists from the start (at 0), so alerts can watch them.
        for quota in QUOTAS {
            let _ = m.quota_rejections.get_or_create(&[("quota", quota)]);
        }
        r.register(
            "malformed_packets",
            "Client input that could not be decoded, by reason",
            m.malformed.clone(),
        );
        r.register(
            "dropped_packets",
            "Relayed packets dropped, by reason",
            m.dropped.clone(),
        );
        r.register(
            "tcp_connections",
            "Open TURN TCP and TLS client connections",
            m.tcp_connections.clone(),
        );
        r.register(
            "peer_tcp_connections",
            "Open RFC 6062 TCP connections to peers (waiting for ConnectionBind or relaying)",
            m.peer_tcp_connections.clone(),
        );
        r.register(
            "gso_fallbacks",
            "UDP GSO sends the kernel refused and that were re-sent datagram by datagram \
             (GSO is switched off after 16)",
            m.gso_fallbacks.clone(),
        );
        r.register(
            "udp_spread",
            "1 while UDP client datagrams are spread over all UDP workers (SO_REUSEPORT hash), \
             0 while the first worker takes them all (light load, turn.udp_consolidate)",
            m.udp_spread.clone(),
        );
        r.register(
            "udp_steering_changes",
            "Switches between consolidated and spread UDP client steering",
            m.udp_steering_changes.clone(),
        );
        let dir = |d| [("direction", d)];
        let bytes_to_peer = bytes.get_or_create(&dir("to_peer")).clone();
        let bytes_to_client = bytes.get_or_create(&dir("to_client")).clone();
        let packets_to_peer = packets.get_or_create(&dir("to_peer")).clone();
        let packets_to_client = packets.get_or_create(&dir("to_client")).clone();
        TurnMetrics {
            bytes_to_peer,
            bytes_to_client,
            packets_to_peer,
            packets_to_client,
            ..m
        }
    }

    pub fn auth_failure(&self, reason: &'static str) {
        self.auth_failures
            .get_or_create(&[("reason", reason)])
            .inc();
    }

    pub fn quota(&self, quota: &'static str) {
        self.quota_rejections
            .get_or_create(&[("quota", quota)])
            .inc();
    }

    pub fn malformed(&self, reason: &'static str) {
        self.malformed.get_or_create(&[("reason", reason)]).inc();
    }

    pub fn dropped(&self, reason: &'static str) {
        self.dropped.get_or_create(&[("reason", reason)]).inc();
    }
}
