//! Shared by integration tests: start a server in-process on ephemeral ports.
#![allow(dead_code)]

use switchboard::config::Config;
use switchboard::RunningServer;
use switchboard_auth::KeyConfig;

pub mod child;

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

pub fn base(s: &RunningServer) -> String {
    format!("http://{}", s.http_addr)
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap()
}
