//! The SFU's own egress for forwarded media (decision 0047, `[sfu] egress = "own"`).
//!
//! With str0m's egress every forwarded frame is written into each subscriber's `Rtc`, which
//! packetizes it, caches it for retransmission, encrypts it and hands each datagram out through
//! one `poll_output` walk of ICE, DTLS, SCTP, streams and pacer. Here a down-track that takes
//! the own path gets the frame's RTP packets built and protected directly (keys learned from
//! str0m's handshake, [`crate::keys`]) on the SSRC str0m negotiated for it. str0m keeps
//! everything else: ICE, DTLS, data channels, RTCP it receives (PLI/FIR reach us as events)
//! and the RTCP it sends. Two places need help so the subscriber sees one coherent sender:
//! - **Sender reports.** str0m reports its own counters and the RTP time of the last media
//!   written to it, which for an own-path SSRC is none. [`SessionEgress::patch_outgoing_rtcp`]
//!   decrypts str0m's outgoing SRTCP and rewrites the SR of each own-path SSRC (RTP time from
//!   our last packet plus elapsed time, our packet and octet counts), then protects it again
//!   with the same SRTCP index. Only the rewritten packet is ever sent, so no nonce protects
//!   two different ciphertexts on the wire.
//! - **Retransmissions.** str0m's RTX cache has none of our packets. Each own track keeps its
//!   last [`HISTORY`] protected packets ([`HISTORY_AUDIO`] for audio); [`SessionEgress::on_incoming_rtcp`] reads the
//!   subscriber's generic NACKs (decrypting a copy of its SRTCP) and sends the named packets
//!   again. Where the subscriber negotiated RTX for the track (RFC 4588: an RTX SSRC and
//!   payload type, as Chromium always does for video), the resend is an RTX packet on the RTX
//!   SSRC with its own sequence numbers, carrying the original sequence number and payload, so
//!   the receiver's loss and jitter statistics of the media stream stay clean. Otherwise the
//!   protected packet is sent again unchanged on the media SSRC (the receiver never saw that
//!   index, so it accepts it; no second encryption with the same nonce). Bounded: once per
//!   packet per 20 ms, 64 per RTCP datagram, 512 per track per second.
//!
//! Codecs: VP8 (RFC 7741 payload descriptor with a 15-bit picture ID per down-track) and Opus
//! (one packet per frame). Anything else stays on str0m's path. The choice is made once per
//! down-track, at its first frame, because the two paths cannot share an SSRC's sequence
//! numbers.

use std::collections::HashMap;
use std::time::Instant;

use crate::keys::KeySlot;
use crate::srtp::{Context, SrtpError};

/// Protected packets kept per own video track for retransmission (≈ 1.7 s of 1.2 Mbit/s
/// video; str0m keeps 1,000 by default).
pub const HISTORY: usize = 256;
/// The same for audio (1 s of 20 ms Opus packets, as str0m keeps).
pub const HISTORY_AUDIO: usize = 50;
/// Largest codec payload per RTP packet (VP8 descriptor included); with the 12-byte header
/// and a 16-byte tag a datagram stays under 1,200 bytes.
pub const MAX_PAYLOAD: usize = 1_150;
/// A packet is resent at most once per this many milliseconds, however many NACKs name it.
const RESEND_GUARD_MS: u64 = 20;
/// Retransmissions one incoming RTCP datagram can trigger.
const MAX_RESENDS_PER_RTCP: usize = 64;
/// Retransmissions one track sends per second at most, however many NACKs arrive (a
/// subscriber asking for everything again and again costs the engine at most this).
const MAX_RESENDS_PER_SECOND: u32 = 512;

/// Codecs the own path packetizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnCodec {
    /// RFC 7741.
    Vp8,
    /// RFC 7587: one frame, one packet.
    Opus,
}

/// A packet kept for retransmission.
#[derive(Debug)]
struct Kept {
    seq: u16,
    /// Rollover counter it was protected with.
    roc: u32,
    /// The protected datagram (empty: slot unused).
    bytes: Vec<u8>,
    /// When it was last sent again.
    resent_at: Option<Instant>,
}

/// The RTX stream (RFC 4588) of an own track: where its retransmissions go.
#[derive(Debug)]
struct Rtx {
    ssrc: u32,
    pt: u8,
    seq: u16,
    roc: u32,
}

/// One down-track on the own path.
#[derive(Debug)]
pub struct OwnTrack {
    ssrc: u32,
    pt: u8,
    codec: OwnCodec,
    clock_hz: u32,
    seq: u16,
    roc: u32,
    picture_id: u16,
    last_rtp: u32,
    last_at: Option<Instant>,
    packets: u32,
    octets: u32,
    /// Ring of the last protected packets.
    history: Vec<Kept>,
    /// Ring size: [`HISTORY`] or [`HISTORY_AUDIO`].
    keep: usize,
    next: usize,
    /// Resend budget: start of the current one-second window and resends in it.
    resend_window: Option<(Instant, u32)>,
    /// RTX stream, when the subscriber negotiated one for this track.
    rtx: Option<Rtx>,
}

impl OwnTrack {
    /// A track sending `codec` with payload type `pt` on `ssrc` (the SSRC str0m negotiated
    /// for the down-track), starting at sequence number `first_seq`.
    pub fn new(ssrc: u32, pt: u8, codec: OwnCodec, clock_hz: u32, first_seq: u16) -> OwnTrack {
        OwnTrack {
            ssrc,
            pt,
            codec,
            clock_hz,
            seq: first_seq,
            roc: 0,
            picture_id: first_seq & 0x7fff,
            last_rtp: 0,
            last_at: None,
            packets: 0,
            octets: 0,
            history: Vec::new(),
            keep: match codec {
                OwnCodec::Vp8 => HISTORY,
                OwnCodec::Opus => HISTORY_AUDIO,
            },
            next: 0,
            resend_window: None,
            rtx: None,
        }
    }

    /// Retransmissions go out as RFC 4588 RTX packets with payload type `pt` on `ssrc` (the
    /// RTX SSRC and payload type str0m negotiated for the down-track).
    pub fn with_rtx(mut self, ssrc: u32, pt: u8) -> OwnTrack {
        // Its own start, like the media stream's.
        let seq = (self.seq ^ ssrc as u16).rotate_left(7);
        self.rtx = Some(Rtx {
            ssrc,
            pt,
            seq,
            roc: 0,
        });
        self
    }

    /// The SSRC this track sends on.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }
}

/// A subscriber session's own egress: its SRTP contexts and own-path tracks.
#[derive(Debug)]
pub struct SessionEgress {
    keys: KeySlot,
    /// (our direction, the subscriber's direction), once the handshake produced keys.
    ctx: Option<(Context, Context)>,
    tracks: HashMap<u32, OwnTrack>,
    /// Where RTX packets are built (reused).
    rtx_buf: Vec<u8>,
}

/// What one frame or one NACK produced, for metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// Datagrams handed to `emit`.
    pub datagrams: usize,
    /// Payload bytes in them.
    pub bytes: usize,
}

impl SessionEgress {
    /// Egress for the session whose keys land in `keys`.
    pub fn new(keys: KeySlot) -> SessionEgress {
        SessionEgress {
            keys,
            ctx: None,
            tracks: HashMap::new(),
            rtx_buf: Vec::new(),
        }
    }

    /// Whether the handshake has produced keys (built on first call after it has).
    pub fn ready(&mut self) -> bool {
        if self.ctx.is_none() {
            if let Some(k) = self.keys.get() {
                match (Context::new(&k.local), Context::new(&k.remote)) {
                    (Ok(tx), Ok(rx)) => self.ctx = Some((tx, rx)),
                    _ => tracing::warn!("SRTP keys unusable; egress stays with str0m"),
                }
            }
        }
        self.ctx.is_some()
    }

    /// Starts sending `track` on the own path.
    pub fn add_track(&mut self, track: OwnTrack) {
        self.tracks.insert(track.ssrc, track);
    }

    /// Stops the own-path track on `ssrc` (its down-track ended).
    pub fn remove_track(&mut self, ssrc: u32) {
        self.tracks.remove(&ssrc);
    }

    /// Own-path tracks.
    pub fn track_count(&self) -> usize {
        self.tracks.len()
    }

    /// Packetizes and protects one frame for the track on `ssrc`; each datagram goes to
    /// `emit`. `rtp_time` is the frame's RTP timestamp in the track's clock.
    pub fn write_frame(
        &mut self,
        ssrc: u32,
        frame: &[u8],
        rtp_time: u32,
        now: Instant,
        mut emit: impl FnMut(&[u8]),
    ) -> Result<Sent, SrtpError> {
        let Some((tx, _)) = &self.ctx else {
            return Ok(Sent::default());
        };
        let Some(t) = self.tracks.get_mut(&ssrc) else {
            return Ok(Sent::default());
        };
        let mut sent = Sent::default();
        let (descriptor, room) = match t.codec {
            OwnCodec::Vp8 => (4, MAX_PAYLOAD - 4),
            OwnCodec::Opus => (0, MAX_PAYLOAD),
        };
        // Equal chunks (the last one may be shorter), so one subscriber's packets of a frame
        // leave as one GSO message.
        let n = frame.len().div_ceil(room).max(1);
        let chunk = frame.len().div_ceil(n).max(1);
        let mut chunks = frame.chunks(chunk).peekable();
        let mut first = true;
        while let Some(c) = chunks.next() {
            let last = chunks.peek().is_none();
            // Built and protected in the history slot it is kept in for retransmission.
            if t.history.len() < t.keep {
                t.history.push(Kept {
                    seq: t.seq,
                    roc: t.roc,
                    bytes: Vec::with_capacity(MAX_PAYLOAD + 64),
                    resent_at: None,
                });
                t.next = t.history.len() - 1;
            }
            let slot = &mut t.history[t.next];
            slot.seq = t.seq;
            slot.roc = t.roc;
            slot.resent_at = None;
            let b = &mut slot.bytes;
            b.clear();
            let marker = if last && t.codec == OwnCodec::Vp8 {
                0x80
            } else {
                0
            };
            b.extend_from_slice(&[0x80, marker | (t.pt & 0x7f)]);
            b.extend_from_slice(&t.seq.to_be_bytes());
            b.extend_from_slice(&rtp_time.to_be_bytes());
            b.extend_from_slice(&t.ssrc.to_be_bytes());
            if descriptor > 0 {
                // X, S on the first packet of the frame, partition 0; I; M + 15-bit picture ID.
                let pid = t.picture_id;
                b.extend_from_slice(&[
                    if first { 0x90 } else { 0x80 },
                    0x80,
                    0x80 | (pid >> 8) as u8,
                    pid as u8,
                ]);
            }
            b.extend_from_slice(c);
            if let Err(e) = tx.protect_rtp(b, t.roc) {
                // Not kept: the slot is overwritten by the next packet.
                b.clear();
                return Err(e);
            }
            emit(b);
            sent.datagrams += 1;
            sent.bytes += descriptor + c.len();
            t.next = (t.next + 1) % t.keep;
            t.seq = t.seq.wrapping_add(1);
            if t.seq == 0 {
                t.roc = t.roc.wrapping_add(1);
            }
            first = false;
        }
        t.picture_id = (t.picture_id + 1) & 0x7fff;
        t.last_rtp = rtp_time;
        t.last_at = Some(now);
        t.packets = t.packets.wrapping_add(sent.datagrams as u32);
        t.octets = t.octets.wrapping_add(sent.bytes as u32);
        Ok(sent)
    }

    /// Rewrites, in place, the sender reports for own-path SSRCs in an SRTCP datagram str0m
    /// is about to send to this subscriber. Anything else (and anything that does not
    /// authenticate) is left as it is. Returns whether a report was rewritten.
    pub fn patch_outgoing_rtcp(&self, datagram: &mut Vec<u8>, now: Instant) -> bool {
        let Some((tx, _)) = &self.ctx else {
            return false;
        };
        if self.tracks.is_empty() || !is_rtcp(datagram) {
            return false;
        }
        let mut plain = datagram.clone();
        let Ok(index) = tx.unprotect_rtcp(&mut plain) else {
            return false;
        };
        let mut changed = false;
        let mut at = 0;
        while let Some((pt, _, len)) = rtcp_packet(&plain[at..]) {
            if pt == 200 && len >= 28 {
                let ssrc = be_u32(&plain[at + 4..]);
                if let Some(t) = self.tracks.get(&ssrc) {
                    if let Some(last_at) = t.last_at {
                        let elapsed = now.saturating_duration_since(last_at);
                        let ticks = (elapsed.as_secs_f64() * f64::from(t.clock_hz)) as u64;
                        let rtp = t.last_rtp.wrapping_add(ticks as u32);
                        plain[at + 16..at + 20].copy_from_slice(&rtp.to_be_bytes());
                        plain[at + 20..at + 24].copy_from_slice(&t.packets.to_be_bytes());
                        plain[at + 24..at + 28].copy_from_slice(&t.octets.to_be_bytes());
                        changed = true;
                    }
                }
            }
            at += len;
        }
        if changed && tx.protect_rtcp(&mut plain, index).is_ok() {
            *datagram = plain;
            return true;
        }
        false
    }

    /// Reads the generic NACKs (RFC 4585 §6.2.1) for own-path SSRCs in an SRTCP datagram from
    /// this subscriber and hands the named packets to `emit` again. The datagram itself is
    /// not changed; str0m still gets it.
    pub fn on_incoming_rtcp(
        &mut self,
        datagram: &[u8],
        now: Instant,
        mut emit: impl FnMut(&[u8]),
    ) -> Sent {
        let mut sent = Sent::default();
        let Some((tx, rx)) = &self.ctx else {
            return sent;
        };
        if self.tracks.is_empty() || !is_rtcp(datagram) {
            return sent;
        }
        let mut plain = datagram.to_vec();
        if rx.unprotect_rtcp(&mut plain).is_err() {
            return sent;
        }
        let mut at = 0;
        while let Some((pt, fmt, len)) = rtcp_packet(&plain[at..]) {
            if pt == 205 && fmt == 1 && len >= 12 {
                let media = be_u32(&plain[at + 8..]);
                if let Some(t) = self.tracks.get_mut(&media) {
                    for fci in plain[at + 12..at + len].chunks_exact(4) {
                        let pid = u16::from_be_bytes([fci[0], fci[1]]);
                        let blp = u16::from_be_bytes([fci[2], fci[3]]);
                        for bit in 0..17u16 {
                            if bit > 0 && blp & (1 << (bit - 1)) == 0 {
                                continue;
                            }
                            if sent.datagrams >= MAX_RESENDS_PER_RTCP {
                                return sent;
                            }
                            let seq = pid.wrapping_add(bit);
                            let found = t
                                .history
                                .iter_mut()
                                .find(|s| s.seq == seq && !s.bytes.is_empty());
                            if let Some(slot) = found {
                                let recent = slot.resent_at.is_some_and(|at| {
                                    now.saturating_duration_since(at).as_millis()
                                        < u128::from(RESEND_GUARD_MS)
                                });
                                let window = t.resend_window.get_or_insert((now, 0));
                                if now.saturating_duration_since(window.0).as_secs() >= 1 {
                                    *window = (now, 0);
                                }
                                if window.1 >= MAX_RESENDS_PER_SECOND {
                                    return sent;
                                }
                                if !recent {
                                    window.1 += 1;
                                    slot.resent_at = Some(now);
                                    let out = match t.rtx.as_mut() {
                                        Some(rtx) => {
                                            if rtx_packet(tx, rtx, slot, &mut self.rtx_buf).is_err()
                                            {
                                                continue;
                                            }
                                            &self.rtx_buf
                                        }
                                        None => &slot.bytes,
                                    };
                                    emit(out);
                                    sent.datagrams += 1;
                                    sent.bytes += out.len();
                                }
                            }
                        }
                    }
                }
            }
            at += len;
        }
        sent
    }
}

/// Builds in `out` the RFC 4588 retransmission of the kept packet `slot` on the RTX stream: the
/// packet decrypted, its payload type, sequence number and SSRC replaced by the RTX stream's,
/// the original sequence number (OSN) in front of the payload, protected again with the RTX
/// stream's own index (so no nonce is used twice).
fn rtx_packet(
    tx: &Context,
    rtx: &mut Rtx,
    slot: &Kept,
    out: &mut Vec<u8>,
) -> Result<(), SrtpError> {
    out.clear();
    out.extend_from_slice(&slot.bytes);
    tx.unprotect_rtp(out, slot.roc)?;
    // Our packets have a 12-byte header: no CSRCs, no extensions (see `write_frame`).
    if out.len() < 12 {
        return Err(SrtpError::TooShort);
    }
    out[1] = (out[1] & 0x80) | (rtx.pt & 0x7f);
    out[2..4].copy_from_slice(&rtx.seq.to_be_bytes());
    out[8..12].copy_from_slice(&rtx.ssrc.to_be_bytes());
    out.splice(12..12, slot.seq.to_be_bytes());
    tx.protect_rtp(out, rtx.roc)?;
    rtx.seq = rtx.seq.wrapping_add(1);
    if rtx.seq == 0 {
        rtx.roc = rtx.roc.wrapping_add(1);
    }
    Ok(())
}

/// RTP/RTCP over one port (RFC 5761 §4): RTCP has packet types 192–223 in the second byte.
pub fn is_rtcp(d: &[u8]) -> bool {
    d.len() >= 8 && d[0] >> 6 == 2 && (192..=223).contains(&d[1])
}

/// The packet at the start of a (decrypted) compound RTCP datagram: (packet type, count/FMT,
/// length in bytes), or `None` at the end or on a malformed length.
fn rtcp_packet(d: &[u8]) -> Option<(u8, u8, usize)> {
    if d.len() < 4 || d[0] >> 6 != 2 {
        return None;
    }
    let len = (usize::from(u16::from_be_bytes([d[2], d[3]])) + 1) * 4;
    (len <= d.len()).then_some((d[1], d[0] & 0x1f, len))
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::keys::SessionKeys;
    use crate::srtp::{MasterKey, Profile};

    fn keys() -> (KeySlot, Context, Context) {
        let p = Profile::AeadAes128Gcm;
        let mk = |b: u8| MasterKey {
            profile: p,
            key: vec![b; 16],
            salt: vec![b ^ 0xff; 12],
        };
        let slot = KeySlot::default();
        slot.set(SessionKeys {
            profile: p,
            local: mk(1),
            remote: mk(2),
        });
        // What the subscriber uses: our local key to read, its own to write.
        (
            slot,
            Context::new(&mk(1)).unwrap(),
            Context::new(&mk(2)).unwrap(),
        )
    }

    fn egress() -> (SessionEgress, Context, Context) {
        let (slot, ours, theirs) = keys();
        let mut e = SessionEgress::new(slot);
        assert!(e.ready());
        e.add_track(OwnTrack::new(0xabc, 96, OwnCodec::Vp8, 90_000, 65_534));
        (e, ours, theirs)
    }

    #[test]
    fn a_vp8_frame_becomes_equal_packets_with_descriptor_marker_and_sequence() {
        let (mut e, ours, _) = egress();
        let frame: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        let mut out = Vec::new();
        let now = Instant::now();
        let s = e
            .write_frame(0xabc, &frame, 9000, now, |d| out.push(d.to_vec()))
            .unwrap();
        assert_eq!(s.datagrams, 3);
        let mut payload = Vec::new();
        for (i, d) in out.iter().enumerate() {
            let mut p = d.clone();
            // The third packet wrapped the sequence number: rollover counter 1.
            let roc = u32::from(i == 2);
            ours.unprotect_rtp(&mut p, roc).unwrap();
            assert_eq!(
                u16::from_be_bytes([p[2], p[3]]),
                65_534u16.wrapping_add(i as u16)
            );
            assert_eq!(be_u32(&p[4..]), 9000);
            assert_eq!(be_u32(&p[8..]), 0xabc);
            assert_eq!(p[1] & 0x80 != 0, i == 2, "marker on the last packet only");
            assert_eq!(
                p[12],
                if i == 0 { 0x90 } else { 0x80 },
                "S bit on the first"
            );
            assert_eq!(u16::from_be_bytes([p[14] & 0x7f, p[15]]), 65_534 & 0x7fff);
            payload.extend_from_slice(&p[16..]);
        }
        assert_eq!(payload, frame);
        assert_eq!(out[0].len(), out[1].len());
        // The next frame has the next picture ID and continues the sequence.
        out.clear();
        e.write_frame(0xabc, &[1, 2, 3], 12_000, now, |d| out.push(d.to_vec()))
            .unwrap();
        let mut p = out[0].clone();
        ours.unprotect_rtp(&mut p, 1).unwrap();
        assert_eq!(u16::from_be_bytes([p[2], p[3]]), 1);
        assert_eq!(u16::from_be_bytes([p[14] & 0x7f, p[15]]), 0x7fff);
    }

    #[test]
    fn history_is_bounded_per_codec() {
        let (mut e, _, _) = egress();
        e.add_track(OwnTrack::new(0xa0d, 111, OwnCodec::Opus, 48_000, 1));
        let now = Instant::now();
        for f in 0..600u32 {
            e.write_frame(0xa0d, &[3; 100], f * 960, now, |_| {})
                .unwrap();
            e.write_frame(0xabc, &[7; 100], f * 3000, now, |_| {})
                .unwrap();
        }
        assert_eq!(e.tracks[&0xa0d].history.len(), HISTORY_AUDIO);
        assert_eq!(e.tracks[&0xabc].history.len(), HISTORY);
        // The newest packets are the ones kept.
        let newest = |t: &OwnTrack| t.history.iter().map(|s| s.seq).max().unwrap();
        assert_eq!(newest(&e.tracks[&0xa0d]), 600);
    }

    #[test]
    fn nacked_packets_are_resent_unchanged_once_per_guard() {
        let (mut e, _, theirs) = egress();
        let mut out = Vec::new();
        let now = Instant::now();
        for f in 0..4u32 {
            e.write_frame(0xabc, &[7; 2000], f * 3000, now, |d| out.push(d.to_vec()))
                .unwrap();
        }
        // NACK seq 65535 (PID) and 65535+2 = 1 (BLP bit 1), plus one we never sent.
        let mut nack = vec![0x81, 205, 0, 4, 0, 0, 0, 9];
        nack.extend_from_slice(&0xabcu32.to_be_bytes());
        nack.extend_from_slice(&[0xff, 0xff, 0x00, 0x02]);
        nack.extend_from_slice(&[0x30, 0x39, 0x00, 0x00]);
        theirs.protect_rtcp(&mut nack, 5).unwrap();
        let mut again = Vec::new();
        let s = e.on_incoming_rtcp(&nack, now, |d| again.push(d.to_vec()));
        assert_eq!(s.datagrams, 2);
        assert_eq!(again[0], out[1]);
        assert_eq!(again[1], out[3]);
        // The same NACK right away resends nothing; after the guard it does.
        assert_eq!(e.on_incoming_rtcp(&nack, now, |_| ()).datagrams, 0);
        let later = now + Duration::from_millis(RESEND_GUARD_MS + 1);
        assert_eq!(e.on_incoming_rtcp(&nack, later, |_| ()).datagrams, 2);
        // A NACK that does not authenticate does nothing.
        let mut forged = nack.clone();
        forged[10] ^= 1;
        assert_eq!(e.on_incoming_rtcp(&forged, later, |_| ()).datagrams, 0);
    }

    #[test]
    fn with_rtx_a_nacked_packet_is_resent_as_rfc4588_rtx() {
        let (slot, ours, theirs) = keys();
        let mut e = SessionEgress::new(slot);
        assert!(e.ready());
        e.add_track(OwnTrack::new(0xabc, 96, OwnCodec::Vp8, 90_000, 65_534).with_rtx(0xdef, 97));
        let mut out = Vec::new();
        let now = Instant::now();
        for f in 0..4u32 {
            e.write_frame(0xabc, &[f as u8; 2000], f * 3000, now, |d| {
                out.push(d.to_vec())
            })
            .unwrap();
        }
        // NACK 65535 and 1 (the second after the media stream's rollover).
        let mut nack = vec![0x81, 205, 0, 3, 0, 0, 0, 9];
        nack.extend_from_slice(&0xabcu32.to_be_bytes());
        nack.extend_from_slice(&[0xff, 0xff, 0x00, 0x02]);
        theirs.protect_rtcp(&mut nack, 1).unwrap();
        let mut again = Vec::new();
        let s = e.on_incoming_rtcp(&nack, now, |d| again.push(d.to_vec()));
        assert_eq!(s.datagrams, 2);
        let mut rtx_seqs = Vec::new();
        for (d, (orig, orig_roc)) in again.iter().zip([(&out[1], 0), (&out[3], 1)]) {
            let mut r = d.clone();
            ours.unprotect_rtp(&mut r, 0).unwrap();
            let mut o = orig.clone();
            ours.unprotect_rtp(&mut o, orig_roc).unwrap();
            assert_eq!(r[1] & 0x7f, 97, "RTX payload type");
            assert_eq!(r[1] & 0x80, o[1] & 0x80, "marker kept");
            assert_eq!(be_u32(&r[8..]), 0xdef, "RTX SSRC");
            assert_eq!(be_u32(&r[4..]), be_u32(&o[4..]), "timestamp kept");
            assert_eq!(&r[12..14], &o[2..4], "original sequence number first");
            assert_eq!(&r[14..], &o[12..], "then the original payload");
            rtx_seqs.push(u16::from_be_bytes([r[2], r[3]]));
        }
        assert_eq!(rtx_seqs[1], rtx_seqs[0].wrapping_add(1), "own RTX sequence");
        // Nothing was encrypted twice under one index: the RTX packets differ from the kept ones.
        assert_ne!(again[0], out[1]);
    }

    #[test]
    fn a_track_resends_at_most_its_budget_per_second() {
        let (mut e, _, theirs) = egress();
        let now = Instant::now();
        for f in 0..100u32 {
            e.write_frame(0xabc, &[7; 3000], f * 3000, now, |_| ())
                .unwrap();
        }
        // NACKs for 17 packets each (PID + all 16 BLP bits), over the whole history.
        let mut nack = vec![0x81, 205, 0, 0, 0, 0, 0, 9];
        nack.extend_from_slice(&0xabcu32.to_be_bytes());
        for i in 0..15u16 {
            nack.extend_from_slice(&65_534u16.wrapping_add(i * 17).to_be_bytes());
            nack.extend_from_slice(&[0xff, 0xff]);
        }
        let words = (nack.len() / 4 - 1) as u16;
        nack[2..4].copy_from_slice(&words.to_be_bytes());
        theirs.protect_rtcp(&mut nack, 1).unwrap();
        let mut total = 0;
        let mut t = now;
        for _ in 0..40 {
            t += Duration::from_millis(RESEND_GUARD_MS + 1);
            total += e.on_incoming_rtcp(&nack, t, |_| ()).datagrams;
        }
        // 40 rounds in ≈ 0.84 s: without the budget 40 × 64 = 2,560 resends.
        assert_eq!(total, MAX_RESENDS_PER_SECOND as usize);
        // A new second, a new budget.
        t += Duration::from_secs(1);
        assert_eq!(e.on_incoming_rtcp(&nack, t, |_| ()).datagrams, 64);
    }

    #[test]
    fn str0m_sender_reports_for_own_tracks_carry_our_time_and_counts() {
        let (mut e, ours, _) = egress();
        let now = Instant::now();
        e.write_frame(0xabc, &[7; 100], 90_000, now, |_| ())
            .unwrap();
        // An SR for the own track followed by one for another SSRC, as str0m would send.
        let sr = |ssrc: u32| {
            let mut p = vec![0x80, 200, 0, 6];
            p.extend_from_slice(&ssrc.to_be_bytes());
            p.extend_from_slice(&[0xee; 8]); // NTP
            p.extend_from_slice(&[0; 12]); // RTP time, packets, octets
            p
        };
        let mut d = sr(0xabc);
        d.extend_from_slice(&sr(0xdef));
        let plain = d.clone();
        ours.protect_rtcp(&mut d, 77).unwrap();
        assert!(e.patch_outgoing_rtcp(&mut d, now + Duration::from_millis(500)));
        let mut p = d.clone();
        assert_eq!(ours.unprotect_rtcp(&mut p).unwrap(), 77);
        assert_eq!(be_u32(&p[16..]), 90_000 + 45_000);
        assert_eq!(be_u32(&p[20..]), 1);
        assert_eq!(be_u32(&p[24..]), 104);
        assert_eq!(
            &p[28..],
            &plain[28..],
            "the other SSRC's report is untouched"
        );
    }

    #[test]
    fn hostile_rtcp_never_panics() {
        let (mut e, ours, theirs) = egress();
        e.write_frame(0xabc, &[7; 100], 1, Instant::now(), |_| ())
            .unwrap();
        for len in 0..80usize {
            for fill in [0u8, 0x80, 0xff] {
                let mut p = vec![fill; len];
                if len > 1 {
                    p[0] = 0x81;
                    p[1] = 205;
                }
                let mut a = p.clone();
                let _ = theirs.protect_rtcp(&mut a, 1);
                e.on_incoming_rtcp(&a, Instant::now(), |_| ());
                let mut b = p.clone();
                let _ = ours.protect_rtcp(&mut b, 1);
                e.patch_outgoing_rtcp(&mut b, Instant::now());
                e.on_incoming_rtcp(&p, Instant::now(), |_| ());
            }
        }
    }
}
