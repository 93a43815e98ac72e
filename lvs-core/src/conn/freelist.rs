//! Lock-free stacks of arena slot numbers, linked through a per-slot `next` word.
//!
//! [`FreeList`] is a Treiber stack whose head carries an ABA counter in its top 32 bits,
//! so that a pop whose `next` was read before another thread popped and pushed the same
//! slot fails its CAS. [`Stack`] is the simpler multi-producer stack that one consumer
//! empties at once with a swap (no pop, so no ABA).

use super::atomic::{AtomicU32, AtomicU64, Ordering};

/// "No slot".
pub(crate) const NIL: u32 = u32::MAX;

/// A tagged Treiber stack of slot numbers.
pub(crate) struct FreeList {
    /// ABA tag << 32 | top slot (NIL when empty).
    head: AtomicU64,
}

impl FreeList {
    /// A stack whose top is `top` (NIL for empty); the links below it are the caller's.
    pub(crate) fn new(top: u32) -> FreeList {
        FreeList {
            head: AtomicU64::new(top as u64),
        }
    }

    /// The top slot now (NIL when empty): the one the next pop will likely take.
    #[inline]
    pub(crate) fn top(&self) -> u32 {
        self.head.load(Ordering::Relaxed) as u32
    }

    /// Takes the top slot. `next(i)` is slot `i`'s link word.
    #[inline]
    pub(crate) fn pop<'a>(&self, next: impl Fn(u32) -> &'a AtomicU32) -> Option<u32> {
        let mut head = self.head.load(Ordering::Acquire);
        loop {
            let idx = head as u32;
            if idx == NIL {
                return None;
            }
            let below = next(idx).load(Ordering::Relaxed);
            let new = ((head >> 32).wrapping_add(1) << 32) | below as u64;
            match self
                .head
                .compare_exchange_weak(head, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Some(idx),
                Err(h) => head = h,
            }
        }
    }

    /// Puts slot `idx`, whose link word is `link`, on top.
    #[inline]
    pub(crate) fn push(&self, idx: u32, link: &AtomicU32) {
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            link.store(head as u32, Ordering::Relaxed);
            let new = ((head >> 32).wrapping_add(1) << 32) | idx as u64;
            match self
                .head
                .compare_exchange_weak(head, new, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(h) => head = h,
            }
        }
    }
}

/// A multi-producer stack of slot numbers emptied all at once by its consumer.
pub(crate) struct Stack {
    head: AtomicU32,
}

impl Stack {
    /// An empty stack.
    pub(crate) fn new() -> Stack {
        Stack {
            head: AtomicU32::new(NIL),
        }
    }

    /// Pushes slot `idx`, whose link word is `link`.
    #[inline]
    pub(crate) fn push(&self, idx: u32, link: &AtomicU32) {
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            link.store(head, Ordering::Relaxed);
            match self
                .head
                .compare_exchange_weak(head, idx, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(h) => head = h,
            }
        }
    }

    /// Empties the stack: returns its former top (follow the links from there to NIL).
    #[inline]
    pub(crate) fn take_all(&self) -> u32 {
        self.head.swap(NIL, Ordering::AcqRel)
    }
}
