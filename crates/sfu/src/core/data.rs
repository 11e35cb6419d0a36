//! Bounded per-participant queues of outgoing DataChannel messages (relayed messages and server
//! pushes): each participant's queued bytes stay under `data_queue_bytes`, and messages leave in
//! order, as fast as its DataChannel takes them.

use std::collections::VecDeque;

use super::{ParticipantId, Rooms};

/// Why a data message was not queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataDrop {
    /// The receiver's queue is full.
    QueueFull,
    /// No such participant.
    UnknownTarget,
}

/// One data message waiting to be written into a participant's DataChannel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedData {
    /// true: the reliable channel; false: the lossy channel.
    pub reliable: bool,
    /// Encoded envelope.
    pub bytes: Vec<u8>,
}

/// One participant's queue.
#[derive(Debug, Default)]
pub(super) struct DataQueue {
    queue: VecDeque<QueuedData>,
    bytes: usize,
}

impl DataQueue {
    /// Appends `m` unless the queue would then hold more than `limit` bytes.
    fn push(&mut self, m: QueuedData, limit: usize) -> bool {
        if self.bytes + m.bytes.len() > limit {
            return false;
        }
        self.bytes += m.bytes.len();
        self.queue.push_back(m);
        true
    }

    /// Takes messages from the front while `can_send` accepts them.
    fn drain(&mut self, mut can_send: impl FnMut(&QueuedData) -> bool) {
        while let Some(front) = self.queue.front() {
            if !can_send(front) {
                break;
            }
            if let Some(m) = self.queue.pop_front() {
                self.bytes -= m.bytes.len();
            }
        }
    }

    /// Bytes queued.
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Rooms {
    /// Queues `bytes` for `to`. Lossy messages are dropped when the queue is full; reliable ones
    /// are refused so the sender sees backpressure.
    pub fn enqueue_data(
        &mut self,
        to: ParticipantId,
        reliable: bool,
        bytes: Vec<u8>,
    ) -> Result<(), DataDrop> {
        let limit = self.tuning.data_queue_bytes;
        let Some(p) = self.participants.get_mut(&to) else {
            return Err(DataDrop::UnknownTarget);
        };
        if !p.data.push(QueuedData { reliable, bytes }, limit) {
            self.stats.data_dropped_queue_full += 1;
            return Err(DataDrop::QueueFull);
        }
        Ok(())
    }

    /// Takes queued messages for `p` while `can_send` accepts them (the driver checks the
    /// DataChannel's buffered amount); stops at the first refusal, keeping order.
    pub fn drain_data(&mut self, p: ParticipantId, can_send: impl FnMut(&QueuedData) -> bool) {
        if let Some(part) = self.participants.get_mut(&p) {
            part.data.drain(can_send);
        }
    }

    /// Bytes queued for `p`.
    pub fn queued_bytes_of(&self, p: ParticipantId) -> usize {
        self.participants.get(&p).map_or(0, |x| x.data.bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(n: usize) -> QueuedData {
        QueuedData {
            reliable: true,
            bytes: vec![0; n],
        }
    }

    #[test]
    fn the_byte_bound_holds_and_a_message_that_fits_exactly_is_taken() {
        let mut q = DataQueue::default();
        assert!(q.push(msg(60), 100));
        assert!(!q.push(msg(41), 100), "101 bytes would exceed the bound");
        assert!(q.push(msg(40), 100), "exactly 100 fits");
        assert_eq!(q.bytes(), 100);
        assert!(!q.push(msg(1), 100));
    }

    #[test]
    fn draining_stops_at_the_first_refusal_and_keeps_order() {
        let mut q = DataQueue::default();
        for n in [10, 20, 30] {
            assert!(q.push(msg(n), 100));
        }
        let mut seen = Vec::new();
        q.drain(|m| {
            seen.push(m.bytes.len());
            m.bytes.len() < 20
        });
        assert_eq!(seen, vec![10, 20], "20 is refused: 30 is not offered");
        assert_eq!(q.bytes(), 50);
        q.drain(|_| true);
        assert_eq!(q.bytes(), 0);
    }
}
