//! ICMPv6 (RFC 4443) and Neighbor Discovery (RFC 4861): errors with the quoted packet,
//! packet-too-big MTU, echo, and neighbor solicitation / advertisement with their link-layer
//! address options.

use std::net::Ipv6Addr;

use super::ethernet::MacAddr;
use super::{Error, Result, array, be16, be32, checksum, ip_proto, ipv6, put16, put32};

/// Byte offsets of the ICMPv6 header and the NS/NA body.
pub mod field {
    /// Message type.
    pub const TYPE: usize = 0;
    /// Code.
    pub const CODE: usize = 1;
    /// Checksum (over the IPv6 pseudo-header and the whole message).
    pub const CHECKSUM: usize = 2;
    /// Echo identifier.
    pub const ECHO_IDENT: usize = 4;
    /// Echo sequence number.
    pub const ECHO_SEQ: usize = 6;
    /// MTU of packet-too-big (32 bits).
    pub const MTU: usize = 4;
    /// NA flags (R, S, O in the high bits).
    pub const NA_FLAGS: usize = 4;
    /// Length of the header; errors quote the offending packet from here.
    pub const HEADER_LEN: usize = 8;
    /// NS/NA target address.
    pub const TARGET: usize = 8;
    /// NS/NA options start here.
    pub const NDP_OPTIONS: usize = 24;
}

/// ICMPv6 message types used by lvs.
pub mod msg_type {
    /// Destination unreachable.
    pub const DEST_UNREACHABLE: u8 = 1;
    /// Packet too big.
    pub const PACKET_TOO_BIG: u8 = 2;
    /// Time exceeded.
    pub const TIME_EXCEEDED: u8 = 3;
    /// Parameter problem.
    pub const PARAM_PROBLEM: u8 = 4;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 128;
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 129;
    /// Router solicitation.
    pub const ROUTER_SOLICIT: u8 = 133;
    /// Router advertisement.
    pub const ROUTER_ADVERT: u8 = 134;
    /// Neighbor solicitation.
    pub const NEIGHBOR_SOLICIT: u8 = 135;
    /// Neighbor advertisement.
    pub const NEIGHBOR_ADVERT: u8 = 136;
}

/// NA flag: sender is a router.
pub const NA_ROUTER: u8 = 0x80;
/// NA flag: sent in response to a solicitation.
pub const NA_SOLICITED: u8 = 0x40;
/// NA flag: override an existing cache entry.
pub const NA_OVERRIDE: u8 = 0x20;

/// NDP option: source link-layer address.
pub const OPT_SOURCE_LL: u8 = 1;
/// NDP option: target link-layer address.
pub const OPT_TARGET_LL: u8 = 2;

/// True for error messages (types < 128), which quote the offending packet.
#[inline]
pub fn is_error(t: u8) -> bool {
    t < 128
}

/// True for neighbor solicitation and advertisement, whose target address checked views hold.
#[inline]
pub fn is_ns_or_na(t: u8) -> bool {
    t == msg_type::NEIGHBOR_SOLICIT || t == msg_type::NEIGHBOR_ADVERT
}

/// One NDP option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NdpOption<'a> {
    /// Source link-layer address (an Ethernet MAC).
    SourceLinkLayer(MacAddr),
    /// Target link-layer address (an Ethernet MAC).
    TargetLinkLayer(MacAddr),
    /// Any other option (or a link-layer option of a non-Ethernet length).
    Other {
        /// Option type.
        kind: u8,
        /// Option data after type and length.
        data: &'a [u8],
    },
}

/// Iterator over NDP options (length in units of 8 bytes). Ends at the end of the data or at
/// the first malformed option (length 0 or past the end); [`malformed`](Self::malformed) then
/// says which.
#[derive(Debug, Clone)]
pub struct NdpOptions<'a> {
    data: &'a [u8],
    malformed: bool,
}

impl<'a> NdpOptions<'a> {
    /// Iterate over raw NDP option bytes.
    pub fn new(data: &'a [u8]) -> Self {
        NdpOptions {
            data,
            malformed: false,
        }
    }

    /// True if the walk stopped on a malformed option.
    pub fn malformed(&self) -> bool {
        self.malformed
    }
}

impl<'a> Iterator for NdpOptions<'a> {
    type Item = NdpOption<'a>;

    fn next(&mut self) -> Option<NdpOption<'a>> {
        if self.data.is_empty() {
            return None;
        }
        let len = match self.data.get(1) {
            Some(&l) if l != 0 && (l as usize) * 8 <= self.data.len() => (l as usize) * 8,
            _ => {
                self.malformed = true;
                self.data = &[];
                return None;
            }
        };
        let kind = self.data[0];
        let body = &self.data[2..len];
        self.data = &self.data[len..];
        Some(match (kind, len) {
            (OPT_SOURCE_LL, 8) => NdpOption::SourceLinkLayer(array(body, 0)),
            (OPT_TARGET_LL, 8) => NdpOption::TargetLinkLayer(array(body, 0)),
            _ => NdpOption::Other { kind, data: body },
        })
    }
}

/// A view over an ICMPv6 message (the upper-layer part of an IPv6 packet).
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

    /// Wrap a message: see [`check_len`](Self::check_len).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Ensure that no accessor method will panic if called: 8 bytes present, and 24 for a
    /// neighbor solicitation or advertisement (header + target address).
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        if b.len() < field::HEADER_LEN {
            return Err(Error::Truncated);
        }
        if is_ns_or_na(b[field::TYPE]) && b.len() < field::NDP_OPTIONS {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// The wrapped buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Message type (see [`msg_type`]).
    #[inline]
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    /// Code.
    #[inline]
    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    /// Checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Echo identifier (meaningful for echo request/reply).
    #[inline]
    pub fn echo_ident(&self) -> u16 {
        be16(self.buffer.as_ref(), field::ECHO_IDENT)
    }

    /// Echo sequence number (meaningful for echo request/reply).
    #[inline]
    pub fn echo_seq(&self) -> u16 {
        be16(self.buffer.as_ref(), field::ECHO_SEQ)
    }

    /// MTU (meaningful for packet too big).
    #[inline]
    pub fn mtu(&self) -> u32 {
        be32(self.buffer.as_ref(), field::MTU)
    }

    /// Everything after the 8-byte header (echo data, NS/NA target and options, or the quoted
    /// packet of an error).
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[field::HEADER_LEN..]
    }

    /// For an error message, the quoted packet as a truncated IPv6 view. `Err(Malformed)` for
    /// informational types.
    #[inline]
    pub fn quoted_ipv6(&self) -> Result<ipv6::Packet<&[u8]>> {
        if !is_error(self.msg_type()) {
            return Err(Error::Malformed);
        }
        ipv6::Packet::new_truncated(self.data())
    }

    /// Target address of a neighbor solicitation or advertisement (`None` for other types).
    #[inline]
    pub fn target_addr(&self) -> Option<Ipv6Addr> {
        if !is_ns_or_na(self.msg_type()) {
            return None;
        }
        let b = self.buffer.as_ref().get(field::TARGET..field::NDP_OPTIONS)?;
        Some(Ipv6Addr::from(array::<16>(b, 0)))
    }

    /// NA flags byte (R, S, O), `None` unless a neighbor advertisement.
    #[inline]
    pub fn na_flags(&self) -> Option<u8> {
        (self.msg_type() == msg_type::NEIGHBOR_ADVERT).then(|| self.buffer.as_ref()[field::NA_FLAGS])
    }

    /// The NDP options of a neighbor solicitation or advertisement (empty for other types).
    #[inline]
    pub fn ndp_options(&self) -> NdpOptions<'_> {
        let b = self.buffer.as_ref();
        let data = if is_ns_or_na(self.msg_type()) {
            b.get(field::NDP_OPTIONS..).unwrap_or(&[])
        } else {
            &[]
        };
        NdpOptions::new(data)
    }

    /// The first source (NS) or target (NA) link-layer address option, if any.
    #[inline]
    pub fn link_layer_addr(&self) -> Option<MacAddr> {
        self.ndp_options().find_map(|o| match o {
            NdpOption::SourceLinkLayer(m) | NdpOption::TargetLinkLayer(m) => Some(m),
            NdpOption::Other { .. } => None,
        })
    }

    /// True if the checksum is valid for this message from `src` to `dst`.
    #[inline]
    pub fn verify_checksum(&self, src: &Ipv6Addr, dst: &Ipv6Addr) -> bool {
        let b = self.buffer.as_ref();
        let ph = checksum::pseudo_header_v6(src, dst, ip_proto::ICMPV6, b.len() as u32);
        checksum::add(ph, checksum::sum(b)) == 0xffff
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
    /// Set the message type.
    #[inline]
    pub fn set_msg_type(&mut self, t: u8) {
        self.buffer.as_mut()[field::TYPE] = t;
    }

    /// Set the code.
    #[inline]
    pub fn set_code(&mut self, c: u8) {
        self.buffer.as_mut()[field::CODE] = c;
    }

    /// Set the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, c: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM, c);
    }

    /// Set the echo identifier.
    #[inline]
    pub fn set_echo_ident(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::ECHO_IDENT, v);
    }

    /// Set the echo sequence number.
    #[inline]
    pub fn set_echo_seq(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::ECHO_SEQ, v);
    }

    /// Set the 32-bit word after the checksum (packet-too-big MTU, or 0 / NA flags).
    #[inline]
    pub fn set_mtu(&mut self, mtu: u32) {
        put32(self.buffer.as_mut(), field::MTU, mtu);
    }

    /// Mutable data after the header.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::HEADER_LEN..]
    }

    /// Compute and store the checksum for a message from `src` to `dst`.
    #[inline]
    pub fn fill_checksum(&mut self, src: &Ipv6Addr, dst: &Ipv6Addr) {
        self.set_checksum(0);
        let b = self.buffer.as_ref();
        let ph = checksum::pseudo_header_v6(src, dst, ip_proto::ICMPV6, b.len() as u32);
        let c = !checksum::add(ph, checksum::sum(b));
        self.set_checksum(c);
    }
}

/// Write a neighbor advertisement answering for `target` with link-layer address `mac` into
/// `buf` (32 bytes: header, target, one target link-layer option) and return its length.
/// `flags` is a mix of [`NA_ROUTER`], [`NA_SOLICITED`], [`NA_OVERRIDE`]. The checksum is filled
/// for the IPv6 addresses `src` → `dst` the caller will put around it.
/// `Err(Truncated)` if `buf` is shorter than 32 bytes.
pub fn emit_neighbor_advert(
    buf: &mut [u8],
    target: &Ipv6Addr,
    mac: MacAddr,
    flags: u8,
    src: &Ipv6Addr,
    dst: &Ipv6Addr,
) -> Result<usize> {
    const LEN: usize = field::NDP_OPTIONS + 8;
    let b = buf.get_mut(..LEN).ok_or(Error::Truncated)?;
    b.fill(0);
    b[field::TYPE] = msg_type::NEIGHBOR_ADVERT;
    b[field::NA_FLAGS] = flags;
    b[field::TARGET..field::NDP_OPTIONS].copy_from_slice(&target.octets());
    b[field::NDP_OPTIONS] = OPT_TARGET_LL;
    b[field::NDP_OPTIONS + 1] = 1;
    b[field::NDP_OPTIONS + 2..LEN].copy_from_slice(&mac);
    Packet::new_unchecked(b).fill_checksum(src, dst);
    Ok(LEN)
}
