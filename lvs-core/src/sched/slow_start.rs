//! slow_start — the weight ramp for newly added or recovered destinations (beyond the
//! kernel, like HAProxy's `slowstart`): the effective weight grows linearly from almost
//! nothing to the configured weight over `duration`, so a cold server is not handed a full
//! share of new connections at once (which least-connection schedulers would otherwise do,
//! since a fresh server has the fewest connections).
//!
//! The ramp lives in [`DestState`] (`ramp`, `ramp_start`); every scheduler compares
//! [`Destination::weight`], which scales by it, and ramp changes notify the load indexes.
//! The control plane calls [`SlowStart::begin`] when it adds or revives a destination and
//! [`SlowStart::update`] from its periodic timer (e.g. every 100 ms–1 s).

use std::time::Duration;

use crate::dest::{DestState, Destination, RAMP_FULL};
use crate::time::Time;

/// Slow-start setting of a virtual service: how long a ramp from 0 to full weight lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SlowStart {
    /// Ramp length; zero disables slow start.
    pub duration: Duration,
}

impl SlowStart {
    /// A ramp of `duration`.
    pub fn new(duration: Duration) -> SlowStart {
        SlowStart { duration }
    }

    /// The ramp value (0..=[`RAMP_FULL`]) `now` for a ramp that began at `start`.
    pub fn ramp_at(&self, start: Time, now: Time) -> u32 {
        let total = self.duration.as_millis() as u64;
        let elapsed = now.saturating_since(start).as_millis() as u64;
        if total == 0 || elapsed >= total {
            RAMP_FULL
        } else {
            (elapsed * RAMP_FULL as u64 / total) as u32
        }
    }

    /// Starts ramping `state` at `now` (a destination just added or back from a failed
    /// health check). Without a duration it does nothing.
    pub fn begin(&self, state: &DestState, now: Time) {
        if self.duration.is_zero() {
            return;
        }
        state.set_ramp_start(Some(now));
        state.set_ramp(self.ramp_at(now, now));
    }

    /// Advances the ramps of `dests` to `now`, ending those that reached full weight.
    /// Returns how many destinations are still ramping. O(n), for the control plane.
    pub fn update(&self, dests: &[Destination], now: Time) -> usize {
        let mut ramping = 0;
        for d in dests {
            let Some(start) = d.state.ramp_start() else {
                continue;
            };
            let ramp = self.ramp_at(start, now);
            if ramp >= RAMP_FULL {
                d.state.set_ramp_start(None);
            } else {
                ramping += 1;
            }
            if d.state.ramp() != ramp {
                d.state.set_ramp(ramp);
            }
        }
        ramping
    }
}

#[cfg(test)]
mod tests {
    use super::super::load_index::tests::{dests, flow};
    use super::*;
    use crate::dest::ConnClass;
    use crate::sched::{self, SchedulerKind};
    use crate::service::SchedFlags;

    #[test]
    fn ramp_is_linear_and_ends_at_full() {
        let ss = SlowStart::new(Duration::from_secs(10));
        let ds = dests(&[100]);
        let t0 = Time::from_secs(50);
        ss.begin(&ds[0].state, t0);
        assert_eq!(ds[0].weight(), 1, "starts at the minimum positive weight");
        assert_eq!(ss.update(&ds, t0 + Duration::from_secs(5)), 1);
        assert_eq!(ds[0].weight(), 50);
        assert_eq!(ss.update(&ds, t0 + Duration::from_millis(7500)), 1);
        assert_eq!(ds[0].weight(), 75);
        assert_eq!(ss.update(&ds, t0 + Duration::from_secs(10)), 0);
        assert_eq!(ds[0].weight(), 100);
        assert_eq!(ds[0].state.ramp_start(), None, "ramp finished");
        assert_eq!(ss.update(&ds, t0 + Duration::from_secs(11)), 0);
    }

    #[test]
    fn zero_duration_disables() {
        let ss = SlowStart::default();
        let ds = dests(&[10]);
        ss.begin(&ds[0].state, Time::from_secs(1));
        assert_eq!(ds[0].weight(), 10);
        assert_eq!(ds[0].state.ramp_start(), None);
    }

    /// A new server joins a wlc service whose two servers each hold 100 long connections.
    /// Without slow start it takes every new connection until it catches up; with a 10 s
    /// ramp it takes a smaller share while it warms up, and the full share afterwards.
    #[test]
    fn ramping_server_gets_a_smaller_share() {
        fn simulate(ss: SlowStart) -> (u32, u32) {
            let ds = dests(&[10, 10, 10]);
            for d in &ds[..2] {
                for _ in 0..100 {
                    d.state.bind(ConnClass::Active);
                }
            }
            let s = sched::build(SchedulerKind::Wlc, &ds, SchedFlags::NONE, None);
            let t0 = Time::from_secs(100);
            ss.begin(&ds[2].state, t0);
            let mut first_second = 0;
            let mut total = 0;
            // 40 new connections per second for 20 s; each lives 2 s.
            let mut live: Vec<(Time, usize)> = Vec::new();
            for ms in (0..20_000u64).step_by(25) {
                let now = t0 + Duration::from_millis(ms);
                ss.update(&ds, now);
                live.retain(|&(end, i)| {
                    let keep = end > now;
                    if !keep {
                        ds[i].state.unbind(ConnClass::Active);
                    }
                    keep
                });
                let i = s.schedule(&ds, &flow(ms as u32), now).unwrap();
                ds[i].state.bind(ConnClass::Active);
                live.push((now + Duration::from_secs(2), i));
                if i == 2 {
                    total += 1;
                    if ms < 1000 {
                        first_second += 1;
                    }
                }
            }
            (first_second, total)
        }
        let (cold_first, cold_total) = simulate(SlowStart::default());
        let (ramp_first, ramp_total) = simulate(SlowStart::new(Duration::from_secs(10)));
        assert_eq!(
            cold_first, 40,
            "without slow start the new server takes everything"
        );
        // At effective weight 1 against 10 it stops at about a tenth of the others' 100
        // active connections (each 256 of overhead).
        assert!(
            ramp_first <= 15,
            "ramping server took {ramp_first} of 40 in its first second"
        );
        assert!(ramp_total < cold_total, "{ramp_total} vs {cold_total}");
    }
}
