//! Neighbour table: next-hop IP → MAC, filled by the I/O layer (kernel neighbour table, lvs's
//! own ARP/NDP), read lock-free by the pipeline, with a bounded queue of addresses the pipeline
//! found unresolved so the I/O layer can ask for them.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use crossbeam_queue::ArrayQueue;

pub use crate::wire::ethernet::MacAddr;

/// Capacity of the queue of unresolved next hops waiting for an ARP/NDP request.
pub const PENDING_CAPACITY: usize = 256;

/// One published neighbour map.
pub type NeighMap = HashMap<IpAddr, MacAddr, ahash::RandomState>;

/// Next-hop MAC addresses, copy-on-write: lookups take no lock, updates (rare) publish a new
/// map.
pub struct NeighTable {
    map: ArcSwap<NeighMap>,
    pending: ArrayQueue<IpAddr>,
}

impl fmt::Debug for NeighTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NeighTable")
            .field("entries", &self.map.load().len())
            .field("pending", &self.pending.len())
            .finish()
    }
}

impl Default for NeighTable {
    fn default() -> Self {
        NeighTable::new()
    }
}

impl NeighTable {
    /// An empty table.
    pub fn new() -> NeighTable {
        NeighTable {
            map: ArcSwap::from_pointee(HashMap::default()),
            pending: ArrayQueue::new(PENDING_CAPACITY),
        }
    }

    /// The MAC of `ip`, if resolved.
    #[inline]
    pub fn lookup(&self, ip: IpAddr) -> Option<MacAddr> {
        self.map.load().get(&ip).copied()
    }

    /// The swap cell of the map, for a per-worker `arc_swap::Cache`. Update only through
    /// [`insert`](Self::insert) and [`remove`](Self::remove).
    #[inline]
    pub fn current(&self) -> &ArcSwap<NeighMap> {
        &self.map
    }

    /// Records (or replaces) the MAC of `ip`.
    pub fn insert(&self, ip: IpAddr, mac: MacAddr) {
        if self.lookup(ip) == Some(mac) {
            return;
        }
        self.map.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.insert(ip, mac);
            Arc::new(m)
        });
    }

    /// Forgets `ip`.
    pub fn remove(&self, ip: IpAddr) {
        self.map.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.remove(&ip);
            Arc::new(m)
        });
    }

    /// Notes that a frame needed `ip` unresolved; the I/O layer drains these with
    /// [`NeighTable::take_pending`] and sends ARP/NDP requests. Lock-free and bounded: when
    /// the queue is full the request is dropped (the next frame asks again).
    #[inline]
    pub fn request(&self, ip: IpAddr) {
        let _ = self.pending.push(ip);
    }

    /// Takes one address waiting to be resolved.
    pub fn take_pending(&self) -> Option<IpAddr> {
        self.pending.pop()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_lookup_replace_remove() {
        let t = NeighTable::new();
        let ip: IpAddr = [10, 0, 0, 2].into();
        assert_eq!(t.lookup(ip), None);
        t.insert(ip, [2, 0, 0, 0, 0, 1]);
        assert_eq!(t.lookup(ip), Some([2, 0, 0, 0, 0, 1]));
        t.insert(ip, [2, 0, 0, 0, 0, 2]);
        assert_eq!(t.lookup(ip), Some([2, 0, 0, 0, 0, 2]));
        t.remove(ip);
        assert_eq!(t.lookup(ip), None);
    }

    #[test]
    fn pending_requests_are_bounded() {
        let t = NeighTable::new();
        for i in 0..(PENDING_CAPACITY + 10) {
            t.request(IpAddr::from([10, 0, (i / 256) as u8, i as u8]));
        }
        let mut n = 0;
        while t.take_pending().is_some() {
            n += 1;
        }
        assert_eq!(n, PENDING_CAPACITY);
    }
}
