//! lblcr — locality-based least connection with replication (the kernel's `ip_vs_lblcr`):
//! each packet destination address maps to a SET of destinations; a hot address grows its set
//! when its members are busy and sheds its busiest member after the set has not changed for a
//! while.
//!
//! Kernel facts kept here (ip_vs_lblcr.c):
//! - a hit refreshes `lastuse`, then takes the set's weighted least-connection member
//!   (`ip_vs_dest_set_min`: skip OVERLOAD, start at the first member with weight > 0, a later
//!   member wins only when strictly less loaded); members are kept newest first (`list_add`);
//! - then, if the set has more than one member and `now` is after `lastmod +
//!   lblcr_expiration` (sysctl, default 24 h — not 6 min), its weighted most-loaded member
//!   (`ip_vs_dest_set_max`: weight > 0 only, later member wins when strictly more loaded) is
//!   removed and `lastmod` = now; the member picked before still serves this packet;
//! - the pick stands unless there is none or lblc's overload test holds for it (more active
//!   connections than weight while some destination has active × 2 < weight); then the wlc
//!   pick over all destinations is taken and added to the set (if not already in it, which
//!   sets `lastmod` = now);
//! - a new address gets a one-member set from the wlc pick; entries are collected as described
//!   in the `locality` module.
//!
//! Cost: a hit takes no lock (it scans one short chain and the small set); changing a set
//! locks its chain; the wlc fallback and the overload test scan the destination list, as the
//! kernel does.

use std::any::Any;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;

use super::lblc::index_by_key;
use super::locality::{DEFAULT_EXPIRATION, Entry, Table, lblc_overloaded, least_weighted, refresh};
use super::{FlowKey, Scheduler, SchedulerKind};
use crate::dest::Destination;
use crate::service::SchedFlags;
use crate::time::Time;

/// A destination set (`struct ip_vs_dest_set`), replaced whole on every change.
#[derive(Debug)]
struct DestSet {
    /// Destination indices, newest first.
    members: Vec<u32>,
    /// Last time the set gained or lost a member.
    lastmod: Time,
}

#[derive(Debug)]
struct LblcrEntry {
    addr: IpAddr,
    /// Milliseconds of the last use.
    lastuse: AtomicU64,
    /// Read without a lock; written under the chain's lock.
    set: ArcSwap<DestSet>,
}

impl Entry for LblcrEntry {
    fn addr(&self) -> &IpAddr {
        &self.addr
    }
    fn lastuse(&self) -> Time {
        Time::from_millis(self.lastuse.load(Ordering::Relaxed))
    }
}

impl LblcrEntry {
    fn new(addr: IpAddr, members: Vec<u32>, lastuse: Time, lastmod: Time) -> LblcrEntry {
        LblcrEntry {
            addr,
            lastuse: AtomicU64::new(lastuse.as_millis()),
            set: ArcSwap::from_pointee(DestSet { members, lastmod }),
        }
    }
}

/// `ip_vs_dest_set_min`: the weighted least-connection member of `set`.
fn set_min(dests: &[Destination], set: &[u32]) -> Option<usize> {
    let mut best: Option<(usize, u64, u64)> = None;
    for &i in set {
        let Some(d) = dests.get(i as usize) else { continue };
        if d.state.is_overloaded() {
            continue;
        }
        let w = d.weight() as u64;
        match best {
            None if d.config.weight > 0 => best = Some((i as usize, d.state.overhead(), w)),
            None => {}
            Some((_, loh, lw)) => {
                let doh = d.state.overhead();
                if loh * w > doh * lw {
                    best = Some((i as usize, doh, w));
                }
            }
        }
    }
    best.map(|(i, _, _)| i)
}

/// `ip_vs_dest_set_max`: the weighted most-connection member of `set` (weight > 0 only).
fn set_max(dests: &[Destination], set: &[u32]) -> Option<usize> {
    let mut best: Option<(usize, u64, u64)> = None;
    for &i in set {
        let Some(d) = dests.get(i as usize) else { continue };
        if d.config.weight == 0 {
            continue;
        }
        let w = d.weight() as u64;
        let doh = d.state.overhead();
        match best {
            None => best = Some((i as usize, doh, w)),
            Some((_, moh, mw)) => {
                if moh * w < doh * mw {
                    best = Some((i as usize, doh, w));
                }
            }
        }
    }
    best.map(|(i, _, _)| i)
}

/// Locality-based least connection with replication: a table from packet destination address
/// to a set of destinations.
#[derive(Debug)]
pub struct Lblcr {
    table: Table<LblcrEntry>,
    keys: Vec<(IpAddr, u16)>,
    /// The `lblcr_expiration` sysctl: set shrink age and full-sweep idle time.
    expiration: Duration,
}

impl Lblcr {
    /// An empty lblcr table for `dests` with the kernel's default expiration (24 h).
    pub fn new(dests: &[Destination]) -> Lblcr {
        Lblcr::with_expiration(dests, DEFAULT_EXPIRATION)
    }

    /// An empty lblcr table using `expiration` (the `lblcr_expiration` sysctl) both for
    /// shrinking sets and for dropping unused entries.
    pub fn with_expiration(dests: &[Destination], expiration: Duration) -> Lblcr {
        Lblcr {
            table: Table::new(expiration),
            keys: dests.iter().map(|d| (d.config.addr, d.config.port)).collect(),
            expiration,
        }
    }

    /// The table of `prev` carried over to `dests`: set members keep pointing at their
    /// destination (by address and port); members that left the service are dropped.
    pub fn carry_over(dests: &[Destination], prev: &Lblcr) -> Lblcr {
        let index = index_by_key(dests);
        let table = Table::carry_over(&prev.table, |e| {
            let set = e.set.load();
            let members = set
                .members
                .iter()
                .filter_map(|&i| index.get(prev.keys.get(i as usize)?).copied())
                .collect();
            Some(LblcrEntry::new(e.addr, members, e.lastuse(), set.lastmod))
        });
        Lblcr {
            table,
            keys: dests.iter().map(|d| (d.config.addr, d.config.port)).collect(),
            expiration: prev.expiration,
        }
    }

    /// Number of addresses in the table.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// True when the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The destinations (indices, newest first) currently in `addr`'s set.
    pub fn set_of(&self, addr: &IpAddr) -> Vec<usize> {
        self.table
            .read(addr, |e| {
                e.set.load().members.iter().map(|&i| i as usize).collect()
            })
            .unwrap_or_default()
    }

    /// Runs the periodic expiry check due at `now` to completion (for embedders that drive a
    /// timer; `schedule` also runs it, a few chains per call).
    pub fn expire(&self, now: Time) {
        self.table.expire(now);
    }
}

pub(super) fn build(
    dests: &[Destination],
    _flags: SchedFlags,
    prev: Option<&dyn Scheduler>,
) -> Box<dyn Scheduler> {
    match prev.and_then(|p| p.as_any().downcast_ref::<Lblcr>()) {
        Some(p) => Box::new(Lblcr::carry_over(dests, p)),
        None => Box::new(Lblcr::new(dests)),
    }
}

impl Scheduler for Lblcr {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Lblcr
    }

    fn schedule(&self, dests: &[Destination], flow: &FlowKey, now: Time) -> Option<usize> {
        self.table.maintain(now);
        let addr = flow.dst;
        let stale = |set: &DestSet| set.members.len() > 1 && now > set.lastmod + self.expiration;
        let hit = self.table.read(&addr, |e| {
            refresh(&e.lastuse, now);
            let set = e.set.load();
            (set_min(dests, &set.members), stale(&set))
        });
        if let Some((_, true)) = hit {
            // More than one member and unchanged for lblcr_expiration: drop the busiest.
            self.table.write(&addr, |chain| {
                let Some(e) = chain.find(&addr) else { return };
                let set = e.set.load();
                if stale(&set)
                    && let Some(m) = set_max(dests, &set.members)
                {
                    let members = set.members.iter().copied().filter(|&i| i as usize != m).collect();
                    e.set.store(Arc::new(DestSet {
                        members,
                        lastmod: now,
                    }));
                }
            });
        }
        if let Some((Some(i), _)) = hit
            && !lblc_overloaded(dests, i)
        {
            return Some(i);
        }
        let i = least_weighted(dests)?;
        self.table.write(&addr, |chain| match chain.find(&addr) {
            Some(e) => {
                let set = e.set.load();
                if !set.members.contains(&(i as u32)) {
                    let mut members = Vec::with_capacity(set.members.len() + 1);
                    members.push(i as u32);
                    members.extend_from_slice(&set.members);
                    e.set.store(Arc::new(DestSet {
                        members,
                        lastmod: now,
                    }));
                }
            }
            None => chain.push_front(LblcrEntry::new(addr, vec![i as u32], now, now)),
        });
        Some(i)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{add_active, add_inactive, dest, dests, flow, overload, v4};
    use super::*;
    use crate::sched::{self, SchedulerKind};

    fn to(s: &dyn Scheduler, d: &[Destination], dst: u32, now: Time) -> Option<usize> {
        s.schedule(d, &flow(v4(0xc0a8_0001), 1000, v4(dst)), now)
    }

    fn lblcr(s: &dyn Scheduler) -> &Lblcr {
        s.as_any().downcast_ref::<Lblcr>().unwrap()
    }

    #[test]
    fn set_grows_when_its_least_loaded_member_is_overloaded() {
        let d = dests(&[2, 2, 2]);
        let s = sched::build(SchedulerKind::Lblcr, &d, SchedFlags::NONE, None);
        assert_eq!(to(s.as_ref(), &d, 7, Time::ZERO), Some(0));
        assert_eq!(lblcr(s.as_ref()).set_of(&v4(7)), vec![0]);
        add_active(&d[0], 3); // 3 > 2 and #1 is under half weight
        assert_eq!(to(s.as_ref(), &d, 7, Time::from_secs(1)), Some(1));
        assert_eq!(lblcr(s.as_ref()).set_of(&v4(7)), vec![1, 0], "newest first");
        // Now the set's least loaded member (#1) serves.
        add_active(&d[1], 1);
        assert_eq!(to(s.as_ref(), &d, 7, Time::from_secs(2)), Some(1));
        // Both members busy -> #2 joins.
        add_active(&d[1], 2);
        assert_eq!(to(s.as_ref(), &d, 7, Time::from_secs(3)), Some(2));
        assert_eq!(lblcr(s.as_ref()).set_of(&v4(7)), vec![2, 1, 0]);
    }

    #[test]
    fn set_min_prefers_less_loaded_and_first_on_ties() {
        let d = dests(&[1, 2, 1]);
        assert_eq!(set_min(&d, &[2, 0]), Some(2), "tie: first in set order");
        add_inactive(&d[2], 1);
        assert_eq!(set_min(&d, &[2, 0]), Some(0));
        add_inactive(&d[0], 1);
        add_inactive(&d[1], 1); // #2 and #0 at 1/1, #1 at 1/2
        assert_eq!(set_min(&d, &[2, 0, 1]), Some(1));
        overload(&d[1]);
        assert_eq!(set_min(&d, &[1]), None);
    }

    #[test]
    fn set_max_skips_weight_zero_and_compares_per_weight() {
        let mut d = dests(&[1, 4, 1]);
        add_inactive(&d[0], 2); // 2/1
        add_inactive(&d[1], 4); // 4/4
        assert_eq!(set_max(&d, &[1, 0, 2]), Some(0));
        d[0].config.weight = 0;
        assert_eq!(set_max(&d, &[1, 0, 2]), Some(1));
    }

    #[test]
    fn busiest_member_leaves_after_set_unchanged_for_expiration() {
        let d = dests(&[2, 2]);
        let s = sched::build(SchedulerKind::Lblcr, &d, SchedFlags::NONE, None);
        assert_eq!(to(s.as_ref(), &d, 7, Time::ZERO), Some(0));
        add_active(&d[0], 3);
        assert_eq!(to(s.as_ref(), &d, 7, Time::from_secs(10)), Some(1)); // lastmod = 10 s
        assert_eq!(lblcr(s.as_ref()).set_of(&v4(7)).len(), 2);
        // Exactly at lastmod + 24 h: not yet (time_after is strict).
        let t = Time::from_secs(10 + 24 * 3600);
        to(s.as_ref(), &d, 7, t);
        assert_eq!(lblcr(s.as_ref()).set_of(&v4(7)).len(), 2);
        // One millisecond later the busiest member (#0, 3 active) is dropped.
        let got = to(s.as_ref(), &d, 7, t + Duration::from_millis(1));
        assert_eq!(lblcr(s.as_ref()).set_of(&v4(7)), vec![1]);
        assert_eq!(got, Some(1));
    }

    #[test]
    fn shrink_can_drop_the_member_just_picked_which_still_serves() {
        // Two members, equally loaded: set_min picks the first (#1, newest), set_max keeps the
        // first too and drops it; the kernel still returns the pick made before the erase.
        let d = dests(&[4, 4]);
        let s = sched::build(SchedulerKind::Lblcr, &d, SchedFlags::NONE, None);
        assert_eq!(to(s.as_ref(), &d, 7, Time::ZERO), Some(0));
        add_active(&d[0], 5);
        assert_eq!(to(s.as_ref(), &d, 7, Time::ZERO), Some(1));
        add_active(&d[1], 5);
        for _ in 0..5 {
            d[0].state.unbind(crate::dest::ConnClass::Active);
        }
        add_active(&d[0], 5); // both 5 active, weight 4, nobody under half: not "overloaded"
        let t = Time::from_secs(24 * 3600 + 1);
        assert_eq!(to(s.as_ref(), &d, 7, t), Some(1));
        assert_eq!(lblcr(s.as_ref()).set_of(&v4(7)), vec![0]);
    }

    #[test]
    fn no_usable_destination_gives_none() {
        let d = dests(&[0, 0]);
        let s = sched::build(SchedulerKind::Lblcr, &d, SchedFlags::NONE, None);
        assert_eq!(to(s.as_ref(), &d, 7, Time::ZERO), None);
    }

    #[test]
    fn unused_entries_expire() {
        let d = dests(&[1, 1]);
        let s = Lblcr::new(&d);
        to(&s, &d, 7, Time::ZERO);
        to(&s, &d, 8, Time::ZERO);
        assert_eq!(s.len(), 2);
        to(&s, &d, 8, Time::from_secs(20 * 3600));
        s.expire(Time::from_secs(20 * 3600));
        assert_eq!(s.len(), 2);
        s.expire(Time::from_secs(24 * 3600 + 60));
        assert_eq!(s.len(), 1);
        assert!(s.set_of(&v4(7)).is_empty());
        assert_eq!(s.set_of(&v4(8)), vec![0]);
    }

    #[test]
    fn sets_carry_over_by_address_and_port() {
        let d1 = vec![dest(1, 2), dest(2, 2), dest(3, 2)];
        let s1 = sched::build(SchedulerKind::Lblcr, &d1, SchedFlags::NONE, None);
        to(s1.as_ref(), &d1, 7, Time::ZERO);
        add_active(&d1[0], 3);
        to(s1.as_ref(), &d1, 7, Time::ZERO);
        assert_eq!(lblcr(s1.as_ref()).set_of(&v4(7)), vec![1, 0]);
        // 10.0.1.2 (#1) leaves; 10.0.1.9 joins at the front.
        let d2 = vec![dest(9, 2), d1[0].clone(), d1[2].clone()];
        let s2 = sched::build(SchedulerKind::Lblcr, &d2, SchedFlags::NONE, Some(s1.as_ref()));
        assert_eq!(lblcr(s2.as_ref()).set_of(&v4(7)), vec![1], "10.0.1.1 is now #1");
    }
}
