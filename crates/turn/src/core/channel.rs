//! Channel bindings (RFC 8656 §12): ChannelBind ties a channel number to a peer for
//! `channel_lifetime` (and installs or refreshes the peer's permission), so data flows as
//! 4-byte-header ChannelData instead of Send and Data indications.

use super::auth::Key;
use super::client::ClientId;
use super::request::{error, success};
use super::small_map::SmallMap;
use super::stun::{attr, Message};
use super::turn_core::TurnCore;
use std::net::SocketAddr;
use std::time::Instant;

/// An allocation's channel bindings, by number and by peer (one channel per peer and one
/// peer per channel, RFC 8656 §12).
pub(super) struct Channels {
    /// Channel number → peer and expiry.
    by_number: SmallMap<u16, (SocketAddr, Instant)>,
    /// Peer → channel number, for peer data; holds exactly the peers of `by_number`.
    by_peer: SmallMap<SocketAddr, u16>,
}

impl Channels {
    /// No bindings.
    pub(super) fn new() -> Self {
        Channels {
            by_number: SmallMap::new(),
            by_peer: SmallMap::new(),
        }
    }

    /// The peer bound to `channel` and when the binding expires.
    pub(super) fn get(&self, channel: u16) -> Option<&(SocketAddr, Instant)> {
        self.by_number.get(&channel)
    }

    /// The channel bound to `peer`.
    pub(super) fn of_peer(&self, peer: &SocketAddr) -> Option<&u16> {
        self.by_peer.get(peer)
    }

    /// Bindings.
    pub(super) fn len(&self) -> usize {
        self.by_number.len()
    }

    /// Binds (or refreshes) `channel` to `peer` until `expires`. The caller has checked that
    /// neither is bound to another.
    pub(super) fn bind(&mut self, channel: u16, peer: SocketAddr, expires: Instant) {
        self.by_number.insert(channel, (peer, expires));
        self.by_peer.insert(peer, channel);
    }

    /// Drops the bindings that expired at `now`.
    pub(super) fn expire(&mut self, now: Instant) {
        let before = self.by_number.len();
        self.by_number.retain(|_, (_, e)| *e > now);
        if self.by_number.len() != before {
            let chans = &self.by_number;
            self.by_peer.retain(|_, ch| chans.contains_key(ch));
        }
    }
}

impl TurnCore {
    /// ChannelBind: binds or refreshes a channel to a peer and installs or refreshes the
    /// peer's permission. A channel stays with its peer and a peer with its channel.
    pub(super) fn channel_bind(
        &mut self,
        now: Instant,
        client: &ClientId,
        m: &Message<'_>,
        key: Key,
        out: &mut Vec<u8>,
    ) {
        let Some((relay, tcp)) = self
            .allocations
            .get(client)
            .map(|a| (a.relay, a.tcp.is_some()))
        else {
            return error(out, m, 437, "Allocation Mismatch", Some(&key));
        };
        if tcp {
            // A TCP relay carries data over connections (RFC 6062 §4).
            return error(out, m, 400, "Bad Request", Some(&key));
        }
        let channel = match m.get(attr::CHANNEL_NUMBER) {
            Some(v) if v.len() == 4 => u16::from_be_bytes([v[0], v[1]]),
            _ => return error(out, m, 400, "Bad Request", Some(&key)),
        };
        // RFC 8656 narrowed the range to 0x4000..=0x4FFF; RFC 5766 clients (coturn's own
        // uclient among them) still pick numbers up to 0x7FFF, and nothing else uses them.
        if !(0x4000..=0x7FFF).contains(&channel) {
            return error(out, m, 400, "Bad Request", Some(&key));
        }
        let Some(peer) = m.xor_address(attr::XOR_PEER_ADDRESS) else {
            return error(out, m, 400, "Bad Request", Some(&key));
        };
        if let Err((code, why)) = self.vet_peer(relay, peer) {
            return error(out, m, code, why, Some(&key));
        }
        let (max_ch, max_perm) = (
            self.cfg.limits.max_channels,
            self.cfg.limits.max_permissions,
        );
        let (ch_life, perm_life) = (self.cfg.lifetimes.channel, self.cfg.lifetimes.permission);
        let Some(a) = self.allocations.get_mut(client) else {
            return;
        };
        match (a.channels.get(channel), a.channels.of_peer(&peer)) {
            (Some((p, _)), _) if *p != peer => {
                return error(out, m, 400, "Bad Request", Some(&key));
            }
            (_, Some(c)) if *c != channel => {
                return error(out, m, 400, "Bad Request", Some(&key));
            }
            (None, _) if a.channels.len() >= max_ch => {
                self.metrics.quota("channels");
                return error(out, m, 508, "Insufficient Capacity", Some(&key));
            }
            _ => {}
        }
        // Permissions never exceed `max_permissions`, so this refuses only a peer IP that
        // has no permission yet.
        if !a.permit_all(std::iter::once(peer.ip()), now + perm_life, max_perm) {
            self.metrics.quota("permissions");
            return error(out, m, 508, "Insufficient Capacity", Some(&key));
        }
        a.channels.bind(channel, peer, now + ch_life);
        success(out, m, &key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::stun::method;
    use crate::core::test_support::{harness, peer, udp_client};
    use std::time::Duration;

    #[test]
    fn an_expired_binding_leaves_both_directions() {
        let t0 = Instant::now();
        let (p1, p2) = (peer(1, 1000), peer(2, 2000));
        let mut c = Channels::new();
        c.bind(0x4000, p1, t0 + Duration::from_secs(10));
        c.bind(0x4001, p2, t0 + Duration::from_secs(20));
        assert_eq!(c.len(), 2);
        c.expire(t0 + Duration::from_secs(9));
        assert_eq!(c.len(), 2);
        c.expire(t0 + Duration::from_secs(10));
        assert_eq!(c.len(), 1);
        assert!(c.get(0x4000).is_none());
        assert_eq!(c.of_peer(&p1), None);
        assert_eq!(c.get(0x4001).map(|(p, _)| *p), Some(p2));
        assert_eq!(c.of_peer(&p2), Some(&0x4001));
    }

    #[test]
    fn binding_again_refreshes_without_adding() {
        let t0 = Instant::now();
        let p = peer(1, 1000);
        let mut c = Channels::new();
        c.bind(0x4000, p, t0 + Duration::from_secs(10));
        c.bind(0x4000, p, t0 + Duration::from_secs(30));
        assert_eq!(c.len(), 1);
        c.expire(t0 + Duration::from_secs(20));
        assert_eq!(c.of_peer(&p), Some(&0x4000));
    }

    /// ChannelBind installs its peer's permission within `max_permissions`: a peer already
    /// permitted can be bound when the allocation is full, another gets 508 and no channel.
    #[test]
    fn a_binding_needs_room_for_its_permission() {
        let mut h = harness(|c| c.limits.max_permissions = 1);
        let c = udp_client(1);
        h.allocate(0, &c, false);
        h.permit(0, &c, peer(1, 1000));
        h.bind_channel(0, &c, 0x4000, peer(1, 2000));
        let code = h.request(0, &c, method::CHANNEL_BIND, |w| {
            w.u32_attr(attr::CHANNEL_NUMBER, 0x4001 << 16);
            w.address(attr::XOR_PEER_ADDRESS, peer(2, 1000), true);
        });
        assert_eq!(code, Some(508));
        let a = &h.core.allocations[&c];
        assert_eq!((a.permissions.len(), a.channels.len()), (1, 1));
        assert_eq!(
            h.metrics
                .quota_rejections
                .get_or_create(&[("quota", "permissions")])
                .get(),
            1
        );
    }
}
