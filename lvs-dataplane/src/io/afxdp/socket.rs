//! One AF_XDP socket bound to an (interface, queue): its four rings mapped and wrapped in
//! cursors. The first socket of a worker registers the UMEM; the others share it
//! (`XDP_SHARED_UMEM`) with their own fill and completion rings.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::AtomicU32;

use super::mmap::Mmap;
use super::ring::Cursor;
use super::umem::Umem;
use crate::io::sys;

/// How a socket ended up bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindMode {
    /// Zero-copy (driver support).
    ZeroCopy,
    /// Copy mode (any driver; what veth gives).
    Copy,
    /// Sharing the first socket's UMEM (and its mode).
    Shared,
}

/// An AF_XDP socket with its fill, completion, RX and TX rings.
#[derive(Debug)]
pub struct XskSocket {
    pub(super) fill: Cursor<u64>,
    pub(super) comp: Cursor<u64>,
    pub(super) rx: Cursor<libc::xdp_desc>,
    pub(super) tx: Cursor<libc::xdp_desc>,
    /// Descriptors written into the TX ring but not yet submitted.
    pub(super) tx_queued: u32,
    /// Whether the socket was bound with `XDP_USE_NEED_WAKEUP`.
    pub(super) need_wakeup: bool,
    /// How it was bound.
    pub mode: BindMode,
    /// Interface index.
    pub ifindex: u32,
    /// Queue id.
    pub queue: u32,
    // Rings before the descriptor: unmapped before the socket closes.
    _maps: [Mmap; 4],
    fd: OwnedFd,
}

/// Ring mapping `size` entries of `T` at page offset `pgoff`, and its cursor.
fn map_ring<T: Copy>(
    fd: BorrowedFd<'_>,
    off: &libc::xdp_ring_offset,
    size: u32,
    pgoff: libc::off_t,
) -> io::Result<(Mmap, Cursor<T>)> {
    let len = off.desc as usize + size as usize * size_of::<T>();
    let map = Mmap::socket(fd, len, pgoff)?;
    let at = |o: u64| -> io::Result<NonNull<u8>> {
        if o as usize >= len {
            return Err(io::Error::other("ring offset outside the mapping"));
        }
        // SAFETY: `o < len`: the result stays inside the mapping.
        let p = unsafe { map.addr().as_ptr().add(o as usize) };
        NonNull::new(p).ok_or_else(|| io::Error::other("null ring pointer"))
    };
    let (prod, cons, flags, desc) = (
        at(off.producer)?,
        at(off.consumer)?,
        at(off.flags)?,
        at(off.desc)?,
    );
    // SAFETY: the kernel's offsets are inside the mapping, which lives as long as the cursor
    // (both are kept in the same XskSocket, the mapping dropped after); the index and flags
    // words are u32-aligned and the descriptors aligned for `T` (struct xdp_ring layout);
    // `desc` is followed by `size` entries (`len` above); this cursor is the only user-space
    // side of the ring.
    let cursor = unsafe {
        Cursor::new(
            prod.cast::<AtomicU32>(),
            cons.cast::<AtomicU32>(),
            Some(flags.cast::<AtomicU32>()),
            desc.cast::<T>(),
            size,
        )
    };
    Ok((map, cursor))
}

impl XskSocket {
    /// Opens a socket on (`ifindex`, `queue`) with rings of `ring_size` entries. With
    /// `shared` = None it registers `umem` and binds zero-copy, falling back to copy mode when
    /// the driver answers EOPNOTSUPP (or straight to copy mode with `force_copy`); otherwise
    /// it shares the UMEM of the socket `shared`.
    pub fn open(
        umem: &Umem,
        shared: Option<BorrowedFd<'_>>,
        ifindex: u32,
        queue: u32,
        ring_size: u32,
        force_copy: bool,
    ) -> io::Result<XskSocket> {
        if !ring_size.is_power_of_two() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "AF_XDP ring size must be a power of two",
            ));
        }
        let fd = sys::socket(libc::AF_XDP, libc::SOCK_RAW, 0)?;
        let b = fd.as_fd();
        if shared.is_none() {
            sys::setsockopt(b, libc::SOL_XDP, libc::XDP_UMEM_REG, &umem.reg())?;
        }
        let rs = ring_size as libc::c_int;
        sys::setsockopt(b, libc::SOL_XDP, libc::XDP_UMEM_FILL_RING, &rs)?;
        sys::setsockopt(b, libc::SOL_XDP, libc::XDP_UMEM_COMPLETION_RING, &rs)?;
        sys::setsockopt(b, libc::SOL_XDP, libc::XDP_RX_RING, &rs)?;
        sys::setsockopt(b, libc::SOL_XDP, libc::XDP_TX_RING, &rs)?;
        // SAFETY: all-zero is a valid xdp_mmap_offsets (plain integers).
        let mut off: libc::xdp_mmap_offsets = unsafe { std::mem::zeroed() };
        // SAFETY: xdp_mmap_offsets is a struct of u64s; any bytes are a valid value.
        let len = unsafe { sys::getsockopt(b, libc::SOL_XDP, libc::XDP_MMAP_OFFSETS, &mut off) }?;
        if len != size_of::<libc::xdp_mmap_offsets>() {
            return Err(io::Error::other(
                "kernel without ring flags (XDP_MMAP_OFFSETS v1)",
            ));
        }
        let (fill_map, fill) = map_ring::<u64>(
            b,
            &off.fr,
            ring_size,
            libc::XDP_UMEM_PGOFF_FILL_RING as libc::off_t,
        )?;
        let (comp_map, comp) = map_ring::<u64>(
            b,
            &off.cr,
            ring_size,
            libc::XDP_UMEM_PGOFF_COMPLETION_RING as libc::off_t,
        )?;
        let (rx_map, rx) = map_ring(b, &off.rx, ring_size, libc::XDP_PGOFF_RX_RING)?;
        let (tx_map, tx) = map_ring(b, &off.tx, ring_size, libc::XDP_PGOFF_TX_RING)?;

        let mut addr = libc::sockaddr_xdp {
            sxdp_family: libc::AF_XDP as u16,
            sxdp_flags: 0,
            sxdp_ifindex: ifindex,
            sxdp_queue_id: queue,
            sxdp_shared_umem_fd: 0,
        };
        let (mode, need_wakeup) = match shared {
            Some(first) => {
                // The kernel refuses COPY/ZEROCOPY/NEED_WAKEUP with SHARED_UMEM: they come
                // from the first socket's bind.
                addr.sxdp_flags = libc::XDP_SHARED_UMEM;
                addr.sxdp_shared_umem_fd = std::os::fd::AsRawFd::as_raw_fd(&first) as u32;
                sys::bind_xdp(b, &addr)?;
                (BindMode::Shared, true)
            }
            None => {
                let zc = if force_copy {
                    Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP))
                } else {
                    addr.sxdp_flags = libc::XDP_ZEROCOPY | libc::XDP_USE_NEED_WAKEUP;
                    sys::bind_xdp(b, &addr)
                };
                match zc {
                    Ok(()) => (BindMode::ZeroCopy, true),
                    Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                        addr.sxdp_flags = libc::XDP_COPY | libc::XDP_USE_NEED_WAKEUP;
                        sys::bind_xdp(b, &addr)?;
                        (BindMode::Copy, true)
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        Ok(XskSocket {
            fill,
            comp,
            rx,
            tx,
            tx_queued: 0,
            need_wakeup,
            mode,
            ifindex,
            queue,
            _maps: [fill_map, comp_map, rx_map, tx_map],
            fd,
        })
    }

    /// The kernel's counters for this socket (`XDP_STATISTICS`).
    pub fn kernel_stats(&self) -> io::Result<libc::xdp_statistics> {
        // SAFETY: all-zero is a valid xdp_statistics (plain integers).
        let mut st: libc::xdp_statistics = unsafe { std::mem::zeroed() };
        // SAFETY: xdp_statistics is a struct of u64s; any bytes are a valid value.
        unsafe { sys::getsockopt(self.fd.as_fd(), libc::SOL_XDP, libc::XDP_STATISTICS, &mut st) }?;
        Ok(st)
    }
}

impl AsFd for XskSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use std::mem::{offset_of, size_of};

    /// Sizes and offsets of include/uapi/linux/if_xdp.h, as the libc crate defines them.
    #[test]
    fn if_xdp_layouts() {
        assert_eq!(size_of::<libc::sockaddr_xdp>(), 16);
        assert_eq!(offset_of!(libc::sockaddr_xdp, sxdp_queue_id), 8);
        assert_eq!(size_of::<libc::xdp_desc>(), 16);
        assert_eq!(offset_of!(libc::xdp_desc, len), 8);
        assert_eq!(size_of::<libc::xdp_umem_reg>(), 32);
        assert_eq!(offset_of!(libc::xdp_umem_reg, chunk_size), 16);
        assert_eq!(offset_of!(libc::xdp_umem_reg, headroom), 20);
        assert_eq!(size_of::<libc::xdp_ring_offset>(), 32);
        assert_eq!(offset_of!(libc::xdp_ring_offset, flags), 24);
        assert_eq!(size_of::<libc::xdp_mmap_offsets>(), 128);
        assert_eq!(offset_of!(libc::xdp_mmap_offsets, cr), 96);
        assert_eq!(size_of::<libc::xdp_statistics>(), 48);
        assert_eq!(libc::XDP_PGOFF_TX_RING, 0x8000_0000);
        assert_eq!(libc::XDP_UMEM_PGOFF_FILL_RING, 0x1_0000_0000);
        assert_eq!(libc::XDP_UMEM_PGOFF_COMPLETION_RING, 0x1_8000_0000);
        assert_eq!(libc::SOL_XDP, 283);
        assert_eq!(libc::AF_XDP, 44);
    }

    /// Backends move into worker threads; steering objects are shared between them.
    #[test]
    fn backends_are_send_and_steering_is_shareable() {
        fn send<T: Send>() {}
        fn sync<T: Send + Sync>() {}
        send::<super::super::AfXdpIo>();
        send::<crate::io::afpacket::AfPacketIo>();
        sync::<crate::io::xdp_prog::XdpSteering>();
        sync::<crate::io::xdp_prog::BalancerAddrs>();
    }
}
