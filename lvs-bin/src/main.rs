//! The `lvs` binary: daemon, ipvsadm-compatible administration, demo lab.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

/// Userspace Linux Virtual Server.
#[derive(Debug, Parser)]
#[command(name = "lvs", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Runs the load balancer in the foreground (logs to stderr; SIGINT/SIGTERM stop it,
    /// SIGHUP re-reads --rules).
    Run {
        /// Configuration file (TOML); flags override it.
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Interface to serve (repeatable).
        #[arg(long = "iface")]
        ifaces: Vec<String>,
        /// Packet I/O backend.
        #[arg(long, value_enum)]
        backend: Option<lvs_bin::config::Backend>,
        /// XDP attach mode (afxdp backend).
        #[arg(long, value_enum)]
        xdp_mode: Option<lvs_bin::config::XdpMode>,
        /// Packet workers (one per core).
        #[arg(long)]
        workers: Option<usize>,
        /// Microseconds a worker keeps polling after traffic before it sleeps (0: at once).
        #[arg(long)]
        poll_spin_us: Option<u64>,
        /// AF_PACKET receive ring: v2 (frame by frame, lowest latency) or v3 (blocks).
        #[arg(long, value_enum)]
        afpacket_ring: Option<lvs_bin::config::AfpacketRing>,
        /// Pin worker w to core w (`--pin-workers=false` lets the scheduler move them).
        #[arg(long)]
        pin_workers: Option<bool>,
        /// ipvsadm-save rules file.
        #[arg(long)]
        rules: Option<PathBuf>,
        /// FULLNAT local address (repeatable).
        #[arg(long = "lip")]
        lips: Vec<std::net::IpAddr>,
        /// Control socket path.
        #[arg(long)]
        socket: Option<PathBuf>,
    },
    /// ipvsadm over the daemon's control socket: `lvs adm -L -n`, `lvs adm -A -t VIP:80 -s rr`.
    #[command(disable_help_flag = true)]
    Adm {
        /// Control socket (default: $LVS_SOCKET, else /run/lvs/lvs.sock); must come first.
        #[arg(long)]
        socket: Option<PathBuf>,
        /// ipvsadm arguments, passed on verbatim.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Runs only the control plane (rules, listings, no packet path) on a control socket.
    #[command(hide = true)]
    ControlOnly {
        /// Control socket path.
        #[arg(long)]
        socket: Option<PathBuf>,
        /// ipvsadm-save rules file loaded at start.
        #[arg(long)]
        rules: Option<PathBuf>,
        /// Connection table capacity.
        #[arg(long, default_value_t = 4096)]
        conn_capacity: usize,
    },
    /// Decapsulates IPIP / IPv6-in-IPv6 for a TUN-mode real server without the ipip module.
    Decap {
        /// Interface the tunnelled packets arrive on.
        #[arg(long)]
        iface: String,
        /// Name of the TUN device to create.
        #[arg(long, default_value = "lvsdecap0")]
        tun: String,
    },
    /// Builds a lab (client, director, three real servers) in network namespaces, runs lvs in
    /// it with live HTTP traffic and shows its counters every second; removes it all at the end.
    ///
    /// Needs root and iproute2, ethtool and procps. Runs for 30 s unless --seconds says
    /// otherwise (0: until Ctrl-C); Ctrl-C stops it early and cleans up.
    Demo {
        /// Forwarding method.
        #[arg(long, value_enum, default_value_t = DemoMethod::Nat)]
        method: DemoMethod,
        /// Scheduler (ipvsadm -s): rr, wrr, lc, wlc, sh, mh, ... The three real servers have
        /// weights 3, 2 and 1.
        #[arg(long, default_value = "wrr")]
        scheduler: String,
        /// How long to run, in seconds (0: until Ctrl-C).
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        /// Packet I/O backend of the load balancer.
        #[arg(long, value_enum, default_value_t = lvs_bin::config::Backend::Afxdp)]
        backend: lvs_bin::config::Backend,
        /// HTTP requests per second the client sends.
        #[arg(long, default_value_t = 100)]
        rate: u32,
    },
    /// A lab client: paced requests on new connections (one output line per answer), or with
    /// --hold one long-lived connection exchanging a line every --interval-ms.
    #[command(hide = true)]
    LabClient {
        /// VIP:port to connect to.
        #[arg(long)]
        target: SocketAddr,
        /// Protocol of the requests.
        #[arg(long, value_enum, default_value_t = lvs_bin::demo::ClientProto::Http)]
        proto: lvs_bin::demo::ClientProto,
        /// Requests per second (0: back to back).
        #[arg(long, default_value_t = 0)]
        rate: u32,
        /// Stop after this many requests.
        #[arg(long)]
        count: Option<u64>,
        /// Stop after this many seconds.
        #[arg(long)]
        seconds: Option<f64>,
        /// Hold one connection (line protocol) instead.
        #[arg(long)]
        hold: bool,
        /// With --hold: time between lines.
        #[arg(long, default_value_t = 100)]
        interval_ms: u64,
    },
    /// Runs a lab line-echo server: each line is answered with "NAME CLIENT_IP:PORT LINE".
    #[command(hide = true)]
    Echosrv {
        /// Name to answer with.
        #[arg(long)]
        name: String,
        /// Listen address.
        #[arg(long)]
        listen: SocketAddr,
    },
    /// Runs a lab real server: HTTP and UDP echo answering "NAME CLIENT_IP:PORT".
    #[command(hide = true)]
    Testsrv {
        /// Name to answer with.
        #[arg(long)]
        name: String,
        /// HTTP listen address (repeatable).
        #[arg(long)]
        http: Vec<SocketAddr>,
        /// UDP echo listen address.
        #[arg(long)]
        udp: Option<SocketAddr>,
        /// Read TOA options off the wire (AF_PACKET) and report them in HTTP answers.
        #[arg(long)]
        toa: bool,
    },
    /// Bounded load generators and the counting sink of the lab benchmark.
    #[command(hide = true)]
    Loadgen {
        #[command(subcommand)]
        kind: LoadgenCmd,
    },
    /// The lab benchmark's AF_XDP floor: a stateless NAT forwarder on lvs's XDP program and
    /// sockets with none of lvs's logic (see `lvs_bin::floor`).
    #[command(hide = true)]
    XdpFloor {
        /// Interface to serve.
        #[arg(long)]
        iface: String,
        /// The virtual address.
        #[arg(long)]
        vip: std::net::Ipv4Addr,
        /// A port of the VIP, TCP and UDP (repeatable).
        #[arg(long = "port", required = true)]
        ports: Vec<u16>,
        /// A real server, `ADDR=MAC` (repeatable).
        #[arg(long = "server", required = true, value_parser = parse_floor_server)]
        servers: Vec<(std::net::Ipv4Addr, [u8; 6])>,
        /// Workers (0: one per CPU).
        #[arg(long, default_value_t = 0)]
        workers: usize,
        /// Microseconds a worker keeps polling after traffic before it sleeps.
        #[arg(long, default_value_t = lvs_dataplane::worker::DEFAULT_SPIN_US)]
        poll_spin_us: u64,
    },
    /// Lab speed benchmark: new TCP connections/s and UDP packets/s through lvs NAT (both
    /// backends) next to kernel routing and nftables DNAT, in a namespace lab (root).
    #[command(hide = true)]
    Labbench {
        /// Seconds per measurement.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// Parallel connecting threads.
        #[arg(long, default_value_t = 16)]
        conns_parallel: usize,
        /// UDP flows.
        #[arg(long, default_value_t = 8)]
        flows: usize,
        /// UDP payload bytes.
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// UDP sending threads.
        #[arg(long, default_value_t = 2)]
        udp_threads: usize,
        /// Runs per variant; the best run is reported (the machine is shared).
        #[arg(long, default_value_t = 1)]
        repeat: usize,
        /// lvs run workers (0: one per CPU).
        #[arg(long, default_value_t = 0)]
        workers: usize,
        /// RX/TX queues per lab veth (0: as many as workers).
        #[arg(long, default_value_t = 0)]
        queues: u32,
        /// How multi-queue lab veths pick a TX queue (the receiver's RX queue): `cpu` (XPS,
        /// TX queue i = CPU i) or `hash` (the kernel's default).
        #[arg(long, value_enum, default_value_t = lvs_bin::labbench::QueueSteering::Cpu)]
        steer: lvs_bin::labbench::QueueSteering,
        /// Extra `lvs run` argument (repeatable), e.g. `--lvs-arg=--xdp-mode --lvs-arg=generic`.
        #[arg(long = "lvs-arg", allow_hyphen_values = true)]
        lvs_args: Vec<String>,
        /// Spread receive processing over every CPU (RPS on every lab interface).
        #[arg(long)]
        rps: bool,
        /// Variants, comma-separated; an lvs variant may carry its own `lvs run` arguments
        /// after the backend, `:`-separated (`lvs-afxdp:--poll-spin-us=0`);
        /// `lvs-afpacket-v3` is AF_PACKET on the TPACKET_V3 receive ring.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "routing,nft,lvs-afpacket,lvs-afpacket-v3,lvs-afxdp"
        )]
        variants: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
enum LoadgenCmd {
    /// Opens and closes TCP connections; prints `ok= failed= seconds= syn_retrans=`.
    Tcp {
        /// Target (repeatable: round robin).
        #[arg(long = "target", required = true)]
        targets: Vec<SocketAddr>,
        /// Seconds to run.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// Parallel connecting threads.
        #[arg(long, default_value_t = 16)]
        conns_parallel: usize,
    },
    /// Sends small UDP datagrams; prints `sent= errors= seconds=`.
    Udp {
        /// Target (repeatable: flows round robin over them).
        #[arg(long = "target", required = true)]
        targets: Vec<SocketAddr>,
        /// Seconds to run.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// Payload bytes.
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// Client sockets (flows).
        #[arg(long, default_value_t = 8)]
        flows: usize,
        /// Sending threads.
        #[arg(long, default_value_t = 2)]
        threads: usize,
    },
    /// Real-server side: accepts and closes TCP, counts UDP.
    Sink {
        /// TCP listen address.
        #[arg(long)]
        tcp: Option<SocketAddr>,
        /// UDP listen address.
        #[arg(long)]
        udp: Option<SocketAddr>,
    },
    /// Asks a sink (over loopback) how many datagrams it counted.
    Count {
        /// The sink's UDP address.
        #[arg(long)]
        target: SocketAddr,
    },
}

fn loadgen(kind: LoadgenCmd) -> std::io::Result<()> {
    use lvs_bin::loadgen;
    match kind {
        LoadgenCmd::Tcp {
            targets,
            seconds,
            conns_parallel,
        } => {
            let r = loadgen::tcp(&targets, seconds, conns_parallel)?;
            println!(
                "ok={} failed={} seconds={:.3} syn_retrans={}",
                r.ok, r.failed, r.seconds, r.syn_retrans
            );
        }
        LoadgenCmd::Udp {
            targets,
            seconds,
            size,
            flows,
            threads,
        } => {
            let (sent, errors, secs) = loadgen::udp(&targets, seconds, size, flows, threads)?;
            println!("sent={sent} errors={errors} seconds={secs:.3}");
        }
        LoadgenCmd::Sink { tcp, udp } => loadgen::sink(tcp, udp)?,
        LoadgenCmd::Count { target } => println!("{}", loadgen::count(target)?),
    }
    Ok(())
}

/// `lvs adm` / `lvsadm`: runs the client and maps its code to the process exit status.
fn adm(program: &str, socket: Option<PathBuf>, args: Vec<String>) -> ExitCode {
    let socket = lvs_bin::adm::socket_path(socket);
    let code = lvs_bin::adm::run_client(
        program,
        &socket,
        args,
        &mut std::io::stdin().lock(),
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    );
    ExitCode::from(code.min(255) as u8)
}

/// Invoked as `lvsadm` (e.g. through a symlink): every argument is an ipvsadm argument, with an
/// optional leading `--socket PATH`.
fn lvsadm(mut args: Vec<String>) -> ExitCode {
    let mut socket = None;
    if args.first().map(String::as_str) == Some("--socket") && args.len() >= 2 {
        socket = Some(PathBuf::from(args[1].clone()));
        args.drain(..2);
    } else if let Some(p) = args.first().and_then(|a| a.strip_prefix("--socket=")) {
        socket = Some(PathBuf::from(p));
        args.remove(0);
    }
    adm("lvsadm", socket, args)
}

fn control_only(socket: Option<PathBuf>, rules: Option<&Path>, capacity: usize) -> Result<(), String> {
    use lvs_bin::adm::{ControlPlane, serve, socket_path};
    let start = Instant::now();
    let services = Arc::new(lvs_core::ServiceTable::new());
    let conns = Arc::new(lvs_core::conn::ConnTable::with_capacity(capacity));
    let mut plane = ControlPlane::new(services, conns, move || {
        lvs_core::Time::from_millis(start.elapsed().as_millis() as u64)
    });
    if let Some(path) = rules {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        plane
            .load_rules(&text)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let plane = Arc::new(Mutex::new(plane));
    let path = socket_path(socket);
    let _server = serve(plane.clone(), &path).map_err(|e| format!("{}: {e}", path.display()))?;
    loop {
        std::thread::sleep(Duration::from_secs(2));
        plane.lock().unwrap_or_else(|e| e.into_inner()).tick_now();
    }
}

/// `lvs run`: exit status 2 for a configuration problem (nothing started), 1 for a failure.
fn run(config: Option<&Path>, flags: lvs_bin::config::Overrides) -> ExitCode {
    use lvs_bin::config::{Config, FileConfig};
    use lvs_bin::daemon::DaemonError;
    let filter = tracing_subscriber::EnvFilter::try_from_env("LVS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let file = match config {
        Some(p) => match FileConfig::load(p) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("lvs run: {e}");
                return ExitCode::from(2);
            }
        },
        None => FileConfig::default(),
    };
    let cfg = match Config::resolve(file, flags) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("lvs run: {e}");
            return ExitCode::from(2);
        }
    };
    match lvs_bin::daemon::run(cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(DaemonError::Config(e)) => {
            eprintln!("lvs run: {e}");
            ExitCode::from(2)
        }
        Err(DaemonError::Runtime(e)) => {
            eprintln!("lvs run: {e}");
            ExitCode::from(1)
        }
    }
}

/// Forwarding methods of `lvs demo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum DemoMethod {
    /// Masquerading: the real servers route their replies through the director.
    Nat,
    /// Direct routing: the real servers answer the client directly (VIP on their loopback).
    Dr,
    /// IP-in-IP tunnelling to the real servers (decapsulated by `lvs decap`).
    Tun,
    /// Full NAT: the real servers see the director's local address; nothing to set up on them.
    Fullnat,
}

/// `lvs demo`: 0 when it ran, 2 when the machine is not ready, 1 on a failure.
fn demo(
    method: DemoMethod,
    scheduler: String,
    seconds: u64,
    backend: lvs_bin::config::Backend,
    rate: u32,
) -> ExitCode {
    use lvs_bin::demo::{DemoError, DemoOptions};
    use lvs_bin::lab::LabMethod;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(sig, stop.clone()) {
            eprintln!("lvs demo: cannot handle signals: {e}");
            return ExitCode::FAILURE;
        }
    }
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("lvs demo: cannot find my own executable: {e}");
            return ExitCode::FAILURE;
        }
    };
    let opts = DemoOptions {
        method: match method {
            DemoMethod::Nat => LabMethod::Nat,
            DemoMethod::Dr => LabMethod::DirectRoute,
            DemoMethod::Tun => LabMethod::Tunnel,
            DemoMethod::Fullnat => LabMethod::FullNat,
        },
        scheduler,
        duration: (seconds > 0).then(|| Duration::from_secs(seconds)),
        backend,
        rate,
        exe,
    };
    match lvs_bin::demo::run(&opts, &stop) {
        Ok(_) => ExitCode::SUCCESS,
        Err(DemoError::Setup(e)) => {
            eprintln!("lvs demo: {e}");
            ExitCode::from(2)
        }
        Err(DemoError::Failed(e)) => {
            eprintln!("lvs demo: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `lvs lab-client`: exit 0 when every request was answered (or the held connection lasted).
#[allow(clippy::too_many_arguments)]
fn lab_client(
    target: SocketAddr,
    proto: lvs_bin::demo::ClientProto,
    rate: u32,
    count: Option<u64>,
    seconds: Option<f64>,
    hold: bool,
    interval_ms: u64,
) -> ExitCode {
    let mut out = std::io::stdout().lock();
    let duration = seconds
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64);
    if hold {
        let d = duration.unwrap_or(Duration::from_secs(5));
        return match lvs_bin::demo::hold(target, d, Duration::from_millis(interval_ms), &mut out) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("lvs lab-client: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match lvs_bin::demo::load(target, proto, rate, count, duration, &mut out) {
        Ok((_, 0)) => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("lvs lab-client: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let mut argv = std::env::args();
    let argv0 = argv.next().unwrap_or_default();
    if Path::new(&argv0).file_name().is_some_and(|n| n == "lvsadm") {
        return lvsadm(argv.collect());
    }
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    match cli.command {
        Cmd::Run {
            config,
            ifaces,
            backend,
            xdp_mode,
            workers,
            poll_spin_us,
            afpacket_ring,
            pin_workers,
            rules,
            lips,
            socket,
        } => {
            let flags = lvs_bin::config::Overrides {
                interfaces: ifaces,
                backend,
                xdp_mode,
                workers,
                poll_spin_us,
                afpacket_ring,
                pin_workers,
                rules,
                lips,
                socket,
            };
            run(config.as_deref(), flags)
        }
        Cmd::Adm { socket, args } => adm("lvs adm", socket, args),
        Cmd::ControlOnly {
            socket,
            rules,
            conn_capacity,
        } => match control_only(socket, rules.as_deref(), conn_capacity) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("lvs control-only: {e}");
                ExitCode::FAILURE
            }
        },
        Cmd::Decap { iface, tun } => match lvs_bin::decap::run(&iface, &tun) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("lvs decap: {e}");
                ExitCode::FAILURE
            }
        },
        Cmd::Demo {
            method,
            scheduler,
            seconds,
            backend,
            rate,
        } => demo(method, scheduler, seconds, backend, rate),
        Cmd::LabClient {
            target,
            proto,
            rate,
            count,
            seconds,
            hold,
            interval_ms,
        } => lab_client(target, proto, rate, count, seconds, hold, interval_ms),
        Cmd::Echosrv { name, listen } => match lvs_bin::testsrv::serve_lines(&name, listen) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("lvs echosrv: {e}");
                ExitCode::FAILURE
            }
        },
        Cmd::Loadgen { kind } => match loadgen(kind) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("lvs loadgen: {e}");
                ExitCode::FAILURE
            }
        },
        Cmd::XdpFloor {
            iface,
            vip,
            ports,
            servers,
            workers,
            poll_spin_us,
        } => {
            let workers = if workers == 0 {
                std::thread::available_parallelism().map_or(1, |n| n.get())
            } else {
                workers
            };
            let o = lvs_bin::floor::FloorOpts {
                iface,
                vip,
                ports,
                servers,
                workers,
                spin: Duration::from_micros(poll_spin_us),
            };
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
                if let Err(e) = signal_hook::flag::register(sig, stop.clone()) {
                    eprintln!("lvs xdp-floor: signal: {e}");
                    return ExitCode::FAILURE;
                }
            }
            match lvs_bin::floor::run(&o, stop) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("lvs xdp-floor: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Labbench {
            seconds,
            conns_parallel,
            flows,
            size,
            udp_threads,
            repeat,
            workers,
            queues,
            lvs_args,
            rps,
            steer,
            variants,
        } => {
            if !lvs_bin::lab::have_privileges() {
                eprintln!("lvs labbench: needs root (network namespaces)");
                return ExitCode::from(2);
            }
            let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
            let workers = if workers == 0 { cpus } else { workers };
            let queues = if queues == 0 { workers as u32 } else { queues };
            let o = lvs_bin::labbench::BenchOpts {
                steer,
                seconds,
                conns_parallel,
                flows,
                size,
                variants,
                workers,
                rps,
                udp_threads,
                repeat,
                queues,
                lvs_args,
            };
            match lvs_bin::labbench::run(&o) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("lvs labbench: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Testsrv { name, http, udp, toa } => match lvs_bin::testsrv::serve(&name, &http, udp, toa) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("lvs testsrv: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

/// Parses `ADDR=MAC` (a real server of `lvs xdp-floor`).
fn parse_floor_server(s: &str) -> Result<(std::net::Ipv4Addr, [u8; 6]), String> {
    let (ip, mac) = s.split_once('=').ok_or("expected ADDR=MAC")?;
    let ip = ip.parse().map_err(|_| format!("bad address {ip:?}"))?;
    let mac = lvs_dataplane::wire::ethernet::parse_mac(mac).ok_or_else(|| format!("bad MAC {mac:?}"))?;
    Ok((ip, mac))
}
