//! Switchboard's SFU: server-side WebRTC (str0m) that forwards media and relays data.
//!
//! Data flow: every participant has one str0m `Rtc` inside a single engine task ([`driver`]).
//! All sessions share one UDP socket (and one ICE-TCP listener, [`tcp`]); a datagram is routed
//! to its session by the ICE ufrag in a STUN USERNAME ([`wire`]) and afterwards by its source
//! address (or TCP connection). Media and data events from a session go through the sans-IO
//! room logic ([`core`]), which decides who receives what (layer, keyframe waits, mute, bounded
//! data queues); the engine then writes into the subscribers' `Rtc`s, or packetizes and
//! protects VP8 and Opus itself ([`egress`], [`srtp`]), and sends their datagrams.
//!
//! Signaling talks to the SFU only through [`Sfu::join`] and the returned [`ParticipantHandle`]
//! (offer/answer/candidates in, [`SfuEvent`]s out).
//!
//! Two modules exist only for tests and tools, behind features so the server binary does not
//! carry them: `fuzzing` (feature `fuzzing`: the fuzz targets' entry points) and `peer`
//! (feature `test-peer`: a str0m client playing the browser, for integration tests and
//! `bench/sfu-load`).

pub mod core;
pub mod driver;
pub mod egress;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod keys;
pub mod metrics;
#[cfg(any(test, feature = "test-peer"))]
pub mod peer;
pub mod retime;
pub mod srtp;
pub mod tcp;
pub mod timers;
pub mod wire;

use serde::{Deserialize, Serialize};

pub use driver::{validate_config, ParticipantHandle, Sfu, SfuCounts, SfuEvent};

impl SfuConfig {
    /// Whether forwarded media leaves through the SFU's own egress (`egress`, resolved).
    pub fn own_egress(&self) -> bool {
        match self.egress {
            Egress::Own => true,
            Egress::Auto => self.bwe_initial_kbps == 0,
            Egress::Str0m => false,
        }
    }
}

/// `[sfu] egress`: which code packetizes and protects forwarded media.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Egress {
    /// The own egress while `bwe_initial_kbps = 0`, else str0m.
    #[default]
    Auto,
    /// The SFU packetizes VP8 and Opus itself.
    Own,
    /// str0m packetizes, encrypts, paces and sends every frame.
    Str0m,
}

impl std::str::FromStr for Egress {
    type Err = String;
    fn from_str(s: &str) -> Result<Egress, String> {
        match s {
            "auto" => Ok(Egress::Auto),
            "own" => Ok(Egress::Own),
            "str0m" => Ok(Egress::Str0m),
            e => Err(format!(
                "egress {e:?}: expected \"auto\", \"own\" or \"str0m\""
            )),
        }
    }
}

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum SfuError {
    /// Binding the media socket failed.
    #[error("cannot bind SFU socket {addr}: {source}")]
    Bind {
        /// Address we tried.
        addr: String,
        /// OS error.
        source: std::io::Error,
    },
    /// A config value is unusable.
    #[error("invalid [sfu] config: {0}")]
    Config(String),
    /// The SFU engine stopped (shutdown).
    #[error("SFU is not running")]
    Stopped,
    /// `max_sessions` reached.
    #[error("SFU is full ({0} sessions)")]
    Full(usize),
    /// The participant already left (or never joined).
    #[error("unknown participant")]
    UnknownParticipant,
    /// The SDP could not be parsed or applied.
    #[error("bad SDP: {0}")]
    Sdp(String),
    /// An answer arrived while no server offer was pending.
    #[error("no offer pending")]
    NoPendingOffer,
    /// A remote ICE candidate could not be parsed or applied.
    #[error("bad ICE candidate: {0}")]
    Candidate(String),
    /// The participant's send queue is full (backpressure); retry later or drop.
    #[error("participant send queue full")]
    Backpressure,
    /// Data to push is not valid JSON.
    #[error("data is not valid JSON")]
    BadData,
}

impl SfuError {
    /// Short label for metrics and signaling error codes.
    pub fn reason(&self) -> &'static str {
        match self {
            SfuError::Bind { .. } => "bind",
            SfuError::Config(_) => "config",
            SfuError::Stopped => "stopped",
            SfuError::Full(_) => "full",
            SfuError::UnknownParticipant => "unknown_participant",
            SfuError::Sdp(_) => "bad_sdp",
            SfuError::NoPendingOffer => "no_pending_offer",
            SfuError::Candidate(_) => "bad_candidate",
            SfuError::Backpressure => "backpressure",
            SfuError::BadData => "bad_data",
        }
    }
}

/// `[sfu] mode`: how rooms carry media.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SfuMode {
    /// Every room is peer-to-peer; the SFU does not start.
    Mesh,
    /// Every room goes through the SFU.
    Sfu,
    /// Peer-to-peer up to `mesh_max_peers`, then the SFU.
    #[default]
    Auto,
}

impl SfuMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SfuMode::Mesh => "mesh",
            SfuMode::Sfu => "sfu",
            SfuMode::Auto => "auto",
        }
    }
}

/// `[sfu]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SfuConfig {
    /// "mesh", "sfu", or "auto" (SFU once a room exceeds `mesh_max_peers`).
    pub mode: SfuMode,
    /// Largest room kept in mesh mode under "auto".
    pub mesh_max_peers: usize,
    /// UDP port shared by all SFU sessions (0: ephemeral, for tests).
    pub udp_port: u16,
    /// ICE-TCP port (RFC 6544 passive candidate, RFC 4571 framing) for clients whose UDP is
    /// blocked (0: ephemeral, for tests).
    pub tcp_port: u16,
    /// Serve ICE-TCP on `tcp_port` and advertise the TCP candidate.
    pub ice_tcp: bool,
    /// Address the SFU binds media sockets to.
    pub bind_ip: String,
    /// Public address advertised in ICE candidates. Default: `bind_ip` if it is a specific
    /// address, else the address of the default route, else 127.0.0.1.
    pub public_ip: Option<String>,
    /// Most concurrent SFU sessions (participants) in this process; `join` fails beyond it.
    pub max_sessions: usize,
    /// Bound of one participant's queued outgoing DataChannel bytes (relayed messages and
    /// server pushes). Lossy messages beyond it are dropped; reliable ones are refused
    /// (the sender's push returns `Backpressure`).
    pub data_queue_bytes: usize,
    /// Largest DataChannel message the SFU relays; larger ones are dropped and counted.
    pub max_data_message_bytes: usize,
    /// Capacity of each participant's event stream (server offers, data for the server...).
    /// A consumer that falls this far behind is disconnected.
    pub event_queue: usize,
    /// Starting send-bandwidth estimate per subscriber, kbit/s; 0 (default) disables
    /// estimation and pacing. When set, the estimate follows TWCC feedback (probing towards what
    /// the subscriber's layers need), str0m paces sending at 1.1x the estimate, and simulcast
    /// layers are picked from it. Off by default because on the contended benchmark host it
    /// halved engine throughput, a low start (1000) left a ~1 s standing queue, and an
    /// overloaded run collapsed (bench/RESULTS.md "## SFU"). Without it, layers follow the
    /// subscriber's requested size. 10000 is the value to try.
    pub bwe_initial_kbps: u64,
    /// Who sends forwarded media to subscribers (decision 0047):
    /// - "own": the SFU packetizes VP8 and Opus itself and protects them with the SRTP keys of
    ///   str0m's handshake (about twice the outbound packets per core; other codecs stay
    ///   with str0m). Needs `bwe_initial_kbps = 0`: it sends no transport-wide sequence
    ///   numbers, so str0m's estimator would get no feedback for that media.
    /// - "str0m": every frame is written into the subscriber's str0m session, which
    ///   packetizes, encrypts, paces and sends it.
    /// - "auto" (default): "own" while `bwe_initial_kbps = 0`, else "str0m".
    pub egress: Egress,
}

impl Default for SfuConfig {
    fn default() -> Self {
        SfuConfig {
            mode: SfuMode::Auto,
            mesh_max_peers: 4,
            udp_port: 7882,
            tcp_port: 7881,
            ice_tcp: true,
            bind_ip: "0.0.0.0".into(),
            public_ip: None,
            max_sessions: 1000,
            data_queue_bytes: 1 << 20,
            max_data_message_bytes: 64 * 1024,
            event_queue: 256,
            bwe_initial_kbps: 0,
            egress: Egress::Auto,
        }
    }
}
