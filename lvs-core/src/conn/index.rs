//! A lock-free open-addressing index from a key hash to an arena slot number.
//!
//! The index is an array of cache-line buckets, each holding seven slots and one overflow
//! counter. A slot is `0` (empty) or `tag << 32 | slot_number` where the tag is the low 32
//! bits of the key hash with the lowest bit forced to 1. Inserts and removals are single
//! CASes on a slot; there are no tombstones: a removed slot becomes empty at once, and a
//! lookup keeps probing past a bucket only while that bucket's overflow counter (the number
//! of live keys that were pushed past it) is non-zero. The index never decides a match by
//! itself: callers verify the candidate entry's key (see the table's seqlock read), so a
//! stale or colliding slot costs a probe, never a wrong answer.

use std::sync::atomic::{AtomicU64, Ordering};

const SLOTS: usize = 7;

#[repr(align(64))]
#[derive(Default)]
struct Bucket {
    slots: [AtomicU64; SLOTS],
    overflow: AtomicU64,
}

/// One index (client side or server side).
pub(crate) struct Index {
    buckets: Box<[Bucket]>,
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

#[inline]
fn slot_value(hash: u64, idx: u32) -> u64 {
    (((hash as u32) | 1) as u64) << 32 | idx as u64
}

impl Index {
    /// An index for up to `keys` keys at a load of at most 50 % of its slots (3.5 keys per
    /// 7-slot bucket on average), so that nearly every key sits in its home bucket and
    /// nearly every miss ends there: one cache line per probe.
    pub(crate) fn for_keys(keys: usize) -> Index {
        let n = (keys * 2).div_ceil(SLOTS).max(2);
        Index {
            buckets: (0..n).map(|_| Bucket::default()).collect(),
        }
    }

    /// Number of buckets.
    pub(crate) fn buckets(&self) -> usize {
        self.buckets.len()
    }

    #[inline]
    fn home(&self, hash: u64) -> usize {
        (((hash >> 32) * self.buckets.len() as u64) >> 32) as usize
    }

    #[inline]
    fn next(&self, b: usize) -> usize {
        if b + 1 == self.buckets.len() { 0 } else { b + 1 }
    }

    /// Calls `check(slot_number)` for every slot whose tag matches `hash`, in probe order,
    /// until it returns `Some`; `None` when the probe sequence ends.
    #[inline]
    pub(crate) fn find<T>(&self, hash: u64, mut check: impl FnMut(u32) -> Option<T>) -> Option<T> {
        let tag = ((hash as u32) | 1) as u64;
        let mut b = self.home(hash);
        for _ in 0..self.buckets.len() {
            let bucket = &self.buckets[b];
            for s in &bucket.slots {
                let v = s.load(Ordering::SeqCst);
                if v >> 32 == tag
                    && let Some(t) = check(v as u32)
                {
                    return Some(t);
                }
            }
            if bucket.overflow.load(Ordering::SeqCst) == 0 {
                return None;
            }
            b = self.next(b);
        }
        None
    }

    /// Loads the home bucket's overflow word (to bring its cache line in early).
    #[inline]
    pub(crate) fn touch(&self, hash: u64) -> u64 {
        self.buckets[self.home(hash)].overflow.load(Ordering::Relaxed)
    }

    /// Loads the overflow word of the bucket after the home bucket.
    #[inline]
    pub(crate) fn touch_next(&self, hash: u64) -> u64 {
        self.buckets[self.next(self.home(hash))]
            .overflow
            .load(Ordering::Relaxed)
    }

    /// Second stage of a batched lookup: the first slot number in the home bucket whose tag
    /// matches (`u32::MAX` if none) and whether the probe may have to go further (another
    /// match in the bucket, or keys pushed past it).
    #[inline]
    pub(crate) fn home_candidate(&self, hash: u64) -> (u32, bool) {
        let tag = ((hash as u32) | 1) as u64;
        let bucket = &self.buckets[self.home(hash)];
        let mut found = u32::MAX;
        let mut more = false;
        for s in &bucket.slots {
            let v = s.load(Ordering::SeqCst);
            if v >> 32 == tag {
                more |= found != u32::MAX;
                found = v as u32;
            }
        }
        (found, more || bucket.overflow.load(Ordering::SeqCst) != 0)
    }

    /// Adds `idx` under `hash`. Returns false only if every slot is taken (the table sizes
    /// the index so that this cannot happen while the capacity bound holds).
    pub(crate) fn insert(&self, hash: u64, idx: u32) -> bool {
        let v = slot_value(hash, idx);
        let home = self.home(hash);
        let mut b = home;
        for _ in 0..self.buckets.len() {
            let bucket = &self.buckets[b];
            for s in &bucket.slots {
                if s.load(Ordering::Relaxed) == 0
                    && s.compare_exchange(0, v, Ordering::SeqCst, Ordering::Relaxed)
                        .is_ok()
                {
                    return true;
                }
            }
            bucket.overflow.fetch_add(1, Ordering::SeqCst);
            b = self.next(b);
        }
        // Undo the overflow marks of a failed insert.
        let mut b = home;
        for _ in 0..self.buckets.len() {
            self.buckets[b].overflow.fetch_sub(1, Ordering::SeqCst);
            b = self.next(b);
        }
        false
    }

    /// Removes `idx` stored under `hash`. Returns false if it was not there.
    pub(crate) fn remove(&self, hash: u64, idx: u32) -> bool {
        let v = slot_value(hash, idx);
        let home = self.home(hash);
        let mut b = home;
        for hops in 0..self.buckets.len() {
            let bucket = &self.buckets[b];
            for s in &bucket.slots {
                if s.load(Ordering::Relaxed) == v
                    && s.compare_exchange(v, 0, Ordering::SeqCst, Ordering::Relaxed)
                        .is_ok()
                {
                    let mut c = home;
                    for _ in 0..hops {
                        self.buckets[c].overflow.fetch_sub(1, Ordering::SeqCst);
                        c = self.next(c);
                    }
                    return true;
                }
            }
            if bucket.overflow.load(Ordering::SeqCst) == 0 {
                return false;
            }
            b = self.next(b);
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflowing_keys_stay_findable_and_removal_clears_overflow_marks() {
        let ix = Index::for_keys(16);
        // Same home bucket for all: identical high bits, distinct tags.
        let hashes: Vec<u64> = (0..20u64).map(|i| (7u64 << 32) | (i * 2 + 1)).collect();
        for (i, h) in hashes.iter().enumerate() {
            assert!(ix.insert(*h, i as u32));
        }
        for (i, h) in hashes.iter().enumerate() {
            assert_eq!(ix.find(*h, |s| (s == i as u32).then_some(s)), Some(i as u32));
        }
        for (i, h) in hashes.iter().enumerate() {
            assert!(ix.remove(*h, i as u32));
            assert!(!ix.remove(*h, i as u32));
        }
        assert!(ix.buckets.iter().all(|b| b.overflow.load(Ordering::Relaxed) == 0));
        assert!(
            ix.buckets
                .iter()
                .all(|b| b.slots.iter().all(|s| s.load(Ordering::Relaxed) == 0))
        );
    }
}
