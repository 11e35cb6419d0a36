//! SRTP and SRTCP protection of our own, for the SFU's own egress path.
//!
//! str0m protects what it sends itself, but a forwarded RTP packet on the own egress path
//! ([`crate::egress`]) never passes through a subscriber's `Rtc`: we encrypt it here with the
//! keys str0m's DTLS handshake produced ([`crate::keys`]), encrypt our own SRTCP sender reports,
//! and decrypt the SRTCP a subscriber sends so we can read its NACKs.
//!
//! What it implements:
//! - RFC 5764 §4.2: splitting DTLS-SRTP keying material into per-direction master keys
//!   ([`split_keying_material`]).
//! - RFC 3711 §4.3 key derivation with the AES-CM PRF (§4.3.3) at key derivation rate 0, so
//!   session keys are derived once per [`Context`]; RFC 6188's AES_256_CM_PRF for
//!   `AeadAes256Gcm`.
//! - RFC 3711 §4.1.1 AES-CM encryption and §4.2.1 HMAC-SHA1 authentication (80-bit tags) for
//!   `SRTP_AES128_CM_HMAC_SHA1_80`, SRTP (§3.1, ROC in the tag) and SRTCP (§3.4, E flag and
//!   SRTCP index).
//! - RFC 7714 AEAD_AES_128_GCM / AEAD_AES_256_GCM: IVs (§8.1, §9.1), AAD (§8.2, §9.2 and §9.3
//!   for unencrypted SRTCP) and the KDF of §11 with the 96-bit master salt multiplied by 2^16
//!   (verified erratum 4938), i.e. padded with two zero bytes on the right.
//!
//! Not implemented: MKI, key derivation rates other than 0, replay protection and ROC
//! estimation, and the other DTLS-SRTP profiles. The own egress tracks the ROC of each stream it
//! sends; it reads a subscriber's SRTCP for NACKs without a replay window, so a replayed NACK
//! is bounded only by the egress's resend limits.
//!
//! Every key object (AES key schedules, HMAC key, AEAD key) is built once in [`Context::new`];
//! protecting a packet touches only the caller's buffer, which grows by the tag (reserve
//! [`Profile::rtp_overhead`] / [`Profile::rtcp_overhead`] bytes of capacity and it never
//! reallocates). Every `unprotect_*` takes hostile bytes: it returns an error, never panics.
//!
//! One cohesive protocol implementation, kept in one file: key derivation, the AES-CM and
//! AES-GCM transforms and the SRTP/SRTCP packet layouts share one set of constants and key
//! objects, and half the file is the RFC 3711/6188/7714 and libsrtp test vectors that check
//! them together.

use std::fmt;

use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::cipher::{EncryptingKey, EncryptionContext, UnboundCipherKey, AES_128, AES_256};
use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::hmac;
use aws_lc_rs::iv::FixedLength;

/// HMAC-SHA1 tag length of `SRTP_AES128_CM_HMAC_SHA1_80`, for SRTP and SRTCP alike.
const CM_TAG_LEN: usize = 10;
/// HMAC-SHA1 session authentication key length (n_a = 160 bits).
const CM_AUTH_KEY_LEN: usize = 20;
/// AES-CM session salt length (n_s = 112 bits).
const CM_SALT_LEN: usize = 14;
/// GCM authentication tag length (16 octets for both RFC 7714 profiles).
const GCM_TAG_LEN: usize = 16;
/// GCM session salt length (RFC 7714 §11: 96 bits).
const GCM_SALT_LEN: usize = 12;
/// The SRTCP trailer word: E flag (top bit) and 31-bit SRTCP index.
const SRTCP_WORD_LEN: usize = 4;
const E_FLAG: u32 = 0x8000_0000;
/// Fixed RTP header: V/P/X/CC, M/PT, sequence number, timestamp, SSRC.
const RTP_HEADER_LEN: usize = 12;
/// RTCP header plus the sender SSRC: always sent in the clear (RFC 3711 §3.4).
const RTCP_HEADER_LEN: usize = 8;
/// AES-CM counts blocks in the low 16 bits of the IV (RFC 3711 §4.1.1); more would run into the
/// packet index.
const CM_MAX_PAYLOAD: usize = 16 << 16;

// RFC 3711 §4.3.1 (SRTP) and §4.3.2 (SRTCP) labels.
const LABEL_RTP_ENCRYPTION: u8 = 0x00;
const LABEL_RTCP_ENCRYPTION: u8 = 0x03;
/// Offsets from a direction's encryption label.
const LABEL_AUTH: u8 = 1;
const LABEL_SALT: u8 = 2;

/// The SRTP protection profiles DTLS-SRTP can negotiate (RFC 5764, RFC 7714).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// `SRTP_AES128_CM_HMAC_SHA1_80` (RFC 5764 §4.1.2): AES-128 counter mode, 80-bit HMAC-SHA1.
    Aes128CmSha1_80,
    /// `SRTP_AEAD_AES_128_GCM` (RFC 7714 §14.2).
    AeadAes128Gcm,
    /// `SRTP_AEAD_AES_256_GCM` (RFC 7714 §14.2).
    AeadAes256Gcm,
}

impl Profile {
    /// Master key length in bytes.
    pub fn master_key_len(self) -> usize {
        match self {
            Profile::Aes128CmSha1_80 | Profile::AeadAes128Gcm => 16,
            Profile::AeadAes256Gcm => 32,
        }
    }

    /// Master salt length in bytes.
    pub fn master_salt_len(self) -> usize {
        match self {
            Profile::Aes128CmSha1_80 => CM_SALT_LEN,
            Profile::AeadAes128Gcm | Profile::AeadAes256Gcm => GCM_SALT_LEN,
        }
    }

    /// Length of the DTLS-SRTP keying material to export (RFC 5764 §4.2): both directions'
    /// keys and salts.
    pub fn keying_material_len(self) -> usize {
        2 * (self.master_key_len() + self.master_salt_len())
    }

    /// Bytes [`Context::protect_rtp`] adds to an RTP packet: the authentication tag.
    pub fn rtp_overhead(self) -> usize {
        self.tag_len()
    }

    /// Bytes [`Context::protect_rtcp`] adds to an RTCP packet: the E|index word and the tag.
    pub fn rtcp_overhead(self) -> usize {
        SRTCP_WORD_LEN + self.tag_len()
    }

    fn tag_len(self) -> usize {
        match self {
            Profile::Aes128CmSha1_80 => CM_TAG_LEN,
            Profile::AeadAes128Gcm | Profile::AeadAes256Gcm => GCM_TAG_LEN,
        }
    }
}

/// Master key and salt for one direction.
#[derive(Clone)]
pub struct MasterKey {
    /// The profile these were negotiated for; it fixes both lengths.
    pub profile: Profile,
    /// Master key, [`Profile::master_key_len`] bytes.
    pub key: Vec<u8>,
    /// Master salt, [`Profile::master_salt_len`] bytes.
    pub salt: Vec<u8>,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Lengths only: key bytes must never reach a log.
        f.debug_struct("MasterKey")
            .field("profile", &self.profile)
            .field("key_len", &self.key.len())
            .field("salt_len", &self.salt.len())
            .finish_non_exhaustive()
    }
}

impl MasterKey {
    fn check(&self) -> Result<(), SrtpError> {
        check_len("master key", &self.key, self.profile.master_key_len())?;
        check_len("master salt", &self.salt, self.profile.master_salt_len())
    }
}

/// [`SrtpError::KeyLength`] unless `bytes` (the `what` of a master key) is `expected` long.
fn check_len(what: &'static str, bytes: &[u8], expected: usize) -> Result<(), SrtpError> {
    if bytes.len() == expected {
        Ok(())
    } else {
        Err(SrtpError::KeyLength {
            what,
            expected,
            got: bytes.len(),
        })
    }
}

/// Splits RFC 5764 §4.2 keying material (client_write_key | server_write_key |
/// client_write_salt | server_write_salt) into (local, remote) master keys. `active` = we are
/// the DTLS client. Errors if the length is wrong.
pub fn split_keying_material(
    profile: Profile,
    material: &[u8],
    active: bool,
) -> Result<(MasterKey, MasterKey), SrtpError> {
    if material.len() != profile.keying_material_len() {
        return Err(SrtpError::KeyingMaterialLength {
            expected: profile.keying_material_len(),
            got: material.len(),
        });
    }
    let (client_key, rest) = material.split_at(profile.master_key_len());
    let (server_key, rest) = rest.split_at(profile.master_key_len());
    let (client_salt, server_salt) = rest.split_at(profile.master_salt_len());
    let client = MasterKey {
        profile,
        key: client_key.to_vec(),
        salt: client_salt.to_vec(),
    };
    let server = MasterKey {
        profile,
        key: server_key.to_vec(),
        salt: server_salt.to_vec(),
    };
    Ok(if active {
        (client, server)
    } else {
        (server, client)
    })
}

/// The RFC 3711 §3.3.1 packet index of an SRTP packet: `2^16 * ROC + SEQ` (48 bits).
pub fn packet_index(roc: u32, seq: u16) -> u64 {
    (u64::from(roc) << 16) | u64::from(seq)
}

/// Everything that can go wrong protecting or unprotecting a packet.
#[derive(Debug, thiserror::Error)]
pub enum SrtpError {
    /// A master key or salt does not have the length its profile needs.
    #[error("{what} is {got} bytes, the profile needs {expected}")]
    KeyLength {
        /// "master key" or "master salt".
        what: &'static str,
        /// Length the profile needs.
        expected: usize,
        /// Length we were given.
        got: usize,
    },
    /// DTLS-SRTP keying material of the wrong length for the profile.
    #[error("SRTP keying material is {got} bytes, the profile needs {expected}")]
    KeyingMaterialLength {
        /// [`Profile::keying_material_len`].
        expected: usize,
        /// Length we were given.
        got: usize,
    },
    /// Shorter than its header (CSRCs and extension included) plus trailer.
    #[error("packet too short")]
    TooShort,
    /// Longer than AES-CM can encrypt under one IV (1 MiB); never a real packet.
    #[error("packet too long")]
    TooLong,
    /// The RTP version field is not 2.
    #[error("not an RTP packet (version {0})")]
    NotRtp(u8),
    /// The authentication tag does not match: tampered, wrong key, or wrong ROC.
    #[error("SRTP authentication failed")]
    AuthFailed,
    /// SRTCP indexes are 31 bits.
    #[error("SRTCP index {0:#x} exceeds 31 bits")]
    IndexOutOfRange(u32),
    /// The crypto library refused an operation that cannot fail with valid arguments.
    #[error("crypto library failure")]
    Crypto,
}

impl SrtpError {
    /// Short label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            SrtpError::KeyLength { .. } => "key_length",
            SrtpError::KeyingMaterialLength { .. } => "keying_material_length",
            SrtpError::TooShort => "too_short",
            SrtpError::TooLong => "too_long",
            SrtpError::NotRtp(_) => "not_rtp",
            SrtpError::AuthFailed => "auth_failed",
            SrtpError::IndexOutOfRange(_) => "index_out_of_range",
            SrtpError::Crypto => "crypto",
        }
    }
}

fn crypto<T>(_: T) -> SrtpError {
    SrtpError::Crypto
}

/// Session keys derived once (key derivation rate 0) for one direction: SRTP and SRTCP.
pub struct Context {
    profile: Profile,
    rtp: Transform,
    rtcp: Transform,
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("profile", &self.profile)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// Derives the SRTP and SRTCP session keys of `master` and prepares their key objects.
    pub fn new(master: &MasterKey) -> Result<Context, SrtpError> {
        master.check()?;
        let kdf = Kdf::new(master)?;
        Ok(Context {
            profile: master.profile,
            rtp: Transform::derive(master.profile, &kdf, LABEL_RTP_ENCRYPTION)?,
            rtcp: Transform::derive(master.profile, &kdf, LABEL_RTCP_ENCRYPTION)?,
        })
    }

    /// The profile this context protects with.
    pub fn profile(&self) -> Profile {
        self.profile
    }

    /// Encrypts the RTP packet in `buf` in place and appends the auth tag.
    ///
    /// `buf` holds the full plaintext RTP packet (header incl. CSRCs and extension, then
    /// payload); the header length is parsed from the packet itself. `roc` = rollover counter
    /// for this SSRC (caller tracks it). On error `buf` is unchanged.
    pub fn protect_rtp(&self, buf: &mut Vec<u8>, roc: u32) -> Result<(), SrtpError> {
        let header_len = rtp_header_len(buf)?;
        let (ssrc, seq) = rtp_ssrc_seq(buf);
        buf.reserve(self.profile.rtp_overhead());
        match &self.rtp {
            Transform::AesCm(cm) => {
                cm.apply_keystream(ssrc, packet_index(roc, seq), &mut buf[header_len..])?;
                let tag = cm.tag(&[buf, &roc.to_be_bytes()]);
                buf.extend_from_slice(&tag);
            }
            Transform::Gcm(gcm) => {
                let (header, payload) = buf.split_at_mut(header_len);
                let nonce = gcm.rtp_nonce(ssrc, roc, seq);
                let tag = gcm
                    .key
                    .seal_in_place_separate_tag(nonce, Aad::from(&*header), payload)
                    .map_err(crypto)?;
                buf.extend_from_slice(tag.as_ref());
            }
        }
        Ok(())
    }

    /// Inverse of [`Context::protect_rtp`], for tests and diagnostics: verifies and strips the
    /// tag, decrypts in place. On error the contents of `buf` are unspecified.
    pub fn unprotect_rtp(&self, buf: &mut Vec<u8>, roc: u32) -> Result<(), SrtpError> {
        let tag_len = self.profile.tag_len();
        let body_len = buf.len().checked_sub(tag_len).ok_or(SrtpError::TooShort)?;
        let header_len = rtp_header_len(&buf[..body_len])?;
        let (ssrc, seq) = rtp_ssrc_seq(buf);
        match &self.rtp {
            Transform::AesCm(cm) => {
                let (body, tag) = buf.split_at(body_len);
                let expected = cm.tag(&[body, &roc.to_be_bytes()]);
                verify_slices_are_equal(&expected, tag).map_err(|_| SrtpError::AuthFailed)?;
                cm.apply_keystream(ssrc, packet_index(roc, seq), &mut buf[header_len..body_len])?;
            }
            Transform::Gcm(gcm) => {
                let (header, sealed) = buf.split_at_mut(header_len);
                let nonce = gcm.rtp_nonce(ssrc, roc, seq);
                gcm.key
                    .open_in_place(nonce, Aad::from(&*header), sealed)
                    .map_err(|_| SrtpError::AuthFailed)?;
            }
        }
        buf.truncate(body_len);
        Ok(())
    }

    /// Encrypts an RTCP compound packet in place: appends E-flag|SRTCP index (E=1, encrypted)
    /// and the tag. `index` < 2^31; the caller counts it per SSRC. On error `buf` is unchanged.
    pub fn protect_rtcp(&self, buf: &mut Vec<u8>, index: u32) -> Result<(), SrtpError> {
        if index & E_FLAG != 0 {
            return Err(SrtpError::IndexOutOfRange(index));
        }
        if buf.len() < RTCP_HEADER_LEN {
            return Err(SrtpError::TooShort);
        }
        let ssrc = rtcp_ssrc(buf);
        let word = (E_FLAG | index).to_be_bytes();
        buf.reserve(self.profile.rtcp_overhead());
        match &self.rtcp {
            Transform::AesCm(cm) => {
                cm.apply_keystream(ssrc, u64::from(index), &mut buf[RTCP_HEADER_LEN..])?;
                buf.extend_from_slice(&word);
                let tag = cm.tag(&[buf]);
                buf.extend_from_slice(&tag);
            }
            Transform::Gcm(gcm) => {
                let (header, payload) = buf.split_at_mut(RTCP_HEADER_LEN);
                let aad = rtcp_gcm_aad(header, word);
                let nonce = gcm.rtcp_nonce(ssrc, index);
                let tag = gcm
                    .key
                    .seal_in_place_separate_tag(nonce, Aad::from(aad), payload)
                    .map_err(crypto)?;
                buf.extend_from_slice(tag.as_ref());
                buf.extend_from_slice(&word);
            }
        }
        Ok(())
    }

    /// Verifies and decrypts an SRTCP packet in place, strips the trailer; returns the SRTCP
    /// index. Accepts E=0 (authenticated only) as well. On error the contents of `buf` are
    /// unspecified.
    pub fn unprotect_rtcp(&self, buf: &mut Vec<u8>) -> Result<u32, SrtpError> {
        let tag_len = self.profile.tag_len();
        let n = buf.len();
        if n < RTCP_HEADER_LEN + SRTCP_WORD_LEN + tag_len {
            return Err(SrtpError::TooShort);
        }
        let ssrc = rtcp_ssrc(buf);
        // The RTCP packet ends before the trailer, whose order differs per transform.
        let plain_len = n - SRTCP_WORD_LEN - tag_len;
        match &self.rtcp {
            Transform::AesCm(cm) => {
                // RTCP | E+index | tag (RFC 3711 §3.4).
                let (authenticated, tag) = buf.split_at(n - tag_len);
                let word = be_u32(&authenticated[plain_len..]);
                let expected = cm.tag(&[authenticated]);
                verify_slices_are_equal(&expected, tag).map_err(|_| SrtpError::AuthFailed)?;
                let index = word & !E_FLAG;
                if word & E_FLAG != 0 {
                    cm.apply_keystream(
                        ssrc,
                        u64::from(index),
                        &mut buf[RTCP_HEADER_LEN..plain_len],
                    )?;
                }
                buf.truncate(plain_len);
                Ok(index)
            }
            Transform::Gcm(gcm) => {
                // RTCP | tag | E+index (RFC 7714 §9, Figure 3).
                let word = be_u32(&buf[n - SRTCP_WORD_LEN..]);
                let index = word & !E_FLAG;
                let nonce = gcm.rtcp_nonce(ssrc, index);
                if word & E_FLAG != 0 {
                    let (header, rest) = buf.split_at_mut(RTCP_HEADER_LEN);
                    let aad = rtcp_gcm_aad(header, word.to_be_bytes());
                    let sealed = &mut rest[..n - RTCP_HEADER_LEN - SRTCP_WORD_LEN];
                    gcm.key
                        .open_in_place(nonce, Aad::from(aad), sealed)
                        .map_err(|_| SrtpError::AuthFailed)?;
                } else {
                    // §9.3: the whole RTCP packet and the E+index word are AAD, the plaintext
                    // is empty. Swap the word in front of the tag so the AAD is contiguous.
                    buf[plain_len..].rotate_right(SRTCP_WORD_LEN);
                    let (aad, tag) = buf.split_at_mut(n - tag_len);
                    gcm.key
                        .open_in_place(nonce, Aad::from(&*aad), tag)
                        .map_err(|_| SrtpError::AuthFailed)?;
                }
                buf.truncate(plain_len);
                Ok(index)
            }
        }
    }
}

/// One direction's (SRTP or SRTCP) prepared session keys.
// AES-CM carries its AES key schedule and HMAC state inline (~1.7 KB). A context is built once per
// subscriber and stays put, so the size costs nothing, while a Box would add a pointer chase to
// every packet.
#[allow(clippy::large_enum_variant)]
enum Transform {
    AesCm(AesCm),
    Gcm(Gcm),
}

impl Transform {
    /// Derives the session keys whose encryption label is `label` (0 for SRTP, 3 for SRTCP).
    fn derive(profile: Profile, kdf: &Kdf, label: u8) -> Result<Transform, SrtpError> {
        match profile {
            Profile::Aes128CmSha1_80 => {
                let mut key = [0u8; 16];
                let mut auth = [0u8; CM_AUTH_KEY_LEN];
                let mut salt = [0u8; CM_SALT_LEN];
                kdf.derive(label, &mut key)?;
                kdf.derive(label + LABEL_AUTH, &mut auth)?;
                kdf.derive(label + LABEL_SALT, &mut salt)?;
                let t = AesCm::new(&key, &auth, salt);
                wipe(&mut key);
                wipe(&mut auth);
                Ok(Transform::AesCm(t?))
            }
            Profile::AeadAes128Gcm | Profile::AeadAes256Gcm => {
                let mut key = [0u8; 32];
                let key = &mut key[..profile.master_key_len()];
                let mut salt = [0u8; GCM_SALT_LEN];
                kdf.derive(label, key)?;
                kdf.derive(label + LABEL_SALT, &mut salt)?;
                let t = Gcm::new(key, salt);
                wipe(key);
                Ok(Transform::Gcm(t?))
            }
        }
    }
}

/// AES-CM encryption with HMAC-SHA1-80 authentication (RFC 3711 §4.1.1, §4.2.1).
struct AesCm {
    cipher: EncryptingKey,
    auth: hmac::Key,
    salt: [u8; CM_SALT_LEN],
}

impl AesCm {
    fn new(key: &[u8], auth: &[u8], salt: [u8; CM_SALT_LEN]) -> Result<AesCm, SrtpError> {
        let cipher = UnboundCipherKey::new(&AES_128, key)
            .and_then(EncryptingKey::ctr)
            .map_err(crypto)?;
        Ok(AesCm {
            cipher,
            auth: hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, auth),
            salt,
        })
    }

    /// XORs `data` with the keystream for `ssrc` and the 48-bit index `index`:
    /// IV = (k_s * 2^16) XOR (SSRC * 2^64) XOR (i * 2^16).
    fn apply_keystream(&self, ssrc: u32, index: u64, data: &mut [u8]) -> Result<(), SrtpError> {
        if data.is_empty() {
            return Ok(());
        }
        if data.len() > CM_MAX_PAYLOAD {
            return Err(SrtpError::TooLong);
        }
        let mut iv = [0u8; 16];
        iv[..CM_SALT_LEN].copy_from_slice(&self.salt);
        xor_into(&mut iv[4..8], &ssrc.to_be_bytes());
        xor_into(&mut iv[8..14], &index.to_be_bytes()[2..]);
        let context = EncryptionContext::Iv128(FixedLength::from(iv));
        self.cipher
            .less_safe_encrypt(data, context)
            .map_err(crypto)?;
        Ok(())
    }

    /// HMAC-SHA1 over the concatenation of `parts`, truncated to 80 bits.
    fn tag(&self, parts: &[&[u8]]) -> [u8; CM_TAG_LEN] {
        let mut ctx = hmac::Context::with_key(&self.auth);
        for part in parts {
            ctx.update(part);
        }
        let full = ctx.sign();
        let mut tag = [0u8; CM_TAG_LEN];
        tag.copy_from_slice(&full.as_ref()[..CM_TAG_LEN]);
        tag
    }
}

/// AES-GCM (RFC 7714).
struct Gcm {
    key: LessSafeKey,
    salt: [u8; GCM_SALT_LEN],
}

impl Gcm {
    fn new(key: &[u8], salt: [u8; GCM_SALT_LEN]) -> Result<Gcm, SrtpError> {
        let algorithm = match key.len() {
            16 => &aead::AES_128_GCM,
            _ => &aead::AES_256_GCM,
        };
        let key = UnboundKey::new(algorithm, key).map_err(crypto)?;
        Ok(Gcm {
            key: LessSafeKey::new(key),
            salt,
        })
    }

    /// RFC 7714 §8.1: (00 00 || SSRC || ROC || SEQ) XOR salt.
    fn rtp_nonce(&self, ssrc: u32, roc: u32, seq: u16) -> Nonce {
        let mut iv = [0u8; GCM_SALT_LEN];
        iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
        iv[6..10].copy_from_slice(&roc.to_be_bytes());
        iv[10..12].copy_from_slice(&seq.to_be_bytes());
        xor_into(&mut iv, &self.salt);
        Nonce::assume_unique_for_key(iv)
    }

    /// RFC 7714 §9.1: (00 00 || SSRC || 00 00 || 0 || SRTCP index) XOR salt.
    fn rtcp_nonce(&self, ssrc: u32, index: u32) -> Nonce {
        let mut iv = [0u8; GCM_SALT_LEN];
        iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
        iv[8..12].copy_from_slice(&(index & !E_FLAG).to_be_bytes());
        xor_into(&mut iv, &self.salt);
        Nonce::assume_unique_for_key(iv)
    }
}

/// RFC 3711 §4.3.3 AES-CM PRF under the master key, key derivation rate 0.
struct Kdf {
    cipher: EncryptingKey,
    /// The master salt as the 112-bit value of RFC 3711. A GCM 96-bit salt is multiplied by
    /// 2^16 (RFC 7714 §11, erratum 4938): it fills the first 12 bytes, the last 2 stay zero.
    salt: [u8; CM_SALT_LEN],
}

impl Kdf {
    fn new(master: &MasterKey) -> Result<Kdf, SrtpError> {
        let algorithm = match master.key.len() {
            16 => &AES_128,
            _ => &AES_256,
        };
        let cipher = UnboundCipherKey::new(algorithm, &master.key)
            .and_then(EncryptingKey::ctr)
            .map_err(crypto)?;
        let mut salt = [0u8; CM_SALT_LEN];
        salt[..master.salt.len()].copy_from_slice(&master.salt);
        Ok(Kdf { cipher, salt })
    }

    /// Fills `out` with PRF_n(k_master, x): the AES-CM keystream for IV = x * 2^16, where
    /// x = key_id XOR master_salt and key_id = label || (index DIV kdr) = label || 0^48, so the
    /// label lands in byte 7 of the 14-byte salt.
    fn derive(&self, label: u8, out: &mut [u8]) -> Result<(), SrtpError> {
        let mut iv = [0u8; 16];
        iv[..CM_SALT_LEN].copy_from_slice(&self.salt);
        iv[7] ^= label;
        out.fill(0);
        let context = EncryptionContext::Iv128(FixedLength::from(iv));
        self.cipher
            .less_safe_encrypt(out, context)
            .map_err(crypto)?;
        Ok(())
    }
}

impl Drop for Kdf {
    fn drop(&mut self) {
        wipe(&mut self.salt);
    }
}

/// Length of the RTP header at the start of `packet`: fixed part, CSRCs, header extension.
fn rtp_header_len(packet: &[u8]) -> Result<usize, SrtpError> {
    let first = *packet.first().ok_or(SrtpError::TooShort)?;
    if first >> 6 != 2 {
        return Err(SrtpError::NotRtp(first >> 6));
    }
    let csrc_count = usize::from(first & 0x0f);
    let mut len = RTP_HEADER_LEN + 4 * csrc_count;
    if first & 0x10 != 0 {
        // RFC 3550 §5.3.1: 16-bit profile-defined field, 16-bit length in 32-bit words.
        let words = packet.get(len + 2..len + 4).ok_or(SrtpError::TooShort)?;
        len += 4 + 4 * usize::from(u16::from_be_bytes([words[0], words[1]]));
    }
    if len > packet.len() {
        return Err(SrtpError::TooShort);
    }
    Ok(len)
}

/// SSRC and sequence number of a packet [`rtp_header_len`] accepted (so at least 12 bytes).
fn rtp_ssrc_seq(packet: &[u8]) -> (u32, u16) {
    (
        be_u32(&packet[8..12]),
        u16::from_be_bytes([packet[2], packet[3]]),
    )
}

/// Sender SSRC of an RTCP packet of at least 8 bytes.
fn rtcp_ssrc(packet: &[u8]) -> u32 {
    be_u32(&packet[4..8])
}

/// RFC 7714 §9.2: the AAD of encrypted SRTCP is the first 8 octets followed by E+index.
fn rtcp_gcm_aad(header: &[u8], word: [u8; 4]) -> [u8; RTCP_HEADER_LEN + SRTCP_WORD_LEN] {
    let mut aad = [0u8; RTCP_HEADER_LEN + SRTCP_WORD_LEN];
    aad[..RTCP_HEADER_LEN].copy_from_slice(header);
    aad[RTCP_HEADER_LEN..].copy_from_slice(&word);
    aad
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn xor_into(dst: &mut [u8], src: &[u8]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d ^= s;
    }
}

/// Best effort: overwrite key bytes we no longer need (the key objects keep their own copy).
fn wipe(bytes: &mut [u8]) {
    bytes.fill(0);
    std::hint::black_box(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ALL: [Profile; 3] = [
        Profile::Aes128CmSha1_80,
        Profile::AeadAes128Gcm,
        Profile::AeadAes256Gcm,
    ];

    fn hex(s: &str) -> Vec<u8> {
        let digits: Vec<u8> = s
            .bytes()
            .filter(|b| !b.is_ascii_whitespace())
            .map(|b| match b {
                b'0'..=b'9' => b - b'0',
                b'a'..=b'f' => b - b'a' + 10,
                b'A'..=b'F' => b - b'A' + 10,
                _ => panic!("not hex: {}", b as char),
            })
            .collect();
        assert!(digits.len().is_multiple_of(2), "odd hex length");
        digits.chunks(2).map(|p| p[0] << 4 | p[1]).collect()
    }

    fn master(profile: Profile, seed: u8) -> MasterKey {
        MasterKey {
            profile,
            key: (0..profile.master_key_len() as u8)
                .map(|i| i.wrapping_mul(7) ^ seed)
                .collect(),
            salt: (0..profile.master_salt_len() as u8)
                .map(|i| i.wrapping_mul(13) ^ seed.rotate_left(3))
                .collect(),
        }
    }

    /// A context whose SRTP and SRTCP session keys are given directly (the RFC 7714 vectors
    /// and RFC 3711 B.2 start from session keys, not master keys).
    fn from_session_keys(profile: Profile, key: &[u8], auth: &[u8], salt: &[u8]) -> Context {
        let transform = || match profile {
            Profile::Aes128CmSha1_80 => {
                Transform::AesCm(AesCm::new(key, auth, salt.try_into().unwrap()).unwrap())
            }
            _ => Transform::Gcm(Gcm::new(key, salt.try_into().unwrap()).unwrap()),
        };
        Context {
            profile,
            rtp: transform(),
            rtcp: transform(),
        }
    }

    fn kdf_output(master: &MasterKey, label: u8, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        Kdf::new(master).unwrap().derive(label, &mut out).unwrap();
        out
    }

    /// Checks what the KDF derives from `master` for each `(label, expected hex)`; the output
    /// is as long as the expected value.
    fn check_kdf(master: &MasterKey, expected: &[(u8, &str)]) {
        for &(label, want) in expected {
            let want = hex(want);
            assert_eq!(kdf_output(master, label, want.len()), want, "label {label}");
        }
    }

    /// Checks a known-answer RTP vector: `plain` protected with `roc` is `wire`, and unprotects
    /// back to `plain`.
    fn check_rtp(ctx: &Context, roc: u32, plain: &[u8], wire: &[u8]) {
        let profile = ctx.profile;
        let mut buf = plain.to_vec();
        ctx.protect_rtp(&mut buf, roc).unwrap();
        assert_eq!(buf, wire, "{profile:?} SRTP encryption");
        ctx.unprotect_rtp(&mut buf, roc).unwrap();
        assert_eq!(buf, plain, "{profile:?} SRTP decryption");
    }

    /// Checks a known-answer RTCP vector: `plain` protected with SRTCP `index` is `wire`, and
    /// unprotects back to `plain` and `index`.
    fn check_rtcp(ctx: &Context, index: u32, plain: &[u8], wire: &[u8]) {
        let profile = ctx.profile;
        let mut buf = plain.to_vec();
        ctx.protect_rtcp(&mut buf, index).unwrap();
        assert_eq!(buf, wire, "{profile:?} SRTCP encryption");
        assert_eq!(ctx.unprotect_rtcp(&mut buf).unwrap(), index);
        assert_eq!(buf, plain, "{profile:?} SRTCP decryption");
    }

    /// 12 fixed + 2 CSRCs + 4 extension header + 2 extension words.
    const FIXTURE_HEADER_LEN: usize = 12 + 8 + 4 + 8;

    /// An RTP packet with 2 CSRCs, a one-byte-header extension of 2 words, and `payload`.
    fn rtp_with_csrcs_and_extension(seq: u16, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x92, 0x60];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&0x0102_0304u32.to_be_bytes()); // timestamp
        p.extend_from_slice(&0xcafe_babeu32.to_be_bytes()); // SSRC
        p.extend_from_slice(&0x1111_1111u32.to_be_bytes()); // CSRC 1
        p.extend_from_slice(&0x2222_2222u32.to_be_bytes()); // CSRC 2
        p.extend_from_slice(&[0xbe, 0xde, 0x00, 0x02]); // extension header, 2 words
        p.extend_from_slice(&[0x10, 0xaa, 0x21, 0xbb, 0xcc, 0x00, 0x00, 0x00]);
        p.extend_from_slice(payload);
        p
    }

    /// A sender report (no report blocks) followed by an SDES CNAME chunk.
    fn rtcp_compound() -> Vec<u8> {
        let mut p = hex("80c8 0006 cafebabe 83aa7e80 00000000 0001e240 00000017 00000b40");
        p.extend_from_slice(&hex("81ca 0003 cafebabe 0104 6162 6364 0000"));
        p
    }

    // ---- RFC 3711 Appendix B.3 / RFC 6188 §7.2: key derivation -------------------------

    #[test]
    fn rfc3711_b3_key_derivation() {
        let m = MasterKey {
            profile: Profile::Aes128CmSha1_80,
            key: hex("E1F97A0D3E018BE0D64FA32C06DE4139"),
            salt: hex("0EC675AD498AFEEBB6960B3AABE6"),
        };
        check_kdf(
            &m,
            &[
                (0x00, "C61E7A93744F39EE10734AFE3FF7A087"),
                (0x02, "30CBBC08863D8C85D49DB34A9AE1"),
                // The RFC lists 94 bytes of the auth key keystream; HMAC-SHA1 uses the first 20.
                (
                    0x01,
                    "CEBE321F6FF7716B6FD4AB49AF256A15 6D38BAA48F0A0ACF3C34E2359E6CDBCE
                     E049646C43D9327AD175578EF7227098 6371C10C9A369AC2F94A8C5FBCDDDC25
                     6D6E919A48B610EF17C2041E47403576 6B68642C59BBFC2F34DB60DBDFB2",
                ),
            ],
        );
    }

    /// The AES-256 PRF that `AeadAes256Gcm` derives with (checked with a 14-byte salt, as the
    /// RFC gives it; the GCM salt rule is covered by the libsrtp vectors below).
    #[test]
    fn rfc6188_7_2_aes256_key_derivation() {
        let m = MasterKey {
            profile: Profile::AeadAes256Gcm,
            key: hex("f0f04914b513f2763a1b1fa130f10e29 98f6f6e43e4309d1e622a0e332b9f1b6"),
            salt: hex("3b04803de51ee7c96423ab5b78d2"),
        };
        check_kdf(
            &m,
            &[
                (
                    0x00,
                    "5ba1064e30ec51613cad926c5a28ef73 1ec7fb397f70a960653caf06554cd8c4",
                ),
                (0x02, "fa31791685ca444a9e07c6c64e93"),
                (0x01, "fd9c32d39ed5fbb5a9dc96b30818454d1313dc05"),
            ],
        );
    }

    // ---- RFC 3711 Appendix B.2 and libsrtp's reference packets: AES-CM -----------------

    #[test]
    fn rfc3711_b2_aes_cm_keystream() {
        let ctx = from_session_keys(
            Profile::Aes128CmSha1_80,
            &hex("2B7E151628AED2A6ABF7158809CF4F3C"),
            &[0; CM_AUTH_KEY_LEN],
            &hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD"),
        );
        // SSRC 0, SEQ 0, ROC 0: the IV is the salt itself, so zeros encrypt to the keystream.
        let mut buf = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        buf.extend_from_slice(&[0; 48]);
        ctx.protect_rtp(&mut buf, 0).unwrap();
        assert_eq!(
            &buf[12..60],
            &hex(
                "E03EAD0935C95E80E166B16DD92B4EB4 D23513162B02D0F72A43A2FE4A5F97AB
                  41E95B3BB0A2E8DD477901E4FCA894C0"
            )[..]
        );
    }

    fn libsrtp_master_cm() -> MasterKey {
        MasterKey {
            profile: Profile::Aes128CmSha1_80,
            key: hex("e1f97a0d3e018be0d64fa32c06de4139"),
            salt: hex("0ec675ad498afeebb6960b3aabe6"),
        }
    }

    /// libsrtp test/srtp_driver.c `srtp_validate`: the whole SRTP pipeline from a master key
    /// (KDF, IV, encryption, HMAC with ROC) against an independent implementation.
    #[test]
    fn libsrtp_aes_cm_rtp_packet() {
        let ctx = Context::new(&libsrtp_master_cm()).unwrap();
        let plain = hex("800f1234decafbadcafebabe abababababababababababababababab");
        let wire = hex("800f1234decafbadcafebabe 4e55dc4ce79978d88ca4d215949d2402
                        b78d6acc99ea179b8dbb");
        check_rtp(&ctx, 0, &plain, &wire);
    }

    /// libsrtp `srtp_validate` SRTCP half: SRTCP labels, E flag, index 1.
    #[test]
    fn libsrtp_aes_cm_rtcp_packet() {
        let ctx = Context::new(&libsrtp_master_cm()).unwrap();
        let plain = hex("81c8000bcafebabe abababababababababababababababab");
        let wire = hex("81c8000bcafebabe 7128035be487b9bdbef89041f977a5a8 80000001
                        993e08cd54d6c1230798");
        check_rtcp(&ctx, 1, &plain, &wire);
    }

    // ---- RFC 7714 §16, §17: AES-GCM from session keys ----------------------------------

    const RFC7714_KEY_128: &str = "000102030405060708090a0b0c0d0e0f";
    const RFC7714_KEY_256: &str =
        "000102030405060708090a0b0c0d0e0f 101112131415161718191a1b1c1d1e1f";
    /// "Quid pro quo"
    const RFC7714_SALT: &str = "517569642070726f2071756f";
    /// RTP header 8040f17b 8041f8d3 5501a0b2 (SEQ 0xf17b, SSRC 0x5501a0b2, ROC 0) and
    /// "Gallia est omnis divisa in partes tres".
    const RFC7714_RTP: &str = "8040f17b 8041f8d3 5501a0b2 47616c6c 69612065 7374206f 6d6e6973
                               20646976 69736120 696e2070 61727465 73207472 6573";
    /// Sender report, SSRC 0x4d617273, SRTCP index 0x5d4.
    const RFC7714_RTCP: &str = "81c8000d 4d617273 4e545031 4e545032 52545020 0000042a 0000e930
                                4c756e61 deadbeef deadbeef deadbeef deadbeef deadbeef";

    fn rfc7714_context(profile: Profile) -> Context {
        let key = match profile {
            Profile::AeadAes256Gcm => RFC7714_KEY_256,
            _ => RFC7714_KEY_128,
        };
        from_session_keys(profile, &hex(key), &[], &hex(RFC7714_SALT))
    }

    fn check_rfc7714(profile: Profile, srtp: &str, srtcp: &str, srtcp_unencrypted: &str) {
        let ctx = rfc7714_context(profile);
        check_rtp(&ctx, 0, &hex(RFC7714_RTP), &hex(srtp));
        let plain = hex(RFC7714_RTCP);
        check_rtcp(&ctx, 0x5d4, &plain, &hex(srtcp));

        // E=0: authenticated only (the §17 verification vectors).
        let mut buf = hex(srtcp_unencrypted);
        assert_eq!(ctx.unprotect_rtcp(&mut buf).unwrap(), 0x5d4);
        assert_eq!(buf, plain, "{profile:?} SRTCP verification");
    }

    #[test]
    fn rfc7714_aead_aes_128_gcm() {
        check_rfc7714(
            Profile::AeadAes128Gcm,
            "8040f17b 8041f8d3 5501a0b2 f24de3a3 fb34de6c acba861c 9d7e4bca be633bd5 0d294e6f
             42a5f47a 51c7d19b 36de3adf 8833899d 7f27beb1 6a9152cf 765ee439 0cce",
            "81c8000d 4d617273 63e94885 dcdab67c a727d766 2f6b7e99 7ff5c0f7 6c06f32d c676a5f1
             730d6fda 4ce09b46 86303ded 0bb9275b c84aa458 96cf4d2f c5abf872 45d9eade 800005d4",
            "81c8000d 4d617273 4e545031 4e545032 52545020 0000042a 0000e930 4c756e61 deadbeef
             deadbeef deadbeef deadbeef deadbeef 841dd968 3dd78ec9 2ae58790 125f62b3 000005d4",
        );
    }

    #[test]
    fn rfc7714_aead_aes_256_gcm() {
        check_rfc7714(
            Profile::AeadAes256Gcm,
            "8040f17b 8041f8d3 5501a0b2 32b1de78 a822fe12 ef9f78fa 332e33aa b1801238 9a58e2f3
             b50b2a02 76ffae0f 1ba63799 b87b7aa3 db36dfff d6b0f9bb 7878d7a7 6c13",
            "81c8000d 4d617273 d50ae4d1 f5ce5d30 4ba297e4 7d470c28 2c3ece5d bffe0a50 a2eaa5c1
             110555be 8415f658 c61de047 6f1b6fad 1d1eb30c 4446839f 57ff6f6c b26ac3be 800005d4",
            "81c8000d 4d617273 4e545031 4e545032 52545020 0000042a 0000e930 4c756e61 deadbeef
             deadbeef deadbeef deadbeef deadbeef 91db4afb feee5a97 8fab4393 ed2615fe 000005d4",
        );
    }

    // ---- libsrtp AEAD_AES_128_GCM from a master key: the GCM KDF salt rule ------------

    /// libsrtp's GCM validation vectors (test/srtp_driver.c) start from a 16-byte master key
    /// and 12-byte master salt, so they pin how the 96-bit salt enters the KDF (right-padded
    /// with zeros, RFC 7714 erratum 4938). The RTP packet carries a header extension.
    fn libsrtp_master_gcm() -> MasterKey {
        MasterKey {
            profile: Profile::AeadAes128Gcm,
            key: hex("e1f97a0d3e018be0d64fa32c06de4139"),
            salt: hex("0ec675ad498afeebb6960b3a"),
        }
    }

    #[test]
    fn libsrtp_gcm_rtp_packet_with_extension() {
        let ctx = Context::new(&libsrtp_master_gcm()).unwrap();
        let plain = hex(
            "900f1234decafbad cafebabebede0006 17414273A4752627 48220000C8308E46
                         55996386B395FB00 abababababababab abababababababab",
        );
        let wire = hex(
            "900f1234decafbadcafebabebede000617414273a475262748220000c8308e46
                        55996386b395fb00 0eca0cf95ee955b26cd3d288b49f6ca9
                        e0eb4eab09af2baef6804f141b9b02b0",
        );
        check_rtp(&ctx, 0, &plain, &wire);
    }

    #[test]
    fn libsrtp_gcm_rtcp_packet() {
        let ctx = Context::new(&libsrtp_master_gcm()).unwrap();
        let plain = hex(
            "c80006f3cb200183ab03a1eb020b3a000094200000009e00009b8881ca0005f3
                         cb2001010a6f757468616e6e656c00000000",
        );
        let wire = hex(
            "c80006f3cb2001836e87f6bdcdb482b1997e0b097cae3c38df506b92692b408d
                        da5a40326902a488b6126e8d229a810cedec9de3e6e4876bc08e75eda2f7dc33
                        67a080000001",
        );
        check_rtcp(&ctx, 1, &plain, &wire);

        // Authenticated only (E=0).
        let mut buf = hex(
            "c80006f3cb200183ab03a1eb020b3a000094200000009e00009b8881ca0005f3
                           cb2001010a6f757468616e6e656c000000001963d61ae031b347f39bc3ad9fbb
                           64fc00000001",
        );
        assert_eq!(ctx.unprotect_rtcp(&mut buf).unwrap(), 1);
        assert_eq!(buf, plain);
    }

    // ---- Round trips, tampering, roles ---------------------------------------------------

    #[test]
    fn round_trips_every_profile() {
        for profile in ALL {
            let ctx = Context::new(&master(profile, 0x5a)).unwrap();

            let plain = rtp_with_csrcs_and_extension(0xfffe, b"forwarded media payload");
            let mut buf = plain.clone();
            ctx.protect_rtp(&mut buf, 7).unwrap();
            assert_eq!(buf.len(), plain.len() + profile.rtp_overhead());
            // The header (CSRCs and extension too) stays in the clear, the payload does not.
            let header = FIXTURE_HEADER_LEN;
            assert_eq!(rtp_header_len(&plain).unwrap(), header);
            assert_eq!(buf[..header], plain[..header], "{profile:?}");
            assert_ne!(buf[header..plain.len()], plain[header..], "{profile:?}");
            ctx.unprotect_rtp(&mut buf, 7).unwrap();
            assert_eq!(buf, plain, "{profile:?}");

            // Header only, no payload.
            let plain = rtp_with_csrcs_and_extension(1, b"");
            let mut buf = plain.clone();
            ctx.protect_rtp(&mut buf, 0).unwrap();
            ctx.unprotect_rtp(&mut buf, 0).unwrap();
            assert_eq!(buf, plain, "{profile:?}");

            let plain = rtcp_compound();
            let mut buf = plain.clone();
            ctx.protect_rtcp(&mut buf, 0x7fff_ffff).unwrap();
            assert_eq!(buf.len(), plain.len() + profile.rtcp_overhead());
            assert_eq!(buf[..8], plain[..8], "{profile:?}");
            assert_ne!(buf[8..plain.len()], plain[8..], "{profile:?}");
            assert_eq!(ctx.unprotect_rtcp(&mut buf).unwrap(), 0x7fff_ffff);
            assert_eq!(buf, plain, "{profile:?}");
        }
    }

    #[test]
    fn wrong_roc_or_key_fails() {
        for profile in ALL {
            let ctx = Context::new(&master(profile, 1)).unwrap();
            let other = Context::new(&master(profile, 2)).unwrap();
            let mut buf = rtp_with_csrcs_and_extension(9, b"payload");
            ctx.protect_rtp(&mut buf, 3).unwrap();
            assert!(matches!(
                ctx.unprotect_rtp(&mut buf.clone(), 4),
                Err(SrtpError::AuthFailed)
            ));
            assert!(matches!(
                other.unprotect_rtp(&mut buf.clone(), 3),
                Err(SrtpError::AuthFailed)
            ));
            let mut buf = rtcp_compound();
            ctx.protect_rtcp(&mut buf, 5).unwrap();
            assert!(matches!(
                other.unprotect_rtcp(&mut buf),
                Err(SrtpError::AuthFailed)
            ));
        }
    }

    #[test]
    fn any_flipped_byte_fails() {
        for profile in ALL {
            let ctx = Context::new(&master(profile, 9)).unwrap();

            let mut rtp = rtp_with_csrcs_and_extension(100, b"0123456789abcdef!");
            ctx.protect_rtp(&mut rtp, 0).unwrap();
            for i in 0..rtp.len() {
                for bit in [0x01, 0x80] {
                    let mut t = rtp.clone();
                    t[i] ^= bit;
                    assert!(ctx.unprotect_rtp(&mut t, 0).is_err(), "{profile:?} RTP {i}");
                }
            }

            let mut rtcp = rtcp_compound();
            ctx.protect_rtcp(&mut rtcp, 42).unwrap();
            for i in 0..rtcp.len() {
                for bit in [0x01, 0x80] {
                    let mut t = rtcp.clone();
                    t[i] ^= bit;
                    assert!(ctx.unprotect_rtcp(&mut t).is_err(), "{profile:?} RTCP {i}");
                }
            }
        }
    }

    #[test]
    fn rejects_malformed_input() {
        let ctx = Context::new(&master(Profile::AeadAes128Gcm, 0)).unwrap();
        // Shorter than the fixed header.
        assert!(matches!(
            ctx.protect_rtp(&mut vec![0x80; 11], 0),
            Err(SrtpError::TooShort)
        ));
        // CSRC count says 15 CSRCs that are not there.
        let mut p = vec![0x8f, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
        p.extend_from_slice(&[0; 20]);
        let before = p.clone();
        assert!(matches!(
            ctx.protect_rtp(&mut p, 0),
            Err(SrtpError::TooShort)
        ));
        assert_eq!(p, before, "buffer untouched on error");
        // Extension header cut off, and extension longer than the packet.
        let mut p = vec![0x90, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xbe, 0xde];
        assert!(matches!(
            ctx.protect_rtp(&mut p, 0),
            Err(SrtpError::TooShort)
        ));
        let mut p = vec![0x90, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xbe, 0xde, 0, 1];
        assert!(matches!(
            ctx.protect_rtp(&mut p, 0),
            Err(SrtpError::TooShort)
        ));
        // Not version 2.
        assert!(matches!(
            ctx.protect_rtp(&mut vec![0x40; 20], 0),
            Err(SrtpError::NotRtp(1))
        ));
        // SRTCP index must fit 31 bits; RTCP needs its 8-byte header.
        assert!(matches!(
            ctx.protect_rtcp(&mut rtcp_compound(), 0x8000_0000),
            Err(SrtpError::IndexOutOfRange(_))
        ));
        assert!(matches!(
            ctx.protect_rtcp(&mut vec![0x80; 7], 0),
            Err(SrtpError::TooShort)
        ));
    }

    #[test]
    fn unencrypted_srtcp_aes_cm() {
        // E=0 under AES-CM: RTCP | 0|index | HMAC over both. Built by hand from the context's
        // own SRTCP keys.
        let ctx = Context::new(&master(Profile::Aes128CmSha1_80, 3)).unwrap();
        let Transform::AesCm(cm) = &ctx.rtcp else {
            unreachable!()
        };
        let plain = rtcp_compound();
        let mut buf = plain.clone();
        buf.extend_from_slice(&77u32.to_be_bytes());
        let tag = cm.tag(&[&buf]);
        buf.extend_from_slice(&tag);
        assert_eq!(ctx.unprotect_rtcp(&mut buf).unwrap(), 77);
        assert_eq!(buf, plain);
    }

    #[test]
    fn keying_material_split_and_roles() {
        for profile in ALL {
            let (k, s) = (profile.master_key_len(), profile.master_salt_len());
            let material: Vec<u8> = (0..profile.keying_material_len() as u8).collect();
            let (local_a, remote_a) = split_keying_material(profile, &material, true).unwrap();
            let (local_p, remote_p) = split_keying_material(profile, &material, false).unwrap();

            // client_write_key | server_write_key | client_write_salt | server_write_salt
            assert_eq!(local_a.key, &material[..k]);
            assert_eq!(remote_a.key, &material[k..2 * k]);
            assert_eq!(local_a.salt, &material[2 * k..2 * k + s]);
            assert_eq!(remote_a.salt, &material[2 * k + s..]);
            assert_eq!(local_a.profile, profile);

            // The two ends of one handshake see mirror images.
            assert_eq!(local_a.key, remote_p.key);
            assert_eq!(local_a.salt, remote_p.salt);
            assert_eq!(remote_a.key, local_p.key);
            assert_eq!(remote_a.salt, local_p.salt);

            // What the client protects, the server unprotects.
            let client = Context::new(&local_a).unwrap();
            let server = Context::new(&remote_p).unwrap();
            let plain = rtp_with_csrcs_and_extension(5, b"hello");
            let mut buf = plain.clone();
            client.protect_rtp(&mut buf, 0).unwrap();
            server.unprotect_rtp(&mut buf, 0).unwrap();
            assert_eq!(buf, plain);

            let mut longer = material.clone();
            longer.push(0);
            for wrong in [&[][..], &material[1..], &longer[..]] {
                assert!(matches!(
                    split_keying_material(profile, wrong, true),
                    Err(SrtpError::KeyingMaterialLength { .. })
                ));
            }
        }
    }

    #[test]
    fn bad_master_key_lengths() {
        let mut m = master(Profile::AeadAes256Gcm, 0);
        m.key.truncate(16);
        assert!(matches!(
            Context::new(&m),
            Err(SrtpError::KeyLength {
                what: "master key",
                expected: 32,
                got: 16
            })
        ));
        let mut m = master(Profile::Aes128CmSha1_80, 0);
        m.salt.truncate(12);
        assert!(matches!(
            Context::new(&m),
            Err(SrtpError::KeyLength {
                what: "master salt",
                ..
            })
        ));
    }

    #[test]
    fn debug_hides_key_bytes() {
        let m = MasterKey {
            profile: Profile::Aes128CmSha1_80,
            key: vec![0xab; 16],
            salt: vec![0xcd; 14],
        };
        let text = format!("{m:?} {:?}", Context::new(&m).unwrap());
        assert!(!text.contains("171") && !text.contains("ab") && !text.contains("205"));
    }

    #[test]
    fn context_is_shareable() {
        fn check<T: Send + Sync>() {}
        check::<Context>();
    }

    #[test]
    fn reserved_capacity_means_no_reallocation() {
        for profile in ALL {
            let ctx = Context::new(&master(profile, 4)).unwrap();
            let mut buf = Vec::with_capacity(200);
            buf.extend_from_slice(&rtp_with_csrcs_and_extension(1, &[7; 100]));
            let ptr = buf.as_ptr();
            ctx.protect_rtp(&mut buf, 0).unwrap();
            assert_eq!(buf.as_ptr(), ptr, "{profile:?}");
        }
    }

    proptest! {
        #[test]
        fn unprotect_never_panics(
            buf in proptest::collection::vec(any::<u8>(), 0..300),
            roc in any::<u32>(),
        ) {
            for profile in ALL {
                let ctx = Context::new(&master(profile, 0)).unwrap();
                // Forging an 80-bit or 128-bit tag by chance does not happen.
                prop_assert!(ctx.unprotect_rtp(&mut buf.clone(), roc).is_err());
                prop_assert!(ctx.unprotect_rtcp(&mut buf.clone()).is_err());
            }
        }

        /// Valid-looking headers reach deeper than random bytes: start from a protected packet,
        /// overwrite a few bytes and cut it anywhere.
        #[test]
        fn damaged_packets_never_panic(
            payload in proptest::collection::vec(any::<u8>(), 0..64),
            edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
            cut in any::<usize>(),
        ) {
            for profile in ALL {
                let ctx = Context::new(&master(profile, 1)).unwrap();
                for rtcp in [false, true] {
                    let mut p = if rtcp {
                        let mut p = rtcp_compound();
                        p.extend_from_slice(&payload);
                        ctx.protect_rtcp(&mut p, 9).unwrap();
                        p
                    } else {
                        let mut p = rtp_with_csrcs_and_extension(3, &payload);
                        ctx.protect_rtp(&mut p, 0).unwrap();
                        p
                    };
                    for (at, value) in &edits {
                        let i = at % p.len();
                        p[i] = *value;
                    }
                    p.truncate(cut % (p.len() + 1));
                    let _ = if rtcp {
                        ctx.unprotect_rtcp(&mut p).map(|_| ())
                    } else {
                        ctx.unprotect_rtp(&mut p, 0)
                    };
                }
            }
        }

        #[test]
        fn round_trip_any_payload(
            payload in proptest::collection::vec(any::<u8>(), 0..1200),
            csrcs in 0u8..16,
            ext_words in proptest::option::of(0u16..8),
            seq in any::<u16>(),
            roc in any::<u32>(),
            index in 0u32..0x8000_0000,
        ) {
            let mut plain = vec![0x80 | csrcs, 96];
            plain.extend_from_slice(&seq.to_be_bytes());
            plain.extend_from_slice(&[0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef]);
            for c in 0..csrcs {
                plain.extend_from_slice(&u32::from(c).to_be_bytes());
            }
            if let Some(words) = ext_words {
                plain[0] |= 0x10;
                plain.extend_from_slice(&[0xbe, 0xde]);
                plain.extend_from_slice(&words.to_be_bytes());
                plain.extend(std::iter::repeat_n(0x5a, 4 * usize::from(words)));
            }
            plain.extend_from_slice(&payload);
            for profile in ALL {
                let ctx = Context::new(&master(profile, 2)).unwrap();
                let mut buf = plain.clone();
                ctx.protect_rtp(&mut buf, roc).unwrap();
                ctx.unprotect_rtp(&mut buf, roc).unwrap();
                prop_assert_eq!(&buf, &plain);

                let mut rtcp = rtcp_compound();
                rtcp.extend_from_slice(&payload);
                let mut buf = rtcp.clone();
                ctx.protect_rtcp(&mut buf, index).unwrap();
                prop_assert_eq!(ctx.unprotect_rtcp(&mut buf).unwrap(), index);
                prop_assert_eq!(&buf, &rtcp);
            }
        }
    }
}
