//! Shared harness of the end-to-end tests: a namespace lab with real servers, `lvs run` in
//! the director namespace, and a real kernel client (curl, bash's /dev/udp).

#![allow(dead_code)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

pub use lvs_bin::lab::require_root;
use lvs_bin::lab::{self, Lab, LabMethod};

/// The lvs binary under test.
pub fn lvs() -> &'static str {
    env!("CARGO_BIN_EXE_lvs")
}

/// A running lab with lvs in it.
pub struct E2e {
    /// The lab (dropping it removes everything).
    pub lab: Lab,
    /// Scratch directory for rules, logs and the control socket.
    pub dir: PathBuf,
    /// Pid of `lvs run`.
    pub lvs_pid: u32,
    /// Control socket.
    pub socket: PathBuf,
    /// Forwarding method.
    pub method: LabMethod,
}

impl Drop for E2e {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Ok(log) = std::fs::read_to_string(self.dir.join("lvs.log"))
        {
            eprintln!("---- lvs run log ----\n{log}");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `matrix!(round)` makes a test module named after `round` (a `fn(LabMethod, &str)`) with one
/// test per forwarding method and backend: `round::nat_afxdp`, ..., `round::tun_afpacket`.
#[macro_export]
macro_rules! matrix {
    ($round:ident) => {
        mod $round {
            use lvs_bin::lab::LabMethod::{self, *};
            fn go(m: LabMethod, backend: &str) {
                super::$round(m, backend)
            }
            #[test]
            fn nat_afxdp() {
                go(Nat, "afxdp")
            }
            #[test]
            fn nat_afpacket() {
                go(Nat, "afpacket")
            }
            #[test]
            fn fullnat_afxdp() {
                go(FullNat, "afxdp")
            }
            #[test]
            fn fullnat_afpacket() {
                go(FullNat, "afpacket")
            }
            #[test]
            fn dr_afxdp() {
                go(DirectRoute, "afxdp")
            }
            #[test]
            fn dr_afpacket() {
                go(DirectRoute, "afpacket")
            }
            #[test]
            fn tun_afxdp() {
                go(Tunnel, "afxdp")
            }
            #[test]
            fn tun_afpacket() {
                go(Tunnel, "afpacket")
            }
        }
    };
}

/// The method's ipvsadm forwarding flag.
pub fn flag(method: LabMethod) -> &'static str {
    match method {
        LabMethod::Nat => "-m",
        LabMethod::DirectRoute => "-g",
        LabMethod::Tunnel => "-i",
        LabMethod::FullNat => "--fullnat",
    }
}

/// Options of [`E2e::start_with`] beyond the defaults of [`E2e::start`].
#[derive(Debug, Clone)]
pub struct Opts {
    /// HTTP ports every real server listens on (default: 8080).
    pub http_ports: Vec<u16>,
    /// Real servers read TOA options (testsrv --toa).
    pub toa: bool,
    /// `lvs.toml` contents passed with `-c` (none by default).
    pub toml: Option<String>,
    /// Adds the IPv6 plan to the lab before lvs starts, and an HTTP listener on every real
    /// server: [::]:8081 for NAT and FULLNAT, [::]:80 for DR and TUN.
    pub ipv6: bool,
    /// `sysctl -w` settings made in the director's namespace before lvs starts.
    pub director_sysctls: Vec<String>,
    /// RX/TX queues on every lab veth; with more than one, TX queue i belongs to CPU i (XPS).
    pub queues: u32,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            http_ports: vec![8080],
            toa: false,
            toml: None,
            ipv6: false,
            director_sysctls: Vec::new(),
            queues: 1,
        }
    }
}

/// One service or destination line of `-L -n --stats --exact`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatLine {
    /// "TCP 10.77.1.100:80", "FWM 1" for services; "10.77.2.11:8080" for destinations.
    pub name: String,
    /// Conns, InPkts, OutPkts, InBytes, OutBytes.
    pub conns: u64,
    /// Packets client → server.
    pub in_pkts: u64,
    /// Packets server → client.
    pub out_pkts: u64,
}

/// A service of the stats listing with its destinations.
#[derive(Debug, Clone)]
pub struct StatService {
    /// The service line.
    pub svc: StatLine,
    /// Its destination lines.
    pub dests: Vec<StatLine>,
}

/// Parses `-L -n --stats --exact` output.
pub fn parse_stats(text: &str) -> Vec<StatService> {
    let nums = |toks: &[&str]| -> Option<(u64, u64, u64)> {
        Some((
            toks.first()?.parse().ok()?,
            toks.get(1)?.parse().ok()?,
            toks.get(2)?.parse().ok()?,
        ))
    };
    let mut out: Vec<StatService> = Vec::new();
    for l in text.lines() {
        let toks: Vec<&str> = l.split_whitespace().collect();
        if let Some(rest) = l.strip_prefix("  -> ") {
            let t: Vec<&str> = rest.split_whitespace().collect();
            if let (Some(svc), Some((c, i, o))) = (out.last_mut(), nums(&t[1.min(t.len())..])) {
                svc.dests.push(StatLine {
                    name: t[0].to_string(),
                    conns: c,
                    in_pkts: i,
                    out_pkts: o,
                });
            }
        } else if toks.len() >= 5
            && ["TCP", "UDP", "FWM", "SCTP"].contains(&toks[0])
            && let Some((c, i, o)) = nums(&toks[2..])
        {
            out.push(StatService {
                svc: StatLine {
                    name: format!("{} {}", toks[0], toks[1]),
                    conns: c,
                    in_pkts: i,
                    out_pkts: o,
                },
                dests: Vec::new(),
            });
        }
    }
    out
}

/// What a lab server counted: (HTTP requests, UDP datagrams received, UDP answers sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ServerCounts {
    /// HTTP requests.
    pub http: u64,
    /// UDP datagrams received.
    pub udp: u64,
    /// UDP answers sent.
    pub udp_answered: u64,
}

impl E2e {
    /// Builds the lab for `method` with `servers` real servers (HTTP on :8080, UDP echo on
    /// :9000, named rs1, rs2, ...), writes `rules` and starts `lvs run` with `backend`.
    pub fn start(method: LabMethod, servers: usize, backend: &str, rules: &str, extra: &[&str]) -> E2e {
        Self::start_with(method, servers, backend, rules, extra, &Opts::default())
    }

    /// [`E2e::start`] with more options: HTTP ports, TOA-reading servers, a TOML config.
    pub fn start_with(
        method: LabMethod,
        servers: usize,
        backend: &str,
        rules: &str,
        extra: &[&str],
        opts: &Opts,
    ) -> E2e {
        let mut lab = Lab::build_with_queues(method, servers, opts.queues).expect("build the lab");
        if opts.queues > 1 {
            lab.steer_queues_by_cpu().expect("XPS on the lab's queues");
        }
        if opts.ipv6 {
            lab.add_ipv6(method).expect("IPv6 addresses in the lab");
        }
        let dir =
            std::env::temp_dir().join(format!("lvs-e2e-{}-{}", std::process::id(), lab.namespaces()[0]));
        std::fs::create_dir_all(&dir).unwrap();
        for (i, ns) in lab.servers.clone().iter().enumerate() {
            let name = format!("rs{}", i + 1);
            // DR/TUN servers answer from the VIP: the UDP socket binds it.
            let udp = match method {
                LabMethod::DirectRoute | LabMethod::Tunnel => format!("{}:9000", lab::VIP),
                _ => "0.0.0.0:9000".to_string(),
            };
            let mut args: Vec<String> = vec!["testsrv".into(), "--name".into(), name.clone()];
            for p in &opts.http_ports {
                args.extend(["--http".into(), format!("0.0.0.0:{p}")]);
            }
            if opts.ipv6 {
                // DR and TUN keep the service's port (80); NAT and FULLNAT map it to 8081.
                let port = match method {
                    LabMethod::DirectRoute | LabMethod::Tunnel => 80,
                    _ => 8081,
                };
                args.extend(["--http".into(), format!("[::]:{port}")]);
            }
            args.extend(["--udp".into(), udp]);
            if opts.toa {
                args.push("--toa".into());
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            lab.spawn(ns, lvs(), &args).unwrap();
            if method == LabMethod::Tunnel {
                lab.spawn_logged(
                    ns,
                    lvs(),
                    &["decap", "--iface", "eth0"],
                    &dir.join(format!("decap{i}.log")),
                )
                .unwrap();
            }
        }
        let rules_path = dir.join("rules");
        std::fs::write(&rules_path, rules).unwrap();
        let socket = dir.join("lvs.sock");
        let rules_s = rules_path.to_string_lossy().into_owned();
        let socket_s = socket.to_string_lossy().into_owned();
        let lip = lab::LIP.to_string();
        let lip6 = lab::LIP6.to_string();
        let mut args = vec![
            "run",
            "--iface",
            "eth0",
            "--backend",
            backend,
            "--rules",
            &rules_s,
            "--socket",
            &socket_s,
        ];
        if method == LabMethod::FullNat {
            args.extend(["--lip", &lip]);
            if opts.ipv6 {
                args.extend(["--lip", &lip6]);
            }
        }
        let toml_path = dir.join("lvs.toml");
        let toml_s = toml_path.to_string_lossy().into_owned();
        if let Some(t) = &opts.toml {
            std::fs::write(&toml_path, t).unwrap();
            args.extend(["-c", &toml_s]);
        }
        args.extend_from_slice(extra);
        let director = lab.director.clone();
        for kv in &opts.director_sysctls {
            lab.exec(&director, &["sysctl", "-q", "-w", kv])
                .expect("director sysctl");
        }
        let lvs_pid = lab
            .spawn_logged(&director, lvs(), &args, &dir.join("lvs.log"))
            .unwrap();
        let e = E2e {
            lab,
            dir,
            lvs_pid,
            socket,
            method,
        };
        e.wait_ready();
        if let Ok(secs) = std::env::var("LVS_E2E_PAUSE") {
            eprintln!(
                "PAUSE: namespaces {:?}, dir {}",
                e.lab.namespaces(),
                e.dir.display()
            );
            std::thread::sleep(Duration::from_secs(secs.parse().unwrap_or(60)));
        }
        e
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if self.adm(&["-L", "-n"]).0 == 0 {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = std::fs::read_to_string(self.dir.join("lvs.log")).unwrap_or_default();
        panic!("lvs did not come up within 15 s; log:\n{log}");
    }

    /// Runs `lvs adm ARGS` against this daemon: (exit code, stdout, stderr).
    pub fn adm(&self, args: &[&str]) -> (i32, String, String) {
        let out = std::process::Command::new(lvs())
            .arg("adm")
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("run lvs adm");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// One HTTP GET of VIP:port from the client with curl; the body ("rsN CLIENT:PORT").
    pub fn http(&self, port: u16) -> Result<String, String> {
        let url = format!("http://{}:{port}/", lab::VIP);
        let r = self
            .lab
            .exec(&self.lab.client, &["curl", "-s", "--max-time", "3", &url]);
        match r {
            Ok(o) => Ok(String::from_utf8_lossy(&o.stdout).into_owned()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// `-L -n --stats --exact`, parsed.
    pub fn stats(&self) -> Vec<StatService> {
        let (code, out, err) = self.adm(&["-L", "-n", "--stats", "--exact"]);
        assert_eq!(code, 0, "lvs adm --stats failed: {err}");
        parse_stats(&out)
    }

    /// Packets `lvs decap` on real server `i` (0-based) handed to its kernel (the TUN device's
    /// receive counter): proof that the director really encapsulated.
    pub fn decapsulated(&self, i: usize) -> u64 {
        let o = self
            .lab
            .exec(
                &self.lab.servers[i],
                &["cat", "/sys/class/net/lvsdecap0/statistics/rx_packets"],
            )
            .expect("read the decap TUN device's counter");
        String::from_utf8_lossy(&o.stdout)
            .trim()
            .parse()
            .expect("a packet count")
    }

    /// What real server `i` (0-based) counted, asked over its own loopback (not through lvs,
    /// and not counted by it).
    pub fn server_counts(&self, i: usize) -> ServerCounts {
        let ns = &self.lab.servers[i];
        let o = self
            .lab
            .exec(
                ns,
                &["curl", "-s", "--max-time", "3", "http://127.0.0.1:8080/count"],
            )
            .expect("ask a server for its counts");
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        let field = |k: &str| -> u64 {
            text.split_whitespace()
                .find_map(|t| t.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {k}= in {text:?}"))
        };
        ServerCounts {
            http: field("http"),
            udp: field("udp"),
            udp_answered: field("udp_answered"),
        }
    }

    /// One HTTP GET of VIP:port from the client with curl, from a chosen local port
    /// (`--local-port`); the body.
    pub fn http_from(&self, port: u16, local_port: u16) -> Result<String, String> {
        let url = format!("http://{}:{port}/", lab::VIP);
        let lp = local_port.to_string();
        let r = self.lab.exec(
            &self.lab.client,
            &["curl", "-s", "--max-time", "3", "--local-port", &lp, &url],
        );
        match r {
            Ok(o) => Ok(String::from_utf8_lossy(&o.stdout).into_owned()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// One UDP datagram to VIP:port from the client (a kernel UDP socket through bash's
    /// /dev/udp); the answer.
    pub fn udp(&self, port: u16) -> Result<String, String> {
        let script = format!(
            "exec 3<>/dev/udp/{}/{port} && printf ping >&3 && timeout 3 dd bs=512 count=1 status=none <&3",
            lab::VIP
        );
        match self.lab.exec(&self.lab.client, &["bash", "-c", &script]) {
            Ok(o) => Ok(String::from_utf8_lossy(&o.stdout).into_owned()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Retries `f` until it answers (the first packets may wait for ARP), bounded in time.
    pub fn until_ok(&self, mut f: impl FnMut(&Self) -> Result<String, String>) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut last = String::new();
        while Instant::now() < deadline {
            match f(self) {
                Ok(s) if !s.trim().is_empty() => return s,
                Ok(s) => last = s,
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let log = std::fs::read_to_string(self.dir.join("lvs.log")).unwrap_or_default();
        panic!("no answer through the VIP within 10 s (last: {last:?}); lvs log:\n{log}");
    }

    /// SIGTERM to lvs; its exit status must be success.
    pub fn stop(&mut self) {
        let st = self.lab.terminate(self.lvs_pid, Duration::from_secs(10));
        assert!(
            st.is_some_and(|s| s.success()),
            "lvs run did not exit cleanly on SIGTERM: {st:?}"
        );
    }
}

/// The server name in an answer: "rs2 10.77.1.10:40000" → "rs2".
pub fn who(answer: &str) -> &str {
    answer.split_whitespace().next().unwrap_or("")
}

/// The client address the server saw, without port.
pub fn seen_client(answer: &str) -> String {
    let a = answer.split_whitespace().nth(1).unwrap_or("");
    a.rsplit_once(':')
        .map(|(ip, _)| ip.to_string())
        .unwrap_or_default()
}
