//! Passive neighbour learning for the AF_XDP backend. The XDP program hands lvs only the
//! balancer's own traffic, so the ARP replies to lvs's requests (addressed to the DIP, which
//! the kernel owns) go to the kernel alone. A plain AF_PACKET socket per interface, bound to
//! ETH_P_ARP, receives a copy of every ARP frame the kernel processes; this thread learns
//! each sender's MAC from it. It only reads.

use std::io::{self, Read};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use crate::neigh::NeighTable;
use crate::wire::{arp, ethertype};

/// Starts a thread that learns neighbours from ARP frames seen on `ifaces` until `stop`.
pub fn spawn(ifaces: &[String], neigh: Arc<NeighTable>, stop: Arc<AtomicBool>) -> io::Result<JoinHandle<()>> {
    let mut socks = Vec::new();
    for name in ifaces {
        let proto = Protocol::from(i32::from(ethertype::ARP.to_be()));
        let s = Socket::new(Domain::PACKET, Type::RAW, Some(proto))?;
        s.bind_device(Some(name.as_bytes()))?;
        s.set_read_timeout(Some(Duration::from_millis(100)))?;
        socks.push(s);
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

/// Learns the sender of one ARP frame (Ethernet header included).
pub fn learn(frame: &[u8], neigh: &NeighTable) -> bool {
    let Some(body) = frame.get(14..) else { return false };
    let Ok(a) = arp::Packet::new_checked(body) else {
        return false;
    };
    let (sha, spa) = (a.sender_hw_addr(), a.sender_ip());
    if spa.is_unspecified() || sha[0] & 1 != 0 || sha == [0; 6] {
        return false;
    }
    neigh.insert(IpAddr::V4(spa), sha);
    true
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
}
