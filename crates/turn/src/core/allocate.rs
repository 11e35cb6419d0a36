//! The Allocate and Refresh methods (RFC 8656 §7, §8; RFC 6062 §5.1 for TCP relays):
//! transport, address family, EVEN-PORT parity and reservations, quotas, lifetimes.

use super::allocation::Allocation;
use super::auth::Key;
use super::channel::Channels;
use super::client::ClientId;
use super::quota::{quota_key, Bucket};
use super::relay::{Family, Parity, RelayAllocator, RelayError};
use super::request::{error, seal};
use super::small_map::SmallMap;
use super::stun::{attr, method, Class, Message, MessageWriter};
use super::turn_core::TurnCore;
use std::net::SocketAddr;
use std::time::Instant;

impl TurnCore {
    /// Allocate. A retransmission of the request that created the client's allocation gets
    /// the success response again (with the lifetime left); any other Allocate from a client
    /// with an allocation gets 437.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn allocate(
        &mut self,
        now: Instant,
        client: &ClientId,
        m: &Message<'_>,
        username: &str,
        key: Key,
        relays: &mut dyn RelayAllocator,
        out: &mut Vec<u8>,
    ) {
        if let Some(a) = self.allocations.get(client) {
            if a.tid == m.transaction_id {
                let left = a.expires.saturating_duration_since(now).as_secs() as u32;
                allocate_success(out, m, client, a.advertised, left, None, &key);
            } else {
                error(out, m, 437, "Allocation Mismatch", Some(&key));
            }
            return;
        }
        let tcp = match m.get(attr::REQUESTED_TRANSPORT) {
            None => return error(out, m, 400, "Bad Request", Some(&key)),
            Some(v) if v.len() != 4 => return error(out, m, 400, "Bad Request", Some(&key)),
            Some([17, ..]) => false,
            Some([6, ..]) => true,
            Some(_) => return error(out, m, 442, "Unsupported Transport Protocol", Some(&key)),
        };
        // RFC 6062 §5.1: a TCP relay is controlled over TCP or TLS, and has no port parity,
        // reservation or DF bit.
        if tcp
            && (!client.transport.is_stream()
                || m.get(attr::EVEN_PORT).is_some()
                || m.get(attr::RESERVATION_TOKEN).is_some()
                || m.get(attr::DONT_FRAGMENT).is_some())
        {
            return error(out, m, 400, "Bad Request", Some(&key));
        }
        let family = match m.get(attr::REQUESTED_ADDRESS_FAMILY) {
            None => Family::V4,
            Some([1, ..]) => Family::V4,
            Some([2, ..]) => Family::V6,
            Some(_) => {
                return error(out, m, 440, "Address Family not Supported", Some(&key));
            }
        };
        let even = m.get(attr::EVEN_PORT);
        let token = m.get(attr::RESERVATION_TOKEN);
        if token.is_some() && (even.is_some() || m.get(attr::REQUESTED_ADDRESS_FAMILY).is_some()) {
            return error(out, m, 400, "Bad Request", Some(&key));
        }
        let parity = match even {
            None => Parity::Any,
            Some([b, ..]) if b & 0x80 != 0 => Parity::EvenPair,
            Some([_, ..]) => Parity::Even,
            Some([]) => return error(out, m, 400, "Bad Request", Some(&key)),
        };
        if let Some((code, why)) = self.over_quota(username) {
            return error(out, m, code, why, Some(&key));
        }
        let lifetime = self.lifetime(m);
        if lifetime.is_zero() {
            return error(out, m, 400, "Bad Request", Some(&key));
        }
        if parity == Parity::EvenPair && self.reservations.full() {
            self.metrics.quota("reservations");
            return error(out, m, 508, "Insufficient Capacity", Some(&key));
        }
        let mut new_token = None;
        let relay = if tcp {
            match relays.allocate_tcp(family) {
                Ok(r) => r,
                Err(RelayError::Unsupported) => {
                    return error(out, m, 442, "Unsupported Transport Protocol", Some(&key))
                }
                Err(RelayError::Exhausted) => {
                    self.metrics.quota("ports");
                    return error(out, m, 508, "Insufficient Capacity", Some(&key));
                }
            }
        } else if let Some(t) = token {
            let Some(addr) = self.reservations.take(t) else {
                return error(out, m, 508, "Insufficient Capacity", Some(&key));
            };
            if relays.activate_reserved(addr).is_err() {
                relays.release(addr);
                return error(out, m, 508, "Insufficient Capacity", Some(&key));
            }
            addr
        } else {
            match relays.allocate(family, parity) {
                Ok((r, reserved)) => {
                    if let Some(next) = reserved {
                        new_token = Some(self.reservations.hold(next, now));
                    }
                    r
                }
                Err(RelayError::Unsupported) => {
                    return error(out, m, 440, "Address Family not Supported", Some(&key))
                }
                Err(RelayError::Exhausted) => {
                    self.metrics.quota("ports");
                    return error(out, m, 508, "Insufficient Capacity", Some(&key));
                }
            }
        };
        let ext = match relay {
            SocketAddr::V4(_) => self.cfg.external_v4,
            SocketAddr::V6(_) => self.cfg.external_v6,
        };
        let advertised = SocketAddr::new(ext.unwrap_or(relay.ip()), relay.port());
        self.per_user.add(quota_key(&self.cfg.users, username));
        let username: Box<str> = username.into();
        self.allocations.insert(
            *client,
            Allocation {
                relay,
                advertised,
                expires: now + lifetime,
                username,
                key,
                tid: m.transaction_id,
                permissions: SmallMap::new(),
                channels: Channels::new(),
                bucket: Bucket::full(self.cfg.limits.max_bps, now),
                tcp: tcp.then(Box::default),
            },
        );
        self.by_relay.insert(relay, *client);
        self.metrics.allocations.inc();
        self.metrics.allocations_created.inc();
        allocate_success(
            out,
            m,
            client,
            advertised,
            lifetime.as_secs() as u32,
            new_token,
            &key,
        );
    }

    /// Refresh: a new lifetime for the client's allocation, or with LIFETIME 0 its removal.
    pub(super) fn refresh(
        &mut self,
        now: Instant,
        client: &ClientId,
        m: &Message<'_>,
        key: Key,
        relays: &mut dyn RelayAllocator,
        out: &mut Vec<u8>,
    ) {
        if !self.allocations.contains_key(client) {
            return error(out, m, 437, "Allocation Mismatch", Some(&key));
        }
        let lifetime = self.lifetime(m);
        if lifetime.is_zero() {
            self.remove(client, relays);
            self.metrics.allocations_deleted.inc();
        } else if let Some(a) = self.allocations.get_mut(client) {
            a.expires = now + lifetime;
        }
        let mut w = MessageWriter::new(out, method::REFRESH, Class::Success, &m.transaction_id);
        w.u32_attr(attr::LIFETIME, lifetime.as_secs() as u32);
        seal(&mut w, &key);
    }
}

/// The Allocate success response: relayed address as advertised, lifetime, the client's
/// mapped address, and the token of a reservation this Allocate made.
#[allow(clippy::too_many_arguments)]
fn allocate_success(
    out: &mut Vec<u8>,
    m: &Message<'_>,
    client: &ClientId,
    advertised: SocketAddr,
    lifetime: u32,
    token: Option<[u8; 8]>,
    key: &Key,
) {
    out.clear();
    let mut w = MessageWriter::new(out, method::ALLOCATE, Class::Success, &m.transaction_id);
    w.address(attr::XOR_RELAYED_ADDRESS, advertised, true)
        .u32_attr(attr::LIFETIME, lifetime)
        .address(attr::XOR_MAPPED_ADDRESS, client.remote, true);
    if let Some(t) = token {
        w.attr(attr::RESERVATION_TOKEN, &t);
    }
    seal(&mut w, key);
}
