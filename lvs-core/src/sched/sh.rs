//! sh — placeholder until the scheduler lands; behaves as round robin.

use super::{Scheduler, rr::RoundRobin};
use crate::dest::Destination;
use crate::service::SchedFlags;

pub(super) fn build(
    dests: &[Destination],
    _flags: SchedFlags,
    prev: Option<&dyn Scheduler>,
) -> Box<dyn Scheduler> {
    Box::new(RoundRobin::new(dests, prev))
}
