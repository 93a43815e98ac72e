//! Virtual services: their configuration, the runtime objects built from it, and the
//! [`ServiceTable`] that publishes whole rule sets as one atomic snapshot.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, Weak};

use arc_swap::{ArcSwap, Guard};

use crate::dest::{DestConfig, DestState, Destination};
use crate::sched::{self, FlowKey, Scheduler, SchedulerKind};
use crate::stats::Counters;
use crate::time::Time;

/// Transport protocol of a virtual service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// TCP (`-t`).
    Tcp,
    /// UDP (`-u`).
    Udp,
    /// SCTP (`--sctp-service`).
    Sctp,
}

impl Protocol {
    /// IANA protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
        }
    }

    /// The protocol with IANA number `n`, if lvs balances it.
    pub fn from_number(n: u8) -> Option<Protocol> {
        match n {
            6 => Some(Protocol::Tcp),
            17 => Some(Protocol::Udp),
            132 => Some(Protocol::Sctp),
            _ => None,
        }
    }

    /// The name ipvsadm prints ("TCP", "UDP", "SCTP").
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }
}

/// Address family of a firewall-mark service (`-6` selects IPv6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum AddrFamily {
    /// IPv4.
    #[default]
    Inet,
    /// IPv6.
    Inet6,
}

impl AddrFamily {
    /// The family of `addr`.
    pub fn of(addr: &IpAddr) -> AddrFamily {
        match addr {
            IpAddr::V4(_) => AddrFamily::Inet,
            IpAddr::V6(_) => AddrFamily::Inet6,
        }
    }
}

/// What identifies a virtual service: protocol + VIP + port, or a firewall mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServiceKey {
    /// `-t`, `-u` or `--sctp-service` VIP:port.
    Addr {
        /// Transport protocol.
        proto: Protocol,
        /// Virtual IP.
        addr: IpAddr,
        /// Virtual port (0 with persistence means "all ports").
        port: u16,
    },
    /// `-f mark` (with `-6` for IPv6).
    Fwmark {
        /// Firewall mark the caller classified the packet with.
        mark: u32,
        /// Address family of the service.
        family: AddrFamily,
    },
}

impl ServiceKey {
    /// Address family of the service.
    pub fn family(&self) -> AddrFamily {
        match self {
            ServiceKey::Addr { addr, .. } => AddrFamily::of(addr),
            ServiceKey::Fwmark { family, .. } => *family,
        }
    }
}

/// Scheduler flags (`-b`): the kernel's IP_VS_SVC_F_SCHED1..3, named per scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SchedFlags(pub u32);

impl SchedFlags {
    /// `flag-1`: `sh-fallback` / `mh-fallback` (kernel IP_VS_SVC_F_SCHED1, 0x0008).
    pub const FLAG1: SchedFlags = SchedFlags(0x0008);
    /// `flag-2`: `sh-port` / `mh-port` (kernel IP_VS_SVC_F_SCHED2, 0x0010).
    pub const FLAG2: SchedFlags = SchedFlags(0x0010);
    /// `flag-3` (kernel IP_VS_SVC_F_SCHED3, 0x0020).
    pub const FLAG3: SchedFlags = SchedFlags(0x0020);
    /// No flags.
    pub const NONE: SchedFlags = SchedFlags(0);

    /// True if every flag of `other` is set.
    pub fn contains(self, other: SchedFlags) -> bool {
        self.0 & other.0 == other.0 && other.0 != 0
    }

    /// Fallback to another destination when the hashed one is unavailable (sh, mh).
    pub fn fallback(self) -> bool {
        self.contains(Self::FLAG1)
    }

    /// Hash the source port too (sh, mh).
    pub fn port(self) -> bool {
        self.contains(Self::FLAG2)
    }
}

impl std::ops::BitOr for SchedFlags {
    type Output = SchedFlags;
    fn bitor(self, o: SchedFlags) -> SchedFlags {
        SchedFlags(self.0 | o.0)
    }
}

/// Persistence netmask (`-M`): an IPv4 netmask or an IPv6 prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PersistNetmask {
    /// IPv4 netmask, default 255.255.255.255.
    V4(Ipv4Addr),
    /// IPv6 prefix length, default 128.
    V6(u8),
}

impl PersistNetmask {
    /// ipvsadm's default for a service of family `family`.
    pub fn default_for(family: AddrFamily) -> PersistNetmask {
        match family {
            AddrFamily::Inet => PersistNetmask::V4(Ipv4Addr::BROADCAST),
            AddrFamily::Inet6 => PersistNetmask::V6(128),
        }
    }

    /// Masks a client address (the persistence template's key).
    pub fn apply(self, addr: IpAddr) -> IpAddr {
        match (self, addr) {
            (PersistNetmask::V4(m), IpAddr::V4(a)) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & u32::from(m))),
            (PersistNetmask::V6(plen), IpAddr::V6(a)) => {
                let bits = u128::from(a);
                let mask = if plen == 0 {
                    0
                } else {
                    u128::MAX << (128 - plen.min(128) as u32)
                };
                IpAddr::V6((bits & mask).into())
            }
            (_, other) => other,
        }
    }
}

/// Default persistence timeout of `ipvsadm -p` without a value, in seconds.
pub const DEFAULT_PERSISTENCE_TIMEOUT: u32 = 300;

/// Persistence settings (`-p [timeout] [-M netmask]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Persistence {
    /// Seconds a template outlives the client's last connection.
    pub timeout_secs: u32,
    /// Which part of the client address the template keys on.
    pub netmask: PersistNetmask,
}

/// Everything an operator configures for one virtual service, destinations included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConfig {
    /// Protocol + VIP + port, or firewall mark.
    pub key: ServiceKey,
    /// Scheduler (`-s`, default wlc).
    pub scheduler: SchedulerKind,
    /// Scheduler flags (`-b`).
    pub sched_flags: SchedFlags,
    /// Persistence (`-p`, `-M`), if any.
    pub persistence: Option<Persistence>,
    /// One-packet scheduling (`-o`, `--ops`): every UDP datagram scheduled on its own.
    pub one_packet: bool,
    /// Destinations in the kernel's list order: `-a` inserts at the front, so the most
    /// recently added destination comes first (this order drives rr, wrr and tie-breaks).
    pub dests: Vec<DestConfig>,
}

impl ServiceConfig {
    /// A service with ipvsadm's defaults: wlc, no flags, no persistence, no destinations.
    pub fn new(key: ServiceKey) -> ServiceConfig {
        ServiceConfig {
            key,
            scheduler: SchedulerKind::Wlc,
            sched_flags: SchedFlags::NONE,
            persistence: None,
            one_packet: false,
            dests: Vec::new(),
        }
    }

    /// Index of the destination `addr:port`, if configured.
    pub fn dest_index(&self, addr: IpAddr, port: u16) -> Option<usize> {
        self.dests.iter().position(|d| d.addr == addr && d.port == port)
    }
}

/// A virtual service as published in one snapshot: configuration, destinations with their
/// live state, its scheduler and its traffic counters.
pub struct VirtualService {
    /// The configuration this snapshot was built from.
    pub config: ServiceConfig,
    /// Destinations, same order as `config.dests`.
    pub dests: Vec<Destination>,
    /// The scheduler, built for exactly these destinations.
    pub scheduler: Box<dyn Scheduler>,
    /// Traffic counters, shared across snapshots while the service exists.
    pub stats: Arc<Counters>,
}

impl fmt::Debug for VirtualService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VirtualService")
            .field("key", &self.config.key)
            .field("scheduler", &self.config.scheduler)
            .field("dests", &self.dests.len())
            .finish()
    }
}

impl VirtualService {
    /// Picks a destination for a new connection of `flow`, or `None` when no destination is
    /// eligible (all quiesced, overloaded, or none configured).
    #[inline]
    pub fn schedule(&self, flow: &FlowKey, now: Time) -> Option<&Destination> {
        self.scheduler
            .schedule(&self.dests, flow, now)
            .map(|i| &self.dests[i])
    }

    /// The destination `addr:port`, if configured.
    pub fn dest(&self, addr: IpAddr, port: u16) -> Option<&Destination> {
        self.dests
            .iter()
            .find(|d| d.config.addr == addr && d.config.port == port)
    }
}

/// One published set of virtual services, indexed for the packet path.
#[derive(Default)]
pub struct ServiceSet {
    services: Vec<Arc<VirtualService>>,
    by_addr: HashMap<(Protocol, IpAddr, u16), usize, ahash::RandomState>,
    by_mark: HashMap<(u32, AddrFamily), usize, ahash::RandomState>,
    vips: std::collections::HashSet<IpAddr, ahash::RandomState>,
    by_dest_id: HashMap<u32, (u32, u32), ahash::RandomState>,
}

impl fmt::Debug for ServiceSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.services.iter()).finish()
    }
}

impl ServiceSet {
    /// Services in the order they were configured.
    pub fn services(&self) -> &[Arc<VirtualService>] {
        &self.services
    }

    /// The service for `proto` VIP:port; a persistent port-0 service on the VIP matches any
    /// port, as in the kernel.
    #[inline]
    pub fn lookup(&self, proto: Protocol, addr: IpAddr, port: u16) -> Option<&Arc<VirtualService>> {
        self.by_addr
            .get(&(proto, addr, port))
            .or_else(|| self.by_addr.get(&(proto, addr, 0)))
            .map(|&i| &self.services[i])
    }

    /// The service and destination whose [`DestState::id`] is `id` (how the packet path
    /// finds the counters of a connection's destination).
    #[inline]
    pub fn dest_by_id(&self, id: u32) -> Option<(&VirtualService, &Destination)> {
        let &(s, d) = self.by_dest_id.get(&id)?;
        let svc = self.services.get(s as usize)?;
        Some((svc, svc.dests.get(d as usize)?))
    }

    /// True when `addr` is the VIP of some protocol/address/port service.
    #[inline]
    pub fn is_vip(&self, addr: IpAddr) -> bool {
        self.vips.contains(&addr)
    }

    /// The firewall-mark service for `mark` in `family`.
    #[inline]
    pub fn lookup_fwmark(&self, mark: u32, family: AddrFamily) -> Option<&Arc<VirtualService>> {
        self.by_mark.get(&(mark, family)).map(|&i| &self.services[i])
    }

    /// The service with exactly this key.
    pub fn get(&self, key: &ServiceKey) -> Option<&Arc<VirtualService>> {
        match *key {
            ServiceKey::Addr { proto, addr, port } => self.by_addr.get(&(proto, addr, port)),
            ServiceKey::Fwmark { mark, family } => self.by_mark.get(&(mark, family)),
        }
        .map(|&i| &self.services[i])
    }

    /// The configurations this set was built from.
    pub fn configs(&self) -> Vec<ServiceConfig> {
        self.services.iter().map(|s| s.config.clone()).collect()
    }

    /// True when no service is configured.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }
}

/// Identity of a destination across snapshots: its service and its address and port.
type DestId = (ServiceKey, IpAddr, u16);

/// The published rule set: readers load the current [`ServiceSet`] without blocking; writers
/// build a complete new set and swap it in as one atomic step.
pub struct ServiceTable {
    current: ArcSwap<ServiceSet>,
    /// Destinations removed from the rules whose state is still held by live connections
    /// (the kernel's destination trash): re-adding one revives its counters.
    trash: Mutex<HashMap<DestId, Weak<DestState>>>,
}

impl fmt::Debug for ServiceTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceTable")
            .field("services", &self.current.load().services.len())
            .finish()
    }
}

impl Default for ServiceTable {
    fn default() -> Self {
        ServiceTable::new()
    }
}

impl ServiceTable {
    /// An empty table.
    pub fn new() -> ServiceTable {
        ServiceTable {
            current: ArcSwap::from_pointee(ServiceSet::default()),
            trash: Mutex::new(HashMap::new()),
        }
    }

    /// The current snapshot, cheap enough for every packet (no lock, no allocation).
    #[inline]
    pub fn load(&self) -> Guard<Arc<ServiceSet>> {
        self.current.load()
    }

    /// The swap cell itself, for a per-worker `arc_swap::Cache` (a packet worker checks one
    /// pointer per packet instead of a full load). Publish only through [`publish`](Self::publish).
    #[inline]
    pub fn current(&self) -> &ArcSwap<ServiceSet> {
        &self.current
    }

    /// The current snapshot as an owned `Arc`, for holding across calls.
    pub fn snapshot(&self) -> Arc<ServiceSet> {
        self.current.load_full()
    }

    /// Builds a new snapshot from `configs` and publishes it atomically. Services and
    /// destinations that already existed keep their counters and live state; a scheduler of
    /// the same kind may carry its state over. Writers are serialised by the caller (the
    /// control plane owns one writer).
    pub fn publish(&self, configs: &[ServiceConfig]) -> Arc<ServiceSet> {
        let old = self.current.load_full();
        let mut trash = self.trash.lock().unwrap_or_else(|e| e.into_inner());
        let mut set = ServiceSet::default();
        for cfg in configs {
            let prev = old.get(&cfg.key);
            let dests: Vec<Destination> = cfg
                .dests
                .iter()
                .map(|dc| {
                    let id = (cfg.key, dc.addr, dc.port);
                    let state = prev
                        .and_then(|p| p.dest(dc.addr, dc.port))
                        .map(|d| d.state.clone())
                        .or_else(|| trash.remove(&id).and_then(|w| w.upgrade()));
                    match state {
                        Some(state) => {
                            state.set_thresholds(dc.upper_threshold, dc.lower_threshold);
                            Destination {
                                config: dc.clone(),
                                state,
                            }
                        }
                        None => Destination::new(dc.clone()),
                    }
                })
                .collect();
            let prev_sched = prev
                .filter(|p| p.config.scheduler == cfg.scheduler)
                .map(|p| p.scheduler.as_ref());
            let scheduler = sched::build(cfg.scheduler, &dests, cfg.sched_flags, prev_sched);
            let stats = prev.map(|p| p.stats.clone()).unwrap_or_default();
            let idx = set.services.len();
            match cfg.key {
                ServiceKey::Addr { proto, addr, port } => {
                    set.by_addr.insert((proto, addr, port), idx);
                    set.vips.insert(addr);
                }
                ServiceKey::Fwmark { mark, family } => {
                    set.by_mark.insert((mark, family), idx);
                }
            }
            for (di, d) in dests.iter().enumerate() {
                set.by_dest_id.insert(d.state.id(), (idx as u32, di as u32));
            }
            set.services.push(Arc::new(VirtualService {
                config: cfg.clone(),
                dests,
                scheduler,
                stats,
            }));
        }
        // Destinations that left the rules go to the trash while connections hold them.
        for svc in old.services() {
            for d in &svc.dests {
                let still = set
                    .get(&svc.config.key)
                    .and_then(|s| s.dest(d.config.addr, d.config.port))
                    .is_some();
                if !still {
                    d.state.set_listener(None);
                    trash.insert(
                        (svc.config.key, d.config.addr, d.config.port),
                        Arc::downgrade(&d.state),
                    );
                }
            }
        }
        trash.retain(|_, w| w.strong_count() > 0);
        let set = Arc::new(set);
        self.current.store(set.clone());
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dest::ConnClass;

    fn tcp(addr: [u8; 4], port: u16) -> ServiceKey {
        ServiceKey::Addr {
            proto: Protocol::Tcp,
            addr: IpAddr::from(addr),
            port,
        }
    }

    #[test]
    fn publish_keeps_dest_state_across_edits_and_revives_from_trash() {
        let table = ServiceTable::new();
        let mut cfg = ServiceConfig::new(tcp([10, 0, 0, 1], 80));
        cfg.dests.push(DestConfig::new([10, 0, 1, 1].into(), 80));
        let set = table.publish(std::slice::from_ref(&cfg));
        let state = set.services()[0].dests[0].state.clone();
        let (svc, d) = set.dest_by_id(state.id()).expect("dest found by id");
        assert_eq!((svc.config.key, d.config.addr), (cfg.key, cfg.dests[0].addr));
        assert!(set.dest_by_id(state.id() + 1000).is_none());
        state.bind(ConnClass::Active);

        cfg.dests[0].weight = 5;
        let set = table.publish(std::slice::from_ref(&cfg));
        assert_eq!(
            set.services()[0].dests[0].state.active_conns(),
            1,
            "edit keeps counters"
        );
        assert_eq!(set.services()[0].dests[0].config.weight, 5);

        let mut removed = cfg.clone();
        removed.dests.clear();
        table.publish(&[removed]);
        let set = table.publish(std::slice::from_ref(&cfg));
        assert!(
            Arc::ptr_eq(&set.services()[0].dests[0].state, &state),
            "re-added dest revived"
        );
    }

    #[test]
    fn readers_see_each_publish_all_or_nothing() {
        // Two rule sets that differ in every service and weight; a reader that ever saw a mix
        // (some services or weights from one set, some from the other) would fail.
        let make = |generation: u32| -> Vec<ServiceConfig> {
            (0..4u8)
                .map(|i| {
                    let mut c = ServiceConfig::new(tcp([10, 0, 0, i], 80));
                    for j in 0..3u8 {
                        let mut d = DestConfig::new([10, 0, 1, j].into(), 80);
                        d.weight = generation;
                        c.dests.insert(0, d);
                    }
                    c
                })
                .collect()
        };
        let table = Arc::new(ServiceTable::new());
        table.publish(&make(1));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (table, stop) = (table.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut seen = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let set = table.load();
                    let weights: Vec<u32> = set
                        .services()
                        .iter()
                        .flat_map(|s| s.dests.iter().map(|d| d.config.weight))
                        .collect();
                    assert_eq!(weights.len(), 12, "a snapshot always holds all services");
                    assert!(
                        weights.iter().all(|&w| w == weights[0]),
                        "mixed snapshot: {weights:?}"
                    );
                    seen += 1;
                }
                seen
            })
        };
        for round in 0..2000u32 {
            table.publish(&make(1 + round % 2));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(reader.join().unwrap() > 0);
    }

    #[test]
    fn lookup_falls_back_to_port_zero_service() {
        let table = ServiceTable::new();
        let set = table.publish(&[ServiceConfig::new(tcp([10, 0, 0, 1], 0))]);
        assert!(set.is_vip([10, 0, 0, 1].into()));
        assert!(!set.is_vip([10, 0, 0, 2].into()));
        assert!(set.lookup(Protocol::Tcp, [10, 0, 0, 1].into(), 443).is_some());
        assert!(set.lookup(Protocol::Udp, [10, 0, 0, 1].into(), 443).is_none());
    }

    #[test]
    fn persistence_netmask_masks_v4_and_v6() {
        let m = PersistNetmask::V4(Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(m.apply([10, 1, 2, 3].into()), IpAddr::from([10, 1, 2, 0]));
        let m6 = PersistNetmask::V6(64);
        let a: IpAddr = "2001:db8:1:2:3:4:5:6".parse().unwrap();
        assert_eq!(m6.apply(a), "2001:db8:1:2::".parse::<IpAddr>().unwrap());
    }
}
