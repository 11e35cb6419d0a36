//! The Prometheus registry (`/metrics`, names prefixed `switchboard_`) and the ticket office's
//! own series. Components register their metrics into the registry while the server is built;
//! after that it is frozen behind an `Arc` and only encoded.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

pub fn new_registry() -> Registry {
    Registry::with_prefix("switchboard")
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ViaLabel {
    pub via: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabel {
    pub limit: &'static str,
}

/// Ticket-office series.
#[derive(Clone)]
pub struct OfficeMetrics {
    pub tokens_minted: Family<ViaLabel, Counter>,
    pub logins: Family<ResultLabel, Counter>,
    pub limit_rejections: Family<LimitLabel, Counter>,
    pub replay_entries: Gauge,
}

impl OfficeMetrics {
    pub fn register(r: &mut Registry) -> Self {
        let m = OfficeMetrics {
            tokens_minted: Default::default(),
            logins: Default::default(),
            limit_rejections: Default::default(),
            replay_entries: Default::default(),
        };
        for via in ["api_key", "session", "anonymous"] {
            let _ = m.tokens_minted.get_or_create(&ViaLabel { via });
        }
        for result in ["ok", "bad_credentials", "rate_limited"] {
            let _ = m.logins.get_or_create(&ResultLabel { result });
        }
        r.register(
            "tokens_minted",
            "Tickets minted, by how the caller authenticated",
            m.tokens_minted.clone(),
        );
        r.register("logins", "Login attempts, by result", m.logins.clone());
        r.register(
            "limit_rejections",
            "Requests refused because a configured bound was hit, by limit",
            m.limit_rejections.clone(),
        );
        r.register(
            "replay_guard_entries",
            "Ticket ids currently remembered by the replay guard",
            m.replay_entries.clone(),
        );
        m
    }
}
