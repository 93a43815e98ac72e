//! Ethernet II frames, with a helper that skips 802.1Q / 802.1ad VLAN tags.

use super::{Error, Result, array, be16, ethertype, put16};

/// Byte offsets of the Ethernet II header.
pub mod field {
    use core::ops::Range;
    /// Destination MAC.
    pub const DST: Range<usize> = 0..6;
    /// Source MAC.
    pub const SRC: Range<usize> = 6..12;
    /// EtherType (or the TPID of the first VLAN tag).
    pub const ETHERTYPE: usize = 12;
    /// Length of the untagged header.
    pub const HEADER_LEN: usize = 14;
    /// Length of one VLAN tag (TPID + TCI).
    pub const VLAN_TAG_LEN: usize = 4;
}

/// A MAC address.
pub type MacAddr = [u8; 6];

/// The broadcast MAC address.
pub const BROADCAST: MacAddr = [0xff; 6];

/// Parses a MAC address written as six colon-separated hex bytes (`02:00:5e:10:00:01`, as
/// sysfs and `ip link` print it); None for anything else.
pub fn parse_mac(s: &str) -> Option<MacAddr> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        let part = parts.next()?;
        if part.is_empty() || part.len() > 2 {
            return None;
        }
        *b = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// Where the network layer starts, after zero, one or two VLAN tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L3 {
    /// EtherType of the network layer (after the tags).
    pub ethertype: u16,
    /// Offset of the network-layer header from the start of the frame.
    pub offset: usize,
    /// VLAN id (12 bits) of the innermost tag (the C-tag under QinQ), if any.
    pub vlan_id: Option<u16>,
    /// Number of VLAN tags skipped (0, 1 or 2).
    pub tags: u8,
}

/// A view over an Ethernet II frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Wrap a buffer without checking its length.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Frame { buffer }
    }

    /// Wrap a buffer, checking that it holds the 14-byte header.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let f = Self::new_unchecked(buffer);
        f.check_len()?;
        Ok(f)
    }

    /// Ensure that no accessor method will panic if called.
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

    /// Destination MAC.
    #[inline]
    pub fn dst_addr(&self) -> MacAddr {
        array(self.buffer.as_ref(), field::DST.start)
    }

    /// Source MAC.
    #[inline]
    pub fn src_addr(&self) -> MacAddr {
        array(self.buffer.as_ref(), field::SRC.start)
    }

    /// The EtherType field at offset 12 (a VLAN TPID if the frame is tagged).
    #[inline]
    pub fn ethertype(&self) -> u16 {
        be16(self.buffer.as_ref(), field::ETHERTYPE)
    }

    /// Everything after the 14-byte header (tags included, if any).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::HEADER_LEN..]
    }

    /// Skip up to two VLAN tags (802.1Q 0x8100, 802.1ad 0x88a8, or 0x9100) and say where the
    /// network layer starts. `Err(Truncated)` if a tag is cut short; `Err(Malformed)` for a
    /// third stacked tag.
    #[inline]
    pub fn l3(&self) -> Result<L3> {
        let b = self.buffer.as_ref();
        let mut et = be16(b, field::ETHERTYPE);
        let mut offset = field::HEADER_LEN;
        let mut vlan_id = None;
        let mut tags = 0u8;
        while is_vlan_tpid(et) {
            if tags == 2 {
                return Err(Error::Malformed);
            }
            if b.len() < offset + field::VLAN_TAG_LEN {
                return Err(Error::Truncated);
            }
            vlan_id = Some(be16(b, offset) & 0x0fff);
            et = be16(b, offset + 2);
            offset += field::VLAN_TAG_LEN;
            tags += 1;
        }
        Ok(L3 {
            ethertype: et,
            offset,
            vlan_id,
            tags,
        })
    }
}

/// True for the TPIDs that introduce a VLAN tag.
#[inline]
pub fn is_vlan_tpid(et: u16) -> bool {
    et == ethertype::VLAN || et == ethertype::QINQ || et == ethertype::QINQ_OLD
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Frame<T> {
    /// The whole wrapped buffer.
    #[inline]
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    /// Set the destination MAC.
    #[inline]
    pub fn set_dst_addr(&mut self, addr: MacAddr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&addr);
    }

    /// Set the source MAC.
    #[inline]
    pub fn set_src_addr(&mut self, addr: MacAddr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&addr);
    }

    /// Set the EtherType at offset 12.
    #[inline]
    pub fn set_ethertype(&mut self, et: u16) {
        put16(self.buffer.as_mut(), field::ETHERTYPE, et);
    }

    /// Swap source and destination MACs (for replies sent back out of the same port).
    #[inline]
    pub fn swap_addrs(&mut self) {
        let (dst, src) = (self.dst_addr(), self.src_addr());
        self.set_dst_addr(src);
        self.set_src_addr(dst);
    }

    /// Mutable payload after the 14-byte header.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::HEADER_LEN..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mac_is_six_colon_separated_hex_bytes() {
        assert_eq!(
            parse_mac("02:00:5e:10:0a:FF"),
            Some([2, 0, 0x5e, 0x10, 0x0a, 0xff])
        );
        assert_eq!(parse_mac("2:0:5e:10:a:ff"), Some([2, 0, 0x5e, 0x10, 0x0a, 0xff]));
        for bad in [
            "",
            "02:00:5e:10:0a",
            "02:00:5e:10:0a:ff:01",
            "02:00:5e:10:0a:zz",
            "02:00:5e:10::ff",
            "002:00:5e:10:0a:ff",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad:?}");
        }
    }
}
