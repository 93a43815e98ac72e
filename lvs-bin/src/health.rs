//! Health checks like keepalived's TCP_CHECK and HTTP_GET, with rise/fall counts, run from
//! their own thread. A check's verdict changes a destination's state through a callback; the
//! daemon turns that into "quiesce (weight 0)" or "remove", and back on recovery.

use std::fmt;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// What a check does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckKind {
    /// keepalived's TCP_CHECK: a TCP connect to `addr` succeeds.
    Tcp {
        /// Address to connect to (usually RIP:rport, or a `connect_port` override).
        addr: SocketAddr,
    },
    /// keepalived's HTTP_GET: a GET of `path` answers `status`, and, if set, the body contains
    /// `expect`.
    HttpGet {
        /// Address to connect to.
        addr: SocketAddr,
        /// Request path.
        path: String,
        /// Expected status code (keepalived's `status_code`, default 200).
        status: u16,
        /// Substring the body must contain.
        expect: Option<String>,
    },
}

/// What happens to a destination whose check fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnFailure {
    /// Set its weight to 0 (keepalived's `inhibit_on_failure`): existing connections continue.
    #[default]
    Quiesce,
    /// Remove it from the service.
    Remove,
}

/// Timing and thresholds of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckConfig {
    /// What to check.
    pub kind: CheckKind,
    /// Time between checks (keepalived's `delay_loop`).
    pub interval: Duration,
    /// Time a single check may take (keepalived's `connect_timeout`).
    pub timeout: Duration,
    /// Consecutive successes that bring a failed server back.
    pub rise: u32,
    /// Consecutive failures that take a healthy server out (keepalived's `retry`).
    pub fall: u32,
    /// Quiesce or remove on failure.
    pub on_failure: OnFailure,
}

/// Rise/fall state of one checked server. Servers start healthy, as keepalived's do unless
/// `alpha` is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthState {
    up: bool,
    streak: u32,
    /// The last failure's reason, for listings and logs.
    pub last_error: Option<String>,
}

impl Default for HealthState {
    fn default() -> Self {
        HealthState {
            up: true,
            streak: 0,
            last_error: None,
        }
    }
}

impl HealthState {
    /// True while the server counts as healthy.
    pub fn is_up(&self) -> bool {
        self.up
    }

    /// Feeds one check result; returns `Some(new_up)` when the state flips.
    pub fn observe(&mut self, result: Result<(), String>, rise: u32, fall: u32) -> Option<bool> {
        let ok = result.is_ok();
        if let Err(e) = result {
            self.last_error = Some(e);
        }
        if ok == self.up {
            // A result that agrees with the current state resets the opposite streak.
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if self.up { fall.max(1) } else { rise.max(1) };
        if self.streak >= needed {
            self.up = ok;
            self.streak = 0;
            if ok {
                self.last_error = None;
            }
            Some(ok)
        } else {
            None
        }
    }
}

/// Runs one check now, blocking for at most about `timeout` per network step.
pub fn run_check(kind: &CheckKind, timeout: Duration) -> Result<(), String> {
    match kind {
        CheckKind::Tcp { addr } => TcpStream::connect_timeout(addr, timeout)
            .map(|_| ())
            .map_err(|e| format!("connect {addr}: {e}")),
        CheckKind::HttpGet {
            addr,
            path,
            status,
            expect,
        } => {
            let deadline = Instant::now() + timeout;
            let mut s =
                TcpStream::connect_timeout(addr, timeout).map_err(|e| format!("connect {addr}: {e}"))?;
            s.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
            s.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
            let req = format!(
                "GET {path} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: lvs-healthcheck\r\nConnection: close\r\n\r\n"
            );
            // One write; a server that answers before reading it all may close early (EPIPE):
            // its answer still decides.
            if let Err(e) = s.write_all(req.as_bytes())
                && e.kind() != std::io::ErrorKind::BrokenPipe
                && e.kind() != std::io::ErrorKind::ConnectionReset
            {
                return Err(format!("send to {addr}: {e}"));
            }
            // Read at most 64 KiB of answer before the deadline.
            let mut resp = Vec::new();
            let mut buf = [0u8; 4096];
            while resp.len() < 65536 && Instant::now() < deadline {
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => resp.extend_from_slice(&buf[..n]),
                    Err(e) => return Err(format!("read from {addr}: {e}")),
                }
            }
            let text = String::from_utf8_lossy(&resp);
            let code = text
                .lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|c| c.parse::<u16>().ok())
                .ok_or_else(|| format!("{addr}: no HTTP status line"))?;
            if code != *status {
                return Err(format!("GET {path} on {addr}: status {code}, expected {status}"));
            }
            if let Some(want) = expect {
                let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
                if !body.contains(want.as_str()) {
                    return Err(format!("GET {path} on {addr}: body lacks {want:?}"));
                }
            }
            Ok(())
        }
    }
}

/// A checked server: an identifier the daemon understands, and its check.
#[derive(Debug, Clone)]
pub struct Target<Id> {
    /// Which destination this is (service key + RIP:port, as the daemon names it).
    pub id: Id,
    /// Its check.
    pub config: CheckConfig,
}

/// The checker thread: checks every target on its interval and calls `on_change(id, up,
/// reason)` when a target's state flips. Stops when dropped.
pub struct Checker {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl fmt::Debug for Checker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Checker")
            .field("running", &self.handle.is_some())
            .finish()
    }
}

impl Checker {
    /// Starts checking `targets`.
    pub fn start<Id, F>(targets: Vec<Target<Id>>, mut on_change: F) -> Checker
    where
        Id: Send + 'static,
        F: FnMut(&Id, bool, Option<&str>) + Send + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = thread::Builder::new()
            .name("lvs-health".into())
            .spawn(move || {
                let mut states: Vec<(HealthState, Instant)> = targets
                    .iter()
                    .map(|_| (HealthState::default(), Instant::now()))
                    .collect();
                while !flag.load(Ordering::Relaxed) {
                    let now = Instant::now();
                    for (t, (state, due)) in targets.iter().zip(states.iter_mut()) {
                        if now < *due {
                            continue;
                        }
                        *due = now + t.config.interval;
                        let r = run_check(&t.config.kind, t.config.timeout);
                        if let Some(up) = state.observe(r, t.config.rise, t.config.fall) {
                            on_change(&t.id, up, state.last_error.as_deref());
                        }
                    }
                    thread::sleep(Duration::from_millis(20));
                }
            })
            .expect("spawn health checker thread");
        Checker {
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::sync::mpsc;

    #[test]
    fn fall_and_rise_need_consecutive_results() {
        let mut s = HealthState::default();
        let bad = || Err("x".to_string());
        assert_eq!(s.observe(bad(), 2, 3), None);
        assert_eq!(s.observe(bad(), 2, 3), None);
        assert_eq!(
            s.observe(Ok(()), 2, 3),
            None,
            "a success resets the failure streak"
        );
        assert_eq!(s.observe(bad(), 2, 3), None);
        assert_eq!(s.observe(bad(), 2, 3), None);
        assert_eq!(s.observe(bad(), 2, 3), Some(false), "three in a row take it down");
        assert!(!s.is_up());
        assert_eq!(s.last_error.as_deref(), Some("x"));
        assert_eq!(s.observe(Ok(()), 2, 3), None);
        assert_eq!(s.observe(Ok(()), 2, 3), Some(true), "two successes bring it back");
        assert_eq!(s.last_error, None);
    }

    fn http_server(answer: &'static str) -> (SocketAddr, thread::JoinHandle<()>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let h = thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            // Read the whole request head before answering, as a server does.
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            s.write_all(answer.as_bytes()).unwrap();
        });
        (addr, h)
    }

    #[test]
    fn http_get_checks_status_and_body() {
        let (addr, h) = http_server("HTTP/1.0 200 OK\r\n\r\nall good\n");
        let kind = CheckKind::HttpGet {
            addr,
            path: "/".into(),
            status: 200,
            expect: Some("good".into()),
        };
        assert_eq!(run_check(&kind, Duration::from_secs(2)), Ok(()));
        h.join().unwrap();

        let (addr, h) = http_server("HTTP/1.0 503 Busy\r\n\r\nall good\n");
        let kind = CheckKind::HttpGet {
            addr,
            path: "/".into(),
            status: 200,
            expect: None,
        };
        let e = run_check(&kind, Duration::from_secs(2)).unwrap_err();
        assert!(e.contains("status 503"), "{e}");
        h.join().unwrap();

        let (addr, h) = http_server("HTTP/1.0 200 OK\r\n\r\nnope\n");
        let kind = CheckKind::HttpGet {
            addr,
            path: "/x".into(),
            status: 200,
            expect: Some("good".into()),
        };
        assert!(
            run_check(&kind, Duration::from_secs(2))
                .unwrap_err()
                .contains("lacks")
        );
        h.join().unwrap();
    }

    #[test]
    fn tcp_check_fails_on_closed_port() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        assert!(run_check(&CheckKind::Tcp { addr }, Duration::from_secs(1)).is_ok());
        drop(l);
        assert!(run_check(&CheckKind::Tcp { addr }, Duration::from_secs(1)).is_err());
    }

    #[test]
    fn checker_reports_down_then_up() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let (tx, rx) = mpsc::channel();
        let cfg = CheckConfig {
            kind: CheckKind::Tcp { addr },
            interval: Duration::from_millis(30),
            timeout: Duration::from_millis(200),
            rise: 2,
            fall: 2,
            on_failure: OnFailure::Quiesce,
        };
        let checker = Checker::start(
            vec![Target {
                id: 7u32,
                config: cfg,
            }],
            move |id, up, _| {
                let _ = tx.send((*id, up));
            },
        );
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok((7, false)));
        let _l = TcpListener::bind(addr).unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok((7, true)));
        drop(checker);
    }
}
