//! The data path: ChannelData and Send indications from a client go to a peer through the
//! allocation's relay address (RFC 8656 §11, §12), and a peer's datagrams come back to the
//! client as ChannelData when the peer has a channel, as a Data indication otherwise. Each
//! needs a permission for the peer and bandwidth in the allocation's bucket.

use super::client::ClientId;
use super::stun::{attr, decode_address, method, ChannelData, Class, Message, MessageWriter};
use super::turn_core::{Output, TurnCore};
use std::net::SocketAddr;
use std::time::Instant;

impl TurnCore {
    /// Handles a datagram that arrived on relay address `relay` from `peer`. Returns the
    /// client to send `out` to.
    pub fn handle_peer(
        &mut self,
        now: Instant,
        relay: SocketAddr,
        peer: SocketAddr,
        data: &[u8],
        out: &mut Vec<u8>,
    ) -> Option<ClientId> {
        out.clear();
        let client = *self.by_relay.get(&relay)?;
        let max_bps = self.cfg.limits.max_bps;
        let a = self.allocations.get_mut(&client)?;
        if !a.permitted(peer.ip(), now) {
            self.metrics.dropped("no_permission");
            return None;
        }
        if !a.bucket.take(max_bps, data.len(), now) {
            self.metrics.dropped("bandwidth");
            self.metrics.quota("bandwidth");
            return None;
        }
        match a.channels.of_peer(&peer) {
            Some(ch) => ChannelData::encode(*ch, data, client.transport.is_stream(), out),
            None => {
                let tid: [u8; 12] = rand::random();
                MessageWriter::new(out, method::DATA, Class::Indication, &tid)
                    .address(attr::XOR_PEER_ADDRESS, peer, true)
                    .attr(attr::DATA, data);
            }
        }
        self.metrics.packets_to_client.inc();
        self.metrics.bytes_to_client.inc_by(data.len() as u64);
        Some(client)
    }

    /// ChannelData from a client: to the channel's peer while the binding and the peer's
    /// permission last.
    pub(super) fn client_channel_data(
        &mut self,
        now: Instant,
        client: &ClientId,
        data: &[u8],
    ) -> Output {
        let Ok(cd) = ChannelData::decode(data) else {
            self.metrics.malformed("channel_data");
            return Output::None;
        };
        let max_bps = self.cfg.limits.max_bps;
        let Some(a) = self.allocations.get_mut(client) else {
            self.metrics.dropped("no_allocation");
            return Output::None;
        };
        let Some((peer, exp)) = a.channels.get(cd.channel).copied() else {
            self.metrics.dropped("no_channel");
            return Output::None;
        };
        if exp <= now || !a.permitted(peer.ip(), now) {
            self.metrics.dropped("no_permission");
            return Output::None;
        }
        if !a.bucket.take(max_bps, cd.data.len(), now) {
            self.metrics.dropped("bandwidth");
            self.metrics.quota("bandwidth");
            return Output::None;
        }
        self.metrics.packets_to_peer.inc();
        self.metrics.bytes_to_peer.inc_by(cd.data.len() as u64);
        Output::ToPeer {
            relay: a.relay,
            peer,
            start: 4,
            end: 4 + cd.data.len(),
        }
    }

    /// A Send indication: its DATA to its XOR-PEER-ADDRESS, if permitted (never on a TCP
    /// allocation).
    pub(super) fn send_indication(
        &mut self,
        now: Instant,
        client: &ClientId,
        m: &Message<'_>,
        data: &[u8],
    ) -> Output {
        let max_bps = self.cfg.limits.max_bps;
        let Some(a) = self.allocations.get_mut(client) else {
            self.metrics.dropped("no_allocation");
            return Output::None;
        };
        let (Some(pv), Some(d)) = (m.get(attr::XOR_PEER_ADDRESS), m.get(attr::DATA)) else {
            self.metrics.malformed("send_indication");
            return Output::None;
        };
        let Some(peer) = decode_address(pv, true, &m.transaction_id) else {
            self.metrics.malformed("send_indication");
            return Output::None;
        };
        if a.tcp.is_some() {
            self.metrics.dropped("tcp_allocation");
            return Output::None;
        }
        if !a.permitted(peer.ip(), now) {
            self.metrics.dropped("no_permission");
            return Output::None;
        }
        if !a.bucket.take(max_bps, d.len(), now) {
            self.metrics.dropped("bandwidth");
            self.metrics.quota("bandwidth");
            return Output::None;
        }
        self.metrics.packets_to_peer.inc();
        self.metrics.bytes_to_peer.inc_by(d.len() as u64);
        let start = d.as_ptr() as usize - data.as_ptr() as usize;
        Output::ToPeer {
            relay: a.relay,
            peer,
            start,
            end: start + d.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::core::stun::ChannelData;
    use crate::core::test_support::{allocated, peer};
    use crate::core::Output;

    /// A channel carries data up to its expiry even when the sweep has not run yet, and not
    /// from the instant it expires (its peer's permission refreshed meanwhile).
    #[test]
    fn a_channel_carries_data_until_it_expires_sweep_or_not() {
        let (mut h, c, relay) = allocated();
        let p = peer(1, 1000);
        h.bind_channel(0, &c, 0x4000, p);
        h.permit(500, &c, p);
        let mut pkt = Vec::new();
        ChannelData::encode(0x4000, b"hello", false, &mut pkt);
        let to_peer = Output::ToPeer {
            relay,
            peer: p,
            start: 4,
            end: 9,
        };
        assert_eq!(h.send(599, &c, &pkt), to_peer);
        assert_eq!(h.send(600, &c, &pkt), Output::None);
    }
}
