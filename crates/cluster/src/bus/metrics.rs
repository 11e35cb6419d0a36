//! The bus's `/metrics` series.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry as Metrics;

/// The bus's `/metrics` series.
#[derive(Clone)]
pub(super) struct BusMetrics {
    /// Messages published to other nodes, by kind.
    pub(super) sent: Family<[(&'static str, &'static str); 1], Counter>,
    /// Messages received from other nodes, by kind.
    pub(super) received: Family<[(&'static str, &'static str); 1], Counter>,
    /// `sent` and `received` for kind "message" (relays), looked up once: they count every
    /// relayed message.
    sent_messages: Counter,
    received_messages: Counter,
    /// Messages that could not be handed to Redis (queue full or Redis unreachable).
    pub(super) dropped: Counter,
    /// Nodes seen leaving the registry without saying goodbye.
    pub(super) failovers: Counter,
    /// Sessions of dead nodes resumed here.
    pub(super) adopted: Counter,
    /// SFU rooms this node found served by a dead node and moved (or found moved).
    pub(super) sfu_rooms_moved: Counter,
    /// Time from a batch being queued to Redis acknowledging it.
    pub(super) publish_seconds: Histogram,
    /// Time from a relayed message's publication on its node to its arrival here.
    pub(super) pubsub_lag_seconds: Histogram,
}

impl BusMetrics {
    /// Counts a message of `kind` published to another node.
    pub(super) fn count_sent(&self, kind: &'static str) {
        match kind {
            "message" => self.sent_messages.inc(),
            _ => self.sent.get_or_create(&[("kind", kind)]).inc(),
        };
    }

    /// Counts a message of `kind` received from another node.
    pub(super) fn count_received(&self, kind: &'static str) {
        match kind {
            "message" => self.received_messages.inc(),
            _ => self.received.get_or_create(&[("kind", kind)]).inc(),
        };
    }

    pub(super) fn register(r: &mut Metrics) -> BusMetrics {
        let (sent, received) = (
            Family::<[(&'static str, &'static str); 1], Counter>::default(),
            Family::<[(&'static str, &'static str); 1], Counter>::default(),
        );
        let sent_messages = sent.get_or_create(&[("kind", "message")]).clone();
        let received_messages = received.get_or_create(&[("kind", "message")]).clone();
        let m = BusMetrics {
            sent_messages,
            received_messages,
            sent,
            received,
            dropped: Counter::default(),
            failovers: Counter::default(),
            adopted: Counter::default(),
            sfu_rooms_moved: Counter::default(),
            pubsub_lag_seconds: Histogram::new([
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 2.0,
            ]),
            publish_seconds: Histogram::new([
                0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.5,
            ]),
        };
        r.register(
            "cluster_messages_sent",
            "Messages sent to other nodes, by kind",
            m.sent.clone(),
        );
        r.register(
            "cluster_messages_received",
            "Messages received from other nodes, by kind",
            m.received.clone(),
        );
        r.register(
            "cluster_messages_dropped",
            "Messages for other nodes that could not be handed to Redis",
            m.dropped.clone(),
        );
        r.register(
            "cluster_failovers",
            "Nodes that left the registry without saying goodbye",
            m.failovers.clone(),
        );
        r.register(
            "cluster_sessions_adopted",
            "Sessions of dead nodes resumed on this node",
            m.adopted.clone(),
        );
        r.register(
            "cluster_sfu_rooms_moved",
            "SFU rooms whose node died, moved to another node's SFU",
            m.sfu_rooms_moved.clone(),
        );
        r.register(
            "cluster_pubsub_lag_seconds",
            "Time from a relayed message's publication on another node to its arrival here \
             (millisecond clocks of both nodes)",
            m.pubsub_lag_seconds.clone(),
        );
        r.register(
            "cluster_publish_seconds",
            "Time from queueing a batch for other nodes to Redis acknowledging it",
            m.publish_seconds.clone(),
        );
        m
    }
}
