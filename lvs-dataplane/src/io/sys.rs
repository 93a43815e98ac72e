//! Every libc call of the packet I/O backends, one helper per call, each turning the C error
//! convention (-1 and errno) into an `io::Error`. Nothing else in `io` calls libc directly.

use std::ffi::CString;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::time::Duration;

/// Turns a C return value into a `Result`: -1 means "see errno".
#[inline]
fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `socket(2)` with `SOCK_CLOEXEC`; the descriptor is owned (closed on drop).
pub fn socket(domain: libc::c_int, ty: libc::c_int, protocol: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes no pointers.
    let fd = cvt(unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, protocol) })?;
    // SAFETY: `fd` was just returned by socket(2) and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `setsockopt(2)` with the option value `value` (read by the kernel, `size_of::<T>()` bytes).
pub fn setsockopt<T: Copy>(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    // SAFETY: `value` points to `size_of::<T>()` readable bytes for the duration of the call;
    // the kernel only reads them.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// `getsockopt(2)` into `value`; returns the length the kernel wrote.
///
/// # Safety
/// `T` must be plain data for which every byte pattern the kernel may write is a valid value
/// (integers and `#[repr(C)]` structs of integers, such as `xdp_mmap_offsets`).
pub unsafe fn getsockopt<T: Copy>(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: &mut T,
) -> io::Result<usize> {
    let mut len = size_of::<T>() as libc::socklen_t;
    // SAFETY: `value` points to `size_of::<T>()` writable bytes and `len` says so; the caller
    // guarantees any bytes written form a valid `T`.
    cvt(unsafe { libc::getsockopt(fd.as_raw_fd(), level, name, (value as *mut T).cast(), &mut len) })?;
    Ok(len as usize)
}

/// `bind(2)` of an AF_PACKET socket to interface `ifindex` for frames of ethertype `protocol`
/// (host order; `ETH_P_ALL` for every frame).
pub fn bind_packet(fd: BorrowedFd<'_>, ifindex: u32, protocol: u16) -> io::Result<()> {
    // SAFETY: sockaddr_ll is plain integers; all-zero is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = protocol.to_be();
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: `sll` is a valid sockaddr_ll and the length given is its size.
    cvt(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// `bind(2)` of an AF_XDP socket (`sockaddr_xdp`: interface, queue, flags, shared UMEM fd).
pub fn bind_xdp(fd: BorrowedFd<'_>, addr: &libc::sockaddr_xdp) -> io::Result<()> {
    // SAFETY: `addr` is a valid sockaddr_xdp and the length given is its size.
    cvt(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (addr as *const libc::sockaddr_xdp).cast(),
            size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// `mmap(2)` of `len` bytes, shared, readable and writable: of `fd` at `offset` (a ring), or
/// anonymous memory when `fd` is `None` (a UMEM). `populate` pre-faults the pages.
pub fn mmap(
    len: usize,
    fd: Option<BorrowedFd<'_>>,
    offset: libc::off_t,
    populate: bool,
) -> io::Result<NonNull<u8>> {
    let mut flags = libc::MAP_SHARED;
    if populate {
        flags |= libc::MAP_POPULATE;
    }
    let raw = match fd {
        Some(fd) => fd.as_raw_fd(),
        None => {
            flags |= libc::MAP_ANONYMOUS;
            -1
        }
    };
    // SAFETY: a fresh mapping chosen by the kernel (addr NULL) aliases no Rust object.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            flags,
            raw,
            offset,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    NonNull::new(p.cast()).ok_or_else(|| io::Error::other("mmap returned NULL"))
}

/// `munmap(2)`.
///
/// # Safety
/// `addr..addr+len` must be a mapping returned by [`mmap`] that nothing references any more.
pub unsafe fn munmap(addr: NonNull<u8>, len: usize) -> io::Result<()> {
    // SAFETY: the caller guarantees the range is an unused mapping of ours.
    cvt(unsafe { libc::munmap(addr.as_ptr().cast(), len) })?;
    Ok(())
}

/// `poll(2)` for readability on `fds` for at most `timeout` (rounded up to whole ms); returns
/// the number of ready descriptors. EINTR counts as "nothing ready".
pub fn poll_readable(fds: &mut [libc::pollfd], timeout: Duration) -> io::Result<usize> {
    let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int;
    for p in fds.iter_mut() {
        p.events = libc::POLLIN;
        p.revents = 0;
    }
    // SAFETY: `fds` is a valid array of `fds.len()` pollfd structs.
    match cvt(unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) }) {
        Ok(n) => Ok(n as usize),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
        Err(e) => Err(e),
    }
}

/// `sendto(fd, NULL, 0, MSG_DONTWAIT, NULL, 0)`: the "kick" that makes the kernel transmit
/// what was queued in a TX ring (AF_PACKET's `tpacket_snd`, AF_XDP's `xsk_sendmsg`).
pub fn kick_tx(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: a NULL buffer of length 0 and no address: the kernel reads nothing.
    cvt(unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            std::ptr::null(),
            0,
            libc::MSG_DONTWAIT,
            std::ptr::null(),
            0,
        ) as libc::c_int
    })?;
    Ok(())
}

/// `recvfrom(fd, NULL, 0, MSG_DONTWAIT, NULL, NULL)`: wakes an AF_XDP socket's RX path when
/// the fill ring asks for it (`XDP_RING_NEED_WAKEUP`), as libxdp's `xsk_ring_prod__needs_wakeup`
/// users do.
pub fn wake_rx(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: a NULL buffer of length 0 and no address: the kernel writes nothing.
    cvt(unsafe {
        libc::recvfrom(
            fd.as_raw_fd(),
            std::ptr::null_mut(),
            0,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        ) as libc::c_int
    })?;
    Ok(())
}

/// `if_nametoindex(3)`.
pub fn if_index(name: &str) -> io::Result<u32> {
    let c = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `c` is a NUL-terminated string valid for the call.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(idx)
    }
}

/// `bpf(2)`: runs command `cmd` with attribute block `attr`; returns the non-negative result
/// (a new descriptor for the commands that create one).
///
/// # Safety
/// `attr` must be the `union bpf_attr` member the kernel expects for `cmd`, and every pointer
/// stored in it (as a `u64`) must be valid for the access the command makes for the duration
/// of the call.
pub unsafe fn bpf<T>(cmd: u32, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: the caller guarantees `attr` matches `cmd` and its pointers are valid; `attr`
    // itself is `size_of::<T>()` bytes of writable memory.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            (attr as *mut T).cast::<libc::c_void>(),
            size_of::<T>() as libc::c_uint,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// [`bpf`] for a command that returns a new descriptor (map and program creation, links).
///
/// # Safety
/// As for [`bpf`]; in addition `cmd` must be a command whose non-negative result is a new
/// descriptor.
pub unsafe fn bpf_fd<T>(cmd: u32, attr: &mut T) -> io::Result<OwnedFd> {
    // SAFETY: forwarded from the caller.
    let ret = unsafe { bpf(cmd, attr) }?;
    let fd = RawFd::try_from(ret).map_err(|_| io::Error::other("bpf(2) result out of range"))?;
    // SAFETY: the caller guarantees `cmd` returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
