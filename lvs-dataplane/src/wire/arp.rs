//! ARP for Ethernet/IPv4 (RFC 826), with an in-place request-to-reply rewrite.

use std::net::Ipv4Addr;

use super::ethernet::MacAddr;
use super::{Error, Result, array, be16, ethertype, put16};

/// Byte offsets of an Ethernet/IPv4 ARP packet.
pub mod field {
    /// Hardware type (1 = Ethernet).
    pub const HTYPE: usize = 0;
    /// Protocol type (0x0800 = IPv4).
    pub const PTYPE: usize = 2;
    /// Hardware address length (6).
    pub const HLEN: usize = 4;
    /// Protocol address length (4).
    pub const PLEN: usize = 5;
    /// Operation.
    pub const OPER: usize = 6;
    /// Sender hardware address.
    pub const SHA: usize = 8;
    /// Sender protocol address.
    pub const SPA: usize = 14;
    /// Target hardware address.
    pub const THA: usize = 18;
    /// Target protocol address.
    pub const TPA: usize = 24;
    /// Length of an Ethernet/IPv4 ARP packet.
    pub const LEN: usize = 28;
}

/// ARP request.
pub const OP_REQUEST: u16 = 1;
/// ARP reply.
pub const OP_REPLY: u16 = 2;

/// A view over an Ethernet/IPv4 ARP packet (the Ethernet payload).
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

    /// Wrap a buffer, checking its length and that it is Ethernet/IPv4 ARP.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Ensure that no accessor method will panic if called, and that the hardware and protocol
    /// types and lengths are Ethernet (1, 6) and IPv4 (0x0800, 4).
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        if b.len() < field::LEN {
            return Err(Error::Truncated);
        }
        if be16(b, field::HTYPE) != 1
            || be16(b, field::PTYPE) != ethertype::IPV4
            || b[field::HLEN] != 6
            || b[field::PLEN] != 4
        {
            return Err(Error::Malformed);
        }
        Ok(())
    }

    /// The wrapped buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Operation ([`OP_REQUEST`], [`OP_REPLY`]).
    #[inline]
    pub fn operation(&self) -> u16 {
        be16(self.buffer.as_ref(), field::OPER)
    }

    /// Sender hardware address.
    #[inline]
    pub fn sender_hw_addr(&self) -> MacAddr {
        array(self.buffer.as_ref(), field::SHA)
    }

    /// Sender protocol address.
    #[inline]
    pub fn sender_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(array::<4>(self.buffer.as_ref(), field::SPA))
    }

    /// Target hardware address.
    #[inline]
    pub fn target_hw_addr(&self) -> MacAddr {
        array(self.buffer.as_ref(), field::THA)
    }

    /// Target protocol address.
    #[inline]
    pub fn target_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(array::<4>(self.buffer.as_ref(), field::TPA))
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
    /// Set the operation.
    #[inline]
    pub fn set_operation(&mut self, op: u16) {
        put16(self.buffer.as_mut(), field::OPER, op);
    }

    /// Set the sender hardware address.
    #[inline]
    pub fn set_sender_hw_addr(&mut self, mac: MacAddr) {
        self.buffer.as_mut()[field::SHA..field::SHA + 6].copy_from_slice(&mac);
    }

    /// Set the sender protocol address.
    #[inline]
    pub fn set_sender_ip(&mut self, ip: Ipv4Addr) {
        self.buffer.as_mut()[field::SPA..field::SPA + 4].copy_from_slice(&ip.octets());
    }

    /// Set the target hardware address.
    #[inline]
    pub fn set_target_hw_addr(&mut self, mac: MacAddr) {
        self.buffer.as_mut()[field::THA..field::THA + 6].copy_from_slice(&mac);
    }

    /// Set the target protocol address.
    #[inline]
    pub fn set_target_ip(&mut self, ip: Ipv4Addr) {
        self.buffer.as_mut()[field::TPA..field::TPA + 4].copy_from_slice(&ip.octets());
    }

    /// Turn a request into the reply that `our_mac` owns the requested target address: the
    /// operation becomes a reply, the old sender becomes the target and (`our_mac`, requested IP)
    /// becomes the sender. The Ethernet header is the caller's (usually
    /// [`Frame::swap_addrs`](super::ethernet::Frame::swap_addrs) then set the source to
    /// `our_mac`).
    #[inline]
    pub fn make_reply(&mut self, our_mac: MacAddr) {
        let (sha, spa, tpa) = (self.sender_hw_addr(), self.sender_ip(), self.target_ip());
        self.set_operation(OP_REPLY);
        self.set_target_hw_addr(sha);
        self.set_target_ip(spa);
        self.set_sender_hw_addr(our_mac);
        self.set_sender_ip(tpa);
    }
}
