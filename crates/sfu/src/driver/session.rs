//! One participant's session: its str0m `Rtc` and the state each concern keeps for it, how a
//! join builds it (ICE-lite, host candidates on the shared ports, the own egress's key slot)
//! and how a close frees everything it owned.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::bwe::Bitrate;
use str0m::media::{Mid, Rid};
use str0m::net::TcpType;
use str0m::{Candidate, Output, Rtc};
use tokio::sync::mpsc;

use super::data::Channels;
use super::demux::SessionRoutes;
use super::engine::Engine;
use super::forward::{OwnEgress, UpTracks};
use super::negotiation::{DownTracks, OfferState};
use super::SfuEvent;
use crate::core::ParticipantId;
use crate::egress::SessionEgress;
use crate::{SfuConfig, SfuError};

/// One participant's WebRTC session.
pub(super) struct Session {
    pub(super) identity: String,
    pub(super) room: String,
    pub(super) rtc: Rtc,
    /// The participant's event stream (its signaling connection).
    pub(super) events: mpsc::Sender<SfuEvent>,
    /// How its datagrams find it ([`super::demux`]).
    pub(super) routes: SessionRoutes,
    /// Tracks it publishes ([`super::forward`]).
    pub(super) up: UpTracks,
    /// Tracks it receives ([`super::negotiation`]).
    pub(super) down: DownTracks,
    pub(super) offer: OfferState,
    pub(super) channels: Channels,
    /// NACK counts str0m reported per sending stream, so the counter gets the increase.
    pub(super) nacks_seen: HashMap<(Mid, Option<Rid>), u64>,
    /// Queued for polling in this engine turn (see `Work::mark`).
    pub(super) dirty: bool,
    /// ICE and DTLS are up.
    pub(super) connected: bool,
    /// Media written into this session's `Rtc` and not yet polled out: earliest arrival, units.
    pub(super) fwd_since: Option<(Instant, u32)>,
    /// Our own egress (`[sfu] egress = "own"`).
    pub(super) own: Option<OwnEgress>,
}

/// str0m's SCTP message size limit for `[sfu] max_data_message_bytes` (at least 1 KiB).
fn sctp_max_message_size(max_data_message_bytes: usize) -> u32 {
    u32::try_from(max_data_message_bytes)
        .unwrap_or(u32::MAX)
        .max(1024)
}

/// str0m's starting bandwidth estimate; `None` (estimation off) for `bwe_initial_kbps = 0`.
fn initial_bitrate(bwe_initial_kbps: u64) -> Option<Bitrate> {
    (bwe_initial_kbps > 0).then(|| Bitrate::kbps(bwe_initial_kbps))
}

/// A session's `Rtc`: ICE-lite with host candidates on the shared UDP port and, if on, the
/// ICE-TCP port; with the own egress, built so its SRTP keys can be read.
fn build_rtc(
    cfg: &SfuConfig,
    local: SocketAddr,
    local_tcp: Option<SocketAddr>,
    now: Instant,
) -> Result<(Rtc, Option<SessionEgress>), SfuError> {
    let config = Rtc::builder()
        .set_ice_lite(true)
        .enable_bwe(initial_bitrate(cfg.bwe_initial_kbps))
        .set_stats_interval(Some(Duration::from_secs(1)))
        .set_sctp_max_message_size(sctp_max_message_size(cfg.max_data_message_bytes));
    let (mut rtc, egress) = if cfg.own_egress() {
        let (rtc, keys) = crate::keys::build(config, now);
        (rtc, Some(SessionEgress::new(keys)))
    } else {
        (config.build(now), None)
    };
    let cand = Candidate::host(local, "udp")
        .map_err(|e| SfuError::Config(format!("host candidate {local}: {e}")))?;
    rtc.add_local_candidate(cand);
    if let Some(tcp) = local_tcp {
        let cand = Candidate::builder()
            .tcp()
            .host(tcp)
            .tcptype(TcpType::Passive)
            .build()
            .map_err(|e| SfuError::Config(format!("tcp candidate {tcp}: {e}")))?;
        rtc.add_local_candidate(cand);
    }
    Ok((rtc, egress))
}

impl Engine {
    /// A new session for `identity` in `room`; an older session of the same identity in the
    /// room is closed first (reconnect).
    pub(super) fn join(
        &mut self,
        id: ParticipantId,
        room: String,
        identity: String,
        events: mpsc::Sender<SfuEvent>,
        now: Instant,
    ) -> Result<(), SfuError> {
        if let Some(old) = self
            .by_identity
            .get(&(room.clone(), identity.clone()))
            .copied()
        {
            self.close(old, "replaced");
        }
        if self.sessions.len() >= self.cfg.max_sessions {
            return Err(SfuError::Full(self.cfg.max_sessions));
        }
        let (mut rtc, egress) = build_rtc(&self.cfg, self.net.local, self.net.local_tcp, now)?;
        let ufrag = rtc.direct_api().local_ice_credentials().ufrag;
        let routes = self.demux.add_session(id, ufrag);
        self.by_identity
            .insert((room.clone(), identity.clone()), id);
        self.sessions.insert(
            id,
            Session {
                identity,
                room: room.clone(),
                rtc,
                events,
                routes,
                up: UpTracks::default(),
                down: DownTracks::default(),
                offer: OfferState::default(),
                channels: Channels::default(),
                nacks_seen: HashMap::new(),
                dirty: false,
                connected: false,
                fwd_since: None,
                own: egress.map(|egress| OwnEgress { egress, dest: None }),
            },
        );
        self.work.timers.schedule(id, now);
        self.metrics.sessions.set(self.sessions.len() as i64);
        let actions = self.rooms.join(&room, id);
        self.apply(actions);
        Ok(())
    }

    /// Frees everything that belongs to `id` and tells its handle why (unless it left).
    pub(super) fn close(&mut self, id: ParticipantId, reason: &'static str) {
        let Some(mut s) = self.sessions.remove(&id) else {
            return;
        };
        self.work.timers.remove(id);
        s.rtc.disconnect();
        // Flush what disconnect produced (DTLS close) so the peer learns quickly.
        while let Ok(out) = s.rtc.poll_output() {
            match out {
                Output::Transmit(t) => {
                    self.net.out.push_owned(t.contents.into(), t.destination);
                }
                Output::Timeout(_) => break,
                Output::Event(_) => {}
            }
        }
        self.demux.remove_session(&s.routes, id);
        let ik = (s.room.clone(), s.identity.clone());
        if self.by_identity.get(&ik) == Some(&id) {
            self.by_identity.remove(&ik);
        }
        if reason != "left" {
            let _ = s.events.try_send(SfuEvent::Closed { reason });
        }
        self.work.forget(id);
        self.net.tcp.close_session(id);
        let actions = self.rooms.leave(id);
        self.apply(actions);
        self.sync_gauges();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sctp_message_size_follows_the_config_with_a_floor() {
        assert_eq!(sctp_max_message_size(64 * 1024), 65_536);
        assert_eq!(sctp_max_message_size(10), 1024);
        assert_eq!(sctp_max_message_size(usize::MAX), u32::MAX);
    }

    #[test]
    fn estimation_is_off_at_zero() {
        assert_eq!(initial_bitrate(0), None);
        assert_eq!(initial_bitrate(10_000), Some(Bitrate::kbps(10_000)));
    }

    #[test]
    fn a_session_offers_host_candidates_on_the_shared_ports() {
        let udp: SocketAddr = "192.0.2.10:7882".parse().unwrap();
        let tcp: SocketAddr = "192.0.2.10:7881".parse().unwrap();
        let cfg = SfuConfig {
            egress: crate::Egress::Str0m,
            ..SfuConfig::default()
        };
        let (mut rtc, egress) = build_rtc(&cfg, udp, Some(tcp), Instant::now()).unwrap();
        assert!(egress.is_none());
        // Our side answers, so the candidates show in an answer to a minimal offer.
        let mut client = Rtc::new(Instant::now());
        let mut api = client.sdp_api();
        api.add_channel("c".into());
        let (offer, _) = api.apply().unwrap();
        let answer = rtc.sdp_api().accept_offer(offer).unwrap().to_sdp_string();
        assert!(answer.contains("a=ice-lite"), "{answer}");
        assert!(answer.contains("192.0.2.10 7882 typ host"), "{answer}");
        assert!(
            answer.contains("192.0.2.10 7881 typ host tcptype passive"),
            "{answer}"
        );
        let own = SfuConfig {
            egress: crate::Egress::Own,
            ..SfuConfig::default()
        };
        let (_, egress) = build_rtc(&own, udp, None, Instant::now()).unwrap();
        assert!(egress.is_some(), "own egress gets a key slot");
    }
}
