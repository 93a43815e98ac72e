//! fo — weighted failover, as the kernel's `ip_vs_fo`: the eligible destination with the
//! highest weight (effective, ramped), ties to the earliest in list order; load ignored.
//! Small lists are scanned; larger ones answer in O(1) from a tournament tree (it follows
//! OVERLOAD and ramp changes).

use super::SchedulerKind;
use super::load_index::{LoadRule, Rating, candidate_weight, least_load_scheduler};
use crate::dest::Destination;

/// The fo rule: strictly heavier wins.
#[derive(Debug)]
pub(super) struct FoRule;

impl LoadRule for FoRule {
    #[inline]
    fn rate(d: &Destination) -> Rating {
        (0, candidate_weight(d) as u64)
    }

    #[inline]
    fn right_wins(left: Rating, right: Rating) -> bool {
        right.1 > left.1
    }

    const NOBODY: Option<Rating> = Some((0, 0));
}

least_load_scheduler!(
    /// Weighted-failover scheduler.
    WeightedFailover,
    FoRule,
    SchedulerKind::Fo
);

#[cfg(test)]
mod tests {
    use super::super::load_index::tests::{Both, dests, flow, load};
    use super::*;
    use crate::dest::ConnClass;

    /// The pick, scanning and indexed alike.
    fn pick(s: &Both, ds: &[Destination]) -> Option<usize> {
        s.pick(ds, &flow(5))
    }

    #[test]
    fn heaviest_takes_everything_whatever_its_load() {
        let ds = dests(&[5, 10, 10, 1]);
        let s = build_both(&ds);
        load(&ds[1], 1000, 0);
        assert_eq!(pick(&s, &ds), Some(1), "tie at 10: first in list order");
    }

    #[test]
    fn fails_over_when_overloaded_and_back_when_cleared() {
        let ds = dests(&[5, 10]);
        let s = build_both(&ds);
        ds[1].state.set_thresholds(2, 0);
        load(&ds[1], 2, 0);
        assert_eq!(pick(&s, &ds), Some(0));
        ds[1].state.unbind(ConnClass::Active);
        ds[1].state.unbind(ConnClass::Active);
        assert_eq!(pick(&s, &ds), Some(1));
    }

    #[test]
    fn all_quiesced_gives_none() {
        let ds = dests(&[0, 0]);
        let s = build_both(&ds);
        assert_eq!(pick(&s, &ds), None);
    }
}
