//! wlc — weighted least connection (ipvsadm's default), as the kernel's `ip_vs_wlc`: the
//! eligible destination with the smallest overhead / weight, compared by 64-bit
//! cross-multiplication (`loh × w > doh × lw` switches), ties to the earliest in list order.
//! Weights are the effective (slow-start ramped) ones. Small lists are scanned as
//! the kernel does; larger ones answer in O(1) from a tournament tree (see `load_index`).

use super::SchedulerKind;
use super::load_index::{LoadRule, Rating, candidate_weight, least_load_scheduler};
use crate::dest::Destination;

/// The wlc rule: overhead `active × 256 + inactive` over weight.
#[derive(Debug)]
pub(super) struct WlcRule;

impl LoadRule for WlcRule {
    #[inline]
    fn rate(d: &Destination) -> Rating {
        (d.state.overhead(), candidate_weight(d) as u64)
    }

    #[inline]
    fn right_wins((loh, lw): Rating, (doh, dw): Rating) -> bool {
        loh * dw > doh * lw
    }

    const NOBODY: Option<Rating> = Some((1, 0));
}

least_load_scheduler!(
    /// Weighted least-connection scheduler.
    WeightedLeastConnection,
    WlcRule,
    SchedulerKind::Wlc
);

#[cfg(test)]
mod tests {
    use super::super::load_index::tests::{Both, dests, flow, load};
    use super::*;
    use crate::dest::{ConnClass, RAMP_FULL};

    /// The pick, scanning and indexed alike.
    fn pick(s: &Both, ds: &[Destination]) -> Option<usize> {
        s.pick(ds, &flow(7))
    }

    #[test]
    fn overhead_per_weight_decides() {
        let ds = dests(&[1, 3]);
        let s = build_both(&ds);
        load(&ds[0], 1, 0); // 256 / 1
        load(&ds[1], 2, 0); // 512 / 3
        assert_eq!(pick(&s, &ds), Some(1));
        ds[1].state.bind(ConnClass::Active); // 768 / 3 = 256: tie, earliest
        assert_eq!(pick(&s, &ds), Some(0));
        ds[0].state.bind(ConnClass::Inactive); // 257 / 1
        assert_eq!(pick(&s, &ds), Some(1));
    }

    #[test]
    fn all_idle_goes_to_first_in_list_order() {
        let ds = dests(&[1, 5, 9]);
        let s = build_both(&ds);
        assert_eq!(pick(&s, &ds), Some(0), "0/1 = 0/9: the kernel keeps the first");
    }

    #[test]
    fn proportional_share_when_connections_stay() {
        let ds = dests(&[1, 2, 3]);
        let s = build_both(&ds);
        for _ in 0..600 {
            let i = pick(&s, &ds).unwrap();
            ds[i].state.bind(ConnClass::Active);
        }
        let got: Vec<u32> = ds.iter().map(|d| d.state.active_conns()).collect();
        assert_eq!(got, vec![100, 200, 300]);
    }

    #[test]
    fn quiesced_and_overloaded_skipped() {
        let ds = dests(&[2, 0, 1]);
        let s = build_both(&ds);
        load(&ds[0], 10, 0);
        load(&ds[2], 10, 0);
        assert_eq!(pick(&s, &ds), Some(0));
        ds[0].state.set_thresholds(5, 0);
        ds[0].state.bind(ConnClass::Active);
        assert_eq!(pick(&s, &ds), Some(2));
    }

    #[test]
    fn ramp_lowers_effective_weight() {
        let ds = dests(&[4, 4]);
        let s = build_both(&ds);
        load(&ds[0], 3, 0); // 768 / 4 = 192
        load(&ds[1], 1, 0); // 256 / 4 = 64
        assert_eq!(pick(&s, &ds), Some(1));
        ds[1].state.set_ramp(RAMP_FULL / 4); // 256 / 1 = 256
        assert_eq!(pick(&s, &ds), Some(0));
    }
}
