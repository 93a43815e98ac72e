//! The forwarding transforms: NAT, FULLNAT, DR and TUN, their reply paths and ICMP errors.
//!
//! Everything here works in place on a frame: parse once into an [`IpInfo`] (offsets and the
//! fields the pipeline needs), then rewrite addresses, ports and TTL with incremental checksum
//! updates (RFC 1624), never a full recompute on the fast path.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::verdict::DropReason;
use crate::wire::{checksum, ip_proto, ipv4, ipv6, tcp, udp};
use lvs_core::Protocol;
use lvs_core::conn::{ConnKeyIn, ConnKeyIn4, ConnKeyOut, ConnKeyOut4};

pub mod icmp;
pub mod lip;
pub mod sctp;
pub mod tunnel;

/// Where an IP packet sits in a frame and what the pipeline needs from its headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpInfo {
    /// Offset of the IP header in the frame.
    pub l3: usize,
    /// IPv6 (else IPv4).
    pub v6: bool,
    /// Offset just past the IP packet (total length; Ethernet padding excluded).
    pub end: usize,
    /// Upper-layer protocol.
    pub proto: u8,
    /// Offset of the upper-layer header.
    pub l4: usize,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port (TCP/UDP/SCTP; 0 otherwise).
    pub sport: u16,
    /// Destination port (TCP/UDP/SCTP; 0 otherwise).
    pub dport: u16,
    /// TCP flags (0 for other protocols).
    pub tcp_flags: u8,
    /// The packet is a fragment (first or later).
    pub fragment: bool,
    /// TTL / hop limit.
    pub ttl: u8,
    /// The whole transport header is in this packet (not a later fragment, not cut short).
    pub l4_present: bool,
}

impl IpInfo {
    /// The connection-table key of this packet seen from the client side (source = client,
    /// destination = virtual service).
    #[inline]
    pub fn key_in(&self, proto: Protocol) -> ConnKeyIn {
        ConnKeyIn {
            proto,
            caddr: self.src,
            cport: self.sport,
            vaddr: self.dst,
            vport: self.dport,
        }
    }

    /// The connection-table key of this packet as a reply (source = real server,
    /// destination = client or LIP).
    #[inline]
    pub fn key_out(&self, proto: Protocol) -> ConnKeyOut {
        ConnKeyOut {
            proto,
            daddr: self.src,
            dport: self.sport,
            addr: self.dst,
            port: self.dport,
        }
    }

    /// Length of the IP packet.
    #[inline]
    pub fn ip_len(&self) -> usize {
        self.end - self.l3
    }
}

/// Parses the IP packet at `l3` of `frame` and its transport ports. Malformed headers are
/// an error; fragments and unknown protocols parse (with ports 0) for the caller to decide.
pub fn parse_ip(frame: &[u8], l3: usize, v6: bool) -> Result<IpInfo, DropReason> {
    let pkt = frame.get(l3..).ok_or(DropReason::Malformed)?;
    let (src, dst, proto, l4, end, fragment, later, ttl) = if v6 {
        let p = ipv6::Packet::new_checked(pkt).map_err(|_| DropReason::Malformed)?;
        let ul = p.upper_layer().map_err(|_| DropReason::Malformed)?;
        let later = ul.fragment.is_some_and(|f| f.is_later());
        let end = l3 + ipv6::field::HEADER_LEN + p.payload_len() as usize;
        (
            IpAddr::V6(p.src_addr()),
            IpAddr::V6(p.dst_addr()),
            ul.protocol,
            l3 + ul.offset,
            end,
            ul.fragment.is_some(),
            later,
            p.hop_limit(),
        )
    } else {
        let p = ipv4::Packet::new_checked(pkt).map_err(|_| DropReason::Malformed)?;
        (
            IpAddr::V4(p.src_addr()),
            IpAddr::V4(p.dst_addr()),
            p.protocol(),
            l3 + p.header_len(),
            l3 + p.total_len() as usize,
            p.is_fragment(),
            p.frag_offset() != 0,
            p.ttl(),
        )
    };
    let mut info = IpInfo {
        l3,
        v6,
        end,
        proto,
        l4,
        src,
        dst,
        sport: 0,
        dport: 0,
        tcp_flags: 0,
        fragment,
        ttl,
        l4_present: false,
    };
    if later || l4 > end {
        return Ok(info);
    }
    let seg = &frame[l4..end];
    match proto {
        ip_proto::TCP => {
            let t = tcp::Packet::new_checked(seg).map_err(|_| DropReason::Malformed)?;
            info.sport = t.src_port();
            info.dport = t.dst_port();
            info.tcp_flags = t.flags();
            info.l4_present = true;
        }
        ip_proto::UDP => {
            if fragment {
                let (s, d) = crate::wire::l4_ports(seg).ok_or(DropReason::Malformed)?;
                info.sport = s;
                info.dport = d;
                info.l4_present = seg.len() >= 8;
            } else {
                let u = udp::Packet::new_checked(seg).map_err(|_| DropReason::Malformed)?;
                info.sport = u.src_port();
                info.dport = u.dst_port();
                info.l4_present = true;
            }
        }
        sctp::PROTO => {
            if seg.len() < sctp::HEADER_LEN {
                return Err(DropReason::Malformed);
            }
            let (s, d) = crate::wire::l4_ports(seg).ok_or(DropReason::Malformed)?;
            info.sport = s;
            info.dport = d;
            info.l4_present = true;
        }
        ip_proto::ICMP | ip_proto::ICMPV6 => info.l4_present = seg.len() >= 8,
        _ => {}
    }
    Ok(info)
}

/// The headers of a common IPv4 frame (untagged, no IP options, not a fragment, TCP or UDP
/// with its whole header present) as [`parse_fast4`] reads them: the fields the fast paths
/// use, kept small (20 bytes) so a burst's first pass stores it and the second keeps it in
/// registers. The IP header is at [`FAST_L3`], the transport header at [`FAST_L4`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fast4 {
    /// Source address.
    pub src: u32,
    /// Destination address.
    pub dst: u32,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// IP total length (the packet ends at `FAST_L3 + total`).
    pub total: u16,
    /// [`ip_proto::TCP`] or [`ip_proto::UDP`].
    pub proto: u8,
    /// TCP flags (0 for UDP).
    pub tcp_flags: u8,
    /// TTL.
    pub ttl: u8,
}

impl Fast4 {
    /// Offset just past the IP packet (Ethernet padding excluded).
    #[inline(always)]
    pub fn end(&self) -> usize {
        FAST_L3 + self.total as usize
    }

    /// True if the packet may open a connection: a UDP datagram, or a TCP segment with SYN
    /// and without RST.
    #[inline(always)]
    pub fn may_open(&self) -> bool {
        self.proto != ip_proto::TCP || self.tcp_flags & (tcp::flags::SYN | tcp::flags::RST) == tcp::flags::SYN
    }

    /// Length of the IP packet.
    #[inline(always)]
    pub fn ip_len(&self) -> usize {
        self.total as usize
    }

    /// The transport protocol.
    #[inline(always)]
    pub fn protocol(&self) -> Protocol {
        if self.proto == ip_proto::TCP {
            Protocol::Tcp
        } else {
            Protocol::Udp
        }
    }

    /// [`IpInfo::key_in`] of this packet.
    #[inline(always)]
    pub fn key_in(&self) -> ConnKeyIn {
        ConnKeyIn {
            proto: self.protocol(),
            caddr: IpAddr::V4(Ipv4Addr::from(self.src)),
            cport: self.sport,
            vaddr: IpAddr::V4(Ipv4Addr::from(self.dst)),
            vport: self.dport,
        }
    }

    /// [`key_in`](Self::key_in) in the IPv4 form the table's IPv4 calls take.
    #[inline(always)]
    pub fn key_in4(&self) -> ConnKeyIn4 {
        ConnKeyIn4 {
            proto: self.protocol(),
            caddr: self.src,
            cport: self.sport,
            vaddr: self.dst,
            vport: self.dport,
        }
    }

    /// [`key_out`](Self::key_out) in the IPv4 form the table's IPv4 calls take.
    #[inline(always)]
    pub fn key_out4(&self) -> ConnKeyOut4 {
        ConnKeyOut4 {
            proto: self.protocol(),
            daddr: self.src,
            dport: self.sport,
            addr: self.dst,
            port: self.dport,
        }
    }

    /// [`IpInfo::key_out`] of this packet.
    #[inline(always)]
    pub fn key_out(&self) -> ConnKeyOut {
        ConnKeyOut {
            proto: self.protocol(),
            daddr: IpAddr::V4(Ipv4Addr::from(self.src)),
            dport: self.sport,
            addr: IpAddr::V4(Ipv4Addr::from(self.dst)),
            port: self.dport,
        }
    }

    /// The same headers as the general parser's [`IpInfo`] (what [`parse_ip`] gives).
    #[inline]
    pub fn info(&self) -> IpInfo {
        IpInfo {
            l3: FAST_L3,
            v6: false,
            end: self.end(),
            proto: self.proto,
            l4: FAST_L4,
            src: IpAddr::V4(Ipv4Addr::from(self.src)),
            dst: IpAddr::V4(Ipv4Addr::from(self.dst)),
            sport: self.sport,
            dport: self.dport,
            tcp_flags: self.tcp_flags,
            fragment: false,
            ttl: self.ttl,
            l4_present: true,
        }
    }
}

/// Offset of the IPv4 header in an untagged Ethernet frame.
pub const FAST_L3: usize = 14;
/// Offset of the transport header when the IPv4 header has no options.
pub const FAST_L4: usize = FAST_L3 + ipv4::field::HEADER_LEN;

/// The common case of Ethernet + [`parse_ip`] with a few fixed-offset loads: an untagged
/// IPv4 frame, no IP options, not a fragment, TCP or UDP with its whole header present.
/// `None` for anything else (the caller then takes the general parser); when it answers,
/// [`Fast4::info`] is exactly what `parse_ip` gives for the frame (the fuzz tests compare
/// the two).
#[inline(always)]
pub fn parse_fast4(frame: &[u8]) -> Option<Fast4> {
    // Ethernet + IPv4 header + the first 8 bytes of the transport header in one check.
    let h: &[u8; FAST_L4 + 8] = frame.get(..FAST_L4 + 8)?.try_into().ok()?;
    let be16 = |at: usize| u16::from_be_bytes([h[at], h[at + 1]]);
    let be32 = |at: usize| u32::from_be_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
    // Ethertype IPv4 and version 4 with IHL 5 (bytes 12..15), no MF flag and offset 0.
    if be32(12) >> 8 != 0x08_00_45 || be16(20) & 0x3fff != 0 {
        return None;
    }
    let total = be16(16);
    let end = FAST_L3 + total as usize;
    if end > frame.len() {
        return None;
    }
    let proto = h[23];
    let seg = end.checked_sub(FAST_L4)?;
    let tcp_flags = match proto {
        ip_proto::TCP => {
            // The fixed header and the options the data offset announces are present.
            let (&off, &flags) = (frame.get(FAST_L4 + 12)?, frame.get(FAST_L4 + 13)?);
            let hl = ((off >> 4) as usize) * 4;
            if seg < tcp::field::HEADER_LEN || hl < tcp::field::HEADER_LEN || hl > seg {
                return None;
            }
            flags
        }
        ip_proto::UDP => {
            let ul = be16(FAST_L4 + 4) as usize;
            if ul < udp::field::HEADER_LEN || ul > seg {
                return None;
            }
            0
        }
        _ => return None,
    };
    let ports = be32(FAST_L4);
    Some(Fast4 {
        src: be32(26),
        dst: be32(30),
        sport: (ports >> 16) as u16,
        dport: ports as u16,
        total,
        proto,
        tcp_flags,
        ttl: h[22],
    })
}

/// [`parse_fast4`] as an [`IpInfo`].
#[inline]
pub fn parse_fast_v4(frame: &[u8]) -> Option<IpInfo> {
    parse_fast4(frame).map(|h| h.info())
}

/// [`forward_v4`] for a frame [`parse_fast4`] read as `h` (the frame cut to `h.end()`, not
/// changed since): decrements the TTL and sets the source and/or destination address and
/// port (`(address, port)`, addresses as `u32`) with one incremental update of each
/// checksum, at fixed offsets. The same bytes as `forward_v4`. False (frame untouched)
/// for a TTL of 1 or less or a frame shorter than the parse allows.
#[inline(always)]
pub fn forward_fast4(frame: &mut [u8], h: &Fast4, src: Option<(u32, u16)>, dst: Option<(u32, u16)>) -> bool {
    const TCP_END: usize = FAST_L4 + TCP_CSUM + 2;
    const UDP_END: usize = FAST_L4 + UDP_CSUM + 2;
    if h.proto == ip_proto::TCP {
        match frame.get_mut(..TCP_END).map(<&mut [u8; TCP_END]>::try_from) {
            Some(Ok(f)) => fast4_rewrite(f, FAST_L4 + TCP_CSUM, false, h, src, dst),
            _ => false,
        }
    } else {
        match frame.get_mut(..UDP_END).map(<&mut [u8; UDP_END]>::try_from) {
            Some(Ok(f)) => fast4_rewrite(f, FAST_L4 + UDP_CSUM, true, h, src, dst),
            _ => false,
        }
    }
}

/// The body of [`forward_fast4`] over the frame's first `N` bytes, the transport checksum
/// at `csum_at` (a constant once inlined: no bounds checks).
#[inline(always)]
fn fast4_rewrite<const N: usize>(
    f: &mut [u8; N],
    csum_at: usize,
    udp: bool,
    h: &Fast4,
    src: Option<(u32, u16)>,
    dst: Option<(u32, u16)>,
) -> bool {
    const TTL: usize = FAST_L3 + 8;
    const CSUM: usize = FAST_L3 + 10;
    let ttl = f[TTL];
    if ttl <= 1 {
        return false;
    }
    f[TTL] = ttl - 1;
    // The TTL/protocol word's change (see `forward_v4`).
    let mut ip_delta = 0xfeffu64;
    let mut l4_delta = 0u64;
    if let Some((n, port)) = src {
        if n != h.src {
            let d = delta32(h.src, n);
            ip_delta += d;
            l4_delta += d;
            f[FAST_L3 + 12..FAST_L3 + 16].copy_from_slice(&n.to_be_bytes());
        }
        if port != h.sport {
            l4_delta += (!h.sport) as u64 + port as u64;
        }
        f[FAST_L4..FAST_L4 + 2].copy_from_slice(&port.to_be_bytes());
    }
    if let Some((n, port)) = dst {
        if n != h.dst {
            let d = delta32(h.dst, n);
            ip_delta += d;
            l4_delta += d;
            f[FAST_L3 + 16..FAST_L3 + 20].copy_from_slice(&n.to_be_bytes());
        }
        if port != h.dport {
            l4_delta += (!h.dport) as u64 + port as u64;
        }
        f[FAST_L4 + 2..FAST_L4 + 4].copy_from_slice(&port.to_be_bytes());
    }
    let hc = u16::from_be_bytes([f[CSUM], f[CSUM + 1]]);
    f[CSUM..CSUM + 2].copy_from_slice(&apply_delta(hc, ip_delta).to_be_bytes());
    let c = u16::from_be_bytes([f[csum_at], f[csum_at + 1]]);
    let c = if udp && c == 0 {
        0
    } else {
        match apply_delta(c, l4_delta) {
            0 if udp => 0xffff,
            x => x,
        }
    };
    f[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
    true
}

/// Which end of the packet a rewrite touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Source address and port.
    Src,
    /// Destination address and port.
    Dst,
}

/// Rewrites the source or destination address and port of the packet described by `ip`,
/// updating the IPv4 header checksum and the TCP/UDP checksum incrementally (SCTP's CRC32c is
/// recomputed when a port changes). Same-family only; `ip` is updated to match.
pub fn rewrite(frame: &mut [u8], ip: &mut IpInfo, end: End, addr: IpAddr, port: u16) {
    let old_addr = match end {
        End::Src => ip.src,
        End::Dst => ip.dst,
    };
    let old_port = match end {
        End::Src => ip.sport,
        End::Dst => ip.dport,
    };
    let l4_ok = ip.l4_present;
    if let (IpAddr::V4(o), IpAddr::V4(n)) = (old_addr, addr)
        && l4_ok
        && rewrite_v4(frame, ip, end, o, n, old_port, port)
    {
        return;
    }
    // Address, IP header and pseudo-header checksums.
    if old_addr != addr {
        match (old_addr, addr) {
            (IpAddr::V4(o), IpAddr::V4(n)) => {
                let mut p = ipv4::Packet::new_unchecked(&mut frame[ip.l3..ip.end]);
                match end {
                    End::Src => p.set_src_addr_update(n),
                    End::Dst => p.set_dst_addr_update(n),
                }
                if l4_ok {
                    l4_update_v4(frame, ip, o, n);
                }
            }
            (IpAddr::V6(o), IpAddr::V6(n)) => {
                let at = ip.l3
                    + if end == End::Src {
                        ipv6::field::SRC
                    } else {
                        ipv6::field::DST
                    };
                frame[at..at + 16].copy_from_slice(&n.octets());
                if l4_ok {
                    l4_update_v6(frame, ip, &o, &n);
                }
            }
            _ => debug_assert!(false, "rewrite across address families"),
        }
        match end {
            End::Src => ip.src = addr,
            End::Dst => ip.dst = addr,
        }
    }
    if old_port != port && l4_ok {
        let off = ip.l4 + if end == End::Src { 0 } else { 2 };
        match ip.proto {
            ip_proto::TCP => {
                let c = tcp_checksum(frame, ip);
                set_tcp_checksum(frame, ip, checksum::update_u16(c, old_port, port));
                frame[off..off + 2].copy_from_slice(&port.to_be_bytes());
            }
            ip_proto::UDP => {
                let c = udp_checksum(frame, ip);
                set_udp_checksum(frame, ip, checksum::update_udp(c, old_port, port));
                frame[off..off + 2].copy_from_slice(&port.to_be_bytes());
            }
            sctp::PROTO => {
                frame[off..off + 2].copy_from_slice(&port.to_be_bytes());
                sctp::fill_checksum(&mut frame[ip.l4..ip.end]);
            }
            _ => {}
        }
        match end {
            End::Src => ip.sport = port,
            End::Dst => ip.dport = port,
        }
    }
}

/// The IPv4 TCP/UDP case of [`rewrite`] in one pass: the address and port changes are summed
/// once (RFC 1624 eqn. 3) and applied to the IP header and transport checksums, with one
/// bounds check up front. False (frame untouched) for other protocols or a short frame.
#[inline]
fn rewrite_v4(
    frame: &mut [u8],
    ip: &mut IpInfo,
    end: End,
    o: Ipv4Addr,
    n: Ipv4Addr,
    old_port: u16,
    port: u16,
) -> bool {
    let (l3, l4) = (ip.l3, ip.l4);
    let udp = match ip.proto {
        ip_proto::TCP => false,
        ip_proto::UDP => true,
        _ => return false,
    };
    let csum_at = l4 + if udp { UDP_CSUM } else { TCP_CSUM };
    if frame.len() < csum_at + 2 || l3 + ipv4::field::HEADER_LEN > l4 {
        return false;
    }
    let (addr_at, port_at) = match end {
        End::Src => (l3 + 12, l4),
        End::Dst => (l3 + 16, l4 + 2),
    };
    let (ov, nv) = (u32::from(o), u32::from(n));
    let addr_delta: u64 = if ov != nv {
        (!(ov >> 16) & 0xffff) as u64 + (!ov & 0xffff) as u64 + (nv >> 16) as u64 + (nv & 0xffff) as u64
    } else {
        0
    };
    let port_delta: u64 = if old_port != port {
        (!old_port) as u64 + port as u64
    } else {
        0
    };
    #[inline(always)]
    fn apply(hc: u16, delta: u64) -> u16 {
        let mut acc = (!hc) as u64 + delta;
        acc = (acc & 0xffff) + (acc >> 16);
        acc = (acc & 0xffff) + (acc >> 16);
        !(acc as u16)
    }
    if ov != nv {
        let hc = u16::from_be_bytes([frame[l3 + 10], frame[l3 + 11]]);
        frame[l3 + 10..l3 + 12].copy_from_slice(&apply(hc, addr_delta).to_be_bytes());
        frame[addr_at..addr_at + 4].copy_from_slice(&n.octets());
    }
    let c = u16::from_be_bytes([frame[csum_at], frame[csum_at + 1]]);
    let c = if udp && c == 0 {
        0
    } else {
        match apply(c, addr_delta + port_delta) {
            0 if udp => 0xffff,
            x => x,
        }
    };
    frame[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
    frame[port_at..port_at + 2].copy_from_slice(&port.to_be_bytes());
    match end {
        End::Src => {
            ip.src = IpAddr::V4(n);
            ip.sport = port;
        }
        End::Dst => {
            ip.dst = IpAddr::V4(n);
            ip.dport = port;
        }
    }
    true
}

/// One's-complement sum (RFC 1624 eqn. 3) of the change from `o` to `n` in a 32-bit field:
/// `~o + n` summed as 32-bit words, folded once (below 2^18). Congruent modulo 0xffff to the
/// sum of the four 16-bit halves, and 0 exactly when that sum is, so the checksum it leads
/// to is the same.
#[inline(always)]
fn delta32(o: u32, n: u32) -> u64 {
    let x = (!o) as u64 + n as u64;
    (x & 0xffff) + (x >> 16)
}

/// RFC 1624 eqn. 3: checksum `hc` after fields changed by the summed `delta` (a sum of at
/// most a few dozen 16-bit words: below 2^32, so two folds bring it back to 16 bits).
#[inline(always)]
pub(crate) fn apply_delta(hc: u16, delta: u64) -> u16 {
    debug_assert!(delta < 1 << 31);
    let mut acc = (!hc) as u64 + delta;
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    !(acc as u16)
}

/// The IPv4 TCP/UDP forwarding rewrite in one pass: decrements the TTL and sets the source
/// (`src`) and/or destination (`dst`) address and port, with one incremental update of the IP
/// header checksum (TTL and addresses) and one of the transport checksum (pseudo-header
/// addresses and ports). The same bytes as [`decrement_ttl`] followed by [`rewrite`] of the
/// source, then of the destination. False (frame untouched) when it does not apply: not
/// IPv4 TCP/UDP with its header present, a TTL of 1 or less, or a short frame.
#[inline(always)]
pub fn forward_v4(
    frame: &mut [u8],
    ip: &mut IpInfo,
    src: Option<(Ipv4Addr, u16)>,
    dst: Option<(Ipv4Addr, u16)>,
) -> bool {
    let (IpAddr::V4(os), IpAddr::V4(od)) = (ip.src, ip.dst) else {
        return false;
    };
    if !ip.l4_present || ip.ttl <= 1 {
        return false;
    }
    let csum_at = match ip.proto {
        ip_proto::TCP => TCP_CSUM,
        ip_proto::UDP => UDP_CSUM,
        _ => return false,
    };
    let udp = csum_at == UDP_CSUM;
    let (l3, l4) = (ip.l3, ip.l4);
    if l3 + ipv4::field::HEADER_LEN > l4 {
        return false;
    }
    let (head, seg) = frame.split_at_mut(l4);
    let Some(Ok(h)) = head.get_mut(l3..l3 + 20).map(<&mut [u8; 20]>::try_from) else {
        return false;
    };
    let Some(t) = seg.get_mut(..csum_at + 2) else {
        return false;
    };
    let ttl = h[8];
    if ttl != ip.ttl {
        return false;
    }
    // The TTL/protocol word w becomes w - 0x100 (TTL >= 2 here): its change !w + (w - 0x100)
    // is 0xfeff whatever w is.
    let mut ip_delta = 0xfeffu64;
    let mut l4_delta = 0u64;
    h[8] = ttl - 1;
    ip.ttl = ttl - 1;
    if let Some((n, port)) = src {
        let (ov, nv) = (u32::from(os), u32::from(n));
        if ov != nv {
            let d = delta32(ov, nv);
            ip_delta += d;
            l4_delta += d;
            h[12..16].copy_from_slice(&n.octets());
        }
        if port != ip.sport {
            l4_delta += (!ip.sport) as u64 + port as u64;
        }
        t[0..2].copy_from_slice(&port.to_be_bytes());
        ip.src = IpAddr::V4(n);
        ip.sport = port;
    }
    if let Some((n, port)) = dst {
        let (ov, nv) = (u32::from(od), u32::from(n));
        if ov != nv {
            let d = delta32(ov, nv);
            ip_delta += d;
            l4_delta += d;
            h[16..20].copy_from_slice(&n.octets());
        }
        if port != ip.dport {
            l4_delta += (!ip.dport) as u64 + port as u64;
        }
        t[2..4].copy_from_slice(&port.to_be_bytes());
        ip.dst = IpAddr::V4(n);
        ip.dport = port;
    }
    let hc = u16::from_be_bytes([h[10], h[11]]);
    h[10..12].copy_from_slice(&apply_delta(hc, ip_delta).to_be_bytes());
    let c = u16::from_be_bytes([t[csum_at], t[csum_at + 1]]);
    let c = if udp && c == 0 {
        0
    } else {
        match apply_delta(c, l4_delta) {
            0 if udp => 0xffff,
            x => x,
        }
    };
    t[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
    true
}

const TCP_CSUM: usize = 16;
const UDP_CSUM: usize = 6;

#[inline]
fn tcp_checksum(frame: &[u8], ip: &IpInfo) -> u16 {
    u16::from_be_bytes([frame[ip.l4 + TCP_CSUM], frame[ip.l4 + TCP_CSUM + 1]])
}

#[inline]
fn set_tcp_checksum(frame: &mut [u8], ip: &IpInfo, c: u16) {
    frame[ip.l4 + TCP_CSUM..ip.l4 + TCP_CSUM + 2].copy_from_slice(&c.to_be_bytes());
}

#[inline]
fn udp_checksum(frame: &[u8], ip: &IpInfo) -> u16 {
    u16::from_be_bytes([frame[ip.l4 + UDP_CSUM], frame[ip.l4 + UDP_CSUM + 1]])
}

#[inline]
fn set_udp_checksum(frame: &mut [u8], ip: &IpInfo, c: u16) {
    frame[ip.l4 + UDP_CSUM..ip.l4 + UDP_CSUM + 2].copy_from_slice(&c.to_be_bytes());
}

fn l4_update_v4(frame: &mut [u8], ip: &IpInfo, o: Ipv4Addr, n: Ipv4Addr) {
    match ip.proto {
        ip_proto::TCP => {
            let c = checksum::update_ipv4(tcp_checksum(frame, ip), o, n);
            set_tcp_checksum(frame, ip, c);
        }
        ip_proto::UDP => {
            let c = checksum::update_udp_u32(udp_checksum(frame, ip), u32::from(o), u32::from(n));
            set_udp_checksum(frame, ip, c);
        }
        _ => {}
    }
}

fn l4_update_v6(frame: &mut [u8], ip: &IpInfo, o: &Ipv6Addr, n: &Ipv6Addr) {
    match ip.proto {
        ip_proto::TCP => {
            let c = checksum::update_ipv6(tcp_checksum(frame, ip), o, n);
            set_tcp_checksum(frame, ip, c);
        }
        ip_proto::UDP => {
            let c = checksum::update_udp_ipv6(udp_checksum(frame, ip), o, n);
            set_udp_checksum(frame, ip, c);
        }
        ip_proto::ICMPV6 => {
            let at = ip.l4 + 2;
            let old = u16::from_be_bytes([frame[at], frame[at + 1]]);
            let c = checksum::update_ipv6(old, o, n);
            frame[at..at + 2].copy_from_slice(&c.to_be_bytes());
        }
        _ => {}
    }
}

/// Decrements the TTL / hop limit as a forwarding router does (the kernel's IPVS does it for
/// every non-local destination). Returns false when it was already 1 or 0: the packet must
/// not be forwarded (answer with "time exceeded").
#[inline]
pub fn decrement_ttl(frame: &mut [u8], ip: &mut IpInfo) -> bool {
    if ip.ttl <= 1 {
        return false;
    }
    if ip.v6 {
        frame[ip.l3 + ipv6::field::HOP_LIMIT] -= 1;
    } else {
        ipv4::Packet::new_unchecked(&mut frame[ip.l3..ip.end]).decrement_ttl();
    }
    ip.ttl -= 1;
    true
}

#[cfg(test)]
mod tests;
