//! A lock-free open-addressing index from a key hash to an arena slot number.
//!
//! The index is an array of cache-line buckets, each holding fourteen 4-byte slots and two
//! words of counters. A slot is `0` (empty) or `tag | slot_number`: the low `slot_bits` bits
//! are the slot number, the bits above hold the same bits of the key hash with the lowest of
//! them forced to 1 (so a used slot is never 0). Inserts and removals are single CASes on a
//! slot; there are no tombstones: a removed slot becomes empty at once.
//!
//! Each key prefers one half of its home bucket (slots 0–6 or 7–13, by one hash bit), so a
//! probe usually reads seven slots, not fourteen. A key that finds its half full goes to the
//! other half and counts itself in its half's *spill* counter; one that finds the whole
//! bucket full goes on to the next buckets (where it takes any slot) and counts itself in
//! the *overflow* counter of every bucket it passes. A lookup reads the other half only
//! while its half's spill counter is non-zero, and goes past a bucket only while its
//! overflow counter is non-zero; counters are raised before the key is stored and lowered
//! after it is cleared, so a present key is always found. The index never decides a match
//! by itself: callers verify the candidate entry's key (see the table's seqlock read), so a
//! stale or colliding slot costs a probe, never a wrong answer.

use super::atomic::{AtomicU32, Ordering};

/// Slots per bucket.
pub(crate) const SLOTS: usize = 14;
/// Slots in the first half of a bucket (the second half has the rest).
const HALF: usize = 7;
const _: () = assert!(SLOTS == 2 * HALF);
/// Where the spill counter of half `p` sits in a bucket's spill word (16 bits each: half
/// 0 in the low bits, half 1 in the high bits).
#[inline]
fn spill_shift(p: usize) -> u32 {
    (p as u32 & 1) << 4
}

#[repr(C, align(64))]
struct Bucket {
    slots: [AtomicU32; SLOTS],
    /// Keys preferring half 0 (low 16 bits) or half 1 (high 16 bits) stored in the other half.
    spill: AtomicU32,
    /// Keys pushed past this bucket.
    overflow: AtomicU32,
}

impl Bucket {
    fn new() -> Bucket {
        Bucket {
            slots: std::array::from_fn(|_| AtomicU32::new(0)),
            spill: AtomicU32::new(0),
            overflow: AtomicU32::new(0),
        }
    }
}

/// One index (client side or server side).
pub(crate) struct Index {
    buckets: Box<[Bucket]>,
    /// Mask of the slot-number bits of a slot.
    idx_mask: u32,
    /// The lowest tag bit (forced to 1 in every tag).
    tag_one: u32,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("buckets", &self.buckets.len())
            .finish()
    }
}

/// Bytes one bucket occupies.
pub(crate) const BUCKET_BYTES: usize = std::mem::size_of::<Bucket>();

/// Most slot-number bits an index supports (at least 4 bits are left for the tag).
pub(crate) const MAX_SLOT_BITS: u32 = 28;

impl Index {
    /// An index for up to `keys` keys whose slot numbers are below `1 << slot_bits`, at 6.75
    /// keys per 14-slot bucket on average (48 % load), so that nearly every key sits in its
    /// home bucket, most in their preferred half, and nearly every miss ends there: one cache
    /// line per probe.
    pub(crate) fn for_keys(keys: usize, slot_bits: u32) -> Index {
        assert!(slot_bits <= MAX_SLOT_BITS);
        let n = (keys * 4).div_ceil(27).max(2);
        Index {
            buckets: (0..n).map(|_| Bucket::new()).collect(),
            idx_mask: ((1u64 << slot_bits) - 1) as u32,
            tag_one: 1 << slot_bits,
        }
    }

    /// Number of buckets.
    pub(crate) fn buckets(&self) -> usize {
        self.buckets.len()
    }

    /// Sum of the overflow counters (0 when every key sits in its home bucket).
    #[cfg(any(test, loom))]
    pub(crate) fn overflow_total(&self) -> u64 {
        self.buckets
            .iter()
            .map(|b| b.overflow.load(Ordering::SeqCst) as u64)
            .sum()
    }

    /// Sum of the spill counters (0 when every key sits in its preferred half).
    #[cfg(any(test, loom))]
    pub(crate) fn spill_total(&self) -> u64 {
        self.buckets
            .iter()
            .map(|b| {
                let w = b.spill.load(Ordering::SeqCst);
                ((w >> spill_shift(0)) & 0xffff) as u64 + ((w >> spill_shift(1)) & 0xffff) as u64
            })
            .sum()
    }

    /// The half of its home bucket a key prefers.
    #[inline]
    fn half(hash: u64) -> usize {
        (hash & 1) as usize
    }

    #[inline]
    fn tag(&self, hash: u64) -> u32 {
        ((hash as u32) | self.tag_one) & !self.idx_mask
    }

    /// The home bucket of `hash`.
    #[inline]
    pub(crate) fn home(&self, hash: u64) -> usize {
        (((hash >> 32) * self.buckets.len() as u64) >> 32) as usize
    }

    #[inline]
    fn next(&self, b: usize) -> usize {
        if b + 1 == self.buckets.len() { 0 } else { b + 1 }
    }

    /// Calls `check(slot_number)` for every slot whose tag matches `hash`, in probe order,
    /// until it returns `Some`; `None` when the probe sequence ends.
    #[inline(always)]
    pub(crate) fn find<T>(&self, hash: u64, mut check: impl FnMut(u32) -> Option<T>) -> Option<T> {
        let tag = self.tag(hash);
        let one = self.tag_one;
        let b = self.home(hash);
        let p = Self::half(hash);
        // Home bucket: the preferred half, the other one only if keys spilled into it.
        let bucket = self.buckets.get(b)?;
        if let Some(t) = Self::scan_half(bucket, p, tag, one, &mut check) {
            return Some(t);
        }
        if (bucket.spill.load(Ordering::SeqCst) >> spill_shift(p)) & 0xffff != 0
            && let Some(t) = Self::scan_half(bucket, 1 - p, tag, one, &mut check)
        {
            return Some(t);
        }
        if bucket.overflow.load(Ordering::SeqCst) == 0 {
            return None;
        }
        self.find_past(b, tag, &mut check)
    }

    /// The part of [`find`](Self::find) past home bucket `b`: keys pushed past their home
    /// take any slot of the next buckets.
    #[inline(never)]
    fn find_past<T>(&self, mut b: usize, tag: u32, check: &mut impl FnMut(u32) -> Option<T>) -> Option<T> {
        for _ in 1..self.buckets.len() {
            b = self.next(b);
            let bucket = &self.buckets[b];
            if let Some(t) = Self::scan(&bucket.slots, tag, self.tag_one, check) {
                return Some(t);
            }
            if bucket.overflow.load(Ordering::SeqCst) == 0 {
                return None;
            }
        }
        None
    }

    /// [`scan`](Self::scan) over half `h` (0 or 1) of `bucket`: slots `h * HALF ..`, by
    /// arithmetic rather than a choice between two slices.
    #[inline(always)]
    fn scan_half<T>(
        bucket: &Bucket,
        h: usize,
        tag: u32,
        one: u32,
        check: &mut impl FnMut(u32) -> Option<T>,
    ) -> Option<T> {
        for i in 0..HALF {
            let x = bucket.slots[(h & 1) * HALF + i].load(Ordering::SeqCst) ^ tag;
            if x < one
                && let Some(t) = check(x)
            {
                return Some(t);
            }
        }
        None
    }

    /// Calls `check` on the slot number of each slot of `slots` whose tag is `tag`, until it
    /// returns `Some`. `v ^ tag` is below `one` (the lowest tag bit) exactly when `v`'s tag
    /// bits are `tag`, and it is then the slot number.
    #[inline(always)]
    fn scan<T, const N: usize>(
        slots: &[AtomicU32; N],
        tag: u32,
        one: u32,
        check: &mut impl FnMut(u32) -> Option<T>,
    ) -> Option<T> {
        for s in slots {
            let x = s.load(Ordering::SeqCst) ^ tag;
            if x < one
                && let Some(t) = check(x)
            {
                return Some(t);
            }
        }
        None
    }

    /// Loads the home bucket's overflow word (to bring its cache line in early).
    #[inline]
    pub(crate) fn touch(&self, hash: u64) -> u32 {
        self.touch_bucket(self.home(hash))
    }

    /// Loads bucket `b`'s overflow word (0 past the end).
    #[inline]
    pub(crate) fn touch_bucket(&self, b: usize) -> u32 {
        self.buckets
            .get(b)
            .map_or(0, |x| x.overflow.load(Ordering::Relaxed))
    }

    /// The home bucket's address (for a prefetch).
    #[inline]
    pub(crate) fn home_addr(&self, hash: u64) -> *const u8 {
        self.bucket_addr(self.home(hash))
    }

    /// Bucket `b`'s address (for a prefetch; null past the end, which a prefetch ignores).
    #[inline]
    pub(crate) fn bucket_addr(&self, b: usize) -> *const u8 {
        self.buckets
            .get(b)
            .map_or(std::ptr::null(), |x| (x as *const Bucket).cast())
    }

    /// Loads the overflow word of the bucket after the home bucket.
    #[inline]
    pub(crate) fn touch_next(&self, hash: u64) -> u32 {
        self.buckets[self.next(self.home(hash))]
            .overflow
            .load(Ordering::Relaxed)
    }

    /// Second stage of a batched lookup: a slot number in the home bucket whose tag matches
    /// (`u32::MAX` if none; the preferred half, and the other one if keys spilled into it)
    /// and whether the probe may have to go further (another match, or keys pushed past
    /// the bucket). Without data-dependent branches: a burst's buckets arrive in any order
    /// and a mispredicted match would throw away the work queued behind it.
    #[inline]
    pub(crate) fn home_candidate(&self, hash: u64) -> (u32, bool) {
        let tag = self.tag(hash);
        let bucket = &self.buckets[self.home(hash)];
        let p = Self::half(hash);
        let one = self.tag_one;
        let mut found = u32::MAX;
        let mut matches = 0u32;
        let mut scan = |slots: &[AtomicU32]| {
            for s in slots {
                // Below `tag_one` exactly on a tag match, and then the slot number.
                let x = s.load(Ordering::SeqCst) ^ tag;
                let hit = x < one;
                found = if hit { x } else { found };
                matches += hit as u32;
            }
        };
        scan(Self::half_slots(bucket, p));
        if (bucket.spill.load(Ordering::SeqCst) >> spill_shift(p)) & 0xffff != 0 {
            scan(Self::half_slots(bucket, 1 - p));
        }
        (found, matches > 1 || bucket.overflow.load(Ordering::SeqCst) != 0)
    }

    /// [`home_candidate`](Self::home_candidate) without the "probe further" answer, for a
    /// lookup that verifies the candidate and probes the whole sequence when it does not
    /// match: a slot number in home bucket `home` (from [`home`](Self::home)) whose tag
    /// matches, `u32::MAX` if none. Branch-free over the slots, as `home_candidate`.
    #[inline]
    pub(crate) fn home_hint(&self, hash: u64, home: usize) -> u32 {
        let tag = self.tag(hash);
        let Some(bucket) = self.buckets.get(home) else {
            return u32::MAX;
        };
        let p = Self::half(hash);
        let one = self.tag_one;
        let mut found = u32::MAX;
        // Half `h` starts at slot `h * HALF` (h is one bit: the indexes stay in bounds).
        let mut scan = |h: usize| {
            for i in 0..HALF {
                let x = bucket.slots[h * HALF + i].load(Ordering::SeqCst) ^ tag;
                found = if x < one { x } else { found };
            }
        };
        scan(p);
        if (bucket.spill.load(Ordering::SeqCst) >> spill_shift(p)) & 0xffff != 0 {
            scan(1 - p);
        }
        found
    }

    /// True if keys whose home is bucket `b` were pushed past it (the probe of a key not
    /// found in `b` must go on).
    #[inline]
    pub(crate) fn overflowed(&self, b: usize) -> bool {
        self.buckets
            .get(b)
            .is_none_or(|bucket| bucket.overflow.load(Ordering::SeqCst) != 0)
    }

    /// Stores `v` in an empty slot of `slots`; true if it did.
    #[inline]
    fn put(slots: &[AtomicU32], v: u32) -> bool {
        for s in slots {
            if s.load(Ordering::Relaxed) == 0
                && s.compare_exchange(0, v, Ordering::SeqCst, Ordering::Relaxed)
                    .is_ok()
            {
                return true;
            }
        }
        false
    }

    /// Clears the slot of `slots` holding `v`; true if it did.
    #[inline]
    fn take(slots: &[AtomicU32], v: u32) -> bool {
        for s in slots {
            // SeqCst (a plain load on x86-64): see `seqlock::retire`.
            if s.load(Ordering::SeqCst) == v
                && s.compare_exchange(v, 0, Ordering::SeqCst, Ordering::Relaxed)
                    .is_ok()
            {
                return true;
            }
        }
        false
    }

    /// Slots of half `h` of `bucket`.
    #[inline]
    fn half_slots(bucket: &Bucket, h: usize) -> &[AtomicU32] {
        let (a, b) = bucket.slots.split_at(HALF);
        if h == 0 { a } else { b }
    }

    /// Adds `idx` under `hash`. Returns false only if every slot is taken (the table sizes
    /// the index so that this cannot happen while the capacity bound holds).
    #[inline]
    pub(crate) fn insert(&self, hash: u64, idx: u32) -> bool {
        debug_assert_eq!(idx & !self.idx_mask, 0);
        let v = self.tag(hash) | idx;
        let home = self.home(hash);
        let p = Self::half(hash);
        // The usual case inline: an empty slot in the preferred half.
        if let Some(bucket) = self.buckets.get(home) {
            for i in 0..HALF {
                let s = &bucket.slots[(p & 1) * HALF + i];
                if s.load(Ordering::Relaxed) == 0
                    && s.compare_exchange(0, v, Ordering::SeqCst, Ordering::Relaxed)
                        .is_ok()
                {
                    return true;
                }
            }
        }
        self.insert_spilled(home, p, v)
    }

    /// [`insert`](Self::insert) when the preferred half of home bucket `home` is full:
    /// the other half, else the next buckets.
    #[inline(never)]
    fn insert_spilled(&self, home: usize, p: usize, v: u32) -> bool {
        let bucket = &self.buckets[home];
        let spill = 1 << spill_shift(p);
        bucket.spill.fetch_add(spill, Ordering::SeqCst);
        if Self::put(Self::half_slots(bucket, 1 - p), v) {
            return true;
        }
        bucket.spill.fetch_sub(spill, Ordering::SeqCst);
        let mut b = home;
        for _ in 0..self.buckets.len() {
            self.buckets[b].overflow.fetch_add(1, Ordering::SeqCst);
            b = self.next(b);
            if b == home {
                break;
            }
            if Self::put(&self.buckets[b].slots, v) {
                return true;
            }
        }
        // Every slot is taken: undo the overflow marks.
        let mut b = home;
        for _ in 0..self.buckets.len() {
            self.buckets[b].overflow.fetch_sub(1, Ordering::SeqCst);
            b = self.next(b);
        }
        false
    }

    /// Removes `idx` stored under `hash`. Returns false if it was not there.
    pub(crate) fn remove(&self, hash: u64, idx: u32) -> bool {
        let v = self.tag(hash) | idx;
        let home = self.home(hash);
        let p = Self::half(hash);
        let bucket = &self.buckets[home];
        if Self::take(Self::half_slots(bucket, p), v) {
            return true;
        }
        if Self::take(Self::half_slots(bucket, 1 - p), v) {
            bucket.spill.fetch_sub(1 << spill_shift(p), Ordering::SeqCst);
            return true;
        }
        let mut b = home;
        for hops in 1..self.buckets.len() {
            if self.buckets[b].overflow.load(Ordering::SeqCst) == 0 {
                return false;
            }
            b = self.next(b);
            if Self::take(&self.buckets[b].slots, v) {
                let mut c = home;
                for _ in 0..hops {
                    self.buckets[c].overflow.fetch_sub(1, Ordering::SeqCst);
                    c = self.next(c);
                }
                return true;
            }
        }
        false
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn overflowing_keys_stay_findable_and_removal_clears_overflow_marks() {
        let ix = Index::for_keys(16, 8);
        assert_eq!(ix.buckets(), 3);
        // Same home bucket for all: identical high bits, distinct tags.
        let hashes: Vec<u64> = (0..40u64).map(|i| (7u64 << 32) | (i << 8)).collect();
        for (i, h) in hashes.iter().enumerate() {
            assert!(ix.insert(*h, i as u32));
        }
        assert!(ix.overflow_total() > 0);
        for (i, h) in hashes.iter().enumerate() {
            assert_eq!(ix.find(*h, |s| (s == i as u32).then_some(s)), Some(i as u32));
        }
        for (i, h) in hashes.iter().enumerate() {
            assert!(ix.remove(*h, i as u32));
            assert!(!ix.remove(*h, i as u32));
        }
        assert_eq!(ix.overflow_total(), 0);
        assert_eq!(ix.spill_total(), 0);
        assert!(
            ix.buckets
                .iter()
                .all(|b| b.slots.iter().all(|s| s.load(Ordering::Relaxed) == 0))
        );
    }

    #[test]
    fn home_candidate_names_a_match_and_says_when_the_probe_must_go_on() {
        let ix = Index::for_keys(64, 8);
        // Same home bucket and preferred half (even hashes), distinct tags.
        let h = |t: u64| (5u64 << 32) | (t << 9);
        assert_eq!(ix.home_candidate(h(1)), (u32::MAX, false));
        assert!(ix.insert(h(1), 10));
        assert_eq!(ix.home_candidate(h(1)), (10, false));
        assert_eq!(ix.home_candidate(h(2)), (u32::MAX, false));
        // A second slot under the same tag (another key, same tag bits): either may be
        // the one, so the caller must probe on if the candidate does not verify.
        assert!(ix.insert(h(1), 11));
        let (c, more) = ix.home_candidate(h(1));
        assert!(c == 10 || c == 11);
        assert!(more);
        // Fill the preferred half: the next key of that half spills into the other half
        // and is still a candidate.
        for t in 3..8 {
            assert!(ix.insert(h(t), 20 + t as u32));
        }
        assert!(ix.insert(h(9), 99));
        assert_eq!(ix.spill_total(), 1);
        assert_eq!(ix.home_candidate(h(9)), (99, false));
        assert!(ix.remove(h(9), 99));
        assert_eq!(ix.home_candidate(h(9)), (u32::MAX, false));
        assert_eq!(ix.spill_total(), 0);
    }

    #[test]
    fn home_hint_names_the_matching_slot_in_either_half() {
        let ix = Index::for_keys(64, 8);
        let h = |t: u64| (5u64 << 32) | (t << 9);
        let home = ix.home(h(1));
        assert_eq!(ix.home_hint(h(1), home), u32::MAX);
        assert!(ix.insert(h(1), 10));
        assert_eq!(ix.home_hint(h(1), home), 10);
        assert_eq!(ix.home_hint(h(2), home), u32::MAX);
        // A key of the other half (odd hash) with the same tag bits is not a match.
        assert_eq!(ix.home_hint(h(1) | 1, home), u32::MAX);
        // Fill the preferred half: the next key spills into the other half and the hint
        // still finds it there.
        for t in 3..9 {
            assert!(ix.insert(h(t), 20 + t as u32));
        }
        assert!(ix.insert(h(9), 99));
        assert_eq!(ix.spill_total(), 1);
        assert_eq!(ix.home_hint(h(9), home), 99);
        assert_eq!(ix.home_hint(h(4), home), 24);
        assert!(ix.remove(h(9), 99));
        assert_eq!(ix.home_hint(h(9), home), u32::MAX);
    }

    #[test]
    fn a_full_index_refuses_and_leaves_no_overflow_marks() {
        let ix = Index::for_keys(4, 8);
        let total = ix.buckets() * SLOTS;
        for i in 0..total as u64 {
            assert!(ix.insert(i << 8 | 1, i as u32));
        }
        let before: Vec<u32> = ix
            .buckets
            .iter()
            .map(|b| b.overflow.load(Ordering::Relaxed))
            .collect();
        assert!(!ix.insert(0xabcd_ef00, 3));
        let after: Vec<u32> = ix
            .buckets
            .iter()
            .map(|b| b.overflow.load(Ordering::Relaxed))
            .collect();
        assert_eq!(before, after);
    }
}
