//! A Linux TUN device (layer 3, no packet-info header): IP packets written to it enter the
//! local kernel stack as if received on that interface. `lvs decap` uses it to hand the inner
//! packets of IPIP / IPv6-in-IPv6 frames to the kernel on hosts without the ipip module.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;

/// An open TUN device, up, removed when dropped (it is not persistent).
#[derive(Debug)]
pub struct TunDevice {
    file: File,
    name: String,
}

fn ifreq_named(name: &str) -> io::Result<libc::ifreq> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid interface name {name:?}"),
        ));
    }
    // SAFETY: ifreq is a plain C struct (name array + union of integers/pointers); all-zero
    // bytes are a valid value for every field.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    Ok(req)
}

impl TunDevice {
    /// Creates TUN device `name` (IFF_TUN | IFF_NO_PI) and sets it up.
    pub fn create(name: &str) -> io::Result<TunDevice> {
        let file = OpenOptions::new().read(true).write(true).open("/dev/net/tun")?;
        let mut req = ifreq_named(name)?;
        req.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
        // SAFETY: TUNSETIFF reads and writes one `struct ifreq`, which `req` is, on an open
        // /dev/net/tun descriptor that `file` owns for the duration of the call.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req as *mut libc::ifreq) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        let dev = TunDevice {
            file,
            name: name.to_string(),
        };
        dev.set_up()?;
        Ok(dev)
    }

    fn set_up(&self) -> io::Result<()> {
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
        let mut req = ifreq_named(&self.name)?;
        // SAFETY: SIOCGIFFLAGS fills the flags member of the `struct ifreq` we pass, on a
        // socket descriptor owned by `sock`.
        if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req as *mut libc::ifreq) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel just wrote the flags member of the union; reading it is reading
        // an initialised c_short.
        let flags = unsafe { req.ifr_ifru.ifru_flags };
        req.ifr_ifru.ifru_flags = flags | (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        // SAFETY: SIOCSIFFLAGS reads one `struct ifreq` naming the device and its new flags.
        if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &mut req as *mut libc::ifreq) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// A second handle on the same device (for a second writer thread).
    pub fn try_clone(&self) -> io::Result<TunDevice> {
        Ok(TunDevice {
            file: self.file.try_clone()?,
            name: self.name.clone(),
        })
    }

    /// The device's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Hands one IP packet to the kernel.
    pub fn send(&mut self, packet: &[u8]) -> io::Result<()> {
        self.file.write_all(packet)
    }
}
