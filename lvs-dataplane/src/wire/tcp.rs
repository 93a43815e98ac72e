//! TCP segments (RFC 9293): header fields, a bounded options iterator, option insertion, and
//! checksums over the IPv4 / IPv6 pseudo-header.
//!
//! The view's buffer is exactly the segment (the IP payload): the checksum covers all of it.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::{Error, Result, be16, be32, checksum, ip_proto, put16, put32};

/// Byte offsets of the TCP header.
pub mod field {
    /// Source port.
    pub const SRC_PORT: usize = 0;
    /// Destination port.
    pub const DST_PORT: usize = 2;
    /// Sequence number.
    pub const SEQ: usize = 4;
    /// Acknowledgment number.
    pub const ACK: usize = 8;
    /// Data offset (high nibble, in 32-bit words) and reserved bits.
    pub const DATA_OFF: usize = 12;
    /// Flags (CWR ECE URG ACK PSH RST SYN FIN).
    pub const FLAGS: usize = 13;
    /// Window.
    pub const WINDOW: usize = 14;
    /// Checksum.
    pub const CHECKSUM: usize = 16;
    /// Urgent pointer.
    pub const URGENT: usize = 18;
    /// Length of a header without options.
    pub const HEADER_LEN: usize = 20;
    /// Longest header (data offset 15).
    pub const MAX_HEADER_LEN: usize = 60;
}

/// TCP flag bits as found in [`Packet::flags`].
pub mod flags {
    /// No more data from sender.
    pub const FIN: u8 = 0x01;
    /// Synchronize sequence numbers.
    pub const SYN: u8 = 0x02;
    /// Reset the connection.
    pub const RST: u8 = 0x04;
    /// Push.
    pub const PSH: u8 = 0x08;
    /// Acknowledgment field is significant.
    pub const ACK: u8 = 0x10;
    /// Urgent pointer is significant.
    pub const URG: u8 = 0x20;
    /// ECN echo.
    pub const ECE: u8 = 0x40;
    /// Congestion window reduced.
    pub const CWR: u8 = 0x80;
}

/// Option kinds.
pub mod option_kind {
    /// End of option list.
    pub const END: u8 = 0;
    /// No operation (padding).
    pub const NOP: u8 = 1;
    /// Maximum segment size.
    pub const MSS: u8 = 2;
    /// Window scale.
    pub const WINDOW_SCALE: u8 = 3;
    /// SACK permitted.
    pub const SACK_PERMITTED: u8 = 4;
    /// SACK blocks.
    pub const SACK: u8 = 5;
    /// Timestamps.
    pub const TIMESTAMPS: u8 = 8;
    /// TOA (TCP option address, used by FULLNAT to pass the client address; experimental kind).
    pub const TOA: u8 = 254;
}

/// One TCP option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpOption<'a> {
    /// Maximum segment size.
    Mss(u16),
    /// Window scale shift.
    WindowScale(u8),
    /// SACK permitted.
    SackPermitted,
    /// SACK blocks (raw pairs of 32-bit edges).
    Sack(&'a [u8]),
    /// Timestamps (value, echo reply).
    Timestamps(u32, u32),
    /// Any other option, or a known kind with an unexpected length.
    Other {
        /// Option kind.
        kind: u8,
        /// Option data (after kind and length).
        data: &'a [u8],
    },
}

/// Iterator over TCP options. NOPs are skipped; it ends at END, at the end of the options, or
/// at the first malformed option (length < 2 or past the end), after which
/// [`malformed`](Self::malformed) is true. Bounded by the 40-byte option space.
#[derive(Debug, Clone)]
pub struct Options<'a> {
    data: &'a [u8],
    malformed: bool,
}

impl<'a> Options<'a> {
    /// Iterate over raw option bytes.
    pub fn new(data: &'a [u8]) -> Self {
        Options {
            data,
            malformed: false,
        }
    }

    /// True if the walk stopped on a malformed option.
    pub fn malformed(&self) -> bool {
        self.malformed
    }
}

impl<'a> Iterator for Options<'a> {
    type Item = TcpOption<'a>;

    fn next(&mut self) -> Option<TcpOption<'a>> {
        loop {
            let (&kind, rest) = self.data.split_first()?;
            match kind {
                option_kind::END => {
                    self.data = &[];
                    return None;
                }
                option_kind::NOP => {
                    self.data = rest;
                    continue;
                }
                _ => {}
            }
            let len = match rest.first() {
                Some(&l) if l >= 2 && (l as usize) <= self.data.len() => l as usize,
                _ => {
                    self.malformed = true;
                    self.data = &[];
                    return None;
                }
            };
            let body = &self.data[2..len];
            self.data = &self.data[len..];
            return Some(match (kind, body.len()) {
                (option_kind::MSS, 2) => TcpOption::Mss(be16(body, 0)),
                (option_kind::WINDOW_SCALE, 1) => TcpOption::WindowScale(body[0]),
                (option_kind::SACK_PERMITTED, 0) => TcpOption::SackPermitted,
                (option_kind::SACK, n) if n % 8 == 0 && n > 0 => TcpOption::Sack(body),
                (option_kind::TIMESTAMPS, 8) => TcpOption::Timestamps(be32(body, 0), be32(body, 4)),
                _ => TcpOption::Other { kind, data: body },
            });
        }
    }
}

/// A view over a TCP segment.
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

    /// Wrap a segment: see [`check_len`](Self::check_len).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Ensure that no accessor method will panic if called: 20 bytes present, data offset
    /// >= 5 and the header within the buffer.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        if b.len() < field::HEADER_LEN {
            return Err(Error::Truncated);
        }
        let hl = self.header_len();
        if hl < field::HEADER_LEN {
            return Err(Error::Malformed);
        }
        if hl > b.len() {
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

    /// Sequence number.
    #[inline]
    pub fn seq_number(&self) -> u32 {
        be32(self.buffer.as_ref(), field::SEQ)
    }

    /// Acknowledgment number.
    #[inline]
    pub fn ack_number(&self) -> u32 {
        be32(self.buffer.as_ref(), field::ACK)
    }

    /// Header length in bytes (data offset × 4), options included.
    #[inline]
    pub fn header_len(&self) -> usize {
        ((self.buffer.as_ref()[field::DATA_OFF] >> 4) as usize) * 4
    }

    /// Flag byte (see [`flags`]).
    #[inline]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// FIN flag.
    #[inline]
    pub fn fin(&self) -> bool {
        self.flags() & flags::FIN != 0
    }

    /// SYN flag.
    #[inline]
    pub fn syn(&self) -> bool {
        self.flags() & flags::SYN != 0
    }

    /// RST flag.
    #[inline]
    pub fn rst(&self) -> bool {
        self.flags() & flags::RST != 0
    }

    /// ACK flag.
    #[inline]
    pub fn ack(&self) -> bool {
        self.flags() & flags::ACK != 0
    }

    /// Window.
    #[inline]
    pub fn window_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::WINDOW)
    }

    /// Checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Urgent pointer.
    #[inline]
    pub fn urgent_at(&self) -> u16 {
        be16(self.buffer.as_ref(), field::URGENT)
    }

    /// Raw option bytes (header length − 20).
    #[inline]
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[field::HEADER_LEN..self.header_len()]
    }

    /// Iterate over the options.
    #[inline]
    pub fn option_iter(&self) -> Options<'_> {
        Options::new(self.options())
    }

    /// Bytes of option space still free in the header (40 − options length), before any
    /// reuse of padding.
    #[inline]
    pub fn free_option_space(&self) -> usize {
        field::MAX_HEADER_LEN - self.header_len()
    }

    /// The payload after the header.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }

    /// True if the checksum is valid for this segment from `src` to `dst` over IPv4.
    #[inline]
    pub fn verify_checksum_v4(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        let b = self.buffer.as_ref();
        let ph = checksum::pseudo_header_v4(src, dst, ip_proto::TCP, b.len() as u32);
        checksum::add(ph, checksum::sum(b)) == 0xffff
    }

    /// True if the checksum is valid for this segment from `src` to `dst` over IPv6.
    #[inline]
    pub fn verify_checksum_v6(&self, src: &Ipv6Addr, dst: &Ipv6Addr) -> bool {
        let b = self.buffer.as_ref();
        let ph = checksum::pseudo_header_v6(src, dst, ip_proto::TCP, b.len() as u32);
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

    /// Set the sequence number.
    #[inline]
    pub fn set_seq_number(&mut self, v: u32) {
        put32(self.buffer.as_mut(), field::SEQ, v);
    }

    /// Set the acknowledgment number.
    #[inline]
    pub fn set_ack_number(&mut self, v: u32) {
        put32(self.buffer.as_mut(), field::ACK, v);
    }

    /// Set the header length in bytes (a multiple of 4, 20..=60); keeps the reserved bits.
    #[inline]
    pub fn set_header_len(&mut self, len: usize) {
        let b = self.buffer.as_mut();
        b[field::DATA_OFF] = (((len / 4) as u8) << 4) | (b[field::DATA_OFF] & 0x0f);
    }

    /// Set the flag byte.
    #[inline]
    pub fn set_flags(&mut self, f: u8) {
        self.buffer.as_mut()[field::FLAGS] = f;
    }

    /// Set the window.
    #[inline]
    pub fn set_window_len(&mut self, w: u16) {
        put16(self.buffer.as_mut(), field::WINDOW, w);
    }

    /// Set the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, c: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM, c);
    }

    /// Set the urgent pointer.
    #[inline]
    pub fn set_urgent_at(&mut self, u: u16) {
        put16(self.buffer.as_mut(), field::URGENT, u);
    }

    /// Set the source port and update the checksum incrementally.
    #[inline]
    pub fn set_src_port_update(&mut self, p: u16) {
        let c = checksum::update_u16(self.checksum(), self.src_port(), p);
        self.set_src_port(p);
        self.set_checksum(c);
    }

    /// Set the destination port and update the checksum incrementally.
    #[inline]
    pub fn set_dst_port_update(&mut self, p: u16) {
        let c = checksum::update_u16(self.checksum(), self.dst_port(), p);
        self.set_dst_port(p);
        self.set_checksum(c);
    }

    /// Mutable option bytes.
    #[inline]
    pub fn options_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        &mut self.buffer.as_mut()[field::HEADER_LEN..hl]
    }

    /// Mutable payload.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        &mut self.buffer.as_mut()[hl..]
    }

    /// Compute and store the checksum over IPv4.
    #[inline]
    pub fn fill_checksum_v4(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let b = self.buffer.as_ref();
        let ph = checksum::pseudo_header_v4(src, dst, ip_proto::TCP, b.len() as u32);
        let c = !checksum::add(ph, checksum::sum(b));
        self.set_checksum(c);
    }

    /// Compute and store the checksum over IPv6.
    #[inline]
    pub fn fill_checksum_v6(&mut self, src: &Ipv6Addr, dst: &Ipv6Addr) {
        self.set_checksum(0);
        let b = self.buffer.as_ref();
        let ph = checksum::pseudo_header_v6(src, dst, ip_proto::TCP, b.len() as u32);
        let c = !checksum::add(ph, checksum::sum(b));
        self.set_checksum(c);
    }
}

/// Insert `option` (kind, length, data) first in the options of the segment occupying
/// `buf[..seg_len]` (right after the fixed header, so an END option already there cannot hide
/// it), padding it with NOPs to a multiple of 4 and moving the other options and the payload up.
/// Returns the new segment length. The data offset is updated; the checksum is NOT (the caller
/// updates it, together with the IP length fields). `buf` must have room for the growth.
///
/// Errors: `Truncated` if the segment is invalid or `buf` lacks room; `Malformed` if the option
/// does not fit in the 40-byte option space or is shorter than 2 bytes.
pub fn insert_option(buf: &mut [u8], seg_len: usize, option: &[u8]) -> Result<usize> {
    if seg_len > buf.len() {
        return Err(Error::Truncated);
    }
    let hl = Packet::new_checked(&buf[..seg_len])?.header_len();
    if option.len() < 2 {
        return Err(Error::Malformed);
    }
    let grow = option.len().div_ceil(4) * 4;
    if hl + grow > field::MAX_HEADER_LEN {
        return Err(Error::Malformed);
    }
    if seg_len + grow > buf.len() {
        return Err(Error::Truncated);
    }
    let at = field::HEADER_LEN;
    buf.copy_within(at..seg_len, at + grow);
    let pad = grow - option.len();
    buf[at..at + pad].fill(option_kind::NOP);
    buf[at + pad..at + grow].copy_from_slice(option);
    Packet::new_unchecked(&mut *buf).set_header_len(hl + grow);
    Ok(seg_len + grow)
}
