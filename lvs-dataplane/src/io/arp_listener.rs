//! Passive neighbour learning for the AF_XDP backend. The XDP program hands lvs only the
//! balancer's own traffic, so the ARP replies and neighbour advertisements answering lvs's
//! requests (addressed to the DIP, which the kernel owns) go to the kernel alone. Plain
//! AF_PACKET sockets per interface — one bound to ETH_P_ARP, one to ETH_P_IPV6 with a classic
//! BPF filter keeping only neighbour advertisements — receive a copy of those frames; this
//! thread learns each sender's MAC from them. It only reads.

use std::io::{self, Read};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use socket2::{Domain, Protocol, SockFilter, Socket, Type};

use crate::neigh::NeighTable;
use crate::wire::{arp, ethertype, icmpv6};

/// Classic BPF: accept IPv6 frames carrying an ICMPv6 neighbour advertisement (next header
/// 58 right after the fixed header, type 136), drop everything else.
const NA_FILTER: [SockFilter; 8] = [
    SockFilter::new(0x28, 0, 0, 12),     // ldh [12]          ethertype
    SockFilter::new(0x15, 0, 5, 0x86dd), // jeq #0x86dd else drop
    SockFilter::new(0x30, 0, 0, 20),     // ldb [20]          IPv6 next header
    SockFilter::new(0x15, 0, 3, 58),     // jeq #58 (ICMPv6) else drop
    SockFilter::new(0x30, 0, 0, 54),     // ldb [54]          ICMPv6 type
    SockFilter::new(0x15, 0, 1, 136),    // jeq #136 (NA) else drop
    SockFilter::new(0x06, 0, 0, 0xffff), // ret #65535        accept
    SockFilter::new(0x06, 0, 0, 0),      // ret #0            drop
];

/// Starts a thread that learns neighbours from ARP frames seen on `ifaces` until `stop`.
pub fn spawn(ifaces: &[String], neigh: Arc<NeighTable>, stop: Arc<AtomicBool>) -> io::Result<JoinHandle<()>> {
    let mut socks = Vec::new();
    for name in ifaces {
        for et in [ethertype::ARP, ethertype::IPV6] {
            let proto = Protocol::from(i32::from(et.to_be()));
            let s = Socket::new(Domain::PACKET, Type::RAW, Some(proto))?;
            if et == ethertype::IPV6 {
                s.attach_filter(&NA_FILTER)?;
            }
            s.bind_device(Some(name.as_bytes()))?;
            s.set_read_timeout(Some(Duration::from_millis(50)))?;
            socks.push(s);
        }
    }
    thread::Builder::new().name("lvs-arp".into()).spawn(move || {
        let mut buf = [0u8; 2048];
        while !stop.load(Ordering::Relaxed) {
            for s in socks.iter_mut() {
                // A timeout or error just moves on; the loop is bounded by `stop`.
                while let Ok(n) = s.read(&mut buf) {
                    learn(&buf[..n], &neigh);
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                }
            }
        }
    })
}

/// Learns the sender of one ARP frame or IPv6 neighbour advertisement (Ethernet header
/// included).
pub fn learn(frame: &[u8], neigh: &NeighTable) -> bool {
    if frame.get(12..14) == Some(&ethertype::IPV6.to_be_bytes()[..]) {
        return learn_na(frame, neigh);
    }
    let Some(body) = frame.get(14..) else { return false };
    let Ok(a) = arp::Packet::new_checked(body) else {
        return false;
    };
    let (sha, spa) = (a.sender_hw_addr(), a.sender_ip());
    if spa.is_unspecified() || sha[0] & 1 != 0 || sha == [0; 6] {
        return false;
    }
    // Replies (to lvs's requests, among others) may add a neighbour; any other ARP seen on
    // the segment only refreshes one already known.
    neigh.learn(IpAddr::V4(spa), sha, a.operation() == arp::OP_REPLY)
}

fn learn_na(frame: &[u8], neigh: &NeighTable) -> bool {
    let Some(icmp) = frame.get(54..) else { return false };
    if frame.get(20) != Some(&58) {
        return false;
    }
    let Ok(p) = icmpv6::Packet::new_checked(icmp) else {
        return false;
    };
    if p.msg_type() != icmpv6::msg_type::NEIGHBOR_ADVERT {
        return false;
    }
    match (p.target_addr(), p.link_layer_addr()) {
        // A solicited advertisement may add a neighbour; an unsolicited one only refreshes.
        (Some(t), Some(mac)) if mac[0] & 1 == 0 && mac != [0; 6] => neigh.learn(
            IpAddr::V6(t),
            mac,
            p.na_flags().unwrap_or(0) & icmpv6::NA_SOLICITED != 0,
        ),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_the_sender_of_a_reply_and_ignores_junk() {
        let t = NeighTable::new();
        let mut f = crate::neigh::arp_request([2, 0, 0, 0, 0, 7], [10, 0, 0, 7].into(), [10, 0, 0, 1].into());
        f[21] = 2; // reply
        assert!(learn(&f, &t));
        assert_eq!(t.lookup([10, 0, 0, 7].into()), Some([2, 0, 0, 0, 0, 7]));
        assert!(!learn(&f[..30], &t));
        f[22] = 1; // multicast sender MAC
        assert!(!learn(&f, &t));
    }

    #[test]
    fn learns_the_target_of_a_neighbour_advertisement() {
        let t = NeighTable::new();
        let target: std::net::Ipv6Addr = "fd00:2::10".parse().unwrap();
        let me: std::net::Ipv6Addr = "fd00:2::1".parse().unwrap();
        let mut f = vec![0u8; 14 + 40 + 32];
        f[12..14].copy_from_slice(&ethertype::IPV6.to_be_bytes());
        f[14] = 0x60;
        f[18..20].copy_from_slice(&32u16.to_be_bytes());
        f[20] = 58;
        f[21] = 255;
        f[22..38].copy_from_slice(&target.octets());
        f[38..54].copy_from_slice(&me.octets());
        icmpv6::emit_neighbor_advert(
            &mut f[54..],
            &target,
            [2, 0, 0, 0, 0, 9],
            icmpv6::NA_SOLICITED,
            &target,
            &me,
        )
        .unwrap();
        assert!(learn(&f, &t));
        assert_eq!(t.lookup(IpAddr::V6(target)), Some([2, 0, 0, 0, 0, 9]));
        f[54] = 135; // a solicitation is not learned here
        assert!(!learn(&f, &NeighTable::new()));
    }
}
