//! The pipeline over hand-built frames, per forwarding method and direction, checked with an
//! independent parser (etherparse): addresses, ports, MACs, TTL, and every checksum recomputed
//! from scratch.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use etherparse::{NetHeaders, PacketBuilder, PacketHeaders, PayloadSlice, TransportHeader};
use lvs_core::conn::ConnTable;
use lvs_core::rules::RuleSet;
use lvs_core::{Protocol, ServiceTable, Time};
use lvs_dataplane::hold::{HOLD_PER_HOP, HOLD_TIMEOUT, Released};
use lvs_dataplane::io::{FrameBuf, HEADROOM, MAX_FRAME};
use lvs_dataplane::neigh::NeighTable;
use lvs_dataplane::pipeline::{FwmarkRule, Interface, Pipeline, TOA_KIND, Tables, Worker};
use lvs_dataplane::route::{Route, RouteTable};
use lvs_dataplane::verdict::{DropReason, Verdict};
use lvs_dataplane::xlate::lip::LipPool;

const OUR: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0c];
const RS1_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x11];
const RS2_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x12];

const CIP: [u8; 4] = [10, 77, 1, 10];
const VIP: [u8; 4] = [10, 77, 1, 100];
const DIP: [u8; 4] = [10, 77, 2, 1];
const RS1: [u8; 4] = [10, 77, 2, 11];
const RS2: [u8; 4] = [10, 77, 2, 12];
const LIP: [u8; 4] = [10, 77, 2, 200];

fn v6(last: u16, net: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0, 0, net, 0, 0, 0, last)
}

struct Lab {
    pipeline: Arc<Pipeline>,
    worker: Worker,
    conns: Arc<ConnTable>,
    now: Time,
    buf: Vec<u8>,
}

impl Lab {
    fn new(rules: &str) -> Lab {
        Lab::with_mtu(rules, 1500)
    }

    fn with_mtu(rules: &str, mtu: u16) -> Lab {
        let mut rs = RuleSet::new();
        rs.apply_batch(rules).expect("rules");
        let services = Arc::new(ServiceTable::new());
        services.publish(&rs.services);
        let conns = Arc::new(ConnTable::with_capacity(4096));
        let neigh = Arc::new(NeighTable::new());
        for (ip, mac) in [(CIP, CLIENT_MAC), (RS1, RS1_MAC), (RS2, RS2_MAC)] {
            neigh.insert(IpAddr::from(ip), mac);
        }
        neigh.insert(v6(10, 1).into(), CLIENT_MAC);
        neigh.insert(v6(0x11, 2).into(), RS1_MAC);
        neigh.insert(v6(0x12, 2).into(), RS2_MAC);
        let routes = Arc::new(RouteTable::new(vec![
            Route {
                prefix: [10, 77, 1, 0].into(),
                len: 24,
                iface: 0,
                gateway: None,
            },
            Route {
                prefix: [10, 77, 2, 0].into(),
                len: 24,
                iface: 0,
                gateway: None,
            },
            Route {
                prefix: v6(0, 1).into(),
                len: 64,
                iface: 0,
                gateway: None,
            },
            Route {
                prefix: v6(0, 2).into(),
                len: 64,
                iface: 0,
                gateway: None,
            },
        ]));
        let lips = Arc::new(LipPool::new(&[IpAddr::from(LIP), v6(200, 2).into()], 5000, 5999));
        let tables = Tables {
            services,
            conns: conns.clone(),
            neigh,
            routes,
            lips,
        };
        let iface = Interface {
            name: "eth0".into(),
            mac: OUR,
            mtu,
            ipv4: Some(DIP.into()),
            ipv6: Some(v6(1, 2)),
        };
        let pipeline = Pipeline::new(tables, vec![iface]);
        let worker = pipeline.worker(0);
        // The daemon runs housekeeping from the start; so does the lab.
        pipeline.housekeeping(Time::from_secs(1000), 1000);
        Lab {
            pipeline,
            worker,
            conns,
            now: Time::from_secs(1000),
            buf: vec![0u8; HEADROOM + MAX_FRAME],
        }
    }

    /// Runs one frame; returns the verdict and the frame as it left.
    fn run(&mut self, frame: &[u8]) -> (Verdict, Vec<u8>) {
        self.buf[HEADROOM..HEADROOM + frame.len()].copy_from_slice(frame);
        let mut fb = FrameBuf::new(&mut self.buf, HEADROOM, frame.len());
        let v = self.worker.process(&mut fb, 0, self.now);
        (v, fb.frame().to_vec())
    }
}

#[derive(Clone, Copy)]
enum L4 {
    Syn,
    SynAck,
    Ack,
    Udp,
}

fn build(
    src_mac: [u8; 6],
    src: IpAddr,
    sport: u16,
    dst: IpAddr,
    dport: u16,
    l4: L4,
    payload: &[u8],
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(src_mac, OUR);
    let b = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => b.ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => b.ipv6(s.octets(), d.octets(), 64),
        _ => panic!("mixed families"),
    };
    let mut out = Vec::new();
    match l4 {
        L4::Udp => b.udp(sport, dport).write(&mut out, payload).unwrap(),
        L4::Syn => b
            .tcp(sport, dport, 1000, 64240)
            .syn()
            .write(&mut out, payload)
            .unwrap(),
        L4::SynAck => b
            .tcp(sport, dport, 5000, 64240)
            .syn()
            .ack(1001)
            .write(&mut out, payload)
            .unwrap(),
        L4::Ack => b
            .tcp(sport, dport, 1001, 64240)
            .ack(5001)
            .write(&mut out, payload)
            .unwrap(),
    }
    out
}

/// What etherparse sees in a frame, with every checksum verified from scratch.
#[derive(Debug)]
struct Seen {
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: IpAddr,
    dst: IpAddr,
    ttl: u8,
    proto: u8,
    sport: u16,
    dport: u16,
    tcp_options: Vec<u8>,
    payload: Vec<u8>,
}

fn inspect(frame: &[u8]) -> Seen {
    let h = PacketHeaders::from_ethernet_slice(frame).expect("etherparse parses the frame");
    let eth = h.link.clone().and_then(|l| l.ethernet2()).expect("ethernet");
    let (src, dst, ttl, proto) = match &h.net {
        Some(NetHeaders::Ipv4(ip, _)) => {
            assert_eq!(
                ip.calc_header_checksum(),
                ip.header_checksum,
                "IPv4 header checksum"
            );
            assert_eq!(
                ip.total_len as usize,
                frame.len() - 14,
                "IPv4 total length matches the frame"
            );
            (
                IpAddr::from(ip.source),
                IpAddr::from(ip.destination),
                ip.time_to_live,
                ip.protocol.0,
            )
        }
        Some(NetHeaders::Ipv6(ip, _)) => {
            assert_eq!(
                ip.payload_length as usize,
                frame.len() - 54,
                "IPv6 payload length matches"
            );
            (
                IpAddr::from(ip.source),
                IpAddr::from(ip.destination),
                ip.hop_limit,
                ip.next_header.0,
            )
        }
        other => panic!("no IP: {other:?}"),
    };
    let (sport, dport, tcp_options, payload) = match (&h.net, &h.transport, &h.payload) {
        (Some(NetHeaders::Ipv4(ip, _)), Some(TransportHeader::Tcp(t)), PayloadSlice::Tcp(p)) => {
            assert_eq!(t.calc_checksum_ipv4(ip, p).unwrap(), t.checksum, "TCP checksum");
            (
                t.source_port,
                t.destination_port,
                t.options.as_slice().to_vec(),
                p.to_vec(),
            )
        }
        (Some(NetHeaders::Ipv6(ip, _)), Some(TransportHeader::Tcp(t)), PayloadSlice::Tcp(p)) => {
            assert_eq!(t.calc_checksum_ipv6(ip, p).unwrap(), t.checksum, "TCP checksum");
            (
                t.source_port,
                t.destination_port,
                t.options.as_slice().to_vec(),
                p.to_vec(),
            )
        }
        (Some(NetHeaders::Ipv4(ip, _)), Some(TransportHeader::Udp(u)), PayloadSlice::Udp(p)) => {
            assert!(
                u.checksum == 0 || u.calc_checksum_ipv4(ip, p).unwrap() == u.checksum,
                "UDP checksum"
            );
            (u.source_port, u.destination_port, vec![], p.to_vec())
        }
        (Some(NetHeaders::Ipv6(ip, _)), Some(TransportHeader::Udp(u)), PayloadSlice::Udp(p)) => {
            assert_eq!(u.calc_checksum_ipv6(ip, p).unwrap(), u.checksum, "UDP checksum");
            (u.source_port, u.destination_port, vec![], p.to_vec())
        }
        (_, Some(TransportHeader::Icmpv4(i)), PayloadSlice::Icmpv4(p)) => {
            assert_eq!(i.icmp_type.calc_checksum(p), i.checksum, "ICMP checksum");
            (0, 0, vec![], p.to_vec())
        }
        (Some(NetHeaders::Ipv6(ip, _)), Some(TransportHeader::Icmpv6(i)), PayloadSlice::Icmpv6(p)) => {
            assert_eq!(
                i.icmp_type.calc_checksum(ip.source, ip.destination, p).unwrap(),
                i.checksum
            );
            (0, 0, vec![], p.to_vec())
        }
        (_, _, PayloadSlice::Ip(p)) => (0, 0, vec![], p.payload.to_vec()),
        other => panic!("unexpected transport {other:?}"),
    };
    Seen {
        src_mac: eth.source,
        dst_mac: eth.destination,
        src,
        dst,
        ttl,
        proto,
        sport,
        dport,
        tcp_options,
        payload,
    }
}

fn ip4(a: [u8; 4]) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(a))
}

const NAT_RULES: &str = "-A -t 10.77.1.100:80 -s rr\n-a -t 10.77.1.100:80 -r 10.77.2.11:8080 -m\n-a -t 10.77.1.100:80 -r 10.77.2.12:8080 -m\n-A -u 10.77.1.100:53 -s rr\n-a -u 10.77.1.100:53 -r 10.77.2.11:5353 -m\n";

#[test]
fn nat_tcp_v4_round_trip() {
    let mut lab = Lab::new(NAT_RULES);
    let (v, out) = lab.run(&build(CLIENT_MAC, ip4(CIP), 40000, ip4(VIP), 80, L4::Syn, b""));
    assert_eq!(v, Verdict::Forward { egress: 0 });
    let s = inspect(&out);
    // rr over the kernel list order: the most recently added destination (RS2) comes first.
    assert_eq!(
        (s.dst, s.dport, s.dst_mac, s.src_mac),
        (ip4(RS2), 8080, RS2_MAC, OUR)
    );
    assert_eq!((s.src, s.sport, s.ttl), (ip4(CIP), 40000, 63));

    let (v, out) = lab.run(&build(RS2_MAC, ip4(RS2), 8080, ip4(CIP), 40000, L4::SynAck, b""));
    assert_eq!(v, Verdict::Forward { egress: 0 });
    let s = inspect(&out);
    assert_eq!((s.src, s.sport, s.dst, s.dport), (ip4(VIP), 80, ip4(CIP), 40000));
    assert_eq!((s.dst_mac, s.src_mac, s.ttl), (CLIENT_MAC, OUR, 63));

    let (_, out) = lab.run(&build(
        CLIENT_MAC,
        ip4(CIP),
        40000,
        ip4(VIP),
        80,
        L4::Ack,
        b"GET / HTTP/1.0\r\n\r\n",
    ));
    let s = inspect(&out);
    assert_eq!(
        (s.dst, s.payload.as_slice()),
        (ip4(RS2), &b"GET / HTTP/1.0\r\n\r\n"[..])
    );
    assert_eq!(lab.conns.len(), 1);
    // Counters: 2 packets in, 1 out, on the destination and on the service.
    let set = lab.pipeline.tables().services.load();
    let svc = &set.services()[0];
    let rs2 = svc.dest(ip4(RS2), 8080).unwrap().state.stats.snapshot();
    let all = svc.stats.snapshot();
    for s in [rs2, all] {
        assert_eq!((s.conns, s.inpkts, s.outpkts), (1, 2, 1));
    }
    assert_eq!(rs2.inbytes, 40 + (40 + 18), "IP bytes of the SYN and the request");
    drop(set);
    // A second client connection goes to the other server.
    let (_, out) = lab.run(&build(CLIENT_MAC, ip4(CIP), 40001, ip4(VIP), 80, L4::Syn, b""));
    assert_eq!(inspect(&out).dst, ip4(RS1));
}

#[test]
fn nat_udp_v6_round_trip() {
    let rules = "-A -u [fd00:0:0:1::100]:53 -s rr\n-a -u [fd00:0:0:1::100]:53 -r [fd00:0:0:2::11]:5353 -m\n";
    let mut lab = Lab::new(rules);
    let (c, vip, rs) = (
        IpAddr::from(v6(10, 1)),
        IpAddr::from(v6(0x100, 1)),
        IpAddr::from(v6(0x11, 2)),
    );
    let (v, out) = lab.run(&build(CLIENT_MAC, c, 5555, vip, 53, L4::Udp, b"query"));
    assert_eq!(v, Verdict::Forward { egress: 0 });
    let s = inspect(&out);
    assert_eq!(
        (s.src, s.sport, s.dst, s.dport, s.ttl, s.dst_mac),
        (c, 5555, rs, 5353, 63, RS1_MAC)
    );
    let (v, out) = lab.run(&build(RS1_MAC, rs, 5353, c, 5555, L4::Udp, b"answer"));
    assert_eq!(v, Verdict::Forward { egress: 0 });
    let s = inspect(&out);
    assert_eq!(
        (s.src, s.sport, s.dst, s.dport, s.payload.as_slice()),
        (vip, 53, c, 5555, &b"answer"[..])
    );
}

const FNAT_RULES: &str = "-A -t 10.77.1.100:80 -s rr\n-a -t 10.77.1.100:80 -r 10.77.2.11:8080 --fullnat\n";

#[test]
fn fullnat_tcp_v4_round_trip_with_toa_on_the_handshake_ack() {
    let mut lab = Lab::new(FNAT_RULES);
    let (v, out) = lab.run(&build(CLIENT_MAC, ip4(CIP), 40000, ip4(VIP), 80, L4::Syn, b""));
    assert_eq!(v, Verdict::Forward { egress: 0 });
    let s = inspect(&out);
    assert_eq!((s.src, s.dst, s.dport), (ip4(LIP), ip4(RS1), 8080));
    assert!(
        (5000..=5999).contains(&s.sport),
        "local port from the pool: {}",
        s.sport
    );
    assert!(!s.tcp_options.contains(&TOA_KIND), "no TOA on the SYN");
    let lport = s.sport;

    let (v, out) = lab.run(&build(RS1_MAC, ip4(RS1), 8080, ip4(LIP), lport, L4::SynAck, b""));
    assert_eq!(v, Verdict::Forward { egress: 0 });
    let s = inspect(&out);
    assert_eq!(
        (s.src, s.sport, s.dst, s.dport, s.dst_mac),
        (ip4(VIP), 80, ip4(CIP), 40000, CLIENT_MAC)
    );

    let (_, out) = lab.run(&build(CLIENT_MAC, ip4(CIP), 40000, ip4(VIP), 80, L4::Ack, b""));
    let s = inspect(&out);
    let at = s
        .tcp_options
        .iter()
        .position(|&b| b == TOA_KIND)
        .expect("TOA option on the handshake ACK");
    let toa = &s.tcp_options[at..at + 8];
    assert_eq!(toa[1], 8);
    assert_eq!(u16::from_be_bytes([toa[2], toa[3]]), 40000);
    assert_eq!(&toa[4..8], &CIP);

    // Data after the handshake carries no TOA.
    let (_, out) = lab.run(&build(
        CLIENT_MAC,
        ip4(CIP),
        40000,
        ip4(VIP),
        80,
        L4::Ack,
        b"hello",
    ));
    let s = inspect(&out);
    assert!(!s.tcp_options.contains(&TOA_KIND));
    assert_eq!(s.payload, b"hello");

    // When the connection expires, its local port goes back to the pool.
    let lips = lab.pipeline.tables().lips.clone();
    assert!(lips.is_in_use(ip4(LIP), lport));
    lab.now = lab.now + Duration::from_secs(3600);
    lab.pipeline.housekeeping(lab.now, 1_000_000);
    assert_eq!(lab.conns.len(), 0);
    assert!(!lips.is_in_use(ip4(LIP), lport), "local port released on expiry");
}

#[test]
fn fullnat_udp_v6_round_trip() {
    let rules =
        "-A -u [fd00:0:0:1::100]:53 -s rr\n-a -u [fd00:0:0:1::100]:53 -r [fd00:0:0:2::11]:5353 --fullnat\n";
    let mut lab = Lab::new(rules);
    let (c, vip, rs, lip) = (
        IpAddr::from(v6(10, 1)),
        IpAddr::from(v6(0x100, 1)),
        IpAddr::from(v6(0x11, 2)),
        IpAddr::from(v6(200, 2)),
    );
    let (_, out) = lab.run(&build(CLIENT_MAC, c, 5555, vip, 53, L4::Udp, b"q"));
    let s = inspect(&out);
    assert_eq!((s.src, s.dst, s.dport), (lip, rs, 5353));
    let (_, out) = lab.run(&build(RS1_MAC, rs, 5353, lip, s.sport, L4::Udp, b"a"));
    let s = inspect(&out);
    assert_eq!((s.src, s.sport, s.dst, s.dport), (vip, 53, c, 5555));
}

#[test]
fn dr_rewrites_only_macs_and_ttl() {
    let rules = "-A -t 10.77.1.100:80 -s rr\n-a -t 10.77.1.100:80 -r 10.77.2.11 -g\n";
    let mut lab = Lab::new(rules);
    let frame = build(CLIENT_MAC, ip4(CIP), 40000, ip4(VIP), 80, L4::Syn, b"");
    let (v, out) = lab.run(&frame);
    assert_eq!(v, Verdict::Forward { egress: 0 });
    let s = inspect(&out);
    assert_eq!((s.dst_mac, s.src_mac), (RS1_MAC, OUR));
    assert_eq!(
        (s.src, s.sport, s.dst, s.dport, s.ttl),
        (ip4(CIP), 40000, ip4(VIP), 80, 63)
    );
    assert_eq!(out.len(), frame.len());
}

#[test]
fn tun_encapsulates_with_dip_outer_source_and_copies_df() {
    let rules = "-A -t 10.77.1.100:80 -s rr\n-a -t 10.77.1.100:80 -r 10.77.2.11 -i\n";
    let mut lab = Lab::new(rules);
    let frame = build(CLIENT_MAC, ip4(CIP), 40000, ip4(VIP), 80, L4::Syn, b"");
    let (v, out) = lab.run(&frame);
    assert_eq!(v, Verdict::Forward { egress: 0 });
    let s = inspect(&out);
    assert_eq!(
        (s.src, s.dst, s.proto, s.dst_mac),
        (ip4(DIP), ip4(RS1), 4, RS1_MAC)
    );
    assert_eq!(out.len(), frame.len() + 20);
    // The inner packet is the client's, TTL decremented, checksums valid.
    let mut inner = out[..14].to_vec();
    inner.extend_from_slice(&out[34..]);
    let i = inspect(&inner);
    assert_eq!((i.src, i.dst, i.dport, i.ttl), (ip4(CIP), ip4(VIP), 80, 63));
    // DF copied from the inner header (etherparse's builder sets DF).
    assert_eq!(out[14 + 6] & 0x40, inner[14 + 6] & 0x40);
}

#[test]
fn tun_v6_uses_next_header_41() {
    let rules = "-A -t [fd00:0:0:1::100]:80 -s rr\n-a -t [fd00:0:0:1::100]:80 -r fd00:0:0:2::11 -i\n";
    let mut lab = Lab::new(rules);
    let frame = build(
        CLIENT_MAC,
        v6(10, 1).into(),
        40000,
        v6(0x100, 1).into(),
        80,
        L4::Syn,
        b"",
    );
    let (_, out) = lab.run(&frame);
    let s = inspect(&out);
    assert_eq!(
        (s.src, s.dst, s.proto),
        (IpAddr::from(v6(1, 2)), IpAddr::from(v6(0x11, 2)), 41)
    );
    assert_eq!(out.len(), frame.len() + 40);
}

#[test]
fn tun_too_big_with_df_answers_frag_needed_with_mtu_minus_20() {
    let rules = "-A -u 10.77.1.100:53 -s rr\n-a -u 10.77.1.100:53 -r 10.77.2.11 -i\n";
    let mut lab = Lab::with_mtu(rules, 1500);
    let mut frame = build(CLIENT_MAC, ip4(CIP), 5555, ip4(VIP), 53, L4::Udp, &[7u8; 1472]);
    assert_eq!(frame.len(), 1514);
    // Set DF and fix the header checksum.
    frame[14 + 6] |= 0x40;
    frame[24..26].fill(0);
    let c = lvs_dataplane::wire::checksum::checksum(&frame[14..34]);
    frame[24..26].copy_from_slice(&c.to_be_bytes());
    let (v, out) = lab.run(&frame);
    assert_eq!(v, Verdict::Reply);
    let s = inspect(&out);
    assert_eq!(
        (s.src, s.dst, s.proto, s.dst_mac),
        (ip4(VIP), ip4(CIP), 1, CLIENT_MAC)
    );
    assert_eq!(out[34], 3, "destination unreachable");
    assert_eq!(out[35], 4, "fragmentation needed");
    assert_eq!(u16::from_be_bytes([out[40], out[41]]), 1480);
    assert!(out.len() - 14 <= 576, "ICMP error within 576 bytes");
    assert_eq!(lab.worker.drops.get(DropReason::TooBig), 1);
}

#[test]
fn arp_for_vip_and_lip_is_answered_and_other_arp_passes() {
    let mut lab = Lab::new(FNAT_RULES);
    lab.pipeline.tables().neigh.remove(ip4(CIP));
    for target in [VIP, LIP] {
        let (v, out) = lab.run(&arp_request_frame(CLIENT_MAC, CIP, target));
        assert_eq!(v, Verdict::Reply);
        assert_eq!(&out[0..6], &CLIENT_MAC);
        assert_eq!(&out[6..12], &OUR);
        assert_eq!(u16::from_be_bytes([out[20], out[21]]), 2, "ARP reply");
        assert_eq!(&out[22..28], &OUR, "sender MAC is ours");
        assert_eq!(&out[28..32], &target, "sender IP is the asked address");
        assert_eq!(&out[38..42], &CIP);
    }
    assert_eq!(
        lab.pipeline.tables().neigh.lookup(ip4(CIP)),
        Some(CLIENT_MAC),
        "sender learned"
    );
    assert_eq!(
        lab.run(&arp_request_frame(CLIENT_MAC, CIP, DIP)).0,
        Verdict::Pass,
        "ARP for the host's own address is the kernel's"
    );
}

/// An ARP request from `mac`/`spa` asking for `tpa`.
fn arp_request_frame(mac: [u8; 6], spa: [u8; 4], tpa: [u8; 4]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&spa);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&tpa);
    f
}

#[test]
fn arp_learning_is_limited_to_frames_for_us_and_bounded() {
    let mut lab = Lab::new(FNAT_RULES);
    let neigh = |lab: &Lab, ip: [u8; 4]| lab.pipeline.tables().neigh.lookup(ip4(ip));
    // Someone asking for another host on the segment: the kernel would not create an entry
    // (arp_accept off), neither does lvs.
    let stranger = [10, 77, 1, 55];
    let f = arp_request_frame([2, 0, 0, 0, 0, 0x55], stranger, [10, 77, 1, 99]);
    assert_eq!(lab.run(&f).0, Verdict::Pass);
    assert_eq!(
        neigh(&lab, stranger),
        None,
        "not learned from ARP for someone else"
    );
    // But a known neighbour's new MAC is taken from any ARP it sends.
    let f = arp_request_frame([2, 0, 0, 0, 0, 0x77], CIP, [10, 77, 1, 99]);
    assert_eq!(lab.run(&f).0, Verdict::Pass);
    assert_eq!(
        neigh(&lab, CIP),
        Some([2, 0, 0, 0, 0, 0x77]),
        "known address refreshed"
    );
    // A flood of requests for the VIP from forged senders: every one is answered, the table
    // stops growing at its bound.
    let flood = lvs_dataplane::neigh::MAX_NEIGHBOURS + 500;
    for i in 0..flood as u32 {
        let spa = (0x0a40_0000 + i).to_be_bytes();
        let f = arp_request_frame([2, 1, 0, 0, 0, 1], spa, VIP);
        assert_eq!(lab.run(&f).0, Verdict::Reply);
    }
    let n = lab.pipeline.tables().neigh.current().load().len();
    assert!(
        n <= lvs_dataplane::neigh::MAX_NEIGHBOURS,
        "{n} neighbours after a flood of {flood}"
    );
}

#[test]
fn persistence_keeps_a_client_on_one_server_and_netmask_groups_clients() {
    let rules = "-A -t 10.77.1.100:80 -s rr -p 300 -M 255.255.255.0\n-a -t 10.77.1.100:80 -r 10.77.2.11:8080 -m\n-a -t 10.77.1.100:80 -r 10.77.2.12:8080 -m\n";
    let mut lab = Lab::new(rules);
    let mut seen = Vec::new();
    for port in 40000..40006 {
        let (_, out) = lab.run(&build(CLIENT_MAC, ip4(CIP), port, ip4(VIP), 80, L4::Syn, b""));
        seen.push(inspect(&out).dst);
    }
    let other = ip4([10, 77, 1, 77]);
    lab.pipeline.tables().neigh.insert(other, CLIENT_MAC);
    let (_, out) = lab.run(&build(CLIENT_MAC, other, 1234, ip4(VIP), 80, L4::Syn, b""));
    seen.push(inspect(&out).dst);
    assert!(
        seen.iter().all(|d| *d == seen[0]),
        "one /24 stays on one server: {seen:?}"
    );
}

#[test]
fn firewall_mark_service_groups_two_ports() {
    let rules = "-A -f 7 -s rr -p 60\n-a -f 7 -r 10.77.2.11 -m\n-a -f 7 -r 10.77.2.12 -m\n";
    let mut lab = Lab::new(rules);
    let rule = |port| FwmarkRule {
        proto: lvs_core::Protocol::Tcp,
        addr: ip4(VIP),
        first_port: port,
        last_port: port,
        mark: 7,
    };
    lab.pipeline.set_fwmarks(vec![rule(80), rule(443)]);
    let (_, a) = lab.run(&build(CLIENT_MAC, ip4(CIP), 40000, ip4(VIP), 80, L4::Syn, b""));
    let (_, b) = lab.run(&build(CLIENT_MAC, ip4(CIP), 40001, ip4(VIP), 443, L4::Syn, b""));
    let (a, b) = (inspect(&a), inspect(&b));
    assert_eq!(
        a.dst, b.dst,
        "one persistent fwmark service: both ports on one server"
    );
    assert_eq!(
        (a.dport, b.dport),
        (80, 443),
        "port-0 destinations keep the packet's port"
    );
    let (v, _) = lab.run(&build(CLIENT_MAC, ip4(CIP), 40002, ip4(VIP), 22, L4::Syn, b""));
    assert_eq!(v, Verdict::Drop(DropReason::NoService), "port 22 is not marked");
}

#[test]
fn one_packet_scheduling_creates_no_entry() {
    let rules = "-A -u 10.77.1.100:53 -s rr -o\n-a -u 10.77.1.100:53 -r 10.77.2.11 -g\n-a -u 10.77.1.100:53 -r 10.77.2.12 -g\n";
    let mut lab = Lab::new(rules);
    let (_, a) = lab.run(&build(CLIENT_MAC, ip4(CIP), 5555, ip4(VIP), 53, L4::Udp, b"1"));
    let (_, b) = lab.run(&build(CLIENT_MAC, ip4(CIP), 5555, ip4(VIP), 53, L4::Udp, b"2"));
    assert_ne!(
        inspect(&a).dst_mac,
        inspect(&b).dst_mac,
        "each datagram scheduled on its own"
    );
    assert_eq!(lab.conns.len(), 0);
}

#[test]
fn every_drop_is_counted_under_its_reason() {
    let mut lab = Lab::new(NAT_RULES);
    // Truncated IPv4 header.
    let f = build(CLIENT_MAC, ip4(CIP), 1, ip4(VIP), 80, L4::Syn, b"");
    assert_eq!(lab.run(&f[..30]).0, Verdict::Drop(DropReason::Malformed));
    // Mid-connection segment with no connection.
    let f = build(CLIENT_MAC, ip4(CIP), 2, ip4(VIP), 80, L4::Ack, b"x");
    assert_eq!(lab.run(&f).0, Verdict::Drop(DropReason::NoConnection));
    // A port of the VIP with no service.
    let f = build(CLIENT_MAC, ip4(CIP), 3, ip4(VIP), 81, L4::Syn, b"");
    assert_eq!(lab.run(&f).0, Verdict::Drop(DropReason::NoService));
    // Unresolved next hop: held, not dropped (see `unresolved_next_hop_*`).
    lab.pipeline.tables().neigh.remove(ip4(RS2));
    let f = build(CLIENT_MAC, ip4(CIP), 4, ip4(VIP), 80, L4::Syn, b"");
    assert_eq!(lab.run(&f).0, Verdict::Held);
    assert_eq!(
        lab.pipeline.tables().neigh.take_pending(),
        Some(ip4(RS2)),
        "resolution requested"
    );
    // A fragment to the VIP.
    let mut f = build(CLIENT_MAC, ip4(CIP), 5, ip4(VIP), 53, L4::Udp, b"frag");
    f[14 + 6] = 0x20; // MF
    f[24..26].fill(0);
    let c = lvs_dataplane::wire::checksum::checksum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    assert_eq!(lab.run(&f).0, Verdict::Drop(DropReason::Fragment));
    for r in [
        DropReason::Malformed,
        DropReason::NoConnection,
        DropReason::NoService,
        DropReason::Fragment,
    ] {
        assert_eq!(lab.worker.drops.get(r), 1, "{r}");
    }
    assert_eq!(
        lab.worker.drops.get(DropReason::NoNeighbour),
        0,
        "a held frame is no drop"
    );
    // Not ours at all: the kernel's.
    let f = build(CLIENT_MAC, ip4(CIP), 6, ip4(DIP), 22, L4::Syn, b"");
    assert_eq!(lab.run(&f).0, Verdict::Pass);
}

/// Releases the worker's held frames at `now`: what it did and the frames sent.
fn release(lab: &mut Lab, now: Time) -> (Released, Vec<(u16, Vec<u8>)>) {
    let mut out = Vec::new();
    let r = lab
        .worker
        .release_held(now, &mut |e, f| out.push((e, f.to_vec())));
    (r, out)
}

#[test]
fn unresolved_next_hop_frames_are_held_released_with_the_mac_or_expired() {
    let mut lab = Lab::new(NAT_RULES);
    let neigh = lab.pipeline.tables().neigh.clone();
    neigh.remove(ip4(RS1));
    neigh.remove(ip4(RS2));
    let ld = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    // rr alternates RS2, RS1: each next hop gets HOLD_PER_HOP SYNs, all held.
    let mut to_rs2 = Vec::new();
    for port in 0..2 * HOLD_PER_HOP as u16 {
        let f = build(CLIENT_MAC, ip4(CIP), 1000 + port, ip4(VIP), 80, L4::Syn, b"");
        let v = if port % 2 == 0 {
            to_rs2.push(1000 + port);
            run_burst(&mut lab, &f).0
        } else {
            lab.run(&f).0
        };
        assert_eq!(v, Verdict::Held, "SYN {port}");
    }
    assert_eq!(ld(&lab.worker.stats.held), 2 * HOLD_PER_HOP as u64);
    assert_eq!(lab.worker.drops.total(), 0, "held frames are not drops");
    assert_eq!(lab.worker.held_len(), 2 * HOLD_PER_HOP);
    // Over the per-next-hop cap: dropped and counted.
    let f = build(CLIENT_MAC, ip4(CIP), 2000, ip4(VIP), 80, L4::Syn, b"");
    assert_eq!(lab.run(&f).0, Verdict::Drop(DropReason::NoNeighbour));
    assert_eq!(lab.worker.drops.get(DropReason::NoNeighbour), 1);
    // Nothing resolved: nothing sent, nothing expired yet.
    let t0 = lab.now;
    let (r, out) = release(&mut lab, t0 + Duration::from_millis(10));
    assert_eq!((r, out.len()), (Released::default(), 0));
    // RS2 answers: exactly its frames leave, in order, to its MAC.
    neigh.insert(ip4(RS2), RS2_MAC);
    let (r, out) = release(&mut lab, t0 + Duration::from_millis(20));
    assert_eq!(
        r,
        Released {
            sent: HOLD_PER_HOP,
            expired: 0
        }
    );
    let sports: Vec<u16> = out
        .iter()
        .map(|(egress, f)| {
            assert_eq!(*egress, 0);
            let s = inspect(f);
            assert_eq!(s.dst_mac, RS2_MAC, "the resolved MAC");
            assert_eq!(s.src_mac, OUR);
            assert_eq!(
                (s.src, s.dst, s.dport),
                (ip4(CIP), ip4(RS2), 8080),
                "the rewritten SYN"
            );
            s.sport
        })
        .collect();
    assert_eq!(sports, to_rs2, "RS2's SYNs, in arrival order");
    assert_eq!(ld(&lab.worker.stats.released), HOLD_PER_HOP as u64);
    let (r, _) = release(&mut lab, t0 + Duration::from_millis(30));
    assert_eq!(r.sent, 0, "sent once");
    // RS1 never answers: its frames are dropped at the deadline, counted as no_neighbour.
    let (r, _) = release(&mut lab, t0 + HOLD_TIMEOUT - Duration::from_millis(1));
    assert_eq!(r.expired, 0);
    let (r, out) = release(&mut lab, t0 + HOLD_TIMEOUT);
    assert_eq!((r.expired, out.len()), (HOLD_PER_HOP, 0));
    assert_eq!(
        lab.worker.drops.get(DropReason::NoNeighbour),
        1 + HOLD_PER_HOP as u64
    );
    assert_eq!(lab.worker.held_len(), 0);
}

#[test]
fn ttl_one_is_answered_with_time_exceeded() {
    let mut lab = Lab::new(NAT_RULES);
    let mut f = build(CLIENT_MAC, ip4(CIP), 40000, ip4(VIP), 80, L4::Syn, b"");
    f[14 + 8] = 1;
    f[24..26].fill(0);
    let c = lvs_dataplane::wire::checksum::checksum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    let (v, out) = lab.run(&f);
    assert_eq!(v, Verdict::Reply);
    let s = inspect(&out);
    assert_eq!((s.dst, s.proto, out[34]), (ip4(CIP), 1, 11));
    assert_eq!(lab.worker.drops.get(DropReason::TtlExceeded), 1);
}

#[test]
fn icmp_error_from_a_nat_server_reaches_the_client_translated() {
    let mut lab = Lab::new(NAT_RULES);
    let (_, fwd) = lab.run(&build(CLIENT_MAC, ip4(CIP), 5555, ip4(VIP), 53, L4::Udp, b"q"));
    // The real server answers "port unreachable", quoting the datagram it got (CIP → RIP).
    let quoted = &fwd[14..];
    let mut icmp = vec![3u8, 3, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(quoted);
    let c = lvs_dataplane::wire::checksum::checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let mut f = Vec::new();
    PacketBuilder::ethernet2(RS1_MAC, OUR)
        .ipv4(RS1, CIP, 64)
        .write(&mut f, etherparse::IpNumber(1), &icmp)
        .unwrap();
    let (v, out) = lab.run(&f);
    assert_eq!(v, Verdict::Forward { egress: 0 });
    let s = inspect(&out);
    assert_eq!((s.src, s.dst, s.dst_mac), (ip4(VIP), ip4(CIP), CLIENT_MAC));
    // The quoted packet now reads CIP:5555 → VIP:53, with a valid quoted header checksum.
    let q = &out[42..];
    assert_eq!(&q[16..20], &VIP);
    assert_eq!(u16::from_be_bytes([q[22], q[23]]), 53);
    assert_eq!(
        lvs_dataplane::wire::checksum::checksum(&q[..20]),
        0,
        "quoted IPv4 header checksum"
    );
}

#[test]
fn echo_to_the_vip_is_answered() {
    let mut lab = Lab::new(NAT_RULES);
    let mut f = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, OUR)
        .ipv4(CIP, VIP, 64)
        .icmpv4_echo_request(7, 1)
        .write(&mut f, b"ping")
        .unwrap();
    let (v, out) = lab.run(&f);
    assert_eq!(v, Verdict::Reply);
    let s = inspect(&out);
    assert_eq!((s.src, s.dst, out[34]), (ip4(VIP), ip4(CIP), 0));
}

#[test]
fn a_new_syn_on_a_time_wait_connection_is_scheduled_afresh() {
    let mut lab = Lab::new(NAT_RULES);
    let syn = build(CLIENT_MAC, ip4(CIP), 40000, ip4(VIP), 80, L4::Syn, b"");
    let (_, first) = lab.run(&syn);
    let first = inspect(&first).dst;
    let rs_mac = if first == ip4(RS1) { RS1_MAC } else { RS2_MAC };
    lab.run(&build(rs_mac, first, 8080, ip4(CIP), 40000, L4::SynAck, b""));
    lab.run(&build(CLIENT_MAC, ip4(CIP), 40000, ip4(VIP), 80, L4::Ack, b""));
    // RST from the client on the established connection closes it (state CLOSE).
    let mut rst = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, OUR)
        .ipv4(CIP, VIP, 64)
        .tcp(40000, 80, 1001, 0)
        .rst()
        .write(&mut rst, b"")
        .unwrap();
    lab.run(&rst);
    let state = lab.conns.iter(lab.now).next().map(|c| c.state);
    assert_eq!(
        state,
        Some(lvs_core::conn::ConnState::Close),
        "RST closes the connection"
    );
    let (_, again) = lab.run(&syn);
    assert_ne!(
        inspect(&again).dst,
        first,
        "rescheduled by rr, not stuck on the old entry"
    );
    assert_eq!(lab.conns.len(), 1);
}

#[test]
fn removed_destination_connections_go_on_unless_expire_nodest_conn() {
    for expire in [false, true] {
        let mut lab = Lab::new(NAT_RULES);
        lab.pipeline.set_expire_nodest_conn(expire);
        let (_, out) = lab.run(&build(CLIENT_MAC, ip4(CIP), 40000, ip4(VIP), 80, L4::Syn, b""));
        let rs = inspect(&out).dst;
        // Remove that destination from the rules.
        let mut rules = RuleSet::new();
        rules.apply_batch(NAT_RULES).unwrap();
        rules
            .apply_line(&format!("-d -t 10.77.1.100:80 -r {rs}:8080"))
            .unwrap();
        lab.pipeline.tables().services.publish(&rules.services);
        let (v, out) = lab.run(&build(
            CLIENT_MAC,
            ip4(CIP),
            40000,
            ip4(VIP),
            80,
            L4::Ack,
            b"more",
        ));
        if expire {
            assert_eq!(v, Verdict::Drop(DropReason::NoDestination));
            assert_eq!(lab.conns.len(), 0, "expired at once");
        } else {
            assert_eq!(v, Verdict::Forward { egress: 0 });
            assert_eq!(inspect(&out).dst, rs, "the connection goes on to its server");
        }
    }
}

/// Runs `frame` as a burst of one through `Worker::process_burst`.
fn run_burst(lab: &mut Lab, frame: &[u8]) -> (Verdict, Vec<u8>) {
    lab.buf[HEADROOM..HEADROOM + frame.len()].copy_from_slice(frame);
    let mut fbs = [FrameBuf::new(&mut lab.buf, HEADROOM, frame.len())];
    let mut v = [Verdict::Pass];
    lab.worker.process_burst(&mut fbs, 0, lab.now, &mut v);
    (v[0], fbs[0].frame().to_vec())
}

#[test]
fn next_hop_follows_neighbour_and_route_changes_at_once() {
    // The worker caches next hops (interface, MACs) of real servers; a new MAC or a new
    // route must still apply from the very next packet, single or in a burst.
    let rules = "-A -t 10.77.1.100:80 -s rr\n-a -t 10.77.1.100:80 -r 10.77.2.11:8080 -m\n";
    let mut lab = Lab::new(rules);
    let syn = build(CLIENT_MAC, ip4(CIP), 40000, ip4(VIP), 80, L4::Syn, b"");
    let ack = build(CLIENT_MAC, ip4(CIP), 40000, ip4(VIP), 80, L4::Ack, b"x");
    let (v, out) = lab.run(&syn);
    assert_eq!(v, Verdict::Forward { egress: 0 });
    assert_eq!(inspect(&out).dst_mac, RS1_MAC);
    let (_, out) = run_burst(&mut lab, &ack);
    assert_eq!(inspect(&out).dst_mac, RS1_MAC, "burst, cached");

    let moved = [0x02, 0, 0, 0, 0, 0x99];
    lab.pipeline.tables().neigh.insert(ip4(RS1), moved);
    let (_, out) = lab.run(&ack);
    assert_eq!(inspect(&out).dst_mac, moved, "single frame sees the new MAC");
    lab.pipeline.tables().neigh.insert(ip4(RS1), RS1_MAC);
    let (_, out) = run_burst(&mut lab, &ack);
    assert_eq!(inspect(&out).dst_mac, RS1_MAC, "a burst sees the MAC put back");

    // The real servers' network now goes through a router.
    let via = |router: IpAddr| {
        vec![
            Route {
                prefix: [10, 77, 1, 0].into(),
                len: 24,
                iface: 0,
                gateway: None,
            },
            Route {
                prefix: [10, 77, 2, 0].into(),
                len: 24,
                iface: 0,
                gateway: Some(router),
            },
        ]
    };
    let gw = ip4([10, 77, 1, 254]);
    let gw_mac = [0x02, 0, 0, 0, 0, 0xfe];
    lab.pipeline.tables().neigh.insert(gw, gw_mac);
    lab.pipeline.tables().routes.replace(via(gw));
    let (v, out) = run_burst(&mut lab, &ack);
    assert_eq!(v, Verdict::Forward { egress: 0 });
    assert_eq!(inspect(&out).dst_mac, gw_mac, "a burst follows the new route");
    let (_, out) = lab.run(&ack);
    assert_eq!(inspect(&out).dst_mac, gw_mac, "so does a single frame");
    let (_, out) = run_burst(&mut lab, &ack);
    assert_eq!(inspect(&out).dst_mac, gw_mac, "burst, router's next hop cached");
    // The router's MAC changes, then another router takes over the network.
    let gw_moved = [0x02, 0, 0, 0, 0, 0xfd];
    lab.pipeline.tables().neigh.insert(gw, gw_moved);
    let (_, out) = run_burst(&mut lab, &ack);
    assert_eq!(
        inspect(&out).dst_mac,
        gw_moved,
        "a burst sees the router's new MAC"
    );
    let gw2 = ip4([10, 77, 1, 253]);
    let gw2_mac = [0x02, 0, 0, 0, 0, 0xfc];
    lab.pipeline.tables().neigh.insert(gw2, gw2_mac);
    lab.pipeline.tables().routes.replace(via(gw2));
    let (_, out) = run_burst(&mut lab, &ack);
    assert_eq!(inspect(&out).dst_mac, gw2_mac, "a burst follows the new router");
    // Without any route to the server the packet is dropped, not sent to a cached MAC.
    lab.pipeline.tables().routes.replace(vec![]);
    let (v, _) = run_burst(&mut lab, &ack);
    assert_eq!(v, Verdict::Drop(DropReason::NoNeighbour));
}

#[test]
fn tun_outer_ipv4_header_copies_tos_ttl_and_df_and_checks_out() {
    let rules = "-A -t 10.77.1.100:80 -s rr\n-a -t 10.77.1.100:80 -r 10.77.2.11 -i\n";
    let mut lab = Lab::new(rules);
    for (tos, df) in [(0xb8u8, false), (0x02, true)] {
        let mut frame = build(
            CLIENT_MAC,
            ip4(CIP),
            40000 + tos as u16,
            ip4(VIP),
            80,
            L4::Syn,
            b"",
        );
        frame[15] = tos;
        frame[20] = if df { 0x40 } else { 0 };
        frame[24..26].copy_from_slice(&[0, 0]);
        let c = lvs_dataplane::wire::checksum::checksum(&frame[14..34]);
        frame[24..26].copy_from_slice(&c.to_be_bytes());
        let (v, out) = lab.run(&frame);
        assert_eq!(v, Verdict::Forward { egress: 0 });
        let o = &out[14..34];
        assert_eq!(o[0], 0x45, "version 4, no options");
        assert_eq!(o[1], tos, "TOS copied from the inner header");
        assert_eq!(
            u16::from_be_bytes([o[2], o[3]]) as usize,
            out.len() - 14,
            "total length covers the inner packet"
        );
        assert_eq!(o[6] & 0x40 != 0, df, "DF copied");
        assert_eq!((o[6] & 0x3f, o[7]), (0, 0), "no MF, offset 0");
        assert_eq!(
            (o[8], out[34 + 8]),
            (63, 63),
            "outer TTL is the decremented inner one"
        );
        assert_eq!(o[9], 4, "IPIP");
        assert_eq!(
            lvs_dataplane::wire::checksum::checksum(o),
            0,
            "outer header checksum"
        );
        assert_eq!((&o[12..16], &o[16..20]), (&DIP[..], &RS1[..]));
    }
}

#[test]
fn many_vips_are_all_served_single_and_in_bursts() {
    // Workers look a few IPv4 VIPs up in a small table and ask the service set beyond that:
    // both ways find every VIP and nothing else.
    for n in [3u8, 16, 20] {
        let mut rules = String::new();
        for i in 0..n {
            rules += &format!(
                "-A -t 10.77.1.{}:80 -s rr\n-a -t 10.77.1.{}:80 -r 10.77.2.11:8080 -m\n",
                100 + i,
                100 + i
            );
        }
        let mut lab = Lab::new(&rules);
        for i in 0..n {
            let vip = ip4([10, 77, 1, 100 + i]);
            let syn = build(CLIENT_MAC, ip4(CIP), 41000 + i as u16, vip, 80, L4::Syn, b"");
            let (v, _) = if i % 2 == 0 {
                lab.run(&syn)
            } else {
                run_burst(&mut lab, &syn)
            };
            assert_eq!(v, Verdict::Forward { egress: 0 }, "{n} VIPs: VIP {vip}");
        }
        let other = build(
            CLIENT_MAC,
            ip4(CIP),
            42000,
            ip4([10, 77, 1, 99]),
            80,
            L4::Syn,
            b"",
        );
        assert_eq!(lab.run(&other).0, Verdict::Pass, "{n} VIPs: not a VIP");
        assert_eq!(
            run_burst(&mut lab, &other).0,
            Verdict::Pass,
            "{n} VIPs: not a VIP (burst)"
        );
    }
}

/// Runs `frames` through `Worker::process_burst` in bursts of 32.
fn run_bursts(lab: &mut Lab, frames: &[Vec<u8>]) -> Vec<(Verdict, Vec<u8>)> {
    let mut out = Vec::new();
    for chunk in frames.chunks(32) {
        let mut bufs: Vec<Vec<u8>> = chunk
            .iter()
            .map(|f| {
                let mut b = vec![0u8; HEADROOM + MAX_FRAME];
                b[HEADROOM..HEADROOM + f.len()].copy_from_slice(f);
                b
            })
            .collect();
        let mut fbs: Vec<FrameBuf<'_>> = bufs
            .iter_mut()
            .zip(chunk)
            .map(|(b, f)| FrameBuf::new(b, HEADROOM, f.len()))
            .collect();
        let mut v = vec![Verdict::Pass; chunk.len()];
        lab.worker.process_burst(&mut fbs, 0, lab.now, &mut v);
        out.extend(v.into_iter().zip(fbs.iter().map(|f| f.frame().to_vec())));
    }
    out
}

#[test]
fn burst_counters_add_up_per_destination_and_service_with_more_servers_than_tally_slots() {
    // 70 NAT servers: a worker tallies a burst's traffic per destination in 64 slots, so
    // some servers share a slot; every packet and byte must still land on its own server.
    let servers: Vec<[u8; 4]> = (0..70u8).map(|i| [10, 77, 2, 20 + i]).collect();
    let mut rules = String::from("-A -t 10.77.1.100:80 -s rr\n");
    for s in &servers {
        rules += &format!("-a -t 10.77.1.100:80 -r {}:8080 -m\n", Ipv4Addr::from(*s));
    }
    let mut lab = Lab::new(&rules);
    for (i, s) in servers.iter().enumerate() {
        lab.pipeline
            .tables()
            .neigh
            .insert(ip4(*s), [0x02, 0, 0, 0, 1, i as u8]);
    }
    let conns = 140u16;
    for p in 0..conns {
        let (v, _) = lab.run(&build(
            CLIENT_MAC,
            ip4(CIP),
            41000 + p,
            ip4(VIP),
            80,
            L4::Syn,
            b"",
        ));
        assert_eq!(v, Verdict::Forward { egress: 0 });
    }
    let set = lab.pipeline.tables().services.load();
    let svc = set.services()[0].clone();
    let before: Vec<_> = servers
        .iter()
        .map(|s| svc.dest(ip4(*s), 8080).unwrap().state.stats.snapshot())
        .collect();
    let svc_before = svc.stats.snapshot();
    // Three rounds over every connection, payloads of 0..=12 bytes, in bursts of 32.
    let acks: Vec<Vec<u8>> = (0..3 * conns as usize)
        .map(|k| {
            let p = (k % conns as usize) as u16;
            build(
                CLIENT_MAC,
                ip4(CIP),
                41000 + p,
                ip4(VIP),
                80,
                L4::Ack,
                &vec![b'x'; k % 13],
            )
        })
        .collect();
    let outs = run_bursts(&mut lab, &acks);
    let mut want = vec![(0u64, 0u64); servers.len()];
    for ((v, out), ack) in outs.iter().zip(&acks) {
        assert_eq!(*v, Verdict::Forward { egress: 0 });
        let i = servers
            .iter()
            .position(|s| ip4(*s) == inspect(out).dst)
            .expect("sent to a server");
        want[i].0 += 1;
        want[i].1 += (ack.len() - 14) as u64;
    }
    for (i, s) in servers.iter().enumerate() {
        let now = svc.dest(ip4(*s), 8080).unwrap().state.stats.snapshot();
        assert_eq!(
            (now.inpkts - before[i].inpkts, now.inbytes - before[i].inbytes),
            want[i],
            "server {i}"
        );
    }
    let all = svc.stats.snapshot();
    let total = want.iter().fold((0, 0), |a, w| (a.0 + w.0, a.1 + w.1));
    assert_eq!(total.0, 3 * conns as u64);
    assert_eq!(
        (all.inpkts - svc_before.inpkts, all.inbytes - svc_before.inbytes),
        total
    );
}

#[test]
fn nat_replies_to_clients_behind_a_router_take_its_mac_in_bursts_and_singly() {
    // Replies go to clients, most of them behind a router: the burst path asks the route
    // and the router's cached next hop first. Its answers must match single frames across
    // MAC and route changes, and on-link clients in the same burst keep their own MAC.
    let rules = "-A -t 10.77.1.100:80 -s rr\n-a -t 10.77.1.100:80 -r 10.77.2.11:8080 -m\n";
    let mut lab = Lab::new(rules);
    let far = ip4([198, 51, 100, 7]);
    let routes = |router: IpAddr| {
        let link = |p: [u8; 4]| Route {
            prefix: p.into(),
            len: 24,
            iface: 0,
            gateway: None,
        };
        vec![
            link([10, 77, 1, 0]),
            link([10, 77, 2, 0]),
            Route {
                prefix: [0, 0, 0, 0].into(),
                len: 0,
                iface: 0,
                gateway: Some(router),
            },
        ]
    };
    let gw = ip4([10, 77, 1, 254]);
    let gw_mac = [0x02, 0, 0, 0, 0, 0xfe];
    lab.pipeline.tables().neigh.insert(gw, gw_mac);
    lab.pipeline.tables().routes.replace(routes(gw));
    for client in [far, ip4(CIP)] {
        let (v, out) = lab.run(&build(CLIENT_MAC, client, 40000, ip4(VIP), 80, L4::Syn, b""));
        assert_eq!(v, Verdict::Forward { egress: 0 });
        assert_eq!(inspect(&out).dst_mac, RS1_MAC);
    }
    let reply = |client: IpAddr| build(RS1_MAC, ip4(RS1), 8080, client, 40000, L4::SynAck, b"r");
    let both = vec![reply(far), reply(ip4(CIP)), reply(far)];
    for round in 0..2 {
        let outs = run_bursts(&mut lab, &both);
        for ((v, out), want) in outs.iter().zip([gw_mac, CLIENT_MAC, gw_mac]) {
            assert_eq!(*v, Verdict::Forward { egress: 0 }, "round {round}");
            let s = inspect(out);
            assert_eq!((s.dst_mac, s.src_mac), (want, OUR), "round {round}");
            assert_eq!((s.src, s.sport), (ip4(VIP), 80), "round {round}");
        }
    }
    let (v, out) = lab.run(&reply(far));
    assert_eq!(v, Verdict::Forward { egress: 0 });
    assert_eq!(inspect(&out).dst_mac, gw_mac, "a single frame agrees");
    // The router's MAC changes, then another router takes over.
    let gw_moved = [0x02, 0, 0, 0, 0, 0xfd];
    lab.pipeline.tables().neigh.insert(gw, gw_moved);
    assert_eq!(inspect(&run_burst(&mut lab, &reply(far)).1).dst_mac, gw_moved);
    let gw2 = ip4([10, 77, 1, 253]);
    let gw2_mac = [0x02, 0, 0, 0, 0, 0xfc];
    lab.pipeline.tables().neigh.insert(gw2, gw2_mac);
    lab.pipeline.tables().routes.replace(routes(gw2));
    assert_eq!(inspect(&run_burst(&mut lab, &reply(far)).1).dst_mac, gw2_mac);
    // No route to the far client: dropped, not sent to a cached router MAC.
    lab.pipeline.tables().routes.replace(routes(gw2)[..2].to_vec());
    assert_eq!(
        run_burst(&mut lab, &reply(far)).0,
        Verdict::Drop(DropReason::NoNeighbour)
    );
    assert_eq!(
        inspect(&run_burst(&mut lab, &reply(ip4(CIP))).1).dst_mac,
        CLIENT_MAC
    );
}

#[test]
fn burst_counts_reach_each_service_and_destination_exactly() {
    // Two services with two servers each, their packets interleaved in bursts: every
    // destination and every service gets exactly its own packets and bytes.
    let rules = "-A -t 10.77.1.100:80 -s rr\n\
                 -a -t 10.77.1.100:80 -r 10.77.2.11:8080 -m\n\
                 -a -t 10.77.1.100:80 -r 10.77.2.12:8080 -m\n\
                 -A -t 10.77.1.100:443 -s rr\n\
                 -a -t 10.77.1.100:443 -r 10.77.2.11:8443 -m\n\
                 -a -t 10.77.1.100:443 -r 10.77.2.12:8443 -m\n";
    let mut lab = Lab::new(rules);
    let conns: Vec<(u16, u16)> = (0..8)
        .map(|i| (41000 + i, if i % 2 == 0 { 80 } else { 443 }))
        .collect();
    for &(cport, vport) in &conns {
        let (v, _) = lab.run(&build(CLIENT_MAC, ip4(CIP), cport, ip4(VIP), vport, L4::Syn, b""));
        assert_eq!(v, Verdict::Forward { egress: 0 });
    }
    let set = lab.pipeline.tables().services.load();
    let snap = |vport: u16, rs: [u8; 4], rport: u16| {
        let svc = set
            .lookup(Protocol::Tcp, ip4(VIP), vport)
            .expect("service")
            .clone();
        let d = svc.dest(ip4(rs), rport).expect("dest").state.stats.snapshot();
        (svc.stats.snapshot(), d)
    };
    let keys = [
        (80, RS1, 8080),
        (80, RS2, 8080),
        (443, RS1, 8443),
        (443, RS2, 8443),
    ];
    let before: Vec<_> = keys.iter().map(|&(v, r, p)| snap(v, r, p)).collect();
    let acks: Vec<Vec<u8>> = (0..100)
        .map(|k| {
            let (cport, vport) = conns[k % conns.len()];
            build(
                CLIENT_MAC,
                ip4(CIP),
                cport,
                ip4(VIP),
                vport,
                L4::Ack,
                &vec![b'y'; k % 7],
            )
        })
        .collect();
    let outs = run_bursts(&mut lab, &acks);
    let mut want_dest = [(0u64, 0u64); 4];
    let mut want_svc = [(0u64, 0u64); 2];
    for ((v, out), ack) in outs.iter().zip(&acks) {
        assert_eq!(*v, Verdict::Forward { egress: 0 });
        let s = inspect(out);
        let i = keys
            .iter()
            .position(|&(_, r, p)| ip4(r) == s.dst && p == s.dport)
            .expect("a known server");
        let bytes = (ack.len() - 14) as u64;
        want_dest[i].0 += 1;
        want_dest[i].1 += bytes;
        want_svc[i / 2].0 += 1;
        want_svc[i / 2].1 += bytes;
    }
    for (i, &(v, r, p)) in keys.iter().enumerate() {
        let (svc, d) = snap(v, r, p);
        let (svc0, d0) = before[i];
        assert_eq!(
            (d.inpkts - d0.inpkts, d.inbytes - d0.inbytes),
            want_dest[i],
            "dest {i}"
        );
        assert_eq!(
            (svc.inpkts - svc0.inpkts, svc.inbytes - svc0.inbytes),
            want_svc[i / 2],
            "service of dest {i}"
        );
    }
}
