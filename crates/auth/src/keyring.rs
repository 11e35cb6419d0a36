//! The key ring: signs with the first key, verifies with any. JWT compact serialization is done
//! here directly (header.payload.signature, base64url without padding) so that the rules are
//! explicit: `alg` must match the key it names, `none` is refused, `crit` is refused, and a token
//! without `kid` (PyJWT's default) is tried against every key of its algorithm.

use crate::config::{AuthConfig, KeyConfig};
use crate::error::{AuthError, ConfigError};
use crate::jwt::claim_limits::{
    MAX_AUD_BYTES, MAX_AUD_VALUES, MAX_ISS_BYTES, MAX_JTI_BYTES, MAX_REGION_BYTES, MAX_ROOM_BYTES,
    MAX_SCOPE_ENTRIES, MAX_SUB_BYTES,
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
    region: Option<String>,
}

/// A claim that must be present and not empty, and at most `max` bytes long.
fn required_text(v: Option<String>, claim: &'static str, max: usize) -> Result<String, AuthError> {
    let v = v
        .filter(|s| !s.is_empty())
        .ok_or(AuthError::MissingClaim(claim))?;
    if v.len() > max {
        return Err(AuthError::ClaimTooLarge(claim));
    }
    Ok(v)
}

/// An optional NumericDate claim (`iat`, `nbf`) in whole seconds; one that is not a finite,
/// non-negative number counts as absent.
fn optional_time(v: Option<f64>) -> Option<u64> {
    v.filter(|n| n.is_finite() && *n >= 0.0).map(|n| n as u64)
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
        if let Some(region) = &req.region {
            if region.is_empty() || region.len() > MAX_REGION_BYTES {
                return Err(format!("region must be 1 to {MAX_REGION_BYTES} bytes"));
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
            region: req.region.clone(),
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
        let iat = optional_time(raw.iat);
        // The lifetime the issuer granted (exp - iat) and what is left of it (exp - now, which
        // also covers tickets without iat). Both allow the leeway: the issuer's clock may run
        // ahead of ours, and an issuer may read its clock twice while minting.
        let max_lifetime = self.policy.max_lifetime.as_secs().saturating_add(leeway);
        if exp.saturating_sub(now) > max_lifetime
            || iat.is_some_and(|iat| exp.saturating_sub(iat) > max_lifetime)
        {
            return Err(AuthError::LifetimeTooLong);
        }
        let nbf = optional_time(raw.nbf);
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
        let sub = required_text(raw.sub, "sub", MAX_SUB_BYTES)?;
        let jti = required_text(raw.jti, "jti", MAX_JTI_BYTES)?;
        if raw.room.as_ref().is_some_and(|r| r.len() > MAX_ROOM_BYTES) {
            return Err(AuthError::ClaimTooLarge("room"));
        }
        if raw
            .region
            .as_ref()
            .is_some_and(|r| r.len() > MAX_REGION_BYTES)
        {
            return Err(AuthError::ClaimTooLarge("region"));
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
            region: raw.region,
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
mod tests;
