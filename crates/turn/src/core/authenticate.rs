//! Long-term credential authentication of a request (RFC 8489 §9.2: MD5 or SHA-256 keys,
//! MESSAGE-INTEGRITY or MESSAGE-INTEGRITY-SHA256; static users and TURN REST usernames):
//! stateless nonce, realm, password algorithm, then the integrity check with the
//! allocation's cached key or with each password the username may have. A refused request
//! gets 400, or a 401/438 challenge with a fresh nonce.

use super::auth::{
    derive_key, AuthFailure, Key, NonceCheck, ALG_MD5, ALG_SHA256, PASSWORD_ALGORITHMS_VALUE,
};
use super::client::ClientId;
use super::stun::{attr, Class, Message, MessageWriter};
use super::turn_core::TurnCore;
use std::time::Instant;

/// What [`TurnCore::authenticate`] decided.
pub(super) enum Authed<'a> {
    /// The key that verified the request (it seals the response) and the username.
    Ok(Key, &'a str),
    /// A response (401/400/438) has been written.
    Refused,
}

impl TurnCore {
    /// Answers a request that failed authentication for `why` (and counts it, unless the
    /// client simply sent no credentials yet): 400 for a malformed request or an unknown
    /// password algorithm, otherwise a 438 (stale nonce) or 401 challenge with the realm, a
    /// fresh nonce for the client's IP and the password algorithms offered.
    fn refuse(
        &self,
        now: Instant,
        client: &ClientId,
        m: &Message<'_>,
        why: AuthFailure,
        out: &mut Vec<u8>,
    ) {
        if why != AuthFailure::Missing {
            self.metrics.auth_failure(why.label());
        }
        let (code, reason) = match why {
            AuthFailure::Malformed | AuthFailure::BadAlgorithm => {
                MessageWriter::new(out, m.method, Class::Error, &m.transaction_id)
                    .error(400, "Bad Request")
                    .fingerprint();
                return;
            }
            AuthFailure::StaleNonce => (438, "Stale Nonce"),
            _ => (401, "Unauthorized"),
        };
        out.clear();
        let nonce = self.nonces.issue(self.unix(now), client.remote.ip());
        MessageWriter::new(out, m.method, Class::Error, &m.transaction_id)
            .error(code, reason)
            .attr(attr::REALM, self.cfg.realm.as_bytes())
            .attr(attr::NONCE, nonce.as_bytes())
            .attr(attr::PASSWORD_ALGORITHMS, &PASSWORD_ALGORITHMS_VALUE)
            .fingerprint();
    }

    /// Checks the request's long-term credentials; on refusal the response is in `out`.
    pub(super) fn authenticate<'a>(
        &mut self,
        now: Instant,
        client: &ClientId,
        m: &Message<'a>,
        out: &mut Vec<u8>,
    ) -> Authed<'a> {
        if !m.has_integrity() && !m.has_integrity_sha256() {
            self.refuse(now, client, m, AuthFailure::Missing, out);
            return Authed::Refused;
        }
        let fields = (
            m.get(attr::USERNAME)
                .and_then(|u| std::str::from_utf8(u).ok()),
            m.get(attr::REALM),
            m.get(attr::NONCE),
        );
        let (Some(username), Some(realm), Some(nonce)) = fields else {
            self.refuse(now, client, m, AuthFailure::Malformed, out);
            return Authed::Refused;
        };
        if realm != self.cfg.realm.as_bytes() {
            self.refuse(now, client, m, AuthFailure::WrongRealm, out);
            return Authed::Refused;
        }
        let unix = self.unix(now);
        match self.nonces.check(nonce, unix, client.remote.ip()) {
            NonceCheck::Valid => {}
            NonceCheck::Stale => {
                self.refuse(now, client, m, AuthFailure::StaleNonce, out);
                return Authed::Refused;
            }
            NonceCheck::Invalid => {
                self.refuse(now, client, m, AuthFailure::BadNonce, out);
                return Authed::Refused;
            }
        }
        let algorithm = match (
            m.get(attr::PASSWORD_ALGORITHM),
            m.get(attr::PASSWORD_ALGORITHMS),
        ) {
            (None, None) => ALG_MD5,
            (Some(a), Some(list)) if list == PASSWORD_ALGORITHMS_VALUE && a.len() >= 4 => {
                match u16::from_be_bytes([a[0], a[1]]) {
                    ALG_MD5 => ALG_MD5,
                    ALG_SHA256 => ALG_SHA256,
                    _ => {
                        self.refuse(now, client, m, AuthFailure::BadAlgorithm, out);
                        return Authed::Refused;
                    }
                }
            }
            _ => {
                self.refuse(now, client, m, AuthFailure::BadAlgorithm, out);
                return Authed::Refused;
            }
        };
        let sha256 = m.has_integrity_sha256();
        let verify = |k: &Key| {
            if sha256 {
                m.check_integrity_sha256(k.as_bytes())
            } else {
                m.check_integrity_sha1(k.as_bytes())
            }
        };
        // Fast path: the allocation's cached key (REST expiry is still enforced).
        if let Some(a) = self.allocations.get(client) {
            let key_alg = if a.key.as_bytes().len() == 32 {
                ALG_SHA256
            } else {
                ALG_MD5
            };
            if &*a.username == username && key_alg == algorithm && verify(&a.key) {
                if !self.creds.users.contains_key(username)
                    && switchboard_auth::turn_rest::check_username(username, unix).is_err()
                {
                    self.refuse(now, client, m, AuthFailure::Expired, out);
                    return Authed::Refused;
                }
                let mut k = a.key;
                k.sha256_integrity = sha256;
                return Authed::Ok(k, username);
            }
        }
        let mut passwords = std::mem::take(&mut self.passwords);
        let r = self.creds.passwords(username, unix, &mut passwords);
        let found = match r {
            Err(why) => Err(why),
            Ok(()) => passwords
                .iter()
                .map(|p| derive_key(algorithm, username, &self.cfg.realm, p))
                .find(|k| verify(k))
                .ok_or(AuthFailure::BadIntegrity),
        };
        passwords.clear();
        self.passwords = passwords;
        match found {
            Ok(mut k) => {
                k.sha256_integrity = sha256;
                Authed::Ok(k, username)
            }
            Err(why) => {
                self.refuse(now, client, m, why, out);
                Authed::Refused
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::core::test_support::allocated;

    /// The candidate passwords of a request are looked up into scratch space that is kept,
    /// empty, for the next request.
    #[test]
    fn the_password_scratch_space_is_kept_empty_between_requests() {
        let (h, _, _) = allocated();
        assert!(h.core.passwords.is_empty());
        assert!(h.core.passwords.capacity() > 0, "kept for the next lookup");
    }
}
