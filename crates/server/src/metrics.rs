//! The Prometheus registry (`/metrics`, names prefixed `switchboard_`) and the ticket office's
//! own series. Components register their metrics into the registry while the server is built;
//! after that it is frozen behind an `Arc` and only encoded.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// One label of a metric family: `[("reason", "expired")]`. Label values are a bounded set of
/// static strings, so no label can grow the series without bound.
pub type Label = [(&'static str, &'static str); 1];

pub fn new_registry() -> Registry {
    Registry::with_prefix("switchboard")
}

/// `logins_total{result}` values.
pub const LOGIN_RESULTS: [&str; 5] = ["ok", "bad_credentials", "invalid", "rate_limited", "busy"];
/// `limit_rejections_total{limit}` values for logins, one per reason a login is refused before
/// its password is checked.
pub const LOGIN_LIMITS: [&str; 5] = [
    "login_invalid",
    "login_ip",
    "login_ip_user",
    "login_global",
    "login_hash_busy",
];
/// Ticket-office series.
#[derive(Clone)]
pub struct OfficeMetrics {
    pub tokens_minted: Family<Label, Counter>,
    pub logins: Family<Label, Counter>,
    pub limit_rejections: Family<Label, Counter>,
    pub replay_entries: Gauge,
    /// Entries in the login limiter's tables (`ip`, `ip_user`, `trusted`), set at each scrape.
    pub login_limiter_entries: Family<Label, Gauge>,
    /// Password checks running now, set at each scrape.
    pub login_hashes_running: Gauge,
    /// Logins waiting for a free password check now, set at each scrape.
    pub login_hashes_waiting: Gauge,
}

impl OfficeMetrics {
    pub fn register(r: &mut Registry) -> Self {
        let m = OfficeMetrics {
            tokens_minted: Default::default(),
            logins: Default::default(),
            limit_rejections: Default::default(),
            replay_entries: Default::default(),
            login_limiter_entries: Default::default(),
            login_hashes_running: Default::default(),
            login_hashes_waiting: Default::default(),
        };
        for via in ["api_key", "session", "anonymous"] {
            let _ = m.tokens_minted.get_or_create(&[("via", via)]);
        }
        for result in LOGIN_RESULTS {
            let _ = m.logins.get_or_create(&[("result", result)]);
        }
        for limit in LOGIN_LIMITS {
            let _ = m.limit_rejections.get_or_create(&[("limit", limit)]);
        }
        for table in ["ip", "ip_user", "trusted"] {
            let _ = m.login_limiter_entries.get_or_create(&[("table", table)]);
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
            "login_limiter_entries",
            "Entries in the login limiter's tables (per IP, per IP and username, addresses in good standing)",
            m.login_limiter_entries.clone(),
        );
        r.register(
            "login_hashes_running",
            "Password checks running now",
            m.login_hashes_running.clone(),
        );
        r.register(
            "login_hashes_waiting",
            "Logins waiting for a free password check",
            m.login_hashes_waiting.clone(),
        );
        r.register(
            "replay_guard_entries",
            "Ticket ids currently remembered by the replay guard",
            m.replay_entries.clone(),
        );
        m
    }
}
