//! The whole configuration: one TOML file, every key overridable by an environment variable
//! `SWITCHBOARD_<SECTION>_<KEY>` (e.g. `SWITCHBOARD_TURN_STATIC_AUTH_SECRET`). Each section's
//! keys are documented on its struct, in the crate that owns it.

use serde::{Deserialize, Serialize};
use std::time::Duration;
pub use switchboard_auth::AuthConfig;
pub use switchboard_cluster::ClusterConfig;
pub use switchboard_sfu::SfuConfig;
pub use switchboard_stream::StreamConfig;
pub use switchboard_turn::TurnConfig;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub http: HttpConfig,
    pub auth: AuthConfig,
    pub turn: TurnConfig,
    pub sfu: SfuConfig,
    pub stream: StreamConfig,
    pub cluster: ClusterConfig,
    pub limits: LimitsConfig,
    pub log: LogConfig,
    /// Where this configuration came from (not a key).
    #[serde(skip)]
    pub source: Option<std::sync::Arc<ConfigSource>>,
}

/// The sections an environment override may name.
const SECTIONS: &[&str] = &[
    "http", "auth", "turn", "sfu", "stream", "cluster", "limits", "log",
];

/// `[http]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Listen address for HTTP/1.1 and cleartext HTTP/2 (REST, WebSocket, gRPC, gRPC-Web, UI).
    pub bind: String,
    /// How long in-flight requests and sessions get to finish after SIGTERM/SIGINT.
    #[serde(with = "switchboard_auth::duration")]
    pub shutdown_grace: Duration,
    /// Origins allowed for cross-origin browser calls (CORS); empty = same origin only,
    /// ["*"] = any.
    pub cors_origins: Vec<String>,
    /// Serve the demo page and SDK at `/`.
    pub web_ui: bool,
    /// Threads that serve HTTP/2 connections (gRPC, the stream gateway; 0 = one per CPU core).
    /// Each such connection, with everything it spawns, stays on one thread: no cross-thread
    /// hand-offs per request or chunk. HTTP/1.1 (WebSocket, REST) uses the shared runtime.
    pub threads: usize,
    /// Coalesce an HTTP/2 connection's writes: frames that are ready within one turn of its
    /// thread leave in one `write` instead of one `writev` each (decision 0033).
    pub coalesce_writes: bool,
    /// Open HTTP connections served (REST, WebSocket, gRPC all count); 0 = half the process's
    /// open-files limit, which is raised to its hard limit at start. 32 more are served for
    /// `/healthz`, `/readyz` and `/metrics` only; past those, new connections are closed.
    pub max_connections: usize,
    /// Bearer token `/metrics` requires (`Authorization: Bearer <token>`). Empty: `/metrics`
    /// answers clients on loopback addresses only.
    pub metrics_token: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            bind: "127.0.0.1:7880".into(),
            shutdown_grace: Duration::from_secs(10),
            cors_origins: Vec::new(),
            web_ui: true,
            threads: 0,
            coalesce_writes: true,
            max_connections: 0,
            metrics_token: String::new(),
        }
    }
}

/// `[limits]`: bounds on what one client may do. Each one, when hit, answers with a clear
/// error and is counted in `/metrics`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest request body accepted by the REST API, in bytes.
    pub max_http_body_bytes: usize,

    // --- signaling (`GET /v1/signal`, gRPC `Signal/Connect`) ---
    /// Largest signaling frame (WebSocket message or gRPC message), in bytes. Larger frames
    /// get `error{code:"frame_too_large"}` and close 1009.
    pub signal_max_frame_bytes: usize,
    /// Sustained signaling messages per second per connection (bursts of twice this). Excess
    /// messages are dropped with `error{code:"rate_limited"}`; a connection that keeps going is
    /// closed (4029).
    pub signal_messages_per_second: u32,
    /// Open signaling connections per client IP; more are refused with HTTP 429.
    pub signal_connections_per_ip: usize,
    /// Open signaling connections on this node, all clients together; more are refused with
    /// HTTP 503 (`server_full`).
    pub signal_max_connections: usize,
    /// Joins per second per client IP (bursts of twice this); excess joins get
    /// `error{code:"join_rate_limited"}`.
    pub signal_joins_per_second_per_ip: u32,
    /// Messages queued for one signaling connection; when a slow reader lets it overflow, that
    /// connection alone is closed (4003, counted as `slow_consumer`).
    pub signal_send_queue: usize,
    /// Bytes queued for one signaling connection (the same close when exceeded; one message
    /// alone may be larger). At least `signal_resume_buffer_bytes`, so a resume's replay fits.
    pub signal_send_queue_bytes: usize,
    /// Peers per room (`error{code:"room_full"}` beyond).
    pub signal_max_room_peers: usize,
    /// Interval of the server's WebSocket pings.
    #[serde(with = "switchboard_auth::duration")]
    pub signal_ping_interval: std::time::Duration,
    /// A connection silent (no frame, no pong) this long is dead; its session then waits
    /// `signal_resume_grace` for a resume before the room gets `peer_left`.
    #[serde(with = "switchboard_auth::duration")]
    pub signal_idle_timeout: std::time::Duration,
    /// How long a session whose socket was lost stays in its room, resumable.
    #[serde(with = "switchboard_auth::duration")]
    pub signal_resume_grace: std::time::Duration,
    /// Messages kept per session so a resumed connection misses none.
    pub signal_resume_buffer: usize,
    /// Bytes kept per session for resume; the oldest messages go first (the newest always
    /// stays). A session awaiting resume that loses messages this way ends (`peer_left`).
    pub signal_resume_buffer_bytes: usize,
    /// Bytes kept for resume by all sessions of the node together: past it, the session that
    /// receives gives up its oldest messages while over its fair share, then the largest.
    pub signal_resume_total_bytes: usize,
}

impl LimitsConfig {
    /// The signaling bounds, with the room mode policy from `[sfu]`.
    pub fn signal_settings(&self, sfu: &SfuConfig) -> switchboard_signal::SignalSettings {
        switchboard_signal::SignalSettings {
            max_frame_bytes: self.signal_max_frame_bytes,
            messages_per_second: self.signal_messages_per_second,
            connections_per_ip: self.signal_connections_per_ip,
            max_connections: self.signal_max_connections,
            joins_per_second_per_ip: self.signal_joins_per_second_per_ip,
            send_queue: self.signal_send_queue,
            send_queue_bytes: self.signal_send_queue_bytes,
            max_room_peers: self.signal_max_room_peers,
            ping_interval: self.signal_ping_interval,
            idle_timeout: self.signal_idle_timeout,
            resume_grace: self.signal_resume_grace,
            resume_buffer: self.signal_resume_buffer,
            resume_buffer_bytes: self.signal_resume_buffer_bytes,
            resume_total_bytes: self.signal_resume_total_bytes,
            forward_retention: std::time::Duration::ZERO,
            mode: match sfu.mode {
                switchboard_sfu::SfuMode::Mesh => switchboard_signal::hub::ModePolicy::Mesh,
                switchboard_sfu::SfuMode::Sfu => switchboard_signal::hub::ModePolicy::Sfu,
                switchboard_sfu::SfuMode::Auto => switchboard_signal::hub::ModePolicy::Auto {
                    mesh_max_peers: sfu.mesh_max_peers,
                },
            },
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let sig = switchboard_signal::SignalSettings::default();
        LimitsConfig {
            max_http_body_bytes: 64 * 1024,
            signal_max_frame_bytes: sig.max_frame_bytes,
            signal_messages_per_second: sig.messages_per_second,
            signal_connections_per_ip: sig.connections_per_ip,
            signal_max_connections: sig.max_connections,
            signal_joins_per_second_per_ip: sig.joins_per_second_per_ip,
            signal_send_queue: sig.send_queue,
            signal_send_queue_bytes: sig.send_queue_bytes,
            signal_max_room_peers: sig.max_room_peers,
            signal_ping_interval: sig.ping_interval,
            signal_idle_timeout: sig.idle_timeout,
            signal_resume_grace: sig.resume_grace,
            signal_resume_buffer: sig.resume_buffer,
            signal_resume_buffer_bytes: sig.resume_buffer_bytes,
            signal_resume_total_bytes: sig.resume_total_bytes,
        }
    }
}

/// `[log]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Filter in `RUST_LOG` syntax, e.g. "info" or "info,switchboard_turn=debug".
    pub level: String,
    /// "text" or "json".
    pub format: LogFormat,
}

/// `[log] format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event (coloured on a terminal only).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// Where a configuration came from: the file's text (for line numbers in errors) and the
/// environment variables that overrode keys.
#[derive(Clone, Debug, Default)]
pub struct ConfigSource {
    /// The file's path, or `<defaults>` / `<dev defaults>`.
    pub label: String,
    pub text: String,
    /// `SWITCHBOARD_<SECTION>_<KEY>` variables applied, with the key each one set
    /// (`section.key`).
    pub overrides: Vec<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigLoadError {
    #[error("cannot read config file {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("invalid config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Loads `path` (if any), then applies `SWITCHBOARD_<SECTION>_<KEY>` overrides from `env`.
    /// Errors name the file, line and key, or the environment variable.
    pub fn load(
        path: Option<&str>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigLoadError> {
        let (text, label) = match path {
            Some(p) => (
                std::fs::read_to_string(p).map_err(|e| ConfigLoadError::Read {
                    path: p.into(),
                    reason: e.to_string(),
                })?,
                p.to_string(),
            ),
            None => (String::new(), "<defaults>".to_string()),
        };
        Config::from_text(&text, &label, env)
    }

    /// Parses `text` (named `label` in errors), then applies `SWITCHBOARD_<SECTION>_<KEY>`
    /// overrides from `env`.
    pub fn from_text(
        text: &str,
        label: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigLoadError> {
        let label = label.to_string();
        // First pass on the text itself, so that errors carry line and column.
        let mut from_file: Config = toml::from_str(text).map_err(|e| ConfigLoadError::Parse {
            path: label.clone(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let overrides: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("SWITCHBOARD_"))
            .collect();
        let mut source = ConfigSource {
            label: label.clone(),
            text: text.to_string(),
            overrides: Vec::new(),
        };
        if overrides.is_empty() {
            from_file.source = Some(std::sync::Arc::new(source));
            return Ok(from_file);
        }
        let defaults = toml::Value::try_from(Config::default())
            .map_err(|e| ConfigLoadError::Invalid(e.to_string()))?;
        let mut table: toml::Table = toml::from_str(text).map_err(|e| ConfigLoadError::Parse {
            path: label,
            message: e.to_string(),
        })?;
        for (var, raw) in overrides {
            let rest = &var["SWITCHBOARD_".len()..];
            let lower = rest.to_ascii_lowercase();
            let Some((section, key)) = lower.split_once('_') else {
                continue;
            };
            if !SECTIONS.contains(&section) {
                continue; // e.g. SWITCHBOARD_CONFIG: not a config key
            }
            let default_kind = defaults.get(section).and_then(|s| s.get(key));
            let value = match default_kind {
                Some(toml::Value::String(_)) => toml::Value::String(raw.clone()),
                _ => parse_env_value(&raw),
            };
            let sect = table
                .entry(section.to_string())
                .or_insert_with(|| toml::Value::Table(Default::default()));
            let Some(sect) = sect.as_table_mut() else {
                return Err(ConfigLoadError::Env {
                    var,
                    message: format!("[{section}] is not a table in the config file"),
                });
            };
            sect.insert(key.to_string(), value);
            source
                .overrides
                .push((var.clone(), format!("{section}.{key}")));
            // Check each override alone so the error names its variable.
            Config::deserialize(toml::Value::Table(table.clone())).map_err(|e| {
                ConfigLoadError::Env {
                    var: var.clone(),
                    message: e.to_string().trim_end().to_string(),
                }
            })?;
        }
        let mut c = Config::deserialize(toml::Value::Table(table))
            .map_err(|e| ConfigLoadError::Invalid(e.to_string()))?;
        c.source = Some(std::sync::Arc::new(source));
        Ok(c)
    }
}

/// An env value as a TOML value when it parses as one (numbers, booleans, arrays, inline
/// tables), otherwise as a plain string.
fn parse_env_value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

mod validate;
pub use validate::{ConfigInvalid, Problem};

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An environment of `(name, value)` pairs, as [`Config::load`] takes it.
    pub(crate) fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn defaults_match_the_brief() {
        let c = Config::load(None, vec![]).unwrap();
        assert_eq!(c.http.bind, "127.0.0.1:7880");
        assert_eq!(c.auth.issuer, "switchboard");
        assert_eq!(c.auth.audience, "realtime-clients");
        assert_eq!(c.auth.token_ttl, Duration::from_secs(300));
        assert_eq!(c.turn.listen, "0.0.0.0:3478");
        assert_eq!(c.sfu.mode, switchboard_sfu::SfuMode::Auto);
        assert_eq!(c.sfu.mesh_max_peers, 4);
        assert_eq!(c.sfu.udp_port, 7882);
    }

    #[test]
    fn env_overrides_keys_with_types() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            "[turn]\nrealm = \"a\"\n[[auth.keys]]\nkid = \"k1\"\nsecret = \"s\"\n",
        )
        .unwrap();
        let c = Config::load(
            Some(p.to_str().unwrap()),
            env(&[
                ("SWITCHBOARD_TURN_REALM", "b"),
                ("SWITCHBOARD_TURN_STATIC_AUTH_SECRET", "12345"),
                ("SWITCHBOARD_TURN_ALLOW_LOOPBACK_PEERS", "true"),
                ("SWITCHBOARD_SFU_MESH_MAX_PEERS", "8"),
                ("SWITCHBOARD_AUTH_TOKEN_TTL", "2m"),
                ("SWITCHBOARD_CONFIG", "ignored"),
                ("PATH", "/bin"),
            ]),
        )
        .unwrap();
        assert_eq!(c.turn.realm, "b");
        assert_eq!(
            c.turn.static_auth_secret, "12345",
            "string keys stay strings"
        );
        assert!(c.turn.allow_loopback_peers);
        assert_eq!(c.sfu.mesh_max_peers, 8);
        assert_eq!(c.auth.token_ttl, Duration::from_secs(120));
        assert_eq!(c.auth.keys[0].kid, "k1");
    }

    #[test]
    fn bad_file_names_line_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.toml");
        std::fs::write(
            &p,
            "[http]\nbind = \"127.0.0.1:1\"\n\n[turn]\nrelm = \"typo\"\n",
        )
        .unwrap();
        let e = Config::load(Some(p.to_str().unwrap()), vec![])
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 5") && e.contains("relm"), "{e}");
        std::fs::write(&p, "[sfu]\nmesh_max_peers = \"many\"\n").unwrap();
        let e = Config::load(Some(p.to_str().unwrap()), vec![])
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("mesh_max_peers"), "{e}");
    }

    #[test]
    fn bad_env_names_the_variable() {
        let e = Config::load(None, env(&[("SWITCHBOARD_SFU_MESH_MAX_PEERS", "lots")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("SWITCHBOARD_SFU_MESH_MAX_PEERS"), "{e}");
        let e = Config::load(None, env(&[("SWITCHBOARD_TURN_NO_SUCH_KEY", "1")]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("SWITCHBOARD_TURN_NO_SUCH_KEY") && e.contains("no_such_key"),
            "{e}"
        );
    }

    #[test]
    fn login_keys_defaults_and_the_old_per_user_name() {
        let c = Config::load(None, vec![]).unwrap();
        assert_eq!(c.auth.login_attempts_per_ip_per_minute, 20);
        assert_eq!(c.auth.login_failures_per_ip_user_per_minute, 5);
        assert_eq!(c.auth.login_backoff_max, Duration::from_secs(900));
        assert_eq!(c.auth.login_attempts_per_second, 20);
        assert_eq!(c.auth.login_hash_concurrency, 0);
        assert!(c.auth.login_hash_permits() >= 1, "0 = one per core");
        assert_eq!(c.auth.login_hash_queue, 16);
        assert_eq!(c.auth.login_hash_wait, Duration::from_secs(1));
        // The key's former name still loads, from a file or the environment.
        let c = Config::from_text(
            "[auth]\nlogin_attempts_per_user_per_minute = 7\n",
            "t",
            vec![],
        )
        .unwrap();
        assert_eq!(c.auth.login_failures_per_ip_user_per_minute, 7);
        let c = Config::load(
            None,
            env(&[
                ("SWITCHBOARD_AUTH_LOGIN_ATTEMPTS_PER_USER_PER_MINUTE", "8"),
                ("SWITCHBOARD_AUTH_LOGIN_HASH_WAIT", "250ms"),
                ("SWITCHBOARD_AUTH_LOGIN_HASH_CONCURRENCY", "3"),
            ]),
        )
        .unwrap();
        assert_eq!(c.auth.login_failures_per_ip_user_per_minute, 8);
        assert_eq!(c.auth.login_hash_wait, Duration::from_millis(250));
        assert_eq!(c.auth.login_hash_permits(), 3);
    }

    #[test]
    fn missing_file_is_a_clear_error() {
        let e = Config::load(Some("/nonexistent/switchboard.toml"), vec![])
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/switchboard.toml"), "{e}");
    }
}
