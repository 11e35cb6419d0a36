//! Long-term credentials (RFC 8489 §9.2): realm, stateless nonces that go stale, the MD5 key
//! and the SHA-256 password algorithm, coturn's TURN REST usernames (several secrets at once,
//! so a secret can rotate) and optional static users.
//!
//! Nonces hold no server state: `obMatJos2` + security-feature bits (RFC 8489 §9.2: password
//! algorithms supported), then the expiry in hex and a truncated HMAC over expiry and client
//! IP under a per-process key. A nonce from another client IP, or forged, is refused; an
//! expired one answers 438 with a fresh nonce.

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha1::Sha1;
use sha2::Sha256;
use std::collections::HashMap;
use std::net::IpAddr;
use switchboard_auth::turn_rest;

/// RFC 8489 nonce cookie with the "password algorithms" feature bit set (base64 of 0x800000).
pub const NONCE_COOKIE: &str = "obMatJos2gAAA";
pub const ALG_MD5: u16 = 0x0001;
pub const ALG_SHA256: u16 = 0x0002;

/// The PASSWORD-ALGORITHMS value the server offers (MD5 first: every client speaks it).
pub const PASSWORD_ALGORITHMS_VALUE: [u8; 8] = [0, 1, 0, 0, 0, 2, 0, 0];

/// A derived long-term key (16 bytes MD5 or 32 bytes SHA-256).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Key {
    bytes: [u8; 32],
    len: u8,
    /// Which integrity attribute the client used (responses use the same).
    pub sha256_integrity: bool,
}

impl Key {
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

/// Derives the long-term key for `algorithm`.
pub fn derive_key(algorithm: u16, username: &str, realm: &str, password: &str) -> Key {
    let mut bytes = [0u8; 32];
    let len = if algorithm == ALG_SHA256 {
        credentials_hash::<Sha256>(username, realm, password, &mut bytes)
    } else {
        credentials_hash::<Md5>(username, realm, password, &mut bytes)
    };
    Key {
        bytes,
        len: len as u8,
        sha256_integrity: false,
    }
}

/// `D(username ":" realm ":" password)`, the long-term key of either algorithm, written to
/// the front of `bytes`; returns its length.
fn credentials_hash<D: Digest>(
    username: &str,
    realm: &str,
    password: &str,
    bytes: &mut [u8; 32],
) -> usize {
    let digest = D::new()
        .chain_update(username)
        .chain_update(":")
        .chain_update(realm)
        .chain_update(":")
        .chain_update(password)
        .finalize();
    bytes[..digest.len()].copy_from_slice(&digest);
    digest.len()
}

/// Outcome of checking a nonce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NonceCheck {
    Valid,
    Stale,
    Invalid,
}

/// Issues and checks nonces.
pub struct NonceIssuer {
    key: [u8; 32],
    lifetime_secs: u64,
}

impl NonceIssuer {
    pub fn new(key: [u8; 32], lifetime_secs: u64) -> Self {
        NonceIssuer {
            key,
            lifetime_secs: lifetime_secs.max(1),
        }
    }

    fn tag(&self, expiry: u64, ip: IpAddr) -> [u8; 8] {
        let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(&self.key).expect("any key length");
        mac.update(&expiry.to_be_bytes());
        match ip {
            IpAddr::V4(v4) => mac.update(&v4.octets()),
            IpAddr::V6(v6) => mac.update(&v6.octets()),
        }
        let out = mac.finalize().into_bytes();
        let mut t = [0u8; 8];
        t.copy_from_slice(&out[..8]);
        t
    }

    /// A fresh nonce for a client at `ip` (45 ASCII bytes).
    pub fn issue(&self, now_unix: u64, ip: IpAddr) -> String {
        let expiry = now_unix + self.lifetime_secs;
        let tag = self.tag(expiry, ip);
        let mut s = String::with_capacity(45);
        s.push_str(NONCE_COOKIE);
        s.push_str(&format!("{expiry:016x}"));
        for b in tag {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }

    pub fn check(&self, nonce: &[u8], now_unix: u64, ip: IpAddr) -> NonceCheck {
        let Ok(s) = std::str::from_utf8(nonce) else {
            return NonceCheck::Invalid;
        };
        let Some(rest) = s.strip_prefix(NONCE_COOKIE) else {
            return NonceCheck::Invalid;
        };
        if rest.len() != 32 || !rest.is_ascii() {
            return NonceCheck::Invalid;
        }
        let Ok(expiry) = u64::from_str_radix(&rest[..16], 16) else {
            return NonceCheck::Invalid;
        };
        let mut tag = [0u8; 8];
        for (i, t) in tag.iter_mut().enumerate() {
            match u8::from_str_radix(&rest[16 + 2 * i..18 + 2 * i], 16) {
                Ok(b) => *t = b,
                Err(_) => return NonceCheck::Invalid,
            }
        }
        let want = self.tag(expiry, ip);
        if !constant_time_eq(&tag, &want) {
            return NonceCheck::Invalid;
        }
        if expiry < now_unix {
            NonceCheck::Stale
        } else {
            NonceCheck::Valid
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why credentials were refused (the `reason` label of `switchboard_turn_auth_failures_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthFailure {
    /// Request without integrity (the normal first round trip; answered 401, not counted).
    Missing,
    /// USERNAME/REALM/NONCE absent or malformed.
    Malformed,
    WrongRealm,
    BadNonce,
    StaleNonce,
    UnknownUser,
    Expired,
    BadIntegrity,
    /// PASSWORD-ALGORITHM(S) missing, unknown, or not what the server offered (bid-down).
    BadAlgorithm,
}

impl AuthFailure {
    pub fn label(self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing",
            AuthFailure::Malformed => "malformed",
            AuthFailure::WrongRealm => "wrong_realm",
            AuthFailure::BadNonce => "bad_nonce",
            AuthFailure::StaleNonce => "stale_nonce",
            AuthFailure::UnknownUser => "unknown_user",
            AuthFailure::Expired => "expired",
            AuthFailure::BadIntegrity => "bad_integrity",
            AuthFailure::BadAlgorithm => "bad_algorithm",
        }
    }
}

/// Where passwords come from: static users first, then TURN REST secrets.
pub struct Credentials {
    pub realm: String,
    pub secrets: Vec<Vec<u8>>,
    pub users: HashMap<String, String>,
}

impl Credentials {
    /// Candidate passwords for `username` at `now_unix` (one per secret for REST users).
    pub fn passwords(
        &self,
        username: &str,
        now_unix: u64,
        out: &mut Vec<String>,
    ) -> Result<(), AuthFailure> {
        out.clear();
        if let Some(p) = self.users.get(username) {
            out.push(p.clone());
            return Ok(());
        }
        if self.secrets.is_empty() {
            return Err(AuthFailure::UnknownUser);
        }
        match turn_rest::check_username(username, now_unix) {
            Ok(_) => {}
            Err(turn_rest::RestUsernameError::Expired) => return Err(AuthFailure::Expired),
            Err(turn_rest::RestUsernameError::Malformed) => return Err(AuthFailure::UnknownUser),
        }
        for s in &self.secrets {
            out.push(turn_rest::password(s, username));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonce_lifecycle() {
        let n = NonceIssuer::new([9; 32], 600);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let nonce = n.issue(1000, ip);
        assert_eq!(nonce.len(), 45);
        assert_eq!(n.check(nonce.as_bytes(), 1500, ip), NonceCheck::Valid);
        assert_eq!(n.check(nonce.as_bytes(), 1601, ip), NonceCheck::Stale);
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(n.check(nonce.as_bytes(), 1500, other), NonceCheck::Invalid);
        assert_eq!(n.check(b"obMatJos2gAAAzz", 1500, ip), NonceCheck::Invalid);
        let mut forged = nonce.clone().into_bytes();
        forged[20] = if forged[20] == b'0' { b'1' } else { b'0' };
        assert_eq!(n.check(&forged, 1500, ip), NonceCheck::Invalid);
    }

    #[test]
    fn rest_passwords_for_every_secret() {
        let c = Credentials {
            realm: "r".into(),
            secrets: vec![b"new".to_vec(), b"old".to_vec()],
            users: HashMap::from([("alice".to_string(), "pw".to_string())]),
        };
        let mut out = Vec::new();
        c.passwords("alice", 0, &mut out).unwrap();
        assert_eq!(out, vec!["pw".to_string()]);
        c.passwords("2000:bob", 1000, &mut out).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[1], turn_rest::password(b"old", "2000:bob"));
        assert_eq!(
            c.passwords("999:bob", 1000, &mut out),
            Err(AuthFailure::Expired)
        );
        assert_eq!(
            c.passwords("carol", 1000, &mut out),
            Err(AuthFailure::UnknownUser)
        );
    }

    #[test]
    fn md5_key_matches_rfc5769() {
        // RFC 5769 §2.4: username "マトリックス" (SASLprep'd), realm "example.org", password "TheMatrIX".
        let k = derive_key(
            ALG_MD5,
            "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}",
            "example.org",
            "TheMatrIX",
        );
        assert_eq!(k.as_bytes().len(), 16);
    }
}
