//! Invariants of the whole packet pipeline over arbitrary frames, shared by the cargo-fuzz
//! target (`fuzz/fuzz_targets/pipeline.rs`) and the stable replay test
//! (`tests/pipeline_fuzz_replay.rs`). Not part of the public API.
//!
//! A [`FuzzLab`] is a pipeline with services of every forwarding method (NAT, FULLNAT, DR,
//! TUN; TCP and UDP; IPv4 and IPv6), a persistent firewall-mark service, and live connections
//! of each (opened by running their handshakes through the pipeline). [`FuzzLab::run`]
//! processes one frame and panics if an invariant breaks:
//!
//! - the pipeline does not panic;
//! - every `Forward`/`Reply` frame parses (Ethernet, then ARP or IP, then TCP/UDP/ICMP/ICMPv6,
//!   inner IP of IPIP) with the wire views, and its IP length fields agree with the frame;
//! - when every checksum of the input verified, every checksum of the output verifies
//!   (IPv4 header, TCP, UDP, ICMP, ICMPv6, also inside an IPIP tunnel): the pipeline updates
//!   checksums incrementally, so a wrong input checksum stays wrong, as a router's would;
//! - each frame is counted once: a `Drop(r)` verdict adds exactly one to counter `r`; a
//!   `Forward` or `Pass` adds no drop; a `Reply` adds at most one (the ICMP-error answers to
//!   "too big", "TTL exceeded" and "no destination" are also counted as drops of that reason);
//!   so drops + forwards + replies + passes − replies counted as drops == frames.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use lvs_core::conn::ConnTable;
use lvs_core::rules::RuleSet;
use lvs_core::{Protocol, ServiceTable, Time};

use crate::io::{FrameBuf, HEADROOM, MAX_FRAME};
use crate::neigh::NeighTable;
use crate::pipeline::{FwmarkRule, Interface, Pipeline, Tables, Worker};
use crate::route::{Route, RouteTable};
use crate::verdict::{DropReason, Verdict};
use crate::wire::{arp, ethernet, ethertype, icmpv4, icmpv6, ip_proto, ipv4, ipv6, tcp, udp};
use crate::xlate::lip::LipPool;

/// The director's MAC.
pub const OUR_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
/// The client's (or its router's) MAC.
pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0c];
/// Real server 1's MAC.
pub const RS1_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x11];
/// Real server 2's MAC.
pub const RS2_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x12];

/// Client IPv4 address.
pub const CIP: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 10);
/// VIP (IPv4).
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 100);
/// Director IPv4 address.
pub const DIP: Ipv4Addr = Ipv4Addr::new(10, 77, 2, 1);
/// Real server 1 (IPv4).
pub const RS1: Ipv4Addr = Ipv4Addr::new(10, 77, 2, 11);
/// Real server 2 (IPv4).
pub const RS2: Ipv4Addr = Ipv4Addr::new(10, 77, 2, 12);
/// FULLNAT local address (IPv4).
pub const LIP: Ipv4Addr = Ipv4Addr::new(10, 77, 2, 200);

/// `fd00:0:0:<net>::<last>`: the IPv6 twin of the IPv4 plan (net 1 clients and VIP, net 2
/// servers, DIP and LIP).
pub const fn v6(net: u16, last: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0, 0, net, 0, 0, 0, last)
}

/// VIP ports by method: NAT 80, FULLNAT 81, DR 82, TUN 83 (TCP and UDP, v4 and v6).
pub const PORTS: [(u16, &str); 4] = [(80, "-m"), (81, "--fullnat"), (82, "-g"), (83, "-i")];

/// Firewall mark of the persistent fwmark service (TCP to the VIP, ports 8000..=8010).
pub const FWMARK: u32 = 7;

fn rules() -> String {
    let mut s = String::new();
    for (vip, rs1, rs2) in [
        (VIP.to_string(), RS1.to_string(), RS2.to_string()),
        (
            format!("[{}]", v6(1, 0x100)),
            format!("[{}]", v6(2, 0x11)),
            format!("[{}]", v6(2, 0x12)),
        ),
    ] {
        for proto in ["-t", "-u"] {
            for (port, flag) in PORTS {
                s += &format!("-A {proto} {vip}:{port} -s rr\n");
                let rport = if flag == "-g" || flag == "-i" {
                    port
                } else {
                    8000 + port
                };
                s += &format!("-a {proto} {vip}:{port} -r {rs1}:{rport} {flag}\n");
                if port == 80 {
                    s += &format!("-a {proto} {vip}:{port} -r {rs2}:{rport} {flag}\n");
                }
            }
        }
    }
    s += &format!("-A -f {FWMARK} -s rr -p 60\n-a -f {FWMARK} -r {RS1} -m\n-a -f {FWMARK} -r {RS2} -m\n");
    s
}

/// Transport part of a test frame.
#[derive(Debug, Clone, Copy)]
pub enum L4<'a> {
    /// TCP with these flags and payload.
    Tcp {
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
        /// Flags byte.
        flags: u8,
        /// Payload.
        payload: &'a [u8],
    },
    /// UDP.
    Udp {
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
        /// Payload.
        payload: &'a [u8],
    },
    /// ICMP or ICMPv6 (by the address family): type, code, the 4 bytes after the checksum,
    /// then `body`.
    Icmp {
        /// Type.
        ty: u8,
        /// Code.
        code: u8,
        /// Bytes 4..8.
        rest: [u8; 4],
        /// Body (the quoted packet of an error).
        body: &'a [u8],
    },
}

/// TCP SYN.
pub const SYN: u8 = 0x02;
/// TCP ACK.
pub const ACK: u8 = 0x10;
/// TCP SYN+ACK.
pub const SYN_ACK: u8 = 0x12;

/// An Ethernet frame `src` → `dst` (same family) carrying `l4`, every checksum filled, TTL 64.
pub fn build(src_mac: [u8; 6], src: IpAddr, dst: IpAddr, l4: L4<'_>) -> Vec<u8> {
    let v6 = src.is_ipv6();
    assert_eq!(v6, dst.is_ipv6(), "mixed families");
    let (proto, seg) = match l4 {
        L4::Tcp {
            sport,
            dport,
            flags,
            payload,
        } => {
            let mut t = vec![0u8; 20];
            t[0..2].copy_from_slice(&sport.to_be_bytes());
            t[2..4].copy_from_slice(&dport.to_be_bytes());
            t[4..8].copy_from_slice(&1000u32.to_be_bytes());
            t[8..12].copy_from_slice(&(if flags & ACK != 0 { 5001u32 } else { 0 }).to_be_bytes());
            t[12] = 5 << 4;
            t[13] = flags;
            t[14..16].copy_from_slice(&64240u16.to_be_bytes());
            t.extend_from_slice(payload);
            (ip_proto::TCP, t)
        }
        L4::Udp {
            sport,
            dport,
            payload,
        } => {
            let mut u = vec![0u8; 8];
            u[0..2].copy_from_slice(&sport.to_be_bytes());
            u[2..4].copy_from_slice(&dport.to_be_bytes());
            u[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
            u.extend_from_slice(payload);
            (ip_proto::UDP, u)
        }
        L4::Icmp { ty, code, rest, body } => {
            let mut m = vec![ty, code, 0, 0];
            m.extend_from_slice(&rest);
            m.extend_from_slice(body);
            (if v6 { ip_proto::ICMPV6 } else { ip_proto::ICMP }, m)
        }
    };
    let mut f = Vec::with_capacity(14 + 40 + seg.len());
    f.extend_from_slice(&OUR_MAC);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&(if v6 { ethertype::IPV6 } else { ethertype::IPV4 }).to_be_bytes());
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut h = [0u8; 20];
            h[0] = 0x45;
            h[2..4].copy_from_slice(&((20 + seg.len()) as u16).to_be_bytes());
            h[4..6].copy_from_slice(&0x4242u16.to_be_bytes());
            h[6] = 0x40;
            h[8] = 64;
            h[9] = proto;
            h[12..16].copy_from_slice(&s.octets());
            h[16..20].copy_from_slice(&d.octets());
            f.extend_from_slice(&h);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut h = [0u8; 40];
            h[0] = 0x60;
            h[4..6].copy_from_slice(&(seg.len() as u16).to_be_bytes());
            h[6] = proto;
            h[7] = 64;
            h[8..24].copy_from_slice(&s.octets());
            h[24..40].copy_from_slice(&d.octets());
            f.extend_from_slice(&h);
        }
        _ => unreachable!(),
    }
    f.extend_from_slice(&seg);
    fix_checksums(&mut f);
    f
}

/// Fills every checksum of `frame` it can reach (IPv4 header; TCP, UDP, ICMP, ICMPv6 of an
/// unfragmented packet), leaving the rest alone. The fuzz target uses it to turn arbitrary
/// bytes into a frame whose checksums verify, so the output checksums can be checked.
pub fn fix_checksums(frame: &mut [u8]) {
    let Ok(l3) = ethernet::Frame::new_checked(&frame[..]).and_then(|e| e.l3()) else {
        return;
    };
    let pkt = &mut frame[l3.offset..];
    match l3.ethertype {
        ethertype::IPV4 => {
            let Ok(p) = ipv4::Packet::new_checked(&pkt[..]) else {
                return;
            };
            let (hl, tl, proto, frag) = (
                p.header_len(),
                p.total_len() as usize,
                p.protocol(),
                p.is_fragment(),
            );
            let (s, d) = (p.src_addr(), p.dst_addr());
            ipv4::Packet::new_unchecked(&mut pkt[..tl]).fill_checksum();
            if frag {
                return;
            }
            let seg = &mut pkt[hl..tl];
            match proto {
                ip_proto::TCP => {
                    if let Ok(mut t) = tcp::Packet::new_checked(&mut seg[..]) {
                        t.fill_checksum_v4(s, d);
                    }
                }
                ip_proto::UDP => {
                    if let Ok(mut u) = udp::Packet::new_checked(&mut seg[..]) {
                        u.fill_checksum_v4(s, d);
                    }
                }
                ip_proto::ICMP => {
                    if let Ok(mut m) = icmpv4::Packet::new_checked(&mut seg[..]) {
                        m.fill_checksum();
                    }
                }
                _ => {}
            }
        }
        ethertype::IPV6 => {
            let Ok(p) = ipv6::Packet::new_checked(&pkt[..]) else {
                return;
            };
            let Ok(ul) = p.upper_layer() else {
                return;
            };
            if ul.fragment.is_some() {
                return;
            }
            let (s, d) = (p.src_addr(), p.dst_addr());
            let end = ipv6::field::HEADER_LEN + p.payload_len() as usize;
            let Some(seg) = pkt.get_mut(ul.offset..end) else {
                return;
            };
            match ul.protocol {
                ip_proto::TCP => {
                    if let Ok(mut t) = tcp::Packet::new_checked(&mut seg[..]) {
                        t.fill_checksum_v6(&s, &d);
                    }
                }
                ip_proto::UDP => {
                    if let Ok(mut u) = udp::Packet::new_checked(&mut seg[..]) {
                        u.fill_checksum_v6(&s, &d);
                    }
                }
                ip_proto::ICMPV6 => {
                    if let Ok(mut m) = icmpv6::Packet::new_checked(&mut seg[..]) {
                        m.fill_checksum(&s, &d);
                    }
                }
                _ => {}
            }
        }
        _ => {}
    }
}

/// True when every checksum of `frame` that the pipeline carries over (IPv4 header, TCP, UDP,
/// ICMP, ICMPv6, also inside IPIP) verifies, and its IP lengths fit the frame.
pub fn checksums_ok(frame: &[u8]) -> bool {
    let Ok(eth) = ethernet::Frame::new_checked(frame) else {
        return false;
    };
    let Ok(l3) = eth.l3() else {
        return false;
    };
    match l3.ethertype {
        ethertype::IPV4 => ip_checksums_ok(&frame[l3.offset..], false, 0),
        ethertype::IPV6 => ip_checksums_ok(&frame[l3.offset..], true, 0),
        _ => true,
    }
}

fn ip_checksums_ok(pkt: &[u8], v6: bool, depth: u8) -> bool {
    if v6 {
        let Ok(p) = ipv6::Packet::new_checked(pkt) else {
            return false;
        };
        let Ok(ul) = p.upper_layer() else {
            return false;
        };
        if ul.fragment.is_some() {
            return true;
        }
        let end = ipv6::field::HEADER_LEN + p.payload_len() as usize;
        let Some(seg) = pkt.get(ul.offset..end) else {
            return false;
        };
        let (s, d) = (p.src_addr(), p.dst_addr());
        match ul.protocol {
            ip_proto::TCP => tcp::Packet::new_checked(seg).is_ok_and(|t| t.verify_checksum_v6(&s, &d)),
            ip_proto::UDP => udp::Packet::new_checked(seg).is_ok_and(|u| u.verify_checksum_v6(&s, &d)),
            ip_proto::ICMPV6 => icmpv6::Packet::new_checked(seg).is_ok_and(|m| m.verify_checksum(&s, &d)),
            ip_proto::IPV6 if depth == 0 => ip_checksums_ok(seg, true, 1),
            _ => true,
        }
    } else {
        let Ok(p) = ipv4::Packet::new_checked(pkt) else {
            return false;
        };
        if !p.verify_checksum() {
            return false;
        }
        if p.is_fragment() {
            return true;
        }
        let seg = &pkt[p.header_len()..p.total_len() as usize];
        let (s, d) = (p.src_addr(), p.dst_addr());
        match p.protocol() {
            ip_proto::TCP => tcp::Packet::new_checked(seg).is_ok_and(|t| t.verify_checksum_v4(s, d)),
            ip_proto::UDP => udp::Packet::new_checked(seg).is_ok_and(|u| u.verify_checksum_v4(s, d)),
            ip_proto::ICMP => icmpv4::Packet::new_checked(seg).is_ok_and(|m| m.verify_checksum()),
            ip_proto::IPIP if depth == 0 => ip_checksums_ok(seg, false, 1),
            _ => true,
        }
    }
}

/// Asserts that an output frame parses: Ethernet, then ARP or IP (lengths agreeing with the
/// frame exactly), then its transport header (TCP, UDP, ICMP, ICMPv6, or the inner packet of
/// an IPIP tunnel, whose lengths must agree with the outer payload).
pub fn check_output_structure(frame: &[u8]) {
    let eth = ethernet::Frame::new_checked(frame).expect("output: Ethernet header parses");
    let l3 = eth.l3().expect("output: VLAN tags parse");
    match l3.ethertype {
        ethertype::ARP => {
            arp::Packet::new_checked(&frame[l3.offset..]).expect("output: ARP parses");
        }
        ethertype::IPV4 => check_ip_structure(&frame[l3.offset..], false, 0),
        ethertype::IPV6 => check_ip_structure(&frame[l3.offset..], true, 0),
        other => panic!("output: unexpected ethertype {other:#06x}"),
    }
}

fn check_ip_structure(pkt: &[u8], v6: bool, depth: u8) {
    let (proto, seg) = if v6 {
        let p = ipv6::Packet::new_checked(pkt).expect("output: IPv6 header parses");
        assert_eq!(
            ipv6::field::HEADER_LEN + p.payload_len() as usize,
            pkt.len(),
            "output: IPv6 payload length agrees with the frame"
        );
        let ul = p.upper_layer().expect("output: IPv6 extension headers parse");
        if ul.fragment.is_some() {
            return;
        }
        (ul.protocol, &pkt[ul.offset..])
    } else {
        let p = ipv4::Packet::new_checked(pkt).expect("output: IPv4 header parses");
        assert_eq!(
            p.total_len() as usize,
            pkt.len(),
            "output: IPv4 total length agrees with the frame"
        );
        if p.is_fragment() {
            return;
        }
        (p.protocol(), &pkt[p.header_len()..])
    };
    match proto {
        ip_proto::TCP => {
            tcp::Packet::new_checked(seg).expect("output: TCP header parses");
        }
        ip_proto::UDP => {
            let u = udp::Packet::new_checked(seg).expect("output: UDP header parses");
            assert!(
                u.len() as usize <= seg.len(),
                "output: UDP length within the packet"
            );
        }
        ip_proto::ICMP if !v6 => {
            icmpv4::Packet::new_checked(seg).expect("output: ICMP header parses");
        }
        ip_proto::ICMPV6 if v6 => {
            icmpv6::Packet::new_checked(seg).expect("output: ICMPv6 header parses");
        }
        ip_proto::IPIP if !v6 && depth == 0 => check_ip_structure(seg, false, 1),
        ip_proto::IPV6 if v6 && depth == 0 => check_ip_structure(seg, true, 1),
        _ => {}
    }
}

/// Counts of verdicts seen by a [`FuzzLab`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Frames processed.
    pub frames: u64,
    /// `Forward` verdicts.
    pub forwards: u64,
    /// `Reply` verdicts.
    pub replies: u64,
    /// `Reply` verdicts that were also counted as a drop (ICMP error answers).
    pub replies_counted_as_drops: u64,
    /// `Pass` verdicts.
    pub passes: u64,
    /// `Drop` verdicts.
    pub drops: u64,
    /// `Held` verdicts (frames waiting for their next hop's MAC).
    pub held: u64,
    /// Outputs whose checksums were checked (the input's all verified).
    pub checksums_checked: u64,
}

/// A pipeline with services of every method and live connections, checking every frame.
pub struct FuzzLab {
    /// The pipeline.
    pub pipeline: Arc<Pipeline>,
    /// Its worker.
    pub worker: Worker,
    /// The connection table.
    pub conns: Arc<ConnTable>,
    /// The clock.
    pub now: Time,
    /// Verdict counts.
    pub tally: Tally,
    buf: Vec<u8>,
}

impl std::fmt::Debug for FuzzLab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FuzzLab").field("tally", &self.tally).finish()
    }
}

impl Default for FuzzLab {
    fn default() -> Self {
        FuzzLab::new()
    }
}

/// The client address of a family.
pub fn cip(v6_: bool) -> IpAddr {
    if v6_ { v6(1, 10).into() } else { CIP.into() }
}

/// The VIP of a family.
pub fn vip(v6_: bool) -> IpAddr {
    if v6_ { v6(1, 0x100).into() } else { VIP.into() }
}

/// Real server 1 of a family.
pub fn rs1(v6_: bool) -> IpAddr {
    if v6_ { v6(2, 0x11).into() } else { RS1.into() }
}

/// The LIP of a family.
pub fn lip(v6_: bool) -> IpAddr {
    if v6_ { v6(2, 200).into() } else { LIP.into() }
}

/// Client port of the live connection to VIP port `vport`.
pub fn live_cport(vport: u16) -> u16 {
    40000 + vport
}

impl FuzzLab {
    /// A fresh lab; live connections: for each family, TCP (handshake done) and UDP (one
    /// exchange) to every method's port, from [`cip`]:[`live_cport`].
    pub fn new() -> FuzzLab {
        let mut rs = RuleSet::new();
        rs.apply_batch(&rules()).expect("fuzz lab rules parse");
        let services = Arc::new(ServiceTable::new());
        services.publish(&rs.services);
        let conns = Arc::new(ConnTable::with_capacity(1024));
        let neigh = Arc::new(NeighTable::new());
        for v in [false, true] {
            neigh.insert(cip(v), CLIENT_MAC);
            neigh.insert(rs1(v), RS1_MAC);
        }
        neigh.insert(RS2.into(), RS2_MAC);
        neigh.insert(v6(2, 0x12).into(), RS2_MAC);
        let route = |prefix: IpAddr, len| Route {
            prefix,
            len,
            iface: 0,
            gateway: None,
        };
        let routes = Arc::new(RouteTable::new(vec![
            route([10, 77, 1, 0].into(), 24),
            route([10, 77, 2, 0].into(), 24),
            route(v6(1, 0).into(), 64),
            route(v6(2, 0).into(), 64),
        ]));
        // A small pool, so exhaustion is reachable.
        let lips = Arc::new(LipPool::new(&[LIP.into(), v6(2, 200).into()], 5000, 5063));
        let tables = Tables {
            services,
            conns: conns.clone(),
            neigh,
            routes,
            lips,
        };
        let iface = Interface {
            name: "eth0".into(),
            mac: OUR_MAC,
            mtu: 1500,
            ipv4: Some(DIP),
            ipv6: Some(v6(2, 1)),
        };
        let pipeline = Pipeline::new(tables, vec![iface]);
        pipeline.set_fwmarks(vec![FwmarkRule {
            proto: Protocol::Tcp,
            addr: VIP.into(),
            first_port: 8000,
            last_port: 8010,
            mark: FWMARK,
        }]);
        let worker = pipeline.worker(0);
        let now = Time::from_secs(1000);
        pipeline.housekeeping(now, 0);
        let mut lab = FuzzLab {
            pipeline,
            worker,
            conns,
            now,
            tally: Tally::default(),
            buf: vec![0u8; HEADROOM + MAX_FRAME],
        };
        for v in [false, true] {
            for (port, _) in PORTS {
                let cport = live_cport(port);
                let syn = L4::Tcp {
                    sport: cport,
                    dport: port,
                    flags: SYN,
                    payload: b"",
                };
                let (verdict, out) = lab.run(&build(CLIENT_MAC, cip(v), vip(v), syn));
                assert!(
                    matches!(verdict, Verdict::Forward { .. }),
                    "lab SYN to port {port}: {verdict:?}"
                );
                if let Some((src, sport, dst, dport)) = reply_tuple(&out, port) {
                    let sa = L4::Tcp {
                        sport,
                        dport,
                        flags: SYN_ACK,
                        payload: b"",
                    };
                    let (verdict, _) = lab.run(&build(RS1_MAC, src, dst, sa));
                    assert!(
                        matches!(verdict, Verdict::Forward { .. }),
                        "lab SYN+ACK port {port}: {verdict:?}"
                    );
                }
                let ack = L4::Tcp {
                    sport: cport,
                    dport: port,
                    flags: ACK,
                    payload: b"",
                };
                lab.run(&build(CLIENT_MAC, cip(v), vip(v), ack));
                let q = L4::Udp {
                    sport: cport,
                    dport: port,
                    payload: b"query",
                };
                let (verdict, _) = lab.run(&build(CLIENT_MAC, cip(v), vip(v), q));
                assert!(
                    matches!(verdict, Verdict::Forward { .. }),
                    "lab UDP to port {port}: {verdict:?}"
                );
            }
        }
        lab
    }

    /// Processes one frame received on interface 0 and checks every invariant (panics on a
    /// violation). Returns the verdict and the frame as it left.
    pub fn run(&mut self, frame: &[u8]) -> (Verdict, Vec<u8>) {
        let len = frame.len().min(MAX_FRAME);
        check_fast_parse(&frame[..len]);
        let clean = checksums_ok(&frame[..len]);
        self.buf[HEADROOM..HEADROOM + len].copy_from_slice(&frame[..len]);
        let drops_before: Vec<u64> = DropReason::ALL
            .iter()
            .map(|&r| self.worker.drops.get(r))
            .collect();
        let mut fb = FrameBuf::new(&mut self.buf, HEADROOM, len);
        let verdict = self.worker.process(&mut fb, 0, self.now);
        let out = fb.frame().to_vec();
        let delta: Vec<u64> = DropReason::ALL
            .iter()
            .zip(&drops_before)
            .map(|(&r, &b)| self.worker.drops.get(r) - b)
            .collect();
        let added: u64 = delta.iter().sum();
        self.tally.frames += 1;
        match verdict {
            Verdict::Drop(r) => {
                assert_eq!(added, 1, "a drop is counted once ({r})");
                assert_eq!(delta[r as usize], 1, "a drop is counted under its reason ({r})");
                self.tally.drops += 1;
            }
            Verdict::Held => {
                assert_eq!(added, 0, "a held frame counts no drop");
                self.tally.held += 1;
            }
            Verdict::Pass => {
                assert_eq!(added, 0, "a pass counts no drop");
                self.tally.passes += 1;
            }
            Verdict::Forward { egress } => {
                assert_eq!(added, 0, "a forward counts no drop");
                assert!(
                    (egress as usize) < self.pipeline.interfaces().len(),
                    "egress is an interface"
                );
                self.tally.forwards += 1;
            }
            Verdict::Reply => {
                assert!(added <= 1, "a reply counts at most one drop");
                if added == 1 {
                    let r = DropReason::ALL[delta.iter().position(|&d| d == 1).expect("one reason")];
                    assert!(
                        matches!(
                            r,
                            DropReason::TooBig | DropReason::TtlExceeded | DropReason::NoDestination
                        ),
                        "only ICMP-error answers count a drop: {r}"
                    );
                    self.tally.replies_counted_as_drops += 1;
                }
                self.tally.replies += 1;
            }
        }
        if matches!(verdict, Verdict::Forward { .. } | Verdict::Reply) {
            check_output_structure(&out);
            if clean {
                assert!(
                    checksums_ok(&out),
                    "output checksums verify when the input's did ({verdict:?})"
                );
                self.tally.checksums_checked += 1;
            }
        }
        self.check_counts();
        (verdict, out)
    }

    /// Processes `frames` as one receive burst with [`Worker::process_burst`] (no invariant
    /// checks): the verdicts and the frames as they left, for comparison with [`run`](Self::run)
    /// frame by frame.
    pub fn run_burst(&mut self, frames: &[Vec<u8>]) -> Vec<(Verdict, Vec<u8>)> {
        let mut bufs: Vec<Vec<u8>> = frames.iter().map(|_| vec![0u8; HEADROOM + MAX_FRAME]).collect();
        let mut fbs: Vec<FrameBuf<'_>> = bufs
            .iter_mut()
            .zip(frames)
            .map(|(b, f)| {
                let len = f.len().min(MAX_FRAME);
                b[HEADROOM..HEADROOM + len].copy_from_slice(&f[..len]);
                FrameBuf::new(b, HEADROOM, len)
            })
            .collect();
        let mut verdicts = vec![Verdict::Pass; frames.len()];
        self.worker.process_burst(&mut fbs, 0, self.now, &mut verdicts);
        verdicts
            .into_iter()
            .zip(&fbs)
            .map(|(v, fb)| (v, fb.frame().to_vec()))
            .collect()
    }

    /// Asserts that the worker's counters account for every frame once.
    pub fn check_counts(&self) {
        let t = &self.tally;
        assert_eq!(
            t.drops + t.forwards + t.replies + t.passes + t.held,
            t.frames,
            "every frame has one verdict"
        );
        assert_eq!(
            self.worker.drops.total(),
            t.drops + t.replies_counted_as_drops,
            "drop counters = drop verdicts + ICMP-error answers"
        );
        let s = &self.worker.stats;
        let ld = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(ld(&s.frames), t.frames, "frames counted");
        assert_eq!(ld(&s.passed), t.passes, "passes counted");
        assert_eq!(ld(&s.replies), t.replies, "replies counted");
        assert_eq!(ld(&s.held), t.held, "held frames counted");
    }

    /// Runs a fuzz input: byte 0 is a control byte (bit 0: fill the frame's checksums first,
    /// so output checksums get checked; bit 1 is the fuzz target's: also run
    /// [`check_burst_equivalence`]), the rest is the frame.
    pub fn run_input(&mut self, data: &[u8]) {
        let Some((&ctl, frame)) = data.split_first() else {
            return;
        };
        let mut frame = frame[..frame.len().min(MAX_FRAME)].to_vec();
        if ctl & 1 != 0 {
            fix_checksums(&mut frame);
        }
        self.run(&frame);
    }
}

/// The fixed-offset parser of [`Worker::process_burst`] ([`crate::xlate::parse_fast_v4`])
/// answers exactly like the general one (Ethernet, then [`crate::xlate::parse_ip`])
/// whenever it answers; panics otherwise.
pub fn check_fast_parse(frame: &[u8]) {
    let Some(fast) = crate::xlate::parse_fast_v4(frame) else {
        return;
    };
    let l3 = ethernet::Frame::new_checked(frame)
        .and_then(|e| e.l3())
        .expect("a frame the fast parser takes has an Ethernet header");
    assert_eq!(
        (l3.ethertype, l3.offset),
        (ethertype::IPV4, 14),
        "the fast parser takes untagged IPv4 only"
    );
    assert_eq!(
        Ok(fast),
        crate::xlate::parse_ip(frame, 14, false),
        "the fast parser agrees with the general one"
    );
}

/// For a forwarded NAT/FULLNAT packet to VIP port `vport`: the tuple of the real server's
/// reply (source RIP:rport, destination the forwarded source). `None` for DR/TUN.
fn reply_tuple(out: &[u8], vport: u16) -> Option<(IpAddr, u16, IpAddr, u16)> {
    if vport != 80 && vport != 81 {
        return None;
    }
    let l3 = ethernet::Frame::new_checked(out).ok()?.l3().ok()?;
    let ip = crate::xlate::parse_ip(out, l3.offset, l3.ethertype == ethertype::IPV6).ok()?;
    Some((ip.dst, ip.dport, ip.src, ip.sport))
}

/// Seed frames for the corpus: every method and direction on a fresh [`FuzzLab`] (client →
/// VIP for each method, protocol and family; real server → client/LIP replies of the live
/// NAT and FULLNAT connections; ICMP errors both ways; ARP, NDP, echo), plus truncated
/// copies. Names say what each is; the bytes are fuzz inputs (control byte 0, then the frame).
pub fn seed_inputs() -> Vec<(String, Vec<u8>)> {
    let mut lab = FuzzLab::new();
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    let mut push = |name: String, frame: Vec<u8>| {
        let mut d = vec![0u8];
        d.extend_from_slice(&frame);
        out.push((name, d));
    };
    for v in [false, true] {
        let fam = if v { "v6" } else { "v4" };
        for (port, flag) in PORTS {
            let m = match flag {
                "-m" => "nat",
                "--fullnat" => "fullnat",
                "-g" => "dr",
                _ => "tun",
            };
            let cport = live_cport(port);
            let data = L4::Tcp {
                sport: cport,
                dport: port,
                flags: ACK,
                payload: b"GET / HTTP/1.0\r\n\r\n",
            };
            let f = build(CLIENT_MAC, cip(v), vip(v), data);
            let (_, fwd) = lab.run(&f);
            push(format!("{m}_tcp{fam}_in_established"), f);
            let syn = L4::Tcp {
                sport: 50000,
                dport: port,
                flags: SYN,
                payload: b"",
            };
            push(
                format!("{m}_tcp{fam}_in_syn"),
                build(CLIENT_MAC, cip(v), vip(v), syn),
            );
            let udp = L4::Udp {
                sport: cport,
                dport: port,
                payload: b"again",
            };
            push(format!("{m}_udp{fam}_in"), build(CLIENT_MAC, cip(v), vip(v), udp));
            if let Some((src, sport, dst, dport)) = reply_tuple(&fwd, port) {
                let reply = L4::Tcp {
                    sport,
                    dport,
                    flags: ACK,
                    payload: b"HTTP/1.0 200 OK\r\n",
                };
                let r = build(RS1_MAC, src, dst, reply);
                push(format!("{m}_tcp{fam}_reply"), r.clone());
                // The real server's ICMP error about the reply's connection (quoting what
                // it received from us), and the client's about our reply.
                let l3 = 14;
                let quoted = &fwd[l3..];
                let (ty, code) = if v { (1, 4) } else { (3, 3) };
                let err = L4::Icmp {
                    ty,
                    code,
                    rest: [0; 4],
                    body: &quoted[..quoted.len().min(if v { 1232 } else { 548 })],
                };
                push(
                    format!("{m}_icmp{fam}_error_from_server"),
                    build(RS1_MAC, src, dst, err),
                );
                let (_, back) = lab.run(&r);
                if back.len() > l3 {
                    let err = L4::Icmp {
                        ty,
                        code,
                        rest: [0; 4],
                        body: &back[l3..],
                    };
                    push(
                        format!("{m}_icmp{fam}_error_from_client"),
                        build(CLIENT_MAC, cip(v), vip(v), err),
                    );
                }
            }
        }
        let echo = L4::Icmp {
            ty: if v { 128 } else { 8 },
            code: 0,
            rest: [0, 7, 0, 1],
            body: b"ping",
        };
        push(
            format!("echo{fam}_to_vip"),
            build(CLIENT_MAC, cip(v), vip(v), echo),
        );
    }
    // Fwmark service, persistent.
    let fw = L4::Tcp {
        sport: 41000,
        dport: 8005,
        flags: SYN,
        payload: b"",
    };
    push(
        "fwmark_tcpv4_syn".into(),
        build(CLIENT_MAC, cip(false), vip(false), fw),
    );
    // ARP request for the VIP.
    let mut arp_req = vec![0xff; 6];
    arp_req.extend_from_slice(&CLIENT_MAC);
    arp_req.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    arp_req.extend_from_slice(&CLIENT_MAC);
    arp_req.extend_from_slice(&CIP.octets());
    arp_req.extend_from_slice(&[0; 6]);
    arp_req.extend_from_slice(&VIP.octets());
    push("arp_request_vip".into(), arp_req);
    // Neighbour solicitation for the IPv6 VIP, with a source link-layer option.
    let target = v6(1, 0x100);
    let mut ns_body = target.octets().to_vec();
    ns_body.extend_from_slice(&[1, 1]);
    ns_body.extend_from_slice(&CLIENT_MAC);
    let ns = L4::Icmp {
        ty: 135,
        code: 0,
        rest: [0; 4],
        body: &ns_body,
    };
    let mut ns = build(CLIENT_MAC, cip(true), IpAddr::V6(target), ns);
    ns[14 + 7] = 255;
    fix_checksums(&mut ns);
    push("ndp_solicit_vip".into(), ns);
    // TTL 1 to the VIP (time exceeded), and a big DF datagram to the TUN service (frag needed).
    let mut ttl1 = build(
        CLIENT_MAC,
        cip(false),
        vip(false),
        L4::Udp {
            sport: 1111,
            dport: 80,
            payload: b"x",
        },
    );
    ttl1[14 + 8] = 1;
    fix_checksums(&mut ttl1);
    push("ttl1_udpv4_to_vip".into(), ttl1);
    let big = vec![0x5a; 1472];
    push(
        "tun_udpv4_too_big".into(),
        build(
            CLIENT_MAC,
            cip(false),
            vip(false),
            L4::Udp {
                sport: 2222,
                dport: 83,
                payload: &big,
            },
        ),
    );
    // Truncated copies of a few seeds.
    let truncated: Vec<(String, Vec<u8>)> = out
        .iter()
        .filter(|(n, _)| n.ends_with("in_established") || n.contains("error_from_server"))
        .flat_map(|(n, d)| {
            [20usize, 40, 60]
                .into_iter()
                .filter(|&k| k < d.len())
                .map(move |k| (format!("truncated_{k}_{n}"), d[..k].to_vec()))
        })
        .collect();
    out.extend(truncated);
    out
}

/// Differential check of [`Worker::process_burst`]: the input's frame (prepared as
/// [`FuzzLab::run_input`] does) processed twice as one burst on a fresh lab gives the same
/// verdicts and frames as two [`FuzzLab::run`] calls on another fresh lab (which also check
/// every invariant).
pub fn check_burst_equivalence(data: &[u8]) {
    let Some((&ctl, frame)) = data.split_first() else {
        return;
    };
    let mut frame = frame[..frame.len().min(MAX_FRAME)].to_vec();
    if ctl & 1 != 0 {
        fix_checksums(&mut frame);
    }
    let mut single = FuzzLab::new();
    let want = vec![single.run(&frame), single.run(&frame)];
    let mut burst = FuzzLab::new();
    let got = burst.run_burst(&[frame.clone(), frame]);
    assert_eq!(got, want, "a burst processes like single frames");
}
