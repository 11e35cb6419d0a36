//! The check every session-opening edge runs: verify the ticket, require a scope, optionally
//! consume its `jti`, and count each refusal by reason in `switchboard_auth_failures_total`.

use crate::{AuthError, Claims, KeyRing, ReplayGuard, Scope};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use std::sync::Arc;

/// The reason label of `switchboard_auth_failures_total`.
type Label = [(&'static str, &'static str); 1];

/// Shared by HTTP, signaling, gRPC: one place decides whether a ticket is good.
pub struct TicketGate {
    pub keyring: Arc<KeyRing>,
    pub replay: Arc<dyn ReplayGuard>,
    failures: Family<Label, Counter>,
    verified: Counter,
}

impl TicketGate {
    pub fn new(
        keyring: Arc<KeyRing>,
        replay: Arc<dyn ReplayGuard>,
        registry: &mut Registry,
    ) -> Self {
        let failures = Family::<Label, Counter>::default();
        for r in AuthError::ALL_REASONS {
            let _ = failures.get_or_create(&[("reason", r)]);
        }
        registry.register(
            "auth_failures",
            "Tickets and credentials refused, by reason",
            failures.clone(),
        );
        let verified = Counter::default();
        registry.register(
            "auth_verified",
            "Tickets verified successfully",
            verified.clone(),
        );
        TicketGate {
            keyring,
            replay,
            failures,
            verified,
        }
    }

    /// Counts a refusal decided elsewhere (e.g. a bad login) under `reason`.
    pub fn count_failure(&self, err: &AuthError) {
        self.failures
            .get_or_create(&[("reason", err.reason())])
            .inc();
    }

    /// Verifies `token` at `now` and requires `scope`. Does not consume the `jti`.
    pub fn check(&self, token: &str, scope: Scope, now: u64) -> Result<Claims, AuthError> {
        let r = self
            .keyring
            .verify(token, now)
            .and_then(|c| c.require(scope).map(|_| c));
        match &r {
            Ok(_) => {
                self.verified.inc();
            }
            Err(e) => self.count_failure(e),
        };
        r
    }

    /// Consumes the ticket's `jti`: the first session wins, a replay is refused and counted.
    pub async fn consume(&self, claims: &Claims, now: u64) -> Result<(), AuthError> {
        // `exp` is bounded by the lifetime check in `verify`; saturate anyway so that claims
        // built by hand cannot wrap the expiry into the past.
        let forget_after = claims
            .exp
            .saturating_add(self.keyring.policy().leeway.as_secs());
        let r = self
            .replay
            .claim(&claims.iss, &claims.jti, forget_after, now)
            .await
            .map_err(AuthError::from);
        if let Err(e) = &r {
            self.count_failure(e);
        }
        r
    }

    /// `check` then `consume`: what an edge that opens a session runs.
    pub async fn open_session(
        &self,
        token: &str,
        scope: Scope,
        now: u64,
    ) -> Result<Claims, AuthError> {
        let c = self.check(token, scope, now)?;
        self.consume(&c, now).await?;
        Ok(c)
    }
}
