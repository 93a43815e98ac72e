//! What the pipeline decided for a frame, and the named counters of every reason a frame is
//! dropped: nothing is lost silently.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// Outcome of processing one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send the (rewritten) frame out of interface `egress` (the worker's interface number).
    Forward {
        /// Interface number to send on.
        egress: u16,
    },
    /// Send the frame (rewritten in place into an answer: ARP reply, ICMP error) back out of the
    /// interface it came in on.
    Reply,
    /// Not the balancer's traffic: leave it to the kernel (XDP_PASS / ignore on AF_PACKET).
    Pass,
    /// Dropped, and counted under `reason`.
    Drop(DropReason),
    /// Copied into the worker's hold queue to wait for its next hop's MAC (sent later by
    /// [`Worker::release_held`](crate::pipeline::Worker::release_held)): the backend frees
    /// its buffer, and no drop is counted.
    Held,
}

/// Why a frame was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DropReason {
    /// Truncated or inconsistent headers.
    Malformed,
    /// For a VIP but no virtual service matches.
    NoService,
    /// The service has no eligible destination (all quiesced, overloaded or none).
    NoDestination,
    /// The connection table is full.
    TableFull,
    /// FULLNAT: no free LIP:lport pair.
    NoLocalPort,
    /// No route, or a next-hop MAC still unresolved when the hold queue had no room or the
    /// frame's hold time ran out.
    NoNeighbour,
    /// TTL / hop limit ran out.
    TtlExceeded,
    /// A fragment the pipeline cannot attribute to a connection.
    Fragment,
    /// A packet that would exceed the egress MTU and may not be fragmented (answered with ICMP
    /// when possible, counted here when not).
    TooBig,
    /// A mid-connection packet with no connection entry (e.g. a stray ACK), or a reply of an
    /// unknown connection to a LIP.
    NoConnection,
    /// A protocol or option the pipeline does not handle.
    Unsupported,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; 11] = [
        DropReason::Malformed,
        DropReason::NoService,
        DropReason::NoDestination,
        DropReason::TableFull,
        DropReason::NoLocalPort,
        DropReason::NoNeighbour,
        DropReason::TtlExceeded,
        DropReason::Fragment,
        DropReason::TooBig,
        DropReason::NoConnection,
        DropReason::Unsupported,
    ];

    /// Stable snake_case name for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::NoService => "no_service",
            DropReason::NoDestination => "no_destination",
            DropReason::TableFull => "table_full",
            DropReason::NoLocalPort => "no_local_port",
            DropReason::NoNeighbour => "no_neighbour",
            DropReason::TtlExceeded => "ttl_exceeded",
            DropReason::Fragment => "fragment",
            DropReason::TooBig => "too_big",
            DropReason::NoConnection => "no_connection",
            DropReason::Unsupported => "unsupported",
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Drop counters of one worker. One thread writes (no read-modify-write atomics on the fast
/// path), any thread may read.
#[derive(Default)]
pub struct DropCounters {
    counts: [AtomicU64; DropReason::ALL.len()],
}

impl fmt::Debug for DropCounters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for r in DropReason::ALL {
            m.entry(&r.name(), &self.get(r));
        }
        m.finish()
    }
}

impl DropCounters {
    /// Counts one drop. Only the owning worker may call this (single writer).
    #[inline]
    pub fn count(&self, reason: DropReason) {
        let c = &self.counts[reason as usize];
        c.store(c.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    /// Drops counted under `reason`.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.counts[reason as usize].load(Ordering::Relaxed)
    }

    /// All drops.
    pub fn total(&self) -> u64 {
        DropReason::ALL.iter().map(|&r| self.get(r)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_reason_has_its_own_counter() {
        let c = DropCounters::default();
        for (i, r) in DropReason::ALL.into_iter().enumerate() {
            assert_eq!(r as usize, i);
            for _ in 0..=i {
                c.count(r);
            }
        }
        for (i, r) in DropReason::ALL.into_iter().enumerate() {
            assert_eq!(c.get(r), i as u64 + 1, "{r}");
        }
        assert_eq!(c.total(), (1..=11).sum::<u64>());
    }
}
