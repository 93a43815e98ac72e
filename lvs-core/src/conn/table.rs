//! The table itself: arena of atomic entries, the two indexes, free list, insert, lookup,
//! state updates, removal, templates and housekeeping.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering, fence};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_utils::CachePadded;

use super::index::{BUCKET_BYTES, Index};
use super::list::ConnInfo;
use super::state::{ConnState, Direction, TableDir, TcpFlags, Timeouts, tcp_next};
use super::wheel::{TICK_MS, Wheel};
use crate::dest::{ConnClass, DestState, Destination, ForwardMethod};
use crate::service::{AddrFamily, PersistNetmask, Protocol};
use crate::time::Time;

// ---- control word layout -------------------------------------------------------------
const GEN_SHIFT: u32 = 40;
const GEN_ONE: u64 = 1 << GEN_SHIFT;
const STATE_SHIFT: u32 = 36;
const STATE_MASK: u64 = 0xf << STATE_SHIFT;
const METHOD_SHIFT: u32 = 34;
const METHOD_MASK: u64 = 0x3 << METHOD_SHIFT;
const TEMPLATE: u64 = 1 << 33;
const AF6: u64 = 1 << 32;
const PROTO_SHIFT: u32 = 30;
const PROTO_MASK: u64 = 0x3 << PROTO_SHIFT;
const NOOUTPUT: u64 = 1 << 29;
const BUSY: u64 = 1 << 28;
const HAS_OUT: u64 = 1 << 27;
const NCTL_MASK: u64 = (1 << 27) - 1;
const KEY_MASK: u64 = TEMPLATE | AF6 | PROTO_MASK;

#[inline]
fn gen_of(ctl: u64) -> u32 {
    (ctl >> GEN_SHIFT) as u32
}
#[inline]
fn is_live(ctl: u64) -> bool {
    gen_of(ctl) & 1 == 0
}
#[inline]
fn state_of(ctl: u64) -> ConnState {
    ConnState::from_u8(((ctl & STATE_MASK) >> STATE_SHIFT) as u8)
}
#[inline]
fn with_state(ctl: u64, s: ConnState) -> u64 {
    (ctl & !STATE_MASK) | ((s as u64) << STATE_SHIFT)
}
#[inline]
fn method_of(ctl: u64) -> ForwardMethod {
    match (ctl & METHOD_MASK) >> METHOD_SHIFT {
        0 => ForwardMethod::Masq,
        1 => ForwardMethod::DirectRoute,
        2 => ForwardMethod::Tunnel,
        _ => ForwardMethod::FullNat,
    }
}
#[inline]
fn method_bits(m: ForwardMethod) -> u64 {
    let v = match m {
        ForwardMethod::Masq => 0,
        ForwardMethod::DirectRoute => 1,
        ForwardMethod::Tunnel => 2,
        ForwardMethod::FullNat => 3,
    };
    v << METHOD_SHIFT
}
#[inline]
fn proto_bits(p: Option<Protocol>) -> u64 {
    let v = match p {
        None => 0,
        Some(Protocol::Tcp) => 1,
        Some(Protocol::Udp) => 2,
        Some(Protocol::Sctp) => 3,
    };
    v << PROTO_SHIFT
}
#[inline]
fn proto_of(ctl: u64) -> Option<Protocol> {
    match (ctl & PROTO_MASK) >> PROTO_SHIFT {
        1 => Some(Protocol::Tcp),
        2 => Some(Protocol::Udp),
        3 => Some(Protocol::Sctp),
        _ => None,
    }
}
#[inline]
fn class_of(ctl: u64) -> ConnClass {
    if ctl & TEMPLATE != 0 {
        ConnClass::Template
    } else if state_of(ctl).is_active() {
        ConnClass::Active
    } else {
        ConnClass::Inactive
    }
}

// ---- addresses and hashing -----------------------------------------------------------
/// An address as two words (IPv4 as its IPv4-mapped IPv6 form) and whether it is IPv6.
#[inline]
fn addr_words(a: IpAddr) -> ([u64; 2], bool) {
    let (v, six) = match a {
        IpAddr::V4(v4) => (0xffff_0000_0000u128 | u32::from(v4) as u128, false),
        IpAddr::V6(v6) => (u128::from(v6), true),
    };
    ([(v >> 64) as u64, v as u64], six)
}

#[inline]
fn words_addr(w: [u64; 2], six: bool) -> IpAddr {
    if six {
        IpAddr::V6(Ipv6Addr::from(((w[0] as u128) << 64) | w[1] as u128))
    } else {
        IpAddr::V4(Ipv4Addr::from(w[1] as u32))
    }
}

#[inline]
fn fold(a: u64, b: u64) -> u64 {
    let m = (a as u128).wrapping_mul(b as u128);
    (m as u64) ^ ((m >> 64) as u64)
}

const K: [u64; 6] = [
    0x243f_6a88_85a3_08d3,
    0x1319_8a2e_0370_7344,
    0xa409_3822_299f_31d0,
    0x082e_fa98_ec4e_6c89,
    0x4528_21e6_38d0_1377,
    0xbe54_66cf_34e9_0c6c,
];

#[inline]
fn hash5(seed: u64, a: [u64; 2], b: [u64; 2], w: u64) -> u64 {
    let x = fold(a[0] ^ seed ^ K[0], a[1] ^ K[1]);
    let y = fold(b[0] ^ K[2], b[1] ^ seed.rotate_left(29) ^ K[3]);
    fold(x ^ w ^ K[4], y ^ K[5])
}

// ---- public key and handle types -----------------------------------------------------
/// Client-side key: what a client's packet carries (proto, CIP:cport → VIP:vport). For a
/// fwmark service it is still the packet's own tuple.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnKeyIn {
    /// Transport protocol.
    pub proto: Protocol,
    /// Client address.
    pub caddr: IpAddr,
    /// Client port.
    pub cport: u16,
    /// Virtual (destination) address of the packet.
    pub vaddr: IpAddr,
    /// Virtual port.
    pub vport: u16,
}

impl ConnKeyIn {
    /// The key of a packet from `client` to `virt`.
    pub fn new(proto: Protocol, client: SocketAddr, virt: SocketAddr) -> ConnKeyIn {
        ConnKeyIn {
            proto,
            caddr: client.ip(),
            cport: client.port(),
            vaddr: virt.ip(),
            vport: virt.port(),
        }
    }
}

/// Server-side key: what a real server's reply carries (proto, RIP:rport → CIP:cport for
/// NAT, RIP:rport → LIP:lport for FULLNAT).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnKeyOut {
    /// Transport protocol.
    pub proto: Protocol,
    /// Real server address (the reply's source).
    pub daddr: IpAddr,
    /// Real server port.
    pub dport: u16,
    /// The reply's destination: the client address (NAT) or the local address (FULLNAT).
    pub addr: IpAddr,
    /// The reply's destination port.
    pub port: u16,
}

impl ConnKeyOut {
    /// The key of a reply from `server` to `to`.
    pub fn new(proto: Protocol, server: SocketAddr, to: SocketAddr) -> ConnKeyOut {
        ConnKeyOut {
            proto,
            daddr: server.ip(),
            dport: server.port(),
            addr: to.ip(),
            port: to.port(),
        }
    }
}

/// Everything needed to add a connection after scheduling.
#[derive(Debug, Clone)]
pub struct NewConn<'a> {
    /// Client-side key of the first packet.
    pub key: ConnKeyIn,
    /// Forwarding method of the chosen destination.
    pub method: ForwardMethod,
    /// Real server address and port (port = the packet's own for a port-0 destination).
    pub dest_addr: SocketAddr,
    /// FULLNAT's local address and port (the reply comes back to it); `None` otherwise.
    pub local: Option<SocketAddr>,
    /// The destination's live state, whose counters this connection is accounted in.
    pub dest: &'a Arc<DestState>,
    /// The persistence template this connection was scheduled through, if any: it stays
    /// alive at least as long as this connection.
    pub template: Option<TemplateRef>,
}

impl<'a> NewConn<'a> {
    /// A connection without FULLNAT local address nor template.
    pub fn new(
        key: ConnKeyIn,
        method: ForwardMethod,
        dest_addr: SocketAddr,
        dest: &'a Arc<DestState>,
    ) -> Self {
        NewConn {
            key,
            method,
            dest_addr,
            local: None,
            dest,
            template: None,
        }
    }
}

/// The table is at its capacity (and no SYN_RECV entry could be reclaimed): the new
/// connection is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("connection table full")]
pub struct TableFull;

/// A found connection: its slot, its generation and a copy of what the packet path needs,
/// taken consistently at lookup. Operations through a stale `ConnRef` (the connection died
/// since) do nothing and return `None`/`false`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnRef {
    idx: u32,
    gen_: u32,
    ctl: u64,
    ports: u64,
    caddr: [u64; 2],
    vaddr: [u64; 2],
    daddr: [u64; 2],
    laddr: [u64; 2],
}

impl ConnRef {
    #[inline]
    fn six(&self) -> bool {
        self.ctl & AF6 != 0
    }
    /// Transport protocol.
    pub fn proto(&self) -> Protocol {
        proto_of(self.ctl).unwrap_or(Protocol::Tcp)
    }
    /// Forwarding method.
    pub fn method(&self) -> ForwardMethod {
        method_of(self.ctl)
    }
    /// State when looked up.
    pub fn state(&self) -> ConnState {
        state_of(self.ctl)
    }
    /// Client address and port.
    pub fn client(&self) -> SocketAddr {
        SocketAddr::new(words_addr(self.caddr, self.six()), self.ports as u16)
    }
    /// Virtual address and port.
    pub fn virt(&self) -> SocketAddr {
        SocketAddr::new(words_addr(self.vaddr, self.six()), (self.ports >> 16) as u16)
    }
    /// Real server address and port.
    pub fn dest_addr(&self) -> SocketAddr {
        SocketAddr::new(words_addr(self.daddr, self.six()), (self.ports >> 32) as u16)
    }
    /// Id of the destination the connection is bound to ([`DestState::id`], modulo 2^27).
    pub fn dest_id(&self) -> u32 {
        (self.ctl & NCTL_MASK) as u32
    }
    /// FULLNAT local address and port (`None` for other methods).
    pub fn local(&self) -> Option<SocketAddr> {
        (self.method() == ForwardMethod::FullNat)
            .then(|| SocketAddr::new(words_addr(self.laddr, self.six()), (self.ports >> 48) as u16))
    }
}

/// A found persistence template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TemplateRef {
    idx: u32,
    gen_: u32,
    six: bool,
    daddr: [u64; 2],
    dport: u16,
}

impl TemplateRef {
    /// The destination (RIP:port) the template pins its client to.
    pub fn dest_addr(&self) -> SocketAddr {
        SocketAddr::new(words_addr(self.daddr, self.six), self.dport)
    }
}

/// Key of a persistence template: (protocol or IP for fwmark services, client address
/// masked by `-M`, VIP or fwmark, virtual port or 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TemplateKey {
    /// `None` for a fwmark service (the kernel's IPPROTO_IP template).
    pub proto: Option<Protocol>,
    /// Client address, already masked with the persistence netmask.
    pub caddr: IpAddr,
    /// VIP, or for a fwmark service the mark written as an address (as the kernel does).
    pub vaddr: IpAddr,
    /// Virtual port; 0 for a port-0 ("all ports") or fwmark service.
    pub vport: u16,
}

impl TemplateKey {
    /// Template key of a `-t/-u/--sctp-service VIP:port -p` service for client `caddr`.
    pub fn service(
        proto: Protocol,
        caddr: IpAddr,
        netmask: PersistNetmask,
        vaddr: IpAddr,
        vport: u16,
    ) -> TemplateKey {
        TemplateKey {
            proto: Some(proto),
            caddr: netmask.apply(caddr),
            vaddr,
            vport,
        }
    }

    /// Template key of a `-f mark -p` service for client `caddr`.
    pub fn fwmark(mark: u32, caddr: IpAddr, netmask: PersistNetmask) -> TemplateKey {
        let vaddr = match AddrFamily::of(&caddr) {
            AddrFamily::Inet => IpAddr::V4(Ipv4Addr::from(mark)),
            AddrFamily::Inet6 => IpAddr::V6(Ipv6Addr::from((mark as u128) << 96)),
        };
        TemplateKey {
            proto: None,
            caddr: netmask.apply(caddr),
            vaddr,
            vport: 0,
        }
    }
}

/// Table counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConnCounters {
    /// Live connections (templates excluded).
    pub conns: u64,
    /// Live persistence templates.
    pub templates: u64,
    /// New connections or templates refused because the table was full.
    pub refused_full: u64,
    /// SYN_RECV/SYNACK entries reclaimed to make room for new connections.
    pub reclaimed_synrecv: u64,
    /// Entries expired by the timer wheel.
    pub expired: u64,
    /// Entries removed explicitly (remove, template checks, duplicate races).
    pub removed: u64,
    /// Entries inserted (connections and templates).
    pub inserted: u64,
}

// ---- the entry -----------------------------------------------------------------------
const NIL: u32 = u32::MAX;
// Reclamation states of a slot (`Entry::link`).
const L_FREE: u32 = 0;
const L_PENDING: u32 = 1;
const L_WHEEL: u32 = 2;
const L_GRAVE: u32 = 3;
const L_ZOMBIE: u32 = 4;

/// One arena slot. The first cache line holds everything a client-side lookup reads
/// (`repr(C)` keeps that order).
#[repr(C, align(64))]
#[derive(Default)]
struct Entry {
    ctl: AtomicU64,
    caddr: [AtomicU64; 2],
    vaddr: [AtomicU64; 2],
    /// cport | vport << 16 | dport << 32 | lport << 48.
    ports: AtomicU64,
    daddr: [AtomicU64; 2],
    // ---- second line
    /// FULLNAT local address; for a template, `[timeout_ms, 0]`.
    laddr: [AtomicU64; 2],
    /// Milliseconds (caller's clock) at which the entry expires.
    deadline: AtomicU64,
    /// Connection: its template as `gen << 32 | idx + 1` (0 = none).
    aux: AtomicU64,
    /// The destination, behind a per-entry lock taken only at insert, at death and on a
    /// state change that moves the connection between active and inactive; lookups never
    /// touch it. (An `ArcSwapOption` here cost ~150 ns per insert+remove in debt payment.)
    dest: DestSlot,
    /// Link of the free list, the pending list and the graveyard.
    gc_next: AtomicU32,
    /// Reclamation state (`L_*`).
    link: AtomicU32,
    /// Link of the reschedule list (deadlines moved earlier).
    resched_next: AtomicU32,
    /// 1 while the slot is on the reschedule list.
    resched: AtomicU32,
}

/// An entry's destination reference.
#[derive(Default)]
struct DestSlot(Mutex<Option<Arc<DestState>>>);

impl DestSlot {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Arc<DestState>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn get(&self) -> Option<Arc<DestState>> {
        self.lock().clone()
    }
    fn set(&self, d: Arc<DestState>) {
        *self.lock() = Some(d);
    }
    fn take(&self) -> Option<Arc<DestState>> {
        self.lock().take()
    }
}

/// Most keys [`ConnTable::prefetch_in`] and [`ConnTable::prefetch_out`] use per call (a
/// receive burst).
pub const PREFETCH_BURST: usize = 32;

/// Bytes of one arena entry.
pub const ENTRY_BYTES: usize = std::mem::size_of::<Entry>();

#[inline]
fn load2(a: &[AtomicU64; 2]) -> [u64; 2] {
    [a[0].load(Ordering::Relaxed), a[1].load(Ordering::Relaxed)]
}
#[inline]
fn store2(a: &[AtomicU64; 2], v: [u64; 2]) {
    a[0].store(v[0], Ordering::Relaxed);
    a[1].store(v[1], Ordering::Relaxed);
}

#[derive(Default)]
struct Stats {
    conns: AtomicU64,
    templates: AtomicU64,
    refused_full: AtomicU64,
    reclaimed_synrecv: AtomicU64,
    expired: AtomicU64,
    removed: AtomicU64,
    inserted: AtomicU64,
}

/// The connection table. `Send + Sync`: share it (e.g. in an `Arc`) between any number of
/// worker threads; one of them (or a timer thread) calls [`ConnTable::expire`] regularly.
pub struct ConnTable {
    entries: Box<[Entry]>,
    capacity: u32,
    in_ix: Index,
    out_ix: Index,
    seed: u64,
    /// Free list head: ABA tag << 32 | slot (NIL when empty).
    free: CachePadded<AtomicU64>,
    /// Newly inserted entries waiting to be filed in the wheel (MPSC stack).
    pending: CachePadded<AtomicU32>,
    /// Entries killed while in the wheel, waiting to be unfiled and freed (MPSC stack).
    graveyard: CachePadded<AtomicU32>,
    /// Entries whose deadline moved earlier, to be re-filed in the wheel (MPSC stack).
    resched: CachePadded<AtomicU32>,
    live: CachePadded<AtomicU64>,
    reclaim_cursor: CachePadded<AtomicU32>,
    stats: Stats,
    timeouts: Timeouts,
    expire_quiescent_template: AtomicBool,
    wheel: Mutex<Wheel>,
    /// Told the FULLNAT local address of every connection that dies (to return its port to
    /// the pool), whatever ends it: expiry, removal, reclaim.
    on_local_release: std::sync::OnceLock<LocalRelease>,
}

/// Callback receiving the FULLNAT local address and port of a connection that died.
pub type LocalRelease = Box<dyn Fn(SocketAddr) + Send + Sync>;

impl std::fmt::Debug for ConnTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnTable")
            .field("capacity", &self.capacity)
            .field("counters", &self.counters())
            .finish()
    }
}

/// Entries sampled when looking for a SYN_RECV entry to reclaim on a full table.
const RECLAIM_SAMPLE: u32 = 32;
/// How often a removed template still holding connections is checked again.
const ZOMBIE_RECHECK_MS: u64 = 1000;

impl ConnTable {
    /// A table for at most `capacity` live entries (connections + templates), everything
    /// preallocated.
    pub fn with_capacity(capacity: usize) -> ConnTable {
        ConnTable::with_capacity_and_seed(capacity, 0x9e37_79b9_7f4a_7c15)
    }

    /// As [`with_capacity`](Self::with_capacity), with the hash seed given (pick a random
    /// one in production so that clients cannot aim at one bucket chain).
    pub fn with_capacity_and_seed(capacity: usize, seed: u64) -> ConnTable {
        let capacity = capacity.clamp(1, (u32::MAX / 2) as usize);
        let arena = capacity + capacity / 8 + 256;
        let entries: Box<[Entry]> = (0..arena).map(|_| Entry::default()).collect();
        // Chain every slot into the free list, generation 1 (odd = not live).
        for (i, e) in entries.iter().enumerate() {
            e.ctl.store(GEN_ONE, Ordering::Relaxed);
            let next = if i + 1 == arena { NIL } else { i as u32 + 1 };
            e.gc_next.store(next, Ordering::Relaxed);
        }
        ConnTable {
            in_ix: Index::for_keys(capacity),
            out_ix: Index::for_keys(capacity),
            capacity: capacity as u32,
            entries,
            seed,
            free: CachePadded::new(AtomicU64::new(0)),
            pending: CachePadded::new(AtomicU32::new(NIL)),
            graveyard: CachePadded::new(AtomicU32::new(NIL)),
            resched: CachePadded::new(AtomicU32::new(NIL)),
            live: CachePadded::new(AtomicU64::new(0)),
            reclaim_cursor: CachePadded::new(AtomicU32::new(0)),
            stats: Stats::default(),
            timeouts: Timeouts::default(),
            expire_quiescent_template: AtomicBool::new(false),
            wheel: Mutex::new(Wheel::new(arena)),
            on_local_release: std::sync::OnceLock::new(),
        }
    }

    /// Registers the callback told the FULLNAT local address of each connection that dies
    /// (the pipeline returns the port to its pool). Only the first registration counts;
    /// returns false if one was already set.
    pub fn set_local_release(&self, f: LocalRelease) -> bool {
        self.on_local_release.set(f).is_ok()
    }

    /// Configured capacity (live entries).
    pub fn capacity(&self) -> usize {
        self.capacity as usize
    }

    /// Memory the table preallocated, divided by its capacity: arena slot (with its slack
    /// share), both index slots at their load factor, and the wheel links.
    pub fn bytes_per_entry(&self) -> f64 {
        let arena = self.entries.len() * (ENTRY_BYTES + 8);
        let index = (self.in_ix.buckets() + self.out_ix.buckets()) * BUCKET_BYTES;
        (arena + index) as f64 / self.capacity as f64
    }

    /// Run-time timeouts (`ipvsadm --set`).
    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    /// `ipvsadm --set tcp tcpfin udp` (seconds; 0 leaves a value unchanged).
    pub fn set_timeouts(&self, tcp: u32, tcpfin: u32, udp: u32) {
        self.timeouts.set(tcp, tcpfin, udp);
    }

    /// The kernel's `expire_quiescent_template` sysctl: when set, a template whose
    /// destination has weight 0 is dropped instead of reused.
    pub fn set_expire_quiescent_template(&self, on: bool) {
        self.expire_quiescent_template.store(on, Ordering::Relaxed);
    }

    /// Current counters.
    pub fn counters(&self) -> ConnCounters {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ConnCounters {
            conns: l(&self.stats.conns),
            templates: l(&self.stats.templates),
            refused_full: l(&self.stats.refused_full),
            reclaimed_synrecv: l(&self.stats.reclaimed_synrecv),
            expired: l(&self.stats.expired),
            removed: l(&self.stats.removed),
            inserted: l(&self.stats.inserted),
        }
    }

    /// Live entries (connections + templates).
    pub fn len(&self) -> usize {
        self.live.load(Ordering::Relaxed) as usize
    }

    /// True when no entry is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    // ---- hashing of entries and keys ----
    #[inline]
    fn hash_in_words(&self, kind: u64, c: [u64; 2], v: [u64; 2], cport: u16, vport: u16) -> u64 {
        hash5(
            self.seed,
            c,
            v,
            cport as u64 | (vport as u64) << 16 | (kind & KEY_MASK),
        )
    }
    #[inline]
    fn hash_out_words(&self, kind: u64, d: [u64; 2], a: [u64; 2], dport: u16, port: u16) -> u64 {
        hash5(
            self.seed ^ 0x5bd1_e995_c3a5_c85c,
            d,
            a,
            dport as u64 | (port as u64) << 16 | (kind & (AF6 | PROTO_MASK)),
        )
    }
    fn entry_hash_in(&self, e: &Entry, ctl: u64) -> u64 {
        let p = e.ports.load(Ordering::Relaxed);
        self.hash_in_words(ctl, load2(&e.caddr), load2(&e.vaddr), p as u16, (p >> 16) as u16)
    }
    fn entry_hash_out(&self, e: &Entry, ctl: u64) -> u64 {
        let p = e.ports.load(Ordering::Relaxed);
        let (a, port) = if method_of(ctl) == ForwardMethod::FullNat {
            (load2(&e.laddr), (p >> 48) as u16)
        } else {
            (load2(&e.caddr), p as u16)
        };
        self.hash_out_words(ctl, load2(&e.daddr), a, (p >> 32) as u16, port)
    }

    // ---- lookups ----
    /// Finds the connection of a client's packet. Lock-free, allocation-free.
    #[inline]
    pub fn lookup_in(&self, k: &ConnKeyIn) -> Option<ConnRef> {
        let (c, six) = addr_words(k.caddr);
        let (v, _) = addr_words(k.vaddr);
        let want = proto_bits(Some(k.proto)) | if six { AF6 } else { 0 };
        let pw = k.cport as u64 | (k.vport as u64) << 16;
        let h = self.hash_in_words(want, c, v, k.cport, k.vport);
        self.in_ix.find(h, |idx| self.read_in(idx, want, c, v, pw))
    }

    /// Warms the cache for a burst of client packets that will then be looked up one by one
    /// with [`lookup_in`](Self::lookup_in): the home bucket of every key, then both lines of
    /// every candidate entry (the key line a lookup reads, the line whose deadline
    /// [`on_packet`](Self::on_packet) writes), each stage a tight loop of independent loads so
    /// the cache and TLB misses of the whole burst overlap instead of following one another.
    /// Reads only; at most [`PREFETCH_BURST`] keys are used.
    pub fn prefetch_in(&self, keys: &[ConnKeyIn]) {
        let m = keys.len().min(PREFETCH_BURST);
        let mut h = [0u64; PREFETCH_BURST];
        for (h, k) in h.iter_mut().zip(&keys[..m]) {
            let (c, six) = addr_words(k.caddr);
            let (v, _) = addr_words(k.vaddr);
            let want = proto_bits(Some(k.proto)) | if six { AF6 } else { 0 };
            *h = self.hash_in_words(want, c, v, k.cport, k.vport);
        }
        self.prefetch_stages(&self.in_ix, &h[..m]);
    }

    /// [`prefetch_in`](Self::prefetch_in) for real servers' replies, ahead of
    /// [`lookup_out`](Self::lookup_out).
    pub fn prefetch_out(&self, keys: &[ConnKeyOut]) {
        let m = keys.len().min(PREFETCH_BURST);
        let mut h = [0u64; PREFETCH_BURST];
        for (h, k) in h.iter_mut().zip(&keys[..m]) {
            let (d, six) = addr_words(k.daddr);
            let (a, _) = addr_words(k.addr);
            let want = proto_bits(Some(k.proto)) | if six { AF6 } else { 0 };
            *h = self.hash_out_words(want, d, a, k.dport, k.port);
        }
        self.prefetch_stages(&self.out_ix, &h[..m]);
    }

    #[inline]
    fn prefetch_stages(&self, ix: &Index, hashes: &[u64]) {
        let mut sink = 0u64;
        for &h in hashes {
            sink ^= ix.touch(h);
        }
        let mut cand = [u32::MAX; PREFETCH_BURST];
        for (c, &h) in cand.iter_mut().zip(hashes) {
            *c = ix.home_candidate(h).0;
        }
        for &idx in &cand[..hashes.len()] {
            if let Some(e) = self.entries.get(idx as usize) {
                sink ^= e.ctl.load(Ordering::Relaxed) ^ e.deadline.load(Ordering::Relaxed);
            }
        }
        std::hint::black_box(sink);
    }

    /// Looks up a burst of client packets at once: `out[i]` gets `lookup_in(&keys[i])`.
    /// The work is staged over up to 64 keys at a time (hashes and home buckets of every key, then the
    /// control words of every candidate entry, then the checks), so the cache misses of
    /// different packets overlap instead of following one another. Same results and the
    /// same guarantees as [`lookup_in`](Self::lookup_in); no allocation.
    pub fn lookup_in_batch(&self, keys: &[ConnKeyIn], out: &mut [Option<ConnRef>]) {
        const B: usize = 64;
        let n = keys.len().min(out.len());
        let mut start = 0;
        while start < n {
            let m = (n - start).min(B);
            let mut words = [([0u64; 2], [0u64; 2], 0u64, 0u64, 0u64); B];
            let mut cand = [(u32::MAX, false); B];
            let mut g1 = [0u64; B];
            for j in 0..m {
                let k = &keys[start + j];
                let (c, six) = addr_words(k.caddr);
                let (v, _) = addr_words(k.vaddr);
                let want = proto_bits(Some(k.proto)) | if six { AF6 } else { 0 };
                let pw = k.cport as u64 | (k.vport as u64) << 16;
                let h = self.hash_in_words(want, c, v, k.cport, k.vport);
                words[j] = (c, v, want, pw, h);
            }
            // Tight loops of independent loads: the misses of the whole burst overlap.
            let mut sink = 0u64;
            for w in &words[..m] {
                sink ^= self.in_ix.touch(w.4);
            }
            for j in 0..m {
                cand[j] = self.in_ix.home_candidate(words[j].4);
            }
            for j in 0..m {
                if let Some(e) = self.entries.get(cand[j].0 as usize) {
                    g1[j] = e.ctl.load(Ordering::Acquire);
                }
            }
            let mut slow = [0usize; B];
            let mut nslow = 0;
            for j in 0..m {
                let (c, v, want, pw, _) = words[j];
                let (idx, more) = cand[j];
                let hit = if idx != u32::MAX {
                    self.read_in_with(idx, g1[j], want, c, v, pw)
                } else {
                    None
                };
                if hit.is_none() && (more || idx != u32::MAX) {
                    slow[nslow] = j;
                    nslow += 1;
                }
                out[start + j] = hit;
            }
            // The few keys not settled by their home bucket: bring the next buckets in
            // together, then probe as `lookup_in` does.
            for &j in &slow[..nslow] {
                sink ^= self.in_ix.touch_next(words[j].4);
            }
            for &j in &slow[..nslow] {
                let (c, v, want, pw, h) = words[j];
                out[start + j] = self.in_ix.find(h, |i| self.read_in(i, want, c, v, pw));
            }
            std::hint::black_box(sink);
            start += m;
        }
    }

    #[inline]
    fn read_in(&self, idx: u32, want: u64, c: [u64; 2], v: [u64; 2], pw: u64) -> Option<ConnRef> {
        let e = self.entries.get(idx as usize)?;
        let g1 = e.ctl.load(Ordering::Acquire);
        self.read_in_with(idx, g1, want, c, v, pw)
    }

    /// The seqlock read of entry `idx`, whose control word `g1` was loaded (Acquire) first.
    #[inline]
    fn read_in_with(
        &self,
        idx: u32,
        g1: u64,
        want: u64,
        c: [u64; 2],
        v: [u64; 2],
        pw: u64,
    ) -> Option<ConnRef> {
        let e = self.entries.get(idx as usize)?;
        if !is_live(g1) || g1 & KEY_MASK != want {
            return None;
        }
        let ec = load2(&e.caddr);
        let ev = load2(&e.vaddr);
        let ports = e.ports.load(Ordering::Relaxed);
        if ec != c || ev != v || ports & 0xffff_ffff != pw {
            return None;
        }
        let daddr = load2(&e.daddr);
        let laddr = if method_of(g1) == ForwardMethod::FullNat {
            load2(&e.laddr)
        } else {
            [0; 2]
        };
        fence(Ordering::Acquire);
        let g2 = e.ctl.load(Ordering::Relaxed);
        if gen_of(g2) != gen_of(g1) {
            return None;
        }
        Some(ConnRef {
            idx,
            gen_: gen_of(g1),
            ctl: g1,
            ports,
            caddr: ec,
            vaddr: ev,
            daddr,
            laddr,
        })
    }

    /// Finds the connection of a real server's reply (NAT and FULLNAT entries only).
    #[inline]
    pub fn lookup_out(&self, k: &ConnKeyOut) -> Option<ConnRef> {
        let (d, six) = addr_words(k.daddr);
        let (a, _) = addr_words(k.addr);
        let want = proto_bits(Some(k.proto)) | if six { AF6 } else { 0 };
        let h = self.hash_out_words(want, d, a, k.dport, k.port);
        self.out_ix.find(h, |idx| {
            let e = self.entries.get(idx as usize)?;
            let g1 = e.ctl.load(Ordering::Acquire);
            if !is_live(g1) || g1 & HAS_OUT == 0 || g1 & KEY_MASK != want {
                return None;
            }
            let ports = e.ports.load(Ordering::Relaxed);
            let daddr = load2(&e.daddr);
            let caddr = load2(&e.caddr);
            let vaddr = load2(&e.vaddr);
            let laddr = load2(&e.laddr);
            let full = method_of(g1) == ForwardMethod::FullNat;
            let (ra, rp) = if full {
                (laddr, (ports >> 48) as u16)
            } else {
                (caddr, ports as u16)
            };
            if daddr != d || (ports >> 32) as u16 != k.dport || ra != a || rp != k.port {
                return None;
            }
            fence(Ordering::Acquire);
            if gen_of(e.ctl.load(Ordering::Relaxed)) != gen_of(g1) {
                return None;
            }
            Some(ConnRef {
                idx,
                gen_: gen_of(g1),
                ctl: g1,
                ports,
                caddr,
                vaddr,
                daddr,
                laddr: if full { laddr } else { [0; 2] },
            })
        })
    }

    /// The destination state a connection is bound to (`None` if it died since lookup).
    pub fn dest_of(&self, c: &ConnRef) -> Option<Arc<DestState>> {
        let e = &self.entries[c.idx as usize];
        let d = e.dest.get();
        (gen_of(e.ctl.load(Ordering::Acquire)) == c.gen_)
            .then_some(d)
            .flatten()
    }

    // ---- slot management ----
    fn pop_free(&self) -> Option<u32> {
        let mut head = self.free.load(Ordering::Acquire);
        loop {
            let idx = head as u32;
            if idx == NIL {
                return None;
            }
            let next = self.entries[idx as usize].gc_next.load(Ordering::Relaxed);
            let new = ((head >> 32).wrapping_add(1) << 32) | next as u64;
            match self
                .free
                .compare_exchange_weak(head, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Some(idx),
                Err(h) => head = h,
            }
        }
    }

    fn push_free(&self, idx: u32) {
        let e = &self.entries[idx as usize];
        e.link.store(L_FREE, Ordering::Relaxed);
        let mut head = self.free.load(Ordering::Relaxed);
        loop {
            e.gc_next.store(head as u32, Ordering::Relaxed);
            let new = ((head >> 32).wrapping_add(1) << 32) | idx as u64;
            match self
                .free
                .compare_exchange_weak(head, new, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(h) => head = h,
            }
        }
    }

    fn push_stack(&self, stack: &AtomicU32, idx: u32) {
        let e = &self.entries[idx as usize];
        let mut head = stack.load(Ordering::Relaxed);
        loop {
            e.gc_next.store(head, Ordering::Relaxed);
            match stack.compare_exchange_weak(head, idx, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return,
                Err(h) => head = h,
            }
        }
    }

    /// Reserves one unit of capacity, reclaiming a SYN_RECV entry if the table is full.
    fn reserve(&self) -> Result<(), TableFull> {
        for attempt in 0..2 {
            if self.live.fetch_add(1, Ordering::AcqRel) < self.capacity as u64 {
                return Ok(());
            }
            self.live.fetch_sub(1, Ordering::AcqRel);
            if attempt == 0 && !self.reclaim_synrecv() {
                break;
            }
        }
        self.stats.refused_full.fetch_add(1, Ordering::Relaxed);
        Err(TableFull)
    }

    /// The kernel's drop_entry idea, bounded: looks at a few slots from a rotating cursor
    /// and kills the first connection still in SYN_RECV (or SYNACK). Never touches
    /// established connections or templates.
    fn reclaim_synrecv(&self) -> bool {
        let n = self.entries.len() as u64;
        let start = self.reclaim_cursor.fetch_add(RECLAIM_SAMPLE, Ordering::Relaxed);
        for i in 0..RECLAIM_SAMPLE {
            // Scattered positions (golden-ratio stride) so that one cold region of the
            // arena cannot hide every candidate.
            let idx = ((start.wrapping_add(i) as u64).wrapping_mul(0x9e37_79b9) % n) as u32;
            let ctl = self.entries[idx as usize].ctl.load(Ordering::Acquire);
            if is_live(ctl)
                && ctl & TEMPLATE == 0
                && matches!(state_of(ctl), ConnState::SynRecv | ConnState::SynAck)
                && self.kill(idx, gen_of(ctl), None)
            {
                self.handoff(idx);
                self.stats.reclaimed_synrecv.fetch_add(1, Ordering::Relaxed);
                return true;
            }
        }
        false
    }

    /// Takes a free slot for writing; undoes the reservation on failure.
    fn alloc(&self) -> Result<u32, TableFull> {
        self.reserve()?;
        let mut slot = self.pop_free();
        if slot.is_none() {
            // Every spare slot is dead but not yet recycled: the housekeeper is late. Recycle
            // now if nobody else is housekeeping (work bounded by the dead entries, no scan).
            if let Ok(mut w) = self.wheel.try_lock()
                && w.started
            {
                let now_ms = w.next_tick * TICK_MS;
                self.drain_lists(&mut w, now_ms);
            }
            slot = self.pop_free();
        }
        match slot {
            Some(i) => Ok(i),
            None => {
                self.live.fetch_sub(1, Ordering::AcqRel);
                self.stats.refused_full.fetch_add(1, Ordering::Relaxed);
                Err(TableFull)
            }
        }
    }

    /// Kills entry `idx` of generation `gen_` (one winner) and tears it down: unlinks it from
    /// both indexes, releases its destination counter and its template. Returns false if
    /// it was already dead or recycled. The slot itself is recycled by the housekeeper.
    fn kill(&self, idx: u32, gen_: u32, now: Option<Time>) -> bool {
        let e = &self.entries[idx as usize];
        let mut cur = e.ctl.load(Ordering::Acquire);
        let killed = loop {
            if gen_of(cur) != gen_ || !is_live(cur) {
                return false;
            }
            if cur & BUSY != 0 {
                std::hint::spin_loop();
                cur = e.ctl.load(Ordering::Acquire);
                continue;
            }
            match e.ctl.compare_exchange_weak(
                cur,
                cur.wrapping_add(GEN_ONE),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break cur,
                Err(c) => cur = c,
            }
        };
        self.in_ix.remove(self.entry_hash_in(e, killed), idx);
        if killed & HAS_OUT != 0 {
            self.out_ix.remove(self.entry_hash_out(e, killed), idx);
        }
        if let Some(d) = e.dest.take() {
            d.unbind(class_of(killed));
        }
        if killed & TEMPLATE == 0
            && method_of(killed) == ForwardMethod::FullNat
            && let Some(release) = self.on_local_release.get()
        {
            let lport = (e.ports.load(Ordering::Relaxed) >> 48) as u16;
            release(SocketAddr::new(
                words_addr(load2(&e.laddr), killed & AF6 != 0),
                lport,
            ));
        }
        if killed & TEMPLATE == 0 {
            let aux = e.aux.swap(0, Ordering::AcqRel);
            if aux != 0 {
                self.release_template(aux, now);
            }
            self.stats.conns.fetch_sub(1, Ordering::Relaxed);
        } else {
            self.stats.templates.fetch_sub(1, Ordering::Relaxed);
        }
        self.live.fetch_sub(1, Ordering::AcqRel);
        true
    }

    /// After a kill outside the housekeeper: hands the slot to the housekeeper.
    fn handoff(&self, idx: u32) {
        if self.entries[idx as usize].link.swap(L_GRAVE, Ordering::AcqRel) == L_WHEEL {
            self.push_stack(&self.graveyard, idx);
        }
    }

    fn release_template(&self, aux: u64, now: Option<Time>) {
        let t = &self.entries[(aux as u32 - 1) as usize];
        // The template slot is pinned while its count is non-zero, so it is still ours until
        // the decrement below; the last connection extends its life by its timeout first.
        if let Some(now) = now
            && t.ctl.load(Ordering::Acquire) & NCTL_MASK == 1
        {
            let to = t.laddr[0].load(Ordering::Relaxed);
            t.deadline.fetch_max(now.as_millis() + to, Ordering::Relaxed);
        }
        t.ctl.fetch_sub(1, Ordering::AcqRel);
    }

    /// Pins template `t` for a new connection: +1 on its count if still live.
    fn acquire_template(&self, t: &TemplateRef, now: Time) -> u64 {
        let e = &self.entries[t.idx as usize];
        let mut cur = e.ctl.load(Ordering::Acquire);
        loop {
            if gen_of(cur) != t.gen_ || cur & NCTL_MASK == NCTL_MASK {
                return 0;
            }
            match e
                .ctl
                .compare_exchange_weak(cur, cur + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break,
                Err(c) => cur = c,
            }
        }
        let to = e.laddr[0].load(Ordering::Relaxed);
        e.deadline.fetch_max(now.as_millis() + to, Ordering::Relaxed);
        (t.gen_ as u64) << 32 | (t.idx as u64 + 1)
    }

    // ---- insert ----
    /// Adds a connection in state NONE (TCP), UDP (UDP) or ESTABLISHED (SCTP, minimal) and
    /// accounts it in its destination's inactive (or active) counter. Feed the first
    /// packet's flags to [`on_packet`](Self::on_packet) next.
    ///
    /// If another worker inserted the same client-side key at the same moment, only one
    /// entry survives and it is the one returned to both. Refused with [`TableFull`] (and
    /// counted) when the table is full and no SYN_RECV entry could be reclaimed.
    pub fn insert(&self, nc: NewConn<'_>, now: Time) -> Result<ConnRef, TableFull> {
        loop {
            let idx = self.alloc()?;
            let e = &self.entries[idx as usize];
            let old = e.ctl.load(Ordering::Relaxed);
            debug_assert!(!is_live(old));
            fence(Ordering::Release);
            let (c, six) = addr_words(nc.key.caddr);
            let (v, _) = addr_words(nc.key.vaddr);
            let (d, _) = addr_words(nc.dest_addr.ip());
            let (l, lport) = match (nc.method, nc.local) {
                (ForwardMethod::FullNat, Some(sa)) => (addr_words(sa.ip()).0, sa.port()),
                _ => ([0; 2], 0),
            };
            let state = match nc.key.proto {
                Protocol::Tcp => ConnState::None,
                Protocol::Udp => ConnState::Udp,
                Protocol::Sctp => ConnState::Established,
            };
            store2(&e.caddr, c);
            store2(&e.vaddr, v);
            store2(&e.daddr, d);
            store2(&e.laddr, l);
            let ports = nc.key.cport as u64
                | (nc.key.vport as u64) << 16
                | (nc.dest_addr.port() as u64) << 32
                | (lport as u64) << 48;
            e.ports.store(ports, Ordering::Relaxed);
            e.deadline
                .store(now.as_millis() + self.timeouts.millis(state), Ordering::Relaxed);
            let aux = nc.template.map_or(0, |t| self.acquire_template(&t, now));
            e.aux.store(aux, Ordering::Relaxed);
            e.link.store(L_PENDING, Ordering::Relaxed);
            let has_out = matches!(nc.method, ForwardMethod::Masq | ForwardMethod::FullNat);
            let nooutput = matches!(nc.method, ForwardMethod::DirectRoute | ForwardMethod::Tunnel);
            let ctl = (old & !(u64::MAX >> (64 - GEN_SHIFT))).wrapping_add(GEN_ONE)
                | ((state as u64) << STATE_SHIFT)
                | method_bits(nc.method)
                | if six { AF6 } else { 0 }
                | proto_bits(Some(nc.key.proto))
                | if nooutput { NOOUTPUT } else { 0 }
                | if has_out { HAS_OUT } else { 0 }
                // A connection's low bits (a template's count of connections) carry the
                // destination's id, so the packet path can find its counters without a lock.
                | (nc.dest.id() as u64 & NCTL_MASK);
            nc.dest.bind(class_of(ctl));
            e.dest.set(Arc::clone(nc.dest));
            self.stats.conns.fetch_add(1, Ordering::Relaxed);
            // Publish: generation becomes even (live).
            e.ctl.store(ctl, Ordering::Release);
            let gen_ = gen_of(ctl);
            let hin = self.hash_in_words(ctl, c, v, nc.key.cport, nc.key.vport);
            let ok_in = self.in_ix.insert(hin, idx);
            let ok_out = !has_out || self.out_ix.insert(self.entry_hash_out(e, ctl), idx);
            self.push_stack(&self.pending, idx);
            if !(ok_in && ok_out) {
                // Cannot happen while the capacity bound holds; fail safe.
                if self.kill(idx, gen_, Some(now)) {
                    self.handoff(idx);
                }
                self.stats.refused_full.fetch_add(1, Ordering::Relaxed);
                return Err(TableFull);
            }
            self.stats.inserted.fetch_add(1, Ordering::Relaxed);
            // Duplicate race: the lowest slot number wins; whoever sees a pair kills the other one.
            let want = ctl & KEY_MASK;
            let pw = ports & 0xffff_ffff;
            let dup = self.in_ix.find(hin, |j| {
                if j != idx {
                    self.read_in(j, want, c, v, pw)
                } else {
                    None
                }
            });
            match dup {
                None => {}
                Some(other) if other.idx > idx && self.kill(other.idx, other.gen_, Some(now)) => {
                    self.handoff(other.idx);
                    self.stats.removed.fetch_add(1, Ordering::Relaxed);
                }
                Some(other) if other.idx > idx => {}
                Some(other) => {
                    if self.kill(idx, gen_, Some(now)) {
                        self.handoff(idx);
                        self.stats.removed.fetch_add(1, Ordering::Relaxed);
                    }
                    return Ok(other);
                }
            }
            match self.read_in(idx, want, c, v, pw) {
                Some(r) => return Ok(r),
                // Killed by a concurrent duplicate resolution: return the survivor.
                None => {
                    if let Some(r) = self.lookup_in(&nc.key) {
                        return Ok(r);
                    }
                }
            }
        }
    }

    // ---- per packet ----
    /// Feeds one packet to the state machine: updates the state (TCP table, by direction;
    /// input-only for DR/TUN), the destination's active/inactive counters when the state
    /// enters or leaves ESTABLISHED, and the expiry deadline (`now` + the new state's
    /// timeout). Returns the new state, or `None` if the connection died since lookup.
    #[inline]
    pub fn on_packet(&self, c: &ConnRef, dir: Direction, flags: TcpFlags, now: Time) -> Option<ConnState> {
        let e = self.entries.get(c.idx as usize)?;
        let mut cur = e.ctl.load(Ordering::Acquire);
        let new_state = loop {
            if gen_of(cur) != c.gen_ {
                return None;
            }
            let st = state_of(cur);
            let mut next_ctl = cur;
            let mut ns = st;
            if cur & PROTO_MASK == proto_bits(Some(Protocol::Tcp)) {
                let td = if cur & NOOUTPUT != 0 {
                    if dir == Direction::Output {
                        next_ctl &= !NOOUTPUT;
                        TableDir::Output
                    } else {
                        TableDir::InputOnly
                    }
                } else if dir == Direction::Output {
                    TableDir::Output
                } else {
                    TableDir::Input
                };
                ns = tcp_next(td, flags, st);
                next_ctl = with_state(next_ctl, ns);
            }
            if next_ctl == cur {
                break ns;
            }
            let reclass = st.is_active() != ns.is_active();
            if reclass && cur & BUSY != 0 {
                std::hint::spin_loop();
                cur = e.ctl.load(Ordering::Acquire);
                continue;
            }
            let target = if reclass { next_ctl | BUSY } else { next_ctl };
            match e
                .ctl
                .compare_exchange_weak(cur, target, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    if reclass {
                        if let Some(d) = e.dest.get() {
                            let (from, to) = if ns.is_active() {
                                (ConnClass::Inactive, ConnClass::Active)
                            } else {
                                (ConnClass::Active, ConnClass::Inactive)
                            };
                            d.reclassify(from, to);
                        }
                        e.ctl.fetch_and(!BUSY, Ordering::AcqRel);
                    }
                    break ns;
                }
                Err(x) => cur = x,
            }
        };
        let deadline = now.as_millis() + self.timeouts.millis(new_state);
        let old = e.deadline.load(Ordering::Relaxed);
        if deadline != old {
            e.deadline.store(deadline, Ordering::Relaxed);
            // A shorter timeout (e.g. ESTABLISHED → CLOSE) needs an earlier wheel slot; the
            // usual case, a later deadline, is left for the wheel to notice.
            if deadline < old && e.resched.swap(1, Ordering::AcqRel) == 0 {
                let mut head = self.resched.load(Ordering::Relaxed);
                loop {
                    e.resched_next.store(head, Ordering::Relaxed);
                    match self
                        .resched
                        .compare_exchange_weak(head, c.idx, Ordering::AcqRel, Ordering::Relaxed)
                    {
                        Ok(_) => break,
                        Err(h) => head = h,
                    }
                }
            }
        }
        Some(new_state)
    }

    /// Removes a connection now (e.g. `ipvsadm` flush, a RST policy, a test). Returns false
    /// if it was already gone. Its slot is recycled at the next [`expire`](Self::expire).
    pub fn remove(&self, c: &ConnRef, now: Time) -> bool {
        if self.kill(c.idx, c.gen_, Some(now)) {
            self.handoff(c.idx);
            self.stats.removed.fetch_add(1, Ordering::Relaxed);
            true
        } else {
            false
        }
    }

    // ---- templates ----
    /// Finds the persistence template of `k`.
    pub fn lookup_template(&self, k: &TemplateKey) -> Option<TemplateRef> {
        let (c, six) = addr_words(k.caddr);
        let (v, _) = addr_words(k.vaddr);
        let want = TEMPLATE | proto_bits(k.proto) | if six { AF6 } else { 0 };
        let pw = (k.vport as u64) << 16;
        let h = self.hash_in_words(want, c, v, 0, k.vport);
        self.in_ix.find(h, |idx| {
            let r = self.read_in(idx, want, c, v, pw)?;
            Some(TemplateRef {
                idx: r.idx,
                gen_: r.gen_,
                six,
                daddr: r.daddr,
                dport: (r.ports >> 32) as u16,
            })
        })
    }

    /// Adds a persistence template pinning `k`'s clients to `dest` (at `dest_addr`) for
    /// `timeout` after its last connection ends. Accounted in the destination's persistent
    /// connections. Returns the existing template if one raced in first.
    pub fn insert_template(
        &self,
        k: &TemplateKey,
        dest_addr: SocketAddr,
        dest: &Arc<DestState>,
        timeout: Duration,
        now: Time,
    ) -> Result<TemplateRef, TableFull> {
        let idx = self.alloc()?;
        let e = &self.entries[idx as usize];
        let old = e.ctl.load(Ordering::Relaxed);
        fence(Ordering::Release);
        let (c, six) = addr_words(k.caddr);
        let (v, _) = addr_words(k.vaddr);
        let (d, _) = addr_words(dest_addr.ip());
        let to = timeout.as_millis() as u64;
        store2(&e.caddr, c);
        store2(&e.vaddr, v);
        store2(&e.daddr, d);
        store2(&e.laddr, [to, 0]);
        let ports = (k.vport as u64) << 16 | (dest_addr.port() as u64) << 32;
        e.ports.store(ports, Ordering::Relaxed);
        e.deadline.store(now.as_millis() + to, Ordering::Relaxed);
        e.aux.store(0, Ordering::Relaxed);
        e.link.store(L_PENDING, Ordering::Relaxed);
        let ctl = (old & !(u64::MAX >> (64 - GEN_SHIFT))).wrapping_add(GEN_ONE)
            | TEMPLATE
            | if six { AF6 } else { 0 }
            | proto_bits(k.proto);
        dest.bind(ConnClass::Template);
        e.dest.set(Arc::clone(dest));
        self.stats.templates.fetch_add(1, Ordering::Relaxed);
        e.ctl.store(ctl, Ordering::Release);
        let gen_ = gen_of(ctl);
        let h = self.hash_in_words(ctl, c, v, 0, k.vport);
        let ok = self.in_ix.insert(h, idx);
        self.push_stack(&self.pending, idx);
        if !ok {
            if self.kill(idx, gen_, None) {
                self.handoff(idx);
            }
            self.stats.refused_full.fetch_add(1, Ordering::Relaxed);
            return Err(TableFull);
        }
        self.stats.inserted.fetch_add(1, Ordering::Relaxed);
        let mine = TemplateRef {
            idx,
            gen_,
            six,
            daddr: d,
            dport: dest_addr.port(),
        };
        let want = ctl & KEY_MASK;
        let dup = self.in_ix.find(h, |j| {
            if j != idx {
                self.read_in(j, want, c, v, ports & 0xffff_ffff)
            } else {
                None
            }
        });
        match dup {
            Some(o) if o.idx < idx => {
                if self.kill(idx, gen_, None) {
                    self.handoff(idx);
                    self.stats.removed.fetch_add(1, Ordering::Relaxed);
                }
                Ok(TemplateRef {
                    idx: o.idx,
                    gen_: o.gen_,
                    six,
                    daddr: o.daddr,
                    dport: (o.ports >> 32) as u16,
                })
            }
            Some(o) => {
                if self.kill(o.idx, o.gen_, None) {
                    self.handoff(o.idx);
                    self.stats.removed.fetch_add(1, Ordering::Relaxed);
                }
                Ok(mine)
            }
            None => Ok(mine),
        }
    }

    /// The destination state a template points at (`None` if the template died).
    pub fn template_dest(&self, t: &TemplateRef) -> Option<Arc<DestState>> {
        let e = &self.entries[t.idx as usize];
        let d = e.dest.get();
        (gen_of(e.ctl.load(Ordering::Acquire)) == t.gen_)
            .then_some(d)
            .flatten()
    }

    /// Connections currently controlled by (pinning) a template.
    pub fn template_conns(&self, t: &TemplateRef) -> u32 {
        (self.entries[t.idx as usize].ctl.load(Ordering::Acquire) & NCTL_MASK) as u32
    }

    /// The kernel's `ip_vs_check_template`: a template is usable while its destination is
    /// still in the service (`current` is that destination as the service now lists it,
    /// `None` if it was removed) and, with `expire_quiescent_template` set, has a weight
    /// above 0. An unusable template is removed at once and false is returned; the caller
    /// then schedules afresh and creates a new template.
    pub fn check_template(&self, t: &TemplateRef, current: Option<&Destination>, now: Time) -> bool {
        let ok = match (current, self.template_dest(t)) {
            (Some(d), Some(td)) => {
                Arc::ptr_eq(&d.state, &td)
                    && !(d.config.weight == 0 && self.expire_quiescent_template.load(Ordering::Relaxed))
            }
            _ => false,
        };
        if !ok && self.kill(t.idx, t.gen_, Some(now)) {
            self.handoff(t.idx);
            self.stats.removed.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    // ---- housekeeping ----
    /// Housekeeping: files new entries in the timer wheel, recycles removed ones, and
    /// expires entries whose deadline passed, at most `budget` wheel entries per call
    /// (the rest is left for the next call). Only one thread works at a time; a concurrent
    /// caller returns 0 at once. Returns the number of entries expired.
    pub fn expire(&self, now: Time, budget: usize) -> usize {
        let Ok(mut w) = self.wheel.try_lock() else {
            return 0;
        };
        let now_ms = now.as_millis();
        if !w.started {
            w.started = true;
            w.next_tick = now_ms / TICK_MS;
        }
        self.drain_lists(&mut w, now_ms);
        // Entries whose deadline moved earlier: file them again.
        let mut i = self.resched.swap(NIL, Ordering::AcqRel);
        while i != NIL {
            let e = &self.entries[i as usize];
            let next = e.resched_next.load(Ordering::Relaxed);
            e.resched.store(0, Ordering::Release);
            if e.link.load(Ordering::Acquire) == L_WHEEL && w.is_linked(i) {
                w.unlink(i);
                let tick = w.next_tick;
                w.link(i, e.deadline.load(Ordering::Relaxed), tick);
            }
            i = next;
        }
        // Walk the elapsed ticks.
        let mut expired = 0;
        let mut budget = budget;
        while budget > 0 && (w.next_tick + 1) * TICK_MS <= now_ms {
            let tick = w.next_tick;
            let Some(idx) = w.pop(tick) else {
                w.next_tick += 1;
                continue;
            };
            budget -= 1;
            if self.visit(&mut w, idx, now_ms, tick) {
                expired += 1;
            }
        }
        self.stats.expired.fetch_add(expired as u64, Ordering::Relaxed);
        expired
    }

    /// Files newly inserted entries in the wheel and recycles killed ones.
    fn drain_lists(&self, w: &mut Wheel, now_ms: u64) {
        // New entries into the wheel.
        let mut i = self.pending.swap(NIL, Ordering::AcqRel);
        while i != NIL {
            let e = &self.entries[i as usize];
            let next = e.gc_next.load(Ordering::Relaxed);
            if e.link
                .compare_exchange(L_PENDING, L_WHEEL, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                let tick = w.next_tick;
                w.link(i, e.deadline.load(Ordering::Relaxed), tick);
            } else {
                self.reclaim_slot(w, i, now_ms);
            }
            i = next;
        }
        // Killed entries out of the wheel.
        let mut i = self.graveyard.swap(NIL, Ordering::AcqRel);
        while i != NIL {
            let next = self.entries[i as usize].gc_next.load(Ordering::Relaxed);
            w.unlink(i);
            self.reclaim_slot(w, i, now_ms);
            i = next;
        }
    }

    /// An entry just popped from the wheel slot of `tick`.
    fn visit(&self, w: &mut Wheel, idx: u32, now_ms: u64, tick: u64) -> bool {
        let e = &self.entries[idx as usize];
        match e.link.load(Ordering::Acquire) {
            L_ZOMBIE => {
                self.reclaim_slot(w, idx, now_ms);
                return false;
            }
            L_WHEEL => {}
            // Killed by another thread: it is (or will be) in the graveyard.
            _ => return false,
        }
        let ctl = e.ctl.load(Ordering::Acquire);
        if !is_live(ctl) {
            return false;
        }
        let deadline = e.deadline.load(Ordering::Relaxed);
        if deadline > now_ms {
            w.link(idx, deadline, tick + 1);
            return false;
        }
        if ctl & TEMPLATE != 0 && ctl & NCTL_MASK != 0 {
            // Still controls connections: the kernel re-arms the template's timer.
            let d = now_ms + e.laddr[0].load(Ordering::Relaxed).max(TICK_MS);
            e.deadline.store(d, Ordering::Relaxed);
            w.link(idx, d, tick + 1);
            return false;
        }
        if self.kill(idx, gen_of(ctl), Some(Time::from_millis(now_ms))) {
            self.reclaim_slot(w, idx, now_ms);
            true
        } else {
            false
        }
    }

    /// Frees a dead, unfiled slot, unless it is a template still pinned by connections.
    fn reclaim_slot(&self, w: &mut Wheel, idx: u32, now_ms: u64) {
        let e = &self.entries[idx as usize];
        let ctl = e.ctl.load(Ordering::Acquire);
        if ctl & TEMPLATE != 0 && ctl & NCTL_MASK != 0 {
            e.link.store(L_ZOMBIE, Ordering::Release);
            let t = now_ms / TICK_MS + 1;
            w.link(idx, now_ms + ZOMBIE_RECHECK_MS, t.max(w.next_tick + 1));
            return;
        }
        self.push_free(idx);
    }

    // ---- listing ----
    /// A consistent snapshot of every live entry (connections and templates), for
    /// `ipvsadm -L -n -c` and `--persistent-conn`. Walks the whole arena: a control-plane
    /// call, never per packet.
    pub fn iter(&self, now: Time) -> impl Iterator<Item = ConnInfo> + '_ {
        self.entries.iter().filter_map(move |e| {
            let g1 = e.ctl.load(Ordering::Acquire);
            if !is_live(g1) {
                return None;
            }
            let c = load2(&e.caddr);
            let v = load2(&e.vaddr);
            let d = load2(&e.daddr);
            let l = load2(&e.laddr);
            let p = e.ports.load(Ordering::Relaxed);
            let deadline = e.deadline.load(Ordering::Relaxed);
            fence(Ordering::Acquire);
            if gen_of(e.ctl.load(Ordering::Relaxed)) != gen_of(g1) {
                return None;
            }
            let six = g1 & AF6 != 0;
            let template = g1 & TEMPLATE != 0;
            let method = method_of(g1);
            Some(ConnInfo {
                proto: proto_of(g1),
                template,
                state: if template { ConnState::None } else { state_of(g1) },
                client: SocketAddr::new(words_addr(c, six), p as u16),
                virt: SocketAddr::new(words_addr(v, six), (p >> 16) as u16),
                dest: SocketAddr::new(words_addr(d, six), (p >> 32) as u16),
                local: (!template && method == ForwardMethod::FullNat)
                    .then(|| SocketAddr::new(words_addr(l, six), (p >> 48) as u16)),
                method,
                expires: Duration::from_millis(deadline.saturating_sub(now.as_millis())),
                controlled: if template { (g1 & NCTL_MASK) as u32 } else { 0 },
            })
        })
    }
}
