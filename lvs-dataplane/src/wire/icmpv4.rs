//! ICMP for IPv4 (RFC 792, RFC 1191): echo, and the errors that quote the offending packet.

use super::{Error, Result, be16, checksum, ipv4, put16};

/// Byte offsets of the ICMP header.
pub mod field {
    /// Message type.
    pub const TYPE: usize = 0;
    /// Code.
    pub const CODE: usize = 1;
    /// Checksum (over the whole message).
    pub const CHECKSUM: usize = 2;
    /// Echo identifier.
    pub const ECHO_IDENT: usize = 4;
    /// Echo sequence number.
    pub const ECHO_SEQ: usize = 6;
    /// Next-hop MTU of "fragmentation needed" (RFC 1191).
    pub const NEXT_HOP_MTU: usize = 6;
    /// Length of the header; errors quote the offending packet from here.
    pub const HEADER_LEN: usize = 8;
}

/// ICMP message types used by lvs.
pub mod msg_type {
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 0;
    /// Destination unreachable.
    pub const DEST_UNREACHABLE: u8 = 3;
    /// Source quench (deprecated, still an error that quotes a packet).
    pub const SOURCE_QUENCH: u8 = 4;
    /// Redirect.
    pub const REDIRECT: u8 = 5;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 8;
    /// Time exceeded.
    pub const TIME_EXCEEDED: u8 = 11;
    /// Parameter problem.
    pub const PARAM_PROBLEM: u8 = 12;
}

/// "Fragmentation needed and DF set", a code of [`msg_type::DEST_UNREACHABLE`].
pub const CODE_FRAG_NEEDED: u8 = 4;

/// True for the message types that carry the offending IP header and 8+ bytes of its payload.
#[inline]
pub fn is_error(t: u8) -> bool {
    matches!(
        t,
        msg_type::DEST_UNREACHABLE
            | msg_type::SOURCE_QUENCH
            | msg_type::REDIRECT
            | msg_type::TIME_EXCEEDED
            | msg_type::PARAM_PROBLEM
    )
}

/// A view over an ICMP message (the IPv4 payload).
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

    /// Wrap a message, checking that the 8-byte header is present.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Ensure that no accessor method will panic if called (8 bytes present).
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < field::HEADER_LEN {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
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

    /// Next-hop MTU (meaningful for destination unreachable / fragmentation needed).
    #[inline]
    pub fn next_hop_mtu(&self) -> u16 {
        be16(self.buffer.as_ref(), field::NEXT_HOP_MTU)
    }

    /// Everything after the 8-byte header (echo data, or the quoted packet of an error).
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[field::HEADER_LEN..]
    }

    /// For an error message, the quoted packet as a truncated IPv4 view (its header is
    /// complete, its payload is usually only the first 8 bytes of the transport header).
    /// `Err(Malformed)` for non-error types.
    #[inline]
    pub fn quoted_ipv4(&self) -> Result<ipv4::Packet<&[u8]>> {
        if !is_error(self.msg_type()) {
            return Err(Error::Malformed);
        }
        ipv4::Packet::new_truncated(self.data())
    }

    /// True if the checksum over the whole message is valid.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::sum(self.buffer.as_ref()) == 0xffff
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

    /// Set the unused word of an error message to 0 and the next-hop MTU (frag needed).
    #[inline]
    pub fn set_next_hop_mtu(&mut self, mtu: u16) {
        put16(self.buffer.as_mut(), field::ECHO_IDENT, 0);
        put16(self.buffer.as_mut(), field::NEXT_HOP_MTU, mtu);
    }

    /// Mutable data after the header (the quoted packet of an error).
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::HEADER_LEN..]
    }

    /// Compute and store the checksum over the whole message.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(self.buffer.as_ref());
        self.set_checksum(c);
    }
}
