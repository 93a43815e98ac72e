//! The `wire` views against an independent oracle: frames built by etherparse must read the
//! same through our views, and frames rewritten through our setters and RFC 1624 incremental
//! checksum updates must be accepted by etherparse's own checksum computation.

use std::net::{Ipv4Addr, Ipv6Addr};

use etherparse::{
    IpNumber, NetHeaders, PacketBuilder, PacketHeaders, PayloadSlice, SlicedPacket, TcpOptionElement,
    TransportHeader, VlanId,
};
use lvs_dataplane::wire::{checksum, ethernet, ethertype, icmpv4, icmpv6, ip_proto, ipv4, ipv6, tcp, udp};
use proptest::prelude::*;

const CMAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0c];
const DMAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0d];

/// The L3 offset our Ethernet view finds, checked against the tag count.
fn l3(frame: &[u8], tags: u8) -> ethernet::L3 {
    let f = ethernet::Frame::new_checked(frame).expect("frame");
    assert_eq!((f.src_addr(), f.dst_addr()), (CMAC, DMAC));
    let l3 = f.l3().expect("l3");
    assert_eq!(l3.tags, tags);
    l3
}

/// etherparse's verdict on every checksum of a frame: (IPv4 header ok, L4 ok).
fn etherparse_checksums_ok(frame: &[u8]) -> (bool, bool) {
    let h = PacketHeaders::from_ethernet_slice(frame).expect("etherparse parses the frame");
    let ip_ok = match &h.net {
        Some(NetHeaders::Ipv4(ip, _)) => ip.calc_header_checksum() == ip.header_checksum,
        _ => true,
    };
    let l4_ok = match (&h.net, &h.transport, &h.payload) {
        (Some(NetHeaders::Ipv4(ip, _)), Some(TransportHeader::Tcp(t)), PayloadSlice::Tcp(p)) => {
            t.calc_checksum_ipv4(ip, p).unwrap() == t.checksum
        }
        (Some(NetHeaders::Ipv6(ip, _)), Some(TransportHeader::Tcp(t)), PayloadSlice::Tcp(p)) => {
            t.calc_checksum_ipv6(ip, p).unwrap() == t.checksum
        }
        (Some(NetHeaders::Ipv4(ip, _)), Some(TransportHeader::Udp(u)), PayloadSlice::Udp(p)) => {
            u.checksum == 0 || u.calc_checksum_ipv4(ip, p).unwrap() == u.checksum
        }
        (Some(NetHeaders::Ipv6(ip, _)), Some(TransportHeader::Udp(u)), PayloadSlice::Udp(p)) => {
            u.calc_checksum_ipv6(ip, p).unwrap() == u.checksum
        }
        (_, Some(TransportHeader::Icmpv4(i)), PayloadSlice::Icmpv4(p)) => {
            i.icmp_type.calc_checksum(p) == i.checksum
        }
        (Some(NetHeaders::Ipv6(ip, _)), Some(TransportHeader::Icmpv6(i)), PayloadSlice::Icmpv6(p)) => {
            i.icmp_type.calc_checksum(ip.source, ip.destination, p).unwrap() == i.checksum
        }
        _ => panic!("unexpected etherparse parse: {:?}", h.transport),
    };
    (ip_ok, l4_ok)
}

#[allow(clippy::too_many_arguments)]
fn build_tcp4(
    vlan: u8,
    ttl: u8,
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    win: u16,
    payload: &[u8],
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(CMAC, DMAC);
    let opts = [
        TcpOptionElement::MaximumSegmentSize(1460),
        TcpOptionElement::WindowScale(7),
        TcpOptionElement::SelectiveAcknowledgementPermitted,
        TcpOptionElement::Timestamp(seq, ack),
    ];
    let src = [10, 1, (sport >> 8) as u8, sport as u8];
    let dst = [192, 0, 2, 10];
    let mut out = Vec::new();
    match vlan {
        0 => {
            let p = b
                .ipv4(src, dst, ttl)
                .tcp(sport, dport, seq, win)
                .ack(ack)
                .psh()
                .options(&opts)
                .unwrap();
            p.write(&mut out, payload).unwrap();
        }
        1 => {
            let p = b
                .single_vlan(VlanId::try_new(100).unwrap())
                .ipv4(src, dst, ttl)
                .tcp(sport, dport, seq, win)
                .ack(ack)
                .psh()
                .options(&opts)
                .unwrap();
            p.write(&mut out, payload).unwrap();
        }
        _ => {
            let p = b
                .double_vlan(VlanId::try_new(7).unwrap(), VlanId::try_new(300).unwrap())
                .ipv4(src, dst, ttl)
                .tcp(sport, dport, seq, win)
                .ack(ack)
                .psh()
                .options(&opts)
                .unwrap();
            p.write(&mut out, payload).unwrap();
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// A TCP/IPv4 frame built by etherparse (0, 1 or 2 VLAN tags) reads the same through our
    /// views; a NAT-style rewrite (dst addr + dst port, TTL decrement) with incremental updates
    /// leaves checksums etherparse accepts.
    #[test]
    fn tcp4_matches_etherparse(vlan in 0u8..3, ttl in 2u8.., sport: u16, dport: u16, seq: u32, ack: u32, win: u16,
                               payload in proptest::collection::vec(any::<u8>(), 0..200),
                               new_dst: u32, new_dport: u16) {
        let mut frame = build_tcp4(vlan, ttl, sport, dport, seq, ack, win, &payload);
        let l3 = l3(&frame, vlan);
        prop_assert_eq!(l3.ethertype, ethertype::IPV4);
        prop_assert_eq!(l3.vlan_id, match vlan { 0 => None, 1 => Some(100), _ => Some(300) });
        let ep = SlicedPacket::from_ethernet(&frame).unwrap();
        let Some(etherparse::NetSlice::Ipv4(ep4)) = &ep.net else { panic!("not ipv4") };
        let Some(etherparse::TransportSlice::Tcp(ept)) = &ep.transport else { panic!("not tcp") };

        let ip = ipv4::Packet::new_checked(&frame[l3.offset..]).unwrap();
        prop_assert_eq!(ip.src_addr(), ep4.header().source_addr());
        prop_assert_eq!(ip.dst_addr(), ep4.header().destination_addr());
        prop_assert_eq!(ip.ttl(), ttl);
        prop_assert_eq!(ip.protocol(), ip_proto::TCP);
        prop_assert_eq!(ip.total_len(), ep4.header().total_len());
        prop_assert_eq!(ip.ident(), ep4.header().identification());
        prop_assert_eq!(ip.dont_frag(), ep4.header().dont_fragment());
        prop_assert!(ip.verify_checksum());
        let t = tcp::Packet::new_checked(ip.payload()).unwrap();
        prop_assert!(t.verify_checksum_v4(ip.src_addr(), ip.dst_addr()));
        prop_assert_eq!((t.src_port(), t.dst_port()), (sport, dport));
        prop_assert_eq!((t.seq_number(), t.ack_number(), t.window_len()), (seq, ack, win));
        prop_assert_eq!(t.header_len(), ept.header_len());
        prop_assert_eq!(t.checksum(), ept.checksum());
        prop_assert_eq!(t.flags(), tcp::flags::ACK | tcp::flags::PSH);
        prop_assert_eq!(t.payload(), ept.payload());
        let opts: Vec<_> = t.option_iter().collect();
        prop_assert_eq!(opts, vec![
            tcp::TcpOption::Mss(1460), tcp::TcpOption::WindowScale(7), tcp::TcpOption::SackPermitted,
            tcp::TcpOption::Timestamps(seq, ack)]);

        // Rewrite like NAT does: IP dst (header + pseudo-header), TCP dst port, TTL.
        let new_dst = Ipv4Addr::from(new_dst);
        let (off, hl) = (l3.offset, ip.header_len());
        let old_dst = ip.dst_addr();
        let mut ipm = ipv4::Packet::new_checked(&mut frame[off..]).unwrap();
        ipm.set_dst_addr_update(new_dst);
        ipm.decrement_ttl();
        let mut tm = tcp::Packet::new_checked(&mut frame[off + hl..]).unwrap();
        tm.set_dst_port_update(new_dport);
        let c = checksum::update_ipv4(tm.checksum(), old_dst, new_dst);
        tm.set_checksum(c);
        prop_assert_eq!(etherparse_checksums_ok(&frame), (true, true));
        let h = PacketHeaders::from_ethernet_slice(&frame).unwrap();
        let Some(NetHeaders::Ipv4(ip4, _)) = h.net else { panic!() };
        prop_assert_eq!(Ipv4Addr::from(ip4.destination), new_dst);
        prop_assert_eq!(ip4.time_to_live, ttl - 1);
    }

    /// UDP over IPv4 and IPv6: fields and checksums agree with etherparse; a rewrite of the
    /// source (address and port) with incremental updates is accepted by etherparse.
    #[test]
    fn udp_matches_etherparse(v6: bool, sport: u16, dport: u16, payload in proptest::collection::vec(any::<u8>(), 0..300),
                              new_src: u128, new_sport: u16) {
        let mut frame = Vec::new();
        if v6 {
            let src = Ipv6Addr::from(0x2001_0db8_u128 << 96 | sport as u128).octets();
            let dst = Ipv6Addr::from(0x2001_0db8_u128 << 96 | 0xaa).octets();
            PacketBuilder::ethernet2(CMAC, DMAC).ipv6(src, dst, 64).udp(sport, dport).write(&mut frame, &payload).unwrap();
        } else {
            PacketBuilder::ethernet2(CMAC, DMAC).ipv4([10, 0, 0, 1], [192, 0, 2, 1], 64).udp(sport, dport).write(&mut frame, &payload).unwrap();
        }
        let l3 = l3(&frame, 0);
        let ep = SlicedPacket::from_ethernet(&frame).unwrap();
        let Some(etherparse::TransportSlice::Udp(epu)) = &ep.transport else { panic!("not udp") };
        if v6 {
            let ip = ipv6::Packet::new_checked(&frame[l3.offset..]).unwrap();
            let ul = ip.upper_layer().unwrap();
            prop_assert_eq!((ul.protocol, ul.offset, ul.fragment), (ip_proto::UDP, 40, None));
            let u = udp::Packet::new_checked(&frame[l3.offset + 40..]).unwrap();
            prop_assert!(u.verify_checksum_v6(&ip.src_addr(), &ip.dst_addr()));
            prop_assert_eq!((u.src_port(), u.dst_port(), u.len(), u.checksum()), (sport, dport, epu.length(), epu.checksum()));
            prop_assert_eq!(u.payload(), epu.payload());
            let new_src = Ipv6Addr::from(new_src);
            let old_src = ip.src_addr();
            ipv6::Packet::new_checked(&mut frame[l3.offset..]).unwrap().set_src_addr(&new_src);
            let mut um = udp::Packet::new_checked(&mut frame[l3.offset + 40..]).unwrap();
            um.set_src_port_update(new_sport);
            let c = checksum::update_udp_ipv6(um.checksum(), &old_src, &new_src);
            um.set_checksum(c);
        } else {
            let ip = ipv4::Packet::new_checked(&frame[l3.offset..]).unwrap();
            let u = udp::Packet::new_checked(ip.payload()).unwrap();
            prop_assert!(u.verify_checksum_v4(ip.src_addr(), ip.dst_addr()));
            prop_assert_eq!((u.src_port(), u.dst_port(), u.len(), u.checksum()), (sport, dport, epu.length(), epu.checksum()));
            prop_assert_eq!(u.payload(), epu.payload());
            let new_src = Ipv4Addr::from(new_src as u32);
            let old_src = ip.src_addr();
            let mut ipm = ipv4::Packet::new_checked(&mut frame[l3.offset..]).unwrap();
            ipm.set_src_addr_update(new_src);
            let mut um = udp::Packet::new_checked(&mut frame[l3.offset + 20..]).unwrap();
            um.set_src_port_update(new_sport);
            let c = checksum::update_udp_u32(um.checksum(), old_src.into(), new_src.into());
            um.set_checksum(c);
            prop_assert_ne!(um.checksum(), 0);
        }
        prop_assert_eq!(etherparse_checksums_ok(&frame), (true, true));
    }

    /// ICMP echo over IPv4 and ICMPv6 echo: type, id, seq and checksum agree with etherparse;
    /// an id rewrite with an incremental update stays valid.
    #[test]
    fn icmp_echo_matches_etherparse(v6: bool, id: u16, seq: u16, new_id: u16, payload in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut frame = Vec::new();
        let s6 = Ipv6Addr::from(0x2001_0db8_u128 << 96 | 1);
        let d6 = Ipv6Addr::from(0x2001_0db8_u128 << 96 | 2);
        if v6 {
            PacketBuilder::ethernet2(CMAC, DMAC).ipv6(s6.octets(), d6.octets(), 64).icmpv6_echo_request(id, seq).write(&mut frame, &payload).unwrap();
        } else {
            PacketBuilder::ethernet2(CMAC, DMAC).ipv4([10, 0, 0, 1], [192, 0, 2, 1], 64).icmpv4_echo_request(id, seq).write(&mut frame, &payload).unwrap();
        }
        let off = if v6 { 14 + 40 } else { 14 + 20 };
        if v6 {
            let m = icmpv6::Packet::new_checked(&frame[off..]).unwrap();
            prop_assert_eq!((m.msg_type(), m.code(), m.echo_ident(), m.echo_seq()), (icmpv6::msg_type::ECHO_REQUEST, 0, id, seq));
            prop_assert!(m.verify_checksum(&s6, &d6));
            prop_assert!(m.target_addr().is_none());
            let mut mm = icmpv6::Packet::new_checked(&mut frame[off..]).unwrap();
            mm.set_echo_ident(new_id);
            let c = checksum::update_u16(mm.checksum(), id, new_id);
            mm.set_checksum(c);
        } else {
            let m = icmpv4::Packet::new_checked(&frame[off..]).unwrap();
            prop_assert_eq!((m.msg_type(), m.code(), m.echo_ident(), m.echo_seq()), (icmpv4::msg_type::ECHO_REQUEST, 0, id, seq));
            prop_assert!(m.verify_checksum());
            prop_assert!(m.quoted_ipv4().is_err());
            let mut mm = icmpv4::Packet::new_checked(&mut frame[off..]).unwrap();
            mm.set_echo_ident(new_id);
            let c = checksum::update_u16(mm.checksum(), id, new_id);
            mm.set_checksum(c);
        }
        prop_assert_eq!(etherparse_checksums_ok(&frame), (true, true));
    }
}

/// An IPv6 extension chain (hop-by-hop, routing, destination options, first fragment) before
/// UDP: our walker finds the same upper layer at the same place as etherparse.
#[test]
fn ipv6_ext_chain_matches_etherparse() {
    let udp_seg = {
        let mut u = vec![0x13, 0x88, 0x00, 0x35, 0, 12, 0, 0, b'l', b'v', b's', b'!'];
        let (s, d) = (Ipv6Addr::LOCALHOST, Ipv6Addr::LOCALHOST);
        udp::Packet::new_checked(&mut u[..])
            .unwrap()
            .fill_checksum_v6(&s, &d);
        u
    };
    let mut chain = Vec::new();
    chain.extend_from_slice(&[ip_proto::ROUTING, 0, 1, 4, 0, 0, 0, 0]); // hop-by-hop, PadN
    chain.extend_from_slice(&[ip_proto::DSTOPTS, 2, 4, 0, 0, 0, 0, 0]); // routing type 4, segs 0
    chain.extend_from_slice(&[0; 16]); // (hdr ext len 2 = 24 bytes)
    chain.extend_from_slice(&[ip_proto::FRAGMENT, 0, 1, 4, 0, 0, 0, 0]); // destination options
    chain.extend_from_slice(&[ip_proto::UDP, 0, 0, 1, 0, 0, 0x12, 0x34]); // fragment: offset 0, MF
    let ul_at = chain.len();
    chain.extend_from_slice(&udp_seg);
    let mut pkt = vec![0x60, 0, 0, 0, 0, chain.len() as u8, ip_proto::HOPOPT, 64];
    pkt.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
    pkt.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
    pkt.extend_from_slice(&chain);

    let ip = ipv6::Packet::new_checked(&pkt[..]).unwrap();
    let ul = ip.upper_layer().unwrap();
    assert_eq!(ul.protocol, ip_proto::UDP);
    assert_eq!(ul.offset, 40 + ul_at);
    assert_eq!(
        ul.fragment,
        Some(ipv6::Fragment {
            offset: 0,
            more: true,
            ident: 0x1234
        })
    );

    let ep = etherparse::Ipv6Slice::from_slice(&pkt).unwrap();
    let p = ep.payload();
    assert_eq!(p.ip_number, IpNumber::UDP);
    assert!(p.fragmented);
    assert_eq!(p.payload.as_ptr() as usize - pkt.as_ptr() as usize, ul.offset);
}

/// Our emitted neighbor advertisement is what etherparse calls a valid ICMPv6 message, and our
/// view reads back target, flags and the target link-layer option.
#[test]
fn neighbor_advert_round_trip_with_etherparse_checksum() {
    let target: Ipv6Addr = "2001:db8::aa".parse().unwrap();
    let dst: Ipv6Addr = "2001:db8::1".parse().unwrap();
    let mut buf = [0u8; 64];
    let n = icmpv6::emit_neighbor_advert(
        &mut buf,
        &target,
        DMAC,
        icmpv6::NA_SOLICITED | icmpv6::NA_OVERRIDE,
        &target,
        &dst,
    )
    .unwrap();
    let m = icmpv6::Packet::new_checked(&buf[..n]).unwrap();
    assert_eq!(m.msg_type(), icmpv6::msg_type::NEIGHBOR_ADVERT);
    assert_eq!(m.target_addr(), Some(target));
    assert_eq!(m.na_flags(), Some(0x60));
    assert_eq!(m.link_layer_addr(), Some(DMAC));
    assert!(m.verify_checksum(&target, &dst));
    let ty = etherparse::Icmpv6Type::Unknown {
        type_u8: buf[0],
        code_u8: buf[1],
        bytes5to8: [buf[4], buf[5], buf[6], buf[7]],
    };
    assert_eq!(
        ty.calc_checksum(target.octets(), dst.octets(), &buf[8..n])
            .unwrap(),
        m.checksum()
    );
    assert_eq!(
        icmpv6::emit_neighbor_advert(&mut buf[..31], &target, DMAC, 0, &target, &dst),
        Err(lvs_dataplane::wire::Error::Truncated)
    );
}

/// Inserting a TOA option (kind 254) into an etherparse-built SYN, then fixing lengths and
/// checksums by full recompute, gives a segment etherparse parses with the longer header and
/// the same payload and options after it.
#[test]
fn toa_insertion_is_parsed_by_etherparse() {
    let frame = build_tcp4(0, 64, 40000, 80, 1, 2, 1000, b"hello");
    let mut buf = frame.clone();
    buf.extend_from_slice(&[0; 8]);
    let seg_len = frame.len() - 34;
    let toa = [254, 8, 0x9c, 0x40, 10, 1, 0x9c, 0x40];
    let n = tcp::insert_option(&mut buf[34..], seg_len, &toa).unwrap();
    assert_eq!(n, seg_len + 8);
    let mut ip = ipv4::Packet::new_unchecked(&mut buf[14..]);
    ip.set_total_len((20 + n) as u16);
    ip.fill_checksum();
    let (s, d) = (ip.src_addr(), ip.dst_addr());
    tcp::Packet::new_checked(&mut buf[34..])
        .unwrap()
        .fill_checksum_v4(s, d);
    assert_eq!(etherparse_checksums_ok(&buf), (true, true));
    let ep = SlicedPacket::from_ethernet(&buf).unwrap();
    let Some(etherparse::TransportSlice::Tcp(t)) = &ep.transport else {
        panic!()
    };
    assert_eq!(t.header_len(), 20 + 20 + 8);
    assert_eq!(t.payload(), b"hello");
    assert_eq!(&t.options()[..8], &toa);
    let ours = tcp::Packet::new_checked(&buf[34..]).unwrap();
    assert_eq!(
        ours.option_iter().next(),
        Some(tcp::TcpOption::Other {
            kind: 254,
            data: &toa[2..]
        })
    );
    assert_eq!(ours.option_iter().count(), 5);
    assert_eq!(ours.free_option_space(), 12);
}
