//! The sans-IO core driven by scripted packets and instants: no sockets, no sleeps.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use switchboard_auth::turn_rest;
use switchboard_turn::core::auth::{
    derive_key, Key, ALG_MD5, ALG_SHA256, PASSWORD_ALGORITHMS_VALUE,
};
use switchboard_turn::core::policy::PeerPolicy;
use switchboard_turn::core::quota_key;
use switchboard_turn::core::stun::{attr, method, ChannelData, Class, Message, MessageWriter};
use switchboard_turn::core::{
    ClientId, CoreConfig, Family, Output, Parity, RelayAllocator, RelayError, Transport, TurnCore,
};
use switchboard_turn::driver::core_config;
use switchboard_turn::{TurnConfig, TurnMetrics, DEFAULT_USER_QUOTA};

const SECRET: &[u8] = b"rest-secret";
const UNIX0: u64 = 1_800_000_000;

#[derive(Default)]
struct FakeRelays {
    next: u16,
    live: HashSet<SocketAddr>,
    reserved: HashSet<SocketAddr>,
    v6: bool,
}

impl RelayAllocator for FakeRelays {
    fn allocate(
        &mut self,
        family: Family,
        parity: Parity,
    ) -> Result<(SocketAddr, Option<SocketAddr>), RelayError> {
        let ip = match family {
            Family::V4 => "203.0.113.5",
            Family::V6 if self.v6 => "2001:db8::5",
            Family::V6 => return Err(RelayError::Unsupported),
        };
        self.next += 2;
        let port = 50000 + self.next;
        let a = SocketAddr::new(ip.parse().unwrap(), port);
        self.live.insert(a);
        let next = (parity == Parity::EvenPair).then(|| {
            let n = SocketAddr::new(a.ip(), port + 1);
            self.reserved.insert(n);
            n
        });
        Ok((a, next))
    }
    fn activate_reserved(&mut self, addr: SocketAddr) -> Result<(), RelayError> {
        if self.reserved.remove(&addr) {
            self.live.insert(addr);
            Ok(())
        } else {
            Err(RelayError::Exhausted)
        }
    }
    fn allocate_tcp(&mut self, family: Family) -> Result<SocketAddr, RelayError> {
        self.allocate(family, Parity::Any).map(|(a, _)| a)
    }
    fn release(&mut self, relay: SocketAddr) {
        self.live.remove(&relay);
        self.reserved.remove(&relay);
    }
}

struct World {
    core: TurnCore,
    relays: FakeRelays,
    t0: Instant,
    out: Vec<u8>,
    metrics: TurnMetrics,
}

fn world_with(f: impl FnOnce(&mut CoreConfig)) -> World {
    let mut cfg = CoreConfig::new("switchboard", PeerPolicy::new(&[], &[], false).unwrap());
    cfg.secrets = vec![SECRET.to_vec(), b"old-secret".to_vec()];
    f(&mut cfg);
    world_of(cfg)
}

/// A fresh core with `cfg`, no allocations and fake relays.
fn world_of(cfg: CoreConfig) -> World {
    let t0 = Instant::now();
    let metrics = TurnMetrics::default();
    World {
        core: TurnCore::new(cfg, metrics.clone(), t0, UNIX0),
        relays: FakeRelays::default(),
        t0,
        out: Vec::new(),
        metrics,
    }
}

fn world() -> World {
    world_with(|_| {})
}

fn client() -> ClientId {
    ClientId::udp("198.51.100.7:40000".parse().unwrap())
}

/// A client-side view of the long-term credential dance.
struct Creds {
    username: String,
    key: Key,
    nonce: Vec<u8>,
    sha256: bool,
}

impl World {
    fn at(&self, secs: u64) -> Instant {
        self.t0 + Duration::from_secs(secs)
    }

    fn send(&mut self, secs: u64, c: &ClientId, pkt: &[u8]) -> Output {
        let now = self.at(secs);
        self.core
            .handle_client(now, c, pkt, &mut self.relays, &mut self.out)
    }

    fn reply(&self) -> Message<'_> {
        Message::decode(&self.out).expect("server reply decodes with valid fingerprint")
    }

    fn error_code(&self) -> Option<u16> {
        let m = self.reply();
        let v = m.get(attr::ERROR_CODE)?;
        Some(v[2] as u16 * 100 + v[3] as u16)
    }

    /// Sends an unauthenticated Allocate and returns the nonce from the 401.
    fn nonce(&mut self, secs: u64, c: &ClientId) -> Vec<u8> {
        let req = build(method::ALLOCATE, &[7; 12], None, |w| {
            w.u32_attr(attr::REQUESTED_TRANSPORT, 17 << 24);
        });
        assert_eq!(self.send(secs, c, &req), Output::ToClient);
        assert_eq!(self.error_code(), Some(401));
        let m = self.reply();
        assert_eq!(m.get(attr::REALM), Some(&b"switchboard"[..]));
        assert_eq!(
            m.get(attr::PASSWORD_ALGORITHMS),
            Some(&PASSWORD_ALGORITHMS_VALUE[..])
        );
        m.get(attr::NONCE).unwrap().to_vec()
    }

    fn rest_creds(&mut self, secs: u64, c: &ClientId, secret: &[u8], ttl: i64) -> Creds {
        let username = format!("{}:alice", (UNIX0 + secs) as i64 + ttl);
        let password = turn_rest::password(secret, &username);
        Creds {
            key: derive_key(ALG_MD5, &username, "switchboard", &password),
            username,
            nonce: self.nonce(secs, c),
            sha256: false,
        }
    }

    fn allocate(&mut self, secs: u64, c: &ClientId, cr: &Creds, tid: [u8; 12]) -> Option<u16> {
        let req = build(method::ALLOCATE, &tid, Some(cr), |w| {
            w.u32_attr(attr::REQUESTED_TRANSPORT, 17 << 24);
        });
        assert_eq!(self.send(secs, c, &req), Output::ToClient);
        self.error_code()
    }

    fn relay(&self) -> SocketAddr {
        let m = self.reply();
        m.xor_address(attr::XOR_RELAYED_ADDRESS).unwrap()
    }

    /// Sends an authenticated request and returns what the core asked for.
    fn raw(
        &mut self,
        secs: u64,
        c: &ClientId,
        cr: &Creds,
        meth: u16,
        f: impl FnOnce(&mut MessageWriter<'_>),
    ) -> Output {
        let tid: [u8; 12] = rand::random();
        let req = build(meth, &tid, Some(cr), f);
        self.send(secs, c, &req)
    }

    fn request(
        &mut self,
        secs: u64,
        c: &ClientId,
        cr: &Creds,
        meth: u16,
        f: impl FnOnce(&mut MessageWriter<'_>),
    ) -> Option<u16> {
        assert_eq!(self.raw(secs, c, cr, meth, f), Output::ToClient);
        let code = self.error_code();
        if code.is_none() {
            let m = self.reply();
            if cr.sha256 {
                assert!(
                    m.check_integrity_sha256(cr.key.as_bytes()),
                    "reply signed with SHA-256"
                );
            } else {
                assert!(m.check_integrity_sha1(cr.key.as_bytes()), "reply signed");
            }
        }
        code
    }

    fn peer_data(
        &mut self,
        secs: u64,
        relay: SocketAddr,
        peer: SocketAddr,
        data: &[u8],
    ) -> Option<ClientId> {
        let now = self.at(secs);
        self.core.handle_peer(now, relay, peer, data, &mut self.out)
    }
}

fn build(
    meth: u16,
    tid: &[u8; 12],
    creds: Option<&Creds>,
    f: impl FnOnce(&mut MessageWriter<'_>),
) -> Vec<u8> {
    let mut out = Vec::new();
    let mut w = MessageWriter::new(&mut out, meth, Class::Request, tid);
    f(&mut w);
    if let Some(c) = creds {
        w.attr(attr::USERNAME, c.username.as_bytes())
            .attr(attr::REALM, b"switchboard")
            .attr(attr::NONCE, &c.nonce);
        if c.sha256 {
            w.attr(attr::PASSWORD_ALGORITHMS, &PASSWORD_ALGORITHMS_VALUE)
                .attr(attr::PASSWORD_ALGORITHM, &[0, 2, 0, 0])
                .integrity_sha256(c.key.as_bytes());
        } else {
            w.integrity_sha1(c.key.as_bytes());
        }
    }
    w.fingerprint();
    drop(w);
    out
}

fn peer_attr(w: &mut MessageWriter<'_>, p: SocketAddr) {
    w.address(attr::XOR_PEER_ADDRESS, p, true);
}

fn failures(m: &TurnMetrics, reason: &'static str) -> u64 {
    m.auth_failures.get_or_create(&[("reason", reason)]).get()
}

#[test]
fn binding_answers_xor_mapped_address_with_fingerprint() {
    let mut w = world();
    let c = client();
    let req = build(method::BINDING, &[1; 12], None, |_| {});
    assert_eq!(w.send(0, &c, &req), Output::ToClient);
    let m = w.reply();
    assert_eq!(m.class, Class::Success);
    assert!(m.has_fingerprint());
    assert!(
        m.get(attr::SOFTWARE).is_none(),
        "SOFTWARE is off by default"
    );
    let a = m.xor_address(attr::XOR_MAPPED_ADDRESS);
    assert_eq!(a, Some(c.remote));
}

#[test]
fn full_relay_flow_channels_send_and_data_indications() {
    let mut w = world();
    let c = client();
    let cr = w.rest_creds(0, &c, SECRET, 3600);
    assert_eq!(w.allocate(0, &c, &cr, [2; 12]), None);
    let relay = w.relay();
    assert!(w.relays.live.contains(&relay));
    assert_eq!(w.metrics.allocations.get(), 1);
    // Retransmitted Allocate (same transaction) gets the same success; a new one gets 437.
    assert_eq!(w.allocate(1, &c, &cr, [2; 12]), None);
    assert_eq!(w.relay(), relay);
    assert_eq!(w.allocate(1, &c, &cr, [3; 12]), Some(437));

    let peer: SocketAddr = "192.0.2.44:5000".parse().unwrap();
    // No permission yet: peer data is dropped, Send is dropped.
    assert_eq!(w.peer_data(2, relay, peer, b"early"), None);
    assert_eq!(
        w.request(2, &c, &cr, method::CREATE_PERMISSION, |x| peer_attr(
            x, peer
        )),
        None
    );
    assert_eq!(w.peer_data(3, relay, peer, b"hello"), Some(c));
    // No channel: Data indication.
    let m = Message::decode(&w.out).unwrap();
    assert_eq!((m.method, m.class), (method::DATA, Class::Indication));
    assert_eq!(m.get(attr::DATA), Some(&b"hello"[..]));
    assert_eq!(m.xor_address(attr::XOR_PEER_ADDRESS), Some(peer));

    // Send indication to the peer.
    let mut ind = Vec::new();
    MessageWriter::new(&mut ind, method::SEND, Class::Indication, &[4; 12])
        .address(attr::XOR_PEER_ADDRESS, peer, true)
        .attr(attr::DATA, b"via-send");
    match w.send(4, &c, &ind) {
        Output::ToPeer {
            relay: r,
            peer: p,
            start,
            end,
        } => {
            assert_eq!((r, p), (relay, peer));
            assert_eq!(&ind[start..end], b"via-send");
        }
        o => panic!("expected ToPeer, got {o:?}"),
    }

    // Channel bind, then ChannelData both ways.
    assert_eq!(
        w.request(5, &c, &cr, method::CHANNEL_BIND, |x| {
            x.u32_attr(attr::CHANNEL_NUMBER, 0x4001 << 16);
            peer_attr(x, peer);
        }),
        None
    );
    let mut cd = Vec::new();
    ChannelData::encode(0x4001, b"chan!", false, &mut cd);
    assert_eq!(
        w.send(6, &c, &cd),
        Output::ToPeer {
            relay,
            peer,
            start: 4,
            end: 9
        }
    );
    assert_eq!(w.peer_data(6, relay, peer, b"back"), Some(c));
    assert_eq!(
        ChannelData::decode(&w.out).unwrap(),
        ChannelData {
            channel: 0x4001,
            data: b"back"
        }
    );
    // Same channel to another peer, or the peer on another channel: 400.
    let other: SocketAddr = "192.0.2.45:5000".parse().unwrap();
    assert_eq!(
        w.request(7, &c, &cr, method::CHANNEL_BIND, |x| {
            x.u32_attr(attr::CHANNEL_NUMBER, 0x4001 << 16);
            peer_attr(x, other);
        }),
        Some(400)
    );
    assert_eq!(
        w.request(7, &c, &cr, method::CHANNEL_BIND, |x| {
            x.u32_attr(attr::CHANNEL_NUMBER, 0x3000 << 16);
            peer_attr(x, other);
        }),
        Some(400)
    );
    // Unbound channel from the client: dropped.
    let mut cd2 = Vec::new();
    ChannelData::encode(0x4002, b"x", false, &mut cd2);
    assert_eq!(w.send(8, &c, &cd2), Output::None);
    assert_eq!(w.metrics.packets_to_peer.get(), 2);
    assert_eq!(w.metrics.packets_to_client.get(), 2);

    // Refresh with lifetime 0 deletes the allocation and frees the relay.
    assert_eq!(
        w.request(9, &c, &cr, method::REFRESH, |x| {
            x.u32_attr(attr::LIFETIME, 0);
        }),
        None
    );
    assert_eq!(w.core.allocation_count(), 0);
    assert!(!w.relays.live.contains(&relay));
    assert_eq!(w.metrics.allocations_deleted.get(), 1);
    assert_eq!(w.metrics.allocations.get(), 0);
    assert_eq!(w.request(10, &c, &cr, method::REFRESH, |_| {}), Some(437));
}

#[test]
fn wrong_password_expired_username_and_rotation() {
    let mut w = world();
    let c = client();
    let mut cr = w.rest_creds(0, &c, b"not-the-secret", 3600);
    assert_eq!(w.allocate(0, &c, &cr, [1; 12]), Some(401));
    assert_eq!(failures(&w.metrics, "bad_integrity"), 1);
    // Expired REST username, correctly signed.
    cr = w.rest_creds(0, &c, SECRET, -10);
    assert_eq!(w.allocate(0, &c, &cr, [1; 12]), Some(401));
    assert_eq!(failures(&w.metrics, "expired"), 1);
    // The previous secret still works (rotation).
    cr = w.rest_creds(0, &c, b"old-secret", 600);
    assert_eq!(w.allocate(0, &c, &cr, [1; 12]), None);
    // Wrong realm → 401; missing nonce → 400.
    let bad = build(method::REFRESH, &[5; 12], None, |x| {
        x.attr(attr::USERNAME, cr.username.as_bytes())
            .attr(attr::REALM, b"elsewhere")
            .attr(attr::NONCE, &cr.nonce)
            .integrity_sha1(cr.key.as_bytes());
    });
    w.send(1, &c, &bad);
    assert_eq!(w.error_code(), Some(401));
    let bad = build(method::REFRESH, &[5; 12], None, |x| {
        x.attr(attr::USERNAME, cr.username.as_bytes())
            .attr(attr::REALM, b"switchboard")
            .integrity_sha1(cr.key.as_bytes());
    });
    w.send(1, &c, &bad);
    assert_eq!(w.error_code(), Some(400));
    // A different user on the same 5-tuple: 441.
    let mut other = w.rest_creds(2, &c, SECRET, 600);
    other.username = format!("{}:mallory", UNIX0 + 600);
    let pw = turn_rest::password(SECRET, &other.username);
    other.key = derive_key(ALG_MD5, &other.username, "switchboard", &pw);
    assert_eq!(w.request(2, &c, &other, method::REFRESH, |_| {}), Some(441));
}

#[test]
fn stale_nonce_rotates_and_forged_nonce_refused() {
    let mut w = world();
    let c = client();
    let mut cr = w.rest_creds(0, &c, SECRET, 7200);
    assert_eq!(w.allocate(0, &c, &cr, [1; 12]), None);
    // 601 s later the nonce is stale: 438 with a fresh nonce that then works.
    assert_eq!(w.request(601, &c, &cr, method::REFRESH, |_| {}), Some(438));
    assert_eq!(failures(&w.metrics, "stale_nonce"), 1);
    let fresh = w.reply().get(attr::NONCE).unwrap().to_vec();
    assert_ne!(fresh, cr.nonce);
    cr.nonce = fresh;
    assert_eq!(w.request(602, &c, &cr, method::REFRESH, |_| {}), None);
    // A nonce issued to another address is refused.
    let c2 = ClientId::udp("198.51.100.8:40000".parse().unwrap());
    assert_eq!(w.allocate(603, &c2, &cr, [9; 12]), Some(401));
    assert_eq!(failures(&w.metrics, "bad_nonce"), 1);
}

#[test]
fn sha256_password_algorithm_and_bid_down() {
    let mut w = world_with(|c| {
        c.users.insert("bob".into(), "hunter2".into());
    });
    let c = client();
    let nonce = w.nonce(0, &c);
    let cr = Creds {
        username: "bob".into(),
        key: derive_key(ALG_SHA256, "bob", "switchboard", "hunter2"),
        nonce,
        sha256: true,
    };
    assert_eq!(w.allocate(0, &c, &cr, [1; 12]), None);
    assert!(w.reply().has_integrity_sha256());
    // PASSWORD-ALGORITHMS not what the server offered (a bid-down attempt): 400.
    let bad = build(method::REFRESH, &[2; 12], None, |x| {
        x.attr(attr::USERNAME, b"bob")
            .attr(attr::REALM, b"switchboard")
            .attr(attr::NONCE, &cr.nonce)
            .attr(attr::PASSWORD_ALGORITHMS, &[0, 1, 0, 0])
            .attr(attr::PASSWORD_ALGORITHM, &[0, 1, 0, 0])
            .integrity_sha1(cr.key.as_bytes());
    });
    w.send(1, &c, &bad);
    assert_eq!(w.error_code(), Some(400));
    assert_eq!(failures(&w.metrics, "bad_algorithm"), 1);
}

/// Asserts that CreatePermission and ChannelBind naming each of `peers` get 403.
fn assert_denied(w: &mut World, secs: u64, c: &ClientId, cr: &Creds, peers: &[&str]) {
    for p in peers {
        let p: SocketAddr = p.parse().unwrap();
        assert_eq!(
            w.request(secs, c, cr, method::CREATE_PERMISSION, |x| peer_attr(x, p)),
            Some(403),
            "{p}"
        );
        assert_eq!(
            w.request(secs, c, cr, method::CHANNEL_BIND, |x| {
                x.u32_attr(attr::CHANNEL_NUMBER, 0x4000 << 16);
                peer_attr(x, p);
            }),
            Some(403),
            "{p}"
        );
    }
}

#[test]
fn denied_peers_get_403_including_ipv4_mapped() {
    let mut w = world();
    w.relays.v6 = true;
    let c = client();
    let cr = w.rest_creds(0, &c, SECRET, 3600);
    assert_eq!(w.allocate(0, &c, &cr, [1; 12]), None);
    assert_denied(
        &mut w,
        1,
        &c,
        &cr,
        &[
            "127.0.0.1:9",
            "10.0.0.1:9",
            "169.254.169.254:80",
            "192.168.1.1:9",
            "100.64.0.1:9",
            "0.0.0.0:9",
        ],
    );
    // IPv6 allocation; mapped and native internal addresses are denied.
    let c6 = ClientId::udp("198.51.100.9:40000".parse().unwrap());
    let cr6 = w.rest_creds(2, &c6, SECRET, 3600);
    let req = build(method::ALLOCATE, &[3; 12], Some(&cr6), |x| {
        x.u32_attr(attr::REQUESTED_TRANSPORT, 17 << 24);
        x.u32_attr(attr::REQUESTED_ADDRESS_FAMILY, 2 << 24);
    });
    w.send(2, &c6, &req);
    assert_eq!(w.error_code(), None);
    assert!(w.relay().is_ipv6());
    assert_denied(
        &mut w,
        3,
        &c6,
        &cr6,
        &[
            "[::ffff:127.0.0.1]:9",
            "[::ffff:10.0.0.1]:9",
            "[::ffff:169.254.169.254]:80",
            "[::1]:9",
            "[fe80::1]:9",
            "[fd00::1]:9",
        ],
    );
    assert_eq!(w.metrics.denied_peers.get(), 24);
    // Public peers are fine; a family mismatch is 443.
    let pubv6: SocketAddr = "[2001:db8:1::1]:9".parse().unwrap();
    assert_eq!(
        w.request(4, &c6, &cr6, method::CREATE_PERMISSION, |x| peer_attr(
            x, pubv6
        )),
        None
    );
    let pubv4: SocketAddr = "192.0.2.1:9".parse().unwrap();
    assert_eq!(
        w.request(4, &c6, &cr6, method::CREATE_PERMISSION, |x| peer_attr(
            x, pubv4
        )),
        Some(443)
    );
}

#[test]
fn lifetimes_expire_allocations_permissions_and_channels() {
    let mut w = world();
    let c = client();
    let cr = w.rest_creds(0, &c, SECRET, 7200);
    assert_eq!(w.allocate(0, &c, &cr, [1; 12]), None);
    let relay = w.relay();
    assert_eq!(
        w.reply().get(attr::LIFETIME),
        Some(&600u32.to_be_bytes()[..])
    );
    let peer: SocketAddr = "192.0.2.9:7".parse().unwrap();
    assert_eq!(
        w.request(1, &c, &cr, method::CREATE_PERMISSION, |x| peer_attr(
            x, peer
        )),
        None
    );
    assert!(w.peer_data(300, relay, peer, b"x").is_some());
    // Permissions last 300 s.
    let now = w.at(302);
    w.core.handle_timeout(now, &mut w.relays);
    assert!(w.peer_data(302, relay, peer, b"x").is_none());
    // Refresh asking for 99999 s is capped to 3600 s.
    assert_eq!(
        w.request(303, &c, &cr, method::REFRESH, |x| {
            x.u32_attr(attr::LIFETIME, 99_999);
        }),
        None
    );
    assert_eq!(
        w.reply().get(attr::LIFETIME),
        Some(&3600u32.to_be_bytes()[..])
    );
    let now = w.at(303 + 3599);
    w.core.handle_timeout(now, &mut w.relays);
    assert_eq!(w.core.allocation_count(), 1);
    let now = w.at(303 + 3601);
    w.core.handle_timeout(now, &mut w.relays);
    assert_eq!(w.core.allocation_count(), 0);
    assert!(w.relays.live.is_empty());
    assert_eq!(w.metrics.allocations_expired.get(), 1);
}

#[test]
fn quotas_and_bandwidth() {
    let mut w = world_with(|c| {
        c.limits.user_quota = 1;
        c.limits.total_quota = 2;
        c.limits.max_bps = 1000;
        c.limits.max_permissions = 2;
    });
    let c1 = client();
    let cr = w.rest_creds(0, &c1, SECRET, 3600);
    assert_eq!(w.allocate(0, &c1, &cr, [1; 12]), None);
    let relay = w.relay();
    // Same user from another 5-tuple: 486.
    let c2 = ClientId::udp("198.51.100.7:40001".parse().unwrap());
    let mut cr2 = w.rest_creds(0, &c2, SECRET, 3600);
    cr2.username = cr.username.clone();
    cr2.key = cr.key;
    assert_eq!(w.allocate(0, &c2, &cr2, [2; 12]), Some(486));
    // Another user fits; a third allocation hits total_quota: 508.
    let mut cr3 = w.rest_creds(0, &c2, SECRET, 3601);
    cr3.username = format!("{}:carol", UNIX0 + 3600);
    let pw = turn_rest::password(SECRET, &cr3.username);
    cr3.key = derive_key(ALG_MD5, &cr3.username, "switchboard", &pw);
    assert_eq!(w.allocate(0, &c2, &cr3, [3; 12]), None);
    let c3 = ClientId::udp("198.51.100.7:40002".parse().unwrap());
    let mut cr4 = w.rest_creds(0, &c3, SECRET, 3600);
    cr4.username = format!("{}:dave", UNIX0 + 3600);
    let pw = turn_rest::password(SECRET, &cr4.username);
    cr4.key = derive_key(ALG_MD5, &cr4.username, "switchboard", &pw);
    assert_eq!(w.allocate(0, &c3, &cr4, [4; 12]), Some(508));
    // Permissions per allocation are bounded.
    for (i, p) in ["192.0.2.1:1", "192.0.2.2:1"].iter().enumerate() {
        let p: SocketAddr = p.parse().unwrap();
        assert_eq!(
            w.request(1 + i as u64, &c1, &cr, method::CREATE_PERMISSION, |x| {
                peer_attr(x, p)
            }),
            None
        );
    }
    let p3: SocketAddr = "192.0.2.3:1".parse().unwrap();
    assert_eq!(
        w.request(3, &c1, &cr, method::CREATE_PERMISSION, |x| peer_attr(x, p3)),
        Some(508)
    );
    // 1000 B/s: a 600 B burst passes, the next 600 B in the same second does not.
    let peer: SocketAddr = "192.0.2.1:1".parse().unwrap();
    assert!(w.peer_data(4, relay, peer, &[0; 600]).is_some());
    assert!(w.peer_data(4, relay, peer, &[0; 600]).is_none());
    assert!(w.peer_data(5, relay, peer, &[0; 600]).is_some());
}

/// A core built from `[turn]` the way the server builds it, with every key at its default
/// except the secret and those `f` sets.
fn world_from_defaults(f: impl FnOnce(&mut TurnConfig)) -> World {
    let mut tc = TurnConfig {
        static_auth_secret: String::from_utf8(SECRET.to_vec()).unwrap(),
        ..TurnConfig::default()
    };
    f(&mut tc);
    world_of(core_config(&tc).unwrap())
}

fn quota_rejections(m: &TurnMetrics, quota: &'static str) -> u64 {
    m.quota_rejections.get_or_create(&[("quota", quota)]).get()
}

impl World {
    /// REST credentials for `user`, expiring `ttl` seconds after `secs`.
    fn creds_for(&mut self, secs: u64, c: &ClientId, user: &str, ttl: u64) -> Creds {
        let username = format!("{}:{user}", UNIX0 + secs + ttl);
        let password = turn_rest::password(SECRET, &username);
        Creds {
            key: derive_key(ALG_MD5, &username, "switchboard", &password),
            username,
            nonce: self.nonce(secs, c),
            sha256: false,
        }
    }
}

/// The n-th client 5-tuple (same address, another port).
fn nth_client(n: u16) -> ClientId {
    ClientId::udp(SocketAddr::new("198.51.100.7".parse().unwrap(), 20_000 + n))
}

#[test]
fn default_user_quota_stops_one_user_and_not_the_others() {
    let mut w = world_from_defaults(|_| {});
    assert_eq!(DEFAULT_USER_QUOTA, 64);
    let quota = DEFAULT_USER_QUOTA as u16;
    let mallory = w.creds_for(0, &nth_client(0), "mallory", 3600);
    for n in 0..quota {
        assert_eq!(
            w.allocate(0, &nth_client(n), &mallory, [n as u8; 12]),
            None,
            "allocation {n} is within the quota"
        );
    }
    // One more from the same credential: 486 Allocation Quota Reached, counted.
    let extra = nth_client(quota);
    assert_eq!(w.allocate(0, &extra, &mallory, [0xEE; 12]), Some(486));
    assert_eq!(quota_rejections(&w.metrics, "user"), 1);
    // Fresh credentials for the same user (a new /v1/ice-servers call) do not reset it.
    let fresh = w.creds_for(1, &extra, "mallory", 3600);
    assert_ne!(fresh.username, mallory.username);
    assert_eq!(w.allocate(1, &extra, &fresh, [0xEF; 12]), Some(486));
    assert_eq!(quota_rejections(&w.metrics, "user"), 2);
    // Another user still allocates.
    let alice = w.creds_for(1, &extra, "alice", 3600);
    assert_eq!(w.allocate(1, &extra, &alice, [0xF0; 12]), None);
    assert_eq!(w.core.allocation_count(), quota as usize + 1);
    // Once one of mallory's allocations is deleted, mallory may allocate one more.
    assert_eq!(
        w.request(2, &nth_client(0), &mallory, method::REFRESH, |x| {
            x.u32_attr(attr::LIFETIME, 0);
        }),
        None
    );
    let again = nth_client(quota + 1);
    assert_eq!(w.allocate(2, &again, &fresh, [0xF1; 12]), None);
    assert_eq!(
        w.allocate(2, &nth_client(quota + 2), &fresh, [0xF2; 12]),
        Some(486)
    );
    assert_eq!(quota_rejections(&w.metrics, "total"), 0);
}

#[test]
fn default_total_quota_keeps_a_quarter_of_the_relay_ports_free() {
    // 8 relay ports: at most 6 allocations in all, whoever asks.
    let mut w = world_from_defaults(|t| {
        t.min_port = 50_000;
        t.max_port = 50_007;
    });
    for n in 0..6u16 {
        let cr = w.creds_for(0, &nth_client(n), &format!("user{n}"), 3600);
        assert_eq!(w.allocate(0, &nth_client(n), &cr, [n as u8; 12]), None);
    }
    let cr = w.creds_for(0, &nth_client(6), "user6", 3600);
    assert_eq!(w.allocate(0, &nth_client(6), &cr, [6; 12]), Some(508));
    assert_eq!(quota_rejections(&w.metrics, "total"), 1);
    // The explicit opt-outs keep coturn's "0 = unlimited".
    let unlimited = TurnConfig {
        user_quota: 0,
        total_quota: Some(0),
        static_auth_secret: "s".into(),
        ..TurnConfig::default()
    };
    let c = core_config(&unlimited).unwrap();
    assert_eq!((c.limits.user_quota, c.limits.total_quota), (0, 0));
    assert_eq!(TurnConfig::default().effective_total_quota(), 12_288);
}

#[test]
fn quota_keys_are_rest_users_and_static_names() {
    let users = std::collections::HashMap::from([("7:odd".to_string(), "pw".to_string())]);
    assert_eq!(quota_key(&users, "1800003600:alice"), "alice");
    assert_eq!(quota_key(&users, "1800003600:a:b"), "a:b");
    assert_eq!(quota_key(&users, "1800003600"), "1800003600");
    assert_eq!(quota_key(&users, "1800003600:"), "1800003600:");
    assert_eq!(quota_key(&users, "bob"), "bob");
    assert_eq!(quota_key(&users, "7:odd"), "7:odd");
    assert_eq!(quota_key(&users, "x7:odd"), "x7:odd");
}

#[test]
fn even_port_reservation_and_unknown_attributes() {
    let mut w = world();
    let c = client();
    let cr = w.rest_creds(0, &c, SECRET, 3600);
    let req = build(method::ALLOCATE, &[1; 12], Some(&cr), |x| {
        x.u32_attr(attr::REQUESTED_TRANSPORT, 17 << 24);
        x.attr(attr::EVEN_PORT, &[0x80]);
    });
    w.send(0, &c, &req);
    assert_eq!(w.error_code(), None);
    let relay = w.relay();
    assert_eq!(relay.port() % 2, 0);
    let token = w.reply().get(attr::RESERVATION_TOKEN).unwrap().to_vec();
    let c2 = ClientId::udp("198.51.100.7:40009".parse().unwrap());
    let cr2 = w.rest_creds(1, &c2, SECRET, 3600);
    let req = build(method::ALLOCATE, &[2; 12], Some(&cr2), |x| {
        x.u32_attr(attr::REQUESTED_TRANSPORT, 17 << 24);
        x.attr(attr::RESERVATION_TOKEN, &token);
    });
    w.send(1, &c2, &req);
    assert_eq!(w.error_code(), None);
    assert_eq!(w.relay().port(), relay.port() + 1);
    // A comprehension-required attribute we do not know: 420 listing it.
    let req = build(method::ALLOCATE, &[3; 12], None, |x| {
        x.attr(0x0031, &[1, 2, 3, 4]);
    });
    w.send(2, &c, &req);
    assert_eq!(w.error_code(), Some(420));
    assert_eq!(
        w.reply().get(attr::UNKNOWN_ATTRIBUTES),
        Some(&[0x00, 0x31][..])
    );
    // A TCP relay (RFC 6062) asked for over UDP: 400 (§5.1; TCP relays are tested below).
    let req = build(method::ALLOCATE, &[4; 12], Some(&cr), |x| {
        x.u32_attr(attr::REQUESTED_TRANSPORT, 6 << 24);
    });
    let c3 = ClientId::udp("198.51.100.7:40010".parse().unwrap());
    let mut cr3 = w.rest_creds(2, &c3, SECRET, 3600);
    cr3.username = cr.username.clone();
    cr3.key = cr.key;
    let req2 = build(method::ALLOCATE, &[4; 12], Some(&cr3), |x| {
        x.u32_attr(attr::REQUESTED_TRANSPORT, 6 << 24);
    });
    drop(req);
    w.send(2, &c3, &req2);
    assert_eq!(w.error_code(), Some(400));
}

#[test]
fn stream_clients_get_padded_channel_data_and_lose_allocation_on_close() {
    let mut w = world();
    let c = ClientId {
        transport: Transport::Tcp,
        conn: 7,
        remote: "198.51.100.7:40000".parse().unwrap(),
    };
    let cr = w.rest_creds(0, &c, SECRET, 3600);
    assert_eq!(w.allocate(0, &c, &cr, [1; 12]), None);
    let relay = w.relay();
    let peer: SocketAddr = "192.0.2.1:1".parse().unwrap();
    assert_eq!(
        w.request(1, &c, &cr, method::CHANNEL_BIND, |x| {
            x.u32_attr(attr::CHANNEL_NUMBER, 0x4abc << 16);
            peer_attr(x, peer);
        }),
        None
    );
    assert_eq!(w.peer_data(2, relay, peer, b"12345"), Some(c));
    assert_eq!(w.out.len(), 12, "4 header + 5 data + 3 padding");
    w.core.client_closed(&c, &mut w.relays);
    assert_eq!(w.core.allocation_count(), 0);
    assert!(w.relays.live.is_empty());
}

#[test]
fn garbage_is_counted_not_answered() {
    let mut w = world();
    let c = client();
    for pkt in [
        &b""[..],
        &[0xff; 30][..],
        &[0, 1, 0, 4, 0x21, 0x12, 0xa4, 0x42][..],
        &[0x40, 0x00, 0x00, 0x10, 1][..],
    ] {
        assert_eq!(w.send(0, &c, pkt), Output::None);
    }
    let total: u64 = ["stun", "not_stun", "channel_data"]
        .iter()
        .map(|r| w.metrics.malformed.get_or_create(&[("reason", r)]).get())
        .sum();
    assert_eq!(total, 4);
}

// ---- RFC 6062: TCP relays ----

fn tcp_client(port: u16, conn: u64) -> ClientId {
    ClientId {
        transport: Transport::Tcp,
        conn,
        remote: SocketAddr::new("198.51.100.20".parse().unwrap(), port),
    }
}

impl World {
    /// A TCP allocation for `c` with a permission for `peer`; returns its relay address.
    fn tcp_allocation(&mut self, c: &ClientId, cr: &Creds, peer: SocketAddr) -> SocketAddr {
        let code = self.request(0, c, cr, method::ALLOCATE, |w| {
            w.u32_attr(attr::REQUESTED_TRANSPORT, 6 << 24);
        });
        assert_eq!(code, None, "TCP allocation over TCP succeeds");
        let relay = self.relay();
        let code = self.request(0, c, cr, method::CREATE_PERMISSION, |w| {
            w.address(attr::XOR_PEER_ADDRESS, peer, true);
        });
        assert_eq!(code, None);
        relay
    }

    fn connection_id(&self) -> u32 {
        let m = self.reply();
        let v = m.get(attr::CONNECTION_ID).expect("CONNECTION-ID");
        u32::from_be_bytes([v[0], v[1], v[2], v[3]])
    }
}

/// A world where a TCP control connection holds a TCP allocation with a permission for a
/// peer: (world, control client, its credentials, the peer, the relay address).
fn tcp_world() -> (World, ClientId, Creds, SocketAddr, SocketAddr) {
    let mut w = world();
    let ctl = tcp_client(41000, 1);
    let cr = w.rest_creds(0, &ctl, SECRET, 600);
    let peer: SocketAddr = "192.0.2.44:5000".parse().unwrap();
    let relay = w.tcp_allocation(&ctl, &cr, peer);
    (w, ctl, cr, peer, relay)
}

fn connect_to(peer: SocketAddr) -> impl FnOnce(&mut MessageWriter<'_>) {
    move |w| {
        w.address(attr::XOR_PEER_ADDRESS, peer, true);
    }
}

fn bind_id(id: u32) -> impl FnOnce(&mut MessageWriter<'_>) {
    move |w| {
        w.u32_attr(attr::CONNECTION_ID, id);
    }
}

#[test]
fn tcp_allocations_need_a_stream_transport_and_refuse_udp_only_attributes() {
    let mut w = world();
    let udp = client();
    let cr = w.rest_creds(0, &udp, SECRET, 600);
    let code = w.request(0, &udp, &cr, method::ALLOCATE, |w| {
        w.u32_attr(attr::REQUESTED_TRANSPORT, 6 << 24);
    });
    assert_eq!(
        code,
        Some(400),
        "RFC 6062 §5.1: TCP relay requested over UDP"
    );
    let tcp = tcp_client(41000, 1);
    let cr = w.rest_creds(0, &tcp, SECRET, 600);
    let code = w.request(0, &tcp, &cr, method::ALLOCATE, |w| {
        w.u32_attr(attr::REQUESTED_TRANSPORT, 6 << 24)
            .attr(attr::EVEN_PORT, &[0x80]);
    });
    assert_eq!(code, Some(400), "EVEN-PORT with a TCP relay");
    let code = w.request(0, &tcp, &cr, method::ALLOCATE, |w| {
        w.u32_attr(attr::REQUESTED_TRANSPORT, 132 << 24);
    });
    assert_eq!(code, Some(442), "SCTP is not relayed");
    assert_eq!(w.core.allocation_count(), 0);
    // RFC 6156 applies to TCP relays too: an IPv6 relay address when asked for.
    w.relays.v6 = true;
    let code = w.request(0, &tcp, &cr, method::ALLOCATE, |w| {
        w.u32_attr(attr::REQUESTED_TRANSPORT, 6 << 24)
            .attr(attr::REQUESTED_ADDRESS_FAMILY, &[2, 0, 0, 0]);
    });
    assert_eq!(code, None);
    assert!(w.relay().is_ipv6());
}

#[test]
fn connect_then_connection_bind_relays_and_everything_is_released() {
    let (mut w, ctl, cr, peer, relay) = tcp_world();

    // Connect: nothing is answered until the driver reports the connection attempt.
    let Output::Connect {
        id,
        relay: from,
        peer: to,
    } = w.raw(1, &ctl, &cr, method::CONNECT, connect_to(peer))
    else {
        panic!("Connect asks the driver to connect");
    };
    assert_eq!((from, to), (relay, peer));
    assert_eq!(w.core.tcp_connection_count(), 1);
    // A second Connect to the same peer while the first is in progress: 446.
    let second = w.raw(1, &ctl, &cr, method::CONNECT, connect_to(peer));
    assert_eq!(second, Output::ToClient);
    assert_eq!(w.error_code(), Some(446));
    // Channels and indications belong to UDP relays.
    let code = w.request(1, &ctl, &cr, method::CHANNEL_BIND, |w| {
        w.u32_attr(attr::CHANNEL_NUMBER, 0x4000 << 16)
            .address(attr::XOR_PEER_ADDRESS, peer, true);
    });
    assert_eq!(code, Some(400));

    let now = w.at(2);
    assert_eq!(w.core.connect_done(now, id, true, &mut w.out), Some(ctl));
    assert_eq!(w.error_code(), None);
    assert_eq!(w.reply().method, method::CONNECT);
    assert!(w.reply().check_integrity_sha1(cr.key.as_bytes()));
    assert_eq!(w.connection_id(), id);

    // ConnectionBind on the control connection itself, or for an unknown id: 400.
    assert_eq!(
        w.raw(2, &ctl, &cr, method::CONNECTION_BIND, bind_id(id)),
        Output::ToClient
    );
    assert_eq!(w.error_code(), Some(400));
    let data = tcp_client(41001, 2);
    assert_eq!(
        w.raw(2, &data, &cr, method::CONNECTION_BIND, bind_id(id ^ 1)),
        Output::ToClient
    );
    assert_eq!(w.error_code(), Some(400));
    // Another user cannot take the connection.
    let mut bob = w.rest_creds(2, &data, SECRET, 600);
    bob.username = bob.username.replace("alice", "bob");
    let pw = turn_rest::password(SECRET, &bob.username);
    bob.key = derive_key(ALG_MD5, &bob.username, "switchboard", &pw);
    assert_eq!(
        w.raw(2, &data, &bob, method::CONNECTION_BIND, bind_id(id)),
        Output::ToClient
    );
    assert_eq!(w.error_code(), Some(441));
    // The owner binds it from a new connection.
    assert_eq!(
        w.raw(2, &data, &cr, method::CONNECTION_BIND, bind_id(id)),
        Output::Bind { id }
    );
    assert_eq!(w.error_code(), None);
    assert!(w.reply().check_integrity_sha1(cr.key.as_bytes()));
    // Bound: a bind timeout no longer applies.
    w.core.handle_timeout(w.at(100), &mut w.relays);
    assert!(w.core.take_closed_tcp().is_empty());
    assert_eq!(w.core.tcp_connection_count(), 1);

    // Deleting the allocation ends its connections and frees the relay address.
    let code = w.request(101, &ctl, &cr, method::REFRESH, |w| {
        w.u32_attr(attr::LIFETIME, 0);
    });
    assert_eq!(code, None);
    assert_eq!(w.core.take_closed_tcp(), vec![id]);
    assert_eq!(w.core.tcp_connection_count(), 0);
    assert_eq!(w.core.allocation_count(), 0);
    assert!(w.relays.live.is_empty());
    assert_eq!(w.metrics.peer_tcp_connections.get(), 0);
}

#[test]
fn a_failed_connect_gets_447_and_denied_peers_get_403() {
    let (mut w, ctl, cr, peer, _) = tcp_world();
    let Output::Connect { id, .. } = w.raw(1, &ctl, &cr, method::CONNECT, connect_to(peer)) else {
        panic!("Connect");
    };
    let now = w.at(31);
    assert_eq!(w.core.connect_done(now, id, false, &mut w.out), Some(ctl));
    assert_eq!(w.error_code(), Some(447));
    assert_eq!(w.core.tcp_connection_count(), 0);
    // A result for a connection nobody waits for any more is ignored.
    assert_eq!(w.core.connect_done(now, id, true, &mut w.out), None);
    // Internal addresses are refused like for UDP relays.
    for p in [
        "127.0.0.1:80",
        "10.1.2.3:80",
        "169.254.169.254:80",
        "[::ffff:127.0.0.1]:80",
    ] {
        let p: SocketAddr = p.parse().unwrap();
        let o = w.raw(32, &ctl, &cr, method::CONNECT, connect_to(p));
        assert_eq!(o, Output::ToClient, "{p}");
        assert!(matches!(w.error_code(), Some(403) | Some(443)), "{p}");
    }
    // Connect on a UDP allocation: 400.
    let udp = client();
    let cu = w.rest_creds(32, &udp, SECRET, 600);
    assert_eq!(w.allocate(32, &udp, &cu, [3; 12]), None);
    assert_eq!(
        w.raw(32, &udp, &cu, method::CONNECT, connect_to(peer)),
        Output::ToClient
    );
    assert_eq!(w.error_code(), Some(400));
}

#[test]
fn peers_connect_in_with_a_permission_only_and_unbound_connections_time_out() {
    let (mut w, ctl, cr, peer, relay) = tcp_world();
    let now = w.at(1);
    let stranger: SocketAddr = "192.0.2.99:6000".parse().unwrap();
    assert_eq!(
        w.core.peer_connected(now, relay, stranger, &mut w.out),
        None
    );
    let (id, owner) = w
        .core
        .peer_connected(now, relay, peer, &mut w.out)
        .expect("a permitted peer connects");
    assert_eq!(owner, ctl);
    let m = w.reply();
    assert_eq!(
        (m.method, m.class),
        (method::CONNECTION_ATTEMPT, Class::Indication)
    );
    let from = m.xor_address(attr::XOR_PEER_ADDRESS);
    assert_eq!(from, Some(peer));
    assert_eq!(w.connection_id(), id);
    // Nobody binds it: closed after 30 s, not before.
    w.core.handle_timeout(w.at(30), &mut w.relays);
    assert!(w.core.take_closed_tcp().is_empty());
    w.core.handle_timeout(w.at(32), &mut w.relays);
    assert_eq!(w.core.take_closed_tcp(), vec![id]);
    assert_eq!(w.core.tcp_connection_count(), 0);
    let data = tcp_client(41001, 2);
    assert_eq!(
        w.raw(33, &data, &cr, method::CONNECTION_BIND, bind_id(id)),
        Output::ToClient
    );
    assert_eq!(
        w.error_code(),
        Some(400),
        "a timed-out connection cannot be bound"
    );
}

#[test]
fn tcp_peer_connections_per_allocation_are_bounded() {
    let (mut w, ctl, cr, peer, relay) = tcp_world();
    let now = w.at(1);
    let max = switchboard_turn::core::MAX_TCP_CONNECTIONS_PER_ALLOCATION;
    for port in 0..max {
        let p = SocketAddr::new(peer.ip(), 10000 + port);
        assert!(w.core.peer_connected(now, relay, p, &mut w.out).is_some());
    }
    let p = SocketAddr::new(peer.ip(), 20000);
    assert_eq!(w.core.peer_connected(now, relay, p, &mut w.out), None);
    let other: SocketAddr = "192.0.2.44:20001".parse().unwrap();
    assert_eq!(
        w.raw(1, &ctl, &cr, method::CONNECT, connect_to(other)),
        Output::ToClient
    );
    assert_eq!(w.error_code(), Some(508));
    // The control connection closes: every peer connection goes with the allocation.
    w.core.client_closed(&ctl, &mut w.relays);
    assert_eq!(w.core.take_closed_tcp().len(), max as usize);
    assert_eq!(w.core.tcp_connection_count(), 0);
}
