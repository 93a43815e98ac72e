//! `lvs run`: the daemon. It reads the configuration and rules, checks the host, builds the
//! shared tables and the packet pipeline, starts one pinned worker per core on the chosen
//! backend (AF_XDP with lvs's XDP steering program, or AF_PACKET), the control socket, the
//! health checker and a housekeeping thread, and runs until SIGINT/SIGTERM (SIGHUP re-reads
//! the rules file).

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use lvs_core::conn::ConnTable;
use lvs_core::rules::parse_args;
use lvs_core::service::ServiceKey;
use lvs_core::{DestState, ForwardMethod, ServiceTable, Time};
use lvs_dataplane::io::PacketIo;
use lvs_dataplane::io::afpacket::{AfPacketConfig, AfPacketIo, RxRing};
use lvs_dataplane::io::afxdp::{AfXdpConfig, AfXdpIface, AfXdpIo, queues_of_worker};
use lvs_dataplane::io::netlink::{self, InterfaceInfo};
use lvs_dataplane::io::xdp_prog::{BalancerAddrs, XdpAction, XdpMode as ProgMode, XdpSteering};
use lvs_dataplane::neigh::NeighTable;
use lvs_dataplane::pipeline::{FwmarkRule, Interface, Pipeline, Tables};
use lvs_dataplane::route::RouteTable;
use lvs_dataplane::worker::{self, LoopConfig};
use lvs_dataplane::xlate::lip::{DEFAULT_MAX_PORT, DEFAULT_MIN_PORT, LipPool};

use crate::adm::ControlPlane;
use crate::config::{AFPACKET_V3_RETIRE_MS, AfpacketRing, Backend, Config, XdpMode};
use crate::control::ControlServer;
use crate::health::{CheckKind, Checker, OnFailure, Target};

/// Why the daemon could not start or stopped.
#[derive(Debug)]
pub enum DaemonError {
    /// A configuration, rules or host-setting problem: nothing was started (exit status 2).
    Config(String),
    /// A failure while starting or running (exit status 1).
    Runtime(String),
}

impl fmt::Display for DaemonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DaemonError::Config(m) | DaemonError::Runtime(m) => f.write_str(m),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Addresses the balancer owns or steers: VIPs (and fwmark addresses), LIPs, and the
/// RIP:rport of every Masq destination (their replies come back through us).
#[derive(Debug, Default, Clone)]
struct Owned {
    local: HashSet<IpAddr>,
    real_servers: HashSet<SocketAddr>,
    /// The live state of each steered real server: a real server removed from the rules stays
    /// steered while connections still use it (the kernel keeps such a destination in its
    /// trash and goes on forwarding its connections).
    states: Vec<(SocketAddr, Arc<DestState>)>,
}

/// Most ports steered per port-keeping fwmark real server.
const MAX_STEERED_PORTS: usize = 4096;

fn owned(plane: &ControlPlane, lips: &[IpAddr], fwmarks: &[FwmarkRule]) -> Owned {
    let mut o = Owned::default();
    for svc in &plane.rules().services {
        if let ServiceKey::Addr { addr, .. } = svc.key {
            o.local.insert(addr);
        }
        for d in &svc.dests {
            if d.method != ForwardMethod::Masq && d.method != ForwardMethod::FullNat {
                continue;
            }
            match (d.port, svc.key) {
                // A port-keeping destination of a firewall-mark service answers from every
                // port the mark covers: steer each of them (bounded, the map is finite).
                (0, ServiceKey::Fwmark { mark, .. }) => {
                    let ports = fwmarks
                        .iter()
                        .filter(|f| f.mark == mark)
                        .flat_map(|f| f.first_port..=f.last_port)
                        .take(MAX_STEERED_PORTS);
                    o.real_servers.extend(ports.map(|p| SocketAddr::new(d.addr, p)));
                }
                _ => {
                    o.real_servers.insert(SocketAddr::new(d.addr, d.port));
                }
            }
        }
    }
    for svc in plane.services().load().services() {
        for d in &svc.dests {
            let rs = SocketAddr::new(d.config.addr, d.config.port);
            if d.config.port == 0 {
                // Port-keeping (fwmark) destination: every port steered for its address.
                let steered: Vec<SocketAddr> = o
                    .real_servers
                    .iter()
                    .filter(|r| r.ip() == d.config.addr)
                    .copied()
                    .collect();
                o.states.extend(steered.into_iter().map(|r| (r, d.state.clone())));
            } else if o.real_servers.contains(&rs) {
                o.states.push((rs, d.state.clone()));
            }
        }
    }
    o.local.extend(lips.iter().copied());
    // LIPs added with `ipvsadm -P` (DPVS's local-address commands).
    o.local.extend(plane.local_addresses());
    o.local.extend(fwmarks.iter().map(|f| f.addr));
    o
}

/// Keeps the XDP program's address map equal to `want`, plus the removed real servers that
/// still have connections (called after each rules change and every second).
fn sync_xdp(addrs: &BalancerAddrs, have: &mut Owned, mut want: Owned) {
    for a in have.local.difference(&want.local) {
        let _ = addrs.remove_local(*a);
    }
    for a in want.local.difference(&have.local) {
        if let Err(e) = addrs.add_local(*a) {
            tracing::warn!("XDP map: cannot add {a}: {e}");
        }
    }
    for r in have.real_servers.difference(&want.real_servers) {
        let draining: Vec<_> = have
            .states
            .iter()
            .filter(|(a, st)| a == r && st.total_conns() > 0)
            .cloned()
            .collect();
        if draining.is_empty() {
            let _ = addrs.remove_real_server(*r);
        } else {
            want.states.extend(draining);
        }
    }
    for r in want.states.iter().map(|(a, _)| *a).collect::<Vec<_>>() {
        want.real_servers.insert(r);
    }
    for r in want.real_servers.difference(&have.real_servers) {
        if let Err(e) = addrs.add_real_server(*r) {
            tracing::warn!("XDP map: cannot add real server {r}: {e}");
        }
    }
    *have = want;
}

/// Host settings the AF_PACKET backend needs: the kernel sees every frame too, so it must
/// neither answer nor forward the balancer's traffic.
fn check_afpacket_host(owned: &Owned, addrs: &[netlink::KernelAddress]) -> Result<(), DaemonError> {
    for a in addrs {
        if owned.local.contains(&a.addr) {
            return Err(DaemonError::Config(format!(
                "{} is configured on a kernel interface (index {}); with --backend afpacket the kernel \
                 would answer its traffic (RST) next to lvs: remove it (`ip addr del {}/{} dev ...`); lvs \
                 answers ARP/NDP for its VIPs and LIPs itself",
                a.addr, a.ifindex, a.addr, a.prefix_len
            )));
        }
    }
    let fwd = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap_or_default();
    if fwd.trim() == "1" {
        return Err(DaemonError::Config(
            "net.ipv4.ip_forward=1: with --backend afpacket the kernel would forward client and reply \
             packets next to lvs; set `sysctl -w net.ipv4.ip_forward=0` (lvs forwards the balanced traffic)"
                .into(),
        ));
    }
    let fwd6 = std::fs::read_to_string("/proc/sys/net/ipv6/conf/all/forwarding").unwrap_or_default();
    if fwd6.trim() == "1" {
        return Err(DaemonError::Config(
            "net.ipv6.conf.all.forwarding=1: with --backend afpacket set it to 0 (lvs forwards the balanced traffic)"
                .into(),
        ));
    }
    Ok(())
}

/// The DIP of each interface: its first global address of each family.
fn interface_addrs(
    info: &InterfaceInfo,
    addrs: &[netlink::KernelAddress],
) -> (Option<Ipv4Addr>, Option<Ipv6Addr>) {
    let mut v4 = None;
    let mut v6 = None;
    for a in addrs.iter().filter(|a| a.ifindex == info.ifindex) {
        match a.addr {
            IpAddr::V4(x) if v4.is_none() => v4 = Some(x),
            IpAddr::V6(x) if v6.is_none() && (x.segments()[0] & 0xffc0) != 0xfe80 => v6 = Some(x),
            _ => {}
        }
    }
    (v4, v6)
}

/// Runs the daemon until a signal stops it.
pub fn run(cfg: Config) -> Result<(), DaemonError> {
    let epoch = Instant::now();
    let clock = move || Time::from_millis(epoch.elapsed().as_millis() as u64);

    // Interfaces and addresses.
    let infos: Vec<InterfaceInfo> = cfg
        .interfaces
        .iter()
        .map(|n| netlink::interface_info(n).map_err(|e| DaemonError::Config(e.to_string())))
        .collect::<Result<_, _>>()?;
    let kernel_addrs =
        netlink::dump_addresses().map_err(|e| DaemonError::Runtime(format!("netlink: {e}")))?;

    // Tables and rules (refused whole, with the line, before anything starts).
    let services = Arc::new(ServiceTable::new());
    let conns = Arc::new(ConnTable::with_capacity(cfg.conn_capacity));
    let mut plane =
        ControlPlane::new(services.clone(), conns.clone(), clock).with_table_size(cfg.conn_capacity as u32);
    if let Some(path) = &cfg.rules {
        let text = std::fs::read_to_string(path)
            .map_err(|e| DaemonError::Config(format!("cannot read rules {}: {e}", path.display())))?;
        plane
            .load_rules(&text)
            .map_err(|e| DaemonError::Config(format!("{}: {e}", path.display())))?;
    }
    for l in &cfg.lips {
        if l.is_unspecified() || l.is_multicast() {
            return Err(DaemonError::Config(format!("--lip {l}: not a unicast address")));
        }
    }
    let fwmarks: Vec<FwmarkRule> = cfg
        .fwmarks
        .iter()
        .map(|f| FwmarkRule {
            proto: f.proto,
            addr: f.addr,
            first_port: f.first_port,
            last_port: f.last_port,
            mark: f.mark,
        })
        .collect();
    let want = owned(&plane, &cfg.lips, &fwmarks);
    if cfg.backend == Backend::Afpacket {
        check_afpacket_host(&want, &kernel_addrs)?;
    }

    let neigh = Arc::new(NeighTable::new());
    // Neighbours age as the kernel's would on the served interfaces (the shortest setting).
    let reachable_ms = cfg
        .interfaces
        .iter()
        .filter_map(|i| {
            std::fs::read_to_string(format!("/proc/sys/net/ipv4/neigh/{i}/base_reachable_time_ms"))
                .ok()?
                .trim()
                .parse::<u64>()
                .ok()
        })
        .min();
    if let Some(ms) = reachable_ms {
        neigh.set_reachable_ticks(ms.div_ceil(1000).min(u32::MAX as u64) as u32);
    }
    tracing::info!(
        "neighbours: trusted {} s after a confirmation, then {} unicast probes",
        neigh.reachable_ticks(),
        lvs_dataplane::neigh::PROBES
    );
    let routes = Arc::new(RouteTable::default());
    let (nr, nn) = netlink::load_tables(&infos, &routes, &neigh)
        .map_err(|e| DaemonError::Runtime(format!("netlink: {e}")))?;
    tracing::info!(
        "kernel tables: {nr} routes, {nn} neighbours on {:?}",
        cfg.interfaces
    );
    let lips = Arc::new(LipPool::new(&cfg.lips, DEFAULT_MIN_PORT, DEFAULT_MAX_PORT));
    {
        // `-P`/`-Q` change the pool at run time; the configured LIPs stay.
        let (pool, base) = (lips.clone(), cfg.lips.clone());
        plane.on_local_addresses_changed(move |added| {
            let mut all = base.clone();
            all.extend(added.iter().filter(|a| !base.contains(a)));
            pool.set_addrs(&all);
        });
    }
    let interfaces: Vec<Interface> = infos
        .iter()
        .map(|i| {
            let (ipv4, ipv6) = interface_addrs(i, &kernel_addrs);
            Interface {
                name: i.name.clone(),
                mac: i.mac,
                mtu: i.mtu.min(u16::MAX as u32) as u16,
                ipv4,
                ipv6,
            }
        })
        .collect();
    let pipeline = Pipeline::new(
        Tables {
            services: services.clone(),
            conns: conns.clone(),
            neigh: neigh.clone(),
            routes: routes.clone(),
            lips,
        },
        interfaces,
    );
    pipeline.set_fwmarks(fwmarks.clone());
    pipeline.set_toa(cfg.toa);
    pipeline.set_expire_nodest_conn(cfg.expire_nodest_conn);

    // Backend.
    let stop = Arc::new(AtomicBool::new(false));
    let mut ios: Vec<Box<dyn PacketIo + Send>> = Vec::new();
    let mut steering: Vec<XdpSteering> = Vec::new();
    let xdp_addrs = match cfg.backend {
        Backend::Afxdp => {
            let addrs =
                BalancerAddrs::new(65536).map_err(|e| DaemonError::Runtime(format!("XDP map: {e}")))?;
            // The host's own addresses (the DIPs): frames to them are the kernel's even when
            // they come from a real server's RIP:rport (the director's health checks).
            for a in &kernel_addrs {
                if !want.local.contains(&a.addr) {
                    addrs
                        .add_host(a.addr)
                        .map_err(|e| DaemonError::Runtime(format!("XDP map: {e}")))?;
                }
            }
            let queues = infos.iter().map(|i| i.rx_queues).max().unwrap_or(1);
            for i in &infos {
                let mut st = XdpSteering::load(&addrs, i.rx_queues, XdpAction::Pass)
                    .map_err(|e| DaemonError::Runtime(format!("XDP program: {e}")))?;
                let mode = match cfg.xdp_mode {
                    XdpMode::Auto => st.attach_best(i.ifindex),
                    XdpMode::Native => st.attach(i.ifindex, ProgMode::Native).map(|_| ProgMode::Native),
                    XdpMode::Generic => st.attach(i.ifindex, ProgMode::Generic).map(|_| ProgMode::Generic),
                }
                .map_err(|e| DaemonError::Runtime(format!("attach XDP to {}: {e}", i.name)))?;
                tracing::info!(
                    "XDP program attached to {} ({mode:?} mode, {} queues)",
                    i.name,
                    i.rx_queues
                );
                steering.push(st);
            }
            let workers = cfg.workers.min(queues as usize).max(1);
            if workers < cfg.workers {
                tracing::warn!(
                    "{} workers asked, but the interfaces have {queues} queue(s): running {workers}",
                    cfg.workers
                );
            }
            for w in 0..workers {
                // Every queue of an interface gets a socket: a queue without one would leave
                // its share of the balancer's frames to the kernel.
                let mut ifaces: Vec<AfXdpIface<'_>> = Vec::new();
                for (i, st) in infos.iter().zip(&steering) {
                    let queues = queues_of_worker(w as u32, workers as u32, i.rx_queues);
                    tracing::info!("worker {w}: {} queue(s) {queues:?}", i.name);
                    ifaces.extend(queues.into_iter().map(|queue| AfXdpIface {
                        ifindex: i.ifindex,
                        queue,
                        steering: Some(st),
                    }));
                }
                let io = AfXdpIo::new(&ifaces, AfXdpConfig::default())
                    .map_err(|e| DaemonError::Runtime(format!("AF_XDP socket: {e}")))?;
                ios.push(Box::new(io));
            }
            Some(addrs)
        }
        Backend::Afpacket => {
            let names: Vec<&str> = cfg.interfaces.iter().map(String::as_str).collect();
            let group = (std::process::id() & 0x7fff) as u16;
            let rx_ring = match cfg.afpacket_ring {
                AfpacketRing::V2 => RxRing::V2,
                AfpacketRing::V3 => RxRing::V3 {
                    retire_timeout_ms: AFPACKET_V3_RETIRE_MS,
                },
            };
            for _ in 0..cfg.workers {
                let io = AfPacketIo::new(
                    &names,
                    AfPacketConfig {
                        fanout_group: Some(group),
                        rx_ring,
                        ..AfPacketConfig::default()
                    },
                )
                .map_err(|e| DaemonError::Runtime(format!("AF_PACKET socket: {e}")))?;
                if ios.is_empty() {
                    // What the kernel runs the socket with, not what was asked.
                    match io.tpacket_version(0) {
                        Ok(v) => tracing::info!(
                            "AF_PACKET receive ring TPACKET_V{v} ({:?} asked)",
                            cfg.afpacket_ring
                        ),
                        Err(e) => tracing::warn!("AF_PACKET: PACKET_VERSION unreadable: {e}"),
                    }
                }
                ios.push(Box::new(io));
            }
            None
        }
    };
    let mut have = Owned::default();
    let mut arp_thread = None;
    if let Some(a) = &xdp_addrs {
        sync_xdp(a, &mut have, want.clone());
        // Replies to lvs's ARP requests are addressed to the DIP: the kernel's. Learn them
        // from a read-only copy.
        arp_thread = Some(
            lvs_dataplane::io::arp_listener::spawn(&cfg.interfaces, neigh.clone(), stop.clone())
                .map_err(|e| DaemonError::Runtime(format!("ARP listener: {e}")))?,
        );
    }

    // Control plane and socket.
    let cfg_lips = cfg.lips.clone();
    let plane = Arc::new(Mutex::new(plane));
    let xdp_addrs = Arc::new(xdp_addrs);
    let have = Arc::new(Mutex::new(have));
    let server = {
        let (plane, xdp_addrs, have, fwmarks, lips) = (
            plane.clone(),
            xdp_addrs.clone(),
            have.clone(),
            fwmarks.clone(),
            cfg_lips.clone(),
        );
        ControlServer::start(&cfg.socket, move |req| {
            let mut p = lock(&plane);
            let resp = p.handle(&req);
            if let Some(a) = xdp_addrs.as_ref() {
                sync_xdp(a, &mut lock(&have), owned(&p, &lips, &fwmarks));
            }
            resp
        })
        .map_err(|e| DaemonError::Runtime(format!("control socket {}: {e}", cfg.socket.display())))?
    };
    tracing::info!("control socket {}", server.path().display());

    // Health checks.
    let checker = start_health_checks(&cfg, &plane);

    // Workers, one per core.
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let mut handles = Vec::new();
    let mut counters = Vec::new();
    for (w, mut io) in ios.into_iter().enumerate() {
        let mut worker = pipeline.worker(w);
        counters.push((worker.stats.clone(), worker.drops.clone()));
        let stop = stop.clone();
        let core = if cfg.pin_workers {
            cores.get(w % cores.len().max(1)).copied()
        } else {
            None
        };
        let loop_cfg = LoopConfig {
            spin: cfg.poll_spin,
            ..LoopConfig::default()
        };
        let h = thread::Builder::new()
            .name(format!("lvs-worker-{w}"))
            .spawn(move || {
                if let Some(c) = core {
                    core_affinity::set_for_current(c);
                }
                if let Err(e) = worker::run(io.as_mut(), &mut worker, epoch, &stop, loop_cfg) {
                    tracing::error!("worker {w}: {e}");
                    stop.store(true, Ordering::Relaxed);
                }
                worker
            })
            .map_err(|e| DaemonError::Runtime(format!("spawn worker: {e}")))?;
        handles.push(h);
    }
    tracing::info!(
        "lvs running: {} worker(s), backend {:?}, {} service(s)",
        handles.len(),
        cfg.backend,
        lock(&plane).rules().services.len()
    );

    prime_neighbours(&lock(&plane), &routes, &neigh);

    // Signals.
    let hup = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())
            .map_err(|e| DaemonError::Runtime(format!("signal: {e}")))?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGHUP, hup.clone())
        .map_err(|e| DaemonError::Runtime(format!("signal: {e}")))?;

    // Housekeeping until stopped.
    let mut last_tick = Instant::now();
    let mut last_tables = Instant::now();
    let mut last_summary = String::new();
    let slow = (!cfg.slow_start.is_zero()).then(|| lvs_core::sched::SlowStart::new(cfg.slow_start));
    let mut ramp_seen: std::collections::HashMap<u32, u32> = std::collections::HashMap::new();
    let mut first_ramp_pass = true;
    while !stop.load(Ordering::Relaxed) {
        thread::sleep(Duration::from_millis(100));
        pipeline.housekeeping(clock(), 200_000);
        if let Some(slow) = &slow {
            ramp_destinations(slow, &services, &mut ramp_seen, first_ramp_pass, clock());
            first_ramp_pass = false;
        }
        if last_tick.elapsed() >= Duration::from_secs(2) {
            last_tick = Instant::now();
            lock(&plane).tick(clock());
            let line = worker_summary(&counters);
            if line != last_summary {
                tracing::info!("{line}");
                last_summary = line;
            }
        }
        if last_tables.elapsed() >= Duration::from_secs(1) {
            last_tables = Instant::now();
            if let Err(e) = netlink::load_tables(&infos, &routes, &neigh) {
                tracing::warn!("netlink refresh: {e}");
            }
            let aged = neigh.age();
            if aged.forgotten > 0 {
                tracing::info!(
                    "forgot {} neighbour(s) that answered none of {} probes",
                    aged.forgotten,
                    lvs_dataplane::neigh::PROBES
                );
            }
            prime_neighbours(&lock(&plane), &routes, &neigh);
            if let Some(a) = xdp_addrs.as_ref() {
                let p = lock(&plane);
                sync_xdp(a, &mut lock(&have), owned(&p, &cfg_lips, &fwmarks));
            }
        }
        if hup.swap(false, Ordering::Relaxed)
            && let Some(path) = &cfg.rules
        {
            match std::fs::read_to_string(path) {
                Ok(text) => {
                    let mut p = lock(&plane);
                    match p.replace_rules(&text) {
                        Ok(()) => {
                            tracing::info!("SIGHUP: reloaded {}", path.display());
                            if let Some(a) = xdp_addrs.as_ref() {
                                sync_xdp(a, &mut lock(&have), owned(&p, &cfg_lips, &fwmarks));
                            }
                        }
                        Err(e) => tracing::error!("SIGHUP: {}: {e}; rules unchanged", path.display()),
                    }
                }
                Err(e) => tracing::error!("SIGHUP: cannot read {}: {e}; rules unchanged", path.display()),
            }
        }
    }
    tracing::info!("stopping");
    let mut drops = 0;
    for h in handles {
        if let Ok(w) = h.join() {
            drops += w.drops.total();
        }
    }
    if let Some(t) = arp_thread {
        let _ = t.join();
    }
    drop(checker);
    drop(server);
    drop(steering);
    tracing::info!("stopped ({drops} frames dropped in all)");
    Ok(())
}

/// Slow start: a destination that appears (added) or whose weight goes from 0 to positive
/// (recovered from a failed health check, or un-drained) starts its weight ramp; ramps in
/// progress advance. Destinations present at start-up get full weight at once.
fn ramp_destinations(
    slow: &lvs_core::sched::SlowStart,
    services: &ServiceTable,
    seen: &mut std::collections::HashMap<u32, u32>,
    first: bool,
    now: Time,
) {
    let set = services.load();
    let mut alive = HashSet::new();
    for svc in set.services() {
        for d in &svc.dests {
            let id = d.state.id();
            alive.insert(id);
            let w = d.config.weight;
            match seen.insert(id, w) {
                None if !first && w > 0 => slow.begin(&d.state, now),
                Some(0) if w > 0 => slow.begin(&d.state, now),
                _ => {}
            }
        }
        slow.update(&svc.dests, now);
    }
    seen.retain(|id, _| alive.contains(id));
}

/// Asks for the MAC of every real server's next hop not yet known, so the first packet of a
/// connection does not wait for ARP (the workers send the requests).
fn prime_neighbours(plane: &ControlPlane, routes: &RouteTable, neigh: &NeighTable) {
    for svc in &plane.rules().services {
        for d in &svc.dests {
            if let Some(hop) = routes.lookup(d.addr)
                && neigh.lookup(hop.addr).is_none()
            {
                neigh.request(hop.addr);
            }
        }
    }
}

/// One line of worker counters for the log: frames, forwards, replies, passes, drops by reason.
fn worker_summary(
    counters: &[(
        Arc<lvs_dataplane::pipeline::WorkerStats>,
        Arc<lvs_dataplane::verdict::DropCounters>,
    )],
) -> String {
    use lvs_dataplane::verdict::DropReason;
    let g = |f: &dyn Fn(&lvs_dataplane::pipeline::WorkerStats) -> u64| {
        counters.iter().map(|(s, _)| f(s)).sum::<u64>()
    };
    let ld = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let mut line = format!(
        "frames {} in {} out {} new {} replies {} passed {} icmp {}",
        g(&|s| ld(&s.frames)),
        g(&|s| ld(&s.forwarded_in)),
        g(&|s| ld(&s.forwarded_out)),
        g(&|s| ld(&s.new_conns)),
        g(&|s| ld(&s.replies)),
        g(&|s| ld(&s.passed)),
        g(&|s| ld(&s.icmp_translated)),
    );
    let (held, released) = (g(&|s| ld(&s.held)), g(&|s| ld(&s.released)));
    if held > 0 {
        line.push_str(&format!(" held {held} released {released}"));
    }
    for r in DropReason::ALL {
        let n: u64 = counters.iter().map(|(_, d)| d.get(r)).sum();
        if n > 0 {
            line.push_str(&format!(" drop.{}={n}", r.name()));
        }
    }
    line
}

/// Starts the health checker for the configured checks: a failing real server is quiesced
/// (`-e ... -w 0`) or removed (`-d`), and restored on recovery, through the control plane
/// like an ipvsadm command.
fn start_health_checks(cfg: &Config, plane: &Arc<Mutex<ControlPlane>>) -> Option<Checker> {
    if cfg.checks.is_empty() {
        return None;
    }
    let p = lock(plane);
    let mut targets = Vec::new();
    for rule in &cfg.checks {
        let Ok(lvs_core::rules::Command::DeleteService(key)) = parse_args(
            &std::iter::once("-D")
                .chain(rule.service.split_whitespace())
                .collect::<Vec<_>>(),
        ) else {
            tracing::warn!("health check: cannot parse service {:?}", rule.service);
            continue;
        };
        let Some(svc) = p.rules().service(&key) else {
            tracing::warn!("health check: service {:?} not defined", rule.service);
            continue;
        };
        for d in &svc.dests {
            let rs = SocketAddr::new(d.addr, d.port);
            if rule.real_server.is_some_and(|r| r != rs) {
                continue;
            }
            let addr = SocketAddr::new(
                d.addr,
                rule.connect_port.unwrap_or(if d.port == 0 { 80 } else { d.port }),
            );
            let mut config = rule.config.clone();
            match &mut config.kind {
                CheckKind::Tcp { addr: a } | CheckKind::HttpGet { addr: a, .. } => *a = addr,
            }
            targets.push(Target {
                id: (rule.service.clone(), rs, d.clone(), config.on_failure),
                config,
            });
        }
    }
    drop(p);
    let plane = plane.clone();
    Some(Checker::start(
        targets,
        move |(service, rs, dest, on_failure), up, why| {
            let svc: Vec<&str> = service.split_whitespace().collect();
            let rs_s = rs.to_string();
            let weight = dest.weight.to_string();
            let method = dest.method.save_flag();
            let args: Vec<&str> = match (up, on_failure) {
                (false, OnFailure::Quiesce) => {
                    [&["-e"][..], &svc, &["-r", &rs_s, method, "-w", "0"]].concat()
                }
                (false, OnFailure::Remove) => [&["-d"][..], &svc, &["-r", &rs_s]].concat(),
                (true, OnFailure::Quiesce) => {
                    [&["-e"][..], &svc, &["-r", &rs_s, method, "-w", &weight]].concat()
                }
                (true, OnFailure::Remove) => {
                    [&["-a"][..], &svc, &["-r", &rs_s, method, "-w", &weight]].concat()
                }
            };
            if up {
                tracing::info!("health check: {rs} in {service} is up again");
            } else {
                tracing::warn!("health check: {rs} in {service} failed: {}", why.unwrap_or("?"));
            }
            match parse_args(&args) {
                Ok(cmd) => {
                    if let Err(e) = lock(&plane).apply(cmd) {
                        tracing::warn!("health check: {}: {e}", args.join(" "));
                    }
                }
                Err(e) => tracing::warn!("health check: {}: {e}", args.join(" ")),
            }
        },
    ))
}
