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
