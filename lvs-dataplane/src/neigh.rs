//! Neighbour table: next-hop IP → MAC, filled by the I/O layer (kernel neighbour table, lvs's
//! own ARP/NDP), read lock-free by the pipeline, with a bounded queue of addresses the pipeline
//! found unresolved so the I/O layer can ask for them.
//!
//! Entries age the way the kernel's neighbour states do (REACHABLE → STALE → PROBE → gone),
//! counted in calls of [`NeighTable::age`], which the daemon makes once a second: a neighbour
//! not confirmed for [`REACHABLE_TICKS`] (an ARP/NDP from it, or a REACHABLE entry in the
//! kernel's table) is still used but probed with unicast requests, one per tick, and forgotten
//! after [`PROBES`] unanswered ones; the next frame for it then asks the whole segment again.
//! So a neighbour that died, or whose address moved to another MAC without a gratuitous ARP,
//! is not sent to for ever.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use crossbeam_queue::ArrayQueue;

pub use crate::wire::ethernet::MacAddr;

/// Capacity of the queue of unresolved next hops waiting for an ARP/NDP request.
pub const PENDING_CAPACITY: usize = 256;

/// Most neighbours the table holds (the kernel's default hard limit, `gc_thresh3`, is 1024).
/// New addresses beyond it are refused, so a flood of ARP/NDP from forged senders cannot grow
/// the table, or the copy each new entry costs, without bound.
pub const MAX_NEIGHBOURS: usize = 8192;

/// Ticks ([`NeighTable::age`] calls, one a second) a neighbour is trusted after its last
/// confirmation, by default: the kernel's default `base_reachable_time` (30 s). The daemon
/// takes the served interface's own setting ([`NeighTable::set_reachable_ticks`]).
pub const REACHABLE_TICKS: u32 = 30;

/// Unanswered unicast probes, one per tick, before a neighbour is forgotten: the kernel's
/// `ucast_solicit` (3, one per `retrans_time` of 1 s).
pub const PROBES: u32 = 3;

/// One published neighbour map.
pub type NeighMap = HashMap<IpAddr, MacAddr, ahash::RandomState>;

/// Next-hop MAC addresses, copy-on-write: lookups take no lock, updates (rare) publish a new
/// map.
pub struct NeighTable {
    map: ArcSwap<NeighMap>,
    pending: ArrayQueue<IpAddr>,
    /// Ticks since each neighbour was last confirmed (absent: confirmed this tick).
    unconfirmed: Mutex<HashMap<IpAddr, u32, ahash::RandomState>>,
    /// Neighbours to probe with a unicast request to the MAC the table holds.
    probes: ArrayQueue<(IpAddr, MacAddr)>,
    /// Ticks a confirmation is trusted for.
    reachable: std::sync::atomic::AtomicU32,
}

/// What one [`NeighTable::age`] tick did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AgeReport {
    /// Neighbours queued for a unicast probe.
    pub probed: usize,
    /// Neighbours forgotten after [`PROBES`] unanswered probes.
    pub forgotten: usize,
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
            unconfirmed: Mutex::new(HashMap::default()),
            probes: ArrayQueue::new(PENDING_CAPACITY),
            reachable: std::sync::atomic::AtomicU32::new(REACHABLE_TICKS),
        }
    }

    /// Sets how many ticks a confirmation is trusted for (at least 1; default
    /// [`REACHABLE_TICKS`]).
    pub fn set_reachable_ticks(&self, ticks: u32) {
        self.reachable
            .store(ticks.max(1), std::sync::atomic::Ordering::Relaxed);
    }

    /// Ticks a confirmation is trusted for.
    pub fn reachable_ticks(&self) -> u32 {
        self.reachable.load(std::sync::atomic::Ordering::Relaxed)
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

    /// Records (or replaces) the MAC of `ip`, as an authoritative source (a REACHABLE entry of
    /// the kernel's neighbour table) says, and counts as a confirmation. False if `ip` is new
    /// and the table is full ([`MAX_NEIGHBOURS`]).
    pub fn insert(&self, ip: IpAddr, mac: MacAddr) -> bool {
        self.learn(ip, mac, true)
    }

    /// Adds `ip` → `mac` from a source that is not a confirmation (a STALE entry of the
    /// kernel's table): only if `ip` is unknown, so it never overrides a fresher MAC learned
    /// from the wire, and it ages from there. False if not added.
    pub fn insert_stale(&self, ip: IpAddr, mac: MacAddr) -> bool {
        if self.map.load().contains_key(&ip) {
            return false;
        }
        let added = self.publish(ip, mac, false, true) == Some(true);
        if added {
            // Never confirmed: probed at the next tick.
            self.unconfirmed_map().insert(ip, self.reachable_ticks());
        }
        added
    }

    /// Learns `ip` → `mac` from ARP/NDP seen on the wire, the way the kernel's `arp_process`
    /// does: an address already in the table is updated, a new one is added only when
    /// `create` (the frame was addressed to one of lvs's addresses, or answers a request of
    /// lvs) and the table is not full. True if the table now maps `ip` to `mac`.
    /// Also a confirmation of `ip` (see [`age`](Self::age)) when it returns true.
    pub fn learn(&self, ip: IpAddr, mac: MacAddr, create: bool) -> bool {
        let map = self.map.load();
        match map.get(&ip) {
            Some(&have) if have == mac => {
                drop(map);
                self.confirm(ip);
                return true;
            }
            None if !create || map.len() >= MAX_NEIGHBOURS => return false,
            _ => {}
        }
        drop(map);
        let done = self.publish(ip, mac, true, create).is_some();
        if done {
            self.confirm(ip);
        }
        done
    }

    /// Publishes a map where `ip` → `mac`: a known `ip` is updated if `replace`, a new one
    /// added if `create` and the table is not full. `Some(added)` when `ip` now maps to
    /// `mac`, `None` when the map was left as it was.
    fn publish(&self, ip: IpAddr, mac: MacAddr, replace: bool, create: bool) -> Option<bool> {
        let mut outcome = None;
        self.map.rcu(|m| {
            outcome = match m.get(&ip) {
                Some(&have) if have == mac => Some(false),
                Some(_) if replace => Some(false),
                None if create && m.len() < MAX_NEIGHBOURS => Some(true),
                _ => None,
            };
            if outcome.is_none() || m.get(&ip) == Some(&mac) {
                return Arc::clone(m);
            }
            let mut m = HashMap::clone(m);
            m.insert(ip, mac);
            Arc::new(m)
        });
        outcome
    }

    /// Forgets `ip`.
    pub fn remove(&self, ip: IpAddr) {
        self.map.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.remove(&ip);
            Arc::new(m)
        });
        self.unconfirmed_map().remove(&ip);
    }

    fn unconfirmed_map(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, u32, ahash::RandomState>> {
        self.unconfirmed.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn confirm(&self, ip: IpAddr) {
        self.unconfirmed_map().remove(&ip);
    }

    /// One tick of neighbour aging (call it once a second): every neighbour not confirmed for
    /// more than [`reachable_ticks`](Self::reachable_ticks) ticks is queued for a unicast
    /// probe ([`take_probe`](Self::take_probe)), and forgotten once [`PROBES`] probes went
    /// unanswered.
    pub fn age(&self) -> AgeReport {
        let reachable = self.reachable_ticks();
        let mut report = AgeReport::default();
        let mut forget = Vec::new();
        {
            let map = self.map.load();
            let mut ticks = self.unconfirmed_map();
            ticks.retain(|ip, _| map.contains_key(ip));
            for (&ip, &mac) in map.iter() {
                let t = ticks.entry(ip).or_insert(0);
                *t = t.saturating_add(1);
                if *t > reachable + PROBES {
                    forget.push(ip);
                } else if *t > reachable && self.probes.push((ip, mac)).is_ok() {
                    report.probed += 1;
                }
            }
            for ip in &forget {
                ticks.remove(ip);
            }
        }
        if !forget.is_empty() {
            report.forgotten = forget.len();
            self.map.rcu(|m| {
                let mut m = HashMap::clone(m);
                for ip in &forget {
                    m.remove(ip);
                }
                Arc::new(m)
            });
        }
        report
    }

    /// Takes one neighbour to probe: its address and the MAC the table holds for it.
    pub fn take_probe(&self) -> Option<(IpAddr, MacAddr)> {
        self.probes.pop()
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
    fn learning_updates_known_addresses_and_creates_only_when_asked_and_not_full() {
        let t = NeighTable::new();
        let ip: IpAddr = [10, 0, 0, 2].into();
        assert!(
            !t.learn(ip, [2, 0, 0, 0, 0, 1], false),
            "unsolicited: not created"
        );
        assert_eq!(t.lookup(ip), None);
        assert!(t.learn(ip, [2, 0, 0, 0, 0, 1], true));
        assert!(
            t.learn(ip, [2, 0, 0, 0, 0, 2], false),
            "a known address is updated"
        );
        assert_eq!(t.lookup(ip), Some([2, 0, 0, 0, 0, 2]));
        for i in 0..MAX_NEIGHBOURS as u32 {
            t.insert(IpAddr::from((0x0b00_0000 + i).to_be_bytes()), [2, 0, 0, 0, 0, 3]);
        }
        assert_eq!(t.current().load().len(), MAX_NEIGHBOURS, "bounded");
        let late: IpAddr = [12, 0, 0, 1].into();
        assert!(!t.insert(late, [2, 0, 0, 0, 0, 4]), "full: refused");
        assert_eq!(t.lookup(late), None);
        assert!(
            t.learn(ip, [2, 0, 0, 0, 0, 5], false),
            "updates still work when full"
        );
        assert_eq!(t.lookup(ip), Some([2, 0, 0, 0, 0, 5]));
    }

    /// The kernel's NUD timing in ticks: trusted for 30 ticks after a confirmation, then one
    /// unicast probe per tick (to the MAC held), forgotten after 3 unanswered probes; an
    /// answer (or any ARP/NDP from it, or a REACHABLE kernel entry) starts it over.
    #[test]
    fn unconfirmed_neighbours_are_probed_then_forgotten() {
        let t = NeighTable::new();
        let (a, b): (IpAddr, IpAddr) = ([10, 0, 0, 2].into(), [10, 0, 0, 3].into());
        t.insert(a, [2, 0, 0, 0, 0, 1]);
        t.insert(b, [2, 0, 0, 0, 0, 2]);
        for _ in 0..REACHABLE_TICKS {
            assert_eq!(t.age(), AgeReport::default());
        }
        assert_eq!(t.take_probe(), None);
        // Tick 31: both are probed (still used meanwhile).
        assert_eq!(
            t.age(),
            AgeReport {
                probed: 2,
                forgotten: 0
            }
        );
        let mut probed: Vec<_> = std::iter::from_fn(|| t.take_probe()).collect();
        probed.sort();
        assert_eq!(probed, vec![(a, [2, 0, 0, 0, 0, 1]), (b, [2, 0, 0, 0, 0, 2])]);
        assert_eq!(t.lookup(a), Some([2, 0, 0, 0, 0, 1]));
        // b answers; a does not.
        assert!(t.learn(b, [2, 0, 0, 0, 0, 2], false));
        for _ in 1..PROBES {
            let one = AgeReport {
                probed: 1,
                forgotten: 0,
            };
            assert_eq!(t.age(), one);
            assert_eq!(t.take_probe(), Some((a, [2, 0, 0, 0, 0, 1])));
        }
        assert_eq!(
            t.age(),
            AgeReport {
                probed: 0,
                forgotten: 1
            }
        );
        assert_eq!(t.lookup(a), None, "three probes unanswered: forgotten");
        assert_eq!(t.lookup(b), Some([2, 0, 0, 0, 0, 2]), "b answered: kept");
        assert_eq!(t.take_probe(), None);
        // Learned again from scratch: trusted for another 30 ticks.
        assert!(t.learn(a, [2, 0, 0, 0, 0, 9], true));
        for _ in 0..REACHABLE_TICKS {
            t.age();
        }
        assert_eq!(t.lookup(a), Some([2, 0, 0, 0, 0, 9]));
        // A shorter reachable time (the interface's base_reachable_time_ms): 2 ticks trusted.
        t.set_reachable_ticks(2);
        let c: IpAddr = [10, 0, 0, 5].into();
        t.remove(a);
        t.remove(b);
        assert!(t.learn(c, [2, 0, 0, 0, 0, 5], true));
        assert_eq!(t.age(), AgeReport::default());
        assert_eq!(t.age(), AgeReport::default());
        assert_eq!(
            t.age(),
            AgeReport {
                probed: 1,
                forgotten: 0
            }
        );
    }

    /// A STALE kernel entry fills a gap but never overrides what the wire said, and is not a
    /// confirmation: it is probed at the next tick.
    #[test]
    fn stale_kernel_entries_only_fill_gaps_and_are_probed() {
        let t = NeighTable::new();
        let ip: IpAddr = [10, 0, 0, 2].into();
        assert!(t.learn(ip, [2, 0, 0, 0, 0, 7], true));
        assert!(!t.insert_stale(ip, [2, 0, 0, 0, 0, 1]), "known: not overridden");
        assert_eq!(t.lookup(ip), Some([2, 0, 0, 0, 0, 7]));
        let other: IpAddr = [10, 0, 0, 4].into();
        assert!(t.insert_stale(other, [2, 0, 0, 0, 0, 4]));
        assert_eq!(t.lookup(other), Some([2, 0, 0, 0, 0, 4]));
        assert_eq!(
            t.age(),
            AgeReport {
                probed: 1,
                forgotten: 0
            }
        );
        assert_eq!(t.take_probe(), Some((other, [2, 0, 0, 0, 0, 4])));
        t.remove(other);
        assert_eq!(t.age(), AgeReport::default(), "removed: nothing left to age");
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

/// Builds an ARP request (broadcast) asking for `target`, from `our_ip` at `our_mac`.
pub fn arp_request(our_mac: MacAddr, our_ip: std::net::Ipv4Addr, target: std::net::Ipv4Addr) -> [u8; 42] {
    let mut f = [0u8; 42];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&our_mac);
    f[12..14].copy_from_slice(&crate::wire::ethertype::ARP.to_be_bytes());
    f[14..22].copy_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    f[22..28].copy_from_slice(&our_mac);
    f[28..32].copy_from_slice(&our_ip.octets());
    f[38..42].copy_from_slice(&target.octets());
    f
}

/// Builds the unicast ARP request lvs probes a known neighbour with: as
/// [`arp_request`], sent to the MAC the table holds for `target` instead of broadcast.
pub fn arp_probe(
    our_mac: MacAddr,
    our_ip: std::net::Ipv4Addr,
    target: std::net::Ipv4Addr,
    target_mac: MacAddr,
) -> [u8; 42] {
    let mut f = arp_request(our_mac, our_ip, target);
    f[0..6].copy_from_slice(&target_mac);
    f
}

/// Builds an IPv6 neighbour solicitation for `target`, sent to its solicited-node multicast
/// address from `our_ip` at `our_mac` (with the source link-layer address option).
pub fn neighbor_solicit(
    our_mac: MacAddr,
    our_ip: std::net::Ipv6Addr,
    target: std::net::Ipv6Addr,
) -> [u8; 86] {
    ns_frame(our_mac, our_ip, target, None)
}

/// Builds the unicast neighbour solicitation of neighbour unreachability detection
/// (RFC 4861 7.3.3): to `target` itself at `target_mac`.
pub fn neighbor_probe(
    our_mac: MacAddr,
    our_ip: std::net::Ipv6Addr,
    target: std::net::Ipv6Addr,
    target_mac: MacAddr,
) -> [u8; 86] {
    ns_frame(our_mac, our_ip, target, Some(target_mac))
}

fn ns_frame(
    our_mac: MacAddr,
    our_ip: std::net::Ipv6Addr,
    target: std::net::Ipv6Addr,
    unicast: Option<MacAddr>,
) -> [u8; 86] {
    use crate::wire::{checksum, ip_proto};
    let t = target.octets();
    let dst = match unicast {
        Some(_) => target,
        None => std::net::Ipv6Addr::new(
            0xff02,
            0,
            0,
            0,
            0,
            1,
            0xff00 | t[13] as u16,
            u16::from_be_bytes([t[14], t[15]]),
        ),
    };
    let mut f = [0u8; 86];
    match unicast {
        Some(mac) => f[0..6].copy_from_slice(&mac),
        None => f[0..6].copy_from_slice(&[0x33, 0x33, 0xff, t[13], t[14], t[15]]),
    }
    f[6..12].copy_from_slice(&our_mac);
    f[12..14].copy_from_slice(&crate::wire::ethertype::IPV6.to_be_bytes());
    // IPv6 header: version 6, payload 32 (NS 24 + option 8), next header ICMPv6, hop limit 255.
    f[14] = 0x60;
    f[18..20].copy_from_slice(&32u16.to_be_bytes());
    f[20] = ip_proto::ICMPV6;
    f[21] = 255;
    f[22..38].copy_from_slice(&our_ip.octets());
    f[38..54].copy_from_slice(&dst.octets());
    let m = &mut f[54..86];
    m[0] = 135;
    m[8..24].copy_from_slice(&t);
    m[24] = 1; // source link-layer address option, length 1 (8 bytes)
    m[25] = 1;
    m[26..32].copy_from_slice(&our_mac);
    let ph = checksum::pseudo_header_v6(&our_ip, &dst, ip_proto::ICMPV6, 32);
    let c = !checksum::add(ph, checksum::sum(m));
    m[2..4].copy_from_slice(&c.to_be_bytes());
    f
}

#[cfg(test)]
mod request_tests {
    use super::*;
    use crate::wire::{arp, icmpv6, ipv6};

    #[test]
    fn arp_request_parses_as_a_request_for_the_target() {
        let f = arp_request([2, 0, 0, 0, 0, 1], [10, 0, 0, 1].into(), [10, 0, 0, 9].into());
        let a = arp::Packet::new_checked(&f[14..]).unwrap();
        assert_eq!(a.operation(), arp::OP_REQUEST);
        assert_eq!(
            (a.sender_ip(), a.target_ip()),
            ([10, 0, 0, 1].into(), [10, 0, 0, 9].into())
        );
        assert_eq!(&f[0..6], &[0xff; 6]);
    }

    #[test]
    fn probes_go_to_the_known_mac() {
        let f = arp_probe(
            [2, 0, 0, 0, 0, 1],
            [10, 0, 0, 1].into(),
            [10, 0, 0, 9].into(),
            [2, 0, 0, 0, 0, 9],
        );
        let a = arp::Packet::new_checked(&f[14..]).unwrap();
        assert_eq!(a.operation(), arp::OP_REQUEST);
        assert_eq!(a.target_ip(), std::net::Ipv4Addr::new(10, 0, 0, 9));
        assert_eq!(&f[0..6], &[2, 0, 0, 0, 0, 9]);
        let me: std::net::Ipv6Addr = "fd00::1".parse().unwrap();
        let target: std::net::Ipv6Addr = "fd00::12:3456".parse().unwrap();
        let f = neighbor_probe([2, 0, 0, 0, 0, 1], me, target, [2, 0, 0, 0, 0, 9]);
        let ip = ipv6::Packet::new_checked(&f[14..]).unwrap();
        assert_eq!(ip.dst_addr(), target, "NUD probe: to the target itself");
        let m = icmpv6::Packet::new_checked(&f[54..]).unwrap();
        assert!(m.verify_checksum(&me, &target));
        assert_eq!(m.target_addr(), Some(target));
        assert_eq!(&f[0..6], &[2, 0, 0, 0, 0, 9]);
    }

    #[test]
    fn neighbor_solicit_is_valid_and_goes_to_the_solicited_node_group() {
        let me: std::net::Ipv6Addr = "fd00::1".parse().unwrap();
        let target: std::net::Ipv6Addr = "fd00::12:3456".parse().unwrap();
        let f = neighbor_solicit([2, 0, 0, 0, 0, 1], me, target);
        let ip = ipv6::Packet::new_checked(&f[14..]).unwrap();
        assert_eq!(
            ip.dst_addr(),
            "ff02::1:ff12:3456".parse::<std::net::Ipv6Addr>().unwrap()
        );
        let m = icmpv6::Packet::new_checked(&f[54..]).unwrap();
        assert!(m.verify_checksum(&me, &ip.dst_addr()));
        assert_eq!(m.target_addr(), Some(target));
        assert_eq!(m.link_layer_addr(), Some([2, 0, 0, 0, 0, 1]));
        assert_eq!(&f[0..6], &[0x33, 0x33, 0xff, 0x12, 0x34, 0x56]);
    }
}
