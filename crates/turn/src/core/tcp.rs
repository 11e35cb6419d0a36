//! RFC 6062 TCP relays: a TCP allocation's relay address is a listening socket; Connect
//! opens a connection to a peer (the driver connects, [`TurnCore::connect_done`] answers),
//! a peer connecting in is announced with ConnectionAttempt ([`TurnCore::peer_connected`]),
//! and either waits for the client's ConnectionBind on a new TCP/TLS connection, after which
//! the driver relays raw bytes between the two. Here: the connection table and its lifetimes.

use super::allocation::Allocation;
use super::auth::Key;
use super::client::ClientId;
use super::request::{error, seal, success};
use super::stun::{attr, method, Class, Message, MessageWriter};
use super::turn_core::{Output, TurnCore};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// TCP peer connections per allocation (RFC 6062), pending and bound together.
pub const MAX_TCP_CONNECTIONS_PER_ALLOCATION: u16 = 64;
/// How long a connected peer waits for the client's ConnectionBind (RFC 6062 §5.2, §5.3).
pub const CONNECTION_BIND_TIMEOUT: Duration = Duration::from_secs(30);

/// What a TCP allocation adds: the ids of its TCP peer connections, any state (at most
/// [`MAX_TCP_CONNECTIONS_PER_ALLOCATION`]).
#[derive(Default)]
pub(super) struct TcpRelay {
    conns: Vec<u32>,
}

/// A TCP peer connection of a TCP allocation (RFC 6062).
pub(super) struct TcpConn {
    owner: ClientId,
    peer: SocketAddr,
    state: TcpState,
}

/// Where a TCP peer connection is in its life.
pub(super) enum TcpState {
    /// Connect sent; the driver is connecting. The response needs the request's id and key.
    Connecting { tid: [u8; 12], key: Key },
    /// Connected; waiting for the client's ConnectionBind until then.
    Pending { until: Instant },
    /// Relaying between the peer and the client data connection.
    Bound,
}

/// Every TCP peer connection of every TCP allocation, by id, and those the core ended but the
/// driver has not yet been told about.
#[derive(Default)]
pub(super) struct TcpConns {
    conns: HashMap<u32, TcpConn>,
    /// TCP peer connections the core ended (allocation gone, bind timeout): the driver closes
    /// their sockets ([`TurnCore::take_closed_tcp`]).
    closed: Vec<u32>,
}

impl Allocation {
    /// The ids of this TCP allocation's peer connections (none for a UDP allocation).
    pub(super) fn tcp_ids(&self) -> &[u32] {
        self.tcp.as_deref().map_or(&[], |t| t.conns.as_slice())
    }
}

impl TurnCore {
    /// Open TCP peer connections, any state.
    pub fn tcp_connection_count(&self) -> usize {
        self.tcp.conns.len()
    }

    /// Ids of TCP peer connections the core ended since the last call; the driver closes
    /// their sockets (a pending peer socket, or both ends of a bound pair).
    pub fn take_closed_tcp(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.tcp.closed)
    }

    /// A connection id not in use, never 0.
    fn new_tcp_id(&self) -> u32 {
        loop {
            let id: u32 = rand::random();
            if id != 0 && !self.tcp.conns.contains_key(&id) {
                return id;
            }
        }
    }

    /// Registers a TCP peer connection of `owner`'s allocation; returns its id.
    fn add_tcp(&mut self, owner: ClientId, peer: SocketAddr, state: TcpState) -> u32 {
        let id = self.new_tcp_id();
        if let Some(a) = self.allocations.get_mut(&owner) {
            a.tcp.get_or_insert_with(Box::default).conns.push(id);
        }
        self.tcp.conns.insert(id, TcpConn { owner, peer, state });
        self.metrics.peer_tcp_connections.inc();
        id
    }

    /// Forgets connection `id` and tells the driver to close it.
    pub(super) fn end_tcp(&mut self, id: u32) {
        if self.forget_tcp(id) {
            self.tcp.closed.push(id);
        }
    }

    /// Forgets connection `id` without telling the driver (it closed it, or will drop the
    /// socket itself). Whether the core knew it.
    fn forget_tcp(&mut self, id: u32) -> bool {
        let Some(c) = self.tcp.conns.remove(&id) else {
            return false;
        };
        if let Some(a) = self.allocations.get_mut(&c.owner) {
            if let Some(t) = a.tcp.as_mut() {
                t.conns.retain(|x| *x != id);
            }
        }
        self.metrics.peer_tcp_connections.dec();
        true
    }

    /// The relay address of the allocation that owns TCP peer connection `id`.
    pub fn tcp_relay_of(&self, id: u32) -> Option<SocketAddr> {
        let c = self.tcp.conns.get(&id)?;
        self.allocations.get(&c.owner).map(|a| a.relay)
    }

    /// The driver closed connection `id` (either end of a bound pair went away, or the
    /// connect attempt's socket was dropped): the core forgets it.
    pub fn tcp_closed(&mut self, id: u32) {
        self.forget_tcp(id);
    }

    /// Whether `owner` already has a connection to `peer` that is being set up or in use
    /// (RFC 6062 §5.2: a second Connect to it gets 446).
    fn has_tcp_to(&self, owner: &ClientId, peer: SocketAddr) -> bool {
        self.allocations.get(owner).is_some_and(|a| {
            a.tcp_ids()
                .iter()
                .any(|id| self.tcp.conns.get(id).is_some_and(|c| c.peer == peer))
        })
    }

    /// Connect: a TCP allocation asks for a connection to a peer (at most one per peer, and
    /// [`MAX_TCP_CONNECTIONS_PER_ALLOCATION`] in all); the driver connects
    /// ([`Output::Connect`]) and reports back through [`TurnCore::connect_done`].
    pub(super) fn connect(
        &mut self,
        client: &ClientId,
        m: &Message<'_>,
        key: Key,
        out: &mut Vec<u8>,
    ) -> Output {
        let Some(a) = self.allocations.get(client) else {
            error(out, m, 437, "Allocation Mismatch", Some(&key));
            return Output::ToClient;
        };
        let (relay, tcp, conns) = (a.relay, a.tcp.is_some(), a.tcp_ids().len());
        if !tcp {
            error(out, m, 400, "Bad Request", Some(&key));
            return Output::ToClient;
        }
        let Some(peer) = m.xor_address(attr::XOR_PEER_ADDRESS) else {
            error(out, m, 400, "Bad Request", Some(&key));
            return Output::ToClient;
        };
        if let Err((code, why)) = self.vet_peer(relay, peer) {
            error(out, m, code, why, Some(&key));
            return Output::ToClient;
        }
        if self.has_tcp_to(client, peer) {
            error(out, m, 446, "Connection Already Exists", Some(&key));
            return Output::ToClient;
        }
        if conns >= MAX_TCP_CONNECTIONS_PER_ALLOCATION as usize {
            self.metrics.quota("tcp_peer_connections");
            error(out, m, 508, "Insufficient Capacity", Some(&key));
            return Output::ToClient;
        }
        let tid = m.transaction_id;
        let id = self.add_tcp(*client, peer, TcpState::Connecting { tid, key });
        Output::Connect { id, relay, peer }
    }

    /// The driver's connect attempt for a Connect request ended. Writes the response (success
    /// with CONNECTION-ID, or 447) to `out` and returns the client to send it to; `None` when
    /// the allocation went away meanwhile (the driver then drops the socket).
    pub fn connect_done(
        &mut self,
        now: Instant,
        id: u32,
        connected: bool,
        out: &mut Vec<u8>,
    ) -> Option<ClientId> {
        out.clear();
        let c = self.tcp.conns.get_mut(&id)?;
        let TcpState::Connecting { tid, key } = &c.state else {
            return None;
        };
        let (tid, key, owner) = (*tid, *key, c.owner);
        if connected {
            c.state = TcpState::Pending {
                until: now + CONNECTION_BIND_TIMEOUT,
            };
            let mut w = MessageWriter::new(out, method::CONNECT, Class::Success, &tid);
            w.u32_attr(attr::CONNECTION_ID, id);
            seal(&mut w, &key);
        } else {
            self.forget_tcp(id);
            self.metrics.dropped("tcp_connect_failed");
            let mut w = MessageWriter::new(out, method::CONNECT, Class::Error, &tid);
            w.error(447, "Connection Timeout or Failure");
            seal(&mut w, &key);
        }
        Some(owner)
    }

    /// A peer connected to TCP relay address `relay` (RFC 6062 §5.3). With a permission for
    /// its IP, the connection gets an id and `out` holds the ConnectionAttempt indication for
    /// the returned client; otherwise `None`: the driver closes the connection.
    pub fn peer_connected(
        &mut self,
        now: Instant,
        relay: SocketAddr,
        peer: SocketAddr,
        out: &mut Vec<u8>,
    ) -> Option<(u32, ClientId)> {
        out.clear();
        let owner = *self.by_relay.get(&relay)?;
        let a = self.allocations.get(&owner)?;
        if a.tcp.is_none() || !a.permitted(peer.ip(), now) {
            self.metrics.dropped("no_permission");
            return None;
        }
        if a.tcp_ids().len() >= MAX_TCP_CONNECTIONS_PER_ALLOCATION as usize
            || self.has_tcp_to(&owner, peer)
        {
            self.metrics.quota("tcp_peer_connections");
            return None;
        }
        let id = self.add_tcp(
            owner,
            peer,
            TcpState::Pending {
                until: now + CONNECTION_BIND_TIMEOUT,
            },
        );
        let tid: [u8; 12] = rand::random();
        MessageWriter::new(out, method::CONNECTION_ATTEMPT, Class::Indication, &tid)
            .address(attr::XOR_PEER_ADDRESS, peer, true)
            .u32_attr(attr::CONNECTION_ID, id);
        Some((id, owner))
    }

    /// ConnectionBind (RFC 6062 §5.4): on a new TCP/TLS connection with no allocation, by
    /// the allocation's user, for a connection waiting for it.
    pub(super) fn connection_bind(
        &mut self,
        client: &ClientId,
        m: &Message<'_>,
        username: &str,
        key: Key,
        out: &mut Vec<u8>,
    ) -> Output {
        let id = match m.get(attr::CONNECTION_ID) {
            Some(v) if v.len() == 4 => u32::from_be_bytes([v[0], v[1], v[2], v[3]]),
            _ => {
                error(out, m, 400, "Bad Request", Some(&key));
                return Output::ToClient;
            }
        };
        let waiting = self
            .tcp
            .conns
            .get(&id)
            .filter(|c| matches!(c.state, TcpState::Pending { .. }));
        let Some(c) = waiting else {
            error(out, m, 400, "Bad Request", Some(&key));
            return Output::ToClient;
        };
        if !client.transport.is_stream() || self.allocations.contains_key(client) {
            error(out, m, 400, "Bad Request", Some(&key));
            return Output::ToClient;
        }
        let owner_user = self.allocations.get(&c.owner).map(|a| &*a.username);
        if owner_user != Some(username) {
            self.metrics.auth_failure("wrong_credentials");
            error(out, m, 441, "Wrong Credentials", Some(&key));
            return Output::ToClient;
        }
        if let Some(c) = self.tcp.conns.get_mut(&id) {
            c.state = TcpState::Bound;
        }
        success(out, m, &key);
        Output::Bind { id }
    }

    /// Ends the connected peers' connections whose ConnectionBind did not come within
    /// [`CONNECTION_BIND_TIMEOUT`].
    pub(super) fn expire_unbound_tcp(&mut self, now: Instant) {
        let late: Vec<u32> = self
            .tcp
            .conns
            .iter()
            .filter(|(_, c)| matches!(c.state, TcpState::Pending { until } if until <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            self.metrics.dropped("connection_bind_timeout");
            self.end_tcp(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::core::test_support::{harness, peer, tcp_client, Harness};
    use crate::core::ClientId;
    use std::net::SocketAddr;

    /// A TCP allocation with a permission for peer 1, and a connection that peer made in.
    fn connected() -> (Harness, ClientId, SocketAddr, u32) {
        let mut h = harness(|_| {});
        let ctl = tcp_client(1, 1);
        let relay = h.allocate(0, &ctl, true);
        h.permit(0, &ctl, peer(1, 1000));
        let (id, owner) = h
            .core
            .peer_connected(h.at(1), relay, peer(1, 1000), &mut h.out)
            .expect("permitted peer connects");
        assert_eq!(owner, ctl);
        (h, ctl, relay, id)
    }

    /// Ending a connection unlinks it from its allocation and tells the driver once; the
    /// driver's own close of a connection the core already ended changes nothing.
    #[test]
    fn an_ended_connection_is_reported_once_and_unlinked() {
        let (mut h, ctl, relay, id) = connected();
        assert_ne!(id, 0);
        assert_eq!(h.core.allocations[&ctl].tcp_ids(), &[id]);
        assert_eq!(h.core.tcp_relay_of(id), Some(relay));
        h.core.end_tcp(id);
        assert_eq!(h.core.take_closed_tcp(), vec![id]);
        assert!(h.core.allocations[&ctl].tcp_ids().is_empty());
        assert_eq!(
            (h.core.tcp_connection_count(), h.core.tcp_relay_of(id)),
            (0, None)
        );
        h.core.end_tcp(id);
        h.core.tcp_closed(id);
        assert!(h.core.take_closed_tcp().is_empty());
        assert_eq!(h.metrics.peer_tcp_connections.get(), 0);
    }

    /// `connect_done` answers only a Connect still in progress: not a connection that came
    /// in from a peer, nor one the core does not know.
    #[test]
    fn connect_done_answers_only_a_connect_in_progress() {
        let (mut h, _, _, id) = connected();
        assert_eq!(h.core.connect_done(h.at(2), id, true, &mut h.out), None);
        assert!(h.out.is_empty());
        assert_eq!(h.core.connect_done(h.at(2), id ^ 1, true, &mut h.out), None);
        assert_eq!(h.core.tcp_connection_count(), 1);
    }

    /// Removing the allocation ends its connections, and the driver hears of each.
    #[test]
    fn removing_a_tcp_allocation_ends_its_connections() {
        let (mut h, ctl, relay, id) = connected();
        let (id2, _) = h
            .core
            .peer_connected(h.at(1), relay, peer(1, 1001), &mut h.out)
            .unwrap();
        h.core.client_closed(&ctl, &mut h.relays);
        let mut closed = h.core.take_closed_tcp();
        closed.sort_unstable();
        let mut want = vec![id, id2];
        want.sort_unstable();
        assert_eq!(closed, want);
        assert_eq!(h.core.tcp_connection_count(), 0);
    }
}
