//! The allocation table: one [`Allocation`] per client 5-tuple, also found by its relay
//! address; the lifetimes clients ask for, expiry, and removal (which releases the relay
//! address, the user's quota and the allocation's TCP peer connections).

use super::auth::Key;
use super::channel::Channels;
use super::client::ClientId;
use super::quota::{quota_key, Bucket};
use super::relay::RelayAllocator;
use super::small_map::SmallMap;
use super::stun::{attr, Message};
use super::tcp::TcpRelay;
use super::turn_core::TurnCore;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// One client's allocation (RFC 8656 §2.2): relay address, lifetime, the credentials that
/// created it, permissions, channel bindings and bandwidth.
pub(super) struct Allocation {
    pub(super) relay: SocketAddr,
    pub(super) advertised: SocketAddr,
    pub(super) expires: Instant,
    pub(super) username: Box<str>,
    pub(super) key: Key,
    /// Transaction that created it: a retransmitted Allocate gets the same answer.
    pub(super) tid: [u8; 12],
    pub(super) permissions: SmallMap<IpAddr, Instant>,
    pub(super) channels: Channels,
    pub(super) bucket: Bucket,
    /// `Some` for a TCP relay (RFC 6062: data flows over connections, not channels or
    /// indications). Boxed, so a UDP allocation pays one word for it.
    pub(super) tcp: Option<Box<TcpRelay>>,
}

impl TurnCore {
    /// Allocations held, all clients together.
    pub fn allocation_count(&self) -> usize {
        self.allocations.len()
    }

    /// The relay address of `client`'s allocation, if any.
    pub fn relay_of(&self, client: &ClientId) -> Option<SocketAddr> {
        self.allocations.get(client).map(|a| a.relay)
    }

    /// A stream connection closed: its allocation goes with it (RFC 8656 §3.1).
    pub fn client_closed(&mut self, client: &ClientId, relays: &mut dyn RelayAllocator) {
        if self.remove(client, relays) {
            self.metrics.allocations_deleted.inc();
        }
    }

    /// Removes `client`'s allocation: its TCP peer connections end, its relay address is
    /// released and its user holds one allocation fewer. Whether it had one.
    pub(super) fn remove(&mut self, client: &ClientId, relays: &mut dyn RelayAllocator) -> bool {
        let Some(a) = self.allocations.remove(client) else {
            return false;
        };
        for id in a.tcp_ids() {
            self.end_tcp(*id);
        }
        self.by_relay.remove(&a.relay);
        relays.release(a.relay);
        let user = quota_key(&self.cfg.users, &a.username);
        self.per_user.release(user);
        self.metrics.allocations.dec();
        true
    }

    /// Removes the allocations that expired and, from the others, the permissions and
    /// channel bindings that did.
    pub(super) fn expire_allocations(&mut self, now: Instant, relays: &mut dyn RelayAllocator) {
        let mut expired = Vec::new();
        for (c, a) in self.allocations.iter_mut() {
            if a.expires <= now {
                expired.push(*c);
                continue;
            }
            a.permissions.retain(|_, e| *e > now);
            a.channels.expire(now);
        }
        for c in expired {
            self.remove(&c, relays);
            self.metrics.allocations_expired.inc();
        }
    }

    /// The lifetime a request's LIFETIME asks for, within the configured bounds: zero stays
    /// zero (Refresh deletes with it), anything else is raised to the default and capped at
    /// the maximum; without a (well-formed) LIFETIME, the default.
    pub(super) fn lifetime(&self, m: &Message<'_>) -> Duration {
        let requested = m
            .get(attr::LIFETIME)
            .filter(|v| v.len() == 4)
            .map(|v| Duration::from_secs(u32::from_be_bytes([v[0], v[1], v[2], v[3]]) as u64));
        match requested {
            Some(d) if d.is_zero() => d,
            Some(d) => d
                .max(self.cfg.lifetimes.default_allocation)
                .min(self.cfg.lifetimes.max_allocation),
            None => self.cfg.lifetimes.default_allocation,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::core::stun::{attr, method, Class, Message, MessageWriter};
    use crate::core::test_support::{harness, peer, udp_client, USER};
    use std::time::Duration;

    /// What `lifetime` makes of a Refresh carrying `lifetime` (`None`: no LIFETIME; a slice:
    /// a malformed one), with the test defaults (600 s default, 3600 s maximum).
    fn lifetime_for(value: Option<&[u8]>) -> Duration {
        let h = harness(|_| {});
        let mut buf = Vec::new();
        let mut w = MessageWriter::new(&mut buf, method::REFRESH, Class::Request, &[1; 12]);
        if let Some(v) = value {
            w.attr(attr::LIFETIME, v);
        }
        drop(w);
        h.core.lifetime(&Message::decode(&buf).unwrap())
    }

    #[test]
    fn lifetimes_are_raised_to_the_default_and_capped_at_the_maximum() {
        let secs = |s: u32| s.to_be_bytes();
        assert_eq!(lifetime_for(None), Duration::from_secs(600));
        assert_eq!(lifetime_for(Some(&secs(0))), Duration::ZERO);
        assert_eq!(lifetime_for(Some(&secs(60))), Duration::from_secs(600));
        assert_eq!(lifetime_for(Some(&secs(1800))), Duration::from_secs(1800));
        assert_eq!(lifetime_for(Some(&secs(7200))), Duration::from_secs(3600));
        assert_eq!(lifetime_for(Some(&[0, 0, 0])), Duration::from_secs(600));
    }

    /// Removing an allocation undoes everything creating it did: the relay lookup, the relay
    /// address, and the user's count (whose entry goes with the last allocation).
    #[test]
    fn removal_releases_the_relay_lookup_and_the_user_count() {
        let mut h = harness(|_| {});
        let (c1, c2) = (udp_client(1), udp_client(2));
        let r1 = h.allocate(0, &c1, false);
        let r2 = h.allocate(0, &c2, false);
        assert_eq!(h.core.per_user.used(USER), 2);
        assert_eq!(h.core.relay_of(&c1), Some(r1));
        h.core.client_closed(&c1, &mut h.relays);
        assert_eq!(h.core.relay_of(&c1), None);
        assert!(!h.core.by_relay.contains_key(&r1));
        assert_eq!(h.relays.released, vec![r1]);
        assert_eq!(h.core.per_user.used(USER), 1);
        h.core.client_closed(&c2, &mut h.relays);
        h.core.client_closed(&c2, &mut h.relays);
        assert_eq!(h.relays.released, vec![r1, r2]);
        assert_eq!(h.core.per_user.users(), 0);
        assert_eq!(h.core.allocation_count(), 0);
        assert_eq!(h.metrics.allocations_deleted.get(), 2);
        assert_eq!(h.metrics.allocations.get(), 0);
    }

    /// The sweep drops expired permissions (300 s) and channels (600 s) from an allocation
    /// that lives on, then the allocation itself when its lifetime is over.
    #[test]
    fn the_sweep_expires_permissions_then_channels_then_the_allocation() {
        let mut h = harness(|_| {});
        let c = udp_client(1);
        let code = h.request(0, &c, method::ALLOCATE, |w| {
            w.u32_attr(attr::REQUESTED_TRANSPORT, 17 << 24);
            w.u32_attr(attr::LIFETIME, 3600);
        });
        assert_eq!(code, None);
        h.permit(0, &c, peer(1, 1000));
        h.bind_channel(0, &c, 0x4000, peer(2, 2000));
        let count = |h: &crate::core::test_support::Harness| {
            let a = &h.core.allocations[&c];
            (a.permissions.len(), a.channels.len())
        };
        assert_eq!(count(&h), (2, 1));
        h.core.handle_timeout(h.at(300), &mut h.relays);
        assert_eq!(count(&h), (0, 1));
        h.core.handle_timeout(h.at(600), &mut h.relays);
        assert_eq!(count(&h), (0, 0));
        assert_eq!(
            h.core.allocations[&c].channels.of_peer(&peer(2, 2000)),
            None
        );
        h.core.handle_timeout(h.at(3599), &mut h.relays);
        assert_eq!(h.core.allocation_count(), 1);
        h.core.handle_timeout(h.at(3600), &mut h.relays);
        assert_eq!(h.core.allocation_count(), 0);
        assert_eq!(h.metrics.allocations_expired.get(), 1);
        assert!(h.relays.live.is_empty());
    }
}
