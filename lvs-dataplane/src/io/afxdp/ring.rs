//! Cursors over the single-producer/single-consumer rings shared with the kernel (fill,
//! completion, RX, TX), after libxdp's xsk.h: cached producer and consumer indices so the
//! shared atomics are read only when the cache runs out, acquire loads of the other side's
//! index and release stores of ours.

use std::fmt;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

/// `XDP_RING_NEED_WAKEUP` in a ring's flags word.
pub const XDP_RING_NEED_WAKEUP: u32 = 1;

/// One side of a ring of `size` (a power of two) entries of `T`.
///
/// A producer cursor owns the slots in `[cached_prod, cached_cons + size)` (free slots); a
/// consumer cursor owns `[cached_cons, cached_prod)` (filled slots). Indices run freely and
/// wrap at 2^32; a slot is `index & mask`.
pub struct Cursor<T: Copy> {
    cached_prod: u32,
    cached_cons: u32,
    size: u32,
    mask: u32,
    producer: NonNull<AtomicU32>,
    consumer: NonNull<AtomicU32>,
    flags: Option<NonNull<AtomicU32>>,
    desc: NonNull<T>,
}

impl<T: Copy> fmt::Debug for Cursor<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cursor")
            .field("cached_prod", &self.cached_prod)
            .field("cached_cons", &self.cached_cons)
            .field("size", &self.size)
            .finish()
    }
}

// SAFETY: a cursor is the only user-space accessor of its side of the ring; moving it to
// another thread moves that role with it.
unsafe impl<T: Copy + Send> Send for Cursor<T> {}

impl<T: Copy> Cursor<T> {
    /// A cursor over the ring whose indices are at `producer`/`consumer`, flags at `flags`
    /// and `size` descriptors at `desc`.
    ///
    /// # Safety
    /// The pointers must be valid (aligned, mapped) for as long as the cursor lives, `desc`
    /// must point to `size` entries of `T`, `size` must be a power of two, and no other
    /// user-space cursor may act as the same side of the ring.
    pub unsafe fn new(
        producer: NonNull<AtomicU32>,
        consumer: NonNull<AtomicU32>,
        flags: Option<NonNull<AtomicU32>>,
        desc: NonNull<T>,
        size: u32,
    ) -> Cursor<T> {
        assert!(size.is_power_of_two(), "ring size must be a power of two");
        // SAFETY: the caller guarantees the pointer is valid.
        let p = unsafe { producer.as_ref() }.load(Ordering::Acquire);
        // SAFETY: the caller guarantees the pointer is valid.
        let c = unsafe { consumer.as_ref() }.load(Ordering::Acquire);
        Cursor {
            cached_prod: p,
            cached_cons: c,
            size,
            mask: size - 1,
            producer,
            consumer,
            flags,
            desc,
        }
    }

    fn producer(&self) -> &AtomicU32 {
        // SAFETY: valid for the cursor's life (constructor contract).
        unsafe { self.producer.as_ref() }
    }

    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: valid for the cursor's life (constructor contract).
        unsafe { self.consumer.as_ref() }
    }

    /// Ring size.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// True when the kernel asks to be woken (`XDP_RING_NEED_WAKEUP`).
    #[inline]
    pub fn needs_wakeup(&self) -> bool {
        match self.flags {
            // SAFETY: valid for the cursor's life (constructor contract).
            Some(f) => unsafe { f.as_ref() }.load(Ordering::Relaxed) & XDP_RING_NEED_WAKEUP != 0,
            None => false,
        }
    }

    #[inline]
    fn check(&self) {
        debug_assert!(
            self.cached_prod.wrapping_sub(self.cached_cons) <= self.size,
            "more than `size` entries between consumer and producer: {self:?}"
        );
    }

    // ---- producer side (fill ring, TX ring) ----

    /// Free slots, re-reading the consumer index only when fewer than `want` are cached.
    #[inline]
    pub fn prod_free(&mut self, want: u32) -> u32 {
        let free = self.size - self.cached_prod.wrapping_sub(self.cached_cons);
        if free >= want {
            return free;
        }
        self.cached_cons = self.consumer().load(Ordering::Acquire);
        self.check();
        self.size - self.cached_prod.wrapping_sub(self.cached_cons)
    }

    /// Writes `value` into the `i`-th free slot (not yet visible to the consumer).
    #[inline]
    pub fn prod_write(&mut self, i: u32, value: T) {
        debug_assert!(
            i < self.size - self.cached_prod.wrapping_sub(self.cached_cons),
            "write beyond the free slots"
        );
        let slot = (self.cached_prod.wrapping_add(i) & self.mask) as usize;
        // SAFETY: `slot < size`, so the pointer stays inside the descriptor array.
        let p = unsafe { self.desc.as_ptr().add(slot) };
        // SAFETY: in bounds and aligned (above); the slot is free: the consumer does not read
        // it until `prod_submit` publishes it.
        unsafe { p.write(value) };
    }

    /// Publishes the first `n` written slots to the consumer.
    #[inline]
    pub fn prod_submit(&mut self, n: u32) {
        debug_assert!(n <= self.size - self.cached_prod.wrapping_sub(self.cached_cons));
        self.cached_prod = self.cached_prod.wrapping_add(n);
        self.producer().store(self.cached_prod, Ordering::Release);
        self.check();
    }

    // ---- consumer side (completion ring, RX ring) ----

    /// Filled slots, re-reading the producer index only when the cache is empty.
    #[inline]
    pub fn cons_avail(&mut self) -> u32 {
        let avail = self.cached_prod.wrapping_sub(self.cached_cons);
        if avail > 0 {
            return avail;
        }
        self.cached_prod = self.producer().load(Ordering::Acquire);
        self.check();
        self.cached_prod.wrapping_sub(self.cached_cons)
    }

    /// Reads the `i`-th filled slot.
    #[inline]
    pub fn cons_read(&self, i: u32) -> T {
        debug_assert!(
            i < self.cached_prod.wrapping_sub(self.cached_cons),
            "read beyond the filled slots"
        );
        let slot = (self.cached_cons.wrapping_add(i) & self.mask) as usize;
        // SAFETY: `slot < size`, so the pointer stays inside the descriptor array.
        let p = unsafe { self.desc.as_ptr().add(slot) };
        // SAFETY: in bounds and aligned; the producer published the slot (acquire load in
        // `cons_avail`) and does not rewrite it before `cons_release`.
        unsafe { p.read() }
    }

    /// Hands the first `n` read slots back to the producer.
    #[inline]
    pub fn cons_release(&mut self, n: u32) {
        debug_assert!(n <= self.cached_prod.wrapping_sub(self.cached_cons));
        self.cached_cons = self.cached_cons.wrapping_add(n);
        self.consumer().store(self.cached_cons, Ordering::Release);
        self.check();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A ring in ordinary memory, with a producer and a consumer cursor over it.
    struct Shared {
        prod: AtomicU32,
        cons: AtomicU32,
        flags: AtomicU32,
        desc: Vec<u64>,
    }

    fn pair(shared: &mut Shared, size: u32, start: u32) -> (Cursor<u64>, Cursor<u64>) {
        shared.prod.store(start, Ordering::Relaxed);
        shared.cons.store(start, Ordering::Relaxed);
        let p = NonNull::from(&shared.prod);
        let c = NonNull::from(&shared.cons);
        let f = NonNull::from(&shared.flags);
        let d = NonNull::new(shared.desc.as_mut_ptr()).unwrap();
        // SAFETY: `shared` outlives both cursors in the test; this one is the producer;
        // `desc` holds `size` entries.
        let producer = unsafe { Cursor::new(p, c, Some(f), d, size) };
        // SAFETY: as above; this one is the consumer.
        let consumer = unsafe { Cursor::new(p, c, Some(f), d, size) };
        (producer, consumer)
    }

    /// Random produce/consume batches against a VecDeque, starting near the 2^32 wrap.
    #[test]
    fn ring_cursor_behaves_like_a_fifo() {
        for (size, start) in [(8u32, 0u32), (16, u32::MAX - 20), (4, u32::MAX)] {
            let mut shared = Shared {
                prod: AtomicU32::new(0),
                cons: AtomicU32::new(0),
                flags: AtomicU32::new(0),
                desc: vec![0; size as usize],
            };
            let (mut p, mut c) = pair(&mut shared, size, start);
            let mut model = VecDeque::new();
            let mut next = 0u64;
            let mut rng = 0x9e37_79b9_7f4a_7c15u64;
            for _ in 0..20_000 {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let n = (rng % (size as u64 + 2)) as u32;
                if rng & (1 << 40) != 0 {
                    let free = p.prod_free(n);
                    // A stale cache may under-report, never over-report; when it cannot
                    // satisfy `n` it is refreshed and exact.
                    assert!(free as usize <= size as usize - model.len());
                    if free < n {
                        assert_eq!(free as usize, size as usize - model.len());
                    }
                    let k = n.min(free);
                    for i in 0..k {
                        p.prod_write(i, next);
                        model.push_back(next);
                        next += 1;
                    }
                    p.prod_submit(k);
                } else {
                    let avail = c.cons_avail();
                    assert!(avail as usize <= model.len());
                    if avail == 0 {
                        assert!(model.is_empty());
                    }
                    let k = n.min(avail);
                    for i in 0..k {
                        assert_eq!(Some(c.cons_read(i)), model.get(i as usize).copied());
                    }
                    for _ in 0..k {
                        model.pop_front();
                    }
                    c.cons_release(k);
                }
            }
            assert!(next > 1000, "the test moved data");
        }
    }

    #[test]
    fn need_wakeup_reads_the_flags_word() {
        let mut shared = Shared {
            prod: AtomicU32::new(0),
            cons: AtomicU32::new(0),
            flags: AtomicU32::new(0),
            desc: vec![0; 4],
        };
        let (p, _c) = pair(&mut shared, 4, 0);
        assert!(!p.needs_wakeup());
        shared.flags.store(XDP_RING_NEED_WAKEUP, Ordering::Relaxed);
        assert!(p.needs_wakeup());
    }
}
