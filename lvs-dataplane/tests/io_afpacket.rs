//! The AF_PACKET backend on veth pairs in a private network namespace (root): frames arrive
//! intact, Forward/Reply go out of the right interface, Pass/Drop do not, the backend does
//! not see its own transmissions, a fanout group splits flows between workers without
//! duplicates, and partial checksums are completed. Every case runs on the TPACKET_V2 ring
//! (`<case>::v2`) and on the TPACKET_V3 ring (`<case>::v3`).

mod io_support;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use io_support::{Netns, RawSock, frames, require_root};
use lvs_dataplane::io::afpacket::{AfPacketConfig, AfPacketIo, RxRing};
use lvs_dataplane::io::{FrameBuf, PacketIo};
use lvs_dataplane::verdict::{DropReason, Verdict};

fn small(ring: RxRing) -> AfPacketConfig {
    AfPacketConfig {
        rx_ring: ring,
        block_size: 1 << 16,
        block_count: 16,
        tx_frames: 128,
        ..AfPacketConfig::default()
    }
}

/// Runs bursts until `want` frames were handled or `limit` passed; returns the count.
fn pump(
    io: &mut AfPacketIo,
    want: usize,
    limit: Duration,
    handler: &mut dyn FnMut(&mut FrameBuf<'_>, u16) -> Verdict,
) -> usize {
    let deadline = Instant::now() + limit;
    let mut seen = 0;
    while seen < want && Instant::now() < deadline {
        io.wait(Duration::from_millis(10)).unwrap();
        seen += io.poll_burst(64, handler).unwrap();
    }
    seen
}

/// Makes the kernel send UDP datagrams from 10.9.0.1 to 10.9.0.77:9 out of va for 300 ms,
/// calling `poll` between them, and checks (through vb) that they really left.
fn kernel_sends_out_of_va(ns: &Netns, mut poll: impl FnMut()) {
    ns.ip(&["addr", "add", "10.9.0.1/24", "dev", "va"]);
    ns.ip(&[
        "neigh",
        "add",
        "10.9.0.77",
        "lladdr",
        "02:00:00:00:00:bb",
        "dev",
        "va",
    ]);
    let vb = RawSock::new("vb");
    let sock = std::net::UdpSocket::bind("10.9.0.1:0").unwrap();
    let until = Instant::now() + Duration::from_millis(300);
    while Instant::now() < until {
        sock.send_to(b"host traffic", "10.9.0.77:9").unwrap();
        std::thread::sleep(Duration::from_millis(10));
        poll();
    }
    let left = vb
        .drain(Duration::from_millis(100), 1000)
        .iter()
        .filter(|f| is_host_datagram(f))
        .count();
    assert!(left > 0, "the host's datagrams went out of va");
}

/// True for the datagrams of [`kernel_sends_out_of_va`].
fn is_host_datagram(f: &[u8]) -> bool {
    f.len() > 42 && f[12..14] == [8, 0] && f[23] == 17 && f[30..34] == [10, 9, 0, 77]
}

fn marked_only(v: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    v.into_iter().filter(|f| frames::mark_of(f).is_some()).collect()
}

/// (Run on both ring versions, see the end of the file.)
fn afpacket_frames_arrive_intact_and_only_forwarded_ones_go_out(ring: RxRing) {
    if !require_root(&format!(
        "afpacket_frames_arrive_intact_and_only_forwarded_ones_go_out {ring:?}"
    )) {
        return;
    }
    let _ns = Netns::new("pkt");
    _ns.veth("va", 0xaa, "vb", 0xbb);
    let mut io = AfPacketIo::new(&["va"], small(ring)).unwrap();
    let want = match ring {
        RxRing::V2 => 2,
        RxRing::V3 { .. } => 3,
    };
    assert_eq!(
        io.tpacket_version(0).unwrap(),
        want,
        "the kernel runs the asked ring"
    );
    let vb = RawSock::new("vb");
    // 30 frames of 60..1514 bytes: i % 3 == 0 forwarded (rewritten), 1 dropped, 2 passed.
    let sent: Vec<Vec<u8>> = (0..30u32)
        .map(|i| frames::marked(i, 46 + (i as usize * 97) % 1454))
        .collect();
    for f in &sent {
        vb.send(f);
    }
    let mut got = Vec::new();
    let n = pump(&mut io, sent.len(), Duration::from_secs(5), &mut |fb, iface| {
        assert_eq!(iface, 0);
        assert!(fb.head() >= 128, "headroom in front of the frame");
        got.push(fb.frame().to_vec());
        let id = frames::mark_of(fb.frame()).expect("only test frames on this link");
        match id % 3 {
            0 => {
                let f = fb.frame_mut();
                let (dst, src) = f.split_at_mut(6);
                dst.swap_with_slice(&mut src[..6]);
                // Grow at the front into the headroom: a 2-byte shim before the frame.
                assert!(fb.push_front(2));
                fb.frame_mut()[..2].copy_from_slice(&[0xab, 0xcd]);
                assert!(fb.pull_front(2));
                Verdict::Forward { egress: 0 }
            }
            1 => Verdict::Drop(DropReason::Malformed),
            _ => Verdict::Pass,
        }
    });
    assert_eq!(n, sent.len());
    assert_eq!(got, sent, "frames arrive intact and in order");
    let out = marked_only(vb.drain(Duration::from_millis(300), 100));
    let expect: Vec<Vec<u8>> = sent
        .iter()
        .filter(|f| frames::mark_of(f).unwrap().is_multiple_of(3))
        .map(|f| {
            let mut e = f.clone();
            let (dst, src) = e.split_at_mut(6);
            dst.swap_with_slice(&mut src[..6]);
            e
        })
        .collect();
    assert_eq!(out, expect, "only the forwarded frames go out, rewritten");
    // The backend does not receive what it sent itself, nor the host's outgoing traffic.
    let again = pump(&mut io, 1, Duration::from_millis(100), &mut |_, _| Verdict::Pass);
    assert_eq!(again, 0, "own transmissions are ignored");
    let mut outgoing = 0;
    kernel_sends_out_of_va(&_ns, || {
        io.poll_burst(64, &mut |fb, _| {
            outgoing += is_host_datagram(fb.frame()) as usize;
            Verdict::Pass
        })
        .unwrap();
    });
    assert_eq!(outgoing, 0, "outgoing host traffic ignored");
    let st = io.stats();
    assert_eq!((st.rx, st.tx, st.truncated), (30, 10, 0));
    let (packets, drops) = io.kernel_stats(0).unwrap();
    assert!(packets >= 30, "kernel counted {packets}");
    assert_eq!(drops, 0);
}

/// (Run on both ring versions, see the end of the file.)
fn afpacket_two_interfaces_forward_across_and_reply_on_ingress(ring: RxRing) {
    if !require_root(&format!(
        "afpacket_two_interfaces_forward_across_and_reply_on_ingress {ring:?}"
    )) {
        return;
    }
    let ns = Netns::new("pkt2");
    ns.veth("va", 0xaa, "vb", 0xbb);
    ns.veth("vc", 0xcc, "vd", 0xdd);
    let mut io = AfPacketIo::new(&["va", "vc"], small(ring)).unwrap();
    let vb = RawSock::new("vb");
    let vd = RawSock::new("vd");
    let into_a: Vec<Vec<u8>> = (0..300u32).map(|i| frames::marked(i, 100)).collect();
    let into_c: Vec<Vec<u8>> = (1000..1005u32).map(|i| frames::marked(i, 100)).collect();
    for f in &into_a {
        vb.send(f);
    }
    for f in &into_c {
        vd.send(f);
    }
    let mut from = [0usize; 2];
    let n = pump(&mut io, 305, Duration::from_secs(5), &mut |_, iface| {
        from[iface as usize] += 1;
        if iface == 0 {
            Verdict::Forward { egress: 1 }
        } else {
            Verdict::Reply
        }
    });
    assert_eq!(n, 305);
    assert_eq!(from, [300, 5]);
    let mut out_d = marked_only(vd.drain(Duration::from_millis(300), 1000));
    let mut expect: Vec<Vec<u8>> = into_a.iter().chain(&into_c).cloned().collect();
    out_d.sort();
    expect.sort();
    let ids = |v: &[Vec<u8>]| v.iter().map(|f| frames::mark_of(f).unwrap()).collect::<Vec<_>>();
    assert_eq!(ids(&out_d), ids(&expect), "all leave through vc");
    assert!(out_d == expect, "intact");
    assert!(marked_only(vb.drain(Duration::from_millis(100), 10)).is_empty());
    // More frames than TX slots went through: the ring was recycled.
    assert_eq!(io.stats().tx, 305);
    assert_eq!(io.stats().tx_ring_full, 0);
    // A bad egress number is counted, not sent.
    vb.send(&frames::marked(7, 60));
    let n = pump(&mut io, 1, Duration::from_secs(3), &mut |_, _| Verdict::Forward {
        egress: 9,
    });
    assert_eq!(n, 1);
    assert_eq!(io.stats().bad_egress, 1);
}

/// (Run on both ring versions, see the end of the file.)
fn afpacket_fanout_group_splits_flows_between_workers_without_duplicates(ring: RxRing) {
    if !require_root(&format!(
        "afpacket_fanout_group_splits_flows_between_workers_without_duplicates {ring:?}"
    )) {
        return;
    }
    let ns = Netns::new("fan");
    ns.veth("va", 0xaa, "vb", 0xbb);
    // This group transmits through the qdisc (the other tests bypass it).
    let cfg = AfPacketConfig {
        fanout_group: Some(0x4c00),
        qdisc_bypass: false,
        ..small(ring)
    };
    let mut w = [
        AfPacketIo::new(&["va"], cfg).unwrap(),
        AfPacketIo::new(&["va"], cfg).unwrap(),
    ];
    let vb = RawSock::new("vb");
    let client = Ipv4Addr::new(10, 9, 0, 1);
    let vip = Ipv4Addr::new(10, 9, 0, 100);
    // 100 flows, two datagrams each.
    for round in 0..2u8 {
        for p in 0..100u16 {
            vb.send(&frames::udp4(client, 20000 + p, vip, 80, &[round]));
        }
    }
    let mut seen: Vec<(usize, u16)> = Vec::new();
    // Every frame is forwarded back out of va, once: the count stays at 200 after a further
    // quiet period.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut quiet_until = None;
    while Instant::now() < deadline && quiet_until.is_none_or(|q| Instant::now() < q) {
        for (i, io) in w.iter_mut().enumerate() {
            io.wait(Duration::from_millis(5)).unwrap();
            io.poll_burst(64, &mut |fb, _| {
                let f = fb.frame();
                if f.len() > 42 && f[12..14] == [8, 0] && f[23] == 17 {
                    seen.push((i, u16::from_be_bytes([f[34], f[35]])));
                }
                Verdict::Forward { egress: 0 }
            })
            .unwrap();
        }
        if seen.len() >= 200 && quiet_until.is_none() {
            quiet_until = Some(Instant::now() + Duration::from_millis(300));
        }
    }
    let back = vb
        .drain(Duration::from_millis(300), 1000)
        .into_iter()
        .filter(|f| f.len() > 42 && f[12..14] == [8, 0] && f[23] == 17)
        .count();
    assert_eq!(back, 200, "every frame was forwarded once");
    assert_eq!(seen.len(), 200, "each frame reaches exactly one worker");
    // The host's own traffic leaving va is not the balancer's: the group ignores it
    // (PACKET_FANOUT_FLAG_IGNORE_OUTGOING; the per-socket option has no effect in a group).
    let mut outgoing = 0;
    kernel_sends_out_of_va(&ns, || {
        for io in w.iter_mut() {
            io.poll_burst(64, &mut |fb, _| {
                outgoing += is_host_datagram(fb.frame()) as usize;
                Verdict::Pass
            })
            .unwrap();
        }
    });
    assert_eq!(outgoing, 0, "outgoing host traffic seen by the group");
    let per = [0, 1].map(|i| seen.iter().filter(|(w, _)| *w == i).count());
    assert!(per[0] > 0 && per[1] > 0, "both workers get flows: {per:?}");
    for p in 20000..20100u16 {
        let workers: Vec<usize> = seen.iter().filter(|s| s.1 == p).map(|s| s.0).collect();
        assert_eq!(workers.len(), 2);
        assert_eq!(workers[0], workers[1], "flow {p} sticks to one worker");
    }
}

/// (Run on both ring versions, see the end of the file.)
fn afpacket_completes_partial_checksums_of_offloaded_frames(ring: RxRing) {
    if !require_root(&format!(
        "afpacket_completes_partial_checksums_of_offloaded_frames {ring:?}"
    )) {
        return;
    }
    let ns = Netns::new("csum");
    ns.veth_opts("va", 0xaa, "vb", 0xbb, false);
    ns.ip(&["addr", "add", "10.98.0.2/24", "dev", "vb"]);
    ns.ip(&[
        "neigh",
        "add",
        "10.98.0.50",
        "lladdr",
        "02:00:00:00:00:aa",
        "dev",
        "vb",
    ]);
    let mut io = AfPacketIo::new(&["va"], small(ring)).unwrap();
    // The kernel sends this SYN out of vb with a partial checksum (tx offload on).
    let th = std::thread::spawn(|| {
        let to = "10.98.0.50:80".parse().unwrap();
        let _ = std::net::TcpStream::connect_timeout(&to, Duration::from_millis(300));
    });
    let mut syn = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while syn.is_empty() && Instant::now() < deadline {
        pump(&mut io, 1, Duration::from_millis(100), &mut |fb, _| {
            let f = fb.frame();
            if f.len() > 54 && f[12..14] == [8, 0] && f[23] == 6 {
                syn.push(f.to_vec());
            }
            Verdict::Pass
        });
    }
    th.join().unwrap();
    assert_eq!(syn.len(), 1, "the SYN was seen once: {:?}", io.stats());
    // veth hands the locally generated SYN to its peer with a partial checksum
    // (TP_STATUS_CSUMNOTREADY); the backend completed it before the handler saw it.
    let st = io.stats();
    assert!(st.csum_not_ready >= 1, "veth marked it CSUMNOTREADY: {st:?}");
    assert_eq!(st.csum_completed, st.csum_not_ready, "{st:?}");
    // The TCP checksum now verifies: one's-complement sum over pseudo-header and segment.
    let f = &syn[0];
    let total = u16::from_be_bytes([f[16], f[17]]) as usize;
    let seg = &f[34..14 + total];
    let mut acc: u32 = 0;
    let mut add = |b: &[u8]| {
        for c in b.chunks(2) {
            acc += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32;
        }
    };
    add(&f[26..34]);
    add(&[0, 6]);
    add(&(seg.len() as u16).to_be_bytes());
    add(seg);
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    assert_eq!(acc, 0xffff, "checksum completed");
}

/// (Run on both ring versions, see the end of the file.)
fn afpacket_wait_sleeps_when_idle_and_wakes_for_a_frame(ring: RxRing) {
    if !require_root(&format!(
        "afpacket_wait_sleeps_when_idle_and_wakes_for_a_frame {ring:?}"
    )) {
        return;
    }
    let ns = Netns::new("pktwait");
    ns.veth("va", 0xaa, "vb", 0xbb);
    let mut io = AfPacketIo::new(&["va"], small(ring)).unwrap();
    // Idle: wait sleeps (close to) its timeout and nothing is received.
    let t = Instant::now();
    io.wait(Duration::from_millis(200)).unwrap();
    assert!(t.elapsed() >= Duration::from_millis(150), "{:?}", t.elapsed());
    assert_eq!(io.poll_burst(64, &mut |_, _| Verdict::Pass).unwrap(), 0);
    // A frame sent 100 ms from now ends a 10 s wait early.
    let sender = std::thread::spawn(|| {
        let vb = RawSock::new("vb");
        std::thread::sleep(Duration::from_millis(100));
        vb.send(&frames::marked(1, 60));
    });
    let t = Instant::now();
    io.wait(Duration::from_secs(10)).unwrap();
    let woke = t.elapsed();
    sender.join().unwrap();
    assert!(woke < Duration::from_secs(5), "woke after {woke:?}");
    let n = pump(&mut io, 1, Duration::from_secs(3), &mut |_, _| Verdict::Pass);
    assert_eq!(n, 1);
}

/// (Run on both ring versions.) A ring of 4 small blocks goes round many times: 600 frames
/// in waves of 4 arrive intact and in order, forwarded ones leave, nothing is lost.
fn afpacket_small_ring_wraps_around_many_times(ring: RxRing) {
    if !require_root(&format!("afpacket_small_ring_wraps_around_many_times {ring:?}")) {
        return;
    }
    let ns = Netns::new("wrap");
    ns.veth("va", 0xaa, "vb", 0xbb);
    // V2: 4 blocks of 2 slots; V3: 4 blocks of about 25 frames of this size.
    let cfg = AfPacketConfig {
        block_size: 4096,
        block_count: 4,
        tx_frames: 32,
        ..small(ring)
    };
    let mut io = AfPacketIo::new(&["va"], cfg).unwrap();
    let vb = RawSock::new("vb");
    let mut got = Vec::new();
    let mut back = 0;
    for wave in 0..150u32 {
        for i in 0..4 {
            vb.send(&frames::marked(wave * 4 + i, 100));
        }
        let want = got.len() + 4;
        pump(&mut io, 4, Duration::from_secs(3), &mut |fb, _| {
            got.push(frames::mark_of(fb.frame()).expect("only test frames"));
            Verdict::Forward { egress: 0 }
        });
        assert_eq!(got.len(), want, "wave {wave}: {:?}", io.stats());
        back += marked_only(vb.drain(Duration::from_millis(500), 4)).len();
    }
    assert_eq!(got, (0..600).collect::<Vec<u32>>(), "intact order");
    back += marked_only(vb.drain(Duration::from_millis(200), 100)).len();
    assert_eq!(back, 600, "every frame went back out");
    let st = io.stats();
    assert_eq!((st.rx, st.tx, st.bad_block, st.truncated), (600, 600, 0, 0));
    assert_eq!(io.kernel_stats(0).unwrap().1, 0, "no kernel drops");
}

/// The V3 ring as the tests use it: 1 ms block retire timer.
const V3: RxRing = RxRing::V3 { retire_timeout_ms: 1 };

/// A `v2` and a `v3` test for each case.
macro_rules! on_both_rings {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            use super::*;

            #[test]
            fn v2() {
                super::$case(RxRing::V2);
            }

            #[test]
            fn v3() {
                super::$case(V3);
            }
        }
    )*};
}

on_both_rings!(
    afpacket_frames_arrive_intact_and_only_forwarded_ones_go_out,
    afpacket_two_interfaces_forward_across_and_reply_on_ingress,
    afpacket_fanout_group_splits_flows_between_workers_without_duplicates,
    afpacket_completes_partial_checksums_of_offloaded_frames,
    afpacket_wait_sleeps_when_idle_and_wakes_for_a_frame,
    afpacket_small_ring_wraps_around_many_times,
);
