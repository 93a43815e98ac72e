//! dh — destination hashing (the kernel's `ip_vs_dh`): the packet's destination address picks
//! one of 256 buckets, each bound to a destination; an unavailable destination means no
//! destination at all (no fallback, so caches stay partitioned).
//!
//! Kernel facts kept here: the table has `1 << IP_VS_DH_TAB_BITS` = 256 buckets; bucket `i`
//! holds the `(i mod n)`-th destination in list order, whatever the weights
//! (`ip_vs_dh_reassign`); the bucket of an address is `hash_32(addr_fold, 8)`; a destination
//! with weight 0 or OVERLOAD yields no destination.

use std::any::Any;

use super::hash::{addr_fold, hash_32};
use super::{FlowKey, Scheduler, SchedulerKind};
use crate::dest::Destination;
use crate::service::SchedFlags;
use crate::time::Time;

/// Bits of the dh bucket table (the kernel's `CONFIG_IP_VS_DH_TAB_BITS` default).
pub const DH_TAB_BITS: u32 = 8;

/// Destination hashing over a table of 2^8 buckets (`DH_TAB_BITS`); O(1) per pick.
#[derive(Debug)]
pub struct DestHashing {
    /// Number of destinations the table was filled with.
    n: usize,
}

impl DestHashing {
    /// The scheduler for `dests` (list order matters: it fills the buckets).
    pub fn new(dests: &[Destination]) -> DestHashing {
        DestHashing { n: dests.len() }
    }

    /// The bucket of destination address `addr`.
    fn bucket(addr: &std::net::IpAddr) -> usize {
        hash_32(addr_fold(addr), DH_TAB_BITS) as usize
    }
}

pub(super) fn build(
    dests: &[Destination],
    _flags: SchedFlags,
    _prev: Option<&dyn Scheduler>,
) -> Box<dyn Scheduler> {
    Box::new(DestHashing::new(dests))
}

impl Scheduler for DestHashing {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Dh
    }

    fn schedule(&self, dests: &[Destination], flow: &FlowKey, _now: Time) -> Option<usize> {
        if self.n == 0 {
            return None;
        }
        // Bucket i holds the (i mod n)-th destination: the kernel walks the list once per
        // bucket, wrapping at its end.
        let i = Self::bucket(&flow.dst) % self.n;
        let d = dests.get(i)?;
        d.is_eligible().then_some(i)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{dests, flow, overload, v4};
    use super::*;
    use crate::sched::{self, SchedulerKind};

    fn pick(s: &dyn Scheduler, d: &[Destination], dst: u32) -> Option<usize> {
        s.schedule(d, &flow(v4(0xc0a8_0001), 1234, v4(dst)), Time::ZERO)
    }

    #[test]
    fn bucket_of_address_follows_kernel_hash_32() {
        // 10.0.0.1 hashes to bucket 0x27 (0x0a000001 * 0x61c88647 = 0x27c88647); with three
        // destinations bucket 39 holds destination 39 mod 3 = 0.
        let d = dests(&[1, 1, 1]);
        let s = sched::build(SchedulerKind::Dh, &d, SchedFlags::NONE, None);
        assert_eq!(pick(s.as_ref(), &d, 0x0a00_0001), Some(0));
        // With five, 39 mod 5 = 4.
        let d = dests(&[1, 1, 1, 1, 1]);
        let s = sched::build(SchedulerKind::Dh, &d, SchedFlags::NONE, None);
        assert_eq!(pick(s.as_ref(), &d, 0x0a00_0001), Some(4));
    }

    #[test]
    fn same_destination_address_always_same_server_whatever_the_source() {
        let d = dests(&[1, 1, 1, 1]);
        let s = sched::build(SchedulerKind::Dh, &d, SchedFlags::NONE, None);
        for dst in 0..200u32 {
            let dst = v4(0x0a00_0000 + dst * 7919);
            let a = s.schedule(&d, &flow(v4(1), 1, dst), Time::ZERO);
            let b = s.schedule(&d, &flow(v4(99), 2, dst), Time::ZERO);
            assert_eq!(a, b);
            assert!(a.is_some());
        }
    }

    #[test]
    fn weights_do_not_change_bucket_assignment() {
        // dh ignores weights (other than 0): every destination owns 256/n buckets.
        let d = dests(&[1, 100]);
        let s = sched::build(SchedulerKind::Dh, &d, SchedFlags::NONE, None);
        let mut count = [0usize; 2];
        for dst in 0..4096u32 {
            count[pick(s.as_ref(), &d, dst << 20).unwrap()] += 1;
        }
        // hash_32's top byte of k << 20 covers every bucket evenly (odd multiplier).
        assert_eq!(count, [2048, 2048]);
    }

    #[test]
    fn unavailable_destination_gives_no_destination() {
        let d = dests(&[1, 1, 1]);
        let s = sched::build(SchedulerKind::Dh, &d, SchedFlags::NONE, None);
        // 10.0.0.1 maps to destination 0.
        overload(&d[0]);
        assert_eq!(pick(s.as_ref(), &d, 0x0a00_0001), None, "OVERLOAD: no fallback");

        let mut d = dests(&[0, 1, 1]);
        let s = sched::build(SchedulerKind::Dh, &d, SchedFlags::NONE, None);
        assert_eq!(pick(s.as_ref(), &d, 0x0a00_0001), None, "weight 0: no fallback");
        d[0].config.weight = 1;
        assert_eq!(pick(s.as_ref(), &d, 0x0a00_0001), Some(0));
    }

    #[test]
    fn empty_service_schedules_nothing() {
        let s = sched::build(SchedulerKind::Dh, &[], SchedFlags::NONE, None);
        assert_eq!(pick(s.as_ref(), &[], 1), None);
    }

    #[test]
    fn ipv6_destination_is_folded() {
        let d = dests(&[1, 1, 1]);
        let s = sched::build(SchedulerKind::Dh, &d, SchedFlags::NONE, None);
        // 2001:db8::a00:1 folds to 0x20010db8 ^ 0x0a000001; two addresses with the same fold
        // land on the same server.
        let a: std::net::IpAddr = "2001:db8::a00:1".parse().unwrap();
        let b: std::net::IpAddr = "0:0:2001:db8:a00:1::".parse().unwrap();
        assert_eq!(addr_fold(&a), addr_fold(&b));
        let fa = s.schedule(&d, &flow(v4(1), 1, a), Time::ZERO);
        let fb = s.schedule(&d, &flow(v4(1), 1, b), Time::ZERO);
        assert_eq!(fa, fb);
        let want = hash_32(0x2001_0db8 ^ 0x0a00_0001, 8) as usize % 3;
        assert_eq!(fa, Some(want));
    }
}
