//! SRTP and SRTCP against the published test vectors (RFC 3711 appendix B, RFC 6188, RFC 7714,
//! libsrtp's reference packets) and round-trip properties for every profile.

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
const RFC7714_KEY_256: &str = "000102030405060708090a0b0c0d0e0f 101112131415161718191a1b1c1d1e1f";
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
