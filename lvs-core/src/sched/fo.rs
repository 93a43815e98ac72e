//! fo — weighted failover, as the kernel's `ip_vs_fo`: the eligible destination with the
//! highest weight (effective, ramped), ties to the earliest in list order; load ignored.
//! O(1) picks from a tournament tree (it follows OVERLOAD and ramp changes).

use super::SchedulerKind;
use super::load_index::{LoadRule, candidate_weight, key_weight, least_load_scheduler, pack};
use crate::dest::Destination;

/// The fo rule: strictly heavier wins.
#[derive(Debug)]
pub(super) struct FoRule;

impl LoadRule for FoRule {
    #[inline]
    fn key(d: &Destination) -> u64 {
        pack(0, candidate_weight(d))
    }

    #[inline]
    fn right_wins(left: u64, right: u64) -> bool {
        key_weight(right) > key_weight(left)
    }
}

least_load_scheduler!(
    /// Weighted-failover scheduler.
    WeightedFailover,
    FoRule,
    SchedulerKind::Fo
);

#[cfg(test)]
mod tests {
    use super::super::load_index::tests::{dests, flow, load};
    use super::*;
    use crate::dest::ConnClass;
    use crate::sched::Scheduler;
    use crate::service::SchedFlags;
    use crate::time::Time;

    fn pick(s: &dyn Scheduler, ds: &[Destination]) -> Option<usize> {
        s.schedule(ds, &flow(5), Time::ZERO)
    }

    #[test]
    fn heaviest_takes_everything_whatever_its_load() {
        let ds = dests(&[5, 10, 10, 1]);
        let s = build(&ds, SchedFlags::NONE, None);
        load(&ds[1], 1000, 0);
        assert_eq!(pick(&*s, &ds), Some(1), "tie at 10: first in list order");
    }

    #[test]
    fn fails_over_when_overloaded_and_back_when_cleared() {
        let ds = dests(&[5, 10]);
        let s = build(&ds, SchedFlags::NONE, None);
        ds[1].state.set_thresholds(2, 0);
        load(&ds[1], 2, 0);
        assert_eq!(pick(&*s, &ds), Some(0));
        ds[1].state.unbind(ConnClass::Active);
        ds[1].state.unbind(ConnClass::Active);
        assert_eq!(pick(&*s, &ds), Some(1));
    }

    #[test]
    fn all_quiesced_gives_none() {
        let ds = dests(&[0, 0]);
        let s = build(&ds, SchedFlags::NONE, None);
        assert_eq!(pick(&*s, &ds), None);
    }
}
