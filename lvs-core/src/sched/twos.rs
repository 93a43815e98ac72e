//! twos — weighted random two choices, as the kernel's `ip_vs_twos`: draw two destinations
//! at random, each with probability by weight (the kernel draws `r` in `0..=total` and takes
//! the first destination whose running weight sum reaches `r`, so the first eligible one
//! also gets `r = 0`), then keep the second only when its overhead / weight is strictly
//! lower (`w2 × oh1 > w1 × oh2`). Only eligible destinations (weight > 0, not OVERLOADED)
//! take part; weights are the effective (ramped) ones.
//!
//! Beyond the kernel: for lists longer than 16 destinations the running sums live in a sum
//! segment tree, so each draw is an O(log n) descent instead of a list walk (shorter lists
//! are walked as the kernel does, with no index). The random stream is SplitMix64 over one atomic
//! counter (a `fetch_add` per pick, no lock).

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::load_index::{LoadIndex, Policy, candidate_weight, indexed, key_weight, pack};
use super::{FlowKey, Scheduler, SchedulerKind};
use crate::dest::Destination;
use crate::service::SchedFlags;
use crate::time::Time;

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// Sum tree over candidate weights.
pub(super) struct WeightSum;

impl Policy for WeightSum {
    const EMPTY: u32 = 0;

    #[inline]
    fn key(d: &Destination) -> u64 {
        pack(0, candidate_weight(d))
    }

    #[inline]
    fn leaf(_slot: u32, key: u64) -> u32 {
        key_weight(key) as u32
    }

    #[inline]
    fn combine(left: (u64, u32), right: (u64, u32)) -> (u64, u32) {
        (0, left.1.saturating_add(right.1))
    }
}

/// Weighted two-random-choices scheduler.
pub struct TwoChoices {
    /// The sum tree of a large list; `None` for a small one (up to `scan_max`), which is
    /// walked as the kernel does, with no listener.
    index: Option<Arc<LoadIndex<WeightSum>>>,
    rng: AtomicU64,
}

impl fmt::Debug for TwoChoices {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TwoChoices").field("index", &self.index).finish()
    }
}

impl TwoChoices {
    /// Builds twos for `dests`, continuing `prev`'s random stream when there is one: a
    /// plain list walk up to `scan_max` destinations, a sum tree above.
    pub fn new(dests: &[Destination], prev: Option<&dyn Scheduler>) -> TwoChoices {
        TwoChoices::with_mode(dests, prev, indexed(SchedulerKind::Twos, dests.len()))
    }

    /// Builds twos for `dests`, with a sum tree when `with_index`.
    fn with_mode(dests: &[Destination], prev: Option<&dyn Scheduler>, with_index: bool) -> TwoChoices {
        let seed = prev
            .and_then(|p| p.as_any().downcast_ref::<TwoChoices>())
            .map_or(0x2545_F491_4F6C_DD1D, |p| p.rng.load(Ordering::Relaxed));
        TwoChoices {
            index: with_index.then(|| LoadIndex::new(dests)),
            rng: AtomicU64::new(seed),
        }
    }

    /// SplitMix64: the next 64 random bits.
    #[inline]
    fn next(&self) -> u64 {
        let mut z = self.rng.fetch_add(GOLDEN, Ordering::Relaxed).wrapping_add(GOLDEN);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Two destinations drawn by weight from the tree for `r1`, `r2` in `0..=total`.
    #[inline]
    fn draw2(
        index: &LoadIndex<WeightSum>,
        dests: &[Destination],
        r1: u64,
        r2: u64,
    ) -> Option<(usize, usize)> {
        let (a, b) = index.descend_sum2(r1.max(1), r2.max(1));
        Some((Self::check(index, dests, a)?, Self::check(index, dests, b)?))
    }

    /// `i` if it may be picked; else repairs its leaf.
    #[inline]
    fn check(index: &LoadIndex<WeightSum>, dests: &[Destination], i: usize) -> Option<usize> {
        match dests.get(i) {
            Some(d) if d.is_eligible() => Some(i),
            Some(_) => {
                index.refresh(i);
                None
            }
            None => None,
        }
    }

    /// Two draws from the tree, `None` when it cannot answer (the caller then scans).
    #[inline]
    fn draw_indexed(
        &self,
        index: &LoadIndex<WeightSum>,
        dests: &[Destination],
        x: &mut u64,
    ) -> Option<Option<(usize, usize)>> {
        if dests.len() != index.len() {
            return None;
        }
        for _ in 0..3 {
            let total = index.root() as u64;
            if total == 0 {
                return Some(None);
            }
            let (r1, r2) = (below(*x, total + 1), below(*x >> 32, total + 1));
            if let Some(p) = Self::draw2(index, dests, r1, r2) {
                return Some(Some(p));
            }
            *x = self.next();
        }
        None
    }

    /// The kernel's list walks: the total candidate weight, then one walk for both draws
    /// `r` in `0..=total`, each taking the first candidate whose running weight sum reaches
    /// it, stopping once both are found.
    fn scan(dests: &[Destination], x: u64) -> Option<(usize, usize)> {
        let total: u64 = dests.iter().map(|d| candidate_weight(d) as u64).sum();
        if total == 0 {
            return None;
        }
        Self::walk_or_last(dests, below(x, total + 1), below(x >> 32, total + 1))
    }

    /// [`walk`](Self::walk), or, when the weights changed between the two walks (an edit,
    /// an overload) and a draw was not reached, the last candidate of the list: the kernel's
    /// first choice stays the last one its first walk saw. Never "no destination" while
    /// there is one.
    fn walk_or_last(dests: &[Destination], r1: u64, r2: u64) -> Option<(usize, usize)> {
        Self::walk(dests, r1, r2).or_else(|| {
            let last = dests.iter().rposition(|d| candidate_weight(d) != 0)?;
            Some((last, last))
        })
    }

    /// The draws `r1` and `r2` by one walk of the list (see [`scan`](Self::scan)): up to
    /// the smaller draw, then on from there to the larger.
    fn walk(dests: &[Destination], r1: u64, r2: u64) -> Option<(usize, usize)> {
        let (lo, hi) = (r1.min(r2), r1.max(r2));
        // (slot, running sum) of the first candidate from `from` on whose running sum,
        // starting at `acc`, reaches `r`.
        let reach = |r: u64, from: usize, mut acc: u64| {
            for (i, d) in dests.iter().enumerate().skip(from) {
                let w = candidate_weight(d) as u64;
                acc += w;
                if w != 0 && acc >= r {
                    return Some((i, acc));
                }
            }
            None
        };
        let (a, acc) = reach(lo, 0, 0)?;
        let b = if acc >= hi { a } else { reach(hi, a + 1, acc)?.0 };
        Some(if r1 <= r2 { (a, b) } else { (b, a) })
    }
}

/// `⌊x × (n) / 2³²⌋` for 32 random bits `x`: uniform in `0..n`.
#[inline]
fn below(x: u64, n: u64) -> u64 {
    ((x & 0xFFFF_FFFF) * n) >> 32
}

impl Scheduler for TwoChoices {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Twos
    }

    fn schedule(&self, dests: &[Destination], _flow: &FlowKey, _now: Time) -> Option<usize> {
        let mut x = self.next();
        let drawn = match &self.index {
            Some(index) => self.draw_indexed(index, dests, &mut x),
            None => None,
        };
        let (a, b) = match drawn {
            Some(pair) => pair?,
            None => Self::scan(dests, x)?,
        };
        let (da, db) = (&dests[a], &dests[b]);
        let (w1, w2) = (da.weight() as u64, db.weight() as u64);
        let (oh1, oh2) = (da.state.overhead(), db.state.overhead());
        if w2 * oh1 > w1 * oh2 { Some(b) } else { Some(a) }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

pub(super) fn build(
    dests: &[Destination],
    _flags: SchedFlags,
    prev: Option<&dyn Scheduler>,
) -> Box<dyn Scheduler> {
    Box::new(TwoChoices::new(dests, prev))
}

#[cfg(test)]
mod tests {
    use super::super::load_index::tests::{dests, flow, load};
    use super::*;
    use crate::dest::ConnClass;

    #[test]
    fn sum_tree_descent_matches_the_kernel_walk() {
        let ds = dests(&[3, 0, 2, 5]);
        let t = TwoChoices::with_mode(&ds, None, true);
        let index = t.index.as_deref().expect("built with an index");
        assert_eq!(index.root(), 10);
        // r = 1..=3 → A, 4..=5 → C (B has weight 0), 6..=10 → D.
        let got: Vec<usize> = (1..=10).map(|r| index.descend_sum(r)).collect();
        assert_eq!(got, vec![0, 0, 0, 2, 2, 3, 3, 3, 3, 3]);
        assert_eq!(
            TwoChoices::draw2(index, &ds, 0, 10),
            Some((0, 3)),
            "r = 0 takes the first eligible"
        );
    }

    #[test]
    fn a_draw_past_the_weights_falls_back_to_the_last_candidate() {
        // Weights 3, 0, 2 (total 5): a draw of 9 (the total shrank after it was drawn) is not
        // reached; the answer is the last destination with weight, not "none".
        let ds = dests(&[3, 0, 2, 0]);
        assert_eq!(TwoChoices::walk(&ds, 9, 1), None);
        assert_eq!(TwoChoices::walk_or_last(&ds, 9, 1), Some((2, 2)));
        assert_eq!(TwoChoices::walk_or_last(&ds, 1, 4), TwoChoices::walk(&ds, 1, 4));
        assert_eq!(TwoChoices::walk_or_last(&dests(&[0, 0]), 1, 1), None);
    }

    #[test]
    fn list_walk_draws_like_the_kernel() {
        // r = 0..=3 → A (r = 0 takes the first eligible), 4..=5 → C (B has weight 0),
        // 6..=10 → D; both draws in one walk, in either order.
        let ds = dests(&[3, 0, 2, 5]);
        let want = [0, 0, 0, 0, 2, 2, 3, 3, 3, 3, 3];
        for r1 in 0..=10u64 {
            for r2 in 0..=10u64 {
                let got = TwoChoices::walk(&ds, r1, r2);
                assert_eq!(
                    got,
                    Some((want[r1 as usize], want[r2 as usize])),
                    "r = {r1}, {r2}"
                );
            }
        }
    }

    #[test]
    fn idle_cluster_share_follows_weights_and_skips_ineligible() {
        // With every server idle the overheads tie, so the first draw is kept: the share is
        // the weight share (plus the r = 0 extra for the first eligible). The same with the
        // kernel's list walks (a small list) and with the sum tree.
        for with_index in [false, true] {
            let ds = dests(&[0, 1, 3, 6, 5]);
            ds[4].state.set_thresholds(1, 0);
            ds[4].state.bind(ConnClass::Inactive);
            assert!(ds[4].state.is_overloaded());
            let s = TwoChoices::with_mode(&ds, None, with_index);
            let mut count = [0u32; 5];
            let n = 20_000;
            for i in 0..n {
                count[s.schedule(&ds, &flow(i), Time::ZERO).unwrap()] += 1;
            }
            assert_eq!(count[0], 0, "weight 0 never chosen");
            assert_eq!(count[4], 0, "overloaded never chosen");
            // Expected 2/11, 3/11, 6/11 of picks before the overhead comparison; slot 4 is
            // excluded, so the other three have overhead 0 and the first draw stands.
            for (i, p) in [(1, 2.0 / 11.0), (2, 3.0 / 11.0), (3, 6.0 / 11.0)] {
                let share = count[i] as f64 / n as f64;
                assert!(
                    (share - p).abs() < 0.02,
                    "index {with_index}, slot {i}: share {share} vs {p}"
                );
            }
        }
    }

    #[test]
    fn loaded_servers_lose_the_second_choice() {
        for with_index in [false, true] {
            let ds = dests(&[1, 1]);
            let s = TwoChoices::with_mode(&ds, None, with_index);
            load(&ds[0], 10, 0);
            let n = 4000;
            let mut to_idle = 0;
            for i in 0..n {
                if s.schedule(&ds, &flow(i), Time::ZERO) == Some(1) {
                    to_idle += 1;
                }
            }
            // Only a draw of (0, 0) sends to the loaded server: P = (2/3)² = 4/9.
            let share = to_idle as f64 / n as f64;
            assert!(
                (share - 5.0 / 9.0).abs() < 0.04,
                "index {with_index}: idle share {share}"
            );
        }
    }

    #[test]
    fn small_lists_register_no_listener_large_ones_do() {
        let n = super::super::load_index::scan_max(SchedulerKind::Twos);
        let small = dests(&vec![1; n]);
        let _s = build(&small, SchedFlags::NONE, None);
        assert!(small.iter().all(|d| !d.state.has_listener()));
        let large = dests(&vec![1; n + 1]);
        let _l = build(&large, SchedFlags::NONE, None);
        assert!(large.iter().all(|d| d.state.has_listener()));
    }

    #[test]
    fn nothing_eligible_gives_none() {
        let ds = dests(&[0, 0]);
        let s = build(&ds, SchedFlags::NONE, None);
        assert_eq!(s.schedule(&ds, &flow(1), Time::ZERO), None);
    }
}
