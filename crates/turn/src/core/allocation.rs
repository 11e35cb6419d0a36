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
