//! Media time continuity on a down-track across simulcast layer switches.
//!
//! Each simulcast layer is its own RTP stream with its own random timestamp base (libwebrtc
//! picks one per SSRC). Forwarding a layer's media time unchanged makes the subscriber's
//! timestamps jump by an arbitrary amount whenever the SFU switches it to another layer; a
//! receiver then holds the new frames for a render time far in the future, or drops them as
//! late — frames arrive but are not decoded. A [`Retimer`] keeps one offset per down-track:
//! while the source stays the same, output time = source time + offset; when the source
//! changes, the offset is re-chosen so the output continues from the last output time plus
//! the wall-clock time that passed between the two units.

use crate::core::Layer;
use std::time::Instant;

/// Maps source media times (in ticks of the track's clock) to a down-track's media times.
#[derive(Debug, Default, Clone)]
pub struct Retimer {
    /// The source (layer) of the last unit forwarded.
    source: Option<Layer>,
    /// Added to the source time.
    offset: i64,
    /// The last output time and when its unit arrived.
    last: Option<(u64, Instant)>,
}

impl Retimer {
    /// The output time for a unit of `source` with source time `time` (ticks at `hz`) that
    /// arrived at `at`.
    pub fn map(&mut self, source: Layer, time: u64, hz: u32, at: Instant) -> u64 {
        if self.source != Some(source) {
            if let Some((last, last_at)) = self.last {
                let elapsed = at.saturating_duration_since(last_at).as_secs_f64();
                // At least one tick: a new frame never repeats the previous frame's time.
                let ticks = ((elapsed * f64::from(hz)) as u64).max(1);
                self.offset = last.wrapping_add(ticks) as i64 - time as i64;
            }
            self.source = Some(source);
        }
        let out = (time as i64).wrapping_add(self.offset).max(0) as u64;
        self.last = Some((out, at));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const HZ: u32 = 90_000;

    /// Two frames of layer 0, 33 ms apart, at source times 1,000 and 4,000: passed through.
    fn two_frames_of_layer_0(r: &mut Retimer, t0: Instant) {
        assert_eq!(r.map(Layer(0), 1_000, HZ, t0), 1_000);
        assert_eq!(
            r.map(Layer(0), 4_000, HZ, t0 + Duration::from_millis(33)),
            4_000
        );
    }

    #[test]
    fn one_source_passes_through_unchanged() {
        let mut r = Retimer::default();
        let t0 = Instant::now();
        two_frames_of_layer_0(&mut r, t0);
        // Packets of one frame share its time.
        assert_eq!(
            r.map(Layer(0), 4_000, HZ, t0 + Duration::from_millis(34)),
            4_000
        );
    }

    #[test]
    fn a_layer_switch_continues_from_the_last_output_time() {
        let mut r = Retimer::default();
        let t0 = Instant::now();
        two_frames_of_layer_0(&mut r, t0);
        // Layer 2 has an unrelated base, far below: output goes on 50 ms (4,500 ticks) later.
        let t = t0 + Duration::from_millis(83);
        assert_eq!(r.map(Layer(2), 7, HZ, t), 8_500);
        // Then follows layer 2's own clock.
        assert_eq!(
            r.map(Layer(2), 3_007, HZ, t + Duration::from_millis(33)),
            11_500
        );
        // And back to layer 0, whose base is far above: still continuous.
        let t2 = t + Duration::from_millis(66);
        assert_eq!(r.map(Layer(0), 4_000_000_000, HZ, t2), 11_500 + 2_970);
    }

    #[test]
    fn a_switch_at_the_same_instant_still_moves_time_forward() {
        let mut r = Retimer::default();
        let t0 = Instant::now();
        assert_eq!(r.map(Layer(1), 500, HZ, t0), 500);
        assert_eq!(r.map(Layer(0), 90, HZ, t0), 501);
    }
}
