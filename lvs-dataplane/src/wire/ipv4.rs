//! IPv4 headers (RFC 791), options included, with header-checksum verify and fill.

use std::net::Ipv4Addr;

use super::{Error, Result, array, be16, checksum, put16};

/// Byte offsets of the IPv4 header.
pub mod field {
    /// Version (high nibble) and IHL (low nibble, in 32-bit words).
    pub const VER_IHL: usize = 0;
    /// DSCP (6 bits) and ECN (2 bits).
    pub const DSCP_ECN: usize = 1;
    /// Total length (header + payload).
    pub const LENGTH: usize = 2;
    /// Identification.
    pub const IDENT: usize = 4;
    /// Flags (3 bits) and fragment offset (13 bits, in 8-byte units).
    pub const FLG_OFF: usize = 6;
    /// Time to live.
    pub const TTL: usize = 8;
    /// Protocol of the payload.
    pub const PROTOCOL: usize = 9;
    /// Header checksum.
    pub const CHECKSUM: usize = 10;
    /// Source address.
    pub const SRC: usize = 12;
    /// Destination address.
    pub const DST: usize = 16;
    /// Length of a header without options.
    pub const HEADER_LEN: usize = 20;
}

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const OFFSET_MASK: u16 = 0x1fff;

/// A view over an IPv4 packet.
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

    /// Wrap a buffer that may hold only the start of a packet (as quoted in an ICMP error):
    /// version, IHL and the header must be valid and present, the payload may be cut short;
    /// [`payload`](Self::payload) then returns what is there.
    #[inline]
    pub fn new_truncated(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        p.check_header()?;
        Ok(p)
    }

    fn check_header(&self) -> Result<usize> {
        let b = self.buffer.as_ref();
        if b.len() < field::HEADER_LEN {
            return Err(Error::Truncated);
        }
        if b[field::VER_IHL] >> 4 != 4 {
            return Err(Error::Malformed);
        }
        let hl = self.header_len();
        if hl < field::HEADER_LEN {
            return Err(Error::Malformed);
        }
        if b.len() < hl {
            return Err(Error::Truncated);
        }
        Ok(hl)
    }

    /// Ensure that no accessor method will panic if called: version 4, IHL >= 5, the header
    /// within the buffer, and header length <= total length <= buffer length. Bytes past the
    /// total length (Ethernet padding) are allowed and ignored by [`payload`](Self::payload).
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let hl = self.check_header()?;
        let tl = self.total_len() as usize;
        if tl < hl {
            return Err(Error::Malformed);
        }
        if tl > self.buffer.as_ref().len() {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// The wrapped buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Version field (4 after a checked constructor).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes (IHL × 4), options included.
    #[inline]
    pub fn header_len(&self) -> usize {
        ((self.buffer.as_ref()[field::VER_IHL] & 0x0f) as usize) * 4
    }

    /// DSCP (6 bits).
    #[inline]
    pub fn dscp(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN] >> 2
    }

    /// ECN (2 bits).
    #[inline]
    pub fn ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN] & 0x03
    }

    /// Total length field (header + payload) in bytes.
    #[inline]
    pub fn total_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH)
    }

    /// Identification (used to reassemble fragments).
    #[inline]
    pub fn ident(&self) -> u16 {
        be16(self.buffer.as_ref(), field::IDENT)
    }

    /// Don't-fragment flag.
    #[inline]
    pub fn dont_frag(&self) -> bool {
        be16(self.buffer.as_ref(), field::FLG_OFF) & FLAG_DF != 0
    }

    /// More-fragments flag.
    #[inline]
    pub fn more_frags(&self) -> bool {
        be16(self.buffer.as_ref(), field::FLG_OFF) & FLAG_MF != 0
    }

    /// Fragment offset in bytes (the field × 8).
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        (be16(self.buffer.as_ref(), field::FLG_OFF) & OFFSET_MASK) << 3
    }

    /// True if this packet is a fragment (MF set or a non-zero offset).
    #[inline]
    pub fn is_fragment(&self) -> bool {
        be16(self.buffer.as_ref(), field::FLG_OFF) & (FLAG_MF | OFFSET_MASK) != 0
    }

    /// Time to live.
    #[inline]
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// Protocol of the payload (see [`ip_proto`](super::ip_proto)).
    #[inline]
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    /// Header checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Source address.
    #[inline]
    pub fn src_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(array::<4>(self.buffer.as_ref(), field::SRC))
    }

    /// Destination address.
    #[inline]
    pub fn dst_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(array::<4>(self.buffer.as_ref(), field::DST))
    }

    /// The header, options included.
    #[inline]
    pub fn header(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.header_len()]
    }

    /// The options bytes (empty when IHL = 5).
    #[inline]
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[field::HEADER_LEN..self.header_len()]
    }

    /// Byte range of the payload: from the header end to the total length, clamped to the
    /// buffer (it is only clamped for a view from [`new_truncated`](Self::new_truncated)).
    #[inline]
    pub fn payload_range(&self) -> core::ops::Range<usize> {
        let len = self.buffer.as_ref().len();
        let hl = self.header_len().min(len);
        let end = (self.total_len() as usize).clamp(hl, len);
        hl..end
    }

    /// The payload (the transport segment), Ethernet padding excluded.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.payload_range()]
    }

    /// True if the header checksum is valid.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::sum(self.header()) == 0xffff
    }

    /// Sum of the TCP/UDP pseudo-header for a transport segment of `len` bytes in this packet.
    #[inline]
    pub fn pseudo_header_sum(&self, len: u32) -> u16 {
        checksum::pseudo_header_v4(self.src_addr(), self.dst_addr(), self.protocol(), len)
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
    /// Set version 4 and the header length in bytes (a multiple of 4, 20..=60).
    #[inline]
    pub fn set_version_and_header_len(&mut self, header_len: usize) {
        self.buffer.as_mut()[field::VER_IHL] = 0x40 | ((header_len / 4) as u8 & 0x0f);
    }

    /// Set DSCP and ECN.
    #[inline]
    pub fn set_dscp_ecn(&mut self, dscp: u8, ecn: u8) {
        self.buffer.as_mut()[field::DSCP_ECN] = (dscp << 2) | (ecn & 0x03);
    }

    /// Set the total length.
    #[inline]
    pub fn set_total_len(&mut self, len: u16) {
        put16(self.buffer.as_mut(), field::LENGTH, len);
    }

    /// Set the identification.
    #[inline]
    pub fn set_ident(&mut self, id: u16) {
        put16(self.buffer.as_mut(), field::IDENT, id);
    }

    /// Set DF, MF and the fragment offset in bytes (must be a multiple of 8).
    #[inline]
    pub fn set_frag(&mut self, dont_frag: bool, more_frags: bool, offset: u16) {
        let v = (if dont_frag { FLAG_DF } else { 0 })
            | (if more_frags { FLAG_MF } else { 0 })
            | ((offset >> 3) & OFFSET_MASK);
        put16(self.buffer.as_mut(), field::FLG_OFF, v);
    }

    /// Set the time to live.
    #[inline]
    pub fn set_ttl(&mut self, ttl: u8) {
        self.buffer.as_mut()[field::TTL] = ttl;
    }

    /// Set the protocol.
    #[inline]
    pub fn set_protocol(&mut self, proto: u8) {
        self.buffer.as_mut()[field::PROTOCOL] = proto;
    }

    /// Set the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, c: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM, c);
    }

    /// Set the source address.
    #[inline]
    pub fn set_src_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC..field::SRC + 4].copy_from_slice(&a.octets());
    }

    /// Set the destination address.
    #[inline]
    pub fn set_dst_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::DST..field::DST + 4].copy_from_slice(&a.octets());
    }

    /// Compute and store the header checksum.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(self.header());
        self.set_checksum(c);
    }

    /// Set the source address and update the header checksum incrementally (RFC 1624). The
    /// transport checksum (pseudo-header) is the caller's.
    #[inline]
    pub fn set_src_addr_update(&mut self, a: Ipv4Addr) {
        let c = checksum::update_ipv4(self.checksum(), self.src_addr(), a);
        self.set_src_addr(a);
        self.set_checksum(c);
    }

    /// Set the destination address and update the header checksum incrementally.
    #[inline]
    pub fn set_dst_addr_update(&mut self, a: Ipv4Addr) {
        let c = checksum::update_ipv4(self.checksum(), self.dst_addr(), a);
        self.set_dst_addr(a);
        self.set_checksum(c);
    }

    /// Decrement the TTL and update the header checksum incrementally. Returns the new TTL
    /// (the caller drops and answers "time exceeded" when it reaches 0; a TTL of 0 is left).
    #[inline]
    pub fn decrement_ttl(&mut self) -> u8 {
        let b = self.buffer.as_ref();
        let (ttl, proto) = (b[field::TTL], b[field::PROTOCOL]);
        if ttl == 0 {
            return 0;
        }
        let old = u16::from_be_bytes([ttl, proto]);
        let new = u16::from_be_bytes([ttl - 1, proto]);
        let c = checksum::update_u16(self.checksum(), old, new);
        self.set_ttl(ttl - 1);
        self.set_checksum(c);
        ttl - 1
    }

    /// Mutable options bytes.
    #[inline]
    pub fn options_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        &mut self.buffer.as_mut()[field::HEADER_LEN..hl]
    }

    /// Mutable payload (see [`payload`](Self::payload)).
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let r = self.payload_range();
        &mut self.buffer.as_mut()[r]
    }
}
