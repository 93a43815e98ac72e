//! lc — least connection, as the kernel's `ip_vs_lc`: the eligible destination (weight > 0,
//! not OVERLOADED) with the smallest overhead `active × 256 + inactive`, weights otherwise
//! ignored; ties go to the earliest in list order. Small lists
//! are scanned as the kernel does; larger ones answer in O(1) from a tournament tree.

use super::SchedulerKind;
use super::load_index::{LoadRule, Rating, candidate_weight, least_load_scheduler};
use crate::dest::Destination;

/// The lc rule: smaller overhead wins, strictly.
#[derive(Debug)]
pub(super) struct LcRule;

impl LoadRule for LcRule {
    #[inline]
    fn rate(d: &Destination) -> Rating {
        // A non-candidate rates as the highest load: nothing is above it.
        match candidate_weight(d) {
            0 => (u64::MAX, 0),
            w => (d.state.overhead(), w as u64),
        }
    }

    #[inline]
    fn right_wins(left: Rating, right: Rating) -> bool {
        right.0 < left.0
    }

    const NOBODY: Option<Rating> = Some((u64::MAX, 0));
}

least_load_scheduler!(
    /// Least-connection scheduler.
    LeastConnection,
    LcRule,
    SchedulerKind::Lc
);

#[cfg(test)]
mod tests {
    use super::super::load_index::tests::{Both, dests, flow, load};
    use super::*;
    use crate::dest::ConnClass;

    /// The pick, scanning and indexed alike.
    fn pick(s: &Both, ds: &[Destination]) -> Option<usize> {
        s.pick(ds, &flow(1))
    }

    #[test]
    fn least_overhead_wins_and_weights_do_not_matter() {
        let ds = dests(&[100, 1, 50]);
        let s = build_both(&ds);
        load(&ds[0], 2, 0); // 512
        load(&ds[1], 1, 100); // 356
        load(&ds[2], 1, 101); // 357
        assert_eq!(pick(&s, &ds), Some(1));
        ds[1].state.bind(ConnClass::Inactive); // 357: tie with slot 2, earlier wins
        assert_eq!(pick(&s, &ds), Some(1));
        ds[1].state.bind(ConnClass::Inactive); // 358
        assert_eq!(pick(&s, &ds), Some(2));
    }

    #[test]
    fn one_active_outweighs_255_inactive() {
        let ds = dests(&[1, 1]);
        let s = build_both(&ds);
        load(&ds[0], 0, 255);
        load(&ds[1], 1, 0);
        assert_eq!(pick(&s, &ds), Some(0), "255 < 256");
        ds[0].state.bind(ConnClass::Inactive);
        assert_eq!(pick(&s, &ds), Some(0), "256 = 256: tie to the earliest");
        ds[0].state.bind(ConnClass::Inactive);
        assert_eq!(pick(&s, &ds), Some(1));
    }

    #[test]
    fn weight_zero_and_overloaded_are_skipped() {
        let ds = dests(&[0, 1, 1]);
        let s = build_both(&ds);
        load(&ds[1], 3, 0);
        load(&ds[2], 4, 0);
        assert_eq!(pick(&s, &ds), Some(1), "idle weight-0 server never chosen");
        ds[1].state.set_thresholds(3, 0);
        load(&ds[1], 0, 1); // reaches upper threshold 3 (total 4 ≥ 3)
        assert!(ds[1].state.is_overloaded());
        assert_eq!(pick(&s, &ds), Some(2));
        ds[2].state.set_thresholds(1, 0);
        ds[2].state.bind(ConnClass::Active);
        assert_eq!(pick(&s, &ds), None);
    }
}
