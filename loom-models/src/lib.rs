//! Loom models of the hand-written atomics of `lvs_core::conn`: the lock-free index, the
//! seqlock protocol of an entry and the free list. The models live in `tests/models.rs`;
//! they compile the very source files of `lvs-core` (`#[path]` modules) next to a module
//! named `atomic` that re-exports loom's atomics instead of the standard library's.
