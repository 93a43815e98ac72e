//! A dry run of a rule set: load an ipvsadm-save file, publish it, and schedule synthetic
//! connections through each service's real scheduler (the `simulate` example's engine).
//!
//! Clients are `10.200.x.y` (client `i`, counting from 0, is `10.200.0.0 + i + 1`), each with
//! source ports counting up from 1024; connection `n` comes from client `n % clients`. Without
//! `hold`, each connection is bound to its destination as an active connection and released
//! before the next one arrives, so load-aware schedulers (lc, wlc, sed, nq...) see idle
//! servers every time; with `hold` every connection stays bound as active, so their counts
//! grow and steer the picks. Persistence templates are not simulated (that is the connection
//! table's job). Each scheduled connection is also counted in the service's and the
//! destination's `Conns` counter.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::dest::ConnClass;
use crate::sched::FlowKey;
use crate::service::{AddrFamily, Protocol, ServiceKey, ServiceTable};
use crate::time::Time;

use super::ruleset::{BatchError, RuleSet};

/// Knobs of a simulation run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimOptions {
    /// New connections per service.
    pub conns: usize,
    /// Distinct client addresses (at least 1).
    pub clients: u32,
    /// Keep every connection bound (active) instead of ending it before the next.
    pub hold: bool,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            conns: 10,
            clients: 1,
            hold: false,
        }
    }
}

/// One scheduled connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pick {
    /// Client address.
    pub client: IpAddr,
    /// Client port.
    pub client_port: u16,
    /// The chosen destination, `None` when no destination was eligible.
    pub dest: Option<(IpAddr, u16)>,
}

/// The run of one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRun {
    /// The service.
    pub key: ServiceKey,
    /// Its scheduler's name.
    pub scheduler: &'static str,
    /// Every connection in arrival order.
    pub picks: Vec<Pick>,
    /// Connections per destination, in the service's destination (kernel list) order.
    pub totals: Vec<((IpAddr, u16), usize)>,
}

/// The result of [`simulate`]; `Display` prints the example's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Simulation {
    /// One run per service, in configuration order.
    pub services: Vec<ServiceRun>,
}

fn addr_port(addr: &IpAddr, port: u16) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

fn service_text(key: &ServiceKey) -> String {
    match key {
        ServiceKey::Addr { proto, addr, port } => format!("{} {}", proto.name(), addr_port(addr, *port)),
        ServiceKey::Fwmark { mark, family } => match family {
            AddrFamily::Inet => format!("FWM {mark}"),
            AddrFamily::Inet6 => format!("FWM {mark} IPv6"),
        },
    }
}

impl fmt::Display for Simulation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for run in &self.services {
            writeln!(f, "service {} {}", service_text(&run.key), run.scheduler)?;
            for p in &run.picks {
                let dest = match p.dest {
                    Some((a, port)) => addr_port(&a, port),
                    None => "none".to_string(),
                };
                writeln!(f, "{} -> {dest}", addr_port(&p.client, p.client_port))?;
            }
            for ((a, port), n) in &run.totals {
                writeln!(f, "total {} {n}", addr_port(a, *port))?;
            }
        }
        Ok(())
    }
}

/// Client number `i` (from 0): `10.200.0.0 + i + 1`.
fn client_addr(i: u32, family: AddrFamily) -> IpAddr {
    let v4 = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 200, 0, 0)).wrapping_add(i + 1));
    match family {
        AddrFamily::Inet => IpAddr::V4(v4),
        // IPv6 services get the same clients, IPv4-mapped into a documentation prefix.
        AddrFamily::Inet6 => {
            let base = u128::from("2001:db8:c8::".parse::<Ipv6Addr>().expect("literal"));
            IpAddr::V6(Ipv6Addr::from(base | u128::from(u32::from(v4))))
        }
    }
}

/// Loads `rules` (ipvsadm-save format or any ipvsadm command lines), publishes them into a
/// fresh [`ServiceTable`] and schedules `opts.conns` connections per service.
pub fn simulate(rules: &str, opts: &SimOptions) -> Result<Simulation, BatchError> {
    let mut set = RuleSet::new();
    set.apply_batch(rules)?;
    let table = ServiceTable::new();
    let published = table.publish(&set.services);
    let clients = opts.clients.max(1);
    let writer = crate::stats::StatsWriter::new();
    let mut runs = Vec::new();
    for svc in published.services() {
        let key = svc.config.key;
        let family = key.family();
        let (proto, dst, dst_port) = match key {
            ServiceKey::Addr { proto, addr, port } => (proto, addr, port),
            ServiceKey::Fwmark { family, .. } => (
                Protocol::Tcp,
                match family {
                    AddrFamily::Inet => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                    AddrFamily::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                },
                0,
            ),
        };
        let mut counts = vec![0usize; svc.dests.len()];
        let mut picks = Vec::with_capacity(opts.conns);
        for n in 0..opts.conns {
            let c = (n % clients as usize) as u32;
            let client = client_addr(c, family);
            let client_port = (1024 + n / clients as usize) as u16;
            let flow = FlowKey {
                proto,
                src: client,
                src_port: client_port,
                dst,
                dst_port,
            };
            let now = Time::from_millis(n as u64);
            let dest = svc.schedule(&flow, now).map(|d| {
                d.state.bind(ConnClass::Active);
                d.state.stats.add_conn(&writer);
                svc.stats.add_conn(&writer);
                if !opts.hold {
                    d.state.unbind(ConnClass::Active);
                }
                (d.config.addr, d.config.port)
            });
            if let Some((a, p)) = dest
                && let Some(i) = svc.config.dest_index(a, p)
            {
                counts[i] += 1;
            }
            picks.push(Pick {
                client,
                client_port,
                dest,
            });
        }
        let totals = svc
            .dests
            .iter()
            .zip(counts)
            .map(|(d, n)| ((d.config.addr, d.config.port), n))
            .collect();
        runs.push(ServiceRun {
            key,
            scheduler: svc.config.scheduler.name(),
            picks,
            totals,
        });
    }
    Ok(Simulation { services: runs })
}
