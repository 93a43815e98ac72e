//! ovf — weighted overflow, as the kernel's `ip_vs_ovf`: the highest-weight eligible
//! destination whose active connections do not exceed its weight (`active > weight` is
//! skipped, so a server takes connections up to and including `weight` active ones), ties
//! to the earliest in list order. Small lists are scanned; larger ones
//! answer in O(1) from a tournament tree.

use super::SchedulerKind;
use super::load_index::{LoadRule, Rating, candidate_weight, least_load_scheduler};
use crate::dest::Destination;

/// The ovf rule: candidates are those with `active <= weight`; strictly heavier wins.
#[derive(Debug)]
pub(super) struct OvfRule;

impl LoadRule for OvfRule {
    #[inline]
    fn rate(d: &Destination) -> Rating {
        let w = candidate_weight(d);
        let active = d.state.active_conns();
        (active as u64, if active > w { 0 } else { w as u64 })
    }

    #[inline]
    fn right_wins(left: Rating, right: Rating) -> bool {
        right.1 > left.1
    }

    const NOBODY: Option<Rating> = Some((0, 0));
}

least_load_scheduler!(
    /// Weighted-overflow scheduler.
    WeightedOverflow,
    OvfRule,
    SchedulerKind::Ovf
);

#[cfg(test)]
mod tests {
    use super::super::load_index::tests::{Both, dests, flow, load};
    use super::*;
    use crate::dest::ConnClass;

    /// The pick, scanning and indexed alike.
    fn pick(s: &Both, ds: &[Destination]) -> Option<usize> {
        s.pick(ds, &flow(2))
    }

    #[test]
    fn overflows_after_weight_plus_one_and_returns() {
        let ds = dests(&[1, 3, 2]);
        let s = build_both(&ds);
        let mut seq = Vec::new();
        for _ in 0..8 {
            let i = pick(&s, &ds).unwrap();
            ds[i].state.bind(ConnClass::Active);
            seq.push(i);
        }
        // Slot 1 (weight 3) takes 4 (active 0..=3 are all <= 3), then slot 2 takes 3, then
        // slot 0 takes 2; after that every server has active > weight.
        assert_eq!(seq, vec![1, 1, 1, 1, 2, 2, 2, 0]);
        ds[0].state.bind(ConnClass::Active);
        assert_eq!(pick(&s, &ds), None);
        ds[1].state.unbind(ConnClass::Active);
        assert_eq!(pick(&s, &ds), Some(1));
    }

    #[test]
    fn inactive_connections_do_not_overflow() {
        let ds = dests(&[2, 1]);
        let s = build_both(&ds);
        load(&ds[0], 0, 100);
        assert_eq!(pick(&s, &ds), Some(0));
    }

    #[test]
    fn tie_goes_to_first_and_overload_skipped() {
        let ds = dests(&[4, 4]);
        let s = build_both(&ds);
        assert_eq!(pick(&s, &ds), Some(0));
        ds[0].state.set_thresholds(1, 0);
        ds[0].state.bind(ConnClass::Inactive);
        assert_eq!(pick(&s, &ds), Some(1));
    }
}
