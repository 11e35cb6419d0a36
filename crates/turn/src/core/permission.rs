//! Permissions (RFC 8656 §9): CreatePermission installs them per peer IP for
//! `permission_lifetime`; data to or from a peer needs one. Every peer address a client names
//! is vetted against the peer policy and the relay's address family first.

use super::allocation::Allocation;
use super::auth::Key;
use super::client::ClientId;
use super::policy::canonical;
use super::request::{error, success};
use super::stun::{attr, decode_address, Message};
use super::turn_core::TurnCore;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

impl Allocation {
    /// Whether a permission for `ip` is installed and not expired.
    pub(super) fn permitted(&self, ip: IpAddr, now: Instant) -> bool {
        self.permissions.get(&ip).is_some_and(|e| *e > now)
    }

    /// Installs or refreshes a permission for each of `ips` until `until`, all of them or
    /// none: false, with nothing installed, when the IPs not permitted yet would take the
    /// allocation past `max` permissions.
    pub(super) fn permit_all(
        &mut self,
        ips: impl Iterator<Item = IpAddr> + Clone,
        until: Instant,
        max: usize,
    ) -> bool {
        let new = ips
            .clone()
            .filter(|ip| !self.permissions.contains_key(ip))
            .count();
        if self.permissions.len() + new > max {
            return false;
        }
        for ip in ips {
            self.permissions.insert(ip, until);
        }
        true
    }
}

impl TurnCore {
    /// Checks a peer address against policy and the allocation's family.
    pub(super) fn vet_peer(
        &self,
        relay: SocketAddr,
        peer: SocketAddr,
    ) -> Result<(), (u16, &'static str)> {
        if !self.cfg.policy.permits(peer.ip()) || peer.port() == 0 {
            self.metrics.denied_peers.inc();
            return Err((403, "Forbidden"));
        }
        let peer_v4 = matches!(canonical(peer.ip()), IpAddr::V4(_)) && peer.is_ipv4();
        if peer_v4 != relay.is_ipv4() {
            return Err((443, "Peer Address Family Mismatch"));
        }
        Ok(())
    }

    /// CreatePermission: installs or refreshes a permission for the IP of each
    /// XOR-PEER-ADDRESS (at most 16), all of them or none.
    pub(super) fn create_permission(
        &mut self,
        now: Instant,
        client: &ClientId,
        m: &Message<'_>,
        key: Key,
        out: &mut Vec<u8>,
    ) {
        let Some(relay) = self.allocations.get(client).map(|a| a.relay) else {
            return error(out, m, 437, "Allocation Mismatch", Some(&key));
        };
        let mut peers = [None; 16];
        let mut n = 0;
        for v in m.get_all(attr::XOR_PEER_ADDRESS) {
            let Some(p) = decode_address(v, true, &m.transaction_id) else {
                return error(out, m, 400, "Bad Request", Some(&key));
            };
            if let Err((code, why)) = self.vet_peer(relay, p) {
                return error(out, m, code, why, Some(&key));
            }
            if n == peers.len() {
                return error(out, m, 400, "Bad Request", Some(&key));
            }
            peers[n] = Some(p);
            n += 1;
        }
        if n == 0 {
            return error(out, m, 400, "Bad Request", Some(&key));
        }
        let (max, life) = (
            self.cfg.limits.max_permissions,
            self.cfg.lifetimes.permission,
        );
        let Some(a) = self.allocations.get_mut(client) else {
            return;
        };
        let ips = peers[..n].iter().flatten().map(|p| p.ip());
        if !a.permit_all(ips, now + life, max) {
            self.metrics.quota("permissions");
            return error(out, m, 508, "Insufficient Capacity", Some(&key));
        }
        success(out, m, &key);
    }
}

#[cfg(test)]
mod tests {
    use crate::core::test_support::{allocated, harness, peer};
    use std::net::SocketAddr;

    /// Policy (denied ranges, port 0) answers 403; a peer of the other family than the relay
    /// 443. An IPv4-mapped IPv6 peer is judged by the policy as IPv4 but is an IPv6 address
    /// on the wire, so only an IPv6 relay can reach it.
    #[test]
    fn peers_are_vetted_by_policy_port_and_the_relay_family() {
        let h = harness(|_| {});
        let v4: SocketAddr = "192.0.2.1:50000".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::1]:50000".parse().unwrap();
        let vet = |relay: SocketAddr, p: &str| h.core.vet_peer(relay, p.parse().unwrap());
        assert_eq!(vet(v4, "203.0.113.5:5"), Ok(()));
        assert_eq!(vet(v4, "203.0.113.5:0"), Err((403, "Forbidden")));
        assert_eq!(vet(v4, "10.0.0.1:5"), Err((403, "Forbidden")));
        assert_eq!(
            vet(v4, "[2001:db8::5]:5"),
            Err((443, "Peer Address Family Mismatch"))
        );
        assert_eq!(
            vet(v6, "203.0.113.5:5"),
            Err((443, "Peer Address Family Mismatch"))
        );
        assert_eq!(vet(v6, "[2001:db8::5]:5"), Ok(()));
        assert_eq!(
            vet(v4, "[::ffff:203.0.113.5]:5"),
            Err((443, "Peer Address Family Mismatch"))
        );
        assert_eq!(vet(v6, "[::ffff:203.0.113.5]:5"), Ok(()));
        assert_eq!(vet(v6, "[::ffff:10.0.0.1]:5"), Err((403, "Forbidden")));
        assert_eq!(h.metrics.denied_peers.get(), 3);
    }

    /// A permission covers every port of its IP and lasts `permission_lifetime`, to the
    /// instant.
    #[test]
    fn a_permission_covers_the_ip_until_it_expires() {
        let (mut h, c, _) = allocated();
        h.permit(10, &c, peer(1, 1000));
        let a = &h.core.allocations[&c];
        let ip = peer(1, 0).ip();
        assert!(a.permitted(ip, h.at(10 + 299)));
        assert!(!a.permitted(ip, h.at(10 + 300)));
        assert!(!a.permitted(peer(2, 1000).ip(), h.at(10)));
    }
}
