//! Each session's SRTP master keys, learned from str0m's DTLS handshake (decision 0047).
//!
//! str0m 0.25 derives its SRTP contexts from the keying material its DTLS instance reports
//! (RFC 5764 §4.2) and keeps them private. Its DTLS is pluggable, though: an `Rtc` takes a
//! [`CryptoProvider`] whose DTLS provider creates the instance. [`build`] gives the `Rtc` a
//! provider that wraps the default one. Every instance it creates forwards each call to the
//! default instance and copies the keying material into a [`KeySlot`] as it passes by. An
//! egress path of our own can then protect forwarded RTP for a subscriber with the same keys
//! str0m negotiated ([`crate::srtp`]).
//!
//! The slot is filled once the handshake completes; until then [`KeySlot::get`] is `None`.

use std::cell::RefCell;
use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use parking_lot::Mutex;
use str0m::config::{CryptoProvider, DtlsCert};
use str0m::crypto::dtls::{
    DtlsImplError, DtlsInstance, DtlsOutput, DtlsProvider, DtlsVersion, ProtocolVersion,
    SrtpProfile,
};
use str0m::crypto::CryptoError;
use str0m::{Rtc, RtcConfig};

use crate::srtp::{self, MasterKey, Profile};

/// The master keys of one session, from our side: `local` protects what we send, `remote`
/// what the peer sends.
#[derive(Clone)]
pub struct SessionKeys {
    /// The negotiated protection profile.
    pub profile: Profile,
    /// Our write key and salt.
    pub local: MasterKey,
    /// The peer's write key and salt.
    pub remote: MasterKey,
}

impl fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionKeys")
            .field("profile", &self.profile)
            .finish_non_exhaustive()
    }
}

/// Where one `Rtc`'s keys land when its DTLS handshake completes. Cheap to clone.
#[derive(Clone, Default)]
pub struct KeySlot(Arc<Mutex<Option<SessionKeys>>>);

impl KeySlot {
    /// The keys, once the handshake has produced them.
    pub fn get(&self) -> Option<SessionKeys> {
        self.0.lock().clone()
    }

    pub(crate) fn set(&self, keys: SessionKeys) {
        *self.0.lock() = Some(keys);
    }
}

impl fmt::Debug for KeySlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("KeySlot")
            .field(&self.0.lock().as_ref().map(|k| k.profile))
            .finish()
    }
}

thread_local! {
    /// The slot of the DTLS instance created last on this thread; [`build`] takes it right
    /// after str0m created the instance inside `RtcConfig::build`.
    static CREATED: RefCell<Option<KeySlot>> = const { RefCell::new(None) };
}

/// Builds an `Rtc` from `config` with the key-learning provider and returns the slot its
/// keys will land in. Any crypto provider already set on `config` is replaced.
pub fn build(config: RtcConfig, now: Instant) -> (Rtc, KeySlot) {
    CREATED.with(|c| c.borrow_mut().take());
    let rtc = config.set_crypto_provider(provider()).build(now);
    let slot = CREATED.with(|c| c.borrow_mut().take());
    // str0m creates the DTLS instance in `build`; a slot is always there. Should a future
    // str0m create it later, the session simply never gets keys (the egress path then
    // leaves it to str0m), so an empty slot is not an error.
    (rtc, slot.unwrap_or_default())
}

/// The process-wide provider: str0m's default, with DTLS instances wrapped.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            static BASE: OnceLock<CryptoProvider> = OnceLock::new();
            static DTLS: OnceLock<Learning> = OnceLock::new();
            let base = BASE.get_or_init(str0m::crypto::from_feature_flags);
            let dtls = DTLS.get_or_init(|| Learning {
                inner: base.dtls_provider,
            });
            let mut p = base.clone();
            p.dtls_provider = dtls;
            Arc::new(p)
        })
        .clone()
}

fn profile_of(p: SrtpProfile) -> Option<Profile> {
    match p {
        SrtpProfile::AES128_CM_SHA1_80 => Some(Profile::Aes128CmSha1_80),
        SrtpProfile::AEAD_AES_128_GCM => Some(Profile::AeadAes128Gcm),
        SrtpProfile::AEAD_AES_256_GCM => Some(Profile::AeadAes256Gcm),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

/// A DTLS provider that wraps another and hands out [`LearningInstance`]s.
#[derive(Debug)]
struct Learning {
    inner: &'static dyn DtlsProvider,
}

impl DtlsProvider for Learning {
    fn generate_certificate(&self) -> Option<DtlsCert> {
        self.inner.generate_certificate()
    }

    fn new_dtls(
        &self,
        cert: &DtlsCert,
        now: Instant,
        dtls_version: DtlsVersion,
        mtu: Option<usize>,
    ) -> Result<Box<dyn DtlsInstance>, CryptoError> {
        let inner = self.inner.new_dtls(cert, now, dtls_version, mtu)?;
        let slot = KeySlot::default();
        CREATED.with(|c| *c.borrow_mut() = Some(slot.clone()));
        Ok(Box::new(LearningInstance { inner, slot }))
    }

    fn is_test(&self) -> bool {
        self.inner.is_test()
    }
}

/// Forwards everything to the wrapped instance; copies the keying material on its way out.
#[derive(Debug)]
struct LearningInstance {
    inner: Box<dyn DtlsInstance>,
    slot: KeySlot,
}

impl DtlsInstance for LearningInstance {
    fn set_active(&mut self, active: bool) {
        self.inner.set_active(active)
    }

    fn handle_packet(&mut self, packet: &[u8]) -> Result<(), DtlsImplError> {
        self.inner.handle_packet(packet)
    }

    fn poll_output<'a>(&mut self, buf: &'a mut [u8]) -> DtlsOutput<'a> {
        let out = self.inner.poll_output(buf);
        if let DtlsOutput::KeyingMaterial(km, profile) = &out {
            let active = self.inner.is_active();
            match profile_of(*profile) {
                Some(p) => match srtp::split_keying_material(p, km.as_ref(), active) {
                    Ok((local, remote)) => self.slot.set(SessionKeys {
                        profile: p,
                        local,
                        remote,
                    }),
                    Err(e) => tracing::warn!(error = %e, "SRTP keying material unusable"),
                },
                None => tracing::warn!(?profile, "SRTP profile unknown to the egress path"),
            }
        }
        out
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), DtlsImplError> {
        self.inner.handle_timeout(now)
    }

    fn send_application_data(&mut self, data: &[u8]) -> Result<usize, DtlsImplError> {
        self.inner.send_application_data(data)
    }

    fn is_active(&self) -> bool {
        self.inner.is_active()
    }

    fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.inner.protocol_version()
    }

    fn is_closing(&self) -> bool {
        self.inner.is_closing()
    }

    fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }

    fn close(&mut self) -> Result<(), DtlsImplError> {
        self.inner.close()
    }
}

#[cfg(test)]
mod tests {
    //! Our SRTP against str0m's on the wire: two `Rtc`s in memory, a virtual clock, every
    //! datagram handed across by hand. One side publishes VP8; we decrypt what str0m sent
    //! with the learned keys, and str0m accepts what we protect.

    use std::net::SocketAddr;
    use std::time::Duration;

    use str0m::format::Codec;
    use str0m::media::{Direction, MediaKind, MediaTime, Mid};
    use str0m::net::{Protocol, Receive};
    use str0m::{Candidate, Event, Input, Output};

    use super::*;
    use crate::egress::is_rtcp;
    use crate::srtp::Context;

    struct Side {
        rtc: Rtc,
        keys: KeySlot,
        addr: SocketAddr,
        /// Datagrams this side sent, in order.
        sent: Vec<Vec<u8>>,
        events: Vec<Event>,
    }

    impl Side {
        fn new(config: RtcConfig, addr: &str, now: Instant) -> Side {
            let (mut rtc, keys) = build(config, now);
            let addr: SocketAddr = addr.parse().unwrap();
            rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
            Side {
                rtc,
                keys,
                addr,
                sent: Vec::new(),
                events: Vec::new(),
            }
        }

        /// Runs until str0m wants a timeout; returns the datagrams it sent meanwhile.
        fn drain(&mut self) -> Vec<Vec<u8>> {
            let mut out = Vec::new();
            loop {
                match self.rtc.poll_output().unwrap() {
                    Output::Transmit(t) => out.push(t.contents.to_vec()),
                    Output::Event(e) => self.events.push(e),
                    Output::Timeout(_) => break,
                }
            }
            self.sent.extend(out.iter().cloned());
            out
        }

        fn deliver(&mut self, from: SocketAddr, data: &[u8], now: Instant) {
            let r = Receive::new(Protocol::Udp, from, self.addr, data).unwrap();
            self.rtc.handle_input(Input::Receive(now, r)).unwrap();
        }
    }

    /// Steps both sides `ms` virtual milliseconds, handing every datagram across.
    fn run(a: &mut Side, b: &mut Side, now: &mut Instant, ms: u64) {
        for _ in 0..ms {
            *now += Duration::from_millis(1);
            a.rtc.handle_input(Input::Timeout(*now)).unwrap();
            b.rtc.handle_input(Input::Timeout(*now)).unwrap();
            for d in a.drain() {
                b.deliver(a.addr, &d, *now);
            }
            for d in b.drain() {
                a.deliver(b.addr, &d, *now);
            }
        }
    }

    fn is_rtp(d: &[u8]) -> bool {
        d.len() >= 12 && d[0] >> 6 == 2 && !is_rtcp(d)
    }

    /// A publishes one VP8 track to B (B in RTP mode, so it hands back each packet); also
    /// returns the track's mid and the SSRC str0m sends it on.
    fn connected() -> (Side, Side, Mid, u32, Instant) {
        let mut now = Instant::now();
        let mut a = Side::new(Rtc::builder(), "10.0.0.1:5000", now);
        let mut b = Side::new(Rtc::builder().set_rtp_mode(true), "10.0.0.2:6000", now);
        let mut api = a.rtc.sdp_api();
        let mid = api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
        let (offer, pending) = api.apply().unwrap();
        let answer = b.rtc.sdp_api().accept_offer(offer).unwrap();
        a.rtc.sdp_api().accept_answer(pending, answer).unwrap();
        run(&mut a, &mut b, &mut now, 300);
        assert!(a.events.iter().any(|e| matches!(e, Event::Connected)));
        assert!(b.events.iter().any(|e| matches!(e, Event::Connected)));
        let ssrc = *a
            .rtc
            .direct_api()
            .stream_tx_by_mid(mid, None)
            .unwrap()
            .ssrc();
        (a, b, mid, ssrc, now)
    }

    fn send_frame(a: &mut Side, mid: Mid, now: Instant, n: u32) {
        let w = a.rtc.writer(mid).unwrap();
        let pt = w
            .payload_params()
            .find(|p| p.spec().codec == Codec::Vp8)
            .unwrap()
            .pt();
        let mut frame = vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01];
        frame.extend_from_slice(b"switchboard-frame");
        w.write(pt, now, MediaTime::from_90khz(3000 * u64::from(n)), frame)
            .unwrap();
    }

    #[test]
    fn keys_match_on_both_sides() {
        let (a, b, _, _, _) = connected();
        let ka = a.keys.get().expect("A learned its keys");
        let kb = b.keys.get().expect("B learned its keys");
        assert_eq!(ka.profile, kb.profile);
        assert_eq!(ka.local.key, kb.remote.key);
        assert_eq!(ka.local.salt, kb.remote.salt);
        assert_eq!(ka.remote.key, kb.local.key);
        assert_ne!(ka.local.key, ka.remote.key);
    }

    #[test]
    fn we_decrypt_what_str0m_sent_and_str0m_accepts_what_we_protect() {
        let (mut a, mut b, mid, ssrc, mut now) = connected();
        let before = a.sent.len();
        send_frame(&mut a, mid, now, 1);
        run(&mut a, &mut b, &mut now, 20);
        let wire = a.sent[before..]
            .iter()
            .find(|d| is_rtp(d))
            .expect("A sent RTP")
            .clone();

        // str0m → us: the learned keys decrypt str0m's packet.
        let keys = a.keys.get().unwrap();
        let tx = Context::new(&keys.local).unwrap();
        let mut plain = wire.clone();
        tx.unprotect_rtp(&mut plain, 0).unwrap();
        assert_eq!(u32::from_be_bytes(plain[8..12].try_into().unwrap()), ssrc);
        assert!(plain.ends_with(b"switchboard-frame"));
        assert_eq!(plain.len() + keys.profile.rtp_overhead(), wire.len());
        // Protecting the plaintext again gives str0m's bytes exactly.
        let mut again = plain.clone();
        tx.protect_rtp(&mut again, 0).unwrap();
        assert_eq!(again, wire);

        // us → str0m: a packet we protect (new sequence number, new payload) is accepted.
        let seq = u16::from_be_bytes([plain[2], plain[3]]).wrapping_add(7);
        plain[2..4].copy_from_slice(&seq.to_be_bytes());
        plain.truncate(plain.len() - b"switchboard-frame".len());
        plain.extend_from_slice(b"our-own-egress!!!");
        plain[1] |= 0x80; // marker: a whole frame
        let mut ours = plain.clone();
        Context::new(&b.keys.get().unwrap().remote)
            .unwrap()
            .protect_rtp(&mut ours, 0)
            .unwrap();
        b.events.clear();
        b.deliver(a.addr, &ours, now);
        run(&mut a, &mut b, &mut now, 5);
        let got = b
            .events
            .iter()
            .find_map(|e| match e {
                Event::RtpPacket(p) if *p.seq_no % 65536 == u64::from(seq) => Some(p),
                _ => None,
            })
            .expect("str0m handed back the packet we protected");
        assert!(got.payload.ends_with(b"our-own-egress!!!"));
        assert_eq!(*got.header.ssrc, ssrc);
    }

    #[test]
    fn srtcp_both_ways() {
        let (mut a, mut b, mid, ssrc, mut now) = connected();
        let before = a.sent.len();
        for n in 1..=90 {
            send_frame(&mut a, mid, now, n);
            run(&mut a, &mut b, &mut now, 33);
        }
        // str0m → us: its sender report decrypts, and names the stream's SSRC.
        let tx = Context::new(&a.keys.get().unwrap().local).unwrap();
        let srs: Vec<Vec<u8>> = a.sent[before..]
            .iter()
            .filter(|d| is_rtcp(d))
            .filter_map(|d| {
                let mut p = d.clone();
                tx.unprotect_rtcp(&mut p).ok().map(|_| p)
            })
            .filter(|p| p[1] == 200)
            .collect();
        assert!(!srs.is_empty(), "no sender report from A in 3 s");
        assert_eq!(u32::from_be_bytes(srs[0][4..8].try_into().unwrap()), ssrc);

        // us → str0m: a PLI we protect as B makes A ask its app for a keyframe.
        let mut pli = vec![0x81, 206, 0, 2];
        pli.extend_from_slice(&0x5157_4954u32.to_be_bytes());
        pli.extend_from_slice(&ssrc.to_be_bytes());
        Context::new(&b.keys.get().unwrap().local)
            .unwrap()
            .protect_rtcp(&mut pli, 1_000_000)
            .unwrap();
        a.events.clear();
        a.deliver(b.addr, &pli, now);
        run(&mut a, &mut b, &mut now, 5);
        assert!(
            a.events
                .iter()
                .any(|e| matches!(e, Event::KeyframeRequest(r) if r.mid == mid)),
            "A did not take our PLI: {:?}",
            a.events
        );
    }
}
