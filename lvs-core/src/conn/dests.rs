//! The table's registry of destination states: id → `Arc<DestState>` with a count of the
//! entries that reference it.
//!
//! Entries carry only their destination's id (27 bits, in the control word of a connection,
//! in `aux` for a template); this registry keeps the `Arc`s alive while any entry references
//! them. Reads are lock-free: the map is an immutable snapshot behind an `ArcSwap`, replaced
//! whole under a lock only when a destination gains its first entry or is dropped by the
//! housekeeper's sweep (which also bumps a version number). Each thread keeps the last
//! snapshot it used in a thread-local cache and revalidates it with one load of the
//! version, so the usual read is a load and a probe of a small open-addressing table, with
//! no atomic read-modify-write (an `ArcSwap` load alone cost ~85 instructions and two fenced
//! operations). An entry's reference is a plain counter increment on the shared record, so
//! inserting and removing connections of known destinations takes no lock.
//!
//! A record whose count falls to 0 stays registered (and can be taken again) until the
//! next [`ConnTable::expire`](super::ConnTable::expire) sweeps it: the sweep marks it dead
//! with one CAS from 0, which no later increment can undo, and publishes a map without it.
//! So a destination whose connections come and go one at a time is not registered afresh
//! for each. A thread's cached snapshot keeps the destinations it lists alive until that
//! thread next uses a registry (any table's): a destination may outlive its last entry a
//! little, never the other way round.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::dest::DestState;

/// A registered destination and the number of entries referencing it ([`DEAD`] set once
/// the sweep dropped it: a dead record is never used again, a new one replaces it).
struct Registered {
    dest: Arc<DestState>,
    refs: AtomicU64,
}

/// Flag of a swept record's count.
const DEAD: u64 = 1 << 63;

/// An immutable id → record map: the records in a vector and an open-addressing table of
/// their positions (at most half full, linear probing, a multiplicative hash of the id), so
/// that a lookup is a multiply, usually one slot and one compare. Changes rebuild it (they
/// happen under the registry's lock, on a copy, and only when a destination is registered
/// or dropped).
#[derive(Clone, Default)]
struct Map {
    entries: Vec<(u32, Arc<Registered>)>,
    /// Positions in `entries`; `u32::MAX` for an empty slot. Empty or a power of two.
    slots: Box<[u32]>,
}

impl Map {
    #[inline]
    fn home(id: u32, mask: usize) -> usize {
        ((id as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as usize & mask
    }

    fn build(entries: Vec<(u32, Arc<Registered>)>) -> Map {
        let n = (entries.len() * 2).next_power_of_two().max(4);
        let mut slots = vec![u32::MAX; n].into_boxed_slice();
        for (pos, (id, _)) in entries.iter().enumerate() {
            let mut i = Self::home(*id, n - 1);
            while slots[i] != u32::MAX {
                i = (i + 1) & (n - 1);
            }
            slots[i] = pos as u32;
        }
        Map { entries, slots }
    }

    /// The record of `id`.
    #[inline]
    fn get(&self, id: &u32) -> Option<&Arc<Registered>> {
        let mask = self.slots.len().wrapping_sub(1);
        let mut i = Self::home(*id, mask);
        loop {
            // An empty slot (or an empty table) ends the probe: `get` gives `None`.
            let (k, r) = self.entries.get(*self.slots.get(i)? as usize)?;
            if k == id {
                return Some(r);
            }
            i = (i + 1) & mask;
        }
    }

    /// Adds (or replaces) the record of `id`.
    fn insert(&mut self, id: u32, r: Arc<Registered>) {
        let mut entries = std::mem::take(&mut self.entries);
        entries.retain(|(k, _)| *k != id);
        entries.push((id, r));
        *self = Map::build(entries);
    }

    /// Drops the record of `id`.
    fn remove(&mut self, id: &u32) {
        let mut entries = std::mem::take(&mut self.entries);
        entries.retain(|(k, _)| k != id);
        *self = Map::build(entries);
    }

    fn iter(&self) -> impl Iterator<Item = (&u32, &Arc<Registered>)> {
        self.entries.iter().map(|(k, r)| (k, r))
    }

    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// The registry.
pub(crate) struct DestRegistry {
    map: ArcSwap<Map>,
    /// Set when some record's count fell to 0 (the next sweep looks for it).
    zero_seen: AtomicBool,
    /// Bumped (release) after each new map is stored.
    version: AtomicU64,
    /// Process-wide unique number of this registry (keys the thread-local caches).
    uid: u64,
    write: Mutex<()>,
}

static NEXT_UID: AtomicU64 = AtomicU64::new(1);

/// A thread's last used snapshot: registry uid, version, map.
struct Cached {
    uid: u64,
    version: u64,
    map: Arc<Map>,
}

thread_local! {
    static CACHE: RefCell<Option<Cached>> = const { RefCell::new(None) };
}

/// A second live destination state with the id of a registered one (ids wrap after 2^27
/// destination states): the entry cannot be told apart, so it is refused.
#[derive(Debug)]
pub(crate) struct IdClash;

/// Takes a reference on a record unless the sweep killed it.
#[inline]
fn inc_if_live(refs: &AtomicU64) -> bool {
    if refs.fetch_add(1, Ordering::AcqRel) & DEAD == 0 {
        return true;
    }
    refs.fetch_sub(1, Ordering::AcqRel);
    false
}

#[inline]
fn is_dead(r: &Registered) -> bool {
    r.refs.load(Ordering::Acquire) & DEAD != 0
}

impl DestRegistry {
    pub(crate) fn new() -> DestRegistry {
        DestRegistry {
            map: ArcSwap::from_pointee(Map::default()),
            zero_seen: AtomicBool::new(false),
            version: AtomicU64::new(0),
            uid: NEXT_UID.fetch_add(1, Ordering::Relaxed),
            write: Mutex::new(()),
        }
    }

    /// Calls `f` with a snapshot of the map at least as new as every change that happened
    /// before this call (the thread's cached one if still current).
    #[inline]
    fn with_map<R>(&self, f: impl FnOnce(&Map) -> R) -> R {
        let version = self.version.load(Ordering::Acquire);
        let mut f = Some(f);
        let cached = CACHE.try_with(|cell| {
            if let Ok(c) = cell.try_borrow()
                && let Some(c) = c.as_ref()
                && c.uid == self.uid
                && c.version == version
            {
                return Some((f.take().expect("once"))(&c.map));
            }
            let map = self.map.load_full();
            let r = (f.take().expect("once"))(&map);
            if let Ok(mut c) = cell.try_borrow_mut() {
                *c = Some(Cached {
                    uid: self.uid,
                    version,
                    map,
                });
            }
            Some(r)
        });
        match (cached, f) {
            (Ok(Some(r)), _) => r,
            // The thread's cache is gone (thread exit): read the map directly.
            (_, Some(f)) => f(&self.map.load()),
            (_, None) => unreachable!("the closure ran but returned nothing"),
        }
    }

    /// Stores a new map (lock held) and brings this thread's cache up to date.
    fn publish(&self, m: Map) {
        let m = Arc::new(m);
        self.map.store(Arc::clone(&m));
        let version = self.version.fetch_add(1, Ordering::AcqRel) + 1;
        let _ = CACHE.try_with(|cell| {
            if let Ok(mut c) = cell.try_borrow_mut() {
                *c = Some(Cached {
                    uid: self.uid,
                    version,
                    map: m,
                });
            }
        });
    }

    /// Adds one entry's reference to `dest` (registering it if needed).
    #[inline]
    pub(crate) fn acquire(&self, dest: &Arc<DestState>) -> Result<(), IdClash> {
        if self.acquire_cached(dest) {
            return Ok(());
        }
        self.acquire_slow(dest)
    }

    /// [`acquire`](Self::acquire) through this thread's current snapshot. False if the
    /// snapshot is stale or `dest` is not registered in it (or its record was swept).
    #[inline]
    fn acquire_cached(&self, dest: &Arc<DestState>) -> bool {
        let version = self.version.load(Ordering::Acquire);
        CACHE
            .try_with(|cell| {
                let Ok(guard) = cell.try_borrow() else {
                    return false;
                };
                match guard.as_ref() {
                    Some(c) if c.uid == self.uid && c.version == version => c
                        .map
                        .get(&dest.id())
                        .is_some_and(|r| Arc::ptr_eq(&r.dest, dest) && inc_if_live(&r.refs)),
                    _ => false,
                }
            })
            .unwrap_or(false)
    }

    /// [`acquire`](Self::acquire) when this thread's snapshot did not settle it.
    #[inline(never)]
    fn acquire_slow(&self, dest: &Arc<DestState>) -> Result<(), IdClash> {
        let id = dest.id();
        let fast = self.with_map(|m| {
            m.get(&id)
                .is_some_and(|r| Arc::ptr_eq(&r.dest, dest) && inc_if_live(&r.refs))
        });
        if fast {
            return Ok(());
        }
        let _w = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let cur = self.map.load_full();
        if let Some(r) = cur.get(&id) {
            if Arc::ptr_eq(&r.dest, dest) {
                if inc_if_live(&r.refs) {
                    return Ok(());
                }
            } else if r
                .refs
                .compare_exchange(0, DEAD, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
                && !is_dead(r)
            {
                // Another live destination state has this id.
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
        self.publish(m);
        Ok(())
    }

    /// Calls `f` with the record of id `id`: from this thread's snapshot, else (a record
    /// registered since, by a thread this one did not synchronise with) from the current map.
    #[inline]
    fn find<R>(&self, id: u32, f: impl FnOnce(&Arc<Registered>) -> R) -> Option<R> {
        let mut f = Some(f);
        let cached = self.with_map(|m| {
            m.get(&id)
                .filter(|r| !is_dead(r))
                .map(|r| (f.take().expect("once"))(r))
        });
        if cached.is_some() {
            return cached;
        }
        let f = f?;
        self.map.load().get(&id).map(f)
    }

    /// Calls `f` with the destination of id `id`, if registered.
    #[inline]
    pub(crate) fn with<R>(&self, id: u32, f: impl FnOnce(&DestState) -> R) -> Option<R> {
        self.find(id, |r| f(&r.dest))
    }

    /// The destination of id `id`, if registered.
    pub(crate) fn get(&self, id: u32) -> Option<Arc<DestState>> {
        self.find(id, |r| Arc::clone(&r.dest))
    }

    /// Calls `f` with the destination of id `id`, then drops one entry's reference to it
    /// (the next sweep unregisters it if that was the last one).
    #[inline]
    pub(crate) fn release(&self, id: u32, f: impl FnOnce(&DestState)) {
        let found = self.find(id, |r| {
            f(&r.dest);
            r.refs.fetch_sub(1, Ordering::AcqRel) == 1
        });
        match found {
            Some(true) => self.zero_seen.store(true, Ordering::Release),
            Some(false) => {}
            None => debug_assert!(false, "release of an unregistered destination {id}"),
        }
    }

    /// Drops the destinations no entry references any more (one lock and one new map, only
    /// if some count fell to 0 since the last sweep). Called by the housekeeper.
    pub(crate) fn sweep(&self) {
        if !self.zero_seen.swap(false, Ordering::AcqRel) {
            return;
        }
        let _w = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let cur = self.map.load_full();
        let dead: Vec<u32> = cur
            .iter()
            .filter(|(_, r)| {
                r.refs
                    .compare_exchange(0, DEAD, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            })
            .map(|(&id, _)| id)
            .collect();
        if !dead.is_empty() {
            let mut m = (*cur).clone();
            for id in dead {
                m.remove(&id);
            }
            self.publish(m);
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
    fn the_map_finds_every_record_it_holds_and_nothing_else() {
        let rec = || {
            Arc::new(Registered {
                dest: Arc::new(DestState::new(0, 0)),
                refs: AtomicU64::new(0),
            })
        };
        let mut m = Map::default();
        assert!(m.get(&1).is_none());
        // Sequential ids and ids 2^k apart (many share a home slot).
        let ids: Vec<u32> = (1..40).chain((0..20).map(|k| 1000 + (k << 12))).collect();
        let recs: Vec<_> = ids.iter().map(|_| rec()).collect();
        for (id, r) in ids.iter().zip(&recs) {
            m.insert(*id, Arc::clone(r));
        }
        assert_eq!(m.len(), ids.len());
        for (id, r) in ids.iter().zip(&recs) {
            assert!(Arc::ptr_eq(m.get(id).unwrap(), r), "id {id}");
        }
        for absent in [0, 40, 999, 1001, u32::MAX] {
            assert!(m.get(&absent).is_none());
        }
        // Replacing and removing keep the others findable.
        let again = rec();
        m.insert(5, Arc::clone(&again));
        assert!(Arc::ptr_eq(m.get(&5).unwrap(), &again));
        for id in ids.iter().step_by(2) {
            m.remove(id);
        }
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(m.get(id).is_some(), i % 2 == 1, "id {id}");
        }
        assert_eq!(m.iter().count(), m.len());
    }

    #[test]
    fn the_sweep_unregisters_unreferenced_destinations_and_they_register_again() {
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
        // Still registered (and usable again) until the sweep.
        assert_eq!(r.len(), 1);
        r.acquire(&d).unwrap();
        r.sweep();
        assert_eq!(r.len(), 1, "a referenced destination survives the sweep");
        r.release(d.id(), |_| {});
        r.sweep();
        assert_eq!(r.len(), 0);
        assert_eq!(Arc::strong_count(&d), 1);
        r.acquire(&d).unwrap();
        assert_eq!(r.with(d.id(), |x| x.id()), Some(d.id()));
    }
}
