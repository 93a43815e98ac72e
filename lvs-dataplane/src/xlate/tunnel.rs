//! TUN forwarding: IP-in-IP encapsulation (IPv4 in IPv4, IPv6 in IPv6) with the director's
//! address as outer source and the real server's as outer destination, as the kernel's
//! `ip_vs_tunnel_xmit` builds it (inner TTL/hop limit and DF copied outward).

use std::net::{IpAddr, Ipv4Addr};

use super::IpInfo;
use crate::io::FrameBuf;
use crate::wire::{checksum, ethernet, ip_proto, ipv4, ipv6};

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
    if l3 == ethernet::field::HEADER_LEN {
        // The untagged case in fixed-size moves.
        let (front, rest) = f.split_at_mut(hdr);
        front[..ethernet::field::HEADER_LEN].copy_from_slice(&rest[..ethernet::field::HEADER_LEN]);
    } else {
        f.copy_within(hdr..hdr + l3, 0);
    }
    let inner = l3 + hdr;
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let (outer, rest) = f[l3..].split_at_mut(hdr);
            // Always there: `outer` is the 20 bytes pushed, `rest` the inner packet (whose
            // header was checked at parse time).
            let (Ok(o), Some(i)) = (
                <&mut [u8; 20]>::try_from(outer),
                rest.get(..ipv4::field::HEADER_LEN),
            ) else {
                return false;
            };
            *o = outer_v4(i, inner_len + hdr, ident, s, d);
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

/// TTL decrement and [`encapsulate`] in one pass for the common IPv4 frame (untagged, no IP
/// options, as [`super::parse_fast_v4`] accepts it), with the outer Ethernet addresses
/// `macs` (destination then source) written in place of the moved Ethernet header: the same
/// bytes as `decrement_ttl`, `encapsulate` and setting the MACs. False (frame untouched)
/// when it does not apply: another layout, a TTL of 1 or less, a short frame or no headroom.
pub fn forward_ipip_v4(
    fb: &mut FrameBuf<'_>,
    ip: &mut IpInfo,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ident: u16,
    macs: &[u8; 12],
) -> bool {
    if ip.v6 || ip.l3 != ethernet::field::HEADER_LEN {
        return false;
    }
    if !forward_ipip_fast4(fb, ip.end, ip.ttl, src, dst, ident, macs) {
        return false;
    }
    ip.ttl -= 1;
    true
}

/// [`forward_ipip_v4`] for a frame [`super::parse_fast4`] read (IPv4 header at 14, the
/// packet ending at `end`, TTL `ttl`): the same bytes. False (frame untouched) when it does
/// not apply.
#[inline(always)]
pub fn forward_ipip_fast4(
    fb: &mut FrameBuf<'_>,
    end: usize,
    ttl: u8,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ident: u16,
    macs: &[u8; 12],
) -> bool {
    const L3: usize = ethernet::field::HEADER_LEN;
    const HDR: usize = ipv4::field::HEADER_LEN;
    if ttl <= 1 || end < L3 + HDR || end > fb.len() || fb.head() < HDR {
        return false;
    }
    {
        let Some(Ok(h)) = fb
            .frame_mut()
            .get_mut(..L3 + HDR)
            .map(<&mut [u8; L3 + HDR]>::try_from)
        else {
            return false;
        };
        if h[12..L3] != [0x08, 0x00] || h[L3] != 0x45 || h[L3 + 8] != ttl {
            return false;
        }
        // TTL - 1: the TTL/protocol word's change is 0xfeff (see `forward_v4`).
        h[L3 + 8] -= 1;
        let c = super::apply_delta(u16::from_be_bytes([h[L3 + 10], h[L3 + 11]]), 0xfeff);
        h[L3 + 10..L3 + 12].copy_from_slice(&c.to_be_bytes());
    }
    // Ethernet padding goes.
    fb.set_len(end);
    let inner_len = end - L3;
    fb.push_front(HDR);
    let f = fb.frame_mut();
    let (front, inner) = f.split_at_mut(L3 + HDR);
    let Some(i) = inner.get(..HDR) else {
        return false;
    };
    // Ethernet: the next hop's addresses and the (IPv4) ethertype the moved header had.
    front[..12].copy_from_slice(macs);
    front[12..L3].copy_from_slice(&[0x08, 0x00]);
    front[L3..].copy_from_slice(&outer_v4(i, inner_len + HDR, ident, src, dst));
    true
}

/// The outer IPv4 header of an IPIP packet, checksum included: version 4, IHL 5, the inner
/// header `i`'s TOS, DF bit and TTL, `total_len` bytes, identification `ident`, protocol
/// IPIP, `src` → `dst`.
#[inline]
fn outer_v4(i: &[u8], total_len: usize, ident: u16, src: Ipv4Addr, dst: Ipv4Addr) -> [u8; 20] {
    let [tl0, tl1] = (total_len as u16).to_be_bytes();
    let [id0, id1] = ident.to_be_bytes();
    let [s0, s1, s2, s3] = src.octets();
    let [d0, d1, d2, d3] = dst.octets();
    let mut o = [
        0x45,
        i[1],
        tl0,
        tl1,
        id0,
        id1,
        i[6] & 0x40,
        0,
        i[8],
        ip_proto::IPIP,
        0,
        0,
        s0,
        s1,
        s2,
        s3,
        d0,
        d1,
        d2,
        d3,
    ];
    let c = checksum::checksum20(&o);
    o[10..12].copy_from_slice(&c.to_be_bytes());
    o
}
