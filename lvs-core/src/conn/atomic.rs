//! The atomics the lock-free pieces (index, seqlock, free list) are written against. Here
//! they are the standard library's; the `loom-models` crate compiles the same source files
//! next to a module of this name that re-exports loom's, to model-check them.

pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};
