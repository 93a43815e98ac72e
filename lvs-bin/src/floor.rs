//! `lvs xdp-floor`: the lab benchmark's floor for the AF_XDP path. A stateless NAT forwarder
//! on the same XDP program, AF_XDP sockets, pinned workers and loop shape as `lvs run`, with
//! none of lvs's logic: no connection table, no scheduler, no neighbour resolution, no
//! counters. A frame to the VIP on one of its ports goes to the real server a hash of the
//! client's port picks, with its destination rewritten; a real server's answer from such a port goes back to the
//! client (whose MAC it learnt from the client's frames) with the VIP as its source.
//!
//! What it costs per connection is what the AF_XDP path itself costs on the machine (the
//! kernel's copies, the wake-ups and context switches of a userspace hop): the best any
//! userspace balancer on that path could reach. `lvs labbench --variants nft,lvs-afxdp,afxdp-floor`
//! puts it next to lvs and to nftables. It is a measuring instrument for the lab, not a
//! balancer: IPv4 without options only, and nothing is tracked.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use lvs_dataplane::io::PacketIo;
use lvs_dataplane::io::afxdp::{AfXdpConfig, AfXdpIface, AfXdpIo, queues_of_worker};
use lvs_dataplane::io::netlink;
use lvs_dataplane::io::xdp_prog::{BalancerAddrs, XdpAction, XdpSteering};
use lvs_dataplane::verdict::{DropReason, Verdict};
use lvs_dataplane::wire::checksum::{update_u32, update_udp_u32};
use lvs_dataplane::worker::{Backoff, LoopConfig};

/// What the floor forwards.
#[derive(Debug, Clone)]
pub struct FloorOpts {
    /// Interface to serve (every queue).
    pub iface: String,
    /// The virtual address.
    pub vip: Ipv4Addr,
    /// Ports of the VIP (TCP and UDP alike); the real servers listen on the same ones.
    pub ports: Vec<u16>,
    /// Real servers and their MACs (on the interface's segment).
    pub servers: Vec<(Ipv4Addr, [u8; 6])>,
    /// Workers (at most one per queue), pinned to cores 0, 1, ...
    pub workers: usize,
    /// How long a worker keeps polling after traffic before it sleeps (as `lvs run`).
    pub spin: Duration,
}

/// Entries of the client MAC cache (indexed by the client address's last byte).
const CLIENTS: usize = 256;

/// The per-worker forwarding state.
#[derive(Debug, Clone)]
pub struct Floor {
    vip: [u8; 4],
    ports: Vec<[u8; 2]>,
    servers: Vec<([u8; 4], [u8; 6])>,
    mac: [u8; 6],
    clients: Vec<([u8; 4], [u8; 6])>,
}

const ETH: usize = 14;
const IP_SRC: usize = ETH + 12;
const IP_DST: usize = ETH + 16;
const L4: usize = ETH + 20;

impl Floor {
    /// A forwarder sending from `mac` (the interface's own).
    pub fn new(o: &FloorOpts, mac: [u8; 6]) -> Floor {
        Floor {
            vip: o.vip.octets(),
            ports: o.ports.iter().map(|p| p.to_be_bytes()).collect(),
            servers: o.servers.iter().map(|(ip, m)| (ip.octets(), *m)).collect(),
            mac,
            clients: vec![([0; 4], [0; 6]); CLIENTS],
        }
    }

    /// The server of a client port: a multiplicative hash, so that ports of one parity (Linux
    /// hands out even ports to connect()) still spread over every server.
    fn server_of(&self, sport: [u8; 2]) -> usize {
        let h = (u16::from_be_bytes(sport) as u32).wrapping_mul(0x9e37_79b1) >> 16;
        h as usize % self.servers.len()
    }

    /// Rewrites one frame in place and says where it goes.
    pub fn handle(&mut self, f: &mut [u8]) -> Verdict {
        if f.len() < L4 + 8 || f[12..14] != [0x08, 0x00] {
            return Verdict::Pass;
        }
        if f[ETH] != 0x45 {
            return Verdict::Drop(DropReason::Unsupported);
        }
        if u16::from_be_bytes([f[ETH + 6], f[ETH + 7]]) & 0x3fff != 0 {
            // A fragment (more-fragments flag or an offset): its ports are not where a
            // stateless forwarder looks.
            return Verdict::Drop(DropReason::Fragment);
        }
        let csum_at = match f[ETH + 9] {
            6 if f.len() >= L4 + 20 => L4 + 16,
            17 => L4 + 6,
            _ => return Verdict::Pass,
        };
        let udp = f[ETH + 9] == 17;
        let (src, dst) = (word(f, IP_SRC), word(f, IP_DST));
        let (sport, dport) = ([f[L4], f[L4 + 1]], [f[L4 + 2], f[L4 + 3]]);
        let (at, old, new, mac) = if dst == self.vip && self.ports.contains(&dport) {
            let (ip, mac) = self.servers[self.server_of(sport)];
            let mut client_mac = [0u8; 6];
            client_mac.copy_from_slice(&f[6..12]);
            self.clients[src[3] as usize] = (src, client_mac);
            (IP_DST, dst, ip, mac)
        } else if self.ports.contains(&sport) && self.servers.iter().any(|(ip, _)| *ip == src) {
            let (ip, mac) = self.clients[dst[3] as usize];
            if ip != dst {
                return Verdict::Drop(DropReason::NoNeighbour);
            }
            (IP_SRC, src, self.vip, mac)
        } else {
            return Verdict::Pass;
        };
        f[at..at + 4].copy_from_slice(&new);
        let (old, new) = (u32::from_be_bytes(old), u32::from_be_bytes(new));
        let ip_csum = u16::from_be_bytes([f[ETH + 10], f[ETH + 11]]);
        f[ETH + 10..ETH + 12].copy_from_slice(&update_u32(ip_csum, old, new).to_be_bytes());
        let l4 = u16::from_be_bytes([f[csum_at], f[csum_at + 1]]);
        let l4 = if udp {
            update_udp_u32(l4, old, new)
        } else {
            update_u32(l4, old, new)
        };
        f[csum_at..csum_at + 2].copy_from_slice(&l4.to_be_bytes());
        f[0..6].copy_from_slice(&mac);
        f[6..12].copy_from_slice(&self.mac);
        Verdict::Reply
    }
}

fn word(f: &[u8], at: usize) -> [u8; 4] {
    [f[at], f[at + 1], f[at + 2], f[at + 3]]
}

/// Attaches the steering program, runs the workers until `stop` is set, detaches.
pub fn run(o: &FloorOpts, stop: Arc<AtomicBool>) -> io::Result<()> {
    if o.servers.is_empty() || o.ports.is_empty() {
        return Err(io::Error::other("need at least one server and one port"));
    }
    let info = netlink::interface_info(&o.iface)?;
    let addrs = BalancerAddrs::new(1024)?;
    addrs.add_local(IpAddr::V4(o.vip))?;
    for (ip, _) in &o.servers {
        for p in &o.ports {
            addrs.add_real_server(SocketAddr::new(IpAddr::V4(*ip), *p))?;
        }
    }
    let mut steering = XdpSteering::load(&addrs, info.rx_queues, XdpAction::Pass)?;
    let mode = steering.attach_best(info.ifindex)?;
    let workers = o.workers.clamp(1, info.rx_queues as usize);
    let mut ios = Vec::new();
    for w in 0..workers {
        let ifaces: Vec<AfXdpIface<'_>> = queues_of_worker(w as u32, workers as u32, info.rx_queues)
            .into_iter()
            .map(|queue| AfXdpIface {
                ifindex: info.ifindex,
                queue,
                steering: Some(&steering),
            })
            .collect();
        ios.push(AfXdpIo::new(&ifaces, AfXdpConfig::default())?);
    }
    eprintln!(
        "xdp-floor: {} ({mode:?} mode, {} queues), {workers} worker(s)",
        o.iface, info.rx_queues
    );
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let handles: Vec<_> = ios
        .into_iter()
        .enumerate()
        .map(|(w, mut io)| {
            let (stop, mut floor, spin) = (stop.clone(), Floor::new(o, info.mac), o.spin);
            let core = cores.get(w % cores.len().max(1)).copied();
            thread::Builder::new()
                .name(format!("floor-worker-{w}"))
                .spawn(move || {
                    if let Some(c) = core {
                        core_affinity::set_for_current(c);
                    }
                    let r = forward(&mut io, &mut floor, &stop, spin);
                    if r.is_err() {
                        stop.store(true, Ordering::Relaxed);
                    }
                    r
                })
        })
        .collect::<io::Result<_>>()?;
    let mut result = Ok(());
    for h in handles {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => result = Err(e),
            Err(_) => result = Err(io::Error::other("worker panicked")),
        }
    }
    steering.detach();
    result
}

/// The worker loop: `lvs run`'s (bursts, then its adaptive wait), with the floor in place
/// of the pipeline.
fn forward(io: &mut AfXdpIo, floor: &mut Floor, stop: &AtomicBool, spin: Duration) -> io::Result<()> {
    let cfg = LoopConfig {
        spin,
        ..LoopConfig::default()
    };
    let mut backoff = Backoff::new();
    while !stop.load(Ordering::Relaxed) {
        let n = io.poll_bursts(cfg.burst, &mut |frames, _ingress, verdicts| {
            for (fb, v) in frames.iter_mut().zip(verdicts.iter_mut()) {
                *v = floor.handle(fb.frame_mut());
            }
        })?;
        backoff.after_poll(io, n, Instant::now(), &cfg)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use lvs_dataplane::wire::checksum::checksum;

    const DIRECTOR: [u8; 6] = [2, 0, 0, 0, 0, 0xd];
    const CLIENT: [u8; 6] = [2, 0, 0, 0, 0, 0xc];
    const RS: [[u8; 6]; 2] = [[2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]];

    fn opts() -> FloorOpts {
        FloorOpts {
            iface: "eth0".into(),
            vip: Ipv4Addr::new(10, 0, 0, 100),
            ports: vec![80, 53],
            servers: vec![
                (Ipv4Addr::new(10, 0, 1, 1), RS[0]),
                (Ipv4Addr::new(10, 0, 1, 2), RS[1]),
            ],
            workers: 1,
            spin: Duration::ZERO,
        }
    }

    /// An Ethernet/IPv4 frame with a TCP (20-byte header) or UDP segment and valid checksums.
    fn frame(udp: bool, src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), macs: ([u8; 6], [u8; 6])) -> Vec<u8> {
        let l4_len = if udp { 8 + 4 } else { 20 + 4 };
        let mut f = vec![0u8; L4 + l4_len];
        f[0..6].copy_from_slice(&macs.1);
        f[6..12].copy_from_slice(&macs.0);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[ETH] = 0x45;
        f[ETH + 2..ETH + 4].copy_from_slice(&((20 + l4_len) as u16).to_be_bytes());
        f[ETH + 8] = 64;
        f[ETH + 9] = if udp { 17 } else { 6 };
        f[IP_SRC..IP_SRC + 4].copy_from_slice(&src.0.octets());
        f[IP_DST..IP_DST + 4].copy_from_slice(&dst.0.octets());
        let c = checksum(&f[ETH..L4]);
        f[ETH + 10..ETH + 12].copy_from_slice(&c.to_be_bytes());
        f[L4..L4 + 2].copy_from_slice(&src.1.to_be_bytes());
        f[L4 + 2..L4 + 4].copy_from_slice(&dst.1.to_be_bytes());
        if udp {
            f[L4 + 4..L4 + 6].copy_from_slice(&(l4_len as u16).to_be_bytes());
        } else {
            f[L4 + 12] = 5 << 4;
            f[L4 + 13] = 0x02;
        }
        let end = f.len();
        f[end - 4..].copy_from_slice(b"ping");
        let at = if udp { L4 + 6 } else { L4 + 16 };
        let c = l4_checksum(&f);
        f[at..at + 2].copy_from_slice(&c.to_be_bytes());
        f
    }

    /// The L4 checksum computed from scratch (with the checksum field zeroed).
    fn l4_checksum(f: &[u8]) -> u16 {
        let mut seg = f[L4..].to_vec();
        let at = if f[ETH + 9] == 17 { 6 } else { 16 };
        seg[at..at + 2].copy_from_slice(&[0, 0]);
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&f[IP_SRC..IP_DST + 4]);
        pseudo.extend_from_slice(&[0, f[ETH + 9]]);
        pseudo.extend_from_slice(&(seg.len() as u16).to_be_bytes());
        pseudo.extend_from_slice(&seg);
        checksum(&pseudo)
    }

    fn checksums_hold(f: &[u8]) -> bool {
        let at = if f[ETH + 9] == 17 { L4 + 6 } else { L4 + 16 };
        checksum(&f[ETH..L4]) == 0 && u16::from_be_bytes([f[at], f[at + 1]]) == l4_checksum(f)
    }

    #[test]
    fn a_request_goes_to_the_server_of_its_port_and_the_answer_comes_back_from_the_vip() {
        let o = opts();
        let mut floor = Floor::new(&o, DIRECTOR);
        let client = (Ipv4Addr::new(10, 0, 0, 7), 40001);
        for udp in [false, true] {
            let port = if udp { 53 } else { 80 };
            let mut f = frame(udp, client, (o.vip, port), (CLIENT, DIRECTOR));
            assert_eq!(floor.handle(&mut f), Verdict::Reply);
            let rs = floor.server_of(40001u16.to_be_bytes());
            assert_eq!(&f[IP_DST..IP_DST + 4], &[10, 0, 1, 1 + rs as u8]);
            assert_eq!((&f[0..6], &f[6..12]), (&RS[rs][..], &DIRECTOR[..]));
            assert!(checksums_hold(&f), "udp {udp}");
            let mut back = frame(
                udp,
                (Ipv4Addr::new(10, 0, 1, 1 + rs as u8), port),
                client,
                (RS[rs], DIRECTOR),
            );
            assert_eq!(floor.handle(&mut back), Verdict::Reply);
            assert_eq!(&back[IP_SRC..IP_SRC + 4], &o.vip.octets());
            assert_eq!((&back[0..6], &back[6..12]), (&CLIENT[..], &DIRECTOR[..]));
            assert!(checksums_hold(&back), "udp {udp}");
        }
    }

    #[test]
    fn even_client_ports_spread_over_both_servers_and_a_port_keeps_its_server() {
        let floor = Floor::new(&opts(), DIRECTOR);
        let picks: Vec<usize> = (40000u16..40200)
            .step_by(2)
            .map(|p| floor.server_of(p.to_be_bytes()))
            .collect();
        let first = picks.iter().filter(|&&s| s == 0).count();
        assert!((30..=70).contains(&first), "{first} of 100 on the first server");
        assert_eq!(floor.server_of(40002u16.to_be_bytes()), picks[1]);
    }

    #[test]
    fn other_traffic_is_left_to_the_kernel_and_unknown_clients_are_dropped() {
        let o = opts();
        let mut floor = Floor::new(&o, DIRECTOR);
        let other = (Ipv4Addr::new(10, 0, 0, 9), 22);
        // Another port of the VIP, and a server's frame from a port that is not served.
        let mut f = frame(
            false,
            (Ipv4Addr::new(10, 0, 0, 7), 40000),
            (o.vip, 22),
            (CLIENT, DIRECTOR),
        );
        assert_eq!(floor.handle(&mut f), Verdict::Pass);
        let mut f = frame(false, (Ipv4Addr::new(10, 0, 1, 1), 22), other, (RS[0], DIRECTOR));
        assert_eq!(floor.handle(&mut f), Verdict::Pass);
        // A server's answer to a client it never heard of: nowhere to send it.
        let mut f = frame(false, (Ipv4Addr::new(10, 0, 1, 1), 80), other, (RS[0], DIRECTOR));
        assert_eq!(floor.handle(&mut f), Verdict::Drop(DropReason::NoNeighbour));
        // Truncated, ARP, IP options: never a panic.
        let mut short = frame(true, other, (o.vip, 53), (CLIENT, DIRECTOR));
        short.truncate(L4 + 4);
        assert_eq!(floor.handle(&mut short), Verdict::Pass);
        let mut arp = frame(false, other, (o.vip, 80), (CLIENT, DIRECTOR));
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(floor.handle(&mut arp), Verdict::Pass);
        let mut opts_frame = frame(false, other, (o.vip, 80), (CLIENT, DIRECTOR));
        opts_frame[ETH] = 0x46;
        assert_eq!(
            floor.handle(&mut opts_frame),
            Verdict::Drop(DropReason::Unsupported)
        );
        let mut fragment = frame(true, other, (o.vip, 53), (CLIENT, DIRECTOR));
        fragment[ETH + 6] = 0x20; // more fragments
        assert_eq!(floor.handle(&mut fragment), Verdict::Drop(DropReason::Fragment));
    }
}
