//! sed — shortest expected delay, as the kernel's `ip_vs_sed`: the eligible destination
//! with the smallest `(active + 1) / weight` (inactive connections ignored), compared by
//! cross-multiplication, ties to the earliest in list order. Small lists are scanned;
//! larger ones answer in O(1) from a tournament tree.

use super::SchedulerKind;
use super::load_index::{LoadRule, Rating, candidate_weight, least_load_scheduler};
use crate::dest::Destination;

/// `(active + 1) × right_weight` against the other side: true when `right` is strictly
/// better under the sed/nq cost.
#[inline]
pub(super) fn sed_right_wins((la, lw): Rating, (ra, rw): Rating) -> bool {
    (la + 1) * rw > (ra + 1) * lw
}

/// The sed rule: key load is the active-connection count.
#[derive(Debug)]
pub(super) struct SedRule;

impl LoadRule for SedRule {
    #[inline]
    fn rate(d: &Destination) -> Rating {
        (d.state.active_conns() as u64, candidate_weight(d) as u64)
    }

    #[inline]
    fn right_wins(left: Rating, right: Rating) -> bool {
        sed_right_wins(left, right)
    }

    // (0 + 1) × w > (a + 1) × 0 for any candidate; 0 > 0 for a weight of 0.
    const NOBODY: Option<Rating> = Some((0, 0));
}

least_load_scheduler!(
    /// Shortest-expected-delay scheduler.
    ShortestExpectedDelay,
    SedRule,
    SchedulerKind::Sed
);

#[cfg(test)]
mod tests {
    use super::super::load_index::tests::{Both, dests, flow, load};
    use super::*;

    /// The pick, scanning and indexed alike.
    fn pick(s: &Both, ds: &[Destination]) -> Option<usize> {
        s.pick(ds, &flow(3))
    }

    #[test]
    fn counts_the_incoming_job_and_ignores_inactive() {
        // wlc would pick slot 0 (0 conns); sed compares (0+1)/1 = 1 against (1+1)/4 = 0.5.
        let ds = dests(&[1, 4]);
        let s = build_both(&ds);
        load(&ds[1], 1, 1000);
        assert_eq!(pick(&s, &ds), Some(1));
        load(&ds[1], 2, 0); // (3+1)/4 = 1 = (0+1)/1: tie to the earliest
        assert_eq!(pick(&s, &ds), Some(0));
    }

    #[test]
    fn all_idle_prefers_the_heaviest_then_list_order() {
        let ds = dests(&[2, 5, 5, 1]);
        let s = build_both(&ds);
        assert_eq!(pick(&s, &ds), Some(1));
    }

    #[test]
    fn weight_zero_never_chosen() {
        let ds = dests(&[0, 1]);
        let s = build_both(&ds);
        load(&ds[1], 50, 0);
        assert_eq!(pick(&s, &ds), Some(1));
    }
}
