//! nq — never queue, as the kernel's `ip_vs_nq`: the first eligible destination in list
//! order with no active connection wins at once; when none is idle, sed's rule
//! (`(active + 1) / weight`, ties to the earliest). Small lists are scanned;
//! larger ones answer in O(1) from a tournament tree.

use super::SchedulerKind;
use super::load_index::{LoadRule, Rating, candidate_weight, least_load_scheduler};
use super::sed::sed_right_wins;
use crate::dest::Destination;

/// The nq rule: idle beats busy (earliest idle first), else sed.
#[derive(Debug)]
pub(super) struct NqRule;

impl LoadRule for NqRule {
    #[inline]
    fn rate(d: &Destination) -> Rating {
        (d.state.active_conns() as u64, candidate_weight(d) as u64)
    }

    #[inline]
    fn right_wins(left: Rating, right: Rating) -> bool {
        if left.0 == 0 {
            false
        } else if right.0 == 0 {
            true
        } else {
            sed_right_wins(left, right)
        }
    }
}

least_load_scheduler!(
    /// Never-queue scheduler.
    NeverQueue,
    NqRule,
    SchedulerKind::Nq
);

#[cfg(test)]
mod tests {
    use super::super::load_index::tests::{Both, dests, flow, load};
    use super::*;
    use crate::dest::ConnClass;

    /// The pick, scanning and indexed alike.
    fn pick(s: &Both, ds: &[Destination]) -> Option<usize> {
        s.pick(ds, &flow(9))
    }

    #[test]
    fn first_idle_wins_even_against_a_better_ratio() {
        // sed would pick slot 1 ((0+1)/100); nq takes the first idle server in list order.
        let ds = dests(&[1, 100, 1]);
        let s = build_both(&ds);
        assert_eq!(pick(&s, &ds), Some(0));
        load(&ds[0], 1, 0);
        assert_eq!(pick(&s, &ds), Some(1));
        load(&ds[1], 1, 0);
        assert_eq!(pick(&s, &ds), Some(2), "slot 2 idle, slot 1 busy");
    }

    #[test]
    fn inactive_connections_do_not_make_a_server_busy() {
        let ds = dests(&[1, 1]);
        let s = build_both(&ds);
        load(&ds[0], 0, 40);
        load(&ds[1], 0, 0);
        assert_eq!(pick(&s, &ds), Some(0));
    }

    #[test]
    fn no_idle_falls_back_to_sed() {
        let ds = dests(&[1, 3, 2]);
        let s = build_both(&ds);
        load(&ds[0], 1, 0); // 2/1
        load(&ds[1], 5, 0); // 6/3 = 2
        load(&ds[2], 2, 0); // 3/2
        assert_eq!(pick(&s, &ds), Some(2));
        ds[2].state.bind(ConnClass::Active); // 4/2 = 2: three-way tie, first
        assert_eq!(pick(&s, &ds), Some(0));
    }

    #[test]
    fn idle_but_ineligible_is_skipped() {
        let ds = dests(&[0, 1, 1]);
        let s = build_both(&ds);
        load(&ds[1], 1, 0);
        ds[2].state.set_thresholds(1, 0);
        ds[2].state.bind(ConnClass::Inactive); // overloaded with 0 active
        assert_eq!(pick(&s, &ds), Some(1));
    }
}
