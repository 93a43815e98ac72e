//! ipvsadm 1.31's listings, byte for byte: `-L -n` (and its `--stats`, `--rate`,
//! `--thresholds`, `--persistent-conn`, `--exact` variants, and `-L` of one service), `-S -n`
//! save format and `-L --timeout`. The `-L -c` connection listing is [`crate::conn::listing`].
//!
//! Printers take plain [`ServiceView`]s, built from a live [`ServiceSet`] (counters and rates
//! included) or from bare configuration. Addresses are always printed numerically.

use std::cmp::Ordering;
use std::fmt::Write;
use std::net::IpAddr;

use crate::dest::ForwardMethod;
use crate::sched::SchedulerKind;
use crate::service::{
    AddrFamily, PersistNetmask, Persistence, Protocol, SchedFlags, ServiceConfig, ServiceKey, ServiceSet,
    VirtualService,
};
use crate::stats::{Rates, StatsSnapshot};

use super::parse::{ListOptions, Timeouts};
use super::ruleset::RuleError;

/// Default connection-table size shown in the `-L` header ("size=4096").
pub const DEFAULT_TABLE_SIZE: u32 = 4096;

/// One destination as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestView {
    /// Real server address.
    pub addr: IpAddr,
    /// Real server port.
    pub port: u16,
    /// Forwarding method.
    pub method: ForwardMethod,
    /// Configured weight.
    pub weight: u32,
    /// Upper connection threshold.
    pub upper_threshold: u32,
    /// Lower connection threshold.
    pub lower_threshold: u32,
    /// Active connections.
    pub active_conns: u32,
    /// Inactive connections.
    pub inactive_conns: u32,
    /// Persistence templates.
    pub persistent_conns: u32,
    /// Traffic counters.
    pub stats: StatsSnapshot,
    /// Rate estimate.
    pub rates: Rates,
}

/// One virtual service as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceView {
    /// Protocol + VIP + port, or firewall mark.
    pub key: ServiceKey,
    /// Scheduler.
    pub scheduler: SchedulerKind,
    /// Scheduler flags.
    pub sched_flags: SchedFlags,
    /// Persistence, if any.
    pub persistence: Option<Persistence>,
    /// One-packet scheduling.
    pub one_packet: bool,
    /// Traffic counters.
    pub stats: StatsSnapshot,
    /// Rate estimate.
    pub rates: Rates,
    /// Destinations in kernel list order (printers sort them unless told not to).
    pub dests: Vec<DestView>,
}

impl ServiceView {
    /// A view of bare configuration: all counters zero.
    pub fn from_config(cfg: &ServiceConfig) -> ServiceView {
        ServiceView {
            key: cfg.key,
            scheduler: cfg.scheduler,
            sched_flags: cfg.sched_flags,
            persistence: cfg.persistence,
            one_packet: cfg.one_packet,
            stats: StatsSnapshot::default(),
            rates: Rates::default(),
            dests: cfg
                .dests
                .iter()
                .map(|d| DestView {
                    addr: d.addr,
                    port: d.port,
                    method: d.method,
                    weight: d.weight,
                    upper_threshold: d.upper_threshold,
                    lower_threshold: d.lower_threshold,
                    active_conns: 0,
                    inactive_conns: 0,
                    persistent_conns: 0,
                    stats: StatsSnapshot::default(),
                    rates: Rates::default(),
                })
                .collect(),
        }
    }

    /// A view of a live service: connection counts, counters and rates read now.
    pub fn from_service(svc: &VirtualService) -> ServiceView {
        let mut v = ServiceView::from_config(&svc.config);
        v.stats = svc.stats.snapshot();
        v.rates = svc.stats.rates();
        for (dv, d) in v.dests.iter_mut().zip(&svc.dests) {
            dv.active_conns = d.state.active_conns();
            dv.inactive_conns = d.state.inactive_conns();
            dv.persistent_conns = d.state.persistent_conns();
            dv.stats = d.state.stats.snapshot();
            dv.rates = d.state.stats.rates();
        }
        v
    }
}

/// Views of every service of a published set, in configuration order.
pub fn views(set: &ServiceSet) -> Vec<ServiceView> {
    set.services()
        .iter()
        .map(|s| ServiceView::from_service(s))
        .collect()
}

/// Views of bare configurations (e.g. a [`super::RuleSet`]'s services).
pub fn config_views(configs: &[ServiceConfig]) -> Vec<ServiceView> {
    configs.iter().map(ServiceView::from_config).collect()
}

// --- sorting: libipvs's comparators, C integer semantics included ---------------------------

/// `a - b` of two `__u32`s stored in an `int`, as C does it (wrapping).
fn c_diff(a: u32, b: u32) -> i32 {
    a.wrapping_sub(b) as i32
}

fn words(addr: &IpAddr) -> [u32; 4] {
    match addr {
        // union nf_inet_addr: an IPv4 address is the first 32-bit word, the rest zero.
        IpAddr::V4(a) => [u32::from(*a), 0, 0, 0],
        IpAddr::V6(a) => {
            let o = a.octets();
            std::array::from_fn(|i| u32::from_be_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]]))
        }
    }
}

/// libipvs `ipvs_cmp_dests`: address (per 32-bit word for IPv6), then port.
fn cmp_dests(d1: &DestView, d2: &DestView) -> i32 {
    let (w1, w2) = (words(&d1.addr), words(&d2.addr));
    let mut r = 0;
    if d1.addr.is_ipv6() {
        for i in 0..4 {
            r = c_diff(w1[i], w2[i]);
            if r != 0 {
                break;
            }
        }
    } else {
        r = c_diff(w1[0], w2[0]);
    }
    if r != 0 {
        return r;
    }
    d1.port as i32 - d2.port as i32
}

fn af_number(f: AddrFamily) -> i32 {
    match f {
        AddrFamily::Inet => 2,   // AF_INET
        AddrFamily::Inet6 => 10, // AF_INET6
    }
}

/// libipvs `ipvs_cmp_services`: fwmark, family, protocol, address, port.
fn cmp_services(s1: &ServiceView, s2: &ServiceView) -> i32 {
    let parts = |s: &ServiceView| match s.key {
        // ipvsadm gives fwmark services protocol TCP and a zero address.
        ServiceKey::Fwmark { mark, family } => (mark, family, Protocol::Tcp.number(), [0u32; 4], 0u16),
        ServiceKey::Addr { proto, addr, port } => {
            (0, AddrFamily::of(&addr), proto.number(), words(&addr), port)
        }
    };
    let (m1, f1, p1, a1, port1) = parts(s1);
    let (m2, f2, p2, a2, port2) = parts(s2);
    let mut r = c_diff(m1, m2);
    if r != 0 {
        return r;
    }
    r = af_number(f1) - af_number(f2);
    if r != 0 {
        return r;
    }
    r = p1 as i32 - p2 as i32;
    if r != 0 {
        return r;
    }
    if f1 == AddrFamily::Inet6 {
        for i in 0..4 {
            r = c_diff(a1[i], a2[i]);
            if r != 0 {
                break;
            }
        }
    } else {
        r = c_diff(a1[0], a2[0]);
    }
    if r != 0 {
        return r;
    }
    port1 as i32 - port2 as i32
}

/// glibc's merge-sort `qsort` (msort) with a C comparator. The libipvs comparators subtract
/// unsigned values into an `int`, which is not a total order for far-apart addresses; a
/// hand-written merge sort reproduces glibc's answer there where `slice::sort_by` may panic.
fn c_sort<T: Clone>(v: &mut [T], cmp: &impl Fn(&T, &T) -> i32) {
    let n = v.len();
    if n <= 1 {
        return;
    }
    let n1 = n / 2;
    c_sort(&mut v[..n1], cmp);
    c_sort(&mut v[n1..], cmp);
    let mut merged = Vec::with_capacity(n);
    let (mut i, mut j) = (0, n1);
    while i < n1 && j < n {
        if cmp(&v[i], &v[j]) <= 0 {
            merged.push(v[i].clone());
            i += 1;
        } else {
            merged.push(v[j].clone());
            j += 1;
        }
    }
    merged.extend_from_slice(&v[i..n1]);
    merged.extend_from_slice(&v[j..n]);
    v.clone_from_slice(&merged);
}

/// Sorts services (and each one's destinations) as ipvsadm does before printing.
pub fn sort_like_ipvsadm(services: &mut [ServiceView]) {
    c_sort(services, &cmp_services);
    for s in services.iter_mut() {
        c_sort(&mut s.dests, &cmp_dests);
    }
}

/// Orders two services as ipvsadm's sort compares them.
pub fn compare_services(a: &ServiceView, b: &ServiceView) -> Ordering {
    cmp_services(a, b).cmp(&0)
}

// --- formatting -----------------------------------------------------------------------------

/// `addrport_to_anyname` with FMT_NUMERIC: `a.b.c.d:port` or `[v6]:port`.
fn addr_port(addr: &IpAddr, port: u16) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

/// ipvsadm's `print_largenum`: `%9llu` below 100 million, then K/M/G/T with `%8llu`, or the
/// exact value at least 9 wide (one more than its length) with `--exact`.
fn largenum(out: &mut String, i: u64, exact: bool) {
    if exact {
        let len = i.to_string().len();
        let width = if len <= 8 { 9 } else { len + 1 };
        let _ = write!(out, "{i:>width$}");
        return;
    }
    let _ = if i < 100_000_000 {
        write!(out, "{i:>9}")
    } else if i < 1_000_000_000 {
        write!(out, "{:>8}K", i / 1000)
    } else if i < 100_000_000_000 {
        write!(out, "{:>8}M", i / 1_000_000)
    } else if i < 100_000_000_000_000 {
        write!(out, "{:>8}G", i / 1_000_000_000)
    } else {
        write!(out, "{:>8}T", i / 1_000_000_000_000)
    };
}

/// ipvsadm's `print_sched_flags`: names depend on the scheduler.
fn sched_flags_text(s: &ServiceView) -> String {
    let f = s.sched_flags;
    let mut names: Vec<&str> = Vec::new();
    match s.scheduler {
        SchedulerKind::Sh | SchedulerKind::Mh => {
            let sh = s.scheduler == SchedulerKind::Sh;
            if f.contains(SchedFlags::FLAG1) {
                names.push(if sh { "sh-fallback" } else { "mh-fallback" });
            }
            if f.contains(SchedFlags::FLAG2) {
                names.push(if sh { "sh-port" } else { "mh-port" });
            }
        }
        _ => {
            for (bit, name) in [
                (SchedFlags::FLAG1, "flag-1"),
                (SchedFlags::FLAG2, "flag-2"),
                (SchedFlags::FLAG3, "flag-3"),
            ] {
                if f.contains(bit) {
                    names.push(name);
                }
            }
        }
    }
    names.join(",")
}

fn any_sched_flag(f: SchedFlags) -> bool {
    f.0 & (SchedFlags::FLAG1.0 | SchedFlags::FLAG2.0 | SchedFlags::FLAG3.0) != 0
}

fn truncate(mut s: String, at: usize) -> String {
    if s.len() > at {
        s.truncate(at);
    }
    s
}

/// The service name as `print_service_entry` builds it, for rules or for listings.
fn service_name(s: &ServiceView, rule: bool) -> String {
    match s.key {
        ServiceKey::Fwmark { mark, family } => match (rule, family) {
            (true, AddrFamily::Inet6) => format!("-f {mark} -6"),
            (true, AddrFamily::Inet) => format!("-f {mark}"),
            (false, AddrFamily::Inet6) => format!("FWM  {mark} IPv6"),
            (false, AddrFamily::Inet) => format!("FWM  {mark}"),
        },
        ServiceKey::Addr { proto, addr, port } => {
            let vname = addr_port(&addr, port);
            if rule {
                let stype = match proto {
                    Protocol::Tcp => "-t",
                    Protocol::Udp => "-u",
                    Protocol::Sctp => "--sctp-service",
                };
                format!("{stype} {vname}")
            } else {
                let name = format!("{:<4} {vname}", proto.name());
                if addr.is_ipv6() { name } else { truncate(name, 33) }
            }
        }
    }
}

/// The `-M` value as printed: dotted mask for IPv4 services, prefix length for IPv6; `None`
/// for the default (/32 or /128), which ipvsadm omits.
fn netmask_text(s: &ServiceView, p: &Persistence) -> Option<String> {
    match (s.key.family(), p.netmask) {
        (AddrFamily::Inet, PersistNetmask::V4(m)) if m != std::net::Ipv4Addr::BROADCAST => {
            Some(m.to_string())
        }
        (AddrFamily::Inet6, PersistNetmask::V6(l)) if l != 128 => Some(l.to_string()),
        _ => None,
    }
}

/// ipvsadm's `print_title` for these options (nothing for the save format).
fn title(out: &mut String, o: &ListOptions) {
    if o.stats {
        // printf("%-33s %8s %8s %8s %8s %8s\n  -> RemoteAddress:Port\n", ...)
        let _ = writeln!(
            out,
            "{:<33} {:>8} {:>8} {:>8} {:>8} {:>8}\n  -> RemoteAddress:Port",
            "Prot LocalAddress:Port", "Conns", "InPkts", "OutPkts", "InBytes", "OutBytes"
        );
    } else if o.rate {
        let _ = writeln!(
            out,
            "{:<33} {:>8} {:>8} {:>8} {:>8} {:>8}\n  -> RemoteAddress:Port",
            "Prot LocalAddress:Port", "CPS", "InPPS", "OutPPS", "InBPS", "OutBPS"
        );
    } else if o.thresholds {
        // printf("%-33s %-10s %-10s %-10s %-10s\n  -> RemoteAddress:Port\n", ...)
        let _ = writeln!(
            out,
            "{:<33} {:<10} {:<10} {:<10} {:<10}\n  -> RemoteAddress:Port",
            "Prot LocalAddress:Port", "Uthreshold", "Lthreshold", "ActiveConn", "InActConn"
        );
    } else if o.persistent_conn {
        // printf("%-33s %-9s %-11s %-10s %-10s\n  -> RemoteAddress:Port\n", ...)
        let _ = writeln!(
            out,
            "{:<33} {:<9} {:<11} {:<10} {:<10}\n  -> RemoteAddress:Port",
            "Prot LocalAddress:Port", "Weight", "PersistConn", "ActiveConn", "InActConn"
        );
    } else {
        out.push_str("Prot LocalAddress:Port Scheduler Flags\n");
        out.push_str("  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n");
    }
}

/// ipvsadm's `print_service_entry` in save (FMT_RULE) form.
fn save_entry(out: &mut String, s: &ServiceView) {
    let svc = service_name(s, true);
    // printf("-A %s -s %s", svc_name, se->sched_name)
    let _ = write!(out, "-A {svc} -s {}", s.scheduler.name());
    if let Some(p) = &s.persistence {
        let _ = write!(out, " -p {}", p.timeout_secs);
        if let Some(m) = netmask_text(s, p) {
            let _ = write!(out, " -M {m}");
        }
    }
    if s.one_packet {
        out.push_str(" -o");
    }
    if any_sched_flag(s.sched_flags) {
        let _ = write!(out, " -b {}", sched_flags_text(s));
    }
    out.push('\n');
    for d in &s.dests {
        // printf("-a %s -r %s %s -w %d\n", ...); tunnels via print_tunnel_rule, whose default
        // (IPIP) form appends "--tun-type ipip".
        let _ = write!(
            out,
            "-a {svc} -r {} {} -w {}",
            addr_port(&d.addr, d.port),
            d.method.save_flag(),
            d.weight
        );
        if d.method == ForwardMethod::Tunnel {
            out.push_str(" --tun-type ipip");
        }
        out.push('\n');
    }
}

/// ipvsadm's `print_service_entry` in listing form.
fn list_entry(out: &mut String, s: &ServiceView, o: &ListOptions) {
    let svc = service_name(s, false);
    if o.stats {
        let _ = write!(out, "{svc:<33}");
        for v in [
            s.stats.conns,
            s.stats.inpkts,
            s.stats.outpkts,
            s.stats.inbytes,
            s.stats.outbytes,
        ] {
            largenum(out, v, o.exact);
        }
    } else if o.rate {
        let _ = write!(out, "{svc:<33}");
        for v in [
            s.rates.cps,
            s.rates.inpps,
            s.rates.outpps,
            s.rates.inbps,
            s.rates.outbps,
        ] {
            largenum(out, v, o.exact);
        }
    } else {
        // printf("%s %s", svc_name, se->sched_name), then " (flags)", " persistent %u",
        // " mask %s", " ops".
        let _ = write!(out, "{svc} {}", s.scheduler.name());
        if any_sched_flag(s.sched_flags) {
            let _ = write!(out, " ({})", sched_flags_text(s));
        }
        if let Some(p) = &s.persistence {
            let _ = write!(out, " persistent {}", p.timeout_secs);
            if let Some(m) = netmask_text(s, p) {
                let _ = write!(out, " mask {m}");
            }
        }
        if s.one_packet {
            out.push_str(" ops");
        }
    }
    out.push('\n');
    for d in &s.dests {
        let dname = addr_port(&d.addr, d.port);
        let dname = if d.addr.is_ipv6() {
            dname
        } else {
            truncate(dname, 28)
        };
        if o.stats {
            let _ = write!(out, "  -> {dname:<28}");
            for v in [
                d.stats.conns,
                d.stats.inpkts,
                d.stats.outpkts,
                d.stats.inbytes,
                d.stats.outbytes,
            ] {
                largenum(out, v, o.exact);
            }
            out.push('\n');
        } else if o.rate {
            // printf("  -> %-28s %8llu %8llu %8llu", ...) then print_largenum for the byte rates.
            let r = &d.rates;
            let _ = write!(
                out,
                "  -> {dname:<28} {:>8} {:>8} {:>8}",
                r.cps, r.inpps, r.outpps
            );
            largenum(out, r.inbps, o.exact);
            largenum(out, r.outbps, o.exact);
            out.push('\n');
        } else if o.thresholds {
            // printf("  -> %-28s %-10u %-10u %-10u %-10u\n", ...)
            let _ = writeln!(
                out,
                "  -> {dname:<28} {:<10} {:<10} {:<10} {:<10}",
                d.upper_threshold, d.lower_threshold, d.active_conns, d.inactive_conns
            );
        } else if o.persistent_conn {
            // printf("  -> %-28s %-9u %-11u %-10u %-10u\n", ...)
            let _ = writeln!(
                out,
                "  -> {dname:<28} {:<9} {:<11} {:<10} {:<10}",
                d.weight, d.persistent_conns, d.active_conns, d.inactive_conns
            );
        } else {
            // printf("  -> %-28s %-7s %-6d %-10u %-10u\n", ...)
            let _ = writeln!(
                out,
                "  -> {dname:<28} {:<7} {:<6} {:<10} {:<10}",
                d.method.listing_name(),
                d.weight,
                d.active_conns,
                d.inactive_conns
            );
        }
    }
}

/// `ipvsadm -S -n`: every service sorted as ipvsadm sorts, then its sorted destinations.
pub fn format_save(services: &[ServiceView]) -> String {
    let mut sorted = services.to_vec();
    sort_like_ipvsadm(&mut sorted);
    let mut out = String::new();
    for s in &sorted {
        save_entry(&mut out, s);
    }
    out
}

/// `ipvsadm -L -n [...]`: the version header with the connection table `size`, the title and
/// every service (sorted unless `--nosort`); with `opts.service`, `list_service`'s form (no
/// header, that service only, "No such service" if it is missing).
pub fn format_list(services: &[ServiceView], opts: &ListOptions, size: u32) -> Result<String, RuleError> {
    let mut out = String::new();
    if let Some(key) = &opts.service {
        let mut one = services
            .iter()
            .find(|s| s.key == *key)
            .cloned()
            .ok_or(RuleError::NoSuchService)?;
        if !opts.nosort {
            c_sort(&mut one.dests, &cmp_dests);
        }
        title(&mut out, opts);
        list_entry(&mut out, &one, opts);
        return Ok(out);
    }
    let _ = writeln!(out, "IP Virtual Server version 1.2.1 (size={size})");
    let mut list = services.to_vec();
    if !opts.nosort {
        sort_like_ipvsadm(&mut list);
    }
    title(&mut out, opts);
    for s in &list {
        list_entry(&mut out, s, opts);
    }
    Ok(out)
}

/// `ipvsadm -L --timeout`.
pub fn format_timeouts(t: &Timeouts) -> String {
    format!("Timeout (tcp tcpfin udp): {} {} {}\n", t.tcp, t.tcp_fin, t.udp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn largenum_widths_and_units() {
        let f = |i, exact| {
            let mut s = String::new();
            largenum(&mut s, i, exact);
            s
        };
        assert_eq!(f(0, false), "        0");
        assert_eq!(f(99_999_999, false), " 99999999");
        assert_eq!(f(100_000_000, false), "  100000K");
        assert_eq!(f(1_234_567_890, false), "    1234M");
        assert_eq!(f(100_000_000_000, false), "     100G");
        assert_eq!(f(100_000_000_000_000, false), "     100T");
        assert_eq!(f(12_345, true), "    12345");
        assert_eq!(f(1_234_567_890, true), " 1234567890");
    }

    #[test]
    fn service_compare_wraps_like_c() {
        // 10.0.0.1 - 192.168.0.1 as unsigned, stored in an int, is positive: ipvsadm sorts
        // 192.168.0.1 before 10.0.0.1.
        let v = |a: [u8; 4]| {
            ServiceView::from_config(&ServiceConfig::new(ServiceKey::Addr {
                proto: Protocol::Tcp,
                addr: IpAddr::from(a),
                port: 80,
            }))
        };
        assert_eq!(
            compare_services(&v([10, 0, 0, 1]), &v([192, 168, 0, 1])),
            Ordering::Greater
        );
        assert_eq!(
            compare_services(&v([10, 0, 0, 1]), &v([10, 0, 0, 2])),
            Ordering::Less
        );
    }
}
