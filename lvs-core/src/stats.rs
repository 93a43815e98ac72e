//! Traffic counters (connections, packets, bytes in each direction), kept per writer shard so
//! that packet workers never share a cache line nor pay a locked instruction per packet, and
//! folded into one snapshot on read; and the kernel's rate estimator (`ip_vs_est.c`) that turns
//! them into the `--rate` figures.

use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_utils::CachePadded;

use crate::time::Time;

/// Number of counter shards: `SHARDS - 1` that one [`StatsWriter`] each owns, and one shared
/// by every other writer.
pub const SHARDS: usize = 8;

/// The shard of writers that own none.
const SHARED: usize = SHARDS - 1;

/// Bit `i` set: shard `i` is owned by a live [`StatsWriter`].
static OWNED: AtomicU64 = AtomicU64::new(0);

/// The right to add to counters. A writer that got a shard of its own ([`StatsWriter::new`],
/// while fewer than `SHARDS - 1` exist) is its only writer in every [`Counters`], so its adds
/// are a plain load and store (no locked instruction: about a fifth of a packet's time on the
/// fast path); the others share one shard with atomic adds. Not `Sync`: a writer is used by one
/// thread at a time (a packet worker keeps its own).
pub struct StatsWriter {
    shard: usize,
    _one_thread: PhantomData<Cell<()>>,
}

impl StatsWriter {
    /// A writer with a shard of its own if one is free, else a shared one.
    pub fn new() -> StatsWriter {
        let mut cur = OWNED.load(Ordering::Relaxed);
        loop {
            let free = (!cur).trailing_zeros() as usize;
            if free >= SHARED {
                return StatsWriter::shared();
            }
            match OWNED.compare_exchange_weak(cur, cur | 1 << free, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => {
                    return StatsWriter {
                        shard: free,
                        _one_thread: PhantomData,
                    };
                }
                Err(now) => cur = now,
            }
        }
    }

    /// A writer on the shared shard (atomic adds), e.g. for occasional writers.
    pub fn shared() -> StatsWriter {
        StatsWriter {
            shard: SHARED,
            _one_thread: PhantomData,
        }
    }

    /// True if this writer owns its shard.
    pub fn owns_shard(&self) -> bool {
        self.shard != SHARED
    }

    #[inline]
    fn add(&self, c: &AtomicU64, v: u64) {
        if self.shard == SHARED {
            c.fetch_add(v, Ordering::Relaxed);
        } else {
            // Sole writer of this shard: readers see either value, never a torn one.
            c.store(c.load(Ordering::Relaxed).wrapping_add(v), Ordering::Relaxed);
        }
    }
}

impl Default for StatsWriter {
    fn default() -> Self {
        StatsWriter::new()
    }
}

impl Drop for StatsWriter {
    fn drop(&mut self) {
        if self.shard != SHARED {
            // Release: the next owner's plain loads see this writer's last stores.
            OWNED.fetch_and(!(1 << self.shard), Ordering::Release);
        }
    }
}

impl fmt::Debug for StatsWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StatsWriter").field("shard", &self.shard).finish()
    }
}

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
    /// What the shards summed to at the last [`Counters::zero`] (writers never see a reset:
    /// an owned shard's plain stores would undo it).
    base: Mutex<StatsSnapshot>,
    /// Rate estimator fed by [`Counters::estimate`]; touched only by the control plane.
    estimator: Mutex<RateEstimator>,
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
    /// Counts one new connection, written by `w`.
    #[inline]
    pub fn add_conn(&self, w: &StatsWriter) {
        w.add(&self.shards[w.shard].conns, 1);
    }

    /// Counts `pkts` packets of `bytes` bytes in the client→server direction.
    #[inline]
    pub fn add_in(&self, w: &StatsWriter, pkts: u64, bytes: u64) {
        let s = &self.shards[w.shard];
        w.add(&s.inpkts, pkts);
        w.add(&s.inbytes, bytes);
    }

    /// Counts `pkts` packets of `bytes` bytes in the server→client direction.
    #[inline]
    pub fn add_out(&self, w: &StatsWriter, pkts: u64, bytes: u64) {
        let s = &self.shards[w.shard];
        w.add(&s.outpkts, pkts);
        w.add(&s.outbytes, bytes);
    }

    fn raw(&self) -> StatsSnapshot {
        let mut t = StatsSnapshot::default();
        for s in &self.shards {
            t.conns = t.conns.wrapping_add(s.conns.load(Ordering::Relaxed));
            t.inpkts = t.inpkts.wrapping_add(s.inpkts.load(Ordering::Relaxed));
            t.outpkts = t.outpkts.wrapping_add(s.outpkts.load(Ordering::Relaxed));
            t.inbytes = t.inbytes.wrapping_add(s.inbytes.load(Ordering::Relaxed));
            t.outbytes = t.outbytes.wrapping_add(s.outbytes.load(Ordering::Relaxed));
        }
        t
    }

    fn base(&self) -> std::sync::MutexGuard<'_, StatsSnapshot> {
        self.base.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sums all shards (since the last [`zero`](Self::zero)).
    pub fn snapshot(&self) -> StatsSnapshot {
        let (r, b) = (self.raw(), *self.base());
        StatsSnapshot {
            conns: r.conns.wrapping_sub(b.conns),
            inpkts: r.inpkts.wrapping_sub(b.inpkts),
            outpkts: r.outpkts.wrapping_sub(b.outpkts),
            inbytes: r.inbytes.wrapping_sub(b.inbytes),
            outbytes: r.outbytes.wrapping_sub(b.outbytes),
        }
    }

    /// Resets every counter to zero (`ipvsadm -Z`), and the rate estimate with them (the
    /// kernel's `ip_vs_zero_estimator`).
    pub fn zero(&self) {
        *self.base() = self.raw();
        self.estimator().zero(StatsSnapshot::default());
    }

    fn estimator(&self) -> std::sync::MutexGuard<'_, RateEstimator> {
        self.estimator.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Feeds the current counters to this object's rate estimator (call it at least every
    /// 2 s; see [`RateEstimator::sample`]). Returns true when an estimation step ran.
    pub fn estimate(&self, now: Time) -> bool {
        let snap = self.snapshot();
        self.estimator().sample(snap, now)
    }

    /// The current rate estimate, as `ipvsadm -L --rate` shows it.
    pub fn rates(&self) -> Rates {
        self.estimator().rates()
    }
}

/// Runs [`Counters::estimate`] on the counters of every service and destination of `set`.
/// The control plane calls it every 2 s (more often is harmless: early calls do nothing).
pub fn estimate_all(set: &crate::service::ServiceSet, now: Time) {
    for svc in set.services() {
        svc.stats.estimate(now);
        for d in &svc.dests {
            d.state.stats.estimate(now);
        }
    }
}

/// Rates as the kernel reports them (`ip_vs_read_estimator`): connections and packets per
/// second, bytes per second, each rounded to the nearest whole number.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rates {
    /// New connections per second.
    pub cps: u64,
    /// Packets per second from clients.
    pub inpps: u64,
    /// Packets per second from real servers.
    pub outpps: u64,
    /// Bytes per second from clients.
    pub inbps: u64,
    /// Bytes per second from real servers.
    pub outbps: u64,
}

/// Estimation period of the kernel's estimator: 2 seconds.
pub const ESTIMATOR_PERIOD_MS: u64 = 2000;

/// The kernel's rate estimator (`net/netfilter/ipvs/ip_vs_est.c`), sans-IO.
///
/// Every 2 s it takes the counter deltas and folds them into an exponentially weighted moving
/// average with weight 1/4: `avg += (rate - avg) >> 2`. Connection and packet rates are kept
/// scaled by 2^10 (the 2 s delta is shifted left by 9), byte rates by 2^5 (delta shifted left by
/// 4); reading rounds to nearest: `(cps + 0x1FF) >> 10`, `(bps + 0xF) >> 5`.
#[derive(Debug, Clone, Default)]
pub struct RateEstimator {
    last: StatsSnapshot,
    last_tick: Option<Time>,
    cps: i64,
    inpps: i64,
    outpps: i64,
    inbps: i64,
    outbps: i64,
}

impl RateEstimator {
    /// A fresh estimator; the first [`sample`](Self::sample) only records its baseline.
    pub fn new() -> RateEstimator {
        RateEstimator::default()
    }

    /// Offers a counter snapshot taken at `now`. The first call sets the baseline. Later calls
    /// run one estimation step per whole 2 s period elapsed since the last step (the deltas
    /// spread evenly over missed periods) and return true; calls less than 2 s after the last
    /// step do nothing and return false. Counters that went backwards (zeroed) re-baseline.
    pub fn sample(&mut self, snap: StatsSnapshot, now: Time) -> bool {
        let Some(last_tick) = self.last_tick else {
            self.last = snap;
            self.last_tick = Some(now);
            return false;
        };
        let elapsed = now.as_millis().saturating_sub(last_tick.as_millis());
        let periods = elapsed / ESTIMATOR_PERIOD_MS;
        if periods == 0 {
            return false;
        }
        let l = self.last;
        if snap.conns < l.conns
            || snap.inpkts < l.inpkts
            || snap.outpkts < l.outpkts
            || snap.inbytes < l.inbytes
            || snap.outbytes < l.outbytes
        {
            self.zero(snap);
            self.last_tick = Some(now);
            return false;
        }
        let deltas = [
            snap.conns - l.conns,
            snap.inpkts - l.inpkts,
            snap.outpkts - l.outpkts,
            snap.inbytes - l.inbytes,
            snap.outbytes - l.outbytes,
        ];
        for p in 0..periods {
            // Spread the deltas over the missed periods; the remainder goes to the last one.
            let share = |d: u64| d / periods + if p == periods - 1 { d % periods } else { 0 };
            step(&mut self.cps, share(deltas[0]), 9);
            step(&mut self.inpps, share(deltas[1]), 9);
            step(&mut self.outpps, share(deltas[2]), 9);
            step(&mut self.inbps, share(deltas[3]), 4);
            step(&mut self.outbps, share(deltas[4]), 4);
        }
        self.last = snap;
        self.last_tick = Some(Time::from_millis(
            last_tick.as_millis() + periods * ESTIMATOR_PERIOD_MS,
        ));
        true
    }

    /// Forgets the averages and takes `snap` as the new baseline (`ip_vs_zero_estimator`).
    pub fn zero(&mut self, snap: StatsSnapshot) {
        let tick = self.last_tick;
        *self = RateEstimator {
            last: snap,
            last_tick: tick,
            ..RateEstimator::default()
        };
    }

    /// The current estimate, decoded and rounded as `ip_vs_read_estimator` does.
    pub fn rates(&self) -> Rates {
        let pps = |v: i64| (v.max(0) as u64 + 0x1FF) >> 10;
        let bps = |v: i64| (v.max(0) as u64 + 0xF) >> 5;
        Rates {
            cps: pps(self.cps),
            inpps: pps(self.inpps),
            outpps: pps(self.outpps),
            inbps: bps(self.inbps),
            outbps: bps(self.outbps),
        }
    }
}

/// One EWMA step: `avg += ((delta << shift) - avg) >> 2` with an arithmetic shift, as the kernel.
fn step(avg: &mut i64, delta: u64, shift: u32) {
    let rate = (delta << shift) as i64;
    *avg += (rate - *avg) >> 2;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_fold_into_one_snapshot_and_zero_clears() {
        let c = Counters::default();
        let (w1, w2, shared) = (StatsWriter::new(), StatsWriter::new(), StatsWriter::shared());
        c.add_conn(&w1);
        c.add_conn(&w2);
        c.add_in(&w1, 2, 120);
        c.add_out(&shared, 1, 60);
        let s = c.snapshot();
        assert_eq!(
            (s.conns, s.inpkts, s.inbytes, s.outpkts, s.outbytes),
            (2, 2, 120, 1, 60)
        );
        c.zero();
        assert_eq!(c.snapshot(), StatsSnapshot::default());
        c.add_in(&w2, 1, 10);
        assert_eq!(
            (c.snapshot().inpkts, c.snapshot().inbytes),
            (1, 10),
            "counts after a zero"
        );
    }

    #[test]
    fn owned_shards_are_unique_and_many_writers_on_many_threads_lose_nothing() {
        let c = Counters::default();
        const THREADS: usize = 12;
        const ADDS: u64 = 20_000;
        let owners = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..THREADS {
                s.spawn(|| {
                    let w = StatsWriter::new();
                    if w.owns_shard() {
                        owners.fetch_add(1, Ordering::Relaxed);
                    }
                    for _ in 0..ADDS {
                        c.add_in(&w, 1, 3);
                    }
                    // Keep the shard until every thread has its writer, so that some must
                    // share (more threads than owned shards).
                    std::thread::sleep(std::time::Duration::from_millis(50));
                });
            }
        });
        let s = c.snapshot();
        assert_eq!(
            (s.inpkts, s.inbytes),
            (THREADS as u64 * ADDS, 3 * THREADS as u64 * ADDS)
        );
        assert!(
            owners.load(Ordering::Relaxed) < SHARDS,
            "at most SHARDS - 1 owners"
        );
    }

    fn snap(conns: u64, pkts: u64, bytes: u64) -> StatsSnapshot {
        StatsSnapshot {
            conns,
            inpkts: pkts,
            outpkts: pkts / 2,
            inbytes: bytes,
            outbytes: bytes * 3,
        }
    }

    #[test]
    fn estimator_converges_to_a_constant_rate() {
        // 100 conns/s, 1000 pkts/s in (500 out), 64000 B/s in (192000 out), sampled every 2 s.
        let mut e = RateEstimator::new();
        assert!(
            !e.sample(snap(0, 0, 0), Time::ZERO),
            "first sample is the baseline"
        );
        let mut prev = Rates::default();
        for k in 1..=60u64 {
            let t = Time::from_secs(2 * k);
            assert!(e.sample(snap(200 * k, 2000 * k, 128_000 * k), t));
            let r = e.rates();
            assert!(
                r.cps >= prev.cps && r.inbps >= prev.inbps,
                "monotone approach from below"
            );
            prev = r;
        }
        let r = e.rates();
        assert_eq!(
            (r.cps, r.inpps, r.outpps, r.inbps, r.outbps),
            (100, 1000, 500, 64_000, 192_000)
        );
    }

    #[test]
    fn estimator_first_step_is_a_quarter_of_the_rate() {
        // avg = 0 + (rate - 0) >> 2: one step after a 2 s burst of 400 conns (200/s) reads 50.
        let mut e = RateEstimator::new();
        e.sample(snap(0, 0, 0), Time::ZERO);
        e.sample(snap(400, 0, 0), Time::from_secs(2));
        assert_eq!(e.rates().cps, 50);
        // Then the rate drops to zero: 50 -> 37.5, and +0x1FF (just under half) reads 37.
        e.sample(snap(400, 0, 0), Time::from_secs(4));
        assert_eq!(e.rates().cps, 37);
    }

    #[test]
    fn estimator_ignores_early_samples_and_spreads_missed_periods() {
        let mut e = RateEstimator::new();
        e.sample(snap(0, 0, 0), Time::ZERO);
        assert!(!e.sample(snap(10, 0, 0), Time::from_millis(1999)));
        assert_eq!(e.rates().cps, 0);
        // 6 s later: three periods of 2 s; 1200 conns spread as 400 each (200/s).
        let mut f = RateEstimator::new();
        f.sample(snap(0, 0, 0), Time::ZERO);
        assert!(f.sample(snap(1200, 0, 0), Time::from_secs(6)));
        let mut g = RateEstimator::new();
        g.sample(snap(0, 0, 0), Time::ZERO);
        for k in 1..=3 {
            g.sample(snap(400 * k, 0, 0), Time::from_secs(2 * k));
        }
        assert_eq!(f.rates(), g.rates());
    }

    #[test]
    fn estimate_all_reaches_services_and_destinations() {
        use crate::dest::DestConfig;
        use crate::service::{Protocol, ServiceConfig, ServiceKey, ServiceTable};
        let mut cfg = ServiceConfig::new(ServiceKey::Addr {
            proto: Protocol::Tcp,
            addr: [10, 0, 0, 1].into(),
            port: 80,
        });
        cfg.dests.push(DestConfig::new([10, 0, 1, 1].into(), 80));
        let table = ServiceTable::new();
        let set = table.publish(&[cfg]);
        estimate_all(&set, Time::ZERO);
        let svc = &set.services()[0];
        let w = StatsWriter::new();
        svc.stats.add_in(&w, 4000, 0);
        svc.dests[0].state.stats.add_out(&w, 8000, 0);
        estimate_all(&set, Time::from_secs(2));
        assert_eq!(svc.stats.rates().inpps, 500);
        assert_eq!(svc.dests[0].state.stats.rates().outpps, 1000);
    }

    #[test]
    fn zeroing_counters_resets_the_estimate() {
        let c = Counters::default();
        c.estimate(Time::ZERO);
        let w = StatsWriter::new();
        for _ in 0..1000 {
            c.add_conn(&w);
        }
        c.estimate(Time::from_secs(2));
        assert!(c.rates().cps > 0);
        c.zero();
        assert_eq!(c.rates(), Rates::default());
        c.estimate(Time::from_secs(4));
        assert_eq!(c.rates(), Rates::default());
    }
}
