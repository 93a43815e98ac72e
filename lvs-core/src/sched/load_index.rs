//! load_index — a lock-free segment tree over a service's destination slots that keeps the
//! answer of a kernel scheduler's list scan up to date, so a pick reads the root in O(1)
//! (lc, wlc, sed, nq, fo, ovf), or descends it in O(log n) (wrr, twos), instead of scanning.
//!
//! # Layout
//! `cap` = the next power of two ≥ n. Node 1 is the root, node `i` has children `2i` and
//! `2i + 1`, leaves are nodes `cap + slot`. Leaves are not stored: a leaf's value is a
//! function of its slot's cached *key* (load and candidate weight packed into a `u64`, see
//! [`pack`]), refreshed from the live [`DestState`](crate::dest::DestState) whenever the
//! destination notifies its [`LoadListener`]. Combining two children reads only node values
//! and keys, never the destinations, so updates and picks stay in the index's own memory.
//!
//! # Cost
//! A pick reads the root (tournaments) or walks one or two root-to-leaf paths (wrr, twos).
//! A notification swaps the key and, only if it changed, recomputes the nodes above it:
//! one compare-and-swap per level up to the first level where nothing changed (for the
//! current winner, usually up to the root). O(log n) in every case.
//!
//! # Concurrency
//! Every destination notifies from whichever thread bound, released or reclassified a
//! connection, so many threads update the tree at once with plain atomics and no lock.
//! Each node word is `version << 32 | value`; a node is rewritten by recomputing it from its
//! inputs and compare-and-swapping it with the version bumped, retrying when another thread
//! got there first. A recomputation that read a child before a concurrent child update
//! therefore cannot overwrite the node after the other thread's own recomputation. Walking
//! up stops early once a node's value is unchanged and (for tournaments) is not the slot
//! being updated, because nothing above can then change.
//!
//! What remains racy, and is accepted (the kernel's own counters are read racily during its
//! scans too):
//! - a key may briefly lag the live counters (two threads refreshing the same slot);
//! - so the root may briefly name a winner that a fresh scan would not pick, until the
//!   next notification along its path (every bind of the picked destination is one);
//! - a briefly stale root may name a destination that has just become ineligible: callers
//!   check the named slot live, repair it with [`LoadIndex::refresh`] and, after a few
//!   failed tries, fall back to a plain scan. They never return it;
//! - a root that briefly says "nobody" while a destination has just become eligible gives
//!   `None` for that pick, as the kernel would had it read the counters a moment earlier;
//! - building a new snapshot's index re-registers the listeners, so the previous snapshot's
//!   scheduler (still serving until the swap) stops following loads a moment early.
//!
//! Invariants kept at all times: a node value is either a slot `< n` or the policy's
//! `EMPTY`; keys and nodes are only ever indexed in range.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::dest::{Destination, ListenerSlot, LoadListener, MAX_WEIGHT};

/// No destination: the value of an empty tournament node.
pub(super) const NONE: u32 = u32::MAX;

const LOAD_MAX: u64 = (1 << 48) - 1;
const VALUE_MASK: u64 = 0xFFFF_FFFF;
const VERSION_ONE: u64 = 1 << 32;

/// Packs a load figure and a candidate weight (0 = not a candidate) into one key.
#[inline]
pub(super) fn pack(load: u64, weight: u32) -> u64 {
    (load.min(LOAD_MAX) << 16) | weight.min(MAX_WEIGHT) as u64
}

/// The candidate weight of a key: 0 when the destination may not be picked.
#[inline]
pub(super) fn key_weight(key: u64) -> u64 {
    key & 0xFFFF
}

/// The load figure of a key.
#[inline]
pub(super) fn key_load(key: u64) -> u64 {
    key >> 16
}

/// The weight a scheduler compares for `d`: its effective (ramped) weight when it may be
/// picked (configured weight > 0 and not OVERLOADED), else 0.
#[inline]
pub(super) fn candidate_weight(d: &Destination) -> u32 {
    if d.is_eligible() { d.weight() } else { 0 }
}

/// What a tree computes: the key of a destination, the value of its leaf, and how two
/// children combine (the left child covers the lower slots, i.e. earlier in list order).
pub(super) trait Policy: Send + Sync + 'static {
    /// Value of a padding leaf beyond the last slot.
    const EMPTY: u32;
    /// True when `combine` reads the keys of the slots its inputs name (tournaments).
    const READS_KEYS: bool;
    /// The cached key of a destination.
    fn key(d: &Destination) -> u64;
    /// The leaf value of `slot` whose key is `key`.
    fn leaf(slot: u32, key: u64) -> u32;
    /// The value of a node from its children's values.
    fn combine(keys: &[AtomicU64], left: u32, right: u32) -> u32;
}

/// A kernel least-load rule: how to rate a destination and which of two wins.
pub(super) trait LoadRule: Send + Sync + 'static {
    /// The destination's key: `pack(load, weight)` with weight 0 when it may not be picked.
    fn key(d: &Destination) -> u64;
    /// True when `right` (later in list order) strictly beats `left`, i.e. when the
    /// kernel's scan, holding `left`, would switch to `right`.
    fn right_wins(left: u64, right: u64) -> bool;
}

/// Tournament over a [`LoadRule`]: every node holds the slot the kernel's scan would pick
/// among its leaves (ties to the earliest), or [`NONE`].
pub(super) struct Tournament<R>(PhantomData<fn() -> R>);

impl<R: LoadRule> Policy for Tournament<R> {
    const EMPTY: u32 = NONE;
    const READS_KEYS: bool = true;

    #[inline]
    fn key(d: &Destination) -> u64 {
        R::key(d)
    }

    #[inline]
    fn leaf(slot: u32, key: u64) -> u32 {
        if key_weight(key) != 0 { slot } else { NONE }
    }

    #[inline]
    fn combine(keys: &[AtomicU64], left: u32, right: u32) -> u32 {
        // A slot out of range (NONE) reads as key 0: weight 0, not a candidate.
        let l = keys.get(left as usize).map_or(0, |k| k.load(Ordering::Acquire));
        let r = keys.get(right as usize).map_or(0, |k| k.load(Ordering::Acquire));
        match (key_weight(l) != 0, key_weight(r) != 0) {
            (true, true) => {
                if R::right_wins(l, r) {
                    right
                } else {
                    left
                }
            }
            (true, false) => left,
            (false, true) => right,
            (false, false) => NONE,
        }
    }
}

/// The kernel-style list scan for a [`LoadRule`]: the reference the tournament reproduces,
/// and the fallback when the index cannot answer.
pub(super) fn scan<R: LoadRule>(dests: &[Destination]) -> Option<usize> {
    let mut best: Option<(usize, u64)> = None;
    for (i, d) in dests.iter().enumerate() {
        let k = R::key(d);
        if key_weight(k) == 0 {
            continue;
        }
        match best {
            Some((_, bk)) if !R::right_wins(bk, k) => {}
            _ => best = Some((i, k)),
        }
    }
    best.map(|(i, _)| i)
}

/// The index itself: keys, nodes and the destinations it was built for.
pub(super) struct LoadIndex<P> {
    dests: Box<[Destination]>,
    keys: Box<[AtomicU64]>,
    nodes: Box<[AtomicU64]>,
    cap: usize,
    _policy: PhantomData<fn() -> P>,
}

impl<P> fmt::Debug for LoadIndex<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadIndex")
            .field("slots", &self.dests.len())
            .field("cap", &self.cap)
            .finish()
    }
}

impl<P: Policy> LoadIndex<P> {
    /// Builds the index for `dests` and registers it as their load listener (replacing the
    /// previous snapshot's). Runs on the control plane: O(n log n).
    pub(super) fn new(dests: &[Destination]) -> Arc<LoadIndex<P>> {
        let n = dests.len();
        let cap = n.max(1).next_power_of_two();
        let keys: Box<[AtomicU64]> = dests.iter().map(|d| AtomicU64::new(P::key(d))).collect();
        // Internal nodes 1..cap (0 unused); built bottom-up before anyone can see them.
        let nodes: Box<[AtomicU64]> = (0..cap).map(|_| AtomicU64::new(P::EMPTY as u64)).collect();
        let index = LoadIndex {
            dests: dests.into(),
            keys,
            nodes,
            cap,
            _policy: PhantomData,
        };
        for i in (1..cap).rev() {
            index.nodes[i].store(index.recompute(i) as u64, Ordering::Relaxed);
        }
        let index = Arc::new(index);
        for (slot, d) in dests.iter().enumerate() {
            d.state.set_listener(Some(ListenerSlot {
                listener: index.clone(),
                slot,
            }));
        }
        // Counters that moved between computing the keys and registering were not notified
        // to us: refresh every slot once now that we listen.
        for slot in 0..n {
            index.refresh(slot);
        }
        index
    }

    /// Number of destination slots.
    #[inline]
    pub(super) fn len(&self) -> usize {
        self.dests.len()
    }

    /// The value of node `i` (a leaf's from its key).
    #[inline]
    fn value(&self, i: usize) -> u32 {
        if i >= self.cap {
            let slot = i - self.cap;
            match self.keys.get(slot) {
                Some(k) => P::leaf(slot as u32, k.load(Ordering::Acquire)),
                None => P::EMPTY,
            }
        } else {
            (self.nodes[i].load(Ordering::Acquire) & VALUE_MASK) as u32
        }
    }

    /// The root's value: the winning slot (tournaments), or the aggregate (sum, max).
    #[inline]
    pub(super) fn root(&self) -> u32 {
        self.value(1)
    }

    /// True when every node equals what its inputs give (only meaningful when quiescent).
    #[cfg(test)]
    pub(super) fn is_consistent(&self) -> bool {
        (1..self.cap).all(|i| self.value(i) == self.recompute(i))
    }

    /// The cached key of `slot`.
    #[cfg(test)]
    pub(super) fn key(&self, slot: usize) -> u64 {
        self.keys[slot].load(Ordering::Acquire)
    }

    /// What internal node `i` should hold given its children.
    fn recompute(&self, i: usize) -> u32 {
        P::combine(&self.keys, self.value(2 * i), self.value(2 * i + 1))
    }

    /// Recomputes internal node `i` and installs it with its version bumped; returns (old, new).
    fn update(&self, i: usize) -> (u32, u32) {
        let node = &self.nodes[i];
        let mut cur = node.load(Ordering::Acquire);
        loop {
            let v = self.recompute(i);
            let new = ((cur & !VALUE_MASK).wrapping_add(VERSION_ONE)) | v as u64;
            match node.compare_exchange_weak(cur, new, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return ((cur & VALUE_MASK) as u32, v),
                Err(actual) => cur = actual,
            }
        }
    }

    /// Re-reads destination `slot`'s live load into its key and fixes the nodes above it.
    /// O(log n); out-of-range slots are ignored.
    pub(super) fn refresh(&self, slot: usize) {
        let (Some(d), Some(key)) = (self.dests.get(slot), self.keys.get(slot)) else {
            return;
        };
        let mut k = P::key(d);
        let mut changed = false;
        // Re-read after storing so that a racing refresh of the same slot that stored an
        // older reading is overwritten (best effort, see the module docs).
        for _ in 0..3 {
            changed |= key.swap(k, Ordering::AcqRel) != k;
            let again = P::key(d);
            if again == k {
                break;
            }
            k = again;
        }
        if !changed {
            // Same key as before (e.g. an inactive connection for sed, any bind for fo):
            // nothing in the tree depends on this notification. Whoever stored a different
            // key propagates it.
            return;
        }
        // The key swap above is the leaf's update; the walk starts at its parent.
        let mut i = (self.cap + slot) / 2;
        while i >= 1 {
            let (old, new) = self.update(i);
            if old == new && !(P::READS_KEYS && new == slot as u32) {
                break;
            }
            i /= 2;
        }
    }

    /// First slot `>= pos` whose leaf value is at least `c` (max trees; `c >= 1`):
    /// climbs from `pos`'s leaf to the first subtree on its right holding a value `>= c`,
    /// then descends into it. O(log n), and O(1) when the answer is near `pos`. Under
    /// concurrent updates it may return a slot whose leaf is below `c`; callers validate.
    pub(super) fn first_at_least(&self, pos: usize, c: u32) -> Option<usize> {
        if pos >= self.dests.len() {
            return None;
        }
        let mut i = self.cap + pos;
        while self.value(i) < c {
            // Up while a right child, then over to the right sibling.
            while i & 1 == 1 {
                i >>= 1;
            }
            if i == 0 {
                return None;
            }
            i += 1;
        }
        while i < self.cap {
            i = if self.value(2 * i) >= c { 2 * i } else { 2 * i + 1 };
        }
        let slot = i - self.cap;
        (slot < self.dests.len()).then_some(slot)
    }

    /// [`descend_sum`](Self::descend_sum) for two positions at once (the two walks are
    /// independent, so their loads overlap).
    pub(super) fn descend_sum2(&self, mut r1: u64, mut r2: u64) -> (usize, usize) {
        let (mut i1, mut i2) = (1, 1);
        while i1 < self.cap {
            let l1 = self.value(2 * i1) as u64;
            let l2 = self.value(2 * i2) as u64;
            if r1 <= l1 {
                i1 *= 2;
            } else {
                r1 -= l1;
                i1 = 2 * i1 + 1;
            }
            if r2 <= l2 {
                i2 *= 2;
            } else {
                r2 -= l2;
                i2 = 2 * i2 + 1;
            }
        }
        (i1 - self.cap, i2 - self.cap)
    }

    /// The slot whose leaf covers position `r` (1-based) of the running sum of leaf values
    /// (sum trees): the first slot whose inclusive prefix sum is `>= r`. O(log n). May land
    /// on a zero leaf or a padding slot under concurrent updates; callers validate.
    #[cfg(test)]
    pub(super) fn descend_sum(&self, mut r: u64) -> usize {
        let mut i = 1;
        while i < self.cap {
            let l = self.value(2 * i) as u64;
            if r <= l {
                i *= 2;
            } else {
                r -= l;
                i = 2 * i + 1;
            }
        }
        i - self.cap
    }
}

impl<P: Policy> LoadListener for LoadIndex<P> {
    fn load_changed(&self, slot: usize) {
        self.refresh(slot);
    }
}

/// A scheduler that answers from a [`Tournament`] over the rule `R`: the kernel's winner
/// with its list-order tie-break, read from the root in O(1).
pub(super) struct LeastLoad<R: LoadRule> {
    index: Arc<LoadIndex<Tournament<R>>>,
}

impl<R: LoadRule> fmt::Debug for LeastLoad<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeastLoad").field("index", &self.index).finish()
    }
}

impl<R: LoadRule> LeastLoad<R> {
    /// Builds the tournament for `dests` and registers it as their load listener.
    pub(super) fn new(dests: &[Destination]) -> LeastLoad<R> {
        LeastLoad {
            index: LoadIndex::new(dests),
        }
    }

    /// The kernel's pick: the root if it is still a candidate, else repaired, else a scan.
    #[inline]
    pub(super) fn pick(&self, dests: &[Destination]) -> Option<usize> {
        if dests.len() != self.index.len() {
            return scan::<R>(dests);
        }
        for _ in 0..3 {
            let s = self.index.root();
            if s == NONE {
                return None;
            }
            let s = s as usize;
            match dests.get(s) {
                Some(d) if key_weight(R::key(d)) != 0 => return Some(s),
                Some(_) => self.index.refresh(s),
                None => break,
            }
        }
        scan::<R>(dests)
    }

    /// The index, for tests.
    #[cfg(test)]
    pub(super) fn index(&self) -> &LoadIndex<Tournament<R>> {
        &self.index
    }
}

/// Defines a least-load scheduler: the public type `$name` over a [`LeastLoad`] index ordered
/// by `$rule`, its [`Scheduler`](super::Scheduler) impl reporting `$kind`, and the module's
/// `build` function.
macro_rules! least_load_scheduler {
    ($(#[$doc:meta])* $name:ident, $rule:ty, $kind:expr) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name($crate::sched::load_index::LeastLoad<$rule>);

        impl $crate::sched::Scheduler for $name {
            fn kind(&self) -> $crate::sched::SchedulerKind {
                $kind
            }

            #[inline]
            fn schedule(
                &self,
                dests: &[$crate::dest::Destination],
                _flow: &$crate::sched::FlowKey,
                _now: $crate::time::Time,
            ) -> Option<usize> {
                self.0.pick(dests)
            }

            fn as_any(&self) -> &dyn std::any::Any {
                self
            }
        }

        pub(super) fn build(
            dests: &[$crate::dest::Destination],
            _flags: $crate::service::SchedFlags,
            _prev: Option<&dyn $crate::sched::Scheduler>,
        ) -> Box<dyn $crate::sched::Scheduler> {
            Box::new($name($crate::sched::load_index::LeastLoad::new(dests)))
        }
    };
}
pub(super) use least_load_scheduler;

#[cfg(test)]
pub(super) mod tests {
    //! Shared fixtures for the scheduler tests.
    use super::*;
    use crate::dest::{ConnClass, DestConfig};
    use crate::sched::FlowKey;
    use crate::service::Protocol;
    use std::net::IpAddr;

    /// Destinations with `weights`, in list order, addresses 10.0.1.(i+1):80.
    pub fn dests(weights: &[u32]) -> Vec<Destination> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                Destination::new(DestConfig {
                    weight: w,
                    ..DestConfig::new([10, 0, 1, i as u8 + 1].into(), 80)
                })
            })
            .collect()
    }

    /// Sets a destination's counters by binding.
    pub fn load(d: &Destination, active: u32, inactive: u32) {
        for _ in 0..active {
            d.state.bind(ConnClass::Active);
        }
        for _ in 0..inactive {
            d.state.bind(ConnClass::Inactive);
        }
    }

    /// A TCP flow from client 192.0.2.x, port p.
    pub fn flow(x: u32) -> FlowKey {
        FlowKey {
            proto: Protocol::Tcp,
            src: IpAddr::from((0xC000_0200u32 | (x & 0xFF)).to_be_bytes()),
            src_port: 1024 + (x % 60000) as u16,
            dst: [10, 0, 0, 1].into(),
            dst_port: 80,
        }
    }

    struct Lc;
    impl LoadRule for Lc {
        fn key(d: &Destination) -> u64 {
            pack(d.state.overhead(), candidate_weight(d))
        }
        fn right_wins(l: u64, r: u64) -> bool {
            key_load(r) < key_load(l)
        }
    }

    #[test]
    fn sizes_one_to_nine_build_and_follow_updates() {
        for n in 1..=9usize {
            let ds = dests(&vec![1; n]);
            let ll = LeastLoad::<Lc>::new(&ds);
            assert_eq!(ll.pick(&ds), Some(0), "n={n}: all equal, first wins");
            // Load every slot but the last: the last must win.
            for d in &ds[..n - 1] {
                load(d, 1, 0);
            }
            assert_eq!(ll.pick(&ds), Some(n - 1), "n={n}");
            assert_eq!(ll.index().root() as usize, n - 1);
        }
    }

    #[test]
    fn root_is_none_when_nothing_is_eligible_and_recovers() {
        let ds = dests(&[0, 0, 0]);
        let ll = LeastLoad::<Lc>::new(&ds);
        assert_eq!(ll.index().root(), NONE);
        assert_eq!(ll.pick(&ds), None);
        let ds = dests(&[1, 1]);
        ds[0].state.set_thresholds(1, 0);
        ds[1].state.set_thresholds(1, 0);
        let ll = LeastLoad::<Lc>::new(&ds);
        load(&ds[0], 1, 0);
        load(&ds[1], 1, 0);
        assert_eq!(ll.pick(&ds), None, "both overloaded");
        ds[1].state.unbind(ConnClass::Active);
        assert_eq!(ll.pick(&ds), Some(1));
        assert_eq!(key_weight(ll.index().key(0)), 0);
    }

    #[test]
    fn stale_ineligible_root_is_repaired_not_returned() {
        let ds = dests(&[1, 1]);
        let ll = LeastLoad::<Lc>::new(&ds);
        load(&ds[1], 1, 0);
        assert_eq!(ll.pick(&ds), Some(0));
        // Unregister so the index misses the overload of slot 0.
        ds[0].state.set_listener(None);
        ds[0].state.set_thresholds(1, 0);
        load(&ds[0], 5, 0);
        assert!(ds[0].state.is_overloaded());
        assert_eq!(ll.index().root(), 0, "index is stale");
        assert_eq!(ll.pick(&ds), Some(1), "stale root repaired, never returned");
    }

    #[test]
    fn concurrent_binds_converge_to_the_scan() {
        let ds = dests(&[3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5]);
        let ll = LeastLoad::<Lc>::new(&ds);
        std::thread::scope(|s| {
            for t in 0..4usize {
                let ds = &ds;
                s.spawn(move || {
                    for i in 0..2000usize {
                        let d = &ds[(i * 7 + t * 3) % ds.len()];
                        d.state.bind(ConnClass::Active);
                        if i % 3 != 0 {
                            d.state.unbind(ConnClass::Active);
                        }
                    }
                });
            }
        });
        // Quiescent now: no node may have lost a concurrent child update.
        assert!(ll.index().is_consistent());
        // Keys may lag only on same-slot races; one more notification each fixes them.
        for d in &ds {
            d.state.notify();
        }
        assert_eq!(ll.pick(&ds), scan::<Lc>(&ds));
        assert_eq!(ll.index().root() as usize, scan::<Lc>(&ds).unwrap());
    }
}

#[cfg(test)]
mod oracle_tests {
    //! The indexed picks of lc, wlc, sed, nq, fo and ovf against the kernel's loops,
    //! transcribed plainly (effective weight standing in for `dest->weight`).
    use super::tests::{dests, flow};
    use crate::dest::{ConnClass, Destination};
    use crate::sched::{self, SchedulerKind};
    use crate::service::SchedFlags;
    use crate::time::Time;
    use proptest::prelude::*;

    fn overloaded(d: &Destination) -> bool {
        d.state.is_overloaded()
    }

    fn w(d: &Destination) -> u64 {
        d.weight() as u64
    }

    fn overhead(d: &Destination) -> u64 {
        (d.state.active_conns() as u64) * 256 + d.state.inactive_conns() as u64
    }

    fn active(d: &Destination) -> u64 {
        d.state.active_conns() as u64
    }

    fn kernel(kind: SchedulerKind, ds: &[Destination]) -> Option<usize> {
        match kind {
            SchedulerKind::Lc => {
                let mut least: Option<(usize, u64)> = None;
                for (i, d) in ds.iter().enumerate() {
                    if overloaded(d) || w(d) == 0 {
                        continue;
                    }
                    let doh = overhead(d);
                    if least.is_none() || doh < least.unwrap().1 {
                        least = Some((i, doh));
                    }
                }
                least.map(|l| l.0)
            }
            SchedulerKind::Wlc | SchedulerKind::Sed => {
                let oh = |d: &Destination| {
                    if kind == SchedulerKind::Wlc {
                        overhead(d)
                    } else {
                        active(d) + 1
                    }
                };
                let first = ds.iter().position(|d| !overloaded(d) && w(d) > 0)?;
                let (mut least, mut loh) = (first, oh(&ds[first]));
                for (i, d) in ds.iter().enumerate().skip(first + 1) {
                    if overloaded(d) {
                        continue;
                    }
                    let doh = oh(d);
                    if loh * w(d) > doh * w(&ds[least]) {
                        least = i;
                        loh = doh;
                    }
                }
                Some(least)
            }
            SchedulerKind::Nq => {
                let mut least: Option<(usize, u64)> = None;
                for (i, d) in ds.iter().enumerate() {
                    if overloaded(d) || w(d) == 0 {
                        continue;
                    }
                    let doh = active(d) + 1;
                    if active(d) == 0 {
                        return Some(i);
                    }
                    match least {
                        Some((l, loh)) if loh * w(d) <= doh * w(&ds[l]) => {}
                        _ => least = Some((i, doh)),
                    }
                }
                least.map(|l| l.0)
            }
            SchedulerKind::Fo => {
                let (mut h, mut hw) = (None, 0);
                for (i, d) in ds.iter().enumerate() {
                    if !overloaded(d) && w(d) > hw {
                        h = Some(i);
                        hw = w(d);
                    }
                }
                h
            }
            SchedulerKind::Ovf => {
                let (mut h, mut hw) = (None, 0);
                for (i, d) in ds.iter().enumerate() {
                    if overloaded(d) || active(d) > w(d) || w(d) == 0 {
                        continue;
                    }
                    if h.is_none() || w(d) > hw {
                        h = Some(i);
                        hw = w(d);
                    }
                }
                h
            }
            other => unreachable!("{other} has no oracle here"),
        }
    }

    const KINDS: [SchedulerKind; 6] = [
        SchedulerKind::Lc,
        SchedulerKind::Wlc,
        SchedulerKind::Sed,
        SchedulerKind::Nq,
        SchedulerKind::Fo,
        SchedulerKind::Ovf,
    ];

    proptest! {
        #[test]
        fn indexed_pick_equals_the_kernel_scan(
            kind in 0usize..6,
            setup in proptest::collection::vec((0u32..6, 0u32..4, 0u32..300, 0u32..6), 1..40),
            ops in proptest::collection::vec((0usize..64, 0u8..6, 0u32..1100), 0..80),
        ) {
            let kind = KINDS[kind];
            let weights: Vec<u32> = setup.iter().map(|s| s.0).collect();
            let ds = dests(&weights);
            for (d, &(_, a, i, upper)) in ds.iter().zip(&setup) {
                d.state.set_thresholds(if upper > 3 { upper * 2 } else { 0 }, 0);
                for _ in 0..a { d.state.bind(ConnClass::Active); }
                for _ in 0..i { d.state.bind(ConnClass::Inactive); }
            }
            let s = sched::build(kind, &ds, SchedFlags::NONE, None);
            prop_assert_eq!(s.schedule(&ds, &flow(0), Time::ZERO), kernel(kind, &ds));
            for (slot, op, x) in ops {
                let d = &ds[slot % ds.len()];
                match op {
                    0 => d.state.bind(ConnClass::Active),
                    1 => d.state.unbind(ConnClass::Active),
                    2 => d.state.bind(ConnClass::Inactive),
                    3 => d.state.unbind(ConnClass::Inactive),
                    4 => d.state.reclassify(ConnClass::Active, ConnClass::Inactive),
                    _ if x > 1024 => d.state.set_thresholds(x % 8, 0),
                    _ => d.state.set_ramp(x),
                }
                let picked = s.schedule(&ds, &flow(x), Time::ZERO);
                prop_assert_eq!(picked, kernel(kind, &ds), "{} after op {} on slot {}", kind, op, slot % ds.len());
                // A real new connection binds the picked destination.
                if let Some(i) = picked
                    && x % 3 == 0
                {
                    ds[i].state.bind(ConnClass::Active);
                    prop_assert_eq!(s.schedule(&ds, &flow(x), Time::ZERO), kernel(kind, &ds));
                }
            }
        }
    }
}
