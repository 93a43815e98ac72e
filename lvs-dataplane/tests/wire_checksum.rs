//! Property tests for `wire::checksum`: the fast sum equals a plain RFC 1071 reference, and
//! every RFC 1624 incremental update equals a full recompute (IPv4 header; TCP and UDP over
//! IPv4 and IPv6; address, port, sequence and TTL changes).

use std::net::{Ipv4Addr, Ipv6Addr};

use lvs_dataplane::wire::{checksum, ipv4, tcp, udp};
use proptest::prelude::*;

/// RFC 1071 reference: add big-endian 16-bit words one at a time with end-around carry.
fn reference_sum(data: &[u8]) -> u16 {
    let mut acc: u32 = 0;
    for c in data.chunks(2) {
        acc += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32;
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

fn reference_pseudo_v4(s: Ipv4Addr, d: Ipv4Addr, proto: u8, len: u16) -> u16 {
    let mut b = Vec::new();
    b.extend_from_slice(&s.octets());
    b.extend_from_slice(&d.octets());
    b.extend_from_slice(&[0, proto]);
    b.extend_from_slice(&len.to_be_bytes());
    reference_sum(&b)
}

fn reference_pseudo_v6(s: &Ipv6Addr, d: &Ipv6Addr, proto: u8, len: u32) -> u16 {
    let mut b = Vec::new();
    b.extend_from_slice(&s.octets());
    b.extend_from_slice(&d.octets());
    b.extend_from_slice(&len.to_be_bytes());
    b.extend_from_slice(&[0, 0, 0, proto]);
    reference_sum(&b)
}

/// A random IPv4 header (with 0..=40 bytes of options) followed by a small payload.
fn ipv4_packet() -> impl Strategy<Value = Vec<u8>> {
    (0usize..=10, proptest::collection::vec(any::<u8>(), 60 + 64)).prop_map(|(opt_words, mut bytes)| {
        let hl = 20 + opt_words * 4;
        let total = hl + (bytes[59] as usize % 64);
        bytes.truncate(total);
        bytes[0] = 0x40 | (hl / 4) as u8;
        bytes[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        let mut p = ipv4::Packet::new_checked(&mut bytes[..]).unwrap();
        p.fill_checksum();
        bytes
    })
}

#[derive(Debug, Clone)]
enum Ipv4Change {
    Src(u32),
    Dst(u32),
    Ttl,
    Ident(u16),
    Tos(u8),
}

fn ipv4_change() -> impl Strategy<Value = Ipv4Change> {
    prop_oneof![
        any::<u32>().prop_map(Ipv4Change::Src),
        any::<u32>().prop_map(Ipv4Change::Dst),
        Just(Ipv4Change::Ttl),
        any::<u16>().prop_map(Ipv4Change::Ident),
        any::<u8>().prop_map(Ipv4Change::Tos),
    ]
}

#[derive(Debug, Clone)]
enum L4Change {
    SrcPort(u16),
    DstPort(u16),
    /// Sequence number (TCP) / a 32-bit word of the payload start (UDP is skipped).
    Seq(u32),
    SrcAddr(u128),
    DstAddr(u128),
}

fn l4_change() -> impl Strategy<Value = L4Change> {
    prop_oneof![
        any::<u16>().prop_map(L4Change::SrcPort),
        any::<u16>().prop_map(L4Change::DstPort),
        any::<u32>().prop_map(L4Change::Seq),
        any::<u128>().prop_map(L4Change::SrcAddr),
        any::<u128>().prop_map(L4Change::DstAddr),
    ]
}

#[derive(Debug, Clone, Copy)]
enum Net {
    V4(Ipv4Addr, Ipv4Addr),
    V6(Ipv6Addr, Ipv6Addr),
}

fn net() -> impl Strategy<Value = Net> {
    prop_oneof![
        (any::<u32>(), any::<u32>()).prop_map(|(s, d)| Net::V4(s.into(), d.into())),
        (any::<u128>(), any::<u128>()).prop_map(|(s, d)| Net::V6(s.into(), d.into())),
    ]
}

/// Apply an address change to `net`, returning the new addresses and the incrementally
/// updated checksum `c` (with `udp` choosing the UDP variant).
fn move_addr(net: Net, change: &L4Change, c: u16, udp: bool) -> (Net, u16) {
    let (src, v) = match change {
        L4Change::SrcAddr(v) => (true, *v),
        L4Change::DstAddr(v) => (false, *v),
        _ => return (net, c),
    };
    match net {
        Net::V4(s, d) => {
            let n = Ipv4Addr::from(v as u32);
            let old = if src { s } else { d };
            let c = if udp {
                checksum::update_udp_u32(c, old.into(), n.into())
            } else {
                checksum::update_ipv4(c, old, n)
            };
            (if src { Net::V4(n, d) } else { Net::V4(s, n) }, c)
        }
        Net::V6(s, d) => {
            let n = Ipv6Addr::from(v);
            let old = if src { s } else { d };
            let c = if udp {
                checksum::update_udp_ipv6(c, &old, &n)
            } else {
                checksum::update_ipv6(c, &old, &n)
            };
            (if src { Net::V6(n, d) } else { Net::V6(s, n) }, c)
        }
    }
}

fn fill_tcp(seg: &mut [u8], net: Net) -> u16 {
    let mut t = tcp::Packet::new_checked(seg).unwrap();
    match net {
        Net::V4(s, d) => t.fill_checksum_v4(s, d),
        Net::V6(s, d) => t.fill_checksum_v6(&s, &d),
    }
    t.checksum()
}

fn fill_udp(seg: &mut [u8], net: Net) -> u16 {
    let mut u = udp::Packet::new_checked(seg).unwrap();
    match net {
        Net::V4(s, d) => u.fill_checksum_v4(s, d),
        Net::V6(s, d) => u.fill_checksum_v6(&s, &d),
    }
    u.checksum()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// The word-at-a-time sum equals the RFC 1071 reference, for any length and alignment.
    #[test]
    fn sum_equals_reference(data in proptest::collection::vec(any::<u8>(), 0..1600), skip in 0usize..8) {
        let d = &data[skip.min(data.len())..];
        prop_assert_eq!(checksum::sum(d), reference_sum(d));
        prop_assert_eq!(checksum::checksum(d), !reference_sum(d));
    }

    /// Pseudo-header sums equal a sum over the pseudo-header spelled out as bytes.
    #[test]
    fn pseudo_headers_equal_reference(s: u128, d: u128, proto: u8, len: u16) {
        let (s4, d4) = (Ipv4Addr::from(s as u32), Ipv4Addr::from(d as u32));
        prop_assert_eq!(checksum::pseudo_header_v4(s4, d4, proto, len as u32), reference_pseudo_v4(s4, d4, proto, len));
        let (s6, d6) = (Ipv6Addr::from(s), Ipv6Addr::from(d));
        prop_assert_eq!(checksum::pseudo_header_v6(&s6, &d6, proto, len as u32), reference_pseudo_v6(&s6, &d6, proto, len as u32));
    }

    /// IPv4 header: a setter plus incremental update equals a full recompute.
    #[test]
    fn ipv4_incremental_equals_full(mut pkt in ipv4_packet(), change in ipv4_change()) {
        let mut p = ipv4::Packet::new_checked(&mut pkt[..]).unwrap();
        prop_assert!(p.verify_checksum());
        match change {
            Ipv4Change::Src(a) => p.set_src_addr_update(a.into()),
            Ipv4Change::Dst(a) => p.set_dst_addr_update(a.into()),
            Ipv4Change::Ttl => { p.decrement_ttl(); }
            Ipv4Change::Ident(id) => {
                let c = checksum::update_u16(p.checksum(), p.ident(), id);
                p.set_ident(id);
                p.set_checksum(c);
            }
            Ipv4Change::Tos(tos) => {
                let old = u16::from_be_bytes([p.version() << 4 | (p.header_len() / 4) as u8, p.dscp() << 2 | p.ecn()]);
                let new = u16::from_be_bytes([old.to_be_bytes()[0], tos]);
                let c = checksum::update_u16(p.checksum(), old, new);
                p.set_dscp_ecn(tos >> 2, tos & 3);
                p.set_checksum(c);
            }
        }
        let incremental = p.checksum();
        prop_assert!(p.verify_checksum());
        p.fill_checksum();
        prop_assert_eq!(incremental, p.checksum());
    }

    /// TCP over IPv4 and IPv6: ports, sequence number and addresses (pseudo-header).
    #[test]
    fn tcp_incremental_equals_full(net in net(), opt_words in 0usize..=10, mut seg in proptest::collection::vec(any::<u8>(), 60..200),
                                   change in l4_change()) {
        seg[12] = (((20 + opt_words * 4) / 4) as u8) << 4;
        fill_tcp(&mut seg, net);
        let mut t = tcp::Packet::new_checked(&mut seg[..]).unwrap();
        match change {
            L4Change::SrcPort(p) => t.set_src_port_update(p),
            L4Change::DstPort(p) => t.set_dst_port_update(p),
            L4Change::Seq(s) => {
                let c = checksum::update_u32(t.checksum(), t.seq_number(), s);
                t.set_seq_number(s);
                t.set_checksum(c);
            }
            _ => {}
        }
        let (net2, c) = move_addr(net, &change, t.checksum(), false);
        t.set_checksum(c);
        let incremental = t.checksum();
        let valid = match net2 {
            Net::V4(s, d) => t.verify_checksum_v4(s, d),
            Net::V6(s, d) => t.verify_checksum_v6(&s, &d),
        };
        prop_assert!(valid);
        prop_assert_eq!(incremental, fill_tcp(&mut seg, net2));
    }

    /// UDP over IPv4 and IPv6: ports and addresses, with UDP's zero rules (a computed 0 is
    /// sent as 0xFFFF; an absent checksum stays absent).
    #[test]
    fn udp_incremental_equals_full(net in net(), mut seg in proptest::collection::vec(any::<u8>(), 8..200), change in l4_change()) {
        let len = seg.len() as u16;
        seg[4..6].copy_from_slice(&len.to_be_bytes());
        fill_udp(&mut seg, net);
        let mut u = udp::Packet::new_checked(&mut seg[..]).unwrap();
        match change {
            L4Change::SrcPort(p) => u.set_src_port_update(p),
            L4Change::DstPort(p) => u.set_dst_port_update(p),
            _ => {}
        }
        let (net2, c) = move_addr(net, &change, u.checksum(), true);
        u.set_checksum(c);
        let incremental = u.checksum();
        prop_assert_ne!(incremental, 0);
        prop_assert_eq!(incremental, fill_udp(&mut seg, net2));
        // Absent checksum (IPv4): rewrites leave it absent and it still "verifies".
        let mut u = udp::Packet::new_checked(&mut seg[..]).unwrap();
        u.set_checksum(0);
        u.set_dst_port_update(9);
        prop_assert_eq!(u.checksum(), 0);
        prop_assert!(u.verify_checksum_v4(Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST));
    }
}

/// UDP whose data sums to 0xFFFF must carry 0xFFFF, both when filled and after an incremental
/// update that lands on that value (RFC 768; the RFC 1624 eqn. 3 result there is 0x0000).
#[test]
fn udp_computed_zero_is_sent_as_ffff() {
    let (s, d) = (Ipv4Addr::new(0, 0, 0, 0), Ipv4Addr::new(0, 0, 0, 0));
    // Pseudo-header sum: proto 17 + len 10 = 27 (0x001b); header words: ports, len 10.
    // Choose the payload word so the whole sum is 0xFFFF: 27 + 10 + sp + dp + w = 0xFFFF.
    let (sp, dp) = (0x1000u16, 0x2000u16);
    let w = 0xffff - 27 - 10 - sp - dp;
    let mut seg = [0u8; 10];
    seg[0..2].copy_from_slice(&sp.to_be_bytes());
    seg[2..4].copy_from_slice(&dp.to_be_bytes());
    seg[4..6].copy_from_slice(&10u16.to_be_bytes());
    seg[8..10].copy_from_slice(&w.to_be_bytes());
    let mut u = udp::Packet::new_checked(&mut seg[..]).unwrap();
    u.fill_checksum_v4(s, d);
    assert_eq!(u.checksum(), 0xffff);
    assert!(u.verify_checksum_v4(s, d));
    // From a different port, an incremental change back to `sp` lands on the zero case.
    u.set_src_port(sp + 1);
    u.fill_checksum_v4(s, d);
    assert_ne!(u.checksum(), 0xffff);
    u.set_src_port_update(sp);
    assert_eq!(u.checksum(), 0xffff);
    assert!(u.verify_checksum_v4(s, d));
}
