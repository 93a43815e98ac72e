//! Bounded load generators and a counting sink for the lab benchmark (`lvs labbench`):
//! - `tcp`: K threads open a connection, wait for the server to close it, close, repeat —
//!   counting completed connections (new connections per second);
//! - `udp`: one thread sends small datagrams over F connected sockets (F flows);
//! - `sink`: the real server side: accepts and closes at once, counts UDP datagrams and
//!   answers a `count?` datagram from loopback with the count.
//!
//! Every loop ends on a deadline and a count cap. Traffic goes only where the caller points
//! it (the lab's namespaces).

use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

/// Upper bound on operations of any one generator thread, whatever the duration.
pub const MAX_OPS: u64 = 200_000_000;
/// Longest run a generator accepts.
pub const MAX_SECONDS: f64 = 120.0;

/// What a TCP run achieved.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TcpResult {
    /// Connections opened and closed cleanly.
    pub ok: u64,
    /// Connections that failed (refused, reset, timed out).
    pub failed: u64,
    /// Wall time of the run in seconds.
    pub seconds: f64,
    /// SYN retransmissions during the run (TcpExt TCPSynRetrans of this namespace).
    pub syn_retrans: u64,
}

/// Reads one TcpExt counter of this process's network namespace.
pub fn tcp_ext(name: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/netstat").ok()?;
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (lines.next()?, lines.next()?);
    let i = names.split_whitespace().position(|n| n == name)?;
    values.split_whitespace().nth(i)?.parse().ok()
}

/// Opens and closes connections to `targets` (round robin) from `parallel` threads for
/// `seconds`.
pub fn tcp(targets: &[SocketAddr], seconds: f64, parallel: usize) -> io::Result<TcpResult> {
    if targets.is_empty() || parallel == 0 || parallel > 1024 {
        return Err(io::Error::other("need 1..=1024 threads and at least one target"));
    }
    let seconds = seconds.clamp(0.05, MAX_SECONDS);
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let syn0 = tcp_ext("TCPSynRetrans").unwrap_or(0);
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(seconds);
    let threads: Vec<_> = (0..parallel)
        .map(|t| {
            let (ok, failed, targets) = (ok.clone(), failed.clone(), targets.to_vec());
            thread::spawn(move || {
                let mut buf = [0u8; 64];
                for i in (t..).take(MAX_OPS as usize) {
                    if Instant::now() >= deadline {
                        break;
                    }
                    let target = targets[i % targets.len()];
                    let done =
                        TcpStream::connect_timeout(&target, Duration::from_secs(2)).and_then(|mut s| {
                            s.set_read_timeout(Some(Duration::from_secs(2)))?;
                            // The sink closes at once: read until its FIN (bounded).
                            for _ in 0..16 {
                                if s.read(&mut buf)? == 0 {
                                    return Ok(());
                                }
                            }
                            Ok(())
                        });
                    match done {
                        Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    Ok(TcpResult {
        ok: ok.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        seconds: start.elapsed().as_secs_f64(),
        syn_retrans: tcp_ext("TCPSynRetrans").unwrap_or(0).saturating_sub(syn0),
    })
}

/// Sends `size`-byte datagrams for `seconds` from `threads` threads over `flows` connected
/// sockets in all (round robin within a thread, each socket to the next of `targets`); returns
/// (datagrams sent, send errors, seconds).
pub fn udp(
    targets: &[SocketAddr],
    seconds: f64,
    size: usize,
    flows: usize,
    threads: usize,
) -> io::Result<(u64, u64, f64)> {
    if targets.is_empty() || flows == 0 || flows > 4096 || size > 1400 || threads == 0 || threads > 64 {
        return Err(io::Error::other(
            "need a target, 1..=4096 flows, 1..=64 threads, size <= 1400",
        ));
    }
    let seconds = seconds.clamp(0.05, MAX_SECONDS);
    let threads = threads.min(flows);
    let mut per_thread: Vec<Vec<UdpSocket>> = (0..threads).map(|_| Vec::new()).collect();
    for i in 0..flows {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        s.connect(targets[i % targets.len()])?;
        per_thread[i % threads].push(s);
    }
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(seconds);
    let handles: Vec<_> = per_thread
        .into_iter()
        .map(|socks| {
            thread::spawn(move || {
                let payload = vec![0x5au8; size];
                let (mut sent, mut errors) = (0u64, 0u64);
                'outer: for round in 0..MAX_OPS {
                    // Check the clock every 64 rounds.
                    if round % 64 == 0 && Instant::now() >= deadline {
                        break;
                    }
                    for s in &socks {
                        match s.send(&payload) {
                            Ok(_) => sent += 1,
                            Err(_) => errors += 1,
                        }
                        if sent + errors >= MAX_OPS {
                            break 'outer;
                        }
                    }
                }
                (sent, errors)
            })
        })
        .collect();
    let (mut sent, mut errors) = (0, 0);
    for h in handles {
        let (s, e) = h.join().map_err(|_| io::Error::other("sender thread panicked"))?;
        sent += s;
        errors += e;
    }
    Ok((sent, errors, start.elapsed().as_secs_f64()))
}

/// The sink's query datagram.
pub const COUNT_QUERY: &[u8] = b"count?";

/// Runs the sink until the process ends: TCP on `tcp` (accept, close), UDP on `udp` (count).
pub fn sink(tcp: Option<SocketAddr>, udp: Option<SocketAddr>) -> io::Result<()> {
    let mut threads = Vec::new();
    if let Some(addr) = udp {
        let s = Socket::new(Domain::for_address(addr), Type::DGRAM, None)?;
        let _ = s.set_recv_buffer_size(8 << 20);
        s.bind(&addr.into())?;
        let sock: UdpSocket = s.into();
        threads.push(thread::spawn(move || {
            let mut buf = [0u8; 2048];
            let mut count = 0u64;
            loop {
                let Ok((n, peer)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                if peer.ip().is_loopback() && &buf[..n] == COUNT_QUERY {
                    let _ = sock.send_to(count.to_string().as_bytes(), peer);
                } else {
                    count += 1;
                }
            }
        }));
    }
    if let Some(addr) = tcp {
        let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        s.set_reuse_address(true)?;
        s.bind(&addr.into())?;
        s.listen(4096)?;
        let listener: std::net::TcpListener = s.into();
        for _ in 0..2 {
            let l = listener.try_clone()?;
            threads.push(thread::spawn(move || {
                loop {
                    // Accept and close at once: the server side of one new connection.
                    let _ = l.accept();
                }
            }));
        }
    }
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

/// Asks a sink on `target` (loopback) how many datagrams it counted.
pub fn count(target: SocketAddr) -> io::Result<u64> {
    let s = UdpSocket::bind(if target.is_ipv4() {
        "127.0.0.1:0"
    } else {
        "[::1]:0"
    })?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.connect(target)?;
    s.send(COUNT_QUERY)?;
    let mut buf = [0u8; 64];
    let n = s.recv(&mut buf)?;
    String::from_utf8_lossy(&buf[..n])
        .trim()
        .parse()
        .map_err(|_| io::Error::other("bad count answer"))
}
