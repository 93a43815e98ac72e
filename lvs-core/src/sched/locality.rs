//! Shared machinery of lblc and lblcr: the kernel's per-destination-address table (1024 hash
//! chains), its garbage collection driven by the caller's clock, and the two load rules both
//! schedulers use (the wlc pick and lblc's own "overloaded" test).
//!
//! Kernel facts kept here (ip_vs_lblc.c, ip_vs_lblcr.c):
//! - 1024 chains (`CONFIG_IP_VS_LBLC_TAB_BITS` = 10), chain of an address
//!   `hash_32(addr_fold, 10)`, new entries at the head of their chain;
//! - `max_size` = 16 × 1024 entries; a timer runs every `CHECK_EXPIRE_INTERVAL` = 60 s;
//!   every `COUNT_FOR_FULL_EXPIRATION` = 30th tick (the counter only advances on ticks that
//!   find the table within max_size) it does a full sweep removing entries unused for the
//!   expiration time (sysctl `lblc_expiration` / `lblcr_expiration`, default 24 h); on other
//!   ticks, when the table holds more than max_size entries, it removes entries unused for
//!   `ENTRY_TIMEOUT` = 6 min, chain by chain from a rover, until `goal = min((entries -
//!   max_size) × 4/3, max_size/2)` entries are gone.
//!
//! Lookups take no lock: each chain is an `ArcSwap` of its entry list, rewritten copy-on-write
//! under a per-chain mutex by the miss path and the sweeps; entries change their fields
//! (`lastuse`, the destination) through atomics, as the kernel's RCU readers do.
//!
//! Sans-IO: `schedule(now)` drives that timer. A tick starts on the first call at or after its
//! due time; its sweep then advances [`SWEEP_STEP`] chains per call (never a full sweep inside
//! one packet's call) and whichever worker finds the sweep lock taken simply skips. Ticks missed
//! while no packet came are folded into the next one. Embedders that prefer a timer call the
//! schedulers' `expire(now)`, which runs a due tick to completion.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;
use std::time::Duration;

use super::hash::{addr_fold, hash_32};
use crate::dest::Destination;
use crate::time::Time;

/// Bits of the lblc/lblcr chain table (`CONFIG_IP_VS_LBLC_TAB_BITS` default).
pub const TAB_BITS: u32 = 10;
/// Number of chains.
pub const TAB_SIZE: usize = 1 << TAB_BITS;
/// Entries above which the periodic check starts collecting (`tbl->max_size`).
pub const MAX_SIZE: usize = TAB_SIZE * 16;
/// Period of the expiry check (`CHECK_EXPIRE_INTERVAL`).
pub const CHECK_EXPIRE_INTERVAL: Duration = Duration::from_secs(60);
/// Idle time after which an entry may be collected when the table is over-full
/// (`ENTRY_TIMEOUT`).
pub const ENTRY_TIMEOUT: Duration = Duration::from_secs(6 * 60);
/// Default of the `lblc_expiration` / `lblcr_expiration` sysctls (`DEFAULT_EXPIRATION`).
pub const DEFAULT_EXPIRATION: Duration = Duration::from_secs(24 * 60 * 60);
/// Every this many quiet ticks a full expiration sweep runs (`COUNT_FOR_FULL_EXPIRATION`).
pub const COUNT_FOR_FULL_EXPIRATION: u32 = 30;
/// Chains a sweep visits per `schedule` call.
pub const SWEEP_STEP: usize = 16;

/// A table entry, as the table sees it: shared by readers, changed through atomics.
pub(super) trait Entry {
    /// The packet destination address the entry is for.
    fn addr(&self) -> &IpAddr;
    /// When the entry was last used.
    fn lastuse(&self) -> Time;
}

/// Progress of a running sweep.
#[derive(Debug, Clone, Copy)]
struct Sweep {
    /// Full expiration sweep (else a goal-limited collection).
    full: bool,
    /// The tick's time.
    now: Time,
    /// Chains still to visit.
    left: usize,
    /// Entries still to collect (collection sweeps).
    goal: isize,
}

/// The periodic check's state (the kernel's timer, `counter` and `rover`).
#[derive(Debug, Clone, Copy)]
struct Gc {
    next_tick: Option<Time>,
    counter: u32,
    rover: usize,
    sweep: Option<Sweep>,
}

/// One hash chain: readers load the entry list without locking (the kernel's RCU walk);
/// writers serialise on `write` and publish a new list (copy on write).
#[derive(Debug)]
struct Chain<E> {
    list: ArcSwap<Vec<Arc<E>>>,
    write: Mutex<()>,
}

/// A writer's view of one chain, handed to [`Table::write`].
#[derive(Debug)]
pub(super) struct ChainEdit<E> {
    cur: Arc<Vec<Arc<E>>>,
    new: Option<Vec<Arc<E>>>,
}

impl<E: Entry> ChainEdit<E> {
    /// The chain's entries, head first.
    pub(super) fn entries(&self) -> &[Arc<E>] {
        self.new.as_deref().unwrap_or(&self.cur)
    }

    /// The entry for `addr`, if any.
    pub(super) fn find(&self, addr: &IpAddr) -> Option<&Arc<E>> {
        self.entries().iter().find(|e| e.addr() == addr)
    }

    fn edit(&mut self) -> &mut Vec<Arc<E>> {
        let cur = &self.cur;
        self.new.get_or_insert_with(|| cur.as_ref().clone())
    }

    /// Adds `e` at the head of the chain (`hlist_add_head_rcu`).
    pub(super) fn push_front(&mut self, e: E) {
        self.edit().insert(0, Arc::new(e));
    }

    /// Removes the entry for `addr`, if any.
    pub(super) fn remove(&mut self, addr: &IpAddr) {
        if let Some(pos) = self.entries().iter().position(|e| e.addr() == addr) {
            self.edit().remove(pos);
        }
    }
}

/// The chain table of lblc or lblcr.
#[derive(Debug)]
pub(super) struct Table<E> {
    chains: Box<[Chain<E>]>,
    entries: AtomicUsize,
    gc: Mutex<Gc>,
    /// Milliseconds from which the next `maintain` call has work (0: a sweep is running).
    due: AtomicU64,
    expiration: Duration,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The chain of `addr`: `hash_32(addr_fold, 10)`.
#[inline]
fn chain_of(addr: &IpAddr) -> usize {
    hash_32(addr_fold(addr), TAB_BITS) as usize
}

impl<E: Entry> Table<E> {
    /// An empty table whose full sweeps use `expiration`.
    pub(super) fn new(expiration: Duration) -> Table<E> {
        Table {
            chains: (0..TAB_SIZE)
                .map(|_| Chain {
                    list: ArcSwap::from_pointee(Vec::new()),
                    write: Mutex::new(()),
                })
                .collect(),
            entries: AtomicUsize::new(0),
            gc: Mutex::new(Gc {
                next_tick: None,
                counter: 1,
                rover: 0,
                sweep: None,
            }),
            due: AtomicU64::new(0),
            expiration,
        }
    }

    /// A table holding copies of `prev`'s entries made by `remap` (which drops an entry by
    /// returning `None`), chain order kept, and `prev`'s timer state.
    pub(super) fn carry_over(prev: &Table<E>, mut remap: impl FnMut(&E) -> Option<E>) -> Table<E> {
        let t = Table::new(prev.expiration);
        let mut n = 0;
        for (old, new) in prev.chains.iter().zip(t.chains.iter()) {
            let kept: Vec<Arc<E>> = old
                .list
                .load()
                .iter()
                .filter_map(|e| remap(e))
                .map(Arc::new)
                .collect();
            n += kept.len();
            new.list.store(Arc::new(kept));
        }
        t.entries.store(n, Ordering::Relaxed);
        let mut gc = *lock(&prev.gc);
        // A sweep in progress restarts on the next tick.
        gc.sweep = None;
        *lock(&t.gc) = gc;
        t.due.store(prev.due.load(Ordering::Relaxed), Ordering::Relaxed);
        t
    }

    /// Runs `f` on the entry for `addr`, if there is one, without taking any lock.
    #[inline]
    pub(super) fn read<R>(&self, addr: &IpAddr, f: impl FnOnce(&E) -> R) -> Option<R> {
        let list = self.chains[chain_of(addr)].list.load();
        list.iter().find(|e| e.addr() == addr).map(|e| f(e))
    }

    /// Runs `f` with the chain of `addr` locked for writing, then publishes its changes.
    pub(super) fn write<R>(&self, addr: &IpAddr, f: impl FnOnce(&mut ChainEdit<E>) -> R) -> R {
        let chain = &self.chains[chain_of(addr)];
        let _w = lock(&chain.write);
        let mut edit = ChainEdit {
            cur: chain.list.load_full(),
            new: None,
        };
        let r = f(&mut edit);
        if let Some(new) = edit.new {
            let (old_len, new_len) = (edit.cur.len(), new.len());
            chain.list.store(Arc::new(new));
            if new_len >= old_len {
                self.entries.fetch_add(new_len - old_len, Ordering::Relaxed);
            } else {
                self.entries.fetch_sub(old_len - new_len, Ordering::Relaxed);
            }
        }
        r
    }

    /// Number of entries.
    pub(super) fn len(&self) -> usize {
        self.entries.load(Ordering::Relaxed)
    }

    /// Runs the periodic check as far as `now` allows, at most [`SWEEP_STEP`] chains; cheap
    /// (one atomic load) when nothing is due. Never blocks on another worker's sweep.
    #[inline]
    pub(super) fn maintain(&self, now: Time) {
        if now.as_millis() < self.due.load(Ordering::Relaxed) {
            return;
        }
        if let Ok(mut gc) = self.gc.try_lock() {
            self.step(&mut gc, now, SWEEP_STEP);
        }
    }

    /// Runs a due tick to completion (the embedder's timer hook).
    pub(super) fn expire(&self, now: Time) {
        let mut gc = lock(&self.gc);
        self.step(&mut gc, now, TAB_SIZE);
        while gc.sweep.is_some() {
            self.step(&mut gc, now, TAB_SIZE);
        }
    }

    fn step(&self, gc: &mut Gc, now: Time, budget: usize) {
        if gc.sweep.is_none() {
            let Some(next) = gc.next_tick else {
                // The kernel arms its timer at init_service: the first call starts the clock.
                gc.next_tick = Some(now + CHECK_EXPIRE_INTERVAL);
                self.due
                    .store((now + CHECK_EXPIRE_INTERVAL).as_millis(), Ordering::Relaxed);
                return;
            };
            if now < next {
                self.due.store(next.as_millis(), Ordering::Relaxed);
                return;
            }
            let interval = CHECK_EXPIRE_INTERVAL.as_millis() as u64;
            let ticks = 1 + (now.as_millis() - next.as_millis()) / interval;
            gc.next_tick = Some(Time::from_millis(next.as_millis() + ticks * interval));
            self.start_tick(gc, now, ticks);
            if gc.sweep.is_none() {
                self.due
                    .store(gc.next_tick.unwrap_or(now).as_millis(), Ordering::Relaxed);
                return;
            }
            self.due.store(0, Ordering::Relaxed);
        }
        let Some(mut sw) = gc.sweep else { return };
        let idle = if sw.full { self.expiration } else { ENTRY_TIMEOUT };
        let mut visited = 0;
        while sw.left > 0 && visited < budget {
            gc.rover = (gc.rover + 1) % TAB_SIZE;
            sw.left -= 1;
            visited += 1;
            let chain = &self.chains[gc.rover];
            // Kept while `now` is before lastuse + idle (time_before).
            let keep = |e: &Arc<E>| sw.now < e.lastuse() + idle;
            if chain.list.load().iter().all(keep) {
                continue;
            }
            let _w = lock(&chain.write);
            let cur = chain.list.load_full();
            let kept: Vec<Arc<E>> = cur.iter().filter(|e| keep(e)).cloned().collect();
            let removed = cur.len() - kept.len();
            chain.list.store(Arc::new(kept));
            self.entries.fetch_sub(removed, Ordering::Relaxed);
            if !sw.full {
                sw.goal -= removed as isize;
                if sw.goal <= 0 {
                    sw.left = 0;
                }
            }
        }
        if sw.left == 0 {
            gc.sweep = None;
            self.due
                .store(gc.next_tick.unwrap_or(now).as_millis(), Ordering::Relaxed);
        } else {
            gc.sweep = Some(sw);
        }
    }

    /// The kernel's `check_expire` for `ticks` timer firings at once (more than one when no
    /// call came for a while): decides which sweep, if any, to run.
    fn start_tick(&self, gc: &mut Gc, now: Time, ticks: u64) {
        let entries = self.len();
        // Quiet ticks before the one that does the full sweep.
        let until_full =
            (COUNT_FOR_FULL_EXPIRATION - gc.counter % COUNT_FOR_FULL_EXPIRATION) % COUNT_FOR_FULL_EXPIRATION;
        if gc.counter.is_multiple_of(COUNT_FOR_FULL_EXPIRATION)
            || (entries <= MAX_SIZE && ticks > until_full as u64)
        {
            gc.counter = 1;
            gc.sweep = Some(Sweep {
                full: true,
                now,
                left: TAB_SIZE,
                goal: 0,
            });
            return;
        }
        if entries <= MAX_SIZE {
            gc.counter += ticks as u32;
            return;
        }
        let goal = ((entries - MAX_SIZE) * 4 / 3).min(MAX_SIZE / 2);
        gc.sweep = Some(Sweep {
            full: false,
            now,
            left: TAB_SIZE,
            goal: goal as isize,
        });
    }
}

/// Sets an entry's `lastuse` to `now`, at most once a second: a hot address's hits then only
/// read its entry instead of writing one shared cache line from every worker. The kernel keeps
/// lastuse in jiffies; expiry works in minutes and hours.
#[inline]
pub(super) fn refresh(lastuse: &AtomicU64, now: Time) {
    if now.as_millis() >= lastuse.load(Ordering::Relaxed).saturating_add(1000) {
        lastuse.store(now.as_millis(), Ordering::Relaxed);
    }
}

/// The kernel's `__ip_vs_lblc_schedule` / `__ip_vs_lblcr_schedule`: weighted least connection
/// over the whole list (skip OVERLOAD; the first destination with weight > 0 starts; a later
/// one wins only when strictly less loaded, overhead × other weight compared). O(n).
pub(super) fn least_weighted(dests: &[Destination]) -> Option<usize> {
    let mut best: Option<(usize, u64, u64)> = None;
    for (i, d) in dests.iter().enumerate() {
        if d.state.is_overloaded() {
            continue;
        }
        let w = d.weight() as u64;
        match best {
            None if d.config.weight > 0 => best = Some((i, d.state.overhead(), w)),
            None => {}
            Some((_, loh, lw)) => {
                let doh = d.state.overhead();
                if loh * w > doh * lw {
                    best = Some((i, doh, w));
                }
            }
        }
    }
    best.map(|(i, _, _)| i)
}

/// lblc's and lblcr's own `is_overloaded`: the destination has more active connections than
/// its weight and some destination of the service (any, even OVERLOADED or the same one) has
/// fewer than half its weight. O(n) only when the first test holds.
pub(super) fn lblc_overloaded(dests: &[Destination], i: usize) -> bool {
    let d = &dests[i];
    if d.state.active_conns() as u64 <= d.weight() as u64 {
        return false;
    }
    dests
        .iter()
        .any(|m| (m.state.active_conns() as u64) * 2 < m.weight() as u64)
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{add_active, add_inactive, dests, overload, v4};
    use super::*;

    #[derive(Debug, Clone)]
    struct E(IpAddr, Time);
    impl Entry for E {
        fn addr(&self) -> &IpAddr {
            &self.0
        }
        fn lastuse(&self) -> Time {
            self.1
        }
    }

    fn fill(t: &Table<E>, n: u32, at: Time) {
        for k in 0..n {
            let a = v4(0x0a00_0000 + k);
            t.write(&a, |c| c.push_front(E(a, at)));
        }
    }

    #[test]
    fn least_weighted_compares_overhead_per_weight_and_keeps_first_on_tie() {
        let d = dests(&[1, 2, 2]);
        assert_eq!(least_weighted(&d), Some(0), "all idle: first wins ties");
        add_active(&d[0], 1); // 256 / 1
        add_active(&d[1], 1); // 256 / 2
        add_active(&d[2], 1); // 256 / 2: tie with #1, #1 stays
        assert_eq!(least_weighted(&d), Some(1));
        add_inactive(&d[1], 1); // 257 / 2
        assert_eq!(least_weighted(&d), Some(2));
        overload(&d[2]);
        assert_eq!(least_weighted(&d), Some(1));
        let d = dests(&[0, 0]);
        assert_eq!(least_weighted(&d), None);
    }

    #[test]
    fn lblc_overload_rule() {
        let d = dests(&[2, 4]);
        add_active(&d[0], 2);
        assert!(!lblc_overloaded(&d, 0), "2 active is not more than weight 2");
        add_active(&d[0], 1);
        assert!(lblc_overloaded(&d, 0), "3 > 2 and #1 has 0*2 < 4");
        add_active(&d[1], 2);
        assert!(!lblc_overloaded(&d, 0), "#1: 2*2 < 4 is false");
    }

    #[test]
    fn first_call_arms_the_timer_and_ticks_come_every_minute() {
        let t: Table<E> = Table::new(DEFAULT_EXPIRATION);
        t.maintain(Time::from_secs(10));
        assert_eq!(t.due.load(Ordering::Relaxed), 70_000);
        t.maintain(Time::from_secs(69));
        assert_eq!(lock(&t.gc).counter, 1);
        t.maintain(Time::from_secs(70));
        assert_eq!(lock(&t.gc).counter, 2);
        assert_eq!(t.due.load(Ordering::Relaxed), 130_000);
    }

    #[test]
    fn full_sweep_every_thirtieth_tick_removes_day_old_entries() {
        let t: Table<E> = Table::new(DEFAULT_EXPIRATION);
        t.expire(Time::ZERO); // arms: first tick at 60 s
        fill(&t, 100, Time::ZERO);
        // Ticks 1..29 only count (counter 1 -> 30).
        for k in 1..30 {
            t.expire(Time::from_secs(60 * k));
        }
        assert_eq!(lock(&t.gc).counter, 30);
        assert_eq!(t.len(), 100);
        // Tick 30 (30 min) sweeps, but the entries are not a day old yet.
        t.expire(Time::from_secs(60 * 30));
        assert_eq!(lock(&t.gc).counter, 1);
        assert_eq!(t.len(), 100);
        // A day later (ticks missed in between are folded in), they go.
        t.expire(Time::from_secs(24 * 3600 + 60 * 31));
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn over_full_table_collects_idle_entries_up_to_goal_in_steps() {
        let t: Table<E> = Table::new(DEFAULT_EXPIRATION);
        t.maintain(Time::ZERO);
        let n = MAX_SIZE as u32 + 3000;
        fill(&t, n, Time::ZERO);
        // Tick at 60 s: entries only a minute idle, nothing goes.
        t.maintain(Time::from_secs(60));
        let mut calls = 0;
        while lock(&t.gc).sweep.is_some() {
            t.maintain(Time::from_secs(60));
            calls += 1;
        }
        assert_eq!(t.len(), n as usize);
        assert!(
            calls >= TAB_SIZE / SWEEP_STEP - 1,
            "sweep spread over calls, got {calls}"
        );
        // Tick at 7 min: idle for more than ENTRY_TIMEOUT; goal = 3000 * 4/3 = 4000.
        t.maintain(Time::from_secs(7 * 60));
        while lock(&t.gc).sweep.is_some() {
            t.maintain(Time::from_secs(7 * 60));
        }
        let removed = n as usize - t.len();
        // Whole chains are removed until the goal is met: at least 4000, at most a chain more.
        assert!((4000..4000 + 64).contains(&removed), "removed {removed}");
    }

    #[test]
    fn carry_over_keeps_entries_and_timer() {
        let t: Table<E> = Table::new(DEFAULT_EXPIRATION);
        t.maintain(Time::ZERO);
        fill(&t, 50, Time::ZERO);
        let t2 = Table::carry_over(&t, |e| (e.0 != v4(0x0a00_0007)).then(|| e.clone()));
        assert_eq!(t2.len(), 49);
        assert_eq!(t2.due.load(Ordering::Relaxed), 60_000);
        assert!(t2.read(&v4(0x0a00_0007), |_| ()).is_none());
        assert!(t2.read(&v4(0x0a00_0008), |_| ()).is_some());
    }

    #[test]
    fn lastuse_is_refreshed_at_most_once_a_second() {
        let l = AtomicU64::new(5_000);
        refresh(&l, Time::from_millis(5_999));
        assert_eq!(l.load(Ordering::Relaxed), 5_000);
        refresh(&l, Time::from_millis(6_000));
        assert_eq!(l.load(Ordering::Relaxed), 6_000);
        refresh(&l, Time::from_millis(1_000));
        assert_eq!(
            l.load(Ordering::Relaxed),
            6_000,
            "an earlier clock never moves it back"
        );
    }
}
