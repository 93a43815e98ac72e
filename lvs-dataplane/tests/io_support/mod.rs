//! Shared helpers of the real-kernel I/O tests: the root check, a network namespace with veth
//! pairs removed on drop (even on panic), a plain AF_PACKET socket to inject and observe
//! frames, and frame builders with correct checksums.
#![allow(dead_code, unsafe_code)]

use std::ffi::CString;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// True if the test may run. Panics when not root unless LVS_SKIP_PRIVILEGED=1, in which case
/// it prints SKIPPED and returns false.
pub fn require_root(test: &str) -> bool {
    // SAFETY: geteuid takes no arguments and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("LVS_SKIP_PRIVILEGED").as_deref() == Ok("1") {
        println!("SKIPPED {test}: needs root (LVS_SKIP_PRIVILEGED=1)");
        return false;
    }
    panic!("{test} needs root (network namespaces, raw sockets, bpf); set LVS_SKIP_PRIVILEGED=1 to skip");
}

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A network namespace the calling thread lives in until drop; deleted on drop with all its
/// interfaces.
pub struct Netns {
    /// Its name under /run/netns.
    pub name: String,
    prev: OwnedFd,
}

impl Netns {
    /// Creates the namespace and moves the calling thread into it; `lo` is up, IPv6 is off
    /// (no router solicitations or MLD reports on the test links).
    pub fn new(tag: &str) -> Netns {
        let name = format!(
            "lvsio-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let prev = open("/proc/thread-self/ns/net");
        run("ip", &["netns", "add", &name]);
        let ns = Netns { name, prev };
        let fd = open(&format!("/run/netns/{}", ns.name));
        // SAFETY: `fd` is a namespace descriptor; setns only affects this thread.
        let r = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns: {}", io::Error::last_os_error());
        for k in ["all", "default"] {
            ns.exec(&["sysctl", "-qw", &format!("net.ipv6.conf.{k}.disable_ipv6=1")]);
        }
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n NAME args...`.
    pub fn ip(&self, args: &[&str]) {
        let mut a = vec!["-n", &self.name];
        a.extend_from_slice(args);
        run("ip", &a);
    }

    /// Output of `ip -n NAME args...`.
    pub fn ip_output(&self, args: &[&str]) -> String {
        let mut a = vec!["-n", &self.name];
        a.extend_from_slice(args);
        let out = Command::new("ip").args(&a).output().expect("ip");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `ip netns exec NAME args...`.
    pub fn exec(&self, args: &[&str]) {
        let mut a = vec!["netns", "exec", &self.name];
        a.extend_from_slice(args);
        run("ip", &a);
    }

    /// A veth pair `a`/`b` with fixed MACs 02:00:00:00:00:`mac_a`/`mac_b`, both up, offloads
    /// off (as the lab does).
    pub fn veth(&self, a: &str, mac_a: u8, b: &str, mac_b: u8) {
        self.veth_opts(a, mac_a, b, mac_b, true);
    }

    /// As [`Netns::veth`]; `offloads_off` false keeps veth's checksum offloads on.
    pub fn veth_opts(&self, a: &str, mac_a: u8, b: &str, mac_b: u8, offloads_off: bool) {
        // One queue each way, so every frame is on queue 0 (the socket's XSKMAP slot).
        self.veth_queues(a, mac_a, b, mac_b, offloads_off, 1);
    }

    /// As [`Netns::veth_opts`] with `queues` RX and TX queues on each end (a frame sent into
    /// `b` arrives on the `a` queue numbered as the TX queue `b`'s kernel picked for it).
    pub fn veth_queues(&self, a: &str, mac_a: u8, b: &str, mac_b: u8, offloads_off: bool, queues: u32) {
        let q = queues.to_string();
        self.ip(&[
            "link",
            "add",
            a,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
            "type",
            "veth",
            "peer",
            "name",
            b,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
        ]);
        for (dev, mac) in [(a, mac_a), (b, mac_b)] {
            let m = format!("02:00:00:00:00:{mac:02x}");
            self.ip(&["link", "set", dev, "address", &m]);
            if offloads_off {
                self.exec(&[
                    "ethtool", "-K", dev, "tx", "off", "rx", "off", "tso", "off", "gso", "off", "gro", "off",
                ]);
            }
            self.ip(&["link", "set", dev, "up"]);
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // SAFETY: `prev` is the namespace descriptor this thread came from.
        unsafe { libc::setns(self.prev.as_raw_fd(), libc::CLONE_NEWNET) };
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

fn open(path: &str) -> OwnedFd {
    let c = CString::new(path).unwrap();
    // SAFETY: `c` is a valid C string.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    assert!(fd >= 0, "open {path}: {}", io::Error::last_os_error());
    // SAFETY: a fresh descriptor nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Interface index of `name` in the current namespace.
pub fn ifindex(name: &str) -> u32 {
    let c = CString::new(name).unwrap();
    // SAFETY: `c` is a valid C string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    assert!(i != 0, "no interface {name}");
    i
}

/// A plain AF_PACKET socket on one interface that ignores its own outgoing frames.
pub struct RawSock {
    fd: OwnedFd,
}

impl RawSock {
    /// Opens it on `ifname`.
    pub fn new(ifname: &str) -> RawSock {
        // SAFETY: plain socket(2) call.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        assert!(fd >= 0, "socket: {}", io::Error::last_os_error());
        // SAFETY: a fresh descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_ll is plain integers.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        sll.sll_ifindex = ifindex(ifname) as i32;
        // SAFETY: valid sockaddr_ll of the right length.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(r, 0, "bind: {}", io::Error::last_os_error());
        let one: libc::c_int = 1;
        // SAFETY: an int option of the right size.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_IGNORE_OUTGOING,
                (&one as *const libc::c_int).cast(),
                4,
            )
        };
        assert_eq!(r, 0, "PACKET_IGNORE_OUTGOING: {}", io::Error::last_os_error());
        // Room for a few thousand frames (root may exceed rmem_max).
        let size: libc::c_int = 8 << 20;
        // SAFETY: an int option of the right size.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&size as *const libc::c_int).cast(),
                4,
            )
        };
        assert_eq!(r, 0, "SO_RCVBUFFORCE: {}", io::Error::last_os_error());
        RawSock { fd }
    }

    /// Sends one frame.
    pub fn send(&self, frame: &[u8]) {
        // SAFETY: `frame` is readable for its length.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        assert_eq!(n, frame.len() as isize, "send: {}", io::Error::last_os_error());
    }

    /// Next frame received before `deadline`.
    pub fn recv(&self, deadline: Instant) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 4096];
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let mut p = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = left.as_millis().clamp(1, 1000) as i32;
            // SAFETY: one valid pollfd.
            unsafe { libc::poll(&mut p, 1, ms) };
            // SAFETY: `buf` is writable for its length.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n > 0 {
                buf.truncate(n as usize);
                return Some(buf);
            }
        }
    }

    /// Every frame received until `quiet` passes without one (bounded by `max`).
    pub fn drain(&self, quiet: Duration, max: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while out.len() < max {
            match self.recv(Instant::now() + quiet) {
                Some(f) => out.push(f),
                None => break,
            }
        }
        out
    }
}

/// Frame builders (Ethernet II, correct IPv4/L4 checksums).
pub mod frames {
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// MAC of the test's "remote" side.
    pub const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xbb];
    /// MAC of the side under test.
    pub const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xaa];
    /// IEEE local experimental ethertype: the kernel ignores it.
    pub const ETH_EXPERIMENTAL: u16 = 0x88b5;

    /// Ethernet frame.
    pub fn eth(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::with_capacity(14 + payload.len());
        f.extend_from_slice(&dst);
        f.extend_from_slice(&src);
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// A test frame of the experimental ethertype carrying `id` and a recognisable body.
    pub fn marked(id: u32, len: usize) -> Vec<u8> {
        let mut body = id.to_be_bytes().to_vec();
        body.extend((0..len.saturating_sub(4)).map(|i| (i as u32 ^ id) as u8));
        eth(DST_MAC, SRC_MAC, ETH_EXPERIMENTAL, &body)
    }

    /// The id of a [`marked`] frame.
    pub fn mark_of(f: &[u8]) -> Option<u32> {
        if f.len() >= 18 && f[12..14] == ETH_EXPERIMENTAL.to_be_bytes() {
            Some(u32::from_be_bytes(f[14..18].try_into().unwrap()))
        } else {
            None
        }
    }

    fn sum16(data: &[u8], mut acc: u32) -> u32 {
        for c in data.chunks(2) {
            let w = if c.len() == 2 {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                u16::from_be_bytes([c[0], 0])
            };
            acc += w as u32;
        }
        acc
    }

    fn fold(mut acc: u32) -> u16 {
        while acc > 0xffff {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        !(acc as u16)
    }

    /// Recomputes the IPv4 header checksum of an Ethernet frame.
    pub fn fix_ipv4_checksum(f: &mut [u8]) {
        let ihl = (f[14] & 0x0f) as usize * 4;
        f[24] = 0;
        f[25] = 0;
        let c = fold(sum16(&f[14..14 + ihl], 0));
        f[24..26].copy_from_slice(&c.to_be_bytes());
    }

    fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, options: &[u8], l4: &[u8]) -> Vec<u8> {
        let ihl = 20 + options.len();
        let total = ihl + l4.len();
        let mut ip = vec![0u8; ihl];
        ip[0] = 0x40 | (ihl / 4) as u8;
        ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        ip[6] = 0x40; // DF
        ip[8] = 64;
        ip[9] = proto;
        ip[12..16].copy_from_slice(&src.octets());
        ip[16..20].copy_from_slice(&dst.octets());
        ip[20..].copy_from_slice(options);
        let mut l4 = l4.to_vec();
        let ck = l4_checksum_offset(proto);
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&src.octets());
        pseudo.extend_from_slice(&dst.octets());
        pseudo.extend_from_slice(&[0, proto]);
        pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
        let mut c = fold(sum16(&l4, sum16(&pseudo, 0)));
        if proto == 17 && c == 0 {
            c = 0xffff;
        }
        l4[ck..ck + 2].copy_from_slice(&c.to_be_bytes());
        ip.extend_from_slice(&l4);
        let mut f = eth(DST_MAC, SRC_MAC, 0x0800, &ip);
        fix_ipv4_checksum(&mut f);
        f
    }

    fn l4_checksum_offset(proto: u8) -> usize {
        match proto {
            6 => 16,
            17 => 6,
            58 => 2,
            _ => unreachable!(),
        }
    }

    fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut u = vec![0u8; 8];
        u[0..2].copy_from_slice(&sport.to_be_bytes());
        u[2..4].copy_from_slice(&dport.to_be_bytes());
        u[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        u.extend_from_slice(payload);
        u
    }

    fn tcp_syn(sport: u16, dport: u16) -> Vec<u8> {
        let mut t = vec![0u8; 20];
        t[0..2].copy_from_slice(&sport.to_be_bytes());
        t[2..4].copy_from_slice(&dport.to_be_bytes());
        t[4..8].copy_from_slice(&1234u32.to_be_bytes());
        t[12] = 5 << 4;
        t[13] = 0x02;
        t[14..16].copy_from_slice(&64240u16.to_be_bytes());
        t
    }

    /// IPv4 UDP datagram.
    pub fn udp4(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
        ipv4(src, dst, 17, &[], &udp(sport, dport, payload))
    }

    /// IPv4 TCP SYN.
    pub fn tcp4(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
        ipv4(src, dst, 6, &[], &tcp_syn(sport, dport))
    }

    /// IPv4 TCP SYN with 4 bytes of IP options (IHL 6).
    pub fn tcp4_with_options(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
        ipv4(src, dst, 6, &[1, 1, 1, 0], &tcp_syn(sport, dport))
    }

    fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, next: u8, l4: &[u8], dst_mac: [u8; 6]) -> Vec<u8> {
        let mut ip = vec![0u8; 40];
        ip[0] = 0x60;
        ip[4..6].copy_from_slice(&(l4.len() as u16).to_be_bytes());
        ip[6] = next;
        ip[7] = 255;
        ip[8..24].copy_from_slice(&src.octets());
        ip[24..40].copy_from_slice(&dst.octets());
        let mut l4 = l4.to_vec();
        let ck = l4_checksum_offset(next);
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&src.octets());
        pseudo.extend_from_slice(&dst.octets());
        pseudo.extend_from_slice(&(l4.len() as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, next]);
        let c = fold(sum16(&l4, sum16(&pseudo, 0)));
        l4[ck..ck + 2].copy_from_slice(&c.to_be_bytes());
        ip.extend_from_slice(&l4);
        eth(dst_mac, SRC_MAC, 0x86dd, &ip)
    }

    /// IPv6 TCP SYN.
    pub fn tcp6(src: Ipv6Addr, sport: u16, dst: Ipv6Addr, dport: u16) -> Vec<u8> {
        ipv6(src, dst, 6, &tcp_syn(sport, dport), DST_MAC)
    }

    /// IPv6 UDP datagram.
    pub fn udp6(src: Ipv6Addr, sport: u16, dst: Ipv6Addr, dport: u16) -> Vec<u8> {
        ipv6(src, dst, 17, &udp(sport, dport, b"q"), DST_MAC)
    }

    /// ICMPv6 neighbour solicitation for `target`, to its solicited-node multicast address.
    pub fn neighbour_solicitation(src: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
        let t = target.octets();
        let dst = Ipv6Addr::from([
            0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, t[13], t[14], t[15],
        ]);
        let mut icmp = vec![135, 0, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(&t);
        icmp.extend_from_slice(&[1, 1]);
        icmp.extend_from_slice(&SRC_MAC);
        let mac = [0x33, 0x33, 0xff, t[13], t[14], t[15]];
        ipv6(src, dst, 58, &icmp, mac)
    }

    fn arp(op: u16, sender: Ipv4Addr, target: Ipv4Addr, dst: [u8; 6]) -> Vec<u8> {
        let mut a = vec![0, 1, 0x08, 0, 6, 4];
        a.extend_from_slice(&op.to_be_bytes());
        a.extend_from_slice(&SRC_MAC);
        a.extend_from_slice(&sender.octets());
        a.extend_from_slice(&if op == 1 { [0; 6] } else { DST_MAC });
        a.extend_from_slice(&target.octets());
        eth(dst, SRC_MAC, 0x0806, &a)
    }

    /// Broadcast ARP request from `sender` asking for `target`.
    pub fn arp_request(sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
        arp(1, sender, target, [0xff; 6])
    }

    /// ARP reply from `sender` to `target`.
    pub fn arp_reply(sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
        arp(2, sender, target, DST_MAC)
    }

    /// `f` with an 802.1Q tag of VLAN `vid` inserted.
    pub fn vlan_tagged(f: &[u8], vid: u16) -> Vec<u8> {
        let mut v = f[..12].to_vec();
        v.extend_from_slice(&0x8100u16.to_be_bytes());
        v.extend_from_slice(&vid.to_be_bytes());
        v.extend_from_slice(&f[12..]);
        v
    }
}
