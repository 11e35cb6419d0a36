//! The fuzz entry points (fuzz/fuzz_targets/stun_parse.rs, turn_session.rs) and their stable
//! replay (`tests/parser_props.rs::replay_corpus*`): one input through every parser and the
//! whole core, or a scripted session of an authenticated user. Compiled only for tests and with
//! the `fuzzing` feature, so the server binary does not carry it.

use crate::core::policy::PeerPolicy;
use crate::core::stun::{attr, decode_address, stream_frame_len, ChannelData, Message};
use crate::core::{
    ClientId, CoreConfig, Family, Parity, RelayAllocator, RelayError, Transport, TurnCore,
};
use crate::TurnMetrics;
use std::net::SocketAddr;
use std::time::Instant;

struct FixedRelay;
impl RelayAllocator for FixedRelay {
    fn allocate(
        &mut self,
        _: Family,
        _: Parity,
    ) -> Result<(SocketAddr, Option<SocketAddr>), RelayError> {
        Ok((SocketAddr::from(([192, 0, 2, 1], 50000)), None))
    }
    fn allocate_tcp(&mut self, _: Family) -> Result<SocketAddr, RelayError> {
        Ok(SocketAddr::from(([192, 0, 2, 1], 50000)))
    }
    fn activate_reserved(&mut self, _: SocketAddr) -> Result<(), RelayError> {
        Err(RelayError::Exhausted)
    }
    fn release(&mut self, _: SocketAddr) {}
}

/// Feeds `data` to the decoders ([`exercise_parsers`]) and to a fresh core as client and as peer input. Panics only
/// if an invariant breaks (a reply that is not valid STUN, a slice past the input).
pub fn exercise(data: &[u8]) {
    exercise_parsers(data);
    let mut cfg = CoreConfig::new("r", PeerPolicy::new(&[], &[], true).expect("no ranges"));
    cfg.secrets = vec![b"s".to_vec()];
    cfg.nonce_key = [1; 32];
    let now = Instant::now();
    let mut core = TurnCore::new(cfg, TurnMetrics::default(), now, 1_800_000_000);
    let mut out = Vec::new();
    for transport in [Transport::Udp, Transport::Tcp] {
        let c = ClientId {
            transport,
            conn: 1,
            remote: SocketAddr::from(([198, 51, 100, 1], 1000)),
        };
        let o = core.handle_client(now, &c, data, &mut FixedRelay, &mut out);
        if let crate::core::Output::ToPeer { start, end, .. } = o {
            assert!(start <= end && end <= data.len());
        }
        if !out.is_empty() {
            Message::decode(&out).expect("every reply is a valid STUN message");
        }
    }
    let _ = core.handle_peer(
        now,
        SocketAddr::from(([192, 0, 2, 1], 50000)),
        SocketAddr::from(([192, 0, 2, 9], 9)),
        data,
        &mut out,
    );
}

/// Every decoder on `data`, checking that none reads past the input.
pub fn exercise_parsers(data: &[u8]) {
    if let Ok(m) = Message::decode(data) {
        assert_eq!(m.raw().len(), data.len());
        let _ = m.check_integrity_sha1(b"k");
        let _ = m.check_integrity_sha256(b"k");
        for t in [
            attr::XOR_PEER_ADDRESS,
            attr::XOR_MAPPED_ADDRESS,
            attr::MAPPED_ADDRESS,
        ] {
            if let Some(v) = m.get(t) {
                let _ = decode_address(v, true, &m.transaction_id);
            }
        }
        let _ = m.attribute_types().count();
    }
    if let Ok(cd) = ChannelData::decode(data) {
        assert!(cd.data.len() + 4 <= data.len());
    }
    if let Ok(Some(n)) = stream_frame_len(data) {
        assert!(n <= data.len());
    }
}

/// What a [`exercise_session`] run reached, so the corpus replay can check that the harness
/// still gets past authentication into the deep paths.
#[derive(Debug, Default, Clone, Copy)]
pub struct SessionReach {
    /// Most allocations alive at once.
    pub allocations: usize,
    /// Most RFC 6062 peer connections alive at once.
    pub tcp_connections: usize,
    /// Datagrams the core sent towards peers.
    pub to_peer: usize,
    /// Peer datagrams the core delivered to a client.
    pub to_client: usize,
}

/// Relay addresses handed out one after another, remembered until released, so a run can
/// check that every relay it was given came back.
#[derive(Default)]
struct CountingRelays {
    next: u16,
    live: std::collections::HashSet<SocketAddr>,
}

impl CountingRelays {
    fn take(&mut self, family: Family) -> Result<SocketAddr, RelayError> {
        if self.live.len() >= 32 {
            return Err(RelayError::Exhausted);
        }
        self.next = self.next.wrapping_add(1);
        let port = 50000u16.wrapping_add(self.next);
        let a = match family {
            Family::V4 => SocketAddr::from(([192, 0, 2, 1], port)),
            Family::V6 => SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1], port)),
        };
        self.live.insert(a);
        Ok(a)
    }
}

impl RelayAllocator for CountingRelays {
    fn allocate(
        &mut self,
        family: Family,
        _: Parity,
    ) -> Result<(SocketAddr, Option<SocketAddr>), RelayError> {
        self.take(family).map(|a| (a, None))
    }
    fn allocate_tcp(&mut self, family: Family) -> Result<SocketAddr, RelayError> {
        self.take(family)
    }
    fn activate_reserved(&mut self, _: SocketAddr) -> Result<(), RelayError> {
        Err(RelayError::Exhausted)
    }
    fn release(&mut self, relay: SocketAddr) {
        self.live.remove(&relay);
    }
}

/// The fuzz input, read front to back; past its end every read is zero.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }
}

/// Methods a session sends; Send goes as an indication, the rest as requests.
const SESSION_METHODS: [u16; 8] = [
    crate::core::stun::method::ALLOCATE,
    crate::core::stun::method::REFRESH,
    crate::core::stun::method::CREATE_PERMISSION,
    crate::core::stun::method::CHANNEL_BIND,
    crate::core::stun::method::CONNECT,
    crate::core::stun::method::CONNECTION_BIND,
    crate::core::stun::method::SEND,
    crate::core::stun::method::BINDING,
];

/// Attributes a session's requests carry (chosen by the input, values from the input).
const SESSION_ATTRS: [u16; 10] = [
    attr::REQUESTED_TRANSPORT,
    attr::LIFETIME,
    attr::CHANNEL_NUMBER,
    attr::CONNECTION_ID,
    attr::DATA,
    attr::EVEN_PORT,
    attr::RESERVATION_TOKEN,
    attr::DONT_FRAGMENT,
    attr::REQUESTED_ADDRESS_FAMILY,
    attr::XOR_PEER_ADDRESS,
];

/// Peers a session talks to.
fn session_peer(i: u8) -> SocketAddr {
    match i % 3 {
        0 => SocketAddr::from(([192, 0, 2, 9], 9)),
        1 => SocketAddr::from(([192, 0, 2, 10], 10)),
        _ => SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, 9], 9)),
    }
}

/// What a session run has learned from the core's replies.
#[derive(Default)]
struct Learned {
    nonce: Vec<u8>,
    /// Relay addresses handed out (the last 8).
    relays: Vec<SocketAddr>,
    /// RFC 6062 connection ids seen (the last 16).
    tcp_ids: Vec<u32>,
    reach: SessionReach,
}

impl Learned {
    /// Checks a reply to a client and learns the nonce, relay address and connection id in it.
    fn reply(&mut self, out: &[u8]) {
        let m = Message::decode(out).expect("every reply is a valid STUN message");
        if let Some(n) = m.get(attr::NONCE) {
            self.nonce = n.to_vec();
        }
        if let Some(v) = m.get(attr::XOR_RELAYED_ADDRESS) {
            let a = decode_address(v, true, &m.transaction_id).expect("relay address decodes");
            if !self.relays.contains(&a) {
                if self.relays.len() >= 8 {
                    self.relays.remove(0);
                }
                self.relays.push(a);
            }
        }
        if let Some(v) = m.get(attr::CONNECTION_ID) {
            if let Ok(b) = <[u8; 4]>::try_from(v) {
                self.tcp_id(u32::from_be_bytes(b));
            }
        }
    }

    fn tcp_id(&mut self, id: u32) {
        if self.tcp_ids.len() >= 16 {
            self.tcp_ids.remove(0);
        }
        self.tcp_ids.push(id);
    }

    /// What the core asked for after client input `pkt`.
    fn output(&mut self, o: crate::core::Output, pkt: &[u8], out: &[u8]) {
        use crate::core::Output;
        match o {
            Output::ToClient | Output::Bind { .. } => self.reply(out),
            Output::ToPeer { start, end, .. } => {
                assert!(
                    start <= end && end <= pkt.len(),
                    "peer slice inside the input"
                );
                self.reach.to_peer += 1;
            }
            Output::Connect { id, .. } => self.tcp_id(id),
            Output::None => {}
        }
    }

    fn relay(&self, pick: u8) -> Option<SocketAddr> {
        self.relays
            .get(usize::from(pick) % self.relays.len().max(1))
            .copied()
    }
}

/// A stateful run of the core as an authenticated user would drive it: the input is a script
/// of requests from three clients (UDP, TCP, TLS) signed with valid credentials, raw client
/// bytes, peer datagrams to the relays handed out, time jumps, and the driver's RFC 6062
/// callbacks (connect results, peers connecting in, data connections closing).
///
/// Every reply must decode, every slice for a peer must lie inside the input, and at the end,
/// once every client has gone and time has moved past every lifetime, nothing may be left:
/// no allocation, no TCP peer connection, no relay address that was not released.
pub fn exercise_session(data: &[u8]) -> SessionReach {
    use crate::core::auth::{derive_key, ALG_MD5};
    use crate::core::stun::{method, Class, MessageWriter};
    use std::time::Duration;

    let mut cfg = CoreConfig::new("r", PeerPolicy::new(&[], &[], true).expect("no ranges"));
    cfg.users.insert("fz".into(), "pw".into());
    cfg.nonce_key = [1; 32];
    cfg.limits.user_quota = 4;
    let key = derive_key(ALG_MD5, "fz", "r", "pw");
    let mut now = Instant::now();
    let mut core = TurnCore::new(cfg, TurnMetrics::default(), now, 1_800_000_000);
    let mut relays = CountingRelays::default();
    let mut out = Vec::new();
    let mut l = Learned::default();
    let client = |transport, conn, port| ClientId {
        transport,
        conn,
        remote: SocketAddr::from(([198, 51, 100, 1], port)),
    };
    let mut clients = [
        client(Transport::Udp, 0, 1000),
        client(Transport::Tcp, 1, 1001),
        client(Transport::Tls, 2, 1002),
    ];
    let mut next_conn = 3;
    let mut tid_n = 0u32;
    let mut c = Cursor(data);

    let mut steps = 0;
    while !c.0.is_empty() && steps < 128 {
        steps += 1;
        match c.u8() % 6 {
            0 => {
                let cl = clients[usize::from(c.u8()) % clients.len()];
                let meth = SESSION_METHODS[usize::from(c.u8()) % SESSION_METHODS.len()];
                tid_n += 1;
                let mut tid = [0u8; 12];
                tid[..4].copy_from_slice(&tid_n.to_be_bytes());
                let class = if meth == method::SEND {
                    Class::Indication
                } else {
                    Class::Request
                };
                let mut req = Vec::new();
                {
                    let mut w = MessageWriter::new(&mut req, meth, class, &tid);
                    for _ in 0..c.u8() % 6 {
                        let sel = c.u8();
                        let typ = SESSION_ATTRS[usize::from(sel / 4) % SESSION_ATTRS.len()];
                        match sel % 4 {
                            // A value that works: a learned connection id, or a peer.
                            0 if typ == attr::CONNECTION_ID => {
                                let v = c.u8();
                                let id = l.tcp_ids.get(usize::from(v) % l.tcp_ids.len().max(1));
                                w.u32_attr(typ, id.copied().unwrap_or(u32::from(v)));
                            }
                            0 => {
                                w.address(attr::XOR_PEER_ADDRESS, session_peer(c.u8()), true);
                            }
                            1 => {
                                let n = usize::from(c.u8() % 24);
                                w.attr(typ, c.take(n));
                            }
                            2 => {
                                w.u32_attr(typ, c.u32());
                            }
                            _ => {
                                let raw = u16::from_be_bytes([c.u8(), c.u8()]);
                                let n = usize::from(c.u8() % 24);
                                w.attr(raw, c.take(n));
                            }
                        }
                    }
                    if class == Class::Request {
                        w.attr(attr::USERNAME, b"fz")
                            .attr(attr::REALM, b"r")
                            .attr(attr::NONCE, &l.nonce)
                            .integrity_sha1(key.as_bytes());
                    }
                    w.fingerprint();
                    w.finish();
                }
                let o = core.handle_client(now, &cl, &req, &mut relays, &mut out);
                l.output(o, &req, &out);
            }
            1 => {
                let cl = clients[usize::from(c.u8()) % clients.len()];
                let n = usize::from(c.u8());
                let raw = c.take(n);
                let o = core.handle_client(now, &cl, raw, &mut relays, &mut out);
                l.output(o, raw, &out);
            }
            2 => {
                let relay = l.relay(c.u8());
                let peer = session_peer(c.u8());
                let n = usize::from(c.u8());
                let payload = c.take(n);
                if let Some(relay) = relay {
                    if core
                        .handle_peer(now, relay, peer, payload, &mut out)
                        .is_some()
                    {
                        l.reach.to_client += 1;
                        if ChannelData::decode(&out).is_err() {
                            Message::decode(&out).expect("a Data indication decodes");
                        }
                    }
                }
            }
            3 => {
                now += Duration::from_secs(u64::from(c.u8()) * 16);
                core.handle_timeout(now, &mut relays);
                let _ = core.take_closed_tcp();
            }
            4 => {
                let pick = c.u8();
                let id = l
                    .tcp_ids
                    .get(usize::from(pick) % l.tcp_ids.len().max(1))
                    .copied()
                    .unwrap_or(u32::from(pick));
                match c.u8() % 4 {
                    0 | 1 => {
                        if core
                            .connect_done(now, id, pick.is_multiple_of(2), &mut out)
                            .is_some()
                        {
                            l.reply(&out);
                        }
                    }
                    2 => {
                        let peer = session_peer(c.u8());
                        if let Some(relay) = l.relay(pick) {
                            if let Some((id, _)) = core.peer_connected(now, relay, peer, &mut out) {
                                l.reply(&out);
                                l.tcp_id(id);
                            }
                        }
                    }
                    _ => core.tcp_closed(id),
                }
            }
            _ => {
                let ci = usize::from(c.u8()) % clients.len();
                core.client_closed(&clients[ci], &mut relays);
                if clients[ci].transport != Transport::Udp {
                    // A stream client that comes back does so on a new connection.
                    clients[ci].conn = next_conn;
                    next_conn += 1;
                }
            }
        }
        l.reach.allocations = l.reach.allocations.max(core.allocation_count());
        l.reach.tcp_connections = l.reach.tcp_connections.max(core.tcp_connection_count());
    }

    // Everyone leaves; after every lifetime nothing may be left over.
    for cl in &clients {
        core.client_closed(cl, &mut relays);
    }
    now += Duration::from_secs(4 * 3600);
    core.handle_timeout(now, &mut relays);
    let _ = core.take_closed_tcp();
    assert_eq!(
        core.allocation_count(),
        0,
        "allocations left after everyone left"
    );
    assert_eq!(core.tcp_connection_count(), 0, "TCP peer connections left");
    assert!(
        relays.live.is_empty(),
        "relay addresses never released: {:?}",
        relays.live
    );
    l.reach
}
