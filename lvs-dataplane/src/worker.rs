//! The per-core run-to-completion loop: receive a burst, run it through the pipeline
//! ([`Worker::process_burst`]), let the backend send the results. Waiting is adaptive: right
//! after traffic the loop keeps polling the rings for a short, bounded while
//! ([`LoopConfig::spin`]) so the next frame costs no wake-up; once that window passes with
//! the rings empty it sleeps in poll(2) (an idle worker stays idle). The window is spent
//! spinning, not in `sched_yield`: a yielding thread goes to the back of the run queue and on
//! a busy core can wait out other threads' time slices (milliseconds, enough for TCP
//! tail-loss probes to fire through the balancer), while a sleeper woken by poll(2) is
//! scheduled promptly. The window is short, so the spinning costs little.
//!
//! The loop also sends ARP requests / neighbour solicitations for next hops the pipeline
//! found unresolved (at most one per address per [`LoopConfig::resolve_interval`]), and sends
//! the frames held for them once they answer ([`Worker::release_held`]).

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lvs_core::Time;

use crate::io::PacketIo;
use crate::neigh::{arp_probe, arp_request, neighbor_probe, neighbor_solicit};
use crate::pipeline::Worker;

/// Spin-wait hints between two empty polls while spinning (a few hundred ns).
const SPIN_PAUSES: u32 = 16;

/// Default of [`LoopConfig::spin`] in microseconds.
pub const DEFAULT_SPIN_US: u64 = 50;

/// Tuning of the loop.
#[derive(Debug, Clone, Copy)]
pub struct LoopConfig {
    /// Frames per burst.
    pub burst: usize,
    /// Consecutive empty polls before the worker sleeps in poll(2) (at least; see `spin`).
    pub idle_polls: u32,
    /// How long after the last received frame the worker keeps polling (spinning, with the
    /// CPU's spin-wait hint between empty polls) before it sleeps in poll(2); zero sleeps
    /// after `idle_polls` empty polls.
    pub spin: Duration,
    /// Longest sleep when idle (also how soon a stop request is noticed).
    pub idle_sleep: Duration,
    /// Least time between two resolution requests for one address.
    pub resolve_interval: Duration,
}

impl Default for LoopConfig {
    fn default() -> Self {
        LoopConfig {
            burst: 64,
            idle_polls: 32,
            spin: Duration::from_micros(DEFAULT_SPIN_US),
            idle_sleep: Duration::from_millis(10),
            resolve_interval: Duration::from_millis(500),
        }
    }
}

/// Runs `worker` over `io` until `stop` is set. `epoch` is the instant the pipeline's `Time`
/// counts from (the same for every worker and the control plane).
pub fn run(
    io: &mut dyn PacketIo,
    worker: &mut Worker,
    epoch: Instant,
    stop: &AtomicBool,
    cfg: LoopConfig,
) -> io::Result<()> {
    let mut backoff = Backoff::new();
    let mut asked: HashMap<IpAddr, Instant> = HashMap::new();
    while !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        let now = Time::from_millis(t.duration_since(epoch).as_millis() as u64);
        let n = io.poll_bursts(cfg.burst, &mut |frames, ingress, verdicts| {
            worker.process_burst(frames, ingress, now, verdicts)
        })?;
        resolve_pending(io, worker, &mut asked, cfg.resolve_interval);
        worker.release_held(now, &mut |egress, frame| {
            let _ = io.send_frame(egress, frame);
        });
        backoff.after_poll(io, n, t, &cfg)?;
    }
    Ok(())
}

/// The loop's adaptive wait between polls (see the module docs): nothing after a poll that
/// received frames, spin-wait hints while the last frame is less than [`LoopConfig::spin`]
/// old, then poll(2) once [`LoopConfig::idle_polls`] polls in a row found nothing. Also used
/// by loops that drive a [`PacketIo`] without a [`Worker`] (the lab's AF_XDP floor).
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    idle: u32,
    last_rx: Instant,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

impl Backoff {
    /// A backoff that counts the last frame as just received.
    pub fn new() -> Backoff {
        Backoff {
            idle: 0,
            last_rx: Instant::now(),
        }
    }

    /// Waits as the loop should after a poll at `t` that received `n` frames.
    pub fn after_poll(
        &mut self,
        io: &mut (impl PacketIo + ?Sized),
        n: usize,
        t: Instant,
        cfg: &LoopConfig,
    ) -> io::Result<()> {
        if n > 0 {
            (self.idle, self.last_rx) = (0, t);
            return Ok(());
        }
        self.idle = self.idle.saturating_add(1);
        if t.duration_since(self.last_rx) < cfg.spin {
            // Traffic a moment ago: more is likely on its way; look again shortly.
            for _ in 0..SPIN_PAUSES {
                std::hint::spin_loop();
            }
        } else if self.idle >= cfg.idle_polls {
            io.wait(cfg.idle_sleep)?;
        }
        Ok(())
    }
}

/// Sends a request for every unresolved next hop the pipeline queued, at most once per
/// `interval` per address, and the unicast probes of neighbours due for one
/// ([`NeighTable::age`](crate::neigh::NeighTable::age)).
fn resolve_pending(
    io: &mut dyn PacketIo,
    worker: &Worker,
    asked: &mut HashMap<IpAddr, Instant>,
    interval: Duration,
) {
    let p = worker.pipeline();
    let tables = p.tables();
    while let Some((ip, mac)) = tables.neigh.take_probe() {
        let Some(hop) = tables.routes.lookup(ip) else {
            continue;
        };
        let Some(iface) = p.interfaces().get(hop.iface as usize) else {
            continue;
        };
        let _ = match (ip, iface.ipv4, iface.ipv6) {
            (IpAddr::V4(t), Some(me), _) => io.send_frame(hop.iface, &arp_probe(iface.mac, me, t, mac)),
            (IpAddr::V6(t), _, Some(me)) => io.send_frame(hop.iface, &neighbor_probe(iface.mac, me, t, mac)),
            _ => continue,
        };
    }
    while let Some(ip) = tables.neigh.take_pending() {
        if tables.neigh.lookup(ip).is_some() {
            continue;
        }
        let now = Instant::now();
        if asked.get(&ip).is_some_and(|t| now.duration_since(*t) < interval) {
            continue;
        }
        if asked.len() > 4096 {
            asked.retain(|_, t| now.duration_since(*t) < interval);
        }
        asked.insert(ip, now);
        let Some(hop) = tables.routes.lookup(ip) else {
            continue;
        };
        let Some(iface) = p.interfaces().get(hop.iface as usize) else {
            continue;
        };
        let _ = match ip {
            IpAddr::V4(t) => match iface.ipv4 {
                Some(me) => io.send_frame(hop.iface, &arp_request(iface.mac, me, t)),
                None => continue,
            },
            IpAddr::V6(t) => match iface.ipv6 {
                Some(me) => io.send_frame(hop.iface, &neighbor_solicit(iface.mac, me, t)),
                None => continue,
            },
        };
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::sync::Arc;

    use lvs_core::ServiceTable;
    use lvs_core::conn::ConnTable;

    use super::*;
    use crate::io::mem::MemIo;
    use crate::neigh::NeighTable;
    use crate::pipeline::{Interface, Pipeline, Tables};
    use crate::route::RouteTable;
    use crate::verdict::Verdict;
    use crate::xlate::lip::LipPool;

    /// The loop hands every waiting frame to the pipeline (through the burst path) and
    /// returns once stopped, also while it is polling or sleeping with nothing to do.
    #[test]
    fn run_processes_waiting_frames_and_returns_when_stopped() {
        let tables = Tables {
            services: Arc::new(ServiceTable::new()),
            conns: Arc::new(ConnTable::with_capacity(1024)),
            neigh: Arc::new(NeighTable::new()),
            routes: Arc::new(RouteTable::new(vec![])),
            lips: Arc::new(LipPool::new(&[Ipv4Addr::new(10, 0, 0, 9).into()], 5000, 5099)),
        };
        let iface = Interface {
            name: "eth0".into(),
            mac: [2, 0, 0, 0, 0, 1],
            mtu: 1500,
            ipv4: Some(Ipv4Addr::new(10, 0, 0, 1)),
            ipv6: None,
        };
        let pipeline = Pipeline::new(tables, vec![iface]);
        let mut worker = pipeline.worker(0);
        let mut io = MemIo::new();
        // Runt frames: the pipeline drops them, each with a verdict.
        for i in 0..5u8 {
            io.inject(0, &[i; 10]);
        }
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            let h = s.spawn(|| run(&mut io, &mut worker, Instant::now(), &stop, LoopConfig::default()));
            std::thread::sleep(Duration::from_millis(100));
            stop.store(true, Ordering::Relaxed);
            h.join().unwrap().unwrap();
        });
        assert_eq!(io.verdicts.len(), 5);
        assert!(io.verdicts.iter().all(|v| matches!(v, Verdict::Drop(_))));
        assert!(io.sent.is_empty());
        assert_eq!(worker.stats.frames.load(Ordering::Relaxed), 5);
    }

    /// A frame whose next hop is unresolved is held by the loop (not dropped), the loop asks
    /// for the address, and once the neighbour is known it sends exactly that frame, with
    /// the neighbour's MAC.
    #[test]
    fn run_holds_a_frame_for_an_unresolved_next_hop_and_sends_it_once_resolved() {
        use crate::pipeline_fuzzing::{
            ACK, CLIENT_MAC, FuzzLab, L4, OUR_MAC, RS1, RS1_MAC, build, cip, live_cport, vip,
        };
        use crate::wire::ethertype;
        let mut lab = FuzzLab::new();
        let neigh = lab.pipeline.tables().neigh.clone();
        neigh.remove(RS1.into());
        // A data segment of the live FULLNAT connection (VIP port 81, real server RS1 only).
        let data = L4::Tcp {
            sport: live_cport(81),
            dport: 81,
            flags: ACK,
            payload: b"held-then-sent",
        };
        let mut io = MemIo::new();
        io.inject(0, &build(CLIENT_MAC, cip(false), vip(false), data));
        let stop = AtomicBool::new(false);
        let worker = &mut lab.worker;
        std::thread::scope(|s| {
            let h = s.spawn(|| run(&mut io, worker, Instant::now(), &stop, LoopConfig::default()));
            std::thread::sleep(Duration::from_millis(150));
            neigh.insert(RS1.into(), RS1_MAC);
            std::thread::sleep(Duration::from_millis(150));
            stop.store(true, Ordering::Relaxed);
            h.join().unwrap().unwrap();
        });
        assert_eq!(io.verdicts, vec![Verdict::Held]);
        let eth = |f: &[u8]| u16::from_be_bytes([f[12], f[13]]);
        let arp: Vec<_> = io
            .sent
            .iter()
            .filter(|f| eth(&f.data) == ethertype::ARP)
            .collect();
        assert!(!arp.is_empty(), "an ARP request was sent for the next hop");
        assert_eq!(&arp[0].data[38..42], &RS1.octets(), "asking for RS1");
        let ip: Vec<_> = io
            .sent
            .iter()
            .filter(|f| eth(&f.data) == ethertype::IPV4)
            .collect();
        assert_eq!(ip.len(), 1, "the held frame is sent once");
        let f = &ip[0].data;
        assert_eq!(ip[0].iface, 0);
        assert_eq!(&f[0..6], &RS1_MAC, "to the resolved MAC");
        assert_eq!(&f[6..12], &OUR_MAC, "from ours");
        assert_eq!(&f[30..34], &RS1.octets(), "to the real server");
        assert!(f.ends_with(b"held-then-sent"));
        let ld = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        assert_eq!(ld(&lab.worker.stats.held), 1);
        assert_eq!(ld(&lab.worker.stats.released), 1);
        assert_eq!(lab.worker.drops.total(), 0, "nothing dropped");
    }

    /// A neighbour past its reachable time gets unicast ARP probes to the MAC lvs holds
    /// (one per aging tick), sent by the loop from the interface's own address; once it stops
    /// answering it is forgotten, and the next frame for it asks the whole segment again.
    #[test]
    fn run_probes_neighbours_due_for_it_at_their_known_mac() {
        use crate::neigh::{PROBES, REACHABLE_TICKS};
        use crate::pipeline_fuzzing::{FuzzLab, OUR_MAC, RS1, RS1_MAC};
        use crate::wire::{arp, ethertype};
        let mut lab = FuzzLab::new();
        let neigh = lab.pipeline.tables().neigh.clone();
        for _ in 0..=REACHABLE_TICKS {
            neigh.age();
        }
        let mut io = MemIo::new();
        let stop = AtomicBool::new(false);
        let worker = &mut lab.worker;
        std::thread::scope(|s| {
            let h = s.spawn(|| run(&mut io, worker, Instant::now(), &stop, LoopConfig::default()));
            std::thread::sleep(Duration::from_millis(150));
            stop.store(true, Ordering::Relaxed);
            h.join().unwrap().unwrap();
        });
        let probes: Vec<_> = io
            .sent
            .iter()
            .filter(|f| u16::from_be_bytes([f.data[12], f.data[13]]) == ethertype::ARP)
            .filter_map(|f| {
                let a = arp::Packet::new_checked(&f.data[14..]).ok()?;
                (a.target_ip() == RS1).then(|| (f.data[0..6].to_vec(), f.data[6..12].to_vec(), a.operation()))
            })
            .collect();
        assert_eq!(
            probes,
            vec![(RS1_MAC.to_vec(), OUR_MAC.to_vec(), arp::OP_REQUEST)],
            "one unicast request to the MAC held for RS1"
        );
        for _ in 1..PROBES {
            neigh.age();
        }
        assert_eq!(neigh.lookup(RS1.into()), Some(RS1_MAC), "still used while probed");
        neigh.age();
        assert_eq!(
            neigh.lookup(RS1.into()),
            None,
            "no answer to {PROBES} probes: forgotten"
        );
    }
}
