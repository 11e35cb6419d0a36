//! TURN REST credentials, coturn's `use-auth-secret` scheme:
//! username = `<expiry unix seconds>[:<user>]`, password = base64(HMAC-SHA1(secret, username)).
//! Stateless: any TURN server holding the same secret (ours or a coturn) accepts them.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha1::Sha1;

/// Credentials as handed to clients (`/v1/ice-servers`, `switchboard turn-credentials`).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct TurnCredentials {
    pub username: String,
    pub credential: String,
    /// Seconds the credentials stay valid.
    pub ttl: u64,
}

/// The password for a REST username.
pub fn password(secret: &[u8], username: &str) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret).expect("hmac takes any key length");
    mac.update(username.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Mints credentials for `user` valid for `ttl_secs` from `now`.
pub fn mint(secret: &[u8], user: &str, ttl_secs: u64, now: u64) -> TurnCredentials {
    let username = if user.is_empty() {
        (now + ttl_secs).to_string()
    } else {
        format!("{}:{}", now + ttl_secs, user)
    };
    TurnCredentials {
        credential: password(secret, &username),
        username,
        ttl: ttl_secs,
    }
}

/// Why a REST username is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestUsernameError {
    /// The leading timestamp is missing or not a number.
    Malformed,
    /// The timestamp is in the past.
    Expired,
}

/// Checks the username's expiry (the part before the first ':'), as coturn does.
/// Returns the expiry on success. The password check is [`password`] against each secret.
pub fn check_username(username: &str, now: u64) -> Result<u64, RestUsernameError> {
    let ts = username.split(':').next().unwrap_or("");
    let expiry: u64 = ts.parse().map_err(|_| RestUsernameError::Malformed)?;
    if expiry < now {
        return Err(RestUsernameError::Expired);
    }
    Ok(expiry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_coturn_reference_computation() {
        // Reference value computed with Python:
        // base64.b64encode(hmac.new(b"secret", b"1700000000:alice", hashlib.sha1).digest())
        assert_eq!(
            password(b"secret", "1700000000:alice"),
            "d8soP47RbdIKLDUOpnJPVQyq5Ts="
        );
        let c = mint(b"secret", "alice", 3600, 1_699_996_400);
        assert_eq!(c.username, "1700000000:alice");
        assert_eq!(c.credential, "d8soP47RbdIKLDUOpnJPVQyq5Ts=");
    }

    #[test]
    fn username_expiry() {
        assert_eq!(check_username("100:bob", 50), Ok(100));
        assert_eq!(check_username("100", 101), Err(RestUsernameError::Expired));
        assert_eq!(check_username("bob", 1), Err(RestUsernameError::Malformed));
    }
}
