//! In-memory backend for tests and benches: frames are pushed into an RX queue and the frames
//! the pipeline sends are collected per interface.

use std::collections::VecDeque;
use std::io;
use std::time::Duration;

use super::{FrameBuf, HEADROOM, MAX_FRAME, PacketIo};
use crate::verdict::Verdict;

/// A frame sent by the pipeline through [`MemIo`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentFrame {
    /// Interface it was sent on.
    pub iface: u16,
    /// Its bytes.
    pub data: Vec<u8>,
}

/// In-memory [`PacketIo`]: `inject` frames, run `poll_burst`, read `sent`.
#[derive(Debug, Default)]
pub struct MemIo {
    rx: VecDeque<(u16, Vec<u8>)>,
    /// Frames sent, in order.
    pub sent: Vec<SentFrame>,
    /// Verdicts returned for each received frame, in order.
    pub verdicts: Vec<Verdict>,
    scratch: Vec<u8>,
}

impl MemIo {
    /// An empty backend.
    pub fn new() -> MemIo {
        MemIo {
            scratch: vec![0u8; HEADROOM + MAX_FRAME],
            ..MemIo::default()
        }
    }

    /// Queues `frame` as received on interface `iface`.
    pub fn inject(&mut self, iface: u16, frame: &[u8]) {
        self.rx.push_back((iface, frame.to_vec()));
    }
}

impl PacketIo for MemIo {
    fn poll_burst(
        &mut self,
        max: usize,
        handler: &mut dyn FnMut(&mut FrameBuf<'_>, u16) -> Verdict,
    ) -> io::Result<usize> {
        if self.scratch.is_empty() {
            self.scratch = vec![0u8; HEADROOM + MAX_FRAME];
        }
        let mut n = 0;
        while n < max {
            let Some((iface, frame)) = self.rx.pop_front() else {
                break;
            };
            n += 1;
            let len = frame.len().min(MAX_FRAME);
            self.scratch[HEADROOM..HEADROOM + len].copy_from_slice(&frame[..len]);
            let mut fb = FrameBuf::new(&mut self.scratch, HEADROOM, len);
            let v = handler(&mut fb, iface);
            match v {
                Verdict::Forward { egress } => self.sent.push(SentFrame {
                    iface: egress,
                    data: fb.frame().to_vec(),
                }),
                Verdict::Reply => self.sent.push(SentFrame {
                    iface,
                    data: fb.frame().to_vec(),
                }),
                Verdict::Pass | Verdict::Drop(_) | Verdict::Held => {}
            }
            self.verdicts.push(v);
        }
        Ok(n)
    }

    fn send_frame(&mut self, iface: u16, frame: &[u8]) -> io::Result<()> {
        self.sent.push(SentFrame {
            iface,
            data: frame.to_vec(),
        });
        Ok(())
    }

    fn wait(&mut self, _timeout: Duration) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::DropReason;

    #[test]
    fn frames_flow_through_with_headroom_and_verdicts() {
        let mut io = MemIo::new();
        io.inject(0, &[1, 2, 3, 4]);
        io.inject(1, &[5, 6]);
        io.inject(0, &[7]);
        let mut seen = Vec::new();
        let n = io
            .poll_burst(32, &mut |fb, iface| {
                seen.push((iface, fb.frame().to_vec()));
                match iface {
                    0 if fb.len() == 4 => {
                        assert!(fb.push_front(2));
                        fb.frame_mut()[..2].copy_from_slice(&[9, 9]);
                        Verdict::Forward { egress: 1 }
                    }
                    1 => Verdict::Reply,
                    _ => Verdict::Drop(DropReason::Malformed),
                }
            })
            .unwrap();
        assert_eq!(n, 3);
        assert_eq!(seen.len(), 3);
        assert_eq!(
            io.sent,
            vec![
                SentFrame {
                    iface: 1,
                    data: vec![9, 9, 1, 2, 3, 4]
                },
                SentFrame {
                    iface: 1,
                    data: vec![5, 6]
                }
            ]
        );
        assert_eq!(io.verdicts[2], Verdict::Drop(DropReason::Malformed));
    }

    /// Backends without their own burst path hand frames to a burst handler one at a time,
    /// with the handler's verdict applied.
    #[test]
    fn default_poll_bursts_applies_the_burst_handlers_verdicts() {
        let mut io = MemIo::new();
        io.inject(0, &[1, 2, 3]);
        io.inject(1, &[4, 5]);
        io.inject(0, &[6]);
        let mut sizes = Vec::new();
        let n = io
            .poll_bursts(2, &mut |frames, iface, verdicts| {
                sizes.push((iface, frames.len()));
                for (fb, v) in frames.iter_mut().zip(verdicts.iter_mut()) {
                    fb.frame_mut()[0] = 9;
                    *v = if iface == 0 {
                        Verdict::Forward { egress: 1 }
                    } else {
                        Verdict::Drop(DropReason::NoService)
                    };
                }
            })
            .unwrap();
        assert_eq!(n, 2, "at most `max` frames");
        assert_eq!(sizes, vec![(0, 1), (1, 1)]);
        assert_eq!(
            io.sent,
            vec![SentFrame {
                iface: 1,
                data: vec![9, 2, 3]
            }]
        );
        assert_eq!(
            io.verdicts,
            vec![
                Verdict::Forward { egress: 1 },
                Verdict::Drop(DropReason::NoService)
            ]
        );
    }
}
