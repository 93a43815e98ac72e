//! The hold queue: frames whose next hop has no MAC yet wait here (a copy, already rewritten)
//! until the neighbour answers, as the kernel's neighbour layer queues packets on an
//! unresolved entry (`arp_queue`) and sends them when the reply comes. Bounded and allocated
//! once: a fixed number of fixed-size slots, a few per next hop; what does not fit is dropped.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use lvs_core::Time;

use crate::neigh::MacAddr;

/// Slots of a worker's hold queue.
pub const HOLD_SLOTS: usize = 32;

/// Largest frame a slot holds (bytes).
pub const HOLD_FRAME: usize = 2048;

/// Most frames held for one next hop (the kernel bounds each unresolved neighbour's queue
/// too, by bytes: `arp_tbl`'s `QUEUE_LEN_BYTES`; lvs keeps a few frames).
pub const HOLD_PER_HOP: usize = 3;

/// How long a frame waits for its next hop before it is dropped: the kernel gives up on an
/// unresolved neighbour after `mcast_solicit` (3) probes `retrans_time` (1 s) apart.
pub const HOLD_TIMEOUT: Duration = Duration::from_secs(3);

/// What a slot holds besides the bytes.
#[derive(Debug, Clone, Copy)]
struct Held {
    /// Order of arrival (frames to one hop leave in the order they came).
    seq: u64,
    len: u16,
    egress: u16,
    hop: IpAddr,
    deadline: Time,
}

/// What one [`HoldQueue::release`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Released {
    /// Frames handed to the send callback.
    pub sent: usize,
    /// Frames whose deadline passed without an answer (dropped).
    pub expired: usize,
}

/// Frames waiting for their next hop's MAC: [`HOLD_SLOTS`] slots of [`HOLD_FRAME`] bytes.
pub struct HoldQueue {
    bytes: Box<[u8]>,
    slots: [Option<Held>; HOLD_SLOTS],
    len: usize,
    seq: u64,
}

impl fmt::Debug for HoldQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HoldQueue").field("len", &self.len).finish()
    }
}

impl Default for HoldQueue {
    fn default() -> Self {
        HoldQueue::new()
    }
}

impl HoldQueue {
    /// An empty queue (allocates its slots once).
    pub fn new() -> HoldQueue {
        HoldQueue {
            bytes: vec![0u8; HOLD_SLOTS * HOLD_FRAME].into_boxed_slice(),
            slots: [None; HOLD_SLOTS],
            len: 0,
            seq: 0,
        }
    }

    /// Frames held.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is held.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies `frame` (to leave on `egress` once `hop` is resolved) into a free slot, to be
    /// dropped at `now` + [`HOLD_TIMEOUT`]. False (nothing held) when the queue is full,
    /// `hop` already has [`HOLD_PER_HOP`] frames waiting, or the frame is too long.
    pub fn hold(&mut self, frame: &[u8], egress: u16, hop: IpAddr, now: Time) -> bool {
        if self.len == HOLD_SLOTS || frame.len() > HOLD_FRAME {
            return false;
        }
        let same = self.slots.iter().flatten().filter(|h| h.hop == hop).count();
        if same >= HOLD_PER_HOP {
            return false;
        }
        let Some(i) = self.slots.iter().position(Option::is_none) else {
            return false;
        };
        self.bytes[i * HOLD_FRAME..i * HOLD_FRAME + frame.len()].copy_from_slice(frame);
        self.slots[i] = Some(Held {
            seq: self.seq,
            len: frame.len() as u16,
            egress,
            hop,
            deadline: now + HOLD_TIMEOUT,
        });
        self.seq += 1;
        self.len += 1;
        true
    }

    /// Sends every held frame whose next hop `lookup` now resolves, with that MAC as the
    /// Ethernet destination, through `send(egress, frame)` in order of arrival, and drops
    /// the frames whose deadline has passed at `now`. Frees their slots either way.
    pub fn release(
        &mut self,
        now: Time,
        lookup: &mut dyn FnMut(IpAddr) -> Option<MacAddr>,
        send: &mut dyn FnMut(u16, &[u8]),
    ) -> Released {
        let mut r = Released::default();
        if self.len == 0 {
            return r;
        }
        // Ready slots, by index, then sorted by arrival (no allocation).
        let mut ready = [(0u64, 0u8, [0u8; 6]); HOLD_SLOTS];
        let mut n = 0;
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let Some(h) = slot else {
                continue;
            };
            if let Some(mac) = lookup(h.hop) {
                ready[n] = (h.seq, i as u8, mac);
                n += 1;
            } else if now >= h.deadline {
                *slot = None;
                self.len -= 1;
                r.expired += 1;
            }
        }
        ready[..n].sort_unstable_by_key(|&(seq, _, _)| seq);
        for &(_, i, mac) in &ready[..n] {
            let i = i as usize;
            let Some(h) = self.slots[i].take() else {
                continue;
            };
            self.len -= 1;
            let f = &mut self.bytes[i * HOLD_FRAME..i * HOLD_FRAME + h.len as usize];
            if let Some(d) = f.get_mut(..6) {
                d.copy_from_slice(&mac);
            }
            send(h.egress, f);
            r.sent += 1;
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: [u8; 4] = [10, 0, 0, 2];
    const B: [u8; 4] = [10, 0, 0, 3];

    fn frame(tag: u8, len: usize) -> Vec<u8> {
        let mut f = vec![tag; len];
        f[..6].fill(0);
        f
    }

    fn release_all(
        q: &mut HoldQueue,
        now: Time,
        known: &[(IpAddr, MacAddr)],
    ) -> (Released, Vec<(u16, Vec<u8>)>) {
        let mut out = Vec::new();
        let r = q.release(
            now,
            &mut |ip| known.iter().find(|(a, _)| *a == ip).map(|(_, m)| *m),
            &mut |e, f| out.push((e, f.to_vec())),
        );
        (r, out)
    }

    #[test]
    fn released_in_order_with_the_resolved_mac_only_for_resolved_hops() {
        let mut q = HoldQueue::new();
        let t = Time::from_secs(10);
        assert!(q.hold(&frame(1, 60), 1, A.into(), t));
        assert!(q.hold(&frame(2, 70), 0, B.into(), t));
        assert!(q.hold(&frame(3, 80), 1, A.into(), t));
        assert_eq!(q.len(), 3);
        let (r, out) = release_all(&mut q, t, &[]);
        assert_eq!(
            (r, out.len(), q.len()),
            (Released::default(), 0, 3),
            "nothing resolved"
        );
        let mac = [2, 0, 0, 0, 0, 7];
        let (r, out) = release_all(&mut q, t + Duration::from_millis(5), &[(A.into(), mac)]);
        assert_eq!(r, Released { sent: 2, expired: 0 });
        assert_eq!(out.len(), 2);
        for ((e, f), (tag, len)) in out.iter().zip([(1u8, 60), (3u8, 80)]) {
            assert_eq!(*e, 1);
            assert_eq!(f.len(), len);
            assert_eq!(&f[..6], &mac, "destination MAC written");
            assert!(f[6..].iter().all(|&b| b == tag), "the frame held, in order");
        }
        assert_eq!(q.len(), 1, "B still waits");
    }

    #[test]
    fn full_queue_refuses_and_per_hop_cap_applies() {
        let mut q = HoldQueue::new();
        let t = Time::ZERO;
        for _ in 0..HOLD_PER_HOP {
            assert!(q.hold(&frame(1, 60), 0, A.into(), t));
        }
        assert!(!q.hold(&frame(1, 60), 0, A.into(), t), "per next hop cap");
        let mut i = 0u32;
        while q.len() < HOLD_SLOTS {
            assert!(q.hold(&frame(2, 60), 0, IpAddr::from((0x0b00_0000 + i).to_be_bytes()), t));
            i += 1;
        }
        assert!(!q.hold(&frame(3, 60), 0, B.into(), t), "full");
        assert!(
            !HoldQueue::new().hold(&frame(4, HOLD_FRAME + 1), 0, B.into(), t),
            "too long"
        );
    }

    #[test]
    fn frames_expire_at_the_deadline() {
        let mut q = HoldQueue::new();
        let t = Time::from_secs(1);
        assert!(q.hold(&frame(1, 60), 0, A.into(), t));
        let (r, _) = release_all(&mut q, t + HOLD_TIMEOUT - Duration::from_millis(1), &[]);
        assert_eq!(r.expired, 0);
        let (r, out) = release_all(&mut q, t + HOLD_TIMEOUT, &[]);
        assert_eq!((r.expired, r.sent, out.len(), q.len()), (1, 0, 0, 0));
        assert!(q.hold(&frame(1, 60), 0, A.into(), t), "slot free again");
    }
}
