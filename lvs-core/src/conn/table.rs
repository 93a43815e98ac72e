//! The table itself: the arenas of atomic entries, the two indexes, free lists, insert,
//! lookup, state updates, removal, templates and housekeeping.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crossbeam_utils::CachePadded;

use super::dests::DestRegistry;
use super::freelist::{FreeList, NIL, Stack};
use super::index::{BUCKET_BYTES, Index};
use super::list::ConnInfo;
use super::prefetch::fetch;
use super::seqlock::{
    GEN_ONE, begin_write, gen_of, is_live, next_live, publish, read_begin, read_end, retire,
};
use super::state::{ConnState, Direction, TableDir, TcpFlags, Timeouts, tcp_next};
use super::wheel::{Links, TICK_MS, UNLINKED, Wheel};
use crate::dest::{ConnClass, DestState, Destination, ForwardMethod};
use crate::service::{AddrFamily, PersistNetmask, Protocol};
use crate::time::Time;

mod fast4;
mod stage4;
pub use fast4::{Conn4, ConnKeyIn4, ConnKeyOut4};
pub use stage4::{NewConn4, Reservation, Staged4};

// ---- control word layout -------------------------------------------------------------
// Bits 40..64: seqlock generation (see `seqlock.rs`).
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
fn state_of(ctl: u64) -> ConnState {
    ConnState::from_nibble(((ctl & STATE_MASK) >> STATE_SHIFT) as u8)
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
const fn method_bits(m: ForwardMethod) -> u64 {
    let v = match m {
        ForwardMethod::Masq => 0,
        ForwardMethod::DirectRoute => 1,
        ForwardMethod::Tunnel => 2,
        ForwardMethod::FullNat => 3,
    };
    v << METHOD_SHIFT
}
#[inline]
const fn proto_bits(p: Option<Protocol>) -> u64 {
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
/// An address as two words: for an IPv6 connection the 128 bits (an IPv4 address in its
/// IPv4-mapped form), for an IPv4 connection `[0, the 32 bits]` (an IPv6 address there, which
/// a well-formed IPv4 connection never has, keeps its low 32 bits).
#[inline]
fn key_addr(a: IpAddr, six: bool) -> [u64; 2] {
    if six {
        let v = match a {
            IpAddr::V4(v4) => 0xffff_0000_0000u128 | u32::from(v4) as u128,
            IpAddr::V6(v6) => u128::from(v6),
        };
        [(v >> 64) as u64, v as u64]
    } else {
        [0, v4_bits(a) as u64]
    }
}

#[inline]
fn v4_bits(a: IpAddr) -> u32 {
    match a {
        IpAddr::V4(v4) => u32::from(v4),
        IpAddr::V6(v6) => u128::from(v6) as u32,
    }
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

/// What the seed of the server-side index is xor-ed with.
const OUT_SEED: u64 = 0x5bd1_e995_c3a5_c85c;

/// Hash of an IPv6 key: two addresses (four words) and one word of ports and kind bits.
#[inline]
fn hash6(seed: u64, a: [u64; 2], b: [u64; 2], w: u64) -> u64 {
    let x = fold(a[0] ^ seed ^ K[0], a[1] ^ K[1]);
    let y = fold(b[0] ^ K[2], b[1] ^ seed.rotate_left(29) ^ K[3]);
    fold(x ^ w ^ K[4], y ^ K[5])
}

/// Hash of an IPv4 key: both addresses in one word, ports and kind bits in another.
#[inline]
fn hash4(seed: u64, ab: u64, w: u64) -> u64 {
    let x = fold(ab ^ seed ^ K[0], w ^ K[1]);
    fold(x ^ K[2], K[3] ^ seed.rotate_left(29))
}

#[inline]
fn hash_words(seed: u64, six: bool, a: [u64; 2], b: [u64; 2], w: u64) -> u64 {
    if six {
        hash6(seed, a, b, w)
    } else {
        hash4(seed, a[1] | b[1] << 32, w)
    }
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
    /// The addresses. IPv4: `[client | virtual << 32, destination | local << 32, 0, …]`
    /// (the local address 0 unless FULLNAT), as the entry keeps them, so that a lookup
    /// copies two words; IPv6: client, virtual, destination and local address, two words
    /// each (as [`key_addr`] gives them).
    w: [u64; 8],
}

impl ConnRef {
    #[inline]
    fn six(&self) -> bool {
        self.ctl & AF6 != 0
    }
    /// Address `i` (0 client, 1 virtual, 2 destination, 3 local) as [`key_addr`] words.
    #[inline]
    fn words(&self, i: usize) -> [u64; 2] {
        if self.six() {
            [self.w[2 * i], self.w[2 * i + 1]]
        } else {
            [0, (self.w[i / 2] >> (32 * (i % 2))) & 0xffff_ffff]
        }
    }
    #[inline]
    fn addr(&self, i: usize) -> IpAddr {
        words_addr(self.words(i), self.six())
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
        SocketAddr::new(self.addr(0), self.ports as u16)
    }
    /// Virtual address and port.
    pub fn virt(&self) -> SocketAddr {
        SocketAddr::new(self.addr(1), (self.ports >> 16) as u16)
    }
    /// Real server address and port.
    pub fn dest_addr(&self) -> SocketAddr {
        SocketAddr::new(self.addr(2), (self.ports >> 32) as u16)
    }
    /// Id of the destination the connection is bound to ([`DestState::id`], modulo 2^27).
    pub fn dest_id(&self) -> u32 {
        (self.ctl & NCTL_MASK) as u32
    }
    /// FULLNAT local address and port (`None` for other methods).
    pub fn local(&self) -> Option<SocketAddr> {
        (self.method() == ForwardMethod::FullNat)
            .then(|| SocketAddr::new(self.addr(3), (self.ports >> 48) as u16))
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

// ---- the entries ---------------------------------------------------------------------
// Reclamation states of a slot (`Entry::link`).
const L_FREE: u16 = 0;
const L_PENDING: u16 = 1;
const L_WHEEL: u16 = 2;
const L_GRAVE: u16 = 3;
const L_ZOMBIE: u16 = 4;

/// One arena slot: a whole IPv4 connection in one cache line, or the first line of an IPv6
/// one (whose addresses are in the [`Wide`] line next to it). The first 32 bytes are what
/// a lookup reads; `deadline` is what a packet writes.
#[repr(C, align(64))]
struct Entry {
    ctl: AtomicU64,
    /// IPv4: caddr | vaddr << 32. IPv6: unused.
    cv: AtomicU64,
    /// IPv4: daddr | laddr << 32 (the FULLNAT local address). A template (both families)
    /// keeps its timeout in milliseconds in the high half.
    dl: AtomicU64,
    /// cport | vport << 16 | dport << 32 | lport << 48.
    ports: AtomicU64,
    /// Milliseconds (caller's clock) at which the entry expires.
    deadline: AtomicU64,
    /// Connection: its template's slot + 1 (0 = none). Template: its destination's id.
    aux: AtomicU32,
    /// Link of the free list, the pending list and the graveyard.
    gc_next: AtomicU32,
    /// Reclamation state (`L_*`).
    link: AtomicU16,
    /// 1 while the slot is on the reschedule list.
    resched: AtomicU16,
    /// Link of the reschedule list (deadlines moved earlier).
    resched_next: AtomicU32,
    /// Timer wheel links, previous and next (owned by the housekeeper).
    wlinks: [AtomicU32; 2],
}

impl Entry {
    fn new(gc_next: u32) -> Entry {
        Entry {
            ctl: AtomicU64::new(GEN_ONE),
            cv: AtomicU64::new(0),
            dl: AtomicU64::new(0),
            ports: AtomicU64::new(0),
            deadline: AtomicU64::new(0),
            aux: AtomicU32::new(0),
            gc_next: AtomicU32::new(gc_next),
            link: AtomicU16::new(L_FREE),
            resched: AtomicU16::new(0),
            resched_next: AtomicU32::new(NIL),
            wlinks: [AtomicU32::new(UNLINKED), AtomicU32::new(NIL)],
        }
    }
}

/// The four addresses of an IPv6 connection (or template).
#[repr(C, align(64))]
struct Wide {
    caddr: [AtomicU64; 2],
    vaddr: [AtomicU64; 2],
    daddr: [AtomicU64; 2],
    laddr: [AtomicU64; 2],
}

/// An IPv6 arena slot: two cache lines.
#[repr(C)]
struct WideSlot {
    hdr: Entry,
    addrs: Wide,
}

/// IPv6 slots are allocated in segments of this many, on first use.
const SEG_BITS: u32 = 12;
const SEG: usize = 1 << SEG_BITS;

/// Most keys [`ConnTable::prefetch_in`] and [`ConnTable::prefetch_out`] use per call (a
/// receive burst).
pub const PREFETCH_BURST: usize = 32;

/// What a hinted prefetch ([`ConnTable::prefetch_in_hinted`],
/// [`ConnTable::prefetch_out_hinted`]) learnt about one key: its hash, its home bucket and
/// the entry that bucket points at, for the lookup of that same key that follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LookupHint {
    hash: u64,
    cand: u32,
    /// The home bucket; `u32::MAX` for no hint.
    home: u32,
}

impl LookupHint {
    /// No hint: a hinted lookup given it is a plain lookup.
    pub const NONE: LookupHint = LookupHint {
        hash: 0,
        cand: u32::MAX,
        home: u32::MAX,
    };

    /// The candidate of a hint whose prefetch found the key absent (not a slot number: a
    /// lookup given it probes as without a candidate).
    const ABSENT: u32 = u32::MAX - 1;

    /// True if the prefetch found no entry of this key: no tag of it in its home bucket and
    /// no key pushed past that bucket. An answer as of the prefetch: an entry of the key
    /// inserted since is not seen here (the hinted lookups still probe and find it), so a
    /// caller may skip the lookup on it only while nothing could have inserted the key.
    #[inline(always)]
    pub fn absent(&self) -> bool {
        self.cand == Self::ABSENT
    }

    /// True if the hint was filled by a prefetch.
    #[inline]
    fn known(&self) -> bool {
        self.home != u32::MAX
    }

    /// The key's hash, if the hint was filled by a prefetch.
    #[inline(always)]
    fn hash_if_known(&self) -> Option<u64> {
        self.known().then_some(self.hash)
    }
}

impl Default for LookupHint {
    fn default() -> Self {
        LookupHint::NONE
    }
}

/// Bytes of one IPv4 arena entry (an IPv6 entry takes twice as many).
pub const ENTRY_BYTES: usize = std::mem::size_of::<Entry>();

/// Bytes of one IPv6 arena entry.
pub const ENTRY_BYTES_V6: usize = std::mem::size_of::<WideSlot>();

const _: () = assert!(ENTRY_BYTES == 64 && ENTRY_BYTES_V6 == 128);

/// The address of an entry's line (for a [`Prefetch`]).
#[inline]
fn line_addr(e: &Entry) -> *const u8 {
    (e as *const Entry).cast()
}

#[inline]
fn load2(a: &[AtomicU64; 2]) -> [u64; 2] {
    [a[0].load(Ordering::Relaxed), a[1].load(Ordering::Relaxed)]
}
#[inline]
fn store2(a: &[AtomicU64; 2], v: [u64; 2]) {
    a[0].store(v[0], Ordering::Relaxed);
    a[1].store(v[1], Ordering::Relaxed);
}

/// The four addresses of an entry or key, as words (see [`key_addr`]).
#[derive(Clone, Copy)]
struct Addrs {
    c: [u64; 2],
    v: [u64; 2],
    d: [u64; 2],
    l: [u64; 2],
}

#[derive(Default)]
struct Stats {
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
    /// IPv4 slots `0..narrow.len()`, preallocated.
    narrow: Box<[Entry]>,
    /// IPv6 slots `narrow.len()..narrow.len() + wide_cap`, in segments allocated on first use.
    wide: Box<[OnceLock<Box<[WideSlot]>>]>,
    wide_cap: u32,
    /// IPv6 slots handed out so far (the next fresh one).
    wide_next: CachePadded<AtomicU32>,
    capacity: u32,
    in_ix: Index,
    out_ix: Index,
    seed: u64,
    free4: CachePadded<FreeList>,
    free6: CachePadded<FreeList>,
    /// Newly inserted entries waiting to be filed in the wheel.
    pending: CachePadded<Stack>,
    /// Entries killed while in the wheel, waiting to be unfiled and freed.
    graveyard: CachePadded<Stack>,
    /// Entries whose deadline moved earlier, to be re-filed in the wheel.
    resched: CachePadded<Stack>,
    live: CachePadded<AtomicU64>,
    reclaim_cursor: CachePadded<AtomicU32>,
    stats: Stats,
    dests: DestRegistry,
    timeouts: Timeouts,
    expire_quiescent_template: AtomicBool,
    wheel: Mutex<Wheel>,
    /// Told the FULLNAT local address of every connection that dies (to return its port to
    /// the pool), whatever ends it: expiry, removal, reclaim.
    on_local_release: OnceLock<LocalRelease>,
    /// The embedder's prefetch instruction, if any (see [`Prefetch`]).
    prefetch: OnceLock<Prefetch>,
}

/// Callback receiving the FULLNAT local address and port of a connection that died.
pub type LocalRelease = Box<dyn Fn(SocketAddr) + Send + Sync>;

/// A software prefetch: asks the CPU for the cache line holding an address and returns
/// without waiting for it (x86's `prefetcht0`). It must be sound for any address, which a
/// prefetch instruction is (it never faults and changes nothing a load can see). The table
/// uses the CPU's own on x86-64 and loads elsewhere, unless the embedder registers one
/// ([`ConnTable::set_prefetch`]).
pub type Prefetch = fn(*const u8);

impl std::fmt::Debug for ConnTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnTable")
            .field("capacity", &self.capacity)
            .field("counters", &self.counters())
            .field("destinations", &self.dests.len())
            .finish()
    }
}

impl Links for ConnTable {
    #[inline]
    fn links(&self, i: u32) -> &[AtomicU32; 2] {
        &self.slot(i).wlinks
    }
}

/// A new connection's first state: NONE (TCP), UDP (UDP) or ESTABLISHED (SCTP, minimal).
const fn first_state(p: Protocol) -> ConnState {
    match p {
        Protocol::Tcp => ConnState::None,
        Protocol::Udp => ConnState::Udp,
        Protocol::Sctp => ConnState::Established,
    }
}

/// The control word bits of a new connection (state, method, protocol, NOOUTPUT for DR
/// and TUN, HAS_OUT for NAT and FULLNAT) and its first state, by method and protocol (as
/// `as usize` numbers them): one load instead of a few matches per insert.
const NEW_KIND: [[(u64, ConnState); 3]; 4] = {
    let methods = [
        ForwardMethod::Masq,
        ForwardMethod::DirectRoute,
        ForwardMethod::Tunnel,
        ForwardMethod::FullNat,
    ];
    let protos = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp];
    let mut t = [[(0, ConnState::None); 3]; 4];
    let mut i = 0;
    while i < methods.len() {
        let m = methods[i];
        let has_out = matches!(m, ForwardMethod::Masq | ForwardMethod::FullNat);
        let mut j = 0;
        while j < protos.len() {
            let p = protos[j];
            let state = first_state(p);
            let bits = ((state as u64) << STATE_SHIFT)
                | method_bits(m)
                | proto_bits(Some(p))
                | if has_out { HAS_OUT } else { NOOUTPUT };
            t[m as usize][p as usize] = (bits, state);
            j += 1;
        }
        i += 1;
    }
    t
};

/// Entries sampled when looking for a SYN_RECV entry to reclaim on a full table.
const RECLAIM_SAMPLE: u32 = 32;
/// How often a removed template still holding connections is checked again.
const ZOMBIE_RECHECK_MS: u64 = 1000;
/// Largest capacity (both arenas' slot numbers must fit the index's 28 bits).
const MAX_CAPACITY: usize = 100_000_000;

impl ConnTable {
    /// A table for at most `capacity` live entries (connections + templates). The IPv4
    /// arena is preallocated; the IPv6 arena (as many slots) is allocated in segments on
    /// first use.
    pub fn with_capacity(capacity: usize) -> ConnTable {
        ConnTable::with_capacity_and_seed(capacity, 0x9e37_79b9_7f4a_7c15)
    }

    /// As [`with_capacity`](Self::with_capacity), with the hash seed given (pick a random
    /// one in production so that clients cannot aim at one bucket chain).
    pub fn with_capacity_and_seed(capacity: usize, seed: u64) -> ConnTable {
        let capacity = capacity.clamp(1, MAX_CAPACITY);
        let arena = capacity + capacity / 8 + 256;
        // Every IPv4 slot chained into its free list, generation 1 (odd = not live).
        let narrow: Box<[Entry]> = (0..arena)
            .map(|i| Entry::new(if i + 1 == arena { NIL } else { i as u32 + 1 }))
            .collect();
        let slots = 2 * arena as u64;
        let slot_bits = 64 - (slots - 1).leading_zeros();
        ConnTable {
            in_ix: Index::for_keys(capacity, slot_bits),
            out_ix: Index::for_keys(capacity, slot_bits),
            capacity: capacity as u32,
            narrow,
            wide: (0..arena.div_ceil(SEG)).map(|_| OnceLock::new()).collect(),
            wide_cap: arena as u32,
            wide_next: CachePadded::new(AtomicU32::new(0)),
            seed,
            free4: CachePadded::new(FreeList::new(0)),
            free6: CachePadded::new(FreeList::new(NIL)),
            pending: CachePadded::new(Stack::new()),
            graveyard: CachePadded::new(Stack::new()),
            resched: CachePadded::new(Stack::new()),
            live: CachePadded::new(AtomicU64::new(0)),
            reclaim_cursor: CachePadded::new(AtomicU32::new(0)),
            stats: Stats::default(),
            dests: DestRegistry::new(),
            timeouts: Timeouts::default(),
            expire_quiescent_template: AtomicBool::new(false),
            wheel: Mutex::new(Wheel::new(slots as u32)),
            on_local_release: OnceLock::new(),
            prefetch: OnceLock::new(),
        }
    }

    /// Registers the callback told the FULLNAT local address of each connection that dies
    /// (the pipeline returns the port to its pool). Only the first registration counts;
    /// returns false if one was already set.
    pub fn set_local_release(&self, f: LocalRelease) -> bool {
        self.on_local_release.set(f).is_ok()
    }

    /// Registers the prefetch instruction the burst stages ([`lookup_in_batch`],
    /// [`prefetch_in_hinted`], [`prefetch_out_hinted`]) use to bring in home buckets and
    /// candidate entries, in place of the built-in one (x86-64 `prefetcht0`; none on other
    /// CPUs, where the stages load). A prefetch does not hold the CPU's reorder window the
    /// way a load that misses does, so more of a burst's misses overlap (at 1M entries,
    /// batched hits went from 40–48 to 28–36 ns here, see `benches/examples/layout_probe.rs`).
    /// Only the first registration counts; returns false if one was already set.
    ///
    /// [`lookup_in_batch`]: Self::lookup_in_batch
    /// [`prefetch_in_hinted`]: Self::prefetch_in_hinted
    /// [`prefetch_out_hinted`]: Self::prefetch_out_hinted
    pub fn set_prefetch(&self, f: Prefetch) -> bool {
        self.prefetch.set(f).is_ok()
    }

    /// The prefetch the burst stages use: the registered one, else the CPU's own
    /// (`prefetcht0` on x86-64), else none (the stages load).
    #[inline]
    fn prefetcher(&self) -> Option<Prefetch> {
        self.prefetch.get().copied().or(super::prefetch::BUILTIN)
    }

    /// Configured capacity (live entries).
    pub fn capacity(&self) -> usize {
        self.capacity as usize
    }

    /// Memory the table preallocates for IPv4 connections, divided by its capacity: the
    /// arena slot (with its slack share), both index slots at their load factor, and the
    /// directory of the (lazily allocated) IPv6 arena. Wheel links live in the entries.
    pub fn bytes_per_entry(&self) -> f64 {
        let arena = self.narrow.len() * ENTRY_BYTES;
        let index = (self.in_ix.buckets() + self.out_ix.buckets()) * BUCKET_BYTES;
        let dir = self.wide.len() * std::mem::size_of::<OnceLock<Box<[WideSlot]>>>();
        (arena + index + dir) as f64 / self.capacity as f64
    }

    /// As [`bytes_per_entry`](Self::bytes_per_entry) for a table full of IPv6 connections:
    /// the IPv6 arena (allocated as used) and both index slots.
    pub fn bytes_per_entry_v6(&self) -> f64 {
        let arena = self.wide_cap as usize * ENTRY_BYTES_V6;
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
        let templates = l(&self.stats.templates);
        ConnCounters {
            conns: l(&self.live).saturating_sub(templates),
            templates,
            refused_full: l(&self.stats.refused_full),
            reclaimed_synrecv: l(&self.stats.reclaimed_synrecv),
            expired: l(&self.stats.expired),
            removed: l(&self.stats.removed),
            inserted: l(&self.stats.inserted),
        }
    }

    /// Live entries (connections + templates), counting the capacity that inserts under way
    /// hold (a staged connection not yet committed, a burst's unused
    /// [`Reservation`](super::Reservation) units).
    pub fn len(&self) -> usize {
        self.live.load(Ordering::Relaxed) as usize
    }

    /// True when no entry is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    // ---- slots ----
    /// The entry of a slot that exists (from an index, a handle or a list).
    #[inline]
    fn slot(&self, idx: u32) -> &Entry {
        match self.narrow.get(idx as usize) {
            Some(e) => e,
            None => &self.wide_slot(idx).expect("allocated IPv6 slot").hdr,
        }
    }

    /// The entry of slot `idx` if that slot was ever handed out.
    #[inline]
    fn try_slot(&self, idx: u32) -> Option<&Entry> {
        match self.narrow.get(idx as usize) {
            Some(e) => Some(e),
            None => self.wide_slot(idx).map(|w| &w.hdr),
        }
    }

    #[inline]
    fn wide_slot(&self, idx: u32) -> Option<&WideSlot> {
        let j = (idx as usize).checked_sub(self.narrow.len())?;
        self.wide.get(j >> SEG_BITS)?.get().map(|s| &s[j & (SEG - 1)])
    }

    /// Slots that may hold entries (IPv4 arena, then the IPv6 slots handed out so far).
    fn slots_in_use(&self) -> u32 {
        self.narrow.len() as u32 + self.wide_next.load(Ordering::Acquire)
    }

    // ---- hashing of entries and keys ----
    #[inline]
    fn hash_in_words(&self, kind: u64, c: [u64; 2], v: [u64; 2], ports: u64) -> u64 {
        hash_words(
            self.seed,
            kind & AF6 != 0,
            c,
            v,
            (ports & 0xffff_ffff) | (kind & KEY_MASK),
        )
    }
    #[inline]
    fn hash_out_words(&self, kind: u64, d: [u64; 2], a: [u64; 2], dport: u16, port: u16) -> u64 {
        hash_words(
            self.seed ^ OUT_SEED,
            kind & AF6 != 0,
            d,
            a,
            dport as u64 | (port as u64) << 16 | (kind & (AF6 | PROTO_MASK)),
        )
    }
    #[inline]
    fn entry_hash_out(&self, ctl: u64, a: &Addrs, ports: u64) -> u64 {
        let (addr, port) = if method_of(ctl) == ForwardMethod::FullNat {
            (a.l, (ports >> 48) as u16)
        } else {
            (a.c, ports as u16)
        };
        self.hash_out_words(ctl, a.d, addr, (ports >> 32) as u16, port)
    }

    /// The addresses of slot `idx` whose control word is `ctl` (a seqlock read if the
    /// entry is not owned by the caller).
    #[inline]
    fn load_addrs(&self, idx: u32, e: &Entry, ctl: u64) -> Addrs {
        if ctl & AF6 != 0 {
            match self.wide_slot(idx) {
                Some(w) => Addrs {
                    c: load2(&w.addrs.caddr),
                    v: load2(&w.addrs.vaddr),
                    d: load2(&w.addrs.daddr),
                    l: load2(&w.addrs.laddr),
                },
                None => Addrs {
                    c: [0; 2],
                    v: [0; 2],
                    d: [0; 2],
                    l: [0; 2],
                },
            }
        } else {
            let cv = e.cv.load(Ordering::Relaxed);
            let dl = e.dl.load(Ordering::Relaxed);
            Addrs {
                c: [0, cv & 0xffff_ffff],
                v: [0, cv >> 32],
                d: [0, dl & 0xffff_ffff],
                l: [0, dl >> 32],
            }
        }
    }

    /// Writes the addresses of a slot the caller owns; `hi` is what a template keeps in the
    /// high half of `dl` (its timeout) instead of a local address.
    #[inline]
    fn store_addrs(&self, idx: u32, e: &Entry, six: bool, a: &Addrs, tmpl_timeout: Option<u32>) {
        if six {
            let w = self.wide_slot(idx).expect("allocated IPv6 slot");
            store2(&w.addrs.caddr, a.c);
            store2(&w.addrs.vaddr, a.v);
            store2(&w.addrs.daddr, a.d);
            store2(&w.addrs.laddr, a.l);
            e.cv.store(0, Ordering::Relaxed);
            e.dl.store((tmpl_timeout.unwrap_or(0) as u64) << 32, Ordering::Relaxed);
        } else {
            e.cv.store(a.c[1] | a.v[1] << 32, Ordering::Relaxed);
            let hi = tmpl_timeout.map_or(a.l[1], |t| t as u64);
            e.dl.store(a.d[1] | hi << 32, Ordering::Relaxed);
        }
    }

    /// A consistent copy of live slot `idx` (generation of `g1`, loaded with acquire):
    /// ports, addresses and deadline; `None` if it changed meanwhile.
    #[inline]
    fn snapshot(&self, idx: u32, e: &Entry, g1: u64) -> Option<(u64, Addrs, u64)> {
        if !is_live(g1) {
            return None;
        }
        let ports = e.ports.load(Ordering::Relaxed);
        let a = self.load_addrs(idx, e, g1);
        let deadline = e.deadline.load(Ordering::Relaxed);
        read_end(&e.ctl, g1).then_some((ports, a, deadline))
    }

    #[inline]
    fn conn_ref(idx: u32, g1: u64, ports: u64, a: &Addrs) -> ConnRef {
        let l = if g1 & TEMPLATE == 0 && method_of(g1) == ForwardMethod::FullNat {
            a.l
        } else {
            [0; 2]
        };
        let w = if g1 & AF6 != 0 {
            [a.c[0], a.c[1], a.v[0], a.v[1], a.d[0], a.d[1], l[0], l[1]]
        } else {
            [
                a.c[1] & 0xffff_ffff | a.v[1] << 32,
                a.d[1] & 0xffff_ffff | l[1] << 32,
                0,
                0,
                0,
                0,
                0,
                0,
            ]
        };
        ConnRef {
            idx,
            gen_: gen_of(g1),
            ctl: g1,
            ports,
            w,
        }
    }

    // ---- lookups ----
    /// Finds the connection of a client's packet. Lock-free, allocation-free.
    #[inline]
    pub fn lookup_in(&self, k: &ConnKeyIn) -> Option<ConnRef> {
        let pw = k.cport as u64 | (k.vport as u64) << 16;
        if k.caddr.is_ipv4() {
            let want = proto_bits(Some(k.proto));
            let cv = v4_bits(k.caddr) as u64 | (v4_bits(k.vaddr) as u64) << 32;
            let h = hash4(self.seed, cv, pw | want);
            return self.in_ix.find(h, |idx| {
                let e = self.narrow.get(idx as usize)?;
                self.read_in4(idx, e, read_begin(&e.ctl), want, cv, pw)
            });
        }
        let want = proto_bits(Some(k.proto)) | AF6;
        let c = key_addr(k.caddr, true);
        let v = key_addr(k.vaddr, true);
        let h = self.hash_in_words(want, c, v, pw);
        self.in_ix.find(h, |idx| self.read_in(idx, want, c, v, pw))
    }

    /// The seqlock read of IPv4 slot `idx` against a client-side key; `g1` is its control
    /// word, loaded (acquire) first.
    #[inline]
    fn read_in4(&self, idx: u32, e: &Entry, g1: u64, want: u64, cv: u64, pw: u64) -> Option<ConnRef> {
        debug_assert_eq!(want & !KEY_MASK, 0);
        Self::read4_in(idx, e, g1, want, cv, pw).map(|c| c.conn_ref())
    }

    /// The handle of IPv4 slot `idx` from its words, read consistently.
    #[inline]
    fn conn_ref4(idx: u32, g1: u64, cv: u64, dl: u64, ports: u64) -> ConnRef {
        ConnRef {
            idx,
            gen_: gen_of(g1),
            ctl: g1,
            ports,
            // A connection's high half of `dl` is its FULLNAT local address, 0 for the other
            // methods. (A template keeps its timeout there; a template's handle never leaves
            // the table, only its destination does, see `TemplateRef`.)
            w: [cv, dl, 0, 0, 0, 0, 0, 0],
        }
    }

    /// The seqlock read of slot `idx` against a client-side key of either family (kind bits
    /// `want`, addresses as [`key_addr`] words, `pw` = cport | vport << 16).
    #[inline]
    fn read_in(&self, idx: u32, want: u64, c: [u64; 2], v: [u64; 2], pw: u64) -> Option<ConnRef> {
        if want & AF6 == 0 {
            let e = self.narrow.get(idx as usize)?;
            return self.read_in4(idx, e, read_begin(&e.ctl), want, c[1] | v[1] << 32, pw);
        }
        let w = self.wide_slot(idx)?;
        let g1 = read_begin(&w.hdr.ctl);
        if !is_live(g1) || g1 & KEY_MASK != want {
            return None;
        }
        let ports = w.hdr.ports.load(Ordering::Relaxed);
        if ports & 0xffff_ffff != pw || load2(&w.addrs.caddr) != c || load2(&w.addrs.vaddr) != v {
            return None;
        }
        let (ports, a, _) = self.snapshot(idx, &w.hdr, g1)?;
        Some(Self::conn_ref(idx, g1, ports, &a))
    }

    /// Warms the cache for a burst of client packets that will then be looked up one by one
    /// with [`lookup_in`](Self::lookup_in): the home bucket of every key, then the line of
    /// every candidate entry (its key, and the deadline [`on_packet`](Self::on_packet)
    /// writes), each stage a tight loop of independent loads so the cache and TLB misses
    /// of the whole burst overlap instead of following one another. Reads only; at most
    /// [`PREFETCH_BURST`] keys are used.
    pub fn prefetch_in(&self, keys: &[ConnKeyIn]) {
        let mut hints = [LookupHint::NONE; PREFETCH_BURST];
        self.prefetch_in_hinted(keys, &mut hints);
    }

    /// [`prefetch_in`](Self::prefetch_in) that also hands back, in `hints[i]`, what it
    /// learnt about `keys[i]` (its hash and the entry its home bucket points at), so that
    /// [`lookup_in_hinted`](Self::lookup_in_hinted) neither hashes the key again nor probes
    /// the index again when that entry is the key's. At most `min(keys.len(), hints.len(),
    /// PREFETCH_BURST)` keys are used.
    pub fn prefetch_in_hinted(&self, keys: &[ConnKeyIn], hints: &mut [LookupHint]) {
        let m = keys.len().min(hints.len()).min(PREFETCH_BURST);
        for (h, k) in hints[..m].iter_mut().zip(&keys[..m]) {
            let pw = k.cport as u64 | (k.vport as u64) << 16;
            let hash = if k.caddr.is_ipv4() {
                let cv = v4_bits(k.caddr) as u64 | (v4_bits(k.vaddr) as u64) << 32;
                hash4(self.seed, cv, pw | proto_bits(Some(k.proto)))
            } else {
                let want = proto_bits(Some(k.proto)) | AF6;
                self.hash_in_words(want, key_addr(k.caddr, true), key_addr(k.vaddr, true), pw)
            };
            h.hash = hash;
        }
        self.prefetch_stages(&self.in_ix, &mut hints[..m]);
    }

    /// [`prefetch_in`](Self::prefetch_in) for real servers' replies, ahead of
    /// [`lookup_out`](Self::lookup_out).
    pub fn prefetch_out(&self, keys: &[ConnKeyOut]) {
        let mut hints = [LookupHint::NONE; PREFETCH_BURST];
        self.prefetch_out_hinted(keys, &mut hints);
    }

    /// [`prefetch_in_hinted`](Self::prefetch_in_hinted) for real servers' replies, ahead of
    /// [`lookup_out_hinted`](Self::lookup_out_hinted).
    pub fn prefetch_out_hinted(&self, keys: &[ConnKeyOut], hints: &mut [LookupHint]) {
        let m = keys.len().min(hints.len()).min(PREFETCH_BURST);
        for (h, k) in hints[..m].iter_mut().zip(&keys[..m]) {
            let six = k.daddr.is_ipv6();
            let want = proto_bits(Some(k.proto)) | if six { AF6 } else { 0 };
            h.hash = self.hash_out_words(
                want,
                key_addr(k.daddr, six),
                key_addr(k.addr, six),
                k.dport,
                k.port,
            );
        }
        self.prefetch_stages(&self.out_ix, &mut hints[..m]);
    }

    /// The stages of a prefetch over hints holding their keys' hashes: home buckets (kept
    /// in the hints), then a candidate of each (kept too), then the candidates' lines.
    #[inline]
    fn prefetch_stages(&self, ix: &Index, hints: &mut [LookupHint]) {
        let pf = self.prefetcher();
        let mut sink = 0u64;
        match pf {
            Some(f) => hints.iter_mut().for_each(|h| {
                let b = ix.home(h.hash);
                h.home = b as u32;
                fetch(f, ix.bucket_addr(b));
            }),
            None => hints.iter_mut().for_each(|h| {
                let b = ix.home(h.hash);
                h.home = b as u32;
                sink ^= ix.touch_bucket(b) as u64;
            }),
        }
        match pf {
            // Each candidate's line is asked for as soon as its bucket names it.
            Some(f) => hints.iter_mut().for_each(|h| {
                h.cand = Self::hint_cand(ix, h);
                if let Some(e) = self.try_slot(h.cand) {
                    fetch(f, line_addr(e));
                }
            }),
            // Loads would wait for their lines: after every bucket is scanned.
            None => {
                for h in hints.iter_mut() {
                    h.cand = Self::hint_cand(ix, h);
                }
                for h in hints.iter() {
                    if let Some(e) = self.try_slot(h.cand) {
                        sink ^= e.ctl.load(Ordering::Relaxed) ^ e.deadline.load(Ordering::Relaxed);
                    }
                }
            }
        }
        std::hint::black_box(sink);
    }

    /// The candidate of hint `h` (its hash and home known): the home bucket's matching slot,
    /// `u32::MAX` for none, [`LookupHint::ABSENT`] if nothing was pushed past the bucket
    /// either (without a branch on it).
    #[inline(always)]
    fn hint_cand(ix: &Index, h: &LookupHint) -> u32 {
        let cand = ix.home_hint(h.hash, h.home as usize);
        cand - ((cand == u32::MAX) & !ix.overflowed(h.home as usize)) as u32
    }

    /// [`lookup_in`](Self::lookup_in) with the hint that
    /// [`prefetch_in_hinted`](Self::prefetch_in_hinted) gave for the same key: the hinted entry is checked first
    /// (it is the answer unless the table changed since), else the index is probed with the
    /// hinted hash. Same result and guarantees as `lookup_in`, an entry inserted or removed
    /// since the prefetch included. A hint of another key may miss; [`LookupHint::NONE`]
    /// does a plain `lookup_in`.
    #[inline]
    pub fn lookup_in_hinted(&self, k: &ConnKeyIn, hint: &LookupHint) -> Option<ConnRef> {
        if !hint.known() {
            return self.lookup_in(k);
        }
        let pw = k.cport as u64 | (k.vport as u64) << 16;
        if k.caddr.is_ipv4() {
            let want = proto_bits(Some(k.proto));
            let cv = v4_bits(k.caddr) as u64 | (v4_bits(k.vaddr) as u64) << 32;
            debug_assert_eq!(hint.hash, hash4(self.seed, cv, pw | want), "hint of another key");
            // The hinted entry inline; probing the index (the table changed since the
            // prefetch, or a miss) out of line.
            if let Some(e) = self.narrow.get(hint.cand as usize)
                && let Some(c) = self.read_in4(hint.cand, e, read_begin(&e.ctl), want, cv, pw)
            {
                return Some(c);
            }
            return self.probe_in4(hint.hash, want, cv, pw);
        }
        self.lookup_in6_hinted(k, hint, pw)
    }

    /// The index probe of [`lookup_in_hinted`](Self::lookup_in_hinted) for an IPv4 key.
    #[inline(never)]
    fn probe_in4(&self, hash: u64, want: u64, cv: u64, pw: u64) -> Option<ConnRef> {
        self.in_ix.find(hash, |idx| {
            let e = self.narrow.get(idx as usize)?;
            self.read_in4(idx, e, read_begin(&e.ctl), want, cv, pw)
        })
    }

    /// The IPv6 half of [`lookup_in_hinted`](Self::lookup_in_hinted), out of line.
    #[inline(never)]
    fn lookup_in6_hinted(&self, k: &ConnKeyIn, hint: &LookupHint, pw: u64) -> Option<ConnRef> {
        let want = proto_bits(Some(k.proto)) | AF6;
        let c = key_addr(k.caddr, true);
        let v = key_addr(k.vaddr, true);
        debug_assert_eq!(
            hint.hash,
            self.hash_in_words(want, c, v, pw),
            "hint of another key"
        );
        let read = |idx: u32| self.read_in(idx, want, c, v, pw);
        read(hint.cand).or_else(|| self.in_ix.find(hint.hash, read))
    }

    /// Looks up a burst of client packets at once: `out[i]` gets `lookup_in(&keys[i])`.
    /// The work is staged over up to 64 keys at a time (hashes and home buckets of every
    /// key, then the control words of every candidate entry, then the checks), so the cache
    /// misses of different packets overlap instead of following one another. Same results
    /// and the same guarantees as [`lookup_in`](Self::lookup_in); no allocation.
    pub fn lookup_in_batch(&self, keys: &[ConnKeyIn], out: &mut [Option<ConnRef>]) {
        const B: usize = 64;
        let n = keys.len().min(out.len());
        let mut start = 0;
        while start < n {
            let m = (n - start).min(B);
            // (cv, want, pw, hash) of each IPv4 key; IPv6 keys take the slow path.
            let mut words = [(0u64, 0u64, 0u64, 0u64); B];
            let mut v6 = 0u64;
            for j in 0..m {
                let k = &keys[start + j];
                if k.caddr.is_ipv6() {
                    v6 |= 1 << j;
                    continue;
                }
                let want = proto_bits(Some(k.proto));
                let pw = k.cport as u64 | (k.vport as u64) << 16;
                let cv = v4_bits(k.caddr) as u64 | (v4_bits(k.vaddr) as u64) << 32;
                words[j] = (cv, want, pw, hash4(self.seed, cv, pw | want));
            }
            // Tight loops of independent prefetches (or loads): the misses of the whole
            // burst overlap.
            let pf = self.prefetcher();
            let mut sink = 0u64;
            match pf {
                Some(f) => words[..m]
                    .iter()
                    .for_each(|w| fetch(f, self.in_ix.home_addr(w.3))),
                None => words[..m]
                    .iter()
                    .for_each(|w| sink ^= self.in_ix.touch(w.3) as u64),
            }
            let mut cand = [(u32::MAX, false); B];
            for j in 0..m {
                cand[j] = self.in_ix.home_candidate(words[j].3);
            }
            // With a prefetch, each control word is loaded when its entry is checked.
            let mut g1 = [0u64; B];
            for j in 0..m {
                if let Some(e) = self.narrow.get(cand[j].0 as usize) {
                    match pf {
                        Some(f) => fetch(f, line_addr(e)),
                        None => g1[j] = read_begin(&e.ctl),
                    }
                }
            }
            let mut slow = [0usize; B];
            let mut nslow = 0;
            for j in 0..m {
                let (cv, want, pw, _) = words[j];
                let (idx, more) = cand[j];
                let hit = match self.narrow.get(idx as usize) {
                    Some(e) => {
                        let g = if pf.is_some() { read_begin(&e.ctl) } else { g1[j] };
                        self.read_in4(idx, e, g, want, cv, pw)
                    }
                    None => None,
                };
                // A home candidate that does not verify, alone in a bucket nothing was pushed
                // past, settles the miss: the key would have matched the same tag there.
                if hit.is_none() && more && v6 >> j & 1 == 0 {
                    slow[nslow] = j;
                    nslow += 1;
                }
                out[start + j] = hit;
            }
            // The few keys not settled by their home bucket (several candidates, keys pushed
            // past it): bring the next buckets in together, then probe as `lookup_in` does.
            for &j in &slow[..nslow] {
                sink ^= self.in_ix.touch_next(words[j].3) as u64;
            }
            for &j in &slow[..nslow] {
                out[start + j] = self.lookup_in(&keys[start + j]);
            }
            std::hint::black_box(sink);
            if v6 != 0 {
                self.lookup_in_batch6(&keys[start..start + m], v6, &mut out[start..start + m]);
            }
            start += m;
        }
    }

    /// The IPv6 keys of a burst (bit `j` of `which` set for key `j`), staged as
    /// [`lookup_in_batch`](Self::lookup_in_batch) stages IPv4 ones: home buckets, then both
    /// lines of every candidate entry, then the checks. Out of line so that IPv4 bursts do
    /// not carry its code.
    #[inline(never)]
    fn lookup_in_batch6(&self, keys: &[ConnKeyIn], which: u64, out: &mut [Option<ConnRef>]) {
        const B: usize = 64;
        let pf = self.prefetcher();
        let mut hs = [0u64; B];
        let mut sink = 0u64;
        for (j, k) in keys.iter().enumerate().filter(|(j, _)| which >> j & 1 != 0) {
            let want = proto_bits(Some(k.proto)) | AF6;
            let pw = k.cport as u64 | (k.vport as u64) << 16;
            hs[j] = self.hash_in_words(want, key_addr(k.caddr, true), key_addr(k.vaddr, true), pw);
            match pf {
                Some(f) => fetch(f, self.in_ix.home_addr(hs[j])),
                None => sink ^= self.in_ix.touch(hs[j]) as u64,
            }
        }
        let mut cand = [(u32::MAX, false); B];
        for j in (0..keys.len()).filter(|j| which >> j & 1 != 0) {
            cand[j] = self.in_ix.home_candidate(hs[j]);
            if let Some(w) = self.wide_slot(cand[j].0) {
                match pf {
                    Some(f) => {
                        fetch(f, line_addr(&w.hdr));
                        fetch(f, (&w.addrs as *const Wide).cast());
                    }
                    None => {
                        sink ^= w.hdr.ctl.load(Ordering::Relaxed) ^ w.addrs.caddr[0].load(Ordering::Relaxed)
                    }
                }
            }
        }
        std::hint::black_box(sink);
        for (j, k) in keys.iter().enumerate().filter(|(j, _)| which >> j & 1 != 0) {
            let (idx, more) = cand[j];
            let want = proto_bits(Some(k.proto)) | AF6;
            let pw = k.cport as u64 | (k.vport as u64) << 16;
            let (c, v) = (key_addr(k.caddr, true), key_addr(k.vaddr, true));
            let hit = if idx == u32::MAX {
                None
            } else {
                self.read_in(idx, want, c, v, pw)
            };
            out[j] = if hit.is_none() && more {
                self.in_ix.find(hs[j], |i| self.read_in(i, want, c, v, pw))
            } else {
                hit
            };
        }
    }

    /// Finds the connection of a real server's reply (NAT and FULLNAT entries only).
    #[inline]
    pub fn lookup_out(&self, k: &ConnKeyOut) -> Option<ConnRef> {
        let six = k.daddr.is_ipv6();
        let want = proto_bits(Some(k.proto)) | if six { AF6 } else { 0 };
        let d = key_addr(k.daddr, six);
        let a = key_addr(k.addr, six);
        let h = self.hash_out_words(want, d, a, k.dport, k.port);
        if !six {
            return self
                .out_ix
                .find(h, |idx| self.read_out4(idx, want, d[1], a[1], k));
        }
        self.out_ix.find(h, |idx| self.read_out(idx, want, d, a, k))
    }

    /// [`lookup_out`](Self::lookup_out) with the hint
    /// [`prefetch_out_hinted`](Self::prefetch_out_hinted) gave for the same key, as
    /// [`lookup_in_hinted`](Self::lookup_in_hinted) is to `lookup_in`.
    #[inline]
    pub fn lookup_out_hinted(&self, k: &ConnKeyOut, hint: &LookupHint) -> Option<ConnRef> {
        if !hint.known() {
            return self.lookup_out(k);
        }
        let six = k.daddr.is_ipv6();
        let want = proto_bits(Some(k.proto)) | if six { AF6 } else { 0 };
        let d = key_addr(k.daddr, six);
        let a = key_addr(k.addr, six);
        debug_assert_eq!(
            hint.hash,
            self.hash_out_words(want, d, a, k.dport, k.port),
            "hint of another key"
        );
        if !six {
            let read = |idx: u32| self.read_out4(idx, want, d[1], a[1], k);
            return read(hint.cand).or_else(|| self.out_ix.find(hint.hash, read));
        }
        let read = |idx: u32| self.read_out(idx, want, d, a, k);
        read(hint.cand).or_else(|| self.out_ix.find(hint.hash, read))
    }

    /// [`read_out`](Self::read_out) for an IPv4 key (`want` without AF6; `d`, `a` the
    /// addresses' 32 bits): the words of the one line, checked, then the seqlock's end.
    #[inline]
    fn read_out4(&self, idx: u32, want: u64, d: u64, a: u64, k: &ConnKeyOut) -> Option<ConnRef> {
        let pp = k.dport as u32 | (k.port as u32) << 16;
        self.read4_out(idx, want, d | a << 32, pp).map(|c| c.conn_ref())
    }

    /// The seqlock read of slot `idx` against a server-side key (kind bits `want`, the
    /// key's addresses as [`key_addr`] words `d` and `a`).
    #[inline]
    fn read_out(&self, idx: u32, want: u64, d: [u64; 2], a: [u64; 2], k: &ConnKeyOut) -> Option<ConnRef> {
        let e = self.try_slot(idx)?;
        let g1 = read_begin(&e.ctl);
        if !is_live(g1) || g1 & HAS_OUT == 0 || g1 & KEY_MASK != want {
            return None;
        }
        let (ports, ea, _) = self.snapshot(idx, e, g1)?;
        let (ra, rp) = if method_of(g1) == ForwardMethod::FullNat {
            (ea.l, (ports >> 48) as u16)
        } else {
            (ea.c, ports as u16)
        };
        if ea.d != d || (ports >> 32) as u16 != k.dport || ra != a || rp != k.port {
            return None;
        }
        Some(Self::conn_ref(idx, g1, ports, &ea))
    }

    /// The destination state a connection is bound to (`None` if it died since lookup).
    pub fn dest_of(&self, c: &ConnRef) -> Option<Arc<DestState>> {
        let e = self.try_slot(c.idx)?;
        let d = self.dests.get(c.dest_id());
        (gen_of(read_begin(&e.ctl)) == c.gen_).then_some(d).flatten()
    }

    // ---- slot management ----
    fn push_free(&self, idx: u32) {
        let e = self.slot(idx);
        e.link.store(L_FREE, Ordering::Relaxed);
        if (idx as usize) < self.narrow.len() {
            self.free4.push(idx, &e.gc_next);
        } else {
            self.free6.push(idx, &e.gc_next);
        }
    }

    fn pop_free(&self, six: bool) -> Option<u32> {
        if !six {
            return self.free4.pop(|i| &self.narrow[i as usize].gc_next);
        }
        if let Some(i) = self.free6.pop(|i| &self.slot(i).gc_next) {
            return Some(i);
        }
        // A fresh IPv6 slot; its segment is allocated by the first slot that needs it.
        let j = self
            .wide_next
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.wide_cap).then_some(n + 1)
            })
            .ok()?;
        let seg = &self.wide[j as usize >> SEG_BITS];
        seg.get_or_init(|| {
            (0..SEG)
                .map(|_| WideSlot {
                    hdr: Entry::new(NIL),
                    addrs: Wide {
                        caddr: Default::default(),
                        vaddr: Default::default(),
                        daddr: Default::default(),
                        laddr: Default::default(),
                    },
                })
                .collect()
        });
        Some(self.narrow.len() as u32 + j)
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
        let n = self.slots_in_use() as u64;
        let start = self.reclaim_cursor.fetch_add(RECLAIM_SAMPLE, Ordering::Relaxed);
        for i in 0..RECLAIM_SAMPLE {
            // Scattered positions (golden-ratio stride) so that one cold region of the
            // arena cannot hide every candidate.
            let idx = ((start.wrapping_add(i) as u64).wrapping_mul(0x9e37_79b9) % n) as u32;
            let Some(e) = self.try_slot(idx) else { continue };
            let ctl = e.ctl.load(Ordering::Acquire);
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

    /// Takes a free slot of the family for writing; undoes the reservation on failure.
    #[inline]
    fn alloc(&self, six: bool) -> Result<u32, TableFull> {
        // The usual case inline: room in the table and an IPv4 slot on the free list.
        if !six {
            if self.live.fetch_add(1, Ordering::AcqRel) < self.capacity as u64
                && let Some(i) = self.free4.pop(|i| &self.narrow[i as usize].gc_next)
            {
                return Ok(i);
            }
            self.live.fetch_sub(1, Ordering::AcqRel);
        }
        self.alloc_slow(six)
    }

    /// [`alloc`](Self::alloc) for an IPv6 slot, a full table or an empty free list.
    #[inline(never)]
    fn alloc_slow(&self, six: bool) -> Result<u32, TableFull> {
        self.reserve()?;
        let mut slot = self.pop_free(six);
        if slot.is_none() {
            // Every spare slot is dead but not yet recycled: the housekeeper is late. Recycle
            // now if nobody else is housekeeping (work bounded by the dead entries, no scan).
            if let Ok(mut w) = self.wheel.try_lock()
                && w.started
            {
                let now_ms = w.next_tick * TICK_MS;
                self.drain_lists(&mut w, now_ms);
            }
            slot = self.pop_free(six);
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

    /// Gives back a slot taken by [`alloc`](Self::alloc) that was never published.
    fn unalloc(&self, idx: u32) {
        self.push_free(idx);
        self.live.fetch_sub(1, Ordering::AcqRel);
        self.stats.refused_full.fetch_add(1, Ordering::Relaxed);
    }

    /// Kills entry `idx` of generation `gen_` (one winner) and tears it down: unlinks it from
    /// both indexes, releases its destination counter and its template. Returns false if
    /// it was already dead or recycled. The slot itself is recycled by the housekeeper.
    fn kill(&self, idx: u32, gen_: u32, now: Option<Time>) -> bool {
        let e = self.slot(idx);
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
            match retire(&e.ctl, cur) {
                Ok(_) => break cur,
                Err(c) => cur = c,
            }
        };
        // The slot is ours until handed back: its fields are stable.
        let a = self.load_addrs(idx, e, killed);
        let ports = e.ports.load(Ordering::Relaxed);
        self.in_ix
            .remove(self.hash_in_words(killed, a.c, a.v, ports), idx);
        if killed & HAS_OUT != 0 {
            self.out_ix.remove(self.entry_hash_out(killed, &a, ports), idx);
        }
        let aux = e.aux.load(Ordering::Relaxed);
        let class = class_of(killed);
        if killed & TEMPLATE != 0 {
            self.dests.release(aux, |d| d.unbind(class));
            self.stats.templates.fetch_sub(1, Ordering::Relaxed);
        } else {
            self.dests
                .release((killed & NCTL_MASK) as u32, |d| d.unbind(class));
            if method_of(killed) == ForwardMethod::FullNat
                && let Some(release) = self.on_local_release.get()
            {
                release(SocketAddr::new(
                    words_addr(a.l, killed & AF6 != 0),
                    (ports >> 48) as u16,
                ));
            }
            if aux != 0 {
                self.release_template(aux, now);
            }
        }
        self.live.fetch_sub(1, Ordering::AcqRel);
        true
    }

    /// After a kill outside the housekeeper: hands the slot to the housekeeper.
    fn handoff(&self, idx: u32) {
        let e = self.slot(idx);
        if e.link.swap(L_GRAVE, Ordering::AcqRel) == L_WHEEL {
            self.graveyard.push(idx, &e.gc_next);
        }
    }

    #[inline]
    fn template_timeout(e: &Entry) -> u64 {
        e.dl.load(Ordering::Relaxed) >> 32
    }

    fn release_template(&self, aux: u32, now: Option<Time>) {
        let t = self.slot(aux - 1);
        // The template slot is pinned while its count is non-zero, so it is still ours until
        // the decrement below; the last connection extends its life by its timeout first.
        if let Some(now) = now
            && t.ctl.load(Ordering::Acquire) & NCTL_MASK == 1
        {
            let to = Self::template_timeout(t);
            t.deadline.fetch_max(now.as_millis() + to, Ordering::Relaxed);
        }
        t.ctl.fetch_sub(1, Ordering::AcqRel);
    }

    /// Pins template `t` for a new connection: +1 on its count if still live. Returns the
    /// `aux` value linking a connection to it (0 if it died).
    fn acquire_template(&self, t: &TemplateRef, now: Time) -> u32 {
        let e = self.slot(t.idx);
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
        let to = Self::template_timeout(e);
        e.deadline.fetch_max(now.as_millis() + to, Ordering::Relaxed);
        t.idx + 1
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
        // IPv4 ends (the usual case) in 32-bit words, straight to the one line of the entry.
        if let (IpAddr::V4(c), IpAddr::V4(v), IpAddr::V4(d)) = (nc.key.caddr, nc.key.vaddr, nc.dest_addr.ip())
        {
            let local = if nc.method != ForwardMethod::FullNat {
                Some((0, 0))
            } else {
                match nc.local {
                    Some(SocketAddr::V4(sa)) => Some((u32::from(*sa.ip()), sa.port())),
                    Some(SocketAddr::V6(_)) => None,
                    None => Some((0, 0)),
                }
            };
            if let Some((l, lport)) = local {
                let cv = u32::from(c) as u64 | (u32::from(v) as u64) << 32;
                let dl = u32::from(d) as u64 | (l as u64) << 32;
                return self.insert4(&nc, cv, dl, lport, now);
            }
        }
        self.insert_any(nc, now)
    }

    /// Fields of a new connection's control word (below the generation) and its timeout
    /// state.
    #[inline]
    fn new_fields(nc: &NewConn<'_>, six: bool) -> (u64, ConnState) {
        let (kind, state) = NEW_KIND[nc.method as usize][nc.key.proto as usize];
        // A connection's low bits (a template's count of connections) carry the
        // destination's id: the packet path finds its counters through it.
        let fields = kind | if six { AF6 } else { 0 } | (nc.dest.id() as u64 & NCTL_MASK);
        (fields, state)
    }

    /// [`insert`](Self::insert) of a connection with IPv4 ends: `cv` = client | virtual
    /// address << 32, `dl` = destination | FULLNAT local address << 32 (0 if none). The two
    /// halves of [`stage4`](Self::stage4) and [`commit4`](Self::commit4), back to back.
    #[inline]
    fn insert4(
        &self,
        nc: &NewConn<'_>,
        cv: u64,
        dl: u64,
        lport: u16,
        now: Time,
    ) -> Result<ConnRef, TableFull> {
        let kind = NEW_KIND[nc.method as usize][nc.key.proto as usize];
        let ports = nc.key.cport as u64
            | (nc.key.vport as u64) << 16
            | (nc.dest_addr.port() as u64) << 32
            | (lport as u64) << 48;
        let f = self.fresh4(kind, nc.dest, cv, dl, ports, None, nc.template);
        #[cfg(debug_assertions)]
        {
            let a = Addrs {
                c: [0, cv & 0xffff_ffff],
                v: [0, cv >> 32],
                d: [0, dl & 0xffff_ffff],
                l: [0, dl >> 32],
            };
            debug_assert_eq!(f.hin, self.hash_in_words(f.fields, a.c, a.v, ports));
            debug_assert!(f.fields & HAS_OUT == 0 || f.hout == self.entry_hash_out(f.fields, &a, ports));
        }
        loop {
            let s = self.write4(&f, &mut 0, now)?;
            if let stage4::Published::Conn(r) = self.publish4(&s, now)? {
                return Ok(r);
            }
        }
    }

    /// After an index refused a just published entry (cannot happen while the capacity
    /// bound holds): the entry is killed again, the insert refused.
    #[cold]
    fn insert_failed(&self, idx: u32, gen_: u32, now: Time) -> TableFull {
        if self.kill(idx, gen_, Some(now)) {
            self.handoff(idx);
        }
        self.stats.refused_full.fetch_add(1, Ordering::Relaxed);
        TableFull
    }

    /// The duplicate race of an insert that published slot `idx` (generation `gen_`) and
    /// found `dup` (or nothing, if it was killed since): the higher slot is killed.
    /// `Some(survivor)` if it is the other entry; `None` to read back its own.
    #[inline(never)]
    fn settle_duplicate(&self, idx: u32, gen_: u32, dup: Option<ConnRef>, now: Time) -> Option<ConnRef> {
        match dup {
            None => None,
            Some(other) if other.idx > idx => {
                if self.kill(other.idx, other.gen_, Some(now)) {
                    self.handoff(other.idx);
                    self.stats.removed.fetch_add(1, Ordering::Relaxed);
                }
                None
            }
            Some(other) => {
                if self.kill(idx, gen_, Some(now)) {
                    self.handoff(idx);
                    self.stats.removed.fetch_add(1, Ordering::Relaxed);
                }
                Some(other)
            }
        }
    }

    /// [`insert`](Self::insert) for IPv6 ends (or mixed families).
    #[inline(never)]
    fn insert_any(&self, nc: NewConn<'_>, now: Time) -> Result<ConnRef, TableFull> {
        let six = nc.key.caddr.is_ipv6();
        let (l, lport) = match (nc.method, nc.local) {
            (ForwardMethod::FullNat, Some(sa)) => (key_addr(sa.ip(), six), sa.port()),
            _ => ([0; 2], 0),
        };
        let a = Addrs {
            c: key_addr(nc.key.caddr, six),
            v: key_addr(nc.key.vaddr, six),
            d: key_addr(nc.dest_addr.ip(), six),
            l,
        };
        let (fields, state) = Self::new_fields(&nc, six);
        let ports = nc.key.cport as u64
            | (nc.key.vport as u64) << 16
            | (nc.dest_addr.port() as u64) << 32
            | (lport as u64) << 48;
        let has_out = fields & HAS_OUT != 0;
        let want = fields & KEY_MASK;
        let pw = ports & 0xffff_ffff;
        let hin = self.hash_in_words(fields, a.c, a.v, ports);
        let hout = has_out.then(|| self.entry_hash_out(fields, &a, ports));
        let deadline = now.as_millis() + self.timeouts.millis(state);
        loop {
            let idx = self.alloc(six)?;
            let e = self.slot(idx);
            let old = begin_write(&e.ctl);
            self.store_addrs(idx, e, six, &a, None);
            e.ports.store(ports, Ordering::Relaxed);
            e.deadline.store(deadline, Ordering::Relaxed);
            let aux = nc.template.map_or(0, |t| self.acquire_template(&t, now));
            e.aux.store(aux, Ordering::Relaxed);
            e.link.store(L_PENDING, Ordering::Relaxed);
            if self.dests.acquire(nc.dest).is_err() {
                if aux != 0 {
                    self.release_template(aux, Some(now));
                }
                self.unalloc(idx);
                return Err(TableFull);
            }
            let ctl = next_live(old, fields);
            nc.dest.bind(class_of(ctl));
            // Publish: the generation becomes even (live).
            publish(&e.ctl, ctl);
            let gen_ = gen_of(ctl);
            let ok_in = self.in_ix.insert(hin, idx);
            let ok_out = hout.is_none_or(|h| self.out_ix.insert(h, idx));
            self.pending.push(idx, &e.gc_next);
            if !(ok_in && ok_out) {
                return Err(self.insert_failed(idx, gen_, now));
            }
            self.stats.inserted.fetch_add(1, Ordering::Relaxed);
            // Duplicate race: the lowest slot number wins; whoever sees a pair kills the other one.
            let dup = self.in_ix.find(hin, |j| {
                if j != idx {
                    self.read_in(j, want, a.c, a.v, pw)
                } else {
                    None
                }
            });
            if dup.is_none() && gen_of(e.ctl.load(Ordering::Acquire)) == gen_ {
                // Still ours: no concurrent duplicate resolution killed it.
                return Ok(Self::conn_ref(idx, ctl, ports, &a));
            }
            if let Some(r) = self.settle_duplicate(idx, gen_, dup, now) {
                return Ok(r);
            }
            match self.read_in(idx, want, a.c, a.v, pw) {
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
    ///
    /// The usual packet changes nothing but the deadline, which moves later: one load of
    /// the control word, the transition, one store of the deadline, inline. A state change
    /// that keeps the connection's class (active/inactive) adds one compare-and-swap; a
    /// class change, a lost race or an earlier deadline take out-of-line paths.
    #[inline(always)]
    pub fn on_packet(&self, c: &ConnRef, dir: Direction, flags: TcpFlags, now: Time) -> Option<ConnState> {
        let e = self.try_slot(c.idx)?;
        let cur = e.ctl.load(Ordering::Acquire);
        if gen_of(cur) != c.gen_ {
            return None;
        }
        // The common segment first: TCP in ESTABLISHED and an ACK without SYN/FIN/RST keeps
        // ESTABLISHED in all three tables (and leaves NOOUTPUT as it is): one mask test,
        // then the deadline.
        const TCP_EST: u64 = (1 << PROTO_SHIFT) | (ConnState::Established as u64) << STATE_SHIFT;
        const FLAGS: u8 = TcpFlags::ACK.0 | TcpFlags::SYN.0 | TcpFlags::FIN.0 | TcpFlags::RST.0;
        if cur & (PROTO_MASK | STATE_MASK) == TCP_EST
            && flags.0 & FLAGS == TcpFlags::ACK.0
            && (dir == Direction::Input || cur & NOOUTPUT == 0)
        {
            debug_assert_eq!(proto_of(cur), Some(Protocol::Tcp));
            let ms = self.timeouts.millis(ConnState::Established);
            self.set_deadline(c.idx, e, now.as_millis() + ms);
            return Some(ConnState::Established);
        }
        let st = state_of(cur);
        let (ns, next_ctl) = if cur & PROTO_MASK != proto_bits(Some(Protocol::Tcp)) {
            (st, cur)
        } else if st == ConnState::Established
            && flags.0 & (TcpFlags::ACK.0 | TcpFlags::SYN.0 | TcpFlags::FIN.0 | TcpFlags::RST.0)
                == TcpFlags::ACK.0
            && (dir == Direction::Input || cur & NOOUTPUT == 0)
        {
            // The common segment: an ACK without SYN/FIN/RST keeps ESTABLISHED in all three
            // tables (and leaves NOOUTPUT as it is): no table walk.
            debug_assert_eq!(tcp_next(TableDir::Input, flags, st), st);
            (st, cur)
        } else {
            // DR/TUN entries use the input-only table until a reply shows up (NOOUTPUT).
            let (td, next) = match (cur & NOOUTPUT != 0, dir) {
                (false, Direction::Input) => (TableDir::Input, cur),
                (false, Direction::Output) => (TableDir::Output, cur),
                (true, Direction::Input) => (TableDir::InputOnly, cur),
                (true, Direction::Output) => (TableDir::Output, cur & !NOOUTPUT),
            };
            let ns = tcp_next(td, flags, st);
            (ns, with_state(next, ns))
        };
        if next_ctl != cur
            && (st.is_active() != ns.is_active()
                || e.ctl
                    .compare_exchange(cur, next_ctl, Ordering::AcqRel, Ordering::Acquire)
                    .is_err())
        {
            return self.on_packet_change(c, e, dir, flags, now);
        }
        self.set_deadline(c.idx, e, now.as_millis() + self.timeouts.millis(ns));
        Some(ns)
    }

    /// A packet's new deadline for slot `idx`. A later one (the usual case) is one store,
    /// left for the wheel to notice when it reaches the entry; an earlier one queues the
    /// entry to be filed again.
    #[inline(always)]
    fn set_deadline(&self, idx: u32, e: &Entry, deadline: u64) {
        let old = e.deadline.load(Ordering::Relaxed);
        if deadline > old {
            e.deadline.store(deadline, Ordering::Relaxed);
        } else if deadline < old {
            self.set_earlier_deadline(idx, e, deadline);
        }
    }

    /// [`on_packet`](Self::on_packet) when the connection changes class or its
    /// compare-and-swap lost a race: the compare-and-swap loop from a fresh control word,
    /// the destination's counters, the deadline.
    #[inline(never)]
    fn on_packet_change(
        &self,
        c: &ConnRef,
        e: &Entry,
        dir: Direction,
        flags: TcpFlags,
        now: Time,
    ) -> Option<ConnState> {
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
                        let (from, to) = if ns.is_active() {
                            (ConnClass::Inactive, ConnClass::Active)
                        } else {
                            (ConnClass::Active, ConnClass::Inactive)
                        };
                        // The entry holds its destination's registration until it dies,
                        // and it cannot die while BUSY.
                        self.dests
                            .with((cur & NCTL_MASK) as u32, |d| d.reclassify(from, to));
                        e.ctl.fetch_and(!BUSY, Ordering::AcqRel);
                    }
                    break ns;
                }
                Err(x) => cur = x,
            }
        };
        self.set_deadline(c.idx, e, now.as_millis() + self.timeouts.millis(new_state));
        Some(new_state)
    }

    /// Moves the deadline of slot `idx` earlier (e.g. ESTABLISHED → CLOSE): the entry is
    /// queued for the wheel to file it again in an earlier slot.
    #[inline(never)]
    fn set_earlier_deadline(&self, idx: u32, e: &Entry, deadline: u64) {
        e.deadline.store(deadline, Ordering::Relaxed);
        if e.resched.swap(1, Ordering::AcqRel) == 0 {
            self.resched.push(idx, &e.resched_next);
        }
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
        let six = k.caddr.is_ipv6();
        let c = key_addr(k.caddr, six);
        let v = key_addr(k.vaddr, six);
        let want = TEMPLATE | proto_bits(k.proto) | if six { AF6 } else { 0 };
        let pw = (k.vport as u64) << 16;
        let h = self.hash_in_words(want, c, v, pw);
        self.in_ix.find(h, |idx| {
            let r = self.read_in(idx, want, c, v, pw)?;
            Some(TemplateRef {
                idx: r.idx,
                gen_: r.gen_,
                six,
                daddr: r.words(2),
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
        let six = k.caddr.is_ipv6();
        let a = Addrs {
            c: key_addr(k.caddr, six),
            v: key_addr(k.vaddr, six),
            d: key_addr(dest_addr.ip(), six),
            l: [0; 2],
        };
        // Kept in 32 bits of milliseconds (49 days), as the kernel keeps it in jiffies.
        let to = timeout.as_millis().min(u32::MAX as u128) as u32;
        let idx = self.alloc(six)?;
        let e = self.slot(idx);
        let old = begin_write(&e.ctl);
        self.store_addrs(idx, e, six, &a, Some(to));
        let ports = (k.vport as u64) << 16 | (dest_addr.port() as u64) << 32;
        e.ports.store(ports, Ordering::Relaxed);
        e.deadline.store(now.as_millis() + to as u64, Ordering::Relaxed);
        e.aux.store(dest.id(), Ordering::Relaxed);
        e.link.store(L_PENDING, Ordering::Relaxed);
        if self.dests.acquire(dest).is_err() {
            self.unalloc(idx);
            return Err(TableFull);
        }
        let ctl = next_live(old, TEMPLATE | if six { AF6 } else { 0 } | proto_bits(k.proto));
        dest.bind(ConnClass::Template);
        self.stats.templates.fetch_add(1, Ordering::Relaxed);
        publish(&e.ctl, ctl);
        let gen_ = gen_of(ctl);
        let h = self.hash_in_words(ctl, a.c, a.v, ports);
        let ok = self.in_ix.insert(h, idx);
        self.pending.push(idx, &e.gc_next);
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
            daddr: a.d,
            dport: dest_addr.port(),
        };
        let want = ctl & KEY_MASK;
        let dup = self.in_ix.find(h, |j| {
            if j != idx {
                self.read_in(j, want, a.c, a.v, ports & 0xffff_ffff)
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
                    daddr: o.words(2),
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
        let e = self.try_slot(t.idx)?;
        let g1 = read_begin(&e.ctl);
        let id = e.aux.load(Ordering::Relaxed);
        if gen_of(g1) != t.gen_ || !read_end(&e.ctl, g1) {
            return None;
        }
        self.dests.get(id)
    }

    /// Connections currently controlled by (pinning) a template.
    pub fn template_conns(&self, t: &TemplateRef) -> u32 {
        self.try_slot(t.idx)
            .map_or(0, |e| (e.ctl.load(Ordering::Acquire) & NCTL_MASK) as u32)
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
        let mut i = self.resched.take_all();
        while i != NIL {
            let e = self.slot(i);
            let next = e.resched_next.load(Ordering::Relaxed);
            e.resched.store(0, Ordering::Release);
            if e.link.load(Ordering::Acquire) == L_WHEEL && w.is_linked(self, i) {
                w.unlink(self, i);
                let tick = w.next_tick;
                w.link(self, i, e.deadline.load(Ordering::Relaxed), tick);
            }
            i = next;
        }
        // Walk the elapsed ticks.
        let mut expired = 0;
        let mut budget = budget;
        while budget > 0 && (w.next_tick + 1) * TICK_MS <= now_ms {
            let tick = w.next_tick;
            let Some(idx) = w.pop(self, tick) else {
                w.next_tick += 1;
                continue;
            };
            budget -= 1;
            if self.visit(&mut w, idx, now_ms, tick) {
                expired += 1;
            }
        }
        self.stats.expired.fetch_add(expired as u64, Ordering::Relaxed);
        self.dests.sweep();
        expired
    }

    /// Files newly inserted entries in the wheel and recycles killed ones.
    fn drain_lists(&self, w: &mut Wheel, now_ms: u64) {
        // New entries into the wheel.
        let mut i = self.pending.take_all();
        while i != NIL {
            let e = self.slot(i);
            let next = e.gc_next.load(Ordering::Relaxed);
            if e.link
                .compare_exchange(L_PENDING, L_WHEEL, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                let tick = w.next_tick;
                w.link(self, i, e.deadline.load(Ordering::Relaxed), tick);
            } else {
                self.reclaim_slot(w, i, now_ms);
            }
            i = next;
        }
        // Killed entries out of the wheel.
        let mut i = self.graveyard.take_all();
        while i != NIL {
            let next = self.slot(i).gc_next.load(Ordering::Relaxed);
            w.unlink(self, i);
            self.reclaim_slot(w, i, now_ms);
            i = next;
        }
    }

    /// An entry just popped from the wheel slot of `tick`.
    fn visit(&self, w: &mut Wheel, idx: u32, now_ms: u64, tick: u64) -> bool {
        let e = self.slot(idx);
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
            w.link(self, idx, deadline, tick + 1);
            return false;
        }
        if ctl & TEMPLATE != 0 && ctl & NCTL_MASK != 0 {
            // Still controls connections: the kernel re-arms the template's timer.
            let d = now_ms + Self::template_timeout(e).max(TICK_MS);
            e.deadline.store(d, Ordering::Relaxed);
            w.link(self, idx, d, tick + 1);
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
        let e = self.slot(idx);
        let ctl = e.ctl.load(Ordering::Acquire);
        if ctl & TEMPLATE != 0 && ctl & NCTL_MASK != 0 {
            e.link.store(L_ZOMBIE, Ordering::Release);
            let t = now_ms / TICK_MS + 1;
            let min = t.max(w.next_tick + 1);
            w.link(self, idx, now_ms + ZOMBIE_RECHECK_MS, min);
            return;
        }
        self.push_free(idx);
    }

    // ---- listing ----
    /// A consistent snapshot of every live entry (connections and templates), for
    /// `ipvsadm -L -n -c` and `--persistent-conn`. Walks the whole arena: a control-plane
    /// call, never per packet.
    pub fn iter(&self, now: Time) -> impl Iterator<Item = ConnInfo> + '_ {
        (0..self.slots_in_use()).filter_map(move |idx| {
            let e = self.try_slot(idx)?;
            let g1 = read_begin(&e.ctl);
            let (p, a, deadline) = self.snapshot(idx, e, g1)?;
            let six = g1 & AF6 != 0;
            let template = g1 & TEMPLATE != 0;
            let method = method_of(g1);
            Some(ConnInfo {
                proto: proto_of(g1),
                template,
                state: if template { ConnState::None } else { state_of(g1) },
                client: SocketAddr::new(words_addr(a.c, six), p as u16),
                virt: SocketAddr::new(words_addr(a.v, six), (p >> 16) as u16),
                dest: SocketAddr::new(words_addr(a.d, six), (p >> 32) as u16),
                local: (!template && method == ForwardMethod::FullNat)
                    .then(|| SocketAddr::new(words_addr(a.l, six), (p >> 48) as u16)),
                method,
                expires: Duration::from_millis(deadline.saturating_sub(now.as_millis())),
                controlled: if template { (g1 & NCTL_MASK) as u32 } else { 0 },
            })
        })
    }
}
