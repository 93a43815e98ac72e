//! wrr — weighted round robin, as the kernel's `ip_vs_wrr`: sweeps of the destination list
//! with a current weight `cw` that starts at `mw = max weight − (gcd − 1)` and drops by the
//! gcd `di` after each sweep (wrapping to `mw` below 1); a sweep picks, in list order, every
//! destination that is not OVERLOADED and has weight ≥ `cw`. Weights 4, 3, 2 give
//! A A B A B C A B C.
//!
//! Beyond the kernel: for lists longer than 64 destinations, "next destination at or
//! after the cursor with weight ≥ cw" is answered by a max segment tree over the effective
//! weights (O(log n)) instead of a list walk (shorter lists are walked, with no index:
//! cheaper, since a walk from the cursor meets a heavy enough destination within a few
//! steps on average), and sweeps that cannot pick anyone (every weight above `cw` overloaded or ramping)
//! are skipped in one step. The cursor and `cw` live in one atomic word updated by CAS, the
//! lock-free counterpart of the kernel's `sched_lock`.
//!
//! `mw` and `di` come from the configured weights when the snapshot is built (the kernel
//! recomputes them in `dest_changed` on add/edit/delete); a slow-start ramp lowers a
//! destination's effective weight, which the `weight ≥ cw` test sees at once.

use std::any::Any;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::load_index::{LoadIndex, Policy, candidate_weight, indexed, key_weight, pack};
use super::{FlowKey, Scheduler, SchedulerKind};
use crate::dest::{Destination, MAX_WEIGHT};
use crate::service::SchedFlags;
use crate::time::Time;

/// Cursor value meaning "the list head" (before the first destination).
const HEAD: u32 = u32::MAX;

/// Max tree over candidate weights (0 when OVERLOADED or quiesced).
pub(super) struct MaxWeight;

impl Policy for MaxWeight {
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
        (0, left.1.max(right.1))
    }
}

#[inline]
fn pack_state(cl: u32, cw: u32) -> u64 {
    ((cl as u64) << 32) | cw as u64
}

#[inline]
fn unpack_state(s: u64) -> (u32, u32) {
    ((s >> 32) as u32, s as u32)
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Weighted round-robin scheduler.
pub struct WeightedRoundRobin {
    /// The max tree of a large list; `None` for a small one (up to `scan_max`), which is
    /// walked as the kernel does, with no listener.
    index: Option<Arc<LoadIndex<MaxWeight>>>,
    /// Number of destinations it was built for.
    len: usize,
    /// `cursor << 32 | cw`; cursor [`HEAD`] before the first destination.
    state: AtomicU64,
    mw: u32,
    di: u32,
    /// (address, port, weight) in list order, to tell whether a rebuild changed anything.
    layout: Box<[(IpAddr, u16, u32)]>,
}

impl fmt::Debug for WeightedRoundRobin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (cl, cw) = unpack_state(self.state.load(Ordering::Relaxed));
        f.debug_struct("WeightedRoundRobin")
            .field("cursor", &cl)
            .field("cw", &cw)
            .field("mw", &self.mw)
            .field("di", &self.di)
            .finish()
    }
}

impl WeightedRoundRobin {
    /// Builds wrr for `dests`; from `prev` it keeps the cursor when nothing changed, else
    /// restarts at the list head and carries `cw` as the kernel's `dest_changed` does.
    pub fn new(dests: &[Destination], prev: Option<&dyn Scheduler>) -> WeightedRoundRobin {
        let weights = dests.iter().map(|d| d.config.weight.min(MAX_WEIGHT));
        let g = weights.clone().filter(|&w| w > 0).fold(0, gcd);
        let di = if g == 0 { 1 } else { g };
        let max = weights.max().unwrap_or(0);
        let mw = (max + 1).saturating_sub(di);
        let layout: Box<[(IpAddr, u16, u32)]> = dests
            .iter()
            .map(|d| (d.config.addr, d.config.port, d.config.weight))
            .collect();
        let prev = prev.and_then(|p| p.as_any().downcast_ref::<WeightedRoundRobin>());
        let state = match prev {
            Some(p) if p.layout == layout => p.state.load(Ordering::Relaxed),
            Some(p) => {
                let (_, mut cw) = unpack_state(p.state.load(Ordering::Relaxed));
                if cw > mw || cw == 0 {
                    cw = mw;
                } else if di > 1 {
                    cw = (cw / di) * di + 1;
                }
                pack_state(HEAD, cw)
            }
            None => pack_state(HEAD, mw),
        };
        WeightedRoundRobin {
            index: indexed(SchedulerKind::Wrr, dests.len()).then(|| LoadIndex::new(dests)),
            len: dests.len(),
            state: AtomicU64::new(state),
            mw,
            di,
            layout,
        }
    }

    /// One kernel scheduling step from `state`: the pick and the next state.
    fn step(&self, dests: &[Destination], state: u64) -> (Option<usize>, u64) {
        let (mw, di) = (self.mw as i64, self.di as i64);
        let (cl, cw) = unpack_state(state);
        let mut cw = cw as i64;
        if cw <= 0 || cw > mw {
            cw = mw;
        }
        let mut pos = if cl == HEAD { 0 } else { cl as usize + 1 };
        // Each turn either picks, skips one stale leaf, or ends a sweep; a consistent
        // tree needs at most two sweeps. The bound only guards against endless races.
        for _ in 0..64 {
            match self.first_at_least(dests, pos, cw as u32) {
                Some(i) => {
                    let d = &dests[i];
                    if d.is_eligible() && d.weight() as i64 >= cw {
                        return (Some(i), pack_state(i as u32, cw as u32));
                    }
                    if let Some(index) = &self.index {
                        index.refresh(i);
                    }
                    pos = i + 1;
                }
                None => {
                    cw -= di;
                    if cw <= 0 {
                        cw = mw;
                    }
                    pos = 0;
                    let top = self.top(dests) as i64;
                    if top == 0 {
                        return (None, self.exhausted(state));
                    }
                    if cw > top {
                        // Sweeps at weights above every candidate pick nobody: skip them.
                        cw -= (cw - top + di - 1) / di * di;
                        cw = cw.max(1);
                    }
                }
            }
        }
        (None, self.exhausted(state))
    }

    /// First destination at or after `pos` whose candidate weight is at least `c`: from the
    /// tree, or by the kernel's list walk.
    #[inline]
    fn first_at_least(&self, dests: &[Destination], pos: usize, c: u32) -> Option<usize> {
        match &self.index {
            Some(index) => index.first_at_least(pos, c),
            None => (pos..dests.len()).find(|&i| candidate_weight(&dests[i]) >= c),
        }
    }

    /// The largest candidate weight (0 when nobody may be picked).
    #[inline]
    fn top(&self, dests: &[Destination]) -> u32 {
        match &self.index {
            Some(index) => index.root(),
            None => dests.iter().map(candidate_weight).max().unwrap_or(0),
        }
    }

    /// The state the kernel's loop leaves when nobody can be picked from `state`: a cursor
    /// already on the last sweep (`cw <= di`) stays put (the loop stops at it); otherwise
    /// the loop wraps after a full last sweep and rests at the head with `cw = mw`.
    fn exhausted(&self, state: u64) -> u64 {
        let (cl, cw) = unpack_state(state);
        if cl != HEAD && cw >= 1 && cw <= self.di && cw <= self.mw {
            state
        } else {
            pack_state(HEAD, self.mw)
        }
    }
}

impl Scheduler for WeightedRoundRobin {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Wrr
    }

    fn schedule(&self, dests: &[Destination], _flow: &FlowKey, _now: Time) -> Option<usize> {
        if self.mw == 0 || dests.len() != self.len {
            return None;
        }
        let mut cur = self.state.load(Ordering::Acquire);
        loop {
            let (pick, next) = self.step(dests, cur);
            if next == cur {
                return pick;
            }
            match self
                .state
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return pick,
                Err(actual) => cur = actual,
            }
        }
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
    Box::new(WeightedRoundRobin::new(dests, prev))
}

#[cfg(test)]
mod tests {
    use super::super::load_index::tests::{dests, flow};
    use super::*;
    use crate::dest::{ConnClass, RAMP_FULL};

    fn run(s: &dyn Scheduler, ds: &[Destination], k: usize) -> Vec<Option<usize>> {
        (0..k)
            .map(|i| s.schedule(ds, &flow(i as u32), Time::ZERO))
            .collect()
    }

    fn names(v: &[Option<usize>]) -> String {
        v.iter()
            .map(|p| p.map_or('-', |i| (b'A' + i as u8) as char))
            .collect()
    }

    #[test]
    fn weights_4_3_2_give_the_kernel_sequence() {
        let ds = dests(&[4, 3, 2]);
        let s = build(&ds, SchedFlags::NONE, None);
        assert_eq!(names(&run(&*s, &ds, 18)), "AABABCABCAABABCABC");
    }

    #[test]
    fn gcd_stepping_interleaves_coarse_weights() {
        // gcd 100, mw = 200 − 99 = 101: sweeps at cw 101 (B) and 1 (A, B).
        let ds = dests(&[100, 200]);
        let s = build(&ds, SchedFlags::NONE, None);
        assert_eq!(names(&run(&*s, &ds, 6)), "BABBAB");
    }

    #[test]
    fn all_weights_zero_gives_none() {
        let ds = dests(&[0, 0, 0]);
        let s = build(&ds, SchedFlags::NONE, None);
        assert_eq!(run(&*s, &ds, 3), vec![None, None, None]);
    }

    #[test]
    fn quiesced_and_overloaded_are_skipped() {
        let ds = dests(&[3, 0, 1]);
        let s = build(&ds, SchedFlags::NONE, None);
        assert_eq!(names(&run(&*s, &ds, 8)), "AAACAAAC");
        ds[0].state.set_thresholds(1, 0);
        ds[0].state.bind(ConnClass::Active);
        // Sweeps at cw 3 and 2 pick nobody; cw 1 picks C.
        assert_eq!(names(&run(&*s, &ds, 3)), "CCC");
        ds[2].state.set_thresholds(1, 0);
        ds[2].state.bind(ConnClass::Active);
        assert_eq!(names(&run(&*s, &ds, 2)), "--");
        ds[0].state.unbind(ConnClass::Active);
        assert_eq!(names(&run(&*s, &ds, 3)), "AAA");
    }

    #[test]
    fn rebuild_without_change_keeps_the_cursor() {
        let ds = dests(&[4, 3, 2]);
        let s = build(&ds, SchedFlags::NONE, None);
        assert_eq!(names(&run(&*s, &ds, 4)), "AABA");
        let s2 = build(&ds, SchedFlags::NONE, Some(&*s));
        assert_eq!(names(&run(&*s2, &ds, 5)), "BCABC");
    }

    #[test]
    fn weight_change_restarts_at_head_keeping_cw_like_dest_changed() {
        let ds = dests(&[4, 3, 2]);
        let s = build(&ds, SchedFlags::NONE, None);
        assert_eq!(names(&run(&*s, &ds, 4)), "AABA"); // cursor A, cw 2
        let mut ds2 = ds.clone();
        ds2[2].config.weight = 3; // 4,3,3: gcd 1, mw 4; cw stays 2, cursor back to head
        let s2 = build(&ds2, SchedFlags::NONE, Some(&*s));
        assert_eq!(names(&run(&*s2, &ds2, 6)), "ABCABC");
        // gcd 2: cw 2 becomes (2/2)*2+1 = 3, then steps of 2 down to 1.
        let mut ds3 = ds.clone();
        ds3[0].config.weight = 6;
        ds3[1].config.weight = 4;
        ds3[2].config.weight = 2;
        let s3 = build(&ds3, SchedFlags::NONE, Some(&*s));
        assert_eq!(names(&run(&*s3, &ds3, 6)), "ABABCA");
    }

    #[test]
    fn ramping_destination_is_skipped_at_high_cw() {
        let ds = dests(&[4, 3]);
        let s = build(&ds, SchedFlags::NONE, None);
        assert_eq!(names(&run(&*s, &ds, 7)), "AABABAB");
        ds[1].state.set_ramp(RAMP_FULL / 2); // effective 3 × 1/2 → 1
        // cw 4, 3, 2: A only; cw 1: A B.
        assert_eq!(names(&run(&*s, &ds, 10)), "AAAABAAAAB");
    }

    /// The kernel's `ip_vs_wrr_schedule`, transcribed literally: `cl` None is the head.
    struct KernelWrr {
        cl: Option<usize>,
        cw: i64,
        mw: i64,
        di: i64,
    }

    impl KernelWrr {
        fn new(ds: &[Destination]) -> KernelWrr {
            let mut g = 0i64;
            for d in ds {
                let w = d.config.weight as i64;
                if w > 0 {
                    g = if g > 0 { gcd(w as u32, g as u32) as i64 } else { w };
                }
            }
            let di = if g > 0 { g } else { 1 };
            let max = ds.iter().map(|d| d.config.weight as i64).max().unwrap_or(0);
            let mw = max - (di - 1);
            KernelWrr {
                cl: None,
                cw: mw,
                mw,
                di,
            }
        }

        fn schedule(&mut self, ds: &[Destination]) -> Option<usize> {
            if self.mw == 0 {
                return None;
            }
            let last = self.cl;
            let mut dest = self.cl;
            let mut stop: Option<usize> = None;
            let (mut last_pass, mut restarted) = (false, false);
            loop {
                let from = dest.map_or(0, |i| i + 1);
                for (i, d) in ds.iter().enumerate().skip(from) {
                    if !d.state.is_overloaded() && d.weight() as i64 >= self.cw {
                        self.cl = Some(i);
                        return Some(i);
                    }
                    if stop == Some(i) {
                        self.cl = Some(i);
                        return None;
                    }
                }
                dest = None;
                self.cw -= self.di;
                if self.cw <= 0 {
                    self.cw = self.mw;
                    if last_pass || last.is_none() {
                        self.cl = None;
                        return None;
                    }
                    restarted = true;
                }
                last_pass = self.cw <= self.di;
                if last_pass && restarted && last.is_some() {
                    stop = last;
                }
            }
        }
    }

    use proptest::prelude::*;

    proptest! {
        #[test]
        fn wrr_equals_the_kernel_loop_walked_or_indexed(
            // Lists on both sides of scan_max (64): walked as the kernel does, or indexed.
            weights in proptest::collection::vec(
                prop_oneof![0u32..7, Just(0u32), (1u32..5).prop_map(|x| x * 4)],
                1..3 * crate::sched::load_index::scan_max(SchedulerKind::Wrr),
            ),
            ops in proptest::collection::vec((0usize..64, 0u8..4, 0u32..1025), 0..120),
        ) {
            let ds = dests(&weights);
            for d in &ds {
                d.state.set_thresholds(1, 0);
            }
            let s = build(&ds, SchedFlags::NONE, None);
            for d in &ds {
                prop_assert_eq!(
                    d.state.has_listener(),
                    ds.len() > crate::sched::load_index::scan_max(SchedulerKind::Wrr)
                );
            }
            let mut k = KernelWrr::new(&ds);
            for (slot, op, x) in ops {
                let d = &ds[slot % ds.len()];
                match op {
                    0 => d.state.bind(ConnClass::Inactive),   // overloads (upper 1)
                    1 => d.state.unbind(ConnClass::Inactive), // clears it
                    2 => d.state.set_ramp(x),
                    _ => {}
                }
                for _ in 0..3 {
                    prop_assert_eq!(s.schedule(&ds, &flow(x), Time::ZERO), k.schedule(&ds));
                }
            }
        }
    }

    proptest! {
        #[test]
        fn first_at_least_equals_a_linear_search(
            weights in proptest::collection::vec(0u32..10, 1..70),
            pos in 0usize..80,
            c in 1u32..11,
        ) {
            let ds = dests(&weights);
            let index = LoadIndex::<MaxWeight>::new(&ds);
            let want = (pos..weights.len()).find(|&i| weights[i] >= c);
            prop_assert_eq!(index.first_at_least(pos, c), want);
        }
    }

    #[test]
    fn coarse_gcd_makes_the_ramp_coarse() {
        // gcd 4 → mw 1: a single sweep at cw 1, where a ramped weight of 2 still counts.
        let ds = dests(&[4, 4]);
        let s = build(&ds, SchedFlags::NONE, None);
        ds[1].state.set_ramp(RAMP_FULL / 2);
        assert_eq!(names(&run(&*s, &ds, 4)), "ABAB");
    }
}
