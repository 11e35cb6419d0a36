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
mod tests;
