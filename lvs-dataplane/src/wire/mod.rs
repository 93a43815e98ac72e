//! Zero-copy header views over byte buffers and Internet checksums.
//!
//! Every view follows one pattern (modelled on smoltcp's `wire`): a `Packet<T: AsRef<[u8]>>`
//! (or `Frame`) wraps a buffer; byte offsets live in a `field` module; `new_unchecked` wraps
//! without looking, `new_checked` calls `check_len`, which validates every length field the
//! accessors use. After a successful `new_checked`, **no accessor can panic, whatever the
//! bytes** (fuzzed and proptested). Setters exist for `T: AsMut<[u8]>`; a setter that changes a
//! length field (IPv4 IHL/total length, TCP data offset, UDP length, IPv6 payload length) may
//! invalidate that guarantee until `check_len` is called again, except where a getter is
//! documented to clamp.
//!
//! Views never allocate and never copy; addresses are returned as `[u8; 6]`, `Ipv4Addr` and
//! `Ipv6Addr` values. Checksums live in [`checksum`]: a fast full sum and the RFC 1624
//! incremental updates the forwarding paths use.
//!
//! A NAT-style rewrite of a TCP/IPv4 frame (DNAT to a real server), with incremental checksums:
//!
//! ```
//! use std::net::Ipv4Addr;
//! use lvs_dataplane::wire::{checksum, ethernet, ethertype, ip_proto, ipv4, tcp};
//!
//! # let mut frame = vec![0u8; 14 + 20 + 20];
//! # frame[12..14].copy_from_slice(&ethertype::IPV4.to_be_bytes());
//! # {
//! #     let mut ip = ipv4::Packet::new_unchecked(&mut frame[14..]);
//! #     ip.set_version_and_header_len(20);
//! #     ip.set_total_len(40);
//! #     ip.set_ttl(64);
//! #     ip.set_protocol(ip_proto::TCP);
//! #     ip.set_src_addr(Ipv4Addr::new(10, 0, 0, 1));
//! #     ip.set_dst_addr(Ipv4Addr::new(192, 0, 2, 10));
//! #     ip.fill_checksum();
//! #     let mut t = tcp::Packet::new_unchecked(&mut frame[34..]);
//! #     t.set_header_len(20);
//! #     t.set_dst_port(80);
//! #     t.fill_checksum_v4(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(192, 0, 2, 10));
//! # }
//! let l3 = ethernet::Frame::new_checked(&frame[..])?.l3()?;
//! assert_eq!(l3.ethertype, ethertype::IPV4);
//! let ip = ipv4::Packet::new_checked(&frame[l3.offset..])?;
//! let (hl, vip) = (ip.header_len(), ip.dst_addr());
//! assert_eq!(ip.protocol(), ip_proto::TCP);
//!
//! let rip = Ipv4Addr::new(10, 1, 0, 7);
//! let mut ip = ipv4::Packet::new_checked(&mut frame[l3.offset..])?;
//! ip.set_dst_addr_update(rip); // IPv4 header checksum, RFC 1624
//! let (src, seg) = (ip.src_addr(), &mut frame[l3.offset + hl..]);
//! let mut t = tcp::Packet::new_checked(seg)?;
//! t.set_dst_port_update(8080); // the port word
//! let c = checksum::update_ipv4(t.checksum(), vip, rip); // the pseudo-header
//! t.set_checksum(c);
//! assert!(t.verify_checksum_v4(src, rip));
//! # Ok::<(), lvs_dataplane::wire::Error>(())
//! ```
#![forbid(unsafe_code)]

pub mod arp;
pub mod checksum;
pub mod ethernet;
#[doc(hidden)]
pub mod fuzzing;
pub mod icmpv4;
pub mod icmpv6;
pub mod ipv4;
pub mod ipv6;
pub mod tcp;
pub mod udp;

/// Why a checked constructor refused a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The buffer is shorter than the header (or a length field inside it) says.
    #[error("truncated packet")]
    Truncated,
    /// A field holds a value the header cannot have (wrong version, IHL < 5, bad chain...).
    #[error("malformed packet")]
    Malformed,
}

/// Result of a checked constructor.
pub type Result<T> = core::result::Result<T, Error>;

/// EtherType values used by lvs.
pub mod ethertype {
    /// IPv4.
    pub const IPV4: u16 = 0x0800;
    /// ARP.
    pub const ARP: u16 = 0x0806;
    /// IPv6.
    pub const IPV6: u16 = 0x86dd;
    /// 802.1Q customer VLAN tag (C-tag).
    pub const VLAN: u16 = 0x8100;
    /// 802.1ad service VLAN tag (S-tag, QinQ outer tag).
    pub const QINQ: u16 = 0x88a8;
    /// Pre-standard QinQ outer tag still seen on some switches.
    pub const QINQ_OLD: u16 = 0x9100;
}

/// IP protocol / IPv6 next-header numbers used by lvs.
pub mod ip_proto {
    /// IPv6 hop-by-hop options.
    pub const HOPOPT: u8 = 0;
    /// ICMP for IPv4.
    pub const ICMP: u8 = 1;
    /// IPv4-in-IP encapsulation (LVS TUN).
    pub const IPIP: u8 = 4;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// IPv6 encapsulation.
    pub const IPV6: u8 = 41;
    /// IPv6 routing header.
    pub const ROUTING: u8 = 43;
    /// IPv6 fragment header.
    pub const FRAGMENT: u8 = 44;
    /// Encapsulating security payload.
    pub const ESP: u8 = 50;
    /// Authentication header.
    pub const AH: u8 = 51;
    /// ICMP for IPv6.
    pub const ICMPV6: u8 = 58;
    /// IPv6 "no next header".
    pub const NONE: u8 = 59;
    /// IPv6 destination options.
    pub const DSTOPTS: u8 = 60;
}

/// Source and destination ports from the first 4 bytes of a TCP or UDP header, when a full
/// view cannot be had: the 8 quoted bytes of an ICMP error, or a first fragment whose UDP
/// length exceeds the fragment. `None` if fewer than 4 bytes.
#[inline]
pub fn l4_ports(l4: &[u8]) -> Option<(u16, u16)> {
    match l4 {
        [a, b, c, d, ..] => Some((u16::from_be_bytes([*a, *b]), u16::from_be_bytes([*c, *d]))),
        _ => None,
    }
}

/// Read a big-endian u16 at `at` (the caller has checked the bounds).
#[inline(always)]
pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Read a big-endian u32 at `at` (the caller has checked the bounds).
#[inline(always)]
pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Write a big-endian u16 at `at`.
#[inline(always)]
pub(crate) fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// Write a big-endian u32 at `at`.
#[inline(always)]
pub(crate) fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

/// Copy `N` bytes starting at `at` into an array.
#[inline(always)]
pub(crate) fn array<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&b[at..at + N]);
    out
}
