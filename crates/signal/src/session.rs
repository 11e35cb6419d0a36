//! What a connection asks of signaling after its ticket was checked: a resume with a resume
//! token, and each parsed message (join, relay, `rtt_report`, ...), with the per-connection
//! message rate limit and the per-IP join limit applied for every transport.

use crate::hub::{self, JoinError, JoinInfo, RoomMode};
use crate::protocol::ClientMessage;
use crate::{Conn, ConnId, ConnState, Inner, Verdict};
use serde_json::Value;
use std::time::Instant;

impl Inner {
    pub(crate) fn ice_info(&self, identity: &str, host: Option<&str>) -> JoinInfo {
        let doc = (self.ice)(identity, host);
        JoinInfo {
            ice_servers: doc
                .get("iceServers")
                .cloned()
                .unwrap_or(Value::Array(vec![])),
            ice_ttl: doc.get("ttl").and_then(Value::as_u64).unwrap_or(0),
            requested_mode: None,
            sfu_capable: false,
            nodes: self.cluster.as_ref().map(|c| c.nodes()).unwrap_or_default(),
        }
    }

    /// Re-attaches a session with a resume token (the credential for a resumed connection).
    pub(crate) async fn resume(
        &self,
        conn: &Conn,
        st: &mut ConnState,
        token: &str,
        last_seq: u64,
    ) -> bool {
        // ICE credentials are for the session's identity; look it up first.
        let info = match self.with_hub(|h| h.resume_identity(token)) {
            Some(id) => self.ice_info(&id, st.caller.host.as_deref()),
            None => {
                if let Some(bus) = self.cluster.clone() {
                    if let Some(rec) = bus.orphaned_session(token).await {
                        return self.adopt(conn, st, bus, rec, last_seq).await;
                    }
                }
                JoinInfo::default()
            }
        };
        let mut core = self.core.lock();
        let r = core.hub.resume(conn.id, token, last_seq, info);
        match r {
            Ok(identity) => {
                self.metrics
                    .resumes
                    .get_or_create(&[("result", "ok")])
                    .inc();
                st.caller.identity = Some(identity);
                self.apply(&mut core);
                true
            }
            Err(e) => {
                self.metrics
                    .resumes
                    .get_or_create(&[("result", e.code())])
                    .inc();
                self.apply(&mut core);
                drop(core);
                self.send_error(conn.id, e.code(), e.to_string());
                false
            }
        }
    }

    /// Handles one parsed client message. Rate limits apply here, for every transport.
    pub(crate) async fn handle(
        &self,
        conn: &Conn,
        st: &mut ConnState,
        msg: ClientMessage,
    ) -> Verdict {
        let now = Instant::now();
        let rate = f64::from(self.settings.messages_per_second.max(1));
        st.bucket = (st.bucket + now.duration_since(st.last).as_secs_f64() * rate).min(rate * 2.0);
        st.last = now;
        if st.bucket < 1.0 {
            st.violations += 1;
            if st.violations > 50 {
                self.metrics.close("rate_limited");
                return Verdict::Close(
                    hub::close::RATE_LIMITED,
                    "message rate limit exceeded repeatedly",
                );
            }
            self.send_error(
                conn.id,
                "rate_limited",
                format!(
                    "more than {} messages per second; message dropped",
                    rate as u32
                ),
            );
            return Verdict::Continue;
        }
        st.bucket -= 1.0;
        self.metrics
            .messages
            .get_or_create(&[("type", msg.kind())])
            .inc();
        match msg {
            ClientMessage::Join {
                room_id,
                peer_id,
                mode,
                sfu_capable,
            } => {
                let Some(identity) = st.caller.identity.clone() else {
                    self.send_error(
                        conn.id,
                        "not_joined",
                        "resumed connections cannot join".into(),
                    );
                    return Verdict::Continue;
                };
                if self.joins_per_ip.check(&conn.ip, now).is_err() {
                    self.send_error(
                        conn.id,
                        "join_rate_limited",
                        "too many joins from your address; retry shortly".into(),
                    );
                    return Verdict::Continue;
                }
                let mut info = self.ice_info(&identity, st.caller.host.as_deref());
                info.requested_mode = match mode.as_deref() {
                    Some("sfu") => Some(RoomMode::Sfu),
                    Some("mesh") => Some(RoomMode::Mesh),
                    _ => None,
                };
                info.sfu_capable = sfu_capable || info.requested_mode == Some(RoomMode::Sfu);
                if self.cluster.is_some() {
                    self.join_clustered(
                        conn,
                        &identity,
                        &room_id,
                        peer_id.as_deref(),
                        &st.caller.clone(),
                        info,
                    )
                    .await;
                    return Verdict::Continue;
                }
                let r = {
                    let mut core = self.core.lock();
                    let r = core.hub.join(
                        conn.id,
                        &identity,
                        &room_id,
                        peer_id.as_deref(),
                        st.caller.room.as_deref(),
                        info,
                    );
                    self.apply(&mut core);
                    r
                };
                if let Err(e) = r {
                    self.send_join_error(conn.id, e);
                }
            }
            ClientMessage::RttReport { rtt_ms } => {
                for ms in rtt_ms {
                    if ms.is_finite() && (0.0..=60_000.0).contains(&ms) {
                        self.metrics.client_rtt.observe(ms / 1000.0);
                    }
                }
            }
            other => self.with_hub(|h| h.message(conn.id, other)),
        }
        Verdict::Continue
    }

    pub(crate) fn send_join_error(&self, conn: ConnId, e: JoinError) {
        self.send_error(conn, e.code(), e.to_string());
    }
}
