//! The ticket office over HTTP: login, token minting, ICE servers, health and metrics.
//!
//! | route | auth | what |
//! |---|---|---|
//! | `POST /v1/login` `{username,password}` | — | session cookie `sb_session` (HttpOnly, SameSite=Strict) |
//! | `POST /v1/logout` | cookie | ends the session |
//! | `POST /v1/token` `{room?,scope?,ttl?,identity?}` | API key (Basic `id:secret`) or cookie | `{token, expires_at, ...}` |
//! | `GET /v1/nodes` | ticket with scope `admin` | the live nodes of the cluster (this node alone without one) |
//! | `GET /v1/ice-servers` | ticket (scope `webrtc`): Bearer or `?access_token=` | STUN + TURN with REST credentials |
//! | `GET /healthz`, `/readyz` | — | liveness, readiness (503 while starting or draining) |
//! | `GET /metrics` | `[http] metrics_token` as Bearer, or a loopback client | Prometheus text |

use crate::error::ApiError;
use crate::state::AppState;
use crate::storage::Access::{Read, Write};
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::Deserialize;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Instant;
use switchboard_auth::login_limit::{self, LoginRefusal};
use switchboard_auth::{unix_now, AuthError, MintRequest, Scope, Scopes};

pub const SESSION_COOKIE: &str = "sb_session";

pub fn routes(state: AppState) -> Router {
    let limit = state.config.limits.max_http_body_bytes;
    Router::new()
        .route("/v1/login", post(login))
        .route("/v1/logout", post(logout))
        .route("/v1/token", post(mint_token))
        .route("/v1/ice-servers", get(ice_servers))
        .route("/v1/nodes", get(nodes))
        .route("/v1/drain", post(drain))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(axum::extract::DefaultBodyLimit::max(limit))
        .with_state(state)
}

async fn readyz(State(s): State<AppState>) -> Response {
    if s.shutdown.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response()
    } else if let Some(why) = s.cluster.as_ref().and_then(|c| c.unreachable()) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("degraded: cluster store (Redis) unreachable: {why}\n"),
        )
            .into_response()
    } else if let Some(why) = s.office.store_health.degraded() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("degraded: {why}\n"),
        )
            .into_response()
    } else if s.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response()
    }
}

/// Who may read `/metrics`: the bearer of `[http] metrics_token`, or, when none is set,
/// clients on loopback addresses.
fn may_read_metrics(want: &str, headers: &HeaderMap, remote: SocketAddr) -> Result<(), ApiError> {
    if want.is_empty() {
        return if remote.ip().is_loopback() {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                "/metrics answers loopback clients only; set [http] metrics_token and send it as a Bearer token",
            ))
        };
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(switchboard_auth::presented::bearer)
        .unwrap_or("");
    if bool::from(subtle::ConstantTimeEq::ct_eq(
        given.as_bytes(),
        want.as_bytes(),
    )) {
        Ok(())
    } else {
        Err(ApiError::unauthenticated(
            "/metrics requires `Authorization: Bearer <[http] metrics_token>`",
        ))
    }
}

async fn metrics(
    State(s): State<AppState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = may_read_metrics(&s.config.http.metrics_token, &headers, remote) {
        return e.into_response();
    }
    s.office
        .metrics
        .replay_entries
        .set(s.gate.replay.len() as i64);
    for (table, n) in [
        ("ip", s.office.login.ip_entries()),
        ("ip_user", s.office.login.pair_entries()),
        ("trusted", s.office.login.trusted_entries()),
    ] {
        s.office
            .metrics
            .login_limiter_entries
            .get_or_create(&[("table", table)])
            .set(n as i64);
    }
    s.office
        .metrics
        .login_hashes_running
        .set(s.office.hash_pool.in_use() as i64);
    s.office
        .metrics
        .login_hashes_waiting
        .set(s.office.hash_pool.waiting() as i64);
    let mut out = String::with_capacity(16 * 1024);
    if prometheus_client::encoding::text::encode(&mut out, &s.registry).is_err() {
        return ApiError::internal().into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

/// Parses a JSON body, turning every failure into a 400 that says what was wrong.
fn json_body<T: for<'de> Deserialize<'de> + Default>(body: &Bytes) -> Result<T, ApiError> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn basic(headers: &HeaderMap) -> Option<Result<(String, String), ApiError>> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let bad = || ApiError::unauthenticated("malformed Basic credentials");
    Some((|| {
        let raw = STANDARD.decode(rest.trim()).map_err(|_| bad())?;
        let s = String::from_utf8(raw).map_err(|_| bad())?;
        let (id, secret) = s.split_once(':').ok_or_else(bad)?;
        Ok((id.to_string(), secret.to_string()))
    })())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    username: String,
    password: String,
}

/// `POST /v1/login`. Before any password is hashed: the body's fields are checked for size
/// (nothing is stored for an oversized one), then the login limits admit the attempt (per IP,
/// per IP and username with backoff, global), then a hashing slot is taken from the bounded
/// pool (a short bounded wait, else 503). Unknown users take the same path and the same slot.
async fn login(
    State(s): State<AppState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let b: LoginBody = json_body(&body)?;
    let count = |result: &'static str, limit: Option<&'static str>| {
        s.office
            .metrics
            .logins
            .get_or_create(&[("result", result)])
            .inc();
        if let Some(limit) = limit {
            s.office
                .metrics
                .limit_rejections
                .get_or_create(&[("limit", limit)])
                .inc();
        }
    };
    let refused = |r: LoginRefusal| {
        let limit = match r {
            LoginRefusal::Invalid => "login_invalid",
            LoginRefusal::Ip(_) => "login_ip",
            LoginRefusal::Pair(_) => "login_ip_user",
            LoginRefusal::Global(_) => "login_global",
        };
        match r.retry_after() {
            None => {
                count("invalid", Some(limit));
                ApiError::unauthenticated("invalid username or password")
            }
            Some(retry) => {
                count("rate_limited", Some(limit));
                ApiError::rate_limited(retry)
            }
        }
    };
    login_limit::validate(&b.username, &b.password).map_err(refused)?;
    let attempt = s
        .office
        .login
        .begin(remote.ip(), &b.username, Instant::now())
        .map_err(refused)?;
    let Ok(slot) = s.office.hash_pool.acquire().await else {
        attempt.not_checked();
        count("busy", Some("login_hash_busy"));
        return Err(ApiError::busy(
            std::time::Duration::from_secs(1),
            "too many logins at once; retry in 1 s",
        ));
    };
    let (user, pass) = (b.username, b.password);
    // The slot moves into the blocking task: it is held exactly as long as the hash runs,
    // even if this request is abandoned meanwhile.
    let user = s.office.users.verify_login(slot, user, pass).await;
    let user = s.office.store_health.record("verify_login", Read, user)?;
    let Some(user) = user else {
        attempt.failed(Instant::now());
        count("bad_credentials", None);
        // Same answer whether the user exists or not.
        return Err(ApiError::unauthenticated("invalid username or password"));
    };
    attempt.succeeded(Instant::now());
    let ttl = s.config.auth.session_ttl.as_secs();
    let name = user.username.clone();
    let cookie_value = s.office.users.create_session(name, ttl, unix_now()).await;
    let cookie_value = s
        .office
        .store_health
        .record("create_session", Write, cookie_value)?;
    s.office
        .metrics
        .logins
        .get_or_create(&[("result", "ok")])
        .inc();
    let secure = if s.config.auth.cookie_secure {
        "; Secure"
    } else {
        ""
    };
    let set = format!(
        "{SESSION_COOKIE}={cookie_value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={ttl}{secure}"
    );
    let mut resp = Json(serde_json::json!({
        "username": user.username,
        "scope": user.scopes,
    }))
    .into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&set).map_err(|_| ApiError::internal())?,
    );
    Ok(resp)
}

async fn logout(State(s): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    if let Some(c) = cookie(&headers, SESSION_COOKIE).map(str::to_string) {
        let r = s.office.users.delete_session(c).await;
        s.office.store_health.record("delete_session", Write, r)?;
    }
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("sb_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    Ok(resp)
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ScopeField {
    List(Vec<String>),
    Text(String),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum TtlField {
    Secs(u64),
    Text(String),
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    room: Option<String>,
    scope: Option<ScopeField>,
    ttl: Option<TtlField>,
    /// API keys mint for any identity; a logged-in user only for itself.
    identity: Option<String>,
    /// Where SFU rooms this ticket creates should be served (a node's `[cluster] region`).
    region: Option<String>,
}

/// Who is asking for a ticket, and what it may grant.
struct Minter {
    via: &'static str,
    identity: Option<String>,
    allowed: Scopes,
}

async fn authenticate_minter(s: &AppState, headers: &HeaderMap) -> Result<Minter, ApiError> {
    if let Some(creds) = basic(headers) {
        let (id, secret) = creds?;
        let key = s.office.users.verify_api_key(id, secret).await;
        let key = s.office.store_health.record("verify_api_key", Read, key)?;
        return match key {
            Some(k) => Ok(Minter {
                via: "api_key",
                identity: None,
                allowed: k.scopes,
            }),
            None => {
                s.gate.count_failure(&AuthError::BadSignature);
                Err(ApiError::unauthenticated("invalid API key"))
            }
        };
    }
    if let Some(c) = cookie(headers, SESSION_COOKIE).map(str::to_string) {
        let user = s.office.users.session_user(c, unix_now()).await;
        let user = s.office.store_health.record("session_user", Read, user)?;
        return match user {
            Some(u) => Ok(Minter {
                via: "session",
                identity: Some(u.username),
                allowed: u.scopes,
            }),
            None => Err(ApiError::unauthenticated(
                "session expired or unknown; log in again",
            )),
        };
    }
    if s.config.auth.allow_anonymous_tokens {
        return Ok(Minter {
            via: "anonymous",
            identity: Some(format!("guest-{}", &uuid_like()[..8])),
            allowed: [Scope::Webrtc, Scope::Grpc].into_iter().collect(),
        });
    }
    Err(ApiError::unauthenticated(
        "authenticate with an API key (HTTP Basic id:secret) or log in at POST /v1/login",
    ))
}

fn uuid_like() -> String {
    format!("{:032x}", rand::random::<u128>())
}

async fn mint_token(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let minter = authenticate_minter(&s, &headers).await?;
    let b: TokenBody = json_body(&body)?;
    let requested = match b.scope {
        None => minter.allowed.without(Scope::Admin),
        Some(ScopeField::List(v)) => {
            Scopes::parse_list(&v.join(",")).map_err(ApiError::bad_request)?
        }
        Some(ScopeField::Text(t)) => Scopes::parse_list(&t).map_err(ApiError::bad_request)?,
    };
    if !requested.is_subset_of(minter.allowed) {
        let missing: Vec<_> = requested
            .iter()
            .filter(|x| !minter.allowed.contains(*x))
            .map(Scope::as_str)
            .collect();
        s.gate.count_failure(&AuthError::MissingScope("mint"));
        return Err(ApiError::forbidden(format!(
            "you may not grant scope {}",
            missing.join(",")
        )));
    }
    let identity = match (minter.identity, b.identity) {
        (Some(own), Some(asked)) if own != asked && minter.via == "session" => {
            return Err(ApiError::forbidden(
                "a user may only mint tickets for itself",
            ));
        }
        (Some(own), _) => own,
        (None, Some(asked)) => asked,
        (None, None) => {
            return Err(ApiError::bad_request(
                "identity is required when minting with an API key",
            ))
        }
    };
    let ttl = match b.ttl {
        None => None,
        Some(TtlField::Secs(n)) => Some(std::time::Duration::from_secs(n)),
        Some(TtlField::Text(t)) => {
            Some(switchboard_auth::duration::parse(&t).map_err(ApiError::bad_request)?)
        }
    };
    if let Some(room) = &b.room {
        if room.is_empty() || room.len() > 256 {
            return Err(ApiError::bad_request("room must be 1 to 256 bytes"));
        }
    }
    let req = MintRequest {
        identity,
        room: b.room,
        scope: requested,
        ttl,
        region: b.region,
    };
    let now = unix_now();
    let (token, claims) = s
        .gate
        .keyring
        .mint(&req, now)
        .map_err(ApiError::bad_request)?;
    s.office
        .metrics
        .tokens_minted
        .get_or_create(&[("via", minter.via)])
        .inc();
    Ok(Json(serde_json::json!({
        "token": token,
        "identity": claims.sub,
        "room": claims.room,
        "scope": claims.scope,
        "expires_at": claims.exp,
        "expires_in": claims.exp - now,
    }))
    .into_response())
}

async fn ice_servers(
    State(s): State<AppState>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let now = unix_now();
    let claims = presented(&s, &uri, &headers, Scope::Webrtc, now)?;
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    Ok(Json(s.ice.document(&claims.sub, now, host)).into_response())
}

/// The ticket a request presents (`Authorization: Bearer` or `?access_token=`), checked for
/// `scope`; a missing one is counted and refused like a bad one.
fn presented(
    s: &AppState,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    scope: Scope,
    now: u64,
) -> Result<switchboard_auth::Claims, ApiError> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let token =
        switchboard_auth::presented::ticket(authorization, uri.query()).ok_or_else(|| {
            s.gate.count_failure(&AuthError::MissingToken);
            ApiError::from(AuthError::MissingToken)
        })?;
    Ok(s.gate.check(&token, scope, now)?)
}

/// The bearer ticket of an admin call, checked for scope `admin`.
fn admin(s: &AppState, uri: &axum::http::Uri, headers: &HeaderMap) -> Result<(), ApiError> {
    presented(s, uri, headers, Scope::Admin, unix_now()).map(|_| ())
}

/// `POST /v1/drain` (scope `admin`): the node stops as on SIGTERM — it takes no new sessions,
/// `/readyz` answers 503, and in a cluster its clients are told to resume on other nodes.
/// `202 {"draining": true, "clients_moved": N}`.
async fn drain(
    State(s): State<AppState>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    admin(&s, &uri, &headers)?;
    let moved = s.begin_shutdown();
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({"draining": true, "clients_moved": moved})),
    )
        .into_response())
}

/// `GET /v1/nodes` (scope `admin`): `{"self": id, "nodes": [{id, url, region, started_at, load,
/// draining}]}`, the live nodes of the cluster, or this node alone without one.
async fn nodes(
    State(s): State<AppState>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    admin(&s, &uri, &headers)?;
    let Some(cluster) = &s.cluster else {
        let url = format!(
            "http://{}",
            s.bound.http.map(|a| a.to_string()).unwrap_or_default()
        );
        let me = switchboard_cluster::NodeInfo {
            id: "local".into(),
            url,
            load: switchboard_cluster::Load {
                sessions: s.signaling.handle().stats().sessions as u64,
                rooms: s.signaling.handle().stats().rooms as u64,
                cpu_percent: 0.0,
            },
            draining: s.shutdown.is_cancelled(),
            ..Default::default()
        };
        return Ok(Json(serde_json::json!({"self": "local", "nodes": [me]})).into_response());
    };
    let nodes = cluster.nodes().await.map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "cluster_unavailable",
            e.to_string(),
        )
    })?;
    Ok(Json(serde_json::json!({"self": cluster.node_id(), "nodes": nodes})).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_bearer(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        h
    }

    #[test]
    fn metrics_need_the_token_or_a_loopback_client() {
        let lo: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let lo6: SocketAddr = "[::1]:5000".parse().unwrap();
        let far: SocketAddr = "203.0.113.7:5000".parse().unwrap();
        let none = HeaderMap::new();
        // No token configured: loopback clients only.
        assert!(may_read_metrics("", &none, lo).is_ok());
        assert!(may_read_metrics("", &none, lo6).is_ok());
        let e = may_read_metrics("", &none, far)
            .unwrap_err()
            .into_response();
        assert_eq!(e.status(), StatusCode::FORBIDDEN);
        // A token configured: required from everyone, loopback included.
        assert!(may_read_metrics("s3cret", &with_bearer("s3cret"), far).is_ok());
        for (h, who) in [
            (&none, lo),
            (&with_bearer("wrong"), far),
            (&with_bearer("s3cre"), lo),
        ] {
            let e = may_read_metrics("s3cret", h, who)
                .unwrap_err()
                .into_response();
            assert_eq!(e.status(), StatusCode::UNAUTHORIZED);
        }
    }
}
