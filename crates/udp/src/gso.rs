//! UDP generic segmentation offload: the process-wide [`GSO`] switch and [`gso_runs`], the
//! pure rule that cuts a batch into runs that can leave as one message each.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// Segments per GSO message (the kernel's `UDP_MAX_SEGMENTS` is 64 on older kernels).
pub const GSO_MAX_SEGMENTS: usize = 64;
/// Payload bytes per GSO message: below the 65,507-byte limit of one IPv4 UDP datagram.
pub const GSO_MAX_BYTES: usize = 65_000;
/// Largest datagram merged into a GSO message: a segment above the path MTU makes the kernel
/// refuse the whole message, so only datagrams that fit a 1500-byte IPv6 path are merged.
pub const GSO_MAX_SEGMENT: usize = 1500 - 40 - 8;
/// GSO messages the kernel may refuse before GSO is switched off for the process.
const GSO_MAX_FAILURES: u32 = 16;

/// UDP generic segmentation offload (Linux ≥ 4.18): several datagrams of one size to one
/// destination cross the stack as one message, cut into datagrams at the device (or, on
/// loopback, at the receiving socket). Process-wide: probed once at start, switched off by
/// configuration or after the kernel refused it [`GSO_MAX_FAILURES`] times.
pub struct Gso {
    on: AtomicBool,
    /// A user of the process asked for GSO off (`[turn] udp_gso = false`); it stays off.
    vetoed: AtomicBool,
    failures: AtomicU32,
}

/// The process's GSO switch, shared by the TURN and SFU drivers.
pub static GSO: Gso = Gso {
    on: AtomicBool::new(false),
    vetoed: AtomicBool::new(false),
    failures: AtomicU32::new(0),
};

impl Gso {
    /// Each driver calls this at start with what its configuration wants. GSO is on when every
    /// caller so far wanted it and the kernel accepts the `UDP_SEGMENT` socket option; one
    /// `false` turns it off for the whole process, whatever the order of the calls. Returns
    /// whether it is on.
    pub fn init(&self, wanted: bool) -> bool {
        if !wanted {
            self.vetoed.store(true, Ordering::Relaxed);
        }
        let ok = !self.vetoed.load(Ordering::Relaxed) && probe_gso();
        self.on.store(ok, Ordering::Relaxed);
        self.failures.store(0, Ordering::Relaxed);
        ok
    }

    pub fn enabled(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// The kernel refused a GSO message; after [`GSO_MAX_FAILURES`] of them GSO goes off.
    pub(crate) fn refused(&self) {
        if self.failures.fetch_add(1, Ordering::Relaxed) + 1 >= GSO_MAX_FAILURES
            && self.on.swap(false, Ordering::Relaxed)
        {
            tracing::warn!("the kernel refused UDP GSO sends repeatedly; GSO is off");
        }
    }
}

/// Whether the kernel takes GSO messages, as `quinn-udp` found out (its kernel version check,
/// then the `UDP_SEGMENT` option on a socket; never off Linux).
fn probe_gso() -> bool {
    crate::quinn::max_gso_segments() > 1
}

/// Datagrams `start..start + count` that leave as one message: one datagram, or a GSO
/// message of `count` segments of the first one's size (the last may be shorter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    pub start: usize,
    pub count: usize,
}

/// Cuts `n` datagrams (sizes `len(i)`, destinations `to(i)`) into [`Run`]s, in order: a run
/// is consecutive datagrams to one destination, all the size of the first except that the
/// last may be shorter, at most `max_segments` of them, [`GSO_MAX_BYTES`] in total and
/// each at most [`GSO_MAX_SEGMENT`] bytes. With
/// `max_segments` ≤ 1 every datagram is its own run.
pub fn gso_runs(
    n: usize,
    len: impl Fn(usize) -> usize,
    to: impl Fn(usize) -> SocketAddr,
    max_segments: usize,
    runs: &mut Vec<Run>,
) {
    runs.clear();
    let mut i = 0;
    while i < n {
        let seg = len(i);
        let dest = to(i);
        let mut count = 1;
        let mut total = seg;
        if seg > 0 && seg <= GSO_MAX_SEGMENT {
            while count < max_segments && i + count < n {
                let j = i + count;
                let l = len(j);
                if l == 0 || l > seg || total + l > GSO_MAX_BYTES || to(j) != dest {
                    break;
                }
                count += 1;
                total += l;
                if l < seg {
                    break; // a shorter datagram ends its run
                }
            }
        }
        runs.push(Run { start: i, count });
        i += count;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn switch() -> Gso {
        Gso {
            on: AtomicBool::new(false),
            vetoed: AtomicBool::new(false),
            failures: AtomicU32::new(0),
        }
    }

    /// One caller that wants GSO off keeps it off, whichever order the drivers start in; a
    /// switch that is on goes off after `GSO_MAX_FAILURES` refused messages, not before.
    /// (A switch of its own: the process-wide [`GSO`] is shared with the send tests.)
    #[test]
    fn one_veto_keeps_gso_off_and_repeated_refusals_switch_it_off() {
        let g = switch();
        assert!(!g.init(false));
        assert!(!g.init(true), "a later caller cannot undo the veto");
        assert!(!g.enabled());

        let g = switch();
        let probed = g.init(true);
        assert_eq!(g.enabled(), probed);
        #[cfg(target_os = "linux")]
        assert!(probed, "loopback accepts UDP_SEGMENT");
        if probed {
            for _ in 1..GSO_MAX_FAILURES {
                g.refused();
            }
            assert!(g.enabled(), "one refusal short of the limit");
            g.refused();
            assert!(!g.enabled());
            // Starting again forgets the refusals.
            assert!(g.init(true));
        }
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn runs(lens: &[usize], to: &[u16], max: usize) -> Vec<(usize, usize)> {
        let mut r = Vec::new();
        gso_runs(lens.len(), |i| lens[i], |i| addr(to[i]), max, &mut r);
        r.iter().map(|x| (x.start, x.count)).collect()
    }

    #[test]
    fn equal_sizes_to_one_destination_make_one_run() {
        assert_eq!(runs(&[100; 5], &[1; 5], 64), vec![(0, 5)]);
    }

    #[test]
    fn last_may_be_shorter_but_ends_the_run() {
        assert_eq!(
            runs(&[100, 100, 60, 100, 100], &[1; 5], 64),
            vec![(0, 3), (3, 2)]
        );
    }

    #[test]
    fn a_longer_datagram_starts_a_new_run() {
        assert_eq!(
            runs(&[100, 100, 120, 120], &[1; 4], 64),
            vec![(0, 2), (2, 2)]
        );
    }

    #[test]
    fn destination_changes_split_runs_in_order() {
        assert_eq!(
            runs(&[50; 6], &[1, 1, 2, 2, 1, 1], 64),
            vec![(0, 2), (2, 2), (4, 2)]
        );
    }

    #[test]
    fn segment_and_byte_limits() {
        assert_eq!(runs(&[10; 5], &[1; 5], 2), vec![(0, 2), (2, 2), (4, 1)]);
        assert_eq!(runs(&[10; 3], &[1; 3], 1), vec![(0, 1), (1, 1), (2, 1)]);
        // 1400-byte datagrams: 46 fit in GSO_MAX_BYTES (64,400 bytes), the 47th does not.
        let lens = vec![1400; 50];
        assert_eq!(runs(&lens, &[1; 50], 64), vec![(0, 46), (46, 4)]);
    }

    #[test]
    fn datagrams_above_the_mtu_are_never_merged() {
        assert_eq!(runs(&[1453; 3], &[1; 3], 64), vec![(0, 1), (1, 1), (2, 1)]);
        assert_eq!(runs(&[1452; 3], &[1; 3], 64), vec![(0, 3)]);
    }

    #[test]
    fn empty_datagrams_are_never_merged() {
        assert_eq!(runs(&[0, 0, 10], &[1; 3], 64), vec![(0, 1), (1, 1), (2, 1)]);
        assert_eq!(
            runs(&[10, 0, 10], &[1; 3], 64),
            vec![(0, 1), (1, 1), (2, 1)]
        );
        assert!(runs(&[], &[], 64).is_empty());
    }

    proptest::proptest! {
        /// Runs cover every datagram once, in order, and each obeys the GSO rules.
        #[test]
        fn runs_partition_and_obey_rules(
            items in proptest::collection::vec((0usize..3000, 0u16..3), 0..200),
            max in 1usize..80,
        ) {
            let lens: Vec<usize> = items.iter().map(|x| x.0).collect();
            let to: Vec<u16> = items.iter().map(|x| x.1).collect();
            let r = runs(&lens, &to, max);
            let mut next = 0;
            for &(start, count) in &r {
                proptest::prop_assert_eq!(start, next);
                proptest::prop_assert!(count >= 1 && count <= max);
                next = start + count;
                if count > 1 {
                    let seg = lens[start];
                    proptest::prop_assert!(seg > 0 && seg <= GSO_MAX_SEGMENT);
                    let total: usize = lens[start..next].iter().sum();
                    proptest::prop_assert!(total <= GSO_MAX_BYTES);
                    for i in start..next {
                        proptest::prop_assert_eq!(to[i], to[start]);
                        if i + 1 < next {
                            proptest::prop_assert_eq!(lens[i], seg);
                        } else {
                            proptest::prop_assert!(lens[i] <= seg && lens[i] > 0);
                        }
                    }
                }
            }
            proptest::prop_assert_eq!(next, lens.len());
        }
    }
}
