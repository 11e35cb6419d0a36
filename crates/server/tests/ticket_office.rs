//! The ticket office over real HTTP on loopback.

mod common;
use common::*;
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{json, Value};
use switchboard_auth::{unix_now, Claims, KeyRing, Scope, Scopes};

async fn metric(base: &str, needle: &str) -> f64 {
    metric_in(&scrape(base.trim_start_matches("http://")).await, needle)
}

/// `POST /v1/token` authenticated with the API key `id:secret`, with `body` as JSON.
async fn token_with_key(
    c: &reqwest::Client,
    b: &str,
    (id, secret): (&str, &str),
    body: Option<Value>,
) -> reqwest::Response {
    let mut r = c.post(format!("{b}/v1/token")).basic_auth(id, Some(secret));
    if let Some(body) = body {
        r = r.json(&body);
    }
    r.send().await.unwrap()
}

/// `POST /v1/token` on the client's session cookie, with `body` as JSON.
async fn token_by_session(c: &reqwest::Client, b: &str, body: Value) -> reqwest::Response {
    c.post(format!("{b}/v1/token"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// `GET /v1/ice-servers` with `ticket` as the bearer token: the status and the JSON body.
async fn ice_servers(c: &reqwest::Client, b: &str, ticket: &str) -> (u16, Value) {
    let r = c
        .get(format!("{b}/v1/ice-servers"))
        .bearer_auth(ticket)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// A webrtc ticket for `identity`, any room, and its claims.
fn webrtc_ticket(ring: &KeyRing, identity: &str, now: u64) -> (String, Claims) {
    let req = switchboard_auth::MintRequest::new(identity, [Scope::Webrtc]);
    ring.mint(&req, now).unwrap()
}

/// Adds `alice` with `password` and every scope.
async fn add_alice(s: &switchboard::RunningServer, password: &str) {
    s.state
        .office
        .users
        .add_user("alice".into(), password.into(), Scopes::all(), unix_now())
        .await
        .unwrap();
}

#[tokio::test]
async fn health_ready_metrics_and_h2c() {
    let s = start(test_config()).await;
    let b = base(&s);
    assert_eq!(
        reqwest::get(format!("{b}/healthz")).await.unwrap().status(),
        200
    );
    assert_eq!(
        reqwest::get(format!("{b}/readyz")).await.unwrap().status(),
        200
    );
    // Cleartext HTTP/2 with prior knowledge on the same port (what gRPC clients do).
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = h2.get(format!("{b}/healthz")).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    let m = scrape(s.http_addr).await;
    assert!(m.contains("switchboard_auth_failures_total{reason=\"expired\"}"));
    s.shutdown().await;
}

#[tokio::test]
async fn api_key_mints_and_scopes_are_enforced() {
    let s = start(test_config()).await;
    let b = base(&s);
    let (id, secret) = s
        .state
        .office
        .users
        .create_api_key(
            "backend".into(),
            [Scope::Webrtc].into_iter().collect(),
            unix_now(),
        )
        .await
        .unwrap();
    let key = (id.as_str(), secret.as_str());
    let c = client();
    // No credentials.
    let r = c.post(format!("{b}/v1/token")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "unauthenticated");
    // Wrong secret.
    let r = token_with_key(&c, &b, (&id, "nope"), None).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // Good key, identity required.
    let r = token_with_key(&c, &b, key, None).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body = json!({"identity": "u1", "room": "lobby", "ttl": "2m"});
    let r = token_with_key(&c, &b, key, Some(body)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["expires_in"], 120);
    let claims: Claims = s
        .state
        .gate
        .keyring
        .verify(body["token"].as_str().unwrap(), unix_now())
        .unwrap();
    assert_eq!(claims.sub, "u1");
    assert_eq!(claims.room.as_deref(), Some("lobby"));
    assert!(claims.scope.contains(Scope::Webrtc) && !claims.scope.contains(Scope::Grpc));
    // A scope the key may not grant.
    let body = json!({"identity": "u1", "scope": ["grpc"]});
    let r = token_with_key(&c, &b, key, Some(body)).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // TTL above the cap.
    let body = json!({"identity": "u1", "ttl": 3600});
    let r = token_with_key(&c, &b, key, Some(body)).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // Garbage body.
    let r = c
        .post(format!("{b}/v1/token"))
        .basic_auth(&id, Some(&secret))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // Revoked keys stop working.
    s.state
        .office
        .users
        .revoke_api_key(id.clone(), unix_now())
        .await
        .unwrap();
    let r = token_with_key(&c, &b, key, Some(json!({"identity": "u1"}))).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    s.shutdown().await;
}

#[tokio::test]
async fn login_cookie_mint_and_rate_limit() {
    let s = start_with(|c| c.auth.login_failures_per_ip_user_per_minute = 3).await;
    let b = base(&s);
    s.state
        .office
        .users
        .add_user(
            "alice".into(),
            "correct horse battery".into(),
            [Scope::Webrtc, Scope::Grpc].into_iter().collect(),
            unix_now(),
        )
        .await
        .unwrap();
    let c = client();
    let r = login(&c, &b, "alice", "wrong password").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let wrong_pw: Value = r.json().await.unwrap();
    let r = login(&c, &b, "nobody", "wrong password").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let no_user: Value = r.json().await.unwrap();
    assert_eq!(
        wrong_pw, no_user,
        "an unknown user and a wrong password look the same"
    );

    let r = login(&c, &b, "alice", "correct horse battery").await;
    assert_eq!(r.status(), StatusCode::OK);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let r = token_by_session(&c, &b, json!({"room": "r"})).await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["identity"], "alice");
    // A user cannot mint for someone else.
    let r = token_by_session(&c, &b, json!({"identity": "bob"})).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    // The success forgot earlier failures; three more from this address block the pair, and
    // then even the right password waits (60 s / 3 = 20 s).
    for _ in 0..3 {
        assert_eq!(login_status(&c, &b, "alice", "x").await, 401);
    }
    let r = login(&c, &b, "alice", "correct horse battery").await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=20).contains(&retry), "{retry}");
    assert!(metric(&b, "switchboard_logins_total{result=\"rate_limited\"}").await >= 1.0);
    assert!(
        metric(
            &b,
            "switchboard_limit_rejections_total{limit=\"login_ip_user\"}"
        )
        .await
            >= 1.0
    );

    // Logout ends the session.
    c.post(format!("{b}/v1/logout")).send().await.unwrap();
    let r = c.post(format!("{b}/v1/token")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    s.shutdown().await;
}

#[tokio::test]
async fn login_is_rate_limited_per_ip_across_usernames() {
    let s = start_with(|c| c.auth.login_attempts_per_ip_per_minute = 2).await;
    let b = base(&s);
    let c = client();
    for (i, expect) in [(0, 401), (1, 401), (2, 429)] {
        let user = format!("user{i}");
        let status = login_status(&c, &b, &user, "whatever-password").await;
        assert_eq!(status, expect, "attempt {i}");
    }
    assert_eq!(
        metric(&b, "switchboard_limit_rejections_total{limit=\"login_ip\"}").await,
        1.0
    );
    s.shutdown().await;
}

/// Failures from one address block that address's pair only: the real user, elsewhere, logs in.
#[tokio::test]
async fn the_right_password_logs_in_after_another_ips_failures() {
    let s = start_with(|c| c.auth.login_failures_per_ip_user_per_minute = 3).await;
    let b = base(&s);
    add_alice(&s, "correct horse battery").await;
    let attacker = client_from([127, 0, 0, 2]);
    let mut statuses = Vec::new();
    for i in 0..10 {
        statuses.push(login_status(&attacker, &b, "alice", &format!("guess {i}")).await);
    }
    assert_eq!(statuses, [401, 401, 401, 429, 429, 429, 429, 429, 429, 429]);
    // The attacker's pair is blocked even with the right password ...
    assert_eq!(
        login_status(&attacker, &b, "alice", "correct horse battery").await,
        429
    );
    // ... and alice from her own address is not.
    let alice = client_from([127, 0, 0, 3]);
    assert_eq!(
        login_status(&alice, &b, "alice", "correct horse battery").await,
        200
    );
    s.shutdown().await;
}

/// Oversized fields are refused before any limiter stores anything: 1000 requests with
/// ≈ 60 KB usernames (just under the 64 KiB body limit) leave the tables empty.
#[tokio::test]
async fn oversized_usernames_are_refused_without_growing_the_limiter() {
    let s = start(test_config()).await;
    let b = base(&s);
    let c = client();
    let huge = "u".repeat(60 * 1024);
    let statuses: Vec<u16> = futures::stream::iter(0..1000)
        .map(|i| {
            let (c, b) = (c.clone(), b.clone());
            let body = if i % 10 == 0 {
                json!({"username": "alice", "password": "p".repeat(1025)})
            } else {
                json!({"username": format!("{i}{huge}"), "password": "whatever"})
            };
            async move {
                c.post(format!("{b}/v1/login"))
                    .json(&body)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(statuses.iter().all(|&st| st == 401), "{statuses:?}");
    assert_eq!(
        (
            s.state.office.login.ip_entries(),
            s.state.office.login.pair_entries()
        ),
        (0, 0)
    );
    assert_eq!(
        s.state.office.hash_pool.hashes(),
        0,
        "no password was hashed"
    );
    assert_eq!(
        metric(
            &b,
            "switchboard_limit_rejections_total{limit=\"login_invalid\"}"
        )
        .await,
        1000.0
    );
    assert_eq!(
        metric(&b, "switchboard_login_limiter_entries{table=\"ip_user\"}").await,
        0.0
    );
    s.shutdown().await;
}

/// Unknown and known users wait for the same hashing slots: with the only slot taken and no
/// queue, both get 503 at once; with it free, both are checked.
#[tokio::test]
async fn unknown_and_known_users_share_the_hashing_bound() {
    let s = start_with(|c| {
        c.auth.login_hash_concurrency = 1;
        c.auth.login_hash_queue = 0;
    })
    .await;
    let b = base(&s);
    add_alice(&s, "correct horse battery").await;
    let c = client();
    let held = s
        .state
        .office
        .hash_pool
        .try_acquire()
        .expect("the only slot");
    for (user, pw) in [
        ("nobody", "whatever-pw"),
        ("alice", "correct horse battery"),
    ] {
        let r = login(&c, &b, user, pw).await;
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "{user}");
        assert_eq!(r.headers()["retry-after"], "1");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "busy");
    }
    assert_eq!(
        metric(&b, "switchboard_logins_total{result=\"busy\"}").await,
        2.0
    );
    assert_eq!(s.state.office.hash_pool.hashes(), 0);
    drop(held);
    assert_eq!(login_status(&c, &b, "nobody", "whatever-pw").await, 401);
    assert_eq!(
        login_status(&c, &b, "alice", "correct horse battery").await,
        200
    );
    assert_eq!(
        s.state.office.hash_pool.hashes(),
        2,
        "one hash each, on the pool"
    );
    // A 503 did not count against the address or the pair.
    assert_eq!(
        s.state.office.login.pair_entries(),
        1,
        "only nobody's failure"
    );
    s.shutdown().await;
}

#[tokio::test]
async fn ice_servers_rejects_bad_tickets_with_reasons() {
    let s = start_with(|c| {
        c.turn.uris = vec![
            "stun:127.0.0.1:3478".into(),
            "turn:127.0.0.1:3478?transport=udp".into(),
        ];
    })
    .await;
    let b = base(&s);
    let ring: &KeyRing = &s.state.gate.keyring;
    let now = unix_now();
    let (good, claims) = webrtc_ticket(ring, "carol", now);
    let c = client();
    let (status, ice) = ice_servers(&c, &b, &good).await;
    assert_eq!(status, 200);
    let turn = &ice["iceServers"][1];
    let user = turn["username"].as_str().unwrap();
    assert!(user.ends_with(":carol"), "{user}");
    assert_eq!(
        turn["credential"].as_str().unwrap(),
        switchboard_auth::turn_rest::password(TURN_SECRET.as_bytes(), user)
    );

    let mut expired = claims.clone();
    expired.exp = now - 3600;
    let mut future = claims.clone();
    future.nbf = Some(now + 3600);
    let mut wrong_aud = claims.clone();
    wrong_aud.aud = switchboard_auth_aud("someone-else");
    let mut wrong_iss = claims.clone();
    wrong_iss.iss = "mallory".into();
    let mut no_scope = claims.clone();
    no_scope.scope = [Scope::Grpc].into_iter().collect();
    let parts: Vec<&str> = good.split('.').collect();
    let b64 =
        |s: &str| base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, s);
    let cases: Vec<(String, u16, &str)> = vec![
        (ring.sign_claims(&expired), 401, "expired"),
        (ring.sign_claims(&future), 401, "not_yet_valid"),
        (ring.sign_claims(&wrong_aud), 401, "bad_audience"),
        (ring.sign_claims(&wrong_iss), 401, "bad_issuer"),
        (ring.sign_claims(&no_scope), 403, "missing_scope"),
        (
            format!("{}.{}.", b64(r#"{"alg":"none"}"#), parts[1]),
            401,
            "alg_none",
        ),
        (
            format!(
                "{}.{}.{}",
                b64(r#"{"alg":"HS256","kid":"k0"}"#),
                parts[1],
                parts[2]
            ),
            401,
            "unknown_kid",
        ),
        (
            format!(
                "{}.{}.{}{}",
                parts[0],
                parts[1],
                flip(&parts[2][..1]),
                &parts[2][1..]
            ),
            401,
            "bad_signature",
        ),
        ("x".repeat(9000), 401, "oversized"),
    ];
    for (tok, status, reason) in cases {
        let series = format!("switchboard_auth_failures_total{{reason=\"{reason}\"}}");
        let before = metric(&b, &series).await;
        let (got, body) = ice_servers(&c, &b, &tok).await;
        assert_eq!(got, status, "{reason}");
        assert_eq!(body["error"], reason);
        assert!(!body["message"].as_str().unwrap().contains(SECRET));
        assert_eq!(metric(&b, &series).await, before + 1.0, "{reason} counted");
    }
    let r = c.get(format!("{b}/v1/ice-servers")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "missing_token");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("Authorization: Bearer") && message.contains("?access_token="),
        "the refusal says how to present a ticket: {message}"
    );

    // The same ticket in the URL, as the WebSocket takes it (a browser GET cannot set headers).
    let r = c
        .get(format!("{b}/v1/ice-servers?access_token={good}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let by_query: Value = r.json().await.unwrap();
    assert!(by_query["iceServers"][1]["username"]
        .as_str()
        .unwrap()
        .ends_with(":carol"));
    // `?token=` is not a way to present a ticket: refused with the same clear message.
    let r = c
        .get(format!("{b}/v1/ice-servers?token={good}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    s.shutdown().await;
}

/// Tickets that live too long or carry oversized claims are refused at the HTTP edge with
/// their reason, and counted; minting refuses the same oversized identity.
#[tokio::test]
async fn long_lived_and_oversized_tickets_are_refused_and_counted() {
    let s = start_with(|c| c.turn.uris = vec!["turn:127.0.0.1:3478?transport=udp".into()]).await;
    let b = base(&s);
    let ring: &KeyRing = &s.state.gate.keyring;
    let now = unix_now();
    let (good, claims) = webrtc_ticket(ring, "dora", now);
    let c = client();
    assert_eq!(ice_servers(&c, &b, &good).await.0, 200);

    let mut ten_years = claims.clone();
    ten_years.exp = now + 10 * 365 * 86_400;
    let mut ten_years_no_iat = ten_years.clone();
    ten_years_no_iat.iat = None;
    let mut big_sub = claims.clone();
    big_sub.sub = "x".repeat(5000);
    for (tok, reason) in [
        (ring.sign_claims(&ten_years), "lifetime_too_long"),
        (ring.sign_claims(&ten_years_no_iat), "lifetime_too_long"),
        (ring.sign_claims(&big_sub), "claim_too_large"),
    ] {
        let series = format!("switchboard_auth_failures_total{{reason=\"{reason}\"}}");
        let before = metric(&b, &series).await;
        let (status, body) = ice_servers(&c, &b, &tok).await;
        assert_eq!(status, 401, "{reason}: {body}");
        assert_eq!(body["error"], reason);
        assert_eq!(metric(&b, &series).await, before + 1.0, "{reason} counted");
    }

    // Minting applies the same bound to the identity.
    let (id, secret) = s
        .state
        .office
        .users
        .create_api_key("backend".into(), [Scope::Webrtc].into_iter().collect(), now)
        .await
        .unwrap();
    let body = json!({"identity": "x".repeat(5000)});
    let r = token_with_key(&c, &b, (&id, &secret), Some(body)).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("identity"),
        "{body}"
    );
    s.shutdown().await;
}

fn flip(c: &str) -> &'static str {
    if c == "A" {
        "B"
    } else {
        "A"
    }
}

fn switchboard_auth_aud(a: &str) -> switchboard_auth::jwt_audience::Audience {
    switchboard_auth::jwt_audience::Audience(vec![a.into()])
}

#[tokio::test]
async fn port_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut cfg = test_config();
    cfg.http.bind = taken.local_addr().unwrap().to_string();
    let err = switchboard::start(cfg)
        .await
        .err()
        .expect("must fail")
        .to_string();
    assert!(err.contains("http.bind") && err.contains("in use"), "{err}");
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_and_refuses_new() {
    let s = start(test_config()).await;
    let addr = s.http_addr;
    let state = s.state.clone();
    s.shutdown().await;
    assert!(state.shutdown.is_cancelled());
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "listener closed"
    );
}
