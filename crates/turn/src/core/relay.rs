//! Relay transport addresses: the [`RelayAllocator`] the driver supplies (it binds the real
//! sockets), and EVEN-PORT reservations (RFC 8656 §14.6, §14.9): the odd port after an
//! allocated even one, held under a token for a later Allocate with RESERVATION-TOKEN.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Relay address family (REQUESTED-ADDRESS-FAMILY).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

/// Why no relay address could be provided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelayError {
    /// No relay address of that family is configured (440).
    Unsupported,
    /// Port range exhausted or bind failed (508).
    Exhausted,
}

/// Which relay ports EVEN-PORT asks for (RFC 8656 §14.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parity {
    Any,
    Even,
    /// An even port, and the next (odd) port held for a later Allocate with the token.
    EvenPair,
}

/// Supplies relay transport addresses; the driver binds real sockets, tests use fakes.
pub trait RelayAllocator {
    /// A relay address (and, for [`Parity::EvenPair`], the reserved next one).
    fn allocate(
        &mut self,
        family: Family,
        parity: Parity,
    ) -> Result<(SocketAddr, Option<SocketAddr>), RelayError>;
    /// A TCP relay address (RFC 6062): a listening socket peers can connect to, from which
    /// Connect requests also connect out. Allocators without TCP relays refuse (442).
    fn allocate_tcp(&mut self, family: Family) -> Result<SocketAddr, RelayError> {
        let _ = family;
        Err(RelayError::Unsupported)
    }
    /// Starts using an address handed out as reserved.
    fn activate_reserved(&mut self, addr: SocketAddr) -> Result<(), RelayError>;
    /// Frees an active or reserved address.
    fn release(&mut self, relay: SocketAddr);
}

/// Reservations outstanding at once (each holds one port for 30 s).
const MAX_RESERVATIONS: usize = 4096;
/// How long a reserved port waits for the Allocate with its token.
const RESERVATION_LIFETIME: Duration = Duration::from_secs(30);

/// Outstanding EVEN-PORT reservations by token: the reserved address and when it expires.
#[derive(Default)]
pub(super) struct Reservations(HashMap<[u8; 8], (SocketAddr, Instant)>);

impl Reservations {
    /// Whether [`MAX_RESERVATIONS`] are outstanding (another EVEN-PORT pair is refused).
    pub(super) fn full(&self) -> bool {
        self.0.len() >= MAX_RESERVATIONS
    }

    /// Holds `addr` for [`RESERVATION_LIFETIME`] under a new random token, which it returns.
    pub(super) fn hold(&mut self, addr: SocketAddr, now: Instant) -> [u8; 8] {
        let t: [u8; 8] = rand::random();
        self.0.insert(t, (addr, now + RESERVATION_LIFETIME));
        t
    }

    /// The address reserved under `token`, which it stops holding; `None` for an unknown
    /// token or one that is not 8 bytes long.
    pub(super) fn take(&mut self, token: &[u8]) -> Option<SocketAddr> {
        <[u8; 8]>::try_from(token)
            .ok()
            .and_then(|t| self.0.remove(&t))
            .map(|(addr, _)| addr)
    }

    /// Drops the reservations that expired and releases their addresses.
    pub(super) fn expire(&mut self, now: Instant, relays: &mut dyn RelayAllocator) {
        self.0.retain(|_, (addr, exp)| {
            let keep = *exp > now;
            if !keep {
                relays.release(*addr);
            }
            keep
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::test_support::Relays;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], port))
    }

    #[test]
    fn a_reservation_is_taken_once_and_by_its_token_only() {
        let now = Instant::now();
        let mut r = Reservations::default();
        let t = r.hold(addr(50_001), now);
        assert_eq!(r.take(&t[..7]), None, "a token is 8 bytes");
        let mut other = t;
        other[0] ^= 1;
        assert_eq!(r.take(&other), None);
        assert_eq!(r.take(&t), Some(addr(50_001)));
        assert_eq!(r.take(&t), None);
    }

    #[test]
    fn expired_reservations_release_their_address() {
        let t0 = Instant::now();
        let mut r = Reservations::default();
        let mut relays = Relays::default();
        let _early = r.hold(addr(50_001), t0);
        let late = r.hold(addr(50_003), t0 + Duration::from_secs(20));
        r.expire(
            t0 + RESERVATION_LIFETIME - Duration::from_millis(1),
            &mut relays,
        );
        assert!(relays.released.is_empty());
        r.expire(t0 + RESERVATION_LIFETIME, &mut relays);
        assert_eq!(relays.released, vec![addr(50_001)]);
        assert_eq!(r.take(&late), Some(addr(50_003)));
    }

    #[test]
    fn reservations_are_capped() {
        let now = Instant::now();
        let mut r = Reservations::default();
        for i in 0..MAX_RESERVATIONS {
            assert!(!r.full());
            r.hold(addr(i as u16), now);
        }
        assert!(r.full());
    }
}
