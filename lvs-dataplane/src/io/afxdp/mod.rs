//! AF_XDP backend: one UMEM per worker shared by one socket per (interface, queue) the worker
//! serves; the steering XDP program ([`crate::io::xdp_prog`]) redirects the balancer's frames
//! to the sockets. Frames are processed in place in the UMEM and forwarded without a copy
//! (a chunk received on one socket is transmitted by any other socket of the same UMEM).
//!
//! Per burst: drain the completion rings into the free list, top up the fill rings, consume
//! up to `max` RX descriptors, queue Forward/Reply frames on the TX rings, and kick each TX
//! ring that received frames with one `sendto` (copy mode transmits at most 32 frames per
//! kick, so a larger burst may take a few). No allocation, lock or syscall per frame.
//!
//! `Verdict::Pass` cannot hand a redirected frame back to the kernel: the program only
//! redirects the balancer's own traffic, so such frames are dropped and counted
//! (`AfXdpStats::pass_dropped`).
//!
//! Setting up (once per lvs instance, then once per worker):
//!
//! ```no_run
//! use std::net::IpAddr;
//! use lvs_dataplane::io::afxdp::{AfXdpConfig, AfXdpIface, AfXdpIo};
//! use lvs_dataplane::io::xdp_prog::{BalancerAddrs, XdpAction, XdpSteering};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // The balancer's addresses, shared by every interface's program; updated at run time
//! // as virtual services, FULLNAT local addresses and Masq destinations come and go.
//! let addrs = BalancerAddrs::new(4096)?;
//! addrs.add_local("192.0.2.10".parse::<IpAddr>()?)?; // a VIP (or a LIP)
//! addrs.add_real_server("10.0.0.5:8080".parse()?)?; // a Masq destination RIP:rport
//! // One program per interface, with as many XSKMAP slots as the NIC has queues.
//! let ifindex = lvs_dataplane::io::sys::if_index("eth0")?;
//! let mut steering = XdpSteering::load(&addrs, 4, XdpAction::Pass)?;
//! steering.attach_best(ifindex)?; // native, else generic; detached on drop or exit
//! // Worker w serves its share of every interface's queues (w, w + workers, ...): a queue
//! // without a socket would leave its frames to the kernel.
//! let io = AfXdpIo::new(
//!     &[AfXdpIface { ifindex, queue: 0, steering: Some(&steering) }],
//!     AfXdpConfig::default(),
//! )?;
//! # drop(io);
//! # Ok(())
//! # }
//! ```

pub mod mmap;
pub mod ring;
pub mod socket;
pub mod umem;

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::time::Duration;

use self::socket::{BindMode, XskSocket};
use self::umem::Umem;
use super::xdp_prog::XdpSteering;
use super::{BurstHandler, FrameBuf, PacketIo, sys};
use crate::verdict::Verdict;

/// Where received data starts in a chunk in copy mode (`XDP_PACKET_HEADROOM`); frames the
/// worker builds itself are placed at the same offset.
const XDP_PACKET_HEADROOM: u64 = 256;

/// Sizes of an [`AfXdpIo`].
#[derive(Debug, Clone, Copy)]
pub struct AfXdpConfig {
    /// Entries of each of the four rings of every socket (a power of two).
    pub ring_size: u32,
    /// UMEM chunks per socket (at least twice `ring_size` so the fill ring can stay full
    /// while frames sit in the RX and TX rings).
    pub frames_per_socket: u32,
    /// UMEM chunk size: 2048 or 4096.
    pub chunk_size: u32,
    /// Skip the zero-copy attempt and bind in copy mode.
    pub force_copy: bool,
}

impl Default for AfXdpConfig {
    fn default() -> Self {
        AfXdpConfig {
            ring_size: 2048,
            frames_per_socket: 4096,
            chunk_size: 4096,
            force_copy: false,
        }
    }
}

/// One (interface, queue) an [`AfXdpIo`] serves, and the steering program whose XSKMAP the
/// socket is put in (the program attached to that interface).
#[derive(Debug, Clone, Copy)]
pub struct AfXdpIface<'a> {
    /// Interface index.
    pub ifindex: u32,
    /// Queue id (the XSKMAP slot).
    pub queue: u32,
    /// Steering program of the interface; None leaves the XSKMAP to the caller.
    pub steering: Option<&'a XdpSteering>,
}

/// The queues of an interface with `rx_queues` queues that worker `worker` of `workers`
/// serves: every queue has exactly one worker (w, w + workers, w + 2·workers, ...) when the
/// interface has at least as many queues as there are workers; with fewer, worker w takes
/// queue w mod `rx_queues` (two workers cannot bind one queue: callers run at most as many
/// workers as the largest queue count).
pub fn queues_of_worker(worker: u32, workers: u32, rx_queues: u32) -> Vec<u32> {
    let (workers, rx_queues) = (workers.max(1), rx_queues.max(1));
    if rx_queues >= workers {
        (worker % workers..rx_queues).step_by(workers as usize).collect()
    } else {
        vec![worker % rx_queues]
    }
}

/// Counters of an [`AfXdpIo`] (single writer: the worker).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AfXdpStats {
    /// Frames received.
    pub rx: u64,
    /// Frames submitted for transmission.
    pub tx: u64,
    /// Frames dropped because the egress TX ring was full.
    pub tx_ring_full: u64,
    /// Frames with an egress interface number outside the interface list.
    pub bad_egress: u64,
    /// Frames the handler passed to the kernel: impossible after a redirect, dropped.
    pub pass_dropped: u64,
    /// TX kicks (sendto calls).
    pub kicks: u64,
    /// Kicks that failed with something other than EAGAIN.
    pub kick_errors: u64,
    /// RX wake-ups (recvfrom) the driver asked for through the fill ring's need-wakeup flag
    /// (zero-copy drivers only).
    pub rx_wakeups: u64,
}

/// AF_XDP [`PacketIo`]: sockets on several (interface, queue) pairs sharing one UMEM.
/// Interface number `i` in verdicts and `send_frame` is the `i`-th distinct interface of the
/// entries given to `new`, in order of first appearance; several entries may name queues of
/// the same interface (a worker serving more than one queue of a NIC).
#[derive(Debug)]
pub struct AfXdpIo {
    socks: Vec<XskSocket>,
    /// Interface number of each socket.
    port: Vec<u16>,
    /// The socket that transmits for each interface number (its first entry).
    tx_sock: Vec<usize>,
    umem: Umem,
    free: Vec<u64>,
    pollfds: Vec<libc::pollfd>,
    next: usize,
    stats: AfXdpStats,
}

impl AfXdpIo {
    /// Opens one socket per entry of `ifaces` (the first registers the UMEM, the others share
    /// it), fills the fill rings, and puts each socket in its steering program's XSKMAP.
    /// Entries with the same `ifindex` are queues of one interface: one interface number.
    pub fn new(ifaces: &[AfXdpIface<'_>], cfg: AfXdpConfig) -> io::Result<AfXdpIo> {
        if ifaces.is_empty() || ifaces.len() > u16::MAX as usize {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "AF_XDP: 1..=65535 interfaces",
            ));
        }
        let frames = cfg
            .frames_per_socket
            .checked_mul(ifaces.len() as u32)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "too many frames"))?;
        let umem = Umem::new(frames, cfg.chunk_size)?;
        let mut socks: Vec<XskSocket> = Vec::with_capacity(ifaces.len());
        for ifc in ifaces {
            let shared = socks.first().map(|s| s.as_fd());
            let s = XskSocket::open(
                &umem,
                shared,
                ifc.ifindex,
                ifc.queue,
                cfg.ring_size,
                cfg.force_copy,
            )?;
            socks.push(s);
        }
        let mut port = Vec::with_capacity(ifaces.len());
        let mut tx_sock = Vec::new();
        let mut seen: Vec<u32> = Vec::new();
        for (si, ifc) in ifaces.iter().enumerate() {
            let p = match seen.iter().position(|&x| x == ifc.ifindex) {
                Some(p) => p,
                None => {
                    seen.push(ifc.ifindex);
                    tx_sock.push(si);
                    seen.len() - 1
                }
            };
            port.push(p as u16);
        }
        let mut io = AfXdpIo {
            port,
            tx_sock,
            pollfds: socks
                .iter()
                .map(|s| libc::pollfd {
                    fd: s.as_fd().as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect(),
            free: umem.all_chunks().collect(),
            socks,
            umem,
            next: 0,
            stats: AfXdpStats::default(),
        };
        io.refill();
        for (s, ifc) in io.socks.iter().zip(ifaces) {
            if let Some(st) = ifc.steering {
                st.set_socket(ifc.queue, s.as_fd())?;
            }
        }
        Ok(io)
    }

    /// Counters.
    pub fn stats(&self) -> AfXdpStats {
        self.stats
    }

    /// How the socket of entry `entry` (given to `new`) is bound (zero-copy, copy, shared
    /// UMEM).
    pub fn bind_mode(&self, entry: usize) -> BindMode {
        self.socks[entry].mode
    }

    /// The kernel's counters of the socket of entry `entry` (drops for a full RX ring or an
    /// empty fill ring, invalid descriptors).
    pub fn kernel_stats(&self, entry: usize) -> io::Result<libc::xdp_statistics> {
        self.socks[entry].kernel_stats()
    }

    /// Interface numbers served (distinct interfaces among the entries).
    pub fn interfaces(&self) -> usize {
        self.tx_sock.len()
    }

    /// Completed TX chunks back to the free list.
    fn reclaim(&mut self) {
        for s in &mut self.socks {
            let n = s.comp.cons_avail();
            for i in 0..n {
                let addr = s.comp.cons_read(i);
                self.free.push(self.umem.chunk_of(addr));
            }
            s.comp.cons_release(n);
        }
        debug_assert!(self.free.len() <= self.umem.frames() as usize);
    }

    /// Tops up every fill ring from the free list; wakes the driver if it asks.
    fn refill(&mut self) {
        for s in &mut self.socks {
            let room = s.fill.prod_free(s.fill.size());
            let n = room.min(self.free.len() as u32);
            for i in 0..n {
                let chunk = self.free.pop().expect("counted above");
                s.fill.prod_write(i, chunk);
            }
            if n > 0 {
                s.fill.prod_submit(n);
            }
            if s.need_wakeup && s.fill.needs_wakeup() {
                self.stats.rx_wakeups += 1;
                // EAGAIN/EBUSY/ENETDOWN: the driver is busy or the link is down; the next
                // burst asks again.
                let _ = sys::wake_rx(s.as_fd());
            }
        }
    }

    /// Submits the queued TX descriptors of every socket and kicks the kernel.
    fn flush_tx(&mut self) {
        for s in &mut self.socks {
            let queued = s.tx_queued;
            if queued == 0 {
                continue;
            }
            s.tx.prod_submit(queued);
            s.tx_queued = 0;
            self.stats.tx += queued as u64;
            if s.need_wakeup && !s.tx.needs_wakeup() {
                continue;
            }
            // Copy mode transmits at most 32 descriptors per sendto and says EAGAIN when more
            // are left: kick again, a bounded number of times.
            for _ in 0..queued / 32 + 2 {
                self.stats.kicks += 1;
                match sys::kick_tx(s.as_fd()) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(_) => {
                        // ENOBUFS / EBUSY / ENETDOWN: the frames stay queued for the next kick.
                        self.stats.kick_errors += 1;
                        break;
                    }
                }
            }
        }
    }
}

/// Queues the frame at UMEM offset `addr` (`len` bytes) on `s`'s TX ring; false if full.
#[inline]
fn queue_tx(s: &mut XskSocket, addr: u64, len: u32) -> bool {
    if s.tx.prod_free(s.tx_queued + 1) <= s.tx_queued {
        return false;
    }
    s.tx.prod_write(
        s.tx_queued,
        libc::xdp_desc {
            addr,
            len,
            options: 0,
        },
    );
    s.tx_queued += 1;
    true
}

impl AfXdpIo {
    /// Queues the received chunk `chunk` (frame at UMEM offset `addr`, `len` bytes, from
    /// socket `si`) where `verdict` sends it, or returns it to the free list.
    #[inline]
    fn dispatch(&mut self, si: usize, chunk: u64, addr: u64, len: u32, verdict: Verdict) {
        let out = match verdict {
            Verdict::Forward { egress } => Some(self.tx_sock.get(egress as usize).copied()),
            Verdict::Reply => Some(Some(si)),
            Verdict::Pass => {
                self.stats.pass_dropped += 1;
                None
            }
            Verdict::Drop(_) | Verdict::Held => None,
        };
        let sent = match out {
            Some(Some(e)) => {
                let ok = queue_tx(&mut self.socks[e], addr, len);
                if !ok {
                    self.stats.tx_ring_full += 1;
                }
                ok
            }
            Some(None) => {
                self.stats.bad_egress += 1;
                false
            }
            None => false,
        };
        if !sent {
            self.free.push(chunk);
        }
    }
}

/// Most frames handed to a burst handler at once (`poll_bursts` keeps them on the stack).
const BURST: usize = 64;

impl PacketIo for AfXdpIo {
    fn poll_burst(
        &mut self,
        max: usize,
        handler: &mut dyn FnMut(&mut FrameBuf<'_>, u16) -> Verdict,
    ) -> io::Result<usize> {
        // One ring walk for both shapes: the per-frame handler runs over each burst in order.
        self.poll_bursts(max, &mut |frames, ingress, verdicts| {
            for (fb, v) in frames.iter_mut().zip(verdicts.iter_mut()) {
                *v = handler(fb, ingress);
            }
        })
    }

    fn poll_bursts(&mut self, max: usize, handler: &mut BurstHandler<'_>) -> io::Result<usize> {
        self.reclaim();
        self.refill();
        let k = self.socks.len();
        let mut n = 0usize;
        for j in 0..k {
            if n >= max {
                break;
            }
            let si = (self.next + j) % k;
            let avail = self.socks[si].rx.cons_avail().min((max - n) as u32);
            let mut done = 0u32;
            while done < avail {
                let m = ((avail - done) as usize).min(BURST);
                let mut chunks = [0u64; BURST];
                let mut verdicts = [Verdict::Pass; BURST];
                let mut out = [(0u64, 0u32); BURST];
                {
                    let umem = &self.umem;
                    let rx = &self.socks[si].rx;
                    let mut frames: [FrameBuf<'_>; BURST] =
                        std::array::from_fn(|_| FrameBuf::new(&mut [], 0, 0));
                    for (i, (fb, c)) in frames[..m].iter_mut().zip(&mut chunks).enumerate() {
                        let d = rx.cons_read(done + i as u32);
                        let chunk = umem.chunk_of(d.addr);
                        *c = chunk;
                        // SAFETY: the chunk came off the RX ring, so user space owns it until
                        // it is put on a fill or TX ring; every descriptor of the ring names a
                        // different chunk, so this is the only reference to it.
                        let buf = unsafe { umem.chunk_mut(chunk) };
                        *fb = FrameBuf::new(buf, (d.addr - chunk) as usize, d.len as usize);
                    }
                    handler(&mut frames[..m], self.port[si], &mut verdicts[..m]);
                    for ((o, fb), c) in out.iter_mut().zip(&frames[..m]).zip(&chunks) {
                        *o = (c + fb.head() as u64, fb.len() as u32);
                    }
                }
                for i in 0..m {
                    self.dispatch(si, chunks[i], out[i].0, out[i].1, verdicts[i]);
                }
                done += m as u32;
            }
            self.socks[si].rx.cons_release(avail);
            n += avail as usize;
        }
        self.next = (self.next + 1) % k;
        self.stats.rx += n as u64;
        self.flush_tx();
        Ok(n)
    }

    fn send_frame(&mut self, iface: u16, frame: &[u8]) -> io::Result<()> {
        let Some(&i) = self.tx_sock.get(iface as usize) else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "no such interface"));
        };
        let room = (self.umem.chunk_size() as u64 - XDP_PACKET_HEADROOM) as usize;
        if frame.len() > room {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "frame too long"));
        }
        if self.free.is_empty() {
            self.reclaim();
        }
        let Some(chunk) = self.free.pop() else {
            return Err(io::Error::new(io::ErrorKind::WouldBlock, "no free UMEM frame"));
        };
        // SAFETY: the chunk came from the free list: owned by user space, not referenced.
        let buf = unsafe { self.umem.chunk_mut(chunk) };
        let h = XDP_PACKET_HEADROOM as usize;
        buf[h..h + frame.len()].copy_from_slice(frame);
        if !queue_tx(
            &mut self.socks[i],
            chunk + XDP_PACKET_HEADROOM,
            frame.len() as u32,
        ) {
            self.free.push(chunk);
            self.stats.tx_ring_full += 1;
            return Err(io::Error::new(io::ErrorKind::WouldBlock, "TX ring full"));
        }
        self.flush_tx();
        Ok(())
    }

    fn wait(&mut self, timeout: Duration) -> io::Result<()> {
        if self.socks.iter_mut().any(|s| s.rx.cons_avail() > 0) {
            return Ok(());
        }
        sys::poll_readable(&mut self.pollfds, timeout)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::queues_of_worker;

    #[test]
    fn every_queue_has_exactly_one_worker_when_queues_outnumber_workers() {
        for (workers, queues) in [(1, 1), (1, 4), (2, 2), (2, 8), (3, 8), (4, 4)] {
            let mut owner = vec![None; queues as usize];
            for w in 0..workers {
                let mine = queues_of_worker(w, workers, queues);
                assert!(
                    !mine.is_empty(),
                    "worker {w} of {workers} has no queue of {queues}"
                );
                for q in mine {
                    assert_eq!(owner[q as usize], None, "queue {q} served twice");
                    owner[q as usize] = Some(w);
                }
            }
            assert!(
                owner.iter().all(Option::is_some),
                "{workers} workers, {queues} queues: {owner:?}"
            );
        }
        assert_eq!(queues_of_worker(1, 2, 8), [1, 3, 5, 7]);
        assert_eq!(queues_of_worker(0, 1, 3), [0, 1, 2]);
    }

    #[test]
    fn an_interface_with_fewer_queues_gives_each_worker_one_in_turn() {
        assert_eq!(queues_of_worker(0, 4, 2), [0]);
        assert_eq!(queues_of_worker(3, 4, 2), [1]);
        assert_eq!(queues_of_worker(2, 4, 1), [0]);
    }
}
