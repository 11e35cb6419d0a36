//! [`TurnCore`]: its state, construction, and the entry points the driver calls with each
//! client packet and with time. The methods per concern live in the sibling modules.

use super::allocation::Allocation;
use super::auth::{Credentials, NonceIssuer};
use super::client::ClientId;
use super::config::CoreConfig;
use super::quota::UserCounts;
use super::relay::{RelayAllocator, Reservations};
use super::stun::{classify, method, Class, Message, PacketKind};
use super::tcp::TcpConns;
use crate::metrics::TurnMetrics;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

/// What to do with the result of [`TurnCore::handle_client`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// Nothing to send.
    None,
    /// Send the bytes written to `out` back to the client.
    ToClient,
    /// Send `data[start..end]` of the input from relay address `relay` to `peer`.
    ToPeer {
        relay: SocketAddr,
        peer: SocketAddr,
        start: usize,
        end: usize,
    },
    /// RFC 6062 Connect: open a TCP connection from `relay` to `peer`, then report the result
    /// with [`TurnCore::connect_done`] (which writes the response). Nothing is sent yet.
    Connect {
        id: u32,
        relay: SocketAddr,
        peer: SocketAddr,
    },
    /// RFC 6062 ConnectionBind succeeded: send `out` (the success response) on this
    /// connection, then relay its bytes as they are to and from peer connection `id`.
    Bind { id: u32 },
}

/// The sans-IO TURN server.
pub struct TurnCore {
    pub(super) cfg: CoreConfig,
    pub(super) creds: Credentials,
    pub(super) nonces: NonceIssuer,
    pub(super) metrics: TurnMetrics,
    pub(super) epoch: Instant,
    pub(super) epoch_unix: u64,
    pub(super) allocations: HashMap<ClientId, Allocation>,
    pub(super) by_relay: HashMap<SocketAddr, ClientId>,
    pub(super) per_user: UserCounts,
    /// Scratch space for the candidate passwords of a username, kept between requests.
    pub(super) passwords: Vec<String>,
    pub(super) reservations: Reservations,
    pub(super) tcp: TcpConns,
}

impl TurnCore {
    /// `epoch`/`epoch_unix` anchor wall-clock time (REST expiries, nonces) to the monotonic
    /// instants passed in later.
    pub fn new(cfg: CoreConfig, metrics: TurnMetrics, epoch: Instant, epoch_unix: u64) -> Self {
        let creds = Credentials {
            realm: cfg.realm.clone(),
            secrets: cfg.secrets.clone(),
            users: cfg.users.clone(),
        };
        let nonces = NonceIssuer::new(cfg.nonce_key, cfg.lifetimes.nonce.as_secs());
        TurnCore {
            cfg,
            creds,
            nonces,
            metrics,
            epoch,
            epoch_unix,
            allocations: HashMap::new(),
            by_relay: HashMap::new(),
            per_user: UserCounts::default(),
            passwords: Vec::new(),
            reservations: Reservations::default(),
            tcp: TcpConns::default(),
        }
    }

    /// Wall-clock seconds since the Unix epoch at `now`.
    pub(super) fn unix(&self, now: Instant) -> u64 {
        self.epoch_unix + now.saturating_duration_since(self.epoch).as_secs()
    }

    /// Handles one datagram or stream frame from a client. Replies go to `out` (cleared first).
    pub fn handle_client(
        &mut self,
        now: Instant,
        client: &ClientId,
        data: &[u8],
        relays: &mut dyn RelayAllocator,
        out: &mut Vec<u8>,
    ) -> Output {
        out.clear();
        match classify(data) {
            PacketKind::ChannelData => self.client_channel_data(now, client, data),
            PacketKind::Stun => match Message::decode(data) {
                Ok(m) => match m.class {
                    Class::Request => self.request(now, client, &m, relays, out),
                    Class::Indication if m.method == method::SEND => {
                        self.send_indication(now, client, &m, data)
                    }
                    _ => Output::None,
                },
                Err(_) => {
                    self.metrics.malformed("stun");
                    Output::None
                }
            },
            PacketKind::Other => {
                self.metrics.malformed("not_stun");
                Output::None
            }
        }
    }

    /// Sweeps expired allocations, permissions, channels, TCP peer connections that were
    /// never bound, and EVEN-PORT reservations. Call about once a second.
    pub fn handle_timeout(&mut self, now: Instant, relays: &mut dyn RelayAllocator) {
        self.expire_allocations(now, relays);
        self.expire_unbound_tcp(now);
        self.reservations.expire(now, relays);
    }
}

#[cfg(test)]
mod tests {
    use crate::core::test_support::{harness, UNIX0};
    use std::time::Duration;

    /// Wall-clock time (REST expiries, nonces) follows the instants passed in from the epoch
    /// on; an instant before the epoch counts as the epoch.
    #[test]
    fn unix_time_follows_the_instants_passed_in() {
        let h = harness(|_| {});
        assert_eq!(h.core.unix(h.t0), UNIX0);
        assert_eq!(
            h.core.unix(h.t0 + Duration::from_millis(90_999)),
            UNIX0 + 90
        );
        if let Some(before) = h.t0.checked_sub(Duration::from_secs(5)) {
            assert_eq!(h.core.unix(before), UNIX0);
        }
    }
}
