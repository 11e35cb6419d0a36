//! For the core's unit tests: a core with one static user, relay addresses remembered until
//! released, and requests signed as that user with a nonce the core issued.

use super::auth::{derive_key, ALG_MD5};
use super::client::{ClientId, Transport};
use super::config::CoreConfig;
use super::policy::PeerPolicy;
use super::relay::{Family, Parity, RelayAllocator, RelayError};
use super::stun::{attr, method, Class, Message, MessageWriter};
use super::turn_core::{Output, TurnCore};
use crate::metrics::TurnMetrics;
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

pub(super) const USER: &str = "alice";
const PASSWORD: &str = "wonderland";
const REALM: &str = "unit";
pub(super) const UNIX0: u64 = 1_800_000_000;

/// Relay addresses handed out in order (an EVEN-PORT pair reserves the next port); released
/// ones are recorded.
#[derive(Default)]
pub(super) struct Relays {
    next: u16,
    pub(super) live: HashSet<SocketAddr>,
    pub(super) released: Vec<SocketAddr>,
}

impl RelayAllocator for Relays {
    fn allocate(
        &mut self,
        family: Family,
        parity: Parity,
    ) -> Result<(SocketAddr, Option<SocketAddr>), RelayError> {
        let ip: IpAddr = match family {
            Family::V4 => [192, 0, 2, 1].into(),
            Family::V6 => "2001:db8::1".parse().unwrap(),
        };
        self.next += 2;
        let a = SocketAddr::new(ip, 50_000 + self.next);
        self.live.insert(a);
        let reserved = (parity == Parity::EvenPair).then(|| {
            let r = SocketAddr::new(ip, a.port() + 1);
            self.live.insert(r);
            r
        });
        Ok((a, reserved))
    }
    fn allocate_tcp(&mut self, family: Family) -> Result<SocketAddr, RelayError> {
        self.allocate(family, Parity::Any).map(|(a, _)| a)
    }
    fn activate_reserved(&mut self, addr: SocketAddr) -> Result<(), RelayError> {
        if self.live.contains(&addr) {
            Ok(())
        } else {
            Err(RelayError::Exhausted)
        }
    }
    fn release(&mut self, relay: SocketAddr) {
        self.live.remove(&relay);
        self.released.push(relay);
    }
}

pub(super) struct Harness {
    pub(super) core: TurnCore,
    pub(super) relays: Relays,
    pub(super) metrics: TurnMetrics,
    pub(super) t0: Instant,
    pub(super) out: Vec<u8>,
}

/// A core with [`USER`] as a static user and the settings of [`CoreConfig::new`], changed by
/// `f`.
pub(super) fn harness(f: impl FnOnce(&mut CoreConfig)) -> Harness {
    let mut cfg = CoreConfig::new(REALM, PeerPolicy::new(&[], &[], false).unwrap());
    cfg.users.insert(USER.into(), PASSWORD.into());
    cfg.nonce_key = [7; 32];
    f(&mut cfg);
    let t0 = Instant::now();
    let metrics = TurnMetrics::default();
    Harness {
        core: TurnCore::new(cfg, metrics.clone(), t0, UNIX0),
        relays: Relays::default(),
        metrics,
        t0,
        out: Vec::new(),
    }
}

/// A [`harness`] with the default settings in which UDP client 1 allocated a relay at 0 s:
/// the harness, the client and its relay address.
pub(super) fn allocated() -> (Harness, ClientId, SocketAddr) {
    let mut h = harness(|_| {});
    let c = udp_client(1);
    let relay = h.allocate(0, &c, false);
    (h, c, relay)
}

/// A UDP client on a public address.
pub(super) fn udp_client(port: u16) -> ClientId {
    ClientId::udp(SocketAddr::from(([198, 51, 100, 7], port)))
}

/// A TCP client connection.
pub(super) fn tcp_client(port: u16, conn: u64) -> ClientId {
    ClientId {
        transport: Transport::Tcp,
        conn,
        remote: SocketAddr::from(([198, 51, 100, 8], port)),
    }
}

/// A peer on a public address.
pub(super) fn peer(host: u8, port: u16) -> SocketAddr {
    SocketAddr::from(([203, 0, 113, host], port))
}

/// A request that is not signed.
pub(super) fn unsigned(meth: u16, f: impl FnOnce(&mut MessageWriter<'_>)) -> Vec<u8> {
    let mut out = Vec::new();
    let mut w = MessageWriter::new(&mut out, meth, Class::Request, &rand::random());
    f(&mut w);
    w.fingerprint();
    drop(w);
    out
}

impl Harness {
    pub(super) fn at(&self, secs: u64) -> Instant {
        self.t0 + Duration::from_secs(secs)
    }

    /// A request from `client` at `secs`, signed as [`USER`] with a nonce for that time.
    pub(super) fn signed(
        &self,
        secs: u64,
        client: &ClientId,
        meth: u16,
        f: impl FnOnce(&mut MessageWriter<'_>),
    ) -> Vec<u8> {
        let nonce = self
            .core
            .nonces
            .issue(self.core.unix(self.at(secs)), client.remote.ip());
        let key = derive_key(ALG_MD5, USER, REALM, PASSWORD);
        let mut out = Vec::new();
        let mut w = MessageWriter::new(&mut out, meth, Class::Request, &rand::random());
        f(&mut w);
        w.attr(attr::USERNAME, USER.as_bytes())
            .attr(attr::REALM, REALM.as_bytes())
            .attr(attr::NONCE, nonce.as_bytes())
            .integrity_sha1(key.as_bytes())
            .fingerprint();
        drop(w);
        out
    }

    /// Hands `pkt` to the core as from `client` at `secs`.
    pub(super) fn send(&mut self, secs: u64, client: &ClientId, pkt: &[u8]) -> Output {
        let now = self.at(secs);
        self.core
            .handle_client(now, client, pkt, &mut self.relays, &mut self.out)
    }

    /// Sends a signed request that the core answers at once; the response's error code
    /// (`None` for a success).
    pub(super) fn request(
        &mut self,
        secs: u64,
        client: &ClientId,
        meth: u16,
        f: impl FnOnce(&mut MessageWriter<'_>),
    ) -> Option<u16> {
        let req = self.signed(secs, client, meth, f);
        assert_eq!(self.send(secs, client, &req), Output::ToClient);
        self.error_code()
    }

    /// The error code of the last response (`None` for a success).
    pub(super) fn error_code(&self) -> Option<u16> {
        let m = Message::decode(&self.out).expect("the response decodes");
        let v = m.get(attr::ERROR_CODE)?;
        Some(v[2] as u16 * 100 + v[3] as u16)
    }

    /// Allocates a relay for `client` at `secs` (UDP, or TCP when `tcp`); returns the
    /// relay address.
    pub(super) fn allocate(&mut self, secs: u64, client: &ClientId, tcp: bool) -> SocketAddr {
        let proto: u32 = if tcp { 6 } else { 17 };
        let code = self.request(secs, client, method::ALLOCATE, |w| {
            w.u32_attr(attr::REQUESTED_TRANSPORT, proto << 24);
        });
        assert_eq!(code, None, "Allocate succeeds");
        let m = Message::decode(&self.out).unwrap();
        m.xor_address(attr::XOR_RELAYED_ADDRESS).unwrap()
    }

    /// Installs a permission for `peer`'s IP on `client`'s allocation at `secs`.
    pub(super) fn permit(&mut self, secs: u64, client: &ClientId, peer: SocketAddr) {
        let code = self.request(secs, client, method::CREATE_PERMISSION, |w| {
            w.address(attr::XOR_PEER_ADDRESS, peer, true);
        });
        assert_eq!(code, None, "CreatePermission succeeds");
    }

    /// Binds `channel` to `peer` on `client`'s allocation at `secs`.
    pub(super) fn bind_channel(
        &mut self,
        secs: u64,
        client: &ClientId,
        channel: u16,
        peer: SocketAddr,
    ) {
        let code = self.request(secs, client, method::CHANNEL_BIND, |w| {
            w.u32_attr(attr::CHANNEL_NUMBER, (channel as u32) << 16);
            w.address(attr::XOR_PEER_ADDRESS, peer, true);
        });
        assert_eq!(code, None, "ChannelBind succeeds");
    }
}
