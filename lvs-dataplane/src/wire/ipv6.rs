//! IPv6 headers (RFC 8200) and a bounded walker of the extension-header chain.

use std::net::Ipv6Addr;

use super::{Error, Result, array, be16, be32, checksum, ip_proto, put16};

/// Byte offsets of the fixed IPv6 header.
pub mod field {
    /// Version (4 bits), traffic class (8), flow label (20).
    pub const VER_TC_FLOW: usize = 0;
    /// Payload length (everything after the fixed header).
    pub const PAYLOAD_LEN: usize = 4;
    /// Next header.
    pub const NEXT_HEADER: usize = 6;
    /// Hop limit.
    pub const HOP_LIMIT: usize = 7;
    /// Source address.
    pub const SRC: usize = 8;
    /// Destination address.
    pub const DST: usize = 24;
    /// Length of the fixed header.
    pub const HEADER_LEN: usize = 40;
}

/// Most extension headers the walker follows before calling the chain malformed.
pub const MAX_EXT_HEADERS: usize = 8;

/// The fragment header of a packet, if it has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragment {
    /// Fragment offset in bytes.
    pub offset: u16,
    /// More-fragments flag.
    pub more: bool,
    /// Identification.
    pub ident: u32,
}

impl Fragment {
    /// True unless this is the first fragment, i.e. the upper-layer header is not here.
    #[inline]
    pub fn is_later(&self) -> bool {
        self.offset != 0
    }
}

/// Where the upper-layer protocol starts, after the extension headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpperLayer {
    /// Upper-layer protocol (TCP, UDP, ICMPv6, or ESP / no-next-header / anything unknown).
    pub protocol: u8,
    /// Offset of the upper-layer header, relative to the slice that was walked.
    pub offset: usize,
    /// Fragment header, if the chain had one. For a non-first fragment, `offset` points at
    /// fragment data, not at an upper-layer header.
    pub fragment: Option<Fragment>,
}

/// Walk the extension-header chain in `payload` (what follows the fixed header), starting with
/// `next_header` from the fixed header. Follows hop-by-hop (first only), routing, fragment,
/// destination options and AH, at most [`MAX_EXT_HEADERS`] of them; stops at the first other
/// protocol. Stops at a non-first fragment (the rest is not a header).
pub fn walk_ext_headers(mut next_header: u8, payload: &[u8]) -> Result<UpperLayer> {
    let mut offset = 0usize;
    let mut fragment = None;
    for i in 0..=MAX_EXT_HEADERS {
        let len = match next_header {
            ip_proto::HOPOPT if i == 0 => ext_len(payload, offset, 8)?,
            ip_proto::HOPOPT => return Err(Error::Malformed),
            ip_proto::ROUTING | ip_proto::DSTOPTS => ext_len(payload, offset, 8)?,
            ip_proto::AH => ext_len(payload, offset, 4)?,
            ip_proto::FRAGMENT => {
                if payload.len() < offset + 8 {
                    return Err(Error::Truncated);
                }
                let off_flags = be16(payload, offset + 2);
                let frag = Fragment {
                    offset: off_flags & 0xfff8,
                    more: off_flags & 1 != 0,
                    ident: be32(payload, offset + 4),
                };
                fragment = Some(frag);
                if frag.is_later() {
                    return Ok(UpperLayer {
                        protocol: payload[offset],
                        offset: offset + 8,
                        fragment,
                    });
                }
                8
            }
            protocol => {
                return Ok(UpperLayer {
                    protocol,
                    offset,
                    fragment,
                });
            }
        };
        if i == MAX_EXT_HEADERS {
            break;
        }
        next_header = payload[offset];
        offset += len;
    }
    Err(Error::Malformed)
}

/// Length of the generic extension header at `offset`: (hdr-ext-len + 2) × 4 for AH, else
/// (hdr-ext-len + 1) × 8; checked against the slice.
#[inline]
fn ext_len(payload: &[u8], offset: usize, unit: usize) -> Result<usize> {
    if payload.len() < offset + 2 {
        return Err(Error::Truncated);
    }
    let n = payload[offset + 1] as usize;
    let len = if unit == 4 { (n + 2) * 4 } else { (n + 1) * 8 };
    if payload.len() < offset + len {
        return Err(Error::Truncated);
    }
    Ok(len)
}

/// A view over an IPv6 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wrap a buffer without checking it.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wrap a buffer holding a whole packet: see [`check_len`](Self::check_len).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Wrap a buffer that may hold only the start of a packet (as quoted in an ICMPv6 error):
    /// the version and the fixed header must be there; [`payload`](Self::payload) returns what
    /// is there.
    #[inline]
    pub fn new_truncated(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        p.check_header()?;
        Ok(p)
    }

    fn check_header(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        if b.len() < field::HEADER_LEN {
            return Err(Error::Truncated);
        }
        if b[0] >> 4 != 6 {
            return Err(Error::Malformed);
        }
        Ok(())
    }

    /// Ensure that no accessor method will panic if called: version 6, the fixed header and
    /// the payload length within the buffer (trailing padding is allowed and ignored). Jumbograms
    /// (payload length 0 with a jumbo option) are not supported: the payload is then empty.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        self.check_header()?;
        if field::HEADER_LEN + self.payload_len() as usize > self.buffer.as_ref().len() {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// The wrapped buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Version field (6 after a checked constructor).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[0] >> 4
    }

    /// Traffic class.
    #[inline]
    pub fn traffic_class(&self) -> u8 {
        (be16(self.buffer.as_ref(), 0) >> 4) as u8
    }

    /// Flow label (20 bits).
    #[inline]
    pub fn flow_label(&self) -> u32 {
        be32(self.buffer.as_ref(), 0) & 0x000f_ffff
    }

    /// Payload length field.
    #[inline]
    pub fn payload_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::PAYLOAD_LEN)
    }

    /// Next header of the fixed header (an extension header or the upper layer).
    #[inline]
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NEXT_HEADER]
    }

    /// Hop limit.
    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// Source address.
    #[inline]
    pub fn src_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(array::<16>(self.buffer.as_ref(), field::SRC))
    }

    /// Destination address.
    #[inline]
    pub fn dst_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(array::<16>(self.buffer.as_ref(), field::DST))
    }

    /// Byte range of the payload (after the fixed header), clamped to the buffer.
    #[inline]
    pub fn payload_range(&self) -> core::ops::Range<usize> {
        let len = self.buffer.as_ref().len();
        let end = (field::HEADER_LEN + self.payload_len() as usize).min(len);
        field::HEADER_LEN..end
    }

    /// The payload: extension headers and the upper layer, padding excluded.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.payload_range()]
    }

    /// Walk the extension headers; [`UpperLayer::offset`] is relative to the start of this
    /// packet (the fixed header), so `&buf[ul.offset..]` is the upper-layer header.
    #[inline]
    pub fn upper_layer(&self) -> Result<UpperLayer> {
        let mut ul = walk_ext_headers(self.next_header(), self.payload())?;
        ul.offset += field::HEADER_LEN;
        Ok(ul)
    }

    /// Sum of the upper-layer pseudo-header for `len` bytes of protocol `next_header`.
    #[inline]
    pub fn pseudo_header_sum(&self, next_header: u8, len: u32) -> u16 {
        checksum::pseudo_header_v6(&self.src_addr(), &self.dst_addr(), next_header, len)
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    /// The whole wrapped buffer.
    #[inline]
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Set version 6, the traffic class and the flow label.
    #[inline]
    pub fn set_version_tc_flow(&mut self, traffic_class: u8, flow_label: u32) {
        let v = (6u32 << 28) | ((traffic_class as u32) << 20) | (flow_label & 0x000f_ffff);
        self.buffer.as_mut()[0..4].copy_from_slice(&v.to_be_bytes());
    }

    /// Set the payload length.
    #[inline]
    pub fn set_payload_len(&mut self, len: u16) {
        put16(self.buffer.as_mut(), field::PAYLOAD_LEN, len);
    }

    /// Set the next header.
    #[inline]
    pub fn set_next_header(&mut self, nh: u8) {
        self.buffer.as_mut()[field::NEXT_HEADER] = nh;
    }

    /// Set the hop limit.
    #[inline]
    pub fn set_hop_limit(&mut self, h: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = h;
    }

    /// Set the source address.
    #[inline]
    pub fn set_src_addr(&mut self, a: &Ipv6Addr) {
        self.buffer.as_mut()[field::SRC..field::SRC + 16].copy_from_slice(&a.octets());
    }

    /// Set the destination address.
    #[inline]
    pub fn set_dst_addr(&mut self, a: &Ipv6Addr) {
        self.buffer.as_mut()[field::DST..field::DST + 16].copy_from_slice(&a.octets());
    }

    /// Mutable payload.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let r = self.payload_range();
        &mut self.buffer.as_mut()[r]
    }
}
