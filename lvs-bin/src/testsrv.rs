//! Small real servers for the lab: an HTTP/1.0 server and a UDP echo server that answer with
//! their name and the client address they saw, so tests can tell who answered and whether the
//! client's address was preserved.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::thread;
use std::time::Duration;

/// The body a lab server sends: `NAME PEER_IP:PEER_PORT\n`.
pub fn answer(name: &str, peer: SocketAddr) -> String {
    format!("{name} {peer}\n")
}

fn handle_http(name: &str, mut s: TcpStream) -> io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let peer = s.peer_addr()?;
    let mut reader = BufReader::new(s.try_clone()?);
    let mut line = String::new();
    // Read the request head (bounded: at most 64 lines).
    for _ in 0..64 {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    let body = answer(name, peer);
    write!(
        s,
        "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    s.flush()
}

/// Serves HTTP on `http` and UDP echo on `udp` (either may be absent) until the process ends.
pub fn serve(name: &str, http: Option<SocketAddr>, udp: Option<SocketAddr>) -> io::Result<()> {
    let mut threads = Vec::new();
    if let Some(addr) = udp {
        let sock = UdpSocket::bind(addr)?;
        let name = name.to_string();
        threads.push(thread::spawn(move || {
            let mut buf = [0u8; 2048];
            loop {
                let Ok((_, peer)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let _ = sock.send_to(answer(&name, peer).as_bytes(), peer);
            }
        }));
    }
    if let Some(addr) = http {
        let listener = TcpListener::bind(addr)?;
        for s in listener.incoming() {
            let Ok(s) = s else { continue };
            let name = name.to_string();
            thread::spawn(move || {
                let _ = handle_http(&name, s);
            });
        }
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
