//! rr — round robin: each eligible destination in list order, in turn.

use std::any::Any;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{FlowKey, Scheduler, SchedulerKind};
use crate::dest::Destination;
use crate::time::Time;

/// Round robin over eligible destinations (weight > 0, not overloaded), like the kernel's
/// `ip_vs_rr`: the search starts after the previously chosen destination.
#[derive(Debug)]
pub struct RoundRobin {
    /// The last destination chosen: its id (`DestState::id`) << 32 | its index; `NONE`
    /// before the first pick.
    last: AtomicU64,
}

const NONE: u64 = u64::MAX;

impl RoundRobin {
    /// A round robin that continues after `prev`'s last pick when there is one. Like the
    /// kernel's pointer into the destination list, the position follows the destination
    /// itself, not its index: adding a destination at the front does not shift it, and when
    /// the last-picked destination is removed the next pick is the one that followed it.
    pub fn new(dests: &[Destination], prev: Option<&dyn Scheduler>) -> RoundRobin {
        let last = prev
            .and_then(|p| p.as_any().downcast_ref::<RoundRobin>())
            .map(|p| p.last.load(Ordering::Relaxed))
            .filter(|&l| l != NONE)
            .and_then(|l| {
                let (id, idx) = ((l >> 32) as u32, (l & 0xffff_ffff) as usize);
                match dests.iter().position(|d| d.state.id() == id) {
                    Some(pos) => Some(((id as u64) << 32) | pos as u64),
                    // Removed: continue with whatever now sits where it was.
                    None if idx > 0 && idx <= dests.len() => {
                        let before = idx - 1;
                        Some(((dests[before].state.id() as u64) << 32) | before as u64)
                    }
                    None => None,
                }
            })
            .unwrap_or(NONE);
        RoundRobin {
            last: AtomicU64::new(last),
        }
    }
}

impl Scheduler for RoundRobin {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Rr
    }

    fn schedule(&self, dests: &[Destination], _flow: &FlowKey, _now: Time) -> Option<usize> {
        let n = dests.len();
        if n == 0 {
            return None;
        }
        let last = self.last.load(Ordering::Relaxed);
        let idx = (last & 0xffff_ffff) as usize;
        let start = if last == NONE || idx >= n { 0 } else { idx + 1 };
        for step in 0..n {
            let i = (start + step) % n;
            if dests[i].is_eligible() {
                self.last
                    .store(((dests[i].state.id() as u64) << 32) | i as u64, Ordering::Relaxed);
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
    use super::super::load_index::tests::{dests, flow};
    use super::*;
    use crate::dest::ConnClass;

    fn run(s: &RoundRobin, ds: &[Destination], k: usize) -> Vec<Option<usize>> {
        (0..k)
            .map(|i| s.schedule(ds, &flow(i as u32), Time::ZERO))
            .collect()
    }

    #[test]
    fn list_order_in_turn_ignoring_weights_and_load() {
        let ds = dests(&[5, 1, 3]);
        ds[0].state.bind(ConnClass::Active);
        let s = RoundRobin::new(&ds, None);
        assert_eq!(run(&s, &ds, 7), [0, 1, 2, 0, 1, 2, 0].map(Some).to_vec());
    }

    #[test]
    fn quiesced_and_overloaded_are_skipped_and_none_when_all_are() {
        let ds = dests(&[1, 0, 1, 1]);
        ds[2].state.set_thresholds(1, 0);
        ds[2].state.bind(ConnClass::Inactive);
        let s = RoundRobin::new(&ds, None);
        assert_eq!(run(&s, &ds, 4), [0, 3, 0, 3].map(Some).to_vec());
        ds[0].state.set_thresholds(1, 0);
        ds[0].state.bind(ConnClass::Active);
        ds[3].state.set_thresholds(1, 0);
        ds[3].state.bind(ConnClass::Active);
        assert_eq!(run(&s, &ds, 2), vec![None, None]);
        ds[2].state.unbind(ConnClass::Inactive);
        assert_eq!(run(&s, &ds, 2), vec![Some(2), Some(2)]);
    }

    #[test]
    fn rebuild_continues_after_the_last_pick() {
        let ds = dests(&[1, 1, 1]);
        let s = RoundRobin::new(&ds, None);
        assert_eq!(run(&s, &ds, 2), vec![Some(0), Some(1)]);
        let s2 = RoundRobin::new(&ds, Some(&s));
        assert_eq!(run(&s2, &ds, 1), vec![Some(2)]);
        // A shorter list drops an out-of-range position and starts at the head.
        let s3 = RoundRobin::new(&ds[..2], Some(&s2));
        assert_eq!(run(&s3, &ds[..2], 2), vec![Some(0), Some(1)]);
    }

    #[test]
    fn position_follows_the_destination_like_the_kernels_list_pointer() {
        // [A, B, C]; pick A. `ipvsadm -a` puts D at the front: [D, A, B, C]. The kernel's
        // pointer still sits on A, so B comes next (an index would have given A again).
        let all = dests(&[1, 1, 1, 1]);
        let (d, abc) = (all[0].clone(), all[1..].to_vec());
        let s = RoundRobin::new(&abc, None);
        assert_eq!(run(&s, &abc, 1), vec![Some(0)]);
        let with_d: Vec<Destination> = std::iter::once(d).chain(abc.iter().cloned()).collect();
        let s2 = RoundRobin::new(&with_d, Some(&s));
        assert_eq!(run(&s2, &with_d, 4), vec![Some(2), Some(3), Some(0), Some(1)]);
        // Last pick is A (index 1). Deleting A: the kernel moves the pointer back to D, so
        // B (now index 1) is next.
        let without_a: Vec<Destination> = vec![with_d[0].clone(), with_d[2].clone(), with_d[3].clone()];
        let s3 = RoundRobin::new(&without_a, Some(&s2));
        assert_eq!(run(&s3, &without_a, 1), vec![Some(1)]);
    }

    #[test]
    fn empty_list_gives_none() {
        let s = RoundRobin::new(&[], None);
        assert_eq!(s.schedule(&[], &flow(0), Time::ZERO), None);
    }
}
