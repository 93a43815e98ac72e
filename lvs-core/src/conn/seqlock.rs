//! The seqlock protocol of an entry's control word.
//!
//! The control word carries a 24-bit generation in its top bits: even while the entry is
//! live, odd while it is dead (free, or being rewritten by the one thread that took it from
//! the free list). A writer owns a dead slot, loads its control word ([`begin_write`]),
//! stores the fields (relaxed), then publishes the next, even generation ([`publish`]). A
//! reader loads the control word ([`read_begin`]), the fields (relaxed), then checks that
//! the generation did not change ([`read_end`]): if it did, what it read may mix two
//! connections and is thrown away. Killing an entry is one CAS to the next, odd generation
//! ([`retire`]); only its winner tears the entry down.

use super::atomic::{AtomicU64, Ordering, fence};

/// Bit position of the generation in the control word.
pub(crate) const GEN_SHIFT: u32 = 40;
/// One generation step.
pub(crate) const GEN_ONE: u64 = 1 << GEN_SHIFT;

/// The generation of a control word.
#[inline]
pub(crate) fn gen_of(ctl: u64) -> u32 {
    (ctl >> GEN_SHIFT) as u32
}

/// True if the control word is of a live entry (even generation).
#[inline]
pub(crate) fn is_live(ctl: u64) -> bool {
    gen_of(ctl) & 1 == 0
}

/// Writer, first step on a dead slot it owns: returns the current control word. The
/// release fence orders the load of the dead generation before every field store that
/// follows, so a reader that sees any of them also sees the generation move.
#[inline]
pub(crate) fn begin_write(ctl: &AtomicU64) -> u64 {
    let old = ctl.load(Ordering::Relaxed);
    debug_assert!(!is_live(old));
    fence(Ordering::Release);
    old
}

/// The control word that publishes a slot whose dead control word was `old`: the next
/// (even) generation with `fields` below the generation bits.
#[inline]
pub(crate) fn next_live(old: u64, fields: u64) -> u64 {
    debug_assert_eq!(fields >> GEN_SHIFT, 0);
    (old & !(GEN_ONE - 1)).wrapping_add(GEN_ONE) | fields
}

/// Writer, last step: makes the entry live (`ctl` from [`next_live`]).
#[inline]
pub(crate) fn publish(word: &AtomicU64, ctl: u64) {
    word.store(ctl, Ordering::Release);
}

/// Reader, first step: the control word (acquire).
#[inline]
pub(crate) fn read_begin(ctl: &AtomicU64) -> u64 {
    ctl.load(Ordering::Acquire)
}

/// Reader, last step after the relaxed field loads: true if the generation is still the
/// one of `g1`, i.e. the fields read belong to that one connection.
#[inline]
pub(crate) fn read_end(ctl: &AtomicU64, g1: u64) -> bool {
    fence(Ordering::Acquire);
    gen_of(ctl.load(Ordering::Relaxed)) == gen_of(g1)
}

/// Kills the live entry whose control word is `cur` (generation `gen_`): one CAS to the next,
/// odd generation. `Ok(old control word)` for the single winner; `Err(current)` if the word
/// changed (retry with it), or `Err` with a dead or other-generation word (give up).
#[inline]
pub(crate) fn retire(ctl: &AtomicU64, cur: u64) -> Result<u64, u64> {
    // SeqCst (the same instruction as AcqRel on x86-64): an insert that published the
    // entry checks, after its index CASes, whether it was killed meanwhile; with the
    // killer's SeqCst index loads one of the two sides sees the other.
    ctl.compare_exchange_weak(
        cur,
        cur.wrapping_add(GEN_ONE),
        Ordering::SeqCst,
        Ordering::Acquire,
    )
}
