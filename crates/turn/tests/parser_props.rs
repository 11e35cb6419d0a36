//! Property tests for everything that parses network input, and `replay_corpus`, which feeds
//! the checked-in fuzz corpus (fuzz/corpus/stun_parse) through the same entry point as the
//! fuzz target, so CI replays it on stable.

use proptest::prelude::*;
use std::time::{Duration, Instant};
use switchboard_turn::core::policy::PeerPolicy;
use switchboard_turn::core::stun::{
    attr, decode_address, method, stream_frame_len, ChannelData, Class, Message, MessageWriter,
};
use switchboard_turn::core::{
    ClientId, CoreConfig, Family, Parity, RelayAllocator, RelayError, Transport, TurnCore,
};
use switchboard_turn::TurnMetrics;

struct NoRelays;
impl RelayAllocator for NoRelays {
    fn allocate(
        &mut self,
        _: Family,
        _: Parity,
    ) -> Result<(std::net::SocketAddr, Option<std::net::SocketAddr>), RelayError> {
        Ok(("192.0.2.1:50000".parse().unwrap(), None))
    }
    fn activate_reserved(&mut self, _: std::net::SocketAddr) -> Result<(), RelayError> {
        Err(RelayError::Exhausted)
    }
    fn release(&mut self, _: std::net::SocketAddr) {}
}

/// What the fuzz target does with one input: every parser, then the whole core.
fn exercise(data: &[u8], core: &mut TurnCore, now: Instant) {
    switchboard_turn::fuzzing::exercise_parsers(data);
    let mut out = Vec::new();
    for transport in [Transport::Udp, Transport::Tcp] {
        let c = ClientId {
            transport,
            conn: 1,
            remote: "198.51.100.1:1000".parse().unwrap(),
        };
        let _ = core.handle_client(now, &c, data, &mut NoRelays, &mut out);
        if !out.is_empty() {
            Message::decode(&out).expect("every reply is a valid STUN message");
        }
    }
    let _ = core.handle_peer(
        now,
        "192.0.2.1:50000".parse().unwrap(),
        "192.0.2.9:9".parse().unwrap(),
        data,
        &mut out,
    );
}

fn core() -> TurnCore {
    let mut cfg = CoreConfig::new("r", PeerPolicy::new(&[], &[], true).unwrap());
    cfg.secrets = vec![b"s".to_vec()];
    TurnCore::new(cfg, TurnMetrics::default(), Instant::now(), 1_800_000_000)
}

/// A valid message with random attributes, for mutation.
fn valid_message(attrs: &[(u16, Vec<u8>)], tid: [u8; 12]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut w = MessageWriter::new(&mut out, method::ALLOCATE, Class::Request, &tid);
    for (t, v) in attrs {
        w.attr(*t, v);
    }
    w.fingerprint();
    drop(w);
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        let mut c = core();
        exercise(&data, &mut c, Instant::now());
    }

    #[test]
    fn mutated_valid_messages_never_panic(
        // Any attribute but FINGERPRINT, which the writer appends last itself.
        attrs in proptest::collection::vec(
            (any::<u16>().prop_filter("not FINGERPRINT", |t| *t != attr::FINGERPRINT),
             proptest::collection::vec(any::<u8>(), 0..40)),
            0..10,
        ),
        tid in any::<[u8; 12]>(),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        cut in any::<usize>(),
    ) {
        let mut m = valid_message(&attrs, tid);
        prop_assert!(Message::decode(&m).is_ok());
        for (i, b) in flips {
            let n = m.len();
            m[i % n] ^= b;
        }
        let cut = cut % (m.len() + 1);
        let mut c = core();
        exercise(&m, &mut c, Instant::now());
        exercise(&m[..cut], &mut c, Instant::now() + Duration::from_secs(1));
    }

    #[test]
    fn addresses_roundtrip(ip in any::<[u8; 16]>(), v4 in any::<bool>(), port in any::<u16>(), tid in any::<[u8; 12]>()) {
        let addr = if v4 {
            std::net::SocketAddr::from(([ip[0], ip[1], ip[2], ip[3]], port))
        } else {
            std::net::SocketAddr::from((ip, port))
        };
        let mut out = Vec::new();
        MessageWriter::new(&mut out, method::BINDING, Class::Success, &tid)
            .address(attr::XOR_MAPPED_ADDRESS, addr, true)
            .address(attr::MAPPED_ADDRESS, addr, false);
        let m = Message::decode(&out).unwrap();
        prop_assert_eq!(decode_address(m.get(attr::XOR_MAPPED_ADDRESS).unwrap(), true, &tid), Some(addr));
        prop_assert_eq!(decode_address(m.get(attr::MAPPED_ADDRESS).unwrap(), false, &tid), Some(addr));
    }

    #[test]
    fn channel_data_roundtrip(ch in 0x4000u16..=0x7FFF, data in proptest::collection::vec(any::<u8>(), 0..300), pad in any::<bool>()) {
        let mut out = Vec::new();
        ChannelData::encode(ch, &data, pad, &mut out);
        let cd = ChannelData::decode(&out).unwrap();
        prop_assert_eq!(cd.channel, ch);
        prop_assert_eq!(cd.data, &data[..]);
        if pad {
            prop_assert_eq!(out.len() % 4, 0);
            prop_assert_eq!(stream_frame_len(&out), Ok(Some(out.len())));
        }
    }
}

#[test]
fn replay_corpus() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/stun_parse");
    let entries = std::fs::read_dir(&dir).expect("fuzz/corpus/stun_parse exists");
    let mut n = 0;
    for e in entries {
        let p = e.unwrap().path();
        let data = std::fs::read(&p).unwrap();
        switchboard_turn::fuzzing::exercise(&data);
        n += 1;
    }
    assert!(n >= 10, "corpus has only {n} files");
}

/// The stateful session corpus (fuzz/corpus/turn_session) through the `turn_session` target's
/// entry point. Each run ends with the core checking that nothing was left behind; together
/// the corpus inputs must still reach past authentication into allocations, peer traffic both
/// ways and RFC 6062 connections, or the harness has stopped testing the deep paths.
#[test]
fn replay_corpus_turn_session() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/turn_session");
    let mut total = switchboard_turn::fuzzing::SessionReach::default();
    let mut n = 0;
    for e in std::fs::read_dir(&dir).expect("fuzz/corpus/turn_session exists") {
        let data = std::fs::read(e.unwrap().path()).unwrap();
        let r = switchboard_turn::fuzzing::exercise_session(&data);
        total.allocations = total.allocations.max(r.allocations);
        total.tcp_connections = total.tcp_connections.max(r.tcp_connections);
        total.to_peer += r.to_peer;
        total.to_client += r.to_client;
        n += 1;
    }
    assert!(n >= 6, "corpus has only {n} files");
    assert!(total.allocations >= 1, "{total:?}");
    assert!(total.tcp_connections >= 1, "{total:?}");
    assert!(total.to_peer >= 2, "{total:?}");
    assert!(total.to_client >= 2, "{total:?}");
}
