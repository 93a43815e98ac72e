//! AF_PACKET backend: per interface one socket with an RX ring and a TX ring, optionally in a
//! `PACKET_FANOUT` group so that several workers share an interface by flow hash. The RX ring
//! is TPACKET_V2 by default (one frame per slot, handed to user space as soon as the kernel
//! wrote it) or TPACKET_V3 ([`RxRing::V3`]: blocks of frames handed over whole). The socket's
//! `PACKET_VERSION` applies to both rings, so the TX slots carry the header of the same
//! version (`tpacket2_hdr` or `tpacket3_hdr`, one frame per slot either way).
//!
//! A received frame is copied from its RX slot into the worker's scratch buffer (with
//! [`HEADROOM`] in front), handled in place, and copied into a TX ring slot of the egress
//! interface; each TX ring that got frames is kicked with one `sendto` at the end of the
//! burst. No allocation, lock or syscall per frame.
//!
//! The kernel keeps its own copy of every frame: `Verdict::Pass` and `Verdict::Drop` simply
//! do not transmit. Frames the interface sent itself are ignored
//! (`PACKET_FANOUT_FLAG_IGNORE_OUTGOING` in a group, where the per-socket
//! `PACKET_IGNORE_OUTGOING` has no effect; `PACKET_IGNORE_OUTGOING` otherwise).
//!
//! Offloads: with checksum offload on (veth's default), locally generated frames carry a
//! partial checksum (`TP_STATUS_CSUMNOTREADY`); the backend completes the TCP/UDP checksum of
//! such frames before the handler sees them and counts them. A VLAN tag the driver stripped
//! (`TP_STATUS_VLAN_VALID`) is put back in front of the frame. The lab turns offloads off
//! (`ethtool -K dev tx off rx off tso off gso off gro off`), so neither happens there.
//!
//! Latency: V2 is the default because a V3 block reaches user space only when full or when its
//! retire timer fires (1 ms at the least): at low rates every frame waits that long, which
//! dominated the time of a TCP handshake through the balancer. V3 batches frames into blocks
//! (fewer status words to poll, fewer wakeups) for sustained high rates.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::afxdp::mmap::Mmap;
use super::{FrameBuf, HEADROOM, MAX_FRAME, PacketIo, sys};
use crate::verdict::Verdict;

/// Size of a TX ring slot.
const TX_FRAME_SIZE: u32 = 2048;
/// Size of an RX ring slot: header, alignment and the largest frame (`MAX_FRAME`) fit.
const RX_FRAME_SIZE: u32 = 2048;
/// TX ring block size (32 slots).
const TX_BLOCK_SIZE: u32 = 1 << 16;
/// Scratch buffer: headroom plus the largest frame.
const SCRATCH: usize = HEADROOM + MAX_FRAME;

/// Field offsets of a frame header (`struct tpacket2_hdr` or `struct tpacket3_hdr`).
#[derive(Debug, Clone, Copy)]
struct Hdr {
    status: usize,
    len: usize,
    snaplen: usize,
    mac: usize,
    vlan_tci: usize,
    vlan_tpid: usize,
    /// `sizeof` the header.
    size: usize,
    /// Where a TX frame's data starts in its slot: `TPACKETx_HDRLEN - sizeof(sockaddr_ll)`
    /// (net/packet/af_packet.c, `tpacket_parse_header` without `PACKET_TX_HAS_OFF`).
    tx_data: usize,
}

/// struct tpacket2_hdr.
const HDR2: Hdr = Hdr {
    status: 0,
    len: 4,
    snaplen: 8,
    mac: 12,
    vlan_tci: 24,
    vlan_tpid: 26,
    size: 32,
    tx_data: 32,
};

/// struct tpacket3_hdr (`tp_next_offset` at 0; the VLAN fields are in `hv1`).
const HDR3: Hdr = Hdr {
    status: 20,
    len: 16,
    snaplen: 12,
    mac: 24,
    vlan_tci: 32,
    vlan_tpid: 36,
    size: 48,
    tx_data: 48,
};
/// Offset of `tp_next_offset` in struct tpacket3_hdr.
const H3_NEXT: usize = 0;

// Offsets in struct tpacket_block_desc (version, offset_to_priv, then tpacket_hdr_v1).
const BLK_STATUS: usize = 8;
const BLK_NUM_PKTS: usize = 12;
const BLK_FIRST_PKT: usize = 16;

/// Largest frame a TX slot takes (the same for both versions: the V3 header is the longer).
const TX_MAX: usize = TX_FRAME_SIZE as usize - HDR3.tx_data;

/// Which TPACKET version the RX ring (and with it the socket) uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RxRing {
    /// TPACKET_V2: one frame per 2048-byte slot, each handed to user space at once (the
    /// default: lowest latency at any rate).
    #[default]
    V2,
    /// TPACKET_V3: frames packed into blocks, a block handed to user space when full or when
    /// its retire timer fires, so at low rates a frame waits up to `retire_timeout_ms`.
    V3 {
        /// Block retire timeout in ms (the latency bound at low rates; the kernel takes 0
        /// as "derive from the link speed").
        retire_timeout_ms: u32,
    },
}

/// Sizes and group of an [`AfPacketIo`].
#[derive(Debug, Clone, Copy)]
pub struct AfPacketConfig {
    /// RX ring version.
    pub rx_ring: RxRing,
    /// RX ring block size (a multiple of the page size, a power of two); with V2 cut into
    /// 2048-byte frame slots, with V3 filled with frames back to back.
    pub block_size: u32,
    /// RX ring blocks per socket.
    pub block_count: u32,
    /// TX ring slots per socket (rounded up to a multiple of 32).
    pub tx_frames: u32,
    /// Fanout group base: the socket on interface `ifindex` joins group
    /// `base.wrapping_add(ifindex)` with `PACKET_FANOUT_HASH | IGNORE_OUTGOING`; every worker
    /// using the same base shares the interface's traffic by flow hash.
    pub fanout_group: Option<u16>,
    /// `PACKET_QDISC_BYPASS`: transmit straight to the driver.
    pub qdisc_bypass: bool,
}

impl Default for AfPacketConfig {
    fn default() -> Self {
        AfPacketConfig {
            rx_ring: RxRing::V2,
            block_size: 1 << 18,
            block_count: 16,
            tx_frames: 512,
            fanout_group: None,
            qdisc_bypass: true,
        }
    }
}

/// Counters of an [`AfPacketIo`] (single writer: the worker).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AfPacketStats {
    /// Frames received.
    pub rx: u64,
    /// Frames queued for transmission.
    pub tx: u64,
    /// Frames dropped: egress TX ring full.
    pub tx_ring_full: u64,
    /// Frames dropped: longer than a TX slot.
    pub tx_oversize: u64,
    /// Frames with an egress interface number outside the interface list.
    pub bad_egress: u64,
    /// Frames dropped: truncated by the ring or longer than [`MAX_FRAME`].
    pub truncated: u64,
    /// Frames received with a partial checksum (`TP_STATUS_CSUMNOTREADY`).
    pub csum_not_ready: u64,
    /// Of those, TCP/UDP checksums completed by the backend.
    pub csum_completed: u64,
    /// Frames whose stripped VLAN tag was put back.
    pub vlan_restored: u64,
    /// RX frames skipped because their data lay outside their slot (V2) or block (V3), plus
    /// V3 blocks abandoned because the next frame header would lie past the block's end.
    pub bad_block: u64,
    /// Failed TX kicks (frames stay queued for the next one).
    pub kick_errors: u64,
}

/// Where the reader is in the RX ring.
#[derive(Debug)]
enum RxPos {
    /// V2: the next slot to look at.
    V2 { frames: u32, head: u32 },
    /// V3: the current block, whether user space holds it, the frames left in it and the
    /// offset (in the block) of the next one.
    V3 {
        block_size: usize,
        blocks: u32,
        block: u32,
        open: bool,
        left: u32,
        off: usize,
    },
}

/// One interface's socket and rings.
#[derive(Debug)]
struct PacketSock {
    map: Mmap,
    rx: RxPos,
    /// Frame header layout of this socket's version.
    hdr: Hdr,
    /// Length of the RX ring: the TX ring starts there in the mapping.
    rx_len: usize,
    tx_frames: u32,
    tx_head: u32,
    tx_queued: u32,
    fd: OwnedFd,
}

impl PacketSock {
    fn open(ifindex: u32, cfg: &AfPacketConfig) -> io::Result<PacketSock> {
        let page = 4096u32;
        if !cfg.block_size.is_power_of_two() || cfg.block_size < page || cfg.block_count == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "block_size must be a power of two >= 4096 and block_count > 0",
            ));
        }
        let fd = sys::socket(libc::AF_PACKET, libc::SOCK_RAW, 0)?;
        let b = fd.as_fd();
        let version = match cfg.rx_ring {
            RxRing::V2 => libc::tpacket_versions::TPACKET_V2,
            RxRing::V3 { .. } => libc::tpacket_versions::TPACKET_V3,
        } as libc::c_int;
        sys::setsockopt(b, libc::SOL_PACKET, libc::PACKET_VERSION, &version)?;
        // A malformed TX frame is skipped instead of stalling the ring.
        sys::setsockopt(b, libc::SOL_PACKET, libc::PACKET_LOSS, &1 as &libc::c_int)?;
        if cfg.qdisc_bypass {
            sys::setsockopt(b, libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, &1 as &libc::c_int)?;
        }
        let rx_frames = cfg.block_size / RX_FRAME_SIZE * cfg.block_count;
        let per_block = TX_BLOCK_SIZE / TX_FRAME_SIZE;
        let tx_blocks = cfg.tx_frames.max(1).div_ceil(per_block);
        let (rx_pos, hdr) = match cfg.rx_ring {
            RxRing::V2 => {
                let rx = libc::tpacket_req {
                    tp_block_size: cfg.block_size,
                    tp_block_nr: cfg.block_count,
                    tp_frame_size: RX_FRAME_SIZE,
                    tp_frame_nr: rx_frames,
                };
                sys::setsockopt(b, libc::SOL_PACKET, libc::PACKET_RX_RING, &rx)?;
                let tx = libc::tpacket_req {
                    tp_block_size: TX_BLOCK_SIZE,
                    tp_block_nr: tx_blocks,
                    tp_frame_size: TX_FRAME_SIZE,
                    tp_frame_nr: tx_blocks * per_block,
                };
                sys::setsockopt(b, libc::SOL_PACKET, libc::PACKET_TX_RING, &tx)?;
                let pos = RxPos::V2 {
                    frames: rx_frames,
                    head: 0,
                };
                (pos, HDR2)
            }
            RxRing::V3 { retire_timeout_ms } => {
                let rx = libc::tpacket_req3 {
                    tp_block_size: cfg.block_size,
                    tp_block_nr: cfg.block_count,
                    tp_frame_size: RX_FRAME_SIZE,
                    tp_frame_nr: rx_frames,
                    tp_retire_blk_tov: retire_timeout_ms,
                    tp_sizeof_priv: 0,
                    tp_feature_req_word: 0,
                };
                sys::setsockopt(b, libc::SOL_PACKET, libc::PACKET_RX_RING, &rx)?;
                // A V3 TX ring takes a tpacket_req3 whose timer, private area and feature
                // word are 0 (packet_set_ring refuses anything else).
                let tx = libc::tpacket_req3 {
                    tp_block_size: TX_BLOCK_SIZE,
                    tp_block_nr: tx_blocks,
                    tp_frame_size: TX_FRAME_SIZE,
                    tp_frame_nr: tx_blocks * per_block,
                    tp_retire_blk_tov: 0,
                    tp_sizeof_priv: 0,
                    tp_feature_req_word: 0,
                };
                sys::setsockopt(b, libc::SOL_PACKET, libc::PACKET_TX_RING, &tx)?;
                let pos = RxPos::V3 {
                    block_size: cfg.block_size as usize,
                    blocks: cfg.block_count,
                    block: 0,
                    open: false,
                    left: 0,
                    off: 0,
                };
                (pos, HDR3)
            }
        };
        let rx_len = cfg.block_size as usize * cfg.block_count as usize;
        let tx_len = TX_BLOCK_SIZE as usize * tx_blocks as usize;
        // One mapping: the RX ring, then the TX ring.
        let map = Mmap::socket(b, rx_len + tx_len, 0)?;
        sys::bind_packet(b, ifindex, libc::ETH_P_ALL as u16)?;
        match cfg.fanout_group {
            Some(base) => {
                let id = base.wrapping_add(ifindex as u16) as u32;
                let kind = libc::PACKET_FANOUT_HASH | libc::PACKET_FANOUT_FLAG_IGNORE_OUTGOING;
                let arg = id | (kind << 16);
                sys::setsockopt(b, libc::SOL_PACKET, libc::PACKET_FANOUT, &arg)?;
            }
            None => {
                let one: libc::c_int = 1;
                sys::setsockopt(b, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, &one)?;
            }
        }
        Ok(PacketSock {
            map,
            rx: rx_pos,
            hdr,
            rx_len,
            tx_frames: tx_blocks * per_block,
            tx_head: 0,
            tx_queued: 0,
            fd,
        })
    }

    /// Pointer `off` bytes into the mapping.
    #[inline]
    fn at(&self, off: usize) -> *mut u8 {
        debug_assert!(off < self.map.len());
        self.map.addr().as_ptr().wrapping_add(off)
    }

    /// The u32 status word at mapping offset `off` (4-aligned, inside the mapping).
    #[inline]
    fn status(&self, off: usize) -> &AtomicU32 {
        assert!(off + 4 <= self.map.len() && off.is_multiple_of(4));
        // SAFETY: in bounds and aligned (checked); the word is shared with the kernel and only
        // accessed atomically by us.
        unsafe { AtomicU32::from_ptr(self.at(off).cast()) }
    }

    /// A native-endian u32 of a user-owned RX slot (plain reads).
    #[inline]
    fn read_u32(&self, off: usize) -> u32 {
        assert!(off + 4 <= self.map.len());
        // SAFETY: in bounds (checked); the slot belongs to user space (its status was
        // acquired as TP_STATUS_USER), so the kernel does not write it concurrently.
        unsafe { self.at(off).cast::<u32>().read_unaligned() }
    }

    #[inline]
    fn read_u16(&self, off: usize) -> u16 {
        assert!(off + 2 <= self.map.len());
        // SAFETY: as for `read_u32`.
        unsafe { self.at(off).cast::<u16>().read_unaligned() }
    }

    /// True if the status word at `off` says user space owns what it heads.
    #[inline]
    fn user_owned(&self, off: usize) -> bool {
        self.status(off).load(Ordering::Acquire) & libc::TP_STATUS_USER != 0
    }

    /// The next received frame: (mapping offset of its header, end of the area the frame
    /// must lie in). `None` when the ring holds no more. Each frame returned must be followed
    /// by [`PacketSock::rx_done`] before the next call.
    #[inline]
    fn rx_next(&mut self, stats: &mut AfPacketStats) -> Option<(usize, usize)> {
        match self.rx {
            RxPos::V2 { head, .. } => {
                let h = head as usize * RX_FRAME_SIZE as usize;
                self.user_owned(h + HDR2.status)
                    .then_some((h, h + RX_FRAME_SIZE as usize))
            }
            RxPos::V3 { block_size, .. } => loop {
                let RxPos::V3 {
                    block,
                    open,
                    left,
                    off,
                    ..
                } = self.rx
                else {
                    unreachable!()
                };
                let base = block as usize * block_size;
                if !open {
                    if !self.user_owned(base + BLK_STATUS) {
                        return None;
                    }
                    let n = self.read_u32(base + BLK_NUM_PKTS);
                    let first = self.read_u32(base + BLK_FIRST_PKT) as usize;
                    if let RxPos::V3 { open, left, off, .. } = &mut self.rx {
                        (*open, *left, *off) = (true, n, first);
                    }
                    continue;
                }
                if left == 0 {
                    self.release_block();
                    continue;
                }
                if off + HDR3.size > block_size {
                    stats.bad_block += 1;
                    self.release_block();
                    continue;
                }
                return Some((base + off, base + block_size));
            },
        }
    }

    /// Done with the frame [`PacketSock::rx_next`] returned (it was copied out): V2 returns
    /// its slot to the kernel; V3 moves to the next frame of the block and returns the block
    /// after its last frame.
    #[inline]
    fn rx_done(&mut self) {
        match &mut self.rx {
            RxPos::V2 { frames, head } => {
                let h = *head as usize * RX_FRAME_SIZE as usize;
                *head = (*head + 1) % *frames;
                self.status(h + HDR2.status)
                    .store(libc::TP_STATUS_KERNEL, Ordering::Release);
            }
            RxPos::V3 {
                block_size,
                block,
                left,
                off,
                ..
            } => {
                let h = *block as usize * *block_size + *off;
                *left -= 1;
                let last = *left == 0;
                let next = self.read_u32(h + H3_NEXT) as usize;
                if let RxPos::V3 { off, .. } = &mut self.rx {
                    *off += next;
                }
                if last {
                    self.release_block();
                }
            }
        }
    }

    /// V3: returns the current block to the kernel and moves to the next.
    #[inline]
    fn release_block(&mut self) {
        if let RxPos::V3 {
            block_size,
            blocks,
            block,
            open,
            left,
            ..
        } = &mut self.rx
        {
            let base = *block as usize * *block_size;
            *open = false;
            *left = 0;
            *block = (*block + 1) % *blocks;
            self.status(base + BLK_STATUS)
                .store(libc::TP_STATUS_KERNEL, Ordering::Release);
        }
    }

    /// True if a frame is waiting without a syscall.
    fn has_frames(&self) -> bool {
        match self.rx {
            RxPos::V2 { head, .. } => self.user_owned(head as usize * RX_FRAME_SIZE as usize + HDR2.status),
            RxPos::V3 {
                block_size,
                block,
                open,
                left,
                ..
            } => (open && left > 0) || (!open && self.user_owned(block as usize * block_size + BLK_STATUS)),
        }
    }

    /// Copies `frame` into the next TX slot; false if the ring is full.
    #[inline]
    fn tx_push(&mut self, frame: &[u8]) -> bool {
        let hd = self.hdr;
        let slot = self.rx_len + self.tx_head as usize * TX_FRAME_SIZE as usize;
        let st = self.status(slot + hd.status).load(Ordering::Acquire);
        if st != libc::TP_STATUS_AVAILABLE && st & libc::TP_STATUS_WRONG_FORMAT == 0 {
            return false;
        }
        debug_assert!(frame.len() <= TX_MAX);
        let len = (frame.len() as u32).to_ne_bytes();
        assert!(slot + TX_FRAME_SIZE as usize <= self.map.len());
        // Header words other than the status: V2 has len and snaplen behind the status word;
        // V3 has next_offset (must be 0), snaplen and len in front of it.
        let (words, at) = if hd.status == 0 {
            (hd.tx_data - 4, 4)
        } else {
            (hd.status, 0)
        };
        // SAFETY: the slot lies inside the TX part of the mapping (asserted) and is available:
        // the kernel does not touch it until the status says SEND_REQUEST. This slice covers
        // header bytes that exclude the status word, and nothing else refers to them.
        let hdr = unsafe { std::slice::from_raw_parts_mut(self.at(slot + at), words) };
        if hd.status != 0 {
            hdr[H3_NEXT..H3_NEXT + 4].copy_from_slice(&0u32.to_ne_bytes());
        }
        hdr[hd.len - at..hd.len - at + 4].copy_from_slice(&len);
        hdr[hd.snaplen - at..hd.snaplen - at + 4].copy_from_slice(&len);
        let room = TX_FRAME_SIZE as usize - hd.tx_data;
        // SAFETY: as above, for the data area behind the header (disjoint from the status
        // word); in bounds by the assertion.
        let data = unsafe { std::slice::from_raw_parts_mut(self.at(slot + hd.tx_data), room) };
        data[..frame.len()].copy_from_slice(frame);
        self.status(slot + hd.status)
            .store(libc::TP_STATUS_SEND_REQUEST, Ordering::Release);
        self.tx_head = (self.tx_head + 1) % self.tx_frames;
        self.tx_queued += 1;
        true
    }

    /// Kicks the TX ring if frames were queued.
    fn flush(&mut self, stats: &mut AfPacketStats) {
        if self.tx_queued == 0 {
            return;
        }
        self.tx_queued = 0;
        if sys::kick_tx(self.fd.as_fd()).is_err() {
            stats.kick_errors += 1;
        }
    }
}

/// AF_PACKET [`PacketIo`] over one or more interfaces; interface number `i` in verdicts and
/// `send_frame` is the `i`-th name given to `new`.
#[derive(Debug)]
pub struct AfPacketIo {
    socks: Vec<PacketSock>,
    scratch: Box<[u8; SCRATCH]>,
    pollfds: Vec<libc::pollfd>,
    next: usize,
    stats: AfPacketStats,
}

impl AfPacketIo {
    /// Opens a socket with RX and TX rings on each interface of `ifaces` (names).
    pub fn new(ifaces: &[&str], cfg: AfPacketConfig) -> io::Result<AfPacketIo> {
        let idx = ifaces
            .iter()
            .map(|n| sys::if_index(n))
            .collect::<io::Result<Vec<u32>>>()?;
        Self::with_ifindexes(&idx, cfg)
    }

    /// As [`AfPacketIo::new`], by interface index.
    pub fn with_ifindexes(ifindexes: &[u32], cfg: AfPacketConfig) -> io::Result<AfPacketIo> {
        if ifindexes.is_empty() || ifindexes.len() > u16::MAX as usize {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "AF_PACKET: 1..=65535 interfaces",
            ));
        }
        let socks = ifindexes
            .iter()
            .map(|&i| PacketSock::open(i, &cfg))
            .collect::<io::Result<Vec<_>>>()?;
        let pollfds = socks
            .iter()
            .map(|s| libc::pollfd {
                fd: s.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        Ok(AfPacketIo {
            socks,
            scratch: Box::new([0u8; SCRATCH]),
            pollfds,
            next: 0,
            stats: AfPacketStats::default(),
        })
    }

    /// Counters.
    pub fn stats(&self) -> AfPacketStats {
        self.stats
    }

    /// Frames the kernel received and dropped (ring full) on interface `iface` since the last
    /// call (`PACKET_STATISTICS` resets on read): (packets, drops).
    pub fn kernel_stats(&self, iface: u16) -> io::Result<(u32, u32)> {
        // tpacket_stats_v3 starts with tpacket_stats' fields; the kernel writes the V3 form
        // on a V3 socket and the shorter one on a V2 socket (its length follows the version).
        // SAFETY: all-zero is a valid tpacket_stats_v3 (plain integers).
        let mut st: libc::tpacket_stats_v3 = unsafe { std::mem::zeroed() };
        let fd = self.socks[iface as usize].fd.as_fd();
        // SAFETY: tpacket_stats_v3 is plain u32s; any bytes are a valid value.
        unsafe { sys::getsockopt(fd, libc::SOL_PACKET, libc::PACKET_STATISTICS, &mut st) }?;
        Ok((st.tp_packets, st.tp_drops))
    }

    /// The TPACKET version number (2 or 3) the kernel runs the socket of interface `iface`
    /// with, read back with `PACKET_VERSION`.
    pub fn tpacket_version(&self, iface: u16) -> io::Result<u32> {
        let mut v: libc::c_int = -1;
        let fd = self.socks[iface as usize].fd.as_fd();
        // SAFETY: an int; any bytes are a valid value.
        unsafe { sys::getsockopt(fd, libc::SOL_PACKET, libc::PACKET_VERSION, &mut v) }?;
        // The kernel numbers them from 0 (TPACKET_V1).
        Ok(v as u32 + 1)
    }

    /// Queues `frame` on socket `e`, kicking once if its ring is full.
    fn transmit(socks: &mut [PacketSock], e: usize, frame: &[u8], stats: &mut AfPacketStats) {
        let Some(s) = socks.get_mut(e) else {
            stats.bad_egress += 1;
            return;
        };
        if frame.len() > TX_MAX {
            stats.tx_oversize += 1;
            return;
        }
        if !s.tx_push(frame) {
            // Ring full: let the kernel drain what is queued, then try once more.
            s.flush(stats);
            if !s.tx_push(frame) {
                stats.tx_ring_full += 1;
                return;
            }
        }
        stats.tx += 1;
    }
}

impl PacketIo for AfPacketIo {
    fn poll_burst(
        &mut self,
        max: usize,
        handler: &mut dyn FnMut(&mut FrameBuf<'_>, u16) -> Verdict,
    ) -> io::Result<usize> {
        let k = self.socks.len();
        let mut n = 0usize;
        for j in 0..k {
            let si = (self.next + j) % k;
            while n < max {
                let s = &mut self.socks[si];
                let Some((h, end)) = s.rx_next(&mut self.stats) else {
                    break;
                };
                let hd = s.hdr;
                let len = s.read_u32(h + hd.len) as usize;
                let snaplen = s.read_u32(h + hd.snaplen) as usize;
                let status = s.read_u32(h + hd.status);
                let mac = s.read_u16(h + hd.mac) as usize;
                let data = h + mac;
                n += 1;
                self.stats.rx += 1;
                if mac < hd.size || data + snaplen > end {
                    self.stats.bad_block += 1;
                    s.rx_done();
                    continue;
                }
                let vlan = status & libc::TP_STATUS_VLAN_VALID != 0;
                let extra = if vlan { 4 } else { 0 };
                if snaplen < len || snaplen + extra > MAX_FRAME || snaplen < 14 {
                    self.stats.truncated += 1;
                    s.rx_done();
                    continue;
                }
                let scratch = &mut self.scratch[..];
                // SAFETY: `data..data+snaplen` is inside the slot or block (checked above),
                // which belongs to user space until `rx_done`.
                let src = unsafe { std::slice::from_raw_parts(s.at(data), snaplen) };
                let head = HEADROOM - extra;
                if vlan {
                    // V2's tp_vlan_tci is a u16, V3's (in hv1) a u32.
                    let tci = if hd.vlan_tpid - hd.vlan_tci == 4 {
                        s.read_u32(h + hd.vlan_tci) as u16
                    } else {
                        s.read_u16(h + hd.vlan_tci)
                    };
                    let tpid = if status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
                        s.read_u16(h + hd.vlan_tpid)
                    } else {
                        0x8100
                    };
                    scratch[head..head + 12].copy_from_slice(&src[..12]);
                    scratch[head + 12..head + 14].copy_from_slice(&tpid.to_be_bytes());
                    scratch[head + 14..head + 16].copy_from_slice(&tci.to_be_bytes());
                    scratch[head + 16..head + 4 + snaplen].copy_from_slice(&src[12..]);
                    self.stats.vlan_restored += 1;
                } else {
                    scratch[head..head + snaplen].copy_from_slice(src);
                }
                // The frame is in the scratch buffer: the slot (or block) can go back.
                s.rx_done();
                let mut fb = FrameBuf::new(scratch, head, snaplen + extra);
                if status & libc::TP_STATUS_CSUMNOTREADY != 0 {
                    self.stats.csum_not_ready += 1;
                    if complete_l4_checksum(fb.frame_mut()) {
                        self.stats.csum_completed += 1;
                    }
                }
                let egress = match handler(&mut fb, si as u16) {
                    Verdict::Forward { egress } => egress as usize,
                    Verdict::Reply => si,
                    Verdict::Pass | Verdict::Drop(_) | Verdict::Held => continue,
                };
                Self::transmit(&mut self.socks, egress, fb.frame(), &mut self.stats);
            }
        }
        self.next = (self.next + 1) % k;
        for s in &mut self.socks {
            s.flush(&mut self.stats);
        }
        Ok(n)
    }

    fn send_frame(&mut self, iface: u16, frame: &[u8]) -> io::Result<()> {
        let i = iface as usize;
        if i >= self.socks.len() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "no such interface"));
        }
        if frame.len() > TX_MAX {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "frame too long"));
        }
        let before = self.stats.tx;
        Self::transmit(&mut self.socks, i, frame, &mut self.stats);
        self.socks[i].flush(&mut self.stats);
        if self.stats.tx == before {
            return Err(io::Error::new(io::ErrorKind::WouldBlock, "TX ring full"));
        }
        Ok(())
    }

    fn wait(&mut self, timeout: Duration) -> io::Result<()> {
        if self.socks.iter().any(|s| s.has_frames()) {
            return Ok(());
        }
        sys::poll_readable(&mut self.pollfds, timeout)?;
        Ok(())
    }
}

/// One's-complement sum of `data` added to `acc`.
fn sum16(data: &[u8], mut acc: u64) -> u64 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u16::from_be_bytes([c[0], c[1]]) as u64;
    }
    if let [b] = chunks.remainder() {
        acc += (*b as u64) << 8;
    }
    acc
}

fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// Completes the TCP/UDP checksum of a frame whose checksum the sender left to the NIC
/// (CHECKSUM_PARTIAL: the field holds only the pseudo-header sum). IPv4 (unfragmented) and
/// IPv6 without extension headers, optionally behind one VLAN tag; false for anything else.
pub fn complete_l4_checksum(frame: &mut [u8]) -> bool {
    let mut l3 = 14;
    if frame.len() < 14 {
        return false;
    }
    let mut ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    if ethertype == 0x8100 || ethertype == 0x88a8 {
        if frame.len() < 18 {
            return false;
        }
        ethertype = u16::from_be_bytes([frame[16], frame[17]]);
        l3 = 18;
    }
    let (proto, l4, l4_end, pseudo) = match ethertype {
        0x0800 => {
            let ip = &frame[l3..];
            if ip.len() < 20 || ip[0] >> 4 != 4 {
                return false;
            }
            let ihl = (ip[0] & 0x0f) as usize * 4;
            let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
            let frag = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff;
            if ihl < 20 || total < ihl || total > ip.len() || frag != 0 {
                return false;
            }
            let proto = ip[9];
            let l4_len = (total - ihl) as u64;
            let pseudo = sum16(&ip[12..20], proto as u64 + l4_len);
            (proto, l3 + ihl, l3 + total, pseudo)
        }
        0x86dd => {
            let ip = &frame[l3..];
            if ip.len() < 40 || ip[0] >> 4 != 6 {
                return false;
            }
            let plen = u16::from_be_bytes([ip[4], ip[5]]) as usize;
            if 40 + plen > ip.len() {
                return false;
            }
            let proto = ip[6];
            let pseudo = sum16(&ip[8..40], proto as u64 + plen as u64);
            (proto, l3 + 40, l3 + 40 + plen, pseudo)
        }
        _ => return false,
    };
    let field = match proto {
        6 => 16,
        17 => 6,
        _ => return false,
    };
    if l4 + field + 2 > l4_end {
        return false;
    }
    frame[l4 + field] = 0;
    frame[l4 + field + 1] = 0;
    let mut c = !fold(sum16(&frame[l4..l4_end], pseudo));
    if proto == 17 && c == 0 {
        c = 0xffff;
    }
    frame[l4 + field..l4 + field + 2].copy_from_slice(&c.to_be_bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TCP/IPv4 frame whose checksum etherparse computed; the partial form (checksum field
    /// garbage) is completed back to the same bytes.
    #[test]
    fn partial_checksums_are_completed_to_the_real_ones() {
        let mut good = Vec::new();
        etherparse::PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(1234, 80, 7, 1000)
            .write(&mut good, b"payload!")
            .unwrap();
        let mut f = good.clone();
        f[14 + 20 + 16] ^= 0x5a;
        assert!(complete_l4_checksum(&mut f));
        assert_eq!(f, good);

        let mut good6 = Vec::new();
        etherparse::PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv6([0xfd; 16], [0xfe; 16], 64)
            .udp(53, 5353)
            .write(&mut good6, b"odd")
            .unwrap();
        let mut f6 = good6.clone();
        f6[14 + 40 + 6] = 0;
        f6[14 + 40 + 7] = 0;
        assert!(complete_l4_checksum(&mut f6));
        assert_eq!(f6, good6);

        let mut arp = vec![0u8; 42];
        arp[12] = 0x08;
        arp[13] = 0x06;
        assert!(!complete_l4_checksum(&mut arp));
        assert!(!complete_l4_checksum(&mut f6[..50]));
    }

    /// struct tpacket2_hdr / tpacket3_hdr / tpacket_block_desc offsets against libc's
    /// definitions.
    #[test]
    fn ring_header_offsets_match_libc() {
        use std::mem::{offset_of, size_of};
        assert_eq!(offset_of!(libc::tpacket2_hdr, tp_status), HDR2.status);
        assert_eq!(offset_of!(libc::tpacket2_hdr, tp_len), HDR2.len);
        assert_eq!(offset_of!(libc::tpacket2_hdr, tp_snaplen), HDR2.snaplen);
        assert_eq!(offset_of!(libc::tpacket2_hdr, tp_mac), HDR2.mac);
        assert_eq!(offset_of!(libc::tpacket2_hdr, tp_vlan_tci), HDR2.vlan_tci);
        assert_eq!(offset_of!(libc::tpacket2_hdr, tp_vlan_tpid), HDR2.vlan_tpid);
        assert_eq!(size_of::<libc::tpacket2_hdr>(), HDR2.size);
        let sll = size_of::<libc::sockaddr_ll>();
        assert_eq!(libc::TPACKET2_HDRLEN - sll, HDR2.tx_data);

        assert_eq!(offset_of!(libc::tpacket3_hdr, tp_next_offset), H3_NEXT);
        assert_eq!(offset_of!(libc::tpacket3_hdr, tp_snaplen), HDR3.snaplen);
        assert_eq!(offset_of!(libc::tpacket3_hdr, tp_len), HDR3.len);
        assert_eq!(offset_of!(libc::tpacket3_hdr, tp_status), HDR3.status);
        assert_eq!(offset_of!(libc::tpacket3_hdr, tp_mac), HDR3.mac);
        let hv1 = offset_of!(libc::tpacket3_hdr, hv1);
        assert_eq!(
            hv1 + offset_of!(libc::tpacket_hdr_variant1, tp_vlan_tci),
            HDR3.vlan_tci
        );
        assert_eq!(
            hv1 + offset_of!(libc::tpacket_hdr_variant1, tp_vlan_tpid),
            HDR3.vlan_tpid
        );
        assert_eq!(size_of::<libc::tpacket3_hdr>(), HDR3.size);
        assert_eq!(libc::TPACKET3_HDRLEN - sll, HDR3.tx_data);
        let hdr = offset_of!(libc::tpacket_block_desc, hdr);
        assert_eq!(hdr + offset_of!(libc::tpacket_hdr_v1, block_status), BLK_STATUS);
        assert_eq!(hdr + offset_of!(libc::tpacket_hdr_v1, num_pkts), BLK_NUM_PKTS);
        assert_eq!(
            hdr + offset_of!(libc::tpacket_hdr_v1, offset_to_first_pkt),
            BLK_FIRST_PKT
        );
    }
}
