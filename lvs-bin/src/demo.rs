//! `lvs demo`: a complete load balancer on one machine in a few seconds. It builds the
//! namespace lab (a client, a director, three real servers), starts `lvs run` in the director
//! with a built-in configuration, real HTTP servers on the real servers, a paced HTTP client,
//! and shows once a second what `lvs adm -L -n --stats / --rate` report and which server
//! answered; then it removes everything (also on Ctrl-C, SIGTERM or an error).
//!
//! The lab clients of the demo and of the operations tests live here too: [`load`] (paced or
//! counted requests, one output line per answer) and [`hold`] (one long-lived connection that
//! exchanges a line every interval and checks the same server answers every time).

use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::config::Backend;
use crate::lab::{self, Lab, LabMethod};

/// Tools the lab runs, with the Debian/Ubuntu package that provides each.
pub const REQUIRED_TOOLS: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("ethtool", "ethtool"),
    ("sysctl", "procps"),
    ("kill", "procps"),
];

/// Weights of rs1, rs2, rs3 in the demo's service (so weighted schedulers show a difference).
pub const DEMO_WEIGHTS: [u32; 3] = [3, 2, 1];

/// Port the real servers' HTTP listens on.
pub const RS_PORT: u16 = 8080;

/// What `lvs demo` runs.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Forwarding method.
    pub method: LabMethod,
    /// Scheduler name (ipvsadm's `-s`).
    pub scheduler: String,
    /// How long to run; `None`: until Ctrl-C.
    pub duration: Option<Duration>,
    /// Packet I/O backend of `lvs run`.
    pub backend: Backend,
    /// HTTP requests per second the client sends.
    pub rate: u32,
    /// The `lvs` binary to start in the namespaces.
    pub exe: PathBuf,
}

/// Why the demo could not run: `Setup` problems (not root, a missing tool) exit 2,
/// `Failed` ones exit 1.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Nothing was started: the machine is not ready.
    #[error("{0}")]
    Setup(String),
    /// Something failed while running.
    #[error("{0}")]
    Failed(String),
}

/// What the client saw during a demo.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DemoSummary {
    /// Answers per real server (rs1, rs2, rs3).
    pub answers: [u64; 3],
    /// Requests that failed.
    pub failed: u64,
}

/// The virtual port of the demo service: DR and TUN keep the port, so the VIP listens where
/// the real servers do.
pub fn virtual_port(method: LabMethod) -> u16 {
    match method {
        LabMethod::DirectRoute | LabMethod::Tunnel => RS_PORT,
        LabMethod::Nat | LabMethod::FullNat => 80,
    }
}

/// The method's ipvsadm forwarding flag and name.
fn method_flag(method: LabMethod) -> (&'static str, &'static str) {
    match method {
        LabMethod::Nat => ("-m", "NAT"),
        LabMethod::DirectRoute => ("-g", "DR (direct routing)"),
        LabMethod::Tunnel => ("-i", "TUN (IP-in-IP)"),
        LabMethod::FullNat => ("--fullnat", "FULLNAT"),
    }
}

/// The demo's rules, in `ipvsadm-save` form.
pub fn demo_rules(method: LabMethod, scheduler: &str) -> String {
    let (flag, _) = method_flag(method);
    let vport = virtual_port(method);
    let mut s = format!("-A -t {}:{vport} -s {scheduler}\n", lab::VIP);
    for (i, w) in DEMO_WEIGHTS.iter().enumerate() {
        let _ = writeln!(
            s,
            "-a -t {}:{vport} -r {}:{RS_PORT} {flag} -w {w}",
            lab::VIP,
            lab::rs_ip(i)
        );
    }
    s
}

/// The backend's name in `lvs.toml` and on the command line.
fn backend_name(b: Backend) -> &'static str {
    match b {
        Backend::Afxdp => "afxdp",
        Backend::Afpacket => "afpacket",
    }
}

/// The demo's `lvs.toml`: interfaces, backend, rules, socket, LIP (FULLNAT) and an HTTP health
/// check of every real server.
pub fn demo_config(method: LabMethod, backend: Backend, dir: &Path) -> String {
    let backend = backend_name(backend);
    let lips = if method == LabMethod::FullNat {
        format!("lips = [\"{}\"]\n", lab::LIP)
    } else {
        String::new()
    };
    let check = format!(
        "\n# keepalived's HTTP_GET: a real server that stops answering is quiesced (weight 0).\n\
             [[check]]\n\
             service = \"-t {vip}:{vport}\"\n\
             type = \"http_get\"\n\
             interval = 1.0\n\
             timeout = 0.5\n\
             rise = 2\n\
             fall = 2\n",
        vip = lab::VIP,
        vport = virtual_port(method),
    );
    format!(
        "# The configuration `lvs demo` gives `lvs run` in the director namespace.\n\
         interfaces = [\"eth0\"]\n\
         backend = \"{backend}\"\n\
         rules = \"{rules}\"\n\
         socket = \"{socket}\"\n\
         {lips}{check}",
        rules = dir.join("rules").display(),
        socket = dir.join("lvs.sock").display(),
    )
}

/// True when an executable named `tool` is on $PATH.
fn on_path(tool: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH").is_some_and(|p| {
        std::env::split_paths(&p).any(|d| {
            std::fs::metadata(d.join(tool)).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// Checks what the demo needs before touching anything: root and the lab's tools.
pub fn preflight() -> Result<(), DemoError> {
    if !lab::have_privileges() {
        return Err(DemoError::Setup(
            "lvs demo needs root: it creates network namespaces and runs the load balancer in one \
             (try `sudo lvs demo`)"
                .into(),
        ));
    }
    let missing: Vec<String> = REQUIRED_TOOLS
        .iter()
        .filter(|(t, _)| !on_path(t))
        .map(|(t, pkg)| format!("`{t}` (apt-get install {pkg})"))
        .collect();
    if !missing.is_empty() {
        return Err(DemoError::Setup(format!(
            "lvs demo needs {} on $PATH",
            missing.join(" and ")
        )));
    }
    Ok(())
}

/// One real server's line of the live view.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Row {
    weight: String,
    active: u64,
    inactive: u64,
    stats: [u64; 5],
    rate: [u64; 5],
}

/// Runs `lvs adm --socket SOCKET ARGS` in-process; stdout on success.
fn adm(socket: &Path, args: &[&str]) -> Result<String, String> {
    let mut out = Vec::new();
    let mut err = Vec::new();
    let code = crate::adm::run_client(
        "lvs adm",
        socket,
        args.iter().map(|s| s.to_string()).collect(),
        &mut io::empty(),
        &mut out,
        &mut err,
    );
    if code == 0 {
        Ok(String::from_utf8_lossy(&out).into_owned())
    } else {
        Err(String::from_utf8_lossy(&err).trim().to_string())
    }
}

/// The `  -> ADDR n n n...` lines of a listing, as (address, numeric fields after it).
fn dest_lines(listing: &str) -> Vec<(String, Vec<String>)> {
    listing
        .lines()
        .filter_map(|l| l.strip_prefix("  -> "))
        .filter(|l| !l.starts_with("RemoteAddress"))
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let addr = it.next()?.to_string();
            Some((addr, it.map(str::to_string).collect()))
        })
        .collect()
}

/// The per-server rows from the three listings (`-L -n`, `--stats --exact`, `--rate --exact`).
fn rows(socket: &Path) -> Result<Vec<(String, Row)>, String> {
    let list = adm(socket, &["-L", "-n"])?;
    let stats = adm(socket, &["-L", "-n", "--stats", "--exact"])?;
    let rate = adm(socket, &["-L", "-n", "--rate", "--exact"])?;
    let num = |v: &[String], i: usize| v.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    let mut out: Vec<(String, Row)> = Vec::new();
    for (addr, f) in dest_lines(&list) {
        out.push((
            addr,
            Row {
                weight: f.get(1).cloned().unwrap_or_default(),
                active: num(&f, 2),
                inactive: num(&f, 3),
                ..Row::default()
            },
        ));
    }
    for (addr, f) in dest_lines(&stats) {
        if let Some((_, r)) = out.iter_mut().find(|(a, _)| *a == addr) {
            for i in 0..5 {
                r.stats[i] = num(&f, i);
            }
        }
    }
    for (addr, f) in dest_lines(&rate) {
        if let Some((_, r)) = out.iter_mut().find(|(a, _)| *a == addr) {
            for i in 0..5 {
                r.rate[i] = num(&f, i);
            }
        }
    }
    Ok(out)
}

/// Reads the lines the load client appended to its log since the last call.
#[derive(Debug, Default)]
struct ClientLog {
    offset: u64,
    partial: String,
    summary: DemoSummary,
    last: std::collections::VecDeque<String>,
}

impl ClientLog {
    fn poll(&mut self, path: &Path) {
        use std::io::Seek;
        let Ok(mut f) = std::fs::File::open(path) else {
            return;
        };
        if f.seek(io::SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut buf = String::new();
        let Ok(n) = f.read_to_string(&mut buf) else {
            return;
        };
        self.offset += n as u64;
        self.partial.push_str(&buf);
        while let Some(pos) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=pos).collect();
            let word = line.split_whitespace().next().unwrap_or("");
            match word.strip_prefix("rs").and_then(|n| n.parse::<usize>().ok()) {
                Some(n @ 1..=3) => {
                    self.summary.answers[n - 1] += 1;
                    self.last.push_back(word.to_string());
                    if self.last.len() > 24 {
                        self.last.pop_front();
                    }
                }
                _ if word == "ERR" => self.summary.failed += 1,
                _ => {}
            }
        }
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let v: Vec<&str> = text.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// Draws one frame of the live view.
fn render(
    opts: &DemoOptions,
    elapsed: Duration,
    socket: &Path,
    rows: &Result<Vec<(String, Row)>, String>,
    client: &ClientLog,
) -> String {
    let (_, name) = method_flag(opts.method);
    let vport = virtual_port(opts.method);
    let mut s = String::new();
    let until = match opts.duration {
        Some(d) => format!("{} s of {} s, Ctrl-C stops early", elapsed.as_secs(), d.as_secs()),
        None => format!("{} s, Ctrl-C stops", elapsed.as_secs()),
    };
    let _ = writeln!(
        s,
        "lvs demo — {name}, scheduler {}, backend {} — {until}",
        opts.scheduler,
        backend_name(opts.backend)
    );
    let _ = writeln!(
        s,
        "client {} ─HTTP─> VIP {}:{vport} on the director ─> rs1..rs3 {}..{}:{RS_PORT} (weights {:?})\n",
        lab::CLIENT_IP,
        lab::VIP,
        lab::rs_ip(0),
        lab::rs_ip(2),
        DEMO_WEIGHTS
    );
    let _ = writeln!(
        s,
        "{:<4} {:<18} {:>6} {:>6} {:>6} {:>8} {:>8} {:>8} {:>6} {:>6} {:>6}",
        "",
        "real server",
        "weight",
        "active",
        "inact",
        "conns",
        "inpkts",
        "outpkts",
        "cps",
        "inpps",
        "outpps"
    );
    match rows {
        Ok(rows) => {
            let mut total = Row::default();
            for (i, _) in DEMO_WEIGHTS.iter().enumerate() {
                let addr = format!("{}:{RS_PORT}", lab::rs_ip(i));
                let label = format!("rs{}", i + 1);
                match rows.iter().find(|(a, _)| *a == addr) {
                    Some((_, r)) => {
                        let _ = writeln!(
                            s,
                            "{label:<4} {addr:<18} {:>6} {:>6} {:>6} {:>8} {:>8} {:>8} {:>6} {:>6} {:>6}",
                            r.weight,
                            r.active,
                            r.inactive,
                            r.stats[0],
                            r.stats[1],
                            r.stats[2],
                            r.rate[0],
                            r.rate[1],
                            r.rate[2]
                        );
                        total.active += r.active;
                        total.inactive += r.inactive;
                        for k in 0..5 {
                            total.stats[k] += r.stats[k];
                            total.rate[k] += r.rate[k];
                        }
                    }
                    None => {
                        let _ = writeln!(s, "{label:<4} {addr:<18} (not in the service)");
                    }
                }
            }
            let _ = writeln!(
                s,
                "{:<4} {:<18} {:>6} {:>6} {:>6} {:>8} {:>8} {:>8} {:>6} {:>6} {:>6}",
                "all",
                "",
                "",
                total.active,
                total.inactive,
                total.stats[0],
                total.stats[1],
                total.stats[2],
                total.rate[0],
                total.rate[1],
                total.rate[2]
            );
        }
        Err(e) => {
            let _ = writeln!(s, "(lvs adm: {e})");
        }
    }
    let a = client.summary.answers;
    let _ = writeln!(
        s,
        "\nclient: {} answers (rs1 {}, rs2 {}, rs3 {}), {} failed",
        a.iter().sum::<u64>(),
        a[0],
        a[1],
        a[2],
        client.summary.failed
    );
    let last: Vec<&str> = client.last.iter().map(String::as_str).collect();
    let _ = writeln!(s, "last answers, oldest first: {}", last.join(" "));
    let note = match opts.method {
        LabMethod::DirectRoute | LabMethod::Tunnel => {
            "replies go from the real servers straight to the client: outpkts stays 0"
        }
        LabMethod::Nat => "replies come back through the director (the servers' default gateway)",
        LabMethod::FullNat => "the servers see the director's LIP as the client; replies come back to it",
    };
    let _ = writeln!(s, "{name}: {note}");
    let _ = writeln!(
        s,
        "\nin another terminal: sudo lvs adm --socket {} -L -n --rate   (or -e/-d to change weights)",
        socket.display()
    );
    s
}

/// Runs the demo. `stop` is set by a signal handler (the caller's); the demo also stops when
/// its duration is over. Everything it created is removed before it returns.
pub fn run(opts: &DemoOptions, stop: &Arc<AtomicBool>) -> Result<DemoSummary, DemoError> {
    preflight()?;
    let dir = std::env::temp_dir().join(format!("lvs-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)
        .map_err(|e| DemoError::Failed(format!("cannot create {}: {e}", dir.display())))?;
    let r = run_in(opts, stop, &dir);
    if std::env::var_os("LVS_DEMO_KEEP").is_some() {
        eprintln!("lvs demo: LVS_DEMO_KEEP is set: keeping {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    r
}

fn run_in(opts: &DemoOptions, stop: &Arc<AtomicBool>, dir: &Path) -> Result<DemoSummary, DemoError> {
    let failed = |what: &str, e: &dyn std::fmt::Display| DemoError::Failed(format!("{what}: {e}"));
    let exe = opts.exe.to_string_lossy().into_owned();
    eprintln!("lvs demo: building the lab (client, director, 3 real servers)...");
    // Dropping `lab` (also on an early return or a panic) kills what it started and deletes
    // the namespaces.
    let mut lab = Lab::build(opts.method, 3).map_err(|e| failed("building the lab", &e))?;
    for (i, ns) in lab.servers.clone().iter().enumerate() {
        let name = format!("rs{}", i + 1);
        let http = format!("0.0.0.0:{RS_PORT}");
        lab.spawn_logged(
            ns,
            &exe,
            &["testsrv", "--name", &name, "--http", &http],
            &dir.join(format!("{name}.log")),
        )
        .map_err(|e| failed("starting a real server", &e))?;
        if opts.method == LabMethod::Tunnel {
            lab.spawn_logged(
                ns,
                &exe,
                &["decap", "--iface", "eth0"],
                &dir.join(format!("decap{}.log", i + 1)),
            )
            .map_err(|e| failed("starting lvs decap", &e))?;
        }
    }
    let write = |name: &str, text: &str| {
        std::fs::write(dir.join(name), text).map_err(|e| failed(&format!("writing {name}"), &e))
    };
    write("rules", &demo_rules(opts.method, &opts.scheduler))?;
    write("lvs.toml", &demo_config(opts.method, opts.backend, dir))?;
    let socket = dir.join("lvs.sock");
    let log = dir.join("lvs.log");
    let config = dir.join("lvs.toml").to_string_lossy().into_owned();
    let director = lab.director.clone();
    let lvs_pid = lab
        .spawn_logged(&director, &exe, &["run", "-c", &config], &log)
        .map_err(|e| failed("starting lvs run", &e))?;
    eprintln!("lvs demo: starting `lvs run -c {config}` in the director...");
    let ready_by = Instant::now() + Duration::from_secs(15);
    while adm(&socket, &["-L", "-n"]).is_err() {
        if stop.load(Ordering::Relaxed) {
            eprintln!("lvs demo: interrupted; removing the lab.");
            return Ok(DemoSummary::default());
        }
        if Instant::now() > ready_by {
            return Err(DemoError::Failed(format!(
                "lvs run did not come up within 15 s; its log:\n{}",
                tail(&log, 30)
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let target = SocketAddr::new(IpAddr::V4(lab::VIP), virtual_port(opts.method));
    let client_log = dir.join("client.log");
    let target_s = target.to_string();
    let rate_s = opts.rate.to_string();
    // The client stops by itself an hour after the demo's end at the latest (if the demo is
    // killed with SIGKILL), and normally when the demo terminates it.
    let client_secs = opts
        .duration
        .map_or(24 * 3600, |d| d.as_secs() + 3600)
        .to_string();
    let client = lab.client.clone();
    let client_pid = lab
        .spawn_logged(
            &client,
            &exe,
            &[
                "lab-client",
                "--target",
                &target_s,
                "--rate",
                &rate_s,
                "--seconds",
                &client_secs,
            ],
            &client_log,
        )
        .map_err(|e| failed("starting the client", &e))?;
    let tty = io::IsTerminal::is_terminal(&io::stdout());
    let start = Instant::now();
    let mut clog = ClientLog::default();
    let mut last_rows = Err("no listing yet".to_string());
    let mut next = start;
    loop {
        clog.poll(&client_log);
        let r = rows(&socket);
        if r.is_ok() {
            last_rows = r.clone();
        }
        let frame = render(opts, start.elapsed(), &socket, &r, &clog);
        let mut out = io::stdout().lock();
        if tty {
            let _ = write!(out, "\x1b[H\x1b[2J");
        } else {
            let _ = writeln!(out, "----");
        }
        let _ = write!(out, "{frame}");
        let _ = out.flush();
        drop(out);
        next += Duration::from_secs(1);
        let done = |now: Instant| opts.duration.is_some_and(|d| now.duration_since(start) >= d);
        while Instant::now() < next && !stop.load(Ordering::Relaxed) && !done(Instant::now()) {
            std::thread::sleep(Duration::from_millis(20));
        }
        if stop.load(Ordering::Relaxed) || done(Instant::now()) {
            break;
        }
    }
    lab.terminate(client_pid, Duration::from_secs(2));
    clog.poll(&client_log);
    // The final counters are read after the client stopped, so they match its answers.
    if let Ok(r) = rows(&socket) {
        last_rows = Ok(r);
    }
    let status = lab.terminate(lvs_pid, Duration::from_secs(10));
    let mut out = io::stdout().lock();
    let _ = writeln!(
        out,
        "\nlvs demo: stopped after {} s. Final counters:",
        start.elapsed().as_secs()
    );
    let _ = write!(
        out,
        "{}",
        render(opts, start.elapsed(), &socket, &last_rows, &clog)
    );
    drop(out);
    let interrupted = stop.load(Ordering::Relaxed);
    // On Ctrl-C the terminal sends SIGINT to lvs run too, which then stops on its own.
    if !interrupted && !status.is_some_and(|s| s.success()) {
        return Err(DemoError::Failed(format!(
            "lvs run did not stop cleanly ({status:?}); its log:\n{}",
            tail(&log, 30)
        )));
    }
    if clog.summary.answers.iter().sum::<u64>() == 0 && !interrupted {
        return Err(DemoError::Failed(format!(
            "no HTTP answer came through the VIP; lvs run's log:\n{}",
            tail(&log, 30)
        )));
    }
    eprintln!("lvs demo: lab removed.");
    Ok(clog.summary)
}

/// The application protocol a lab client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ClientProto {
    /// HTTP/1.0 GET; the answer is the body (`lvs testsrv`).
    Http,
    /// One line out, one line back (`lvs echosrv`).
    Line,
}

/// One request over a new connection; the answering server's name.
fn request(target: SocketAddr, proto: ClientProto, timeout: Duration) -> Result<String, String> {
    let mut s = TcpStream::connect_timeout(&target, timeout).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    let answer = match proto {
        ClientProto::Http => {
            write!(
                s,
                "GET / HTTP/1.0\r\nHost: {target}\r\nUser-Agent: lvs-lab-client\r\n\r\n"
            )
            .map_err(|e| format!("send: {e}"))?;
            let mut resp = Vec::new();
            s.take(65536)
                .read_to_end(&mut resp)
                .map_err(|e| format!("read: {e}"))?;
            let text = String::from_utf8_lossy(&resp).into_owned();
            if !text.starts_with("HTTP/1.0 200") && !text.starts_with("HTTP/1.1 200") {
                return Err(format!("bad answer {:?}", text.lines().next().unwrap_or("")));
            }
            text.split_once("\r\n\r\n")
                .map(|(_, b)| b.to_string())
                .unwrap_or_default()
        }
        ClientProto::Line => {
            s.write_all(b"hello\n").map_err(|e| format!("send: {e}"))?;
            let mut line = String::new();
            BufReader::new(&s)
                .read_line(&mut line)
                .map_err(|e| format!("read: {e}"))?;
            let _ = s.shutdown(Shutdown::Both);
            line
        }
    };
    match answer.split_whitespace().next() {
        Some(w) => Ok(w.to_string()),
        None => Err("empty answer".into()),
    }
}

/// `lvs lab-client`: requests to `target`, each on a new connection, paced at `rate` per
/// second (0: back to back), until `count` requests or `duration` is over. Writes one line per
/// request: the server's name, or `ERR reason`. Returns (answered, failed).
pub fn load(
    target: SocketAddr,
    proto: ClientProto,
    rate: u32,
    count: Option<u64>,
    duration: Option<Duration>,
    out: &mut impl Write,
) -> io::Result<(u64, u64)> {
    let start = Instant::now();
    let gap = if rate == 0 {
        Duration::ZERO
    } else {
        Duration::from_secs(1) / rate
    };
    let mut next = start;
    let (mut ok, mut failed) = (0u64, 0u64);
    let mut n = 0u64;
    loop {
        if count.is_some_and(|c| n >= c) || duration.is_some_and(|d| start.elapsed() >= d) {
            break;
        }
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else if now - next > Duration::from_secs(1) {
            // Far behind (a slow answer): do not burst to catch up.
            next = now;
        }
        next += gap;
        n += 1;
        match request(target, proto, Duration::from_secs(2)) {
            Ok(name) => {
                ok += 1;
                writeln!(out, "{name}")?;
            }
            Err(e) => {
                failed += 1;
                writeln!(out, "ERR {e}")?;
            }
        }
        out.flush()?;
    }
    Ok((ok, failed))
}

/// `lvs lab-client --hold`: one connection to a line server (`lvs echosrv`) that sends a line
/// every `interval` for `duration` and checks every answer comes from the same server. Writes
/// `HOLD START name` after the first answer and `HOLD OK name lines` at the end (or
/// `HOLD FAIL ...`, returned as an error).
pub fn hold(
    target: SocketAddr,
    duration: Duration,
    interval: Duration,
    out: &mut impl Write,
) -> io::Result<()> {
    let start = Instant::now();
    let s = TcpStream::connect_timeout(&target, Duration::from_secs(3))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    let mut reader = BufReader::new(s.try_clone()?);
    let mut w = s;
    let mut first: Option<String> = None;
    let mut lines = 0u64;
    let fail = |out: &mut dyn Write, lines: u64, why: String| -> io::Result<()> {
        writeln!(out, "HOLD FAIL after {lines} lines: {why}")?;
        out.flush()?;
        Err(io::Error::other(why))
    };
    while start.elapsed() < duration {
        if let Err(e) = writeln!(w, "ping {lines}") {
            return fail(out, lines, format!("send: {e}"));
        }
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) => return fail(out, lines, "connection closed".into()),
            Err(e) => return fail(out, lines, format!("read: {e}")),
            Ok(_) => {}
        }
        let name = line.split_whitespace().next().unwrap_or("").to_string();
        if !line.trim_end().ends_with(&format!("ping {lines}")) {
            return fail(out, lines, format!("unexpected answer {line:?}"));
        }
        match &first {
            None => {
                writeln!(out, "HOLD START {name}")?;
                out.flush()?;
                first = Some(name);
            }
            Some(f) if *f != name => {
                return fail(out, lines, format!("answer from {name}, expected {f}"));
            }
            Some(_) => {}
        }
        lines += 1;
        std::thread::sleep(interval);
    }
    writeln!(out, "HOLD OK {} {lines}", first.unwrap_or_default())?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, FileConfig, Overrides};

    #[test]
    fn embedded_rules_and_config_are_valid_for_every_method_and_backend() {
        let dir = Path::new("/tmp/lvs-demo-test");
        for method in [
            LabMethod::Nat,
            LabMethod::DirectRoute,
            LabMethod::Tunnel,
            LabMethod::FullNat,
        ] {
            let mut rs = lvs_core::rules::RuleSet::new();
            rs.apply_batch(&demo_rules(method, "wrr")).expect("demo rules");
            assert_eq!(rs.services.len(), 1);
            let svc = &rs.services[0];
            assert_eq!(svc.dests.len(), 3);
            let mut weights: Vec<u32> = svc.dests.iter().map(|d| d.weight).collect();
            weights.sort_unstable();
            assert_eq!(weights, vec![1, 2, 3]);
            assert!(svc.dests.iter().all(|d| d.port == RS_PORT));
            for backend in [Backend::Afxdp, Backend::Afpacket] {
                let text = demo_config(method, backend, dir);
                let cfg = Config::resolve(FileConfig::parse(&text, "demo").unwrap(), Overrides::default())
                    .unwrap_or_else(|e| panic!("{e}\n{text}"));
                assert_eq!(cfg.backend, backend);
                assert_eq!(cfg.socket, dir.join("lvs.sock"));
                assert_eq!(cfg.lips.len(), usize::from(method == LabMethod::FullNat));
                // A health check on every method and backend (AF_XDP passes the answers to
                // the director's own checks to its kernel).
                assert_eq!(cfg.checks.len(), 1, "{text}");
            }
        }
    }

    #[test]
    fn client_log_counts_answers_across_partial_reads() {
        let path = std::env::temp_dir().join(format!("lvs-demo-clog-{}", std::process::id()));
        std::fs::write(&path, "rs1\nrs2\nERR connect: refused\nrs").unwrap();
        let mut log = ClientLog::default();
        log.poll(&path);
        assert_eq!(log.summary.answers, [1, 1, 0]);
        assert_eq!(log.summary.failed, 1);
        // The half-written line completes later.
        std::fs::write(&path, "rs1\nrs2\nERR connect: refused\nrs3\nrs1\n").unwrap();
        log.poll(&path);
        let _ = std::fs::remove_file(&path);
        assert_eq!(log.summary.answers, [2, 1, 1]);
        assert_eq!(
            log.last.iter().map(String::as_str).collect::<Vec<_>>(),
            ["rs1", "rs2", "rs3", "rs1"]
        );
    }

    #[test]
    fn listing_rows_are_read_by_address() {
        let listing = "IP Virtual Server version 1.2.1 (size=4096)\n\
                       Prot LocalAddress:Port Scheduler Flags\n\
                       \x20 -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n\
                       TCP  10.77.1.100:80 wrr\n\
                       \x20 -> 10.77.2.10:8080              Masq    3      1          7         \n";
        let rows = dest_lines(listing);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].0, "10.77.2.10:8080");
        assert_eq!(rows[0].1, vec!["Masq", "3", "1", "7"]);
    }
}
