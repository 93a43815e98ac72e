//! sh — source hashing (the kernel's `ip_vs_sh`): the client address (and with `sh-port` its
//! port) picks one of 256 buckets; buckets are dealt to destinations in proportion to weight.
//!
//! Kernel facts kept here (ip_vs_sh.c): 256 buckets (`CONFIG_IP_VS_SH_TAB_BITS` = 8);
//! `ip_vs_sh_reassign` walks the destination list in order giving each destination `weight`
//! consecutive buckets (at least one, even at weight 0) and wraps around the list until all 256
//! are dealt, so a total weight above 256 starves the tail of the list; the bucket of a flow is
//! `(offset + hash_32(port + addr_fold, 8)) & 255` with offset 0; an unavailable destination
//! (weight 0 or OVERLOAD) means no destination, unless `sh-fallback` (flag-1) is set: then
//! the kernel probes offsets `ihash, ihash+1, ...` (mod 256) added to the hash, i.e. buckets
//! `2*ihash, 2*ihash+1, ...`, and takes the first available destination.

use std::any::Any;
use std::net::IpAddr;

use super::hash::{addr_fold, hash_32};
use super::{FlowKey, Scheduler, SchedulerKind};
use crate::dest::Destination;
use crate::service::SchedFlags;
use crate::time::Time;

/// Bits of the sh bucket table (the kernel's `CONFIG_IP_VS_SH_TAB_BITS` default).
pub const SH_TAB_BITS: u32 = 8;
const SH_TAB_SIZE: usize = 1 << SH_TAB_BITS;
const SH_TAB_MASK: u32 = SH_TAB_SIZE as u32 - 1;
const EMPTY: u32 = u32::MAX;

/// Source hashing over a weighted table of 2^8 buckets (`SH_TAB_BITS`). Picks are O(1); the
/// `sh-fallback` walk probes up to 256 buckets.
#[derive(Debug)]
pub struct SourceHashing {
    /// Destination index per bucket, [`EMPTY`] when the service has no destination.
    buckets: Box<[u32; SH_TAB_SIZE]>,
    fallback: bool,
    port: bool,
}

impl SourceHashing {
    /// The scheduler for `dests` with `flags` (`sh-fallback` = flag-1, `sh-port` = flag-2).
    pub fn new(dests: &[Destination], flags: SchedFlags) -> SourceHashing {
        let mut buckets = Box::new([EMPTY; SH_TAB_SIZE]);
        if !dests.is_empty() {
            // ip_vs_sh_reassign: stay on a destination until it has `weight` buckets.
            let mut p = 0usize;
            let mut d_count = 0u32;
            for b in buckets.iter_mut() {
                *b = p as u32;
                d_count += 1;
                if d_count >= dests[p].config.weight {
                    p = (p + 1) % dests.len();
                    d_count = 0;
                }
            }
        }
        SourceHashing {
            buckets,
            fallback: flags.fallback(),
            port: flags.port(),
        }
    }

    /// The kernel's `ip_vs_sh_hashkey`.
    #[inline]
    fn hashkey(addr: &IpAddr, port: u16, offset: u32) -> usize {
        (offset.wrapping_add(hash_32((port as u32).wrapping_add(addr_fold(addr)), SH_TAB_BITS)) & SH_TAB_MASK)
            as usize
    }
}

pub(super) fn build(
    dests: &[Destination],
    flags: SchedFlags,
    _prev: Option<&dyn Scheduler>,
) -> Box<dyn Scheduler> {
    Box::new(SourceHashing::new(dests, flags))
}

impl Scheduler for SourceHashing {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Sh
    }

    fn schedule(&self, dests: &[Destination], flow: &FlowKey, _now: Time) -> Option<usize> {
        // TCP, UDP and SCTP all carry ports, so sh-port always has one to hash.
        let port = if self.port { flow.src_port } else { 0 };
        let ihash = Self::hashkey(&flow.src, port, 0);
        let first = self.buckets[ihash];
        if first == EMPTY {
            return None;
        }
        let first = first as usize;
        if dests.get(first)?.is_eligible() {
            return Some(first);
        }
        if !self.fallback {
            return None;
        }
        // ip_vs_sh_get_fallback: loop around the table from the original hash value.
        for offset in 0..SH_TAB_SIZE as u32 {
            let roffset = (offset + ihash as u32) % SH_TAB_SIZE as u32;
            let i = self.buckets[Self::hashkey(&flow.src, port, roffset)] as usize;
            if dests.get(i)?.is_eligible() {
                return Some(i);
            }
        }
        None
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

    fn table(d: &[Destination]) -> [u32; SH_TAB_SIZE] {
        *SourceHashing::new(d, SchedFlags::NONE).buckets
    }

    #[test]
    fn buckets_are_dealt_by_weight_in_list_order() {
        let t = table(&dests(&[3, 1, 2]));
        // 3 buckets to #0, 1 to #1, 2 to #2, then around again.
        assert_eq!(&t[..8], &[0, 0, 0, 1, 2, 2, 0, 0]);
        let count = |k| t.iter().filter(|&&b| b == k).count();
        // 256 = 42 full rounds of 6 + 4 more (0,0,0,1).
        assert_eq!((count(0), count(1), count(2)), (42 * 3 + 3, 42 + 1, 42 * 2));
    }

    #[test]
    fn weight_zero_still_owns_one_bucket_per_round() {
        // `++d_count >= weight` is true at once for weight 0.
        let t = table(&dests(&[0, 1]));
        assert_eq!(&t[..4], &[0, 1, 0, 1]);
    }

    #[test]
    fn heavy_weights_starve_the_tail_of_the_list() {
        let t = table(&dests(&[300, 1]));
        assert!(
            t.iter().all(|&b| b == 0),
            "first destination takes all 256 buckets"
        );
    }

    #[test]
    fn flow_bucket_follows_kernel_hash() {
        let d = dests(&[1, 1, 1, 1, 1, 1, 1]);
        let s = sched::build(SchedulerKind::Sh, &d, SchedFlags::NONE, None);
        // Source 10.0.0.1: bucket hash_32(0x0a000001, 8) = 0x27 = 39; 39 mod 7 = 4.
        let f = flow(v4(0x0a00_0001), 5555, v4(0xc0a8_0101));
        assert_eq!(s.schedule(&d, &f, Time::ZERO), Some(4));
        // sh-port adds the source port before hashing.
        let s = sched::build(SchedulerKind::Sh, &d, SchedFlags::FLAG2, None);
        let want = hash_32(0x0a00_0001 + 5555, 8) as usize % 7;
        assert_eq!(s.schedule(&d, &f, Time::ZERO), Some(want));
    }

    #[test]
    fn share_follows_weight() {
        let d = dests(&[1, 3]);
        let s = sched::build(SchedulerKind::Sh, &d, SchedFlags::NONE, None);
        let mut count = [0usize; 2];
        for k in 0..4096u32 {
            count[s.schedule(&d, &flow(v4(k << 20), 1, v4(1)), Time::ZERO).unwrap()] += 1;
        }
        // Every bucket is hit 16 times; destination #1 owns 3 of every 4 buckets.
        assert_eq!(count, [1024, 3072]);
    }

    #[test]
    fn sh_port_spreads_one_client_over_servers() {
        let d = dests(&[1, 1, 1, 1]);
        let plain = sched::build(SchedulerKind::Sh, &d, SchedFlags::NONE, None);
        let port = sched::build(SchedulerKind::Sh, &d, SchedFlags::FLAG2, None);
        let mut seen_plain = std::collections::HashSet::new();
        let mut seen_port = std::collections::HashSet::new();
        for sport in 1000..1100 {
            let f = flow(v4(0x0a00_0001), sport, v4(1));
            seen_plain.insert(plain.schedule(&d, &f, Time::ZERO));
            seen_port.insert(port.schedule(&d, &f, Time::ZERO));
        }
        assert_eq!(seen_plain.len(), 1);
        assert_eq!(seen_port.len(), 4);
    }

    #[test]
    fn unavailable_without_fallback_gives_none() {
        let d = dests(&[1, 1, 1, 1, 1, 1, 1]);
        let s = sched::build(SchedulerKind::Sh, &d, SchedFlags::NONE, None);
        let f = flow(v4(0x0a00_0001), 1, v4(1));
        overload(&d[4]);
        assert_eq!(s.schedule(&d, &f, Time::ZERO), None);
    }

    #[test]
    fn fallback_walks_buckets_from_twice_the_hash() {
        // Source 10.0.0.1 hashes to bucket 39; the fallback probes buckets 78, 79, 80, ...
        // (offset ihash + k added to the hash). With 7 weight-1 destinations bucket b holds
        // b mod 7: 78 -> 1, 79 -> 2, 80 -> 3.
        let d = dests(&[1, 1, 1, 1, 1, 1, 1]);
        let s = sched::build(SchedulerKind::Sh, &d, SchedFlags::FLAG1, None);
        let f = flow(v4(0x0a00_0001), 1, v4(1));
        overload(&d[4]);
        assert_eq!(s.schedule(&d, &f, Time::ZERO), Some(1));
        overload(&d[1]);
        assert_eq!(s.schedule(&d, &f, Time::ZERO), Some(2));
        overload(&d[2]);
        assert_eq!(s.schedule(&d, &f, Time::ZERO), Some(3));
        for x in &d {
            if !x.state.is_overloaded() {
                overload(x);
            }
        }
        assert_eq!(s.schedule(&d, &f, Time::ZERO), None, "nothing available at all");
    }

    #[test]
    fn fallback_keeps_flows_of_healthy_servers_in_place() {
        let d = dests(&[1, 1, 1, 1]);
        let s = sched::build(SchedulerKind::Sh, &d, SchedFlags::FLAG1, None);
        let before: Vec<_> = (0..1000u32)
            .map(|k| s.schedule(&d, &flow(v4(k * 2_654_435), 1, v4(1)), Time::ZERO))
            .collect();
        overload(&d[2]);
        for (k, b) in (0..1000u32).zip(before) {
            let now = s.schedule(&d, &flow(v4(k * 2_654_435), 1, v4(1)), Time::ZERO);
            if b != Some(2) {
                assert_eq!(now, b);
            } else {
                assert!(matches!(now, Some(i) if i != 2));
            }
        }
    }

    #[test]
    fn empty_service_schedules_nothing() {
        let s = sched::build(SchedulerKind::Sh, &[], SchedFlags::FLAG1, None);
        assert_eq!(s.schedule(&[], &flow(v4(1), 1, v4(1)), Time::ZERO), None);
    }
}
