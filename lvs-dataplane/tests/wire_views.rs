//! Pinned behaviours of the `wire` views: what each checked constructor accepts and refuses,
//! bounded walks, and that no accessor panics on random bytes.

use std::net::{Ipv4Addr, Ipv6Addr};

use lvs_dataplane::wire::{
    Error, arp, ethernet, ethertype, fuzzing, icmpv4, icmpv6, ip_proto, ipv4, ipv6, tcp, udp,
};
use proptest::prelude::*;

fn ipv4_header(ihl: u8, total: u16, buf_len: usize) -> Vec<u8> {
    let mut b = vec![0u8; buf_len.max(20)];
    b[0] = 0x40 | ihl;
    b[2..4].copy_from_slice(&total.to_be_bytes());
    b[8] = 64;
    b[9] = ip_proto::TCP;
    b[12..16].copy_from_slice(&[10, 0, 0, 1]);
    b[16..20].copy_from_slice(&[10, 0, 0, 2]);
    b.truncate(buf_len);
    b
}

#[test]
fn ipv4_check_len_rules() {
    assert!(ipv4::Packet::new_checked(&ipv4_header(5, 20, 20)[..]).is_ok());
    assert_eq!(
        ipv4::Packet::new_checked(&ipv4_header(5, 20, 19)[..]).unwrap_err(),
        Error::Truncated
    );
    assert_eq!(
        ipv4::Packet::new_checked(&ipv4_header(4, 20, 40)[..]).unwrap_err(),
        Error::Malformed,
        "IHL < 5"
    );
    assert_eq!(
        ipv4::Packet::new_checked(&ipv4_header(15, 60, 40)[..]).unwrap_err(),
        Error::Truncated,
        "options past the buffer"
    );
    assert_eq!(
        ipv4::Packet::new_checked(&ipv4_header(6, 20, 40)[..]).unwrap_err(),
        Error::Malformed,
        "total < header"
    );
    assert_eq!(
        ipv4::Packet::new_checked(&ipv4_header(5, 41, 40)[..]).unwrap_err(),
        Error::Truncated,
        "total > buffer"
    );
    let mut v6 = ipv4_header(5, 20, 20);
    v6[0] = 0x65;
    assert_eq!(
        ipv4::Packet::new_checked(&v6[..]).unwrap_err(),
        Error::Malformed,
        "version"
    );

    // Ethernet padding after the total length is not payload.
    let mut b = ipv4_header(6, 30, 60);
    b[20..24].copy_from_slice(&[0x94, 4, 0, 0]);
    let p = ipv4::Packet::new_checked(&b[..]).unwrap();
    assert_eq!(
        (p.header_len(), p.options(), p.payload().len()),
        (24, &[0x94, 4, 0, 0][..], 6)
    );

    // A quoted (truncated) packet: header complete, payload cut short, payload clamped.
    let q = ipv4_header(5, 1500, 28);
    assert_eq!(ipv4::Packet::new_checked(&q[..]).unwrap_err(), Error::Truncated);
    let t = ipv4::Packet::new_truncated(&q[..]).unwrap();
    assert_eq!(t.payload().len(), 8);
}

#[test]
fn ipv4_fragment_fields() {
    let mut b = ipv4_header(5, 20, 20);
    let mut p = ipv4::Packet::new_checked(&mut b[..]).unwrap();
    p.set_frag(true, false, 0);
    assert!(p.dont_frag() && !p.more_frags() && !p.is_fragment());
    p.set_frag(false, true, 0);
    assert!(p.is_fragment() && p.frag_offset() == 0);
    p.set_frag(false, false, 1480);
    assert!(p.is_fragment() && !p.more_frags() && p.frag_offset() == 1480);
    p.set_ident(0xbeef);
    assert_eq!(p.ident(), 0xbeef);
    p.fill_checksum();
    assert!(p.verify_checksum());
    p.set_ttl(1);
    p.fill_checksum();
    assert_eq!(p.decrement_ttl(), 0);
    assert!(p.verify_checksum());
    assert_eq!(p.decrement_ttl(), 0, "TTL 0 stays 0");
    assert!(p.verify_checksum());
}

fn ipv6_packet(next: u8, payload: &[u8]) -> Vec<u8> {
    let mut b = vec![0x60, 0, 0, 0];
    b.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    b.extend_from_slice(&[next, 64]);
    b.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
    b.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
    b.extend_from_slice(payload);
    b
}

#[test]
fn ipv6_ext_walker_is_bounded_and_strict() {
    // Eight destination-options headers then TCP: accepted (the bound is 8).
    let mut chain = Vec::new();
    for _ in 0..7 {
        chain.extend_from_slice(&[ip_proto::DSTOPTS, 0, 1, 4, 0, 0, 0, 0]);
    }
    chain.extend_from_slice(&[ip_proto::TCP, 0, 1, 4, 0, 0, 0, 0]);
    let p = ipv6_packet(ip_proto::DSTOPTS, &chain);
    let ul = ipv6::Packet::new_checked(&p[..]).unwrap().upper_layer().unwrap();
    assert_eq!((ul.protocol, ul.offset), (ip_proto::TCP, 40 + 64));
    // Nine: malformed.
    let mut chain9 = vec![ip_proto::DSTOPTS, 0, 1, 4, 0, 0, 0, 0];
    chain9.extend_from_slice(&chain);
    let p = ipv6_packet(ip_proto::DSTOPTS, &chain9);
    assert_eq!(
        ipv6::Packet::new_checked(&p[..]).unwrap().upper_layer(),
        Err(Error::Malformed)
    );
    // Hop-by-hop anywhere but first: malformed.
    let p = ipv6_packet(
        ip_proto::DSTOPTS,
        &[
            ip_proto::HOPOPT,
            0,
            1,
            4,
            0,
            0,
            0,
            0,
            ip_proto::TCP,
            0,
            1,
            4,
            0,
            0,
            0,
            0,
        ],
    );
    assert_eq!(
        ipv6::Packet::new_checked(&p[..]).unwrap().upper_layer(),
        Err(Error::Malformed)
    );
    // An extension header longer than the payload: truncated.
    let p = ipv6_packet(ip_proto::ROUTING, &[ip_proto::TCP, 3, 0, 0, 0, 0, 0, 0]);
    assert_eq!(
        ipv6::Packet::new_checked(&p[..]).unwrap().upper_layer(),
        Err(Error::Truncated)
    );
    // AH counts in 4-byte units (+2).
    let p = ipv6_packet(ip_proto::AH, &[ip_proto::UDP, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2]);
    let ul = ipv6::Packet::new_checked(&p[..]).unwrap().upper_layer().unwrap();
    assert_eq!((ul.protocol, ul.offset), (ip_proto::UDP, 40 + 12));
    // A later fragment stops the walk at the fragment data.
    let p = ipv6_packet(
        ip_proto::FRAGMENT,
        &[ip_proto::TCP, 0, 0x05, 0x01, 0, 0, 0, 9, 1, 2, 3],
    );
    let ul = ipv6::Packet::new_checked(&p[..]).unwrap().upper_layer().unwrap();
    assert_eq!(
        ul.fragment,
        Some(ipv6::Fragment {
            offset: 0x0500,
            more: true,
            ident: 9
        })
    );
    assert_eq!((ul.protocol, ul.offset), (ip_proto::TCP, 48));
    // Payload length past the buffer.
    let mut p = ipv6_packet(ip_proto::TCP, &[0; 8]);
    p.truncate(47);
    assert_eq!(ipv6::Packet::new_checked(&p[..]).unwrap_err(), Error::Truncated);
}

#[test]
fn tcp_data_offset_and_options() {
    let mut s = [0u8; 40];
    s[12] = 4 << 4;
    assert_eq!(
        tcp::Packet::new_checked(&s[..]).unwrap_err(),
        Error::Malformed,
        "data offset < 5"
    );
    s[12] = 11 << 4;
    assert_eq!(
        tcp::Packet::new_checked(&s[..]).unwrap_err(),
        Error::Truncated,
        "options past the buffer"
    );
    s[12] = 10 << 4;
    // NOP, MSS, then an option claiming 9 bytes where 14 are left... then garbage length 1.
    s[20..28].copy_from_slice(&[1, 2, 4, 0x05, 0xb4, 8, 10, 0]);
    s[28..40].copy_from_slice(&[0, 0, 1, 0, 0, 0, 2, 99, 1, 0, 0, 0]);
    let t = tcp::Packet::new_checked(&s[..]).unwrap();
    let mut it = t.option_iter();
    assert_eq!(it.next(), Some(tcp::TcpOption::Mss(1460)));
    assert_eq!(it.next(), Some(tcp::TcpOption::Timestamps(1, 2)));
    assert_eq!(it.next(), None, "kind 99 with length 1 stops the walk");
    assert!(it.malformed());
    assert_eq!(t.free_option_space(), 20);
    // END stops the walk cleanly.
    s[20] = 0;
    let t = tcp::Packet::new_checked(&s[..]).unwrap();
    let mut it = t.option_iter();
    assert_eq!(it.next(), None);
    assert!(!it.malformed());
    // No room: a 40-byte option block cannot take a TOA.
    let mut big = vec![0u8; 80];
    big[12] = 15 << 4;
    assert_eq!(
        tcp::insert_option(&mut big, 60, &[254, 8, 0, 0, 0, 0, 0, 0]),
        Err(Error::Malformed)
    );
    let mut small = vec![0u8; 24];
    small[12] = 5 << 4;
    assert_eq!(
        tcp::insert_option(&mut small, 20, &[254, 8, 0, 0, 0, 0, 0, 0]),
        Err(Error::Truncated),
        "no room in the buffer"
    );
}

#[test]
fn udp_length_rules() {
    let mut d = [0u8; 16];
    d[4..6].copy_from_slice(&7u16.to_be_bytes());
    assert_eq!(udp::Packet::new_checked(&d[..]).unwrap_err(), Error::Malformed);
    d[4..6].copy_from_slice(&17u16.to_be_bytes());
    assert_eq!(udp::Packet::new_checked(&d[..]).unwrap_err(), Error::Truncated);
    d[4..6].copy_from_slice(&12u16.to_be_bytes());
    let u = udp::Packet::new_checked(&d[..]).unwrap();
    assert_eq!(u.payload().len(), 4, "bytes past the UDP length are not payload");
    // IPv6 forbids a zero checksum.
    assert!(u.verify_checksum_v4(Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST));
    assert!(!u.verify_checksum_v6(&Ipv6Addr::LOCALHOST, &Ipv6Addr::LOCALHOST));
}

#[test]
fn ethernet_vlan_tags() {
    let mut f = [0u8; 14];
    f[12..14].copy_from_slice(&ethertype::IPV6.to_be_bytes());
    let l3 = ethernet::Frame::new_checked(&f[..]).unwrap().l3().unwrap();
    assert_eq!(
        l3,
        ethernet::L3 {
            ethertype: ethertype::IPV6,
            offset: 14,
            vlan_id: None,
            tags: 0
        }
    );
    // 802.1ad outer 5, 802.1Q inner 0xabc (PCP bits set to check masking).
    let mut q = f[..12].to_vec();
    q.extend_from_slice(&[0x88, 0xa8, 0x00, 0x05, 0x81, 0x00, 0xea, 0xbc, 0x08, 0x00]);
    let l3 = ethernet::Frame::new_checked(&q[..]).unwrap().l3().unwrap();
    assert_eq!(
        l3,
        ethernet::L3 {
            ethertype: ethertype::IPV4,
            offset: 22,
            vlan_id: Some(0xabc),
            tags: 2
        }
    );
    // Three tags: malformed; a cut tag: truncated.
    let mut three = f[..12].to_vec();
    three.extend_from_slice(&[0x88, 0xa8, 0, 1, 0x81, 0, 0, 2, 0x81, 0, 0, 3, 0x08, 0]);
    assert_eq!(
        ethernet::Frame::new_checked(&three[..]).unwrap().l3(),
        Err(Error::Malformed)
    );
    assert_eq!(
        ethernet::Frame::new_checked(&q[..16]).unwrap().l3(),
        Err(Error::Truncated)
    );
    assert_eq!(
        ethernet::Frame::new_checked(&q[..13]).unwrap_err(),
        Error::Truncated
    );
}

#[test]
fn arp_request_becomes_reply() {
    let (cmac, vmac) = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 0x99]);
    let mut b = vec![0, 1, 8, 0, 6, 4, 0, 1];
    b.extend_from_slice(&cmac);
    b.extend_from_slice(&[10, 0, 0, 1]);
    b.extend_from_slice(&[0; 6]);
    b.extend_from_slice(&[192, 0, 2, 10]);
    let mut a = arp::Packet::new_checked(&mut b[..]).unwrap();
    assert_eq!(a.operation(), arp::OP_REQUEST);
    a.make_reply(vmac);
    assert_eq!(a.operation(), arp::OP_REPLY);
    assert_eq!(
        (a.sender_hw_addr(), a.sender_ip()),
        (vmac, Ipv4Addr::new(192, 0, 2, 10))
    );
    assert_eq!(
        (a.target_hw_addr(), a.target_ip()),
        (cmac, Ipv4Addr::new(10, 0, 0, 1))
    );
    b[4] = 8; // hardware length 8: not Ethernet
    assert_eq!(arp::Packet::new_checked(&b[..]).unwrap_err(), Error::Malformed);
    assert_eq!(arp::Packet::new_checked(&b[..27]).unwrap_err(), Error::Truncated);
}

#[test]
fn icmp_errors_quote_the_packet() {
    // Frag needed, MTU 1400, quoting a 20-byte IPv4 header + 8 bytes of TCP.
    let mut m = vec![
        icmpv4::msg_type::DEST_UNREACHABLE,
        icmpv4::CODE_FRAG_NEEDED,
        0,
        0,
        0,
        0,
        0x05,
        0x78,
    ];
    m.extend_from_slice(&ipv4_header(5, 1500, 28));
    let p = icmpv4::Packet::new_checked(&m[..]).unwrap();
    assert_eq!(p.next_hop_mtu(), 1400);
    let q = p.quoted_ipv4().unwrap();
    assert_eq!(
        (q.src_addr(), q.protocol(), q.payload().len()),
        (Ipv4Addr::new(10, 0, 0, 1), ip_proto::TCP, 8)
    );
    let mut pm = icmpv4::Packet::new_checked(&mut m[..]).unwrap();
    pm.fill_checksum();
    assert!(pm.verify_checksum());

    // ICMPv6 packet too big quoting an IPv6 header.
    let mut m6 = vec![icmpv6::msg_type::PACKET_TOO_BIG, 0, 0, 0, 0, 0, 0x05, 0x00];
    m6.extend_from_slice(&ipv6_packet(ip_proto::TCP, &[0; 8])[..48]);
    let p6 = icmpv6::Packet::new_checked(&m6[..]).unwrap();
    assert_eq!(p6.mtu(), 1280);
    assert_eq!(p6.quoted_ipv6().unwrap().next_header(), ip_proto::TCP);
    assert!(p6.target_addr().is_none());
    // Echo is not an error.
    let echo = [icmpv6::msg_type::ECHO_REQUEST, 0, 0, 0, 0, 1, 0, 2];
    assert_eq!(
        icmpv6::Packet::new_checked(&echo[..])
            .unwrap()
            .quoted_ipv6()
            .unwrap_err(),
        Error::Malformed
    );
}

#[test]
fn ndp_solicitation_and_options() {
    let target: Ipv6Addr = "2001:db8::aa".parse().unwrap();
    let mut ns = vec![icmpv6::msg_type::NEIGHBOR_SOLICIT, 0, 0, 0, 0, 0, 0, 0];
    ns.extend_from_slice(&target.octets());
    assert_eq!(
        icmpv6::Packet::new_checked(&ns[..23]).unwrap_err(),
        Error::Truncated,
        "NS needs its target"
    );
    ns.extend_from_slice(&[14, 1, 0, 0, 0, 0, 0, 0]); // nonce-like unknown option
    ns.extend_from_slice(&[icmpv6::OPT_SOURCE_LL, 1, 2, 0, 0, 0, 0, 7]);
    let p = icmpv6::Packet::new_checked(&ns[..]).unwrap();
    assert_eq!(p.target_addr(), Some(target));
    assert_eq!(p.na_flags(), None);
    assert_eq!(p.link_layer_addr(), Some([2, 0, 0, 0, 0, 7]));
    // A zero-length option stops the walk.
    ns[25] = 0;
    let p = icmpv6::Packet::new_checked(&ns[..]).unwrap();
    let mut it = p.ndp_options();
    assert_eq!(it.next(), None);
    assert!(it.malformed());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    /// Every view's checked constructor on random bytes, then every accessor: no panic.
    #[test]
    fn no_accessor_panics_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
        fuzzing::poke_all(&bytes);
        fuzzing::check_frame(&bytes);
    }

    /// Random bytes behind a valid Ethernet + IPv4/IPv6 prefix reach the deeper views.
    #[test]
    fn no_accessor_panics_behind_ip(v6: bool, proto in prop_oneof![Just(6u8), Just(17), Just(1), Just(58), Just(0), Just(44), Just(60)],
                                    body in proptest::collection::vec(any::<u8>(), 0..100)) {
        let mut f = vec![0u8; 12];
        if v6 {
            f.extend_from_slice(&ethertype::IPV6.to_be_bytes());
            f.extend_from_slice(&ipv6_packet(proto, &body));
        } else {
            f.extend_from_slice(&ethertype::IPV4.to_be_bytes());
            let mut ip = ipv4_header(5, 20 + body.len() as u16, 20);
            ip[9] = proto;
            ip.extend_from_slice(&body);
            f.extend_from_slice(&ip);
        }
        let cov = fuzzing::check_frame(&f);
        let want = if v6 { fuzzing::REACHED_IPV6 } else { fuzzing::REACHED_IPV4 };
        prop_assert!(cov.has(want));
    }
}
