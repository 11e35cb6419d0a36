//! The key ring: signs with the first key, verifies with any. JWT compact serialization is done
//! here directly (header.payload.signature, base64url without padding) so that the rules are
//! explicit: `alg` must match the key it names, `none` is refused, `crit` is refused, and a token
//! without `kid` (PyJWT's default) is tried against every key of its algorithm.

use crate::config::{AuthConfig, KeyConfig};
use crate::error::{AuthError, ConfigError};
use crate::jwt::claim_limits::{
    MAX_AUD_BYTES, MAX_AUD_VALUES, MAX_ISS_BYTES, MAX_JTI_BYTES, MAX_ROOM_BYTES, MAX_SCOPE_ENTRIES,
    MAX_SUB_BYTES,
};
use crate::jwt::{Audience, Claims, CountedScopes, Header, MintRequest};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey};
use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;
use std::time::Duration;

type HmacSha256 = Hmac<Sha256>;

/// Signature algorithms the ring supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    Hs256,
    EdDsa,
}

impl Algorithm {
    pub fn jwt_name(self) -> &'static str {
        match self {
            Algorithm::Hs256 => "HS256",
            Algorithm::EdDsa => "EdDSA",
        }
    }

    fn from_jwt(name: &str) -> Option<Algorithm> {
        match name {
            "HS256" => Some(Algorithm::Hs256),
            "EdDSA" => Some(Algorithm::EdDsa),
            _ => None,
        }
    }
}

enum Material {
    // The keyed HMAC state is built once; cloning it per token skips the key schedule.
    Hs256(HmacSha256),
    EdSign(Box<SigningKey>, VerifyingKey),
    EdVerify(VerifyingKey),
}

struct Key {
    kid: String,
    alg: Algorithm,
    material: Material,
    /// base64url of this key's JWT header, precomputed for minting.
    header_b64: String,
}

/// What a verified token must satisfy besides its signature.
#[derive(Clone, Debug)]
pub struct VerifyPolicy {
    pub issuers: Vec<String>,
    pub audience: String,
    pub leeway: Duration,
    /// Longest accepted lifetime, `exp - iat` and `exp - now` (each plus `leeway`).
    pub max_lifetime: Duration,
}

/// Keys plus issuing policy. Cheap to share behind an `Arc`.
pub struct KeyRing {
    keys: Vec<Key>,
    issuer: String,
    policy: VerifyPolicy,
    default_ttl: Duration,
    max_ttl: Duration,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<_> = self.keys.iter().map(|k| (&k.kid, k.alg)).collect();
        f.debug_struct("KeyRing")
            .field("keys", &kids)
            .field("policy", &self.policy)
            .finish()
    }
}

#[derive(Deserialize)]
struct RawClaims {
    iss: Option<String>,
    sub: Option<String>,
    aud: Option<Audience>,
    jti: Option<String>,
    iat: Option<f64>,
    exp: Option<f64>,
    nbf: Option<f64>,
    #[serde(default)]
    scope: CountedScopes,
    room: Option<String>,
}

fn b64(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

fn unb64(part: &str) -> Result<Vec<u8>, AuthError> {
    URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| AuthError::Malformed)
}

/// A fresh random ticket id: 128 bits, base64url.
pub(crate) fn random_id() -> String {
    b64(&rand::random::<[u8; 16]>())
}

fn read_secret(kc: &KeyConfig) -> Result<Option<Vec<u8>>, ConfigError> {
    let err = |message: String| ConfigError::Key {
        kid: kc.kid.clone(),
        message,
    };
    let sources = [
        kc.secret.is_some(),
        kc.secret_file.is_some(),
        kc.secret_env.is_some(),
    ]
    .iter()
    .filter(|x| **x)
    .count();
    if sources > 1 {
        return Err(err("set only one of secret, secret_file, secret_env".into()));
    }
    if let Some(s) = &kc.secret {
        return Ok(Some(s.as_bytes().to_vec()));
    }
    if let Some(path) = &kc.secret_file {
        let s = std::fs::read_to_string(path)
            .map_err(|e| err(format!("cannot read secret_file {path:?}: {e}")))?;
        return Ok(Some(s.trim_end_matches(['\n', '\r']).as_bytes().to_vec()));
    }
    if let Some(var) = &kc.secret_env {
        let s = std::env::var(var).map_err(|_| {
            err(format!(
                "environment variable {var} (secret_env) is not set"
            ))
        })?;
        return Ok(Some(s.into_bytes()));
    }
    Ok(None)
}

fn read_pem(
    inline: &Option<String>,
    file: &Option<String>,
    kid: &str,
) -> Result<Option<String>, ConfigError> {
    match (inline, file) {
        (Some(p), None) => Ok(Some(p.clone())),
        (None, Some(path)) => {
            std::fs::read_to_string(path)
                .map(Some)
                .map_err(|e| ConfigError::Key {
                    kid: kid.into(),
                    message: format!("cannot read {path:?}: {e}"),
                })
        }
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(ConfigError::Key {
            kid: kid.into(),
            message: "set the key inline or as a file, not both".into(),
        }),
    }
}

impl Key {
    fn from_config(kc: &KeyConfig) -> Result<Key, ConfigError> {
        let err = |message: &str| ConfigError::Key {
            kid: kc.kid.clone(),
            message: message.into(),
        };
        if kc.kid.is_empty() {
            return Err(err("kid must not be empty"));
        }
        let alg = match kc.algorithm.as_str() {
            "" | "HS256" => Algorithm::Hs256,
            "EdDSA" | "Ed25519" => Algorithm::EdDsa,
            other => {
                return Err(ConfigError::Key {
                    kid: kc.kid.clone(),
                    message: format!("algorithm {other:?} is not supported (HS256, EdDSA)"),
                })
            }
        };
        let material = match alg {
            Algorithm::Hs256 => {
                let secret = read_secret(kc)?
                    .ok_or_else(|| err("HS256 needs one of secret, secret_file, secret_env"))?;
                if secret.is_empty() {
                    return Err(err("HS256 secret is empty"));
                }
                if secret.len() < 32 {
                    tracing::warn!(kid = %kc.kid, "HS256 secret is shorter than 32 bytes; use a longer random secret");
                }
                Material::Hs256(
                    HmacSha256::new_from_slice(&secret).map_err(|_| err("invalid HMAC key"))?,
                )
            }
            Algorithm::EdDsa => {
                if let Some(pem) = read_pem(&kc.private_key, &kc.private_key_file, &kc.kid)? {
                    let sk = SigningKey::from_pkcs8_pem(&pem)
                        .map_err(|_| err("private key is not an Ed25519 PKCS#8 PEM"))?;
                    let vk = sk.verifying_key();
                    Material::EdSign(Box::new(sk), vk)
                } else if let Some(pem) = read_pem(&kc.public_key, &kc.public_key_file, &kc.kid)? {
                    Material::EdVerify(
                        VerifyingKey::from_public_key_pem(&pem)
                            .map_err(|_| err("public key is not an Ed25519 SPKI PEM"))?,
                    )
                } else {
                    return Err(err("EdDSA needs private_key(_file) or public_key(_file)"));
                }
            }
        };
        let header = serde_json::json!({"alg": alg.jwt_name(), "typ": "JWT", "kid": kc.kid});
        Ok(Key {
            kid: kc.kid.clone(),
            alg,
            material,
            header_b64: b64(header.to_string().as_bytes()),
        })
    }

    fn sign(&self, signing_input: &[u8]) -> Option<Vec<u8>> {
        match &self.material {
            Material::Hs256(mac) => {
                let mut m = mac.clone();
                m.update(signing_input);
                Some(m.finalize().into_bytes().to_vec())
            }
            Material::EdSign(sk, _) => Some(sk.sign(signing_input).to_bytes().to_vec()),
            Material::EdVerify(_) => None,
        }
    }

    fn verify(&self, signing_input: &[u8], sig: &[u8]) -> bool {
        match &self.material {
            Material::Hs256(mac) => {
                let mut m = mac.clone();
                m.update(signing_input);
                m.verify_slice(sig).is_ok()
            }
            Material::EdSign(_, vk) | Material::EdVerify(vk) => {
                let Ok(sig) = ed25519_dalek::Signature::from_slice(sig) else {
                    return false;
                };
                vk.verify(signing_input, &sig).is_ok()
            }
        }
    }
}

impl KeyRing {
    /// Builds the ring from `[auth]`. Fails on an empty ring, duplicate kids, unreadable or
    /// invalid key material, or a verify-only first key.
    pub fn from_config(cfg: &AuthConfig) -> Result<KeyRing, ConfigError> {
        if cfg.keys.is_empty() {
            return Err(ConfigError::NoKeys);
        }
        let lifetime = cfg.ticket_lifetime_limit();
        if lifetime.is_zero() {
            return Err(ConfigError::Setting {
                key: "max_ticket_lifetime",
                message: "must be positive".into(),
            });
        }
        if lifetime < cfg.max_token_ttl {
            return Err(ConfigError::Setting {
                key: "max_ticket_lifetime",
                message: format!(
                    "{} is shorter than auth.max_token_ttl ({}): tickets this server mints \
                     would be refused",
                    crate::duration::format(lifetime),
                    crate::duration::format(cfg.max_token_ttl)
                ),
            });
        }
        for (key, value) in std::iter::once(("issuer", &cfg.issuer))
            .chain(cfg.accepted_issuers.iter().map(|i| ("accepted_issuers", i)))
            .chain(std::iter::once(("audience", &cfg.audience)))
        {
            let max = if key == "audience" {
                MAX_AUD_BYTES
            } else {
                MAX_ISS_BYTES
            };
            if value.is_empty() || value.len() > max {
                return Err(ConfigError::Setting {
                    key,
                    message: format!("must be 1 to {max} bytes"),
                });
            }
        }
        let mut keys: Vec<Key> = Vec::with_capacity(cfg.keys.len());
        for kc in &cfg.keys {
            if keys.iter().any(|k| k.kid == kc.kid) {
                return Err(ConfigError::DuplicateKid(kc.kid.clone()));
            }
            keys.push(Key::from_config(kc)?);
        }
        if matches!(keys[0].material, Material::EdVerify(_)) {
            return Err(ConfigError::Key {
                kid: keys[0].kid.clone(),
                message: "the first key signs, so it needs a private key".into(),
            });
        }
        let mut issuers = vec![cfg.issuer.clone()];
        issuers.extend(cfg.accepted_issuers.iter().cloned());
        Ok(KeyRing {
            keys,
            issuer: cfg.issuer.clone(),
            policy: VerifyPolicy {
                issuers,
                audience: cfg.audience.clone(),
                leeway: cfg.leeway,
                max_lifetime: lifetime,
            },
            default_ttl: cfg.token_ttl,
            max_ttl: cfg.max_token_ttl,
        })
    }

    /// The `kid` that signs new tickets.
    pub fn signing_kid(&self) -> &str {
        &self.keys[0].kid
    }

    pub fn policy(&self) -> &VerifyPolicy {
        &self.policy
    }

    pub fn default_ttl(&self) -> Duration {
        self.default_ttl
    }

    pub fn max_ttl(&self) -> Duration {
        self.max_ttl
    }

    /// Mints a ticket. Fails with a message when the TTL exceeds `max_token_ttl` or is zero, or
    /// when the identity or room is empty or over the size verification accepts.
    pub fn mint(&self, req: &MintRequest, now: u64) -> Result<(String, Claims), String> {
        let ttl = req.ttl.unwrap_or(self.default_ttl);
        if ttl.is_zero() {
            return Err("ttl must be positive".into());
        }
        if ttl > self.max_ttl {
            return Err(format!(
                "ttl {} exceeds the maximum of {} (auth.max_token_ttl)",
                crate::duration::format(ttl),
                crate::duration::format(self.max_ttl)
            ));
        }
        if req.identity.is_empty() || req.identity.len() > MAX_SUB_BYTES {
            return Err(format!("identity must be 1 to {MAX_SUB_BYTES} bytes"));
        }
        if let Some(room) = &req.room {
            if room.is_empty() || room.len() > MAX_ROOM_BYTES {
                return Err(format!("room must be 1 to {MAX_ROOM_BYTES} bytes"));
            }
        }
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: req.identity.clone(),
            aud: Audience(vec![self.policy.audience.clone()]),
            jti: random_id(),
            iat: Some(now),
            exp: now + ttl.as_secs(),
            nbf: None,
            scope: req.scope,
            room: req.room.clone(),
        };
        Ok((self.sign_claims(&claims), claims))
    }

    /// Signs arbitrary claims with the first key (tests and tools use this directly).
    pub fn sign_claims(&self, claims: &Claims) -> String {
        let key = &self.keys[0];
        let payload = serde_json::to_vec(claims).expect("claims serialize");
        let mut out = String::with_capacity(key.header_b64.len() + payload.len() * 4 / 3 + 100);
        out.push_str(&key.header_b64);
        out.push('.');
        out.push_str(&b64(&payload));
        let sig = key.sign(out.as_bytes()).expect("first key can sign");
        out.push('.');
        out.push_str(&b64(&sig));
        out
    }

    /// Verifies signature and claims at `now` (UNIX seconds). Does not consume the `jti`.
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, AuthError> {
        if token.is_empty() {
            return Err(AuthError::MissingToken);
        }
        if token.len() > crate::MAX_TOKEN_BYTES {
            return Err(AuthError::Oversized);
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed);
        };
        let header_json = unb64(h)?;
        let header: Header =
            serde_json::from_slice(&header_json).map_err(|_| AuthError::Malformed)?;
        if header.alg.eq_ignore_ascii_case("none") {
            return Err(AuthError::AlgNone);
        }
        if header.crit.is_some() {
            return Err(AuthError::Malformed);
        }
        let alg = Algorithm::from_jwt(&header.alg).ok_or(AuthError::UnsupportedAlg)?;
        let sig = unb64(s)?;
        let signing_input = &token.as_bytes()[..h.len() + 1 + p.len()];
        let verified = match header.kid.as_deref() {
            Some(kid) => {
                let key = self
                    .keys
                    .iter()
                    .find(|k| k.kid == kid)
                    .ok_or(AuthError::UnknownKid)?;
                if key.alg != alg {
                    // Algorithm confusion: a token may only use the algorithm of the key it names.
                    return Err(AuthError::UnsupportedAlg);
                }
                key.verify(signing_input, &sig)
            }
            None => {
                let mut candidates = self.keys.iter().filter(|k| k.alg == alg).peekable();
                if candidates.peek().is_none() {
                    return Err(AuthError::UnsupportedAlg);
                }
                candidates.any(|k| k.verify(signing_input, &sig))
            }
        };
        if !verified {
            return Err(AuthError::BadSignature);
        }
        let raw: RawClaims =
            serde_json::from_slice(&unb64(p)?).map_err(|_| AuthError::Malformed)?;
        self.check_claims(raw, now)
    }

    fn check_claims(&self, raw: RawClaims, now: u64) -> Result<Claims, AuthError> {
        let leeway = self.policy.leeway.as_secs();
        let exp = raw.exp.ok_or(AuthError::MissingClaim("exp"))?;
        if !exp.is_finite() || exp < 0.0 {
            return Err(AuthError::Malformed);
        }
        // `as` saturates: 1e300 becomes u64::MAX and is refused below as too long. A fractional
        // `exp` (RFC 7519 NumericDate allows it; PyJWT writes one for `time.time() + 300`) is
        // rounded down.
        let exp = exp as u64;
        if now > exp.saturating_add(leeway) {
            return Err(AuthError::Expired);
        }
        let iat = raw
            .iat
            .filter(|n| n.is_finite() && *n >= 0.0)
            .map(|n| n as u64);
        // The lifetime the issuer granted (exp - iat) and what is left of it (exp - now, which
        // also covers tickets without iat). Both allow the leeway: the issuer's clock may run
        // ahead of ours, and an issuer may read its clock twice while minting.
        let max_lifetime = self.policy.max_lifetime.as_secs().saturating_add(leeway);
        if exp.saturating_sub(now) > max_lifetime
            || iat.is_some_and(|iat| exp.saturating_sub(iat) > max_lifetime)
        {
            return Err(AuthError::LifetimeTooLong);
        }
        let nbf = raw
            .nbf
            .filter(|n| n.is_finite() && *n >= 0.0)
            .map(|n| n as u64);
        if let Some(nbf) = nbf {
            if nbf > now.saturating_add(leeway) {
                return Err(AuthError::NotYetValid);
            }
        }
        let iss = raw.iss.ok_or(AuthError::MissingClaim("iss"))?;
        if iss.len() > MAX_ISS_BYTES {
            return Err(AuthError::ClaimTooLarge("iss"));
        }
        if !self.policy.issuers.contains(&iss) {
            return Err(AuthError::BadIssuer);
        }
        let aud = raw.aud.ok_or(AuthError::MissingClaim("aud"))?;
        if aud.0.len() > MAX_AUD_VALUES || aud.0.iter().any(|a| a.len() > MAX_AUD_BYTES) {
            return Err(AuthError::ClaimTooLarge("aud"));
        }
        if !aud.contains(&self.policy.audience) {
            return Err(AuthError::BadAudience);
        }
        let sub = raw
            .sub
            .filter(|s| !s.is_empty())
            .ok_or(AuthError::MissingClaim("sub"))?;
        if sub.len() > MAX_SUB_BYTES {
            return Err(AuthError::ClaimTooLarge("sub"));
        }
        let jti = raw
            .jti
            .filter(|s| !s.is_empty())
            .ok_or(AuthError::MissingClaim("jti"))?;
        if jti.len() > MAX_JTI_BYTES {
            return Err(AuthError::ClaimTooLarge("jti"));
        }
        if raw.room.as_ref().is_some_and(|r| r.len() > MAX_ROOM_BYTES) {
            return Err(AuthError::ClaimTooLarge("room"));
        }
        if raw.scope.entries > MAX_SCOPE_ENTRIES {
            return Err(AuthError::ClaimTooLarge("scope"));
        }
        Ok(Claims {
            iss,
            sub,
            aud,
            jti,
            iat,
            exp,
            nbf,
            scope: raw.scope.scopes,
            room: raw.room,
        })
    }
}

/// Generates a new Ed25519 private key as PKCS#8 PEM (for `switchboard keygen` and tests).
pub fn generate_ed25519_pem() -> String {
    let sk = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    sk.to_pkcs8_pem(Default::default())
        .expect("encode ed25519 key")
        .to_string()
}

/// A random 256-bit secret, base64url (for `--dev` and key generation).
pub fn generate_secret() -> String {
    b64(&rand::random::<[u8; 32]>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::Scope;
    use proptest::strategy::Strategy;

    fn hs(kid: &str, secret: &str) -> KeyConfig {
        KeyConfig {
            kid: kid.into(),
            secret: Some(secret.into()),
            ..Default::default()
        }
    }

    fn ring(keys: Vec<KeyConfig>) -> KeyRing {
        KeyRing::from_config(&AuthConfig {
            keys,
            ..Default::default()
        })
        .unwrap()
    }

    fn req() -> MintRequest {
        MintRequest {
            identity: "alice".into(),
            room: Some("r1".into()),
            scope: [Scope::Webrtc].into_iter().collect(),
            ttl: None,
        }
    }

    const NOW: u64 = 1_800_000_000;

    #[test]
    fn mint_then_verify_roundtrip() {
        let r = ring(vec![hs("k1", "a-very-long-secret-for-testing-purposes")]);
        let (tok, claims) = r.mint(&req(), NOW).unwrap();
        let v = r.verify(&tok, NOW + 10).unwrap();
        assert_eq!(v, claims);
        assert_eq!(v.exp, NOW + 300);
        assert!(v.require(Scope::Webrtc).is_ok());
        assert_eq!(v.require(Scope::Grpc), Err(AuthError::MissingScope("grpc")));
        assert_eq!(v.allows_room("r2"), Err(AuthError::ForbiddenRoom));
    }

    #[test]
    fn rotation_old_key_still_verifies() {
        let old = ring(vec![hs("k1", "old-secret-old-secret-old-secret!")]);
        let (tok, _) = old.mint(&req(), NOW).unwrap();
        let rotated = ring(vec![
            hs("k2", "new-secret-new-secret-new-secret!"),
            hs("k1", "old-secret-old-secret-old-secret!"),
        ]);
        assert!(rotated.verify(&tok, NOW).is_ok());
        let (tok2, _) = rotated.mint(&req(), NOW).unwrap();
        assert_eq!(old.verify(&tok2, NOW), Err(AuthError::UnknownKid));
    }

    #[test]
    fn expiry_nbf_and_leeway() {
        let r = ring(vec![hs("k1", "s3cret-s3cret-s3cret-s3cret-s3cret")]);
        let (tok, _) = r.mint(&req(), NOW).unwrap();
        assert!(r.verify(&tok, NOW + 300 + 30).is_ok(), "inside leeway");
        assert_eq!(r.verify(&tok, NOW + 300 + 31), Err(AuthError::Expired));
        let mut c = r.verify(&tok, NOW).unwrap();
        c.nbf = Some(NOW + 100);
        let t = r.sign_claims(&c);
        assert_eq!(r.verify(&t, NOW), Err(AuthError::NotYetValid));
        assert!(r.verify(&t, NOW + 80).is_ok());
    }

    #[test]
    fn ttl_is_capped() {
        let r = ring(vec![hs("k1", "s3cret-s3cret-s3cret-s3cret-s3cret")]);
        let mut q = req();
        q.ttl = Some(Duration::from_secs(3600));
        assert!(r.mint(&q, NOW).unwrap_err().contains("exceeds"));
    }

    #[test]
    fn rejects_none_tampering_and_garbage() {
        let r = ring(vec![hs("k1", "s3cret-s3cret-s3cret-s3cret-s3cret")]);
        let (tok, _) = r.mint(&req(), NOW).unwrap();
        let parts: Vec<&str> = tok.split('.').collect();
        let none_header = b64(br#"{"alg":"none","typ":"JWT"}"#);
        assert_eq!(
            r.verify(&format!("{none_header}.{}.", parts[1]), NOW),
            Err(AuthError::AlgNone)
        );
        // Flip one payload character: signature no longer matches.
        let mut p = parts[1].to_string();
        let last = p.pop().unwrap();
        p.push(if last == 'A' { 'B' } else { 'A' });
        let tampered = format!("{}.{}.{}", parts[0], p, parts[2]);
        assert!(matches!(
            r.verify(&tampered, NOW),
            Err(AuthError::BadSignature | AuthError::Malformed)
        ));
        assert_eq!(r.verify("a.b", NOW), Err(AuthError::Malformed));
        assert_eq!(r.verify("", NOW), Err(AuthError::MissingToken));
        assert_eq!(r.verify(&"x".repeat(9000), NOW), Err(AuthError::Oversized));
        let hs512 = b64(br#"{"alg":"HS512","kid":"k1"}"#);
        assert_eq!(
            r.verify(&format!("{hs512}.{}.{}", parts[1], parts[2]), NOW),
            Err(AuthError::UnsupportedAlg)
        );
    }

    #[test]
    fn algorithm_confusion_is_refused() {
        // An HS256 token naming an EdDSA key must not be checked as HMAC with the public key.
        let pem = generate_ed25519_pem();
        let r = ring(vec![KeyConfig {
            kid: "ed".into(),
            algorithm: "EdDSA".into(),
            private_key: Some(pem),
            ..Default::default()
        }]);
        let (tok, _) = r.mint(&req(), NOW).unwrap();
        assert!(r.verify(&tok, NOW).is_ok());
        let parts: Vec<&str> = tok.split('.').collect();
        let h = b64(br#"{"alg":"HS256","kid":"ed"}"#);
        assert_eq!(
            r.verify(&format!("{h}.{}.{}", parts[1], parts[2]), NOW),
            Err(AuthError::UnsupportedAlg)
        );
    }

    #[test]
    fn wrong_issuer_and_audience() {
        let r = ring(vec![hs("k1", "s3cret-s3cret-s3cret-s3cret-s3cret")]);
        let (tok, _) = r.mint(&req(), NOW).unwrap();
        let mut c = r.verify(&tok, NOW).unwrap();
        c.iss = "mallory".into();
        assert_eq!(r.verify(&r.sign_claims(&c), NOW), Err(AuthError::BadIssuer));
        c.iss = "switchboard".into();
        c.aud = Audience(vec!["other".into()]);
        assert_eq!(
            r.verify(&r.sign_claims(&c), NOW),
            Err(AuthError::BadAudience)
        );
    }

    #[test]
    fn config_errors_name_the_key_not_the_secret() {
        let e = KeyRing::from_config(&AuthConfig::default()).unwrap_err();
        assert!(matches!(e, ConfigError::NoKeys));
        let e = KeyRing::from_config(&AuthConfig {
            keys: vec![KeyConfig {
                kid: "k9".into(),
                secret_file: Some("/nonexistent/secret".into()),
                ..Default::default()
            }],
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("k9") && e.contains("/nonexistent/secret"), "{e}");
        let e = KeyRing::from_config(&AuthConfig {
            keys: vec![hs("a", "topsecretvalue"), hs("a", "topsecretvalue")],
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(!e.contains("topsecretvalue"));
    }

    #[test]
    fn key_material_from_file_env_and_pem_files() {
        let dir = std::env::temp_dir().join(format!("sb-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let secret_path = dir.join("k.secret");
        std::fs::write(&secret_path, "file-secret-file-secret-file-secret\n").unwrap();
        let pem_path = dir.join("ed.pem");
        let pem = generate_ed25519_pem();
        std::fs::write(&pem_path, &pem).unwrap();
        std::env::set_var("SB_TEST_KEY_ENV", "env-secret-env-secret-env-secret!!");
        let from_file = ring(vec![KeyConfig {
            kid: "f".into(),
            secret_file: Some(secret_path.to_string_lossy().into()),
            ..Default::default()
        }]);
        // The trailing newline is trimmed: same as an inline secret.
        let inline = ring(vec![hs("f", "file-secret-file-secret-file-secret")]);
        let (tok, _) = from_file.mint(&req(), NOW).unwrap();
        assert!(inline.verify(&tok, NOW).is_ok());
        let from_env = ring(vec![KeyConfig {
            kid: "e".into(),
            secret_env: Some("SB_TEST_KEY_ENV".into()),
            ..Default::default()
        }]);
        assert!(from_env
            .verify(&from_env.mint(&req(), NOW).unwrap().0, NOW)
            .is_ok());
        // EdDSA: sign with the private key file, verify with a ring that holds only the public key.
        let signer = ring(vec![KeyConfig {
            kid: "ed".into(),
            algorithm: "EdDSA".into(),
            private_key_file: Some(pem_path.to_string_lossy().into()),
            ..Default::default()
        }]);
        let (tok, _) = signer.mint(&req(), NOW).unwrap();
        let sk = SigningKey::from_pkcs8_pem(&pem).unwrap();
        use ed25519_dalek::pkcs8::EncodePublicKey;
        let public_pem = sk
            .verifying_key()
            .to_public_key_pem(Default::default())
            .unwrap();
        let verifier = ring(vec![
            hs("k1", "some-other-signing-secret-0123456789"),
            KeyConfig {
                kid: "ed".into(),
                algorithm: "EdDSA".into(),
                public_key: Some(public_pem),
                ..Default::default()
            },
        ]);
        assert!(verifier.verify(&tok, NOW).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }

    const SECRET: &str = "s3cret-s3cret-s3cret-s3cret-s3cret";

    /// Signs `payload` (raw JSON) with HS256 and no `kid`, as PyJWT does by default.
    fn sign_raw(payload: &str) -> String {
        let h = b64(br#"{"alg":"HS256","typ":"JWT"}"#);
        let input = format!("{h}.{}", b64(payload.as_bytes()));
        let mut mac = HmacSha256::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(input.as_bytes());
        format!("{input}.{}", b64(&mac.finalize().into_bytes()))
    }

    /// A ring that also accepts the Django app's issuer.
    fn django_ring() -> KeyRing {
        KeyRing::from_config(&AuthConfig {
            keys: vec![hs("k1", SECRET)],
            accepted_issuers: vec!["your-service".into()],
            ..Default::default()
        })
        .unwrap()
    }

    /// A ticket the Django app would mint at `NOW`, with `extra` JSON members added.
    fn django_payload(exp: &str, extra: &str) -> String {
        format!(
            r#"{{"sub":"42","iss":"your-service","aud":"realtime-clients","jti":"{}","exp":{exp},"scope":["webrtc","grpc"]{extra}}}"#,
            NOW
        )
    }

    fn claims_at(iat: Option<u64>, exp: u64) -> Claims {
        Claims {
            iss: "switchboard".into(),
            sub: "alice".into(),
            aud: Audience(vec!["realtime-clients".into()]),
            jti: "j1".into(),
            iat,
            exp,
            nbf: None,
            scope: [Scope::Webrtc].into_iter().collect(),
            room: None,
        }
    }

    #[test]
    fn a_ten_year_ticket_is_refused_with_or_without_iat() {
        let r = ring(vec![hs("k1", SECRET)]);
        let ten_years = 10 * 365 * 86_400;
        for iat in [Some(NOW), None] {
            let t = r.sign_claims(&claims_at(iat, NOW + ten_years));
            assert_eq!(r.verify(&t, NOW), Err(AuthError::LifetimeTooLong));
        }
        // An old iat with a near exp: the lifetime the issuer granted is what counts.
        let t = r.sign_claims(&claims_at(Some(NOW - 3600), NOW + 60));
        assert_eq!(r.verify(&t, NOW), Err(AuthError::LifetimeTooLong));
        assert_eq!(AuthError::LifetimeTooLong.reason(), "lifetime_too_long");
    }

    #[test]
    fn the_lifetime_limit_is_inclusive_and_allows_the_leeway() {
        // Defaults: max_ticket_lifetime unset = max_token_ttl = 5m, leeway 30 s.
        let r = ring(vec![hs("k1", SECRET)]);
        assert_eq!(r.policy().max_lifetime, Duration::from_secs(300));
        for (iat, exp, ok) in [
            (Some(NOW), NOW + 300, true),
            (Some(NOW), NOW + 330, true),
            (Some(NOW), NOW + 331, false),
            (None, NOW + 300, true),
            (None, NOW + 330, true),
            (None, NOW + 331, false),
        ] {
            let t = r.sign_claims(&claims_at(iat, exp));
            let got = r.verify(&t, NOW);
            if ok {
                assert!(got.is_ok(), "iat {iat:?} exp +{}: {got:?}", exp - NOW);
            } else {
                assert_eq!(got, Err(AuthError::LifetimeTooLong), "exp +{}", exp - NOW);
            }
        }
        // A ticket minted at the maximum TTL verifies over its whole life.
        let mut q = req();
        q.ttl = Some(r.max_ttl());
        let (tok, _) = r.mint(&q, NOW).unwrap();
        for at in [NOW, NOW + 150, NOW + 330] {
            assert!(r.verify(&tok, at).is_ok());
        }
    }

    #[test]
    fn max_ticket_lifetime_is_configurable_but_not_below_max_token_ttl() {
        let r = KeyRing::from_config(&AuthConfig {
            keys: vec![hs("k1", SECRET)],
            max_ticket_lifetime: Some(Duration::from_secs(3600)),
            ..Default::default()
        })
        .unwrap();
        let t = r.sign_claims(&claims_at(Some(NOW), NOW + 3600));
        assert!(r.verify(&t, NOW).is_ok());
        let t = r.sign_claims(&claims_at(Some(NOW), NOW + 7200));
        assert_eq!(r.verify(&t, NOW), Err(AuthError::LifetimeTooLong));
        // Raising max_token_ttl raises the default bound with it.
        let r = KeyRing::from_config(&AuthConfig {
            keys: vec![hs("k1", SECRET)],
            max_token_ttl: Duration::from_secs(7200),
            ..Default::default()
        })
        .unwrap();
        let mut q = req();
        q.ttl = Some(Duration::from_secs(7200));
        let (tok, _) = r.mint(&q, NOW).unwrap();
        assert!(r.verify(&tok, NOW).is_ok());
        let e = KeyRing::from_config(&AuthConfig {
            keys: vec![hs("k1", SECRET)],
            max_token_ttl: Duration::from_secs(3600),
            max_ticket_lifetime: Some(Duration::from_secs(600)),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("max_ticket_lifetime") && e.contains("max_token_ttl"),
            "{e}"
        );
    }

    #[test]
    fn huge_negative_and_odd_exp_values_are_refused_without_panic() {
        let r = django_ring();
        for (exp, want) in [
            ("1e300", AuthError::LifetimeTooLong),
            ("1.7976931348623157e308", AuthError::LifetimeTooLong),
            ("100000000000000000000000000000", AuthError::LifetimeTooLong),
            ("18446744073709551615", AuthError::LifetimeTooLong),
            ("-1", AuthError::Malformed),
            ("-1e300", AuthError::Malformed),
            ("\"1900000000\"", AuthError::Malformed),
            ("null", AuthError::MissingClaim("exp")),
        ] {
            let t = sign_raw(&django_payload(exp, ""));
            assert_eq!(r.verify(&t, NOW), Err(want), "exp {exp}");
        }
        // A huge iat with a normal exp: nothing overflows and the ticket is fine.
        let t = sign_raw(&django_payload(&(NOW + 300).to_string(), r#","iat":1e300"#));
        assert!(r.verify(&t, NOW).is_ok());
    }

    #[test]
    fn a_pyjwt_style_five_minute_ticket_still_verifies() {
        // What the Django view mints: HS256, no kid, no iat, integer exp five minutes ahead.
        let r = django_ring();
        let t = sign_raw(&django_payload(&(NOW + 300).to_string(), ""));
        let c = r.verify(&t, NOW).unwrap();
        assert_eq!((c.sub.as_str(), c.exp, c.iat), ("42", NOW + 300, None));
        assert!(c.require(Scope::Grpc).is_ok());
        // Its clock a little ahead of ours (within the leeway), with iat, or with a
        // fractional exp (PyJWT given `time.time() + 300`): all accepted.
        for (exp, extra) in [
            (format!("{}", NOW + 320), String::new()),
            (format!("{}", NOW + 300), format!(r#","iat":{NOW}"#)),
            (format!("{}.734", NOW + 299), format!(r#","iat":{NOW}.734"#)),
        ] {
            let t = sign_raw(&django_payload(&exp, &extra));
            let got = r.verify(&t, NOW);
            assert!(got.is_ok(), "exp {exp}{extra}: {got:?}");
        }
    }

    #[test]
    fn oversized_claims_are_refused_with_claim_too_large() {
        let r = django_ring();
        let exp = (NOW + 300).to_string();
        let big = |n: usize| "x".repeat(n);
        // (sub, jti, iss, aud as JSON, more members)
        let payload = |sub: &str, jti: &str, iss: &str, aud: &str, extra: &str| {
            format!(
                r#"{{"sub":"{sub}","iss":"{iss}","aud":{aud},"jti":"{jti}","exp":{exp}{extra}}}"#
            )
        };
        let (iss, aud) = ("your-service", r#""realtime-clients""#);
        let many_aud = format!(
            r#"[{}"realtime-clients"]"#,
            r#""a","#.repeat(MAX_AUD_VALUES)
        );
        let long_aud = format!(r#"["realtime-clients","{}"]"#, big(MAX_AUD_BYTES + 1));
        let many_scopes = format!(
            r#","scope":[{}"webrtc"]"#,
            r#""x","#.repeat(MAX_SCOPE_ENTRIES)
        );
        let many_scope_words = format!(r#","scope":"{}webrtc""#, "x ".repeat(MAX_SCOPE_ENTRIES));
        let long_room = format!(r#","room":"{}""#, big(MAX_ROOM_BYTES + 1));
        for (p, claim) in [
            (payload(&big(5000), "j", iss, aud, ""), "sub"),
            (payload(&big(MAX_SUB_BYTES + 1), "j", iss, aud, ""), "sub"),
            (payload("u", &big(MAX_JTI_BYTES + 1), iss, aud, ""), "jti"),
            (payload("u", "j", iss, aud, &long_room), "room"),
            (payload("u", "j", &big(MAX_ISS_BYTES + 1), aud, ""), "iss"),
            (payload("u", "j", iss, &long_aud, ""), "aud"),
            (payload("u", "j", iss, &many_aud, ""), "aud"),
            (payload("u", "j", iss, aud, &many_scopes), "scope"),
            (payload("u", "j", iss, aud, &many_scope_words), "scope"),
        ] {
            let t = sign_raw(&p);
            assert!(t.len() <= crate::MAX_TOKEN_BYTES);
            assert_eq!(r.verify(&t, NOW), Err(AuthError::ClaimTooLarge(claim)));
        }
        assert_eq!(AuthError::ClaimTooLarge("sub").reason(), "claim_too_large");
        // Exactly at each limit is fine; an empty sub is still a missing claim.
        let at_limit = payload(
            &big(MAX_SUB_BYTES),
            &big(MAX_JTI_BYTES),
            iss,
            &format!(
                r#"[{}"realtime-clients"]"#,
                format!(r#""{}","#, big(MAX_AUD_BYTES)).repeat(MAX_AUD_VALUES - 1)
            ),
            &format!(
                r#","room":"{}","scope":[{}"webrtc"]"#,
                big(MAX_ROOM_BYTES),
                r#""x","#.repeat(MAX_SCOPE_ENTRIES - 1)
            ),
        );
        assert!(r.verify(&sign_raw(&at_limit), NOW).is_ok());
        assert_eq!(
            r.verify(&sign_raw(&payload("", "j", iss, aud, "")), NOW),
            Err(AuthError::MissingClaim("sub"))
        );
    }

    #[test]
    fn minting_refuses_what_verification_would() {
        let r = ring(vec![hs("k1", SECRET)]);
        let mut q = req();
        q.identity = "x".repeat(5000);
        assert!(r.mint(&q, NOW).unwrap_err().contains("identity"));
        q.identity = "x".repeat(MAX_SUB_BYTES);
        q.room = Some("r".repeat(MAX_ROOM_BYTES + 1));
        assert!(r.mint(&q, NOW).unwrap_err().contains("room"));
        q.room = Some(String::new());
        assert!(r.mint(&q, NOW).unwrap_err().contains("room"));
        q.room = Some("r".repeat(MAX_ROOM_BYTES));
        let (tok, _) = r.mint(&q, NOW).unwrap();
        assert!(r.verify(&tok, NOW).is_ok());
        // An issuer or audience the server would refuse on its own tickets is a config error.
        let e = KeyRing::from_config(&AuthConfig {
            keys: vec![hs("k1", SECRET)],
            issuer: "i".repeat(MAX_ISS_BYTES + 1),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("auth.issuer"), "{e}");
    }

    proptest::proptest! {
        #[test]
        fn verify_never_panics(s in ".{0,600}") {
            let r = ring(vec![hs("k1", "s3cret-s3cret-s3cret-s3cret-s3cret")]);
            let _ = r.verify(&s, NOW);
        }

        #[test]
        fn verify_never_panics_on_any_numeric_exp_or_iat(
            exp in proptest::prop_oneof![
                proptest::num::f64::NORMAL.prop_map(|f| format!("{f:e}")),
                proptest::num::i64::ANY.prop_map(|i| i.to_string()),
                proptest::num::u64::ANY.prop_map(|i| i.to_string()),
            ],
            iat in proptest::num::f64::POSITIVE.prop_map(|f| format!("{f:e}")),
        ) {
            let r = django_ring();
            let t = sign_raw(&django_payload(&exp, &format!(r#","iat":{iat}"#)));
            if let Ok(c) = r.verify(&t, NOW) {
                proptest::prop_assert!(c.exp <= NOW + 330);
            }
        }

        #[test]
        fn verify_never_panics_on_dotted_base64(a in "[A-Za-z0-9_-]{0,80}", b in "[A-Za-z0-9_-]{0,200}", c in "[A-Za-z0-9_-]{0,90}") {
            let r = ring(vec![hs("k1", "s3cret-s3cret-s3cret-s3cret-s3cret")]);
            let _ = r.verify(&format!("{a}.{b}.{c}"), NOW);
        }
    }
}
