//! UDP datagrams (RFC 768) and their checksums over IPv4 / IPv6.
//!
//! A checksum field of 0 means "no checksum" over IPv4 (and is invalid over IPv6); a computed
//! checksum of 0 is stored as 0xFFFF.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::{Error, Result, be16, checksum, ip_proto, put16};

/// Byte offsets of the UDP header.
pub mod field {
    /// Source port.
    pub const SRC_PORT: usize = 0;
    /// Destination port.
    pub const DST_PORT: usize = 2;
    /// Length (header + payload).
    pub const LENGTH: usize = 4;
    /// Checksum.
    pub const CHECKSUM: usize = 6;
    /// Header length.
    pub const HEADER_LEN: usize = 8;
}

/// A view over a UDP datagram.
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

    /// Wrap a datagram: see [`check_len`](Self::check_len).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Ensure that no accessor method will panic if called: 8 bytes present and
    /// 8 <= length field <= buffer length (bytes past the length field are ignored).
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        if b.len() < field::HEADER_LEN {
            return Err(Error::Truncated);
        }
        let l = self.len() as usize;
        if l < field::HEADER_LEN {
            return Err(Error::Malformed);
        }
        if l > b.len() {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// The wrapped buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Source port.
    #[inline]
    pub fn src_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::SRC_PORT)
    }

    /// Destination port.
    #[inline]
    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::DST_PORT)
    }

    /// Length field (header + payload).
    #[inline]
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH)
    }

    /// Checksum field (0 = none, IPv4 only).
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// The datagram as covered by the length field, clamped to the buffer.
    #[inline]
    pub fn datagram(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        &b[..(self.len() as usize).clamp(field::HEADER_LEN.min(b.len()), b.len())]
    }

    /// The payload (up to the length field).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.datagram()[field::HEADER_LEN..]
    }

    fn sum_with(&self, ph: u16) -> u16 {
        checksum::add(ph, checksum::sum(self.datagram()))
    }

    /// True if the checksum is absent (0) or valid over IPv4.
    #[inline]
    pub fn verify_checksum_v4(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        if self.checksum() == 0 {
            return true;
        }
        let ph = checksum::pseudo_header_v4(src, dst, ip_proto::UDP, self.len() as u32);
        self.sum_with(ph) == 0xffff
    }

    /// True if the checksum is valid over IPv6 (where 0 is not allowed).
    #[inline]
    pub fn verify_checksum_v6(&self, src: &Ipv6Addr, dst: &Ipv6Addr) -> bool {
        if self.checksum() == 0 {
            return false;
        }
        let ph = checksum::pseudo_header_v6(src, dst, ip_proto::UDP, self.len() as u32);
        self.sum_with(ph) == 0xffff
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
    /// Set the source port.
    #[inline]
    pub fn set_src_port(&mut self, p: u16) {
        put16(self.buffer.as_mut(), field::SRC_PORT, p);
    }

    /// Set the destination port.
    #[inline]
    pub fn set_dst_port(&mut self, p: u16) {
        put16(self.buffer.as_mut(), field::DST_PORT, p);
    }

    /// Set the length field.
    #[inline]
    pub fn set_len(&mut self, l: u16) {
        put16(self.buffer.as_mut(), field::LENGTH, l);
    }

    /// Set the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, c: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM, c);
    }

    /// Set the source port and update the checksum incrementally (a 0 checksum stays 0).
    #[inline]
    pub fn set_src_port_update(&mut self, p: u16) {
        let c = checksum::update_udp(self.checksum(), self.src_port(), p);
        self.set_src_port(p);
        self.set_checksum(c);
    }

    /// Set the destination port and update the checksum incrementally (a 0 checksum stays 0).
    #[inline]
    pub fn set_dst_port_update(&mut self, p: u16) {
        let c = checksum::update_udp(self.checksum(), self.dst_port(), p);
        self.set_dst_port(p);
        self.set_checksum(c);
    }

    /// Mutable payload (up to the length field).
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = self.datagram().len();
        &mut self.buffer.as_mut()[field::HEADER_LEN..end]
    }

    fn fill_with(&mut self, ph: u16) {
        self.set_checksum(0);
        let c = !self.sum_with(ph);
        self.set_checksum(if c == 0 { 0xffff } else { c });
    }

    /// Compute and store the checksum over IPv4 (a computed 0 is stored as 0xFFFF).
    #[inline]
    pub fn fill_checksum_v4(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.fill_with(checksum::pseudo_header_v4(
            src,
            dst,
            ip_proto::UDP,
            self.len() as u32,
        ));
    }

    /// Compute and store the checksum over IPv6 (a computed 0 is stored as 0xFFFF).
    #[inline]
    pub fn fill_checksum_v6(&mut self, src: &Ipv6Addr, dst: &Ipv6Addr) {
        self.fill_with(checksum::pseudo_header_v6(
            src,
            dst,
            ip_proto::UDP,
            self.len() as u32,
        ));
    }
}
