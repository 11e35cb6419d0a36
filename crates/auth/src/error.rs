use thiserror::Error;

/// Why a ticket was refused. Each variant has a stable [`AuthError::reason`] label used in
/// metrics and in the JSON `error` field; messages never contain secrets or token contents.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum AuthError {
    #[error("no token was presented: send `Authorization: Bearer <token>` (signaling WebSocket and GET /v1/ice-servers also take `?access_token=<token>`)")]
    MissingToken,
    #[error("token is larger than 8 KiB")]
    Oversized,
    #[error("token is not a well-formed JWT")]
    Malformed,
    #[error("alg \"none\" is not accepted")]
    AlgNone,
    #[error("token algorithm is not supported")]
    UnsupportedAlg,
    #[error("token names a key id that is not in the key ring")]
    UnknownKid,
    #[error("token signature does not verify")]
    BadSignature,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token lifetime (exp - iat, or exp - now) is longer than this service accepts")]
    LifetimeTooLong,
    #[error("token issuer is not accepted")]
    BadIssuer,
    #[error("token audience does not include this service")]
    BadAudience,
    #[error("token lacks a required claim: {0}")]
    MissingClaim(&'static str),
    #[error("token claim {0} is too large: {limit}", limit = crate::jwt::claim_limits::describe(.0))]
    ClaimTooLarge(&'static str),
    #[error("token lacks the required scope: {0}")]
    MissingScope(&'static str),
    #[error("token is not valid for this room")]
    ForbiddenRoom,
    #[error("token has already been used to open a session")]
    Replayed,
    #[error("too many live sessions to record another; try again shortly")]
    ReplayGuardFull,
    #[error("internal error while checking the token")]
    Internal,
}

impl AuthError {
    /// Stable label for metrics and API errors.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::MissingToken => "missing_token",
            AuthError::Oversized => "oversized",
            AuthError::Malformed => "malformed",
            AuthError::AlgNone => "alg_none",
            AuthError::UnsupportedAlg => "unsupported_alg",
            AuthError::UnknownKid => "unknown_kid",
            AuthError::BadSignature => "bad_signature",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::LifetimeTooLong => "lifetime_too_long",
            AuthError::BadIssuer => "bad_issuer",
            AuthError::BadAudience => "bad_audience",
            AuthError::MissingClaim(_) => "missing_claim",
            AuthError::ClaimTooLarge(_) => "claim_too_large",
            AuthError::MissingScope(_) => "missing_scope",
            AuthError::ForbiddenRoom => "forbidden_room",
            AuthError::Replayed => "replayed",
            AuthError::ReplayGuardFull => "replay_guard_full",
            AuthError::Internal => "internal",
        }
    }

    /// HTTP status: 403 when the ticket is genuine but not enough, 401 otherwise.
    pub fn http_status(&self) -> u16 {
        match self {
            AuthError::MissingScope(_) | AuthError::ForbiddenRoom => 403,
            AuthError::ReplayGuardFull => 503,
            AuthError::Internal => 500,
            _ => 401,
        }
    }

    /// Every reason label, so metrics can pre-register each series at zero.
    pub const ALL_REASONS: &'static [&'static str] = &[
        "missing_token",
        "oversized",
        "malformed",
        "alg_none",
        "unsupported_alg",
        "unknown_kid",
        "bad_signature",
        "expired",
        "not_yet_valid",
        "lifetime_too_long",
        "bad_issuer",
        "bad_audience",
        "missing_claim",
        "claim_too_large",
        "missing_scope",
        "forbidden_room",
        "replayed",
        "replay_guard_full",
        "internal",
    ];
}

/// A key ring or auth config that cannot be used; names the key and never its secret.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("auth.keys is empty: at least one signing key is required")]
    NoKeys,
    #[error("auth.keys[{kid}]: {message}")]
    Key { kid: String, message: String },
    #[error("auth.keys: kid {0:?} appears twice")]
    DuplicateKid(String),
    #[error("auth.{key}: {message}")]
    Setting { key: &'static str, message: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_is_listed_and_refusals_are_401() {
        let all = [
            AuthError::MissingToken,
            AuthError::Oversized,
            AuthError::Malformed,
            AuthError::AlgNone,
            AuthError::UnsupportedAlg,
            AuthError::UnknownKid,
            AuthError::BadSignature,
            AuthError::Expired,
            AuthError::NotYetValid,
            AuthError::LifetimeTooLong,
            AuthError::BadIssuer,
            AuthError::BadAudience,
            AuthError::MissingClaim("sub"),
            AuthError::ClaimTooLarge("sub"),
            AuthError::MissingScope("webrtc"),
            AuthError::ForbiddenRoom,
            AuthError::Replayed,
            AuthError::ReplayGuardFull,
            AuthError::Internal,
        ];
        assert_eq!(all.len(), AuthError::ALL_REASONS.len());
        for e in &all {
            assert!(AuthError::ALL_REASONS.contains(&e.reason()), "{e:?}");
        }
        assert_eq!(AuthError::LifetimeTooLong.http_status(), 401);
        assert_eq!(AuthError::ClaimTooLarge("sub").http_status(), 401);
        let m = AuthError::ClaimTooLarge("sub").to_string();
        assert!(m.contains("sub") && m.contains("256"), "{m}");
    }
}
