//! rr — round robin: each eligible destination in list order, in turn.

use std::any::Any;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{FlowKey, Scheduler, SchedulerKind};
use crate::dest::Destination;
use crate::time::Time;

/// Round robin over eligible destinations (weight > 0, not overloaded), like the kernel's
/// `ip_vs_rr`: the search starts after the previously chosen destination.
#[derive(Debug)]
pub struct RoundRobin {
    /// Index of the last destination chosen, `usize::MAX` before the first pick.
    last: AtomicUsize,
}

impl RoundRobin {
    /// A round robin that continues after `prev`'s last pick when there is one.
    pub fn new(dests: &[Destination], prev: Option<&dyn Scheduler>) -> RoundRobin {
        let last = prev
            .and_then(|p| p.as_any().downcast_ref::<RoundRobin>())
            .map(|p| p.last.load(Ordering::Relaxed))
            .filter(|&i| i < dests.len())
            .unwrap_or(usize::MAX);
        RoundRobin {
            last: AtomicUsize::new(last),
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
        let start = if last >= n { 0 } else { last + 1 };
        for step in 0..n {
            let i = (start + step) % n;
            if dests[i].is_eligible() {
                self.last.store(i, Ordering::Relaxed);
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
    fn empty_list_gives_none() {
        let s = RoundRobin::new(&[], None);
        assert_eq!(s.schedule(&[], &flow(0), Time::ZERO), None);
    }
}
