//! The ICE servers a client is told about: the same document for `GET /v1/ice-servers`,
//! signaling's `joined` and `switchboard turn-credentials`, built once from `[turn]` and the
//! addresses TURN actually bound.
//!
//! Which host the URIs name: `[turn] uris` when set (used as given); else `external_ip`; else
//! the address TURN listens on; and when that is unspecified (`0.0.0.0`, `::`), the host the
//! client itself used to reach this server (its `Host`), since that is an address the client
//! can reach. IPv6 literals are written in brackets (`turn:[2001:db8::1]:3478`).

use serde_json::{json, Value};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use switchboard_auth::turn_rest;
use switchboard_turn::TurnConfig;

/// Where TURN listens, as far as the advertised URIs are concerned.
#[derive(Debug, Clone, Copy, Default)]
pub struct TurnPorts {
    pub udp: Option<SocketAddr>,
    pub tcp: Option<SocketAddr>,
    pub tls: Option<SocketAddr>,
}

/// The host part of the URIs.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Host {
    /// Known from configuration or a specific listen address (already bracketed if IPv6).
    Known(String),
    /// TURN listens on every address: name the host the client used.
    FromRequest,
}

/// The ICE-servers document's ingredients, built once.
#[derive(Debug, Clone)]
pub struct IceServers {
    /// `[turn] uris`, split into STUN and TURN, when configured.
    configured: Option<(Vec<String>, Vec<String>)>,
    host: Host,
    port: u16,
    tcp_port: u16,
    /// TURN over TLS, when a certificate is configured.
    tls_port: Option<u16>,
    enabled: bool,
    secret: String,
    ttl: Duration,
}

/// `ip` as a URI host: IPv6 in brackets.
fn uri_host(ip: &str) -> String {
    match ip.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => format!("[{v6}]"),
        _ => ip.to_string(),
    }
}

/// The host of an HTTP `Host` value (`name:port`, `[v6]:port`, `name`), brackets kept.
fn host_of(header: &str) -> &str {
    if let Some(end) = header.strip_prefix('[').and_then(|h| h.find(']')) {
        return &header[..end + 2];
    }
    header.rsplit_once(':').map_or(
        header,
        |(h, p)| if p.parse::<u16>().is_ok() { h } else { header },
    )
}

impl IceServers {
    /// From `[turn]` and where TURN bound (`ports`; unset fields fall back to the config).
    pub fn new(t: &TurnConfig, ports: TurnPorts) -> IceServers {
        let listen: Option<SocketAddr> = ports.udp.or_else(|| t.listen.parse().ok());
        let port = listen.map_or(3478, |a| a.port());
        let host = match (&t.external_ip, listen) {
            (Some(ip), _) => Host::Known(uri_host(ip)),
            (None, Some(a)) if !a.ip().is_unspecified() => {
                Host::Known(uri_host(&a.ip().to_string()))
            }
            _ => Host::FromRequest,
        };
        let tls_port = (t.cert.is_some() && t.pkey.is_some()).then(|| {
            ports
                .tls
                .map(|a| a.port())
                .or_else(|| t.tls_listen.parse::<SocketAddr>().ok().map(|a| a.port()))
                .unwrap_or(5349)
        });
        let configured = (!t.uris.is_empty())
            .then(|| t.uris.iter().cloned().partition(|u| u.starts_with("stun")));
        IceServers {
            configured,
            host,
            port,
            tcp_port: ports.tcp.map_or(port, |a| a.port()),
            tls_port,
            enabled: t.enabled,
            secret: t.static_auth_secret.clone(),
            ttl: t.credential_ttl,
        }
    }

    /// True when the URIs depend on the host a client used (TURN listens on every address and
    /// no `external_ip` or `uris` is set).
    pub fn host_from_request(&self) -> bool {
        self.configured.is_none() && self.host == Host::FromRequest
    }

    /// STUN and TURN URIs for a client that reached this server as `request_host` (an HTTP
    /// `Host` value); without one, an unknown host is written `127.0.0.1`. Derived even when
    /// the embedded TURN is off, for credentials meant for a coturn at the same address.
    pub fn uris(&self, request_host: Option<&str>) -> (Vec<String>, Vec<String>) {
        if let Some((stun, turn)) = &self.configured {
            return (stun.clone(), turn.clone());
        }
        let host = match &self.host {
            Host::Known(h) => h.clone(),
            Host::FromRequest => request_host.map_or_else(
                || "127.0.0.1".to_string(),
                |h| uri_host(host_of(h).trim_matches(['[', ']'])),
            ),
        };
        let (port, tcp_port) = (self.port, self.tcp_port);
        let stun = vec![format!("stun:{host}:{port}")];
        let mut turn = vec![
            format!("turn:{host}:{port}?transport=udp"),
            format!("turn:{host}:{tcp_port}?transport=tcp"),
        ];
        if let Some(tls) = self.tls_port {
            turn.push(format!("turns:{host}:{tls}?transport=tcp"));
        }
        (stun, turn)
    }

    /// Seconds the TURN credentials stay valid.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// `{"iceServers":[{"urls":[stun...]},{"urls":[turn...],"username","credential"}],"ttl":N}`
    /// for `identity` at UNIX time `now`, with coturn's REST credentials (`use-auth-secret`).
    /// Empty when TURN is off and no `[turn] uris` are configured.
    pub fn document(&self, identity: &str, now: u64, request_host: Option<&str>) -> Value {
        let (stun, turn) = if self.enabled || self.configured.is_some() {
            self.uris(request_host)
        } else {
            (Vec::new(), Vec::new())
        };
        let ttl = self.ttl.as_secs();
        let mut servers = Vec::new();
        if !stun.is_empty() {
            servers.push(json!({"urls": stun}));
        }
        if !turn.is_empty() && !self.secret.is_empty() {
            let c = turn_rest::mint(self.secret.as_bytes(), identity, ttl, now);
            servers.push(json!({"urls": turn, "username": c.username, "credential": c.credential}));
        }
        json!({"iceServers": servers, "ttl": ttl})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(listen: &str) -> TurnConfig {
        TurnConfig {
            listen: listen.into(),
            static_auth_secret: "s".into(),
            ..Default::default()
        }
    }

    #[test]
    fn an_unspecified_listen_address_is_never_advertised() {
        for listen in ["0.0.0.0:3478", "[::]:3478"] {
            let ice = IceServers::new(&turn(listen), TurnPorts::default());
            assert!(ice.host_from_request());
            let (stun, t) = ice.uris(Some("rtc.example.com:7880"));
            assert_eq!(stun, vec!["stun:rtc.example.com:3478"]);
            assert_eq!(t[0], "turn:rtc.example.com:3478?transport=udp");
            let (_, t) = ice.uris(Some("[2001:db8::7]:7880"));
            assert_eq!(t[1], "turn:[2001:db8::7]:3478?transport=tcp");
            let (_, t) = ice.uris(Some("203.0.113.9"));
            assert_eq!(t[0], "turn:203.0.113.9:3478?transport=udp");
            let (_, t) = ice.uris(None);
            assert_eq!(t[0], "turn:127.0.0.1:3478?transport=udp");
            for u in ice.uris(Some("h:1")).1 {
                assert!(!u.contains("0.0.0.0") && !u.contains("[::]"), "{u}");
            }
        }
    }

    #[test]
    fn ipv6_addresses_get_brackets() {
        let ice = IceServers::new(&turn("[2001:db8::1]:3478"), TurnPorts::default());
        let (stun, t) = ice.uris(Some("ignored:80"));
        assert_eq!(stun, vec!["stun:[2001:db8::1]:3478"]);
        assert_eq!(t[0], "turn:[2001:db8::1]:3478?transport=udp");
        let mut c = turn("0.0.0.0:3478");
        c.external_ip = Some("2001:db8::2".into());
        let (_, t) = IceServers::new(&c, TurnPorts::default()).uris(None);
        assert_eq!(t[0], "turn:[2001:db8::2]:3478?transport=udp");
    }

    #[test]
    fn a_configured_public_address_wins_and_bound_ports_are_used() {
        let mut c = turn("0.0.0.0:3478");
        c.external_ip = Some("198.51.100.4".into());
        c.cert = Some("cert.pem".into());
        c.pkey = Some("key.pem".into());
        let ports = TurnPorts {
            udp: Some("0.0.0.0:40000".parse().unwrap()),
            tcp: Some("0.0.0.0:40001".parse().unwrap()),
            tls: Some("0.0.0.0:40002".parse().unwrap()),
        };
        let ice = IceServers::new(&c, ports);
        assert!(!ice.host_from_request());
        let (stun, t) = ice.uris(Some("other.example:7880"));
        assert_eq!(stun, vec!["stun:198.51.100.4:40000"]);
        assert_eq!(
            t,
            vec![
                "turn:198.51.100.4:40000?transport=udp",
                "turn:198.51.100.4:40001?transport=tcp",
                "turns:198.51.100.4:40002?transport=tcp",
            ]
        );
    }

    #[test]
    fn configured_uris_are_used_as_given_and_disabled_turn_has_none() {
        let mut c = turn("0.0.0.0:3478");
        c.uris = vec!["stun:a:1".into(), "turn:b:2?transport=udp".into()];
        let (stun, t) = IceServers::new(&c, TurnPorts::default()).uris(None);
        assert_eq!(
            (stun, t),
            (
                vec!["stun:a:1".into()],
                vec!["turn:b:2?transport=udp".into()]
            )
        );
        let mut off = turn("127.0.0.1:3478");
        off.enabled = false;
        let doc = IceServers::new(&off, TurnPorts::default()).document("alice", 1_000, None);
        assert_eq!(doc["iceServers"], json!([]));
    }

    #[test]
    fn the_document_carries_rest_credentials_for_the_identity() {
        let ice = IceServers::new(&turn("127.0.0.1:3478"), TurnPorts::default());
        let doc = ice.document("alice", 1_000, None);
        let user = doc["iceServers"][1]["username"].as_str().unwrap();
        assert_eq!(user, format!("{}:alice", 1_000 + 3600));
        assert_eq!(
            doc["iceServers"][1]["credential"].as_str().unwrap(),
            turn_rest::password(b"s", user)
        );
        assert_eq!(doc["ttl"], 3600);
    }
}
