//! The fourteen IPVS schedulers behind one [`Scheduler`] trait, selectable by their ipvsadm
//! names. Each scheduler is built for one published destination list and keeps the kernel's
//! semantics (eligibility, tie-breaking, flags); see each module for its details.

use std::any::Any;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use crate::dest::Destination;
use crate::service::{Protocol, SchedFlags};
use crate::time::Time;

mod dh;
mod fo;
mod lblc;
mod lblcr;
mod lc;
mod load_index;
mod mh;
mod nq;
mod ovf;
mod rr;
mod sed;
mod sh;
mod slow_start;
mod twos;
mod wlc;
mod wrr;

// Helpers of the hashing and locality schedulers (dh, sh, mh, lblc, lblcr).
#[cfg(test)]
mod fixtures;
mod hash;
mod locality;

pub use dh::DestHashing;
pub use fo::WeightedFailover;
pub use lblc::Lblc;
pub use lblcr::Lblcr;
pub use lc::LeastConnection;
pub use mh::MaglevHashing;
pub use nq::NeverQueue;
pub use ovf::WeightedOverflow;
pub use rr::RoundRobin;
pub use sed::ShortestExpectedDelay;
pub use sh::SourceHashing;
pub use slow_start::SlowStart;
pub use twos::TwoChoices;
pub use wlc::WeightedLeastConnection;
pub use wrr::WeightedRoundRobin;

/// The addresses of the packet that opens a new connection, as schedulers see them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Transport protocol.
    pub proto: Protocol,
    /// Client address.
    pub src: IpAddr,
    /// Client port.
    pub src_port: u16,
    /// Destination address of the packet (the VIP; dh/lblc/lblcr hash it).
    pub dst: IpAddr,
    /// Destination port of the packet.
    pub dst_port: u16,
}

/// The ipvsadm name of every scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SchedulerKind {
    /// Round robin.
    Rr,
    /// Weighted round robin.
    Wrr,
    /// Least connection.
    Lc,
    /// Weighted least connection (ipvsadm's default).
    #[default]
    Wlc,
    /// Locality-based least connection.
    Lblc,
    /// Locality-based least connection with replication.
    Lblcr,
    /// Destination hashing.
    Dh,
    /// Source hashing.
    Sh,
    /// Shortest expected delay.
    Sed,
    /// Never queue.
    Nq,
    /// Weighted failover.
    Fo,
    /// Weighted overflow.
    Ovf,
    /// Maglev hashing.
    Mh,
    /// Weighted random twos choice.
    Twos,
}

impl SchedulerKind {
    /// Every scheduler, in the order ipvsadm's man page lists them.
    pub const ALL: [SchedulerKind; 14] = [
        SchedulerKind::Rr,
        SchedulerKind::Wrr,
        SchedulerKind::Lc,
        SchedulerKind::Wlc,
        SchedulerKind::Lblc,
        SchedulerKind::Lblcr,
        SchedulerKind::Dh,
        SchedulerKind::Sh,
        SchedulerKind::Sed,
        SchedulerKind::Nq,
        SchedulerKind::Fo,
        SchedulerKind::Ovf,
        SchedulerKind::Mh,
        SchedulerKind::Twos,
    ];

    /// The name ipvsadm uses (`-s rr`) and prints.
    pub fn name(self) -> &'static str {
        match self {
            SchedulerKind::Rr => "rr",
            SchedulerKind::Wrr => "wrr",
            SchedulerKind::Lc => "lc",
            SchedulerKind::Wlc => "wlc",
            SchedulerKind::Lblc => "lblc",
            SchedulerKind::Lblcr => "lblcr",
            SchedulerKind::Dh => "dh",
            SchedulerKind::Sh => "sh",
            SchedulerKind::Sed => "sed",
            SchedulerKind::Nq => "nq",
            SchedulerKind::Fo => "fo",
            SchedulerKind::Ovf => "ovf",
            SchedulerKind::Mh => "mh",
            SchedulerKind::Twos => "twos",
        }
    }
}

impl fmt::Display for SchedulerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The scheduler name is not one of the fourteen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scheduler {0:?}")]
pub struct UnknownScheduler(pub String);

impl FromStr for SchedulerKind {
    type Err = UnknownScheduler;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SchedulerKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| UnknownScheduler(s.to_string()))
    }
}

/// A scheduling algorithm bound to one service's destination list.
///
/// `schedule` is called concurrently from every packet worker; implementations keep any
/// mutable state in atomics (or, for lblc/lblcr, a lock held only on the miss path).
pub trait Scheduler: Send + Sync + fmt::Debug {
    /// Which algorithm this is.
    fn kind(&self) -> SchedulerKind;

    /// Picks the destination for a new connection of `flow`: an index into `dests` (the same
    /// list the scheduler was built for), or `None` when no destination is eligible.
    fn schedule(&self, dests: &[Destination], flow: &FlowKey, now: Time) -> Option<usize>;

    /// The scheduler as `Any`, so a successor of the same kind can take over its state.
    fn as_any(&self) -> &dyn Any;
}

/// Builds the scheduler `kind` for `dests`. `prev`, the same service's previous scheduler of
/// the same kind, lets stateful schedulers (rr position, lblc tables) carry state over.
pub fn build(
    kind: SchedulerKind,
    dests: &[Destination],
    flags: SchedFlags,
    prev: Option<&dyn Scheduler>,
) -> Box<dyn Scheduler> {
    // The previous scheduler's load index stops listening; indexed schedulers register
    // their own below.
    for d in dests {
        d.state.set_listener(None);
    }
    match kind {
        SchedulerKind::Rr => Box::new(rr::RoundRobin::new(dests, prev)),
        SchedulerKind::Wrr => wrr::build(dests, flags, prev),
        SchedulerKind::Lc => lc::build(dests, flags, prev),
        SchedulerKind::Wlc => wlc::build(dests, flags, prev),
        SchedulerKind::Lblc => lblc::build(dests, flags, prev),
        SchedulerKind::Lblcr => lblcr::build(dests, flags, prev),
        SchedulerKind::Dh => dh::build(dests, flags, prev),
        SchedulerKind::Sh => sh::build(dests, flags, prev),
        SchedulerKind::Sed => sed::build(dests, flags, prev),
        SchedulerKind::Nq => nq::build(dests, flags, prev),
        SchedulerKind::Fo => fo::build(dests, flags, prev),
        SchedulerKind::Ovf => ovf::build(dests, flags, prev),
        SchedulerKind::Mh => mh::build(dests, flags, prev),
        SchedulerKind::Twos => twos::build(dests, flags, prev),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for k in SchedulerKind::ALL {
            assert_eq!(k.name().parse::<SchedulerKind>().unwrap(), k);
        }
        assert!("wlcx".parse::<SchedulerKind>().is_err());
    }
}
