//! Traffic counters (connections, packets, bytes in each direction), kept per worker shard so
//! that packet workers never share a cache line, and folded into one snapshot on read.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_utils::CachePadded;

/// Number of counter shards; worker `i` writes shard `i % SHARDS`.
pub const SHARDS: usize = 8;

#[derive(Default)]
struct Shard {
    conns: AtomicU64,
    inpkts: AtomicU64,
    outpkts: AtomicU64,
    inbytes: AtomicU64,
    outbytes: AtomicU64,
}

/// Per-object traffic counters (a service, a destination, or the whole balancer), as the
/// kernel's `struct ip_vs_stats`.
#[derive(Default)]
pub struct Counters {
    shards: [CachePadded<Shard>; SHARDS],
}

impl fmt::Debug for Counters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.snapshot().fmt(f)
    }
}

/// Folded counter values at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Connections scheduled.
    pub conns: u64,
    /// Packets from clients (to the real servers).
    pub inpkts: u64,
    /// Packets from real servers (to the clients).
    pub outpkts: u64,
    /// Bytes from clients.
    pub inbytes: u64,
    /// Bytes from real servers.
    pub outbytes: u64,
}

impl Counters {
    #[inline]
    fn shard(&self, worker: usize) -> &Shard {
        &self.shards[worker % SHARDS]
    }

    /// Counts one new connection, from worker `worker`.
    #[inline]
    pub fn add_conn(&self, worker: usize) {
        self.shard(worker).conns.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts `pkts` packets of `bytes` bytes in the client→server direction.
    #[inline]
    pub fn add_in(&self, worker: usize, pkts: u64, bytes: u64) {
        let s = self.shard(worker);
        s.inpkts.fetch_add(pkts, Ordering::Relaxed);
        s.inbytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts `pkts` packets of `bytes` bytes in the server→client direction.
    #[inline]
    pub fn add_out(&self, worker: usize, pkts: u64, bytes: u64) {
        let s = self.shard(worker);
        s.outpkts.fetch_add(pkts, Ordering::Relaxed);
        s.outbytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Sums all shards.
    pub fn snapshot(&self) -> StatsSnapshot {
        let mut t = StatsSnapshot::default();
        for s in &self.shards {
            t.conns += s.conns.load(Ordering::Relaxed);
            t.inpkts += s.inpkts.load(Ordering::Relaxed);
            t.outpkts += s.outpkts.load(Ordering::Relaxed);
            t.inbytes += s.inbytes.load(Ordering::Relaxed);
            t.outbytes += s.outbytes.load(Ordering::Relaxed);
        }
        t
    }

    /// Resets every counter to zero (`ipvsadm -Z`).
    pub fn zero(&self) {
        for s in &self.shards {
            s.conns.store(0, Ordering::Relaxed);
            s.inpkts.store(0, Ordering::Relaxed);
            s.outpkts.store(0, Ordering::Relaxed);
            s.inbytes.store(0, Ordering::Relaxed);
            s.outbytes.store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_fold_into_one_snapshot_and_zero_clears() {
        let c = Counters::default();
        c.add_conn(0);
        c.add_conn(3);
        c.add_in(1, 2, 120);
        c.add_out(SHARDS + 1, 1, 60);
        let s = c.snapshot();
        assert_eq!(
            (s.conns, s.inpkts, s.inbytes, s.outpkts, s.outbytes),
            (2, 2, 120, 1, 60)
        );
        c.zero();
        assert_eq!(c.snapshot(), StatsSnapshot::default());
    }
}
