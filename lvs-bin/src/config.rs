//! The daemon's configuration: `lvs.toml` merged with command-line flags (flags win), checked
//! as a whole before anything starts. Errors name the file, line and problem.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::health::{CheckConfig, CheckKind, OnFailure};

/// Default control socket path.
pub const DEFAULT_SOCKET: &str = "/run/lvs/lvs.sock";
/// Default connection table capacity.
pub const DEFAULT_CONN_CAPACITY: usize = 1 << 20;
/// Largest `poll_spin_us` accepted (a worker must not spin long on a shared core).
pub const MAX_POLL_SPIN_US: u64 = 10_000;

/// Packet I/O backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// AF_XDP sockets with lvs's XDP program (the default).
    #[default]
    Afxdp,
    /// AF_PACKET rings (TPACKET_V2 or V3, see [`AfpacketRing`]).
    Afpacket,
}

/// Receive ring of the AF_PACKET backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AfpacketRing {
    /// TPACKET_V2: each frame handed over at once (lowest latency; the default).
    #[default]
    V2,
    /// TPACKET_V3: frames handed over in blocks (fewer wakeups under sustained load; a lone
    /// frame waits up to the block retire timer, [`AFPACKET_V3_RETIRE_MS`]).
    V3,
}

/// Block retire timer of the TPACKET_V3 ring in ms: the longest a frame waits at low rates.
pub const AFPACKET_V3_RETIRE_MS: u32 = 1;

/// How the XDP program is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// Driver (native) mode, falling back to generic if the driver refuses.
    #[default]
    Auto,
    /// Driver mode only.
    Native,
    /// Generic (skb) mode.
    Generic,
}

/// `[[check]]`: a health check for one real server, or (without `real_server`) the default
/// for every real server of `service`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckSection {
    /// The service, as ipvsadm names it: `-t VIP:port`, `-u VIP:port` or `-f mark`.
    pub service: String,
    /// `RIP:port`; absent: applies to every real server of the service.
    pub real_server: Option<String>,
    /// `tcp` (TCP_CHECK) or `http_get` (HTTP_GET).
    #[serde(rename = "type")]
    pub kind: CheckType,
    /// Port to connect to instead of the real server's (keepalived's `connect_port`).
    pub connect_port: Option<u16>,
    /// HTTP_GET path (default `/`).
    pub path: Option<String>,
    /// HTTP_GET expected status (default 200).
    pub status: Option<u16>,
    /// HTTP_GET: substring the body must contain.
    pub expect: Option<String>,
    /// Seconds between checks (default 2).
    pub interval: Option<f64>,
    /// Seconds a check may take (default 1).
    pub timeout: Option<f64>,
    /// Successes to come back (default 2).
    pub rise: Option<u32>,
    /// Failures to go down (default 2).
    pub fall: Option<u32>,
    /// `quiesce` (weight 0, default) or `remove`.
    pub on_failure: Option<OnFailureName>,
}

/// Health check type names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckType {
    /// TCP_CHECK.
    Tcp,
    /// HTTP_GET.
    HttpGet,
}

/// Failure action names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailureName {
    /// Weight 0.
    Quiesce,
    /// Removal.
    Remove,
}

/// `[[fwmark]]`: what iptables' MARK target does for kernel IPVS: packets of `proto` to
/// `addr` on one of `ports` belong to the firewall-mark service `mark` (`-f mark`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FwmarkSection {
    /// The mark (the `-f` service).
    pub mark: u32,
    /// `tcp`, `udp` or `sctp`.
    pub proto: String,
    /// Virtual address.
    pub addr: IpAddr,
    /// Ports and ranges: `["80", "443", "8000-8099"]`.
    pub ports: Vec<String>,
}

/// A firewall-mark rule, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FwmarkRule {
    /// Mark.
    pub mark: u32,
    /// Protocol.
    pub proto: lvs_core::Protocol,
    /// Virtual address.
    pub addr: IpAddr,
    /// First port.
    pub first_port: u16,
    /// Last port.
    pub last_port: u16,
}

/// The TOML file as written.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Interfaces to serve.
    #[serde(default)]
    pub interfaces: Vec<String>,
    /// Packet I/O backend.
    pub backend: Option<Backend>,
    /// XDP attach mode.
    pub xdp_mode: Option<XdpMode>,
    /// Packet workers (one per core).
    pub workers: Option<usize>,
    /// Microseconds a worker keeps polling after traffic before it sleeps (0: sleep at once).
    pub poll_spin_us: Option<u64>,
    /// AF_PACKET receive ring (`"v2"` or `"v3"`).
    pub afpacket_ring: Option<AfpacketRing>,
    /// Pin worker `w` to core `w` (default true).
    pub pin_workers: Option<bool>,
    /// ipvsadm-save rules file loaded at start (and on SIGHUP).
    pub rules: Option<PathBuf>,
    /// FULLNAT local addresses.
    #[serde(default)]
    pub lips: Vec<IpAddr>,
    /// Control socket path.
    pub socket: Option<PathBuf>,
    /// Connection table capacity.
    pub conn_capacity: Option<usize>,
    /// Slow-start ramp in seconds for added or recovered real servers (0: off).
    pub slow_start: Option<f64>,
    /// Health checks.
    #[serde(default, rename = "check")]
    pub checks: Vec<CheckSection>,
    /// Firewall-mark rules.
    #[serde(default, rename = "fwmark")]
    pub fwmarks: Vec<FwmarkSection>,
    /// Put the client address in a TOA TCP option for FULLNAT real servers (default true).
    pub toa: Option<bool>,
    /// The kernel's expire_nodest_conn: expire (and drop the packets of) connections whose
    /// real server was removed, instead of letting them finish (default false).
    pub expire_nodest_conn: Option<bool>,
}

/// Flags of `lvs run` that override the file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    /// `--iface` (repeatable).
    pub interfaces: Vec<String>,
    /// `--backend`.
    pub backend: Option<Backend>,
    /// `--xdp-mode`.
    pub xdp_mode: Option<XdpMode>,
    /// `--workers`.
    pub workers: Option<usize>,
    /// `--poll-spin-us`.
    pub poll_spin_us: Option<u64>,
    /// `--afpacket-ring`.
    pub afpacket_ring: Option<AfpacketRing>,
    /// `--pin-workers`.
    pub pin_workers: Option<bool>,
    /// `--rules`.
    pub rules: Option<PathBuf>,
    /// `--lip` (repeatable).
    pub lips: Vec<IpAddr>,
    /// `--socket`.
    pub socket: Option<PathBuf>,
}

/// A health check bound to one service and (optionally) one real server, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckRule {
    /// Service spec as written (`-t VIP:port`...).
    pub service: String,
    /// Real server, or `None` for "every real server of the service".
    pub real_server: Option<SocketAddr>,
    /// `connect_port` override.
    pub connect_port: Option<u16>,
    /// Timing, thresholds, action; `kind` holds a placeholder address that the daemon replaces
    /// with each real server's.
    pub config: CheckConfig,
}

/// The effective configuration of `lvs run`.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Interfaces to serve (at least one).
    pub interfaces: Vec<String>,
    /// Packet I/O backend.
    pub backend: Backend,
    /// XDP attach mode.
    pub xdp_mode: XdpMode,
    /// Packet workers.
    pub workers: usize,
    /// How long a worker keeps polling after traffic before it sleeps in poll(2).
    pub poll_spin: Duration,
    /// AF_PACKET receive ring.
    pub afpacket_ring: AfpacketRing,
    /// Pin worker `w` to core `w`.
    pub pin_workers: bool,
    /// Rules file.
    pub rules: Option<PathBuf>,
    /// FULLNAT local addresses.
    pub lips: Vec<IpAddr>,
    /// Control socket path.
    pub socket: PathBuf,
    /// Connection table capacity.
    pub conn_capacity: usize,
    /// Slow-start ramp.
    pub slow_start: Duration,
    /// Health checks.
    pub checks: Vec<CheckRule>,
    /// Firewall-mark rules.
    pub fwmarks: Vec<FwmarkRule>,
    /// TOA for FULLNAT.
    pub toa: bool,
    /// expire_nodest_conn.
    pub expire_nodest_conn: bool,
}

/// A configuration problem, already worded for the operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn secs(v: Option<f64>, default: f64, what: &str, idx: usize) -> Result<Duration, ConfigError> {
    let s = v.unwrap_or(default);
    if !(s.is_finite() && s > 0.0 && s < 86_400.0) {
        return Err(ConfigError(format!(
            "check #{}: {what} must be between 0 and 86400 seconds, got {s}",
            idx + 1
        )));
    }
    Ok(Duration::from_secs_f64(s))
}

impl FileConfig {
    /// Parses TOML text; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &str) -> Result<FileConfig, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let line = e.span().map(|sp| {
                text.as_bytes()[..sp.start.min(text.len())]
                    .iter()
                    .filter(|&&b| b == b'\n')
                    .count()
                    + 1
            });
            match line {
                Some(l) => ConfigError(format!("{origin}:{l}: {}", e.message())),
                None => ConfigError(format!("{origin}: {}", e.message())),
            }
        })
    }

    /// Reads and parses a TOML file.
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
        FileConfig::parse(&text, &path.display().to_string())
    }
}

impl Config {
    /// Merges `file` and `flags` (flags win) and checks the result.
    pub fn resolve(file: FileConfig, flags: Overrides) -> Result<Config, ConfigError> {
        let interfaces = if flags.interfaces.is_empty() {
            file.interfaces
        } else {
            flags.interfaces
        };
        if interfaces.is_empty() {
            return Err(ConfigError(
                "no interface to serve: give --iface IF or `interfaces` in the config".into(),
            ));
        }
        for i in &interfaces {
            if i.is_empty() || i.len() > 15 || i.contains('/') || i.contains(char::is_whitespace) {
                return Err(ConfigError(format!("invalid interface name {i:?}")));
            }
        }
        let workers = flags.workers.or(file.workers).unwrap_or(1);
        if workers == 0 || workers > 256 {
            return Err(ConfigError(format!(
                "workers must be between 1 and 256, got {workers}"
            )));
        }
        let conn_capacity = file.conn_capacity.unwrap_or(DEFAULT_CONN_CAPACITY);
        if !(1024..=(1 << 28)).contains(&conn_capacity) {
            return Err(ConfigError(format!(
                "conn_capacity must be between 1024 and 268435456, got {conn_capacity}"
            )));
        }
        let slow_start = match file.slow_start {
            None => Duration::ZERO,
            Some(s) if s.is_finite() && (0.0..=3600.0).contains(&s) => Duration::from_secs_f64(s),
            Some(s) => {
                return Err(ConfigError(format!(
                    "slow_start must be between 0 and 3600 seconds, got {s}"
                )));
            }
        };
        let mut checks = Vec::new();
        for (idx, c) in file.checks.into_iter().enumerate() {
            let real_server = match &c.real_server {
                None => None,
                Some(s) => Some(parse_sockaddr(s).ok_or_else(|| {
                    ConfigError(format!(
                        "check #{}: real_server {s:?} is not ADDRESS:PORT",
                        idx + 1
                    ))
                })?),
            };
            let placeholder = SocketAddr::from(([0, 0, 0, 0], 0));
            let kind = match c.kind {
                CheckType::Tcp => {
                    if c.path.is_some() || c.status.is_some() || c.expect.is_some() {
                        return Err(ConfigError(format!(
                            "check #{}: path/status/expect only apply to type = \"http_get\"",
                            idx + 1
                        )));
                    }
                    CheckKind::Tcp { addr: placeholder }
                }
                CheckType::HttpGet => CheckKind::HttpGet {
                    addr: placeholder,
                    path: c.path.clone().unwrap_or_else(|| "/".into()),
                    status: c.status.unwrap_or(200),
                    expect: c.expect.clone(),
                },
            };
            let config = CheckConfig {
                kind,
                interval: secs(c.interval, 2.0, "interval", idx)?,
                timeout: secs(c.timeout, 1.0, "timeout", idx)?,
                rise: c.rise.unwrap_or(2).max(1),
                fall: c.fall.unwrap_or(2).max(1),
                on_failure: match c.on_failure {
                    None | Some(OnFailureName::Quiesce) => OnFailure::Quiesce,
                    Some(OnFailureName::Remove) => OnFailure::Remove,
                },
            };
            checks.push(CheckRule {
                service: c.service,
                real_server,
                connect_port: c.connect_port,
                config,
            });
        }
        let mut fwmarks = Vec::new();
        for (i, f) in file.fwmarks.iter().enumerate() {
            let proto = match f.proto.as_str() {
                "tcp" => lvs_core::Protocol::Tcp,
                "udp" => lvs_core::Protocol::Udp,
                "sctp" => lvs_core::Protocol::Sctp,
                p => {
                    return Err(ConfigError(format!(
                        "fwmark #{}: unknown proto {p:?} (tcp, udp or sctp)",
                        i + 1
                    )));
                }
            };
            if f.mark == 0 {
                return Err(ConfigError(format!("fwmark #{}: mark must not be 0", i + 1)));
            }
            for spec in &f.ports {
                let bad = || ConfigError(format!("fwmark #{}: bad port or range {spec:?}", i + 1));
                let (a, b) = match spec.split_once('-') {
                    Some((a, b)) => (
                        a.trim().parse::<u16>().map_err(|_| bad())?,
                        b.trim().parse::<u16>().map_err(|_| bad())?,
                    ),
                    None => {
                        let p = spec.trim().parse::<u16>().map_err(|_| bad())?;
                        (p, p)
                    }
                };
                if a == 0 || a > b {
                    return Err(bad());
                }
                fwmarks.push(FwmarkRule {
                    mark: f.mark,
                    proto,
                    addr: f.addr,
                    first_port: a,
                    last_port: b,
                });
            }
        }
        let poll_spin_us = flags
            .poll_spin_us
            .or(file.poll_spin_us)
            .unwrap_or(lvs_dataplane::worker::DEFAULT_SPIN_US);
        if poll_spin_us > MAX_POLL_SPIN_US {
            return Err(ConfigError(format!(
                "poll_spin_us must be at most {MAX_POLL_SPIN_US}, got {poll_spin_us}"
            )));
        }
        let poll_spin = Duration::from_micros(poll_spin_us);
        let mut lips = file.lips;
        if !flags.lips.is_empty() {
            lips = flags.lips;
        }
        Ok(Config {
            interfaces,
            backend: flags.backend.or(file.backend).unwrap_or_default(),
            xdp_mode: flags.xdp_mode.or(file.xdp_mode).unwrap_or_default(),
            workers,
            poll_spin,
            afpacket_ring: flags.afpacket_ring.or(file.afpacket_ring).unwrap_or_default(),
            pin_workers: flags.pin_workers.or(file.pin_workers).unwrap_or(true),
            rules: flags.rules.or(file.rules),
            lips,
            socket: flags
                .socket
                .or(file.socket)
                .or_else(|| std::env::var_os("LVS_SOCKET").map(PathBuf::from))
                .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET)),
            conn_capacity,
            slow_start,
            checks,
            fwmarks,
            toa: file.toa.unwrap_or(true),
            expire_nodest_conn: file.expire_nodest_conn.unwrap_or(false),
        })
    }
}

/// Parses `ADDR:PORT` or `[V6ADDR]:PORT`.
pub fn parse_sockaddr(s: &str) -> Option<SocketAddr> {
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file_and_defaults_apply() {
        let file = FileConfig::parse(
            r#"
interfaces = ["eth0"]
backend = "afpacket"
workers = 2
lips = ["10.0.0.9"]

[[check]]
service = "-t 10.0.0.1:80"
type = "http_get"
path = "/health"
expect = "ok"
"#,
            "lvs.toml",
        )
        .unwrap();
        let flags = Overrides {
            interfaces: vec!["veth1".into()],
            workers: Some(1),
            ..Overrides::default()
        };
        let c = Config::resolve(file, flags).unwrap();
        assert_eq!(c.interfaces, vec!["veth1".to_string()]);
        assert_eq!(c.backend, Backend::Afpacket);
        assert_eq!(c.workers, 1);
        assert_eq!(c.lips, vec!["10.0.0.9".parse::<IpAddr>().unwrap()]);
        assert_eq!(c.checks.len(), 1);
        assert_eq!(c.checks[0].config.interval, Duration::from_secs(2));
        assert_eq!(c.checks[0].config.on_failure, OnFailure::Quiesce);
        match &c.checks[0].config.kind {
            CheckKind::HttpGet {
                path, status, expect, ..
            } => {
                assert_eq!(
                    (path.as_str(), *status, expect.as_deref()),
                    ("/health", 200, Some("ok"))
                )
            }
            k => panic!("wrong kind {k:?}"),
        }
    }

    #[test]
    fn errors_name_the_line_and_the_problem() {
        let e = FileConfig::parse("interfaces = [\"eth0\"]\nworkerz = 3\n", "lvs.toml").unwrap_err();
        assert!(e.0.starts_with("lvs.toml:2:"), "{e}");
        assert!(e.0.contains("workerz"), "{e}");
        let e = FileConfig::parse("backend = \"dpdk\"\n", "x.toml").unwrap_err();
        assert!(e.0.starts_with("x.toml:1:") && e.0.contains("dpdk"), "{e}");
    }

    #[test]
    fn afpacket_ring_comes_from_the_flag_else_the_file_else_v2() {
        let iface = || Overrides {
            interfaces: vec!["eth0".into()],
            ..Overrides::default()
        };
        let c = Config::resolve(FileConfig::default(), iface()).unwrap();
        assert_eq!(c.afpacket_ring, AfpacketRing::V2);
        let file = FileConfig::parse("afpacket_ring = \"v3\"\n", "f").unwrap();
        let c = Config::resolve(file.clone(), iface()).unwrap();
        assert_eq!(c.afpacket_ring, AfpacketRing::V3);
        let flags = Overrides {
            afpacket_ring: Some(AfpacketRing::V2),
            ..iface()
        };
        assert_eq!(
            Config::resolve(file, flags).unwrap().afpacket_ring,
            AfpacketRing::V2
        );
        let file = FileConfig::parse("afpacket_ring = \"v2\"\n", "f").unwrap();
        let flags = Overrides {
            afpacket_ring: Some(AfpacketRing::V3),
            ..iface()
        };
        assert_eq!(
            Config::resolve(file, flags).unwrap().afpacket_ring,
            AfpacketRing::V3
        );
        let e = FileConfig::parse("\nafpacket_ring = \"v1\"\n", "lvs.toml").unwrap_err();
        assert!(e.0.starts_with("lvs.toml:2:") && e.0.contains("v1"), "{e}");
    }

    #[test]
    fn poll_spin_comes_from_the_flag_else_the_file_else_the_default_and_is_bounded() {
        let iface = || Overrides {
            interfaces: vec!["eth0".into()],
            ..Overrides::default()
        };
        let c = Config::resolve(FileConfig::default(), iface()).unwrap();
        assert_eq!(
            c.poll_spin,
            Duration::from_micros(lvs_dataplane::worker::DEFAULT_SPIN_US)
        );
        let file = FileConfig::parse("poll_spin_us = 50\n", "f").unwrap();
        let c = Config::resolve(file.clone(), iface()).unwrap();
        assert_eq!(c.poll_spin, Duration::from_micros(50));
        let flags = Overrides {
            poll_spin_us: Some(0),
            ..iface()
        };
        assert_eq!(Config::resolve(file, flags).unwrap().poll_spin, Duration::ZERO);
        let flags = Overrides {
            poll_spin_us: Some(MAX_POLL_SPIN_US + 1),
            ..iface()
        };
        let e = Config::resolve(FileConfig::default(), flags).unwrap_err();
        assert!(e.0.contains("poll_spin_us"), "{e}");
    }

    #[test]
    fn workers_are_pinned_unless_the_flag_or_the_file_says_otherwise() {
        let iface = || Overrides {
            interfaces: vec!["eth0".into()],
            ..Overrides::default()
        };
        assert!(
            Config::resolve(FileConfig::default(), iface())
                .unwrap()
                .pin_workers
        );
        let file = FileConfig::parse("pin_workers = false\n", "f").unwrap();
        assert!(!Config::resolve(file.clone(), iface()).unwrap().pin_workers);
        let flags = Overrides {
            pin_workers: Some(true),
            ..iface()
        };
        assert!(Config::resolve(file, flags).unwrap().pin_workers);
    }

    #[test]
    fn resolve_refuses_bad_values() {
        let no_iface = Config::resolve(FileConfig::default(), Overrides::default()).unwrap_err();
        assert!(no_iface.0.contains("--iface"), "{no_iface}");
        let flags = Overrides {
            interfaces: vec!["eth0".into()],
            workers: Some(0),
            ..Overrides::default()
        };
        assert!(
            Config::resolve(FileConfig::default(), flags)
                .unwrap_err()
                .0
                .contains("workers")
        );
        let file = FileConfig::parse(
            "[[check]]\nservice=\"-t 1.2.3.4:80\"\ntype=\"tcp\"\npath=\"/\"\n",
            "f",
        )
        .unwrap();
        let flags = Overrides {
            interfaces: vec!["eth0".into()],
            ..Overrides::default()
        };
        assert!(Config::resolve(file, flags).unwrap_err().0.contains("only apply"));
    }

    #[test]
    fn fwmark_sections_expand_ports_and_ranges() {
        let file = FileConfig::parse(
            "[[fwmark]]\nmark = 7\nproto = \"tcp\"\naddr = \"10.0.0.1\"\nports = [\"80\", \"8000-8099\"]\n",
            "f",
        )
        .unwrap();
        let flags = Overrides {
            interfaces: vec!["eth0".into()],
            ..Overrides::default()
        };
        let c = Config::resolve(file, flags.clone()).unwrap();
        assert_eq!(c.fwmarks.len(), 2);
        assert_eq!(
            (c.fwmarks[1].first_port, c.fwmarks[1].last_port, c.fwmarks[1].mark),
            (8000, 8099, 7)
        );
        let bad = FileConfig::parse(
            "[[fwmark]]\nmark = 7\nproto = \"tcp\"\naddr = \"10.0.0.1\"\nports = [\"90-80\"]\n",
            "f",
        )
        .unwrap();
        assert!(Config::resolve(bad, flags).unwrap_err().0.contains("bad port"));
    }
}
