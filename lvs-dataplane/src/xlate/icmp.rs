//! ICMP: answering with errors the balancer itself raises (time exceeded, fragmentation
//! needed / packet too big), and translating errors that quote a tracked connection so they
//! reach the right side with the addresses that side knows.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{End, IpInfo};
use crate::io::FrameBuf;
use crate::wire::ethernet::{self, MacAddr};
use crate::wire::{checksum, icmpv4, icmpv6, ip_proto, ipv4, ipv6};

/// Largest ICMPv4 error (RFC 1812: quote as much as fits in 576 bytes).
pub const MAX_ERROR_V4: usize = 576;
/// Largest ICMPv6 error (RFC 4443: must not exceed the minimum MTU, 1280).
pub const MAX_ERROR_V6: usize = 1280;

/// Which error to raise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// TTL / hop limit exceeded in transit.
    TimeExceeded,
    /// The packet is too big for the next hop: fragmentation needed (IPv4, DF set) or packet
    /// too big (IPv6), with the MTU the sender must use.
    TooBig(u16),
    /// Port unreachable (no destination for a UDP datagram).
    PortUnreachable,
}

/// True when the packet may be answered with an ICMP error at all: not itself an ICMP
/// error, not a non-first fragment, not to or from a multicast/broadcast/unspecified address.
pub fn may_answer(frame: &[u8], ip: &IpInfo) -> bool {
    let bad_addr = |a: IpAddr| a.is_multicast() || a.is_unspecified() || a == IpAddr::V4(Ipv4Addr::BROADCAST);
    if bad_addr(ip.src) || bad_addr(ip.dst) {
        return false;
    }
    if ip.fragment && !ip.l4_present {
        return false;
    }
    match ip.proto {
        ip_proto::ICMP => frame.get(ip.l4).is_none_or(|&t| !icmpv4::is_error(t)),
        ip_proto::ICMPV6 => frame.get(ip.l4).is_none_or(|&t| !icmpv6::is_error(t) && t < 128),
        _ => true,
    }
}

/// Rewrites the frame in place into the ICMP error `kind` about the packet it holds, sent
/// from `our_addr` to the packet's source, with the Ethernet addresses swapped so it goes back
/// out of the interface it came in on (whose MAC is `our_mac`). The packet is quoted as far
/// as the size limit allows. Returns false (frame untouched) if it cannot be answered.
pub fn make_error(
    fb: &mut FrameBuf<'_>,
    ip: &IpInfo,
    kind: ErrorKind,
    our_addr: IpAddr,
    our_mac: MacAddr,
) -> bool {
    if !may_answer(fb.frame(), ip) || our_addr.is_ipv6() != ip.v6 {
        return false;
    }
    let l3 = ip.l3;
    let (hdr, limit) = if ip.v6 {
        (ipv6::field::HEADER_LEN + icmpv6::field::HEADER_LEN, MAX_ERROR_V6)
    } else {
        (ipv4::field::HEADER_LEN + icmpv4::field::HEADER_LEN, MAX_ERROR_V4)
    };
    let quote = ip.ip_len().min(limit - hdr);
    let new_len = l3 + hdr + quote;
    if l3 + hdr + quote > fb.len() + fb.tailroom() {
        return false;
    }
    let old_len = fb.len();
    if new_len > old_len && !fb.set_len(new_len) {
        return false;
    }
    let f = fb.frame_mut();
    f.copy_within(l3..l3 + quote, l3 + hdr);
    {
        let mut e = ethernet::Frame::new_unchecked(&mut f[..]);
        e.swap_addrs();
        e.set_src_addr(our_mac);
    }
    match (our_addr, ip.src) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut o = ipv4::Packet::new_unchecked(&mut f[l3..l3 + 20]);
            o.set_version_and_header_len(20);
            o.set_dscp_ecn(0, 0);
            o.set_total_len((hdr + quote) as u16);
            o.set_ident(0);
            o.set_frag(false, false, 0);
            o.set_ttl(64);
            o.set_protocol(ip_proto::ICMP);
            o.set_src_addr(s);
            o.set_dst_addr(d);
            o.fill_checksum();
            let (t, code, rest) = match kind {
                ErrorKind::TimeExceeded => (icmpv4::msg_type::TIME_EXCEEDED, 0, 0u32),
                ErrorKind::TooBig(mtu) => (
                    icmpv4::msg_type::DEST_UNREACHABLE,
                    icmpv4::CODE_FRAG_NEEDED,
                    mtu as u32,
                ),
                ErrorKind::PortUnreachable => (icmpv4::msg_type::DEST_UNREACHABLE, 3, 0),
            };
            let m = &mut f[l3 + 20..l3 + hdr + quote];
            m[0] = t;
            m[1] = code;
            m[2..4].fill(0);
            m[4..8].copy_from_slice(&rest.to_be_bytes());
            let c = checksum::checksum(m);
            m[2..4].copy_from_slice(&c.to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut o = ipv6::Packet::new_unchecked(&mut f[l3..l3 + 40]);
            o.set_version_tc_flow(0, 0);
            o.set_payload_len((icmpv6::field::HEADER_LEN + quote) as u16);
            o.set_next_header(ip_proto::ICMPV6);
            o.set_hop_limit(64);
            o.set_src_addr(&s);
            o.set_dst_addr(&d);
            let (t, code, rest) = match kind {
                ErrorKind::TimeExceeded => (icmpv6::msg_type::TIME_EXCEEDED, 0, 0u32),
                ErrorKind::TooBig(mtu) => (icmpv6::msg_type::PACKET_TOO_BIG, 0, mtu as u32),
                ErrorKind::PortUnreachable => (icmpv6::msg_type::DEST_UNREACHABLE, 4, 0),
            };
            let m = &mut f[l3 + 40..l3 + hdr + quote];
            m[0] = t;
            m[1] = code;
            m[2..4].fill(0);
            m[4..8].copy_from_slice(&rest.to_be_bytes());
            fill_icmpv6_checksum(m, &s, &d);
        }
        _ => return false,
    }
    fb.set_len(new_len);
    true
}

fn fill_icmpv6_checksum(m: &mut [u8], src: &Ipv6Addr, dst: &Ipv6Addr) {
    m[2..4].fill(0);
    let ph = checksum::pseudo_header_v6(src, dst, ip_proto::ICMPV6, m.len() as u32);
    let c = !checksum::add(ph, checksum::sum(m));
    m[2..4].copy_from_slice(&c.to_be_bytes());
}

/// The packet quoted in an ICMP error, located in the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quoted {
    /// Offset of the quoted IP header in the frame.
    pub l3: usize,
    /// IPv6.
    pub v6: bool,
    /// Offset of the quoted transport header.
    pub l4: usize,
    /// End of the quoted bytes in the frame.
    pub end: usize,
    /// Quoted protocol.
    pub proto: u8,
    /// Quoted source address and port.
    pub src: (IpAddr, u16),
    /// Quoted destination address and port.
    pub dst: (IpAddr, u16),
}

/// If the ICMP message of `outer` is an error the balancer translates (destination
/// unreachable, time exceeded, packet too big, parameter problem) quoting a TCP, UDP or SCTP
/// packet with its ports, locates the quoted packet.
pub fn parse_error(frame: &[u8], outer: &IpInfo) -> Option<Quoted> {
    let icmp = frame.get(outer.l4..outer.end)?;
    let ql3 = outer.l4 + 8;
    let (v6, proto, src, dst, ql4) = if outer.v6 {
        let p = icmpv6::Packet::new_checked(icmp).ok()?;
        if !icmpv6::is_error(p.msg_type()) {
            return None;
        }
        let q = p.quoted_ipv6().ok()?;
        let ul = q.upper_layer().ok()?;
        if ul.fragment.is_some_and(|f| f.is_later()) {
            return None;
        }
        (
            true,
            ul.protocol,
            IpAddr::V6(q.src_addr()),
            IpAddr::V6(q.dst_addr()),
            ql3 + ul.offset,
        )
    } else {
        let p = icmpv4::Packet::new_checked(icmp).ok()?;
        if !icmpv4::is_error(p.msg_type()) {
            return None;
        }
        let q = p.quoted_ipv4().ok()?;
        if q.frag_offset() != 0 {
            return None;
        }
        (
            false,
            q.protocol(),
            IpAddr::V4(q.src_addr()),
            IpAddr::V4(q.dst_addr()),
            ql3 + q.header_len(),
        )
    };
    if !matches!(proto, ip_proto::TCP | ip_proto::UDP | super::sctp::PROTO) {
        return None;
    }
    let (sp, dp) = crate::wire::l4_ports(frame.get(ql4..outer.end)?)?;
    Some(Quoted {
        l3: ql3,
        v6,
        l4: ql4,
        end: outer.end,
        proto,
        src: (src, sp),
        dst: (dst, dp),
    })
}

/// Rewrites one end of the quoted packet (address with the quoted IPv4 header checksum
/// updated; port). The quoted transport checksum is left as it is, as the kernel does; the
/// ICMP checksum is fixed by [`finish_translation`].
pub fn rewrite_quoted(frame: &mut [u8], q: &mut Quoted, end: End, addr: IpAddr, port: u16) {
    let (old, slot) = match end {
        End::Src => (q.src, &mut q.src),
        End::Dst => (q.dst, &mut q.dst),
    };
    match (old.0, addr) {
        (IpAddr::V4(_), IpAddr::V4(n)) if !q.v6 => {
            let hl = ((frame[q.l3] & 0x0f) as usize) * 4;
            let mut p = ipv4::Packet::new_unchecked(&mut frame[q.l3..q.l3 + hl]);
            match end {
                End::Src => p.set_src_addr_update(n),
                End::Dst => p.set_dst_addr_update(n),
            }
        }
        (IpAddr::V6(_), IpAddr::V6(n)) if q.v6 => {
            let at = q.l3
                + if end == End::Src {
                    ipv6::field::SRC
                } else {
                    ipv6::field::DST
                };
            frame[at..at + 16].copy_from_slice(&n.octets());
        }
        _ => return,
    }
    let off = q.l4 + if end == End::Src { 0 } else { 2 };
    if off + 2 <= q.end {
        frame[off..off + 2].copy_from_slice(&port.to_be_bytes());
    }
    *slot = (addr, port);
}

/// Recomputes the ICMP checksum of the (translated) message after its addresses changed.
pub fn finish_translation(frame: &mut [u8], outer: &IpInfo) {
    let m = &mut frame[outer.l4..outer.end];
    match (outer.src, outer.dst) {
        (IpAddr::V6(s), IpAddr::V6(d)) => fill_icmpv6_checksum(m, &s, &d),
        _ => {
            m[2..4].fill(0);
            let c = checksum::checksum(m);
            m[2..4].copy_from_slice(&c.to_be_bytes());
        }
    }
}
