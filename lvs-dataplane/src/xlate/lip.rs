//! FULLNAT local-address pool: hands out LIP:lport pairs for new connections and takes them
//! back on expiry, lock-free, never giving out a pair that is in use.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use arc_swap::ArcSwap;

/// Default first local port handed out (ports below are left to the host's own services).
pub const DEFAULT_MIN_PORT: u16 = 1024;
/// Default last local port handed out.
pub const DEFAULT_MAX_PORT: u16 = 65535;

const WORDS: usize = 65536 / 64;

/// One local address of a [`LipPool`] and its port bitmap (bit set = port in use).
pub struct LocalAddr {
    addr: IpAddr,
    used: Box<[AtomicU64]>,
    in_use: AtomicUsize,
    /// False once the address was removed from the pool: no new ports, but the ports of live
    /// connections still come back.
    active: AtomicBool,
}

impl fmt::Debug for LocalAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalAddr")
            .field("addr", &self.addr)
            .field("in_use", &self.in_use.load(Ordering::Relaxed))
            .finish()
    }
}

impl LocalAddr {
    /// The address.
    #[inline]
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    fn new(addr: IpAddr) -> LocalAddr {
        LocalAddr {
            addr,
            used: (0..WORDS).map(|_| AtomicU64::new(0)).collect(),
            in_use: AtomicUsize::new(0),
            active: AtomicBool::new(true),
        }
    }
}

/// A pool of local addresses (LIPs) and their ports, shared by every worker.
///
/// Allocation sets one bit with `fetch_or` after finding a clear bit, so two workers can never
/// both own a port; a rotating cursor spreads allocations so a just-freed port is not reused at
/// once (a late packet of the old connection cannot hit the new one).
pub struct LipPool {
    addrs: ArcSwap<Vec<Arc<LocalAddr>>>,
    min_port: u16,
    max_port: u16,
    cursor: AtomicUsize,
}

impl fmt::Debug for LipPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LipPool")
            .field("addrs", &self.addrs().collect::<Vec<_>>())
            .field("ports", &(self.min_port..=self.max_port))
            .field("in_use", &self.in_use())
            .finish()
    }
}

/// [`LipPool::contains`] over an address list taken from [`LipPool::current`].
#[inline]
pub fn contains(list: &[Arc<LocalAddr>], addr: IpAddr) -> bool {
    list.iter().any(|a| a.addr == addr)
}

impl LipPool {
    /// A pool over `addrs` handing out ports `min_port..=max_port` on each.
    pub fn new(addrs: &[IpAddr], min_port: u16, max_port: u16) -> LipPool {
        assert!(min_port <= max_port, "empty port range");
        let addrs = addrs.iter().map(|&addr| Arc::new(LocalAddr::new(addr))).collect();
        LipPool {
            addrs: ArcSwap::from_pointee(addrs),
            min_port,
            max_port,
            cursor: AtomicUsize::new(0),
        }
    }

    /// Replaces the set of local addresses at run time (`ipvsadm -P/-Q`, a config reload).
    /// Ports of a removed address that live connections hold still come back through
    /// [`release`](Self::release), and the address is not offered any more; an address that
    /// comes back keeps its port bitmap. One writer at a time (the control plane).
    pub fn set_addrs(&self, addrs: &[IpAddr]) {
        let old = self.addrs.load_full();
        let mut next: Vec<Arc<LocalAddr>> = Vec::new();
        for &a in addrs {
            if next.iter().any(|l| l.addr == a) {
                continue;
            }
            let l = old
                .iter()
                .find(|l| l.addr == a)
                .cloned()
                .unwrap_or_else(|| Arc::new(LocalAddr::new(a)));
            l.active.store(true, Ordering::Relaxed);
            next.push(l);
        }
        for l in old.iter() {
            if !addrs.contains(&l.addr) {
                l.active.store(false, Ordering::Relaxed);
                // Kept while connections hold its ports, so they can be returned.
                if l.in_use.load(Ordering::Relaxed) > 0 {
                    next.push(l.clone());
                }
            }
        }
        self.addrs.store(Arc::new(next));
    }

    /// The local addresses the pool hands out.
    pub fn addrs(&self) -> impl Iterator<Item = IpAddr> + use<> {
        self.addrs
            .load()
            .iter()
            .filter(|a| a.active.load(Ordering::Relaxed))
            .map(|a| a.addr)
            .collect::<Vec<_>>()
            .into_iter()
    }

    /// True when `addr` is one of the pool's LIPs (or a removed one still in use: replies to it
    /// are still ours).
    #[inline]
    pub fn contains(&self, addr: IpAddr) -> bool {
        contains(&self.addrs.load(), addr)
    }

    /// The swap cell of the address list, for a per-worker `arc_swap::Cache` (then
    /// [`contains`] on the cached list answers [`LipPool::contains`]). Read only.
    #[inline]
    pub fn current(&self) -> &ArcSwap<Vec<Arc<LocalAddr>>> {
        &self.addrs
    }

    /// Pairs currently handed out.
    pub fn in_use(&self) -> usize {
        self.addrs
            .load()
            .iter()
            .map(|a| a.in_use.load(Ordering::Relaxed))
            .sum()
    }

    /// Pairs the pool can hand out in all.
    pub fn capacity(&self) -> usize {
        let n = self
            .addrs
            .load()
            .iter()
            .filter(|a| a.active.load(Ordering::Relaxed))
            .count();
        n * (self.max_port as usize - self.min_port as usize + 1)
    }

    /// Takes a free LIP:lport of the same family as `family_of`, or `None` when every pair is
    /// in use. Amortised O(1): the cursor moves on from the last pair handed out and skips
    /// full bitmap words 64 ports at a time.
    pub fn allocate(&self, family_of: IpAddr) -> Option<(IpAddr, u16)> {
        let span = self.max_port as usize - self.min_port as usize + 1;
        let addrs = self.addrs.load();
        let n_addrs = addrs.len();
        if n_addrs == 0 {
            return None;
        }
        let total = span * n_addrs;
        let start = self.cursor.fetch_add(1, Ordering::Relaxed) % total;
        let mut probe = 0;
        while probe < total {
            let pos = (start + probe) % total;
            let (ai, off) = (pos / span, pos % span);
            let la = &addrs[ai];
            if la.addr.is_ipv4() != family_of.is_ipv4() || !la.active.load(Ordering::Relaxed) {
                // Skip the rest of this address's range.
                probe += span - off;
                continue;
            }
            let port = self.min_port as usize + off;
            let word = &la.used[port / 64];
            let bit = 1u64 << (port % 64);
            let cur = word.load(Ordering::Relaxed);
            if cur & bit == 0 {
                if word.fetch_or(bit, Ordering::AcqRel) & bit == 0 {
                    la.in_use.fetch_add(1, Ordering::Relaxed);
                    self.cursor.store(pos + 1, Ordering::Relaxed);
                    return Some((la.addr, port as u16));
                }
                probe += 1;
            } else if cur == u64::MAX {
                // A full word: skip its remaining ports (within this address's range).
                probe += (64 - port % 64).min(span - off);
            } else {
                probe += 1;
            }
        }
        None
    }

    /// Returns `addr:port` to the pool. Returns false if it was not handed out.
    pub fn release(&self, addr: IpAddr, port: u16) -> bool {
        let addrs = self.addrs.load();
        let Some(la) = addrs.iter().find(|a| a.addr == addr) else {
            return false;
        };
        let bit = 1u64 << (port as usize % 64);
        let was = la.used[port as usize / 64].fetch_and(!bit, Ordering::AcqRel) & bit != 0;
        if was {
            la.in_use.fetch_sub(1, Ordering::Relaxed);
        }
        was
    }

    /// True when `addr:port` is currently handed out.
    pub fn is_in_use(&self, addr: IpAddr, port: u16) -> bool {
        self.addrs
            .load()
            .iter()
            .find(|a| a.addr == addr)
            .is_some_and(|la| {
                la.used[port as usize / 64].load(Ordering::Relaxed) & (1u64 << (port % 64)) != 0
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::Arc;

    fn v4(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn never_hands_out_a_pair_twice_and_exhausts_exactly() {
        let pool = LipPool::new(&[v4(1), v4(2)], 5000, 5099);
        let mut seen = HashSet::new();
        while let Some(p) = pool.allocate(v4(9)) {
            assert!((5000..=5099).contains(&p.1));
            assert!(seen.insert(p), "pair {p:?} handed out twice");
        }
        assert_eq!(seen.len(), 200);
        assert_eq!(pool.in_use(), 200);
        assert!(pool.release(v4(2), 5042));
        assert!(!pool.release(v4(2), 5042), "double release is refused");
        assert_eq!(pool.allocate(v4(9)), Some((v4(2), 5042)));
        assert_eq!(pool.allocate(v4(9)), None);
    }

    #[test]
    fn allocates_only_from_the_matching_family() {
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        let pool = LipPool::new(&[v4(1), v6], 6000, 6009);
        for _ in 0..10 {
            assert_eq!(pool.allocate("2001:db8::99".parse().unwrap()).unwrap().0, v6);
        }
        assert_eq!(pool.allocate("2001:db8::99".parse().unwrap()), None);
        assert_eq!(pool.allocate(v4(9)).unwrap().0, v4(1));
    }

    #[test]
    fn freed_port_is_not_reused_immediately() {
        let pool = LipPool::new(&[v4(1)], 7000, 7999);
        let a = pool.allocate(v4(9)).unwrap();
        pool.release(a.0, a.1);
        let b = pool.allocate(v4(9)).unwrap();
        assert_ne!(a, b, "the cursor moves on past a just-freed port");
    }

    #[test]
    fn addresses_change_at_run_time_and_held_ports_still_come_back() {
        let pool = LipPool::new(&[v4(1)], 7000, 7001);
        let a = pool.allocate(v4(9)).unwrap();
        pool.set_addrs(&[v4(2)]);
        assert_eq!(pool.addrs().collect::<Vec<_>>(), vec![v4(2)]);
        assert!(
            pool.contains(v4(1)),
            "still ours while a connection holds a port on it"
        );
        for _ in 0..2 {
            assert_eq!(
                pool.allocate(v4(9)).unwrap().0,
                v4(2),
                "only the new address is offered"
            );
        }
        assert_eq!(pool.allocate(v4(9)), None);
        assert!(pool.release(a.0, a.1), "the old address's port comes back");
        pool.set_addrs(&[v4(2)]);
        assert!(!pool.contains(v4(1)), "dropped once nothing holds it");
        assert_eq!(pool.capacity(), 2);
    }

    #[test]
    fn concurrent_allocation_hands_out_disjoint_pairs() {
        let pool = Arc::new(LipPool::new(&[v4(1), v4(2)], 1024, 4095));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let pool = pool.clone();
                std::thread::spawn(move || {
                    let mut mine = Vec::new();
                    for i in 0..1500 {
                        if let Some(p) = pool.allocate(v4(9)) {
                            mine.push(p);
                        }
                        if i % 3 == 0
                            && let Some(p) = mine.pop()
                        {
                            assert!(pool.release(p.0, p.1));
                        }
                    }
                    mine
                })
            })
            .collect();
        let mut all = HashSet::new();
        for h in handles {
            for p in h.join().unwrap() {
                assert!(all.insert(p), "pair {p:?} owned by two threads");
            }
        }
        assert_eq!(all.len(), pool.in_use());
    }
}
