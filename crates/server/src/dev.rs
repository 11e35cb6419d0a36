//! `serve --dev`: a working server with no config file and no external services.

use crate::config::Config;
use switchboard_auth::{generate_secret, KeyConfig};

/// Fills in what a dev server needs and keeps it on loopback: an in-memory signing key and
/// TURN secret, an in-memory user store, loopback TURN peers allowed, anonymous guest tickets
/// (so the demo page can open several tabs). Keys set explicitly in the config or environment
/// are kept.
pub fn apply_dev_defaults(c: &mut Config, had_config_file: bool) {
    if c.auth.keys.is_empty() {
        c.auth.keys.push(KeyConfig {
            kid: "dev".into(),
            secret: Some(generate_secret()),
            ..Default::default()
        });
    }
    if c.turn.static_auth_secret.is_empty() {
        c.turn.static_auth_secret = generate_secret();
    }
    if !had_config_file {
        c.auth.database = ":memory:".into();
        c.turn.listen = "127.0.0.1:3478".into();
        c.turn.tls_listen = "127.0.0.1:5349".into();
        c.sfu.bind_ip = "127.0.0.1".into();
    }
    c.turn.allow_loopback_peers = true;
    c.auth.allow_anonymous_tokens = true;
}
