//! The TURN state machine (RFC 8656 / RFC 5766, RFC 6156 address families, RFC 6062 TCP
//! relays): allocations, permissions, channel bindings and TCP peer connections keyed by the
//! client's 5-tuple, driven by packets and time passed in. Sans-IO: it never touches a
//! socket. Relay sockets come from a [`RelayAllocator`] the driver supplies; replies are
//! written into a caller-owned buffer.
//!
//! Memory is bounded: allocations by `total_quota`/`user_quota` (and the relay port range),
//! permissions and channels per allocation by `max_permissions`/`max_channels`; everything
//! that expires is swept by [`TurnCore::handle_timeout`].

use super::auth::{
    derive_key, AuthFailure, Credentials, Key, NonceCheck, NonceIssuer, ALG_MD5, ALG_SHA256,
    PASSWORD_ALGORITHMS_VALUE,
};
use super::policy::{canonical, PeerPolicy};
use super::stun::{
    attr, classify, decode_address, method, ChannelData, Class, Message, MessageWriter, PacketKind,
};
use crate::metrics::TurnMetrics;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// How the client reached us.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    pub fn is_stream(self) -> bool {
        !matches!(self, Transport::Udp)
    }
}

/// A client's 5-tuple as the core sees it: transport, connection (0 for UDP) and source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientId {
    pub transport: Transport,
    pub conn: u64,
    pub remote: SocketAddr,
}

impl ClientId {
    pub fn udp(remote: SocketAddr) -> Self {
        ClientId {
            transport: Transport::Udp,
            conn: 0,
            remote,
        }
    }
}

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
const RESERVATION_LIFETIME: Duration = Duration::from_secs(30);

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

/// TCP peer connections per allocation (RFC 6062), pending and bound together.
pub const MAX_TCP_CONNECTIONS_PER_ALLOCATION: u16 = 64;
/// How long a connected peer waits for the client's ConnectionBind (RFC 6062 §5.2, §5.3).
pub const CONNECTION_BIND_TIMEOUT: Duration = Duration::from_secs(30);

/// Core settings, derived from [`crate::TurnConfig`] by the driver.
pub struct CoreConfig {
    pub realm: String,
    pub secrets: Vec<Vec<u8>>,
    pub users: HashMap<String, String>,
    pub policy: PeerPolicy,
    /// Allocations at once per user (see [`quota_key`]); beyond it 486. 0 = unlimited.
    pub user_quota: u32,
    /// Allocations at once in total; beyond it 508. 0 = unlimited.
    pub total_quota: u32,
    pub max_bps: u64,
    pub default_lifetime: Duration,
    pub max_lifetime: Duration,
    pub permission_lifetime: Duration,
    pub channel_lifetime: Duration,
    pub nonce_lifetime: Duration,
    pub max_permissions: usize,
    pub max_channels: usize,
    pub software: Option<String>,
    /// Advertised instead of the relay's own IP, per family (`external_ip`).
    pub external_v4: Option<IpAddr>,
    pub external_v6: Option<IpAddr>,
    /// Key for stateless nonces (random per process).
    pub nonce_key: [u8; 32],
}

impl CoreConfig {
    /// Defaults matching the RFCs, for tests: 600 s allocations (max 3600 s), 300 s
    /// permissions, 600 s channels, and no quotas (the server's defaults are set from
    /// [`crate::TurnConfig`] by [`crate::driver::core_config`]).
    pub fn new(realm: &str, policy: PeerPolicy) -> Self {
        CoreConfig {
            realm: realm.into(),
            secrets: Vec::new(),
            users: HashMap::new(),
            policy,
            user_quota: 0,
            total_quota: 0,
            max_bps: 0,
            default_lifetime: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            permission_lifetime: Duration::from_secs(300),
            channel_lifetime: Duration::from_secs(600),
            nonce_lifetime: Duration::from_secs(600),
            max_permissions: 64,
            max_channels: 64,
            software: None,
            external_v4: None,
            external_v6: None,
            nonce_key: rand::random(),
        }
    }
}

/// What `user_quota` counts against for `username`: a static user by its name; a TURN REST
/// username `<expiry>:<user>` by `<user>`, so that fresh credentials for the same user (a new
/// `/v1/ice-servers` call gives a new expiry) share one quota, as coturn's quota does; a REST
/// username without a user part by itself.
pub fn quota_key<'a>(users: &HashMap<String, String>, username: &'a str) -> &'a str {
    if users.contains_key(username) {
        return username;
    }
    match username.split_once(':') {
        Some((expiry, user))
            if !expiry.is_empty()
                && !user.is_empty()
                && expiry.bytes().all(|b| b.is_ascii_digit()) =>
        {
            user
        }
        _ => username,
    }
}

/// A map for a handful of entries (bounded by `max_permissions`/`max_channels`): a linear scan
/// over a `Vec` beats hashing at these sizes and an empty one costs no heap.
struct SmallMap<K, V>(Vec<(K, V)>);

impl<K: PartialEq + Copy, V> SmallMap<K, V> {
    fn new() -> Self {
        SmallMap(Vec::new())
    }
    fn get(&self, k: &K) -> Option<&V> {
        self.0.iter().find(|(x, _)| x == k).map(|(_, v)| v)
    }
    fn contains_key(&self, k: &K) -> bool {
        self.get(k).is_some()
    }
    fn insert(&mut self, k: K, v: V) {
        match self.0.iter_mut().find(|(x, _)| *x == k) {
            Some(e) => e.1 = v,
            None => self.0.push((k, v)),
        }
    }
    fn retain(&mut self, mut f: impl FnMut(&K, &mut V) -> bool) {
        self.0.retain_mut(|(k, v)| f(k, v));
        if self.0.capacity() > 8 && self.0.len() < self.0.capacity() / 4 {
            self.0.shrink_to_fit();
        }
    }
    fn len(&self) -> usize {
        self.0.len()
    }
}

struct Bucket {
    tokens: u64,
    last: Instant,
}

struct Allocation {
    relay: SocketAddr,
    advertised: SocketAddr,
    expires: Instant,
    username: Box<str>,
    key: Key,
    /// Transaction that created it: a retransmitted Allocate gets the same answer.
    tid: [u8; 12],
    permissions: SmallMap<IpAddr, Instant>,
    channels: SmallMap<u16, (SocketAddr, Instant)>,
    peer_channels: SmallMap<SocketAddr, u16>,
    bucket: Bucket,
    /// `Some` for a TCP relay (RFC 6062: data flows over connections, not channels or
    /// indications). Boxed, so a UDP allocation pays one word for it.
    tcp: Option<Box<TcpRelay>>,
}

/// What a TCP allocation adds: the ids of its TCP peer connections, any state (at most
/// [`MAX_TCP_CONNECTIONS_PER_ALLOCATION`]).
#[derive(Default)]
struct TcpRelay {
    conns: Vec<u32>,
}

/// A TCP peer connection of a TCP allocation (RFC 6062).
struct TcpConn {
    owner: ClientId,
    peer: SocketAddr,
    state: TcpState,
}

enum TcpState {
    /// Connect sent; the driver is connecting. The response needs the request's id and key.
    Connecting { tid: [u8; 12], key: Key },
    /// Connected; waiting for the client's ConnectionBind until then.
    Pending { until: Instant },
    /// Relaying between the peer and the client data connection.
    Bound,
}

impl Allocation {
    fn tcp_ids(&self) -> &[u32] {
        self.tcp.as_deref().map_or(&[], |t| t.conns.as_slice())
    }

    fn permitted(&self, ip: IpAddr, now: Instant) -> bool {
        self.permissions.get(&ip).is_some_and(|e| *e > now)
    }
}

/// The sans-IO TURN server.
pub struct TurnCore {
    cfg: CoreConfig,
    creds: Credentials,
    nonces: NonceIssuer,
    metrics: TurnMetrics,
    epoch: Instant,
    epoch_unix: u64,
    allocations: HashMap<ClientId, Allocation>,
    by_relay: HashMap<SocketAddr, ClientId>,
    per_user: HashMap<Box<str>, u32>,
    passwords: Vec<String>,
    reservations: HashMap<[u8; 8], (SocketAddr, Instant)>,
    tcp: HashMap<u32, TcpConn>,
    /// TCP peer connections the core ended (allocation gone, bind timeout): the driver closes
    /// their sockets ([`TurnCore::take_closed_tcp`]).
    closed_tcp: Vec<u32>,
}

enum Authed<'a> {
    Ok(Key, &'a str),
    /// A response (401/400/438) has been written.
    Refused,
}

const KNOWN_REQUIRED: &[u16] = &[
    attr::MAPPED_ADDRESS,
    attr::USERNAME,
    attr::MESSAGE_INTEGRITY,
    attr::ERROR_CODE,
    attr::UNKNOWN_ATTRIBUTES,
    attr::CHANNEL_NUMBER,
    attr::LIFETIME,
    attr::XOR_PEER_ADDRESS,
    attr::DATA,
    attr::REALM,
    attr::NONCE,
    attr::XOR_RELAYED_ADDRESS,
    attr::REQUESTED_ADDRESS_FAMILY,
    attr::EVEN_PORT,
    attr::RESERVATION_TOKEN,
    attr::REQUESTED_TRANSPORT,
    attr::DONT_FRAGMENT,
    attr::MESSAGE_INTEGRITY_SHA256,
    attr::PASSWORD_ALGORITHM,
    attr::XOR_MAPPED_ADDRESS,
    attr::PRIORITY,
    attr::USE_CANDIDATE,
    attr::CONNECTION_ID,
];

impl TurnCore {
    /// `epoch`/`epoch_unix` anchor wall-clock time (REST expiries, nonces) to the monotonic
    /// instants passed in later.
    pub fn new(cfg: CoreConfig, metrics: TurnMetrics, epoch: Instant, epoch_unix: u64) -> Self {
        let creds = Credentials {
            realm: cfg.realm.clone(),
            secrets: cfg.secrets.clone(),
            users: cfg.users.clone(),
        };
        let nonces = NonceIssuer::new(cfg.nonce_key, cfg.nonce_lifetime.as_secs());
        TurnCore {
            cfg,
            creds,
            nonces,
            metrics,
            epoch,
            epoch_unix,
            allocations: HashMap::new(),
            by_relay: HashMap::new(),
            per_user: HashMap::new(),
            passwords: Vec::new(),
            reservations: HashMap::new(),
            tcp: HashMap::new(),
            closed_tcp: Vec::new(),
        }
    }

    fn unix(&self, now: Instant) -> u64 {
        self.epoch_unix + now.saturating_duration_since(self.epoch).as_secs()
    }

    pub fn allocation_count(&self) -> usize {
        self.allocations.len()
    }

    /// The relay address of `client`'s allocation, if any.
    pub fn relay_of(&self, client: &ClientId) -> Option<SocketAddr> {
        self.allocations.get(client).map(|a| a.relay)
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
        let max_bps = self.cfg.max_bps;
        let a = self.allocations.get_mut(&client)?;
        if !a.permitted(peer.ip(), now) {
            self.metrics.dropped("no_permission");
            return None;
        }
        if !take_tokens(&mut a.bucket, max_bps, data.len(), now) {
            self.metrics.dropped("bandwidth");
            self.metrics.quota("bandwidth");
            return None;
        }
        match a.peer_channels.get(&peer) {
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

    /// Sweeps expired allocations, permissions and channels. Call about once a second.
    pub fn handle_timeout(&mut self, now: Instant, relays: &mut dyn RelayAllocator) {
        let mut expired = Vec::new();
        for (c, a) in self.allocations.iter_mut() {
            if a.expires <= now {
                expired.push(*c);
                continue;
            }
            a.permissions.retain(|_, e| *e > now);
            let before = a.channels.len();
            a.channels.retain(|_, (_, e)| *e > now);
            if a.channels.len() != before {
                let chans = &a.channels;
                a.peer_channels.retain(|_, ch| chans.contains_key(ch));
            }
        }
        for c in expired {
            self.remove(&c, relays);
            self.metrics.allocations_expired.inc();
        }
        let late: Vec<u32> = self
            .tcp
            .iter()
            .filter(|(_, c)| matches!(c.state, TcpState::Pending { until } if until <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            self.metrics.dropped("connection_bind_timeout");
            self.end_tcp(id);
        }
        self.reservations.retain(|_, (addr, exp)| {
            let keep = *exp > now;
            if !keep {
                relays.release(*addr);
            }
            keep
        });
    }

    /// A stream connection closed: its allocation goes with it (RFC 8656 §3.1).
    pub fn client_closed(&mut self, client: &ClientId, relays: &mut dyn RelayAllocator) {
        if self.remove(client, relays) {
            self.metrics.allocations_deleted.inc();
        }
    }

    fn remove(&mut self, client: &ClientId, relays: &mut dyn RelayAllocator) -> bool {
        let Some(a) = self.allocations.remove(client) else {
            return false;
        };
        for id in a.tcp_ids() {
            self.end_tcp(*id);
        }
        self.by_relay.remove(&a.relay);
        relays.release(a.relay);
        let user = quota_key(&self.cfg.users, &a.username);
        if let Some(n) = self.per_user.get_mut(user) {
            *n -= 1;
            if *n == 0 {
                self.per_user.remove(user);
            }
        }
        self.metrics.allocations.dec();
        true
    }

    fn client_channel_data(&mut self, now: Instant, client: &ClientId, data: &[u8]) -> Output {
        let Ok(cd) = ChannelData::decode(data) else {
            self.metrics.malformed("channel_data");
            return Output::None;
        };
        let max_bps = self.cfg.max_bps;
        let Some(a) = self.allocations.get_mut(client) else {
            self.metrics.dropped("no_allocation");
            return Output::None;
        };
        let Some((peer, exp)) = a.channels.get(&cd.channel).copied() else {
            self.metrics.dropped("no_channel");
            return Output::None;
        };
        if exp <= now || !a.permitted(peer.ip(), now) {
            self.metrics.dropped("no_permission");
            return Output::None;
        }
        if !take_tokens(&mut a.bucket, max_bps, cd.data.len(), now) {
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

    fn send_indication(
        &mut self,
        now: Instant,
        client: &ClientId,
        m: &Message<'_>,
        data: &[u8],
    ) -> Output {
        let max_bps = self.cfg.max_bps;
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
        if !take_tokens(&mut a.bucket, max_bps, d.len(), now) {
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

    fn request(
        &mut self,
        now: Instant,
        client: &ClientId,
        m: &Message<'_>,
        relays: &mut dyn RelayAllocator,
        out: &mut Vec<u8>,
    ) -> Output {
        // Unknown comprehension-required attributes (and EVEN-PORT / RESERVATION-TOKEN /
        // CONNECTION-ID, which this server does not implement) → 420.
        let mut unknown = [0u8; 2 * 8];
        let mut n_unknown = 0;
        for t in m.attribute_types() {
            if t < 0x8000 && !KNOWN_REQUIRED.contains(&t) && n_unknown < 8 {
                unknown[2 * n_unknown..2 * n_unknown + 2].copy_from_slice(&t.to_be_bytes());
                n_unknown += 1;
            }
        }
        if n_unknown > 0 {
            self.metrics.malformed("unknown_attribute");
            MessageWriter::new(out, m.method, Class::Error, &m.transaction_id)
                .error(420, "Unknown Attribute")
                .attr(attr::UNKNOWN_ATTRIBUTES, &unknown[..2 * n_unknown])
                .fingerprint();
            return Output::ToClient;
        }
        if m.method == method::BINDING {
            let mut w = MessageWriter::new(out, method::BINDING, Class::Success, &m.transaction_id);
            w.address(attr::XOR_MAPPED_ADDRESS, client.remote, true);
            if let Some(s) = &self.cfg.software {
                w.attr(attr::SOFTWARE, s.as_bytes());
            }
            w.fingerprint();
            return Output::ToClient;
        }
        if !matches!(
            m.method,
            method::ALLOCATE
                | method::REFRESH
                | method::CREATE_PERMISSION
                | method::CHANNEL_BIND
                | method::CONNECT
                | method::CONNECTION_BIND
        ) {
            self.metrics.malformed("unknown_method");
            MessageWriter::new(out, m.method, Class::Error, &m.transaction_id)
                .error(400, "Bad Request")
                .fingerprint();
            return Output::ToClient;
        }
        let (key, username) = match self.authenticate(now, client, m, out) {
            Authed::Ok(k, u) => (k, u),
            Authed::Refused => return Output::ToClient,
        };
        if let Some(a) = self.allocations.get(client) {
            if &*a.username != username {
                self.metrics.auth_failure("wrong_credentials");
                error(out, m, 441, "Wrong Credentials", Some(&key));
                return Output::ToClient;
            }
        }
        match m.method {
            method::ALLOCATE => self.allocate(now, client, m, username, key, relays, out),
            method::REFRESH => self.refresh(now, client, m, key, relays, out),
            method::CREATE_PERMISSION => self.create_permission(now, client, m, key, out),
            method::CONNECT => return self.connect(client, m, key, out),
            method::CONNECTION_BIND => return self.connection_bind(client, m, username, key, out),
            _ => self.channel_bind(now, client, m, key, out),
        }
        Output::ToClient
    }

    fn challenge(
        &self,
        now: Instant,
        client: &ClientId,
        m: &Message<'_>,
        code: u16,
        out: &mut Vec<u8>,
    ) {
        out.clear();
        let nonce = self.nonces.issue(self.unix(now), client.remote.ip());
        let reason = if code == 438 {
            "Stale Nonce"
        } else {
            "Unauthorized"
        };
        MessageWriter::new(out, m.method, Class::Error, &m.transaction_id)
            .error(code, reason)
            .attr(attr::REALM, self.cfg.realm.as_bytes())
            .attr(attr::NONCE, nonce.as_bytes())
            .attr(attr::PASSWORD_ALGORITHMS, &PASSWORD_ALGORITHMS_VALUE)
            .fingerprint();
    }

    fn refuse(
        &self,
        now: Instant,
        client: &ClientId,
        m: &Message<'_>,
        why: AuthFailure,
        out: &mut Vec<u8>,
    ) {
        if why != AuthFailure::Missing {
            self.metrics.auth_failure(why.label());
        }
        match why {
            AuthFailure::Malformed | AuthFailure::BadAlgorithm => {
                MessageWriter::new(out, m.method, Class::Error, &m.transaction_id)
                    .error(400, "Bad Request")
                    .fingerprint();
            }
            AuthFailure::StaleNonce => self.challenge(now, client, m, 438, out),
            _ => self.challenge(now, client, m, 401, out),
        }
    }

    fn authenticate<'a>(
        &mut self,
        now: Instant,
        client: &ClientId,
        m: &Message<'a>,
        out: &mut Vec<u8>,
    ) -> Authed<'a> {
        if !m.has_integrity() && !m.has_integrity_sha256() {
            self.refuse(now, client, m, AuthFailure::Missing, out);
            return Authed::Refused;
        }
        let fields = (
            m.get(attr::USERNAME)
                .and_then(|u| std::str::from_utf8(u).ok()),
            m.get(attr::REALM),
            m.get(attr::NONCE),
        );
        let (Some(username), Some(realm), Some(nonce)) = fields else {
            self.refuse(now, client, m, AuthFailure::Malformed, out);
            return Authed::Refused;
        };
        if realm != self.cfg.realm.as_bytes() {
            self.refuse(now, client, m, AuthFailure::WrongRealm, out);
            return Authed::Refused;
        }
        let unix = self.unix(now);
        match self.nonces.check(nonce, unix, client.remote.ip()) {
            NonceCheck::Valid => {}
            NonceCheck::Stale => {
                self.refuse(now, client, m, AuthFailure::StaleNonce, out);
                return Authed::Refused;
            }
            NonceCheck::Invalid => {
                self.refuse(now, client, m, AuthFailure::BadNonce, out);
                return Authed::Refused;
            }
        }
        let algorithm = match (
            m.get(attr::PASSWORD_ALGORITHM),
            m.get(attr::PASSWORD_ALGORITHMS),
        ) {
            (None, None) => ALG_MD5,
            (Some(a), Some(list)) if list == PASSWORD_ALGORITHMS_VALUE && a.len() >= 4 => {
                match u16::from_be_bytes([a[0], a[1]]) {
                    ALG_MD5 => ALG_MD5,
                    ALG_SHA256 => ALG_SHA256,
                    _ => {
                        self.refuse(now, client, m, AuthFailure::BadAlgorithm, out);
                        return Authed::Refused;
                    }
                }
            }
            _ => {
                self.refuse(now, client, m, AuthFailure::BadAlgorithm, out);
                return Authed::Refused;
            }
        };
        let sha256 = m.has_integrity_sha256();
        let verify = |k: &Key| {
            if sha256 {
                m.check_integrity_sha256(k.as_bytes())
            } else {
                m.check_integrity_sha1(k.as_bytes())
            }
        };
        // Fast path: the allocation's cached key (REST expiry is still enforced).
        if let Some(a) = self.allocations.get(client) {
            let key_alg = if a.key.as_bytes().len() == 32 {
                ALG_SHA256
            } else {
                ALG_MD5
            };
            if &*a.username == username && key_alg == algorithm && verify(&a.key) {
                if !self.creds.users.contains_key(username)
                    && switchboard_auth::turn_rest::check_username(username, unix).is_err()
                {
                    self.refuse(now, client, m, AuthFailure::Expired, out);
                    return Authed::Refused;
                }
                let mut k = a.key;
                k.sha256_integrity = sha256;
                return Authed::Ok(k, username);
            }
        }
        let mut passwords = std::mem::take(&mut self.passwords);
        let r = self.creds.passwords(username, unix, &mut passwords);
        let found = match r {
            Err(why) => Err(why),
            Ok(()) => passwords
                .iter()
                .map(|p| derive_key(algorithm, username, &self.cfg.realm, p))
                .find(|k| verify(k))
                .ok_or(AuthFailure::BadIntegrity),
        };
        passwords.clear();
        self.passwords = passwords;
        match found {
            Ok(mut k) => {
                k.sha256_integrity = sha256;
                Authed::Ok(k, username)
            }
            Err(why) => {
                self.refuse(now, client, m, why, out);
                Authed::Refused
            }
        }
    }

    fn lifetime(&self, m: &Message<'_>) -> Duration {
        let requested = m
            .get(attr::LIFETIME)
            .filter(|v| v.len() == 4)
            .map(|v| Duration::from_secs(u32::from_be_bytes([v[0], v[1], v[2], v[3]]) as u64));
        match requested {
            Some(d) if d.is_zero() => d,
            Some(d) => d.max(self.cfg.default_lifetime).min(self.cfg.max_lifetime),
            None => self.cfg.default_lifetime,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn allocate(
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
        if self.cfg.total_quota > 0 && self.allocations.len() >= self.cfg.total_quota as usize {
            self.metrics.quota("total");
            return error(out, m, 508, "Insufficient Capacity", Some(&key));
        }
        let used = self
            .per_user
            .get(quota_key(&self.cfg.users, username))
            .copied()
            .unwrap_or(0);
        if self.cfg.user_quota > 0 && used >= self.cfg.user_quota {
            self.metrics.quota("user");
            return error(out, m, 486, "Allocation Quota Reached", Some(&key));
        }
        let lifetime = self.lifetime(m);
        if lifetime.is_zero() {
            return error(out, m, 400, "Bad Request", Some(&key));
        }
        if parity == Parity::EvenPair && self.reservations.len() >= MAX_RESERVATIONS {
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
            let Some((addr, _)) = <[u8; 8]>::try_from(t)
                .ok()
                .and_then(|t| self.reservations.remove(&t))
            else {
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
                        let t: [u8; 8] = rand::random();
                        self.reservations
                            .insert(t, (next, now + RESERVATION_LIFETIME));
                        new_token = Some(t);
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
        *self
            .per_user
            .entry(quota_key(&self.cfg.users, username).into())
            .or_insert(0) += 1;
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
                channels: SmallMap::new(),
                peer_channels: SmallMap::new(),
                bucket: Bucket {
                    tokens: self.cfg.max_bps,
                    last: now,
                },
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

    fn refresh(
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

    /// Checks a peer address against policy and the allocation's family.
    fn vet_peer(&self, relay: SocketAddr, peer: SocketAddr) -> Result<(), (u16, &'static str)> {
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

    fn create_permission(
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
        let (max, life) = (self.cfg.max_permissions, self.cfg.permission_lifetime);
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

    fn channel_bind(
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
        let Some(peer) = m
            .get(attr::XOR_PEER_ADDRESS)
            .and_then(|v| decode_address(v, true, &m.transaction_id))
        else {
            return error(out, m, 400, "Bad Request", Some(&key));
        };
        if let Err((code, why)) = self.vet_peer(relay, peer) {
            return error(out, m, code, why, Some(&key));
        }
        let (max_ch, max_perm) = (self.cfg.max_channels, self.cfg.max_permissions);
        let (ch_life, perm_life) = (self.cfg.channel_lifetime, self.cfg.permission_lifetime);
        let Some(a) = self.allocations.get_mut(client) else {
            return;
        };
        match (a.channels.get(&channel), a.peer_channels.get(&peer)) {
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
        if !a.permissions.contains_key(&peer.ip()) && a.permissions.len() >= max_perm {
            self.metrics.quota("permissions");
            return error(out, m, 508, "Insufficient Capacity", Some(&key));
        }
        a.channels.insert(channel, (peer, now + ch_life));
        a.peer_channels.insert(peer, channel);
        a.permissions.insert(peer.ip(), now + perm_life);
        let mut w =
            MessageWriter::new(out, method::CHANNEL_BIND, Class::Success, &m.transaction_id);
        seal(&mut w, &key);
    }
}

/// RFC 6062: TCP peer connections of TCP allocations.
impl TurnCore {
    /// Open TCP peer connections, any state.
    pub fn tcp_connection_count(&self) -> usize {
        self.tcp.len()
    }

    /// Ids of TCP peer connections the core ended since the last call; the driver closes
    /// their sockets (a pending peer socket, or both ends of a bound pair).
    pub fn take_closed_tcp(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.closed_tcp)
    }

    fn new_tcp_id(&self) -> u32 {
        loop {
            let id: u32 = rand::random();
            if id != 0 && !self.tcp.contains_key(&id) {
                return id;
            }
        }
    }

    fn add_tcp(&mut self, owner: ClientId, peer: SocketAddr, state: TcpState) -> u32 {
        let id = self.new_tcp_id();
        if let Some(a) = self.allocations.get_mut(&owner) {
            a.tcp.get_or_insert_with(Box::default).conns.push(id);
        }
        self.tcp.insert(id, TcpConn { owner, peer, state });
        self.metrics.peer_tcp_connections.inc();
        id
    }

    /// Forgets connection `id` and tells the driver to close it.
    fn end_tcp(&mut self, id: u32) {
        if self.forget_tcp(id) {
            self.closed_tcp.push(id);
        }
    }

    fn forget_tcp(&mut self, id: u32) -> bool {
        let Some(c) = self.tcp.remove(&id) else {
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
        let c = self.tcp.get(&id)?;
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
                .any(|id| self.tcp.get(id).is_some_and(|c| c.peer == peer))
        })
    }

    fn connect(
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
        let Some(peer) = m
            .get(attr::XOR_PEER_ADDRESS)
            .and_then(|v| decode_address(v, true, &m.transaction_id))
        else {
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
        let c = self.tcp.get_mut(&id)?;
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
    fn connection_bind(
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
        if let Some(c) = self.tcp.get_mut(&id) {
            c.state = TcpState::Bound;
        }
        let mut w = MessageWriter::new(
            out,
            method::CONNECTION_BIND,
            Class::Success,
            &m.transaction_id,
        );
        seal(&mut w, &key);
        Output::Bind { id }
    }
}

fn take_tokens(b: &mut Bucket, max_bps: u64, n: usize, now: Instant) -> bool {
    if max_bps == 0 {
        return true;
    }
    let elapsed = now.saturating_duration_since(b.last);
    let refill =
        (elapsed.as_nanos().min(u64::MAX as u128 / 2) * max_bps as u128 / 1_000_000_000) as u64;
    if refill > 0 {
        b.tokens = (b.tokens + refill).min(max_bps);
        b.last = now;
    }
    if b.tokens >= n as u64 {
        b.tokens -= n as u64;
        true
    } else {
        false
    }
}

/// Adds the integrity attribute the client used, then FINGERPRINT.
fn seal(w: &mut MessageWriter<'_>, key: &Key) {
    if key.sha256_integrity {
        w.integrity_sha256(key.as_bytes());
    } else {
        w.integrity_sha1(key.as_bytes());
    }
    w.fingerprint();
}

fn error(out: &mut Vec<u8>, m: &Message<'_>, code: u16, reason: &str, key: Option<&Key>) {
    out.clear();
    let mut w = MessageWriter::new(out, m.method, Class::Error, &m.transaction_id);
    w.error(code, reason);
    match key {
        Some(k) => seal(&mut w, k),
        None => {
            w.fingerprint();
        }
    }
}

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
