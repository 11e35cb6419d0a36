//! Small progress updates for heavy streams: while a stream runs, [`ProgressEvent`]s for its
//! `task_id` go to a [`ProgressSink`] — in the server, the same identity's live signaling
//! session (small updates on the fast channel, heavy chunks on gRPC, tied together by
//! `task_id`). Events are rate-limited per stream by [`ProgressThrottle`]; the final event
//! (done or failed) always goes out.

use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where a stream stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProgressState {
    Running,
    Done,
    Failed,
}

/// `{"type":"stream_progress","task_id":..,"chunks":..,"bytes":..,"state":"running|done|failed",
///   "code":"ok|...","elapsed_ms":..}`; `code` (the final gRPC status label) only when over.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProgressEvent {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub task_id: String,
    pub chunks: u64,
    pub bytes: u64,
    pub state: ProgressState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<&'static str>,
    pub elapsed_ms: u64,
}

impl ProgressEvent {
    pub fn new(task_id: &str, chunks: u64, bytes: u64, state: ProgressState) -> Self {
        ProgressEvent {
            kind: "stream_progress",
            task_id: task_id.to_string(),
            chunks,
            bytes,
            state,
            code: None,
            elapsed_ms: 0,
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

/// Receives progress for an identity. Must not block (called on the stream's task).
pub trait ProgressSink: Send + Sync {
    fn progress(&self, identity: &str, event: &ProgressEvent);
}

/// Drops every event (the default until the server connects signaling).
pub struct NoProgress;

impl ProgressSink for NoProgress {
    fn progress(&self, _: &str, _: &ProgressEvent) {}
}

/// Adapts any `Fn(identity, json)` — e.g. signaling's `notify(identity, serde_json::Value)`.
pub struct FnSink<F>(pub F);

impl<F: Fn(&str, serde_json::Value) + Send + Sync> ProgressSink for FnSink<F> {
    fn progress(&self, identity: &str, event: &ProgressEvent) {
        (self.0)(identity, event.to_json())
    }
}

/// Keeps every event (tests).
#[derive(Default)]
pub struct RecordingSink {
    pub events: parking_lot::Mutex<Vec<(String, ProgressEvent)>>,
}

impl ProgressSink for RecordingSink {
    fn progress(&self, identity: &str, event: &ProgressEvent) {
        self.events
            .lock()
            .push((identity.to_string(), event.clone()));
    }
}

/// Per-stream rate limit, sans-IO: `due(now)` says whether a running event may go out.
#[derive(Debug)]
pub struct ProgressThrottle {
    every: Duration,
    last: Option<Instant>,
}

impl ProgressThrottle {
    pub fn new(every: Duration) -> Self {
        ProgressThrottle { every, last: None }
    }

    /// True (and records the send) when at least `every` passed since the last event.
    pub fn due(&mut self, now: Instant) -> bool {
        match self.last {
            Some(t) if now.saturating_duration_since(t) < self.every => false,
            _ => {
                self.last = Some(now);
                true
            }
        }
    }
}

/// A shareable sink handle.
pub type SharedSink = Arc<dyn ProgressSink>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape() {
        let mut e = ProgressEvent::new("t1", 3, 300, ProgressState::Done);
        e.code = Some("ok");
        e.elapsed_ms = 12;
        assert_eq!(
            e.to_json(),
            serde_json::json!({"type":"stream_progress","task_id":"t1","chunks":3,"bytes":300,
                "state":"done","code":"ok","elapsed_ms":12})
        );
        let r = ProgressEvent::new("t", 1, 1, ProgressState::Running).to_json();
        assert_eq!(r["state"], "running");
        assert!(r.get("code").is_none());
    }

    #[test]
    fn throttle() {
        let t0 = Instant::now();
        let mut t = ProgressThrottle::new(Duration::from_millis(100));
        assert!(t.due(t0));
        assert!(!t.due(t0 + Duration::from_millis(50)));
        assert!(t.due(t0 + Duration::from_millis(100)));
        assert!(!t.due(t0 + Duration::from_millis(199)));
        assert!(t.due(t0 + Duration::from_millis(200)));
    }
}
