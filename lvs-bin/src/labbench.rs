//! `lvs labbench`: the lab speed benchmark. For each variant it builds a fresh NAT lab (client,
//! director, two real servers running `lvs loadgen sink`), sets the director up, and measures
//! from the client namespace new TCP connections per second and small UDP packets per second
//! (counted where they arrive, at the real servers):
//! - `routing`: the director's kernel routes (ip_forward=1), the client talks to the real
//!   servers' addresses directly (no balancing at all: the ceiling of the kernel path);
//! - `nft`: the kernel's L4 balancer peer: nftables DNAT of the VIP with `numgen inc mod 2`;
//! - `lvs-afpacket`, `lvs-afxdp`: `lvs run` NAT (rr) on each backend; a variant may add its
//!   own `lvs run` arguments after a `:` (`lvs-afxdp:--poll-spin-us=0:--xdp-mode=generic`),
//!   so tunings are compared in one invocation, round after round;
//! - `lvs-afpacket-v3`: `lvs-afpacket` on the TPACKET_V3 receive ring
//!   (`--afpacket-ring=v3`; the plain variant runs the default V2 ring);
//! - `afxdp-floor`: `lvs xdp-floor`, a stateless NAT forwarder on lvs's XDP program, AF_XDP
//!   sockets and worker loop with none of lvs's logic ([`crate::floor`]): what the AF_XDP path
//!   itself costs, the best any userspace balancer on it could do. Not in the default list.
//!
//! Run (root, release build): `cargo build --release -p lvs-bin && sudo target/release/lvs
//! labbench --seconds 3`. Every run is bounded in time; the lab is removed afterwards.

use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::lab::{self, Lab, LabMethod};

/// TCP port of the sinks (and of the VIP service).
pub const TCP_PORT: u16 = 8080;
/// UDP port of the sinks (and of the VIP service).
pub const UDP_PORT: u16 = 9000;

/// How the lab's multi-queue veths choose a TX queue, which is the peer's RX queue (and so
/// which lvs worker gets a frame).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum QueueSteering {
    /// XPS: TX queue i belongs to CPU i, so a frame stays on the queue of the CPU that sent
    /// or forwarded it (the lab's stand-in for a NIC spreading flows over its queues).
    #[default]
    Cpu,
    /// The kernel's default pick (a bridged frame keeps the queue it came in on: every TCP
    /// connection of the lab lands on queue 0).
    Hash,
}

/// Benchmark parameters.
#[derive(Debug, Clone)]
pub struct BenchOpts {
    /// Seconds per measurement.
    pub seconds: f64,
    /// Parallel connecting threads of the TCP generator.
    pub conns_parallel: usize,
    /// UDP flows (client sockets).
    pub flows: usize,
    /// UDP payload size.
    pub size: usize,
    /// Variants to run, in order.
    pub variants: Vec<String>,
    /// `lvs run` workers.
    pub workers: usize,
    /// Spread receive processing over every CPU with RPS on every lab interface.
    pub rps: bool,
    /// UDP sending threads.
    pub udp_threads: usize,
    /// RX/TX queues per lab veth.
    pub queues: u32,
    /// How the lab's multi-queue interfaces pick a TX queue (and so the receiver's RX queue).
    pub steer: QueueSteering,
    /// Runs per variant (the best is kept: the machine is shared and noisy).
    pub repeat: usize,
    /// Extra arguments for `lvs run` (e.g. `--xdp-mode generic`).
    pub lvs_args: Vec<String>,
}

/// One variant's figures.
#[derive(Debug, Clone, Default)]
pub struct BenchRow {
    /// Variant name.
    pub variant: String,
    /// Completed connections per second.
    pub conn_rate: f64,
    /// Failed connections.
    pub conn_failed: u64,
    /// SYN retransmissions seen by the client.
    pub syn_retrans: u64,
    /// UDP datagrams per second that arrived at the servers.
    pub pps: f64,
    /// UDP datagrams per second the client sent.
    pub sent_pps: f64,
    /// 1-minute load average before the variant ran.
    pub load: String,
    /// lvs's packet counters after the run (lvs variants).
    pub lvs_stats: String,
    /// UDP datagrams the servers' kernels dropped for a full socket buffer (Udp RcvbufErrors).
    pub rcvbuf_lost: u64,
    /// Non-zero drop/XDP counters of the director's eth0 (`ethtool -S`).
    pub director_drops: String,
    /// Frames the director's eth0 received per RX queue during the TCP phase (XDP counters;
    /// empty without an XDP program): shows whether connections spread over the workers.
    pub tcp_queue_spread: Vec<u64>,
    /// CPU time the whole machine spent per completed connection during the TCP phase, in µs
    /// (busy share of every CPU × wall time ÷ connections; anything else running counts too).
    pub cpu_per_conn_us: f64,
    /// CPU time the whole machine spent per datagram received during the UDP phase, in µs.
    pub cpu_per_pkt_us: f64,
    /// Every round's (conn/s, pps), in round order (the fields above keep the best).
    pub rounds: Vec<(f64, f64)>,
}

/// Busy and total time of all CPUs together, in ticks, from the first line of `/proc/stat`.
/// Busy is user, system, irq and softirq; total adds nice, idle, iowait and steal. User time
/// at a positive nice level is left out of busy on purpose: a background build at `nice 15`
/// then barely disturbs the figure (run the benchmark itself at nice <= 0); steal is time
/// the hypervisor gave to others, neither ours nor idle.
fn cpu_ticks(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|t| t.parse().ok())
        .collect::<Option<_>>()?;
    let [user, nice, system, idle, iowait, irq, softirq, steal] = v[..] else {
        return None;
    };
    let busy = user + system + irq + softirq;
    Some((busy, busy + nice + idle + iowait + steal))
}

/// Measures the busy CPU time (seconds, all CPUs together) that `f` takes on this machine.
fn busy_cpu_seconds<T>(f: impl FnOnce() -> io::Result<T>) -> io::Result<(T, f64)> {
    let read = || {
        std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| cpu_ticks(&s))
    };
    let (s0, t0) = (read(), Instant::now());
    let out = f()?;
    let wall = t0.elapsed().as_secs_f64();
    let busy = match (s0, read()) {
        (Some((b0, n0)), Some((b1, n1))) if n1 > n0 => {
            (b1 - b0) as f64 / (n1 - n0) as f64 * wall * num_cpus() as f64
        }
        _ => 0.0,
    };
    Ok((out, busy))
}

fn load_avg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_default()
}

fn stdout_of(lab: &Lab, ns: &str, args: &[&str]) -> io::Result<String> {
    Ok(String::from_utf8_lossy(&lab.exec(ns, args)?.stdout).into_owned())
}

/// `key=value` from a generator's output line.
fn field(out: &str, key: &str) -> f64 {
    out.split_whitespace()
        .find_map(|t| t.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// The backend of an lvs variant and its own extra `lvs run` arguments: `lvs-afxdp`, or
/// `lvs-afxdp:--poll-spin-us=0:--xdp-mode=generic` (arguments after the backend, separated
/// by `:`) so tunings can be compared in one run. `lvs-afpacket-v3` is `lvs-afpacket` with
/// `--afpacket-ring=v3` first.
fn lvs_variant(v: &str) -> Option<(&str, impl Iterator<Item = &str>)> {
    let mut parts = v.split(':');
    let (backend, preset) = match parts.next()? {
        "lvs-afpacket" => ("afpacket", None),
        "lvs-afpacket-v3" => ("afpacket", Some("--afpacket-ring=v3")),
        "lvs-afxdp" => ("afxdp", None),
        _ => return None,
    };
    Some((backend, preset.into_iter().chain(parts.filter(|a| !a.is_empty()))))
}

/// Runs one variant in a fresh lab.
pub fn run_variant(
    exe: &str,
    variant: &str,
    o: &BenchOpts,
    scratch: &std::path::Path,
) -> io::Result<BenchRow> {
    let mut lab = Lab::build_with_queues(LabMethod::Nat, 2, o.queues)?;
    let namespaces = lab.namespaces();
    // The switch namespace (last) only bridges: no iptables calls for bridged frames.
    if let Some(sw) = namespaces.last() {
        let _ = lab.exec(
            sw,
            &["sysctl", "-q", "-w", "net.bridge.bridge-nf-call-iptables=0"],
        );
    }
    if o.rps {
        let cpus = format!("{:x}", (1u64 << num_cpus().min(63)) - 1);
        // Every host's eth0 and every bridge port of the switch.
        for ns in &namespaces {
            let script = format!(
                "for q in /sys/class/net/*/queues/rx-0/rps_cpus; do case $q in */lo/*) ;; *) echo {cpus} > $q;; esac; done"
            );
            lab.exec(ns, &["sh", "-c", &script])?;
        }
    }
    if o.queues > 1 && o.steer == QueueSteering::Cpu {
        lab.steer_queues_by_cpu()?;
    }
    let load = load_avg();
    for ns in lab.servers.clone() {
        lab.spawn(
            &ns,
            exe,
            &[
                "loadgen",
                "sink",
                "--tcp",
                &format!("0.0.0.0:{TCP_PORT}"),
                "--udp",
                &format!("0.0.0.0:{UDP_PORT}"),
            ],
        )?;
    }
    let (client, director) = (lab.client.clone(), lab.director.clone());
    // Many source ports: no port is reused within a run.
    lab.exec(
        &client,
        &["sysctl", "-q", "-w", "net.ipv4.ip_local_port_range=1024 65000"],
    )?;
    let vip = lab::VIP.to_string();
    let rs: Vec<String> = (0..2).map(|i| lab::rs_ip(i).to_string()).collect();
    let mut lvs_pid = None;
    let targets: Vec<String> = match variant {
        "routing" => {
            lab.exec(&director, &["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])?;
            rs.clone()
        }
        "nft" => {
            lab.exec(&director, &["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])?;
            // The director's kernel must answer ARP for the VIP (the client's subnet).
            lab.exec(
                &director,
                &["ip", "addr", "add", &format!("{vip}/32"), "dev", "eth0"],
            )?;
            let map = format!("{{ 0 : {}, 1 : {} }}", rs[0], rs[1]);
            let ruleset = format!(
                "table ip lvsbench {{\n  chain pre {{\n    type nat hook prerouting priority dstnat; policy accept;\n    \
                 ip daddr {vip} tcp dport {TCP_PORT} dnat to numgen inc mod 2 map {map}\n    \
                 ip daddr {vip} udp dport {UDP_PORT} dnat to numgen inc mod 2 map {map}\n  }}\n}}\n"
            );
            let path = scratch.join("nft.rules");
            std::fs::write(&path, ruleset)?;
            lab.exec(&director, &["nft", "-f", &path.to_string_lossy()])?;
            vec![vip.clone()]
        }
        v if v.starts_with("lvs-afpacket") || v.starts_with("lvs-afxdp") => {
            let (backend, variant_args) =
                lvs_variant(v).ok_or_else(|| io::Error::other(format!("unknown variant {v:?}")))?;
            let variant_args: Vec<String> = variant_args.map(str::to_string).collect();
            let rules = scratch.join(format!("{variant}.rules"));
            let mut text = String::new();
            for (proto, port) in [("-t", TCP_PORT), ("-u", UDP_PORT)] {
                text.push_str(&format!("-A {proto} {vip}:{port} -s rr\n"));
                for r in &rs {
                    text.push_str(&format!("-a {proto} {vip}:{port} -r {r}:{port} -m\n"));
                }
            }
            std::fs::write(&rules, text)?;
            let socket = scratch.join(format!("{variant}.sock"));
            let (rules_s, socket_s) = (
                rules.to_string_lossy().into_owned(),
                socket.to_string_lossy().into_owned(),
            );
            let workers = o.workers.to_string();
            let _ = std::fs::remove_file(scratch.join(format!("{variant}.log")));
            let pid = lab.spawn_logged(
                &director,
                exe,
                &[
                    "run",
                    "--iface",
                    "eth0",
                    "--backend",
                    backend,
                    "--rules",
                    &rules_s,
                    "--socket",
                    &socket_s,
                    "--workers",
                    &workers,
                ]
                .into_iter()
                .chain(o.lvs_args.iter().map(String::as_str))
                .chain(variant_args.iter().map(String::as_str))
                .collect::<Vec<_>>(),
                &scratch.join(format!("{variant}.log")),
            )?;
            lvs_pid = Some(pid);
            // Wait (bounded) for the control socket to answer.
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                let up = std::process::Command::new(exe)
                    .args(["adm", "--socket", &socket_s, "-L", "-n"])
                    .output()
                    .is_ok_and(|o| o.status.success());
                if up {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(io::Error::other(format!("lvs run ({variant}) did not come up")));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            vec![vip.clone()]
        }
        "afxdp-floor" => {
            // lvs's AF_XDP path with none of lvs's logic (`lvs xdp-floor`): what the path
            // itself costs. It answers no ARP: the client gets the VIP's neighbour entry.
            let mac_of = |ns: &str| -> io::Result<String> {
                Ok(stdout_of(&lab, ns, &["cat", "/sys/class/net/eth0/address"])?
                    .trim()
                    .to_string())
            };
            let director_mac = mac_of(&director)?;
            lab.exec(
                &client,
                &[
                    "ip",
                    "neigh",
                    "replace",
                    &vip,
                    "lladdr",
                    &director_mac,
                    "dev",
                    "eth0",
                    "nud",
                    "permanent",
                ],
            )?;
            let mut args: Vec<String> = ["xdp-floor", "--iface", "eth0", "--vip", &vip]
                .into_iter()
                .map(String::from)
                .collect();
            args.extend(["--workers".into(), o.workers.to_string()]);
            for port in [TCP_PORT, UDP_PORT] {
                args.extend(["--port".into(), port.to_string()]);
            }
            for (ns, ip) in lab.servers.clone().iter().zip(&rs) {
                args.extend(["--server".into(), format!("{ip}={}", mac_of(ns)?)]);
            }
            let log = scratch.join(format!("{variant}.log"));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            lvs_pid = Some(lab.spawn_logged(&director, exe, &args, &log)?);
            // Up once the program is attached (bounded).
            let deadline = Instant::now() + Duration::from_secs(15);
            while !stdout_of(&lab, &director, &["ip", "link", "show", "dev", "eth0"])?.contains("xdp") {
                if Instant::now() >= deadline {
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    return Err(io::Error::other(format!("xdp-floor did not come up: {text}")));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            vec![vip.clone()]
        }
        other => return Err(io::Error::other(format!("unknown variant {other:?}"))),
    };
    let tcp_targets: Vec<String> = targets.iter().map(|t| format!("{t}:{TCP_PORT}")).collect();
    let udp_targets: Vec<String> = targets.iter().map(|t| format!("{t}:{UDP_PORT}")).collect();
    let gen_args = |kind: &str, secs: f64, list: &[String]| -> Vec<String> {
        let mut a = vec![
            "loadgen".to_string(),
            kind.to_string(),
            "--seconds".into(),
            secs.to_string(),
        ];
        for t in list {
            a.extend(["--target".to_string(), t.clone()]);
        }
        a
    };
    let run_gen = |extra: &[String], args: Vec<String>| -> io::Result<String> {
        let mut full: Vec<&str> = vec![exe];
        full.extend(args.iter().map(String::as_str));
        full.extend(extra.iter().map(String::as_str));
        stdout_of(&lab, &client, &full)
    };
    let par = vec!["--conns-parallel".to_string(), o.conns_parallel.to_string()];
    // Warm-up: neighbours resolved, first packets through, then the measured run.
    run_gen(&par, gen_args("tcp", 0.5, &tcp_targets))?;
    let q0 = rx_queue_packets(&lab, &director);
    let (tcp_out, tcp_cpu) = busy_cpu_seconds(|| run_gen(&par, gen_args("tcp", o.seconds, &tcp_targets)))?;
    let q1 = rx_queue_packets(&lab, &director);
    let tcp_queue_spread = q1
        .iter()
        .enumerate()
        .map(|(i, n)| n.saturating_sub(q0.get(i).copied().unwrap_or(0)))
        .collect();
    let udp_extra = vec![
        "--size".to_string(),
        o.size.to_string(),
        "--flows".to_string(),
        o.flows.to_string(),
        "--threads".to_string(),
        o.udp_threads.to_string(),
    ];
    let before: u64 = sink_total(&lab, exe)?;
    let rcvbuf0 = rcvbuf_errors(&lab);
    let (udp_out, udp_cpu) = busy_cpu_seconds(|| {
        let out = run_gen(&udp_extra, gen_args("udp", o.seconds, &udp_targets))?;
        // Let queued datagrams drain before counting.
        std::thread::sleep(Duration::from_millis(200));
        Ok(out)
    })?;
    let after: u64 = sink_total(&lab, exe)?;
    let rcvbuf_lost = rcvbuf_errors(&lab).saturating_sub(rcvbuf0);
    let director_drops = stdout_of(&lab, &director, &["ethtool", "-S", "eth0"])
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("drop") || l.contains("xdp"))
        .filter(|l| !l.trim_end().ends_with(" 0"))
        .map(|l| l.trim().replace(' ', ""))
        .collect::<Vec<_>>()
        .join(" ");
    let udp_secs = field(&udp_out, "seconds").max(1e-3);
    let mut lvs_stats = String::new();
    if let Some(pid) = lvs_pid {
        lab.terminate(pid, Duration::from_secs(10));
        // The daemon's last periodic line of frame counters.
        let log = std::fs::read_to_string(scratch.join(format!("{variant}.log"))).unwrap_or_default();
        for key in ["INFO frames ", "INFO stopped ("] {
            if let Some(l) = log.lines().rev().find(|l| l.contains(key)) {
                lvs_stats.push_str(&l[l.find(key).unwrap_or(0) + 5..]);
                lvs_stats.push_str("; ");
            }
        }
    }
    let per = |cpu: f64, n: f64| if n > 0.0 { cpu * 1e6 / n } else { 0.0 };
    Ok(BenchRow {
        cpu_per_conn_us: per(tcp_cpu, field(&tcp_out, "ok")),
        cpu_per_pkt_us: per(udp_cpu, after.saturating_sub(before) as f64),
        variant: variant.to_string(),
        conn_rate: field(&tcp_out, "ok") / field(&tcp_out, "seconds").max(1e-3),
        conn_failed: field(&tcp_out, "failed") as u64,
        syn_retrans: field(&tcp_out, "syn_retrans") as u64,
        pps: (after - before) as f64 / udp_secs,
        sent_pps: field(&udp_out, "sent") / udp_secs,
        load,
        lvs_stats,
        rcvbuf_lost,
        director_drops,
        tcp_queue_spread,
        rounds: Vec::new(),
    })
}

/// The director eth0's per-RX-queue XDP frame counters (`rx_queue_N_xdp_packets`), by queue.
fn rx_queue_packets(lab: &Lab, director: &str) -> Vec<u64> {
    rx_queue_counts(&stdout_of(lab, director, &["ethtool", "-S", "eth0"]).unwrap_or_default())
}

/// The `rx_queue_N_xdp_packets` values of `ethtool -S` output, by queue N.
fn rx_queue_counts(text: &str) -> Vec<u64> {
    let mut counts = Vec::new();
    for l in text.lines() {
        let Some((name, value)) = l.trim().split_once(':') else {
            continue;
        };
        let Some(q) = name
            .strip_prefix("rx_queue_")
            .and_then(|r| r.strip_suffix("_xdp_packets"))
            .and_then(|q| q.parse::<usize>().ok())
        else {
            continue;
        };
        if counts.len() <= q {
            counts.resize(q + 1, 0);
        }
        counts[q] = value.trim().parse().unwrap_or(0);
    }
    counts
}

/// Sum of the servers' Udp RcvbufErrors.
fn rcvbuf_errors(lab: &Lab) -> u64 {
    let mut total = 0;
    for ns in &lab.servers {
        let text = stdout_of(lab, ns, &["cat", "/proc/net/snmp"]).unwrap_or_default();
        let mut udp = text.lines().filter(|l| l.starts_with("Udp:"));
        if let (Some(names), Some(values)) = (udp.next(), udp.next())
            && let Some(i) = names.split_whitespace().position(|n| n == "RcvbufErrors")
        {
            total += values
                .split_whitespace()
                .nth(i)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    total
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

fn sink_total(lab: &Lab, exe: &str) -> io::Result<u64> {
    let mut total = 0;
    for ns in &lab.servers {
        let out = stdout_of(
            lab,
            ns,
            &[
                exe,
                "loadgen",
                "count",
                "--target",
                &format!("127.0.0.1:{UDP_PORT}"),
            ],
        )?;
        total += out
            .trim()
            .parse::<u64>()
            .map_err(|_| io::Error::other(format!("bad sink count {out:?}")))?;
    }
    Ok(total)
}

/// Runs every variant and prints the table with ratios.
pub fn run(o: &BenchOpts) -> io::Result<Vec<BenchRow>> {
    let exe = std::env::current_exe()?.to_string_lossy().into_owned();
    let scratch: PathBuf = std::env::temp_dir().join(format!("lvs-labbench-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let mut rows: Vec<BenchRow> = Vec::new();
    // Round after round over the variants, so slow phases of the shared machine hit them alike.
    for round in 0..o.repeat.clamp(1, 20) {
        for v in &o.variants {
            eprintln!("labbench: round {} {v} ...", round + 1);
            let mut r = match run_variant(&exe, v, o, &scratch) {
                Ok(r) => r,
                Err(e) => {
                    let _ = std::fs::remove_dir_all(&scratch);
                    return Err(io::Error::other(format!("{v}: {e}")));
                }
            };
            eprintln!(
                "  {v}: {:.0} conn/s ({} failed, {} SYN retransmits, {:.1} CPU µs each), {:.0} pps received of {:.0} sent ({:.2} CPU µs each), load {}",
                r.conn_rate,
                r.conn_failed,
                r.syn_retrans,
                r.cpu_per_conn_us,
                r.pps,
                r.sent_pps,
                r.cpu_per_pkt_us,
                r.load
            );
            eprintln!(
                "  UDP lost at the servers' full socket buffers: {}; director eth0: {}",
                r.rcvbuf_lost, r.director_drops
            );
            if !r.lvs_stats.is_empty() {
                eprintln!("  lvs: {}", r.lvs_stats);
            }
            if r.tcp_queue_spread.len() > 1 {
                eprintln!(
                    "  director eth0 frames per RX queue during the TCP phase: {:?}",
                    r.tcp_queue_spread
                );
            }
            r.rounds = vec![(r.conn_rate, r.pps)];
            match rows.iter_mut().find(|b| b.variant == *v) {
                None => rows.push(r),
                Some(best) => {
                    best.rounds.push((r.conn_rate, r.pps));
                    // Best of the rounds, per measure.
                    if r.conn_rate > best.conn_rate {
                        best.conn_rate = r.conn_rate;
                        best.conn_failed = r.conn_failed;
                        best.syn_retrans = r.syn_retrans;
                        best.cpu_per_conn_us = r.cpu_per_conn_us;
                    }
                    if r.pps > best.pps {
                        best.pps = r.pps;
                        best.sent_pps = r.sent_pps;
                        best.cpu_per_pkt_us = r.cpu_per_pkt_us;
                    }
                    best.load = format!("{} {}", best.load, r.load);
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
    print!("{}", table(&rows, o));
    Ok(rows)
}

/// The result table: rates per variant and lvs's ratios to nft and to routing.
pub fn table(rows: &[BenchRow], o: &BenchOpts) -> String {
    let mut s = format!(
        "lab benchmark: best of {} x {:.1} s per measure, {} connecting threads, {} UDP flows of {} bytes from {} threads, lvs workers {}, {} queue(s) per veth{}, RPS {}\n",
        o.repeat,
        o.seconds,
        o.conns_parallel,
        o.flows,
        o.size,
        o.udp_threads,
        o.workers,
        o.queues,
        match (o.queues > 1, o.steer) {
            (false, _) => "",
            (true, QueueSteering::Cpu) => " (XPS: TX queue i = CPU i)",
            (true, QueueSteering::Hash) => " (kernel's TX queue pick)",
        },
        if o.rps { "on" } else { "off" }
    );
    let w = rows.iter().map(|r| r.variant.len()).max().unwrap_or(0).max(14);
    s.push_str(&format!(
        "{:<w$} {:>10} {:>8} {:>8} {:>11} {:>11} {:>9} {:>8}  {}\n",
        "variant", "conn/s", "failed", "synretx", "pps(recv)", "pps(sent)", "µs/conn", "µs/pkt", "load"
    ));
    for r in rows {
        s.push_str(&format!(
            "{:<w$} {:>10.0} {:>8} {:>8} {:>11.0} {:>11.0} {:>9.1} {:>8.2}  {}\n",
            r.variant,
            r.conn_rate,
            r.conn_failed,
            r.syn_retrans,
            r.pps,
            r.sent_pps,
            r.cpu_per_conn_us,
            r.cpu_per_pkt_us,
            r.load
        ));
    }
    s.push_str("(µs/conn, µs/pkt: busy CPU time of the whole machine per completed connection / received datagram)\n");
    let find = |n: &str| rows.iter().find(|r| r.variant == n);
    for lvs in rows
        .iter()
        .filter(|r| r.variant != "nft" && r.variant != "routing")
    {
        for peer in ["nft", "routing"] {
            if let Some(p) = find(peer) {
                let cost = |a: f64, b: f64| {
                    if a > 0.0 && b > 0.0 {
                        format!("{:.2}", a / b)
                    } else {
                        "-".to_string()
                    }
                };
                s.push_str(&format!(
                    "{}/{peer}: conn/s {:.2}  pps {:.2}  CPU per conn {}  CPU per pkt {}\n",
                    lvs.variant,
                    lvs.conn_rate / p.conn_rate.max(1e-9),
                    lvs.pps / p.pps.max(1e-9),
                    cost(lvs.cpu_per_conn_us, p.cpu_per_conn_us),
                    cost(lvs.cpu_per_pkt_us, p.cpu_per_pkt_us)
                ));
                if let Some(line) = paired_ratios(lvs, p) {
                    s.push_str(&line);
                }
            }
        }
    }
    s
}

/// The per-round ratios of `lvs` to `peer` (each round runs the variants back to back, so a
/// slow phase of the shared machine hits both): "median (lowest–highest)" of conn/s and of
/// pps, or None with fewer than two rounds.
fn paired_ratios(lvs: &BenchRow, peer: &BenchRow) -> Option<String> {
    let n = lvs.rounds.len().min(peer.rounds.len());
    if n < 2 {
        return None;
    }
    let summary = |pick: fn(&(f64, f64)) -> f64| {
        let mut r: Vec<f64> = lvs.rounds[..n]
            .iter()
            .zip(&peer.rounds[..n])
            .map(|(a, b)| pick(a) / pick(b).max(1e-9))
            .collect();
        r.sort_by(f64::total_cmp);
        let median = if n % 2 == 1 {
            r[n / 2]
        } else {
            (r[n / 2 - 1] + r[n / 2]) / 2.0
        };
        format!("{median:.2} ({:.2}–{:.2})", r[0], r[n - 1])
    };
    Some(format!(
        "  round by round, median (lowest–highest) of {n}: conn/s {}  pps {}\n",
        summary(|r| r.0),
        summary(|r| r.1)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> BenchOpts {
        BenchOpts {
            seconds: 3.0,
            conns_parallel: 16,
            flows: 8,
            size: 64,
            variants: vec![],
            workers: 1,
            rps: false,
            udp_threads: 2,
            repeat: 1,
            queues: 1,
            steer: QueueSteering::Cpu,
            lvs_args: vec![],
        }
    }

    fn row(variant: &str, conn_rate: f64, pps: f64) -> BenchRow {
        BenchRow {
            variant: variant.into(),
            conn_rate,
            pps,
            ..BenchRow::default()
        }
    }

    #[test]
    fn queue_spread_reads_each_queues_xdp_packets() {
        let out = "NIC statistics:\n     peer_ifindex: 7\n     rx_queue_0_xdp_packets: 120\n     \
                   rx_queue_0_xdp_bytes: 9000\n     rx_queue_1_xdp_packets: 80\n     \
                   rx_queue_1_drops: 3\n     tx_queue_0_xdp_xmit: 5\n";
        assert_eq!(rx_queue_counts(out), vec![120, 80]);
        assert!(rx_queue_counts("NIC statistics:\n     peer_ifindex: 7\n").is_empty());
    }

    #[test]
    fn generator_fields_are_read_by_name() {
        let out = "ok=4500 failed=2 seconds=3.001 syn_retrans=7\n";
        assert_eq!(field(out, "ok"), 4500.0);
        assert_eq!(field(out, "seconds"), 3.001);
        assert_eq!(field(out, "syn_retrans"), 7.0);
        assert_eq!(field(out, "missing"), 0.0);
    }

    #[test]
    fn table_gives_lvs_ratios_to_nft_and_routing() {
        let o = opts();
        let rows = [
            row("routing", 20000.0, 200000.0),
            row("nft", 10000.0, 100000.0),
            row("lvs-afxdp", 15000.0, 50000.0),
        ];
        let t = table(&rows, &o);
        assert!(
            t.contains("lvs-afxdp/nft: conn/s 1.50  pps 0.50  CPU per conn -  CPU per pkt -\n"),
            "{t}"
        );
        assert!(
            t.contains("lvs-afxdp/routing: conn/s 0.75  pps 0.25  CPU per conn -"),
            "{t}"
        );
        assert!(!t.contains("nft/routing"), "{t}");
        // The AF_XDP floor is compared like an lvs variant.
        let rows = [
            row("nft", 10000.0, 100000.0),
            row("afxdp-floor", 9000.0, 200000.0),
        ];
        assert!(table(&rows, &o).contains("afxdp-floor/nft: conn/s 0.90  pps 2.00"));
    }

    #[test]
    fn cpu_cost_ratios_compare_the_busy_time_per_connection_and_per_packet() {
        let o = opts();
        let mut nft = row("nft", 10000.0, 100000.0);
        (nft.cpu_per_conn_us, nft.cpu_per_pkt_us) = (80.0, 10.0);
        let mut lvs = row("lvs-afxdp", 9000.0, 120000.0);
        (lvs.cpu_per_conn_us, lvs.cpu_per_pkt_us) = (100.0, 8.0);
        let t = table(&[nft, lvs], &o);
        assert!(
            t.contains("lvs-afxdp/nft: conn/s 0.90  pps 1.20  CPU per conn 1.25  CPU per pkt 0.80\n"),
            "{t}"
        );
        assert!(
            t.lines()
                .any(|l| l.starts_with("lvs-afxdp ") && l.contains(" 100.0 ") && l.contains(" 8.00 ")),
            "{t}"
        );
    }

    #[test]
    fn ratios_are_also_given_round_by_round_as_a_median_and_range() {
        let o = opts();
        let mut nft = row("nft", 11000.0, 100000.0);
        nft.rounds = vec![(10000.0, 100000.0), (11000.0, 90000.0), (8000.0, 100000.0)];
        let mut lvs = row("lvs-afxdp", 9000.0, 150000.0);
        lvs.rounds = vec![(9000.0, 150000.0), (8800.0, 135000.0), (8000.0, 120000.0)];
        let t = table(&[nft.clone(), lvs.clone()], &o);
        // conn/s ratios 0.90, 0.80, 1.00; pps ratios 1.50, 1.50, 1.20.
        assert!(
            t.contains("  round by round, median (lowest–highest) of 3: conn/s 0.90 (0.80–1.00)  pps 1.50 (1.20–1.50)\n"),
            "{t}"
        );
        // Even counts take the mean of the middle two; a single round gives no such line.
        nft.rounds.truncate(2);
        lvs.rounds.truncate(2);
        assert!(
            table(&[nft.clone(), lvs.clone()], &o)
                .contains("of 2: conn/s 0.85 (0.80–0.90)  pps 1.50 (1.50–1.50)")
        );
        nft.rounds.truncate(1);
        assert!(!table(&[nft, lvs], &o).contains("round by round"));
    }

    #[test]
    fn cpu_ticks_read_busy_and_total_from_proc_stat() {
        // user nice system idle iowait irq softirq steal guest guest_nice
        let stat = "cpu  100 5 50 800 10 3 7 25 0 0\ncpu0 50 2 25 400 5 1 3 12 0 0\nintr 1\n";
        assert_eq!(cpu_ticks(stat), Some((160, 1000)));
        assert_eq!(cpu_ticks("cpu0 1 2 3\n"), None);
        assert_eq!(cpu_ticks("cpu  1 2 x 4 5 6 7 8\n"), None);
    }

    #[test]
    fn lvs_variants_name_their_backend_and_carry_their_own_arguments() {
        let (b, args) = lvs_variant("lvs-afxdp").unwrap();
        assert_eq!((b, args.count()), ("afxdp", 0));
        let (b, args) = lvs_variant("lvs-afxdp:--poll-spin-us=0::--xdp-mode=generic").unwrap();
        assert_eq!(b, "afxdp");
        assert_eq!(
            args.collect::<Vec<_>>(),
            ["--poll-spin-us=0", "--xdp-mode=generic"]
        );
        let (b, args) = lvs_variant("lvs-afpacket:--workers=2").unwrap();
        assert_eq!((b, args.collect::<Vec<_>>()), ("afpacket", vec!["--workers=2"]));
        let (b, args) = lvs_variant("lvs-afpacket-v3").unwrap();
        assert_eq!(
            (b, args.collect::<Vec<_>>()),
            ("afpacket", vec!["--afpacket-ring=v3"])
        );
        let (b, args) = lvs_variant("lvs-afpacket-v3:--poll-spin-us=0").unwrap();
        assert_eq!(
            (b, args.collect::<Vec<_>>()),
            ("afpacket", vec!["--afpacket-ring=v3", "--poll-spin-us=0"])
        );
        assert!(lvs_variant("lvs-afpacket-v4").is_none());
        assert!(lvs_variant("lvs-dpdk").is_none());
        assert!(lvs_variant("nft").is_none());
    }

    #[test]
    fn table_widens_for_long_variant_names() {
        let o = opts();
        let long = "lvs-afxdp:--poll-spin-us=0:--xdp-mode=generic";
        let t = table(&[row("nft", 10.0, 10.0), row(long, 5.0, 20.0)], &o);
        let lines: Vec<&str> = t.lines().skip(1).take(3).collect();
        // The conn/s column ends at the same place on the header and on every row.
        let end = lines[0].find("conn/s").unwrap() + "conn/s".len();
        assert!(
            lines[1].starts_with("nft ") && lines[1][..end].ends_with(" 10"),
            "{t}"
        );
        assert!(
            lines[2].starts_with(long) && lines[2][..end].ends_with(" 5"),
            "{t}"
        );
        assert!(t.contains(&format!("{long}/nft: conn/s 0.50  pps 2.00")), "{t}");
    }
}
