//! `lvs decap`: the TUN-mode real server's side on kernels without the ipip module. It
//! receives IPIP (IPv4-in-IPv4) and IPv6-in-IPv6 packets addressed to this host through raw
//! sockets and hands the inner packets to the kernel through a TUN device, so the server
//! answers the client directly, as with kernel ipip.

use std::io::{self, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;

use lvs_dataplane::io::tun::TunDevice;
use socket2::{Domain, Protocol, Socket, Type};

/// Counters of the decapsulator.
#[derive(Debug, Default)]
pub struct DecapStats {
    /// Inner packets handed to the kernel.
    pub delivered: AtomicU64,
    /// Packets dropped as malformed (too short, wrong inner version).
    pub malformed: AtomicU64,
}

/// Extracts the inner packet of an IPv4 raw-socket read (outer IPv4 header included).
pub fn inner_of_ipip(pkt: &[u8]) -> Option<&[u8]> {
    let first = *pkt.first()?;
    let ihl = ((first & 0x0f) as usize) * 4;
    if first >> 4 != 4 || ihl < 20 || pkt.len() < ihl + 20 {
        return None;
    }
    let total = u16::from_be_bytes([pkt[2], pkt[3]]) as usize;
    let inner = &pkt[ihl..total.clamp(ihl, pkt.len())];
    (inner.first()? >> 4 == 4).then_some(inner)
}

/// Checks the inner packet of an IPv6 raw-socket read (the kernel strips the outer header).
pub fn inner_of_ip6ip6(pkt: &[u8]) -> Option<&[u8]> {
    (pkt.len() >= 40 && pkt[0] >> 4 == 6).then_some(pkt)
}

fn pump(mut sock: Socket, mut tun: TunDevice, v6: bool, stats: Arc<DecapStats>) -> io::Result<()> {
    let mut buf = vec![0u8; 65536];
    loop {
        let n = sock.read(&mut buf)?;
        let pkt = &buf[..n];
        let inner = if v6 {
            inner_of_ip6ip6(pkt)
        } else {
            inner_of_ipip(pkt)
        };
        match inner {
            Some(inner) => {
                tun.send(inner)?;
                stats.delivered.fetch_add(1, Ordering::Relaxed);
            }
            None => {
                stats.malformed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Runs the decapsulator on interface `iface` with TUN device `tun_name` until an I/O error.
pub fn run(iface: &str, tun_name: &str) -> io::Result<()> {
    let tun = TunDevice::create(tun_name)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot create TUN device {tun_name}: {e}")))?;
    let stats = Arc::new(DecapStats::default());
    let v4 = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(IPPROTO_IPIP)))?;
    v4.bind_device(Some(iface.as_bytes()))
        .map_err(|e| io::Error::new(e.kind(), format!("cannot bind to interface {iface}: {e}")))?;
    let v6 = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::from(41)))?;
    v6.bind_device(Some(iface.as_bytes()))?;
    eprintln!("lvs decap: IPIP and IPv6-in-IPv6 on {iface} -> {}", tun.name());
    let t6 = {
        let (tun, stats) = (tun.try_clone()?, stats.clone());
        thread::spawn(move || pump(v6, tun, true, stats))
    };
    let r = pump(v4, tun, false, stats);
    let _ = t6.join();
    r
}

/// IP protocol number of IPv4-in-IPv4.
const IPPROTO_IPIP: i32 = 4;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipip_inner_packet_is_found_and_bad_ones_refused() {
        let mut outer = vec![0x45, 0, 0, 48, 0, 0, 0, 0, 64, 4, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2];
        let inner = [
            0x45u8, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2, 0, 8, 0, 0,
        ];
        outer.extend_from_slice(&inner);
        assert_eq!(inner_of_ipip(&outer), Some(&inner[..]));
        assert_eq!(inner_of_ipip(&outer[..30]), None, "truncated");
        let mut wrong = outer.clone();
        wrong[20] = 0x65;
        assert_eq!(inner_of_ipip(&wrong), None, "inner is not IPv4");
        assert_eq!(inner_of_ipip(&[]), None);
        assert_eq!(inner_of_ip6ip6(&[0x60; 40]).map(<[u8]>::len), Some(40));
        assert_eq!(inner_of_ip6ip6(&[0x45; 40]), None);
    }
}
