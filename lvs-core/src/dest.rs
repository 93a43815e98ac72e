//! Destinations (real servers): their configuration, their live connection counters and the
//! kernel's OVERLOAD rule for upper/lower connection thresholds.

use std::cell::RefCell;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use arc_swap::ArcSwapOption;

use crate::stats::Counters;
use crate::time::Time;

/// Receives word that a destination's load changed (counters, OVERLOAD, ramp), so that a
/// scheduler can keep an index (e.g. a tournament tree for wlc) instead of scanning.
pub trait LoadListener: Send + Sync {
    /// Destination number `slot` of the listener's service changed its load.
    fn load_changed(&self, slot: usize);
}

/// A registered [`LoadListener`] and the destination's position in its service.
pub struct ListenerSlot {
    /// The scheduler (or other index) to tell.
    pub listener: Arc<dyn LoadListener>,
    /// The destination's index in the service's destination list.
    pub slot: usize,
}

impl fmt::Debug for ListenerSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListenerSlot").field("slot", &self.slot).finish()
    }
}

/// How packets reach a destination (ipvsadm `-m`, `-g`, `-i`, `--fullnat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ForwardMethod {
    /// NAT (`-m`, ipvsadm's "Masq"): destination address and port rewritten.
    Masq,
    /// Direct routing (`-g`, ipvsadm's "Route", the default): only MAC addresses rewritten.
    #[default]
    DirectRoute,
    /// IP-in-IP tunnelling (`-i`, ipvsadm's "Tunnel").
    Tunnel,
    /// FULLNAT (`--fullnat`, DPVS's "FullNat"): source and destination rewritten.
    FullNat,
}

impl ForwardMethod {
    /// The word ipvsadm prints in the `Forward` column of `-L`.
    pub fn listing_name(self) -> &'static str {
        match self {
            ForwardMethod::Masq => "Masq",
            ForwardMethod::DirectRoute => "Route",
            ForwardMethod::Tunnel => "Tunnel",
            ForwardMethod::FullNat => "FullNat",
        }
    }

    /// The option ipvsadm prints for this method in `-S` save output. FULLNAT saves as
    /// `--fullnat`: in stock ipvsadm `-b` means scheduler flags, so DPVS's `-b` would not
    /// restore.
    pub fn save_flag(self) -> &'static str {
        match self {
            ForwardMethod::Masq => "-m",
            ForwardMethod::DirectRoute => "-g",
            ForwardMethod::Tunnel => "-i",
            ForwardMethod::FullNat => "--fullnat",
        }
    }
}

/// Largest weight ipvsadm accepts.
pub const MAX_WEIGHT: u32 = 65535;

/// What an operator configures for one destination of a virtual service.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DestConfig {
    /// Real server address (same family as the service, except for fwmark services).
    pub addr: IpAddr,
    /// Real server port; 0 for fwmark services means "the packet's own port".
    pub port: u16,
    /// Weight 0..=65535; 0 quiesces the server (no new connections, existing ones continue).
    pub weight: u32,
    /// Forwarding method.
    pub method: ForwardMethod,
    /// Upper connection threshold (`-x`); 0 means none.
    pub upper_threshold: u32,
    /// Lower connection threshold (`-y`); 0 means none.
    pub lower_threshold: u32,
}

impl DestConfig {
    /// A destination with ipvsadm's defaults: weight 1, direct routing, no thresholds.
    pub fn new(addr: IpAddr, port: u16) -> DestConfig {
        DestConfig {
            addr,
            port,
            weight: 1,
            method: ForwardMethod::DirectRoute,
            upper_threshold: 0,
            lower_threshold: 0,
        }
    }
}

static NEXT_DEST_ID: AtomicU32 = AtomicU32::new(1);

/// Registration numbers of load listeners (0 means "none registered").
static NEXT_LISTENER_GEN: AtomicU64 = AtomicU64::new(1);

/// Entries of the per-thread listener cache (see [`DestState::notify`]).
const LISTENER_CACHE: usize = 256;

/// A per-thread cache entry: a registration number and the listener registered with it.
type CachedListener = (u64, Option<Arc<ListenerSlot>>);

thread_local! {
    /// The listeners this thread notified recently, by registration number.
    static LISTENERS: RefCell<[CachedListener; LISTENER_CACHE]> =
        const { RefCell::new([const { (0, None) }; LISTENER_CACHE]) };
}
/// Bits of a destination id (what a connection entry has room for).
pub const DEST_ID_MASK: u32 = (1 << 27) - 1;

/// Scale of [`DestState::ramp`]: this value means "full weight".
pub const RAMP_FULL: u32 = 1024;

/// Live state of a destination, shared by every published snapshot that contains it and by
/// every connection bound to it: connection counters, the OVERLOAD flag, the slow-start ramp
/// and traffic counters. All fields are atomics, safe to update from any thread.
pub struct DestState {
    id: u32,
    active: AtomicU32,
    inactive: AtomicU32,
    persistent: AtomicU32,
    overloaded: AtomicBool,
    upper_threshold: AtomicU32,
    lower_threshold: AtomicU32,
    ramp: AtomicU32,
    /// Start of the current slow-start ramp in ms + 1; 0 while not ramping.
    ramp_start: AtomicU64,
    listener: ArcSwapOption<ListenerSlot>,
    /// Registration number of `listener` (process-wide unique, from [`NEXT_LISTENER_GEN`]);
    /// 0 while none is registered. [`notify`](Self::notify) finds the listener in a
    /// per-thread cache by this number instead of loading `listener`.
    listener_gen: AtomicU64,
    /// Packet, byte and connection counters for `--stats` / `--rate`.
    pub stats: Counters,
}

impl fmt::Debug for DestState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DestState")
            .field("active", &self.active_conns())
            .field("inactive", &self.inactive_conns())
            .field("persistent", &self.persistent_conns())
            .field("overloaded", &self.is_overloaded())
            .field("ramp", &self.ramp())
            .finish()
    }
}

/// Which counter a connection is accounted in (the kernel's activeconns / inactconns /
/// persistconns).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnClass {
    /// An ESTABLISHED connection.
    Active,
    /// A connection in any other state (and every UDP connection).
    Inactive,
    /// A persistence template.
    Template,
}

impl DestState {
    /// Fresh state: no connections, not overloaded, full weight.
    pub fn new(upper_threshold: u32, lower_threshold: u32) -> DestState {
        DestState {
            id: NEXT_DEST_ID.fetch_add(1, Ordering::Relaxed) & DEST_ID_MASK,
            active: AtomicU32::new(0),
            inactive: AtomicU32::new(0),
            persistent: AtomicU32::new(0),
            overloaded: AtomicBool::new(false),
            upper_threshold: AtomicU32::new(upper_threshold),
            lower_threshold: AtomicU32::new(lower_threshold),
            ramp: AtomicU32::new(RAMP_FULL),
            ramp_start: AtomicU64::new(0),
            listener: ArcSwapOption::empty(),
            listener_gen: AtomicU64::new(0),
            stats: Counters::default(),
        }
    }

    /// Process-wide id of this destination state (27 bits, wrapping): connections carry it,
    /// and a published [`ServiceSet`](crate::service::ServiceSet) maps it back.
    #[inline]
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Active (ESTABLISHED) connections.
    #[inline]
    pub fn active_conns(&self) -> u32 {
        self.active.load(Ordering::Relaxed)
    }

    /// Inactive connections.
    #[inline]
    pub fn inactive_conns(&self) -> u32 {
        self.inactive.load(Ordering::Relaxed)
    }

    /// Persistence templates pointing at this destination.
    #[inline]
    pub fn persistent_conns(&self) -> u32 {
        self.persistent.load(Ordering::Relaxed)
    }

    /// The kernel's `ip_vs_dest_totalconns`: active + inactive (templates not included).
    #[inline]
    pub fn total_conns(&self) -> u32 {
        self.active_conns().saturating_add(self.inactive_conns())
    }

    /// The kernel's load figure for lc/wlc: active × 256 + inactive.
    #[inline]
    pub fn overhead(&self) -> u64 {
        ((self.active_conns() as u64) << 8) + self.inactive_conns() as u64
    }

    /// True while the upper threshold has been reached and the lower one not yet re-crossed.
    #[inline]
    pub fn is_overloaded(&self) -> bool {
        self.overloaded.load(Ordering::Relaxed)
    }

    /// Slow-start ramp, 0..=[`RAMP_FULL`].
    #[inline]
    pub fn ramp(&self) -> u32 {
        self.ramp.load(Ordering::Relaxed)
    }

    /// Sets the slow-start ramp (clamped to [`RAMP_FULL`]).
    pub fn set_ramp(&self, ramp: u32) {
        self.ramp.store(ramp.min(RAMP_FULL), Ordering::Relaxed);
        self.notify();
    }

    /// When the current slow-start ramp began, `None` while not ramping.
    #[inline]
    pub fn ramp_start(&self) -> Option<Time> {
        match self.ramp_start.load(Ordering::Relaxed) {
            0 => None,
            t => Some(Time::from_millis(t - 1)),
        }
    }

    /// Records (or with `None` clears) the start of a slow-start ramp; see `sched::SlowStart`.
    pub fn set_ramp_start(&self, start: Option<Time>) {
        let v = start.map_or(0, |t| t.as_millis().saturating_add(1));
        self.ramp_start.store(v, Ordering::Relaxed);
    }

    /// Registers (or with `None` removes) the listener told about load changes.
    pub fn set_listener(&self, listener: Option<ListenerSlot>) {
        // 0 without a listener: notifications return at once.
        let reg = match listener {
            Some(_) => NEXT_LISTENER_GEN.fetch_add(1, Ordering::Relaxed),
            None => 0,
        };
        self.listener.store(listener.map(Arc::new));
        // After the store: a notifier that reads the new number loads the new listener.
        // SeqCst pairs with the load in `notify`, so that either a concurrent notification
        // reaches the new listener or the new listener's own reading of the counters (made
        // after registering) sees the change.
        self.listener_gen.store(reg, Ordering::SeqCst);
    }

    /// True while a load listener is registered (a scheduler keeping an index of this
    /// destination's service): its load changes are then notified, otherwise they cost
    /// nothing beyond the counters.
    #[inline]
    pub fn has_listener(&self) -> bool {
        self.listener_gen.load(Ordering::SeqCst) != 0
    }

    /// Tells the registered listener, if any, that this destination's load changed.
    ///
    /// The listener comes from a small per-thread cache keyed by its registration number,
    /// so a notification costs no arc-swap load while the registration stands (it changes
    /// only when a new service snapshot is published). A cache entry holds its listener
    /// until the entry is reused by another registration on that thread.
    #[inline]
    pub fn notify(&self) {
        // Without a listener (a scheduler that scans, or none keeping an index) this check
        // is all a load change costs.
        let reg = self.listener_gen.load(Ordering::SeqCst);
        if reg != 0 {
            self.notify_listener(reg);
        }
    }

    /// [`notify`](Self::notify) when listener registration `reg` stands.
    #[inline(never)]
    fn notify_listener(&self, reg: u64) {
        let cached = LISTENERS.try_with(|cache| {
            let Ok(mut cache) = cache.try_borrow_mut() else {
                // A listener notifying from inside a notification: take the slow path.
                return false;
            };
            let e = &mut cache[reg as usize % LISTENER_CACHE];
            if e.0 != reg {
                *e = (reg, self.listener.load_full());
            }
            if let Some(l) = &e.1 {
                l.listener.load_changed(l.slot);
            }
            true
        });
        if cached != Ok(true)
            && let Some(l) = self.listener.load().as_ref()
        {
            l.listener.load_changed(l.slot);
        }
    }

    /// Installs new thresholds as `ipvsadm -e -x -y` does: raising or clearing the upper
    /// threshold lifts OVERLOAD at once.
    pub fn set_thresholds(&self, upper: u32, lower: u32) {
        let old_upper = self.upper_threshold.swap(upper, Ordering::Relaxed);
        self.lower_threshold.store(lower, Ordering::Relaxed);
        if upper == 0 || upper > old_upper {
            self.overloaded.store(false, Ordering::Relaxed);
        }
        self.notify();
    }

    /// Accounts a new connection (the kernel's `ip_vs_bind_dest`) and sets OVERLOAD when the
    /// upper threshold is reached.
    pub fn bind(&self, class: ConnClass) {
        match class {
            ConnClass::Active => self.active.fetch_add(1, Ordering::Relaxed),
            ConnClass::Inactive => self.inactive.fetch_add(1, Ordering::Relaxed),
            ConnClass::Template => self.persistent.fetch_add(1, Ordering::Relaxed),
        };
        let upper = self.upper_threshold.load(Ordering::Relaxed);
        if upper != 0 && self.total_conns() >= upper {
            self.overloaded.store(true, Ordering::Relaxed);
        }
        self.notify();
    }

    /// Releases a connection (the kernel's `ip_vs_unbind_dest`) and clears OVERLOAD by the
    /// kernel's rule: below the lower threshold if set, else below 3/4 of the upper one.
    pub fn unbind(&self, class: ConnClass) {
        let counter = match class {
            ConnClass::Active => &self.active,
            ConnClass::Inactive => &self.inactive,
            ConnClass::Template => &self.persistent,
        };
        // Saturating decrement: a double release must not wrap the counter.
        let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1));
        self.update_overload_after_release();
        self.notify();
    }

    /// Moves one connection between the active and inactive counters (a TCP state change
    /// into or out of ESTABLISHED).
    pub fn reclassify(&self, from: ConnClass, to: ConnClass) {
        if from == to {
            return;
        }
        self.bind_counter_only(to);
        self.unbind_counter_only(from);
        self.notify();
    }

    fn bind_counter_only(&self, class: ConnClass) {
        match class {
            ConnClass::Active => self.active.fetch_add(1, Ordering::Relaxed),
            ConnClass::Inactive => self.inactive.fetch_add(1, Ordering::Relaxed),
            ConnClass::Template => self.persistent.fetch_add(1, Ordering::Relaxed),
        };
    }

    fn unbind_counter_only(&self, class: ConnClass) {
        let counter = match class {
            ConnClass::Active => &self.active,
            ConnClass::Inactive => &self.inactive,
            ConnClass::Template => &self.persistent,
        };
        let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1));
    }

    fn update_overload_after_release(&self) {
        if !self.is_overloaded() {
            return;
        }
        let total = self.total_conns() as u64;
        let lower = self.lower_threshold.load(Ordering::Relaxed) as u64;
        let upper = self.upper_threshold.load(Ordering::Relaxed) as u64;
        let clear = if lower != 0 {
            total < lower
        } else if upper != 0 {
            total * 4 < upper * 3
        } else {
            true
        };
        if clear {
            self.overloaded.store(false, Ordering::Relaxed);
        }
    }
}

/// A destination as published in one snapshot: its configuration (immutable in that
/// snapshot) and a handle to its live state (shared across snapshots and connections).
#[derive(Debug, Clone)]
pub struct Destination {
    /// What the operator configured.
    pub config: DestConfig,
    /// Live counters, shared with connections bound to this destination.
    pub state: Arc<DestState>,
}

impl Destination {
    /// A destination with fresh state.
    pub fn new(config: DestConfig) -> Destination {
        let state = Arc::new(DestState::new(config.upper_threshold, config.lower_threshold));
        Destination { config, state }
    }

    /// Effective weight used by schedulers: the configured weight scaled by the slow-start
    /// ramp (never below 1 while the configured weight is positive).
    #[inline]
    pub fn weight(&self) -> u32 {
        let w = self.config.weight;
        let ramp = self.state.ramp();
        if ramp >= RAMP_FULL || w == 0 {
            w
        } else {
            ((w as u64 * ramp as u64) / RAMP_FULL as u64).max(1) as u32
        }
    }

    /// True when a scheduler may pick it: weight above 0 and not OVERLOADED.
    #[inline]
    pub fn is_eligible(&self) -> bool {
        self.config.weight > 0 && !self.state.is_overloaded()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overload_sets_at_upper_and_clears_below_three_quarters() {
        let s = DestState::new(4, 0);
        for _ in 0..3 {
            s.bind(ConnClass::Active);
        }
        assert!(!s.is_overloaded());
        s.bind(ConnClass::Inactive);
        assert!(s.is_overloaded(), "4 conns reach upper threshold 4");
        s.unbind(ConnClass::Active); // 3: 3*4=12 < 4*3=12 is false
        assert!(s.is_overloaded());
        s.unbind(ConnClass::Active); // 2: 8 < 12
        assert!(!s.is_overloaded());
    }

    #[test]
    fn overload_clears_below_lower_threshold_when_set() {
        let s = DestState::new(4, 2);
        for _ in 0..4 {
            s.bind(ConnClass::Active);
        }
        assert!(s.is_overloaded());
        s.unbind(ConnClass::Active);
        s.unbind(ConnClass::Active); // 2, not < 2
        assert!(s.is_overloaded());
        s.unbind(ConnClass::Active); // 1 < 2
        assert!(!s.is_overloaded());
    }

    #[test]
    fn load_changes_reach_the_listener_registered_at_the_time() {
        #[derive(Default)]
        struct Count(AtomicU32, AtomicU32);
        impl LoadListener for Count {
            fn load_changed(&self, slot: usize) {
                self.0.fetch_add(1, Ordering::Relaxed);
                self.1.store(slot as u32, Ordering::Relaxed);
            }
        }
        let seen = |c: &Count| (c.0.load(Ordering::Relaxed), c.1.load(Ordering::Relaxed));
        let s = DestState::new(0, 0);
        // No listener yet: nothing to tell, nothing breaks.
        s.bind(ConnClass::Inactive);
        let a = Arc::new(Count::default());
        s.set_listener(Some(ListenerSlot {
            listener: a.clone(),
            slot: 3,
        }));
        s.bind(ConnClass::Active);
        s.reclassify(ConnClass::Active, ConnClass::Inactive);
        s.unbind(ConnClass::Inactive);
        s.set_ramp(512);
        s.set_thresholds(5, 1);
        assert_eq!(seen(&a), (5, 3));
        // Removed: no more calls; registered again (another index): calls resume there.
        s.set_listener(None);
        s.bind(ConnClass::Inactive);
        assert_eq!(seen(&a), (5, 3));
        let b = Arc::new(Count::default());
        s.set_listener(Some(ListenerSlot {
            listener: b.clone(),
            slot: 7,
        }));
        s.unbind(ConnClass::Inactive);
        assert_eq!((seen(&a), seen(&b)), ((5, 3), (1, 7)));
    }

    #[test]
    fn templates_do_not_count_towards_thresholds() {
        let s = DestState::new(1, 0);
        s.bind(ConnClass::Template);
        assert!(!s.is_overloaded());
        assert_eq!(s.persistent_conns(), 1);
    }

    #[test]
    fn raising_upper_threshold_lifts_overload() {
        let s = DestState::new(1, 0);
        s.bind(ConnClass::Active);
        assert!(s.is_overloaded());
        s.set_thresholds(10, 0);
        assert!(!s.is_overloaded());
    }

    #[test]
    fn ramp_scales_weight_but_keeps_it_positive() {
        let d = Destination::new(DestConfig {
            weight: 100,
            ..DestConfig::new([10, 0, 0, 1].into(), 80)
        });
        d.state.set_ramp(RAMP_FULL / 4);
        assert_eq!(d.weight(), 25);
        d.state.set_ramp(0);
        assert_eq!(d.weight(), 1);
        d.state.set_ramp(RAMP_FULL);
        assert_eq!(d.weight(), 100);
    }
}
