//! Everything `serve` refuses before it binds a socket, checked in one place: `serve`,
//! `check-config` and [`crate::start`] all call [`Config::validate`], so `check-config` refuses
//! exactly what `serve` would. Each problem names its key and, where the key was set, the file
//! and line (or the environment variable that set it).

use super::{Config, ConfigSource};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use switchboard_sfu::SfuMode;

/// One thing wrong with a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `section.key`, e.g. `turn.min_port`.
    pub key: String,
    pub message: String,
    /// Where the key was set: `switchboard.toml line 12` or `SWITCHBOARD_TURN_MIN_PORT`.
    pub at: Option<String>,
}

/// Every problem found, in a stable order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigInvalid(pub Vec<Problem>);

impl fmt::Display for ConfigInvalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(
            f,
            "invalid configuration ({n} problem{}):",
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.0 {
            match &p.at {
                Some(at) => write!(f, "\n  - {} ({at}): {}", p.key, p.message)?,
                None => write!(f, "\n  - {}: {}", p.key, p.message)?,
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigInvalid {}

/// A listener one section wants: protocol, address and the key that set it.
struct Listener {
    tcp: bool,
    addr: SocketAddr,
    key: &'static str,
}

impl Config {
    /// Checks everything that can be checked without binding sockets.
    pub fn validate(&self) -> Result<(), ConfigInvalid> {
        let mut v = Problems::new(self.source.as_deref());
        let mut listeners = Vec::new();

        match self.http.bind.parse::<SocketAddr>() {
            Ok(a) => listeners.push(Listener {
                tcp: true,
                addr: a,
                key: "http.bind",
            }),
            Err(_) => v.bad_addr("http.bind", &self.http.bind),
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            v.add(
                "log.level",
                format!("{:?} is not a log filter: {e}", self.log.level),
            );
        }
        if let Err(e) = switchboard_auth::KeyRing::from_config(&self.auth) {
            v.add_auto("auth", e.to_string());
        }
        self.validate_turn(&mut v, &mut listeners);
        if self.sfu.mode != SfuMode::Mesh {
            if let Err(e) = switchboard_sfu::validate_config(&self.sfu) {
                v.add_auto("sfu", e.to_string());
            }
            match self.sfu.bind_ip.parse::<IpAddr>() {
                Ok(ip) => {
                    listeners.push(Listener {
                        tcp: false,
                        addr: SocketAddr::new(ip, self.sfu.udp_port),
                        key: "sfu.udp_port",
                    });
                    listeners.push(Listener {
                        tcp: true,
                        addr: SocketAddr::new(ip, self.sfu.tcp_port),
                        key: "sfu.tcp_port",
                    });
                }
                Err(_) => v.add(
                    "sfu.bind_ip",
                    format!("{:?} is not an IP address", self.sfu.bind_ip),
                ),
            }
        }
        if let Err(e) = switchboard_stream::check_config(&self.stream) {
            v.add_auto("stream", e.to_string());
        }
        for (key, message) in self.cluster.problems() {
            v.add(key, message);
        }
        if !self.cluster.enabled()
            && (self.cluster.node_id.is_some() || self.cluster.advertise_url.is_some())
        {
            v.add(
                "cluster.redis_url",
                "is not set, so [cluster] node_id and advertise_url would do nothing; set \
                 redis_url for multi-node mode"
                    .into(),
            );
        }
        shared_ports(&listeners, &mut v);
        let l = &self.limits;
        if l.signal_send_queue_bytes < l.signal_resume_buffer_bytes {
            v.add(
                "limits.signal_send_queue_bytes",
                format!(
                    "{} is below limits.signal_resume_buffer_bytes ({}): a resume's replay would \
                     not fit in the send queue",
                    l.signal_send_queue_bytes, l.signal_resume_buffer_bytes
                ),
            );
        }
        for (key, n) in [
            ("limits.signal_max_frame_bytes", l.signal_max_frame_bytes),
            ("limits.signal_max_connections", l.signal_max_connections),
            ("limits.signal_send_queue", l.signal_send_queue),
            ("limits.signal_max_room_peers", l.signal_max_room_peers),
            ("limits.max_http_body_bytes", l.max_http_body_bytes),
        ] {
            if n == 0 {
                v.add(key, "must be at least 1".into());
            }
        }
        v.finish()
    }

    fn validate_turn(&self, v: &mut Problems, listeners: &mut Vec<Listener>) {
        let t = &self.turn;
        if !t.enabled {
            return;
        }
        if t.realm.trim().is_empty() {
            v.add(
                "turn.realm",
                "is empty; TURN clients need a realm (e.g. \"switchboard\")".into(),
            );
        }
        match t.listen.parse::<SocketAddr>() {
            Ok(a) => {
                listeners.push(Listener {
                    tcp: false,
                    addr: a,
                    key: "turn.listen",
                });
                listeners.push(Listener {
                    tcp: true,
                    addr: a,
                    key: "turn.listen",
                });
            }
            Err(_) => v.bad_addr("turn.listen", &t.listen),
        }
        if t.cert.is_some() != t.pkey.is_some() {
            v.add(
                "turn.cert",
                "turn.cert and turn.pkey go together: set both for TURN over TLS, or neither"
                    .into(),
            );
        }
        if t.cert.is_some() && t.pkey.is_some() {
            match t.tls_listen.parse::<SocketAddr>() {
                Ok(a) => listeners.push(Listener {
                    tcp: true,
                    addr: a,
                    key: "turn.tls_listen",
                }),
                Err(_) => v.bad_addr("turn.tls_listen", &t.tls_listen),
            }
        }
        if let Err(e) = switchboard_turn::driver::core_config(t) {
            v.add_auto("turn", e.to_string());
        }
    }
}

/// Two listeners on one port of one protocol whose addresses overlap (equal, or one of them
/// every address). Port 0 (ephemeral) never clashes.
fn shared_ports(listeners: &[Listener], v: &mut Problems) {
    for (i, a) in listeners.iter().enumerate() {
        for b in &listeners[i + 1..] {
            let overlap = a.addr.ip() == b.addr.ip()
                || a.addr.ip().is_unspecified()
                || b.addr.ip().is_unspecified();
            if a.tcp == b.tcp
                && a.key != b.key
                && a.addr.port() != 0
                && a.addr.port() == b.addr.port()
                && overlap
            {
                v.add(
                    b.key,
                    format!(
                        "{} {} would share its {} port with {} {}",
                        b.key,
                        b.addr,
                        if a.tcp { "TCP" } else { "UDP" },
                        a.key,
                        a.addr
                    ),
                );
            }
        }
    }
}

/// Problems as they are found, each placed in the file or the environment.
struct Problems<'a> {
    source: Option<&'a ConfigSource>,
    found: Vec<Problem>,
}

impl<'a> Problems<'a> {
    fn new(source: Option<&'a ConfigSource>) -> Self {
        Problems {
            source,
            found: Vec::new(),
        }
    }

    fn add(&mut self, key: &str, message: String) {
        let at = self.source.and_then(|s| where_set(s, key));
        if !self
            .found
            .iter()
            .any(|p| p.key == key && p.message == message)
        {
            self.found.push(Problem {
                key: key.to_string(),
                message,
                at,
            });
        }
    }

    /// A crate's own error: its message usually starts with the key it is about
    /// (`turn.min_port 70000 is ...`); use that key when it does, `section` otherwise.
    fn add_auto(&mut self, section: &str, message: String) {
        let key = message
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
            .find(|w| w.starts_with(&format!("{section}.")) && w.len() > section.len() + 1)
            .map(|w| w.trim_end_matches('.').to_string())
            .unwrap_or_else(|| section.to_string());
        self.add(&key, message);
    }

    fn bad_addr(&mut self, key: &str, value: &str) {
        self.add(
            key,
            format!("{value:?} is not an address with a port (ip:port, port 0 to 65535)"),
        );
    }

    fn finish(self) -> Result<(), ConfigInvalid> {
        if self.found.is_empty() {
            Ok(())
        } else {
            Err(ConfigInvalid(self.found))
        }
    }
}

/// Where `key` (`section.key`) was set: the environment variable that overrode it, or the line
/// of the file that sets it.
fn where_set(s: &ConfigSource, key: &str) -> Option<String> {
    if let Some((var, _)) = s.overrides.iter().rev().find(|(_, k)| k == key) {
        return Some(var.clone());
    }
    let (section, name) = key.split_once('.').unwrap_or((key, ""));
    let mut in_section = false;
    // A key that is not in the file (a default) is placed at its section's header.
    let mut header_line = None;
    for (i, line) in s.text.lines().enumerate() {
        let l = line.trim();
        if l.starts_with('[') {
            let header = l.trim_matches(|c| c == '[' || c == ']').trim();
            in_section = header == section || header.starts_with(&format!("{section}."));
            if in_section && header_line.is_none() {
                header_line = Some(i + 1);
            }
            continue;
        }
        if in_section && !name.is_empty() {
            if let Some((k, _)) = l.split_once('=') {
                if k.trim() == name {
                    return Some(format!("{} line {}", s.label, i + 1));
                }
            }
        }
    }
    header_line.map(|n| format!("{} line {n}, [{section}]", s.label))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The config `text` as `serve` would load it (no environment), validated.
    fn check(text: &str) -> Result<(), ConfigInvalid> {
        let c = Config::from_text(text, "t.toml", Vec::new()).map_err(|e| {
            ConfigInvalid(vec![Problem {
                key: "<parse>".into(),
                message: e.to_string(),
                at: None,
            }])
        })?;
        c.validate()
    }

    const KEY: &str = "[[auth.keys]]\nkid = \"k\"\nsecret = \"0123456789abcdef0123456789abcdef\"\n";

    #[test]
    fn a_sound_config_passes() {
        let text = format!("{KEY}[turn]\nstatic_auth_secret = \"s\"\n");
        check(&text).unwrap();
    }

    #[test]
    fn problems_name_the_key_and_the_line() {
        let text = format!(
            "{KEY}[turn]\nstatic_auth_secret = \"s\"\nmin_port = 60000\nmax_port = 50000\n"
        );
        let e = check(&text).unwrap_err();
        let p =
            e.0.iter()
                .find(|p| p.key == "turn.min_port")
                .expect("min_port");
        assert_eq!(p.at.as_deref(), Some("t.toml line 6"), "{e}");
        let shown = e.to_string();
        assert!(shown.contains("turn.min_port (t.toml line 6)"), "{shown}");
    }

    #[test]
    fn every_refusal_serve_had_is_found() {
        let cases: &[(&str, &str)] = &[
            ("[http]\nbind = \"127.0.0.1:99999\"\n", "http.bind"),
            ("[turn]\nenabled = true\n", "turn"),
            (
                "[turn]\nstatic_auth_secret = \"s\"\nrealm = \"\"\n",
                "turn.realm",
            ),
            (
                "[turn]\nstatic_auth_secret = \"s\"\nmin_port = 9\nmax_port = 8\n",
                "turn.min_port",
            ),
            (
                "[turn]\nstatic_auth_secret = \"s\"\nlisten = \"127.0.0.1:7880\"\n",
                "turn.listen",
            ),
            (
                "[turn]\nenabled = false\n[sfu]\nudp_port = 7890\ntcp_port = 7880\n",
                "sfu.tcp_port",
            ),
            (
                "[turn]\nenabled = false\n[[stream.upstreams]]\nname = \"ml\"\nurl = \"ftp://x\"\n",
                "stream",
            ),
            (
                "[turn]\nenabled = false\n[log]\nlevel = \"info,,=[\"\n",
                "log.level",
            ),
            (
                "[turn]\nenabled = false\n[limits]\nsignal_send_queue_bytes = 10\n",
                "limits.signal_send_queue_bytes",
            ),
        ];
        for (extra, key) in cases {
            let text = format!("{KEY}{extra}");
            let e = check(&text).expect_err(extra);
            assert!(
                e.0.iter()
                    .any(|p| p.key == *key || p.key.starts_with(&format!("{key}."))),
                "{extra}: {e}"
            );
        }
        // Refused while parsing already, with line and key.
        for (extra, key) in [
            ("[sfu]\nmode = \"selective\"\n", "mode"),
            ("[log]\nformat = \"yaml\"\n", "format"),
        ] {
            let e = check(&format!("{KEY}{extra}")).unwrap_err().to_string();
            assert!(e.contains(key) && e.contains("line"), "{e}");
        }
        // No key at all: the signing key is missing.
        let e = check("").unwrap_err();
        assert!(e.0.iter().any(|p| p.key.starts_with("auth")), "{e}");
    }

    #[test]
    fn an_environment_override_is_named() {
        let c = Config::from_text(
            KEY,
            "t.toml",
            vec![("SWITCHBOARD_TURN_REALM".to_string(), "".to_string())],
        )
        .unwrap();
        let mut c = c;
        c.turn.static_auth_secret = "s".into();
        let e = c.validate().unwrap_err();
        let p = e.0.iter().find(|p| p.key == "turn.realm").unwrap();
        assert_eq!(p.at.as_deref(), Some("SWITCHBOARD_TURN_REALM"));
    }
}
