//! An owned shared memory mapping (a UMEM area, an AF_XDP ring, an AF_PACKET ring), unmapped
//! on drop.

use std::io;
use std::os::fd::BorrowedFd;
use std::ptr::NonNull;

use crate::io::sys;

/// A mapping of `len` bytes at `ptr`, owned: unmapped when dropped.
#[derive(Debug)]
pub struct Mmap {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; access goes through `&self` /
// `&mut self` methods and the ring protocols built on top, which synchronise with the kernel.
unsafe impl Send for Mmap {}

impl Mmap {
    /// Anonymous shared memory of `len` bytes, pre-faulted (a UMEM).
    pub fn anonymous(len: usize) -> io::Result<Mmap> {
        let ptr = sys::mmap(len, None, 0, true)?;
        Ok(Mmap { ptr, len })
    }

    /// `len` bytes of the socket `fd` at page offset `offset` (a ring).
    pub fn socket(fd: BorrowedFd<'_>, len: usize, offset: libc::off_t) -> io::Result<Mmap> {
        let ptr = sys::mmap(len, Some(fd), offset, true)?;
        Ok(Mmap { ptr, len })
    }

    /// Start of the mapping.
    #[inline]
    pub fn addr(&self) -> NonNull<u8> {
        self.ptr
    }

    /// Length in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for an empty mapping (never: mmap refuses length 0).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: `ptr..ptr+len` is our mapping and no borrow of it outlives `self`.
        let _ = unsafe { sys::munmap(self.ptr, self.len) };
    }
}
