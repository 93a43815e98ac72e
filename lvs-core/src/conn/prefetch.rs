//! The CPU's prefetch instruction for the table's burst stages: the one `unsafe` block of
//! lvs-core (the project allows unsafe code in the connection table only).

use super::table::Prefetch;

/// x86-64 `prefetcht0`: asks for the line holding `p` in every cache level, without waiting.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn prefetch_t0(p: *const u8) {
    // SAFETY: a prefetch is a hint: it never faults, whatever the address (even unmapped or
    // null), and changes nothing a load or store of this or any thread can observe.
    unsafe { core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast()) }
}

/// The prefetch the table uses unless the embedder registers another
/// ([`ConnTable::set_prefetch`](super::ConnTable::set_prefetch)); none on CPUs without one
/// here, where the burst stages load instead.
#[cfg(target_arch = "x86_64")]
pub(crate) const BUILTIN: Option<Prefetch> = Some(prefetch_t0);

/// See the x86-64 definition.
#[cfg(not(target_arch = "x86_64"))]
pub(crate) const BUILTIN: Option<Prefetch> = None;

/// Runs prefetch `f` on `p`; the built-in one is called directly (inlined), not through
/// the pointer, so the burst stages pay no call for it.
#[inline(always)]
pub(crate) fn fetch(f: Prefetch, p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    if std::ptr::fn_addr_eq(f, prefetch_t0 as Prefetch) {
        prefetch_t0(p);
        return;
    }
    f(p)
}
