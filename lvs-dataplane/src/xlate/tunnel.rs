//! TUN forwarding: IP-in-IP encapsulation (IPv4 in IPv4, IPv6 in IPv6) with the director's
//! address as outer source and the real server's as outer destination, as the kernel's
//! `ip_vs_tunnel_xmit` builds it (inner TTL/hop limit and DF copied outward).

use std::net::{IpAddr, Ipv4Addr};

use super::IpInfo;
use crate::io::FrameBuf;
use crate::wire::{ethernet, ip_proto, ipv4, ipv6};

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
/// options, as [`super::parse_fast4`] accepts it), with the outer Ethernet addresses
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
/// not apply. Works on one fixed 54-byte window of the buffer (the 20 bytes of headroom the
/// outer header takes, then the Ethernet and inner IPv4 headers): one bounds check.
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
    // Offsets in the window: the old Ethernet header, then the inner IPv4 header.
    const ETH: usize = HDR;
    const IN: usize = HDR + L3;
    if ttl <= 1 || end < L3 + HDR || end > fb.len() {
        return false;
    }
    {
        let (buf, head) = fb.raw_mut();
        let Some(Ok(w)) = head
            .checked_sub(HDR)
            .and_then(|at| buf.get_mut(at..at + IN + HDR))
            .map(<&mut [u8; IN + HDR]>::try_from)
        else {
            return false;
        };
        let (front, inner) = w.split_at_mut(IN);
        let Ok(inner) = <&mut [u8; HDR]>::try_from(inner) else {
            return false;
        };
        if front[ETH + 12..ETH + L3] != [0x08, 0x00] || inner[0] != 0x45 || inner[8] != ttl {
            return false;
        }
        // The outer header goes over the old Ethernet header's place.
        let Ok(outer) = <&mut [u8; HDR]>::try_from(&mut front[L3..]) else {
            return false;
        };
        // TTL - 1: the TTL/protocol word's change is 0xfeff (see `forward_v4`).
        inner[8] = ttl - 1;
        let c = super::apply_delta(u16::from_be_bytes([inner[10], inner[11]]), 0xfeff);
        inner[10..12].copy_from_slice(&c.to_be_bytes());
        write_outer_v4(outer, inner, end - L3 + HDR, ident, src, dst);
        // Ethernet: the next hop's addresses and the (IPv4) ethertype the moved header had.
        front[..12].copy_from_slice(macs);
        front[12..L3].copy_from_slice(&[0x08, 0x00]);
    }
    // Ethernet padding goes; the frame starts at the outer Ethernet header.
    fb.set_len(end);
    fb.push_front(HDR);
    true
}

/// The outer IPv4 header of an IPIP packet, checksum included: version 4, IHL 5, the inner
/// header `i`'s TOS, DF bit and TTL, `total_len` bytes, identification `ident`, protocol
/// IPIP, `src` → `dst`.
#[inline]
fn outer_v4(i: &[u8], total_len: usize, ident: u16, src: Ipv4Addr, dst: Ipv4Addr) -> [u8; 20] {
    let mut o = [0u8; 20];
    write_outer_v4(&mut o, i, total_len, ident, src, dst);
    o
}

/// [`outer_v4`] written in place, from 16-bit words (the checksum is their one's-complement
/// sum, as [`crate::wire::checksum::checksum20`] computes it over the finished header).
#[inline(always)]
fn write_outer_v4(o: &mut [u8; 20], i: &[u8], total_len: usize, ident: u16, src: Ipv4Addr, dst: Ipv4Addr) {
    let (tos, df, ttl) = (i[1], i[6] & 0x40, i[8]);
    let (s, d) = (u32::from(src), u32::from(dst));
    let w0 = 0x4500 | tos as u32;
    let w1 = total_len as u16 as u32;
    let w3 = (df as u32) << 8;
    let w4 = (ttl as u32) << 8 | ip_proto::IPIP as u32;
    // Nine words: below 2^20, so two folds bring the sum back to 16 bits.
    let mut acc = w0 + w1 + ident as u32 + w3 + w4 + (s >> 16) + (s & 0xffff) + (d >> 16) + (d & 0xffff);
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    let c = !(acc as u16);
    o[0..4].copy_from_slice(&(w0 << 16 | w1).to_be_bytes());
    o[4..8].copy_from_slice(&((ident as u32) << 16 | w3).to_be_bytes());
    o[8..12].copy_from_slice(&(w4 << 16 | c as u32).to_be_bytes());
    o[12..16].copy_from_slice(&s.to_be_bytes());
    o[16..20].copy_from_slice(&d.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::checksum;
    use proptest::prelude::*;

    proptest! {
        /// The outer header built from words has the fields of the inner header it copies
        /// and a checksum that verifies (what the full computation over its bytes gives).
        #[test]
        fn outer_header_fields_and_checksum(
            inner in any::<[u8; 20]>(), len in 20usize..=65535, ident in any::<u16>(),
            s in any::<u32>(), d in any::<u32>(),
        ) {
            let o = outer_v4(&inner, len, ident, Ipv4Addr::from(s), Ipv4Addr::from(d));
            let mut zeroed = o;
            zeroed[10..12].copy_from_slice(&[0, 0]);
            prop_assert_eq!(u16::from_be_bytes([o[10], o[11]]), checksum::checksum20(&zeroed));
            prop_assert_eq!(checksum::checksum(&o), 0);
            prop_assert_eq!(&o[..2], &[0x45, inner[1]]);
            prop_assert_eq!(u16::from_be_bytes([o[2], o[3]]) as usize, len);
            prop_assert_eq!(u16::from_be_bytes([o[4], o[5]]), ident);
            prop_assert_eq!(&o[6..10], &[inner[6] & 0x40, 0, inner[8], ip_proto::IPIP]);
            prop_assert_eq!(&o[12..16], &s.to_be_bytes());
            prop_assert_eq!(&o[16..20], &d.to_be_bytes());
        }
    }
}
