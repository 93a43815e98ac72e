//! The UMEM: one anonymous shared area cut into fixed-size chunks (frames) that the AF_XDP
//! sockets of a worker share, and the free list of chunks owned by user space.

use std::io;

use super::mmap::Mmap;

/// Packet memory registered with the kernel (`XDP_UMEM_REG`), aligned mode.
#[derive(Debug)]
pub struct Umem {
    area: Mmap,
    chunk_size: u32,
    frames: u32,
}

impl Umem {
    /// `frames` chunks of `chunk_size` bytes (a power of two, 2048..=4096 in aligned mode).
    pub fn new(frames: u32, chunk_size: u32) -> io::Result<Umem> {
        if !chunk_size.is_power_of_two() || !(2048..=4096).contains(&chunk_size) || frames == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "UMEM chunk size must be 2048 or 4096 and frames > 0",
            ));
        }
        let area = Mmap::anonymous(frames as usize * chunk_size as usize)?;
        Ok(Umem {
            area,
            chunk_size,
            frames,
        })
    }

    /// The registration block for `setsockopt(SOL_XDP, XDP_UMEM_REG)`.
    pub fn reg(&self) -> libc::xdp_umem_reg {
        libc::xdp_umem_reg {
            addr: self.area.addr().as_ptr() as u64,
            len: self.area.len() as u64,
            chunk_size: self.chunk_size,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        }
    }

    /// Chunk size.
    #[inline]
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Number of chunks.
    #[inline]
    pub fn frames(&self) -> u32 {
        self.frames
    }

    /// UMEM offset of the chunk holding `addr`.
    #[inline]
    pub fn chunk_of(&self, addr: u64) -> u64 {
        addr & !(self.chunk_size as u64 - 1)
    }

    /// Every chunk's offset, for the initial free list.
    pub fn all_chunks(&self) -> impl Iterator<Item = u64> + '_ {
        (0..self.frames as u64).map(|i| i * self.chunk_size as u64)
    }

    /// The bytes of the chunk at UMEM offset `chunk`.
    ///
    /// # Safety
    /// The chunk must be owned by user space (taken off the RX or completion ring, or from the
    /// free list, and not yet put on a fill or TX ring), and no other reference to it may be
    /// alive while the returned slice is.
    #[inline]
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn chunk_mut(&self, chunk: u64) -> &mut [u8] {
        assert!(
            chunk.is_multiple_of(self.chunk_size as u64) && chunk < self.area.len() as u64,
            "chunk {chunk} outside the UMEM"
        );
        // SAFETY: `chunk` is inside the mapping (checked above).
        let p = unsafe { self.area.addr().as_ptr().add(chunk as usize) };
        // SAFETY: the chunk is inside the mapping (whole chunks: the area is `frames` chunks
        // long); exclusivity is the caller's guarantee.
        unsafe { std::slice::from_raw_parts_mut(p, self.chunk_size as usize) }
    }
}
