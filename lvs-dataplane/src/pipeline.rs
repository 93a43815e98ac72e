//! The packet pipeline: a pure function of (frame, tables, now) → (rewritten frame, verdict).
//!
//! A [`Pipeline`] holds the shared tables (services, connections, neighbours, routes, LIPs)
//! and the director's interfaces; each packet worker owns a [`Worker`] and calls
//! [`Worker::process`] on every frame it receives. No I/O happens here: the caller's backend
//! sends the frame on the interface the verdict names, so the pipeline can be tested,
//! benchmarked, fuzzed and embedded in another proxy's I/O loop.
//!
//! What a frame can be:
//! - ARP request / IPv6 neighbour solicitation for a VIP or LIP: answered ([`Verdict::Reply`]);
//! - ICMP echo to a VIP: answered;
//! - a packet to a VIP: the first packet of a connection is scheduled (persistence templates,
//!   one-packet scheduling), later ones find their connection with one table lookup; then the
//!   destination's forwarding method (NAT, FULLNAT, DR, TUN) rewrites it;
//! - a reply from a real server of a NAT or FULLNAT connection: translated back to the client;
//! - an ICMP error quoting a tracked connection: translated and sent to the other side;
//! - anything else: [`Verdict::Pass`] (the kernel's).
//!
//! Fragments addressed to a VIP or LIP are dropped and counted ([`DropReason::Fragment`]):
//! lvs keeps no reassembly or fragment-to-flow state (yet).
//!
//! Speed. [`Worker::process_burst`] parses the common frame (untagged IPv4, no options, not a
//! fragment, TCP/UDP) with fixed-offset loads into a 20-byte [`Fast4`]
//! ([`xlate::parse_fast4`]) and sends packets of known connections through two fast paths,
//! client → server (`established4`) and server → client (`reply4`), that rewrite from the
//! connection's IPv4 addresses with TTL, addresses and ports folded into one checksum update
//! per header at fixed offsets ([`xlate::forward_fast4`]); anything else (new connections,
//! IPv6, ICMP, TTL expiring, ...) is handed, before any side effect, to the general path
//! that [`Worker::process`] always takes, and the fuzz tests check that the two agree. TUN to
//! an IPv4 server whose next hop is cached is one pass too (TTL, outer header and MACs,
//! [`tunnel::forward_ipip_fast4`]). The burst's staging arrays live in the worker (nothing
//! is cleared per burst). Each worker caches, per snapshot of the tables and cleared when
//! one changes: next hops (interface, MACs) of on-link destinations and of IPv4 gateways,
//! next-hop MACs, the IPv4 routes as masks, the IPv4 VIPs (a collision-free table),
//! destination positions for the counters, service lookups and the LIP list.
//! Packet and byte counts are tallied per destination during a burst and added to the
//! shared counters once per destination at its end (and at the end of every single frame),
//! once per service for all its destinations.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::{ArcSwap, Cache};
use lvs_core::conn::{
    Conn4, ConnKeyIn, ConnKeyIn4, ConnKeyOut, ConnRef, ConnState, ConnTable, Direction, LookupHint, NewConn,
    NewConn4, PREFETCH_BURST, Reservation, Staged4, TcpFlags, TemplateKey,
};
use lvs_core::service::{AddrFamily, ServiceKey, ServiceSet, ServiceTable, VirtualService};
use lvs_core::stats::StatsWriter;
use lvs_core::{Destination, FlowKey, ForwardMethod, Protocol, Time};

use crate::hold::{HoldQueue, Released};
use crate::io::FrameBuf;
use crate::neigh::{NeighMap, NeighTable};
use crate::route::{self, NextHop, Route, RouteTable, V4Routes};
use crate::verdict::{DropCounters, DropReason, Verdict};
use crate::wire::ethernet::{self, MacAddr};
use crate::wire::{arp, checksum, ethertype, icmpv4, icmpv6, ip_proto, ipv4, ipv6, tcp};
use crate::xlate::icmp::{self, ErrorKind};
use crate::xlate::lip::{self, LipPool, LocalAddr};
use crate::xlate::{self, End, Fast4, IpInfo, tunnel};

/// One interface the director serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// Name (for logs).
    pub name: String,
    /// Its MAC address: the source of every frame sent on it, and the answer to ARP for VIPs.
    pub mac: MacAddr,
    /// Its MTU (TUN encapsulation and TOA insertion respect it).
    pub mtu: u16,
    /// The director's IPv4 address on it (DIP: TUN outer source, ICMP errors' source).
    pub ipv4: Option<Ipv4Addr>,
    /// The director's IPv6 address on it.
    pub ipv6: Option<Ipv6Addr>,
}

/// A firewall-mark rule: packets of `proto` to `addr` with a destination port in
/// `ports` belong to the fwmark service `mark` (what iptables' MARK target does for kernel
/// IPVS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FwmarkRule {
    /// Transport protocol.
    pub proto: Protocol,
    /// Virtual address.
    pub addr: IpAddr,
    /// First destination port.
    pub first_port: u16,
    /// Last destination port.
    pub last_port: u16,
    /// Mark (the `-f` service).
    pub mark: u32,
}

/// The tables a pipeline reads and updates, shared with the control plane.
#[derive(Debug, Clone)]
pub struct Tables {
    /// Virtual services (published by the control plane).
    pub services: Arc<ServiceTable>,
    /// Connections.
    pub conns: Arc<ConnTable>,
    /// Next-hop MACs.
    pub neigh: Arc<NeighTable>,
    /// Routes.
    pub routes: Arc<RouteTable>,
    /// FULLNAT local addresses and ports.
    pub lips: Arc<LipPool>,
}

/// The shared part of the pipeline: tables, interfaces and settings.
pub struct Pipeline {
    tables: Tables,
    interfaces: Vec<Interface>,
    fwmarks: ArcSwap<Vec<FwmarkRule>>,
    toa: AtomicBool,
    expire_nodest_conn: AtomicBool,
}

impl fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipeline")
            .field("interfaces", &self.interfaces)
            .finish()
    }
}

/// Counters of one worker (single writer, any reader).
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Frames processed.
    pub frames: AtomicU64,
    /// Client → server packets forwarded.
    pub forwarded_in: AtomicU64,
    /// Server → client packets forwarded (NAT/FULLNAT replies).
    pub forwarded_out: AtomicU64,
    /// Connections scheduled.
    pub new_conns: AtomicU64,
    /// Frames answered in place (ARP, NDP, echo, ICMP errors).
    pub replies: AtomicU64,
    /// Frames left to the kernel.
    pub passed: AtomicU64,
    /// ICMP errors translated for a connection.
    pub icmp_translated: AtomicU64,
    /// Frames put in the hold queue to wait for their next hop's MAC.
    pub held: AtomicU64,
    /// Held frames sent once their next hop was resolved.
    pub released: AtomicU64,
}

#[inline]
fn bump(c: &AtomicU64) {
    c.store(c.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

/// Where one packet of a connection goes, taken from the connection entry (or, for
/// one-packet scheduling, straight from the scheduled destination).
#[derive(Debug, Clone, Copy)]
struct Target {
    method: ForwardMethod,
    client: SocketAddr,
    virt: SocketAddr,
    dest: SocketAddr,
    local: Option<SocketAddr>,
}

/// Outcome of scheduling a connection's first packet.
enum Scheduled {
    /// A connection entry was created.
    Conn(ConnRef),
    /// One-packet scheduling (`--ops`, UDP): no entry; forward this datagram only, by
    /// `method` to `dest`. Carries the destination's id for its counters. (Kept small: the
    /// client and virtual ends are the packet's own.)
    OnePacket {
        method: ForwardMethod,
        dest: SocketAddr,
        dest_id: u32,
    },
}

/// The unused ends of a [`Target`] built for one direction only.
const UNUSED_END: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));

impl Target {
    /// What [`Worker::forward_in`] reads of connection `c` (method, destination, FULLNAT
    /// local end and client); `virt` is left [`UNUSED_END`]. Copying only these out of the
    /// entry saves decoding the other addresses on every packet.
    #[inline]
    fn inbound(c: &ConnRef) -> Target {
        let method = c.method();
        let full = method == ForwardMethod::FullNat;
        Target {
            method,
            client: if full { c.client() } else { UNUSED_END },
            virt: UNUSED_END,
            dest: c.dest_addr(),
            local: if full { c.local() } else { None },
        }
    }

    /// What the reply path reads of connection `c` (method, client, virtual end); `dest`
    /// and `local` are left unused.
    #[inline]
    fn outbound(c: &ConnRef) -> Target {
        Target {
            method: c.method(),
            client: c.client(),
            virt: c.virt(),
            dest: UNUSED_END,
            local: None,
        }
    }
}

impl From<&ConnRef> for Target {
    fn from(c: &ConnRef) -> Target {
        Target {
            method: c.method(),
            client: c.client(),
            virt: c.virt(),
            dest: c.dest_addr(),
            local: c.local(),
        }
    }
}

impl Pipeline {
    /// A pipeline over `tables` serving `interfaces` (numbered by their position).
    pub fn new(tables: Tables, interfaces: Vec<Interface>) -> Arc<Pipeline> {
        let lips = tables.lips.clone();
        // FULLNAT: a connection's local port goes back to the pool when the connection dies.
        tables.conns.set_local_release(Box::new(move |local| {
            lips.release(local.ip(), local.port());
        }));
        Arc::new(Pipeline {
            tables,
            interfaces,
            fwmarks: ArcSwap::from_pointee(Vec::new()),
            toa: AtomicBool::new(true),
            expire_nodest_conn: AtomicBool::new(false),
        })
    }

    /// The shared tables.
    pub fn tables(&self) -> &Tables {
        &self.tables
    }

    /// The interfaces, in their numbering.
    pub fn interfaces(&self) -> &[Interface] {
        &self.interfaces
    }

    /// Replaces the firewall-mark rules.
    pub fn set_fwmarks(&self, rules: Vec<FwmarkRule>) {
        self.fwmarks.store(Arc::new(rules));
    }

    /// The kernel's `expire_nodest_conn`: when on, a packet of a connection whose
    /// destination was removed from the rules expires the connection and is dropped (the
    /// client's next attempt is scheduled afresh); when off (the default), such connections
    /// go on until they end.
    pub fn set_expire_nodest_conn(&self, on: bool) {
        self.expire_nodest_conn.store(on, Ordering::Relaxed);
    }

    /// Turns the TOA option (client address for FULLNAT real servers) on or off.
    pub fn set_toa(&self, on: bool) {
        self.toa.store(on, Ordering::Relaxed);
    }

    /// A worker context for packet worker `id`.
    pub fn worker(self: &Arc<Self>, id: usize) -> Worker {
        let mut caches = Caches {
            services: Cache::new(ServicesCell(self.tables.services.clone())),
            routes: Cache::new(RoutesCell(self.tables.routes.clone())),
            neigh: Cache::new(NeighCell(self.tables.neigh.clone())),
            fwmarks: Cache::new(FwmarksCell(self.clone())),
            lips: Cache::new(LipsCell(self.tables.lips.clone())),
        };
        let snap = Snap {
            set: caches.services.load().clone(),
            routes: caches.routes.load().clone(),
            neigh: caches.neigh.load().clone(),
            fwmarks: caches.fwmarks.load().clone(),
            lips: caches.lips.load().clone(),
        };
        let routes_v4 = V4Routes::compile(&snap.routes);
        let vips_v4 = few_vips_v4(&snap.set);
        Worker {
            id,
            writer: StatsWriter::new(),
            p: self.clone(),
            caches,
            snap,
            neigh_cache: std::array::from_fn(|_| std::cell::Cell::new(None)),
            hop_cache: std::array::from_fn(|_| std::cell::Cell::new(None)),
            hop4: std::array::from_fn(|_| std::cell::Cell::new(EMPTY_HOP4)),
            gw4: std::array::from_fn(|_| std::cell::Cell::new(EMPTY_HOP4)),
            routes_v4,
            vips4: vips_v4.as_ref().and_then(|v| Vips4::build(dedup_vips(v))),
            vips_v4,
            dest_cache: std::array::from_fn(|_| std::cell::Cell::new(None)),
            svc_cache: std::array::from_fn(|_| std::cell::Cell::new(None)),
            tally_id: std::array::from_fn(|_| std::cell::Cell::new(0)),
            tally_in: std::array::from_fn(|_| std::cell::Cell::new(0)),
            tally_out: std::array::from_fn(|_| std::cell::Cell::new(0)),
            tally_used: std::cell::Cell::new(0),
            learned: std::cell::Cell::new(false),
            drops: Arc::new(DropCounters::default()),
            stats: Arc::new(WorkerStats::default()),
            ident: std::cell::Cell::new((id as u16).wrapping_mul(0x3c5b)),
            hold: std::cell::RefCell::new(HoldQueue::new()),
            now: std::cell::Cell::new(Time::ZERO),
            scratch: Some(Scratch::new()),
        }
    }

    /// Housekeeping, called from a timer (never per packet): expires due connections (at most
    /// `budget`; their FULLNAT local ports go back to the pool). Returns how many expired.
    pub fn housekeeping(&self, now: Time, budget: usize) -> usize {
        self.tables.conns.expire(now, budget)
    }
}

/// The swap cells a worker caches (`arc_swap::Cache` needs a handle that dereferences to
/// the cell).
macro_rules! swap_handle {
    ($name:ident, $owner:ty, $t:ty, |$o:ident| $cell:expr) => {
        struct $name(Arc<$owner>);
        impl std::ops::Deref for $name {
            type Target = ArcSwap<$t>;
            #[inline]
            fn deref(&self) -> &ArcSwap<$t> {
                let $o = &self.0;
                $cell
            }
        }
    };
}
swap_handle!(ServicesCell, ServiceTable, ServiceSet, |o| o.current());
swap_handle!(RoutesCell, RouteTable, Vec<Route>, |o| o.current());
swap_handle!(NeighCell, NeighTable, NeighMap, |o| o.current());
swap_handle!(FwmarksCell, Pipeline, Vec<FwmarkRule>, |o| &o.fwmarks);
swap_handle!(LipsCell, LipPool, Vec<Arc<LocalAddr>>, |o| o.current());

/// A worker's caches of the published tables: one pointer comparison per table per packet
/// instead of an arc-swap load at every use (a full load costs some 70 instructions).
struct Caches {
    services: Cache<ServicesCell, Arc<ServiceSet>>,
    routes: Cache<RoutesCell, Arc<Vec<Route>>>,
    neigh: Cache<NeighCell, Arc<NeighMap>>,
    fwmarks: Cache<FwmarksCell, Arc<Vec<FwmarkRule>>>,
    lips: Cache<LipsCell, Arc<Vec<Arc<LocalAddr>>>>,
}

/// The snapshots one packet is processed against (refreshed from [`Caches`] per packet).
struct Snap {
    set: Arc<ServiceSet>,
    routes: Arc<Vec<Route>>,
    neigh: Arc<NeighMap>,
    fwmarks: Arc<Vec<FwmarkRule>>,
    lips: Arc<Vec<Arc<LocalAddr>>>,
}

/// Replaces `slot` by `cur` if it is another snapshot; true if it was.
#[inline]
fn refresh<T>(slot: &mut Arc<T>, cur: &Arc<T>) -> bool {
    let changed = !Arc::ptr_eq(slot, cur);
    if changed {
        *slot = cur.clone();
    }
    changed
}

/// Most IPv4 VIPs a worker scans instead of asking the service set's hash.
const FEW_VIPS: usize = 16;

/// The IPv4 VIPs of `set` (what [`ServiceSet::is_vip`] answers true for) when there are
/// between one and [`FEW_VIPS`], the list padded with repeats of the first (a fixed-size
/// array the compiler compares in a few vector instructions).
fn few_vips_v4(set: &ServiceSet) -> Option<[u32; FEW_VIPS]> {
    let mut v = Vec::new();
    for s in set.services() {
        if let ServiceKey::Addr {
            addr: IpAddr::V4(a), ..
        } = s.config.key
        {
            let a = u32::from(a);
            if !v.contains(&a) {
                v.push(a);
            }
        }
    }
    let first = *v.first()?;
    (v.len() <= FEW_VIPS).then(|| std::array::from_fn(|i| v.get(i).copied().unwrap_or(first)))
}

/// The distinct VIPs of a padded [`few_vips_v4`] list (the padding repeats the first).
fn dedup_vips(few: &[u32; FEW_VIPS]) -> &[u32] {
    let n = few[1..]
        .iter()
        .position(|&v| v == few[0])
        .map_or(FEW_VIPS, |p| p + 1);
    &few[..n]
}

/// Slots of a [`Vips4`] table.
const VIP_SLOTS: usize = 64;

/// A few IPv4 VIPs in a collision-free table: VIP `a` sits in slot
/// `a * mul >> 26` as `1 << 32 | a`, every other slot holds 0 (equal to no such word), so
/// the question "is `a` a VIP?" is one multiply, one load and one compare.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Vips4 {
    mul: u32,
    slots: [u64; VIP_SLOTS],
}

impl Vips4 {
    /// The table of `vips` (distinct), with the first odd multiplier of a fixed sequence that
    /// puts no two of them in one slot; `None` if none of the first 4096 does (the caller
    /// then scans the list).
    fn build(vips: &[u32]) -> Option<Vips4> {
        if vips.len() > VIP_SLOTS / 2 {
            return None;
        }
        (0..4096u32).find_map(|i| {
            let mul = 0x9e37_79b1u32.wrapping_add(i.wrapping_mul(0x7f4a_7c16)) | 1;
            let mut slots = [0u64; VIP_SLOTS];
            for &a in vips {
                let s = &mut slots[Vips4::slot(mul, a)];
                if *s != 0 {
                    return None;
                }
                *s = 1 << 32 | a as u64;
            }
            Some(Vips4 { mul, slots })
        })
    }

    #[inline(always)]
    fn slot(mul: u32, a: u32) -> usize {
        (a.wrapping_mul(mul) >> 26) as usize % VIP_SLOTS
    }

    /// True if `a` is one of the table's VIPs.
    #[inline(always)]
    fn contains(&self, a: u32) -> bool {
        self.slots[Vips4::slot(self.mul, a)] == 1 << 32 | a as u64
    }
}

/// Slots of a worker's cache of destination positions.
const DEST_CACHE: usize = 64;
/// Slots of a worker's cache of service lookups.
const SVC_CACHE: usize = 64;

/// Slots of a worker's tally of traffic counts not yet added to the shared counters.
const TALLY: usize = DEST_CACHE;

/// A tally word counts packets from this bit up and their bytes below it (a chunk of a burst
/// holds at most 32 packets of at most 64 KiB each, far below either limit).
const TALLY_PKT: u64 = 1 << 40;

/// A cached service lookup: (protocol, address, port) → position in the snapshot.
type SvcCached = (Protocol, IpAddr, u16, u32);

/// Slots of a worker's next-hop MAC cache (in front of the neighbour map's hash lookup).
const NEIGH_CACHE: usize = 64;

#[inline]
fn neigh_slot(ip: IpAddr) -> usize {
    let x = match ip {
        IpAddr::V4(a) => u32::from(a) as u64,
        IpAddr::V6(a) => {
            let v = u128::from(a);
            v as u64 ^ (v >> 64) as u64
        }
    };
    (x.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 58) as usize % NEIGH_CACHE
}

/// A cached next hop: frames to `to` leave on `iface` from `src` to `dst`.
#[derive(Debug, Clone, Copy)]
struct HopEntry {
    to: IpAddr,
    iface: u16,
    dst: MacAddr,
    src: MacAddr,
}

/// A cached next hop of an on-link IPv4 destination: (address, interface, destination and
/// source MACs); the interface [`NO_HOP`] marks an empty slot.
type Hop4 = (u32, u16, [u8; 12]);

/// The interface number of an empty [`Hop4`] slot.
const NO_HOP: u16 = u16::MAX;

const EMPTY_HOP4: Hop4 = (0, NO_HOP, [0; 12]);

/// Slots of a worker's cache of next hops through IPv4 gateways.
const GW_CACHE: usize = 8;

#[inline]
fn hop4_slot(a: u32) -> usize {
    (a.wrapping_mul(0x9e37_79b9) >> 24) as usize % HOP4_CACHE
}

/// Slots of a worker's IPv4 next-hop cache (real servers of every service share it).
const HOP4_CACHE: usize = 256;

/// Where the IP header of an IPv4/IPv6 frame starts, and whether it is IPv6.
#[inline]
fn ip_offset(frame: &[u8]) -> Option<(usize, bool)> {
    let l3 = ethernet::Frame::new_checked(frame).ok()?.l3().ok()?;
    match l3.ethertype {
        ethertype::IPV4 => Some((l3.offset, false)),
        ethertype::IPV6 => Some((l3.offset, true)),
        _ => None,
    }
}

/// What the first pass of [`Worker::process_burst`] made of a frame.
#[derive(Debug, Clone, Copy)]
enum Stage {
    /// Not IPv4/IPv6 (or not even Ethernet): the general classifier takes it.
    NotIp,
    /// IPv4/IPv6 with malformed headers: dropped for this reason.
    Bad(DropReason),
    /// Parsed by the general parser (its headers in the scratch's `infos` at the same
    /// position); to a VIP or not when that is known (TCP/UDP/SCTP with its ports).
    Slow(Option<bool>),
    /// Parsed by the fixed-offset parser, to a VIP: its headers and hint at this position
    /// of `fin`/`hin`; [`Worker::established4`] may take it.
    FastVip(u8),
    /// Parsed by the fixed-offset parser, not to a VIP: its headers and hint at this
    /// position of `fout`/`hout`; [`Worker::reply4`] may take it.
    FastNotVip(u8),
}

const NO_KEY_IN: ConnKeyIn = ConnKeyIn {
    proto: Protocol::Tcp,
    caddr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    cport: 0,
    vaddr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    vport: 0,
};

/// Filler of the scratch's fixed-offset header slots (each burst writes a slot before
/// reading it).
const NO_FAST4: Fast4 = Fast4 {
    src: 0,
    dst: 0,
    sport: 0,
    dport: 0,
    total: 0,
    proto: 0,
    tcp_flags: 0,
    ttl: 0,
};

const NO_KEY_OUT: ConnKeyOut = ConnKeyOut {
    proto: Protocol::Tcp,
    daddr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    dport: 0,
    addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    port: 0,
};

/// Filler of the scratch's header slots (each burst writes a slot before reading it).
const NO_INFO: IpInfo = IpInfo {
    l3: 0,
    v6: false,
    end: 0,
    proto: 0,
    l4: 0,
    src: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    dst: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    sport: 0,
    dport: 0,
    tcp_flags: 0,
    fragment: false,
    ttl: 0,
    l4_present: false,
};

/// A worker's arrays for the two passes of a burst chunk, allocated once: each chunk writes
/// the entries it reads, so nothing is cleared per burst.
struct Scratch {
    /// What the first pass made of each frame of the chunk, by position.
    stage: [Stage; PREFETCH_BURST],
    /// Headers of the frames the general parser read (`Stage::Slow`), by position.
    infos: [IpInfo; PREFETCH_BURST],
    /// Client-side keys of the general parser's frames to a VIP, in frame order.
    kin: [ConnKeyIn; PREFETCH_BURST],
    /// Reply-side keys of its other TCP/UDP/SCTP frames, in frame order.
    kout: [ConnKeyOut; PREFETCH_BURST],
    /// Headers of the fixed-offset parser's frames (IPv4), to a VIP and not, in frame
    /// order (their keys are prefetched from here); their prefetch hints.
    fin: [Fast4; PREFETCH_BURST],
    fout: [Fast4; PREFETCH_BURST],
    hin: [LookupHint; PREFETCH_BURST],
    hout: [LookupHint; PREFETCH_BURST],
    /// The chunk's new connections staged in the table, not yet committed.
    staging: Staging,
}

/// A new connection of the chunk staged by [`Worker::new_conn4`]: the table's handle and
/// its first packet's position in the chunk.
#[derive(Debug, Clone, Copy)]
struct StagedConn {
    conn: Staged4,
    pos: u8,
}

/// The new connections a burst chunk staged ([`ConnTable::stage4`]) and has not yet
/// committed ([`Worker::commit_staged`]), and the chunk positions whose commit was refused.
#[derive(Debug)]
struct Staging {
    /// At most [`PREFETCH_BURST`] (reserved once: no allocation per burst).
    items: Vec<StagedConn>,
    /// Bit [`Staging::bit`] of each staged key: most keys that are not staged are told
    /// without looking at the items.
    filter: u64,
    /// Bit `i`: the connection of the chunk's frame `i` could not be committed.
    refused: u32,
    /// Bit `i`: the connection of the chunk's frame `i` lost a duplicate race.
    lost: u32,
    /// Something was inserted in this chunk other than through the staged list (the
    /// general path ran, or staged connections were committed before the chunk's end): the
    /// prefetch's [`LookupHint::absent`] answers no longer hold.
    void: bool,
    /// Table capacity taken in one step, at the chunk's first new connection, for the
    /// chunk's frames whose key the prefetch found absent; the rest is given back at the
    /// chunk's end.
    reserved: Reservation,
    /// The chunk's reservation was made.
    reserved_tried: bool,
}

impl Staging {
    /// The filter bit of client-side key `k`.
    #[inline(always)]
    fn bit(k: &ConnKeyIn4) -> u64 {
        let x = k.caddr ^ (k.cport as u32) << 16 ^ k.vport as u32 ^ k.vaddr.rotate_left(7);
        1 << (x.wrapping_mul(0x9e37_79b1) >> 26)
    }

    /// True if a connection of client-side key `k` is staged.
    #[inline]
    fn holds(&self, k: &ConnKeyIn4) -> bool {
        self.filter & Self::bit(k) != 0 && self.items.iter().any(|x| x.conn.is_key(k))
    }
}

impl Scratch {
    fn new() -> Box<Scratch> {
        Box::new(Scratch {
            stage: [Stage::NotIp; PREFETCH_BURST],
            infos: [NO_INFO; PREFETCH_BURST],
            kin: [NO_KEY_IN; PREFETCH_BURST],
            kout: [NO_KEY_OUT; PREFETCH_BURST],
            fin: [NO_FAST4; PREFETCH_BURST],
            fout: [NO_FAST4; PREFETCH_BURST],
            hin: [LookupHint::NONE; PREFETCH_BURST],
            hout: [LookupHint::NONE; PREFETCH_BURST],
            staging: Staging {
                items: Vec::with_capacity(PREFETCH_BURST),
                filter: 0,
                refused: 0,
                lost: 0,
                void: false,
                reserved: Reservation::default(),
                reserved_tried: false,
            },
        })
    }
}

/// One packet worker's handle on the pipeline: its counters and scratch state.
pub struct Worker {
    id: usize,
    /// This worker's right to the service and destination counters (a shard of its own while
    /// there are fewer than `lvs_core::stats::SHARDS` workers: no locked add per packet).
    writer: StatsWriter,
    p: Arc<Pipeline>,
    caches: Caches,
    snap: Snap,
    /// Next-hop MACs recently found in `snap.neigh` (cleared when it changes).
    neigh_cache: [std::cell::Cell<Option<(IpAddr, MacAddr)>>; NEIGH_CACHE],
    /// Whole next hops (interface, MACs) of on-link destinations such as real servers, by
    /// destination address (cleared when the routes or the neighbour map change).
    hop_cache: [std::cell::Cell<Option<HopEntry>>; NEIGH_CACHE],
    /// The IPv4 entries of `hop_cache` again, in a form [`l2_out_v4`](Worker::l2_out_v4)
    /// checks and copies in a few instructions (cleared with it).
    hop4: [std::cell::Cell<Hop4>; HOP4_CACHE],
    /// Next hops through IPv4 gateways, keyed by the gateway's address and interface (what
    /// frames to the many clients behind a gateway share; cleared with `hop_cache`).
    gw4: [std::cell::Cell<Hop4>; GW_CACHE],
    /// The IPv4 routes of `snap.routes`, compiled (rebuilt when it changes).
    routes_v4: V4Routes,
    /// The IPv4 VIPs of `snap.set` when there are few (rebuilt when it changes): a short
    /// scan instead of a hash lookup per packet.
    vips_v4: Option<[u32; FEW_VIPS]>,
    /// `vips_v4` as a [`Vips4`] table (rebuilt with it; `None` when it is `None` or no
    /// multiplier separates its VIPs).
    vips4: Option<Vips4>,
    /// Positions of destinations in `snap.set` by id (cleared when it changes).
    dest_cache: [std::cell::Cell<Option<(u32, u32, u32)>>; DEST_CACHE],
    /// Services found in `snap.set` by (protocol, address, port) (cleared when it changes).
    svc_cache: [std::cell::Cell<Option<SvcCached>>; SVC_CACHE],
    /// Traffic of the current burst by destination id in slot `id % TALLY` (see
    /// [`account`](Worker::account)): the id, and [`TALLY_PKT`]-packed packets and bytes
    /// client → server and back. `tally_used` has bit `s` set while slot `s` holds counts.
    tally_id: [std::cell::Cell<u32>; TALLY],
    tally_in: [std::cell::Cell<u64>; TALLY],
    tally_out: [std::cell::Cell<u64>; TALLY],
    tally_used: std::cell::Cell<u64>,
    /// A frame of this burst taught the neighbour table something (refresh before the next).
    learned: std::cell::Cell<bool>,
    /// Drops by reason.
    pub drops: Arc<DropCounters>,
    /// Traffic counters.
    pub stats: Arc<WorkerStats>,
    ident: std::cell::Cell<u16>,
    /// Frames waiting for their next hop's MAC.
    hold: std::cell::RefCell<HoldQueue>,
    /// The `now` of the frame being processed (for the hold queue's deadlines).
    now: std::cell::Cell<Time>,
    /// The burst arrays (taken out while a burst runs; `None` only after a panic in one).
    scratch: Option<Box<Scratch>>,
}

// A worker moves to its packet thread.
const _: fn() = || {
    fn send<T: Send>() {}
    send::<Worker>();
};

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("id", &self.id)
            .field("drops", &self.drops)
            .finish()
    }
}

impl Worker {
    /// The pipeline this worker belongs to.
    pub fn pipeline(&self) -> &Arc<Pipeline> {
        &self.p
    }

    /// This worker's number.
    pub fn id(&self) -> usize {
        self.id
    }

    /// Processes one frame received on interface `ingress` at `now`, rewriting it in place.
    pub fn process(&mut self, fb: &mut FrameBuf<'_>, ingress: u16, now: Time) -> Verdict {
        self.refresh_snap();
        self.now.set(now);
        bump(&self.stats.frames);
        let v = self.classify(fb, ingress, now);
        self.flush_tally();
        self.count(v)
    }

    /// Processes a receive burst: `verdicts[i]` gets what [`process`](Self::process) would
    /// return for `frames[i]` and each frame is rewritten the same way, in order. First the
    /// headers of up to 32 frames are parsed (the common case, IPv4 TCP/UDP without options,
    /// in a few fixed-offset loads) and the connection-table lines their lookups will read
    /// are brought into cache together ([`ConnTable::prefetch_in4_of`] and
    /// [`ConnTable::prefetch_out4_of`] over the fixed-offset parser's headers,
    /// [`ConnTable::prefetch_in`] and [`ConnTable::prefetch_out`] over the general parser's
    /// keys), so the burst pays its cache and TLB misses in parallel
    /// rather than one packet after another; then each frame is processed from its parsed
    /// headers. No allocation. Only `min(frames.len(), verdicts.len())` frames are processed.
    ///
    /// Never inlined: once per burst, a call costs nothing, and the code of the burst loop
    /// (and its instruction count under callgrind) does not change with its caller's.
    #[inline(never)]
    pub fn process_burst(
        &mut self,
        frames: &mut [FrameBuf<'_>],
        ingress: u16,
        now: Time,
        verdicts: &mut [Verdict],
    ) {
        let n = frames.len().min(verdicts.len());
        self.now.set(now);
        let mut scratch = self.scratch.take().unwrap_or_else(Scratch::new);
        let s = &mut *scratch;
        let mut start = 0;
        while start < n {
            let m = (n - start).min(PREFETCH_BURST);
            self.refresh_snap();
            let chunk = &mut frames[start..start + m];
            let [nin, nout, nin4, nout4] = self.stage_burst(chunk, s);
            s.staging.void = false;
            s.staging.reserved_tried = false;
            let conns = &self.p.tables.conns;
            // The prefetch of the fast paths' keys hands back each key's hash and candidate
            // entry, which their lookups start from instead of hashing and probing again.
            if nin4 != 0 {
                conns.prefetch_in4_of(&s.fin[..nin4], Fast4::key_in4, &mut s.hin);
            }
            if nout4 != 0 {
                conns.prefetch_out4_of(&s.fout[..nout4], Fast4::key_out4, &mut s.hout);
            }
            if nin != 0 {
                conns.prefetch_in(&s.kin[..nin]);
            }
            if nout != 0 {
                conns.prefetch_out(&s.kout[..nout]);
            }
            let f = &self.stats.frames;
            f.store(f.load(Ordering::Relaxed) + m as u64, Ordering::Relaxed);
            let (mut fwd_in, mut fwd_out) = (0u64, 0u64);
            for (pos, (((fb, v), st), info)) in chunk
                .iter_mut()
                .zip(&mut verdicts[start..start + m])
                .zip(&s.stage[..m])
                .zip(&mut s.infos[..m])
                .enumerate()
            {
                if self.learned.get() {
                    // What an earlier frame of the burst published (a learned neighbour) is
                    // visible to later ones, as with `process`. (Only the neighbour map: the
                    // VIP hints above belong to this burst's service snapshot.)
                    self.refresh_neigh();
                }
                let out = match st {
                    // The fast paths read the parsed headers where the first pass left them.
                    &Stage::FastVip(a) => {
                        let a = a as usize % PREFETCH_BURST;
                        let h = &s.fin[a];
                        let hint = &s.hin[a];
                        if hint.absent() && !s.staging.void {
                            // The prefetch saw no entry, and nothing inserted since could be
                            // this key's without `holds` knowing: the lookup would miss.
                            self.vip4_missed(
                                fb,
                                h,
                                (&s.hin, &s.fin, a, nin4),
                                None,
                                &mut s.staging,
                                pos,
                                ingress,
                                now,
                            )
                        } else {
                            let mut looked = None;
                            match self.established4(fb, h, hint, &mut looked, ingress, now) {
                                Some(v) => {
                                    fwd_in += matches!(v, Verdict::Forward { .. }) as u64;
                                    v
                                }
                                None => self.vip4_missed(
                                    fb,
                                    h,
                                    (&s.hin, &s.fin, a, nin4),
                                    looked,
                                    &mut s.staging,
                                    pos,
                                    ingress,
                                    now,
                                ),
                            }
                        }
                    }
                    &Stage::FastNotVip(a) => {
                        let a = a as usize % PREFETCH_BURST;
                        let h = &s.fout[a];
                        match self.reply4(fb, h, &s.hout[a], now) {
                            Some(v) => {
                                fwd_out += matches!(v, Verdict::Forward { .. }) as u64;
                                v
                            }
                            None => {
                                self.leave_fast(&mut s.staging, now);
                                self.ip_parsed(fb, Ok(h.info()), Some(false), ingress, now)
                            }
                        }
                    }
                    // The general paths look connections up their own way: the chunk's
                    // staged ones are committed first.
                    &Stage::Slow(vip) => {
                        self.leave_fast(&mut s.staging, now);
                        self.ip_parsed(fb, Ok(*info), vip, ingress, now)
                    }
                    &Stage::Bad(r) => Verdict::Drop(r),
                    Stage::NotIp => {
                        self.leave_fast(&mut s.staging, now);
                        self.classify(fb, ingress, now)
                    }
                };
                *v = match out {
                    Verdict::Forward { .. } => out,
                    _ => self.count(out),
                };
            }
            // Before the frames leave: the chunk's new connections become findable.
            self.leave_fast(&mut s.staging, now);
            if s.staging.refused | s.staging.lost != 0 {
                let refused = std::mem::take(&mut s.staging.refused);
                let lost = std::mem::take(&mut s.staging.lost);
                self.refuse_uncommitted(&mut verdicts[start..start + m], refused, lost);
            }
            for (c, k) in [
                (&self.stats.forwarded_in, fwd_in),
                (&self.stats.forwarded_out, fwd_out),
            ] {
                if k != 0 {
                    c.store(c.load(Ordering::Relaxed) + k, Ordering::Relaxed);
                }
            }
            // Before the next chunk's snapshot refresh: the tally belongs to this snapshot.
            self.flush_tally();
            start += m;
        }
        self.scratch = Some(scratch);
    }

    /// The first pass over a burst chunk (at most [`PREFETCH_BURST`] frames): parses each
    /// frame (the common case in a few fixed-offset loads, else the general parser) into
    /// `s.stage` (and `s.infos`), and puts the connection keys of TCP/UDP/SCTP frames to a
    /// VIP in `s.kin`, the others' in `s.kout` (the fixed-offset parser's frames: their
    /// headers in `s.fin` and `s.fout`). Returns how many of each: `[kin, kout, fin,
    /// fout]`.
    #[inline(always)]
    fn stage_burst(&self, chunk: &[FrameBuf<'_>], s: &mut Scratch) -> [usize; 4] {
        let (mut nin, mut nout) = (0usize, 0usize);
        let (mut nin4, mut nout4) = (0usize, 0usize);
        for ((st, info), fb) in s.stage.iter_mut().zip(&mut s.infos).zip(chunk) {
            if let Some(h) = xlate::parse_fast4(fb.frame()) {
                if self.is_vip4(h.dst) {
                    *st = Stage::FastVip(nin4 as u8);
                    if let Some(k) = s.fin.get_mut(nin4) {
                        *k = h;
                    }
                    nin4 += 1;
                } else {
                    *st = Stage::FastNotVip(nout4 as u8);
                    if let Some(k) = s.fout.get_mut(nout4) {
                        *k = h;
                    }
                    nout4 += 1;
                }
                continue;
            }
            let Some((off, v6)) = ip_offset(fb.frame()) else {
                *st = Stage::NotIp;
                continue;
            };
            let ip = match xlate::parse_ip(fb.frame(), off, v6) {
                Ok(ip) => ip,
                Err(r) => {
                    *st = Stage::Bad(r);
                    continue;
                }
            };
            let mut vip = None;
            if ip.l4_present
                && let Some(proto) = Protocol::from_number(ip.proto)
            {
                if self.is_vip(ip.dst) {
                    vip = Some(true);
                    if let Some(k) = s.kin.get_mut(nin) {
                        *k = ip.key_in(proto);
                    }
                    nin += 1;
                } else {
                    vip = Some(false);
                    if let Some(k) = s.kout.get_mut(nout) {
                        *k = ip.key_out(proto);
                    }
                    nout += 1;
                }
            }
            *info = ip;
            *st = Stage::Slow(vip);
        }
        [nin, nout, nin4, nout4].map(|n| n.min(PREFETCH_BURST))
    }

    #[inline]
    fn refresh_snap(&mut self) {
        self.learned.set(false);
        if refresh(&mut self.snap.set, self.caches.services.load()) {
            self.vips_v4 = few_vips_v4(&self.snap.set);
            self.vips4 = self.vips_v4.as_ref().and_then(|v| Vips4::build(dedup_vips(v)));
            for c in &self.dest_cache {
                c.set(None);
            }
            for c in &self.svc_cache {
                c.set(None);
            }
        }
        if refresh(&mut self.snap.routes, self.caches.routes.load()) {
            self.routes_v4 = V4Routes::compile(&self.snap.routes);
            for c in &self.hop_cache {
                c.set(None);
            }
            for c in self.hop4.iter().chain(&self.gw4) {
                c.set(EMPTY_HOP4);
            }
        }
        self.refresh_neigh();
        refresh(&mut self.snap.fwmarks, self.caches.fwmarks.load());
        refresh(&mut self.snap.lips, self.caches.lips.load());
    }

    #[inline]
    fn refresh_neigh(&mut self) {
        self.learned.set(false);
        if refresh(&mut self.snap.neigh, self.caches.neigh.load()) {
            for c in &self.neigh_cache {
                c.set(None);
            }
            for c in &self.hop_cache {
                c.set(None);
            }
            for c in self.hop4.iter().chain(&self.gw4) {
                c.set(EMPTY_HOP4);
            }
        }
    }

    /// The MAC of next hop `ip`: the worker's small cache, else the neighbour map.
    #[inline]
    fn neigh_lookup(&self, ip: IpAddr) -> Option<MacAddr> {
        let slot = &self.neigh_cache[neigh_slot(ip)];
        if let Some((a, mac)) = slot.get()
            && a == ip
        {
            return Some(mac);
        }
        let mac = *self.snap.neigh.get(&ip)?;
        slot.set(Some((ip, mac)));
        Some(mac)
    }

    /// Records a neighbour learned from a frame (published for every worker; this one
    /// refreshes its snapshot before its next frame).
    /// Learns a neighbour from ARP/NDP; a new one only if the frame was `for_us` (see
    /// [`NeighTable::learn`]).
    fn learn(&self, ip: IpAddr, mac: MacAddr, for_us: bool) {
        if self.p.tables.neigh.learn(ip, mac, for_us) {
            self.learned.set(true);
        }
    }

    /// One of lvs's addresses: a VIP, LIP or mark address, or an interface's own address
    /// (the source of lvs's ARP/NDP requests, so the answers come to it).
    fn addressed_to_us(&self, addr: IpAddr) -> bool {
        self.owns(addr)
            || self
                .p
                .interfaces
                .iter()
                .any(|i| i.ipv4.map(IpAddr::V4) == Some(addr) || i.ipv6.map(IpAddr::V6) == Some(addr))
    }

    #[inline]
    fn count(&self, v: Verdict) -> Verdict {
        match v {
            Verdict::Drop(r) => self.drops.count(r),
            Verdict::Pass => bump(&self.stats.passed),
            Verdict::Reply => bump(&self.stats.replies),
            Verdict::Held => bump(&self.stats.held),
            Verdict::Forward { .. } => {}
        }
        v
    }

    fn classify(&self, fb: &mut FrameBuf<'_>, ingress: u16, now: Time) -> Verdict {
        let Ok(eth) = ethernet::Frame::new_checked(fb.frame()) else {
            return Verdict::Drop(DropReason::Malformed);
        };
        let Ok(l3) = eth.l3() else {
            return Verdict::Drop(DropReason::Malformed);
        };
        match l3.ethertype {
            ethertype::ARP => self.arp(fb, l3.offset, ingress),
            ethertype::IPV4 => self.ip(fb, l3.offset, false, ingress, now),
            ethertype::IPV6 => self.ip(fb, l3.offset, true, ingress, now),
            _ => Verdict::Pass,
        }
    }

    #[inline]
    fn route(&self, to: IpAddr) -> Option<NextHop> {
        match to {
            IpAddr::V4(a) => self.routes_v4.lookup(a),
            IpAddr::V6(_) => route::lookup_in(&self.snap.routes, to),
        }
    }

    fn fwmark_of(&self, proto: Protocol, dst: IpAddr, dport: u16) -> Option<u32> {
        self.snap
            .fwmarks
            .iter()
            .find(|r| r.proto == proto && r.addr == dst && (r.first_port..=r.last_port).contains(&dport))
            .map(|r| r.mark)
    }

    fn owns(&self, addr: IpAddr) -> bool {
        self.is_vip(addr)
            || lip::contains(&self.snap.lips, addr)
            || self.snap.fwmarks.iter().any(|r| r.addr == addr)
    }

    fn our_mac(&self, iface: u16) -> MacAddr {
        self.p
            .interfaces
            .get(iface as usize)
            .map(|i| i.mac)
            .unwrap_or([0; 6])
    }

    fn our_addr(&self, iface: u16, v6: bool) -> Option<IpAddr> {
        let i = self.p.interfaces.get(iface as usize)?;
        if v6 {
            i.ipv6.map(IpAddr::V6)
        } else {
            i.ipv4.map(IpAddr::V4)
        }
    }

    fn arp(&self, fb: &mut FrameBuf<'_>, off: usize, ingress: u16) -> Verdict {
        let Ok(a) = arp::Packet::new_checked(&fb.frame()[off..]) else {
            return Verdict::Drop(DropReason::Malformed);
        };
        let (op, sha, spa, tpa) = (a.operation(), a.sender_hw_addr(), a.sender_ip(), a.target_ip());
        if !spa.is_unspecified() && sha != ethernet::BROADCAST && sha[0] & 1 == 0 {
            self.learn(IpAddr::V4(spa), sha, self.addressed_to_us(IpAddr::V4(tpa)));
        }
        if op != arp::OP_REQUEST || !self.owns(IpAddr::V4(tpa)) {
            return Verdict::Pass;
        }
        let mac = self.our_mac(ingress);
        let f = fb.frame_mut();
        arp::Packet::new_unchecked(&mut f[off..]).make_reply(mac);
        let mut e = ethernet::Frame::new_unchecked(&mut f[..]);
        e.set_dst_addr(sha);
        e.set_src_addr(mac);
        Verdict::Reply
    }

    fn ip(&self, fb: &mut FrameBuf<'_>, off: usize, v6: bool, ingress: u16, now: Time) -> Verdict {
        self.ip_parsed(fb, xlate::parse_ip(fb.frame(), off, v6), None, ingress, now)
    }

    /// An IP frame from its parsed headers; `vip` is `set.is_vip(dst)` when the caller
    /// already knows it.
    fn ip_parsed(
        &self,
        fb: &mut FrameBuf<'_>,
        parsed: Result<IpInfo, DropReason>,
        vip: Option<bool>,
        ingress: u16,
        now: Time,
    ) -> Verdict {
        let mut ip = match parsed {
            Ok(ip) => ip,
            Err(r) => return Verdict::Drop(r),
        };
        let set = &*self.snap.set;
        if ip.proto == ip_proto::ICMP || ip.proto == ip_proto::ICMPV6 {
            return self.icmp(fb, &mut ip, set, ingress, now);
        }
        let Some(proto) = Protocol::from_number(ip.proto) else {
            return if self.owns(ip.dst) {
                Verdict::Drop(DropReason::Unsupported)
            } else {
                Verdict::Pass
            };
        };
        let fwmark = self.fwmark_of(proto, ip.dst, ip.dport);
        let to_vip = vip.unwrap_or_else(|| self.is_vip(ip.dst));
        if fwmark.is_some() || to_vip || self.snap.fwmarks.iter().any(|r| r.addr == ip.dst) {
            if ip.fragment {
                return Verdict::Drop(DropReason::Fragment);
            }
            return self.inbound(fb, &mut ip, proto, fwmark, None, set, ingress, now);
        }
        if lip::contains(&self.snap.lips, ip.dst) {
            if ip.fragment {
                return Verdict::Drop(DropReason::Fragment);
            }
            return match self.reply(fb, &mut ip, proto, set, now) {
                Some(v) => v,
                None => Verdict::Drop(DropReason::NoConnection),
            };
        }
        if ip.l4_present
            && let Some(v) = self.reply(fb, &mut ip, proto, set, now)
        {
            return v;
        }
        Verdict::Pass
    }

    /// A TCP/UDP frame to a VIP that [`established4`](Self::established4) handed back,
    /// with what it looked up: the rest of [`ip_parsed`](Self::ip_parsed)'s VIP branch.
    #[cold]
    fn ip_looked(
        &self,
        fb: &mut FrameBuf<'_>,
        ip: &mut IpInfo,
        looked: Option<ConnRef>,
        ingress: u16,
        now: Time,
    ) -> Verdict {
        let set = &*self.snap.set;
        let proto = if ip.proto == ip_proto::TCP {
            Protocol::Tcp
        } else {
            Protocol::Udp
        };
        let fwmark = self.fwmark_of(proto, ip.dst, ip.dport);
        if looked.is_none()
            && fwmark.is_none()
            && let Some(v) = self.new_conn_v4(fb, ip, proto, set, ingress, now)
        {
            return v;
        }
        self.inbound(fb, ip, proto, fwmark, Some(looked), set, ingress, now)
    }

    /// The first packet of a connection in a burst: what [`inbound`](Self::inbound) and
    /// [`new_conn`](Self::new_conn) do for a TCP SYN or UDP datagram with no connection
    /// yet, to a service by address (no firewall mark) without persistence or one-packet
    /// scheduling, done in one pass with the connection entry kept in place and rewritten
    /// by [`forward_conn`](Self::forward_conn). `ip` is as [`xlate::parse_fast_v4`] gave it.
    /// `None`, before any side effect, for everything else (no service, a TCP segment
    /// that cannot open a connection, persistence, `--ops`), which the general path
    /// handles. The fuzz tests check that a burst and single frames agree.
    #[inline(always)]
    fn new_conn_v4(
        &self,
        fb: &mut FrameBuf<'_>,
        ip: &mut IpInfo,
        proto: Protocol,
        set: &ServiceSet,
        ingress: u16,
        now: Time,
    ) -> Option<Verdict> {
        let flow = FlowKey {
            proto,
            src: ip.src,
            src_port: ip.sport,
            dst: ip.dst,
            dst_port: ip.dport,
        };
        let Some((svc, dest)) = self.pick_new(set, &flow, ip.tcp_flags, now)? else {
            return Some(self.no_destination(fb, ip, ingress));
        };
        Some(self.open_conn(fb, ip, proto, svc, dest, ingress, now))
    }

    /// The scheduling step the burst's new-connection paths share: the service of `flow`
    /// (a first packet with TCP flags `tcp_flags`) and the destination its scheduler picks,
    /// `Some(None)` if it has none. `None`, before any side effect, for what these paths leave
    /// to the general one: a TCP segment that cannot open a connection (no SYN, or a RST),
    /// no service, persistence, one-packet scheduling of UDP.
    #[inline(always)]
    fn pick_new<'s>(
        &self,
        set: &'s ServiceSet,
        flow: &FlowKey,
        tcp_flags: u8,
        now: Time,
    ) -> Option<Option<(&'s VirtualService, &'s Destination)>> {
        const SYN_RST: u8 = TcpFlags::SYN.0 | TcpFlags::RST.0;
        let tcp = flow.proto == Protocol::Tcp;
        if tcp && tcp_flags & SYN_RST != TcpFlags::SYN.0 {
            return None;
        }
        let svc = self.service_of(set, flow.proto, flow.dst, flow.dst_port)?;
        if svc.config.persistence.is_some() || (svc.config.one_packet && !tcp) {
            return None;
        }
        Some(svc.schedule(flow, now).map(|d| (&**svc, d)))
    }

    /// Counts a new connection of service `svc` to `dest` (both, and the pipeline's total);
    /// the real server's port for a packet to `vport` (a port-0 destination keeps it).
    #[inline(always)]
    fn count_new_conn(&self, svc: &VirtualService, dest: &Destination, vport: u16) -> u16 {
        dest.state.stats.add_conn(&self.writer);
        svc.stats.add_conn(&self.writer);
        bump(&self.stats.new_conns);
        if dest.config.port == 0 {
            vport
        } else {
            dest.config.port
        }
    }

    /// The rest of [`new_conn_v4`](Self::new_conn_v4) once `dest` of service `svc` is
    /// chosen: counts, FULLNAT local address, insert, first state, rewrite.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn open_conn(
        &self,
        fb: &mut FrameBuf<'_>,
        ip: &mut IpInfo,
        proto: Protocol,
        svc: &VirtualService,
        dest: &Destination,
        ingress: u16,
        now: Time,
    ) -> Verdict {
        let flags = TcpFlags(ip.tcp_flags);
        let method = dest.config.method;
        let dport = self.count_new_conn(svc, dest, ip.dport);
        let local = if method == ForwardMethod::FullNat {
            match self.p.tables.lips.allocate(dest.config.addr) {
                Some((a, p)) => Some(SocketAddr::new(a, p)),
                None => return Verdict::Drop(DropReason::NoLocalPort),
            }
        } else {
            None
        };
        let conns = &self.p.tables.conns;
        let nc = NewConn {
            key: ip.key_in(proto),
            method,
            dest_addr: SocketAddr::new(dest.config.addr, dport),
            local,
            dest: &dest.state,
            template: None,
        };
        let c = match conns.insert(nc, now) {
            Ok(c) => c,
            Err(_) => {
                if let Some(l) = local {
                    self.p.tables.lips.release(l.ip(), l.port());
                }
                return Verdict::Drop(DropReason::TableFull);
            }
        };
        // From here on as `inbound` for the new entry.
        let before = c.state();
        let after = conns
            .on_packet(&c, Direction::Input, flags, now)
            .unwrap_or(before);
        self.account(c.dest_id(), true, ip.ip_len());
        let toa = proto == Protocol::Tcp
            && method == ForwardMethod::FullNat
            && before != ConnState::Established
            && after == ConnState::Established
            && self.p.toa.load(Ordering::Relaxed);
        let v = self.forward_conn(fb, ip, &c, toa, ingress);
        if matches!(v, Verdict::Forward { .. }) {
            bump(&self.stats.forwarded_in);
        }
        v
    }

    /// A burst's IPv4 frame to a VIP that [`established4`](Self::established4) handed back
    /// (`looked`: what its lookup found; `hints[at..end]` and `heads[at..end]` its prefetch
    /// hint and headers and those of the chunk's later frames to a VIP; `pos` its place in
    /// the chunk): a new connection is staged by [`new_conn4`](Self::new_conn4); everything
    /// else takes the general path, after the chunk's staged connections are committed (a
    /// later packet of a staged connection is looked up again then, and finds it).
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    fn vip4_missed(
        &self,
        fb: &mut FrameBuf<'_>,
        h: &Fast4,
        (hints, heads, at, end): (&[LookupHint], &[Fast4], usize, usize),
        looked: Option<ConnRef>,
        staging: &mut Staging,
        pos: usize,
        ingress: u16,
        now: Time,
    ) -> Verdict {
        // This frame's hint and those of the chunk's later frames to a VIP.
        let later = at..end.max(at + 1);
        let hints = hints.get(later.clone()).unwrap_or_default();
        let heads = heads.get(later).unwrap_or_default();
        let staged_here = looked.is_none() && !staging.items.is_empty() && staging.holds(&h.key_in4());
        if looked.is_none()
            && !staged_here
            && let Some(v) = self.new_conn4(fb, h, (hints, heads), staging, pos, ingress, now)
        {
            return v;
        }
        self.leave_fast(staging, now);
        if staged_here {
            return self.ip_parsed(fb, Ok(h.info()), Some(true), ingress, now);
        }
        self.ip_looked(fb, &mut h.info(), looked, ingress, now)
    }

    /// [`new_conn_v4`](Self::new_conn_v4) for a burst's frame that [`xlate::parse_fast4`]
    /// read as `h` and whose lookup missed (`hints`, `heads`: its prefetch hint and headers,
    /// then those of the chunk's later frames to a VIP): the same decisions
    /// and counts, but the connection is only staged ([`ConnTable::stage4`]) and the frame
    /// rewritten from it; [`commit_staged`](Self::commit_staged) makes it findable and
    /// applies the frame's flags to its state before anything could look for it (before a
    /// later packet of the flow, the general path, or the end of the chunk). Meanwhile the
    /// server-side index bucket it will be filed in arrives in the cache. `None`, before any
    /// side effect, for what `new_conn_v4` does not take.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn new_conn4(
        &self,
        fb: &mut FrameBuf<'_>,
        h: &Fast4,
        (hints, heads): (&[LookupHint], &[Fast4]),
        staging: &mut Staging,
        pos: usize,
        ingress: u16,
        now: Time,
    ) -> Option<Verdict> {
        let proto = h.protocol();
        let dst = IpAddr::V4(Ipv4Addr::from(h.dst));
        if !self.snap.fwmarks.is_empty() && self.fwmark_of(proto, dst, h.dport).is_some() {
            return None;
        }
        let flow = FlowKey {
            proto,
            src: IpAddr::V4(Ipv4Addr::from(h.src)),
            src_port: h.sport,
            dst,
            dst_port: h.dport,
        };
        let Some((svc, dest)) = self.pick_new(&self.snap.set, &flow, h.tcp_flags, now)? else {
            return Some(self.no_destination(fb, &h.info(), ingress));
        };
        let IpAddr::V4(daddr) = dest.config.addr else {
            // An IPv6 server behind an IPv4 service: the general insert (findable at once).
            staging.void = true;
            return Some(self.open_conn(fb, &mut h.info(), proto, svc, dest, ingress, now));
        };
        let method = dest.config.method;
        let dport = self.count_new_conn(svc, dest, h.dport);
        let lips = &self.p.tables.lips;
        let local = if method == ForwardMethod::FullNat {
            match lips.allocate(dest.config.addr) {
                Some((IpAddr::V4(a), p)) => (u32::from(a), p),
                Some((a, p)) => {
                    // A pool hands out addresses of the server's family; never an IPv6 one here.
                    lips.release(a, p);
                    return Some(Verdict::Drop(DropReason::NoLocalPort));
                }
                None => return Some(Verdict::Drop(DropReason::NoLocalPort)),
            }
        } else {
            (0, 0)
        };
        let nc = NewConn4 {
            key: h.key_in4(),
            method,
            dest_addr: (u32::from(daddr), dport),
            local,
            dest: &dest.state,
        };
        let conns = &self.p.tables.conns;
        if staging.reserved.left() == 0 && !staging.reserved_tried {
            // One step for the capacity of the chunk's new connections: this one and the
            // later frames that may open one (a SYN, a datagram) whose key the prefetch
            // found absent. What is left goes back before the general path or at the end.
            staging.reserved_tried = true;
            let n = hints
                .iter()
                .zip(heads)
                .skip(1)
                .filter(|(x, f)| x.absent() && f.may_open())
                .count() as u32
                + 1;
            conns.reserve_burst(n, &mut staging.reserved);
        }
        let hint = hints.first().unwrap_or(&LookupHint::NONE);
        let staged = match conns.stage4(&nc, TcpFlags(h.tcp_flags), hint, &mut staging.reserved, now) {
            Ok(c) => c,
            Err(_) => {
                if method == ForwardMethod::FullNat {
                    lips.release(IpAddr::V4(Ipv4Addr::from(local.0)), local.1);
                }
                return Some(Verdict::Drop(DropReason::TableFull));
            }
        };
        let c = staged.conn();
        if staging.items.len() == PREFETCH_BURST {
            // Cannot happen (one per frame of a chunk); never grow the list on the fast path.
            staging.void = true;
            self.commit_staged(staging, now);
        }
        staging.items.push(StagedConn {
            conn: staged,
            pos: pos as u8,
        });
        staging.filter |= Staging::bit(&nc.key);
        self.account(c.dest_id(), true, h.ip_len());
        // A TCP first packet (SYN, no RST) moves a new connection to SYN_RECV, never to
        // ESTABLISHED: never the TOA segment.
        let v = self.forward4(fb, h, c, method, false, ingress);
        if matches!(v, Verdict::Forward { .. }) {
            bump(&self.stats.forwarded_in);
        }
        Some(v)
    }

    /// Commits the chunk's staged connections in the order they were staged (with the
    /// first packet's state change, they end as [`open_conn`](Self::open_conn)'s insert and
    /// `on_packet` leave a connection); a refused commit marks its frame's position in
    /// `staging.refused`. Nothing to do without staged connections.
    #[inline]
    fn commit_staged(&self, staging: &mut Staging, now: Time) {
        if !staging.items.is_empty() {
            self.commit_staged_all(staging, now);
        }
    }

    /// Before a frame takes the general path (which looks connections up, and may insert
    /// them, its own way) and at the chunk's end: commits the chunk's staged connections,
    /// gives back its unused reservation, and voids the burst prefetch's answers that a key
    /// is absent (see [`LookupHint::absent`]).
    #[inline]
    fn leave_fast(&self, staging: &mut Staging, now: Time) {
        staging.void = true;
        self.commit_staged(staging, now);
        if staging.reserved.left() != 0 {
            // The general path takes its own capacity: none held back from it.
            self.p.tables.conns.unreserve(&mut staging.reserved);
        }
    }

    /// [`commit_staged`](Self::commit_staged) with something to commit.
    #[inline(never)]
    fn commit_staged_all(&self, staging: &mut Staging, now: Time) {
        staging.filter = 0;
        let items = &staging.items;
        let (mut refused, mut lost) = (0u32, 0u32);
        self.p
            .tables
            .conns
            .commit4_batch(items.iter().map(|x| x.conn), now, |i, r| {
                let Some(x) = items.get(i) else { return };
                let bit = 1 << (x.pos as u32 % 32);
                match r {
                    // An index full.
                    Err(_) => refused |= bit,
                    // Another worker's entry of the same key won the duplicate race: the
                    // frame, rewritten for this one, must not leave.
                    Ok(c) if !x.conn.is(&c) => lost |= bit,
                    Ok(_) => {}
                }
            });
        staging.items.clear();
        staging.refused |= refused;
        staging.lost |= lost;
    }

    /// After a chunk: the frames whose staged connection could not be committed (an index
    /// full, which the table's capacity bound prevents) or lost a duplicate race with the
    /// same connection opened at the same moment by another worker (the frame followed the
    /// loser; the client's retransmission finds the survivor) are dropped instead of
    /// forwarded, as `table_full` and `no_connection`. Only forwarded frames are taken
    /// back (a held one is already queued); the connection's counts stay, as the kernel's
    /// do for a connection that existed.
    #[cold]
    #[inline(never)]
    fn refuse_uncommitted(&self, verdicts: &mut [Verdict], refused: u32, lost: u32) {
        for (i, v) in verdicts.iter_mut().enumerate().take(32) {
            if (refused | lost) & (1 << i) != 0 && matches!(v, Verdict::Forward { .. }) {
                let f = &self.stats.forwarded_in;
                f.store(f.load(Ordering::Relaxed).saturating_sub(1), Ordering::Relaxed);
                let why = if lost & (1 << i) != 0 {
                    DropReason::NoConnection
                } else {
                    DropReason::TableFull
                };
                *v = self.count(Verdict::Drop(why));
            }
        }
    }

    /// The fast path of a burst for a packet of an established connection: `h` as
    /// [`xlate::parse_fast4`] gave it (IPv4, TCP or UDP, no options, not a fragment), its
    /// destination a VIP. Does exactly what [`inbound`](Self::inbound) and
    /// [`forward_in`](Self::forward_in) do for it, with the addresses kept as `u32` and the
    /// rewrite in one pass ([`forward4`](Self::forward4)). What it does not cover (no
    /// connection yet, a SYN reopening a finished connection, `expire_nodest_conn`) is
    /// handed back (`None`) before any side effect, with what the lookup found in `looked`,
    /// for the general path. `hint` is what the burst's prefetch
    /// learnt about it. The fuzz tests check that a
    /// burst and single frames (the general path) agree.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn established4(
        &self,
        fb: &mut FrameBuf<'_>,
        h: &Fast4,
        hint: &LookupHint,
        looked: &mut Option<ConnRef>,
        ingress: u16,
        now: Time,
    ) -> Option<Verdict> {
        let conns = &self.p.tables.conns;
        // The IPv4 handle, by value (kept in registers, not copied out and read back).
        // No connection yet: handed back with nothing found.
        let c = conns.lookup_in4(&h.key_in4(), hint)?;
        let before = c.state();
        // The packet's flags are looked at only for the rare states that need them.
        let tcp = h.proto == ip_proto::TCP;
        if (matches!(before, ConnState::TimeWait | ConnState::Close)
            && tcp
            && h.tcp_flags & (TcpFlags::SYN.0 | TcpFlags::ACK.0) == TcpFlags::SYN.0)
            || self.p.expire_nodest_conn.load(Ordering::Relaxed)
        {
            *looked = Some(c.conn_ref());
            return None;
        }
        // From here on as `inbound`: state, counters, then the forwarding method.
        let method = c.method();
        let after = conns
            .on_packet4(c, Direction::Input, TcpFlags(h.tcp_flags), now)
            .unwrap_or(before);
        self.account(c.dest_id(), true, h.ip_len());
        let toa = method == ForwardMethod::FullNat
            && tcp
            && before != ConnState::Established
            && after == ConnState::Established
            && self.p.toa.load(Ordering::Relaxed);
        Some(self.forward4(fb, h, c, method, toa, ingress))
    }

    /// [`forward_in`](Self::forward_in) for connection `c` (its method `method`) of a frame
    /// [`xlate::parse_fast4`] read as `h`: NAT, FULLNAT and DR to an IPv4 server (TTL not
    /// expiring, no TOA) in one rewrite pass from the connection's addresses
    /// ([`xlate::forward_fast4`]), TUN through [`tunnel::forward_ipip_fast4`]; anything else,
    /// or a next hop not cached for TUN, through [`forward_conn`](Self::forward_conn).
    #[inline(always)]
    fn forward4(
        &self,
        fb: &mut FrameBuf<'_>,
        h: &Fast4,
        c: Conn4,
        method: ForwardMethod,
        toa: bool,
        ingress: u16,
    ) -> Verdict {
        if !toa && h.ttl > 1 {
            let dest = c.dest();
            let local = match method {
                ForwardMethod::Masq | ForwardMethod::DirectRoute => None,
                // Always there for FULLNAT.
                ForwardMethod::FullNat => c.local(),
                ForwardMethod::Tunnel => {
                    return match self.tunnel_fast4(fb, h, Ipv4Addr::from(dest.0)) {
                        Some(v) => v,
                        None => self.forward_conn(fb, &mut h.info(), &c.conn_ref(), toa, ingress),
                    };
                }
            };
            fb.set_len(h.end());
            let to = if method == ForwardMethod::DirectRoute {
                None
            } else {
                Some(dest)
            };
            if xlate::forward_fast4(fb.frame_mut(), h, local, to) {
                return self.l2_out_v4(fb, Ipv4Addr::from(dest.0));
            }
        }
        self.forward_conn(fb, &mut h.info(), &c.conn_ref(), toa, ingress)
    }

    /// [`forward_in`](Self::forward_in) for connection `c`, with NAT, FULLNAT and DR between
    /// IPv4 ends (TTL not expiring, no TOA) done straight from the connection's IPv4
    /// addresses in one rewrite pass. Used by bursts (what [`forward4`](Self::forward4) does
    /// not take, and new connections); single frames take `forward_in`, and the fuzz tests
    /// check that both agree.
    #[inline(never)]
    fn forward_conn(
        &self,
        fb: &mut FrameBuf<'_>,
        ip: &mut IpInfo,
        c: &ConnRef,
        toa: bool,
        ingress: u16,
    ) -> Verdict {
        let method = c.method();
        let quick = match (method, c.dest_addr()) {
            _ if toa || ip.ttl <= 1 || ip.v6 => None,
            (ForwardMethod::Masq | ForwardMethod::DirectRoute, SocketAddr::V4(d)) => Some((None, d)),
            (ForwardMethod::FullNat, SocketAddr::V4(d)) => match c.local() {
                Some(SocketAddr::V4(l)) => Some((Some((*l.ip(), l.port())), d)),
                _ => None,
            },
            _ => None,
        };
        let Some((local, dest)) = quick else {
            if method == ForwardMethod::Tunnel
                && ip.ttl > 1
                && let SocketAddr::V4(d) = c.dest_addr()
                && let Some(v) = self.tunnel_v4(fb, ip, *d.ip())
            {
                return v;
            }
            if method == ForwardMethod::Tunnel && ip.ttl > 1 {
                // As forward_in does for TUN, without building a Target.
                fb.set_len(ip.end);
                xlate::decrement_ttl(fb.frame_mut(), ip);
                return self.tunnel_out(fb, ip, c.dest_addr().ip(), ingress);
            }
            return self.forward_in(fb, ip, &Target::inbound(c), toa, ingress);
        };
        fb.set_len(ip.end);
        let f = fb.frame_mut();
        let d = (*dest.ip(), dest.port());
        let done = match method {
            ForwardMethod::DirectRoute => xlate::decrement_ttl(f, ip),
            _ => xlate::forward_v4(f, ip, local, Some(d)),
        };
        if !done {
            // Another transport or a short header: the general rewrite, as forward_in does.
            xlate::decrement_ttl(f, ip);
            if let Some((a, p)) = local {
                xlate::rewrite(f, ip, End::Src, IpAddr::V4(a), p);
            }
            if method != ForwardMethod::DirectRoute {
                xlate::rewrite(f, ip, End::Dst, IpAddr::V4(d.0), d.1);
            }
        }
        self.l2_out_v4(fb, d.0)
    }

    /// The fast path of a burst for a reply of a NAT or FULLNAT connection: `h` as
    /// [`xlate::parse_fast4`] gave it, its destination not a VIP. Does exactly what
    /// [`ip_parsed`](Self::ip_parsed) and [`reply`](Self::reply) do for it, with the
    /// addresses kept as `u32` and the rewrite in one pass. `None` (before any side effect)
    /// for what it does not cover: a destination a firewall-mark rule names,
    /// `expire_nodest_conn`, an expiring TTL, DR/TUN entries, IPv6 ends. The fuzz
    /// tests check that a burst and single frames agree.
    #[inline(always)]
    fn reply4(&self, fb: &mut FrameBuf<'_>, h: &Fast4, hint: &LookupHint, now: Time) -> Option<Verdict> {
        // The destination as an address only where it is asked for (rare branches).
        let dst = || IpAddr::V4(Ipv4Addr::from(h.dst));
        let marks = &self.snap.fwmarks;
        if !marks.is_empty()
            && (self.fwmark_of(h.protocol(), dst(), h.dport).is_some()
                || marks.iter().any(|r| r.addr == dst()))
        {
            return None;
        }
        let conns = &self.p.tables.conns;
        let Some(c) = conns.lookup_out4(&h.key_out4(), hint) else {
            // Not a reply of ours: to a LIP it is dropped, anything else is the kernel's.
            return Some(if lip::contains(&self.snap.lips, dst()) {
                Verdict::Drop(DropReason::NoConnection)
            } else {
                Verdict::Pass
            });
        };
        if h.ttl <= 1 || self.p.expire_nodest_conn.load(Ordering::Relaxed) {
            return None;
        }
        let src = c.virt();
        let client = c.client();
        let to_client = match c.method() {
            ForwardMethod::Masq => None,
            ForwardMethod::FullNat => Some(client),
            _ => return None,
        };
        // From here on as `reply`: state, counters, rewrite, next hop.
        conns.on_packet4(c, Direction::Output, TcpFlags(h.tcp_flags), now);
        self.account(c.dest_id(), false, h.ip_len());
        fb.set_len(h.end());
        if !xlate::forward_fast4(fb.frame_mut(), h, Some(src), to_client) {
            // Not reached for what the fast parser accepts; the general rewrite if it were.
            let mut ip = h.info();
            let f = fb.frame_mut();
            xlate::decrement_ttl(f, &mut ip);
            xlate::rewrite(f, &mut ip, End::Src, IpAddr::V4(Ipv4Addr::from(src.0)), src.1);
            if let Some((a, p)) = to_client {
                xlate::rewrite(f, &mut ip, End::Dst, IpAddr::V4(Ipv4Addr::from(a)), p);
            }
        }
        Some(self.l2_out_client4(fb, Ipv4Addr::from(client.0)))
    }

    #[allow(clippy::too_many_arguments)]
    fn inbound(
        &self,
        fb: &mut FrameBuf<'_>,
        ip: &mut IpInfo,
        proto: Protocol,
        fwmark: Option<u32>,
        looked: Option<Option<ConnRef>>,
        set: &ServiceSet,
        ingress: u16,
        now: Time,
    ) -> Verdict {
        if !ip.l4_present {
            return Verdict::Drop(DropReason::Malformed);
        }
        let conns = &self.p.tables.conns;
        let key = ip.key_in(proto);
        let flags = TcpFlags(ip.tcp_flags);
        let is_syn =
            proto == Protocol::Tcp && flags.contains(TcpFlags::SYN) && !flags.contains(TcpFlags::ACK);
        let found = match looked.unwrap_or_else(|| conns.lookup_in(&key)) {
            // A new SYN on a finished connection: the old entry gives way (the kernel's
            // conn_reuse_mode), the client gets a freshly scheduled connection.
            Some(c) if is_syn && matches!(c.state(), ConnState::TimeWait | ConnState::Close) => {
                conns.remove(&c, now);
                None
            }
            // Its destination left the rules and expire_nodest_conn is on.
            Some(c)
                if self.p.expire_nodest_conn.load(Ordering::Relaxed)
                    && set.dest_by_id(c.dest_id()).is_none() =>
            {
                conns.remove(&c, now);
                return Verdict::Drop(DropReason::NoDestination);
            }
            other => other,
        };
        let conn = match found {
            Some(c) => c,
            None => match self.new_conn(fb, ip, key, fwmark, set, ingress, now) {
                Ok(Scheduled::Conn(c)) => c,
                Ok(Scheduled::OnePacket {
                    method,
                    dest,
                    dest_id,
                }) => {
                    let t = Target {
                        method,
                        client: SocketAddr::new(ip.src, ip.sport),
                        virt: SocketAddr::new(ip.dst, ip.dport),
                        dest,
                        local: None,
                    };
                    self.account(dest_id, true, ip.ip_len());
                    let v = self.forward_in(fb, ip, &t, false, ingress);
                    if matches!(v, Verdict::Forward { .. }) {
                        bump(&self.stats.forwarded_in);
                    }
                    return v;
                }
                Err(v) => return v,
            },
        };
        let before = conn.state();
        let after = conns
            .on_packet(&conn, Direction::Input, flags, now)
            .unwrap_or(before);
        self.account(conn.dest_id(), true, ip.ip_len());
        let toa = proto == Protocol::Tcp
            && conn.method() == ForwardMethod::FullNat
            && before != ConnState::Established
            && after == ConnState::Established
            && self.p.toa.load(Ordering::Relaxed);
        // `looked` is only given by bursts.
        let v = if looked.is_some() {
            self.forward_conn(fb, ip, &conn, toa, ingress)
        } else {
            self.forward_in(fb, ip, &Target::inbound(&conn), toa, ingress)
        };
        if matches!(v, Verdict::Forward { .. }) {
            bump(&self.stats.forwarded_in);
        }
        v
    }

    /// Scheduling of a connection's first packet: service lookup, persistence template or
    /// scheduler, FULLNAT local port, connection entry.
    #[allow(clippy::too_many_arguments)]
    fn new_conn(
        &self,
        fb: &mut FrameBuf<'_>,
        ip: &mut IpInfo,
        key: ConnKeyIn,
        fwmark: Option<u32>,
        set: &ServiceSet,
        ingress: u16,
        now: Time,
    ) -> Result<Scheduled, Verdict> {
        let svc = match fwmark {
            Some(mark) => set.lookup_fwmark(mark, AddrFamily::of(&ip.dst)),
            None => self.service_of(set, key.proto, ip.dst, ip.dport),
        };
        let Some(svc) = svc else {
            return Err(Verdict::Drop(DropReason::NoService));
        };
        let flags = TcpFlags(ip.tcp_flags);
        if key.proto == Protocol::Tcp && (!flags.contains(TcpFlags::SYN) || flags.contains(TcpFlags::RST)) {
            // Only a SYN opens a TCP connection; a stray segment gets no scheduling.
            return Err(Verdict::Drop(DropReason::NoConnection));
        }
        let flow = FlowKey {
            proto: key.proto,
            src: ip.src,
            src_port: ip.sport,
            dst: ip.dst,
            dst_port: ip.dport,
        };
        let conns = &self.p.tables.conns;
        let mut template = None;
        let dest: &Destination = match svc.config.persistence {
            None => match svc.schedule(&flow, now) {
                Some(d) => d,
                None => return Err(self.no_destination(fb, ip, ingress)),
            },
            Some(pers) => {
                let tkey = match svc.config.key {
                    ServiceKey::Fwmark { mark, .. } => TemplateKey::fwmark(mark, ip.src, pers.netmask),
                    ServiceKey::Addr { port, .. } => {
                        TemplateKey::service(key.proto, ip.src, pers.netmask, ip.dst, port)
                    }
                };
                let existing = conns.lookup_template(&tkey).and_then(|t| {
                    let current = svc.dest(t.dest_addr().ip(), t.dest_addr().port());
                    conns.check_template(&t, current, now).then_some((t, current?))
                });
                match existing {
                    Some((t, d)) => {
                        template = Some(t);
                        d
                    }
                    None => {
                        let Some(d) = svc.schedule(&flow, now) else {
                            return Err(self.no_destination(fb, ip, ingress));
                        };
                        let daddr = SocketAddr::new(d.config.addr, d.config.port);
                        let timeout = Duration::from_secs(pers.timeout_secs as u64);
                        match conns.insert_template(&tkey, daddr, &d.state, timeout, now) {
                            Ok(t) => template = Some(t),
                            Err(_) => return Err(Verdict::Drop(DropReason::TableFull)),
                        }
                        d
                    }
                }
            }
        };
        let dport = self.count_new_conn(svc, dest, ip.dport);
        let dest_addr = SocketAddr::new(dest.config.addr, dport);
        // One-packet scheduling: no entry. FULLNAT needs an entry to bring replies back to
        // the client, so it keeps one even with --ops.
        if svc.config.one_packet && key.proto == Protocol::Udp && dest.config.method != ForwardMethod::FullNat
        {
            return Ok(Scheduled::OnePacket {
                method: dest.config.method,
                dest: dest_addr,
                dest_id: dest.state.id(),
            });
        }
        let local = if dest.config.method == ForwardMethod::FullNat {
            match self.p.tables.lips.allocate(dest.config.addr) {
                Some((a, p)) => Some(SocketAddr::new(a, p)),
                None => return Err(Verdict::Drop(DropReason::NoLocalPort)),
            }
        } else {
            None
        };
        let nc = NewConn {
            key,
            method: dest.config.method,
            dest_addr,
            local,
            dest: &dest.state,
            template,
        };
        match conns.insert(nc, now) {
            Ok(c) => Ok(Scheduled::Conn(c)),
            Err(_) => {
                if let Some(l) = local {
                    self.p.tables.lips.release(l.ip(), l.port());
                }
                Err(Verdict::Drop(DropReason::TableFull))
            }
        }
    }
}

impl Worker {
    /// [`ServiceSet::is_vip`] of the worker's service snapshot.
    #[inline]
    fn is_vip(&self, addr: IpAddr) -> bool {
        match addr {
            IpAddr::V4(a) => self.is_vip4(u32::from(a)),
            _ => self.snap.set.is_vip(addr),
        }
    }

    /// [`is_vip`](Self::is_vip) of an IPv4 address.
    #[inline(always)]
    fn is_vip4(&self, a: u32) -> bool {
        if let Some(t) = &self.vips4 {
            return t.contains(a);
        }
        match &self.vips_v4 {
            Some(few) => few.iter().fold(false, |hit, &v| hit | (v == a)),
            None => self.snap.set.is_vip(IpAddr::V4(Ipv4Addr::from(a))),
        }
    }

    /// [`ServiceSet::lookup`] of the worker's service snapshot `set`, through a small cache
    /// of answers (cleared when the snapshot changes) in front of the hash lookups.
    #[inline(always)]
    fn service_of<'s>(
        &self,
        set: &'s ServiceSet,
        proto: Protocol,
        addr: IpAddr,
        port: u16,
    ) -> Option<&'s Arc<VirtualService>> {
        let h = match addr {
            IpAddr::V4(a) => u32::from(a) as u64,
            IpAddr::V6(a) => {
                let v = u128::from(a);
                v as u64 ^ (v >> 64) as u64
            }
        } ^ (port as u64) << 32
            ^ (proto as u64) << 48;
        let slot = &self.svc_cache[(h.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 58) as usize % SVC_CACHE];
        if let Some((p, a, pt, si)) = slot.get()
            && p == proto
            && pt == port
            && a == addr
        {
            return set.services().get(si as usize);
        }
        let svc = set.lookup(proto, addr, port)?;
        if let Some(si) = set.services().iter().position(|s| Arc::ptr_eq(s, svc)) {
            slot.set(Some((proto, addr, port, si as u32)));
        }
        Some(svc)
    }

    /// [`ServiceSet::dest_by_id`] of the worker's service snapshot `set`, through a small
    /// cache of positions (cleared when the snapshot changes) in front of the hash lookup.
    #[inline(always)]
    fn dest_by_id<'s>(&self, set: &'s ServiceSet, id: u32) -> Option<(&'s VirtualService, &'s Destination)> {
        if let Some((k, si, di)) = self.dest_cache[id as usize % DEST_CACHE].get()
            && k == id
            && let Some(svc) = set.services().get(si as usize)
            && let Some(d) = svc.dests.get(di as usize)
        {
            return Some((&**svc, d));
        }
        self.dest_by_id_miss(set, id)
    }

    /// [`dest_by_id`](Self::dest_by_id) not in the cache: the hash lookup, then the cache.
    #[cold]
    #[inline(never)]
    fn dest_by_id_miss<'s>(
        &self,
        set: &'s ServiceSet,
        id: u32,
    ) -> Option<(&'s VirtualService, &'s Destination)> {
        let slot = &self.dest_cache[id as usize % DEST_CACHE];
        let (svc, d) = set.dest_by_id(id)?;
        let si = set.services().iter().position(|s| std::ptr::eq(&**s, svc));
        let di = svc.dests.iter().position(|x| std::ptr::eq(x, d));
        if let (Some(si), Some(di)) = (si, di) {
            slot.set(Some((id, si as u32, di as u32)));
        }
        Some((svc, d))
    }

    /// Counts one packet of `bytes` for destination `dest_id` and its service. The count goes
    /// to the worker's tally and reaches the shared counters at [`flush_tally`](Self::flush_tally)
    /// (end of the burst or frame, against the same service snapshot): one add per
    /// destination per burst instead of four counter writes per packet.
    #[inline]
    fn account(&self, dest_id: u32, inbound: bool, bytes: usize) {
        let s = dest_id as usize % TALLY;
        let used = self.tally_used.get();
        if used & (1 << s) == 0 {
            // The destination's first packet of the burst.
            self.tally_used.set(used | 1 << s);
            self.tally_id[s].set(dest_id);
        } else if self.tally_id[s].get() != dest_id {
            self.tally_take(s, dest_id);
        }
        let c = if inbound {
            &self.tally_in[s]
        } else {
            &self.tally_out[s]
        };
        c.set(c.get() + TALLY_PKT + bytes as u64);
    }

    /// Makes tally slot `s`, in use for another destination, count for `dest_id`.
    #[cold]
    fn tally_take(&self, s: usize, dest_id: u32) {
        self.flush_slot(s);
        self.tally_id[s].set(dest_id);
    }

    /// Adds the tally's counts to the counters of their destinations and services in the
    /// worker's service snapshot, and empties it. Called before the snapshot can change.
    /// The slots of one service follow one another in the common case (destination ids are
    /// given out in order): their service's counters get one add for all of them.
    #[inline]
    fn flush_tally(&self) {
        let mut used = self.tally_used.replace(0);
        if used == 0 {
            return;
        }
        let set = &*self.snap.set;
        let mask = TALLY_PKT - 1;
        // The service of the slots just flushed and their summed counts (packed as the
        // tally's words: at most a chunk's packets in all, far below either limit).
        let mut pending: Option<(&VirtualService, u64, u64)> = None;
        let add = |svc: &VirtualService, i: u64, o: u64| {
            if i != 0 {
                svc.stats.add_in(&self.writer, i / TALLY_PKT, i & mask);
            }
            if o != 0 {
                svc.stats.add_out(&self.writer, o / TALLY_PKT, o & mask);
            }
        };
        while used != 0 {
            let s = used.trailing_zeros() as usize % TALLY;
            used &= used - 1;
            let (i, o) = (self.tally_in[s].replace(0), self.tally_out[s].replace(0));
            let Some((svc, d)) = self.dest_by_id(set, self.tally_id[s].get()) else {
                continue;
            };
            if i != 0 {
                d.state.stats.add_in(&self.writer, i / TALLY_PKT, i & mask);
            }
            if o != 0 {
                d.state.stats.add_out(&self.writer, o / TALLY_PKT, o & mask);
            }
            pending = match pending {
                Some((p, pi, po)) if std::ptr::eq(p, svc) => Some((p, pi + i, po + o)),
                other => {
                    if let Some((p, pi, po)) = other {
                        add(p, pi, po);
                    }
                    Some((svc, i, o))
                }
            };
        }
        if let Some((p, pi, po)) = pending {
            add(p, pi, po);
        }
    }

    /// Adds tally slot `s`'s counts to the shared counters and zeroes them (see
    /// [`flush_tally`](Self::flush_tally)).
    fn flush_slot(&self, s: usize) {
        let (i, o) = (self.tally_in[s].replace(0), self.tally_out[s].replace(0));
        let mask = TALLY_PKT - 1;
        if let Some((svc, d)) = self.dest_by_id(&self.snap.set, self.tally_id[s].get()) {
            if i != 0 {
                d.state.stats.add_in(&self.writer, i / TALLY_PKT, i & mask);
                svc.stats.add_in(&self.writer, i / TALLY_PKT, i & mask);
            }
            if o != 0 {
                d.state.stats.add_out(&self.writer, o / TALLY_PKT, o & mask);
                svc.stats.add_out(&self.writer, o / TALLY_PKT, o & mask);
            }
        }
    }

    /// No eligible destination: the kernel answers UDP with port unreachable (ip_vs_leave)
    /// and drops; we do the same and count the drop either way.
    fn no_destination(&self, fb: &mut FrameBuf<'_>, ip: &IpInfo, ingress: u16) -> Verdict {
        if ip.proto == ip_proto::UDP
            && icmp::make_error(fb, ip, ErrorKind::PortUnreachable, ip.dst, self.our_mac(ingress))
        {
            self.drops.count(DropReason::NoDestination);
            return Verdict::Reply;
        }
        Verdict::Drop(DropReason::NoDestination)
    }

    /// Decrements the TTL, or turns the frame into "time exceeded" for its sender.
    fn ttl_or_error(&self, fb: &mut FrameBuf<'_>, ip: &mut IpInfo, ingress: u16) -> Option<Verdict> {
        if xlate::decrement_ttl(fb.frame_mut(), ip) {
            return None;
        }
        let src = if self.owns(ip.dst) {
            Some(ip.dst)
        } else {
            self.our_addr(ingress, ip.v6)
        };
        if let Some(src) = src
            && icmp::make_error(fb, ip, ErrorKind::TimeExceeded, src, self.our_mac(ingress))
        {
            self.drops.count(DropReason::TtlExceeded);
            return Some(Verdict::Reply);
        }
        Some(Verdict::Drop(DropReason::TtlExceeded))
    }

    /// The next hop `hop` (out of `iface`) of the rewritten frame has no MAC yet: keeps a
    /// copy (with our source MAC) in the hold queue, or drops the frame when there is no room.
    #[cold]
    fn hold(&self, fb: &mut FrameBuf<'_>, iface: u16, hop: IpAddr) -> Verdict {
        let src = self.our_mac(iface);
        if let Some(e) = fb.frame_mut().get_mut(6..12) {
            e.copy_from_slice(&src);
        }
        if self
            .hold
            .borrow_mut()
            .hold(fb.frame(), iface, hop, self.now.get())
        {
            Verdict::Held
        } else {
            Verdict::Drop(DropReason::NoNeighbour)
        }
    }

    /// Frames in the hold queue.
    pub fn held_len(&self) -> usize {
        self.hold.borrow().len()
    }

    /// Sends, through `send(egress, frame)`, the held frames whose next hop the neighbour
    /// table now resolves (counted as `released`) and drops those held longer than
    /// [`HOLD_TIMEOUT`](crate::hold::HOLD_TIMEOUT) at `now` (counted as `no_neighbour`).
    /// Called by the worker loop every iteration: one length check when nothing is held.
    #[inline]
    pub fn release_held(&mut self, now: Time, send: &mut dyn FnMut(u16, &[u8])) -> Released {
        let q = self.hold.get_mut();
        if q.is_empty() {
            return Released::default();
        }
        let neigh = &self.p.tables.neigh;
        let r = q.release(now, &mut |ip| neigh.lookup(ip), send);
        for _ in 0..r.sent {
            bump(&self.stats.released);
        }
        for _ in 0..r.expired {
            self.drops.count(DropReason::NoNeighbour);
        }
        r
    }

    /// [`l2_out`](Self::l2_out) for an IPv4 destination: one compare and a 12-byte copy when
    /// `to` is an on-link destination seen before; else, when its route goes through a
    /// gateway whose next hop is cached, the route scan, one compare and the copy.
    #[inline(always)]
    fn l2_out_v4(&self, fb: &mut FrameBuf<'_>, to: Ipv4Addr) -> Verdict {
        let a = u32::from(to);
        let (k, iface, macs) = self.hop4[hop4_slot(a)].get();
        if k == a
            && iface != NO_HOP
            && let Some(e) = fb.frame_mut().get_mut(..12)
        {
            e.copy_from_slice(&macs);
            return Verdict::Forward { egress: iface };
        }
        self.l2_out_gw4(fb, to)
    }

    /// [`l2_out_v4`](Self::l2_out_v4) with the two caches asked in the other order, for
    /// clients (most behind a gateway): the route and the gateway's cached next hop first,
    /// then the on-link cache, else `l2_out`. The same answer: for one route snapshot an
    /// address whose route goes through a gateway other than itself is never in the on-link
    /// cache, and one that is finds no gateway.
    #[inline(always)]
    fn l2_out_client4(&self, fb: &mut FrameBuf<'_>, to: Ipv4Addr) -> Verdict {
        match self.via_cached_gateway4(fb, u32::from(to)) {
            Some(Some(v)) => v,
            Some(None) => self.l2_out(fb, IpAddr::V4(to)),
            None => self.l2_out_v4(fb, to),
        }
    }

    /// For an address routed through a gateway other than itself: `Some(Some(verdict))`
    /// with the frame's MACs written when the gateway's next hop is cached for the route's
    /// interface, `Some(None)` when it is not. `None` for an address on a link (or without
    /// a route).
    #[inline(always)]
    fn via_cached_gateway4(&self, fb: &mut FrameBuf<'_>, a: u32) -> Option<Option<Verdict>> {
        let (iface, g) = self.routes_v4.lookup_u32(a)?;
        if g == a {
            return None;
        }
        let (k, i, macs) = self.gw4[hop4_slot(g) % GW_CACHE].get();
        if k == g
            && i == iface
            && let Some(e) = fb.frame_mut().get_mut(..12)
        {
            e.copy_from_slice(&macs);
            return Some(Some(Verdict::Forward { egress: iface }));
        }
        Some(None)
    }

    /// The rest of [`l2_out_v4`](Self::l2_out_v4): through a cached gateway, else `l2_out`.
    #[inline(never)]
    fn l2_out_gw4(&self, fb: &mut FrameBuf<'_>, to: Ipv4Addr) -> Verdict {
        if let Some(Some(v)) = self.via_cached_gateway4(fb, u32::from(to)) {
            return v;
        }
        self.l2_out(fb, IpAddr::V4(to))
    }

    /// Sets the Ethernet addresses for the next hop towards `to`.
    #[inline(never)]
    fn l2_out(&self, fb: &mut FrameBuf<'_>, to: IpAddr) -> Verdict {
        let slot = &self.hop_cache[neigh_slot(to)];
        let h = match slot.get() {
            Some(h) if h.to == to => h,
            _ => {
                let Some(hop) = self.route(to) else {
                    return Verdict::Drop(DropReason::NoNeighbour);
                };
                let Some(mac) = self.neigh_lookup(hop.addr) else {
                    self.p.tables.neigh.request(hop.addr);
                    return self.hold(fb, hop.iface, hop.addr);
                };
                let h = HopEntry {
                    to,
                    iface: hop.iface,
                    dst: mac,
                    src: self.our_mac(hop.iface),
                };
                // Only on-link destinations (real servers): the many clients behind a
                // gateway would evict them, and their gateway's MAC is cached anyway.
                if let (IpAddr::V4(_), IpAddr::V4(g)) = (to, hop.addr)
                    && hop.addr != to
                {
                    let mut macs = [0; 12];
                    macs[..6].copy_from_slice(&h.dst);
                    macs[6..].copy_from_slice(&h.src);
                    let g = u32::from(g);
                    self.gw4[hop4_slot(g) % GW_CACHE].set((g, h.iface, macs));
                }
                if hop.addr == to {
                    slot.set(Some(h));
                    if let IpAddr::V4(a) = to {
                        let mut macs = [0; 12];
                        macs[..6].copy_from_slice(&h.dst);
                        macs[6..].copy_from_slice(&h.src);
                        let a = u32::from(a);
                        self.hop4[hop4_slot(a)].set((a, h.iface, macs));
                    }
                }
                h
            }
        };
        if let Some(e) = fb.frame_mut().get_mut(..12) {
            e[..6].copy_from_slice(&h.dst);
            e[6..].copy_from_slice(&h.src);
        }
        Verdict::Forward { egress: h.iface }
    }

    /// Client → real server, by forwarding method.
    fn forward_in(
        &self,
        fb: &mut FrameBuf<'_>,
        ip: &mut IpInfo,
        t: &Target,
        toa: bool,
        ingress: u16,
    ) -> Verdict {
        if ip.ttl <= 1 {
            return self
                .ttl_or_error(fb, ip, ingress)
                .unwrap_or(Verdict::Drop(DropReason::TtlExceeded));
        }
        // Drop Ethernet padding: the frame ends with the IP packet.
        fb.set_len(ip.end);
        match t.method {
            ForwardMethod::Masq => {
                // IPv4 TCP/UDP: TTL and destination in one checksum pass.
                let done = match t.dest {
                    SocketAddr::V4(d) => {
                        xlate::forward_v4(fb.frame_mut(), ip, None, Some((*d.ip(), d.port())))
                    }
                    SocketAddr::V6(_) => false,
                };
                if !done {
                    xlate::decrement_ttl(fb.frame_mut(), ip);
                    xlate::rewrite(fb.frame_mut(), ip, End::Dst, t.dest.ip(), t.dest.port());
                }
            }
            ForwardMethod::FullNat => {
                let Some(local) = t.local else {
                    xlate::decrement_ttl(fb.frame_mut(), ip);
                    return Verdict::Drop(DropReason::NoLocalPort);
                };
                if local.is_ipv6() != ip.v6 || t.dest.is_ipv6() != ip.v6 {
                    xlate::decrement_ttl(fb.frame_mut(), ip);
                    return Verdict::Drop(DropReason::Unsupported);
                }
                let done = match (local, t.dest) {
                    (SocketAddr::V4(l), SocketAddr::V4(d)) => xlate::forward_v4(
                        fb.frame_mut(),
                        ip,
                        Some((*l.ip(), l.port())),
                        Some((*d.ip(), d.port())),
                    ),
                    _ => false,
                };
                if !done {
                    xlate::decrement_ttl(fb.frame_mut(), ip);
                    xlate::rewrite(fb.frame_mut(), ip, End::Src, local.ip(), local.port());
                    xlate::rewrite(fb.frame_mut(), ip, End::Dst, t.dest.ip(), t.dest.port());
                }
                if toa {
                    // Best effort: a segment with no option space or no MTU room goes without.
                    let mtu = self.egress_mtu(t.dest.ip());
                    let _ = insert_toa(fb, ip, t.client, mtu);
                }
            }
            ForwardMethod::DirectRoute => {
                xlate::decrement_ttl(fb.frame_mut(), ip);
            }
            ForwardMethod::Tunnel => {
                xlate::decrement_ttl(fb.frame_mut(), ip);
                return self.tunnel_out(fb, ip, t.dest.ip(), ingress);
            }
        }
        self.l2_out(fb, t.dest.ip())
    }

    /// TUN, after the TTL: encapsulates towards real server `dest` (or answers "too big")
    /// and sets the Ethernet addresses.
    fn tunnel_out(&self, fb: &mut FrameBuf<'_>, ip: &mut IpInfo, dest: IpAddr, ingress: u16) -> Verdict {
        let Some(hop) = self.route(dest) else {
            return Verdict::Drop(DropReason::NoNeighbour);
        };
        let mtu = self
            .p
            .interfaces
            .get(hop.iface as usize)
            .map(|i| i.mtu)
            .unwrap_or(1500);
        let inner_mtu = tunnel::inner_mtu(mtu, ip.v6);
        if ip.ip_len() > inner_mtu as usize {
            // With DF (always for IPv6) the sender learns the smaller MTU, as from the
            // kernel; without DF the kernel would fragment the outer packet, which lvs
            // does not do: counted as TooBig.
            let df = ip.v6 || ipv4::Packet::new_unchecked(&fb.frame()[ip.l3..ip.end]).dont_frag();
            if df
                && icmp::make_error(
                    fb,
                    ip,
                    ErrorKind::TooBig(inner_mtu),
                    ip.dst,
                    self.our_mac(ingress),
                )
            {
                self.drops.count(DropReason::TooBig);
                return Verdict::Reply;
            }
            return Verdict::Drop(DropReason::TooBig);
        }
        let Some(dip) = self.our_addr(hop.iface, ip.v6) else {
            return Verdict::Drop(DropReason::Unsupported);
        };
        let ident = self.ident.get().wrapping_add(1);
        self.ident.set(ident);
        if !tunnel::encapsulate(fb, ip, dip, dest, ident) {
            return Verdict::Drop(DropReason::TooBig);
        }
        match dest {
            IpAddr::V4(a) => self.l2_out_v4(fb, a),
            IpAddr::V6(_) => self.l2_out(fb, dest),
        }
    }

    /// TTL decrement, [`tunnel_out`](Self::tunnel_out) and the next hop in one pass for a
    /// common IPv4 frame to a real server whose next hop is cached ([`tunnel::forward_ipip_v4`]):
    /// the same bytes, verdict and IP ID. `None` (nothing changed) where it does not apply.
    #[inline(never)]
    fn tunnel_v4(&self, fb: &mut FrameBuf<'_>, ip: &mut IpInfo, dest: Ipv4Addr) -> Option<Verdict> {
        let a = u32::from(dest);
        let (k, iface, macs) = self.hop4[hop4_slot(a)].get();
        if k != a || iface == NO_HOP {
            return None;
        }
        let i = self.p.interfaces.get(iface as usize)?;
        let dip = i.ipv4?;
        if ip.ip_len() > tunnel::inner_mtu(i.mtu, false) as usize {
            return None;
        }
        let ident = self.ident.get().wrapping_add(1);
        if !tunnel::forward_ipip_v4(fb, ip, dip, dest, ident, &macs) {
            return None;
        }
        self.ident.set(ident);
        Some(Verdict::Forward { egress: iface })
    }

    /// [`tunnel_v4`](Self::tunnel_v4) for a frame [`xlate::parse_fast4`] read as `h`
    /// (through [`tunnel::forward_ipip_fast4`]): the same bytes, verdict and IP ID. Inline
    /// in each caller (the burst's established path keeps it in registers). Its next-hop
    /// checks repeat `tunnel_v4`'s on purpose: a helper shared by both, returning the hop,
    /// cost tun/established 5 instructions per packet (callgrind, measured twice).
    #[inline(always)]
    fn tunnel_fast4(&self, fb: &mut FrameBuf<'_>, h: &Fast4, dest: Ipv4Addr) -> Option<Verdict> {
        let a = u32::from(dest);
        let (k, iface, macs) = self.hop4[hop4_slot(a)].get();
        if k != a || iface == NO_HOP {
            return None;
        }
        let i = self.p.interfaces.get(iface as usize)?;
        let dip = i.ipv4?;
        if h.ip_len() > tunnel::inner_mtu(i.mtu, false) as usize {
            return None;
        }
        let ident = self.ident.get().wrapping_add(1);
        if !tunnel::forward_ipip_fast4(fb, h.end(), h.ttl, dip, dest, ident, &macs) {
            return None;
        }
        self.ident.set(ident);
        Some(Verdict::Forward { egress: iface })
    }

    fn egress_mtu(&self, to: IpAddr) -> u16 {
        self.route(to)
            .and_then(|h| self.p.interfaces.get(h.iface as usize))
            .map(|i| i.mtu)
            .unwrap_or(1500)
    }

    /// Real server → client for NAT and FULLNAT connections. `None` when the packet is not
    /// a reply of a known connection.
    fn reply(
        &self,
        fb: &mut FrameBuf<'_>,
        ip: &mut IpInfo,
        proto: Protocol,
        set: &ServiceSet,
        now: Time,
    ) -> Option<Verdict> {
        let key = ip.key_out(proto);
        let conns = &self.p.tables.conns;
        let c = conns.lookup_out(&key)?;
        if self.p.expire_nodest_conn.load(Ordering::Relaxed) && set.dest_by_id(c.dest_id()).is_none() {
            conns.remove(&c, now);
            return Some(Verdict::Drop(DropReason::NoDestination));
        }
        conns.on_packet(&c, Direction::Output, TcpFlags(ip.tcp_flags), now);
        self.account(c.dest_id(), false, ip.ip_len());
        let t = Target::outbound(&c);
        if ip.ttl <= 1 {
            // The reply's sender is the real server; tell it, from our DIP.
            let ingress = self.route(ip.src).map(|h| h.iface).unwrap_or(0);
            return Some(
                self.ttl_or_error(fb, ip, ingress)
                    .unwrap_or(Verdict::Drop(DropReason::TtlExceeded)),
            );
        }
        fb.set_len(ip.end);
        let v4 = |a: SocketAddr| match a {
            SocketAddr::V4(a) => Some((*a.ip(), a.port())),
            SocketAddr::V6(_) => None,
        };
        match t.method {
            ForwardMethod::Masq => {
                let done = v4(t.virt).is_some_and(|v| xlate::forward_v4(fb.frame_mut(), ip, Some(v), None));
                if !done {
                    xlate::decrement_ttl(fb.frame_mut(), ip);
                    xlate::rewrite(fb.frame_mut(), ip, End::Src, t.virt.ip(), t.virt.port());
                }
            }
            ForwardMethod::FullNat => {
                let done = match (v4(t.virt), v4(t.client)) {
                    (Some(v), Some(c)) => xlate::forward_v4(fb.frame_mut(), ip, Some(v), Some(c)),
                    _ => false,
                };
                if !done {
                    xlate::decrement_ttl(fb.frame_mut(), ip);
                    xlate::rewrite(fb.frame_mut(), ip, End::Src, t.virt.ip(), t.virt.port());
                    xlate::rewrite(fb.frame_mut(), ip, End::Dst, t.client.ip(), t.client.port());
                }
            }
            // DR/TUN replies never come back through the director.
            ForwardMethod::DirectRoute | ForwardMethod::Tunnel => {
                xlate::decrement_ttl(fb.frame_mut(), ip);
                return Some(Verdict::Pass);
            }
        }
        let v = self.l2_out(fb, t.client.ip());
        if matches!(v, Verdict::Forward { .. }) {
            bump(&self.stats.forwarded_out);
        }
        Some(v)
    }

    fn icmp(
        &self,
        fb: &mut FrameBuf<'_>,
        ip: &mut IpInfo,
        set: &ServiceSet,
        ingress: u16,
        now: Time,
    ) -> Verdict {
        if !ip.l4_present {
            return if self.owns(ip.dst) {
                Verdict::Drop(DropReason::Fragment)
            } else {
                Verdict::Pass
            };
        }
        let t = fb.frame()[ip.l4];
        if ip.v6 && (t == icmpv6::msg_type::NEIGHBOR_SOLICIT || t == icmpv6::msg_type::NEIGHBOR_ADVERT) {
            return self.ndp(fb, ip, ingress);
        }
        if let Some(q) = icmp::parse_error(fb.frame(), ip) {
            return self.icmp_error(fb, ip, q, set, now);
        }
        let echo = if ip.v6 {
            icmpv6::msg_type::ECHO_REQUEST
        } else {
            icmpv4::msg_type::ECHO_REQUEST
        };
        if t == echo && set.is_vip(ip.dst) {
            return echo_reply(fb, ip);
        }
        if self.owns(ip.dst) {
            Verdict::Drop(DropReason::Unsupported)
        } else {
            Verdict::Pass
        }
    }

    fn ndp(&self, fb: &mut FrameBuf<'_>, ip: &IpInfo, ingress: u16) -> Verdict {
        let (target, lladdr, is_ns) = {
            let Ok(p) = icmpv6::Packet::new_checked(&fb.frame()[ip.l4..ip.end]) else {
                return Verdict::Drop(DropReason::Malformed);
            };
            (
                p.target_addr(),
                p.link_layer_addr(),
                p.msg_type() == icmpv6::msg_type::NEIGHBOR_SOLICIT,
            )
        };
        let Some(target) = target else {
            return Verdict::Drop(DropReason::Malformed);
        };
        if let Some(mac) = lladdr
            && !ip.src.is_unspecified()
        {
            // A solicitation for one of our addresses, or an advertisement sent to us.
            let (who, for_us) = if is_ns {
                (ip.src, self.addressed_to_us(IpAddr::V6(target)))
            } else {
                (IpAddr::V6(target), self.addressed_to_us(ip.dst))
            };
            self.learn(who, mac, for_us);
        }
        if !is_ns || ip.ttl != 255 || !self.owns(IpAddr::V6(target)) {
            return Verdict::Pass;
        }
        let IpAddr::V6(src) = ip.src else {
            return Verdict::Pass;
        };
        let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
        let (dst, flags) = if src.is_unspecified() {
            (all_nodes, icmpv6::NA_OVERRIDE)
        } else {
            (src, icmpv6::NA_SOLICITED | icmpv6::NA_OVERRIDE)
        };
        let mac = self.our_mac(ingress);
        let l3 = ip.l3;
        let na_len = 32;
        if !fb.set_len(l3 + 40 + na_len) {
            return Verdict::Drop(DropReason::Malformed);
        }
        let f = fb.frame_mut();
        {
            let mut e = ethernet::Frame::new_unchecked(&mut f[..]);
            e.swap_addrs();
            e.set_src_addr(mac);
            if src.is_unspecified() {
                e.set_dst_addr([0x33, 0x33, 0, 0, 0, 1]);
            }
        }
        {
            let mut o = ipv6::Packet::new_unchecked(&mut f[l3..l3 + 40]);
            o.set_version_tc_flow(0, 0);
            o.set_payload_len(na_len as u16);
            o.set_next_header(ip_proto::ICMPV6);
            o.set_hop_limit(255);
            o.set_src_addr(&target);
            o.set_dst_addr(&dst);
        }
        if icmpv6::emit_neighbor_advert(&mut f[l3 + 40..], &target, mac, flags, &target, &dst).is_err() {
            return Verdict::Drop(DropReason::Malformed);
        }
        Verdict::Reply
    }

    /// An ICMP error quoting one of our connections: translated like the kernel's
    /// ip_vs_in_icmp / ip_vs_out_icmp and sent to the other side.
    fn icmp_error(
        &self,
        fb: &mut FrameBuf<'_>,
        ip: &mut IpInfo,
        mut q: icmp::Quoted,
        set: &ServiceSet,
        now: Time,
    ) -> Verdict {
        let Some(proto) = Protocol::from_number(q.proto) else {
            return Verdict::Pass;
        };
        let conns = &self.p.tables.conns;
        let _ = now;
        // (a) About a packet we (or a DR/TUN real server) sent to the client: quoted
        //     VIP:vport → CIP:cport. Forward to the real server.
        if set.is_vip(q.src.0) || self.fwmark_of(proto, q.src.0, q.src.1).is_some() {
            let key = ConnKeyIn {
                proto,
                caddr: q.dst.0,
                cport: q.dst.1,
                vaddr: q.src.0,
                vport: q.src.1,
            };
            let Some(c) = conns.lookup_in(&key) else {
                return Verdict::Drop(DropReason::NoConnection);
            };
            let t = Target::from(&c);
            fb.set_len(ip.end);
            let f = fb.frame_mut();
            match t.method {
                ForwardMethod::Masq => {
                    xlate::rewrite(f, ip, End::Dst, t.dest.ip(), 0);
                    icmp::rewrite_quoted(f, &mut q, End::Src, t.dest.ip(), t.dest.port());
                }
                ForwardMethod::FullNat => {
                    let Some(l) = t.local else {
                        return Verdict::Drop(DropReason::NoLocalPort);
                    };
                    xlate::rewrite(f, ip, End::Src, l.ip(), 0);
                    xlate::rewrite(f, ip, End::Dst, t.dest.ip(), 0);
                    icmp::rewrite_quoted(f, &mut q, End::Src, t.dest.ip(), t.dest.port());
                    icmp::rewrite_quoted(f, &mut q, End::Dst, l.ip(), l.port());
                }
                ForwardMethod::DirectRoute | ForwardMethod::Tunnel => {}
            }
            icmp::finish_translation(fb.frame_mut(), ip);
            bump(&self.stats.icmp_translated);
            let ingress = self.route(ip.src).map(|h| h.iface).unwrap_or(0);
            return self.forward_in(
                fb,
                ip,
                &Target {
                    method: t.method,
                    ..t
                },
                false,
                ingress,
            );
        }
        // (b) FULLNAT, about a packet we sent to the real server: quoted LIP:lport →
        //     RIP:rport, outer destination our LIP. (c) NAT: quoted CIP:cport → RIP:rport.
        let key = ConnKeyOut {
            proto,
            daddr: q.dst.0,
            dport: q.dst.1,
            addr: q.src.0,
            port: q.src.1,
        };
        let Some(c) = conns.lookup_out(&key) else {
            return if lip::contains(&self.snap.lips, ip.dst) {
                Verdict::Drop(DropReason::NoConnection)
            } else {
                Verdict::Pass
            };
        };
        let t = Target::from(&c);
        fb.set_len(ip.end);
        let f = fb.frame_mut();
        match t.method {
            ForwardMethod::Masq => {
                xlate::rewrite(f, ip, End::Src, t.virt.ip(), 0);
                icmp::rewrite_quoted(f, &mut q, End::Dst, t.virt.ip(), t.virt.port());
            }
            ForwardMethod::FullNat => {
                xlate::rewrite(f, ip, End::Src, t.virt.ip(), 0);
                xlate::rewrite(f, ip, End::Dst, t.client.ip(), 0);
                icmp::rewrite_quoted(f, &mut q, End::Src, t.client.ip(), t.client.port());
                icmp::rewrite_quoted(f, &mut q, End::Dst, t.virt.ip(), t.virt.port());
            }
            ForwardMethod::DirectRoute | ForwardMethod::Tunnel => return Verdict::Pass,
        }
        icmp::finish_translation(fb.frame_mut(), ip);
        bump(&self.stats.icmp_translated);
        if !xlate::decrement_ttl(fb.frame_mut(), ip) {
            return Verdict::Drop(DropReason::TtlExceeded);
        }
        self.l2_out(fb, t.client.ip())
    }
}

/// Answers an ICMP echo request to a VIP in place.
fn echo_reply(fb: &mut FrameBuf<'_>, ip: &IpInfo) -> Verdict {
    let f = fb.frame_mut();
    ethernet::Frame::new_unchecked(&mut f[..]).swap_addrs();
    match (ip.src, ip.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut p = ipv4::Packet::new_unchecked(&mut f[ip.l3..ip.end]);
            p.set_src_addr(d);
            p.set_dst_addr(s);
            p.set_ttl(64);
            p.fill_checksum();
            let m = &mut f[ip.l4..ip.end];
            let old = u16::from_be_bytes([m[0], m[1]]);
            m[0] = icmpv4::msg_type::ECHO_REPLY;
            let c = checksum::update_u16(
                u16::from_be_bytes([m[2], m[3]]),
                old,
                u16::from_be_bytes([m[0], m[1]]),
            );
            m[2..4].copy_from_slice(&c.to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut p = ipv6::Packet::new_unchecked(&mut f[ip.l3..ip.end]);
            p.set_src_addr(&d);
            p.set_dst_addr(&s);
            p.set_hop_limit(64);
            let mut m = icmpv6::Packet::new_unchecked(&mut f[ip.l4..ip.end]);
            m.set_msg_type(icmpv6::msg_type::ECHO_REPLY);
            m.fill_checksum(&d, &s);
        }
        _ => return Verdict::Drop(DropReason::Malformed),
    }
    fb.set_len(ip.end);
    Verdict::Reply
}

/// TCP option kind of TOA ("TCP option address"), as DPVS and the Linux TOA module use it.
pub const TOA_KIND: u8 = 254;

/// Inserts the TOA option carrying `client` into the TCP segment of `ip` (FULLNAT: the real
/// server's TOA module reads it from the ACK that completes the handshake). Fixes the IP
/// length and both checksums. False when there is no option space or the frame would exceed
/// `mtu`.
pub fn insert_toa(fb: &mut FrameBuf<'_>, ip: &mut IpInfo, client: SocketAddr, mtu: u16) -> bool {
    let mut opt = [0u8; 20];
    let len: usize = match client.ip() {
        IpAddr::V4(a) => {
            opt[4..8].copy_from_slice(&a.octets());
            8
        }
        IpAddr::V6(a) => {
            opt[4..20].copy_from_slice(&a.octets());
            20
        }
    };
    opt[0] = TOA_KIND;
    opt[1] = len as u8;
    opt[2..4].copy_from_slice(&client.port().to_be_bytes());
    let grow = len.div_ceil(4) * 4;
    if ip.proto != ip_proto::TCP || ip.ip_len() + grow > mtu as usize || !fb.set_len(ip.end + grow) {
        return false;
    }
    let seg_len = ip.end - ip.l4;
    let f = fb.frame_mut();
    let Ok(new_seg) = tcp::insert_option(&mut f[ip.l4..], seg_len, &opt[..len]) else {
        fb.set_len(ip.end);
        return false;
    };
    let new_ip_len = ip.ip_len() + (new_seg - seg_len);
    match (ip.src, ip.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut p = ipv4::Packet::new_unchecked(&mut f[ip.l3..ip.l3 + new_ip_len]);
            let old = p.total_len();
            p.set_total_len(new_ip_len as u16);
            p.set_checksum(checksum::update_u16(p.checksum(), old, new_ip_len as u16));
            tcp::Packet::new_unchecked(&mut f[ip.l4..ip.l4 + new_seg]).fill_checksum_v4(s, d);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let payload = new_ip_len - ipv6::field::HEADER_LEN;
            ipv6::Packet::new_unchecked(&mut f[ip.l3..ip.l3 + new_ip_len]).set_payload_len(payload as u16);
            tcp::Packet::new_unchecked(&mut f[ip.l4..ip.l4 + new_seg]).fill_checksum_v6(&s, &d);
        }
        _ => return false,
    }
    ip.end = ip.l3 + new_ip_len;
    fb.set_len(ip.end);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The VIP table finds every VIP of a list of up to 16 and no other address.
        #[test]
        fn vip_table_holds_exactly_its_vips(
            vips in proptest::collection::hash_set(any::<u32>(), 1..=FEW_VIPS),
            others in proptest::collection::vec(any::<u32>(), 64),
        ) {
            let list: Vec<u32> = vips.iter().copied().collect();
            let padded: [u32; FEW_VIPS] = std::array::from_fn(|i| list.get(i).copied().unwrap_or(list[0]));
            prop_assert_eq!(dedup_vips(&padded), &list[..]);
            let t = Vips4::build(&list).expect("a separating multiplier for 16 VIPs or fewer");
            for &a in &list {
                prop_assert!(t.contains(a));
            }
            for a in others.into_iter().chain(list.iter().map(|a| a ^ 1)).chain([0]) {
                prop_assert_eq!(t.contains(a), list.contains(&a), "{:#x}", a);
            }
        }
    }
}
