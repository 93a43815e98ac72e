//! The expiry timer wheel, owned by the housekeeper (the one thread inside
//! [`ConnTable::expire`](super::ConnTable::expire) at a time).
//!
//! Each arena slot has a (prev, next) link here; each wheel slot is a doubly linked list
//! of arena slots, so filing, unfiling and popping are O(1). Entries are filed by the
//! deadline they had when filed; packets only move the deadline forward (one store) and
//! never touch the wheel. When the wheel reaches an entry whose deadline moved, it files
//! it again: one re-file per timeout period at most, so expiry is amortised O(1).

/// Wheel granularity in milliseconds.
pub(crate) const TICK_MS: u64 = 250;
/// Number of wheel slots (4096 × 250 ms ≈ 17 min horizon; later deadlines wrap).
pub(crate) const WHEEL_SLOTS: u64 = 4096;

const NIL: u32 = u32::MAX;
const UNLINKED: u32 = u32::MAX - 1;

#[derive(Debug)]
pub(crate) struct Wheel {
    prev: Vec<u32>,
    next: Vec<u32>,
    heads: Vec<u32>,
    /// Next tick to process; ticks before it are done.
    pub(crate) next_tick: u64,
    pub(crate) started: bool,
    arena: u32,
}

impl Wheel {
    pub(crate) fn new(arena: usize) -> Wheel {
        Wheel {
            prev: vec![UNLINKED; arena],
            next: vec![NIL; arena],
            heads: vec![NIL; WHEEL_SLOTS as usize],
            next_tick: 0,
            started: false,
            arena: arena as u32,
        }
    }

    pub(crate) fn is_linked(&self, idx: u32) -> bool {
        self.prev[idx as usize] != UNLINKED
    }

    /// Files `idx` under the tick of `deadline_ms`, but never before `min_tick` and never a
    /// full turn or more after the tick being processed (`next_tick`), so that a re-file
    /// never lands in the slot being processed; a later deadline is re-filed on the way.
    pub(crate) fn link(&mut self, idx: u32, deadline_ms: u64, min_tick: u64) {
        debug_assert!(!self.is_linked(idx));
        let tick = (deadline_ms / TICK_MS)
            .max(min_tick)
            .min(self.next_tick + WHEEL_SLOTS - 1);
        let slot = (tick % WHEEL_SLOTS) as usize;
        let head = self.heads[slot];
        self.prev[idx as usize] = self.arena + slot as u32;
        self.next[idx as usize] = head;
        if head != NIL {
            self.prev[head as usize] = idx;
        }
        self.heads[slot] = idx;
    }

    /// Removes `idx` from its list if it is in one.
    pub(crate) fn unlink(&mut self, idx: u32) {
        let p = self.prev[idx as usize];
        if p == UNLINKED {
            return;
        }
        let n = self.next[idx as usize];
        if p >= self.arena {
            self.heads[(p - self.arena) as usize] = n;
        } else {
            self.next[p as usize] = n;
        }
        if n != NIL {
            self.prev[n as usize] = p;
        }
        self.prev[idx as usize] = UNLINKED;
        self.next[idx as usize] = NIL;
    }

    /// Takes the first entry of the slot of `tick`.
    pub(crate) fn pop(&mut self, tick: u64) -> Option<u32> {
        let head = self.heads[(tick % WHEEL_SLOTS) as usize];
        if head == NIL {
            return None;
        }
        self.unlink(head);
        Some(head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_unlink_pop_keep_lists_consistent() {
        let mut w = Wheel::new(8);
        w.link(1, 1000, 0); // tick 4
        w.link(2, 1100, 0); // tick 4
        w.link(3, 5000, 0); // tick 20
        w.unlink(1);
        assert_eq!(w.pop(4), Some(2));
        assert_eq!(w.pop(4), None);
        assert_eq!(w.pop(20), Some(3));
        // A deadline past the horizon lands in the last slot before the turn of the tick
        // being processed, never in that tick's own slot (which would loop forever).
        w.next_tick = 10;
        w.link(4, (WHEEL_SLOTS + 50) * TICK_MS, 11);
        assert_eq!(w.pop(10), None);
        assert_eq!(w.pop(10 + WHEEL_SLOTS - 1), Some(4));
        w.next_tick = 0;
        // A deadline in the past lands at min_tick.
        w.link(5, 0, 7);
        assert_eq!(w.pop(7), Some(5));
        assert!(!w.is_linked(5));
    }
}
