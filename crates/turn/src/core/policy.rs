//! Which peer addresses an allocation may reach. Safe by default: loopback, private
//! (RFC 1918, ULA), link-local (incl. cloud metadata 169.254.169.254), CGNAT, "this network",
//! multicast, reserved, NAT64 and IPv4-compatible ranges are refused. IPv4-mapped IPv6
//! addresses are judged as the IPv4 address they carry.

use ipnet::IpNet;
use std::net::IpAddr;

const DEFAULT_DENIED: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::/96",
    "64:ff9b::/96",
    "64:ff9b:1::/48",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
];

/// Peer address policy: `allowed` ranges win over `denied` ones.
#[derive(Clone, Debug)]
pub struct PeerPolicy {
    denied: Vec<IpNet>,
    allowed: Vec<IpNet>,
}

/// A range that did not parse (`denied_peer_ip` / `allowed_peer_ip`).
#[derive(Debug, thiserror::Error)]
#[error("invalid address range {0:?} (use CIDR like 10.0.0.0/8, a single IP, or A-B)")]
pub struct BadRange(pub String);

fn parse_range(s: &str) -> Result<Vec<IpNet>, BadRange> {
    let s = s.trim();
    if let Ok(n) = s.parse::<IpNet>() {
        return Ok(vec![n.trunc()]);
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(vec![IpNet::from(ip)]);
    }
    // coturn's "A-B" form.
    if let Some((a, b)) = s.split_once('-') {
        let (a, b) = (a.trim().parse::<IpAddr>(), b.trim().parse::<IpAddr>());
        if let (Ok(IpAddr::V4(a)), Ok(IpAddr::V4(b))) = (&a, &b) {
            let (a, b) = (*a, *b);
            if a <= b {
                return Ok(ipnet::Ipv4Subnets::new(a, b, 0).map(IpNet::V4).collect());
            }
        }
        if let (Ok(IpAddr::V6(a)), Ok(IpAddr::V6(b))) = (a, b) {
            if a <= b {
                return Ok(ipnet::Ipv6Subnets::new(a, b, 0).map(IpNet::V6).collect());
            }
        }
    }
    Err(BadRange(s.to_string()))
}

impl PeerPolicy {
    /// Builds the policy from config: the defaults plus `denied`, minus `allowed`, with
    /// loopback allowed only when `allow_loopback` is set.
    pub fn new(
        denied: &[String],
        allowed: &[String],
        allow_loopback: bool,
    ) -> Result<Self, BadRange> {
        let mut d: Vec<IpNet> = DEFAULT_DENIED
            .iter()
            .map(|s| s.parse().expect("built-in range"))
            .collect();
        for s in denied {
            d.extend(parse_range(s)?);
        }
        let mut a = Vec::new();
        for s in allowed {
            a.extend(parse_range(s)?);
        }
        if allow_loopback {
            a.push("127.0.0.0/8".parse().expect("range"));
            a.push("::1/128".parse().expect("range"));
        }
        Ok(PeerPolicy {
            denied: d,
            allowed: a,
        })
    }

    /// Whether relaying to `ip` is permitted.
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        if self.allowed.iter().any(|n| n.contains(&ip)) {
            return true;
        }
        !self.denied.iter().any(|n| n.contains(&ip))
    }
}

/// IPv4-mapped IPv6 (`::ffff:a.b.c.d`) becomes the IPv4 address.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn defaults_deny_internal_ranges() {
        let pol = PeerPolicy::new(&[], &[], false).unwrap();
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "169.254.169.254",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "fe80::1",
            "fd00:ec2::254",
            "ff02::1",
            "64:ff9b::a00:1",
        ] {
            assert!(!pol.permits(p(ip)), "{ip} should be denied");
        }
        for ip in ["8.8.8.8", "2001:4860:4860::8888", "::ffff:8.8.8.8"] {
            assert!(pol.permits(p(ip)), "{ip} should be allowed");
        }
    }

    #[test]
    fn loopback_switch_and_overrides() {
        let pol = PeerPolicy::new(
            &["8.8.8.0/24".into()],
            &["10.5.0.0/16".into(), "192.168.1.10-192.168.1.20".into()],
            true,
        )
        .unwrap();
        assert!(pol.permits(p("127.0.0.1")));
        assert!(pol.permits(p("::ffff:127.0.0.1")));
        assert!(pol.permits(p("10.5.1.1")));
        assert!(!pol.permits(p("10.6.1.1")));
        assert!(pol.permits(p("192.168.1.15")));
        assert!(!pol.permits(p("192.168.1.21")));
        assert!(!pol.permits(p("8.8.8.8")));
        assert!(!pol.permits(p("169.254.169.254")));
        assert!(PeerPolicy::new(&["nonsense".into()], &[], false).is_err());
    }
}
