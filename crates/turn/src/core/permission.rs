//! Permissions (RFC 8656 §9): CreatePermission installs them per peer IP for
//! `permission_lifetime`; data to or from a peer needs one. Every peer address a client names
//! is vetted against the peer policy and the relay's address family first.

use super::allocation::Allocation;
use super::auth::Key;
use super::client::ClientId;
use super::policy::canonical;
use super::request::{error, seal};
use super::stun::{attr, decode_address, method, Class, Message, MessageWriter};
use super::turn_core::TurnCore;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

impl Allocation {
    /// Whether a permission for `ip` is installed and not expired.
    pub(super) fn permitted(&self, ip: IpAddr, now: Instant) -> bool {
        self.permissions.get(&ip).is_some_and(|e| *e > now)
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
        let new = peers[..n]
            .iter()
            .flatten()
            .filter(|p| !a.permissions.contains_key(&p.ip()))
            .count();
        if a.permissions.len() + new > max {
            self.metrics.quota("permissions");
            return error(out, m, 508, "Insufficient Capacity", Some(&key));
        }
        for p in peers[..n].iter().flatten() {
            a.permissions.insert(p.ip(), now + life);
        }
        let mut w = MessageWriter::new(
            out,
            method::CREATE_PERMISSION,
            Class::Success,
            &m.transaction_id,
        );
        seal(&mut w, &key);
    }
}
