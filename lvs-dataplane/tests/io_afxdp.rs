//! The AF_XDP backend on a veth pair in a private network namespace (root): the steering
//! program sends the balancer's frames to the socket and leaves the rest to the kernel;
//! frames arrive intact, Forward/Reply go out, Pass/Drop do not; several interfaces share one
//! UMEM; detaching leaves no program behind.

mod io_support;

use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::time::{Duration, Instant};

use io_support::{Netns, RawSock, frames, ifindex, require_root};
use lvs_dataplane::io::afxdp::socket::BindMode;
use lvs_dataplane::io::afxdp::{AfXdpConfig, AfXdpIface, AfXdpIo};
use lvs_dataplane::io::xdp_prog::{BalancerAddrs, XdpAction, XdpMode, XdpSteering};
use lvs_dataplane::io::{FrameBuf, PacketIo};
use lvs_dataplane::verdict::{DropReason, Verdict};

const HOST: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 100);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 9);

fn small() -> AfXdpConfig {
    AfXdpConfig {
        ring_size: 256,
        frames_per_socket: 1024,
        ..AfXdpConfig::default()
    }
}

/// An AF_XDP socket on queue 0 of `iface` (with `steering`'s XSKMAP slot, if any), small
/// rings.
fn io_on(iface: &str, steering: Option<&XdpSteering>) -> AfXdpIo {
    AfXdpIo::new(
        &[AfXdpIface {
            ifindex: ifindex(iface),
            queue: 0,
            steering,
        }],
        small(),
    )
    .unwrap()
}

/// Runs bursts until `handled` frames were seen or `limit` passed.
fn pump(
    io: &mut AfXdpIo,
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

fn udp_payload(f: &[u8]) -> &[u8] {
    &f[14 + 20 + 8..]
}

fn steering_and_kernel_path(mode: XdpMode) {
    let ns = Netns::new("xdp");
    ns.veth("va", 0xaa, "vb", 0xbb);
    ns.ip(&["addr", "add", "10.99.0.1/24", "dev", "va"]);
    let addrs = BalancerAddrs::new(64).unwrap();
    addrs.add_local(IpAddr::V4(VIP)).unwrap();
    let mut steering = XdpSteering::load(&addrs, 1, XdpAction::Pass).unwrap();
    steering.attach(ifindex("va"), mode).unwrap();
    assert!(ns.ip_output(&["link", "show", "va"]).contains("xdp"));
    let mut io = io_on("va", Some(&steering));
    // veth has no zero-copy support: the bind fell back to copy mode.
    assert_eq!(io.bind_mode(0), BindMode::Copy);
    // With a socket in slot 0, BPF_PROG_TEST_RUN (queue 0) reports XDP_REDIRECT for a VIP frame
    // and XDP_PASS for the host's (test runs do not deliver the frame).
    let probe = frames::udp4(CLIENT, 1, VIP, 80, b"probe");
    assert_eq!(steering.test_run(&probe).unwrap(), XdpAction::Redirect as u32);
    let host_probe = frames::udp4(CLIENT, 1, HOST, 80, b"probe");
    assert_eq!(steering.test_run(&host_probe).unwrap(), XdpAction::Pass as u32);
    let vb = RawSock::new("vb");

    // 30 datagrams to the VIP: i % 3 == 0 forwarded (rewritten), 1 dropped, 2 passed.
    let sent: Vec<Vec<u8>> = (0..30u8)
        .map(|i| frames::udp4(CLIENT, 40000 + i as u16, VIP, 80, &[i; 64]))
        .collect();
    for f in &sent {
        vb.send(f);
    }
    let mut got = Vec::new();
    let n = pump(&mut io, sent.len(), Duration::from_secs(5), &mut |fb, iface| {
        assert_eq!(iface, 0);
        got.push(fb.frame().to_vec());
        let i = udp_payload(fb.frame())[0];
        match i % 3 {
            0 => {
                // Swap the MACs and grow the frame by a trailer byte: Forward sends the
                // rewritten frame, not the received one.
                let f = fb.frame_mut();
                let (dst, src) = f.split_at_mut(6);
                dst.swap_with_slice(&mut src[..6]);
                let len = fb.len();
                assert!(fb.set_len(len + 1));
                fb.frame_mut()[len] = 0xee;
                Verdict::Forward { egress: 0 }
            }
            1 => Verdict::Drop(DropReason::NoService),
            _ => Verdict::Pass,
        }
    });
    assert_eq!(n, sent.len(), "all datagrams to the VIP reach the socket");
    assert_eq!(got, sent, "frames arrive intact and in order");
    let out = vb.drain(Duration::from_millis(300), 100);
    let out: Vec<_> = out.into_iter().filter(|f| f.len() > 42 && f[23] == 17).collect();
    let expect: Vec<Vec<u8>> = sent
        .iter()
        .filter(|f| udp_payload(f)[0].is_multiple_of(3))
        .map(|f| {
            let mut e = f.clone();
            let (dst, src) = e.split_at_mut(6);
            dst.swap_with_slice(&mut src[..6]);
            e.push(0xee);
            e
        })
        .collect();
    assert_eq!(out, expect, "only the forwarded frames go out, rewritten");
    let st = io.stats();
    assert_eq!(st.rx, 30);
    assert_eq!(st.tx, 10);
    assert_eq!(st.pass_dropped, 10);

    // A datagram to the host's own address is left to the kernel: a normal socket gets it.
    let sock = UdpSocket::bind((HOST, 5555)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    vb.send(&frames::udp4(CLIENT, 4444, HOST, 5555, b"for the kernel"));
    let mut buf = [0u8; 64];
    let (len, from) = sock.recv_from(&mut buf).expect("the kernel receives it");
    assert_eq!(&buf[..len], b"for the kernel");
    assert_eq!(from.ip(), IpAddr::V4(CLIENT));

    // ARP for the host is answered by the kernel; ARP for the VIP comes to lvs (which
    // replies here by turning the frame around).
    vb.send(&frames::arp_request(CLIENT, HOST));
    let deadline = Instant::now() + Duration::from_secs(3);
    let reply = loop {
        let f = vb.recv(deadline).expect("the kernel answers ARP for its address");
        if f[12..14] == [0x08, 0x06] && f[21] == 2 {
            break f;
        }
    };
    assert_eq!(&reply[28..32], &HOST.octets(), "reply from the host address");
    assert_eq!(&reply[22..28], &frames::DST_MAC, "with va's MAC");
    let arp_vip = frames::arp_request(CLIENT, VIP);
    vb.send(&arp_vip);
    let mut seen_arp = Vec::new();
    let n = pump(&mut io, 1, Duration::from_secs(3), &mut |fb, _| {
        seen_arp.push(fb.frame().to_vec());
        fb.frame_mut()[21] = 2;
        Verdict::Reply
    });
    assert_eq!(n, 1);
    assert_eq!(seen_arp, vec![arp_vip.clone()]);
    let deadline = Instant::now() + Duration::from_secs(3);
    let back = loop {
        let f = vb
            .recv(deadline)
            .expect("lvs's reply goes out of the ingress interface");
        if f[12..14] == [0x08, 0x06] && f[21] == 2 && f[38..42] == VIP.octets() {
            break f;
        }
    };
    assert_eq!(back[..21], arp_vip[..21]);

    // Removing the VIP at run time hands its traffic back to the kernel.
    assert!(addrs.remove_local(IpAddr::V4(VIP)).unwrap());
    vb.send(&frames::udp4(CLIENT, 1, VIP, 80, b"late"));
    let n = pump(&mut io, 1, Duration::from_millis(300), &mut |_, _| Verdict::Pass);
    assert_eq!(n, 0, "no longer redirected");

    drop(io);
    steering.detach();
    // The link goes when its last fd does; a process another test thread forked at that
    // moment holds a copy until it execs, so the detach may show a moment later.
    let deadline = Instant::now() + Duration::from_secs(2);
    while ns.ip_output(&["link", "show", "va"]).contains("xdp") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!ns.ip_output(&["link", "show", "va"]).contains("xdp"), "detached");
}

#[test]
fn afxdp_native_mode_steers_forwards_and_leaves_the_rest_to_the_kernel() {
    if require_root("afxdp_native_mode_steers_forwards_and_leaves_the_rest_to_the_kernel") {
        steering_and_kernel_path(XdpMode::Native);
    }
}

#[test]
fn afxdp_generic_mode_steers_forwards_and_leaves_the_rest_to_the_kernel() {
    if require_root("afxdp_generic_mode_steers_forwards_and_leaves_the_rest_to_the_kernel") {
        steering_and_kernel_path(XdpMode::Generic);
    }
}

#[test]
fn afxdp_two_interfaces_share_one_umem_and_forward_across() {
    if !require_root("afxdp_two_interfaces_share_one_umem_and_forward_across") {
        return;
    }
    let ns = Netns::new("xdp2");
    ns.veth("va", 0xaa, "vb", 0xbb);
    ns.veth("vc", 0xcc, "vd", 0xdd);
    let addrs = BalancerAddrs::new(64).unwrap();
    addrs.add_local(IpAddr::V4(VIP)).unwrap();
    let mut st_a = XdpSteering::load(&addrs, 1, XdpAction::Pass).unwrap();
    let mut st_c = XdpSteering::load(&addrs, 1, XdpAction::Pass).unwrap();
    assert_eq!(st_a.attach_best(ifindex("va")).unwrap(), XdpMode::Native);
    assert_eq!(st_c.attach_best(ifindex("vc")).unwrap(), XdpMode::Native);
    let mut io = AfXdpIo::new(
        &[
            AfXdpIface {
                ifindex: ifindex("va"),
                queue: 0,
                steering: Some(&st_a),
            },
            AfXdpIface {
                ifindex: ifindex("vc"),
                queue: 0,
                steering: Some(&st_c),
            },
        ],
        small(),
    )
    .unwrap();
    assert_eq!(io.bind_mode(1), BindMode::Shared);
    let vb = RawSock::new("vb");
    let vd = RawSock::new("vd");
    // 200 frames into va, forwarded out of vc; 5 into vc, replied out of vc.
    let into_a: Vec<Vec<u8>> = (0..200u16)
        .map(|i| frames::udp4(CLIENT, i, VIP, 80, &i.to_be_bytes()))
        .collect();
    let into_c: Vec<Vec<u8>> = (0..5u16)
        .map(|i| frames::udp4(CLIENT, 1000 + i, VIP, 81, &i.to_be_bytes()))
        .collect();
    for f in &into_a {
        vb.send(f);
    }
    for f in &into_c {
        vd.send(f);
    }
    let mut from = [0usize; 2];
    let n = pump(&mut io, 205, Duration::from_secs(5), &mut |_, iface| {
        from[iface as usize] += 1;
        if iface == 0 {
            Verdict::Forward { egress: 1 }
        } else {
            Verdict::Reply
        }
    });
    assert_eq!(n, 205);
    assert_eq!(from, [200, 5]);
    let out_d: Vec<_> = vd
        .drain(Duration::from_millis(300), 1000)
        .into_iter()
        .filter(|f| f.len() > 23 && f[23] == 17)
        .collect();
    let mut expect = into_a.clone();
    expect.extend(into_c.iter().cloned());
    let mut sorted = out_d.clone();
    sorted.sort();
    expect.sort();
    assert_eq!(sorted, expect, "everything leaves through vc, intact");
    let out_b: Vec<_> = vb
        .drain(Duration::from_millis(100), 10)
        .into_iter()
        .filter(|f| f.len() > 23 && f[23] == 17)
        .collect();
    assert!(out_b.is_empty(), "nothing goes back out of va");
    // Frames were recycled: more frames than ring entries went through.
    assert_eq!(io.stats().tx, 205);
    let ks = io.kernel_stats(0).unwrap();
    assert_eq!(ks.rx_dropped, 0);
}

/// `rx_queue_N_xdp_redirect` of `iface` per queue N (`ethtool -S` in namespace `ns`).
fn xdp_redirects_per_queue(ns: &Netns, iface: &str, queues: usize) -> Vec<u64> {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &ns.name, "ethtool", "-S", iface])
        .output()
        .expect("ethtool");
    let text = String::from_utf8_lossy(&out.stdout);
    (0..queues)
        .map(|q| {
            let key = format!("rx_queue_{q}_xdp_redirect:");
            text.lines()
                .find_map(|l| l.trim().strip_prefix(key.as_str()))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        })
        .collect()
}

#[test]
fn afxdp_one_io_serves_several_queues_of_one_interface_as_one_interface_number() {
    if !require_root("afxdp_one_io_serves_several_queues_of_one_interface_as_one_interface_number") {
        return;
    }
    let ns = Netns::new("xdpmq");
    // Two queues: vb's kernel spreads the flows below over both by their hash.
    ns.veth_queues("va", 0xaa, "vb", 0xbb, true, 2);
    let addrs = BalancerAddrs::new(64).unwrap();
    addrs.add_local(IpAddr::V4(VIP)).unwrap();
    let mut steering = XdpSteering::load(&addrs, 2, XdpAction::Pass).unwrap();
    steering.attach(ifindex("va"), XdpMode::Native).unwrap();
    let mut io = AfXdpIo::new(
        &[
            AfXdpIface {
                ifindex: ifindex("va"),
                queue: 0,
                steering: Some(&steering),
            },
            AfXdpIface {
                ifindex: ifindex("va"),
                queue: 1,
                steering: Some(&steering),
            },
        ],
        small(),
    )
    .unwrap();
    assert_eq!(
        io.interfaces(),
        1,
        "two queues of one interface are one interface number"
    );
    let vb = RawSock::new("vb");
    let sent: Vec<Vec<u8>> = (0..200u16)
        .map(|i| frames::udp4(CLIENT, 20000 + i, VIP, 80, &i.to_be_bytes()))
        .collect();
    for f in &sent {
        vb.send(f);
    }
    let mut ifaces_seen = Vec::new();
    let n = pump(&mut io, sent.len(), Duration::from_secs(5), &mut |fb, iface| {
        ifaces_seen.push(iface);
        // Forward out of interface 0 and Reply (out of the queue it came in on) alternate.
        if udp_payload(fb.frame())[1].is_multiple_of(2) {
            Verdict::Forward { egress: 0 }
        } else {
            Verdict::Reply
        }
    });
    assert_eq!(
        n,
        sent.len(),
        "every datagram to the VIP reaches lvs, whatever its queue"
    );
    assert!(ifaces_seen.iter().all(|&i| i == 0), "{ifaces_seen:?}");
    let per_queue = xdp_redirects_per_queue(&ns, "va", 2);
    assert_eq!(per_queue.iter().sum::<u64>(), 200, "{per_queue:?}");
    assert!(
        per_queue.iter().all(|&q| q > 0),
        "the flows used both queues (else this test shows nothing): {per_queue:?}"
    );
    let mut back: Vec<_> = vb
        .drain(Duration::from_millis(300), 1000)
        .into_iter()
        .filter(|f| f.len() > 23 && f[23] == 17)
        .collect();
    back.sort();
    let mut expect = sent.clone();
    expect.sort();
    assert_eq!(back, expect, "all 200 go back out of va, intact");
    assert_eq!(io.stats().tx, 200);
    assert!(
        io.send_frame(1, &frames::arp_request(VIP, CLIENT)).is_err(),
        "one interface only"
    );
    drop(io);
    steering.detach();
}

#[test]
fn afxdp_send_frame_goes_out_of_the_chosen_interface() {
    if !require_root("afxdp_send_frame_goes_out_of_the_chosen_interface") {
        return;
    }
    let ns = Netns::new("xdp3");
    ns.veth("va", 0xaa, "vb", 0xbb);
    let mut io = io_on("va", None);
    let vb = RawSock::new("vb");
    let arp = frames::arp_request(VIP, CLIENT);
    io.send_frame(0, &arp).unwrap();
    let got = vb.recv(Instant::now() + Duration::from_secs(3));
    assert_eq!(got.as_deref(), Some(&arp[..]));
    assert!(io.send_frame(1, &arp).is_err(), "no interface 1");
}

#[test]
fn afxdp_program_is_detached_when_its_owner_is_killed() {
    if !require_root("afxdp_program_is_detached_when_its_owner_is_killed") {
        return;
    }
    let ns = Netns::new("crash");
    ns.veth("va", 0xaa, "vb", 0xbb);
    let addrs = BalancerAddrs::new(8).unwrap();
    let mut steering = XdpSteering::load(&addrs, 1, XdpAction::Pass).unwrap();
    let idx = ifindex("va");
    let mut fds = [0i32; 2];
    // SAFETY: `fds` has room for the two descriptors.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: the child only makes raw syscalls (bpf, write, sleep, _exit) and never returns
    // into the test harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        let ok = steering.attach(idx, XdpMode::Native).is_ok() as u8;
        // SAFETY: writes one byte from a live local; then the child sleeps (bounded) and exits
        // without running destructors, as if it had crashed.
        unsafe {
            libc::write(fds[1], (&ok as *const u8).cast(), 1);
        }
        // SAFETY: plain libc calls in the child.
        unsafe {
            libc::sleep(20);
        }
        // SAFETY: ends the child immediately.
        unsafe { libc::_exit(1) };
    }
    let mut p = libc::pollfd {
        fd: fds[0],
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let ready = unsafe { libc::poll(&mut p, 1, 5000) };
    let mut byte = 0u8;
    // SAFETY: reads one byte into a live local.
    let n = unsafe { libc::read(fds[0], (&mut byte as *mut u8).cast(), 1) };
    let attached_in_child = ready == 1 && n == 1 && byte == 1;
    for fd in fds {
        // SAFETY: closes the pipe's two descriptors, which nothing else uses.
        unsafe { libc::close(fd) };
    }
    let shown = ns.ip_output(&["link", "show", "va"]).contains("xdp");
    // SAFETY: `pid` is our child; SIGKILL is the crash.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let mut status = 0;
    // SAFETY: waits for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(attached_in_child, "the child attached the program");
    assert!(shown, "attached while the child lived");
    assert!(libc::WIFSIGNALED(status), "the child was killed");
    let deadline = Instant::now() + Duration::from_secs(3);
    while ns.ip_output(&["link", "show", "va"]).contains("xdp") {
        assert!(Instant::now() < deadline, "still attached after its owner died");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The interface can be attached again right away.
    steering.attach(idx, XdpMode::Native).unwrap();
}

#[test]
fn afxdp_wait_sleeps_when_idle_and_wakes_for_a_frame() {
    if !require_root("afxdp_wait_sleeps_when_idle_and_wakes_for_a_frame") {
        return;
    }
    let ns = Netns::new("xdpwait");
    ns.veth("va", 0xaa, "vb", 0xbb);
    let addrs = BalancerAddrs::new(8).unwrap();
    addrs.add_local(IpAddr::V4(VIP)).unwrap();
    let mut steering = XdpSteering::load(&addrs, 1, XdpAction::Pass).unwrap();
    steering.attach(ifindex("va"), XdpMode::Native).unwrap();
    let mut io = io_on("va", Some(&steering));
    let t = Instant::now();
    io.wait(Duration::from_millis(200)).unwrap();
    assert!(t.elapsed() >= Duration::from_millis(150), "{:?}", t.elapsed());
    assert_eq!(io.poll_burst(64, &mut |_, _| Verdict::Pass).unwrap(), 0);
    let sender = std::thread::spawn(|| {
        let vb = RawSock::new("vb");
        std::thread::sleep(Duration::from_millis(100));
        vb.send(&frames::udp4(CLIENT, 1, VIP, 80, b"wake"));
    });
    let t = Instant::now();
    io.wait(Duration::from_secs(10)).unwrap();
    let woke = t.elapsed();
    sender.join().unwrap();
    assert!(woke < Duration::from_secs(5), "woke after {woke:?}");
    let n = pump(&mut io, 1, Duration::from_secs(3), &mut |_, _| {
        Verdict::Drop(DropReason::NoService)
    });
    assert_eq!(n, 1);
}

/// `poll_bursts` hands the frames waiting in a ring over as whole bursts of one interface,
/// in arrival order, and sends each frame the way its verdict says (rewritten in place):
/// the same outcome as frame-by-frame `poll_burst`, in fewer handler calls.
#[test]
fn afxdp_bursts_go_to_the_handler_whole_and_in_order() {
    if !require_root("afxdp_bursts_go_to_the_handler_whole_and_in_order") {
        return;
    }
    let ns = Netns::new("xdpb");
    ns.veth("va", 0xaa, "vb", 0xbb);
    let addrs = BalancerAddrs::new(64).unwrap();
    addrs.add_local(IpAddr::V4(VIP)).unwrap();
    let mut steering = XdpSteering::load(&addrs, 1, XdpAction::Pass).unwrap();
    steering.attach_best(ifindex("va")).unwrap();
    let mut io = io_on("va", Some(&steering));
    let vb = RawSock::new("vb");
    let sent: Vec<Vec<u8>> = (0..150u16)
        .map(|i| frames::udp4(CLIENT, 20000 + i, VIP, 80, &i.to_be_bytes()))
        .collect();
    for f in &sent {
        vb.send(f);
    }
    // Let every frame reach the RX ring before the first poll.
    std::thread::sleep(Duration::from_millis(200));
    let mut bursts: Vec<usize> = Vec::new();
    let mut got: Vec<Vec<u8>> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut n = 0;
    while n < sent.len() && Instant::now() < deadline {
        io.wait(Duration::from_millis(10)).unwrap();
        n += io
            .poll_bursts(256, &mut |frames, iface, verdicts| {
                assert_eq!(iface, 0);
                assert_eq!(frames.len(), verdicts.len());
                bursts.push(frames.len());
                for (fb, v) in frames.iter_mut().zip(verdicts.iter_mut()) {
                    got.push(fb.frame().to_vec());
                    let i = u16::from_be_bytes([udp_payload(fb.frame())[0], udp_payload(fb.frame())[1]]);
                    *v = if i.is_multiple_of(2) {
                        // Forward with a trailer byte: the rewritten frame goes out.
                        let len = fb.len();
                        assert!(fb.set_len(len + 1));
                        fb.frame_mut()[len] = 0xee;
                        Verdict::Forward { egress: 0 }
                    } else {
                        Verdict::Drop(DropReason::NoService)
                    };
                }
            })
            .unwrap();
    }
    assert_eq!(n, sent.len());
    assert_eq!(got, sent, "every frame, intact and in arrival order");
    assert_eq!(bursts.iter().sum::<usize>(), sent.len());
    assert!(
        bursts[0] > 1,
        "frames waiting together come as one burst: {bursts:?}"
    );
    let out: Vec<_> = vb
        .drain(Duration::from_millis(300), 1000)
        .into_iter()
        .filter(|f| f.len() > 23 && f[23] == 17)
        .collect();
    let expect: Vec<Vec<u8>> = sent
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 2 == 0)
        .map(|(_, f)| {
            let mut e = f.clone();
            e.push(0xee);
            e
        })
        .collect();
    assert_eq!(out, expect, "the forwarded frames go out rewritten, in order");
    let st = io.stats();
    assert_eq!((st.rx, st.tx), (150, 75));
}
