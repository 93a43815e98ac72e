//! lblc — locality-based least connection (the kernel's `ip_vs_lblc`): each packet destination
//! address (a web site behind a cache cluster) sticks to one destination, chosen by weighted
//! least connection when first seen and re-chosen when that destination becomes unusable.
//!
//! Kernel facts kept here (ip_vs_lblc.c): on a hit the entry's `lastuse` is refreshed and its
//! destination is kept unless its weight is 0 or lblc's own overload test holds (more active
//! connections than weight while some destination has active × 2 < weight); note that the
//! kernel does NOT look at the OVERLOAD (upper threshold) flag on a hit, and neither do we.
//! Otherwise the wlc pick over all destinations (skipping OVERLOAD and weight 0) is taken and
//! replaces the entry (a new entry at the head of its chain, `lastuse` = now). Entries are
//! collected as described in the `locality` module (24 h `lblc_expiration`, 6 min when over
//! 16384 entries).
//!
//! Cost: a hit takes no lock (it scans one short chain and stores `lastuse`); a miss or an
//! unusable entry runs the O(n) wlc scan, as the kernel does, and locks one of 1024 chains.

use std::any::Any;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::locality::{DEFAULT_EXPIRATION, Entry, Table, lblc_overloaded, least_weighted, refresh};
use super::{FlowKey, Scheduler, SchedulerKind};
use crate::dest::Destination;
use crate::service::SchedFlags;
use crate::time::Time;

#[derive(Debug)]
struct LblcEntry {
    addr: IpAddr,
    /// Index of the destination in the scheduler's list.
    dest: u32,
    /// Milliseconds of the last use.
    lastuse: AtomicU64,
}

impl Entry for LblcEntry {
    fn addr(&self) -> &IpAddr {
        &self.addr
    }
    fn lastuse(&self) -> Time {
        Time::from_millis(self.lastuse.load(Ordering::Relaxed))
    }
}

/// Locality-based least connection: a table from packet destination address to destination.
#[derive(Debug)]
pub struct Lblc {
    table: Table<LblcEntry>,
    /// Address and port of each destination, to carry entries into the next snapshot.
    keys: Vec<(IpAddr, u16)>,
}

/// Index of every destination of `dests` by address and port.
pub(super) fn index_by_key(dests: &[Destination]) -> HashMap<(IpAddr, u16), u32> {
    dests
        .iter()
        .enumerate()
        .map(|(i, d)| ((d.config.addr, d.config.port), i as u32))
        .collect()
}

impl Lblc {
    /// An empty lblc table for `dests` with the kernel's default expiration (24 h).
    pub fn new(dests: &[Destination]) -> Lblc {
        Lblc::with_expiration(dests, DEFAULT_EXPIRATION)
    }

    /// An empty lblc table whose full sweeps drop entries unused for `expiration` (the
    /// `lblc_expiration` sysctl).
    pub fn with_expiration(dests: &[Destination], expiration: Duration) -> Lblc {
        Lblc {
            table: Table::new(expiration),
            keys: dests.iter().map(|d| (d.config.addr, d.config.port)).collect(),
        }
    }

    /// The table of `prev` carried over to `dests`: entries keep pointing at their destination
    /// (found by address and port); entries of removed destinations are dropped (the kernel
    /// would find them unavailable and replace them on their next use).
    pub fn carry_over(dests: &[Destination], prev: &Lblc) -> Lblc {
        let index = index_by_key(dests);
        let table = Table::carry_over(&prev.table, |e| {
            let key = prev.keys.get(e.dest as usize)?;
            Some(LblcEntry {
                addr: e.addr,
                dest: *index.get(key)?,
                lastuse: AtomicU64::new(e.lastuse.load(Ordering::Relaxed)),
            })
        });
        Lblc {
            table,
            keys: dests.iter().map(|d| (d.config.addr, d.config.port)).collect(),
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
    match prev.and_then(|p| p.as_any().downcast_ref::<Lblc>()) {
        Some(p) => Box::new(Lblc::carry_over(dests, p)),
        None => Box::new(Lblc::new(dests)),
    }
}

impl Scheduler for Lblc {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Lblc
    }

    fn schedule(&self, dests: &[Destination], flow: &FlowKey, now: Time) -> Option<usize> {
        self.table.maintain(now);
        let addr = flow.dst;
        let hit = self.table.read(&addr, |e| {
            refresh(&e.lastuse, now);
            e.dest as usize
        });
        if let Some(i) = hit
            && let Some(d) = dests.get(i)
            && d.config.weight > 0
            && !lblc_overloaded(dests, i)
        {
            return Some(i);
        }
        let i = least_weighted(dests)?;
        // ip_vs_lblc_new: keep an entry already naming `i`, else replace it by a new one at
        // the head of the chain.
        self.table.write(&addr, |chain| {
            if chain.find(&addr).is_some_and(|e| e.dest as usize == i) {
                return;
            }
            chain.remove(&addr);
            chain.push_front(LblcEntry {
                addr,
                dest: i as u32,
                lastuse: AtomicU64::new(now.as_millis()),
            });
        });
        Some(i)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{add_active, dest, dests, flow, overload, v4};
    use super::*;
    use crate::sched::{self, SchedulerKind};

    fn to(s: &dyn Scheduler, d: &[Destination], dst: u32, now: Time) -> Option<usize> {
        s.schedule(d, &flow(v4(0xc0a8_0001), 1000, v4(dst)), now)
    }

    #[test]
    fn an_address_sticks_to_its_destination_while_load_shifts() {
        let d = dests(&[1, 1, 1]);
        let s = sched::build(SchedulerKind::Lblc, &d, SchedFlags::NONE, None);
        assert_eq!(to(s.as_ref(), &d, 7, Time::ZERO), Some(0), "all idle: first");
        // Load the chosen one a little (inactive connections do not trip lblc's overload).
        for _ in 0..50 {
            d[0].state.bind(crate::dest::ConnClass::Inactive);
        }
        assert_eq!(to(s.as_ref(), &d, 7, Time::from_secs(1)), Some(0), "sticks");
        // A new address goes by wlc.
        assert_eq!(to(s.as_ref(), &d, 8, Time::from_secs(1)), Some(1));
    }

    #[test]
    fn entry_is_rescheduled_when_lblc_overloaded() {
        let d = dests(&[2, 2]);
        let s = sched::build(SchedulerKind::Lblc, &d, SchedFlags::NONE, None);
        assert_eq!(to(s.as_ref(), &d, 7, Time::ZERO), Some(0));
        add_active(&d[0], 3); // 3 > 2, and #1 has 0 * 2 < 2
        assert_eq!(to(s.as_ref(), &d, 7, Time::ZERO), Some(1));
        // The table now maps 7 to #1, even after #0 recovers.
        for _ in 0..3 {
            d[0].state.unbind(crate::dest::ConnClass::Active);
        }
        add_active(&d[1], 1);
        assert_eq!(to(s.as_ref(), &d, 7, Time::ZERO), Some(1));
    }

    #[test]
    fn busy_destination_is_kept_when_no_one_is_under_half_weight() {
        let d = dests(&[2, 2]);
        let s = sched::build(SchedulerKind::Lblc, &d, SchedFlags::NONE, None);
        assert_eq!(to(s.as_ref(), &d, 7, Time::ZERO), Some(0));
        add_active(&d[0], 3);
        add_active(&d[1], 1); // 1 * 2 < 2 is false
        assert_eq!(to(s.as_ref(), &d, 7, Time::ZERO), Some(0));
    }

    #[test]
    fn weight_zero_entry_is_replaced_but_overload_flag_is_not_checked_on_hit() {
        let mut d = dests(&[1, 1]);
        let s = sched::build(SchedulerKind::Lblc, &d, SchedFlags::NONE, None);
        assert_eq!(to(s.as_ref(), &d, 7, Time::ZERO), Some(0));
        // The kernel's hit path ignores IP_VS_DEST_F_OVERLOAD.
        overload(&d[0]);
        assert_eq!(to(s.as_ref(), &d, 7, Time::ZERO), Some(0));
        // ... but a new address avoids it.
        assert_eq!(to(s.as_ref(), &d, 9, Time::ZERO), Some(1));
        d[0].config.weight = 0;
        assert_eq!(to(s.as_ref(), &d, 7, Time::ZERO), Some(1));
        d[0].config.weight = 1;
        assert_eq!(to(s.as_ref(), &d, 7, Time::ZERO), Some(1), "entry was replaced");
    }

    #[test]
    fn no_usable_destination_gives_none() {
        let d = dests(&[0, 0]);
        let s = sched::build(SchedulerKind::Lblc, &d, SchedFlags::NONE, None);
        assert_eq!(to(s.as_ref(), &d, 7, Time::ZERO), None);
        let s = sched::build(SchedulerKind::Lblc, &[], SchedFlags::NONE, None);
        assert_eq!(to(s.as_ref(), &[], 7, Time::ZERO), None);
    }

    #[test]
    fn entries_expire_after_a_day_of_disuse() {
        let d = dests(&[1, 1]);
        let s = Lblc::new(&d);
        assert_eq!(to(&s, &d, 7, Time::ZERO), Some(0));
        assert_eq!(to(&s, &d, 8, Time::ZERO), Some(0));
        assert_eq!(s.len(), 2);
        // Address 8 is used again at 12 h; 7 is not.
        assert_eq!(to(&s, &d, 8, Time::from_secs(12 * 3600)), Some(0));
        // Driving the clock through schedule() alone (no explicit expire): the sweep runs a
        // few chains per call.
        let t = Time::from_secs(24 * 3600 + 120);
        for _ in 0..200 {
            to(&s, &d, 9, t);
        }
        assert_eq!(s.len(), 2, "7 expired; 8 (used at 12 h) and 9 remain");
        d[0].state.bind(crate::dest::ConnClass::Active);
        d[0].state.bind(crate::dest::ConnClass::Active);
        // 7 is scheduled afresh by wlc: #1 is now less loaded.
        assert_eq!(to(&s, &d, 7, t), Some(1));
    }

    #[test]
    fn table_carries_over_to_next_snapshot_by_address_and_port() {
        let d1 = vec![dest(1, 100), dest(2, 100), dest(3, 100)];
        let s1 = sched::build(SchedulerKind::Lblc, &d1, SchedFlags::NONE, None);
        let mut want = HashMap::new();
        for a in 0..30u32 {
            // Spread addresses over destinations by loading the one just picked.
            let i = to(s1.as_ref(), &d1, a, Time::ZERO).unwrap();
            add_active(&d1[i], 1);
            want.insert(a, d1[i].config.addr);
        }
        // New snapshot: 10.0.1.2 removed, 10.0.1.9 added at the front (kernel list order).
        let d2 = vec![dest(9, 100), d1[0].clone(), d1[2].clone()];
        let s2 = sched::build(SchedulerKind::Lblc, &d2, SchedFlags::NONE, Some(s1.as_ref()));
        let l2 = s2.as_any().downcast_ref::<Lblc>().unwrap();
        assert_eq!(l2.len(), 20, "entries of the removed destination dropped");
        for (a, addr) in want {
            let i = to(s2.as_ref(), &d2, a, Time::ZERO).unwrap();
            if addr != d1[1].config.addr {
                assert_eq!(d2[i].config.addr, addr, "address {a} keeps its destination");
            }
        }
    }

    #[test]
    fn ipv6_addresses_are_keyed_exactly() {
        let d = dests(&[1, 1]);
        let s = Lblc::new(&d);
        // Same fold, different addresses: same chain, distinct entries.
        let a: IpAddr = "2001:db8::a00:1".parse().unwrap();
        let b: IpAddr = "0:0:2001:db8:a00:1::".parse().unwrap();
        assert_eq!(s.schedule(&d, &flow(v4(1), 1, a), Time::ZERO), Some(0));
        add_active(&d[0], 1);
        assert_eq!(s.schedule(&d, &flow(v4(1), 1, b), Time::ZERO), Some(1));
        assert_eq!(s.len(), 2);
        assert_eq!(s.schedule(&d, &flow(v4(1), 1, a), Time::ZERO), Some(0));
    }

    #[test]
    fn concurrent_workers_keep_one_entry_per_address() {
        let d = dests(&[1, 1, 1, 1]);
        let s = Lblc::new(&d);
        std::thread::scope(|sc| {
            for w in 0..4u32 {
                let (s, d) = (&s, &d);
                sc.spawn(move || {
                    for k in 0..5000u32 {
                        let a = (k * 7 + w) % 3000;
                        let now = Time::from_millis(k as u64);
                        assert!(to(s, d, a, now).is_some());
                    }
                });
            }
        });
        assert_eq!(s.len(), 3000);
        // Every address still maps to one destination.
        for a in 0..3000u32 {
            let first = to(&s, &d, a, Time::from_secs(10));
            assert_eq!(to(&s, &d, a, Time::from_secs(10)), first);
        }
    }

    #[test]
    fn publish_carries_the_table_into_the_new_snapshot() {
        use crate::dest::DestConfig;
        use crate::service::{Protocol, ServiceConfig, ServiceKey, ServiceTable};
        let table = ServiceTable::new();
        let mut cfg = ServiceConfig::new(ServiceKey::Addr {
            proto: Protocol::Tcp,
            addr: v4(0xc0a8_0064),
            port: 80,
        });
        cfg.scheduler = SchedulerKind::Lblc;
        cfg.dests = vec![
            DestConfig::new(v4(0x0a00_0102), 80),
            DestConfig::new(v4(0x0a00_0101), 80),
        ];
        let set = table.publish(std::slice::from_ref(&cfg));
        let svc = &set.services()[0];
        let f = flow(v4(1), 1, v4(7));
        let first = svc.schedule(&f, Time::ZERO).unwrap().config.addr;
        svc.schedule(&f, Time::ZERO)
            .unwrap()
            .state
            .bind(crate::dest::ConnClass::Inactive);
        // `ipvsadm -a` of a third server: it goes to the front of the list.
        cfg.dests.insert(0, DestConfig::new(v4(0x0a00_0103), 80));
        let set = table.publish(std::slice::from_ref(&cfg));
        let svc = &set.services()[0];
        // Without the carried entry, the idle new server (first in the list) would win.
        assert_eq!(svc.schedule(&f, Time::ZERO).unwrap().config.addr, first);
    }
}
