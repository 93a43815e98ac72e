//! TUN forwarding: IP-in-IP encapsulation (IPv4 in IPv4, IPv6 in IPv6) with the director's
//! address as outer source and the real server's as outer destination, as the kernel's
//! `ip_vs_tunnel_xmit` builds it (inner TTL/hop limit and DF copied outward).

use std::net::IpAddr;

use super::IpInfo;
use crate::io::FrameBuf;
use crate::wire::{ip_proto, ipv4, ipv6};

/// Bytes the outer header adds for an inner packet of this family.
pub fn overhead(v6: bool) -> usize {
    if v6 {
        ipv6::field::HEADER_LEN
    } else {
        ipv4::field::HEADER_LEN
    }
}

/// The largest inner packet that fits an egress MTU once encapsulated.
pub fn inner_mtu(egress_mtu: u16, v6: bool) -> u16 {
    egress_mtu.saturating_sub(overhead(v6) as u16)
}

/// Wraps the IP packet described by `ip` (behind an Ethernet header of `ip.l3` bytes) in an
/// outer IP header `src` → `dst`, moving the Ethernet header into the headroom. Ethernet padding
/// is dropped. Returns false (frame untouched) without enough headroom or with mixed families.
pub fn encapsulate(fb: &mut FrameBuf<'_>, ip: &IpInfo, src: IpAddr, dst: IpAddr, ident: u16) -> bool {
    let hdr = overhead(ip.v6);
    if src.is_ipv6() != ip.v6 || dst.is_ipv6() != ip.v6 || ip.end > fb.len() {
        return false;
    }
    let inner_len = ip.ip_len();
    if !fb.push_front(hdr) {
        return false;
    }
    let l3 = ip.l3;
    let f = fb.frame_mut();
    // Move the Ethernet header (and VLAN tags) to the new front.
    f.copy_within(hdr..hdr + l3, 0);
    let inner = l3 + hdr;
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let (tos, df, ttl) = {
                let p = ipv4::Packet::new_unchecked(&f[inner..inner + inner_len]);
                (f[inner + 1], p.dont_frag(), p.ttl())
            };
            let mut o = ipv4::Packet::new_unchecked(&mut f[l3..l3 + hdr]);
            o.set_version_and_header_len(hdr);
            o.set_dscp_ecn(tos >> 2, tos & 3);
            o.set_total_len((inner_len + hdr) as u16);
            o.set_ident(ident);
            o.set_frag(df, false, 0);
            o.set_ttl(ttl);
            o.set_protocol(ip_proto::IPIP);
            o.set_src_addr(s);
            o.set_dst_addr(d);
            o.fill_checksum();
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let (tc, flow, hop) = {
                let p = ipv6::Packet::new_unchecked(&f[inner..inner + inner_len]);
                (p.traffic_class(), p.flow_label(), p.hop_limit())
            };
            let mut o = ipv6::Packet::new_unchecked(&mut f[l3..l3 + hdr]);
            o.set_version_tc_flow(tc, flow);
            o.set_payload_len(inner_len as u16);
            o.set_next_header(ip_proto::IPV6);
            o.set_hop_limit(hop);
            o.set_src_addr(&s);
            o.set_dst_addr(&d);
        }
        _ => unreachable!("families checked above"),
    }
    fb.set_len(l3 + hdr + inner_len);
    true
}
