//! The table's registry of destination states: id → `Arc<DestState>` with a count of the
//! entries that reference it.
//!
//! Entries carry only their destination's id (27 bits, in the control word of a connection,
//! in `aux` for a template); this registry keeps the `Arc`s alive while any entry references
//! them. Reads are lock-free (an `ArcSwap`'d map, never changed in place); the lock is taken
//! only when a destination gains its first entry or loses its last one, which publishes a
//! new map. An entry's reference is a plain counter increment on the shared record, so
//! inserting and removing connections of known destinations takes no lock.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::dest::DestState;

/// A registered destination and the number of entries referencing it. A record whose count
/// fell to 0 is dead: it is never revived, a new record replaces it.
struct Registered {
    dest: Arc<DestState>,
    refs: AtomicU64,
}

/// Ids are small sequential integers: a multiplicative hash is plenty.
#[derive(Default)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_u32(&mut self, v: u32) {
        self.0 = (v as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type Map = HashMap<u32, Arc<Registered>, BuildHasherDefault<IdHasher>>;

/// The registry.
pub(crate) struct DestRegistry {
    map: ArcSwap<Map>,
    write: Mutex<()>,
}

/// A second live destination state with the id of a registered one (ids wrap after 2^27
/// destination states): the entry cannot be told apart, so it is refused.
#[derive(Debug)]
pub(crate) struct IdClash;

#[inline]
fn inc_if_live(refs: &AtomicU64) -> bool {
    refs.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n != 0).then_some(n + 1))
        .is_ok()
}

impl DestRegistry {
    pub(crate) fn new() -> DestRegistry {
        DestRegistry {
            map: ArcSwap::from_pointee(Map::default()),
            write: Mutex::new(()),
        }
    }

    /// Adds one entry's reference to `dest` (registering it if needed).
    pub(crate) fn acquire(&self, dest: &Arc<DestState>) -> Result<(), IdClash> {
        let id = dest.id();
        {
            let m = self.map.load();
            if let Some(r) = m.get(&id)
                && Arc::ptr_eq(&r.dest, dest)
                && inc_if_live(&r.refs)
            {
                return Ok(());
            }
        }
        let _w = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let cur = self.map.load_full();
        if let Some(r) = cur.get(&id) {
            if Arc::ptr_eq(&r.dest, dest) {
                if inc_if_live(&r.refs) {
                    return Ok(());
                }
            } else if r.refs.load(Ordering::Acquire) != 0 {
                return Err(IdClash);
            }
        }
        let mut m = (*cur).clone();
        m.insert(
            id,
            Arc::new(Registered {
                dest: Arc::clone(dest),
                refs: AtomicU64::new(1),
            }),
        );
        self.map.store(Arc::new(m));
        Ok(())
    }

    /// Calls `f` with the destination of id `id`, if registered.
    #[inline]
    pub(crate) fn with<R>(&self, id: u32, f: impl FnOnce(&DestState) -> R) -> Option<R> {
        let m = self.map.load();
        m.get(&id).map(|r| f(&r.dest))
    }

    /// The destination of id `id`, if registered.
    pub(crate) fn get(&self, id: u32) -> Option<Arc<DestState>> {
        self.map.load().get(&id).map(|r| Arc::clone(&r.dest))
    }

    /// Calls `f` with the destination of id `id`, then drops one entry's reference to it
    /// (unregistering it with its last one).
    #[inline]
    pub(crate) fn release(&self, id: u32, f: impl FnOnce(&DestState)) {
        let last = {
            let m = self.map.load();
            let Some(r) = m.get(&id) else {
                debug_assert!(false, "release of an unregistered destination {id}");
                return;
            };
            f(&r.dest);
            (r.refs.fetch_sub(1, Ordering::AcqRel) == 1).then(|| Arc::clone(r))
        };
        if let Some(dead) = last {
            let _w = self.write.lock().unwrap_or_else(|p| p.into_inner());
            let cur = self.map.load_full();
            // Only if nobody registered a fresh record for this id meanwhile.
            if cur.get(&id).is_some_and(|r| Arc::ptr_eq(r, &dead)) {
                let mut m = (*cur).clone();
                m.remove(&id);
                self.map.store(Arc::new(m));
            }
        }
    }

    /// Registered destinations (for tests and the debug view).
    pub(crate) fn len(&self) -> usize {
        self.map.load().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_release_unregisters_and_a_new_entry_registers_again() {
        let r = DestRegistry::new();
        let d = Arc::new(DestState::new(0, 0));
        r.acquire(&d).unwrap();
        r.acquire(&d).unwrap();
        assert_eq!(Arc::strong_count(&d), 2);
        let mut seen = 0;
        r.release(d.id(), |x| seen += x.id());
        assert_eq!(seen, d.id());
        assert!(r.get(d.id()).is_some());
        r.release(d.id(), |_| {});
        assert_eq!(r.len(), 0);
        assert_eq!(Arc::strong_count(&d), 1);
        r.acquire(&d).unwrap();
        assert_eq!(r.with(d.id(), |x| x.id()), Some(d.id()));
    }
}
