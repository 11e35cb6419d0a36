//! The fuzz entry point (fuzz/fuzz_targets/stun_parse.rs) and its stable replay
//! (`tests/parser_props.rs::replay_corpus`): one input through every parser and the whole core.

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
