//! The key ring: signing, verification and every refusal, with scripted time.

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
        region: None,
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

/// `tok` with its header replaced by `header` (JSON), payload and signature kept.
fn with_header(tok: &str, header: &[u8]) -> String {
    let (_, rest) = tok.split_once('.').expect("a JWT");
    format!("{}.{rest}", b64(header))
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
    let hs512 = with_header(&tok, br#"{"alg":"HS512","kid":"k1"}"#);
    assert_eq!(r.verify(&hs512, NOW), Err(AuthError::UnsupportedAlg));
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
    let hs256 = with_header(&tok, br#"{"alg":"HS256","kid":"ed"}"#);
    assert_eq!(r.verify(&hs256, NOW), Err(AuthError::UnsupportedAlg));
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
        region: None,
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
        format!(r#"{{"sub":"{sub}","iss":"{iss}","aud":{aud},"jti":"{jti}","exp":{exp}{extra}}}"#)
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
    let long_region = format!(r#","region":"{}""#, big(MAX_REGION_BYTES + 1));
    for (p, claim) in [
        (payload("u", "j", iss, aud, &long_region), "region"),
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
    q.region = Some("e".repeat(MAX_REGION_BYTES + 1));
    assert!(r.mint(&q, NOW).unwrap_err().contains("region"));
    q.region = Some("eu-west".into());
    let (tok, _) = r.mint(&q, NOW).unwrap();
    assert_eq!(
        r.verify(&tok, NOW).unwrap().region.as_deref(),
        Some("eu-west")
    );
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
