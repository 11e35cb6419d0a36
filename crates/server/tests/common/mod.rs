//! Shared by integration tests: start a server in-process on ephemeral ports.
#![allow(dead_code)]

use switchboard::config::Config;
use switchboard::RunningServer;
use switchboard_auth::{unix_now, KeyConfig, MintRequest, Scope};
use switchboard_proto::inference::PredictRequest;

pub mod child;
pub mod ws;

pub const SECRET: &str = "integration-test-secret-0123456789abcdef";
pub const TURN_SECRET: &str = "integration-turn-secret";

/// A config on loopback with port 0 everywhere, an in-memory store and one HS256 key.
pub fn test_config() -> Config {
    let mut c = Config::default();
    c.http.bind = "127.0.0.1:0".into();
    c.http.shutdown_grace = std::time::Duration::from_secs(2);
    c.auth.database = ":memory:".into();
    c.auth.keys = vec![KeyConfig {
        kid: "k1".into(),
        secret: Some(SECRET.into()),
        ..Default::default()
    }];
    c.turn.enabled = false;
    c.turn.listen = "127.0.0.1:0".into();
    c.turn.static_auth_secret = TURN_SECRET.into();
    c.turn.allow_loopback_peers = true;
    c.sfu.bind_ip = "127.0.0.1".into();
    c.sfu.udp_port = 0;
    c.sfu.tcp_port = 0;
    c
}

pub async fn start(c: Config) -> RunningServer {
    switchboard::start(c).await.expect("server starts")
}

/// A server on [`test_config`] as `tune` changes it.
pub async fn start_with(tune: impl FnOnce(&mut Config)) -> RunningServer {
    let mut c = test_config();
    tune(&mut c);
    start(c).await
}

pub fn base(s: &RunningServer) -> String {
    format!("http://{}", s.http_addr)
}

/// An h2c channel to the server's main HTTP port, as gRPC clients open it.
pub async fn channel(s: &RunningServer) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(base(s))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// A `StreamPredict` request presenting `ticket` as its bearer token.
pub fn predict_request(
    task_id: &str,
    payload: &[u8],
    ticket: &str,
) -> tonic::Request<PredictRequest> {
    let mut req = tonic::Request::new(PredictRequest {
        task_id: task_id.into(),
        payload: payload.to_vec(),
    });
    req.metadata_mut()
        .insert("authorization", format!("Bearer {ticket}").parse().unwrap());
    req
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap()
}

/// A client whose connections come from `ip` (any 127/8 address is loopback on Linux).
pub fn client_from(ip: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(std::net::IpAddr::from(ip))
        .build()
        .unwrap()
}

/// `POST /v1/login` with `user` and `password` to the server at `base` (`http://host:port`).
pub async fn login(
    c: &reqwest::Client,
    base: &str,
    user: &str,
    password: &str,
) -> reqwest::Response {
    c.post(format!("{base}/v1/login"))
        .json(&serde_json::json!({"username": user, "password": password}))
        .send()
        .await
        .unwrap()
}

/// The status of a [`login`].
pub async fn login_status(c: &reqwest::Client, base: &str, user: &str, password: &str) -> u16 {
    login(c, base, user, password).await.status().as_u16()
}

/// A ticket for `identity` with `scopes`, any room, signed by the server's key ring.
pub fn mint(s: &RunningServer, identity: &str, scopes: &[Scope]) -> String {
    let req = MintRequest::new(identity, scopes.iter().copied());
    s.state.gate.keyring.mint(&req, unix_now()).unwrap().0
}

/// The `/metrics` text of the server at `addr` (`host:port`).
pub async fn scrape(addr: impl std::fmt::Display) -> String {
    reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of the first series in `text` that starts with `series` (name and labels).
pub fn series_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// Like [`series_value`], failing the test when the series is missing.
pub fn metric_in(text: &str, series: &str) -> f64 {
    series_value(text, series).unwrap_or_else(|| panic!("no metric {series} in\n{text}"))
}
