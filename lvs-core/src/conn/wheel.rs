//! The expiry timer wheel, owned by the housekeeper (the one thread inside
//! [`ConnTable::expire`](super::ConnTable::expire) at a time).
//!
//! Each arena slot has a (prev, next) link pair, kept in the entry itself (see [`Links`]);
//! each wheel slot is a doubly linked list of arena slots, so filing, unfiling and popping
//! are O(1). Entries are filed by the deadline they had when filed; packets only move the
//! deadline forward (one store) and never touch the wheel. When the wheel reaches an entry
//! whose deadline moved, it files it again: one re-file per timeout period at most, so
//! expiry is amortised O(1).

use std::sync::atomic::{AtomicU32, Ordering};

/// Wheel granularity in milliseconds.
pub(crate) const TICK_MS: u64 = 250;
/// Number of wheel slots (4096 × 250 ms ≈ 17 min horizon; later deadlines wrap).
pub(crate) const WHEEL_SLOTS: u64 = 4096;

const NIL: u32 = u32::MAX;
/// The `prev` link of a slot that is in no list.
pub(crate) const UNLINKED: u32 = u32::MAX - 1;

/// Where the wheel finds an arena slot's link words. Only the wheel's owner touches them,
/// so relaxed accesses suffice (the wheel's lock orders them).
pub(crate) trait Links {
    /// Slot `i`'s links: previous (an arena slot, a wheel-slot marker, or [`UNLINKED`]),
    /// then next.
    fn links(&self, i: u32) -> &[AtomicU32; 2];
}

#[derive(Debug)]
pub(crate) struct Wheel {
    heads: Vec<u32>,
    /// Next tick to process; ticks before it are done.
    pub(crate) next_tick: u64,
    pub(crate) started: bool,
    /// Arena slot numbers are below this; `base + s` in a prev link means "head of wheel slot s".
    base: u32,
}

#[inline]
fn get(a: &AtomicU32) -> u32 {
    a.load(Ordering::Relaxed)
}
#[inline]
fn set(a: &AtomicU32, v: u32) {
    a.store(v, Ordering::Relaxed)
}

impl Wheel {
    /// A wheel for arena slots numbered below `slots`.
    pub(crate) fn new(slots: u32) -> Wheel {
        assert!((slots as u64) + WHEEL_SLOTS < UNLINKED as u64);
        Wheel {
            heads: vec![NIL; WHEEL_SLOTS as usize],
            next_tick: 0,
            started: false,
            base: slots,
        }
    }

    pub(crate) fn is_linked(&self, l: &impl Links, idx: u32) -> bool {
        get(&l.links(idx)[0]) != UNLINKED
    }

    /// Files `idx` under the tick of `deadline_ms`, but never before `min_tick` and never a
    /// full turn or more after the tick being processed (`next_tick`), so that a re-file
    /// never lands in the slot being processed; a later deadline is re-filed on the way.
    pub(crate) fn link(&mut self, l: &impl Links, idx: u32, deadline_ms: u64, min_tick: u64) {
        debug_assert!(!self.is_linked(l, idx));
        let tick = (deadline_ms / TICK_MS)
            .max(min_tick)
            .min(self.next_tick + WHEEL_SLOTS - 1);
        let slot = (tick % WHEEL_SLOTS) as usize;
        let head = self.heads[slot];
        let own = l.links(idx);
        set(&own[0], self.base + slot as u32);
        set(&own[1], head);
        if head != NIL {
            set(&l.links(head)[0], idx);
        }
        self.heads[slot] = idx;
    }

    /// Removes `idx` from its list if it is in one.
    pub(crate) fn unlink(&mut self, l: &impl Links, idx: u32) {
        let own = l.links(idx);
        let p = get(&own[0]);
        if p == UNLINKED {
            return;
        }
        let n = get(&own[1]);
        if p >= self.base {
            self.heads[(p - self.base) as usize] = n;
        } else {
            set(&l.links(p)[1], n);
        }
        if n != NIL {
            set(&l.links(n)[0], p);
        }
        set(&own[0], UNLINKED);
        set(&own[1], NIL);
    }

    /// Takes the first entry of the slot of `tick`.
    pub(crate) fn pop(&mut self, l: &impl Links, tick: u64) -> Option<u32> {
        let head = self.heads[(tick % WHEEL_SLOTS) as usize];
        if head == NIL {
            return None;
        }
        self.unlink(l, head);
        Some(head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct V(Vec<[AtomicU32; 2]>);
    impl Links for V {
        fn links(&self, i: u32) -> &[AtomicU32; 2] {
            &self.0[i as usize]
        }
    }

    #[test]
    fn link_unlink_pop_keep_lists_consistent() {
        let l = V((0..8)
            .map(|_| [AtomicU32::new(UNLINKED), AtomicU32::new(NIL)])
            .collect());
        let mut w = Wheel::new(8);
        w.link(&l, 1, 1000, 0); // tick 4
        w.link(&l, 2, 1100, 0); // tick 4
        w.link(&l, 3, 5000, 0); // tick 20
        w.unlink(&l, 1);
        assert_eq!(w.pop(&l, 4), Some(2));
        assert_eq!(w.pop(&l, 4), None);
        assert_eq!(w.pop(&l, 20), Some(3));
        // A deadline past the horizon lands in the last slot before the turn of the tick
        // being processed, never in that tick's own slot (which would loop forever).
        w.next_tick = 10;
        w.link(&l, 4, (WHEEL_SLOTS + 50) * TICK_MS, 11);
        assert_eq!(w.pop(&l, 10), None);
        assert_eq!(w.pop(&l, 10 + WHEEL_SLOTS - 1), Some(4));
        w.next_tick = 0;
        // A deadline in the past lands at min_tick.
        w.link(&l, 5, 0, 7);
        assert_eq!(w.pop(&l, 7), Some(5));
        assert!(!w.is_linked(&l, 5));
    }
}
