//! Small real servers for the lab: an HTTP/1.0 server (on one or more addresses) and a UDP
//! echo server that answer with their name and the client address they saw, so tests can
//! tell who answered and whether the client's address was preserved.
//!
//! They also count what they served (`GET /count` answers `NAME http=N udp=M udp_answered=K`;
//! that request itself is not counted) and, in `--toa` mode, read the TOA option (kind 254)
//! that a FULLNAT director puts on TCP segments, the way the kernel `toa` module would: a
//! read-only AF_PACKET socket watches segments to the HTTP ports and remembers, per source
//! address (the director's LIP:port), the client address the option carries; the HTTP answer
//! then says `toa=CLIENT:PORT`.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// TCP option kind of TOA.
pub const TOA_KIND: u8 = 254;

/// The body a lab server sends: `NAME PEER_IP:PEER_PORT\n`.
pub fn answer(name: &str, peer: SocketAddr) -> String {
    format!("{name} {peer}\n")
}

/// What a server has served so far.
#[derive(Debug, Default)]
pub struct Counts {
    /// HTTP requests answered (not counting `/count`).
    pub http: AtomicU64,
    /// UDP datagrams received.
    pub udp: AtomicU64,
    /// UDP answers sent.
    pub udp_answered: AtomicU64,
}

/// Client addresses learnt from TOA options, keyed by the segment's source address.
pub type ToaMap = Arc<Mutex<HashMap<SocketAddr, SocketAddr>>>;

/// Parses one Ethernet frame; if it is a TCP segment to one of `ports` carrying a TOA option,
/// returns (segment source address, client address from the option).
pub fn parse_toa(frame: &[u8], ports: &[u16]) -> Option<(SocketAddr, SocketAddr)> {
    let ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    let l3 = frame.get(14..)?;
    let (src, l4): (IpAddr, &[u8]) = match ethertype {
        0x0800 => {
            let ihl = usize::from(l3.first()? & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([*l3.get(2)?, *l3.get(3)?]));
            if *l3.get(9)? != 6 || ihl < 20 || total < ihl {
                return None;
            }
            let s: [u8; 4] = l3.get(12..16)?.try_into().ok()?;
            (IpAddr::V4(Ipv4Addr::from(s)), l3.get(ihl..total.min(l3.len()))?)
        }
        0x86dd => {
            // Only a TCP header right after the fixed header (no extension headers).
            if *l3.get(6)? != 6 {
                return None;
            }
            let payload = usize::from(u16::from_be_bytes([*l3.get(4)?, *l3.get(5)?]));
            let s: [u8; 16] = l3.get(8..24)?.try_into().ok()?;
            (
                IpAddr::V6(Ipv6Addr::from(s)),
                l3.get(40..(40 + payload).min(l3.len()))?,
            )
        }
        _ => return None,
    };
    let sport = u16::from_be_bytes([*l4.first()?, *l4.get(1)?]);
    let dport = u16::from_be_bytes([*l4.get(2)?, *l4.get(3)?]);
    if !ports.contains(&dport) {
        return None;
    }
    let doff = usize::from(l4.get(12)? >> 4) * 4;
    let opts = l4.get(20..doff)?;
    let mut i = 0;
    // Option walk, bounded by the 40-byte option space.
    while i < opts.len() {
        match opts[i] {
            0 => return None,
            1 => i += 1,
            kind => {
                let len = usize::from(*opts.get(i + 1)?);
                if len < 2 {
                    return None;
                }
                let body = opts.get(i..i + len)?;
                if kind == TOA_KIND {
                    let port = u16::from_be_bytes([body[2], body[3]]);
                    let ip = match len {
                        8 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(&body[4..8]).ok()?)),
                        20 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&body[4..20]).ok()?)),
                        _ => return None,
                    };
                    return Some((SocketAddr::new(src, sport), SocketAddr::new(ip, port)));
                }
                i += len;
            }
        }
    }
    None
}

/// Starts the TOA watcher: a read-only AF_PACKET socket (all protocols) in this namespace.
fn start_toa_watch(ports: Vec<u16>, map: ToaMap) -> io::Result<()> {
    use socket2::{Domain, Protocol, Socket, Type};
    const ETH_P_ALL: u16 = 0x0003;
    let sock = Socket::new(
        Domain::PACKET,
        Type::RAW,
        Some(Protocol::from(i32::from(ETH_P_ALL.to_be()))),
    )?;
    thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        loop {
            let Ok(n) = (&sock).read(&mut buf) else {
                continue;
            };
            if let Some((from, client)) = parse_toa(&buf[..n], &ports) {
                let mut m = map.lock().unwrap_or_else(|e| e.into_inner());
                // Bounded: a lab server never needs more than this many peers remembered.
                if m.len() > 65536 {
                    m.clear();
                }
                m.insert(from, client);
            }
        }
    });
    Ok(())
}

fn handle_http(name: &str, mut s: TcpStream, counts: &Counts, toa: Option<&ToaMap>) -> io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let peer = s.peer_addr()?;
    let mut reader = BufReader::new(s.try_clone()?);
    let mut line = String::new();
    let mut first = String::new();
    // Read the request head (bounded: at most 64 lines).
    for i in 0..64 {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
        if i == 0 {
            first = line.clone();
        }
    }
    let body = if first.split_whitespace().nth(1) == Some("/count") {
        format!(
            "{name} http={} udp={} udp_answered={}\n",
            counts.http.load(Ordering::SeqCst),
            counts.udp.load(Ordering::SeqCst),
            counts.udp_answered.load(Ordering::SeqCst)
        )
    } else {
        counts.http.fetch_add(1, Ordering::SeqCst);
        let mut body = answer(name, peer);
        if let Some(map) = toa {
            // The watcher may see the handshake's last ACK a moment after accept(): wait a
            // little (bounded) for it.
            let deadline = Instant::now() + Duration::from_millis(500);
            loop {
                let got = map.lock().unwrap_or_else(|e| e.into_inner()).get(&peer).copied();
                if let Some(c) = got {
                    body = format!("{name} {peer} toa={c}\n");
                    break;
                }
                if Instant::now() >= deadline {
                    break;
                }
                thread::sleep(Duration::from_millis(5));
            }
        }
        body
    };
    write!(
        s,
        "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    s.flush()
}

/// Serves HTTP on every address of `http` and UDP echo on `udp` until the process ends; with
/// `toa`, reads TOA options off the wire and reports them in HTTP answers.
pub fn serve(name: &str, http: &[SocketAddr], udp: Option<SocketAddr>, toa: bool) -> io::Result<()> {
    let counts = Arc::new(Counts::default());
    let toa_map: Option<ToaMap> = if toa {
        let map = ToaMap::default();
        start_toa_watch(http.iter().map(SocketAddr::port).collect(), map.clone())?;
        Some(map)
    } else {
        None
    };
    let mut threads = Vec::new();
    if let Some(addr) = udp {
        let sock = UdpSocket::bind(addr)?;
        let name = name.to_string();
        let counts = counts.clone();
        threads.push(thread::spawn(move || {
            let mut buf = [0u8; 2048];
            loop {
                let Ok((_, peer)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                counts.udp.fetch_add(1, Ordering::SeqCst);
                if sock.send_to(answer(&name, peer).as_bytes(), peer).is_ok() {
                    counts.udp_answered.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }
    for &addr in http {
        let listener = TcpListener::bind(addr)?;
        let name = name.to_string();
        let counts = counts.clone();
        let toa_map = toa_map.clone();
        threads.push(thread::spawn(move || {
            for s in listener.incoming() {
                let Ok(s) = s else { continue };
                let name = name.clone();
                let counts = counts.clone();
                let toa_map = toa_map.clone();
                thread::spawn(move || {
                    let _ = handle_http(&name, s, &counts, toa_map.as_ref());
                });
            }
        }));
    }
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

/// Serves a line echo on `addr` until the process ends: every line a client sends is answered
/// with `NAME PEER_IP:PEER_PORT LINE`, on connections that last as long as the client wants
/// (the long-lived connections of the operations tests).
pub fn serve_lines(name: &str, addr: SocketAddr) -> io::Result<()> {
    let listener = TcpListener::bind(addr)?;
    for s in listener.incoming() {
        let Ok(s) = s else { continue };
        let name = name.to_string();
        thread::spawn(move || -> io::Result<()> {
            let peer = s.peer_addr()?;
            let mut w = s.try_clone()?;
            for line in BufReader::new(s).lines() {
                writeln!(w, "{name} {peer} {}", line?.trim_end())?;
            }
            Ok(())
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Ethernet + IPv4 + TCP frame from 10.77.2.200:40000 to port 8080 with `opts`.
    fn frame(opts: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 14];
        f[12] = 0x08;
        let tcp_len = 20 + opts.len();
        let mut ip = vec![
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, 6, 0, 0, 10, 77, 2, 200, 10, 77, 2, 11,
        ];
        ip[2..4].copy_from_slice(&((20 + tcp_len) as u16).to_be_bytes());
        f.extend(ip);
        let mut tcp = vec![0u8; 20];
        tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&8080u16.to_be_bytes());
        tcp[12] = ((tcp_len / 4) as u8) << 4;
        f.extend(tcp);
        f.extend_from_slice(opts);
        f
    }

    #[test]
    fn toa_option_is_found_after_other_options() {
        // NOP, NOP, timestamp (10 bytes), TOA for 10.77.1.10:51000.
        let mut opts = vec![1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2];
        opts.extend([254, 8]);
        opts.extend(51000u16.to_be_bytes());
        opts.extend([10, 77, 1, 10]);
        let got = parse_toa(&frame(&opts), &[8080]);
        assert_eq!(
            got,
            Some((
                "10.77.2.200:40000".parse().unwrap(),
                "10.77.1.10:51000".parse().unwrap()
            ))
        );
        // Another port, or no TOA option: nothing.
        assert_eq!(parse_toa(&frame(&opts), &[80]), None);
        assert_eq!(parse_toa(&frame(&[1, 1, 1, 1]), &[8080]), None);
    }
}
