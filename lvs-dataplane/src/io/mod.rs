//! Packet I/O: the [`PacketIo`] trait the worker loop drives, the [`FrameBuf`] a frame is
//! processed in, and the backends (`mem` for tests and benches; AF_PACKET and AF_XDP).

use std::fmt;
use std::io;
use std::time::Duration;

use crate::verdict::Verdict;

pub mod arp_listener;
pub mod mem;
pub mod netlink;
#[allow(unsafe_code)]
pub mod tun;

#[allow(unsafe_code)]
pub mod afpacket;
#[allow(unsafe_code)]
pub mod afxdp;
#[allow(unsafe_code)]
pub mod bpf;
#[allow(unsafe_code)]
pub mod sys;
pub mod xdp_prog;

/// Bytes kept free in front of every received frame so a transform can prepend headers
/// (IPIP's 20/40 bytes, a VLAN tag) without copying the frame.
pub const HEADROOM: usize = 128;

/// Largest frame a backend hands to the pipeline (Ethernet MTU 1500 + headers, with room for
/// VLAN tags and jumbo-less encapsulation).
pub const MAX_FRAME: usize = 2048 - HEADROOM;

/// One frame in a buffer with headroom in front and tailroom behind, processed in place.
pub struct FrameBuf<'a> {
    buf: &'a mut [u8],
    head: usize,
    len: usize,
}

impl fmt::Debug for FrameBuf<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameBuf")
            .field("head", &self.head)
            .field("len", &self.len)
            .finish()
    }
}

impl<'a> FrameBuf<'a> {
    /// A frame of `len` bytes starting at `head` in `buf`. Panics if it does not fit (a backend
    /// bug, never packet-dependent).
    pub fn new(buf: &'a mut [u8], head: usize, len: usize) -> FrameBuf<'a> {
        assert!(head + len <= buf.len(), "frame outside its buffer");
        FrameBuf { buf, head, len }
    }

    /// The frame's bytes.
    #[inline]
    pub fn frame(&self) -> &[u8] {
        &self.buf[self.head..self.head + self.len]
    }

    /// The frame's bytes, mutable.
    #[inline]
    pub fn frame_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.head..self.head + self.len]
    }

    /// Frame length.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for an empty frame.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Offset of the frame in the buffer (bytes of headroom).
    #[inline]
    pub fn head(&self) -> usize {
        self.head
    }

    /// Bytes available behind the frame.
    #[inline]
    pub fn tailroom(&self) -> usize {
        self.buf.len() - self.head - self.len
    }

    /// Grows the frame by `n` bytes at the front (new bytes uninitialised garbage); false if
    /// the headroom is too small.
    #[inline]
    pub fn push_front(&mut self, n: usize) -> bool {
        if n > self.head {
            return false;
        }
        self.head -= n;
        self.len += n;
        true
    }

    /// Shrinks the frame by `n` bytes at the front; false if the frame is shorter.
    #[inline]
    pub fn pull_front(&mut self, n: usize) -> bool {
        if n > self.len {
            return false;
        }
        self.head += n;
        self.len -= n;
        true
    }

    /// Sets the frame length (growing into the tailroom or truncating); false if it does not fit.
    #[inline]
    pub fn set_len(&mut self, len: usize) -> bool {
        if self.head + len > self.buf.len() {
            return false;
        }
        self.len = len;
        true
    }

    /// The whole buffer and the frame's offset, for transforms that move bytes around (e.g.
    /// inserting a TCP option in the middle of the frame).
    #[inline]
    pub fn raw_mut(&mut self) -> (&mut [u8], usize) {
        (&mut *self.buf, self.head)
    }
}

/// Handler of a receive burst: the frames (all from one interface), that interface's number,
/// and the verdict slots to fill (one per frame, same index).
pub type BurstHandler<'h> = dyn FnMut(&mut [FrameBuf<'_>], u16, &mut [Verdict]) + 'h;

/// A source and sink of frames for one worker: a set of rings on one or more interfaces.
///
/// `poll_burst` hands each received frame to `handler` together with the number of the
/// interface it arrived on; the handler rewrites it in place and returns the verdict, and the
/// backend queues `Forward`/`Reply` frames for transmission. Transmission is batched: frames
/// are flushed at the end of each burst.
pub trait PacketIo {
    /// Receives up to `max` frames, runs `handler` on each, queues and flushes the sends.
    /// Returns the number of frames received (0 when none were waiting).
    fn poll_burst(
        &mut self,
        max: usize,
        handler: &mut dyn FnMut(&mut FrameBuf<'_>, u16) -> Verdict,
    ) -> io::Result<usize>;

    /// Receives up to `max` frames and hands them to `handler` a whole burst at a time (all
    /// frames of one burst arrived on the same interface, given as the second argument); the
    /// handler rewrites each frame in place and writes its verdict at the same index of the
    /// verdict slice (as long as the frame slice). Queues and flushes the sends like
    /// [`poll_burst`](Self::poll_burst) and returns the number of frames received.
    ///
    /// The default hands the frames over one at a time; backends that own their frames in
    /// rings override it.
    fn poll_bursts(&mut self, max: usize, handler: &mut BurstHandler<'_>) -> io::Result<usize> {
        self.poll_burst(max, &mut |fb, ingress| {
            let mut v = [Verdict::Pass];
            handler(std::slice::from_mut(fb), ingress, &mut v);
            v[0]
        })
    }

    /// Sends a frame the worker built itself (an ARP/NDP request) on interface `iface`.
    fn send_frame(&mut self, iface: u16, frame: &[u8]) -> io::Result<()>;

    /// Sleeps until a frame may be waiting or `timeout` passed (poll(2) on the backend's fds).
    fn wait(&mut self, timeout: Duration) -> io::Result<()>;
}
