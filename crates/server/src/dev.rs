//! `serve --dev`: a working server with no config file and no external services.

use crate::config::{Config, ConfigLoadError};
use switchboard_auth::{generate_secret, KeyConfig};

/// What `serve --dev` starts from when no config file is given: every listener on loopback and
/// users in memory. Environment overrides (`SWITCHBOARD_<SECTION>_<KEY>`) still apply on top,
/// so `SWITCHBOARD_HTTP_BIND=127.0.0.1:0` gives a dev server on an ephemeral port.
pub const DEV_DEFAULTS: &str = r#"
[auth]
database = ":memory:"
[turn]
listen = "127.0.0.1:3478"
tls_listen = "127.0.0.1:5349"
[sfu]
bind_ip = "127.0.0.1"
"#;

/// The dev configuration: `DEV_DEFAULTS` with `env` overrides applied.
pub fn dev_config(
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigLoadError> {
    Config::from_text(DEV_DEFAULTS, "<dev defaults>", env)
}

/// What [`apply_dev_defaults`] generated, so the banner says where keys come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DevKeys {
    /// The ticket signing key was generated in memory (none was configured).
    pub signing_key_generated: bool,
    /// The TURN secret was generated in memory (none was configured).
    pub turn_secret_generated: bool,
}

/// Fills in what a dev server needs: an in-memory signing key and TURN secret when none is
/// configured, loopback TURN peers allowed, anonymous guest tickets (so each tab of the demo
/// page mints its own). Keys set explicitly in the config or environment are kept.
pub fn apply_dev_defaults(c: &mut Config) -> DevKeys {
    let signing_key_generated = c.auth.keys.is_empty();
    if signing_key_generated {
        c.auth.keys.push(KeyConfig {
            kid: "dev".into(),
            secret: Some(generate_secret()),
            ..Default::default()
        });
    }
    let turn_secret_generated = c.turn.static_auth_secret.is_empty();
    if turn_secret_generated {
        c.turn.static_auth_secret = generate_secret();
    }
    c.turn.allow_loopback_peers = true;
    c.auth.allow_anonymous_tokens = true;
    DevKeys {
        signing_key_generated,
        turn_secret_generated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::env;

    #[test]
    fn dev_defaults_bind_loopback_only() {
        let c = dev_config(env(&[])).unwrap();
        assert!(c.http.bind.starts_with("127.0.0.1:"), "{}", c.http.bind);
        assert!(c.turn.listen.starts_with("127.0.0.1:"), "{}", c.turn.listen);
        assert!(c.turn.tls_listen.starts_with("127.0.0.1:"));
        assert_eq!(c.sfu.bind_ip, "127.0.0.1");
        assert_eq!(c.auth.database, ":memory:");
    }

    #[test]
    fn environment_overrides_dev_defaults() {
        let c = dev_config(env(&[
            ("SWITCHBOARD_HTTP_BIND", "127.0.0.1:0"),
            ("SWITCHBOARD_TURN_LISTEN", "127.0.0.1:0"),
            ("SWITCHBOARD_SFU_UDP_PORT", "0"),
        ]))
        .unwrap();
        assert_eq!(c.http.bind, "127.0.0.1:0");
        assert_eq!(c.turn.listen, "127.0.0.1:0");
        assert_eq!(c.sfu.udp_port, 0);
    }

    #[test]
    fn configured_keys_are_kept_and_reported() {
        let mut c = dev_config(env(&[("SWITCHBOARD_TURN_STATIC_AUTH_SECRET", "mine")])).unwrap();
        let k = apply_dev_defaults(&mut c);
        assert!(k.signing_key_generated);
        assert!(!k.turn_secret_generated);
        assert_eq!(c.turn.static_auth_secret, "mine");
        assert!(c.auth.allow_anonymous_tokens && c.turn.allow_loopback_peers);
    }
}
